//! The VES session actor: one per registered enterprise server (white paper §4).
//!
//! The session outlives its command channel: when the long-lived HTTP response drops, the
//! session is *detached* and waits `ReplyTime` for the VES to POST the event URL again
//! with the same KeyId/Key, keeping its registrations (users, device directory). Frames for
//! a detached session are refused at once with `peer_offline`, never buffered.
//!
//! Each attach opens a fresh bounded queue in the session's [`VesInbox`]; the
//! [`CommandStream`] that drains it into the HTTP response is the command channel's send
//! loop. The session owns the channel's lifecycle: when a channel ends (replaced, detached,
//! closed, or the session itself ends) the session takes its queue back and bounces the
//! frames still in it to their devices as undeliverable.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::QueueReceiver;
use actix::prelude::*;
use noc_cluster::VesItem;
use noc_protocol::rts::Command;
use noc_protocol::{CloseCode, UndeliverableReason};

use crate::close::CloseSession;
use crate::config::SessionConfig;
use crate::metrics::{DropReason, SessionKind};
use crate::router::{Router, VesHandle};
use crate::rts_sessions::{RtsSession, RtsSessions};
use crate::usage::SessionUsage;
use crate::ves::command_stream::{Attach, ChannelClosed, CommandStream};
use crate::ves::inbox::{self, ChannelTx, Finishing, VesInbox};

/// How long a closing command channel may take to write what it holds before its Close
/// (then what is left is bounced).
const FINISH_LIMIT: Duration = Duration::from_secs(3);

/// One actor per RTS session.
pub struct VesSession {
    session: Arc<RtsSession>,
    /// The channel writing its last lines before the session ends (a drain).
    finishing: Option<Finishing>,
    router: Arc<Router>,
    rts: Arc<RtsSessions>,
    cfg: Arc<SessionConfig>,
    epoch: u64,
    last_progress: u64,
    stalled: Duration,
    close_code: CloseCode,
    /// What the session's command channels relay, for the license's usage records.
    usage: Arc<SessionUsage>,
}

impl VesSession {
    pub fn new(session: Arc<RtsSession>, router: Arc<Router>, rts: Arc<RtsSessions>, cfg: Arc<SessionConfig>) -> Self {
        let usage = router.usage().ves_session(session.license_id, noc_protocol::clock::unix_ms_i64());
        Self {
            usage,
            session,
            finishing: None,
            router,
            rts,
            cfg,
            epoch: 0,
            last_progress: 0,
            stalled: Duration::ZERO,
            close_code: CloseCode::Normal,
        }
    }

    fn inbox(&self) -> &VesInbox {
        &self.session.inbox
    }

    /// Ends a channel, writing `farewell` as its last line, and bounces what it held.
    fn end_channel(&self, channel: ChannelTx, farewell: Option<Command>) {
        if let Some(rx) = channel.close(farewell) {
            bounce_queued(rx, &self.router);
        }
    }

    /// Ends the finishing channel (written, dropped by its peer, or out of time): what it
    /// did not write is bounced, and the session ends.
    fn end_finishing(&mut self, ctx: &mut Context<Self>) {
        if let Some(rx) = self.finishing.take().and_then(Finishing::abort) {
            bounce_queued(rx, &self.router);
        }
        ctx.stop();
    }

    fn detach(&mut self, ctx: &mut Context<Self>, epoch: u64) {
        let Some(channel) = self.inbox().detach(Some(epoch)) else { return };
        self.end_channel(channel, None);
        tracing::info!(ves = %self.inbox().ves_id, "command channel detached; waiting ReplyTime for a reconnect");
        ctx.run_later(self.cfg.ves_reply_time, move |act, ctx| {
            if act.epoch == epoch && !act.inbox().attached() {
                tracing::info!(ves = %act.inbox().ves_id, "ReplyTime elapsed without reconnect; session ends");
                act.close_code = CloseCode::IdleTimeout;
                ctx.stop();
            }
        });
    }

