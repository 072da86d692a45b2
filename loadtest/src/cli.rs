//! The command line of the `loadtest` binary: `run`, `merge` and `report`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use thiserror::Error;

use crate::net::{NetError, parse_source_ips};
use crate::peer::{PeerOptions, PeerProtocol, SinkOptions};
use crate::result::{ReportError, RunResult};
use crate::run::RunOptions;
use crate::scenario::{Scenario, ScenarioError, ScenarioOverrides};
use crate::setup::LicenseSource;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{0}")]
    Usage(String),
}

#[derive(Parser, Debug)]
#[command(name = "loadtest", version, about = "Load generator for the NOC relay: simulated VES and devices over TLS")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a scenario against a relay (setup first, reusing cached credentials).
    Run(Box<RunArgs>),
    /// The same traffic shape against a baseline broker (MQTT, NATS) or a 1:1 TLS stream
    /// proxy, for side-by-side benchmarks: same phases, stamps, histograms and result file.
    Peer(Box<PeerArgs>),
    /// Combine the result files of parallel workers (exact histogram merge).
    Merge {
        /// Result files (JSON) of the workers.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Merged result file.
        #[arg(short, long)]
        out: PathBuf,
        /// Also write an HTML report of the merged result.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Render the HTML report of a result file again.
    Report {
        input: PathBuf,
        #[arg(long)]
        html: PathBuf,
    },
}

/// Where a run's results go, and how the tool runs: shared by `run` and `peer`.
#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Result file (JSON).
    #[arg(long, default_value = "loadtest-result.json")]
    pub out: PathBuf,
    /// HTML report [default: the result file with .html].
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Worker threads of the load tool [default: one per CPU].
    #[arg(long)]
    pub threads: Option<usize>,
    /// No live progress.
    #[arg(long)]
    pub quiet: bool,
}

impl OutputArgs {
    /// Where the HTML report goes.
    pub fn html_path(&self) -> PathBuf {
        self.html.clone().unwrap_or_else(|| self.out.with_extension("html"))
    }

    /// The tokio runtime of the run, with `--threads` workers.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = self.threads {
            rt.worker_threads(n.max(1));
        }
        rt.enable_all().build()
    }

    /// Writes the JSON result and its HTML report, and prints the summary.
    pub fn finish(&self, result: &RunResult) -> Result<(), ReportError> {
        let html = self.html_path();
        write_outputs(result, &self.out, Some(&html))?;
        print!("{}", result.summary());
        println!("results: {} and {}", self.out.display(), html.display());
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario file (TOML; see loadtest/scenarios/). Flags below override its keys.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: ScenarioOverrides,
    /// The relay's public HTTPS URL (or a load balancer's).
    #[arg(long, default_value = "https://localhost:8443")]
    pub relay_url: String,
    /// PEM file of the certificate(s) to trust (the relay's self-signed one by default).
    #[arg(long, default_value = "noc-data/tls/cert.pem")]
    pub cacert: PathBuf,
    /// Connect to this address instead of resolving the URL's host (TLS still checks it).
    #[arg(long)]
    pub connect_ip: Option<IpAddr>,
    /// Device-channel address [default: what device activation returned].
    #[arg(long)]
    pub device_addr: Option<SocketAddr>,
    /// Name checked against the device channel's certificate [default: the URL's host].
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Local source addresses for outgoing connections, round robin, e.g.
    /// 127.0.0.1-127.0.0.16 (each has its own ephemeral ports).
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Use this existing license.
    #[arg(long, requires = "license_password")]
    pub license_name: Option<String>,
    #[arg(long, env = "LOADTEST_LICENSE_PASSWORD", hide_env_values = true)]
    pub license_password: Option<String>,
    /// Create a license with this `noc` binary (`noc admin license create`) ...
    #[arg(long, requires = "data_dir", conflicts_with = "license_name")]
    pub noc_bin: Option<PathBuf>,
    /// ... on this data directory of the relay.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// ... with this relay configuration file.
    #[arg(long)]
    pub noc_config: Option<PathBuf>,
    /// Accounts and device credentials, kept so that reruns skip activation.
    #[arg(long, default_value = "loadtest-credentials.json")]
    pub credentials: PathBuf,
    /// PID of a local relay: its RSS and CPU are sampled from /proc (several,
    /// comma-separated, are summed: the nodes of a local cluster).
    #[arg(long, value_delimiter = ',')]
    pub relay_pid: Vec<u32>,
    /// The relay's admin metrics URL (e.g. http://127.0.0.1:9090/metrics), to report its
    /// own counters beside the tool's.
    /// Several (comma-separated) are summed: the nodes of a cluster.
    #[arg(long, value_delimiter = ',')]
    pub relay_metrics_url: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Prepare licenses, accounts and devices, then stop.
    #[arg(long)]
    pub setup_only: bool,
    /// Begin the ramp at this wall-clock moment (Unix milliseconds) instead of right
    /// after setup: the workers of a campaign then ramp, send and storm together. An
    /// error if setup ends after it.
    #[arg(long, value_name = "MS")]
    pub start_at_unix_ms: Option<u64>,
}

