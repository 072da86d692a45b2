//! Suite `legacy-2005`: the white paper's §11 construction, exactly.
//!
//! * **Key agreement** — ephemeral-ephemeral ECDH over sect283k1 in *cofactor* mode (NIST
//!   SP 800-56A C(2e, 0s, ECC CDH)): `P = h·d·Q` with the cofactor `h = 4`; `P = O` aborts;
//!   `Z` is the affine x-coordinate of `P` as a 36-byte big-endian field element. OpenSSL
//!   computes the same thing for `EVP_PKEY_CTX_set_ecdh_cofactor_mode(ctx, 1)`: it
//!   multiplies the peer point by the integer `h·d` (not reduced mod n). The `openssl`
//!   crate does not expose that control, so [`shared_secret`] does the multiplication with
//!   `EC_POINT_mul` itself; a test checks it against `openssl pkeyutl -derive -pkeyopt
//!   ecdh_cofactor_mode:1`.
//! * **KDF** — ANSI X9.63 with SHA-1, 32-bit big-endian counter starting at 1, *no*
//!   SharedInfo (the white paper names none): `K = SHA-1(Z ‖ 00000001)[..16]`.
//! * **Frame** — `IV(16) ‖ MAC(10) ‖ AES-128-CFB128_K(IV, M)`, where `M` is the raw deflate
//!   (RFC 1951, no zlib header) of the plaintext `T`, and `MAC = HMAC-SHA1_K(M)[..10]`.
//!   The same key protects both directions, as in the white paper.
//!
//! Public keys travel as uncompressed SEC1 points (`0x04 ‖ X ‖ Y`, 73 bytes).
//!
//! Deflate uses zlib (the C library, through flate2's `zlib` backend) at level 6, zlib's
//! default, with a 32 KiB window: a frame sealed here is byte-for-byte the frame a zlib-based
//! implementation (Python's `zlib`, the 2005 clients) produces for the same key, IV and
//! plaintext, which is what lets the CLI's `crypto seal` be checked against OpenSSL.
//!
//! This suite exists for interoperability with peers built from the 2005 specification. It
//! is **not authenticated** (a relay can sit in the middle of the key agreement), has no
//! replay protection, truncates the MAC to 80 bits and compresses before encrypting; see
//! `docs/crypto.md`. Prefer [`crate::modern`].

use std::io::Write;

use flate2::{Compression, Decompress, FlushDecompress, Status, write::DeflateEncoder};
use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use openssl::ec::{EcGroup, EcGroupRef, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::Private;
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::primitives::{
    aes128_cfb128_decrypt, aes128_cfb128_encrypt, fill_random, hmac_sha1, hmac_sha1_verify_truncated,
};

/// Length of the AES-128 session key `K`.
pub const KEY_LEN: usize = 16;
/// Length of the random IV at the start of every frame.
pub const IV_LEN: usize = 16;
/// Length of the truncated HMAC-SHA1 after the IV.
pub const MAC_LEN: usize = 10;
/// `IV ‖ MAC`: the bytes before the ciphertext.
pub const HEADER_LEN: usize = IV_LEN + MAC_LEN;
/// Bytes of a sect283k1 field element (⌈283 / 8⌉): the length of `Z` and of each coordinate.
pub const FIELD_LEN: usize = 36;
/// An uncompressed SEC1 point: `0x04 ‖ X ‖ Y`.
pub const PUBLIC_KEY_LEN: usize = 1 + 2 * FIELD_LEN;
/// The cofactor `h` of sect283k1.
pub const COFACTOR: u32 = 4;
/// zlib's default level, which zlib-based peers use unless told otherwise.
pub const COMPRESSION_LEVEL: u32 = 6;

/// Inflation grows its output at most this much at a time, so a small frame that claims to
/// inflate to a lot costs memory only as fast as it really produces bytes.
const INFLATE_CHUNK: usize = 16 * 1024;

fn group() -> Result<EcGroup, CryptoError> {
    Ok(EcGroup::from_curve_name(Nid::SECT283K1)?)
}

/// A legacy-2005 session key `K`. Seals and opens frames; both directions use the same key.
#[derive(Clone)]
pub struct LegacyKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for LegacyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LegacyKey(..)")
    }
}

