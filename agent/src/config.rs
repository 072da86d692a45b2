//! The agent's TOML configuration (`examples/agent/ves-agent.toml` lists every key).
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo does not silently fall back
//! to a default; durations and sizes carry their unit in the key name; passwords are
//! [`Secret`]s, masked in `Debug` so that logging a configuration never leaks them.
//! [`AgentConfig::validate`] checks ranges once at start-up, with messages that name the
//! key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use noc_crypto::Suite;
use serde::Deserialize;

use crate::error::AgentError;

/// A password or similar: deserialised as a plain string, shown as `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub relay: RelayConfig,
    pub license: LicenseConfig,
    /// Outbound HTTP CONNECT proxy for every request to the relay.
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    pub mail: MailConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub welcome: WelcomeConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    pub state: StateConfig,
    #[serde(default)]
    pub crypto: CryptoConfig,
    /// Enterprise certificate enrollment for devices (seed 002; docs/certificates.md).
    #[serde(default)]
    pub ca: CaConfig,
}

/// The certificate profiles devices may enroll under.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    #[serde(default)]
    pub profiles: Vec<CaProfileConfig>,
}

/// One certificate profile: a name devices ask for, whether an administrator approves
/// each request (`ves-agent ca pending|approve|reject`), and the certification authority
/// that issues.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaProfileConfig {
    /// What devices name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Requests wait for an administrator (default) or go to the CA at once.
    #[serde(default = "d_true")]
    pub require_approval: bool,
    /// The subject requested, after the user's name: e.g. `[["O", "Corp"], ["OU", "Staff"]]`
    /// (`CN` is the user's full name and `emailAddress` the user's address).
    #[serde(default)]
    pub subject_suffix: Vec<(String, String)>,
    /// Tell a device to enroll again this many days before its certificate expires
    /// (0: never).
    #[serde(default = "d_30_days")]
    pub renew_before_days: u32,
    /// The CA's certificate revocation list (DER or PEM), to report revoked certificates
    /// to their devices: a file the CA publishes to, or an `http(s)://` URL.
    #[serde(default)]
    pub crl_path: Option<PathBuf>,
    #[serde(default)]
    pub crl_url: Option<String>,
    /// How often the list is read again.
    #[serde(default = "d_3600")]
    pub crl_refresh_seconds: u64,
    pub authority: CaAuthorityConfig,
}

fn d_30_days() -> u32 {
    30
}

fn d_3600() -> u64 {
    3600
}

/// Who issues for a profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum CaAuthorityConfig {
    /// A CA certificate and key in files, signing here (small installations, tests).
    File {
        cert_path: PathBuf,
        key_path: PathBuf,
        /// Validity of what it issues.
        #[serde(default = "d_365")]
        validity_days: u32,
    },
    /// An enterprise CA behind an EST server (RFC 7030): `simpleenroll` and `cacerts`.
    Est {
        /// `https://est.example.com[:port]` (the `/.well-known/est` paths are added).
        url: String,
        /// The CA label of a server with several (`/.well-known/est/<label>/…`).
        #[serde(default)]
        label: Option<String>,
        /// Trust anchor for the EST server; without it, the public web PKI.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// HTTP Basic authentication of the agent (RFC 7030 §3.2.3).
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        #[serde(default = "d_30")]
        timeout_seconds: u64,
    },
}

fn d_365() -> u32 {
    365
}

/// Where the relay is and how to talk to it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Public base URL of the relay, `https://host:port`.
    pub url: String,
    /// PEM file with the CA (or self-signed certificate) to trust for the relay; without
    /// it the public web PKI (Mozilla roots) is trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "d_10")]
    pub connect_timeout_seconds: u64,
    /// Timeout of one data-channel request.
    #[serde(default = "d_30")]
    pub request_timeout_seconds: u64,
    /// The command channel is broken when an HB is later than `NextInSeconds` plus this.
    #[serde(default = "d_10")]
    pub heartbeat_tolerance_seconds: u64,
    #[serde(default = "d_1000")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "d_60")]
    pub reconnect_max_seconds: u64,
    /// Data-channel requests in flight at once.
    #[serde(default = "d_20")]
    pub data_channel_concurrency: usize,
    /// Longest command-channel line accepted.
    #[serde(default = "d_8mib")]
    pub max_command_line_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseConfig {
    pub name: String,
    pub password: Secret,
}

