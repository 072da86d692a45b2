//! The result file of a run, and merging the results of many workers.
//!
//! Histograms travel inside the JSON in HdrHistogram's V2 encoding (base64), so merging
//! the files of parallel workers gives exact percentiles of the whole campaign, not an
//! average of percentiles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::scenario::Scenario;
use crate::stats::new_histogram;

/// Layout version of the result file.
pub const RESULT_FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a load-test result: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("histogram encoding: {0}")]
    Histogram(String),
    #[error("nothing to merge")]
    Empty,
}

/// A latency distribution: its summary, and the histogram itself for merging.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// HdrHistogram V2 encoding, base64, microseconds.
    pub hdr: String,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Result<Self, ReportError> {
        let mut raw = Vec::new();
        V2Serializer::new().serialize(h, &mut raw).map_err(|e| ReportError::Histogram(format!("{e:?}")))?;
        let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
        Ok(Self {
            count: h.len(),
            min_us: if h.is_empty() { 0 } else { h.min() },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
            hdr: base64::engine::general_purpose::STANDARD.encode(raw),
        })
    }

    /// The histogram back from its encoding.
    pub fn histogram(&self) -> Result<Histogram<u64>, ReportError> {
        if self.hdr.is_empty() {
            return Ok(new_histogram());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.hdr)
            .map_err(|e| ReportError::Histogram(e.to_string()))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(raw))
            .map_err(|e| ReportError::Histogram(format!("{e:?}")))?;
        let mut out = new_histogram();
        out.add(&h).map_err(|e| ReportError::Histogram(format!("{e:?}")))?;
        Ok(out)
    }
}

/// Frame counters of one direction.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FrameCounts {
    /// Frames put on the wire by the sending endpoint.
    pub sent: u64,
    /// End-to-end acknowledged.
    pub acked: u64,
    /// Refused by the relay, by reason (`request_failed`: the data-channel request failed).
    pub undeliverable: BTreeMap<String, u64>,
    /// Sent, and neither acknowledged nor refused by the end of the drain.
    pub lost: u64,
    /// Received by the other endpoint.
    pub received: u64,
    /// Timetable frames not sent because the sender or every target was offline.
    pub skipped_offline: u64,
    /// Acks or notices for frames already resolved.
    pub late_notices: u64,
    /// Unresolved frames sent again after the relay closed the session with CLOSE (as
    /// protocol §7.1 asks: they may have crossed the CLOSE unread). Not counted in `sent`.
    #[serde(default)]
    pub resent: u64,
    /// Received payloads without a load-tool stamp.
    pub foreign_payloads: u64,
}

impl FrameCounts {
    pub fn undeliverable_total(&self) -> u64 {
        self.undeliverable.values().sum()
    }

    fn add(&mut self, o: &FrameCounts) {
        self.sent += o.sent;
        self.acked += o.acked;
        for (k, v) in &o.undeliverable {
            *self.undeliverable.entry(k.clone()).or_default() += v;
        }
        self.lost += o.lost;
        self.received += o.received;
        self.skipped_offline += o.skipped_offline;
        self.late_notices += o.late_notices;
        self.resent += o.resent;
        self.foreign_payloads += o.foreign_payloads;
    }
}

/// Sessions and connection establishment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sessions {
    pub ves_target: u64,
    pub ves_established: u64,
    pub devices_target: u64,
    /// Devices online when traffic started.
    pub devices_at_traffic_start: u64,
    pub devices_peak: u64,
    pub connect_attempts: u64,
    pub connect_ok: u64,
    pub connect_failed: u64,
    pub reconnects: u64,
    pub churn_disconnects: u64,
    /// Seconds from the first connection attempt until every device was online (or the
    /// ramp ended).
    pub ramp_seconds: f64,
    /// Sessions established per second during the ramp.
    pub connect_rate_per_second: f64,
}

/// Resource use of a local process.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessUsage {
    pub pid: Option<u32>,
    /// Before any device connected.
    pub rss_kib_before_sessions: u64,
    /// When traffic started (every session established, nothing sent yet).
    pub rss_kib_at_traffic_start: u64,
    pub rss_kib_peak: u64,
    pub rss_kib_end: u64,
    /// Average CPU during the traffic phase, percent of one core.
    pub cpu_percent_traffic: f64,
    pub cpu_seconds_total: f64,
    pub threads: u64,
}

