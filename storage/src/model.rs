//! Records of the account store (white paper §9.2, Table 2 and 3).

use noc_protocol::rts::FilterRule;
use noc_protocol::{DeviceId, LicenseId, UserId, VesId};

/// An enterprise license (white paper §3.4).
#[derive(Clone, Debug, PartialEq)]
pub struct License {
    pub id: LicenseId,
    pub name: String,
    pub max_users: u32,
    /// Users provisioned under this license, over all its VES installations.
    pub used_users: u32,
    /// Unix ms; `None` never expires.
    pub expires_at: Option<i64>,
    pub suspended: bool,
    pub created_at: i64,
    /// Users may recover a password by answering a secret question (white paper §9.2.2):
    /// weaker than the mailed link, so off unless the carrier turns it on for the license.
    pub secret_question_recovery: bool,
    /// What the license's users may use (white paper Table 2, "Enterprise Level Feature
    /// Flags"); a user also needs the same flag in [`UserRecord::access`].
    pub features: Features,
    /// Whom the carrier contacts about the license (its administrator at the enterprise).
    pub admin_email: Option<String>,
    /// Devices must authenticate with a client certificate (AUTH_CERT) and activate with a
    /// certificate request; the credential route (AUTH_TOKEN, AUTH_PASSWORD) is closed, so
    /// a device whose certificate expired activates again.
    pub require_client_certificates: bool,
}

impl License {
    /// Whether the license may be used at `now`.
    pub fn usable_at(&self, now: i64) -> bool {
        !self.suspended && self.expires_at.is_none_or(|t| t > now)
    }
}

/// What `insert_license` needs.
#[derive(Clone, Debug)]
pub struct NewLicense {
    pub name: String,
    pub password_hash: String,
    pub max_users: u32,
    pub expires_at: Option<i64>,
    pub features: Features,
    pub admin_email: Option<String>,
}

/// What an operator creates a license with.
#[derive(Clone, Debug)]
pub struct LicenseDraft {
    pub name: String,
    pub password: String,
    pub max_users: u32,
    pub expires_at: Option<i64>,
    pub features: Features,
    pub admin_email: Option<String>,
}

/// One way of reaching a user's data (white paper §3.7.2: "grant or block the ability of
/// a user to access user data … from any of the available interfaces").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Browsing mail, calendar and contacts from a PC browser.
    BrowsePc,
    /// The same from a PDA browser (small HTML pages).
    BrowsePda,
    /// The same from a WAP phone (WML).
    BrowseWap,
    /// Devices: activation and device-channel sessions, and the VES pushing to them.
    ConstantSync,
    /// New-mail alerts: the VES is sent the user's filter rules.
    Alerts,
}

impl Feature {
    pub const ALL: [Feature; 5] =
        [Feature::BrowsePc, Feature::BrowsePda, Feature::BrowseWap, Feature::ConstantSync, Feature::Alerts];

    /// The stored bit: part of the schema, never renumbered.
    const fn bit(self) -> u32 {
        match self {
            Feature::BrowsePc => 1,
            Feature::BrowsePda => 1 << 1,
            Feature::BrowseWap => 1 << 2,
            Feature::ConstantSync => 1 << 3,
            Feature::Alerts => 1 << 4,
        }
    }

    /// The name in the admin API, the audit log and the console's forms.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::BrowsePc => "browse_pc",
            Feature::BrowsePda => "browse_pda",
            Feature::BrowseWap => "browse_wap",
            Feature::ConstantSync => "constant_sync",
            Feature::Alerts => "alerts",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Feature::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// A set of [`Feature`]s, stored as a bit mask. Everything is allowed unless an operator
/// takes it away, so licenses and users from before the flags existed keep what they had.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Features(u32);

impl Features {
    pub const ALL: Features = Features(0b1_1111);
    pub const NONE: Features = Features(0);

    pub fn contains(self, f: Feature) -> bool {
        self.0 & f.bit() != 0
    }

    #[must_use]
    pub fn with(self, f: Feature, on: bool) -> Features {
        if on { Features(self.0 | f.bit()) } else { Features(self.0 & !f.bit()) }
    }

