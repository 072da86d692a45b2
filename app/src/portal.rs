//! The web portal's view of the accounts: [`noc_web::Portal`] over [`Accounts`]. The web
//! crate knows nothing of the store; this is the one place that translates.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use noc_actors::Router;
use noc_cluster::{FetchOutcome, FetchRefusal, SessionKey};
use noc_gateway::active_user_state;
use noc_protocol::rts::fetch::{FetchErrorCode, FetchRequest};
use noc_storage::{
    AccountError, Accounts, Feature, Invalid, NameField, UserRecord, UserSettings, UserStatus, WebSession,
};
use noc_web::portal::{AlertSettings, BrowseError, DeviceInfo, Interface, Problem, SettingsChange, WipeState};
use noc_web::{Portal, PortalError, Profile, SessionInfo, SignedIn, Visitor};

/// The portal over the node's account service, and the router that tells enterprise
/// servers and devices what changed.
pub struct AccountsPortal {
    pub accounts: Accounts,
    pub router: Arc<Router>,
    /// Sends recovery links; `None`: no recovery by mail.
    pub mailer: Option<crate::mail::Mailer>,
    /// The public base URL, for the links in mail.
    pub public_url: String,
    /// How long a browse page waits for the user's enterprise server.
    pub browse_timeout: Duration,
}

impl AccountsPortal {
    async fn user(&self, id: &str) -> Result<UserRecord, PortalError> {
        let id = user_id(id)?;
        self.accounts.store().user_by_id(id).await.map_err(|e| portal_error(e.into()))?.ok_or(PortalError::NotFound)
    }
}

fn profile(u: &UserRecord) -> Profile {
    Profile {
        user_id: u.id.to_string(),
        email: u.email.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        msisdn: u.msisdn.clone(),
        time_zone: u.time_zone.clone(),
        activated: u.status != UserStatus::Provisioned,
        constant_sync: u.constant_sync,
        filter_rules: u.filter_rules.clone(),
        alerts_enabled: u.alerts_enabled,
        contact_email: u.contact_email.clone(),
        locale: u.locale.clone(),
        calendar_days_ahead: u.calendar_days_ahead,
    }
}

fn visitor(s: &WebSession, u: &UserRecord) -> Visitor {
    Visitor { profile: profile(u), session_id: s.id.clone(), persistent: s.persistent }
}

fn portal_error(e: AccountError) -> PortalError {
    match e {
        AccountError::InvalidCredentials | AccountError::NotActivated => PortalError::InvalidCredentials,
        AccountError::Throttled(t) => PortalError::Throttled { retry_after: t.retry_after() },
        AccountError::Suspended | AccountError::Revoked => PortalError::Suspended,
        AccountError::NotFound => PortalError::NotFound,
        AccountError::Invalid(invalid) => PortalError::Invalid(problem(invalid)),
        AccountError::MsisdnNotApproved => PortalError::MsisdnNotApproved,
        AccountError::Conflict("msisdn") => PortalError::MsisdnTaken,
        AccountError::Busy(_) => PortalError::Busy,
        AccountError::Unavailable(_) => PortalError::Unavailable,
        other => {
            tracing::error!(error = %other, "web portal: account service failed");
            PortalError::Internal
        }
    }
}

