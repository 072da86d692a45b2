//! New-mail alerts (white paper §4.7): an enterprise server posts an `Alert` when a new mail
//! matches one of the user's rules (docs/protocol.md §4.4.10); this node delivers it to the
//! destinations the user chose on the portal's alerts page: a mail through the relay's
//! SMTP server, an HTTPS webhook signed with HMAC-SHA256, an SMS and a WAP Push Service
//! Indication over the carrier's SMSC (SMPP 3.4, [`crate::smpp`], [`crate::wap_push`]).
//!
//! Taking an alert checks the user (this VES's, active, alerts on and allowed), the quiet
//! hours in the user's time zone and a per-user hourly rate; then each delivery waits in a
//! bounded queue. The rate is checked twice: over the last hour on this node (memory,
//! no I/O), then per clock hour in the account store, which every node shares, so that a
//! user whose alerts reach several nodes still gets `alerts.max_per_user_per_hour` at most
//! (an unreachable store leaves the node's own count). A failed delivery is tried again with doubling waits, up to
//! `alerts.max_attempts`; nothing is stored beyond that queue (a restart loses what waits).
//! Every outcome is counted (`noc_alerts_total{channel,outcome}`,
//! `noc_alerts_skipped_total{reason}`); no log line carries a sender, subject or excerpt.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use noc_actors::Metrics;
use noc_gateway::{AlertRefusal, AlertSink, IncomingAlert};
use noc_protocol::{UserId, VesId};
use noc_storage::{Accounts, Feature, UserStatus};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::AlertsConfig;
use crate::mail::Mailer;

/// Characters of an excerpt, at most.
const EXCERPT_CHARS: usize = 200;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;
/// Users tracked by the hourly limit before the table is swept.
const SWEEP_AT: usize = 10_000;

/// What one alert says, as a webhook receives it (JSON).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlertBody {
    pub user_id: UserId,
    pub email: String,
    pub from: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// When the relay took it, unix ms.
    pub at: i64,
}

#[derive(Clone, Debug)]
enum Destination {
    Email { to: String, name: String },
    Webhook { url: String, secret: String },
    Sms { msisdn: String },
    WapPush { msisdn: String },
}

impl Destination {
    fn channel(&self) -> &'static str {
        match self {
            Destination::Email { .. } => "email",
            Destination::Webhook { .. } => "webhook",
            Destination::Sms { .. } => "sms",
            Destination::WapPush { .. } => "wap_push",
        }
    }
}

struct Delivery {
    to: Destination,
    alert: Arc<AlertBody>,
    attempt: u32,
}

/// The node's alert dispatcher: the data channel's [`AlertSink`].
pub struct AlertDispatcher {
    accounts: Accounts,
    metrics: Arc<Metrics>,
    queue: mpsc::Sender<Delivery>,
    /// When each user's recent alerts were taken (the last hour's), and the table size at
    /// which it is next swept.
    recent: Mutex<(HashMap<UserId, VecDeque<Instant>>, usize)>,
    max_per_hour: u32,
}

/// What delivering needs, shared by the delivery tasks.
struct Deliverer {
    /// Webhooks may reach non-public addresses (`alerts.webhook_allow_private`).
    allow_private: bool,
    mailer: Option<Mailer>,
    smpp: Option<crate::smpp::SmppClient>,
    /// Where WAP Push links lead: the WAP inbox of this service.
    wap_inbox: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    retry_initial: Duration,
    max_attempts: u32,
    queue: mpsc::Sender<Delivery>,
}

