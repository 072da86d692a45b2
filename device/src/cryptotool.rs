//! The `noc-device crypto` debugging commands, as library functions: seal and open single
//! frames under a raw key and derive a legacy-2005 key, so that another implementation can
//! be checked against this one byte for byte (like `openssl enc` and `openssl pkeyutl
//! -derive`). Sessions never use these: they manage keys and counters themselves.
//!
//! Key material:
//! * `legacy-2005`: the 16-byte key `K` from the X9.63 KDF (what `derive` prints); the
//!   same key seals and opens both directions. `--iv` is the 16-byte IV (random if omitted).
//! * `modern`: a 32-byte ChaCha20-Poly1305 *direction* key (`k_dev→ves` or `k_ves→dev`);
//!   the frame carries its counter, chosen with `--counter`.

use noc_crypto::{CryptoError, LegacyKey, Suite, legacy, modern};

use crate::error::DeviceError;

/// Decodes hex, ignoring whitespace (so `xxd -p` output with line breaks works).
pub fn parse_hex(what: &'static str, text: &str) -> Result<Vec<u8>, DeviceError> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&clean).map_err(|e| DeviceError::invalid(what, format!("not hexadecimal: {e}")))
}

fn fixed<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], DeviceError> {
    let bytes = parse_hex(what, text)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| DeviceError::invalid(what, format!("{len} bytes, expected {N}")))
}

/// Options of `crypto seal`.
#[derive(Clone, Debug, Default)]
pub struct SealOptions {
    /// legacy-2005: the IV in hex; random when `None`.
    pub iv_hex: Option<String>,
    /// modern: the frame counter.
    pub counter: u64,
    /// modern: mark the frame as the last of its direction.
    pub last: bool,
}

/// Seals `plaintext` into one frame.
pub fn seal(suite: Suite, key_hex: &str, plaintext: &[u8], opts: &SealOptions) -> Result<Vec<u8>, DeviceError> {
    match suite {
        Suite::Legacy2005 => {
            let key = LegacyKey::from_bytes(fixed::<{ legacy::KEY_LEN }>("--key", key_hex)?);
            match &opts.iv_hex {
                Some(iv) => Ok(key.seal_with_iv(&fixed::<{ legacy::IV_LEN }>("--iv", iv)?, plaintext)?),
                None => Ok(key.seal(plaintext)?),
            }
        }
        Suite::Modern => {
            if opts.iv_hex.is_some() {
                return Err(DeviceError::invalid("--iv", "modern frames have no IV (the nonce is the counter)"));
            }
            let key = fixed::<{ modern::KEY_LEN }>("--key", key_hex)?;
            Ok(modern::seal_frame(&key, opts.counter, opts.last, plaintext)?)
        }
    }
}

/// Opens one frame given as hex; an altered frame or a wrong key is
/// [`CryptoError::AuthenticationFailed`], a plaintext longer than `max_plaintext` bytes
/// [`CryptoError::PlaintextTooLarge`]. The bound matters for legacy-2005, whose deflated
/// frames can inflate about a thousandfold: inflating stops at the bound, so a hostile
/// frame cannot exhaust memory. Modern frames are not compressed; the bound is checked all
/// the same so that the flag means one thing for both suites.
pub fn open(suite: Suite, key_hex: &str, frame_hex: &str, max_plaintext: usize) -> Result<Vec<u8>, DeviceError> {
    let frame = parse_hex("frame", frame_hex)?;
    match suite {
        Suite::Legacy2005 => {
            let key = LegacyKey::from_bytes(fixed::<{ legacy::KEY_LEN }>("--key", key_hex)?);
            Ok(key.open(&frame, max_plaintext)?)
        }
        Suite::Modern => {
            let key = fixed::<{ modern::KEY_LEN }>("--key", key_hex)?;
            let plaintext = modern::open_frame(&key, &frame)?.plaintext;
            if plaintext.len() > max_plaintext {
                return Err(CryptoError::PlaintextTooLarge { max: max_plaintext }.into());
            }
            Ok(plaintext)
        }
    }
}

