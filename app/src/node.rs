//! Starting and stopping a node, in named steps: [`prepare`] on the caller's thread
//! (configuration, certificate, sockets), then on the node's own thread with an actix
//! `System`: [`wiring::wire`] (store, cluster, router, shared state), the servers
//! ([`noc_gateway::Servers`]: public HTTPS and device channel with one worker per CPU by
//! default, and the admin listener), and on stop [`drain::drain`]. Sessions live on the
//! worker arbiters of the listener that accepted them.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use noc_actors::Metrics;
use noc_cluster::Cluster;
use noc_gateway::{GatewayConfig, Listeners, PublicLimits, ServerSettings, Servers};
use noc_storage::Store;
use tokio::sync::oneshot;

use crate::cert;
use crate::config::Config;
use crate::error::NodeError;
use crate::{data_dir, drain, limits, wiring};

/// A running node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    pub node_id: String,
    pub http_addr: SocketAddr,
    pub device_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub console_addr: SocketAddr,
    pub public_url: String,
    pub cert_path: PathBuf,
    pub cert_fingerprint: String,
    pub cert_generated: bool,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where the node listens.
struct Addrs {
    http: SocketAddr,
    device: SocketAddr,
    admin: SocketAddr,
    console: SocketAddr,
    public_url: String,
}

/// Everything prepared on the caller's thread, so that configuration, certificate and
/// bind errors surface from [`Node::start`], and port 0 resolves to real ports before
/// anyone connects.
struct Prepared {
    config: Config,
    node_id: String,
    store: Option<Arc<dyn Store>>,
    cluster: Option<Arc<dyn Cluster>>,
    listeners: Listeners,
    tls: TlsPair,
    gateway: GatewayConfig,
}

struct TlsPair {
    http: Arc<rustls::ServerConfig>,
    device: Arc<rustls::ServerConfig>,
}

struct CertInfo {
    path: PathBuf,
    fingerprint: String,
    generated: bool,
    /// Unix seconds.
    expires_at: i64,
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), NodeError> {
    let err = |source| NodeError::Bind { what, addr, source };
    let l = TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    Ok((l, local))
}

/// Step 1, on the caller's thread: validate, certificate and TLS, the embedded store,
/// the sockets.
fn prepare(
    config: Config,
    store: Option<Arc<dyn Store>>,
    cluster: Option<Arc<dyn Cluster>>,
) -> Result<(Prepared, Addrs, CertInfo), NodeError> {
    config.validate().map_err(|e| NodeError::Startup(e.to_string()))?;
    data_dir::ensure_private_dir(&config.data_dir)
        .map_err(|source| NodeError::DataDir { path: config.data_dir.clone(), source })?;
    let (cert_path, key_path, generated) = match (&config.tls.cert_path, &config.tls.key_path) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        _ => cert::ensure(&config.data_dir, &config.tls.self_signed_names)?,
    };
    let cert = CertInfo {
        fingerprint: cert::fingerprint(&cert_path)?,
        expires_at: cert::not_after_unix(&cert_path)?,
        path: cert_path,
        generated,
    };
    let device_ca = crate::device_ca::load(&config)?;
    let tls = TlsPair {
        http: noc_gateway::tls::server_config(&cert.path, &key_path, &[b"http/1.1"])?,
        // Devices holding a certificate of the device CA present it here (AUTH_CERT).
        device: noc_gateway::tls::device_server_config(
            &cert.path,
            &key_path,
            device_ca.as_ref().map(|ca| ca.root_der()),
        )?,
    };
    let store = match store {
        Some(s) => Some(s),
        None if config.postgres_url.is_none() => Some(wiring::open_embedded(&config)?),
        // PostgreSQL connections belong to the node's runtime: opened on its thread.
        None => None,
    };
    let (http, http_addr) = bind("listen.http", config.listen.http)?;
    let (device, device_addr) = bind("listen.device", config.listen.device)?;
    let (admin, admin_addr) = bind("listen.admin", config.listen.admin)?;
    let (console, console_addr) = bind("listen.console", config.listen.console)?;
    let public_url = config.public_url(http_addr);
    let (device_host, device_port) = config.device_endpoint(&public_url, device_addr);
    let gateway = GatewayConfig {
        public_url: public_url.clone(),
        device_host,
        device_port,
        max_body_bytes: config.rts.max_body_bytes,
        body_timeout: Duration::from_secs(config.rts.body_timeout_seconds),
        handshake_timeout: Duration::from_secs(config.device.handshake_timeout_seconds),
        device_ca,
    };
    let node_id = cluster.as_ref().map(|c| c.node_id().to_string()).unwrap_or_else(|| config.node_id());
    let addrs = Addrs { http: http_addr, device: device_addr, admin: admin_addr, console: console_addr, public_url };
    let listeners = Listeners { http, device, admin, console };
    Ok((Prepared { config, node_id, store, cluster, listeners, tls, gateway }, addrs, cert))
}

