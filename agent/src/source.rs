//! The mail source: Maildir trees, calendar and contact files, watched for new items.
//!
//! ```text
//! <maildir_root>/<email>/new/<unique>[:2,flags]    → mail     (key: the unique name)
//! <calendar_root>/<email>/<name>.ics              → calendar (key: name; version: content hash)
//! <contacts_root>/<email>/<name>.vcf              → contact  (key: name; version: content hash)
//! ```
//!
//! A delivery agent writes a message into `tmp/` and renames it into `new/`, so a file in
//! `new/` is complete; that rename is what inotify (through `notify`) reports. Files in
//! `cur/` have been seen by a mail reader and are not pushed. Calendar and contact files
//! are pushed again whenever their content changes (a new version of the same key, which
//! replaces the earlier one on the device), so edits reach devices.
//!
//! **Only complete files become items.** Calendar and contact files are often written in
//! place, in several writes (`printf … > f; printf … >> f`), and every write is an event.
//! A file is therefore read only when its writer is done — closed after writing
//! (`IN_CLOSE_WRITE`) or renamed into place — or, for any other event (create, modify),
//! once it has been quiet for `mail.settle_ms`. Even then a calendar or contact file must
//! hold complete objects (every `BEGIN:` closed by its `END:`, see [`check_complete`]);
//! one that does not is looked at again after the settle delay, a few times, and then
//! left until it changes again. Writers should still write to a temporary name and
//! rename (docs/endpoints.md §10.1).
//!
//! Notifications can be lost (inotify queue overflow, a watcher that starts late), so the
//! engine also asks for full scans at start-up and periodically; a scan hands files
//! modified within the settle delay to the same waiting list instead of reading them. The
//! engine's tables make every mail push at most once and every calendar or contact
//! version at most once.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use noc_endpoint::ItemType;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::MailConfig;
use crate::error::AgentError;

/// How many times a calendar or contact file that is not complete is looked at again
/// (every settle delay) before it is left until it changes.
const MAX_RETRIES: u32 = 5;

/// A file that may be a new item.
#[derive(Clone, Debug)]
pub struct SourceItem {
    /// The owner (directory name, lowercased).
    pub email: String,
    pub item_type: ItemType,
    /// The source object's identity in the agent's tables: `mail:<email>:<unique>`,
    /// `calendar:<email>:<file>`, `contact:<email>:<file>`.
    pub key: String,
    /// Calendar and contacts: the SHA-256 of the content. A file whose version changed is
    /// pushed again as a new version of the same object; mail has none (pushed once).
    pub version: Option<String>,
    /// The file name, sent as the item's `Name`.
    pub name: String,
    pub body: Vec<u8>,
}

/// What to scan.
#[derive(Clone, Debug)]
pub enum Scan {
    All,
    User(String),
}

/// What a file-system event says about the writer of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    /// Done: the file was closed after writing, or renamed into place.
    Done,
    /// Still at work, perhaps: look once the file has been quiet for the settle delay.
    Busy,
}

fn signal(kind: &EventKind) -> Option<Signal> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Modify(ModifyKind::Name(_)) => {
            Some(Signal::Done)
        }
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => Some(Signal::Busy),
        // Opening or reading changes nothing; a removed file is no item.
        EventKind::Access(_) | EventKind::Remove(_) => None,
    }
}

/// Files waiting to be read, each with the time to read it (see the module documentation).
#[derive(Debug)]
struct Settler {
    settle: Duration,
    pending: HashMap<PathBuf, Pending>,
    /// Order of the latest event per file, so that files due together are read in the
    /// order they were delivered (a device gets its mail in arrival order).
    next_seq: u64,
}

#[derive(Debug)]
struct Pending {
    due: Instant,
    seq: u64,
    retries: u32,
}

