//! Micro-benchmark of the relay's per-frame path, so regressions show up in review:
//!
//! * `decode`: a FORWARD frame (256-byte payload) out of a read buffer with the shared
//!   `FrameCodec`;
//! * `device_to_ves/route`: decode + `Router::device_to_ves` onto a VES command-channel
//!   queue; `device_to_ves/full` adds the command channel's send loop (the `DeviceFrame`
//!   NDJSON line with its base64 payload);
//! * `ves_to_device/route`: `Router::ves_to_device` (ownership check + device queue);
//!   `ves_to_device/full` adds the base64 decode of the `Frames` payload before it (into
//!   one buffer per request, as the data channel does) and the device writer's FORWARD
//!   encoding after it.
//!
//! Real sessions are used (a `VesSession` actor with an attached `CommandStream`, a device
//! registered in the router with its queue), created inside an actix system; the measured
//! calls themselves need no runtime. TLS, HTTP and JSON request parsing are not included:
//! the load tool (`loadtest/`) measures the whole relay.
//!
//! Before the timings it prints the heap allocations per frame of each path, counted by
//! the global allocator on the measuring thread over 4 096 frames after a warm-up (the
//! steady state: queues and buffers already grown). There the device → VES frames come
//! through the device session's read loop (`FrameReader`, one frame per socket read, as
//! a device's TLS records arrive), and the command channel is drained every
//! [`DRAIN_EVERY`] frames, as its stream is polled after every few frames in a running
//! relay.
//!
//! Run: `cargo bench -p noc-actors --bench frame_path`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use noc_actors::queue::{self, QueueReceiver};
use noc_actors::{
    Attach, CloseSession, CommandStream, DeviceHandle, DeviceOut, FrameReader, Metrics, Router, RtsSession,
    RtsSessions, SessionConfig, VesInbox, VesSession,
};
use noc_cluster::{DeviceItem, MemoryCluster, NodeId, VesItem};
use noc_protocol::device::{ForwardKind, Frame, FrameCodec};
use noc_protocol::{DeviceId, LicenseId, UserId, VesId};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::Decoder;

/// Counts every allocation and reallocation (the workspace forbids `unsafe`, so the
/// counting allocator is `stats_alloc`'s). The actors' arbiter is not driven while a count
/// runs, so what is counted is the measuring thread's work.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Allocations (and reallocations) `f` makes.
fn allocations(f: impl FnOnce()) -> u64 {
    let region = stats_alloc::Region::new(GLOBAL);
    f();
    let change = region.change();
    (change.allocations + change.reallocations) as u64
}

const PAYLOAD_BYTES: usize = 256;
/// Frames between two (untimed) drains of the target queue; below both queues' capacity.
const BATCH: u64 = 1024;

/// Stands in for a device session's actor: the router only needs its close recipient.
struct Sink;

impl Actor for Sink {
    type Context = actix::Context<Self>;
}

impl Handler<CloseSession> for Sink {
    type Result = ();
    fn handle(&mut self, _: CloseSession, _: &mut actix::Context<Self>) {}
}

struct Fixture {
    router: Arc<Router>,
    ves: Arc<VesInbox>,
    stream: CommandStream,
    device_id: DeviceId,
    device_rx: QueueReceiver<DeviceOut>,
    /// The device session's stand-in (the router holds it weakly).
    _device: Addr<Sink>,
    /// Keeps the actors' arbiter alive.
    _system: SystemRunner,
}

