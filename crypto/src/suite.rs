//! The end-to-end suites by number and name: what WakeUp/WakeUpAck carry and what
//! configuration files and the CLI say (`--suite`).
//!
//! A leaf of the crate, like [`crate::fingerprint`]: [`crate::CryptoError`] names these
//! values, so they import nothing that can fail. Parsing a name (`FromStr`, which fails
//! with a `CryptoError`) and the key lengths live with the negotiation.

use std::fmt;

/// An end-to-end encryption suite. The numbers and names are stable: they travel in
/// WakeUp/WakeUpAck and appear in configuration files and on the CLI (`--suite`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Suite {
    /// X25519 (Noise NX, VES key pinned by fingerprint), HKDF-SHA256, ChaCha20-Poly1305
    /// with per-direction counters. Id 1, name `modern`.
    #[default]
    Modern,
    /// White paper §11: sect283k1 cofactor ECDH, X9.63 KDF, AES-128-CFB + HMAC-SHA1/80,
    /// deflate. Unauthenticated. Id 2, name `legacy-2005`.
    Legacy2005,
}

impl Suite {
    /// Every suite, strongest first.
    pub const ALL: [Suite; 2] = [Suite::Modern, Suite::Legacy2005];

    /// The number used on the wire.
    pub fn id(self) -> u8 {
        match self {
            Suite::Modern => 1,
            Suite::Legacy2005 => 2,
        }
    }

    /// The suite of a wire number, if known.
    pub fn from_id(id: u8) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name used in configuration and on the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Modern => "modern",
            Suite::Legacy2005 => "legacy-2005",
        }
    }

    /// Whether the key agreement authenticates the VES (and so resists a malicious relay).
    pub fn is_authenticated(self) -> bool {
        matches!(self, Suite::Modern)
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