impl ProcessUsage {
    /// Resident memory per device session: growth from before the sessions to traffic
    /// start, divided by the sessions then online. `None` without data.
    pub fn rss_bytes_per_session(&self, sessions: u64) -> Option<f64> {
        if sessions == 0 || self.rss_kib_at_traffic_start == 0 {
            return None;
        }
        Some((self.rss_kib_at_traffic_start as f64 - self.rss_kib_before_sessions as f64) * 1024.0 / sessions as f64)
    }
}

/// Counts of one direction in one interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalCounts {
    pub sent: u64,
    pub received: u64,
    pub acked: u64,
    pub undeliverable: u64,
}

/// One point of the time series.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TimelinePoint {
    /// End of the interval, seconds since the run started.
    pub t_seconds: f64,
    pub unix_ms: u64,
    pub interval_seconds: f64,
    pub phase: String,
    pub devices_online: u64,
    pub ves_online: u64,
    pub device_to_ves: IntervalCounts,
    pub ves_to_device: IntervalCounts,
    /// One-way latency of both directions received in this interval.
    pub latency: Latency,
    pub relay_rss_kib: Option<u64>,
    pub relay_cpu_percent: Option<f64>,
    pub loadgen_cpu_percent: Option<f64>,
}

/// Seconds since the run started at which each phase began.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Phases {
    pub setup_seconds: f64,
    pub ramp_start: f64,
    pub traffic_start: f64,
    pub traffic_end: f64,
    pub drain_end: f64,
}

/// Latency distributions of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latencies {
    /// Scheduled send → receipt, both directions.
    pub one_way: Latency,
    pub one_way_device_to_ves: Latency,
    pub one_way_ves_to_device: Latency,
    /// Scheduled send → acknowledgement back at the sender.
    pub ack_device_to_ves: Latency,
    pub ack_ves_to_device: Latency,
    /// Device TCP + TLS + HELLO + AUTH.
    pub connect: Latency,
    /// Scheduled send → the sender queues the frame for writing: what the tool itself adds
    /// to the one-way latency of each direction (empty in files of earlier versions).
    #[serde(default)]
    pub send_delay_device_to_ves: Latency,
    #[serde(default)]
    pub send_delay_ves_to_device: Latency,
    /// Queued by the sender → receipt: the server's and the network's share of the one-way
    /// latency (empty in files of earlier versions).
    #[serde(default)]
    pub from_send_device_to_ves: Latency,
    #[serde(default)]
    pub from_send_ves_to_device: Latency,
}

/// Where the load went.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Target {
    pub relay_url: String,
    pub device_addr: String,
    pub source_ips: Vec<String>,
}

/// The machine the load tool ran on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub hostname: String,
    pub cpus: u64,
    pub cpu_model: String,
    pub memory_kib: u64,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpus: std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1),
            cpu_model,
            memory_kib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// The result file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub format: u32,
    pub tool: String,
    /// Results combined into this one (1 for a single run).
    pub workers: u32,
    pub scenario: Scenario,
    pub target: Target,
    pub machine: Machine,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    pub phases: Phases,
    pub sessions: Sessions,
    pub device_to_ves: FrameCounts,
    pub ves_to_device: FrameCounts,
    pub latency: Latencies,
    /// Achieved rates over the traffic phase (frames received per second, both ways).
    pub achieved_frames_per_second: f64,
    pub errors: BTreeMap<String, u64>,
    pub data_requests: u64,
    pub data_request_failures: u64,
    pub relay: Option<ProcessUsage>,
    pub loadgen: Option<ProcessUsage>,
    /// Changes of the relay's own counters over the run (from its `/metrics`), to check
    /// them against the tool's.
    pub relay_metrics_delta: BTreeMap<String, f64>,
    /// The reconnect storm, when the scenario had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormResult>,
    /// The machine the tool ran on, over the traffic phase (absent where `/proc/stat`
    /// cannot be read, and in files of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostUsage>,
    pub timeline: Vec<TimelinePoint>,
}

/// What the machine itself did during the traffic phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HostUsage {
    /// Percent of all CPUs' time that the hypervisor gave to other guests while this
    /// machine's CPUs wanted to run (`steal` in `/proc/stat`). On a shared host it makes
    /// latencies and rates of the run depend on the neighbours: compare runs only where
    /// it is near zero.
    pub steal_percent_traffic: f64,
}

