//! One load-test run against the relay, phase by phase:
//!
//! ```text
//! setup   licence, VES sessions, users and devices provisioned (credentials file)  [setup]
//! launch  VES channels, device tasks on their ramp schedule, pacers, storm, churn  [launch]
//! ramp ──▶ traffic ──▶ drain, measured                           [crate::phases::drive_phases]
//! stop    devices send CLOSE, VES drop their channels                              [Running::stop]
//! report  the result file                                        [report, crate::assemble]
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use noc_protocol::clock::unix_ms;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::device::{DeviceContext, DeviceSpec, run_device};
use crate::display::Display;
use crate::measurement::{Measurement, RunFacts};
use crate::net::{NetError, SourceIps, client_config, raise_nofile_limit};
use crate::payload::Clock;
use crate::phases::Schedule;
use crate::reporter::Reporter;
use crate::result::{ReportError, RunResult, StormResult, Target};
use crate::rts_client::{RtsClient, RtsError, url_host};
use crate::scenario::{Scenario, ScenarioError};
use crate::setup::{Credentials, DeviceCredentials, LicenseSource, SetupError, ensure_license, prepare_ves};
use crate::stats::Stats;
use crate::storm::{Storm, churn};
use crate::ves::{VesSettings, VesSim};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("RTS client: {0}")]
    Client(#[from] RtsError),
    #[error("opening the RTS session of VES {ves}: {source}")]
    Ves { ves: u32, source: RtsError },
    #[error("device channel address: {0}")]
    DeviceAddr(String),
    #[error("credential of device {0} is not 64 hex digits")]
    Credential(String),
    #[error("device {0} has no client certificate in the credentials file (run the setup again)")]
    NoCertificate(String),
    #[error("the start time (--start-at-unix-ms {at}) passed {late_ms} ms before setup ended; choose a later one")]
    StartPassed { at: u64, late_ms: u64 },
}

/// Everything a run needs besides the scenario's own keys.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenario: Scenario,
    /// The relay's public URL, `https://host:port`.
    pub relay_url: String,
    /// Trust anchor (the relay's certificate).
    pub cacert: PathBuf,
    /// Connect here instead of resolving the URL's host (TLS still checks the host).
    pub connect_ip: Option<IpAddr>,
    /// Device channel; default: the address device activation returned.
    pub device_addr: Option<SocketAddr>,
    /// Name checked against the device channel's certificate; default: the URL's host.
    pub tls_server_name: Option<String>,
    pub source_ips: Vec<IpAddr>,
    pub license: LicenseSource,
    pub credentials: PathBuf,
    /// Local relay processes to sample (`/proc/PID`), summed.
    pub relay_pids: Vec<u32>,
    /// The relay's admin `/metrics` URL, to report its own counters beside the tool's.
    /// Several are summed series by series (the nodes of a cluster).
    pub relay_metrics_urls: Vec<String>,
    /// Progress display: bars on a terminal, periodic lines otherwise.
    pub progress: bool,
    /// Stop after setup (credentials ready), without traffic.
    pub setup_only: bool,
    /// Begin the ramp at this wall-clock moment (Unix ms) instead of right after setup, so
    /// that the workers of a campaign go through their phases (and storms) together.
    pub start_at_unix_ms: Option<u64>,
}

/// How long after now the ramp begins: at the campaign's agreed moment, or right away.
fn ramp_delay(start_at_unix_ms: Option<u64>, now_unix_ms: u64) -> Result<Duration, RunError> {
    match start_at_unix_ms {
        None => Ok(Duration::from_millis(100)),
        Some(at) if at > now_unix_ms => Ok(Duration::from_millis(at - now_unix_ms)),
        Some(at) => Err(RunError::StartPassed { at, late_ms: now_unix_ms - at }),
    }
}

/// Runs a load test. Returns `None` when `setup_only` is set.
pub async fn run(opts: RunOptions) -> Result<Option<RunResult>, RunError> {
    let scenario = opts.scenario.clone();
    scenario.validate()?;
    let mut m = Measurement::new(scenario.clone(), opts.progress, &opts.relay_pids);
    let (stats, clock) = (m.stats.clone(), m.clock);
    let sources = Arc::new(sockets(&opts, &scenario, &stats));
    let http_tls = client_config(&opts.cacert, &[b"http/1.1"])?;

    let setup = setup(&opts, &scenario, &stats, clock, &sources, &http_tls, &mut m.display).await?;
    let setup_seconds = m.t0.elapsed().as_secs_f64();
    if opts.setup_only {
        return Ok(None);
    }
    let running = launch(&opts, &scenario, &stats, clock, &sources, setup.ves, &setup.creds, &mut m.reporter).await?;
    let window = running.schedule.window(m.t0, setup_seconds);
    let device_addr = running.device_addr;
    let outcome = m.phases(&window).await?;
    let (ves_established, storm) = running.stop().await;

    let relay_metrics_end = scrape(&setup.client, &opts.relay_metrics_urls).await;
    let facts = RunFacts {
        target: Target {
            relay_url: opts.relay_url.clone(),
            device_addr: device_addr.to_string(),
            source_ips: sources.ips().iter().map(|ip| ip.to_string()).collect(),
        },
        ves_established,
        relay_metrics_delta: counters_delta(&setup.relay_metrics_start, relay_metrics_end),
        storm,
    };
    Ok(Some(m.result(&window, &outcome, facts)?))
}

