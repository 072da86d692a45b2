//! The hand-written Noise NX handshake of suite `modern` (src/modern.rs) against an
//! independent implementation of the Noise framework, the `snow` crate, in both roles.
//!
//! `snow` contributes its own handshake state machine: the protocol name as initial hash,
//! the prologue, the token order of NX, MixHash/MixKey, its own HMAC and HKDF (built on the
//! bare hash function), the handshake payload encryption with `h` as associated data, and
//! `Split()`. The primitives under it (SHA-256, ChaCha20-Poly1305, X25519) come from the
//! same RustCrypto crates the project uses, through a resolver below, so that no second
//! generation of those crates enters `Cargo.lock`; they are checked on their own against
//! published vectors (tests/known_answers.rs). What this file checks is therefore the part
//! that was written by hand: that our bytes *are* `Noise_NX_25519_ChaChaPoly_SHA256` with
//! the prologue `"noc-e2e/1" ‖ WakeUp`, so that any Noise library can talk to an endpoint.
//!
//! The transport frames are not Noise transport messages (docs/crypto.md §3.1 and §3.3:
//! each `Split()` key goes through one more HKDF bound to the transcript, and frames carry
//! flags and a big-endian counter as associated data); the tests derive those keys from
//! snow's raw `Split()` output and handshake hash, as docs/crypto.md specifies, and then
//! exchange frames with the project's sessions.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use noc_crypto::primitives::hkdf_sha256;
use noc_crypto::{
    CryptoError, Fingerprint, Initiator, InitiatorConfig, KeyShare, Responder, ResponderConfig, Session, StaticKeyPair,
    Suite, WakeUp, WakeUpAck, modern,
};
use sha2::Digest;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};

const PATTERN: &str = "Noise_NX_25519_ChaChaPoly_SHA256";
const PROLOGUE_LABEL: &[u8] = b"noc-e2e/1";
const LABEL_DEVICE_TO_VES: &[u8] = b"noc-e2e/1 modern device->ves";
const LABEL_VES_TO_DEVICE: &[u8] = b"noc-e2e/1 modern ves->device";

// ---- snow's primitives, from the workspace's RustCrypto crates ---------------------------

struct Rng;

impl Random for Rng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        getrandom::fill(dest).map_err(|_| snow::Error::Rng)
    }
}

#[derive(Default)]
struct X25519 {
    private: [u8; 32],
    public: [u8; 32],
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        self.private.copy_from_slice(&privkey[..32]);
        self.public = x25519_dalek::x25519(self.private, x25519_dalek::X25519_BASEPOINT_BYTES);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = [0u8; 32];
        rng.try_fill_bytes(&mut private)?;
        self.set(&private);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let public: [u8; 32] = pubkey.get(..32).and_then(|p| p.try_into().ok()).ok_or(snow::Error::Dh)?;
        out[..32].copy_from_slice(&x25519_dalek::x25519(self.private, public));
        Ok(())
    }
}

#[derive(Default)]
struct ChaChaPoly {
    key: [u8; 32],
}

/// Noise's ChaChaPoly nonce (Noise rev. 34 §12.3): 32 zero bits, then `n` little-endian.
fn noise_nonce(n: u64) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    nonce.into()
}

impl Cipher for ChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }
    fn set(&mut self, key: &[u8; 32]) {
        self.key = *key;
    }
    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let n = plaintext.len();
        out[..n].copy_from_slice(plaintext);
        let tag = ChaCha20Poly1305::new(&self.key.into())
            .encrypt_inout_detached(&noise_nonce(nonce), authtext, (&mut out[..n]).into())
            .expect("ChaCha20-Poly1305 takes any handshake-sized input");
        out[n..n + 16].copy_from_slice(&tag);
        n + 16
    }
    fn decrypt(&self, nonce: u64, authtext: &[u8], ciphertext: &[u8], out: &mut [u8]) -> Result<usize, snow::Error> {
        let n = ciphertext.len().checked_sub(16).ok_or(snow::Error::Decrypt)?;
        out[..n].copy_from_slice(&ciphertext[..n]);
        let tag = Tag::try_from(&ciphertext[n..]).map_err(|_| snow::Error::Decrypt)?;
        ChaCha20Poly1305::new(&self.key.into())
            .decrypt_inout_detached(&noise_nonce(nonce), authtext, (&mut out[..n]).into(), &tag)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(n)
    }
}

#[derive(Default)]
struct Sha256(sha2::Sha256);

