//! A VES session's inbox: what the router needs of a VES, and nothing of its session.
//!
//! The router delivers to a VES through this view alone: the attached command channel's
//! bounded queue ([`VesInbox::enqueue`]), the device directory that is the ownership check
//! of every VES → device frame ([`VesInbox::owns_device`]), and the active users whose
//! changes become commands. It imports no session or router code, so nothing on the frame
//! path points back up: the session actor ([`super::session`]) owns the inbox's channel
//! and bounces what a closed channel still held; the command stream
//! ([`super::command_stream`]) drains it.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use noc_cluster::{FetchCall, FetchRefusal, NodeId, VesItem};
use noc_protocol::rts::fetch::{FETCH_VERSION, RequestId};
use noc_protocol::rts::{
    ActiveUser, Command, ConstantSyncFlag, FilterRule, StartupReportResponse, StartupStatus, StartupUser,
    UserFilterRules,
};
use noc_protocol::{DeviceId, UndeliverableReason, UserId, VesId};
use tokio_util::sync::CancellationToken;

use crate::home::Home;
use crate::metrics::{DropReason, Metrics};
use crate::queue::{self, QueueReceiver, QueueSender, TrySendError};

/// An active user as the VES sees it: identity plus the per-user flags sent at connect.
#[derive(Clone, Debug, PartialEq)]
pub struct VesUserState {
    pub user: ActiveUser,
    pub constant_sync: bool,
    pub filter_rules: Vec<FilterRule>,
}

/// The receiving end of a command channel's queue, shared by its stream and the channel's
/// sending side: when the session ends a channel it takes the queue back at once and
/// bounces what is in it, even if the HTTP layer has stopped polling the stream (a stalled
/// peer), so a stalled VES pins no frames.
pub(crate) type RxSlot = Arc<Mutex<Option<QueueReceiver<VesItem>>>>;

/// The last line a cancelled channel writes (a `Close` command). Kept out of the queue so
/// that a full queue cannot lose it.
pub(crate) type FarewellSlot = Arc<Mutex<Option<Command>>>;

/// The sending side of one attached command channel.
pub(crate) struct ChannelTx {
    tx: QueueSender<VesItem>,
    rx: RxSlot,
    cancel: CancellationToken,
    farewell: FarewellSlot,
    pub(crate) epoch: u64,
}

/// The receiving side of one command channel, for its [`super::command_stream::CommandStream`].
pub(crate) struct ChannelRx {
    pub(crate) rx: RxSlot,
    pub(crate) cancel: CancellationToken,
    pub(crate) farewell: FarewellSlot,
    pub(crate) epoch: u64,
}

/// Queue slots a command channel keeps once it has grown to them: a busy channel's queue
/// is not reallocated burst after burst (about 80 bytes a slot).
const KEEP_ITEMS: usize = 1024;

/// A new command channel holding at most `capacity` items.
pub(crate) fn channel(capacity: usize, epoch: u64) -> (ChannelTx, ChannelRx) {
    let (tx, rx) = queue::bounded_keeping(capacity, KEEP_ITEMS);
    let rx: RxSlot = Arc::new(Mutex::new(Some(rx)));
    let cancel = CancellationToken::new();
    let farewell: FarewellSlot = Arc::new(Mutex::new(None));
    (
        ChannelTx { tx, rx: rx.clone(), cancel: cancel.clone(), farewell: farewell.clone(), epoch },
        ChannelRx { rx, cancel, farewell, epoch },
    )
}

impl ChannelTx {
    /// Queues `item`. Frames are refused once the queue holds its capacity
    /// (`rts.send_queue_items`); everything else (the devices' acknowledgements of the
    /// VES's frames, undeliverable notices, commands) may take as many slots again. An
    /// acknowledgement refused here is lost without a notice (a device is not answered for
    /// its ACK) and the VES would send the frame again after its own timeout: under a
    /// backlog of frames, the answers the VES waits for still get through, behind the
    /// frames, and only frames, whose senders are told, are refused. A refused item is
    /// dropped.
    fn push(&self, item: VesItem) -> Result<(), TrySendError<()>> {
        let sent = match item {
            VesItem::Frame { .. } => self.tx.try_send(item),
            _ => self.tx.try_send_over(item, self.tx.capacity()),
        };
        sent.map_err(|e| match e {
            TrySendError::Full(_) => TrySendError::Full(()),
            TrySendError::Closed(_) => TrySendError::Closed(()),
        })
    }

    /// Queues an item on a channel not yet handed to anyone (the opening commands).
    pub(crate) fn try_send(&self, item: VesItem) -> bool {
        self.push(item).is_ok()
    }

