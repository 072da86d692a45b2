//! The distributed backend: Redis for membership, session ownership and the bus, one
//! file each.
//!
//! Every key and channel starts with `noc:`:
//!
//! * [`membership`] — `noc:nodes`, the live nodes and their leases;
//! * [`registry`] — `noc:own:d:<device-id>` / `noc:own:v:<ves-id>`, the owner of each
//!   session, kept alive and checked by its owner;
//! * [`bus`] — `noc:inbox:{<node-id>}`, each node's pub/sub inbox (sharded pub/sub on
//!   Redis Cluster);
//! * [`link`] — `noc:link:<node-id>`, where a node accepts direct links from the others,
//!   which carry the bus's messages past Redis when configured.
//!
//! [`RedisCluster`] composes the first three behind the [`Cluster`] trait and runs their
//! background tasks on the node's runtime.

mod bus;
mod conn;
mod link;
mod membership;
mod options;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use crate::redis_backend::bus::Bus;
use crate::redis_backend::membership::Membership;
use crate::redis_backend::registry::Registry;
use crate::{BusMessage, BusObserver, Cluster, ClusterError, Inbox, NodeId, Owner, SessionKey};
use async_trait::async_trait;

pub use link::{LinkOptions, MIN_KEY_BYTES as LINK_KEY_MIN_BYTES};
pub use options::{RedisMode, RedisOptions};

/// A node's handle on the Redis backend. Spawns its background tasks on the current
/// tokio runtime, which must outlive it (the node's runtime).
#[derive(Clone)]
pub struct RedisCluster {
    membership: Arc<Membership>,
    registry: Arc<Registry>,
    bus: Arc<Bus>,
}

impl RedisCluster {
    /// Connects, registers this node and starts the membership, bus and renewal tasks.
    pub async fn connect(node: NodeId, opts: RedisOptions) -> Result<Self, ClusterError> {
        let (endpoint, conn) = conn::connect(&opts).await?;
        let membership = Arc::new(Membership::new(node.clone(), conn.clone(), &opts));
        let (registry, releases) = Registry::new(node.clone(), conn.clone(), &opts);
        let registry = Arc::new(registry);
        let (bus, publishes) = Bus::new(node, &opts, endpoint, conn);
        let bus = Arc::new(bus);
        // Listening before the first tick publishes the address.
        if let Some(address) = bus.listen_links().await? {
            membership.set_link_address(address);
        }
        membership.tick().await?;
        tokio::spawn(membership_loop(membership.clone(), registry.clone(), opts.membership_interval));
        let b = bus.clone();
        tokio::spawn(async move { b.subscribe_loop().await });
        let b = bus.clone();
        tokio::spawn(async move { b.publish_loop(publishes).await });
        let r = registry.clone();
        tokio::spawn(async move { r.release_loop(releases).await });
        let (r, inbox) = (registry.clone(), bus.inbox_sender());
        tokio::spawn(async move { r.renew_loop(inbox).await });
        Ok(Self { membership, registry, bus })
    }

    /// Live nodes as this node last saw them.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.membership.live_nodes()
    }
}

/// Renews the lease every `every`, expires cached owners, and re-registers this node's
/// sessions when Redis lost them, at every tick until that succeeds (the tick after the
/// one that found this node missing finds it present again, so that cannot be the cue).
async fn membership_loop(membership: Arc<Membership>, registry: Arc<Registry>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unregistered = false;
    loop {
        tick.tick().await;
        registry.expire_cache();
        match membership.tick().await {
            Ok(missing) => {
                if missing {
                    tracing::warn!("this node was missing from Redis (restart or long outage): re-registering");
                    unregistered = true;
                }
                if unregistered {
                    match registry.reregister().await {
                        Ok(()) => unregistered = false,
                        Err(e) => tracing::warn!(error = %e, "re-registration failed; retrying next tick"),
                    }
                }
            }
            Err(e) => {
                if membership.tick_failed() {
                    tracing::warn!(error = %e, "Redis unreachable: cross-node routing suspended");
                }
            }
        }
    }
}

