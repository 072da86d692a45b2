//! What the portal needs from the account service, and nothing more. The web layer sees
//! accounts only through this trait; the node implements it over `noc_storage::Accounts`
//! (app/src/portal.rs), so the storage and actor crates never depend on the web layer.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
pub use noc_protocol::rts::FilterRule;
use thiserror::Error;

/// The secret questions a user may choose from, by key (the pages word them).
pub const SECRET_QUESTIONS: [&str; 5] = ["first_school", "first_pet", "birth_city", "childhood_friend", "first_street"];

/// The signed-in user, as the pages show them.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub user_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub msisdn: Option<String>,
    pub time_zone: Option<String>,
    /// The account was activated (MSISDN bound, own password chosen); until then every
    /// page leads to the activation page.
    pub activated: bool,
    /// New mail is pushed to the user's devices (white paper §4.5 step 7).
    pub constant_sync: bool,
    /// Which new mail makes an alert (white paper §4.5 step 6).
    pub filter_rules: Vec<FilterRule>,
    /// New-mail alerts on (the rules apply) or off (they are kept, unused).
    pub alerts_enabled: bool,
    /// Where mail from the service goes, when not to `email`.
    pub contact_email: Option<String>,
    /// The language the user chose for the pages (a tag such as `de`); `None`: the
    /// browser's.
    pub locale: Option<String>,
    /// Days ahead of today whose calendar entries go to the user's devices.
    pub calendar_days_ahead: u32,
}

/// What the settings page changes.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsChange {
    pub first_name: String,
    pub last_name: String,
    pub time_zone: String,
    pub constant_sync: bool,
    pub filter_rules: Vec<FilterRule>,
    pub alerts_enabled: bool,
    /// Empty: the account's own address.
    pub contact_email: String,
    /// Empty: the browser's language.
    pub locale: String,
    pub calendar_days_ahead: u32,
}

/// A request's live session.
#[derive(Clone, Debug, PartialEq)]
pub struct Visitor {
    pub profile: Profile,
    /// The session's public id (never its token).
    pub session_id: String,
    pub persistent: bool,
}

/// One of a user's sessions, for the list they can revoke from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub client: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub expires_at_ms: i64,
    pub persistent: bool,
}

/// One of the user's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: String,
    pub name: Option<String>,
    pub device_type: Option<String>,
    /// Unix milliseconds.
    pub activated_at_ms: i64,
    /// The node holding its live session, if it is connected now.
    pub online_on: Option<String>,
    /// When a session of it last started or ended (Unix ms); `None`: never connected.
    pub last_seen_ms: Option<i64>,
    pub wipe: WipeState,
}

/// Where a device is with its remote wipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WipeState {
    /// No wipe asked: the device works.
    None,
    /// Asked at this time (Unix ms); the device gets it when it next connects.
    Pending { since_ms: i64 },
    /// The device confirmed that it erased its data and credentials at this time.
    Done { at_ms: i64 },
}

/// A successful sign-in: the token goes into the cookie and nowhere else.
#[derive(Clone)]
pub struct SignedIn {
    pub token: String,
    pub visitor: Visitor,
    /// For a persistent session, how long the browser keeps the cookie.
    pub cookie_max_age: Option<Duration>,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").field("visitor", &self.visitor).finish_non_exhaustive()
    }
}

/// Why the account service refused. Deliberately coarse: a wrong password and an unknown
/// login are the same [`PortalError::InvalidCredentials`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PortalError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many attempts; retry in {retry_after:?}")]
    Throttled { retry_after: Duration },
    #[error("account or license suspended")]
    Suspended,
    #[error("not found")]
    NotFound,
    /// Input the rules refuse: what to fix (the pages word it).
    #[error("invalid input: {0:?}")]
    Invalid(Problem),
    #[error("MSISDN not approved by the carrier")]
    MsisdnNotApproved,
    /// The MSISDN belongs to another account.
    #[error("MSISDN taken")]
    MsisdnTaken,
    #[error("busy")]
    Busy,
    #[error("unavailable")]
    Unavailable,
    /// Something the page must not show; the details went to the log.
    #[error("internal error")]
    Internal,
}