/// What a reconnect storm (`storm_at_seconds`) cost: every device online at that moment
/// dropped its session at once and reconnected straight away.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StormResult {
    /// Seconds into the traffic phase.
    pub at_seconds: f64,
    /// Devices online when the storm began (all of them dropped).
    pub devices_dropped: u64,
    /// Sessions established again (TCP, TLS, HELLO, AUTH) before the deadline.
    pub reconnected: u64,
    /// Time from the drop until every dropped device was authenticated again; `None` if
    /// some were not by the end of the run.
    pub recovery_seconds: Option<f64>,
    /// `reconnected` over the time it took.
    pub reconnects_per_second: f64,
    /// CPU the relay spent over the same time (when it runs locally).
    pub relay_cpu_seconds: Option<f64>,
    /// Reconnections (handshake + authentication) per relay CPU-second: the rate one core
    /// sustains.
    pub reconnects_per_relay_cpu_second: Option<f64>,
    /// Wall clock (Unix ms) of the drop, and of the moment the last device was back: lets
    /// `merge` time a campaign's storm from its first drop to its last recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_back_unix_ms: Option<u64>,
}

impl RunResult {
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.into(), source })?;
        let r: RunResult = serde_json::from_str(&text)
            .map_err(|e| ReportError::Parse { path: path.into(), message: e.to_string() })?;
        if r.format != RESULT_FORMAT {
            return Err(ReportError::Parse { path: path.into(), message: format!("format {}", r.format) });
        }
        Ok(r)
    }

    pub fn save(&self, path: &Path) -> Result<(), ReportError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| ReportError::Parse { path: path.into(), message: e.to_string() })?;
        std::fs::write(path, json).map_err(|source| ReportError::Io { path: path.into(), source })
    }

    /// Frames sent in both directions.
    pub fn sent(&self) -> u64 {
        self.device_to_ves.sent + self.ves_to_device.sent
    }

    pub fn lost(&self) -> u64 {
        self.device_to_ves.lost + self.ves_to_device.lost
    }

    pub fn undeliverable(&self) -> u64 {
        self.device_to_ves.undeliverable_total() + self.ves_to_device.undeliverable_total()
    }

    /// A human-readable summary for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency.one_way;
        let ms = |us: u64| us as f64 / 1000.0;
        s.push_str(&format!(
            "scenario {:?}: {} VES, {} devices, {} B frames, {:.0} frames/s for {:.0} s ({} worker{})\n",
            self.scenario.name,
            self.sessions.ves_target,
            self.sessions.devices_target,
            self.scenario.frame_size_bytes,
            self.scenario.rate_frames_per_second * self.workers as f64,
            self.scenario.duration_seconds,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
        ));
        s.push_str(&format!(
            "sessions: {} VES, {} devices at traffic start (peak {}), connect {:.0}/s, {} failed, {} reconnects\n",
            self.sessions.ves_established,
            self.sessions.devices_at_traffic_start,
            self.sessions.devices_peak,
            self.sessions.connect_rate_per_second,
            self.sessions.connect_failed,
            self.sessions.reconnects,
        ));
        for (name, c) in [("device→VES", &self.device_to_ves), ("VES→device", &self.ves_to_device)] {
            s.push_str(&format!(
                "{name}: sent {} acked {} undeliverable {} lost {} (received {}, skipped offline {}, resent after CLOSE {})\n",
                c.sent,
                c.acked,
                c.undeliverable_total(),
                c.lost,
                c.received,
                c.skipped_offline,
                c.resent
            ));
        }
        s.push_str(&format!(
            "achieved {:.0} frames/s; one-way latency ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} (n={})\n",
            self.achieved_frames_per_second,
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            l.count
        ));
        let lt = &self.latency;
        for (what, dv, vd) in [
            // What of the one-way latency is the tool's own: a frame's scheduled time to the
            // moment its sender queued it; and the rest, from that moment to the receipt.
            (
                "the tool's send delay ms (scheduled → queued)",
                &lt.send_delay_device_to_ves,
                &lt.send_delay_ves_to_device,
            ),
            ("one-way from the send ms (queued → received)", &lt.from_send_device_to_ves, &lt.from_send_ves_to_device),
        ] {
            if dv.count + vd.count > 0 {
                s.push_str(&format!(
                    "{what}: device→VES p50 {:.3} p99 {:.3}, VES→device p50 {:.3} p99 {:.3}\n",
                    ms(dv.p50_us),
                    ms(dv.p99_us),
                    ms(vd.p50_us),
                    ms(vd.p99_us)
                ));
            }
        }
        if let Some(r) = &self.relay {
            s.push_str(&format!(
                "relay: RSS {} MiB at traffic start (peak {} MiB), CPU {:.0}% during traffic",
                r.rss_kib_at_traffic_start / 1024,
                r.rss_kib_peak / 1024,
                r.cpu_percent_traffic
            ));
            if let Some(b) = r.rss_bytes_per_session(self.sessions.devices_at_traffic_start) {
                s.push_str(&format!(", {:.1} KiB per device session", b / 1024.0));
            }
            s.push('\n');
        }
        if let Some(h) = &self.host {
            s.push_str(&format!("host: {:.1}% of the CPU time stolen during traffic\n", h.steal_percent_traffic));
        }
        if let Some(st) = &self.storm {
            s.push_str(&format!(
                "storm at {:.1} s: {} dropped, {} reconnected, {}, {:.0} reconnects/s",
                st.at_seconds,
                st.devices_dropped,
                st.reconnected,
                match st.recovery_seconds {
                    Some(t) => format!("all back in {t:.2} s"),
                    None => "NOT all back by the end of the run".into(),
                },
                st.reconnects_per_second
            ));
            if let Some(per_cpu) = st.reconnects_per_relay_cpu_second {
                s.push_str(&format!(", {per_cpu:.0} per relay CPU-second"));
            }
            s.push('\n');
        }
        if !self.errors.is_empty() {
            let e: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("errors: {}\n", e.join(" ")));
        }
        s
    }
}

