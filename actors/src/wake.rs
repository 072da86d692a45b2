//! Cross-thread wake-ups, sent on in batches.
//!
//! A device session's send loop runs on the worker thread that accepted its connection,
//! but frames for it are routed on whichever thread received them: a data-channel request
//! on an HTTP worker, a device frame on another device worker, a bus message. Waking a
//! task of another thread's tokio runtime costs a system call (a write to that runtime's
//! eventfd) plus, on the other side, a return from `epoll_wait` and a read. A data-channel
//! request carrying 200 frames would pay that 200 times.
//!
//! Instead, a wake-up for a task of another thread is parked in this thread's list, and
//! the list is handed over once per scheduler tick: the first parked wake-up spawns a
//! local flush task, which runs after the tasks already due on this thread (so it sees
//! every wake-up they produce) and sends each target thread's wake-ups to its actix
//! arbiter as one message. A burst then costs one cross-thread wake-up per target thread.
//! Only the wake-up waits; the item itself is already in the queue, so ordering is
//! untouched, and the delay is one scheduler tick of this thread.
//!
//! Where that machinery is absent (a thread that is not an actix arbiter, as in plain
//! tokio tests), wake-ups are done at once.

use std::cell::RefCell;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

use actix::Arbiter;
use actix_rt::ArbiterHandle;
use prometheus::IntCounter;

/// Cross-thread wake-ups handed over in batches, and the batches that carried them.
/// Process-wide (the threads are), registered in every node's registry; their ratio shows
/// what batching saves.
pub(crate) static WAKEUPS_DEFERRED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "noc_cross_thread_wakeups_deferred_total",
        "Wake-ups of send loops on another worker thread, deferred to the end of the scheduler tick (process-wide).",
    )
    .expect("static metric definition")
});
pub(crate) static WAKEUP_BATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "noc_cross_thread_wakeup_batches_total",
        "Batches that carried the deferred wake-ups, one per target thread and tick (process-wide).",
    )
    .expect("static metric definition")
});

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    static PENDING: RefCell<Pending> = const { RefCell::new(Pending { wakes: Vec::new(), flush_spawned: false }) };
}

/// Wake-ups parked on this thread until its flush task runs.
struct Pending {
    wakes: Vec<(u64, ArbiterHandle, Waker)>,
    flush_spawned: bool,
}

/// The thread a task lives on, and how to reach it.
#[derive(Clone)]
pub struct Home {
    thread: u64,
    arbiter: Option<ArbiterHandle>,
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home").field("thread", &self.thread).field("arbiter", &self.arbiter.is_some()).finish()
    }
}

impl Home {
    /// The calling thread.
    pub fn current() -> Self {
        Self { thread: THREAD.with(|t| *t), arbiter: Arbiter::try_current() }
    }
}

/// Wakes a task living on `home`: at once when that is this thread (cheap) or batching is
/// unavailable, else with this thread's next batch for that thread.
pub fn wake(home: &Home, waker: Waker) {
    let Some(arbiter) = &home.arbiter else { return waker.wake() };
    let elsewhere = THREAD.try_with(|t| *t != home.thread).unwrap_or(false);
    // The flush task is spawned on this thread's arbiter: without one, wake at once.
    if !elsewhere || Arbiter::try_current().is_none() {
        return waker.wake();
    }
    let mut waker = Some(waker);
    let first = PENDING.try_with(|p| {
        let mut p = p.borrow_mut();
        if let Some(w) = waker.take() {
            p.wakes.push((home.thread, arbiter.clone(), w));
        }
        !std::mem::replace(&mut p.flush_spawned, true)
    });
    match first {
        Ok(true) => {
            // Made here, not inside the task: a task dropped unpolled still flushes.
            let flush = FlushOnDrop;
            actix_rt::spawn(async move { flush.flush() });
        }
        Ok(false) => {}
        // This thread is exiting: wake at once.
        Err(_) => waker.into_iter().for_each(Waker::wake),
    }
}

/// Flushes this thread's parked wake-ups; also when dropped unpolled (runtime shutting
/// down), so that no task on another thread misses its wake-up.
struct FlushOnDrop;

impl FlushOnDrop {
    fn flush(self) {
        // Drop does the work.
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let wakes = PENDING
            .try_with(|p| {
                let mut p = p.borrow_mut();
                p.flush_spawned = false;
                std::mem::take(&mut p.wakes)
            })
            .unwrap_or_default();
        send_batches(wakes);
    }
}

/// One arbiter message per target thread, in first-seen order.
fn send_batches(mut wakes: Vec<(u64, ArbiterHandle, Waker)>) {
    WAKEUPS_DEFERRED.inc_by(wakes.len() as u64);
    while let Some((thread, arbiter, _)) = wakes.first() {
        let (thread, arbiter) = (*thread, arbiter.clone());
        let (mine, rest): (Vec<_>, Vec<_>) = wakes.into_iter().partition(|(t, _, _)| *t == thread);
        wakes = rest;
        let wakers: Vec<Waker> = mine.into_iter().map(|(_, _, w)| w).collect();
        WAKEUP_BATCHES.inc();
        // `spawn_fn` hands the closure back only by dropping it when the arbiter is gone;
        // its tasks are gone with it, so there is nobody left to wake.
        let _ = arbiter.spawn_fn(move || wakers.into_iter().for_each(Waker::wake));
    }
}

#[cfg(test)]
mod tests {
    use crate::queue;

    #[test]
    fn wakeups_for_another_thread_go_in_one_batch_per_tick() {
        let system = actix_rt::System::new();
        system.block_on(async {
            let other = actix::Arbiter::new();
            let (senders_tx, senders_rx) = tokio::sync::oneshot::channel();
            let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
            // Ten send loops waiting on their queues on the other thread.
            other.spawn(async move {
                let mut senders = Vec::new();
                for i in 0..10u32 {
                    let (tx, mut rx) = queue::bounded::<u32>(4);
                    senders.push(tx);
                    let got = got_tx.clone();
                    actix_rt::spawn(async move {
                        while let Some(v) = rx.recv().await {
                            let _ = got.send((i, v));
                        }
                    });
                }
                // Runs after the receivers' first polls: all of them are waiting now.
                actix_rt::spawn(async move {
                    tokio::task::yield_now().await;
                    let _ = senders_tx.send(senders);
                });
            });
            let senders = senders_rx.await.expect("receivers ready");
            let (deferred, batches) = (super::WAKEUPS_DEFERRED.get(), super::WAKEUP_BATCHES.get());
            // One burst from this thread: ten wake-ups, one hand-over.
            for tx in &senders {
                tx.try_send(7).expect("queued");
            }
            let mut seen = Vec::new();
            for _ in 0..10 {
                seen.push(got_rx.recv().await.expect("delivered").0);
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..10).collect::<Vec<_>>(), "every send loop woke");
            assert_eq!(super::WAKEUPS_DEFERRED.get() - deferred, 10);
            assert_eq!(super::WAKEUP_BATCHES.get() - batches, 1, "one batch for the burst");
            other.stop();
        });
    }
}
