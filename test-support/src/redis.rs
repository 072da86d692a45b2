//! Private Redis servers for tests that break them: a standalone server that can be
//! stopped and restarted, and a Sentinel group whose primary can be killed.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::reserve_port;

pub(crate) fn wait_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A private `redis-server` on its own port, restartable.
pub struct RedisServer {
    pub port: u16,
    child: std::sync::Mutex<Option<Child>>,
}

impl RedisServer {
    pub fn start() -> Self {
        let s = Self { port: reserve_port(), child: std::sync::Mutex::new(None) };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server abruptly (its data is gone: it keeps nothing on disk).
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The keys matching `pattern` (`redis-cli --scan`).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--scan", "--pattern", pattern])
            .output()
            .expect("redis-cli must be installed (package redis-tools)");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    pub fn restart(&self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (package redis-server)");
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        assert!(wait_tcp(SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(10)), "redis-server up");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A primary, a replica and one sentinel watching them under the name `noc`: the Redis
/// Sentinel deployment, with the primary killable so that the sentinel promotes the
/// replica. Every process is killed when the group is dropped, however the test ends.
pub struct SentinelGroup {
    dir: tempfile::TempDir,
    pub primary: u16,
    pub replica: u16,
    pub sentinel: u16,
    children: std::sync::Mutex<Vec<(u16, Child)>>,
}

impl SentinelGroup {
    /// The name the sentinel monitors the primary under.
    pub const MASTER: &'static str = "noc";

    /// Starts the three servers and waits until the sentinel knows the primary and the
    /// replica is in sync with it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (primary, replica, sentinel) = (reserve_port(), reserve_port(), reserve_port());
        let g = SentinelGroup { dir, primary, replica, sentinel, children: std::sync::Mutex::new(Vec::new()) };
        g.spawn(primary, &["--port", &primary.to_string()]);
        g.spawn(replica, &["--port", &replica.to_string(), "--replicaof", "127.0.0.1", &primary.to_string()]);
        let conf = g.dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {master} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {master} 500\n\
                 sentinel failover-timeout {master} 3000\n",
                dir = g.dir.path().display(),
                master = Self::MASTER,
            ),
        )
        .expect("sentinel config");
        g.spawn(sentinel, &[conf.to_str().expect("path"), "--sentinel"]);
        g.wait("the sentinel knows the primary and the replica is in sync", Duration::from_secs(15), || {
            g.primary_port() == Some(g.primary)
                && g.cli(g.replica, &["info", "replication"]).contains("master_link_status:up")
                && g.cli(g.sentinel, &["sentinel", "replicas", Self::MASTER]).contains(&g.replica.to_string())
        });
        g
    }

    /// The URL nodes are given in `sentinel` mode: the sentinel's address.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel)
    }

    fn spawn(&self, port: u16, args: &[&str]) {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (package redis-server)");
        self.children.lock().unwrap_or_else(|p| p.into_inner()).push((port, child));
        assert!(wait_tcp(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10)), "redis-server up");
    }

    /// Kills the server on `port` abruptly.
    pub fn kill(&self, port: u16) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = children.iter().position(|(p, _)| *p == port) {
            let (_, mut c) = children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `redis-cli -p port args…` and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli must be installed (package redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The primary's port as the sentinel names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.cli(self.sentinel, &["sentinel", "get-master-addr-by-name", Self::MASTER])
            .lines()
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the primary and waits until the sentinel has promoted the replica; returns
    /// how long the promotion took.
    pub fn fail_over(&self, timeout: Duration) -> Duration {
        let killed = Instant::now();
        self.kill(self.primary);
        self.wait("the sentinel promotes the replica", timeout, || self.primary_port() == Some(self.replica));
        killed.elapsed()
    }

    /// Polls `ok` every 100 ms; panics with `what` after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, c) in self.children.get_mut().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
