//! Which nodes are alive: `noc:nodes`, a sorted set of node ids scored by lease expiry
//! (unix ms). Each node re-scores itself every `membership_interval`; a node whose lease
//! has passed is dead, and no frame is routed to it any more.

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::AsyncCommands;

use crate::redis_backend::conn::{Conn, unavailable};
use crate::redis_backend::options::RedisOptions;
use crate::{ClusterError, NodeId};

const NODES: &str = "noc:nodes";

/// This node's lease and its view of the live nodes.
pub(super) struct Membership {
    pub node: NodeId,
    conn: Conn,
    lease_ms: i64,
    live: RwLock<HashSet<NodeId>>,
    /// Whether the last command round trip succeeded (readiness).
    commands_ok: AtomicBool,
}

impl Membership {
    pub fn new(node: NodeId, conn: Conn, opts: &RedisOptions) -> Self {
        Self {
            node,
            conn,
            lease_ms: i64::try_from(opts.node_lease.as_millis()).unwrap_or(i64::MAX),
            live: RwLock::new(HashSet::new()),
            commands_ok: AtomicBool::new(false),
        }
    }

    /// Whether `node` is this one or was live at the last refresh.
    pub fn is_live(&self, node: &NodeId) -> bool {
        *node == self.node || self.live.read().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    /// Live nodes as this node last saw them, sorted.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.live.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        v.sort();
        v
    }

    pub fn commands_ok(&self) -> bool {
        self.commands_ok.load(Ordering::Relaxed)
    }

    /// Renews this node's lease and refreshes the live set. Returns whether this node's
    /// entry was missing (Redis restarted or the outage outlived the lease).
    pub async fn tick(&self) -> Result<bool, ClusterError> {
        let now = noc_protocol::clock::unix_ms_i64();
        let mut conn = self.conn.clone();
        let (added, live, _): (i64, Vec<String>, i64) = redis::pipe()
            .zadd(NODES, self.node.as_str(), now + self.lease_ms)
            .zrangebyscore(NODES, now, "+inf")
            .zrembyscore(NODES, "-inf", now - 10 * self.lease_ms)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live.into_iter().map(NodeId::new).collect();
        self.commands_ok.store(true, Ordering::Relaxed);
        Ok(added == 1)
    }

    /// Records a failed tick; returns whether Redis was reachable until now (to log once).
    pub fn tick_failed(&self) -> bool {
        self.commands_ok.swap(false, Ordering::Relaxed)
    }

    /// Asks Redis whether `node`, unknown at the last refresh, holds a lease now (it may
    /// have joined since), and remembers it if so.
    pub async fn check_live(&self, node: &NodeId) -> Result<bool, ClusterError> {
        let mut conn = self.conn.clone();
        let lease: Option<f64> = conn.zscore(NODES, node.as_str()).await.map_err(unavailable)?;
        let live = lease.is_some_and(|expiry| expiry as i64 > noc_protocol::clock::unix_ms_i64());
        if live {
            self.live.write().unwrap_or_else(|p| p.into_inner()).insert(node.clone());
        }
        Ok(live)
    }

    /// Gives up this node's lease (graceful shutdown).
    pub async fn leave(&self) {
        let mut conn = self.conn.clone();
        let _: Result<i64, _> = conn.zrem(NODES, self.node.as_str()).await;
    }
}
