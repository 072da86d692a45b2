//! Chaos with the real endpoints: the `ves-agent` engine and `noc-device` clients (not the
//! load tool's fakes) against three `noc` processes behind HAProxy, linked to each other as
//! the Helm chart deploys them, on Redis Sentinel and the machine's PostgreSQL. While mail is dropped into the users' Maildirs and composed on
//! their devices, a node is killed with -9 (the one holding the agent's command channel),
//! the Redis primary dies and the sentinel promotes the replica, and another node drains
//! on SIGTERM; both nodes come back.
//!
//! The relay's own delivery is at most once across such failures (docs/protocol.md §7);
//! what makes the service lossless is the endpoints' end-to-end acknowledgements and
//! resends (docs/endpoints.md). So the check is on what users see: every mail dropped
//! arrives on its user's device exactly once and in the order it was dropped, every mail
//! composed on a device reaches the SMTP server exactly once and in order, and the agent's
//! queues end empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use noc_agent::{AgentConfig, AgentHandle, AgentStatus, ControlRequest, RunOptions};
use noc_device::{Activation, Device, RunOptions as DeviceRunOptions};
use noc_endpoint::LinkConfig;
use noc_endpoint::rfc822::{self, Draft};
use noc_protocol::rts::AccountActivationResponse;
use noc_test_support::SmtpSink;
use noc_test_support::lb::{ClusterRedis, LbCluster, NodeProcess, SentinelGroup};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_noc");
const USERS: usize = 4;
const LICENSE: &str = "acme";
const LICENSE_PW: &str = "acme-license-pw";
const USER_PW: &str = "user-password-1";
/// One round drops a mail for every user; every other round each device composes one.
const ROUND: Duration = Duration::from_millis(150);
/// How long everything may take to settle once the failures are over.
const SETTLE: Duration = Duration::from_secs(90);

struct User {
    email: String,
    maildir: PathBuf,
    device: Arc<Device>,
}

fn agent_config(cluster: &LbCluster, dir: &Path, smtp_port: u16) -> AgentConfig {
    let text = format!(
        r#"
[relay]
url = "{url}"
ca_file = "{ca}"
heartbeat_tolerance_seconds = 2
reconnect_initial_ms = 100
reconnect_max_seconds = 1
request_timeout_seconds = 10
[license]
name = "{LICENSE}"
password = "{LICENSE_PW}"
[mail]
maildir_root = "{root}/maildir"
calendar_root = "{root}/calendar"
contacts_root = "{root}/contacts"
rescan_interval_seconds = 2
[smtp]
host = "127.0.0.1"
port = {smtp_port}
retry_initial_seconds = 1
retry_max_seconds = 2
[welcome]
from = "VES Admin <ves-admin@corp.example>"
[queue]
resend_after_seconds = 1
rekey_interval_seconds = 1
max_resends = 4
[state]
dir = "{root}/agent"
[crypto]
suites = ["modern"]
"#,
        url = cluster.base_url(),
        ca = cluster.cert.display(),
        root = dir.display(),
    );
    AgentConfig::parse(&text).expect("agent config")
}

/// Device timings to match the agent's: resends and reconnects within a second or two.
fn device_options() -> DeviceRunOptions {
    DeviceRunOptions {
        connect_to: None,
        connect_timeout: Duration::from_secs(5),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        tick: Duration::from_millis(50),
        dead_margin: Duration::from_secs(3),
        drain_timeout: Duration::from_millis(500),
        link: LinkConfig {
            resend_after: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(3),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(1),
            max_resends: 4,
            ..LinkConfig::default()
        },
        ..DeviceRunOptions::default()
    }
}

async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(agent: &AgentHandle) -> Option<AgentStatus> {
    agent.status().await.ok()
}

/// Provisions a user through the agent, activates the account through the load balancer
/// and a device with the real client, and waits until the agent knows the device.
async fn user(cluster: &LbCluster, agent: &AgentHandle, fingerprint: &str, dir: &Path, i: usize) -> User {
    let email = format!("user{i}@corp.example");
    let msisdn = format!("+1555020{i:04}");
    agent
        .control(&ControlRequest::UserAdd {
            email: email.clone(),
            first_name: "Chaos".into(),
            last_name: format!("User{i}"),
            password: Some(USER_PW.into()),
            welcome: Some(false),
        })
        .await
        .expect("user add");
    let _: AccountActivationResponse = cluster
        .ves()
        .post_json(
            "/account/v1/activate",
            &json!({"Login": email, "Password": USER_PW, "Msisdn": msisdn, "TimeZone": "Europe/Paris"}),
        )
        .await
        .expect("account activation");
    let device_dir = dir.join(format!("device-{i}"));
    let state = noc_device::activate(
        &device_dir,
        &Activation {
            relay_url: cluster.base_url(),
            ca_file: Some(cluster.cert.clone()),
            msisdn,
            password: USER_PW.into(),
            device_name: Some(format!("phone {i}")),
            device_type: None,
            ves_fingerprint: fingerprint.parse().expect("fingerprint"),
            email: Some(email.clone()),
            suites: vec!["modern".parse().expect("suite")],
            // A cluster without [device_ca] files issues no certificates.
            certificate: false,
        },
    )
    .await
    .expect("device activation");
    let id = state.device_id;
    eventually(Duration::from_secs(30), "the agent to learn the device", || async {
        status(agent).await.filter(|s| s.devices.iter().any(|d| d.device_id == id))
    })
    .await;
    let maildir = dir.join("maildir").join(&email);
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    User { email, maildir, device: Arc::new(Device::open(&device_dir).expect("open device")) }
}

