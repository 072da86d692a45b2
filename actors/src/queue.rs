//! The bounded send queues of the sessions: a device session's, and a VES command
//! channel's.
//!
//! Most device sessions are idle most of the time, so the queue must cost next to nothing
//! while empty: a `VecDeque` that allocates on first use and gives its memory back when it
//! drains, behind a mutex held only to push or pop, plus an `AtomicWaker` for the one
//! consumer. (A tokio `mpsc` channel allocates a block of 32 slots up front: over 2 KiB per
//! session, and, once its few spare blocks are in use, a new block every 32 items.)
//! A queue that is busy for its whole life (a command channel) keeps what it grew to
//! instead ([`bounded_keeping`]), so that its steady state allocates nothing.
//! Producers never wait: a full queue is reported at once, so the sender can be told.
//! As with a channel, the queue closes when either side is gone: the receiver sees the end
//! once every sender is dropped and what they queued is taken (a command channel that
//! finishes ends that way), and senders are refused once the receiver is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Why an item was not queued; the item is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    Full(T),
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The consumer's waker, woken by every push.
    ready: AtomicWaker,
    capacity: usize,
    /// Capacity an emptied queue keeps; more is given back.
    keep: usize,
    /// Live senders; the last one to go closes the queue.
    senders: AtomicUsize,
}

/// The producing side; cheap to clone.
pub struct QueueSender<T>(Arc<Shared<T>>);

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Self(self.0.clone())
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.lock().closed = true;
            self.0.ready.wake();
        }
    }
}

/// The consuming side (the session's send loop). Dropping it closes the queue and drops
/// what it still holds.
pub struct QueueReceiver<T>(Arc<Shared<T>>);

/// Capacity kept by an emptied device queue; more is given back.
const KEEP_CAPACITY: usize = 8;

/// A queue holding at most `capacity` items, which gives its memory back when it drains.
pub fn bounded<T>(capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    bounded_keeping(capacity, KEEP_CAPACITY)
}

/// A queue holding at most `capacity` items that keeps up to `keep` slots when it drains.
pub fn bounded_keeping<T>(capacity: usize, keep: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), closed: false }),
        ready: AtomicWaker::new(),
        capacity: capacity.max(1),
        keep,
        senders: AtomicUsize::new(1),
    });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next item, or (none queued) whether the queue is closed.
    fn pop(&self) -> Result<T, bool> {
        let mut s = self.lock();
        let item = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > self.keep {
            s.items = VecDeque::new();
        }
        item.ok_or(s.closed)
    }
}

impl<T> QueueSender<T> {
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.push(item, self.0.capacity)
    }

    /// Like [`try_send`](Self::try_send), but may fill up to `extra` slots past the
    /// capacity: for items that must not be refused because others filled the queue (a
    /// command channel's acknowledgements and notices behind a backlog of frames). The
    /// queue then holds at most its capacity plus `extra`.
    pub fn try_send_over(&self, item: T, extra: usize) -> Result<(), TrySendError<T>> {
        self.push(item, self.0.capacity.saturating_add(extra))
    }

    /// Queues `item` if fewer than `limit` items are queued.
    fn push(&self, item: T, limit: usize) -> Result<(), TrySendError<T>> {
        {
            let mut s = self.0.lock();
            if s.closed {
                return Err(TrySendError::Closed(item));
            }
            if s.items.len() >= limit {
                return Err(TrySendError::Full(item));
            }
            s.items.push_back(item);
        }
        self.0.ready.wake();
        Ok(())
    }

    /// The most items [`try_send`](Self::try_send) lets the queue hold.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.0.lock().items.is_empty()
    }
}

impl<T> QueueReceiver<T> {
    /// The next item without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.pop().ok()
    }

    /// The next item, or `Ready(None)` once the queue is closed and empty; registers the
    /// task's waker when there is none yet.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.0.pop() {
            Ok(item) => return Poll::Ready(Some(item)),
            Err(true) => return Poll::Ready(None),
            Err(false) => {}
        }
        self.0.ready.register(cx.waker());
        // An item pushed before the registration woke no one: look again.
        match self.0.pop() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(true) => Poll::Ready(None),
            Err(false) => Poll::Pending,
        }
    }

    /// The next item; `None` once the queue is closed and empty.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Refuses further items; those already queued can still be taken.
    pub fn close(&mut self) {
        self.0.lock().closed = true;
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut s = self.0.lock();
            s.closed = true;
            std::mem::take(&mut s.items)
        };
        // Dropped outside the lock: an item's drop may take other locks.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_with_close() {
        let (tx, mut rx) = bounded(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.clone().try_send(4), Ok(()));
        rx.close();
        assert_eq!(tx.try_send(5), Err(TrySendError::Closed(5)));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn items_sent_over_the_capacity_take_only_their_extra_slots() {
        let (tx, mut rx) = bounded(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)), "full for ordinary items");
        assert_eq!(tx.try_send_over(4, 2), Ok(()));
        assert_eq!(tx.try_send_over(5, 2), Ok(()));
        assert_eq!(tx.try_send_over(6, 2), Err(TrySendError::Full(6)), "the extra slots are used up");
        assert_eq!(tx.try_send(7), Err(TrySendError::Full(7)), "and ordinary items still wait for room");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.try_send(8), Err(TrySendError::Full(8)), "three queued: still over the capacity");
        assert_eq!(tx.try_send_over(9, 2), Ok(()));
        for expected in [2, 4, 5, 9] {
            assert_eq!(rx.recv().await, Some(expected), "one order for both kinds");
        }
        assert_eq!(tx.try_send(10), Ok(()), "drained: room again");
        rx.close();
        assert_eq!(tx.try_send_over(11, 2), Err(TrySendError::Closed(11)));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, mut rx) = bounded::<u32>(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(7).expect("queued");
        assert_eq!(waiter.await.expect("task"), Some(7));
    }

    #[test]
    fn an_idle_queue_holds_no_buffer() {
        let (tx, mut rx) = bounded::<[u8; 64]>(256);
        for _ in 0..100 {
            tx.try_send([0; 64]).expect("queued");
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().items.capacity(), 0, "memory given back after a burst");
    }

    #[test]
    fn a_busy_queue_keeps_what_it_grew_to() {
        let (tx, mut rx) = bounded_keeping::<u64>(4096, 1024);
        for round in 0..2 {
            for i in 0..500 {
                tx.try_send(i).expect("queued");
            }
            let grown = rx.0.lock().items.capacity();
            while rx.try_recv().is_some() {}
            assert!(grown >= 500, "round {round}");
            assert_eq!(rx.0.lock().items.capacity(), grown, "round {round}: kept for the next burst");
        }
    }

    #[tokio::test]
    async fn the_receiver_sees_the_end_once_every_sender_is_gone() {
        let (tx, mut rx) = bounded::<u32>(4);
        let other = tx.clone();
        tx.try_send(1).expect("queued");
        drop(tx);
        other.try_send(2).expect("one sender left");
        let waiter = tokio::spawn(async move { (rx.recv().await, rx.recv().await, rx.recv().await) });
        tokio::task::yield_now().await;
        drop(other);
        assert_eq!(waiter.await.expect("task"), (Some(1), Some(2), None), "what was queued, then the end");
    }

    #[test]
    fn a_dropped_receiver_closes_the_queue() {
        let (tx, rx) = bounded::<u32>(4);
        tx.try_send(1).expect("queued");
        assert!(!tx.is_empty());
        drop(rx);
        assert!(tx.is_empty(), "what was queued is dropped with the receiver");
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
    }
}
