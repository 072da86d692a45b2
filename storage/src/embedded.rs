//! The embedded backend: SQLite in the node's data directory.
//!
//! This is the zero-setup default (one node, no Postgres). SQLite is synchronous, so every
//! call runs on tokio's blocking pool and never on a session actor's thread. WAL mode lets
//! `noc admin` work on the same file while a node runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use noc_protocol::rts::FilterRule;
use noc_protocol::{DeviceId, LicenseId, UserId, VesId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::StoreError;
use crate::model::*;
use crate::store::{Result, Store};

/// Creates the database file readable by its owner only, and takes group and other access
/// away from it and its WAL and shared-memory files if they exist.
fn private_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE licenses (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    max_users     INTEGER NOT NULL,
    expires_at    INTEGER,
    suspended     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE TABLE license_tokens (
    token_hash BLOB PRIMARY KEY,
    license_id TEXT NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
CREATE TABLE ves (
    id            TEXT PRIMARY KEY,
    guid_hash     BLOB NOT NULL UNIQUE,
    license_id    TEXT NOT NULL REFERENCES licenses(id),
    registered_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    license_id      TEXT NOT NULL REFERENCES licenses(id),
    ves_id          TEXT NOT NULL REFERENCES ves(id),
    email           TEXT NOT NULL UNIQUE,
    msisdn          TEXT UNIQUE,
    password_hash   TEXT NOT NULL,
    first_name      TEXT NOT NULL,
    last_name       TEXT NOT NULL,
    time_zone       TEXT,
    status          TEXT NOT NULL,
    constant_sync   INTEGER NOT NULL DEFAULT 1,
    filter_rules    TEXT NOT NULL DEFAULT '[]',
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX users_license ON users(license_id);
CREATE INDEX users_ves ON users(ves_id);
CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_hash BLOB NOT NULL,
    name            TEXT,
    device_type     TEXT,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);
CREATE INDEX devices_user ON devices(user_id);
CREATE TABLE msisdn_approvals (
    msisdn      TEXT PRIMARY KEY,
    approved_by TEXT NOT NULL,
    approved_at INTEGER NOT NULL
);
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);
"#,
    r#"
-- Password attempts are throttled in memory (crate::throttle); no per-user lock is kept.
ALTER TABLE users DROP COLUMN failed_attempts;
ALTER TABLE users DROP COLUMN locked_until;
"#,
    r#"
CREATE TABLE web_sessions (
    token_hash   BLOB PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    persistent   INTEGER NOT NULL,
    client       TEXT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions(user_id);
CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
"#,
    r#"
ALTER TABLE users ADD COLUMN contact_email TEXT;
"#,
    r#"
CREATE TABLE recovery_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX recovery_tokens_user ON recovery_tokens(user_id, created_at);
"#,
    r#"
-- Remote wipe: requested from the portal, done when the device acknowledges it.
ALTER TABLE devices ADD COLUMN wipe_requested_at INTEGER;
ALTER TABLE devices ADD COLUMN wiped_at INTEGER;
"#,
    r#"
-- Secret-question password recovery: per license, off by default; the answer hashed.
ALTER TABLE licenses ADD COLUMN secret_question_recovery INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN secret_question TEXT;
ALTER TABLE users ADD COLUMN secret_answer_hash TEXT;
"#,
    r#"
ALTER TABLE users ADD COLUMN locale TEXT;
ALTER TABLE users ADD COLUMN alerts_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE devices ADD COLUMN last_seen_at INTEGER;
"#,
    r#"
CREATE TABLE operators (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    totp_secret    BLOB NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    created_by     TEXT NOT NULL
);
CREATE TABLE operator_recovery_codes (
    code_hash   BLOB PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    used_at     INTEGER
);
"#,
    r#"
-- Operator tokens: console sign-ins (cookie) and admin API bearer tokens, by hash.
CREATE TABLE operator_tokens (
    token_hash   BLOB PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    operator_id  TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    label        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX operator_tokens_operator ON operator_tokens(operator_id);
-- The licenses in a CSR's care (created by them or given to them).
CREATE TABLE license_operators (
    license_id  TEXT NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    PRIMARY KEY (license_id, operator_id)
);
CREATE INDEX license_operators_operator ON license_operators(operator_id);
-- Who acted in which role from where, and what changed (JSON list of field changes).
ALTER TABLE audit_log ADD COLUMN role TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN changes TEXT NOT NULL DEFAULT '[]';
CREATE INDEX audit_log_at ON audit_log(at);
"#,
    r#"
-- Usage per day and license (white paper §8.3), added to by every node's flush.
CREATE TABLE usage_daily (
    day               INTEGER NOT NULL,
    license_id        TEXT NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    frames_to_ves     INTEGER NOT NULL DEFAULT 0,
    bytes_to_ves      INTEGER NOT NULL DEFAULT 0,
    frames_to_devices INTEGER NOT NULL DEFAULT 0,
    bytes_to_devices  INTEGER NOT NULL DEFAULT 0,
    undeliverable     INTEGER NOT NULL DEFAULT 0,
    device_seconds    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, license_id)
);
-- The devices connected on a day (their number and their users' are the active counts).
CREATE TABLE usage_daily_devices (
    day        INTEGER NOT NULL,
    license_id TEXT NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    PRIMARY KEY (day, license_id, device_id)
);
"#,
    r#"
-- What each VES installation runs, as it said when it last connected.
ALTER TABLE ves ADD COLUMN agent TEXT;
"#,
    r#"
-- Feature flags (bits of model::Feature; 31 = all) per license and, as a CSR's grant, per
-- user; the license administrator's address.
ALTER TABLE licenses ADD COLUMN features INTEGER NOT NULL DEFAULT 31;
ALTER TABLE licenses ADD COLUMN admin_email TEXT;
ALTER TABLE users ADD COLUMN access INTEGER NOT NULL DEFAULT 31;
"#,
    r#"
-- Where a user's new-mail alerts go (JSON of model::AlertDelivery).
ALTER TABLE users ADD COLUMN alert_delivery TEXT NOT NULL DEFAULT '{}';
"#,
    r#"
-- Days ahead of today whose calendar entries are pushed to the user's devices.
ALTER TABLE users ADD COLUMN calendar_days_ahead INTEGER NOT NULL DEFAULT 30;
"#,
    r#"
-- Alerts delivered per user and clock hour, for the cluster-wide hourly limit.
CREATE TABLE alert_counts (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hour    INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (user_id, hour)
);
"#,
    r#"
-- The client certificate the device CA last issued to each device.
ALTER TABLE devices ADD COLUMN certificate_serial TEXT;
ALTER TABLE devices ADD COLUMN certificate_not_after INTEGER;
"#,
    r#"
-- Licenses whose devices must authenticate with a client certificate.
ALTER TABLE licenses ADD COLUMN require_client_certificates INTEGER NOT NULL DEFAULT 0;
"#,
];

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and applies pending migrations.
    /// Opens (or creates) the database at `path`. The file holds password and token
    /// hashes, e-mail addresses, MSISDNs and the audit log: it is created 0600 whatever
    /// the umask (SQLite gives its `-wal` and `-shm` files the database file's mode), and
    /// an existing one is made 0600 again.
    pub fn open(path: &Path) -> Result<Self> {
        private_files(path).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Backend("connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

const WEB_SESSION_COLS: &str = "id, user_id, created_at, last_seen_at, expires_at, persistent, client";

fn web_session_row(r: &Row<'_>) -> rusqlite::Result<WebSession> {
    Ok(WebSession {
        id: r.get(0)?,
        user_id: parse_id::<UserId>(r.get(1)?)?,
        created_at: r.get(2)?,
        last_seen_at: r.get(3)?,
        expires_at: r.get(4)?,
        persistent: r.get(5)?,
        client: r.get(6)?,
    })
}

fn parse_id<T: std::str::FromStr>(s: String) -> rusqlite::Result<T> {
    s.parse::<T>().map_err(|_| rusqlite::Error::InvalidColumnType(0, "uuid".into(), rusqlite::types::Type::Text))
}

const LICENSE_COLS: &str = "l.id, l.name, l.max_users, l.expires_at, l.suspended, l.created_at, \
     (SELECT COUNT(*) FROM users u WHERE u.license_id = l.id), l.secret_question_recovery, l.features, l.admin_email, \
     l.require_client_certificates";

fn license_row(r: &Row<'_>) -> rusqlite::Result<License> {
    Ok(License {
        id: parse_id::<LicenseId>(r.get(0)?)?,
        name: r.get(1)?,
        max_users: r.get(2)?,
        expires_at: r.get(3)?,
        suspended: r.get::<_, i64>(4)? != 0,
        created_at: r.get(5)?,
        used_users: r.get(6)?,
        secret_question_recovery: r.get::<_, i64>(7)? != 0,
        features: Features::from_bits(r.get(8)?),
        admin_email: r.get(9)?,
        require_client_certificates: r.get::<_, i64>(10)? != 0,
    })
}

const USER_COLS: &str = "id, license_id, ves_id, email, msisdn, password_hash, first_name, last_name, \
     time_zone, status, constant_sync, filter_rules, created_at, updated_at, contact_email, locale, \
     alerts_enabled, access, (SELECT l.features FROM licenses l WHERE l.id = users.license_id), alert_delivery, \
     calendar_days_ahead";

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    let status: String = r.get(9)?;
    let rules: String = r.get(11)?;
    Ok(UserRecord {
        id: parse_id::<UserId>(r.get(0)?)?,
        license_id: parse_id::<LicenseId>(r.get(1)?)?,
        ves_id: parse_id::<VesId>(r.get(2)?)?,
        email: r.get(3)?,
        msisdn: r.get(4)?,
        password_hash: r.get(5)?,
        first_name: r.get(6)?,
        last_name: r.get(7)?,
        time_zone: r.get(8)?,
        status: UserStatus::parse(&status).unwrap_or(UserStatus::Suspended),
        constant_sync: r.get::<_, i64>(10)? != 0,
        filter_rules: serde_json::from_str::<Vec<FilterRule>>(&rules).unwrap_or_default(),
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        contact_email: r.get(14)?,
        locale: r.get(15)?,
        alerts_enabled: r.get::<_, i64>(16)? != 0,
        access: Features::from_bits(r.get(17)?),
        // No license row (it cannot happen: users reference theirs) allows nothing.
        license_features: Features::from_bits(r.get::<_, Option<i64>>(18)?.unwrap_or(0)),
        alert_delivery: serde_json::from_str(&r.get::<_, String>(19)?).unwrap_or_default(),
        calendar_days_ahead: r.get(20)?,
    })
}

const DEVICE_COLS: &str = "id, user_id, credential_hash, name, device_type, created_at, revoked_at, wipe_requested_at, wiped_at, \
     last_seen_at, certificate_serial, certificate_not_after";

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: parse_id::<DeviceId>(r.get(0)?)?,
        user_id: parse_id::<UserId>(r.get(1)?)?,
        credential_hash: r.get(2)?,
        name: r.get(3)?,
        device_type: r.get(4)?,
        created_at: r.get(5)?,
        revoked_at: r.get(6)?,
        wipe_requested_at: r.get(7)?,
        wiped_at: r.get(8)?,
        last_seen_at: r.get(9)?,
        certificate_serial: r.get(10)?,
        certificate_not_after: r.get(11)?,
    })
}

fn ves_row(r: &Row<'_>) -> rusqlite::Result<VesRecord> {
    Ok(VesRecord {
        id: parse_id::<VesId>(r.get(0)?)?,
        license_id: parse_id::<LicenseId>(r.get(1)?)?,
        registered_at: r.get(2)?,
        last_seen_at: r.get(3)?,
    })
}

fn get_user(conn: &Connection, id: UserId) -> Result<Option<UserRecord>> {
    Ok(conn
        .query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id.to_string()], user_row)
        .optional()?)
}