    /// Both sets allow it (a license's features and a user's access).
    #[must_use]
    pub fn and(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// The stored form. Bits this version does not know (a newer schema's) are dropped
    /// on reading, so they are never granted by accident.
    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn from_bits(bits: i64) -> Features {
        Features(u32::try_from(bits & i64::from(Features::ALL.0)).unwrap_or(0))
    }

    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// The allowed features' names joined by commas, `none` for none (the audit log's form).
    pub fn describe(self) -> String {
        let names: Vec<&str> = self.iter().map(Feature::as_str).collect();
        if names.is_empty() { "none".to_string() } else { names.join(",") }
    }
}

impl Default for Features {
    fn default() -> Self {
        Features::ALL
    }
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A registered VES installation. Its GUID is stored only as a hash.
#[derive(Clone, Debug, PartialEq)]
pub struct VesRecord {
    pub id: VesId,
    pub license_id: LicenseId,
    pub registered_at: i64,
    pub last_seen_at: i64,
}

/// Account state (white paper §3.6): provisioned by a VES, active once an MSISDN is bound,
/// suspended by a CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    Provisioned,
    Active,
    Suspended,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Provisioned => "provisioned",
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "provisioned" => UserStatus::Provisioned,
            "active" => UserStatus::Active,
            "suspended" => UserStatus::Suspended,
            _ => return None,
        })
    }
}

/// A user profile (white paper Table 3, minus MD5: the hash is argon2id).
#[derive(Clone, PartialEq)]
pub struct UserRecord {
    pub id: UserId,
    pub license_id: LicenseId,
    pub ves_id: VesId,
    /// SMTP address, lowercase; the username.
    pub email: String,
    pub msisdn: Option<String>,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub time_zone: Option<String>,
    pub status: UserStatus,
    pub constant_sync: bool,
    pub filter_rules: Vec<FilterRule>,
    /// New-mail alerts on: the rules apply. Off: the rules stay stored, and the VES is sent
    /// none.
    pub alerts_enabled: bool,
    /// Where the user wants mail from the service (password recovery) when it is not
    /// `email`; set on the portal's settings page.
    pub contact_email: Option<String>,
    /// The language the user chose for the portal (a tag such as `de`); `None`: the
    /// browser's.
    pub locale: Option<String>,
    /// What a CSR lets this user use (white paper §3.7.2).
    pub access: Features,
    /// Where the user's new-mail alerts go (white paper §4.7), set on the portal.
    pub alert_delivery: AlertDelivery,
    /// How many days ahead calendar entries are pushed to the user's devices (white
    /// paper §3.7.3), told to the VES with the user.
    pub calendar_days_ahead: u32,
    /// What the user's license allows, read with the user (the store joins it in), so
    /// that [`UserRecord::allows`] needs nothing else.
    pub license_features: Features,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRecord {
    /// The rules the user's VES applies: none while alerts are off, or not allowed for the
    /// user or the license.
    pub fn effective_filter_rules(&self) -> Vec<FilterRule> {
        if self.alerts_enabled && self.allows(Feature::Alerts) { self.filter_rules.clone() } else { Vec::new() }
    }

    /// Whether the VES pushes to the user's devices: the user's own switch, within what
    /// the user and the license may use.
    pub fn effective_constant_sync(&self) -> bool {
        self.constant_sync && self.allows(Feature::ConstantSync)
    }

    /// Both the license and the user's access allow `f`.
    pub fn allows(&self, f: Feature) -> bool {
        self.access.and(self.license_features).contains(f)
    }

    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name).trim().to_string()
    }
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("msisdn", &self.msisdn)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What `insert_user` needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub license_id: LicenseId,
    pub ves_id: VesId,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
}

/// An activated device. The credential is stored as SHA-256 only.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub user_id: UserId,
    pub credential_hash: Vec<u8>,
    pub name: Option<String>,
    pub device_type: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// When the user asked for a remote wipe; the device is delivered it at its next
    /// authentication and opens no session any more.
    pub wipe_requested_at: Option<i64>,
    /// When the device acknowledged the wipe (its credential is revoked then too).
    pub wiped_at: Option<i64>,
    /// When a session of the device last started or ended (unix ms), recorded in batches.
    pub last_seen_at: Option<i64>,
    /// The client certificate the device CA last issued to the device (docs/certificates.md):
    /// its serial (lowercase hex) and when it expires (unix seconds).
    pub certificate_serial: Option<String>,
    pub certificate_not_after: Option<i64>,
}

