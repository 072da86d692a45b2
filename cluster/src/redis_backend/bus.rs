//! The bus between nodes: `noc:inbox:{<node-id>}`, each node's pub/sub channel.
//!
//! The braces are a hash tag: with Redis Cluster's sharded pub/sub (`SPUBLISH`/
//! `SSUBSCRIBE`) a node's whole inbox lives on one shard, so messages to one node keep
//! their order. Pub/sub is at most once; the relay never relies on it for correctness
//! (end-to-end acknowledgements do). What it does guarantee is that a message to a node
//! nobody listens for comes back (`PUBLISH` counts receivers), so the sender gets an
//! undeliverable notice. A stopping node unsubscribes before it exits, so that from then
//! on messages to it come back too, and handles everything that arrived before.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::redis_backend::conn::{Conn, Endpoint, cluster_client};
use crate::redis_backend::options::{RedisMode, RedisOptions};
use crate::{BusMessage, BusObserver, ClusterError, Inbox, InboxSender, NodeId, inbox, wire};

/// Most messages published in one round of pipelines.
const BATCH: usize = 256;

/// The payload of a sharded pub/sub message push.
fn sharded_payload(push: &redis::PushInfo) -> Option<&[u8]> {
    match (&push.kind, push.data.get(1)) {
        (redis::PushKind::SMessage, Some(redis::Value::BulkString(payload))) => Some(payload),
        _ => None,
    }
}

/// Resolves once the node leaves (the watch's guard is not held across awaits).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn inbox_channel(node: &NodeId) -> String {
    format!("noc:inbox:{{{node}}}")
}

/// The messages of one batch for one node: one pipeline.
struct Group {
    node: NodeId,
    channel: String,
    pipe: redis::Pipeline,
    msgs: Vec<BusMessage>,
    /// When its first (oldest) message was queued.
    oldest: tokio::time::Instant,
}

/// A message waiting to be published: its target, and when it was queued.
pub(super) type Queued = (NodeId, BusMessage, tokio::time::Instant);

/// This node's inbox (subscribed) and its publisher's queue.
pub(super) struct Bus {
    node: NodeId,
    opts: RedisOptions,
    endpoint: Endpoint,
    conn: Conn,
    subscribed: AtomicBool,
    /// Messages queued or being published, not yet answered by Redis.
    pending: Arc<AtomicUsize>,
    inbox_tx: InboxSender,
    inbox_rx: Mutex<Option<Inbox>>,
    publish_tx: mpsc::Sender<Queued>,
    /// Told how long each published batch waited (the node's metrics).
    observer: OnceLock<Arc<dyn BusObserver>>,
    /// Set when the node leaves: the subscription ends.
    stop: watch::Sender<bool>,
    /// Set by the subscriber once it unsubscribed and delivered what came before.
    stopped: watch::Sender<bool>,
}

impl Bus {
    /// The bus, and the publish queue for [`Bus::publish_loop`].
    pub fn new(node: NodeId, opts: &RedisOptions, endpoint: Endpoint, conn: Conn) -> (Self, mpsc::Receiver<Queued>) {
        let (inbox_tx, inbox_rx) = inbox(opts.inbox_capacity);
        let (publish_tx, publish_rx) = mpsc::channel(opts.publish_queue.max(1));
        let bus = Self {
            node,
            opts: opts.clone(),
            endpoint,
            conn,
            subscribed: AtomicBool::new(false),
            pending: Arc::new(AtomicUsize::new(0)),
            inbox_tx,
            inbox_rx: Mutex::new(Some(inbox_rx)),
            publish_tx,
            observer: OnceLock::new(),
            stop: watch::Sender::new(false),
            stopped: watch::Sender::new(false),
        };
        (bus, publish_rx)
    }

    /// A sender into this node's own inbox (the registry's ownership check closes a
    /// taken-over session through it).
    pub fn inbox_sender(&self) -> InboxSender {
        self.inbox_tx.clone()
    }

