//! A real deployment on loopback: several `noc` processes behind HAProxy, sharing
//! PostgreSQL (through a [`Forwarder`], so it can be taken away) and a private Redis
//! server (so it can be restarted without disturbing other tests).
//!
//! HAProxy passes TLS through (TCP mode). RTS traffic is balanced by client address so
//! that a VES's requests stay on one node (`balance source`), device connections round
//! robin; both use each node's `/readyz` as health check, so a draining or dead node
//! stops receiving new connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::wait_tcp;
pub use crate::redis::{RedisServer, SentinelGroup};
use crate::{FakeDevice, FakeVes, Forwarder, TestSchema, reserve_port};

/// One `noc serve` process.
pub struct NodeProcess {
    pub name: String,
    pub http: u16,
    pub device: u16,
    pub admin: u16,
    /// The operators' console and admin API (HTTPS).
    pub console: u16,
    pub config: PathBuf,
    log: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
    bin: PathBuf,
}

impl NodeProcess {
    fn spawn(&self) {
        // Appends, so that a restarted node's log keeps what the earlier process wrote.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn noc");
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }

    /// The `/readyz` answer, for diagnostics.
    pub fn readiness(&self) -> String {
        http_get(self.admin, "/readyz").map(|(s, b)| format!("{s} {b}")).unwrap_or_else(|| "no answer".into())
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        http_get(self.admin, "/readyz").is_some_and(|(status, _)| status == 200)
    }

    /// The value of a metric (summed over label sets matching `labels`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some((_, body)) = http_get(self.admin, "/metrics") else { return f64::NAN };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Starts the process again (after [`kill9`](Self::kill9) or [`sigterm`](Self::sigterm))
    /// on the same configuration, ports and data directory.
    pub fn start_again(&self) {
        self.kill9();
        self.spawn();
    }

    /// `kill -9`: no drain, no goodbye.
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit (at most `timeout`); returns whether it did.
    pub fn sigterm(&self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() else { return true };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal blocking HTTP/1.0 GET against the admin listener.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// How the nodes of an [`LbCluster`] reach Redis.
pub enum ClusterRedis {
    /// One server (`cluster.redis_mode = "standalone"`), restartable.
    Standalone(RedisServer),
    /// A primary, a replica and a sentinel (`cluster.redis_mode = "sentinel"`).
    Sentinel(SentinelGroup),
}

/// N nodes behind HAProxy.
pub struct LbCluster {
    pub nodes: Vec<NodeProcess>,
    redis: ClusterRedis,
    pub postgres: Forwarder,
    pub lb_http: u16,
    pub lb_device: u16,
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
    haproxy: Option<Child>,
    schema: Option<TestSchema>,
}

impl LbCluster {
    /// Starts `n` nodes of the `noc` binary at `bin` and HAProxy in front of them, with a
    /// standalone Redis.
    pub async fn start(bin: &Path, n: usize) -> Self {
        Self::start_with(bin, n, ClusterRedis::Standalone(RedisServer::start())).await
    }

    /// Starts `n` nodes behind HAProxy, reaching Redis as `redis` says.
    pub async fn start_with(bin: &Path, n: usize, redis: ClusterRedis) -> Self {
        Self::start_nodes(bin, n, redis, false).await
    }

    /// The same, with direct links between the nodes (what the Helm chart deploys): frames
    /// cross between nodes on them, Redis pub/sub only where a link is missing.
    pub async fn start_linked(bin: &Path, n: usize, redis: ClusterRedis) -> Self {
        Self::start_nodes(bin, n, redis, true).await
    }

    async fn start_nodes(bin: &Path, n: usize, redis: ClusterRedis, links: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let schema = TestSchema::create().await;
        let postgres = Forwarder::start("127.0.0.1:5432".parse().expect("addr")).await.expect("pg proxy");
        let (redis_url, redis_mode) = match &redis {
            ClusterRedis::Standalone(r) => (r.url(), "redis_mode = \"standalone\"".to_string()),
            ClusterRedis::Sentinel(g) => {
                (g.url(), format!("redis_mode = \"sentinel\"\nredis_sentinel_master = \"{}\"", SentinelGroup::MASTER))
            }
        };
        let (cert, key, _) =
            noc_app::cert::ensure(dir.path(), &["localhost".into(), "127.0.0.1".into()]).expect("cert");
        let (lb_http, lb_device) = (reserve_port(), reserve_port());
        let pg_url = schema.url(Some(postgres.addr));
        let mut nodes = Vec::new();
        for i in 1..=n {
            let name = format!("n{i}-{}", noc_protocol::secrets::random_hex::<3>());
            let (http, device, admin, console) = (reserve_port(), reserve_port(), reserve_port(), reserve_port());
            let links = if links {
                format!(
                    "link_listen = \"127.0.0.1:{}\"\nlink_key = \"the chaos cluster's link key, 32+ bytes\"",
                    reserve_port()
                )
            } else {
                String::new()
            };
            let data = dir.path().join(&name);
            std::fs::create_dir_all(&data).expect("data dir");
            let config = data.join("noc.toml");
            std::fs::write(
                &config,
                format!(
                    r#"data_dir = "{data}"
node_id = "{name}"
postgres_url = "{pg_url}"
redis_url = "{redis_url}"

[listen]
http = "127.0.0.1:{http}"
device = "127.0.0.1:{device}"
admin = "127.0.0.1:{admin}"
console = "127.0.0.1:{console}"
workers = 1

[public]
url = "https://localhost:{lb_http}"
device_host = "localhost"
device_port = {lb_device}

[tls]
cert_path = "{cert}"
key_path = "{key}"

[postgres]
wait_timeout_seconds = 1
connect_timeout_seconds = 1

[cluster]
{redis_mode}
node_lease_seconds = 2
membership_interval_ms = 200
# Routing must rest on the ownership keys in Redis, not on what a node remembers.
owner_cache_ttl_seconds = 1
{links}

[rts]
heartbeat_interval_seconds = 1
reply_time_seconds = 5

[device]
heartbeat_interval_seconds = 2
idle_timeout_seconds = 10
handshake_timeout_seconds = 5

[accounts]
argon2_memory_kib = 64
argon2_iterations = 1

[shutdown]
drain_seconds = 2
grace_seconds = 2
"#,
                    data = data.display(),
                    cert = cert.display(),
                    key = key.display(),
                ),
            )
            .expect("write config");
            let node = NodeProcess {
                name,
                http,
                device,
                admin,
                console,
                config,
                log: data.join("noc.log"),
                child: std::sync::Mutex::new(None),
                bin: bin.to_path_buf(),
            };
            node.spawn();
            nodes.push(node);
        }
        for node in &nodes {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !node.ready() {
                assert!(Instant::now() < deadline, "node {} not ready:\n{}", node.name, node.log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let cfg = haproxy_config(lb_http, lb_device, &nodes);
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).expect("haproxy config");
        let haproxy = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy must be installed (package haproxy)");
        assert!(wait_tcp(SocketAddr::from(([127, 0, 0, 1], lb_http)), Duration::from_secs(10)), "haproxy up");
        // Let the first health checks pass.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        Self { nodes, redis, postgres, lb_http, lb_device, cert, dir, haproxy: Some(haproxy), schema: Some(schema) }
    }

    /// Runs `noc admin` against the cluster's store (through node 1's config).
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.nodes[0].bin)
            .arg("admin")
            .arg("--config")
            .arg(&self.nodes[0].config)
            .args(args)
            .output()
            .expect("noc admin")
    }

    /// The standalone Redis server (panics for a cluster started with Sentinel).
    pub fn redis(&self) -> &RedisServer {
        match &self.redis {
            ClusterRedis::Standalone(r) => r,
            ClusterRedis::Sentinel(_) => panic!("this cluster runs on Redis Sentinel"),
        }
    }

    /// The Sentinel group (panics for a cluster started with a standalone Redis).
    pub fn sentinel(&self) -> &SentinelGroup {
        match &self.redis {
            ClusterRedis::Sentinel(g) => g,
            ClusterRedis::Standalone(_) => panic!("this cluster runs on a standalone Redis"),
        }
    }

    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.lb_http)
    }

