//! Suite `modern` (the default): an authenticated X25519 key agreement, HKDF-SHA256 and
//! ChaCha20-Poly1305 with per-direction counters.
//!
//! ## Handshake
//!
//! The handshake is the Noise **NX** pattern (`Noise_NX_25519_ChaChaPoly_SHA256`),
//! implemented here with Noise's `SymmetricState` rules (rev. 34, §5.2) rather than with the
//! `snow` crate, which would pull a second generation of the RustCrypto crates (sha2 0.10,
//! curve25519-dalek 4, chacha20poly1305 0.10) into the workspace. `tests/noise_interop.rs`
//! runs it against `snow` in both roles, so the handshake bytes are standard Noise:
//!
//! ```text
//!   prologue = "noc-e2e/1" ‖ WakeUp bytes      (the whole offer: suites, every key share)
//!   -> e                                        (in WakeUp)
//!   <- e, ee, s, es                             (in WakeUpAck: VES ephemeral, encrypted static
//!                                                key, and the tag of an empty payload)
//! ```
//!
//! The device (initiator) sends only an ephemeral key. The VES (responder) answers with its
//! ephemeral key, then its long-term static key encrypted under a key derived from `ee`,
//! then an empty payload encrypted under a key derived from `ee` and `es`: its tag proves
//! that the VES holds the static private key *and* saw the same transcript, since the
//! associated data of every handshake encryption is the running transcript hash `h`. The
//! device then checks the static key against the fingerprint it pinned out of band
//! ([`Fingerprint`], from the welcome e-mail). A relay that substitutes its own ephemeral
//! key cannot compute `es`; one that substitutes its own static key fails the pin.
//!
//! ## Transport keys
//!
//! After the handshake, Noise's `Split()` gives two keys from the chaining key; each is fed
//! once more through HKDF-SHA256 with the final transcript hash `h` as salt and a label per
//! direction as info, so the keys are bound to the complete transcript and cannot be
//! confused between directions:
//!
//! ```text
//!   (t1, t2)   = HKDF(ck, "", 2)                              — Noise Split()
//!   k_dev→ves  = HKDF-SHA256(salt = h, ikm = t1, info = "noc-e2e/1 modern device->ves", 32)
//!   k_ves→dev  = HKDF-SHA256(salt = h, ikm = t2, info = "noc-e2e/1 modern ves->device", 32)
//! ```
//!
//! ## Frames
//!
//! `flags(1) ‖ counter(8, big-endian) ‖ ChaCha20-Poly1305(k_dir, nonce, aad = flags ‖ counter, T)`,
//! with `nonce = 0x00000000 ‖ counter (big-endian)`. Flag bit 0 marks the final frame of a
//! direction; other bits must be zero. Counters start at 0 in each direction and the
//! receiver accepts exactly the next one, so a replayed, reordered, dropped or (with a
//! final frame) truncated stream is detected. No compression: lengths leak, but nothing
//! more (no CRIME-style oracle).

use std::fmt;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::fingerprint::Fingerprint;
use crate::primitives::{fill_random, hkdf_sha256};

/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a ChaCha20-Poly1305 key.
pub const KEY_LEN: usize = 32;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// `flags ‖ counter`: the authenticated, unencrypted frame header.
pub const HEADER_LEN: usize = 1 + 8;
/// Flag bit of the last frame of a direction.
pub const FLAG_FINAL: u8 = 0x01;
/// The VES's part of the handshake after its ephemeral key: encrypted static key
/// (32 + 16) and the tag of the empty payload (16).
pub const HANDSHAKE_AUTH_LEN: usize = PUBLIC_KEY_LEN + TAG_LEN + TAG_LEN;

/// Exactly 32 bytes, so Noise uses it as the initial `h` without hashing.
const PROTOCOL_NAME: &[u8; 32] = b"Noise_NX_25519_ChaChaPoly_SHA256";
const PROLOGUE_LABEL: &[u8] = b"noc-e2e/1";
const LABEL_DEVICE_TO_VES: &[u8] = b"noc-e2e/1 modern device->ves";
const LABEL_VES_TO_DEVICE: &[u8] = b"noc-e2e/1 modern ves->device";

