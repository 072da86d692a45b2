//! Account rules on top of a [`Store`]: licenses, VES registration, provisioning with seat
//! limits, account and device activation, throttled password checks, revocation and audit
//! (white paper §3.4–3.7, §6.3.4, §7.2.1, §8.7, §9.2).
//!
//! Every backend shares these rules, so the embedded and the clustered relay behave alike.
//! Password hashing (argon2id) is deliberately slow; it runs on a fixed set of workers with
//! their own memory and a bounded queue ([`crate::hashing`]), so a login storm is told
//! "busy" instead of exhausting memory or stalling actors.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use noc_protocol::{DeviceId, LicenseId, UserId, VesId};
use thiserror::Error;

use crate::error::StoreError;
use crate::hashing::{HashError, Hasher, PasswordHashing};
use crate::invalid::{Invalid, NameField};
use crate::model::*;
use crate::secrets;
use crate::store::Store;
use crate::throttle::{Throttle, ThrottlePolicy, Throttled};

/// Whether an MSISDN needs carrier approval before an account can bind it (white paper §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MsisdnApproval {
    /// Any well-formed MSISDN is accepted.
    Open,
    /// Only MSISDNs on the approval list (`noc admin msisdn approve`).
    List,
}

/// How long web sign-in sessions live (see `web_sessions.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSessionPolicy {
    /// An ordinary session ends after this long without a request.
    pub idle_timeout: Duration,
    /// An ordinary session ends this long after sign-in, however active.
    pub max_age: Duration,
    /// A "keep me signed in" session ends this long after sign-in.
    pub persistent_max_age: Duration,
}

impl Default for WebSessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(12 * 3600),
            persistent_max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Tunables of the account rules.
#[derive(Clone, Debug)]
pub struct AccountPolicy {
    /// How password guessing is slowed down on every password route.
    pub throttle: ThrottlePolicy,
    pub msisdn_approval: MsisdnApproval,
    /// Length of passwords the relay generates.
    pub generated_password_length: usize,
    /// Shortest password a VES administrator may set.
    pub min_password_length: usize,
    pub hashing: PasswordHashing,
    /// How long a license-id token registers new VES installations after it was issued.
    pub license_token_ttl: Duration,
    /// How long web sign-in sessions live.
    pub web: WebSessionPolicy,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        Self {
            throttle: ThrottlePolicy::default(),
            msisdn_approval: MsisdnApproval::Open,
            generated_password_length: 12,
            min_password_length: 8,
            hashing: PasswordHashing::default(),
            license_token_ttl: Duration::from_secs(24 * 3600),
            web: WebSessionPolicy::default(),
        }
    }
}

/// Why an account operation was refused. The gateway maps each to an HTTP status or a
/// device close code; none carries information an attacker could use (a wrong password and
/// an unknown user are the same `InvalidCredentials`).
#[derive(Debug, Error)]
pub enum AccountError {
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failed password attempts from this source or for this login name: retry
    /// after the wait (no password was checked).
    #[error("too many failed attempts; retry in {0:?}")]
    Throttled(Throttled),
    #[error("license or account suspended or expired")]
    Suspended,
    #[error("device credential revoked")]
    Revoked,
    /// The client certificate is not the device's current one (a renewal or a new
    /// activation replaced it); the device's credential may still be good.
    #[error("client certificate not accepted")]
    CertificateRefused,
    /// The license closes the credential route: only AUTH_CERT, and activation with a
    /// certificate request.
    #[error("this license requires devices to use client certificates")]
    CertificateRequired,
    /// The credential is right, but the user asked for a remote wipe of this device: it
    /// gets the wipe instead of a session.
    #[error("a remote wipe is waiting for this device")]
    WipePending,
    #[error("license has no free seat (maximum {max})")]
    SeatsFull { max: u32 },
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    /// The operator's role (or the token's scope) does not allow the action.
    #[error("not allowed for this role")]
    Forbidden,
    #[error("MSISDN is not approved by the carrier")]
    MsisdnNotApproved,
    #[error("account not activated")]
    NotActivated,
    /// The user's access or the license does not include the feature.
    #[error("{} is not enabled for this account", .0.as_str())]
    FeatureDisabled(Feature),
    #[error("invalid input: {0}")]
    Invalid(#[from] Invalid),
    #[error("account store unavailable: {0}")]
    Unavailable(String),
    #[error("account store busy: {0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AccountError::NotFound,
            StoreError::Conflict(what) => AccountError::Conflict(what),
            StoreError::SeatsFull { max } => AccountError::SeatsFull { max },
            StoreError::Unavailable(m) => AccountError::Unavailable(m),
            StoreError::Busy(m) => AccountError::Busy(m),
            StoreError::Backend(m) => AccountError::Internal(m),
        }
    }
}

