//! Enterprise certificate enrollment, the VES side (seed 002; docs/certificates.md,
//! docs/endpoints.md §10.4): devices ask for a certificate under a *profile* the
//! enterprise defined (`[[ca.profiles]]`), the agent answers with the user's distinguished
//! name, takes the device's PKCS#10 request for it, holds it for an administrator when the
//! profile says so (`ves-agent ca pending|approve|reject`), sends it to the profile's
//! certification authority, checks that the certificate it gets back is for the key of
//! the request, and sends the chain to the device. Every step is a `certificate-status`
//! item to the device, queued like mail: a device that is offline gets the latest one
//! when it comes back.
//!
//! The requests live in the agent's database (`ca_requests`), so an agent restarted
//! between the steps goes on where it stopped.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use noc_endpoint::Store;
use noc_endpoint::enroll::{CertificateRequest, CertificateStatus, EnrollState, NameAttribute};
use noc_endpoint::item::{Item, ItemId, ItemType};
use noc_endpoint::store::{FullPolicy, QueueLimits};
use noc_protocol::{DeviceId, UserId};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{CaAuthorityConfig, CaConfig};
use crate::db;
use crate::error::AgentError;

/// Without a wake-up, look again this often.
const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// Why a certification authority issued nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The CA refused the request: final.
    #[error("the certification authority refused the request: {0}")]
    Rejected(String),
    /// The CA could not be reached or failed: the request stays approved and is sent
    /// again later.
    #[error("the certification authority is unavailable: {0}")]
    Unavailable(String),
    /// The CA holds the request (EST `202 Accepted`): ask again after this long.
    #[error("the certification authority holds the request; retry in {0:?}")]
    Held(Duration),
}

/// What a connector returns: the certificate and the CA certificates above it (PEM, leaf
/// first).
pub type Issuance = Pin<Box<dyn Future<Output = Result<String, ConnectorError>> + Send>>;

/// A certification authority the agent submits requests to: the built-in [`FileCa`]
/// signs here, `est::EstCa` talks to an EST server (RFC 7030); others implement the same
/// trait.
pub trait CaConnector: Send + Sync {
    /// Submits `csr` (PEM, already checked: signature, key) for `subject`.
    fn issue(&self, csr: &str, subject: &[(String, String)]) -> Issuance;
}

/// A CA whose certificate and key are files beside the agent: it signs the request's key
/// under the subject the agent chose (the request's own subject is not trusted).
pub struct FileCa {
    ca: Arc<noc_ca::DeviceCa>,
    validity_days: u32,
}

impl FileCa {
    pub fn load(cert_path: &Path, key_path: &Path, validity_days: u32) -> Result<Self, AgentError> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| AgentError::Config(format!("{}: {e}", p.display())));
        let ca = noc_ca::DeviceCa::from_pem(&read(cert_path)?, &read(key_path)?)
            .map_err(|e| AgentError::Config(format!("{}: {e}", cert_path.display())))?;
        Ok(FileCa { ca: Arc::new(ca), validity_days })
    }
}

impl CaConnector for FileCa {
    fn issue(&self, csr: &str, subject: &[(String, String)]) -> Issuance {
        let now = noc_protocol::clock::unix_ms_i64() / 1000;
        let result = match self.ca.issue_for_subject(csr, subject, self.validity_days, now) {
            Ok(Ok(issued)) => Ok(format!("{}{}", issued.pem, self.ca.root_pem())),
            Ok(Err(e)) => Err(ConnectorError::Rejected(e.to_string())),
            Err(e) => Err(ConnectorError::Rejected(e.to_string())),
        };
        Box::pin(async move { result })
    }
}

/// One profile, ready to use.
pub struct Profile {
    pub require_approval: bool,
    pub subject_suffix: Vec<(String, String)>,
    pub connector: Arc<dyn CaConnector>,
    /// Tell devices to enroll again this long before expiry (`None`: never).
    pub renew_before: Option<Duration>,
    /// Where the CA's revocation list is read, and how often.
    pub crl: Option<(CrlSource, Duration)>,
}

