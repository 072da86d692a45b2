//! The one error type of this crate.
//!
//! Every operation on bytes that came from the peer (or from the relay in between) returns
//! a [`CryptoError`] instead of panicking: a hostile relay must not be able to crash an
//! endpoint. The variants are specific enough for an endpoint to decide what to do (drop a
//! replayed frame and re-acknowledge it, abort a session whose VES key does not match the
//! pin, report a bad MAC in the CLI) without parsing messages.

use thiserror::Error;

use crate::fingerprint::Fingerprint;
use crate::suite::Suite;

/// Why a cryptographic operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The bytes do not have the shape of the named structure (too short, bad length
    /// field, unknown version, trailing bytes…). Nothing was decrypted.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: &'static str },

    /// The MAC (legacy-2005) or the AEAD tag (modern) does not match: the frame was
    /// tampered with, or was sealed under another key.
    #[error("authentication failed: the MAC or tag does not match (tampered frame or wrong key)")]
    AuthenticationFailed,

    /// A modern frame whose counter was already accepted: a replay (or a resend of a frame
    /// already received, which an endpoint may simply acknowledge again).
    #[error("replayed frame: counter {counter} was already received")]
    Replayed { counter: u64 },

    /// A modern frame from further ahead in the stream than expected: frames in between
    /// were dropped, reordered or withheld.
    #[error("frame out of order: expected counter {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },

    /// The stream already ended in this direction (the final frame was sealed or opened).
    #[error("the stream has ended: no frame may follow the final one")]
    StreamFinished,

    /// 2^64 − 1 frames were sealed under one key; a new session is needed.
    #[error("frame counter exhausted: start a new session")]
    CounterExhausted,

    /// The inflated plaintext of a legacy-2005 frame would exceed the configured maximum.
    #[error("plaintext exceeds the maximum of {max} bytes")]
    PlaintextTooLarge { max: usize },

    /// The authenticated payload is not a complete raw deflate stream (RFC 1951).
    #[error("corrupt compressed data: {0}")]
    Decompression(&'static str),

    /// A public key that is not a point of the expected form on the expected curve.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),

    /// A private scalar outside `[1, n)`, or of the wrong length.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(&'static str),

    /// The Diffie-Hellman result is the point at infinity (sect283k1) or all zeros
    /// (X25519, a low-order peer key): the peer contributed nothing secret.
    #[error("key agreement produced a degenerate shared secret (low-order or identity point)")]
    DegenerateSharedSecret,

    /// The modern handshake's authentication failed: the VES did not prove possession of
    /// the static key it presented, or the transcript was altered on the way.
    #[error("handshake authentication failed: the key agreement was tampered with")]
    HandshakeFailed,

    /// The VES presented a static key whose fingerprint is not the pinned one.
    #[error("VES key fingerprint mismatch: pinned {expected}, presented {presented}")]
    FingerprintMismatch { expected: Box<Fingerprint>, presented: Box<Fingerprint> },

    /// A fingerprint string that is not 64 hexadecimal digits.
    #[error("invalid fingerprint: {0}")]
    InvalidFingerprint(&'static str),

    /// The responder supports none of the suites the initiator offered.
    #[error("no common suite")]
    NoCommonSuite,

    /// The responder chose a suite the initiator did not offer.
    #[error("the peer chose suite {0}, which was not offered")]
    SuiteNotOffered(Suite),

    /// An unknown suite name or number.
    #[error("unknown suite {0:?}")]
    UnknownSuite(String),

    /// The operation exists only in another suite (e.g. a final frame under legacy-2005).
    #[error("{what} is not supported by suite {suite}")]
    Unsupported { suite: Suite, what: &'static str },

    /// A configuration the API refuses (empty suite list, duplicates…).
    #[error("invalid configuration: {0}")]
    Config(&'static str),

    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(String),

    /// OpenSSL failed (sect283k1 arithmetic, key generation).
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),

    /// An internal invariant failed; this is a bug in this crate, never a peer's doing.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl CryptoError {
    pub(crate) fn malformed(what: &'static str, reason: &'static str) -> Self {
        CryptoError::Malformed { what, reason }
    }
}
