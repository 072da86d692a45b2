//! What a run does: the scenario, from a TOML file and/or command-line flags.
//!
//! Every key carries its unit in its name (`duration_seconds`, `frame_size_bytes`) so a
//! file is unambiguous without its documentation, and unknown keys are errors so that a
//! misspelt key cannot silently leave a default in force.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::payload::STAMP_BYTES;

/// Largest payload of a FORWARD with the relay's default `device.max_frame_bytes`.
pub const MAX_FRAME_SIZE_BYTES: u32 = 65_526;
/// Most VES of one run: VES indexes are 3 digits of the generated MSISDNs.
pub const MAX_VES: u32 = 999;
/// Most users per VES: user indexes are 7 digits of the generated MSISDNs.
pub const MAX_USERS_PER_VES: u32 = 9_999_999;

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("reading scenario {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing scenario {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

/// One load-test scenario. The defaults are a small smoke test.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Free-form label, copied into the results.
    pub name: String,
    /// Simulated enterprise servers, each with its own RTS session.
    pub ves_count: u32,
    /// Simulated devices of each VES's users.
    pub devices_per_ves: u32,
    /// Devices activated per user account. More devices per user means fewer accounts to
    /// provision and activate (each costs the relay argon2 hashes).
    pub devices_per_user: u32,
    /// Payload bytes of every frame (the device-channel frame adds 14 bytes of framing).
    pub frame_size_bytes: u32,
    /// Frames per second over the whole run, both directions together, on a fixed
    /// timetable (open loop).
    pub rate_frames_per_second: f64,
    /// Share of the frames that go device → VES, in percent; the rest go VES → device.
    pub device_to_ves_percent: f64,
    /// Length of the traffic phase.
    pub duration_seconds: f64,
    /// Devices connect spread evenly over this time; traffic starts when it ends.
    pub ramp_up_seconds: f64,
    /// Devices disconnected and reconnected per second during the traffic phase.
    pub churn_reconnects_per_second: f64,
    /// Reconnect storm: this many seconds into the traffic phase every device drops its
    /// session at once and reconnects straight away; the result reports how long until
    /// all are authenticated again. 0 = no storm.
    pub storm_at_seconds: f64,
    /// After the traffic phase, how long to wait for outstanding acks before counting the
    /// rest as lost.
    pub drain_timeout_seconds: f64,
    /// Device connections (TCP + TLS + HELLO + AUTH) in progress at once.
    pub connect_concurrency: u32,
    /// Time allowed for one device connection and its handshake.
    pub connect_timeout_seconds: f64,
    /// Data-channel requests (`Frames`, `Acks`) in flight at once per VES.
    pub ves_max_inflight_requests: u32,
    /// Most frames in one `Frames` request.
    pub ves_batch_max_frames: u32,
    /// How long due VES → device frames may wait to fill a batch while another `Frames`
    /// request is on its way (with none on its way they go at once).
    pub ves_flush_interval_ms: u64,
    /// Most acks in one `Acks` request.
    pub ack_batch_max: u32,
    /// How long device frames may wait before the VES acknowledges them.
    pub ack_flush_interval_ms: u64,
    /// Provisioning and activation requests in flight at once (each costs an argon2 hash
    /// on the relay).
    pub setup_concurrency: u32,
    /// Period of progress output and of the time series in the results.
    pub report_interval_ms: u64,
    /// How often an idle device sends HEARTBEAT; 0 = the interval from AUTH_OK.
    pub device_heartbeat_interval_seconds: u64,
    /// Devices answer the relay's HEARTBEAT when they have been quiet for half an interval
    /// (docs/protocol.md §6.4.2), as the device client does; `false` makes each device
    /// keep its own phase, like devices that do not answer.
    pub device_answers_heartbeats: bool,
    /// Devices activate with a certificate request and authenticate with their client
    /// certificate (mutual TLS, AUTH_CERT) instead of their credential (AUTH_TOKEN). The
    /// relay needs a device CA. Devices cached without a certificate are activated again.
    pub device_client_certificates: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "smoke".into(),
            ves_count: 1,
            devices_per_ves: 10,
            devices_per_user: 1,
            frame_size_bytes: 256,
            rate_frames_per_second: 100.0,
            device_to_ves_percent: 50.0,
            duration_seconds: 10.0,
            ramp_up_seconds: 2.0,
            churn_reconnects_per_second: 0.0,
            storm_at_seconds: 0.0,
            drain_timeout_seconds: 5.0,
            connect_concurrency: 256,
            connect_timeout_seconds: 15.0,
            ves_max_inflight_requests: 8,
            ves_batch_max_frames: 256,
            ves_flush_interval_ms: 1,
            ack_batch_max: 512,
            ack_flush_interval_ms: 2,
            setup_concurrency: 8,
            report_interval_ms: 1000,
            device_client_certificates: false,
            device_heartbeat_interval_seconds: 0,
            device_answers_heartbeats: true,
        }
    }
}

