//! The agent's own tables, beside the endpoint store's outbox and inbox in the same SQLite
//! file: the users and devices it learned from the command channel (so that a restarted
//! agent knows where to push before the relay tells it again), which mails it has already
//! pushed (`seen`), which version of each calendar or contact file (`versions`), and the
//! devices' certificate enrollments (`ca_requests`, crate::enroll).

use noc_endpoint::Store;
use noc_protocol::rts::{ActiveUser, FilterRule};
use noc_protocol::{DeviceId, UserId};
use rusqlite::{OptionalExtension, params};

use crate::error::AgentError;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id    TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    active     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS users_email ON users (email);
CREATE TABLE IF NOT EXISTS devices (
    device_id     TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    name          TEXT,
    revoked       INTEGER NOT NULL DEFAULT 0,
    first_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    key     TEXT PRIMARY KEY,
    seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    key        TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_settings (
    user_id       TEXT PRIMARY KEY,
    constant_sync INTEGER NOT NULL DEFAULT 1,
    filter_rules  TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS user_calendar (
    user_id    TEXT PRIMARY KEY,
    time_zone  TEXT,
    days_ahead INTEGER
);
CREATE TABLE IF NOT EXISTS ca_requests (
    device_id  TEXT NOT NULL,
    request_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    profile    TEXT NOT NULL,
    state      TEXT NOT NULL,
    subject    TEXT NOT NULL,
    csr        TEXT,
    public_key BLOB,
    chain      TEXT,
    serial     TEXT,
    not_after  INTEGER,
    renewal_sent_ms INTEGER,
    message    TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, request_id)
);
CREATE INDEX IF NOT EXISTS ca_requests_state ON ca_requests (state);
";

/// How a user's calendar is read and pushed, as `ActivateUsers` last told it: the zone of
/// floating times, and how many days ahead entries go to the devices (`None`: a relay
/// that says nothing of it, no limit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CalendarPrefs {
    pub time_zone: Option<String>,
    pub days_ahead: Option<u32>,
}

pub fn calendar_prefs(store: &Store, id: UserId) -> Result<CalendarPrefs, AgentError> {
    let row = store.with_conn(|c| {
        c.query_row(
            "SELECT time_zone, days_ahead FROM user_calendar WHERE user_id = ?1",
            params![id.to_string()],
            |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?)),
        )
        .optional()
    })?;
    Ok(row
        .map(|(time_zone, days)| CalendarPrefs { time_zone, days_ahead: days.and_then(|d| u32::try_from(d).ok()) })
        .unwrap_or_default())
}

/// What the user set on the relay's portal, as the command channel told it: whether new
/// mail is pushed (ConstantSync) and which new mail makes an alert. Until told, mail is
/// pushed and nothing alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSettings {
    pub constant_sync: bool,
    pub filter_rules: Vec<FilterRule>,
}

impl Default for UserSettings {
    fn default() -> Self {
        Self { constant_sync: true, filter_rules: Vec::new() }
    }
}

