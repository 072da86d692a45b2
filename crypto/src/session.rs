//! The session API: [`Initiator`] (device) and [`Responder`] (VES) run the WakeUp/WakeUpAck
//! exchange and each yield a [`Session`] that seals and opens frames.
//!
//! ```text
//!   device                                   relay                          VES
//!   Initiator::start(config) ── WakeUp ──────────────────────────▶ Responder::accept(wakeup)
//!   initiator.finish(ack) ◀──────────────────────────── WakeUpAck ─┘ → Session
//!        → Session
//! ```
//!
//! Every session gets fresh ephemeral keys on both sides, so every session has new keys;
//! the ephemeral secrets are dropped (and zeroized) as soon as the keys are derived, which
//! is what gives forward secrecy between sessions.

use chacha20poly1305::ChaCha20Poly1305;

use crate::error::CryptoError;
use crate::fingerprint::Fingerprint;
use crate::legacy::{LegacyEphemeral, LegacyKey};
use crate::modern::{self, InitiatorEphemeral, StaticKeyPair};
use crate::negotiation::{KeyShare, WakeUp, WakeUpAck};
use crate::suite::Suite;

/// Default bound on an opened plaintext: 1 MiB. Relay frames are at most 64 KiB, but a
/// legacy-2005 frame is deflated and a hostile one could inflate about a thousandfold.
pub const DEFAULT_MAX_PLAINTEXT: usize = 1024 * 1024;

/// Which end of the session this is; it decides which key seals and which opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The device, which sends WakeUp.
    Initiator,
    /// The VES, which answers WakeUpAck.
    Responder,
}

fn check_suites(suites: &[Suite]) -> Result<(), CryptoError> {
    if suites.is_empty() {
        return Err(CryptoError::Config("at least one suite is required"));
    }
    for (i, s) in suites.iter().enumerate() {
        if suites[..i].contains(s) {
            return Err(CryptoError::Config("a suite is listed twice"));
        }
    }
    Ok(())
}

/// What a device needs to start a session.
#[derive(Clone, Debug)]
pub struct InitiatorConfig {
    /// The fingerprint of the VES static key, received out of band. Required even for a
    /// legacy-only device, so that adding `modern` later cannot forget it.
    pub ves_fingerprint: Fingerprint,
    /// Suites to offer, preferred first. Default: `[Modern]`. Offering `Legacy2005` as well
    /// lets a relay strip `Modern` from the offer and downgrade the session to an
    /// unauthenticated one (see `docs/crypto.md`); do it only for agents that need it.
    pub suites: Vec<Suite>,
    /// Largest plaintext [`Session::open`] returns.
    pub max_plaintext: usize,
}

impl InitiatorConfig {
    /// Modern only, default limits.
    pub fn new(ves_fingerprint: Fingerprint) -> Self {
        InitiatorConfig { ves_fingerprint, suites: vec![Suite::Modern], max_plaintext: DEFAULT_MAX_PLAINTEXT }
    }
}

/// A device between sending WakeUp and receiving WakeUpAck.
pub struct Initiator {
    config: InitiatorConfig,
    wakeup: Vec<u8>,
    modern: Option<InitiatorEphemeral>,
    legacy: Option<LegacyEphemeral>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator").field("suites", &self.config.suites).finish_non_exhaustive()
    }
}

impl Initiator {
    /// Generates one ephemeral key per offered suite and returns the WakeUp payload to send.
    pub fn start(config: InitiatorConfig) -> Result<(Initiator, Vec<u8>), CryptoError> {
        check_suites(&config.suites)?;
        let mut modern = None;
        let mut legacy = None;
        let mut offers = Vec::with_capacity(config.suites.len());
        for suite in &config.suites {
            let public_key = match suite {
                Suite::Modern => {
                    let e = InitiatorEphemeral::generate()?;
                    let public = e.public_key().to_vec();
                    modern = Some(e);
                    public
                }
                Suite::Legacy2005 => {
                    let e = LegacyEphemeral::generate()?;
                    let public = e.public_key().to_vec();
                    legacy = Some(e);
                    public
                }
            };
            offers.push(KeyShare { suite_id: suite.id(), public_key });
        }
        let wakeup = WakeUp { offers }.encode()?;
        Ok((Initiator { config, wakeup: wakeup.clone(), modern, legacy }, wakeup))
    }

    /// The WakeUp payload again (to resend it unchanged).
    pub fn wakeup(&self) -> &[u8] {
        &self.wakeup
    }

