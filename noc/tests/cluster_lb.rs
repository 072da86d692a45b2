//! Three `noc` processes behind HAProxy on loopback, with the machine's PostgreSQL (through
//! a cuttable proxy: the server is shared with other tests, so it is taken away from the
//! nodes rather than stopped) and a private Redis: the failure scenarios of a real
//! deployment. Devices and the VES reconnect through the load balancer like real clients,
//! honouring the relay's reconnect hints, and send frames both ways; every check is about
//! what the endpoints observe.
//!
//! Every frame a sender hands to the relay is accounted for at the end: acknowledged by the
//! other endpoint, answered undeliverable, or lost (neither, after a quiet period). Relay
//! pub/sub is at most once and a killed process takes its queues with it, so a scenario
//! may only lose frames that were in flight while its failure happened; outside that
//! window, and in the scenarios without a crash, nothing may be lost. Receivers also
//! check that no frame arrives twice and that each (VES, device) pair stays in order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use noc_protocol::device::{ForwardKind, Frame};
use noc_protocol::rts::{Command, DeviceActivationResponse, FrameStatus};
use noc_protocol::{CloseCode, DeviceId};
use noc_test_support::lb::LbCluster;
use noc_test_support::scenario::user_with_device;
use noc_test_support::{FakeVes, Recv};

const BIN: &str = env!("CARGO_BIN_EXE_noc");
const DEVICES: usize = 6;
/// How often the VES sends one frame to every device, and every device one frame up.
const DOWN_PERIOD: Duration = Duration::from_millis(100);
const UP_PERIOD: Duration = Duration::from_millis(200);

type FrameKey = (DeviceId, u64);

/// One direction of traffic, as both of its endpoints saw it.
#[derive(Default)]
struct Flow {
    /// Frames the relay took from the sender (accepted or written), with when.
    sent: Mutex<HashMap<FrameKey, Instant>>,
    acked: Mutex<HashSet<FrameKey>>,
    undeliverable: Mutex<HashSet<FrameKey>>,
    /// Requests that failed before the relay answered: the sender knows, and would retry.
    failed: AtomicU64,
    received: Mutex<HashSet<FrameKey>>,
    last_received: Mutex<HashMap<DeviceId, u64>>,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
}

impl Flow {
    fn sent(&self, key: FrameKey) {
        self.sent.lock().expect("lock").insert(key, Instant::now());
    }

    fn receive(&self, key: FrameKey) {
        if !self.received.lock().expect("lock").insert(key) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        let mut last = self.last_received.lock().expect("lock");
        let prev = last.entry(key.0).or_insert(0);
        if key.1 <= *prev {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        } else {
            *prev = key.1;
        }
    }

    fn received_after(&self, device: DeviceId, frame_id: u64) -> bool {
        self.received.lock().expect("lock").iter().any(|(d, id)| *d == device && *id > frame_id)
    }

    /// Frames sent and neither acknowledged nor answered undeliverable, with when.
    fn unanswered(&self) -> Vec<(FrameKey, Instant)> {
        let acked = self.acked.lock().expect("lock");
        let undeliverable = self.undeliverable.lock().expect("lock");
        let mut v: Vec<_> = self
            .sent
            .lock()
            .expect("lock")
            .iter()
            .filter(|(k, _)| !acked.contains(*k) && !undeliverable.contains(*k))
            .map(|(k, at)| (*k, *at))
            .collect();
        v.sort_by_key(|(_, at)| *at);
        v
    }

    fn summary(&self, name: &str) -> String {
        // One lock at a time: `unanswered` takes them all.
        let sent = self.sent.lock().expect("lock").len();
        let acked = self.acked.lock().expect("lock").len();
        let undeliverable = self.undeliverable.lock().expect("lock").len();
        let unanswered = self.unanswered().len();
        let failed = self.failed.load(Ordering::Relaxed);
        format!(
            "{name}: sent {sent} acked {acked} undeliverable {undeliverable} unanswered {unanswered} request failures {failed}"
        )
    }

