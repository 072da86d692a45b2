//! `GET /`: the signed-in user's account page: who they are, and where they are signed in
//! (each session revocable). Without a session: to the sign-in page; with a session that
//! has ended: a page that says so (white paper §6.3: "your session timed out").

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::guard;
use crate::i18n::Lang;
use crate::portal::{Profile, SessionInfo};
use crate::{WebState, page};

/// A session as the list shows it.
pub struct SessionRow {
    pub id: String,
    pub client: String,
    pub signed_in: String,
    pub last_seen: String,
    pub persistent: bool,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage<'a> {
    pub t: Lang,
    pub profile: &'a Profile,
    pub notice: Option<String>,
    pub csrf: &'a str,
    pub sessions: Vec<SessionRow>,
}

pub(crate) use crate::page::utc;

/// The user's sessions as the list shows them (the account and settings pages).
pub(crate) async fn session_rows(
    state: &WebState,
    user_id: &str,
    current: &str,
    t: Lang,
) -> Result<Vec<SessionRow>, PageError> {
    Ok(rows(state.portal.sessions(user_id).await?, current, t))
}

fn rows(sessions: Vec<SessionInfo>, current: &str, t: Lang) -> Vec<SessionRow> {
    sessions
        .into_iter()
        .map(|s| SessionRow {
            current: s.id == current,
            client: if s.client.is_empty() { t.get("home-unknown-browser") } else { s.client },
            signed_in: utc(s.created_at_ms),
            last_seen: utc(s.last_seen_at_ms),
            persistent: s.persistent,
            id: s.id,
        })
        .collect()
}

#[derive(Deserialize)]
pub struct HomeQuery {
    #[serde(default)]
    activated: Option<String>,
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<WebState>,
    query: web::Query<HomeQuery>,
) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let sessions = state.portal.sessions(&user.visitor.profile.user_id).await?;
    let t = user.t;
    let p = HomePage {
        t,
        profile: &user.visitor.profile,
        notice: query.activated.as_ref().map(|_| t.get("home-activated")),
        csrf: &user.csrf(),
        sessions: rows(sessions, &user.visitor.session_id, t),
    };
    Ok(page::render(StatusCode::OK, &p))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

impl guard::WithCsrf for RevokeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /sessions/{id}/revoke`: ends one of the user's sessions (the current one too,
/// which is then a sign-out).
pub async fn revoke_session(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, _form) = match guard::signed_in_form::<RevokeForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let visitor = user.visitor;
    let id = id.into_inner();
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::NotFound);
    }
    state.portal.revoke_session(&visitor.profile.user_id, &id).await?;
    if id == visitor.session_id {
        return Ok(crate::views::signout::signed_out(user.t));
    }
    Ok(page::see_other("/").finish())
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_764_943_380_000), "2025-12-05 14:03 UTC");
        assert_eq!(utc(951_825_600_000), "2000-02-29 12:00 UTC");
    }
}
