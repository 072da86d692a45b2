//! The distributed backend: Redis for membership, session ownership and the bus.
//!
//! Layout (every key and channel starts with `noc:`):
//!
//! * `noc:nodes` — sorted set of node ids scored by lease expiry (unix ms). Each node
//!   re-scores itself every `membership_interval`; a node whose lease has passed is dead,
//!   and no frame is routed to it any more.
//! * `noc:own:d:<device-id>` / `noc:own:v:<ves-id>` — the node owning a session, written
//!   by the node that authenticated it (`SET … GET` reports the previous owner, which is
//!   then told to close its copy) and kept alive by that node, which reads each of its
//!   keys back every 30 s (or `session_key_ttl / 3` if shorter): its own are extended,
//!   lost ones (Redis restarted) set again, and a key another node has taken over closes
//!   the local session — in case the takeover's `Close` message was lost. A session is
//!   valid only while its owner's lease is.
//! * `noc:inbox:{<node-id>}` — the node's pub/sub channel. The braces are a hash tag: with
//!   Redis Cluster's sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) a node's whole inbox lives
//!   on one shard, so messages to one node keep their order.
//!
//! Pub/sub is at most once. The relay never relies on it for correctness: end-to-end
//! acknowledgements do. What it does guarantee is that a message to a node nobody listens
//! for comes back (`PUBLISH` counts receivers) so the sender gets an undeliverable notice.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use crate::{BusMessage, Cluster, ClusterError, NodeId, Owner, SessionKey, ShardedMap, wire};

/// How Redis is deployed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One server (or a primary with replicas behind one address): `PUBLISH`/`SUBSCRIBE`.
    #[default]
    Standalone,
    /// Redis Cluster: keys spread over shards, the bus on sharded pub/sub
    /// (`SPUBLISH`/`SSUBSCRIBE`, RESP3).
    Cluster,
}

/// Settings of the Redis backend.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://host:port/db` (credentials allowed in the URL); in cluster mode a
    /// comma-separated list of seed nodes.
    pub url: String,
    pub mode: RedisMode,
    /// A node not seen for this long is dead.
    pub node_lease: Duration,
    /// How often a node renews its lease and refreshes its view of live nodes.
    pub membership_interval: Duration,
    /// Expiry of session ownership keys (renewed by their owner at a third of it).
    pub session_key_ttl: Duration,
    /// How long a looked-up remote owner is trusted before it is looked up again.
    pub owner_cache_ttl: Duration,
    /// Messages received and not yet handled by the router.
    pub inbox_capacity: usize,
    /// Messages waiting to be published.
    pub publish_queue: usize,
    /// Timeout of one Redis command.
    pub command_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            mode: RedisMode::Standalone,
            node_lease: Duration::from_secs(10),
            membership_interval: Duration::from_secs(1),
            session_key_ttl: Duration::from_secs(3600),
            owner_cache_ttl: Duration::from_secs(30),
            inbox_capacity: 65_536,
            publish_queue: 65_536,
            command_timeout: Duration::from_secs(2),
        }
    }
}

const NODES: &str = "noc:nodes";
const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn own_key(key: &SessionKey) -> String {
    match key {
        SessionKey::Device(id) => format!("noc:own:d:{id}"),
        SessionKey::Ves(id) => format!("noc:own:v:{id}"),
    }
}

