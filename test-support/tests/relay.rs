//! End-to-end tests of a single relay node over real TLS sockets, with the fake VES and
//! fake devices speaking the wire protocols of docs/protocol.md.

use std::time::{Duration, Instant};

use bytes::Bytes;
use noc_protocol::device::{ForwardKind, Frame};
use noc_protocol::rts::{
    Command, DataRequest, DeletedUser, DeviceActivationResponse, FrameStatus, OutboundFrame, PasswordReset,
    StartupReportResponse, StartupStatus, StartupUser, UserList,
};
use noc_protocol::{CloseCode, DeviceId, UndeliverableReason};
use noc_test_support::scenario::{
    await_online, devices_online, expect_close, online_device, relay_and_ves, relays_both_ways, user_with_device,
};
use noc_test_support::{Recv, TestRelay};
use serde_json::json;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn full_flow_license_to_frames_both_ways() {
    let (relay, ves, mut channel) = relay_and_ves(|c| c.rts.heartbeat_interval_seconds = 1).await;

    // The opening sequence of white paper §4.5: Session, ActivateUsers, HB, FilterRules, ConstantSync.
    let opening: Vec<Command> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(channel.next(T).await.expect("opening command"));
        }
        v
    };
    assert!(matches!(opening[0], Command::Session { resumed: false, heartbeat_interval_seconds: 1, .. }));
    assert!(matches!(&opening[1], Command::ActivateUsers { complete: true, users } if users.is_empty()));
    assert!(matches!(opening[2], Command::Heartbeat { seq: 1, next_in_seconds: 1, .. }));
    assert!(matches!(opening[3], Command::FilterRules { .. }));
    assert!(matches!(opening[4], Command::ConstantSync { .. }));

    // Heartbeats keep coming on time (1 s interval; generous tolerance for a busy machine).
    let hb_start = Instant::now();
    let hb = channel.wait_for(T, |c| matches!(c, Command::Heartbeat { .. })).await.expect("second HB");
    assert!(matches!(hb, Command::Heartbeat { seq: 2, .. }), "{hb:?}");
    assert!(hb_start.elapsed() < Duration::from_secs(3), "HB late: {:?}", hb_start.elapsed());

    // Provisioning → account activation → the VES is told to serve the user.
    let act = user_with_device(&ves, "bob@example.com", "+15550100").await;
    let activated = channel
        .wait_for(T, |c| matches!(c, Command::ActivateUsers { complete: false, .. }))
        .await
        .expect("ActivateUsers for the new user");
    let Command::ActivateUsers { users, .. } = activated else { unreachable!() };
    assert_eq!(users[0].email, "bob@example.com");
    assert_eq!(users[0].msisdn.as_deref(), Some("+15550100"));
    channel
        .wait_for(T, |c| matches!(c, Command::DeviceActivated { device_id, .. } if *device_id == act.device_id))
        .await
        .expect("DeviceActivated");
    assert_eq!(act.full_name, "Test User");
    assert_eq!(act.service_type, "constant_sync");
    assert_eq!(act.device_port, relay.device_addr().port());

    let report: StartupReportResponse = ves
        .data(&DataRequest::StartupReport {
            users: vec![StartupUser { user_id: act.user_id, status: StartupStatus::Ready, detail: None }],
        })
        .await
        .expect("StartupReport");
    assert_eq!(report.ready, 1);

    // The device connects and both sides exchange frames with end-to-end acks.
    let mut device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;

    device
        .send(Frame::Forward { kind: ForwardKind::WakeUp, frame_id: 1, payload: Bytes::from_static(b"wake") })
        .await
        .expect("send");
    let got = channel.wait_for(T, |c| matches!(c, Command::DeviceFrame { .. })).await.expect("DeviceFrame");
    let Command::DeviceFrame { device_id, user_id, frame_id, kind, payload } = got else { unreachable!() };
    assert_eq!((device_id, user_id, frame_id, kind), (act.device_id, act.user_id, 1, ForwardKind::WakeUp));
    assert_eq!(noc_protocol::rts::decode_payload(&payload).expect("base64"), b"wake");
    let acks = ves.ack(act.device_id, 1).await;
    assert_eq!(acks.forwarded, 1);
    assert!(matches!(device.recv_data(T).await, Recv::Frame(Frame::Ack { frame_id: 1 })));

    let resp = ves.send_frame(act.device_id, 77, b"\x00\x01opaque-ciphertext").await;
    assert_eq!(resp.results[0].status, FrameStatus::Accepted);
    match device.recv_data(T).await {
        Recv::Frame(Frame::Forward { kind, frame_id, payload }) => {
            assert_eq!((kind, frame_id), (ForwardKind::Data, 77));
            assert_eq!(&payload[..], b"\x00\x01opaque-ciphertext");
        }
        other => panic!("expected FORWARD, got {other:?}"),
    }
    device.send(Frame::Ack { frame_id: 77 }).await.expect("ack");
    channel
        .wait_for(T, |c| matches!(c, Command::Ack { frame_id: 77, device_id } if *device_id == act.device_id))
        .await
        .expect("Ack on the command channel");

    assert_eq!(relay.metric("noc_frames_relayed_total", &[("direction", "device_to_ves")]), 1.0);
    assert_eq!(relay.metric("noc_frames_relayed_total", &[("direction", "ves_to_device")]), 1.0);
    assert_eq!(relay.metric("noc_sessions", &[("kind", "device")]), 1.0);
    assert_eq!(relay.metric("noc_sessions", &[("kind", "ves")]), 1.0);

    // ListUsers shows the user with its device.
    let list: UserList = ves.data(&DataRequest::ListUsers {}).await.expect("ListUsers");
    assert_eq!(list.users.len(), 1);
    assert_eq!((list.users[0].status.as_str(), list.users[0].devices, list.users[0].ready), ("active", 1, true));
}

