//! The measurements of a run: one timeline point per interval (counts, latency
//! histograms, the processes' memory and CPU), totals, and the live status line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::payload::Clock;
use crate::procfs::{HostSample, HostSampler, ProcSample, ProcSampler};
use crate::result::{FrameCounts, IntervalCounts, Latency, ReportError, TimelinePoint};
use crate::stats::{DirectionCounters, METRICS, Metric, Stats, UNDELIVERABLE_NAMES, new_histogram};

/// Collects the time series.
pub(crate) struct Reporter {
    stats: Arc<Stats>,
    clock: Clock,
    t0: Instant,
    pub(crate) totals: Vec<Histogram<u64>>,
    interval: Vec<Histogram<u64>>,
    last: [IntervalCounts; 2],
    last_tick: Instant,
    relay: Option<ProcSampler>,
    loadgen: ProcSampler,
    host: HostSampler,
    pub(crate) relay_last: Option<ProcSample>,
    pub(crate) host_last: Option<HostSample>,
    pub(crate) loadgen_last: Option<ProcSample>,
    pub(crate) relay_peak_kib: u64,
    pub(crate) loadgen_peak_kib: u64,
    /// RSS before any session was opened (the baseline of per-session memory).
    pub(crate) relay_rss_before_kib: u64,
    pub(crate) loadgen_rss_before_kib: u64,
    pub(crate) timeline: Vec<TimelinePoint>,
}

fn counts(c: &DirectionCounters) -> IntervalCounts {
    IntervalCounts {
        sent: c.sent.load(Ordering::Relaxed),
        received: c.received.load(Ordering::Relaxed),
        acked: c.acked.load(Ordering::Relaxed),
        undeliverable: c.undeliverable_total(),
    }
}

fn delta(now: &IntervalCounts, before: &IntervalCounts) -> IntervalCounts {
    IntervalCounts {
        sent: now.sent.saturating_sub(before.sent),
        received: now.received.saturating_sub(before.received),
        acked: now.acked.saturating_sub(before.acked),
        undeliverable: now.undeliverable.saturating_sub(before.undeliverable),
    }
}

impl Reporter {
    pub(crate) fn new(stats: Arc<Stats>, clock: Clock, t0: Instant, relay_pids: &[u32]) -> Self {
        let hists = || METRICS.iter().map(|_| new_histogram()).collect::<Vec<_>>();
        Self {
            stats,
            clock,
            t0,
            totals: hists(),
            interval: hists(),
            last: Default::default(),
            last_tick: Instant::now(),
            relay: (!relay_pids.is_empty()).then(|| ProcSampler::group(relay_pids)),
            loadgen: ProcSampler::this_process(),
            host: HostSampler::default(),
            relay_last: None,
            host_last: None,
            loadgen_last: None,
            relay_peak_kib: 0,
            loadgen_peak_kib: 0,
            relay_rss_before_kib: 0,
            loadgen_rss_before_kib: 0,
            timeline: Vec::new(),
        }
    }

    pub(crate) fn sample(&mut self) {
        self.relay_last = self.relay.as_mut().and_then(|r| r.sample());
        if let Some(s) = self.relay_last {
            self.relay_peak_kib = self.relay_peak_kib.max(s.rss_kib);
        }
        self.loadgen_last = self.loadgen.sample();
        if let Some(s) = self.loadgen_last {
            self.loadgen_peak_kib = self.loadgen_peak_kib.max(s.rss_kib);
        }
        self.host_last = self.host.sample();
    }

    /// Samples both processes before sessions open: the baseline of per-session memory.
    /// The first interval starts here too.
    pub(crate) fn baseline(&mut self) {
        self.last_tick = Instant::now();
        self.sample();
        self.relay_rss_before_kib = self.relay_last.map(|s| s.rss_kib).unwrap_or(0);
        self.loadgen_rss_before_kib = self.loadgen_last.map(|s| s.rss_kib).unwrap_or(0);
    }