/// `http://proxy.corp.example:3128`, with optional basic authentication.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// The mail source: one Maildir per user, `<maildir_root>/<email>/{new,cur,tmp}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub maildir_root: PathBuf,
    /// `<calendar_root>/<email>/*.ics`
    #[serde(default)]
    pub calendar_root: Option<PathBuf>,
    /// `<contacts_root>/<email>/*.vcf`
    #[serde(default)]
    pub contacts_root: Option<PathBuf>,
    /// Full rescan period, a safety net under the file-system notifications.
    #[serde(default = "d_60")]
    pub rescan_interval_seconds: u64,
    /// Larger files are skipped (and logged).
    #[serde(default = "d_10mib")]
    pub max_item_bytes: usize,
    /// Create `<root>/<email>/{new,cur,tmp}` for active users that have none.
    #[serde(default = "d_true")]
    pub create_maildirs: bool,
    /// A file that changed without being closed after writing or renamed into place is
    /// read once it has been quiet this long (its writer may not be done); scans leave
    /// files younger than this to the same wait.
    #[serde(default = "d_1000")]
    pub settle_ms: u64,
}

/// How the SMTP server wants to be spoken to.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on the local network).
    #[default]
    None,
    /// SMTP, then STARTTLS (required).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The enterprise SMTP server, for mail composed on devices and welcome mails.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    #[serde(default = "d_localhost")]
    pub host: String,
    #[serde(default = "d_25")]
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// CA to trust for STARTTLS/TLS; without it the public web PKI.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "d_30")]
    pub timeout_seconds: u64,
    /// First retry of a submission that failed temporarily; doubles up to the maximum.
    #[serde(default = "d_5")]
    pub retry_initial_seconds: u64,
    #[serde(default = "d_600")]
    pub retry_max_seconds: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: d_localhost(),
            port: 25,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            ca_file: None,
            timeout_seconds: 30,
            retry_initial_seconds: 5,
            retry_max_seconds: 600,
        }
    }
}

/// The welcome e-mail sent when a user is provisioned (white paper §3.5).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WelcomeConfig {
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// `From` of the welcome mail.
    #[serde(default = "d_from")]
    pub from: String,
    #[serde(default = "d_subject")]
    pub subject: String,
    /// Put the password in the mail (only over the enterprise's own mail system); when
    /// false the administrator passes it on another way.
    #[serde(default = "d_true")]
    pub include_password: bool,
}

impl Default for WelcomeConfig {
    fn default() -> Self {
        WelcomeConfig { enabled: true, from: d_from(), subject: d_subject(), include_password: true }
    }
}

/// The per-device queues and the end-to-end link.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Items waiting for one device; beyond it the oldest are dropped (and logged).
    #[serde(default = "d_1000")]
    pub max_items_per_device: usize,
    /// Items not delivered within this are dropped.
    #[serde(default = "d_week")]
    pub ttl_seconds: u64,
    #[serde(default = "d_30")]
    pub resend_after_seconds: u64,
    #[serde(default = "d_5_u32")]
    pub max_resends: u32,
    #[serde(default = "d_32")]
    pub window_frames: usize,
    /// Largest record in one frame (the relay's frame limit minus overhead must exceed it).
    #[serde(default = "d_32kib")]
    pub record_bytes: usize,
    #[serde(default = "d_10")]
    pub rekey_interval_seconds: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_items_per_device: 1000,
            ttl_seconds: d_week(),
            resend_after_seconds: 30,
            max_resends: 5,
            window_frames: 32,
            record_bytes: d_32kib(),
            rekey_interval_seconds: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// GUID, license token and VES key (`state.json`, 0600), the database, the control
    /// socket. Created 0700.
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoConfig {
    /// Suites accepted from devices, preferred first: `modern`, `legacy-2005`.
    #[serde(default = "d_suites")]
    pub suites: Vec<String>,
}

