//! The bus between nodes: `noc:inbox:{<node-id>}`, each node's pub/sub channel.
//!
//! The braces are a hash tag: with Redis Cluster's sharded pub/sub (`SPUBLISH`/
//! `SSUBSCRIBE`) a node's whole inbox lives on one shard, so messages to one node keep
//! their order. Pub/sub is at most once; the relay never relies on it for correctness
//! (end-to-end acknowledgements do). What it does guarantee is that a message to a node
//! nobody listens for comes back (`PUBLISH` counts receivers), so the sender gets an
//! undeliverable notice. A stopping node unsubscribes before it exits, so that from then
//! on messages to it come back too, and handles everything that arrived before.
//!
//! Each node reads two inboxes: `…:bundles`, where one payload carries every message a
//! publisher had queued for the node when it woke ([`wire::Bundle`]), so Redis handles one
//! command and the node one pushed message for many frames; and the plain one, one
//! message per payload, which is all a node of an earlier version reads and sends. A
//! bundle that reached nobody is sent again there, message by message, so nodes of both
//! versions work together during a rolling update (and what still reaches nobody comes
//! back, as before).
//!
//! Each thread that publishes (a worker, where the sessions run) has a publish queue and a
//! Redis connection of its own, both driven on that thread: a frame for another node leaves
//! its worker for Redis without a hop through the node's main thread, which would cost a
//! wake-up and a context switch per frame. Messages keep their order per sending thread,
//! which is the order that matters: a session's messages all leave from its worker.
//!
//! With links configured ([`link`](super::link)), each publish queue sends a node's
//! bundles over its link to that node instead, and uses pub/sub for the nodes it has no
//! link to; a stopping node ends its links before its subscription.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::redis_backend::conn::{self, Conn, Endpoint, cluster_client};
use crate::redis_backend::link::LinkError;
use crate::redis_backend::link::dialer::{Dialler, Links, Route, SendError, Settled};
use crate::redis_backend::link::listener::LinkListener;
use crate::redis_backend::options::{RedisMode, RedisOptions};
use crate::{BusMessage, BusObserver, ClusterError, Inbox, InboxSender, LinkSink, NodeId, inbox, wire};

/// Most messages published in one round of pipelines.
const BATCH: usize = 256;

/// The payload of a sharded pub/sub message push, taken out of it (no copy); the push is
/// handed back when it is not a message.
fn sharded_payload(mut push: redis::PushInfo) -> Result<Bytes, redis::PushInfo> {
    if push.kind != redis::PushKind::SMessage {
        return Err(push);
    }
    match push.data.get_mut(1) {
        Some(redis::Value::BulkString(payload)) => Ok(Bytes::from(std::mem::take(payload))),
        _ => Err(push),
    }
}

/// Resolves once the node leaves (the watch's guard is not held across awaits).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A node's inbox for one message per payload: what nodes of earlier versions publish
/// and read.
fn inbox_channel(node: &NodeId) -> String {
    format!("noc:inbox:{{{node}}}")
}

/// A node's inbox for [`wire::Bundle`]s: many messages per payload. Same hash tag, so on
/// Redis Cluster both inboxes of a node live on one shard.
fn bundle_channel(node: &NodeId) -> String {
    format!("noc:inbox:{{{node}}}:bundles")
}

/// The bundle inbox channel of each node a publish queue sent to, built once: at low
/// rates a round carries one or two messages, and building the name was an allocation
/// per round.
#[derive(Default)]
struct BundleChannels(Vec<(NodeId, Arc<str>)>);

impl BundleChannels {
    /// Nodes come and go (a restarted pod has a new name): past this many names the list
    /// starts over rather than grow for the life of the process.
    const MAX: usize = 64;

    fn get(&mut self, node: &NodeId) -> Arc<str> {
        if let Some((_, channel)) = self.0.iter().find(|(n, _)| n == node) {
            return channel.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let channel: Arc<str> = bundle_channel(node).into();
        self.0.push((node.clone(), channel.clone()));
        channel
    }
}

/// Most bytes of one bundle: a larger batch for one node leaves as several. Keeps a
/// bundle far below Redis's limits on a subscriber's output buffer.
const BUNDLE_BYTES: usize = 256 * 1024;

/// The messages of one batch for one node: its bundles, published in one pipeline.
struct Group {
    node: NodeId,
    /// The node's bundle inbox.
    channel: Arc<str>,
    bundles: Vec<wire::Bundle>,
    /// The messages of all its bundles, in order.
    msgs: Vec<BusMessage>,
    /// When its first (oldest) message was queued.
    oldest: tokio::time::Instant,
}

impl Group {
    fn new(node: NodeId, channel: Arc<str>, oldest: tokio::time::Instant) -> Self {
        Self { node, channel, bundles: vec![wire::Bundle::new()], msgs: Vec::new(), oldest }
    }

