//! The node's configuration: typed, documented, validated at start.
//!
//! Sources, later ones winning: built-in defaults, the TOML file given with `--config`,
//! environment variables `NOC_<SECTION>__<KEY>` (e.g. `NOC_DEVICE__MAX_FRAME_BYTES=131072`,
//! `NOC_DATA_DIR=/var/lib/noc`), then command-line flags. Unknown keys are errors, so a
//! typo never silently falls back to a default. Units are in key names.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use noc_actors::SessionConfig;
use noc_storage::{AccountPolicy, MsisdnApproval, PasswordHashing, ThrottlePolicy};
use serde::{Deserialize, Serialize};

/// Top-level sections, for filtering `NOC_*` environment variables.
const SECTIONS: &[&str] = &[
    "data_dir",
    "node_id",
    "postgres_url",
    "postgres",
    "redis_url",
    "cluster",
    "listen",
    "http",
    "public",
    "tls",
    "device_ca",
    "rts",
    "device",
    "accounts",
    "throttle",
    "web",
    "console",
    "mail",
    "alerts",
    "shutdown",
    "log",
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded store (`noc.sqlite3`) and the generated certificate.
    pub data_dir: PathBuf,
    /// This node's name in a cluster; defaults to `$HOSTNAME`, else a random name.
    pub node_id: Option<String>,
    /// PostgreSQL for accounts, licenses, devices and audit, shared by every node of a
    /// cluster, e.g. `postgres://noc:secret@db:5432/noc`. Unset: the embedded store.
    pub postgres_url: Option<SecretString>,
    pub postgres: PostgresConfig,
    /// Redis for session ownership and cross-node delivery, e.g. `redis://redis:6379/0`.
    /// Unset: an in-process bus (single node).
    pub redis_url: Option<SecretString>,
    pub cluster: ClusterConfig,
    pub listen: ListenConfig,
    pub http: HttpConfig,
    pub public: PublicConfig,
    pub tls: TlsConfig,
    pub device_ca: DeviceCaConfig,
    pub rts: RtsConfig,
    pub device: DeviceConfig,
    pub accounts: AccountsConfig,
    pub throttle: ThrottleConfig,
    pub web: WebConfig,
    pub console: ConsoleConfig,
    pub mail: MailConfig,
    pub alerts: AlertsConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

/// How the node writes its log (standard error).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `text` for people at a terminal; `json` (one object per line: `timestamp`, `level`,
/// `node`, `target`, `message` and the event's own fields, which never hold a secret or a
/// payload) for log pipelines, the Helm chart's default.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A value that must not appear in logs: `Debug` prints the URL with its password masked.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A URL with any `user:password@` password replaced by `***` (the rest of it says
    /// where the node connects, which an operator reading logs needs); anything that is
    /// not a URL (a password, a key) is `***` as a whole.
    pub fn redacted(&self) -> String {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &self.0[scheme + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &self.0[..scheme + 3], &self.0[at..]),
                    None => self.0.clone(),
                }
            }
            (Some(_), _) => self.0.clone(),
            (None, _) => "***".into(),
        }
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// PostgreSQL pool settings (used with `postgres_url`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Connections this node keeps.
    pub max_connections: usize,
    /// How long a login or activation waits for a free connection before a 503.
    pub wait_timeout_seconds: u64,
    /// Connect timeout of a new connection.
    pub connect_timeout_seconds: u64,
    /// PEM file of the CAs that sign the server's certificate, for TLS (`sslmode=require`
    /// in `postgres_url`). Unset: the public (webpki) roots.
    pub tls_ca_path: Option<PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        let o = noc_storage::PostgresOptions::default();
        Self {
            max_connections: o.max_connections,
            wait_timeout_seconds: o.wait_timeout.as_secs(),
            connect_timeout_seconds: o.connect_timeout.as_secs(),
            tls_ca_path: o.tls_ca_path,
        }
    }
}

/// Cluster membership and routing (used with `redis_url`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `standalone` (one Redis address in `redis_url`), `cluster` (Redis Cluster:
    /// comma-separated seed nodes in `redis_url`; the bus uses sharded pub/sub) or
    /// `sentinel` (a primary with replicas watched by Redis Sentinel: comma-separated
    /// sentinels in `redis_url`, whose credentials and database the primary shares).
    pub redis_mode: noc_cluster::RedisMode,
    /// The name the sentinels monitor the primary under (`sentinel` mode).
    pub redis_sentinel_master: String,
    /// A node that has not renewed its lease for this long is dead: nothing is routed to it.
    pub node_lease_seconds: u64,
    /// How often a node renews its lease and refreshes its view of live nodes.
    pub membership_interval_ms: u64,
    /// Expiry of session ownership keys; their owner renews them at a third of it.
    pub session_key_ttl_seconds: u64,
    /// How long a looked-up remote owner is trusted before it is looked up again (in the
    /// background while traffic to it flows; one unused for twice this is forgotten).
    pub owner_cache_ttl_seconds: u64,
    /// Bus messages received and not yet handled, and waiting to be published (per
    /// publishing thread: each worker has a publish queue of its own).
    pub bus_queue_messages: usize,
    /// Where this node accepts direct links from the other nodes, which then carry the
    /// bus's messages (frames) between nodes without the Redis hop; Redis still holds
    /// membership and ownership and carries what cannot go over a link. Unset: every
    /// cross-node message goes over Redis pub/sub. Needs `redis_url` and `link_key`.
    pub link_listen: Option<SocketAddr>,
    /// The `host:port` other nodes dial to reach `link_listen` (in Kubernetes, the pod's
    /// IP); unset: `link_listen` itself, which must then not be a wildcard address.
    pub link_advertise: Option<String>,
    /// The secret every node of the cluster shares to authenticate links and each frame
    /// on them (HMAC-SHA256), at least 32 bytes. Keep the link port on the cluster's own
    /// network: frames on a link are authenticated, not encrypted (their payloads are
    /// end-to-end encrypted between VES and device, as on Redis).
    pub link_key: Option<SecretString>,
    /// Bound of a link's dial and handshake; a node that cannot be linked in this time is
    /// reached over Redis and dialled again later.
    pub link_handshake_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let o = noc_cluster::RedisOptions::default();
        Self {
            redis_mode: o.mode,
            redis_sentinel_master: o.sentinel_master,
            node_lease_seconds: o.node_lease.as_secs(),
            membership_interval_ms: o.membership_interval.as_millis() as u64,
            session_key_ttl_seconds: o.session_key_ttl.as_secs(),
            owner_cache_ttl_seconds: o.owner_cache_ttl.as_secs(),
            bus_queue_messages: o.inbox_capacity,
            link_listen: None,
            link_advertise: None,
            link_key: None,
            link_handshake_timeout_ms: 1000,
        }
    }
}

