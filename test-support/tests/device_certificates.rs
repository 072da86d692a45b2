//! Devices authenticating with the client certificate of the relay's device CA (seed 001,
//! docs/protocol.md §6.3.2): mutual TLS on the device channel, AUTH_CERT, and what is
//! refused — a certificate of another CA, an expired one, one a newer certificate
//! replaced, one naming another device, none at all — and revocation seen by every node.

use std::path::PathBuf;

use bytes::Bytes;
use noc_protocol::device::{ForwardKind, Frame};
use noc_protocol::rts::{Command, DataRequest, DeviceActivationResponse, FrameStatus, PasswordReset};
use noc_protocol::{CloseCode, DeviceId};
use noc_test_support::scenario::{
    STEP, USER_PASSWORD, await_online, certified_device, expect_close, online_certified_device, relay_and_ves,
};
use noc_test_support::{FakeDevice, FakeVes, Recv, TestCluster, TestRelay};
use serde_json::json;

/// A device CA written to files the relay is configured with, so that the test can also
/// issue certificates of its own from it (an old one, one the relay never recorded).
struct CaFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: noc_ca::DeviceCa,
}

impl CaFiles {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let (ca, key_pem) = noc_ca::DeviceCa::generate("test device CA", now() - 3 * 365 * 86_400).expect("ca");
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        std::fs::write(&cert, ca.root_pem()).expect("cert");
        std::fs::write(&key, key_pem).expect("key");
        CaFiles { _dir: dir, cert, key, ca }
    }

    fn configure(&self, c: &mut noc_app::Config) {
        c.device_ca.cert_path = Some(self.cert.clone());
        c.device_ca.key_path = Some(self.key.clone());
    }
}

fn now() -> i64 {
    noc_protocol::clock::unix_ms_i64() / 1000
}

/// A certificate (PEM) and key (PEM) for `act`'s device from `ca`, valid from `at`.
fn issue(ca: &noc_ca::DeviceCa, act: &DeviceActivationResponse, at: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
    let cert = ca.issue(&csr, act.user_id, act.device_id, at).expect("ca").expect("issued");
    (cert.pem, key.serialize_pem())
}

/// Provisions `email` and activates its account with `msisdn`.
async fn account(ves: &FakeVes, email: &str, msisdn: &str) {
    ves.provision(email, Some(USER_PASSWORD)).await.expect("provision");
    let _: noc_protocol::rts::AccountActivationResponse = ves
        .post_json(
            "/account/v1/activate",
            &json!({"Login": email, "Password": USER_PASSWORD, "Msisdn": msisdn, "TimeZone": "UTC"}),
        )
        .await
        .expect("account activation");
}

/// Connects presenting `cert`/`key` and sends HELLO: the relay's verdict on the
/// certificate (with TLS 1.3, an alert after the client's handshake) comes back here.
async fn hello_with_certificate(relay: &TestRelay, cert: &str, key: &str) -> (Option<FakeDevice>, Recv) {
    match FakeDevice::connect_with_certificate(relay.device_addr(), &relay.cert_path(), cert, key).await {
        Ok(mut device) => {
            let answer = device.hello().await;
            (Some(device), answer)
        }
        Err(e) => (None, Recv::Error(e.to_string())),
    }
}