#[tokio::test]
async fn undeliverable_reasons_for_offline_unknown_and_foreign_devices() {
    let (relay, ves, mut channel) = relay_and_ves(|c| c.rts.heartbeat_interval_seconds = 1).await;
    let act = user_with_device(&ves, "off@example.com", "+15550101").await;
    channel.wait_for(T, |c| matches!(c, Command::DeviceActivated { .. })).await.expect("activated");

    // Known device, not connected: peer_offline, at once.
    let resp = ves.send_frame(act.device_id, 1, b"x").await;
    assert_eq!(resp.results[0].status, FrameStatus::Undeliverable);
    assert_eq!(resp.results[0].reason, Some(UndeliverableReason::PeerOffline));

    // A device id nobody activated: unknown_peer.
    let resp = ves.send_frame(DeviceId::random(), 2, b"x").await;
    assert_eq!(resp.results[0].reason, Some(UndeliverableReason::UnknownPeer));

    // A second enterprise on the same relay cannot reach the first one's device.
    relay.create_license("other", "other-license-pw", 5).await;
    let mut intruder = relay.ves();
    intruder.license("other", "other-license-pw").await.expect("license");
    let _intruder_channel = intruder.open().await.expect("channel");
    let mut device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;
    let resp = intruder.send_frame(act.device_id, 3, b"x").await;
    assert_eq!(resp.results[0].reason, Some(UndeliverableReason::NotOwned));
    assert!(matches!(device.recv_data(Duration::from_millis(300)).await, Recv::Timeout), "nothing leaked");

    // Device → VES while the VES is gone: undeliverable to the device, at once. A vanished
    // command channel is noticed at the relay's next write to it (a heartbeat at the
    // latest), so give it two heartbeat intervals.
    drop(channel);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    device
        .send(Frame::Forward { kind: ForwardKind::Data, frame_id: 9, payload: Bytes::from_static(b"y") })
        .await
        .expect("send");
    match device.recv_data(T).await {
        Recv::Frame(Frame::Undeliverable { frame_id: 9, reason }) => {
            assert_eq!(reason, UndeliverableReason::PeerOffline)
        }
        other => panic!("expected UNDELIVERABLE, got {other:?}"),
    }
    assert!(relay.metric("noc_frames_undeliverable_total", &[("reason", "peer_offline")]) >= 2.0);
}

