//! What the hub, the devices and the sink share: the run's context, opening a TLS
//! connection (with NATS's plain-text INFO first), the handshake wait, framing and the
//! receipt of a frame.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::device::Timetable;
use crate::net::SourceIps;
use crate::payload::{Clock, Stamp};
use crate::peer::options::PeerProtocol;
use crate::peer::wire::{self, Event, WireError};
use crate::stats::{Metric, Stats};

/// Topic or subject names of one device, built once.
pub(super) struct Names {
    pub up: String,
    pub down: String,
}

pub(super) struct Ctx {
    pub protocol: PeerProtocol,
    pub stats: Arc<Stats>,
    pub clock: Clock,
    pub tls: TlsConnector,
    pub server_name: ServerName<'static>,
    pub addr: SocketAddr,
    pub sources: SourceIps,
    pub connect_gate: Semaphore,
    pub connect_timeout: Duration,
    pub frame_size: usize,
    pub timetable: Option<Timetable>,
    pub stop: CancellationToken,
    pub names: Vec<Names>,
    /// Devices subscribed (or registered with the sink): the hub only sends to these.
    pub online: Vec<AtomicBool>,
    /// Forward: the sink's writer for each device's upstream connection.
    pub pipes: Vec<Mutex<Option<UnboundedSender<Bytes>>>>,
}

pub(super) type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

pub(super) fn io_kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect:refused",
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse => "connect:no_source_port",
        _ => "connect:tcp",
    }
}

/// NATS announces itself with an `INFO` line in plain text before the TLS handshake.
pub(super) async fn read_nats_info(tcp: &mut TcpStream) -> Result<(), &'static str> {
    let mut line = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > wire::MAX_PACKET_BYTES || tcp.read(&mut byte).await.map_err(|_| "connect:info")? == 0 {
            return Err("connect:info");
        }
        line.push(byte[0]);
    }
    if !line.starts_with(b"INFO ") {
        return Err("connect:info");
    }
    Ok(())
}

/// TCP (and NATS's INFO), then TLS.
pub(super) async fn open(ctx: &Ctx) -> Result<ClientTls, &'static str> {
    let mut tcp = ctx.sources.connect(ctx.addr).await.map_err(|e| io_kind(&e))?;
    if ctx.protocol == PeerProtocol::Nats {
        read_nats_info(&mut tcp).await?;
    }
    ctx.tls.connect(ctx.server_name.clone(), tcp).await.map_err(|_| "connect:tls")
}

/// Reads until `ready` handshake steps completed; returns the bytes read past them.
pub(super) async fn await_ready(ctx: &Ctx, tls: &mut ClientTls, mut ready: u32) -> Result<BytesMut, &'static str> {
    let mut rbuf = BytesMut::with_capacity(512);
    while ready > 0 {
        if tls.read_buf(&mut rbuf).await.map_err(|_| "connect:read")? == 0 {
            return Err("connect:closed");
        }
        while let Some(event) = ctx.protocol.next_event(&mut rbuf).map_err(|_| "connect:refused_by_server")? {
            match event {
                Event::Ready => ready = ready.saturating_sub(1),
                Event::Ping => tls.write_all(&wire::nats_pong()).await.map_err(|_| "connect:write")?,
                Event::Data { .. } | Event::Other => {}
            }
        }
    }
    Ok(rbuf)
}

/// MQTT packet ids: 1..=65535, never 0.
pub(super) fn next_packet_id(id: &mut u16) -> u16 {
    *id = id.wrapping_add(1).max(1);
    *id
}

/// Appends one frame to `buf` in the protocol's framing, to `topic` (MQTT/NATS).
pub(super) fn encode(protocol: PeerProtocol, buf: &mut BytesMut, topic: &str, packet_id: &mut u16, payload: &[u8]) {
    match protocol {
        PeerProtocol::Mqtt => wire::mqtt_publish(buf, topic, next_packet_id(packet_id), payload),
        PeerProtocol::Nats => wire::nats_publish(buf, topic, payload),
        PeerProtocol::Forward => wire::forward_frame(buf, payload),
    }
}

/// A receipt: counts it (received = acknowledged end to end) and records its latency.
pub(super) fn received(ctx: &Ctx, metric: Metric, payload: &[u8]) {
    let (c, from_send) = match metric {
        Metric::OneWayDeviceToVes => (&ctx.stats.device_to_ves, Metric::FromSendDeviceToVes),
        _ => (&ctx.stats.ves_to_device, Metric::FromSendVesToDevice),
    };
    c.received.fetch_add(1, Ordering::Relaxed);
    match Stamp::read(payload) {
        Some(s) => {
            c.acked.fetch_add(1, Ordering::Relaxed);
            ctx.stats.recorder.record_receipt(metric, from_send, &ctx.clock, &s);
        }
        None => {
            c.foreign_payloads.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Handles what arrived; replies (PUBACK, PONG) go to `wbuf`.
pub(super) fn handle_events(
    ctx: &Ctx,
    metric: Metric,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
) -> Result<(), WireError> {
    while let Some(event) = ctx.protocol.next_event(rbuf)? {
        match event {
            Event::Data { payload, ack } => {
                received(ctx, metric, &payload);
                if let Some(id) = ack {
                    wire::mqtt_puback(wbuf, id);
                }
            }
            Event::Ping => wbuf.extend_from_slice(&wire::nats_pong()),
            Event::Ready | Event::Other => {}
        }
    }
    Ok(())
}

pub(super) async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes what the channel brings, many buffers per flush.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(ctx: Arc<Ctx>, mut wr: W, mut rx: UnboundedReceiver<Bytes>) {
    let mut batch = Vec::with_capacity(64);
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            got = rx.recv_many(&mut batch, 64) => if got == 0 { return },
        }
        for b in batch.drain(..) {
            if wr.write_all(&b).await.is_err() {
                ctx.stats.error("hub:write");
                return;
            }
        }
        if wr.flush().await.is_err() {
            ctx.stats.error("hub:write");
            return;
        }
    }
}