    /// Ends the channel after what it holds: `farewell` is queued behind it as the last
    /// line and nothing more can be queued. When the queue has no room for the farewell,
    /// the channel is handed back (to be closed at once instead).
    pub(crate) fn finish(self, farewell: Command) -> Result<Finishing, ChannelTx> {
        if self.push(VesItem::Command(farewell)).is_err() {
            return Err(self);
        }
        Ok(Finishing { rx: self.rx, cancel: self.cancel, epoch: self.epoch })
    }

    /// Ends the channel, writing `farewell` as its last line. Returns the queue, closed,
    /// with whatever it still holds (the caller bounces its frames), unless the stream
    /// already gave it back.
    pub(crate) fn close(self, farewell: Option<Command>) -> Option<QueueReceiver<VesItem>> {
        if let Some(cmd) = farewell {
            *lock(&self.farewell) = Some(cmd);
        }
        self.cancel.cancel();
        let mut rx = lock(&self.rx).take()?;
        rx.close();
        Some(rx)
    }
}

/// A channel that writes what it holds, then its farewell, then ends ([`ChannelTx::finish`]).
pub(crate) struct Finishing {
    rx: RxSlot,
    cancel: CancellationToken,
    pub(crate) epoch: u64,
}

impl Finishing {
    /// Ends it now: the stream stops, and what it did not write is returned, closed.
    pub(crate) fn abort(self) -> Option<QueueReceiver<VesItem>> {
        self.cancel.cancel();
        let mut rx = lock(&self.rx).take()?;
        rx.close();
        Some(rx)
    }
}

/// What the router and the data channel see of one VES session.
pub struct VesInbox {
    pub ves_id: VesId,
    /// Unique per session, to tell a replaced session from its successor.
    pub session: u64,
    channel: RwLock<Option<ChannelTx>>,
    /// Devices of this VES's users: the ownership check of every VES → device frame.
    /// Hashed with foldhash rather than SipHash (a lookup per frame; the ids come from the
    /// accounts database, not from a peer).
    devices: RwLock<hashbrown::HashMap<DeviceId, UserId>>,
    users: RwLock<BTreeMap<UserId, VesUserState>>,
    ready: RwLock<HashSet<UserId>>,
    /// Bumped each time the command channel hands bytes to the HTTP layer; the session
    /// compares it between ticks to detect a stalled consumer.
    progress: AtomicU64,
    hb_seq: AtomicU64,
    /// The RTS version the VES asked for when it last attached.
    protocol_version: AtomicU32,
    fetches: super::fetches::FetchSlots,
    /// The worker serving the command channel, where this VES's device sessions start.
    home: Mutex<Option<Home>>,
}

impl VesInbox {
    pub fn new(ves_id: VesId, session: u64, users: Vec<VesUserState>, devices: Vec<(DeviceId, UserId)>) -> Self {
        Self {
            ves_id,
            session,
            channel: RwLock::new(None),
            devices: RwLock::new(devices.into_iter().collect()),
            users: RwLock::new(users.into_iter().map(|u| (u.user.user_id, u)).collect()),
            ready: RwLock::new(HashSet::new()),
            progress: AtomicU64::new(0),
            hb_seq: AtomicU64::new(0),
            protocol_version: AtomicU32::new(1),
            fetches: super::fetches::FetchSlots::default(),
            home: Mutex::new(None),
        }
    }

    /// Records the worker that serves the command channel (called by the channel's HTTP
    /// handler on that worker, at each attach).
    pub fn set_home(&self, home: Home) {
        *lock(&self.home) = Some(home);
    }

    /// The worker serving the command channel, once one attached.
    pub fn home(&self) -> Option<Home> {
        lock(&self.home).clone()
    }

    /// The RTS version of the session (what the VES asked for when it last attached).
    pub fn protocol_version(&self) -> u32 {
        self.protocol_version.load(Ordering::Relaxed)
    }

    pub(crate) fn set_protocol_version(&self, version: u32) {
        self.protocol_version.store(version, Ordering::Relaxed);
    }

    /// Hands a fetch to the VES as a `Fetch` command, in a slot of its own until the
    /// answer or the deadline (at most `limit` in flight). Refused at once when the VES
    /// speaks no fetches, does not serve the user, is busy or detached.
    pub fn start_fetch(
        &self,
        call: FetchCall,
        origin: NodeId,
        limit: usize,
        metrics: &Metrics,
    ) -> Result<(), FetchRefusal> {
        if self.protocol_version() < FETCH_VERSION {
            return Err(FetchRefusal::Unsupported);
        }
        if !read(&self.users).contains_key(&call.user_id) {
            return Err(FetchRefusal::NotServed);
        }
        if !self.attached() {
            return Err(FetchRefusal::Offline);
        }
        let now = std::time::Instant::now();
        let id = call.request_id;
        // A deadline from another node is bounded: a slot never outlives two minutes.
        let timeout = Duration::from_millis(call.timeout_ms).min(Duration::from_secs(120));
        self.fetches.take(id, origin, now + timeout, limit, now)?;
        let cmd = Command::Fetch {
            request_id: id,
            user_id: call.user_id,
            timeout_ms: call.timeout_ms,
            request: call.request,
        };
        self.enqueue(VesItem::Command(cmd), metrics).map_err(|reason| {
            self.fetches.release(id);
            match reason {
                UndeliverableReason::PeerOffline => FetchRefusal::Offline,
                _ => FetchRefusal::Busy,
            }
        })
    }

