//! One load-test run: setup, ramp-up, traffic, drain, results.
//!
//! ```text
//! setup ──▶ ramp (devices connect, spread over ramp_up_seconds)
//!       ──▶ traffic (duration_seconds of open-loop frames, optional churn)
//!       ──▶ drain (wait for outstanding acks, up to drain_timeout_seconds)
//!       ──▶ stop (devices send CLOSE, VES drop their channels) ──▶ results
//! ```

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use noc_protocol::clock::unix_ms;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::device::{DeviceContext, DeviceSpec, Timetable, run_device};
use crate::net::{NetError, SourceIps, client_config, raise_nofile_limit};
use crate::payload::Clock;
use crate::procfs::{ProcSample, ProcSampler};
use crate::result::{
    FrameCounts, IntervalCounts, Latencies, Latency, Machine, Phases, ProcessUsage, RESULT_FORMAT, ReportError,
    RunResult, Sessions, StormResult, Target, TimelinePoint,
};
use crate::rts_client::{RtsClient, RtsError, url_host};
use crate::scenario::{Scenario, ScenarioError};
use crate::setup::{Credentials, LicenseSource, SetupError, ensure_license, prepare_ves};
use crate::stats::{DirectionCounters, METRICS, Metric, Stats, UNDELIVERABLE_NAMES, new_histogram};
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

/// A small, fast PRNG for churn picks (not for secrets).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Live output: bars on a terminal, a line every few seconds otherwise.
pub(crate) struct Display {
    bar: Option<ProgressBar>,
    lines: bool,
    last_line: Instant,
}

impl Display {
    pub(crate) fn new(enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self { bar: None, lines: enabled && !tty, last_line: Instant::now() }
    }

    fn start(&mut self, enabled: bool, len: u64, template: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !enabled || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        self.bar = Some(bar);
    }

    fn update(&mut self, pos: u64, msg: String) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.set_message(msg);
        } else if self.lines && self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!("{msg}");
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Collects the time series.
pub(crate) struct Reporter {
    stats: Arc<Stats>,
    clock: Clock,
    t0: Instant,
    totals: Vec<Histogram<u64>>,
    interval: Vec<Histogram<u64>>,
    last: [IntervalCounts; 2],
    last_tick: Instant,
    relay: Option<ProcSampler>,
    loadgen: ProcSampler,
    relay_last: Option<ProcSample>,
    loadgen_last: Option<ProcSample>,
    relay_peak_kib: u64,
    loadgen_peak_kib: u64,
    /// RSS before any session was opened (the baseline of per-session memory).
    relay_rss_before_kib: u64,
    loadgen_rss_before_kib: u64,
    timeline: Vec<TimelinePoint>,
}

fn counts(c: &DirectionCounters) -> IntervalCounts {
    IntervalCounts {
        sent: c.sent.load(Ordering::Relaxed),
        received: c.received.load(Ordering::Relaxed),
        acked: c.acked.load(Ordering::Relaxed),
        undeliverable: c.undeliverable_total(),
    }
}

fn delta(now: &IntervalCounts, before: &IntervalCounts) -> IntervalCounts {
    IntervalCounts {
        sent: now.sent.saturating_sub(before.sent),
        received: now.received.saturating_sub(before.received),
        acked: now.acked.saturating_sub(before.acked),
        undeliverable: now.undeliverable.saturating_sub(before.undeliverable),
    }
}

impl Reporter {
    pub(crate) fn new(stats: Arc<Stats>, clock: Clock, t0: Instant, relay_pids: &[u32]) -> Self {
        let hists = || METRICS.iter().map(|_| new_histogram()).collect::<Vec<_>>();
        Self {
            stats,
            clock,
            t0,
            totals: hists(),
            interval: hists(),
            last: Default::default(),
            last_tick: Instant::now(),
            relay: (!relay_pids.is_empty()).then(|| ProcSampler::group(relay_pids)),
            loadgen: ProcSampler::this_process(),
            relay_last: None,
            loadgen_last: None,
            relay_peak_kib: 0,
            loadgen_peak_kib: 0,
            relay_rss_before_kib: 0,
            loadgen_rss_before_kib: 0,
            timeline: Vec::new(),
        }
    }

