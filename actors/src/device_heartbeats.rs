//! The device sessions' heartbeat ticks, on the relay's side of the device channel: one
//! timer per worker thread instead of one per session.
//!
//! Every device session ticks once per heartbeat interval: it checks that a frame arrived
//! since the previous tick and queues a HEARTBEAT (docs/protocol.md §6.4.2). With a timer
//! per session, each tick woke the session's actor, which then woke its send loop, and
//! every idle session kept a timer and its closure. Here each worker thread keeps one
//! wheel of [`GRID`] slots: a session registers once, and the ticks of a slot run in one
//! pass that queues the HEARTBEATs straight onto the send loops' queues. The actor is
//! woken only to close a session that stayed silent past the idle timeout.
//!
//! Sessions never leave their worker (an actix arbiter), so the wheel is thread-local and
//! needs no locks. Its task sleeps until the next slot that holds a tick and ends when no
//! session is left, so a worker without sessions never wakes for it.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::{Actor, Context, Handler, WeakAddr};
use noc_protocol::{CloseCode, DeviceId};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::close::CloseSession;
use crate::metrics::{DropReason, SessionKind};
use crate::queue::QueueSender;
use crate::router::{DeviceOut, Router};

/// The grid every tick falls on. Ticks due in the same slot, on any session of the
/// worker, run in one wake-up.
pub(crate) const GRID: Duration = Duration::from_millis(250);
/// Slots in the ring: 256 s of ticks. A longer interval still works (a tick is kept in
/// its slot until its turn), it only visits its slot more than once.
const SLOTS: usize = 1024;

/// What a session (actor `A`) shares with its worker's wheel.
pub(crate) struct Beat<A: Actor> {
    /// A frame arrived since the last tick.
    heard: Cell<bool>,
    /// Ticks in a row without a frame.
    silent: Cell<u32>,
    /// The silent ticks after which the session is closed: ⌈idle timeout / interval⌉.
    silent_limit: u32,
    tx: QueueSender<DeviceOut>,
    session: WeakAddr<A>,
    router: Arc<Router>,
    device_id: DeviceId,
}

impl<A> Beat<A>
where
    A: Actor<Context = Context<A>> + Handler<CloseSession>,
{
    pub(crate) fn new(
        tx: QueueSender<DeviceOut>,
        session: WeakAddr<A>,
        router: Arc<Router>,
        device_id: DeviceId,
        interval: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let limit = idle_timeout.as_nanos().div_ceil(interval.as_nanos().max(1));
        Beat {
            // The authentication frame counts for the first tick, which may come up to a
            // grid slot short of a whole interval (see [`start`]).
            heard: Cell::new(true),
            silent: Cell::new(0),
            silent_limit: u32::try_from(limit).unwrap_or(u32::MAX).max(1),
            tx,
            session,
            router,
            device_id,
        }
    }

    /// A frame arrived from the device.
    pub(crate) fn heard(&self) {
        self.heard.set(true);
    }
}

/// A session's side of the wheel, whatever its actor.
trait Tick {
    /// One tick. Returns whether the session ticks on.
    fn tick(&self) -> bool;
}

impl<A> Tick for Beat<A>
where
    A: Actor<Context = Context<A>> + Handler<CloseSession>,
{
    fn tick(&self) -> bool {
        if self.heard.replace(false) {
            self.silent.set(0);
        } else {
            self.silent.set(self.silent.get().saturating_add(1));
        }
        let metrics = self.router.metrics();
        if self.silent.get() >= self.silent_limit {
            metrics.heartbeat_missed(SessionKind::Device);
            tracing::debug!(device = %self.device_id, "device silent past idle timeout");
            if let Some(session) = self.session.upgrade() {
                session.do_send(CloseSession::new(CloseCode::IdleTimeout, "nothing received within the idle timeout"));
            }
            return false;
        }
        match self.tx.try_send(DeviceOut::Heartbeat) {
            Ok(()) => metrics.heartbeat_sent(SessionKind::Device),
            Err(_) => metrics.dropped(DropReason::ControlQueueFull),
        }
        true
    }
}

/// Starts ticking a session: first `interval` from now rounded down to the grid, then
/// every `interval`, until its [`Beat`] is dropped or it is closed for silence. Must run
/// on the session's worker, inside its `LocalSet`.
///
/// Rounded down, so that the first HEARTBEAT reaches the device before its own is due:
/// a device that answers ours (docs/protocol.md §6.4.2) then sends its heartbeats right
/// after ours for the rest of the session, and the answers to one slot's heartbeats
/// arrive together, read in a few wake-ups of the worker instead of one per device.
pub(crate) fn start<A>(beat: &Rc<Beat<A>>, interval: Duration)
where
    A: Actor<Context = Context<A>> + Handler<CloseSession>,
{
    let every = u64::try_from(interval.as_nanos().div_ceil(GRID.as_nanos())).unwrap_or(u64::MAX).max(1);
    WHEEL.with(|wheel| {
        let due = slot_at(Instant::now() + interval);
        let beat: Rc<dyn Tick> = beat.clone();
        wheel.insert(Entry { due, every, beat: Rc::downgrade(&beat) });
        wheel.entries.set(wheel.entries.get() + 1);
        if !wheel.running.replace(true) {
            wheel.done.set(slot_at(Instant::now()));
            actix::spawn(turn(wheel.clone()));
        } else if due < wheel.sleeping_until.get() {
            wheel.wake.notify_one();
        }
    });
}

