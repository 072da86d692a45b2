//! The device session: one actor per authenticated device connection (white paper §7.2).
//!
//! The gateway does the TLS accept, hello and authentication under one deadline, then
//! hands the connection here. From then on the actor is the connection's owner and read
//! loop (frames arrive as a stream in its context), and a task of its own runs the send
//! loop (`device_writer.rs`), draining a bounded queue. A device whose socket stops
//! accepting bytes for the write-stall timeout is disconnected; frames still queued are
//! bounced to their VES as undeliverable, so nothing accepted is lost silently.

use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use bytes::BytesMut;
use noc_cluster::{DeviceItem, VesItem};
use noc_protocol::clock::unix_ms_i64;
use noc_protocol::device::{CERT_AUTH_VERSION, Frame, FrameCodec, FrameError};
use noc_protocol::{CloseCode, DeviceId, LicenseId, RenewalRefusal, UserId, VesId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::close::CloseSession;
use crate::config::SessionConfig;
use crate::device_heartbeats::{self, Beat};
use crate::device_reader::FrameReader;
use crate::device_writer::{Owner, SendLoop, WriterFailed};
use crate::metrics::{Direction, DropReason, SessionKind};
use crate::queue::{self, QueueSender};
use crate::router::Router;
use crate::router::{DeviceHandle, DeviceOut};
use crate::usage::SessionUsage;

/// Who an authenticated device connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSessionInfo {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub ves_id: VesId,
    /// The user's license, whose usage the session counts.
    pub license_id: LicenseId,
    /// The device-channel version negotiated in HELLO (version 3 may renew certificates).
    pub version: u16,
}

/// Test hook: makes the session's handler panic, to check that a crashing session
/// takes nothing else down.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

#[cfg(test)]
impl Handler<Crash> for DeviceSession {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("injected crash");
    }
}

/// One actor per device connection.
pub struct DeviceSession {
    info: DeviceSessionInfo,
    session: u64,
    router: Arc<Router>,
    cfg: Arc<SessionConfig>,
    tx: QueueSender<DeviceOut>,
    /// Tells the send loop to stop, with the CLOSE frame to write. Boxed: the channel keeps
    /// room for its value for the session's whole life (64 bytes for a `Frame`).
    shutdown: Option<oneshot::Sender<Option<Box<Frame>>>>,
    usage: Arc<SessionUsage>,
    /// Shared with the worker's heartbeat wheel, which ticks the session.
    beat: Rc<Beat<DeviceSession>>,
    close: CloseSession,
    /// Whether to send a CLOSE frame: not when the peer is already gone.
    send_close: bool,
    /// This session asked for a certificate already (one CERT_RENEW per connection).
    renewed: bool,
}

impl DeviceSession {
    /// Runs an authenticated connection as a session on the current arbiter.
    /// `read_buf` holds bytes the handshake already read past the AUTH frame.
    pub fn start<S>(
        io: S,
        read_buf: BytesMut,
        info: DeviceSessionInfo,
        router: Arc<Router>,
        cfg: Arc<SessionConfig>,
    ) -> Addr<DeviceSession>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (reader, writer) = tokio::io::split(io);
        let (tx, rx) = queue::bounded(cfg.device_send_queue_frames);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let session = router.next_session_id();
        let usage = router.usage().device_session(info.license_id, info.device_id, info.user_id, unix_ms_i64());
        DeviceSession::create(move |ctx| {
            let codec = FrameCodec::new(cfg.max_frame_bytes);
            ctx.add_stream(FrameReader::new(reader, codec, read_buf, cfg.device_read_buffer_bytes));
            let beat = Beat::new(
                tx.clone(),
                ctx.address().downgrade(),
                router.clone(),
                info.device_id,
                cfg.device_heartbeat_interval,
                cfg.device_idle_timeout,
            );
            let beat = Rc::new(beat);
            let owner = Owner {
                session: ctx.address().downgrade(),
                router: router.clone(),
                device_id: info.device_id,
                usage: usage.clone(),
            };
            actix::spawn(SendLoop::new(writer, rx, shutdown_rx, cfg.device_write_stall_timeout, owner).run());
            DeviceSession {
                info,
                session,
                router,
                cfg,
                tx,
                shutdown: Some(shutdown_tx),
                usage,
                beat,
                close: CloseSession::new(CloseCode::Normal, "closed"),
                send_close: true,
                renewed: false,
            }
        })
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, message: impl Into<String>) {
        self.close = CloseSession::new(code, message);
        ctx.stop();
    }

    /// A CERT_RENEW: at most one per session, answered when the issuer has finished (the
    /// session goes on meanwhile).
    fn renew(&mut self, csr: bytes::Bytes, ctx: &mut Context<Self>) {
        let refused = |reason, message: &str| Frame::CertRefused { reason, message: message.to_string() };
        if self.renewed {
            self.answer(refused(RenewalRefusal::InProgress, "one certificate renewal per connection"));
            return;
        }
        self.renewed = true;
        let Some(issuer) = self.router.certificate_issuer() else {
            self.answer(refused(RenewalRefusal::Unavailable, "this relay issues no device certificates"));
            return;
        };
        let renewal = issuer.renew(self.info.device_id, self.info.user_id, csr);
        ctx.spawn(actix::fut::wrap_future(renewal).map(|result, act: &mut DeviceSession, _| {
            let frame = match result {
                Ok(certificate) => Frame::CertIssued { certificate },
                Err(r) => Frame::CertRefused { reason: r.reason, message: r.message },
            };
            act.answer(frame);
        }));
    }

    /// Queues a frame of the session's own.
    fn answer(&self, frame: Frame) {
        if self.tx.try_send(DeviceOut::Frame(frame)).is_err() {
            self.router.metrics().dropped(DropReason::ControlQueueFull);
        }
    }

    /// Queues a relay-originated notice for the device.
    fn notice(&self, item: DeviceItem) {
        if self.tx.try_send(DeviceOut::Item(item)).is_err() {
            self.router.metrics().dropped(DropReason::ControlQueueFull);
        }
    }
}

