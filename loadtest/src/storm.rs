//! Disturbances of a run: a reconnect storm (every device dropped at one moment) and
//! steady churn (random devices reconnecting at a set rate).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use noc_protocol::clock::unix_ms;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::procfs::ProcSampler;
use crate::result::StormResult;
use crate::stats::Stats;

/// A small, fast PRNG for churn picks (not for secrets).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Until `stop` or `end`: one random device of `devices` reconnects every `every`,
/// starting at `start`.
pub(crate) async fn churn(
    devices: Vec<Arc<Notify>>,
    start: Instant,
    end: Instant,
    every: Duration,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = SplitMix(seed);
    let mut at = start;
    while at < end {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(at.into()) => {}
        }
        devices[(rng.next() % devices.len() as u64) as usize].notify_one();
        at += every;
    }
}

/// A reconnect storm: every device's session dropped at one moment, then the wait until
/// all of them are authenticated again.
pub(crate) struct Storm {
    pub stats: Arc<Stats>,
    /// The devices' churn signals: each ends its session and reconnects at once.
    pub devices: Vec<Arc<Notify>>,
    pub at: Instant,
    pub at_seconds: f64,
    /// Give up waiting (the run is ending).
    pub deadline: Instant,
    pub relay_pids: Vec<u32>,
    pub stop: CancellationToken,
    pub out: Arc<Mutex<Option<StormResult>>>,
}

impl Storm {
    pub async fn run(self) {
        tokio::select! {
            _ = self.stop.cancelled() => return,
            _ = tokio::time::sleep_until(self.at.into()) => {}
        }
        let dropped = self.stats.devices_online.load(Ordering::Relaxed).max(0) as u64;
        let base = self.stats.reconnects.load(Ordering::Relaxed);
        let mut relay = (!self.relay_pids.is_empty()).then(|| ProcSampler::group(&self.relay_pids));
        let cpu_before = relay.as_mut().and_then(|r| r.sample()).map(|s| s.cpu_seconds);
        let started = Instant::now();
        let dropped_unix_ms = unix_ms();
        for device in &self.devices {
            device.notify_one();
        }
        let reconnected = || self.stats.reconnects.load(Ordering::Relaxed).saturating_sub(base);
        let mut recovered = None;
        while !self.stop.is_cancelled() && Instant::now() < self.deadline {
            if reconnected() >= dropped {
                recovered = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = recovered.unwrap_or_else(|| started.elapsed()).as_secs_f64().max(1e-3);
        let cpu_after = relay.as_mut().and_then(|r| r.sample()).map(|s| s.cpu_seconds);
        let relay_cpu_seconds = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
        let reconnected = reconnected().min(dropped);
        let result = StormResult {
            at_seconds: self.at_seconds,
            devices_dropped: dropped,
            reconnected,
            recovery_seconds: recovered.map(|d| d.as_secs_f64()),
            reconnects_per_second: reconnected as f64 / elapsed,
            relay_cpu_seconds,
            reconnects_per_relay_cpu_second: relay_cpu_seconds.filter(|c| *c > 0.0).map(|c| reconnected as f64 / c),
            dropped_unix_ms: Some(dropped_unix_ms),
            all_back_unix_ms: recovered.map(|d| dropped_unix_ms + d.as_millis() as u64),
        };
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }
}