#[tokio::test]
async fn rts_authentication_failures_are_clear_and_harmless() {
    let (relay, mut ves, _channel) = relay_and_ves(|c| c.rts.reply_time_seconds = 1).await;

    // Wrong Key for fresh parameters.
    let params = ves.connect_params().await.expect("params");
    let mut bad = params.clone();
    bad.key = "00".repeat(16);
    let err = ves.attach(bad, ves.guid.clone(), None).await.err().expect("wrong key refused");
    assert_eq!((err.status, err.code.as_str()), (401, "invalid_session"));
    // The parameters were not consumed by the failed attempt... but wrong KeyId is refused too.
    let mut unknown = params.clone();
    unknown.event_url = unknown.event_url.replace(&params.key_id, &"ff".repeat(16));
    let err = ves.attach(unknown, ves.guid.clone(), None).await.err().expect("unknown KeyId refused");
    assert_eq!(err.status, 401);

    // Parameters not used within ReplyTime expire.
    let stale = ves.connect_params().await.expect("params");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = ves.attach(stale, ves.guid.clone(), None).await.err().expect("expired refused");
    assert_eq!(err.code, "invalid_session");

    // An unknown GUID without a license token, and a bad license token.
    let fresh = ves.connect_params().await.expect("params");
    let err = ves.attach(fresh, noc_test_support::random_guid(), None).await.err().expect("bad GUID refused");
    assert_eq!((err.status, err.code.as_str()), (401, "invalid_credentials"));
    let fresh = ves.connect_params().await.expect("params");
    let err = ves
        .attach(fresh, noc_test_support::random_guid(), Some("not-a-token".into()))
        .await
        .err()
        .expect("bad token refused");
    assert_eq!(err.status, 401);

    // Data channel with a wrong key.
    let (key_id, _) = ves.session.clone().expect("session");
    let (status, body) = ves
        .post_raw(
            "/rts/v1/data",
            &[("X-Rts-Key-Id", &key_id), ("X-Rts-Key", "nope")],
            b"{\"Type\":\"ListUsers\"}".to_vec(),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_session"));

    // Wrong license password.
    let err = ves.license("acme", "wrong").await.expect_err("refused");
    assert_eq!((err.status, err.code.as_str()), (401, "invalid_credentials"));
    assert!(relay.metric("noc_auth_failures_total", &[("kind", "license")]) >= 1.0);
    assert!(relay.metric("noc_auth_failures_total", &[("kind", "ves")]) >= 4.0);

    // Malformed JSON and oversized bodies get clear errors.
    let (status, body) =
        ves.post_raw("/rts/v1/license", &[("content-type", "application/json")], b"{nope".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"));
    let big = vec![b' '; 2 * 1024 * 1024];
    let (status, body) = ves.post_raw("/rts/v1/license", &[], big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"));

    // A malformed field is a bad request, not a failed authentication: the auth-failure
    // counters (what a dashboard watches for password guessing) do not move.
    let device_failures = relay.metric("noc_auth_failures_total", &[("kind", "device")]);
    let (status, body) = ves
        .post_raw("/device/v1/activate", &[], br#"{"Msisdn":"not-a-number","Password":"whatever-pw"}"#.to_vec())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    assert_eq!(relay.metric("noc_auth_failures_total", &[("kind", "device")]), device_failures);

    // The node still serves: the VES's session works.
    let list: UserList = ves.data(&DataRequest::ListUsers {}).await.expect("still serving");
    assert!(list.users.is_empty());
}

#[tokio::test]
async fn seats_are_enforced() {
    let relay = TestRelay::start();
    relay.create_license("small", "small-license-pw", 2).await;
    let mut ves = relay.ves();
    ves.license("small", "small-license-pw").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    let first = ves.provision("a@example.com", None).await.expect("first");
    assert_eq!(first.password.as_deref().map(str::len), Some(12), "generated password returned once");
    ves.provision("b@example.com", Some("b-password-1")).await.expect("second");
    let err = ves.provision("c@example.com", None).await.expect_err("seats full");
    assert_eq!((err.status, err.code.as_str()), (409, "seats_full"));
    assert!(err.message.contains("maximum 2"), "{}", err.message);
    let deleted: DeletedUser =
        ves.data(&DataRequest::DeleteUser { email: "a@example.com".into() }).await.expect("delete");
    assert_eq!(deleted.user_id, first.user_id);
    ves.provision("c@example.com", None).await.expect("seat freed by delete");
}

#[tokio::test]
async fn device_handshake_and_auth_failures() {
    let (relay, ves, mut channel) = relay_and_ves(|c| c.device.handshake_timeout_seconds = 1).await;
    let act = user_with_device(&ves, "dev@example.com", "+15550102").await;

    // Wrong credential.
    let mut d = relay.device_connection().await;
    match d.login(act.device_id, &"00".repeat(32)).await {
        Recv::Frame(Frame::Close { code, .. }) => assert_eq!(code, CloseCode::AuthFailed),
        other => panic!("expected CLOSE auth_failed, got {other:?}"),
    }
    assert!(matches!(d.recv(T).await, Recv::Closed));

    // Unknown protocol version: a clear error, not a hang.
    let mut d = relay.device_connection().await;
    d.send(Frame::Hello { versions: vec![99] }).await.expect("send");
    let msg = expect_close(&mut d, CloseCode::UnsupportedVersion).await;
    assert!(msg.ends_with("this relay speaks [1, 2, 3]"), "{msg}");

    // Not our protocol at all (an HTTP request on the device port).
    let mut d = relay.device_connection().await;
    d.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("send");
    expect_close(&mut d, CloseCode::FrameTooLarge).await;

    // A well-sized frame that is not a hello.
    let mut d = relay.device_connection().await;
    d.send_raw(&[0, 0, 0, 5, 0x01, b'X', b'Y', b'Z', b'W']).await.expect("send");
    expect_close(&mut d, CloseCode::MalformedFrame).await;

    // Silence: the handshake deadline closes the connection with a reason.
    let mut d = relay.device_connection().await;
    let started = Instant::now();
    expect_close(&mut d, CloseCode::HandshakeTimeout).await;
    assert!(started.elapsed() < Duration::from_secs(4));

    // Password authentication (white paper §7.2.2) works and a wrong password does not.
    let mut d = relay.device_connection().await;
    match d.login_password(act.device_id, "+15550102", "wrong-password").await {
        Recv::Frame(Frame::Close { code, .. }) => assert_eq!(code, CloseCode::AuthFailed),
        other => panic!("expected CLOSE, got {other:?}"),
    }
    let mut d = relay.device_connection().await;
    assert!(matches!(
        d.login_password(act.device_id, "+15550102", "user-password-1").await,
        Recv::Frame(Frame::AuthOk { .. })
    ));
    await_online(&mut channel, act.device_id).await;
    assert!(relay.metric("noc_connections_rejected_total", &[]) >= 5.0);
    assert!(relay.metric("noc_auth_failures_total", &[("kind", "device")]) >= 2.0);

    // After all that, the authenticated device still relays.
    d.send(Frame::Forward { kind: ForwardKind::Data, frame_id: 5, payload: Bytes::from_static(b"ok") })
        .await
        .expect("send");
    channel.wait_for(T, |c| matches!(c, Command::DeviceFrame { frame_id: 5, .. })).await.expect("frame relayed");
}

#[tokio::test]
async fn oversized_and_out_of_state_frames_close_only_that_device() {
    let (relay, ves, mut channel) = relay_and_ves(|c| c.device.max_frame_bytes = 4096).await;
    let a = user_with_device(&ves, "a@example.com", "+15550103").await;
    let b = user_with_device(&ves, "b@example.com", "+15550104").await;
    let mut da = online_device(&relay, &a).await;
    let mut db = online_device(&relay, &b).await;
    await_online(&mut channel, a.device_id).await;
    await_online(&mut channel, b.device_id).await;

    // A frame over the limit: refused by its length prefix, connection closed with a reason.
    da.send(Frame::Forward { kind: ForwardKind::Data, frame_id: 1, payload: Bytes::from(vec![0u8; 8192]) })
        .await
        .expect("send");
    let msg = expect_close(&mut da, CloseCode::FrameTooLarge).await;
    assert!(msg.contains("4096"), "{msg}");

    // A HELLO after authentication is a protocol violation.
    let mut dc = online_device(&relay, &a).await;
    dc.send(Frame::Hello { versions: vec![1] }).await.expect("send");
    expect_close(&mut dc, CloseCode::ProtocolViolation).await;

    // VES → device frames over the device limit are refused per frame, others still go.
    let resp = ves
        .send_frames(vec![
            OutboundFrame {
                device_id: b.device_id,
                frame_id: 1,
                kind: ForwardKind::Data,
                payload: noc_protocol::rts::encode_payload(&vec![1u8; 8192]),
            },
            OutboundFrame {
                device_id: b.device_id,
                frame_id: 2,
                kind: ForwardKind::Data,
                payload: noc_protocol::rts::encode_payload(b"fits"),
            },
        ])
        .await;
    assert_eq!(resp.results[0].reason, Some(UndeliverableReason::FrameTooLarge));
    assert_eq!(resp.results[1].status, FrameStatus::Accepted);
    assert!(matches!(db.recv_data(T).await, Recv::Frame(Frame::Forward { frame_id: 2, .. })));
    // The size is checked first: an oversized frame for a device nobody knows is
    // `frame_too_large`, not `unknown_peer` (protocol.md §9 note 21).
    let resp = ves.try_send_frame(DeviceId::random(), 3, &vec![1u8; 8192]).await.expect("frames");
    assert_eq!(resp.results[0].reason, Some(UndeliverableReason::FrameTooLarge));

    // Bad base64 refuses the whole request with a message naming the frame.
    let err = ves
        .data::<serde_json::Value>(&DataRequest::Frames {
            frames: vec![OutboundFrame {
                device_id: b.device_id,
                frame_id: 3,
                kind: ForwardKind::Data,
                payload: "***".into(),
            }],
        })
        .await
        .expect_err("refused");
    assert_eq!(err.status, 400);
    assert!(err.message.contains("Frames[0]"), "{}", err.message);
}

#[tokio::test]
async fn password_reset_revokes_devices_at_once() {
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    let act = user_with_device(&ves, "lost@example.com", "+15550105").await;
    let mut device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;

    let reset: PasswordReset = ves
        .data(&DataRequest::ResetPassword { email: "lost@example.com".into(), password: None })
        .await
        .expect("reset");
    assert_eq!(reset.revoked_devices, 1);
    assert!(reset.password.is_some());
    expect_close(&mut device, CloseCode::Revoked).await;
    channel
        .wait_for(T, |c| matches!(c, Command::DeviceRevoked { device_id, .. } if *device_id == act.device_id))
        .await
        .expect("DeviceRevoked");

    // The old credential no longer works, and the VES can no longer address the device.
    let mut again = relay.device_connection().await;
    match again.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code, .. }) => assert_eq!(code, CloseCode::Revoked),
        other => panic!("expected CLOSE revoked, got {other:?}"),
    }
    let resp = ves.send_frame(act.device_id, 1, b"x").await;
    assert_eq!(resp.results[0].reason, Some(UndeliverableReason::UnknownPeer));

    // Deleting a user closes its devices too.
    let fresh: DeviceActivationResponse = ves
        .post_json(
            "/device/v1/activate",
            &json!({"Msisdn": "+15550105", "Password": reset.password.clone().expect("generated")}),
        )
        .await
        .expect("re-activation with the new password");
    let mut device = online_device(&relay, &fresh).await;
    let _: DeletedUser = ves.data(&DataRequest::DeleteUser { email: "lost@example.com".into() }).await.expect("delete");
    expect_close(&mut device, CloseCode::Revoked).await;
    channel
        .wait_for(T, |c| matches!(c, Command::DeactivateUsers { user_ids } if user_ids.contains(&act.user_id)))
        .await
        .expect("DeactivateUsers");
}

#[tokio::test]
async fn suspending_a_license_ends_its_live_sessions_and_resuming_lets_them_back() {
    let (relay, ves, mut channel) = relay_and_ves(|c| c.accounts.license_check_interval_seconds = 1).await;
    let act = user_with_device(&ves, "sus@example.com", "+15550130").await;
    let mut device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;

    // Suspended from another process's point of view: straight in the store, as
    // `noc admin license suspend` does; the node notices within the check interval.
    relay.admin().await.set_suspended("acme", true).await.expect("suspend");
    expect_close(&mut device, CloseCode::AccountSuspended).await;
    channel
        .wait_for(T, |c| matches!(c, Command::Close { code: CloseCode::AccountSuspended, .. }))
        .await
        .expect("the command channel is closed with account_suspended");
    assert_eq!(relay.metric("noc_sessions", &[("kind", "device")]), 0.0);
    let mut again = relay.device_connection().await;
    match again.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code, .. }) => assert_eq!(code, CloseCode::AccountSuspended),
        other => panic!("expected CLOSE account_suspended, got {other:?}"),
    }
    let mut ves = ves;
    let refused = ves.open().await.err().expect("a suspended license opens no command channel");
    assert_eq!(refused.status, 403, "{refused}");

    // Lifted: the same VES and device come back without anything else changing.
    relay.admin().await.set_suspended("acme", false).await.expect("resume");
    let mut channel = ves.open().await.expect("command channel after the resume");
    let _device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;
}

