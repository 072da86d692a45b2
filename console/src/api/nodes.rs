//! `/admin/v1/nodes` (administrators): the cluster's live nodes and the sessions each
//! holds, as each last reported (every second, through the cluster backend).

use actix_web::{get, web};
use noc_storage::Permission;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::auth::Operator;
use crate::api::error::ApiFailure;
use crate::state::{ConsoleState, NodeSessions};

/// A live node.
#[derive(Serialize, ToSchema)]
pub struct NodeView {
    pub node: String,
    /// Device sessions it holds; `null` when it reports nothing (an older version).
    pub device_sessions: Option<u64>,
    /// VES (RTS) sessions it holds.
    pub ves_sessions: Option<u64>,
    /// When it reported them (Unix ms).
    pub reported_at: Option<i64>,
}

impl From<NodeSessions> for NodeView {
    fn from(n: NodeSessions) -> Self {
        NodeView { node: n.node, device_sessions: n.devices, ves_sessions: n.ves, reported_at: n.reported_at_ms }
    }
}

/// The cluster's live nodes, by id.
#[utoipa::path(
    tag = "nodes",
    operation_id = "nodes_list",
    security(("bearer" = [])),
    responses((status = 200, body = [NodeView]), (status = 401), (status = 403))
)]
#[get("/nodes")]
pub async fn list(state: web::Data<ConsoleState>, op: Operator) -> Result<web::Json<Vec<NodeView>>, ApiFailure> {
    state.accounts.authorize(&op.0, Permission::ReadNodes)?;
    Ok(web::Json(state.live.nodes().await.into_iter().map(NodeView::from).collect()))
}
