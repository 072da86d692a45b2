//! The session tables of a node and every way a frame can move between sessions.
//!
//! Delivery is a table lookup and a `try_send` on the target's bounded queue, done on the
//! sender's thread: no actor round trip, no store access, no waiting. A full queue or an
//! absent target is reported to the caller at once as an [`UndeliverableReason`], so the
//! sending endpoint can keep the frame and retry (the relay stores nothing). Targets owned
//! by another node are reached through the [`Cluster`] bus.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use actix::{Recipient, WeakRecipient};
use noc_cluster::{BusMessage, Cluster, DeviceItem, NodeId, Owner, SessionKey, ShardedMap, VesItem};
use noc_protocol::rts::{Command, FilterRule};
use noc_protocol::{CloseCode, DeviceId, UndeliverableReason, UserId, VesId};

use crate::close::CloseSession;
use crate::metrics::{Direction, DropReason, Metrics, SessionKind};
use crate::queue::{QueueSender, TrySendError};
use crate::ves::inbox::{VesInbox, VesUserState};

/// When a revocation for a session on another node is sent again.
const REVOCATION_RETRIES: [std::time::Duration; 2] =
    [std::time::Duration::from_secs(2), std::time::Duration::from_secs(10)];

/// Messages waiting for one owner lookup; more are refused with `queue_full`.
const MAX_PENDING_PER_KEY: usize = 256;

/// Who to tell when a routed message cannot be delivered.
enum Bounce {
    /// A device's frame for its VES: tell the device.
    ToDevice { device_id: DeviceId, frame_id: u64 },
    /// A VES's frame for a device: tell the VES.
    ToVes { ves_id: VesId, device_id: DeviceId, frame_id: u64 },
    /// A fetch this node asked for: its VES is nowhere.
    Fetch { request_id: noc_protocol::rts::fetch::RequestId },
}

/// The sender to bounce `msg` to, if it carries a frame (acks and notices are not bounced).
fn bounce_info(msg: &BusMessage) -> Option<Bounce> {
    match msg {
        BusMessage::ToVes { item: VesItem::Frame { device_id, frame_id, .. }, .. } => {
            Some(Bounce::ToDevice { device_id: *device_id, frame_id: *frame_id })
        }
        BusMessage::ToDevice { device_id, item: DeviceItem::Forward { origin, frame_id, .. } } => {
            Some(Bounce::ToVes { ves_id: *origin, device_id: *device_id, frame_id: *frame_id })
        }
        BusMessage::Fetch { call, .. } => Some(Bounce::Fetch { request_id: call.request_id }),
        _ => None,
    }
}

/// The session a message is for.
fn target_of(msg: &BusMessage) -> Option<SessionKey> {
    match msg {
        BusMessage::ToDevice { device_id, .. } => Some(SessionKey::Device(*device_id)),
        BusMessage::ToVes { ves_id, .. }
        | BusMessage::DirectoryUpdate { ves_id, .. }
        | BusMessage::UserActivated { ves_id, .. }
        | BusMessage::UserRemoved { ves_id, .. }
        | BusMessage::UserSettings { ves_id, .. }
        | BusMessage::Fetch { ves_id, .. } => Some(SessionKey::Ves(*ves_id)),
        BusMessage::Close { key, .. } => Some(*key),
        BusMessage::Returned(_) | BusMessage::FetchDone { .. } => None,
    }
}

/// What a device session's writer sends.
#[derive(Debug)]
pub enum DeviceOut {
    Item(DeviceItem),
    Heartbeat,
    /// A frame of the session's own (a renewal's answer), written as it is.
    Frame(noc_protocol::device::Frame),
}

/// A live device session as the router sees it.
#[derive(Clone)]
pub struct DeviceHandle {
    /// Distinguishes this session from an earlier or later one of the same device.
    pub session: u64,
    pub user_id: UserId,
    pub ves_id: VesId,
    pub tx: QueueSender<DeviceOut>,
    /// Weak: a strong recipient carries sender state of its own (about 100 bytes per
    /// session), and the session lives by its connection's read stream, not by the router.
    pub control: WeakRecipient<CloseSession>,
}

impl DeviceHandle {
    /// Asks the session to close (nothing to do if it has already stopped).
    pub fn close(&self, msg: CloseSession) {
        if let Some(control) = self.control.upgrade() {
            control.do_send(msg);
        }
    }
}

/// A live VES session as the router sees it: its inbox, and how to close it.
#[derive(Clone)]
pub struct VesHandle {
    pub inbox: Arc<VesInbox>,
    pub control: Recipient<CloseSession>,
}

