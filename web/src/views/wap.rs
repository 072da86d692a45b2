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
use noc_protocol::rts::fetch::{
    Contact, ContactPage, Done, EventList, FetchRequest, FolderList, Message, MessagePage, MessageRef, Outgoing,
};
use serde::Deserialize;

use crate::browse::{self, ask, segment};
use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::{BrowseError, Interface, PortalError};
use crate::views::mail::{folder_name, position, query};
use crate::{Presence, WebState, client, cookies, csrf, form, page, presence, source, wml};

/// Messages or contacts per deck.
const PAGE: u32 = 5;
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

#[derive(Deserialize)]
pub struct ButtonForm {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for ButtonForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /wap/logout`: the session ends on the server; back to the sign-in deck.
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    if !csrf::same_origin(&req) {
        return Err(PageError::Forbidden);
    }
    let f: ButtonForm = form::read(payload).await?;
    if let Presence::SignedIn { token, .. } = presence(&state, &req).await? {
        if !csrf::matches(&csrf::for_session(&token), &f.csrf) {
            return Err(PageError::Forbidden);
        }
        state.portal.sign_out(&token).await?;
    }
    let mut answer = page::see_other(SIGN_IN);
    answer.append_header(("Set-Cookie", cookies::clear(cookies::SESSION)));
    Ok(answer.finish())
}

pub struct Link {
    pub text: String,
    pub href: String,
    pub note: String,
}

#[derive(Template)]
#[template(path = "wap_list.wml")]
pub struct ListDeck<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub title: String,
    pub notice: Option<String>,
    pub links: Vec<Link>,
    pub empty: String,
    pub position: Option<String>,
    pub newer: Option<String>,
    pub older: Option<String>,
    /// Contacts: the search, with what was searched.
    pub search: Option<String>,
    pub compose: bool,
}

impl<'a> ListDeck<'a> {
    fn new(t: Lang, csrf: &'a str, title: String, empty: String) -> Self {
        ListDeck {
            t,
            csrf,
            title,
            notice: None,
            links: Vec::new(),
            empty,
            position: None,
            newer: None,
            older: None,
            search: None,
            compose: false,
        }
    }
}

/// `GET /wap/mail`: the folders.
pub async fn folders(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let t = user.t;
    let list: FolderList =
        ask(&state, &user.visitor.profile.user_id, Interface::Wap, FetchRequest::MailFolders {}).await?;
    let csrf = user.csrf();
    let mut d = ListDeck::new(t, &csrf, t.get("nav-mail"), t.get("mail-empty"));
    d.compose = true;
    d.links = list
        .folders
        .into_iter()
        .map(|f| Link {
            href: format!("/wap/mail/{}", segment(&f.folder_id)),
            note: if f.unread > 0 { f.unread.to_string() } else { String::new() },
            text: folder_name(&f.folder_id, &f.name, t),
        })
        .collect();
    Ok(wml::render(StatusCode::OK, &d))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Paging {
    #[serde(default)]
    offset: u32,
    #[serde(default)]
    done: Option<String>,
}

/// `GET /wap/mail/{folder}`: five messages a deck, newest first.
pub async fn folder(
    req: HttpRequest,
    state: web::Data<WebState>,
    folder: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: Paging = query(&req)?;
    let t = user.t;
    let request = FetchRequest::MailList { folder: folder.to_string(), offset: q.offset, limit: PAGE };
    let found: MessagePage = ask(&state, &user.visitor.profile.user_id, Interface::Wap, request).await?;
    let here = format!("/wap/mail/{}", segment(&folder));
    let shown = u32::try_from(found.messages.len()).unwrap_or(u32::MAX);
    let csrf = user.csrf();
    let mut d = ListDeck::new(t, &csrf, folder_name(&folder, &folder, t), t.get("mail-empty"));
    d.compose = true;
    d.notice = match q.done.as_deref() {
        Some("sent") => Some(t.get("mail-sent")),
        Some("deleted") => Some(t.get("mail-deleted")),
        _ => None,
    };
    d.position = Some(position(t, q.offset, shown, found.total));
    d.newer = (q.offset > 0).then(|| format!("{here}?offset={}", q.offset.saturating_sub(PAGE)));
    d.older = (q.offset + shown < found.total).then(|| format!("{here}?offset={}", q.offset + PAGE));
    d.links = found
        .messages
        .into_iter()
        .map(|m| Link {
            href: format!("{here}/{}", segment(&m.message_id)),
            note: if m.from.is_empty() { t.get("mail-no-sender") } else { m.from },
            text: if m.subject.trim().is_empty() { t.get("mail-no-subject") } else { m.subject },
        })
        .collect();
    Ok(wml::render(StatusCode::OK, &d))
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
    let (folder, message_id) = path.into_inner();
    let request = FetchRequest::MailDelete { folder: folder.clone(), message_id };
    let _: Done = ask(&state, &user.visitor.profile.user_id, Interface::Wap, request).await?;
    Ok(page::see_other(&format!("/wap/mail/{}?done=deleted", segment(&folder))).finish())
}

#[derive(Template)]
#[template(path = "wap_compose.wml")]
pub struct ComposeDeck<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub folder: String,
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplyTo {
    #[serde(default)]
    folder: String,
    #[serde(default)]
    id: String,
}

/// `GET /wap/compose`: a new message, or a reply (`?folder=…&id=…`).
pub async fn compose(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: ReplyTo = query(&req)?;
    let csrf = user.csrf();
    let mut d = ComposeDeck {
        t: user.t,
        csrf: &csrf,
        folder: String::new(),
        id: String::new(),
        to: String::new(),
        subject: String::new(),
        body: String::new(),
        error: None,
    };
    if !q.folder.is_empty() && !q.id.is_empty() {
        let read = FetchRequest::MailRead { folder: q.folder.clone(), message_id: q.id.clone() };
        let m: Message = ask(&state, &user.visitor.profile.user_id, Interface::Wap, read).await?;
        d.to = m.from;
        d.subject =
            if m.subject.to_ascii_lowercase().starts_with("re:") { m.subject } else { format!("Re: {}", m.subject) };
        (d.folder, d.id) = (q.folder, q.id);
    }
    Ok(wml::render(StatusCode::OK, &d))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
}

impl WithCsrf for SendForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
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
    let t = user.t;
    let to: Vec<String> = f.to.split([',', ';']).map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
    let outgoing = Outgoing {
        to,
        cc: Vec::new(),
        subject: f.subject.trim().to_string(),
        body: f.body.clone(),
        in_reply_to: (!f.folder.is_empty() && !f.id.is_empty())
            .then(|| MessageRef { folder: f.folder.clone(), message_id: f.id.clone() }),
        forward_attachments_of: None,
    };
    let error = if outgoing.to.is_empty() {
        t.get("mail-no-recipient")
    } else {
        match ask::<Done>(&state, &user.visitor.profile.user_id, Interface::Wap, FetchRequest::MailSend(outgoing)).await
        {
            Ok(_) => return Ok(page::see_other("/wap/mail/INBOX?done=sent").finish()),
            Err(PageError::Browse(BrowseError::Refused(why))) => t.get1("mail-send-refused", "reason", why.as_str()),
            Err(e) => return Err(e),
        }
    };
    let csrf = user.csrf();
    let d = ComposeDeck {
        t,
        csrf: &csrf,
        folder: f.folder,
        id: f.id,
        to: f.to,
        subject: f.subject,
        body: f.body,
        error: Some(error),
    };
    Ok(wml::render(StatusCode::BAD_REQUEST, &d))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DayQuery {
    #[serde(default)]
    day: Option<String>,
}

/// `GET /wap/calendar?day=YYYY-MM-DD`.
pub async fn calendar(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: DayQuery = query(&req)?;
    let t = user.t;
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let day = match q.day.as_deref() {
        None | Some("") => browse::local_date(noc_protocol::clock::unix_ms_i64(), &tz).ok_or(PageError::Internal)?,
        Some(d) => d.parse::<jiff::civil::Date>().map_err(|_| PageError::BadForm)?,
    };
    let (previous, next) =
        (day.yesterday().map_err(|_| PageError::BadForm)?, day.tomorrow().map_err(|_| PageError::BadForm)?);
    let (from, to) = (browse::day_start(day, &tz), browse::day_start(next, &tz));
    let events: EventList =
        ask(&state, &user.visitor.profile.user_id, Interface::Wap, FetchRequest::CalendarRange { from, to }).await?;
    let csrf = user.csrf();
    let mut d = ListDeck::new(t, &csrf, day.to_string(), t.get("calendar-nothing"));
    d.links = events
        .events
        .into_iter()
        .filter(|e| browse::event_on(e, day, from, to))
        .map(|e| Link {
            text: if e.summary.is_empty() { t.get("calendar-no-title") } else { e.summary },
            href: String::new(),
            note: if e.all_day {
                t.get("calendar-all-day")
            } else {
                format!("{}-{}", browse::local_clock(e.start, &tz), browse::local_clock(e.end, &tz))
            },
        })
        .collect();
    d.newer = Some(format!("/wap/calendar?day={previous}"));
    d.older = Some(format!("/wap/calendar?day={next}"));
    Ok(wml::render(StatusCode::OK, &d))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: u32,
}

/// `GET /wap/contacts?q=…`.
pub async fn contacts(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: Search = query(&req)?;
    let t = user.t;
    let request = FetchRequest::ContactList { query: q.q.clone(), offset: q.offset, limit: PAGE };
    let found: ContactPage = ask(&state, &user.visitor.profile.user_id, Interface::Wap, request).await?;
    let shown = u32::try_from(found.contacts.len()).unwrap_or(u32::MAX);
    let here = format!("/wap/contacts?q={}", segment(&q.q));
    let csrf = user.csrf();
    let mut d = ListDeck::new(t, &csrf, t.get("contacts-title"), t.get("contacts-none"));
    d.search = Some(q.q.clone());
    d.position = Some(position(t, q.offset, shown, found.total));
    d.newer = (q.offset > 0).then(|| format!("{here}&offset={}", q.offset.saturating_sub(PAGE)));
    d.older = (q.offset + shown < found.total).then(|| format!("{here}&offset={}", q.offset + PAGE));
    d.links = found
        .contacts
        .into_iter()
        .map(|c| Link {
            href: format!("/wap/contacts/{}", segment(&c.contact_id)),
            note: c.phones.first().cloned().unwrap_or_default(),
            text: if c.name.is_empty() { t.get("contacts-no-name") } else { c.name },
        })
        .collect();
    Ok(wml::render(StatusCode::OK, &d))
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
