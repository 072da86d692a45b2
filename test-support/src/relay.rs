use std::net::SocketAddr;
use std::path::PathBuf;

use noc_app::store_admin::Admin;
use noc_app::{Config, Node};

use crate::{FakeDevice, FakeVes};

/// A relay node on loopback with ephemeral ports and its own temporary data directory.
pub struct TestRelay {
    pub node: Node,
    pub config: Config,
    _dir: tempfile::TempDir,
}

impl TestRelay {
    /// A node with test-friendly settings (cheap password hashing, no drain delay).
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Like [`TestRelay::start`], with `tweak` applied to the configuration.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            node_id: Some(format!("test-{}", noc_protocol::secrets::random_hex::<4>())),
            ..Config::default()
        };
        config.listen.http = "127.0.0.1:0".parse().expect("addr");
        config.listen.device = "127.0.0.1:0".parse().expect("addr");
        config.listen.admin = "127.0.0.1:0".parse().expect("addr");
        config.listen.console = "127.0.0.1:0".parse().expect("addr");
        config.listen.workers = 2;
        config.accounts.argon2_memory_kib = 64;
        config.accounts.argon2_iterations = 1;
        config.shutdown.drain_seconds = 0;
        config.shutdown.grace_seconds = 1;
        tweak(&mut config);
        let node = Node::start(config.clone()).expect("relay node starts");
        Self { node, config, _dir: dir }
    }

    pub fn base_url(&self) -> &str {
        &self.node.public_url
    }

    pub fn device_addr(&self) -> SocketAddr {
        self.node.device_addr
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.node.admin_addr)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.node.cert_path.clone()
    }

    /// Creates a license through the same store the node uses.
    pub async fn create_license(&self, name: &str, password: &str, seats: u32) {
        let admin = Admin::open(&self.config).await.expect("open store");
        admin.create_license(name, password, seats, None).await.expect("create license");
    }

    pub async fn admin(&self) -> Admin {
        Admin::open(&self.config).await.expect("open store")
    }

    /// A metric value as the node's `/metrics` would report it.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.node.metrics().value(name, labels)
    }

    /// A fake VES pointed at this relay, with a fresh GUID.
    pub fn ves(&self) -> FakeVes {
        FakeVes::new(self.base_url(), &self.cert_path())
    }

    /// A TLS connection to the device channel (no hello sent yet).
    pub async fn device_connection(&self) -> FakeDevice {
        FakeDevice::connect(self.device_addr(), &self.cert_path()).await.expect("device TLS connection")
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let tls = crate::client_config(&self.cert_path(), &[]).expect("TLS config");
        let http = reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("client");
        let resp = http.get(format!("{}{path}", self.admin_url())).send().await.expect("admin request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

/// Logs to the test output when `RUST_LOG` is set.
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}
