//! The VES session: one actor per registered enterprise server (white paper §4).
//!
//! The session outlives its command channel: when the long-lived HTTP response drops, the
//! session is *detached* and waits `ReplyTime` for the VES to POST the event URL again
//! with the same KeyId/Key, keeping its registrations (users, device directory). Frames for
//! a detached session are refused at once with `peer_offline`, never buffered.
//!
//! Each attach opens a fresh bounded queue; the [`CommandStream`] that drains it into the
//! HTTP response is the command channel's send loop. Frames still queued when a channel
//! ends are bounced to their devices as undeliverable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use noc_cluster::VesItem;
use noc_protocol::device::ForwardKind;
use noc_protocol::rts::{
    ActiveUser, Command, ConstantSyncFlag, FilterRule, StartupReportResponse, StartupStatus, StartupUser,
    UserFilterRules,
};
use noc_protocol::{CloseCode, DeviceId, LicenseId, UndeliverableReason, UserId, VesId};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::metrics::{DropReason, Metrics, SessionKind};
use crate::{CloseSession, Router, RtsSessions, SessionConfig, VesHandle};

/// An active user as the VES sees it: identity plus the per-user flags sent at connect.
#[derive(Clone, Debug, PartialEq)]
pub struct VesUserState {
    pub user: ActiveUser,
    pub constant_sync: bool,
    pub filter_rules: Vec<FilterRule>,
}

/// The receiving end of a command channel's queue, shared by its stream and the session
/// actor: when the actor ends a channel it takes the queue back at once and bounces what is
/// in it, even if the HTTP layer has stopped polling the stream (a stalled peer), so a
/// stalled VES pins no frames.
type RxSlot = Arc<std::sync::Mutex<Option<mpsc::Receiver<VesItem>>>>;

struct ChannelTx {
    tx: mpsc::Sender<VesItem>,
    rx: RxSlot,
    cancel: CancellationToken,
    /// The last line to write when the channel is cancelled (a `Close` command). Kept out of
    /// the queue so that a full queue cannot lose it.
    farewell: Arc<std::sync::Mutex<Option<Command>>>,
    epoch: u64,
}

impl ChannelTx {
    /// Ends the channel, writing `farewell` as its last line; frames still queued are
    /// bounced to their devices.
    fn close(self, farewell: Option<Command>, router: &Router) {
        if let Some(cmd) = farewell {
            *self.farewell.lock().unwrap_or_else(|p| p.into_inner()) = Some(cmd);
        }
        self.cancel.cancel();
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            bounce_queued(rx, router);
        }
    }
}

/// Closes a queue and tells the devices whose frames were in it.
fn bounce_queued(mut rx: mpsc::Receiver<VesItem>, router: &Router) {
    rx.close();
    while let Ok(item) = rx.try_recv() {
        if let VesItem::Frame { device_id, frame_id, .. } = item {
            router.metrics().dropped(DropReason::SessionClosed);
            router.bounce_to_device_sender(device_id, frame_id, UndeliverableReason::PeerDisconnected);
        }
    }
}

/// State of a VES session shared between its actor, its command channel and the data
/// channel handlers on any worker thread.
pub struct VesShared {
    pub ves_id: VesId,
    pub license_id: LicenseId,
    pub key_id: String,
    /// Unique per session, to tell a replaced session from its successor.
    pub session: u64,
    key_hash: Vec<u8>,
    channel: RwLock<Option<ChannelTx>>,
    /// Devices of this VES's users: the ownership check of every VES → device frame.
    devices: RwLock<HashMap<DeviceId, UserId>>,
    users: RwLock<BTreeMap<UserId, VesUserState>>,
    ready: RwLock<HashSet<UserId>>,
    /// Bumped each time the command channel hands bytes to the HTTP layer; the actor
    /// compares it between ticks to detect a stalled consumer.
    progress: AtomicU64,
    hb_seq: AtomicU64,
}

