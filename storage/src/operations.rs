//! What operators do (white paper §3.7.1–3.7.2, §8.5–8.7), with who may do what decided
//! here and nowhere else: the consoles and the admin API both call these methods with the
//! [`Principal`] the request authenticated as, so one rule serves both.
//!
//! Two checks, in this order, on every call:
//! * the **role and the token's scope** allow the action ([`permits`]), else `Forbidden`;
//! * the **record** is in the operator's reach: a CSR sees only the licenses granted to
//!   them (created by them or given by an administrator) and those licenses' users and
//!   devices. Anything else is `NotFound`, exactly as if it did not exist, so a CSR cannot
//!   even learn that another tenant's record is there.
//!
//! No method here reads or returns what a user keeps private: passwords, secret answers
//! and mail/PIM data have no field in what comes back.

use std::net::IpAddr;
use std::time::Duration;

use noc_protocol::{DeviceId, LicenseId, UserId, secrets};

use crate::accounts::{AccountError, Accounts, Result};
use crate::invalid::Invalid;
use crate::model::*;

/// Who a request acts as: an operator signed in through a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub operator_id: String,
    pub name: String,
    pub role: OperatorRole,
    pub scope: TokenScope,
    /// Where the request came from (for the audit log).
    pub source: Option<IpAddr>,
}

impl Principal {
    fn actor(&self) -> String {
        format!("operator:{}", self.name)
    }
}

/// The actions the roles are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadLicenses,
    /// Create licenses and change them (seats, expiry, suspension, features).
    WriteLicenses,
    /// Give a license into a CSR's care.
    GrantLicenses,
    ReadUsers,
    /// Suspend and reactivate users, revoke and wipe their devices.
    WriteUsers,
    ReadOperators,
    WriteOperators,
    ReadAudit,
    /// Usage records (a CSR: of their licenses).
    ReadUsage,
    /// The carrier's MSISDN approval list: read, approve, revoke, import.
    ManageMsisdns,
    /// The nodes of the cluster and the sessions each holds.
    ReadNodes,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::ReadLicenses,
        Permission::WriteLicenses,
        Permission::GrantLicenses,
        Permission::ReadUsers,
        Permission::WriteUsers,
        Permission::ReadOperators,
        Permission::WriteOperators,
        Permission::ReadAudit,
        Permission::ReadUsage,
        Permission::ManageMsisdns,
        Permission::ReadNodes,
    ];

    fn writes(self) -> bool {
        matches!(
            self,
            Permission::WriteLicenses
                | Permission::GrantLicenses
                | Permission::WriteUsers
                | Permission::WriteOperators
                | Permission::ManageMsisdns
        )
    }
}

/// Whether `role`, through a token of `scope`, may do `permission` at all (the record
/// check comes after). A read-scoped token never writes, whatever the role.
pub fn permits(role: OperatorRole, scope: TokenScope, permission: Permission) -> bool {
    if permission.writes() && scope == TokenScope::Read {
        return false;
    }
    use Permission::*;
    match role {
        OperatorRole::NocAdmin => true,
        OperatorRole::Csr => matches!(permission, ReadLicenses | WriteLicenses | ReadUsers | WriteUsers | ReadUsage),
        OperatorRole::Auditor => matches!(permission, ReadAudit | ReadUsage),
    }
}

/// What an approval (or an import of many) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsisdnImport {
    /// Newly on the list.
    pub approved: u64,
    /// Already on it (left as they were).
    pub already: u64,
    /// 1-based positions of malformed MSISDNs; when any, nothing was approved.
    pub invalid_lines: Vec<usize>,
}

/// The longest an API token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// A page of users at most this long.
pub const MAX_PAGE: u32 = 200;

fn now_ms() -> i64 {
    noc_protocol::clock::unix_ms_i64()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn show_expiry(at: Option<i64>) -> String {
    at.map_or_else(|| "never".to_string(), |t| t.to_string())
}

/// A license administrator's address, normalised; empty means none.
fn check_admin_email(email: Option<&str>) -> Result<Option<String>> {
    match email.map(str::trim).filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e) => crate::accounts::normalize_email(e).map(Some).map_err(|_| Invalid::AdminEmail.into()),
    }
}

impl Accounts {
    fn allow(&self, p: &Principal, permission: Permission) -> Result<()> {
        if permits(p.role, p.scope, permission) { Ok(()) } else { Err(AccountError::Forbidden) }
    }