    /// Processes the VES's WakeUpAck. Under `modern` this authenticates the VES: a
    /// tampered key agreement fails with [`CryptoError::HandshakeFailed`] and a foreign
    /// VES key with [`CryptoError::FingerprintMismatch`].
    pub fn finish(self, wakeup_ack: &[u8]) -> Result<Session, CryptoError> {
        let ack = WakeUpAck::decode(wakeup_ack)?;
        if !self.config.suites.contains(&ack.suite) {
            return Err(CryptoError::SuiteNotOffered(ack.suite));
        }
        let max_plaintext = self.config.max_plaintext;
        match ack.suite {
            Suite::Modern => {
                let e = self.modern.ok_or(CryptoError::Internal("modern offered without a key"))?;
                let ves_ephemeral: [u8; modern::PUBLIC_KEY_LEN] = ack
                    .ephemeral
                    .as_slice()
                    .try_into()
                    .map_err(|_| CryptoError::InvalidPublicKey("an X25519 key is 32 bytes"))?;
                let keys = e.finish(&self.wakeup, &ves_ephemeral, &ack.auth, &self.config.ves_fingerprint)?;
                Ok(Session::modern(Role::Initiator, keys, max_plaintext))
            }
            Suite::Legacy2005 => {
                if !ack.auth.is_empty() {
                    return Err(CryptoError::malformed("WakeUpAck", "legacy-2005 carries no handshake data"));
                }
                let e = self.legacy.ok_or(CryptoError::Internal("legacy offered without a key"))?;
                let key = e.agree(&ack.ephemeral)?;
                Ok(Session::legacy(Role::Initiator, key, max_plaintext))
            }
        }
    }
}

/// What a VES needs to accept sessions.
#[derive(Clone, Debug)]
pub struct ResponderConfig {
    /// Suites the VES accepts, preferred first; it picks the first one the device offered.
    /// Default: `[Modern]`.
    pub suites: Vec<Suite>,
    /// Largest plaintext [`Session::open`] returns.
    pub max_plaintext: usize,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig { suites: vec![Suite::Modern], max_plaintext: DEFAULT_MAX_PLAINTEXT }
    }
}

/// The VES side of the negotiation. Stateless between sessions apart from its static key.
#[derive(Debug, Clone)]
pub struct Responder {
    static_key: StaticKeyPair,
    config: ResponderConfig,
}

impl Responder {
    /// A responder with the VES's long-term key.
    pub fn new(static_key: StaticKeyPair, config: ResponderConfig) -> Result<Self, CryptoError> {
        check_suites(&config.suites)?;
        Ok(Responder { static_key, config })
    }

    /// The fingerprint to tell users (welcome e-mail).
    pub fn fingerprint(&self) -> Fingerprint {
        self.static_key.fingerprint()
    }

    /// Answers a WakeUp: picks a suite, completes the key agreement, and returns the
    /// WakeUpAck payload and the session.
    pub fn accept(&self, wakeup: &[u8]) -> Result<(Vec<u8>, Session), CryptoError> {
        let offer = WakeUp::decode(wakeup)?;
        let (suite, share) = self
            .config
            .suites
            .iter()
            .find_map(|s| offer.share(*s).map(|share| (*s, share)))
            .ok_or(CryptoError::NoCommonSuite)?;
        let max_plaintext = self.config.max_plaintext;
        let (ack, session) = match suite {
            Suite::Modern => {
                let device_ephemeral: [u8; modern::PUBLIC_KEY_LEN] = share
                    .public_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| CryptoError::InvalidPublicKey("an X25519 key is 32 bytes"))?;
                let (ephemeral, auth, keys) = modern::respond(&self.static_key, wakeup, &device_ephemeral)?;
                let ack = WakeUpAck { suite, ephemeral: ephemeral.to_vec(), auth };
                (ack, Session::modern(Role::Responder, keys, max_plaintext))
            }
            Suite::Legacy2005 => {
                let e = LegacyEphemeral::generate()?;
                let ephemeral = e.public_key().to_vec();
                let key = e.agree(&share.public_key)?;
                let ack = WakeUpAck { suite, ephemeral, auth: Vec::new() };
                (ack, Session::legacy(Role::Responder, key, max_plaintext))
            }
        };
        Ok((ack.encode()?, session))
    }
}

/// One direction of a modern session.
struct Direction {
    cipher: ChaCha20Poly1305,
    next: u64,
    finished: bool,
}