pub type Result<T> = std::result::Result<T, AccountError>;

/// What a device session needs to know about its owner; loaded once at authentication so
/// that the per-frame path never touches the store.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceAuth {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub ves_id: VesId,
    pub license_id: LicenseId,
}

/// The account service. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    policy: Arc<AccountPolicy>,
    hasher: Hasher,
    throttle: Arc<Throttle>,
}

impl From<HashError> for AccountError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => AccountError::Busy("password hashing is at capacity".into()),
            HashError::Failed(m) => AccountError::Internal(m),
        }
    }
}

impl Accounts {
    /// The account rules over `store`; starts the password-hashing workers.
    pub fn new(store: Arc<dyn Store>, policy: AccountPolicy) -> Result<Self> {
        let hasher = Hasher::start(policy.hashing).map_err(|e| match e {
            HashError::Failed(m) => AccountError::Invalid(Invalid::Hashing(m)),
            HashError::Busy => AccountError::Internal("hashing workers did not start".into()),
        })?;
        let throttle = Arc::new(Throttle::new(policy.throttle.clone()));
        Ok(Self { store, policy: Arc::new(policy), hasher, throttle })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn policy(&self) -> &AccountPolicy {
        &self.policy
    }

    /// Counts a request that is not a password check (a recovery mail asked for) against
    /// the source's and the name's budget, so that one address cannot fire them at will.
    pub(crate) fn throttle_request(&self, key: &str, source: IpAddr) -> Result<()> {
        self.throttle.admit(key, source, Instant::now()).map_err(AccountError::Throttled)
    }

    /// The throttle key of a user login as typed (e-mail address or MSISDN): the same for
    /// every route that takes one, so they share one budget.
    pub(crate) fn user_key(login: &str) -> String {
        let login = login.trim();
        if login.contains('@') { format!("user:{}", login.to_lowercase()) } else { format!("user:{login}") }
    }

    /// The user a login names (e-mail address, any case, or MSISDN), if any.
    pub(crate) async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>> {
        let login = login.trim();
        Ok(if login.contains('@') {
            self.store.user_by_email(&login.to_lowercase()).await?
        } else {
            self.store.user_by_msisdn(login).await?
        })
    }

    pub(crate) async fn hash_password(&self, password: &str) -> Result<String> {
        Ok(self.hasher.hash(password).await?)
    }

    async fn verify_password(&self, password: &str, hash: &str) -> Result<bool> {
        Ok(self.hasher.verify(password, hash).await?)
    }

    pub(crate) async fn audit(&self, actor: String, action: &str, subject: String, detail: String) {
        let event = AuditEvent::new(actor, action, subject, detail);
        if let Err(e) = self.store.append_audit(event).await {
            tracing::warn!(error = %e, action, "audit log write failed");
        }
    }

    // -- licenses ---------------------------------------------------------------------

    /// Creates a license (NOC administrator bootstrap).
    pub async fn create_license(
        &self,
        name: &str,
        password: &str,
        max_users: u32,
        expires_at: Option<i64>,
        actor: &str,
    ) -> Result<License> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(Invalid::LicenseName.into());
        }
        self.check_password_rules(password)?;
        let password_hash = self.hash_password(password).await?;
        let license = self
            .store
            .insert_license(NewLicense {
                name: name.to_string(),
                password_hash,
                max_users,
                expires_at,
                features: Features::ALL,
                admin_email: None,
            })
            .await?;
        self.audit(
            actor.to_string(),
            "license.create",
            format!("license:{}", license.id),
            format!("max_users={max_users}"),
        )
        .await;
        Ok(license)
    }

    /// Turns secret-question password recovery on or off for a license (off by default:
    /// weaker than the mailed link). Turning it off leaves the users' questions stored but
    /// unusable until it is on again.
    pub async fn set_license_secret_question_recovery(
        &self,
        name: &str,
        enabled: bool,
        actor: &str,
    ) -> Result<License> {
        let license = self.store.set_license_secret_question_recovery(name, enabled).await?;
        self.audit(
            actor.to_string(),
            "license.secret_question_recovery",
            format!("license:{}", license.id),
            format!("enabled={enabled}"),
        )
        .await;
        Ok(license)
    }

    /// Turns features of a license on (`enable`) or off (`disable`), from the CLI.
    pub async fn set_license_features(
        &self,
        name: &str,
        enable: &[Feature],
        disable: &[Feature],
        actor: &str,
    ) -> Result<License> {
        let (before, _) = self.store.license_by_name(name).await?.ok_or(AccountError::NotFound)?;
        let mut features = before.features;
        for f in enable {
            features = features.with(*f, true);
        }
        for f in disable {
            features = features.with(*f, false);
        }
        let change = LicenseChange { features: Some(features), ..LicenseChange::default() };
        let after = self.store.update_license(before.id, &change).await?;
        if after.features != before.features {
            let detail = format!("features: {} -> {}", before.features.describe(), after.features.describe());
            self.audit(actor.to_string(), "license.change", format!("license:{}", after.id), detail).await;
        }
        Ok(after)
    }

    pub async fn set_license_suspended(&self, name: &str, suspended: bool, actor: &str) -> Result<License> {
        let license = self.store.set_license_suspended(name, suspended).await?;
        let action = if suspended { "license.suspend" } else { "license.resume" };
        self.audit(actor.to_string(), action, format!("license:{}", license.id), String::new()).await;
        Ok(license)
    }

    /// VES installations whose license is suspended or has expired by now. Logins check
    /// the license themselves; a node polls this to end sessions that were already live.
    pub async fn ves_of_unusable_licenses(&self) -> Result<Vec<VesId>> {
        Ok(self.store.ves_of_unusable_licenses(noc_protocol::clock::unix_ms_i64()).await?)
    }

    /// Checks `password` for the login `key` under the throttle: refused at once while
    /// `key` or `source` must wait; otherwise the attempt counts as a failure unless the
    /// password is right (`hash` `None`: a name that does not exist, which takes as long).
    pub(crate) async fn throttled_check(
        &self,
        key: &str,
        source: IpAddr,
        password: &str,
        hash: Option<&str>,
    ) -> Result<()> {
        self.throttle.admit(key, source, Instant::now()).map_err(AccountError::Throttled)?;
        let ok = match hash {
            Some(hash) => self.verify_password(password, hash).await?,
            None => {
                self.hasher.pretend().await;
                false
            }
        };
        if ok {
            self.throttle.succeeded(key, source);
            Ok(())
        } else {
            Err(AccountError::InvalidCredentials)
        }
    }

    /// License name + password → a new license-id token (white paper §3.4) and when it
    /// expires (unix ms). Expired tokens of the license are deleted on the way.
    pub async fn license_login(&self, name: &str, password: &str, source: IpAddr) -> Result<(String, i64, License)> {
        let key = format!("license:{}", name.trim());
        let found = self.store.license_by_name(name).await?;
        let checked = self.throttled_check(&key, source, password, found.as_ref().map(|(_, h)| h.as_str())).await;
        let license = match (checked, found) {
            (Ok(()), Some((license, _))) => license,
            (Err(AccountError::InvalidCredentials), Some((license, _))) => {
                self.audit(
                    "anonymous".into(),
                    "license.login_failed",
                    format!("license:{}", license.id),
                    String::new(),
                )
                .await;
                return Err(AccountError::InvalidCredentials);
            }
            (Err(e), _) => return Err(e),
            (Ok(()), None) => return Err(AccountError::InvalidCredentials),
        };
        if !license.usable_at(noc_protocol::clock::unix_ms_i64()) {
            return Err(AccountError::Suspended);
        }
        let token = secrets::random_hex::<32>();
        let now = noc_protocol::clock::unix_ms_i64();
        let ttl = self.license_token_ttl_ms();
        self.store.insert_license_token(&secrets::token_hash(token.as_bytes()), license.id, now, now - ttl).await?;
        self.audit(
            format!("license:{}", license.id),
            "license.login",
            format!("license:{}", license.id),
            String::new(),
        )
        .await;
        Ok((token, now.saturating_add(ttl), license))
    }

    fn license_token_ttl_ms(&self) -> i64 {
        i64::try_from(self.policy.license_token_ttl.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Sets a new license password (an operator action) and revokes every license-id token
    /// of the license: whoever learnt the old password can no longer register a VES with
    /// a token obtained before. Installations already registered are not affected.
    pub async fn set_license_password(&self, name: &str, password: &str, actor: &str) -> Result<(License, u64)> {
        self.check_password_rules(password)?;
        let hash = self.hash_password(password).await?;
        let (license, revoked) = self.store.set_license_password(name, &hash).await?;
        self.audit(
            actor.to_string(),
            "license.password_changed",
            format!("license:{}", license.id),
            format!("tokens_revoked={revoked}"),
        )
        .await;
        Ok((license, revoked))
    }

    // -- VES --------------------------------------------------------------------------

    /// Records what a VES installation runs (its `Agent`, at most 100 printable
    /// characters kept); a failure is logged, not fatal.
    pub async fn record_ves_agent(&self, ves: VesId, agent: &str) {
        let agent: String = agent.chars().filter(|c| !c.is_control()).take(100).collect();
        if agent.trim().is_empty() {
            return;
        }
        if let Err(e) = self.store.set_ves_agent(ves, agent.trim()).await {
            tracing::warn!(error = %e, ves = %ves, "could not record the VES agent");
        }
    }

    /// Authenticates an RTS connection by GUID; registers the GUID on first use with a
    /// license-id token (white paper §4.4–4.5). Returns the VES and whether it is new.
    pub async fn authenticate_ves(&self, guid: &str, license_token: Option<&str>) -> Result<(VesRecord, bool)> {
        let guid_bytes = secrets::parse_hex::<16>(guid).ok_or(AccountError::InvalidCredentials)?;
        let guid_hash = secrets::token_hash(&guid_bytes);
        let now = noc_protocol::clock::unix_ms_i64();
        if let Some(ves) = self.store.touch_ves_by_guid(&guid_hash, now).await? {
            let license = self.store.license_by_id(ves.license_id).await?.ok_or(AccountError::InvalidCredentials)?;
            if !license.usable_at(now) {
                return Err(AccountError::Suspended);
            }
            return Ok((ves, false));
        }
        let token = license_token.ok_or(AccountError::InvalidCredentials)?;
        let license = self
            .store
            .license_by_token(&secrets::token_hash(token.as_bytes()), now - self.license_token_ttl_ms())
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        if !license.usable_at(now) {
            return Err(AccountError::Suspended);
        }
        let ves = match self.store.insert_ves(&guid_hash, license.id, now).await {
            Ok(v) => v,
            // Two first connections with the same GUID raced; the other registered it.
            Err(StoreError::Conflict(_)) => {
                self.store.touch_ves_by_guid(&guid_hash, now).await?.ok_or(AccountError::InvalidCredentials)?
            }
            Err(e) => return Err(e.into()),
        };
        self.audit(format!("ves:{}", ves.id), "ves.register", format!("license:{}", license.id), String::new()).await;
        Ok((ves, true))
    }

    // -- users ------------------------------------------------------------------------

    pub(crate) fn check_password_rules(&self, password: &str) -> Result<()> {
        let n = password.chars().count();
        if n < self.policy.min_password_length || n > 128 {
            return Err(Invalid::PasswordLength { min: self.policy.min_password_length, max: 128 }.into());
        }
        Ok(())
    }

    /// The administrator's password (checked against the rules), or a generated one that
    /// is also returned so it can be shown once.
    /// A password a user chose: the same rules as one set by the enterprise.
    pub(crate) fn check_new_password(&self, p: &str) -> Result<()> {
        self.check_password_rules(p)
    }

    fn choose_password(&self, given: Option<&str>) -> Result<(String, Option<String>)> {
        match given {
            Some(p) => {
                self.check_password_rules(p)?;
                Ok((p.to_string(), None))
            }
            None => {
                let p = secrets::random_password(self.policy.generated_password_length);
                Ok((p.clone(), Some(p)))
            }
        }
    }

    /// Provisions a user for `ves` (white paper §3.5). Returns the user and the password
    /// if the relay generated it.
    pub async fn provision_user(
        &self,
        ves_id: VesId,
        license_id: LicenseId,
        email: &str,
        password: Option<&str>,
        first_name: &str,
        last_name: &str,
    ) -> Result<(UserRecord, Option<String>, License)> {
        let email = normalize_email(email)?;
        check_name(first_name, NameField::FirstName)?;
        check_name(last_name, NameField::LastName)?;
        let license = self.store.license_by_id(license_id).await?.ok_or(AccountError::NotFound)?;
        if !license.usable_at(noc_protocol::clock::unix_ms_i64()) {
            return Err(AccountError::Suspended);
        }
        let (password, generated) = self.choose_password(password)?;
        let password_hash = self.hash_password(&password).await?;
        let user = self
            .store
            .insert_user(
                NewUser {
                    license_id,
                    ves_id,
                    email,
                    password_hash,
                    first_name: first_name.trim().to_string(),
                    last_name: last_name.trim().to_string(),
                },
                noc_protocol::clock::unix_ms_i64(),
            )
            .await?;
        self.audit(format!("ves:{ves_id}"), "user.provision", format!("user:{}", user.id), String::new()).await;
        let license = self.store.license_by_id(license_id).await?.unwrap_or(license);
        Ok((user, generated, license))
    }

    /// The user `email` if it was provisioned by `ves`; anything else is `NotFound`
    /// (ownership check, white paper §8.9 item 5).
    pub async fn owned_user(&self, ves: VesId, email: &str) -> Result<UserRecord> {
        let email = normalize_email(email)?;
        match self.store.user_by_email(&email).await? {
            Some(u) if u.ves_id == ves => Ok(u),
            _ => Err(AccountError::NotFound),
        }
    }

    /// Deletes a user of `ves`; returns it and the devices that lost their credentials.
    pub async fn delete_user(&self, ves: VesId, email: &str) -> Result<(UserRecord, Vec<DeviceId>)> {
        let user = self.owned_user(ves, email).await?;
        let devices = self.store.delete_user(user.id).await?;
        self.audit(
            format!("ves:{ves}"),
            "user.delete",
            format!("user:{}", user.id),
            format!("devices={}", devices.len()),
        )
        .await;
        Ok((user, devices))
    }

    /// Resets a user's password (white paper §3.7.1); revokes its devices.
    pub async fn reset_password(
        &self,
        ves: VesId,
        email: &str,
        password: Option<&str>,
    ) -> Result<(UserRecord, Option<String>, Vec<DeviceId>)> {
        let user = self.owned_user(ves, email).await?;
        let (password, generated) = self.choose_password(password)?;
        let hash = self.hash_password(&password).await?;
        let devices = self.store.set_password(user.id, &hash, noc_protocol::clock::unix_ms_i64(), true).await?;
        self.audit(
            format!("ves:{ves}"),
            "user.reset_password",
            format!("user:{}", user.id),
            format!("revoked_devices={}", devices.len()),
        )
        .await;
        Ok((user, generated, devices))
    }

    /// Checks a login's password under the throttle (white paper §6.3.4). `login` is the
    /// e-mail address or the MSISDN; `source` the client's address.
    pub async fn check_login(&self, login: &str, password: &str, source: IpAddr) -> Result<UserRecord> {
        let (key, user) = (Self::user_key(login), self.user_by_login(login).await?);
        let checked =
            self.throttled_check(&key, source, password, user.as_ref().map(|u| u.password_hash.as_str())).await;
        let user = match (checked, user) {
            (Ok(()), Some(user)) => user,
            (Err(AccountError::InvalidCredentials), Some(user)) => {
                self.audit(
                    format!("user:{}", user.id),
                    "user.login_failed",
                    format!("user:{}", user.id),
                    String::new(),
                )
                .await;
                return Err(AccountError::InvalidCredentials);
            }
            (Err(e), _) => return Err(e),
            (Ok(()), None) => return Err(AccountError::InvalidCredentials),
        };
        if user.status == UserStatus::Suspended {
            return Err(AccountError::Suspended);
        }
        let license = self.store.license_by_id(user.license_id).await?.ok_or(AccountError::Suspended)?;
        if !license.usable_at(noc_protocol::clock::unix_ms_i64()) {
            return Err(AccountError::Suspended);
        }
        Ok(user)
    }

    /// Binds an MSISDN and time zone to an account (white paper §3.6).
    pub async fn activate_account(
        &self,
        login: &str,
        password: &str,
        msisdn: &str,
        time_zone: &str,
        source: IpAddr,
    ) -> Result<UserRecord> {
        let msisdn = normalize_msisdn(msisdn)?;
        check_time_zone(time_zone)?;
        let user = self.check_login(login, password, source).await?;
        if self.policy.msisdn_approval == MsisdnApproval::List && !self.store.msisdn_approved(&msisdn).await? {
            return Err(AccountError::MsisdnNotApproved);
        }
        let user =
            self.store.activate_user(user.id, &msisdn, time_zone.trim(), noc_protocol::clock::unix_ms_i64()).await?;
        self.audit(format!("user:{}", user.id), "user.activate", format!("user:{}", user.id), String::new()).await;
        Ok(user)
    }

    /// Activates a device for an active account (white paper §7.2.1). Returns the device,
    /// its credential (hex, shown once) and the user.
    pub async fn activate_device(
        &self,
        msisdn: &str,
        password: &str,
        name: Option<&str>,
        device_type: Option<&str>,
        certificate_request: bool,
        source: IpAddr,
    ) -> Result<(DeviceRecord, String, UserRecord)> {
        let msisdn = normalize_msisdn(msisdn)?;
        for (v, what) in [(name, "DeviceName"), (device_type, "DeviceType")] {
            if v.is_some_and(|s| s.chars().count() > 100) {
                return Err(Invalid::DeviceAttribute(what).into());
            }
        }
        let user = self.check_login(&msisdn, password, source).await?;
        if user.status != UserStatus::Active {
            return Err(AccountError::NotActivated);
        }
        if !user.allows(Feature::ConstantSync) {
            return Err(AccountError::FeatureDisabled(Feature::ConstantSync));
        }
        // A license that requires client certificates takes no device without a request.
        if !certificate_request
            && self.store.license_by_id(user.license_id).await?.is_some_and(|l| l.require_client_certificates)
        {
            return Err(AccountError::CertificateRequired);
        }
        let credential = secrets::random_bytes::<32>();
        let device = self
            .store
            .insert_device(
                NewDevice {
                    user_id: user.id,
                    credential_hash: secrets::token_hash(&credential),
                    name: name.map(str::to_string),
                    device_type: device_type.map(str::to_string),
                },
                noc_protocol::clock::unix_ms_i64(),
            )
            .await?;
        self.audit(format!("user:{}", user.id), "device.activate", format!("device:{}", device.id), String::new())
            .await;
        Ok((device, hex::encode(credential), user))
    }

    /// Records the client certificate the device CA issued to `device` of `user` (serial,
    /// lowercase hex; expiry, unix seconds), audited: revocation and the consoles name
    /// certificates by it.
    pub async fn record_device_certificate(
        &self,
        user: UserId,
        device: DeviceId,
        serial: &str,
        not_after: i64,
    ) -> Result<()> {
        self.store.set_device_certificate(device, serial, not_after).await?;
        self.audit(
            format!("user:{user}"),
            "device.certificate_issued",
            format!("device:{device}"),
            format!("serial={serial} not_after={not_after}"),
        )
        .await;
        Ok(())
    }

    /// The session a device may open, if its device, user and license all allow one.
    fn device_owner(login: &DeviceLogin) -> Result<DeviceAuth> {
        if login.revoked_at.is_some() {
            return Err(AccountError::Revoked);
        }
        // Before suspension: a lost device of a suspended user is still wiped.
        if login.wipe_requested_at.is_some() {
            return Err(AccountError::WipePending);
        }
        if login.user_status == UserStatus::Suspended {
            return Err(AccountError::Suspended);
        }
        let usable =
            !login.license_suspended && login.license_expires_at.is_none_or(|t| t > noc_protocol::clock::unix_ms_i64());
        if !usable {
            return Err(AccountError::Suspended);
        }
        if !login.user_access.and(login.license_features).contains(Feature::ConstantSync) {
            return Err(AccountError::FeatureDisabled(Feature::ConstantSync));
        }
        Ok(DeviceAuth {
            device_id: login.device_id,
            user_id: login.user_id,
            ves_id: login.ves_id,
            license_id: login.license_id,
        })
    }

    /// The device acknowledged its remote wipe (it erased its store and credentials):
    /// recorded, with the credential revoked. False when no wipe was waiting for it.
    pub async fn device_wiped(&self, device_id: DeviceId) -> Result<bool> {
        let done = self.store.complete_device_wipe(device_id, noc_protocol::clock::unix_ms_i64()).await?;
        if done {
            self.audit(format!("device:{device_id}"), "device.wipe_done", format!("device:{device_id}"), String::new())
                .await;
        }
        Ok(done)
    }

    /// Device-channel authentication with the activation credential: one indexed query
    /// and a SHA-256, so reconnect storms stay cheap.
    pub async fn authenticate_device_token(&self, device_id: DeviceId, credential: &[u8]) -> Result<DeviceAuth> {
        let login = self.store.device_login(device_id).await?.ok_or(AccountError::InvalidCredentials)?;
        if !secrets::token_matches(credential, &login.credential_hash) {
            return Err(AccountError::InvalidCredentials);
        }
        Self::credential_route(&login)
    }

    /// The session of a device that authenticated with its credential or password: as
    /// [`Accounts::device_owner`], unless its license closed that route (a waiting wipe is
    /// still delivered).
    fn credential_route(login: &DeviceLogin) -> Result<DeviceAuth> {
        let auth = Self::device_owner(login)?;
        if login.license_requires_certificate {
            return Err(AccountError::CertificateRequired);
        }
        Ok(auth)
    }

    /// Turns the license's client-certificate requirement on or off, from the CLI.
    pub async fn set_license_require_client_certificates(
        &self,
        name: &str,
        required: bool,
        actor: &str,
    ) -> Result<License> {
        let (license, _) = self.store.license_by_name(name).await?.ok_or(AccountError::NotFound)?;
        let change = crate::model::LicenseChange { require_client_certificates: Some(required), ..Default::default() };
        let license = self.store.update_license(license.id, &change).await?;
        self.audit(
            actor.to_string(),
            "license.require_client_certificates",
            format!("license:{}", license.id),
            format!("required={required}"),
        )
        .await;
        Ok(license)
    }

    /// Device-channel authentication with the client certificate of the TLS handshake
    /// (AUTH_CERT): the TLS layer verified the chain to the device CA and its validity;
    /// this checks that the certificate is the device's current one, by serial, against the
    /// device's row. The store is the revocation list: a revoked device, a password reset
    /// (which revokes the user's devices) or a renewal is seen by every node at the next
    /// handshake, with nothing cached to invalidate, for the same one indexed query as
    /// [`Accounts::authenticate_device_token`].
    pub async fn authenticate_device_certificate(
        &self,
        device_id: DeviceId,
        user_id: UserId,
        serial: &str,
    ) -> Result<DeviceAuth> {
        let login = self.store.device_login(device_id).await?.ok_or(AccountError::InvalidCredentials)?;
        if login.user_id != user_id {
            return Err(AccountError::InvalidCredentials);
        }
        if login.revoked_at.is_some() {
            return Err(AccountError::Revoked);
        }
        if login.certificate_serial.as_deref() != Some(serial) {
            return Err(AccountError::CertificateRefused);
        }
        Self::device_owner(&login)
    }

    /// Device-channel authentication with MSISDN + password + device id (white paper §7.2.2).
    pub async fn authenticate_device_password(
        &self,
        device_id: DeviceId,
        msisdn: &str,
        password: &str,
        source: IpAddr,
    ) -> Result<DeviceAuth> {
        let msisdn = normalize_msisdn(msisdn).map_err(|_| AccountError::InvalidCredentials)?;
        let user = self.check_login(&msisdn, password, source).await?;
        let login = self.store.device_login(device_id).await?.ok_or(AccountError::InvalidCredentials)?;
        if login.user_id != user.id {
            return Err(AccountError::InvalidCredentials);
        }
        Self::credential_route(&login)
    }
}

pub(crate) fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if !valid {
        return Err(Invalid::Email.into());
    }
    Ok(e)
}

