//! What users change themselves on the web portal (white paper §3.6, §3.7.3, §9.2.1):
//! activation with a password of their own, a new password, and their settings (name,
//! time zone, ConstantSync, alert filter rules). The caller tells the user's VES about
//! changed settings and closes the sessions of revoked devices.

use std::net::IpAddr;

use noc_protocol::rts::FilterRule;
use noc_protocol::{DeviceId, UserId};

use crate::accounts::{AccountError, Accounts, Result, check_name, check_time_zone, normalize_email};
use crate::invalid::{Invalid, NameField};
use crate::model::{
    ALERT_EMAIL_CONFIRMATION_TTL_MS, AlertDelivery, MAX_ALERT_EMAIL_CONFIRMATIONS_PER_DAY, PendingAlertEmail,
    SecretQuestion, UserRecord, UserSettings,
};
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

/// The secret questions a user may choose from (their keys; the portal words them in the
/// user's language). A fixed list, so that the recovery page can offer all of them without
/// saying which one an account uses, or whether it exists.
pub const SECRET_QUESTIONS: [&str; 5] = ["first_school", "first_pet", "birth_city", "childhood_friend", "first_street"];
/// Answers shorter than this are refused when set: too easy to guess.
pub const MIN_ANSWER_CHARS: usize = 3;
pub const MAX_ANSWER_CHARS: usize = 100;

/// Case and spacing do not matter in an answer: "  New   York" is "new york".
fn normalize_answer(answer: &str) -> String {
    answer.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// A confirmation mail to send: the link's token (`<user id>.<secret>`) to `address`.
pub struct AlertEmailConfirmation {
    pub user: UserRecord,
    pub address: String,
    pub token: String,
}

impl std::fmt::Debug for AlertEmailConfirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertEmailConfirmation").field("address", &self.address).finish_non_exhaustive()
    }
}

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

