//! Password recovery (white paper §6.2, §9.2.2): `GET/POST /recover` asks for the account
//! and mails a one-time link to its contact address (only when the relay has an SMTP
//! server, `[mail]`); `GET/POST /recover/question` is the older secret-question route,
//! which works only where the user's license allows it; both lead to
//! `GET/POST /recover/{token}`, which sets a new password. Every answer reads the same
//! whether or not the account exists.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::{MessagePage, PageError};
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::{PortalError, SECRET_QUESTIONS};
use crate::{WebState, page};

#[derive(Template)]
#[template(path = "recover.html")]
pub struct RecoverPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub error: Option<String>,
    /// The mailed link is offered (the relay has an SMTP server).
    pub by_mail: bool,
}

#[derive(Template)]
#[template(path = "recover_question.html")]
pub struct QuestionPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub login: &'a str,
    pub questions: &'static [&'static str],
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "reset.html")]
pub struct ResetPage<'a> {
    pub t: Lang,
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
pub struct QuestionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    question: String,
    #[serde(default)]
    answer: String,
}

impl WithCsrf for QuestionForm {
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
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    let p = RecoverPage { t: Lang::of(&req, None), csrf: &csrf, error: None, by_mail: state.settings.offer_recovery };
    Ok(page::render_with(builder, &p))
}

pub async fn show_question(req: HttpRequest) -> Result<HttpResponse, PageError> {
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    let p = QuestionPage { t: Lang::of(&req, None), csrf: &csrf, login: "", questions: &SECRET_QUESTIONS, error: None };
    Ok(page::render_with(builder, &p))
}

/// `POST /recover/question`: the right answer leads to the new-password form of a
/// one-time recovery token; every mismatch reads the same.
pub async fn submit_question(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let f: QuestionForm = guard::anonymous_form(&req, payload).await?;
    let login = f.login.trim();
    let t = Lang::of(&req, None);
    let refuse = |status: StatusCode, error: String| {
        let (csrf, builder) = guard::anonymous_csrf(&req, status);
        let p = QuestionPage { t, csrf: &csrf, login, questions: &SECRET_QUESTIONS, error: Some(error) };
        page::render_with(builder, &p)
    };
    if login.is_empty() || login.len() > 254 || f.answer.trim().is_empty() || f.answer.len() > 1024 {
        return Ok(refuse(StatusCode::BAD_REQUEST, t.get("recover-question-missing")));
    }
    match state.portal.recover_by_question(login, &f.question, &f.answer, crate::source(&req)).await {
        Ok(token) => Ok(page::see_other(&format!("/recover/{token}")).finish()),
        Err(PortalError::InvalidCredentials) => Ok(refuse(StatusCode::UNAUTHORIZED, t.get("recover-question-wrong"))),
        Err(PortalError::Throttled { retry_after }) => {
            let answer = refuse(StatusCode::TOO_MANY_REQUESTS, t.too_many_attempts(retry_after));
            Ok(page::retry_after(answer, retry_after))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    offered(&state)?;
    let f: RecoverForm = guard::anonymous_form(&req, payload).await?;
    let login = f.login.trim();
    let t = Lang::of(&req, None);
    let refuse = |status: StatusCode, error: String| {
        let (csrf, builder) = guard::anonymous_csrf(&req, status);
        page::render_with(builder, &RecoverPage { t, csrf: &csrf, error: Some(error), by_mail: true })
    };
    if login.is_empty() || login.len() > 254 {
        return Ok(refuse(StatusCode::BAD_REQUEST, t.get("recover-login-missing")));
    }
    match state.portal.start_recovery(login, crate::source(&req)).await {
        Ok(()) => {}
        Err(PortalError::Throttled { retry_after }) => {
            let answer = refuse(StatusCode::TOO_MANY_REQUESTS, t.too_many_attempts(retry_after));
            return Ok(page::retry_after(answer, retry_after));
        }
        Err(e) => return Err(e.into()),
    }
    let (title, message, back) = (t.get("recover-sent-title"), t.get("recover-sent"), t.get("recover-back"));
    Ok(page::render(
        StatusCode::OK,
        &MessagePage { t, title: &title, message: &message, link: Some(("/login", &back)) },
    ))
}

fn link_invalid(t: Lang) -> HttpResponse {
    let (title, message, again) = (t.get("reset-invalid-title"), t.get("reset-invalid"), t.get("recover-title"));
    page::render(
        StatusCode::BAD_REQUEST,
        &MessagePage { t, title: &title, message: &message, link: Some(("/recover", &again)) },
    )
}

pub async fn show_reset(req: HttpRequest, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let t = Lang::of(&req, None);
    if !well_formed(&token) {
        return Ok(link_invalid(t));
    }
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    Ok(page::render_with(builder, &ResetPage { t, csrf: &csrf, token: &token, error: None }))
}

pub async fn submit_reset(
    req: HttpRequest,
    state: web::Data<WebState>,
    token: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let f: ResetForm = guard::anonymous_form(&req, payload).await?;
    let t = Lang::of(&req, None);
    if !well_formed(&token) {
        return Ok(link_invalid(t));
    }
    let refuse = |message: String| {
        let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::BAD_REQUEST);
        page::render_with(builder, &ResetPage { t, csrf: &csrf, token: &token, error: Some(message) })
    };
    if f.new_password.is_empty() || f.new_password.len() > 1024 {
        return Ok(refuse(t.get("form-new-password-missing")));
    }
    if f.new_password != f.confirm {
        return Ok(refuse(t.get("form-passwords-differ")));
    }
    match state.portal.finish_recovery(&token, &f.new_password).await {
        Ok(()) => Ok(page::see_other("/login?recovered=1").finish()),
        Err(PortalError::Invalid(problem)) => Ok(refuse(t.problem(problem))),
        Err(PortalError::InvalidCredentials) => Ok(link_invalid(t)),
        Err(e) => Err(e.into()),
    }
}