/// E.164-like: optional `+`, 5 to 20 digits.
pub(crate) fn normalize_msisdn(msisdn: &str) -> Result<String> {
    let m = msisdn.trim();
    let digits = m.strip_prefix('+').unwrap_or(m);
    if !(5..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::Msisdn.into());
    }
    Ok(m.to_string())
}

pub(crate) fn check_name(name: &str, what: NameField) -> Result<()> {
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Invalid::Name(what).into());
    }
    Ok(())
}

/// IANA zone names (`Europe/Paris`) or UTC offsets (`UTC+02:00`).
pub(crate) fn check_time_zone(tz: &str) -> Result<()> {
    let tz = tz.trim();
    let ok = !tz.is_empty() && tz.len() <= 64 && tz.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-:".contains(c));
    if !ok {
        return Err(Invalid::TimeZone.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_validation() {
        assert_eq!(normalize_email(" Bob@Example.COM ").expect("valid"), "bob@example.com");
        assert!(normalize_email("bob").is_err());
        assert!(normalize_email("a b@c").is_err());
        assert!(normalize_email("@c").is_err());
        assert_eq!(normalize_msisdn("+15550100").expect("valid"), "+15550100");
        assert!(normalize_msisdn("555-0100").is_err());
        assert!(normalize_msisdn("123").is_err());
        assert!(check_time_zone("Europe/Paris").is_ok());
        assert!(check_time_zone("<script>").is_err());
    }
}