fn merge_latency(a: &Latency, b: &Latency) -> Result<Latency, ReportError> {
    let mut h = a.histogram()?;
    h.add(b.histogram()?).map_err(|e| ReportError::Histogram(format!("{e:?}")))?;
    Latency::from_histogram(&h)
}

/// Combines the results of parallel workers: counters add up, histograms merge exactly,
/// time series are aligned on wall-clock seconds.
pub fn merge(results: &[RunResult]) -> Result<RunResult, ReportError> {
    let (first, rest) = results.split_first().ok_or(ReportError::Empty)?;
    let mut m = first.clone();
    let start = results.iter().map(|r| r.started_unix_ms).min().unwrap_or(0);
    for r in rest {
        m.workers += r.workers;
        m.started_unix_ms = start;
        m.finished_unix_ms = m.finished_unix_ms.max(r.finished_unix_ms);
        let s = &mut m.sessions;
        let o = &r.sessions;
        s.ves_target += o.ves_target;
        s.ves_established += o.ves_established;
        s.devices_target += o.devices_target;
        s.devices_at_traffic_start += o.devices_at_traffic_start;
        s.devices_peak += o.devices_peak;
        s.connect_attempts += o.connect_attempts;
        s.connect_ok += o.connect_ok;
        s.connect_failed += o.connect_failed;
        s.reconnects += o.reconnects;
        s.churn_disconnects += o.churn_disconnects;
        s.ramp_seconds = s.ramp_seconds.max(o.ramp_seconds);
        s.connect_rate_per_second += o.connect_rate_per_second;
        m.device_to_ves.add(&r.device_to_ves);
        m.ves_to_device.add(&r.ves_to_device);
        let l = &mut m.latency;
        l.one_way = merge_latency(&l.one_way, &r.latency.one_way)?;
        l.one_way_device_to_ves = merge_latency(&l.one_way_device_to_ves, &r.latency.one_way_device_to_ves)?;
        l.one_way_ves_to_device = merge_latency(&l.one_way_ves_to_device, &r.latency.one_way_ves_to_device)?;
        l.ack_device_to_ves = merge_latency(&l.ack_device_to_ves, &r.latency.ack_device_to_ves)?;
        l.ack_ves_to_device = merge_latency(&l.ack_ves_to_device, &r.latency.ack_ves_to_device)?;
        l.connect = merge_latency(&l.connect, &r.latency.connect)?;
        l.send_delay_device_to_ves = merge_latency(&l.send_delay_device_to_ves, &r.latency.send_delay_device_to_ves)?;
        l.send_delay_ves_to_device = merge_latency(&l.send_delay_ves_to_device, &r.latency.send_delay_ves_to_device)?;
        l.from_send_device_to_ves = merge_latency(&l.from_send_device_to_ves, &r.latency.from_send_device_to_ves)?;
        l.from_send_ves_to_device = merge_latency(&l.from_send_ves_to_device, &r.latency.from_send_ves_to_device)?;
        m.achieved_frames_per_second += r.achieved_frames_per_second;
        for (k, v) in &r.errors {
            *m.errors.entry(k.clone()).or_default() += v;
        }
        m.data_requests += r.data_requests;
        m.data_request_failures += r.data_request_failures;
        // Each worker's own process; the relay is usually shared: keep the first sample set.
        if m.relay.is_none() {
            m.relay = r.relay.clone();
        }
        m.loadgen = None;
        m.target.source_ips.extend(r.target.source_ips.iter().cloned());
        if m.relay_metrics_delta.is_empty() {
            m.relay_metrics_delta = r.relay_metrics_delta.clone();
        }
        // Workers may run on different machines: the worst host speaks for the run.
        m.host = match (m.host.take(), &r.host) {
            (Some(a), Some(b)) if b.steal_percent_traffic > a.steal_percent_traffic => Some(b.clone()),
            (a, b) => a.or_else(|| b.clone()),
        };
        m.storm = match (m.storm.take(), &r.storm) {
            (Some(a), Some(b)) => Some(merge_storms(&a, b)),
            (a, b) => a.or_else(|| b.clone()),
        };
    }
    m.target.source_ips.sort();
    m.target.source_ips.dedup();
    m.timeline = merge_timelines(results, start)?;
    Ok(m)
}

