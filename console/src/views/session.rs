//! Console sign-ins: a `__Host-` cookie holding an operator token of kind `console`
//! (kept hashed in the store, so any node serves any sign-in), ended after idling; forms
//! carry a CSRF token derived from it, and the sign-in form a double-submit cookie.

use actix_web::{HttpRequest, HttpResponse};
use noc_storage::{AccountError, Principal, TokenKind};
use noc_web::{cookies, csrf, page};

use crate::state::ConsoleState;

/// The sign-in cookie (a different name from the portal's: cookies do not tell ports apart).
pub const COOKIE: &str = "__Host-noc_console";
/// The sign-in form's double-submit cookie.
pub const CSRF_COOKIE: &str = "__Host-noc_console_csrf";

/// A request's signed-in operator.
pub struct Session {
    pub principal: Principal,
    /// The value every form of this sign-in carries.
    pub csrf: String,
    token: String,
}

impl Session {
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether a submitted form is this sign-in's own (CSRF token and origin).
    pub fn form_is_ours(&self, req: &HttpRequest, submitted: &str) -> bool {
        csrf::same_origin(req) && csrf::matches(&self.csrf, submitted)
    }
}

/// The signed-in operator, if the cookie names a live console sign-in.
pub async fn current(state: &ConsoleState, req: &HttpRequest) -> Result<Option<Session>, AccountError> {
    let Some(token) = cookies::get(req, COOKIE) else { return Ok(None) };
    let source = req.peer_addr().map(|a| a.ip());
    let idle = Some(state.settings.idle_timeout);
    Ok(state.accounts.operator_principal(&token, TokenKind::Console, idle, source).await?.map(|principal| Session {
        principal,
        csrf: csrf::for_session(&token),
        token,
    }))
}

/// The way to the sign-in page, for a request without a live sign-in.
pub fn to_sign_in() -> HttpResponse {
    page::see_other("/console/login").insert_header(("Set-Cookie", cookies::clear(COOKIE))).finish()
}

/// The signed-in operator, or the answer that sends the browser to sign in.
pub async fn require(state: &ConsoleState, req: &HttpRequest) -> Result<Session, HttpResponse> {
    match current(state, req).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(to_sign_in()),
        Err(e) => Err(crate::views::failure::from_account(e)),
    }
}

/// A form that carries the CSRF field.
pub trait CsrfForm: serde::de::DeserializeOwned {
    fn csrf(&self) -> &str;
}

/// A form that is a button and its CSRF field, nothing else (suspend, revoke, …).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonForm {
    csrf: String,
}

impl CsrfForm for ButtonForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A state-changing form of the signed-in operator: read, and checked to be theirs.
pub async fn require_form<T: CsrfForm>(
    state: &ConsoleState,
    req: &HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<(Session, T), HttpResponse> {
    let session = require(state, req).await?;
    let form: T = noc_web::form::read(payload).await.map_err(|_| crate::views::failure::bad_form())?;
    if !session.form_is_ours(req, form.csrf()) {
        return Err(crate::views::failure::forged());
    }
    Ok((session, form))
}