    /// Reports each published batch's wait to `observer` (the first one set stays).
    pub fn observe(&self, observer: Arc<dyn BusObserver>) {
        let _ = self.observer.set(observer);
    }

    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Queues `msg` for `node`'s inbox (never blocks).
    pub fn publish(&self, node: &NodeId, msg: BusMessage) -> Result<(), ClusterError> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.publish_tx.try_send((node.clone(), msg, tokio::time::Instant::now())).map_err(|e| {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => ClusterError::InboxFull(node.clone()),
                mpsc::error::TrySendError::Closed(_) => ClusterError::Unavailable("publisher stopped".into()),
            }
        })
    }

    /// Waits until nothing received is unhandled and nothing published is still queued or
    /// in flight, or `limit` passed. Both at once: handling a message may publish one (a
    /// bounce), and a publish may come back (`Returned`); each counts in one before it
    /// leaves the other.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while (self.pending.load(Ordering::Relaxed) > 0 || self.inbox_tx.unhandled() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the subscription: Redis stops delivering to this node (later publishes to it
    /// count no receiver and come back to their senders), and what it delivered before is
    /// in the inbox when this returns.
    pub async fn stop_listening(&self) {
        self.stop.send_replace(true);
        let mut stopped = self.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    pub fn take_inbox(&self) -> Option<Inbox> {
        self.inbox_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Hands a message that reached no node back to this node's router, which bounces what
    /// it carried to its sender as undeliverable. That notice is what lets the sender queue
    /// instead of waiting for a timeout, so a full inbox makes it wait for room rather
    /// than drop it (returned messages are rare: one per publish to a vanished node).
    fn returned(&self, msg: BusMessage) {
        match self.inbox_tx.try_send(BusMessage::Returned(Box::new(msg))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(returned)) => {
                let tx = self.inbox_tx.clone();
                // Counted as pending until it is in the inbox, so that a flush waits for it.
                self.pending.fetch_add(1, Ordering::Relaxed);
                let pending = self.pending.clone();
                tokio::spawn(async move {
                    let sent = tx.send(returned).await;
                    pending.fetch_sub(1, Ordering::Relaxed);
                    if sent.is_err() {
                        tracing::debug!("node stopping: a returned message is not bounced");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("node stopping: a returned message is not bounced");
            }
        }
    }

    /// Decodes one received message into the inbox; `false` once the node is gone.
    async fn deliver(&self, payload: &[u8]) -> bool {
        match wire::decode(Bytes::copy_from_slice(payload)) {
            Ok(m) => self.inbox_tx.send(m).await.is_ok(),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable bus message dropped");
                true
            }
        }
    }

    /// Keeps this node subscribed to its inbox channel, resubscribing after failures,
    /// until [`Bus::stop_listening`].
    pub async fn subscribe_loop(&self) {
        match &self.endpoint {
            Endpoint::Cluster(seeds) => self.subscribe_sharded(seeds.clone()).await,
            Endpoint::Single(_) | Endpoint::Sentinel(_) => self.subscribe_single().await,
        }
        self.subscribed.store(false, Ordering::Relaxed);
        self.stopped.send_replace(true);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sharded pub/sub on Redis Cluster. A disconnection (reported as a push) starts over
    /// with a new client and subscription, so that a failover to a replica is followed.
    async fn subscribe_sharded(&self, seeds: Vec<String>) {
        let channel = inbox_channel(&self.node);
        let mut stop = self.stop.subscribe();
        let mut backoff = Duration::from_millis(100);
        while !self.stopping() {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let connected = async {
                let client = cluster_client(&seeds, &self.opts, Some(tx)).ok()?;
                let mut conn = client.get_async_connection().await.ok()?;
                conn.ssubscribe(&channel).await.ok()?;
                Some(conn)
            }
            .await;
            let Some(mut conn) = connected else {
                let _ = tokio::time::timeout(backoff, stop_requested(&mut stop)).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            };
            self.subscribed.store(true, Ordering::Relaxed);
            backoff = Duration::from_millis(100);
            tracing::info!(channel, "subscribed to the node inbox (sharded)");
            loop {
                let push = tokio::select! {
                    push = rx.recv() => push,
                    _ = stop_requested(&mut stop) => {
                        // The answer comes after every message the shard sent before it,
                        // and those are in `rx` by then.
                        if let Err(e) = conn.sunsubscribe(&channel).await {
                            tracing::warn!(error = %e, "unsubscribing the node inbox failed");
                        }
                        while let Some(Some(push)) = rx.recv().now_or_never() {
                            if let Some(payload) = sharded_payload(&push) {
                                self.deliver(payload).await;
                            }
                        }
                        return;
                    }
                };
                let Some(push) = push else { break };
                if let Some(payload) = sharded_payload(&push) {
                    if !self.deliver(payload).await {
                        return;
                    }
                    continue;
                }
                match push.kind {
                    redis::PushKind::Disconnection => {
                        // The shard's server went away. If it died, its replica takes the
                        // slots over, and the client's own resubscription would keep
                        // asking the dead address: start over with a fresh client, which
                        // learns the slot map again from the seeds.
                        self.subscribed.store(false, Ordering::Relaxed);
                        tracing::warn!("sharded inbox subscription interrupted; subscribing again");
                        break;
                    }
                    redis::PushKind::SSubscribe => self.subscribed.store(true, Ordering::Relaxed),
                    _ => {}
                }
            }
        }
    }

    /// The server to subscribe on now: the configured one, or the primary the sentinels
    /// name at this moment.
    async fn pubsub_server(&self) -> redis::RedisResult<redis::Client> {
        match &self.endpoint {
            Endpoint::Single(client) => Ok(client.clone()),
            Endpoint::Sentinel(sentinels) => sentinels.master_client().await,
            Endpoint::Cluster(_) => {
                Err(redis::RedisError::from((redis::ErrorKind::Client, "a cluster subscribes per shard")))
            }
        }
    }

    async fn subscribe_single(&self) {
        let channel = inbox_channel(&self.node);
        let mut stop = self.stop.subscribe();
        let mut backoff = Duration::from_millis(100);
        while !self.stopping() {
            // Bounded: an unreachable server must not hold the subscription for minutes.
            let attempt = async { self.pubsub_server().await?.get_async_pubsub().await };
            let pubsub = tokio::time::timeout(self.opts.command_timeout * 2, attempt)
                .await
                .unwrap_or_else(|_| Err(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))));
            match pubsub {
                Ok(pubsub) => {
                    let (mut sink, mut messages) = pubsub.split();
                    match sink.subscribe(&channel).await {
                        Ok(()) => {
                            self.subscribed.store(true, Ordering::Relaxed);
                            backoff = Duration::from_millis(100);
                            tracing::info!(channel, "subscribed to the node inbox");
                            loop {
                                let msg = tokio::select! {
                                    msg = messages.next() => msg,
                                    _ = stop_requested(&mut stop) => {
                                        // Redis answers UNSUBSCRIBE after every message it
                                        // sent before, and the connection hands those to
                                        // the stream first.
                                        if let Err(e) = sink.unsubscribe(&channel).await {
                                            tracing::warn!(error = %e, "unsubscribing the node inbox failed");
                                        }
                                        while let Some(Some(msg)) = messages.next().now_or_never() {
                                            self.deliver(msg.get_payload_bytes()).await;
                                        }
                                        return;
                                    }
                                };
                                let Some(msg) = msg else { break };
                                if !self.deliver(msg.get_payload_bytes()).await {
                                    return; // the node is gone
                                }
                            }
                            self.subscribed.store(false, Ordering::Relaxed);
                            tracing::warn!("inbox subscription lost; resubscribing");
                        }
                        Err(e) => tracing::debug!(error = %e, "subscribe failed"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "pub/sub connection failed"),
            }
            let _ = tokio::time::timeout(backoff, stop_requested(&mut stop)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Publishes queued messages in pipelined batches, in order. A message no node received
    /// (its owner is gone) comes back as `Returned`.
    pub async fn publish_loop(&self, mut rx: mpsc::Receiver<Queued>) {
        let publish = match self.opts.mode {
            RedisMode::Standalone | RedisMode::Sentinel => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        };
        let mut batch: Vec<Queued> = Vec::with_capacity(BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // One pipeline per target inbox: its messages stay in order, and on Redis
            // Cluster they all hash to the inbox's shard. The first message of a group is
            // its oldest.
            let taken = batch.len();
            let mut groups: Vec<Group> = Vec::new();
            for (node, msg, queued) in batch.drain(..) {
                let bytes = match wire::encode(&msg) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "unencodable bus message dropped");
                        continue;
                    }
                };
                let i = match groups.iter().position(|g| g.node == node) {
                    Some(i) => i,
                    None => {
                        // The channel's name is made once per target and batch, not per
                        // message.
                        let channel = inbox_channel(&node);
                        groups.push(Group { node, channel, pipe: redis::pipe(), msgs: Vec::new(), oldest: queued });
                        groups.len() - 1
                    }
                };
                let group = &mut groups[i];
                group.pipe.cmd(publish).arg(&group.channel).arg(bytes.as_ref());
                group.msgs.push(msg);
            }
            let sends = groups.into_iter().map(|Group { pipe, msgs, oldest, .. }| {
                let mut conn = self.conn.clone();
                async move {
                    let result = pipe.query_async::<Vec<i64>>(&mut conn).await;
                    (result, msgs, oldest.elapsed())
                }
            });
            for (result, msgs, waited) in futures_util::future::join_all(sends).await {
                match result {
                    Ok(receivers) => {
                        if let Some(observer) = self.observer.get() {
                            observer.published(waited);
                        }
                        for (msg, n) in msgs.into_iter().zip(receivers) {
                            if n == 0 {
                                self.returned(msg);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, messages = msgs.len(), "publish failed; returning messages");
                        for msg in msgs {
                            self.returned(msg);
                        }
                    }
                }
            }
            self.pending.fetch_sub(taken, Ordering::Relaxed);
        }
    }
}