    pub(crate) fn sample(&mut self) {
        self.relay_last = self.relay.as_mut().and_then(|r| r.sample());
        if let Some(s) = self.relay_last {
            self.relay_peak_kib = self.relay_peak_kib.max(s.rss_kib);
        }
        self.loadgen_last = self.loadgen.sample();
        if let Some(s) = self.loadgen_last {
            self.loadgen_peak_kib = self.loadgen_peak_kib.max(s.rss_kib);
        }
    }

    /// Samples both processes before sessions open: the baseline of per-session memory.
    pub(crate) fn baseline(&mut self) {
        self.sample();
        self.relay_rss_before_kib = self.relay_last.map(|s| s.rss_kib).unwrap_or(0);
        self.loadgen_rss_before_kib = self.loadgen_last.map(|s| s.rss_kib).unwrap_or(0);
    }

    /// Closes an interval: one timeline point.
    fn tick(&mut self, phase: &str) -> Result<&TimelinePoint, ReportError> {
        let now = Instant::now();
        let seconds = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        self.last_tick = now;
        for h in &mut self.interval {
            h.reset();
        }
        self.stats.recorder.drain_into(&mut self.interval);
        for (t, i) in self.totals.iter_mut().zip(&self.interval) {
            // Same bounds: adding cannot fail.
            let _ = t.add(i);
        }
        let mut one_way = self.interval[Metric::OneWayDeviceToVes.index()].clone();
        let _ = one_way.add(&self.interval[Metric::OneWayVesToDevice.index()]);
        let now_counts = [counts(&self.stats.device_to_ves), counts(&self.stats.ves_to_device)];
        let point = TimelinePoint {
            t_seconds: now.duration_since(self.t0).as_secs_f64(),
            unix_ms: self.clock.at(now) / 1_000_000,
            interval_seconds: seconds,
            phase: phase.to_string(),
            devices_online: self.stats.devices_online.load(Ordering::Relaxed).max(0) as u64,
            ves_online: self.stats.ves_online.load(Ordering::Relaxed).max(0) as u64,
            device_to_ves: delta(&now_counts[0], &self.last[0]),
            ves_to_device: delta(&now_counts[1], &self.last[1]),
            latency: Latency::from_histogram(&one_way)?,
            relay_rss_kib: None,
            relay_cpu_percent: None,
            loadgen_cpu_percent: None,
        };
        self.last = now_counts;
        self.sample();
        let mut point = point;
        point.relay_rss_kib = self.relay_last.map(|s| s.rss_kib);
        point.relay_cpu_percent = self.relay_last.map(|s| s.cpu_percent);
        point.loadgen_cpu_percent = self.loadgen_last.map(|s| s.cpu_percent);
        self.timeline.push(point);
        Ok(self.timeline.last().unwrap_or_else(|| unreachable!("just pushed")))
    }

    fn total(&self, m: Metric) -> Result<Latency, ReportError> {
        Latency::from_histogram(&self.totals[m.index()])
    }
}

