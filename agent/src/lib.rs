//! The enterprise server agent (VES): the piece that sits behind the enterprise firewall,
//! opens only outbound HTTPS to the relay, and pushes the users' mail, calendar and contacts
//! to their devices, end-to-end encrypted (white paper §2, §3, §4, §7.2).
//!
//! * [`register`] exchanges the license name and password for a license-id token and
//!   creates the agent's identity (GUID, VES static key) in the state directory.
//! * [`run`] keeps an RTS session ([`session`]), watches the Maildir tree ([`source`]),
//!   runs one end-to-end link per device ([`engine`]), submits mail composed on devices to
//!   the enterprise SMTP server ([`submit`]), and answers local administration commands on
//!   a Unix socket ([`control`]) — `user add` sends the welcome mail ([`smtp`]).
//!
//! The binary `ves-agent` is a thin command line over these functions.

pub mod alerts;
pub mod browse;
pub mod config;
pub mod control;
pub mod db;
pub mod engine;
pub mod enroll;
pub mod error;
pub mod rts_client;
pub mod session;
pub mod smtp;
pub mod source;
pub mod state;
pub mod stats;
pub mod submit;

use std::path::PathBuf;
use std::sync::Arc;

use noc_crypto::{Responder, ResponderConfig};
use noc_endpoint::Store;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;
pub use control::{ControlRequest, call};
pub use engine::{AgentStatus, DeviceStatus};
pub use error::{AgentError, RtsError};
pub use state::AgentState;
pub use stats::{AgentStats, StatsSnapshot};

/// Hooks for embedding the agent (tests, tools).
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Receives every command-channel line as it arrived from the relay.
    pub command_tap: Option<mpsc::UnboundedSender<String>>,
}

/// The result of [`register`].
#[derive(Debug)]
pub struct Registered {
    pub fingerprint: String,
    pub max_users: u32,
    pub used_users: u32,
}

/// License login (white paper §3.4): stores the license-id token in the state file,
/// creating the agent's GUID and VES key on first use.
pub async fn register(config: &AgentConfig) -> Result<Registered, AgentError> {
    let mut state = AgentState::load_or_create(&config.state.dir)?;
    let rts = rts_client::Rts::new(config)?;
    let resp = rts.license(&config.license.name, config.license.password.expose()).await?;
    state.license_token = Some(resp.license_id);
    state.save(&config.state.dir)?;
    Ok(Registered {
        fingerprint: state.key()?.fingerprint().to_string(),
        max_users: resp.max_users,
        used_users: resp.used_users,
    })
}

/// The VES key fingerprint users pin (creating the identity if there is none yet).
pub fn fingerprint(config: &AgentConfig) -> Result<String, AgentError> {
    Ok(AgentState::load_or_create(&config.state.dir)?.key()?.fingerprint().to_string())
}

/// The control socket of an agent with this configuration.
pub fn control_socket(config: &AgentConfig) -> PathBuf {
    config.state.dir.join(state::CONTROL_SOCKET)
}

