//! The enterprise SMTP server, through `lettre` on tokio: submission of mail composed on
//! devices (white paper §10.4: "routed via the NOC Real-Time Service to the VES for
//! dispatch locally through the enterprise email server") and the welcome mail.
//!
//! The agent acts as the submission agent for its users (RFC 6409): the envelope sender
//! and the `From` field are the user's own address whatever the device wrote, so a device
//! cannot send as someone else; recipients are the message's `To` and `Cc` plus the `Bcc`
//! list carried beside it.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use noc_endpoint::rfc822;

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::error::AgentError;

/// Why a submission failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct SmtpFailure {
    /// A 5xx answer or an unusable message: retrying will not help.
    pub permanent: bool,
    pub message: String,
}

impl std::fmt::Display for SmtpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, if self.permanent { "permanent" } else { "temporary" })
    }
}

fn permanent(message: impl Into<String>) -> SmtpFailure {
    SmtpFailure { permanent: true, message: message.into() }
}

/// A configured SMTP client.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Mailer {
    pub fn new(cfg: &SmtpConfig) -> Result<Self, AgentError> {
        let tls = |host: &str| -> Result<TlsParameters, AgentError> {
            let mut b = TlsParameters::builder(host.to_owned());
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca).map_err(|e| AgentError::Config(format!("smtp.ca_file: {e}")))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| AgentError::Config(format!("smtp.ca_file: {e}")))?;
                b = b.certificate_store(CertificateStore::None).add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| AgentError::Config(format!("smtp TLS: {e}")))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(cfg.timeout_seconds)));
        builder = match cfg.security {
            SmtpSecurity::None => builder.tls(Tls::None),
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls(&cfg.host)?)),
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls(&cfg.host)?)),
        };
        if let Some(user) = &cfg.username {
            let pass = cfg.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), pass));
        }
        Ok(Mailer { transport: builder.build() })
    }

    /// Sends raw message bytes with an explicit envelope.
    pub async fn send_raw(&self, from: &str, to: &[String], message: &[u8]) -> Result<(), SmtpFailure> {
        let from: Address = from.parse().map_err(|e| permanent(format!("sender {from:?}: {e}")))?;
        let mut rcpt = Vec::new();
        for t in to {
            rcpt.push(t.parse::<Address>().map_err(|e| permanent(format!("recipient {t:?}: {e}")))?);
        }
        let envelope = Envelope::new(Some(from), rcpt).map_err(|e| permanent(e.to_string()))?;
        self.transport
            .send_raw(&envelope, message)
            .await
            .map(|_| ())
            .map_err(|e| SmtpFailure { permanent: e.is_permanent(), message: e.to_string() })
    }

    /// Sends a message built with lettre's builder.
    pub async fn send(&self, message: Message) -> Result<(), SmtpFailure> {
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SmtpFailure { permanent: e.is_permanent(), message: e.to_string() })
    }
}

/// Turns a message composed on a device into what is submitted: `From` (and `Sender`) set
/// to the user's mailbox, `Bcc` removed, and the recipient list. Fails when there is no
/// recipient at all.
pub fn prepare_submission(
    message: &[u8],
    user_mailbox: &str,
    bcc: &[String],
) -> Result<(Vec<u8>, Vec<String>), SmtpFailure> {
    let mut recipients: Vec<String> = Vec::new();
    for (name, value) in rfc822::headers(message) {
        if name.eq_ignore_ascii_case("to") || name.eq_ignore_ascii_case("cc") {
            recipients.extend(rfc822::addresses(&value));
        }
    }
    recipients.extend(bcc.iter().filter(|a| rfc822::is_address(a)).cloned());
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_lowercase()));
    if recipients.is_empty() {
        return Err(permanent("the message has no recipient"));
    }
    // Rewrite the header block: drop From, Sender, Bcc and Return-Path; prepend ours.
    let body = rfc822::body(message);
    let head_len = message.len() - body.len();
    let head = &message[..head_len];
    let mut out = Vec::with_capacity(message.len() + 128);
    out.extend_from_slice(format!("From: {}\r\n", rfc822::encode_value(user_mailbox)).as_bytes());
    let mut skipping = false;
    for raw in head.split_inclusive(|b| *b == b'\n') {
        let line = raw.strip_suffix(b"\n").map(|l| l.strip_suffix(b"\r").unwrap_or(l)).unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        let continuation = line[0] == b' ' || line[0] == b'\t';
        if !continuation {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            skipping = matches!(name.as_str(), "from" | "sender" | "bcc" | "return-path");
        }
        if !skipping {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok((out, recipients))
}

/// What the welcome mail says (white paper §3.5).
pub struct Welcome<'a> {
    pub from: &'a str,
    pub subject: &'a str,
    pub to_name: &'a str,
    pub to_email: &'a str,
    pub password: Option<&'a str>,
    pub activation_url: &'a str,
    pub relay_url: &'a str,
    pub fingerprint: &'a str,
}