impl Fingerprint {
    /// Parses 64 hex digits, in either case, ignoring spaces, colons and dashes, so that the
    /// printed form, `AA:BB:…` and a bare `sha256sum` all work. The whole digest is
    /// required: a truncated fingerprint would be easier to collide.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        let mut out = [0u8; 32];
        let mut n = 0usize;
        for c in s.chars() {
            if c.is_whitespace() || c == ':' || c == '-' {
                continue;
            }
            let v = c.to_digit(16).ok_or(CryptoError::InvalidFingerprint("not a hexadecimal digit"))?;
            let byte = out.get_mut(n / 2).ok_or(CryptoError::InvalidFingerprint("more than 64 hex digits"))?;
            *byte = (*byte << 4) | v as u8;
            n += 1;
        }
        if n != 64 {
            return Err(CryptoError::InvalidFingerprint("expected 64 hex digits (SHA-256)"));
        }
        Ok(Fingerprint::from_bytes(out))
    }
}

impl FromStr for Fingerprint {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fingerprint::parse(s)
    }
}

/// The VES's long-term X25519 key pair. Its public half's [`Fingerprint`] goes to users out
/// of band; its secret half stays in the agent's state file (0600).
#[derive(Clone)]
pub struct StaticKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for StaticKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeyPair").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl StaticKeyPair {
    /// A fresh key pair from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_secret_bytes(random_secret()?))
    }

    /// The key pair of a stored secret (any 32 bytes; X25519 clamps them).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        StaticKeyPair { secret, public }
    }

    /// The secret, for the agent to persist.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public.to_bytes()
    }

    /// The fingerprint users compare and devices pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.public.as_bytes())
    }
}

fn random_secret() -> Result<[u8; 32], CryptoError> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(bytes)
}

/// X25519 that refuses a non-contributory result (a low-order peer key would make the
/// "shared" secret a constant the relay knows).
fn dh(secret: &StaticSecret, public: &[u8; PUBLIC_KEY_LEN]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(CryptoError::DegenerateSharedSecret);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// A 32-byte secret that is wiped when dropped.
type Secret32 = Zeroizing<[u8; 32]>;

/// Noise's `HKDF(ck, ikm, 2)`, which is RFC 5869 extract-then-expand with empty info.
fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> Result<(Secret32, Secret32), CryptoError> {
    let mut okm = Zeroizing::new([0u8; 64]);
    hkdf_sha256(Some(ck), ikm, &[], okm.as_mut_slice())?;
    let mut a = Zeroizing::new([0u8; 32]);
    let mut b = Zeroizing::new([0u8; 32]);
    a.copy_from_slice(&okm[..32]);
    b.copy_from_slice(&okm[32..]);
    Ok((a, b))
}

fn cipher(key: &[u8; KEY_LEN]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&(*key).into())
}

/// Noise's `SymmetricState` (Noise rev. 34, §5.2) with its `CipherState` folded in.
struct SymmetricState {
    ck: Zeroizing<[u8; 32]>,
    h: [u8; 32],
    k: Option<Zeroizing<[u8; 32]>>,
    n: u64,
}

impl SymmetricState {
    fn new(prologue: &[u8]) -> Self {
        let mut state = SymmetricState { ck: Zeroizing::new(*PROTOCOL_NAME), h: *PROTOCOL_NAME, k: None, n: 0 };
        state.mix_hash(prologue);
        state
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut hash = Sha256::new();
        hash.update(self.h);
        hash.update(data);
        self.h = hash.finalize().into();
    }

    fn mix_key(&mut self, ikm: &[u8]) -> Result<(), CryptoError> {
        let (ck, k) = hkdf2(&self.ck, ikm)?;
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
        Ok(())
    }