fn status_line(p: &TimelinePoint, phase: &str, relay: bool) -> String {
    let rate = |c: &IntervalCounts| c.received as f64 / p.interval_seconds;
    let mut s = format!(
        "{phase:>7} online {:>6} | d→v {:>7.0}/s v→d {:>7.0}/s | p50 {:>7.3} p99 {:>7.3} max {:>7.3} ms",
        p.devices_online,
        rate(&p.device_to_ves),
        rate(&p.ves_to_device),
        p.latency.p50_us as f64 / 1000.0,
        p.latency.p99_us as f64 / 1000.0,
        p.latency.max_us as f64 / 1000.0,
    );
    if relay && let (Some(rss), Some(cpu)) = (p.relay_rss_kib, p.relay_cpu_percent) {
        s.push_str(&format!(" | relay {:.0} MiB {cpu:.0}%", rss as f64 / 1024.0));
    }
    if let Some(cpu) = p.loadgen_cpu_percent {
        s.push_str(&format!(" | tool {cpu:.0}%"));
    }
    s
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

fn frame_counts(c: &DirectionCounters) -> FrameCounts {
    let sent = c.sent.load(Ordering::Relaxed);
    let acked = c.acked.load(Ordering::Relaxed);
    let undeliverable: BTreeMap<String, u64> = UNDELIVERABLE_NAMES
        .iter()
        .zip(&c.undeliverable)
        .map(|(n, v)| (n.to_string(), v.load(Ordering::Relaxed)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let undeliverable_total: u64 = undeliverable.values().sum();
    FrameCounts {
        sent,
        acked,
        lost: sent.saturating_sub(acked + undeliverable_total),
        undeliverable,
        received: c.received.load(Ordering::Relaxed),
        skipped_offline: c.skipped_offline.load(Ordering::Relaxed),
        late_notices: c.late_notices.load(Ordering::Relaxed),
        foreign_payloads: c.foreign_payloads.load(Ordering::Relaxed),
    }
}

fn unresolved(c: &DirectionCounters) -> u64 {
    c.sent.load(Ordering::Relaxed).saturating_sub(c.acked.load(Ordering::Relaxed) + c.undeliverable_total())
}

/// Ephemeral ports per source address (`ip_local_port_range`).
fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Runs a load test. Returns `None` when `setup_only` is set.
pub async fn run(opts: RunOptions) -> Result<Option<RunResult>, RunError> {
    let scenario = opts.scenario.clone();
    scenario.validate()?;
    let t0 = Instant::now();
    let started_unix_ms = unix_ms();
    let clock = Clock::new();
    let stats = Arc::new(Stats::new());
    let sessions = scenario.total_devices() + 64;
    match raise_nofile_limit() {
        Ok(n) if n < sessions => {
            eprintln!("warning: open-file limit {n} is below the {sessions} descriptors this scenario needs");
            stats.error("rlimit_nofile:too_low");
        }
        Ok(_) => {}
        Err(e) => stats.error(format!("rlimit_nofile:{}", e.kind())),
    }
    let sources = Arc::new(SourceIps::new(opts.source_ips.clone()));
    if let Some(ports) = ephemeral_ports() {
        let addresses = opts.source_ips.len().max(1) as u64;
        if sessions > ports * addresses {
            eprintln!(
                "warning: {sessions} connections from {addresses} source address(es) with {ports} ephemeral ports \
                 each: pass more --source-ips (e.g. 127.0.0.1-127.0.0.8)"
            );
        }
    }
    let http_tls = client_config(&opts.cacert, &[b"http/1.1"])?;
    let pool = scenario.setup_concurrency as usize + 4;
    let setup_client = RtsClient::new(&opts.relay_url, http_tls.clone(), opts.connect_ip, sources.next(), pool)?;
    let mut display = Display::new(opts.progress);

    // -- setup --------------------------------------------------------------------------
    let mut creds = Credentials::load_or_new(&opts.credentials, &opts.relay_url)?;
    creds.shape_for(&scenario);
    ensure_license(&mut creds, &opts.license, &setup_client).await?;
    creds.save(&opts.credentials)?;
    let relay_metrics_start = scrape(&setup_client, &opts.relay_metrics_urls).await;
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
        let client = RtsClient::new(&opts.relay_url, http_tls.clone(), opts.connect_ip, sources.next(), pool)?;
        let guid = creds.ves[v as usize].guid.clone();
        let opened =
            VesSim::open(v, client, guid, creds.license_token.clone(), settings.clone(), stats.clone(), clock).await;
        ves_list.push(opened.map_err(|source| RunError::Ves { ves: v, source })?);
    }
    display.start(
        opts.progress,
        scenario.total_devices(),
        "  setup [{elapsed_precise}] [{bar:40}] {pos}/{len} devices ready {msg}",
    );
    let creds = Mutex::new(creds);
    let ready = Arc::new(std::sync::atomic::AtomicU64::new(0));
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
        prepare_ves(ves.client(), &keys, &creds, &opts.credentials, v, &scenario, &progress).await?;
    }
    display.finish();
    let creds = creds.into_inner().unwrap_or_else(|p| p.into_inner());
    let setup_seconds = t0.elapsed().as_secs_f64();
    if opts.progress {
        eprintln!(
            "setup: {} devices of {} VES ready in {setup_seconds:.1} s ({})",
            ready.load(Ordering::Relaxed),
            scenario.ves_count,
            opts.credentials.display()
        );
    }
    if opts.setup_only {
        return Ok(None);
    }

    // -- devices and VES tasks -----------------------------------------------------------
    let mut all_devices = Vec::new();
    for (v, (ves, _)) in ves_list.iter_mut().enumerate() {
        let devices = creds.devices_of(v, &scenario);
        if !ves.with_devices(devices.iter().map(|d| d.device_id).collect()) {
            return Err(RunError::DeviceAddr("internal: VES shared before setup ended".into()));
        }
        all_devices.extend(devices);
    }
    let device_addr = match (opts.device_addr, all_devices.first()) {
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
    let server_name = opts
        .tls_server_name
        .clone()
        .or_else(|| url_host(&opts.relay_url).map(String::from))
        .ok_or_else(|| RunError::DeviceAddr(format!("no host in {}", opts.relay_url)))?;
    let server_name = ServerName::try_from(server_name.clone())
        .map_err(|_| RunError::DeviceAddr(format!("{server_name:?} is not a valid TLS server name")))?;
    let device_tls = TlsConnector::from(Arc::new(client_config(&opts.cacert, &[])?));

    let stop_ves = CancellationToken::new();
    let stop_devices = CancellationToken::new();
    let mut ves_sims = Vec::new();
    let mut tasks = Vec::new();
    for (ves, resp) in ves_list {
        tasks.push(tokio::spawn(ves.clone().run_channel(resp, stop_ves.clone())));
        tasks.push(tokio::spawn(ves.clone().run_acks(stop_ves.clone())));
        ves_sims.push(ves);
    }

    let mut reporter = Reporter::new(stats.clone(), clock, t0, &opts.relay_pids);
    reporter.baseline();

    let n = all_devices.len() as u32;
    let ramp_start = Instant::now() + ramp_delay(opts.start_at_unix_ms, unix_ms())?;
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
        timetable,
        stop: stop_devices.clone(),
    });
    let mut churn = Vec::with_capacity(all_devices.len());
    let mut device_tasks = Vec::with_capacity(all_devices.len());
    for (i, d) in all_devices.iter().enumerate() {
        let credential = hex::decode(&d.credential).map_err(|_| RunError::Credential(d.device_id.to_string()))?;
        let notify = Arc::new(Notify::new());
        churn.push(notify.clone());
        let spec = DeviceSpec {
            index: i as u32,
            device_id: d.device_id,
            credential: Bytes::from(credential),
            connect_at: ramp_start + ramp.mul_f64(i as f64 / n.max(1) as f64),
            churn: notify,
        };
        device_tasks.push(tokio::spawn(run_device(ctx.clone(), spec)));
    }
    drop(all_devices);
    let v2d_rate = scenario.ves_to_device_rate() / scenario.ves_count as f64;
    for ves in &ves_sims {
        tasks.push(tokio::spawn(ves.clone().run_pacer(traffic_start, traffic_end, v2d_rate, stop_ves.clone())));
    }
    let storm = Arc::new(Mutex::new(None));
    if scenario.storm_at_seconds > 0.0 && !churn.is_empty() {
        let at = traffic_start + Duration::from_secs_f64(scenario.storm_at_seconds);
        let deadline = traffic_end + Duration::from_secs_f64(scenario.drain_timeout_seconds);
        let storm_task = Storm {
            stats: stats.clone(),
            devices: churn.clone(),
            at,
            at_seconds: scenario.storm_at_seconds,
            deadline,
            relay_pids: opts.relay_pids.clone(),
            stop: stop_devices.clone(),
            out: storm.clone(),
        };
        tasks.push(tokio::spawn(storm_task.run()));
    }
    if scenario.churn_reconnects_per_second > 0.0 && !churn.is_empty() {
        let every = Duration::from_secs_f64(1.0 / scenario.churn_reconnects_per_second);
        let stop = stop_devices.clone();
        let churn = churn.clone();
        let mut rng = SplitMix(clock.now_ns());
        tasks.push(tokio::spawn(async move {
            let mut at = traffic_start;
            while at < traffic_end {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
                churn[(rng.next() % churn.len() as u64) as usize].notify_one();
                at += every;
            }
        }));
    }

    // -- ramp, traffic, drain ---------------------------------------------------------
    let window = PhaseWindow { t0, setup_seconds, ramp_start, traffic_start, traffic_end };
    let outcome = drive_phases(
        &mut reporter,
        &mut display,
        &stats,
        &window,
        &scenario,
        opts.progress,
        !opts.relay_pids.is_empty(),
    )
    .await?;

    // -- stop ---------------------------------------------------------------------------
    stop_devices.cancel();
    for t in device_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    stop_ves.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    reporter.sample();
    let relay_metrics_end = scrape(&setup_client, &opts.relay_metrics_urls).await;
    let relay_metrics_delta = relay_metrics_end
        .iter()
        .map(|(k, v)| {
            let counter = k.split('{').next().is_some_and(|n| n.ends_with("_total"));
            let d = if counter { v - relay_metrics_start.get(k).copied().unwrap_or(0.0) } else { *v };
            (k.clone(), d)
        })
        .collect();
    let target = Target {
        relay_url: opts.relay_url.clone(),
        device_addr: device_addr.to_string(),
        source_ips: sources.ips().iter().map(|ip| ip.to_string()).collect(),
    };
    let result = assemble(Assembly {
        scenario: &scenario,
        target,
        started_unix_ms,
        window: &window,
        outcome: &outcome,
        reporter: &mut reporter,
        stats: &stats,
        relay_pid: opts.relay_pids.first().copied(),
        ves_established: ves_sims.len() as u64,
        relay_metrics_delta,
        storm: storm.lock().unwrap_or_else(|p| p.into_inner()).take(),
    })?;

    Ok(Some(result))
}