impl Actor for DeviceSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.router.metrics().session_opened(SessionKind::Device);
        let handle = DeviceHandle {
            session: self.session,
            user_id: self.info.user_id,
            ves_id: self.info.ves_id,
            tx: self.tx.clone(),
            control: ctx.address().downgrade().recipient(),
        };
        self.router.register_device(self.info.device_id, handle);
        device_heartbeats::start(&self.beat, self.cfg.device_heartbeat_interval);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let final_frame = self.send_close.then(|| {
            Box::new(Frame::Close {
                code: self.close.code,
                reconnect_after_ms: self.close.reconnect_after_ms,
                message: std::mem::take(&mut self.close.message),
            })
        });
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(final_frame);
        }
    }
}

impl Drop for DeviceSession {
    /// Runs after `stopped`, and also when a handler panicked: the registry never keeps a
    /// dead session.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(None);
        }
        self.router.unregister_device(self.info.device_id, self.session, self.close.code);
        self.router.metrics().session_closed(SessionKind::Device, self.close.code);
        self.usage.end(unix_ms_i64());
    }
}

impl StreamHandler<Result<Frame, FrameError>> for DeviceSession {
    fn handle(&mut self, item: Result<Frame, FrameError>, ctx: &mut Context<Self>) {
        self.beat.heard();
        let frame = match item {
            Ok(f) => f,
            Err(FrameError::Io(_)) => {
                self.send_close = false;
                ctx.stop();
                return;
            }
            Err(e) => {
                tracing::debug!(device = %self.info.device_id, error = %e, "bad frame from device");
                let code = e.close_code();
                self.close(ctx, code, e.to_string());
                return;
            }
        };
        match frame {
            Frame::Forward { kind, frame_id, payload } => {
                let item = VesItem::Frame {
                    device_id: self.info.device_id,
                    user_id: self.info.user_id,
                    frame_id,
                    kind,
                    payload,
                };
                if let Err(reason) = self.router.device_to_ves(self.info.ves_id, item) {
                    self.router.metrics().undeliverable(Direction::DeviceToVes, reason);
                    self.notice(DeviceItem::Undeliverable { frame_id, reason });
                }
            }
            Frame::Ack { frame_id } => {
                let item = VesItem::Ack { device_id: self.info.device_id, frame_id };
                if let Err(reason) = self.router.device_to_ves(self.info.ves_id, item) {
                    self.router.metrics().ack_dropped(reason);
                }
            }
            Frame::Heartbeat => {}
            Frame::Close { .. } => {
                self.send_close = false;
                ctx.stop();
            }
            Frame::CertRenew { csr } if self.info.version >= CERT_AUTH_VERSION => self.renew(csr, ctx),
            other => {
                let what = format!("{} is not allowed after authentication", other.frame_type().name());
                self.close(ctx, CloseCode::ProtocolViolation, what);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.send_close = false;
        ctx.stop();
    }
}

impl Handler<CloseSession> for DeviceSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.close = msg;
        ctx.stop();
    }
}