    /// Noise's ChaChaPoly nonce: 32 zero bits, then `n` as 64-bit little-endian.
    fn next_nonce(&mut self) -> Result<Nonce, CryptoError> {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.n.to_le_bytes());
        self.n = self.n.checked_add(1).ok_or(CryptoError::CounterExhausted)?;
        Ok(Nonce::from(nonce))
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let out = match self.k.clone() {
            None => plaintext.to_vec(),
            Some(k) => {
                let nonce = self.next_nonce()?;
                cipher(&k)
                    .encrypt(&nonce, Payload { msg: plaintext, aad: &self.h })
                    .map_err(|_| CryptoError::Internal("handshake encryption"))?
            }
        };
        self.mix_hash(&out);
        Ok(out)
    }

    fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let out = match self.k.clone() {
            None => ciphertext.to_vec(),
            Some(k) => {
                let nonce = self.next_nonce()?;
                cipher(&k)
                    .decrypt(&nonce, Payload { msg: ciphertext, aad: &self.h })
                    .map_err(|_| CryptoError::HandshakeFailed)?
            }
        };
        self.mix_hash(ciphertext);
        Ok(out)
    }

    /// `Split()`, then bind both keys to the final transcript hash, one label per direction.
    fn into_keys(self) -> Result<HandshakeKeys, CryptoError> {
        let (t1, t2) = hkdf2(&self.ck, &[])?;
        let expand = |ikm: &[u8; 32], label: &[u8]| -> Result<Zeroizing<[u8; 32]>, CryptoError> {
            let mut key = Zeroizing::new([0u8; 32]);
            hkdf_sha256(Some(&self.h), ikm, label, key.as_mut_slice())?;
            Ok(key)
        };
        Ok(HandshakeKeys {
            device_to_ves: expand(&t1, LABEL_DEVICE_TO_VES)?,
            ves_to_device: expand(&t2, LABEL_VES_TO_DEVICE)?,
            handshake_hash: self.h,
        })
    }
}

fn prologue(wakeup: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + wakeup.len());
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(wakeup);
    p
}

/// The result of a completed handshake.
pub(crate) struct HandshakeKeys {
    pub(crate) device_to_ves: Zeroizing<[u8; 32]>,
    pub(crate) ves_to_device: Zeroizing<[u8; 32]>,
    pub(crate) handshake_hash: [u8; 32],
}

/// The device's ephemeral key, kept from WakeUp until WakeUpAck. It takes part in two DH
/// operations (`ee` and `es`), hence a `StaticSecret` that is dropped (and zeroized) when
/// the handshake ends.
pub(crate) struct InitiatorEphemeral {
    secret: StaticSecret,
    public: [u8; PUBLIC_KEY_LEN],
}

impl InitiatorEphemeral {
    pub(crate) fn generate() -> Result<Self, CryptoError> {
        let secret = StaticSecret::from(random_secret()?);
        let public = PublicKey::from(&secret).to_bytes();
        Ok(InitiatorEphemeral { secret, public })
    }

    pub(crate) fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// Reads `<- e, ee, s, es` (+ empty payload) and checks the VES static key against the pin.
    pub(crate) fn finish(
        self,
        wakeup: &[u8],
        responder_ephemeral: &[u8; PUBLIC_KEY_LEN],
        auth: &[u8],
        pin: &Fingerprint,
    ) -> Result<HandshakeKeys, CryptoError> {
        if auth.len() != HANDSHAKE_AUTH_LEN {
            return Err(CryptoError::malformed("WakeUpAck", "modern handshake data must be 64 bytes"));
        }
        let (encrypted_static, confirmation) = auth.split_at(PUBLIC_KEY_LEN + TAG_LEN);
        let mut state = SymmetricState::new(&prologue(wakeup));
        // -> e (and its empty payload)
        state.mix_hash(&self.public);
        state.mix_hash(&[]);
        // <- e, ee
        state.mix_hash(responder_ephemeral);
        state.mix_key(dh(&self.secret, responder_ephemeral)?.as_slice())?;
        // <- s
        let static_key: [u8; PUBLIC_KEY_LEN] = state
            .decrypt_and_hash(encrypted_static)?
            .try_into()
            .map_err(|_| CryptoError::Internal("static key length"))?;
        let presented = Fingerprint::of(&static_key);
        if presented != *pin {
            return Err(CryptoError::FingerprintMismatch { expected: Box::new(*pin), presented: Box::new(presented) });
        }
        // <- es, then the payload whose tag confirms the whole transcript
        state.mix_key(dh(&self.secret, &static_key)?.as_slice())?;
        state.decrypt_and_hash(confirmation)?;
        state.into_keys()
    }
}