#[tokio::test]
async fn a_device_authenticates_with_its_client_certificate_and_exchanges_frames() {
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    account(&ves, "mtls@example.com", "+15550150").await;
    let (act, key) = certified_device(&ves, "+15550150").await;
    let mut device = online_certified_device(&relay, &act, &key).await;
    await_online(&mut channel, act.device_id).await;

    // Frames both ways, acknowledged end to end, as with a credential.
    let resp = ves.send_frame(act.device_id, 7, b"down").await;
    assert_eq!(resp.results[0].status, FrameStatus::Accepted);
    match device.recv_data(STEP).await {
        Recv::Frame(Frame::Forward { frame_id: 7, payload, .. }) => assert_eq!(&payload[..], b"down"),
        other => panic!("expected FORWARD 7, got {other:?}"),
    }
    device.send(Frame::Ack { frame_id: 7 }).await.expect("ack");
    channel
        .wait_for(STEP, |c| matches!(c, Command::Ack { frame_id: 7, device_id } if *device_id == act.device_id))
        .await
        .expect("Ack");
    device
        .send(Frame::Forward { kind: ForwardKind::Data, frame_id: 8, payload: Bytes::from_static(b"up") })
        .await
        .expect("send");
    let got = channel.wait_for(STEP, |c| matches!(c, Command::DeviceFrame { .. })).await.expect("DeviceFrame");
    let Command::DeviceFrame { device_id, user_id, frame_id, .. } = got else { unreachable!() };
    assert_eq!((device_id, user_id, frame_id), (act.device_id, act.user_id, 8));
    assert_eq!(ves.ack(act.device_id, 8).await.forwarded, 1);
    assert!(matches!(device.recv_data(STEP).await, Recv::Frame(Frame::Ack { frame_id: 8 })));

    assert_eq!(relay.metric("noc_device_logins_total", &[("method", "certificate")]), 1.0);
    // A device holding a certificate may still use its credential.
    let mut token = relay.device_connection().await;
    assert!(matches!(token.login(act.device_id, &act.device_credential).await, Recv::Frame(Frame::AuthOk { .. })));
    expect_close(&mut device, CloseCode::Replaced).await;
}

#[tokio::test]
async fn certificates_the_relay_cannot_accept_are_refused_with_their_reason() {
    let ca = CaFiles::new();
    let (relay, ves, _channel) = relay_and_ves(|c| ca.configure(c)).await;
    account(&ves, "refused@example.com", "+15550151").await;
    let (act, key) = certified_device(&ves, "+15550151").await;
    let cert = act.client_certificate.clone().expect("certificate");
    let refused = |message: &str| -> Box<dyn Fn(Recv) + '_> {
        let message = message.to_string();
        Box::new(move |answer| match answer {
            Recv::Frame(Frame::Close { code: CloseCode::CertificateRefused, message: got, .. }) => {
                assert!(got.contains(&message), "{got:?} should say {message:?}")
            }
            other => panic!("expected CLOSE certificate_refused ({message}), got {other:?}"),
        })
    };

    // AUTH_CERT with no certificate in the handshake.
    let mut plain = relay.device_connection().await;
    refused("needs a client certificate")(plain.login_certificate(act.device_id).await);
    // The certificate names another device than the one AUTH_CERT claims.
    let (device, _) = hello_with_certificate(&relay, &cert, &key).await;
    let mut device = device.expect("connected");
    device.send(Frame::AuthCert { device_id: DeviceId::random() }).await.expect("send");
    refused("names another device")(device.recv(STEP).await);
    // A certificate of the same CA that is not the device's current one (a renewal or a
    // new activation replaced it, or it was never recorded).
    let (other_cert, other_key) = issue(&ca.ca, &act, now());
    let mut device =
        FakeDevice::connect_with_certificate(relay.device_addr(), &relay.cert_path(), &other_cert, &other_key)
            .await
            .expect("connected");
    refused("replaced or no longer valid")(device.login_certificate(act.device_id).await);
    // AUTH_CERT is a version 3 frame.
    let mut device = FakeDevice::connect_with_certificate(relay.device_addr(), &relay.cert_path(), &cert, &key)
        .await
        .expect("connected");
    match device.login_certificate_with(&[1, 2], act.device_id).await {
        Recv::Frame(Frame::Close { code: CloseCode::ProtocolViolation, message, .. }) => {
            assert!(message.contains("version 3"), "{message}")
        }
        other => panic!("expected CLOSE protocol_violation, got {other:?}"),
    }
    assert_eq!(relay.metric("noc_auth_failures_total", &[("kind", "device"), ("reason", "certificate_refused")]), 3.0);

    // Certificates the TLS layer refuses: another CA's, and an expired one of this CA.
    let (foreign_ca, _) = noc_ca::DeviceCa::generate("someone else's CA", now()).expect("ca");
    let (foreign_cert, foreign_key) = issue(&foreign_ca, &act, now());
    let two_years_ago = now() - 2 * 365 * 86_400;
    let (expired_cert, expired_key) = issue(&ca.ca, &act, two_years_ago);
    for (cert, key, what) in [(&foreign_cert, &foreign_key, "another CA"), (&expired_cert, &expired_key, "expired")] {
        let (_, answer) = hello_with_certificate(&relay, cert, key).await;
        match answer {
            Recv::Error(e) => assert!(e.contains("alert"), "{what}: {e}"),
            other => panic!("{what}: expected the TLS handshake refused, got {other:?}"),
        }
    }
    // The relay counts a refusal after sending its alert: the client may see the alert first.
    let rejected = || relay.metric("noc_connections_rejected_total", &[("reason", "client_certificate")]);
    let deadline = std::time::Instant::now() + STEP;
    while rejected() < 2.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(rejected(), 2.0);

    // The device's own certificate still works after all that.
    online_certified_device(&relay, &act, &key).await;
}