/// Command-line overrides of scenario keys (same names, with dashes).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ScenarioOverrides {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub ves_count: Option<u32>,
    #[arg(long)]
    pub devices_per_ves: Option<u32>,
    #[arg(long)]
    pub devices_per_user: Option<u32>,
    #[arg(long)]
    pub frame_size_bytes: Option<u32>,
    #[arg(long)]
    pub rate_frames_per_second: Option<f64>,
    #[arg(long)]
    pub device_to_ves_percent: Option<f64>,
    #[arg(long)]
    pub duration_seconds: Option<f64>,
    #[arg(long)]
    pub ramp_up_seconds: Option<f64>,
    #[arg(long)]
    pub churn_reconnects_per_second: Option<f64>,
    #[arg(long)]
    pub storm_at_seconds: Option<f64>,
    #[arg(long)]
    pub drain_timeout_seconds: Option<f64>,
    #[arg(long)]
    pub connect_concurrency: Option<u32>,
    #[arg(long)]
    pub connect_timeout_seconds: Option<f64>,
    #[arg(long)]
    pub ves_max_inflight_requests: Option<u32>,
    #[arg(long)]
    pub ves_batch_max_frames: Option<u32>,
    #[arg(long)]
    pub ves_flush_interval_ms: Option<u64>,
    #[arg(long)]
    pub ack_batch_max: Option<u32>,
    #[arg(long)]
    pub ack_flush_interval_ms: Option<u64>,
    #[arg(long)]
    pub setup_concurrency: Option<u32>,
    #[arg(long)]
    pub report_interval_ms: Option<u64>,
    #[arg(long)]
    pub device_heartbeat_interval_seconds: Option<u64>,
    #[arg(long)]
    pub device_answers_heartbeats: Option<bool>,
    #[arg(long)]
    pub device_client_certificates: Option<bool>,
}