impl Fixture {
    fn new() -> Self {
        let system = System::new();
        let (ves_id, device_id, user_id) = (VesId::random(), DeviceId::random(), UserId::random());
        let cfg = Arc::new(SessionConfig {
            ves_send_queue_items: 4 * BATCH as usize,
            device_send_queue_frames: 4 * BATCH as usize,
            ..SessionConfig::default()
        });
        let (router, ves, stream, device_rx, device) = system.block_on(async move {
            let metrics = Arc::new(Metrics::new());
            let cluster = Arc::new(MemoryCluster::single(NodeId::new("bench"), 1024));
            let router = Router::new(cluster, metrics.clone());
            let rts = RtsSessions::new(Duration::from_secs(30), metrics);
            let ves = Arc::new(VesInbox::new(ves_id, router.next_session_id(), Vec::new(), vec![(device_id, user_id)]));
            let session = Arc::new(RtsSession::new(
                ves.clone(),
                LicenseId::random(),
                "bench".into(),
                noc_protocol::secrets::token_hash(b"key"),
            ));
            let addr = VesSession::new(session, router.clone(), rts, cfg.clone()).start();
            let stream =
                addr.send(Attach { resumed: false, protocol_version: 1 }).await.expect("mailbox").expect("attached");
            let (tx, rx) = queue::bounded(cfg.device_send_queue_frames);
            let device = Sink.start();
            let control = device.downgrade().recipient();
            let handle = DeviceHandle { session: router.next_session_id(), user_id, ves_id, tx, control };
            router.register_device(device_id, handle);
            // Let the registrations (cluster claims) run.
            actix_rt::time::sleep(Duration::from_millis(10)).await;
            (router, ves, stream, rx, device)
        });
        let mut f = Self { router, ves, stream, device_id, device_rx, _device: device, _system: system };
        f.drain_ves();
        f.drain_device();
        f
    }

    /// Polls the command channel's send loop until it has nothing ready; returns bytes.
    fn drain_ves(&mut self) -> usize {
        let mut cx = Context::from_waker(Waker::noop());
        let mut n = 0;
        while let Poll::Ready(Some(Ok(chunk))) = self.stream.poll_next_unpin(&mut cx) {
            n += chunk.len();
        }
        n
    }

    fn drain_device(&mut self) -> usize {
        let mut n = 0;
        while self.device_rx.try_recv().is_some() {
            n += 1;
        }
        n
    }
}

fn forward_bytes(frames: u64) -> BytesMut {
    let mut buf = BytesMut::with_capacity(frames as usize * (PAYLOAD_BYTES + 14));
    let payload = Bytes::from(vec![0xA5u8; PAYLOAD_BYTES]);
    for i in 0..frames {
        Frame::Forward { kind: ForwardKind::Data, frame_id: i, payload: payload.clone() }.encode(&mut buf);
    }
    buf
}

fn decode(codec: &mut FrameCodec, buf: &mut BytesMut) -> (ForwardKind, u64, Bytes) {
    match codec.decode(buf) {
        Ok(Some(Frame::Forward { kind, frame_id, payload })) => (kind, frame_id, payload),
        other => panic!("expected a FORWARD, got {other:?}"),
    }
}

/// Times `per_batch` over `iters` frames in batches, running `untimed` between batches.
fn timed_batches(
    f: &mut Fixture,
    iters: u64,
    mut per_batch: impl FnMut(&mut Fixture, u64) -> Duration,
    mut untimed: impl FnMut(&mut Fixture),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = BATCH.min(iters - done);
        total += per_batch(f, n);
        untimed(f);
        done += n;
    }
    total
}

/// Frames per allocation count.
const COUNTED: u64 = 4096;
/// Frames the command channel takes between two drains in the allocation count.
const DRAIN_EVERY: u64 = 32;
/// Bytes of one encoded FORWARD frame with a PAYLOAD_BYTES payload.
const FORWARD_WIRE_BYTES: usize = PAYLOAD_BYTES + 14;

/// A socket whose reads return at most one piece of `piece` bytes.
struct Pieces {
    data: Bytes,
    piece: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.piece.min(self.data.len()).min(buf.remaining());
        let piece = self.data.split_to(n);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

/// A device session's read loop over `frames` FORWARDs that arrive one per socket read.
fn device_reader(frames: u64) -> FrameReader<Pieces> {
    let socket = Pieces { data: forward_bytes(frames).freeze(), piece: FORWARD_WIRE_BYTES };
    FrameReader::new(socket, FrameCodec::default(), BytesMut::new(), 16 * 1024)
}

/// The next FORWARD out of a read loop.
fn read_forward(reader: &mut FrameReader<Pieces>) -> (ForwardKind, u64, Bytes) {
    match reader.poll_next_unpin(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Some(Ok(Frame::Forward { kind, frame_id, payload }))) => (kind, frame_id, payload),
        other => panic!("expected a FORWARD, got {other:?}"),
    }
}