    /// The commands that open every command channel (white paper §4.5 steps 4–7), in the
    /// seed's order: Session, ActivateUsers, HB, FilterRules, ConstantSync.
    fn opening_commands(&self, resumed: bool) -> Vec<Command> {
        let inbox = self.inbox();
        let mut cmds = vec![Command::Session {
            key_id: self.session.key_id.clone(),
            ves_id: inbox.ves_id,
            heartbeat_interval_seconds: self.cfg.ves_heartbeat_interval.as_secs(),
            reply_time: self.cfg.ves_reply_time.as_secs(),
            resumed,
            protocol_version: inbox.protocol_version(),
        }];
        let mut per_user = inbox.all_user_commands().into_iter();
        cmds.extend(per_user.next());
        cmds.push(inbox.heartbeat(self.cfg.ves_heartbeat_interval));
        cmds.extend(per_user);
        cmds
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let Some((epoch, backlog)) = self.inbox().backlog() else { return };
        let progress = self.inbox().progress();
        if backlog && progress == self.last_progress {
            self.stalled += self.cfg.ves_heartbeat_interval;
            if self.stalled >= self.cfg.ves_write_stall_timeout {
                tracing::warn!(ves = %self.inbox().ves_id, "command channel stalled; closing it (slow consumer)");
                self.stalled = Duration::ZERO;
                self.detach(ctx, epoch);
                return;
            }
        } else {
            self.stalled = Duration::ZERO;
        }
        self.last_progress = progress;
        let hb = self.inbox().heartbeat(self.cfg.ves_heartbeat_interval);
        if self.inbox().enqueue(VesItem::Command(hb), self.router.metrics()).is_ok() {
            self.router.metrics().heartbeat_sent(SessionKind::Ves);
        }
    }
}

/// Closes a queue and tells the devices whose frames were in it.
fn bounce_queued(mut rx: QueueReceiver<VesItem>, router: &Router) {
    while let Some(item) = rx.try_recv() {
        if let VesItem::Frame { device_id, frame_id, .. } = item {
            router.metrics().dropped(DropReason::SessionClosed);
            router.bounce_to_device_sender(device_id, frame_id, UndeliverableReason::PeerDisconnected);
        }
    }
}

impl Actor for VesSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.router.metrics().session_opened(SessionKind::Ves);
        self.router.register_ves(VesHandle { inbox: self.session.inbox.clone(), control: ctx.address().recipient() });
        self.rts.insert_session(self.session.clone(), ctx.address().recipient());
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
        tracing::info!(ves = %self.inbox().ves_id, code = %self.close_code, "RTS session ended");
    }
}

impl Drop for VesSession {
    /// Also runs when a handler panicked: no dead session stays routable.
    fn drop(&mut self) {
        self.usage.end(noc_protocol::clock::unix_ms_i64());
        if let Some(channel) = self.inbox().detach(None) {
            self.end_channel(channel, None);
        }
        if let Some(rx) = self.finishing.take().and_then(Finishing::abort) {
            bounce_queued(rx, &self.router);
        }
        self.router.unregister_ves(self.inbox().ves_id, self.inbox().session);
        self.router.fetches_abandoned(self.inbox().abandon_fetches());
        self.rts.remove_session(&self.session.key_id, self.inbox().session);
        self.router.metrics().session_closed(SessionKind::Ves, self.close_code);
    }
}

impl Handler<Attach> for VesSession {
    type Result = Option<CommandStream>;

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> Option<CommandStream> {
        self.epoch += 1;
        self.inbox().set_protocol_version(msg.protocol_version);
        let (tx, rx) = inbox::channel(self.cfg.ves_send_queue_items.max(16), self.epoch);
        let presence = self
            .router
            .online_devices_of(self.inbox().ves_id)
            .into_iter()
            .map(|(device_id, user_id)| Command::DevicePresence { device_id, user_id, online: true });
        for cmd in self.opening_commands(msg.resumed).into_iter().chain(presence) {
            // The queue is new; commands beyond twice its capacity are dropped (and counted).
            if !tx.try_send(VesItem::Command(cmd)) {
                self.router.metrics().dropped(DropReason::ControlQueueFull);
            }
        }
        self.router.metrics().heartbeat_sent(SessionKind::Ves);
        if let Some(old) = self.inbox().attach(tx) {
            self.end_channel(old, None);
        }
        self.stalled = Duration::ZERO;
        Some(CommandStream::new(
            rx,
            self.session.inbox.clone(),
            self.router.metrics().clone(),
            self.usage.clone(),
            ctx.address().recipient(),
        ))
    }
}

