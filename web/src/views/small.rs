//! What the PDA pages ([`super::pda`]) and the WAP decks ([`super::wap`]) share: the same
//! lists (folders, a folder, a calendar day, contacts), the same compose form and the same
//! queries, built here once; each of the two modules only renders them, as HTML or WML.

use noc_protocol::rts::fetch::{
    ContactPage, EventList, FetchRequest, FolderList, Message, MessagePage, MessageRef, Outgoing,
};
use serde::Deserialize;

use crate::WebState;
use crate::browse::{self, addresses, ask, segment};
use crate::errors::PageError;
use crate::guard::{SignedIn, WithCsrf};
use crate::i18n::Lang;
use crate::portal::Interface;
use crate::views::compose::prefixed;
use crate::views::mail::{folder_name, position};

/// One of the two small-screen interfaces.
#[derive(Clone, Copy)]
pub(crate) struct Screen {
    pub interface: Interface,
    /// Where its pages live: `/pda`, `/wap`.
    pub root: &'static str,
    /// Messages or contacts per page.
    pub page: u32,
    /// A phone: contacts list their phone number (to call), not their address.
    pub phone: bool,
}

pub(crate) const PDA: Screen = Screen { interface: Interface::Pda, root: "/pda", page: 10, phone: false };
pub(crate) const WAP: Screen = Screen { interface: Interface::Wap, root: "/wap", page: 5, phone: true };

pub struct Link {
    pub text: String,
    /// Empty for an entry that leads nowhere (a calendar event).
    pub href: String,
    pub note: String,
}

/// One list page: a title, links, paging, and what the user may do there.
pub struct Listing {
    pub title: String,
    pub notice: Option<String>,
    pub links: Vec<Link>,
    /// Said when there are no links.
    pub empty: String,
    pub position: Option<String>,
    pub newer: Option<String>,
    pub older: Option<String>,
    /// A search box (contacts), with what was searched.
    pub search: Option<String>,
    /// A "new message" link (mail pages).
    pub compose: bool,
}

