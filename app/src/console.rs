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

    fn device_revoked(&self, user: &UserRecord, device: DeviceId) {
        self.router.devices_revoked(user.ves_id, user.id, &[device]);
    }

    async fn ves_nodes(&self, ves: &[VesId]) -> Vec<Option<String>> {
        let mut nodes = Vec::with_capacity(ves.len());
        for &id in ves {
            let owner = match self.router.cluster().lookup(SessionKey::Ves(id)).await {
                Ok(owner) => owner.map(|n| n.to_string()),
                Err(e) => {
                    tracing::debug!(error = %e, "cluster lookup for the console failed");
                    None
                }
            };
            nodes.push(owner);
        }
        nodes
    }
}
