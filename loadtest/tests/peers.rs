//! Baseline runs (`loadtest peer`) against real servers: Mosquitto (MQTT over TLS, QoS 1)
//! and nats-server (TLS), each started by the test on free loopback ports with a fresh
//! certificate, and the forwarding ceiling's sink with devices connected straight to it.
//! Every frame must be accounted for, both ways, as in a relay run.
//!
//! `scripts/test.sh` installs `mosquitto` and `nats-server` when they are missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use noc_loadtest::peer::{PeerOptions, PeerProtocol, SinkOptions, run_peer};
use noc_loadtest::result::FrameCounts;
use noc_loadtest::{RunResult, Scenario};

fn scenario() -> Scenario {
    Scenario {
        name: "peer-smoke".into(),
        ves_count: 1,
        devices_per_ves: 8,
        frame_size_bytes: 256,
        rate_frames_per_second: 400.0,
        device_to_ves_percent: 50.0,
        duration_seconds: 1.5,
        ramp_up_seconds: 0.5,
        drain_timeout_seconds: 5.0,
        report_interval_ms: 250,
        ..Scenario::default()
    }
}

/// A self-signed end-entity certificate for `localhost` / 127.0.0.1.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

/// An address for a server process started by the test (see `reserve_port` for why not port 0).
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], noc_test_support::reserve_port()))
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed (scripts/test.sh installs it)");
}

fn start(program: PathBuf, config: &Path, log: &Path, addr: SocketAddr) -> Server {
    let log_file = std::fs::File::create(log).expect("log");
    let child = Command::new(&program)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {addr}: {:?}",
            program.display(),
            std::fs::read_to_string(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn options(protocol: PeerProtocol, addr: SocketAddr, cert: &Path, pid: Option<u32>) -> PeerOptions {
    PeerOptions {
        protocol,
        scenario: scenario(),
        addr,
        server_name: "localhost".into(),
        cacert: cert.to_path_buf(),
        sink: None,
        source_ips: Vec::new(),
        peer_pids: pid.into_iter().collect(),
        progress: false,
    }
}

fn assert_delivered(name: &str, c: &FrameCounts) {
    assert!(c.sent > 100, "{name}: frames were sent: {c:?}");
    assert_eq!(c.received, c.sent, "{name}: every frame reached the other end: {c:?}");
    assert_eq!(c.acked, c.sent, "{name}: receipts count as end-to-end acks: {c:?}");
    assert_eq!((c.lost, c.foreign_payloads), (0, 0), "{name}: {c:?}");
}

fn assert_run(r: &RunResult, sampled: bool) {
    assert_delivered("device→hub", &r.device_to_ves);
    assert_delivered("hub→device", &r.ves_to_device);
    assert_eq!(r.sessions.devices_at_traffic_start, 8, "{:?}", r.sessions);
    assert!(r.errors.is_empty(), "no errors: {:?}", r.errors);
    assert!(r.latency.one_way.count >= r.sent(), "one latency sample per frame");
    let l = &r.latency;
    assert_eq!(l.send_delay_device_to_ves.count, r.device_to_ves.sent, "one send delay per frame sent");
    assert_eq!(l.send_delay_ves_to_device.count, r.ves_to_device.sent, "one send delay per frame sent");
    assert_eq!(l.from_send_device_to_ves.count + l.from_send_ves_to_device.count, l.one_way.count);
    assert!(r.latency.connect.count >= 8);
    if sampled {
        let peer = r.relay.as_ref().expect("the server process is sampled");
        assert!(peer.rss_kib_end > 0 && peer.cpu_seconds_total > 0.0, "{peer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_over_tls_delivers_every_frame_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(dir.path());
    let addr = free_addr();
    let config = dir.path().join("mosquitto.conf");
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    std::fs::write(
        &config,
        format!(
            "per_listener_settings false\nuser {user}\npersistence false\nallow_anonymous true\n\
             max_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n\
             log_type error\nlog_type warning\nlistener {} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            addr.port(),
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let server = start(binary("mosquitto"), &config, &dir.path().join("mosquitto.log"), addr);
    let result = run_peer(options(PeerProtocol::Mqtt, addr, &cert, Some(server.0.id()))).await.expect("run");
    assert_run(&result, true);
    assert!(result.target.relay_url.starts_with("mqtts://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_delivers_every_frame_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(dir.path());
    let addr = free_addr();
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{}\"\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            addr.port(),
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let server = start(binary("nats-server"), &config, &dir.path().join("nats.log"), addr);
    let result = run_peer(options(PeerProtocol::Nats, addr, &cert, Some(server.0.id()))).await.expect("run");
    assert_run(&result, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarding_sink_pairs_each_device_with_its_own_pipe() {
    // Without a proxy in between, devices connect to the sink itself: the same code
    // paths as behind nginx (HELLO, READY, frames both ways on each device's pipe).
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(dir.path());
    let addr = free_addr();
    let mut opts = options(PeerProtocol::Forward, addr, &cert, None);
    opts.sink = Some(SinkOptions { listen: addr, cert: cert.clone(), key });
    let result = run_peer(opts).await.expect("run");
    assert_run(&result, false);
}

#[tokio::test]
async fn a_broker_that_is_not_there_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = certificate(dir.path());
    let err = run_peer(options(PeerProtocol::Mqtt, free_addr(), &cert, None)).await.expect_err("nothing listens");
    assert!(err.to_string().contains("hub connection"), "{err}");
    let mut opts = options(PeerProtocol::Forward, free_addr(), &cert, None);
    opts.scenario.ves_count = 2;
    assert!(run_peer(opts).await.is_err(), "one hub only");
    let mut opts = options(PeerProtocol::Nats, free_addr(), &cert, None);
    opts.scenario.storm_at_seconds = 1.0;
    assert!(run_peer(opts).await.is_err(), "no storms against baselines");
}