/// The legacy-2005 session key for a private scalar and the peer's public point.
pub fn derive(suite: Suite, private_hex: &str, peer_public_hex: &str) -> Result<[u8; 16], DeviceError> {
    match suite {
        Suite::Legacy2005 => {
            let key = legacy::derive_key(&parse_hex("--private", private_hex)?, &parse_hex("--peer-public", peer_public_hex)?)?;
            Ok(*key.as_bytes())
        }
        Suite::Modern => Err(CryptoError::Unsupported {
            suite,
            what: "a single-DH derive (modern keys come out of the Noise NX handshake, which mixes two DHs and the transcript)",
        }
        .into()),
    }
}

/// The uncompressed public point of a legacy-2005 private scalar.
pub fn public_key(suite: Suite, private_hex: &str) -> Result<Vec<u8>, DeviceError> {
    match suite {
        Suite::Legacy2005 => Ok(legacy::public_key_of(&parse_hex("--private", private_hex)?)?),
        Suite::Modern => {
            let secret = fixed::<32>("--private", private_hex)?;
            Ok(noc_crypto::StaticKeyPair::from_secret_bytes(secret).public_key().to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = noc_crypto::DEFAULT_MAX_PLAINTEXT;

    #[test]
    fn legacy_seal_is_deterministic_with_an_iv_and_opens() {
        let key = "000102030405060708090a0b0c0d0e0f";
        let opts = SealOptions { iv_hex: Some("0f0e0d0c0b0a09080706050403020100".into()), ..Default::default() };
        let a = seal(Suite::Legacy2005, key, b"hello", &opts).expect("seal");
        let b = seal(Suite::Legacy2005, key, b"hello", &opts).expect("seal");
        assert_eq!(a, b);
        assert_eq!(open(Suite::Legacy2005, key, &hex::encode(&a), MAX).expect("open"), b"hello");
        let mut bad = a.clone();
        bad[20] ^= 1;
        assert!(matches!(
            open(Suite::Legacy2005, key, &hex::encode(&bad), MAX),
            Err(DeviceError::Crypto(CryptoError::AuthenticationFailed))
        ));
    }

    #[test]
    fn modern_round_trip_and_wrong_key() {
        let key = "11".repeat(32);
        let opts = SealOptions { counter: 7, ..Default::default() };
        let f = seal(Suite::Modern, &key, b"hi", &opts).expect("seal");
        assert_eq!(&f[1..9], &7u64.to_be_bytes());
        assert_eq!(open(Suite::Modern, &key, &hex::encode(&f), MAX).expect("open"), b"hi");
        assert!(open(Suite::Modern, &"22".repeat(32), &hex::encode(&f), MAX).is_err());
        assert!(seal(Suite::Modern, "00", b"", &opts).is_err(), "short key");
    }

    #[test]
    fn the_plaintext_bound_holds_for_both_suites() {
        let zeros = vec![0u8; 4096];
        let key = "000102030405060708090a0b0c0d0e0f";
        let legacy = hex::encode(seal(Suite::Legacy2005, key, &zeros, &SealOptions::default()).expect("seal"));
        assert!(legacy.len() < 200, "zeros deflate to little: the bound is on the inflated size");
        assert_eq!(open(Suite::Legacy2005, key, &legacy, 4096).expect("at the bound"), zeros);
        assert!(matches!(
            open(Suite::Legacy2005, key, &legacy, 4095),
            Err(DeviceError::Crypto(CryptoError::PlaintextTooLarge { max: 4095 }))
        ));
        let key = "11".repeat(32);
        let modern = hex::encode(seal(Suite::Modern, &key, &zeros, &SealOptions::default()).expect("seal"));
        assert_eq!(open(Suite::Modern, &key, &modern, 4096).expect("at the bound"), zeros);
        assert!(matches!(
            open(Suite::Modern, &key, &modern, 4095),
            Err(DeviceError::Crypto(CryptoError::PlaintextTooLarge { max: 4095 }))
        ));
    }

    #[test]
    fn derive_agrees_both_ways() {
        let a = "01".repeat(30);
        let b = "02".repeat(30);
        let pa = hex::encode(public_key(Suite::Legacy2005, &a).expect("pa"));
        let pb = hex::encode(public_key(Suite::Legacy2005, &b).expect("pb"));
        assert_eq!(derive(Suite::Legacy2005, &a, &pb).expect("ab"), derive(Suite::Legacy2005, &b, &pa).expect("ba"));
        assert!(derive(Suite::Modern, &a, &pb).is_err());
    }
}
