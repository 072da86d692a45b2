//! `GET/POST /settings/question` and `POST /settings/question/remove`: the secret question
//! for password recovery (white paper §9.2.2), where the user's license offers it. The
//! answer is asked for whole every time (never shown back) and, like a password change,
//! needs the current password.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::guard::{self, WithCsrf, session_ended};
use crate::i18n::Lang;
use crate::portal::{PortalError, SECRET_QUESTIONS};
use crate::{WebState, page, source};

#[derive(Template)]
#[template(path = "question.html")]
pub struct QuestionSettingsPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    /// Each question's key, and whether it is the user's.
    pub questions: Vec<(&'static str, bool)>,
    pub has_question: bool,
    pub error: Option<String>,
}

fn page_for<'a>(t: Lang, csrf: &'a str, chosen: Option<&str>, error: Option<String>) -> QuestionSettingsPage<'a> {
    QuestionSettingsPage {
        t,
        csrf,
        questions: SECRET_QUESTIONS.iter().map(|k| (*k, Some(*k) == chosen)).collect(),
        has_question: chosen.is_some(),
        error,
    }
}

/// The question the user chose, or 404 when the license does not offer the route.
async fn offered(state: &WebState, user_id: &str) -> Result<Option<String>, PageError> {
    match state.portal.secret_question(user_id).await? {
        (true, chosen) => Ok(chosen),
        (false, _) => Err(PageError::NotFound),
    }
}

pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let chosen = offered(&state, &user.visitor.profile.user_id).await?;
    Ok(page::render(StatusCode::OK, &page_for(user.t, &user.csrf(), chosen.as_deref(), None)))
}

#[derive(Deserialize)]
pub struct QuestionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    question: String,
    #[serde(default)]
    answer: String,
    #[serde(default)]
    current: String,
}

impl WithCsrf for QuestionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, f) = match guard::signed_in_form::<QuestionForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let user_id = &user.visitor.profile.user_id;
    let chosen = offered(&state, user_id).await?;
    let (csrf, t) = (user.csrf(), user.t);
    let refuse = |status: StatusCode, message: String| {
        page::render(status, &page_for(t, &csrf, chosen.as_deref(), Some(message)))
    };
    if f.current.is_empty() || f.current.len() > 1024 || f.answer.len() > 1024 {
        return Ok(refuse(StatusCode::BAD_REQUEST, t.get("question-missing")));
    }
    match state.portal.set_secret_question(user_id, &f.current, &f.question, &f.answer, source(&req)).await {
        Ok(()) => Ok(page::see_other("/settings?question=1").finish()),
        Err(PortalError::InvalidCredentials) => Ok(refuse(StatusCode::UNAUTHORIZED, t.get("settings-password-wrong"))),
        Err(PortalError::Throttled { retry_after }) => {
            Ok(page::retry_after(refuse(StatusCode::TOO_MANY_REQUESTS, t.too_many_attempts(retry_after)), retry_after))
        }
        Err(PortalError::Invalid(problem)) => Ok(refuse(StatusCode::BAD_REQUEST, t.problem(problem))),
        Err(PortalError::NotFound) => Ok(session_ended(t)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for RemoveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn remove(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, _form) = match guard::signed_in_form::<RemoveForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    state.portal.clear_secret_question(&user.visitor.profile.user_id).await?;
    Ok(page::see_other("/settings?question=0").finish())
}
