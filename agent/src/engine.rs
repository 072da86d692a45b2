//! The agent's event loop: one end-to-end [`Link`] per device, fed by the command channel,
//! the mail source and the results of data-channel requests.
//!
//! Everything that touches device state happens on this one task, in order: a
//! `DeviceFrame` is opened, a WakeUp answered, a new mail sealed, a resend scheduled. What
//! leaves the task is data-channel requests, spawned so that the loop never waits for the
//! network:
//!
//! * **Frames**, at most one request in flight per device, because frames of concurrent
//!   requests have no defined order at the relay (docs/protocol.md §7.4) and the `modern`
//!   suite accepts only the next counter; many devices' requests run in parallel, bounded
//!   by the data channel's semaphore;
//! * **Acks** of device frames, batched;
//! * **StartupReport** after every user list.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use noc_crypto::Responder;
use noc_endpoint::item::{Item, ItemId, ItemType};
use noc_endpoint::link::{Link, LinkConfig, LinkEvent, Outputs, Rejection};
use noc_endpoint::store::{FullPolicy, QueueLimits, Store};
use noc_protocol::DeviceId;
use noc_protocol::device::ForwardKind;
use noc_protocol::rts::{
    self, AcksResponse, Command, DataRequest, FrameRef, FrameStatus, FramesResponse, OutboundFrame,
    StartupReportResponse, StartupStatus, StartupUser,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::db;
use crate::error::RtsError;
use crate::rts_client::DataChannel;
use crate::source::{Scan, SourceItem, ensure_maildir};
use crate::stats::{AgentStats, StatsSnapshot, inc};

/// Frames in one `Frames` request, at most.
const MAX_FRAMES_PER_REQUEST: usize = 64;
/// Base64 payload bytes in one `Frames` request, at most (the relay's body limit is 1 MiB).
const MAX_REQUEST_PAYLOAD: usize = 600 * 1024;
/// Acks in one `Acks` request, at most.
const MAX_ACKS_PER_REQUEST: usize = 1000;
/// After a failed `Frames` request, wait this long before the next one for that device.
const FRAMES_RETRY: Duration = Duration::from_secs(1);
/// How often links are pumped (resend timers, new items).
pub const TICK: Duration = Duration::from_millis(200);

/// Inputs of the engine.
pub enum EngineEvent {
    /// A command channel opened (`Session` line).
    ChannelUp { resumed: bool },
    /// The command channel ended.
    ChannelDown,
    /// A command other than Session, HB and Close.
    Command(Box<Command>),
    /// A file from the mail source.
    NewItem(SourceItem),
    /// A `Frames` request for a device finished.
    FramesDone { device_id: DeviceId, result: Result<FramesResponse, RtsError> },
    /// `ves-agent status`.
    Status(oneshot::Sender<AgentStatus>),
}

impl From<SourceItem> for EngineEvent {
    fn from(item: SourceItem) -> Self {
        EngineEvent::NewItem(item)
    }
}

/// What `status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentStatus {
    /// A command channel is open.
    pub connected: bool,
    pub fingerprint: String,
    pub stats: StatsSnapshot,
    pub devices: Vec<DeviceStatus>,
    /// Active users with what they set on the relay's portal.
    #[serde(default)]
    pub users: Vec<UserStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserStatus {
    pub email: String,
    pub constant_sync: bool,
    pub filter_rules: Vec<noc_protocol::rts::FilterRule>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceStatus {
    pub device_id: DeviceId,
    pub email: Option<String>,
    pub online: bool,
    /// The suite of the current end-to-end session, if one exists.
    pub suite: Option<String>,
    /// Items waiting for the device's confirmation.
    pub queued: usize,
    pub in_flight: usize,
}

struct Peer {
    link: Link,
    user: noc_protocol::UserId,
    online: bool,
    queue: VecDeque<OutboundFrame>,
    busy: bool,
    retry_at: Option<Instant>,
}

pub struct Engine {
    pub config: Arc<AgentConfig>,
    pub store: Arc<Store>,
    pub responder: Arc<Responder>,
    pub data: DataChannel,
    pub stats: Arc<AgentStats>,
    /// For spawned requests to report back.
    pub tx: mpsc::Sender<EngineEvent>,
    pub scans: mpsc::Sender<Scan>,
    /// Wakes the SMTP submitter.
    pub submit: Arc<Notify>,
    /// Wakes the certificate enrollment (crate::enroll).
    pub enroll: Arc<Notify>,
    /// Answers browse fetches.
    pub browser: crate::browse::Browser,
}

struct State {
    peers: HashMap<DeviceId, Peer>,
    acks: Vec<FrameRef>,
    channel_up: bool,
    scanned_all: bool,
}

impl Engine {
    fn link_config(&self) -> LinkConfig {
        let q = &self.config.queue;
        LinkConfig {
            window_frames: q.window_frames,
            record_bytes: q.record_bytes,
            resend_after: Duration::from_secs(q.resend_after_seconds),
            max_resends: q.max_resends,
            handshake_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            rekey_interval: Duration::from_secs(q.rekey_interval_seconds),
            max_item_bytes: self.config.mail.max_item_bytes,
        }
    }

    fn limits(&self) -> QueueLimits {
        QueueLimits {
            max_items: self.config.queue.max_items_per_device,
            ttl_ms: (self.config.queue.ttl_seconds as i64).saturating_mul(1000),
            policy: FullPolicy::DropOldest,
        }
    }

    /// Runs until `shutdown` or until every sender is gone.
    pub async fn run(self, mut rx: mpsc::Receiver<EngineEvent>, shutdown: CancellationToken) {
        let mut st = State { peers: HashMap::new(), acks: Vec::new(), channel_up: false, scanned_all: false };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => match ev {
                    None => return,
                    Some(ev) => self.handle(&mut st, ev),
                },
                _ = tick.tick() => self.pump_all(&mut st),
            }
            self.flush(&mut st);
        }
    }

    fn handle(&self, st: &mut State, ev: EngineEvent) {
        match ev {
            EngineEvent::ChannelUp { resumed } => {
                st.channel_up = true;
                tracing::debug!(resumed, "engine: channel up");
            }
            EngineEvent::ChannelDown => st.channel_up = false,
            EngineEvent::Command(c) => self.command(st, *c),
            EngineEvent::NewItem(item) => self.new_item(st, item),
            EngineEvent::FramesDone { device_id, result } => self.frames_done(st, device_id, result),
            EngineEvent::Status(reply) => {
                let _ = reply.send(self.status(st));
            }
        }
    }

    fn status(&self, st: &State) -> AgentStatus {
        let mut devices: Vec<DeviceStatus> = st
            .peers
            .iter()
            .map(|(id, p)| DeviceStatus {
                device_id: *id,
                email: db::user(&self.store, p.user).ok().flatten().map(|u| u.email),
                online: p.online,
                suite: p.link.suite().map(|s| s.name().to_owned()),
                queued: self.store.outbox_len(&id.to_string()).unwrap_or(0),
                in_flight: p.link.in_flight(),
            })
            .collect();
        devices.sort_by_key(|d| d.device_id);
        AgentStatus {
            connected: st.channel_up,
            fingerprint: self.responder.fingerprint().to_string(),
            stats: self.stats.snapshot(),
            devices,
            users: db::active_users(&self.store)
                .unwrap_or_default()
                .into_iter()
                .map(|u| {
                    let s = db::settings(&self.store, u.user_id).unwrap_or_default();
                    UserStatus { email: u.email, constant_sync: s.constant_sync, filter_rules: s.filter_rules }
                })
                .collect(),
        }
    }

    fn peer<'a>(&self, st: &'a mut State, device: DeviceId, user: noc_protocol::UserId) -> &'a mut Peer {
        st.peers.entry(device).or_insert_with(|| {
            match db::upsert_device(&self.store, device, user, None) {
                Ok(_) => tracing::info!(%device, %user, "device known"),
                Err(e) => tracing::error!(%device, error = %e, "cannot record device"),
            }
            Peer {
                link: Link::ves(device.to_string(), self.responder.clone(), self.link_config()),
                user,
                online: false,
                queue: VecDeque::new(),
                busy: false,
                retry_at: None,
            }
        })
    }

    fn command(&self, st: &mut State, c: Command) {
        let now = Instant::now();
        match c {
            Command::ActivateUsers { users, complete } => {
                if let Err(e) = db::upsert_users(&self.store, &users, complete) {
                    tracing::error!(error = %e, "cannot record users");
                }
                if self.config.mail.create_maildirs {
                    for u in &users {
                        if let Err(e) = ensure_maildir(&self.config.mail.maildir_root, &u.email.to_lowercase()) {
                            tracing::warn!(email = %u.email, error = %e, "no Maildir for user");
                        }
                    }
                }
                self.startup_report();
                if complete && !st.scanned_all {
                    st.scanned_all = true;
                    let _ = self.scans.try_send(Scan::All);
                } else {
                    for u in &users {
                        let _ = self.scans.try_send(Scan::User(u.email.to_lowercase()));
                    }
                }
            }
            Command::DeactivateUsers { user_ids } => {
                if let Err(e) = db::deactivate_users(&self.store, &user_ids) {
                    tracing::error!(error = %e, "cannot record deactivation");
                }
                for user in user_ids {
                    for device in db::devices_of(&self.store, user).unwrap_or_default() {
                        self.forget(st, device);
                    }
                }
            }
            Command::DeviceFrame { device_id, user_id, frame_id, kind, payload } => {
                let Ok(bytes) = rts::decode_payload(&payload) else {
                    tracing::warn!(%device_id, frame_id, "DeviceFrame payload is not base64; ignored");
                    return;
                };
                if kind == ForwardKind::WakeUp && !st.peers.contains_key(&device_id) {
                    // docs/crypto.md §5.3: the VES cannot authenticate devices itself.
                    tracing::info!(%device_id, %user_id, "key agreement from a device identity seen for the first time");
                }
                let peer = self.peer(st, device_id, user_id);
                peer.online = true;
                let mut out = Outputs::default();
                peer.link.set_online(true, &mut out);
                peer.link.on_forward(kind, frame_id, &bytes, now, &self.store, &mut out);
                peer.link.pump(now, &self.store, &mut out);
                self.apply(st, device_id, out);
            }
            Command::Ack { device_id, frame_id } => {
                if let Some(p) = st.peers.get_mut(&device_id) {
                    p.link.on_ack(frame_id);
                }
            }
            Command::Undeliverable { device_id, frame_id, reason } => {
                inc(&self.stats.frames_undeliverable);
                if let Some(p) = st.peers.get_mut(&device_id) {
                    let mut out = Outputs::default();
                    p.link.on_undeliverable(frame_id, reason, now, &mut out);
                    self.apply(st, device_id, out);
                }
            }
            // A revoked (or erased) device's session ends after the revocation reached us:
            // its "offline" must not bring back the peer that DeviceRevoked forgot.
            Command::DevicePresence { online: false, device_id, .. } if !st.peers.contains_key(&device_id) => {}
            Command::DevicePresence { device_id, user_id, online } => {
                let peer = self.peer(st, device_id, user_id);
                peer.online = online;
                let mut out = Outputs::default();
                peer.link.set_online(online, &mut out);
                if online {
                    peer.link.pump(now, &self.store, &mut out);
                }
                self.apply(st, device_id, out);
            }
            Command::DeviceActivated { device_id, user_id, name, .. } => {
                if let Err(e) = db::upsert_device(&self.store, device_id, user_id, name.as_deref()) {
                    tracing::error!(error = %e, "cannot record device");
                }
                self.peer(st, device_id, user_id);
                if let Ok(Some(user)) = db::user(&self.store, user_id) {
                    let _ = self.scans.try_send(Scan::User(user.email));
                }
            }
            Command::DeviceRevoked { device_id, .. } => {
                if let Err(e) = db::revoke_device(&self.store, device_id) {
                    tracing::error!(error = %e, "cannot record revocation");
                }
                self.forget(st, device_id);
            }
            Command::FilterRules { users } => {
                for u in users {
                    if let Err(e) = db::set_filter_rules(&self.store, u.user_id, &u.rules) {
                        tracing::error!(user = %u.user_id, error = %e, "cannot record filter rules");
                    }
                }
            }
            Command::ConstantSync { users } => {
                for u in users {
                    match db::set_constant_sync(&self.store, u.user_id, u.enabled) {
                        // Turned on again: what arrived meanwhile is pushed now.
                        Ok(false) if u.enabled => {
                            if let Ok(Some(user)) = db::user(&self.store, u.user_id) {
                                tracing::info!(email = %user.email, "ConstantSync on: pushing what arrived meanwhile");
                                let _ = self.scans.try_send(Scan::User(user.email));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(user = %u.user_id, error = %e, "cannot record ConstantSync"),
                    }
                }
            }
            Command::Fetch { request_id, user_id, timeout_ms, request } => {
                self.browser.answer(request_id, user_id, timeout_ms, request);
            }
            Command::Session { .. } | Command::Heartbeat { .. } | Command::Close { .. } => {}
        }
    }

    fn forget(&self, st: &mut State, device: DeviceId) {
        st.peers.remove(&device);
        if let Err(e) = self.store.forget_peer(&device.to_string()) {
            tracing::error!(%device, error = %e, "cannot drop the device's queue");
        }
    }

    /// Whether this version of the object was pushed already (and, if not, the
    /// `CreatedAtMs` to give it: later than the previous version's even if the clock went
    /// back, since the device keeps the version created last).
    fn already_pushed(&self, item: &SourceItem) -> Result<Option<i64>, crate::error::AgentError> {
        let now_ms = noc_protocol::clock::unix_ms_i64();
        let Some(version) = &item.version else {
            return Ok((!db::is_seen(&self.store, &item.key)?).then_some(now_ms));
        };
        match db::last_version(&self.store, &item.key)? {
            Some((last, _)) if &last == version => Ok(None),
            Some((_, created)) => Ok(Some(now_ms.max(created.saturating_add(1)))),
            None => {
                // Agents before the versions table marked `<key>:<hash>` as seen.
                let legacy = format!("{}:{version}", item.key);
                if db::is_seen(&self.store, &legacy)? {
                    db::set_version(&self.store, &item.key, version, now_ms)?;
                    return Ok(None);
                }
                Ok(Some(now_ms))
            }
        }
    }

    fn new_item(&self, st: &mut State, item: SourceItem) {
        let created_ms = match self.already_pushed(&item) {
            Ok(Some(created)) => created,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "seen table");
                return;
            }
        };
        let Ok(Some(user)) = db::active_user_by_email(&self.store, &item.email) else {
            tracing::debug!(email = %item.email, "item for a user that is not active; kept for later");
            return;
        };
        let settings = db::settings(&self.store, user.user_id).unwrap_or_default();
        // Alerts do not depend on ConstantSync (a user who only browses wants them most);
        // each mail alerts once, even if it is looked at again later.
        let alert_key = format!("alert:{}", item.key);
        if item.item_type == ItemType::Mail
            && crate::alerts::matches(&settings.filter_rules, &item.body)
            && !db::is_seen(&self.store, &alert_key).unwrap_or(true)
        {
            inc(&self.stats.alerts_matched);
            tracing::info!(email = %item.email, name = %item.name, "new mail matches an alert rule");
            crate::alerts::send(self.data.clone(), self.stats.clone(), user.user_id, &item.body);
            if let Err(e) = db::mark_seen(&self.store, &alert_key) {
                tracing::error!(error = %e, "seen table");
            }
        }
        if !settings.constant_sync {
            // Not marked seen: the scan that follows turning ConstantSync on finds it.
            inc(&self.stats.items_held);
            tracing::debug!(email = %item.email, name = %item.name, "ConstantSync is off; item not pushed");
            return;
        }
        // Only a calendar entry the devices never had waits: a new version of one they
        // hold goes at once, or they would keep the old one until the window reached it.
        if item.item_type == ItemType::Calendar
            && db::last_version(&self.store, &item.key).ok().flatten().is_none()
            && !within_calendar_window(&self.store, user.user_id, &item.body)
        {
            // Not recorded: a later scan (periodic, or when the setting changes) pushes it
            // once the window reaches it.
            inc(&self.stats.items_deferred);
            tracing::debug!(email = %item.email, name = %item.name, "calendar entries beyond the user's days ahead");
            return;
        }
        let devices = db::devices_of(&self.store, user.user_id).unwrap_or_default();
        if devices.is_empty() {
            tracing::debug!(email = %item.email, "user has no device yet; item kept for later");
            return;
        }
        let mut encoded = Item::new(item.item_type.clone(), Some(item.name.clone()), item.body);
        encoded.header.created_at_ms = created_ms;
        let encoded = match encoded.encode() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode item");
                return;
            }
        };
        let id = ItemId::random();
        let now_ms = noc_protocol::clock::unix_ms_i64();
        // A new version of a calendar entry or contact replaces the one still queued.
        let replaces = item.item_type.replaces_by_name().then_some(item.name.as_str());
        for device in &devices {
            let peer = device.to_string();
            let ty = item.item_type.as_str();
            let queued = match replaces {
                Some(name) => self.store.enqueue_replacing(&peer, id, ty, name, &encoded, self.limits(), now_ms),
                None => self.store.enqueue(&peer, id, ty, &encoded, self.limits(), now_ms),
            };
            match queued {
                Ok(q) => {
                    inc(&self.stats.items_queued);
                    for dropped in q.dropped {
                        inc(&self.stats.items_dropped);
                        tracing::warn!(%device, item = %dropped, "device queue full: oldest item dropped");
                    }
                    for old in q.replaced {
                        tracing::info!(%device, item = %old, "queued version replaced by a newer one");
                    }
                }
                Err(e) => tracing::error!(%device, error = %e, "cannot queue item"),
            }
        }
        let recorded = match &item.version {
            Some(version) => db::set_version(&self.store, &item.key, version, created_ms),
            None => db::mark_seen(&self.store, &item.key),
        };
        if let Err(e) = recorded {
            tracing::error!(error = %e, "seen table");
        }
        tracing::info!(email = %item.email, item_type = %item.item_type, name = %item.name, %id, devices = devices.len(), "item queued");
        let now = Instant::now();
        for device in devices {
            let peer = self.peer(st, device, user.user_id);
            let mut out = Outputs::default();
            peer.link.pump(now, &self.store, &mut out);
            self.apply(st, device, out);
        }
    }

    fn frames_done(&self, st: &mut State, device: DeviceId, result: Result<FramesResponse, RtsError>) {
        let now = Instant::now();
        let Some(peer) = st.peers.get_mut(&device) else { return };
        peer.busy = false;
        match result {
            Ok(resp) => {
                let mut out = Outputs::default();
                for r in resp.results {
                    if r.status == FrameStatus::Undeliverable {
                        inc(&self.stats.frames_undeliverable);
                        let reason = r.reason.unwrap_or(noc_protocol::UndeliverableReason::PeerOffline);
                        tracing::debug!(%device, frame_id = r.frame_id, %reason, "frame undeliverable");
                        peer.link.on_undeliverable(r.frame_id, reason, now, &mut out);
                    }
                }
                self.apply(st, device, out);
            }
            Err(e) => {
                // Whether the relay took the frames is unknown: data frames are resent on
                // their timer, a lost WakeUpAck makes the device try again.
                tracing::warn!(%device, error = %e, "Frames request failed");
                peer.retry_at = Some(now + FRAMES_RETRY);
            }
        }
    }

    fn pump_all(&self, st: &mut State) {
        let now = Instant::now();
        let ids: Vec<DeviceId> = st.peers.keys().copied().collect();
        for id in ids {
            let Some(p) = st.peers.get_mut(&id) else { continue };
            let mut out = Outputs::default();
            p.link.pump(now, &self.store, &mut out);
            if !out.is_empty() {
                self.apply(st, id, out);
            }
        }
    }

    /// Moves a link's output into the device's send queue, the ack batch and the stats.
    fn apply(&self, st: &mut State, device: DeviceId, out: Outputs) {
        let Some(peer) = st.peers.get_mut(&device) else { return };
        for e in &out.events {
            match e {
                LinkEvent::SessionEstablished { suite } => {
                    inc(&self.stats.e2e_sessions);
                    tracing::info!(%device, %suite, "end-to-end session established");
                    // Frames sealed under the previous session are useless now.
                    peer.queue.retain(|f| f.kind != ForwardKind::Data);
                }
                LinkEvent::SessionEnded { reason } => tracing::info!(%device, %reason, "end-to-end session ended"),
                LinkEvent::KeyAgreementFailed { error } => {
                    inc(&self.stats.key_agreement_failures);
                    tracing::warn!(%device, %error, "key agreement failed");
                }
                LinkEvent::ItemReceived { id, item, .. } => {
                    inc(&self.stats.items_received);
                    tracing::info!(%device, %id, item_type = %item.item_type(), "item received from device");
                    match item.item_type() {
                        ItemType::CertificateRequest => self.enroll.notify_one(),
                        _ => self.submit.notify_one(),
                    }
                }
                LinkEvent::ItemDelivered { id } => {
                    inc(&self.stats.items_delivered);
                    tracing::info!(%device, %id, "item delivered");
                }
                LinkEvent::ItemsExpired { ids } => {
                    for _ in ids {
                        inc(&self.stats.items_dropped);
                    }
                    tracing::warn!(%device, count = ids.len(), "items expired undelivered");
                }
                LinkEvent::FrameRejected { rejection, frame_id, detail } => {
                    match rejection {
                        Rejection::Tampered => inc(&self.stats.tampered_frames),
                        Rejection::Replayed => inc(&self.stats.replayed_frames),
                        _ => {}
                    }
                    tracing::debug!(%device, ?rejection, frame_id, %detail, "device frame rejected");
                }
                LinkEvent::RekeyRequested => {}
                LinkEvent::StoreFailed { error } => tracing::error!(%device, %error, "local store failed"),
            }
        }
        for f in out.frames {
            if f.kind == ForwardKind::Data && peer.queue.iter().any(|q| q.frame_id == f.frame_id) {
                continue; // a resend of a frame still waiting to be sent
            }
            peer.queue.push_back(OutboundFrame {
                device_id: device,
                frame_id: f.frame_id,
                kind: f.kind,
                payload: rts::encode_payload(&f.payload),
            });
        }
        st.acks.extend(out.acks.into_iter().map(|frame_id| FrameRef { device_id: device, frame_id }));
    }

    /// Starts the data-channel requests that can go now.
    fn flush(&self, st: &mut State) {
        if !self.data.is_open() {
            return;
        }
        while !st.acks.is_empty() {
            let n = st.acks.len().min(MAX_ACKS_PER_REQUEST);
            let acks: Vec<FrameRef> = st.acks.drain(..n).collect();
            let data = self.data.clone();
            tokio::spawn(async move {
                // Failed acks are not retried: the device resends and we ack again.
                match data.request::<AcksResponse>(&DataRequest::Acks { acks }).await {
                    Ok(r) if !r.undeliverable.is_empty() => {
                        tracing::debug!(count = r.undeliverable.len(), "acks not forwarded")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "Acks request failed"),
                }
            });
        }
        let now = Instant::now();
        for (device, peer) in st.peers.iter_mut() {
            if peer.busy || peer.queue.is_empty() || peer.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            peer.retry_at = None;
            let mut frames = Vec::new();
            let mut size = 0;
            while let Some(f) = peer.queue.front() {
                if !frames.is_empty()
                    && (frames.len() >= MAX_FRAMES_PER_REQUEST || size + f.payload.len() > MAX_REQUEST_PAYLOAD)
                {
                    break;
                }
                size += f.payload.len();
                if let Some(f) = peer.queue.pop_front() {
                    frames.push(f);
                }
            }
            peer.busy = true;
            for _ in &frames {
                inc(&self.stats.frames_sent);
            }
            let data = self.data.clone();
            let tx = self.tx.clone();
            let device = *device;
            tokio::spawn(async move {
                let result = data.request::<FramesResponse>(&DataRequest::Frames { frames }).await;
                let _ = tx.send(EngineEvent::FramesDone { device_id: device, result }).await;
            });
        }
    }

    /// Tells the relay which active users this agent can serve (white paper §4.5 step 8):
    /// those whose Maildir exists.
    fn startup_report(&self) {
        let users = match db::active_users(&self.store) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot list users");
                return;
            }
        };
        let root = self.config.mail.maildir_root.clone();
        let report: Vec<StartupUser> = users
            .into_iter()
            .map(|u| {
                let ready = is_maildir(&root.join(&u.email));
                StartupUser {
                    user_id: u.user_id,
                    status: if ready { StartupStatus::Ready } else { StartupStatus::Unavailable },
                    detail: (!ready).then(|| "no Maildir".to_owned()),
                }
            })
            .collect();
        let data = self.data.clone();
        tokio::spawn(async move {
            match data
                .request_when_open::<StartupReportResponse>(
                    &DataRequest::StartupReport { users: report },
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(r) => tracing::info!(ready = r.ready, unavailable = r.unavailable, "startup report sent"),
                Err(e) => tracing::warn!(error = %e, "StartupReport failed"),
            }
        });
    }
}

