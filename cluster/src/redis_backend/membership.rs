//! Which nodes are alive: `noc:nodes`, a sorted set of node ids scored by lease expiry
//! (unix ms). Each node re-scores itself every `membership_interval`; a node whose lease
//! has passed is dead, and no frame is routed to it any more.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// The nodes this node takes for alive.
///
/// Normally those Redis lists with a lease. But after Redis restarted empty, or after an
/// outage longer than the lease, the first node to tick again finds only itself listed:
/// the others have not had a tick's chance to renew yet. Taking them for dead then made
/// every remembered owner on them unknown, and the messages for their sessions were
/// looked up (in an empty Redis), found nowhere and refused or, for acknowledgements,
/// dropped (docs/benchmarks.md, "A Redis restart no longer loses acknowledgements"). So
/// the nodes listed before such a gap are kept for one lease from the end of the gap.
#[derive(Default)]
struct LiveView {
    /// The nodes Redis listed with a lease at the last tick.
    listed: HashSet<NodeId>,
    /// Nodes listed before a gap and not listed since, each until its grace ends.
    kept: HashMap<NodeId, Instant>,
}

impl LiveView {
    fn contains(&self, node: &NodeId) -> bool {
        self.listed.contains(node) || self.kept.contains_key(node)
    }

    /// The view after a tick in which Redis listed `listed`. `gap`: Redis lost this node's
    /// lease or could not be reached since the last tick; the nodes listed before it are
    /// kept until `now + grace`, unless listed again. A node only kept is not kept again
    /// by a later gap, so a flapping Redis does not keep a dead node alive.
    fn refresh(&mut self, listed: HashSet<NodeId>, gap: bool, now: Instant, grace: Duration) {
        if gap {
            let until = now + grace;
            for node in self.listed.drain() {
                self.kept.insert(node, until);
            }
        }
        self.kept.retain(|node, until| *until > now && !listed.contains(node));
        self.listed = listed;
    }

    fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.listed.iter().chain(self.kept.keys())
    }
}