impl Handler<ChannelClosed> for VesSession {
    type Result = ();

    fn handle(&mut self, msg: ChannelClosed, ctx: &mut Context<Self>) {
        if self.finishing.as_ref().is_some_and(|f| f.epoch == msg.epoch) {
            self.end_finishing(ctx);
            return;
        }
        self.detach(ctx, msg.epoch);
    }
}

impl Handler<CloseSession> for VesSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        if self.finishing.is_some() {
            return; // already writing its last lines
        }
        self.close_code = msg.code;
        let cmd =
            Command::Close { code: msg.code, message: msg.message, reconnect_after_ms: msg.reconnect_after_ms as u64 };
        let Some(channel) = self.inbox().detach(None) else {
            ctx.stop();
            return;
        };
        // A drained session writes what its channel holds (devices' frames, their last
        // acknowledgements, undeliverable notices) before its Close: the VES resumes
        // elsewhere without anything to resend. Other closes end the channel at once.
        if msg.code == CloseCode::ServerDraining {
            match channel.finish(cmd) {
                Ok(finishing) => {
                    self.finishing = Some(finishing);
                    ctx.run_later(FINISH_LIMIT, |act, ctx| act.end_finishing(ctx));
                }
                Err(channel) => {
                    let cmd = Command::Close {
                        code: msg.code,
                        message: CloseCode::ServerDraining.as_str().into(),
                        reconnect_after_ms: msg.reconnect_after_ms as u64,
                    };
                    self.end_channel(channel, Some(cmd));
                    ctx.stop();
                }
            }
            return;
        }
        self.end_channel(channel, Some(cmd));
        ctx.stop();
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
    use crate::metrics::Metrics;
    use crate::queue::{self, QueueReceiver};
    use crate::router::{DeviceHandle, DeviceOut};
    use crate::test_stubs::SessionStub;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use noc_cluster::{DeviceItem, MemoryCluster, NodeId};
    use noc_protocol::device::ForwardKind;
    use noc_protocol::{DeviceId, LicenseId, UserId, VesId};

    struct Fixture {
        router: Arc<Router>,
        ves_id: VesId,
        ves: Addr<VesSession>,
        device_id: DeviceId,
        device_rx: QueueReceiver<DeviceOut>,
        /// The device session's stand-in (the router holds it weakly).
        _device: Addr<SessionStub>,
    }

    /// A VES session (not attached yet) and one of its devices registered in the router.
    async fn fixture() -> Fixture {
        let metrics = Arc::new(Metrics::new());
        let router = Router::new(Arc::new(MemoryCluster::single(NodeId::new("test"), 16)), metrics.clone());
        let cfg = Arc::new(SessionConfig::default());
        let rts = RtsSessions::new(cfg.ves_reply_time, metrics);
        let (ves_id, ves) = session(&router, &rts, &cfg);
        let (device_id, user_id) = (DeviceId::random(), UserId::random());
        let (tx, device_rx) = queue::bounded(16);
        let device = SessionStub.start();
        let control = device.downgrade().recipient();
        router.register_device(
            device_id,
            DeviceHandle { session: router.next_session_id(), user_id, ves_id, tx, control },
        );
        tokio::task::yield_now().await;
        Fixture { router, ves_id, ves, device_id, device_rx, _device: device }
    }

    impl Fixture {
        fn frame_from_device(&self, frame_id: u64) {
            let item = VesItem::Frame {
                device_id: self.device_id,
                user_id: UserId::random(),
                frame_id,
                kind: ForwardKind::Data,
                payload: Bytes::from_static(b"opaque"),
            };
            self.router.device_to_ves(self.ves_id, item).expect("queued on the command channel");
        }

        /// Undeliverable notices the device received, skipping anything else.
        async fn device_notices(&mut self) -> Vec<(u64, UndeliverableReason)> {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            let mut out = Vec::new();
            while let Some(item) = self.device_rx.try_recv() {
                if let DeviceOut::Item(DeviceItem::Undeliverable { frame_id, reason }) = item {
                    out.push((frame_id, reason));
                }
            }
            out
        }
    }

    #[actix_rt::test]
    async fn frames_left_on_a_dropped_command_channel_are_bounced_by_the_session() {
        let mut f = fixture().await;
        let stream =
            f.ves.send(Attach { resumed: false, protocol_version: 1 }).await.expect("mailbox").expect("attached");
        f.frame_from_device(1);
        f.frame_from_device(2);
        drop(stream);
        assert_eq!(
            f.device_notices().await,
            vec![(1, UndeliverableReason::PeerDisconnected), (2, UndeliverableReason::PeerDisconnected)]
        );
        assert_eq!(f.router.ves_session(f.ves_id).map(|h| h.inbox.attached()), Some(false), "detached, not ended");
    }

    #[actix_rt::test]
    async fn a_new_channel_bounces_what_the_one_it_replaces_still_held() {
        let mut f = fixture().await;
        let _first =
            f.ves.send(Attach { resumed: false, protocol_version: 1 }).await.expect("mailbox").expect("attached");
        f.frame_from_device(7);
        let _second =
            f.ves.send(Attach { resumed: true, protocol_version: 1 }).await.expect("mailbox").expect("attached");
        assert_eq!(f.device_notices().await, vec![(7, UndeliverableReason::PeerDisconnected)]);
        f.frame_from_device(8);
        assert!(f.device_notices().await.is_empty(), "the new channel holds frame 8");
    }

    #[actix_rt::test]
    async fn a_drained_session_writes_what_it_holds_before_its_close() {
        let mut f = fixture().await;
        let mut stream =
            f.ves.send(Attach { resumed: false, protocol_version: 1 }).await.expect("mailbox").expect("attached");
        let _opening = stream.next().await.expect("opening chunk").expect("bytes");
        f.frame_from_device(1);
        f.frame_from_device(2);
        f.ves.send(CloseSession::new(CloseCode::ServerDraining, "draining")).await.expect("mailbox");
        let mut lines = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("bytes");
            for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                lines.push(serde_json::from_slice::<Command>(line).expect("json"));
            }
        }
        let frames: Vec<u64> = lines
            .iter()
            .filter_map(|c| match c {
                Command::DeviceFrame { frame_id, .. } => Some(*frame_id),
                _ => None,
            })
            .collect();
        assert_eq!(frames, vec![1, 2], "written, not bounced");
        assert!(matches!(lines.last(), Some(Command::Close { code: CloseCode::ServerDraining, .. })), "{lines:?}");
        assert!(f.device_notices().await.is_empty());
        // The stream ended: the session goes, once the stream is dropped.
        drop(stream);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(f.router.ves_session(f.ves_id).is_none());
    }

    #[actix_rt::test]
    async fn a_closed_session_writes_its_farewell_last_and_bounces_the_rest() {
        let mut f = fixture().await;
        let mut stream =
            f.ves.send(Attach { resumed: false, protocol_version: 1 }).await.expect("mailbox").expect("attached");
        // Read the opening commands, then leave a frame in the queue.
        let opening = stream.next().await.expect("opening chunk").expect("bytes");
        assert!(opening.starts_with(br#"{"Command":"Session""#));
        f.frame_from_device(3);
        f.ves.send(CloseSession::new(CloseCode::Replaced, "taken over")).await.expect("mailbox");
        let last = stream.next().await.expect("farewell chunk").expect("bytes");
        let cmd: Command = serde_json::from_slice(last.strip_suffix(b"\n").expect("one line")).expect("json");
        assert!(matches!(cmd, Command::Close { code: CloseCode::Replaced, .. }), "{cmd:?}");
        assert!(stream.next().await.is_none(), "nothing after the farewell");
        assert_eq!(f.device_notices().await, vec![(3, UndeliverableReason::PeerDisconnected)]);
    }

    fn session(router: &Arc<Router>, rts: &Arc<RtsSessions>, cfg: &Arc<SessionConfig>) -> (VesId, Addr<VesSession>) {
        let ves_id = VesId::random();
        let inbox = Arc::new(VesInbox::new(ves_id, router.next_session_id(), Vec::new(), Vec::new()));
        let session = Arc::new(RtsSession::new(
            inbox,
            LicenseId::random(),
            noc_protocol::secrets::random_hex::<16>(),
            vec![0; 32],
        ));
        (ves_id, VesSession::new(session, router.clone(), rts.clone(), cfg.clone()).start())
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
}