/// Where the node listens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Public HTTPS: RTS protocol, account and device activation.
    pub http: SocketAddr,
    /// Device channel (TLS).
    pub device: SocketAddr,
    /// Plain HTTP: `/healthz`, `/readyz`, `/metrics`. Loopback unless you expose it on purpose.
    pub admin: SocketAddr,
    /// HTTPS for operators: the consoles (`/console`) and the admin API (`/admin/v1`), with
    /// the public listener's certificate. Loopback by default: operator interfaces belong
    /// on the carrier's own network (white paper §8.5), never on the public address.
    pub console: SocketAddr,
    /// Worker threads per listener; 0 means one per CPU.
    pub workers: usize,
}

/// Connection limits of the public HTTPS listener (`listen.http`), enforced before any
/// HTTP is parsed: a client that opens connections and never speaks must not hold the
/// listener for everyone else.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Deadline of a TLS handshake while handshakes are few; it shortens (down to
    /// 500 ms) once more than half of `max_concurrent_handshakes` are in progress.
    pub tls_handshake_timeout_ms: u64,
    /// TLS handshakes in progress at once on this node; more connections are closed.
    pub max_concurrent_handshakes: usize,
    /// TLS handshakes in progress at once from one source address.
    pub max_handshakes_per_source: u32,
    /// Open connections from one source address. A VES needs its data-channel
    /// concurrency plus one; raise it when many clients share an address (carrier NAT).
    pub max_connections_per_source: u32,
    /// Open connections on this listener, all sources together.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            tls_handshake_timeout_ms: 3000,
            max_concurrent_handshakes: 4096,
            max_handshakes_per_source: 64,
            max_connections_per_source: 256,
            max_connections: 20_000,
        }
    }
}

/// Addresses the node tells clients. Behind a load balancer these are the balancer's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublicConfig {
    /// Base URL of the public listener, e.g. `https://relay.example.net`. Default:
    /// `https://<listen.http>` with `localhost` for a wildcard address.
    pub url: Option<String>,
    /// Device-channel host told to devices at activation. Default: the host of `url`.
    pub device_host: Option<String>,
    /// Device-channel port told to devices. Default: the port of `listen.device`.
    pub device_port: Option<u16>,
}

/// Certificate and key of both TLS listeners.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. Unset: a self-signed certificate is generated in
    /// `<data_dir>/tls/` on first start and reused after.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
    /// Subject names of the generated certificate.
    pub self_signed_names: Vec<String>,
}

/// The device certification authority (seed 001; docs/certificates.md): a device that
/// activates with a certificate request gets a client certificate and this CA's
/// certificate, the management root. Unset on a node with the embedded store: a CA is
/// generated in `<data_dir>/device-ca/` on first start and kept. Unset with PostgreSQL
/// (a cluster, whose nodes must share one CA): no certificates are issued; give every
/// node the same files (a Secret).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceCaConfig {
    /// PEM certificate of the CA (a CA certificate; its subject is copied into what it
    /// signs).
    pub cert_path: Option<PathBuf>,
    /// PEM private key of the CA (PKCS#8).
    pub key_path: Option<PathBuf>,
}

/// The RTS protocol (white paper §4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtsConfig {
    /// HB period on the command channel.
    pub heartbeat_interval_seconds: u64,
    /// Lifetime of connect parameters and of a detached session.
    pub reply_time_seconds: u64,
    /// Items queued per command channel before frames are refused with `queue_full`.
    /// Acknowledgements, undeliverable notices and commands for the VES may take as many
    /// again, so that a backlog of frames does not push out what the VES waits for.
    pub send_queue_items: usize,
    /// A command channel that drains nothing for this long is detached (resumable).
    pub write_stall_timeout_seconds: u64,
    /// Largest HTTP request body (data channel, activation).
    pub max_body_bytes: usize,
    /// A request body must arrive whole within this; a slower one is answered 400 and its
    /// connection closed (a client trickling a body must not hold a connection).
    pub body_timeout_seconds: u64,
    /// Browse fetches one VES may have unanswered at once (docs/protocol.md §4.6); more
    /// are refused at once (the page says the server is busy), counted.
    pub max_fetches_in_flight: usize,
}

/// The device channel (white paper §7.2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// The relay heartbeats each device this often.
    pub heartbeat_interval_seconds: u64,
    /// A device silent this long is dropped (detected within one heartbeat interval).
    pub idle_timeout_seconds: u64,
    /// TLS accept + HELLO + AUTH must complete within this.
    pub handshake_timeout_seconds: u64,
    /// Largest frame (type byte + body), checked before anything is allocated.
    pub max_frame_bytes: u32,
    /// Frames queued per device before new ones are refused with `queue_full`.
    pub send_queue_frames: usize,
    /// A device whose socket takes no bytes for this long is disconnected.
    pub write_stall_timeout_seconds: u64,
    /// Authenticated device sessions per node.
    pub max_sessions: usize,
    /// Most plaintext taken from a connection per read, into a per-worker buffer; a
    /// connection keeps only the bytes of a frame still arriving (nothing while idle).
    pub read_buffer_bytes: usize,
}