#[async_trait]
impl Cluster for RedisCluster {
    fn node_id(&self) -> &NodeId {
        &self.membership.node
    }

    async fn claim(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
        self.registry.claim(key).await
    }

    fn release(&self, key: SessionKey) {
        self.registry.release(key);
    }

    fn owner(&self, key: &SessionKey) -> Owner {
        self.registry.owner(key, &self.membership)
    }

    async fn lookup(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
        self.registry.lookup(key, &self.membership).await
    }

    fn forget(&self, key: &SessionKey) {
        self.registry.forget(key);
    }

    fn report_load(&self, devices: u64, ves: u64) {
        let reported_at_ms = noc_protocol::clock::unix_ms_i64();
        self.membership.set_load(crate::SessionCounts { devices, ves, reported_at_ms });
    }

    async fn node_loads(&self) -> Result<Vec<crate::NodeLoad>, ClusterError> {
        self.membership.loads().await
    }

    fn publish(&self, node: &NodeId, msg: BusMessage) -> Result<(), ClusterError> {
        // No liveness check here: routing decisions made it already (`owner`), and a
        // message to a node that is really gone comes back as `Returned`.
        self.bus.publish(node, msg)
    }

    fn take_inbox(&self) -> Option<Inbox> {
        self.bus.take_inbox()
    }

    fn healthy(&self) -> bool {
        self.membership.commands_ok() && self.bus.subscribed()
    }

    fn open_links(&self) -> usize {
        self.bus.open_links()
    }

    fn observe_bus(&self, observer: Arc<dyn BusObserver>) {
        self.bus.observe(observer);
    }

    fn deliver_links_to(&self, sink: Arc<dyn crate::LinkSink>) {
        self.bus.deliver_links_to(sink);
    }

    async fn leave(&self) {
        self.registry.release_all().await;
        self.membership.leave().await;
        self.bus.stop_listening().await;
    }

