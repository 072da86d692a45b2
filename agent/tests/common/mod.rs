//! The world of an end-to-end test: a real relay node, a real SMTP server (aiosmtpd), the
//! VES agent and devices, all on loopback, with short timings so that resends, heartbeats
//! and reconnects happen within a second or two. Nothing sleeps for a fixed time: every
//! wait polls for the effect, with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use noc_agent::{AgentConfig, AgentHandle, AgentStatus, ControlRequest, RunOptions};
use noc_device::{Activation, Device, DeviceEvent, RunOptions as DeviceRunOptions};
use noc_endpoint::LinkConfig;
use noc_protocol::rts::AccountActivationResponse;
use noc_test_support::{SmtpSink, TestRelay};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub const T: Duration = Duration::from_secs(30);
pub const LICENSE: &str = "acme";
pub const LICENSE_PW: &str = "acme-license-pw";
pub const USER_PW: &str = "user-password-1";

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Relay settings that make every timer fire within seconds.
pub fn fast_relay(c: &mut noc_app::Config) {
    c.rts.heartbeat_interval_seconds = 1;
    c.device.heartbeat_interval_seconds = 1;
    c.device.idle_timeout_seconds = 5;
}

pub struct Options {
    /// `[proxy]` section (TOML lines), if any.
    pub proxy: Option<String>,
    /// Relay base URL as the agent should use it (default: the relay's own).
    pub relay_url: Option<String>,
    pub suites: &'static str,
    /// A forwarder in front of the relay's public listener, pointed at it once it runs.
    pub forwarder: Option<Arc<noc_test_support::Forwarder>>,
    /// More configuration (TOML tables, e.g. `[[ca.profiles]]`), appended.
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { proxy: None, relay_url: None, suites: r#"["modern"]"#, forwarder: None, extra: String::new() }
    }
}

