//! Session actors and the router that connects them.
//!
//! One actix actor owns each authenticated session: [`DeviceSession`] per device
//! connection, [`VesSession`] per enterprise-server RTS session. An actor owns its
//! session's lifecycle (registration, heartbeats, idle and stall timeouts, takeover,
//! close); the bytes flow through bounded queues that the [`Router`] fills straight from the
//! sending session's thread, so relaying a frame never waits on another actor's mailbox
//! nor touches the account store.
//!
//! A session that panics only loses itself: the actor's task unwinds, and its registry
//! entry is removed by the guard it drops.

mod config;
mod device;
pub mod metrics;
pub mod queue;
mod router;
mod rts;
mod ves;

pub use config::SessionConfig;
pub use device::{DeviceSession, DeviceSessionInfo};
pub use metrics::{Direction, DropReason, Metrics, SessionKind};
pub use router::{DeviceHandle, DeviceOut, Router, VesHandle, WriterGuard};
pub use rts::{EventLookup, RtsSessions};
pub use ves::{Attach, CommandStream, VesSession, VesShared, VesUserState};

use actix::Message;
use noc_protocol::CloseCode;

/// Asks a session actor to close, telling its peer why.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: CloseCode,
    pub message: String,
    /// Hint for the peer (draining): reconnect after this many milliseconds.
    pub reconnect_after_ms: u32,
}

impl CloseSession {
    pub fn new(code: CloseCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reconnect_after_ms: 0 }
    }
}