    /// The accounting every scenario must satisfy; lost frames may only have been sent
    /// inside one of `windows`, or be `excused` (in flight across a CLOSE).
    fn check(
        &self,
        name: &str,
        windows: &[(Instant, Instant)],
        excused: impl Fn(&FrameKey, Instant) -> bool,
        history: impl Fn() -> String,
    ) {
        assert_eq!(self.duplicates.load(Ordering::Relaxed), 0, "{name}: a frame arrived twice");
        assert_eq!(self.out_of_order.load(Ordering::Relaxed), 0, "{name}: frames of a pair out of order");
        let received = self.received.lock().expect("lock");
        let fabricated: Vec<_> = self.acked.lock().expect("lock").difference(&received).copied().collect();
        assert!(fabricated.is_empty(), "{name}: acknowledged but never received: {fabricated:?}");
        drop(received);
        let outside: Vec<_> = self
            .unanswered()
            .into_iter()
            .filter(|(key, at)| !windows.iter().any(|(a, b)| at >= a && at <= b) && !excused(key, *at))
            .collect();
        if !outside.is_empty() {
            let received = self.received.lock().expect("lock");
            let lost: Vec<String> = outside
                .iter()
                .map(|(key, at)| format!("{key:?} sent at {at:?}, received: {}", received.contains(key)))
                .collect();
            panic!("{name}: lost outside any failure window: {lost:#?}\n{}\n{}", self.summary(name), history());
        }
    }
}

/// How a device's session ended, as the device saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Closed {
    /// CLOSE at login (handshake): code and hint.
    AtLogin(CloseCode, u32),
    /// CLOSE during the session.
    InSession(CloseCode, u32),
}

#[derive(Default)]
struct Ledger {
    down: Flow,
    up: Flow,
    closes: Mutex<Vec<Closed>>,
    reconnects: AtomicU64,
    /// When each device last received CLOSE `server_draining` in its session.
    drained_devices: Mutex<HashMap<DeviceId, Instant>>,
    /// When the VES's session last ended (a `Close`, or a request the relay no longer
    /// answered): acknowledgements then on their way to it find no session.
    ves_session_ended: Mutex<Option<Instant>>,
    /// Sessions opened and ended, as the endpoints saw them: printed when a check fails.
    history: Mutex<Vec<(Instant, String)>>,
    /// Sends begun while `sending` and not yet recorded: the final check waits for them,
    /// or a frame recorded after it looked would count as lost.
    sends_in_progress: AtomicUsize,
}

/// Counts one send in progress until dropped (on every way out of the send).
struct Sending<'a>(&'a AtomicUsize);

