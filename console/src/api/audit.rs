//! `/admin/v1/audit`: the audit log, newest first, as JSON pages or as CSV. There is no
//! route that changes or deletes it.

use actix_web::{HttpResponse, get, web};
use noc_storage::AuditFilter;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::auth::Operator;
use crate::api::body::Query;
use crate::api::error::ApiFailure;
use crate::api::model::{AuditPage, AuditView};
use crate::state::ConsoleState;

/// Which events.
#[derive(Deserialize, IntoParams, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Exact actor, e.g. `operator:alice`.
    pub actor: Option<String>,
    /// An action (`license.change`), or a prefix ending in `.` (`license.`).
    pub action: Option<String>,
    /// Exact subject, e.g. `license:<id>`.
    pub subject: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// Only events older than this id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size, 1 to 1000 (CSV: up to 100 000); default 100.
    pub limit: Option<u32>,
}

impl AuditQuery {
    pub fn filter(&self, max: u32) -> AuditFilter {
        let blank = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        AuditFilter {
            actor: blank(&self.actor),
            action: blank(&self.action),
            subject: blank(&self.subject),
            since: self.since,
            until: self.until,
            before_id: self.before,
            limit: self.limit.unwrap_or(100).clamp(1, max),
        }
    }
}

/// A page of the audit log (administrators and auditors).
#[utoipa::path(
    tag = "audit",
    operation_id = "audit_list",
    security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400), (status = 401), (status = 403))
)]
#[get("/audit")]
pub async fn list(
    state: web::Data<ConsoleState>,
    op: Operator,
    query: Query<AuditQuery>,
) -> Result<web::Json<AuditPage>, ApiFailure> {
    let mut filter = query.0.filter(1000);
    let limit = filter.limit as usize;
    filter.limit += 1;
    let mut events = state.accounts.audit_as(&op.0, &filter).await?;
    let more = events.len() > limit;
    events.truncate(limit);
    let next_before = if more { events.last().map(|e| e.id) } else { None };
    Ok(web::Json(AuditPage { items: events.into_iter().map(AuditView::from).collect(), next_before }))
}

/// The same events as CSV (`id,at,actor,role,source,action,subject,detail,changes`).
#[utoipa::path(
    tag = "audit",
    operation_id = "audit_csv",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "CSV, newest first", content_type = "text/csv", body = String),
        (status = 400), (status = 401), (status = 403)
    )
)]
#[get("/audit.csv")]
pub async fn csv(
    state: web::Data<ConsoleState>,
    op: Operator,
    query: Query<AuditQuery>,
) -> Result<HttpResponse, ApiFailure> {
    let events = state.accounts.audit_as(&op.0, &query.0.filter(100_000)).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"audit.csv\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(crate::csv::audit(&events)))
}