    /// Adds `msg` to the last bundle, or to a new one if that one is full.
    fn push(&mut self, msg: BusMessage) -> Result<(), wire::WireError> {
        if self.bundles.last().is_some_and(|b| b.bytes() >= BUNDLE_BYTES) {
            self.bundles.push(wire::Bundle::new());
        }
        if let Some(bundle) = self.bundles.last_mut() {
            bundle.push(&msg)?;
        }
        self.msgs.push(msg);
        Ok(())
    }
}

/// A message waiting to be published: its target, and when it was queued.
pub(super) type Queued = (NodeId, BusMessage, tokio::time::Instant);

/// Tells the buses of one process apart in the threads' queue lists (tests run several
/// nodes in one process).
static NEXT_BUS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's publish queue for each bus it published on.
    static QUEUES: RefCell<Vec<(u64, mpsc::Sender<Queued>)>> = const { RefCell::new(Vec::new()) };
}

/// Why a publish queue refused a message (what it carried is dropped with the error).
enum Refused {
    Full,
    Closed,
}

impl From<mpsc::error::TrySendError<Queued>> for Refused {
    fn from(e: mpsc::error::TrySendError<Queued>) -> Self {
        match e {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Closed,
        }
    }
}

/// What every publish queue of one bus shares.
struct Publishing {
    /// `PUBLISH`, or `SPUBLISH` on Redis Cluster.
    command: &'static str,
    /// Messages queued or being published, not yet answered by Redis.
    pending: AtomicUsize,
    /// Where a message that reached no node comes back.
    inbox_tx: InboxSender,
    /// Told how long each published batch waited (the node's metrics).
    observer: OnceLock<Arc<dyn BusObserver>>,
}

/// This node's inbox (subscribed) and its publish queues.
pub(super) struct Bus {
    node: NodeId,
    /// This bus among the process's buses.
    id: u64,
    opts: RedisOptions,
    endpoint: Endpoint,
    conn: Conn,
    subscribed: AtomicBool,
    publishing: Arc<Publishing>,
    inbox_rx: Mutex<Option<Inbox>>,
    /// The queue of the thread that connected the node (its main thread, which also runs
    /// the membership and the subscription), published over the shared connection.
    /// Threads without a runtime of their own publish through it too, and a worker's queue
    /// hands it what it still holds if the worker stops first.
    publish_tx: mpsc::Sender<Queued>,
    home: ThreadId,
    /// Set when the node leaves: the subscription ends.
    stop: watch::Sender<bool>,
    /// Set by the subscriber once it unsubscribed and delivered what came before.
    stopped: watch::Sender<bool>,
    /// Where other nodes' links arrive, once listening (with links configured).
    link_listener: OnceLock<LinkListener>,
    /// Who takes what the links carry directly, once the router said so; until then it
    /// goes into the inbox.
    link_sink: Arc<OnceLock<Arc<dyn LinkSink>>>,
}

impl Bus {
    /// The bus, and the publish queue for [`Bus::publish_loop`].
    pub fn new(node: NodeId, opts: &RedisOptions, endpoint: Endpoint, conn: Conn) -> (Self, mpsc::Receiver<Queued>) {
        let (inbox_tx, inbox_rx) = inbox(opts.inbox_capacity);
        let (publish_tx, publish_rx) = mpsc::channel(opts.publish_queue.max(1));
        let command = match opts.mode {
            RedisMode::Standalone | RedisMode::Sentinel => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        };
        let bus = Self {
            node,
            id: NEXT_BUS.fetch_add(1, Ordering::Relaxed),
            opts: opts.clone(),
            endpoint,
            conn,
            subscribed: AtomicBool::new(false),
            publishing: Arc::new(Publishing {
                command,
                pending: AtomicUsize::new(0),
                inbox_tx,
                observer: OnceLock::new(),
            }),
            inbox_rx: Mutex::new(Some(inbox_rx)),
            publish_tx,
            home: std::thread::current().id(),
            stop: watch::Sender::new(false),
            stopped: watch::Sender::new(false),
            link_listener: OnceLock::new(),
            link_sink: Arc::new(OnceLock::new()),
        };
        (bus, publish_rx)
    }

