//! Fetches in flight (browse access, docs/protocol.md §4.6), on both sides of the bus:
//!
//! * [`FetchSlots`], on the VES session's node: who asked (the node waiting for the
//!   answer) and until when. Bounded, so a VES that stops answering holds at most its
//!   share of slots until their deadlines pass; expired slots are freed as new fetches
//!   arrive.
//! * [`FetchWaiters`], on the asking node: the page waiting for each answer.
//!
//! A leaf: the router and the inbox use it, it uses neither.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use noc_cluster::{FetchOutcome, FetchRefusal, NodeId};
use noc_protocol::rts::fetch::RequestId;
use tokio::sync::oneshot;

/// Fetches a VES may have in flight unless the node is configured otherwise.
pub const DEFAULT_FETCHES_IN_FLIGHT: usize = 32;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fetches this node waits for, by request id.
pub(crate) struct FetchWaiters {
    waiting: Mutex<HashMap<RequestId, oneshot::Sender<FetchOutcome>>>,
    /// How many fetches one VES session may have in flight (on the session's node).
    limit: AtomicUsize,
}

impl Default for FetchWaiters {
    fn default() -> Self {
        FetchWaiters { waiting: Mutex::new(HashMap::new()), limit: AtomicUsize::new(DEFAULT_FETCHES_IN_FLIGHT) }
    }
}

impl FetchWaiters {
    pub(crate) fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, oneshot::Sender<FetchOutcome>>> {
        lock(&self.waiting)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }
}

struct InFlight {
    origin: NodeId,
    deadline: Instant,
}

/// One VES session's fetches in flight.
#[derive(Default)]
pub(crate) struct FetchSlots {
    slots: Mutex<HashMap<RequestId, InFlight>>,
}

impl FetchSlots {
    /// Takes a slot for `id` until `deadline`, unless `limit` are taken by fetches still
    /// within their deadlines.
    pub(crate) fn take(
        &self,
        id: RequestId,
        origin: NodeId,
        deadline: Instant,
        limit: usize,
        now: Instant,
    ) -> Result<(), FetchRefusal> {
        let mut slots = lock(&self.slots);
        if slots.len() >= limit {
            slots.retain(|_, f| f.deadline > now);
        }
        if slots.len() >= limit {
            return Err(FetchRefusal::Busy);
        }
        slots.insert(id, InFlight { origin, deadline });
        Ok(())
    }

    /// Frees `id`'s slot; the node that asked, if the fetch was in flight and within its
    /// deadline.
    pub(crate) fn finish(&self, id: RequestId, now: Instant) -> Option<NodeId> {
        let f = lock(&self.slots).remove(&id)?;
        (f.deadline > now).then_some(f.origin)
    }

    /// Frees `id`'s slot without an answer (the fetch never reached the VES).
    pub(crate) fn release(&self, id: RequestId) {
        lock(&self.slots).remove(&id);
    }

    /// Every fetch in flight, taken: the session ended, nobody will answer them.
    pub(crate) fn drain(&self) -> Vec<(RequestId, NodeId)> {
        lock(&self.slots).drain().map(|(id, f)| (id, f.origin)).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slots_are_bounded_and_expired_ones_are_freed() {
        let slots = FetchSlots::default();
        let node = NodeId::new("a");
        let now = Instant::now();
        let (soon, later) = (now + Duration::from_secs(1), now + Duration::from_secs(10));
        let (a, b, c) = (RequestId([1; 16]), RequestId([2; 16]), RequestId([3; 16]));
        slots.take(a, node.clone(), soon, 2, now).expect("first");
        slots.take(b, node.clone(), later, 2, now).expect("second");
        assert_eq!(slots.take(c, node.clone(), later, 2, now), Err(FetchRefusal::Busy));
        // Once a's deadline passed its slot is free again, and a late answer finds nobody.
        let after = now + Duration::from_secs(2);
        slots.take(c, node.clone(), later, 2, after).expect("a's slot");
        assert_eq!(slots.finish(a, after), None);
        assert_eq!(slots.finish(b, after), Some(node.clone()));
        assert_eq!(slots.finish(b, after), None, "answered once");
        slots.release(c);
        assert_eq!(slots.len(), 0);
    }
}
