//! Submits mail composed on devices to the enterprise SMTP server.
//!
//! A composed mail is in the store (`received`, state `new`) before the device gets its
//! acknowledgement, so nothing is lost if SMTP is down or the agent restarts: this task
//! picks up every `new` outgoing mail, submits it, and records `submitted` (dropping the
//! body) or `failed` with the server's answer. Temporary failures are retried with
//! backoff; items of other types from a device are recorded as `ignored`, except
//! certificate requests, which the enrollment task answers (crate::enroll).

use std::sync::Arc;
use std::time::Duration;

use noc_endpoint::item::ItemType;
use noc_endpoint::{Backoff, Store};
use noc_protocol::DeviceId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::SmtpConfig;
use crate::db;
use crate::engine::is_outgoing;
use crate::smtp::{Mailer, prepare_submission};
use crate::stats::{AgentStats, inc};

/// Without a wake-up, look again this often.
const IDLE_RECHECK: Duration = Duration::from_secs(60);

pub async fn run(
    store: Arc<Store>,
    mailer: Mailer,
    cfg: SmtpConfig,
    stats: Arc<AgentStats>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff =
        Backoff::new(Duration::from_secs(cfg.retry_initial_seconds), Duration::from_secs(cfg.retry_max_seconds));
    loop {
        let wait = match submit_pending(&store, &mailer, &stats).await {
            Ok(()) => {
                backoff.reset();
                IDLE_RECHECK
            }
            Err(temporary) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %temporary, retry_in_s = d.as_secs(), "SMTP submission failed temporarily");
                d
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Submits everything pending; `Err` with the message of a temporary failure (stop and
/// retry later: the server is probably down).
async fn submit_pending(store: &Store, mailer: &Mailer, stats: &AgentStats) -> Result<(), String> {
    let pending = store.received(None, Some("new")).map_err(|e| e.to_string())?;
    for r in pending {
        if ItemType::parse(&r.header.item_type) == ItemType::CertificateRequest {
            continue; // the enrollment task's (crate::enroll)
        }
        if !is_outgoing(&r.header.item_type) {
            let _ = store.set_received_state(r.row, "ignored", Some("not an outgoing mail"), true);
            continue;
        }
        let user = r
            .peer
            .parse::<DeviceId>()
            .ok()
            .and_then(|d| db::device_user(store, d).ok().flatten())
            .and_then(|u| db::user(store, u).ok().flatten());
        let Some(user) = user else {
            fail(store, stats, r.row, "the sending device belongs to no known user");
            continue;
        };
        let (message, recipients) = match prepare_submission(&r.body, &user.mailbox(), &r.header.bcc) {
            Ok(v) => v,
            Err(f) => {
                fail(store, stats, r.row, &f.message);
                continue;
            }
        };
        match mailer.send_raw(&user.email, &recipients, &message).await {
            Ok(()) => {
                inc(&stats.mails_submitted);
                tracing::info!(from = %user.email, recipients = recipients.len(), "mail from device submitted");
                let _ = store.set_received_state(r.row, "submitted", None, true);
            }
            Err(f) if f.permanent => fail(store, stats, r.row, &f.message),
            Err(f) => return Err(f.message),
        }
    }
    Ok(())
}

fn fail(store: &Store, stats: &AgentStats, row: i64, why: &str) {
    inc(&stats.mail_failures);
    tracing::warn!(row, reason = why, "mail from device not submitted");
    let _ = store.set_received_state(row, "failed", Some(why), false);
}