/// What `insert_device` needs.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub user_id: UserId,
    pub credential_hash: Vec<u8>,
    pub name: Option<String>,
    pub device_type: Option<String>,
}

/// Everything device-channel authentication needs, read in one query: the device's
/// credential hash and revocation, and the state of its user and license. A reconnect
/// storm runs this once per device, so backends answer it with one indexed join and no
/// aggregate (the seat count of [`License`] is not needed to log in).
#[derive(Clone, PartialEq)]
pub struct DeviceLogin {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub ves_id: VesId,
    pub license_id: LicenseId,
    pub credential_hash: Vec<u8>,
    pub revoked_at: Option<i64>,
    pub user_status: UserStatus,
    pub license_suspended: bool,
    /// Unix ms; `None` never expires.
    pub license_expires_at: Option<i64>,
    /// A remote wipe waits for this device.
    pub wipe_requested_at: Option<i64>,
    /// The user's access and the license's features: a device session needs ConstantSync
    /// in both.
    pub user_access: Features,
    pub license_features: Features,
    /// Serial (lowercase hex) of the device's current client certificate: the only one
    /// AUTH_CERT accepts (a renewal or a new activation replaces it).
    pub certificate_serial: Option<String>,
    /// The license closes the credential route (License::require_client_certificates).
    pub license_requires_certificate: bool,
}

impl std::fmt::Debug for DeviceLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLogin")
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .field("revoked_at", &self.revoked_at)
            .field("wipe_requested_at", &self.wipe_requested_at)
            .field("user_status", &self.user_status)
            .finish_non_exhaustive()
    }
}

/// One line of the audit log: who did what, when (white paper §8.7).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Its place in the log (assigned by the store; 0 before it is written).
    pub id: i64,
    pub at: i64,
    /// `ves:<id>`, `user:<id>`, `device:<id>`, `operator:<name>`, `admin:<name>` (the
    /// CLI), `system`.
    pub actor: String,
    /// The actor's operator role when an operator acted; empty otherwise.
    pub role: String,
    /// The address the request came from; empty for the CLI and the node itself.
    pub source: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    /// What the action changed, field by field (secrets never appear: a changed password
    /// is recorded as changed, without values).
    pub changes: Vec<FieldChange>,
}

impl AuditEvent {
    /// An event of the node or of a peer, at the current time.
    pub fn new(actor: String, action: &str, subject: String, detail: String) -> Self {
        AuditEvent {
            id: 0,
            at: noc_protocol::clock::unix_ms_i64(),
            actor,
            role: String::new(),
            source: String::new(),
            action: action.to_string(),
            subject,
            detail,
            changes: Vec::new(),
        }
    }
}

/// One field an audited action changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

impl FieldChange {
    pub fn new(field: &str, before: impl ToString, after: impl ToString) -> Self {
        FieldChange { field: field.to_string(), before: before.to_string(), after: after.to_string() }
    }
}

/// The stored form of an event's changes.
pub(crate) fn changes_json(changes: &[FieldChange]) -> String {
    serde_json::to_string(changes).unwrap_or_else(|_| "[]".into())
}

/// Reads stored changes back; a row the store did not write reads as no changes.
pub(crate) fn parse_changes(json: &str) -> Vec<FieldChange> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Which audit events to read, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exact actor (`operator:alice`).
    pub actor: Option<String>,
    /// Action, or a prefix of it ending in `.` (`license.`).
    pub action: Option<String>,
    /// Exact subject (`license:acme`).
    pub subject: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// Only events older than this id (the next page after a page ending at it).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Which users an operator looks for; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Part of the e-mail address, any case.
    pub email: Option<String>,
    /// The MSISDN exactly.
    pub msisdn: Option<String>,
    /// Part of the first or last name, any case.
    pub name: Option<String>,
    pub license: Option<LicenseId>,
    /// Only users of the licenses granted to this operator (a CSR's view).
    pub granted_to: Option<String>,
    pub offset: u32,
    pub limit: u32,
}

