//! Writes what the node's sessions relayed to the licenses' usage records: every flush
//! interval the router's [`noc_actors::usage::UsageMeter`] is harvested and the deltas are
//! added to the store in one transaction. A failed write keeps the harvest and adds it to
//! the next one, so an outage of the store loses nothing but time.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use noc_actors::Router;
use noc_actors::usage::{Harvest, UsageDelta};
use noc_protocol::LicenseId;
use noc_storage::{Accounts, ActiveDeviceDay, UsageDay};

/// Harvests not yet written.
#[derive(Default)]
struct Pending {
    days: HashMap<(i64, LicenseId), UsageDay>,
    active: Vec<ActiveDeviceDay>,
}

const DAY_MS: i64 = 86_400_000;
/// How long before midnight the day's last harvest runs.
const BEFORE_MIDNIGHT_MS: i64 = 200;

/// How long to wait from `now_ms` for the next flush: `every`, or less to land just before
/// the coming midnight (UTC).
fn next_wait(now_ms: i64, every: Duration) -> Duration {
    let to_last_harvest = DAY_MS - now_ms.rem_euclid(DAY_MS) - BEFORE_MIDNIGHT_MS;
    match u64::try_from(to_last_harvest) {
        Ok(ms) if ms > 0 && u128::from(ms) < every.as_millis() => Duration::from_millis(ms),
        _ => every,
    }
}

/// A harvest's delta as a record of the store.
fn record(d: &UsageDelta) -> UsageDay {
    UsageDay {
        day: d.day,
        license_id: d.license,
        frames_to_ves: d.frames_to_ves,
        bytes_to_ves: d.bytes_to_ves,
        frames_to_devices: d.frames_to_devices,
        bytes_to_devices: d.bytes_to_devices,
        undeliverable: d.undeliverable,
        device_seconds: d.device_seconds,
        active_devices: 0,
        active_users: 0,
    }
}

/// Adds a record to what is pending for its day and license.
fn merge(days: &mut HashMap<(i64, LicenseId), UsageDay>, d: UsageDay) {
    match days.entry((d.day, d.license_id)) {
        Entry::Vacant(v) => {
            v.insert(d);
        }
        Entry::Occupied(mut o) => {
            let day = o.get_mut();
            day.frames_to_ves += d.frames_to_ves;
            day.bytes_to_ves += d.bytes_to_ves;
            day.frames_to_devices += d.frames_to_devices;
            day.bytes_to_devices += d.bytes_to_devices;
            day.undeliverable += d.undeliverable;
            day.device_seconds += d.device_seconds;
        }
    }
}

pub struct UsageFlusher {
    accounts: Accounts,
    router: Arc<Router>,
    pending: Mutex<Pending>,
    /// One flush at a time (the periodic one and the last one at shutdown).
    writing: tokio::sync::Mutex<()>,
}

impl UsageFlusher {
    pub fn new(accounts: Accounts, router: Arc<Router>) -> Self {
        UsageFlusher { accounts, router, pending: Mutex::new(Pending::default()), writing: tokio::sync::Mutex::new(()) }
    }

    /// Flushes every `every`, and also just before each UTC midnight: a harvest books
    /// what it takes to the day it runs on, so the last one of a day runs on that day.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(next_wait(noc_protocol::clock::unix_ms_i64(), every)).await;
            self.flush().await;
        }
    }

    fn take(&self, harvest: Harvest) -> (Vec<UsageDay>, Vec<ActiveDeviceDay>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for d in &harvest.deltas {
            merge(&mut pending.days, record(d));
        }
        pending.active.extend(harvest.active.into_iter().map(|a| ActiveDeviceDay {
            day: a.day,
            license_id: a.license,
            device_id: a.device,
            user_id: a.user,
        }));
        let days = std::mem::take(&mut pending.days).into_values().collect();
        (days, std::mem::take(&mut pending.active))
    }

    fn put_back(&self, days: Vec<UsageDay>, active: Vec<ActiveDeviceDay>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for d in days {
            merge(&mut pending.days, d);
        }
        pending.active.extend(active);
    }

    /// Harvests the sessions' counters and writes them (with anything a failed flush
    /// left) to the store.
    pub async fn flush(&self) {
        let _one = self.writing.lock().await;
        let harvest = self.router.usage().harvest(noc_protocol::clock::unix_ms_i64());
        let (days, active) = self.take(harvest);
        if days.is_empty() && active.is_empty() {
            return;
        }
        if let Err(e) = self.accounts.store().add_usage(&days, &active).await {
            tracing::warn!(error = %e, "usage records not written; retrying with the next flush");
            self.put_back(days, active);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_flush_of_a_day_runs_just_before_midnight() {
        let midnight = 1_796_428_800_000;
        let minute = Duration::from_secs(60);
        assert_eq!(next_wait(midnight - 3_600_000, minute), minute, "far from midnight: the interval");
        assert_eq!(next_wait(midnight - 30_000, minute), Duration::from_millis(29_800), "lands before midnight");
        assert_eq!(next_wait(midnight - 100, minute), minute, "just flushed: the next interval");
        assert_eq!(next_wait(midnight + 1, minute), minute);
    }

    #[test]
    fn pending_records_add_up_per_day_and_license() {
        let (a, b) = (LicenseId::random(), LicenseId::random());
        let mut delta = UsageDelta::zero(7, a);
        delta.frames_to_ves = 3;
        delta.device_seconds = 10;
        let mut days = HashMap::new();
        merge(&mut days, record(&delta));
        merge(&mut days, record(&delta));
        merge(&mut days, record(&UsageDelta { day: 8, ..delta.clone() }));
        merge(&mut days, record(&UsageDelta { license: b, ..delta.clone() }));
        assert_eq!(days.len(), 3);
        let a7 = &days[&(7, a)];
        assert_eq!((a7.frames_to_ves, a7.device_seconds), (6, 20), "a failed flush's counts are kept and added");
    }
}