enum Inner {
    Modern { send: Direction, recv: Direction, handshake_hash: [u8; 32] },
    Legacy { key: LegacyKey },
}

/// An established end-to-end session: seals outgoing frames, opens incoming ones.
///
/// Under `modern`, frames must be opened in the order they were sealed, each exactly once;
/// an endpoint that resends a frame resends the *same sealed bytes*, and the receiver
/// treats [`CryptoError::Replayed`] as "already have it, acknowledge again". Under
/// `legacy-2005` every authentic frame opens, in any order, any number of times.
pub struct Session {
    suite: Suite,
    role: Role,
    max_plaintext: usize,
    inner: Inner,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("suite", &self.suite).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Session {
    fn modern(role: Role, keys: modern::HandshakeKeys, max_plaintext: usize) -> Self {
        let (send_key, recv_key) = match role {
            Role::Initiator => (&keys.device_to_ves, &keys.ves_to_device),
            Role::Responder => (&keys.ves_to_device, &keys.device_to_ves),
        };
        let direction = |key: &[u8; 32]| Direction { cipher: modern::new_cipher(key), next: 0, finished: false };
        Session {
            suite: Suite::Modern,
            role,
            max_plaintext,
            inner: Inner::Modern {
                send: direction(send_key),
                recv: direction(recv_key),
                handshake_hash: keys.handshake_hash,
            },
        }
    }

    fn legacy(role: Role, key: LegacyKey, max_plaintext: usize) -> Self {
        Session { suite: Suite::Legacy2005, role, max_plaintext, inner: Inner::Legacy { key } }
    }

    /// The negotiated suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The modern handshake's transcript hash: equal on both ends, unique per session.
    /// Usable as a session id in logs or for channel binding. `None` under legacy-2005.
    pub fn handshake_hash(&self) -> Option<&[u8; 32]> {
        match &self.inner {
            Inner::Modern { handshake_hash, .. } => Some(handshake_hash),
            Inner::Legacy { .. } => None,
        }
    }

    /// Seals the next frame.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_inner(plaintext, false)
    }

    /// Seals the last frame of this direction: the peer then knows the stream was not cut
    /// short. Nothing can be sealed after it. Modern only.
    pub fn seal_final(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_inner(plaintext, true)
    }

    fn seal_inner(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        match &mut self.inner {
            Inner::Modern { send, .. } => {
                if send.finished {
                    return Err(CryptoError::StreamFinished);
                }
                let counter = send.next;
                let next = counter.checked_add(1).ok_or(CryptoError::CounterExhausted)?;
                let frame = modern::seal_with(&send.cipher, counter, last, plaintext)?;
                send.next = next;
                send.finished = last;
                Ok(frame)
            }
            Inner::Legacy { key } => {
                if last {
                    return Err(CryptoError::Unsupported { suite: Suite::Legacy2005, what: "a final frame" });
                }
                key.seal(plaintext)
            }
        }
    }

    /// Opens the next frame from the peer. Under `modern`, a frame that is not exactly the
    /// next one fails with [`CryptoError::Replayed`] or [`CryptoError::OutOfOrder`]
    /// before any decryption, and a failed frame leaves the session unchanged.
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &mut self.inner {
            Inner::Modern { recv, .. } => {
                let (counter, _) = modern::frame_header(frame)?;
                if recv.finished {
                    return Err(CryptoError::StreamFinished);
                }
                if counter < recv.next {
                    return Err(CryptoError::Replayed { counter });
                }
                if counter > recv.next {
                    return Err(CryptoError::OutOfOrder { expected: recv.next, got: counter });
                }
                let plaintext_len = frame.len() - modern::HEADER_LEN - modern::TAG_LEN;
                if plaintext_len > self.max_plaintext {
                    return Err(CryptoError::PlaintextTooLarge { max: self.max_plaintext });
                }
                let opened = modern::open_with(&recv.cipher, frame)?;
                // counter < u64::MAX here: a sender cannot seal with u64::MAX (see seal_inner).
                recv.next = counter.saturating_add(1);
                recv.finished = opened.last;
                Ok(opened.plaintext)
            }
            Inner::Legacy { key } => key.open(frame, self.max_plaintext),
        }
    }

    /// Whether the peer's final frame was opened: its stream is complete.
    pub fn peer_finished(&self) -> bool {
        match &self.inner {
            Inner::Modern { recv, .. } => recv.finished,
            Inner::Legacy { .. } => false,
        }
    }
}
