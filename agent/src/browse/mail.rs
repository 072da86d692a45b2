//! The user's Maildir as browse pages see it (docs/endpoints.md §10.3): folders, pages of
//! messages newest first, one message parsed (text and HTML parts, attachments), moves and
//! deletions.
//!
//! Layout, Maildir++: the inbox is `<maildir_root>/<email>/{new,cur,tmp}`, other folders
//! are its subdirectories `.<Name>/{new,cur,tmp}` (`.Sent`, `.Trash`, `.Archive.2026`).
//! Folder and message ids from the relay are never joined into a path: each is looked up
//! in a listing of what is there, so no id can reach outside the user's tree.
//!
//! "Unread" is a message in `new/`, or in `cur/` without the `S` flag. Reading a message
//! marks it seen as a mail reader does: into `cur/` with the `S` flag. The device push
//! does not mind: it takes a message from `new/` when it is delivered there (the rename
//! it is told of), long before anyone opens it on a page, and a message someone already
//! read need not be pushed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use mail_parser::{MessageParser, MimeHeaders};
use noc_protocol::rts::fetch::{
    Attachment, AttachmentInfo, FetchError, FetchErrorCode, Folder, FolderList, Message, MessagePage, MessageSummary,
};

/// The inbox's id (and name).
pub const INBOX: &str = "INBOX";
/// Where deleted messages go (deleting there removes them).
pub const TRASH: &str = "Trash";
/// Where a copy of each sent message is kept.
pub const SENT: &str = "Sent";
/// How much of a file the listing reads for its header fields.
const HEADER_BYTES: usize = 16 * 1024;
/// Longest page the relay may ask for.
pub const MAX_PAGE: u32 = 200;

pub fn not_found(what: &str) -> FetchError {
    FetchError { code: FetchErrorCode::NotFound, message: format!("no such {what}") }
}

fn unavailable(e: std::io::Error) -> FetchError {
    tracing::warn!(error = %e, "browse: the Maildir could not be read");
    FetchError { code: FetchErrorCode::Unavailable, message: "the mailbox could not be read".into() }
}

/// The folders of the Maildir at `user_root`: the inbox first, then the others by name.
pub fn folders(user_root: &Path) -> Result<FolderList, FetchError> {
    let mut folders = vec![folder(user_root, INBOX)?];
    let mut names = subfolders(user_root)?;
    names.sort();
    for name in names {
        folders.push(folder(&user_root.join(format!(".{name}")), &name)?);
    }
    Ok(FolderList { folders })
}

fn folder(dir: &Path, name: &str) -> Result<Folder, FetchError> {
    let files = messages_in(dir)?;
    let unread = files.iter().filter(|f| f.unread).count();
    Ok(Folder { folder_id: name.to_string(), name: name.to_string(), total: count(files.len()), unread: count(unread) })
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The Maildir++ folder names under `user_root` (directories `.<Name>` holding `cur/`).
fn subfolders(user_root: &Path) -> Result<Vec<String>, FetchError> {
    let entries = match fs::read_dir(user_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unavailable(e)),
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(folder) = name.strip_prefix('.')
            && !folder.is_empty()
            && !folder.starts_with('.')
            && entry.path().join("cur").is_dir()
        {
            names.push(folder.to_string());
        }
    }
    Ok(names)
}

/// The directory of folder `id`, found in the listing (never built from the id).
pub fn folder_dir(user_root: &Path, id: &str) -> Result<PathBuf, FetchError> {
    if id == INBOX {
        return Ok(user_root.to_path_buf());
    }
    match subfolders(user_root)?.into_iter().find(|n| n == id) {
        Some(name) => Ok(user_root.join(format!(".{name}"))),
        None => Err(not_found("folder")),
    }
}

/// A message file of a folder.
struct MessageFile {
    path: PathBuf,
    /// The Maildir unique name (the file name before `:2,`): the message's id.
    id: String,
    unread: bool,
    /// When it was delivered (the file's modification time), unix ms.
    delivered: i64,
    size: u64,
}

fn messages_in(dir: &Path) -> Result<Vec<MessageFile>, FetchError> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let entries = match fs::read_dir(dir.join(sub)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(unavailable(e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let (id, flags) = match name.split_once(":2,") {
                Some((id, flags)) => (id.to_string(), flags.to_string()),
                None => (name.clone(), String::new()),
            };
            let delivered = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            out.push(MessageFile {
                path: entry.path(),
                id,
                unread: sub == "new" || !flags.contains('S'),
                delivered,
                size: meta.len(),
            });
        }
    }
    Ok(out)
}

fn find(dir: &Path, message_id: &str) -> Result<MessageFile, FetchError> {
    messages_in(dir)?.into_iter().find(|m| m.id == message_id).ok_or_else(|| not_found("message"))
}