/// Workers' storms (run at the same moment, e.g. with `--start-at-unix-ms`): drops and
/// reconnections add up. The campaign's recovery runs from the first worker's drop to the
/// last worker's recovery when both carry wall-clock stamps, else it is the slowest
/// worker's. The relay CPU is the largest sample: workers usually sample the same
/// processes (one relay, or every node of a local cluster) over nearly the same window.
fn merge_storms(a: &StormResult, b: &StormResult) -> StormResult {
    let devices_dropped = a.devices_dropped + b.devices_dropped;
    let reconnected = a.reconnected + b.reconnected;
    let min = |x: Option<u64>, y: Option<u64>| x.zip(y).map(|(x, y)| x.min(y));
    let max = |x: Option<u64>, y: Option<u64>| x.zip(y).map(|(x, y)| x.max(y));
    let dropped_unix_ms = min(a.dropped_unix_ms, b.dropped_unix_ms);
    let all_back_unix_ms = max(a.all_back_unix_ms, b.all_back_unix_ms);
    let slowest = a.recovery_seconds.zip(b.recovery_seconds).map(|(x, y)| x.max(y));
    let recovery_seconds = match (slowest, dropped_unix_ms, all_back_unix_ms) {
        (Some(slowest), Some(first), Some(last)) => Some(slowest.max(last.saturating_sub(first) as f64 / 1000.0)),
        (slowest, _, _) => slowest,
    };
    let relay_cpu_seconds = match (a.relay_cpu_seconds, b.relay_cpu_seconds) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let span = recovery_seconds.unwrap_or(0.0);
    StormResult {
        at_seconds: a.at_seconds,
        devices_dropped,
        reconnected,
        recovery_seconds,
        reconnects_per_second: if span > 0.0 {
            reconnected as f64 / span
        } else {
            a.reconnects_per_second + b.reconnects_per_second
        },
        relay_cpu_seconds,
        reconnects_per_relay_cpu_second: relay_cpu_seconds.filter(|c| *c > 0.0).map(|c| reconnected as f64 / c),
        dropped_unix_ms,
        all_back_unix_ms: recovery_seconds.and(all_back_unix_ms),
    }
}