/// Where a revocation list comes from.
pub enum CrlSource {
    Path(std::path::PathBuf),
    Url(String, reqwest::Client),
}

impl CrlSource {
    async fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            CrlSource::Path(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())),
            CrlSource::Url(url, client) => {
                let answer = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
                if !answer.status().is_success() {
                    return Err(format!("{url}: {}", answer.status()));
                }
                read_capped(answer, MAX_ANSWER_BYTES).await.map_err(|e| format!("{url}: {e}"))
            }
        }
    }
}

/// A request as the administrator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestView {
    pub request_id: String,
    pub device_id: String,
    pub email: String,
    pub profile: String,
    pub state: String,
    pub subject: String,
    pub created_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The enrollment service: the profiles, the store, and a wake-up for its task.
#[derive(Clone)]
pub struct Enrollment {
    store: Arc<Store>,
    profiles: Arc<HashMap<String, Profile>>,
    limits: QueueLimits,
    wake: Arc<Notify>,
    /// When each profile's revocation list was last read.
    crl_read: Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
}

impl Enrollment {
    /// The profiles of `[ca]` (a file CA that cannot be loaded stops the agent).
    pub fn from_config(store: Arc<Store>, config: &CaConfig, limits: QueueLimits) -> Result<Self, AgentError> {
        let mut profiles = HashMap::new();
        for p in &config.profiles {
            let connector: Arc<dyn CaConnector> = match &p.authority {
                CaAuthorityConfig::File { cert_path, key_path, validity_days } => {
                    Arc::new(FileCa::load(cert_path, key_path, *validity_days)?)
                }
                CaAuthorityConfig::Est { url, label, ca_file, username, password, timeout_seconds } => {
                    let auth = username.clone().zip(password.clone());
                    let timeout = Duration::from_secs(*timeout_seconds);
                    Arc::new(est::EstCa::new(url, label.as_deref(), ca_file.as_deref(), auth, timeout)?)
                }
            };
            let crl_client = |ca_file: Option<&Path>| -> Result<reqwest::Client, AgentError> {
                let tls =
                    noc_tls::client_config(ca_file, &[b"http/1.1"]).map_err(|e| AgentError::Config(e.to_string()))?;
                reqwest::Client::builder()
                    .use_preconfigured_tls(tls)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| AgentError::Config(format!("CRL client: {e}")))
            };
            let crl_ca = match &p.authority {
                CaAuthorityConfig::Est { ca_file, .. } => ca_file.as_deref(),
                CaAuthorityConfig::File { .. } => None,
            };
            let crl = match (&p.crl_path, &p.crl_url) {
                (Some(path), _) => Some(CrlSource::Path(path.clone())),
                (None, Some(url)) => Some(CrlSource::Url(url.clone(), crl_client(crl_ca)?)),
                (None, None) => None,
            };
            let profile = Profile {
                require_approval: p.require_approval,
                subject_suffix: p.subject_suffix.clone(),
                connector,
                renew_before: (p.renew_before_days > 0)
                    .then(|| Duration::from_secs(u64::from(p.renew_before_days) * 86_400)),
                crl: crl.map(|c| (c, Duration::from_secs(p.crl_refresh_seconds))),
            };
            profiles.insert(p.name.clone(), profile);
        }
        Ok(Self::new(store, profiles, limits))
    }

    pub fn new(store: Arc<Store>, profiles: HashMap<String, Profile>, limits: QueueLimits) -> Self {
        Enrollment {
            store,
            profiles: Arc::new(profiles),
            limits,
            wake: Arc::new(Notify::new()),
            crl_read: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// Wakes the task (a request arrived, or one was approved).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What wakes the task, for whoever learns that a request arrived.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Processes requests until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let wait = match self.step().await {
                Ok(retry) => retry.unwrap_or(IDLE_RECHECK).min(IDLE_RECHECK),
                Err(e) => {
                    tracing::error!(error = %e, "certificate enrollment");
                    IDLE_RECHECK
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Answers every new request item, then submits every approved request. Returns when
    /// a CA that holds a request wants to be asked again.
    pub async fn step(&self) -> Result<Option<Duration>, AgentError> {
        for r in self.store.received(None, Some("new"))? {
            if ItemType::parse(&r.header.item_type) != ItemType::CertificateRequest {
                continue;
            }
            let outcome = match r.peer.parse::<DeviceId>() {
                Ok(device) => self.on_request(device, &r.body),
                Err(_) => Err("not from a device".to_string()),
            };
            let (state, detail) = match &outcome {
                Ok(()) => ("processed", None),
                Err(why) => ("failed", Some(why.as_str())),
            };
            if let Some(why) = detail {
                tracing::warn!(peer = %r.peer, %why, "certificate request not taken");
            }
            self.store.set_received_state(r.row, state, detail, true)?;
        }
        let mut retry: Option<Duration> = None;
        for (device, request_id) in self.with_state("approved")? {
            if let Some(after) = self.submit(device, &request_id).await? {
                retry = Some(retry.map_or(after, |r| r.min(after)));
            }
        }
        self.watch_expiry()?;
        self.watch_revocation().await?;
        Ok(retry)
    }

    /// Issued certificates that expire within their profile's `renew_before_days`: the
    /// device is told once to enroll again (seed 002: the expiry date is monitored).
    pub fn watch_expiry(&self) -> Result<(), AgentError> {
        let now = now_ms() / 1000;
        let rows: Vec<(String, String, String, i64)> = self.store.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT device_id, request_id, profile, not_after FROM ca_requests \
                 WHERE state = 'issued' AND not_after IS NOT NULL AND renewal_sent_ms IS NULL",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        for (device, request_id, profile, not_after) in rows {
            let Ok(device) = device.parse::<DeviceId>() else { continue };
            let Some(before) = self.profiles.get(&profile).and_then(|p| p.renew_before) else { continue };
            if now < not_after.saturating_sub(i64::try_from(before.as_secs()).unwrap_or(i64::MAX)) {
                continue;
            }
            let when = noc_protocol::clock::iso_date(not_after.div_euclid(86_400));
            let message = format!("the certificate expires on {when}; enroll again");
            let request = CertificateRequest { request_id: request_id.clone(), profile, csr: None };
            self.status(device, &request, EnrollState::Renew, Some(&message), &[], None)
                .map_err(AgentError::Control)?;
            self.store.with_conn(|c| {
                c.execute(
                    "UPDATE ca_requests SET renewal_sent_ms = ?1 WHERE device_id = ?2 AND request_id = ?3",
                    params![now_ms(), device.to_string(), request_id],
                )
            })?;
            tracing::info!(%device, request_id, %when, "enterprise certificate due for renewal; device told");
        }
        Ok(())
    }

    /// Issued certificates the CA's revocation list names: recorded as revoked, reported
    /// in the log and to the device, which deletes them. A list that cannot be read or
    /// does not verify changes nothing (and is logged).
    pub async fn watch_revocation(&self) -> Result<(), AgentError> {
        for (name, profile) in self.profiles.iter() {
            let Some((source, every)) = &profile.crl else { continue };
            {
                let mut read = self.crl_read.lock().unwrap_or_else(|p| p.into_inner());
                if read.get(name).is_some_and(|at| at.elapsed() < *every) {
                    continue;
                }
                read.insert(name.clone(), std::time::Instant::now());
            }
            let list = match source.read().await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(profile = %name, error = %e, "revocation list not read");
                    continue;
                }
            };
            let rows: Vec<(String, String, String, String)> = self.store.with_conn(|c| {
                let mut stmt = c.prepare(
                    "SELECT device_id, request_id, COALESCE(serial, ''), COALESCE(chain, '') FROM ca_requests \
                     WHERE state = 'issued' AND profile = ?1",
                )?;
                let rows = stmt.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })?;
            for (device, request_id, serial, chain) in rows {
                let Ok(device) = device.parse::<DeviceId>() else { continue };
                // The list must verify with a CA certificate of the chain it was issued under.
                let revoked = chain_certificates(&chain)
                    .iter()
                    .skip(1)
                    .find_map(|ca| noc_ca::crl::revoked_serials(&list, ca).ok())
                    .is_some_and(|serials| serials.contains(&serial));
                if revoked {
                    tracing::warn!(%device, request_id, %serial, profile = %name, "enterprise certificate revoked by its CA");
                    let request = CertificateRequest { request_id, profile: name.clone(), csr: None };
                    let why = "the certification authority revoked this certificate";
                    self.finish(device, &request, EnrollState::Revoked, why).map_err(AgentError::Control)?;
                }
            }
        }
        Ok(())
    }

    /// Every request, newest first (`ves-agent ca list`).
    pub fn all(&self) -> Result<Vec<RequestView>, AgentError> {
        let rows: Vec<(String, String)> = self.store.with_conn(|c| {
            let mut stmt = c.prepare("SELECT device_id, request_id FROM ca_requests ORDER BY updated_ms DESC")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut out = Vec::new();
        for (device, request_id) in rows {
            if let Ok(device) = device.parse::<DeviceId>() {
                out.push(self.view(device, &request_id)?);
            }
        }
        Ok(out)
    }

    /// A `certificate-request` from `device`: the first asks for the subject, the second
    /// brings the PKCS#10 request. `Err` only when nothing can be answered (no request id).
    fn on_request(&self, device: DeviceId, body: &[u8]) -> Result<(), String> {
        let request = CertificateRequest::parse(body).map_err(|e| e.to_string())?;
        let fail = |message: &str| self.status(device, &request, EnrollState::Failed, Some(message), &[], None);
        let Some(profile) = self.profiles.get(&request.profile) else {
            return fail(&format!("there is no certificate profile named {:?}", request.profile));
        };
        let user = match db::device_user(&self.store, device).map_err(|e| e.to_string())? {
            Some(user) => user,
            None => return fail("this device is not known to the enterprise server"),
        };
        let Some(record) = db::active_user(&self.store, user).map_err(|e| e.to_string())? else {
            return fail("the device's user is not served by this enterprise server");
        };
        let existing = self.row(device, &request.request_id).map_err(|e| e.to_string())?;
        let Some(csr) = &request.csr else {
            // A request id is used once: a resent first step changes nothing that went on.
            if let Some(row) = existing {
                return match row.state.as_str() {
                    "subject" => self.status(device, &request, EnrollState::Subject, None, &row.subject, None),
                    _ => Ok(()),
                };
            }
            // Step one: the user's distinguished name, from the agent's directory.
            let full_name = format!("{} {}", record.first_name, record.last_name).trim().to_string();
            let mut subject = vec![("CN".to_string(), full_name), ("emailAddress".to_string(), record.email.clone())];
            subject.extend(profile.subject_suffix.iter().cloned());
            self.put(device, user, &request, "subject", &subject).map_err(|e| e.to_string())?;
            return self.status(device, &request, EnrollState::Subject, None, &subject, None);
        };
        // Step two: the request for that subject, signed by the device's new key.
        let Some(row) = existing else {
            return fail("no subject was sent for this request id: start the enrollment again");
        };
        if row.state != "subject" {
            return Ok(()); // a resend of a request already taken
        }
        if row.profile != request.profile {
            return self.finish(device, &request, EnrollState::Failed, "the profile is not the one of the first step");
        }
        let info = match noc_ca::read_request(csr) {
            Ok(info) => info,
            Err(e) => return self.finish(device, &request, EnrollState::Failed, &e.to_string()),
        };
        if info.subject.as_deref() != Some(row.subject.as_slice()) {
            let why = "the request's subject is not the distinguished name the enterprise server sent";
            return self.finish(device, &request, EnrollState::Failed, why);
        }
        let state = if profile.require_approval { EnrollState::Queued } else { EnrollState::Approved };
        self.store
            .with_conn(|c| {
                c.execute(
                    "UPDATE ca_requests SET csr = ?1, public_key = ?2, state = ?3, updated_ms = ?4 \
                     WHERE device_id = ?5 AND request_id = ?6",
                    params![csr, info.public_key, state.as_str(), now_ms(), device.to_string(), request.request_id],
                )
            })
            .map_err(|e| e.to_string())?;
        let message = match state {
            EnrollState::Queued => "waiting for an administrator's approval",
            _ => "sent to the certification authority",
        };
        self.status(device, &request, state, Some(message), &[], None)?;
        if state == EnrollState::Approved {
            self.wake();
        }
        Ok(())
    }

    /// Sends an approved request to its CA; the answer is checked and sent to the device.
    /// `Some` when the CA holds it: ask again after that long.
    async fn submit(&self, device: DeviceId, request_id: &str) -> Result<Option<Duration>, AgentError> {
        let Some(row) = self.row(device, request_id)? else { return Ok(None) };
        let request =
            CertificateRequest { request_id: request_id.to_string(), profile: row.profile.clone(), csr: None };
        let Some(profile) = self.profiles.get(&row.profile) else {
            let why = format!("the certificate profile {:?} no longer exists", row.profile);
            return self
                .finish(device, &request, EnrollState::Failed, &why)
                .map(|()| None)
                .map_err(AgentError::Control);
        };
        let csr = row.csr.clone().unwrap_or_default();
        let chain = match profile.connector.issue(&csr, &row.subject).await {
            Ok(chain) => chain,
            Err(ConnectorError::Unavailable(why)) => {
                tracing::warn!(%device, request_id, %why, "certification authority unavailable; retrying later");
                return Ok(None);
            }
            Err(ConnectorError::Held(after)) => {
                tracing::info!(%device, request_id, retry_in_s = after.as_secs(), "the certification authority holds the request");
                return Ok(Some(after));
            }
            Err(e @ ConnectorError::Rejected(_)) => {
                let why = e.to_string();
                return self
                    .finish(device, &request, EnrollState::Rejected, &why)
                    .map(|()| None)
                    .map_err(AgentError::Control);
            }
        };
        // Seed 002 step 13a: the certificate must be for the key of the device's request.
        let leaf_key = leaf_public_key(&chain);
        if leaf_key.as_deref() != row.public_key.as_deref() {
            let why = "the certification authority returned a certificate for another key; it was refused";
            tracing::error!(%device, request_id, "{why}");
            return self.finish(device, &request, EnrollState::Failed, why).map(|()| None).map_err(AgentError::Control);
        }
        let leaf = chain_certificates(&chain).into_iter().next().unwrap_or_default();
        let (serial, not_after) = (noc_ca::crl::serial_of(&leaf), noc_ca::certificate_not_after(&leaf));
        self.store.with_conn(|c| {
            c.execute(
                "UPDATE ca_requests SET state = 'issued', chain = ?1, serial = ?2, not_after = ?3, updated_ms = ?4 \
                 WHERE device_id = ?5 AND request_id = ?6",
                params![chain, serial, not_after, now_ms(), device.to_string(), request_id],
            )
        })?;
        tracing::info!(%device, request_id, profile = %row.profile, "enterprise certificate issued");
        self.status(device, &request, EnrollState::Issued, None, &[], Some(chain)).map_err(AgentError::Control)?;
        Ok(None)
    }

    /// Requests waiting for an administrator.
    pub fn pending(&self) -> Result<Vec<RequestView>, AgentError> {
        let rows = self.store.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT r.request_id, r.device_id, COALESCE(u.email, ''), r.profile, r.state, r.subject, r.created_ms, \
                 r.message FROM ca_requests r LEFT JOIN users u ON u.user_id = r.user_id \
                 WHERE r.state = 'queued' ORDER BY r.created_ms",
            )?;
            let rows = stmt.query_map([], |r| {
                let subject: String = r.get(5)?;
                Ok(RequestView {
                    request_id: r.get(0)?,
                    device_id: r.get(1)?,
                    email: r.get(2)?,
                    profile: r.get(3)?,
                    state: r.get(4)?,
                    subject: serde_json::from_str::<Vec<(String, String)>>(&subject)
                        .map(|s| s.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                    created_ms: r.get(6)?,
                    message: r.get(7)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows)
    }

    /// An administrator approves a waiting request: it goes to the CA.
    pub fn approve(&self, request_id: &str) -> Result<RequestView, AgentError> {
        let (device, row) = self.queued(request_id)?;
        self.set_state(device, request_id, "approved", None)?;
        let request = CertificateRequest { request_id: request_id.to_string(), profile: row.profile, csr: None };
        self.status(
            device,
            &request,
            EnrollState::Approved,
            Some("approved; sent to the certification authority"),
            &[],
            None,
        )
        .map_err(AgentError::Control)?;
        self.wake();
        self.view(device, request_id)
    }

    /// An administrator refuses a waiting request.
    pub fn reject(&self, request_id: &str, reason: &str) -> Result<RequestView, AgentError> {
        let (device, row) = self.queued(request_id)?;
        let reason = if reason.trim().is_empty() { "refused by an administrator" } else { reason.trim() };
        let request = CertificateRequest { request_id: request_id.to_string(), profile: row.profile, csr: None };
        self.finish(device, &request, EnrollState::Rejected, reason).map_err(AgentError::Control)?;
        self.view(device, request_id)
    }

    fn queued(&self, request_id: &str) -> Result<(DeviceId, Row), AgentError> {
        let devices: Vec<String> = self.store.with_conn(|c| {
            let mut stmt = c.prepare("SELECT device_id FROM ca_requests WHERE request_id = ?1 AND state = 'queued'")?;
            let rows = stmt.query_map(params![request_id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let [device] = devices.as_slice() else {
            return Err(AgentError::Control(format!("no request {request_id} waits for approval")));
        };
        let device: DeviceId =
            device.parse().map_err(|_| AgentError::Control(format!("request {request_id}: bad device id")))?;
        let row =
            self.row(device, request_id)?.ok_or_else(|| AgentError::Control(format!("no request {request_id}")))?;
        Ok((device, row))
    }

    fn view(&self, device: DeviceId, request_id: &str) -> Result<RequestView, AgentError> {
        let row =
            self.row(device, request_id)?.ok_or_else(|| AgentError::Control(format!("no request {request_id}")))?;
        let email = db::user(&self.store, row.user)?.map(|u| u.email).unwrap_or_default();
        Ok(RequestView {
            request_id: request_id.to_string(),
            device_id: device.to_string(),
            email,
            profile: row.profile,
            state: row.state,
            subject: row.subject.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
            created_ms: row.created_ms,
            message: row.message,
        })
    }

    /// Records a final state with its message and tells the device.
    fn finish(
        &self,
        device: DeviceId,
        request: &CertificateRequest,
        state: EnrollState,
        message: &str,
    ) -> Result<(), String> {
        self.set_state(device, &request.request_id, state.as_str(), Some(message)).map_err(|e| e.to_string())?;
        self.status(device, request, state, Some(message), &[], None)
    }

    /// Queues a status for the device, replacing the one still queued for this request.
    fn status(
        &self,
        device: DeviceId,
        request: &CertificateRequest,
        state: EnrollState,
        message: Option<&str>,
        subject: &[(String, String)],
        chain: Option<String>,
    ) -> Result<(), String> {
        let status = CertificateStatus {
            request_id: request.request_id.clone(),
            profile: request.profile.clone(),
            state,
            message: message.map(str::to_string),
            subject: subject.iter().map(|(k, v)| NameAttribute { kind: k.clone(), value: v.clone() }).collect(),
            chain,
        };
        let body = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
        let mut item = Item::new(ItemType::CertificateStatus, Some(request.request_id.clone()), body);
        item.header.created_at_ms = now_ms();
        let encoded = item.encode().map_err(|e| e.to_string())?;
        let ty = ItemType::CertificateStatus.as_str();
        let limits = QueueLimits { policy: FullPolicy::DropOldest, ..self.limits };
        self.store
            .enqueue_replacing(
                &device.to_string(),
                ItemId::random(),
                ty,
                &request.request_id,
                &encoded,
                limits,
                now_ms(),
            )
            .map_err(|e| e.to_string())?;
        tracing::info!(%device, request_id = %request.request_id, state = state.as_str(), "certificate status queued");
        Ok(())
    }

    fn put(
        &self,
        device: DeviceId,
        user: UserId,
        request: &CertificateRequest,
        state: &str,
        subject: &[(String, String)],
    ) -> Result<(), AgentError> {
        let subject = serde_json::to_string(subject).map_err(|e| AgentError::Control(e.to_string()))?;
        self.store.with_conn(|c| {
            c.execute(
                "INSERT INTO ca_requests (device_id, request_id, user_id, profile, state, subject, created_ms, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![device.to_string(), request.request_id, user.to_string(), request.profile, state, subject, now_ms()],
            )
        })?;
        Ok(())
    }

    fn set_state(
        &self,
        device: DeviceId,
        request_id: &str,
        state: &str,
        message: Option<&str>,
    ) -> Result<(), AgentError> {
        self.store.with_conn(|c| {
            c.execute(
                "UPDATE ca_requests SET state = ?1, message = ?2, updated_ms = ?3 WHERE device_id = ?4 AND request_id = ?5",
                params![state, message, now_ms(), device.to_string(), request_id],
            )
        })?;
        Ok(())
    }

    fn with_state(&self, state: &str) -> Result<Vec<(DeviceId, String)>, AgentError> {
        let rows: Vec<(String, String)> = self.store.with_conn(|c| {
            let mut stmt = c.prepare("SELECT device_id, request_id FROM ca_requests WHERE state = ?1")?;
            let rows = stmt.query_map(params![state], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().filter_map(|(d, r)| Some((d.parse().ok()?, r))).collect())
    }

    fn row(&self, device: DeviceId, request_id: &str) -> Result<Option<Row>, AgentError> {
        let row = self.store.with_conn(|c| {
            c.query_row(
                "SELECT user_id, profile, state, subject, csr, public_key, message, created_ms FROM ca_requests \
                 WHERE device_id = ?1 AND request_id = ?2",
                params![device.to_string(), request_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<Vec<u8>>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                },
            )
            .optional()
        })?;
        let Some((user, profile, state, subject, csr, public_key, message, created_ms)) = row else { return Ok(None) };
        Ok(Some(Row {
            user: user.parse().map_err(|_| AgentError::Control("ca_requests: bad user id".into()))?,
            profile,
            state,
            subject: serde_json::from_str(&subject).unwrap_or_default(),
            csr,
            public_key,
            message,
            created_ms,
        }))
    }
}

/// A `ca_requests` row.
struct Row {
    user: UserId,
    profile: String,
    state: String,
    subject: Vec<(String, String)>,
    csr: Option<String>,
    public_key: Option<Vec<u8>>,
    message: Option<String>,
    created_ms: i64,
}

/// Most bytes read from an EST server's or a CRL server's answer.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// An HTTP answer's body, refused past `max` bytes (a server that sends without end
/// costs the agent no more memory than that).
async fn read_capped(mut answer: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The subjectPublicKey of the first certificate of a PEM chain.
fn leaf_public_key(chain: &str) -> Option<Vec<u8>> {
    noc_ca::certificate_public_key(chain_certificates(chain).first()?)
}

/// The certificates (DER) of a PEM chain, in order.
fn chain_certificates(chain: &str) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn now_ms() -> i64 {
    noc_protocol::clock::unix_ms_i64()
}

mod est;

#[cfg(test)]
mod tests;
