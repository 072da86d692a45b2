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
use crate::portal::PortalError;
use crate::{WebState, page};

#[derive(Template)]
#[template(path = "recover.html")]
pub struct RecoverPage<'a> {
    pub csrf: &'a str,
    pub error: Option<&'a str>,
    /// The mailed link is offered (the relay has an SMTP server).
    pub by_mail: bool,
}

#[derive(Template)]
#[template(path = "recover_question.html")]
pub struct QuestionPage<'a> {
    pub csrf: &'a str,
    pub login: &'a str,
    pub questions: Vec<(&'static str, &'static str)>,
    pub error: Option<String>,
}

/// How the pages word each secret question.
pub fn question_text(key: &str) -> &'static str {
    match key {
        "first_school" => "What was the name of your first school?",
        "first_pet" => "What was the name of your first pet?",
        "birth_city" => "In which city were you born?",
        "childhood_friend" => "What is the first name of your best childhood friend?",
        "first_street" => "In which street did you live as a child?",
        _ => "",
    }
}

pub fn questions() -> Vec<(&'static str, &'static str)> {
    crate::portal::SECRET_QUESTIONS.iter().map(|k| (*k, question_text(k))).collect()
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
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    let by_mail = state.settings.offer_recovery;
    Ok(page::render_with(builder, &RecoverPage { csrf: &csrf, error: None, by_mail }))
}

pub async fn show_question(req: HttpRequest) -> Result<HttpResponse, PageError> {
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    Ok(page::render_with(builder, &QuestionPage { csrf: &csrf, login: "", questions: questions(), error: None }))
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
    let refuse = |status: StatusCode, error: String| {
        let (csrf, builder) = guard::anonymous_csrf(&req, status);
        page::render_with(builder, &QuestionPage { csrf: &csrf, login, questions: questions(), error: Some(error) })
    };
    if login.is_empty() || login.len() > 254 || f.answer.trim().is_empty() || f.answer.len() > 1024 {
        let error = "Enter your e-mail address or mobile number, choose your question and answer it.";
        return Ok(refuse(StatusCode::BAD_REQUEST, error.into()));
    }
    match state.portal.recover_by_question(login, &f.question, &f.answer, crate::source(&req)).await {
        Ok(token) => Ok(page::see_other(&format!("/recover/{token}")).finish()),
        Err(PortalError::InvalidCredentials) => Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "These details do not match an account that can be recovered this way. \
             Check the question and the answer, or use another way."
                .into(),
        )),
        Err(PortalError::Throttled { retry_after }) => {
            let answer = refuse(StatusCode::TOO_MANY_REQUESTS, page::too_many_attempts(retry_after));
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
    if login.is_empty() || login.len() > 254 {
        let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::BAD_REQUEST);
        let error = Some("Enter your e-mail address or mobile number.");
        return Ok(page::render_with(builder, &RecoverPage { csrf: &csrf, error, by_mail: true }));
    }
    match state.portal.start_recovery(login, crate::source(&req)).await {
        Ok(()) => {}
        Err(PortalError::Throttled { retry_after }) => {
            let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::TOO_MANY_REQUESTS);
            let error = page::too_many_attempts(retry_after);
            let answer = page::render_with(builder, &RecoverPage { csrf: &csrf, error: Some(&error), by_mail: true });
            return Ok(page::retry_after(answer, retry_after));
        }
        Err(e) => return Err(e.into()),
    }
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

pub async fn show_reset(req: HttpRequest, token: web::Path<String>) -> Result<HttpResponse, PageError> {
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