/// The portal's word for what the account rules refused (every variant named: a new rule
/// must be given its wording on the pages).
fn problem(invalid: Invalid) -> Problem {
    match invalid {
        Invalid::PasswordLength { min, max } => Problem::PasswordLength { min, max },
        Invalid::PasswordReused => Problem::PasswordReused,
        Invalid::Email => Problem::Email,
        Invalid::ContactEmail => Problem::ContactEmail,
        Invalid::Msisdn => Problem::Msisdn,
        Invalid::TimeZone => Problem::TimeZone,
        Invalid::Locale => Problem::Locale,
        Invalid::CalendarDaysAhead => Problem::CalendarDaysAhead,
        Invalid::Name(NameField::FirstName) => Problem::FirstName,
        Invalid::Name(NameField::LastName) => Problem::LastName,
        Invalid::DeviceName => Problem::DeviceName,
        Invalid::TooManyRules { max } => Problem::TooManyRules { max },
        Invalid::RuleField => Problem::RuleField,
        Invalid::RuleText { max } => Problem::RuleText { max },
        Invalid::QuestionNotOffered => Problem::QuestionNotOffered,
        Invalid::QuestionUnknown => Problem::QuestionUnknown,
        Invalid::AnswerLength { min, max } => Problem::AnswerLength { min, max },
        Invalid::AlertEmail => Problem::AlertEmail,
        Invalid::AlertEmailRationed { max } => Problem::AlertEmailRationed { max },
        Invalid::WebhookUrl => Problem::WebhookUrl,
        Invalid::QuietHours => Problem::QuietHours,
        other @ (Invalid::DeviceAttribute(_)
        | Invalid::LicenseName
        | Invalid::AdminEmail
        | Invalid::OperatorName
        | Invalid::TokenLifetime
        | Invalid::UsageRange
        | Invalid::OwnAccount
        | Invalid::NotRecoverable
        | Invalid::RecoveryRationed
        | Invalid::Hashing(_)) => {
            tracing::warn!(problem = %other, "web portal: a rule no portal form should meet");
            Problem::Other
        }
    }
}

/// The password-recovery mail in the user's language (the one chosen on the settings
/// page; English otherwise): subject and plain text, the link on a line of its own.
/// Mails a recovery link to the user's contact address, in their language, on a task of
/// its own (nobody waits for the SMTP server).
pub(crate) fn send_recovery_mail(mailer: crate::mail::Mailer, public_url: &str, recovery: noc_storage::Recovery) {
    let to = recovery.user.contact_email.clone().unwrap_or_else(|| recovery.user.email.clone());
    let link = format!("{public_url}/recover/{}", recovery.token);
    let name = recovery.user.full_name();
    let minutes = noc_storage::self_service::RECOVERY_TTL.as_secs() / 60;
    let (subject, text) = recovery_mail(recovery.user.locale.as_deref(), &name, &link, minutes);
    tokio::spawn(async move {
        if let Err(e) = mailer.send_recovery(&to, &name, &subject, &text).await {
            tracing::warn!(error = %e, "the password-recovery mail could not be sent");
        }
    });
}

fn recovery_mail(locale: Option<&str>, name: &str, link: &str, minutes: u64) -> (String, String) {
    let t = locale.and_then(noc_web::i18n::Lang::parse).unwrap_or_default();
    let text = t.get_with("mail-recovery-body", &[("name", &name), ("minutes", &minutes), ("link", &link)]);
    (t.get("mail-recovery-subject"), text)
}

fn user_id(id: &str) -> Result<noc_protocol::UserId, PortalError> {
    id.parse().map_err(|_| PortalError::NotFound)
}

fn device_id(id: &str) -> Result<noc_protocol::DeviceId, PortalError> {
    id.parse().map_err(|_| PortalError::NotFound)
}

#[async_trait]
impl Portal for AccountsPortal {
    async fn fetch(
        &self,
        user_id: &str,
        interface: Interface,
        request: FetchRequest,
    ) -> Result<serde_json::Value, BrowseError> {
        let user = self.user(user_id).await.map_err(|e| match e {
            PortalError::Unavailable | PortalError::Busy => BrowseError::Busy,
            PortalError::NotFound => BrowseError::NotAllowed,
            _ => BrowseError::Internal,
        })?;
        let feature = match interface {
            Interface::Pc => Feature::BrowsePc,
            Interface::Pda => Feature::BrowsePda,
            Interface::Wap => Feature::BrowseWap,
        };
        if user.status != UserStatus::Active || !user.allows(feature) {
            return Err(BrowseError::NotAllowed);
        }
        // Only the user's own enterprise server is asked (the VES checks the user again).
        match self.router.fetch(user.ves_id, user.id, request, self.browse_timeout).await {
            FetchOutcome::Answer(body) => Ok(body),
            FetchOutcome::Failed(e) => Err(match e.code {
                FetchErrorCode::NotFound => BrowseError::NotFound,
                FetchErrorCode::BadRequest => BrowseError::Refused(e.message),
                FetchErrorCode::Unavailable => BrowseError::SourceUnavailable,
                FetchErrorCode::Unsupported => BrowseError::Unsupported,
                FetchErrorCode::UnknownUser => BrowseError::Offline,
                FetchErrorCode::TooLarge => BrowseError::TooLarge,
                FetchErrorCode::Internal => BrowseError::Internal,
            }),
            FetchOutcome::Refused(r) => Err(match r {
                FetchRefusal::Offline | FetchRefusal::NotServed => BrowseError::Offline,
                FetchRefusal::Unsupported => BrowseError::Unsupported,
                FetchRefusal::Busy => BrowseError::Busy,
                FetchRefusal::Timeout => BrowseError::Timeout,
            }),
        }
    }