impl LegacyKey {
    /// A key given as bytes (the CLI's `--key`, or the output of [`derive_key`]).
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        LegacyKey(Zeroizing::new(key))
    }

    /// The raw key, for `crypto derive` to print and for tests to hand to `openssl enc`.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Seals `plaintext` with a fresh random IV.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut iv = [0u8; IV_LEN];
        fill_random(&mut iv)?;
        self.seal_with_iv(&iv, plaintext)
    }

    /// Seals `plaintext` with the given IV. Deterministic, for known-answer checks against
    /// other implementations (`crypto seal --iv`); a real sender must never reuse an IV
    /// under one key (CFB leaks the XOR of the two plaintexts' first blocks), so sessions
    /// use [`LegacyKey::seal`].
    pub fn seal_with_iv(&self, iv: &[u8; IV_LEN], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let m = deflate(plaintext)?;
        let tag = hmac_sha1(self.0.as_slice(), &m)?;

        let mut frame = Vec::with_capacity(HEADER_LEN + m.len());
        frame.extend_from_slice(iv);
        frame.extend_from_slice(&tag[..MAC_LEN]);
        frame.extend_from_slice(&m);
        aes128_cfb128_encrypt(&self.0, iv, &mut frame[HEADER_LEN..]);
        Ok(frame)
    }

    /// Opens a frame: decrypts `M`, checks its MAC in constant time, and only then inflates
    /// it, refusing to produce more than `max_plaintext` bytes (a 64 KiB frame of hostile
    /// deflate data could otherwise expand to about 64 MiB).
    pub fn open(&self, frame: &[u8], max_plaintext: usize) -> Result<Vec<u8>, CryptoError> {
        if frame.len() < HEADER_LEN {
            return Err(CryptoError::malformed("legacy-2005 frame", "shorter than IV and MAC (26 bytes)"));
        }
        let (iv, rest) = frame.split_at(IV_LEN);
        let (tag, ciphertext) = rest.split_at(MAC_LEN);
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| CryptoError::Internal("IV length"))?;

        let mut m = Zeroizing::new(ciphertext.to_vec());
        aes128_cfb128_decrypt(&self.0, &iv, &mut m);
        if !hmac_sha1_verify_truncated(self.0.as_slice(), &m, tag)? {
            return Err(CryptoError::AuthenticationFailed);
        }
        inflate_bounded(&m, max_plaintext)
    }
}

/// Raw deflate (RFC 1951) of `t` at [`COMPRESSION_LEVEL`].
fn deflate(t: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(t.len() / 2 + 64), Compression::new(COMPRESSION_LEVEL));
    // Writing into a Vec cannot fail; zlib could only fail on a bug.
    encoder.write_all(t).map_err(|_| CryptoError::Internal("deflate"))?;
    encoder.finish().map(Zeroizing::new).map_err(|_| CryptoError::Internal("deflate"))
}

/// Inflates one complete raw deflate stream that must fill `m` exactly, producing at most
/// `max` bytes. The output buffer never grows beyond `max + 1` bytes.
fn inflate_bounded(m: &[u8], max: usize) -> Result<Vec<u8>, CryptoError> {
    let mut inflater = Decompress::new(false);
    let mut out: Vec<u8> = Vec::with_capacity(max.min(m.len().saturating_mul(4)).min(INFLATE_CHUNK) + 1);
    loop {
        if out.len() == out.capacity() {
            let room = max.saturating_add(1).saturating_sub(out.len());
            if room == 0 {
                return Err(CryptoError::PlaintextTooLarge { max });
            }
            out.reserve_exact(room.min(out.len().max(INFLATE_CHUNK)));
        }
        let consumed = usize::try_from(inflater.total_in()).map_err(|_| CryptoError::Internal("inflate position"))?;
        let input = m.get(consumed..).ok_or(CryptoError::Internal("inflate position"))?;
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::Finish)
            .map_err(|_| CryptoError::Decompression("not a valid raw deflate stream"))?;
        if out.len() > max {
            return Err(CryptoError::PlaintextTooLarge { max });
        }
        match status {
            Status::StreamEnd => {
                if inflater.total_in() != m.len() as u64 {
                    return Err(CryptoError::Decompression("bytes after the end of the deflate stream"));
                }
                return Ok(out);
            }
            Status::Ok | Status::BufError => {
                let stalled = inflater.total_in() == in_before && inflater.total_out() == out_before;
                if stalled && out.len() < out.capacity() {
                    return Err(CryptoError::Decompression("truncated deflate stream"));
                }
            }
        }
    }
}

/// ANSI X9.63 key derivation (SEC 1 §3.6.1) with SHA-1: fills `out` with
/// `SHA-1(Z ‖ counter ‖ SharedInfo)` for counter = 1, 2, … (32-bit big-endian).
pub fn x963_kdf_sha1(z: &[u8], shared_info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
    for (i, chunk) in out.chunks_mut(20).enumerate() {
        let counter = u32::try_from(i + 1).map_err(|_| CryptoError::Config("X9.63 KDF output too long"))?;
        let mut hash = Sha1::new();
        hash.update(z);
        hash.update(counter.to_be_bytes());
        hash.update(shared_info);
        let digest = hash.finalize();
        chunk.copy_from_slice(&digest[..chunk.len()]);
    }
    Ok(())
}

