//! Everything a run needs before traffic: a license, VES registrations, provisioned and
//! activated users, activated devices — kept in a credentials file so that reruns reuse
//! them.
//!
//! Provisioning and activation are slow on purpose (each is an argon2id hash on the
//! relay), so they run with bounded concurrency and their results are cached. A rerun
//! reconciles the cache with the relay (`ListUsers`) and only redoes what is missing, so
//! a relay that was reset or a scenario that grew is handled without manual cleanup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use noc_protocol::DeviceId;
use noc_protocol::rts::{AccountActivationRequest, DataRequest, DeviceActivationRequest, Secret, UserList};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::rts_client::{RtsClient, RtsError, SessionKeys};
use crate::scenario::Scenario;

/// Layout version of the credentials file.
pub const CREDENTIALS_FORMAT: u32 = 1;
/// Seats of a license the tool creates itself: enough for any campaign.
pub const CREATED_LICENSE_SEATS: u32 = 10_000_000;
/// How often the credentials file is rewritten while setup progresses.
const SAVE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("client certificate: {0}")]
    Certificate(String),
    #[error("credentials file {path} is not usable: {message}")]
    Format { path: PathBuf, message: String },
    #[error("credentials file {path} belongs to relay {cached}, not {given}; pass another --credentials file")]
    RelayMismatch { path: PathBuf, cached: String, given: String },
    #[error("creating the license with {noc_bin}: {message}")]
    Admin { noc_bin: PathBuf, message: String },
    #[error("no license: pass --license-name/--license-password, or --noc-bin and --data-dir to create one")]
    NoLicense,
    #[error("{what}: {source}")]
    Rts { what: String, source: RtsError },
    #[error("user {email} is {status} on the relay; use another credentials file")]
    UserState { email: String, status: String },
}

fn rts(what: impl Into<String>) -> impl FnOnce(RtsError) -> SetupError {
    let what = what.into();
    move |source| SetupError::Rts { what, source }
}

/// Where the license comes from.
#[derive(Clone, Debug)]
pub enum LicenseSource {
    /// An existing license.
    Existing { name: String, password: String },
    /// Created by the relay's admin command on its data directory (a local relay).
    Admin { noc_bin: PathBuf, data_dir: PathBuf, config: Option<PathBuf> },
    /// Only what the credentials file holds (a rerun).
    Cached,
}