/// What to fix in a form, as the account rules refused it. A value, not a sentence: the
/// pages word it in the reader's language (`i18n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    PasswordLength {
        min: usize,
        max: usize,
    },
    /// The new password is the one from the welcome mail.
    PasswordReused,
    Email,
    ContactEmail,
    Msisdn,
    TimeZone,
    Locale,
    FirstName,
    LastName,
    DeviceName,
    TooManyRules {
        max: usize,
    },
    RuleField,
    RuleText {
        max: usize,
    },
    QuestionNotOffered,
    QuestionUnknown,
    AnswerLength {
        min: usize,
        max: usize,
    },
    AlertEmail,
    /// Too many confirmation mails for alert addresses today.
    AlertEmailRationed {
        max: u32,
    },
    /// The service sends no mail (no SMTP server configured).
    AlertEmailUnavailable,
    WebhookUrl,
    QuietHours,
    /// Calendar days ahead out of 1 to 365.
    CalendarDaysAhead,
    /// A rule no form of the portal can break (an API-only field); worded generically.
    Other,
}

/// Where the user's new-mail alerts go (the alerts page).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertSettings {
    /// The confirmed address (or the account's own).
    pub email: Option<String>,
    /// An address waiting for its owner to follow the confirmation link (shown; ignored
    /// when saving).
    pub pending_email: Option<String>,
    pub webhook_url: Option<String>,
    /// The webhook's signing key (set by the relay; ignored when saving).
    pub webhook_secret: Option<String>,
    /// By SMS, and as WAP Push, to the user's mobile number.
    pub sms: bool,
    pub wap_push: bool,
    pub excerpt: bool,
    pub quiet_from: Option<u8>,
    pub quiet_to: Option<u8>,
}

/// Which browse interface a page belongs to (white paper §6.1); each has an access flag
/// of its own on the license and the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    Pc,
    Pda,
    Wap,
}

/// Why a browse page has no data from the user's enterprise server.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BrowseError {
    /// This interface is not enabled for the user or the license.
    #[error("not enabled for this account")]
    NotAllowed,
    /// The user's enterprise server is not connected (or not serving the user now).
    #[error("enterprise server not connected")]
    Offline,
    /// The enterprise server offers no browse access (an older version).
    #[error("browse access not offered")]
    Unsupported,
    /// No answer within the deadline.
    #[error("no answer in time")]
    Timeout,
    /// Too many requests in flight for the enterprise server; retry shortly.
    #[error("busy")]
    Busy,
    /// No such folder, message, attachment or contact.
    #[error("not found")]
    NotFound,
    /// The enterprise server refused what the form asked (its words, for the form).
    #[error("refused: {0}")]
    Refused(String),
    /// The enterprise server could not read the mailbox, calendar or contacts now.
    #[error("source unavailable")]
    SourceUnavailable,
    /// What was asked (a message, an attachment) is too large to pass through the relay.
    #[error("too large")]
    TooLarge,
    #[error("internal error")]
    Internal,
}