impl Scenario {
    /// Parses and validates a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })?;
        let s: Scenario = toml::from_str(&text)
            .map_err(|source| ScenarioError::Parse { path: path.to_path_buf(), source: Box::new(source) })?;
        s.validate()?;
        Ok(s)
    }

    /// The scenario of a run: a file (or the defaults), then flags on top, validated.
    pub fn resolve(file: Option<&Path>, overrides: &ScenarioOverrides) -> Result<Self, ScenarioError> {
        let mut s = match file {
            Some(p) => Scenario::from_file(p)?,
            None => Scenario::default(),
        };
        s.apply(overrides);
        s.validate()?;
        Ok(s)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &ScenarioOverrides) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = o.$f.clone() { self.$f = v; } )* };
        }
        set!(
            name,
            ves_count,
            devices_per_ves,
            devices_per_user,
            frame_size_bytes,
            rate_frames_per_second,
            device_to_ves_percent,
            duration_seconds,
            ramp_up_seconds,
            churn_reconnects_per_second,
            storm_at_seconds,
            drain_timeout_seconds,
            connect_concurrency,
            connect_timeout_seconds,
            ves_max_inflight_requests,
            ves_batch_max_frames,
            ves_flush_interval_ms,
            ack_batch_max,
            ack_flush_interval_ms,
            setup_concurrency,
            report_interval_ms,
            device_heartbeat_interval_seconds,
            device_answers_heartbeats,
            device_client_certificates
        );
    }

    /// Checks ranges and consistency; the message names the key.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |msg: String| Err(ScenarioError::Invalid(msg));
        let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if self.ves_count == 0 || self.ves_count > MAX_VES {
            return bad(format!("ves_count must be 1 to {MAX_VES}"));
        }
        if self.devices_per_user == 0 {
            return bad("devices_per_user must be at least 1".into());
        }
        if self.users_per_ves() > MAX_USERS_PER_VES {
            return bad(format!("devices_per_ves / devices_per_user must be at most {MAX_USERS_PER_VES} users"));
        }
        if (self.frame_size_bytes as usize) < STAMP_BYTES || self.frame_size_bytes > MAX_FRAME_SIZE_BYTES {
            return bad(format!(
                "frame_size_bytes must be {STAMP_BYTES} to {MAX_FRAME_SIZE_BYTES} (the payload carries a \
                 {STAMP_BYTES}-byte timestamp)"
            ));
        }
        if !finite_nonneg(self.rate_frames_per_second) {
            return bad("rate_frames_per_second must be a number ≥ 0".into());
        }
        if !(0.0..=100.0).contains(&self.device_to_ves_percent) {
            return bad("device_to_ves_percent must be 0 to 100".into());
        }
        if self.rate_frames_per_second > 0.0 && self.devices_per_ves == 0 {
            return bad("traffic needs devices: devices_per_ves must be at least 1".into());
        }
        for (key, v) in [
            ("duration_seconds", self.duration_seconds),
            ("ramp_up_seconds", self.ramp_up_seconds),
            ("churn_reconnects_per_second", self.churn_reconnects_per_second),
            ("storm_at_seconds", self.storm_at_seconds),
            ("drain_timeout_seconds", self.drain_timeout_seconds),
        ] {
            if !finite_nonneg(v) {
                return bad(format!("{key} must be a number ≥ 0"));
            }
        }
        if self.storm_at_seconds > 0.0 && self.storm_at_seconds >= self.duration_seconds {
            return bad("storm_at_seconds must fall within the traffic phase (below duration_seconds)".into());
        }
        if !(self.connect_timeout_seconds.is_finite() && self.connect_timeout_seconds > 0.0) {
            return bad("connect_timeout_seconds must be > 0".into());
        }
        for (key, v) in [
            ("connect_concurrency", self.connect_concurrency),
            ("ves_max_inflight_requests", self.ves_max_inflight_requests),
            ("ves_batch_max_frames", self.ves_batch_max_frames),
            ("ack_batch_max", self.ack_batch_max),
            ("setup_concurrency", self.setup_concurrency),
        ] {
            if v == 0 {
                return bad(format!("{key} must be at least 1"));
            }
        }
        if self.report_interval_ms < 50 {
            return bad("report_interval_ms must be at least 50".into());
        }
        Ok(())
    }

    /// User accounts each VES needs.
    pub fn users_per_ves(&self) -> u32 {
        self.devices_per_ves.div_ceil(self.devices_per_user)
    }

    /// All simulated devices.
    pub fn total_devices(&self) -> u64 {
        self.ves_count as u64 * self.devices_per_ves as u64
    }

    /// Device → VES frames per second, all devices together.
    pub fn device_to_ves_rate(&self) -> f64 {
        self.rate_frames_per_second * self.device_to_ves_percent / 100.0
    }

    /// VES → device frames per second, all VES together.
    pub fn ves_to_device_rate(&self) -> f64 {
        self.rate_frames_per_second - self.device_to_ves_rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Scenario::default().validate().expect("defaults validate");
    }

    #[test]
    fn every_shipped_scenario_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios directory") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 2, "expected shipped scenarios in {}", dir.display());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let err = toml::from_str::<Scenario>("duration = 5").expect_err("unknown key");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let s = Scenario { frame_size_bytes: 8, ..Scenario::default() };
        assert!(s.validate().expect_err("too small").to_string().contains("frame_size_bytes"));
        let s = Scenario { device_to_ves_percent: 120.0, ..Scenario::default() };
        assert!(s.validate().is_err());
        let s = Scenario { rate_frames_per_second: f64::NAN, ..Scenario::default() };
        assert!(s.validate().is_err());
    }

    #[test]
    fn overrides_apply_on_top_of_the_file_values() {
        let o = ScenarioOverrides { devices_per_ves: Some(3), duration_seconds: Some(1.5), ..Default::default() };
        let s = Scenario::resolve(None, &o).expect("valid");
        assert_eq!(s.devices_per_ves, 3);
        assert_eq!(s.duration_seconds, 1.5);
        assert_eq!(s.users_per_ves(), 3);
        let s = Scenario { devices_per_ves: 10, devices_per_user: 4, ..Scenario::default() };
        assert_eq!(s.users_per_ves(), 3);
        assert_eq!(s.device_to_ves_rate() + s.ves_to_device_rate(), s.rate_frames_per_second);
    }
}