impl Settler {
    fn new(settle: Duration) -> Self {
        Settler { settle, pending: HashMap::new(), next_seq: 0 }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// An event for `path`. Any write activity starts the retry count afresh.
    fn note(&mut self, path: PathBuf, signal: Signal, now: Instant) {
        let due = match signal {
            Signal::Done => now,
            Signal::Busy => now + self.settle,
        };
        let seq = self.seq();
        self.pending.insert(path, Pending { due, seq, retries: 0 });
    }

    /// A scan found `path` modified within the settle delay. A file already waiting keeps
    /// its time: its event may have said it is complete (a rename into `new/` is due at
    /// once), and postponing it by a settle delay would let later mail overtake it.
    fn note_young(&mut self, path: PathBuf, now: Instant) {
        if !self.pending.contains_key(&path) {
            self.note(path, Signal::Busy, now);
        }
    }

    /// `path` was read too early (`retries` times so far): look again after the settle
    /// delay, unless it has had its retries (false).
    fn retry(&mut self, path: PathBuf, retries: u32, now: Instant) -> bool {
        if retries >= MAX_RETRIES {
            return false;
        }
        let seq = self.seq();
        self.pending.entry(path).or_insert(Pending { due: now + self.settle, seq, retries: retries + 1 });
        true
    }

    /// The files due at `now`, in the order they became due (then of their events), with
    /// their retry counts; they leave the list.
    fn take_due(&mut self, now: Instant) -> Vec<(PathBuf, u32)> {
        let mut due: Vec<(Instant, u64, PathBuf)> =
            self.pending.iter().filter(|(_, p)| p.due <= now).map(|(k, p)| (p.due, p.seq, k.clone())).collect();
        due.sort();
        due.into_iter().filter_map(|(_, _, k)| self.pending.remove(&k).map(|p| (k, p.retries))).collect()
    }

    fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs the watcher and scanner until `shutdown`. Items go to the engine, whose event type
/// takes a [`SourceItem`] (`From`): the source knows nothing else of the engine.
pub async fn run<E: From<SourceItem>>(
    cfg: MailConfig,
    engine: mpsc::Sender<E>,
    mut scans: mpsc::Receiver<Scan>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let roots = Roots::new(&cfg)?;
    let settle = Duration::from_millis(cfg.settle_ms);
    let mut settler = Settler::new(settle);
    let (path_tx, mut path_rx) = mpsc::channel::<(PathBuf, Signal)>(4096);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && let Some(signal) = signal(&event.kind)
        {
            for p in event.paths {
                // Full channel: drop; the periodic scan finds the file.
                let _ = path_tx.try_send((p, signal));
            }
        }
    })
    .map_err(|e| AgentError::Source(format!("file watcher: {e}")))?;
    for root in roots.all() {
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| AgentError::Source(format!("watching {}: {e}", root.display())))?;
    }
    let mut rescan = tokio::time::interval(Duration::from_secs(cfg.rescan_interval_seconds));
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await; // the first full scan is requested by the engine once it knows the users
    loop {
        let scan = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some((path, signal)) = path_rx.recv() => {
                // Only files that could be items wait (not tmp/, cur/, dot files, ...).
                if roots.classify(&path).is_some() {
                    settler.note(path, signal, Instant::now());
                }
                continue;
            }
            _ = sleep_until(settler.next_due()) => {
                let now = Instant::now();
                for (path, retries) in settler.take_due(now) {
                    match roots.look(&path, cfg.max_item_bytes) {
                        Look::Item(item) => {
                            if engine.send(E::from(item)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Look::Incomplete(why) => {
                            if settler.retry(path.clone(), retries, now) {
                                tracing::debug!(path = %path.display(), why, "not complete yet; looking again later");
                            } else {
                                tracing::warn!(path = %path.display(), why,
                                    "not a complete object; not pushed until the file changes (write to a temporary name, then rename)");
                            }
                        }
                        Look::Nothing => {}
                    }
                }
                continue;
            }
            Some(scan) = scans.recv() => scan,
            _ = rescan.tick() => Scan::All,
        };
        let found = roots.scan(&scan, cfg.max_item_bytes, settle);
        let now = Instant::now();
        for path in found.young {
            settler.note_young(path, now);
        }
        for item in found.items {
            if engine.send(E::from(item)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Whether `body` holds only complete objects of type `root` (`VCALENDAR`, `VCARD`): one
/// or more `BEGIN:<root>` … `END:<root>`, every `BEGIN:` inside closed by the matching
/// `END:`, nothing but blank lines outside. A file still being written ends inside an open
/// object (or in the middle of its last line), which is what this tells apart; it is not a
/// validator of RFC 5545 or RFC 6350 beyond that. Lines may end in CRLF or LF and may be
/// folded (a continuation line starts with a space or a tab); names are case-insensitive.
/// The bytes need not be UTF-8 (vCard 2.1 files often are not).
pub fn check_complete(root: &str, body: &[u8]) -> Result<(), &'static str> {
    // Unfold: a line starting with a space or a tab continues the previous one.
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for raw in body.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        match (line.first(), lines.last_mut()) {
            (Some(b' ' | b'\t'), Some(prev)) => prev.extend_from_slice(&line[1..]),
            _ => lines.push(line.to_vec()),
        }
    }
    let mut open: Vec<Vec<u8>> = Vec::new();
    let mut objects = 0usize;
    for line in &lines {
        let line = line.trim_ascii_end();
        if line.is_empty() {
            continue;
        }
        let value = |prefix: &[u8]| -> Option<Vec<u8>> {
            let head = line.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix).then(|| line[prefix.len()..].trim_ascii().to_ascii_uppercase())
        };
        if let Some(name) = value(b"BEGIN:") {
            if open.is_empty() && !name.eq_ignore_ascii_case(root.as_bytes()) {
                return Err("an object of another type at the top level");
            }
            open.push(name);
        } else if let Some(name) = value(b"END:") {
            match open.pop() {
                Some(begun) if begun == name => {
                    if open.is_empty() {
                        objects += 1;
                    }
                }
                Some(_) => return Err("an END: that does not match the open BEGIN: (cut short?)"),
                None => return Err("an END: without a BEGIN:"),
            }
        } else if open.is_empty() {
            return Err("content outside BEGIN: … END:");
        }
    }
    if !open.is_empty() {
        return Err("a BEGIN: without its END: (still being written?)");
    }
    if objects == 0 {
        return Err("no object (empty file?)");
    }
    Ok(())
}

/// What reading a path gave.
#[derive(Debug)]
enum Look {
    Item(SourceItem),
    /// A calendar or contact file that does not hold complete objects (yet).
    Incomplete(&'static str),
    /// Not an item: another kind of file, gone, too large, unreadable.
    Nothing,
}

/// What a scan found.
#[derive(Debug, Default)]
struct Scanned {
    items: Vec<SourceItem>,
    /// Files modified within the settle delay: perhaps still being written.
    young: Vec<PathBuf>,
}

/// Creates `<maildir_root>/<email>/{new,cur,tmp}`.
pub fn ensure_maildir(root: &Path, email: &str) -> Result<(), AgentError> {
    if !safe_component(email) {
        return Err(AgentError::Source(format!("{email:?} cannot be a directory name")));
    }
    for sub in ["new", "cur", "tmp"] {
        let dir = root.join(email).join(sub);
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::Source(format!("{}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Whether `s` can name a directory under a root (no separator, not `.` or `..`).
pub(crate) fn safe_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

struct Roots {
    maildir: PathBuf,
    calendar: Option<PathBuf>,
    contacts: Option<PathBuf>,
}

impl Roots {
    fn new(cfg: &MailConfig) -> Result<Self, AgentError> {
        let canon = |p: &Path| -> Result<PathBuf, AgentError> {
            std::fs::create_dir_all(p).map_err(|e| AgentError::Source(format!("{}: {e}", p.display())))?;
            p.canonicalize().map_err(|e| AgentError::Source(format!("{}: {e}", p.display())))
        };
        Ok(Roots {
            maildir: canon(&cfg.maildir_root)?,
            calendar: cfg.calendar_root.as_deref().map(canon).transpose()?,
            contacts: cfg.contacts_root.as_deref().map(canon).transpose()?,
        })
    }

    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.maildir.as_path()];
        v.extend(self.calendar.as_deref());
        v.extend(self.contacts.as_deref());
        v
    }

    /// The item a path is, if any, read from disk; calendar and contact files only when
    /// they hold complete objects.
    fn look(&self, path: &Path, max_bytes: usize) -> Look {
        let Some((email, item_type, name)) = self.classify(path) else { return Look::Nothing };
        let Ok(meta) = std::fs::metadata(path) else { return Look::Nothing };
        if !meta.is_file() {
            return Look::Nothing;
        }
        if meta.len() as usize > max_bytes {
            tracing::warn!(path = %path.display(), size = meta.len(), "item larger than mail.max_item_bytes skipped");
            return Look::Nothing;
        }
        let Ok(body) = std::fs::read(path) else { return Look::Nothing };
        let root = match item_type {
            ItemType::Calendar => Some("VCALENDAR"),
            ItemType::Contact => Some("VCARD"),
            _ => None,
        };
        if let Some(root) = root
            && let Err(why) = check_complete(root, &body)
        {
            return Look::Incomplete(why);
        }
        let (key, version) = match item_type {
            // The unique part of a Maildir name survives the move to cur/ and flag changes.
            ItemType::Mail => (format!("mail:{email}:{}", name.split(':').next().unwrap_or(&name)), None),
            _ => (format!("{}:{email}:{name}", item_type.as_str()), Some(hex::encode(Sha256::digest(&body)))),
        };
        Look::Item(SourceItem { email, item_type, key, version, name, body })
    }

    fn classify(&self, path: &Path) -> Option<(String, ItemType, String)> {
        let under = |root: &Path| -> Option<Vec<String>> {
            let rel = path.strip_prefix(root).ok()?;
            rel.components()
                .map(|c| match c {
                    Component::Normal(s) => s.to_str().map(String::from),
                    _ => None,
                })
                .collect()
        };
        if let Some(parts) = under(&self.maildir)
            && let [email, sub, name] = parts.as_slice()
            && sub == "new"
            && !name.starts_with('.')
        {
            return Some((email.to_lowercase(), ItemType::Mail, name.clone()));
        }
        for (root, ext, ty) in [(&self.calendar, "ics", ItemType::Calendar), (&self.contacts, "vcf", ItemType::Contact)]
        {
            if let Some(root) = root
                && let Some(parts) = under(root)
                && let [email, name] = parts.as_slice()
                && !name.starts_with('.')
                && Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
            {
                return Some((email.to_lowercase(), ty, name.clone()));
            }
        }
        None
    }

    /// Every item under the scanned roots, oldest first. Files modified less than `settle`
    /// ago are not read but returned as `young`: their writer may not be done.
    fn scan(&self, scan: &Scan, max_bytes: usize, settle: Duration) -> Scanned {
        let mut out = Scanned::default();
        let users = |root: &Path| -> Vec<String> {
            match scan {
                Scan::User(email) => vec![email.clone()],
                Scan::All => std::fs::read_dir(root)
                    .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().map(String::from)).collect())
                    .unwrap_or_default(),
            }
        };
        let now = SystemTime::now();
        let mut files = |dir: PathBuf| {
            let Ok(rd) = std::fs::read_dir(&dir) else { return };
            let mut entries: Vec<(PathBuf, Option<SystemTime>)> =
                rd.flatten().map(|e| e.path()).map(|p| (p.clone(), modified(&p))).collect();
            // Oldest first, so a device receives a backlog in arrival order.
            entries.sort_by_key(|(_, m)| *m);
            for (p, m) in entries {
                // A modification time in the future counts as young too: the settle list
                // reads the file after the delay whatever its time says.
                let quiet = m.and_then(|m| now.duration_since(m).ok()).is_some_and(|age| age >= settle);
                if !quiet {
                    if self.classify(&p).is_some() {
                        out.young.push(p);
                    }
                    continue;
                }
                match self.look(&p, max_bytes) {
                    Look::Item(item) => out.items.push(item),
                    Look::Incomplete(why) => {
                        tracing::debug!(path = %p.display(), why, "not a complete object; not pushed")
                    }
                    Look::Nothing => {}
                }
            }
        };
        for u in users(&self.maildir) {
            files(self.maildir.join(&u).join("new"));
        }
        for root in [&self.calendar, &self.contacts].into_iter().flatten() {
            for u in users(root) {
                files(root.join(&u));
            }
        }
        out
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> MailConfig {
        MailConfig {
            maildir_root: dir.join("mail"),
            calendar_root: Some(dir.join("cal")),
            contacts_root: Some(dir.join("contacts")),
            rescan_interval_seconds: 60,
            max_item_bytes: 1000,
            create_maildirs: true,
            settle_ms: 1000,
        }
    }

    const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1@corp\r\nSUMMARY:Budget\r\n \
                         review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    fn item(look: Look) -> SourceItem {
        match look {
            Look::Item(item) => item,
            other => panic!("expected an item, got {other:?}"),
        }
    }

    #[test]
    fn classifies_maildir_calendar_and_contact_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = Roots::new(&cfg(dir.path())).expect("roots");
        ensure_maildir(&roots.maildir, "bob@example.com").expect("maildir");
        let new = roots.maildir.join("bob@example.com/new/1700000000.M1P1.host:2,");
        std::fs::write(&new, b"Subject: hi\n\nbody").expect("write");
        let cur = roots.maildir.join("bob@example.com/cur/1700000001.M1P1.host:2,S");
        std::fs::write(&cur, b"old").expect("write");
        let cal_dir = roots.calendar.clone().expect("cal").join("Bob@Example.com");
        std::fs::create_dir_all(&cal_dir).expect("mkdir");
        std::fs::write(cal_dir.join("meeting.ics"), EVENT).expect("write");
        std::fs::write(cal_dir.join("draft.ics"), "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:").expect("write");
        std::fs::write(cal_dir.join("notes.txt"), b"x").expect("write");
        let card_dir = roots.contacts.clone().expect("contacts").join("bob@example.com");
        std::fs::create_dir_all(&card_dir).expect("mkdir");
        std::fs::write(card_dir.join("alice.vcf"), "BEGIN:VCARD\nVERSION:4.0\nFN:Alice\nEND:VCARD\n").expect("write");
        std::fs::write(roots.maildir.join("bob@example.com/new/big"), vec![b'x'; 2000]).expect("write");

        let mail = item(roots.look(&new, 1000));
        assert_eq!(mail.item_type, ItemType::Mail);
        assert_eq!(mail.key, "mail:bob@example.com:1700000000.M1P1.host");
        assert_eq!(mail.version, None);
        assert!(matches!(roots.look(&cur, 1000), Look::Nothing), "cur/ is not pushed");
        assert!(matches!(roots.look(&cal_dir.join("draft.ics"), 1000), Look::Incomplete(_)));
        let cal = item(roots.look(&cal_dir.join("meeting.ics"), 1000));
        assert_eq!(cal.key, "calendar:bob@example.com:meeting.ics", "the key names the object, not its content");
        assert_eq!(cal.version.as_deref().map(str::len), Some(64));

        // Everything was written just now: with a settle delay, a scan only lists it.
        let young = roots.scan(&Scan::All, 1000, Duration::from_secs(3600));
        assert!(young.items.is_empty());
        assert_eq!(young.young.len(), 5, "{:?}", young.young);
        let all = roots.scan(&Scan::All, 1000, Duration::ZERO);
        assert!(all.young.is_empty());
        let kinds: Vec<(String, ItemType)> = all.items.iter().map(|i| (i.email.clone(), i.item_type.clone())).collect();
        assert_eq!(kinds.len(), 3, "mail, the complete calendar entry and the contact: {kinds:?}");
        assert!(kinds.contains(&("bob@example.com".into(), ItemType::Calendar)), "emails lowercased");
        assert!(kinds.contains(&("bob@example.com".into(), ItemType::Contact)));
        assert!(ensure_maildir(&roots.maildir, "../etc").is_err());
    }

    #[test]
    fn only_complete_objects_pass() {
        assert_eq!(check_complete("VCALENDAR", EVENT.as_bytes()), Ok(()));
        // Every prefix of a calendar object cut inside it is incomplete: what a reader
        // sees between the writes of `printf … > f; printf … >> f`.
        let whole = EVENT.trim_end();
        for cut in 0..whole.len() - "END:VCALENDAR".len() {
            assert!(check_complete("VCALENDAR", &whole.as_bytes()[..cut]).is_err(), "{:?}", &whole[..cut]);
        }
        assert!(check_complete("VCALENDAR", b"BEGIN:VCALENDAR\r\nEND:VCALENDA").is_err(), "cut in the last line");
        assert_eq!(check_complete("VCALENDAR", b"begin:vcalendar\nend:VCALENDAR"), Ok(()), "case, LF, no final EOL");
        assert_eq!(
            check_complete("VCALENDAR", b"BEGIN:VCALEN\r\n DAR\r\nEND:VCALENDAR\r\n"),
            Ok(()),
            "a folded line is unfolded"
        );
        // Several vCards in one file; Latin-1 bytes are fine.
        assert_eq!(check_complete("VCARD", b"BEGIN:VCARD\nFN:Ren\xe9\nEND:VCARD\n\nBEGIN:VCARD\nEND:VCARD\n"), Ok(()));
        assert!(check_complete("VCARD", b"BEGIN:VCARD\nFN:A\nEND:VCARD\nBEGIN:VCARD\nFN:B").is_err());
        for bad in [
            &b""[..],
            b"\r\n",
            b"BEGIN:VCARD\nEND:VCARD\n",
            b"SUMMARY:x\nBEGIN:VCALENDAR\nEND:VCALENDAR",
            b"END:VCALENDAR",
            b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nEND:VCALENDAR\nEND:VEVENT",
        ] {
            assert!(check_complete("VCALENDAR", bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn events_say_when_a_writer_is_done() {
        use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
        assert_eq!(signal(&EventKind::Access(AccessKind::Close(AccessMode::Write))), Some(Signal::Done));
        assert_eq!(signal(&EventKind::Modify(ModifyKind::Name(RenameMode::To))), Some(Signal::Done));
        assert_eq!(signal(&EventKind::Modify(ModifyKind::Data(DataChange::Any))), Some(Signal::Busy));
        assert_eq!(signal(&EventKind::Create(CreateKind::File)), Some(Signal::Busy));
        assert_eq!(signal(&EventKind::Access(AccessKind::Open(AccessMode::Any))), None);
        assert_eq!(signal(&EventKind::Remove(RemoveKind::File)), None);
    }

    #[test]
    fn the_settler_waits_for_quiet_and_retries_a_bounded_number_of_times() {
        let settle = Duration::from_millis(100);
        let mut s = Settler::new(settle);
        let t0 = Instant::now();
        let f = PathBuf::from("/cal/bob/meeting.ics");
        s.note(f.clone(), Signal::Busy, t0);
        s.note(f.clone(), Signal::Busy, t0 + settle / 2);
        assert!(s.take_due(t0 + settle).is_empty(), "a second write restarts the wait");
        assert_eq!(s.next_due(), Some(t0 + settle / 2 + settle));
        assert_eq!(s.take_due(t0 + 2 * settle), vec![(f.clone(), 0)]);
        assert_eq!(s.next_due(), None);

        // Files due together come out in the order of their events.
        let names: Vec<PathBuf> = (0..20).map(|i| PathBuf::from(format!("/mail/bob/new/{}", 19 - i))).collect();
        for n in &names {
            s.note(n.clone(), Signal::Done, t0);
        }
        assert_eq!(s.take_due(t0).into_iter().map(|(p, _)| p).collect::<Vec<_>>(), names);

        // Closed after writing: at once.
        s.note(f.clone(), Signal::Done, t0);
        assert_eq!(s.take_due(t0), vec![(f.clone(), 0)]);
        // Still incomplete: looked at again after each settle delay, MAX_RETRIES times.
        let mut now = t0;
        let mut retries = 0;
        while s.retry(f.clone(), retries, now) {
            now += settle;
            let due = s.take_due(now);
            assert_eq!(due.len(), 1);
            retries = due[0].1;
        }
        assert_eq!(retries, MAX_RETRIES);
        assert!(s.take_due(now + settle * 10).is_empty(), "then left alone");
        // Until it changes again.
        s.note(f.clone(), Signal::Done, now);
        assert_eq!(s.take_due(now), vec![(f.clone(), 0)]);

        // A scan that finds a file due at once (renamed into new/) does not postpone it:
        // mail delivered after it would overtake it. A file nobody announced waits.
        let (m1, m2) = (PathBuf::from("/mail/bob/new/1"), PathBuf::from("/mail/bob/new/2"));
        s.note(m1.clone(), Signal::Done, now);
        s.note_young(m1.clone(), now);
        s.note_young(m2.clone(), now);
        assert_eq!(s.take_due(now), vec![(m1, 0)]);
        assert_eq!(s.take_due(now + settle), vec![(m2, 0)]);
    }
}
