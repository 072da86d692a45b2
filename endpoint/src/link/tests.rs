//! The link state machine against itself, through an in-memory "relay" that can drop,
//! alter, duplicate and replay frames. Time is an explicit `Instant`, so resend timers run
//! without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use noc_crypto::{InitiatorConfig, Responder, ResponderConfig, StaticKeyPair};

use super::*;
use crate::item::ItemType;
use crate::store::{FullPolicy, QueueLimits};

const LIMITS: QueueLimits = QueueLimits { max_items: 100, ttl_ms: 3_600_000, policy: FullPolicy::DropOldest };

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dir {
    ToDevice,
    ToVes,
}

enum Act {
    Pass,
    Drop,
    Tamper,
    Twice,
}

struct Net {
    dev: Link,
    ves: Link,
    dev_store: Store,
    ves_store: Store,
    now: Instant,
    to_dev: VecDeque<OutFrame>,
    to_ves: VecDeque<OutFrame>,
    acks_to_dev: Vec<u64>,
    acks_to_ves: Vec<u64>,
    dev_events: Vec<LinkEvent>,
    ves_events: Vec<LinkEvent>,
    /// Every Data payload that crossed, for replays.
    seen: Vec<(Dir, OutFrame)>,
}

fn cfg() -> LinkConfig {
    LinkConfig {
        window_frames: 4,
        record_bytes: 600,
        resend_after: Duration::from_secs(2),
        max_resends: 3,
        handshake_timeout: Duration::from_secs(5),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        rekey_interval: Duration::from_secs(1),
        max_item_bytes: 1 << 20,
    }
}

impl Net {
    fn new() -> Self {
        Self::with_key(StaticKeyPair::generate().expect("key"), None)
    }