/// Allocations of COUNTED device → VES frames read and routed; with `drain_counted` the
/// command channel's draining every DRAIN_EVERY frames counts too (the full path),
/// otherwise it happens outside the count (routing alone).
fn device_to_ves_rounds(
    f: &mut Fixture,
    (ves_id, device_id, user_id): (VesId, DeviceId, UserId),
    drain_counted: bool,
) -> u64 {
    let mut reader = device_reader(COUNTED);
    let mut total = 0;
    for _ in 0..COUNTED / DRAIN_EVERY {
        total += allocations(|| {
            for _ in 0..DRAIN_EVERY {
                let (kind, frame_id, payload) = read_forward(&mut reader);
                let item = VesItem::Frame { device_id, user_id, frame_id, kind, payload };
                f.router.device_to_ves(ves_id, item).expect("queued");
            }
            if drain_counted {
                std::hint::black_box(f.drain_ves());
            }
        });
        if !drain_counted {
            f.drain_ves();
        }
    }
    total
}

/// Prints the allocations per frame of each path (decode, routing, the send loops), in
/// the steady state: a first round grows every queue and buffer, the second is counted.
/// Each round builds its input and drains its queue outside the count.
fn allocation_report(f: &mut Fixture) {
    let (ves_id, device_id, user_id) = (f.ves.ves_id, f.device_id, UserId::random());
    let payload = Bytes::from(vec![0x5Au8; PAYLOAD_BYTES]);
    let b64 = noc_protocol::rts::encode_payload(&payload);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut rows: Vec<(&str, f64)> = Vec::new();
    // `round` returns the allocations it counted; the second of two rounds is reported.
    let mut report = |name: &'static str, f: &mut Fixture, round: &mut dyn FnMut(&mut Fixture) -> u64| {
        round(f);
        rows.push((name, round(f) as f64 / COUNTED as f64));
    };
    report("read/forward_256B", f, &mut |_| {
        let mut reader = device_reader(COUNTED);
        allocations(|| {
            for _ in 0..COUNTED {
                std::hint::black_box(read_forward(&mut reader));
            }
        })
    });
    let ids = (ves_id, device_id, user_id);
    report("device_to_ves/route", f, &mut |f| device_to_ves_rounds(f, ids, false));
    report("device_to_ves/full", f, &mut |f| device_to_ves_rounds(f, ids, true));
    report("ves_to_device/route", f, &mut |f| {
        let mut total = 0;
        for _ in 0..COUNTED / BATCH {
            total += allocations(|| {
                for i in 0..BATCH {
                    let payload = payload.clone();
                    let item = DeviceItem::Forward { origin: ves_id, kind: ForwardKind::Data, frame_id: i, payload };
                    f.router.ves_to_device(&f.ves, device_id, item).expect("queued");
                }
            });
            f.drain_device();
        }
        total
    });
    report("ves_to_device/full", f, &mut |f| {
        let mut total = 0;
        for _ in 0..COUNTED / BATCH {
            // As the data channel does: one buffer for a request's payloads.
            let mut payloads = BytesMut::with_capacity(BATCH as usize * noc_protocol::rts::decoded_len_estimate(&b64));
            total += allocations(|| {
                for i in 0..BATCH {
                    let bytes = noc_protocol::rts::decode_payload_into(&b64, &mut payloads).expect("base64");
                    let item =
                        DeviceItem::Forward { origin: ves_id, kind: ForwardKind::Data, frame_id: i, payload: bytes };
                    f.router.ves_to_device(&f.ves, device_id, item).expect("queued");
                    if let Some(DeviceOut::Item(DeviceItem::Forward { kind, frame_id, payload, .. })) =
                        f.device_rx.try_recv()
                    {
                        Frame::Forward { kind, frame_id, payload }.encode(&mut out);
                    }
                }
            });
            out.clear();
        }
        total
    });
    eprintln!("heap allocations per frame (steady state, {COUNTED} frames):");
    for (name, n) in rows {
        eprintln!("  {name:<22} {n:.3}");
    }
}