/// One page of folder `folder_id`, newest delivery first.
pub fn list(user_root: &Path, folder_id: &str, offset: u32, limit: u32) -> Result<MessagePage, FetchError> {
    let dir = folder_dir(user_root, folder_id)?;
    let mut files = messages_in(&dir)?;
    files.sort_by(|a, b| b.delivered.cmp(&a.delivered).then_with(|| b.id.cmp(&a.id)));
    let total = count(files.len());
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let mut messages = Vec::new();
    for f in files.into_iter().skip(offset as usize).take(limit) {
        let head = read_head(&f.path).map_err(unavailable)?;
        let parsed = MessageParser::default().parse_headers(&head);
        let (from, subject, date, multipart) = match &parsed {
            Some(m) => (
                m.from().map(show_address).unwrap_or_default(),
                m.subject().unwrap_or_default().to_string(),
                m.date().map(|d| d.to_timestamp() * 1000),
                m.content_type().is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart")),
            ),
            None => (String::new(), String::new(), None, false),
        };
        let mixed = multipart
            && parsed
                .as_ref()
                .and_then(|m| m.content_type())
                .and_then(|ct| ct.subtype())
                .is_some_and(|s| s.eq_ignore_ascii_case("mixed"));
        messages.push(MessageSummary {
            message_id: f.id,
            from,
            subject,
            date: date.unwrap_or(f.delivered),
            size: f.size,
            unread: f.unread,
            has_attachments: mixed,
        });
    }
    Ok(MessagePage { messages, total })
}

fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(4096);
    fs::File::open(path)?.take(HEADER_BYTES as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `Name <address>`, or the address alone.
fn show_address(a: &mail_parser::Address<'_>) -> String {
    a.iter().map(show_addr).collect::<Vec<_>>().join(", ")
}

fn show_addr(a: &mail_parser::Addr<'_>) -> String {
    match (a.name(), a.address()) {
        (Some(n), Some(addr)) if !n.is_empty() => format!("{n} <{addr}>"),
        (_, Some(addr)) => addr.to_string(),
        (Some(n), None) => n.to_string(),
        (None, None) => String::new(),
    }
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    a.map(|a| a.iter().map(show_addr).collect()).unwrap_or_default()
}

/// The raw bytes of message `message_id` of folder `folder_id`.
pub fn raw(user_root: &Path, folder_id: &str, message_id: &str) -> Result<Vec<u8>, FetchError> {
    let f = find(&folder_dir(user_root, folder_id)?, message_id)?;
    fs::read(&f.path).map_err(unavailable)
}

/// One message, parsed.
pub fn read(user_root: &Path, folder_id: &str, message_id: &str) -> Result<Message, FetchError> {
    let dir = folder_dir(user_root, folder_id)?;
    let f = find(&dir, message_id)?;
    let bytes = fs::read(&f.path).map_err(unavailable)?;
    if f.unread
        && let Err(e) = mark_seen(&dir, &f.path)
    {
        // The page still shows the message; it stays unread.
        tracing::warn!(error = %e, "a message read on a page could not be marked seen");
    }
    let m = MessageParser::default().parse(&bytes).ok_or_else(|| FetchError {
        code: FetchErrorCode::Internal,
        message: "the message could not be parsed".into(),
    })?;
    let attachments = m
        .attachments()
        .enumerate()
        .map(|(i, part)| AttachmentInfo {
            index: count(i),
            name: part.attachment_name().unwrap_or("attachment").to_string(),
            content_type: content_type(part),
            size: part.contents().len() as u64,
        })
        .collect();
    Ok(Message {
        message_id: f.id,
        from: m.from().map(show_address).unwrap_or_default(),
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        subject: m.subject().unwrap_or_default().to_string(),
        date: m.date().map_or(f.delivered, |d| d.to_timestamp() * 1000),
        // mail-parser offers an HTML-only message's text converted from its HTML; only a real
        // text/plain part (or one with no type, which is text/plain) counts as text here.
        text: m
            .text_part(0)
            .filter(|p| p.content_type().is_none() || p.is_content_type("text", "plain"))
            .and_then(|_| m.body_text(0))
            .map(|t| t.into_owned()),
        html: (m.html_body_count() > 0 && m.html_part(0).is_some_and(|p| p.is_content_type("text", "html")))
            .then(|| m.body_html(0))
            .flatten()
            .map(|t| t.into_owned()),
        attachments,
    })
}

/// Renames a message file to `cur/<unique>:2,<flags>` with `S` among its flags (kept in
/// ASCII order, as the Maildir specification asks).
fn mark_seen(folder: &Path, path: &Path) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (unique, flags) = name.split_once(":2,").unwrap_or((&name, ""));
    let mut flags: Vec<char> = flags.chars().filter(|c| *c != 'S').chain(['S']).collect();
    flags.sort_unstable();
    let flags: String = flags.into_iter().collect();
    fs::rename(path, folder.join("cur").join(format!("{unique}:2,{flags}")))
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type().map_or_else(
        || "application/octet-stream".to_string(),
        |ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
    )
}