/// What an operator changes on a user's profile; `None` leaves a field as it is, an empty
/// time zone or language clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserProfileChange {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub msisdn: Option<String>,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    /// What the user may use (within the license's features).
    pub access: Option<Features>,
}

/// What an operator changes on a license; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseChange {
    pub max_users: Option<u32>,
    /// `Some(None)`: never expires.
    pub expires_at: Option<Option<i64>>,
    pub suspended: Option<bool>,
    pub secret_question_recovery: Option<bool>,
    pub require_client_certificates: Option<bool>,
    pub features: Option<Features>,
    /// `Some(None)`: no administrator address.
    pub admin_email: Option<Option<String>>,
}

/// What one license used on one day (white paper §8.3). As an input to
/// [`crate::Store::add_usage`] the counts are added to the day's; `active_*` are ignored
/// there (the active devices come as their own records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageDay {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    pub license_id: LicenseId,
    pub frames_to_ves: u64,
    pub bytes_to_ves: u64,
    pub frames_to_devices: u64,
    pub bytes_to_devices: u64,
    /// Undeliverable notices written to the license's peers.
    pub undeliverable: u64,
    /// Seconds devices of the license were connected, summed over devices.
    pub device_seconds: u64,
    /// Devices connected that day.
    pub active_devices: u64,
    /// Users with a device connected that day.
    pub active_users: u64,
}

/// A device connected on a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActiveDeviceDay {
    pub day: i64,
    pub license_id: LicenseId,
    pub device_id: DeviceId,
    pub user_id: UserId,
}

/// Which usage records to read: days `from_day..=to_day`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub from_day: i64,
    pub to_day: i64,
    pub license: Option<LicenseId>,
    /// Only licenses granted to this operator (a CSR's view).
    pub granted_to: Option<String>,
}

/// A VES installation of a license, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VesInstallation {
    pub id: VesId,
    pub registered_at: i64,
    /// Its last connection (Unix ms).
    pub last_seen_at: i64,
    /// What the installation said it runs (`ves-agent/0.1.0`) when it last connected.
    pub agent: Option<String>,
}

/// An MSISDN on the carrier's approval list (white paper §3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsisdnApprovalRecord {
    pub msisdn: String,
    pub approved_by: String,
    pub approved_at: i64,
}

/// How an operator token is presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A console sign-in: the browser's cookie; ends after idling.
    Console,
    /// A bearer token of the admin API: lives until it expires or is revoked.
    Api,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Console => "console",
            TokenKind::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [TokenKind::Console, TokenKind::Api].into_iter().find(|k| k.as_str() == s)
    }
}

/// What a token may do: `Read` tokens only look, whatever the operator's role allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenScope {
    Read,
    Write,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [TokenScope::Read, TokenScope::Write].into_iter().find(|k| k.as_str() == s)
    }
}

/// A live operator token (the token itself is known only to its holder; the store keeps
/// its SHA-256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorToken {
    /// Public id, to list and revoke it by.
    pub id: String,
    pub operator_id: String,
    pub kind: TokenKind,
    pub scope: TokenScope,
    /// What its holder named it ("CI export"); for a console sign-in, the browser.
    pub label: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
}

/// What a user changes on the portal's settings page (white paper §3.7.3, §9.2.1).
#[derive(Clone, Debug, PartialEq)]
pub struct UserSettings {
    pub first_name: String,
    pub last_name: String,
    pub time_zone: Option<String>,
    pub constant_sync: bool,
    pub filter_rules: Vec<FilterRule>,
    pub alerts_enabled: bool,
    /// `None`: mail goes to the account's own address.
    pub contact_email: Option<String>,
    /// `None`: the browser's language.
    pub locale: Option<String>,
    /// Days ahead of today whose calendar entries go to the devices
    /// ([`CALENDAR_DAYS_AHEAD`] holds the bounds).
    pub calendar_days_ahead: u32,
}

/// Bounds and default of [`UserSettings::calendar_days_ahead`]: a year at most, which is
/// what a handheld's calendar holds comfortably.
pub const CALENDAR_DAYS_AHEAD: std::ops::RangeInclusive<u32> = 1..=365;
/// What a new user gets.
pub const DEFAULT_CALENDAR_DAYS_AHEAD: u32 = 30;