fn get_license(conn: &Connection, id: LicenseId) -> Result<Option<License>> {
    Ok(conn
        .query_row(&format!("SELECT {LICENSE_COLS} FROM licenses l WHERE l.id = ?1"), [id.to_string()], license_row)
        .optional()?)
}

const OPERATOR_COLS: &str =
    "id, name, role, password_hash, totp_secret, totp_last_step, disabled, created_at, created_by";

fn operator_row(r: &Row<'_>) -> rusqlite::Result<OperatorRecord> {
    let role: String = r.get(2)?;
    Ok(OperatorRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        // An unknown role (a newer schema's) grants nothing: read as the narrowest one.
        role: OperatorRole::parse(&role).unwrap_or(OperatorRole::Auditor),
        password_hash: r.get(3)?,
        totp_secret: r.get(4)?,
        totp_last_step: r.get(5)?,
        disabled: r.get::<_, i64>(6)? != 0,
        created_at: r.get(7)?,
        created_by: r.get(8)?,
    })
}

const TOKEN_COLS: &str = "id, operator_id, kind, scope, label, created_at, last_used_at, expires_at";

fn token_row(r: &Row<'_>) -> rusqlite::Result<OperatorToken> {
    let (kind, scope): (String, String) = (r.get(2)?, r.get(3)?);
    Ok(OperatorToken {
        id: r.get(0)?,
        operator_id: r.get(1)?,
        // Unknown words (a newer schema's) read as the weakest: a console session that
        // only looks.
        kind: TokenKind::parse(&kind).unwrap_or(TokenKind::Console),
        scope: TokenScope::parse(&scope).unwrap_or(TokenScope::Read),
        label: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        expires_at: r.get(7)?,
    })
}