/// The open-file limit raised to what the scenario needs, and the source addresses, with
/// a warning where the machine cannot hold that many connections.
fn sockets(opts: &RunOptions, scenario: &Scenario, stats: &Stats) -> SourceIps {
    let sessions = scenario.total_devices() + 64;
    match raise_nofile_limit() {
        Ok(n) if n < sessions => {
            eprintln!("warning: open-file limit {n} is below the {sessions} descriptors this scenario needs");
            stats.error("rlimit_nofile:too_low");
        }
        Ok(_) => {}
        Err(e) => stats.error(format!("rlimit_nofile:{}", e.kind())),
    }
    if let Some(ports) = ephemeral_ports() {
        let addresses = opts.source_ips.len().max(1) as u64;
        if sessions > ports * addresses {
            eprintln!(
                "warning: {sessions} connections from {addresses} source address(es) with {ports} ephemeral ports \
                 each: pass more --source-ips (e.g. 127.0.0.1-127.0.0.8)"
            );
        }
    }
    SourceIps::new(opts.source_ips.clone())
}

/// What setup leaves for the run.
struct SetupDone {
    /// The client of setup, kept for the relays' metrics at the end.
    client: RtsClient,
    /// Each VES's session and the response that is its command channel.
    ves: Vec<(Arc<VesSim>, reqwest::Response)>,
    creds: Credentials,
    relay_metrics_start: BTreeMap<String, f64>,
}

/// Phase 1: the license, one RTS session per VES, and the scenario's users and devices
/// provisioned and activated (or taken from the credentials file of an earlier run).
async fn setup(
    opts: &RunOptions,
    scenario: &Scenario,
    stats: &Arc<Stats>,
    clock: Clock,
    sources: &SourceIps,
    http_tls: &ClientConfig,
    display: &mut Display,
) -> Result<SetupDone, RunError> {
    let t0 = Instant::now();
    let pool = scenario.setup_concurrency as usize + 4;
    let client = RtsClient::new(&opts.relay_url, http_tls.clone(), opts.connect_ip, sources.next(), pool)?;
    let mut creds = Credentials::load_or_new(&opts.credentials, &opts.relay_url)?;
    creds.shape_for(scenario);
    ensure_license(&mut creds, &opts.license, &client).await?;
    creds.save(&opts.credentials)?;
    let relay_metrics_start = scrape(&client, &opts.relay_metrics_urls).await;
    let settings = VesSettings {
        frame_size: scenario.frame_size_bytes as usize,
        max_inflight: scenario.ves_max_inflight_requests as usize,
        batch_max: scenario.ves_batch_max_frames as usize,
        flush_interval: Duration::from_millis(scenario.ves_flush_interval_ms),
        ack_batch_max: scenario.ack_batch_max as usize,
        ack_flush_interval: Duration::from_millis(scenario.ack_flush_interval_ms),
    };
    let mut ves_list = Vec::new();
    for v in 0..scenario.ves_count {
        let pool = settings.max_inflight.max(scenario.setup_concurrency as usize) + 2;
        let ves_client = RtsClient::new(&opts.relay_url, http_tls.clone(), opts.connect_ip, sources.next(), pool)?;
        let guid = creds.ves[v as usize].guid.clone();
        let opened =
            VesSim::open(v, ves_client, guid, creds.license_token.clone(), settings.clone(), stats.clone(), clock)
                .await;
        ves_list.push(opened.map_err(|source| RunError::Ves { ves: v, source })?);
    }
    display.start(scenario.total_devices(), "  setup [{elapsed_precise}] [{bar:40}] {pos}/{len} devices ready {msg}");
    let creds = Mutex::new(creds);
    let ready = Arc::new(AtomicU64::new(0));
    let bar = display.bar.clone();
    let progress = {
        let ready = ready.clone();
        move |n: u64| {
            let total = ready.fetch_add(n, Ordering::Relaxed) + n;
            if let Some(b) = &bar {
                b.set_position(total);
            }
        }
    };
    for (v, (ves, _)) in ves_list.iter().enumerate() {
        let keys = ves.keys().await;
        prepare_ves(ves.client(), &keys, &creds, &opts.credentials, v, scenario, &progress).await?;
    }
    display.finish();
    let creds = creds.into_inner().unwrap_or_else(|p| p.into_inner());
    if opts.progress {
        eprintln!(
            "setup: {} devices of {} VES ready in {:.1} s ({})",
            ready.load(Ordering::Relaxed),
            scenario.ves_count,
            t0.elapsed().as_secs_f64(),
            opts.credentials.display()
        );
    }
    Ok(SetupDone { client, ves: ves_list, creds, relay_metrics_start })
}

