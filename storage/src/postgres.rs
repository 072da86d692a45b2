//! The clustered backend: PostgreSQL through a `deadpool-postgres` pool.
//!
//! Every node of a cluster shares this database. Queries are parameterised (no SQL is
//! ever built from input), migrations run at start under an advisory lock so that nodes
//! starting together do not race, and a pool that cannot hand out a connection within
//! `wait_timeout` fails fast with [`StoreError::Unavailable`] instead of queueing logins
//! forever. Live sessions never depend on the database: only logins, activations and
//! provisioning do.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Timeouts};
use noc_protocol::rts::FilterRule;
use noc_protocol::{DeviceId, LicenseId, UserId, VesId};
use tokio_postgres::{NoTls, Row};

use crate::error::StoreError;
use crate::model::*;
use crate::store::{Result, Store};

/// Schema migrations, applied in order; `noc_schema.version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE licenses (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    max_users     INTEGER NOT NULL CHECK (max_users >= 0),
    expires_at    BIGINT,
    suspended     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);
CREATE TABLE license_tokens (
    token_hash BYTEA PRIMARY KEY,
    license_id UUID NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE TABLE ves (
    id            UUID PRIMARY KEY,
    guid_hash     BYTEA NOT NULL UNIQUE,
    license_id    UUID NOT NULL REFERENCES licenses(id),
    registered_at BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL
);
CREATE TABLE users (
    id              UUID PRIMARY KEY,
    license_id      UUID NOT NULL REFERENCES licenses(id),
    ves_id          UUID NOT NULL REFERENCES ves(id),
    email           TEXT NOT NULL,
    msisdn          TEXT,
    password_hash   TEXT NOT NULL,
    first_name      TEXT NOT NULL,
    last_name       TEXT NOT NULL,
    time_zone       TEXT,
    status          TEXT NOT NULL,
    constant_sync   BOOLEAN NOT NULL DEFAULT TRUE,
    filter_rules    TEXT NOT NULL DEFAULT '[]',
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_msisdn_key UNIQUE (msisdn)
);
CREATE INDEX users_license ON users(license_id);
CREATE INDEX users_ves ON users(ves_id);
CREATE TABLE devices (
    id              UUID PRIMARY KEY,
    user_id         UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_hash BYTEA NOT NULL,
    name            TEXT,
    device_type     TEXT,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);
CREATE INDEX devices_user ON devices(user_id);
CREATE TABLE msisdn_approvals (
    msisdn      TEXT PRIMARY KEY,
    approved_by TEXT NOT NULL,
    approved_at BIGINT NOT NULL
);
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);
"#,
    r#"
-- Password attempts are throttled in memory (crate::throttle); no per-user lock is kept.
ALTER TABLE users DROP COLUMN failed_attempts, DROP COLUMN locked_until;
"#,
    r#"
CREATE TABLE web_sessions (
    token_hash   BYTEA PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    persistent   BOOLEAN NOT NULL,
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
    token_hash BYTEA PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX recovery_tokens_user ON recovery_tokens(user_id, created_at);
"#,
    r#"
-- Remote wipe: requested from the portal, done when the device acknowledges it.
ALTER TABLE devices ADD COLUMN wipe_requested_at BIGINT, ADD COLUMN wiped_at BIGINT;
"#,
    r#"
-- Secret-question password recovery: per license, off by default; the answer hashed.
ALTER TABLE licenses ADD COLUMN secret_question_recovery BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN secret_question TEXT, ADD COLUMN secret_answer_hash TEXT;
"#,
    r#"
ALTER TABLE users ADD COLUMN locale TEXT, ADD COLUMN alerts_enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE devices ADD COLUMN last_seen_at BIGINT;
"#,
    r#"
CREATE TABLE operators (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    totp_secret    BYTEA NOT NULL,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL
);
CREATE TABLE operator_recovery_codes (
    code_hash   BYTEA PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    used_at     BIGINT
);
"#,
    r#"
CREATE TABLE operator_tokens (
    token_hash   BYTEA PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    operator_id  TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    label        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX operator_tokens_operator ON operator_tokens(operator_id);
CREATE TABLE license_operators (
    license_id  UUID NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    PRIMARY KEY (license_id, operator_id)
);
CREATE INDEX license_operators_operator ON license_operators(operator_id);
ALTER TABLE audit_log ADD COLUMN role TEXT NOT NULL DEFAULT '',
    ADD COLUMN source TEXT NOT NULL DEFAULT '',
    ADD COLUMN changes TEXT NOT NULL DEFAULT '[]';
CREATE INDEX audit_log_at ON audit_log(at);
"#,
    r#"
CREATE TABLE usage_daily (
    day               BIGINT NOT NULL,
    license_id        UUID NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    frames_to_ves     BIGINT NOT NULL DEFAULT 0,
    bytes_to_ves      BIGINT NOT NULL DEFAULT 0,
    frames_to_devices BIGINT NOT NULL DEFAULT 0,
    bytes_to_devices  BIGINT NOT NULL DEFAULT 0,
    undeliverable     BIGINT NOT NULL DEFAULT 0,
    device_seconds    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, license_id)
);
CREATE TABLE usage_daily_devices (
    day        BIGINT NOT NULL,
    license_id UUID NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    device_id  UUID NOT NULL,
    user_id    UUID NOT NULL,
    PRIMARY KEY (day, license_id, device_id)
);
"#,
    r#"
ALTER TABLE ves ADD COLUMN agent TEXT;
"#,
    r#"
ALTER TABLE licenses ADD COLUMN features INTEGER NOT NULL DEFAULT 31, ADD COLUMN admin_email TEXT;
ALTER TABLE users ADD COLUMN access INTEGER NOT NULL DEFAULT 31;
"#,
    r#"
ALTER TABLE users ADD COLUMN alert_delivery TEXT NOT NULL DEFAULT '{}';
"#,
    r#"
-- Days ahead of today whose calendar entries are pushed to the user's devices.
ALTER TABLE users ADD COLUMN calendar_days_ahead INTEGER NOT NULL DEFAULT 30;
"#,
    r#"
-- Alerts delivered per user and clock hour, for the cluster-wide hourly limit.
CREATE TABLE alert_counts (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hour    BIGINT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (user_id, hour)
);
"#,
    r#"
-- The client certificate the device CA last issued to each device.
ALTER TABLE devices ADD COLUMN certificate_serial TEXT;
ALTER TABLE devices ADD COLUMN certificate_not_after BIGINT;
"#,
    r#"
-- Licenses whose devices must authenticate with a client certificate.
ALTER TABLE licenses ADD COLUMN require_client_certificates BOOLEAN NOT NULL DEFAULT FALSE;
"#,
];

/// Arbitrary constant naming the migration advisory lock.
const MIGRATION_LOCK: i64 = 0x6e6f_6373_6368_656d; // "nocschem"
/// Active-device rows written by one statement of a usage flush, at most (four arrays of
/// this many values: well inside a statement's limits, and few round trips).
const ACTIVE_DEVICES_PER_STATEMENT: usize = 5_000;

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Connections kept by this node.
    pub max_connections: usize,
    /// How long a request waits for a free connection before failing with 503.
    pub wait_timeout: Duration,
    /// Connect (and TLS) timeout of a new connection.
    pub connect_timeout: Duration,
    /// PEM file of the certificate authorities that sign the server's certificate, for
    /// TLS (`sslmode=require` or `prefer` in the URL); without it the webpki roots (the
    /// public CAs) are used.
    pub tls_ca_path: Option<std::path::PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            wait_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            tls_ca_path: None,
        }
    }
}