impl Handler<WriterFailed> for DeviceSession {
    type Result = ();

    fn handle(&mut self, msg: WriterFailed, ctx: &mut Context<Self>) {
        if msg.code == CloseCode::SlowConsumer {
            tracing::info!(device = %self.info.device_id, "device stopped reading; disconnecting (slow consumer)");
        }
        self.send_close = false;
        self.close.code = msg.code;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use noc_cluster::{MemoryCluster, NodeId};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{Framed, FramedRead};

    use crate::metrics::Metrics;
    use crate::router::VesHandle;

    fn setup(cfg: SessionConfig) -> (Arc<Router>, Arc<Metrics>, Arc<SessionConfig>, DeviceSessionInfo) {
        let metrics = Arc::new(Metrics::new());
        let cluster = Arc::new(MemoryCluster::single(NodeId::new("test"), 16));
        let router = Router::new(cluster, metrics.clone());
        let info = DeviceSessionInfo {
            version: 3,
            device_id: DeviceId::random(),
            user_id: UserId::random(),
            ves_id: VesId::random(),
            license_id: LicenseId::random(),
        };
        (router, metrics, Arc::new(cfg), info)
    }

    fn timing() -> SessionConfig {
        SessionConfig {
            device_heartbeat_interval: Duration::from_secs(10),
            device_idle_timeout: Duration::from_secs(30),
            ..SessionConfig::default()
        }
    }

    #[actix_rt::test]
    async fn silent_device_is_dropped_after_the_idle_timeout() {
        tokio::time::pause();
        let (router, metrics, cfg, info) = setup(timing());
        let (relay_side, device_side) = tokio::io::duplex(64 * 1024);
        DeviceSession::start(relay_side, BytesMut::new(), info, router.clone(), cfg);
        let mut device = FramedRead::new(device_side, FrameCodec::default());
        let started = tokio::time::Instant::now();
        let mut heartbeats = 0;
        loop {
            match device.next().await {
                Some(Ok(Frame::Heartbeat)) => heartbeats += 1,
                Some(Ok(Frame::Close { code, .. })) => {
                    assert_eq!(code, CloseCode::IdleTimeout);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let waited = started.elapsed();
        // Between N and N + 1 intervals after the last frame received (the authentication),
        // and a timer's millisecond.
        let latest = Duration::from_secs(40) + Duration::from_millis(5);
        assert!(waited >= Duration::from_secs(30) && waited <= latest, "closed after {waited:?}");
        // The authentication frame counts for the first tick (10 s); the ticks at 20, 30
        // and 40 s find nothing, and the third of them closes.
        assert_eq!(heartbeats, 3, "heartbeats at 10, 20 and 30 s, close at 40 s");
        assert!(device.next().await.is_none(), "connection closed after CLOSE");
        tokio::task::yield_now().await;
        assert_eq!(metrics.value("noc_heartbeats_missed_total", &[("kind", "device")]), 1.0);
        assert_eq!(metrics.value("noc_sessions", &[("kind", "device")]), 0.0);
        assert!(router.device_session(info.device_id).is_none());
    }

    #[actix_rt::test]
    async fn a_device_that_sends_heartbeats_stays_connected() {
        tokio::time::pause();
        let (router, metrics, cfg, info) = setup(timing());
        let (relay_side, device_side) = tokio::io::duplex(64 * 1024);
        DeviceSession::start(relay_side, BytesMut::new(), info, router.clone(), cfg);
        let mut device = Framed::new(device_side, FrameCodec::default());
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            device.send(Frame::Heartbeat).await.expect("send heartbeat");
        }
        // 80 s later, well past the 30 s idle timeout: still registered.
        assert!(router.device_session(info.device_id).is_some());
        assert_eq!(metrics.value("noc_heartbeats_missed_total", &[("kind", "device")]), 0.0);
        let mut seen = 0;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_millis(1), device.next()).await {
            assert_eq!(frame, Frame::Heartbeat);
            seen += 1;
        }
        assert!(seen >= 7, "relay heartbeats kept coming ({seen})");
    }

    #[actix_rt::test]
    async fn a_second_session_for_the_same_device_replaces_the_first() {
        let (router, metrics, cfg, info) = setup(SessionConfig::default());
        let (relay_a, device_a) = tokio::io::duplex(4096);
        DeviceSession::start(relay_a, BytesMut::new(), info, router.clone(), cfg.clone());
        let mut first = FramedRead::new(device_a, FrameCodec::default());
        tokio::task::yield_now().await;
        let (relay_b, _device_b) = tokio::io::duplex(4096);
        DeviceSession::start(relay_b, BytesMut::new(), info, router.clone(), cfg);
        match first.next().await {
            Some(Ok(Frame::Close { code, .. })) => assert_eq!(code, CloseCode::Replaced),
            other => panic!("expected CLOSE replaced, got {other:?}"),
        }
        tokio::task::yield_now().await;
        assert_eq!(metrics.value("noc_sessions_replaced_total", &[("kind", "device")]), 1.0);
        assert_eq!(metrics.value("noc_sessions", &[("kind", "device")]), 1.0);
        assert_eq!(router.device_sessions(), 1);
    }

    /// Stands in for a VES session's actor: takes close requests and does nothing.
    struct QuietVes;

    impl Actor for QuietVes {
        type Context = Context<Self>;
    }

    impl Handler<CloseSession> for QuietVes {
        type Result = ();

        fn handle(&mut self, _: CloseSession, _: &mut Context<Self>) {}
    }

    /// Waits (a little) until `metrics` counts `n` drops for `reason`.
    async fn drops_reach(metrics: &Metrics, reason: &str, n: f64) {
        for _ in 0..200 {
            if metrics.value("noc_frames_dropped_total", &[("reason", reason)]) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A device's acknowledgement that cannot be passed on is counted once, under why: a
    /// VES with no session counts it as closed; a VES whose command channel is full
    /// counted it where the queue refused it.
    #[actix_rt::test]
    async fn an_acknowledgement_that_cannot_be_passed_on_is_counted_once() {
        let (router, metrics, cfg, info) = setup(SessionConfig::default());
        let (relay_side, device_side) = tokio::io::duplex(4096);
        DeviceSession::start(relay_side, BytesMut::new(), info, router.clone(), cfg);
        let mut device = Framed::new(device_side, FrameCodec::default());
        let dropped = |reason| metrics.value("noc_frames_dropped_total", &[("reason", reason)]);

        device.send(Frame::Ack { frame_id: 1 }).await.expect("send");
        drops_reach(&metrics, "session_closed", 1.0).await;
        assert_eq!(dropped("session_closed"), 1.0, "its VES has no session");

        let inbox = Arc::new(crate::ves::inbox::VesInbox::new(info.ves_id, 1, Vec::new(), Vec::new()));
        let (tx, _rx) = crate::ves::inbox::channel(16, 1);
        assert!(inbox.attach(tx).is_none());
        for frame_id in 100..132 {
            let ack = VesItem::Ack { device_id: info.device_id, frame_id };
            assert!(inbox.enqueue(ack, &metrics).is_ok(), "room for sixteen, and sixteen more for acknowledgements");
        }
        router.register_ves(VesHandle { inbox, control: QuietVes.start().recipient() });
        device.send(Frame::Ack { frame_id: 2 }).await.expect("send");
        drops_reach(&metrics, "control_queue_full", 1.0).await;
        assert_eq!(dropped("control_queue_full"), 1.0, "the full queue counted it");
        assert_eq!(dropped("session_closed"), 1.0, "and nothing else did");
        assert_eq!(dropped("queue_full"), 0.0);
    }

    #[actix_rt::test]
    async fn a_crashing_session_takes_nothing_else_down() {
        let (router, metrics, cfg, crashing) = setup(SessionConfig::default());
        let healthy = DeviceSessionInfo { device_id: DeviceId::random(), ..crashing };
        let (relay_a, _device_a) = tokio::io::duplex(4096);
        let addr = DeviceSession::start(relay_a, BytesMut::new(), crashing, router.clone(), cfg.clone());
        let (relay_b, device_b) = tokio::io::duplex(4096);
        DeviceSession::start(relay_b, BytesMut::new(), healthy, router.clone(), cfg);
        tokio::task::yield_now().await;
        assert_eq!(router.device_sessions(), 2);

        addr.do_send(Crash);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The crashed session is gone from the routing table (its guard ran) ...
        assert!(router.device_session(crashing.device_id).is_none());
        assert_eq!(router.device_sessions(), 1);
        assert_eq!(metrics.value("noc_sessions", &[("kind", "device")]), 1.0);
        // ... and the other one still relays.
        router.notify_device(healthy.device_id, DeviceItem::Ack { frame_id: 7 });
        let mut device = FramedRead::new(device_b, FrameCodec::default());
        assert_eq!(device.next().await.expect("frame").expect("valid"), Frame::Ack { frame_id: 7 });
    }

    #[actix_rt::test]
    async fn garbage_after_auth_closes_with_a_clear_code() {
        let (router, _metrics, cfg, info) = setup(SessionConfig { max_frame_bytes: 1024, ..SessionConfig::default() });
        let (relay_side, mut device_side) = tokio::io::duplex(4096);
        DeviceSession::start(relay_side, BytesMut::new(), info, router.clone(), cfg);
        device_side.write_all(&[0, 0, 0x10, 0, 0x10]).await.expect("write oversized prefix");
        let mut device = FramedRead::new(device_side, FrameCodec::default());
        match device.next().await {
            Some(Ok(Frame::Close { code, message, .. })) => {
                assert_eq!(code, CloseCode::FrameTooLarge);
                assert!(message.contains("exceeds"), "{message}");
            }
            other => panic!("expected CLOSE, got {other:?}"),
        }
    }

    /// Signs nothing: answers with the request's bytes reversed, or refuses an empty one.
    struct FakeIssuer;

    impl crate::CertificateIssuer for FakeIssuer {
        fn renew(&self, _device: DeviceId, _user: UserId, csr: bytes::Bytes) -> crate::Issued {
            Box::pin(async move {
                if csr.is_empty() {
                    return Err(crate::Refused::new(RenewalRefusal::BadRequest, "empty request"));
                }
                Ok(csr.iter().rev().copied().collect::<Vec<_>>().into())
            })
        }
    }

    #[actix_rt::test]
    async fn a_version_3_session_renews_its_certificate_once_per_connection() {
        let (router, _metrics, cfg, info) = setup(SessionConfig::default());
        let (relay_side, device_side) = tokio::io::duplex(4096);
        DeviceSession::start(relay_side, BytesMut::new(), info, router.clone(), cfg.clone());
        let mut device = Framed::new(device_side, FrameCodec::default());
        // Without an issuer: unavailable.
        device.send(Frame::CertRenew { csr: bytes::Bytes::from_static(b"abc") }).await.expect("send");
        match device.next().await.expect("frame").expect("valid") {
            Frame::CertRefused { reason: RenewalRefusal::Unavailable, .. } => {}
            other => panic!("expected CERT_REFUSED unavailable, got {other:?}"),
        }
        // With one: the certificate, then no second renewal on this connection.
        router.set_certificate_issuer(Arc::new(FakeIssuer));
        let (relay_side, device_side) = tokio::io::duplex(4096);
        DeviceSession::start(relay_side, BytesMut::new(), info, router.clone(), cfg.clone());
        let mut device = Framed::new(device_side, FrameCodec::default());
        device.send(Frame::CertRenew { csr: bytes::Bytes::from_static(b"abc") }).await.expect("send");
        assert_eq!(
            device.next().await.expect("frame").expect("valid"),
            Frame::CertIssued { certificate: bytes::Bytes::from_static(b"cba") }
        );
        device.send(Frame::CertRenew { csr: bytes::Bytes::from_static(b"abc") }).await.expect("send");
        match device.next().await.expect("frame").expect("valid") {
            Frame::CertRefused { reason: RenewalRefusal::InProgress, .. } => {}
            other => panic!("expected CERT_REFUSED in_progress, got {other:?}"),
        }
        // The issuer's refusal reaches the device as it is.
        let (relay_side, device_side) = tokio::io::duplex(4096);
        DeviceSession::start(relay_side, BytesMut::new(), info, router.clone(), cfg.clone());
        let mut device = Framed::new(device_side, FrameCodec::default());
        device.send(Frame::CertRenew { csr: bytes::Bytes::new() }).await.expect("send");
        assert_eq!(
            device.next().await.expect("frame").expect("valid"),
            Frame::CertRefused { reason: RenewalRefusal::BadRequest, message: "empty request".into() }
        );
        // A version 2 session may not send it at all.
        let (relay_side, device_side) = tokio::io::duplex(4096);
        DeviceSession::start(
            relay_side,
            BytesMut::new(),
            DeviceSessionInfo { version: 2, ..info },
            router.clone(),
            cfg,
        );
        let mut device = Framed::new(device_side, FrameCodec::default());
        device.send(Frame::CertRenew { csr: bytes::Bytes::from_static(b"abc") }).await.expect("send");
        match device.next().await.expect("frame").expect("valid") {
            Frame::Close { code: CloseCode::ProtocolViolation, message, .. } => {
                assert!(message.contains("CERT_RENEW"), "{message}")
            }
            other => panic!("expected CLOSE protocol_violation, got {other:?}"),
        }
    }
}
