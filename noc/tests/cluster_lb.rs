//! Three `noc` processes behind HAProxy on loopback, with the machine's PostgreSQL (through
//! a cuttable proxy) and a private Redis: the failure scenarios of a real deployment.
//! Devices and the VES reconnect through the load balancer like real clients, honouring
//! the relay's reconnect hints; every check is about what the endpoints observe.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use noc_protocol::device::Frame;
use noc_protocol::rts::{Command, DeviceActivationResponse, FrameStatus};
use noc_protocol::{CloseCode, DeviceId};
use noc_test_support::lb::LbCluster;
use noc_test_support::scenario::user_with_device;
use noc_test_support::{FakeVes, Recv};

const BIN: &str = env!("CARGO_BIN_EXE_noc");
const DEVICES: usize = 6;

/// What the endpoints saw, shared by the simulated peers.
#[derive(Default)]
struct Ledger {
    /// (device, frame) the VES got an end-to-end ack for.
    acked: Mutex<HashSet<(DeviceId, u64)>>,
    /// (device, frame) the devices received.
    received: Mutex<HashSet<(DeviceId, u64)>>,
    /// (device, frame) answered undeliverable (at once or later).
    undeliverable: Mutex<HashSet<(DeviceId, u64)>>,
    sent: AtomicU64,
    /// CLOSE codes and hints the devices got.
    closes: Mutex<Vec<(CloseCode, u32)>>,
    reconnects: AtomicU64,
}

impl Ledger {
    fn acked_but_not_received(&self) -> Vec<(DeviceId, u64)> {
        let acked = self.acked.lock().expect("lock");
        let received = self.received.lock().expect("lock");
        acked.difference(&received).copied().collect()
    }
}

/// A device that stays connected through the load balancer: reconnects after a drop,
/// waits the hinted delay after a CLOSE, acknowledges every frame it receives.
fn spawn_device(cluster: Arc<LbCluster>, act: DeviceActivationResponse, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            if !first {
                ledger.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let Ok(mut device) = cluster.device_connection().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            match device.login(act.device_id, &act.device_credential).await {
                Recv::Frame(Frame::AuthOk { .. }) => {}
                Recv::Frame(Frame::Close { code, reconnect_after_ms, .. }) => {
                    ledger.closes.lock().expect("lock").push((code, reconnect_after_ms));
                    tokio::time::sleep(Duration::from_millis(reconnect_after_ms.max(100) as u64)).await;
                    continue;
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match device.recv(Duration::from_millis(500)).await {
                    Recv::Frame(Frame::Forward { frame_id, .. }) => {
                        ledger.received.lock().expect("lock").insert((act.device_id, frame_id));
                        if device.send(Frame::Ack { frame_id }).await.is_err() {
                            break;
                        }
                    }
                    Recv::Frame(Frame::Heartbeat) => {
                        let _ = device.send(Frame::Heartbeat).await;
                    }
                    Recv::Frame(Frame::Close { code, reconnect_after_ms, .. }) => {
                        ledger.closes.lock().expect("lock").push((code, reconnect_after_ms));
                        tokio::time::sleep(Duration::from_millis(reconnect_after_ms as u64)).await;
                        break;
                    }
                    Recv::Frame(_) | Recv::Timeout => {
                        let _ = device.send(Frame::Heartbeat).await;
                    }
                    Recv::Closed | Recv::Error(_) => break,
                }
            }
        }
    });
}

