//! A simulated device: one task per device, speaking the device channel over TLS.
//!
//! Each device keeps its own open-loop timetable of device → VES frames (frame `k` is
//! due at `traffic_start + phase + k·period`), sends whatever is due when it wakes —
//! late frames keep their scheduled time in their stamp, so falling behind shows as
//! latency — acknowledges every frame from its VES, answers the relay's HEARTBEAT with its
//! own when it has been quiet for half an interval, and sends a HEARTBEAT when it has been
//! quiet for a whole one.
//!
//! Per-session state is kept small (no thread, no histogram, buffers that shrink back
//! when idle) so that one process can hold many thousands of sessions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use noc_protocol::device::{CERT_AUTH_VERSION, ForwardKind, Frame, FrameCodec, SUPPORTED_VERSIONS};
use noc_protocol::{CloseCode, DeviceId};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::net::SourceIps;
use crate::payload::{Clock, Stamp, micros_between, sends_now, wake_for};
use crate::stats::{Metric, Stats, reason_index};

/// Largest frame accepted during the handshake (the relay's own pre-auth limit).
const HANDSHAKE_MAX_FRAME_BYTES: u32 = 1024;
/// Read buffer reserved before each read.
const READ_CHUNK_BYTES: usize = 1024;
/// Buffers above this size are given back when they empty, so idle sessions stay small.
const KEEP_BUFFER_BYTES: usize = 16 * 1024;
/// How long a churned device waits for its outstanding acks before disconnecting.
const CHURN_DRAIN: Duration = Duration::from_secs(1);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What every device of a run shares.
pub struct DeviceContext {
    pub stats: Arc<Stats>,
    pub clock: Clock,
    pub tls: TlsConnector,
    pub server_name: ServerName<'static>,
    pub addr: SocketAddr,
    pub sources: Arc<SourceIps>,
    /// Bounds handshakes in progress.
    pub connect_gate: Arc<Semaphore>,
    pub connect_timeout: Duration,
    pub frame_size: usize,
    /// Overrides AUTH_OK's heartbeat interval.
    pub heartbeat: Option<Duration>,
    /// Answer the relay's HEARTBEAT when quiet for half an interval (§6.4.2 of the spec).
    pub answer_heartbeats: bool,
    /// Device → VES timetable; `None` without device → VES traffic.
    pub timetable: Option<Timetable>,
    /// Ends the run: sessions close (CLOSE `normal`) and tasks exit.
    pub stop: CancellationToken,
}

/// An open-loop timetable shared by all devices: device `d` of `n` sends frame `k` at
/// `start + period·(k + d/n)` while that is before `end`.
#[derive(Clone, Copy, Debug)]
pub struct Timetable {
    pub start: Instant,
    pub end: Instant,
    pub period: Duration,
    pub devices: u32,
}

impl Timetable {
    /// When device `d` is due to send its frame `k`, if before the end.
    pub fn due(&self, d: u32, k: u64) -> Option<Instant> {
        let phase = self.period.as_secs_f64() * (d as f64 / self.devices.max(1) as f64);
        let at = self.start + Duration::from_secs_f64(phase + self.period.as_secs_f64() * k as f64);
        (at < self.end).then_some(at)
    }

    /// The first frame of device `d` due at or after `t`.
    pub fn first_at_or_after(&self, d: u32, t: Instant) -> u64 {
        let p = self.period.as_secs_f64();
        let phase = p * (d as f64 / self.devices.max(1) as f64);
        let since = t.saturating_duration_since(self.start).as_secs_f64() - phase;
        if since <= 0.0 { 0 } else { (since / p).ceil() as u64 }
    }
}

