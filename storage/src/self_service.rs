//! What users change themselves on the web portal (white paper §3.6, §3.7.3, §9.2.1):
//! activation with a password of their own, a new password, and their settings (name,
//! time zone, ConstantSync, alert filter rules). The caller tells the user's VES about
//! changed settings and closes the sessions of revoked devices.

use std::net::IpAddr;

use noc_protocol::rts::FilterRule;
use noc_protocol::{DeviceId, UserId};

use crate::accounts::{AccountError, Accounts, Result, check_name, check_time_zone, normalize_email};
use crate::model::{UserRecord, UserSettings};
use crate::secrets;
use crate::web_sessions::NewWebSession;

/// At most this many alert filter rules per user.
pub const MAX_FILTER_RULES: usize = 20;
/// The longest text a rule matches.
pub const MAX_RULE_TEXT: usize = 100;

/// How long a password-recovery link works (white paper §6.2, §9.2.2).
pub const RECOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Recovery mails one account may get per hour: more would make the service a mail
/// bomb pointed at the user.
pub const MAX_RECOVERIES_PER_HOUR: u32 = 3;

/// A recovery just started: the token goes into the mailed link and nowhere else.
#[derive(Clone)]
pub struct Recovery {
    pub user: UserRecord,
    pub token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The mail headers a rule may look at.
pub const RULE_FIELDS: [&str; 3] = ["from", "to", "subject"];

fn check_rules(rules: &[FilterRule]) -> Result<()> {
    if rules.len() > MAX_FILTER_RULES {
        return Err(AccountError::Invalid(format!("at most {MAX_FILTER_RULES} alert rules")));
    }
    for r in rules {
        if !RULE_FIELDS.contains(&r.field.as_str()) {
            return Err(AccountError::Invalid("an alert rule looks at From, To or Subject".into()));
        }
        let n = r.contains.chars().count();
        if n == 0 || n > MAX_RULE_TEXT || r.contains.chars().any(char::is_control) {
            return Err(AccountError::Invalid(format!(
                "the text of an alert rule must be 1 to {MAX_RULE_TEXT} printable characters"
            )));
        }
    }
    Ok(())
}

impl Accounts {
    /// Activation from the web page (white paper §3.6): the mailed credentials, the
    /// MSISDN and time zone, and the new password the user must choose; the user is then
    /// signed in. Every refusal of the mailed credentials reads like a wrong password.
    #[allow(clippy::too_many_arguments)]
    pub async fn web_activate(
        &self,
        login: &str,
        password: &str,
        msisdn: &str,
        time_zone: &str,
        new_password: &str,
        user_agent: &str,
        source: IpAddr,
    ) -> Result<NewWebSession> {
        self.check_new_password(new_password)?;
        if new_password == password {
            return Err(AccountError::Invalid("choose a password other than the one in the welcome mail".into()));
        }
        let user = self.activate_account(login, password, msisdn, time_zone, source).await?;
        self.set_own_password(user.id, new_password, None, false).await?;
        self.web_sign_in(&user.email, new_password, false, user_agent, source).await
    }

    /// A user's own new password (activation, settings): every other web session ends
    /// (`keep`: the token of the one that made the change) and, with `revoke_devices`,
    /// every device is revoked as when the enterprise resets it; returns the revoked
    /// devices, whose live sessions the caller closes.
    pub async fn set_own_password(
        &self,
        user: UserId,
        new_password: &str,
        keep: Option<&str>,
        revoke_devices: bool,
    ) -> Result<Vec<DeviceId>> {
        self.check_new_password(new_password)?;
        let hash = self.hash_password(new_password).await?;
        let now = noc_protocol::clock::unix_ms_i64();
        let devices = self.store().set_password(user, &hash, now, revoke_devices).await?;
        let keep = keep.map(|t| secrets::token_hash(t.as_bytes()));
        let ended = self.store().delete_web_sessions_of_user(user, keep.as_deref()).await?;
        self.audit(
            format!("user:{user}"),
            "user.password_changed",
            format!("user:{user}"),
            format!("revoked_devices={} ended_web_sessions={ended}", devices.len()),
        )
        .await;
        Ok(devices)
    }

    /// Changes the password after checking the current one (under the password
    /// throttle, like every password route). Other web sessions end; devices too when
    /// the user asks (a lost phone).
    pub async fn change_own_password(
        &self,
        user: &UserRecord,
        current: &str,
        new_password: &str,
        keep: &str,
        revoke_devices: bool,
        source: IpAddr,
    ) -> Result<Vec<DeviceId>> {
        self.check_new_password(new_password)?;
        match self.check_login(&user.email, current, source).await {
            Ok(checked) if checked.id == user.id => {}
            Ok(_) | Err(AccountError::InvalidCredentials) => return Err(AccountError::InvalidCredentials),
            Err(e) => return Err(e),
        }
        self.set_own_password(user.id, new_password, Some(keep), revoke_devices).await
    }

    /// The user's live devices, oldest first.
    pub async fn own_devices(&self, user: UserId) -> Result<Vec<crate::model::DeviceRecord>> {
        Ok(self.store().devices_of_user(user).await?)
    }