impl RunArgs {
    /// The run's options.
    pub fn options(&self) -> Result<RunOptions, CliError> {
        let scenario = Scenario::resolve(self.scenario.as_deref(), &self.overrides)?;
        let license = match (&self.license_name, &self.license_password, &self.noc_bin, &self.data_dir) {
            (Some(name), Some(password), _, _) => {
                LicenseSource::Existing { name: name.clone(), password: password.clone() }
            }
            (Some(_), None, _, _) => return Err(CliError::Usage("--license-name needs --license-password".into())),
            (None, _, Some(noc_bin), Some(data_dir)) => LicenseSource::Admin {
                noc_bin: noc_bin.clone(),
                data_dir: data_dir.clone(),
                config: self.noc_config.clone(),
            },
            (None, _, Some(_), None) => return Err(CliError::Usage("--noc-bin needs --data-dir".into())),
            (None, _, None, _) => LicenseSource::Cached,
        };
        let source_ips = match &self.source_ips {
            Some(s) => parse_source_ips(s)?,
            None => Vec::new(),
        };
        Ok(RunOptions {
            scenario,
            relay_url: self.relay_url.clone(),
            cacert: self.cacert.clone(),
            connect_ip: self.connect_ip,
            device_addr: self.device_addr,
            tls_server_name: self.tls_server_name.clone(),
            source_ips,
            license,
            credentials: self.credentials.clone(),
            relay_pids: self.relay_pid.clone(),
            relay_metrics_urls: self.relay_metrics_url.clone(),
            progress: !self.output.quiet,
            setup_only: self.setup_only,
            start_at_unix_ms: self.start_at_unix_ms,
        })
    }
}

