//! The Redis backend behind Redis Sentinel: a primary, a replica and a sentinel on
//! loopback. Nodes find the primary through the sentinel, and after the primary is killed
//! and the sentinel promotes the replica, commands and the bus work again without
//! restarting the nodes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use noc_cluster::{BusMessage, Cluster, DeviceItem, NodeId, RedisCluster, RedisMode, RedisOptions, SessionKey};
use noc_protocol::DeviceId;
use noc_test_support::reserve_port;

/// Every process of the group; killed when the test ends, however it ends.
struct Group {
    dir: tempfile::TempDir,
    primary: u16,
    replica: u16,
    sentinel: u16,
    children: Vec<(u16, Child)>,
}

impl Group {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (primary, replica, sentinel) = (reserve_port(), reserve_port(), reserve_port());
        let mut g = Group { dir, primary, replica, sentinel, children: Vec::new() };
        g.spawn(primary, &["--port", &primary.to_string()]);
        g.spawn(replica, &["--port", &replica.to_string(), "--replicaof", "127.0.0.1", &primary.to_string()]);
        let conf = g.dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor noc 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds noc 500\n\
                 sentinel failover-timeout noc 3000\n",
                dir = g.dir.path().display()
            ),
        )
        .expect("sentinel config");
        g.spawn(sentinel, &[conf.to_str().expect("path"), "--sentinel"]);
        g
    }

    fn spawn(&mut self, port: u16, args: &[&str]) {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.children.push((port, child));
    }

    fn kill(&mut self, port: u16) {
        if let Some(i) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli must be installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The primary's port as the sentinel names it.
    fn primary_port(&self) -> Option<u16> {
        self.cli(self.sentinel, &["sentinel", "get-master-addr-by-name", "noc"]).lines().nth(1)?.trim().parse().ok()
    }

    fn wait(&self, what: &str, timeout: Duration, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn opts(g: &Group) -> RedisOptions {
    RedisOptions {
        url: format!("redis://127.0.0.1:{}", g.sentinel),
        mode: RedisMode::Sentinel,
        sentinel_master: "noc".into(),
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
    let mut g = Group::start();
    g.wait("the sentinel knows the primary and the replica is in sync", Duration::from_secs(15), || {
        g.primary_port() == Some(g.primary)
            && g.cli(g.replica, &["info", "replication"]).contains("master_link_status:up")
            && g.cli(g.sentinel, &["sentinel", "replicas", "noc"]).contains(&g.replica.to_string())
    });
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
    let primary = g.primary;
    g.kill(primary);
    let killed = Instant::now();
    g.wait("the sentinel promotes the replica", Duration::from_secs(20), || g.primary_port() == Some(g.replica));
    let promoted = killed.elapsed();

    // Without restarting anything: ownership reads and writes and the bus work again.
    let recovered = deliver(&a, b.node_id(), &mut b_inbox, Duration::from_secs(20)).await;
    let other = SessionKey::Ves(noc_protocol::VesId::random());
    assert_eq!(a.claim(other).await.expect("claim on the new primary"), None);
    assert_eq!(b.lookup(other).await.expect("lookup on the new primary"), Some(NodeId::new("a")));
    assert_eq!(a.lookup(key).await.expect("lookup"), Some(NodeId::new("b")), "replicated before the failover");
    assert!(a.healthy() && b.healthy());
    eprintln!("sentinel failover: promoted after {promoted:?}; bus delivering again {recovered:?} later");
    a.leave().await;
    b.leave().await;
}
