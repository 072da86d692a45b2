//! The load tool against a real relay node (in-process, TLS on loopback): every frame is
//! accounted for, the outputs are written, and a rerun reuses the cached credentials.

use std::path::Path;

use noc_loadtest::cli::write_outputs;
use noc_loadtest::result::FrameCounts;
use noc_loadtest::setup::{Credentials, LicenseSource};
use noc_loadtest::{RunOptions, RunResult, Scenario, run};
use noc_test_support::TestRelay;

fn tiny() -> Scenario {
    Scenario {
        name: "tiny".into(),
        ves_count: 1,
        devices_per_ves: 4,
        devices_per_user: 2,
        frame_size_bytes: 64,
        rate_frames_per_second: 200.0,
        device_to_ves_percent: 50.0,
        duration_seconds: 1.5,
        ramp_up_seconds: 0.5,
        drain_timeout_seconds: 5.0,
        report_interval_ms: 250,
        ..Scenario::default()
    }
}

fn unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    now.as_millis() as u64
}

fn options(relay: &TestRelay, dir: &Path, scenario: Scenario) -> RunOptions {
    RunOptions {
        scenario,
        relay_url: relay.base_url().to_string(),
        cacert: relay.cert_path(),
        connect_ip: None,
        device_addr: Some(relay.device_addr()),
        tls_server_name: None,
        source_ips: vec!["127.0.0.1".parse().expect("ip")],
        license: LicenseSource::Existing { name: "lt".into(), password: "lt-license-pw".into() },
        credentials: dir.join("credentials.json"),
        // The relay runs in this process: sampling it exercises the /proc reader.
        relay_pids: vec![std::process::id()],
        relay_metrics_urls: vec![format!("{}/metrics", relay.admin_url())],
        progress: false,
        setup_only: false,
        start_at_unix_ms: None,
    }
}