    /// The permission check alone, for what is not in the store (the cluster's live
    /// state): the same table as every other action.
    pub fn authorize(&self, p: &Principal, permission: Permission) -> Result<()> {
        self.allow(p, permission)
    }

    /// Reading under a permission that also writes: the role must hold it, whatever the
    /// token's scope.
    fn allow_read(&self, p: &Principal, permission: Permission) -> Result<()> {
        if permits(p.role, TokenScope::Write, permission) { Ok(()) } else { Err(AccountError::Forbidden) }
    }

    /// Appends an operator's action to the audit log, with role, source and changes.
    async fn audit_operator(&self, p: &Principal, action: &str, subject: String, changes: Vec<FieldChange>) {
        let mut event = AuditEvent::new(p.actor(), action, subject, String::new());
        event.role = p.role.as_str().to_string();
        event.source = p.source.map(|s| s.to_string()).unwrap_or_default();
        event.changes = changes;
        if let Err(e) = self.store().append_audit(event).await {
            tracing::warn!(error = %e, action, "audit log write failed");
        }
    }

    // -- tokens ---------------------------------------------------------------------

    /// Issues a token to a signed-in operator: the secret is returned once, the store
    /// keeps its hash. `ttl` is capped at [`MAX_TOKEN_TTL`].
    pub async fn issue_operator_token(
        &self,
        operator: &OperatorRecord,
        kind: TokenKind,
        scope: TokenScope,
        label: &str,
        ttl: Duration,
        source: Option<IpAddr>,
    ) -> Result<(String, OperatorToken)> {
        let label: String = label.trim().chars().filter(|c| !c.is_control()).take(100).collect();
        if ttl.is_zero() {
            return Err(Invalid::TokenLifetime.into());
        }
        let now = now_ms();
        let secret = secrets::random_hex::<32>();
        let token = OperatorToken {
            id: secrets::random_hex::<8>(),
            operator_id: operator.id.clone(),
            kind,
            scope,
            label,
            created_at: now,
            last_used_at: now,
            expires_at: now.saturating_add(ms(ttl.min(MAX_TOKEN_TTL))),
        };
        self.store().insert_operator_token(&secrets::token_hash(secret.as_bytes()), &token).await?;
        let p = Principal {
            operator_id: operator.id.clone(),
            name: operator.name.clone(),
            role: operator.role,
            scope,
            source,
        };
        let action = match kind {
            TokenKind::Console => "operator.console_sign_in",
            TokenKind::Api => "operator.token_issue",
        };
        let changes = vec![FieldChange::new("scope", "", scope.as_str()), FieldChange::new("token", "", &token.id)];
        self.audit_operator(&p, action, format!("operator:{}", operator.name), changes).await;
        Ok((secret, token))
    }

    /// The operator a token belongs to, if the token is live, of the right kind, and its
    /// operator not disabled. A console token also ends after `idle` without use.
    pub async fn operator_principal(
        &self,
        secret: &str,
        kind: TokenKind,
        idle: Option<Duration>,
        source: Option<IpAddr>,
    ) -> Result<Option<Principal>> {
        let now = now_ms();
        let idle_since = idle.map_or(i64::MIN, |d| now.saturating_sub(ms(d)));
        let hash = secrets::token_hash(secret.trim().as_bytes());
        let Some((token, operator)) = self.store().touch_operator_token(&hash, now, idle_since).await? else {
            return Ok(None);
        };
        if token.kind != kind || operator.disabled {
            return Ok(None);
        }
        Ok(Some(Principal {
            operator_id: operator.id,
            name: operator.name,
            role: operator.role,
            scope: token.scope,
            source,
        }))
    }

    /// The caller's own live tokens and console sign-ins.
    pub async fn own_operator_tokens(&self, p: &Principal) -> Result<Vec<OperatorToken>> {
        Ok(self.store().operator_tokens(&p.operator_id, now_ms()).await?)
    }

    /// Revokes one of the caller's own tokens (any scope may revoke its own holder's).
    pub async fn revoke_own_operator_token(&self, p: &Principal, id: &str) -> Result<()> {
        if !self.store().delete_operator_token(&p.operator_id, id).await? {
            return Err(AccountError::NotFound);
        }
        let changes = vec![FieldChange::new("token", id, "")];
        self.audit_operator(p, "operator.token_revoke", format!("operator:{}", p.name), changes).await;
        Ok(())
    }

