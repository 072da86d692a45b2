//! The primitives both suites are built from, as plain functions.
//!
//! They are public so that the known-answer tests (NIST SP 800-38A, RFC 2202, RFC 7748,
//! RFC 5869, RFC 8439, NIST CAVP X9.63) exercise exactly the calls the suites make, and so
//! that debugging tools can reproduce each step of a frame. Nothing here is a protocol; use
//! [`crate::Session`] to talk to a peer.

use aes::Aes128;
use cfb_mode::cipher::KeyIvInit;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::error::CryptoError;

type HmacSha1 = Hmac<Sha1>;

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Rng(e.to_string()))
}

/// AES-128 in full-block (128-bit) CFB mode, encrypting `buf` in place. Any length: the
/// last partial block uses the leading bytes of the keystream block.
pub fn aes128_cfb128_encrypt(key: &[u8; 16], iv: &[u8; 16], buf: &mut [u8]) {
    cfb_mode::Encryptor::<Aes128>::new(&(*key).into(), &(*iv).into()).encrypt(buf);
}

/// The inverse of [`aes128_cfb128_encrypt`].
pub fn aes128_cfb128_decrypt(key: &[u8; 16], iv: &[u8; 16], buf: &mut [u8]) {
    cfb_mode::Decryptor::<Aes128>::new(&(*key).into(), &(*iv).into()).decrypt(buf);
}

fn hmac_sha1_init(key: &[u8], data: &[u8]) -> Result<HmacSha1, CryptoError> {
    // HMAC accepts keys of any length; the error arm is unreachable.
    let mut mac = <HmacSha1 as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::Internal("HMAC key"))?;
    mac.update(data);
    Ok(mac)
}

/// HMAC-SHA1 (RFC 2104), all 20 bytes.
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> Result<[u8; 20], CryptoError> {
    Ok(hmac_sha1_init(key, data)?.finalize().into_bytes().into())
}

/// Whether `tag` equals the leading `tag.len()` bytes of HMAC-SHA1(key, data), compared in
/// constant time. An empty tag never verifies.
pub fn hmac_sha1_verify_truncated(key: &[u8], data: &[u8], tag: &[u8]) -> Result<bool, CryptoError> {
    Ok(hmac_sha1_init(key, data)?.verify_truncated_left(tag).is_ok())
}

/// X25519 (RFC 7748 §5): the scalar is clamped, the u-coordinate's top bit ignored.
pub fn x25519(scalar: [u8; 32], u: [u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(scalar, u)
}

/// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` into `okm`.
pub fn hkdf_sha256(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], okm: &mut [u8]) -> Result<(), CryptoError> {
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, okm)
        .map_err(|_| CryptoError::Config("HKDF output longer than 8160 bytes"))
}

/// HKDF-SHA256's extract step alone: the pseudorandom key.
pub fn hkdf_sha256_extract(salt: Option<&[u8]>, ikm: &[u8]) -> [u8; 32] {
    Hkdf::<Sha256>::extract(salt, ikm).0.into()
}

/// ChaCha20-Poly1305 (RFC 8439) encryption: ciphertext ‖ 16-byte tag.
pub fn chacha20poly1305_seal(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    ChaCha20Poly1305::new(&(*key).into())
        .encrypt(&Nonce::from(*nonce), Payload { msg: plaintext, aad })
        .map_err(|_| CryptoError::Internal("ChaCha20-Poly1305 input too long"))
}

/// ChaCha20-Poly1305 decryption; [`CryptoError::AuthenticationFailed`] if the tag is wrong.
pub fn chacha20poly1305_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    ChaCha20Poly1305::new(&(*key).into())
        .decrypt(&Nonce::from(*nonce), Payload { msg: sealed, aad })
        .map_err(|_| CryptoError::AuthenticationFailed)
}