/// The credentials file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub format: u32,
    /// The relay these accounts live on.
    pub relay_url: String,
    /// Random per file: keeps e-mail addresses and MSISDNs of different files apart.
    pub campaign: u32,
    #[serde(default)]
    pub license_name: Option<String>,
    #[serde(default)]
    pub license_password: Option<String>,
    #[serde(default)]
    pub license_token: Option<String>,
    #[serde(default)]
    pub ves: Vec<VesCredentials>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VesCredentials {
    /// The VES's long-term secret (32 hex digits).
    pub guid: String,
    #[serde(default)]
    pub users: Vec<UserCredentials>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCredentials {
    pub email: String,
    pub password: String,
    pub msisdn: String,
    #[serde(default)]
    pub devices: Vec<DeviceCredentials>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCredentials {
    pub device_id: DeviceId,
    /// 64 hex digits, as device activation returned it.
    pub credential: String,
    /// The device channel, as device activation returned it.
    pub host: String,
    pub port: u16,
    /// The client certificate (PEM) and its key (PEM, made here), when the device
    /// activated with a certificate request (`device_client_certificates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn random_u32() -> u32 {
    u32::from_be_bytes(noc_protocol::secrets::random_bytes::<4>())
}

impl Credentials {
    pub fn new(relay_url: &str) -> Self {
        Self {
            format: CREDENTIALS_FORMAT,
            relay_url: relay_url.to_string(),
            campaign: random_u32() % 100_000,
            license_name: None,
            license_password: None,
            license_token: None,
            ves: Vec::new(),
        }
    }

    /// Loads `path` if it exists (checking it is for `relay_url`), else starts afresh.
    pub fn load_or_new(path: &Path, relay_url: &str) -> Result<Self, SetupError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new(relay_url)),
            Err(source) => return Err(SetupError::Io { path: path.to_path_buf(), source }),
        };
        let creds: Credentials = serde_json::from_str(&text)
            .map_err(|e| SetupError::Format { path: path.to_path_buf(), message: e.to_string() })?;
        if creds.format != CREDENTIALS_FORMAT {
            return Err(SetupError::Format {
                path: path.to_path_buf(),
                message: format!("format {} (this tool writes {CREDENTIALS_FORMAT})", creds.format),
            });
        }
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        if norm(&creds.relay_url) != norm(relay_url) {
            return Err(SetupError::RelayMismatch {
                path: path.to_path_buf(),
                cached: creds.relay_url,
                given: relay_url.to_string(),
            });
        }
        Ok(creds)
    }

    /// Writes the file atomically, readable by its owner only (it holds secrets).
    pub fn save(&self, path: &Path) -> Result<(), SetupError> {
        let io = |source| SetupError::Io { path: path.to_path_buf(), source };
        let json = serde_json::to_vec(self)
            .map_err(|e| SetupError::Format { path: path.to_path_buf(), message: e.to_string() })?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(&json).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Adds the VES and user entries the scenario needs (identities only; nothing on the
    /// relay yet). Existing entries are kept, so a rerun reuses them.
    pub fn shape_for(&mut self, scenario: &Scenario) {
        while self.ves.len() < scenario.ves_count as usize {
            self.ves.push(VesCredentials { guid: noc_protocol::secrets::random_hex::<16>(), users: Vec::new() });
        }
        let users = scenario.users_per_ves() as usize;
        let campaign = self.campaign;
        for (v, ves) in self.ves.iter_mut().enumerate().take(scenario.ves_count as usize) {
            while ves.users.len() < users {
                let u = ves.users.len();
                ves.users.push(UserCredentials {
                    email: format!("lt{campaign:05}-v{v}-u{u}@loadtest.invalid"),
                    password: noc_protocol::secrets::random_password(16),
                    msisdn: format!("+{campaign:05}{v:03}{u:07}"),
                    devices: Vec::new(),
                });
            }
        }
    }

    /// The devices of VES `v` that the scenario uses, in a stable order.
    pub fn devices_of(&self, v: usize, scenario: &Scenario) -> Vec<DeviceCredentials> {
        let Some(ves) = self.ves.get(v) else { return Vec::new() };
        let per_user = scenario.devices_per_user as usize;
        ves.users
            .iter()
            .flat_map(|u| u.devices.iter().take(per_user))
            .take(scenario.devices_per_ves as usize)
            .cloned()
            .collect()
    }
}

/// Runs `noc admin license create` on the relay's data directory.
async fn create_license(
    noc_bin: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    name: &str,
    password: &str,
) -> Result<(), SetupError> {
    let admin_err = |message: String| SetupError::Admin { noc_bin: noc_bin.to_path_buf(), message };
    let mut cmd = tokio::process::Command::new(noc_bin);
    cmd.arg("admin").arg("--data-dir").arg(data_dir);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["license", "create", "--name", name, "--password-stdin", "--max-users"])
        .arg(CREATED_LICENSE_SEATS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| admin_err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{password}\n").as_bytes()).await.map_err(|e| admin_err(e.to_string()))?;
    }
    let out = child.wait_with_output().await.map_err(|e| admin_err(e.to_string()))?;
    if !out.status.success() {
        return Err(admin_err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Makes sure the credentials hold a license-id token (needed the first time a VES GUID
/// connects), creating or logging in to the license as `source` says.
pub async fn ensure_license(
    creds: &mut Credentials,
    source: &LicenseSource,
    client: &RtsClient,
) -> Result<(), SetupError> {
    match source {
        LicenseSource::Existing { name, password } => {
            creds.license_name = Some(name.clone());
            creds.license_password = Some(password.clone());
        }
        LicenseSource::Admin { noc_bin, data_dir, config } => {
            if creds.license_name.is_none() {
                let name = format!("loadtest-{:05}-{}", creds.campaign, noc_protocol::secrets::random_hex::<4>());
                let password = noc_protocol::secrets::random_password(20);
                create_license(noc_bin, data_dir, config.as_deref(), &name, &password).await?;
                creds.license_name = Some(name);
                creds.license_password = Some(password);
            }
        }
        LicenseSource::Cached => {}
    }
    match (&creds.license_name, &creds.license_password) {
        (Some(name), Some(password)) => {
            let resp = client.license(name, password).await.map_err(rts("license login"))?;
            creds.license_token = Some(resp.license_id);
            Ok(())
        }
        _ if creds.license_token.is_some() => Ok(()),
        _ => Err(SetupError::NoLicense),
    }
}

/// What one user still needs on the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Todo {
    /// Not on the relay: provision, activate, activate devices.
    Provision,
    /// Provisioned (or MSISDN differs): activate the account, then the devices.
    Activate,
    /// The relay's device count differs from the cache: reset the password (revoking
    /// every device) and activate the devices again.
    ResetDevices,
    /// Active; activate `n` more devices.
    MoreDevices,
}

/// Progress callback: called with the number of devices just made ready.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Provisions and activates what VES `v` needs, reusing what the relay already has.
/// Returns the number of devices activated by this call.
#[allow(clippy::too_many_arguments)]
pub async fn prepare_ves(
    client: &RtsClient,
    keys: &SessionKeys,
    creds: &Mutex<Credentials>,
    path: &Path,
    v: usize,
    scenario: &Scenario,
    progress: Progress<'_>,
) -> Result<u64, SetupError> {
    let list: UserList = client.data(keys, &DataRequest::ListUsers {}).await.map_err(rts("ListUsers"))?;
    let on_relay: HashMap<String, _> = list.users.into_iter().map(|u| (u.email.clone(), u)).collect();
    let per_user = scenario.devices_per_user as usize;
    let certificates = scenario.device_client_certificates;
    let wanted = scenario.devices_per_ves as usize;
    let users: Vec<UserCredentials> = {
        let c = creds.lock().unwrap_or_else(|p| p.into_inner());
        c.ves[v].users.clone()
    };
    let mut work = Vec::new();
    let mut ready = 0u64;
    for (u, user) in users.iter().enumerate().take(scenario.users_per_ves() as usize) {
        let need = per_user.min(wanted.saturating_sub(u * per_user));
        let todo = match on_relay.get(&user.email) {
            None => Some(Todo::Provision),
            Some(s) if s.status == "suspended" => {
                return Err(SetupError::UserState { email: user.email.clone(), status: s.status.clone() });
            }
            Some(s) if s.status != "active" || s.msisdn.as_deref() != Some(&user.msisdn) => Some(Todo::Activate),
            Some(s) if s.devices as usize != user.devices.len() => Some(Todo::ResetDevices),
            Some(_) if certificates && user.devices.iter().take(need).any(|d| d.certificate.is_none()) => {
                Some(Todo::ResetDevices)
            }
            Some(_) if user.devices.len() < need => Some(Todo::MoreDevices),
            Some(_) => None,
        };
        match todo {
            Some(t) => work.push((u, need, t)),
            None => ready += need as u64,
        }
    }
    progress(ready);
    let last_save = Mutex::new(Instant::now());
    let jobs = futures_util::stream::iter(work.into_iter().map(|(u, need, todo)| {
        let user = users[u].clone();
        let last_save = &last_save;
        async move {
            let devices = prepare_user(client, keys, &user, need, todo, certificates).await?;
            let n = devices.len().min(need) as u64;
            let snapshot = {
                let mut c = creds.lock().unwrap_or_else(|p| p.into_inner());
                c.ves[v].users[u].devices = devices;
                let mut last = last_save.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= SAVE_EVERY {
                    *last = Instant::now();
                    Some(c.clone())
                } else {
                    None
                }
            };
            if let Some(c) = snapshot {
                c.save(path)?;
            }
            progress(n);
            Ok::<u64, SetupError>(n)
        }
    }));
    let mut done = 0;
    let mut results = jobs.buffer_unordered(scenario.setup_concurrency as usize);
    while let Some(r) = results.next().await {
        done += r?;
    }
    drop(results);
    let snapshot = creds.lock().unwrap_or_else(|p| p.into_inner()).clone();
    snapshot.save(path)?;
    Ok(done)
}

/// One user's steps; returns the user's devices afterwards.
async fn prepare_user(
    client: &RtsClient,
    keys: &SessionKeys,
    user: &UserCredentials,
    need: usize,
    todo: Todo,
    certificates: bool,
) -> Result<Vec<DeviceCredentials>, SetupError> {
    let mut devices = user.devices.clone();
    if todo == Todo::Provision {
        let req = DataRequest::ProvisionUser {
            email: user.email.clone(),
            password: Some(Secret(user.password.clone())),
            first_name: "Load".into(),
            last_name: "Test".into(),
        };
        let _: serde_json::Value =
            client.data(keys, &req).await.map_err(rts(format!("provisioning {}", user.email)))?;
        devices.clear();
    }
    if matches!(todo, Todo::Provision | Todo::Activate) {
        let req = AccountActivationRequest {
            login: user.email.clone(),
            password: Secret(user.password.clone()),
            msisdn: user.msisdn.clone(),
            time_zone: "UTC".into(),
        };
        client.activate_account(&req).await.map_err(rts(format!("activating account {}", user.email)))?;
    }
    if todo == Todo::ResetDevices || (todo == Todo::Activate && !devices.is_empty()) {
        let req =
            DataRequest::ResetPassword { email: user.email.clone(), password: Some(Secret(user.password.clone())) };
        let _: serde_json::Value =
            client.data(keys, &req).await.map_err(rts(format!("resetting devices of {}", user.email)))?;
        devices.clear();
    }
    while devices.len() < need {
        let key = match certificates {
            true => Some(certificate_request().map_err(|e| SetupError::Certificate(e.to_string()))?),
            false => None,
        };
        let req = DeviceActivationRequest {
            msisdn: user.msisdn.clone(),
            password: Secret(user.password.clone()),
            device_name: Some(format!("loadtest-{}", devices.len())),
            device_type: Some("noc-loadtest".into()),
            csr: key.as_ref().map(|(_, csr)| csr.clone()),
        };
        let resp = client.activate_device(&req).await.map_err(rts(format!("activating a device of {}", user.email)))?;
        if certificates && resp.client_certificate.is_none() {
            return Err(SetupError::Certificate("the relay issued no client certificate (has it a device CA?)".into()));
        }
        devices.push(DeviceCredentials {
            device_id: resp.device_id,
            credential: resp.device_credential,
            host: resp.device_host,
            port: resp.device_port,
            certificate: resp.client_certificate,
            key: key.map(|(key, _)| key),
        });
    }
    Ok(devices)
}

/// A new ECDSA P-256 key (PEM) and a certificate request for it (PEM).
fn certificate_request() -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_generates_unique_identities_and_keeps_existing_ones() {
        let mut c = Credentials::new("https://localhost:8443");
        let s = Scenario { ves_count: 2, devices_per_ves: 5, devices_per_user: 2, ..Scenario::default() };
        c.shape_for(&s);
        assert_eq!(c.ves.len(), 2);
        assert_eq!(c.ves[0].users.len(), 3);
        let guid = c.ves[1].guid.clone();
        let s2 = Scenario { devices_per_ves: 7, ..s.clone() };
        c.shape_for(&s2);
        assert_eq!(c.ves[1].guid, guid, "existing VES kept");
        assert_eq!(c.ves[0].users.len(), 4);
        let mut msisdns: Vec<_> = c.ves.iter().flat_map(|v| v.users.iter().map(|u| u.msisdn.clone())).collect();
        let n = msisdns.len();
        msisdns.sort();
        msisdns.dedup();
        assert_eq!(msisdns.len(), n);
        assert!(msisdns.iter().all(|m| m.len() == 16 && m.starts_with('+')), "{msisdns:?}");
    }

    #[test]
    fn credentials_file_round_trips_and_checks_the_relay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("creds.json");
        let mut c = Credentials::load_or_new(&path, "https://localhost:8443").expect("new");
        c.shape_for(&Scenario::default());
        c.ves[0].users[0].devices.push(DeviceCredentials {
            device_id: DeviceId::random(),
            credential: "00".repeat(32),
            host: "localhost".into(),
            port: 8444,
            certificate: None,
            key: None,
        });
        c.save(&path).expect("save");
        let back = Credentials::load_or_new(&path, "https://localhost:8443/").expect("load");
        assert_eq!(back.campaign, c.campaign);
        assert_eq!(back.devices_of(0, &Scenario::default()).len(), 1);
        let err = Credentials::load_or_new(&path, "https://other:8443").expect_err("other relay");
        assert!(matches!(err, SetupError::RelayMismatch { .. }));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "secrets file is private");
        }
    }
}
