//! A simulated device of a baseline run: connect (again after a failure), send the frames
//! of its timetable, receive and acknowledge the hub's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::payload::{Stamp, micros_between, sends_now, wake_for};
use crate::peer::conn::{ClientTls, Ctx, await_ready, encode, handle_events, open, sleep_until_or_forever};
use crate::peer::options::{MQTT_KEEP_ALIVE_SECONDS, PeerProtocol, RECONNECT_BACKOFF};
use crate::peer::wire;
use crate::stats::Metric;

/// One device's connection: TLS, then CONNECT + SUBSCRIBE (MQTT), CONNECT + SUB + PING
/// (NATS) or HELLO (forward), until the server confirmed.
async fn device_connect(ctx: &Ctx, index: u32) -> Result<(ClientTls, BytesMut), &'static str> {
    let mut tls = open(ctx).await?;
    let name = format!("loadtest-d{index}");
    let down = &ctx.names[index as usize].down;
    let (hello, steps) = match ctx.protocol {
        PeerProtocol::Mqtt => {
            let mut b = BytesMut::from(wire::mqtt_connect(&name, MQTT_KEEP_ALIVE_SECONDS).as_ref());
            b.extend_from_slice(&wire::mqtt_subscribe(1, down));
            (b.freeze(), 2)
        }
        PeerProtocol::Nats => (wire::nats_handshake(&name, down), 1),
        PeerProtocol::Forward => (wire::forward_hello(index), 1),
    };
    tls.write_all(&hello).await.map_err(|_| "connect:write")?;
    let rbuf = await_ready(ctx, &mut tls, steps).await?;
    Ok((tls, rbuf))
}

/// One simulated device until the run stops: connect (again after a failure), send the
/// frames of its timetable, receive and acknowledge the hub's.
pub(super) async fn run_device(ctx: Arc<Ctx>, index: u32, connect_at: Instant) {
    tokio::select! {
        _ = ctx.stop.cancelled() => return,
        _ = tokio::time::sleep_until(connect_at.into()) => {}
    }
    let mut next_k = 0u64;
    let mut packet_id = 0u16;
    let mut established_before = false;
    while !ctx.stop.is_cancelled() {
        let connected = {
            let Ok(_permit) = ctx.connect_gate.acquire().await else { return };
            ctx.stats.connect_attempts.fetch_add(1, Ordering::Relaxed);
            let started = ctx.clock.now_ns();
            let r = tokio::select! {
                _ = ctx.stop.cancelled() => return,
                r = tokio::time::timeout(ctx.connect_timeout, device_connect(&ctx, index)) =>
                    r.unwrap_or(Err("connect:timeout")),
            };
            if r.is_ok() {
                ctx.stats.connect_ok.fetch_add(1, Ordering::Relaxed);
                ctx.stats.recorder.record(Metric::Connect, ctx.clock.micros_since(started));
            }
            r
        };
        let error = match connected {
            Ok((tls, rbuf)) => {
                if established_before {
                    ctx.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                established_before = true;
                ctx.stats.device_online();
                ctx.online[index as usize].store(true, Ordering::Relaxed);
                let end = device_session(&ctx, index, tls, rbuf, &mut next_k, &mut packet_id).await;
                ctx.online[index as usize].store(false, Ordering::Relaxed);
                ctx.stats.device_offline();
                match end {
                    Ok(()) => return,
                    Err(kind) => kind,
                }
            }
            Err(kind) => {
                ctx.stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                kind
            }
        };
        ctx.stats.error(error);
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_BACKOFF) => {}
        }
    }
}

/// The connected part of a device's life; `Ok` when the run stopped it.
async fn device_session(
    ctx: &Ctx,
    index: u32,
    mut tls: ClientTls,
    mut rbuf: BytesMut,
    next_k: &mut u64,
    packet_id: &mut u16,
) -> Result<(), &'static str> {
    let up = &ctx.names[index as usize].up;
    let mut wbuf = BytesMut::with_capacity(512);
    if let Some(tt) = &ctx.timetable {
        // Frames that fell due while offline are skipped, as a device cannot send them.
        let first = tt.first_at_or_after(index, Instant::now());
        let missed = (*next_k..first).take_while(|k| tt.due(index, *k).is_some()).count() as u64;
        ctx.stats.device_to_ves.skipped_offline.fetch_add(missed, Ordering::Relaxed);
        *next_k = (*next_k).max(first);
    }
    handle_events(ctx, Metric::OneWayVesToDevice, &mut rbuf, &mut wbuf).map_err(|_| "device:protocol")?;
    loop {
        if let Some(tt) = &ctx.timetable {
            let now = Instant::now();
            while let Some(at) = tt.due(index, *next_k).filter(|at| sends_now(*at, now)) {
                *next_k += 1;
                let (scheduled, sent) = (ctx.clock.send_stamp(at, now), ctx.clock.at(now));
                let stamp = Stamp { scheduled_unix_ns: scheduled, sent_unix_ns: sent, seq: *next_k, sender: index };
                ctx.stats.recorder.record(Metric::SendDelayDeviceToVes, micros_between(scheduled, sent));
                encode(ctx.protocol, &mut wbuf, up, packet_id, &stamp.payload(ctx.frame_size));
                ctx.stats.device_to_ves.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !wbuf.is_empty() {
            tls.write_all(&wbuf).await.map_err(|_| "device:write")?;
            tls.flush().await.map_err(|_| "device:write")?;
            wbuf.clear();
        }
        let due = ctx.timetable.as_ref().and_then(|tt| tt.due(index, *next_k));
        tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            r = tls.read_buf(&mut rbuf) => match r {
                // At the end of a run the other side may close first (the sink's pipes).
                Ok(0) | Err(_) if ctx.stop.is_cancelled() => return Ok(()),
                Ok(0) | Err(_) => return Err("device:connection_lost"),
                Ok(_) => handle_events(ctx, Metric::OneWayVesToDevice, &mut rbuf, &mut wbuf)
                    .map_err(|_| "device:protocol")?,
            },
            _ = sleep_until_or_forever(due.map(wake_for)) => {}
        }
    }
}