fn assert_accounted(name: &str, c: &FrameCounts) {
    assert!(c.sent > 0, "{name}: frames were sent: {c:?}");
    assert_eq!(c.sent, c.acked + c.undeliverable_total() + c.lost, "{name}: every frame has one fate: {c:?}");
    assert_eq!(c.lost, 0, "{name}: nothing lost on a healthy relay: {c:?}");
    assert_eq!(c.undeliverable_total(), 0, "{name}: nothing refused: {c:?}");
    assert_eq!(c.received, c.sent, "{name}: every frame reached the other endpoint: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_scenario_accounts_for_every_frame_and_writes_its_reports() {
    let relay = TestRelay::start();
    relay.create_license("lt", "lt-license-pw", 100).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let r = run(options(&relay, dir.path(), tiny())).await.expect("run").expect("a result");
    assert_eq!(r.sessions.ves_established, 1);
    assert_eq!(r.sessions.devices_at_traffic_start, 4, "{:?}", r.errors);
    assert_accounted("device→VES", &r.device_to_ves);
    assert_accounted("VES→device", &r.ves_to_device);
    // 200 frames/s for 1.5 s, half each way (open loop: the timetable, not the relay, sets it).
    assert_eq!(r.sent(), 300, "{:?} {:?}", r.device_to_ves, r.ves_to_device);
    assert_eq!(r.latency.one_way.count, r.device_to_ves.received + r.ves_to_device.received);
    assert_eq!(r.latency.ack_device_to_ves.count, r.device_to_ves.acked);
    assert_eq!(r.latency.connect.count, 4);
    assert!(r.latency.one_way.p99_us > 0 && r.latency.one_way.p99_us < 5_000_000);
    // Every frame's send delay, and every receipt's latency from the send too, which is
    // never more than from the frame's schedule.
    let l = &r.latency;
    assert_eq!(l.send_delay_device_to_ves.count, r.device_to_ves.sent);
    assert_eq!(l.send_delay_ves_to_device.count, r.ves_to_device.sent);
    for (from_send, one_way) in
        [(&l.from_send_device_to_ves, &l.one_way_device_to_ves), (&l.from_send_ves_to_device, &l.one_way_ves_to_device)]
    {
        assert_eq!(from_send.count, one_way.count);
        assert!(from_send.max_us <= one_way.max_us && from_send.min_us <= one_way.min_us, "{from_send:?} {one_way:?}");
    }
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // The relay's own counters agree with the tool's.
    let relayed =
        |d: &str| r.relay_metrics_delta.get(&format!("noc_frames_relayed_total{{direction=\"{d}\"}}")).copied();
    assert_eq!(relayed("device_to_ves"), Some(r.device_to_ves.sent as f64), "{:?}", r.relay_metrics_delta);
    assert_eq!(relayed("ves_to_device"), Some(r.ves_to_device.sent as f64));
    let relay_usage = r.relay.as_ref().expect("relay sampled");
    assert!(relay_usage.rss_kib_peak > 0);
    assert!(r.timeline.iter().any(|p| p.phase == "traffic"));

    let json = dir.path().join("result.json");
    let html = dir.path().join("result.html");
    write_outputs(&r, &json, Some(&html)).expect("outputs");
    let back = RunResult::load(&json).expect("reload");
    assert_eq!((&back.device_to_ves, &back.ves_to_device), (&r.device_to_ves, &r.ves_to_device));
    assert_eq!(back.latency.one_way.histogram().expect("decode").len(), r.latency.one_way.count);
    assert_eq!(back.latency.one_way.hdr, r.latency.one_way.hdr);
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.contains("<svg") && page.contains("Latency by percentile") && !page.contains("<script"));

    // A rerun reuses the cached accounts and devices instead of activating new ones.
    let creds = dir.path().join("credentials.json");
    let before = Credentials::load_or_new(&creds, relay.base_url()).expect("credentials");
    let short = Scenario { duration_seconds: 1.0, ..tiny() };
    let r2 = run(options(&relay, dir.path(), short)).await.expect("rerun").expect("a result");
    assert_accounted("rerun device→VES", &r2.device_to_ves);
    let after = Credentials::load_or_new(&creds, relay.base_url()).expect("credentials");
    let ids = |c: &Credentials| c.devices_of(0, &tiny()).iter().map(|d| d.device_id).collect::<Vec<_>>();
    assert_eq!(ids(&before), ids(&after), "same devices");
    assert_eq!(ids(&after).len(), 4);
    relay.node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_drops_every_device_and_times_their_return() {
    let relay = TestRelay::start();
    relay.create_license("lt", "lt-license-pw", 100).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = Scenario {
        name: "storm".into(),
        devices_per_ves: 6,
        devices_per_user: 3,
        rate_frames_per_second: 0.0,
        duration_seconds: 3.0,
        storm_at_seconds: 1.0,
        ..tiny()
    };
    let r = run(options(&relay, dir.path(), scenario)).await.expect("run").expect("a result");
    let storm = r.storm.as_ref().expect("the storm is reported");
    assert_eq!((storm.devices_dropped, storm.reconnected), (6, 6), "{storm:?} {:?}", r.errors);
    let recovery = storm.recovery_seconds.expect("every device came back");
    assert!(recovery > 0.0 && recovery < 2.0, "{storm:?}");
    assert!(storm.relay_cpu_seconds.is_some(), "the local relay is sampled");
    assert_eq!(r.sessions.reconnects, 6, "one new session per dropped device");
    assert_eq!(r.sessions.churn_disconnects, 6);
    assert!(r.summary().contains("6 dropped, 6 reconnected, all back in"), "{}", r.summary());
    relay.node.shutdown();
}

/// The same storm with devices that hold client certificates: they activate with a
/// certificate request, and every (re)connection is mutual TLS with AUTH_CERT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_devices_with_client_certificates_comes_back_by_certificate() {
    let relay = TestRelay::start();
    relay.create_license("lt", "lt-license-pw", 100).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = Scenario {
        name: "storm-mtls".into(),
        devices_per_ves: 4,
        devices_per_user: 2,
        rate_frames_per_second: 40.0,
        duration_seconds: 3.0,
        storm_at_seconds: 1.0,
        device_client_certificates: true,
        ..tiny()
    };
    let r = run(options(&relay, dir.path(), scenario.clone())).await.expect("run").expect("a result");
    let storm = r.storm.as_ref().expect("the storm is reported");
    assert_eq!((storm.devices_dropped, storm.reconnected), (4, 4), "{storm:?} {:?}", r.errors);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_accounted("device→VES", &r.device_to_ves);
    let creds = Credentials::load_or_new(&dir.path().join("credentials.json"), relay.base_url()).expect("credentials");
    let devices = creds.devices_of(0, &scenario);
    assert!(devices.iter().all(|d| d.certificate.is_some() && d.key.is_some()), "every device holds a certificate");
    // Every login, the first ones and those after the storm, was by certificate.
    assert_eq!(relay.metric("noc_device_logins_total", &[("method", "certificate")]), 8.0);
    assert_eq!(relay.metric("noc_device_logins_total", &[("method", "token")]), 0.0);
    assert_eq!(relay.metric("noc_auth_failures_total", &[("kind", "device")]), 0.0);
    relay.node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_workers_storm_together_and_merge_into_one_storm() {
    let relay = TestRelay::start();
    relay.create_license("lt", "lt-license-pw", 100).await;
    relay.create_license("lt2", "lt2-license-pw", 100).await;
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let scenario = Scenario {
        name: "campaign-storm".into(),
        devices_per_ves: 4,
        rate_frames_per_second: 0.0,
        duration_seconds: 3.0,
        storm_at_seconds: 1.0,
        ..tiny()
    };
    let now = unix_ms();

    // A start that has passed by the end of setup is refused, not silently moved.
    let late = RunOptions { start_at_unix_ms: Some(now - 1), ..options(&relay, a.path(), scenario.clone()) };
    let err = run(late).await.expect_err("a past start time is refused");
    assert!(err.to_string().contains("passed"), "{err}");

    // Two workers (separate licenses and devices) agree on one start: their storms line up.
    let start = unix_ms() + 4_000;
    let worker_a = RunOptions { start_at_unix_ms: Some(start), ..options(&relay, a.path(), scenario.clone()) };
    let mut worker_b = RunOptions { start_at_unix_ms: Some(start), ..options(&relay, b.path(), scenario) };
    worker_b.license = LicenseSource::Existing { name: "lt2".into(), password: "lt2-license-pw".into() };
    let (ra, rb) = tokio::join!(run(worker_a), run(worker_b));
    let (ra, rb) = (ra.expect("worker a").expect("result"), rb.expect("worker b").expect("result"));
    let (sa, sb) = (ra.storm.clone().expect("storm a"), rb.storm.clone().expect("storm b"));
    let (da, db) = (sa.dropped_unix_ms.expect("stamped"), sb.dropped_unix_ms.expect("stamped"));
    assert!(da.abs_diff(db) < 500, "storms {da} and {db} should start together");
    assert!(da >= start + 1_000, "the storm comes storm_at_seconds after the agreed ramp ({da} vs {start})");

    let merged = noc_loadtest::merge(&[ra, rb]).expect("merge");
    let storm = merged.storm.expect("merged storm");
    assert_eq!((storm.devices_dropped, storm.reconnected), (8, 8), "{storm:?}");
    let (first, last) = (storm.dropped_unix_ms.expect("first drop"), storm.all_back_unix_ms.expect("last back"));
    assert_eq!(first, da.min(db));
    let recovery = storm.recovery_seconds.expect("all back");
    // The stamps are whole milliseconds; each worker's own recovery is finer.
    assert!((recovery - (last - first) as f64 / 1000.0).abs() < 0.002, "{storm:?}");
    assert!(recovery >= sa.recovery_seconds.expect("a back").max(sb.recovery_seconds.expect("b back")));
    relay.node.shutdown();
}

/// The licenses' usage records (what billing reads) add up to the relay's own frame and
/// byte counters after a run: every frame the relay wrote is in them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_records_add_up_to_the_relays_counters_after_a_run() {
    use noc_storage::model::OperatorRole;
    use noc_test_support::{AdminApi, TestOperator};

    let relay = TestRelay::start_with(|c| c.accounts.usage_flush_interval_seconds = 1);
    relay.create_license("lt", "lt-license-pw", 100).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let r = run(options(&relay, dir.path(), tiny())).await.expect("run").expect("a result");
    assert_accounted("device→VES", &r.device_to_ves);

    let admin = relay.admin().await;
    let auditor = TestOperator::create(&admin, "audra", OperatorRole::Auditor).await;
    let api = AdminApi::new(relay.node.console_addr, &relay.cert_path());
    let token = api.token(&auditor, "read", None).await;
    let metric = |name: &str, d: &str| relay.metric(name, &[("direction", d)]) as u64;
    let want = (
        metric("noc_frames_relayed_total", "device_to_ves"),
        metric("noc_frames_relayed_total", "ves_to_device"),
        metric("noc_payload_relayed_bytes_total", "device_to_ves"),
        metric("noc_payload_relayed_bytes_total", "ves_to_device"),
    );
    assert_eq!(want.0, r.device_to_ves.sent, "the run's frames are the relay's");
    let sum = |records: &serde_json::Value, field: &str| {
        records.as_array().map_or(0, |a| a.iter().map(|d| d[field].as_u64().unwrap_or(0)).sum::<u64>())
    };
    // The node flushes every second: the records catch up with the counters.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let records = loop {
        let (status, records) = api.call("GET", "/usage", Some(&token), None).await;
        assert_eq!(status, 200, "{records}");
        let got = (
            sum(&records, "frames_to_ves"),
            sum(&records, "frames_to_devices"),
            sum(&records, "bytes_to_ves"),
            sum(&records, "bytes_to_devices"),
        );
        if got == want {
            break records;
        }
        assert!(std::time::Instant::now() < deadline, "usage {got:?} never reached the relay's counters {want:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(sum(&records, "active_devices"), 4, "{records}");
    assert_eq!(sum(&records, "active_users"), 2, "two devices per user: {records}");
    assert!(sum(&records, "device_seconds") >= 4, "four devices, over a second each: {records}");
    let (status, csv) = api.call_text("GET", "/usage.csv", Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(csv.lines().nth(1).is_some_and(|l| l.contains(&want.0.to_string())), "{csv}");
    relay.node.shutdown();
}
