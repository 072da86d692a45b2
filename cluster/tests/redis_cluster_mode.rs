//! The Redis backend on a real Redis Cluster started by the test: ownership across shards
//! and delivery over sharded pub/sub on three primaries, and, with a replica per primary,
//! the bus and the ownership records working again after a primary dies and its replica
//! takes over, without restarting the nodes.

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

fn start_redis_cluster(replicas: usize) -> RedisClusterProcs {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3 * (1 + replicas)).map(|_| reserve_port_with(10_000)).collect();
    let mut children = Vec::new();
    for p in &ports {
        let child = Command::new("redis-server")
            .args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            // A primary is declared failed (and its replica promoted) after 1 s.
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-config-file", &format!("nodes-{p}.conf"), "--save", "", "--appendonly", "no"])
            .args(["--logfile", &format!("redis-{p}.log")])
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
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .expect("redis-cli must be installed");
    assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
    let procs = RedisClusterProcs { children, ports, _dir: dir };
    procs.wait_ok(procs.ports[0], Duration::from_secs(10));
    if replicas > 0 {
        // Every replica attached and in sync before the test starts.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while procs.cli(procs.ports[0], &["cluster", "nodes"]).lines().filter(|l| l.contains("slave")).count()
            < 3 * replicas
            || procs.ports.iter().any(|p| {
                let info = procs.cli(*p, &["info", "replication"]);
                info.contains("role:slave") && !info.contains("master_link_status:up")
            })
        {
            assert!(std::time::Instant::now() < deadline, "replicas attached");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    procs
}

impl RedisClusterProcs {
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
        if !out.status.success() || out.stdout.is_empty() {
            let log = std::fs::read_to_string(self._dir.path().join(format!("redis-{port}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "redis-cli -p {port} {args:?}: {} {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command on whichever primary serves its key (`redis-cli -c` follows redirects).
    fn cli_cluster(&self, args: &[&str]) -> String {
        let port = self.ports[0].to_string();
        let out = Command::new("redis-cli").args(["-c", "-p", &port]).args(args).output().expect("redis-cli");
        assert!(out.status.success(), "redis-cli -c {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `port` reports every slot served.
    fn wait_ok(&self, port: u16, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while !self.cli(port, &["cluster", "info"]).contains("cluster_state:ok") {
            assert!(std::time::Instant::now() < deadline, "cluster_state:ok on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the live primary serving `key`'s slot, as the node on `via` sees it.
    fn primary_of(&self, key: &str, via: u16) -> Option<u16> {
        let slot: u16 = self.cli(via, &["cluster", "keyslot", key]).trim().parse().expect("slot");
        for line in self.cli(via, &["cluster", "nodes"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // A failed primary keeps listing its slots until a replica takes them.
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            for range in &f[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    return f[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok());
                }
            }
        }
        None
    }

    fn kill(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|p| *p == port) {
            let _ = self.children[i].kill();
            let _ = self.children[i].wait();
        }
    }
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
    let procs = start_redis_cluster(0);
    // `a` checks its session keys every second (a third of their time to live).
    let a_opts = RedisOptions { session_key_ttl: Duration::from_secs(3), ..opts(&procs) };
    let a = RedisCluster::connect(NodeId::new("a"), a_opts).await.expect("connect a");
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

    // The ownership check, one key per script run on a cluster: of `a`'s keys on every
    // shard, one taken over behind its back is closed, one Redis lost is set again.
    let mine: Vec<SessionKey> = (0..30).map(|_| SessionKey::Device(DeviceId::random())).collect();
    for k in &mine {
        assert_eq!(a.claim(*k).await.expect("claim"), None);
    }
    let own_key = |k: &SessionKey| match k {
        SessionKey::Device(id) => format!("noc:own:d:{id}"),
        SessionKey::Ves(id) => format!("noc:own:v:{id}"),
    };
    let (taken, lost) = (mine[7], mine[19]);
    procs.cli_cluster(&["SET", &own_key(&taken), "some-other-node", "EX", "30"]);
    procs.cli_cluster(&["DEL", &own_key(&lost)]);
    // Claims younger than 1 s are not judged; the check after that one finds the change.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a_inbox.recv().await {
                Some(BusMessage::Close { key, code }) => break (key, code),
                Some(_) => continue,
                None => panic!("inbox closed"),
            }
        }
    })
    .await
    .expect("the ownership check closes the taken-over session");
    assert_eq!(closed, (taken, noc_protocol::CloseCode::Replaced));
    let ttl_ms: i64 = procs.cli_cluster(&["PTTL", &own_key(&lost)]).trim().parse().expect("pttl");
    assert!(ttl_ms > 0 && ttl_ms <= 3000, "a lost key is set again with its time to live ({ttl_ms} ms)");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for k in mine.iter().filter(|k| **k != taken) {
        assert_eq!(a.lookup(*k).await.expect("lookup"), Some(NodeId::new("a")), "kept");
    }
    assert_eq!(procs.cli_cluster(&["GET", &own_key(&taken)]).trim(), "some-other-node");
    // Leaving deletes a's keys on every shard, one key per run, and leaves the other
    // node's.
    a.leave().await;
    for k in mine.iter().filter(|k| **k != taken) {
        assert_eq!(procs.cli_cluster(&["EXISTS", &own_key(k)]).trim(), "0", "released when leaving");
    }
    assert_eq!(procs.cli_cluster(&["GET", &own_key(&taken)]).trim(), "some-other-node");
}

/// Publishes a fresh message from `a` to `b` until one arrives (during a failover
/// messages may be lost); returns how long it took.
async fn deliver(a: &RedisCluster, b: &NodeId, inbox: &mut noc_cluster::Inbox, timeout: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut frame_id = 0u64;
    loop {
        assert!(started.elapsed() < timeout, "no delivery within {timeout:?}");
        frame_id += 1;
        let msg = BusMessage::ToDevice { device_id: DeviceId::random(), item: DeviceItem::Ack { frame_id } };
        let _ = a.publish(b, msg.clone());
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(got)) =
            tokio::time::timeout(until.saturating_duration_since(std::time::Instant::now()), inbox.recv()).await
        {
            if got == msg {
                return started.elapsed();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_fails_over_to_its_replica_and_the_bus_works_again() {
    let mut procs = start_redis_cluster(1);
    let opts = RedisOptions { command_timeout: Duration::from_millis(500), ..opts(&procs) };
    let a = RedisCluster::connect(NodeId::new("a"), opts.clone()).await.expect("connect a");
    let b = RedisCluster::connect(NodeId::new("b"), opts).await.expect("connect b");
    let mut b_inbox = b.take_inbox().expect("inbox");
    deliver(&a, b.node_id(), &mut b_inbox, Duration::from_secs(10)).await;
    let keys: Vec<SessionKey> = (0..20).map(|_| SessionKey::Device(DeviceId::random())).collect();
    for k in &keys {
        assert_eq!(b.claim(*k).await.expect("claim"), None);
    }

    // The primary holding b's inbox dies; its replica takes the slots over.
    let victim = procs.primary_of("noc:inbox:{b}", procs.ports[0]).expect("a primary serves b's inbox");
    let survivor = *procs.ports.iter().find(|p| **p != victim).expect("another node");
    // Replication is asynchronous: kill only once the replica has everything written.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = procs.cli(victim, &["info", "replication"]);
        let field =
            |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
        let primary = field("master_repl_offset:");
        let replica = info
            .lines()
            .find(|l| l.starts_with("slave0:"))
            .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")))
            .and_then(|v| v.parse::<u64>().ok());
        if primary.is_some() && primary == replica {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the replica catches up: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    procs.kill(victim);
    let killed = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while procs.primary_of("noc:inbox:{b}", survivor).is_none_or(|p| p == victim) {
        assert!(std::time::Instant::now() < deadline, "a replica takes the slots over");
        std::thread::sleep(Duration::from_millis(100));
    }
    procs.wait_ok(survivor, Duration::from_secs(30));
    let promoted = killed.elapsed();

    // Without restarting anything: the bus delivers to b, ownership reads and writes work.
    let recovered = deliver(&a, b.node_id(), &mut b_inbox, Duration::from_secs(30)).await;
    let other = SessionKey::Device(DeviceId::random());
    assert_eq!(a.claim(other).await.expect("claim after the failover"), None);
    assert_eq!(b.lookup(other).await.expect("lookup"), Some(NodeId::new("a")));
    // Commands to the failed shard's slots may time out until the client has the new slot
    // map: the ownership records are readable again once every key answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let kept = loop {
        let mut answers = Vec::new();
        for k in &keys {
            answers.push(a.lookup(*k).await);
        }
        if answers.iter().all(Result::is_ok) {
            break answers.into_iter().filter(|r| matches!(r, Ok(Some(n)) if *n == NodeId::new("b"))).count();
        }
        assert!(std::time::Instant::now() < deadline, "ownership lookups answer again: {answers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let readable = killed.elapsed();
    eprintln!(
        "redis cluster failover: promoted after {promoted:?}; bus delivering {recovered:?} later; \
         every lookup answering {readable:?} after the kill; {kept}/20 claims kept"
    );
    assert_eq!(kept, keys.len(), "claims replicated before the primary died survive it");
    a.leave().await;
    b.leave().await;
}
