//! Steps that many end-to-end tests share.

use std::time::Duration;

use bytes::Bytes;
use noc_protocol::device::{ForwardKind, Frame};
use noc_protocol::rts::{AccountActivationResponse, Command, DeviceActivationResponse, FrameStatus};
use noc_protocol::{CloseCode, DeviceId};
use serde_json::json;

use crate::{CommandChannel, FakeDevice, FakeVes, Recv, TestRelay};

/// How long a test step may take before it counts as failed.
pub const STEP: Duration = Duration::from_secs(5);

/// The password every test user gets.
pub const USER_PASSWORD: &str = "user-password-1";

/// A relay (with `tweak`) with one license `acme` (10 seats) and a VES holding an open
/// command channel.
pub async fn relay_and_ves(tweak: impl FnOnce(&mut noc_app::Config)) -> (TestRelay, FakeVes, CommandChannel) {
    let relay = TestRelay::start_with(tweak);
    relay.create_license("acme", "acme-license-pw", 10).await;
    let mut ves = relay.ves();
    ves.license("acme", "acme-license-pw").await.expect("license login");
    let channel = ves.open().await.expect("command channel");
    (relay, ves, channel)
}

/// Provisions `email`, activates the account with `msisdn`, and activates a device.
pub async fn user_with_device(ves: &FakeVes, email: &str, msisdn: &str) -> DeviceActivationResponse {
    ves.provision(email, Some(USER_PASSWORD)).await.expect("provision");
    let _: AccountActivationResponse = ves
        .post_json(
            "/account/v1/activate",
            &json!({"Login": email, "Password": USER_PASSWORD, "Msisdn": msisdn, "TimeZone": "Europe/Paris"}),
        )
        .await
        .expect("account activation");
    ves.post_json(
        "/device/v1/activate",
        &json!({"Msisdn": msisdn, "Password": USER_PASSWORD, "DeviceName": "phone", "DeviceType": "test"}),
    )
    .await
    .expect("device activation")
}

/// A device activated for `msisdn` (an activated account) with a certificate request: the
/// answer (client certificate and management root included) and the key (PEM) it was
/// made for.
pub async fn certified_device(ves: &FakeVes, msisdn: &str) -> (DeviceActivationResponse, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
    let act: DeviceActivationResponse = ves
        .post_json("/device/v1/activate", &json!({"Msisdn": msisdn, "Password": USER_PASSWORD, "Csr": csr}))
        .await
        .expect("device activation with a certificate request");
    assert!(act.client_certificate.is_some(), "the relay has a device CA");
    (act, key.serialize_pem())
}

/// Connects the device to `relay` with its client certificate and logs it in by AUTH_CERT.
pub async fn online_certified_device(relay: &TestRelay, act: &DeviceActivationResponse, key_pem: &str) -> FakeDevice {
    let cert = act.client_certificate.as_deref().expect("client certificate");
    let mut device = FakeDevice::connect_with_certificate(relay.device_addr(), &relay.cert_path(), cert, key_pem)
        .await
        .expect("device TLS connection");
    match device.login_certificate(act.device_id).await {
        Recv::Frame(Frame::AuthOk { .. }) => device,
        other => panic!("device login by certificate failed: {other:?}"),
    }
}

/// Connects the activated device to `relay` and logs it in.
pub async fn online_device(relay: &TestRelay, act: &DeviceActivationResponse) -> FakeDevice {
    let mut device = relay.device_connection().await;
    match device.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::AuthOk { .. }) => device,
        other => panic!("device login failed: {other:?}"),
    }
}

/// The next non-heartbeat frame must be CLOSE with `code`; returns its message.
pub async fn expect_close(device: &mut FakeDevice, code: CloseCode) -> String {
    match device.recv_data(STEP).await {
        Recv::Frame(Frame::Close { code: got, message, .. }) => {
            assert_eq!(got, code, "close message: {message}");
            message
        }
        other => panic!("expected CLOSE {code}, got {other:?}"),
    }
}

/// Waits until the VES has seen every one of `device_ids` online, in any order: sessions
/// that move to another worker may announce themselves after ones that logged in later.
pub async fn await_all_online(channel: &mut CommandChannel, device_ids: &[DeviceId]) {
    let mut waiting: std::collections::HashSet<DeviceId> = device_ids.iter().copied().collect();
    while !waiting.is_empty() {
        channel
            .wait_for(
                STEP,
                |c| matches!(c, Command::DevicePresence { device_id, online: true, .. } if waiting.remove(device_id)),
            )
            .await
            .unwrap_or_else(|| panic!("DevicePresence online for {waiting:?}"));
    }
}

/// `n` users of `ves` (`{tag}{i}@example.com`, phone `{msisdn}{i}`), each with a device
/// online on `relay`, all announced to the VES.
pub async fn devices_online(
    ves: &FakeVes,
    channel: &mut CommandChannel,
    relay: &TestRelay,
    (tag, msisdn): (&str, &str),
    n: usize,
) -> Vec<(DeviceActivationResponse, FakeDevice)> {
    let mut out = Vec::new();
    for i in 0..n {
        let act = user_with_device(ves, &format!("{tag}{i}@example.com"), &format!("{msisdn}{i}")).await;
        let device = online_device(relay, &act).await;
        out.push((act, device));
    }
    let ids: Vec<DeviceId> = out.iter().map(|(act, _)| act.device_id).collect();
    await_all_online(channel, &ids).await;
    out
}

/// Waits until the VES sees `device_id` online.
pub async fn await_online(channel: &mut CommandChannel, device_id: DeviceId) {
    channel
        .wait_for(STEP, |c| matches!(c, Command::DevicePresence { device_id: d, online: true, .. } if *d == device_id))
        .await
        .expect("DevicePresence online");
}

/// Frame `id` both ways between the VES and an online device: "down" to the device, "up"
/// to the VES, and the VES's acknowledgement back to the device.
pub async fn relays_both_ways(
    ves: &FakeVes,
    channel: &mut CommandChannel,
    device_id: DeviceId,
    device: &mut FakeDevice,
    id: u64,
) {
    let resp = ves.send_frame(device_id, id, b"down").await;
    assert_eq!(resp.results[0].status, FrameStatus::Accepted);
    match device.recv_data(STEP).await {
        Recv::Frame(Frame::Forward { frame_id, payload, .. }) => {
            assert_eq!((frame_id, &payload[..]), (id, &b"down"[..]))
        }
        other => panic!("expected FORWARD, got {other:?}"),
    }
    device
        .send(Frame::Forward { kind: ForwardKind::Data, frame_id: id, payload: Bytes::from_static(b"up") })
        .await
        .expect("send");
    channel
        .wait_for(
            STEP,
            |c| matches!(c, Command::DeviceFrame { device_id: d, frame_id, .. } if *d == device_id && *frame_id == id),
        )
        .await
        .expect("DeviceFrame");
    assert_eq!(ves.ack(device_id, id).await.forwarded, 1);
    assert!(matches!(device.recv_data(STEP).await, Recv::Frame(Frame::Ack { frame_id }) if frame_id == id));
}