/// Steps 2 to 4, on the node's thread: wire the layers, serve (then report the node's
/// metrics on `ready`), and drain on `stop`.
async fn run(
    p: Prepared,
    ready: std::sync::mpsc::Sender<Result<Arc<Metrics>, NodeError>>,
    stop: oneshot::Receiver<()>,
) {
    let Prepared { config, node_id, store, cluster, listeners, tls, gateway } = p;
    let wired = match wiring::wire(&config, &node_id, store, cluster, gateway).await {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let open_files = limits::raise_open_files_limit();
    wired.metrics.open_files_limit.set(i64::try_from(open_files).unwrap_or(i64::MAX));
    let workers = config.workers();
    let device_max = config.device.max_sessions.saturating_add(limits::RESERVED_FILES as usize);
    let budget = limits::budget(open_files, workers, config.http.max_connections, device_max);
    tracing::info!(
        open_files,
        public_connections = budget.public_per_worker * workers,
        device_connections = budget.device_per_worker * workers,
        "open-file limit and the listeners' shares of it"
    );
    let settings = ServerSettings {
        workers,
        grace_seconds: config.shutdown.grace_seconds,
        http_tls: tls.http,
        device_tls: tls.device,
        public_limits: PublicLimits {
            handshake_timeout: Duration::from_millis(config.http.tls_handshake_timeout_ms),
            max_concurrent_handshakes: config.http.max_concurrent_handshakes,
            max_handshakes_per_source: config.http.max_handshakes_per_source,
            max_connections_per_source: config.http.max_connections_per_source,
            max_connections: budget.public_per_worker.saturating_mul(workers),
        },
        public_connections_per_worker: budget.public_per_worker,
        device_connections_per_worker: budget.device_per_worker,
    };
    let servers = match Servers::build(&wired.state, listeners, settings) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(NodeError::Startup(e.to_string())));
            return;
        }
    };
    let handles = servers.handles();
    servers.spawn();
    let _ = ready.send(Ok(wired.metrics.clone()));
    let _ = stop.await;
    drain::drain(&wired.state, &wired.metrics, &handles, &config.shutdown).await;
    // The sessions are gone: what they counted since the last flush.
    wired.usage.flush().await;
    actix_rt::System::current().stop();
}

impl Node {
    /// Starts a node on the store its configuration names (PostgreSQL with `postgres_url`,
    /// else the embedded store in `data_dir`) and the in-process bus.
    pub fn start(config: Config) -> Result<Node, NodeError> {
        Self::start_inner(config, None, None)
    }

    /// Starts a node on the given store and cluster backend.
    pub fn start_with(config: Config, store: Arc<dyn Store>, cluster: Arc<dyn Cluster>) -> Result<Node, NodeError> {
        Self::start_inner(config, Some(store), Some(cluster))
    }

    fn start_inner(
        config: Config,
        store: Option<Arc<dyn Store>>,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Result<Node, NodeError> {
        let (prepared, addrs, cert) = prepare(config, store, cluster)?;
        let node_id = prepared.node_id.clone();
        let device_ca_expiry = prepared.gateway.device_ca.as_ref().map(|ca| ca.not_after());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("noc-{node_id}"))
            .spawn(move || actix_rt::System::new().block_on(run(prepared, ready_tx, stop_rx)))
            .map_err(|e| NodeError::Startup(e.to_string()))?;
        let metrics = ready_rx.recv().map_err(|_| NodeError::Startup("node thread ended during start".into()))??;
        metrics.tls_certificate_expiry.set(cert.expires_at);
        if let Some(at) = device_ca_expiry {
            metrics.device_ca_expiry.set(at);
        }
        tracing::info!(
            node = %node_id, http = %addrs.http, device = %addrs.device, admin = %addrs.admin,
            console = %addrs.console, "relay node started"
        );
        Ok(Node {
            node_id,
            http_addr: addrs.http,
            device_addr: addrs.device,
            admin_addr: addrs.admin,
            console_addr: addrs.console,
            public_url: addrs.public_url,
            cert_path: cert.path,
            cert_fingerprint: cert.fingerprint,
            cert_generated: cert.generated,
            metrics,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Drains and stops the node, waiting for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Blocks until the node stops (after [`Node::shutdown`] from elsewhere, or a failure).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A handle that can stop the node from another thread (signal handlers).
    pub fn stopper(&mut self) -> Option<oneshot::Sender<()>> {
        self.stop.take()
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