/// Account rules (white paper §3.5–3.7, §6.3.4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// `open` or `list` (only MSISDNs approved with `noc admin msisdn approve`).
    pub msisdn_approval: MsisdnApproval,
    pub generated_password_length: usize,
    pub min_password_length: usize,
    /// argon2id cost.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Password-hashing workers, each holding `argon2_memory_kib` of working memory for
    /// good (so hashing never takes more than workers × memory); 0 = one per CPU.
    pub max_concurrent_hashes: usize,
    /// Password checks waiting for a worker; beyond it a login is answered busy
    /// (`503` / `service_unavailable` with a retry hint) at once.
    pub hash_queue: usize,
    /// A password check still waiting after this is answered busy too.
    pub hash_wait_timeout_ms: u64,
    /// How often the node re-reads license state and closes the live sessions (VES and
    /// devices) of licenses suspended or expired since, and counts the licenses with no
    /// VES connected (`noc_licenses_without_ves`); 0 disables both. Logins always check.
    pub license_check_interval_seconds: u64,
    /// How often the node adds what its sessions relayed (frames, bytes, connected time,
    /// active devices) to the per-day usage records of the licenses; also at shutdown.
    pub usage_flush_interval_seconds: u64,
    /// Audit events older than this are deleted by a daily purge (itself audited);
    /// 0 keeps them for ever.
    pub audit_retention_days: u64,
    /// How long a license-id token registers new VES installations after the license
    /// login that issued it (an installation registered with it is not affected).
    pub license_token_ttl_seconds: u64,
}

/// How password guessing is slowed down, on every password route (license login, account
/// and device activation, AUTH_PASSWORD). Failures are counted per source address and per
/// login name (whether the name exists or not); after the free ones, attempts of a name
/// must wait twice as long each time. Nothing is ever locked: device tokens are not
/// throttled, and a right password ends a name's waits. State is per node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Failures of one login name from one address before its attempts wait (1 s, 2 s …).
    pub free_failures_per_source: u32,
    /// Failures of one login name from all addresses before its attempts wait.
    pub free_failures_per_login: u32,
    /// The longest such wait.
    pub max_delay_seconds: u64,
    /// Failures one address may make in a burst, all names together (then `429`).
    pub source_failure_burst: u32,
    /// How many failures an address earns back per minute.
    pub source_failures_per_minute: u32,
    /// Names and addresses tracked at once; when full, attempts of new ones are refused
    /// until old entries expire.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        let p = ThrottlePolicy::default();
        Self {
            free_failures_per_source: p.free_failures_per_source,
            free_failures_per_login: p.free_failures_per_login,
            max_delay_seconds: p.max_delay.as_secs(),
            source_failure_burst: p.source_failure_burst,
            source_failures_per_minute: p.source_failures_per_minute,
            max_tracked: p.max_tracked,
        }
    }
}

/// The web portal for users on the public listener (white paper §6): sign-in sessions are
/// kept in the store, so every node serves every session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the portal's pages (`/`, `/login`, …) beside the RTS API.
    pub enabled: bool,
    /// A session ends after this long without a request (white paper §6.3: 15 minutes).
    pub session_idle_timeout_seconds: u64,
    /// A session ends this long after sign-in, however active.
    pub session_max_age_seconds: u64,
    /// "Keep me signed in" sessions skip the inactivity timeout and end this long after
    /// sign-in; 0 hides the option.
    pub persistent_session_max_age_seconds: u64,
    /// A browse page waits this long for the user's enterprise server, then says it did
    /// not answer.
    pub browse_timeout_seconds: u64,
}

/// The operators' consoles on `listen.console`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// A console sign-in ends after this long without a request.
    pub session_idle_timeout_seconds: u64,
    /// A console sign-in ends this long after it began, however active.
    pub session_max_age_seconds: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        let d = noc_console::ConsoleSettings::default();
        Self {
            session_idle_timeout_seconds: d.idle_timeout.as_secs(),
            session_max_age_seconds: d.max_session.as_secs(),
        }
    }
}

impl ConsoleConfig {
    pub fn settings(&self) -> noc_console::ConsoleSettings {
        noc_console::ConsoleSettings {
            idle_timeout: Duration::from_secs(self.session_idle_timeout_seconds),
            max_session: Duration::from_secs(self.session_max_age_seconds),
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        let p = noc_storage::WebSessionPolicy::default();
        Self {
            enabled: true,
            session_idle_timeout_seconds: p.idle_timeout.as_secs(),
            session_max_age_seconds: p.max_age.as_secs(),
            persistent_session_max_age_seconds: p.persistent_max_age.as_secs(),
            browse_timeout_seconds: 10,
        }
    }
}

/// New-mail alerts (white paper §4.7): what the node delivers to users' destinations
/// (mail through `[mail]`, HTTPS webhooks), how often and how it retries.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alerts one user gets at most per hour; more are dropped (counted).
    pub max_per_user_per_hour: u32,
    /// Deliveries waiting on this node; beyond it the enterprise server is told to retry.
    pub queue_deliveries: usize,
    /// A failed delivery is tried again after this, doubling each time.
    pub retry_initial_seconds: u64,
    /// Tries of one delivery in all.
    pub max_attempts: u32,
    /// A webhook must answer within this.
    pub webhook_timeout_seconds: u64,
    /// Certificate authorities (PEM) trusted for webhooks instead of the public web PKI
    /// (webhooks on a private network).
    pub webhook_ca_file: Option<PathBuf>,
    /// Let webhooks reach loopback, private, link-local and other non-public addresses.
    /// Off: a user cannot make the relay post into the carrier's own network.
    pub webhook_allow_private: bool,
    /// The carrier's SMSC for SMS and WAP Push alerts (SMPP 3.4, plain TCP on the carrier's
    /// network); unset: no SMS or WAP Push destinations are offered.
    pub smpp_host: Option<String>,
    pub smpp_port: u16,
    pub smpp_system_id: String,
    pub smpp_password: Option<SecretString>,
    pub smpp_system_type: String,
    /// The sender phones show (alphanumeric, at most 11 characters).
    pub smpp_source_addr: String,
    /// Submits per second at most (the SMSC's window).
    pub smpp_max_per_second: u32,
    /// The link is checked this often (`enquire_link`).
    pub smpp_enquire_link_seconds: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            max_per_user_per_hour: 20,
            queue_deliveries: 10_000,
            retry_initial_seconds: 5,
            max_attempts: 4,
            webhook_timeout_seconds: 10,
            webhook_ca_file: None,
            webhook_allow_private: false,
            smpp_host: None,
            smpp_port: 2775,
            smpp_system_id: "noc".into(),
            smpp_password: None,
            smpp_system_type: String::new(),
            smpp_source_addr: "NOC".into(),
            smpp_max_per_second: 10,
            smpp_enquire_link_seconds: 30,
        }
    }
}

