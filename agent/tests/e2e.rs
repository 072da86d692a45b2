//! End to end over real sockets: relay node, VES agent, device client, SMTP server.
//!
//! Issue 3's required behaviours: a Maildir mail reaches the device decrypted; mail
//! composed on the device reaches a real SMTP server; the bytes crossing the relay never
//! contain the plaintext; an offline device gets its queued items once, in order; the
//! agent survives a dropped command channel, a silent one (heartbeats) and a relay
//! restart; it works through an authenticating CONNECT proxy; tampered and replayed frames
//! are rejected in both directions; a key agreement tampered with by the relay is detected.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use noc_agent::ControlRequest;
use noc_crypto::{Responder, ResponderConfig, StaticKeyPair};
use noc_device::{DeviceEvent, RunOptions as DeviceRunOptions};
use noc_endpoint::LinkEvent;
use noc_endpoint::rfc822::Draft;
use noc_protocol::device::{ForwardKind, Frame};
use noc_protocol::rts;
use noc_test_support::{ConnectProxy, DeviceShim, Forwarder, ShimAction, ShimDir, SmtpSink, TestRelay};
use serde_json::json;
use tokio::sync::broadcast;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn shim_for(world: &World) -> DeviceShim {
    let relay = world.relay();
    let key = relay.config.data_dir.join("tls").join("key.pem");
    DeviceShim::start(relay.device_addr(), &relay.cert_path(), &key, "127.0.0.1").await.expect("device shim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_both_ways_end_to_end_and_the_relay_sees_no_plaintext() {
    let mut world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("bob@corp.example", "+15550100").await;

    // The welcome mail went through the real SMTP server, with what the user needs.
    let welcome =
        world.smtp.wait_for(T, |m| m.rcpt_tos.contains(&"bob@corp.example".to_string())).await.expect("welcome mail");
    assert!(welcome.data.contains(USER_PW), "password in the welcome mail");
    assert!(welcome.data.contains(&world.fingerprint), "fingerprint in the welcome mail: {}", welcome.data);
    assert!(
        welcome.data.contains("/activate") && !welcome.data.contains("/account/v1/activate"),
        "the activation page, not the scripted endpoint: {}",
        welcome.data
    );

    let shim = shim_for(&world).await;
    let running = run_device(&device, fast_device(Some(shim.addr)));

    // Incoming: a mail dropped into the Maildir arrives decrypted, byte for byte.
    const SECRET_IN: &str = "Quarterly numbers: revenue 4711 kEUR (CONFIDENTIAL-IN)";
    let sent = world.drop_mail("bob@corp.example", "1700000000.M1P1.corp", "Numbers", SECRET_IN);
    let got = wait_inbox(&device, 1).await;
    assert_eq!(got[0], sent);

    // Outgoing: composed on the device, submitted by the agent to the SMTP server, with the
    // user's address as sender whatever the device claimed.
    const SECRET_OUT: &str = "Reply: the merger closes on Friday (CONFIDENTIAL-OUT)";
    let draft = Draft {
        from: Some("mallory@evil.example".into()),
        to: vec!["alice@partner.example".into()],
        cc: vec!["carol@partner.example".into()],
        subject: "Re: Numbers".into(),
        text: SECRET_OUT.into(),
    };
    device.compose_mail(&draft, &["dave@corp.example".to_string()]).expect("compose");
    let out = world
        .smtp
        .wait_for(T, |m| m.rcpt_tos.contains(&"alice@partner.example".to_string()))
        .await
        .expect("outgoing mail at the SMTP server");
    assert_eq!(out.mail_from, "bob@corp.example");
    let mut rcpt = out.rcpt_tos.clone();
    rcpt.sort();
    assert_eq!(rcpt, vec!["alice@partner.example", "carol@partner.example", "dave@corp.example"]);
    assert!(out.data.contains(SECRET_OUT));
    assert!(out.data.contains("From: \"Bob Ng\" <bob@corp.example>"), "{}", out.data);
    assert!(!out.data.contains("mallory") && !out.data.contains("dave@"), "no spoofed From, no Bcc header");
    eventually(T, "the device's outbox to empty", || async { device.outbox().ok().filter(|o| o.is_empty()) }).await;

    // What crossed the relay: every FORWARD payload on the device channel (both ways) and
    // every command-channel line the agent received (DeviceFrame payloads decoded).
    let captured = shim.captured();
    assert!(captured.iter().any(|c| c.dir == ShimDir::ToDevice && c.kind == ForwardKind::Data));
    assert!(captured.iter().any(|c| c.dir == ShimDir::ToRelay && c.kind == ForwardKind::Data));
    let mut lines = Vec::new();
    while let Ok(l) = world.lines.try_recv() {
        lines.push(l);
    }
    let mut relay_bytes: Vec<Vec<u8>> = captured.iter().map(|c| c.payload.to_vec()).collect();
    for l in &lines {
        relay_bytes.push(l.clone().into_bytes());
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
            && let Some(p) = v.get("Payload").and_then(|p| p.as_str())
        {
            relay_bytes.push(rts::decode_payload(p).expect("base64 payload"));
        }
    }
    assert!(lines.iter().any(|l| l.contains("\"DeviceFrame\"")), "command channel captured");
    for needle in ["CONFIDENTIAL-IN", "CONFIDENTIAL-OUT", "Quarterly", "merger", "alice@partner.example"] {
        assert!(!relay_bytes.iter().any(|b| contains(b, needle.as_bytes())), "{needle:?} crossed the relay in clear");
    }
    running.halt().await;
    world.agent.take().expect("agent").stop().await.expect("agent stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_its_queued_items_once_and_in_order() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("erin@corp.example", "+15550101").await;
    let device_id = device.state.device_id;

    // The device is offline: the items wait in the agent's persistent queue.
    for i in 0..5 {
        world.drop_mail(
            "erin@corp.example",
            &format!("17000000{i:02}.M1P1.corp"),
            &format!("m{i}"),
            &format!("body {i}"),
        );
    }
    world
        .wait_status("5 items queued for the offline device", |s| {
            s.devices.iter().any(|d| d.device_id == device_id && d.queued == 5 && !d.online)
        })
        .await;

    let running = run_device(&device, fast_device(None));
    let items = wait_inbox(&device, 5).await;
    let subjects: Vec<String> =
        items.iter().map(|b| noc_endpoint::rfc822::header(b, "Subject").unwrap_or_default()).collect();
    assert_eq!(subjects, vec!["m0", "m1", "m2", "m3", "m4"]);

    // Delivered: the queue empties on the device's sealed item acknowledgements, and
    // nothing arrives twice.
    world
        .wait_status("the queue to empty", |s| s.devices.iter().any(|d| d.device_id == device_id && d.queued == 0))
        .await;
    assert_eq!(inbox(&device).len(), 5);

    // Offline again, then back: a new session, and nothing is delivered again.
    running.halt().await;
    world.drop_mail("erin@corp.example", "1700000099.M1P1.corp", "m5", "body 5");
    let running = run_device(&device, fast_device(None));
    let items = wait_inbox(&device, 6).await;
    assert_eq!(noc_endpoint::rfc822::header(&items[5], "Subject").as_deref(), Some("m5"));
    assert!(device.stats.sessions.load(std::sync::atomic::Ordering::Relaxed) >= 2, "a new key per connection");
    running.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_stopped_right_after_receiving_an_item_acknowledges_it_while_logging_off() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("mona@corp.example", "+15550108").await;
    let device_id = device.state.device_id;

    // The device talks through the shim only to let the test see its CLOSE frame.
    let shim = shim_for(&world).await;
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = closed.clone();
    shim.set_rule(move |dir, f| {
        if dir == ShimDir::ToRelay && matches!(f, Frame::Close { .. }) {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        ShimAction::Pass
    });
    // The device seals its item acknowledgements on its tick. With a slow tick the one for
    // this item is still pending when the device is told to stop, so only the shutdown
    // drain can send it.
    let opts = DeviceRunOptions {
        tick: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(5),
        ..fast_device(Some(shim.addr))
    };
    let mut running = run_device(&device, opts);
    let sent = world.drop_mail("mona@corp.example", "1.M1.corp", "stop after me", "x");
    tokio::time::timeout(T, async {
        loop {
            match running.events.recv().await {
                Ok(DeviceEvent::Link(LinkEvent::ItemReceived { .. })) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the device stopped"),
            }
        }
    })
    .await
    .expect("the item reached the device");
    running.halt().await;
    assert_eq!(inbox(&device), vec![sent]);
    eventually(T, "the device's CLOSE at the relay", || async {
        closed.load(std::sync::atomic::Ordering::SeqCst).then_some(())
    })
    .await;

    // The agent got the sealed item acknowledgement: the item left its queue.
    let status = world
        .wait_status("the agent's queue to empty", |s| {
            s.devices.iter().any(|d| d.device_id == device_id && d.queued == 0)
        })
        .await;
    assert_eq!(status.stats.items_delivered, 1);
}

fn standup(summary: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//corp//e2e//EN\r\nBEGIN:VEVENT\r\nUID:standup-1@corp.example\r\n\
         DTSTART:20261130T090000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_file_written_in_pieces_arrives_once_complete_and_a_new_version_replaces_it() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("nina@corp.example", "+15550109").await;
    let running = run_device(&device, fast_device(None));
    let dir = world.config.mail.calendar_root.clone().expect("calendar root").join("nina@corp.example");
    std::fs::create_dir_all(&dir).expect("calendar dir");
    let path = dir.join("standup.ics");

    // Written in place in three pieces, the way `printf … > f; printf … >> f` does: every
    // piece opens, writes and closes the file. The first pause outlasts the settle delay
    // and a rescan (2 s), so the agent sees the file cut off after "SUMMARY:".
    let v1 = standup("Standup");
    let cut1 = v1.find("SUMMARY:").expect("summary") + "SUMMARY:".len();
    let cut2 = v1.find("END:VEVENT").expect("end");
    std::fs::write(&path, &v1[..cut1]).expect("first piece");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (piece, pause) in [(&v1[cut1..cut2], 300), (&v1[cut2..], 0)] {
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open to append");
        std::io::Write::write_all(&mut f, piece.as_bytes()).expect("append");
        drop(f);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let got = wait_inbox(&device, 1).await;
    assert_eq!(String::from_utf8_lossy(&got[0]), v1);
    // Exactly one item was ever sent and received: no cut-off version, not even one that a
    // later version replaced.
    let received = device.store.received(Some(noc_endpoint::VES_PEER), None).expect("received");
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].header.name.as_deref(), Some("standup.ics"));
    assert_eq!(received[0].header.item_type, "calendar");
    assert_eq!(world.status().await.stats.items_queued, 1);

    // Changed (the recommended way: a temporary name, then a rename into place): the
    // device ends up with the new version instead of the old one, not with both.
    let v2 = standup("Standup (moved to 9:30)");
    let tmp = dir.join(".standup.ics.tmp");
    std::fs::write(&tmp, &v2).expect("write new version");
    std::fs::rename(&tmp, &path).expect("rename into place");
    let inbox = eventually(T, "the new version on the device", || async {
        let items = device.inbox().expect("inbox");
        items.iter().any(|r| r.body == v2.as_bytes()).then_some(items)
    })
    .await;
    assert_eq!(inbox.len(), 1, "the new version replaced the old one: {inbox:?}");
    let replaced = device.store.received(Some(noc_endpoint::VES_PEER), Some(noc_endpoint::store::STATE_REPLACED));
    assert_eq!(replaced.expect("replaced").len(), 1, "the old version is kept as replaced, without its body");
    running.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_survives_a_dropped_command_channel_a_silent_one_and_a_relay_restart() {
    // The agent reaches the relay through a forwarder that the relay also names in its
    // EventUrl, so cutting it drops the command channel itself.
    let fwd = std::sync::Arc::new(Forwarder::bind().await.expect("forwarder"));
    let public = format!("https://127.0.0.1:{}", fwd.addr.port());
    let relay_url = public.clone();
    let mut world = World::start(
        move |c| c.public.url = Some(public),
        Options { relay_url: Some(relay_url), forwarder: Some(fwd.clone()), ..Options::default() },
    )
    .await;
    let device = world.user_with_device("frank@corp.example", "+15550102").await;
    let running = run_device(&device, fast_device(None));
    world.drop_mail("frank@corp.example", "1.M1.corp", "before", "x");
    wait_inbox(&device, 1).await;

    // 1. Dropped: every connection through the forwarder is cut and refused for a while.
    let before = world.status().await.stats;
    fwd.cut();
    eventually(T, "the agent to notice the dropped channel", || async {
        // The control socket is local: it keeps answering while the relay is unreachable.
        world.agent().status().await.ok().filter(|s| s.stats.channel_breaks > before.channel_breaks).map(|_| ())
    })
    .await;
    fwd.restore();
    world.wait_status("the session to resume", |s| s.connected && s.stats.resumes > before.resumes).await;
    world.drop_mail("frank@corp.example", "2.M1.corp", "after cut", "x");
    wait_inbox(&device, 2).await;

    // 2. Silent: open connections stop moving bytes; only the missing HB reveals it.
    let before = world.status().await.stats;
    fwd.freeze();
    world
        .wait_status("a heartbeat timeout and a resume", |s| {
            s.connected && s.stats.heartbeat_timeouts > before.heartbeat_timeouts && s.stats.resumes > before.resumes
        })
        .await;
    world.drop_mail("frank@corp.example", "3.M1.corp", "after freeze", "x");
    wait_inbox(&device, 3).await;

    // 3. The relay restarts (same data, same ports): sessions are gone, the agent opens a
    // new one, the device reconnects with a new key, the queue drains.
    let before = world.status().await.stats;
    world.restart_relay();
    world
        .wait_status("a new RTS session after the restart", |s| s.connected && s.stats.sessions > before.sessions)
        .await;
    world.drop_mail("frank@corp.example", "4.M1.corp", "after restart", "x");
    let items = wait_inbox(&device, 4).await;
    let subjects: Vec<String> =
        items.iter().map(|b| noc_endpoint::rfc822::header(b, "Subject").unwrap_or_default()).collect();
    assert_eq!(subjects, vec!["before", "after cut", "after freeze", "after restart"]);
    running.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_works_through_an_authenticating_connect_proxy() {
    let proxy = ConnectProxy::start("ves", "proxy-pw").await.expect("proxy");
    let section = format!("[proxy]\nurl = \"{}\"\nusername = \"ves\"\npassword = \"proxy-pw\"\n", proxy.url());
    let world = World::start(|_| {}, Options { proxy: Some(section), ..Options::default() }).await;
    assert!(proxy.tunnels() >= 2, "license, connect and the command channel went through the proxy");

    // Provisioning (data channel) and push (command channel + Frames) through the proxy.
    let device = world.user_with_device("gina@corp.example", "+15550103").await;
    let running = run_device(&device, fast_device(None));
    let sent = world.drop_mail("gina@corp.example", "1.M1.corp", "via proxy", "hello");
    assert_eq!(wait_inbox(&device, 1).await[0], sent);
    assert_eq!(proxy.rejected(), 0);
    running.halt().await;

    // Wrong proxy credentials: refused by the proxy (407), and the agent says so.
    let bad = format!("[proxy]\nurl = \"{}\"\nusername = \"ves\"\npassword = \"wrong\"\n", proxy.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = agent_config(
        world.relay().base_url(),
        &world.relay().cert_path(),
        dir.path(),
        world.smtp.port,
        &Options { proxy: Some(bad), ..Options::default() },
    );
    let err = noc_agent::register(&config).await.expect_err("wrong proxy password");
    assert!(err.to_string().contains("407") || err.to_string().to_lowercase().contains("proxy"), "{err}");
    assert!(proxy.rejected() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_replayed_frames_are_rejected_by_both_endpoints() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("hank@corp.example", "+15550104").await;
    let shim = shim_for(&world).await;

    // The "relay" flips a bit of the first Data frame to the device and of the first one to
    // the VES, and replays every later Data frame to the device.
    let (mut tampered_to_device, mut tampered_to_ves) = (false, false);
    shim.set_rule(move |dir, f| match f {
        Frame::Forward { kind: ForwardKind::Data, frame_id, payload } => {
            let first = match dir {
                ShimDir::ToDevice => !std::mem::replace(&mut tampered_to_device, true),
                ShimDir::ToRelay => !std::mem::replace(&mut tampered_to_ves, true),
            };
            if first {
                let mut p = payload.to_vec();
                let n = p.len() - 1;
                p[n] ^= 0x80;
                ShimAction::Replace(Frame::Forward {
                    kind: ForwardKind::Data,
                    frame_id: *frame_id,
                    payload: Bytes::from(p),
                })
            } else if dir == ShimDir::ToDevice {
                ShimAction::Duplicate
            } else {
                ShimAction::Pass
            }
        }
        _ => ShimAction::Pass,
    });
    let running = run_device(&device, fast_device(Some(shim.addr)));
    let sent = world.drop_mail("hank@corp.example", "1.M1.corp", "tamper me", "payload");
    let got = wait_inbox(&device, 1).await;
    assert_eq!(got, vec![sent], "delivered intact, once, after the resend");
    let stats = &device.stats;
    assert!(stats.tampered_frames.load(std::sync::atomic::Ordering::Relaxed) >= 1, "device rejected the altered frame");
    eventually(T, "a replay rejected by the device", || async {
        (device.stats.replayed_frames.load(std::sync::atomic::Ordering::Relaxed) >= 1).then_some(())
    })
    .await;

    // Device → VES: the altered frame is refused by the agent; the resend goes through.
    let draft =
        Draft { to: vec!["x@partner.example".into()], subject: "out".into(), text: "t".into(), ..Draft::default() };
    device.compose_mail(&draft, &[]).expect("compose");
    world.smtp.wait_for(T, |m| m.rcpt_tos.contains(&"x@partner.example".to_string())).await.expect("submitted");
    world.wait_status("the agent to reject the altered frame", |s| s.stats.tampered_frames >= 1).await;

    // Device → VES, much later: the relay sends the VES an old device frame again (the
    // original bytes of the first frame the shim altered, accepted when it was resent).
    // The agent refuses it as a replay and counts it; nothing is submitted again.
    let to_ves: Vec<_> =
        shim.captured().into_iter().filter(|c| c.dir == ShimDir::ToRelay && c.kind == ForwardKind::Data).collect();
    let accepted = to_ves.get(1).expect("an accepted device frame").clone();
    let before = world.status().await.stats;
    assert!(shim.inject_to_relay(Frame::Forward {
        kind: accepted.kind,
        frame_id: accepted.frame_id,
        payload: accepted.payload
    }));
    let after = world
        .wait_status("the agent to reject the replayed device frame", |s| {
            s.stats.replayed_frames > before.replayed_frames
        })
        .await;
    assert_eq!(after.stats.items_received, before.items_received, "nothing new taken from the replay");
    assert_eq!(after.stats.tampered_frames, before.tampered_frames, "refused as a replay, not as tampering");

    // A replay much later of an old frame is refused too; nothing new is stored.
    let old = shim
        .captured()
        .into_iter()
        .find(|c| c.dir == ShimDir::ToDevice && c.kind == ForwardKind::Data)
        .expect("old frame");
    let replayed_before = device.stats.replayed_frames.load(std::sync::atomic::Ordering::Relaxed);
    assert!(shim.inject_to_device(Frame::Forward { kind: old.kind, frame_id: old.frame_id, payload: old.payload }));
    eventually(T, "the late replay to be rejected", || async {
        (device.stats.replayed_frames.load(std::sync::atomic::Ordering::Relaxed) > replayed_before).then_some(())
    })
    .await;
    assert_eq!(inbox(&device).len(), 1);
    assert_eq!(
        world.smtp.messages().iter().filter(|m| m.rcpt_tos.contains(&"x@partner.example".to_string())).count(),
        1
    );
    running.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_agreement_tampered_with_by_the_relay_is_detected() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("ivy@corp.example", "+15550105").await;
    let shim = shim_for(&world).await;

    // The relay answers the device's WakeUp itself, with its own VES key: a complete,
    // well-formed key agreement that only the pinned fingerprint can expose.
    let evil = Responder::new(StaticKeyPair::generate().expect("key"), ResponderConfig::default()).expect("responder");
    let mut last_wakeup: Option<Vec<u8>> = None;
    shim.set_rule(move |_, f| match f {
        Frame::Forward { kind: ForwardKind::WakeUp, payload, .. } => {
            last_wakeup = Some(payload.to_vec());
            ShimAction::Pass
        }
        Frame::Forward { kind: ForwardKind::WakeUpAck, frame_id, .. } => {
            match last_wakeup.as_deref().map(|w| evil.accept(w)) {
                Some(Ok((ack, _session))) => ShimAction::Replace(Frame::Forward {
                    kind: ForwardKind::WakeUpAck,
                    frame_id: *frame_id,
                    payload: Bytes::from(ack),
                }),
                _ => ShimAction::Drop,
            }
        }
        _ => ShimAction::Pass,
    });
    let running = run_device(&device, fast_device(Some(shim.addr)));
    world.drop_mail("ivy@corp.example", "1.M1.corp", "secret", "not for the relay");
    eventually(T, "two failed key agreements", || async {
        (device.stats.key_agreement_failures.load(std::sync::atomic::Ordering::Relaxed) >= 2).then_some(())
    })
    .await;
    assert_eq!(device.stats.sessions.load(std::sync::atomic::Ordering::Relaxed), 0, "no session with the impostor");
    assert!(inbox(&device).is_empty());

    // Now the relay only alters the VES's real answer (one byte of its ephemeral key).
    shim.set_rule(|_, f| match f {
        Frame::Forward { kind: ForwardKind::WakeUpAck, frame_id, payload } => {
            let mut p = payload.to_vec();
            p[6] ^= 0x01;
            ShimAction::Replace(Frame::Forward {
                kind: ForwardKind::WakeUpAck,
                frame_id: *frame_id,
                payload: Bytes::from(p),
            })
        }
        _ => ShimAction::Pass,
    });
    let failures = device.stats.key_agreement_failures.load(std::sync::atomic::Ordering::Relaxed);
    eventually(T, "the altered key agreement to fail", || async {
        (device.stats.key_agreement_failures.load(std::sync::atomic::Ordering::Relaxed) > failures).then_some(())
    })
    .await;
    assert!(inbox(&device).is_empty());

    // An honest relay again: the next key agreement succeeds and the mail arrives.
    shim.clear_rule();
    let got = wait_inbox(&device, 1).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("not for the relay"));
    running.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_act_through_the_running_agent_and_legacy_devices_work_when_enabled() {
    let world = World::start(|_| {}, Options { suites: r#"["modern", "legacy-2005"]"#, ..Options::default() }).await;
    let socket = noc_agent::control_socket(&world.config);
    assert_eq!(noc_endpoint::fsutil::mode(&socket).expect("socket mode"), 0o600);
    let state = world.config.state.dir.join("state.json");
    assert_eq!(noc_endpoint::fsutil::mode(&state).expect("state mode"), 0o600);

    // user add without a password: the relay generates one, the welcome mail carries it.
    let added = world
        .agent()
        .control(&ControlRequest::UserAdd {
            email: "Judy@Corp.example".into(),
            first_name: "Judy".into(),
            last_name: "Lee".into(),
            password: None,
            welcome: Some(true),
        })
        .await
        .expect("user add");
    assert_eq!(added["Email"], json!("judy@corp.example"));
    assert_eq!(added["Password"], json!(null), "the generated password went by mail only");
    let mail =
        world.smtp.wait_for(T, |m| m.rcpt_tos.contains(&"judy@corp.example".to_string())).await.expect("welcome");
    assert!(mail.data.contains("Username:  judy@corp.example"));

    let list = world.agent().control(&ControlRequest::UserList).await.expect("list");
    assert_eq!(list["Users"][0]["Email"], json!("judy@corp.example"));
    let reset = world
        .agent()
        .control(&ControlRequest::UserResetPassword { email: "judy@corp.example".into(), password: None })
        .await
        .expect("reset");
    assert!(reset["Password"].as_str().is_some_and(|p| p.len() >= 8), "{reset}");
    let deleted =
        world.agent().control(&ControlRequest::UserDelete { email: "judy@corp.example".into() }).await.expect("delete");
    assert!(deleted["UserId"].is_string());
    let err = world.agent().control(&ControlRequest::UserDelete { email: "judy@corp.example".into() }).await;
    assert!(err.is_err(), "second delete: not found");

    // A legacy-2005 device (white paper §11) against an agent that accepts it.
    world
        .agent()
        .control(&ControlRequest::UserAdd {
            email: "ken@corp.example".into(),
            first_name: "Ken".into(),
            last_name: "Ma".into(),
            password: Some(USER_PW.into()),
            welcome: Some(false),
        })
        .await
        .expect("user add");
    let _: noc_protocol::rts::AccountActivationResponse = world
        .relay()
        .ves()
        .post_json(
            "/account/v1/activate",
            &json!({"Login": "ken@corp.example", "Password": USER_PW, "Msisdn": "+15550106", "TimeZone": "UTC"}),
        )
        .await
        .expect("account activation");
    let legacy = world.activate_device("+15550106", &["legacy-2005"]).await;
    let running = run_device(&legacy, fast_device(None));
    let sent = world.drop_mail("ken@corp.example", "1.M1.corp", "legacy", "deflated and AES-CFB sealed");
    assert_eq!(wait_inbox(&legacy, 1).await[0], sent);
    let status = world.status().await;
    assert!(
        status
            .devices
            .iter()
            .any(|d| d.device_id == legacy.state.device_id && d.suite.as_deref() == Some("legacy-2005"))
    );
    running.halt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_gets_its_devices_back_and_delivers_what_was_queued() {
    let mut world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("lena@corp.example", "+15550107").await;
    let running = run_device(&device, fast_device(None));
    world.drop_mail("lena@corp.example", "1.M1.corp", "first", "x");
    wait_inbox(&device, 1).await;

    // The agent stops (its end-to-end sessions die with it); mail keeps arriving.
    world.agent.take().expect("agent").stop().await.expect("stops");
    world.drop_mail("lena@corp.example", "2.M1.corp", "while down", "x");
    let sessions_before = device.stats.sessions.load(std::sync::atomic::Ordering::Relaxed);

    // Back up: same state directory, same identity. The device still holds its old
    // session; the agent asks it to re-key (KeyExchange) and then delivers.
    world.agent = Some(noc_agent::spawn(world.config.clone(), noc_agent::RunOptions::default()));
    world.wait_connected().await;
    let items = wait_inbox(&device, 2).await;
    assert_eq!(noc_endpoint::rfc822::header(&items[1], "Subject").as_deref(), Some("while down"));
    assert!(device.stats.rekey_requests.load(std::sync::atomic::Ordering::Relaxed) >= 1, "re-keyed on request");
    assert!(device.stats.sessions.load(std::sync::atomic::Ordering::Relaxed) > sessions_before);
    running.halt().await;
}

/// The license-id token expired or was revoked before the agent first connected: the relay
/// refuses the unregistered GUID (`401 invalid_credentials`), and the agent logs in again
/// with its license credentials, keeps the fresh token and registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_token_was_revoked_before_it_registered_logs_in_again() {
    let relay = TestRelay::start_with(fast_relay);
    relay.create_license(LICENSE, LICENSE_PW, 50).await;
    let smtp = SmtpSink::start().expect("SMTP sink (python3 -m pip install aiosmtpd)");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = agent_config(relay.base_url(), &relay.cert_path(), dir.path(), smtp.port, &Options::default());
    noc_agent::register(&config).await.expect("register");
    let token = |dir: &std::path::Path| -> String {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("agent/state.json")).expect("state file"))
                .expect("state JSON");
        state["license_token"].as_str().expect("token").to_string()
    };
    let stale = token(dir.path());
    // The same password again: every token issued so far is revoked.
    let (_, revoked) = relay.admin().await.set_license_password(LICENSE, LICENSE_PW).await.expect("set-password");
    assert_eq!(revoked, 1);

    let agent = noc_agent::spawn(config.clone(), noc_agent::RunOptions::default());
    eventually(T, "the agent's command channel", || async {
        agent.status().await.ok().filter(|s| s.connected).map(|_| ())
    })
    .await;
    assert_ne!(token(dir.path()), stale, "the renewed token is kept");
    agent.stop().await.expect("stop");
}

/// What the user sets on the relay's web portal reaches the agent over its live command
/// channel and is applied: an alert rule matches new mail, and with ConstantSync off new
/// mail is held (and pushed once it is turned on again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_settings_reach_the_agent_and_are_applied() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("lin@corp.example", "+15550107").await;
    let running = run_device(&device, fast_device(None));
    world.drop_mail("lin@corp.example", "1700000100.M1P1.corp", "before", "pushed as usual");
    wait_inbox(&device, 1).await;

    let relay = world.relay();
    let mut web = noc_test_support::WebClient::new(relay.node.http_addr, &relay.cert_path());
    assert_eq!(web.sign_in("lin@corp.example", USER_PW, false).await.status, 303);
    let csrf = web.get("/settings").await.hidden("csrf").expect("settings form");
    let save = |constant_sync: bool| {
        let mut f = vec![
            ("csrf", csrf.clone()),
            ("first_name", "Lin".to_string()),
            ("last_name", "Ng".to_string()),
            ("time_zone", "Europe/Paris".to_string()),
            ("alerts", "1".to_string()),
            ("rule_field", "subject".to_string()),
            ("rule_text", "urgent".to_string()),
        ];
        if constant_sync {
            f.push(("constant_sync", "1".to_string()));
        }
        f
    };
    let fields = save(false);
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(web.post("/settings", &refs).await.status, 303);
    world
        .wait_status("the agent to learn the rule and ConstantSync off", |s| {
            s.users.iter().any(|u| {
                u.email == "lin@corp.example"
                    && !u.constant_sync
                    && u.filter_rules
                        == vec![noc_protocol::rts::FilterRule { field: "subject".into(), contains: "urgent".into() }]
            })
        })
        .await;

    // ConstantSync off: a new mail is held, and still alerts.
    let held = world.stats_now().await;
    world.drop_mail("lin@corp.example", "1700000101.M1P1.corp", "URGENT: call me", "held");
    world
        .wait_status("the mail held and alerted", |s| {
            s.stats.items_held > held.items_held && s.stats.alerts_matched == held.alerts_matched + 1
        })
        .await;
    world.drop_mail("lin@corp.example", "1700000102.M1P1.corp", "lunch?", "held, no alert");
    world.wait_status("the second mail held", |s| s.stats.items_held >= held.items_held + 2).await;
    assert_eq!(inbox(&device).len(), 1, "nothing pushed while ConstantSync is off");

    // On again: what arrived meanwhile is pushed, in order; the alert is not repeated.
    let fields = save(true);
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(web.post("/settings", &refs).await.status, 303);
    let items = wait_inbox(&device, 3).await;
    let subjects: Vec<String> =
        items.iter().map(|b| noc_endpoint::rfc822::header(b, "Subject").unwrap_or_default()).collect();
    assert_eq!(subjects, vec!["before", "URGENT: call me", "lunch?"]);
    assert_eq!(world.stats_now().await.alerts_matched, held.alerts_matched + 1);
    running.halt().await;
}

/// A lost phone erased from the portal, with the real device client: it is connected when
/// the user confirms, reconnects at the relay's word, erases its store and credentials,
/// acknowledges, and stops; the agent forgets it and the portal shows the receipt.
#[tokio::test]
async fn a_device_erased_from_the_portal_deletes_its_data_and_credentials() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("eva@corp.example", "+15550108").await;
    let device_id = device.state.device_id;
    assert!(device.dir.join("client-key.pem").exists() && device.dir.join("client-cert.pem").exists());
    let running = run_device(&device, fast_device(None));
    world.drop_mail("eva@corp.example", "1700000200.M1P1.corp", "board minutes", "confidential");
    wait_inbox(&device, 1).await;

    let relay = world.relay();
    let mut web = noc_test_support::WebClient::new(relay.node.http_addr, &relay.cert_path());
    assert_eq!(web.sign_in("eva@corp.example", USER_PW, false).await.status, 303);
    let wipe = format!("/devices/{device_id}/wipe");
    let csrf = web.get(&wipe).await.hidden("csrf").expect("confirmation form");
    let done = web.post(&wipe, &[("csrf", &csrf), ("confirm", "yes")]).await;
    assert_eq!(done.status, 303);

    let ended = tokio::time::timeout(T, running.task).await.expect("the device stops").expect("task");
    assert!(matches!(ended, Err(noc_device::DeviceError::Wiped)), "{ended:?}");
    // It held a client certificate and logged in with it (AUTH_CERT); at its reconnect the
    // wipe came instead of AUTH_OK. The certificate and its key go with the rest.
    assert_eq!(noc_device::Stats::get(&device.stats.certificate_logins), 1);
    assert_eq!(noc_device::Stats::get(&device.stats.connections), 1);
    for name in [
        "device.json",
        "ca.pem",
        "client-key.pem",
        "client-cert.pem",
        "management-root.pem",
        "device.db",
        "device.db-wal",
    ] {
        assert!(!device.dir.join(name).exists(), "{name} is gone");
    }
    assert!(matches!(noc_device::Device::open(&device.dir), Err(noc_device::DeviceError::NotActivated(_))));
    world.wait_status("the agent to forget the device", |s| s.devices.iter().all(|d| d.device_id != device_id)).await;
    let page = web.get("/devices").await;
    assert!(page.body.contains("confirmed it erased its data and credentials"), "{}", page.body);
}

/// Waits until the device's enrollment `id` is in `state`.
async fn enrollment_reaches(
    device: &noc_device::Device,
    id: &str,
    state: &str,
) -> noc_device::enroll::EnrollmentRecord {
    eventually(T, &format!("enrollment {id} to be {state}"), || async {
        noc_device::enroll::list(&device.dir).ok()?.into_iter().find(|r| r.request_id == id && r.state == state)
    })
    .await
}

/// Enterprise certificate enrollment (seed 002) end to end, through the relay as opaque
/// frames: the device asks under a profile that needs approval, gets the user's
/// distinguished name, makes its key and request; the request waits in the agent's queue
/// (`CaPending`) while the device is offline; the administrator approves; the device, back
/// online, gets the certificate for its key with the CA's certificate, which openssl
/// verifies. A second request is rejected with a reason the device shows.
#[tokio::test]
async fn an_enterprise_certificate_is_enrolled_with_approval_and_rejected_with_a_reason() {
    let ca_dir = tempfile::tempdir().expect("tmp");
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let (ca, key) = noc_ca::DeviceCa::generate("Corp Issuing CA", now).expect("ca");
    std::fs::write(ca_dir.path().join("ca.pem"), ca.root_pem()).expect("cert");
    std::fs::write(ca_dir.path().join("ca.key"), key).expect("key");
    let extra = format!(
        "[[ca.profiles]]\nname = \"wifi\"\nsubject_suffix = [[\"O\", \"Corp\"]]\n\
         [ca.profiles.authority]\nkind = \"file\"\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        ca_dir.path().join("ca.pem").display(),
        ca_dir.path().join("ca.key").display()
    );
    let world = World::start(|_| {}, Options { extra, ..Options::default() }).await;
    let device = world.user_with_device("hal@corp.example", "+15550111").await;
    let running = run_device(&device, fast_device(None));
    let asked = device.enroll("wifi").expect("enroll");
    enrollment_reaches(&device, &asked.request_id, "queued").await;
    running.halt().await;

    let pending = world.agent().control(&ControlRequest::CaPending).await.expect("pending");
    let pending = pending.as_array().expect("a list").clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["RequestId"], asked.request_id.as_str());
    assert_eq!(pending[0]["Email"], "hal@corp.example");
    assert_eq!(pending[0]["Subject"], "CN=Bob Ng, emailAddress=hal@corp.example, O=Corp", "from the agent's directory");
    let approved = world
        .agent()
        .control(&ControlRequest::CaApprove { request_id: asked.request_id.clone() })
        .await
        .expect("approve");
    assert_eq!(approved["State"], "approved");

    // Offline meanwhile: the device gets the outcome when it comes back.
    let running = run_device(&device, fast_device(None));
    let issued = enrollment_reaches(&device, &asked.request_id, "issued").await;
    assert!(issued.not_after.is_some_and(|t| t > now + 300 * 86_400), "{issued:?}");
    let (chain, key) = noc_device::enroll::certificate_files(&device.dir, "wifi");
    assert!(key.exists(), "the key stays on the device");
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(ca_dir.path().join("ca.pem"))
        .arg(&chain)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let subject = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&chain)
        .output()
        .expect("openssl");
    let subject = String::from_utf8_lossy(&subject.stdout).to_string();
    assert!(subject.contains("CN = Bob Ng, emailAddress = hal@corp.example, O = Corp"), "{subject}");

    // A second request, rejected: the device is told why.
    let second = device.enroll("wifi").expect("enroll");
    enrollment_reaches(&device, &second.request_id, "queued").await;
    world
        .agent()
        .control(&ControlRequest::CaReject {
            request_id: second.request_id.clone(),
            reason: Some("one Wi-Fi certificate per device".into()),
        })
        .await
        .expect("reject");
    let rejected = enrollment_reaches(&device, &second.request_id, "rejected").await;
    assert_eq!(rejected.message.as_deref(), Some("one Wi-Fi certificate per device"));
    running.halt().await;
}

/// The same enrollment against an EST server (RFC 7030, the test server of test-support):
/// the agent authenticates with HTTP Basic, sends the request as `application/pkcs10`,
/// takes the certificate from the certs-only answer and the chain from `cacerts`. A server
/// that holds the request (`202`, `Retry-After`) is asked again; one that issues for
/// another key is refused, and the device is told so.
#[tokio::test]
async fn an_enterprise_certificate_is_enrolled_over_est() {
    let est = noc_test_support::TestEst::start("ves-agent", "est-secret").await.expect("EST server");
    let extra = format!(
        "[[ca.profiles]]\nname = \"vpn\"\nrequire_approval = false\n[ca.profiles.authority]\nkind = \"est\"\n\
         url = \"{}\"\nca_file = \"{}\"\nusername = \"ves-agent\"\npassword = \"est-secret\"\n",
        est.url(),
        est.cert_path.display()
    );
    let world = World::start(|_| {}, Options { extra, ..Options::default() }).await;
    let device = world.user_with_device("ida@corp.example", "+15550112").await;
    let running = run_device(&device, fast_device(None));

    // Held once (202, Retry-After: 1), then issued when asked again.
    est.set_mode(noc_test_support::EstMode::Pending);
    let first = device.enroll("vpn").expect("enroll");
    enrollment_reaches(&device, &first.request_id, "approved").await;
    eventually(T, "the EST server to hold the request", || async {
        est.requests().iter().any(|r| r.path.ends_with("/simpleenroll")).then_some(())
    })
    .await;
    est.set_mode(noc_test_support::EstMode::Issue);
    enrollment_reaches(&device, &first.request_id, "issued").await;
    let enrolls: Vec<_> = est.requests().into_iter().filter(|r| r.path == "/.well-known/est/simpleenroll").collect();
    assert!(enrolls.len() >= 2, "asked again after Retry-After: {enrolls:?}");
    for r in &enrolls {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/pkcs10"));
        assert!(r.header("authorization").is_some_and(|a| a.starts_with("Basic ")));
    }
    assert!(est.requests().iter().any(|r| r.method == "GET" && r.path == "/.well-known/est/cacerts"));
    let (chain, _) = noc_device::enroll::certificate_files(&device.dir, "vpn");
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&est.ca_path)
        .arg(&chain)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&chain).expect("chain");
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2, "the certificate and the CA from cacerts");

    // A CA that issues for another key: refused by the agent.
    est.set_mode(noc_test_support::EstMode::OtherKey);
    let second = device.enroll("vpn").expect("enroll");
    let failed = enrollment_reaches(&device, &second.request_id, "failed").await;
    assert!(failed.message.as_deref().is_some_and(|m| m.contains("another key")), "{failed:?}");
    running.halt().await;
}

