//! Live measurements shared by every simulated session.
//!
//! Thousands of tasks record at once, so counters are atomics and latencies go into a few
//! sharded HDR histograms (one shard per worker thread, in practice uncontended) that the
//! reporter drains once per interval. A session owns no histogram: an HDR histogram is
//! tens of kilobytes, a session must stay a few.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use hdrhistogram::Histogram;
use noc_protocol::UndeliverableReason;

use crate::payload::{Clock, Stamp, micros_between};

/// Highest latency recorded, in microseconds (10 minutes); larger values are clamped.
pub const HIST_MAX_US: u64 = 600_000_000;
/// Significant decimal digits of the histograms.
pub const HIST_SIGFIG: u8 = 3;

/// A new empty latency histogram (microseconds).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// What a latency sample measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Device → VES: scheduled send time to receipt by the VES.
    OneWayDeviceToVes,
    /// VES → device: scheduled send time to receipt by the device.
    OneWayVesToDevice,
    /// Device → VES: scheduled send time to the ACK back at the device.
    AckDeviceToVes,
    /// VES → device: scheduled send time to the `Ack` command back at the VES.
    AckVesToDevice,
    /// TCP connect, TLS, HELLO and AUTH of one device session.
    Connect,
    /// Device → VES: scheduled send time to the moment the device queues the frame for
    /// its connection's next write. The tool's own share of the one-way latency (a late
    /// timer, a busy worker thread), which no server can remove.
    SendDelayDeviceToVes,
    /// VES → device: scheduled send time to the moment the VES (or hub) puts the frame
    /// into a request (or a write), including the wait for its batch.
    SendDelayVesToDevice,
    /// Device → VES: the moment the device queued the frame to its receipt by the VES:
    /// the latency that the server and the network add.
    FromSendDeviceToVes,
    /// VES → device: the moment the VES (or hub) put the frame into a request (or a
    /// write) to its receipt by the device.
    FromSendVesToDevice,
}

pub const METRICS: [Metric; 9] = [
    Metric::OneWayDeviceToVes,
    Metric::OneWayVesToDevice,
    Metric::AckDeviceToVes,
    Metric::AckVesToDevice,
    Metric::Connect,
    Metric::SendDelayDeviceToVes,
    Metric::SendDelayVesToDevice,
    Metric::FromSendDeviceToVes,
    Metric::FromSendVesToDevice,
];

impl Metric {
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::OneWayDeviceToVes => "one_way_device_to_ves",
            Metric::OneWayVesToDevice => "one_way_ves_to_device",
            Metric::AckDeviceToVes => "ack_device_to_ves",
            Metric::AckVesToDevice => "ack_ves_to_device",
            Metric::Connect => "connect",
            Metric::SendDelayDeviceToVes => "send_delay_device_to_ves",
            Metric::SendDelayVesToDevice => "send_delay_ves_to_device",
            Metric::FromSendDeviceToVes => "from_send_device_to_ves",
            Metric::FromSendVesToDevice => "from_send_ves_to_device",
        }
    }
}

const SHARDS: usize = 16;

/// Sharded histograms, one set per shard.
pub struct Recorder {
    shards: Vec<Mutex<Vec<Histogram<u64>>>>,
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Recorder {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(METRICS.iter().map(|_| new_histogram()).collect())).collect() }
    }

    /// Records one sample, in microseconds.
    pub fn record(&self, metric: Metric, micros: u64) {
        let mut shard = self.shards[shard_index()].lock().unwrap_or_else(|p| p.into_inner());
        shard[metric.index()].saturating_record(micros.clamp(1, HIST_MAX_US));
    }

    /// Records a receipt: its one-way latency from the frame's scheduled time, and from the
    /// time its sender queued it.
    pub fn record_receipt(&self, one_way: Metric, from_send: Metric, clock: &Clock, stamp: &Stamp) {
        let now = clock.now_ns();
        let mut shard = self.shards[shard_index()].lock().unwrap_or_else(|p| p.into_inner());
        for (metric, from) in [(one_way, stamp.scheduled_unix_ns), (from_send, stamp.sent_unix_ns)] {
            shard[metric.index()].saturating_record(micros_between(from, now).clamp(1, HIST_MAX_US));
        }
    }

    /// Moves every sample recorded since the last call into `out` (indexed by metric).
    pub fn drain_into(&self, out: &mut [Histogram<u64>]) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (dst, src) in out.iter_mut().zip(shard.iter_mut()) {
                if !src.is_empty() {
                    // Same bounds on both sides: adding cannot fail.
                    let _ = dst.add(&*src);
                    src.reset();
                }
            }
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Names of the undeliverable outcomes, indexed like [`DirectionCounters::undeliverable`]:
/// the relay's reasons by their wire number, plus `request_failed` for frames whose
/// data-channel request failed before the relay answered.
pub const UNDELIVERABLE_NAMES: [&str; 9] = [
    "other",
    "peer_offline",
    "unknown_peer",
    "not_owned",
    "queue_full",
    "peer_disconnected",
    "frame_too_large",
    "peer_draining",
    "request_failed",
];
/// Index of `request_failed` in [`UNDELIVERABLE_NAMES`].
pub const REQUEST_FAILED: usize = 8;