fn inbox_channel(node: &NodeId) -> String {
    format!("noc:inbox:{{{node}}}")
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// A command connection to either deployment; both reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How to reach the server(s) for new connections (the subscription).
enum Endpoint {
    Single(redis::Client),
    Cluster(Vec<String>),
}

struct Inner {
    node: NodeId,
    opts: RedisOptions,
    endpoint: Endpoint,
    conn: Conn,
    live: RwLock<HashSet<NodeId>>,
    cache: ShardedMap<SessionKey, (NodeId, Instant)>,
    /// Sessions this node claimed: renewed, and re-registered after Redis lost its data.
    /// Session keys this node claimed, with when (see [`renew_loop`]).
    owned: ShardedMap<SessionKey, Instant>,
    commands_ok: AtomicBool,
    subscribed: AtomicBool,
    inbox_tx: mpsc::Sender<BusMessage>,
    inbox_rx: Mutex<Option<mpsc::Receiver<BusMessage>>>,
    publish_tx: mpsc::Sender<(NodeId, BusMessage)>,
    release_tx: mpsc::UnboundedSender<SessionKey>,
}

/// A node's handle on the Redis backend. Spawns its background tasks on the current
/// tokio runtime, which must outlive it (the node's runtime).
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

impl RedisCluster {
    /// Connects, registers this node and starts the membership, bus and renewal tasks.
    pub async fn connect(node: NodeId, opts: RedisOptions) -> Result<Self, ClusterError> {
        let timeout = opts.command_timeout * 2;
        let (endpoint, conn) = match opts.mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(opts.url.as_str()).map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(opts.command_timeout))
                    .set_response_timeout(Some(opts.command_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client.clone(), config))
                    .await
                    .map_err(|_| ClusterError::Unavailable("timed out connecting to Redis".into()))?
                    .map_err(unavailable)?;
                (Endpoint::Single(client), Conn::Single(conn))
            }
            RedisMode::Cluster => {
                let seeds: Vec<String> =
                    opts.url.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
                let client = cluster_client(&seeds, &opts, None)?;
                let conn = tokio::time::timeout(timeout, client.get_async_connection())
                    .await
                    .map_err(|_| ClusterError::Unavailable("timed out connecting to Redis Cluster".into()))?
                    .map_err(unavailable)?;
                (Endpoint::Cluster(seeds), Conn::Cluster(conn))
            }
        };
        let (inbox_tx, inbox_rx) = mpsc::channel(opts.inbox_capacity.max(1));
        let (publish_tx, publish_rx) = mpsc::channel(opts.publish_queue.max(1));
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            node,
            opts,
            endpoint,
            conn,
            live: RwLock::new(HashSet::new()),
            cache: ShardedMap::new(),
            owned: ShardedMap::new(),
            commands_ok: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            inbox_tx,
            inbox_rx: Mutex::new(Some(inbox_rx)),
            publish_tx,
            release_tx,
        });
        inner.membership_tick().await?;
        tokio::spawn(membership_loop(inner.clone()));
        tokio::spawn(subscribe_loop(inner.clone()));
        tokio::spawn(publish_loop(inner.clone(), publish_rx));
        tokio::spawn(release_loop(inner.clone(), release_rx));
        tokio::spawn(renew_loop(inner.clone()));
        Ok(Self { inner })
    }

    /// Live nodes as this node last saw them.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.inner.live.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        v.sort();
        v
    }
}

