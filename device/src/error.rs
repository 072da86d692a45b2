//! The device client's error type.
//!
//! The variants separate what a caller must react to differently: [`DeviceError::Fatal`]
//! close codes (revoked, replaced, unknown device) end `run` because reconnecting cannot
//! help; [`DeviceError::Api`] carries the relay's HTTP error code for activation; crypto
//! errors from the `crypto` debugging commands keep their [`noc_crypto::CryptoError`] so
//! the CLI can say "MAC mismatch" plainly.

use std::path::PathBuf;

use noc_protocol::CloseCode;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The state directory holds no activated device.
    #[error("{0}: no activated device here (run `noc-device activate` first)")]
    NotActivated(PathBuf),

    /// The state file exists but cannot be used.
    #[error("{path}: {reason}")]
    BadState { path: PathBuf, reason: String },

    /// The relay answered an HTTP request with an error.
    #[error("relay answered HTTP {status} {code}: {message}")]
    Api { status: u16, code: String, message: String },

    /// The relay could not be reached, or the connection failed.
    #[error("network: {0}")]
    Network(String),

    /// The relay closed the device channel with a code after which reconnecting cannot
    /// help (revoked or unknown credential, another session of this device, ...).
    #[error("the relay closed the connection ({code}: {message}); not reconnecting")]
    Fatal { code: CloseCode, message: String },

    /// The relay delivered a remote wipe: the device's data and credentials are erased.
    #[error("this device was erased remotely: its data and credentials are deleted; activate it again to use it")]
    Wiped,

    /// A value given on the command line or in the SDK is not usable.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },

    /// End-to-end cryptography failed (a frame that does not authenticate, a bad key).
    /// Transparent: its message is the crypto error's, which must not be printed twice.
    #[error(transparent)]
    Crypto(#[from] noc_crypto::CryptoError),

    /// The shared endpoint layer failed (local store, TLS set-up, files).
    #[error(transparent)]
    Endpoint(#[from] noc_endpoint::EndpointError),
}

impl DeviceError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        DeviceError::Invalid { what, reason: reason.into() }
    }
}