    async fn flush(&self, limit: Duration) {
        self.bus.flush(limit).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceItem;
    use crate::redis_backend::registry::own_key;
    use futures_util::StreamExt;
    use noc_protocol::DeviceId;
    use redis::AsyncCommands;
    use tokio::sync::mpsc;

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

    /// Waits (up to 2.5 s) until every one of `nodes` is subscribed and answering.
    async fn until_healthy(nodes: &[&RedisCluster]) {
        for _ in 0..50 {
            if nodes.iter().all(|n| n.healthy()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `n` relay acknowledgements for random devices, numbered from 0.
    fn acks(n: u64) -> Vec<BusMessage> {
        (0..n)
            .map(|frame_id| BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id } })
            .collect()
    }

    /// A takeover whose `Close` message never arrived is still noticed: the old owner reads
    /// its key back, finds another node in it, and closes its own session (`replaced`). A
    /// key Redis lost is set again, and the check's script is loaded again when Redis
    /// forgot it.
    #[tokio::test]
    async fn a_takeover_whose_close_was_lost_is_found_by_the_ownership_check() {
        let a = RedisCluster::connect(node("a"), RedisOptions { session_key_ttl: Duration::from_secs(3), ..opts() })
            .await
            .expect("Redis must run for this test");
        let mut inbox = a.take_inbox().expect("inbox");
        let ours = SessionKey::Device(DeviceId::random());
        let taken = SessionKey::Device(DeviceId::random());
        let lost = SessionKey::Device(DeviceId::random());
        // More keys than one script run checks, so that the answers of several runs must
        // each find their key.
        let others: Vec<SessionKey> = (0..450).map(|_| SessionKey::Device(DeviceId::random())).collect();
        for key in [ours, taken, lost].iter().chain(&others) {
            assert_eq!(a.claim(*key).await.expect("claim"), None);
        }
        // Another node takes `taken` over, and its Close to `a` is lost; `lost` is gone,
        // as after a restart of Redis, and so are its scripts.
        let client = redis::Client::open(opts().url).expect("url");
        let mut raw = client.get_multiplexed_async_connection().await.expect("connect");
        let _: () = raw.set_ex(own_key(&taken), "some-other-node", 30).await.expect("set");
        let _: () = raw.del(own_key(&lost)).await.expect("del");
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut raw).await.expect("script flush");

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
        assert_eq!(a.lookup(lost).await.expect("lookup"), Some(a.node_id().clone()), "set again");
        for key in &others {
            assert_eq!(a.lookup(*key).await.expect("lookup"), Some(a.node_id().clone()), "extended");
        }
        let ttl_ms: i64 = raw.pttl(own_key(&lost)).await.expect("pttl");
        assert!(ttl_ms > 0 && ttl_ms <= 3000, "set again with the time to live ({ttl_ms} ms)");
        let owner: Option<String> = raw.get(own_key(&taken)).await.expect("get");
        assert_eq!(owner.as_deref(), Some("some-other-node"));
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), inbox.recv()).await.is_err(),
            "closed once, not at every check"
        );
        a.leave().await;
    }

    /// A session that ends while the ownership check runs leaves no key naming this node:
    /// the check may find the key just deleted and set it again (as if Redis had lost it),
    /// and then deletes it once more.
    #[tokio::test]
    async fn a_key_released_during_the_ownership_check_is_not_left_behind() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let client = redis::Client::open(opts().url).expect("url");
        let mut raw = client.get_multiplexed_async_connection().await.expect("connect");
        let key = SessionKey::Device(DeviceId::random());
        assert_eq!(a.claim(key).await.expect("claim"), None);
        // The check's snapshot is taken; then the session ends and its key is deleted.
        let snapshot = [(key, std::time::Instant::now())];
        a.release(key);
        let gone = |raw: &mut redis::aio::MultiplexedConnection| {
            let mut raw = raw.clone();
            async move {
                for _ in 0..100 {
                    let exists: bool = raw.exists(own_key(&key)).await.expect("exists");
                    if !exists {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                false
            }
        };
        assert!(gone(&mut raw).await, "released");
        assert!(a.registry.check_round(&snapshot, Duration::ZERO, &a.bus.inbox_sender()).await);
        assert!(gone(&mut raw).await, "the key the check set again is deleted again");
        a.leave().await;
    }

    /// Leaving deletes every key that names this node, more than one script run holds, in
    /// pipelined runs; a key another node took over is left to it.
    #[tokio::test]
    async fn leaving_releases_every_key_of_this_node_and_no_other() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let client = redis::Client::open(opts().url).expect("url");
        let mut raw = client.get_multiplexed_async_connection().await.expect("connect");
        let keys: Vec<SessionKey> = (0..453).map(|_| SessionKey::Device(DeviceId::random())).collect();
        for key in &keys {
            assert_eq!(a.claim(*key).await.expect("claim"), None);
        }
        let taken = keys[200];
        let _: () = raw.set_ex(own_key(&taken), "some-other-node", 30).await.expect("set");
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut raw).await.expect("script flush");
        a.leave().await;
        for key in keys.iter().filter(|k| **k != taken) {
            let exists: bool = raw.exists(own_key(key)).await.expect("exists");
            assert!(!exists, "{key:?} released");
        }
        let owner: Option<String> = raw.get(own_key(&taken)).await.expect("get");
        assert_eq!(owner.as_deref(), Some("some-other-node"));
    }

    /// Releases queued together leave together, and a key this node claimed again while
    /// its release was on its way is set again rather than left deleted.
    #[tokio::test]
    async fn queued_releases_leave_together_and_a_key_claimed_again_meanwhile_stays() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let client = redis::Client::open(opts().url).expect("url");
        let mut raw = client.get_multiplexed_async_connection().await.expect("connect");
        let keys: Vec<SessionKey> = (0..120).map(|_| SessionKey::Device(DeviceId::random())).collect();
        for key in &keys {
            assert_eq!(a.claim(*key).await.expect("claim"), None);
        }
        for key in &keys {
            a.release(*key);
        }
        let all_gone = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let names: Vec<String> = keys.iter().map(own_key).collect();
                let left: usize = raw.exists(names).await.expect("exists");
                if left == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(all_gone.is_ok(), "every queued release ran");

        // The session comes back to this node after the release loop looked at `owned`
        // and before its deletion ran: the key names this node again afterwards.
        let back = keys[0];
        assert_eq!(a.claim(back).await.expect("claim"), None);
        let script = redis::Script::new(registry::RELEASE_SCRIPT);
        a.registry.release_keys(&script, &[back]).await.expect("release");
        assert_eq!(a.lookup(back).await.expect("lookup"), Some(a.node_id().clone()), "set again");
        let ttl_ms: i64 = raw.pttl(own_key(&back)).await.expect("pttl");
        assert!(ttl_ms > 0, "with its time to live ({ttl_ms} ms)");
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
        until_healthy(&[&b]).await;
        a.publish(b.node_id(), msg.clone()).expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(2), inbox.recv()).await.expect("delivered");
        assert_eq!(got, Some(msg));
        a.leave().await;
        b.leave().await;
    }

    /// A remembered owner past the cache's time to live is still used: the first caller
    /// to find it so is told to look it up again (the others meanwhile get the owner),
    /// again half a period later if no lookup answered, and the lookup finds a new owner.
    /// One not used for twice the time to live is forgotten.
    #[tokio::test]
    async fn a_stale_owner_is_used_while_one_caller_looks_it_up_again() {
        let ttl = Duration::from_secs(1);
        let o = RedisOptions { owner_cache_ttl: ttl, ..opts() };
        let a = RedisCluster::connect(node("a"), o.clone()).await.expect("Redis must run for this test");
        let b = RedisCluster::connect(node("b"), o.clone()).await.expect("connect");
        let c = RedisCluster::connect(node("c"), o).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let key = SessionKey::Ves(noc_protocol::VesId::random());
        assert_eq!(b.claim(key).await.expect("claim"), None);
        assert_eq!(a.lookup(key).await.expect("lookup"), Some(b.node_id().clone()));
        let on_b = Owner::Node(b.node_id().clone());
        assert_eq!(a.owner(&key), on_b);

        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(a.owner(&key), Owner::Stale(b.node_id().clone()), "the first caller refreshes");
        assert_eq!(a.owner(&key), on_b, "the others use it meanwhile");
        tokio::time::sleep(ttl / 2 + Duration::from_millis(50)).await;
        assert_eq!(a.owner(&key), Owner::Stale(b.node_id().clone()), "no lookup answered: again");

        // Meanwhile the session moved to c; the refresh finds it there.
        assert_eq!(c.claim(key).await.expect("claim"), Some(b.node_id().clone()));
        assert_eq!(a.lookup(key).await.expect("lookup"), Some(c.node_id().clone()));
        assert_eq!(a.owner(&key), Owner::Node(c.node_id().clone()));

        tokio::time::sleep(ttl * 2 + Duration::from_millis(100)).await;
        assert_eq!(a.owner(&key), Owner::Unknown, "unused for twice the time to live");
        for n in [a, b, c] {
            n.leave().await;
        }
    }

    /// Receives every payload published on `channel` into a queue, until the task ends.
    async fn listen(channel: String) -> (mpsc::UnboundedReceiver<Vec<u8>>, tokio::task::JoinHandle<()>) {
        let client = redis::Client::open(opts().url).expect("url");
        let mut pubsub = client.get_async_pubsub().await.expect("connect");
        pubsub.subscribe(&channel).await.expect("subscribe");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(m) = messages.next().await {
                if tx.send(m.get_payload_bytes().to_vec()).is_err() {
                    break;
                }
            }
        });
        (rx, task)
    }

    /// Messages queued together for one node leave as one bundle, one `PUBLISH`, in order.
    #[tokio::test]
    async fn messages_for_one_node_leave_as_one_bundle() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let x = node("x");
        let (mut payloads, _listening) = listen(format!("noc:inbox:{{{x}}}:bundles")).await;
        let msgs = acks(20);
        // Queued before the publisher runs (this test's runtime has one thread).
        for m in &msgs {
            a.publish(&x, m.clone()).expect("publish");
        }
        let payload = tokio::time::timeout(Duration::from_secs(2), payloads.recv()).await.expect("published");
        let got: Vec<BusMessage> =
            crate::wire::decode_each(payload.expect("payload").into()).collect::<Result<_, _>>().expect("decode");
        assert_eq!(got, msgs, "all twenty, in order, in one payload");
        a.flush(Duration::from_secs(2)).await;
        assert!(payloads.try_recv().is_err(), "one payload only");
        a.leave().await;
    }

    /// A node of an earlier version reads only its one-message inbox: a bundle reaches
    /// nobody there, and its messages follow one by one. What such a node publishes, one
    /// message per payload, is read here too.
    #[tokio::test]
    async fn nodes_of_an_earlier_version_send_and_receive_one_message_per_payload() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let mut a_inbox = a.take_inbox().expect("inbox");
        let old = node("old");
        let (mut payloads, _listening) = listen(format!("noc:inbox:{{{old}}}")).await;
        let msgs = acks(5);
        for m in &msgs {
            a.publish(&old, m.clone()).expect("publish");
        }
        for m in &msgs {
            let payload = tokio::time::timeout(Duration::from_secs(2), payloads.recv()).await.expect("published");
            assert_eq!(crate::wire::decode(payload.expect("payload").into()).as_ref(), Ok(m));
        }
        a.flush(Duration::from_secs(2)).await;
        let back = tokio::time::timeout(Duration::from_millis(300), a_inbox.recv()).await;
        assert!(back.is_err(), "received: nothing comes back ({back:?})");

        until_healthy(&[&a]).await;
        let from_old = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: 77 } };
        let client = redis::Client::open(opts().url).expect("url");
        let mut raw = client.get_multiplexed_async_connection().await.expect("connect");
        let bytes = crate::wire::encode(&from_old).expect("encode");
        let receivers: i64 =
            raw.publish(format!("noc:inbox:{{{}}}", a.node_id()), bytes.as_ref()).await.expect("publish");
        assert_eq!(receivers, 1);
        let got = tokio::time::timeout(Duration::from_secs(2), a_inbox.recv()).await.expect("delivered");
        assert_eq!(got, Some(from_old));
        a.leave().await;
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

    /// A leaving node keeps what reached it before it left (its router handles it, and a
    /// flush waits for that), and what is sent to it afterwards comes back to the sender.
    #[tokio::test]
    async fn a_node_that_left_has_handled_what_came_before_and_returns_what_comes_after() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let b = RedisCluster::connect(node("b"), opts()).await.expect("connect");
        let (mut a_inbox, mut b_inbox) = (a.take_inbox().expect("inbox"), b.take_inbox().expect("inbox"));
        until_healthy(&[&a, &b]).await;
        let msg = |frame_id| BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id } };
        let before: Vec<BusMessage> = (0..20).map(msg).collect();
        for m in &before {
            a.publish(b.node_id(), m.clone()).expect("publish");
        }
        a.flush(Duration::from_secs(2)).await;
        b.leave().await;
        assert!(!b.healthy(), "a node that left is not ready");
        // Everything sent before is in b's inbox; b's flush waits until it was handled.
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), b_inbox.recv()).await {
            got.push(m);
        }
        assert_eq!(got, before);
        b.flush(Duration::from_secs(1)).await;
        assert_eq!(b.bus.inbox_sender().unhandled(), 0);

        let after = msg(99);
        a.publish(b.node_id(), after.clone()).expect("publish");
        let back = tokio::time::timeout(Duration::from_secs(2), a_inbox.recv()).await.expect("returned");
        assert_eq!(back, Some(BusMessage::Returned(Box::new(after))));
        a.leave().await;
    }

    /// Options of a node with links, listening on a free loopback port.
    fn linked(key: &[u8]) -> RedisOptions {
        RedisOptions {
            links: Some(LinkOptions {
                listen: "127.0.0.1:0".parse().expect("address"),
                advertise: None,
                key: key.into(),
                handshake_timeout: Duration::from_secs(1),
            }),
            ..opts()
        }
    }

    const LINK_KEY: &[u8] = b"a test link key of thirty-two bytes or more";

    /// With links, messages between nodes go over them and not through Redis, in order;
    /// a node that leaves says goodbye on its links, so that every message sent to it
    /// while it leaves either reached it or comes back to its sender, never both, never
    /// neither.
    #[tokio::test]
    async fn links_carry_the_bus_and_a_leaving_node_loses_nothing_sent_on_them() {
        let a = RedisCluster::connect(node("a"), linked(LINK_KEY)).await.expect("Redis must run for this test");
        let b = RedisCluster::connect(node("b"), linked(LINK_KEY)).await.expect("connect");
        let (mut a_inbox, mut b_inbox) = (a.take_inbox().expect("inbox"), b.take_inbox().expect("inbox"));
        until_healthy(&[&a, &b]).await;
        let bundles = format!("noc:inbox:{{{}}}:bundles", b.node_id());
        let (mut over_redis, listening) = listen(bundles.clone()).await;
        let sent = acks(300);
        for m in &sent {
            a.publish(b.node_id(), m.clone()).expect("publish");
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match tokio::time::timeout(Duration::from_secs(2), b_inbox.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        assert_eq!(got, sent, "all of them, in order");
        assert_eq!(b.open_links(), 1, "node a's one publishing thread holds one link to b");
        assert!(over_redis.try_recv().is_err(), "nothing went through Redis");
        // Gone before b leaves: a listener left on b's channel would take what b no longer
        // does, and Redis would count it as received.
        listening.abort();
        let mut redis =
            redis::Client::open(opts().url).expect("url").get_multiplexed_async_connection().await.expect("connect");
        for _ in 0..100 {
            let (_, subscribers): (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&bundles).query_async(&mut redis).await.expect("numsub");
            if subscribers == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Node a keeps sending while b leaves.
        let frame = |m: &BusMessage| match m {
            BusMessage::ToDevice { item: DeviceItem::Ack { frame_id }, .. } => *frame_id,
            other => panic!("not an ack: {other:?}"),
        };
        let sender = {
            let (a, to_b) = (a.clone(), b.node_id().clone());
            tokio::spawn(async move {
                for frame_id in 1000..1400 {
                    let m = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id } };
                    a.publish(&to_b, m).expect("publish");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, received) = tokio::join!(b.leave(), async {
            let mut received = Vec::new();
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), b_inbox.recv()).await {
                received.push(frame(&m));
            }
            received
        });
        sender.await.expect("sender");
        a.flush(Duration::from_secs(2)).await;

        let mut returned = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), a_inbox.recv()).await {
            match m {
                BusMessage::Returned(m) => returned.push(frame(&m)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(!received.is_empty() && !returned.is_empty(), "b left while a was sending");
        let mut all: Vec<u64> = received.iter().chain(&returned).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1000..1400).collect::<Vec<_>>(), "each one reached b or came back, once");
        assert_eq!(b.open_links(), 0);
        a.leave().await;
    }

    /// A router's stand-in: records each message with the thread that handed it over, and
    /// runs a link's reading on its own "worker" thread once a device's message shows up.
    struct WorkerSink {
        worker: tokio::runtime::Handle,
        got: mpsc::UnboundedSender<(std::thread::ThreadId, BusMessage)>,
    }

    impl crate::LinkSink for WorkerSink {
        fn deliver(&self, msg: BusMessage) {
            let _ = self.got.send((std::thread::current().id(), msg));
        }

        fn run_near(&self, msg: &BusMessage, task: crate::LinkTask) -> Result<(), crate::LinkTask> {
            match msg {
                BusMessage::ToDevice { .. } => {
                    self.worker.spawn(task);
                    Ok(())
                }
                _ => Err(task),
            }
        }
    }

    /// With a sink, a link's messages skip the inbox: the first frame's on the thread that
    /// accepted the link, every later one on the worker the sink names, all in order; a
    /// node that leaves still says goodbye on a link read there and reads it to its end,
    /// so each message sent meanwhile reaches it or comes back, once.
    #[tokio::test]
    async fn a_link_is_read_on_the_worker_its_first_message_names() {
        let (worker_tx, worker_rx) = std::sync::mpsc::channel();
        let (end_worker, worker_ends) = tokio::sync::oneshot::channel::<()>();
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            worker_tx.send((std::thread::current().id(), rt.handle().clone())).expect("send");
            rt.block_on(async move {
                let _ = worker_ends.await;
            });
        });
        let (worker_thread, handle) = worker_rx.recv().expect("worker");

        let a = RedisCluster::connect(node("a"), linked(LINK_KEY)).await.expect("Redis must run for this test");
        let b = RedisCluster::connect(node("b"), linked(LINK_KEY)).await.expect("connect");
        let (mut a_inbox, mut b_inbox) = (a.take_inbox().expect("inbox"), b.take_inbox().expect("inbox"));
        let (got_tx, mut got) = mpsc::unbounded_channel();
        b.deliver_links_to(Arc::new(WorkerSink { worker: handle, got: got_tx }));
        until_healthy(&[&a, &b]).await;

        let sent = acks(300);
        for m in &sent {
            a.publish(b.node_id(), m.clone()).expect("publish");
            tokio::task::yield_now().await;
        }
        let mut received = Vec::new();
        while received.len() < sent.len() {
            match tokio::time::timeout(Duration::from_secs(2), got.recv()).await {
                Ok(Some(m)) => received.push(m),
                _ => break,
            }
        }
        let (threads, msgs): (Vec<_>, Vec<_>) = received.into_iter().unzip();
        assert_eq!(msgs, sent, "all of them, in order");
        let here = std::thread::current().id();
        assert_eq!(threads[0], here, "the first frame is handed over where the link was accepted");
        let moved = threads.iter().position(|t| *t == worker_thread).expect("the link moved to the worker");
        assert!(threads[..moved].iter().all(|t| *t == here) && threads[moved..].iter().all(|t| *t == worker_thread));
        assert!(b.bus.inbox_sender().unhandled() == 0, "nothing went through the inbox");

        let frame = |m: &BusMessage| match m {
            BusMessage::ToDevice { item: DeviceItem::Ack { frame_id }, .. } => *frame_id,
            other => panic!("not an ack: {other:?}"),
        };
        let sender = {
            let (a, to_b) = (a.clone(), b.node_id().clone());
            tokio::spawn(async move {
                for frame_id in 1000..1400 {
                    let m = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id } };
                    a.publish(&to_b, m).expect("publish");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // What a sends after b's goodbye goes over pub/sub until b unsubscribes: into b's
        // inbox, as from any other sender.
        let (_, mut delivered) = tokio::join!(b.leave(), async {
            let mut received = Vec::new();
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), b_inbox.recv()).await {
                received.push(frame(&m));
            }
            received
        });
        sender.await.expect("sender");
        a.flush(Duration::from_secs(2)).await;
        while let Ok((_, m)) = got.try_recv() {
            delivered.push(frame(&m));
        }
        let mut returned = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), a_inbox.recv()).await {
            match m {
                BusMessage::Returned(m) => returned.push(frame(&m)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(!delivered.is_empty() && !returned.is_empty(), "b left while a was sending");
        let mut all: Vec<u64> = delivered.iter().chain(&returned).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1000..1400).collect::<Vec<_>>(), "each one reached b or came back, once");
        assert_eq!(b.open_links(), 0);
        a.leave().await;
        let _ = end_worker.send(());
        worker.join().expect("worker thread");
    }

    /// A node whose link key differs from the cluster's gets no link: its messages go
    /// over pub/sub and still arrive.
    #[tokio::test]
    async fn without_a_link_messages_go_over_pub_sub() {
        let a = RedisCluster::connect(node("a"), linked(b"another key, also of thirty-two bytes"))
            .await
            .expect("Redis must run for this test");
        let b = RedisCluster::connect(node("b"), linked(LINK_KEY)).await.expect("connect");
        let mut b_inbox = b.take_inbox().expect("inbox");
        until_healthy(&[&a, &b]).await;
        let sent = acks(20);
        for m in &sent {
            a.publish(b.node_id(), m.clone()).expect("publish");
        }
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match tokio::time::timeout(Duration::from_secs(3), b_inbox.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        assert_eq!(got, sent);
        assert_eq!(b.open_links(), 0, "the handshake failed");
        a.leave().await;
        b.leave().await;
    }

    /// `flush` waits for a message the router took from the inbox but has not finished
    /// with; it returns once the router asks for the next one.
    #[tokio::test]
    async fn flush_waits_for_the_message_being_handled() {
        let a = RedisCluster::connect(node("a"), opts()).await.expect("Redis must run for this test");
        let mut inbox = a.take_inbox().expect("inbox");
        a.publish(
            &node("ghost"),
            BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: 1 } },
        )
        .expect("publish");
        let returned = tokio::time::timeout(Duration::from_secs(2), inbox.recv()).await.expect("returned");
        assert!(matches!(returned, Some(BusMessage::Returned(_))));
        let started = tokio::time::Instant::now();
        a.flush(Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(300), "flush returned while a message was being handled");
        let _ = tokio::time::timeout(Duration::from_millis(10), inbox.recv()).await;
        let started = tokio::time::Instant::now();
        a.flush(Duration::from_secs(2)).await;
        assert!(started.elapsed() < Duration::from_secs(1), "handled: flush returns");
        a.leave().await;
    }

    /// A worker publishes on a queue and a Redis connection of its own: its messages reach
    /// the other node, in order, while the node's main thread is not running at all. What
    /// a worker's queue still holds when its runtime stops leaves through the node's own
    /// queue, once that runs.
    #[test]
    fn a_worker_publishes_on_its_own_connection_and_hands_over_what_it_holds_when_it_stops() {
        let runtime = |threads: usize| {
            let mut b = if threads == 0 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(threads);
                b
            };
            b.enable_all().build().expect("runtime")
        };
        // Node b runs on threads of its own, its router forwarding what arrives.
        let rt_b = runtime(1);
        let b = rt_b.block_on(RedisCluster::connect(node("b"), opts())).expect("Redis must run for this test");
        let (got_tx, got) = std::sync::mpsc::channel();
        let mut b_inbox = b.take_inbox().expect("inbox");
        rt_b.spawn(async move {
            while let Some(m) = b_inbox.recv().await {
                let _ = got_tx.send(m);
            }
        });
        // Node a's main thread is this one: its runtime runs only inside `block_on`.
        let rt_a = runtime(0);
        let a = rt_a.block_on(RedisCluster::connect(node("a"), opts())).expect("connect");
        for _ in 0..50 {
            if b.healthy() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let msg = |frame_id| BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id } };
        let to_b = b.node_id().clone();

        let sent: Vec<BusMessage> = (0..20).map(msg).collect();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let worker = {
            let (a, to_b, sent) = (a.clone(), to_b.clone(), sent.clone());
            std::thread::spawn(move || {
                runtime(0).block_on(async move {
                    for m in sent {
                        a.publish(&to_b, m).expect("publish");
                    }
                    let _ = done.await;
                })
            })
        };
        let arrived: Vec<BusMessage> = (0..20).map_while(|_| got.recv_timeout(Duration::from_secs(5)).ok()).collect();
        assert_eq!(arrived, sent, "a worker's messages arrive, in order, without node a's main thread");
        let _ = done_tx.send(());
        worker.join().expect("worker");

        // A worker whose runtime stops before its queue's task ever ran.
        let held: Vec<BusMessage> = (20..40).map(msg).collect();
        {
            let (a, to_b, held) = (a.clone(), to_b.clone(), held.clone());
            std::thread::spawn(move || {
                let rt = runtime(0);
                rt.block_on(async {
                    for m in held {
                        a.publish(&to_b, m).expect("publish");
                    }
                });
                drop(rt);
            })
            .join()
            .expect("worker");
        }
        assert!(got.recv_timeout(Duration::from_millis(300)).is_err(), "held by node a's own queue");
        let arrived = rt_a.block_on(async {
            let mut arrived = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while arrived.len() < held.len() && tokio::time::Instant::now() < deadline {
                match got.try_recv() {
                    Ok(m) => arrived.push(m),
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            arrived
        });
        assert_eq!(arrived, held, "handed over in order and published by node a's own queue");
        rt_a.block_on(a.leave());
        rt_b.block_on(b.leave());
    }
}
