//! The agent's error type, and the relay's HTTP errors as the agent sees them.

use std::time::Duration;

use noc_protocol::ApiErrorCode;
use thiserror::Error;

/// An RTS request that failed: transport, an HTTP error from the relay, or a body that is
/// not what the protocol says.
#[derive(Debug, Error, Clone)]
pub enum RtsError {
    #[error("cannot reach the relay: {0}")]
    Transport(String),
    #[error("relay answered HTTP {status} {code}: {message}")]
    Api { status: u16, code: String, message: String, retry_after: Option<Duration> },
    #[error("unexpected answer from the relay: {0}")]
    Decode(String),
    #[error("no RTS session is open (the agent is connecting)")]
    NoSession,
}

impl RtsError {
    /// The relay's `Error.Code`, if it answered with one ([`ApiErrorCode::Other`] for a
    /// code this agent does not know, or an answer that was not an error body).
    pub fn code(&self) -> Option<ApiErrorCode> {
        match self {
            RtsError::Api { code, .. } => Some(ApiErrorCode::parse(code)),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the relay was unreachable, no session was
    /// open, or the relay said it is busy or unavailable.
    pub fn is_retryable(&self) -> bool {
        match self {
            RtsError::Transport(_) | RtsError::NoSession => true,
            RtsError::Api { status, .. } => *status == 503 || *status == 429,
            RtsError::Decode(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RtsError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why an agent operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),

    #[error("state: {0}")]
    State(String),

    /// `run` before `register`.
    #[error("this agent is not registered: run `ves-agent register` first")]
    NotRegistered,

    #[error(transparent)]
    Rts(#[from] RtsError),

    /// Another agent with the same GUID took over the RTS session (docs/protocol.md
    /// §4.3.7): reconnecting automatically would make the two replace each other.
    #[error("another agent with this GUID took over the RTS session ({0}); not reconnecting")]
    Replaced(String),

    /// The relay speaks an RTS version this agent does not know.
    #[error("the relay speaks RTS protocol version {0}; this agent speaks 1")]
    UnsupportedProtocol(u32),

    #[error("SMTP: {0}")]
    Smtp(String),

    #[error("control socket: {0}")]
    Control(String),

    #[error("mail source: {0}")]
    Source(String),

    #[error(transparent)]
    Crypto(#[from] noc_crypto::CryptoError),

    #[error(transparent)]
    Endpoint(#[from] noc_endpoint::EndpointError),
}
