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

    /// The password-recovery mail: the one-time link and how long it works.
    pub async fn send_recovery(&self, to: &str, name: &str, link: &str, minutes: u64) -> Result<(), String> {
        let to: Mailbox = format!("{} <{to}>", name.replace(['"', '<', '>'], ""))
            .parse()
            .or_else(|_| to.parse())
            .map_err(|e| format!("recipient: {e}"))?;
        let text = format!(
            "Hello {name},\n\nsomeone, probably you, asked to reset the password of your account.\n\
             To choose a new one, open this link within {minutes} minutes:\n\n    {link}\n\n\
             The link works once. If you did not ask for it, ignore this mail: your password\n\
             stays as it is.\n"
        );
        // 7bit when possible, so that the link stays on one line for whoever reads the
        // mail as plain text (quoted-printable would break it at 76 characters).
        let body = if text.is_ascii() && text.lines().all(|l| l.len() < 998) {
            Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), ContentTransferEncoding::SevenBit)
        } else {
            Body::new(text)
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Reset your password")
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
