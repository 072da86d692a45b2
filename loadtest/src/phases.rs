//! The timed phases of a run, shared by relay runs and baseline runs so that both are
//! measured alike: ramp-up (devices connect, spread over `ramp_up_seconds`), traffic
//! (`duration_seconds` of open-loop frames) and drain (wait for outstanding frames, up to
//! `drain_timeout_seconds`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::device::Timetable;
use crate::display::Display;
use crate::procfs::{HostSample, ProcSample};
use crate::reporter::{Reporter, status_line, unresolved};
use crate::result::ReportError;
use crate::scenario::Scenario;
use crate::stats::Stats;

/// When a run's devices connect and its traffic flows, planned from the moment the ramp
/// begins.
pub(crate) struct Schedule {
    pub ramp_start: Instant,
    pub ramp: Duration,
    pub traffic_start: Instant,
    pub traffic_end: Instant,
    /// The devices' open-loop sending times (none without device → VES traffic).
    pub timetable: Option<Timetable>,
    devices: u32,
}

impl Schedule {
    pub fn new(scenario: &Scenario, ramp_start: Instant, devices: u32) -> Self {
        let ramp = Duration::from_secs_f64(scenario.ramp_up_seconds);
        let traffic_start = ramp_start + ramp;
        let traffic_end = traffic_start + Duration::from_secs_f64(scenario.duration_seconds);
        let d2v_rate = scenario.device_to_ves_rate();
        let timetable = (d2v_rate > 0.0 && devices > 0).then(|| Timetable {
            start: traffic_start,
            end: traffic_end,
            period: Duration::from_secs_f64(devices as f64 / d2v_rate),
            devices,
        });
        Self { ramp_start, ramp, traffic_start, traffic_end, timetable, devices }
    }

    /// When device `index` connects: the ramp spread evenly over the devices.
    pub fn connect_at(&self, index: u32) -> Instant {
        self.ramp_start + self.ramp.mul_f64(index as f64 / self.devices.max(1) as f64)
    }

    /// The phase window of a run that started at `t0` and spent `setup_seconds` in setup.
    pub fn window(&self, t0: Instant, setup_seconds: f64) -> PhaseWindow {
        PhaseWindow {
            t0,
            setup_seconds,
            ramp_start: self.ramp_start,
            traffic_start: self.traffic_start,
            traffic_end: self.traffic_end,
        }
    }
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
    pub all_online_at: Option<Instant>,
    pub devices_at_traffic_start: u64,
    pub relay_at_start: Option<ProcSample>,
    pub loadgen_at_start: Option<ProcSample>,
    pub relay_at_end: Option<ProcSample>,
    pub loadgen_at_end: Option<ProcSample>,
    /// The machine's CPU time at both ends of the traffic phase.
    pub host_at_start: Option<HostSample>,
    pub host_at_end: Option<HostSample>,
    pub drain_end: Instant,
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
    show_relay: bool,
) -> Result<PhaseOutcome, ReportError> {
    let PhaseWindow { traffic_start, traffic_end, .. } = *window;
    let total = scenario.total_devices();
    let drain_timeout = Duration::from_secs_f64(scenario.drain_timeout_seconds);
    let interval = Duration::from_millis(scenario.report_interval_ms);
    let mut all_online_at: Option<Instant> = None;
    display.start(total, "   ramp [{elapsed_precise}] [{bar:40}] {pos}/{len} online {msg}");
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
    let host_at_start = reporter.host_last;
    let duration_s = traffic_end.saturating_duration_since(traffic_start).as_secs_f64().ceil() as u64;
    display.start(duration_s.max(1), "traffic [{elapsed_precise}] [{bar:40}] {pos}/{len} s {msg}");
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
    let host_at_end = reporter.host_last;
    let drain_deadline = Instant::now() + drain_timeout;
    display.start(0, "  drain [{elapsed_precise}] {msg}");
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
        host_at_start,
        host_at_end,
        drain_end,
    })
}
