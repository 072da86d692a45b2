//! What the operators' actions do to live sessions: [`noc_console::Live`] over the
//! node's router, which reaches sessions on every node through the cluster.

use std::sync::Arc;

use noc_actors::Router;
use noc_cluster::SessionKey;
use noc_gateway::active_user_state;
use noc_protocol::{CloseCode, DeviceId, VesId};
use noc_storage::{UserRecord, UserStatus};

pub struct RouterLive {
    pub router: Arc<Router>,
    /// Sends recovery links; `None`: the node has no SMTP server.
    pub mailer: Option<crate::mail::Mailer>,
    /// The public base URL, for the links in mail.
    pub public_url: String,
}

impl RouterLive {
    /// The cluster registry's owner of each key (one lookup each: a console page's worth).
    async fn owners(&self, keys: impl Iterator<Item = SessionKey>) -> Vec<Option<String>> {
        let mut nodes = Vec::new();
        for key in keys {
            nodes.push(match self.router.cluster().lookup(key).await {
                Ok(owner) => owner.map(|n| n.to_string()),
                Err(e) => {
                    tracing::debug!(error = %e, "cluster lookup for the console failed");
                    None
                }
            });
        }
        nodes
    }
}

#[async_trait::async_trait]
impl noc_console::Live for RouterLive {
    fn user_suspended(&self, user: &UserRecord, devices: &[DeviceId]) {
        for &device in devices {
            self.router.close_session(SessionKey::Device(device), CloseCode::AccountSuspended);
        }
        self.router.user_removed(user.ves_id, user.id);
    }

    fn user_reactivated(&self, user: &UserRecord) {
        if user.status == UserStatus::Active {
            self.router.user_activated(user.ves_id, active_user_state(user));
        }
    }

    fn user_deleted(&self, user: &UserRecord, devices: &[DeviceId]) {
        self.router.devices_revoked(user.ves_id, user.id, devices);
        self.router.user_removed(user.ves_id, user.id);
    }

    fn user_changed(&self, user: &UserRecord) {
        if user.status == UserStatus::Active {
            self.router.user_activated(user.ves_id, active_user_state(user));
        }
    }

    async fn nodes(&self) -> Vec<noc_console::NodeSessions> {
        match self.router.cluster().node_loads().await {
            Ok(loads) => loads
                .into_iter()
                .map(|l| noc_console::NodeSessions {
                    node: l.node.to_string(),
                    devices: l.sessions.map(|s| s.devices),
                    ves: l.sessions.map(|s| s.ves),
                    reported_at_ms: l.sessions.map(|s| s.reported_at_ms),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the cluster's node list is unavailable");
                Vec::new()
            }
        }
    }

    fn can_mail(&self) -> bool {
        self.mailer.is_some()
    }

    fn mail_recovery(&self, recovery: noc_storage::Recovery) {
        if let Some(mailer) = self.mailer.clone() {
            crate::portal::send_recovery_mail(mailer, &self.public_url, recovery);
        }
    }

    fn device_revoked(&self, user: &UserRecord, device: DeviceId) {
        self.router.devices_revoked(user.ves_id, user.id, &[device]);
    }

    async fn ves_nodes(&self, ves: &[VesId]) -> Vec<Option<String>> {
        self.owners(ves.iter().map(|&id| SessionKey::Ves(id))).await
    }

    async fn device_nodes(&self, devices: &[DeviceId]) -> Vec<Option<String>> {
        self.owners(devices.iter().map(|&id| SessionKey::Device(id))).await
    }

    fn device_wipe_requested(&self, user: &UserRecord, device: DeviceId) {
        self.router.device_wipe_requested(user.ves_id, user.id, device);
    }

    fn disconnect_device(&self, device: DeviceId) {
        self.router.close_session(SessionKey::Device(device), CloseCode::Normal);
    }

    fn devices_disallowed(&self, devices: &[DeviceId]) {
        for &device in devices {
            self.router.close_session(SessionKey::Device(device), CloseCode::FeatureDisabled);
        }
    }

    fn users_settings_changed(&self, users: &[UserRecord]) {
        for user in users.iter().filter(|u| u.status == UserStatus::Active) {
            let state = active_user_state(user);
            self.router.user_settings_changed(user.ves_id, user.id, state.constant_sync, state.filter_rules);
        }
    }
}
