//! The fingerprint of a VES's long-term key: what the user receives out of band and the
//! device pins.
//!
//! A leaf of the crate, like [`crate::suite`]: [`crate::CryptoError`] names fingerprints
//! (a pin mismatch carries both), so this file imports nothing that can fail. Parsing the
//! printed form ([`Fingerprint::parse`], which fails with a `CryptoError`) lives with the
//! modern suite that uses it.

use std::fmt;

use sha2::{Digest, Sha256};

/// The SHA-256 fingerprint of a VES static public key, as the user sees it in the welcome
/// e-mail and the device pins it. Printed as 16 groups of 4 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// `SHA-256(public key)`: reproducible with `xxd -r -p | sha256sum`.
    pub fn of(public_key: &[u8; 32]) -> Self {
        Fingerprint(Sha256::digest(public_key).into())
    }

    /// The fingerprint from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}
