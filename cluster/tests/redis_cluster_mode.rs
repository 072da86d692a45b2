//! The Redis backend on a real Redis Cluster (three primaries started by the test):
//! ownership across shards and delivery over sharded pub/sub.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use noc_cluster::{BusMessage, Cluster, DeviceItem, NodeId, RedisCluster, RedisMode, RedisOptions, SessionKey};
use noc_protocol::DeviceId;
use noc_test_support::reserve_port_with;

struct RedisClusterProcs {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for RedisClusterProcs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_redis_cluster() -> RedisClusterProcs {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| reserve_port_with(10_000)).collect();
    let mut children = Vec::new();
    for p in &ports {
        let child = Command::new("redis-server")
            .args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{p}.conf"), "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        children.push(child);
    }
    std::thread::sleep(Duration::from_millis(500));
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli must be installed");
    assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
    // Wait until every slot is served.
    for _ in 0..50 {
        let info = Command::new("redis-cli").args(["-p", &ports[0].to_string(), "cluster", "info"]).output();
        if info.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    RedisClusterProcs { children, ports, _dir: dir }
}

fn opts(procs: &RedisClusterProcs) -> RedisOptions {
    RedisOptions {
        url: procs.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(","),
        mode: RedisMode::Cluster,
        node_lease: Duration::from_secs(2),
        membership_interval: Duration::from_millis(100),
        ..RedisOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_and_sharded_delivery_on_redis_cluster() {
    let procs = start_redis_cluster();
    let a = RedisCluster::connect(NodeId::new("a"), opts(&procs)).await.expect("connect a");
    let b = RedisCluster::connect(NodeId::new("b"), opts(&procs)).await.expect("connect b");
    let mut inbox = b.take_inbox().expect("inbox");
    for _ in 0..100 {
        if a.healthy() && b.healthy() && a.live_nodes().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.healthy() && b.healthy(), "both subscribed");

    // Session keys land on different shards; ownership and takeover still work.
    let keys: Vec<SessionKey> = (0..20).map(|_| SessionKey::Device(DeviceId::random())).collect();
    for k in &keys {
        assert_eq!(b.claim(*k).await.expect("claim"), None);
    }
    for k in &keys {
        assert_eq!(a.lookup(*k).await.expect("lookup"), Some(NodeId::new("b")));
    }
    assert_eq!(a.claim(keys[0]).await.expect("takeover"), Some(NodeId::new("b")));

    // Messages to b arrive in order over sharded pub/sub.
    let msgs: Vec<BusMessage> = (0..50)
        .map(|i| BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: i } })
        .collect();
    for m in &msgs {
        a.publish(&NodeId::new("b"), m.clone()).expect("publish");
    }
    for m in &msgs {
        let got = tokio::time::timeout(Duration::from_secs(3), inbox.recv()).await.expect("delivered");
        assert_eq!(got.as_ref(), Some(m));
    }

    // A message for a node nobody subscribes for comes back.
    let mut a_inbox = a.take_inbox().expect("inbox");
    let ghost = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: 1 } };
    a.publish(&NodeId::new("ghost"), ghost.clone()).expect("publish");
    let back = tokio::time::timeout(Duration::from_secs(3), a_inbox.recv()).await.expect("returned");
    assert_eq!(back, Some(BusMessage::Returned(Box::new(ghost))));

    // A node that left unsubscribed: what is sent to it comes back as well.
    b.leave().await;
    let late = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id: 2 } };
    a.publish(&NodeId::new("b"), late.clone()).expect("publish");
    let back = tokio::time::timeout(Duration::from_secs(3), a_inbox.recv()).await.expect("returned");
    assert_eq!(back, Some(BusMessage::Returned(Box::new(late))));
    a.leave().await;
}