/// Replaces the device's client certificate and key with new ones from `ca` (for the same
/// device and user).
fn replace_certificate(device: &noc_device::Device, ca: &noc_ca::DeviceCa) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let cert = ca.issue(&csr, device.state.user_id, device.state.device_id, now).expect("ca").expect("issued");
    std::fs::write(device.dir.join(noc_device::state::CLIENT_CERT_FILE), cert.pem).expect("cert");
    std::fs::write(device.dir.join(noc_device::state::CLIENT_KEY_FILE), key.serialize_pem()).expect("key");
}

/// The real device client with a certificate the relay will not take falls back to its
/// credential, whichever way the relay says no: CLOSE `certificate_refused` (a certificate
/// of the relay's CA that is not the device's current one) or a TLS alert (another CA's).
#[tokio::test]
async fn a_device_whose_certificate_is_refused_falls_back_to_its_credential() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("fay@corp.example", "+15550109").await;
    let ca_dir = world.relay().config.data_dir.join("device-ca");
    let read = |name: &str| std::fs::read_to_string(ca_dir.join(name)).expect("device CA file");
    let relay_ca = noc_ca::DeviceCa::from_pem(&read("ca.pem"), &read("ca-key.pem")).expect("the relay's CA");
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let (foreign_ca, _) = noc_ca::DeviceCa::generate("another CA", now).expect("ca");
    for (round, ca) in [&relay_ca, &foreign_ca].into_iter().enumerate() {
        replace_certificate(&device, ca);
        let running = run_device(&device, fast_device(None));
        let unique = format!("17000003{round}.M1P1.corp");
        world.drop_mail("fay@corp.example", &unique, "still here", "with the credential");
        wait_inbox(&device, round + 1).await;
        running.halt().await;
    }
    assert_eq!(noc_device::Stats::get(&device.stats.certificate_logins), 0);
    assert_eq!(noc_device::Stats::get(&device.stats.connections), 2);
    let relay = world.relay();
    assert_eq!(relay.metric("noc_auth_failures_total", &[("kind", "device"), ("reason", "certificate_refused")]), 1.0);
    // Counted after the alert went out: the device may have moved on before the count.
    eventually(T, "the refused TLS handshake to be counted", || async {
        (relay.metric("noc_connections_rejected_total", &[("reason", "client_certificate")]) == 1.0).then_some(())
    })
    .await;
}

