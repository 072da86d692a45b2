//! The hub: the VES's stand-in. One connection to the broker (MQTT/NATS) subscribed to
//! every device's uplink, and the pacer that sends frames down on the timetable (through
//! that connection, or the sink's per-device pipes in forward mode).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::payload::{Stamp, micros_between, sends_now, wake_for};
use crate::peer::conn::{ClientTls, Ctx, await_ready, encode, handle_events, open};
use crate::peer::options::{MQTT_KEEP_ALIVE_SECONDS, PeerProtocol};
use crate::peer::wire;
use crate::stats::Metric;

pub(super) async fn hub_connect(ctx: &Ctx) -> Result<(ClientTls, BytesMut), &'static str> {
    let mut tls = open(ctx).await?;
    let (hello, steps) = match ctx.protocol {
        PeerProtocol::Mqtt => {
            let mut b = BytesMut::from(wire::mqtt_connect("loadtest-hub", MQTT_KEEP_ALIVE_SECONDS).as_ref());
            b.extend_from_slice(&wire::mqtt_subscribe(1, "u/+"));
            (b.freeze(), 2)
        }
        PeerProtocol::Nats => (wire::nats_handshake("loadtest-hub", "u.*"), 1),
        PeerProtocol::Forward => return Err("connect:protocol"),
    };
    tls.write_all(&hello).await.map_err(|_| "connect:write")?;
    let rbuf = await_ready(ctx, &mut tls, steps).await?;
    Ok((tls, rbuf))
}

/// The hub's receiving side (MQTT/NATS): device frames, PUBACKs back through the writer.
pub(super) async fn hub_read_loop<R: AsyncRead + Unpin>(
    ctx: Arc<Ctx>,
    mut rd: R,
    mut rbuf: BytesMut,
    tx: UnboundedSender<Bytes>,
) {
    let mut replies = BytesMut::new();
    loop {
        if let Err(e) = handle_events(&ctx, Metric::OneWayDeviceToVes, &mut rbuf, &mut replies) {
            eprintln!("hub: {e}");
            ctx.stats.error("hub:protocol");
            return;
        }
        if !replies.is_empty() && tx.send(replies.split().freeze()).is_err() {
            return;
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => {
                    if !ctx.stop.is_cancelled() {
                        ctx.stats.error("hub:connection_lost");
                    }
                    return;
                }
                Ok(_) => {}
            },
        }
    }
}

/// Where the hub's frames go.
pub(super) enum HubOut {
    /// One connection to the broker.
    Shared(UnboundedSender<Bytes>),
    /// The sink's connection of each device.
    PerDevice,
}

/// Hub → device frames on the open-loop timetable, round robin over online devices.
pub(super) async fn run_pacer(ctx: Arc<Ctx>, out: HubOut, start: Instant, end: Instant, rate: f64) {
    let n = ctx.online.len();
    if rate <= 0.0 || n == 0 {
        return;
    }
    let period = 1.0 / rate;
    let due = |k: u64| start + Duration::from_secs_f64(period * k as f64);
    let (mut k, mut next, mut packet_id) = (0u64, 0usize, 0u16);
    let mut batch = BytesMut::new();
    loop {
        let now = Instant::now();
        while sends_now(due(k), now) && due(k) < end {
            let at = ctx.clock.send_stamp(due(k), now);
            k += 1;
            let target = (0..n).map(|step| (next + step) % n).find(|i| ctx.online[*i].load(Ordering::Relaxed));
            let Some(d) = target else {
                ctx.stats.ves_to_device.skipped_offline.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            next = d + 1;
            let sent = ctx.clock.at(now);
            let payload =
                Stamp { scheduled_unix_ns: at, sent_unix_ns: sent, seq: k, sender: 0 }.payload(ctx.frame_size);
            let queued = || {
                ctx.stats.ves_to_device.sent.fetch_add(1, Ordering::Relaxed);
                ctx.stats.recorder.record(Metric::SendDelayVesToDevice, micros_between(at, sent));
            };
            match &out {
                HubOut::Shared(_) => {
                    encode(ctx.protocol, &mut batch, &ctx.names[d].down, &mut packet_id, &payload);
                    queued();
                }
                HubOut::PerDevice => {
                    let pipe = ctx.pipes[d].lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let mut frame = BytesMut::with_capacity(payload.len() + 4);
                    wire::forward_frame(&mut frame, &payload);
                    match pipe.map(|tx| tx.send(frame.freeze())) {
                        Some(Ok(())) => queued(),
                        _ => {
                            ctx.stats.ves_to_device.skipped_offline.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        if let HubOut::Shared(tx) = &out
            && !batch.is_empty()
            && tx.send(batch.split().freeze()).is_err()
        {
            return;
        }
        if due(k) >= end {
            return;
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake_for(due(k)).into()) => {}
        }
    }
}