/// The counter index of a relay reason.
pub fn reason_index(reason: UndeliverableReason) -> usize {
    match reason.as_u16() {
        n @ 1..=7 => n as usize,
        _ => 0,
    }
}

/// Frame counters of one direction. Every sent frame ends in exactly one of acked,
/// undeliverable or (at the end) lost: the sender keeps each frame until its first
/// acknowledgement or notice, and later notices for it count as `late_notices`.
#[derive(Default)]
pub struct DirectionCounters {
    pub sent: AtomicU64,
    /// Receipts by the other endpoint (one-way latency samples).
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub undeliverable: [AtomicU64; UNDELIVERABLE_NAMES.len()],
    /// Frames of the timetable not sent because the sender or its peer was offline.
    pub skipped_offline: AtomicU64,
    /// Acks or notices for frames already resolved (or unknown).
    pub late_notices: AtomicU64,
    /// Frames sent again after a relay CLOSE (they may have crossed it, protocol §7.1).
    pub resent: AtomicU64,
    /// Receipts whose payload was not a load-tool stamp.
    pub foreign_payloads: AtomicU64,
}

impl DirectionCounters {
    pub fn undeliverable_total(&self) -> u64 {
        self.undeliverable.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn undeliverable(&self, index: usize) {
        self.undeliverable[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the sessions count, shared by all of them.
#[derive(Default)]
pub struct Stats {
    pub recorder: Recorder,
    pub device_to_ves: DirectionCounters,
    pub ves_to_device: DirectionCounters,
    pub devices_online: AtomicI64,
    pub devices_online_peak: AtomicI64,
    pub ves_online: AtomicI64,
    pub connect_attempts: AtomicU64,
    pub connect_ok: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Device sessions that ended and were established again.
    pub reconnects: AtomicU64,
    /// Sessions ended on purpose to simulate churn.
    pub churn_disconnects: AtomicU64,
    pub data_requests: AtomicU64,
    pub data_request_failures: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts an error of `kind` (a short, bounded label such as `connect:timeout`).
    pub fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(kind.into()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn device_online(&self) {
        let now = self.devices_online.fetch_add(1, Ordering::Relaxed) + 1;
        self.devices_online_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn device_offline(&self) {
        self.devices_online.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_samples_reach_the_drained_histograms_once() {
        let r = Recorder::new();
        r.record(Metric::OneWayDeviceToVes, 250);
        r.record(Metric::OneWayDeviceToVes, 0);
        r.record(Metric::Connect, u64::MAX);
        let mut out: Vec<_> = METRICS.iter().map(|_| new_histogram()).collect();
        r.drain_into(&mut out);
        assert_eq!(out[Metric::OneWayDeviceToVes.index()].len(), 2);
        assert_eq!(out[Metric::Connect.index()].max(), out[Metric::Connect.index()].highest_equivalent(HIST_MAX_US));
        let mut again: Vec<_> = METRICS.iter().map(|_| new_histogram()).collect();
        r.drain_into(&mut again);
        assert!(again.iter().all(|h| h.is_empty()), "drained samples are not reported twice");
    }

    #[test]
    fn reasons_map_to_their_names() {
        for r in UndeliverableReason::ALL {
            assert_eq!(UNDELIVERABLE_NAMES[reason_index(*r)], r.as_str());
        }
        assert_eq!(reason_index(UndeliverableReason::Other(99)), 0);
    }
}
