//! The end-to-end link between a device and its VES: key agreement, sealing, resending and
//! acknowledgement, independent of how frames travel (docs/endpoints.md §2, §4–§8).
//!
//! A [`Link`] is a state machine without I/O of its own, so the device (one link over its
//! TLS connection) and the agent (one link per device, over RTS) run exactly the same logic.
//! The transport feeds it what arrived — [`Link::on_forward`], [`Link::on_ack`],
//! [`Link::on_undeliverable`] — and calls [`Link::pump`] regularly; every call appends to
//! an [`Outputs`]: FORWARD frames to send, relay ACKs to send, and [`LinkEvent`]s to report.
//! Durable state (what to send, what was received) lives in the [`Store`]; the link keeps
//! only what dies with a session: the session keys, the frames in flight and their sealed
//! bytes.
//!
//! Rules the code enforces, and why:
//!
//! * **A resend reuses the sealed bytes.** Under `modern` the receiver accepts exactly the
//!   next counter, so a frame sealed again would be a different frame. Frames in flight are
//!   resent as they are, in order, until the relay acknowledges them or the session ends.
//! * **Nothing sealed is ever abandoned inside a session.** Dropping a sealed frame would
//!   leave a hole the receiver waits for forever. A session that cannot make progress is
//!   ended, and everything not yet confirmed is sealed again under the next session.
//! * **A frame is acknowledged only once its content is on disk.** If storing fails after
//!   the frame was opened (its counter consumed), the session is ended instead: an ack
//!   would lose the item, a resend would be refused as a replay.
//! * **Items leave the outbox only on a sealed item acknowledgement**, never on the relay's
//!   unauthenticated ACK, so a relay that forges ACKs cannot make an endpoint forget an
//!   item it never delivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use noc_crypto::{CryptoError, Initiator, InitiatorConfig, Responder, Session, Suite};
use noc_protocol::UndeliverableReason;
use noc_protocol::device::ForwardKind;

use crate::backoff::Backoff;
use crate::error::EndpointError;
use crate::item::{Item, ItemId, MAX_ACKS_PER_RECORD, PART_OVERHEAD, Record, part_chunk, part_count};
use crate::store::{PartOutcome, Store};

/// The peer name the device uses in its store: it has exactly one peer.
pub const VES_PEER: &str = "ves";
/// Smallest record size a link accepts (the relay's smallest frame limit is 1024 bytes).
pub const MIN_RECORD_BYTES: usize = 512;
/// Parts of incomplete items older than this are discarded.
const FRAGMENT_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

/// Tunables of a link. Defaults follow docs/endpoints.md §8.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Data frames sealed but not yet acknowledged by the relay, at most.
    pub window_frames: usize,
    /// Largest record (plaintext of one `Data` frame); parts are this minus 26 bytes.
    pub record_bytes: usize,
    /// Resend frames in flight when the oldest has had no ACK for this long.
    pub resend_after: Duration,
    /// Resend rounds without any ACK before the session is declared broken.
    pub max_resends: u32,
    /// Device: a WakeUp with no WakeUpAck after this long is abandoned for a new one.
    pub handshake_timeout: Duration,
    /// First retry delay after an undeliverable notice or a failed handshake.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// VES: least time between two rekey requests to one device.
    pub rekey_interval: Duration,
    /// Largest item accepted from the peer.
    pub max_item_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            window_frames: 32,
            record_bytes: 32 * 1024,
            resend_after: Duration::from_secs(30),
            max_resends: 5,
            handshake_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            rekey_interval: Duration::from_secs(10),
            max_item_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A FORWARD frame for the transport to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutFrame {
    pub kind: ForwardKind,
    pub frame_id: u64,
    pub payload: Bytes,
}

/// Why a received frame was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A `Data` frame arrived while no session exists (it belongs to an older one).
    NoSession,
    /// The tag or MAC does not verify: altered in transit, or sealed under another key.
    Tampered,
    /// Already received (a resend, or a replay): acknowledged again, not processed again.
    Replayed,
    /// Frames before it are missing: not acknowledged, so the sender resends in order.
    OutOfOrder,
    /// Authentic but not a valid record or item, or an unexpected frame kind.
    Malformed,
    /// A WakeUpAck that answers no WakeUp of ours.
    StaleHandshake,
}

