//! Password recovery (white paper §6.2, §9.2.2): `GET/POST /recover` asks for the account
//! and mails a one-time link to its contact address; `GET/POST /recover/{token}` sets a
//! new password with it. The request answers the same whether or not the account exists.
//! Offered only when the relay has an SMTP server (`[mail]`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::{MessagePage, PageError};
use crate::guard::{self, WithCsrf};
use crate::portal::PortalError;
use crate::{WebState, page};

#[derive(Template)]
#[template(path = "recover.html")]
pub struct RecoverPage<'a> {
    pub csrf: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "reset.html")]
pub struct ResetPage<'a> {
    pub csrf: &'a str,
    pub token: &'a str,
    pub error: Option<String>,
}

#[derive(Deserialize)]
pub struct RecoverForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
}

impl WithCsrf for RecoverForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

impl WithCsrf for ResetForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn offered(state: &WebState) -> Result<(), PageError> {
    if state.settings.offer_recovery { Ok(()) } else { Err(PageError::NotFound) }
}

/// Tokens are 64 hex digits; anything else names no link of ours.
fn well_formed(token: &str) -> bool {
    !token.is_empty() && token.len() <= 128 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    offered(&state)?;
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    Ok(page::render_with(builder, &RecoverPage { csrf: &csrf, error: None }))
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    offered(&state)?;
    let f: RecoverForm = guard::anonymous_form(&req, payload).await?;
    let login = f.login.trim();
    if login.is_empty() || login.len() > 254 {
        let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::BAD_REQUEST);
        let error = Some("Enter your e-mail address or mobile number.");
        return Ok(page::render_with(builder, &RecoverPage { csrf: &csrf, error }));
    }
    state.portal.start_recovery(login).await?;
    Ok(page::render(
        StatusCode::OK,
        &MessagePage {
            title: "Check your mail",
            message: "If an account with this address or number exists, we sent a link to its contact address. \
                      The link works once, within 15 minutes.",
            link: Some(("/login", "Back to sign-in")),
        },
    ))
}

fn link_invalid() -> HttpResponse {
    page::render(
        StatusCode::BAD_REQUEST,
        &MessagePage {
            title: "This link cannot be used",
            message: "The link has expired or was used already. Ask for a new one.",
            link: Some(("/recover", "Reset your password")),
        },
    )
}

pub async fn show_reset(
    req: HttpRequest,
    state: web::Data<WebState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    offered(&state)?;
    if !well_formed(&token) {
        return Ok(link_invalid());
    }
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    Ok(page::render_with(builder, &ResetPage { csrf: &csrf, token: &token, error: None }))
}

pub async fn submit_reset(
    req: HttpRequest,
    state: web::Data<WebState>,
    token: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    offered(&state)?;
    let f: ResetForm = guard::anonymous_form(&req, payload).await?;
    if !well_formed(&token) {
        return Ok(link_invalid());
    }
    let refuse = |message: String| {
        let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::BAD_REQUEST);
        page::render_with(builder, &ResetPage { csrf: &csrf, token: &token, error: Some(message) })
    };
    if f.new_password.is_empty() || f.new_password.len() > 1024 {
        return Ok(refuse("Enter a new password.".into()));
    }
    if f.new_password != f.confirm {
        return Ok(refuse("The two new passwords differ.".into()));
    }
    match state.portal.finish_recovery(&token, &f.new_password).await {
        Ok(()) => Ok(page::see_other("/login?recovered=1").finish()),
        Err(PortalError::Invalid(message)) => Ok(refuse(crate::views::activate::sentence(&message))),
        Err(PortalError::InvalidCredentials) => Ok(link_invalid()),
        Err(e) => Err(e.into()),
    }
}