/// When the phases of a run begin and end.
pub(crate) struct PhaseWindow {
    pub t0: Instant,
    pub setup_seconds: f64,
    pub ramp_start: Instant,
    pub traffic_start: Instant,
    pub traffic_end: Instant,
}

/// What [`drive_phases`] observed at the edges of the phases.
pub(crate) struct PhaseOutcome {
    all_online_at: Option<Instant>,
    devices_at_traffic_start: u64,
    relay_at_start: Option<ProcSample>,
    loadgen_at_start: Option<ProcSample>,
    relay_at_end: Option<ProcSample>,
    loadgen_at_end: Option<ProcSample>,
    drain_end: Instant,
}

/// Reports ramp-up, traffic and drain while the sessions (already spawned) do the work:
/// one timeline point per interval, live progress, and the drain wait for outstanding
/// frames. Shared by relay runs and peer-broker runs so that both are measured alike.
pub(crate) async fn drive_phases(
    reporter: &mut Reporter,
    display: &mut Display,
    stats: &Stats,
    window: &PhaseWindow,
    scenario: &Scenario,
    progress: bool,
    show_relay: bool,
) -> Result<PhaseOutcome, ReportError> {
    let PhaseWindow { traffic_start, traffic_end, .. } = *window;
    let total = scenario.total_devices();
    let drain_timeout = Duration::from_secs_f64(scenario.drain_timeout_seconds);
    let interval = Duration::from_millis(scenario.report_interval_ms);
    let mut all_online_at: Option<Instant> = None;
    display.start(progress, total, "   ramp [{elapsed_precise}] [{bar:40}] {pos}/{len} online {msg}");
    let mut next_tick = Instant::now() + interval;
    loop {
        let wake = next_tick.min(traffic_start);
        tokio::time::sleep_until(wake.into()).await;
        let online = stats.devices_online.load(Ordering::Relaxed).max(0) as u64;
        if all_online_at.is_none() && online >= total {
            all_online_at = Some(Instant::now());
        }
        if Instant::now() >= traffic_start {
            break;
        }
        next_tick += interval;
        let p = reporter.tick("ramp")?;
        let line = status_line(p, "ramp", show_relay);
        display.update(online, line);
    }
    reporter.tick("ramp")?;
    let devices_at_traffic_start = stats.devices_online.load(Ordering::Relaxed).max(0) as u64;
    let relay_at_start = reporter.relay_last;
    let loadgen_at_start = reporter.loadgen_last;
    let duration_s = traffic_end.saturating_duration_since(traffic_start).as_secs_f64().ceil() as u64;
    display.start(progress, duration_s.max(1), "traffic [{elapsed_precise}] [{bar:40}] {pos}/{len} s {msg}");
    let mut next_tick = traffic_start + interval;
    while Instant::now() < traffic_end {
        tokio::time::sleep_until(next_tick.min(traffic_end).into()).await;
        next_tick += interval;
        if all_online_at.is_none() && stats.devices_online.load(Ordering::Relaxed).max(0) as u64 >= total {
            all_online_at = Some(Instant::now());
        }
        let p = reporter.tick("traffic")?;
        let line = status_line(p, "traffic", show_relay);
        display.update(traffic_start.elapsed().as_secs(), line);
    }
    let relay_at_end = reporter.relay_last;
    let loadgen_at_end = reporter.loadgen_last;
    let drain_deadline = Instant::now() + drain_timeout;
    display.start(progress, 0, "  drain [{elapsed_precise}] {msg}");
    let mut next_tick = Instant::now() + interval;
    loop {
        let left = unresolved(&stats.device_to_ves) + unresolved(&stats.ves_to_device);
        if left == 0 || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Instant::now() >= next_tick {
            next_tick += interval;
            let p = reporter.tick("drain")?;
            let line = format!("{} | {left} frames outstanding", status_line(p, "drain", show_relay));
            display.update(0, line);
        }
    }
    reporter.tick("drain")?;
    let drain_end = Instant::now();
    display.finish();
    Ok(PhaseOutcome {
        all_online_at,
        devices_at_traffic_start,
        relay_at_start,
        loadgen_at_start,
        relay_at_end,
        loadgen_at_end,
        drain_end,
    })
}