/// What happened, for the endpoint to log, count or show.
#[derive(Clone, Debug)]
pub enum LinkEvent {
    /// A new session: fresh keys.
    SessionEstablished { suite: Suite },
    /// The session ended; unconfirmed items will be sealed again in the next one.
    SessionEnded { reason: String },
    /// The key agreement failed. Under `modern` this is tampering (or a stale answer):
    /// a security alert. Nothing is exchanged without a session.
    KeyAgreementFailed { error: String },
    /// An item was received completely and stored. `replaced`: earlier versions of the
    /// same calendar entry or contact that it replaced (an application removes them from
    /// view); `current` is false for a version older than one already stored.
    ItemReceived { row: i64, id: ItemId, item: Item, replaced: Vec<ItemId>, current: bool },
    /// The peer confirmed an item; it left the outbox.
    ItemDelivered { id: ItemId },
    /// Items left the outbox unconfirmed (TTL).
    ItemsExpired { ids: Vec<ItemId> },
    /// A frame was refused.
    FrameRejected { rejection: Rejection, frame_id: u64, detail: String },
    /// The VES asked for a new key agreement (it has no session for this device).
    RekeyRequested,
    /// The local store failed; the session was ended so that nothing is lost.
    StoreFailed { error: String },
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Outputs {
    /// FORWARD frames to send, in this order.
    pub frames: Vec<OutFrame>,
    /// Relay-level ACKs to send (frame ids of the peer).
    pub acks: Vec<u64>,
    pub events: Vec<LinkEvent>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.acks.is_empty() && self.events.is_empty()
    }
}

struct Pending {
    initiator: Initiator,
    frame_id: u64,
    payload: Bytes,
    started: Instant,
    /// False after an undeliverable notice: send the same WakeUp again when due.
    in_transit: bool,
}

enum Side {
    Device {
        config: InitiatorConfig,
        connected: bool,
        pending: Option<Box<Pending>>,
        /// When to start the next handshake (after a failure, with backoff).
        next_attempt: Option<Instant>,
        handshake_retry: Backoff,
    },
    Ves {
        responder: Arc<Responder>,
        online: bool,
        last_rekey: Option<Instant>,
        rekey_wanted: bool,
    },
}

struct InFlight {
    frame_id: u64,
    payload: Bytes,
    sent_at: Instant,
}

struct Splitting {
    seq: i64,
    id: ItemId,
    encoded: Vec<u8>,
    next: u32,
    count: u32,
    chunk: usize,
}

/// One end of an end-to-end link (see the module documentation).
pub struct Link {
    peer: String,
    side: Side,
    cfg: LinkConfig,
    session: Option<Session>,
    in_flight: VecDeque<InFlight>,
    /// Outbox items with `seq <= cursor` are sealed in this session.
    cursor: i64,
    splitting: Option<Splitting>,
    /// Items received completely whose sealed acknowledgement is still to be sent.
    item_acks: Vec<ItemId>,
    blocked_until: Option<Instant>,
    resend_now: bool,
    resends: u32,
    retry: Backoff,
    next_frame_id: u64,
    last_sweep: Option<Instant>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("suite", &self.session.as_ref().map(|s| s.suite()))
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// Frame ids start at the current time in microseconds, so that a restarted endpoint does
/// not reuse ids the peer may still hold (docs/protocol.md §6.4.1).
fn initial_frame_id() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1).max(1)
}

impl Link {
    /// The device's link to its VES. `config` carries the pinned VES fingerprint and the
    /// suites to offer.
    pub fn device(config: InitiatorConfig, cfg: LinkConfig) -> Self {
        let handshake_retry = Backoff::new(cfg.retry_initial, cfg.retry_max);
        Self::new(
            VES_PEER.to_owned(),
            Side::Device { config, connected: false, pending: None, next_attempt: None, handshake_retry },
            cfg,
        )
    }

    /// The agent's link to one device (`peer` = the device id).
    pub fn ves(peer: String, responder: Arc<Responder>, cfg: LinkConfig) -> Self {
        Self::new(peer, Side::Ves { responder, online: false, last_rekey: None, rekey_wanted: false }, cfg)
    }

