//! The Redis backend behind Redis Sentinel: a primary, a replica and a sentinel on
//! loopback. Nodes find the primary through the sentinel, and after the primary is killed
//! and the sentinel promotes the replica, commands and the bus work again without
//! restarting the nodes.

use std::time::{Duration, Instant};

use noc_cluster::{BusMessage, Cluster, DeviceItem, NodeId, RedisCluster, RedisMode, RedisOptions, SessionKey};
use noc_protocol::DeviceId;
use noc_test_support::redis::SentinelGroup;

fn opts(g: &SentinelGroup) -> RedisOptions {
    RedisOptions {
        url: format!("redis://127.0.0.1:{}", g.sentinel),
        mode: RedisMode::Sentinel,
        sentinel_master: SentinelGroup::MASTER.into(),
        node_lease: Duration::from_secs(3),
        membership_interval: Duration::from_millis(100),
        command_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    }
}

/// Publishes a fresh message from `a` to `b` until one arrives (published messages may
/// come back or be lost while the primary is changing); returns how long it took.
async fn deliver(a: &RedisCluster, b: &NodeId, inbox: &mut noc_cluster::Inbox, timeout: Duration) -> Duration {
    let started = Instant::now();
    let mut frame_id = 0u64;
    loop {
        assert!(started.elapsed() < timeout, "no delivery within {timeout:?}");
        frame_id += 1;
        let msg = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id } };
        let _ = a.publish(b, msg.clone());
        let until = Instant::now() + Duration::from_millis(300);
        while let Ok(Some(got)) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), inbox.recv()).await
        {
            if got == msg {
                return started.elapsed();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_the_sentinel_to_the_promoted_replica() {
    let g = SentinelGroup::start();
    let a = RedisCluster::connect(NodeId::new("a"), opts(&g)).await.expect("connect a through the sentinel");
    let b = RedisCluster::connect(NodeId::new("b"), opts(&g)).await.expect("connect b");
    let mut b_inbox = b.take_inbox().expect("inbox");
    let key = SessionKey::Device(DeviceId::random());
    assert_eq!(b.claim(key).await.expect("claim"), None);
    assert_eq!(a.lookup(key).await.expect("lookup"), Some(NodeId::new("b")));
    deliver(&a, b.node_id(), &mut b_inbox, Duration::from_secs(5)).await;

    // The primary dies; the sentinel promotes the replica.
    g.wait("the replica has the claim", Duration::from_secs(5), || {
        !g.cli(g.replica, &["keys", "noc:own:*"]).trim().is_empty()
    });
    let promoted = g.fail_over(Duration::from_secs(20));

    // Without restarting anything: ownership reads and writes and the bus work again.
    let recovered = deliver(&a, b.node_id(), &mut b_inbox, Duration::from_secs(20)).await;
    let other = SessionKey::Ves(noc_protocol::VesId::random());
    assert_eq!(a.claim(other).await.expect("claim on the new primary"), None);
    assert_eq!(b.lookup(other).await.expect("lookup on the new primary"), Some(NodeId::new("a")));
    assert_eq!(a.lookup(key).await.expect("lookup"), Some(NodeId::new("b")), "replicated before the failover");
    // Health is what each node's own loops last saw (the membership refresh, its bus
    // subscription): after the failover they catch up on their own schedule, a moment
    // after commands work again (a's subscription is not needed for a to publish).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.healthy() && b.healthy()) {
        assert!(Instant::now() < deadline, "a healthy {}, b healthy {}", a.healthy(), b.healthy());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("sentinel failover: promoted after {promoted:?}; bus delivering again {recovered:?} later");
    a.leave().await;
    b.leave().await;
}
