//! Baseline runs: the relay benchmark's traffic shape against the brokers users would
//! otherwise pick, measured by the same code.
//!
//! One *hub* stands in for the VES and many devices for the devices, each on its own TLS
//! connection, with the same open-loop timetable, payload stamp, histograms, phases and
//! result file as a relay run (`loadtest run`), so that `bench/` can put the numbers side
//! by side:
//!
//! * **MQTT** (Mosquitto): device `i` publishes at QoS 1 to `u/i` and subscribes to `d/i`;
//!   the hub subscribes to `u/+` and publishes to `d/i`. QoS 1 is the MQTT counterpart of
//!   the relay's acknowledged frames (the broker answers every PUBLISH with a PUBACK and
//!   redelivers unacknowledged ones).
//! * **NATS**: the same with subjects `u.i`, `u.*` and `d.i` (core NATS: at most once).
//! * **Forward** (nginx's stream module, or any TLS-terminating 1:1 proxy): every device
//!   connection is proxied to its own upstream connection, which the load tool accepts
//!   itself (`--sink-listen`) and treats as the hub's end of that device's pipe. No
//!   many-to-one multiplexing, no routing decision: a forwarding ceiling.
//!
//! A frame counts as acknowledged when the other endpoint received it (end to end), so
//! `lost` means "never arrived" for every target.

pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use noc_protocol::clock::unix_ms;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::device::Timetable;
use crate::net::{NetError, SourceIps, client_config, raise_nofile_limit};
use crate::payload::{Clock, Stamp};
use crate::result::{ReportError, RunResult, Target};
use crate::run::{Assembly, Display, PhaseWindow, Reporter, assemble, drive_phases};
use crate::scenario::{Scenario, ScenarioError};
use crate::stats::{Metric, Stats};
use wire::{Event, WireError};

/// MQTT keep-alive of the simulated clients; longer than any benchmark step, so no
/// PINGREQ traffic is needed.
const MQTT_KEEP_ALIVE_SECONDS: u16 = 600;
/// Pause before a failed device connection is tried again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// Which baseline the run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerProtocol {
    /// MQTT 3.1.1 over TLS, QoS 1 (Mosquitto).
    Mqtt,
    /// The NATS client protocol over TLS (nats-server).
    Nats,
    /// A TLS-terminating 1:1 stream proxy (nginx `stream`), with the hub as its upstream.
    Forward,
}

impl PeerProtocol {
    fn scheme(self) -> &'static str {
        match self {
            PeerProtocol::Mqtt => "mqtts",
            PeerProtocol::Nats => "nats+tls",
            PeerProtocol::Forward => "tls-forward",
        }
    }

    fn next_event(self, buf: &mut BytesMut) -> Result<Option<Event>, WireError> {
        match self {
            PeerProtocol::Mqtt => wire::mqtt_next(buf),
            PeerProtocol::Nats => wire::nats_next(buf),
            PeerProtocol::Forward => wire::forward_next(buf),
        }
    }
}

/// The hub's end of the forwarding ceiling: where it listens for the proxy's upstream
/// connections, with which certificate (TLS on that hop too).
#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything a baseline run needs.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    pub protocol: PeerProtocol,
    /// The traffic shape; `ves_count` must be 1 (one hub).
    pub scenario: Scenario,
    /// The broker's (or proxy's) TLS address.
    pub addr: SocketAddr,
    /// Name checked against the broker's certificate.
    pub server_name: String,
    /// Trust anchor of the broker's certificate.
    pub cacert: PathBuf,
    /// Required for [`PeerProtocol::Forward`].
    pub sink: Option<SinkOptions>,
    pub source_ips: Vec<IpAddr>,
    /// Local broker processes to sample (summed), e.g. nginx's master and workers.
    pub peer_pids: Vec<u32>,
    pub progress: bool,
}

#[derive(Debug, Error)]
pub enum PeerError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{0}")]
    Usage(String),
    #[error("hub connection to {addr}: {message}")]
    Hub { addr: SocketAddr, message: String },
    #[error("sink certificate or key {path}: {message}")]
    SinkTls { path: PathBuf, message: String },
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Topic or subject names of one device, built once.
struct Names {
    up: String,
    down: String,
}

