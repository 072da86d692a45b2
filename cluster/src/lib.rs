//! Where sessions live and how a frame reaches a session owned by another node.
//!
//! The relay routes by identity (VES id, device id). On one node every route is local; in
//! a cluster the owner of a session can be any node, and frames for it travel over a bus.
//! This crate is that seam: the [`Cluster`] trait (session ownership + per-node inbox),
//! the messages that cross it ([`BusMessage`]) and an in-process implementation
//! ([`MemoryHub`]) that is the single-node default and lets tests run several nodes in
//! one process. The Redis implementation (registry keys with leases, pub/sub per node)
//! plugs in behind the same trait.
//!
//! Delivery over the bus is at most once, like Redis pub/sub: correctness rests on the
//! endpoints' end-to-end acknowledgements, never on the bus.

mod inbox;
mod memory;
mod messages;
mod redis_backend;
mod sharded;
pub mod wire;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use noc_protocol::{DeviceId, VesId};
use thiserror::Error;

pub use inbox::{Inbox, InboxSender, inbox};
pub use memory::{MemoryCluster, MemoryHub};
pub use messages::{BusMessage, DeviceItem, FetchCall, FetchOutcome, FetchRefusal, VesItem};
pub use redis_backend::{LINK_KEY_MIN_BYTES, LinkOptions, RedisCluster, RedisMode, RedisOptions};
pub use sharded::ShardedMap;

/// A relay node's identity in the cluster.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// A routable session identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionKey {
    Ves(VesId),
    Device(DeviceId),
}

/// How many sessions a node holds, as it last reported (for the operators' view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCounts {
    pub devices: u64,
    pub ves: u64,
    /// When the node reported them (Unix ms).
    pub reported_at_ms: i64,
}

/// A live node and its last report; `None` from a node that reports nothing (an older
/// version during a rolling upgrade).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLoad {
    pub node: NodeId,
    pub sessions: Option<SessionCounts>,
}

/// What a node knows, from memory, about who owns a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This node, or a live remote node.
    Node(NodeId),
    /// A live remote node that owned the session when it was last looked up, longer ago
    /// than the backend trusts a remembered owner: send to it, and look the owner up
    /// again ([`Cluster::lookup`]) without holding messages back. Only one caller per
    /// key and period is told so; the others get [`Owner::Node`] meanwhile.
    Stale(NodeId),
    /// Certainly nobody (the backend's view is local and complete).
    Nobody,
    /// Not known here: ask the backend with [`Cluster::lookup`].
    Unknown,
}

/// Failures of the cluster layer.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The target node has no inbox (gone, or never existed).
    #[error("node {0} is not reachable")]
    NodeUnreachable(NodeId),
    /// The target node's inbox is full: it is overloaded.
    #[error("inbox of node {0} is full")]
    InboxFull(NodeId),
    /// The backend (Redis) is unreachable.
    #[error("cluster backend unavailable: {0}")]
    Unavailable(String),
}

/// What a backend tells the node's metrics about its bus (none for the in-process bus,
/// whose delivery is a channel send).
pub trait BusObserver: Send + Sync + 'static {
    /// A batch of messages for one node left: the backend accepted it `waited` after its
    /// oldest message was queued (queueing plus one round trip to Redis, or the write to
    /// the node's link: the latency a cross-node frame pays on the sending side).
    fn published(&self, waited: std::time::Duration);
}

/// A link's reading, as a task for another thread to run.
pub type LinkTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// What the direct links between nodes hand their messages to, when the node's router
/// takes them itself instead of through the inbox.
///
/// Through the inbox, a link's messages crossed from the thread reading the link (the
/// node's main thread) to the worker holding each addressed session: a wake-up and a
/// context switch per bundle, on top of the main thread's own. A link's bundles all come
/// from one sending thread, which carries one VES's traffic and its devices' (a VES's
/// sessions share a worker on every node), so they are mostly for sessions on one worker
/// here: the link is read on that worker and each message handed over there.
pub trait LinkSink: Send + Sync + 'static {
    /// Handles a message that arrived over a link, on the thread that read it.
    fn deliver(&self, msg: BusMessage);

    /// Starts `task` on the worker holding the session `msg` is for. Gives it back when
    /// that is the calling thread, or no worker is known for it: it runs where it is.
    fn run_near(&self, msg: &BusMessage, task: LinkTask) -> Result<(), LinkTask>;
}

/// Session ownership and inter-node delivery.
///
/// `owner` is answered from local state so the per-frame path never waits on the network;
/// `claim`/`release` may do I/O and happen once per session.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    fn node_id(&self) -> &NodeId;

    /// Records this node as the owner of `key`. Returns the previous owner when it was
    /// another node, which must then close its session (takeover).
    async fn claim(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError>;

    /// Drops this node's ownership of `key`, if it still holds it. Never blocks: a backend
    /// that needs I/O queues the release (it runs from session destructors).
    fn release(&self, key: SessionKey);

    /// The node owning `key` from this node's view: answered from memory (a cache for
    /// remote owners), never waiting on the network.
    fn owner(&self, key: &SessionKey) -> Owner;

    /// Asks the backend who owns `key` (one round trip), and remembers the answer.
    async fn lookup(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError>;

    /// Drops a remembered owner that turned out to be wrong.
    fn forget(&self, key: &SessionKey);

    /// Records this node's session counts for every node to read (never on a session's
    /// path: a backend publishes them with its own membership upkeep).
    fn report_load(&self, devices: u64, ves: u64);

    /// Every live node with its last report, by node id.
    async fn node_loads(&self) -> Result<Vec<NodeLoad>, ClusterError>;

    /// Sends a message to another node's inbox. Never blocks; at most once. A message
    /// that later turns out to have reached nobody comes back through the inbox as
    /// [`BusMessage::Returned`].
    fn publish(&self, node: &NodeId, msg: BusMessage) -> Result<(), ClusterError>;

    /// This node's inbox; `None` after the first call.
    fn take_inbox(&self) -> Option<Inbox>;

    /// Whether the backend is reachable (readiness).
    fn healthy(&self) -> bool;

    /// Direct links from other nodes open on this node now (none for a backend without
    /// them).
    fn open_links(&self) -> usize {
        0
    }

    /// Hands what links from other nodes carry to `sink` from now on, on the worker its
    /// sessions are on (a backend without links ignores it; the first sink set stays).
    fn deliver_links_to(&self, sink: Arc<dyn LinkSink>) {
        let _ = sink;
    }

    /// Reports the bus's latency to `observer` from now on (a backend without a network
    /// hop ignores it).
    fn observe_bus(&self, observer: Arc<dyn BusObserver>) {
        let _ = observer;
    }

    /// Gives up every session and this node's membership, and stops listening: messages
    /// other nodes send this node from then on come back to them as `Returned`
    /// (graceful shutdown).
    async fn leave(&self) {}

    /// Waits (at most `limit`) until every message this node received was handled and
    /// every message it published has left it: what a draining node delivers, bounces or
    /// forwards must not die with the process.
    async fn flush(&self, limit: std::time::Duration) {
        let _ = limit;
    }
}