    fn with_key(ves_key: StaticKeyPair, pinned: Option<noc_crypto::Fingerprint>) -> Self {
        let fp = pinned.unwrap_or_else(|| ves_key.fingerprint());
        let responder = Arc::new(Responder::new(ves_key, ResponderConfig::default()).expect("responder"));
        Net {
            dev: Link::device(InitiatorConfig::new(fp), cfg()),
            ves: Link::ves("dev-1".into(), responder, cfg()),
            dev_store: Store::in_memory("").expect("store"),
            ves_store: Store::in_memory("").expect("store"),
            now: Instant::now(),
            to_dev: VecDeque::new(),
            to_ves: VecDeque::new(),
            acks_to_dev: Vec::new(),
            acks_to_ves: Vec::new(),
            dev_events: Vec::new(),
            ves_events: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn absorb(&mut self, from: Dir, out: Outputs) {
        for f in out.frames {
            match from {
                Dir::ToVes => self.to_ves.push_back(f),
                Dir::ToDevice => self.to_dev.push_back(f),
            }
        }
        match from {
            Dir::ToVes => {
                self.acks_to_ves.extend(out.acks);
                self.dev_events.extend(out.events);
            }
            Dir::ToDevice => {
                self.acks_to_dev.extend(out.acks);
                self.ves_events.extend(out.events);
            }
        }
    }

    fn connect(&mut self) {
        let mut out = Outputs::default();
        self.ves.set_online(true, &mut out);
        self.absorb(Dir::ToDevice, out);
        let mut out = Outputs::default();
        self.dev.on_connected(self.now, &mut out);
        self.absorb(Dir::ToVes, out);
    }

    fn pump(&mut self) {
        let mut out = Outputs::default();
        self.dev.pump(self.now, &self.dev_store, &mut out);
        self.absorb(Dir::ToVes, out);
        let mut out = Outputs::default();
        self.ves.pump(self.now, &self.ves_store, &mut out);
        self.absorb(Dir::ToDevice, out);
    }

    /// Moves everything queued, through `filter`, until nothing moves.
    fn run(&mut self, mut filter: impl FnMut(Dir, &OutFrame) -> Act) {
        for _ in 0..1000 {
            self.pump();
            let mut moved = false;
            while let Some(f) = self.to_ves.pop_front() {
                moved = true;
                self.deliver(Dir::ToVes, f, &mut filter);
            }
            while let Some(f) = self.to_dev.pop_front() {
                moved = true;
                self.deliver(Dir::ToDevice, f, &mut filter);
            }
            for id in std::mem::take(&mut self.acks_to_ves) {
                moved = true;
                self.ves.on_ack(id);
            }
            for id in std::mem::take(&mut self.acks_to_dev) {
                moved = true;
                self.dev.on_ack(id);
            }
            if !moved {
                return;
            }
        }
        panic!("the links never settled");
    }

    fn deliver(&mut self, dir: Dir, f: OutFrame, filter: &mut impl FnMut(Dir, &OutFrame) -> Act) {
        let copies = match filter(dir, &f) {
            Act::Drop => return,
            Act::Pass => vec![f.payload.to_vec()],
            Act::Twice => vec![f.payload.to_vec(), f.payload.to_vec()],
            Act::Tamper => {
                let mut p = f.payload.to_vec();
                if let Some(last) = p.last_mut() {
                    *last ^= 0x01;
                }
                vec![p]
            }
        };
        if f.kind == ForwardKind::Data {
            self.seen.push((dir, f.clone()));
        }
        for payload in copies {
            let mut out = Outputs::default();
            match dir {
                Dir::ToVes => {
                    self.ves.on_forward(f.kind, f.frame_id, &payload, self.now, &self.ves_store, &mut out);
                    self.absorb(Dir::ToDevice, out);
                }
                Dir::ToDevice => {
                    self.dev.on_forward(f.kind, f.frame_id, &payload, self.now, &self.dev_store, &mut out);
                    self.absorb(Dir::ToVes, out);
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn queue_for_device(&self, body: &[u8]) -> ItemId {
        let item = Item::new(ItemType::Mail, None, body.to_vec());
        let id = ItemId::random();
        self.ves_store
            .enqueue("dev-1", id, "mail", &item.encode().expect("enc"), LIMITS, noc_protocol::clock::unix_ms_i64())
            .expect("q");
        id
    }

    fn inbox(&self) -> Vec<Vec<u8>> {
        self.dev_store.received(None, None).expect("inbox").into_iter().map(|r| r.body).collect()
    }

    fn count_dev(&self, pred: impl Fn(&LinkEvent) -> bool) -> usize {
        self.dev_events.iter().filter(|e| pred(e)).count()
    }
}

fn pass(_: Dir, _: &OutFrame) -> Act {
    Act::Pass
}

#[test]
fn items_flow_both_ways_and_leave_the_outboxes_on_item_acks() {
    let mut net = Net::new();
    net.connect();
    net.run(pass);
    assert_eq!(net.dev.suite(), Some(Suite::Modern));
    assert_eq!(net.ves.suite(), Some(Suite::Modern));

    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    net.queue_for_device(b"first");
    net.queue_for_device(&big);
    net.queue_for_device(b"third");
    let out = Item::new(ItemType::OutgoingMail, None, b"To: x@y\r\n\r\nhello".to_vec());
    net.dev_store
        .enqueue(
            VES_PEER,
            ItemId::random(),
            "outgoing-mail",
            &out.encode().expect("enc"),
            LIMITS,
            noc_protocol::clock::unix_ms_i64(),
        )
        .expect("queue");
    net.run(pass);

    assert_eq!(net.inbox(), vec![b"first".to_vec(), big, b"third".to_vec()], "in order, once, intact");
    assert_eq!(net.ves_store.received(None, None).expect("ves").len(), 1);
    assert_eq!(net.ves_store.outbox_len("dev-1").expect("len"), 0, "item acks emptied the VES outbox");
    assert_eq!(net.dev_store.outbox_len(VES_PEER).expect("len"), 0);
    assert_eq!(net.ves.in_flight() + net.dev.in_flight(), 0);
}

#[test]
fn a_lost_frame_is_resent_with_the_same_bytes_and_order_is_kept() {
    let mut net = Net::new();
    net.connect();
    net.run(pass);
    for i in 0..3 {
        net.queue_for_device(format!("m{i}").as_bytes());
    }
    let mut dropped = false;
    net.run(|dir, f| {
        if dir == Dir::ToDevice && f.kind == ForwardKind::Data && !dropped {
            dropped = true;
            return Act::Drop;
        }
        Act::Pass
    });
    assert!(net.inbox().is_empty(), "later frames are out of order and wait");
    assert!(net.count_dev(|e| matches!(e, LinkEvent::FrameRejected { rejection: Rejection::OutOfOrder, .. })) >= 1);
    net.advance(Duration::from_secs(3));
    net.run(pass);
    assert_eq!(net.inbox(), vec![b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]);
    let resent: Vec<&OutFrame> = net.seen.iter().filter(|(d, _)| *d == Dir::ToDevice).map(|(_, f)| f).collect();
    let first = resent[0];
    assert!(resent[1..].iter().any(|f| f.frame_id == first.frame_id && f.payload == first.payload), "same bytes");
}

#[test]
fn tampered_and_replayed_frames_are_rejected_and_items_arrive_once() {
    let mut net = Net::new();
    net.connect();
    net.run(pass);
    net.queue_for_device(b"secret");
    let mut tampered = false;
    net.run(|dir, f| {
        if dir == Dir::ToDevice && f.kind == ForwardKind::Data && !tampered {
            tampered = true;
            return Act::Tamper;
        }
        if dir == Dir::ToDevice && f.kind == ForwardKind::Data {
            return Act::Twice;
        }
        Act::Pass
    });
    assert_eq!(net.count_dev(|e| matches!(e, LinkEvent::FrameRejected { rejection: Rejection::Tampered, .. })), 1);
    assert!(net.inbox().is_empty());
    net.advance(Duration::from_secs(3));
    net.run(|dir, f| if dir == Dir::ToDevice && f.kind == ForwardKind::Data { Act::Twice } else { Act::Pass });
    assert_eq!(net.inbox(), vec![b"secret".to_vec()], "stored once");
    assert!(net.count_dev(|e| matches!(e, LinkEvent::FrameRejected { rejection: Rejection::Replayed, .. })) >= 1);

    // A replay of an old frame later is refused, not stored again.
    let (_, old) = net.seen.iter().find(|(d, _)| *d == Dir::ToDevice).cloned().expect("a frame");
    net.to_dev.push_back(old);
    net.run(pass);
    assert_eq!(net.inbox().len(), 1);
}

#[test]
fn a_forged_relay_ack_does_not_remove_an_item() {
    let mut net = Net::new();
    net.connect();
    net.run(pass);
    net.queue_for_device(b"keep me");
    // The "relay" drops the frame and acknowledges it itself.
    net.pump();
    let frames: Vec<OutFrame> = net.to_dev.drain(..).collect();
    for f in &frames {
        net.ves.on_ack(f.frame_id);
    }
    assert_eq!(net.ves_store.outbox_len("dev-1").expect("len"), 1, "still queued: no sealed item ack");
    // The next session seals it again and it arrives.
    let mut out = Outputs::default();
    net.dev.on_disconnected();
    net.ves.set_online(false, &mut out);
    net.connect();
    net.run(pass);
    assert_eq!(net.inbox(), vec![b"keep me".to_vec()]);
    assert_eq!(net.ves_store.outbox_len("dev-1").expect("len"), 0);
}

#[test]
fn reconnecting_reseals_unconfirmed_items_under_new_keys() {
    let mut net = Net::new();
    net.connect();
    net.run(pass);
    net.queue_for_device(b"one");
    net.queue_for_device(b"two");
    // Everything to the device is lost, then the device reconnects.
    net.run(|dir, f| if dir == Dir::ToDevice && f.kind == ForwardKind::Data { Act::Drop } else { Act::Pass });
    let first_session: Vec<Bytes> = net.seen.iter().map(|(_, f)| f.payload.clone()).collect();
    net.dev.on_disconnected();
    let mut out = Outputs::default();
    net.ves.set_online(false, &mut out);
    net.connect();
    net.run(pass);
    assert_eq!(net.inbox(), vec![b"one".to_vec(), b"two".to_vec()]);
    let second: Vec<&Bytes> = net
        .seen
        .iter()
        .skip(first_session.len())
        .filter(|(d, _)| *d == Dir::ToDevice)
        .map(|(_, f)| &f.payload)
        .collect();
    assert!(second.iter().all(|p| !first_session.contains(p)), "re-sealed, not replayed");
}

#[test]
fn a_key_agreement_tampered_by_the_relay_is_detected() {
    let mut net = Net::new();
    net.connect();
    net.queue_for_device(b"for the device only");
    net.run(|dir, f| if dir == Dir::ToDevice && f.kind == ForwardKind::WakeUpAck { Act::Tamper } else { Act::Pass });
    assert!(net.count_dev(|e| matches!(e, LinkEvent::KeyAgreementFailed { .. })) >= 1);
    assert_eq!(net.dev.suite(), None);
    assert!(net.inbox().is_empty());

    // A VES with another static key (a relay answering itself) fails the pin.
    let mut net = Net::with_key(
        StaticKeyPair::generate().expect("key"),
        Some(StaticKeyPair::generate().expect("k").fingerprint()),
    );
    net.connect();
    net.run(pass);
    let mismatch = net
        .dev_events
        .iter()
        .any(|e| matches!(e, LinkEvent::KeyAgreementFailed { error } if error.contains("fingerprint")));
    assert!(mismatch, "{:?}", net.dev_events);
    assert_eq!(net.dev.suite(), None);
}

#[test]
fn the_ves_asks_a_device_without_session_to_rekey() {
    let mut net = Net::new();
    net.connect();
    net.run(pass);
    // The agent restarts: its link forgets the session; the device still has one.
    let mut out = Outputs::default();
    net.ves.set_online(false, &mut out);
    net.ves.set_online(true, &mut out);
    net.queue_for_device(b"after restart");
    net.run(pass);
    assert!(net.count_dev(|e| matches!(e, LinkEvent::RekeyRequested)) >= 1);
    assert_eq!(net.inbox(), vec![b"after restart".to_vec()]);
}

#[test]
fn a_session_that_never_gets_acks_is_ended_and_items_stay_queued() {
    let mut net = Net::new();
    net.connect();
    net.run(pass);
    net.queue_for_device(b"x");
    for _ in 0..6 {
        net.run(|dir, f| if dir == Dir::ToDevice && f.kind == ForwardKind::Data { Act::Drop } else { Act::Pass });
        net.advance(Duration::from_secs(3));
    }
    assert!(net.ves_events.iter().any(|e| matches!(e, LinkEvent::SessionEnded { .. })));
    assert_eq!(net.ves_store.outbox_len("dev-1").expect("len"), 1);
    net.run(pass);
    net.advance(Duration::from_secs(2));
    net.run(pass);
    assert_eq!(net.inbox(), vec![b"x".to_vec()]);
}
