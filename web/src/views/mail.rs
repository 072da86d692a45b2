//! `GET /mail/{folder}`, `GET /mail/{folder}/{id}`, `GET /mail/{folder}/{id}/attachments/{n}`,
//! `POST /mail/{folder}/{id}/delete`, `POST /mail/{folder}/{id}/move`: the user's mail on a
//! PC browser (white paper §6.1), fetched live from the enterprise server for each page:
//! folders with their unread counts, a page of messages newest first, one message (its
//! text part, or its HTML part made safe), its attachments to download, delete and move.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::rts::fetch::{
    Attachment, Done, FetchRequest, Folder, FolderList, Message, MessagePage, MessageSummary,
};
use serde::Deserialize;

use crate::browse::{self, ask, segment};
use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::Interface;
use crate::{WebState, page};

/// Messages per page on a PC.
const PAGE: u32 = 25;

pub struct FolderLink {
    pub name: String,
    pub href: String,
    pub unread: u32,
    pub current: bool,
}

fn folder_links(folders: Vec<Folder>, current: &str, t: Lang) -> Vec<FolderLink> {
    folders
        .into_iter()
        .map(|f| FolderLink {
            name: folder_name(&f.folder_id, &f.name, t),
            href: format!("/mail/{}", segment(&f.folder_id)),
            unread: f.unread,
            current: f.folder_id == current,
        })
        .collect()
}

/// The inbox in the reader's language; other folders by their own names.
pub(crate) fn folder_name(id: &str, name: &str, t: Lang) -> String {
    if id == "INBOX" { t.get("mail-inbox") } else { name.to_string() }
}

pub struct Row {
    pub from: String,
    pub subject: String,
    pub href: String,
    pub date: String,
    pub size: String,
    pub unread: bool,
    pub attachments: bool,
}

fn row(m: MessageSummary, folder: &str, tz: &jiff::tz::TimeZone, t: Lang) -> Row {
    Row {
        href: format!("/mail/{}/{}", segment(folder), segment(&m.message_id)),
        from: if m.from.is_empty() { t.get("mail-no-sender") } else { m.from },
        subject: if m.subject.trim().is_empty() { t.get("mail-no-subject") } else { m.subject },
        date: browse::local_time(m.date, tz),
        size: browse::size(m.size),
        unread: m.unread,
        attachments: m.has_attachments,
    }
}

#[derive(Template)]
#[template(path = "mail.html")]
pub struct FolderPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub folders: Vec<FolderLink>,
    pub folder_name: String,
    pub messages: Vec<Row>,
    /// `1–25 of 130`.
    pub position: String,
    pub newer: Option<String>,
    pub older: Option<String>,
    pub notice: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    offset: u32,
    /// What the previous form did (`sent`, `deleted`, `moved`), for the notice.
    #[serde(default)]
    done: Option<String>,
}

/// The query string as `T`; anything else is a bad request.
pub(crate) fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, PageError> {
    serde_urlencoded::from_str(req.query_string()).map_err(|_| PageError::BadForm)
}

/// `1–25 of 130` in the reader's language.
pub(crate) fn position(t: Lang, offset: u32, shown: u32, total: u32) -> String {
    // Saturating: the offset is the browser's, the count the enterprise server's.
    let first = if shown == 0 { 0 } else { offset.saturating_add(1) };
    let last = offset.saturating_add(shown);
    t.get_with("page-position", &[("first", &first), ("last", &last), ("total", &total)])
}

/// `GET /mail`: the inbox.
pub async fn inbox() -> HttpResponse {
    page::see_other("/mail/INBOX").finish()
}

/// `GET /mail/{folder}`.
pub async fn folder(
    req: HttpRequest,
    state: web::Data<WebState>,
    folder: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let q: ListQuery = query(&req)?;
    let (t, id) = (user.t, user.visitor.profile.user_id.as_str());
    let list = FetchRequest::MailList { folder: folder.to_string(), offset: q.offset, limit: PAGE };
    let (folders, page_of) = futures_util::future::join(
        ask::<FolderList>(&state, id, Interface::Pc, FetchRequest::MailFolders {}),
        ask::<MessagePage>(&state, id, Interface::Pc, list),
    )
    .await;
    let (folders, page_of) = (folders?, page_of?);
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let name = folders
        .folders
        .iter()
        .find(|f| f.folder_id == *folder)
        .map_or_else(|| folder.to_string(), |f| folder_name(&f.folder_id, &f.name, t));
    let here = format!("/mail/{}", segment(&folder));
    let shown = u32::try_from(page_of.messages.len()).unwrap_or(u32::MAX);
    let notice = match q.done.as_deref() {
        Some("sent") => Some(t.get("mail-sent")),
        Some("deleted") => Some(t.get("mail-deleted")),
        Some("moved") => Some(t.get("mail-moved")),
        _ => None,
    };
    let csrf = user.csrf();
    Ok(page::render(
        StatusCode::OK,
        &FolderPage {
            t,
            csrf: &csrf,
            folders: folder_links(folders.folders, &folder, t),
            folder_name: name,
            messages: page_of.messages.into_iter().map(|m| row(m, &folder, &tz, t)).collect(),
            position: position(t, q.offset, shown, page_of.total),
            newer: (q.offset > 0).then(|| format!("{here}?offset={}", q.offset.saturating_sub(PAGE))),
            older: (q.offset.saturating_add(shown) < page_of.total)
                .then(|| format!("{here}?offset={}", q.offset.saturating_add(PAGE))),
            notice,
        },
    ))
}

