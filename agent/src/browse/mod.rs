//! Answers the relay's `Fetch` commands (browse access, docs/protocol.md §4.6) from the
//! same sources the agent pushes to devices: the user's Maildir, calendar and contacts
//! files; mail composed on a browse page leaves through the agent's SMTP server.
//!
//! Each fetch runs on a task of its own (file work on the blocking pool), so the engine's
//! loop never waits for it, and answers with a `FetchResult` on the data channel. The
//! agent answers only for users the relay lists as active here (the relay checks the same
//! on its side): a fetch for anyone else is `unknown_user`. Nothing of the data is logged.

mod mail;
pub(crate) mod pim;
mod recur;
mod send;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use noc_endpoint::Store;
use noc_protocol::rts::DataRequest;
use noc_protocol::rts::fetch::{
    Done, FetchError, FetchErrorCode, FetchRequest, FetchResultResponse, FetchStatus, RequestId,
};
use noc_protocol::{ApiErrorCode, UserId};

use crate::config::AgentConfig;
use crate::db;
use crate::rts_client::DataChannel;
use crate::smtp::Mailer;
use crate::source::safe_component;

/// What answering needs; cheap to clone into each fetch's task.
#[derive(Clone)]
pub struct Browser {
    pub config: Arc<AgentConfig>,
    pub store: Arc<Store>,
    pub data: DataChannel,
    /// `None`: no SMTP server configured, so `MailSend` is unsupported.
    pub mailer: Option<Mailer>,
}

impl Browser {
    /// Answers one fetch on a task of its own.
    pub fn answer(&self, request_id: RequestId, user_id: UserId, timeout_ms: u64, request: FetchRequest) {
        let this = self.clone();
        tokio::spawn(async move {
            let operation = request.operation();
            let deadline = Duration::from_millis(timeout_ms);
            let answer = match tokio::time::timeout(deadline, this.respond(user_id, request)).await {
                Ok(answer) => answer,
                // Too late to matter: the relay has given up; say so for the log only.
                Err(_) => {
                    tracing::info!(operation = operation.as_str(), "browse: a fetch took longer than its deadline");
                    return;
                }
            };
            let result = match answer {
                Ok(body) => {
                    DataRequest::FetchResult { request_id, status: FetchStatus::Ok, body: Some(body), error: None }
                }
                Err(error) => {
                    tracing::debug!(
                        operation = operation.as_str(),
                        code = error.code.as_str(),
                        "browse: fetch refused"
                    );
                    DataRequest::FetchResult { request_id, status: FetchStatus::Error, body: None, error: Some(error) }
                }
            };
            let mut posted = this.data.request::<FetchResultResponse>(&result).await;
            if matches!(&posted, Err(e) if e.code() == Some(ApiErrorCode::PayloadTooLarge)) {
                // The answer is larger than the relay takes: say so, so that the page
                // tells the user at once instead of waiting for the deadline.
                let error = FetchError {
                    code: FetchErrorCode::TooLarge,
                    message: "the answer exceeds the relay's request size".into(),
                };
                let refusal =
                    DataRequest::FetchResult { request_id, status: FetchStatus::Error, body: None, error: Some(error) };
                posted = this.data.request::<FetchResultResponse>(&refusal).await;
            }
            match posted {
                Ok(r) if !r.delivered => {
                    tracing::info!(operation = operation.as_str(), "browse: the relay no longer waited for an answer")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(operation = operation.as_str(), error = %e, "browse: the answer was not posted")
                }
            }
        });
    }

    async fn respond(&self, user_id: UserId, request: FetchRequest) -> Result<serde_json::Value, FetchError> {
        let user = match db::active_user(&self.store, user_id) {
            Ok(Some(u)) if safe_component(&u.email) => u,
            Ok(_) => {
                return Err(FetchError { code: FetchErrorCode::UnknownUser, message: "no such user here".into() });
            }
            Err(e) => {
                tracing::error!(error = %e, "browse: the agent's store failed");
                return Err(FetchError { code: FetchErrorCode::Internal, message: "the server failed".into() });
            }
        };
        let zone =
            pim::user_zone(db::calendar_prefs(&self.store, user.user_id).unwrap_or_default().time_zone.as_deref());
        let mail_root = self.config.mail.maildir_root.join(&user.email);
        let calendar = self.config.mail.calendar_root.as_ref().map(|r| r.join(&user.email));
        let contacts = self.config.mail.contacts_root.as_ref().map(|r| r.join(&user.email));
        if let FetchRequest::MailSend(outgoing) = request {
            let Some(mailer) = self.mailer.clone() else {
                return Err(FetchError {
                    code: FetchErrorCode::Unsupported,
                    message: "this server sends no mail".into(),
                });
            };
            send::send(&mailer, &user, &mail_root, &outgoing).await?;
            return to_json(&Done {});
        }
        blocking(move || answer_from_files(mail_root, calendar, contacts, &zone, request)).await
    }
}

/// Runs file work on the blocking pool.
async fn blocking(
    f: impl FnOnce() -> Result<serde_json::Value, FetchError> + Send + 'static,
) -> Result<serde_json::Value, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(FetchError { code: FetchErrorCode::Internal, message: "the server failed".into() }))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, FetchError> {
    serde_json::to_value(v)
        .map_err(|_| FetchError { code: FetchErrorCode::Internal, message: "the server failed".into() })
}

fn answer_from_files(
    mail_root: PathBuf,
    calendar: Option<PathBuf>,
    contacts: Option<PathBuf>,
    zone: &jiff::tz::TimeZone,
    request: FetchRequest,
) -> Result<serde_json::Value, FetchError> {
    match request {
        FetchRequest::MailFolders {} => to_json(&mail::folders(&mail_root)?),
        FetchRequest::MailList { folder, offset, limit } => to_json(&mail::list(&mail_root, &folder, offset, limit)?),
        FetchRequest::MailRead { folder, message_id } => to_json(&mail::read(&mail_root, &folder, &message_id)?),
        FetchRequest::MailAttachment { folder, message_id, index } => {
            to_json(&mail::attachment(&mail_root, &folder, &message_id, index)?)
        }
        FetchRequest::MailDelete { folder, message_id } => {
            mail::delete(&mail_root, &folder, &message_id)?;
            to_json(&Done {})
        }
        FetchRequest::MailMove { folder, message_id, to_folder } => {
            mail::move_to(&mail_root, &folder, &message_id, &to_folder)?;
            to_json(&Done {})
        }
        FetchRequest::CalendarRange { from, to } => to_json(&pim::calendar_range(calendar.as_deref(), from, to, zone)?),
        FetchRequest::ContactList { query, offset, limit } => {
            to_json(&pim::contact_list(contacts.as_deref(), &query, offset, limit)?)
        }
        FetchRequest::ContactRead { contact_id } => to_json(&pim::contact_read(contacts.as_deref(), &contact_id)?),
        FetchRequest::ContactAdd(c) => to_json(&pim::contact_add(contacts.as_deref(), &c)?),
        // Handled before: it needs the SMTP server, not only files.
        FetchRequest::MailSend(_) => {
            Err(FetchError { code: FetchErrorCode::Internal, message: "the server failed".into() })
        }
    }
}
