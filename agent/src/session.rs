//! Keeps an RTS session with the relay for as long as the agent runs (docs/protocol.md
//! §4.3.6): connect, open the command channel, watch its heartbeats, and when it breaks,
//! resume the same session (same EventUrl and Key) or start a new one.
//!
//! ```text
//!  GET connect ─▶ POST EventUrl ─▶ read lines ──┬─ HB late / stream ends ─▶ backoff ─▶ POST EventUrl (resume)
//!       ▲                                        ├─ 401 invalid_session on resume ─────▶ GET connect (new)
//!       └──────────── Close server_draining ◀────┤
//!                                                └─ Close replaced ─▶ stop: another agent has this GUID
//! ```
//!
//! A first connection refused with `401 invalid_credentials` may only mean that the
//! license-id token expired or was revoked before this installation registered: the agent
//! logs in with its license credentials again (at most once a minute) and retries at once.
//!
//! Commands other than `Session` and `HB` go to the engine in order; the supervisor only
//! owns liveness. Reconnects use jittered exponential backoff, and `Retry-After` when the
//! relay gives one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use noc_endpoint::Backoff;
use noc_protocol::rts::Command;
use noc_protocol::{ApiErrorCode, CloseCode};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::engine::EngineEvent;
use crate::error::{AgentError, RtsError};
use crate::rts_client::{Rts, SessionKeys};
use crate::state::AgentState;
use crate::stats::AgentStats;

/// Command names this agent understands; other lines are skipped (protocol §1.3).
const KNOWN_COMMANDS: &[&str] = &[
    "Session",
    "ActivateUsers",
    "DeactivateUsers",
    "HB",
    "FilterRules",
    "ConstantSync",
    "DeviceFrame",
    "Ack",
    "Undeliverable",
    "DevicePresence",
    "DeviceActivated",
    "DeviceRevoked",
    "Fetch",
    "Close",
];

/// Least time between two license logins that renew the license-id token.
const RENEW_EVERY: Duration = Duration::from_secs(60);

/// Before the `Session` line tells the heartbeat interval, wait this long for lines.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Supervisor {
    pub config: Arc<AgentConfig>,
    pub rts: Rts,
    pub guid: String,
    pub license_token: Option<String>,
    pub keys: watch::Sender<Option<SessionKeys>>,
    pub engine: mpsc::Sender<EngineEvent>,
    pub stats: Arc<AgentStats>,
    /// Every command-channel line as received (tests capture what crossed the relay).
    pub tap: Option<mpsc::UnboundedSender<String>>,
}

enum ChannelEnd {
    Shutdown,
    Broken(String),
    Close { code: CloseCode, message: String, reconnect_after: Duration },
}

