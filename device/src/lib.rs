//! The device client, as a library (an SDK for device applications) and as the `noc-device`
//! binary.
//!
//! A device activates once over HTTPS ([`activate`]), then holds one persistent TLS
//! connection to the relay's device channel ([`Device::run`]). Inside it, it runs the
//! end-to-end link of `noc-endpoint` with its VES: a key agreement per connection that
//! authenticates the VES against the fingerprint the user pinned, sealed items both ways,
//! acknowledgements after durable storage, resends. What it receives is stored locally and
//! stays readable offline ([`Device::inbox`]); what the user composes waits in a persisted
//! outbox until the VES confirms it ([`Device::compose_mail`]).
//!
//! ```no_run
//! # async fn demo(dir: &std::path::Path) -> Result<(), noc_device::DeviceError> {
//! use noc_device::{Device, RunOptions};
//! let device = Device::open(dir)?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! device.run(RunOptions::default(), stop.clone(), None).await?;
//! for item in device.inbox()? {
//!     println!("{} {}", item.header.item_type, item.body.len());
//! }
//! # Ok(()) }
//! ```

pub mod activate;
pub mod client;
pub mod cryptotool;
pub mod enroll;
pub mod error;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use noc_endpoint::item::{Item, ItemId, ItemType};
use noc_endpoint::link::VES_PEER;
use noc_endpoint::rfc822::{self, Draft};
use noc_endpoint::store::{FullPolicy, Outgoing, QueueLimits, Received, STATE_REPLACED, Store};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use activate::{Activation, activate};
pub use client::{Clock, DeviceEvent, RunOptions, Stats};
pub use error::DeviceError;
pub use state::DeviceState;

/// Bounds of the device's outbox: mail composed offline waits here.
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    pub max_items: usize,
    pub ttl_seconds: u64,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits { max_items: 1000, ttl_seconds: 7 * 24 * 3600 }
    }
}

/// An activated device: its state directory, opened.
pub struct Device {
    pub dir: PathBuf,
    pub state: DeviceState,
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    pub outbox_limits: OutboxLimits,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("dir", &self.dir).field("state", &self.state).finish_non_exhaustive()
    }
}

impl Device {
    /// Opens the state directory written by [`activate`].
    pub fn open(dir: &Path) -> Result<Self, DeviceError> {
        let state = DeviceState::load(dir)?;
        let store = Store::open(&dir.join(state::DB_FILE), "")?;
        Ok(Device {
            dir: dir.to_path_buf(),
            state,
            store: Arc::new(store),
            stats: Arc::new(Stats::default()),
            outbox_limits: OutboxLimits::default(),
        })
    }

    /// Composes a plain-text mail and queues it for the VES to submit. Fails with
    /// `OutboxFull` rather than dropping anything.
    pub fn compose_mail(&self, draft: &Draft, bcc: &[String]) -> Result<ItemId, DeviceError> {
        for addr in draft.to.iter().chain(&draft.cc).chain(bcc) {
            if !rfc822::is_address(addr) {
                return Err(DeviceError::invalid("recipient", format!("{addr:?} is not an e-mail address")));
            }
        }
        if draft.to.is_empty() && draft.cc.is_empty() && bcc.is_empty() {
            return Err(DeviceError::invalid("recipients", "at least one recipient is required"));
        }
        let id = ItemId::random();
        let now = noc_protocol::clock::unix_ms_i64();
        let mut draft = draft.clone();
        if draft.from.is_none() {
            draft.from = self.state.email.clone();
        }
        let message_id = format!("{id}@{}", self.state.device_id);
        let mut item = Item::new(ItemType::OutgoingMail, None, rfc822::compose(&draft, now, &message_id));
        item.header.bcc = bcc.to_vec();
        let limits = QueueLimits {
            max_items: self.outbox_limits.max_items,
            ttl_ms: (self.outbox_limits.ttl_seconds as i64).saturating_mul(1000),
            policy: FullPolicy::Refuse,
        };
        self.store.enqueue(VES_PEER, id, ItemType::OutgoingMail.as_str(), &item.encode()?, limits, now)?;
        Ok(id)
    }

    /// Everything received, oldest first (readable without a connection): the current
    /// version of each calendar entry and contact, not the versions it replaced.
    pub fn inbox(&self) -> Result<Vec<Received>, DeviceError> {
        Ok(self.store.received(Some(VES_PEER), None)?.into_iter().filter(|r| r.state != STATE_REPLACED).collect())
    }

    /// Asks the VES for a certificate under the enterprise CA profile `profile` (seed 002);
    /// the enrollment goes on while the device runs ([`enroll`]).
    pub fn enroll(&self, profile: &str) -> Result<enroll::EnrollmentRecord, DeviceError> {
        enroll::start(&self.dir, &self.store, profile)
    }

    /// What waits for the VES's confirmation.
    pub fn outbox(&self) -> Result<Vec<Outgoing>, DeviceError> {
        Ok(self.store.outbox(Some(VES_PEER))?)
    }

    /// Runs the device channel until `shutdown` is cancelled or the relay refuses the
    /// device for good (see [`client::run`]).
    pub async fn run(
        &self,
        opts: RunOptions,
        shutdown: CancellationToken,
        events: Option<broadcast::Sender<DeviceEvent>>,
    ) -> Result<(), DeviceError> {
        let ca = self.state.ca_path(&self.dir);
        let wipe = || self.erase();
        client::run(
            &self.state,
            ca.as_deref(),
            Some(&self.dir),
            &self.store,
            &opts,
            shutdown,
            events,
            self.stats.clone(),
            &wipe,
        )
        .await
    }

    /// Erases what this device holds (a remote wipe): every item, outbox entry and pinned
    /// key in its store, overwritten, then the credential, client certificate and key,
    /// trust anchor, enterprise certificates and their keys, and the database files
    /// themselves. The state directory is left empty: `open` then says the device is not
    /// activated.
    pub fn erase(&self) -> Result<(), DeviceError> {
        self.store.erase()?;
        let (wal, shm) = (format!("{}-wal", state::DB_FILE), format!("{}-shm", state::DB_FILE));
        for name in [
            state::STATE_FILE,
            state::CA_FILE,
            state::CLIENT_KEY_FILE,
            state::CLIENT_CERT_FILE,
            state::MANAGEMENT_ROOT_FILE,
            state::DB_FILE,
            &wal,
            &shm,
        ] {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(noc_endpoint::EndpointError::Io { path, source: e }.into()),
            }
        }
        // Enterprise certificates and their keys (crate::enroll).
        let enterprise = self.dir.join(enroll::DIR);
        match std::fs::remove_dir_all(&enterprise) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(noc_endpoint::EndpointError::Io { path: enterprise, source: e }.into()),
        }
        Ok(())
    }
}