impl VesShared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ves_id: VesId,
        license_id: LicenseId,
        key_id: String,
        key_hash: Vec<u8>,
        session: u64,
        users: Vec<VesUserState>,
        devices: Vec<(DeviceId, UserId)>,
    ) -> Self {
        Self {
            ves_id,
            license_id,
            key_id,
            session,
            key_hash,
            channel: RwLock::new(None),
            devices: RwLock::new(devices.into_iter().collect()),
            users: RwLock::new(users.into_iter().map(|u| (u.user.user_id, u)).collect()),
            ready: RwLock::new(HashSet::new()),
            progress: AtomicU64::new(0),
            hb_seq: AtomicU64::new(0),
        }
    }

    /// Constant-time check of the session key presented on the data channel.
    pub fn key_matches(&self, key: &str) -> bool {
        noc_protocol::secrets::token_matches(key.as_bytes(), &self.key_hash)
    }

    /// Whether a command channel is attached.
    pub fn attached(&self) -> bool {
        read(&self.channel).is_some()
    }

    /// Queues an item on the command channel. Refused at once when detached or full.
    pub fn enqueue(&self, item: VesItem, metrics: &Metrics) -> Result<(), UndeliverableReason> {
        let is_frame = matches!(item, VesItem::Frame { .. });
        let guard = read(&self.channel);
        let Some(ch) = guard.as_ref() else {
            return Err(UndeliverableReason::PeerOffline);
        };
        ch.tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                metrics.dropped(if is_frame { DropReason::QueueFull } else { DropReason::ControlQueueFull });
                UndeliverableReason::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => UndeliverableReason::PeerOffline,
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

    /// The commands that open every command channel (white paper §4.5 steps 4–7).
    fn opening_commands(&self, cfg: &SessionConfig, resumed: bool) -> Vec<Command> {
        let mut cmds = vec![Command::Session {
            key_id: self.key_id.clone(),
            ves_id: self.ves_id,
            heartbeat_interval_seconds: cfg.ves_heartbeat_interval.as_secs(),
            reply_time: cfg.ves_reply_time.as_secs(),
            resumed,
        }];
        let users: Vec<VesUserState> = read(&self.users).values().cloned().collect();
        let mut per_user = user_commands(&users, true).into_iter();
        // ActivateUsers, then HB, then filter rules and ConstantSync flags: the seed's order.
        cmds.extend(per_user.next());
        cmds.push(self.heartbeat(cfg));
        cmds.extend(per_user);
        cmds
    }

    fn heartbeat(&self, cfg: &SessionConfig) -> Command {
        Command::Heartbeat {
            seq: self.hb_seq.fetch_add(1, Ordering::Relaxed) + 1,
            next_in_seconds: cfg.ves_heartbeat_interval.as_secs(),
            now: noc_now_ms(),
        }
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

fn noc_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------

/// Attach a new command channel; answers with the stream to serve as the HTTP body.
#[derive(Message)]
#[rtype(result = "Option<CommandStream>")]
pub struct Attach {
    pub resumed: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct ChannelClosed {
    epoch: u64,
}

/// One actor per RTS session.
pub struct VesSession {
    shared: Arc<VesShared>,
    router: Arc<Router>,
    rts: Arc<RtsSessions>,
    cfg: Arc<SessionConfig>,
    epoch: u64,
    last_progress: u64,
    stalled: Duration,
    close_code: CloseCode,
}

impl VesSession {
    pub fn new(shared: Arc<VesShared>, router: Arc<Router>, rts: Arc<RtsSessions>, cfg: Arc<SessionConfig>) -> Self {
        Self {
            shared,
            router,
            rts,
            cfg,
            epoch: 0,
            last_progress: 0,
            stalled: Duration::ZERO,
            close_code: CloseCode::Normal,
        }
    }

    fn detach(&mut self, ctx: &mut Context<Self>, epoch: u64) {
        let mut ch = write(&self.shared.channel);
        if ch.as_ref().is_some_and(|c| c.epoch == epoch) {
            let taken = ch.take();
            drop(ch);
            if let Some(c) = taken {
                c.close(None, &self.router);
            }
            tracing::info!(ves = %self.shared.ves_id, "command channel detached; waiting ReplyTime for a reconnect");
            ctx.run_later(self.cfg.ves_reply_time, move |act, ctx| {
                if act.epoch == epoch && !act.shared.attached() {
                    tracing::info!(ves = %act.shared.ves_id, "ReplyTime elapsed without reconnect; session ends");
                    act.close_code = CloseCode::IdleTimeout;
                    ctx.stop();
                }
            });
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let (stalled_queue, epoch) = {
            let ch = read(&self.shared.channel);
            match ch.as_ref() {
                Some(c) => (c.tx.capacity() < c.tx.max_capacity(), c.epoch),
                None => return,
            }
        };
        let progress = self.shared.progress.load(Ordering::Relaxed);
        if stalled_queue && progress == self.last_progress {
            self.stalled += self.cfg.ves_heartbeat_interval;
            if self.stalled >= self.cfg.ves_write_stall_timeout {
                tracing::warn!(ves = %self.shared.ves_id, "command channel stalled; closing it (slow consumer)");
                self.stalled = Duration::ZERO;
                self.detach(ctx, epoch);
                return;
            }
        } else {
            self.stalled = Duration::ZERO;
        }
        self.last_progress = progress;
        let hb = self.shared.heartbeat(&self.cfg);
        if self.shared.enqueue(VesItem::Command(hb), self.router.metrics()).is_ok() {
            self.router.metrics().heartbeat_sent(SessionKind::Ves);
        }
    }
}

impl Actor for VesSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.router.metrics().session_opened(SessionKind::Ves);
        self.router.register_ves(VesHandle { shared: self.shared.clone(), control: ctx.address().recipient() });
        self.rts.insert_session(self.shared.clone(), ctx.address());
        ctx.run_interval(self.cfg.ves_heartbeat_interval, |act, ctx| act.tick(ctx));
        // A session is created by its first event-URL POST; if that channel never attaches,
        // ReplyTime still bounds its life.
        ctx.run_later(self.cfg.ves_reply_time, |act, ctx| {
            if act.epoch == 0 {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        tracing::info!(ves = %self.shared.ves_id, code = %self.close_code, "RTS session ended");
    }
}

impl Drop for VesSession {
    /// Also runs when a handler panicked: no dead session stays routable.
    fn drop(&mut self) {
        let taken = write(&self.shared.channel).take();
        if let Some(c) = taken {
            c.close(None, &self.router);
        }
        self.router.unregister_ves(self.shared.ves_id, self.shared.session);
        self.rts.remove_session(&self.shared.key_id, self.shared.session);
        self.router.metrics().session_closed(SessionKind::Ves, self.close_code);
    }
}

impl Handler<Attach> for VesSession {
    type Result = Option<CommandStream>;

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> Option<CommandStream> {
        self.epoch += 1;
        let epoch = self.epoch;
        let (tx, rx) = mpsc::channel(self.cfg.ves_send_queue_items.max(16));
        let rx: RxSlot = Arc::new(std::sync::Mutex::new(Some(rx)));
        let cancel = CancellationToken::new();
        let presence = self
            .router
            .online_devices_of(self.shared.ves_id)
            .into_iter()
            .map(|(device_id, user_id)| Command::DevicePresence { device_id, user_id, online: true });
        for cmd in self.shared.opening_commands(&self.cfg, msg.resumed).into_iter().chain(presence) {
            // The queue is new; presence beyond its capacity is dropped (and counted).
            if tx.try_send(VesItem::Command(cmd)).is_err() {
                self.router.metrics().dropped(DropReason::ControlQueueFull);
            }
        }
        self.router.metrics().heartbeat_sent(SessionKind::Ves);
        let farewell = Arc::new(std::sync::Mutex::new(None));
        let old = write(&self.shared.channel).replace(ChannelTx {
            tx,
            rx: rx.clone(),
            cancel: cancel.clone(),
            farewell: farewell.clone(),
            epoch,
        });
        if let Some(old) = old {
            old.close(None, &self.router);
        }
        self.stalled = Duration::ZERO;
        Some(CommandStream {
            rx,
            cancelled: Box::pin(cancel.cancelled_owned()),
            farewell,
            shared: self.shared.clone(),
            router: self.router.clone(),
            session: ctx.address(),
            epoch,
            done: false,
        })
    }
}

impl Handler<ChannelClosed> for VesSession {
    type Result = ();

    fn handle(&mut self, msg: ChannelClosed, ctx: &mut Context<Self>) {
        self.detach(ctx, msg.epoch);
    }
}

impl Handler<CloseSession> for VesSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.close_code = msg.code;
        let cmd =
            Command::Close { code: msg.code, message: msg.message, reconnect_after_ms: msg.reconnect_after_ms as u64 };
        let taken = write(&self.shared.channel).take();
        if let Some(c) = taken {
            c.close(Some(cmd), &self.router);
        }
        ctx.stop();
    }
}

// ---------------------------------------------------------------------------------------
// The command channel's send loop
// ---------------------------------------------------------------------------------------

/// Most bytes handed to the HTTP layer in one chunk.
const CHUNK_BYTES: usize = 32 * 1024;

/// The body of the command-channel response: NDJSON lines drained from the session queue.
pub struct CommandStream {
    rx: RxSlot,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    farewell: Arc<std::sync::Mutex<Option<Command>>>,
    shared: Arc<VesShared>,
    router: Arc<Router>,
    session: Addr<VesSession>,
    epoch: u64,
    done: bool,
}

impl CommandStream {
    fn encode(item: &VesItem, buf: &mut BytesMut) {
        match item {
            VesItem::Frame { device_id, user_id, frame_id, kind, payload } => {
                encode_frame_line(buf, *device_id, *user_id, *frame_id, *kind, payload)
            }
            VesItem::Ack { device_id, frame_id } => {
                write_json(buf, &Command::Ack { device_id: *device_id, frame_id: *frame_id })
            }
            VesItem::Undeliverable { device_id, frame_id, reason } => {
                write_json(buf, &Command::Undeliverable { device_id: *device_id, frame_id: *frame_id, reason: *reason })
            }
            VesItem::Command(c) => write_json(buf, c),
        }
    }

    /// Moves whatever is ready from the queue into one chunk.
    fn fill(&mut self, cx: &mut TaskContext<'_>, buf: &mut BytesMut) {
        let slot = self.rx.clone();
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rx) = guard.as_mut() else {
            // The session took the queue back: this channel is over.
            self.done = true;
            return;
        };
        let metrics = self.router.metrics();
        while buf.len() < CHUNK_BYTES {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => {
                    match &item {
                        VesItem::Frame { payload, .. } => {
                            metrics.device_to_ves.frames.inc();
                            metrics.device_to_ves.bytes.inc_by(payload.len() as u64);
                        }
                        VesItem::Ack { .. } => metrics.device_to_ves.acks.inc(),
                        _ => {}
                    }
                    Self::encode(&item, buf);
                }
                Poll::Ready(None) => {
                    self.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
}

fn write_json(buf: &mut BytesMut, cmd: &Command) {
    let mut w = buf.writer();
    if serde_json::to_writer(&mut w, cmd).is_ok() {
        let _ = w.write_all(b"\n");
    }
}

/// `DeviceFrame` written by hand: the payload is base64-encoded straight into the chunk.
fn encode_frame_line(
    buf: &mut BytesMut,
    device_id: DeviceId,
    user_id: UserId,
    frame_id: u64,
    kind: ForwardKind,
    payload: &Bytes,
) {
    use base64::Engine;
    let mut w = buf.writer();
    let _ = write!(
        w,
        "{{\"Command\":\"DeviceFrame\",\"DeviceId\":\"{device_id}\",\"UserId\":\"{user_id}\",\"FrameId\":{frame_id},\"Kind\":\"{}\",\"Payload\":\"",
        kind.as_str()
    );
    let buf = w.into_inner();
    let start = buf.len();
    let n = base64::encoded_len(payload.len(), true).unwrap_or(0);
    buf.resize(start + n, 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(payload, &mut buf[start..]).unwrap_or(0);
    buf.truncate(start + written);
    buf.put_slice(b"\"}\n");
}

impl Stream for CommandStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut buf = BytesMut::new();
        if self.cancelled.as_mut().poll(cx).is_ready() {
            // The channel ends: only the farewell line is still written. Whatever is still
            // queued is bounced to its senders when the stream drops.
            self.done = true;
            if let Some(cmd) = self.farewell.lock().unwrap_or_else(|p| p.into_inner()).take() {
                write_json(&mut buf, &cmd);
            }
        } else {
            self.fill(cx, &mut buf);
        }
        if !buf.is_empty() {
            self.shared.progress.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(buf.freeze())));
        }
        if self.done { Poll::Ready(None) } else { Poll::Pending }
    }
}

impl Drop for CommandStream {
    fn drop(&mut self) {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            bounce_queued(rx, &self.router);
        }
        self.session.do_send(ChannelClosed { epoch: self.epoch });
    }
}

/// Test hook: makes the session's handler panic, to check that a crashing VES session
/// takes nothing else down.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

#[cfg(test)]
impl Handler<Crash> for VesSession {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("injected crash");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use noc_cluster::{MemoryCluster, NodeId};

    fn session(router: &Arc<Router>, rts: &Arc<RtsSessions>, cfg: &Arc<SessionConfig>) -> (VesId, Addr<VesSession>) {
        let ves_id = VesId::random();
        let shared = Arc::new(VesShared::new(
            ves_id,
            LicenseId::random(),
            noc_protocol::secrets::random_hex::<16>(),
            vec![0; 32],
            router.next_session_id(),
            Vec::new(),
            Vec::new(),
        ));
        (ves_id, VesSession::new(shared, router.clone(), rts.clone(), cfg.clone()).start())
    }

    #[actix_rt::test]
    async fn a_crashing_ves_session_takes_nothing_else_down() {
        let metrics = Arc::new(Metrics::new());
        let router = Router::new(Arc::new(MemoryCluster::single(NodeId::new("test"), 16)), metrics.clone());
        let cfg = Arc::new(SessionConfig::default());
        let rts = RtsSessions::new(cfg.ves_reply_time, metrics.clone());
        let (crashing, addr) = session(&router, &rts, &cfg);
        let (healthy, _healthy_addr) = session(&router, &rts, &cfg);
        tokio::task::yield_now().await;
        assert_eq!(router.ves_sessions(), 2);

        addr.do_send(Crash);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The crashed session is unregistered (its Drop ran) and counted as closed ...
        assert!(router.ves_session(crashing).is_none());
        assert_eq!(router.ves_sessions(), 1);
        assert_eq!(metrics.value("noc_sessions", &[("kind", "ves")]), 1.0);
        // ... and the other one is still routable.
        assert!(router.ves_session(healthy).is_some());
    }

    #[test]
    fn hand_written_frame_line_is_the_documented_json() {
        let mut buf = BytesMut::new();
        let (d, u) = (DeviceId::random(), UserId::random());
        encode_frame_line(&mut buf, d, u, 42, ForwardKind::KeyExchange, &Bytes::from_static(b"\x00\x01opaque"));
        assert_eq!(buf.last(), Some(&b'\n'));
        let cmd: Command = serde_json::from_slice(&buf[..buf.len() - 1]).expect("valid JSON");
        assert_eq!(
            cmd,
            Command::DeviceFrame {
                device_id: d,
                user_id: u,
                frame_id: 42,
                kind: ForwardKind::KeyExchange,
                payload: noc_protocol::rts::encode_payload(b"\x00\x01opaque"),
            }
        );
    }
}
