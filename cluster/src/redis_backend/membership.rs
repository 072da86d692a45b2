//! Which nodes are alive: `noc:nodes`, a sorted set of node ids scored by lease expiry
//! (unix ms). Each node re-scores itself every `membership_interval`; a node whose lease
//! has passed is dead, and no frame is routed to it any more.

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::AsyncCommands;

use crate::redis_backend::conn::{Conn, unavailable};
use crate::redis_backend::link::address_key;
use crate::redis_backend::options::RedisOptions;
use crate::{ClusterError, NodeId, NodeLoad, SessionCounts};

/// Reads a published `devices ves reported_at_ms`; anything else is no report.
fn parse_load(text: &str) -> Option<SessionCounts> {
    let mut parts = text.split(' ');
    let counts = SessionCounts {
        devices: parts.next()?.parse().ok()?,
        ves: parts.next()?.parse().ok()?,
        reported_at_ms: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(counts)
}

const NODES: &str = "noc:nodes";
/// `noc:load:<node>`: the node's last session counts, `devices ves reported_at_ms`, with
/// the node's lease as its lifetime (single-key commands: Redis Cluster places each
/// where it likes).
const LOAD_PREFIX: &str = "noc:load:";

/// This node's lease and its view of the live nodes.
pub(super) struct Membership {
    pub node: NodeId,
    conn: Conn,
    lease_ms: i64,
    live: RwLock<HashSet<NodeId>>,
    /// The session counts to publish at the next tick.
    load: std::sync::Mutex<Option<SessionCounts>>,
    /// Whether the last command round trip succeeded (readiness).
    commands_ok: AtomicBool,
    /// Where other nodes dial this node's links, published with its lease.
    link_address: std::sync::OnceLock<String>,
}

impl Membership {
    pub fn new(node: NodeId, conn: Conn, opts: &RedisOptions) -> Self {
        Self {
            node,
            conn,
            lease_ms: i64::try_from(opts.node_lease.as_millis()).unwrap_or(i64::MAX),
            live: RwLock::new(HashSet::new()),
            load: std::sync::Mutex::new(None),
            commands_ok: AtomicBool::new(false),
            link_address: std::sync::OnceLock::new(),
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
        let ttl_ms = u64::try_from(self.lease_ms).unwrap_or(u64::MAX);
        if let Some(address) = self.link_address.get() {
            let _: () = conn.pset_ex(address_key(&self.node), address, ttl_ms).await.map_err(unavailable)?;
        }
        let load = *self.load.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = load {
            let value = format!("{} {} {}", c.devices, c.ves, c.reported_at_ms);
            let _: () = conn
                .pset_ex(format!("{LOAD_PREFIX}{}", self.node.as_str()), value, ttl_ms)
                .await
                .map_err(unavailable)?;
        }
        Ok(added == 1)
    }

    /// Publishes `address` as where other nodes dial this node's links, from the next tick.
    pub fn set_link_address(&self, address: String) {
        let _ = self.link_address.set(address);
    }

    /// Keeps this node's session counts for the next tick to publish.
    pub fn set_load(&self, counts: SessionCounts) {
        *self.load.lock().unwrap_or_else(|p| p.into_inner()) = Some(counts);
    }

    /// The live nodes (as of the last tick) with their published counts.
    pub async fn loads(&self) -> Result<Vec<NodeLoad>, ClusterError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut nodes = self.live_nodes();
        if !nodes.contains(&self.node) {
            nodes.push(self.node.clone());
            nodes.sort();
        }
        for node in nodes {
            let value: Option<String> =
                conn.get(format!("{LOAD_PREFIX}{}", node.as_str())).await.map_err(unavailable)?;
            out.push(NodeLoad { sessions: value.as_deref().and_then(parse_load), node });
        }
        Ok(out)
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
        if self.link_address.get().is_some() {
            let _: Result<i64, _> = conn.del(address_key(&self.node)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_load_reads_back_and_anything_else_is_no_report() {
        assert_eq!(
            parse_load("3 1 1796428800000"),
            Some(SessionCounts { devices: 3, ves: 1, reported_at_ms: 1_796_428_800_000 })
        );
        for bad in ["", "3 1", "3 1 2 4", "x 1 2", "-1 1 2"] {
            assert_eq!(parse_load(bad), None, "{bad:?}");
        }
    }
}
