//! The bounded send queue of a device session.
//!
//! Most device sessions are idle most of the time, so the queue must cost next to nothing
//! while empty: a `VecDeque` that allocates on first use and gives its memory back when it
//! drains, behind a mutex held only to push or pop, plus a `Notify` to wake the send loop.
//! (A tokio `mpsc` channel allocates a block of 32 slots up front: over 2 KiB per session.)
//! Producers never wait: a full queue is reported at once, so the sender can be told.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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
    ready: Notify,
    capacity: usize,
}

/// The producing side; cheap to clone.
pub struct QueueSender<T>(Arc<Shared<T>>);

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The consuming side (the session's send loop).
pub struct QueueReceiver<T>(Arc<Shared<T>>);

/// A queue holding at most `capacity` items.
pub fn bounded<T>(capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), closed: false }),
        ready: Notify::new(),
        capacity: capacity.max(1),
    });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> QueueSender<T> {
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut s = self.0.lock();
            if s.closed {
                return Err(TrySendError::Closed(item));
            }
            if s.items.len() >= self.0.capacity {
                return Err(TrySendError::Full(item));
            }
            s.items.push_back(item);
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

/// Capacity kept by an emptied queue; more is given back.
const KEEP_CAPACITY: usize = 8;

impl<T> QueueReceiver<T> {
    /// The next item without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut s = self.0.lock();
        let item = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > KEEP_CAPACITY {
            s.items = VecDeque::new();
        }
        item
    }

    /// The next item; `None` once the queue is closed and empty.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut s = self.0.lock();
                if let Some(item) = s.items.pop_front() {
                    if s.items.is_empty() && s.items.capacity() > KEEP_CAPACITY {
                        s.items = VecDeque::new();
                    }
                    return Some(item);
                }
                if s.closed {
                    return None;
                }
            }
            // A notification sent since the check above is kept as a permit: no lost wakeup.
            self.0.ready.notified().await;
        }
    }

    /// Refuses further items; those already queued can still be taken.
    pub fn close(&mut self) {
        self.0.lock().closed = true;
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
}
