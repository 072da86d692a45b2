//! Sessions end to end, in memory: negotiation, both suites, and what a malicious relay
//! (which carries every byte of WakeUp, WakeUpAck and the frames) can and cannot do.

use noc_crypto::modern::{self, HEADER_LEN};
use noc_crypto::{
    CryptoError, Fingerprint, Initiator, InitiatorConfig, Responder, ResponderConfig, Role, Session, StaticKeyPair,
    Suite, WakeUp, WakeUpAck,
};

fn ves(suites: &[Suite]) -> (Responder, Fingerprint) {
    let key = StaticKeyPair::generate().expect("static key");
    let fingerprint = key.fingerprint();
    let config = ResponderConfig { suites: suites.to_vec(), ..ResponderConfig::default() };
    (Responder::new(key, config).expect("responder"), fingerprint)
}

fn device_config(pin: Fingerprint, suites: &[Suite]) -> InitiatorConfig {
    InitiatorConfig { suites: suites.to_vec(), ..InitiatorConfig::new(pin) }
}

/// A full WakeUp/WakeUpAck exchange: (device session, VES session).
fn establish(device_suites: &[Suite], ves_suites: &[Suite]) -> (Session, Session) {
    let (ves, pin) = ves(ves_suites);
    let (device, wakeup) = Initiator::start(device_config(pin, device_suites)).expect("start");
    let (ack, ves_session) = ves.accept(&wakeup).expect("accept");
    (device.finish(&ack).expect("finish"), ves_session)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).expect("rng");
    v
}

#[test]
fn modern_round_trip_both_directions() {
    let (mut device, mut ves) = establish(&[Suite::Modern], &[Suite::Modern]);
    assert_eq!(device.suite(), Suite::Modern);
    assert_eq!(device.role(), Role::Initiator);
    assert_eq!(ves.role(), Role::Responder);
    assert_eq!(device.handshake_hash(), ves.handshake_hash());
    for i in 0..50usize {
        let msg = random_bytes(i * 37);
        assert_eq!(device.open(&ves.seal(&msg).expect("seal")).expect("open"), msg);
        assert_eq!(ves.open(&device.seal(&msg).expect("seal")).expect("open"), msg);
    }
    // Empty and large payloads; no compression, so the frame is plaintext + 25 bytes.
    assert_eq!(device.open(&ves.seal(b"").expect("seal")).expect("open"), b"");
    let big = random_bytes(60_000);
    let frame = ves.seal(&big).expect("seal");
    assert_eq!(frame.len(), big.len() + 25);
    assert_eq!(device.open(&frame).expect("open"), big);
}

#[test]
fn modern_directions_use_different_keys() {
    // A frame reflected back to its sender does not open: one key per direction.
    let (mut device, mut ves) = establish(&[Suite::Modern], &[Suite::Modern]);
    let frame = device.seal(b"to the VES").expect("seal");
    assert!(matches!(device.open(&frame), Err(CryptoError::AuthenticationFailed)));
    assert_eq!(ves.open(&frame).expect("the VES opens it"), b"to the VES");
}

#[test]
fn modern_detects_every_flipped_bit() {
    let (mut device, mut ves) = establish(&[Suite::Modern], &[Suite::Modern]);
    let frame = ves.seal(b"a message that matters").expect("seal");
    for bit in 0..frame.len() * 8 {
        let mut tampered = frame.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let err = device.open(&tampered).expect_err("tampered frame opened");
        let in_counter = (1..HEADER_LEN).contains(&(bit / 8));
        match err {
            // Flags: unknown bit set, or the final flag flipped (then the tag fails).
            CryptoError::Malformed { .. } | CryptoError::AuthenticationFailed if bit / 8 == 0 => {}
            // Counter: no longer the expected one, refused before decryption.
            CryptoError::OutOfOrder { .. } if in_counter => {}
            // Ciphertext and tag.
            CryptoError::AuthenticationFailed if bit / 8 >= HEADER_LEN => {}
            other => panic!("bit {bit}: unexpected {other:?}"),
        }
    }
    // Nothing was consumed by the failures.
    assert_eq!(device.open(&frame).expect("genuine frame"), b"a message that matters");
}