fn bench(c: &mut Criterion) {
    let mut f = Fixture::new();
    allocation_report(&mut f);
    let (ves_id, device_id) = (f.ves.ves_id, f.device_id);
    let user_id = UserId::random();
    let mut codec = FrameCodec::default();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward_256B", |b| {
        b.iter_custom(|iters| {
            timed_batches(
                &mut f,
                iters,
                |_, n| {
                    let mut buf = forward_bytes(n);
                    let start = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(decode(&mut codec, &mut buf));
                    }
                    start.elapsed()
                },
                |_| {},
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("device_to_ves");
    g.throughput(Throughput::Elements(1));
    g.bench_function("route", |b| {
        b.iter_custom(|iters| {
            let mut drained = 0;
            let t = timed_batches(
                &mut f,
                iters,
                |f, n| {
                    let mut buf = forward_bytes(n);
                    let start = Instant::now();
                    for _ in 0..n {
                        let (kind, frame_id, payload) = decode(&mut codec, &mut buf);
                        let item = VesItem::Frame { device_id, user_id, frame_id, kind, payload };
                        f.router.device_to_ves(ves_id, item).expect("queued");
                    }
                    start.elapsed()
                },
                |f| drained += f.drain_ves(),
            );
            std::hint::black_box(drained);
            t
        })
    });
    g.bench_function("full", |b| {
        b.iter_custom(|iters| {
            timed_batches(
                &mut f,
                iters,
                |f, n| {
                    let mut buf = forward_bytes(n);
                    let start = Instant::now();
                    for _ in 0..n {
                        let (kind, frame_id, payload) = decode(&mut codec, &mut buf);
                        let item = VesItem::Frame { device_id, user_id, frame_id, kind, payload };
                        f.router.device_to_ves(ves_id, item).expect("queued");
                    }
                    std::hint::black_box(f.drain_ves());
                    start.elapsed()
                },
                |_| {},
            )
        })
    });
    g.finish();

    let payload = Bytes::from(vec![0x5Au8; PAYLOAD_BYTES]);
    let b64 = noc_protocol::rts::encode_payload(&payload);
    let mut g = c.benchmark_group("ves_to_device");
    g.throughput(Throughput::Elements(1));
    g.bench_function("route", |b| {
        b.iter_custom(|iters| {
            timed_batches(
                &mut f,
                iters,
                |f, n| {
                    let start = Instant::now();
                    for i in 0..n {
                        let item = DeviceItem::Forward {
                            origin: ves_id,
                            kind: ForwardKind::Data,
                            frame_id: i,
                            payload: payload.clone(),
                        };
                        f.router.ves_to_device(&f.ves, device_id, item).expect("queued");
                    }
                    start.elapsed()
                },
                |f| {
                    f.drain_device();
                },
            )
        })
    });
    g.bench_function("full", |b| {
        let mut out = BytesMut::with_capacity(64 * 1024);
        b.iter_custom(|iters| {
            timed_batches(
                &mut f,
                iters,
                |f, n| {
                    let start = Instant::now();
                    let mut payloads =
                        BytesMut::with_capacity(n as usize * noc_protocol::rts::decoded_len_estimate(&b64));
                    for i in 0..n {
                        let bytes = noc_protocol::rts::decode_payload_into(&b64, &mut payloads).expect("base64");
                        let item = DeviceItem::Forward {
                            origin: ves_id,
                            kind: ForwardKind::Data,
                            frame_id: i,
                            payload: bytes,
                        };
                        f.router.ves_to_device(&f.ves, device_id, item).expect("queued");
                        if let Some(DeviceOut::Item(DeviceItem::Forward { kind, frame_id, payload, .. })) =
                            f.device_rx.try_recv()
                        {
                            Frame::Forward { kind, frame_id, payload }.encode(&mut out);
                        }
                    }
                    let t = start.elapsed();
                    out.clear();
                    t
                },
                |_| {},
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