fn cluster_client(
    seeds: &[String],
    opts: &RedisOptions,
    push: Option<mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<redis::cluster::ClusterClient, ClusterError> {
    let mut b = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(opts.command_timeout)
        .response_timeout(opts.command_timeout);
    if let Some(tx) = push {
        b = b.push_sender(tx);
    }
    b.build().map_err(unavailable)
}

/// Runs independent commands: one pipeline on a single server; in cluster mode one
/// request each (their keys live on different shards), a bounded number at once.
async fn run_each<T: redis::FromRedisValue>(conn: &Conn, cmds: Vec<redis::Cmd>) -> redis::RedisResult<Vec<T>> {
    match conn {
        Conn::Single(_) => {
            let mut pipe = redis::pipe();
            for c in cmds {
                pipe.add_command(c);
            }
            let mut conn = conn.clone();
            pipe.query_async(&mut conn).await
        }
        Conn::Cluster(_) => {
            let mut out = Vec::with_capacity(cmds.len());
            for chunk in cmds.chunks(64) {
                let futs = chunk.iter().map(|c| {
                    let mut conn = conn.clone();
                    async move { c.query_async::<T>(&mut conn).await }
                });
                for r in futures_util::future::join_all(futs).await {
                    out.push(r?);
                }
            }
            Ok(out)
        }
    }
}

impl Inner {
    fn is_live(&self, node: &NodeId) -> bool {
        *node == self.node || self.live.read().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    /// Renews this node's lease and refreshes the live set. Returns whether this node's
    /// entry was missing (Redis restarted or the outage outlived the lease).
    async fn membership_tick(&self) -> Result<bool, ClusterError> {
        let now = noc_protocol::clock::unix_ms_i64();
        let lease = self.opts.node_lease.as_millis() as i64;
        let mut conn = self.conn.clone();
        let (added, live, _): (i64, Vec<String>, i64) = redis::pipe()
            .zadd(NODES, self.node.as_str(), now + lease)
            .zrangebyscore(NODES, now, "+inf")
            .zrembyscore(NODES, "-inf", now - 10 * lease)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live.into_iter().map(NodeId::new).collect();
        self.commands_ok.store(true, Ordering::Relaxed);
        Ok(added == 1)
    }

    /// Writes every owned session key again (after Redis lost them).
    async fn reregister(&self) -> Result<(), ClusterError> {
        let mut keys = Vec::new();
        self.owned.for_each(|k, _| keys.push(own_key(k)));
        let ttl = self.opts.session_key_ttl.as_millis() as u64;
        for chunk in keys.chunks(1000) {
            let cmds = chunk
                .iter()
                .map(|k| {
                    // NX: never overwrite a newer owner that claimed the session meanwhile.
                    let mut c = redis::cmd("SET");
                    c.arg(k).arg(self.node.as_str()).arg("PX").arg(ttl).arg("NX");
                    c
                })
                .collect();
            run_each::<redis::Value>(&self.conn, cmds).await.map_err(unavailable)?;
        }
        if !keys.is_empty() {
            tracing::info!(sessions = keys.len(), "re-registered sessions with Redis");
        }
        Ok(())
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
                tokio::spawn(async move {
                    if tx.send(returned).await.is_err() {
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

async fn membership_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.opts.membership_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ttl = inner.opts.owner_cache_ttl;
        inner.cache.retain(|_, (_, at)| at.elapsed() < ttl);
        match inner.membership_tick().await {
            Ok(true) => {
                tracing::warn!("this node was missing from Redis (restart or long outage): re-registering");
                if let Err(e) = inner.reregister().await {
                    tracing::warn!(error = %e, "re-registration failed; retrying next tick");
                }
            }
            Ok(false) => {}
            Err(e) => {
                if inner.commands_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Redis unreachable: cross-node routing suspended");
                }
            }
        }
    }
}

async fn deliver(inner: &Inner, payload: &[u8]) -> bool {
    match wire::decode(Bytes::copy_from_slice(payload)) {
        Ok(m) => inner.inbox_tx.send(m).await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "undecodable bus message dropped");
            true
        }
    }
}

async fn subscribe_loop(inner: Arc<Inner>) {
    match &inner.endpoint {
        Endpoint::Single(client) => subscribe_single(inner.clone(), client.clone()).await,
        Endpoint::Cluster(seeds) => subscribe_sharded(inner.clone(), seeds.clone()).await,
    }
}

/// Sharded pub/sub on Redis Cluster: the client keeps the subscription across
/// reconnections and reports them as pushes.
async fn subscribe_sharded(inner: Arc<Inner>, seeds: Vec<String>) {
    let channel = inbox_channel(&inner.node);
    let mut backoff = Duration::from_millis(100);
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let connected = async {
            let client = cluster_client(&seeds, &inner.opts, Some(tx)).ok()?;
            let mut conn = client.get_async_connection().await.ok()?;
            conn.ssubscribe(&channel).await.ok()?;
            Some(conn)
        }
        .await;
        let Some(_conn) = connected else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        inner.subscribed.store(true, Ordering::Relaxed);
        backoff = Duration::from_millis(100);
        tracing::info!(channel, "subscribed to the node inbox (sharded)");
        while let Some(push) = rx.recv().await {
            match push.kind {
                redis::PushKind::SMessage => {
                    if let Some(redis::Value::BulkString(payload)) = push.data.get(1)
                        && !deliver(&inner, payload).await
                    {
                        return;
                    }
                }
                redis::PushKind::Disconnection => {
                    inner.subscribed.store(false, Ordering::Relaxed);
                    tracing::warn!("sharded inbox subscription interrupted; the client resubscribes");
                }
                redis::PushKind::SSubscribe => inner.subscribed.store(true, Ordering::Relaxed),
                _ => {}
            }
        }
    }
}

async fn subscribe_single(inner: Arc<Inner>, client: redis::Client) {
    let channel = inbox_channel(&inner.node);
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    inner.subscribed.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    tracing::info!(channel, "subscribed to the node inbox");
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        if !deliver(&inner, msg.get_payload_bytes()).await {
                            return; // the node is gone
                        }
                    }
                    inner.subscribed.store(false, Ordering::Relaxed);
                    tracing::warn!("inbox subscription lost; resubscribing");
                }
                Err(e) => tracing::debug!(error = %e, "subscribe failed"),
            },
            Err(e) => tracing::debug!(error = %e, "pub/sub connection failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Publishes queued messages in pipelined batches, in order. A message no node received
/// (its owner is gone) comes back as `Returned`.
async fn publish_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<(NodeId, BusMessage)>) {
    let mut batch: Vec<(NodeId, BusMessage)> = Vec::with_capacity(256);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // One pipeline per target inbox: its messages stay in order, and on Redis Cluster
        // they all hash to the inbox's shard.
        let publish = match inner.opts.mode {
            RedisMode::Standalone => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        };
        let mut groups: Vec<(NodeId, redis::Pipeline, Vec<BusMessage>)> = Vec::new();
        for (node, msg) in batch.drain(..) {
            let bytes = match wire::encode(&msg) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "unencodable bus message dropped");
                    continue;
                }
            };
            let i = match groups.iter().position(|(n, _, _)| *n == node) {
                Some(i) => i,
                None => {
                    groups.push((node.clone(), redis::pipe(), Vec::new()));
                    groups.len() - 1
                }
            };
            let (n, pipe, msgs) = &mut groups[i];
            pipe.cmd(publish).arg(inbox_channel(n)).arg(bytes.as_ref());
            msgs.push(msg);
        }
        let sends = groups.into_iter().map(|(_, pipe, msgs)| {
            let mut conn = inner.conn.clone();
            async move { (pipe.query_async::<Vec<i64>>(&mut conn).await, msgs) }
        });
        for (result, msgs) in futures_util::future::join_all(sends).await {
            match result {
                Ok(receivers) => {
                    for (msg, n) in msgs.into_iter().zip(receivers) {
                        if n == 0 {
                            inner.returned(msg);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, messages = msgs.len(), "publish failed; returning messages");
                    for msg in msgs {
                        inner.returned(msg);
                    }
                }
            }
        }
    }
}