struct Ctx {
    protocol: PeerProtocol,
    stats: Arc<Stats>,
    clock: Clock,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    addr: SocketAddr,
    sources: SourceIps,
    connect_gate: Semaphore,
    connect_timeout: Duration,
    frame_size: usize,
    timetable: Option<Timetable>,
    stop: CancellationToken,
    names: Vec<Names>,
    /// Devices subscribed (or registered with the sink): the hub only sends to these.
    online: Vec<AtomicBool>,
    /// Forward: the sink's writer for each device's upstream connection.
    pipes: Vec<Mutex<Option<UnboundedSender<Bytes>>>>,
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Runs a baseline: ramp-up, traffic and drain exactly as a relay run, then the result.
pub async fn run_peer(opts: PeerOptions) -> Result<RunResult, PeerError> {
    let scenario = opts.scenario.clone();
    scenario.validate()?;
    if scenario.ves_count != 1 {
        return Err(PeerError::Usage("a baseline run simulates one hub: set ves_count = 1".into()));
    }
    if scenario.churn_reconnects_per_second > 0.0 || scenario.storm_at_seconds > 0.0 {
        return Err(PeerError::Usage("baseline runs have no churn or storms: set both to 0".into()));
    }
    if opts.protocol == PeerProtocol::Forward && opts.sink.is_none() {
        return Err(PeerError::Usage("--protocol forward needs --sink-listen, --sink-cert and --sink-key".into()));
    }
    let t0 = Instant::now();
    let started_unix_ms = unix_ms();
    let clock = Clock::new();
    let stats = Arc::new(Stats::new());
    let n = scenario.devices_per_ves;
    if let Ok(limit) = raise_nofile_limit() {
        let needed = 2 * n as u64 + 64; // the sink's ends too, in forward mode
        if limit < needed {
            eprintln!("warning: open-file limit {limit} is below the {needed} descriptors this run needs");
            stats.error("rlimit_nofile:too_low");
        }
    }
    let server_name = ServerName::try_from(opts.server_name.clone())
        .map_err(|_| PeerError::Usage(format!("{:?} is not a valid TLS server name", opts.server_name)))?;
    let ramp_start = Instant::now() + Duration::from_millis(100);
    let ramp = Duration::from_secs_f64(scenario.ramp_up_seconds);
    let traffic_start = ramp_start + ramp;
    let traffic_end = traffic_start + Duration::from_secs_f64(scenario.duration_seconds);
    let d2v_rate = scenario.device_to_ves_rate();
    let timetable = (d2v_rate > 0.0 && n > 0).then(|| Timetable {
        start: traffic_start,
        end: traffic_end,
        period: Duration::from_secs_f64(n as f64 / d2v_rate),
        devices: n,
    });
    let (up, down) = match opts.protocol {
        PeerProtocol::Mqtt => ("u/", "d/"),
        PeerProtocol::Nats => ("u.", "d."),
        PeerProtocol::Forward => ("", ""),
    };
    let ctx = Arc::new(Ctx {
        protocol: opts.protocol,
        stats: stats.clone(),
        clock,
        tls: TlsConnector::from(Arc::new(client_config(&opts.cacert, &[])?)),
        server_name,
        addr: opts.addr,
        sources: SourceIps::new(opts.source_ips.clone()),
        connect_gate: Semaphore::new(scenario.connect_concurrency as usize),
        connect_timeout: Duration::from_secs_f64(scenario.connect_timeout_seconds),
        frame_size: scenario.frame_size_bytes as usize,
        timetable,
        stop: CancellationToken::new(),
        names: (0..n).map(|i| Names { up: format!("{up}{i}"), down: format!("{down}{i}") }).collect(),
        online: (0..n).map(|_| AtomicBool::new(false)).collect(),
        pipes: (0..n).map(|_| Mutex::new(None)).collect(),
    });

    let mut reporter = Reporter::new(stats.clone(), clock, t0, &opts.peer_pids);
    reporter.baseline();

    // The hub first: devices' frames need a subscriber (or a sink) from the start.
    let mut tasks = Vec::new();
    let hub_out = match (opts.protocol, &opts.sink) {
        (PeerProtocol::Forward, Some(sink)) => {
            let acceptor = sink_acceptor(sink)?;
            let listener = TcpListener::bind(sink.listen)
                .await
                .map_err(|source| PeerError::Listen { addr: sink.listen, source })?;
            tasks.push(tokio::spawn(run_sink(ctx.clone(), listener, acceptor)));
            HubOut::PerDevice
        }
        _ => {
            let (tls, rbuf) = tokio::time::timeout(ctx.connect_timeout, hub_connect(&ctx))
                .await
                .unwrap_or(Err("connect:timeout"))
                .map_err(|e| PeerError::Hub { addr: opts.addr, message: e.to_string() })?;
            let (tx, rx) = unbounded_channel();
            let (rd, wr) = tokio::io::split(tls);
            tasks.push(tokio::spawn(write_loop(ctx.clone(), wr, rx)));
            tasks.push(tokio::spawn(hub_read_loop(ctx.clone(), rd, rbuf, tx.clone())));
            HubOut::Shared(tx)
        }
    };
    stats.ves_online.fetch_add(1, Ordering::Relaxed);
    let setup_seconds = t0.elapsed().as_secs_f64();

    let mut device_tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let connect_at = ramp_start + ramp.mul_f64(i as f64 / n.max(1) as f64);
        device_tasks.push(tokio::spawn(run_device(ctx.clone(), i, connect_at)));
    }
    let v2d_rate = scenario.ves_to_device_rate();
    tasks.push(tokio::spawn(run_pacer(ctx.clone(), hub_out, traffic_start, traffic_end, v2d_rate)));