/// `noc_licenses_without_ves` counts usable licenses whose enterprise servers are all
/// disconnected: 0 while the VES is attached, 1 once its session ended, 0 again when it
/// is back, and a suspended license does not count (its VES is refused anyway).
#[tokio::test]
async fn licenses_without_a_connected_ves_are_counted() {
    let (relay, mut ves, channel) = relay_and_ves(|c| {
        c.accounts.license_check_interval_seconds = 1;
        // A vanished command channel is noticed at the next heartbeat.
        c.rts.heartbeat_interval_seconds = 1;
        c.rts.reply_time_seconds = 1;
    })
    .await;
    let count = || relay.metric("noc_licenses_without_ves", &[]);
    let settles_at = |want: f64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while count() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "noc_licenses_without_ves stayed {} (want {want})",
                count()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Two checks pass while the VES is attached: it is never counted.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(count(), 0.0);

    drop(channel);
    settles_at(1.0).await;
    let channel = ves.open().await.expect("the VES comes back");
    settles_at(0.0).await;
    drop(channel);
    settles_at(1.0).await;
    relay.admin().await.set_suspended("acme", true).await.expect("suspend");
    settles_at(0.0).await;
}

/// Activation with a certificate request (seed 001): the device's key stays with it; the
/// answer carries a client certificate that openssl verifies against the management root
/// for client authentication. A bad request is refused before any device is created.
#[tokio::test]
async fn a_device_activating_with_a_certificate_request_gets_a_client_certificate() {
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    ves.provision("cert@example.com", Some(noc_test_support::scenario::USER_PASSWORD)).await.expect("provision");
    let _: noc_protocol::rts::AccountActivationResponse = ves
        .post_json(
            "/account/v1/activate",
            &json!({"Login": "cert@example.com", "Password": noc_test_support::scenario::USER_PASSWORD,
                    "Msisdn": "+15550140", "TimeZone": "UTC"}),
        )
        .await
        .expect("account activation");
    let activate = |csr: String| json!({"Msisdn": "+15550140", "Password": noc_test_support::scenario::USER_PASSWORD, "DeviceName": "phone", "Csr": csr});
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");

    // Refused, with the reason, and nothing created.
    for (bad, why) in
        [("garbage".to_string(), "not a PEM PKCS#10 request"), (csr.replace("MI", "Mi"), "not a PEM PKCS#10 request")]
    {
        let refused = ves
            .post_json::<DeviceActivationResponse>("/device/v1/activate", &activate(bad))
            .await
            .expect_err("a bad request");
        assert_eq!((refused.status, refused.code.as_str()), (400, "bad_request"), "{refused}");
        assert!(refused.message.contains(why), "{refused}");
    }
    let act: DeviceActivationResponse = ves.post_json("/device/v1/activate", &activate(csr)).await.expect("activation");
    // The node's generated CA lasts ten years, and says so.
    let expiry = relay.metric("noc_device_ca_expiry_timestamp_seconds", &[]);
    let now = noc_protocol::clock::unix_ms_i64() as f64 / 1000.0;
    assert!(expiry > now + 9.9 * 365.0 * 86_400.0, "{expiry}");
    let (cert, root) =
        (act.client_certificate.clone().expect("certificate"), act.management_root.clone().expect("root"));
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("root.pem"), &root).expect("root");
    std::fs::write(dir.path().join("device.pem"), &cert).expect("cert");
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.path().join("root.pem"))
        .arg(dir.path().join("device.pem"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let subject = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(dir.path().join("device.pem"))
        .output()
        .expect("openssl");
    let subject = String::from_utf8_lossy(&subject.stdout).to_string();
    assert!(subject.contains(&act.device_id.to_string()) && subject.contains(&act.user_id.to_string()), "{subject}");
    // The serial is recorded on the device and in the audit log.
    let serial = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(dir.path().join("device.pem"))
        .output()
        .expect("openssl");
    let serial = String::from_utf8_lossy(&serial.stdout).trim().trim_start_matches("serial=").to_ascii_lowercase();
    let audit = relay.admin().await.audit(20).await.expect("audit");
    let issued = audit.iter().find(|e| e.action == "device.certificate_issued").expect("audited");
    assert_eq!(issued.subject, format!("device:{}", act.device_id));
    assert!(issued.detail.contains(&format!("serial={serial}")), "{} vs {serial}", issued.detail);
    // The certificate is the device's key's, and the device works as any other.
    let spki = |pem: &str| {
        let der: rustls_pki_types::CertificateDer<'_> =
            rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).expect("der");
        der.as_ref().windows(key.public_key_raw().len()).any(|w| w == key.public_key_raw())
    };
    assert!(spki(&cert), "issued for the requested key");
    let _device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;
    // Exactly one device was created: the refused tries left nothing.
    let list: noc_protocol::rts::DeviceList = ves.data(&DataRequest::ListDevices {}).await.expect("devices");
    assert_eq!(list.devices.len(), 1, "{:?}", list.devices);
}

