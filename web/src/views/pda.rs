//! `/pda/…`: browse access from a PDA (white paper §6.1): the same mail, calendar and
//! contacts as the PC pages, fetched the same way, on small pages with short paged lists,
//! and no images, frames, scripts or styles. Reached through its own sign-in (`/pda`);
//! a link on each page leads to the PC pages.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::rts::fetch::{Contact, FetchRequest, Message};

use crate::browse::{self, ask, segment};
use crate::errors::PageError;
use crate::guard::{self, SignedIn};
use crate::i18n::Lang;
use crate::portal::Interface;
use crate::views::mail::query;
use crate::views::small::{ButtonForm, Draft, Listing, PDA, SendForm};
use crate::{WebState, page};

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

/// One list page of the PDA.
#[derive(Template)]
#[template(path = "pda_list.html")]
pub struct ListPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub list: Listing,
}

fn list_page(user: &SignedIn, list: Listing) -> HttpResponse {
    page::render(StatusCode::OK, &ListPage { t: user.t, csrf: &user.csrf(), list })
}

/// `GET /pda/mail`: the folders.
pub async fn folders(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_page(&user, PDA.folders(&state, &user).await?))
}

/// `GET /pda/mail/{folder}`: ten messages at a time, newest first.
pub async fn folder(
    req: HttpRequest,
    state: web::Data<WebState>,
    folder: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_page(&user, PDA.folder(&state, &user, &folder, query(&req)?).await?))
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
    // A blank text part gives way to the HTML one (the template shows the text if any).
    m.text = m.text.filter(|s| !s.trim().is_empty());
    let html = if m.text.is_some() { None } else { m.html.as_deref().map(browse::basic_html) };
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
    browse::delete(&state, &user.visitor.profile.user_id, Interface::Pda, path.into_inner(), "/pda/mail").await
}

#[derive(Template)]
#[template(path = "pda_compose.html")]
pub struct ComposePage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub draft: Draft,
}

/// `GET /pda/compose`: a new message, or a reply (`?folder=…&id=…`).
pub async fn compose(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    let draft = PDA.draft(&state, &user, query(&req)?).await?;
    Ok(page::render(StatusCode::OK, &ComposePage { t: user.t, csrf: &user.csrf(), draft }))
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
    Ok(match PDA.send(&state, &user, f).await? {
        Ok(sent) => page::see_other(&sent).finish(),
        Err(draft) => page::render(StatusCode::BAD_REQUEST, &ComposePage { t: user.t, csrf: &user.csrf(), draft }),
    })
}

/// `GET /pda/calendar?day=YYYY-MM-DD`: one day, in the user's time zone.
pub async fn calendar(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_page(&user, PDA.calendar(&state, &user, query(&req)?).await?))
}

/// `GET /pda/contacts?q=…`.
pub async fn contacts(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = signed_in!(state, req);
    Ok(list_page(&user, PDA.contacts(&state, &user, query(&req)?).await?))
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
