//! Mail the relay sends itself (`[mail]`): the web portal's password-recovery links.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailConfig, SmtpSecurity};
use crate::error::NodeError;

/// A configured SMTP client; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer of `[mail]`, or `None` when no SMTP server is configured.
    pub fn from_config(cfg: &MailConfig) -> Result<Option<Self>, NodeError> {
        let Some(host) = &cfg.smtp_host else { return Ok(None) };
        let tls =
            || TlsParameters::new(host.clone()).map_err(|e| NodeError::Config(format!("mail.smtp_host TLS: {e}")));
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(cfg.smtp_port)
            .timeout(Some(Duration::from_secs(cfg.smtp_timeout_seconds)));
        builder = match cfg.smtp_security {
            SmtpSecurity::None => builder.tls(Tls::None),
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        };
        if let Some(user) = &cfg.smtp_username {
            let pass = cfg.smtp_password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), pass));
        }
        let from = cfg.from.parse().map_err(|e| NodeError::Config(format!("mail.from: {e}")))?;
        Ok(Some(Mailer { transport: builder.build(), from }))
    }

    /// The password-recovery mail, worded by the caller in the user's language: `text`
    /// holds the one-time link on a line of its own.
    pub async fn send_recovery(&self, to: &str, name: &str, subject: &str, text: &str) -> Result<(), String> {
        self.send_text(to, name, subject, text).await
    }

    /// A plain-text mail from the relay to `name <to>` (recovery links, new-mail alerts).
    pub async fn send_text(&self, to: &str, name: &str, subject: &str, text: &str) -> Result<(), String> {
        let to: Mailbox = format!("{} <{to}>", name.replace(['"', '<', '>'], ""))
            .parse()
            .or_else(|_| to.parse())
            .map_err(|e| format!("recipient: {e}"))?;
        // 7bit or 8bit, never quoted-printable: the link stays on one line for whoever reads
        // the mail as plain text (quoted-printable would break it at 76 characters).
        let text = if text.ends_with('\n') { text.to_string() } else { format!("{text}\n") };
        let body = if text.lines().all(|l| l.len() < 998) {
            let encoding =
                if text.is_ascii() { ContentTransferEncoding::SevenBit } else { ContentTransferEncoding::EightBit };
            Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), encoding)
        } else {
            Body::new(text)
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