    async fn sign_in(
        &self,
        login: &str,
        password: &str,
        persistent: bool,
        user_agent: &str,
        source: IpAddr,
    ) -> Result<SignedIn, PortalError> {
        let new =
            self.accounts.web_sign_in(login, password, persistent, user_agent, source).await.map_err(portal_error)?;
        let max_age = persistent.then(|| {
            Duration::from_millis(u64::try_from(new.session.expires_at - new.session.created_at).unwrap_or(0))
        });
        Ok(SignedIn { visitor: visitor(&new.session, &new.user), token: new.token, cookie_max_age: max_age })
    }

    async fn activate(
        &self,
        login: &str,
        password: &str,
        msisdn: &str,
        time_zone: &str,
        new_password: &str,
        user_agent: &str,
        source: IpAddr,
    ) -> Result<SignedIn, PortalError> {
        let new = self
            .accounts
            .web_activate(login, password, msisdn, time_zone, new_password, user_agent, source)
            .await
            .map_err(portal_error)?;
        // The user's enterprise server serves the user from now on.
        self.router.user_activated(new.user.ves_id, active_user_state(&new.user));
        Ok(SignedIn { visitor: visitor(&new.session, &new.user), token: new.token, cookie_max_age: None })
    }

    async fn update_settings(&self, user: &str, change: SettingsChange) -> Result<(), PortalError> {
        let before = self.user(user).await?;
        let settings = UserSettings {
            first_name: change.first_name,
            last_name: change.last_name,
            time_zone: Some(change.time_zone),
            constant_sync: change.constant_sync,
            filter_rules: change.filter_rules,
            alerts_enabled: change.alerts_enabled,
            contact_email: Some(change.contact_email),
            locale: Some(change.locale),
            calendar_days_ahead: change.calendar_days_ahead,
        };
        let after = self.accounts.update_own_settings(before.id, settings).await.map_err(portal_error)?;
        if after.status == UserStatus::Active {
            let names_changed = (&before.first_name, &before.last_name, &before.time_zone, before.calendar_days_ahead)
                != (&after.first_name, &after.last_name, &after.time_zone, after.calendar_days_ahead);
            if names_changed {
                // ActivateUsers carries names, time zone and calendar window; it is
                // followed by the rules.
                self.router.user_activated(after.ves_id, active_user_state(&after));
            } else if (before.effective_constant_sync(), before.effective_filter_rules())
                != (after.effective_constant_sync(), after.effective_filter_rules())
            {
                let rules = after.effective_filter_rules();
                self.router.user_settings_changed(after.ves_id, after.id, after.effective_constant_sync(), rules);
            }
        }
        Ok(())
    }

    async fn alert_settings(&self, user: &str) -> Result<AlertSettings, PortalError> {
        let d = self.user(user).await?.alert_delivery;
        Ok(AlertSettings {
            email: d.email,
            // An expired link confirms nothing any more: the address is no longer waiting.
            pending_email: d
                .pending_email
                .filter(|p| p.expires_at > noc_protocol::clock::unix_ms_i64())
                .map(|p| p.address),
            webhook_url: d.webhook_url,
            webhook_secret: d.webhook_secret,
            sms: d.sms,
            wap_push: d.wap_push,
            excerpt: d.excerpt,
            quiet_from: d.quiet_from,
            quiet_to: d.quiet_to,
        })
    }