/// Everything [`assemble`] turns into a [`RunResult`].
pub(crate) struct Assembly<'a> {
    pub scenario: &'a Scenario,
    pub target: Target,
    pub started_unix_ms: u64,
    pub window: &'a PhaseWindow,
    pub outcome: &'a PhaseOutcome,
    pub reporter: &'a mut Reporter,
    pub stats: &'a Stats,
    pub relay_pid: Option<u32>,
    pub ves_established: u64,
    pub relay_metrics_delta: BTreeMap<String, f64>,
    pub storm: Option<StormResult>,
}

/// The result of a finished run (sessions stopped, last samples taken).
pub(crate) fn assemble(a: Assembly<'_>) -> Result<RunResult, ReportError> {
    let Assembly { scenario, target, started_unix_ms, window, outcome, reporter, stats, .. } = a;
    let t0 = window.t0;
    let secs = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let traffic_secs = scenario.duration_seconds.max(1e-3);
    let usage = |before: u64,
                 at_start: Option<ProcSample>,
                 at_end: Option<ProcSample>,
                 last: Option<ProcSample>,
                 peak: u64,
                 pid: Option<u32>| ProcessUsage {
        pid,
        rss_kib_before_sessions: before,
        rss_kib_at_traffic_start: at_start.map(|s| s.rss_kib).unwrap_or(0),
        rss_kib_peak: last.map(|s| s.rss_peak_kib).unwrap_or(0).max(peak),
        rss_kib_end: last.map(|s| s.rss_kib).unwrap_or(0),
        cpu_percent_traffic: match (at_start, at_end) {
            (Some(a), Some(b)) => 100.0 * (b.cpu_seconds - a.cpu_seconds) / traffic_secs,
            _ => 0.0,
        },
        cpu_seconds_total: last.map(|s| s.cpu_seconds).unwrap_or(0.0),
        threads: last.map(|s| s.threads).unwrap_or(0),
    };
    let relay = a.relay_pid.map(|pid| {
        usage(
            reporter.relay_rss_before_kib,
            outcome.relay_at_start,
            outcome.relay_at_end,
            reporter.relay_last,
            reporter.relay_peak_kib,
            Some(pid),
        )
    });
    let loadgen = Some(usage(
        reporter.loadgen_rss_before_kib,
        outcome.loadgen_at_start,
        outcome.loadgen_at_end,
        reporter.loadgen_last,
        reporter.loadgen_peak_kib,
        Some(std::process::id()),
    ));
    let mut one_way = reporter.totals[Metric::OneWayDeviceToVes.index()].clone();
    let _ = one_way.add(&reporter.totals[Metric::OneWayVesToDevice.index()]);
    let device_to_ves = frame_counts(&stats.device_to_ves);
    let ves_to_device = frame_counts(&stats.ves_to_device);
    let received = device_to_ves.received + ves_to_device.received;
    let ramp_seconds = outcome
        .all_online_at
        .unwrap_or(window.traffic_start)
        .saturating_duration_since(window.ramp_start)
        .as_secs_f64();
    let devices_at_traffic_start = outcome.devices_at_traffic_start;
    Ok(RunResult {
        format: RESULT_FORMAT,
        tool: concat!("noc-loadtest ", env!("CARGO_PKG_VERSION")).into(),
        workers: 1,
        scenario: scenario.clone(),
        target,
        machine: Machine::this(),
        started_unix_ms,
        finished_unix_ms: unix_ms(),
        phases: Phases {
            setup_seconds: window.setup_seconds,
            ramp_start: secs(window.ramp_start),
            traffic_start: secs(window.traffic_start),
            traffic_end: secs(window.traffic_end),
            drain_end: secs(outcome.drain_end),
        },
        sessions: Sessions {
            ves_target: scenario.ves_count as u64,
            ves_established: a.ves_established,
            devices_target: scenario.total_devices(),
            devices_at_traffic_start,
            devices_peak: stats.devices_online_peak.load(Ordering::Relaxed).max(0) as u64,
            connect_attempts: stats.connect_attempts.load(Ordering::Relaxed),
            connect_ok: stats.connect_ok.load(Ordering::Relaxed),
            connect_failed: stats.connect_failed.load(Ordering::Relaxed),
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            churn_disconnects: stats.churn_disconnects.load(Ordering::Relaxed),
            ramp_seconds,
            connect_rate_per_second: if ramp_seconds > 0.0 {
                devices_at_traffic_start as f64 / ramp_seconds
            } else {
                0.0
            },
        },
        device_to_ves,
        ves_to_device,
        latency: Latencies {
            one_way: Latency::from_histogram(&one_way)?,
            one_way_device_to_ves: reporter.total(Metric::OneWayDeviceToVes)?,
            one_way_ves_to_device: reporter.total(Metric::OneWayVesToDevice)?,
            ack_device_to_ves: reporter.total(Metric::AckDeviceToVes)?,
            ack_ves_to_device: reporter.total(Metric::AckVesToDevice)?,
            connect: reporter.total(Metric::Connect)?,
        },
        achieved_frames_per_second: received as f64 / traffic_secs,
        errors: stats.errors(),
        data_requests: stats.data_requests.load(Ordering::Relaxed),
        data_request_failures: stats.data_request_failures.load(Ordering::Relaxed),
        relay,
        loadgen,
        relay_metrics_delta: a.relay_metrics_delta,
        storm: a.storm,
        timeline: std::mem::take(&mut reporter.timeline),
    })
}