/// Mail the relay sends itself: password-recovery links of the web portal. Without
/// `smtp_host` the portal offers no recovery by mail.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The submission server, e.g. `smtp.carrier.example`.
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    /// `starttls` (required), `tls` (implicit, port 465) or `none` (a relay on a trusted
    /// network only).
    pub smtp_security: SmtpSecurity,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<SecretString>,
    /// Connecting and sending one message may take this long.
    pub smtp_timeout_seconds: u64,
    /// The `From` of the relay's mail.
    pub from: String,
}

/// How the relay talks to its SMTP server.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    None,
    Starttls,
    Tls,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            smtp_security: SmtpSecurity::Starttls,
            smtp_username: None,
            smtp_password: None,
            smtp_timeout_seconds: 10,
            from: "NOC <noc@localhost>".into(),
        }
    }
}

/// Graceful shutdown on SIGTERM/SIGINT.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Reconnect hints to peers are spread over this window.
    pub drain_seconds: u64,
    /// The whole drain — sessions closed and their CLOSE frames written, registrations
    /// given up, in-flight HTTP requests finished — ends within this; then the process
    /// exits.
    pub grace_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("noc-data"),
            node_id: None,
            postgres_url: None,
            postgres: PostgresConfig::default(),
            redis_url: None,
            cluster: ClusterConfig::default(),
            listen: ListenConfig::default(),
            http: HttpConfig::default(),
            public: PublicConfig::default(),
            tls: TlsConfig::default(),
            device_ca: DeviceCaConfig::default(),
            rts: RtsConfig::default(),
            device: DeviceConfig::default(),
            accounts: AccountsConfig::default(),
            throttle: ThrottleConfig::default(),
            web: WebConfig::default(),
            console: ConsoleConfig::default(),
            mail: MailConfig::default(),
            alerts: AlertsConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([0, 0, 0, 0], 8443)),
            device: SocketAddr::from(([0, 0, 0, 0], 8444)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            console: SocketAddr::from(([127, 0, 0, 1], 8445)),
            workers: 0,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { cert_path: None, key_path: None, self_signed_names: vec!["localhost".into(), "127.0.0.1".into()] }
    }
}