/// Held by a running device send loop.
pub struct WriterGuard(Arc<AtomicUsize>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The node's routing state. Shared by every worker thread.
pub struct Router {
    /// Itself, for the lookup tasks it spawns.
    this: std::sync::Weak<Router>,
    cluster: Arc<dyn Cluster>,
    /// Messages waiting for an owner lookup, per target.
    pending: ShardedMap<SessionKey, Vec<BusMessage>>,
    devices: ShardedMap<DeviceId, DeviceHandle>,
    ves: ShardedMap<VesId, VesHandle>,
    device_count: AtomicUsize,
    /// Device send loops still running (a drain waits for their CLOSE frames).
    writers: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    session_seq: AtomicU64,
    /// Told when a device session starts or ends (the portal's "last seen").
    seen: std::sync::OnceLock<DeviceSeen>,
    issuer: std::sync::OnceLock<Arc<dyn crate::CertificateIssuer>>,
    /// Every session's usage counters (per license, harvested by the node).
    usage: crate::usage::UsageMeter,
    /// Browse fetches this node waits for, and how many a VES may have in flight.
    pub(crate) fetches: crate::ves::fetches::FetchWaiters,
    /// The workers device sessions start on (see [`crate::home`]).
    workers: crate::home::Workers,
}

/// The bus's latency into the node's metrics.
struct BusMetrics(Arc<Metrics>);

impl noc_cluster::BusObserver for BusMetrics {
    fn published(&self, waited: std::time::Duration) {
        self.0.bus_published(waited);
    }
}

/// What the node does when a device is seen (its session starts or ends): a cheap,
/// non-blocking hand-over, since it runs on the session's own path.
pub type DeviceSeen = Box<dyn Fn(DeviceId) + Send + Sync>;

impl Router {
    pub fn new(cluster: Arc<dyn Cluster>, metrics: Arc<Metrics>) -> Arc<Self> {
        cluster.observe_bus(Arc::new(BusMetrics(metrics.clone())));
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            cluster,
            pending: ShardedMap::new(),
            devices: ShardedMap::new(),
            ves: ShardedMap::new(),
            device_count: AtomicUsize::new(0),
            writers: Arc::new(AtomicUsize::new(0)),
            metrics,
            session_seq: AtomicU64::new(1),
            seen: std::sync::OnceLock::new(),
            issuer: std::sync::OnceLock::new(),
            usage: crate::usage::UsageMeter::new(),
            fetches: crate::ves::fetches::FetchWaiters::default(),
            workers: crate::home::Workers::default(),
        })
    }

    /// The sessions' usage counters.
    pub fn usage(&self) -> &crate::usage::UsageMeter {
        &self.usage
    }

    /// Sets what to do when a device is seen (once; later calls are ignored).
    pub fn on_device_seen(&self, f: DeviceSeen) {
        let _ = self.seen.set(f);
    }

    /// Where device sessions get renewed client certificates (CERT_RENEW); without one
    /// they answer CERT_REFUSED `unavailable`.
    pub fn set_certificate_issuer(&self, issuer: Arc<dyn crate::CertificateIssuer>) {
        let _ = self.issuer.set(issuer);
    }

    pub fn certificate_issuer(&self) -> Option<&Arc<dyn crate::CertificateIssuer>> {
        self.issuer.get()
    }

    fn device_seen(&self, device_id: DeviceId) {
        if let Some(f) = self.seen.get() {
            f(device_id);
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.cluster
    }

    pub fn next_session_id(&self) -> u64 {
        self.session_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a device send loop while it runs.
    pub fn writer_guard(&self) -> WriterGuard {
        self.writers.fetch_add(1, Ordering::Relaxed);
        WriterGuard(self.writers.clone())
    }

    /// Device send loops still running.
    pub fn device_writers(&self) -> usize {
        self.writers.load(Ordering::Relaxed)
    }

    /// RTS sessions on this node.
    pub fn ves_sessions(&self) -> usize {
        self.ves.len()
    }

    /// Authenticated device sessions on this node.
    pub fn device_sessions(&self) -> usize {
        self.device_count.load(Ordering::Relaxed)
    }

    /// Where the sessions of `ves_id`'s devices start on this node: the worker that serves
    /// its command channel here, or, when it has none here, the worker this node gives the
    /// VES (see [`crate::home`]). `None` only before any worker started.
    pub fn ves_home(&self, ves_id: VesId) -> Option<crate::Home> {
        self.ves.with(&ves_id, |h| h.and_then(|h| h.inbox.home())).or_else(|| self.workers.for_ves(ves_id))
    }

    /// The workers that device sessions start on; each adds itself as it starts.
    pub fn workers(&self) -> &crate::home::Workers {
        &self.workers
    }

    pub fn ves_session(&self, ves_id: VesId) -> Option<VesHandle> {
        self.ves.with(&ves_id, |h| h.cloned())
    }

    /// Devices of `ves_id`'s users connected to this node (told to a VES when its command
    /// channel opens, so it can flush what it queued for them).
    pub fn online_devices_of(&self, ves_id: VesId) -> Vec<(DeviceId, UserId)> {
        let mut out = Vec::new();
        self.devices.for_each(|id, h| {
            if h.ves_id == ves_id {
                out.push((*id, h.user_id));
            }
        });
        out
    }

    pub fn device_session(&self, device_id: DeviceId) -> Option<DeviceHandle> {
        self.devices.with(&device_id, |h| h.cloned())
    }

    // -- registration -----------------------------------------------------------------

    /// Makes `handle` the device's session. An older local session is closed (`replaced`);
    /// an older session on another node is closed through the bus once the claim lands.
    pub fn register_device(self: &Arc<Self>, device_id: DeviceId, handle: DeviceHandle) {
        let (ves_id, user_id) = (handle.ves_id, handle.user_id);
        self.device_seen(device_id);
        match self.devices.insert(device_id, handle) {
            Some(old) => {
                self.metrics.session_replaced(SessionKind::Device);
                old.close(CloseSession::new(CloseCode::Replaced, "a newer session for this device took over"));
            }
            None => {
                self.device_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.claim(SessionKey::Device(device_id), SessionKind::Device);
        self.notify_ves(ves_id, VesItem::Command(Command::DevicePresence { device_id, user_id, online: true }));
    }

    /// Removes the device's session if it is still `session` (not already replaced).
    /// `ended_by`: why the session closed. A session replaced by a newer one (here or on
    /// another node) does not announce the device offline: it is online elsewhere.
    pub fn unregister_device(&self, device_id: DeviceId, session: u64, ended_by: CloseCode) {
        if let Some(h) = self.devices.remove_if(&device_id, |h| h.session == session) {
            self.device_count.fetch_sub(1, Ordering::Relaxed);
            self.device_seen(device_id);
            self.release(SessionKey::Device(device_id));
            if ended_by != CloseCode::Replaced {
                self.notify_ves(
                    h.ves_id,
                    VesItem::Command(Command::DevicePresence { device_id, user_id: h.user_id, online: false }),
                );
            }
        }
    }

    /// Makes `handle` the VES's session; an older one is closed (`replaced`).
    pub fn register_ves(self: &Arc<Self>, handle: VesHandle) {
        let ves_id = handle.inbox.ves_id;
        if let Some(old) = self.ves.insert(ves_id, handle) {
            self.metrics.session_replaced(SessionKind::Ves);
            old.control.do_send(CloseSession::new(CloseCode::Replaced, "a newer RTS session for this VES took over"));
        }
        self.claim(SessionKey::Ves(ves_id), SessionKind::Ves);
    }

    pub fn unregister_ves(&self, ves_id: VesId, session: u64) {
        if self.ves.remove_if(&ves_id, |h| h.inbox.session == session).is_some() {
            self.release(SessionKey::Ves(ves_id));
        }
    }

    fn is_registered(&self, key: &SessionKey) -> bool {
        match key {
            SessionKey::Device(id) => self.devices.contains_key(id),
            SessionKey::Ves(id) => self.ves.contains_key(id),
        }
    }

    fn claim(self: &Arc<Self>, key: SessionKey, kind: SessionKind) {
        let this = self.clone();
        actix::spawn(async move {
            let claimed = this.cluster.claim(key).await;
            if !this.is_registered(&key) {
                // The session ended while its claim was in flight: give the key back.
                this.cluster.release(key);
            }
            match claimed {
                Ok(Some(previous)) => {
                    this.metrics.session_replaced(kind);
                    let msg = BusMessage::Close { key, code: CloseCode::Replaced };
                    if this.cluster.publish(&previous, msg).is_ok() {
                        this.metrics.bus_sent.inc();
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, ?key, "session claim failed; routing stays local")
                }
            }
        });
    }

    fn release(&self, key: SessionKey) {
        self.cluster.release(key);
    }

    // -- delivery ---------------------------------------------------------------------

    /// Device → VES: a frame, ack or notice for the VES session `ves_id`.
    pub fn device_to_ves(&self, ves_id: VesId, item: VesItem) -> Result<(), UndeliverableReason> {
        // Queued under the shard's read lock, without a reference count per frame.
        let mut item = Some(item);
        let queued = self.ves.with(&ves_id, |h| Some(h?.inbox.enqueue(item.take()?, &self.metrics)));
        match (queued, item) {
            (Some(result), _) => result,
            (None, Some(item)) => self.publish_to_owner(SessionKey::Ves(ves_id), BusMessage::ToVes { ves_id, item }),
            // The item went into the closure only for a VES on this node.
            (None, None) => Err(UndeliverableReason::PeerOffline),
        }
    }

    /// VES → device, with the ownership check (white paper §8.9 item 5): a VES reaches
    /// only devices of the users it provisioned.
    pub fn ves_to_device(
        &self,
        from: &VesInbox,
        device_id: DeviceId,
        item: DeviceItem,
    ) -> Result<(), UndeliverableReason> {
        if !from.owns_device(device_id) {
            let other = self.devices.with(&device_id, |h| h.map(|h| h.ves_id));
            return Err(if other.is_some() { UndeliverableReason::NotOwned } else { UndeliverableReason::UnknownPeer });
        }
        self.deliver_to_device(device_id, Some(from.ves_id), item)
    }

    /// Queues `item` on the device's session here or on its owner node.
    fn deliver_to_device(
        &self,
        device_id: DeviceId,
        from: Option<VesId>,
        item: DeviceItem,
    ) -> Result<(), UndeliverableReason> {
        // Queued under the shard's read lock: cloning the sender for each frame would cost
        // two reference counts (the queue's and its senders') on the busiest path.
        let mut item = Some(item);
        let sent = self.devices.with(&device_id, |h| {
            let h = h?;
            if from.is_some_and(|v| v != h.ves_id) {
                return Some(Err(UndeliverableReason::NotOwned));
            }
            Some(Ok(h.tx.try_send(DeviceOut::Item(item.take()?))))
        });
        match (sent, item) {
            (Some(Ok(Ok(()))), _) => Ok(()),
            (Some(Ok(Err(TrySendError::Full(_)))), _) => {
                self.metrics.dropped(DropReason::QueueFull);
                Err(UndeliverableReason::QueueFull)
            }
            (Some(Ok(Err(TrySendError::Closed(_)))), _) => Err(UndeliverableReason::PeerOffline),
            (Some(Err(reason)), _) => Err(reason),
            (None, Some(item)) => {
                self.publish_to_owner(SessionKey::Device(device_id), BusMessage::ToDevice { device_id, item })
            }
            // The item went into the queue's closure only for a known device.
            (None, None) => Err(UndeliverableReason::PeerOffline),
        }
    }

    /// Routes `msg` to the node owning `key`. A known remote owner gets it at once; an
    /// unknown one is looked up (one round trip), with later messages for the same key
    /// queued behind that lookup so their order is kept. What cannot be routed is bounced
    /// to its sender.
    pub(crate) fn publish_to_owner(&self, key: SessionKey, msg: BusMessage) -> Result<(), UndeliverableReason> {
        // Messages already waiting for this key's lookup go first: queue behind them.
        let owner = if self.pending.contains_key(&key) { Owner::Unknown } else { self.cluster.owner(&key) };
        if matches!(owner, Owner::Stale(_)) {
            // Used as it is, while one lookup refreshes it for the messages after this.
            if let Some(this) = self.this.upgrade() {
                actix::spawn(async move { this.refresh_owner(key).await });
            }
        }
        match owner {
            Owner::Node(node) | Owner::Stale(node) if node == *self.cluster.node_id() => {
                Err(UndeliverableReason::PeerOffline)
            }
            Owner::Node(node) | Owner::Stale(node) => self.publish(&node, key, msg),
            Owner::Nobody => Err(UndeliverableReason::PeerOffline),
            Owner::Unknown => {
                let this = match self.this.upgrade() {
                    Some(t) => t,
                    None => return Err(UndeliverableReason::PeerOffline),
                };
                let mut slot = Some(msg);
                let outcome = self.pending.with_mut_or_insert(key, Vec::new, |queue, started| {
                    if queue.len() >= MAX_PENDING_PER_KEY {
                        return Err(UndeliverableReason::QueueFull);
                    }
                    queue.extend(slot.take());
                    Ok(started)
                });
                match outcome {
                    Ok(true) => {
                        actix::spawn(async move { this.resolve(key).await });
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(reason) => {
                        self.metrics.dropped(DropReason::QueueFull);
                        Err(reason)
                    }
                }
            }
        }
    }

    fn publish(&self, node: &NodeId, key: SessionKey, msg: BusMessage) -> Result<(), UndeliverableReason> {
        match self.cluster.publish(node, msg) {
            Ok(()) => {
                self.metrics.bus_sent.inc();
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, ?key, "bus publish failed");
                self.cluster.forget(&key);
                self.metrics.dropped(DropReason::BusUnavailable);
                Err(UndeliverableReason::PeerOffline)
            }
        }
    }

    /// Looks up the owner of `key` again, for the messages after this one; those routed
    /// meanwhile go to the owner remembered so far (see [`Owner::Stale`]).
    async fn refresh_owner(&self, key: SessionKey) {
        if let Err(e) = self.cluster.lookup(key).await {
            tracing::debug!(error = %e, ?key, "refreshing a remembered owner failed");
        }
    }

    /// Looks up the owner of `key` and flushes the messages queued behind the lookup.
    async fn resolve(&self, key: SessionKey) {
        let owner = self.cluster.lookup(key).await;
        let me = self.cluster.node_id().clone();
        // Flushed under the pending shard's lock: a message routed meanwhile on another
        // thread either joined this queue or comes after it.
        let failed = self.pending.remove_then(&key, |queued| {
            let queued = queued.unwrap_or_default();
            tracing::debug!(?key, ?owner, queued = queued.len(), "owner lookup");
            let mut failed = Vec::new();
            match &owner {
                Ok(Some(node)) if *node != me => {
                    for msg in queued {
                        let bounce = bounce_info(&msg);
                        if let Err(reason) = self.publish(node, key, msg) {
                            failed.push((bounce, reason));
                        }
                    }
                }
                other => {
                    // Frames are bounced (and counted) below; what has no sender to tell
                    // (acknowledgements, notices) is counted as dropped here.
                    let dropped = match other {
                        Err(e) => {
                            tracing::debug!(error = %e, ?key, "owner lookup failed");
                            DropReason::BusUnavailable
                        }
                        Ok(_) => DropReason::SessionClosed,
                    };
                    for msg in &queued {
                        match bounce_info(msg) {
                            Some(bounce) => failed.push((Some(bounce), UndeliverableReason::PeerOffline)),
                            None => self.metrics.dropped(dropped),
                        }
                    }
                }
            }
            failed
        });
        for (bounce, reason) in failed {
            self.bounce(bounce, reason);
        }
    }

    /// Tells the sender of a frame that could not be routed.
    fn bounce(&self, info: Option<Bounce>, reason: UndeliverableReason) {
        match info {
            Some(Bounce::ToDevice { device_id, frame_id }) => self.bounce_to_device_sender(device_id, frame_id, reason),
            Some(Bounce::ToVes { ves_id, device_id, frame_id }) => {
                self.bounce_to_ves_sender(ves_id, device_id, frame_id, reason)
            }
            Some(Bounce::Fetch { request_id }) => {
                self.fetch_done(request_id, noc_cluster::FetchOutcome::Refused(noc_cluster::FetchRefusal::Offline))
            }
            None => {}
        }
    }

    /// Best-effort notice to a device (an ack, or an undeliverable for its own frame).
    pub fn notify_device(&self, device_id: DeviceId, item: DeviceItem) {
        if let Err(reason) = self.deliver_to_device(device_id, None, item) {
            // The device is gone too, or cannot take more: it will time out and resend on
            // its own.
            self.metrics.ack_dropped(reason);
        }
    }

    /// Best-effort command to a VES (presence, activation, revocation).
    pub fn notify_ves(&self, ves_id: VesId, item: VesItem) {
        let _ = self.device_to_ves(ves_id, item);
    }

    /// Tells the sender of `item` that it will not arrive. Used when a queue holding
    /// accepted frames is dropped.
    pub fn bounce_to_device_sender(&self, device_id: DeviceId, frame_id: u64, reason: UndeliverableReason) {
        self.metrics.undeliverable(Direction::DeviceToVes, reason);
        self.notify_device(device_id, DeviceItem::Undeliverable { frame_id, reason });
    }

    /// Tells a VES that its accepted frame for `device_id` will not arrive.
    pub fn bounce_to_ves_sender(&self, ves_id: VesId, device_id: DeviceId, frame_id: u64, reason: UndeliverableReason) {
        self.metrics.undeliverable(Direction::VesToDevice, reason);
        self.notify_ves(ves_id, VesItem::Undeliverable { device_id, frame_id, reason });
    }

    // -- account events ---------------------------------------------------------------

    /// A device was activated for a user of `ves_id`: the VES may now address it.
    pub fn device_activated(
        &self,
        ves_id: VesId,
        device_id: DeviceId,
        user_id: UserId,
        name: Option<String>,
        device_type: Option<String>,
    ) {
        self.update_directory(ves_id, device_id, user_id, true);
        self.notify_ves(ves_id, VesItem::Command(Command::DeviceActivated { device_id, user_id, name, device_type }));
    }

    /// Devices lost their credentials: close their sessions at once, wherever they are.
    pub fn devices_revoked(&self, ves_id: VesId, user_id: UserId, devices: &[DeviceId]) {
        self.withdraw_devices(ves_id, user_id, devices, CloseCode::Revoked);
    }

    /// The user asked for a remote wipe of a device: the VES stops addressing it at once,
    /// and its live session, wherever it is, closes with `wipe_pending`, so that the device
    /// reconnects and its authentication is answered with the wipe (docs/protocol.md
    /// §6.3.1). An offline device gets the wipe at its next connection.
    pub fn device_wipe_requested(&self, ves_id: VesId, user_id: UserId, device_id: DeviceId) {
        self.withdraw_devices(ves_id, user_id, &[device_id], CloseCode::WipePending);
    }

    /// Devices leave the VES's directory (`DeviceRevoked`), and their live sessions close
    /// with `code`, wherever they are, again after a while in case the bus lost it.
    fn withdraw_devices(&self, ves_id: VesId, user_id: UserId, devices: &[DeviceId], code: CloseCode) {
        for &device_id in devices {
            self.update_directory(ves_id, device_id, user_id, false);
            self.close_session(SessionKey::Device(device_id), code);
            self.notify_ves(ves_id, VesItem::Command(Command::DeviceRevoked { device_id, user_id }));
        }
        self.repeat_revocation(devices.to_vec(), code);
    }

    /// The bus is at most once: a revocation that must reach another node is sent again
    /// after [`REVOCATION_RETRIES`] (closing is idempotent, and a revoked credential cannot
    /// authenticate a new session anyway).
    fn repeat_revocation(&self, devices: Vec<DeviceId>, code: CloseCode) {
        let Some(this) = self.this.upgrade() else { return };
        if devices.is_empty() {
            return;
        }
        actix::spawn(async move {
            for delay in REVOCATION_RETRIES {
                tokio::time::sleep(delay).await;
                for &device_id in &devices {
                    let key = SessionKey::Device(device_id);
                    if !this.is_registered(&key) {
                        // Not here: ask whoever owns it now (if anyone) to close it.
                        this.cluster.forget(&key);
                        this.close_session(key, code);
                    }
                }
            }
        });
    }

    /// A user of `ves_id` was activated: the VES should serve it, wherever its session is.
    pub fn user_activated(&self, ves_id: VesId, user: VesUserState) {
        if let Some(h) = self.ves_session(ves_id) {
            h.inbox.add_user(user, &self.metrics);
            return;
        }
        let msg = BusMessage::UserActivated {
            ves_id,
            user: user.user,
            constant_sync: user.constant_sync,
            filter_rules: user.filter_rules,
        };
        let _ = self.publish_to_owner(SessionKey::Ves(ves_id), msg);
    }

    /// A user of `ves_id` changed alert filter rules or the ConstantSync flag (the web
    /// portal): the VES learns it at once if its session is live anywhere; otherwise it
    /// gets the stored values with the next session's opening.
    pub fn user_settings_changed(
        &self,
        ves_id: VesId,
        user_id: UserId,
        constant_sync: bool,
        filter_rules: Vec<FilterRule>,
    ) {
        if let Some(h) = self.ves_session(ves_id) {
            h.inbox.update_user_settings(user_id, constant_sync, filter_rules, &self.metrics);
            return;
        }
        let msg = BusMessage::UserSettings { ves_id, user_id, constant_sync, filter_rules };
        let _ = self.publish_to_owner(SessionKey::Ves(ves_id), msg);
    }

    /// A user of `ves_id` was deleted: the VES should stop serving it.
    pub fn user_removed(&self, ves_id: VesId, user_id: UserId) {
        if let Some(h) = self.ves_session(ves_id) {
            h.inbox.remove_user(user_id, &self.metrics);
            return;
        }
        let _ = self.publish_to_owner(SessionKey::Ves(ves_id), BusMessage::UserRemoved { ves_id, user_id });
    }

    fn update_directory(&self, ves_id: VesId, device_id: DeviceId, user_id: UserId, present: bool) {
        if let Some(h) = self.ves_session(ves_id) {
            h.inbox.set_device(device_id, user_id, present);
            return;
        }
        let _ = self.publish_to_owner(
            SessionKey::Ves(ves_id),
            BusMessage::DirectoryUpdate { ves_id, device_id, user_id, present },
        );
    }

    /// Closes the session for `key` here or on its owner node.
    pub fn close_session(&self, key: SessionKey, code: CloseCode) {
        if !self.close_local(key, code) {
            let _ = self.publish_to_owner(key, BusMessage::Close { key, code });
        }
    }

    /// Closes the session for `key` if this node holds it; whether it does.
    fn close_local(&self, key: SessionKey, code: CloseCode) -> bool {
        let msg = CloseSession::new(code, code.as_str());
        // Taken out of the map first: nothing is sent under its shard's lock.
        match key {
            SessionKey::Device(id) => match self.devices.with(&id, |h| h.map(|h| h.control.clone())) {
                Some(control) => {
                    if let Some(control) = control.upgrade() {
                        control.do_send(msg);
                    }
                    true
                }
                None => false,
            },
            SessionKey::Ves(id) => match self.ves.with(&id, |h| h.map(|h| h.control.clone())) {
                Some(control) => {
                    control.do_send(msg);
                    true
                }
                None => false,
            },
        }
    }

    /// Closes this node's sessions of the given VES installations and of their users'
    /// devices (a license was suspended or expired). Other nodes do the same for theirs.
    /// Returns how many sessions were asked to close.
    pub fn close_sessions_of_ves(&self, ves: &HashSet<VesId>, code: CloseCode) -> usize {
        self.close_of_ves(ves, code, true)
    }

    /// Closes this node's device sessions of the given VES installations' users, leaving
    /// the VES sessions (their license lost ConstantSync, not its enterprise servers).
    pub fn close_devices_of_ves(&self, ves: &HashSet<VesId>, code: CloseCode) -> usize {
        self.close_of_ves(ves, code, false)
    }

    fn close_of_ves(&self, ves: &HashSet<VesId>, code: CloseCode, with_ves: bool) -> usize {
        if ves.is_empty() {
            return 0;
        }
        let (mut ves_controls, mut device_controls) = (Vec::new(), Vec::new());
        if with_ves {
            self.ves.for_each(|id, h| {
                if ves.contains(id) {
                    ves_controls.push(h.control.clone());
                }
            });
        }
        self.devices.for_each(|_, h| {
            if ves.contains(&h.ves_id) {
                device_controls.push(h.control.clone());
            }
        });
        for control in &ves_controls {
            control.do_send(CloseSession::new(code, code.as_str()));
        }
        for control in device_controls.iter().filter_map(|c| c.upgrade()) {
            control.do_send(CloseSession::new(code, code.as_str()));
        }
        ves_controls.len() + device_controls.len()
    }

    /// Asks every device session on this node to close with `code`, spreading the
    /// reconnect hints evenly over `spread_ms` so that devices do not all come back at once.
    pub fn close_all_devices(&self, code: CloseCode, spread_ms: u32) {
        let mut controls = Vec::new();
        self.devices.for_each(|_, h| controls.push(h.control.clone()));
        let n = controls.len().max(1) as u64;
        for (i, control) in controls.into_iter().enumerate() {
            let hint = (i as u64 * spread_ms as u64 / n) as u32;
            if let Some(control) = control.upgrade() {
                control.do_send(CloseSession { code, message: code.as_str().to_string(), reconnect_after_ms: hint });
            }
        }
    }

    /// Asks every VES session on this node to close with `code`, reconnecting at once
    /// (a VES is one client; the sooner it is back elsewhere, the fewer notices for it
    /// find no session).
    pub fn close_all_ves(&self, code: CloseCode) {
        let mut controls = Vec::new();
        self.ves.for_each(|_, h| controls.push(h.control.clone()));
        for control in controls {
            control.do_send(CloseSession::new(code, code.as_str()));
        }
    }

    // -- bus --------------------------------------------------------------------------

    /// Handles one message from another node.
    pub fn handle_bus(&self, msg: BusMessage) {
        if matches!(msg, BusMessage::Returned(_)) {
            self.metrics.bus_returned.inc();
        } else {
            self.metrics.bus_received.inc();
        }
        match msg {
            BusMessage::ToDevice { device_id, item } => {
                let origin = match &item {
                    DeviceItem::Forward { origin, frame_id, .. } => Some((*origin, *frame_id)),
                    _ => None,
                };
                let delivered = match self.devices.with(&device_id, |h| h.map(|h| h.tx.try_send(DeviceOut::Item(item))))
                {
                    Some(sent) => sent.map_err(|e| match e {
                        TrySendError::Full(_) => UndeliverableReason::QueueFull,
                        TrySendError::Closed(_) => UndeliverableReason::PeerDisconnected,
                    }),
                    None => Err(UndeliverableReason::PeerDisconnected),
                };
                if let (Err(reason), Some((ves_id, frame_id))) = (delivered, origin) {
                    self.bounce_to_ves_sender(ves_id, device_id, frame_id, reason);
                }
            }
            BusMessage::ToVes { ves_id, item } => {
                if let VesItem::Command(Command::DevicePresence { device_id, online: true, .. }) = &item {
                    // The device (re)connected on the sending node: forget where it was.
                    self.cluster.forget(&SessionKey::Device(*device_id));
                }
                let bounce = match &item {
                    VesItem::Frame { device_id, frame_id, .. } => Some((*device_id, *frame_id)),
                    _ => None,
                };
                let delivered = match self.ves_session(ves_id) {
                    Some(h) => h.inbox.enqueue(item, &self.metrics),
                    None => Err(UndeliverableReason::PeerDisconnected),
                };
                if let (Err(reason), Some((device_id, frame_id))) = (delivered, bounce) {
                    self.bounce_to_device_sender(device_id, frame_id, reason);
                }
            }
            BusMessage::DirectoryUpdate { ves_id, device_id, user_id, present } => {
                if let Some(h) = self.ves_session(ves_id) {
                    h.inbox.set_device(device_id, user_id, present);
                }
            }
            BusMessage::UserActivated { ves_id, user, constant_sync, filter_rules } => {
                if let Some(h) = self.ves_session(ves_id) {
                    h.inbox.add_user(VesUserState { user, constant_sync, filter_rules }, &self.metrics);
                }
            }
            BusMessage::UserRemoved { ves_id, user_id } => {
                if let Some(h) = self.ves_session(ves_id) {
                    h.inbox.remove_user(user_id, &self.metrics);
                }
            }
            BusMessage::UserSettings { ves_id, user_id, constant_sync, filter_rules } => {
                if let Some(h) = self.ves_session(ves_id) {
                    h.inbox.update_user_settings(user_id, constant_sync, filter_rules, &self.metrics);
                }
            }
            BusMessage::Fetch { ves_id, origin, call } => self.fetch_arrived(ves_id, origin, call),
            BusMessage::FetchDone { request_id, outcome } => self.fetch_done(request_id, outcome),
            BusMessage::Returned(msg) => {
                // Published to a node that no longer listens: its owner is gone.
                if let Some(key) = target_of(&msg) {
                    self.cluster.forget(&key);
                }
                self.bounce(bounce_info(&msg), UndeliverableReason::PeerOffline);
            }
            BusMessage::Close { key, code } => {
                self.close_local(key, code);
            }
        }
    }

    /// Starts the task that feeds this node's bus inbox into [`Router::handle_bus`], and
    /// takes what links from other nodes carry directly, on its sessions' worker.
    pub fn spawn_bus_pump(self: &Arc<Self>) {
        self.cluster.deliver_links_to(Arc::new(LinkDelivery(Arc::downgrade(self))));
        let Some(mut inbox) = self.cluster.take_inbox() else {
            return;
        };
        let this = self.clone();
        actix::spawn(async move {
            while let Some(msg) = inbox.recv().await {
                this.handle_bus(msg);
            }
        });
    }
}

/// The router as the links between nodes see it (weak: the cluster holds it, and the
/// router holds the cluster).
struct LinkDelivery(std::sync::Weak<Router>);

impl noc_cluster::LinkSink for LinkDelivery {
    fn deliver(&self, msg: BusMessage) {
        if let Some(router) = self.0.upgrade() {
            router.handle_bus(msg);
        }
    }

    /// A link's messages are for the sessions of the VES its sending thread serves, which
    /// live on that VES's home here ([`Router::ves_home`]): its device sessions start
    /// there, and its command channel is there.
    fn run_near(&self, msg: &BusMessage, task: noc_cluster::LinkTask) -> Result<(), noc_cluster::LinkTask> {
        let Some(router) = self.0.upgrade() else { return Err(task) };
        let ves = match msg {
            BusMessage::ToVes { ves_id, .. } => Some(*ves_id),
            BusMessage::ToDevice { item: DeviceItem::Forward { origin, .. }, .. } => Some(*origin),
            BusMessage::ToDevice { device_id, .. } => router.devices.with(device_id, |h| h.map(|h| h.ves_id)),
            _ => None,
        };
        match ves.and_then(|ves| router.ves_home(ves)) {
            Some(home) if !home.is_current() => {
                // A worker that stopped drops the task, which closes the link: its sender
                // dials again and the new link is placed anew.
                home.spawn(task);
                Ok(())
            }
            _ => Err(task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use noc_cluster::{ClusterError, Inbox, NodeLoad};
    use std::time::Duration;

    /// A backend that knows no owner from memory and answers every lookup with `answer`:
    /// a Redis that lost its keys (`Ok(None)`) or cannot be reached (`Err`).
    struct LostOwners {
        node: NodeId,
        answer: fn() -> Result<Option<NodeId>, ClusterError>,
    }

    #[async_trait::async_trait]
    impl Cluster for LostOwners {
        fn node_id(&self) -> &NodeId {
            &self.node
        }
        async fn claim(&self, _key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
            Ok(None)
        }
        fn release(&self, _key: SessionKey) {}
        fn owner(&self, _key: &SessionKey) -> Owner {
            Owner::Unknown
        }
        async fn lookup(&self, _key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
            (self.answer)()
        }
        fn forget(&self, _key: &SessionKey) {}
        fn report_load(&self, _devices: u64, _ves: u64) {}
        async fn node_loads(&self) -> Result<Vec<NodeLoad>, ClusterError> {
            Ok(Vec::new())
        }
        fn publish(&self, node: &NodeId, _msg: BusMessage) -> Result<(), ClusterError> {
            Err(ClusterError::NodeUnreachable(node.clone()))
        }
        fn take_inbox(&self) -> Option<Inbox> {
            None
        }
        fn healthy(&self) -> bool {
            true
        }
    }

    /// The drop count for `reason` once it reached `n` (or after a second).
    async fn drops_once_at(metrics: &Metrics, reason: DropReason, n: f64) -> f64 {
        let value = || metrics.value("noc_frames_dropped_total", &[("reason", reason.as_str())]);
        for _ in 0..200 {
            if value() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        value()
    }

    /// An acknowledgement for a session whose owner had to be looked up, and was found
    /// nowhere or could not be looked up, has no sender to tell: it is counted as dropped,
    /// once, under why.
    #[actix_rt::test]
    async fn an_acknowledgement_whose_owner_lookup_fails_is_counted_as_dropped() {
        for (answer, reason, other) in [
            (
                (|| Ok(None)) as fn() -> Result<Option<NodeId>, ClusterError>,
                DropReason::SessionClosed,
                DropReason::BusUnavailable,
            ),
            (|| Err(ClusterError::Unavailable("down".into())), DropReason::BusUnavailable, DropReason::SessionClosed),
        ] {
            let metrics = Arc::new(Metrics::new());
            let router = Router::new(Arc::new(LostOwners { node: NodeId::new("here"), answer }), metrics.clone());
            router.notify_device(DeviceId::random(), DeviceItem::Ack { frame_id: 1 });
            router.notify_ves(VesId::random(), VesItem::Ack { device_id: DeviceId::random(), frame_id: 2 });
            assert_eq!(drops_once_at(&metrics, reason, 2.0).await, 2.0, "{reason:?}");
            assert_eq!(metrics.value("noc_frames_dropped_total", &[("reason", other.as_str())]), 0.0, "{reason:?}");
        }
    }
}
