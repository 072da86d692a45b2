//! `/pda/…`: browse access from a PDA (white paper §6.1): the same mail, calendar and
//! contacts as the PC pages, fetched the same way, on small pages with short paged lists,
//! and no images, frames, scripts or styles. Reached through its own sign-in (`/pda`);
//! a link on each page leads to the PC pages.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::rts::fetch::{
    Contact, ContactPage, Done, EventList, FetchRequest, FolderList, Message, MessagePage, Outgoing,
};
use serde::Deserialize;

use crate::browse::{self, ask, segment};
use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::{BrowseError, Interface};
use crate::views::mail::{folder_name, position, query};
use crate::{WebState, page};

/// Messages or contacts per PDA page.
const PAGE: u32 = 10;
/// Where someone not signed in is sent.
const SIGN_IN: &str = "/pda";

macro_rules! signed_in {
    ($state:expr, $req:expr) => {
        match guard::signed_in_or(&$state, &$req, SIGN_IN).await? {
            Ok(u) => u,
            Err(answer) => return Ok(answer),
        }
    };
}

pub struct Link {
    pub text: String,
    pub href: String,
    pub note: String,
}

/// One list page of the PDA: a title, links, paging, and what the user may do there.
#[derive(Template)]
#[template(path = "pda_list.html")]
pub struct ListPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub title: String,
    pub notice: Option<String>,
    pub links: Vec<Link>,
    pub empty: String,
    pub position: Option<String>,
    pub newer: Option<String>,
    pub older: Option<String>,
    /// A search box (contacts), with what was searched.
    pub search: Option<String>,
    /// Where "new message" leads, on mail pages.
    pub compose: bool,
}