    /// The VES answered fetch `id`: its slot is free, and the node that waits for it is
    /// returned (none when the fetch is unknown or its deadline passed).
    pub fn finish_fetch(&self, id: RequestId) -> Option<NodeId> {
        self.fetches.finish(id, std::time::Instant::now())
    }

    /// The fetches still in flight as the session ends, and the nodes waiting for them.
    pub(crate) fn abandon_fetches(&self) -> Vec<(RequestId, NodeId)> {
        self.fetches.drain()
    }

    /// Whether a command channel is attached.
    pub fn attached(&self) -> bool {
        read(&self.channel).is_some()
    }

    /// Queues an item on the command channel. Refused at once when detached or full (a
    /// frame at the queue's capacity, anything else at twice it; see `ChannelTx::push`).
    pub fn enqueue(&self, item: VesItem, metrics: &Metrics) -> Result<(), UndeliverableReason> {
        let is_frame = matches!(item, VesItem::Frame { .. });
        let guard = read(&self.channel);
        let Some(ch) = guard.as_ref() else {
            return Err(UndeliverableReason::PeerOffline);
        };
        ch.push(item).map_err(|e| match e {
            TrySendError::Full(_) => {
                metrics.dropped(if is_frame { DropReason::QueueFull } else { DropReason::ControlQueueFull });
                UndeliverableReason::QueueFull
            }
            TrySendError::Closed(_) => UndeliverableReason::PeerOffline,
        })
    }

    fn command(&self, cmd: Command, metrics: &Metrics) {
        let _ = self.enqueue(VesItem::Command(cmd), metrics);
    }

    pub fn owns_device(&self, device_id: DeviceId) -> bool {
        read(&self.devices).contains_key(&device_id)
    }

    pub fn set_device(&self, device_id: DeviceId, user_id: UserId, present: bool) {
        let mut devices = write(&self.devices);
        if present {
            devices.insert(device_id, user_id);
        } else {
            devices.remove(&device_id);
        }
    }

    /// Adds (or refreshes) an active user and tells the VES.
    pub fn add_user(&self, state: VesUserState, metrics: &Metrics) {
        let cmds = user_commands(std::slice::from_ref(&state), false);
        write(&self.users).insert(state.user.user_id, state);
        for c in cmds {
            self.command(c, metrics);
        }
    }

    /// New alert filter rules or ConstantSync flag of an active user: kept for the next
    /// opening, and sent now as `FilterRules` and `ConstantSync` for that one user. A user
    /// this session does not serve is ignored (it gets its settings when activated).
    pub fn update_user_settings(
        &self,
        user_id: UserId,
        constant_sync: bool,
        filter_rules: Vec<FilterRule>,
        metrics: &Metrics,
    ) {
        let cmds = {
            let mut users = write(&self.users);
            let Some(state) = users.get_mut(&user_id) else { return };
            state.constant_sync = constant_sync;
            state.filter_rules = filter_rules;
            let cmds = user_commands(std::slice::from_ref(state), false);
            // The ActivateUsers line is for activation; a settings change sends the rest.
            cmds.into_iter().filter(|c| !matches!(c, Command::ActivateUsers { .. })).collect::<Vec<_>>()
        };
        for c in cmds {
            self.command(c, metrics);
        }
    }

    /// Removes a user (deleted or suspended) and its devices, and tells the VES.
    pub fn remove_user(&self, user_id: UserId, metrics: &Metrics) {
        write(&self.users).remove(&user_id);
        write(&self.ready).remove(&user_id);
        write(&self.devices).retain(|_, u| *u != user_id);
        self.command(Command::DeactivateUsers { user_ids: vec![user_id] }, metrics);
    }

    /// Whether the VES's StartupReport said it can serve `user_id`.
    pub fn is_ready(&self, user_id: UserId) -> bool {
        read(&self.ready).contains(&user_id)
    }

