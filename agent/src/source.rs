//! The mail source: Maildir trees, calendar and contact files, watched for new items.
//!
//! ```text
//! <maildir_root>/<email>/new/<unique>[:2,flags]    → mail     (key: the unique name)
//! <calendar_root>/<email>/<name>.ics              → calendar (key: name + content hash)
//! <contacts_root>/<email>/<name>.vcf              → contact  (key: name + content hash)
//! ```
//!
//! A delivery agent writes a message into `tmp/` and renames it into `new/`, so a file in
//! `new/` is complete; that rename is what inotify (through `notify`) reports. Files in
//! `cur/` have been seen by a mail reader and are not pushed. Calendar and contact files
//! are pushed again whenever their content changes (a new hash), so edits reach devices.
//! Notifications can be lost (inotify queue overflow, a watcher that starts late), so the
//! engine also asks for full scans at start-up and periodically; the engine's `seen`
//! table makes every file push at most once.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use noc_endpoint::ItemType;
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MailConfig;
use crate::engine::EngineEvent;
use crate::error::AgentError;

/// A file that may be a new item.
#[derive(Clone, Debug)]
pub struct SourceItem {
    /// The owner (directory name, lowercased).
    pub email: String,
    pub item_type: ItemType,
    /// Deduplication key in the `seen` table.
    pub key: String,
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

/// Runs the watcher and scanner until `shutdown`. Items go to the engine.
pub async fn run(
    cfg: MailConfig,
    engine: mpsc::Sender<EngineEvent>,
    mut scans: mpsc::Receiver<Scan>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let roots = Roots::new(&cfg)?;
    let (path_tx, mut path_rx) = mpsc::channel::<PathBuf>(4096);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            for p in event.paths {
                // Full channel: drop; the periodic scan finds the file.
                let _ = path_tx.try_send(p);
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
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(path) = path_rx.recv() => {
                if let Some(item) = roots.classify_and_read(&path, cfg.max_item_bytes)
                    && engine.send(EngineEvent::NewItem(item)).await.is_err()
                {
                    return Ok(());
                }
            }
            Some(scan) = scans.recv() => {
                for item in roots.scan(&scan, cfg.max_item_bytes) {
                    if engine.send(EngineEvent::NewItem(item)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            _ = rescan.tick() => {
                for item in roots.scan(&Scan::All, cfg.max_item_bytes) {
                    if engine.send(EngineEvent::NewItem(item)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
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

fn safe_component(s: &str) -> bool {
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

    /// The item a path would be, if any, read from disk.
    fn classify_and_read(&self, path: &Path, max_bytes: usize) -> Option<SourceItem> {
        let (email, item_type, name) = self.classify(path)?;
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        if meta.len() as usize > max_bytes {
            tracing::warn!(path = %path.display(), size = meta.len(), "item larger than mail.max_item_bytes skipped");
            return None;
        }
        let body = std::fs::read(path).ok()?;
        let key = match item_type {
            // The unique part of a Maildir name survives the move to cur/ and flag changes.
            ItemType::Mail => format!("mail:{email}:{}", name.split(':').next().unwrap_or(&name)),
            _ => format!("{}:{email}:{name}:{}", item_type.as_str(), hex::encode(Sha256::digest(&body))),
        };
        Some(SourceItem { email, item_type, key, name, body })
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

    fn scan(&self, scan: &Scan, max_bytes: usize) -> Vec<SourceItem> {
        let mut out = Vec::new();
        let users = |root: &Path| -> Vec<String> {
            match scan {
                Scan::User(email) => vec![email.clone()],
                Scan::All => std::fs::read_dir(root)
                    .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().map(String::from)).collect())
                    .unwrap_or_default(),
            }
        };
        let mut files = |dir: PathBuf| {
            let Ok(rd) = std::fs::read_dir(&dir) else { return };
            let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            // Oldest first, so a device receives a backlog in arrival order.
            entries.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            for p in entries {
                if let Some(item) = self.classify_and_read(&p, max_bytes) {
                    out.push(item);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> MailConfig {
        MailConfig {
            maildir_root: dir.join("mail"),
            calendar_root: Some(dir.join("cal")),
            contacts_root: None,
            rescan_interval_seconds: 60,
            max_item_bytes: 1000,
            create_maildirs: true,
        }
    }

    #[test]
    fn classifies_maildir_and_calendar_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = Roots::new(&cfg(dir.path())).expect("roots");
        ensure_maildir(&roots.maildir, "bob@example.com").expect("maildir");
        let new = roots.maildir.join("bob@example.com/new/1700000000.M1P1.host:2,");
        std::fs::write(&new, b"Subject: hi\n\nbody").expect("write");
        let cur = roots.maildir.join("bob@example.com/cur/1700000001.M1P1.host:2,S");
        std::fs::write(&cur, b"old").expect("write");
        let cal_dir = roots.calendar.clone().expect("cal").join("Bob@Example.com");
        std::fs::create_dir_all(&cal_dir).expect("mkdir");
        std::fs::write(cal_dir.join("meeting.ics"), b"BEGIN:VCALENDAR").expect("write");
        std::fs::write(cal_dir.join("notes.txt"), b"x").expect("write");
        std::fs::write(roots.maildir.join("bob@example.com/new/big"), vec![b'x'; 2000]).expect("write");

        let mail = roots.classify_and_read(&new, 1000).expect("mail");
        assert_eq!(mail.item_type, ItemType::Mail);
        assert_eq!(mail.key, "mail:bob@example.com:1700000000.M1P1.host");
        assert!(roots.classify_and_read(&cur, 1000).is_none(), "cur/ is not pushed");

        let all = roots.scan(&Scan::All, 1000);
        let kinds: Vec<(String, ItemType)> = all.iter().map(|i| (i.email.clone(), i.item_type.clone())).collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(kinds.contains(&("bob@example.com".into(), ItemType::Calendar)), "emails lowercased");
        assert!(ensure_maildir(&roots.maildir, "../etc").is_err());
    }
}