/// A password reset revokes the user's devices: the session held with a certificate on
/// node B ends, and the certificate is refused at the next handshake on either node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused_its_certificate_on_every_node() {
    let ca = CaFiles::new();
    let cluster = TestCluster::start(2, |_, c| ca.configure(c)).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    a.create_license("acme", "acme-license-pw", 10).await;
    let mut ves = a.ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let mut channel = ves.open().await.expect("VES on node A");
    account(&ves, "revoked@example.com", "+15550152").await;
    let (act, key) = certified_device(&ves, "+15550152").await;
    let mut device = online_certified_device(b, &act, &key).await;
    await_online(&mut channel, act.device_id).await;

    let reset: PasswordReset = ves
        .data(&DataRequest::ResetPassword { email: "revoked@example.com".into(), password: None })
        .await
        .expect("reset");
    assert_eq!(reset.revoked_devices, 1);
    expect_close(&mut device, CloseCode::Revoked).await;
    let cert = act.client_certificate.clone().expect("certificate");
    for node in [a, b] {
        let mut again = FakeDevice::connect_with_certificate(node.device_addr(), &node.cert_path(), &cert, &key)
            .await
            .expect("TLS still completes: the certificate itself is good");
        match again.login_certificate(act.device_id).await {
            Recv::Frame(Frame::Close { code: CloseCode::Revoked, .. }) => {}
            other => panic!("expected CLOSE revoked, got {other:?}"),
        }
    }
    drop(channel);
    cluster.stop().await;
}

/// A license that requires client certificates (`noc admin license set-features
/// --require-client-certificates on`): no activation without a certificate request, and
/// the credential opens no session; the certificate does. Turned off, the credential
/// works again.
#[tokio::test]
async fn a_license_can_require_client_certificates() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    account(&ves, "strict@example.com", "+15550153").await;
    let (act, key) = certified_device(&ves, "+15550153").await;
    let admin = relay.admin().await;
    let license = admin.set_require_client_certificates("acme", true).await.expect("require");
    assert!(license.require_client_certificates);

    let refused = ves
        .post_json::<DeviceActivationResponse>(
            "/device/v1/activate",
            &json!({"Msisdn": "+15550153", "Password": USER_PASSWORD}),
        )
        .await
        .expect_err("no certificate request");
    assert_eq!((refused.status, refused.code.as_str()), (400, "bad_request"), "{refused}");
    assert!(refused.message.contains("certificate request"), "{refused}");
    let list: noc_protocol::rts::DeviceList = ves.data(&DataRequest::ListDevices {}).await.expect("devices");
    assert_eq!(list.devices.len(), 1, "the refused activation left no device: {:?}", list.devices);

    let mut token = relay.device_connection().await;
    match token.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code: CloseCode::CertificateRequired, message, .. }) => {
            assert!(message.contains("activate the device again"), "{message}")
        }
        other => panic!("expected CLOSE certificate_required, got {other:?}"),
    }
    // A client of version 2 does not know the code: it is told `auth_failed`.
    let mut older = relay.device_connection().await;
    match older.login_with(&[1, 2], act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code: CloseCode::AuthFailed, message, .. }) => {
            assert!(message.contains("requires a client certificate"), "{message}")
        }
        other => panic!("expected CLOSE auth_failed, got {other:?}"),
    }
    online_certified_device(&relay, &act, &key).await;
    // The refused activation and the two refused logins.
    assert_eq!(relay.metric("noc_auth_failures_total", &[("kind", "device"), ("reason", "certificate_required")]), 3.0);
    let audit = admin.audit(20).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "license.require_client_certificates"), "audited");

    admin.set_require_client_certificates("acme", false).await.expect("optional again");
    let mut token = relay.device_connection().await;
    assert!(matches!(token.login(act.device_id, &act.device_credential).await, Recv::Frame(Frame::AuthOk { .. })));
}