/// The rustls client for connections with `sslmode=require`/`prefer`. The server's
/// certificate is always verified (chain and host name): an unauthenticated TLS link to
/// the account store would let anyone on the path read password hashes and credentials.
fn tls_connector(ca_path: Option<&std::path::Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_path {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| StoreError::Backend(format!("postgres.tls_ca_path {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(StoreError::Backend(format!("postgres.tls_ca_path {}: no certificate", path.display())));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| StoreError::Backend(format!("postgres.tls_ca_path {}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS for PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("pool", &self.pool.status()).finish()
    }
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        use tokio_postgres::error::SqlState;
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            let c = db.constraint().unwrap_or("");
            return StoreError::Conflict(if c.contains("email") {
                "email"
            } else if c.contains("msisdn") {
                "msisdn"
            } else if c.contains("name") {
                "name"
            } else {
                "record"
            });
        }
        // Class 08 (connection exception), 53 (insufficient resources), 57 (operator
        // intervention: shutdown, cannot connect now) are the database being unavailable.
        let class = &code.code()[..2];
        if matches!(class, "08" | "53" | "57") {
            return StoreError::Unavailable(db.message().to_string());
        }
        return StoreError::Backend(format!("{}: {}", code.code(), db.message()));
    }
    // Not an answer from the server: the connection failed (refused, reset, timed out).
    let detail = match std::error::Error::source(&e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    };
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if io || e.is_closed() || detail.contains("connect") || detail.contains("timed out") {
        return StoreError::Unavailable(detail);
    }
    StoreError::Backend(detail)
}

