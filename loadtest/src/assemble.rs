//! The result file of a finished run (sessions stopped, last samples taken).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use noc_protocol::clock::unix_ms;

use crate::phases::{PhaseOutcome, PhaseWindow};
use crate::procfs::ProcSample;
use crate::reporter::{Reporter, frame_counts};
use crate::result::{
    HostUsage, Latencies, Latency, Machine, Phases, ProcessUsage, RESULT_FORMAT, ReportError, RunResult, Sessions,
    StormResult, Target,
};
use crate::scenario::Scenario;
use crate::stats::{Metric, Stats};

/// Everything [`assemble`] turns into a [`RunResult`].
pub(crate) struct Assembly<'a> {
    pub scenario: &'a Scenario,
    pub target: Target,
    pub started_unix_ms: u64,
    pub window: &'a PhaseWindow,
    pub outcome: &'a PhaseOutcome,
    pub reporter: &'a mut Reporter,
    pub stats: &'a Stats,
    pub relay_pid: Option<u32>,
    pub ves_established: u64,
    pub relay_metrics_delta: BTreeMap<String, f64>,
    pub storm: Option<StormResult>,
}

/// The result of a finished run (sessions stopped, last samples taken).
pub(crate) fn assemble(a: Assembly<'_>) -> Result<RunResult, ReportError> {
    let Assembly { scenario, target, started_unix_ms, window, outcome, reporter, stats, .. } = a;
    let t0 = window.t0;
    let secs = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let traffic_secs = scenario.duration_seconds.max(1e-3);
    let usage = |before: u64,
                 at_start: Option<ProcSample>,
                 at_end: Option<ProcSample>,
                 last: Option<ProcSample>,
                 peak: u64,
                 pid: Option<u32>| ProcessUsage {
        pid,
        rss_kib_before_sessions: before,
        rss_kib_at_traffic_start: at_start.map(|s| s.rss_kib).unwrap_or(0),
        rss_kib_peak: last.map(|s| s.rss_peak_kib).unwrap_or(0).max(peak),
        rss_kib_end: last.map(|s| s.rss_kib).unwrap_or(0),
        cpu_percent_traffic: match (at_start, at_end) {
            (Some(a), Some(b)) => 100.0 * (b.cpu_seconds - a.cpu_seconds) / traffic_secs,
            _ => 0.0,
        },
        cpu_seconds_total: last.map(|s| s.cpu_seconds).unwrap_or(0.0),
        threads: last.map(|s| s.threads).unwrap_or(0),
    };
    let relay = a.relay_pid.map(|pid| {
        usage(
            reporter.relay_rss_before_kib,
            outcome.relay_at_start,
            outcome.relay_at_end,
            reporter.relay_last,
            reporter.relay_peak_kib,
            Some(pid),
        )
    });
    let loadgen = Some(usage(
        reporter.loadgen_rss_before_kib,
        outcome.loadgen_at_start,
        outcome.loadgen_at_end,
        reporter.loadgen_last,
        reporter.loadgen_peak_kib,
        Some(std::process::id()),
    ));
    let mut one_way = reporter.totals[Metric::OneWayDeviceToVes.index()].clone();
    let _ = one_way.add(&reporter.totals[Metric::OneWayVesToDevice.index()]);
    let device_to_ves = frame_counts(&stats.device_to_ves);
    let ves_to_device = frame_counts(&stats.ves_to_device);
    let received = device_to_ves.received + ves_to_device.received;
    let ramp_seconds = outcome
        .all_online_at
        .unwrap_or(window.traffic_start)
        .saturating_duration_since(window.ramp_start)
        .as_secs_f64();
    let devices_at_traffic_start = outcome.devices_at_traffic_start;
    Ok(RunResult {
        format: RESULT_FORMAT,
        tool: concat!("noc-loadtest ", env!("CARGO_PKG_VERSION")).into(),
        workers: 1,
        scenario: scenario.clone(),
        target,
        machine: Machine::this(),
        started_unix_ms,
        finished_unix_ms: unix_ms(),
        phases: Phases {
            setup_seconds: window.setup_seconds,
            ramp_start: secs(window.ramp_start),
            traffic_start: secs(window.traffic_start),
            traffic_end: secs(window.traffic_end),
            drain_end: secs(outcome.drain_end),
        },
        sessions: Sessions {
            ves_target: scenario.ves_count as u64,
            ves_established: a.ves_established,
            devices_target: scenario.total_devices(),
            devices_at_traffic_start,
            devices_peak: stats.devices_online_peak.load(Ordering::Relaxed).max(0) as u64,
            connect_attempts: stats.connect_attempts.load(Ordering::Relaxed),
            connect_ok: stats.connect_ok.load(Ordering::Relaxed),
            connect_failed: stats.connect_failed.load(Ordering::Relaxed),
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            churn_disconnects: stats.churn_disconnects.load(Ordering::Relaxed),
            ramp_seconds,
            connect_rate_per_second: if ramp_seconds > 0.0 {
                devices_at_traffic_start as f64 / ramp_seconds
            } else {
                0.0
            },
        },
        device_to_ves,
        ves_to_device,
        latency: Latencies {
            one_way: Latency::from_histogram(&one_way)?,
            one_way_device_to_ves: reporter.total(Metric::OneWayDeviceToVes)?,
            one_way_ves_to_device: reporter.total(Metric::OneWayVesToDevice)?,
            ack_device_to_ves: reporter.total(Metric::AckDeviceToVes)?,
            ack_ves_to_device: reporter.total(Metric::AckVesToDevice)?,
            connect: reporter.total(Metric::Connect)?,
            send_delay_device_to_ves: reporter.total(Metric::SendDelayDeviceToVes)?,
            send_delay_ves_to_device: reporter.total(Metric::SendDelayVesToDevice)?,
            from_send_device_to_ves: reporter.total(Metric::FromSendDeviceToVes)?,
            from_send_ves_to_device: reporter.total(Metric::FromSendVesToDevice)?,
        },
        achieved_frames_per_second: received as f64 / traffic_secs,
        errors: stats.errors(),
        data_requests: stats.data_requests.load(Ordering::Relaxed),
        data_request_failures: stats.data_request_failures.load(Ordering::Relaxed),
        relay,
        loadgen,
        relay_metrics_delta: a.relay_metrics_delta,
        storm: a.storm,
        host: outcome
            .host_at_start
            .zip(outcome.host_at_end)
            .and_then(|(start, end)| start.steal_percent_until(&end))
            .map(|steal_percent_traffic| HostUsage { steal_percent_traffic }),
        timeline: std::mem::take(&mut reporter.timeline),
    })
}