#[test]
fn modern_rejects_a_frame_from_another_session() {
    // Wrong key: same VES, same device pin, but a new session has new keys.
    let (ves, pin) = ves(&[Suite::Modern]);
    let (d1, w1) = Initiator::start(device_config(pin, &[Suite::Modern])).expect("start");
    let (a1, mut v1) = ves.accept(&w1).expect("accept");
    let mut s1 = d1.finish(&a1).expect("finish");
    let (d2, w2) = Initiator::start(device_config(pin, &[Suite::Modern])).expect("start");
    let (a2, mut v2) = ves.accept(&w2).expect("accept");
    let mut s2 = d2.finish(&a2).expect("finish");

    assert_ne!(s1.handshake_hash(), s2.handshake_hash());
    let frame = v1.seal(b"session one").expect("seal");
    assert!(matches!(s2.open(&frame), Err(CryptoError::AuthenticationFailed)));
    assert_eq!(s1.open(&frame).expect("own session"), b"session one");
    let frame = v2.seal(b"session two").expect("seal");
    assert_eq!(s2.open(&frame).expect("own session"), b"session two");
}

#[test]
fn modern_rejects_replay() {
    let (mut device, mut ves) = establish(&[Suite::Modern], &[Suite::Modern]);
    let f0 = ves.seal(b"zero").expect("seal");
    let f1 = ves.seal(b"one").expect("seal");
    assert_eq!(device.open(&f0).expect("open"), b"zero");
    assert!(matches!(device.open(&f0), Err(CryptoError::Replayed { counter: 0 })));
    assert_eq!(device.open(&f1).expect("open"), b"one");
    assert!(matches!(device.open(&f0), Err(CryptoError::Replayed { counter: 0 })));
    assert!(matches!(device.open(&f1), Err(CryptoError::Replayed { counter: 1 })));
}

#[test]
fn modern_rejects_reordering_and_gaps() {
    let (mut device, mut ves) = establish(&[Suite::Modern], &[Suite::Modern]);
    let frames: Vec<Vec<u8>> = (0..4u8).map(|i| ves.seal(&[i]).expect("seal")).collect();
    // 1 before 0: reordered.
    assert!(matches!(device.open(&frames[1]), Err(CryptoError::OutOfOrder { expected: 0, got: 1 })));
    assert_eq!(device.open(&frames[0]).expect("open"), [0]);
    // 2 is withheld (dropped by the relay): 3 is refused.
    assert!(matches!(device.open(&frames[3]), Err(CryptoError::OutOfOrder { expected: 1, got: 3 })));
    // The stream resumes in order once the missing frames arrive.
    for (i, frame) in frames.iter().enumerate().skip(1) {
        assert_eq!(device.open(frame).expect("in order"), [i as u8]);
    }
}

#[test]
fn modern_final_frame_detects_truncation_and_ends_the_stream() {
    let (mut device, mut ves) = establish(&[Suite::Modern], &[Suite::Modern]);
    let f0 = ves.seal(b"part 1").expect("seal");
    let f1 = ves.seal_final(b"part 2, the end").expect("seal");
    assert!(matches!(ves.seal(b"more"), Err(CryptoError::StreamFinished)));
    assert!(matches!(ves.seal_final(b"more"), Err(CryptoError::StreamFinished)));

    device.open(&f0).expect("open");
    // A relay that stops here leaves the device with peer_finished() == false: truncation shows.
    assert!(!device.peer_finished());
    device.open(&f1).expect("open");
    assert!(device.peer_finished());
    assert!(matches!(device.open(&f1), Err(CryptoError::StreamFinished)));

    // The final flag is authenticated: stripping it from a frame breaks the tag.
    let (mut device, mut ves) = establish(&[Suite::Modern], &[Suite::Modern]);
    let mut last = ves.seal_final(b"end").expect("seal");
    last[0] = 0;
    assert!(matches!(device.open(&last), Err(CryptoError::AuthenticationFailed)));
    // The other direction is independent.
    let up = device.seal(b"still talking").expect("seal");
    assert_eq!(ves.open(&up).expect("open"), b"still talking");
}