thread_local! {
    static WHEEL: Rc<Wheel> = Rc::new(Wheel::default());
}

struct Entry {
    /// The slot of its next tick.
    due: u64,
    /// Slots between ticks.
    every: u64,
    beat: Weak<dyn Tick>,
}

struct Wheel {
    slots: RefCell<Vec<Vec<Entry>>>,
    /// Entries in the slots, live or not yet found dead.
    entries: Cell<usize>,
    /// The last slot whose ticks ran.
    done: Cell<u64>,
    /// Whether the wheel's task runs, and the slot it sleeps until.
    running: Cell<bool>,
    sleeping_until: Cell<u64>,
    /// Wakes the task for a tick due before the slot it sleeps until.
    wake: Notify,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel {
            slots: RefCell::new((0..SLOTS).map(|_| Vec::new()).collect()),
            entries: Cell::new(0),
            done: Cell::new(0),
            running: Cell::new(false),
            sleeping_until: Cell::new(u64::MAX),
            wake: Notify::new(),
        }
    }
}

impl Wheel {
    fn insert(&self, entry: Entry) {
        self.slots.borrow_mut()[ring(entry.due)].push(entry);
    }

    /// Runs the ticks due in `slot`; entries due in a later turn of the ring stay.
    fn run_slot(&self, slot: u64, now: u64) {
        let mut list = std::mem::take(&mut self.slots.borrow_mut()[ring(slot)]);
        for mut entry in list.drain(..) {
            if entry.due > slot {
                self.insert(entry);
                continue;
            }
            let ticks_on = entry.beat.upgrade().is_some_and(|beat| beat.tick());
            if ticks_on {
                // After a stall, the next tick is an interval from the slot, but never in
                // the slots being caught up: a late tick is not followed by a second one.
                entry.due = (slot + entry.every).max(now + 1);
                self.insert(entry);
            } else {
                self.entries.set(self.entries.get() - 1);
            }
        }
        let mut slots = self.slots.borrow_mut();
        if slots[ring(slot)].is_empty() {
            slots[ring(slot)] = list; // keeps its capacity for the next turn
        }
    }

    /// The first slot after `after` that holds an entry.
    fn next_busy(&self, after: u64) -> u64 {
        let slots = self.slots.borrow();
        (after + 1..=after + SLOTS as u64).find(|s| !slots[ring(*s)].is_empty()).unwrap_or(after + SLOTS as u64)
    }

    /// Forgets every entry: the runtime that ran the task is gone.
    fn reset(&self) {
        self.slots.borrow_mut().iter_mut().for_each(Vec::clear);
        self.entries.set(0);
        self.running.set(false);
        self.sleeping_until.set(u64::MAX);
    }
}

/// The wheel's task: runs each slot's ticks when its time comes, and ends when no entry
/// is left.
async fn turn(wheel: Rc<Wheel>) {
    /// Marks the wheel stopped however the task ends, also when its runtime drops it.
    struct Running(Rc<Wheel>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.reset();
        }
    }
    let running = Running(wheel);
    let wheel = &running.0;
    loop {
        let now = slot_at(Instant::now());
        for slot in wheel.done.get() + 1..=now {
            wheel.run_slot(slot, now);
        }
        wheel.done.set(now.max(wheel.done.get()));
        if wheel.entries.get() == 0 {
            return;
        }
        let next = wheel.next_busy(wheel.done.get());
        wheel.sleeping_until.set(next);
        tokio::select! {
            _ = tokio::time::sleep_until(instant_of(next)) => {}
            _ = wheel.wake.notified() => {}
        }
        wheel.sleeping_until.set(u64::MAX);
    }
}

fn ring(slot: u64) -> usize {
    (slot % SLOTS as u64) as usize
}

/// The process's grid starts at its first session, so that every worker's ticks fall on
/// the same points.
fn grid_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The slot of instant `at`: the grid point at or before it.
fn slot_at(at: Instant) -> u64 {
    let since = at.saturating_duration_since(grid_start()).as_nanos();
    u64::try_from(since / GRID.as_nanos()).unwrap_or(u64::MAX / 2)
}