/// The attachments of a message: name, content type and bytes (for a forward).
pub fn attachments_of(
    user_root: &Path,
    folder_id: &str,
    message_id: &str,
) -> Result<Vec<(String, String, Vec<u8>)>, FetchError> {
    let bytes = raw(user_root, folder_id, message_id)?;
    let Some(m) = MessageParser::default().parse(&bytes) else { return Ok(Vec::new()) };
    Ok(m.attachments()
        .map(|p| (p.attachment_name().unwrap_or("attachment").to_string(), content_type(p), p.contents().to_vec()))
        .collect())
}

/// One attachment, whole.
pub fn attachment(user_root: &Path, folder_id: &str, message_id: &str, index: u32) -> Result<Attachment, FetchError> {
    let mut all = attachments_of(user_root, folder_id, message_id)?;
    let i = index as usize;
    if i >= all.len() {
        return Err(not_found("attachment"));
    }
    let (name, content_type, data) = all.swap_remove(i);
    Ok(Attachment { name, content_type, data: noc_protocol::rts::encode_payload(&data) })
}

/// The `Message-ID` and `References` of a message (for a reply's `In-Reply-To`).
pub fn thread_ids(
    user_root: &Path,
    folder_id: &str,
    message_id: &str,
) -> Result<(Option<String>, Vec<String>), FetchError> {
    let bytes = raw(user_root, folder_id, message_id)?;
    let Some(m) = MessageParser::default().parse_headers(&bytes) else { return Ok((None, Vec::new())) };
    let references = match m.references() {
        mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
        mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    };
    Ok((m.message_id().map(str::to_string), references))
}

/// Moves a message to folder `to` (created when it is the trash or the sent folder).
pub fn move_to(user_root: &Path, folder_id: &str, message_id: &str, to: &str) -> Result<(), FetchError> {
    let from = folder_dir(user_root, folder_id)?;
    let f = find(&from, message_id)?;
    let target = match folder_dir(user_root, to) {
        Ok(dir) => dir,
        Err(_) if to == TRASH || to == SENT => create_folder(user_root, to)?,
        Err(e) => return Err(e),
    };
    if target == from {
        return Ok(());
    }
    let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A message from new/ has no info part yet; in cur/ it keeps its flags.
    let name = if name.contains(":2,") { name } else { format!("{name}:2,") };
    fs::rename(&f.path, target.join("cur").join(name)).map_err(unavailable)
}

/// Deletes a message: into the trash, or for good when it is there already.
pub fn delete(user_root: &Path, folder_id: &str, message_id: &str) -> Result<(), FetchError> {
    if folder_id == TRASH {
        let f = find(&folder_dir(user_root, folder_id)?, message_id)?;
        return fs::remove_file(&f.path).map_err(unavailable);
    }
    move_to(user_root, folder_id, message_id, TRASH)
}

fn create_folder(user_root: &Path, name: &str) -> Result<PathBuf, FetchError> {
    let dir = user_root.join(format!(".{name}"));
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(dir.join(sub)).map_err(unavailable)?;
    }
    Ok(dir)
}

