//! `loadtest merge`: counters add up and histograms merge exactly.

use hdrhistogram::Histogram;
use noc_loadtest::cli::merge_files;
use noc_loadtest::result::{FrameCounts, HostUsage, IntervalCounts, Latency, RunResult, TimelinePoint, merge};
use noc_loadtest::stats::new_histogram;

fn hist(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
    let mut h = new_histogram();
    for v in values {
        h.record(v).expect("in range");
    }
    h
}

fn worker(values: Vec<u64>, start_ms: u64, lost: u64) -> RunResult {
    let h = hist(values.iter().copied());
    let lat = Latency::from_histogram(&h).expect("encode");
    let n = values.len() as u64;
    let counts = FrameCounts {
        sent: n + lost,
        acked: n,
        lost,
        received: n,
        undeliverable: [("queue_full".to_string(), 0)].into_iter().collect(),
        ..FrameCounts::default()
    };
    let point = |t: u64| TimelinePoint {
        t_seconds: t as f64,
        unix_ms: start_ms + t * 1000,
        interval_seconds: 1.0,
        phase: "traffic".into(),
        devices_online: 10,
        device_to_ves: IntervalCounts { sent: n / 2, received: n / 2, acked: n / 2, undeliverable: 0 },
        latency: lat.clone(),
        ..TimelinePoint::default()
    };
    let mut r = RunResult { format: noc_loadtest::result::RESULT_FORMAT, workers: 1, ..RunResult::default() };
    r.started_unix_ms = start_ms;
    r.device_to_ves = counts;
    r.sessions.devices_target = 10;
    r.latency.one_way = lat.clone();
    r.latency.one_way_device_to_ves = lat.clone();
    r.achieved_frames_per_second = n as f64;
    r.errors.insert("connect:timeout".into(), 1);
    r.timeline = vec![point(1), point(2)];
    r
}

#[test]
fn merged_results_add_counters_and_merge_histograms_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = worker((1..=1000).collect(), 1_700_000_000_000, 2);
    let b = worker((5000..=5999).collect(), 1_700_000_000_000, 0);
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    a.save(&pa).expect("save a");
    b.save(&pb).expect("save b");
    let out = dir.path().join("merged.json");
    let html = dir.path().join("merged.html");
    let m = merge_files(&[pa, pb], &out, Some(&html)).expect("merge");

    assert_eq!(m.workers, 2);
    assert_eq!(m.device_to_ves.sent, 2002);
    assert_eq!(m.device_to_ves.acked, 2000);
    assert_eq!(m.device_to_ves.lost, 2);
    assert_eq!(m.sessions.devices_target, 20);
    assert_eq!(m.errors.get("connect:timeout"), Some(&2));
    // Exact percentiles of the union, not an average of the workers' percentiles.
    let union = hist((1..=1000).chain(5000..=5999));
    assert_eq!(m.latency.one_way.count, 2000);
    assert_eq!(m.latency.one_way.p50_us, union.value_at_quantile(0.5));
    assert_eq!(m.latency.one_way.p99_us, union.value_at_quantile(0.99));
    assert_eq!(m.latency.one_way.max_us, union.max());
    assert_eq!(m.latency.one_way.histogram().expect("decode"), union);
    // Time series aligned on wall-clock seconds: two points, each the sum of both workers.
    assert_eq!(m.timeline.len(), 2);
    assert_eq!(m.timeline[0].devices_online, 20);
    assert_eq!(m.timeline[0].device_to_ves.sent, 1000);
    assert_eq!(m.timeline[0].latency.count, 2000);
    let back = RunResult::load(&out).expect("reload");
    assert_eq!(back.device_to_ves, m.device_to_ves);
    assert_eq!(back.latency.one_way.hdr, m.latency.one_way.hdr);
    assert!(std::fs::read_to_string(&html).expect("html").contains("<svg"));
}

#[test]
fn merging_nothing_or_garbage_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{}").expect("write");
    assert!(merge_files(&[bad], &dir.path().join("o.json"), None).is_err());
    assert!(noc_loadtest::merge(&[]).is_err());
}