impl AlertDispatcher {
    /// The dispatcher and its delivery task (spawned on the current runtime).
    pub fn start(
        accounts: Accounts,
        metrics: Arc<Metrics>,
        mailer: Option<Mailer>,
        cfg: &AlertsConfig,
        public_url: &str,
    ) -> Result<Arc<Self>, String> {
        let smpp = cfg.smpp_host.as_ref().map(|host| {
            crate::smpp::SmppClient::start(
                crate::smpp::SmppSettings {
                    host: host.clone(),
                    port: cfg.smpp_port,
                    system_id: cfg.smpp_system_id.clone(),
                    password: cfg.smpp_password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default(),
                    system_type: cfg.smpp_system_type.clone(),
                    source_addr: cfg.smpp_source_addr.clone(),
                    max_per_second: cfg.smpp_max_per_second,
                    enquire_link: Duration::from_secs(cfg.smpp_enquire_link_seconds),
                },
                metrics.clone(),
            )
        });
        let tls = noc_tls::client_config(cfg.webhook_ca_file.as_deref(), &[b"http/1.1"])
            .map_err(|e| format!("alerts.webhook_ca_file: {e}"))?;
        let mut http = reqwest::Client::builder().use_preconfigured_tls(tls);
        if !cfg.webhook_allow_private {
            http = http.dns_resolver(Arc::new(PublicOnly));
        }
        let http = http
            .timeout(Duration::from_secs(cfg.webhook_timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        let (tx, mut rx) = mpsc::channel::<Delivery>(cfg.queue_deliveries);
        let deliverer = Arc::new(Deliverer {
            allow_private: cfg.webhook_allow_private,
            mailer,
            smpp,
            wap_inbox: format!("{public_url}/wap/mail/INBOX"),
            http,
            metrics: metrics.clone(),
            retry_initial: Duration::from_secs(cfg.retry_initial_seconds),
            max_attempts: cfg.max_attempts,
            queue: tx.clone(),
        });
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        actix_rt::spawn(async move {
            while let Some(d) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let deliverer = deliverer.clone();
                actix_rt::spawn(async move {
                    deliverer.deliver(d).await;
                    drop(permit);
                });
            }
        });
        Ok(Arc::new(AlertDispatcher {
            accounts,
            metrics,
            queue: tx,
            recent: Mutex::new((HashMap::new(), SWEEP_AT)),
            max_per_hour: cfg.max_per_user_per_hour,
        }))
    }

    /// Counts the alert against the user's hourly rate; false when over it.
    fn within_rate(&self, user: UserId, now: Instant) -> bool {
        let mut guard = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let (recent, next_sweep) = &mut *guard;
        let hour = Duration::from_secs(3600);
        // Users whose last alert is over an hour old are forgotten, in one sweep each time
        // the table has doubled since the last (not on every alert: it holds every recently
        // alerted user).
        if recent.len() >= *next_sweep {
            recent.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < hour));
            *next_sweep = (recent.len() * 2).max(SWEEP_AT);
        }
        let times = recent.entry(user).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= hour) {
            times.pop_front();
        }
        if times.len() >= self.max_per_hour as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// The hour (0–23) of `ms` in the user's time zone.
fn local_hour(ms: i64, zone: Option<&str>) -> u8 {
    let tz = noc_web::time_zone(zone);
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_zoned_datetime(tz).hour())
        .and_then(|h| u8::try_from(h).ok())
        .unwrap_or(0)
}

/// An excerpt cut to [`EXCERPT_CHARS`], on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= EXCERPT_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(EXCERPT_CHARS - 1).collect();
    format!("{cut}…")
}