/// Runs the device with `clock` until it has renewed its certificate `renewals` times in
/// all, then stops it.
async fn run_until_renewed(device: &std::sync::Arc<noc_device::Device>, clock: noc_device::Clock, renewals: u64) {
    let running = run_device(device, DeviceRunOptions { clock, ..fast_device(None) });
    eventually(T, "the certificate to be renewed", || async {
        (noc_device::Stats::get(&device.stats.certificate_renewals) >= renewals).then_some(())
    })
    .await;
    running.halt().await;
}

/// Renewal (seed 001), with a clock the test sets: 340 days on, less than the 30 days of
/// `renew_before` are left, so on its next session the device makes a new key, sends
/// CERT_RENEW and stores what the relay issued; the relay accepts only the new
/// certificate from then on. 366 days on, the certificate has expired: the device does not
/// present it, logs in with its credential, and renews.
#[tokio::test]
async fn a_device_renews_its_certificate_before_it_expires_and_after() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("gus@corp.example", "+15550110").await;
    let old = device.state.client_certificate(&device.dir).expect("read").expect("a certificate");
    let read = |name: &str| std::fs::read_to_string(device.dir.join(name)).expect("state file");
    let (old_cert, old_key) = (read("client-cert.pem"), read("client-key.pem"));
    let now = noc_protocol::clock::unix_ms_i64() / 1000;

    // Today nothing is due: a session by certificate, no renewal.
    let running = run_device(&device, fast_device(None));
    world.drop_mail("gus@corp.example", "1700000400.M1P1.corp", "today", "nothing to renew");
    wait_inbox(&device, 1).await;
    running.halt().await;
    assert_eq!(noc_device::Stats::get(&device.stats.certificate_renewals), 0);
    assert_eq!(noc_device::Stats::get(&device.stats.certificate_logins), 1);

    run_until_renewed(&device, noc_device::Clock::from_fn(move || now + 340 * 86_400), 1).await;
    let new = device.state.client_certificate(&device.dir).expect("read").expect("a certificate");
    assert_ne!(new.serial, old.serial);
    assert!(new.not_after >= old.not_after);
    assert_ne!(read("client-key.pem"), old_key, "a new key");
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(device.dir.join("management-root.pem"))
        .arg(device.dir.join("client-cert.pem"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The relay takes the new certificate and refuses the one it replaced.
    let relay = world.relay();
    let mut replaced = noc_test_support::FakeDevice::connect_with_certificate(
        relay.device_addr(),
        &relay.cert_path(),
        &old_cert,
        &old_key,
    )
    .await
    .expect("connect");
    match replaced.login_certificate(device.state.device_id).await {
        noc_test_support::Recv::Frame(Frame::Close { code, .. }) => {
            assert_eq!(code, noc_protocol::CloseCode::CertificateRefused)
        }
        other => panic!("expected CLOSE certificate_refused, got {other:?}"),
    }
    let running = run_device(&device, fast_device(None));
    world.drop_mail("gus@corp.example", "1700000401.M1P1.corp", "renewed", "by the new certificate");
    wait_inbox(&device, 2).await;
    running.halt().await;
    assert_eq!(noc_device::Stats::get(&device.stats.certificate_logins), 3, "the renewal's session and this one");

    // Past the expiry the credential carries the session that renews.
    run_until_renewed(&device, noc_device::Clock::from_fn(move || now + 366 * 86_400), 2).await;
    assert_eq!(noc_device::Stats::get(&device.stats.certificate_logins), 3, "not presented once expired");
    let audit = relay.admin().await.audit(50).await.expect("audit");
    let issued = audit.iter().filter(|e| e.action == "device.certificate_issued").count();
    assert_eq!(issued, 3, "activation and two renewals, audited");
}

/// The portal's "calendar days on my devices" (white paper §3.7.3): a calendar file whose
/// entries all start beyond the window waits (counted as deferred) while one inside it is
/// pushed; widening the window on the settings page pushes the waiting one at once.
#[tokio::test]
async fn calendar_entries_beyond_the_days_ahead_wait_until_the_window_reaches_them() {
    let world = World::start(|_| {}, Options::default()).await;
    let device = world.user_with_device("omar@corp.example", "+15550110").await;
    let running = run_device(&device, fast_device(None));
    let dir = world.config.mail.calendar_root.clone().expect("calendar root").join("omar@corp.example");
    std::fs::create_dir_all(&dir).expect("calendar dir");
    let in_days = |days: i64, summary: &str| {
        let today = jiff::tz::TimeZone::UTC.to_datetime(jiff::Timestamp::now()).date();
        let day = today.checked_add(jiff::Span::new().days(days)).expect("date");
        format!(
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:{summary}\r\nSUMMARY:{summary}\r\nDTSTART;VALUE=DATE:{}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            day.strftime("%Y%m%d")
        )
    };
    let before = world.stats_now().await;
    // The default window is 30 days: the trip in 60 waits, the review in 3 goes.
    for (name, body) in [("trip.ics", in_days(60, "Trip")), ("review.ics", in_days(3, "Review"))] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
    }
    let got = wait_inbox(&device, 1).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("SUMMARY:Review"));
    world.wait_status("the trip deferred", |s| s.stats.items_deferred > before.items_deferred).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox(&device).len(), 1, "nothing beyond the window");
    // The review moved out of the window: the device has it, so the new version goes at
    // once (it replaces the old one rather than leaving it at the old date).
    let moved = in_days(200, "Review");
    let tmp = dir.join(".review.ics.tmp");
    std::fs::write(&tmp, &moved).expect("write");
    std::fs::rename(&tmp, dir.join("review.ics")).expect("rename into place");
    eventually(T, "the moved review on the device", || async {
        let items = device.inbox().expect("inbox");
        items.iter().any(|r| r.body == moved.as_bytes()).then_some(())
    })
    .await;

    // 90 days on the settings page: the agent learns it and the trip goes.
    let relay = world.relay();
    let mut web = noc_test_support::WebClient::new(relay.node.http_addr, &relay.cert_path());
    assert_eq!(web.sign_in("omar@corp.example", USER_PW, false).await.status, 303);
    let page = web.get("/settings").await;
    assert!(page.body.contains(r#"name="calendar_days_ahead" type="number" min="1" max="365" required value="30""#));
    let csrf = page.hidden("csrf").expect("settings form");
    let form = |days: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("first_name", "Omar".to_string()),
            ("last_name", "Haddad".to_string()),
            ("time_zone", "UTC".to_string()),
            ("constant_sync", "1".to_string()),
            ("calendar_days_ahead", days.to_string()),
        ]
    };
    for bad in ["0", "366", "a week"] {
        let fields = form(bad);
        let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = web.post("/settings", &refs).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
        assert!(refused.body.contains("must be a number from 1 to 365"), "{}", refused.body);
    }
    let fields = form("90");
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(web.post("/settings", &refs).await.status, 303);
    eventually(T, "the trip on the device", || async {
        let items = device.inbox().expect("inbox");
        items.iter().any(|r| String::from_utf8_lossy(&r.body).contains("SUMMARY:Trip")).then_some(())
    })
    .await;
    running.halt().await;
}
