//! The endpoint's durable state: the outbox of items not yet acknowledged by the peer, the
//! parts of items being received, and the items received (the device's inbox; the agent's
//! mails waiting for SMTP submission).
//!
//! The relay stores nothing (docs/protocol.md §7.3), so whatever must survive an offline
//! peer, a lost connection or a restart of this process lives here. SQLite in WAL mode
//! with `synchronous = FULL`: an item is on disk when [`Store::add_part`] returns, which is
//! what lets an endpoint acknowledge it (docs/endpoints.md §5). Every table is keyed by a
//! *peer* string — `"ves"` on the device, the device id on the agent — so one file serves
//! an agent with many devices.
//!
//! The calls are synchronous and short (one transaction each); endpoints call them from
//! their event loops the way they would take a mutex.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::EndpointError;
use crate::item::{Item, ItemHeader, ItemId, ItemType};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    peer       TEXT    NOT NULL,
    item_id    BLOB    NOT NULL,
    item_type  TEXT    NOT NULL,
    encoded    BLOB    NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    UNIQUE (peer, item_id)
);
CREATE INDEX IF NOT EXISTS outbox_peer_seq ON outbox (peer, seq);
CREATE TABLE IF NOT EXISTS fragments (
    peer        TEXT    NOT NULL,
    item_id     BLOB    NOT NULL,
    part        INTEGER NOT NULL,
    parts       INTEGER NOT NULL,
    chunk       BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, item_id, part)
);
CREATE TABLE IF NOT EXISTS received (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    peer        TEXT    NOT NULL,
    item_id     BLOB    NOT NULL,
    item_type   TEXT    NOT NULL,
    header      TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'new',
    detail      TEXT,
    UNIQUE (peer, item_id)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// What to do when a peer's outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullPolicy {
    /// Drop the oldest items to make room (the agent: the mail stays in the Maildir).
    DropOldest,
    /// Refuse the new item (the device: the user must know that the mail was not queued).
    Refuse,
}

/// Bounds of one peer's outbox.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    pub max_items: usize,
    pub ttl_ms: i64,
    pub policy: FullPolicy,
}

/// The result of [`Store::enqueue`].
#[derive(Debug)]
pub struct Enqueued {
    pub seq: i64,
    /// Items dropped to make room ([`FullPolicy::DropOldest`]).
    pub dropped: Vec<ItemId>,
    /// Earlier versions of the same object taken out of the queue
    /// ([`Store::enqueue_replacing`]).
    pub replaced: Vec<ItemId>,
}

/// The `state` of a received item that a newer version of the same object replaced
/// ([`ItemType::replaces_by_name`]). Its row stays, without its body, so that a resend of
/// it is still recognised as a duplicate instead of being stored again.
pub const STATE_REPLACED: &str = "replaced";

/// An item waiting in the outbox.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub seq: i64,
    pub peer: String,
    pub id: ItemId,
    pub item_type: String,
    pub encoded: Vec<u8>,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// What [`Store::add_part`] did with a part.
#[derive(Debug)]
pub enum PartOutcome {
    /// More parts are needed.
    Incomplete,
    /// The item is complete and stored (the row id of `received`). `replaced`: the earlier
    /// versions of the same object it replaced. `current` is false when a newer version
    /// was already stored (versions that completed out of order): the item is kept as
    /// [`STATE_REPLACED`] at once.
    Stored { row: i64, item: Item, replaced: Vec<ItemId>, current: bool },
    /// The item was already stored: nothing changed.
    Duplicate,
}

/// An item that was received completely.
#[derive(Clone, Debug)]
pub struct Received {
    pub row: i64,
    pub peer: String,
    pub id: ItemId,
    pub header: ItemHeader,
    pub body: Vec<u8>,
    pub received_ms: i64,
    pub state: String,
    pub detail: Option<String>,
}