    /// Names one of the user's devices (1 to 64 printable characters).
    pub async fn rename_own_device(&self, user: UserId, device: DeviceId, name: &str) -> Result<()> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(AccountError::Invalid("a device name is 1 to 64 printable characters".into()));
        }
        self.store().rename_device(user, device, name).await?;
        self.audit(format!("user:{user}"), "device.renamed", format!("device:{device}"), String::new()).await;
        Ok(())
    }

    /// Revokes one of the user's devices; the caller closes its live session.
    pub async fn revoke_own_device(&self, user: UserId, device: DeviceId) -> Result<()> {
        self.store().revoke_device(user, device, noc_protocol::clock::unix_ms_i64()).await?;
        self.audit(format!("user:{user}"), "device.revoked", format!("device:{device}"), "by=user".into()).await;
        Ok(())
    }

    /// Starts password recovery for the account `login` names (e-mail address or MSISDN):
    /// a one-time token (256 bits, stored hashed) valid for [`RECOVERY_TTL`]. `None` when
    /// no such account exists, it cannot sign in (suspended, not activated), or it had its
    /// [`MAX_RECOVERIES_PER_HOUR`]: the caller answers every case alike.
    pub async fn start_recovery(&self, login: &str) -> Result<Option<Recovery>> {
        let login = login.trim();
        let user = if login.contains('@') {
            self.store().user_by_email(&login.to_lowercase()).await?
        } else {
            self.store().user_by_msisdn(login).await?
        };
        let Some(user) = user.filter(|u| u.status == crate::model::UserStatus::Active) else { return Ok(None) };
        let now = noc_protocol::clock::unix_ms_i64();
        if self.store().recovery_tokens_since(user.id, now - 3_600_000).await? >= MAX_RECOVERIES_PER_HOUR {
            return Ok(None);
        }
        let token = secrets::random_hex::<32>();
        let expires_at = now + i64::try_from(RECOVERY_TTL.as_millis()).unwrap_or(i64::MAX);
        self.store().insert_recovery_token(&secrets::token_hash(token.as_bytes()), user.id, now, expires_at).await?;
        self.audit(format!("user:{}", user.id), "user.recovery_started", format!("user:{}", user.id), String::new())
            .await;
        Ok(Some(Recovery { user, token, expires_at }))
    }

    /// Finishes recovery with the mailed token (once, unexpired) and a new password: every
    /// web session of the user ends; devices keep working (the user forgot a password, the
    /// phone was not lost). An unknown, used or expired token is `InvalidCredentials`; a
    /// password the rules refuse is `Invalid` and leaves the token usable.
    pub async fn finish_recovery(&self, token: &str, new_password: &str) -> Result<UserRecord> {
        self.check_new_password(new_password)?;
        if token.is_empty() || token.len() > 128 {
            return Err(AccountError::InvalidCredentials);
        }
        let now = noc_protocol::clock::unix_ms_i64();
        let hash = secrets::token_hash(token.as_bytes());
        let user = self.store().take_recovery_token(&hash, now).await?.ok_or(AccountError::InvalidCredentials)?;
        self.set_own_password(user, new_password, None, false).await?;
        self.audit(format!("user:{user}"), "user.password_recovered", format!("user:{user}"), String::new()).await;
        self.store().user_by_id(user).await?.ok_or(AccountError::NotFound)
    }

    /// Replaces the user's settings, validated; returns the updated user.
    pub async fn update_own_settings(&self, user: UserId, settings: UserSettings) -> Result<UserRecord> {
        let settings = UserSettings {
            first_name: settings.first_name.trim().to_string(),
            last_name: settings.last_name.trim().to_string(),
            time_zone: settings.time_zone.map(|z| z.trim().to_string()).filter(|z| !z.is_empty()),
            contact_email: match settings.contact_email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
                Some(e) => Some(
                    normalize_email(e)
                        .map_err(|_| AccountError::Invalid("the contact address must be an e-mail address".into()))?,
                ),
                None => None,
            },
            ..settings
        };
        check_name(&settings.first_name, "the first name")?;
        check_name(&settings.last_name, "the last name")?;
        if let Some(z) = &settings.time_zone {
            check_time_zone(z)?;
        }
        check_rules(&settings.filter_rules)?;
        let updated = self.store().update_user_settings(user, &settings, noc_protocol::clock::unix_ms_i64()).await?;
        self.audit(
            format!("user:{user}"),
            "user.settings_changed",
            format!("user:{user}"),
            format!("constant_sync={} filter_rules={}", settings.constant_sync, settings.filter_rules.len()),
        )
        .await;
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(field: &str, contains: &str) -> FilterRule {
        FilterRule { field: field.into(), contains: contains.into() }
    }

    #[test]
    fn rules_are_bounded_and_named() {
        assert!(check_rules(&[rule("from", "boss@corp.example"), rule("subject", "URGENT")]).is_ok());
        assert!(check_rules(&[rule("body", "x")]).is_err());
        assert!(check_rules(&[rule("to", "")]).is_err());
        assert!(check_rules(&[rule("to", &"x".repeat(MAX_RULE_TEXT + 1))]).is_err());
        assert!(check_rules(&[rule("to", "a\nb")]).is_err());
        assert!(check_rules(&vec![rule("to", "x"); MAX_FILTER_RULES + 1]).is_err());
    }
}