/// A device CA that cannot sign (it expired): activation with a request fails with 500,
/// and the device it created is revoked rather than left without its certificate.
#[tokio::test]
async fn a_certificate_that_cannot_be_issued_leaves_no_device() {
    let dir = tempfile::tempdir().expect("tmp");
    let eleven_years_ago = noc_protocol::clock::unix_ms_i64() / 1000 - 11 * 365 * 86_400;
    let (ca, key) = noc_ca::DeviceCa::generate("expired CA", eleven_years_ago).expect("ca");
    std::fs::write(dir.path().join("ca.pem"), ca.root_pem()).expect("cert");
    std::fs::write(dir.path().join("ca.key"), key).expect("key");
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let (_relay, ves, _channel) = relay_and_ves(move |c| {
        c.device_ca.cert_path = Some(cert);
        c.device_ca.key_path = Some(key);
    })
    .await;
    ves.provision("late@example.com", Some(noc_test_support::scenario::USER_PASSWORD)).await.expect("provision");
    let _: noc_protocol::rts::AccountActivationResponse = ves
        .post_json(
            "/account/v1/activate",
            &json!({"Login": "late@example.com", "Password": noc_test_support::scenario::USER_PASSWORD,
                    "Msisdn": "+15550141", "TimeZone": "UTC"}),
        )
        .await
        .expect("account activation");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
    let failed = ves
        .post_json::<DeviceActivationResponse>(
            "/device/v1/activate",
            &json!({"Msisdn": "+15550141", "Password": noc_test_support::scenario::USER_PASSWORD, "Csr": csr}),
        )
        .await
        .expect_err("an expired CA signs nothing");
    assert_eq!((failed.status, failed.code.as_str()), (500, "internal"), "{failed}");
    let list: noc_protocol::rts::DeviceList = ves.data(&DataRequest::ListDevices {}).await.expect("devices");
    assert!(list.devices.is_empty(), "{:?}", list.devices);
}

