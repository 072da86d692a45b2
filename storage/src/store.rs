//! The persistence contract every backend implements.

use async_trait::async_trait;
use noc_protocol::{DeviceId, LicenseId, UserId, VesId};

use crate::error::StoreError;
use crate::model::*;

pub type Result<T> = std::result::Result<T, StoreError>;

/// Persistence of accounts, licenses, devices and audit. Implementations must make each
/// method atomic (seat check + insert in `insert_user`, revocation with the password change
/// in `set_password`): the rules in [`crate::Accounts`] rely on it. Nothing here is on the
/// per-frame path.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip for readiness probes.
    async fn ping(&self) -> Result<()>;

    /// The connection pool's state, for the metrics; `None` for a backend without one.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }

    async fn insert_license(&self, new: NewLicense) -> Result<License>;
    async fn licenses(&self) -> Result<Vec<License>>;
    /// The license and its password hash.
    async fn license_by_name(&self, name: &str) -> Result<Option<(License, String)>>;
    async fn license_by_id(&self, id: LicenseId) -> Result<Option<License>>;
    async fn set_license_suspended(&self, name: &str, suspended: bool) -> Result<License>;
    /// Turns secret-question password recovery on or off for a license.
    async fn set_license_secret_question_recovery(&self, name: &str, enabled: bool) -> Result<License>;
    /// Stores a license-id token issued at `now`, and deletes the license's tokens issued
    /// before `expired_before` (they can no longer be used).
    async fn insert_license_token(
        &self,
        token_hash: &[u8],
        license: LicenseId,
        now: i64,
        expired_before: i64,
    ) -> Result<()>;
    /// The license of a token issued at or after `issued_after` (older ones have expired).
    async fn license_by_token(&self, token_hash: &[u8], issued_after: i64) -> Result<Option<License>>;
    /// Replaces the license's password hash and revokes all its tokens, atomically;
    /// returns the license and how many tokens were revoked. `NotFound` for an unknown name.
    async fn set_license_password(&self, name: &str, password_hash: &str) -> Result<(License, u64)>;

    /// Registers a VES GUID (hash) under a license. `Conflict` if the GUID is registered.
    async fn insert_ves(&self, guid_hash: &[u8], license: LicenseId, now: i64) -> Result<VesRecord>;
    /// Looks a VES up by GUID hash and records that it was seen at `now`.
    async fn touch_ves_by_guid(&self, guid_hash: &[u8], now: i64) -> Result<Option<VesRecord>>;

    /// VES installations whose license is suspended or expired at `now`: their sessions,
    /// and those of their users' devices, must end (live sessions are checked periodically,
    /// logins at once).
    async fn ves_of_unusable_licenses(&self, now: i64) -> Result<Vec<VesId>>;
    /// VES installations whose license does not allow `feature` (checked periodically
    /// like [`Store::ves_of_unusable_licenses`]: a device session of a license that lost
    /// ConstantSync ends).
    async fn ves_of_licenses_without(&self, feature: Feature) -> Result<Vec<VesId>>;
    /// Every VES installation of a license that is neither suspended nor expired at `now`,
    /// with its license: which licenses have no enterprise server connected is counted
    /// from it (`noc_licenses_without_ves`).
    async fn ves_of_usable_licenses(&self, now: i64) -> Result<Vec<(LicenseId, VesId)>>;
    /// Records what a VES installation runs (sent with its command channel).
    async fn set_ves_agent(&self, ves: VesId, agent: &str) -> Result<()>;
    /// A license's VES installations, most recently connected first.
    async fn ves_of_license(&self, license: LicenseId) -> Result<Vec<VesInstallation>>;

    /// Inserts a user if its license has a free seat (`SeatsFull` otherwise), atomically.
    async fn insert_user(&self, new: NewUser, now: i64) -> Result<UserRecord>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>>;
    /// `email` must already be lowercase.
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>>;
    async fn user_by_msisdn(&self, msisdn: &str) -> Result<Option<UserRecord>>;
    async fn users_by_ves(&self, ves: VesId) -> Result<Vec<UserRecord>>;
    /// Deletes the user and its devices; returns the devices that were deleted.
    async fn delete_user(&self, id: UserId) -> Result<Vec<DeviceId>>;
    /// Changes the password hash and, with `revoke_devices`, revokes every live device of
    /// the user, atomically; returns the revoked devices.
    async fn set_password(
        &self,
        id: UserId,
        password_hash: &str,
        now: i64,
        revoke_devices: bool,
    ) -> Result<Vec<DeviceId>>;
    /// Replaces what a user sets on the settings page; `NotFound` for an unknown user.
    async fn update_user_settings(&self, id: UserId, settings: &UserSettings, now: i64) -> Result<UserRecord>;
    /// Binds MSISDN and time zone and marks the user active. `Conflict("msisdn")` if taken.
    /// Binds another MSISDN to a user (`Conflict("msisdn")` when another user has it).
    async fn set_user_msisdn(&self, id: UserId, msisdn: &str, now: i64) -> Result<UserRecord>;
    async fn activate_user(&self, id: UserId, msisdn: &str, time_zone: &str, now: i64) -> Result<UserRecord>;

    async fn insert_device(&self, new: NewDevice, now: i64) -> Result<DeviceRecord>;
    /// Records the client certificate issued to a device (its serial, lowercase hex, and
    /// expiry, unix seconds), replacing the one before.
    async fn set_device_certificate(&self, id: DeviceId, serial: &str, not_after: i64) -> Result<()>;
    async fn device_by_id(&self, id: DeviceId) -> Result<Option<DeviceRecord>>;
    /// The device with its user's and license's state, in one round trip (see
    /// [`DeviceLogin`]); `None` if the device (or its user) does not exist.
    async fn device_login(&self, id: DeviceId) -> Result<Option<DeviceLogin>>;
    /// Live (not revoked) devices of the users of a VES.
    async fn devices_by_ves(&self, ves: VesId) -> Result<Vec<(DeviceId, UserId)>>;
    /// The live devices of `ves`'s users in full, oldest first (the data channel's
    /// `ListDevices`).
    async fn device_records_by_ves(&self, ves: VesId) -> Result<Vec<DeviceRecord>>;

    /// Stores a password-recovery token (its hash) for `user`, valid until `expires_at`,
    /// and deletes every recovery token that expired before `now`.
    async fn insert_recovery_token(&self, token_hash: &[u8], user: UserId, now: i64, expires_at: i64) -> Result<()>;
    /// Takes a recovery token: deletes it and returns its user if it had not expired at
    /// `now`, atomically, so that a token works once however many requests race.
    async fn take_recovery_token(&self, token_hash: &[u8], now: i64) -> Result<Option<UserId>>;
    /// How many recovery tokens were issued for `user` at or after `since` (still stored).
    async fn recovery_tokens_since(&self, user: UserId, since: i64) -> Result<u32>;

    /// The user's secret question, if one is set.
    async fn secret_question(&self, user: UserId) -> Result<Option<SecretQuestion>>;
    /// Sets (`Some`) or removes (`None`) the user's secret question; `NotFound` for an
    /// unknown user.
    async fn set_secret_question(&self, user: UserId, question: Option<&SecretQuestion>, now: i64) -> Result<()>;

    /// The user's devices that are live, waiting for a wipe or wiped, oldest first (a
    /// revoked device is gone from the list; a wiped one stays as the wipe's receipt).
    async fn devices_of_user(&self, user: UserId) -> Result<Vec<DeviceRecord>>;
    /// Names one of the user's live devices; `NotFound` for any other device.
    async fn rename_device(&self, user: UserId, device: DeviceId, name: &str) -> Result<DeviceRecord>;
    /// Revokes one of the user's live devices at `now`; `NotFound` for any other device
    /// (a device waiting for its wipe stays so: revoking it would cancel the wipe).
    async fn revoke_device(&self, user: UserId, device: DeviceId, now: i64) -> Result<()>;
    /// Marks one of the user's live devices for a remote wipe at `now`: from then on it
    /// opens no session, and its next authentication is answered with the wipe.
    /// `NotFound` for any other device.
    async fn request_device_wipe(&self, user: UserId, device: DeviceId, now: i64) -> Result<()>;
    /// Moves the devices' `last_seen_at` forward to the given times (never back); unknown
    /// devices are skipped.
    async fn record_devices_seen(&self, seen: &[(DeviceId, i64)]) -> Result<()>;
    /// Records that a device acknowledged its wipe: wiped and revoked at `now`. False when
    /// no wipe was waiting for it (already done, or never asked).
    async fn complete_device_wipe(&self, device: DeviceId, now: i64) -> Result<bool>;

    async fn approve_msisdn(&self, msisdn: &str, approved_by: &str, now: i64) -> Result<()>;
    async fn msisdn_approved(&self, msisdn: &str) -> Result<bool>;
    /// Approves every MSISDN given, in one transaction; returns how many were not on the
    /// list before (those already there keep their approval).
    async fn approve_msisdns(&self, msisdns: &[String], approved_by: &str, now: i64) -> Result<u64>;
    /// Takes an MSISDN off the list; false when it was not on it.
    async fn revoke_msisdn(&self, msisdn: &str) -> Result<bool>;
    /// Approvals whose MSISDN contains `search` (all without), by MSISDN, one page.
    async fn msisdn_approvals(
        &self,
        search: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<MsisdnApprovalRecord>>;

    /// Stores a new web session under the hash of its token, and deletes every session
    /// that ended before `session.created_at`.
    async fn insert_web_session(&self, token_hash: &[u8], session: &WebSession) -> Result<()>;
    /// The live session of a token, with `last_seen_at` moved to `now`, atomically. A
    /// session is live when `now < expires_at` and, unless persistent, its last request
    /// was at or after `idle_since`; a session found ended is deleted and `None` returned.
    async fn touch_web_session(&self, token_hash: &[u8], now: i64, idle_since: i64) -> Result<Option<WebSession>>;
    /// Deletes the session of a token (sign-out); whether one existed.
    async fn delete_web_session(&self, token_hash: &[u8]) -> Result<bool>;
    /// Deletes the user's session with public id `id` (revocation from the settings
    /// page); whether one existed. Another user's session is never touched.
    async fn delete_web_session_by_id(&self, user: UserId, id: &str) -> Result<bool>;
    /// Deletes every session of the user except the one of `keep` (a password change
    /// signs out everywhere else); returns how many.
    async fn delete_web_sessions_of_user(&self, user: UserId, keep: Option<&[u8]>) -> Result<u64>;
    /// The user's sessions that have not passed `expires_at`, newest first.
    async fn web_sessions_of_user(&self, user: UserId, now: i64) -> Result<Vec<WebSession>>;

    /// Stores a new operator with the hashes of its recovery codes; `Conflict("name")` when
    /// the name is taken.
    async fn insert_operator(&self, operator: &OperatorRecord, recovery_code_hashes: &[Vec<u8>]) -> Result<()>;
    async fn operator_by_name(&self, name: &str) -> Result<Option<OperatorRecord>>;
    /// Every operator, by name.
    async fn operators(&self) -> Result<Vec<OperatorRecord>>;
    /// Records that the operator signed in with the TOTP code of `step`, if no code of that
    /// step or a later one was used before (atomically): false means a replayed code.
    async fn use_totp_step(&self, operator_id: &str, step: i64) -> Result<bool>;
    /// Spends one of the operator's unused recovery codes (by hash) at `now`; false when
    /// there is no such unused code.
    async fn use_recovery_code(&self, operator_id: &str, code_hash: &[u8], now: i64) -> Result<bool>;

    async fn operator_by_id(&self, id: &str) -> Result<Option<OperatorRecord>>;
    /// Disables or enables an operator; disabling also deletes every token and console
    /// sign-in of theirs, in the same transaction. `NotFound` for an unknown name.
    async fn set_operator_disabled(&self, name: &str, disabled: bool) -> Result<OperatorRecord>;

    /// Stores an operator token by the hash of its secret.
    async fn insert_operator_token(&self, token_hash: &[u8], token: &OperatorToken) -> Result<()>;
    /// The live token with this hash and its operator, marked used at `now`; `None` when
    /// unknown, expired (`expires_at <= now`) or idle since before `idle_since`.
    async fn touch_operator_token(
        &self,
        token_hash: &[u8],
        now: i64,
        idle_since: i64,
    ) -> Result<Option<(OperatorToken, OperatorRecord)>>;
    /// The operator's unexpired tokens, newest first.
    async fn operator_tokens(&self, operator_id: &str, now: i64) -> Result<Vec<OperatorToken>>;
    /// Deletes the operator's token with this public id; false when it has none such.
    async fn delete_operator_token(&self, operator_id: &str, id: &str) -> Result<bool>;
    /// Deletes the token with this hash (a console sign-out); false when none.
    async fn delete_operator_token_by_hash(&self, token_hash: &[u8]) -> Result<bool>;

    /// Gives a license into an operator's care (a CSR's scope); granting twice is one grant.
    async fn grant_license(&self, license: LicenseId, operator_id: &str) -> Result<()>;
    /// The operators a license is granted to, by id.
    async fn license_grantees(&self, license: LicenseId) -> Result<Vec<String>>;
    /// The licenses granted to an operator, by name.
    async fn licenses_granted_to(&self, operator_id: &str) -> Result<Vec<License>>;
    /// Applies what `change` sets, in one statement; `NotFound` for an unknown license.
    async fn update_license(&self, id: LicenseId, change: &LicenseChange) -> Result<License>;

    /// Users matching every condition of the filter, by e-mail, one page.
    async fn search_users(&self, filter: &UserFilter) -> Result<Vec<UserRecord>>;
    /// Sets a user's account state (suspend, reactivate).
    async fn set_user_status(&self, id: UserId, status: UserStatus, now: i64) -> Result<UserRecord>;
    /// Sets where a user's alerts go (the portal's alerts page).
    async fn set_alert_delivery(&self, id: UserId, delivery: &AlertDelivery, now: i64) -> Result<UserRecord>;
    /// Counts one alert for `user` in the clock hour `hour` (unix ms / 3 600 000) unless
    /// `max` were counted there already: `true` when counted. Shared by every node, so
    /// the per-user hourly limit holds across the cluster; older hours of the user are
    /// dropped on the way.
    async fn admit_alert(&self, user: UserId, hour: i64, max: u32) -> Result<bool>;
    /// Sets what a user may use (a CSR's grant, white paper §3.7.2).
    async fn set_user_access(&self, id: UserId, access: Features, now: i64) -> Result<UserRecord>;

    /// Adds a harvest of the nodes' usage counters to the day's records and records the
    /// devices active that day, in one transaction (a node's flush is all or nothing).
    async fn add_usage(&self, days: &[UsageDay], active: &[ActiveDeviceDay]) -> Result<()>;
    /// Usage records by day, then license.
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageDay>>;

    /// Appends an event (the log has no update and no delete but the retention purge).
    async fn append_audit(&self, event: AuditEvent) -> Result<()>;
    /// Deletes the events older than `before` (Unix ms): the retention purge, the one
    /// deletion the log knows. Returns how many went.
    async fn purge_audit(&self, before: i64) -> Result<u64>;
    /// Events matching the filter, newest first.
    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>>;
}
