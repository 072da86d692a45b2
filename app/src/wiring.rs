//! Wiring a node's layers together, on the node's own thread: the account store, the
//! cluster backend, the router and the state every handler shares.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use noc_actors::{Metrics, Router, RtsSessions};
use noc_cluster::{Cluster, MemoryCluster, NodeId, RedisCluster, SessionKey};
use noc_gateway::{GatewayConfig, GatewayState};
use noc_protocol::{CloseCode, LicenseId, VesId};
use noc_storage::{Accounts, Feature, PostgresStore, SqliteStore, Store};

use crate::config::Config;
use crate::error::NodeError;

/// The embedded store in `data_dir`, which exists by now (opened on the caller's thread:
/// SQLite needs no runtime).
pub(crate) fn open_embedded(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    Ok(Arc::new(SqliteStore::open(&config.store_path())?))
}

/// PostgreSQL: its connections belong to the node's runtime, so it is opened there.
async fn open_postgres(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    let url = config.postgres_url.as_ref().map(|u| u.expose().to_string()).unwrap_or_default();
    let store = PostgresStore::connect(&url, config.postgres_options()).await.map_err(NodeError::Postgres)?;
    Ok(Arc::new(store))
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

/// A node's layers, connected.
pub(crate) struct Wired {
    pub state: GatewayState,
    pub metrics: Arc<Metrics>,
    /// Writes the sessions' usage to the store (periodically, and once more at the end).
    pub usage: Arc<crate::usage::UsageFlusher>,
}

/// Opens what was not given (PostgreSQL, Redis), builds the account rules, the router
/// with its bus pump, the RTS sessions and the handlers' shared state, and starts the
/// license watch.
pub(crate) async fn wire(
    config: &Config,
    node_id: &str,
    store: Option<Arc<dyn Store>>,
    cluster: Option<Arc<dyn Cluster>>,
    gateway: GatewayConfig,
) -> Result<Wired, NodeError> {
    let store = match store {
        Some(s) => s,
        None => open_postgres(config).await?,
    };
    let cluster = match cluster {
        Some(c) => c,
        None => open_cluster(config, node_id).await?,
    };
    let accounts = Accounts::new(store, config.account_policy())?;
    let sessions = Arc::new(config.sessions());
    let metrics = Arc::new(Metrics::new());
    let router = Router::new(cluster, metrics.clone());
    router.set_fetch_limit(config.rts.max_fetches_in_flight);
    router.spawn_bus_pump();
    let seen = noc_storage::SeenRecorder::start(accounts.store().clone(), Duration::from_secs(1));
    router.on_device_seen(Box::new(move |device| seen.seen(device)));
    let rts = RtsSessions::new(sessions.ves_reply_time, metrics.clone());
    actix_rt::spawn(report_load(router.clone()));
    if config.accounts.license_check_interval_seconds > 0 {
        let every = Duration::from_secs(config.accounts.license_check_interval_seconds);
        actix_rt::spawn(license_watch(accounts.clone(), router.clone(), every));
    }
    if config.accounts.audit_retention_days > 0 {
        let retention = Duration::from_secs(config.accounts.audit_retention_days * 86_400);
        actix_rt::spawn(audit_purge(accounts.clone(), retention));
    }
    let mailer = crate::mail::Mailer::from_config(&config.mail)?;
    let web = config.web.enabled.then(|| noc_web::WebState {
        settings: Arc::new(noc_web::WebSettings {
            offer_persistent: config.web.persistent_session_max_age_seconds > 0,
            offer_recovery: mailer.is_some(),
            offer_sms: config.alerts.smpp_host.is_some(),
        }),
        portal: Arc::new(crate::portal::AccountsPortal {
            accounts: accounts.clone(),
            router: router.clone(),
            mailer: mailer.clone(),
            public_url: gateway.public_url.clone(),
            browse_timeout: Duration::from_secs(config.web.browse_timeout_seconds),
        }),
    });
    let console = noc_console::ConsoleState {
        accounts: accounts.clone(),
        live: Arc::new(crate::console::RouterLive {
            router: router.clone(),
            mailer: mailer.clone(),
            public_url: gateway.public_url.clone(),
        }),
        settings: Arc::new(config.console.settings()),
    };
    let alerts = crate::alerts::AlertDispatcher::start(
        accounts.clone(),
        metrics.clone(),
        mailer.clone(),
        &config.alerts,
        &gateway.public_url,
    )
    .map_err(NodeError::Config)?;
    let state = GatewayState {
        alerts,
        accounts,
        web,
        console,
        router,
        rts,
        sessions,
        config: Arc::new(gateway),
        draining: Arc::new(AtomicBool::new(false)),
    };
    let usage = Arc::new(crate::usage::UsageFlusher::new(state.accounts.clone(), state.router.clone()));
    let every = Duration::from_secs(config.accounts.usage_flush_interval_seconds);
    actix_rt::spawn(usage.clone().run(every));
    Ok(Wired { state, metrics, usage })
}

/// Tells the cluster how many sessions this node holds, every second (a memory write; a
/// distributed backend publishes it with its membership upkeep), for the operators' view.
async fn report_load(router: Arc<Router>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (devices, ves) = (router.device_sessions() as u64, router.ves_sessions() as u64);
        router.cluster().report_load(devices, ves);
    }
}

