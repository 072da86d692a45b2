//! `GET/POST /login`: sign in with e-mail address or MSISDN and password (white paper
//! §6.2–6.3). Every refusal of a password reads the same whether or not the account
//! exists; a throttled attempt says how long to wait.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::i18n::Lang;
use crate::portal::PortalError;
use crate::{Presence, WebState, client, cookies, guard, page, presence, source};

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignInPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub login: &'a str,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub offer_persistent: bool,
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    remember: Option<String>,
}

impl guard::WithCsrf for SignInForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    signed_out: Option<String>,
    #[serde(default)]
    recovered: Option<String>,
}

/// The PDA's sign-in page (white paper §6.1): the same form, small, without styles.
#[derive(Template)]
#[template(path = "pda_signin.html")]
pub struct PdaSignInPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub login: &'a str,
    pub error: Option<String>,
}

/// Which interface a sign-in is for (white paper §6.1: chosen by the sign-in route): where
/// it lands, and which form shows again when it is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Pc,
    Pda,
}

impl Entry {
    fn home(self) -> &'static str {
        match self {
            Entry::Pc => "/",
            Entry::Pda => "/pda/mail",
        }
    }
}

/// The form with a double-submit CSRF value (the cookie's, or a new one).
fn form_page(
    req: &HttpRequest,
    state: &WebState,
    status: StatusCode,
    login: &str,
    error: Option<String>,
    notice: Option<String>,
    entry: Entry,
) -> HttpResponse {
    let (token, builder) = guard::anonymous_csrf(req, status);
    let t = Lang::of(req, None);
    match entry {
        Entry::Pc => {
            let offer_persistent = state.settings.offer_persistent;
            page::render_with(builder, &SignInPage { t, csrf: &token, login, error, notice, offer_persistent })
        }
        Entry::Pda => page::render_with(builder, &PdaSignInPage { t, csrf: &token, login, error }),
    }
}

/// `GET /pda`: the PDA's sign-in, or its mail for someone signed in.
pub async fn show_pda(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    if let Presence::SignedIn { .. } = presence(&state, &req).await? {
        return Ok(page::see_other(Entry::Pda.home()).finish());
    }
    Ok(form_page(&req, &state, StatusCode::OK, "", None, None, Entry::Pda))
}

/// `POST /pda/login`.
pub async fn submit_pda(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    submit_as(req, state, payload, Entry::Pda).await
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<WebState>,
    query: web::Query<SignInQuery>,
) -> Result<HttpResponse, PageError> {
    if let Presence::SignedIn { .. } = presence(&state, &req).await? {
        return Ok(page::see_other("/").finish());
    }
    let signed_out = query.signed_out.is_some();
    let t = Lang::of(&req, None);
    let notice = if signed_out {
        Some(t.get("signin-signed-out"))
    } else {
        query.recovered.as_ref().map(|_| t.get("signin-recovered"))
    };
    let mut answer = form_page(&req, &state, StatusCode::OK, "", None, notice, Entry::Pc);
    if signed_out {
        answer.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("clear-site-data"),
            actix_web::http::header::HeaderValue::from_static("\"cache\""),
        );
    }
    Ok(answer)
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    submit_as(req, state, payload, Entry::Pc).await
}

async fn submit_as(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
    entry: Entry,
) -> Result<HttpResponse, PageError> {
    let f: SignInForm = guard::anonymous_form(&req, payload).await?;
    let login = f.login.trim();
    let t = Lang::of(&req, None);
    if login.is_empty() || f.password.is_empty() || login.len() > 254 || f.password.len() > 1024 {
        let error = Some(t.get("signin-missing"));
        return Ok(form_page(&req, &state, StatusCode::BAD_REQUEST, login, error, None, entry));
    }
    let persistent = state.settings.offer_persistent && f.remember.is_some();
    let agent = client(&req);
    match state.portal.sign_in(login, &f.password, persistent, &agent, source(&req)).await {
        Ok(signed_in) => {
            let mut answer = page::see_other(entry.home());
            // A new token on every sign-in; any earlier session cookie is replaced.
            answer.append_header((
                "Set-Cookie",
                cookies::set(cookies::SESSION, &signed_in.token, "Lax", signed_in.cookie_max_age),
            ));
            answer.append_header(("Set-Cookie", cookies::clear(cookies::CSRF)));
            Ok(answer.finish())
        }
        Err(PortalError::InvalidCredentials) => {
            let error = Some(t.get("signin-wrong"));
            Ok(form_page(&req, &state, StatusCode::UNAUTHORIZED, login, error, None, entry))
        }
        Err(PortalError::Throttled { retry_after }) => {
            let error = Some(t.too_many_attempts(retry_after));
            let answer = form_page(&req, &state, StatusCode::TOO_MANY_REQUESTS, login, error, None, entry);
            Ok(page::retry_after(answer, retry_after))
        }
        Err(PortalError::Suspended) => {
            let error = Some(t.get("signin-suspended"));
            Ok(form_page(&req, &state, StatusCode::FORBIDDEN, login, error, None, entry))
        }
        Err(e) => Err(e.into()),
    }
}