#[test]
fn relay_replacing_the_ves_ephemeral_key_is_detected() {
    let (ves, pin) = ves(&[Suite::Modern]);
    let (device, wakeup) = Initiator::start(device_config(pin, &[Suite::Modern])).expect("start");
    let (ack, _) = ves.accept(&wakeup).expect("accept");
    let mut forged = WakeUpAck::decode(&ack).expect("decode");
    let relay_key = StaticKeyPair::generate().expect("relay key");
    forged.ephemeral = relay_key.public_key().to_vec();
    let err = device.finish(&forged.encode().expect("encode")).expect_err("tampered handshake accepted");
    assert!(matches!(err, CryptoError::HandshakeFailed), "{err:?}");
}

#[test]
fn relay_tampering_with_the_wakeup_is_detected() {
    // The relay swaps the device's ephemeral key for its own on the way to the VES.
    let (ves, pin) = ves(&[Suite::Modern]);
    let (device, wakeup) = Initiator::start(device_config(pin, &[Suite::Modern])).expect("start");
    let mut offer = WakeUp::decode(&wakeup).expect("decode");
    offer.offers[0].public_key = StaticKeyPair::generate().expect("relay key").public_key().to_vec();
    let (ack, _) = ves.accept(&offer.encode().expect("encode")).expect("the VES cannot tell");
    assert!(matches!(device.finish(&ack), Err(CryptoError::HandshakeFailed)));
}

#[test]
fn relay_tampering_with_the_handshake_auth_is_detected() {
    let (ves, pin) = ves(&[Suite::Modern]);
    for byte in 0..modern::HANDSHAKE_AUTH_LEN {
        let (device, wakeup) = Initiator::start(device_config(pin, &[Suite::Modern])).expect("start");
        let (ack, _) = ves.accept(&wakeup).expect("accept");
        let mut forged = WakeUpAck::decode(&ack).expect("decode");
        forged.auth[byte] ^= 0x40;
        let err = device.finish(&forged.encode().expect("encode")).expect_err("accepted");
        assert!(matches!(err, CryptoError::HandshakeFailed), "byte {byte}: {err:?}");
    }
}

#[test]
fn full_man_in_the_middle_fails_the_pinned_fingerprint() {
    // The relay runs its own VES endpoint towards the device (with its own static key) and
    // its own device endpoint towards the real VES, re-encrypting in between. It completes
    // a valid handshake on both sides, and the device's pin is what stops it.
    let (real_ves, real_pin) = ves(&[Suite::Modern]);
    let (fake_ves, fake_pin) = ves(&[Suite::Modern]);
    let (device, wakeup) = Initiator::start(device_config(real_pin, &[Suite::Modern])).expect("start");

    let (mitm_device, mitm_wakeup) = Initiator::start(device_config(real_pin, &[Suite::Modern])).expect("start");
    let (real_ack, _) = real_ves.accept(&mitm_wakeup).expect("the real VES accepts the relay");
    let _relay_to_ves = mitm_device.finish(&real_ack).expect("the relay can talk to the VES as a device");
    let (fake_ack, _) = fake_ves.accept(&wakeup).expect("the relay answers the device");

    match device.finish(&fake_ack) {
        Err(CryptoError::FingerprintMismatch { expected, presented }) => {
            assert_eq!(*expected, real_pin);
            assert_eq!(*presented, fake_pin);
        }
        other => panic!("man in the middle not detected: {other:?}"),
    }
    // Forwarding the real VES's answer (made for the relay's WakeUp) does not help either.
    let (device, _) = Initiator::start(device_config(real_pin, &[Suite::Modern])).expect("start");
    assert!(matches!(device.finish(&real_ack), Err(CryptoError::HandshakeFailed)));
}