    /// Ends a console sign-in by its secret (the cookie's).
    pub async fn end_console_session(&self, secret: &str) -> Result<bool> {
        Ok(self.store().delete_operator_token_by_hash(&secrets::token_hash(secret.trim().as_bytes())).await?)
    }

    // -- licenses ---------------------------------------------------------------------

    /// The licenses the caller may see: all for an administrator, a CSR's own.
    pub async fn licenses_as(&self, p: &Principal) -> Result<Vec<License>> {
        self.allow(p, Permission::ReadLicenses)?;
        Ok(match p.role {
            OperatorRole::NocAdmin => self.store().licenses().await?,
            _ => self.store().licenses_granted_to(&p.operator_id).await?,
        })
    }

    /// One license, if in the caller's reach (else `NotFound`).
    pub async fn license_as(&self, p: &Principal, id: LicenseId) -> Result<License> {
        self.allow(p, Permission::ReadLicenses)?;
        self.reach_license(p, id).await
    }

    async fn reach_license(&self, p: &Principal, id: LicenseId) -> Result<License> {
        let license = self.store().license_by_id(id).await?.ok_or(AccountError::NotFound)?;
        if p.role != OperatorRole::NocAdmin && !self.store().license_grantees(id).await?.contains(&p.operator_id) {
            return Err(AccountError::NotFound);
        }
        Ok(license)
    }

    /// The operators (by name) a license is granted to.
    pub async fn license_grantees_as(&self, p: &Principal, id: LicenseId) -> Result<Vec<String>> {
        self.allow(p, Permission::ReadLicenses)?;
        self.reach_license(p, id).await?;
        let ids = self.store().license_grantees(id).await?;
        let operators = self.store().operators().await?;
        Ok(operators.into_iter().filter(|o| ids.contains(&o.id)).map(|o| o.name).collect())
    }