impl<'a> Sending<'a> {
    fn begin(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Sending(counter)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long before a CLOSE a frame or acknowledgement can still have been on its way.
const IN_FLIGHT: Duration = Duration::from_secs(2);

impl Ledger {
    fn event(&self, what: String) {
        self.history.lock().expect("lock").push((Instant::now(), what));
    }

    fn history(&self) -> String {
        self.history.lock().expect("lock").iter().map(|(at, what)| format!("{at:?} {what}\n")).collect()
    }

    /// Whether `at` lies at most [`IN_FLIGHT`] before the device `device` was told to
    /// reconnect elsewhere, or before the VES's session ended (returns which: device, VES).
    fn before_a_drain(&self, device: DeviceId, at: Instant) -> (bool, bool) {
        let crossed = |closed: Option<Instant>| closed.is_some_and(|c| at <= c && c - at <= IN_FLIGHT);
        (
            crossed(self.drained_devices.lock().expect("lock").get(&device).copied()),
            crossed(*self.ves_session_ended.lock().expect("lock")),
        )
    }

    /// A VES→device frame unanswered because it was in flight at a drain: the device
    /// received it and its ACK crossed the device's CLOSE, or the VES's session ended
    /// with the acknowledgement or notice on its way (protocol.md §7.1). A frame the relay
    /// still held is answered, and is not excused.
    fn down_in_flight(&self, key: &FrameKey, at: Instant) -> bool {
        let (device, ves) = self.before_a_drain(key.0, at);
        (device && self.down.received.lock().expect("lock").contains(key)) || ves
    }

    /// A device→VES frame unanswered because it was in flight at a drain: sent while its
    /// device's CLOSE was on the way (the relay never read it), or its acknowledgement
    /// crossed that CLOSE, or the VES's session ended meanwhile.
    fn up_in_flight(&self, key: &FrameKey, at: Instant) -> bool {
        let (device, ves) = self.before_a_drain(key.0, at);
        device || ves
    }
}

/// A device that stays connected through the load balancer: reconnects after a drop,
/// waits the hinted delay after a CLOSE, acknowledges every frame it receives and sends
/// one frame up every [`UP_PERIOD`] while `sending`.
fn spawn_device(
    cluster: Arc<LbCluster>,
    act: DeviceActivationResponse,
    ledger: Arc<Ledger>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let device_id = act.device_id;
        let mut first = true;
        let mut next_up = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if !first {
                ledger.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let Ok(mut device) = cluster.device_connection().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            match device.login(device_id, &act.device_credential).await {
                Recv::Frame(Frame::AuthOk { .. }) => ledger.event(format!("device {device_id} signed in")),
                Recv::Frame(Frame::Close { code, reconnect_after_ms, .. }) => {
                    ledger.event(format!("device {device_id} refused at login: {code:?}"));
                    ledger.closes.lock().expect("lock").push(Closed::AtLogin(code, reconnect_after_ms));
                    tokio::time::sleep(Duration::from_millis(reconnect_after_ms.max(100) as u64)).await;
                    continue;
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let mut last_up = Instant::now();
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let in_progress = Sending::begin(&ledger.sends_in_progress);
                if sending.load(Ordering::SeqCst) && last_up.elapsed() >= UP_PERIOD {
                    last_up = Instant::now();
                    next_up += 1;
                    let frame = Frame::Forward {
                        kind: ForwardKind::Data,
                        frame_id: next_up,
                        payload: Bytes::from_static(b"up"),
                    };
                    if device.send(frame).await.is_err() {
                        ledger.up.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    ledger.up.sent((device_id, next_up));
                }
                drop(in_progress);
                match device.recv(Duration::from_millis(50)).await {
                    Recv::Frame(Frame::Forward { frame_id, .. }) => {
                        ledger.down.receive((device_id, frame_id));
                        if device.send(Frame::Ack { frame_id }).await.is_err() {
                            break;
                        }
                    }
                    Recv::Frame(Frame::Ack { frame_id }) => {
                        ledger.up.acked.lock().expect("lock").insert((device_id, frame_id));
                    }
                    Recv::Frame(Frame::Undeliverable { frame_id, .. }) => {
                        ledger.up.undeliverable.lock().expect("lock").insert((device_id, frame_id));
                    }
                    Recv::Frame(Frame::Heartbeat) => {
                        let _ = device.send(Frame::Heartbeat).await;
                    }
                    Recv::Frame(Frame::Close { code, reconnect_after_ms, .. }) => {
                        ledger.event(format!("device {device_id} closed: {code:?} {reconnect_after_ms} ms"));
                        if code == CloseCode::ServerDraining {
                            ledger.drained_devices.lock().expect("lock").insert(device_id, Instant::now());
                        }
                        ledger.closes.lock().expect("lock").push(Closed::InSession(code, reconnect_after_ms));
                        tokio::time::sleep(Duration::from_millis(reconnect_after_ms as u64)).await;
                        break;
                    }
                    Recv::Frame(_) | Recv::Timeout => {}
                    Recv::Closed | Recv::Error(_) => {
                        ledger.event(format!("device {device_id} connection ended"));
                        break;
                    }
                }
            }
        }
    });
}

/// The VES: keeps a command channel open (reopening it through the load balancer when its
/// node goes away), sends one frame to every device every [`DOWN_PERIOD`] while
/// `sending`, acknowledges the devices' frames and records their acks.
fn spawn_ves(
    mut ves: FakeVes,
    devices: Vec<DeviceId>,
    ledger: Arc<Ledger>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let mut next_id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut channel) = ves.open().await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            ledger.event("VES command channel open".into());
            let mut last_send = Instant::now() - DOWN_PERIOD;
            'session: loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let in_progress = Sending::begin(&ledger.sends_in_progress);
                if sending.load(Ordering::SeqCst) && last_send.elapsed() >= DOWN_PERIOD {
                    last_send = Instant::now();
                    for d in &devices {
                        next_id += 1;
                        let key = (*d, next_id);
                        match tokio::time::timeout(Duration::from_secs(3), ves.try_send_frame(*d, next_id, b"x")).await
                        {
                            Ok(Ok(resp)) => {
                                ledger.down.sent(key);
                                if resp.results[0].status == FrameStatus::Undeliverable {
                                    ledger.down.undeliverable.lock().expect("lock").insert(key);
                                }
                            }
                            _ => {
                                // No answer: the session is gone (its node died). Open a new one.
                                ledger.down.failed.fetch_add(1, Ordering::Relaxed);
                                break 'session;
                            }
                        }
                    }
                }
                drop(in_progress);
                match channel.next(Duration::from_millis(20)).await {
                    Some(Command::Ack { device_id, frame_id }) => {
                        ledger.down.acked.lock().expect("lock").insert((device_id, frame_id));
                    }
                    Some(Command::Undeliverable { device_id, frame_id, .. }) => {
                        ledger.down.undeliverable.lock().expect("lock").insert((device_id, frame_id));
                    }
                    Some(Command::DeviceFrame { device_id, frame_id, .. }) => {
                        ledger.up.receive((device_id, frame_id));
                        match tokio::time::timeout(Duration::from_secs(3), ves.try_ack(device_id, frame_id)).await {
                            Ok(Ok(_)) => {}
                            _ => break 'session,
                        }
                    }
                    Some(Command::Close { .. }) => break 'session,
                    Some(_) | None => {}
                }
                if channel.is_finished() {
                    break 'session;
                }
            }
            *ledger.ves_session_ended.lock().expect("lock") = Some(Instant::now());
            ledger.event("VES session ended".into());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

struct Deployment {
    cluster: Arc<LbCluster>,
    ledger: Arc<Ledger>,
    sending: Arc<AtomicBool>,
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
    let setup_channel = ves.open().await.expect("command channel through the LB");
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        devices.push(user_with_device(&ves, &format!("u{i}@example.com"), &format!("+1555040{i}")).await);
    }
    drop(setup_channel);
    let ledger = Arc::new(Ledger::default());
    ledger.event("set-up command channel dropped".into());
    let sending = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    for act in &devices {
        spawn_device(cluster.clone(), act.clone(), ledger.clone(), sending.clone(), stop.clone());
    }
    let mut traffic_ves = cluster.ves();
    traffic_ves.guid = ves.guid.clone();
    spawn_ves(
        traffic_ves,
        devices.iter().map(|d| d.device_id).collect(),
        ledger.clone(),
        sending.clone(),
        stop.clone(),
    );
    let d = Deployment { cluster, ledger, sending, stop, devices };
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