    /// Closes an interval: one timeline point.
    pub(crate) fn tick(&mut self, phase: &str) -> Result<&TimelinePoint, ReportError> {
        let now = Instant::now();
        let seconds = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        self.last_tick = now;
        for h in &mut self.interval {
            h.reset();
        }
        self.stats.recorder.drain_into(&mut self.interval);
        for (t, i) in self.totals.iter_mut().zip(&self.interval) {
            // Same bounds: adding cannot fail.
            let _ = t.add(i);
        }
        let mut one_way = self.interval[Metric::OneWayDeviceToVes.index()].clone();
        let _ = one_way.add(&self.interval[Metric::OneWayVesToDevice.index()]);
        let now_counts = [counts(&self.stats.device_to_ves), counts(&self.stats.ves_to_device)];
        let point = TimelinePoint {
            t_seconds: now.duration_since(self.t0).as_secs_f64(),
            unix_ms: self.clock.at(now) / 1_000_000,
            interval_seconds: seconds,
            phase: phase.to_string(),
            devices_online: self.stats.devices_online.load(Ordering::Relaxed).max(0) as u64,
            ves_online: self.stats.ves_online.load(Ordering::Relaxed).max(0) as u64,
            device_to_ves: delta(&now_counts[0], &self.last[0]),
            ves_to_device: delta(&now_counts[1], &self.last[1]),
            latency: Latency::from_histogram(&one_way)?,
            relay_rss_kib: None,
            relay_cpu_percent: None,
            loadgen_cpu_percent: None,
        };
        self.last = now_counts;
        self.sample();
        let mut point = point;
        point.relay_rss_kib = self.relay_last.map(|s| s.rss_kib);
        point.relay_cpu_percent = self.relay_last.map(|s| s.cpu_percent);
        point.loadgen_cpu_percent = self.loadgen_last.map(|s| s.cpu_percent);
        self.timeline.push(point);
        Ok(self.timeline.last().unwrap_or_else(|| unreachable!("just pushed")))
    }

    pub(crate) fn total(&self, m: Metric) -> Result<Latency, ReportError> {
        Latency::from_histogram(&self.totals[m.index()])
    }
}

pub(crate) fn status_line(p: &TimelinePoint, phase: &str, relay: bool) -> String {
    let rate = |c: &IntervalCounts| c.received as f64 / p.interval_seconds;
    let mut s = format!(
        "{phase:>7} online {:>6} | d→v {:>7.0}/s v→d {:>7.0}/s | p50 {:>7.3} p99 {:>7.3} max {:>7.3} ms",
        p.devices_online,
        rate(&p.device_to_ves),
        rate(&p.ves_to_device),
        p.latency.p50_us as f64 / 1000.0,
        p.latency.p99_us as f64 / 1000.0,
        p.latency.max_us as f64 / 1000.0,
    );
    if relay && let (Some(rss), Some(cpu)) = (p.relay_rss_kib, p.relay_cpu_percent) {
        s.push_str(&format!(" | relay {:.0} MiB {cpu:.0}%", rss as f64 / 1024.0));
    }
    if let Some(cpu) = p.loadgen_cpu_percent {
        s.push_str(&format!(" | tool {cpu:.0}%"));
    }
    s
}

/// What a direction sent, and what became of it.
pub(crate) fn frame_counts(c: &DirectionCounters) -> FrameCounts {
    let sent = c.sent.load(Ordering::Relaxed);
    let acked = c.acked.load(Ordering::Relaxed);
    let undeliverable: BTreeMap<String, u64> = UNDELIVERABLE_NAMES
        .iter()
        .zip(&c.undeliverable)
        .map(|(n, v)| (n.to_string(), v.load(Ordering::Relaxed)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let undeliverable_total: u64 = undeliverable.values().sum();
    FrameCounts {
        sent,
        acked,
        lost: sent.saturating_sub(acked + undeliverable_total),
        undeliverable,
        received: c.received.load(Ordering::Relaxed),
        skipped_offline: c.skipped_offline.load(Ordering::Relaxed),
        late_notices: c.late_notices.load(Ordering::Relaxed),
        resent: c.resent.load(Ordering::Relaxed),
        foreign_payloads: c.foreign_payloads.load(Ordering::Relaxed),
    }
}

/// Frames sent that are neither acknowledged nor answered undeliverable (yet).
pub(crate) fn unresolved(c: &DirectionCounters) -> u64 {
    c.sent.load(Ordering::Relaxed).saturating_sub(c.acked.load(Ordering::Relaxed) + c.undeliverable_total())
}