/// The VES side: reads `-> e` and writes `<- e, ee, s, es` (+ empty payload). Returns the
/// VES ephemeral public key, the 64 bytes of handshake authentication, and the keys.
pub(crate) fn respond(
    static_key: &StaticKeyPair,
    wakeup: &[u8],
    initiator_ephemeral: &[u8; PUBLIC_KEY_LEN],
) -> Result<([u8; PUBLIC_KEY_LEN], Vec<u8>, HandshakeKeys), CryptoError> {
    let mut state = SymmetricState::new(&prologue(wakeup));
    // -> e (and its empty payload)
    state.mix_hash(initiator_ephemeral);
    state.mix_hash(&[]);
    // <- e, ee
    let ephemeral = StaticSecret::from(random_secret()?);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    state.mix_hash(&ephemeral_public);
    state.mix_key(dh(&ephemeral, initiator_ephemeral)?.as_slice())?;
    drop(ephemeral);
    // <- s, es, payload
    let mut auth = state.encrypt_and_hash(&static_key.public_key())?;
    state.mix_key(dh(&static_key.secret, initiator_ephemeral)?.as_slice())?;
    auth.extend_from_slice(&state.encrypt_and_hash(&[])?);
    Ok((ephemeral_public, auth, state.into_keys()?))
}

/// An opened modern frame, from [`open_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFrame {
    /// The frame's counter in its direction.
    pub counter: u64,
    /// Whether the sender marked it as the last frame of its direction.
    pub last: bool,
    /// The decrypted plaintext.
    pub plaintext: Vec<u8>,
}

fn frame_nonce(counter: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(nonce)
}

/// Reads a frame's header without authenticating it: `(counter, last)`.
pub fn frame_header(frame: &[u8]) -> Result<(u64, bool), CryptoError> {
    if frame.len() < HEADER_LEN + TAG_LEN {
        return Err(CryptoError::malformed("modern frame", "shorter than header and tag (25 bytes)"));
    }
    let flags = frame[0];
    if flags & !FLAG_FINAL != 0 {
        return Err(CryptoError::malformed("modern frame", "unknown flag bits"));
    }
    let counter = u64::from_be_bytes(frame[1..HEADER_LEN].try_into().map_err(|_| CryptoError::Internal("counter"))?);
    Ok((counter, flags & FLAG_FINAL != 0))
}

pub(crate) fn seal_with(
    cipher: &ChaCha20Poly1305,
    counter: u64,
    last: bool,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut header = [0u8; HEADER_LEN];
    header[0] = if last { FLAG_FINAL } else { 0 };
    header[1..].copy_from_slice(&counter.to_be_bytes());
    let sealed = cipher
        .encrypt(&frame_nonce(counter), Payload { msg: plaintext, aad: &header })
        .map_err(|_| CryptoError::Internal("frame too long for ChaCha20-Poly1305"))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + sealed.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&sealed);
    Ok(frame)
}

pub(crate) fn open_with(cipher: &ChaCha20Poly1305, frame: &[u8]) -> Result<OpenedFrame, CryptoError> {
    let (counter, last) = frame_header(frame)?;
    let (header, sealed) = frame.split_at(HEADER_LEN);
    let plaintext = cipher
        .decrypt(&frame_nonce(counter), Payload { msg: sealed, aad: header })
        .map_err(|_| CryptoError::AuthenticationFailed)?;
    Ok(OpenedFrame { counter, last, plaintext })
}