/// Fields drop in this order: the agent stops before the relay goes away.
pub struct World {
    pub agent: Option<AgentHandle>,
    pub relay: Option<TestRelay>,
    /// A node started again on the same data directory and ports (relay restart).
    pub restarted: Option<noc_app::Node>,
    pub relay_config: noc_app::Config,
    pub dir: tempfile::TempDir,
    pub smtp: SmtpSink,
    pub config: AgentConfig,
    pub fingerprint: String,
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl World {
    /// A relay (with `tweak`), a license, an SMTP sink, and a registered, running agent.
    pub async fn start(tweak: impl FnOnce(&mut noc_app::Config), opts: Options) -> World {
        let relay = TestRelay::start_with(|c| {
            fast_relay(c);
            tweak(c);
        });
        relay.create_license(LICENSE, LICENSE_PW, 50).await;
        if let Some(f) = &opts.forwarder {
            f.set_target(relay.node.http_addr);
        }
        let smtp = SmtpSink::start().expect("SMTP sink (python3 -m pip install aiosmtpd)");
        let dir = tempfile::tempdir().expect("tempdir");
        let url = opts.relay_url.clone().unwrap_or_else(|| relay.base_url().to_owned());
        let config = agent_config(&url, &relay.cert_path(), dir.path(), smtp.port, &opts);
        noc_agent::register(&config).await.expect("register");
        let fingerprint = noc_agent::fingerprint(&config).expect("fingerprint");
        let (tap, lines) = mpsc::unbounded_channel();
        let agent = noc_agent::spawn(config.clone(), RunOptions { command_tap: Some(tap) });
        let relay_config = relay.config.clone();
        let world = World {
            relay: Some(relay),
            restarted: None,
            relay_config,
            dir,
            smtp,
            config,
            agent: Some(agent),
            fingerprint,
            lines,
        };
        world.wait_connected().await;
        world
    }

    pub fn relay(&self) -> &TestRelay {
        self.relay.as_ref().expect("relay running")
    }

    pub fn agent(&self) -> &AgentHandle {
        self.agent.as_ref().expect("agent running")
    }

    pub async fn status(&self) -> AgentStatus {
        self.agent().status().await.expect("agent status")
    }

    pub async fn wait_connected(&self) {
        eventually(T, "the agent's command channel", || async {
            self.agent().status().await.ok().filter(|s| s.connected).map(|_| ())
        })
        .await;
    }

    /// The agent's counters now.
    pub async fn stats_now(&self) -> noc_agent::stats::StatsSnapshot {
        self.status().await.stats
    }

    /// Waits until the agent's status satisfies `pred`.
    pub async fn wait_status(&self, what: &str, pred: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
        eventually(T, what, || async { self.agent().status().await.ok().filter(|s| pred(s)) }).await
    }

    /// Provisions a user through the agent (welcome mail), activates the account and a
    /// device, and returns the opened device once the agent knows it.
    pub async fn user_with_device(&self, email: &str, msisdn: &str) -> Arc<Device> {
        let added = self
            .agent()
            .control(&ControlRequest::UserAdd {
                email: email.into(),
                first_name: "Bob".into(),
                last_name: "Ng".into(),
                password: Some(USER_PW.into()),
                welcome: Some(true),
            })
            .await
            .expect("user add");
        assert_eq!(added["WelcomeSent"], json!(true), "{added}");
        let fake = self.relay().ves();
        let _: AccountActivationResponse = fake
            .post_json(
                "/account/v1/activate",
                &json!({"Login": email, "Password": USER_PW, "Msisdn": msisdn, "TimeZone": "Europe/Paris"}),
            )
            .await
            .expect("account activation");
        self.activate_device(msisdn, &["modern"]).await
    }

    /// Provisions a user through the agent (no welcome mail) and activates the account,
    /// without a device; returns once the agent serves the user.
    pub async fn activated_user(&self, email: &str, msisdn: &str) {
        let request = ControlRequest::UserAdd {
            email: email.into(),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
            password: Some(USER_PW.into()),
            welcome: Some(false),
        };
        self.agent().control(&request).await.expect("user add");
        let _: AccountActivationResponse = self
            .relay()
            .ves()
            .post_json(
                "/account/v1/activate",
                &json!({"Login": email, "Password": USER_PW, "Msisdn": msisdn, "TimeZone": "Europe/Paris"}),
            )
            .await
            .expect("account activation");
        self.wait_status("the agent to serve the user", |s| s.users.iter().any(|u| u.email == email)).await;
    }

    pub async fn activate_device(&self, msisdn: &str, suites: &[&str]) -> Arc<Device> {
        let dir = self.dir.path().join(format!("device-{msisdn}-{}", suites.join("-")));
        let activation = Activation {
            relay_url: self.relay().base_url().to_owned(),
            ca_file: Some(self.relay().cert_path()),
            msisdn: msisdn.into(),
            password: USER_PW.into(),
            device_name: Some("phone".into()),
            device_type: None,
            ves_fingerprint: self.fingerprint.parse().expect("fingerprint"),
            email: None,
            suites: suites.iter().map(|s| s.parse().expect("suite")).collect(),
            // The embedded relay has a device CA: every test device holds a certificate.
            certificate: true,
        };
        let state = noc_device::activate(&dir, &activation).await.expect("device activation");
        let device_id = state.device_id;
        self.wait_status("the agent to learn the device", |s| s.devices.iter().any(|d| d.device_id == device_id)).await;
        Arc::new(Device::open(&dir).expect("open device"))
    }

    /// Writes a message into the user's Maildir the way a delivery agent does (tmp/, then
    /// a rename into new/).
    pub fn drop_mail(&self, email: &str, unique: &str, subject: &str, body: &str) -> Vec<u8> {
        let root = &self.config.mail.maildir_root;
        let message = format!(
            "From: Alice <alice@partner.example>\r\nTo: {email}\r\nSubject: {subject}\r\nMessage-ID: <{unique}@partner.example>\r\n\r\n{body}\r\n"
        )
        .into_bytes();
        let tmp = root.join(email).join("tmp").join(unique);
        std::fs::create_dir_all(tmp.parent().expect("parent")).expect("tmp dir");
        std::fs::create_dir_all(root.join(email).join("new")).expect("new dir");
        std::fs::write(&tmp, &message).expect("write mail");
        std::fs::rename(&tmp, root.join(email).join("new").join(unique)).expect("deliver mail");
        message
    }

    /// Stops the relay node and starts it again on the same data directory and ports.
    pub fn restart_relay(&mut self) {
        let mut config = self.relay_config.clone();
        let relay = self.relay.as_mut().expect("relay");
        config.listen.http = relay.node.http_addr;
        config.listen.device = relay.node.device_addr;
        config.listen.admin = "127.0.0.1:0".parse().expect("addr");
        config.listen.console = "127.0.0.1:0".parse().expect("addr");
        config.data_dir = relay.config.data_dir.clone();
        match self.restarted.take() {
            Some(node) => node.shutdown(),
            None => {
                if let Some(stop) = relay.node.stopper() {
                    let _ = stop.send(());
                }
            }
        }
        // The old node releases its ports when its drain ends.
        let node = (0..100)
            .find_map(|_| match noc_app::Node::start(config.clone()) {
                Ok(n) => Some(n),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                }
            })
            .expect("relay restarts on the same ports");
        self.restarted = Some(node);
    }
}