impl Hash for Sha256 {
    fn name(&self) -> &'static str {
        "SHA256"
    }
    fn block_len(&self) -> usize {
        64
    }
    fn hash_len(&self) -> usize {
        32
    }
    fn reset(&mut self) {
        self.0 = sha2::Sha256::new();
    }
    fn input(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn result(&mut self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.0.finalize_reset());
    }
}

struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(Rng))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        matches!(choice, DHChoice::Curve25519).then(|| Box::new(X25519::default()) as Box<dyn Dh>)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        matches!(choice, HashChoice::SHA256).then(|| Box::new(Sha256::default()) as Box<dyn Hash>)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        matches!(choice, CipherChoice::ChaChaPoly).then(|| Box::new(ChaChaPoly::default()) as Box<dyn Cipher>)
    }
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::with_resolver(PATTERN.parse().expect("pattern"), Box::new(Resolver))
}

// ---- helpers ---------------------------------------------------------------------------

fn prologue(wakeup: &[u8]) -> Vec<u8> {
    [PROLOGUE_LABEL, wakeup].concat()
}

fn fixed(byte: u8) -> [u8; 32] {
    let mut k = [byte; 32];
    k[0] = byte.wrapping_add(1);
    k
}

/// The transport keys of docs/crypto.md §3.1 from a finished snow handshake.
fn transport_keys(hs: &mut snow::HandshakeState) -> ([u8; 32], [u8; 32], [u8; 32]) {
    assert!(hs.is_handshake_finished());
    let h: [u8; 32] = hs.get_handshake_hash().try_into().expect("32-byte hash");
    let (t1, t2) = hs.dangerously_get_raw_split();
    let expand = |ikm: &[u8; 32], label: &[u8]| {
        let mut k = [0u8; 32];
        hkdf_sha256(Some(&h), ikm, label, &mut k).expect("HKDF");
        k
    };
    (expand(&t1, LABEL_DEVICE_TO_VES), expand(&t2, LABEL_VES_TO_DEVICE), h)
}

/// Frames both ways between a project session and the raw direction keys of the peer:
/// the peer's frames are built and opened with the stateless frame functions.
fn exchange(session: &mut Session, seal_key: &[u8; 32], open_key: &[u8; 32]) {
    for (counter, text) in [&b"first"[..], b"", &[0xa5; 3000][..]].into_iter().enumerate() {
        let counter = counter as u64;
        let ours = session.seal(text).expect("seal");
        let opened = modern::open_frame(open_key, &ours).expect("the peer opens our frame");
        assert_eq!((opened.counter, opened.plaintext.as_slice()), (counter, text));
        let theirs = modern::seal_frame(seal_key, counter, false, text).expect("peer seals");
        assert_eq!(session.open(&theirs).expect("we open the peer's frame"), text);
    }
}

// ---- the tests -------------------------------------------------------------------------

/// snow as the device (initiator), the project's `Responder` as the VES.
#[test]
fn snow_initiator_completes_a_handshake_with_our_responder() {
    let ves_key = StaticKeyPair::from_secret_bytes(fixed(0x40));
    let responder = Responder::new(ves_key.clone(), ResponderConfig::default()).expect("responder");

    // The WakeUp holds the ephemeral key snow will send, so it is fixed before snow runs.
    let e = fixed(0x10);
    let e_pub = x25519_dalek::x25519(e, x25519_dalek::X25519_BASEPOINT_BYTES);
    let wakeup = WakeUp { offers: vec![KeyShare { suite_id: Suite::Modern.id(), public_key: e_pub.to_vec() }] }
        .encode()
        .expect("wakeup");
    let mut snow = builder()
        .prologue(&prologue(&wakeup))
        .expect("prologue")
        .fixed_ephemeral_key_for_testing_only(&e)
        .build_initiator()
        .expect("snow initiator");

    // -> e: the first Noise message is exactly the key share in the WakeUp.
    let mut msg = [0u8; 256];
    let n = snow.write_message(&[], &mut msg).expect("write e");
    assert_eq!(&msg[..n], &e_pub);

    // <- e, ee, s, es: our WakeUpAck's ephemeral ‖ auth is a valid second message for snow.
    let (ack, mut ves) = responder.accept(&wakeup).expect("accept");
    let ack = WakeUpAck::decode(&ack).expect("ack");
    assert_eq!((ack.ephemeral.len(), ack.auth.len()), (32, 64));
    let mut payload = [0u8; 256];
    let n = snow.read_message(&[ack.ephemeral.as_slice(), &ack.auth].concat(), &mut payload).expect("snow reads it");
    assert_eq!(n, 0, "empty handshake payload");
    assert_eq!(snow.get_remote_static(), Some(&ves_key.public_key()[..]), "snow learned our static key");

    let (device_to_ves, ves_to_device, h) = transport_keys(&mut snow);
    assert_eq!(ves.handshake_hash(), Some(&h), "same transcript hash");
    exchange(&mut ves, &device_to_ves, &ves_to_device);
}