const AUDIT_COLS: &str = "id, at, actor, role, source, action, subject, detail, changes";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        role: r.get(3)?,
        source: r.get(4)?,
        action: r.get(5)?,
        subject: r.get(6)?,
        detail: r.get(7)?,
        changes: crate::model::parse_changes(&r.get::<_, String>(8)?),
    })
}

/// A device that may still open sessions: neither revoked nor waiting for its wipe.
const LIVE_DEVICE: &str = "revoked_at IS NULL AND wipe_requested_at IS NULL";

fn live_devices_of(conn: &Connection, user: UserId) -> Result<Vec<DeviceId>> {
    let mut stmt = conn.prepare(&format!("SELECT id FROM devices WHERE user_id = ?1 AND {LIVE_DEVICE}"))?;
    let ids = stmt
        .query_map([user.to_string()], |r| parse_id::<DeviceId>(r.get(0)?))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn insert_license(&self, new: NewLicense) -> Result<License> {
        self.run(move |c| {
            let id = LicenseId::random();
            c.execute(
                "INSERT INTO licenses (id, name, password_hash, max_users, expires_at, suspended, created_at, \
                 features, admin_email) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8)",
                params![
                    id.to_string(),
                    new.name,
                    new.password_hash,
                    new.max_users,
                    new.expires_at,
                    noc_protocol::clock::unix_ms_i64(),
                    new.features.bits(),
                    new.admin_email,
                ],
            )?;
            get_license(c, id)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn licenses(&self) -> Result<Vec<License>> {
        self.run(|c| {
            let mut stmt = c.prepare(&format!("SELECT {LICENSE_COLS} FROM licenses l ORDER BY l.name"))?;
            let rows = stmt.query_map([], license_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn license_by_name(&self, name: &str) -> Result<Option<(License, String)>> {
        let name = name.to_string();
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {LICENSE_COLS}, l.password_hash FROM licenses l WHERE l.name = ?1"),
                [name],
                |r| Ok((license_row(r)?, r.get::<_, String>(11)?)),
            )
            .optional()?)
        })
        .await
    }

    async fn license_by_id(&self, id: LicenseId) -> Result<Option<License>> {
        self.run(move |c| get_license(c, id)).await
    }

    async fn set_license_suspended(&self, name: &str, suspended: bool) -> Result<License> {
        let name = name.to_string();
        self.run(move |c| {
            let n = c.execute("UPDATE licenses SET suspended = ?1 WHERE name = ?2", params![suspended as i64, name])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let id: String = c.query_row("SELECT id FROM licenses WHERE name = ?1", [name], |r| r.get(0))?;
            get_license(c, parse_id(id)?)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn set_license_secret_question_recovery(&self, name: &str, enabled: bool) -> Result<License> {
        let name = name.to_string();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE licenses SET secret_question_recovery = ?1 WHERE name = ?2",
                params![enabled as i64, name],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let id: String = c.query_row("SELECT id FROM licenses WHERE name = ?1", [name], |r| r.get(0))?;
            get_license(c, parse_id(id)?)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn insert_license_token(
        &self,
        token_hash: &[u8],
        license: LicenseId,
        now: i64,
        expired_before: i64,
    ) -> Result<()> {
        let hash = token_hash.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM license_tokens WHERE license_id = ?1 AND created_at < ?2",
                params![license.to_string(), expired_before],
            )?;
            tx.execute(
                "INSERT INTO license_tokens (token_hash, license_id, created_at) VALUES (?1, ?2, ?3)",
                params![hash, license.to_string(), now],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn license_by_token(&self, token_hash: &[u8], issued_after: i64) -> Result<Option<License>> {
        let hash = token_hash.to_vec();
        self.run(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {LICENSE_COLS} FROM licenses l JOIN license_tokens t ON t.license_id = l.id \
                     WHERE t.token_hash = ?1 AND t.created_at >= ?2"
                ),
                params![hash, issued_after],
                license_row,
            )
            .optional()?)
        })
        .await
    }

    async fn set_license_password(&self, name: &str, password_hash: &str) -> Result<(License, u64)> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.run(move |c| {
            let tx = c.transaction()?;
            let id: Option<String> = tx
                .query_row(
                    "UPDATE licenses SET password_hash = ?1 WHERE name = ?2 RETURNING id",
                    params![hash, name],
                    |r| r.get(0),
                )
                .optional()?;
            let id: LicenseId = parse_id(id.ok_or(StoreError::NotFound)?)?;
            let revoked = tx.execute("DELETE FROM license_tokens WHERE license_id = ?1", [id.to_string()])?;
            let license = get_license(&tx, id)?.ok_or(StoreError::NotFound)?;
            tx.commit()?;
            Ok((license, revoked as u64))
        })
        .await
    }

    async fn insert_ves(&self, guid_hash: &[u8], license: LicenseId, now: i64) -> Result<VesRecord> {
        let hash = guid_hash.to_vec();
        self.run(move |c| {
            let id = VesId::random();
            c.execute(
                "INSERT INTO ves (id, guid_hash, license_id, registered_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![id.to_string(), hash, license.to_string(), now],
            )?;
            Ok(VesRecord { id, license_id: license, registered_at: now, last_seen_at: now })
        })
        .await
    }

    async fn touch_ves_by_guid(&self, guid_hash: &[u8], now: i64) -> Result<Option<VesRecord>> {
        let hash = guid_hash.to_vec();
        self.run(move |c| {
            c.execute("UPDATE ves SET last_seen_at = ?1 WHERE guid_hash = ?2", params![now, hash])?;
            Ok(c.query_row(
                "SELECT id, license_id, registered_at, last_seen_at FROM ves WHERE guid_hash = ?1",
                [hash],
                ves_row,
            )
            .optional()?)
        })
        .await
    }

    async fn set_ves_agent(&self, ves: VesId, agent: &str) -> Result<()> {
        let agent = agent.to_string();
        self.run(move |c| {
            c.execute("UPDATE ves SET agent = ?1 WHERE id = ?2", params![agent, ves.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn ves_of_license(&self, license: LicenseId) -> Result<Vec<VesInstallation>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, registered_at, last_seen_at, agent FROM ves WHERE license_id = ?1 \
                 ORDER BY last_seen_at DESC, id",
            )?;
            let rows = stmt
                .query_map([license.to_string()], |r| {
                    Ok(VesInstallation {
                        id: parse_id::<VesId>(r.get(0)?)?,
                        registered_at: r.get(1)?,
                        last_seen_at: r.get(2)?,
                        agent: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn ves_of_unusable_licenses(&self, now: i64) -> Result<Vec<VesId>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT v.id FROM ves v JOIN licenses l ON l.id = v.license_id \
                 WHERE l.suspended != 0 OR (l.expires_at IS NOT NULL AND l.expires_at <= ?1)",
            )?;
            let ids = stmt.query_map([now], |r| parse_id::<VesId>(r.get(0)?))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await
    }

    async fn ves_of_usable_licenses(&self, now: i64) -> Result<Vec<(LicenseId, VesId)>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT l.id, v.id FROM ves v JOIN licenses l ON l.id = v.license_id \
                 WHERE l.suspended = 0 AND (l.expires_at IS NULL OR l.expires_at > ?1)",
            )?;
            let ids = stmt
                .query_map([now], |r| Ok((parse_id::<LicenseId>(r.get(0)?)?, parse_id::<VesId>(r.get(1)?)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await
    }

    async fn ves_of_licenses_without(&self, feature: Feature) -> Result<Vec<VesId>> {
        let bit = Features::NONE.with(feature, true).bits();
        self.run(move |c| {
            let mut stmt =
                c.prepare("SELECT v.id FROM ves v JOIN licenses l ON l.id = v.license_id WHERE l.features & ?1 = 0")?;
            let ids = stmt.query_map([bit], |r| parse_id::<VesId>(r.get(0)?))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await
    }

    async fn insert_user(&self, new: NewUser, now: i64) -> Result<UserRecord> {
        self.run(move |c| {
            // IMMEDIATE takes the write lock first, so two VES racing for the last seat
            // cannot both see it free.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let (max, used): (u32, u32) = tx
                .query_row(
                    "SELECT l.max_users, (SELECT COUNT(*) FROM users u WHERE u.license_id = l.id) \
                     FROM licenses l WHERE l.id = ?1",
                    [new.license_id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if used >= max {
                return Err(StoreError::SeatsFull { max });
            }
            let id = UserId::random();
            tx.execute(
                "INSERT INTO users (id, license_id, ves_id, email, password_hash, first_name, last_name, status, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'provisioned', ?8, ?8)",
                params![
                    id.to_string(),
                    new.license_id.to_string(),
                    new.ves_id.to_string(),
                    new.email,
                    new.password_hash,
                    new.first_name,
                    new.last_name,
                    now
                ],
            )?;
            let user = get_user(&tx, id)?.ok_or(StoreError::NotFound)?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        self.run(move |c| get_user(c, id)).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let email = email.to_string();
        self.run(move |c| {
            Ok(c.query_row(&format!("SELECT {USER_COLS} FROM users WHERE email = ?1"), [email], user_row).optional()?)
        })
        .await
    }

    async fn user_by_msisdn(&self, msisdn: &str) -> Result<Option<UserRecord>> {
        let msisdn = msisdn.to_string();
        self.run(move |c| {
            Ok(c.query_row(&format!("SELECT {USER_COLS} FROM users WHERE msisdn = ?1"), [msisdn], user_row)
                .optional()?)
        })
        .await
    }

    async fn users_by_ves(&self, ves: VesId) -> Result<Vec<UserRecord>> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!("SELECT {USER_COLS} FROM users WHERE ves_id = ?1 ORDER BY email"))?;
            let rows = stmt.query_map([ves.to_string()], user_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_user(&self, id: UserId) -> Result<Vec<DeviceId>> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let devices = live_devices_of(&tx, id)?;
            tx.execute("DELETE FROM devices WHERE user_id = ?1", [id.to_string()])?;
            let n = tx.execute("DELETE FROM users WHERE id = ?1", [id.to_string()])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            tx.commit()?;
            Ok(devices)
        })
        .await
    }

    async fn set_password(
        &self,
        id: UserId,
        password_hash: &str,
        now: i64,
        revoke_devices: bool,
    ) -> Result<Vec<DeviceId>> {
        let hash = password_hash.to_string();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE users SET password_hash = ?1, updated_at = ?2 \
                 WHERE id = ?3",
                params![hash, now, id.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            if !revoke_devices {
                tx.commit()?;
                return Ok(Vec::new());
            }
            let devices = live_devices_of(&tx, id)?;
            tx.execute(
                &format!("UPDATE devices SET revoked_at = ?1 WHERE user_id = ?2 AND {LIVE_DEVICE}"),
                params![now, id.to_string()],
            )?;
            tx.commit()?;
            Ok(devices)
        })
        .await
    }

    async fn update_user_settings(&self, id: UserId, settings: &UserSettings, now: i64) -> Result<UserRecord> {
        let s = settings.clone();
        let rules = serde_json::to_string(&s.filter_rules).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.run(move |c| {
            let n = c.execute(
                "UPDATE users SET first_name = ?1, last_name = ?2, time_zone = ?3, constant_sync = ?4, \
                 filter_rules = ?5, updated_at = ?6, contact_email = ?8, locale = ?9, \
                 alerts_enabled = ?10, calendar_days_ahead = ?11 WHERE id = ?7",
                params![
                    s.first_name,
                    s.last_name,
                    s.time_zone,
                    s.constant_sync,
                    rules,
                    now,
                    id.to_string(),
                    s.contact_email,
                    s.locale,
                    s.alerts_enabled,
                    s.calendar_days_ahead
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
            Ok(c.query_row(&sql, [id.to_string()], user_row)?)
        })
        .await
    }

    async fn set_user_msisdn(&self, id: UserId, msisdn: &str, now: i64) -> Result<UserRecord> {
        let msisdn = msisdn.to_string();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE users SET msisdn = ?1, updated_at = ?2 WHERE id = ?3",
                params![msisdn, now, id.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(c.query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id.to_string()], user_row)?)
        })
        .await
    }

    async fn activate_user(&self, id: UserId, msisdn: &str, time_zone: &str, now: i64) -> Result<UserRecord> {
        let (msisdn, tz) = (msisdn.to_string(), time_zone.to_string());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE users SET msisdn = ?1, time_zone = ?2, status = CASE status WHEN 'suspended' THEN status \
                 ELSE 'active' END, updated_at = ?3 WHERE id = ?4",
                params![msisdn, tz, now, id.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            get_user(c, id)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn insert_device(&self, new: NewDevice, now: i64) -> Result<DeviceRecord> {
        self.run(move |c| {
            let id = DeviceId::random();
            c.execute(
                "INSERT INTO devices (id, user_id, credential_hash, name, device_type, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id.to_string(), new.user_id.to_string(), new.credential_hash, new.name, new.device_type, now],
            )?;
            Ok(DeviceRecord {
                id,
                user_id: new.user_id,
                credential_hash: new.credential_hash,
                name: new.name,
                device_type: new.device_type,
                created_at: now,
                revoked_at: None,
                wipe_requested_at: None,
                wiped_at: None,
                last_seen_at: None,
                certificate_serial: None,
                certificate_not_after: None,
            })
        })
        .await
    }

    async fn set_device_certificate(&self, id: DeviceId, serial: &str, not_after: i64) -> Result<()> {
        let serial = serial.to_string();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE devices SET certificate_serial = ?1, certificate_not_after = ?2 WHERE id = ?3",
                params![serial, not_after, id.to_string()],
            )?;
            if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    async fn device_by_id(&self, id: DeviceId) -> Result<Option<DeviceRecord>> {
        self.run(move |c| {
            Ok(c.query_row(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"), [id.to_string()], device_row)
                .optional()?)
        })
        .await
    }

    async fn device_login(&self, id: DeviceId) -> Result<Option<DeviceLogin>> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.id, d.user_id, u.ves_id, u.license_id, d.credential_hash, d.revoked_at, \
                 u.status, l.suspended, l.expires_at, d.wipe_requested_at, u.access, l.features, \
                 d.certificate_serial, l.require_client_certificates \
                 FROM devices d JOIN users u ON u.id = d.user_id JOIN licenses l ON l.id = u.license_id \
                 WHERE d.id = ?1",
            )?;
            Ok(stmt
                .query_row([id.to_string()], |r| {
                    let status: String = r.get(6)?;
                    Ok(DeviceLogin {
                        device_id: parse_id::<DeviceId>(r.get(0)?)?,
                        user_id: parse_id::<UserId>(r.get(1)?)?,
                        ves_id: parse_id::<VesId>(r.get(2)?)?,
                        license_id: parse_id::<LicenseId>(r.get(3)?)?,
                        credential_hash: r.get(4)?,
                        revoked_at: r.get(5)?,
                        user_status: UserStatus::parse(&status).unwrap_or(UserStatus::Suspended),
                        license_suspended: r.get::<_, i64>(7)? != 0,
                        license_expires_at: r.get(8)?,
                        wipe_requested_at: r.get(9)?,
                        user_access: Features::from_bits(r.get(10)?),
                        license_features: Features::from_bits(r.get(11)?),
                        certificate_serial: r.get(12)?,
                        license_requires_certificate: r.get::<_, i64>(13)? != 0,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn devices_by_ves(&self, ves: VesId) -> Result<Vec<(DeviceId, UserId)>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT d.id, d.user_id FROM devices d JOIN users u ON u.id = d.user_id \
                 WHERE u.ves_id = ?1 AND d.revoked_at IS NULL AND d.wipe_requested_at IS NULL",
            )?;
            let rows = stmt
                .query_map([ves.to_string()], |r| {
                    Ok((parse_id::<DeviceId>(r.get(0)?)?, parse_id::<UserId>(r.get(1)?)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn device_records_by_ves(&self, ves: VesId) -> Result<Vec<DeviceRecord>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT d.id, d.user_id, d.credential_hash, d.name, d.device_type, d.created_at, d.revoked_at, \
                 d.wipe_requested_at, d.wiped_at, d.last_seen_at, d.certificate_serial, d.certificate_not_after \
                 FROM devices d JOIN users u ON u.id = d.user_id \
                 WHERE u.ves_id = ?1 AND d.revoked_at IS NULL AND d.wipe_requested_at IS NULL \
                 ORDER BY d.created_at, d.id",
            )?;
            let rows = stmt.query_map([ves.to_string()], device_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn insert_recovery_token(&self, token_hash: &[u8], user: UserId, now: i64, expires_at: i64) -> Result<()> {
        let hash = token_hash.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM recovery_tokens WHERE expires_at <= ?1", [now])?;
            tx.execute(
                "INSERT INTO recovery_tokens (token_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash, user.to_string(), now, expires_at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_recovery_token(&self, token_hash: &[u8], now: i64) -> Result<Option<UserId>> {
        let hash = token_hash.to_vec();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let found: Option<(String, i64)> = tx
                .query_row("SELECT user_id, expires_at FROM recovery_tokens WHERE token_hash = ?1", [&hash], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            tx.execute("DELETE FROM recovery_tokens WHERE token_hash = ?1", [&hash])?;
            tx.commit()?;
            Ok(match found {
                Some((user, expires_at)) if now < expires_at => Some(parse_id::<UserId>(user)?),
                _ => None,
            })
        })
        .await
    }

    async fn recovery_tokens_since(&self, user: UserId, since: i64) -> Result<u32> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM recovery_tokens WHERE user_id = ?1 AND created_at >= ?2",
                params![user.to_string(), since],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn secret_question(&self, user: UserId) -> Result<Option<SecretQuestion>> {
        self.run(move |c| {
            let row: Option<(Option<String>, Option<String>)> = c
                .query_row(
                    "SELECT secret_question, secret_answer_hash FROM users WHERE id = ?1",
                    [user.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(match row {
                Some((Some(question), Some(answer_hash))) => Some(SecretQuestion { question, answer_hash }),
                _ => None,
            })
        })
        .await
    }

    async fn set_secret_question(&self, user: UserId, question: Option<&SecretQuestion>, now: i64) -> Result<()> {
        let (q, h) = question.map(|q| (q.question.clone(), q.answer_hash.clone())).unzip();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE users SET secret_question = ?1, secret_answer_hash = ?2, updated_at = ?3 WHERE id = ?4",
                params![q, h, now, user.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn devices_of_user(&self, user: UserId) -> Result<Vec<DeviceRecord>> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE user_id = ?1 AND (revoked_at IS NULL OR wiped_at IS NOT NULL) \
                 ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([user.to_string()], device_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn rename_device(&self, user: UserId, device: DeviceId, name: &str) -> Result<DeviceRecord> {
        let name = name.to_string();
        self.run(move |c| {
            let n = c.execute(
                &format!("UPDATE devices SET name = ?1 WHERE id = ?2 AND user_id = ?3 AND {LIVE_DEVICE}"),
                params![name, device.to_string(), user.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(c.query_row(
                &format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"),
                [device.to_string()],
                device_row,
            )?)
        })
        .await
    }

    async fn revoke_device(&self, user: UserId, device: DeviceId, now: i64) -> Result<()> {
        self.run(move |c| {
            let n = c.execute(
                &format!("UPDATE devices SET revoked_at = ?1 WHERE id = ?2 AND user_id = ?3 AND {LIVE_DEVICE}"),
                params![now, device.to_string(), user.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn request_device_wipe(&self, user: UserId, device: DeviceId, now: i64) -> Result<()> {
        self.run(move |c| {
            let n = c.execute(
                &format!("UPDATE devices SET wipe_requested_at = ?1 WHERE id = ?2 AND user_id = ?3 AND {LIVE_DEVICE}"),
                params![now, device.to_string(), user.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn record_devices_seen(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        let seen = seen.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE devices SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?2) WHERE id = ?1",
                )?;
                for (id, at) in &seen {
                    stmt.execute(params![id.to_string(), at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn complete_device_wipe(&self, device: DeviceId, now: i64) -> Result<bool> {
        self.run(move |c| {
            let n = c.execute(
                "UPDATE devices SET wiped_at = ?1, revoked_at = ?1 \
                 WHERE id = ?2 AND wipe_requested_at IS NOT NULL AND wiped_at IS NULL",
                params![now, device.to_string()],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn approve_msisdn(&self, msisdn: &str, approved_by: &str, now: i64) -> Result<()> {
        let (msisdn, by) = (msisdn.to_string(), approved_by.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO msisdn_approvals (msisdn, approved_by, approved_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(msisdn) DO UPDATE SET approved_by = excluded.approved_by, approved_at = excluded.approved_at",
                params![msisdn, by, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn approve_msisdns(&self, msisdns: &[String], approved_by: &str, now: i64) -> Result<u64> {
        let (msisdns, by) = (msisdns.to_vec(), approved_by.to_string());
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut added = 0;
            {
                let mut insert = tx.prepare(
                    "INSERT OR IGNORE INTO msisdn_approvals (msisdn, approved_by, approved_at) VALUES (?1, ?2, ?3)",
                )?;
                for m in &msisdns {
                    added += insert.execute(params![m, by, now])? as u64;
                }
            }
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    async fn revoke_msisdn(&self, msisdn: &str) -> Result<bool> {
        let msisdn = msisdn.to_string();
        self.run(move |c| Ok(c.execute("DELETE FROM msisdn_approvals WHERE msisdn = ?1", [msisdn])? > 0)).await
    }

    async fn msisdn_approvals(
        &self,
        search: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<MsisdnApprovalRecord>> {
        let search = search.map(str::to_string);
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT msisdn, approved_by, approved_at FROM msisdn_approvals \
                 WHERE (?1 IS NULL OR instr(msisdn, ?1) > 0) ORDER BY msisdn LIMIT ?2 OFFSET ?3",
            )?;
            let rows = stmt
                .query_map(params![search, limit, offset], |r| {
                    Ok(MsisdnApprovalRecord { msisdn: r.get(0)?, approved_by: r.get(1)?, approved_at: r.get(2)? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn msisdn_approved(&self, msisdn: &str) -> Result<bool> {
        let msisdn = msisdn.to_string();
        self.run(move |c| {
            Ok(c.query_row("SELECT 1 FROM msisdn_approvals WHERE msisdn = ?1", [msisdn], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn insert_operator(&self, operator: &OperatorRecord, recovery_code_hashes: &[Vec<u8>]) -> Result<()> {
        let (o, codes) = (operator.clone(), recovery_code_hashes.to_vec());
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                &format!("INSERT INTO operators ({OPERATOR_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    o.id,
                    o.name,
                    o.role.as_str(),
                    o.password_hash,
                    o.totp_secret,
                    o.totp_last_step,
                    o.disabled as i64,
                    o.created_at,
                    o.created_by
                ],
            )?;
            for hash in codes {
                tx.execute(
                    "INSERT INTO operator_recovery_codes (code_hash, operator_id) VALUES (?1, ?2)",
                    params![hash, o.id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn operator_by_name(&self, name: &str) -> Result<Option<OperatorRecord>> {
        let name = name.to_string();
        self.run(move |c| {
            Ok(c.query_row(&format!("SELECT {OPERATOR_COLS} FROM operators WHERE name = ?1"), [name], operator_row)
                .optional()?)
        })
        .await
    }

    async fn operators(&self) -> Result<Vec<OperatorRecord>> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!("SELECT {OPERATOR_COLS} FROM operators ORDER BY name"))?;
            let rows = stmt.query_map([], operator_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn use_totp_step(&self, operator_id: &str, step: i64) -> Result<bool> {
        let id = operator_id.to_string();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE operators SET totp_last_step = ?1 WHERE id = ?2 AND totp_last_step < ?1",
                params![step, id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn use_recovery_code(&self, operator_id: &str, code_hash: &[u8], now: i64) -> Result<bool> {
        let (id, hash) = (operator_id.to_string(), code_hash.to_vec());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE operator_recovery_codes SET used_at = ?1 \
                 WHERE code_hash = ?2 AND operator_id = ?3 AND used_at IS NULL",
                params![now, hash, id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn append_audit(&self, e: AuditEvent) -> Result<()> {
        let changes = crate::model::changes_json(&e.changes);
        self.run(move |c| {
            c.execute(
                "INSERT INTO audit_log (at, actor, role, source, action, subject, detail, changes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![e.at, e.actor, e.role, e.source, e.action, e.subject, e.detail, changes],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_operator_disabled(&self, name: &str, disabled: bool) -> Result<OperatorRecord> {
        let name = name.to_string();
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("UPDATE operators SET disabled = ?1 WHERE name = ?2", params![disabled, name])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let operator =
                tx.query_row(&format!("SELECT {OPERATOR_COLS} FROM operators WHERE name = ?1"), [&name], operator_row)?;
            if disabled {
                tx.execute("DELETE FROM operator_tokens WHERE operator_id = ?1", [&operator.id])?;
            }
            tx.commit()?;
            Ok(operator)
        })
        .await
    }

    async fn operator_by_id(&self, id: &str) -> Result<Option<OperatorRecord>> {
        let id = id.to_owned();
        self.run(move |c| {
            Ok(c.query_row(&format!("SELECT {OPERATOR_COLS} FROM operators WHERE id = ?1"), [id], operator_row)
                .optional()?)
        })
        .await
    }

    async fn insert_operator_token(&self, token_hash: &[u8], t: &OperatorToken) -> Result<()> {
        let (hash, t) = (token_hash.to_vec(), t.clone());
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM operator_tokens WHERE expires_at <= ?1", [t.created_at])?;
            tx.execute(
                &format!(
                    "INSERT INTO operator_tokens (token_hash, {TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    hash,
                    t.id,
                    t.operator_id,
                    t.kind.as_str(),
                    t.scope.as_str(),
                    t.label,
                    t.created_at,
                    t.last_used_at,
                    t.expires_at
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn touch_operator_token(
        &self,
        token_hash: &[u8],
        now: i64,
        idle_since: i64,
    ) -> Result<Option<(OperatorToken, OperatorRecord)>> {
        let hash = token_hash.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            let found = tx
                .query_row(
                    &format!("SELECT {TOKEN_COLS} FROM operator_tokens WHERE token_hash = ?1"),
                    [&hash],
                    token_row,
                )
                .optional()?;
            let Some(mut t) = found else { return Ok(None) };
            if now >= t.expires_at || t.last_used_at < idle_since {
                tx.execute("DELETE FROM operator_tokens WHERE token_hash = ?1", [&hash])?;
                tx.commit()?;
                return Ok(None);
            }
            let operator = tx
                .query_row(
                    &format!("SELECT {OPERATOR_COLS} FROM operators WHERE id = ?1"),
                    [&t.operator_id],
                    operator_row,
                )
                .optional()?;
            let Some(operator) = operator else { return Ok(None) };
            tx.execute("UPDATE operator_tokens SET last_used_at = ?1 WHERE token_hash = ?2", params![now, hash])?;
            tx.commit()?;
            t.last_used_at = now;
            Ok(Some((t, operator)))
        })
        .await
    }

    async fn operator_tokens(&self, operator_id: &str, now: i64) -> Result<Vec<OperatorToken>> {
        let id = operator_id.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {TOKEN_COLS} FROM operator_tokens WHERE operator_id = ?1 AND expires_at > ?2 \
                 ORDER BY created_at DESC, id"
            ))?;
            let rows = stmt.query_map(params![id, now], token_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_operator_token(&self, operator_id: &str, id: &str) -> Result<bool> {
        let (operator, id) = (operator_id.to_owned(), id.to_owned());
        self.run(move |c| {
            Ok(c.execute("DELETE FROM operator_tokens WHERE id = ?1 AND operator_id = ?2", params![id, operator])? > 0)
        })
        .await
    }

    async fn delete_operator_token_by_hash(&self, token_hash: &[u8]) -> Result<bool> {
        let hash = token_hash.to_vec();
        self.run(move |c| Ok(c.execute("DELETE FROM operator_tokens WHERE token_hash = ?1", [hash])? > 0)).await
    }

    async fn grant_license(&self, license: LicenseId, operator_id: &str) -> Result<()> {
        let operator = operator_id.to_owned();
        self.run(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO license_operators (license_id, operator_id) VALUES (?1, ?2)",
                params![license.to_string(), operator],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::NotFound,
                _ => e.into(),
            })?;
            Ok(())
        })
        .await
    }

    async fn license_grantees(&self, license: LicenseId) -> Result<Vec<String>> {
        self.run(move |c| {
            let mut stmt =
                c.prepare("SELECT operator_id FROM license_operators WHERE license_id = ?1 ORDER BY operator_id")?;
            let rows = stmt.query_map([license.to_string()], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn licenses_granted_to(&self, operator_id: &str) -> Result<Vec<License>> {
        let operator = operator_id.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {LICENSE_COLS} FROM licenses l \
                 JOIN license_operators g ON g.license_id = l.id WHERE g.operator_id = ?1 ORDER BY l.name"
            ))?;
            let rows = stmt.query_map([operator], license_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn update_license(&self, id: LicenseId, change: &LicenseChange) -> Result<License> {
        let ch = change.clone();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE licenses SET \
                 max_users = COALESCE(?2, max_users), \
                 expires_at = CASE WHEN ?3 THEN ?4 ELSE expires_at END, \
                 suspended = COALESCE(?5, suspended), \
                 secret_question_recovery = COALESCE(?6, secret_question_recovery), \
                 features = COALESCE(?7, features), \
                 admin_email = CASE WHEN ?8 THEN ?9 ELSE admin_email END, \
                 require_client_certificates = COALESCE(?10, require_client_certificates) \
                 WHERE id = ?1",
                params![
                    id.to_string(),
                    ch.max_users,
                    ch.expires_at.is_some(),
                    ch.expires_at.flatten(),
                    ch.suspended,
                    ch.secret_question_recovery,
                    ch.features.map(Features::bits),
                    ch.admin_email.is_some(),
                    ch.admin_email.clone().flatten(),
                    ch.require_client_certificates,
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            get_license(c, id)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn search_users(&self, filter: &UserFilter) -> Result<Vec<UserRecord>> {
        let f = filter.clone();
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {USER_COLS} FROM users WHERE \
                 (?1 IS NULL OR instr(lower(email), lower(?1)) > 0) \
                 AND (?2 IS NULL OR msisdn = ?2) \
                 AND (?3 IS NULL OR instr(lower(first_name || ' ' || last_name), lower(?3)) > 0) \
                 AND (?4 IS NULL OR license_id = ?4) \
                 AND (?5 IS NULL OR license_id IN (SELECT license_id FROM license_operators WHERE operator_id = ?5)) \
                 ORDER BY email LIMIT ?6 OFFSET ?7"
            ))?;
            let rows = stmt
                .query_map(
                    params![
                        f.email,
                        f.msisdn,
                        f.name,
                        f.license.map(|l| l.to_string()),
                        f.granted_to,
                        f.limit,
                        f.offset
                    ],
                    user_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_user_status(&self, id: UserId, status: UserStatus, now: i64) -> Result<UserRecord> {
        self.run(move |c| {
            let n = c.execute(
                "UPDATE users SET status = ?1, updated_at = ?2 WHERE id = ?3",
                params![status.as_str(), now, id.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(c.query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id.to_string()], user_row)?)
        })
        .await
    }

    async fn set_alert_delivery(&self, id: UserId, delivery: &AlertDelivery, now: i64) -> Result<UserRecord> {
        let json = serde_json::to_string(delivery).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.run(move |c| {
            let n = c.execute(
                "UPDATE users SET alert_delivery = ?1, updated_at = ?2 WHERE id = ?3",
                params![json, now, id.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(c.query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id.to_string()], user_row)?)
        })
        .await
    }

    async fn set_user_access(&self, id: UserId, access: Features, now: i64) -> Result<UserRecord> {
        self.run(move |c| {
            let n = c.execute(
                "UPDATE users SET access = ?1, updated_at = ?2 WHERE id = ?3",
                params![access.bits(), now, id.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(c.query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id.to_string()], user_row)?)
        })
        .await
    }

    async fn insert_web_session(&self, token_hash: &[u8], session: &WebSession) -> Result<()> {
        let (hash, w) = (token_hash.to_vec(), session.clone());
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM web_sessions WHERE expires_at < ?1", [w.created_at])?;
            tx.execute(
                "INSERT INTO web_sessions (token_hash, id, user_id, created_at, last_seen_at, expires_at, persistent, client) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    hash,
                    w.id,
                    w.user_id.to_string(),
                    w.created_at,
                    w.last_seen_at,
                    w.expires_at,
                    w.persistent,
                    w.client
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn touch_web_session(&self, token_hash: &[u8], now: i64, idle_since: i64) -> Result<Option<WebSession>> {
        let hash = token_hash.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            let found = tx
                .query_row(
                    &format!("SELECT {WEB_SESSION_COLS} FROM web_sessions WHERE token_hash = ?1"),
                    [&hash],
                    web_session_row,
                )
                .optional()?;
            let Some(mut w) = found else { return Ok(None) };
            if now >= w.expires_at || (!w.persistent && w.last_seen_at < idle_since) {
                tx.execute("DELETE FROM web_sessions WHERE token_hash = ?1", [&hash])?;
                tx.commit()?;
                return Ok(None);
            }
            tx.execute("UPDATE web_sessions SET last_seen_at = ?1 WHERE token_hash = ?2", params![now, hash])?;
            tx.commit()?;
            w.last_seen_at = now;
            Ok(Some(w))
        })
        .await
    }

    async fn delete_web_session(&self, token_hash: &[u8]) -> Result<bool> {
        let hash = token_hash.to_vec();
        self.run(move |c| Ok(c.execute("DELETE FROM web_sessions WHERE token_hash = ?1", [hash])? > 0)).await
    }

    async fn delete_web_session_by_id(&self, user: UserId, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.run(move |c| {
            Ok(c.execute("DELETE FROM web_sessions WHERE id = ?1 AND user_id = ?2", params![id, user.to_string()])? > 0)
        })
        .await
    }

    async fn delete_web_sessions_of_user(&self, user: UserId, keep: Option<&[u8]>) -> Result<u64> {
        let keep = keep.map(<[u8]>::to_vec).unwrap_or_default();
        self.run(move |c| {
            let n = c.execute(
                "DELETE FROM web_sessions WHERE user_id = ?1 AND token_hash <> ?2",
                params![user.to_string(), keep],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn web_sessions_of_user(&self, user: UserId, now: i64) -> Result<Vec<WebSession>> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {WEB_SESSION_COLS} FROM web_sessions WHERE user_id = ?1 AND expires_at > ?2 \
                 ORDER BY created_at DESC, id"
            ))?;
            let rows = stmt
                .query_map(params![user.to_string(), now], web_session_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn add_usage(&self, days: &[UsageDay], active: &[ActiveDeviceDay]) -> Result<()> {
        let (days, active) = (days.to_vec(), active.to_vec());
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut add = tx.prepare(
                    "INSERT INTO usage_daily (day, license_id, frames_to_ves, bytes_to_ves, frames_to_devices, \
                     bytes_to_devices, undeliverable, device_seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (day, license_id) DO UPDATE SET \
                     frames_to_ves = frames_to_ves + excluded.frames_to_ves, \
                     bytes_to_ves = bytes_to_ves + excluded.bytes_to_ves, \
                     frames_to_devices = frames_to_devices + excluded.frames_to_devices, \
                     bytes_to_devices = bytes_to_devices + excluded.bytes_to_devices, \
                     undeliverable = undeliverable + excluded.undeliverable, \
                     device_seconds = device_seconds + excluded.device_seconds",
                )?;
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                for d in &days {
                    add.execute(params![
                        d.day,
                        d.license_id.to_string(),
                        n(d.frames_to_ves),
                        n(d.bytes_to_ves),
                        n(d.frames_to_devices),
                        n(d.bytes_to_devices),
                        n(d.undeliverable),
                        n(d.device_seconds)
                    ])?;
                }
                let mut seen = tx.prepare(
                    "INSERT OR IGNORE INTO usage_daily_devices (day, license_id, device_id, user_id) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                let mut row = tx.prepare("INSERT OR IGNORE INTO usage_daily (day, license_id) VALUES (?1, ?2)")?;
                for a in &active {
                    let license = a.license_id.to_string();
                    seen.execute(params![a.day, license, a.device_id.to_string(), a.user_id.to_string()])?;
                    row.execute(params![a.day, license])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageDay>> {
        let f = filter.clone();
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT u.day, u.license_id, u.frames_to_ves, u.bytes_to_ves, u.frames_to_devices, \
                 u.bytes_to_devices, u.undeliverable, u.device_seconds, \
                 (SELECT COUNT(*) FROM usage_daily_devices d WHERE d.day = u.day AND d.license_id = u.license_id), \
                 (SELECT COUNT(DISTINCT user_id) FROM usage_daily_devices d \
                  WHERE d.day = u.day AND d.license_id = u.license_id) \
                 FROM usage_daily u WHERE u.day BETWEEN ?1 AND ?2 \
                 AND (?3 IS NULL OR u.license_id = ?3) \
                 AND (?4 IS NULL OR u.license_id IN (SELECT license_id FROM license_operators WHERE operator_id = ?4)) \
                 ORDER BY u.day, u.license_id",
            )?;
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            let rows = stmt
                .query_map(params![f.from_day, f.to_day, f.license.map(|l| l.to_string()), f.granted_to], |r| {
                    Ok(UsageDay {
                        day: r.get(0)?,
                        license_id: parse_id::<LicenseId>(r.get(1)?)?,
                        frames_to_ves: n(r.get(2)?),
                        bytes_to_ves: n(r.get(3)?),
                        frames_to_devices: n(r.get(4)?),
                        bytes_to_devices: n(r.get(5)?),
                        undeliverable: n(r.get(6)?),
                        device_seconds: n(r.get(7)?),
                        active_devices: n(r.get(8)?),
                        active_users: n(r.get(9)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn admit_alert(&self, user: UserId, hour: i64, max: u32) -> Result<bool> {
        if max == 0 {
            return Ok(false);
        }
        self.run(move |c| {
            let tx = c.transaction()?;
            let id = user.to_string();
            tx.execute("DELETE FROM alert_counts WHERE user_id = ?1 AND hour < ?2", params![id, hour])?;
            let counted = tx
                .query_row(
                    "INSERT INTO alert_counts (user_id, hour, n) VALUES (?1, ?2, 1) \
                     ON CONFLICT (user_id, hour) DO UPDATE SET n = n + 1 WHERE alert_counts.n < ?3 RETURNING n",
                    params![id, hour, max],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some();
            tx.commit()?;
            Ok(counted)
        })
        .await
    }

    async fn purge_audit(&self, before: i64) -> Result<u64> {
        self.run(move |c| Ok(c.execute("DELETE FROM audit_log WHERE at < ?1", [before])? as u64)).await
    }

    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let f = filter.clone();
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {AUDIT_COLS} FROM audit_log WHERE \
                 (?1 IS NULL OR actor = ?1) \
                 AND (?2 IS NULL OR action = ?2 OR (substr(?2, -1) = '.' AND substr(action, 1, length(?2)) = ?2)) \
                 AND (?3 IS NULL OR subject = ?3) \
                 AND (?4 IS NULL OR at >= ?4) AND (?5 IS NULL OR at < ?5) AND (?6 IS NULL OR id < ?6) \
                 ORDER BY id DESC LIMIT ?7"
            ))?;
            let rows = stmt
                .query_map(params![f.actor, f.action, f.subject, f.since, f.until, f.before_id, f.limit], audit_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_database_and_its_wal_files_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("noc.sqlite3");
        // An older node left the file world-readable.
        std::fs::write(&path, b"").expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let store = SqliteStore::open(&path).expect("open");
        // A write makes SQLite create the -wal and -shm files.
        let license = NewLicense {
            name: "acme".into(),
            password_hash: "hash".into(),
            max_users: 1,
            expires_at: None,
            features: Features::ALL,
            admin_email: None,
        };
        store.insert_license(license).await.expect("write");
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("noc.sqlite3{suffix}"));
            assert!(file.exists(), "{} exists", file.display());
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}