#[derive(Args, Debug)]
pub struct PeerArgs {
    /// Which baseline: mqtt (QoS 1), nats, or forward (a 1:1 proxy to --sink-listen).
    #[arg(long, value_enum)]
    pub protocol: PeerProtocol,
    /// Scenario file (TOML; `ves_count` must be 1). Flags below override its keys.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: ScenarioOverrides,
    /// The broker's (or the proxy's) TLS address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Name checked against the broker's certificate.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// PEM file of the certificate(s) to trust.
    #[arg(long)]
    pub cacert: PathBuf,
    /// forward: where the hub accepts the proxy's upstream connections (TLS).
    #[arg(long, requires_all = ["sink_cert", "sink_key"])]
    pub sink_listen: Option<SocketAddr>,
    /// forward: the sink's certificate chain (PEM).
    #[arg(long)]
    pub sink_cert: Option<PathBuf>,
    /// forward: the sink's private key (PEM).
    #[arg(long)]
    pub sink_key: Option<PathBuf>,
    /// Local source addresses for outgoing connections, round robin.
    #[arg(long)]
    pub source_ips: Option<String>,
    /// PIDs of the local broker's processes, sampled and summed (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub peer_pid: Vec<u32>,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl PeerArgs {
    /// The run's options.
    pub fn options(&self) -> Result<PeerOptions, CliError> {
        let sink = match (self.sink_listen, &self.sink_cert, &self.sink_key) {
            (Some(listen), Some(cert), Some(key)) => Some(SinkOptions { listen, cert: cert.clone(), key: key.clone() }),
            (None, _, _) => None,
            _ => return Err(CliError::Usage("--sink-listen needs --sink-cert and --sink-key".into())),
        };
        Ok(PeerOptions {
            protocol: self.protocol,
            scenario: Scenario::resolve(self.scenario.as_deref(), &self.overrides)?,
            addr: self.addr,
            server_name: self.server_name.clone(),
            cacert: self.cacert.clone(),
            sink,
            source_ips: match &self.source_ips {
                Some(s) => parse_source_ips(s)?,
                None => Vec::new(),
            },
            peer_pids: self.peer_pid.clone(),
            progress: !self.output.quiet,
        })
    }
}

/// Writes the JSON result and, if asked, its HTML report.
pub fn write_outputs(result: &RunResult, json: &Path, html: Option<&Path>) -> Result<(), ReportError> {
    result.save(json)?;
    if let Some(path) = html {
        let page = crate::html::render(result)?;
        std::fs::write(path, page).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

/// `loadtest merge`: reads, merges and writes.
pub fn merge_files(inputs: &[PathBuf], out: &Path, html: Option<&Path>) -> Result<RunResult, ReportError> {
    let results = inputs.iter().map(|p| RunResult::load(p)).collect::<Result<Vec<_>, _>>()?;
    let merged = crate::result::merge(&results)?;
    write_outputs(&merged, out, html)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_options() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "run",
            "--devices-per-ves",
            "50",
            "--rate-frames-per-second",
            "1000",
            "--source-ips",
            "127.0.0.1-127.0.0.4",
            "--noc-bin",
            "target/release/noc",
            "--data-dir",
            "d",
        ])
        .expect("parse");
        let Command::Run(args) = cli.command else { panic!("run") };
        let o = args.options().expect("options");
        assert_eq!(o.scenario.devices_per_ves, 50);
        assert_eq!(o.source_ips.len(), 4);
        assert!(matches!(o.license, LicenseSource::Admin { .. }));
        assert_eq!(args.output.html_path(), PathBuf::from("loadtest-result.html"));
        assert!(Cli::try_parse_from(["loadtest", "run", "--noc-bin", "x"]).is_err(), "needs --data-dir");
    }

    #[test]
    fn peer_flags_parse_into_options() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "peer",
            "--protocol",
            "forward",
            "--addr",
            "127.0.0.1:28443",
            "--cacert",
            "c.pem",
            "--sink-listen",
            "127.0.0.1:28444",
            "--sink-cert",
            "c.pem",
            "--sink-key",
            "k.pem",
            "--peer-pid",
            "10,11",
            "--devices-per-ves",
            "20",
        ])
        .expect("parse");
        let Command::Peer(args) = cli.command else { panic!("peer") };
        let o = args.options().expect("options");
        assert_eq!(o.protocol, PeerProtocol::Forward);
        assert_eq!(o.peer_pids, vec![10, 11]);
        assert_eq!(o.scenario.devices_per_ves, 20);
        assert!(o.sink.is_some());
        let no_key = ["loadtest", "peer", "--protocol", "forward", "--addr", "127.0.0.1:1", "--cacert", "c"];
        assert!(Cli::try_parse_from(no_key.iter().chain(&["--sink-listen", "127.0.0.1:2"])).is_err());
    }
}