impl Default for CryptoConfig {
    fn default() -> Self {
        CryptoConfig { suites: d_suites() }
    }
}

fn d_true() -> bool {
    true
}
fn d_5() -> u64 {
    5
}
fn d_5_u32() -> u32 {
    5
}
fn d_10() -> u64 {
    10
}
fn d_20() -> usize {
    20
}
fn d_25() -> u16 {
    25
}
fn d_30() -> u64 {
    30
}
fn d_32() -> usize {
    32
}
fn d_60() -> u64 {
    60
}
fn d_600() -> u64 {
    600
}
fn d_1000<T: From<u16>>() -> T {
    T::from(1000)
}
fn d_week() -> u64 {
    7 * 24 * 3600
}
fn d_32kib() -> usize {
    32 * 1024
}
fn d_8mib() -> usize {
    8 * 1024 * 1024
}
fn d_10mib() -> usize {
    10 * 1024 * 1024
}
fn d_localhost() -> String {
    "localhost".into()
}
fn d_from() -> String {
    "VES Administrator <ves-admin@localhost>".into()
}
fn d_subject() -> String {
    "Your mobile access account".into()
}
fn d_suites() -> Vec<String> {
    vec!["modern".into()]
}

fn bad(key: &str, why: impl std::fmt::Display) -> AgentError {
    AgentError::Config(format!("{key}: {why}"))
}