    pub fn device_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.lb_device))
    }

    /// A fake VES talking to the load balancer.
    pub fn ves(&self) -> FakeVes {
        FakeVes::new(&self.base_url(), &self.cert)
    }

    /// A device connection through the load balancer.
    pub async fn device_connection(&self) -> anyhow::Result<FakeDevice> {
        FakeDevice::connect(self.device_addr(), &self.cert).await
    }

    /// Device sessions per node (NaN for a node that does not answer).
    pub fn device_sessions(&self) -> Vec<f64> {
        self.nodes.iter().map(|n| n.metric("noc_sessions", &[("kind", "device")])).collect()
    }

    pub async fn stop(mut self) {
        if let Some(mut h) = self.haproxy.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        self.nodes.clear();
        if let Some(s) = self.schema.take() {
            s.drop_schema().await;
        }
    }
}

impl Drop for LbCluster {
    fn drop(&mut self) {
        if let Some(mut h) = self.haproxy.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// The shipped reference configuration (deploy/haproxy/haproxy.cfg) with this test's
/// addresses: its frontends bound to the test ports on loopback, each backend's example
/// servers replaced by the test's nodes (the same check options, each node's admin port),
/// and a connection limit the test machine allows. Everything else is the file's own.
fn haproxy_config(lb_http: u16, lb_device: u16, nodes: &[NodeProcess]) -> String {
    const REFERENCE: &str = include_str!("../../deploy/haproxy/haproxy.cfg");
    let mut out = String::new();
    let mut backend: Option<&str> = None;
    let mut servers_done = false;
    for line in REFERENCE.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("backend ") {
            backend = Some(name);
            servers_done = false;
        }
        if t.starts_with("maxconn ") {
            out.push_str("  maxconn 4000\n");
            continue;
        }
        match t {
            "bind :443" => {
                out.push_str(&format!("  bind 127.0.0.1:{lb_http}\n"));
                continue;
            }
            "bind :8444" => {
                out.push_str(&format!("  bind 127.0.0.1:{lb_device}\n"));
                continue;
            }
            _ => {}
        }
        if let Some(server) = t.strip_prefix("server ") {
            if !servers_done {
                // `server NAME ADDR check port 9090 OPTIONS…`: keep OPTIONS.
                let options = server.split_once(" check port 9090").map(|(_, o)| o).unwrap_or("");
                for n in nodes {
                    let port = if backend == Some("devices") { n.device } else { n.http };
                    out.push_str(&format!("  server {} 127.0.0.1:{port} check port {}{options}\n", n.name, n.admin));
                }
                servers_done = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