/// A reconnect storm: every device's session dropped at one moment, then the wait until
/// all of them are authenticated again.
struct Storm {
    stats: Arc<Stats>,
    /// The devices' churn signals: each ends its session and reconnects at once.
    devices: Vec<Arc<Notify>>,
    at: Instant,
    at_seconds: f64,
    /// Give up waiting (the run is ending).
    deadline: Instant,
    relay_pids: Vec<u32>,
    stop: CancellationToken,
    out: Arc<Mutex<Option<StormResult>>>,
}

impl Storm {
    async fn run(self) {
        tokio::select! {
            _ = self.stop.cancelled() => return,
            _ = tokio::time::sleep_until(self.at.into()) => {}
        }
        let dropped = self.stats.devices_online.load(Ordering::Relaxed).max(0) as u64;
        let base = self.stats.reconnects.load(Ordering::Relaxed);
        let mut relay = (!self.relay_pids.is_empty()).then(|| ProcSampler::group(&self.relay_pids));
        let cpu_before = relay.as_mut().and_then(|r| r.sample()).map(|s| s.cpu_seconds);
        let started = Instant::now();
        let dropped_unix_ms = unix_ms();
        for device in &self.devices {
            device.notify_one();
        }
        let reconnected = || self.stats.reconnects.load(Ordering::Relaxed).saturating_sub(base);
        let mut recovered = None;
        while !self.stop.is_cancelled() && Instant::now() < self.deadline {
            if reconnected() >= dropped {
                recovered = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = recovered.unwrap_or_else(|| started.elapsed()).as_secs_f64().max(1e-3);
        let cpu_after = relay.as_mut().and_then(|r| r.sample()).map(|s| s.cpu_seconds);
        let relay_cpu_seconds = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
        let reconnected = reconnected().min(dropped);
        let result = StormResult {
            at_seconds: self.at_seconds,
            devices_dropped: dropped,
            reconnected,
            recovery_seconds: recovered.map(|d| d.as_secs_f64()),
            reconnects_per_second: reconnected as f64 / elapsed,
            relay_cpu_seconds,
            reconnects_per_relay_cpu_second: relay_cpu_seconds.filter(|c| *c > 0.0).map(|c| reconnected as f64 / c),
            dropped_unix_ms: Some(dropped_unix_ms),
            all_back_unix_ms: recovered.map(|d| dropped_unix_ms + d.as_millis() as u64),
        };
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }
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