#[async_trait::async_trait]
impl AlertSink for AlertDispatcher {
    async fn alert(&self, ves: VesId, a: IncomingAlert) -> Result<bool, AlertRefusal> {
        let user = match self.accounts.store().user_by_id(a.user_id).await {
            Ok(Some(u)) if u.ves_id == ves => u,
            Ok(_) => return Err(AlertRefusal::NotYours),
            Err(e) => {
                tracing::warn!(error = %e, "alert: the account store did not answer");
                return Err(AlertRefusal::Unavailable);
            }
        };
        let now_ms = noc_protocol::clock::unix_ms_i64();
        let d = &user.alert_delivery;
        let mut destinations = Vec::new();
        if let Some(to) = &d.email {
            destinations.push(Destination::Email { to: to.clone(), name: user.full_name() });
        }
        if let (Some(url), Some(secret)) = (&d.webhook_url, &d.webhook_secret) {
            destinations.push(Destination::Webhook { url: url.clone(), secret: secret.clone() });
        }
        if let Some(msisdn) = user.msisdn.as_ref() {
            if d.sms {
                destinations.push(Destination::Sms { msisdn: msisdn.clone() });
            }
            if d.wap_push {
                destinations.push(Destination::WapPush { msisdn: msisdn.clone() });
            }
        }
        let skipped = if user.status != UserStatus::Active || !user.alerts_enabled || !user.allows(Feature::Alerts) {
            Some("disabled")
        } else if destinations.is_empty() {
            // Also SMS or WAP Push chosen by a user without a mobile number.
            Some("no_destination")
        } else if d.quiet_at(local_hour(now_ms, user.time_zone.as_deref())) {
            Some("quiet_hours")
        } else {
            None
        };
        if let Some(reason) = skipped {
            self.metrics.alert_skipped(reason);
            return Ok(false);
        }
        // Room for every delivery first: either all are queued, or none is and the VES
        // posts the alert again (no destination gets it twice).
        let mut permits = Vec::with_capacity(destinations.len());
        for _ in &destinations {
            match self.queue.try_reserve() {
                Ok(p) => permits.push(p),
                Err(_) => {
                    for to in &destinations {
                        self.metrics.alert_delivery(to.channel(), "dropped");
                    }
                    return Err(AlertRefusal::Busy);
                }
            }
        }
        if !self.within_rate(user.id, Instant::now()) {
            self.metrics.alert_skipped("rate_limited");
            return Ok(false);
        }
        match self.accounts.store().admit_alert(user.id, now_ms.div_euclid(3_600_000), self.max_per_hour).await {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.alert_skipped("rate_limited");
                return Ok(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "alert: the cluster-wide rate could not be counted; this node's holds")
            }
        }
        let body = Arc::new(AlertBody {
            user_id: user.id,
            email: user.email.clone(),
            from: a.from.chars().take(300).collect(),
            subject: a.subject.chars().take(500).collect(),
            excerpt: a.excerpt.filter(|_| d.excerpt).map(|e| excerpt(&e)).filter(|e| !e.is_empty()),
            at: now_ms,
        });
        for (to, permit) in destinations.into_iter().zip(permits) {
            permit.send(Delivery { to, alert: body.clone(), attempt: 1 });
        }
        Ok(true)
    }
}

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`: what `X-Noc-Signature` carries.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why one delivery attempt failed: a bounded reason (the metric label), the detail for
/// the log, and whether trying again cannot help.
struct Failure {
    reason: &'static str,
    detail: String,
    permanent: bool,
}

fn failure(reason: &'static str, detail: impl Into<String>) -> Failure {
    Failure { reason, detail: detail.into(), permanent: false }
}

fn permanent(reason: &'static str, detail: impl Into<String>) -> Failure {
    Failure { reason, detail: detail.into(), permanent: true }
}

/// Whether `ip` is outside the public internet: loopback, private, shared (CGNAT),
/// link-local, unique-local, unspecified, broadcast, multicast or documentation ranges.
pub fn non_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public(std::net::IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// A resolver that gives webhooks public addresses only: a name that resolves to nothing
/// else fails, so neither a URL nor a DNS answer can point the relay into its own network.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| !non_public(a.ip())).collect();
            if found.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl From<crate::smpp::SmppError> for Failure {
    fn from(e: crate::smpp::SmppError) -> Self {
        let reason = match e {
            crate::smpp::SmppError::Down => "smsc_down",
            crate::smpp::SmppError::Refused(_) => "smsc_refused",
            crate::smpp::SmppError::Timeout => "timeout",
        };
        failure(reason, e.to_string())
    }
}

impl Deliverer {
    async fn deliver(self: Arc<Self>, d: Delivery) {
        let channel = d.to.channel();
        let result = match &d.to {
            Destination::Email { to, name } => self.mail(to, name, &d.alert).await,
            Destination::Webhook { url, secret } => self.post(url, secret, &d.alert).await,
            Destination::Sms { msisdn } => self.sms(msisdn, &d.alert).await,
            Destination::WapPush { msisdn } => self.wap_push(msisdn, &d.alert).await,
        };
        let Err(Failure { reason, detail, permanent }) = result else {
            self.metrics.alert_delivery(channel, "delivered");
            return;
        };
        self.metrics.alert_failure(channel, reason);
        if permanent || d.attempt >= self.max_attempts {
            tracing::warn!(channel, attempts = d.attempt, reason, %detail, "alert not delivered; given up");
            self.metrics.alert_delivery(channel, "failed");
            return;
        }
        tracing::info!(channel, attempt = d.attempt, reason, %detail, "alert delivery failed; will retry");
        self.metrics.alert_delivery(channel, "retried");
        let wait = self.retry_initial.saturating_mul(1 << (d.attempt - 1).min(16));
        let queue = self.queue.clone();
        actix_rt::spawn(async move {
            tokio::time::sleep(wait).await;
            let next = Delivery { attempt: d.attempt + 1, ..d };
            if queue.send(next).await.is_err() {
                tracing::debug!("alert queue closed");
            }
        });
    }

    async fn mail(&self, to: &str, name: &str, a: &AlertBody) -> Result<(), Failure> {
        let Some(mailer) = &self.mailer else { return Err(failure("not_configured", "no SMTP server ([mail])")) };
        let subject = format!("New mail from {}: {}", a.from, a.subject);
        let mut text = format!("New mail for {}\n\nFrom: {}\nSubject: {}\n", a.email, a.from, a.subject);
        if let Some(e) = &a.excerpt {
            text.push_str(&format!("\n{e}\n"));
        }
        mailer.send_text(to, name, &subject, &text).await.map_err(|e| failure("smtp", e))
    }

    async fn sms(&self, msisdn: &str, a: &AlertBody) -> Result<(), Failure> {
        let Some(smpp) = &self.smpp else { return Err(failure("not_configured", "no SMSC (alerts.smpp_host)")) };
        let mut text = format!("{}: {}", a.from, a.subject);
        if let Some(e) = &a.excerpt {
            text.push_str(&format!(" - {e}"));
        }
        smpp.submit(crate::smpp::ShortMessage::text(msisdn, &text)).await.map(|_| ()).map_err(Failure::from)
    }

    async fn wap_push(&self, msisdn: &str, a: &AlertBody) -> Result<(), Failure> {
        let Some(smpp) = &self.smpp else { return Err(failure("not_configured", "no SMSC (alerts.smpp_host)")) };
        let si_id = noc_protocol::secrets::random_hex::<4>();
        let text = format!("{}: {}", a.from, a.subject);
        let payload = crate::wap_push::sms_payload(&self.wap_inbox, &si_id, &text)
            .ok_or_else(|| permanent("internal", "the WAP inbox address is too long for one SMS"))?;
        let message = crate::smpp::ShortMessage {
            destination: msisdn.trim_start_matches('+').to_string(),
            esm_class: 0x40,
            data_coding: 0x04,
            payload,
        };
        smpp.submit(message).await.map(|_| ()).map_err(Failure::from)
    }

    async fn post(&self, url: &str, secret: &str, a: &AlertBody) -> Result<(), Failure> {
        // An address written as an IP is not resolved, so it is checked here.
        let parsed = reqwest::Url::parse(url).map_err(|_| permanent("internal", "webhook URL"))?;
        let host = parsed.host_str().unwrap_or("");
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok();
        if !self.allow_private && literal.is_some_and(non_public) {
            return Err(permanent("transport", "webhook address is not public"));
        }
        let body = serde_json::to_vec(a).map_err(|e| permanent("internal", e.to_string()))?;
        // The time of this attempt: a receiver refusing old timestamps still takes retries.
        let timestamp = noc_protocol::clock::unix_ms_i64() / 1000;
        let resp = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Noc-Timestamp", timestamp.to_string())
            .header("X-Noc-Signature", signature(secret, timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let reason = if e.is_timeout() { "timeout" } else { "transport" };
                failure(reason, format!("webhook: {}", e.without_url()))
            })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            // The receiver refuses it (bad signature, gone): trying again cannot help.
            400..=499 if status != 408 && status != 429 => {
                Err(permanent("http_status", format!("webhook answered {status}")))
            }
            _ => Err(failure("http_status", format!("webhook answered {status}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        // The same computed by Python's hmac module over b"1700000000.{}" with key b"key".
        let sig = signature("key", 1_700_000_000, b"{}");
        assert_eq!(sig, "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae");
        assert_ne!(sig, signature("key", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn webhooks_stay_out_of_the_carriers_network() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(non_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860:4860::8888", "100.128.0.1"] {
            assert!(!non_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt("Hello\n\n  Bob,  see   you"), "Hello Bob, see you");
        let long = excerpt(&"word ".repeat(100));
        assert_eq!(long.chars().count(), EXCERPT_CHARS);
        assert!(long.ends_with('…'));
    }

    /// Two nodes (two dispatchers on one store) take alerts for the same user in turn:
    /// together they take the hourly limit, not twice it.
    #[actix_rt::test]
    async fn nodes_share_the_hourly_limit_through_the_store() {
        use noc_storage::{AccountPolicy, AlertDelivery, PasswordHashing, SqliteStore, Store};
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
        let policy = AccountPolicy {
            hashing: PasswordHashing { memory_kib: 64, iterations: 1, parallelism: 1, ..PasswordHashing::default() },
            ..AccountPolicy::default()
        };
        let accounts = Accounts::new(store.clone(), policy).expect("accounts");
        accounts.create_license("acme", "license-pass", 5, None, "admin:test").await.expect("license");
        let license = store.license_by_name("acme").await.expect("read").expect("license").0;
        let ves = store.insert_ves(&[7u8; 32], license.id, 0).await.expect("ves");
        let (user, _, _) =
            accounts.provision_user(ves.id, license.id, "kim@example.com", None, "Kim", "Lo").await.expect("user");
        let now = noc_protocol::clock::unix_ms_i64();
        store.set_user_status(user.id, UserStatus::Active, now).await.expect("active");
        let to = AlertDelivery { email: Some("kim@example.com".into()), ..AlertDelivery::default() };
        store.set_alert_delivery(user.id, &to, now).await.expect("destination");

        let cfg = AlertsConfig { max_per_user_per_hour: 3, ..AlertsConfig::default() };
        let metrics = Arc::new(Metrics::new());
        let nodes = [
            AlertDispatcher::start(accounts.clone(), metrics.clone(), None, &cfg, "https://relay.example").expect("a"),
            AlertDispatcher::start(accounts.clone(), metrics.clone(), None, &cfg, "https://relay.example").expect("b"),
        ];
        let hour = || noc_protocol::clock::unix_ms_i64().div_euclid(3_600_000);
        let (mut taken, first_hour) = (0, hour());
        for i in 0..8 {
            let a =
                IncomingAlert { user_id: user.id, from: "a@x.example".into(), subject: "urgent".into(), excerpt: None };
            taken += usize::from(nodes[i % 2].alert(ves.id, a).await.expect("answered"));
        }
        // A clock hour that turned during the loop opens a second bucket; each node's own
        // rolling hour still caps it.
        let most = if hour() == first_hour { 3 } else { 6 };
        assert!(taken == most || (most == 6 && taken >= 3), "{taken} taken");
        assert_eq!(metrics.value("noc_alerts_skipped_total", &[("reason", "rate_limited")]), (8 - taken) as f64);
    }

    #[test]
    fn the_hour_is_the_users() {
        let ms = 1_796_374_800_000; // 2026-12-04 09:00 UTC
        assert_eq!(local_hour(ms, None), 9);
        assert_eq!(local_hour(ms, Some("Europe/Berlin")), 10);
        assert_eq!(local_hour(ms, Some("America/New_York")), 4);
    }
}