/// Keeps a copy of a sent message in the sent folder (read, so `S`), written to `tmp/`
/// and renamed into place as Maildir wants.
pub fn store_sent(user_root: &Path, message: &[u8]) -> Result<(), FetchError> {
    let dir = match folder_dir(user_root, SENT) {
        Ok(d) => d,
        Err(_) => create_folder(user_root, SENT)?,
    };
    let unique = format!("{}.{}.browse", noc_protocol::clock::unix_ms_i64(), noc_protocol::secrets::random_hex::<8>());
    let tmp = dir.join("tmp").join(&unique);
    fs::write(&tmp, message).map_err(unavailable)?;
    fs::rename(&tmp, dir.join("cur").join(format!("{unique}:2,S"))).map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(dir: &Path, sub: &str, name: &str, body: &str) {
        fs::create_dir_all(dir.join(sub)).expect("dir");
        fs::write(dir.join(sub).join(name), body).expect("write");
    }

    fn maildir() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tmp");
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(root.path().join(sub)).expect("dir");
        }
        root
    }

    const PLAIN: &str = "From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nHello Bob\r\n";

    const MIXED: &str = "From: carol@example.com\r\nTo: bob@example.com\r\nSubject: Report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>See <b>attached</b><script>alert(1)</script></p>\r\n--XX\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n--XX--\r\n";

    #[test]
    fn folders_list_and_read() {
        let root = maildir();
        deliver(root.path(), "new", "1000.a.host", PLAIN);
        deliver(root.path(), "cur", "1001.b.host:2,S", MIXED);
        fs::create_dir_all(root.path().join(".Archive/cur")).expect("archive");
        fs::create_dir_all(root.path().join("..evil/cur")).expect("odd");

        let f = folders(root.path()).expect("folders");
        let names: Vec<_> = f.folders.iter().map(|f| (f.folder_id.as_str(), f.total, f.unread)).collect();
        assert_eq!(names, [("INBOX", 2, 1), ("Archive", 0, 0)]);

        let page = list(root.path(), INBOX, 0, 10).expect("list");
        assert_eq!(page.total, 2);
        let plain = page.messages.iter().find(|m| m.message_id == "1000.a.host").expect("plain");
        assert_eq!(
            (plain.from.as_str(), plain.subject.as_str(), plain.unread),
            ("Alice <alice@example.com>", "café", true)
        );
        assert_eq!(plain.date, 1_796_292_000_000);
        let mixed = page.messages.iter().find(|m| m.message_id == "1001.b.host").expect("mixed");
        assert!(mixed.has_attachments && !mixed.unread);
        assert_eq!(list(root.path(), INBOX, 1, 10).expect("page 2").messages.len(), 1);

        let m = read(root.path(), INBOX, "1000.a.host").expect("read");
        assert_eq!(m.text.as_deref().map(str::trim), Some("Hello Bob"));
        assert_eq!(m.to, ["bob@example.com"]);
        // Read now: seen, in cur/, under the same id.
        assert!(root.path().join("cur/1000.a.host:2,S").is_file());
        assert_eq!(folders(root.path()).expect("folders").folders[0].unread, 0);
        assert_eq!(read(root.path(), INBOX, "1000.a.host").expect("read again").message_id, "1000.a.host");
        let m = read(root.path(), INBOX, "1001.b.host").expect("read mixed");
        assert_eq!(m.text, None, "an HTML-only message has no text part");
        assert!(
            m.html.as_deref().is_some_and(|h| h.contains("<b>attached</b>")),
            "the HTML as sent: the relay sanitises"
        );
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(
            (m.attachments[0].name.as_str(), m.attachments[0].content_type.as_str()),
            ("r.pdf", "application/pdf")
        );
        let a = attachment(root.path(), INBOX, "1001.b.host", 0).expect("attachment");
        assert_eq!(noc_protocol::rts::decode_payload(&a.data).expect("b64"), b"%PDF-1");
        assert_eq!(attachment(root.path(), INBOX, "1001.b.host", 1).map(|_| ()), Err(not_found("attachment")));
        assert_eq!(read(root.path(), INBOX, "../../etc/passwd").map(|_| ()), Err(not_found("message")));
        assert_eq!(list(root.path(), "../x", 0, 10).map(|_| ()), Err(not_found("folder")));
        assert_eq!(list(root.path(), ".evil", 0, 10).map(|_| ()), Err(not_found("folder")));
    }

    #[test]
    fn reading_keeps_the_other_flags_in_order() {
        let root = maildir();
        deliver(root.path(), "cur", "1002.c.host:2,RF", PLAIN);
        read(root.path(), INBOX, "1002.c.host").expect("read");
        assert!(root.path().join("cur/1002.c.host:2,FRS").is_file());
        assert!(!list(root.path(), INBOX, 0, 10).expect("list").messages[0].unread);
    }

    #[test]
    fn delete_moves_to_the_trash_then_removes() {
        let root = maildir();
        deliver(root.path(), "new", "1000.a.host", PLAIN);
        delete(root.path(), INBOX, "1000.a.host").expect("to trash");
        assert_eq!(list(root.path(), INBOX, 0, 10).expect("inbox").total, 0);
        let trash = list(root.path(), TRASH, 0, 10).expect("trash");
        assert_eq!(trash.messages[0].message_id, "1000.a.host");
        move_to(root.path(), TRASH, "1000.a.host", INBOX).expect("back");
        assert_eq!(list(root.path(), INBOX, 0, 10).expect("inbox").total, 1);
        assert_eq!(move_to(root.path(), INBOX, "1000.a.host", "Nowhere"), Err(not_found("folder")));
        delete(root.path(), INBOX, "1000.a.host").expect("to trash again");
        delete(root.path(), TRASH, "1000.a.host").expect("for good");
        assert_eq!(list(root.path(), TRASH, 0, 10).expect("trash").total, 0);
        store_sent(root.path(), PLAIN.as_bytes()).expect("sent copy");
        let sent = list(root.path(), SENT, 0, 10).expect("sent");
        assert_eq!((sent.total, sent.messages[0].unread), (1, false));
        assert_eq!(
            thread_ids(root.path(), SENT, &sent.messages[0].message_id).expect("ids").0.as_deref(),
            Some("m1@example.com")
        );
    }
}
