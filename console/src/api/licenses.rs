//! `/admin/v1/licenses`: licenses in the caller's reach; a CSR's are those they created
//! or were given.

use actix_web::{HttpResponse, get, patch, post, web};
use noc_protocol::LicenseId;
use noc_storage::{Features, LicenseChange, LicenseDraft};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::api::auth::Operator;
use crate::api::body::Json;
use crate::api::error::ApiFailure;
use crate::api::model::{FeatureFlags, LicenseView, VesView};
use crate::state::ConsoleState;

/// A license id from the path; anything else is a record that does not exist.
pub fn license_id(id: &str) -> Result<LicenseId, ApiFailure> {
    id.parse().map_err(|_| ApiFailure::not_found())
}

/// A new license.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLicenseRequest {
    pub name: String,
    /// The password its enterprise servers sign in with (the password rules apply).
    pub password: String,
    pub max_users: u32,
    /// Unix milliseconds; absent or `null`: never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Absent: every feature.
    #[serde(default)]
    pub features: Option<FeatureFlags>,
    /// The enterprise's administrator for this license.
    #[serde(default)]
    pub admin_email: Option<String>,
}

/// What to change; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseChangeRequest {
    pub max_users: Option<u32>,
    /// Unix milliseconds; `null`: never expires; absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub expires_at: Option<Option<i64>>,
    /// Suspending ends the license's live sessions on every node within seconds.
    pub suspended: Option<bool>,
    pub secret_question_recovery: Option<bool>,
    /// Devices must authenticate with a client certificate and activate with a
    /// certificate request (docs/certificates.md); their credential no longer opens a
    /// session.
    pub require_client_certificates: Option<bool>,
    /// The whole set. Taking ConstantSync away ends the license's device sessions within
    /// `accounts.license_check_interval_seconds`; alerts and ConstantSync reach its
    /// enterprise servers at once.
    pub features: Option<FeatureFlags>,
    /// `null` or `""`: none; absent: unchanged.
    #[serde(default, deserialize_with = "present_text")]
    #[schema(value_type = Option<String>)]
    pub admin_email: Option<Option<String>>,
}

fn present_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `Some(None)` for an explicit `null`, `None` (by `default`) for an absent field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Gives the license into an operator's care.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The operator's login name.
    pub operator: String,
}

/// The licenses in the caller's reach, by name.
#[utoipa::path(
    tag = "licenses",
    operation_id = "licenses_list",
    security(("bearer" = [])),
    responses((status = 200, body = [LicenseView]), (status = 401), (status = 403))
)]
#[get("/licenses")]
pub async fn list(state: web::Data<ConsoleState>, op: Operator) -> Result<web::Json<Vec<LicenseView>>, ApiFailure> {
    let licenses = state.accounts.licenses_as(&op.0).await?;
    Ok(web::Json(licenses.into_iter().map(LicenseView::from).collect()))
}

/// Creates a license; a CSR's is in their care from then on.
#[utoipa::path(
    tag = "licenses",
    operation_id = "licenses_create",
    security(("bearer" = [])),
    request_body = NewLicenseRequest,
    responses((status = 201, body = LicenseView), (status = 400), (status = 401), (status = 403), (status = 409))
)]
#[post("/licenses")]
pub async fn create(
    state: web::Data<ConsoleState>,
    op: Operator,
    body: Json<NewLicenseRequest>,
) -> Result<HttpResponse, ApiFailure> {
    let r = body.0;
    let draft = LicenseDraft {
        name: r.name,
        password: r.password,
        max_users: r.max_users,
        expires_at: r.expires_at,
        features: r.features.map_or(Features::ALL, Features::from),
        admin_email: r.admin_email,
    };
    let license = state.accounts.create_license_as(&op.0, &draft).await?;
    Ok(HttpResponse::Created().json(LicenseView::from(license)))
}

/// One license.
#[utoipa::path(
    tag = "licenses",
    operation_id = "licenses_show",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = LicenseView), (status = 401), (status = 403), (status = 404))
)]
#[get("/licenses/{id}")]
pub async fn show(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<web::Json<LicenseView>, ApiFailure> {
    Ok(web::Json(state.accounts.license_as(&op.0, license_id(&id)?).await?.into()))
}

/// Changes seats, expiry, suspension or features.
#[utoipa::path(
    tag = "licenses",
    operation_id = "licenses_change",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = LicenseChangeRequest,
    responses((status = 200, body = LicenseView), (status = 400), (status = 401), (status = 403), (status = 404))
)]
#[patch("/licenses/{id}")]
pub async fn change(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
    body: Json<LicenseChangeRequest>,
) -> Result<web::Json<LicenseView>, ApiFailure> {
    let r = body.0;
    let change = LicenseChange {
        max_users: r.max_users,
        expires_at: r.expires_at,
        suspended: r.suspended,
        secret_question_recovery: r.secret_question_recovery,
        require_client_certificates: r.require_client_certificates,
        features: r.features.map(Features::from),
        admin_email: r.admin_email,
    };
    Ok(web::Json(crate::actions::change_license(&state, &op.0, license_id(&id)?, &change).await?.into()))
}

/// The operators (by name) the license is granted to.
#[utoipa::path(
    tag = "licenses",
    operation_id = "licenses_grantees",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = [String]), (status = 401), (status = 403), (status = 404))
)]
#[get("/licenses/{id}/operators")]
pub async fn grantees(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<web::Json<Vec<String>>, ApiFailure> {
    Ok(web::Json(state.accounts.license_grantees_as(&op.0, license_id(&id)?).await?))
}

/// The license's VES installations, most recently connected first, with the node each
/// is connected to now.
#[utoipa::path(
    tag = "licenses",
    operation_id = "licenses_ves",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = [VesView]), (status = 401), (status = 403), (status = 404))
)]
#[get("/licenses/{id}/ves")]
pub async fn ves(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<web::Json<Vec<VesView>>, ApiFailure> {
    Ok(web::Json(crate::actions::installations(&state, &op.0, license_id(&id)?).await?))
}

/// Gives the license into an operator's care (administrators).
#[utoipa::path(
    tag = "licenses",
    operation_id = "licenses_grant",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = GrantRequest,
    responses((status = 204), (status = 401), (status = 403), (status = 404))
)]
#[post("/licenses/{id}/operators")]
pub async fn grant(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
    body: Json<GrantRequest>,
) -> Result<HttpResponse, ApiFailure> {
    state.accounts.grant_license_as(&op.0, license_id(&id)?, &body.0.operator).await?;
    Ok(HttpResponse::NoContent().finish())
}