/// Delivers a message the way a delivery agent does: written in tmp/, renamed into new/.
fn drop_mail(user: &User, subject: &str) {
    let unique = format!("{subject}.M1P1.corp");
    let message = format!(
        "From: Alice <alice@partner.example>\r\nTo: {email}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@partner.example>\r\n\r\nbody of {subject}\r\n",
        email = user.email
    );
    let tmp = user.maildir.join("tmp").join(&unique);
    std::fs::write(&tmp, message).expect("write mail");
    std::fs::rename(&tmp, user.maildir.join("new").join(&unique)).expect("deliver mail");
}

fn down_subject(user: usize, seq: usize) -> String {
    format!("down-{user}-{seq:05}")
}

fn up_subject(user: usize, seq: usize) -> String {
    format!("up-{user}-{seq:05}")
}

/// The subjects of a device's inbox, in the order the device stored them.
fn inbox_subjects(device: &Device) -> Vec<String> {
    device
        .inbox()
        .expect("inbox")
        .into_iter()
        .map(|r| rfc822::header(&r.body, "Subject").unwrap_or_else(|| "(no subject)".into()))
        .collect()
}

fn wait_ready(node: &NodeProcess, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !node.ready() {
        assert!(Instant::now() < deadline, "node {} not ready: {}\n{}", node.name, node.readiness(), node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_arrives_exactly_once_and_in_order_through_kill_failover_and_drain() {
    let cluster = LbCluster::start_linked(Path::new(BIN), 3, ClusterRedis::Sentinel(SentinelGroup::start())).await;
    let out = cluster.admin(&["license", "create", "--name", LICENSE, "--password", LICENSE_PW, "--max-users", "50"]);
    assert!(out.status.success(), "license create: {}", String::from_utf8_lossy(&out.stderr));
    let smtp = SmtpSink::start().expect("SMTP sink (python3 -m pip install aiosmtpd)");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&cluster, dir.path(), smtp.port);
    noc_agent::register(&config).await.expect("the agent registers through the load balancer");
    let fingerprint = noc_agent::fingerprint(&config).expect("fingerprint");
    let agent = noc_agent::spawn(config, RunOptions::default());
    eventually(Duration::from_secs(30), "the agent's command channel", || async {
        status(&agent).await.filter(|s| s.connected)
    })
    .await;

    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(user(&cluster, &agent, &fingerprint, dir.path(), i).await);
    }
    let stop_devices = CancellationToken::new();
    let mut device_tasks = Vec::new();
    for u in &users {
        let (device, stop) = (u.device.clone(), stop_devices.clone());
        device_tasks.push(tokio::spawn(async move { device.run(device_options(), stop, None).await }));
    }
    eventually(Duration::from_secs(30), "every device online at the agent", || async {
        status(&agent).await.filter(|s| s.devices.len() == USERS && s.devices.iter().all(|d| d.online))
    })
    .await;

    // Traffic both ways until the failures are over.
    let users = Arc::new(users);
    let sending = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (users, sending) = (users.clone(), sending.clone());
        tokio::spawn(async move {
            let (mut down, mut up) = (0usize, 0usize);
            while sending.load(Ordering::Relaxed) {
                for (i, u) in users.iter().enumerate() {
                    drop_mail(u, &down_subject(i, down));
                }
                down += 1;
                if down % 2 == 0 {
                    for (i, u) in users.iter().enumerate() {
                        let draft = Draft {
                            from: None,
                            to: vec!["alice@partner.example".into()],
                            cc: Vec::new(),
                            subject: up_subject(i, up),
                            text: format!("composed on device {i}, number {up}"),
                        };
                        u.device.compose_mail(&draft, &[]).expect("compose");
                    }
                    up += 1;
                }
                tokio::time::sleep(ROUND).await;
            }
            (down, up)
        })
    };
    let mut timeline = Vec::new();
    let started = Instant::now();
    let mut note = |what: String| timeline.push(format!("{:>6.1}s {what}", started.elapsed().as_secs_f64()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The devices are spread over the nodes, so mail crosses between them: on links.
    let links: f64 = cluster.nodes.iter().map(|n| n.metric("noc_bus_links_open", &[])).sum();
    assert!(links >= 1.0, "frames cross on links (device sessions {:?})", cluster.device_sessions());

    // 1. kill -9 the node holding the agent's command channel; it comes back 3 s later.
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.metric("noc_sessions", &[("kind", "ves")]) >= 1.0)
        .expect("a node holds the agent's command channel");
    note(format!(
        "kill -9 {} (agent's node; device sessions {:?})",
        cluster.nodes[victim].name,
        cluster.device_sessions()
    ));
    cluster.nodes[victim].kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.nodes[victim].start_again();
    wait_ready(&cluster.nodes[victim], Duration::from_secs(30));
    note(format!("{} ready again", cluster.nodes[victim].name));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 2. The Redis primary dies; the sentinel promotes the replica.
    let promoted = cluster.sentinel().fail_over(Duration::from_secs(30));
    note(format!("redis primary killed; replica promoted after {promoted:?}"));
    tokio::time::sleep(Duration::from_secs(4)).await;

    // 3. The node with the most device sessions drains on SIGTERM and comes back.
    let sessions = cluster.device_sessions();
    let drained = (0..cluster.nodes.len())
        .filter(|&i| i != victim)
        .max_by(|&a, &b| sessions[a].total_cmp(&sessions[b]))
        .expect("another node");
    note(format!("SIGTERM {} (device sessions {sessions:?})", cluster.nodes[drained].name));
    assert!(cluster.nodes[drained].sigterm(Duration::from_secs(15)), "the node drains within its grace period");
    note(format!("{} exited", cluster.nodes[drained].name));
    cluster.nodes[drained].start_again();
    wait_ready(&cluster.nodes[drained], Duration::from_secs(30));
    note(format!("{} ready again", cluster.nodes[drained].name));
    tokio::time::sleep(Duration::from_secs(3)).await;

    sending.store(false, Ordering::Relaxed);
    let (down, up) = traffic.await.expect("traffic task");
    note(format!("traffic stopped: {down} mails per user dropped, {up} composed per device"));

    // Every mail dropped arrives on its device exactly once, in the order it was dropped.
    let expected_down: Vec<Vec<String>> = (0..USERS).map(|i| (0..down).map(|s| down_subject(i, s)).collect()).collect();
    eventually(SETTLE, "every device's inbox to hold every mail", || async {
        users.iter().all(|u| inbox_subjects(&u.device).len() >= down).then_some(())
    })
    .await;
    for (i, u) in users.iter().enumerate() {
        assert_eq!(
            inbox_subjects(&u.device),
            expected_down[i],
            "device {i}'s inbox\ntimeline:\n{}",
            timeline.join("\n")
        );
    }

    // Every mail composed reaches the SMTP server exactly once, in order per device.
    let subjects_by_user = || {
        let mut by_user: HashMap<usize, Vec<String>> = HashMap::new();
        for m in smtp.messages() {
            let subject = rfc822::header(m.data.as_bytes(), "Subject").unwrap_or_default();
            if let Some(i) = subject.strip_prefix("up-").and_then(|s| s.split('-').next()).and_then(|s| s.parse().ok())
            {
                by_user.entry(i).or_default().push(subject);
            }
        }
        by_user
    };
    eventually(SETTLE, "every composed mail at the SMTP server", || async {
        let by_user = subjects_by_user();
        (0..USERS).all(|i| by_user.get(&i).is_some_and(|v| v.len() >= up)).then_some(())
    })
    .await;
    let by_user = subjects_by_user();
    for i in 0..USERS {
        let expected: Vec<String> = (0..up).map(|s| up_subject(i, s)).collect();
        assert_eq!(by_user[&i], expected, "mail composed on device {i}\ntimeline:\n{}", timeline.join("\n"));
    }

    // Nothing is left waiting on either side.
    eventually(SETTLE, "the agent's queues and the devices' outboxes to empty", || async {
        let s = status(&agent).await?;
        (s.devices.iter().all(|d| d.queued == 0) && users.iter().all(|u| u.device.outbox().is_ok_and(|o| o.is_empty())))
            .then_some(())
    })
    .await;
    eprintln!("timeline:\n{}", timeline.join("\n"));

    stop_devices.cancel();
    for t in device_tasks {
        let _ = t.await;
    }
    agent.stop().await.expect("the agent stops cleanly");
    cluster.stop().await;
}
