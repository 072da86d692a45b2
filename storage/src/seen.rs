//! "Last seen" of devices, written in batches.
//!
//! A device is seen when its session starts or ends. Writing each event at once would put
//! a store write on every connect and disconnect, which a reconnect storm multiplies; so
//! the events go into a bounded queue (never blocking the session path; when it is full
//! an event is dropped, and the next one of that device makes up for it), and a task
//! writes what gathered, one time per device, every [`SeenRecorder::start`] interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use noc_protocol::DeviceId;
use tokio::sync::mpsc;

use crate::store::Store;

/// Events waiting to be written, at most.
const QUEUE: usize = 65_536;
/// Devices written by one statement, at most.
const BATCH: usize = 1_000;

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct SeenRecorder {
    tx: mpsc::Sender<(DeviceId, i64)>,
}

impl SeenRecorder {
    /// Starts the writer task (on the current tokio runtime), flushing every `every`.
    pub fn start(store: Arc<dyn Store>, every: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(store, rx, every));
        SeenRecorder { tx }
    }

    /// The device was seen now. Never waits.
    pub fn seen(&self, device: DeviceId) {
        let _ = self.tx.try_send((device, noc_protocol::clock::unix_ms_i64()));
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(DeviceId, i64)>, every: Duration) {
    let mut pending: HashMap<DeviceId, i64> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some((device, at)) => {
                    let t = pending.entry(device).or_insert(at);
                    *t = (*t).max(at);
                }
                None => {
                    flush(&*store, &mut pending).await;
                    return;
                }
            },
            _ = tick.tick() => flush(&*store, &mut pending).await,
        }
    }
}

/// Writes what gathered; on a store error it is kept for the next flush (newer times win).
async fn flush(store: &dyn Store, pending: &mut HashMap<DeviceId, i64>) {
    if pending.is_empty() {
        return;
    }
    let all: Vec<(DeviceId, i64)> = pending.drain().collect();
    for chunk in all.chunks(BATCH) {
        if let Err(e) = store.record_devices_seen(chunk).await {
            tracing::warn!(error = %e, devices = chunk.len(), "could not record when devices were last seen");
            for (device, at) in chunk {
                let t = pending.entry(*device).or_insert(*at);
                *t = (*t).max(*at);
            }
        }
    }
}
