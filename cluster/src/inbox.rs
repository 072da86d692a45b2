//! A node's inbox: what other nodes sent it (and what came back undelivered), in order.
//!
//! It is a bounded channel that also counts what it holds *until the consumer has handled
//! it*: a message counts as handled when the consumer asks for the next one. A stopping
//! node uses that count to wait until everything it received was acted on (delivered or
//! bounced) before the process exits; a message taken from a plain channel but not yet
//! handled would be invisible, and lost without a notice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::{BusMessage, wire};

/// An inbox holding at most `capacity` messages, and its sending side.
pub fn inbox(capacity: usize) -> (InboxSender, Inbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let unhandled = Arc::new(AtomicUsize::new(0));
    (InboxSender { tx, unhandled: unhandled.clone() }, Inbox { rx, unhandled, holding: false })
}

/// The sending side; clones share the count.
#[derive(Clone)]
pub struct InboxSender {
    tx: mpsc::Sender<BusMessage>,
    unhandled: Arc<AtomicUsize>,
}

impl InboxSender {
    /// Waits for room; gives the message back if the inbox is gone.
    pub async fn send(&self, msg: BusMessage) -> Result<(), BusMessage> {
        self.unhandled.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).await.map_err(|e| {
            self.unhandled.fetch_sub(1, Ordering::Relaxed);
            e.0
        })
    }

    /// Decodes one received payload (a message or a [`wire::Bundle`]) into the inbox,
    /// waiting for room; `false` once the inbox is gone. What a node receives, over Redis
    /// or a link, comes in through here.
    pub(crate) async fn deliver(&self, payload: bytes::Bytes) -> bool {
        for msg in wire::decode_each(payload) {
            match msg {
                Ok(m) => {
                    if self.send(m).await.is_err() {
                        return false;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable bus message dropped"),
            }
        }
        true
    }

    /// Never waits.
    #[allow(clippy::result_large_err, reason = "the message comes back, as from tokio's own channel")]
    pub fn try_send(&self, msg: BusMessage) -> Result<(), TrySendError<BusMessage>> {
        self.unhandled.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(msg).inspect_err(|_| {
            self.unhandled.fetch_sub(1, Ordering::Relaxed);
        })
    }

    /// Messages sent and not yet handled (queued, or the one being handled).
    pub fn unhandled(&self) -> usize {
        self.unhandled.load(Ordering::Relaxed)
    }
}

/// The receiving side, owned by the node's router.
pub struct Inbox {
    rx: mpsc::Receiver<BusMessage>,
    unhandled: Arc<AtomicUsize>,
    /// Whether the consumer holds a message it has not finished with.
    holding: bool,
}

impl Inbox {
    /// The next message; the previous one counts as handled from this call on.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        self.done();
        let msg = self.rx.recv().await;
        self.holding = msg.is_some();
        msg
    }

    fn done(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.unhandled.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionKey;
    use noc_protocol::{CloseCode, DeviceId};

    fn msg() -> BusMessage {
        BusMessage::Close { key: SessionKey::Device(DeviceId::random()), code: CloseCode::Replaced }
    }

    #[tokio::test]
    async fn a_message_counts_until_the_consumer_asks_for_the_next() {
        let (tx, mut rx) = inbox(4);
        tx.try_send(msg()).expect("room");
        tx.send(msg()).await.expect("room");
        assert_eq!(tx.unhandled(), 2);
        rx.recv().await.expect("first");
        assert_eq!(tx.unhandled(), 2, "the first is being handled");
        rx.recv().await.expect("second");
        assert_eq!(tx.unhandled(), 1, "the first is done, the second is being handled");
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), rx.recv()).await;
        assert!(next.is_err(), "nothing more");
        assert_eq!(tx.unhandled(), 0);
    }

    #[tokio::test]
    async fn refused_messages_are_not_counted() {
        let (tx, rx) = inbox(1);
        tx.try_send(msg()).expect("room");
        assert!(matches!(tx.try_send(msg()), Err(TrySendError::Full(_))));
        assert_eq!(tx.unhandled(), 1);
        drop(rx);
        assert!(tx.send(msg()).await.is_err());
        assert!(matches!(tx.try_send(msg()), Err(TrySendError::Closed(_))));
    }
}
