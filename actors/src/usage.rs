//! Usage per license (white paper §8.3: billing and capacity): frames and bytes relayed
//! each way, undeliverable notices, device-connected time and which devices were active,
//! per day and license.
//!
//! Counting costs the frame path one relaxed add on a counter that only one session
//! writes (no shared cache line between sessions, no lock, no map lookup): each session
//! holds its own [`SessionUsage`], counted where the relay's own frame metrics are
//! counted (the device's send loop, the VES's command stream), so the two always agree.
//! The node's [`UsageMeter`] knows every session's counters and, every flush interval,
//! [`UsageMeter::harvest`]s what accumulated since the last harvest into per-day,
//! per-license deltas; the node adds them to the store (never a write per frame).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use noc_protocol::{DeviceId, LicenseId, UserId};

const DAY_MS: i64 = 86_400_000;

/// Days since the Unix epoch (UTC) of a Unix-ms time.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// One session's counters; only the session's own loops write them.
pub struct SessionUsage {
    license: LicenseId,
    /// A device session's device and user; `None` for a VES session.
    device: Option<(DeviceId, UserId)>,
    frames_to_ves: AtomicU64,
    bytes_to_ves: AtomicU64,
    frames_to_devices: AtomicU64,
    bytes_to_devices: AtomicU64,
    undeliverable: AtomicU64,
    /// Connected time is counted up to here (Unix ms).
    counted_until_ms: AtomicI64,
    /// When the session ended (Unix ms); 0 while it lives.
    ended_at_ms: AtomicI64,
}

impl SessionUsage {
    fn new(license: LicenseId, device: Option<(DeviceId, UserId)>, now_ms: i64) -> Self {
        SessionUsage {
            license,
            device,
            frames_to_ves: AtomicU64::new(0),
            bytes_to_ves: AtomicU64::new(0),
            frames_to_devices: AtomicU64::new(0),
            bytes_to_devices: AtomicU64::new(0),
            undeliverable: AtomicU64::new(0),
            counted_until_ms: AtomicI64::new(now_ms),
            ended_at_ms: AtomicI64::new(0),
        }
    }