    let window = PhaseWindow { t0, setup_seconds, ramp_start, traffic_start, traffic_end };
    let mut display = Display::new(opts.progress);
    let outcome = drive_phases(
        &mut reporter,
        &mut display,
        &stats,
        &window,
        &scenario,
        opts.progress,
        !opts.peer_pids.is_empty(),
    )
    .await?;

    ctx.stop.cancel();
    for t in device_tasks.into_iter().chain(tasks) {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    reporter.sample();
    let target = Target {
        relay_url: format!("{}://{}", opts.protocol.scheme(), opts.addr),
        device_addr: opts.addr.to_string(),
        source_ips: opts.source_ips.iter().map(|ip| ip.to_string()).collect(),
    };
    Ok(assemble(Assembly {
        scenario: &scenario,
        target,
        started_unix_ms,
        window: &window,
        outcome: &outcome,
        reporter: &mut reporter,
        stats: &stats,
        relay_pid: opts.peer_pids.first().copied(),
        ves_established: 1,
        relay_metrics_delta: Default::default(),
        storm: None,
    })?)
}

fn sink_acceptor(sink: &SinkOptions) -> Result<TlsAcceptor, PeerError> {
    let err = |path: &PathBuf, message: String| PeerError::SinkTls { path: path.clone(), message };
    let certs = CertificateDer::pem_file_iter(&sink.cert)
        .map_err(|e| err(&sink.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&sink.cert, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&sink.key).map_err(|e| err(&sink.key, e.to_string()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(NetError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(&sink.cert, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn io_kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect:refused",
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse => "connect:no_source_port",
        _ => "connect:tcp",
    }
}

/// NATS announces itself with an `INFO` line in plain text before the TLS handshake.
async fn read_nats_info(tcp: &mut TcpStream) -> Result<(), &'static str> {
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
async fn open(ctx: &Ctx) -> Result<ClientTls, &'static str> {
    let mut tcp = ctx.sources.connect(ctx.addr).await.map_err(|e| io_kind(&e))?;
    if ctx.protocol == PeerProtocol::Nats {
        read_nats_info(&mut tcp).await?;
    }
    ctx.tls.connect(ctx.server_name.clone(), tcp).await.map_err(|_| "connect:tls")
}

/// Reads until `ready` handshake steps completed; returns the bytes read past them.
async fn await_ready(ctx: &Ctx, tls: &mut ClientTls, mut ready: u32) -> Result<BytesMut, &'static str> {
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

async fn hub_connect(ctx: &Ctx) -> Result<(ClientTls, BytesMut), &'static str> {
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

/// MQTT packet ids: 1..=65535, never 0.
fn next_packet_id(id: &mut u16) -> u16 {
    *id = id.wrapping_add(1).max(1);
    *id
}

/// Appends one frame to `buf` in the protocol's framing, to `topic` (MQTT/NATS).
fn encode(protocol: PeerProtocol, buf: &mut BytesMut, topic: &str, packet_id: &mut u16, payload: &[u8]) {
    match protocol {
        PeerProtocol::Mqtt => wire::mqtt_publish(buf, topic, next_packet_id(packet_id), payload),
        PeerProtocol::Nats => wire::nats_publish(buf, topic, payload),
        PeerProtocol::Forward => wire::forward_frame(buf, payload),
    }
}

/// A receipt: counts it (received = acknowledged end to end) and records its latency.
fn received(ctx: &Ctx, metric: Metric, payload: &[u8]) {
    let c = match metric {
        Metric::OneWayDeviceToVes => &ctx.stats.device_to_ves,
        _ => &ctx.stats.ves_to_device,
    };
    c.received.fetch_add(1, Ordering::Relaxed);
    match Stamp::read(payload) {
        Some(s) => {
            c.acked.fetch_add(1, Ordering::Relaxed);
            ctx.stats.recorder.record(metric, ctx.clock.micros_since(s.scheduled_unix_ns));
        }
        None => {
            c.foreign_payloads.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Handles what arrived; replies (PUBACK, PONG) go to `wbuf`.
fn handle_events(ctx: &Ctx, metric: Metric, rbuf: &mut BytesMut, wbuf: &mut BytesMut) -> Result<(), WireError> {
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

/// One simulated device until the run stops: connect (again after a failure), send the
/// frames of its timetable, receive and acknowledge the hub's.
async fn run_device(ctx: Arc<Ctx>, index: u32, connect_at: Instant) {
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
            while let Some(at) = tt.due(index, *next_k).filter(|at| *at <= now) {
                *next_k += 1;
                let stamp = Stamp { scheduled_unix_ns: ctx.clock.at(at), seq: *next_k, sender: index };
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
            _ = sleep_until_or_forever(due) => {}
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes what the channel brings, many buffers per flush.
async fn write_loop<W: AsyncWrite + Unpin>(ctx: Arc<Ctx>, mut wr: W, mut rx: UnboundedReceiver<Bytes>) {
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

/// The hub's receiving side (MQTT/NATS): device frames, PUBACKs back through the writer.
async fn hub_read_loop<R: AsyncRead + Unpin>(ctx: Arc<Ctx>, mut rd: R, mut rbuf: BytesMut, tx: UnboundedSender<Bytes>) {
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
enum HubOut {
    /// One connection to the broker.
    Shared(UnboundedSender<Bytes>),
    /// The sink's connection of each device.
    PerDevice,
}

/// Hub → device frames on the open-loop timetable, round robin over online devices.
async fn run_pacer(ctx: Arc<Ctx>, out: HubOut, start: Instant, end: Instant, rate: f64) {
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
        while due(k) <= now && due(k) < end {
            let at = ctx.clock.at(due(k));
            k += 1;
            let target = (0..n).map(|step| (next + step) % n).find(|i| ctx.online[*i].load(Ordering::Relaxed));
            let Some(d) = target else {
                ctx.stats.ves_to_device.skipped_offline.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            next = d + 1;
            let payload = Stamp { scheduled_unix_ns: at, seq: k, sender: 0 }.payload(ctx.frame_size);
            match &out {
                HubOut::Shared(_) => {
                    encode(ctx.protocol, &mut batch, &ctx.names[d].down, &mut packet_id, &payload);
                    ctx.stats.ves_to_device.sent.fetch_add(1, Ordering::Relaxed);
                }
                HubOut::PerDevice => {
                    let pipe = ctx.pipes[d].lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let mut frame = BytesMut::with_capacity(payload.len() + 4);
                    wire::forward_frame(&mut frame, &payload);
                    match pipe.map(|tx| tx.send(frame.freeze())) {
                        Some(Ok(())) => {
                            ctx.stats.ves_to_device.sent.fetch_add(1, Ordering::Relaxed);
                        }
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
            _ = tokio::time::sleep_until(due(k).into()) => {}
        }
    }
}

/// The forwarding ceiling's hub: accepts the proxy's upstream connections.
async fn run_sink(ctx: Arc<Ctx>, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(sink_connection(ctx.clone(), tcp, acceptor.clone()));
            }
            Err(_) => {
                ctx.stats.error("sink:accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One device's pipe at the sink: HELLO names the device, READY answers it, then frames
/// both ways.
async fn sink_connection(ctx: Arc<Ctx>, tcp: TcpStream, acceptor: TlsAcceptor) {
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        ctx.stats.error("sink:tls");
        return;
    };
    let mut rbuf = BytesMut::with_capacity(512);
    let index = loop {
        match wire::forward_next(&mut rbuf) {
            Ok(Some(Event::Data { payload, .. })) => match wire::forward_hello_index(&payload) {
                Some(i) if (i as usize) < ctx.pipes.len() => break i as usize,
                _ => {
                    ctx.stats.error("sink:bad_hello");
                    return;
                }
            },
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(_) => {
                ctx.stats.error("sink:protocol");
                return;
            }
        }
        match tls.read_buf(&mut rbuf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    };
    // The pipe is registered before READY: the device counts as online (and the pacer
    // may pick it) as soon as it reads READY.
    let (tx, mut rx) = unbounded_channel::<Bytes>();
    *ctx.pipes[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let mut ready = BytesMut::new();
    wire::forward_frame(&mut ready, wire::FORWARD_READY);
    if tls.write_all(&ready).await.is_err() || tls.flush().await.is_err() {
        ctx.stats.error("sink:write");
        *ctx.pipes[index].lock().unwrap_or_else(|p| p.into_inner()) = None;
        return;
    }
    let mut ignored = BytesMut::new();
    let mut batch = Vec::with_capacity(64);
    loop {
        if handle_events(&ctx, Metric::OneWayDeviceToVes, &mut rbuf, &mut ignored).is_err() {
            ctx.stats.error("sink:protocol");
            break;
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            r = tls.read_buf(&mut rbuf) => if !matches!(r, Ok(n) if n > 0) { break },
            got = rx.recv_many(&mut batch, 64) => {
                if got == 0 { break }
                let mut failed = false;
                for b in batch.drain(..) {
                    failed |= tls.write_all(&b).await.is_err();
                }
                if failed || tls.flush().await.is_err() {
                    ctx.stats.error("sink:write");
                    break;
                }
            }
        }
    }
    *ctx.pipes[index].lock().unwrap_or_else(|p| p.into_inner()) = None;
}
