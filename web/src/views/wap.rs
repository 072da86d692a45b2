//! `/wap/…`: browse access from a WAP phone (white paper §6.1), as WML 1.1 decks
//! (`text/vnd.wap.wml`): mail (five messages a deck, long messages in parts), reply and
//! new messages, a calendar day, contacts. Each deck is one small card; lists and long
//! texts are paged with links, so no deck grows large. Forms are `<go method="post">` with
//! `<postfield>`s, carrying the session's CSRF value like every form of the portal.
//!
//! The session is the portal's cookie: WAP gateways keep cookies for the phones behind
//! them, so the session never appears in a URL. Errors are decks too ([`error_deck`]).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;
use noc_protocol::rts::fetch::{Contact, FetchRequest, Message};
use serde::Deserialize;

use crate::browse::{self, ask, segment};
use crate::errors::PageError;
use crate::guard::{self, SignedIn, WithCsrf};
use crate::i18n::Lang;
use crate::portal::{Interface, PortalError};
use crate::views::mail::query;
use crate::views::signout;
use crate::views::small::{ButtonForm, Draft, Listing, SendForm, WAP};
use crate::{Presence, WebState, client, cookies, page, presence, source, wml};

/// Characters of a message's text per deck.
const PART_CHARS: usize = 600;
/// Where someone signed out goes.
const SIGN_IN: &str = "/wap";

macro_rules! signed_in {
    ($state:expr, $req:expr) => {
        match guard::signed_in_wap(&$state, &$req).await? {
            Ok(u) => u,
            Err(answer) => return Ok(answer),
        }
    };
}

/// A deck saying what went wrong (the WAP routes' errors).
#[derive(Template)]
#[template(path = "wap_message.wml")]
pub struct MessageDeck<'a> {
    pub t: Lang,
    pub title: &'a str,
    pub message: &'a str,
}

/// The deck for an error of a WAP route, in the reader's language.
pub fn error_deck(e: &PageError, t: Lang) -> HttpResponse {
    let (title, message) = e.words();
    let (title, message) = (t.get(title), t.get(message));
    wml::render(e.status_code(), &MessageDeck { t, title: &title, message: &message })
}

/// Middleware of the WAP routes: errors answered as decks.
pub async fn decks(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let lang = Lang::of(req.request(), None);
    let res = next.call(req).await?;
    let deck = res.response().error().and_then(|e| e.as_error::<PageError>()).map(|e| error_deck(e, lang));
    Ok(match deck {
        Some(deck) => res.into_response(deck),
        None => res.map_into_boxed_body(),
    })
}

#[derive(Template)]
#[template(path = "wap_signin.wml")]
pub struct SignInDeck<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub login: &'a str,
    pub error: Option<String>,
}

fn sign_in_deck(req: &HttpRequest, status: StatusCode, login: &str, error: Option<String>) -> HttpResponse {
    let (token, mut builder) = guard::anonymous_csrf(req, status);
    let t = Lang::of(req, None);
    page::secure(&mut builder);
    match (SignInDeck { t, csrf: &token, login, error }).render() {
        Ok(text) => builder.content_type(wml::CONTENT_TYPE).body(text),
        Err(_) => PageError::Internal.error_response(),
    }
}

/// `GET /wap`: the sign-in deck, or the mail for someone signed in.
pub async fn show_sign_in(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    if let Presence::SignedIn { .. } = presence(&state, &req).await? {
        return Ok(page::see_other("/wap/mail").finish());
    }
    Ok(sign_in_deck(&req, StatusCode::OK, "", None))
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
}

impl WithCsrf for SignInForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /wap/login`: as `/login`, landing on the WAP mail.
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let f: SignInForm = guard::anonymous_form(&req, payload).await?;
    let t = Lang::of(&req, None);
    let login = f.login.trim();
    if login.is_empty() || f.password.is_empty() || login.len() > 254 || f.password.len() > 1024 {
        return Ok(sign_in_deck(&req, StatusCode::BAD_REQUEST, login, Some(t.get("signin-missing"))));
    }
    match state.portal.sign_in(login, &f.password, false, &client(&req), source(&req)).await {
        Ok(signed_in) => {
            let mut answer = page::see_other("/wap/mail");
            answer.append_header(("Set-Cookie", cookies::set(cookies::SESSION, &signed_in.token, "Lax", None)));
            answer.append_header(("Set-Cookie", cookies::clear(cookies::CSRF)));
            Ok(answer.finish())
        }
        Err(PortalError::InvalidCredentials) => {
            Ok(sign_in_deck(&req, StatusCode::UNAUTHORIZED, login, Some(t.get("signin-wrong"))))
        }
        Err(PortalError::Throttled { retry_after }) => {
            let deck = sign_in_deck(&req, StatusCode::TOO_MANY_REQUESTS, login, Some(t.too_many_attempts(retry_after)));
            Ok(page::retry_after(deck, retry_after))
        }
        Err(PortalError::Suspended) => {
            Ok(sign_in_deck(&req, StatusCode::FORBIDDEN, login, Some(t.get("signin-suspended"))))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /wap/logout`: the session ends on the server; back to the sign-in deck.
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    signout::end_session(&state, &req, payload).await?;
    let mut answer = page::see_other(SIGN_IN);
    answer.append_header(("Set-Cookie", cookies::clear(cookies::SESSION)));
    Ok(answer.finish())
}