pub struct AttachmentLink {
    pub name: String,
    pub size: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "mail_message.html")]
pub struct MessageView<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub folder_name: String,
    pub folder_href: String,
    pub here: String,
    pub from: String,
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub date: String,
    /// The text part, shown as text.
    pub text: Option<String>,
    /// The HTML part, made safe ([`browse::safe_html`]); shown when there is no text part.
    pub html: Option<String>,
    pub attachments: Vec<AttachmentLink>,
    /// Where the message can be moved.
    pub targets: Vec<(String, String)>,
    pub reply: String,
    pub forward: String,
}

/// `GET /mail/{folder}/{id}`.
pub async fn message(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let (folder, id) = path.into_inner();
    let (t, user_id) = (user.t, user.visitor.profile.user_id.as_str());
    let read = FetchRequest::MailRead { folder: folder.clone(), message_id: id.clone() };
    let (folders, m) = futures_util::future::join(
        ask::<FolderList>(&state, user_id, Interface::Pc, FetchRequest::MailFolders {}),
        ask::<Message>(&state, user_id, Interface::Pc, read),
    )
    .await;
    let (folders, m) = (folders?, m?);
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let here = format!("/mail/{}/{}", segment(&folder), segment(&id));
    let current = folders
        .folders
        .iter()
        .find(|f| f.folder_id == folder)
        .map_or_else(|| folder.clone(), |f| folder_name(&f.folder_id, &f.name, t));
    let html = if m.text.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        None
    } else {
        m.html.as_deref().map(browse::safe_html)
    };
    let refs = format!("folder={}&id={}", segment(&folder), segment(&id));
    let csrf = user.csrf();
    Ok(page::render(
        StatusCode::OK,
        &MessageView {
            t,
            csrf: &csrf,
            folder_href: format!("/mail/{}", segment(&folder)),
            folder_name: current,
            from: m.from,
            to: m.to.join(", "),
            cc: m.cc.join(", "),
            subject: if m.subject.trim().is_empty() { t.get("mail-no-subject") } else { m.subject },
            date: browse::local_time(m.date, &tz),
            text: m.text.filter(|s| !s.trim().is_empty()),
            html,
            attachments: m
                .attachments
                .into_iter()
                .map(|a| AttachmentLink {
                    href: format!("{here}/attachments/{}", a.index),
                    size: browse::size(a.size),
                    name: a.name,
                })
                .collect(),
            targets: folders
                .folders
                .iter()
                .filter(|f| f.folder_id != folder)
                .map(|f| (f.folder_id.clone(), folder_name(&f.folder_id, &f.name, t)))
                .collect(),
            reply: format!("/mail/compose?mode=reply&{refs}"),
            forward: format!("/mail/compose?mode=forward&{refs}"),
            here,
        },
    ))
}

/// `GET /mail/{folder}/{id}/attachments/{n}`: the attachment as a download. Always
/// `application/octet-stream` and `attachment`: a file from a mail never opens as a page
/// of this site.
pub async fn attachment(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String, u32)>,
) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let (folder, message_id, index) = path.into_inner();
    let request = FetchRequest::MailAttachment { folder, message_id, index };
    let a: Attachment = ask(&state, &user.visitor.profile.user_id, Interface::Pc, request).await?;
    let bytes = noc_protocol::rts::decode_payload(&a.data)
        .map_err(|_| PageError::Browse(crate::portal::BrowseError::Internal))?;
    let mut builder = HttpResponse::Ok();
    page::secure(&mut builder)
        .insert_header(("Content-Security-Policy", "default-src 'none'; sandbox"))
        .insert_header(("Content-Disposition", content_disposition(&a.name)))
        .content_type("application/octet-stream");
    Ok(builder.body(bytes))
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266), the plain name made of
/// printable ASCII without quotes.
fn content_disposition(name: &str) -> String {
    let plain: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{}", segment(name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveForm {
    #[serde(default)]
    csrf: String,
    /// The folder to move to (absent for a delete).
    #[serde(default)]
    to: Option<String>,
}

impl WithCsrf for MoveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /mail/{folder}/{id}/delete`: into the trash (for good when it is there).
pub async fn delete(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, _) = match guard::signed_in_form::<MoveForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    browse::delete(&state, &user.visitor.profile.user_id, Interface::Pc, path.into_inner(), "/mail").await
}

/// `POST /mail/{folder}/{id}/move`.
pub async fn move_to(
    req: HttpRequest,
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, form) = match guard::signed_in_form::<MoveForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let to_folder = form.to.filter(|t| !t.is_empty()).ok_or(PageError::BadForm)?;
    let (folder, message_id) = path.into_inner();
    let request = FetchRequest::MailMove { folder: folder.clone(), message_id, to_folder };
    let _: Done = ask(&state, &user.visitor.profile.user_id, Interface::Pc, request).await?;
    Ok(page::see_other(&format!("/mail/{}?done=moved", segment(&folder))).finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_name_their_file_safely() {
        assert_eq!(
            content_disposition("r\u{e9}sum\u{e9} \"v2\".pdf"),
            "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
        assert!(!content_disposition("a\r\nSet-Cookie: x").contains('\n'));
    }
}