/// `K = X9.63-KDF-SHA1(Z)` truncated to 128 bits, no SharedInfo.
pub fn kdf(z: &[u8]) -> Result<LegacyKey, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    x963_kdf_sha1(z, &[], key.as_mut_slice())?;
    Ok(LegacyKey(key))
}

/// Parses an uncompressed SEC1 point and checks that it is a point of sect283k1 other than
/// the point at infinity (SP 800-56A partial public-key validation; the cofactor
/// multiplication takes care of small-subgroup components).
fn parse_public(group: &EcGroupRef, bytes: &[u8], ctx: &mut BigNumContext) -> Result<EcPoint, CryptoError> {
    if bytes.len() != PUBLIC_KEY_LEN || bytes[0] != 0x04 {
        return Err(CryptoError::InvalidPublicKey("expected an uncompressed SEC1 point: 0x04 ‖ X ‖ Y, 73 bytes"));
    }
    let point = EcPoint::from_bytes(group, bytes, ctx)
        .map_err(|_| CryptoError::InvalidPublicKey("not a point of sect283k1"))?;
    if point.is_infinity(group) || !point.is_on_curve(group, ctx)? {
        return Err(CryptoError::InvalidPublicKey("not a point of sect283k1"));
    }
    Ok(point)
}

/// `Z = x(h·d·Q)`, padded to [`FIELD_LEN`] bytes.
fn cofactor_dh(
    group: &EcGroupRef,
    d: &BigNumRef,
    peer_public: &[u8],
) -> Result<Zeroizing<[u8; FIELD_LEN]>, CryptoError> {
    let mut ctx = BigNumContext::new_secure()?;
    let q = parse_public(group, peer_public, &mut ctx)?;
    let mut h = BigNum::new()?;
    group.cofactor(&mut h, &mut ctx)?;
    if h != BigNum::from_u32(COFACTOR)? {
        return Err(CryptoError::Internal("sect283k1 cofactor is not 4"));
    }
    // As OpenSSL's cofactor mode: the integer h·d, not reduced mod n.
    let mut hd = BigNum::new_secure()?;
    hd.checked_mul(&h, d, &mut ctx)?;
    let mut p = EcPoint::new(group)?;
    p.mul2(group, &q, &hd, &mut ctx)?;
    if p.is_infinity(group) {
        return Err(CryptoError::DegenerateSharedSecret);
    }
    let mut x = BigNum::new_secure()?;
    let mut y = BigNum::new()?;
    p.affine_coordinates(group, &mut x, &mut y, &mut ctx)?;
    let padded = Zeroizing::new(x.to_vec_padded(FIELD_LEN as i32)?);
    let mut z = Zeroizing::new([0u8; FIELD_LEN]);
    z.copy_from_slice(&padded);
    Ok(z)
}

/// Parses a private scalar (big-endian, at most 36 bytes) and checks `1 ≤ d < n`.
fn parse_private(group: &EcGroupRef, scalar: &[u8]) -> Result<BigNum, CryptoError> {
    if scalar.is_empty() || scalar.len() > FIELD_LEN {
        return Err(CryptoError::InvalidPrivateKey("expected 1 to 36 big-endian bytes"));
    }
    let mut d = BigNum::new_secure()?;
    d.copy_from_slice(scalar)?;
    let mut order = BigNum::new()?;
    let mut ctx = BigNumContext::new()?;
    group.order(&mut order, &mut ctx)?;
    if d.num_bits() == 0 || d >= order {
        return Err(CryptoError::InvalidPrivateKey("the scalar must be in [1, n)"));
    }
    Ok(d)
}

/// The shared secret `Z` for a private scalar (big-endian) and the peer's uncompressed
/// public point. For `crypto derive` and for checks against `openssl pkeyutl -derive`.
pub fn shared_secret(private_scalar: &[u8], peer_public: &[u8]) -> Result<Zeroizing<[u8; FIELD_LEN]>, CryptoError> {
    let group = group()?;
    let d = parse_private(&group, private_scalar)?;
    cofactor_dh(&group, &d, peer_public)
}

/// `K = KDF(Z)` for a private scalar and the peer's public point: what both ends of a
/// legacy-2005 key agreement compute (`noc-device crypto derive`).
pub fn derive_key(private_scalar: &[u8], peer_public: &[u8]) -> Result<LegacyKey, CryptoError> {
    kdf(shared_secret(private_scalar, peer_public)?.as_slice())
}