/// The agent's configuration, written as TOML and parsed like a file would be.
pub fn agent_config(
    relay_url: &str,
    ca: &std::path::Path,
    dir: &std::path::Path,
    smtp_port: u16,
    opts: &Options,
) -> AgentConfig {
    let proxy = opts.proxy.clone().unwrap_or_default();
    let text = format!(
        r#"
[relay]
url = "{relay_url}"
ca_file = "{ca}"
heartbeat_tolerance_seconds = 2
reconnect_initial_ms = 100
reconnect_max_seconds = 1
request_timeout_seconds = 10
[license]
name = "{LICENSE}"
password = "{LICENSE_PW}"
{proxy}
[mail]
maildir_root = "{maildir}"
calendar_root = "{calendar}"
contacts_root = "{contacts}"
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
dir = "{state}"
[crypto]
suites = {suites}
{extra}
"#,
        extra = opts.extra,
        ca = ca.display(),
        maildir = dir.join("maildir").display(),
        calendar = dir.join("calendar").display(),
        contacts = dir.join("contacts").display(),
        state = dir.join("agent").display(),
        suites = opts.suites,
    );
    AgentConfig::parse(&text).expect("agent config")
}

/// Device timings to match the agent's.
pub fn fast_device(connect_to: Option<SocketAddr>) -> DeviceRunOptions {
    DeviceRunOptions {
        connect_to,
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

/// A device running in the background.
pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), noc_device::DeviceError>>,
    pub events: broadcast::Receiver<DeviceEvent>,
}

impl Running {
    pub async fn halt(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub fn run_device(device: &Arc<Device>, opts: DeviceRunOptions) -> Running {
    let stop = CancellationToken::new();
    let (tx, events) = broadcast::channel(1024);
    let d = device.clone();
    let s = stop.clone();
    let task = tokio::spawn(async move { d.run(opts, s, Some(tx)).await });
    Running { stop, task, events }
}

/// The device's inbox bodies.
pub fn inbox(device: &Device) -> Vec<Vec<u8>> {
    device.inbox().expect("inbox").into_iter().map(|r| r.body).collect()
}

pub async fn wait_inbox(device: &Device, n: usize) -> Vec<Vec<u8>> {
    eventually(T, &format!("{n} items in the device inbox"), || async {
        let items = inbox(device);
        (items.len() >= n).then_some(items)
    })
    .await
}

/// A path inside the world's directory.
pub fn path_in(world: &World, name: &str) -> PathBuf {
    world.dir.path().join(name)
}