async fn release_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<SessionKey>) {
    let script = redis::Script::new(RELEASE_SCRIPT);
    while let Some(key) = rx.recv().await {
        if inner.owned.contains_key(&key) {
            continue; // claimed again meanwhile
        }
        let mut conn = inner.conn.clone();
        let r: Result<i64, _> = script.key(own_key(&key)).arg(inner.node.as_str()).invoke_async(&mut conn).await;
        if let Err(e) = r {
            tracing::debug!(error = %e, ?key, "release failed; the key names this node until it expires or is reclaimed");
        }
    }
}

/// Most time between two ownership checks of a session key (see [`renew_loop`]).
const OWNERSHIP_CHECK_MAX: Duration = Duration::from_secs(30);
/// A claim younger than this (or than the check period, if shorter) is not judged by the
/// ownership check: its `SET` may still be on its way to Redis behind the check's `GET`.
const FRESH_CLAIM: Duration = Duration::from_secs(5);

/// Keeps this node's session keys alive and checks that they still name this node.
///
/// A takeover tells the old owner to close its session over pub/sub, which is at most
/// once: if that `Close` is lost (the old owner's subscription was down at that moment),
/// the old session would live on beside the new one. So every key is read back at least
/// every [`OWNERSHIP_CHECK_MAX`]: ours → extended; gone (Redis restarted) → set again with
/// NX; another node's → that node took the session over: the local session is closed as
/// `replaced`, exactly as the lost message would have done.
async fn renew_loop(inner: Arc<Inner>) {
    let period = (inner.opts.session_key_ttl / 3).min(OWNERSHIP_CHECK_MAX);
    let fresh = period.min(FRESH_CLAIM);
    let ttl = inner.opts.session_key_ttl.as_millis() as u64;
    loop {
        tokio::time::sleep(period).await;
        let mut keys = Vec::new();
        inner.owned.for_each(|k, claimed_at| keys.push((*k, *claimed_at)));
        for chunk in keys.chunks(1000) {
            let gets = chunk
                .iter()
                .map(|(k, _)| {
                    let mut c = redis::cmd("GET");
                    c.arg(own_key(k));
                    c
                })
                .collect();
            let owners = match run_each::<Option<String>>(&inner.conn, gets).await {
                Ok(owners) => owners,
                Err(e) => {
                    tracing::debug!(error = %e, "session key check failed");
                    break;
                }
            };
            let mut updates = Vec::new();
            for ((key, claimed_at), owner) in chunk.iter().zip(owners) {
                match owner {
                    Some(node) if node == inner.node.as_str() => {
                        let mut c = redis::cmd("PEXPIRE");
                        c.arg(own_key(key)).arg(ttl);
                        updates.push(c);
                    }
                    None => {
                        // NX: never overwrite a newer owner that claimed the session meanwhile.
                        let mut c = redis::cmd("SET");
                        c.arg(own_key(key)).arg(inner.node.as_str()).arg("PX").arg(ttl).arg("NX");
                        updates.push(c);
                    }
                    Some(other) => {
                        let still_ours = inner.owned.with(key, |v| v.is_some_and(|at| at == claimed_at));
                        if claimed_at.elapsed() < fresh || !still_ours {
                            continue;
                        }
                        inner.owned.remove(key);
                        tracing::info!(?key, owner = %other, "session taken over by another node; closing it here");
                        let close = BusMessage::Close { key: *key, code: noc_protocol::CloseCode::Replaced };
                        if inner.inbox_tx.send(close).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if !updates.is_empty()
                && let Err(e) = run_each::<redis::Value>(&inner.conn, updates).await
            {
                tracing::debug!(error = %e, "session key renewal failed");
            }
        }
    }
}

#[async_trait]
impl Cluster for RedisCluster {
    fn node_id(&self) -> &NodeId {
        &self.inner.node
    }

    async fn claim(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
        let inner = &self.inner;
        inner.owned.insert(key, Instant::now());
        inner.cache.insert(key, (inner.node.clone(), Instant::now()));
        let mut conn = inner.conn.clone();
        let previous: Option<String> = redis::cmd("SET")
            .arg(own_key(&key))
            .arg(inner.node.as_str())
            .arg("PX")
            .arg(inner.opts.session_key_ttl.as_millis() as u64)
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(previous.map(NodeId::new).filter(|p| *p != inner.node))
    }

    fn release(&self, key: SessionKey) {
        let inner = &self.inner;
        inner.owned.remove(&key);
        inner.cache.remove_if(&key, |(n, _)| *n == inner.node);
        let _ = inner.release_tx.send(key);
    }

    fn owner(&self, key: &SessionKey) -> Owner {
        let inner = &self.inner;
        let ttl = inner.opts.owner_cache_ttl;
        match inner.cache.with(key, |e| e.filter(|(_, at)| at.elapsed() < ttl).map(|(n, _)| n.clone())) {
            Some(n) if inner.is_live(&n) => Owner::Node(n),
            _ => Owner::Unknown,
        }
    }

    async fn lookup(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let owner: Option<String> = conn.get(own_key(&key)).await.map_err(unavailable)?;
        let owner = match owner.map(NodeId::new) {
            Some(n) if inner.is_live(&n) => Some(n),
            // Not in our view of live nodes: it may have joined since our last refresh.
            Some(n) => {
                let lease: Option<f64> = conn.zscore(NODES, n.as_str()).await.map_err(unavailable)?;
                let live = lease.is_some_and(|expiry| expiry as i64 > noc_protocol::clock::unix_ms_i64());
                if live {
                    inner.live.write().unwrap_or_else(|p| p.into_inner()).insert(n.clone());
                }
                live.then_some(n)
            }
            None => None,
        };
        match owner {
            Some(n) => {
                inner.cache.insert(key, (n.clone(), Instant::now()));
                Ok(Some(n))
            }
            None => {
                inner.cache.remove(&key);
                Ok(None)
            }
        }
    }

    fn forget(&self, key: &SessionKey) {
        self.inner.cache.remove(key);
    }

    fn publish(&self, node: &NodeId, msg: BusMessage) -> Result<(), ClusterError> {
        // No liveness check here: routing decisions made it already (`owner`), and a
        // message to a node that is really gone comes back as `Returned`.
        self.inner.publish_tx.try_send((node.clone(), msg)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClusterError::InboxFull(node.clone()),
            mpsc::error::TrySendError::Closed(_) => ClusterError::Unavailable("publisher stopped".into()),
        })
    }

    fn take_inbox(&self) -> Option<mpsc::Receiver<BusMessage>> {
        self.inner.inbox_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn healthy(&self) -> bool {
        self.inner.commands_ok.load(Ordering::Relaxed) && self.inner.subscribed.load(Ordering::Relaxed)
    }

    async fn leave(&self) {
        let inner = &self.inner;
        let mut keys = Vec::new();
        inner.owned.for_each(|k, _| keys.push(*k));
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut conn = inner.conn.clone();
        for k in keys {
            inner.owned.remove(&k);
            let _: Result<i64, _> = script.key(own_key(&k)).arg(inner.node.as_str()).invoke_async(&mut conn).await;
        }
        let _: Result<i64, _> = conn.zrem(NODES, inner.node.as_str()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceItem;
    use noc_protocol::DeviceId;

    fn opts() -> RedisOptions {
        RedisOptions {
            url: std::env::var("NOC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
            node_lease: Duration::from_secs(2),
            membership_interval: Duration::from_millis(100),
            ..RedisOptions::default()
        }
    }

    fn node(name: &str) -> NodeId {
        NodeId::new(format!("{name}-{}", noc_protocol::secrets::random_hex::<4>()))
    }

    /// A takeover whose `Close` message never arrived is still noticed: the old owner reads
    /// its key back, finds another node in it, and closes its own session (`replaced`).
    #[tokio::test]
    async fn a_takeover_whose_close_was_lost_is_found_by_the_ownership_check() {
        let a = RedisCluster::connect(node("a"), RedisOptions { session_key_ttl: Duration::from_secs(3), ..opts() })
            .await
            .expect("Redis must run for this test");
        let mut inbox = a.take_inbox().expect("inbox");
        let ours = SessionKey::Device(DeviceId::random());
        let taken = SessionKey::Device(DeviceId::random());
        assert_eq!(a.claim(ours).await.expect("claim"), None);
        assert_eq!(a.claim(taken).await.expect("claim"), None);
        // Another node takes `taken` over, and its Close to `a` is lost.
        let client = redis::Client::open(opts().url).expect("url");
        let mut raw = client.get_multiplexed_async_connection().await.expect("connect");
        let _: () = raw.set_ex(own_key(&taken), "some-other-node", 30).await.expect("set");

        let msg = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match inbox.recv().await {
                    Some(BusMessage::Close { key, code }) => break (key, code),
                    Some(_) => continue,
                    None => panic!("inbox closed"),
                }
            }
        })
        .await
        .expect("the ownership check closes the taken-over session");
        assert_eq!(msg, (taken, noc_protocol::CloseCode::Replaced));
        // Its own key is kept (extended), the other node's is left alone.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(a.lookup(ours).await.expect("lookup"), Some(a.node_id().clone()));
        let owner: Option<String> = raw.get(own_key(&taken)).await.expect("get");
        assert_eq!(owner.as_deref(), Some("some-other-node"));
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), inbox.recv()).await.is_err(),
            "closed once, not at every check"
        );
        a.leave().await;
    }

    #[tokio::test]
    async fn ownership_lookup_takeover_and_delivery() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let b = RedisCluster::connect(node("b"), opts()).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(a.live_nodes().contains(b.node_id()), "{:?}", a.live_nodes());
        let key = SessionKey::Device(DeviceId::random());
        assert_eq!(b.claim(key).await.expect("claim"), None);
        assert_eq!(a.owner(&key), Owner::Unknown, "not known before a lookup");
        assert_eq!(a.lookup(key).await.expect("lookup"), Some(b.node_id().clone()));
        assert_eq!(a.owner(&key), Owner::Node(b.node_id().clone()), "remembered");
        // Takeover reports the previous owner.
        assert_eq!(a.claim(key).await.expect("claim"), Some(b.node_id().clone()));
        b.release(key); // b's stale release leaves a's ownership
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(b.lookup(key).await.expect("lookup"), Some(a.node_id().clone()));

        // Delivery through the bus.
        let mut inbox = b.take_inbox().expect("inbox");
        let msg = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: 9 } };
        for _ in 0..50 {
            if b.healthy() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.publish(b.node_id(), msg.clone()).expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(2), inbox.recv()).await.expect("delivered");
        assert_eq!(got, Some(msg));
        a.leave().await;
        b.leave().await;
    }

    #[tokio::test]
    async fn a_message_to_a_node_nobody_listens_for_comes_back() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let mut inbox = a.take_inbox().expect("inbox");
        let ghost = node("ghost");
        let msg = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: 1 } };
        a.publish(&ghost, msg.clone()).expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(2), inbox.recv()).await.expect("returned");
        assert_eq!(got, Some(BusMessage::Returned(Box::new(msg))));
        a.leave().await;
    }
}