    /// A sender into this node's own inbox (the registry's ownership check closes a
    /// taken-over session through it).
    pub fn inbox_sender(&self) -> InboxSender {
        self.publishing.inbox_tx.clone()
    }

    /// Reports each published batch's wait to `observer` (the first one set stays).
    pub fn observe(&self, observer: Arc<dyn BusObserver>) {
        let _ = self.publishing.observer.set(observer);
    }

    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Queues `msg` for `node`'s inbox on this thread's publish queue (never blocks).
    pub fn publish(&self, node: &NodeId, msg: BusMessage) -> Result<(), ClusterError> {
        let pending = &self.publishing.pending;
        pending.fetch_add(1, Ordering::Relaxed);
        self.queue((node.clone(), msg, tokio::time::Instant::now())).map_err(|refused| {
            pending.fetch_sub(1, Ordering::Relaxed);
            match refused {
                Refused::Full => ClusterError::InboxFull(node.clone()),
                Refused::Closed => ClusterError::Unavailable("publisher stopped".into()),
            }
        })
    }

    /// Queues on this thread's queue.
    fn queue(&self, queued: Queued) -> Result<(), Refused> {
        let mut queued = Some(queued);
        let on_thread = QUEUES.try_with(|queues| {
            let mut queues = queues.borrow_mut();
            let tx = self.thread_queue(&mut queues);
            queued.take().map(|m| tx.try_send(m).map_err(Refused::from))
        });
        match (on_thread, queued) {
            (Ok(Some(sent)), _) => sent,
            // This thread is exiting and its queues are gone: the node's own queue takes it.
            (_, Some(m)) => self.publish_tx.try_send(m).map_err(Refused::from),
            (_, None) => Ok(()), // not reached: the message is taken only to be sent
        }
    }