/// A language tag such as `en` or `de-CH` (which languages the portal has is its
/// business; the store keeps the choice).
pub(crate) fn check_locale(tag: &str) -> Result<()> {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or("");
    let ok = tag.len() <= 35
        && (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok { Ok(()) } else { Err(Invalid::Locale.into()) }
}

fn check_rules(rules: &[FilterRule]) -> Result<()> {
    if rules.len() > MAX_FILTER_RULES {
        return Err(Invalid::TooManyRules { max: MAX_FILTER_RULES }.into());
    }
    for r in rules {
        if !RULE_FIELDS.contains(&r.field.as_str()) {
            return Err(Invalid::RuleField.into());
        }
        let n = r.contains.chars().count();
        if n == 0 || n > MAX_RULE_TEXT || r.contains.chars().any(char::is_control) {
            return Err(Invalid::RuleText { max: MAX_RULE_TEXT }.into());
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
            return Err(Invalid::PasswordReused.into());
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

    /// The user's devices (live, waiting for a wipe, or wiped), oldest first.
    pub async fn own_devices(&self, user: UserId) -> Result<Vec<crate::model::DeviceRecord>> {
        Ok(self.store().devices_of_user(user).await?)
    }

    /// Names one of the user's devices (1 to 64 printable characters).
    pub async fn rename_own_device(&self, user: UserId, device: DeviceId, name: &str) -> Result<()> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Invalid::DeviceName.into());
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

    /// Asks for a remote wipe of one of the user's live devices (a lost or stolen phone):
    /// from now on it opens no session, and its next authentication is answered with the
    /// wipe. The caller closes its live session so that this happens at once.
    pub async fn wipe_own_device(&self, user: UserId, device: DeviceId) -> Result<()> {
        self.store().request_device_wipe(user, device, noc_protocol::clock::unix_ms_i64()).await?;
        self.audit(format!("user:{user}"), "device.wipe_requested", format!("device:{device}"), "by=user".into()).await;
        Ok(())
    }

    /// Whether the user's license allows secret-question recovery, and the user's question
    /// if one is set.
    pub async fn own_secret_question(&self, user: &UserRecord) -> Result<(bool, Option<String>)> {
        let allowed = self.store().license_by_id(user.license_id).await?.is_some_and(|l| l.secret_question_recovery);
        let question = self.store().secret_question(user.id).await?.map(|q| q.question);
        Ok((allowed, question))
    }

    /// Sets the user's secret question and answer (white paper §9.2.2) after checking the
    /// current password (under the throttle). Only where the license allows the route.
    pub async fn set_own_secret_question(
        &self,
        user: &UserRecord,
        current_password: &str,
        question: &str,
        answer: &str,
        source: IpAddr,
    ) -> Result<()> {
        let (allowed, _) = self.own_secret_question(user).await?;
        if !allowed {
            return Err(Invalid::QuestionNotOffered.into());
        }
        if !SECRET_QUESTIONS.contains(&question) {
            return Err(Invalid::QuestionUnknown.into());
        }
        let answer = normalize_answer(answer);
        if !(MIN_ANSWER_CHARS..=MAX_ANSWER_CHARS).contains(&answer.chars().count()) {
            return Err(Invalid::AnswerLength { min: MIN_ANSWER_CHARS, max: MAX_ANSWER_CHARS }.into());
        }
        match self.check_login(&user.email, current_password, source).await {
            Ok(checked) if checked.id == user.id => {}
            Ok(_) | Err(AccountError::InvalidCredentials) => return Err(AccountError::InvalidCredentials),
            Err(e) => return Err(e),
        }
        let answer_hash = self.hash_password(&answer).await?;
        let secret = SecretQuestion { question: question.to_string(), answer_hash };
        self.store().set_secret_question(user.id, Some(&secret), noc_protocol::clock::unix_ms_i64()).await?;
        self.audit(format!("user:{}", user.id), "user.secret_question_set", format!("user:{}", user.id), String::new())
            .await;
        Ok(())
    }

    /// Removes the user's secret question.
    pub async fn clear_own_secret_question(&self, user: UserId) -> Result<()> {
        self.store().set_secret_question(user, None, noc_protocol::clock::unix_ms_i64()).await?;
        self.audit(format!("user:{user}"), "user.secret_question_removed", format!("user:{user}"), String::new()).await;
        Ok(())
    }

    /// Password recovery by secret question: the login, the question the user chose and
    /// the answer. Checked like a password, under the same throttle as the sign-in of that
    /// login; any mismatch — unknown login, account or license without the route, another
    /// question, a wrong answer — is the same `InvalidCredentials`, after the same work.
    /// On success a one-time recovery token, as the mailed link carries (not rationed per
    /// hour: no mail is sent, and the throttle spaces out the guesses).
    pub async fn recover_by_question(
        &self,
        login: &str,
        question: &str,
        answer: &str,
        source: IpAddr,
    ) -> Result<Recovery> {
        let key = Accounts::user_key(login);
        let user = self.user_by_login(login).await?.filter(|u| u.status == crate::model::UserStatus::Active);
        let mut expected = None;
        if let Some(user) = &user {
            let license = self.store().license_by_id(user.license_id).await?;
            let open =
                license.is_some_and(|l| l.secret_question_recovery && l.usable_at(noc_protocol::clock::unix_ms_i64()));
            if open {
                expected = self.store().secret_question(user.id).await?.filter(|q| q.question == question);
            }
        }
        let hash = expected.as_ref().map(|q| q.answer_hash.as_str());
        self.throttled_check(&key, source, &normalize_answer(answer), hash).await?;
        let Some(user) = user else { return Err(AccountError::InvalidCredentials) };
        let recovery = self.issue_recovery(user).await?;
        self.audit(
            format!("user:{}", recovery.user.id),
            "user.recovery_by_question",
            format!("user:{}", recovery.user.id),
            String::new(),
        )
        .await;
        Ok(recovery)
    }

    /// A new one-time recovery token for `user`.
    pub(crate) async fn issue_recovery(&self, user: UserRecord) -> Result<Recovery> {
        let now = noc_protocol::clock::unix_ms_i64();
        let token = secrets::random_hex::<32>();
        let expires_at = now + i64::try_from(RECOVERY_TTL.as_millis()).unwrap_or(i64::MAX);
        self.store().insert_recovery_token(&secrets::token_hash(token.as_bytes()), user.id, now, expires_at).await?;
        Ok(Recovery { user, token, expires_at })
    }

    /// Starts password recovery for the account `login` names (e-mail address or MSISDN):
    /// a one-time token (256 bits, stored hashed) valid for [`RECOVERY_TTL`]. `None` when
    /// no such account exists, it cannot sign in (suspended, not activated), or it had its
    /// [`MAX_RECOVERIES_PER_HOUR`]: the caller answers every case alike. Each request
    /// counts against the throttle of `source` and of the login (`recovery:` names), so
    /// that no address can make the service mail at will; a throttled request is
    /// `Throttled`, whether or not the account exists.
    pub async fn start_recovery(&self, login: &str, source: IpAddr) -> Result<Option<Recovery>> {
        self.throttle_request(&format!("recovery:{}", Accounts::user_key(login)), source)?;
        let user = self.user_by_login(login).await?;
        let Some(user) = user.filter(|u| u.status == crate::model::UserStatus::Active) else { return Ok(None) };
        let now = noc_protocol::clock::unix_ms_i64();
        if self.store().recovery_tokens_since(user.id, now - 3_600_000).await? >= MAX_RECOVERIES_PER_HOUR {
            return Ok(None);
        }
        let recovery = self.issue_recovery(user).await?;
        let id = recovery.user.id;
        self.audit(format!("user:{id}"), "user.recovery_started", format!("user:{id}"), String::new()).await;
        Ok(Some(recovery))
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

    /// Sets where the user's alerts go, validated: an e-mail address, an `https://` webhook
    /// (its signing secret generated when it is first set, or again on `new_secret`),
    /// excerpts, quiet hours. Returns the updated user, and the confirmation to mail when
    /// the address is a new one: alerts go to an address only once its owner followed the
    /// link (the account's own address needs none). Until then the address confirmed
    /// before, if any, keeps getting them. `AlertEmailRationed` when the user asked for
    /// more confirmation mails than a day allows.
    pub async fn set_own_alert_delivery(
        &self,
        user: UserId,
        delivery: AlertDelivery,
        new_secret: bool,
    ) -> Result<(UserRecord, Option<AlertEmailConfirmation>)> {
        let before = self.store().user_by_id(user).await?.ok_or(AccountError::NotFound)?;
        let asked = match delivery.email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            Some(e) => Some(normalize_email(e).map_err(|_| AccountError::Invalid(Invalid::AlertEmail))?),
            None => None,
        };
        let webhook_url = match delivery.webhook_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) => Some(check_webhook(u)?),
            None => None,
        };
        match (delivery.quiet_from, delivery.quiet_to) {
            (None, None) => {}
            (Some(a), Some(b)) if a < 24 && b < 24 => {}
            _ => return Err(Invalid::QuietHours.into()),
        }
        let webhook_secret = match (&webhook_url, &before.alert_delivery.webhook_secret) {
            (None, _) => None,
            (Some(_), Some(secret)) if !new_secret => Some(secret.clone()),
            (Some(_), _) => Some(secrets::random_hex::<32>()),
        };
        let now = noc_protocol::clock::unix_ms_i64();
        let old = &before.alert_delivery;
        let (mut day, mut sent) = (old.confirmations_day, old.confirmations_sent);
        let (email, pending, confirm) = match asked {
            None => (None, None, None),
            // The confirmed address again (which cancels one waiting), or the account's own
            // mailbox: no confirmation needed.
            Some(a) if old.email.as_deref() == Some(a.as_str()) => (Some(a), None, None),
            Some(a) if a == before.email => (Some(a), None, None),
            // Asked again while its link is still good: nothing new to mail.
            Some(a) if old.pending_email.as_ref().is_some_and(|p| p.address == a && p.expires_at > now) => {
                (old.email.clone(), old.pending_email.clone(), None)
            }
            Some(a) => {
                let today = now.div_euclid(86_400_000);
                if day != today {
                    (day, sent) = (today, 0);
                }
                if sent >= MAX_ALERT_EMAIL_CONFIRMATIONS_PER_DAY {
                    return Err(Invalid::AlertEmailRationed { max: MAX_ALERT_EMAIL_CONFIRMATIONS_PER_DAY }.into());
                }
                sent += 1;
                let secret = secrets::random_hex::<32>();
                let pending = PendingAlertEmail {
                    address: a.clone(),
                    token_hash: hex::encode(secrets::token_hash(secret.as_bytes())),
                    expires_at: now + ALERT_EMAIL_CONFIRMATION_TTL_MS,
                };
                (old.email.clone(), Some(pending), Some((a, format!("{user}.{secret}"))))
            }
        };
        let delivery = AlertDelivery {
            email,
            pending_email: pending,
            confirmations_day: day,
            confirmations_sent: sent,
            webhook_url,
            webhook_secret,
            ..delivery
        };
        let updated = self.store().set_alert_delivery(user, &delivery, now).await?;
        let detail = format!(
            "email={} pending_email={} webhook={} excerpt={} quiet={}",
            delivery.email.is_some(),
            delivery.pending_email.is_some(),
            delivery.webhook_url.is_some(),
            delivery.excerpt,
            delivery.quiet_from.is_some()
        );
        self.audit(format!("user:{user}"), "user.alert_delivery_changed", format!("user:{user}"), detail).await;
        let confirmation =
            confirm.map(|(address, token)| AlertEmailConfirmation { user: updated.clone(), address, token });
        Ok((updated, confirmation))
    }

    /// Confirms an alert address with the token its link carried (`<user id>.<secret>`):
    /// from now on alerts go there. An unknown, replaced or expired token is
    /// `InvalidCredentials`.
    pub async fn confirm_alert_email(&self, token: &str) -> Result<UserRecord> {
        let (id, secret) = token.split_once('.').ok_or(AccountError::InvalidCredentials)?;
        let id: UserId = id.parse().map_err(|_| AccountError::InvalidCredentials)?;
        if secret.is_empty() || secret.len() > 128 {
            return Err(AccountError::InvalidCredentials);
        }
        let user = self.store().user_by_id(id).await?.ok_or(AccountError::InvalidCredentials)?;
        let now = noc_protocol::clock::unix_ms_i64();
        let pending = user
            .alert_delivery
            .pending_email
            .clone()
            .filter(|p| p.expires_at > now)
            .filter(|p| hex::decode(&p.token_hash).is_ok_and(|h| secrets::token_matches(secret.as_bytes(), &h)))
            .ok_or(AccountError::InvalidCredentials)?;
        let delivery =
            AlertDelivery { email: Some(pending.address), pending_email: None, ..user.alert_delivery.clone() };
        let updated = self.store().set_alert_delivery(id, &delivery, now).await?;
        self.audit(format!("user:{id}"), "user.alert_email_confirmed", format!("user:{id}"), String::new()).await;
        Ok(updated)
    }

    /// Replaces the user's settings, validated; returns the updated user.
    pub async fn update_own_settings(&self, user: UserId, settings: UserSettings) -> Result<UserRecord> {
        let settings = UserSettings {
            first_name: settings.first_name.trim().to_string(),
            last_name: settings.last_name.trim().to_string(),
            time_zone: settings.time_zone.map(|z| z.trim().to_string()).filter(|z| !z.is_empty()),
            locale: settings.locale.map(|l| l.trim().to_string()).filter(|l| !l.is_empty()),
            contact_email: match settings.contact_email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
                Some(e) => Some(normalize_email(e).map_err(|_| AccountError::Invalid(Invalid::ContactEmail))?),
                None => None,
            },
            ..settings
        };
        check_name(&settings.first_name, NameField::FirstName)?;
        check_name(&settings.last_name, NameField::LastName)?;
        if let Some(z) = &settings.time_zone {
            check_time_zone(z)?;
        }
        check_rules(&settings.filter_rules)?;
        if let Some(l) = &settings.locale {
            check_locale(l)?;
        }
        if !crate::model::CALENDAR_DAYS_AHEAD.contains(&settings.calendar_days_ahead) {
            return Err(AccountError::Invalid(Invalid::CalendarDaysAhead));
        }
        let updated = self.store().update_user_settings(user, &settings, noc_protocol::clock::unix_ms_i64()).await?;
        self.audit(
            format!("user:{user}"),
            "user.settings_changed",
            format!("user:{user}"),
            format!(
                "constant_sync={} alerts={} filter_rules={} calendar_days_ahead={}",
                settings.constant_sync,
                settings.alerts_enabled,
                settings.filter_rules.len(),
                settings.calendar_days_ahead
            ),
        )
        .await;
        Ok(updated)
    }
}

/// A webhook address: `https://host[:port]/path`, no user info, no spaces.
fn check_webhook(url: &str) -> Result<String> {
    let bad = || AccountError::Invalid(Invalid::WebhookUrl);
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let valid = url.len() <= 2000
        && !host.is_empty()
        && !host.contains('@')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid { Ok(url.to_string()) } else { Err(bad()) }
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