/// A pool that timed out *waiting for a free connection* is busy, not down: a dead server
/// fails the recycle or create step instead, quickly (`connect_timeout`).
/// The `sslmode` parameter of a URL or key=value connection string, if any.
pub fn url_sslmode(url: &str) -> Option<&str> {
    url.split(['?', '&', ' '])
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == "sslmode")
        .map(|(_, v)| v.trim())
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            StoreError::Busy("no free PostgreSQL connection within postgres.wait_timeout_seconds".into())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`), applies pending migrations and
    /// returns the store. With `sslmode=require` (or `prefer`) in the URL connections use
    /// TLS, verified against `options.tls_ca_path` (see [`PostgresOptions`]); without an
    /// `sslmode`, or with `disable`, they are plain TCP.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self> {
        let mut pg: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| StoreError::Backend(format!("postgres_url: {e}")))?;
        if pg.get_dbname().is_none() {
            return Err(StoreError::Backend("postgres_url: no database name".into()));
        }
        pg.connect_timeout(options.connect_timeout);
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        // tokio-postgres defaults to `prefer`; only an explicit sslmode turns TLS on, so a
        // URL without one keeps meaning plain TCP (and needs no CA).
        let explicit_tls = url_sslmode(url).is_some_and(|m| m != "disable");
        let manager = if explicit_tls {
            Manager::from_config(pg, tls_connector(options.tls_ca_path.as_deref())?, manager_config)
        } else {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(pg, NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .timeouts(Timeouts {
                wait: Some(options.wait_timeout),
                create: Some(options.connect_timeout),
                recycle: Some(options.connect_timeout),
            })
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations under an advisory lock. Returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS noc_schema (version INTEGER NOT NULL)").await.map_err(pg_error)?;
        let version: i32 = match tx.query_opt("SELECT version FROM noc_schema", &[]).await.map_err(pg_error)? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO noc_schema (version) VALUES (0)", &[]).await.map_err(pg_error)?;
                0
            }
        };
        let mut ran = 0;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.batch_execute(sql).await.map_err(pg_error)?;
            tx.execute("UPDATE noc_schema SET version = $1", &[&((i + 1) as i32)]).await.map_err(pg_error)?;
            ran += 1;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(ran)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

const LICENSE_COLS: &str = "l.id, l.name, l.max_users, l.expires_at, l.suspended, l.created_at, \
     (SELECT COUNT(*) FROM users u WHERE u.license_id = l.id), l.secret_question_recovery, l.features, l.admin_email, \
     l.require_client_certificates";

fn license_row(r: &Row) -> License {
    License {
        id: LicenseId(r.get(0)),
        name: r.get(1),
        max_users: r.get::<_, i32>(2).max(0) as u32,
        expires_at: r.get(3),
        suspended: r.get(4),
        created_at: r.get(5),
        used_users: r.get::<_, i64>(6).max(0) as u32,
        secret_question_recovery: r.get(7),
        features: Features::from_bits(r.get::<_, i32>(8).into()),
        admin_email: r.get(9),
        require_client_certificates: r.get(10),
    }
}

const USER_COLS: &str = "id, license_id, ves_id, email, msisdn, password_hash, first_name, last_name, \
     time_zone, status, constant_sync, filter_rules, created_at, updated_at, contact_email, locale, \
     alerts_enabled, access, (SELECT l.features FROM licenses l WHERE l.id = users.license_id), alert_delivery, \
     calendar_days_ahead";

const WEB_SESSION_COLS: &str = "id, user_id, created_at, last_seen_at, expires_at, persistent, client";

fn web_session_row(r: &Row) -> WebSession {
    WebSession {
        id: r.get(0),
        user_id: UserId(r.get(1)),
        created_at: r.get(2),
        last_seen_at: r.get(3),
        expires_at: r.get(4),
        persistent: r.get(5),
        client: r.get(6),
    }
}

fn user_row(r: &Row) -> UserRecord {
    let status: String = r.get(9);
    let rules: String = r.get(11);
    UserRecord {
        id: UserId(r.get(0)),
        license_id: LicenseId(r.get(1)),
        ves_id: VesId(r.get(2)),
        email: r.get(3),
        msisdn: r.get(4),
        password_hash: r.get(5),
        first_name: r.get(6),
        last_name: r.get(7),
        time_zone: r.get(8),
        status: UserStatus::parse(&status).unwrap_or(UserStatus::Suspended),
        constant_sync: r.get(10),
        filter_rules: serde_json::from_str::<Vec<FilterRule>>(&rules).unwrap_or_default(),
        created_at: r.get(12),
        updated_at: r.get(13),
        contact_email: r.get(14),
        locale: r.get(15),
        alerts_enabled: r.get(16),
        access: Features::from_bits(r.get::<_, i32>(17).into()),
        // No license row (it cannot happen: users reference theirs) allows nothing.
        license_features: Features::from_bits(r.get::<_, Option<i32>>(18).unwrap_or(0).into()),
        alert_delivery: serde_json::from_str(&r.get::<_, String>(19)).unwrap_or_default(),
        calendar_days_ahead: u32::try_from(r.get::<_, i32>(20)).unwrap_or(DEFAULT_CALENDAR_DAYS_AHEAD),
    }
}

const DEVICE_COLS: &str = "id, user_id, credential_hash, name, device_type, created_at, revoked_at, wipe_requested_at, wiped_at, \
     last_seen_at, certificate_serial, certificate_not_after";

const OPERATOR_COLS: &str =
    "id, name, role, password_hash, totp_secret, totp_last_step, disabled, created_at, created_by";

fn operator_row(r: &Row) -> OperatorRecord {
    let role: String = r.get(2);
    OperatorRecord {
        id: r.get(0),
        name: r.get(1),
        // An unknown role (a newer schema's) grants nothing: read as the narrowest one.
        role: OperatorRole::parse(&role).unwrap_or(OperatorRole::Auditor),
        password_hash: r.get(3),
        totp_secret: r.get(4),
        totp_last_step: r.get(5),
        disabled: r.get(6),
        created_at: r.get(7),
        created_by: r.get(8),
    }
}

const TOKEN_COLS: &str = "id, operator_id, kind, scope, label, created_at, last_used_at, expires_at";

fn token_row(r: &Row) -> OperatorToken {
    let (kind, scope): (String, String) = (r.get(2), r.get(3));
    OperatorToken {
        id: r.get(0),
        operator_id: r.get(1),
        // Unknown words (a newer schema's) read as the weakest: a console session that
        // only looks.
        kind: TokenKind::parse(&kind).unwrap_or(TokenKind::Console),
        scope: TokenScope::parse(&scope).unwrap_or(TokenScope::Read),
        label: r.get(4),
        created_at: r.get(5),
        last_used_at: r.get(6),
        expires_at: r.get(7),
    }
}

const AUDIT_COLS: &str = "id, at, actor, role, source, action, subject, detail, changes";

fn audit_row(r: &Row) -> AuditEvent {
    AuditEvent {
        id: r.get(0),
        at: r.get(1),
        actor: r.get(2),
        role: r.get(3),
        source: r.get(4),
        action: r.get(5),
        subject: r.get(6),
        detail: r.get(7),
        changes: crate::model::parse_changes(&r.get::<_, String>(8)),
    }
}

/// A device that may still open sessions: neither revoked nor waiting for its wipe.
const LIVE_DEVICE: &str = "revoked_at IS NULL AND wipe_requested_at IS NULL";

fn device_row(r: &Row) -> DeviceRecord {
    DeviceRecord {
        id: DeviceId(r.get(0)),
        user_id: UserId(r.get(1)),
        credential_hash: r.get(2),
        name: r.get(3),
        device_type: r.get(4),
        created_at: r.get(5),
        revoked_at: r.get(6),
        wipe_requested_at: r.get(7),
        wiped_at: r.get(8),
        last_seen_at: r.get(9),
        certificate_serial: r.get(10),
        certificate_not_after: r.get(11),
    }
}

/// [`Store::device_login`]: three primary-key lookups joined, no aggregate.
const DEVICE_LOGIN_SQL: &str = "SELECT d.id, d.user_id, u.ves_id, u.license_id, d.credential_hash, d.revoked_at, \
     u.status, l.suspended, l.expires_at, d.wipe_requested_at, u.access, l.features, d.certificate_serial, \
     l.require_client_certificates \
     FROM devices d JOIN users u ON u.id = d.user_id JOIN licenses l ON l.id = u.license_id WHERE d.id = $1";

async fn get_license<C: GenericClient>(c: &C, id: LicenseId) -> Result<Option<License>> {
    let sql = format!("SELECT {LICENSE_COLS} FROM licenses l WHERE l.id = $1");
    Ok(c.query_opt(&sql, &[&id.0]).await.map_err(pg_error)?.map(|r| license_row(&r)))
}

async fn get_user<C: GenericClient>(c: &C, id: UserId) -> Result<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
    Ok(c.query_opt(&sql, &[&id.0]).await.map_err(pg_error)?.map(|r| user_row(&r)))
}

async fn live_devices_of<C: GenericClient>(c: &C, user: UserId) -> Result<Vec<DeviceId>> {
    let rows = c
        .query(&format!("SELECT id FROM devices WHERE user_id = $1 AND {LIVE_DEVICE}"), &[&user.0])
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|r| DeviceId(r.get(0))).collect())
}

#[async_trait]
impl Store for PostgresStore {
    fn pool_status(&self) -> Option<PoolStatus> {
        let s = self.pool.status();
        Some(PoolStatus { open: s.size, idle: s.available, max: s.max_size, waiting: s.waiting })
    }

    async fn ping(&self) -> Result<()> {
        self.client().await?.query_one("SELECT 1", &[]).await.map_err(pg_error)?;
        Ok(())
    }

    async fn insert_license(&self, new: NewLicense) -> Result<License> {
        let c = self.client().await?;
        let id = LicenseId::random();
        c.execute(
            "INSERT INTO licenses (id, name, password_hash, max_users, expires_at, suspended, created_at, features, \
             admin_email) VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7, $8)",
            &[
                &id.0,
                &new.name,
                &new.password_hash,
                &(new.max_users.min(i32::MAX as u32) as i32),
                &new.expires_at,
                &noc_protocol::clock::unix_ms_i64(),
                &(new.features.bits() as i32),
                &new.admin_email,
            ],
        )
        .await
        .map_err(pg_error)?;
        get_license(&c, id).await?.ok_or(StoreError::NotFound)
    }

    async fn licenses(&self) -> Result<Vec<License>> {
        let c = self.client().await?;
        let rows =
            c.query(&format!("SELECT {LICENSE_COLS} FROM licenses l ORDER BY l.name"), &[]).await.map_err(pg_error)?;
        Ok(rows.iter().map(license_row).collect())
    }

    async fn license_by_name(&self, name: &str) -> Result<Option<(License, String)>> {
        let c = self.client().await?;
        let sql = format!("SELECT {LICENSE_COLS}, l.password_hash FROM licenses l WHERE l.name = $1");
        Ok(c.query_opt(&sql, &[&name]).await.map_err(pg_error)?.map(|r| (license_row(&r), r.get::<_, String>(11))))
    }

    async fn license_by_id(&self, id: LicenseId) -> Result<Option<License>> {
        get_license(&self.client().await?, id).await
    }

    async fn set_license_suspended(&self, name: &str, suspended: bool) -> Result<License> {
        let c = self.client().await?;
        let row = c
            .query_opt("UPDATE licenses SET suspended = $1 WHERE name = $2 RETURNING id", &[&suspended, &name])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        get_license(&c, LicenseId(row.get(0))).await?.ok_or(StoreError::NotFound)
    }

    async fn set_license_secret_question_recovery(&self, name: &str, enabled: bool) -> Result<License> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE licenses SET secret_question_recovery = $1 WHERE name = $2 RETURNING id",
                &[&enabled, &name],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        get_license(&c, LicenseId(row.get(0))).await?.ok_or(StoreError::NotFound)
    }

    async fn insert_license_token(
        &self,
        token_hash: &[u8],
        license: LicenseId,
        now: i64,
        expired_before: i64,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        tx.execute(
            "DELETE FROM license_tokens WHERE license_id = $1 AND created_at < $2",
            &[&license.0, &expired_before],
        )
        .await
        .map_err(pg_error)?;
        tx.execute(
            "INSERT INTO license_tokens (token_hash, license_id, created_at) VALUES ($1, $2, $3)",
            &[&token_hash, &license.0, &now],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn license_by_token(&self, token_hash: &[u8], issued_after: i64) -> Result<Option<License>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {LICENSE_COLS} FROM licenses l JOIN license_tokens t ON t.license_id = l.id \
             WHERE t.token_hash = $1 AND t.created_at >= $2"
        );
        Ok(c.query_opt(&sql, &[&token_hash, &issued_after]).await.map_err(pg_error)?.map(|r| license_row(&r)))
    }

    async fn set_license_password(&self, name: &str, password_hash: &str) -> Result<(License, u64)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let id = LicenseId(
            tx.query_opt(
                "UPDATE licenses SET password_hash = $1 WHERE name = $2 RETURNING id",
                &[&password_hash, &name],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?
            .get(0),
        );
        let revoked =
            tx.execute("DELETE FROM license_tokens WHERE license_id = $1", &[&id.0]).await.map_err(pg_error)?;
        let license = get_license(&tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await.map_err(pg_error)?;
        Ok((license, revoked))
    }

    async fn insert_ves(&self, guid_hash: &[u8], license: LicenseId, now: i64) -> Result<VesRecord> {
        let id = VesId::random();
        self.client()
            .await?
            .execute(
                "INSERT INTO ves (id, guid_hash, license_id, registered_at, last_seen_at) VALUES ($1, $2, $3, $4, $4)",
                &[&id.0, &guid_hash, &license.0, &now],
            )
            .await
            .map_err(pg_error)?;
        Ok(VesRecord { id, license_id: license, registered_at: now, last_seen_at: now })
    }

    async fn touch_ves_by_guid(&self, guid_hash: &[u8], now: i64) -> Result<Option<VesRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE ves SET last_seen_at = $1 WHERE guid_hash = $2 \
                 RETURNING id, license_id, registered_at, last_seen_at",
                &[&now, &guid_hash],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| VesRecord {
            id: VesId(r.get(0)),
            license_id: LicenseId(r.get(1)),
            registered_at: r.get(2),
            last_seen_at: r.get(3),
        }))
    }

    async fn set_ves_agent(&self, ves: VesId, agent: &str) -> Result<()> {
        self.client()
            .await?
            .execute("UPDATE ves SET agent = $1 WHERE id = $2", &[&agent, &ves.0])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn ves_of_license(&self, license: LicenseId) -> Result<Vec<VesInstallation>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, registered_at, last_seen_at, agent FROM ves WHERE license_id = $1 \
                 ORDER BY last_seen_at DESC, id",
                &[&license.0],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| VesInstallation {
                id: VesId(r.get(0)),
                registered_at: r.get(1),
                last_seen_at: r.get(2),
                agent: r.get(3),
            })
            .collect())
    }

    async fn ves_of_unusable_licenses(&self, now: i64) -> Result<Vec<VesId>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT v.id FROM ves v JOIN licenses l ON l.id = v.license_id \
                 WHERE l.suspended OR (l.expires_at IS NOT NULL AND l.expires_at <= $1)",
                &[&now],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| VesId(r.get(0))).collect())
    }

    async fn ves_of_usable_licenses(&self, now: i64) -> Result<Vec<(LicenseId, VesId)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT l.id, v.id FROM ves v JOIN licenses l ON l.id = v.license_id \
                 WHERE NOT l.suspended AND (l.expires_at IS NULL OR l.expires_at > $1)",
                &[&now],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| (LicenseId(r.get(0)), VesId(r.get(1)))).collect())
    }

    async fn ves_of_licenses_without(&self, feature: Feature) -> Result<Vec<VesId>> {
        let bit = Features::NONE.with(feature, true).bits() as i32;
        let rows = self
            .client()
            .await?
            .query("SELECT v.id FROM ves v JOIN licenses l ON l.id = v.license_id WHERE l.features & $1 = 0", &[&bit])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| VesId(r.get(0))).collect())
    }

    async fn insert_user(&self, new: NewUser, now: i64) -> Result<UserRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        // Locking the license row serialises provisioning per license, so two VES racing
        // for the last seat cannot both see it free.
        let max: i32 = tx
            .query_opt("SELECT max_users FROM licenses WHERE id = $1 FOR UPDATE", &[&new.license_id.0])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?
            .get(0);
        let used: i64 = tx
            .query_one("SELECT COUNT(*) FROM users WHERE license_id = $1", &[&new.license_id.0])
            .await
            .map_err(pg_error)?
            .get(0);
        if used >= max as i64 {
            return Err(StoreError::SeatsFull { max: max.max(0) as u32 });
        }
        let id = UserId::random();
        tx.execute(
            "INSERT INTO users (id, license_id, ves_id, email, password_hash, first_name, last_name, status, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'provisioned', $8, $8)",
            &[
                &id.0,
                &new.license_id.0,
                &new.ves_id.0,
                &new.email,
                &new.password_hash,
                &new.first_name,
                &new.last_name,
                &now,
            ],
        )
        .await
        .map_err(pg_error)?;
        let user = get_user(&tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(user)
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        get_user(&self.client().await?, id).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
        Ok(self.client().await?.query_opt(&sql, &[&email]).await.map_err(pg_error)?.map(|r| user_row(&r)))
    }

    async fn user_by_msisdn(&self, msisdn: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE msisdn = $1");
        Ok(self.client().await?.query_opt(&sql, &[&msisdn]).await.map_err(pg_error)?.map(|r| user_row(&r)))
    }

    async fn users_by_ves(&self, ves: VesId) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE ves_id = $1 ORDER BY email");
        Ok(self.client().await?.query(&sql, &[&ves.0]).await.map_err(pg_error)?.iter().map(user_row).collect())
    }

    async fn delete_user(&self, id: UserId) -> Result<Vec<DeviceId>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let devices = live_devices_of(&tx, id).await?;
        tx.execute("DELETE FROM devices WHERE user_id = $1", &[&id.0]).await.map_err(pg_error)?;
        let n = tx.execute("DELETE FROM users WHERE id = $1", &[&id.0]).await.map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(devices)
    }

    async fn set_password(
        &self,
        id: UserId,
        password_hash: &str,
        now: i64,
        revoke_devices: bool,
    ) -> Result<Vec<DeviceId>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let n = tx
            .execute(
                "UPDATE users SET password_hash = $1, updated_at = $2 \
                 WHERE id = $3",
                &[&password_hash, &now, &id.0],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        if !revoke_devices {
            tx.commit().await.map_err(pg_error)?;
            return Ok(Vec::new());
        }
        let devices = live_devices_of(&tx, id).await?;
        tx.execute(&format!("UPDATE devices SET revoked_at = $1 WHERE user_id = $2 AND {LIVE_DEVICE}"), &[&now, &id.0])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(devices)
    }

    async fn update_user_settings(&self, id: UserId, settings: &UserSettings, now: i64) -> Result<UserRecord> {
        let rules = serde_json::to_string(&settings.filter_rules).map_err(|e| StoreError::Backend(e.to_string()))?;
        let sql = format!(
            "UPDATE users SET first_name = $1, last_name = $2, time_zone = $3, constant_sync = $4, filter_rules = $5, \
             updated_at = $6, contact_email = $8, locale = $9, alerts_enabled = $10, calendar_days_ahead = $11 \
             WHERE id = $7 \
             RETURNING {USER_COLS}"
        );
        let row = self
            .client()
            .await?
            .query_opt(
                &sql,
                &[
                    &settings.first_name,
                    &settings.last_name,
                    &settings.time_zone,
                    &settings.constant_sync,
                    &rules,
                    &now,
                    &id.0,
                    &settings.contact_email,
                    &settings.locale,
                    &settings.alerts_enabled,
                    &i32::try_from(settings.calendar_days_ahead).unwrap_or(i32::MAX),
                ],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(user_row(&row))
    }

    async fn set_user_msisdn(&self, id: UserId, msisdn: &str, now: i64) -> Result<UserRecord> {
        let sql = format!("UPDATE users SET msisdn = $1, updated_at = $2 WHERE id = $3 RETURNING {USER_COLS}");
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&msisdn, &now, &id.0])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(user_row(&row))
    }

    async fn activate_user(&self, id: UserId, msisdn: &str, time_zone: &str, now: i64) -> Result<UserRecord> {
        let sql = format!(
            "UPDATE users SET msisdn = $1, time_zone = $2, status = CASE status WHEN 'suspended' THEN status \
             ELSE 'active' END, updated_at = $3 WHERE id = $4 RETURNING {USER_COLS}"
        );
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&msisdn, &time_zone, &now, &id.0])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(user_row(&row))
    }

    async fn insert_device(&self, new: NewDevice, now: i64) -> Result<DeviceRecord> {
        let id = DeviceId::random();
        self.client()
            .await?
            .execute(
                "INSERT INTO devices (id, user_id, credential_hash, name, device_type, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id.0, &new.user_id.0, &new.credential_hash, &new.name, &new.device_type, &now],
            )
            .await
            .map_err(pg_error)?;
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
    }

    async fn set_device_certificate(&self, id: DeviceId, serial: &str, not_after: i64) -> Result<()> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE devices SET certificate_serial = $1, certificate_not_after = $2 WHERE id = $3",
                &[&serial, &not_after, &id.0],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn device_by_id(&self, id: DeviceId) -> Result<Option<DeviceRecord>> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1");
        Ok(self.client().await?.query_opt(&sql, &[&id.0]).await.map_err(pg_error)?.map(|r| device_row(&r)))
    }

    async fn device_login(&self, id: DeviceId) -> Result<Option<DeviceLogin>> {
        let c = self.client().await?;
        // Prepared once per pooled connection: a reconnect storm runs this per device.
        let stmt = c.prepare_cached(DEVICE_LOGIN_SQL).await.map_err(pg_error)?;
        Ok(c.query_opt(&stmt, &[&id.0]).await.map_err(pg_error)?.map(|r| {
            let status: String = r.get(6);
            DeviceLogin {
                device_id: DeviceId(r.get(0)),
                user_id: UserId(r.get(1)),
                ves_id: VesId(r.get(2)),
                license_id: LicenseId(r.get(3)),
                credential_hash: r.get(4),
                revoked_at: r.get(5),
                user_status: UserStatus::parse(&status).unwrap_or(UserStatus::Suspended),
                license_suspended: r.get(7),
                license_expires_at: r.get(8),
                wipe_requested_at: r.get(9),
                user_access: Features::from_bits(r.get::<_, i32>(10).into()),
                license_features: Features::from_bits(r.get::<_, i32>(11).into()),
                certificate_serial: r.get(12),
                license_requires_certificate: r.get(13),
            }
        }))
    }

    async fn devices_by_ves(&self, ves: VesId) -> Result<Vec<(DeviceId, UserId)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT d.id, d.user_id FROM devices d JOIN users u ON u.id = d.user_id \
                 WHERE u.ves_id = $1 AND d.revoked_at IS NULL AND d.wipe_requested_at IS NULL",
                &[&ves.0],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| (DeviceId(r.get(0)), UserId(r.get(1)))).collect())
    }

    async fn device_records_by_ves(&self, ves: VesId) -> Result<Vec<DeviceRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT d.id, d.user_id, d.credential_hash, d.name, d.device_type, d.created_at, d.revoked_at, \
                 d.wipe_requested_at, d.wiped_at, d.last_seen_at, d.certificate_serial, d.certificate_not_after \
                 FROM devices d JOIN users u ON u.id = d.user_id \
                 WHERE u.ves_id = $1 AND d.revoked_at IS NULL AND d.wipe_requested_at IS NULL \
                 ORDER BY d.created_at, d.id",
                &[&ves.0],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(device_row).collect())
    }

    async fn insert_recovery_token(&self, token_hash: &[u8], user: UserId, now: i64, expires_at: i64) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        tx.execute("DELETE FROM recovery_tokens WHERE expires_at <= $1", &[&now]).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO recovery_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[&token_hash, &user.0, &now, &expires_at],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn take_recovery_token(&self, token_hash: &[u8], now: i64) -> Result<Option<UserId>> {
        // One statement: of two requests racing with the same token, one deletes the row.
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM recovery_tokens WHERE token_hash = $1 RETURNING user_id, expires_at",
                &[&token_hash],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.and_then(|r| (now < r.get::<_, i64>(1)).then(|| UserId(r.get(0)))))
    }

    async fn recovery_tokens_since(&self, user: UserId, since: i64) -> Result<u32> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT COUNT(*) FROM recovery_tokens WHERE user_id = $1 AND created_at >= $2",
                &[&user.0, &since],
            )
            .await
            .map_err(pg_error)?;
        Ok(u32::try_from(row.get::<_, i64>(0)).unwrap_or(u32::MAX))
    }

    async fn secret_question(&self, user: UserId) -> Result<Option<SecretQuestion>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT secret_question, secret_answer_hash FROM users WHERE id = $1", &[&user.0])
            .await
            .map_err(pg_error)?;
        Ok(row.and_then(|r| {
            let (question, answer_hash): (Option<String>, Option<String>) = (r.get(0), r.get(1));
            Some(SecretQuestion { question: question?, answer_hash: answer_hash? })
        }))
    }

    async fn set_secret_question(&self, user: UserId, question: Option<&SecretQuestion>, now: i64) -> Result<()> {
        let (q, h) = (question.map(|q| q.question.as_str()), question.map(|q| q.answer_hash.as_str()));
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE users SET secret_question = $1, secret_answer_hash = $2, updated_at = $3 WHERE id = $4",
                &[&q, &h, &now, &user.0],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn devices_of_user(&self, user: UserId) -> Result<Vec<DeviceRecord>> {
        let sql = format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE user_id = $1 AND (revoked_at IS NULL OR wiped_at IS NOT NULL) \
             ORDER BY created_at, id"
        );
        let rows = self.client().await?.query(&sql, &[&user.0]).await.map_err(pg_error)?;
        Ok(rows.iter().map(device_row).collect())
    }

    async fn rename_device(&self, user: UserId, device: DeviceId, name: &str) -> Result<DeviceRecord> {
        let sql = format!(
            "UPDATE devices SET name = $1 WHERE id = $2 AND user_id = $3 AND {LIVE_DEVICE} RETURNING {DEVICE_COLS}"
        );
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&name, &device.0, &user.0])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(device_row(&row))
    }

    async fn revoke_device(&self, user: UserId, device: DeviceId, now: i64) -> Result<()> {
        let n = self
            .client()
            .await?
            .execute(
                &format!("UPDATE devices SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND {LIVE_DEVICE}"),
                &[&now, &device.0, &user.0],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn request_device_wipe(&self, user: UserId, device: DeviceId, now: i64) -> Result<()> {
        let n = self
            .client()
            .await?
            .execute(
                &format!("UPDATE devices SET wipe_requested_at = $1 WHERE id = $2 AND user_id = $3 AND {LIVE_DEVICE}"),
                &[&now, &device.0, &user.0],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn record_devices_seen(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        // One statement per batch: the ids and times as two arrays, joined by position.
        let ids: Vec<_> = seen.iter().map(|(d, _)| d.0).collect();
        let times: Vec<i64> = seen.iter().map(|(_, t)| *t).collect();
        self.client()
            .await?
            .execute(
                "UPDATE devices d SET last_seen_at = GREATEST(COALESCE(d.last_seen_at, 0), v.at) \
                 FROM unnest($1::uuid[], $2::bigint[]) AS v(id, at) WHERE d.id = v.id",
                &[&ids, &times],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn complete_device_wipe(&self, device: DeviceId, now: i64) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE devices SET wiped_at = $1, revoked_at = $1 \
                 WHERE id = $2 AND wipe_requested_at IS NOT NULL AND wiped_at IS NULL",
                &[&now, &device.0],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn approve_msisdn(&self, msisdn: &str, approved_by: &str, now: i64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO msisdn_approvals (msisdn, approved_by, approved_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (msisdn) DO UPDATE SET approved_by = EXCLUDED.approved_by, approved_at = EXCLUDED.approved_at",
                &[&msisdn, &approved_by, &now],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn approve_msisdns(&self, msisdns: &[String], approved_by: &str, now: i64) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let insert = tx
            .prepare(
                "INSERT INTO msisdn_approvals (msisdn, approved_by, approved_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg_error)?;
        let mut added = 0;
        for m in msisdns {
            added += tx.execute(&insert, &[m, &approved_by, &now]).await.map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(added)
    }

    async fn revoke_msisdn(&self, msisdn: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM msisdn_approvals WHERE msisdn = $1", &[&msisdn])
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn msisdn_approvals(
        &self,
        search: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<MsisdnApprovalRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT msisdn, approved_by, approved_at FROM msisdn_approvals \
                 WHERE ($1::text IS NULL OR strpos(msisdn, $1) > 0) ORDER BY msisdn LIMIT $2 OFFSET $3",
                &[&search, &i64::from(limit), &i64::from(offset)],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| MsisdnApprovalRecord { msisdn: r.get(0), approved_by: r.get(1), approved_at: r.get(2) })
            .collect())
    }

    async fn msisdn_approved(&self, msisdn: &str) -> Result<bool> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT 1 FROM msisdn_approvals WHERE msisdn = $1", &[&msisdn])
            .await
            .map_err(pg_error)?;
        Ok(row.is_some())
    }

    async fn insert_operator(&self, operator: &OperatorRecord, recovery_code_hashes: &[Vec<u8>]) -> Result<()> {
        let o = operator;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        tx.execute(
            &format!("INSERT INTO operators ({OPERATOR_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
            &[
                &o.id,
                &o.name,
                &o.role.as_str(),
                &o.password_hash,
                &o.totp_secret,
                &o.totp_last_step,
                &o.disabled,
                &o.created_at,
                &o.created_by,
            ],
        )
        .await
        .map_err(pg_error)?;
        for hash in recovery_code_hashes {
            tx.execute("INSERT INTO operator_recovery_codes (code_hash, operator_id) VALUES ($1, $2)", &[hash, &o.id])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn operator_by_name(&self, name: &str) -> Result<Option<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLS} FROM operators WHERE name = $1");
        Ok(self.client().await?.query_opt(&sql, &[&name]).await.map_err(pg_error)?.map(|r| operator_row(&r)))
    }

    async fn operators(&self) -> Result<Vec<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLS} FROM operators ORDER BY name");
        Ok(self.client().await?.query(&sql, &[]).await.map_err(pg_error)?.iter().map(operator_row).collect())
    }

    async fn use_totp_step(&self, operator_id: &str, step: i64) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE operators SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1",
                &[&step, &operator_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn use_recovery_code(&self, operator_id: &str, code_hash: &[u8], now: i64) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE operator_recovery_codes SET used_at = $1 \
                 WHERE code_hash = $2 AND operator_id = $3 AND used_at IS NULL",
                &[&now, &code_hash, &operator_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn append_audit(&self, e: AuditEvent) -> Result<()> {
        let changes = crate::model::changes_json(&e.changes);
        self.client()
            .await?
            .execute(
                "INSERT INTO audit_log (at, actor, role, source, action, subject, detail, changes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&e.at, &e.actor, &e.role, &e.source, &e.action, &e.subject, &e.detail, &changes],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn set_operator_disabled(&self, name: &str, disabled: bool) -> Result<OperatorRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let sql = format!("UPDATE operators SET disabled = $1 WHERE name = $2 RETURNING {OPERATOR_COLS}");
        let operator = tx
            .query_opt(&sql, &[&disabled, &name])
            .await
            .map_err(pg_error)?
            .map(|r| operator_row(&r))
            .ok_or(StoreError::NotFound)?;
        if disabled {
            tx.execute("DELETE FROM operator_tokens WHERE operator_id = $1", &[&operator.id])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(operator)
    }

    async fn operator_by_id(&self, id: &str) -> Result<Option<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLS} FROM operators WHERE id = $1");
        Ok(self.client().await?.query_opt(&sql, &[&id]).await.map_err(pg_error)?.map(|r| operator_row(&r)))
    }

    async fn insert_operator_token(&self, token_hash: &[u8], t: &OperatorToken) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        tx.execute("DELETE FROM operator_tokens WHERE expires_at <= $1", &[&t.created_at]).await.map_err(pg_error)?;
        tx.execute(
            &format!(
                "INSERT INTO operator_tokens (token_hash, {TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            &[
                &token_hash,
                &t.id,
                &t.operator_id,
                &t.kind.as_str(),
                &t.scope.as_str(),
                &t.label,
                &t.created_at,
                &t.last_used_at,
                &t.expires_at,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn touch_operator_token(
        &self,
        token_hash: &[u8],
        now: i64,
        idle_since: i64,
    ) -> Result<Option<(OperatorToken, OperatorRecord)>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let sql = format!("SELECT {TOKEN_COLS} FROM operator_tokens WHERE token_hash = $1 FOR UPDATE");
        let Some(mut t) = tx.query_opt(&sql, &[&token_hash]).await.map_err(pg_error)?.map(|r| token_row(&r)) else {
            return Ok(None);
        };
        if now >= t.expires_at || t.last_used_at < idle_since {
            tx.execute("DELETE FROM operator_tokens WHERE token_hash = $1", &[&token_hash]).await.map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            return Ok(None);
        }
        let sql = format!("SELECT {OPERATOR_COLS} FROM operators WHERE id = $1");
        let Some(operator) = tx.query_opt(&sql, &[&t.operator_id]).await.map_err(pg_error)?.map(|r| operator_row(&r))
        else {
            return Ok(None);
        };
        tx.execute("UPDATE operator_tokens SET last_used_at = $1 WHERE token_hash = $2", &[&now, &token_hash])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        t.last_used_at = now;
        Ok(Some((t, operator)))
    }

    async fn operator_tokens(&self, operator_id: &str, now: i64) -> Result<Vec<OperatorToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM operator_tokens WHERE operator_id = $1 AND expires_at > $2 \
             ORDER BY created_at DESC, id"
        );
        let rows = self.client().await?.query(&sql, &[&operator_id, &now]).await.map_err(pg_error)?;
        Ok(rows.iter().map(token_row).collect())
    }

    async fn delete_operator_token(&self, operator_id: &str, id: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM operator_tokens WHERE id = $1 AND operator_id = $2", &[&id, &operator_id])
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn delete_operator_token_by_hash(&self, token_hash: &[u8]) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM operator_tokens WHERE token_hash = $1", &[&token_hash])
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn grant_license(&self, license: LicenseId, operator_id: &str) -> Result<()> {
        let r = self
            .client()
            .await?
            .execute(
                "INSERT INTO license_operators (license_id, operator_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&license.0, &operator_id],
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(StoreError::NotFound)
            }
            Err(e) => Err(pg_error(e)),
        }
    }

    async fn license_grantees(&self, license: LicenseId) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT operator_id FROM license_operators WHERE license_id = $1 ORDER BY operator_id",
                &[&license.0],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn licenses_granted_to(&self, operator_id: &str) -> Result<Vec<License>> {
        let sql = format!(
            "SELECT {LICENSE_COLS} FROM licenses l \
             JOIN license_operators g ON g.license_id = l.id WHERE g.operator_id = $1 ORDER BY l.name"
        );
        let rows = self.client().await?.query(&sql, &[&operator_id]).await.map_err(pg_error)?;
        Ok(rows.iter().map(license_row).collect())
    }

    async fn update_license(&self, id: LicenseId, change: &LicenseChange) -> Result<License> {
        let c = self.client().await?;
        let max_users = change.max_users.map(|m| m.min(i32::MAX as u32) as i32);
        let n = c
            .execute(
                "UPDATE licenses SET \
                 max_users = COALESCE($2, max_users), \
                 expires_at = CASE WHEN $3 THEN $4 ELSE expires_at END, \
                 suspended = COALESCE($5, suspended), \
                 secret_question_recovery = COALESCE($6, secret_question_recovery), \
                 features = COALESCE($7, features), \
                 admin_email = CASE WHEN $8 THEN $9 ELSE admin_email END, \
                 require_client_certificates = COALESCE($10, require_client_certificates) \
                 WHERE id = $1",
                &[
                    &id.0,
                    &max_users,
                    &change.expires_at.is_some(),
                    &change.expires_at.flatten(),
                    &change.suspended,
                    &change.secret_question_recovery,
                    &change.features.map(|f| f.bits() as i32),
                    &change.admin_email.is_some(),
                    &change.admin_email.clone().flatten(),
                    &change.require_client_certificates,
                ],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        get_license(&c, id).await?.ok_or(StoreError::NotFound)
    }

    async fn search_users(&self, f: &UserFilter) -> Result<Vec<UserRecord>> {
        let sql = format!(
            "SELECT {USER_COLS} FROM users WHERE \
             ($1::text IS NULL OR strpos(lower(email), lower($1)) > 0) \
             AND ($2::text IS NULL OR msisdn = $2) \
             AND ($3::text IS NULL OR strpos(lower(first_name || ' ' || last_name), lower($3)) > 0) \
             AND ($4::uuid IS NULL OR license_id = $4) \
             AND ($5::text IS NULL OR license_id IN (SELECT license_id FROM license_operators WHERE operator_id = $5)) \
             ORDER BY email LIMIT $6 OFFSET $7"
        );
        let rows = self
            .client()
            .await?
            .query(
                &sql,
                &[
                    &f.email,
                    &f.msisdn,
                    &f.name,
                    &f.license.map(|l| l.0),
                    &f.granted_to,
                    &i64::from(f.limit),
                    &i64::from(f.offset),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(user_row).collect())
    }

    async fn set_user_status(&self, id: UserId, status: UserStatus, now: i64) -> Result<UserRecord> {
        let sql = format!("UPDATE users SET status = $1, updated_at = $2 WHERE id = $3 RETURNING {USER_COLS}");
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&status.as_str(), &now, &id.0])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(user_row(&row))
    }

    async fn set_alert_delivery(&self, id: UserId, delivery: &AlertDelivery, now: i64) -> Result<UserRecord> {
        let json = serde_json::to_string(delivery).map_err(|e| StoreError::Backend(e.to_string()))?;
        let sql = format!("UPDATE users SET alert_delivery = $1, updated_at = $2 WHERE id = $3 RETURNING {USER_COLS}");
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&json, &now, &id.0])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(user_row(&row))
    }

    async fn set_user_access(&self, id: UserId, access: Features, now: i64) -> Result<UserRecord> {
        let sql = format!("UPDATE users SET access = $1, updated_at = $2 WHERE id = $3 RETURNING {USER_COLS}");
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&(access.bits() as i32), &now, &id.0])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(user_row(&row))
    }

    async fn insert_web_session(&self, token_hash: &[u8], session: &WebSession) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        tx.execute("DELETE FROM web_sessions WHERE expires_at < $1", &[&session.created_at]).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO web_sessions (token_hash, id, user_id, created_at, last_seen_at, expires_at, persistent, client) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &token_hash,
                &session.id,
                &session.user_id.0,
                &session.created_at,
                &session.last_seen_at,
                &session.expires_at,
                &session.persistent,
                &session.client,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn touch_web_session(&self, token_hash: &[u8], now: i64, idle_since: i64) -> Result<Option<WebSession>> {
        let c = self.client().await?;
        // One statement: the session is live and touched, or ended and deleted, or unknown.
        let live = c
            .query_opt(
                &format!(
                    "UPDATE web_sessions SET last_seen_at = $2 WHERE token_hash = $1 AND $2 < expires_at \
                     AND (persistent OR last_seen_at >= $3) RETURNING {WEB_SESSION_COLS}"
                ),
                &[&token_hash, &now, &idle_since],
            )
            .await
            .map_err(pg_error)?;
        if let Some(r) = live {
            return Ok(Some(web_session_row(&r)));
        }
        c.execute("DELETE FROM web_sessions WHERE token_hash = $1", &[&token_hash]).await.map_err(pg_error)?;
        Ok(None)
    }

    async fn delete_web_session(&self, token_hash: &[u8]) -> Result<bool> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM web_sessions WHERE token_hash = $1", &[&token_hash]).await.map_err(pg_error)? > 0)
    }

    async fn delete_web_session_by_id(&self, user: UserId, id: &str) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM web_sessions WHERE id = $1 AND user_id = $2", &[&id, &user.0])
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    async fn delete_web_sessions_of_user(&self, user: UserId, keep: Option<&[u8]>) -> Result<u64> {
        let c = self.client().await?;
        let keep: &[u8] = keep.unwrap_or_default();
        c.execute("DELETE FROM web_sessions WHERE user_id = $1 AND token_hash <> $2", &[&user.0, &keep])
            .await
            .map_err(pg_error)
    }

    async fn web_sessions_of_user(&self, user: UserId, now: i64) -> Result<Vec<WebSession>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {WEB_SESSION_COLS} FROM web_sessions WHERE user_id = $1 AND expires_at > $2 \
                     ORDER BY created_at DESC, id"
                ),
                &[&user.0, &now],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(web_session_row).collect())
    }

    async fn add_usage(&self, days: &[UsageDay], active: &[ActiveDeviceDay]) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let add = tx
            .prepare(
                "INSERT INTO usage_daily (day, license_id, frames_to_ves, bytes_to_ves, frames_to_devices, \
                 bytes_to_devices, undeliverable, device_seconds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (day, license_id) DO UPDATE SET \
                 frames_to_ves = usage_daily.frames_to_ves + excluded.frames_to_ves, \
                 bytes_to_ves = usage_daily.bytes_to_ves + excluded.bytes_to_ves, \
                 frames_to_devices = usage_daily.frames_to_devices + excluded.frames_to_devices, \
                 bytes_to_devices = usage_daily.bytes_to_devices + excluded.bytes_to_devices, \
                 undeliverable = usage_daily.undeliverable + excluded.undeliverable, \
                 device_seconds = usage_daily.device_seconds + excluded.device_seconds",
            )
            .await
            .map_err(pg_error)?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // Rows in key order, here and below: nodes flushing at the same moment take the
        // rows' locks in the same order and cannot deadlock.
        let mut days: Vec<&UsageDay> = days.iter().collect();
        days.sort_by_key(|d| (d.day, d.license_id.0));
        for d in days {
            tx.execute(
                &add,
                &[
                    &d.day,
                    &d.license_id.0,
                    &n(d.frames_to_ves),
                    &n(d.bytes_to_ves),
                    &n(d.frames_to_devices),
                    &n(d.bytes_to_devices),
                    &n(d.undeliverable),
                    &n(d.device_seconds),
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        // The active devices as arrays joined by position, one statement per batch: a
        // node's first flush of a day has a row for every live session, and a round trip
        // per row kept the node busy for as long as the flush took.
        let mut active: Vec<&ActiveDeviceDay> = active.iter().collect();
        active.sort_by_key(|a| (a.day, a.license_id.0, a.device_id.0));
        for chunk in active.chunks(ACTIVE_DEVICES_PER_STATEMENT) {
            let days: Vec<i64> = chunk.iter().map(|a| a.day).collect();
            let licenses: Vec<_> = chunk.iter().map(|a| a.license_id.0).collect();
            let devices: Vec<_> = chunk.iter().map(|a| a.device_id.0).collect();
            let users: Vec<_> = chunk.iter().map(|a| a.user_id.0).collect();
            tx.execute(
                "INSERT INTO usage_daily_devices (day, license_id, device_id, user_id) \
                 SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::uuid[]) ON CONFLICT DO NOTHING",
                &[&days, &licenses, &devices, &users],
            )
            .await
            .map_err(pg_error)?;
        }
        // Every license with an active device has its day's record, if only of zeros.
        let pairs: std::collections::BTreeSet<_> = active.iter().map(|a| (a.day, a.license_id.0)).collect();
        if !pairs.is_empty() {
            let (days, licenses): (Vec<i64>, Vec<_>) = pairs.into_iter().unzip();
            tx.execute(
                "INSERT INTO usage_daily (day, license_id) SELECT * FROM unnest($1::bigint[], $2::uuid[]) \
                 ON CONFLICT DO NOTHING",
                &[&days, &licenses],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn usage(&self, f: &UsageFilter) -> Result<Vec<UsageDay>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT u.day, u.license_id, u.frames_to_ves, u.bytes_to_ves, u.frames_to_devices, \
                 u.bytes_to_devices, u.undeliverable, u.device_seconds, \
                 (SELECT COUNT(*) FROM usage_daily_devices d WHERE d.day = u.day AND d.license_id = u.license_id), \
                 (SELECT COUNT(DISTINCT user_id) FROM usage_daily_devices d \
                  WHERE d.day = u.day AND d.license_id = u.license_id) \
                 FROM usage_daily u WHERE u.day BETWEEN $1 AND $2 \
                 AND ($3::uuid IS NULL OR u.license_id = $3) \
                 AND ($4::text IS NULL OR u.license_id IN (SELECT license_id FROM license_operators WHERE operator_id = $4)) \
                 ORDER BY u.day, u.license_id",
                &[&f.from_day, &f.to_day, &f.license.map(|l| l.0), &f.granted_to],
            )
            .await
            .map_err(pg_error)?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(rows
            .iter()
            .map(|r| UsageDay {
                day: r.get(0),
                license_id: LicenseId(r.get(1)),
                frames_to_ves: n(r.get(2)),
                bytes_to_ves: n(r.get(3)),
                frames_to_devices: n(r.get(4)),
                bytes_to_devices: n(r.get(5)),
                undeliverable: n(r.get(6)),
                device_seconds: n(r.get(7)),
                active_devices: n(r.get(8)),
                active_users: n(r.get(9)),
            })
            .collect())
    }

    async fn admit_alert(&self, user: UserId, hour: i64, max: u32) -> Result<bool> {
        if max == 0 {
            return Ok(false);
        }
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let c = self.client().await?;
        c.execute("DELETE FROM alert_counts WHERE user_id = $1 AND hour < $2", &[&user.0, &hour])
            .await
            .map_err(pg_error)?;
        // One statement: concurrent nodes serialise on the row, and the one that would
        // pass `max` updates nothing and gets no row back.
        let row = c
            .query_opt(
                "INSERT INTO alert_counts (user_id, hour, n) VALUES ($1, $2, 1) \
                 ON CONFLICT (user_id, hour) DO UPDATE SET n = alert_counts.n + 1 WHERE alert_counts.n < $3 \
                 RETURNING n",
                &[&user.0, &hour, &max],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.is_some())
    }

    async fn purge_audit(&self, before: i64) -> Result<u64> {
        let n =
            self.client().await?.execute("DELETE FROM audit_log WHERE at < $1", &[&before]).await.map_err(pg_error)?;
        Ok(n)
    }

    async fn audit_search(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE \
             ($1::text IS NULL OR actor = $1) \
             AND ($2::text IS NULL OR action = $2 OR (right($2, 1) = '.' AND left(action, length($2)) = $2)) \
             AND ($3::text IS NULL OR subject = $3) \
             AND ($4::bigint IS NULL OR at >= $4) AND ($5::bigint IS NULL OR at < $5) \
             AND ($6::bigint IS NULL OR id < $6) \
             ORDER BY id DESC LIMIT $7"
        );
        let rows = self
            .client()
            .await?
            .query(&sql, &[&f.actor, &f.action, &f.subject, &f.since, &f.until, &f.before_id, &i64::from(f.limit)])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(audit_row).collect())
    }
}
