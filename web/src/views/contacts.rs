//! `GET /contacts?q=…`, `GET /contacts/{id}`, `POST /contacts`: the user's contacts on a PC
//! browser from the enterprise server: search, view, add.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::rts::fetch::{Contact, ContactPage, FetchRequest, NewContact};
use serde::Deserialize;

use crate::browse::{ask, segment};
use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::{BrowseError, Interface};
use crate::views::mail::query;
use crate::{WebState, page};

/// Contacts per page.
const PAGE: u32 = 50;

pub struct ContactRow {
    pub name: String,
    pub email: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "contacts.html")]
pub struct ContactsPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub q: String,
    pub contacts: Vec<ContactRow>,
    pub total: u32,
    pub newer: Option<String>,
    pub older: Option<String>,
    pub error: Option<String>,
    /// What the add form held when it was refused.
    pub draft: Draft,
}

impl ContactsPage<'_> {
    /// `12 contacts`.
    pub fn count_line(&self) -> String {
        self.t.count("contacts-count", "n", u64::from(self.total))
    }
}

#[derive(Default)]
pub struct Draft {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub organization: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ContactsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: u32,
}

fn search_link(q: &str, offset: u32) -> String {
    format!("/contacts?q={}&offset={offset}", segment(q))
}

async fn list(state: &WebState, user_id: &str, q: &str, offset: u32) -> Result<ContactPage, PageError> {
    let request = FetchRequest::ContactList { query: q.to_string(), offset, limit: PAGE };
    ask(state, user_id, Interface::Pc, request).await
}

fn page_of<'a>(
    t: Lang,
    csrf: &'a str,
    q: String,
    offset: u32,
    found: ContactPage,
    error: Option<String>,
    draft: Draft,
) -> ContactsPage<'a> {
    let shown = u32::try_from(found.contacts.len()).unwrap_or(u32::MAX);
    ContactsPage {
        t,
        csrf,
        newer: (offset > 0).then(|| search_link(&q, offset.saturating_sub(PAGE))),
        older: (offset.saturating_add(shown) < found.total).then(|| search_link(&q, offset.saturating_add(PAGE))),
        q,
        total: found.total,
        contacts: found
            .contacts
            .into_iter()
            .map(|c| ContactRow {
                href: format!("/contacts/{}", segment(&c.contact_id)),
                email: c.emails.first().cloned().unwrap_or_default(),
                name: if c.name.is_empty() { t.get("contacts-no-name") } else { c.name },
            })
            .collect(),
        error,
        draft,
    }
}

/// `GET /contacts`.
pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let q: ContactsQuery = query(&req)?;
    let found = list(&state, &user.visitor.profile.user_id, &q.q, q.offset).await?;
    let csrf = user.csrf();
    Ok(page::render(StatusCode::OK, &page_of(user.t, &csrf, q.q, q.offset, found, None, Draft::default())))
}

#[derive(Template)]
#[template(path = "contact.html")]
pub struct ContactView<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub contact: Contact,
}

impl ContactView<'_> {
    /// A new message to `address`.
    pub fn compose(&self, address: &str) -> String {
        format!("/mail/compose?to={}", segment(address))
    }
}

/// `GET /contacts/{id}`.
pub async fn contact(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let request = FetchRequest::ContactRead { contact_id: id.into_inner() };
    let contact: Contact = ask(&state, &user.visitor.profile.user_id, Interface::Pc, request).await?;
    let csrf = user.csrf();
    Ok(page::render(StatusCode::OK, &ContactView { t: user.t, csrf: &csrf, contact }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    organization: String,
}

impl WithCsrf for AddForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /contacts`: adds one; a refusal shows the list with the form as it was.
pub async fn add(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, f) = match guard::signed_in_form::<AddForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let t = user.t;
    let one = |v: &str| v.split([',', ';']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let new = NewContact {
        name: f.name.trim().to_string(),
        emails: one(&f.email),
        phones: one(&f.phone),
        organization: Some(f.organization.trim().to_string()).filter(|o| !o.is_empty()),
    };
    let user_id = user.visitor.profile.user_id.clone();
    let error = if new.name.is_empty() {
        t.get("contacts-name-needed")
    } else {
        match ask::<Contact>(&state, &user_id, Interface::Pc, FetchRequest::ContactAdd(new)).await {
            Ok(c) => return Ok(page::see_other(&format!("/contacts/{}", segment(&c.contact_id))).finish()),
            Err(PageError::Browse(BrowseError::Refused(why))) => t.get1("contacts-refused", "reason", why.as_str()),
            Err(e) => return Err(e),
        }
    };
    let found = list(&state, &user_id, "", 0).await?;
    let draft = Draft { name: f.name, email: f.email, phone: f.phone, organization: f.organization };
    let csrf = user.csrf();
    Ok(page::render(StatusCode::BAD_REQUEST, &page_of(t, &csrf, String::new(), 0, found, Some(error), draft)))
}