#[test]
fn the_merged_host_steal_is_the_worst_workers_and_survives_a_round_trip() {
    let with = |steal: Option<f64>| {
        let mut r = worker((1..=10).collect(), 1_700_000_000_000, 0);
        r.host = steal.map(|steal_percent_traffic| HostUsage { steal_percent_traffic });
        r
    };
    let steal = |r: &RunResult| r.host.as_ref().map(|h| h.steal_percent_traffic);
    let m = merge(&[with(Some(1.0)), with(Some(4.0)), with(None)]).expect("merge");
    assert_eq!(steal(&m), Some(4.0));
    let m = merge(&[with(None), with(Some(0.5))]).expect("merge");
    assert_eq!(steal(&m), Some(0.5));
    assert_eq!(steal(&merge(&[with(None), with(None)]).expect("merge")), None);

    // Written only when measured; a file without it (an earlier version's) still reads.
    let dir = tempfile::tempdir().expect("tempdir");
    let (measured, unmeasured) = (dir.path().join("a.json"), dir.path().join("b.json"));
    with(Some(2.5)).save(&measured).expect("save");
    with(None).save(&unmeasured).expect("save");
    assert!(std::fs::read_to_string(&unmeasured).expect("read").find("\"host\"").is_none());
    let both = merge_files(&[measured, unmeasured], &dir.path().join("m.json"), None).expect("merge files");
    assert_eq!(steal(&both), Some(2.5));
}

#[test]
fn the_tools_send_delays_and_the_latency_from_the_send_merge_exactly_and_an_old_file_reads_as_empty() {
    let with_delays = |values: Vec<u64>| {
        let mut r = worker((1..=10).collect(), 1_700_000_000_000, 0);
        let lat = Latency::from_histogram(&hist(values)).expect("encode");
        r.latency.send_delay_device_to_ves = lat.clone();
        r.latency.send_delay_ves_to_device = lat.clone();
        r.latency.from_send_device_to_ves = lat.clone();
        r.latency.from_send_ves_to_device = lat;
        r
    };
    let m = merge(&[with_delays(vec![10; 99]), with_delays(vec![5000])]).expect("merge");
    let lt = &m.latency;
    for l in [
        &lt.send_delay_device_to_ves,
        &lt.send_delay_ves_to_device,
        &lt.from_send_device_to_ves,
        &lt.from_send_ves_to_device,
    ] {
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_us, 10);
        assert!((5_000..5_010).contains(&l.max_us), "5000 µs within the histogram's 3 significant digits");
    }
    let summary = m.summary();
    assert!(summary.contains("the tool's send delay ms (scheduled → queued): device→VES p50 0.010 p99 0.010"));
    assert!(summary.contains("one-way from the send ms (queued → received): device→VES p50 0.010 p99 0.010"));

    // A file of an earlier version has no send delays: it reads as empty and merges.
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = (dir.path().join("old.json"), dir.path().join("new.json"));
    let mut v = serde_json::to_value(worker((1..=10).collect(), 1_700_000_000_000, 0)).expect("to json");
    let latency = v.get_mut("latency").and_then(|l| l.as_object_mut()).expect("latency object");
    for field in
        ["send_delay_device_to_ves", "send_delay_ves_to_device", "from_send_device_to_ves", "from_send_ves_to_device"]
    {
        assert!(latency.remove(field).is_some(), "{field} is written");
    }
    std::fs::write(&old, serde_json::to_vec(&v).expect("encode")).expect("write");
    with_delays(vec![7; 4]).save(&new).expect("save");
    let both = merge_files(&[old, new], &dir.path().join("m.json"), None).expect("merge files");
    assert_eq!(both.latency.send_delay_device_to_ves.count, 4);
    assert_eq!(both.latency.send_delay_ves_to_device.p50_us, 7);
    assert_eq!(both.latency.from_send_device_to_ves.count, 4);
    let summary = worker((1..=10).collect(), 0, 0).summary();
    assert!(
        !summary.contains("send delay") && !summary.contains("from the send"),
        "no lines when nothing was measured"
    );
}
