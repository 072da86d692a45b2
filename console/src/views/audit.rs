//! `/console/audit` (administrators and auditors): the audit log, newest first, filtered
//! by actor and action, paged, and downloadable as CSV with the same filter.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_storage::{AuditEvent, AuditFilter};
use noc_web::page;
use serde::Deserialize;

use crate::state::ConsoleState;
use crate::views::session;
use crate::views::{Nav, failure};

const PAGE: u32 = 100;

pub use noc_web::page::utc;

pub struct Row {
    when: String,
    actor: String,
    role: String,
    source: String,
    action: String,
    subject: String,
    changes: String,
}

impl From<AuditEvent> for Row {
    fn from(e: AuditEvent) -> Self {
        let changes: Vec<String> =
            e.changes.iter().map(|c| format!("{}: {} → {}", c.field, c.before, c.after)).collect();
        let mut changes = changes.join("; ");
        if changes.is_empty() {
            changes = e.detail;
        }
        Row {
            when: utc(e.at),
            actor: e.actor,
            role: e.role,
            source: e.source,
            action: e.action,
            subject: e.subject,
            changes,
        }
    }
}

#[derive(Template)]
#[template(path = "console_audit.html")]
struct AuditPage {
    nav: Nav,
    actor: String,
    action: String,
    /// The filter as a query string, for the CSV link and the next page.
    query: String,
    events: Vec<Row>,
    older: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    before: Option<i64>,
}

impl AuditQuery {
    fn filter(&self, limit: u32) -> AuditFilter {
        let given = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        AuditFilter {
            actor: given(&self.actor),
            action: given(&self.action),
            before_id: self.before,
            limit,
            ..AuditFilter::default()
        }
    }
}

fn query(req: &HttpRequest) -> Option<AuditQuery> {
    serde_urlencoded::from_str(req.query_string()).ok()
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Some(q) = query(&req) else { return failure::bad_form() };
    match state.accounts.audit_as(&s.principal, &q.filter(PAGE + 1)).await {
        Ok(mut events) => {
            let more = events.len() > PAGE as usize;
            events.truncate(PAGE as usize);
            let older = if more { events.last().map(|e| e.id) } else { None };
            let query = serde_urlencoded::to_string([("actor", q.actor.trim()), ("action", q.action.trim())])
                .unwrap_or_default();
            page::render(
                StatusCode::OK,
                &AuditPage {
                    nav: Nav::of(&s),
                    actor: q.actor,
                    action: q.action,
                    query,
                    events: events.into_iter().map(Row::from).collect(),
                    older,
                },
            )
        }
        Err(e) => failure::from_account(e),
    }
}

pub async fn csv(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Some(q) = query(&req) else { return failure::bad_form() };
    match state.accounts.audit_as(&s.principal, &q.filter(100_000)).await {
        Ok(events) => {
            let mut b = HttpResponse::Ok();
            page::secure(&mut b)
                .content_type("text/csv; charset=utf-8")
                .insert_header(("Content-Disposition", "attachment; filename=\"audit.csv\""))
                .body(crate::csv::audit(&events))
        }
        Err(e) => failure::from_account(e),
    }
}