/// The VES: keeps a command channel open (reopening it through the load balancer when its
/// node goes away), sends one frame per device every `period`, records acks.
fn spawn_ves(
    cluster: Arc<LbCluster>,
    mut ves: FakeVes,
    devices: Vec<DeviceId>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    period: Duration,
) {
    tokio::spawn(async move {
        let mut next_id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut channel) = ves.open().await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let mut last_send = Instant::now() - period;
            'session: loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if last_send.elapsed() >= period {
                    last_send = Instant::now();
                    for d in &devices {
                        next_id += 1;
                        ledger.sent.fetch_add(1, Ordering::Relaxed);
                        match tokio::time::timeout(Duration::from_secs(3), ves.try_send_frame(*d, next_id, b"x")).await
                        {
                            Ok(Ok(resp)) if resp.results[0].status == FrameStatus::Undeliverable => {
                                ledger.undeliverable.lock().expect("lock").insert((*d, next_id));
                            }
                            Ok(Ok(_)) => {}
                            _ => {
                                // The session is gone (its node died): open a new one.
                                ledger.undeliverable.lock().expect("lock").insert((*d, next_id));
                                break 'session;
                            }
                        }
                    }
                }
                match tokio::time::timeout(Duration::from_millis(20), channel.next(Duration::from_millis(20))).await {
                    Ok(Some(Command::Ack { device_id, frame_id })) => {
                        ledger.acked.lock().expect("lock").insert((device_id, frame_id));
                    }
                    Ok(Some(Command::Undeliverable { device_id, frame_id, .. })) => {
                        ledger.undeliverable.lock().expect("lock").insert((device_id, frame_id));
                    }
                    Ok(Some(Command::Close { .. })) => break 'session,
                    Ok(Some(_)) | Ok(None) | Err(_) => {}
                }
                if channel_dead(&mut channel) {
                    break 'session;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = &cluster;
    });
}

fn channel_dead(channel: &mut noc_test_support::CommandChannel) -> bool {
    channel.is_finished()
}

struct Deployment {
    cluster: Arc<LbCluster>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    devices: Vec<DeviceActivationResponse>,
}

