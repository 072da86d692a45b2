//! The device client's heartbeats against a scripted relay (docs/protocol.md §6.4.2): it
//! answers the relay's HEARTBEAT when it has been quiet for half an interval, not when it
//! sent something more recently, and sends its own once a whole interval passed without
//! sending.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use noc_device::{Device, DeviceState, RunOptions, Stats};
use noc_protocol::device::{Frame, FrameCodec};
use noc_protocol::{DeviceId, UserId};
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout};
use tokio_rustls::rustls;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_secs(2);
/// Bounds a wait for something that must happen (never reached when the client works).
const PATIENCE: Duration = Duration::from_secs(20);

/// A device whose state names `localhost:port`, trusting the certificate in `ca_pem`.
fn device(dir: &std::path::Path, port: u16, ca_pem: &str) -> Device {
    let state = DeviceState {
        relay_url: format!("https://localhost:{port}"),
        device_id: DeviceId::random(),
        credential: "11".repeat(32),
        device_host: "localhost".into(),
        device_port: port,
        user_id: UserId::random(),
        full_name: "Heartbeat Test".into(),
        service_type: "mail".into(),
        email: None,
        ves_fingerprint: "ab".repeat(32),
        suites: vec!["modern".into()],
        has_ca_file: true,
        activated_at_ms: 0,
        has_client_certificate: false,
    };
    state.save(dir).expect("save state");
    std::fs::write(state.ca_path(dir).expect("ca path"), ca_pem).expect("write ca");
    Device::open(dir).expect("open device")
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let der = cert.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert.cert.pem())
}

/// The next HEARTBEAT from the device, skipping anything else it sends (its link's
/// frames to the VES, which this relay leaves unanswered).
async fn next_heartbeat<S>(relay: &mut Framed<S, FrameCodec>) -> Instant
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match timeout(PATIENCE, relay.next()).await.expect("a frame from the device") {
            Some(Ok(Frame::Heartbeat)) => return Instant::now(),
            Some(Ok(_)) => continue,
            other => panic!("device channel ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_device_answers_the_relays_heartbeat_once_quiet_for_half_an_interval() {
    let (acceptor, ca_pem) = tls_acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let device = Arc::new(device(dir.path(), port, &ca_pem));
    let stop = CancellationToken::new();
    // The link's own traffic (its key agreement with the VES, retried) stays out of the
    // way: it would count as sending.
    let link = noc_endpoint::link::LinkConfig {
        handshake_timeout: PATIENCE * 10,
        retry_initial: PATIENCE * 10,
        ..Default::default()
    };
    let opts = RunOptions { connect_to: Some(listener.local_addr().expect("addr")), link, ..RunOptions::default() };
    let running = {
        let (device, stop) = (device.clone(), stop.clone());
        tokio::spawn(async move { device.run(opts, stop, None).await })
    };

    let (tcp, _) = timeout(PATIENCE, listener.accept()).await.expect("device connects").expect("accept");
    let tls = acceptor.accept(tcp).await.expect("TLS handshake");
    let mut relay = Framed::new(tls, FrameCodec::default());
    let Some(Ok(Frame::Hello { versions })) = relay.next().await else { panic!("expected HELLO") };
    let version = versions.iter().copied().max().expect("a version");
    relay.send(Frame::HelloAck { version }).await.expect("HELLO_ACK");
    let Some(Ok(Frame::AuthToken { .. })) = relay.next().await else { panic!("expected AUTH_TOKEN") };
    let interval_seconds = u32::try_from(INTERVAL.as_secs()).expect("seconds");
    let auth_ok = Frame::AuthOk {
        heartbeat_interval_seconds: interval_seconds,
        idle_timeout_seconds: 3 * interval_seconds,
        max_frame_bytes: 65_536,
    };
    relay.send(auth_ok).await.expect("AUTH_OK");

    // Quiet for more than half an interval: our HEARTBEAT is answered.
    tokio::time::sleep(INTERVAL * 3 / 4).await;
    relay.send(Frame::Heartbeat).await.expect("heartbeat");
    let answered_at = next_heartbeat(&mut relay).await;
    assert_eq!(counts(&device.stats), (1, 0), "(answered, own)");

    // It just sent one: the next HEARTBEAT is not answered, and the device's next is its
    // own, a whole interval after its answer.
    relay.send(Frame::Heartbeat).await.expect("heartbeat");
    let own_at = next_heartbeat(&mut relay).await;
    // (Due an interval after the device read ours, a little before we read its answer.)
    assert!(own_at - answered_at >= INTERVAL / 2, "own heartbeat {:?} after the answer", own_at - answered_at);
    assert_eq!(counts(&device.stats), (1, 1), "(answered, own)");

    stop.cancel();
    drop(relay);
    let _ = timeout(PATIENCE, running).await;
}

fn counts(stats: &Stats) -> (u64, u64) {
    (Stats::get(&stats.heartbeats_answered), Stats::get(&stats.heartbeats_own))
}