    fn acks(&self) -> (usize, usize) {
        (self.ledger.down.acked.lock().expect("lock").len(), self.ledger.up.acked.lock().expect("lock").len())
    }

    /// Waits until `more` further frames were acknowledged in each direction: traffic
    /// flows both ways.
    async fn wait_traffic(&self, more: usize, timeout: Duration) {
        let (down, up) = self.acks();
        let deadline = Instant::now() + timeout;
        loop {
            let (d, u) = self.acks();
            if d >= down + more && u >= up + more {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "traffic stalled: {}; {}",
                self.ledger.down.summary("down"),
                self.ledger.up.summary("up")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every device received a frame the VES sent after this call, and the
    /// VES a frame from every device sent after it: each device is reachable again, not
    /// just some.
    async fn wait_every_device_reachable(&self, timeout: Duration) {
        let down_mark = self.ledger.down.sent.lock().expect("lock").keys().map(|k| k.1).max().unwrap_or(0);
        let up_marks: HashMap<DeviceId, u64> = self
            .devices
            .iter()
            .map(|a| {
                let sent = self.ledger.up.sent.lock().expect("lock");
                (a.device_id, sent.keys().filter(|k| k.0 == a.device_id).map(|k| k.1).max().unwrap_or(0))
            })
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let missing: Vec<DeviceId> = self
                .devices
                .iter()
                .map(|a| a.device_id)
                .filter(|d| {
                    !self.ledger.down.received_after(*d, down_mark) || !self.ledger.up.received_after(*d, up_marks[d])
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "devices not reachable both ways: {missing:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn session_closes(&self, code: CloseCode) -> Vec<u32> {
        self.ledger
            .closes
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|c| match c {
                Closed::InSession(c, hint) if *c == code => Some(*hint),
                _ => None,
            })
            .collect()
    }

    /// Stops sending, lets answers arrive, then checks the accounting: nothing may be
    /// lost except frames sent inside `windows`.
    async fn finish(self, windows: &[(Instant, Instant)]) {
        self.sending.store(false, Ordering::SeqCst);
        // Sends that saw `sending` before it turned false are recorded first.
        let deadline = Instant::now() + Duration::from_secs(8);
        while self.ledger.sends_in_progress.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut last = (usize::MAX, usize::MAX);
        let mut still_since = Instant::now();
        while Instant::now() < deadline {
            let now = (self.ledger.down.unanswered().len(), self.ledger.up.unanswered().len());
            if now == (0, 0) {
                break;
            }
            if now != last {
                last = now;
                still_since = Instant::now();
            } else if still_since.elapsed() > Duration::from_secs(3) {
                break; // what is still unanswered now will stay so
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        eprintln!(
            "{}; {}; reconnects {}",
            self.ledger.down.summary("VES→device"),
            self.ledger.up.summary("device→VES"),
            self.ledger.reconnects.load(Ordering::Relaxed)
        );
        let history = || self.ledger.history();
        self.ledger.down.check("VES→device", windows, |key, at| self.ledger.down_in_flight(key, at), history);
        self.ledger.up.check("device→VES", windows, |key, at| self.ledger.up_in_flight(key, at), history);
        tokio::time::sleep(Duration::from_millis(600)).await;
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
    d.wait_traffic(30, Duration::from_secs(15)).await;

    // kill -9 the node with the most devices.
    let victim = spread.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    let cluster = d.cluster.clone();
    d.ledger.event(format!("kill -9 node {victim}"));
    let killed_at = Instant::now();
    cluster.nodes[victim].kill9();

    // Its sessions come back on the others, through the load balancer, and every device is
    // reachable both ways again.
    d.wait_all_connected(Duration::from_secs(20)).await;
    d.wait_every_device_reachable(Duration::from_secs(15)).await;
    let recovered_at = Instant::now();

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
    eprintln!("kill -9: recovered in {:?}", recovered_at - killed_at);
    // What the dead process held when it died may be lost (the senders time out and
    // resend); nothing sent before it, or after the recovery, may be.
    d.finish(&[(killed_at - Duration::from_secs(1), recovered_at)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_every_client_elsewhere() {
    let d = deploy().await;
    d.wait_traffic(30, Duration::from_secs(15)).await;
    let spread = d.cluster.device_sessions();
    let victim = spread.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    let on_victim = spread[victim] as usize;
    assert!(on_victim > 0);
    d.ledger.event(format!("SIGTERM node {victim}"));
    let started = Instant::now();
    assert!(d.cluster.nodes[victim].sigterm(Duration::from_secs(10)), "node exits within its grace period");
    let exited_in = started.elapsed();
    // Every device of the drained node was told to reconnect, with hints spread over the
    // 2 s drain window.
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.session_closes(CloseCode::ServerDraining).len() < on_victim {
        assert!(Instant::now() < deadline, "every drained device got CLOSE server_draining: {:?}", d.ledger.closes);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut hints = d.session_closes(CloseCode::ServerDraining);
    hints.sort_unstable();
    assert!(hints.iter().all(|h| *h <= 2_000), "hints within the 2 s drain window: {hints:?}");
    if hints.len() > 1 {
        let distinct: HashSet<_> = hints.iter().collect();
        assert_eq!(distinct.len(), hints.len(), "every drained device gets its own moment: {hints:?}");
    }
    d.wait_all_connected(Duration::from_secs(20)).await;
    d.wait_every_device_reachable(Duration::from_secs(15)).await;
    eprintln!("drain: node exited in {exited_in:?}; hints {hints:?}");
    // A drain bounces what it cannot deliver: nothing is lost.
    d.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_under_traffic_recovers_without_restarting_nodes() {
    let d = deploy().await;
    d.wait_traffic(30, Duration::from_secs(15)).await;
    let stopped_at = Instant::now();
    d.cluster.redis().stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.cluster.nodes.iter().any(|n| n.ready()) {
        assert!(Instant::now() < deadline, "readiness must turn false without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.cluster.redis().restart();
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
    // The restarted Redis came back empty: every node registered its sessions again (the
    // nodes' owner caches last 1 s here, so routing depends on these keys).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = d.cluster.redis().keys("noc:own:d:*");
        if keys.len() == DEVICES {
            break;
        }
        assert!(Instant::now() < deadline, "device sessions registered again: {keys:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.wait_every_device_reachable(Duration::from_secs(20)).await;
    let recovered_at = Instant::now();
    // Messages Redis held when it was killed are gone with it.
    d.finish(&[(stopped_at - Duration::from_secs(1), recovered_at)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_keeps_sessions_relaying_and_logins_recover() {
    let d = deploy().await;
    d.wait_traffic(30, Duration::from_secs(15)).await;
    d.cluster.postgres.cut();
    // Readiness does not depend on the shared store, so the load balancer keeps routing
    // and new logins get a quick answer instead of a refused connection.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(d.cluster.nodes.iter().all(|n| n.ready()), "nodes stay in the load balancer");
    let mut probe = d.cluster.ves();
    let err = probe.license("acme", "acme-license-pw").await.expect_err("store down");
    assert_eq!((err.status, err.code.as_str()), (503, "unavailable"));
    let mut newcomer = d.cluster.device_connection().await.expect("TLS through the LB");
    match newcomer.login(d.devices[0].device_id, &d.devices[0].device_credential).await {
        Recv::Frame(Frame::Close { code, reconnect_after_ms, .. }) => {
            assert_eq!(code, CloseCode::ServiceUnavailable);
            assert!(reconnect_after_ms >= 1_000, "told to come back later");
        }
        other => panic!("expected CLOSE service_unavailable, got {other:?}"),
    }
    d.wait_traffic(30, Duration::from_secs(15)).await; // live sessions keep relaying
    d.cluster.postgres.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if probe.license("acme", "acme-license-pw").await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "logins recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.finish(&[]).await;
}

/// A device signed in on `node` directly (not through the load balancer).
async fn device_on(cluster: &LbCluster, node: usize, act: &DeviceActivationResponse) -> noc_test_support::FakeDevice {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.nodes[node].device));
    let mut device = noc_test_support::FakeDevice::connect(addr, &cluster.cert).await.expect("device TLS");
    match device.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::AuthOk { .. }) => device,
        other => panic!("device login on node {node}: {other:?}"),
    }
}

/// The next frame other than a heartbeat (answered).
async fn next_frame(device: &mut noc_test_support::FakeDevice) -> Frame {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no frame within 5 s");
        match device.recv(Duration::from_millis(200)).await {
            Recv::Frame(Frame::Heartbeat) => {
                let _ = device.send(Frame::Heartbeat).await;
            }
            Recv::Frame(f) => return f,
            Recv::Timeout => {}
            other => panic!("device connection: {other:?}"),
        }
    }
}

/// Redis down: a device and the VES on the same node keep relaying both ways, with their
/// acknowledgements; a frame for a device on another node is answered undeliverable, not
/// lost. Redis back: cross-node delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_leaves_same_node_pairs_relaying() {
    let cluster = LbCluster::start(BIN.as_ref(), 2).await;
    let out =
        cluster.admin(&["license", "create", "--name", "acme", "--password", "acme-license-pw", "--max-users", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ves = FakeVes::new(&format!("https://localhost:{}", cluster.nodes[0].http), &cluster.cert);
    ves.license("acme", "acme-license-pw").await.expect("license");
    // The event URL names the load balancer (public.url): the session stays on node 1.
    let mut params = ves.connect_params().await.expect("connect parameters");
    params.event_url = params.event_url.replace(&cluster.lb_http.to_string(), &cluster.nodes[0].http.to_string());
    let (guid, token) = (ves.guid.clone(), ves.license_token.clone());
    let mut channel = ves.attach(params, guid, token).await.expect("command channel on node 1");
    let local = user_with_device(&ves, "local@example.com", "+15550501").await;
    let remote = user_with_device(&ves, "remote@example.com", "+15550502").await;
    let mut local_device = device_on(&cluster, 0, &local).await;
    let mut remote_device = device_on(&cluster, 1, &remote).await;
    let online = |c: &Command, id: DeviceId| matches!(c, Command::DevicePresence { device_id, online: true, .. } if *device_id == id);
    for id in [local.device_id, remote.device_id] {
        channel.wait_for(Duration::from_secs(5), |c| online(c, id)).await.expect("both devices online");
    }
    // Cross-node works before the outage.
    ves.send_frame(remote.device_id, 1, b"before").await;
    assert!(matches!(next_frame(&mut remote_device).await, Frame::Forward { frame_id: 1, .. }));

    cluster.redis().stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.nodes.iter().any(|n| n.ready()) {
        assert!(Instant::now() < deadline, "readiness turns false without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &cluster.nodes {
        assert_eq!(n.metric("noc_cluster_up", &[]), 0.0, "{}: the alert's metric says so too", n.name);
    }

    for id in 10..15u64 {
        // VES → device on the same node, and its acknowledgement back.
        let resp = ves.send_frame(local.device_id, id, b"down").await;
        assert_eq!(resp.results[0].status, FrameStatus::Accepted, "{resp:?}");
        assert!(matches!(next_frame(&mut local_device).await, Frame::Forward { frame_id, .. } if frame_id == id));
        local_device.send(Frame::Ack { frame_id: id }).await.expect("ack");
        channel
            .wait_for(Duration::from_secs(5), |c| matches!(c, Command::Ack { device_id, frame_id } if *device_id == local.device_id && *frame_id == id))
            .await
            .expect("the device's ack reaches the VES during the outage");
        // Device → VES on the same node, and the VES's acknowledgement back.
        let up = Frame::Forward { kind: ForwardKind::Data, frame_id: id, payload: Bytes::from_static(b"up") };
        local_device.send(up).await.expect("send up");
        channel
            .wait_for(Duration::from_secs(5), |c| matches!(c, Command::DeviceFrame { device_id, frame_id, .. } if *device_id == local.device_id && *frame_id == id))
            .await
            .expect("the device's frame reaches the VES during the outage");
        ves.ack(local.device_id, id).await;
        assert!(matches!(next_frame(&mut local_device).await, Frame::Ack { frame_id } if frame_id == id));
    }

    // Cross-node: answered undeliverable at once or by a notice, never silently lost.
    let resp = ves.send_frame(remote.device_id, 20, b"cross").await;
    if resp.results[0].status != FrameStatus::Undeliverable {
        channel
            .wait_for(Duration::from_secs(5), |c| matches!(c, Command::Undeliverable { device_id, frame_id: 20, .. } if *device_id == remote.device_id))
            .await
            .expect("a cross-node frame during the outage is answered undeliverable");
    }

    cluster.redis().restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.nodes.iter().all(|n| n.ready()) {
        assert!(Instant::now() < deadline, "readiness recovers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &cluster.nodes {
        assert_eq!(n.metric("noc_cluster_up", &[]), 1.0, "{}", n.name);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut id = 30;
    loop {
        assert!(Instant::now() < deadline, "cross-node delivery resumes after the outage");
        id += 1;
        if ves.send_frame(remote.device_id, id, b"after").await.results[0].status == FrameStatus::Accepted
            && let Recv::Frame(Frame::Forward { frame_id, .. }) = remote_device.recv_data(Duration::from_secs(1)).await
            && frame_id == id
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop().await;
}
