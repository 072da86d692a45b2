//! Starting and stopping a node.
//!
//! A node runs on its own thread with an actix `System`: the public HTTPS server, the
//! device-channel server (both with one worker per CPU by default) and the admin server.
//! Sessions live on the worker arbiters of the listener that accepted them.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use noc_actors::{Metrics, Router, RtsSessions};
use noc_cluster::{Cluster, MemoryCluster, NodeId, RedisCluster};
use noc_gateway::{DeviceListener, GatewayConfig, GatewayState, admin_routes, public_routes};
use noc_protocol::CloseCode;
use noc_storage::{AccountError, Accounts, PostgresStore, SqliteStore, Store, StoreError};
use tokio::sync::oneshot;

use crate::cert::{self, CertError};
use crate::config::Config;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("opening the embedded store: {0}")]
    Store(#[from] StoreError),
    #[error("connecting to PostgreSQL: {0}")]
    Postgres(StoreError),
    #[error("connecting to Redis: {0}")]
    Redis(noc_cluster::ClusterError),
    #[error("account rules: {0}")]
    Accounts(#[from] AccountError),
    #[error("TLS certificate: {0}")]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] noc_gateway::tls::TlsError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("starting the node: {0}")]
    Startup(String),
}

/// A running node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    pub node_id: String,
    pub http_addr: SocketAddr,
    pub device_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub public_url: String,
    pub cert_path: PathBuf,
    pub cert_fingerprint: String,
    pub cert_generated: bool,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Started {
    http_addr: SocketAddr,
    device_addr: SocketAddr,
    admin_addr: SocketAddr,
    public_url: String,
    metrics: Arc<Metrics>,
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    let l = TcpListener::bind(addr).map_err(|source| NodeError::Bind { what, addr, source })?;
    l.set_nonblocking(true).map_err(|source| NodeError::Bind { what, addr, source })?;
    Ok(l)
}

fn open_embedded(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| NodeError::DataDir { path: config.data_dir.clone(), source })?;
    Ok(Arc::new(SqliteStore::open(&config.store_path())?))
}

async fn open_cluster(config: &Config, node_id: &str) -> Result<Arc<dyn Cluster>, NodeError> {
    let node = NodeId::new(node_id.to_string());
    match config.redis_options() {
        Some(opts) => Ok(Arc::new(RedisCluster::connect(node, opts).await.map_err(NodeError::Redis)?)),
        None => {
            if config.postgres_url.is_some() {
                // Legitimate for one node on PostgreSQL, a trap for several: they would
                // share accounts but not sessions, and could not reach each other's.
                tracing::warn!(
                    "postgres_url is set but redis_url is not: this node runs alone (in-process bus); \
                     other nodes on the same database will not see its sessions"
                );
            }
            Ok(Arc::new(MemoryCluster::single(node, config.cluster.bus_queue_messages)))
        }
    }
}

async fn open_postgres(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    let url = config.postgres_url.as_ref().map(|u| u.expose().to_string()).unwrap_or_default();
    let store = PostgresStore::connect(&url, config.postgres_options()).await.map_err(NodeError::Postgres)?;
    Ok(Arc::new(store))
}

