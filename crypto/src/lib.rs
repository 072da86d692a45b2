//! End-to-end encryption between the VES agent and the device client.
//!
//! The relay moves FORWARD payloads between a device and its enterprise server (VES) as
//! opaque bytes. This crate is what makes them opaque: the two endpoints agree on fresh
//! keys for every session inside the `WakeUp`/`WakeUpAck` exchange and then seal every
//! `Data` payload. The relay never links it; the VES agent and the device client do, so
//! that the relay operator cannot read (and, under the default suite, cannot undetectably
//! alter, replay or man-in-the-middle) what it relays. `docs/crypto.md` has the wire
//! formats and the threat model.
//!
//! Two suites, negotiated per session ([`negotiation`]):
//!
//! * [`Suite::Modern`] (default, [`modern`]) — the Noise NX pattern over X25519: the VES
//!   proves possession of a long-term key whose [`Fingerprint`] the user received out of
//!   band and the device pins; HKDF-SHA256 binds one key per direction to the transcript;
//!   ChaCha20-Poly1305 with per-direction counters detects tampering, replay, reordering
//!   and (with [`Session::seal_final`]) truncation.
//! * [`Suite::Legacy2005`] ([`legacy`]) — the white paper's §11, exactly: sect283k1
//!   cofactor ECDH, ANSI X9.63 KDF (SHA-1), `IV ‖ HMAC-SHA1/80 ‖ AES-128-CFB(deflate(T))`.
//!   Kept for peers built from that specification; it is unauthenticated.
//!
//! ```
//! use noc_crypto::{Initiator, InitiatorConfig, Responder, ResponderConfig, StaticKeyPair};
//!
//! # fn main() -> Result<(), noc_crypto::CryptoError> {
//! // The VES's long-term key; its fingerprint reaches the user in the welcome e-mail.
//! let ves_key = StaticKeyPair::generate()?;
//! let pinned = ves_key.fingerprint();
//! let ves = Responder::new(ves_key, ResponderConfig::default())?;
//!
//! // Device: WakeUp → (relay) → VES: WakeUpAck → (relay) → device.
//! let (device, wakeup) = Initiator::start(InitiatorConfig::new(pinned))?;
//! let (wakeup_ack, mut ves_session) = ves.accept(&wakeup)?;
//! let mut device_session = device.finish(&wakeup_ack)?;
//!
//! let frame = ves_session.seal(b"new mail")?;
//! assert_eq!(device_session.open(&frame)?, b"new mail");
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod fingerprint;
pub mod legacy;
pub mod modern;
pub mod negotiation;
pub mod primitives;
pub mod session;
pub mod suite;

pub use error::CryptoError;
pub use fingerprint::Fingerprint;
pub use legacy::{LegacyEphemeral, LegacyKey};
pub use modern::{OpenedFrame, StaticKeyPair};
pub use negotiation::{KeyShare, WakeUp, WakeUpAck};
pub use session::{DEFAULT_MAX_PLAINTEXT, Initiator, InitiatorConfig, Responder, ResponderConfig, Role, Session};
pub use suite::Suite;
