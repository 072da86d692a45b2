//! Random secrets and their hashes, shared by the relay and the endpoints.
//!
//! Tokens the relay hands out (license-id tokens, device credentials, RTS keys) are 128 or
//! 256 random bits, so a single SHA-256 is a sufficient one-way hash for them and costs
//! microseconds to verify. User-chosen passwords get argon2id (see [`crate::Accounts`]).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all; nothing can run then.
    getrandom::fill(&mut b).expect("operating system random source unavailable");
    b
}

/// A random token as lowercase hex.
pub fn random_hex<const N: usize>() -> String {
    hex::encode(random_bytes::<N>())
}

/// A case-sensitive alphanumeric password (white paper §3.5), `len` characters, uniform.
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<32>() {
            // Rejection sampling keeps the distribution uniform: 248 = 4 * 62.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// SHA-256 of a token's bytes.
pub fn token_hash(token: &[u8]) -> Vec<u8> {
    Sha256::digest(token).to_vec()
}

/// Constant-time comparison of a presented token with a stored hash.
pub fn token_matches(token: &[u8], stored_hash: &[u8]) -> bool {
    let h = Sha256::digest(token);
    h.as_slice().ct_eq(stored_hash).into()
}

/// Parses `hex` of exactly `N` bytes.
pub fn parse_hex<const N: usize>(hex_str: &str) -> Option<[u8; N]> {
    if hex_str.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_str, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_alphanumeric_and_distinct() {
        let a = random_password(12);
        let b = random_password(12);
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn token_hash_matches_only_the_token() {
        let t = random_bytes::<32>();
        let h = token_hash(&t);
        assert!(token_matches(&t, &h));
        assert!(!token_matches(&random_bytes::<32>(), &h));
        assert!(!token_matches(&t, &h[..31]));
    }

    #[test]
    fn parse_hex_checks_length() {
        assert_eq!(parse_hex::<2>("00ff"), Some([0, 255]));
        assert_eq!(parse_hex::<2>("00f"), None);
        assert_eq!(parse_hex::<2>("zzzz"), None);
    }
}
