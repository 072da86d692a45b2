//! The one control message every session actor takes.

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