    /// A frame written to the license's enterprise server.
    pub fn to_ves(&self, bytes: usize) {
        self.frames_to_ves.fetch_add(1, Ordering::Relaxed);
        self.bytes_to_ves.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A frame written to one of the license's devices.
    pub fn to_device(&self, bytes: usize) {
        self.frames_to_devices.fetch_add(1, Ordering::Relaxed);
        self.bytes_to_devices.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// An undeliverable notice written to a peer of the license.
    pub fn undeliverable(&self) {
        self.undeliverable.fetch_add(1, Ordering::Relaxed);
    }

    /// The session ended: the next harvest takes its last counts and forgets it.
    pub fn end(&self, now_ms: i64) {
        let _ = self.ended_at_ms.compare_exchange(0, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// What one license used on one day, since the previous harvest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageDelta {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    pub license: LicenseId,
    pub frames_to_ves: u64,
    pub bytes_to_ves: u64,
    pub frames_to_devices: u64,
    pub bytes_to_devices: u64,
    pub undeliverable: u64,
    /// Seconds devices of the license were connected (summed over devices).
    pub device_seconds: u64,
}

impl UsageDelta {
    pub fn zero(day: i64, license: LicenseId) -> Self {
        UsageDelta {
            day,
            license,
            frames_to_ves: 0,
            bytes_to_ves: 0,
            frames_to_devices: 0,
            bytes_to_devices: 0,
            undeliverable: 0,
            device_seconds: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.frames_to_ves == 0
            && self.frames_to_devices == 0
            && self.bytes_to_ves == 0
            && self.bytes_to_devices == 0
            && self.undeliverable == 0
            && self.device_seconds == 0
    }

    /// Adds `other`'s counts (same day and license) to these.
    pub fn add(&mut self, other: &UsageDelta) {
        self.frames_to_ves += other.frames_to_ves;
        self.bytes_to_ves += other.bytes_to_ves;
        self.frames_to_devices += other.frames_to_devices;
        self.bytes_to_devices += other.bytes_to_devices;
        self.undeliverable += other.undeliverable;
        self.device_seconds += other.device_seconds;
    }
}

/// A device that was connected on a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActiveDevice {
    pub day: i64,
    pub license: LicenseId,
    pub device: DeviceId,
    pub user: UserId,
}

/// What a harvest found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Harvest {
    pub deltas: Vec<UsageDelta>,
    /// Devices active today that earlier harvests did not report yet.
    pub active: Vec<ActiveDevice>,
}

/// The node's sessions' usage counters.
#[derive(Default)]
pub struct UsageMeter {
    sessions: Mutex<Vec<Arc<SessionUsage>>>,
    /// Devices already reported active, by day (today's only).
    reported: Mutex<HashSet<(i64, DeviceId)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl UsageMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters for a new device session.
    pub fn device_session(&self, license: LicenseId, device: DeviceId, user: UserId, now_ms: i64) -> Arc<SessionUsage> {
        self.register(SessionUsage::new(license, Some((device, user)), now_ms))
    }

    /// Counters for a new VES session.
    pub fn ves_session(&self, license: LicenseId, now_ms: i64) -> Arc<SessionUsage> {
        self.register(SessionUsage::new(license, None, now_ms))
    }

    fn register(&self, usage: SessionUsage) -> Arc<SessionUsage> {
        let usage = Arc::new(usage);
        lock(&self.sessions).push(usage.clone());
        usage
    }

    /// Takes what every session counted since the last harvest (ended sessions for the
    /// last time), as deltas for the day of `now_ms`.
    pub fn harvest(&self, now_ms: i64) -> Harvest {
        let day = day_of(now_ms);
        let mut deltas: HashMap<LicenseId, UsageDelta> = HashMap::new();
        let mut live_devices = Vec::new();
        // Walked outside the lock: a session starting meanwhile, on a worker thread that
        // would otherwise wait for the whole walk (a few hundred nanoseconds a session, one
        // cache miss or more each), goes into the emptied list, and the walked sessions
        // that live on are put back with it.
        let mut walked = std::mem::take(&mut *lock(&self.sessions));
        walked.retain(|s| {
            let ended = s.ended_at_ms.load(Ordering::Acquire);
            let d = deltas.entry(s.license).or_insert_with(|| UsageDelta::zero(day, s.license));
            d.frames_to_ves += s.frames_to_ves.swap(0, Ordering::Relaxed);
            d.bytes_to_ves += s.bytes_to_ves.swap(0, Ordering::Relaxed);
            d.frames_to_devices += s.frames_to_devices.swap(0, Ordering::Relaxed);
            d.bytes_to_devices += s.bytes_to_devices.swap(0, Ordering::Relaxed);
            d.undeliverable += s.undeliverable.swap(0, Ordering::Relaxed);
            if let Some((device, user)) = s.device {
                let until = if ended > 0 { ended.min(now_ms) } else { now_ms };
                let from = s.counted_until_ms.swap(until, Ordering::Relaxed);
                d.device_seconds += u64::try_from((until - from).max(0) / 1000).unwrap_or(0);
                // Whole seconds only: the remainder counts with the next harvest.
                let rest = (until - from).max(0) % 1000;
                s.counted_until_ms.store(until - rest, Ordering::Relaxed);
                live_devices.push(ActiveDevice { day, license: s.license, device, user });
            }
            ended == 0
        });
        {
            let mut sessions = lock(&self.sessions);
            walked.append(&mut sessions);
            *sessions = walked;
        }
        let mut reported = lock(&self.reported);
        reported.retain(|(d, _)| *d == day);
        let active = live_devices.into_iter().filter(|a| reported.insert((a.day, a.device))).collect();
        let mut deltas: Vec<UsageDelta> = deltas.into_values().filter(|d| !d.is_empty()).collect();
        deltas.sort_by_key(|d| d.license.to_string());
        Harvest { deltas, active }
    }

    /// Sessions counted, as of the last harvest's end plus those started since (for tests).
    pub fn sessions(&self) -> usize {
        lock(&self.sessions).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_harvest_takes_each_count_once_and_forgets_ended_sessions() {
        let meter = UsageMeter::new();
        let (license, other) = (LicenseId::random(), LicenseId::random());
        let (device, user) = (DeviceId::random(), UserId::random());
        let t0 = 1_796_428_800_000; // a midnight, UTC
        let d = meter.device_session(license, device, user, t0);
        let v = meter.ves_session(license, t0);
        let v2 = meter.ves_session(other, t0);
        d.to_device(100);
        d.to_device(50);
        d.undeliverable();
        v.to_ves(10);
        v2.to_ves(7);
        let first = meter.harvest(t0 + 2_500);
        let mine = first.deltas.iter().find(|x| x.license == license).expect("license");
        assert_eq!(
            (mine.frames_to_devices, mine.bytes_to_devices, mine.frames_to_ves, mine.bytes_to_ves, mine.undeliverable),
            (2, 150, 1, 10, 1)
        );
        assert_eq!(mine.device_seconds, 2, "2.5 s connected: 2 whole seconds now, the half later");
        assert_eq!(first.active, vec![ActiveDevice { day: day_of(t0), license, device, user }]);
        assert_eq!(first.deltas.len(), 2);

        // Nothing new: nothing but connected time, and the device is not reported again.
        let second = meter.harvest(t0 + 4_000);
        assert_eq!(second.active, vec![]);
        assert_eq!(second.deltas.len(), 1);
        assert_eq!(
            (second.deltas[0].device_seconds, second.deltas[0].frames_to_devices),
            (2, 0),
            "the half second too"
        );

        // Ended sessions give their last counts, then are gone.
        d.to_device(1);
        d.end(t0 + 5_000);
        v.end(t0 + 5_000);
        v2.end(t0 + 5_000);
        let third = meter.harvest(t0 + 9_000);
        assert_eq!((third.deltas[0].frames_to_devices, third.deltas[0].device_seconds), (1, 1), "up to its end");
        assert_eq!(meter.sessions(), 0);
        assert_eq!(meter.harvest(t0 + 10_000), Harvest::default());
    }

    #[test]
    fn a_device_connected_over_midnight_is_active_on_both_days() {
        let meter = UsageMeter::new();
        let (license, device, user) = (LicenseId::random(), DeviceId::random(), UserId::random());
        let midnight = 1_796_428_800_000;
        let _d = meter.device_session(license, device, user, midnight - 60_000);
        assert_eq!(meter.harvest(midnight - 1).active.len(), 1);
        let next = meter.harvest(midnight + 60_000);
        assert_eq!(next.active, vec![ActiveDevice { day: day_of(midnight), license, device, user }]);
        assert_eq!(next.deltas[0].day, day_of(midnight));
    }
}