/// This node's lease and its view of the live nodes.
pub(super) struct Membership {
    pub node: NodeId,
    conn: Conn,
    lease_ms: i64,
    live: RwLock<LiveView>,
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
            live: RwLock::new(LiveView::default()),
            load: std::sync::Mutex::new(None),
            commands_ok: AtomicBool::new(false),
            link_address: std::sync::OnceLock::new(),
        }
    }

    /// Whether `node` is this one or was live at the last refresh (see [`LiveView`]).
    pub fn is_live(&self, node: &NodeId) -> bool {
        *node == self.node || self.live.read().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    /// Live nodes as this node last saw them, sorted.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.live.read().unwrap_or_else(|p| p.into_inner()).nodes().cloned().collect();
        v.sort();
        v
    }

    pub fn commands_ok(&self) -> bool {
        self.commands_ok.load(Ordering::Relaxed)
    }

    /// Renews this node's lease and refreshes the live set. Returns whether this node's
    /// entry was missing (Redis restarted or the outage outlived the lease).
    pub async fn tick(&self) -> Result<bool, ClusterError> {
        // Unreachable since the last tick (or never reached yet: nothing to keep then).
        let unreachable_before = !self.commands_ok.load(Ordering::Relaxed);
        let now = noc_protocol::clock::unix_ms_i64();
        let mut conn = self.conn.clone();
        let (added, live, _): (i64, Vec<String>, i64) = redis::pipe()
            .zadd(NODES, self.node.as_str(), now + self.lease_ms)
            .zrangebyscore(NODES, now, "+inf")
            .zrembyscore(NODES, "-inf", now - 10 * self.lease_ms)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let grace = Duration::from_millis(u64::try_from(self.lease_ms).unwrap_or(u64::MAX));
        self.live.write().unwrap_or_else(|p| p.into_inner()).refresh(
            live.into_iter().map(NodeId::new).collect(),
            added == 1 || unreachable_before,
            Instant::now(),
            grace,
        );
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
            self.live.write().unwrap_or_else(|p| p.into_inner()).listed.insert(node.clone());
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

    fn nodes(names: &[&str]) -> HashSet<NodeId> {
        names.iter().map(|n| NodeId::new(*n)).collect()
    }

    #[test]
    fn nodes_listed_before_a_gap_stay_live_for_one_lease_unless_listed_again() {
        let (t0, lease) = (Instant::now(), Duration::from_secs(3));
        let mut view = LiveView::default();
        view.refresh(nodes(&["a", "b", "c"]), true, t0, lease);
        assert!(view.kept.is_empty(), "nothing was listed before the first tick");
        view.refresh(nodes(&["a", "b", "c"]), false, t0, lease);

        // Redis comes back empty: only this node (a) has renewed.
        view.refresh(nodes(&["a"]), true, t0 + Duration::from_secs(8), lease);
        for n in ["a", "b", "c"] {
            assert!(view.contains(&NodeId::new(n)), "{n} kept");
        }
        // b renews in time; c does not (it died during the outage).
        view.refresh(nodes(&["a", "b"]), false, t0 + Duration::from_secs(9), lease);
        assert!(view.contains(&NodeId::new("c")), "c still within its grace");
        view.refresh(nodes(&["a", "b"]), false, t0 + Duration::from_secs(11), lease);
        assert!(view.contains(&NodeId::new("b")));
        assert!(!view.contains(&NodeId::new("c")), "c's grace is over");
        let mut listed: Vec<&str> = view.nodes().map(|n| n.as_str()).collect();
        listed.sort_unstable();
        assert_eq!(listed, ["a", "b"]);

        // Without a gap, a node that leaves the list is gone at once (a graceful leave).
        view.refresh(nodes(&["a"]), false, t0 + Duration::from_secs(12), lease);
        assert!(!view.contains(&NodeId::new("b")));
    }

    #[test]
    fn a_node_only_kept_is_not_kept_again_by_the_next_gap() {
        let (t0, lease) = (Instant::now(), Duration::from_secs(3));
        let mut view = LiveView::default();
        view.refresh(nodes(&["a", "b"]), false, t0, lease);
        view.refresh(nodes(&["a"]), true, t0 + Duration::from_secs(1), lease);
        // Redis flaps again before b's grace ends: b keeps its first grace, no more.
        view.refresh(nodes(&["a"]), true, t0 + Duration::from_secs(2), lease);
        assert!(view.contains(&NodeId::new("b")));
        view.refresh(nodes(&["a"]), true, t0 + Duration::from_secs(4), lease);
        assert!(!view.contains(&NodeId::new("b")), "kept until 4 s, not 5 s");
    }

    /// Against a real Redis: two nodes' entries vanish as when Redis restarts empty; the
    /// first to tick again still takes the other for alive for one lease, and no longer
    /// once that lease is over without a renewal.
    #[tokio::test]
    async fn after_redis_lost_the_leases_the_other_nodes_stay_live_for_one_lease() {
        let opts = RedisOptions {
            url: std::env::var("NOC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
            node_lease: Duration::from_millis(600),
            ..RedisOptions::default()
        };
        let (_, conn) = crate::redis_backend::conn::connect(&opts).await.expect("Redis must run for this test");
        let suffix = noc_protocol::secrets::random_hex::<4>();
        let a = Membership::new(NodeId::new(format!("lease-a-{suffix}")), conn.clone(), &opts);
        let b = Membership::new(NodeId::new(format!("lease-b-{suffix}")), conn.clone(), &opts);
        assert!(a.tick().await.expect("tick"), "a new node is missing at first");
        assert!(b.tick().await.expect("tick"));
        assert!(!a.tick().await.expect("tick"));
        assert!(a.is_live(&b.node));

        let mut raw = conn.clone();
        let _: i64 = raw.zrem(NODES, &[a.node.as_str(), b.node.as_str()]).await.expect("zrem");
        assert!(a.tick().await.expect("tick"), "a finds itself missing");
        assert!(a.is_live(&b.node), "b has not had a tick's chance to renew yet");
        assert!(a.live_nodes().contains(&b.node));

        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!a.tick().await.expect("tick"));
        assert!(!a.is_live(&b.node), "b did not renew within its lease");

        // The same with b renewing within its grace: listed again, it no longer depends
        // on the grace.
        assert!(b.tick().await.expect("tick"));
        assert!(!a.tick().await.expect("tick"));
        let _: i64 = raw.zrem(NODES, &[a.node.as_str(), b.node.as_str()]).await.expect("zrem");
        assert!(a.tick().await.expect("tick"));
        assert!(a.live.read().expect("view").kept.contains_key(&b.node), "kept");
        assert!(b.tick().await.expect("tick"));
        assert!(!a.tick().await.expect("tick"));
        {
            let view = a.live.read().expect("view");
            assert!(view.listed.contains(&b.node) && !view.kept.contains_key(&b.node), "listed, no longer kept");
        }
        let _: i64 = raw.zrem(NODES, &[a.node.as_str(), b.node.as_str()]).await.expect("zrem");
    }

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
