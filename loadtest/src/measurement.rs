//! One run's measurement, the same for relay runs (`run`) and baseline runs (`peer`), so
//! that their results can stand side by side: the clock and counters the sessions feed,
//! the timeline of the ramp, traffic and drain phases, and the result file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use noc_protocol::clock::unix_ms;

use crate::assemble::{Assembly, assemble};
use crate::display::Display;
use crate::payload::Clock;
use crate::phases::{PhaseOutcome, PhaseWindow, drive_phases};
use crate::reporter::Reporter;
use crate::result::{ReportError, RunResult, StormResult, Target};
use crate::scenario::Scenario;
use crate::stats::Stats;

pub(crate) struct Measurement {
    pub scenario: Scenario,
    /// When the run began (setup included).
    pub t0: Instant,
    pub started_unix_ms: u64,
    pub clock: Clock,
    pub stats: Arc<Stats>,
    pub display: Display,
    pub reporter: Reporter,
    /// The measured target's local processes (the relay's nodes, a broker), if any.
    pids: Vec<u32>,
}

/// What only the run itself knows, for its result.
pub(crate) struct RunFacts {
    pub target: Target,
    pub ves_established: u64,
    /// The relays' own counters over the run (empty for a baseline).
    pub relay_metrics_delta: BTreeMap<String, f64>,
    pub storm: Option<StormResult>,
}

impl Measurement {
    pub fn new(scenario: Scenario, progress: bool, pids: &[u32]) -> Self {
        let (t0, clock, stats) = (Instant::now(), Clock::new(), Arc::new(Stats::new()));
        Self {
            reporter: Reporter::new(stats.clone(), clock, t0, pids),
            scenario,
            t0,
            started_unix_ms: unix_ms(),
            clock,
            stats,
            display: Display::new(progress),
            pids: pids.to_vec(),
        }
    }

    /// Ramp, traffic and drain while the (already spawned) sessions do the work.
    pub async fn phases(&mut self, window: &PhaseWindow) -> Result<PhaseOutcome, ReportError> {
        let show_target = !self.pids.is_empty();
        drive_phases(&mut self.reporter, &mut self.display, &self.stats, window, &self.scenario, show_target).await
    }

    /// The result of the run, once its sessions stopped.
    pub fn result(
        mut self,
        window: &PhaseWindow,
        outcome: &PhaseOutcome,
        facts: RunFacts,
    ) -> Result<RunResult, ReportError> {
        self.reporter.sample();
        assemble(Assembly {
            scenario: &self.scenario,
            target: facts.target,
            started_unix_ms: self.started_unix_ms,
            window,
            outcome,
            reporter: &mut self.reporter,
            stats: &self.stats,
            relay_pid: self.pids.first().copied(),
            ves_established: facts.ves_established,
            relay_metrics_delta: facts.relay_metrics_delta,
            storm: facts.storm,
        })
    }
}
