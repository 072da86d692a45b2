//! `/console/nodes` (administrators): the live nodes and their sessions.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_storage::Permission;
use noc_web::page;

use crate::state::ConsoleState;
use crate::views::{Nav, failure, session};

#[derive(Template)]
#[template(path = "console_nodes.html")]
struct NodesPage {
    nav: Nav,
    /// (node, devices, VES, reported).
    nodes: Vec<(String, String, String, String)>,
    total_devices: u64,
    total_ves: u64,
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    if let Err(e) = state.accounts.authorize(&s.principal, Permission::ReadNodes) {
        return failure::from_account(e);
    }
    let nodes = state.live.nodes().await;
    let total_devices = nodes.iter().filter_map(|n| n.devices).sum();
    let total_ves = nodes.iter().filter_map(|n| n.ves).sum();
    let count = |v: Option<u64>| v.map_or_else(|| "unknown".to_string(), |n| n.to_string());
    let rows = nodes
        .into_iter()
        .map(|n| (n.node, count(n.devices), count(n.ves), n.reported_at_ms.map(page::utc).unwrap_or_default()))
        .collect();
    page::render(StatusCode::OK, &NodesPage { nav: Nav::of(&s), nodes: rows, total_devices, total_ves })
}