/// Runs the agent until `shutdown` is cancelled (Ok) or something that must not be retried
/// happens (another agent took over the GUID, the relay speaks another protocol, the
/// control socket or the mail source cannot be set up).
pub async fn run(config: AgentConfig, opts: RunOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    let config = Arc::new(config);
    let state = AgentState::load(&config.state.dir)?.ok_or(AgentError::NotRegistered)?;
    if state.license_token.is_none() {
        return Err(AgentError::NotRegistered);
    }
    let responder = Arc::new(Responder::new(
        state.key()?,
        ResponderConfig { suites: config.suites()?, ..ResponderConfig::default() },
    )?);
    let fingerprint = responder.fingerprint().to_string();
    let store = Arc::new(Store::open(&config.state.dir.join(state::DB_FILE), db::SCHEMA)?);
    let rts = rts_client::Rts::new(&config)?;
    let mailer = smtp::Mailer::new(&config.smtp)?;
    let stats = Arc::new(AgentStats::default());
    let (keys_tx, keys_rx) = watch::channel(None);
    let data = rts_client::DataChannel::new(rts.clone(), keys_rx, config.relay.data_channel_concurrency);
    let (engine_tx, engine_rx) = mpsc::channel(1024);
    let (scan_tx, scan_rx) = mpsc::channel(64);
    let wake_submitter = Arc::new(Notify::new());
    let limits = noc_endpoint::store::QueueLimits {
        max_items: config.queue.max_items_per_device,
        ttl_ms: (config.queue.ttl_seconds as i64).saturating_mul(1000),
        policy: noc_endpoint::store::FullPolicy::DropOldest,
    };
    let enrollment = enroll::Enrollment::from_config(store.clone(), &config.ca, limits)?;
    tracing::info!(fingerprint = %fingerprint, relay = %config.relay.url, "VES agent starting");

    let stop = shutdown.child_token();
    let mut tasks: JoinSet<Result<(), AgentError>> = JoinSet::new();
    let supervisor = session::Supervisor {
        config: config.clone(),
        rts,
        guid: state.guid.clone(),
        license_token: state.license_token.clone(),
        keys: keys_tx,
        engine: engine_tx.clone(),
        stats: stats.clone(),
        tap: opts.command_tap,
    };
    tasks.spawn(supervisor.run(stop.clone()));
    let engine = engine::Engine {
        config: config.clone(),
        store: store.clone(),
        responder,
        data: data.clone(),
        stats: stats.clone(),
        tx: engine_tx.clone(),
        scans: scan_tx,
        submit: wake_submitter.clone(),
        enroll: enrollment.wake_handle(),
        browser: browse::Browser {
            config: config.clone(),
            store: store.clone(),
            data: data.clone(),
            mailer: Some(mailer.clone()),
        },
    };
    let s = stop.clone();
    tasks.spawn(async move {
        engine.run(engine_rx, s).await;
        Ok(())
    });
    tasks.spawn(source::run(config.mail.clone(), engine_tx.clone(), scan_rx, stop.clone()));
    let s = stop.clone();
    let (st, sm, sc, ss) = (store.clone(), mailer.clone(), config.smtp.clone(), stats.clone());
    tasks.spawn(async move {
        submit::run(st, sm, sc, ss, wake_submitter, s).await;
        Ok(())
    });
    let (e, s) = (enrollment.clone(), stop.clone());
    tasks.spawn(async move {
        e.run(s).await;
        Ok(())
    });
    let ctx =
        control::ControlCtx { config: config.clone(), data, mailer, fingerprint, engine: engine_tx, stats, enrollment };
    let socket = control_socket(&config);
    let s = stop.clone();
    tasks.spawn(async move { control::serve(&socket, ctx, s).await });

    // The first task to end ends them all; its error (if any) is the result.
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        stop.cancel();
        let r = match done {
            Ok(r) => r,
            Err(e) => Err(AgentError::Control(format!("a task failed: {e}"))),
        };
        if result.is_ok() {
            result = r;
        }
    }
    result
}

/// An agent running on the current runtime (tests, embedding). Dropping the handle asks
/// the agent to stop (without waiting); [`AgentHandle::stop`] also waits.
pub struct AgentHandle {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), AgentError>>,
    pub socket: PathBuf,
}

impl AgentHandle {
    /// Stops the agent and waits for it.
    pub async fn stop(mut self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        (&mut self.task).await.map_err(|e| AgentError::Control(format!("agent task: {e}")))?
    }

    /// A request on the agent's control socket.
    pub async fn control(&self, req: &ControlRequest) -> Result<serde_json::Value, AgentError> {
        call(&self.socket, req).await
    }

    /// The agent's status.
    pub async fn status(&self) -> Result<AgentStatus, AgentError> {
        let v = self.control(&ControlRequest::Status).await?;
        serde_json::from_value(v).map_err(|e| AgentError::Control(e.to_string()))
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Spawns [`run`] on the current runtime.
pub fn spawn(config: AgentConfig, opts: RunOptions) -> AgentHandle {
    let shutdown = CancellationToken::new();
    let socket = control_socket(&config);
    let task = tokio::spawn(run(config, opts, shutdown.clone()));
    AgentHandle { shutdown, task, socket }
}