impl Listing {
    fn new(title: String, empty: String) -> Self {
        Listing {
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

    /// Links to the pages before and after the one at `offset`, `shown` of `total` long;
    /// `here` is the list's URL with its query begun (it ends in `?` or `&`).
    fn paged(&mut self, t: Lang, here: &str, offset: u32, shown: u32, total: u32, page: u32) {
        self.position = Some(position(t, offset, shown, total));
        self.newer = (offset > 0).then(|| format!("{here}offset={}", offset.saturating_sub(page)));
        self.older =
            (offset.saturating_add(shown) < total).then(|| format!("{here}offset={}", offset.saturating_add(page)));
    }
}

/// The compose form's content: empty, a reply, or what was posted and not sent.
pub struct Draft {
    /// The message answered, if any.
    pub folder: String,
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Paging {
    #[serde(default)]
    offset: u32,
    /// What was just done (`sent`, `deleted`), said at the top.
    #[serde(default)]
    done: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplyTo {
    #[serde(default)]
    folder: String,
    #[serde(default)]
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct DayQuery {
    #[serde(default)]
    day: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: u32,
}

/// A form that is only a button (delete, sign out).
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

impl Screen {
    async fn ask<T: serde::de::DeserializeOwned>(
        self,
        state: &WebState,
        user: &SignedIn,
        request: FetchRequest,
    ) -> Result<T, PageError> {
        ask(state, &user.visitor.profile.user_id, self.interface, request).await
    }

    /// The mail folders, unread counts beside them.
    pub async fn folders(self, state: &WebState, user: &SignedIn) -> Result<Listing, PageError> {
        let t = user.t;
        let list: FolderList = self.ask(state, user, FetchRequest::MailFolders {}).await?;
        let mut l = Listing::new(t.get("nav-mail"), t.get("mail-empty"));
        l.compose = true;
        l.links = list
            .folders
            .into_iter()
            .map(|f| Link {
                href: format!("{}/mail/{}", self.root, segment(&f.folder_id)),
                note: if f.unread > 0 { f.unread.to_string() } else { String::new() },
                text: folder_name(&f.folder_id, &f.name, t),
            })
            .collect();
        Ok(l)
    }

    /// A folder's messages, a page at a time, newest first.
    pub async fn folder(
        self,
        state: &WebState,
        user: &SignedIn,
        folder: &str,
        q: Paging,
    ) -> Result<Listing, PageError> {
        let t = user.t;
        let request = FetchRequest::MailList { folder: folder.to_string(), offset: q.offset, limit: self.page };
        let found: MessagePage = self.ask(state, user, request).await?;
        let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
        let here = format!("{}/mail/{}", self.root, segment(folder));
        let shown = u32::try_from(found.messages.len()).unwrap_or(u32::MAX);
        let mut l = Listing::new(folder_name(folder, folder, t), t.get("mail-empty"));
        l.compose = true;
        l.notice = match q.done.as_deref() {
            Some("sent") => Some(t.get("mail-sent")),
            Some("deleted") => Some(t.get("mail-deleted")),
            _ => None,
        };
        l.paged(t, &format!("{here}?"), q.offset, shown, found.total, self.page);
        l.links = found
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
        Ok(l)
    }

    /// One day of the calendar (today by default), in the user's time zone.
    pub async fn calendar(self, state: &WebState, user: &SignedIn, q: DayQuery) -> Result<Listing, PageError> {
        let t = user.t;
        let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
        let day = match q.day.as_deref() {
            None | Some("") => {
                browse::local_date(noc_protocol::clock::unix_ms_i64(), &tz).ok_or(PageError::Internal)?
            }
            Some(d) => d.parse::<jiff::civil::Date>().map_err(|_| PageError::BadForm)?,
        };
        let (previous, next) =
            (day.yesterday().map_err(|_| PageError::BadForm)?, day.tomorrow().map_err(|_| PageError::BadForm)?);
        let (from, to) = (browse::day_start(day, &tz), browse::day_start(next, &tz));
        let events: EventList = self.ask(state, user, FetchRequest::CalendarRange { from, to }).await?;
        let mut l = Listing::new(day.to_string(), t.get("calendar-nothing"));
        l.links = events
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
        l.newer = Some(format!("{}/calendar?day={previous}", self.root));
        l.older = Some(format!("{}/calendar?day={next}", self.root));
        Ok(l)
    }

    /// Contacts matching a search (all of them for none), a page at a time.
    pub async fn contacts(self, state: &WebState, user: &SignedIn, q: Search) -> Result<Listing, PageError> {
        let t = user.t;
        let request = FetchRequest::ContactList { query: q.q.clone(), offset: q.offset, limit: self.page };
        let found: ContactPage = self.ask(state, user, request).await?;
        let shown = u32::try_from(found.contacts.len()).unwrap_or(u32::MAX);
        let mut l = Listing::new(t.get("contacts-title"), t.get("contacts-none"));
        l.paged(t, &format!("{}/contacts?q={}&", self.root, segment(&q.q)), q.offset, shown, found.total, self.page);
        l.search = Some(q.q);
        l.links = found
            .contacts
            .into_iter()
            .map(|c| Link {
                href: format!("{}/contacts/{}", self.root, segment(&c.contact_id)),
                note: if self.phone { c.phones.first() } else { c.emails.first() }.cloned().unwrap_or_default(),
                text: if c.name.is_empty() { t.get("contacts-no-name") } else { c.name },
            })
            .collect();
        Ok(l)
    }

    /// The compose form: empty, or a reply to the message named by the query.
    pub async fn draft(self, state: &WebState, user: &SignedIn, q: ReplyTo) -> Result<Draft, PageError> {
        let mut d = Draft {
            folder: String::new(),
            id: String::new(),
            to: String::new(),
            subject: String::new(),
            body: String::new(),
            error: None,
        };
        if !q.folder.is_empty() && !q.id.is_empty() {
            let read = FetchRequest::MailRead { folder: q.folder.clone(), message_id: q.id.clone() };
            let m: Message = self.ask(state, user, read).await?;
            d.to = m.from;
            d.subject = prefixed("Re:", &m.subject);
            (d.folder, d.id) = (q.folder, q.id);
        }
        Ok(d)
    }

    /// Sends a posted compose form. `Ok(Ok(location))`: sent, go there; `Ok(Err(draft))`:
    /// not sent, the form again with what was written and why.
    pub async fn send(
        self,
        state: &WebState,
        user: &SignedIn,
        f: SendForm,
    ) -> Result<Result<String, Draft>, PageError> {
        let outgoing = Outgoing {
            to: addresses(&f.to),
            cc: Vec::new(),
            subject: f.subject.trim().to_string(),
            body: f.body.clone(),
            in_reply_to: (!f.folder.is_empty() && !f.id.is_empty())
                .then(|| MessageRef { folder: f.folder.clone(), message_id: f.id.clone() }),
            forward_attachments_of: None,
        };
        Ok(match browse::send(state, &user.visitor.profile.user_id, self.interface, outgoing, user.t).await? {
            None => Ok(format!("{}/mail/INBOX?done=sent", self.root)),
            Some(why) => {
                Err(Draft { folder: f.folder, id: f.id, to: f.to, subject: f.subject, body: f.body, error: Some(why) })
            }
        })
    }
}