/// Purges audit events past their retention once a day (whichever node gets there first;
/// the others find the day's purge in the log and skip). Looks hourly, so a restart does
/// not postpone it.
async fn audit_purge(accounts: Accounts, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match accounts.purge_audit(retention).await {
            Ok(Some(purged)) => tracing::info!(purged, "audit log purged past its retention"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit purge failed; retrying within the hour"),
        }
    }
}

/// Ends the live sessions of licenses that were suspended (possibly by `noc admin` in
/// another process, or on another node) or that expired, and the device sessions of
/// licenses that lost ConstantSync: logins check the license, but a session opened before
/// lives on until something closes it. Each node closes its own
/// sessions, so nothing crosses the bus.
async fn license_watch(accounts: Accounts, router: Arc<Router>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match accounts.ves_of_unusable_licenses().await {
            Ok(ves) => {
                let ves: HashSet<_> = ves.into_iter().collect();
                let closed = router.close_sessions_of_ves(&ves, CloseCode::AccountSuspended);
                if closed > 0 {
                    tracing::info!(sessions = closed, "closed sessions of suspended or expired licenses");
                }
            }
            Err(e) => tracing::warn!(error = %e, "license check failed; retrying at the next interval"),
        }
        match accounts.store().ves_of_licenses_without(Feature::ConstantSync).await {
            Ok(ves) => {
                let ves: HashSet<_> = ves.into_iter().collect();
                let closed = router.close_devices_of_ves(&ves, CloseCode::FeatureDisabled);
                if closed > 0 {
                    tracing::info!(sessions = closed, "closed device sessions of licenses without ConstantSync");
                }
            }
            Err(e) => tracing::warn!(error = %e, "license feature check failed; retrying at the next interval"),
        }
        match accounts.store().ves_of_usable_licenses(noc_protocol::clock::unix_ms_i64()).await {
            Ok(ves) => {
                let without = licenses_without_ves(&router, ves).await;
                router.metrics().licenses_without_ves.set(i64::try_from(without).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "VES presence check failed; retrying at the next interval"),
        }
    }
}

/// How many licenses have none of their VES installations connected to any node: this
/// node's own sessions first, then the cluster registry (one lookup per installation, and
/// only until one of a license's is found). A lookup that fails counts as connected, so
/// that a Redis outage raises its own alert rather than one per license.
async fn licenses_without_ves(router: &Router, ves: Vec<(LicenseId, VesId)>) -> usize {
    let mut by_license: HashMap<LicenseId, Vec<VesId>> = HashMap::new();
    for (license, ves) in ves {
        by_license.entry(license).or_default().push(ves);
    }
    let mut without = 0;
    for installations in by_license.values() {
        let mut connected = false;
        for &id in installations {
            connected = router.ves_session(id).is_some()
                || !matches!(router.cluster().lookup(SessionKey::Ves(id)).await, Ok(None));
            if connected {
                break;
            }
        }
        without += usize::from(!connected);
    }
    without
}
