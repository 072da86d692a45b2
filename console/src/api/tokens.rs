//! `/admin/v1/tokens`: an operator signs in (password and TOTP code) for a bearer token,
//! lists their live tokens and revokes them.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use noc_storage::{TokenKind, TokenScope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::Operator;
use crate::api::body::Json;
use crate::api::error::ApiFailure;
use crate::api::model::TokenView;
use crate::state::ConsoleState;

/// A sign-in for a token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The operator's login name.
    pub name: String,
    pub password: String,
    /// The current TOTP code, or one of the recovery codes.
    pub code: String,
    /// `read` (looks only) or `write`. Default `read`.
    #[serde(default)]
    pub scope: Option<String>,
    /// What the token is for ("nightly audit export").
    #[serde(default)]
    pub label: String,
    /// Lifetime in seconds; default 3600, at most 90 days.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A new token: the secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenView,
}

/// Issues a bearer token.
#[utoipa::path(
    tag = "tokens",
    operation_id = "tokens_issue",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "Token issued", body = IssuedToken),
        (status = 400, description = "Unreadable request or unknown scope"),
        (status = 401, description = "Wrong name, password or code (all alike)"),
        (status = 429, description = "Too many failed attempts: retry after Retry-After"),
    )
)]
#[post("/tokens")]
pub async fn issue(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    body: Json<TokenRequest>,
) -> Result<HttpResponse, ApiFailure> {
    let r = body.0;
    let scope = match r.scope.as_deref() {
        None => TokenScope::Read,
        Some(s) => TokenScope::parse(s).ok_or_else(|| ApiFailure::bad_request("scope is `read` or `write`"))?,
    };
    let source = req.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let operator = state.accounts.operator_sign_in(&r.name, &r.password, &r.code, source).await?;
    let ttl = Duration::from_secs(r.ttl_seconds.unwrap_or(3600));
    let (token, info) =
        state.accounts.issue_operator_token(&operator, TokenKind::Api, scope, &r.label, ttl, Some(source)).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(IssuedToken { token, info: info.into() }))
}

/// The caller's live tokens and console sign-ins.
#[utoipa::path(
    tag = "tokens",
    operation_id = "tokens_list",
    security(("bearer" = [])),
    responses((status = 200, description = "Live tokens, newest first", body = [TokenView]), (status = 401))
)]
#[get("/tokens")]
pub async fn list(state: web::Data<ConsoleState>, op: Operator) -> Result<web::Json<Vec<TokenView>>, ApiFailure> {
    let tokens = state.accounts.own_operator_tokens(&op.0).await?;
    Ok(web::Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// Revokes one of the caller's tokens (the one in use too).
#[utoipa::path(
    tag = "tokens",
    operation_id = "tokens_revoke",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The token's public id")),
    responses((status = 204, description = "Revoked"), (status = 401), (status = 404))
)]
#[delete("/tokens/{id}")]
pub async fn revoke(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiFailure> {
    state.accounts.revoke_own_operator_token(&op.0, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