    async fn set_alert_settings(
        &self,
        user: &str,
        s: AlertSettings,
        new_secret: bool,
    ) -> Result<Option<String>, PortalError> {
        let id = user_id(user)?;
        // Without an SMTP server no alert mail could go anywhere, nor its confirmation.
        if self.mailer.is_none() && s.email.is_some() {
            return Err(PortalError::Invalid(Problem::AlertEmailUnavailable));
        }
        let delivery = noc_storage::AlertDelivery {
            email: s.email,
            webhook_url: s.webhook_url,
            webhook_secret: None,
            sms: s.sms,
            wap_push: s.wap_push,
            excerpt: s.excerpt,
            quiet_from: s.quiet_from,
            quiet_to: s.quiet_to,
            ..noc_storage::AlertDelivery::default()
        };
        let (_, confirmation) =
            self.accounts.set_own_alert_delivery(id, delivery, new_secret).await.map_err(portal_error)?;
        let (Some(c), Some(mailer)) = (confirmation, self.mailer.clone()) else { return Ok(None) };
        let link = format!("{}/alerts/confirm/{}", self.public_url, c.token);
        let name = c.user.full_name();
        let t = c.user.locale.as_deref().and_then(noc_web::i18n::Lang::parse).unwrap_or_default();
        let (subject, text) = (
            t.get("mail-alert-confirm-subject"),
            t.get_with("mail-alert-confirm-body", &[("name", &name), ("link", &link)]),
        );
        let to = c.address.clone();
        tokio::spawn(async move {
            if let Err(e) = mailer.send_text(&to, &name, &subject, &text).await {
                tracing::warn!(error = %e, "the alert address confirmation could not be sent");
            }
        });
        Ok(Some(c.address))
    }

    async fn confirm_alert_email(&self, token: &str) -> Result<String, PortalError> {
        let user = self.accounts.confirm_alert_email(token).await.map_err(portal_error)?;
        Ok(user.alert_delivery.email.unwrap_or_default())
    }

    async fn change_password(
        &self,
        user: &str,
        current: &str,
        new_password: &str,
        keep: &str,
        sign_out_devices: bool,
        source: IpAddr,
    ) -> Result<(), PortalError> {
        let record = self.user(user).await?;
        let revoked = self
            .accounts
            .change_own_password(&record, current, new_password, keep, sign_out_devices, source)
            .await
            .map_err(portal_error)?;
        if !revoked.is_empty() {
            self.router.devices_revoked(record.ves_id, record.id, &revoked);
        }
        Ok(())
    }

    async fn devices(&self, user: &str) -> Result<Vec<DeviceInfo>, PortalError> {
        let devices = self.accounts.own_devices(user_id(user)?).await.map_err(portal_error)?;
        let mut out = Vec::with_capacity(devices.len());
        for d in devices {
            // Where its session is now, from the cluster's ownership records (a failed
            // lookup shows it as not connected rather than failing the page).
            let online_on = self.router.cluster().lookup(SessionKey::Device(d.id)).await.ok().flatten();
            out.push(DeviceInfo {
                id: d.id.to_string(),
                name: d.name,
                device_type: d.device_type,
                activated_at_ms: d.created_at,
                online_on: online_on.map(|n| n.to_string()),
                last_seen_ms: d.last_seen_at,
                wipe: match (d.wipe_requested_at, d.wiped_at) {
                    (_, Some(at_ms)) => WipeState::Done { at_ms },
                    (Some(since_ms), None) => WipeState::Pending { since_ms },
                    (None, None) => WipeState::None,
                },
            });
        }
        Ok(out)
    }

    async fn rename_device(&self, user: &str, device: &str, name: &str) -> Result<(), PortalError> {
        self.accounts.rename_own_device(user_id(user)?, device_id(device)?, name).await.map_err(portal_error)
    }

    async fn revoke_device(&self, user: &str, device: &str) -> Result<(), PortalError> {
        let record = self.user(user).await?;
        let device = device_id(device)?;
        self.accounts.revoke_own_device(record.id, device).await.map_err(portal_error)?;
        self.router.devices_revoked(record.ves_id, record.id, &[device]);
        Ok(())
    }