/// Ends the live sessions of licenses that were suspended (possibly by `noc admin` in
/// another process, or on another node) or that expired: logins check the license, but a
/// session opened before lives on until something closes it. Each node closes its own
/// sessions, so nothing crosses the bus.
async fn license_watch(accounts: Accounts, router: Arc<Router>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match accounts.ves_of_unusable_licenses().await {
            Ok(ves) => {
                let ves: std::collections::HashSet<_> = ves.into_iter().collect();
                let closed = router.close_sessions_of_ves(&ves, CloseCode::AccountSuspended);
                if closed > 0 {
                    tracing::info!(sessions = closed, "closed sessions of suspended or expired licenses");
                }
            }
            Err(e) => tracing::warn!(error = %e, "license check failed; retrying at the next interval"),
        }
    }
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
        config.validate().map_err(|e| NodeError::Startup(e.to_string()))?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| NodeError::DataDir { path: config.data_dir.clone(), source })?;
        let (cert_path, key_path, cert_generated) = match (&config.tls.cert_path, &config.tls.key_path) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), false),
            _ => cert::ensure(&config.data_dir, &config.tls.self_signed_names)?,
        };
        let cert_fingerprint = cert::fingerprint(&cert_path)?;
        let http_tls = noc_gateway::tls::server_config(&cert_path, &key_path, &[b"http/1.1"])?;
        let device_tls = noc_gateway::tls::server_config(&cert_path, &key_path, &[])?;
        let store = match store {
            Some(s) => Some(s),
            None if config.postgres_url.is_none() => Some(open_embedded(&config)?),
            // PostgreSQL connections belong to the node's runtime: opened on its thread.
            None => None,
        };

        // Bind here, on the caller's thread, so that errors surface from `start` and
        // port 0 resolves to real ports before anyone connects.
        let http = bind("listen.http", config.listen.http)?;
        let device = bind("listen.device", config.listen.device)?;
        let admin = bind("listen.admin", config.listen.admin)?;
        let local =
            |l: &TcpListener, what, addr| l.local_addr().map_err(|source| NodeError::Bind { what, addr, source });
        let http_addr = local(&http, "listen.http", config.listen.http)?;
        let device_addr = local(&device, "listen.device", config.listen.device)?;
        let admin_addr = local(&admin, "listen.admin", config.listen.admin)?;
        let public_url = config.public_url(http_addr);
        let (device_host, device_port) = config.device_endpoint(&public_url, device_addr);

        let node_id = cluster.as_ref().map(|c| c.node_id().to_string()).unwrap_or_else(|| config.node_id());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Started, NodeError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let gateway = GatewayConfig {
            public_url: public_url.clone(),
            device_host,
            device_port,
            max_body_bytes: config.rts.max_body_bytes,
            handshake_timeout: Duration::from_secs(config.device.handshake_timeout_seconds),
        };
        let node_id_for_thread = node_id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("noc-{node_id}"))
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let store = match store {
                        Some(s) => s,
                        None => match open_postgres(&config).await {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        },
                    };
                    let cluster = match cluster {
                        Some(c) => c,
                        None => match open_cluster(&config, &node_id_for_thread).await {
                            Ok(c) => c,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        },
                    };
                    let accounts = match Accounts::new(store, config.account_policy()) {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let sessions = Arc::new(config.sessions());
                    let metrics = Arc::new(Metrics::new());
                    let router = Router::new(cluster, metrics.clone());
                    router.spawn_bus_pump();
                    let rts = RtsSessions::new(sessions.ves_reply_time, metrics.clone());
                    let draining = Arc::new(AtomicBool::new(false));
                    let state = GatewayState {
                        accounts: accounts.clone(),
                        router: router.clone(),
                        rts: rts.clone(),
                        sessions: sessions.clone(),
                        config: Arc::new(gateway),
                        draining: draining.clone(),
                    };
                    let workers = config.workers();
                    let grace = config.shutdown.grace_seconds;

                    let public_state = state.clone();
                    let public = HttpServer::new(move || {
                        App::new().app_data(web::Data::new(public_state.clone())).configure(public_routes)
                    })
                    .workers(workers)
                    // The command channel streams small lines: without TCP_NODELAY each one
                    // written behind an unacknowledged one waits for a delayed ACK (40 ms).
                    .tcp_nodelay(true)
                    .disable_signals()
                    .shutdown_timeout(grace)
                    .listen_rustls_0_23(http, (*http_tls).clone());
                    let admin_state = state.clone();
                    let admin = HttpServer::new(move || {
                        App::new().app_data(web::Data::new(admin_state.clone())).configure(admin_routes)
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .listen(admin);
                    let listener = DeviceListener::new(
                        device_tls,
                        accounts,
                        router.clone(),
                        sessions.clone(),
                        state.config.handshake_timeout,
                        draining.clone(),
                    );
                    let device_server = actix_server::Server::build()
                        .workers(workers)
                        .disable_signals()
                        .shutdown_timeout(1)
                        .listen("device", device, move || {
                            let listener = listener.clone();
                            actix_service::fn_service(move |tcp: actix_rt::net::TcpStream| {
                                let listener = listener.clone();
                                async move {
                                    listener.serve(tcp).await;
                                    Ok::<_, ()>(())
                                }
                            })
                        });
                    let (public, admin, device_server) = match (public, admin, device_server) {
                        (Ok(p), Ok(a), Ok(d)) => (p.run(), a.run(), d.run()),
                        (p, a, d) => {
                            let e = [p.err(), a.err(), d.err()].into_iter().flatten().next();
                            let msg = e.map(|e| e.to_string()).unwrap_or_default();
                            let _ = ready_tx.send(Err(NodeError::Startup(msg)));
                            return;
                        }
                    };
                    let handles = (public.handle(), admin.handle(), device_server.handle());
                    if config.accounts.license_check_interval_seconds > 0 {
                        let every = Duration::from_secs(config.accounts.license_check_interval_seconds);
                        actix_rt::spawn(license_watch(state.accounts.clone(), router.clone(), every));
                    }
                    actix_rt::spawn(public);
                    actix_rt::spawn(admin);
                    actix_rt::spawn(device_server);
                    let _ = ready_tx.send(Ok(Started {
                        http_addr,
                        device_addr,
                        admin_addr,
                        public_url,
                        metrics: metrics.clone(),
                    }));

                    let _ = stop_rx.await;
                    // Drain. Readiness goes false and new handshakes are refused with a
                    // hint, so the load balancer and clients move on; every live session is
                    // told to reconnect elsewhere, with hints spread over the drain window so
                    // the others are not hit by a storm. The node waits (at most
                    // `shutdown.grace_seconds`) until every session has ended and every
                    // CLOSE frame is written, gives up its registrations, and only then
                    // stops the listeners (stopping one ends the sessions on its workers).
                    draining.store(true, Ordering::Relaxed);
                    metrics.draining.set(1);
                    let spread_ms = (config.shutdown.drain_seconds * 1000).min(u32::MAX as u64) as u32;
                    router.close_all(CloseCode::ServerDraining, spread_ms);
                    let flush_deadline =
                        tokio::time::Instant::now() + Duration::from_secs(config.shutdown.grace_seconds);
                    // Wait for every session to end and every device send loop to have
                    // written its CLOSE (sessions that slipped in meanwhile are closed too).
                    while (router.device_writers() > 0 || router.ves_sessions() > 0)
                        && tokio::time::Instant::now() < flush_deadline
                    {
                        router.close_all(CloseCode::ServerDraining, spread_ms);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // Whatever is left of the grace period (at least a second) bounds the
                    // rest: giving up the registrations (Redis may be the reason we are
                    // stopping) and the listeners' own graceful stop. Past it, the
                    // listeners stop at once: a drain must end within its grace period.
                    let left = flush_deadline.saturating_duration_since(tokio::time::Instant::now());
                    let graceful = async {
                        router.cluster().leave().await;
                        handles.2.stop(true).await;
                        handles.0.stop(true).await;
                        handles.1.stop(true).await;
                    };
                    if tokio::time::timeout(left.max(Duration::from_secs(1)), graceful).await.is_err() {
                        tracing::warn!("drain ran out of its grace period; stopping the listeners now");
                        handles.2.stop(false).await;
                        handles.0.stop(false).await;
                        handles.1.stop(false).await;
                    }
                    actix_rt::System::current().stop();
                });
            })
            .map_err(|e| NodeError::Startup(e.to_string()))?;
        let started = ready_rx.recv().map_err(|_| NodeError::Startup("node thread ended during start".into()))??;
        tracing::info!(node = %node_id, http = %started.http_addr, device = %started.device_addr, admin = %started.admin_addr, "relay node started");
        Ok(Node {
            node_id,
            http_addr: started.http_addr,
            device_addr: started.device_addr,
            admin_addr: started.admin_addr,
            public_url: started.public_url,
            cert_path,
            cert_fingerprint,
            cert_generated,
            metrics: started.metrics,
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