#[async_trait]
pub trait Portal: Send + Sync + 'static {
    /// Asks the user's enterprise server, through the relay, for what `request` names
    /// (browse access, docs/protocol.md §4.6), from `interface`'s pages: the operation's
    /// answer type as JSON. Nothing of it is kept.
    async fn fetch(
        &self,
        user_id: &str,
        interface: Interface,
        request: noc_protocol::rts::fetch::FetchRequest,
    ) -> Result<serde_json::Value, BrowseError>;
    /// Checks e-mail address or MSISDN and password (under the password throttle) and
    /// starts a new session.
    async fn sign_in(
        &self,
        login: &str,
        password: &str,
        persistent: bool,
        user_agent: &str,
        source: IpAddr,
    ) -> Result<SignedIn, PortalError>;
    /// Activates an account (white paper §3.6) with the mailed credentials, binding
    /// `msisdn` and `time_zone` and replacing the mailed password with `new_password`;
    /// the user is then signed in.
    #[allow(clippy::too_many_arguments)]
    async fn activate(
        &self,
        login: &str,
        password: &str,
        msisdn: &str,
        time_zone: &str,
        new_password: &str,
        user_agent: &str,
        source: IpAddr,
    ) -> Result<SignedIn, PortalError>;
    /// Replaces the user's settings; the user's enterprise server learns new rules and
    /// the ConstantSync flag at once when it is connected.
    async fn update_settings(&self, user_id: &str, change: SettingsChange) -> Result<(), PortalError>;
    /// Where the user's alerts go.
    async fn alert_settings(&self, user_id: &str) -> Result<AlertSettings, PortalError>;
    /// Sets where the user's alerts go (validated; the webhook's key is generated when a
    /// webhook is first set, or anew with `new_secret`). A new e-mail address other than
    /// the account's own is confirmed first: the answer is the address a confirmation link
    /// was mailed to.
    async fn set_alert_settings(
        &self,
        user_id: &str,
        settings: AlertSettings,
        new_secret: bool,
    ) -> Result<Option<String>, PortalError>;
    /// Confirms an alert address with the mailed link's token; the answer is the address.
    /// `InvalidCredentials` for an unknown, replaced or expired token.
    async fn confirm_alert_email(&self, token: &str) -> Result<String, PortalError>;
    /// Changes the password after checking the current one (`InvalidCredentials` if it
    /// is wrong). Every other session of the user ends (`keep`: this one's token), and
    /// with `sign_out_devices` every device too.
    #[allow(clippy::too_many_arguments)]
    async fn change_password(
        &self,
        user_id: &str,
        current: &str,
        new_password: &str,
        keep: &str,
        sign_out_devices: bool,
        source: IpAddr,
    ) -> Result<(), PortalError>;
    /// The user's devices (live, waiting for a wipe, or wiped), oldest first, with where
    /// each is connected now.
    async fn devices(&self, user_id: &str) -> Result<Vec<DeviceInfo>, PortalError>;
    /// Names one of the user's devices; `NotFound` for any other.
    async fn rename_device(&self, user_id: &str, device_id: &str, name: &str) -> Result<(), PortalError>;
    /// Revokes one of the user's devices: its credential stops working and its live
    /// session ends at once. `NotFound` for any other.
    async fn revoke_device(&self, user_id: &str, device_id: &str) -> Result<(), PortalError>;
    /// Asks for a remote wipe of one of the user's devices: it stops working at once, and
    /// erases its local data and credentials when it next connects (at once if it is
    /// connected now). `NotFound` for any other device or one already being wiped.
    async fn wipe_device(&self, user_id: &str, device_id: &str) -> Result<(), PortalError>;
    /// Starts password recovery for `login` (e-mail address or MSISDN): when such an
    /// active account exists and has recovery mails left this hour, a one-time link goes to
    /// its contact address. Answers the same in every case, without waiting for the mail.
    /// Each request counts against the password throttle of `source` (`Throttled`, alike
    /// for every login).
    async fn start_recovery(&self, login: &str, source: IpAddr) -> Result<(), PortalError>;
    /// Password recovery by secret question (only where the user's license allows it):
    /// the login, the question the user chose (one of [`SECRET_QUESTIONS`]) and the answer,
    /// checked under the sign-in throttle of that login. A one-time recovery token on
    /// success; `InvalidCredentials` for every mismatch alike.
    async fn recover_by_question(
        &self,
        login: &str,
        question: &str,
        answer: &str,
        source: IpAddr,
    ) -> Result<String, PortalError>;
    /// Whether the user's license offers secret-question recovery, and the question the
    /// user chose, if any.
    async fn secret_question(&self, user_id: &str) -> Result<(bool, Option<String>), PortalError>;
    /// Sets the user's secret question after checking the current password
    /// (`InvalidCredentials` if wrong, under the throttle).
    async fn set_secret_question(
        &self,
        user_id: &str,
        current_password: &str,
        question: &str,
        answer: &str,
        source: IpAddr,
    ) -> Result<(), PortalError>;
    /// Removes the user's secret question.
    async fn clear_secret_question(&self, user_id: &str) -> Result<(), PortalError>;
    /// Sets a new password with a recovery token (once, unexpired): `InvalidCredentials`
    /// for any other token, `Invalid` for a password the rules refuse.
    async fn finish_recovery(&self, token: &str, new_password: &str) -> Result<(), PortalError>;
    /// The live session of a token (its activity recorded), or `None`.
    async fn session(&self, token: &str) -> Result<Option<Visitor>, PortalError>;
    /// Ends the session of a token on the server.
    async fn sign_out(&self, token: &str) -> Result<(), PortalError>;
    /// The user's unexpired sessions, newest first.
    async fn sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>, PortalError>;
    /// Ends one of the user's own sessions; `NotFound` for any other id.
    async fn revoke_session(&self, user_id: &str, session_id: &str) -> Result<(), PortalError>;
}