/// Where the devices connect, and the name their TLS checks.
async fn device_target(
    opts: &RunOptions,
    first: Option<&DeviceCredentials>,
) -> Result<(SocketAddr, ServerName<'static>), RunError> {
    let addr = match (opts.device_addr, first) {
        (Some(a), _) => a,
        (None, Some(d)) => match opts.connect_ip {
            Some(ip) => SocketAddr::new(ip, d.port),
            None => tokio::net::lookup_host((d.host.as_str(), d.port))
                .await
                .map_err(|e| RunError::DeviceAddr(format!("{}:{}: {e}", d.host, d.port)))?
                .next()
                .ok_or_else(|| RunError::DeviceAddr(format!("{}:{} has no address", d.host, d.port)))?,
        },
        (None, None) => "127.0.0.1:8444".parse().map_err(|_| RunError::DeviceAddr("default".into()))?,
    };
    let name = opts
        .tls_server_name
        .clone()
        .or_else(|| url_host(&opts.relay_url).map(String::from))
        .ok_or_else(|| RunError::DeviceAddr(format!("no host in {}", opts.relay_url)))?;
    let name = ServerName::try_from(name.clone())
        .map_err(|_| RunError::DeviceAddr(format!("{name:?} is not a valid TLS server name")))?;
    Ok((addr, name))
}

/// Everything that runs during the timed phases.
struct Running {
    schedule: Schedule,
    device_addr: SocketAddr,
    ves: Vec<Arc<VesSim>>,
    device_tasks: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    stop_devices: CancellationToken,
    stop_ves: CancellationToken,
    storm: Arc<Mutex<Option<StormResult>>>,
}