/// One simulated device.
pub struct DeviceSpec {
    /// Index among all devices of the run (the timetable phase and the stamp's sender).
    pub index: u32,
    pub device_id: DeviceId,
    pub credential: Bytes,
    /// The device's own TLS configuration presenting its client certificate; with it the
    /// device authenticates with AUTH_CERT instead of AUTH_TOKEN.
    pub certificate_tls: Option<TlsConnector>,
    /// First connection attempt (ramp-up).
    pub connect_at: Instant,
    /// Signalled to simulate churn: the session ends and reconnects.
    pub churn: Arc<Notify>,
}

/// Why a session ended.
enum End {
    Stop,
    Churn,
    /// The relay sent CLOSE, or the connection ended.
    Closed {
        code: Option<CloseCode>,
        reconnect_after_ms: u32,
    },
    Error(&'static str),
}

/// Runs one device until the run stops.
pub async fn run_device(ctx: Arc<DeviceContext>, spec: DeviceSpec) {
    let mut dev = Device {
        ctx,
        spec,
        next_k: 0,
        outstanding: VecDeque::new(),
        attempts_failed: 0,
        resend: false,
        relay_beat: false,
    };
    tokio::select! {
        _ = dev.ctx.stop.cancelled() => return,
        _ = tokio::time::sleep_until(dev.spec.connect_at.into()) => {}
    }
    let mut established_before = false;
    loop {
        if dev.ctx.stop.is_cancelled() {
            return;
        }
        let stats = dev.ctx.stats.clone();
        let end = match dev.connect().await {
            Ok((tls, rbuf, heartbeat, max_frame)) => {
                dev.attempts_failed = 0;
                if established_before {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                established_before = true;
                stats.device_online();
                let end = dev.session(tls, rbuf, heartbeat, max_frame).await;
                stats.device_offline();
                end
            }
            Err(kind) => {
                stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                End::Error(kind)
            }
        };
        let wait = match end {
            End::Stop => return,
            End::Churn => {
                stats.churn_disconnects.fetch_add(1, Ordering::Relaxed);
                Duration::ZERO
            }
            End::Closed { code: Some(code), reconnect_after_ms } => {
                stats.error(format!("device_close:{}", code.as_str()));
                if matches!(
                    code,
                    CloseCode::Replaced
                        | CloseCode::AuthFailed
                        | CloseCode::Revoked
                        | CloseCode::AccountSuspended
                        | CloseCode::LockedOut
                        | CloseCode::UnsupportedVersion
                ) {
                    // Retrying cannot help (or would fight another session): give up.
                    stats.error("device_gave_up");
                    return;
                }
                // What was written while the CLOSE was on its way may never have been
                // read: a client resends its unresolved frames after the reconnect (§7.1).
                dev.resend = true;
                dev.backoff().max(Duration::from_millis(reconnect_after_ms as u64))
            }
            End::Closed { code: None, .. } => {
                stats.error("device_connection_lost");
                dev.backoff()
            }
            End::Error(kind) => {
                stats.error(kind);
                dev.backoff()
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = dev.ctx.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

struct Device {
    ctx: Arc<DeviceContext>,
    spec: DeviceSpec,
    /// Next frame of the timetable.
    next_k: u64,
    /// Sent, neither acknowledged nor refused yet: (frame id, scheduled time).
    outstanding: VecDeque<(u64, u64)>,
    attempts_failed: u32,
    /// The relay ended the last session with CLOSE: resend `outstanding` first.
    resend: bool,
    /// A HEARTBEAT from the relay was read and not yet considered for an answer.
    relay_beat: bool,
}

type Connected = (TlsStream<TcpStream>, BytesMut, Duration, u32);

impl Device {
    /// Exponential backoff with jitter.
    fn backoff(&mut self) -> Duration {
        self.attempts_failed = self.attempts_failed.saturating_add(1);
        let base = BACKOFF_MIN.saturating_mul(1 << self.attempts_failed.min(8)).min(BACKOFF_MAX);
        let jitter = (self.ctx.clock.now_ns() ^ (self.spec.index as u64 * 0x9E37_79B9)) % 1000;
        base.mul_f64(0.5 + jitter as f64 / 2000.0)
    }

    /// TCP, TLS, HELLO, AUTH_TOKEN; returns the stream, bytes read past AUTH_OK, the
    /// heartbeat interval and the maximum frame size.
    async fn connect(&mut self) -> Result<Connected, &'static str> {
        let ctx = self.ctx.clone();
        let _permit = tokio::select! {
            _ = ctx.stop.cancelled() => return Err("stopped"),
            p = ctx.connect_gate.clone().acquire_owned() => p.map_err(|_| "stopped")?,
        };
        ctx.stats.connect_attempts.fetch_add(1, Ordering::Relaxed);
        let started = ctx.clock.now_ns();
        let result = tokio::select! {
            _ = ctx.stop.cancelled() => return Err("stopped"),
            r = tokio::time::timeout(ctx.connect_timeout, self.handshake()) => r.unwrap_or(Err("connect:timeout")),
        };
        if result.is_ok() {
            ctx.stats.connect_ok.fetch_add(1, Ordering::Relaxed);
            ctx.stats.recorder.record(Metric::Connect, ctx.clock.micros_since(started));
        }
        result
    }

    async fn handshake(&self) -> Result<Connected, &'static str> {
        let ctx = &self.ctx;
        let tcp = ctx.sources.connect(ctx.addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect:refused",
            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse => "connect:no_source_port",
            _ => "connect:tcp",
        })?;
        let connector = self.spec.certificate_tls.as_ref().unwrap_or(&ctx.tls);
        let mut tls = connector.connect(ctx.server_name.clone(), tcp).await.map_err(|_| "connect:tls")?;
        let mut codec = FrameCodec::new(HANDSHAKE_MAX_FRAME_BYTES);
        let mut rbuf = BytesMut::with_capacity(256);
        write_frame(&mut tls, &Frame::Hello { versions: SUPPORTED_VERSIONS.to_vec() }).await?;
        let version = match read_frame(&mut tls, &mut codec, &mut rbuf).await? {
            Frame::HelloAck { version } => version,
            Frame::Close { code, .. } => return Err(close_kind(code)),
            _ => return Err("connect:protocol"),
        };
        let auth = match &self.spec.certificate_tls {
            Some(_) if version >= CERT_AUTH_VERSION => Frame::AuthCert { device_id: self.spec.device_id },
            Some(_) => return Err("connect:no_certificate_auth"),
            None => Frame::AuthToken { device_id: self.spec.device_id, credential: self.spec.credential.clone() },
        };
        write_frame(&mut tls, &auth).await?;
        match read_frame(&mut tls, &mut codec, &mut rbuf).await? {
            Frame::AuthOk { heartbeat_interval_seconds, max_frame_bytes, .. } => {
                let hb = ctx.heartbeat.unwrap_or(Duration::from_secs(heartbeat_interval_seconds.max(1) as u64));
                Ok((tls, rbuf, hb, max_frame_bytes))
            }
            Frame::Close { code, .. } => Err(close_kind(code)),
            _ => Err("connect:protocol"),
        }
    }

    /// The next timetable frame from now on; frames that fell due while offline are
    /// skipped (a device cannot send while disconnected).
    fn skip_missed(&mut self) {
        if let Some(tt) = &self.ctx.timetable {
            let first = tt.first_at_or_after(self.spec.index, Instant::now());
            if first > self.next_k {
                let missed = first - self.next_k;
                // Only frames that were actually due (before the end) count as skipped.
                let due_missed = (self.next_k..first).take_while(|k| tt.due(self.spec.index, *k).is_some()).count();
                self.ctx.stats.device_to_ves.skipped_offline.fetch_add(due_missed as u64, Ordering::Relaxed);
                self.next_k += missed;
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.ctx.timetable.as_ref().and_then(|tt| tt.due(self.spec.index, self.next_k))
    }

    /// Queues every frame due by now (or by the next timer tick).
    fn queue_due(&mut self, wbuf: &mut BytesMut) {
        let Some(tt) = self.ctx.timetable else { return };
        let now = Instant::now();
        while let Some(at) = tt.due(self.spec.index, self.next_k) {
            if !sends_now(at, now) {
                break;
            }
            let frame_id = self.next_k + 1;
            let scheduled = self.ctx.clock.send_stamp(at, now);
            // `now` is when this wake-up queues its frames: no clock read per frame.
            let sent = self.ctx.clock.at(now);
            let stamp =
                Stamp { scheduled_unix_ns: scheduled, sent_unix_ns: sent, seq: frame_id, sender: self.spec.index };
            Frame::Forward { kind: ForwardKind::Data, frame_id, payload: stamp.payload(self.ctx.frame_size) }
                .encode(wbuf);
            self.outstanding.push_back((frame_id, scheduled));
            self.ctx.stats.device_to_ves.sent.fetch_add(1, Ordering::Relaxed);
            self.ctx.stats.recorder.record(Metric::SendDelayDeviceToVes, micros_between(scheduled, sent));
            self.next_k += 1;
        }
    }

    /// Queues the unresolved frames again, with their original ids and stamps (the other
    /// end may see a frame twice if only its acknowledgement was lost).
    fn queue_resends(&mut self, wbuf: &mut BytesMut) {
        let sent = self.ctx.clock.now_ns();
        for &(frame_id, scheduled) in &self.outstanding {
            let stamp =
                Stamp { scheduled_unix_ns: scheduled, sent_unix_ns: sent, seq: frame_id, sender: self.spec.index };
            Frame::Forward { kind: ForwardKind::Data, frame_id, payload: stamp.payload(self.ctx.frame_size) }
                .encode(wbuf);
        }
        self.ctx.stats.device_to_ves.resent.fetch_add(self.outstanding.len() as u64, Ordering::Relaxed);
    }

    /// Handles one frame from the relay; returns the end of the session if it ends.
    fn handle(&mut self, frame: Frame, wbuf: &mut BytesMut) -> Option<End> {
        let stats = &self.ctx.stats;
        match frame {
            Frame::Forward { frame_id, payload, .. } => {
                let c = &stats.ves_to_device;
                c.received.fetch_add(1, Ordering::Relaxed);
                match Stamp::read(&payload) {
                    Some(s) => stats.recorder.record_receipt(
                        Metric::OneWayVesToDevice,
                        Metric::FromSendVesToDevice,
                        &self.ctx.clock,
                        &s,
                    ),
                    None => {
                        c.foreign_payloads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Frame::Ack { frame_id }.encode(wbuf);
            }
            Frame::Ack { frame_id } => match take_outstanding(&mut self.outstanding, frame_id) {
                Some(at) => {
                    stats.device_to_ves.acked.fetch_add(1, Ordering::Relaxed);
                    stats.recorder.record(Metric::AckDeviceToVes, self.ctx.clock.micros_since(at));
                }
                None => {
                    stats.device_to_ves.late_notices.fetch_add(1, Ordering::Relaxed);
                }
            },
            Frame::Undeliverable { frame_id, reason } => match take_outstanding(&mut self.outstanding, frame_id) {
                Some(_) => stats.device_to_ves.undeliverable(reason_index(reason)),
                None => {
                    stats.device_to_ves.late_notices.fetch_add(1, Ordering::Relaxed);
                }
            },
            Frame::Heartbeat => self.relay_beat = true,
            Frame::Close { code, reconnect_after_ms, .. } => {
                return Some(End::Closed { code: Some(code), reconnect_after_ms });
            }
            _ => return Some(End::Error("device:unexpected_frame")),
        }
        None
    }

    /// The established session: reads, writes, timetable, heartbeats, churn and stop.
    async fn session(
        &mut self,
        tls: TlsStream<TcpStream>,
        mut rbuf: BytesMut,
        heartbeat: Duration,
        max_frame: u32,
    ) -> End {
        let ctx = self.ctx.clone();
        let churn = self.spec.churn.clone();
        let (mut rd, mut wr) = tokio::io::split(tls);
        rbuf.reserve(READ_CHUNK_BYTES);
        let mut codec = FrameCodec::new(max_frame);
        let mut wbuf = BytesMut::new();
        let mut need_flush = false;
        let mut draining: Option<Instant> = None;
        self.skip_missed();
        self.relay_beat = false; // one of the last session's
        if std::mem::take(&mut self.resend) {
            self.queue_resends(&mut wbuf);
        }
        // Bytes that arrived with AUTH_OK.
        while let Ok(Some(frame)) = codec.decode(&mut rbuf) {
            if let Some(end) = self.handle(frame, &mut wbuf) {
                return end;
            }
        }
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let send_timer = tokio::time::sleep_until(self.next_due().map_or(far, wake_for).into());
        let hb_timer = tokio::time::sleep(heartbeat);
        let drain_timer = tokio::time::sleep_until(far.into());
        tokio::pin!(send_timer, hb_timer, drain_timer);
        let end = loop {
            if draining.is_some() && self.outstanding.is_empty() && wbuf.is_empty() && !need_flush {
                break End::Churn;
            }
            tokio::select! {
                biased;
                _ = ctx.stop.cancelled() => break End::Stop,
                _ = churn.notified(), if draining.is_none() => {
                    let until = Instant::now() + CHURN_DRAIN;
                    draining = Some(until);
                    drain_timer.as_mut().reset(until.into());
                }
                _ = &mut drain_timer, if draining.is_some() => break End::Churn,
                r = write_some(&mut wr, &mut wbuf), if need_flush || !wbuf.is_empty() => {
                    match r {
                        Err(_) => break End::Error("device:write"),
                        Ok(false) => {
                            need_flush = true;
                            if wbuf.is_empty() && wbuf.capacity() > KEEP_BUFFER_BYTES {
                                wbuf = BytesMut::new();
                            }
                        }
                        Ok(true) => {
                            need_flush = false;
                            hb_timer.as_mut().reset((Instant::now() + heartbeat).into());
                        }
                    }
                }
                r = rd.read_buf(&mut rbuf) => {
                    match r {
                        Ok(0) => break End::Closed { code: None, reconnect_after_ms: 0 },
                        Ok(_) => {}
                        Err(_) => break End::Error("device:read"),
                    }
                    let mut ended = None;
                    loop {
                        match codec.decode(&mut rbuf) {
                            Ok(Some(frame)) => {
                                if let Some(end) = self.handle(frame, &mut wbuf) {
                                    ended = Some(end);
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => {
                                ended = Some(End::Error("device:malformed_frame"));
                                break;
                            }
                        }
                    }
                    if let Some(end) = ended {
                        break end;
                    }
                    // The relay's HEARTBEAT is answered by ours when this device has been
                    // quiet for half an interval (docs/protocol.md §6.4.2): the relay sends
                    // its heartbeats in batches, and answers arriving together cost it
                    // one wake-up, where heartbeats of the device's own phase cost one each.
                    if std::mem::take(&mut self.relay_beat)
                        && ctx.answer_heartbeats
                        && wbuf.is_empty()
                        && !need_flush
                        && hb_timer.deadline() <= (Instant::now() + heartbeat / 2).into()
                    {
                        Frame::Heartbeat.encode(&mut wbuf);
                    }
                    if rbuf.is_empty() && rbuf.capacity() > KEEP_BUFFER_BYTES {
                        rbuf = BytesMut::new();
                    }
                    if rbuf.capacity() - rbuf.len() < READ_CHUNK_BYTES / 2 {
                        rbuf.reserve(READ_CHUNK_BYTES);
                    }
                }
                _ = &mut send_timer, if draining.is_none() => {
                    self.queue_due(&mut wbuf);
                    send_timer.as_mut().reset(self.next_due().map_or(far, wake_for).into());
                }
                _ = &mut hb_timer => {
                    Frame::Heartbeat.encode(&mut wbuf);
                    hb_timer.as_mut().reset((Instant::now() + heartbeat).into());
                }
            }
        };
        if matches!(end, End::Stop | End::Churn) {
            // A polite goodbye; the relay closes without answering.
            Frame::Close { code: CloseCode::Normal, reconnect_after_ms: 0, message: String::new() }.encode(&mut wbuf);
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                wr.write_all(&wbuf).await?;
                wr.shutdown().await
            })
            .await;
        }
        end
    }
}

/// Removes a sent frame from the outstanding ones; returns its scheduled time. Acks
/// usually come in order, so the search ends at the front.
fn take_outstanding(outstanding: &mut VecDeque<(u64, u64)>, frame_id: u64) -> Option<u64> {
    let pos = outstanding.iter().position(|(id, _)| *id == frame_id)?;
    outstanding.remove(pos).map(|(_, at)| at)
}

/// Writes some of `wbuf`, or flushes once it is empty; returns whether it flushed.
/// Cancel-safe: `write_buf` advances `wbuf` only by what was written.
async fn write_some<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, wbuf: &mut BytesMut) -> std::io::Result<bool> {
    if !wbuf.is_empty() {
        wr.write_buf(wbuf).await?;
        Ok(false)
    } else {
        wr.flush().await?;
        Ok(true)
    }
}

fn close_kind(code: CloseCode) -> &'static str {
    match code {
        CloseCode::AuthFailed => "connect:auth_failed",
        CloseCode::Revoked => "connect:revoked",
        CloseCode::TooManySessions => "connect:too_many_sessions",
        CloseCode::ServerDraining => "connect:server_draining",
        CloseCode::ServiceUnavailable => "connect:service_unavailable",
        CloseCode::HandshakeTimeout => "connect:handshake_timeout",
        CloseCode::AccountSuspended => "connect:account_suspended",
        CloseCode::LockedOut => "connect:locked_out",
        _ => "connect:closed",
    }
}

async fn write_frame(tls: &mut TlsStream<TcpStream>, frame: &Frame) -> Result<(), &'static str> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    tls.write_all(&buf).await.map_err(|_| "connect:write")?;
    tls.flush().await.map_err(|_| "connect:write")
}

async fn read_frame(
    tls: &mut TlsStream<TcpStream>,
    codec: &mut FrameCodec,
    rbuf: &mut BytesMut,
) -> Result<Frame, &'static str> {
    loop {
        match codec.decode(rbuf) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(_) => return Err("connect:malformed_frame"),
        }
        rbuf.reserve(256);
        match tls.read_buf(rbuf).await {
            Ok(0) => return Err("connect:closed_by_relay"),
            Ok(_) => {}
            Err(_) => return Err("connect:read"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timetable_spreads_devices_and_ends() {
        let start = Instant::now();
        let tt = Timetable { start, end: start + Duration::from_secs(10), period: Duration::from_secs(1), devices: 4 };
        assert_eq!(tt.due(0, 0), Some(start));
        assert_eq!(tt.due(2, 0), Some(start + Duration::from_millis(500)));
        assert_eq!(tt.due(0, 3), Some(start + Duration::from_secs(3)));
        assert_eq!(tt.due(0, 10), None, "nothing at or after the end");
        assert_eq!(tt.first_at_or_after(0, start), 0);
        assert_eq!(tt.first_at_or_after(0, start + Duration::from_millis(2500)), 3);
        assert_eq!(tt.first_at_or_after(2, start + Duration::from_millis(2500)), 2);
        let frames: usize = (0..4).map(|d| (0..20).filter(|k| tt.due(d, *k).is_some()).count()).sum();
        assert_eq!(frames, 40, "rate × duration frames in total");
    }
}