impl Supervisor {
    /// Runs until `shutdown` (Ok) or a condition that must not be retried automatically.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let r = &self.config.relay;
        let mut backoff =
            Backoff::new(Duration::from_millis(r.reconnect_initial_ms), Duration::from_secs(r.reconnect_max_seconds));
        let mut last_renewal: Option<Instant> = None;
        'session: loop {
            let params = match self.rts.connect_params().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get RTS connect parameters");
                    if !self.pause(&mut backoff, e.retry_after(), &shutdown).await {
                        return Ok(());
                    }
                    continue 'session;
                }
            };
            if params.protocol_version != noc_protocol::rts::RTS_PROTOCOL_VERSION {
                return Err(AgentError::UnsupportedProtocol(params.protocol_version));
            }
            loop {
                let channel = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    c = self.rts.open_channel(&params, &self.guid, self.license_token.as_deref()) => c,
                };
                match channel {
                    Ok(resp) => {
                        self.keys
                            .send_replace(Some(SessionKeys { key_id: params.key_id.clone(), key: params.key.clone() }));
                        let end = self.read(resp, &mut backoff, &shutdown).await;
                        let _ = self.engine.send(EngineEvent::ChannelDown).await;
                        match end {
                            ChannelEnd::Shutdown => {
                                self.keys.send_replace(None);
                                return Ok(());
                            }
                            ChannelEnd::Close { code: CloseCode::Replaced, message, .. } => {
                                self.keys.send_replace(None);
                                tracing::error!(%message, "another agent with this GUID took over; stopping");
                                return Err(AgentError::Replaced(message));
                            }
                            ChannelEnd::Close { code, message, reconnect_after } => {
                                self.keys.send_replace(None);
                                tracing::warn!(%code, %message, "the relay closed the RTS session");
                                if !self.sleep(reconnect_after.max(backoff.next_delay()), &shutdown).await {
                                    return Ok(());
                                }
                                continue 'session;
                            }
                            ChannelEnd::Broken(reason) => {
                                self.stats.channel_breaks.fetch_add(1, Ordering::Relaxed);
                                self.rts.reset_connections();
                                tracing::warn!(%reason, "command channel broken; resuming the session");
                                if !self.pause(&mut backoff, None, &shutdown).await {
                                    return Ok(());
                                }
                            }
                        }
                    }
                    Err(e) if e.code() == Some(ApiErrorCode::InvalidSession) => {
                        tracing::info!("RTS session gone; starting a new one");
                        self.keys.send_replace(None);
                        continue 'session;
                    }
                    Err(e @ RtsError::Api { status: 401, .. }) => {
                        if e.code() == Some(ApiErrorCode::InvalidCredentials)
                            && last_renewal.is_none_or(|at| at.elapsed() >= RENEW_EVERY)
                        {
                            last_renewal = Some(Instant::now());
                            if self.renew_license_token().await {
                                continue 'session;
                            }
                        }
                        // GUID or license refused: retrying the same credentials cannot help
                        // until the operator acts, but keep trying slowly.
                        tracing::error!(error = %e, "the relay refused this agent's GUID or license");
                        self.keys.send_replace(None);
                        if !self.pause(&mut backoff, e.retry_after(), &shutdown).await {
                            return Ok(());
                        }
                        continue 'session;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the command channel");
                        if matches!(e, RtsError::Transport(_)) {
                            self.rts.reset_connections();
                        }
                        if !self.pause(&mut backoff, e.retry_after(), &shutdown).await {
                            return Ok(());
                        }
                        // Consumed parameters need a new connect; fresh ones can be retried,
                        // and a 401 on the retry sends us to a new session anyway.
                    }
                }
            }
        }
    }

    /// A license login for a fresh license-id token, kept in the state file; whether it
    /// worked.
    async fn renew_license_token(&mut self) -> bool {
        let license = &self.config.license;
        match self.rts.license(&license.name, license.password.expose()).await {
            Ok(resp) => {
                tracing::info!("license-id token renewed; connecting again");
                let dir = &self.config.state.dir;
                let saved = AgentState::load(dir).and_then(|state| match state {
                    Some(mut state) => {
                        state.license_token = Some(resp.license_id.clone());
                        state.save(dir)
                    }
                    None => Err(AgentError::NotRegistered),
                });
                if let Err(e) = saved {
                    tracing::warn!(error = %e, "the renewed license-id token is not saved; it is used until the agent stops");
                }
                self.license_token = Some(resp.license_id);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "license login refused: has the license password changed (license.password)?");
                false
            }
        }
    }

    async fn pause(&self, backoff: &mut Backoff, retry_after: Option<Duration>, shutdown: &CancellationToken) -> bool {
        let d = backoff.next_delay().max(retry_after.unwrap_or_default());
        self.sleep(d, shutdown).await
    }

    async fn sleep(&self, d: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Reads the command channel until it ends; supervises heartbeats.
    async fn read(&self, resp: reqwest::Response, backoff: &mut Backoff, shutdown: &CancellationToken) -> ChannelEnd {
        let tolerance = self.config.heartbeat_tolerance();
        let max_line = self.config.relay.max_command_line_bytes;
        let mut deadline = Instant::now() + FIRST_LINE_TIMEOUT;
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return ChannelEnd::Shutdown,
                _ = tokio::time::sleep_until(deadline) => {
                    self.stats.heartbeat_timeouts.fetch_add(1, Ordering::Relaxed);
                    return ChannelEnd::Broken(format!("no heartbeat within its interval + {} s", tolerance.as_secs()));
                }
                c = body.next() => c,
            };
            let bytes = match chunk {
                None => return ChannelEnd::Broken("the relay ended the command channel".into()),
                Some(Err(e)) => return ChannelEnd::Broken(format!("command channel: {e}")),
                Some(Ok(b)) => b,
            };
            buf.extend_from_slice(&bytes);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue;
                }
                if let Some(end) = self.line(line, &mut deadline, backoff, tolerance).await {
                    return end;
                }
            }
            if buf.len() > max_line {
                return ChannelEnd::Broken(format!("a command line exceeds {max_line} bytes"));
            }
        }
    }

    async fn line(
        &self,
        line: &[u8],
        deadline: &mut Instant,
        backoff: &mut Backoff,
        tolerance: Duration,
    ) -> Option<ChannelEnd> {
        if let Some(tap) = &self.tap {
            let _ = tap.send(String::from_utf8_lossy(line).into_owned());
        }
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "unparseable command-channel line skipped");
                return None;
            }
        };
        let name = value.get("Command").and_then(|c| c.as_str()).unwrap_or_default().to_owned();
        if !KNOWN_COMMANDS.contains(&name.as_str()) {
            tracing::debug!(command = %name, "unknown command skipped");
            return None;
        }
        let command: Command = match serde_json::from_value(value) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(command = %name, error = %e, "malformed command skipped");
                return None;
            }
        };
        match command {
            Command::Session { heartbeat_interval_seconds, resumed, key_id, .. } => {
                *deadline = Instant::now() + Duration::from_secs(heartbeat_interval_seconds) + tolerance;
                backoff.reset();
                let counter = if resumed { &self.stats.resumes } else { &self.stats.sessions };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%key_id, resumed, "command channel open");
                let _ = self.engine.send(EngineEvent::ChannelUp { resumed }).await;
            }
            Command::Heartbeat { next_in_seconds, .. } => {
                *deadline = Instant::now() + Duration::from_secs(next_in_seconds) + tolerance;
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Command::Close { code, message, reconnect_after_ms } => {
                return Some(ChannelEnd::Close {
                    code,
                    message,
                    reconnect_after: Duration::from_millis(reconnect_after_ms),
                });
            }
            other => {
                if self.engine.send(EngineEvent::Command(Box::new(other))).await.is_err() {
                    return Some(ChannelEnd::Shutdown);
                }
            }
        }
        None
    }
}