    fn new(peer: String, side: Side, mut cfg: LinkConfig) -> Self {
        cfg.record_bytes = cfg.record_bytes.max(MIN_RECORD_BYTES);
        cfg.window_frames = cfg.window_frames.max(1);
        let retry = Backoff::new(cfg.retry_initial, cfg.retry_max);
        Link {
            peer,
            side,
            cfg,
            session: None,
            in_flight: VecDeque::new(),
            cursor: 0,
            splitting: None,
            item_acks: Vec::new(),
            blocked_until: None,
            resend_now: false,
            resends: 0,
            retry,
            next_frame_id: initial_frame_id(),
            last_sweep: None,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The suite of the current session, if any.
    pub fn suite(&self) -> Option<Suite> {
        self.session.as_ref().map(|s| s.suite())
    }

    /// Frames sealed and not yet acknowledged by the relay.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The record size in use (may shrink after `frame_too_large`).
    pub fn record_bytes(&self) -> usize {
        self.cfg.record_bytes
    }

    /// Caps the record size (the device learns the relay's frame limit from AUTH_OK).
    pub fn set_max_record_bytes(&mut self, max: usize) {
        self.cfg.record_bytes = self.cfg.record_bytes.min(max).max(MIN_RECORD_BYTES);
    }

    fn frame_id(&mut self) -> u64 {
        let id = self.next_frame_id;
        self.next_frame_id = self.next_frame_id.wrapping_add(1).max(1);
        id
    }

    // ---- connection state ---------------------------------------------------------------

    /// Device: the connection to the relay is authenticated; start a session at once.
    pub fn on_connected(&mut self, now: Instant, out: &mut Outputs) {
        if let Side::Device { connected, pending, next_attempt, .. } = &mut self.side {
            *connected = true;
            *pending = None;
            *next_attempt = Some(now);
        }
        self.drop_session();
        self.pump_handshake(now, out);
    }

    /// Device: the connection is gone. Every (re)connection starts a new session.
    pub fn on_disconnected(&mut self) {
        if let Side::Device { connected, pending, .. } = &mut self.side {
            *connected = false;
            *pending = None;
        }
        self.drop_session();
    }

    /// Agent: the device's presence changed. Going offline ends the session: the device
    /// starts a new one (WakeUp) on its next connection.
    pub fn set_online(&mut self, is_online: bool, out: &mut Outputs) {
        if let Side::Ves { online, .. } = &mut self.side {
            *online = is_online;
        }
        if !is_online && self.session.is_some() {
            self.end_session("the device went offline", Instant::now(), out);
        }
    }

    fn drop_session(&mut self) {
        self.session = None;
        self.in_flight.clear();
        self.splitting = None;
        self.cursor = 0;
        self.resends = 0;
        self.resend_now = false;
        self.blocked_until = None;
    }

    fn install(&mut self, session: Session, out: &mut Outputs) {
        let suite = session.suite();
        self.drop_session();
        self.session = Some(session);
        self.retry.reset();
        out.events.push(LinkEvent::SessionEstablished { suite });
    }

    /// Ends the session because it cannot go on; what it did not confirm is sealed again
    /// in the next session.
    fn end_session(&mut self, reason: &str, now: Instant, out: &mut Outputs) {
        let had = self.session.is_some();
        self.drop_session();
        match &mut self.side {
            Side::Device { pending, next_attempt, handshake_retry, connected, .. } => {
                *pending = None;
                if *connected {
                    *next_attempt = Some(now + handshake_retry.next_delay().min(Duration::from_secs(1)));
                }
            }
            Side::Ves { rekey_wanted, .. } => *rekey_wanted = true,
        }
        if had {
            out.events.push(LinkEvent::SessionEnded { reason: reason.to_owned() });
        }
    }

    // ---- input --------------------------------------------------------------------------

    /// A FORWARD from the peer.
    pub fn on_forward(
        &mut self,
        kind: ForwardKind,
        frame_id: u64,
        payload: &[u8],
        now: Instant,
        store: &Store,
        out: &mut Outputs,
    ) {
        match kind {
            ForwardKind::Data => self.on_data(frame_id, payload, now, store, out),
            ForwardKind::WakeUp => {
                out.acks.push(frame_id);
                let accepted = match &self.side {
                    Side::Ves { responder, .. } => Some(responder.accept(payload)),
                    Side::Device { .. } => None,
                };
                match accepted {
                    Some(Ok((ack, session))) => {
                        self.install(session, out);
                        let id = self.frame_id();
                        out.frames.push(OutFrame { kind: ForwardKind::WakeUpAck, frame_id: id, payload: ack.into() });
                    }
                    Some(Err(e)) => out.events.push(LinkEvent::KeyAgreementFailed { error: e.to_string() }),
                    None => reject(out, Rejection::Malformed, frame_id, "a WakeUp sent to a device"),
                }
            }
            ForwardKind::WakeUpAck => {
                out.acks.push(frame_id);
                let Side::Device { pending, next_attempt, handshake_retry, .. } = &mut self.side else {
                    reject(out, Rejection::Malformed, frame_id, "a WakeUpAck sent to a VES");
                    return;
                };
                let Some(p) = pending.take() else {
                    reject(out, Rejection::StaleHandshake, frame_id, "no key agreement is under way");
                    return;
                };
                match p.initiator.finish(payload) {
                    Ok(session) => {
                        handshake_retry.reset();
                        self.install(session, out);
                        self.pump(now, store, out);
                    }
                    Err(e) => {
                        *next_attempt = Some(now + handshake_retry.next_delay());
                        out.events.push(LinkEvent::KeyAgreementFailed { error: e.to_string() });
                    }
                }
            }
            ForwardKind::KeyExchange => {
                out.acks.push(frame_id);
                let Side::Device { pending, connected, .. } = &self.side else {
                    reject(out, Rejection::Malformed, frame_id, "a KeyExchange sent to a VES");
                    return;
                };
                if !payload.is_empty() {
                    reject(out, Rejection::Malformed, frame_id, "a KeyExchange with a payload");
                    return;
                }
                out.events.push(LinkEvent::RekeyRequested);
                // While a WakeUp is under way the request is already being answered.
                if pending.is_none() && *connected {
                    self.end_session("the VES asked for a new key agreement", now, out);
                    if let Side::Device { next_attempt, .. } = &mut self.side {
                        *next_attempt = Some(now);
                    }
                    self.pump_handshake(now, out);
                }
            }
        }
    }

    fn on_data(&mut self, frame_id: u64, payload: &[u8], now: Instant, store: &Store, out: &mut Outputs) {
        let Some(session) = self.session.as_mut() else {
            reject(out, Rejection::NoSession, frame_id, "no session: the frame belongs to an older one");
            if let Side::Ves { rekey_wanted, .. } = &mut self.side {
                *rekey_wanted = true;
            }
            return;
        };
        let plaintext = match session.open(payload) {
            Ok(p) => p,
            Err(CryptoError::Replayed { counter }) => {
                // Already processed: the ACK was lost, or someone replays it. Ack again.
                out.acks.push(frame_id);
                reject(out, Rejection::Replayed, frame_id, &format!("counter {counter} was already received"));
                return;
            }
            Err(e @ CryptoError::OutOfOrder { .. }) => {
                reject(out, Rejection::OutOfOrder, frame_id, &e.to_string());
                return;
            }
            Err(CryptoError::AuthenticationFailed) => {
                reject(out, Rejection::Tampered, frame_id, "the tag or MAC does not verify");
                return;
            }
            Err(e) => {
                reject(out, Rejection::Malformed, frame_id, &e.to_string());
                return;
            }
        };
        let now_ms = noc_protocol::clock::unix_ms_i64();
        match Record::decode(&plaintext) {
            Ok(Record::Part { id, index, count, chunk }) => {
                match store.add_part(&self.peer, id, index, count, &chunk, self.cfg.max_item_bytes, now_ms) {
                    Ok(PartOutcome::Incomplete) => out.acks.push(frame_id),
                    Ok(PartOutcome::Stored { row, item, replaced, current }) => {
                        out.acks.push(frame_id);
                        self.queue_item_ack(id);
                        out.events.push(LinkEvent::ItemReceived { row, id, item, replaced, current });
                    }
                    Ok(PartOutcome::Duplicate) => {
                        out.acks.push(frame_id);
                        self.queue_item_ack(id);
                    }
                    Err(EndpointError::Codec { what, reason }) => {
                        out.acks.push(frame_id);
                        reject(out, Rejection::Malformed, frame_id, &format!("{what}: {reason}"));
                    }
                    Err(e) => self.store_failed(e, now, out),
                }
            }
            Ok(Record::ItemAcks(ids)) => {
                let mut failed = None;
                for id in ids {
                    match store.remove_outgoing(&self.peer, id) {
                        Ok(true) => out.events.push(LinkEvent::ItemDelivered { id }),
                        Ok(false) => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    None => out.acks.push(frame_id),
                    Some(e) => self.store_failed(e, now, out),
                }
            }
            Err(e) => {
                out.acks.push(frame_id);
                reject(out, Rejection::Malformed, frame_id, &e.to_string());
            }
        }
    }

    fn store_failed(&mut self, e: EndpointError, now: Instant, out: &mut Outputs) {
        out.events.push(LinkEvent::StoreFailed { error: e.to_string() });
        self.end_session("the local store failed", now, out);
    }

    fn queue_item_ack(&mut self, id: ItemId) {
        if !self.item_acks.contains(&id) {
            self.item_acks.push(id);
        }
    }

    /// The relay's ACK of one of our frames.
    pub fn on_ack(&mut self, frame_id: u64) {
        if let Some(pos) = self.in_flight.iter().position(|f| f.frame_id == frame_id) {
            self.in_flight.remove(pos);
            self.resends = 0;
            self.retry.reset();
        }
    }

    /// The relay will not deliver one of our frames.
    pub fn on_undeliverable(&mut self, frame_id: u64, reason: UndeliverableReason, now: Instant, out: &mut Outputs) {
        if let Side::Device { pending: Some(p), .. } = &mut self.side
            && p.frame_id == frame_id
        {
            // The VES did not get our WakeUp: send the same one again later.
            p.in_transit = false;
            self.blocked_until = Some(now + self.retry.next_delay());
            return;
        }
        if !self.in_flight.iter().any(|f| f.frame_id == frame_id) {
            return; // a frame of an older session, a WakeUpAck or a rekey request
        }
        match (&mut self.side, reason) {
            (Side::Ves { .. }, UndeliverableReason::QueueFull) | (Side::Device { .. }, _) => {
                self.blocked_until = Some(now + self.retry.next_delay());
                self.resend_now = true;
            }
            (Side::Ves { .. }, UndeliverableReason::FrameTooLarge) => {
                self.cfg.record_bytes = (self.cfg.record_bytes / 2).max(MIN_RECORD_BYTES);
                self.end_session("the relay refused a frame as too large", now, out);
            }
            (Side::Ves { online, .. }, _) => {
                *online = false;
                self.end_session(&format!("the relay cannot reach the device ({reason})"), now, out);
            }
        }
    }

    // ---- output -------------------------------------------------------------------------

    fn pump_handshake(&mut self, now: Instant, out: &mut Outputs) {
        let blocked = self.blocked_until.is_some_and(|t| t > now);
        let timeout = self.cfg.handshake_timeout;
        let mut new_id = None;
        if let Side::Device { connected: true, pending, next_attempt, config, .. } = &mut self.side {
            if self.session.is_some() {
                return;
            }
            if let Some(p) = pending {
                if now.saturating_duration_since(p.started) >= timeout {
                    *pending = None;
                    *next_attempt = Some(now);
                } else {
                    if !p.in_transit && !blocked {
                        p.in_transit = true;
                        out.frames.push(OutFrame {
                            kind: ForwardKind::WakeUp,
                            frame_id: p.frame_id,
                            payload: p.payload.clone(),
                        });
                    }
                    return;
                }
            }
            if next_attempt.is_some_and(|t| t <= now) {
                match Initiator::start(config.clone()) {
                    Ok((initiator, wakeup)) => {
                        *next_attempt = None;
                        let payload = Bytes::from(wakeup);
                        new_id = Some((initiator, payload));
                    }
                    Err(e) => {
                        *next_attempt = Some(now + timeout);
                        out.events.push(LinkEvent::KeyAgreementFailed { error: e.to_string() });
                    }
                }
            }
        }
        if let Some((initiator, payload)) = new_id {
            let frame_id = self.frame_id();
            if let Side::Device { pending, .. } = &mut self.side {
                *pending = Some(Box::new(Pending {
                    initiator,
                    frame_id,
                    payload: payload.clone(),
                    started: now,
                    in_transit: true,
                }));
            }
            out.frames.push(OutFrame { kind: ForwardKind::WakeUp, frame_id, payload });
        }
    }

    /// Seals and emits what can be sent now: the handshake, resends that are due, item
    /// acknowledgements, then parts of queued items within the window.
    pub fn pump(&mut self, now: Instant, store: &Store, out: &mut Outputs) {
        self.sweep(now, store, out);
        self.pump_handshake(now, out);
        if self.session.is_none() {
            self.maybe_rekey(now, store, out);
            return;
        }
        if self.blocked_until.is_some_and(|t| t > now) {
            return;
        }
        self.blocked_until = None;
        if let Some(front) = self.in_flight.front() {
            let due = self.resend_now || now.saturating_duration_since(front.sent_at) >= self.cfg.resend_after;
            if due {
                if !self.resend_now {
                    self.resends += 1;
                }
                if self.resends > self.cfg.max_resends {
                    let reason = format!("no acknowledgement after {} resends", self.cfg.max_resends);
                    self.end_session(&reason, now, out);
                    return;
                }
                self.resend_now = false;
                for f in self.in_flight.iter_mut() {
                    f.sent_at = now;
                    out.frames.push(OutFrame {
                        kind: ForwardKind::Data,
                        frame_id: f.frame_id,
                        payload: f.payload.clone(),
                    });
                }
            }
        }
        self.resend_now = false;
        while !self.item_acks.is_empty() && self.in_flight.len() < self.cfg.window_frames {
            let n = self.item_acks.len().min(MAX_ACKS_PER_RECORD).min((self.cfg.record_bytes - 4) / 16);
            let ids: Vec<ItemId> = self.item_acks.drain(..n).collect();
            if !self.seal_and_send(&Record::ItemAcks(ids), now, out) {
                return;
            }
        }
        while self.in_flight.len() < self.cfg.window_frames {
            if self.splitting.is_none() {
                match store.next_outgoing(&self.peer, self.cursor, noc_protocol::clock::unix_ms_i64()) {
                    Ok(Some(o)) => {
                        let chunk = self.cfg.record_bytes - PART_OVERHEAD;
                        let count = part_count(o.encoded.len(), chunk);
                        self.splitting =
                            Some(Splitting { seq: o.seq, id: o.id, encoded: o.encoded, next: 0, count, chunk });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.events.push(LinkEvent::StoreFailed { error: e.to_string() });
                        break;
                    }
                }
            }
            let Some(s) = self.splitting.as_mut() else { break };
            let record = Record::Part {
                id: s.id,
                index: s.next,
                count: s.count,
                chunk: part_chunk(&s.encoded, s.next, s.chunk).to_vec(),
            };
            s.next += 1;
            if s.next >= s.count {
                self.cursor = s.seq;
                self.splitting = None;
            }
            if !self.seal_and_send(&record, now, out) {
                return;
            }
        }
    }

    fn seal_and_send(&mut self, record: &Record, now: Instant, out: &mut Outputs) -> bool {
        let Some(session) = self.session.as_mut() else { return false };
        match session.seal(&record.encode()) {
            Ok(sealed) => {
                let frame_id = self.frame_id();
                let payload = Bytes::from(sealed);
                self.in_flight.push_back(InFlight { frame_id, payload: payload.clone(), sent_at: now });
                out.frames.push(OutFrame { kind: ForwardKind::Data, frame_id, payload });
                true
            }
            Err(e) => {
                self.end_session(&format!("sealing failed: {e}"), now, out);
                false
            }
        }
    }

    fn maybe_rekey(&mut self, now: Instant, store: &Store, out: &mut Outputs) {
        let interval = self.cfg.rekey_interval;
        let Side::Ves { online: true, last_rekey, rekey_wanted, .. } = &mut self.side else { return };
        if last_rekey.is_some_and(|t| now.saturating_duration_since(t) < interval) {
            return;
        }
        let has_work = *rekey_wanted || store.outbox_len(&self.peer).map(|n| n > 0).unwrap_or(false);
        if !has_work {
            return;
        }
        *last_rekey = Some(now);
        *rekey_wanted = false;
        let frame_id = self.frame_id();
        out.frames.push(OutFrame { kind: ForwardKind::KeyExchange, frame_id, payload: Bytes::new() });
    }

    fn sweep(&mut self, now: Instant, store: &Store, out: &mut Outputs) {
        if self.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.last_sweep = Some(now);
        let now_ms = noc_protocol::clock::unix_ms_i64();
        match store.expire(Some(&self.peer), now_ms) {
            Ok(expired) if !expired.is_empty() => {
                out.events.push(LinkEvent::ItemsExpired { ids: expired.into_iter().map(|(_, id)| id).collect() })
            }
            Ok(_) => {}
            Err(e) => out.events.push(LinkEvent::StoreFailed { error: e.to_string() }),
        }
        if let Err(e) = store.prune_fragments(&self.peer, now_ms - FRAGMENT_MAX_AGE_MS) {
            out.events.push(LinkEvent::StoreFailed { error: e.to_string() });
        }
    }
}

fn reject(out: &mut Outputs, rejection: Rejection, frame_id: u64, detail: &str) {
    out.events.push(LinkEvent::FrameRejected { rejection, frame_id, detail: detail.to_owned() });
}

#[cfg(test)]
mod tests;