/// The welcome mail as a message.
pub fn welcome_message(w: &Welcome<'_>) -> Result<Message, AgentError> {
    let from: Mailbox = w.from.parse().map_err(|e| AgentError::Config(format!("welcome.from: {e}")))?;
    let to_addr: Address = w.to_email.parse().map_err(|e| AgentError::Smtp(format!("{}: {e}", w.to_email)))?;
    let to = Mailbox::new((!w.to_name.trim().is_empty()).then(|| w.to_name.trim().to_owned()), to_addr);
    let password = match w.password {
        Some(p) => format!("  Password:  {p}\n"),
        None => "  Password:  (your administrator gives it to you separately)\n".to_owned(),
    };
    let text = format!(
        "Hello {name},\n\n\
         an account for mobile access to your mail, calendar and contacts has been created.\n\n\
         \x20 Username:  {email}\n{password}\n\
         1. Activate your account with your mobile number and time zone:\n\
         \x20    {activation}\n\
         2. Activate your device with the same mobile number and password at the relay\n\
         \x20    {relay}\n\
         3. Your device must show exactly this key fingerprint for our server; if it ever shows\n\
         \x20  another one, do not continue and tell your administrator:\n\n\
         \x20    {fp}\n\n\
         Your data is encrypted between our server and your device; the relay in between\n\
         cannot read it.\n",
        name = if w.to_name.trim().is_empty() { w.to_email } else { w.to_name.trim() },
        email = w.to_email,
        activation = w.activation_url,
        relay = w.relay_url,
        fp = w.fingerprint,
    );
    // 7bit when possible, so the fingerprint (79 characters) stays on one line, as users
    // compare it, instead of being wrapped by quoted-printable at 76; RFC 5322 allows 998.
    // A non-ASCII name needs an encoding.
    let body = if text.is_ascii() && text.lines().all(|l| l.len() < 998) {
        Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text)
    };
    Message::builder()
        .from(from)
        .to(to)
        .subject(w.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| AgentError::Smtp(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submission_sets_the_users_from_and_collects_recipients() {
        let msg = b"From: mallory@evil.example\r\nTo: A <a@example.com>, b@example.com\r\nCc: c@example.com\r\nBcc: hidden@example.com\r\nSubject: hi\r\n continued\r\n\r\nbody\r\n";
        let (out, rcpt) =
            prepare_submission(msg, "\"Bob Ng\" <bob@corp.example>", &["d@example.com".into()]).expect("ok");
        assert_eq!(rcpt, vec!["a@example.com", "b@example.com", "c@example.com", "d@example.com"]);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("From: \"Bob Ng\" <bob@corp.example>\r\n"), "{text}");
        assert!(!text.contains("mallory") && !text.contains("hidden@"), "{text}");
        assert!(text.contains("Subject: hi\r\n continued\r\n"));
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
        assert!(prepare_submission(b"Subject: x\r\n\r\n", "bob@corp.example", &[]).is_err());
    }

    #[test]
    fn welcome_mail_carries_credentials_and_fingerprint() {
        let w = Welcome {
            from: "Admin <admin@corp.example>",
            subject: "Welcome",
            to_name: "Bob Ng",
            to_email: "bob@corp.example",
            password: Some("s3cret-pw"),
            activation_url: "https://relay:8443/account/v1/activate",
            relay_url: "https://relay:8443",
            fingerprint: "abcd 0123",
        };
        let text = String::from_utf8(welcome_message(&w).expect("msg").formatted()).expect("utf8");
        for needle in ["bob@corp.example", "s3cret-pw", "https://relay:8443/account/v1/activate", "abcd 0123"] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
        let w2 = Welcome { password: None, ..w };
        let text = String::from_utf8(welcome_message(&w2).expect("msg").formatted()).expect("utf8");
        assert!(!text.contains("s3cret-pw"));
    }
}