pub(crate) fn new_cipher(key: &[u8; KEY_LEN]) -> ChaCha20Poly1305 {
    cipher(key)
}

/// Seals one frame under a raw key and counter. Stateless, for the CLI's `crypto seal
/// --suite modern --key HEX` and for checks against other implementations; sessions use
/// [`crate::Session`], which manages counters.
pub fn seal_frame(key: &[u8; KEY_LEN], counter: u64, last: bool, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal_with(&cipher(key), counter, last, plaintext)
}

/// Opens one frame under a raw key. Stateless: it authenticates the frame but cannot know
/// whether its counter is fresh (that is [`crate::Session::open`]'s job).
pub fn open_frame(key: &[u8; KEY_LEN], frame: &[u8]) -> Result<OpenedFrame, CryptoError> {
    open_with(&cipher(key), frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_prints_and_parses() {
        let fp = Fingerprint::of(&[9u8; 32]);
        let printed = fp.to_string();
        assert_eq!(printed.len(), 16 * 4 + 15);
        assert_eq!(printed.split(' ').count(), 16);
        assert_eq!(Fingerprint::parse(&printed).expect("round trip"), fp);
        let colons: String = fp.as_bytes().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        assert_eq!(colons.parse::<Fingerprint>().expect("colon form"), fp);
        assert!(Fingerprint::parse(&printed[..printed.len() - 1]).is_err());
        assert!(Fingerprint::parse(&format!("{printed}0")).is_err());
        assert!(matches!(Fingerprint::parse(&format!("g{}", &printed[1..])), Err(CryptoError::InvalidFingerprint(_))));
        assert!(Fingerprint::parse("").is_err());
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        let secret = StaticSecret::from([7u8; 32]);
        // u = 0 and u = 1 are low-order points (RFC 7748 §6.1 warns about them).
        let mut one = [0u8; 32];
        one[0] = 1;
        for bad in [[0u8; 32], one] {
            assert!(matches!(dh(&secret, &bad), Err(CryptoError::DegenerateSharedSecret)));
        }
    }

    #[test]
    fn handshake_agrees_and_binds_directions() {
        let ves = StaticKeyPair::generate().expect("static key");
        let e = InitiatorEphemeral::generate().expect("ephemeral");
        let wakeup = b"any prologue bytes".to_vec();
        let e_pub = *e.public_key();
        let (ve, auth, ves_keys) = respond(&ves, &wakeup, &e_pub).expect("respond");
        let dev_keys = e.finish(&wakeup, &ve, &auth, &ves.fingerprint()).expect("finish");
        assert_eq!(*dev_keys.device_to_ves, *ves_keys.device_to_ves);
        assert_eq!(*dev_keys.ves_to_device, *ves_keys.ves_to_device);
        assert_eq!(dev_keys.handshake_hash, ves_keys.handshake_hash);
        assert_ne!(*dev_keys.device_to_ves, *dev_keys.ves_to_device);
    }

    #[test]
    fn handshake_detects_a_different_prologue() {
        let ves = StaticKeyPair::generate().expect("static key");
        let e = InitiatorEphemeral::generate().expect("ephemeral");
        let e_pub = *e.public_key();
        let (ve, auth, _) = respond(&ves, b"offer as the VES saw it", &e_pub).expect("respond");
        assert!(matches!(
            e.finish(b"offer as the device sent it", &ve, &auth, &ves.fingerprint()),
            Err(CryptoError::HandshakeFailed)
        ));
    }

    #[test]
    fn frame_header_rejects_unknown_flags_and_short_frames() {
        let key = [1u8; 32];
        let mut frame = seal_frame(&key, 5, false, b"x").expect("seal");
        assert_eq!(frame_header(&frame).expect("header"), (5, false));
        frame[0] = 0x80;
        assert!(matches!(frame_header(&frame), Err(CryptoError::Malformed { .. })));
        assert!(matches!(open_frame(&key, &frame[..24]), Err(CryptoError::Malformed { .. })));
    }
}
