//! The error type of the shared endpoint layer.
//!
//! One enum for everything this crate does (codec, store, TLS set-up, files), so that the
//! agent and the device can wrap it in their own error types with `#[from]` and decide per
//! variant: a [`EndpointError::Codec`] error means the *peer* sent something wrong (log,
//! do not crash), a [`EndpointError::Store`] error means the local disk failed (do not
//! acknowledge: the peer will resend).

use std::path::PathBuf;

use thiserror::Error;

/// Why an endpoint operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Bytes from the peer (after decryption) that are not a valid record or item.
    #[error("malformed {what}: {reason}")]
    Codec { what: &'static str, reason: String },

    /// The local SQLite store failed.
    #[error("local store: {0}")]
    Store(#[from] rusqlite::Error),

    /// The outbox holds its maximum number of items and the policy is to refuse more.
    #[error("the outbox is full ({max} items): wait until queued items are delivered")]
    OutboxFull { max: usize },

    /// End-to-end cryptography refused an operation on our own data (sealing, key set-up).
    #[error("end-to-end encryption: {0}")]
    Crypto(#[from] noc_crypto::CryptoError),

    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A TLS trust store could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] noc_tls::TlsError),

    /// A value that cannot be used as given (bad hex, wrong length, ...).
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl EndpointError {
    pub(crate) fn codec(what: &'static str, reason: impl Into<String>) -> Self {
        EndpointError::Codec { what, reason: reason.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EndpointError::Io { path: path.into(), source }
    }
}