/// Whether a calendar file goes to the devices now: it has an entry that starts before
/// the end of the user's window (today and `days_ahead` days more, in the user's zone), or
/// nothing this agent can date (sent as it is). Entries in the past are inside.
fn within_calendar_window(store: &Store, user: noc_protocol::UserId, body: &[u8]) -> bool {
    let prefs = db::calendar_prefs(store, user).unwrap_or_default();
    let Some(days) = prefs.days_ahead else { return true };
    let zone = crate::browse::pim::user_zone(prefs.time_zone.as_deref());
    let Some(first) = crate::browse::pim::first_start(&String::from_utf8_lossy(body), &zone) else { return true };
    window_end(jiff::Timestamp::now(), &zone, days).is_none_or(|end| first < end)
}

/// The end of a window of `days` days after today (unix ms): midnight at the start of
/// the day after the last one, in `zone`.
fn window_end(now: jiff::Timestamp, zone: &jiff::tz::TimeZone, days: u32) -> Option<i64> {
    let today = zone.to_datetime(now).date();
    let end = today.checked_add(jiff::Span::new().days(i64::from(days) + 1)).ok()?;
    Some(zone.to_timestamp(end.to_datetime(jiff::civil::Time::midnight())).ok()?.as_millisecond())
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("new").is_dir() && dir.join("cur").is_dir()
}

/// The item type as the submitter cares about it.
pub fn is_outgoing(item_type: &str) -> bool {
    ItemType::parse(item_type) == ItemType::OutgoingMail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_window_ends_at_midnight_after_its_last_day_in_the_users_zone() {
        // 20:00 UTC on 4 December is already 5 December in Tokyo.
        let now: jiff::Timestamp = "2026-12-04T20:00:00Z".parse().expect("timestamp");
        let tokyo = crate::browse::pim::user_zone(Some("Asia/Tokyo"));
        let end: jiff::Timestamp = "2027-01-04T15:00:00Z".parse().expect("timestamp"); // 5 Jan 00:00 in Tokyo
        assert_eq!(window_end(now, &tokyo, 30), Some(end.as_millisecond()));
        let utc = jiff::tz::TimeZone::UTC;
        let end: jiff::Timestamp = "2026-12-06T00:00:00Z".parse().expect("timestamp");
        assert_eq!(window_end(now, &utc, 1), Some(end.as_millisecond()), "today and tomorrow");
    }
}