    async fn wipe_device(&self, user: &str, device: &str) -> Result<(), PortalError> {
        let record = self.user(user).await?;
        let device = device_id(device)?;
        self.accounts.wipe_own_device(record.id, device).await.map_err(portal_error)?;
        self.router.device_wipe_requested(record.ves_id, record.id, device);
        Ok(())
    }

    async fn start_recovery(&self, login: &str, source: IpAddr) -> Result<(), PortalError> {
        let Some(mailer) = self.mailer.clone() else { return Err(PortalError::NotFound) };
        let Some(recovery) = self.accounts.start_recovery(login, source).await.map_err(portal_error)? else {
            return Ok(());
        };
        // Not awaited: the answer must not take longer for an existing account.
        send_recovery_mail(mailer, &self.public_url, recovery);
        Ok(())
    }

    async fn recover_by_question(
        &self,
        login: &str,
        question: &str,
        answer: &str,
        source: IpAddr,
    ) -> Result<String, PortalError> {
        let recovery =
            self.accounts.recover_by_question(login, question, answer, source).await.map_err(portal_error)?;
        Ok(recovery.token)
    }

    async fn secret_question(&self, user: &str) -> Result<(bool, Option<String>), PortalError> {
        let record = self.user(user).await?;
        self.accounts.own_secret_question(&record).await.map_err(portal_error)
    }

    async fn set_secret_question(
        &self,
        user: &str,
        current_password: &str,
        question: &str,
        answer: &str,
        source: IpAddr,
    ) -> Result<(), PortalError> {
        let record = self.user(user).await?;
        self.accounts
            .set_own_secret_question(&record, current_password, question, answer, source)
            .await
            .map_err(portal_error)
    }

    async fn clear_secret_question(&self, user: &str) -> Result<(), PortalError> {
        self.accounts.clear_own_secret_question(user_id(user)?).await.map_err(portal_error)
    }

    async fn finish_recovery(&self, token: &str, new_password: &str) -> Result<(), PortalError> {
        self.accounts.finish_recovery(token, new_password).await.map(|_| ()).map_err(portal_error)
    }

    async fn session(&self, token: &str) -> Result<Option<Visitor>, PortalError> {
        let found = self.accounts.web_session(token).await.map_err(portal_error)?;
        Ok(found.map(|(s, u)| visitor(&s, &u)))
    }

    async fn sign_out(&self, token: &str) -> Result<(), PortalError> {
        self.accounts.web_sign_out(token).await.map_err(portal_error)
    }

    async fn sessions(&self, user: &str) -> Result<Vec<SessionInfo>, PortalError> {
        let sessions = self.accounts.web_sessions(user_id(user)?).await.map_err(portal_error)?;
        Ok(sessions
            .into_iter()
            .map(|s| SessionInfo {
                id: s.id,
                client: s.client,
                created_at_ms: s.created_at,
                last_seen_at_ms: s.last_seen_at,
                expires_at_ms: s.expires_at,
                persistent: s.persistent,
            })
            .collect())
    }

    async fn revoke_session(&self, user: &str, session_id: &str) -> Result<(), PortalError> {
        self.accounts.revoke_web_session(user_id(user)?, session_id).await.map_err(portal_error)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_recovery_mail_speaks_the_users_language() {
        let link = "https://relay.example.net/recover/0123456789abcdef";
        let (subject, text) = super::recovery_mail(None, "Ann Lee", link, 15);
        assert_eq!(subject, "Reset your password");
        assert!(text.starts_with("Hello Ann Lee,\n\nsomeone, probably you"), "{text}");
        assert!(text.contains(&format!("\n    {link}\n")) && text.contains("within 15 minutes"), "{text}");
        let (subject, text) = super::recovery_mail(Some("de"), "Anna", link, 15);
        assert_eq!(subject, "Passwort zurücksetzen");
        assert!(text.starts_with("Hallo Anna,") && text.contains(&format!("\n    {link}\n")), "{text}");
    }

    /// The portal offers the questions the account service accepts, and words each one.
    #[test]
    fn the_portal_and_the_accounts_know_the_same_secret_questions() {
        assert_eq!(noc_web::portal::SECRET_QUESTIONS, noc_storage::self_service::SECRET_QUESTIONS);
    }
}
