//! `/admin/v1/msisdns`: the carrier's MSISDN approval list (administrators), used when
//! `accounts.msisdn_approval = "list"`: only an approved number activates an account.

use actix_web::{HttpResponse, delete, get, post, web};
use noc_storage::MsisdnApprovalRecord;
use noc_storage::operations::MsisdnImport;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::auth::Operator;
use crate::api::body::{Json, Query, Text};
use crate::api::error::ApiFailure;
use crate::state::ConsoleState;

const DEFAULT_PAGE: u32 = 100;

/// An approved MSISDN.
#[derive(Serialize, ToSchema)]
pub struct ApprovalView {
    pub msisdn: String,
    pub approved_by: String,
    /// Unix milliseconds.
    pub approved_at: i64,
}

impl From<MsisdnApprovalRecord> for ApprovalView {
    fn from(a: MsisdnApprovalRecord) -> Self {
        ApprovalView { msisdn: a.msisdn, approved_by: a.approved_by, approved_at: a.approved_at }
    }
}

/// One page of approvals.
#[derive(Serialize, ToSchema)]
pub struct ApprovalPage {
    pub items: Vec<ApprovalView>,
    pub next_offset: Option<u32>,
}

#[derive(Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    /// Part of the MSISDN.
    pub search: Option<String>,
    pub offset: Option<u32>,
    /// Page size, 1 to 200; default 100.
    pub limit: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// `+` and 5 to 20 digits, or the digits alone.
    pub msisdn: String,
}

/// What an approval or an import did.
#[derive(Serialize, ToSchema)]
pub struct ImportResult {
    /// Newly approved.
    pub approved: u64,
    /// Already approved (unchanged).
    pub already_approved: u64,
    /// Lines (1-based) holding no valid MSISDN; when any, nothing was approved.
    pub invalid_lines: Vec<usize>,
}

impl From<MsisdnImport> for ImportResult {
    fn from(i: MsisdnImport) -> Self {
        ImportResult { approved: i.approved, already_approved: i.already, invalid_lines: i.invalid_lines }
    }
}

/// The MSISDNs of a CSV text with their line numbers (1-based): the first column of each
/// non-empty line. A first line without a single digit is a header; anything else is
/// kept, so that a malformed number is refused by its line, never skipped.
pub fn msisdns_of_csv(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split([',', ';', '\t']).next().unwrap_or("").trim().trim_matches('"').to_string()))
        .filter(|(n, cell)| {
            let header = *n == 1 && !cell.bytes().any(|b| b.is_ascii_digit());
            !cell.is_empty() && !header
        })
        .collect()
}

/// Approves the numbers of a CSV text; refused positions are reported as line numbers.
pub async fn import_csv(
    state: &ConsoleState,
    p: &noc_storage::Principal,
    text: &str,
) -> Result<Option<MsisdnImport>, noc_storage::AccountError> {
    let lines = msisdns_of_csv(text);
    if lines.is_empty() {
        return Ok(None);
    }
    let numbers: Vec<String> = lines.iter().map(|(_, m)| m.clone()).collect();
    let mut result = state.accounts.approve_msisdns_as(p, &numbers).await?;
    result.invalid_lines = result.invalid_lines.iter().filter_map(|&i| lines.get(i - 1).map(|(n, _)| *n)).collect();
    Ok(Some(result))
}

/// Approvals, by MSISDN.
#[utoipa::path(
    tag = "msisdns",
    operation_id = "msisdns_list",
    security(("bearer" = [])),
    params(ApprovalQuery),
    responses((status = 200, body = ApprovalPage), (status = 401), (status = 403))
)]
#[get("/msisdns")]
pub async fn list(
    state: web::Data<ConsoleState>,
    op: Operator,
    query: Query<ApprovalQuery>,
) -> Result<web::Json<ApprovalPage>, ApiFailure> {
    let q = query.0;
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, 200));
    let mut items = state.accounts.msisdn_approvals_as(&op.0, q.search.as_deref(), offset, limit + 1).await?;
    let next_offset = (items.len() > limit as usize).then_some(offset + limit);
    items.truncate(limit as usize);
    Ok(web::Json(ApprovalPage { items: items.into_iter().map(ApprovalView::from).collect(), next_offset }))
}

/// Approves one MSISDN.
#[utoipa::path(
    tag = "msisdns",
    operation_id = "msisdns_approve",
    security(("bearer" = [])),
    request_body = ApproveRequest,
    responses((status = 200, body = ImportResult), (status = 400), (status = 401), (status = 403))
)]
#[post("/msisdns")]
pub async fn approve(
    state: web::Data<ConsoleState>,
    op: Operator,
    body: Json<ApproveRequest>,
) -> Result<HttpResponse, ApiFailure> {
    let result = state.accounts.approve_msisdns_as(&op.0, &[body.0.msisdn]).await?;
    if !result.invalid_lines.is_empty() {
        return Err(ApiFailure::bad_request("msisdn must be 5 to 20 digits, optionally after '+'"));
    }
    Ok(HttpResponse::Ok().json(ImportResult::from(result)))
}

/// Approves every MSISDN of a CSV body (first column; a header line is skipped), all or
/// nothing.
#[utoipa::path(
    tag = "msisdns",
    operation_id = "msisdns_import",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv", description = "One MSISDN per line"),
    responses(
        (status = 200, description = "All approved", body = ImportResult),
        (status = 400, description = "Malformed lines: nothing approved", body = ImportResult),
        (status = 401), (status = 403), (status = 413)
    )
)]
#[post("/msisdns/import")]
pub async fn import(state: web::Data<ConsoleState>, op: Operator, body: Text) -> Result<HttpResponse, ApiFailure> {
    let Some(result) = import_csv(&state, &op.0, &body.0).await? else {
        return Err(ApiFailure::bad_request("the body holds no MSISDN"));
    };
    let mut answer = if result.invalid_lines.is_empty() { HttpResponse::Ok() } else { HttpResponse::BadRequest() };
    Ok(answer.json(ImportResult::from(result)))
}

/// Takes an MSISDN off the list (accounts already bound to it keep it).
#[utoipa::path(
    tag = "msisdns",
    operation_id = "msisdns_revoke",
    security(("bearer" = [])),
    params(("msisdn" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404))
)]
#[delete("/msisdns/{msisdn}")]
pub async fn revoke(
    state: web::Data<ConsoleState>,
    op: Operator,
    msisdn: web::Path<String>,
) -> Result<HttpResponse, ApiFailure> {
    state.accounts.revoke_msisdn_as(&op.0, &msisdn).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_gives_its_first_column_without_the_header() {
        let numbers =
            |text: &str| msisdns_of_csv(text).into_iter().map(|(n, m)| format!("{n}:{m}")).collect::<Vec<_>>();
        let csv = "msisdn,name\r\n+15550001,Ann\n\n\"15550002\";Bob\n  +15550003  \n";
        assert_eq!(numbers(csv), ["2:+15550001", "4:15550002", "5:+15550003"], "line numbers as in the file");
        assert_eq!(numbers("+15550001\n+15550002"), ["1:+15550001", "2:+15550002"], "no header");
        assert_eq!(numbers("bad\nnot-a-number"), ["2:not-a-number"], "kept, to be refused by line");
        assert_eq!(numbers("O1555000\n+15550002"), ["1:O1555000", "2:+15550002"], "a typo is no header");
    }
}
