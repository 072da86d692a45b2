//! `/console/msisdns` (administrators): the carrier's MSISDN approval list — search,
//! approve one or paste a whole CSV (all or nothing), revoke.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_web::page;
use serde::Deserialize;

use crate::api::msisdns::import_csv;
use crate::state::ConsoleState;
use crate::views::session::{self, CsrfForm};
use crate::views::{Nav, failure};

const PAGE: u32 = 100;

#[derive(Template)]
#[template(path = "console_msisdns.html")]
struct MsisdnsPage {
    nav: Nav,
    notice: Option<String>,
    search: String,
    search_url: String,
    /// (MSISDN, approved by, when).
    approvals: Vec<(String, String, String)>,
    next_offset: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    search: String,
    #[serde(default)]
    offset: u32,
    /// What the last action did (after its redirect).
    #[serde(default)]
    done: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveForm {
    csrf: String,
    numbers: String,
}

impl CsrfForm for ApproveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeForm {
    csrf: String,
    msisdn: String,
}

impl CsrfForm for RevokeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The notice for a `done` value (only ours: digits and words we chose).
fn notice(done: &str) -> Option<String> {
    let (what, n) = done.split_once(':')?;
    let n: u64 = n.parse().ok()?;
    match what {
        "approved" => Some(format!("{n} number(s) approved.")),
        "revoked" => Some("The number is no longer approved.".to_string()),
        _ => None,
    }
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Ok(q) = serde_urlencoded::from_str::<ListQuery>(req.query_string()) else { return failure::bad_form() };
    let search = Some(q.search.as_str()).filter(|s| !s.trim().is_empty());
    match state.accounts.msisdn_approvals_as(&s.principal, search, q.offset, PAGE + 1).await {
        Ok(mut approvals) => {
            let next_offset = (approvals.len() > PAGE as usize).then_some(q.offset + PAGE);
            approvals.truncate(PAGE as usize);
            let search_url = serde_urlencoded::to_string([("", &q.search)]).unwrap_or_default();
            page::render(
                StatusCode::OK,
                &MsisdnsPage {
                    nav: Nav::of(&s),
                    notice: notice(&q.done),
                    search_url: search_url.trim_start_matches('=').to_string(),
                    search: q.search,
                    approvals: approvals
                        .into_iter()
                        .map(|a| (a.msisdn, a.approved_by, page::utc(a.approved_at)))
                        .collect(),
                    next_offset,
                },
            )
        }
        Err(e) => failure::from_account(e),
    }
}

pub async fn approve(state: web::Data<ConsoleState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let (s, f) = match session::require_form::<ApproveForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    match import_csv(&state, &s.principal, &f.numbers).await {
        Ok(None) => failure::message(StatusCode::BAD_REQUEST, "Check the form", "Give at least one number."),
        Ok(Some(r)) if r.invalid_lines.is_empty() => {
            page::see_other(&format!("/console/msisdns?done=approved:{}", r.approved)).finish()
        }
        Ok(Some(r)) => {
            let lines: Vec<String> = r.invalid_lines.iter().take(20).map(usize::to_string).collect();
            let text = format!(
                "Nothing was approved: these numbers are not 5 to 20 digits (optionally after '+'): line(s) {}.",
                lines.join(", ")
            );
            failure::message(StatusCode::BAD_REQUEST, "Check the numbers", &text)
        }
        Err(e) => failure::from_account(e),
    }
}

pub async fn revoke(state: web::Data<ConsoleState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let (s, f) = match session::require_form::<RevokeForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    match state.accounts.revoke_msisdn_as(&s.principal, &f.msisdn).await {
        Ok(()) => page::see_other("/console/msisdns?done=revoked:1").finish(),
        Err(e) => failure::from_account(e),
    }
}
