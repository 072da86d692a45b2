//! `/console/login` and `/console/logout`: name, password and the authenticator's code
//! (or a recovery code), all required; the refusal does not say which was wrong.

use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_storage::{AccountError, TokenKind, TokenScope};
use noc_web::{cookies, csrf, form, page};
use serde::Deserialize;

use crate::state::ConsoleState;
use crate::views::{failure, home_of, session};

#[derive(Template)]
#[template(path = "console_signin.html")]
struct SignInPage<'a> {
    csrf: &'a str,
    name: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInForm {
    csrf: String,
    name: String,
    password: String,
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOutForm {
    csrf: String,
}

/// The sign-in form, with a fresh double-submit value in its cookie.
fn form_page(status: StatusCode, name: &str, error: Option<&str>) -> HttpResponse {
    let value = csrf::fresh();
    let mut b = HttpResponse::build(status);
    b.insert_header(("Set-Cookie", cookies::set(session::CSRF_COOKIE, &value, "Strict", None)));
    page::render_with(b, &SignInPage { csrf: &value, name, error })
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    match session::current(&state, &req).await {
        Ok(Some(s)) => page::see_other(home_of(&s.principal)).finish(),
        _ => form_page(StatusCode::OK, "", None),
    }
}

pub async fn submit(state: web::Data<ConsoleState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let Ok(f) = form::read::<SignInForm>(payload).await else { return failure::bad_form() };
    let expected = cookies::get(&req, session::CSRF_COOKIE).unwrap_or_default();
    if !csrf::same_origin(&req) || expected.is_empty() || !csrf::matches(&expected, &f.csrf) {
        return form_page(StatusCode::FORBIDDEN, &f.name, Some("The form expired; sign in again."));
    }
    let source = req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let operator = match state.accounts.operator_sign_in(&f.name, &f.password, &f.code, source).await {
        Ok(o) => o,
        Err(AccountError::InvalidCredentials | AccountError::Suspended) => {
            return form_page(StatusCode::UNAUTHORIZED, &f.name, Some("Wrong name, password or code."));
        }
        Err(AccountError::Throttled(t)) => {
            let answer = form_page(
                StatusCode::TOO_MANY_REQUESTS,
                &f.name,
                Some("Too many failed attempts: wait a while before trying again."),
            );
            return page::retry_after(answer, t.retry_after());
        }
        Err(e) => return failure::from_account(e),
    };
    let client = req.headers().get("User-Agent").and_then(|v| v.to_str().ok()).unwrap_or("browser");
    let issued = state
        .accounts
        .issue_operator_token(
            &operator,
            TokenKind::Console,
            TokenScope::Write,
            client,
            state.settings.max_session,
            Some(source),
        )
        .await;
    match issued {
        Ok((token, _)) => {
            let home = if operator.role == noc_storage::OperatorRole::Auditor {
                "/console/audit"
            } else {
                "/console/licenses"
            };
            page::see_other(home)
                .append_header(("Set-Cookie", cookies::set(session::COOKIE, &token, "Strict", None)))
                .append_header(("Set-Cookie", cookies::clear(session::CSRF_COOKIE)))
                .finish()
        }
        Err(e) => failure::from_account(e),
    }
}

pub async fn sign_out(state: web::Data<ConsoleState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let Ok(f) = form::read::<SignOutForm>(payload).await else { return failure::bad_form() };
    match session::current(&state, &req).await {
        Ok(Some(s)) if s.form_is_ours(&req, &f.csrf) => {
            if let Err(e) = state.accounts.end_console_session(s.token()).await {
                return failure::from_account(e);
            }
            session::to_sign_in()
        }
        Ok(Some(_)) => failure::forged(),
        Ok(None) => session::to_sign_in(),
        Err(e) => failure::from_account(e),
    }
}