/// Where a user's new-mail alerts go and when (white paper §4.7; the portal's alerts page).
/// Stored as JSON; fields a later version adds are read as their defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AlertDelivery {
    /// Mail each alert to this address; `None`: no alert mail. Only an address the user
    /// confirmed (or the account's own): a new one waits in `pending_email`.
    pub email: Option<String>,
    /// An address the user asked alerts to go to, until they follow the link mailed to
    /// it: so that nobody can make the relay mail alerts to someone else's mailbox.
    pub pending_email: Option<PendingAlertEmail>,
    /// Confirmation mails sent on `confirmations_day` (unix days), at most
    /// [`MAX_ALERT_EMAIL_CONFIRMATIONS_PER_DAY`].
    pub confirmations_day: i64,
    pub confirmations_sent: u32,
    /// POST each alert as JSON to this HTTPS URL, signed with `webhook_secret`.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key of the webhook's signature (generated by the relay, shown to
    /// the user to check signatures with).
    pub webhook_secret: Option<String>,
    /// Text each alert by SMS to the user's mobile number (when the relay has an SMSC).
    pub sms: bool,
    /// Send each alert as a WAP Push to the user's mobile number, linking to the WAP inbox.
    pub wap_push: bool,
    /// Alerts carry a short excerpt of the mail's text.
    pub excerpt: bool,
    /// No alert from this hour to `quiet_to` (0–23, the user's time zone); none when absent
    /// or equal.
    pub quiet_from: Option<u8>,
    pub quiet_to: Option<u8>,
}

/// An alert address waiting for its owner's confirmation.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PendingAlertEmail {
    pub address: String,
    /// SHA-256 (hex) of the secret the confirmation link carries.
    pub token_hash: String,
    pub expires_at: i64,
}

/// How long a confirmation link for an alert address works.
pub const ALERT_EMAIL_CONFIRMATION_TTL_MS: i64 = 24 * 3_600_000;
/// Confirmation mails one user may have sent per day.
pub const MAX_ALERT_EMAIL_CONFIRMATIONS_PER_DAY: u32 = 5;

impl AlertDelivery {
    /// Whether any destination is set.
    pub fn any(&self) -> bool {
        self.email.is_some() || self.webhook_url.is_some() || self.sms || self.wap_push
    }

    /// Whether `hour` (0–23, local) is within the quiet hours (which may wrap midnight).
    pub fn quiet_at(&self, hour: u8) -> bool {
        match (self.quiet_from, self.quiet_to) {
            (Some(from), Some(to)) if from < to => (from..to).contains(&hour),
            (Some(from), Some(to)) if from > to => hour >= from || hour < to,
            _ => false,
        }
    }
}

/// A signed-in browser (white paper §6.2–6.3). The store keeps the SHA-256 of the session
/// token, never the token, so a copy of the database signs nobody in.
#[derive(Clone, Debug, PartialEq)]
pub struct WebSession {
    /// A random public name for the session (32 hex digits), for listing and revoking it
    /// on the settings page without exposing anything of the token.
    pub id: String,
    pub user_id: UserId,
    pub created_at: i64,
    /// The last request made with it; an ordinary session ends after the inactivity
    /// timeout counted from here.
    pub last_seen_at: i64,
    /// The absolute end, whatever the activity.
    pub expires_at: i64,
    /// "Keep me signed in": exempt from the inactivity timeout until `expires_at`.
    pub persistent: bool,
    /// What signed in (a short form of the browser's User-Agent), for the user's list.
    pub client: String,
}

/// What an operator of the NOC may do (white paper §3.7.1–3.7.2, §8.5): NOC administrators
/// everything; customer-service representatives the users and devices of their licenses;
/// auditors read the audit log and usage. No role reads a user's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperatorRole {
    NocAdmin,
    Csr,
    Auditor,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 3] = [OperatorRole::NocAdmin, OperatorRole::Csr, OperatorRole::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::NocAdmin => "noc-admin",
            OperatorRole::Csr => "csr",
            OperatorRole::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        OperatorRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An operator account: an individual login (no shared accounts), argon2id password and a
/// TOTP second factor, both required.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorRecord {
    pub id: String,
    /// The login name, lower case.
    pub name: String,
    pub role: OperatorRole,
    pub password_hash: String,
    /// The TOTP secret (20 bytes). Secret: never logged, shown once at enrolment.
    pub totp_secret: Vec<u8>,
    /// The last TOTP step used to sign in: a code works once.
    pub totp_last_step: i64,
    pub disabled: bool,
    pub created_at: i64,
    pub created_by: String,
}