async fn deploy() -> Deployment {
    let cluster = Arc::new(LbCluster::start(BIN.as_ref(), 3).await);
    let out =
        cluster.admin(&["license", "create", "--name", "acme", "--password", "acme-license-pw", "--max-users", "50"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ves = cluster.ves();
    ves.license("acme", "acme-license-pw").await.expect("license through the LB");
    let _setup_channel = ves.open().await.expect("command channel through the LB");
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        devices.push(user_with_device(&ves, &format!("u{i}@example.com"), &format!("+1555040{i}")).await);
    }
    drop(_setup_channel);
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    for act in &devices {
        spawn_device(cluster.clone(), act.clone(), ledger.clone(), stop.clone());
    }
    let mut traffic_ves = cluster.ves();
    traffic_ves.guid = ves.guid.clone();
    spawn_ves(
        cluster.clone(),
        traffic_ves,
        devices.iter().map(|d| d.device_id).collect(),
        ledger.clone(),
        stop.clone(),
        Duration::from_millis(100),
    );
    let d = Deployment { cluster, ledger, stop, devices };
    d.wait_all_connected(Duration::from_secs(20)).await;
    d
}

impl Deployment {
    fn connected(&self) -> f64 {
        self.cluster.device_sessions().into_iter().filter(|v| v.is_finite()).sum()
    }

    async fn wait_all_connected(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.connected() != DEVICES as f64 {
            assert!(Instant::now() < deadline, "devices connected: {:?}", self.cluster.device_sessions());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Frames acked since `mark` (a count of acks): traffic flows.
    async fn wait_acks_beyond(&self, mark: usize, more: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.ledger.acked.lock().expect("lock").len() < mark + more {
            assert!(
                Instant::now() < deadline,
                "traffic stalled: {} acks",
                self.ledger.acked.lock().expect("lock").len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn acks(&self) -> usize {
        self.ledger.acked.lock().expect("lock").len()
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let lost = self.ledger.acked_but_not_received();
        assert!(lost.is_empty(), "frames acknowledged but never received: {lost:?}");
        let _ = &self.devices;
        // Peers that still hold the cluster let its processes die with the last handle.
        if let Ok(c) = Arc::try_unwrap(self.cluster) {
            c.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_a_node_under_traffic() {
    let d = deploy().await;
    let spread = d.cluster.device_sessions();
    assert!(spread.iter().filter(|v| **v > 0.0).count() >= 2, "devices spread over nodes: {spread:?}");
    d.wait_acks_beyond(0, 30, Duration::from_secs(15)).await;

    // kill -9 the node with the most devices.
    let victim = spread.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    let cluster = d.cluster.clone();
    let killed_at = Instant::now();
    cluster.nodes[victim].kill9();

    // Its sessions come back on the others, through the load balancer.
    d.wait_all_connected(Duration::from_secs(20)).await;
    let recovered_in = killed_at.elapsed();
    let mark = d.acks();
    d.wait_acks_beyond(mark, 30, Duration::from_secs(15)).await;

    // After the dead node's lease expired, nothing is routed to it any more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let returned = |c: &LbCluster| -> f64 {
        c.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| n.metric("noc_bus_messages_returned_total", &[]))
            .sum()
    };
    let before = returned(&cluster);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(returned(&cluster), before, "messages still routed to the dead node");
    eprintln!(
        "kill -9: recovered in {recovered_in:?}; sent {} acked {} undeliverable {} reconnects {}",
        d.ledger.sent.load(Ordering::Relaxed),
        d.acks(),
        d.ledger.undeliverable.lock().expect("lock").len(),
        d.ledger.reconnects.load(Ordering::Relaxed)
    );
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_every_client_elsewhere() {
    let d = deploy().await;
    d.wait_acks_beyond(0, 30, Duration::from_secs(15)).await;
    let spread = d.cluster.device_sessions();
    let victim = spread.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    let on_victim = spread[victim];
    assert!(on_victim > 0.0);
    let started = Instant::now();
    assert!(d.cluster.nodes[victim].sigterm(Duration::from_secs(10)), "node exits within its grace period");
    let exited_in = started.elapsed();
    // Every client of the drained node was told to reconnect, with hints inside the window.
    let drains = || -> Vec<(CloseCode, u32)> {
        d.ledger.closes.lock().expect("lock").iter().filter(|(c, _)| *c == CloseCode::ServerDraining).cloned().collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while (drains().len() as f64) < on_victim {
        assert!(Instant::now() < deadline, "every drained device got CLOSE server_draining: {:?}", drains());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drains = drains();
    assert!(drains.iter().all(|(_, hint)| *hint <= 2_000), "hints spread over the 2 s drain window: {drains:?}");
    d.wait_all_connected(Duration::from_secs(20)).await;
    let mark = d.acks();
    d.wait_acks_beyond(mark, 30, Duration::from_secs(15)).await;
    eprintln!("drain: node exited in {exited_in:?}; hints {:?}", drains.iter().map(|d| d.1).collect::<Vec<_>>());
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_under_traffic_recovers_without_restarting_nodes() {
    let d = deploy().await;
    d.wait_acks_beyond(0, 30, Duration::from_secs(15)).await;
    d.cluster.redis.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.cluster.nodes.iter().any(|n| n.ready()) {
        assert!(Instant::now() < deadline, "readiness must turn false without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.cluster.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.cluster.nodes.iter().all(|n| n.ready()) {
        if Instant::now() > deadline {
            for n in &d.cluster.nodes {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("{}: {}\n{}", n.name, n.readiness(), tail.join("\n"));
            }
            panic!("readiness recovers");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Sessions re-registered: traffic to every device flows again.
    let mark = d.acks();
    d.wait_acks_beyond(mark, 60, Duration::from_secs(20)).await;
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_keeps_sessions_relaying_and_logins_recover() {
    let d = deploy().await;
    d.wait_acks_beyond(0, 30, Duration::from_secs(15)).await;
    d.cluster.postgres.cut();
    let mut probe = d.cluster.ves();
    let err = probe.license("acme", "acme-license-pw").await.expect_err("store down");
    assert_eq!((err.status, err.code.as_str()), (503, "unavailable"));
    let mark = d.acks();
    d.wait_acks_beyond(mark, 30, Duration::from_secs(15)).await; // live sessions keep relaying
    d.cluster.postgres.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if probe.license("acme", "acme-license-pw").await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "logins recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.finish().await;
}