    /// Records a StartupReport (white paper §4.5 step 8).
    pub fn record_startup(&self, users: &[StartupUser]) -> StartupReportResponse {
        let active = read(&self.users);
        let mut ready = write(&self.ready);
        let mut resp = StartupReportResponse { ready: 0, unavailable: 0, unknown: Vec::new() };
        for u in users {
            if !active.contains_key(&u.user_id) {
                resp.unknown.push(u.user_id);
                continue;
            }
            match u.status {
                StartupStatus::Ready => {
                    ready.insert(u.user_id);
                    resp.ready += 1;
                }
                StartupStatus::Unavailable => {
                    ready.remove(&u.user_id);
                    resp.unavailable += 1;
                }
            }
        }
        resp
    }

    // -- for the session and its command stream ----------------------------------------

    /// The active users' commands, as a new channel opens with them (white paper §4.5
    /// steps 4–7): `ActivateUsers` (complete), `FilterRules`, `ConstantSync`.
    pub(crate) fn all_user_commands(&self) -> Vec<Command> {
        let users: Vec<VesUserState> = read(&self.users).values().cloned().collect();
        user_commands(&users, true)
    }

    /// The next heartbeat command.
    pub(crate) fn heartbeat(&self, interval: Duration) -> Command {
        Command::Heartbeat {
            seq: self.hb_seq.fetch_add(1, Ordering::Relaxed) + 1,
            next_in_seconds: interval.as_secs(),
            now: noc_protocol::clock::unix_ms_i64(),
        }
    }

    /// Makes `channel` the attached one; returns the one it replaces.
    pub(crate) fn attach(&self, channel: ChannelTx) -> Option<ChannelTx> {
        write(&self.channel).replace(channel)
    }

    /// Takes the attached channel: any (`epoch` `None`), or only the channel of `epoch`.
    pub(crate) fn detach(&self, epoch: Option<u64>) -> Option<ChannelTx> {
        let mut ch = write(&self.channel);
        if epoch.is_some_and(|e| ch.as_ref().is_none_or(|c| c.epoch != e)) {
            return None;
        }
        ch.take()
    }

    /// The attached channel's epoch and whether its queue holds anything.
    pub(crate) fn backlog(&self) -> Option<(u64, bool)> {
        read(&self.channel).as_ref().map(|c| (c.epoch, !c.tx.is_empty()))
    }

    /// How many chunks the command streams have handed to the HTTP layer.
    pub(crate) fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    pub(crate) fn made_progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}

fn user_commands(users: &[VesUserState], complete: bool) -> Vec<Command> {
    vec![
        Command::ActivateUsers { users: users.iter().map(|u| u.user.clone()).collect(), complete },
        Command::FilterRules {
            users: users
                .iter()
                .map(|u| UserFilterRules { user_id: u.user.user_id, rules: u.filter_rules.clone() })
                .collect(),
        },
        Command::ConstantSync {
            users: users
                .iter()
                .map(|u| ConstantSyncFlag { user_id: u.user.user_id, enabled: u.constant_sync })
                .collect(),
        },
    ]
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use noc_protocol::device::ForwardKind;

    use super::*;

    #[test]
    fn a_backlog_of_frames_leaves_room_for_the_answers_the_ves_waits_for() {
        let metrics = Metrics::new();
        let inbox = VesInbox::new(VesId::random(), 1, Vec::new(), Vec::new());
        let (tx, _rx) = channel(16, 1);
        assert!(inbox.attach(tx).is_none());
        let (device_id, user_id) = (DeviceId::random(), UserId::random());
        let frame =
            |frame_id| VesItem::Frame { device_id, user_id, frame_id, kind: ForwardKind::Data, payload: Bytes::new() };
        let dropped = |reason| metrics.value("noc_frames_dropped_total", &[("reason", reason)]);

        for frame_id in 0..16 {
            assert_eq!(inbox.enqueue(frame(frame_id), &metrics), Ok(()), "room for sixteen frames");
        }
        assert_eq!(inbox.enqueue(frame(16), &metrics), Err(UndeliverableReason::QueueFull));
        assert_eq!(dropped("queue_full"), 1.0, "the refused frame is counted; its device is told");

        let answers = (0..15).map(|frame_id| VesItem::Ack { device_id, frame_id }).chain([VesItem::Undeliverable {
            device_id,
            frame_id: 15,
            reason: UndeliverableReason::PeerDisconnected,
        }]);
        for answer in answers {
            assert_eq!(inbox.enqueue(answer, &metrics), Ok(()), "acknowledgements and notices take the reserve");
        }
        assert_eq!(
            inbox.enqueue(VesItem::Ack { device_id, frame_id: 16 }, &metrics),
            Err(UndeliverableReason::QueueFull),
            "the reserve is as large as the queue, no larger"
        );
        assert_eq!(dropped("control_queue_full"), 1.0);
        assert_eq!(inbox.enqueue(frame(17), &metrics), Err(UndeliverableReason::QueueFull));
        assert_eq!(dropped("queue_full"), 2.0);
    }
}