/// The uncompressed public point `d·G` of a private scalar.
pub fn public_key_of(private_scalar: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let group = group()?;
    let d = parse_private(&group, private_scalar)?;
    let mut ctx = BigNumContext::new_secure()?;
    let mut point = EcPoint::new(&group)?;
    point.mul_generator2(&group, &d, &mut ctx)?;
    Ok(point.to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?)
}

/// One side's ephemeral sect283k1 key pair, generated for one session and consumed by the
/// key agreement so it cannot be reused (forward secrecy between sessions).
pub struct LegacyEphemeral {
    key: EcKey<Private>,
    public: Vec<u8>,
}

impl std::fmt::Debug for LegacyEphemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyEphemeral").field("public", &self.public.len()).finish_non_exhaustive()
    }
}

impl LegacyEphemeral {
    /// A fresh key pair from OpenSSL's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let group = group()?;
        let key = EcKey::generate(&group)?;
        let mut ctx = BigNumContext::new()?;
        let public = key.public_key().to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
        Ok(LegacyEphemeral { key, public })
    }

    /// The uncompressed public point to send to the peer.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Completes the key agreement with the peer's public point.
    pub fn agree(self, peer_public: &[u8]) -> Result<LegacyKey, CryptoError> {
        let group = group()?;
        let z = cofactor_dh(&group, self.key.private_key(), peer_public)?;
        kdf(z.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflate_rejects_truncated_and_trailing_data() {
        let m = deflate(b"hello hello hello hello").expect("deflate");
        assert!(matches!(inflate_bounded(&m[..m.len() - 1], 1000), Err(CryptoError::Decompression(_))));
        let mut trailing = m.to_vec();
        trailing.push(0);
        assert!(matches!(inflate_bounded(&trailing, 1000), Err(CryptoError::Decompression(_))));
        assert!(matches!(inflate_bounded(b"\xff\xff\xff", 1000), Err(CryptoError::Decompression(_))));
        assert_eq!(inflate_bounded(&m, 1000).expect("inflate"), b"hello hello hello hello");
    }

    #[test]
    fn inflate_is_bounded_exactly() {
        let t = vec![b'a'; 100_000];
        let m = deflate(&t).expect("deflate");
        assert!(m.len() < 200, "a run compresses well: {}", m.len());
        assert_eq!(inflate_bounded(&m, 100_000).expect("fits exactly").len(), 100_000);
        assert!(matches!(inflate_bounded(&m, 99_999), Err(CryptoError::PlaintextTooLarge { max: 99_999 })));
        assert!(matches!(inflate_bounded(&m, 0), Err(CryptoError::PlaintextTooLarge { max: 0 })));
        let empty = deflate(b"").expect("deflate");
        assert_eq!(inflate_bounded(&empty, 0).expect("empty fits in 0"), b""); // No limit at all must not overflow.
        assert_eq!(inflate_bounded(&m, usize::MAX).expect("unbounded").len(), 100_000);
    }

    #[test]
    fn private_scalar_range_is_checked() {
        let peer = LegacyEphemeral::generate().expect("keygen");
        assert!(matches!(shared_secret(&[0], peer.public_key()), Err(CryptoError::InvalidPrivateKey(_))));
        assert!(matches!(shared_secret(&[], peer.public_key()), Err(CryptoError::InvalidPrivateKey(_))));
        assert!(matches!(shared_secret(&[0xff; 36], peer.public_key()), Err(CryptoError::InvalidPrivateKey(_))));
        assert!(shared_secret(&[1], peer.public_key()).is_ok());
    }

    #[test]
    fn public_keys_are_validated() {
        let ours = LegacyEphemeral::generate().expect("keygen");
        let peer = LegacyEphemeral::generate().expect("keygen");
        let mut off_curve = peer.public_key().to_vec();
        off_curve[72] ^= 1;
        let compressed_tag = {
            let mut p = peer.public_key().to_vec();
            p[0] = 0x02;
            p
        };
        for bad in [&off_curve[..], &compressed_tag[..], &peer.public_key()[..72], &[0u8; 73][..], &[][..]] {
            let ours = LegacyEphemeral::generate().expect("keygen");
            assert!(matches!(ours.agree(bad), Err(CryptoError::InvalidPublicKey(_))), "accepted {bad:02x?}");
        }
        assert!(ours.agree(peer.public_key()).is_ok());
    }

    #[test]
    fn public_key_of_matches_generated_key() {
        let peer = LegacyEphemeral::generate().expect("keygen");
        let d = peer.key.private_key().to_vec();
        assert_eq!(public_key_of(&d).expect("public"), peer.public_key());
    }
}