/// The project's `Initiator` as the device, snow as the VES (responder).
#[test]
fn our_initiator_completes_a_handshake_with_a_snow_responder() {
    let ves_secret = fixed(0x41);
    let ves_key = StaticKeyPair::from_secret_bytes(ves_secret);
    let (initiator, wakeup) = Initiator::start(InitiatorConfig::new(ves_key.fingerprint())).expect("start");
    let offer = WakeUp::decode(&wakeup).expect("wakeup");
    assert_eq!(offer.offers.len(), 1);

    let mut snow = builder()
        .local_private_key(&ves_secret)
        .expect("static key")
        .prologue(&prologue(&wakeup))
        .expect("prologue")
        .build_responder()
        .expect("snow responder");
    let mut payload = [0u8; 256];
    let n = snow.read_message(&offer.offers[0].public_key, &mut payload).expect("snow reads -> e");
    assert_eq!(n, 0);
    let mut msg = [0u8; 256];
    let n = snow.write_message(&[], &mut msg).expect("write e, ee, s, es");
    assert_eq!(n, 32 + 48 + 16);
    let ack = WakeUpAck { suite: Suite::Modern, ephemeral: msg[..32].to_vec(), auth: msg[32..n].to_vec() }
        .encode()
        .expect("ack");
    let mut device = initiator.finish(&ack).expect("our initiator accepts snow's answer");

    let (device_to_ves, ves_to_device, h) = transport_keys(&mut snow);
    assert_eq!(device.handshake_hash(), Some(&h), "same transcript hash");
    exchange(&mut device, &ves_to_device, &device_to_ves);
}

/// The interop is not vacuous: what the spec says must fail, fails across implementations.
#[test]
fn mismatches_fail_across_implementations() {
    // A snow responder with a key the device did not pin: a valid Noise handshake, refused
    // by the pin.
    let (initiator, wakeup) =
        Initiator::start(InitiatorConfig::new(StaticKeyPair::from_secret_bytes(fixed(0x42)).fingerprint()))
            .expect("start");
    let other = fixed(0x43);
    let mut snow = builder()
        .local_private_key(&other)
        .expect("key")
        .prologue(&prologue(&wakeup))
        .expect("prologue")
        .build_responder()
        .expect("responder");
    let e = WakeUp::decode(&wakeup).expect("wakeup").offers[0].public_key.clone();
    let mut buf = [0u8; 256];
    snow.read_message(&e, &mut buf).expect("read");
    let n = snow.write_message(&[], &mut buf).expect("write");
    let ack = WakeUpAck { suite: Suite::Modern, ephemeral: buf[..32].to_vec(), auth: buf[32..n].to_vec() }
        .encode()
        .expect("ack");
    let err = initiator.finish(&ack).expect_err("another VES key");
    assert!(matches!(err, CryptoError::FingerprintMismatch { .. }), "{err}");
    assert_eq!(
        Fingerprint::of(&x25519_dalek::x25519(other, x25519_dalek::X25519_BASEPOINT_BYTES)).as_bytes().len(),
        32
    );

    // A snow initiator whose prologue lacks the label (or any byte of the offer): the
    // transcripts differ, so snow cannot authenticate our answer.
    let responder =
        Responder::new(StaticKeyPair::from_secret_bytes(fixed(0x44)), ResponderConfig::default()).expect("responder");
    let e = fixed(0x11);
    let e_pub = x25519_dalek::x25519(e, x25519_dalek::X25519_BASEPOINT_BYTES);
    let wakeup = WakeUp { offers: vec![KeyShare { suite_id: Suite::Modern.id(), public_key: e_pub.to_vec() }] }
        .encode()
        .expect("wakeup");
    let mut snow = builder()
        .prologue(&wakeup)
        .expect("prologue")
        .fixed_ephemeral_key_for_testing_only(&e)
        .build_initiator()
        .expect("initiator");
    snow.write_message(&[], &mut buf).expect("write e");
    let (ack, _) = responder.accept(&wakeup).expect("accept");
    let ack = WakeUpAck::decode(&ack).expect("ack");
    assert!(
        snow.read_message(&[ack.ephemeral.as_slice(), &ack.auth].concat(), &mut buf).is_err(),
        "the prologue is bound into the handshake"
    );
}
