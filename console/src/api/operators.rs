//! `/admin/v1/operators`: operator accounts (administrators only).

use actix_web::{HttpResponse, get, post, web};
use noc_storage::OperatorRole;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::Operator;
use crate::api::body::Json;
use crate::api::error::ApiFailure;
use crate::api::model::OperatorView;
use crate::state::ConsoleState;

/// A new operator.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOperatorRequest {
    /// 3 to 64 of a-z, 0-9, `.`, `_`, `-`.
    pub name: String,
    /// `noc-admin`, `csr` or `auditor`.
    pub role: String,
    /// The initial password (the password rules apply).
    pub password: String,
}

/// What the new operator needs to sign in, shown this once: hand it over in person.
#[derive(Serialize, ToSchema)]
pub struct Enrolment {
    pub operator: OperatorView,
    /// The TOTP secret, base32, for an authenticator app.
    pub totp_secret: String,
    /// The `otpauth://` URI (what a QR code carries).
    pub totp_uri: String,
    /// Single-use codes for a lost authenticator.
    pub recovery_codes: Vec<String>,
}

/// Every operator, by name.
#[utoipa::path(
    tag = "operators",
    operation_id = "operators_list",
    security(("bearer" = [])),
    responses((status = 200, body = [OperatorView]), (status = 401), (status = 403))
)]
#[get("/operators")]
pub async fn list(state: web::Data<ConsoleState>, op: Operator) -> Result<web::Json<Vec<OperatorView>>, ApiFailure> {
    let operators = state.accounts.operators_as(&op.0).await?;
    Ok(web::Json(operators.into_iter().map(OperatorView::from).collect()))
}

/// Disables an operator: every token and console sign-in of theirs ends at once, and
/// they cannot sign in. Not one's own account.
#[utoipa::path(
    tag = "operators",
    operation_id = "operators_disable",
    security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = OperatorView), (status = 400), (status = 401), (status = 403), (status = 404))
)]
#[post("/operators/{name}/disable")]
pub async fn disable(
    state: web::Data<ConsoleState>,
    op: Operator,
    name: web::Path<String>,
) -> Result<web::Json<OperatorView>, ApiFailure> {
    Ok(web::Json(state.accounts.set_operator_disabled_as(&op.0, &name, true).await?.into()))
}

/// Enables a disabled operator again (they sign in with their password and authenticator).
#[utoipa::path(
    tag = "operators",
    operation_id = "operators_enable",
    security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = OperatorView), (status = 400), (status = 401), (status = 403), (status = 404))
)]
#[post("/operators/{name}/enable")]
pub async fn enable(
    state: web::Data<ConsoleState>,
    op: Operator,
    name: web::Path<String>,
) -> Result<web::Json<OperatorView>, ApiFailure> {
    Ok(web::Json(state.accounts.set_operator_disabled_as(&op.0, &name, false).await?.into()))
}

/// Creates an operator.
#[utoipa::path(
    tag = "operators",
    operation_id = "operators_create",
    security(("bearer" = [])),
    request_body = NewOperatorRequest,
    responses((status = 201, body = Enrolment), (status = 400), (status = 401), (status = 403), (status = 409))
)]
#[post("/operators")]
pub async fn create(
    state: web::Data<ConsoleState>,
    op: Operator,
    body: Json<NewOperatorRequest>,
) -> Result<HttpResponse, ApiFailure> {
    let r = body.0;
    let role = OperatorRole::parse(&r.role)
        .ok_or_else(|| ApiFailure::bad_request("role is `noc-admin`, `csr` or `auditor`"))?;
    let e = state.accounts.create_operator_as(&op.0, &r.name, role, &r.password).await?;
    Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(Enrolment {
        operator: e.operator.into(),
        totp_secret: e.totp_secret,
        totp_uri: e.totp_uri,
        recovery_codes: e.recovery_codes,
    }))
}