impl<'a> ListPage<'a> {
    fn new(t: Lang, csrf: &'a str, title: String, empty: String) -> Self {
        ListPage {
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

/// `GET /pda/mail`: the folders.
pub async fn folders(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let t = user.t;
    let list: FolderList =
        ask(&state, &user.visitor.profile.user_id, Interface::Pda, FetchRequest::MailFolders {}).await?;
    let csrf = user.csrf();
    let mut p = ListPage::new(t, &csrf, t.get("nav-mail"), t.get("mail-empty"));
    p.compose = true;
    p.links = list
        .folders
        .into_iter()
        .map(|f| Link {
            href: format!("/pda/mail/{}", segment(&f.folder_id)),
            note: if f.unread > 0 { f.unread.to_string() } else { String::new() },
            text: folder_name(&f.folder_id, &f.name, t),
        })
        .collect();
    Ok(page::render(StatusCode::OK, &p))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Paging {
    #[serde(default)]
    offset: u32,
    #[serde(default)]
    done: Option<String>,
}

/// `GET /pda/mail/{folder}`: ten messages at a time, newest first.
pub async fn folder(
    req: HttpRequest,
    state: web::Data<WebState>,
    folder: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: Paging = query(&req)?;
    let t = user.t;
    let request = FetchRequest::MailList { folder: folder.to_string(), offset: q.offset, limit: PAGE };
    let found: MessagePage = ask(&state, &user.visitor.profile.user_id, Interface::Pda, request).await?;
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let here = format!("/pda/mail/{}", segment(&folder));
    let shown = u32::try_from(found.messages.len()).unwrap_or(u32::MAX);
    let csrf = user.csrf();
    let mut p = ListPage::new(t, &csrf, folder_name(&folder, &folder, t), t.get("mail-empty"));
    p.compose = true;
    p.notice = match q.done.as_deref() {
        Some("sent") => Some(t.get("mail-sent")),
        Some("deleted") => Some(t.get("mail-deleted")),
        _ => None,
    };
    p.position = Some(position(t, q.offset, shown, found.total));
    p.newer = (q.offset > 0).then(|| format!("{here}?offset={}", q.offset.saturating_sub(PAGE)));
    p.older = (q.offset + shown < found.total).then(|| format!("{here}?offset={}", q.offset + PAGE));
    p.links = found
        .messages
        .into_iter()
        .map(|m| Link {
            href: format!("{here}/{}", segment(&m.message_id)),
            note: format!(
                "{} · {}",
                if m.from.is_empty() { t.get("mail-no-sender") } else { m.from },
                browse::local_time(m.date, &tz)
            ),
            text: if m.subject.trim().is_empty() { t.get("mail-no-subject") } else { m.subject },
        })
        .collect();
    Ok(page::render(StatusCode::OK, &p))
}

#[derive(Template)]
#[template(path = "pda_message.html")]
pub struct MessageView<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub back: String,
    pub here: String,
    pub m: Message,
    pub date: String,
    /// The HTML part with only text-level tags left ([`browse::basic_html`]).
    pub html: Option<String>,
    pub reply: String,
}

/// `GET /pda/mail/{folder}/{id}`.
pub async fn message(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let (folder, id) = path.into_inner();
    let request = FetchRequest::MailRead { folder: folder.clone(), message_id: id.clone() };
    let mut m: Message = ask(&state, &user.visitor.profile.user_id, Interface::Pda, request).await?;
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let html = if m.text.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        None
    } else {
        m.html.as_deref().map(browse::basic_html)
    };
    if m.subject.trim().is_empty() {
        m.subject = user.t.get("mail-no-subject");
    }
    let csrf = user.csrf();
    Ok(page::render(
        StatusCode::OK,
        &MessageView {
            t: user.t,
            csrf: &csrf,
            back: format!("/pda/mail/{}", segment(&folder)),
            here: format!("/pda/mail/{}/{}", segment(&folder), segment(&id)),
            date: browse::local_time(m.date, &tz),
            reply: format!("/pda/compose?folder={}&id={}", segment(&folder), segment(&id)),
            html,
            m,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonForm {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for ButtonForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /pda/mail/{folder}/{id}/delete`.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, _) = match guard::signed_in_form::<ButtonForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let (folder, message_id) = path.into_inner();
    let request = FetchRequest::MailDelete { folder: folder.clone(), message_id };
    let _: Done = ask(&state, &user.visitor.profile.user_id, Interface::Pda, request).await?;
    Ok(page::see_other(&format!("/pda/mail/{}?done=deleted", segment(&folder))).finish())
}

#[derive(Template)]
#[template(path = "pda_compose.html")]
pub struct ComposePage<'a> {
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

/// `GET /pda/compose`: a new message, or a reply (`?folder=…&id=…`).
pub async fn compose(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: ReplyTo = query(&req)?;
    let csrf = user.csrf();
    let mut p = ComposePage {
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
        let m: Message = ask(&state, &user.visitor.profile.user_id, Interface::Pda, read).await?;
        p.to = m.from;
        p.subject =
            if m.subject.to_ascii_lowercase().starts_with("re:") { m.subject } else { format!("Re: {}", m.subject) };
        (p.folder, p.id) = (q.folder, q.id);
    }
    Ok(page::render(StatusCode::OK, &p))
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

/// `POST /pda/compose`.
pub async fn send(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, f) = match guard::signed_in_form::<SendForm>(&state, &req, payload).await? {
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
            .then(|| noc_protocol::rts::fetch::MessageRef { folder: f.folder.clone(), message_id: f.id.clone() }),
        forward_attachments_of: None,
    };
    let error = if outgoing.to.is_empty() {
        t.get("mail-no-recipient")
    } else {
        match ask::<Done>(&state, &user.visitor.profile.user_id, Interface::Pda, FetchRequest::MailSend(outgoing)).await
        {
            Ok(_) => return Ok(page::see_other("/pda/mail/INBOX?done=sent").finish()),
            Err(PageError::Browse(BrowseError::Refused(why))) => t.get1("mail-send-refused", "reason", why.as_str()),
            Err(e) => return Err(e),
        }
    };
    let csrf = user.csrf();
    let p = ComposePage {
        t,
        csrf: &csrf,
        folder: f.folder,
        id: f.id,
        to: f.to,
        subject: f.subject,
        body: f.body,
        error: Some(error),
    };
    Ok(page::render(StatusCode::BAD_REQUEST, &p))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DayQuery {
    #[serde(default)]
    day: Option<String>,
}

/// `GET /pda/calendar?day=YYYY-MM-DD`: one day, in the user's time zone.
pub async fn calendar(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: DayQuery = query(&req)?;
    let t = user.t;
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let day = match q.day.as_deref() {
        None | Some("") => browse::local_date(noc_protocol::clock::unix_ms_i64(), &tz).ok_or(PageError::Internal)?,
        Some(d) => d.parse::<jiff::civil::Date>().map_err(|_| PageError::BadForm)?,
    };
    let next = day.tomorrow().map_err(|_| PageError::BadForm)?;
    let previous = day.yesterday().map_err(|_| PageError::BadForm)?;
    let (from, to) = (browse::day_start(day, &tz), browse::day_start(next, &tz));
    let events: EventList =
        ask(&state, &user.visitor.profile.user_id, Interface::Pda, FetchRequest::CalendarRange { from, to }).await?;
    let csrf = user.csrf();
    let mut p = ListPage::new(t, &csrf, day.to_string(), t.get("calendar-nothing"));
    p.links = events
        .events
        .into_iter()
        .filter(|e| browse::event_on(e, day, from, to))
        .map(|e| Link {
            text: if e.summary.is_empty() { t.get("calendar-no-title") } else { e.summary },
            href: String::new(),
            note: if e.all_day {
                t.get("calendar-all-day")
            } else {
                format!("{}–{}", browse::local_clock(e.start, &tz), browse::local_clock(e.end, &tz))
            } + &e.location.map(|l| format!(" · {l}")).unwrap_or_default(),
        })
        .collect();
    p.newer = Some(format!("/pda/calendar?day={previous}"));
    p.older = Some(format!("/pda/calendar?day={next}"));
    Ok(page::render(StatusCode::OK, &p))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: u32,
}

/// `GET /pda/contacts?q=…`.
pub async fn contacts(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let q: Search = query(&req)?;
    let t = user.t;
    let request = FetchRequest::ContactList { query: q.q.clone(), offset: q.offset, limit: PAGE };
    let found: ContactPage = ask(&state, &user.visitor.profile.user_id, Interface::Pda, request).await?;
    let shown = u32::try_from(found.contacts.len()).unwrap_or(u32::MAX);
    let here = format!("/pda/contacts?q={}", segment(&q.q));
    let csrf = user.csrf();
    let mut p = ListPage::new(t, &csrf, t.get("contacts-title"), t.get("contacts-none"));
    p.search = Some(q.q.clone());
    p.position = Some(position(t, q.offset, shown, found.total));
    p.newer = (q.offset > 0).then(|| format!("{here}&offset={}", q.offset.saturating_sub(PAGE)));
    p.older = (q.offset + shown < found.total).then(|| format!("{here}&offset={}", q.offset + PAGE));
    p.links = found
        .contacts
        .into_iter()
        .map(|c| Link {
            href: format!("/pda/contacts/{}", segment(&c.contact_id)),
            note: c.emails.first().cloned().unwrap_or_default(),
            text: if c.name.is_empty() { t.get("contacts-no-name") } else { c.name },
        })
        .collect();
    Ok(page::render(StatusCode::OK, &p))
}

#[derive(Template)]
#[template(path = "pda_contact.html")]
pub struct ContactView<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub contact: Contact,
}

/// `GET /pda/contacts/{id}`.
pub async fn contact(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let request = FetchRequest::ContactRead { contact_id: id.into_inner() };
    let contact: Contact = ask(&state, &user.visitor.profile.user_id, Interface::Pda, request).await?;
    let csrf = user.csrf();
    Ok(page::render(StatusCode::OK, &ContactView { t: user.t, csrf: &csrf, contact }))
}