impl std::fmt::Debug for OperatorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A store's connection pool at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open now (idle or in use).
    pub open: usize,
    /// Open connections nobody uses.
    pub idle: usize,
    /// Most connections the pool opens.
    pub max: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

/// A user's secret question for password recovery: which one of the fixed list, and the
/// argon2id hash of the normalised answer (the answer itself is never stored).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretQuestion {
    pub question: String,
    pub answer_hash: String,
}

impl std::fmt::Debug for SecretQuestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretQuestion").field("question", &self.question).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(access: Features, license: Features) -> UserRecord {
        UserRecord {
            id: UserId::random(),
            license_id: LicenseId::random(),
            ves_id: VesId::random(),
            email: "bob@example.com".into(),
            msisdn: None,
            password_hash: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            time_zone: None,
            status: UserStatus::Active,
            constant_sync: true,
            filter_rules: vec![FilterRule { field: "subject".into(), contains: "urgent".into() }],
            alerts_enabled: true,
            contact_email: None,
            locale: None,
            access,
            alert_delivery: AlertDelivery::default(),
            calendar_days_ahead: DEFAULT_CALENDAR_DAYS_AHEAD,
            license_features: license,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_feature_needs_both_the_license_and_the_users_access() {
        let all = user(Features::ALL, Features::ALL);
        assert!(all.effective_constant_sync());
        assert_eq!(all.effective_filter_rules().len(), 1);
        let no_alerts = Features::ALL.with(Feature::Alerts, false);
        for u in [user(no_alerts, Features::ALL), user(Features::ALL, no_alerts)] {
            assert!(u.effective_filter_rules().is_empty(), "no rules reach the VES without alerts");
            assert!(u.effective_constant_sync());
        }
        let no_sync = Features::ALL.with(Feature::ConstantSync, false);
        assert!(!user(no_sync, Features::ALL).effective_constant_sync());
        assert!(!user(Features::ALL, no_sync).effective_constant_sync());
        let mut off = user(Features::ALL, Features::ALL);
        off.constant_sync = false;
        assert!(!off.effective_constant_sync(), "the user's own switch still counts");
    }

    #[test]
    fn quiet_hours_may_wrap_midnight() {
        let night = AlertDelivery { quiet_from: Some(22), quiet_to: Some(7), ..AlertDelivery::default() };
        assert!(night.quiet_at(23) && night.quiet_at(0) && night.quiet_at(6));
        assert!(!night.quiet_at(7) && !night.quiet_at(12) && !night.quiet_at(21));
        let lunch = AlertDelivery { quiet_from: Some(12), quiet_to: Some(13), ..AlertDelivery::default() };
        assert!(lunch.quiet_at(12) && !lunch.quiet_at(13));
        assert!(!AlertDelivery::default().quiet_at(3));
        let parsed: AlertDelivery =
            serde_json::from_str(r#"{"email":"a@b.example","future_field":1}"#).expect("lenient");
        assert_eq!(parsed.email.as_deref(), Some("a@b.example"));
    }

    #[test]
    fn features_are_stored_as_stable_bits_and_named() {
        assert_eq!(Features::ALL.bits(), 31);
        assert_eq!(Features::NONE.with(Feature::ConstantSync, true).bits(), 8);
        assert_eq!(Features::from_bits(31 | 64), Features::ALL, "a newer schema's bits grant nothing here");
        assert_eq!(Features::from_bits(-1), Features::ALL);
        assert_eq!(Features::NONE.describe(), "none");
        assert_eq!(
            Features::NONE.with(Feature::BrowsePc, true).with(Feature::Alerts, true).describe(),
            "browse_pc,alerts"
        );
        for f in Feature::ALL {
            assert_eq!(Feature::parse(f.as_str()), Some(f));
        }
        assert_eq!(Features::default(), Features::ALL);
    }
}