#[test]
fn device_with_a_wrong_pin_refuses_the_genuine_ves() {
    let (ves, _) = ves(&[Suite::Modern]);
    let other = StaticKeyPair::generate().expect("key").fingerprint();
    let (device, wakeup) = Initiator::start(device_config(other, &[Suite::Modern])).expect("start");
    let (ack, _) = ves.accept(&wakeup).expect("accept");
    assert!(matches!(device.finish(&ack), Err(CryptoError::FingerprintMismatch { .. })));
}

#[test]
fn downgrade_to_an_unoffered_suite_is_refused() {
    // A modern-only device refuses a WakeUpAck for legacy-2005, whoever forged it.
    let (ves, pin) = ves(&[Suite::Legacy2005]);
    let (device, wakeup) = Initiator::start(device_config(pin, &[Suite::Modern])).expect("start");
    assert!(matches!(ves.accept(&wakeup), Err(CryptoError::NoCommonSuite)));
    let forged = WakeUpAck { suite: Suite::Legacy2005, ephemeral: vec![4; 73], auth: vec![] }.encode().expect("encode");
    assert!(matches!(device.finish(&forged), Err(CryptoError::SuiteNotOffered(Suite::Legacy2005))));
}

#[test]
fn negotiation_follows_the_ves_preference_among_offered_suites() {
    let (d, v) = establish(&[Suite::Legacy2005, Suite::Modern], &[Suite::Modern, Suite::Legacy2005]);
    assert_eq!((d.suite(), v.suite()), (Suite::Modern, Suite::Modern));
    let (d, v) = establish(&[Suite::Modern, Suite::Legacy2005], &[Suite::Legacy2005, Suite::Modern]);
    assert_eq!((d.suite(), v.suite()), (Suite::Legacy2005, Suite::Legacy2005));
    let (d, v) = establish(&[Suite::Modern, Suite::Legacy2005], &[Suite::Legacy2005]);
    assert_eq!((d.suite(), v.suite()), (Suite::Legacy2005, Suite::Legacy2005));
}

#[test]
fn unknown_suites_in_an_offer_are_skipped() {
    let (ves, pin) = ves(&[Suite::Modern]);
    let (device, wakeup) = Initiator::start(device_config(pin, &[Suite::Modern])).expect("start");
    let mut offer = WakeUp::decode(&wakeup).expect("decode");
    offer.offers.insert(0, noc_crypto::KeyShare { suite_id: 200, public_key: vec![1, 2, 3] });
    // The relay cannot add an offer unnoticed (the offer is the handshake's prologue)…
    let (ack, _) = ves.accept(&offer.encode().expect("encode")).expect("accept");
    assert!(matches!(device.finish(&ack), Err(CryptoError::HandshakeFailed)));
    // …but a VES that does not know a suite a device offers simply ignores it.
    assert_eq!(offer.offers[0].suite(), None);
}

#[test]
fn configuration_is_validated() {
    let pin = StaticKeyPair::generate().expect("key").fingerprint();
    assert!(matches!(Initiator::start(device_config(pin, &[])), Err(CryptoError::Config(_))));
    assert!(matches!(
        Initiator::start(device_config(pin, &[Suite::Modern, Suite::Modern])),
        Err(CryptoError::Config(_))
    ));
    let key = StaticKeyPair::generate().expect("key");
    let empty = ResponderConfig { suites: vec![], ..ResponderConfig::default() };
    assert!(matches!(Responder::new(key, empty), Err(CryptoError::Config(_))));
}

#[test]
fn legacy_session_round_trip() {
    let (mut device, mut ves) = establish(&[Suite::Legacy2005], &[Suite::Legacy2005]);
    assert_eq!(device.suite(), Suite::Legacy2005);
    assert_eq!(device.handshake_hash(), None);
    for i in 0..20usize {
        let msg = random_bytes(i * 101);
        assert_eq!(device.open(&ves.seal(&msg).expect("seal")).expect("open"), msg);
        assert_eq!(ves.open(&device.seal(&msg).expect("seal")).expect("open"), msg);
    }
    let text = b"Subject: hello\r\n\r\nhello hello hello hello hello hello hello".repeat(50);
    let frame = device.seal(&text).expect("seal");
    assert!(frame.len() < text.len() / 4, "deflate applies: {} bytes for {}", frame.len(), text.len());
    assert_eq!(ves.open(&frame).expect("open"), text);
    assert!(matches!(ves.seal_final(b"x"), Err(CryptoError::Unsupported { suite: Suite::Legacy2005, .. })));
}

