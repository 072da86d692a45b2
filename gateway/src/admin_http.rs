//! The admin listener: health, readiness and metrics, kept off the public listener.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::GatewayState;

/// `/healthz`, `/readyz`, `/metrics`.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Liveness: the process serves requests.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok\n")
}

/// Readiness: the node accepts new sessions — it is not draining and its cluster backend
/// (Redis, or the in-process bus) works. Load balancers stop sending new clients when this
/// fails.
///
/// The account store is reported (`Store`) but does not gate readiness: it is shared by
/// every node, so an outage would take them all out of the load balancer at once, and
/// clients would get refused connections instead of the quick `503 unavailable` /
/// `service_unavailable` that tells them to come back; live sessions relay without it.
async fn readyz(state: web::Data<GatewayState>) -> HttpResponse {
    let store = matches!(tokio::time::timeout(Duration::from_secs(2), state.accounts.store().ping()).await, Ok(Ok(())));
    let cluster = state.router.cluster().healthy();
    let draining = state.is_draining();
    let ready = cluster && !draining;
    let body = json!({ "Ready": ready, "Store": store, "Cluster": cluster, "Draining": draining });
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

async fn metrics(state: web::Data<GatewayState>) -> HttpResponse {
    let m = state.router.metrics();
    m.cluster_up.set(i64::from(state.router.cluster().healthy()));
    m.bus_links_open.set(i64::try_from(state.router.cluster().open_links()).unwrap_or(i64::MAX));
    if let Some(p) = state.accounts.store().pool_status() {
        m.set_store_pool(p.open, p.idle, p.max, p.waiting);
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.router.metrics().render())
}
