//! `GET /`: the signed-in user's account page: who they are, and where they are signed in
//! (each session revocable). Without a session: to the sign-in page; with a session that
//! has ended: a page that says so (white paper §6.3: "your session timed out").

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::{MessagePage, PageError};
use crate::portal::{Profile, SessionInfo};
use crate::{Presence, WebState, cookies, csrf, form, page, presence};

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
    pub profile: &'a Profile,
    pub notice: Option<&'a str>,
    pub csrf: &'a str,
    pub sessions: Vec<SessionRow>,
}

/// `2026-12-05 14:03 UTC`: the user's time zone setting comes with the settings page.
pub(crate) fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

fn rows(sessions: Vec<SessionInfo>, current: &str) -> Vec<SessionRow> {
    sessions
        .into_iter()
        .map(|s| SessionRow {
            current: s.id == current,
            client: if s.client.is_empty() { "Unknown browser".into() } else { s.client },
            signed_in: utc(s.created_at_ms),
            last_seen: utc(s.last_seen_at_ms),
            persistent: s.persistent,
            id: s.id,
        })
        .collect()
}

/// The page shown for a cookie whose session has ended; the cookie is cleared.
pub fn session_ended() -> HttpResponse {
    let mut builder = HttpResponse::build(StatusCode::OK);
    builder.append_header(("Set-Cookie", cookies::clear(cookies::SESSION)));
    page::render_with(
        builder,
        &MessagePage {
            title: "Your session timed out",
            message: "You were signed out after a period without activity, or signed out elsewhere. Sign in again to go on.",
            link: Some(("/login", "Sign in")),
        },
    )
}

#[derive(Deserialize)]
pub struct HomeQuery {
    #[serde(default)]
    activated: Option<String>,
}

/// `/activate?login=…` for the user's address, percent-encoded.
fn activation_link(email: &str) -> String {
    let mut link = String::from("/activate?login=");
    for b in email.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => link.push(b as char),
            _ => link.push_str(&format!("%{b:02X}")),
        }
    }
    link
}

/// The signed-in, activated visitor and their token; or the answer for everyone else:
/// to the sign-in page, the "timed out" page, or (not yet activated) the activation page.
pub(crate) async fn signed_in_or_redirect(
    state: &WebState,
    req: &HttpRequest,
) -> Result<Result<(Box<crate::Visitor>, String), HttpResponse>, PageError> {
    Ok(match presence(state, req).await? {
        Presence::Anonymous => Err(page::see_other("/login").finish()),
        Presence::Ended => Err(session_ended()),
        // Until the account is activated (own password, mobile number), nothing else.
        Presence::SignedIn { visitor, .. } if !visitor.profile.activated => {
            Err(page::see_other(&activation_link(&visitor.profile.email)).finish())
        }
        Presence::SignedIn { visitor, token } => Ok((visitor, token)),
    })
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<WebState>,
    query: web::Query<HomeQuery>,
) -> Result<HttpResponse, PageError> {
    let (visitor, token) = match signed_in_or_redirect(&state, &req).await? {
        Ok(v) => v,
        Err(answer) => return Ok(answer),
    };
    let sessions = state.portal.sessions(&visitor.profile.user_id).await?;
    let p = HomePage {
        profile: &visitor.profile,
        notice: query.activated.as_ref().map(|_| "Your account is active. Welcome!"),
        csrf: &csrf::for_session(&token),
        sessions: rows(sessions, &visitor.session_id),
    };
    Ok(page::render(StatusCode::OK, &p))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /sessions/{id}/revoke`: ends one of the user's sessions (the current one too,
/// which is then a sign-out).
pub async fn revoke_session(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    if !csrf::same_origin(&req) {
        return Err(PageError::Forbidden);
    }
    let f: RevokeForm = form::read(payload).await?;
    let (visitor, token) = match presence(&state, &req).await? {
        Presence::Anonymous => return Ok(page::see_other("/login").finish()),
        Presence::Ended => return Ok(session_ended()),
        Presence::SignedIn { visitor, token } => (visitor, token),
    };
    if !csrf::matches(&csrf::for_session(&token), &f.csrf) {
        return Err(PageError::Forbidden);
    }
    let id = id.into_inner();
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::NotFound);
    }
    state.portal.revoke_session(&visitor.profile.user_id, &id).await?;
    if id == visitor.session_id {
        return Ok(crate::views::signout::signed_out());
    }
    Ok(page::see_other("/").finish())
}

#[cfg(test)]
mod tests {
    use super::{activation_link, utc};

    #[test]
    fn activation_links_encode_the_address() {
        assert_eq!(activation_link("bob+x@example.com"), "/activate?login=bob%2Bx%40example.com");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_764_943_380_000), "2025-12-05 14:03 UTC");
        assert_eq!(utc(951_825_600_000), "2000-02-29 12:00 UTC");
    }
}
