//! Counters of what the agent did, for `ves-agent status` and for tests that wait for an
//! effect (a resume, a delivered item) instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct AgentStats {
    /// New RTS sessions (Session with Resumed: false).
    pub sessions: AtomicU64,
    /// Resumed sessions (Session with Resumed: true).
    pub resumes: AtomicU64,
    pub heartbeats: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub channel_breaks: AtomicU64,
    pub items_queued: AtomicU64,
    pub items_dropped: AtomicU64,
    pub items_delivered: AtomicU64,
    pub items_received: AtomicU64,
    pub e2e_sessions: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_undeliverable: AtomicU64,
    pub tampered_frames: AtomicU64,
    pub replayed_frames: AtomicU64,
    pub key_agreement_failures: AtomicU64,
    pub mails_submitted: AtomicU64,
    pub mail_failures: AtomicU64,
    pub welcome_mails: AtomicU64,
    /// New items not pushed because the user's ConstantSync is off (pushed when it is
    /// turned on again).
    pub items_held: AtomicU64,
    /// Calendar files not pushed (yet) because every entry in them starts later than the
    /// user's calendar days ahead; pushed by the scan that finds them inside the window.
    pub items_deferred: AtomicU64,
    /// New mail that matched one of the user's alert filter rules.
    pub alerts_matched: AtomicU64,
    /// Alerts the relay took (`Alert` requests answered).
    pub alerts_sent: AtomicU64,
}

/// A copy of the counters.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct StatsSnapshot {
    pub sessions: u64,
    pub resumes: u64,
    pub heartbeats: u64,
    pub heartbeat_timeouts: u64,
    pub channel_breaks: u64,
    pub items_queued: u64,
    pub items_dropped: u64,
    pub items_delivered: u64,
    pub items_received: u64,
    pub e2e_sessions: u64,
    pub frames_sent: u64,
    pub frames_undeliverable: u64,
    pub tampered_frames: u64,
    pub replayed_frames: u64,
    pub key_agreement_failures: u64,
    pub mails_submitted: u64,
    pub mail_failures: u64,
    pub welcome_mails: u64,
    #[serde(default)]
    pub items_held: u64,
    #[serde(default)]
    pub items_deferred: u64,
    #[serde(default)]
    pub alerts_matched: u64,
    #[serde(default)]
    pub alerts_sent: u64,
}

impl AgentStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            sessions: g(&self.sessions),
            resumes: g(&self.resumes),
            heartbeats: g(&self.heartbeats),
            heartbeat_timeouts: g(&self.heartbeat_timeouts),
            channel_breaks: g(&self.channel_breaks),
            items_queued: g(&self.items_queued),
            items_dropped: g(&self.items_dropped),
            items_delivered: g(&self.items_delivered),
            items_received: g(&self.items_received),
            e2e_sessions: g(&self.e2e_sessions),
            frames_sent: g(&self.frames_sent),
            frames_undeliverable: g(&self.frames_undeliverable),
            tampered_frames: g(&self.tampered_frames),
            replayed_frames: g(&self.replayed_frames),
            key_agreement_failures: g(&self.key_agreement_failures),
            mails_submitted: g(&self.mails_submitted),
            mail_failures: g(&self.mail_failures),
            welcome_mails: g(&self.welcome_mails),
            items_held: g(&self.items_held),
            items_deferred: g(&self.items_deferred),
            alerts_matched: g(&self.alerts_matched),
            alerts_sent: g(&self.alerts_sent),
        }
    }
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