/// Buckets every worker's points by the wall-clock second they end in.
fn merge_timelines(results: &[RunResult], start_ms: u64) -> Result<Vec<TimelinePoint>, ReportError> {
    let mut buckets: BTreeMap<u64, TimelinePoint> = BTreeMap::new();
    let mut hists: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for r in results {
        for p in &r.timeline {
            let sec = p.unix_ms.div_ceil(1000);
            let b = buckets.entry(sec).or_insert_with(|| TimelinePoint {
                t_seconds: (sec * 1000).saturating_sub(start_ms) as f64 / 1000.0,
                unix_ms: sec * 1000,
                interval_seconds: p.interval_seconds,
                phase: p.phase.clone(),
                ..TimelinePoint::default()
            });
            b.devices_online += p.devices_online;
            b.ves_online += p.ves_online;
            for (dst, src) in [(&mut b.device_to_ves, &p.device_to_ves), (&mut b.ves_to_device, &p.ves_to_device)] {
                dst.sent += src.sent;
                dst.received += src.received;
                dst.acked += src.acked;
                dst.undeliverable += src.undeliverable;
            }
            if b.relay_rss_kib.is_none() {
                b.relay_rss_kib = p.relay_rss_kib;
                b.relay_cpu_percent = p.relay_cpu_percent;
            }
            let h = hists.entry(sec).or_insert_with(new_histogram);
            h.add(p.latency.histogram()?).map_err(|e| ReportError::Histogram(format!("{e:?}")))?;
        }
    }
    let mut out = Vec::with_capacity(buckets.len());
    for (sec, mut p) in buckets {
        if let Some(h) = hists.get(&sec) {
            p.latency = Latency::from_histogram(h)?;
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for v in values {
            h.record(*v).expect("in range");
        }
        h
    }

    #[test]
    fn latency_round_trips_through_its_encoding() {
        let h = hist(&[100, 200, 300, 10_000]);
        let l = Latency::from_histogram(&h).expect("encode");
        assert_eq!(l.count, 4);
        assert_eq!(l.histogram().expect("decode"), h);
        assert_eq!(Latency::default().histogram().expect("empty").len(), 0);
    }

    fn storm(dropped: u64, back_after_ms: Option<u64>, dropped_at: u64) -> StormResult {
        StormResult {
            at_seconds: 5.0,
            devices_dropped: dropped,
            reconnected: if back_after_ms.is_some() { dropped } else { dropped / 2 },
            recovery_seconds: back_after_ms.map(|ms| ms as f64 / 1000.0),
            reconnects_per_second: 0.0,
            relay_cpu_seconds: Some(4.0),
            reconnects_per_relay_cpu_second: None,
            dropped_unix_ms: Some(dropped_at),
            all_back_unix_ms: back_after_ms.map(|ms| dropped_at + ms),
        }
    }

    #[test]
    fn a_campaign_storm_runs_from_the_first_drop_to_the_last_recovery() {
        // Worker b dropped 300 ms after worker a and took 2 s: 2.3 s for the campaign,
        // longer than either worker's own recovery.
        let m = merge_storms(&storm(1000, Some(1500), 10_000), &storm(2000, Some(2000), 10_300));
        assert_eq!(m.devices_dropped, 3000);
        assert_eq!(m.reconnected, 3000);
        assert_eq!(m.recovery_seconds, Some(2.3));
        assert_eq!(m.dropped_unix_ms, Some(10_000));
        assert_eq!(m.all_back_unix_ms, Some(12_300));
        assert!((m.reconnects_per_second - 3000.0 / 2.3).abs() < 1e-9);
        assert_eq!(m.reconnects_per_relay_cpu_second, Some(750.0));
    }

    #[test]
    fn a_campaign_storm_is_not_over_while_one_worker_is_not_back() {
        let m = merge_storms(&storm(1000, Some(1500), 10_000), &storm(2000, None, 10_000));
        assert_eq!(m.recovery_seconds, None);
        assert_eq!(m.all_back_unix_ms, None);
        assert_eq!(m.reconnected, 2000);
    }

    #[test]
    fn storms_without_stamps_take_the_slowest_worker() {
        let unstamped = |s: StormResult| StormResult { dropped_unix_ms: None, all_back_unix_ms: None, ..s };
        let m = merge_storms(&unstamped(storm(10, Some(1000), 0)), &unstamped(storm(10, Some(3000), 0)));
        assert_eq!(m.recovery_seconds, Some(3.0));
    }
}