    /// Creates a license; one a CSR creates is in their care from then on.
    pub async fn create_license_as(&self, p: &Principal, draft: &LicenseDraft) -> Result<License> {
        self.allow(p, Permission::WriteLicenses)?;
        let name = draft.name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(Invalid::LicenseName.into());
        }
        let admin_email = check_admin_email(draft.admin_email.as_deref())?;
        self.check_password_rules(&draft.password)?;
        let password_hash = self.hash_password(&draft.password).await?;
        let (max_users, expires_at) = (draft.max_users, draft.expires_at);
        let license = self
            .store()
            .insert_license(NewLicense {
                name: name.to_string(),
                password_hash,
                max_users,
                expires_at,
                features: draft.features,
                admin_email,
            })
            .await?;
        if p.role != OperatorRole::NocAdmin {
            self.store().grant_license(license.id, &p.operator_id).await?;
        }
        let changes = vec![
            FieldChange::new("name", "", &license.name),
            FieldChange::new("max_users", "", max_users),
            FieldChange::new("expires_at", "", show_expiry(expires_at)),
            FieldChange::new("features", "", license.features.describe()),
            FieldChange::new("admin_email", "", license.admin_email.clone().unwrap_or_default()),
            FieldChange::new("password", "", "(set)"),
        ];
        self.audit_operator(p, "license.create", format!("license:{}", license.id), changes).await;
        Ok(license)
    }

    /// Changes a license in the caller's reach; what changed is audited field by field.
    pub async fn change_license_as(&self, p: &Principal, id: LicenseId, change: &LicenseChange) -> Result<License> {
        self.allow(p, Permission::WriteLicenses)?;
        let before = self.reach_license(p, id).await?;
        let mut change = change.clone();
        if let Some(email) = change.admin_email.take() {
            change.admin_email = Some(check_admin_email(email.as_deref())?);
        }
        let after = self.store().update_license(id, &change).await?;
        let mut changes = Vec::new();
        if before.max_users != after.max_users {
            changes.push(FieldChange::new("max_users", before.max_users, after.max_users));
        }
        if before.expires_at != after.expires_at {
            changes.push(FieldChange::new("expires_at", show_expiry(before.expires_at), show_expiry(after.expires_at)));
        }
        if before.suspended != after.suspended {
            changes.push(FieldChange::new("suspended", before.suspended, after.suspended));
        }
        if before.secret_question_recovery != after.secret_question_recovery {
            changes.push(FieldChange::new(
                "secret_question_recovery",
                before.secret_question_recovery,
                after.secret_question_recovery,
            ));
        }
        if before.require_client_certificates != after.require_client_certificates {
            changes.push(FieldChange::new(
                "require_client_certificates",
                before.require_client_certificates,
                after.require_client_certificates,
            ));
        }
        if before.features != after.features {
            changes.push(FieldChange::new("features", before.features.describe(), after.features.describe()));
        }
        if before.admin_email != after.admin_email {
            let show = |v: &Option<String>| v.clone().unwrap_or_default();
            changes.push(FieldChange::new("admin_email", show(&before.admin_email), show(&after.admin_email)));
        }
        if !changes.is_empty() {
            self.audit_operator(p, "license.change", format!("license:{id}"), changes).await;
        }
        Ok(after)
    }

    /// The active users of a license and the live devices of its users: whom a change of
    /// the license's features reaches.
    pub async fn license_population_as(
        &self,
        p: &Principal,
        id: LicenseId,
    ) -> Result<(Vec<UserRecord>, Vec<DeviceId>)> {
        self.allow(p, Permission::ReadUsers)?;
        self.reach_license(p, id).await?;
        let (mut users, mut devices) = (Vec::new(), Vec::new());
        for ves in self.store().ves_of_license(id).await? {
            users.extend(
                self.store().users_by_ves(ves.id).await?.into_iter().filter(|u| u.status == UserStatus::Active),
            );
            devices.extend(self.store().devices_by_ves(ves.id).await?.into_iter().map(|(d, _)| d));
        }
        Ok((users, devices))
    }

    /// A license's VES installations, most recently connected first.
    pub async fn ves_of_license_as(&self, p: &Principal, id: LicenseId) -> Result<Vec<VesInstallation>> {
        self.allow(p, Permission::ReadLicenses)?;
        self.reach_license(p, id).await?;
        Ok(self.store().ves_of_license(id).await?)
    }

    /// Gives a license into an operator's care (administrators only).
    pub async fn grant_license_as(&self, p: &Principal, id: LicenseId, operator_name: &str) -> Result<()> {
        self.allow(p, Permission::GrantLicenses)?;
        self.reach_license(p, id).await?;
        let operator =
            self.store().operator_by_name(&operator_name.trim().to_lowercase()).await?.ok_or(AccountError::NotFound)?;
        self.store().grant_license(id, &operator.id).await?;
        let changes = vec![FieldChange::new("granted_to", "", &operator.name)];
        self.audit_operator(p, "license.grant", format!("license:{id}"), changes).await;
        Ok(())
    }

    // -- users ------------------------------------------------------------------------

    /// Users matching the filter, within the caller's reach, one page.
    pub async fn search_users_as(&self, p: &Principal, filter: &UserFilter) -> Result<Vec<UserRecord>> {
        self.allow(p, Permission::ReadUsers)?;
        let mut filter = filter.clone();
        filter.limit = filter.limit.clamp(1, MAX_PAGE);
        for field in [&mut filter.email, &mut filter.msisdn, &mut filter.name] {
            *field = field.take().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        }
        if p.role != OperatorRole::NocAdmin {
            filter.granted_to = Some(p.operator_id.clone());
        }
        Ok(self.store().search_users(&filter).await?)
    }

    /// One user, if in the caller's reach.
    pub async fn user_as(&self, p: &Principal, id: UserId) -> Result<UserRecord> {
        self.allow(p, Permission::ReadUsers)?;
        self.reach_user(p, id).await
    }

    async fn reach_user(&self, p: &Principal, id: UserId) -> Result<UserRecord> {
        let user = self.store().user_by_id(id).await?.ok_or(AccountError::NotFound)?;
        self.reach_license(p, user.license_id).await?;
        Ok(user)
    }

    /// Suspends a user (no sign-in, no device session: the caller closes the live ones,
    /// returned with the user, read before the change so that a failure leaves nothing
    /// half done) or reactivates one. A user who never activated goes back to
    /// `provisioned`.
    pub async fn set_user_suspended_as(
        &self,
        p: &Principal,
        id: UserId,
        suspended: bool,
    ) -> Result<(UserRecord, Vec<DeviceId>)> {
        self.allow(p, Permission::WriteUsers)?;
        let before = self.reach_user(p, id).await?;
        let live: Vec<DeviceId> = self
            .store()
            .devices_of_user(id)
            .await?
            .into_iter()
            .filter(|d| d.revoked_at.is_none() && d.wipe_requested_at.is_none())
            .map(|d| d.id)
            .collect();
        let status = match (suspended, before.status, before.msisdn.is_some()) {
            (true, _, _) => UserStatus::Suspended,
            (false, UserStatus::Suspended, true) => UserStatus::Active,
            (false, UserStatus::Suspended, false) => UserStatus::Provisioned,
            (false, current, _) => current,
        };
        if status == before.status {
            return Ok((before, live));
        }
        let after = self.store().set_user_status(id, status, now_ms()).await?;
        let action = if suspended { "user.suspend" } else { "user.reactivate" };
        let changes = vec![FieldChange::new("status", before.status.as_str(), after.status.as_str())];
        self.audit_operator(p, action, format!("user:{id}"), changes).await;
        Ok((after, live))
    }

    /// Changes a user's name, MSISDN, time zone or language (validated as on the portal);
    /// each changed field is audited before and after.
    pub async fn change_user_as(&self, p: &Principal, id: UserId, change: &UserProfileChange) -> Result<UserRecord> {
        use crate::accounts::{check_name, check_time_zone, normalize_msisdn};
        self.allow(p, Permission::WriteUsers)?;
        let before = self.reach_user(p, id).await?;
        let trimmed = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_string());
        let first_name = trimmed(&change.first_name).unwrap_or_else(|| before.first_name.clone());
        let last_name = trimmed(&change.last_name).unwrap_or_else(|| before.last_name.clone());
        check_name(&first_name, crate::invalid::NameField::FirstName)?;
        check_name(&last_name, crate::invalid::NameField::LastName)?;
        let time_zone = match trimmed(&change.time_zone) {
            None => before.time_zone.clone(),
            Some(z) if z.is_empty() => None,
            Some(z) => {
                check_time_zone(&z)?;
                Some(z)
            }
        };
        let locale = match trimmed(&change.locale) {
            None => before.locale.clone(),
            Some(l) if l.is_empty() => None,
            Some(l) => {
                crate::self_service::check_locale(&l)?;
                Some(l)
            }
        };
        let msisdn = change.msisdn.as_deref().map(normalize_msisdn).transpose()?;
        let msisdn = msisdn.filter(|m| before.msisdn.as_deref() != Some(m.as_str()));
        if let Some(m) = &msisdn {
            // A number is bound by the user's own activation; an operator only replaces
            // one (so that this is no way around activation), and only with a number the
            // carrier approved when the approval list is in force.
            if before.msisdn.is_none() {
                return Err(AccountError::NotActivated);
            }
            if self.policy().msisdn_approval == crate::accounts::MsisdnApproval::List
                && !self.store().msisdn_approved(m).await?
            {
                return Err(AccountError::MsisdnNotApproved);
            }
        }
        let settings = UserSettings {
            first_name,
            last_name,
            time_zone,
            constant_sync: before.constant_sync,
            filter_rules: before.filter_rules.clone(),
            alerts_enabled: before.alerts_enabled,
            contact_email: before.contact_email.clone(),
            locale,
            calendar_days_ahead: before.calendar_days_ahead,
        };
        let now = now_ms();
        let mut after = self.store().update_user_settings(id, &settings, now).await?;
        if let Some(access) = change.access.filter(|a| *a != before.access) {
            after = self.store().set_user_access(id, access, now).await?;
        }
        if let Some(m) = msisdn {
            after = match self.store().set_user_msisdn(id, &m, now).await {
                Ok(u) => u,
                Err(crate::error::StoreError::Conflict(what)) => {
                    // Another user's number (perhaps another tenant's): the refusal is
                    // audited, so that probing for numbers leaves a trace.
                    let changes = vec![FieldChange::new("msisdn", "", "(taken)")];
                    self.audit_operator(p, "user.change_refused", format!("user:{id}"), changes).await;
                    return Err(AccountError::Conflict(what));
                }
                Err(e) => return Err(e.into()),
            };
        }
        let show = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut changes = Vec::new();
        for (field, b, a) in [
            ("first_name", before.first_name.clone(), after.first_name.clone()),
            ("last_name", before.last_name.clone(), after.last_name.clone()),
            ("msisdn", show(&before.msisdn), show(&after.msisdn)),
            ("time_zone", show(&before.time_zone), show(&after.time_zone)),
            ("locale", show(&before.locale), show(&after.locale)),
            ("access", before.access.describe(), after.access.describe()),
        ] {
            if b != a {
                changes.push(FieldChange::new(field, b, a));
            }
        }
        if !changes.is_empty() {
            self.audit_operator(p, "user.change", format!("user:{id}"), changes).await;
        }
        Ok(after)
    }

    /// Deletes a user and their devices; returns the user and the devices that were live
    /// (the caller closes their sessions and tells the VES).
    pub async fn delete_user_as(&self, p: &Principal, id: UserId) -> Result<(UserRecord, Vec<DeviceId>)> {
        self.allow(p, Permission::WriteUsers)?;
        let user = self.reach_user(p, id).await?;
        let devices = self.store().delete_user(id).await?;
        let changes = vec![FieldChange::new("email", &user.email, ""), FieldChange::new("devices", devices.len(), 0)];
        self.audit_operator(p, "user.delete", format!("user:{id}"), changes).await;
        Ok((user, devices))
    }

    /// Starts a password reset for a user (who called the help desk): a one-time recovery
    /// link, to be mailed to the user's own address by the caller — the operator never
    /// sees it. Rationed like the user's own requests; only for an activated user.
    pub async fn start_recovery_as(&self, p: &Principal, id: UserId) -> Result<crate::self_service::Recovery> {
        self.allow(p, Permission::WriteUsers)?;
        let user = self.reach_user(p, id).await?;
        if user.status != UserStatus::Active {
            return Err(Invalid::NotRecoverable.into());
        }
        let since = now_ms() - 3_600_000;
        if self.store().recovery_tokens_since(id, since).await? >= crate::self_service::MAX_RECOVERIES_PER_HOUR {
            return Err(Invalid::RecoveryRationed.into());
        }
        let recovery = self.issue_recovery(user).await?;
        self.audit_operator(p, "user.recovery_mailed", format!("user:{id}"), Vec::new()).await;
        Ok(recovery)
    }

    /// Clears a user's secret question (they set a new one on the portal).
    pub async fn reset_secret_question_as(&self, p: &Principal, id: UserId) -> Result<()> {
        self.allow(p, Permission::WriteUsers)?;
        self.reach_user(p, id).await?;
        let had = self.store().secret_question(id).await?.is_some();
        self.store().set_secret_question(id, None, now_ms()).await?;
        if had {
            let changes = vec![FieldChange::new("secret_question", "(set)", "")];
            self.audit_operator(p, "user.secret_question_reset", format!("user:{id}"), changes).await;
        }
        Ok(())
    }

    /// A user's devices, if the user is in the caller's reach.
    pub async fn devices_of_user_as(&self, p: &Principal, user: UserId) -> Result<Vec<DeviceRecord>> {
        self.allow(p, Permission::ReadUsers)?;
        self.reach_user(p, user).await?;
        Ok(self.store().devices_of_user(user).await?)
    }

    /// Revokes a device of a user in the caller's reach; returns the user (whose VES and
    /// live session the caller tells).
    pub async fn revoke_device_as(&self, p: &Principal, user: UserId, device: DeviceId) -> Result<UserRecord> {
        self.allow(p, Permission::WriteUsers)?;
        let owner = self.reach_user(p, user).await?;
        self.store().revoke_device(user, device, now_ms()).await?;
        let changes = vec![FieldChange::new("revoked", false, true)];
        self.audit_operator(p, "device.revoke", format!("device:{device}"), changes).await;
        Ok(owner)
    }

    /// Asks for a remote wipe of a user's live device (a lost or stolen phone): it opens
    /// no session from now on, and its next authentication is answered with the wipe. The
    /// caller closes its live session so that this happens at once.
    pub async fn wipe_device_as(&self, p: &Principal, user: UserId, device: DeviceId) -> Result<UserRecord> {
        self.allow(p, Permission::WriteUsers)?;
        let owner = self.reach_user(p, user).await?;
        self.store().request_device_wipe(user, device, now_ms()).await?;
        let changes = vec![FieldChange::new("wipe_requested", false, true)];
        self.audit_operator(p, "device.wipe_requested", format!("device:{device}"), changes).await;
        Ok(owner)
    }

    /// Checks that `device` is one of `user`'s, in the caller's reach, for an action on
    /// its live session (disconnecting it); audited as `action`.
    pub async fn device_session_action_as(
        &self,
        p: &Principal,
        user: UserId,
        device: DeviceId,
        action: &str,
    ) -> Result<DeviceRecord> {
        self.allow(p, Permission::WriteUsers)?;
        self.reach_user(p, user).await?;
        let record = self
            .store()
            .devices_of_user(user)
            .await?
            .into_iter()
            .find(|d| d.id == device)
            .ok_or(AccountError::NotFound)?;
        self.audit_operator(p, action, format!("device:{device}"), Vec::new()).await;
        Ok(record)
    }

    // -- operators --------------------------------------------------------------------

    pub async fn operators_as(&self, p: &Principal) -> Result<Vec<OperatorRecord>> {
        self.allow(p, Permission::ReadOperators)?;
        Ok(self.store().operators().await?)
    }

    /// Creates an operator (administrators only); the enrolment is handed to the new
    /// operator, once.
    pub async fn create_operator_as(
        &self,
        p: &Principal,
        name: &str,
        role: OperatorRole,
        password: &str,
    ) -> Result<crate::operators::Enrolment> {
        self.allow(p, Permission::WriteOperators)?;
        let enrolment = self.create_operator_unaudited(name, role, password, &p.actor()).await?;
        let changes = vec![
            FieldChange::new("name", "", &enrolment.operator.name),
            FieldChange::new("role", "", role.as_str()),
            FieldChange::new("password", "", "(set)"),
        ];
        self.audit_operator(p, "operator.create", format!("operator:{}", enrolment.operator.name), changes).await;
        Ok(enrolment)
    }

    // -- MSISDN approvals -------------------------------------------------------------

    /// Approvals whose MSISDN contains `search`, one page (administrators).
    pub async fn msisdn_approvals_as(
        &self,
        p: &Principal,
        search: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<MsisdnApprovalRecord>> {
        self.allow_read(p, Permission::ManageMsisdns)?;
        let search = search.map(str::trim).filter(|s| !s.is_empty());
        Ok(self.store().msisdn_approvals(search, offset, limit.clamp(1, MAX_PAGE)).await?)
    }

    /// Approves MSISDNs (one, or a whole import): every line is checked first, and nothing
    /// is approved if any is malformed, so an import is all or nothing.
    pub async fn approve_msisdns_as(&self, p: &Principal, msisdns: &[String]) -> Result<MsisdnImport> {
        self.allow(p, Permission::ManageMsisdns)?;
        let mut valid = Vec::with_capacity(msisdns.len());
        let mut invalid = Vec::new();
        for (i, m) in msisdns.iter().enumerate() {
            match crate::accounts::normalize_msisdn(m) {
                Ok(m) => valid.push(m),
                Err(_) => invalid.push(i + 1),
            }
        }
        if !invalid.is_empty() {
            return Ok(MsisdnImport { approved: 0, already: 0, invalid_lines: invalid });
        }
        valid.sort();
        valid.dedup();
        let approved = self.store().approve_msisdns(&valid, &p.actor(), now_ms()).await?;
        let already = valid.len() as u64 - approved;
        let (action, subject) = match valid.as_slice() {
            [one] => ("msisdn.approve", format!("msisdn:{one}")),
            _ => ("msisdn.import", "msisdn:*".to_string()),
        };
        self.audit_operator(p, action, subject, vec![FieldChange::new("approved", "", approved)]).await;
        Ok(MsisdnImport { approved, already, invalid_lines: Vec::new() })
    }

    /// Takes an MSISDN off the approval list: later activations with it are refused;
    /// an account already bound to it keeps it.
    pub async fn revoke_msisdn_as(&self, p: &Principal, msisdn: &str) -> Result<()> {
        self.allow(p, Permission::ManageMsisdns)?;
        let msisdn = crate::accounts::normalize_msisdn(msisdn).map_err(|_| AccountError::NotFound)?;
        if !self.store().revoke_msisdn(&msisdn).await? {
            return Err(AccountError::NotFound);
        }
        let changes = vec![FieldChange::new("approved", true, false)];
        self.audit_operator(p, "msisdn.revoke", format!("msisdn:{msisdn}"), changes).await;
        Ok(())
    }

    // -- usage ------------------------------------------------------------------------

    /// Usage records by day and license: every license for administrators and auditors,
    /// a CSR's own licenses for a CSR (another's asked by id is `NotFound`).
    pub async fn usage_as(&self, p: &Principal, filter: &UsageFilter) -> Result<Vec<UsageDay>> {
        self.allow(p, Permission::ReadUsage)?;
        let mut filter = filter.clone();
        if p.role == OperatorRole::Csr {
            if let Some(license) = filter.license {
                self.reach_license(p, license).await?;
            }
            filter.granted_to = Some(p.operator_id.clone());
        }
        if filter.to_day < filter.from_day || filter.to_day - filter.from_day > 399 {
            return Err(Invalid::UsageRange.into());
        }
        Ok(self.store().usage(&filter).await?)
    }

    /// Disables an operator (a leaver: every token and console sign-in of theirs ends at
    /// once, and they cannot sign in) or enables them again. Administrators only, and not
    /// themselves (so that the last administrator cannot lock everyone out by mistake).
    pub async fn set_operator_disabled_as(&self, p: &Principal, name: &str, disabled: bool) -> Result<OperatorRecord> {
        self.allow(p, Permission::WriteOperators)?;
        let name = name.trim().to_lowercase();
        if name == p.name {
            return Err(Invalid::OwnAccount.into());
        }
        let operator = self.store().set_operator_disabled(&name, disabled).await?;
        let action = if disabled { "operator.disable" } else { "operator.enable" };
        let changes = vec![FieldChange::new("disabled", !disabled, disabled)];
        self.audit_operator(p, action, format!("operator:{name}"), changes).await;
        Ok(operator)
    }

    // -- audit ------------------------------------------------------------------------

    /// The retention purge: deletes the events older than `retention`, at most once a day
    /// across the cluster (a node skips it when any node purged in the last 20 hours), and
    /// records that it ran, with how many events went. Returns that number, `None` when
    /// skipped.
    pub async fn purge_audit(&self, retention: Duration) -> Result<Option<u64>> {
        let now = now_ms();
        let last = AuditFilter { action: Some("audit.purge".into()), limit: 1, ..AuditFilter::default() };
        let recent = self.store().audit_search(&last).await?;
        if recent.first().is_some_and(|e| now - e.at < 20 * 3600 * 1000) {
            return Ok(None);
        }
        let before = now.saturating_sub(ms(retention));
        let purged = self.store().purge_audit(before).await?;
        let mut event = AuditEvent::new("system".into(), "audit.purge", "audit_log".into(), String::new());
        event.changes = vec![
            FieldChange::new("purged_events", "", purged),
            FieldChange::new("older_than_days", "", retention.as_secs() / 86_400),
        ];
        self.store().append_audit(event).await?;
        Ok(Some(purged))
    }

    /// Audit events matching the filter, newest first (administrators and auditors).
    pub async fn audit_as(&self, p: &Principal, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        self.allow(p, Permission::ReadAudit)?;
        let mut filter = filter.clone();
        filter.limit = filter.limit.clamp(1, 100_000);
        Ok(self.store().audit_search(&filter).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_white_paper_gives_them() {
        use OperatorRole::*;
        use Permission::*;
        let allowed =
            |role| Permission::ALL.into_iter().filter(|&p| permits(role, TokenScope::Write, p)).collect::<Vec<_>>();
        assert_eq!(allowed(NocAdmin), Permission::ALL.to_vec());
        assert!(!permits(NocAdmin, TokenScope::Read, ManageMsisdns), "a read token changes no list");
        assert_eq!(allowed(Csr), vec![ReadLicenses, WriteLicenses, ReadUsers, WriteUsers, ReadUsage]);
        assert_eq!(allowed(Auditor), vec![ReadAudit, ReadUsage]);
    }

    #[test]
    fn a_read_token_never_writes() {
        for role in OperatorRole::ALL {
            for permission in Permission::ALL {
                let read = permits(role, TokenScope::Read, permission);
                assert_eq!(read, !permission.writes() && permits(role, TokenScope::Write, permission));
            }
        }
    }
}
