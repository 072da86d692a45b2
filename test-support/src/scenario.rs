//! Steps that many end-to-end tests share.

use std::time::Duration;

use noc_protocol::device::Frame;
use noc_protocol::rts::{AccountActivationResponse, Command, DeviceActivationResponse};
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

/// Waits until the VES sees `device_id` online.
pub async fn await_online(channel: &mut CommandChannel, device_id: DeviceId) {
    channel
        .wait_for(STEP, |c| matches!(c, Command::DevicePresence { device_id: d, online: true, .. } if *d == device_id))
        .await
        .expect("DevicePresence online");
}