pub fn settings(store: &Store, id: UserId) -> Result<UserSettings, AgentError> {
    let row = store.with_conn(|c| {
        c.query_row(
            "SELECT constant_sync, filter_rules FROM user_settings WHERE user_id = ?1",
            params![id.to_string()],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()
    })?;
    Ok(match row {
        Some((sync, rules)) => {
            UserSettings { constant_sync: sync != 0, filter_rules: serde_json::from_str(&rules).unwrap_or_default() }
        }
        None => UserSettings::default(),
    })
}

pub fn set_filter_rules(store: &Store, id: UserId, rules: &[FilterRule]) -> Result<(), AgentError> {
    let json = serde_json::to_string(rules).map_err(|e| AgentError::State(e.to_string()))?;
    store.with_conn(|c| {
        c.execute(
            "INSERT INTO user_settings (user_id, filter_rules) VALUES (?1, ?2)
             ON CONFLICT(user_id) DO UPDATE SET filter_rules = excluded.filter_rules",
            params![id.to_string(), json],
        )
    })?;
    Ok(())
}

/// Records the ConstantSync flag; returns the previous one.
pub fn set_constant_sync(store: &Store, id: UserId, enabled: bool) -> Result<bool, AgentError> {
    let before = settings(store, id)?.constant_sync;
    store.with_conn(|c| {
        c.execute(
            "INSERT INTO user_settings (user_id, constant_sync) VALUES (?1, ?2)
             ON CONFLICT(user_id) DO UPDATE SET constant_sync = excluded.constant_sync",
            params![id.to_string(), enabled],
        )
    })?;
    Ok(before)
}

/// A user as the agent knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub user_id: UserId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

impl User {
    /// `First Last <email>`, for `From` and welcome mail.
    pub fn mailbox(&self) -> String {
        let name = format!("{} {}", self.first_name, self.last_name);
        let name = name.trim();
        if name.is_empty() { self.email.clone() } else { format!("\"{}\" <{}>", name.replace('"', "'"), self.email) }
    }
}

fn parse_id<T: std::str::FromStr>(s: String) -> Option<T> {
    s.parse().ok()
}

/// Records active users. With `complete`, users not listed become inactive.
pub fn upsert_users(store: &Store, users: &[ActiveUser], complete: bool) -> Result<(), AgentError> {
    store.with_conn(|c| {
        let tx = c.transaction()?;
        if complete {
            tx.execute("UPDATE users SET active = 0", [])?;
        }
        for u in users {
            tx.execute(
                "INSERT INTO users (user_id, email, first_name, last_name, active) VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT(user_id) DO UPDATE SET email = excluded.email, first_name = excluded.first_name,
                 last_name = excluded.last_name, active = 1",
                params![u.user_id.to_string(), u.email.to_lowercase(), u.first_name, u.last_name],
            )?;
            tx.execute(
                "INSERT INTO user_calendar (user_id, time_zone, days_ahead) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user_id) DO UPDATE SET time_zone = excluded.time_zone, days_ahead = excluded.days_ahead",
                params![u.user_id.to_string(), u.time_zone, u.calendar_days_ahead],
            )?;
        }
        tx.commit()
    })?;
    Ok(())
}

pub fn deactivate_users(store: &Store, ids: &[UserId]) -> Result<(), AgentError> {
    store.with_conn(|c| {
        for id in ids {
            c.execute("UPDATE users SET active = 0 WHERE user_id = ?1", params![id.to_string()])?;
        }
        Ok(())
    })?;
    Ok(())
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_user((id, email, first_name, last_name): (String, String, String, String)) -> Option<User> {
    Some(User { user_id: parse_id(id)?, email, first_name, last_name })
}

/// The active user with this address (case-insensitive).
pub fn active_user_by_email(store: &Store, email: &str) -> Result<Option<User>, AgentError> {
    let row = store.with_conn(|c| {
        c.query_row(
            "SELECT user_id, email, first_name, last_name FROM users WHERE email = ?1 AND active = 1",
            params![email.to_lowercase()],
            user_row,
        )
        .optional()
    })?;
    Ok(row.and_then(to_user))
}

pub fn user(store: &Store, id: UserId) -> Result<Option<User>, AgentError> {
    let row = store.with_conn(|c| {
        c.query_row(
            "SELECT user_id, email, first_name, last_name FROM users WHERE user_id = ?1",
            params![id.to_string()],
            user_row,
        )
        .optional()
    })?;
    Ok(row.and_then(to_user))
}

/// The user with this id, if the relay lists it as active (browse access answers only
/// for those).
pub fn active_user(store: &Store, id: UserId) -> Result<Option<User>, AgentError> {
    let row = store.with_conn(|c| {
        c.query_row(
            "SELECT user_id, email, first_name, last_name FROM users WHERE user_id = ?1 AND active = 1",
            params![id.to_string()],
            user_row,
        )
        .optional()
    })?;
    Ok(row.and_then(to_user))
}

pub fn active_users(store: &Store) -> Result<Vec<User>, AgentError> {
    let rows = store.with_conn(|c| {
        let mut stmt =
            c.prepare("SELECT user_id, email, first_name, last_name FROM users WHERE active = 1 ORDER BY email")?;
        let rows = stmt.query_map([], user_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })?;
    Ok(rows.into_iter().filter_map(to_user).collect())
}

/// Records a device of a user (first seen now, unless known).
pub fn upsert_device(store: &Store, device: DeviceId, user: UserId, name: Option<&str>) -> Result<bool, AgentError> {
    let n = store.with_conn(|c| {
        c.execute(
            "INSERT INTO devices (device_id, user_id, name, revoked, first_seen_ms) VALUES (?1, ?2, ?3, 0, ?4)
             ON CONFLICT(device_id) DO UPDATE SET user_id = excluded.user_id,
             name = COALESCE(excluded.name, devices.name), revoked = 0",
            params![device.to_string(), user.to_string(), name, noc_protocol::clock::unix_ms_i64()],
        )
    })?;
    Ok(n > 0)
}

pub fn revoke_device(store: &Store, device: DeviceId) -> Result<(), AgentError> {
    store
        .with_conn(|c| c.execute("UPDATE devices SET revoked = 1 WHERE device_id = ?1", params![device.to_string()]))?;
    Ok(())
}

/// The user a device belongs to.
pub fn device_user(store: &Store, device: DeviceId) -> Result<Option<UserId>, AgentError> {
    let row: Option<String> = store.with_conn(|c| {
        c.query_row("SELECT user_id FROM devices WHERE device_id = ?1", params![device.to_string()], |r| r.get(0))
            .optional()
    })?;
    Ok(row.and_then(parse_id))
}

/// The devices of a user that were not revoked.
pub fn devices_of(store: &Store, user: UserId) -> Result<Vec<DeviceId>, AgentError> {
    let rows: Vec<String> = store.with_conn(|c| {
        let mut stmt =
            c.prepare("SELECT device_id FROM devices WHERE user_id = ?1 AND revoked = 0 ORDER BY first_seen_ms")?;
        let rows = stmt.query_map(params![user.to_string()], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })?;
    Ok(rows.into_iter().filter_map(parse_id).collect())
}

pub fn is_seen(store: &Store, key: &str) -> Result<bool, AgentError> {
    let n: i64 =
        store.with_conn(|c| c.query_row("SELECT COUNT(*) FROM seen WHERE key = ?1", params![key], |r| r.get(0)))?;
    Ok(n > 0)
}

pub fn mark_seen(store: &Store, key: &str) -> Result<(), AgentError> {
    store.with_conn(|c| {
        c.execute(
            "INSERT OR IGNORE INTO seen (key, seen_ms) VALUES (?1, ?2)",
            params![key, noc_protocol::clock::unix_ms_i64()],
        )
    })?;
    Ok(())
}

/// The version (content hash) of a calendar or contact object last pushed, with the
/// `CreatedAtMs` it was pushed with.
pub fn last_version(store: &Store, key: &str) -> Result<Option<(String, i64)>, AgentError> {
    Ok(store.with_conn(|c| {
        c.query_row("SELECT version, created_ms FROM versions WHERE key = ?1", params![key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
    })?)
}

/// Records `version` as the one last pushed for `key`.
pub fn set_version(store: &Store, key: &str, version: &str, created_ms: i64) -> Result<(), AgentError> {
    store.with_conn(|c| {
        c.execute(
            "INSERT INTO versions (key, version, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET version = excluded.version, created_ms = excluded.created_ms",
            params![key, version, created_ms],
        )
    })?;
    Ok(())
}
