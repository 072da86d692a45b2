//! `GET|POST /mail/compose`: a new message, a reply or a forward, sent from the user's own
//! address by the enterprise server (through its SMTP server, as mail from devices is).
//! A reply names the message it answers (the server sets `In-Reply-To`); a forward sends
//! the original's attachments along.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::rts::fetch::{FetchRequest, Message, MessageRef, Outgoing};
use serde::Deserialize;

use crate::browse::{self, addresses, ask, segment};
use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::Interface;
use crate::views::mail::query;
use crate::{WebState, page};

#[derive(Template)]
#[template(path = "mail_compose.html")]
pub struct ComposePage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub mode: &'a str,
    pub folder: String,
    pub id: String,
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub body: String,
    /// A forward: the names of the attachments that go along.
    pub attachments: Vec<String>,
    pub error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ComposeQuery {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    id: String,
    /// A new message to this address (from a contact's page).
    #[serde(default)]
    to: String,
}

/// `Re: x` / `Fwd: x`, without doubling a prefix already there.
pub(crate) fn prefixed(prefix: &str, subject: &str) -> String {
    let s = subject.trim();
    // `get`, not indexing: the prefix's length may fall inside a character of the subject.
    if s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix)) {
        s.to_string()
    } else {
        format!("{prefix} {s}")
    }
}

/// The original's text, each line quoted.
fn quoted(text: &str) -> String {
    text.lines().map(|l| format!("> {l}\n")).collect()
}

/// `GET /mail/compose`.
pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let q: ComposeQuery = query(&req)?;
    let t = user.t;
    let csrf = user.csrf();
    let mut form = ComposePage {
        t,
        csrf: &csrf,
        mode: "new",
        folder: String::new(),
        id: String::new(),
        to: q.to.clone(),
        cc: String::new(),
        subject: String::new(),
        body: String::new(),
        attachments: Vec::new(),
        error: None,
    };
    if q.mode == "reply" || q.mode == "forward" {
        let read = FetchRequest::MailRead { folder: q.folder.clone(), message_id: q.id.clone() };
        let m: Message = ask(&state, &user.visitor.profile.user_id, Interface::Pc, read).await?;
        let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
        let original = m.text.clone().unwrap_or_default();
        let when = browse::local_time(m.date, &tz);
        if q.mode == "reply" {
            form.mode = "reply";
            form.to = m.from.clone();
            form.subject = prefixed("Re:", &m.subject);
            form.body = format!(
                "\n\n{}\n{}",
                t.get2("mail-quote-intro", "when", when.as_str(), "from", m.from.as_str()),
                quoted(&original)
            );
        } else {
            form.mode = "forward";
            form.subject = prefixed("Fwd:", &m.subject);
            form.attachments = m.attachments.iter().map(|a| a.name.clone()).collect();
            form.body = format!(
                "\n\n{}\n{}: {}\n{}: {}\n{}: {}\n\n{}",
                t.get("mail-forwarded"),
                t.get("mail-from"),
                m.from,
                t.get("mail-date"),
                when,
                t.get("mail-subject"),
                m.subject,
                original
            );
        }
        form.folder = q.folder;
        form.id = q.id;
    }
    Ok(page::render(StatusCode::OK, &form))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cc: String,
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

/// `POST /mail/compose`: sends it; a refusal (no recipient, a bad address) shows the form
/// again with what was written.
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
    let original = (!f.folder.is_empty() && !f.id.is_empty())
        .then(|| MessageRef { folder: f.folder.clone(), message_id: f.id.clone() });
    let outgoing = Outgoing {
        to: addresses(&f.to),
        cc: addresses(&f.cc),
        subject: f.subject.trim().to_string(),
        body: f.body.clone(),
        in_reply_to: original.clone().filter(|_| f.mode == "reply"),
        forward_attachments_of: original.filter(|_| f.mode == "forward"),
    };
    let Some(error) = browse::send(&state, &user.visitor.profile.user_id, Interface::Pc, outgoing, t).await? else {
        return Ok(page::see_other("/mail/INBOX?done=sent").finish());
    };
    let csrf = user.csrf();
    let mode = match f.mode.as_str() {
        "reply" => "reply",
        "forward" => "forward",
        _ => "new",
    };
    Ok(page::render(
        StatusCode::BAD_REQUEST,
        &ComposePage {
            t,
            csrf: &csrf,
            mode,
            folder: f.folder,
            id: f.id,
            to: f.to,
            cc: f.cc,
            subject: f.subject,
            body: f.body,
            attachments: Vec::new(),
            error: Some(error),
        },
    ))
}

/// Where a reply or forward came from, for the template's "back" link.
impl ComposePage<'_> {
    pub fn back(&self) -> String {
        if self.folder.is_empty() {
            "/mail/INBOX".to_string()
        } else if self.id.is_empty() {
            format!("/mail/{}", segment(&self.folder))
        } else {
            format!("/mail/{}/{}", segment(&self.folder), segment(&self.id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_quote_and_prefix_once() {
        assert_eq!(prefixed("Re:", "Plan"), "Re: Plan");
        assert_eq!(prefixed("Re:", "RE: Plan"), "RE: Plan");
        assert_eq!(prefixed("Re:", "Grüße"), "Re: Grüße", "no panic inside a character");
        assert_eq!(prefixed("Fwd:", "会議の件"), "Fwd: 会議の件");
        assert_eq!(quoted("a\nb"), "> a\n> b\n");
        assert_eq!(addresses(" a@x.example; b@y.example ,,"), ["a@x.example", "b@y.example"]);
    }
}