impl AgentConfig {
    /// Parses TOML text and validates it.
    pub fn parse(text: &str) -> Result<Self, AgentError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| AgentError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a configuration file. Relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
        let mut config = Self::parse(&text).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
        if let Some(base) = path.parent() {
            config.resolve_relative(base);
        }
        Ok(config)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state.dir);
        fix(&mut self.mail.maildir_root);
        for p in [
            &mut self.relay.ca_file,
            &mut self.mail.calendar_root,
            &mut self.mail.contacts_root,
            &mut self.smtp.ca_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    /// Checks every range; the message names the key.
    pub fn validate(&self) -> Result<(), AgentError> {
        let r = &self.relay;
        if !r.url.starts_with("https://") || r.url.ends_with('/') {
            return Err(bad("relay.url", "must be https://host[:port] without a trailing /"));
        }
        if r.heartbeat_tolerance_seconds == 0 {
            return Err(bad("relay.heartbeat_tolerance_seconds", "must be at least 1"));
        }
        if !(1..=1024).contains(&r.data_channel_concurrency) {
            return Err(bad("relay.data_channel_concurrency", "must be 1 to 1024"));
        }
        if r.reconnect_initial_ms == 0 || r.reconnect_max_seconds == 0 {
            return Err(bad("relay.reconnect_*", "must be positive"));
        }
        if r.max_command_line_bytes < 64 * 1024 {
            return Err(bad("relay.max_command_line_bytes", "must be at least 65536"));
        }
        if r.connect_timeout_seconds == 0 || r.request_timeout_seconds == 0 {
            return Err(bad("relay.*_timeout_seconds", "must be positive"));
        }
        if self.license.name.trim().is_empty() {
            return Err(bad("license.name", "must not be empty"));
        }
        if let Some(p) = &self.proxy {
            if !p.url.starts_with("http://") && !p.url.starts_with("https://") {
                return Err(bad("proxy.url", "must be http://host:port"));
            }
            if p.password.is_some() && p.username.is_none() {
                return Err(bad("proxy.password", "needs proxy.username"));
            }
        }
        if self.mail.rescan_interval_seconds == 0 {
            return Err(bad("mail.rescan_interval_seconds", "must be at least 1"));
        }
        if self.mail.max_item_bytes == 0 {
            return Err(bad("mail.max_item_bytes", "must be positive"));
        }
        if self.smtp.host.trim().is_empty() {
            return Err(bad("smtp.host", "must not be empty"));
        }
        if self.smtp.password.is_some() && self.smtp.username.is_none() {
            return Err(bad("smtp.password", "needs smtp.username"));
        }
        if self.smtp.retry_initial_seconds == 0 || self.smtp.retry_max_seconds < self.smtp.retry_initial_seconds {
            return Err(bad("smtp.retry_*_seconds", "need 1 <= initial <= max"));
        }
        if self.welcome.enabled && !noc_endpoint::rfc822::addresses(&self.welcome.from).len().eq(&1) {
            return Err(bad("welcome.from", "must be one address, e.g. \"Admin <admin@example.com>\""));
        }
        let q = &self.queue;
        if q.max_items_per_device == 0 || q.ttl_seconds == 0 || q.resend_after_seconds == 0 {
            return Err(bad("queue", "max_items_per_device, ttl_seconds and resend_after_seconds must be positive"));
        }
        if !(1..=1024).contains(&q.window_frames) {
            return Err(bad("queue.window_frames", "must be 1 to 1024"));
        }
        if !(noc_endpoint::link::MIN_RECORD_BYTES..=1024 * 1024).contains(&q.record_bytes) {
            return Err(bad("queue.record_bytes", "must be 512 to 1048576"));
        }
        self.suites()?;
        let mut names = std::collections::HashSet::new();
        for p in &self.ca.profiles {
            let ok = !p.name.is_empty()
                && p.name.len() <= noc_endpoint::enroll::MAX_ID_BYTES
                && p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(bad("ca.profiles.name", "letters, digits, '-', '_' and '.', at most 64"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad("ca.profiles.name", "each profile name once"));
            }
            if noc_ca::subject::to_rcgen(&p.subject_suffix).is_err() {
                return Err(bad("ca.profiles.subject_suffix", "types CN, O, OU, C, L, ST, DC, UID, emailAddress"));
            }
            if p.crl_path.is_some() && p.crl_url.is_some() {
                return Err(bad("ca.profiles.crl_url", "crl_path or crl_url, not both"));
            }
            if p.crl_url.as_deref().is_some_and(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
                return Err(bad("ca.profiles.crl_url", "must be http:// or https://"));
            }
            if p.crl_refresh_seconds == 0 {
                return Err(bad("ca.profiles.crl_refresh_seconds", "must be positive"));
            }
            match &p.authority {
                CaAuthorityConfig::File { validity_days, .. } if !(1..=3650).contains(validity_days) => {
                    return Err(bad("ca.profiles.authority.validity_days", "must be 1 to 3650"));
                }
                CaAuthorityConfig::File { validity_days, .. } if p.renew_before_days >= *validity_days => {
                    return Err(bad("ca.profiles.renew_before_days", "must be less than validity_days"));
                }
                CaAuthorityConfig::File { .. } => {}
                CaAuthorityConfig::Est { url, label, username, password, timeout_seconds, .. } => {
                    if !url.starts_with("https://") || url.ends_with('/') {
                        return Err(bad(
                            "ca.profiles.authority.url",
                            "must be https://host[:port] without a trailing /",
                        ));
                    }
                    let label_ok = label.as_deref().is_none_or(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    });
                    if !label_ok {
                        return Err(bad("ca.profiles.authority.label", "letters, digits, '-', '_' and '.'"));
                    }
                    if password.is_some() != username.is_some() {
                        return Err(bad("ca.profiles.authority.password", "username and password go together"));
                    }
                    if *timeout_seconds == 0 {
                        return Err(bad("ca.profiles.authority.timeout_seconds", "must be positive"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The accepted suites, parsed.
    pub fn suites(&self) -> Result<Vec<Suite>, AgentError> {
        if self.crypto.suites.is_empty() {
            return Err(bad("crypto.suites", "at least one suite is required"));
        }
        self.crypto.suites.iter().map(|s| s.parse::<Suite>().map_err(|e| bad("crypto.suites", e))).collect()
    }

    pub fn heartbeat_tolerance(&self) -> Duration {
        Duration::from_secs(self.relay.heartbeat_tolerance_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [relay]
        url = "https://relay.example.net:8443"
        [license]
        name = "acme"
        password = "very-secret-license-pw"
        [mail]
        maildir_root = "/var/mail/maildirs"
        [state]
        dir = "/var/lib/ves-agent"
    "#;

    #[test]
    fn minimal_config_gets_defaults_and_masks_secrets() {
        let c = AgentConfig::parse(MINIMAL).expect("parse");
        assert_eq!(c.relay.data_channel_concurrency, 20);
        assert_eq!(c.queue.max_items_per_device, 1000);
        assert_eq!(c.smtp.port, 25);
        assert!(c.welcome.include_password);
        let debug = format!("{c:?}");
        assert!(!debug.contains("very-secret-license-pw"), "{debug}");
        assert!(debug.contains("***"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        let typo = MINIMAL.replace("[mail]", "[mail]\nmaildir_rot = \"x\"");
        assert!(AgentConfig::parse(&typo).expect_err("refused").to_string().contains("maildir_rot"));
        let http = MINIMAL.replace("https://relay", "http://relay");
        assert!(AgentConfig::parse(&http).expect_err("refused").to_string().contains("relay.url"));
        let suites = format!("{MINIMAL}\n[crypto]\nsuites = [\"rot13\"]\n");
        assert!(AgentConfig::parse(&suites).expect_err("refused").to_string().contains("crypto.suites"));
        let proxy = format!("{MINIMAL}\n[proxy]\nurl = \"http://p:3128\"\npassword = \"x\"\n");
        assert!(AgentConfig::parse(&proxy).expect_err("refused").to_string().contains("proxy.password"));
        let profile = |name: &str, suffix: &str, days: u32| {
            format!(
                "[[ca.profiles]]\nname = \"{name}\"\nsubject_suffix = {suffix}\n[ca.profiles.authority]\n\
                 kind = \"file\"\ncert_path = \"c\"\nkey_path = \"k\"\nvalidity_days = {days}\n"
            )
        };
        let ok = profile("wifi", "[[\"O\", \"Corp\"]]", 365);
        let parsed = AgentConfig::parse(&format!("{MINIMAL}\n{ok}")).expect("a profile");
        assert!(parsed.ca.profiles[0].require_approval, "approval unless said otherwise");
        for (bad, key) in [
            (format!("{ok}{ok}"), "each profile name once"),
            (profile("../x", "[]", 365), "ca.profiles.name"),
            (profile("vpn", "[[\"XX\", \"y\"]]", 365), "ca.profiles.subject_suffix"),
            (profile("vpn", "[]", 0), "validity_days"),
            (
                "[[ca.profiles]]\nname = \"vpn\"\n[ca.profiles.authority]\nkind = \"est\"\nurl = \"http://est\"\n"
                    .into(),
                "ca.profiles.authority.url",
            ),
            (
                "[[ca.profiles]]\nname = \"vpn\"\n[ca.profiles.authority]\nkind = \"est\"\nurl = \"https://est\"\n\
                 password = \"p\"\n"
                    .into(),
                "username and password go together",
            ),
        ] {
            let e = AgentConfig::parse(&format!("{MINIMAL}\n{bad}")).expect_err("refused").to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn every_shipped_example_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("examples dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.starts_with("ves-agent") && name.ends_with(".toml") {
                AgentConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                n += 1;
            }
        }
        assert!(n >= 1, "no ves-agent example in {}", dir.display());
    }
}
