//! `/admin/v1/usage`: what each license used per day (white paper §8.3): frames and bytes
//! relayed each way, undeliverable notices, device-connected time, active devices and
//! users. As JSON and as CSV, for billing and capacity planning.

use actix_web::{HttpResponse, get, web};
use noc_protocol::clock::{iso_date, parse_iso_date, unix_ms_i64};
use noc_storage::{UsageDay, UsageFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::auth::Operator;
use crate::api::body::Query;
use crate::api::error::ApiFailure;
use crate::state::ConsoleState;

/// Which records; by default the last 31 days (UTC) of every license in reach.
#[derive(Deserialize, IntoParams, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// A license id.
    pub license: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC).
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), included.
    pub to: Option<String>,
}

impl UsageQuery {
    /// The store's filter; the message names the parameter at fault.
    pub fn filter(&self) -> Result<UsageFilter, &'static str> {
        let today = unix_ms_i64().div_euclid(86_400_000);
        let day = |v: &Option<String>, default: i64, name: &'static str| match v.as_deref().map(str::trim) {
            None | Some("") => Ok(default),
            Some(text) => parse_iso_date(text).ok_or(name),
        };
        let to_day = day(&self.to, today, "to is a date, YYYY-MM-DD")?;
        let from_day = day(&self.from, to_day - 30, "from is a date, YYYY-MM-DD")?;
        let license = match self.license.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(l) => Some(l.parse().map_err(|_| "license is a license id")?),
        };
        Ok(UsageFilter { from_day, to_day, license, granted_to: None })
    }
}

/// One license's use of one day.
#[derive(Serialize, ToSchema)]
pub struct UsageView {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub license_id: String,
    pub frames_to_ves: u64,
    pub bytes_to_ves: u64,
    pub frames_to_devices: u64,
    pub bytes_to_devices: u64,
    /// Undeliverable notices written to the license's peers.
    pub undeliverable: u64,
    /// Seconds devices were connected, summed over devices.
    pub device_seconds: u64,
    pub active_devices: u64,
    pub active_users: u64,
}

impl From<UsageDay> for UsageView {
    fn from(u: UsageDay) -> Self {
        UsageView {
            day: iso_date(u.day),
            license_id: u.license_id.to_string(),
            frames_to_ves: u.frames_to_ves,
            bytes_to_ves: u.bytes_to_ves,
            frames_to_devices: u.frames_to_devices,
            bytes_to_devices: u.bytes_to_devices,
            undeliverable: u.undeliverable,
            device_seconds: u.device_seconds,
            active_devices: u.active_devices,
            active_users: u.active_users,
        }
    }
}

async fn records(state: &ConsoleState, op: &Operator, query: &UsageQuery) -> Result<Vec<UsageDay>, ApiFailure> {
    let filter = query.filter().map_err(ApiFailure::bad_request)?;
    Ok(state.accounts.usage_as(&op.0, &filter).await?)
}

/// Usage by day, then license (administrators and auditors: every license; CSRs: theirs).
#[utoipa::path(
    tag = "usage",
    operation_id = "usage_list",
    security(("bearer" = [])),
    params(UsageQuery),
    responses((status = 200, body = [UsageView]), (status = 400), (status = 401), (status = 403), (status = 404))
)]
#[get("/usage")]
pub async fn list(
    state: web::Data<ConsoleState>,
    op: Operator,
    query: Query<UsageQuery>,
) -> Result<web::Json<Vec<UsageView>>, ApiFailure> {
    let days = records(&state, &op, &query.0).await?;
    Ok(web::Json(days.into_iter().map(UsageView::from).collect()))
}

/// The same records as CSV.
#[utoipa::path(
    tag = "usage",
    operation_id = "usage_csv",
    security(("bearer" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "CSV by day, then license", content_type = "text/csv", body = String),
        (status = 400), (status = 401), (status = 403), (status = 404)
    )
)]
#[get("/usage.csv")]
pub async fn csv(
    state: web::Data<ConsoleState>,
    op: Operator,
    query: Query<UsageQuery>,
) -> Result<HttpResponse, ApiFailure> {
    let days = records(&state, &op, &query.0).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"usage.csv\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(crate::csv::usage(&days)))
}