impl Default for RtsConfig {
    fn default() -> Self {
        let s = SessionConfig::default();
        Self {
            heartbeat_interval_seconds: s.ves_heartbeat_interval.as_secs(),
            reply_time_seconds: s.ves_reply_time.as_secs(),
            send_queue_items: s.ves_send_queue_items,
            write_stall_timeout_seconds: s.ves_write_stall_timeout.as_secs(),
            max_body_bytes: 1024 * 1024,
            body_timeout_seconds: 30,
            max_fetches_in_flight: noc_actors::DEFAULT_FETCHES_IN_FLIGHT,
        }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let s = SessionConfig::default();
        Self {
            heartbeat_interval_seconds: s.device_heartbeat_interval.as_secs(),
            idle_timeout_seconds: s.device_idle_timeout.as_secs(),
            handshake_timeout_seconds: 10,
            max_frame_bytes: s.max_frame_bytes,
            send_queue_frames: s.device_send_queue_frames,
            write_stall_timeout_seconds: s.device_write_stall_timeout.as_secs(),
            max_sessions: s.max_device_sessions,
            read_buffer_bytes: s.device_read_buffer_bytes,
        }
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        let p = AccountPolicy::default();
        Self {
            msisdn_approval: p.msisdn_approval,
            generated_password_length: p.generated_password_length,
            min_password_length: p.min_password_length,
            argon2_memory_kib: p.hashing.memory_kib,
            argon2_iterations: p.hashing.iterations,
            argon2_parallelism: p.hashing.parallelism,
            max_concurrent_hashes: 0,
            hash_queue: p.hashing.queue,
            hash_wait_timeout_ms: u64::try_from(p.hashing.max_wait.as_millis()).unwrap_or(u64::MAX),
            license_check_interval_seconds: 30,
            usage_flush_interval_seconds: 60,
            audit_retention_days: 400,
            license_token_ttl_seconds: p.license_token_ttl.as_secs(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_seconds: 10, grace_seconds: 5 }
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// `host:port` as other nodes dial it; a bare IPv6 address before the port (what
/// `$(POD_IP):port` gives in an IPv6 Kubernetes cluster) gets its brackets.
fn dialable(advertise: &str) -> Option<String> {
    let (host, port) = advertise.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => Some(SocketAddr::from((ip, port)).to_string()),
        Err(_) => Some(advertise.to_string()),
    }
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

impl Config {
    /// Defaults, then `file`, then `NOC_*` environment variables. Validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only keys of known sections: other NOC_* variables (NOC_CONFIG, a test's own)
        // are not configuration. Names are case-insensitive (NOC_DEVICE__MAX_FRAME_BYTES).
        fig = fig.merge(Env::prefixed("NOC_").split("__").lowercase(true).filter(|k| {
            let first = k.as_str().split('.').next().unwrap_or("");
            SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
        }));
        let config: Config = fig.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document alone (no environment), validated.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The cluster's links: all of their settings or none.
    fn validate_links(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let Some(listen) = c.link_listen else {
            if c.link_key.is_some() || c.link_advertise.is_some() {
                return Err(invalid("cluster.link_listen", "must be set where link_key or link_advertise is"));
            }
            return Ok(());
        };
        if self.redis_url.is_none() {
            return Err(invalid("cluster.link_listen", "links join the nodes of a cluster: set redis_url too"));
        }
        match &c.link_key {
            None => return Err(invalid("cluster.link_key", "must be set with cluster.link_listen")),
            Some(k) if k.expose().len() < noc_cluster::LINK_KEY_MIN_BYTES => {
                return Err(invalid(
                    "cluster.link_key",
                    format!("must be at least {} bytes", noc_cluster::LINK_KEY_MIN_BYTES),
                ));
            }
            Some(_) => {}
        }
        match &c.link_advertise {
            None if listen.ip().is_unspecified() => {
                return Err(invalid(
                    "cluster.link_advertise",
                    "must be set when cluster.link_listen is a wildcard address (other nodes cannot dial it)",
                ));
            }
            Some(a) if dialable(a).is_none() => return Err(invalid("cluster.link_advertise", "must be host:port")),
            _ => {}
        }
        if !(100..=60_000).contains(&c.link_handshake_timeout_ms) {
            return Err(invalid("cluster.link_handshake_timeout_ms", "must be between 100 and 60000"));
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.device;
        if d.heartbeat_interval_seconds == 0 {
            return Err(invalid("device.heartbeat_interval_seconds", "must be at least 1"));
        }
        if d.idle_timeout_seconds < d.heartbeat_interval_seconds {
            return Err(invalid("device.idle_timeout_seconds", "must be at least device.heartbeat_interval_seconds"));
        }
        if d.handshake_timeout_seconds == 0 {
            return Err(invalid("device.handshake_timeout_seconds", "must be at least 1"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&d.max_frame_bytes) {
            return Err(invalid("device.max_frame_bytes", "must be between 1024 and 16777216"));
        }
        if d.send_queue_frames == 0 || d.max_sessions == 0 || d.write_stall_timeout_seconds == 0 {
            return Err(invalid(
                "device",
                "send_queue_frames, max_sessions and write_stall_timeout_seconds must be positive",
            ));
        }
        if !(64..=1024 * 1024).contains(&d.read_buffer_bytes) {
            return Err(invalid("device.read_buffer_bytes", "must be between 64 and 1048576"));
        }
        self.validate_links()?;
        let r = &self.rts;
        if r.heartbeat_interval_seconds == 0 || r.reply_time_seconds == 0 {
            return Err(invalid("rts", "heartbeat_interval_seconds and reply_time_seconds must be at least 1"));
        }
        if r.send_queue_items < 16 {
            return Err(invalid("rts.send_queue_items", "must be at least 16"));
        }
        if r.write_stall_timeout_seconds == 0 {
            return Err(invalid("rts.write_stall_timeout_seconds", "must be positive"));
        }
        let h = &self.http;
        if !(100..=60_000).contains(&h.tls_handshake_timeout_ms) {
            return Err(invalid("http.tls_handshake_timeout_ms", "must be between 100 and 60000"));
        }
        if h.max_concurrent_handshakes == 0 || h.max_handshakes_per_source == 0 {
            return Err(invalid("http", "max_concurrent_handshakes and max_handshakes_per_source must be positive"));
        }
        if h.max_connections_per_source == 0 || h.max_connections == 0 {
            return Err(invalid("http", "max_connections_per_source and max_connections must be positive"));
        }
        if r.max_body_bytes < 1024 {
            return Err(invalid("rts.max_body_bytes", "must be at least 1024"));
        }
        if !(1..=600).contains(&r.body_timeout_seconds) {
            return Err(invalid("rts.body_timeout_seconds", "must be between 1 and 600"));
        }
        let a = &self.accounts;
        if !(60..=366 * 86_400).contains(&a.license_token_ttl_seconds) {
            return Err(invalid("accounts.license_token_ttl_seconds", "must be between 60 and 31622400 (366 days)"));
        }
        if !(8..=128).contains(&a.generated_password_length) {
            return Err(invalid("accounts.generated_password_length", "must be between 8 and 128"));
        }
        if !(1..=128).contains(&a.min_password_length) {
            return Err(invalid("accounts.min_password_length", "must be between 1 and 128"));
        }
        if a.argon2_memory_kib < 8 * a.argon2_parallelism.max(1)
            || a.argon2_iterations == 0
            || a.argon2_parallelism == 0
        {
            return Err(invalid(
                "accounts.argon2_*",
                "argon2 needs iterations >= 1, parallelism >= 1, memory >= 8 KiB per lane",
            ));
        }
        if a.max_concurrent_hashes > 256 {
            return Err(invalid("accounts.max_concurrent_hashes", "must be at most 256 (0 = one per CPU)"));
        }
        let t = &self.throttle;
        if t.source_failure_burst == 0 || t.source_failures_per_minute == 0 || t.max_tracked < 1000 {
            return Err(invalid(
                "throttle",
                "source_failure_burst and source_failures_per_minute must be positive, max_tracked at least 1000",
            ));
        }
        if !(1..=86_400).contains(&t.max_delay_seconds) {
            return Err(invalid("throttle.max_delay_seconds", "must be between 1 and 86400"));
        }
        let w = &self.web;
        if !(1..=86_400).contains(&w.session_idle_timeout_seconds) {
            return Err(invalid("web.session_idle_timeout_seconds", "must be between 1 and 86400"));
        }
        if w.session_max_age_seconds < w.session_idle_timeout_seconds || w.session_max_age_seconds > 7 * 86_400 {
            return Err(invalid(
                "web.session_max_age_seconds",
                "must be at least the idle timeout and at most 604800 (7 days)",
            ));
        }
        let al = &self.alerts;
        if al.max_attempts == 0 || al.max_attempts > 20 || al.queue_deliveries == 0 {
            return Err(invalid("alerts", "max_attempts must be 1 to 20 and queue_deliveries positive"));
        }
        if al.smpp_host.is_some()
            && (al.smpp_system_id.len() > 15
                || al.smpp_password.as_ref().is_some_and(|p| p.expose().len() > 8)
                || al.smpp_source_addr.is_empty()
                || al.smpp_source_addr.len() > 11
                || !(1..=1000).contains(&al.smpp_max_per_second)
                || !(5..=3600).contains(&al.smpp_enquire_link_seconds))
        {
            return Err(invalid(
                "alerts.smpp_*",
                "system_id at most 15 characters, password at most 8, source_addr 1 to 11, max_per_second 1 to 1000, \
                 enquire_link_seconds 5 to 3600",
            ));
        }
        if !(1..=300).contains(&al.webhook_timeout_seconds) || al.retry_initial_seconds > 3600 {
            return Err(invalid(
                "alerts",
                "webhook_timeout_seconds must be 1 to 300, retry_initial_seconds at most 3600",
            ));
        }
        if !(1..=120).contains(&w.browse_timeout_seconds) {
            return Err(invalid("web.browse_timeout_seconds", "must be between 1 and 120"));
        }
        if !(1..=10_000).contains(&self.rts.max_fetches_in_flight) {
            return Err(invalid("rts.max_fetches_in_flight", "must be between 1 and 10000"));
        }
        if w.persistent_session_max_age_seconds > 400 * 86_400 {
            return Err(invalid("web.persistent_session_max_age_seconds", "must be at most 34560000 (400 days)"));
        }
        if !(1..=3600).contains(&self.accounts.usage_flush_interval_seconds) {
            return Err(invalid("accounts.usage_flush_interval_seconds", "must be between 1 and 3600"));
        }
        if self.accounts.audit_retention_days != 0 && self.accounts.audit_retention_days < 30 {
            return Err(invalid("accounts.audit_retention_days", "must be 0 (keep for ever) or at least 30"));
        }
        let c = &self.console;
        if !(60..=86_400).contains(&c.session_idle_timeout_seconds) {
            return Err(invalid("console.session_idle_timeout_seconds", "must be between 60 and 86400"));
        }
        if c.session_max_age_seconds < c.session_idle_timeout_seconds || c.session_max_age_seconds > 86_400 {
            return Err(invalid(
                "console.session_max_age_seconds",
                "must be at least the idle timeout and at most 86400 (a day)",
            ));
        }
        let m = &self.mail;
        if m.smtp_host.as_ref().is_some_and(|h| h.trim().is_empty() || h.contains(char::is_whitespace)) {
            return Err(invalid("mail.smtp_host", "must be a host name"));
        }
        if m.smtp_timeout_seconds == 0 || m.smtp_port == 0 {
            return Err(invalid("mail", "smtp_port and smtp_timeout_seconds must be positive"));
        }
        if m.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid("mail.from", "must be a mailbox such as \"NOC <noc@carrier.example>\""));
        }
        if a.hash_queue == 0 || a.hash_wait_timeout_ms == 0 {
            return Err(invalid("accounts", "hash_queue and hash_wait_timeout_ms must be positive"));
        }
        let sslmode = self.postgres_url.as_ref().and_then(|u| noc_storage::postgres::url_sslmode(u.expose()));
        if let Some(mode) = sslmode
            && !matches!(mode, "disable" | "prefer" | "require")
        {
            return Err(invalid(
                "postgres_url",
                "sslmode must be disable, prefer or require (TLS always verifies the server certificate)",
            ));
        }
        if let Some(path) = &self.postgres.tls_ca_path
            && !path.is_file()
        {
            return Err(invalid("postgres.tls_ca_path", "must be a readable PEM file"));
        }
        if self.postgres_url.as_ref().is_some_and(|u| !u.expose().starts_with("postgres")) {
            return Err(invalid("postgres_url", "must be a postgres:// or postgresql:// URL"));
        }
        if self.redis_url.as_ref().is_some_and(|u| u.expose().split(',').any(|u| u.trim().starts_with("rediss://"))) {
            return Err(invalid(
                "redis_url",
                "rediss:// (TLS) is not supported by this version; reach Redis over a private network or a TLS tunnel",
            ));
        }
        if self.redis_url.as_ref().is_some_and(|u| !u.expose().starts_with("redis://")) {
            return Err(invalid("redis_url", "must be a redis:// URL"));
        }
        let c = &self.cluster;
        if c.redis_mode == noc_cluster::RedisMode::Sentinel
            && (c.redis_sentinel_master.is_empty() || c.redis_sentinel_master.contains(char::is_whitespace))
        {
            return Err(invalid("cluster.redis_sentinel_master", "must name the monitored primary (no spaces)"));
        }
        if c.node_lease_seconds == 0 || c.session_key_ttl_seconds < 3 || c.bus_queue_messages == 0 {
            return Err(invalid(
                "cluster",
                "node_lease_seconds, session_key_ttl_seconds (>= 3) and bus_queue_messages must be positive",
            ));
        }
        if c.membership_interval_ms == 0 || c.membership_interval_ms >= c.node_lease_seconds * 1000 {
            return Err(invalid("cluster.membership_interval_ms", "must be positive and shorter than the node lease"));
        }
        if self.postgres.max_connections == 0 || self.postgres.wait_timeout_seconds == 0 {
            return Err(invalid("postgres", "max_connections and wait_timeout_seconds must be positive"));
        }
        if self.tls.cert_path.is_some() != self.tls.key_path.is_some() {
            return Err(invalid("tls", "cert_path and key_path go together"));
        }
        if self.device_ca.cert_path.is_some() != self.device_ca.key_path.is_some() {
            return Err(invalid("device_ca", "cert_path and key_path go together"));
        }
        if self.public.url.as_ref().is_some_and(|u| !u.starts_with("https://") || u.ends_with('/')) {
            return Err(invalid("public.url", "must start with https:// and have no trailing slash"));
        }
        Ok(())
    }

    /// The session limits for the actors.
    pub fn sessions(&self) -> SessionConfig {
        let d = &self.device;
        let r = &self.rts;
        SessionConfig {
            device_heartbeat_interval: Duration::from_secs(d.heartbeat_interval_seconds),
            device_idle_timeout: Duration::from_secs(d.idle_timeout_seconds),
            device_send_queue_frames: d.send_queue_frames,
            device_write_stall_timeout: Duration::from_secs(d.write_stall_timeout_seconds),
            max_frame_bytes: d.max_frame_bytes,
            device_read_buffer_bytes: d.read_buffer_bytes,
            max_device_sessions: d.max_sessions,
            ves_heartbeat_interval: Duration::from_secs(r.heartbeat_interval_seconds),
            ves_reply_time: Duration::from_secs(r.reply_time_seconds),
            ves_send_queue_items: r.send_queue_items,
            ves_write_stall_timeout: Duration::from_secs(r.write_stall_timeout_seconds),
        }
    }

    pub fn postgres_options(&self) -> noc_storage::PostgresOptions {
        noc_storage::PostgresOptions {
            max_connections: self.postgres.max_connections,
            wait_timeout: Duration::from_secs(self.postgres.wait_timeout_seconds),
            connect_timeout: Duration::from_secs(self.postgres.connect_timeout_seconds),
            tls_ca_path: self.postgres.tls_ca_path.clone(),
        }
    }

    /// A copy safe to print: secrets masked.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.postgres_url = c.postgres_url.map(|u| SecretString::new(u.redacted()));
        c.redis_url = c.redis_url.map(|u| SecretString::new(u.redacted()));
        c.mail.smtp_password = c.mail.smtp_password.map(|p| SecretString::new(p.redacted()));
        c.alerts.smpp_password = c.alerts.smpp_password.map(|p| SecretString::new(p.redacted()));
        c.cluster.link_key = c.cluster.link_key.map(|k| SecretString::new(k.redacted()));
        c
    }

    pub fn redis_options(&self) -> Option<noc_cluster::RedisOptions> {
        let url = self.redis_url.as_ref()?;
        let c = &self.cluster;
        Some(noc_cluster::RedisOptions {
            url: url.expose().to_string(),
            mode: c.redis_mode,
            sentinel_master: c.redis_sentinel_master.clone(),
            node_lease: Duration::from_secs(c.node_lease_seconds),
            membership_interval: Duration::from_millis(c.membership_interval_ms),
            session_key_ttl: Duration::from_secs(c.session_key_ttl_seconds),
            owner_cache_ttl: Duration::from_secs(c.owner_cache_ttl_seconds),
            inbox_capacity: c.bus_queue_messages,
            publish_queue: c.bus_queue_messages,
            links: c.link_listen.zip(c.link_key.as_ref()).map(|(listen, key)| noc_cluster::LinkOptions {
                listen,
                advertise: c.link_advertise.as_deref().and_then(dialable),
                key: key.expose().as_bytes().into(),
                handshake_timeout: Duration::from_millis(c.link_handshake_timeout_ms),
            }),
            ..noc_cluster::RedisOptions::default()
        })
    }

    /// The account rules.
    pub fn account_policy(&self) -> AccountPolicy {
        let a = &self.accounts;
        AccountPolicy {
            throttle: ThrottlePolicy {
                free_failures_per_source: self.throttle.free_failures_per_source,
                free_failures_per_login: self.throttle.free_failures_per_login,
                max_delay: Duration::from_secs(self.throttle.max_delay_seconds),
                source_failure_burst: self.throttle.source_failure_burst,
                source_failures_per_minute: self.throttle.source_failures_per_minute,
                max_tracked: self.throttle.max_tracked,
            },
            msisdn_approval: a.msisdn_approval,
            generated_password_length: a.generated_password_length,
            min_password_length: a.min_password_length,
            hashing: PasswordHashing {
                memory_kib: a.argon2_memory_kib,
                iterations: a.argon2_iterations,
                parallelism: a.argon2_parallelism,
                workers: match a.max_concurrent_hashes {
                    0 => PasswordHashing::default().workers,
                    n => n,
                },
                queue: a.hash_queue,
                max_wait: Duration::from_millis(a.hash_wait_timeout_ms),
            },
            license_token_ttl: Duration::from_secs(a.license_token_ttl_seconds),
            web: noc_storage::WebSessionPolicy {
                idle_timeout: Duration::from_secs(self.web.session_idle_timeout_seconds),
                max_age: Duration::from_secs(self.web.session_max_age_seconds),
                persistent_max_age: Duration::from_secs(self.web.persistent_session_max_age_seconds),
            },
        }
    }

    /// The public base URL, derived from the listen address when not configured.
    pub fn public_url(&self, http: SocketAddr) -> String {
        self.public.url.clone().unwrap_or_else(|| format!("https://{}:{}", display_host(http.ip()), http.port()))
    }

    /// Device-channel host and port told to devices.
    pub fn device_endpoint(&self, public_url: &str, device: SocketAddr) -> (String, u16) {
        let host = self.public.device_host.clone().unwrap_or_else(|| {
            let rest = public_url.trim_start_matches("https://");
            let authority = rest.split('/').next().unwrap_or(rest);
            match authority.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
                _ => authority.to_string(),
            }
        });
        (host, self.public.device_port.unwrap_or(device.port()))
    }

    /// The node's id: configured, `$HOSTNAME`, or random.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("node-{}", noc_protocol::secrets::random_hex::<4>()))
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("noc.sqlite3")
    }

    pub fn workers(&self) -> usize {
        if self.listen.workers > 0 {
            self.listen.workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        }
    }
}

fn display_host(ip: IpAddr) -> String {
    match ip {
        ip if ip.is_unspecified() => "localhost".to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn every_shipped_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/relay");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("read");
                Config::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no example configs found in {}", dir.display());
    }

    #[test]
    fn tls_settings_of_postgres_and_redis_are_checked() {
        let ok = Config::from_toml("postgres_url = \"postgres://noc@db/noc?sslmode=require\"\n");
        assert!(ok.is_ok(), "{ok:?}");
        let err = Config::from_toml("postgres_url = \"postgres://noc@db/noc?sslmode=verify-full\"\n")
            .expect_err("unsupported sslmode");
        assert!(err.to_string().contains("sslmode"), "{err}");
        let err = Config::from_toml("[postgres]\ntls_ca_path = \"/nonexistent/ca.pem\"\n").expect_err("missing file");
        assert!(err.to_string().contains("postgres.tls_ca_path"), "{err}");
        let err = Config::from_toml("redis_url = \"rediss://redis:6380\"\n").expect_err("no Redis TLS");
        assert!(err.to_string().contains("rediss://"), "{err}");
    }

    /// Links need all of their settings, a key long enough and an address others can dial;
    /// a complete set turns into the cluster's link options.
    #[test]
    fn cluster_links_are_all_or_nothing() {
        let base = "redis_url = \"redis://r\"\n[cluster]\n";
        let key = "link_key = \"0123456789abcdef0123456789abcdef\"\n";
        for (toml, key_named) in [
            (format!("[cluster]\nlink_listen = \"10.0.0.7:9445\"\n{key}"), "cluster.link_listen"),
            (format!("{base}{key}"), "cluster.link_listen"),
            (format!("{base}link_listen = \"10.0.0.7:9445\"\n"), "cluster.link_key"),
            (format!("{base}link_listen = \"10.0.0.7:9445\"\nlink_key = \"short\"\n"), "cluster.link_key"),
            (format!("{base}link_listen = \"0.0.0.0:9445\"\n{key}"), "cluster.link_advertise"),
            (
                format!("{base}link_listen = \"0.0.0.0:9445\"\nlink_advertise = \"10.0.0.7\"\n{key}"),
                "cluster.link_advertise",
            ),
        ] {
            let err = Config::from_toml(&toml).expect_err(&toml);
            assert!(err.to_string().contains(key_named), "{toml}: {err}");
        }
        assert!(Config::from_toml(base).expect("no links").redis_options().expect("redis").links.is_none());
        let c = Config::from_toml(&format!(
            "{base}link_listen = \"0.0.0.0:9445\"\nlink_advertise = \"10.0.0.7:9445\"\n{key}"
        ))
        .expect("valid");
        let links = c.redis_options().expect("redis").links.expect("links");
        assert_eq!(links.advertise.as_deref(), Some("10.0.0.7:9445"));
        assert_eq!(&*links.key, b"0123456789abcdef0123456789abcdef");
        assert_eq!(links.handshake_timeout, Duration::from_secs(1));
        for (given, dialled) in [
            ("fd00::7:9445", "[fd00::7]:9445"),
            ("[fd00::7]:9445", "[fd00::7]:9445"),
            ("relay-0.relay:9445", "relay-0.relay:9445"),
        ] {
            assert_eq!(dialable(given).as_deref(), Some(dialled), "{given}");
        }
        assert_eq!(dialable(":9445"), None);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[device]\nheartbeat_interval_secs = 5\n").expect_err("typo must fail");
        assert!(err.to_string().contains("heartbeat_interval_secs"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = Config::from_toml("[device]\nheartbeat_interval_seconds = 60\nidle_timeout_seconds = 10\n")
            .expect_err("must fail");
        assert!(err.to_string().contains("device.idle_timeout_seconds"), "{err}");
        let err = Config::from_toml("[public]\nurl = \"http://x\"\n").expect_err("must fail");
        assert!(err.to_string().contains("public.url"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test harness fixes the closure's error type
    fn environment_variables_override_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("noc.toml", "[device]\nheartbeat_interval_seconds = 20\nidle_timeout_seconds = 90\n")?;
            jail.set_env("NOC_DEVICE__HEARTBEAT_INTERVAL_SECONDS", "30");
            jail.set_env("NOC_RTS__REPLY_TIME_SECONDS", "45");
            jail.set_env("NOC_DATA_DIR", "/tmp/noc-env");
            jail.set_env("NOC_CONFIG", "ignored: not a configuration key");
            let c = Config::load(Some(Path::new("noc.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.device.heartbeat_interval_seconds, 30);
            assert_eq!(c.device.idle_timeout_seconds, 90);
            assert_eq!(c.rts.reply_time_seconds, 45);
            assert_eq!(c.data_dir, PathBuf::from("/tmp/noc-env"));
            jail.set_env("NOC_RTS__BOGUS", "1");
            let err = Config::load(Some(Path::new("noc.toml"))).expect_err("unknown key must fail");
            assert!(err.to_string().contains("bogus"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn every_top_level_key_can_come_from_the_environment() {
        let full = Config {
            node_id: Some("n".into()),
            postgres_url: Some(SecretString::new("postgres://x")),
            redis_url: Some(SecretString::new("redis://x")),
            ..Config::default()
        };
        let value = toml::Value::try_from(&full).expect("serialise");
        let keys: Vec<&String> = value.as_table().expect("table").keys().collect();
        for key in keys {
            assert!(SECTIONS.contains(&key.as_str()), "NOC_* variables for `{key}` would be ignored");
        }
    }

    #[test]
    fn secrets_are_masked() {
        let c = Config::from_toml(
            "postgres_url = \"postgres://noc:hunter2@db:5432/noc\"\nredis_url = \"redis://r\"\n\
             [mail]\nsmtp_password = \"hunter2\"\n\
             [alerts]\nsmpp_password = \"hunter2\"\n\
             [cluster]\nlink_listen = \"10.0.0.7:9445\"\nlink_key = \"hunter2-and-more-than-thirty-two-bytes\"\n",
        )
        .expect("valid");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("postgres://noc:***@db:5432/noc"), "{dbg}");
        let printed = toml::to_string(&c.redacted()).expect("toml");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(c.postgres_url.as_ref().map(|u| u.expose()), Some("postgres://noc:hunter2@db:5432/noc"));
    }

    #[test]
    fn derived_public_addresses() {
        let c = Config::default();
        let url = c.public_url("0.0.0.0:8443".parse().expect("addr"));
        assert_eq!(url, "https://localhost:8443");
        assert_eq!(c.device_endpoint(&url, "0.0.0.0:8444".parse().expect("addr")), ("localhost".into(), 8444));
        let c = Config::from_toml("[public]\nurl = \"https://relay.example.net\"\ndevice_port = 443\n").expect("valid");
        let url = c.public_url("0.0.0.0:8443".parse().expect("addr"));
        assert_eq!(c.device_endpoint(&url, "0.0.0.0:8444".parse().expect("addr")), ("relay.example.net".into(), 443));
    }
}
