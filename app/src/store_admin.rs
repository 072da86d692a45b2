//! `noc admin ...`: bootstrap operations on a node's store, usable while the node runs
//! (the embedded store is opened in WAL mode).

pub use noc_storage::Feature;
pub use noc_storage::model::OperatorRole;
use std::sync::Arc;

use noc_storage::{
    AccountError, Accounts, AuditEvent, AuditFilter, License, PostgresStore, SqliteStore, Store, StoreError,
};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("opening the store at {path}: {source}")]
    Open { path: String, source: StoreError },
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Account operations against the store a config points at.
pub struct Admin {
    accounts: Accounts,
    actor: String,
}

impl Admin {
    /// Opens the store the configuration names: PostgreSQL with `postgres_url` (applying
    /// migrations, so `noc admin migrate` is just this), else the embedded store.
    pub async fn open(config: &Config) -> Result<Self, AdminError> {
        let store: Arc<dyn Store> = match &config.postgres_url {
            Some(url) => Arc::new(
                PostgresStore::connect(url.expose(), config.postgres_options())
                    .await
                    .map_err(|source| AdminError::Open { path: url.redacted(), source })?,
            ),
            None => {
                let path = config.store_path();
                if let Some(dir) = path.parent() {
                    crate::data_dir::ensure_private_dir(dir).map_err(|e| AdminError::Open {
                        path: dir.display().to_string(),
                        source: StoreError::Backend(e.to_string()),
                    })?;
                }
                Arc::new(
                    SqliteStore::open(&path)
                        .map_err(|source| AdminError::Open { path: path.display().to_string(), source })?,
                )
            }
        };
        let actor = format!("admin:{}", std::env::var("USER").unwrap_or_else(|_| "cli".into()));
        Ok(Self { accounts: Accounts::new(store, config.account_policy())?, actor })
    }

    pub async fn create_license(
        &self,
        name: &str,
        password: &str,
        max_users: u32,
        expires_in_days: Option<u32>,
    ) -> Result<License, AdminError> {
        let expires_at = expires_in_days.map(|d| noc_protocol::clock::unix_ms_i64() + d as i64 * 86_400_000);
        Ok(self.accounts.create_license(name, password, max_users, expires_at, &self.actor).await?)
    }

    pub async fn licenses(&self) -> Result<Vec<License>, AdminError> {
        Ok(self.accounts.store().licenses().await?)
    }

    pub async fn set_suspended(&self, name: &str, suspended: bool) -> Result<License, AdminError> {
        Ok(self.accounts.set_license_suspended(name, suspended, &self.actor).await?)
    }

    /// Creates an operator; the enrolment (TOTP secret, recovery codes) is shown once.
    pub async fn create_operator(
        &self,
        name: &str,
        role: noc_storage::model::OperatorRole,
        password: &str,
    ) -> Result<noc_storage::operators::Enrolment, AdminError> {
        Ok(self.accounts.create_operator(name, role, password, &self.actor).await?)
    }

    pub async fn operators(&self) -> Result<Vec<noc_storage::model::OperatorRecord>, AdminError> {
        Ok(self.accounts.operators().await?)
    }

    /// Turns secret-question password recovery on or off for a license.
    pub async fn set_secret_question_recovery(&self, name: &str, enabled: bool) -> Result<License, AdminError> {
        Ok(self.accounts.set_license_secret_question_recovery(name, enabled, &self.actor).await?)
    }

    /// Requires client certificates of the license's devices, or not.
    pub async fn set_require_client_certificates(&self, name: &str, required: bool) -> Result<License, AdminError> {
        Ok(self.accounts.set_license_require_client_certificates(name, required, &self.actor).await?)
    }

    /// Turns features of a license on or off (docs/console.md "Features and access").
    pub async fn set_license_features(
        &self,
        name: &str,
        enable: &[noc_storage::Feature],
        disable: &[noc_storage::Feature],
    ) -> Result<License, AdminError> {
        Ok(self.accounts.set_license_features(name, enable, disable, &self.actor).await?)
    }

    /// A new license password; revokes the license's tokens (returns how many).
    pub async fn set_license_password(&self, name: &str, password: &str) -> Result<(License, u64), AdminError> {
        Ok(self.accounts.set_license_password(name, password, &self.actor).await?)
    }

    pub async fn approve_msisdn(&self, msisdn: &str) -> Result<(), AdminError> {
        self.accounts.store().approve_msisdn(msisdn, &self.actor, noc_protocol::clock::unix_ms_i64()).await?;
        let event = AuditEvent::new(self.actor.clone(), "msisdn.approve", format!("msisdn:{msisdn}"), String::new());
        self.accounts.store().append_audit(event).await?;
        Ok(())
    }

    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditEvent>, AdminError> {
        Ok(self.accounts.store().audit_search(&AuditFilter { limit, ..AuditFilter::default() }).await?)
    }
}