#[test]
fn legacy_session_known_limitations() {
    // Documented in docs/crypto.md: legacy-2005 frames carry no sequence number and use
    // one key for both directions, so replays, reordering and reflection go unnoticed.
    let (mut device, mut ves_session) = establish(&[Suite::Legacy2005], &[Suite::Legacy2005]);
    let f0 = ves_session.seal(b"zero").expect("seal");
    let f1 = ves_session.seal(b"one").expect("seal");
    assert_eq!(device.open(&f1).expect("reordered"), b"one");
    assert_eq!(device.open(&f0).expect("reordered"), b"zero");
    assert_eq!(device.open(&f0).expect("replayed"), b"zero");
    let up = device.seal(b"reflected").expect("seal");
    assert_eq!(device.open(&up).expect("reflected"), b"reflected");
    // And the key agreement is not authenticated: a relay can substitute its own key and
    // the device cannot tell (it just ends up sharing a key with the relay).
    let (ves_endpoint, pin) = ves(&[Suite::Legacy2005]);
    let (device, wakeup) = Initiator::start(device_config(pin, &[Suite::Legacy2005])).expect("start");
    let (ack, _) = ves_endpoint.accept(&wakeup).expect("accept");
    let mut forged = WakeUpAck::decode(&ack).expect("decode");
    let relay = noc_crypto::LegacyEphemeral::generate().expect("relay key");
    forged.ephemeral = relay.public_key().to_vec();
    assert!(device.finish(&forged.encode().expect("encode")).is_ok());
}

#[test]
fn legacy_session_tamper_and_wrong_key() {
    let (mut device, mut ves) = establish(&[Suite::Legacy2005], &[Suite::Legacy2005]);
    let frame = ves.seal(b"legacy message").expect("seal");
    for byte in 0..frame.len() {
        let mut tampered = frame.clone();
        tampered[byte] ^= 0x01;
        assert!(matches!(device.open(&tampered), Err(CryptoError::AuthenticationFailed)), "byte {byte}");
    }
    let (mut other_device, _) = establish(&[Suite::Legacy2005], &[Suite::Legacy2005]);
    assert!(matches!(other_device.open(&frame), Err(CryptoError::AuthenticationFailed)));
    assert_eq!(device.open(&frame).expect("genuine"), b"legacy message");
}

#[test]
fn hostile_bytes_never_panic() {
    // Whatever the relay sends, the endpoints answer with an error, never a panic.
    let (ves_endpoint, pin) = ves(&[Suite::Modern, Suite::Legacy2005]);
    let (mut modern_device, _) = establish(&[Suite::Modern], &[Suite::Modern]);
    let (mut legacy_device, _) = establish(&[Suite::Legacy2005], &[Suite::Legacy2005]);
    let (_, good_wakeup) = Initiator::start(device_config(pin, &[Suite::Modern, Suite::Legacy2005])).expect("start");
    let (good_ack, _) = ves_endpoint.accept(&good_wakeup).expect("accept");
    for round in 0..300usize {
        let garbage = random_bytes(round % 150);
        let _ = ves_endpoint.accept(&garbage);
        let _ = modern_device.open(&garbage);
        let _ = legacy_device.open(&garbage);
        let (device, _) = Initiator::start(device_config(pin, &[Suite::Modern, Suite::Legacy2005])).expect("start");
        let _ = device.finish(&garbage);
        // Truncations and single-byte corruptions of well-formed messages.
        let cut = round % (good_ack.len() + 1);
        let (device, _) = Initiator::start(device_config(pin, &[Suite::Modern, Suite::Legacy2005])).expect("start");
        assert!(device.finish(&good_ack[..cut]).is_err());
        let mut wakeup = good_wakeup.clone();
        wakeup[round % good_wakeup.len()] ^= (round as u8) | 1;
        let _ = ves_endpoint.accept(&wakeup);
    }
}