fn instant_of(slot: u64) -> Instant {
    grid_start() + GRID * u32::try_from(slot).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::AsyncContext;

    use crate::metrics::Metrics;
    use crate::queue::{self, QueueReceiver};
    use crate::test_stubs::SessionStub;
    use noc_cluster::{MemoryCluster, NodeId};

    fn beat(interval: Duration, idle: Duration) -> (Rc<Beat<SessionStub>>, QueueReceiver<DeviceOut>) {
        let router = Router::new(Arc::new(MemoryCluster::single(NodeId::new("t"), 16)), Arc::new(Metrics::new()));
        let (tx, rx) = queue::bounded(8);
        let session = Context::<SessionStub>::new().address().downgrade();
        let beat = Beat::new(tx, session, router, DeviceId::random(), interval, idle);
        (Rc::new(beat), rx)
    }

    fn heartbeats(rx: &mut QueueReceiver<DeviceOut>) -> usize {
        std::iter::from_fn(|| rx.try_recv()).filter(|o| matches!(o, DeviceOut::Heartbeat)).count()
    }

    #[actix_rt::test]
    async fn ticks_of_sessions_started_apart_fall_on_the_grid_at_most_an_interval_after_start() {
        tokio::time::pause();
        let interval = Duration::from_secs(60);
        let (a, mut rx_a) = beat(interval, Duration::from_secs(600));
        let started_a = Instant::now();
        start(&a, interval);
        tokio::time::advance(Duration::from_millis(77)).await;
        let (b, mut rx_b) = beat(interval, Duration::from_secs(600));
        let started_b = Instant::now();
        start(&b, interval);
        // When each first heartbeat is queued, to the millisecond.
        let (mut first_a, mut first_b) = (None, None);
        while first_a.is_none() || first_b.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if first_a.is_none() && heartbeats(&mut rx_a) > 0 {
                first_a = Some(Instant::now());
            }
            if first_b.is_none() && heartbeats(&mut rx_b) > 0 {
                first_b = Some(Instant::now());
            }
        }
        // The first tick falls on the grid point at or before a whole interval from the
        // start: never later than the device's own first heartbeat would be due. (Seen up
        // to a few milliseconds later: timers fire on the millisecond after their
        // deadline, and this loop looks every millisecond.)
        let resolution = Duration::from_millis(5);
        for (started, first) in [(started_a, first_a), (started_b, first_b)] {
            let after = first.map(|f| f - started).unwrap_or_default();
            assert!(after > interval - GRID && after <= interval + resolution, "first tick after {after:?}");
            let on_grid = (first.unwrap_or(started) - grid_start()).as_millis() % GRID.as_millis();
            assert!(on_grid <= resolution.as_millis(), "first tick {on_grid} ms past a grid point");
        }
        // Then every interval, once.
        tokio::time::sleep(interval).await;
        assert_eq!((heartbeats(&mut rx_a), heartbeats(&mut rx_b)), (1, 1));
    }

    #[actix_rt::test]
    async fn a_silent_session_stops_ticking_and_the_wheel_stops_with_its_last_session() {
        tokio::time::pause();
        let interval = Duration::from_secs(10);
        let (silent, mut rx) = beat(interval, Duration::from_secs(25));
        start(&silent, interval);
        let (dropped, _rx) = beat(interval, Duration::from_secs(600));
        start(&dropped, interval);
        drop(dropped);
        tokio::time::sleep(Duration::from_secs(41)).await;
        // The authentication counts for the tick at 10 s; the ticks at 10, 20 and 30 s
        // queue heartbeats, and the third silent tick (40 s: 30 s ≥ 25 s) closes.
        assert_eq!(heartbeats(&mut rx), 3);
        assert_eq!(silent.router.metrics().value("noc_heartbeats_missed_total", &[("kind", "device")]), 1.0);
        WHEEL.with(|w| assert!(!w.running.get() && w.entries.get() == 0, "the wheel's task ended"));
    }

    #[actix_rt::test]
    async fn a_session_that_is_heard_ticks_on() {
        tokio::time::pause();
        let interval = Duration::from_secs(10);
        let (b, mut rx) = beat(interval, Duration::from_secs(20));
        start(&b, interval);
        for _ in 0..5 {
            b.heard();
            tokio::time::sleep(interval).await;
        }
        assert_eq!(heartbeats(&mut rx), 5);
        assert_eq!(b.router.metrics().value("noc_heartbeats_missed_total", &[("kind", "device")]), 0.0);
    }

    #[actix_rt::test]
    async fn an_earlier_tick_wakes_a_wheel_that_sleeps_until_a_later_one() {
        tokio::time::pause();
        let (slow, _rx_slow) = beat(Duration::from_secs(100), Duration::from_secs(1000));
        start(&slow, Duration::from_secs(100));
        tokio::task::yield_now().await;
        let (fast, mut rx_fast) = beat(Duration::from_secs(1), Duration::from_secs(1000));
        start(&fast, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(heartbeats(&mut rx_fast), 1);
    }
}