/// Phase 2: the VES command channels and ack senders, then (after the memory baseline)
/// every device on its ramp schedule, the VES pacers, the storm and the churn.
#[allow(clippy::too_many_arguments)]
async fn launch(
    opts: &RunOptions,
    scenario: &Scenario,
    stats: &Arc<Stats>,
    clock: Clock,
    sources: &Arc<SourceIps>,
    mut ves_list: Vec<(Arc<VesSim>, reqwest::Response)>,
    creds: &Credentials,
    reporter: &mut Reporter,
) -> Result<Running, RunError> {
    let mut devices = Vec::new();
    for (v, (ves, _)) in ves_list.iter_mut().enumerate() {
        let of_ves = creds.devices_of(v, scenario);
        if !ves.with_devices(of_ves.iter().map(|d| d.device_id).collect()) {
            return Err(RunError::DeviceAddr("internal: VES shared before setup ended".into()));
        }
        devices.extend(of_ves);
    }
    let (device_addr, server_name) = device_target(opts, devices.first()).await?;
    let device_tls = TlsConnector::from(Arc::new(client_config(&opts.cacert, &[])?));

    let stop_ves = CancellationToken::new();
    let stop_devices = CancellationToken::new();
    let mut ves = Vec::new();
    let mut tasks = Vec::new();
    for (sim, resp) in ves_list {
        tasks.push(tokio::spawn(sim.clone().run_channel(resp, stop_ves.clone())));
        tasks.push(tokio::spawn(sim.clone().run_acks(stop_ves.clone())));
        ves.push(sim);
    }
    reporter.baseline();

    let n = devices.len() as u32;
    let schedule = Schedule::new(scenario, Instant::now() + ramp_delay(opts.start_at_unix_ms, unix_ms())?, n);
    let ctx = Arc::new(DeviceContext {
        stats: stats.clone(),
        clock,
        tls: device_tls,
        server_name,
        addr: device_addr,
        sources: sources.clone(),
        connect_gate: Arc::new(Semaphore::new(scenario.connect_concurrency as usize)),
        connect_timeout: Duration::from_secs_f64(scenario.connect_timeout_seconds),
        frame_size: scenario.frame_size_bytes as usize,
        heartbeat: (scenario.device_heartbeat_interval_seconds > 0)
            .then(|| Duration::from_secs(scenario.device_heartbeat_interval_seconds)),
        answer_heartbeats: scenario.device_answers_heartbeats,
        timetable: schedule.timetable,
        stop: stop_devices.clone(),
    });
    let mut reconnects = Vec::with_capacity(devices.len());
    let mut device_tasks = Vec::with_capacity(devices.len());
    let certificate_configs = match scenario.device_client_certificates {
        true => Some(crate::net::CertificateConfigs::new(&opts.cacert)?),
        false => None,
    };
    for (i, d) in devices.iter().enumerate() {
        let credential = hex::decode(&d.credential).map_err(|_| RunError::Credential(d.device_id.to_string()))?;
        let certificate_tls = match (&certificate_configs, &d.certificate, &d.key) {
            (None, _, _) => None,
            (Some(configs), Some(cert), Some(key)) => Some(TlsConnector::from(Arc::new(configs.device(cert, key)?))),
            (Some(_), _, _) => return Err(RunError::NoCertificate(d.device_id.to_string())),
        };
        let notify = Arc::new(Notify::new());
        reconnects.push(notify.clone());
        let spec = DeviceSpec {
            index: i as u32,
            device_id: d.device_id,
            credential: Bytes::from(credential),
            certificate_tls,
            connect_at: schedule.connect_at(i as u32),
            churn: notify,
        };
        device_tasks.push(tokio::spawn(run_device(ctx.clone(), spec)));
    }
    let v2d_rate = scenario.ves_to_device_rate() / scenario.ves_count as f64;
    for sim in &ves {
        let (start, end) = (schedule.traffic_start, schedule.traffic_end);
        tasks.push(tokio::spawn(sim.clone().run_pacer(start, end, v2d_rate, stop_ves.clone())));
    }
    let storm = Arc::new(Mutex::new(None));
    if scenario.storm_at_seconds > 0.0 && !reconnects.is_empty() {
        let storm_task = Storm {
            stats: stats.clone(),
            devices: reconnects.clone(),
            at: schedule.traffic_start + Duration::from_secs_f64(scenario.storm_at_seconds),
            at_seconds: scenario.storm_at_seconds,
            deadline: schedule.traffic_end + Duration::from_secs_f64(scenario.drain_timeout_seconds),
            relay_pids: opts.relay_pids.clone(),
            stop: stop_devices.clone(),
            out: storm.clone(),
        };
        tasks.push(tokio::spawn(storm_task.run()));
    }
    if scenario.churn_reconnects_per_second > 0.0 && !reconnects.is_empty() {
        let every = Duration::from_secs_f64(1.0 / scenario.churn_reconnects_per_second);
        let (start, end) = (schedule.traffic_start, schedule.traffic_end);
        tasks.push(tokio::spawn(churn(reconnects, start, end, every, clock.now_ns(), stop_devices.clone())));
    }
    Ok(Running { schedule, device_addr, ves, device_tasks, tasks, stop_devices, stop_ves, storm })
}

impl Running {
    /// Phase 4: devices first (they send CLOSE), then the VES. Returns how many VES
    /// sessions were established and the storm's result.
    async fn stop(self) -> (u64, Option<StormResult>) {
        self.stop_devices.cancel();
        for t in self.device_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.stop_ves.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        (self.ves.len() as u64, self.storm.lock().unwrap_or_else(|p| p.into_inner()).take())
    }
}

/// The relays' counters over the run (gauges as they ended).
fn counters_delta(start: &BTreeMap<String, f64>, end: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    end.into_iter()
        .map(|(k, v)| {
            let counter = k.split('{').next().is_some_and(|n| n.ends_with("_total"));
            let d = if counter { v - start.get(&k).copied().unwrap_or(0.0) } else { v };
            (k, d)
        })
        .collect()
}

/// Reads the relays' `noc_*` series, summed over the given nodes.
async fn scrape(client: &RtsClient, urls: &[String]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for url in urls {
        let Ok(text) = client.get_text(url).await else { continue };
        for line in text.lines().filter(|l| l.starts_with("noc_")) {
            if let Some((k, v)) = line.rsplit_once(' ')
                && let Ok(v) = v.parse::<f64>()
            {
                *out.entry(k.to_string()).or_insert(0.0) += v;
            }
        }
    }
    out
}

/// Ephemeral ports per source address (`ip_local_port_range`).
fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_waits_for_the_campaign_start() {
        assert_eq!(ramp_delay(None, 5_000).expect("no start time"), Duration::from_millis(100));
        assert_eq!(ramp_delay(Some(7_500), 5_000).expect("in the future"), Duration::from_millis(2_500));
        match ramp_delay(Some(4_000), 5_000) {
            Err(RunError::StartPassed { at: 4_000, late_ms: 1_000 }) => {}
            other => panic!("expected StartPassed, got {other:?}"),
        }
    }
}
