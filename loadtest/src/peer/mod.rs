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

mod conn;
mod device;
mod hub;
mod options;
mod sink;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::unbounded_channel;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::measurement::{Measurement, RunFacts};
use crate::net::{SourceIps, client_config, raise_nofile_limit};
use crate::peer::conn::{Ctx, Names, write_loop};
use crate::peer::device::run_device;
use crate::peer::hub::{HubOut, hub_connect, hub_read_loop, run_pacer};
use crate::peer::sink::{run_sink, sink_acceptor};
use crate::phases::Schedule;
use crate::result::{RunResult, Target};

pub use options::{PeerError, PeerOptions, PeerProtocol, SinkOptions};

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
    let mut m = Measurement::new(scenario.clone(), opts.progress, &opts.peer_pids);
    let (stats, clock) = (m.stats.clone(), m.clock);
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
    let schedule = Schedule::new(&scenario, Instant::now() + Duration::from_millis(100), n);
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
        timetable: schedule.timetable,
        stop: CancellationToken::new(),
        names: (0..n).map(|i| Names { up: format!("{up}{i}"), down: format!("{down}{i}") }).collect(),
        online: (0..n).map(|_| AtomicBool::new(false)).collect(),
        pipes: (0..n).map(|_| Mutex::new(None)).collect(),
    });

    m.reporter.baseline();

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
    let setup_seconds = m.t0.elapsed().as_secs_f64();

    let mut device_tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        device_tasks.push(tokio::spawn(run_device(ctx.clone(), i, schedule.connect_at(i))));
    }
    let v2d_rate = scenario.ves_to_device_rate();
    let (start, end) = (schedule.traffic_start, schedule.traffic_end);
    tasks.push(tokio::spawn(run_pacer(ctx.clone(), hub_out, start, end, v2d_rate)));

    let window = schedule.window(m.t0, setup_seconds);
    let outcome = m.phases(&window).await?;

    ctx.stop.cancel();
    for t in device_tasks.into_iter().chain(tasks) {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let facts = RunFacts {
        target: Target {
            relay_url: format!("{}://{}", opts.protocol.scheme(), opts.addr),
            device_addr: opts.addr.to_string(),
            source_ips: opts.source_ips.iter().map(|ip| ip.to_string()).collect(),
        },
        ves_established: 1,
        relay_metrics_delta: Default::default(),
        storm: None,
    };
    Ok(m.result(&window, &outcome, facts)?)
}