/// A license-id token says when it expires, registers installations until then, and a new
/// license password (`noc admin license set-password`) revokes it: a VES not yet registered
/// needs a fresh login with the new password, one already registered keeps connecting.
#[tokio::test]
async fn license_tokens_carry_their_expiry_and_a_new_password_revokes_them() {
    let relay = TestRelay::start_with(|c| c.accounts.license_token_ttl_seconds = 3600);
    relay.create_license("acme", "acme-license-pw", 10).await;
    let mut registered = relay.ves();
    let before = noc_protocol::clock::unix_ms_i64();
    let lic = registered.license("acme", "acme-license-pw").await.expect("license login");
    let after = noc_protocol::clock::unix_ms_i64();
    assert!((before + 3_600_000..=after + 3_600_000).contains(&lic.license_id_expires_at), "{lic:?}");
    drop(registered.open().await.expect("registers"));
    let mut late = relay.ves();
    late.license("acme", "acme-license-pw").await.expect("license login");

    let (_, revoked) = relay.admin().await.set_license_password("acme", "new-license-pw").await.expect("set-password");
    assert_eq!(revoked, 2);
    let refused = late.open().await.err().expect("a revoked token registers nothing");
    assert_eq!((refused.status, refused.code.as_str()), (401, "invalid_credentials"), "{refused}");
    let refused = late.license("acme", "acme-license-pw").await.expect_err("the old password is refused");
    assert_eq!(refused.status, 401);
    late.license("acme", "new-license-pw").await.expect("the new password");
    drop(late.open().await.expect("a fresh token registers"));
    drop(registered.open().await.expect("a registered installation keeps connecting"));
}

#[tokio::test]
async fn a_slow_device_does_not_delay_the_others() {
    let (relay, ves, mut channel) = relay_and_ves(|c| {
        c.device.send_queue_frames = 64;
        c.device.write_stall_timeout_seconds = 2;
    })
    .await;
    let slow = user_with_device(&ves, "slow@example.com", "+15550106").await;
    let fast = user_with_device(&ves, "fast@example.com", "+15550107").await;
    let slow_device = online_device(&relay, &slow).await;
    let mut fast_device = online_device(&relay, &fast).await;
    await_online(&mut channel, slow.device_id).await;
    await_online(&mut channel, fast.device_id).await;
    // The slow device never reads from here on.
    let _held = slow_device.into_inner();

    let payload = vec![7u8; 16 * 1024];
    let mut refused = 0;
    let mut fast_received = 0u64;
    for batch in 0..40u64 {
        let next_fast = batch;
        // 16 frames of 16 KiB to the slow device, then one to the fast device.
        let frames = (0..16)
            .map(|i| OutboundFrame {
                device_id: slow.device_id,
                frame_id: batch * 16 + i,
                kind: ForwardKind::Data,
                payload: noc_protocol::rts::encode_payload(&payload),
            })
            .collect();
        let resp = ves.send_frames(frames).await;
        refused += resp.results.iter().filter(|r| r.reason == Some(UndeliverableReason::QueueFull)).count();
        let resp = ves.send_frame(fast.device_id, next_fast, b"fast").await;
        assert_eq!(resp.results[0].status, FrameStatus::Accepted);
        // Each fast frame arrives promptly even while the slow device's queue is full.
        match fast_device.recv_data(T).await {
            Recv::Frame(Frame::Forward { frame_id, .. }) => {
                assert_eq!(frame_id, fast_received);
                fast_received += 1;
            }
            other => panic!("fast device starved: {other:?}"),
        }
    }
    assert_eq!(fast_received, 40);
    assert!(refused > 0, "the slow device's bounded queue must have refused frames");
    assert!(relay.metric("noc_frames_dropped_total", &[("reason", "queue_full")]) >= refused as f64);

    // The stalled device is disconnected after the write-stall timeout; frames that were
    // accepted but never written are reported back to the VES.
    let (mut offline, mut bounced) = (false, 0);
    while !offline {
        match channel.next(Duration::from_secs(10)).await.expect("slow device dropped") {
            Command::DevicePresence { device_id, online: false, .. } if device_id == slow.device_id => offline = true,
            Command::Undeliverable { device_id, reason: UndeliverableReason::PeerDisconnected, .. }
                if device_id == slow.device_id =>
            {
                bounced += 1
            }
            _ => {}
        }
    }
    assert!(bounced > 0, "accepted-but-unwritten frames are bounced to the VES");
    assert_eq!(relay.metric("noc_sessions_closed_total", &[("kind", "device"), ("code", "slow_consumer")]), 1.0);
}