/// The endpoint's SQLite database.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating) the database at `path` and applies this crate's schema plus
    /// `extra_schema` (the agent's own tables), which must be idempotent.
    pub fn open(path: &Path, extra_schema: &str) -> Result<Self, EndpointError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn, extra_schema)
    }

    /// A database in memory (tests).
    pub fn in_memory(extra_schema: &str) -> Result<Self, EndpointError> {
        Self::init(Connection::open_in_memory()?, extra_schema)
    }

    fn init(conn: Connection, extra_schema: &str) -> Result<Self, EndpointError> {
        conn.execute_batch(SCHEMA)?;
        if !extra_schema.is_empty() {
            conn.execute_batch(extra_schema)?;
        }
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the connection: for the tables an endpoint adds with `extra_schema`.
    pub fn with_conn<R>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>) -> Result<R, EndpointError> {
        Ok(f(&mut self.lock())?)
    }

    // ---- outbox -------------------------------------------------------------------------

    /// Queues an encoded item for `peer`, enforcing `limits`.
    pub fn enqueue(
        &self,
        peer: &str,
        id: ItemId,
        item_type: &str,
        encoded: &[u8],
        limits: QueueLimits,
        now_ms: i64,
    ) -> Result<Enqueued, EndpointError> {
        self.enqueue_inner(peer, id, item_type, None, encoded, limits, now_ms)
    }

    /// Queues a new version of the object `name`: in the same transaction, items of the
    /// same type and name still queued for `peer` are removed, so that a peer that was
    /// offline receives the latest version only. One being sent right now may still
    /// arrive; the receiver keeps the newer one ([`PartOutcome::Stored`]).
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue_replacing(
        &self,
        peer: &str,
        id: ItemId,
        item_type: &str,
        name: &str,
        encoded: &[u8],
        limits: QueueLimits,
        now_ms: i64,
    ) -> Result<Enqueued, EndpointError> {
        self.enqueue_inner(peer, id, item_type, Some(name), encoded, limits, now_ms)
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue_inner(
        &self,
        peer: &str,
        id: ItemId,
        item_type: &str,
        replaces: Option<&str>,
        encoded: &[u8],
        limits: QueueLimits,
        now_ms: i64,
    ) -> Result<Enqueued, EndpointError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM outbox WHERE peer = ?1 AND expires_ms <= ?2", params![peer, now_ms])?;
        let mut replaced = Vec::new();
        if let Some(name) = replaces {
            // The name is inside the encoded header; queues are short (bounded), so reading
            // the headers of one peer's items of this type is cheap and needs no new column.
            let mut stmt = tx.prepare("SELECT seq, item_id, encoded FROM outbox WHERE peer = ?1 AND item_type = ?2")?;
            let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = stmt
                .query_map(params![peer, item_type], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            for (seq, old_id, old) in rows {
                // An undecodable header is our own bug, not the new item's: leave it queued.
                if Item::decode_header(&old).is_ok_and(|h| h.name.as_deref() == Some(name)) {
                    tx.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
                    replaced.push(ItemId::from_slice(&old_id)?);
                }
            }
        }
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM outbox WHERE peer = ?1", params![peer], |r| r.get(0))?;
        let max = limits.max_items.max(1) as i64;
        let mut dropped = Vec::new();
        if count >= max {
            match limits.policy {
                FullPolicy::Refuse => return Err(EndpointError::OutboxFull { max: limits.max_items }),
                FullPolicy::DropOldest => {
                    let excess = count - max + 1;
                    let mut stmt =
                        tx.prepare("SELECT seq, item_id FROM outbox WHERE peer = ?1 ORDER BY seq LIMIT ?2")?;
                    let victims: Vec<(i64, Vec<u8>)> = stmt
                        .query_map(params![peer, excess], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?;
                    drop(stmt);
                    for (seq, id) in victims {
                        tx.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
                        dropped.push(ItemId::from_slice(&id)?);
                    }
                }
            }
        }
        tx.execute(
            "INSERT OR IGNORE INTO outbox (peer, item_id, item_type, encoded, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![peer, &id.0[..], item_type, encoded, now_ms, now_ms.saturating_add(limits.ttl_ms)],
        )?;
        let seq: i64 =
            tx.query_row("SELECT seq FROM outbox WHERE peer = ?1 AND item_id = ?2", params![peer, &id.0[..]], |r| {
                r.get(0)
            })?;
        tx.commit()?;
        Ok(Enqueued { seq, dropped, replaced })
    }

    /// The first unexpired item for `peer` with a sequence number above `after_seq`.
    pub fn next_outgoing(&self, peer: &str, after_seq: i64, now_ms: i64) -> Result<Option<Outgoing>, EndpointError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT seq, peer, item_id, item_type, encoded, created_ms, expires_ms FROM outbox
                 WHERE peer = ?1 AND seq > ?2 AND expires_ms > ?3 ORDER BY seq LIMIT 1",
                params![peer, after_seq, now_ms],
                outgoing_row,
            )
            .optional()?;
        row.map(|(o, id)| Ok(Outgoing { id: ItemId::from_slice(&id)?, ..o })).transpose()
    }

    /// Removes an acknowledged item; `true` if it was queued.
    pub fn remove_outgoing(&self, peer: &str, id: ItemId) -> Result<bool, EndpointError> {
        let n = self.lock().execute("DELETE FROM outbox WHERE peer = ?1 AND item_id = ?2", params![peer, &id.0[..]])?;
        Ok(n > 0)
    }

    /// Deletes expired items (of one peer, or all) and returns them.
    pub fn expire(&self, peer: Option<&str>, now_ms: i64) -> Result<Vec<(String, ItemId)>, EndpointError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut expired = Vec::new();
        {
            let mut stmt =
                tx.prepare("SELECT peer, item_id FROM outbox WHERE expires_ms <= ?1 AND (?2 IS NULL OR peer = ?2)")?;
            let rows =
                stmt.query_map(params![now_ms, peer], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (p, id) = row?;
                expired.push((p, ItemId::from_slice(&id)?));
            }
        }
        tx.execute("DELETE FROM outbox WHERE expires_ms <= ?1 AND (?2 IS NULL OR peer = ?2)", params![now_ms, peer])?;
        tx.commit()?;
        Ok(expired)
    }

    /// Every queued item (of one peer, or all), oldest first.
    pub fn outbox(&self, peer: Option<&str>) -> Result<Vec<Outgoing>, EndpointError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, peer, item_id, item_type, encoded, created_ms, expires_ms FROM outbox
             WHERE (?1 IS NULL OR peer = ?1) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![peer], outgoing_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (o, id) = row?;
            out.push(Outgoing { id: ItemId::from_slice(&id)?, ..o });
        }
        Ok(out)
    }

    /// Number of items queued for `peer`.
    pub fn outbox_len(&self, peer: &str) -> Result<usize, EndpointError> {
        let n: i64 =
            self.lock().query_row("SELECT COUNT(*) FROM outbox WHERE peer = ?1", params![peer], |r| r.get(0))?;
        Ok(n.max(0) as usize)
    }

    /// Deletes parts of incomplete items received before `before_ms`: an item whose other
    /// parts never came (the sender dropped it) must not hold disk space forever.
    pub fn prune_fragments(&self, peer: &str, before_ms: i64) -> Result<usize, EndpointError> {
        Ok(self
            .lock()
            .execute("DELETE FROM fragments WHERE peer = ?1 AND received_ms < ?2", params![peer, before_ms])?)
    }

    /// Forgets everything queued for and partially received from `peer` (a deleted device).
    pub fn forget_peer(&self, peer: &str) -> Result<(), EndpointError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM outbox WHERE peer = ?1", params![peer])?;
        tx.execute("DELETE FROM fragments WHERE peer = ?1", params![peer])?;
        tx.commit()?;
        Ok(())
    }

    /// Erases everything this database holds (a remote wipe): every row of every table,
    /// with SQLite's `secure_delete` so that freed pages are overwritten with zeros, the
    /// write-ahead log truncated, and the file rebuilt. The schema stays, empty.
    pub fn erase(&self) -> Result<(), EndpointError> {
        let conn = self.lock();
        conn.pragma_update(None, "secure_delete", "ON")?;
        let tables: Vec<String> = {
            let mut stmt =
                conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")?;
            stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        for table in tables {
            conn.execute(&format!("DELETE FROM \"{}\"", table.replace('"', "\"\"")), [])?;
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        conn.execute_batch("VACUUM")?;
        Ok(())
    }

    // ---- receiving ----------------------------------------------------------------------

    /// Stores one part of an item. When it completes the item, the item is decoded and
    /// stored in `received` in the same transaction, and its parts deleted. A part of an
    /// item already received is a [`PartOutcome::Duplicate`]. Errors: a part count that
    /// disagrees with earlier parts, an item larger than `max_item_bytes`, an undecodable
    /// item (these are the peer's faults: [`EndpointError::Codec`]).
    #[allow(clippy::too_many_arguments)]
    pub fn add_part(
        &self,
        peer: &str,
        id: ItemId,
        index: u32,
        count: u32,
        chunk: &[u8],
        max_item_bytes: usize,
        now_ms: i64,
    ) -> Result<PartOutcome, EndpointError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let exists: Option<i64> = tx
            .query_row("SELECT id FROM received WHERE peer = ?1 AND item_id = ?2", params![peer, &id.0[..]], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_some() {
            return Ok(PartOutcome::Duplicate);
        }
        let (have, have_bytes, other_count): (i64, i64, Option<i64>) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(chunk)), 0), MAX(CASE WHEN parts != ?3 THEN parts END)
             FROM fragments WHERE peer = ?1 AND item_id = ?2",
            params![peer, &id.0[..], count],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if other_count.is_some() {
            return Err(EndpointError::codec("part record", "part count differs from earlier parts of the item"));
        }
        if (have_bytes as usize).saturating_add(chunk.len()) > max_item_bytes
            || (count as usize) > max_item_bytes.max(1)
        {
            return Err(EndpointError::codec("item", format!("larger than the maximum of {max_item_bytes} bytes")));
        }
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO fragments (peer, item_id, part, parts, chunk, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![peer, &id.0[..], index, count, chunk, now_ms],
        )?;
        let have = have + inserted as i64;
        if have < count as i64 {
            tx.commit()?;
            return Ok(PartOutcome::Incomplete);
        }
        let mut encoded = Vec::with_capacity(have_bytes as usize + chunk.len());
        {
            let mut stmt = tx.prepare("SELECT chunk FROM fragments WHERE peer = ?1 AND item_id = ?2 ORDER BY part")?;
            let rows = stmt.query_map(params![peer, &id.0[..]], |r| r.get::<_, Vec<u8>>(0))?;
            for row in rows {
                encoded.extend_from_slice(&row?);
            }
        }
        tx.execute("DELETE FROM fragments WHERE peer = ?1 AND item_id = ?2", params![peer, &id.0[..]])?;
        let item = match Item::decode(&encoded) {
            Ok(item) => item,
            Err(e) => {
                // Not retryable: drop the parts so they do not pile up, and report.
                tx.commit()?;
                return Err(e);
            }
        };
        let header =
            serde_json::to_string(&item.header).map_err(|e| EndpointError::codec("item header", e.to_string()))?;
        tx.execute(
            "INSERT INTO received (peer, item_id, item_type, header, body, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![peer, &id.0[..], item.header.item_type, header, item.body, now_ms],
        )?;
        let row = tx.last_insert_rowid();
        let (replaced, current) = match &item.header.name {
            Some(name) if ItemType::parse(&item.header.item_type).replaces_by_name() => {
                supersede(&tx, peer, &item.header, name, row)?
            }
            _ => (Vec::new(), true),
        };
        tx.commit()?;
        Ok(PartOutcome::Stored { row, item, replaced, current })
    }

    /// Received items (of one peer and/or in one state), in the order they completed.
    pub fn received(&self, peer: Option<&str>, state: Option<&str>) -> Result<Vec<Received>, EndpointError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, peer, item_id, header, body, received_ms, state, detail FROM received
             WHERE (?1 IS NULL OR peer = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![peer, state], received_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(finish_received(row?)?);
        }
        Ok(out)
    }

    /// One received item by row id.
    pub fn received_row(&self, row: i64) -> Result<Option<Received>, EndpointError> {
        let conn = self.lock();
        let r = conn
            .query_row(
                "SELECT id, peer, item_id, header, body, received_ms, state, detail FROM received WHERE id = ?1",
                params![row],
                received_row,
            )
            .optional()?;
        r.map(finish_received).transpose()
    }

    /// Records what became of a received item (the agent: `submitted`, `failed`), optionally
    /// dropping its body once it is no longer needed.
    pub fn set_received_state(
        &self,
        row: i64,
        state: &str,
        detail: Option<&str>,
        drop_body: bool,
    ) -> Result<(), EndpointError> {
        let conn = self.lock();
        if drop_body {
            conn.execute(
                "UPDATE received SET state = ?2, detail = ?3, body = X'' WHERE id = ?1",
                params![row, state, detail],
            )?;
        } else {
            conn.execute("UPDATE received SET state = ?2, detail = ?3 WHERE id = ?1", params![row, state, detail])?;
        }
        Ok(())
    }

    // ---- meta ---------------------------------------------------------------------------

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, EndpointError> {
        Ok(self.lock().query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), EndpointError> {
        self.lock().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

/// Keeps one current version of the object `name` among the items of `header`'s type
/// received from `peer`: the one with the latest `CreatedAtMs` (on a tie, the one stored
/// last, `row`). The others become [`STATE_REPLACED`] and lose their body. Returns the
/// item ids replaced and whether `row` is the current version.
fn supersede(
    tx: &rusqlite::Transaction<'_>,
    peer: &str,
    header: &ItemHeader,
    name: &str,
    row: i64,
) -> Result<(Vec<ItemId>, bool), EndpointError> {
    let mut stmt = tx.prepare(
        "SELECT id, item_id, COALESCE(json_extract(header, '$.CreatedAtMs'), 0) FROM received
         WHERE peer = ?1 AND item_type = ?2 AND state != ?3 AND id != ?4 AND json_extract(header, '$.Name') = ?5",
    )?;
    let others: Vec<(i64, Vec<u8>, i64)> = stmt
        .query_map(params![peer, header.item_type, STATE_REPLACED, row, name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    let replace =
        |id: i64| tx.execute("UPDATE received SET state = ?2, body = X'' WHERE id = ?1", params![id, STATE_REPLACED]);
    if others.iter().any(|(_, _, created)| *created > header.created_at_ms) {
        replace(row)?;
        return Ok((Vec::new(), false));
    }
    let mut replaced = Vec::with_capacity(others.len());
    for (id, item_id, _) in others {
        replace(id)?;
        replaced.push(ItemId::from_slice(&item_id)?);
    }
    Ok((replaced, true))
}

type OutgoingRow = (Outgoing, Vec<u8>);

fn outgoing_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutgoingRow> {
    Ok((
        Outgoing {
            seq: r.get(0)?,
            peer: r.get(1)?,
            id: ItemId([0; 16]),
            item_type: r.get(3)?,
            encoded: r.get(4)?,
            created_ms: r.get(5)?,
            expires_ms: r.get(6)?,
        },
        r.get(2)?,
    ))
}

type ReceivedRow = (i64, String, Vec<u8>, String, Vec<u8>, i64, String, Option<String>);

fn received_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReceivedRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn finish_received(row: ReceivedRow) -> Result<Received, EndpointError> {
    let (row, peer, id, header, body, received_ms, state, detail) = row;
    let header: ItemHeader =
        serde_json::from_str(&header).map_err(|e| EndpointError::codec("stored item header", e.to_string()))?;
    Ok(Received { row, peer, id: ItemId::from_slice(&id)?, header, body, received_ms, state, detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{part_chunk, part_count};

    const LIMITS: QueueLimits = QueueLimits { max_items: 3, ttl_ms: 1000, policy: FullPolicy::DropOldest };

    #[test]
    fn outbox_is_ordered_bounded_and_expires() {
        let store = Store::in_memory("").expect("store");
        let ids: Vec<ItemId> = (0..4).map(|_| ItemId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            let r = store.enqueue("d1", *id, "mail", b"x", LIMITS, 100 + i as i64).expect("enqueue");
            if i == 3 {
                assert_eq!(r.dropped, vec![ids[0]], "oldest dropped at the bound");
            }
        }
        let first = store.next_outgoing("d1", 0, 200).expect("next").expect("some");
        assert_eq!(first.id, ids[1]);
        let second = store.next_outgoing("d1", first.seq, 200).expect("next").expect("some");
        assert_eq!(second.id, ids[2]);
        assert!(store.next_outgoing("d2", 0, 200).expect("next").is_none(), "per peer");
        assert!(store.remove_outgoing("d1", ids[2]).expect("remove"));
        assert!(!store.remove_outgoing("d1", ids[2]).expect("remove twice"));
        let expired = store.expire(None, 1102).expect("expire");
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(store.outbox_len("d1").expect("len"), 1);

        let refuse = QueueLimits { max_items: 1, ttl_ms: 1000, policy: FullPolicy::Refuse };
        store.enqueue("dev", ItemId::random(), "mail", b"x", refuse, 0).expect("first");
        assert!(matches!(
            store.enqueue("dev", ItemId::random(), "mail", b"x", refuse, 0),
            Err(EndpointError::OutboxFull { max: 1 })
        ));
    }

    #[test]
    fn erase_leaves_no_trace_in_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.db");
        let store = Store::open(&path, "").expect("store");
        let marker = b"confidential-quarterly-figures";
        let item = Item::new(ItemType::Mail, None, marker.repeat(40)).encode().expect("encode");
        store.add_part("ves", ItemId::random(), 0, 1, &item, 1 << 20, 5).expect("received");
        store.enqueue("ves", ItemId::random(), "mail", &marker.repeat(40), LIMITS, 0).expect("outbox");
        store.meta_set("pinned", "confidential-quarterly-figures").expect("meta");

        store.erase().expect("erase");

        assert!(store.received(None, None).expect("received").is_empty());
        assert!(store.outbox(None).expect("outbox").is_empty());
        assert_eq!(store.meta_get("pinned").expect("meta"), None);
        for suffix in ["", "-wal"] {
            let file = dir.path().join(format!("device.db{suffix}"));
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(!bytes.windows(marker.len()).any(|w| w == marker), "{} still holds the data", file.display());
        }
    }

    #[test]
    fn parts_assemble_once_in_any_order() {
        let store = Store::in_memory("").expect("store");
        let item = Item::new(ItemType::Mail, None, vec![7u8; 1000]);
        let enc = item.encode().expect("encode");
        let n = part_count(enc.len(), 300);
        let id = ItemId::random();
        let order = [2, 0, 3, 1];
        for (k, i) in order.iter().enumerate() {
            let out = store.add_part("ves", id, *i, n, part_chunk(&enc, *i, 300), 1 << 20, 5).expect("part");
            if k + 1 < order.len() {
                assert!(matches!(out, PartOutcome::Incomplete));
                // A duplicate part changes nothing.
                assert!(matches!(
                    store.add_part("ves", id, *i, n, part_chunk(&enc, *i, 300), 1 << 20, 5).expect("dup"),
                    PartOutcome::Incomplete
                ));
            } else {
                let PartOutcome::Stored { item: got, .. } = out else { panic!("expected stored, got {out:?}") };
                assert_eq!(got, item);
            }
        }
        assert!(matches!(
            store.add_part("ves", id, 0, n, part_chunk(&enc, 0, 300), 1 << 20, 6).expect("again"),
            PartOutcome::Duplicate
        ));
        let inbox = store.received(Some("ves"), None).expect("inbox");
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].body, vec![7u8; 1000]);
    }

    fn receive(store: &Store, item: &Item) -> (ItemId, PartOutcome) {
        let id = ItemId::random();
        let out = store.add_part("ves", id, 0, 1, &item.encode().expect("encode"), 1 << 20, 5).expect("store");
        (id, out)
    }

    fn versioned(ty: ItemType, name: &str, created: i64, body: &str) -> Item {
        let mut item = Item::new(ty, Some(name.into()), body.as_bytes().to_vec());
        item.header.created_at_ms = created;
        item
    }

    fn current(store: &Store) -> Vec<String> {
        let all = store.received(Some("ves"), None).expect("received");
        all.iter()
            .filter(|r| r.state != STATE_REPLACED)
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }

    #[test]
    fn a_new_version_of_a_calendar_or_contact_item_replaces_the_old_one() {
        let store = Store::in_memory("").expect("store");
        let (v1, _) = receive(&store, &versioned(ItemType::Calendar, "meeting.ics", 100, "v1"));
        receive(&store, &versioned(ItemType::Contact, "meeting.ics", 100, "a contact of the same name"));
        receive(&store, &versioned(ItemType::Calendar, "other.ics", 100, "another object"));
        let (v2, out) = receive(&store, &versioned(ItemType::Calendar, "meeting.ics", 200, "v2"));
        let PartOutcome::Stored { replaced, current: true, .. } = out else { panic!("v2 is current: {out:?}") };
        assert_eq!(replaced, vec![v1]);
        assert_eq!(current(&store), ["a contact of the same name", "another object", "v2"]);

        // v1 again (a resend): still a duplicate, not a second copy.
        let enc = versioned(ItemType::Calendar, "meeting.ics", 100, "v1").encode().expect("encode");
        assert!(matches!(store.add_part("ves", v1, 0, 1, &enc, 1 << 20, 6).expect("dup"), PartOutcome::Duplicate));

        // An older version completing after a newer one does not win.
        let (_, out) = receive(&store, &versioned(ItemType::Calendar, "meeting.ics", 150, "v1.5"));
        assert!(matches!(out, PartOutcome::Stored { current: false, .. }), "{out:?}");
        assert_eq!(current(&store), ["a contact of the same name", "another object", "v2"]);
        let replaced = store.received(Some("ves"), Some(STATE_REPLACED)).expect("replaced");
        assert_eq!(replaced.len(), 2);
        assert!(replaced.iter().all(|r| r.body.is_empty()), "replaced versions keep no body");
        assert!(replaced.iter().any(|r| r.id == v1) && !replaced.iter().any(|r| r.id == v2));

        // Mail is never replaced by name.
        receive(&store, &versioned(ItemType::Mail, "1.M1", 100, "mail 1"));
        receive(&store, &versioned(ItemType::Mail, "1.M1", 200, "mail 2"));
        assert_eq!(current(&store).len(), 5);
    }

    #[test]
    fn a_queued_version_is_replaced_by_a_newer_one() {
        let store = Store::in_memory("").expect("store");
        let limits = QueueLimits { max_items: 10, ttl_ms: 1000, policy: FullPolicy::DropOldest };
        let enqueue = |ty: ItemType, name: &str, peer: &str| {
            let item = versioned(ty.clone(), name, 1, name);
            let id = ItemId::random();
            let q = store
                .enqueue_replacing(peer, id, ty.as_str(), name, &item.encode().expect("encode"), limits, 0)
                .expect("enqueue");
            (id, q)
        };
        let (old, _) = enqueue(ItemType::Calendar, "a.ics", "d1");
        let (other_device, _) = enqueue(ItemType::Calendar, "a.ics", "d2");
        let (contact, _) = enqueue(ItemType::Contact, "a.ics", "d1");
        let (b, _) = enqueue(ItemType::Calendar, "b.ics", "d1");
        let (new, q) = enqueue(ItemType::Calendar, "a.ics", "d1");
        assert_eq!(q.replaced, vec![old]);
        let ids = |peer| store.outbox(Some(peer)).expect("outbox").into_iter().map(|o| o.id).collect::<Vec<_>>();
        assert_eq!(ids("d1"), vec![contact, b, new]);
        assert_eq!(ids("d2"), vec![other_device], "other peers' queues are untouched");
    }

    #[test]
    fn oversized_or_inconsistent_parts_are_refused() {
        let store = Store::in_memory("").expect("store");
        let id = ItemId::random();
        assert!(store.add_part("p", id, 0, 2, &[0u8; 600], 1000, 0).is_ok());
        assert!(store.add_part("p", id, 1, 2, &[0u8; 600], 1000, 0).is_err(), "over max_item_bytes");
        assert!(store.add_part("p", id, 1, 3, &[0u8; 6], 1000, 0).is_err(), "different part count");
        assert!(store.add_part("p", ItemId::random(), 0, 1, b"\x00\x00\x00\x09{}", 1000, 0).is_err(), "bad item");
    }
}
