//! Web sign-in sessions (white paper §6.2–6.3) as account rules: the browser holds a
//! random token, the store keeps its SHA-256 with the user, so any node behind the load
//! balancer serves any session and a copy of the database signs nobody in.
//!
//! Two kinds: an ordinary session ends after `idle_timeout` without a request (the white
//! paper's inactivity timeout) or at `max_age`; "keep me signed in" (§6.3.2) is exempt
//! from the inactivity timeout until `persistent_max_age`. Signing in always makes a new
//! token (no fixation); signing out deletes it on the server.

use std::net::IpAddr;
use std::time::Duration;

use noc_protocol::UserId;

use crate::accounts::{AccountError, Accounts, Result};
use crate::model::{UserRecord, WebSession};
use crate::secrets;

/// A session that was just created: the token goes to the browser once, never stored.
#[derive(Clone)]
pub struct NewWebSession {
    pub token: String,
    pub session: WebSession,
    pub user: UserRecord,
}

impl std::fmt::Debug for NewWebSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebSession").field("session", &self.session).finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Only what a person can read in a list of their sessions, bounded.
fn client_label(user_agent: &str) -> String {
    user_agent.chars().filter(|c| !c.is_control()).take(120).collect()
}

impl Accounts {
    /// Signs a user in on the web with e-mail address or MSISDN and password, under the
    /// same throttle as every password route; returns a new session and its token.
    pub async fn web_sign_in(
        &self,
        login: &str,
        password: &str,
        persistent: bool,
        user_agent: &str,
        source: IpAddr,
    ) -> Result<NewWebSession> {
        let user = self.check_login(login, password, source).await?;
        let policy = &self.policy().web;
        let now = noc_protocol::clock::unix_ms_i64();
        let lifetime = if persistent { policy.persistent_max_age } else { policy.max_age };
        let token = secrets::random_hex::<32>();
        let session = WebSession {
            id: secrets::random_hex::<16>(),
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(millis(lifetime)),
            persistent,
            client: client_label(user_agent),
        };
        self.store().insert_web_session(&secrets::token_hash(token.as_bytes()), &session).await?;
        self.audit(
            format!("user:{}", user.id),
            "user.web_sign_in",
            format!("user:{}", user.id),
            format!("session={} persistent={persistent}", session.id),
        )
        .await;
        Ok(NewWebSession { token, session, user })
    }

    /// The live session of a browser's token and its user, with the session's activity
    /// recorded. `None` for a token that is unknown, signed out, idle too long, expired,
    /// or whose user can no longer sign in (suspended, deleted).
    pub async fn web_session(&self, token: &str) -> Result<Option<(WebSession, UserRecord)>> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let now = noc_protocol::clock::unix_ms_i64();
        let idle_since = now.saturating_sub(millis(self.policy().web.idle_timeout));
        let hash = secrets::token_hash(token.as_bytes());
        let Some(session) = self.store().touch_web_session(&hash, now, idle_since).await? else { return Ok(None) };
        let Some(user) = self.store().user_by_id(session.user_id).await? else { return Ok(None) };
        if user.status == crate::model::UserStatus::Suspended {
            return Ok(None);
        }
        Ok(Some((session, user)))
    }

    /// Signs a browser out: its token is deleted on the server.
    pub async fn web_sign_out(&self, token: &str) -> Result<()> {
        let hash = secrets::token_hash(token.as_bytes());
        let now = noc_protocol::clock::unix_ms_i64();
        let idle_since = now.saturating_sub(millis(self.policy().web.idle_timeout));
        // Look it up first for the audit line; an unknown token signs out nothing.
        if let Some(session) = self.store().touch_web_session(&hash, now, idle_since).await? {
            self.store().delete_web_session(&hash).await?;
            self.audit(
                format!("user:{}", session.user_id),
                "user.web_sign_out",
                format!("user:{}", session.user_id),
                format!("session={}", session.id),
            )
            .await;
        }
        Ok(())
    }

    /// The user's sessions that have not expired, newest first.
    pub async fn web_sessions(&self, user: UserId) -> Result<Vec<WebSession>> {
        Ok(self.store().web_sessions_of_user(user, noc_protocol::clock::unix_ms_i64()).await?)
    }

    /// Ends one of the user's own sessions by its public id. `NotFound` if the user has
    /// none by that id (another user's id included).
    pub async fn revoke_web_session(&self, user: UserId, id: &str) -> Result<()> {
        if !self.store().delete_web_session_by_id(user, id).await? {
            return Err(AccountError::NotFound);
        }
        self.audit(format!("user:{user}"), "user.web_session_revoked", format!("user:{user}"), format!("session={id}"))
            .await;
        Ok(())
    }
}