/// The node's two workers share the device and public listeners, and an authenticated
/// device's session moves to the worker that serves its VES's command channel: with
/// devices accepted in turn by both workers, some move, and every one still relays both
/// ways.
#[tokio::test]
async fn device_sessions_move_to_their_ves_worker_and_relay_both_ways() {
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    let mut devices = devices_online(&ves, &mut channel, &relay, ("worker", "+1555011"), 4).await;
    let moved = relay.metric("noc_device_sessions_moved_total", &[]);
    assert!(moved >= 1.0, "four devices accepted in turn by two workers: some move ({moved})");
    for (i, (act, device)) in devices.iter_mut().enumerate() {
        relays_both_ways(&ves, &mut channel, act.device_id, device, 100 + i as u64).await;
    }
    assert_eq!(relay.metric("noc_sessions", &[("kind", "device")]), 4.0);
}

#[tokio::test]
async fn same_device_twice_newest_wins() {
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    let act = user_with_device(&ves, "twice@example.com", "+15550108").await;
    let mut first = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;
    let mut second = online_device(&relay, &act).await;
    expect_close(&mut first, CloseCode::Replaced).await;
    assert_eq!(relay.metric("noc_sessions_replaced_total", &[("kind", "device")]), 1.0);
    let resp = ves.send_frame(act.device_id, 1, b"to the new one").await;
    assert_eq!(resp.results[0].status, FrameStatus::Accepted);
    assert!(matches!(second.recv_data(T).await, Recv::Frame(Frame::Forward { frame_id: 1, .. })));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(relay.metric("noc_sessions", &[("kind", "device")]), 1.0);
}

#[tokio::test]
async fn ves_reconnect_within_reply_time_keeps_registrations_and_a_new_session_replaces() {
    let (relay, mut ves, mut channel) = relay_and_ves(|c| c.rts.reply_time_seconds = 5).await;
    let act = user_with_device(&ves, "keep@example.com", "+15550109").await;
    let mut device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;

    // The command channel drops; the VES re-POSTs the same EventUrl within ReplyTime.
    let params = channel.params.clone();
    channel.drop_connection();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = ves.attach(params, ves.guid.clone(), None).await.expect("resume within ReplyTime");
    match resumed.next(T).await {
        Some(Command::Session { resumed: true, .. }) => {}
        other => panic!("expected resumed Session, got {other:?}"),
    }
    let users = resumed.wait_for(T, |c| matches!(c, Command::ActivateUsers { .. })).await.expect("users");
    assert!(matches!(users, Command::ActivateUsers { complete: true, users } if users.len() == 1));
    // Devices already online are announced on the new channel.
    await_online(&mut resumed, act.device_id).await;
    // Registrations kept: the device is still addressable, with no new activation.
    let resp = ves.send_frame(act.device_id, 5, b"after resume").await;
    assert_eq!(resp.results[0].status, FrameStatus::Accepted);
    assert!(matches!(device.recv_data(T).await, Recv::Frame(Frame::Forward { frame_id: 5, .. })));

    // A brand-new session for the same GUID replaces this one.
    let mut second = relay.ves();
    second.guid = ves.guid.clone();
    let mut newer = second.open().await.expect("second session");
    let closed = resumed.wait_for(T, |c| matches!(c, Command::Close { .. })).await.expect("Close");
    assert!(matches!(closed, Command::Close { code: CloseCode::Replaced, .. }));
    assert!(resumed.ended(T).await, "old command channel ends");
    assert_eq!(relay.metric("noc_sessions_replaced_total", &[("kind", "ves")]), 1.0);
    newer.wait_for(T, |c| matches!(c, Command::Heartbeat { .. })).await.expect("new session alive");
    // The old KeyId is dead.
    let err = ves.data::<UserList>(&DataRequest::ListUsers {}).await.expect_err("old session gone");
    assert_eq!(err.code, "invalid_session");
}

