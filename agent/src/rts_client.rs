//! The RTS protocol client (docs/protocol.md §4): license login, connect parameters, the
//! event-URL POST whose streamed response is the command channel, and data-channel
//! requests with a bounded number in flight.
//!
//! All requests go through one `reqwest` client: HTTP/1.1 (the relay speaks nothing else),
//! rustls with the *ring* provider trusting the configured CA, and — when configured — an
//! HTTP CONNECT proxy with basic authentication, which is how agents behind enterprise
//! firewalls reach the Internet. Without a configured proxy the environment's proxy
//! variables are ignored, so the agent's path to the relay is what its configuration says.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use noc_protocol::rts::{
    self, ConnectParams, DataRequest, ErrorReply, LicenseRequest, LicenseResponse, RtsConnectionEnvelope,
};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};

use crate::config::AgentConfig;
use crate::error::{AgentError, RtsError};

/// The agent's name in `RtsConnection.Agent`.
pub const AGENT_NAME: &str = concat!("ves-agent/", env!("CARGO_PKG_VERSION"));

/// The KeyId and Key of the current RTS session.
#[derive(Clone)]
pub struct SessionKeys {
    pub key_id: String,
    pub key: String,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys").field("key_id", &self.key_id).field("key", &"***").finish()
    }
}

/// HTTP access to the relay.
#[derive(Clone)]
pub struct Rts {
    http: Arc<RwLock<reqwest::Client>>,
    config: Arc<AgentConfig>,
    base: String,
    request_timeout: Duration,
}

impl Rts {
    pub fn new(config: &AgentConfig) -> Result<Self, AgentError> {
        Ok(Rts {
            http: Arc::new(RwLock::new(build_client(config)?)),
            config: Arc::new(config.clone()),
            base: config.relay.url.clone(),
            request_timeout: Duration::from_secs(config.relay.request_timeout_seconds),
        })
    }