#[derive(Template)]
#[template(path = "wap_list.wml")]
pub struct ListDeck<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub list: Listing,
}

fn list_deck(user: &SignedIn, list: Listing) -> HttpResponse {
    wml::render(StatusCode::OK, &ListDeck { t: user.t, csrf: &user.csrf(), list })
}

/// `GET /wap/mail`: the folders.
pub async fn folders(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_deck(&user, WAP.folders(&state, &user).await?))
}

/// `GET /wap/mail/{folder}`: five messages a deck, newest first.
pub async fn folder(
    req: HttpRequest,
    state: web::Data<WebState>,
    folder: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_deck(&user, WAP.folder(&state, &user, &folder, query(&req)?).await?))
}

#[derive(Template)]
#[template(path = "wap_read.wml")]
pub struct ReadDeck<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub subject: String,
    pub from: String,
    pub date: String,
    /// This deck's part of the text.
    pub text: String,
    pub part: String,
    pub next: Option<String>,
    pub reply: String,
    pub here: String,
    pub back: String,
}

/// A message's text in parts of [`PART_CHARS`] characters, cut at a space where one is near.
fn parts(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let mut end = (start + PART_CHARS).min(chars.len());
        if end < chars.len()
            && let Some(space) =
                chars[start..end].iter().rposition(|c| c.is_whitespace()).filter(|p| *p > PART_CHARS / 2)
        {
            end = start + space + 1;
        }
        out.push(chars[start..end].iter().collect());
        start = end;
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PartQuery {
    #[serde(default)]
    part: usize,
}

/// `GET /wap/mail/{folder}/{id}?part=N`: a message, its text in parts.
pub async fn message(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: PartQuery = query(&req)?;
    let t = user.t;
    let (folder, id) = path.into_inner();
    let request = FetchRequest::MailRead { folder: folder.clone(), message_id: id.clone() };
    let m: Message = ask(&state, &user.visitor.profile.user_id, Interface::Wap, request).await?;
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let text = match (m.text, m.html) {
        (Some(text), _) if !text.trim().is_empty() => text,
        (_, Some(html)) => browse::html_text(&html),
        _ => t.get("mail-no-text"),
    };
    let all = parts(&text);
    let part = q.part.min(all.len() - 1);
    let here = format!("/wap/mail/{}/{}", segment(&folder), segment(&id));
    let csrf = user.csrf();
    let deck = ReadDeck {
        t,
        csrf: &csrf,
        subject: if m.subject.trim().is_empty() { t.get("mail-no-subject") } else { m.subject },
        from: m.from,
        date: browse::local_time(m.date, &tz),
        text: all[part].clone(),
        part: if all.len() > 1 { format!("{}/{}", part + 1, all.len()) } else { String::new() },
        next: (part + 1 < all.len()).then(|| format!("{here}?part={}", part + 1)),
        reply: format!("/wap/compose?folder={}&id={}", segment(&folder), segment(&id)),
        back: format!("/wap/mail/{}", segment(&folder)),
        here,
    };
    Ok(wml::render(StatusCode::OK, &deck))
}

/// `POST /wap/mail/{folder}/{id}/delete`.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, _) = match guard::signed_in_form_wap::<ButtonForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    browse::delete(&state, &user.visitor.profile.user_id, Interface::Wap, path.into_inner(), "/wap/mail").await
}

#[derive(Template)]
#[template(path = "wap_compose.wml")]
pub struct ComposeDeck<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub draft: Draft,
}

/// `GET /wap/compose`: a new message, or a reply (`?folder=…&id=…`).
pub async fn compose(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let draft = WAP.draft(&state, &user, query(&req)?).await?;
    Ok(wml::render(StatusCode::OK, &ComposeDeck { t: user.t, csrf: &user.csrf(), draft }))
}

/// `POST /wap/compose`.
pub async fn send(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, f) = match guard::signed_in_form_wap::<SendForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    Ok(match WAP.send(&state, &user, f).await? {
        Ok(sent) => page::see_other(&sent).finish(),
        Err(draft) => wml::render(StatusCode::BAD_REQUEST, &ComposeDeck { t: user.t, csrf: &user.csrf(), draft }),
    })
}

/// `GET /wap/calendar?day=YYYY-MM-DD`.
pub async fn calendar(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_deck(&user, WAP.calendar(&state, &user, query(&req)?).await?))
}

/// `GET /wap/contacts?q=…`.
pub async fn contacts(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_deck(&user, WAP.contacts(&state, &user, query(&req)?).await?))
}

#[derive(Template)]
#[template(path = "wap_contact.wml")]
pub struct ContactDeck<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub contact: Contact,
}

/// `GET /wap/contacts/{id}`.
pub async fn contact(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let request = FetchRequest::ContactRead { contact_id: id.into_inner() };
    let contact: Contact = ask(&state, &user.visitor.profile.user_id, Interface::Wap, request).await?;
    let csrf = user.csrf();
    Ok(wml::render(StatusCode::OK, &ContactDeck { t: user.t, csrf: &csrf, contact }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_into_parts_at_spaces() {
        let text = "word ".repeat(300);
        let all = parts(&text);
        assert!(all.len() >= 3, "{}", all.len());
        assert!(all.iter().all(|p| p.chars().count() <= PART_CHARS));
        assert_eq!(all.concat(), text, "nothing lost");
        assert!(all[0].ends_with(' '));
        assert_eq!(parts(""), [""]);
    }
}
