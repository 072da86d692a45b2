//! What the console's handlers share, and what they need from the node.

use std::sync::Arc;
use std::time::Duration;

use noc_protocol::{DeviceId, VesId};
use noc_storage::{Accounts, UserRecord};

/// What the operators' actions do to live sessions; the node implements it over its
/// router, so this crate needs no actor.
#[async_trait::async_trait]
pub trait Live: Send + Sync + 'static {
    /// A user was suspended: their device sessions close wherever they are, and their
    /// enterprise server stops serving them.
    fn user_suspended(&self, user: &UserRecord, devices: &[DeviceId]);
    /// A suspended user is back: their enterprise server serves them again (if active).
    fn user_reactivated(&self, user: &UserRecord);
    /// A user was deleted: their devices' sessions close wherever they are and their
    /// enterprise server forgets them.
    fn user_deleted(&self, user: &UserRecord, devices: &[DeviceId]);
    /// A user's profile changed: their enterprise server gets it (if they are active).
    fn user_changed(&self, user: &UserRecord);
    /// Every live node of the cluster and the sessions it last reported.
    async fn nodes(&self) -> Vec<NodeSessions>;
    /// Whether the node can send mail (an SMTP server is configured).
    fn can_mail(&self) -> bool;
    /// Mails a recovery link to the user's own address (in their language), without
    /// waiting for the SMTP server.
    fn mail_recovery(&self, recovery: noc_storage::Recovery);
    /// A device lost its credential: its session closes wherever it is.
    fn device_revoked(&self, user: &UserRecord, device: DeviceId);
    /// The node each VES installation's session lives on now (the cluster registry's
    /// answer), `None` for one not connected.
    async fn ves_nodes(&self, ves: &[VesId]) -> Vec<Option<String>>;
    /// The node each device's session lives on now, `None` for one not connected.
    async fn device_nodes(&self, devices: &[DeviceId]) -> Vec<Option<String>>;
    /// A device must erase itself: its session closes wherever it is, so that it
    /// reconnects and gets the wipe.
    fn device_wipe_requested(&self, user: &UserRecord, device: DeviceId);
    /// Disconnects a device's session wherever it is (it reconnects on its own).
    fn disconnect_device(&self, device: DeviceId);
    /// The devices may no longer be used (ConstantSync was taken away from their user or
    /// license): their sessions close wherever they are.
    fn devices_disallowed(&self, devices: &[DeviceId]);
    /// What active users may use changed with their license's features: their enterprise
    /// servers get the users' alert rules and ConstantSync flags as they now apply.
    fn users_settings_changed(&self, users: &[UserRecord]);
}

/// A live node and the sessions it holds (`None`: it reports nothing, an older version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSessions {
    pub node: String,
    pub devices: Option<u64>,
    pub ves: Option<u64>,
    /// When it reported them (Unix ms).
    pub reported_at_ms: Option<i64>,
}

/// How the consoles behave.
#[derive(Clone, Debug)]
pub struct ConsoleSettings {
    /// A console sign-in ends after this long without a request.
    pub idle_timeout: Duration,
    /// ... and after this long in any case.
    pub max_session: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings { idle_timeout: Duration::from_secs(15 * 60), max_session: Duration::from_secs(8 * 3600) }
    }
}

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub accounts: Accounts,
    pub live: Arc<dyn Live>,
    pub settings: Arc<ConsoleSettings>,
}