    fn client(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops the pool of kept-alive connections. After the command channel broke, the
    /// idle connections probably ran over the same dead path; reusing one would hang a
    /// request until its timeout instead of failing or succeeding at once.
    pub fn reset_connections(&self) {
        match build_client(&self.config) {
            Ok(c) => *self.http.write().unwrap_or_else(|p| p.into_inner()) = c,
            Err(e) => tracing::warn!(error = %e, "cannot rebuild the HTTP client; keeping the old one"),
        }
    }

    /// `POST /rts/v1/license`: license name and password → license-id token.
    pub async fn license(&self, name: &str, password: &str) -> Result<LicenseResponse, RtsError> {
        let body = LicenseRequest { name: name.into(), password: password.into() };
        let req = self.client().post(format!("{}/rts/v1/license", self.base)).json(&body).timeout(self.request_timeout);
        send_json(req).await
    }

    /// `GET /rts/v1/connect`.
    pub async fn connect_params(&self) -> Result<ConnectParams, RtsError> {
        send_json(self.client().get(format!("{}/rts/v1/connect", self.base)).timeout(self.request_timeout)).await
    }

    /// `POST {EventUrl}`: the response body is the command channel. No overall timeout:
    /// the channel lives for hours; heartbeats supervise it.
    pub async fn open_channel(
        &self,
        params: &ConnectParams,
        guid: &str,
        license_id: Option<&str>,
    ) -> Result<reqwest::Response, RtsError> {
        let mut envelope = RtsConnectionEnvelope::new(guid, license_id, AGENT_NAME);
        // Browse access needs version 2; a relay that does not offer it gets version 1.
        if params.protocol_versions.contains(&rts::fetch::FETCH_VERSION) {
            envelope = envelope.with_version(rts::fetch::FETCH_VERSION);
        }
        // The relay answers at once and then streams: bound the wait for the headers only.
        let send = self.client().post(&params.event_url).header(rts::HEADER_KEY, &params.key).json(&envelope).send();
        let resp = tokio::time::timeout(self.request_timeout, send)
            .await
            .map_err(|_| RtsError::Transport("no answer to the event-URL POST".into()))?
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        Ok(resp)
    }

    /// `POST /rts/v1/data` on the session `keys`.
    pub async fn data<T: DeserializeOwned>(&self, keys: &SessionKeys, req: &DataRequest) -> Result<T, RtsError> {
        let r = self
            .client()
            .post(format!("{}/rts/v1/data", self.base))
            .header(rts::HEADER_KEY_ID, &keys.key_id)
            .header(rts::HEADER_KEY, &keys.key)
            .json(req)
            .timeout(self.request_timeout);
        send_json(r).await
    }
}

fn build_client(config: &AgentConfig) -> Result<reqwest::Client, AgentError> {
    let tls = noc_tls::client_config(config.relay.ca_file.as_deref(), &[b"http/1.1"])
        .map_err(noc_endpoint::EndpointError::from)?;
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .connect_timeout(Duration::from_secs(config.relay.connect_timeout_seconds))
        .pool_max_idle_per_host(config.relay.data_channel_concurrency)
        // Given up before the relay closes it: a data-channel request sent on a connection
        // the relay is closing fails with nothing answered.
        .pool_idle_timeout(noc_protocol::rts::CLIENT_POOL_IDLE)
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(AGENT_NAME);
    builder = match &config.proxy {
        None => builder.no_proxy(),
        Some(p) => {
            let mut proxy = reqwest::Proxy::all(&p.url).map_err(|e| AgentError::Config(format!("proxy.url: {e}")))?;
            if let Some(user) = &p.username {
                proxy = proxy.basic_auth(user, p.password.as_ref().map(|s| s.expose()).unwrap_or(""));
            }
            builder.proxy(proxy)
        }
    };
    builder.build().map_err(|e| AgentError::Config(format!("HTTP client: {e}")))
}

fn transport(e: reqwest::Error) -> RtsError {
    // The whole source chain: "error sending request" alone hides a 407 from the proxy.
    RtsError::Transport(noc_endpoint::cli::report(&e))
}

async fn send_json<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, RtsError> {
    let resp = req.send().await.map_err(transport)?;
    if !resp.status().is_success() {
        return Err(failure(resp).await);
    }
    let bytes = resp.bytes().await.map_err(transport)?;
    serde_json::from_slice(&bytes).map_err(|e| RtsError::Decode(e.to_string()))
}

async fn failure(resp: reqwest::Response) -> RtsError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let reply = ErrorReply::parse(&resp.bytes().await.unwrap_or_default());
    RtsError::Api { status, code: reply.code_text, message: reply.message, retry_after }
}

/// Data-channel access shared by the engine, the control socket and the supervisor: the
/// current session's keys and a semaphore bounding requests in flight.
#[derive(Clone)]
pub struct DataChannel {
    rts: Rts,
    keys: watch::Receiver<Option<SessionKeys>>,
    permits: Arc<Semaphore>,
}

impl DataChannel {
    pub fn new(rts: Rts, keys: watch::Receiver<Option<SessionKeys>>, concurrency: usize) -> Self {
        DataChannel { rts, keys, permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }

    /// Whether a session is open right now.
    pub fn is_open(&self) -> bool {
        self.keys.borrow().is_some()
    }

    /// A request on the current session, waiting for a free slot. Fails with
    /// [`RtsError::NoSession`] when no session is open.
    pub async fn request<T: DeserializeOwned>(&self, req: &DataRequest) -> Result<T, RtsError> {
        let _permit = self.permits.acquire().await.map_err(|_| RtsError::NoSession)?;
        let keys = self.keys.borrow().clone().ok_or(RtsError::NoSession)?;
        self.rts.data(&keys, req).await
    }

    /// Like [`DataChannel::request`], but waits up to `wait` for a session to open first
    /// (an administrator's command right after the agent started).
    pub async fn request_when_open<T: DeserializeOwned>(
        &self,
        req: &DataRequest,
        wait: Duration,
    ) -> Result<T, RtsError> {
        let mut keys = self.keys.clone();
        let _ = tokio::time::timeout(wait, keys.wait_for(|k| k.is_some())).await;
        self.request(req).await
    }
}
