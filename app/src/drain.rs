//! Draining a node (SIGTERM, a rolling update): the sessions leave first, the listeners last.
//!
//! Readiness goes false and new handshakes are refused with a hint, so the load balancer
//! and clients move on. Device sessions are told to reconnect elsewhere first, with hints
//! spread over `shutdown.drain_seconds` so the other nodes are not hit by a storm; the VES
//! sessions after them, so that what the devices' queues held and their last
//! acknowledgements still reach the VES, whose command channels then write everything
//! queued before their `Close`. The node waits (at most `shutdown.grace_seconds`) until
//! every session has ended, gives up its registrations, and only then stops the listeners
//! (stopping one ends the sessions on its workers). A drain ends within its grace period.

use std::sync::atomic::Ordering;
use std::time::Duration;

use noc_actors::Metrics;
use noc_gateway::{GatewayState, ServerHandles};
use noc_protocol::CloseCode;
use tokio::time::Instant;

use crate::config::ShutdownConfig;

/// How often the drain looks whether every session has ended.
const POLL: Duration = Duration::from_millis(50);

pub(crate) async fn drain(state: &GatewayState, metrics: &Metrics, servers: &ServerHandles, cfg: &ShutdownConfig) {
    let router = &state.router;
    state.draining.store(true, Ordering::Relaxed);
    metrics.draining.set(1);
    let spread_ms = u32::try_from(cfg.drain_seconds.saturating_mul(1000)).unwrap_or(u32::MAX);
    let flush_deadline = Instant::now() + Duration::from_secs(cfg.grace_seconds);
    // Devices first, while the VES sessions still listen: what their queues held is
    // bounced to the VES, and their last acknowledgements reach it. Wait until every
    // device session ended and wrote its CLOSE (sessions that slipped in are closed too).
    router.close_all_devices(CloseCode::ServerDraining, spread_ms);
    while router.device_writers() > 0 && Instant::now() < flush_deadline {
        router.close_all_devices(CloseCode::ServerDraining, spread_ms);
        tokio::time::sleep(POLL).await;
    }
    // Then the VES sessions: each command channel writes what is queued for it, then its
    // `Close`, before it ends.
    router.close_all_ves(CloseCode::ServerDraining);
    while (router.ves_sessions() > 0 || router.device_writers() > 0) && Instant::now() < flush_deadline {
        router.close_all_devices(CloseCode::ServerDraining, spread_ms);
        tokio::time::sleep(POLL).await;
    }
    // Whatever is left of the grace period (at least a second) bounds the rest: giving up
    // the registrations (Redis may be the reason we are stopping) and the listeners' own
    // graceful stop. Past it, the listeners stop at once.
    let left = flush_deadline.saturating_duration_since(Instant::now());
    let graceful = async {
        router.cluster().leave().await;
        servers.stop(true).await;
        // What this node bounced or forwarded to other nodes while it drained leaves
        // before the process does.
        router.cluster().flush(Duration::from_secs(1)).await;
    };
    if tokio::time::timeout(left.max(Duration::from_secs(1)), graceful).await.is_err() {
        tracing::warn!("drain ran out of its grace period; stopping the listeners now");
        servers.stop(false).await;
    }
}