    /// This thread's queue for this bus, started on first use (and again if the runtime
    /// it ran on stopped).
    fn thread_queue<'q>(&self, queues: &'q mut Vec<(u64, mpsc::Sender<Queued>)>) -> &'q mpsc::Sender<Queued> {
        let i = match queues.iter().position(|(bus, tx)| *bus == self.id && !tx.is_closed()) {
            Some(i) => i,
            None => {
                queues.retain(|(_, tx)| !tx.is_closed());
                queues.push((self.id, self.start_queue()));
                queues.len() - 1
            }
        };
        &queues[i].1
    }

    /// A publish queue for the calling thread: on a thread with a runtime (a worker), a
    /// queue and a connection of its own, driven there; elsewhere the node's own queue.
    fn start_queue(&self) -> mpsc::Sender<Queued> {
        if std::thread::current().id() == self.home {
            return self.publish_tx.clone();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.publish_tx.clone();
        };
        let (tx, rx) = mpsc::channel(self.opts.publish_queue.max(1));
        let queue = Queue {
            rx,
            overflow: Some(self.publish_tx.clone()),
            publishing: self.publishing.clone(),
            in_flight: 0,
            channels: BundleChannels::default(),
            links: self.links(),
        };
        let (opts, shared) = (self.opts.clone(), self.conn.clone());
        runtime.spawn(async move {
            // Connected here, so that the connection's driver runs on this thread too.
            let conn = match conn::connect(&opts).await {
                Ok((_, conn)) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "a worker's own Redis connection failed; it publishes over the node's");
                    shared
                }
            };
            queue.run(conn).await;
        });
        tx
    }

    /// Waits until nothing received is unhandled and nothing published is still queued or
    /// in flight, or `limit` passed. Both at once: handling a message may publish one (a
    /// bounce), and a publish may come back (`Returned`); each counts in one before it
    /// leaves the other.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while (self.publishing.pending.load(Ordering::Relaxed) > 0 || self.publishing.inbox_tx.unhandled() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts accepting links from other nodes, when links are configured; returns the
    /// address they are to dial.
    pub async fn listen_links(&self) -> Result<Option<String>, ClusterError> {
        let Some(opts) = &self.opts.links else { return Ok(None) };
        let (listener, advertise) =
            LinkListener::bind(opts, self.node.clone(), self.publishing.inbox_tx.clone(), self.link_sink.clone())
                .await?;
        let _ = self.link_listener.set(listener);
        Ok(Some(advertise))
    }

    /// Hands what the links carry to `sink` (the first one set stays).
    pub fn deliver_links_to(&self, sink: Arc<dyn LinkSink>) {
        let _ = self.link_sink.set(sink);
    }

    /// Links from other nodes open now.
    pub fn open_links(&self) -> usize {
        self.link_listener.get().map_or(0, LinkListener::open)
    }

    /// A publish queue's links, when links are configured.
    fn links(&self) -> Option<Links> {
        let opts = self.opts.links.clone()?;
        Some(Links::new(Arc::new(opts), self.node.clone()))
    }

    /// Ends the links and then the subscription: other nodes stop sending over links and
    /// turn to pub/sub, then Redis stops delivering to this node (later publishes to it
    /// count no receiver and come back to their senders), and what either delivered before
    /// is in the inbox when this returns.
    pub async fn stop_listening(&self) {
        if let Some(listener) = self.link_listener.get() {
            listener.stop().await;
        }
        self.stop.send_replace(true);
        let mut stopped = self.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    pub fn take_inbox(&self) -> Option<Inbox> {
        self.inbox_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    async fn deliver(&self, payload: Bytes) -> bool {
        self.publishing.inbox_tx.deliver(payload).await
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
        let channels = [inbox_channel(&self.node), bundle_channel(&self.node)];
        let mut stop = self.stop.subscribe();
        let mut backoff = Duration::from_millis(100);
        while !self.stopping() {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let connected = async {
                let client = cluster_client(&seeds, &self.opts, Some(tx)).ok()?;
                let mut conn = client.get_async_connection().await.ok()?;
                conn.ssubscribe(&channels).await.ok()?;
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
            tracing::info!(channel = channels[0], "subscribed to the node inbox (sharded)");
            loop {
                let push = tokio::select! {
                    push = rx.recv() => push,
                    _ = stop_requested(&mut stop) => {
                        // The answer comes after every message the shard sent before it,
                        // and those are in `rx` by then.
                        if let Err(e) = conn.sunsubscribe(&channels).await {
                            tracing::warn!(error = %e, "unsubscribing the node inbox failed");
                        }
                        while let Some(Some(push)) = rx.recv().now_or_never() {
                            if let Ok(payload) = sharded_payload(push) {
                                self.deliver(payload).await;
                            }
                        }
                        return;
                    }
                };
                let Some(push) = push else { break };
                let push = match sharded_payload(push) {
                    Ok(payload) => {
                        if !self.deliver(payload).await {
                            return;
                        }
                        continue;
                    }
                    Err(other) => other,
                };
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
        let channels = [inbox_channel(&self.node), bundle_channel(&self.node)];
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
                    match sink.subscribe(&channels).await {
                        Ok(()) => {
                            self.subscribed.store(true, Ordering::Relaxed);
                            backoff = Duration::from_millis(100);
                            tracing::info!(channel = channels[0], "subscribed to the node inbox");
                            loop {
                                let msg = tokio::select! {
                                    msg = messages.next() => msg,
                                    _ = stop_requested(&mut stop) => {
                                        // Redis answers UNSUBSCRIBE after every message it
                                        // sent before, and the connection hands those to
                                        // the stream first.
                                        if let Err(e) = sink.unsubscribe(&channels).await {
                                            tracing::warn!(error = %e, "unsubscribing the node inbox failed");
                                        }
                                        while let Some(Some(msg)) = messages.next().now_or_never() {
                                            self.deliver(Bytes::copy_from_slice(msg.get_payload_bytes())).await;
                                        }
                                        return;
                                    }
                                };
                                let Some(msg) = msg else { break };
                                // redis-rs lends a message's payload only by reference: one copy.
                                if !self.deliver(Bytes::copy_from_slice(msg.get_payload_bytes())).await {
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

    /// Publishes the node's own queue (see [`Queue::run`]) over the shared connection.
    pub async fn publish_loop(&self, rx: mpsc::Receiver<Queued>) {
        let queue = Queue {
            rx,
            overflow: None,
            publishing: self.publishing.clone(),
            in_flight: 0,
            channels: BundleChannels::default(),
            links: self.links(),
        };
        queue.run(self.conn.clone()).await;
    }
}

impl Publishing {
    /// Hands a message that reached no node back to this node's router, which bounces what
    /// it carried to its sender as undeliverable. That notice is what lets the sender queue
    /// instead of waiting for a timeout, so a full inbox makes it wait for room rather
    /// than drop it (returned messages are rare: one per publish to a vanished node).
    fn returned(self: &Arc<Self>, msg: BusMessage) {
        match self.inbox_tx.try_send(BusMessage::Returned(Box::new(msg))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(returned)) => {
                // Counted as pending until it is in the inbox, so that a flush waits for it.
                self.pending.fetch_add(1, Ordering::Relaxed);
                let this = self.clone();
                tokio::spawn(async move {
                    let sent = this.inbox_tx.send(returned).await;
                    this.pending.fetch_sub(1, Ordering::Relaxed);
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
}

/// A publish queue and the task that empties it. If its runtime drops the task (a worker
/// that stops), what it still holds goes to the node's own queue, so that a stopping
/// worker's last bounces and acknowledgements still leave the node.
struct Queue {
    rx: mpsc::Receiver<Queued>,
    /// The node's own queue (none for that queue itself).
    overflow: Option<mpsc::Sender<Queued>>,
    publishing: Arc<Publishing>,
    /// Messages taken from the queue and not yet answered by Redis.
    in_flight: usize,
    channels: BundleChannels,
    /// Its links to other nodes, when the node has links configured.
    links: Option<Links>,
}

impl Queue {
    /// Publishes queued messages in pipelined batches, in order. A message no node received
    /// (its owner is gone) comes back as `Returned`.
    async fn run(mut self, conn: Conn) {
        let publishing = self.publishing.clone();
        let mut batch: Vec<Queued> = Vec::with_capacity(BATCH);
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // One pipeline of bundles per target inbox: its messages stay in order, and on
            // Redis Cluster they all hash to the inbox's shard. The first message of a
            // group is its oldest.
            let taken = batch.len();
            self.in_flight = taken;
            let mut groups: Vec<Group> = Vec::new();
            for (node, msg, queued) in batch.drain(..) {
                let i = match groups.iter().position(|g| g.node == node) {
                    Some(i) => i,
                    None => {
                        let channel = self.channels.get(&node);
                        groups.push(Group::new(node, channel, queued));
                        groups.len() - 1
                    }
                };
                if let Err(e) = groups[i].push(msg) {
                    tracing::warn!(error = %e, "unencodable bus message dropped");
                }
            }
            let sends = groups.into_iter().map(|group| {
                let (route, dialler) = match self.links.as_mut() {
                    Some(links) => (links.route(&group.node), Some(links.dialler())),
                    None => (Route::PubSub, None),
                };
                send_group(group, route, dialler, conn.clone(), publishing.command)
            });
            for sent in futures_util::future::join_all(sends).await {
                if let Some(links) = self.links.as_mut() {
                    links.settle(sent.node, sent.settled);
                }
                match sent.result {
                    Ok(unread) => {
                        if let Some(observer) = publishing.observer.get() {
                            observer.published(sent.waited);
                        }
                        for msg in unread {
                            publishing.returned(msg);
                        }
                    }
                    Err((e, msgs)) => {
                        tracing::warn!(error = %e, messages = msgs.len(), "publish failed; returning messages");
                        for msg in msgs {
                            publishing.returned(msg);
                        }
                    }
                }
            }
            publishing.pending.fetch_sub(std::mem::take(&mut self.in_flight), Ordering::Relaxed);
        }
    }
}

/// How one group of a round went.
struct Sent {
    node: NodeId,
    /// The messages that reached nobody; or, on a failure, all of them with its reason.
    result: Result<Vec<BusMessage>, (String, Vec<BusMessage>)>,
    /// From the group's oldest message being queued to its send being done.
    waited: Duration,
    settled: Settled,
}

/// Sends one group: over its node's link when there is one (dialled first when due), and
/// otherwise, or when the link turns out closed, over pub/sub.
async fn send_group(
    group: Group,
    route: Route,
    dialler: Option<Dialler>,
    mut conn: Conn,
    command: &'static str,
) -> Sent {
    let Group { node, channel, bundles, msgs, oldest } = group;
    let counts: Vec<usize> = bundles.iter().map(wire::Bundle::count).collect();
    let payloads: Vec<Bytes> = bundles.into_iter().map(wire::Bundle::finish).collect();
    let (link, mut settled) = match (route, dialler) {
        (Route::Link(link), _) => (Some(link), Settled::Untouched),
        (Route::Dial(backoff), Some(dialler)) => match dialler.dial(&mut conn, &node).await {
            Ok(link) => (Some(link), Settled::Untouched),
            Err(e) => {
                // A node without an address runs without links (or an earlier version,
                // during a rolling update): expected. Anything else is worth a look.
                if matches!(e, LinkError::NoAddress) {
                    tracing::debug!(%node, "the node takes no links: its messages go over Redis");
                } else {
                    tracing::warn!(%node, error = %e, "no link to the node: its messages go over Redis meanwhile");
                }
                (None, Settled::Failed(backoff))
            }
        },
        _ => (None, Settled::Untouched),
    };
    if let Some(mut link) = link {
        let sent = link.send(&payloads).await;
        match sent {
            Ok(()) => {
                return Sent { node, result: Ok(Vec::new()), waited: oldest.elapsed(), settled: Settled::Up(link) };
            }
            // Nothing was written: pub/sub takes them (and returns them if the node left).
            Err(SendError::Closed) => settled = Settled::Failed(Duration::ZERO),
            Err(SendError::TooLarge) => settled = Settled::Up(link),
            // Some may have arrived: at most once, they are not sent again but returned.
            Err(SendError::Broken(e)) => {
                let result = Err((format!("link to {node} broke: {e}"), msgs));
                return Sent { node, result, waited: oldest.elapsed(), settled: Settled::Failed(Duration::ZERO) };
            }
        }
    }
    let mut pipe = redis::pipe();
    for payload in &payloads {
        pipe.cmd(command).arg(channel.as_bytes()).arg(payload.as_ref());
    }
    let result = pipe.query_async::<Vec<i64>>(&mut conn).await;
    let waited = oldest.elapsed();
    // A bundle nobody received went to a node that is gone, or to one of an earlier
    // version, which reads only its one-message inbox: those messages go there, one by
    // one (and come back if nobody reads them there either).
    let unread = match result {
        Ok(receivers) => {
            let mut unread = Vec::new();
            let mut msgs = msgs.into_iter();
            for (count, n) in counts.into_iter().zip(receivers) {
                let bundled = msgs.by_ref().take(count);
                if n == 0 {
                    unread.extend(bundled);
                } else {
                    bundled.for_each(drop);
                }
            }
            Ok(unread)
        }
        Err(e) => Err((e.to_string(), msgs)),
    };
    let result = match unread {
        Ok(unread) if !unread.is_empty() => publish_each(&mut conn, command, &inbox_channel(&node), unread)
            .await
            .map_err(|(e, msgs)| (e.to_string(), msgs)),
        other => other,
    };
    Sent { node, result, waited, settled }
}

/// Publishes each of `msgs` as a payload of its own on `channel`, in one pipeline;
/// returns those that reached no subscriber (or, on an error, all of them with it).
async fn publish_each(
    conn: &mut Conn,
    command: &str,
    channel: &str,
    msgs: Vec<BusMessage>,
) -> Result<Vec<BusMessage>, (redis::RedisError, Vec<BusMessage>)> {
    let mut pipe = redis::pipe();
    let mut sent = Vec::with_capacity(msgs.len());
    for msg in msgs {
        match wire::encode(&msg) {
            Ok(bytes) => {
                pipe.cmd(command).arg(channel).arg(bytes.as_ref());
                sent.push(msg);
            }
            Err(e) => tracing::warn!(error = %e, "unencodable bus message dropped"),
        }
    }
    match pipe.query_async::<Vec<i64>>(conn).await {
        Ok(receivers) => Ok(sent.into_iter().zip(receivers).filter(|(_, n)| *n == 0).map(|(m, _)| m).collect()),
        Err(e) => Err((e, sent)),
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let pending = &self.publishing.pending;
        // A batch in flight may or may not have reached Redis: at most once, it is not
        // sent again.
        pending.fetch_sub(std::mem::take(&mut self.in_flight), Ordering::Relaxed);
        self.rx.close();
        while let Ok(m) = self.rx.try_recv() {
            let handed_on = self.overflow.as_ref().is_some_and(|home| home.try_send(m).is_ok());
            if !handed_on {
                pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_bundle_channel_is_built_once_and_the_list_stays_bounded() {
        let mut channels = BundleChannels::default();
        let a = NodeId::new("node-a");
        let first = channels.get(&a);
        assert_eq!(&*first, "noc:inbox:{node-a}:bundles");
        assert!(Arc::ptr_eq(&first, &channels.get(&a)), "the second round reuses the name");
        for i in 0..BundleChannels::MAX * 3 {
            let node = NodeId::new(format!("node-{i}"));
            assert_eq!(*channels.get(&node), *bundle_channel(&node));
            assert!(channels.0.len() <= BundleChannels::MAX);
        }
        assert_eq!(*channels.get(&a), *first, "a node's name is built again after a restart of the list");
    }
}