#[tokio::test]
async fn an_idle_device_is_dropped_after_its_timeout() {
    let (relay, ves, mut channel) = relay_and_ves(|c| {
        c.device.heartbeat_interval_seconds = 1;
        c.device.idle_timeout_seconds = 2;
    })
    .await;
    let act = user_with_device(&ves, "idle@example.com", "+15550110").await;
    let mut device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;
    // The device reads (so it sees heartbeats) but never sends anything.
    expect_close(&mut device, CloseCode::IdleTimeout).await;
    assert_eq!(relay.metric("noc_heartbeats_missed_total", &[("kind", "device")]), 1.0);
}

#[tokio::test]
async fn admin_listener_serves_health_readiness_and_metrics() {
    let relay = TestRelay::start();
    let (status, body) = relay.admin_get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = relay.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = relay.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "noc_sessions",
        "noc_frames_relayed_total",
        "noc_frames_undeliverable_total",
        "noc_auth_failures_total",
        "noc_heartbeats_missed_total",
        "noc_sessions_replaced_total",
    ] {
        assert!(body.contains(&format!("# TYPE {name} ")), "missing {name}");
    }
    // The public listener does not serve them.
    let ves = relay.ves();
    let (status, _) = ves.post_raw("/metrics", &[], Vec::new()).await;
    assert_eq!(status, 404);
}

/// `promtool check metrics` (from the `prometheus` package) accepts the exposition,
/// with traffic counted in it. The test command installs promtool.
#[tokio::test]
async fn metrics_pass_promtool() {
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    let act = user_with_device(&ves, "prom@example.com", "+15550111").await;
    let mut device = online_device(&relay, &act).await;
    await_online(&mut channel, act.device_id).await;
    ves.send_frame(act.device_id, 1, b"x").await;
    assert!(matches!(device.recv_data(T).await, Recv::Frame(Frame::Forward { .. })));
    let (_, text) = relay.admin_get("/metrics").await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: install the `prometheus` package (the test command does)");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("noc_frames_relayed_total{direction=\"ves_to_device\"} 1"));
}

/// The data channel serves many requests of one session at once (white paper §4.4:
/// "more than 20 simultaneous connections"): 25 requests are held open mid-body at the
/// same time, then all complete.
#[tokio::test]
async fn data_channel_serves_25_requests_in_flight_at_once() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    let (key_id, key) = ves.session.clone().expect("session");
    let n = 25;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for i in 0..n {
        let barrier = barrier.clone();
        let (key_id, key) = (key_id.clone(), key.clone());
        let tls = noc_test_support::client_config(&relay.cert_path(), &[b"http/1.1"]).expect("tls");
        let base = ves.base().to_string();
        tasks.push(tokio::spawn(async move {
            // One client per request: a connection each, as a VES with many data channels.
            let http = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .resolve("localhost", "127.0.0.1:0".parse().expect("addr"))
                .build()
                .expect("client");
            let body =
                format!(r#"{{"Type":"ProvisionUser","Email":"u{i}@example.com","FirstName":"U","LastName":"V"}}"#);
            let (head, tail) = body.split_at(10);
            let (head, tail) = (head.to_string(), tail.to_string());
            use futures_util::StreamExt;
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
                futures_util::stream::once(async move {
                    // Every request has sent its headers and part of its body by now.
                    barrier.wait().await;
                    Ok(tail)
                }),
            );
            let resp = http
                .post(format!("{base}/rts/v1/data"))
                .header("X-Rts-Key-Id", key_id)
                .header("X-Rts-Key", key)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .expect("request");
            resp.status().as_u16()
        }));
    }
    tokio::time::timeout(T, barrier.wait()).await.expect("all 25 requests in flight together");
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    // The license has 10 seats: racing requests fill exactly those, the rest are refused.
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 15, "{statuses:?}");
    let list: UserList = ves.data(&DataRequest::ListUsers {}).await.expect("list");
    assert_eq!(list.users.len(), 10);
}

/// A VES that missed `DeviceActivated` (best effort, not replayed) learns its users'
/// devices from `ListDevices`; revoked devices and other VES's devices are not listed.
#[tokio::test]
async fn a_ves_lists_the_devices_of_its_users() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    let a = user_with_device(&ves, "a@example.com", "+15550201").await;
    let b = user_with_device(&ves, "b@example.com", "+15550202").await;
    let mut other = relay.ves();
    other.license("acme", "acme-license-pw").await.expect("license");
    let _other_channel = other.open().await.expect("channel");
    user_with_device(&other, "c@example.com", "+15550203").await;

    let list: noc_protocol::rts::DeviceList = ves.data(&DataRequest::ListDevices {}).await.expect("list");
    let mut ids: Vec<_> = list.devices.iter().map(|d| (d.device_id, d.user_id)).collect();
    ids.sort();
    let mut want = vec![(a.device_id, a.user_id), (b.device_id, b.user_id)];
    want.sort();
    assert_eq!(ids, want, "this VES's devices only");
    assert!(list.devices.windows(2).all(|w| w[0].activated_at <= w[1].activated_at), "oldest first");
    assert!(list.devices.iter().all(|d| d.activated_at > 0 && d.name.as_deref() == Some("phone")));

    let _: PasswordReset =
        ves.data(&DataRequest::ResetPassword { email: "a@example.com".into(), password: None }).await.expect("reset");
    let list: noc_protocol::rts::DeviceList = ves.data(&DataRequest::ListDevices {}).await.expect("list");
    assert_eq!(list.devices.iter().map(|d| d.device_id).collect::<Vec<_>>(), vec![b.device_id]);
}
