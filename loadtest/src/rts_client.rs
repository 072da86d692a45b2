//! A minimal RTS client (docs/protocol.md §4–5): license login, session parameters, the
//! event-URL POST whose streamed response is the command channel, data-channel requests
//! and the activation endpoints. Used by setup and by the simulated VES.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use noc_protocol::ApiErrorCode;
use noc_protocol::rts::{
    self, AccountActivationRequest, AccountActivationResponse, ConnectParams, DataRequest, DeviceActivationRequest,
    DeviceActivationResponse, ErrorReply, LicenseRequest, LicenseResponse, RtsConnectionEnvelope,
};
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The load tool's name in `RtsConnection.Agent` (the relay's audit log).
pub const AGENT_NAME: &str = concat!("noc-loadtest/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Error)]
pub enum RtsError {
    /// The relay answered with an error body (docs/protocol.md §3).
    #[error("HTTP {status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Decode(String),
    #[error("invalid relay URL {0:?}")]
    Url(String),
}

impl RtsError {
    /// A short, bounded label for the error counters.
    pub fn kind(&self) -> String {
        match self {
            RtsError::Api { status, code, .. } if code.is_empty() => format!("http_{status}"),
            RtsError::Api { code, .. } => code.clone(),
            RtsError::Transport(_) => "transport".into(),
            RtsError::Decode(_) => "decode".into(),
            RtsError::Url(_) => "url".into(),
        }
    }

    /// The API error code, if the relay answered with an error body.
    pub fn code(&self) -> Option<ApiErrorCode> {
        match self {
            RtsError::Api { code, .. } => Some(ApiErrorCode::parse(code)),
            _ => None,
        }
    }
}

fn transport(e: reqwest::Error) -> RtsError {
    // reqwest's Display hides the cause (connection refused, TLS failure): include it.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    RtsError::Transport(msg)
}

/// An RTS session's credentials for the data channel.
#[derive(Clone, Debug)]
pub struct SessionKeys {
    pub key_id: String,
    pub key: String,
}

/// HTTPS client of the relay's public listener.
#[derive(Clone)]
pub struct RtsClient {
    http: reqwest::Client,
    base: String,
}

/// Host of an `https://host:port/...` URL.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

impl RtsClient {
    /// `base` is the relay's public URL (`https://host:port`). `connect_ip` overrides name
    /// resolution (TLS still checks the URL's host); `source_ip` binds outgoing connections.
    pub fn new(
        base: &str,
        tls: ClientConfig,
        connect_ip: Option<IpAddr>,
        source_ip: Option<IpAddr>,
        pool: usize,
    ) -> Result<Self, RtsError> {
        let base = base.trim_end_matches('/').to_string();
        let host = url_host(&base).ok_or_else(|| RtsError::Url(base.clone()))?.to_string();
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(pool)
            // Given up before the relay closes it: a request on a connection the relay is
            // closing fails with nothing answered (seen in the setup of 100 000 devices).
            .pool_idle_timeout(noc_protocol::rts::CLIENT_POOL_IDLE)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        if let Some(ip) = connect_ip {
            builder = builder.resolve(&host, SocketAddr::new(ip, 0));
        }
        if let Some(ip) = source_ip {
            builder = builder.local_address(ip);
        }
        let http = builder.build().map_err(transport)?;
        Ok(Self { http, base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, RtsError> {
        let bytes = Self::send_bytes(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| RtsError::Decode(e.to_string()))
    }

    async fn send_bytes(req: reqwest::RequestBuilder) -> Result<Bytes, RtsError> {
        let resp = req.send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        resp.bytes().await.map_err(transport)
    }

    pub async fn license(&self, name: &str, password: &str) -> Result<LicenseResponse, RtsError> {
        let body = LicenseRequest { name: name.into(), password: password.into() };
        Self::send(self.http.post(format!("{}/rts/v1/license", self.base)).json(&body)).await
    }

    pub async fn connect_params(&self) -> Result<ConnectParams, RtsError> {
        Self::send(self.http.get(format!("{}/rts/v1/connect", self.base))).await
    }

    /// POSTs `envelope` to the event URL; on success the response body is the command
    /// channel.
    pub async fn attach(
        &self,
        params: &ConnectParams,
        envelope: &RtsConnectionEnvelope,
    ) -> Result<reqwest::Response, RtsError> {
        let resp = self
            .http
            .post(&params.event_url)
            .header(rts::HEADER_KEY, &params.key)
            .json(envelope)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        Ok(resp)
    }

    /// A data-channel request.
    pub async fn data<T: DeserializeOwned>(&self, keys: &SessionKeys, req: &DataRequest) -> Result<T, RtsError> {
        let body = serde_json::to_vec(req).map_err(|e| RtsError::Decode(e.to_string()))?;
        let bytes = self.data_raw(keys, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| RtsError::Decode(e.to_string()))
    }

    /// A data-channel request with a body already encoded (the hot `Frames`/`Acks` path).
    pub async fn data_raw(&self, keys: &SessionKeys, body: Vec<u8>) -> Result<Bytes, RtsError> {
        Self::send_bytes(
            self.http
                .post(format!("{}/rts/v1/data", self.base))
                .header(rts::HEADER_KEY_ID, &keys.key_id)
                .header(rts::HEADER_KEY, &keys.key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    pub async fn activate_account(
        &self,
        req: &AccountActivationRequest,
    ) -> Result<AccountActivationResponse, RtsError> {
        Self::send(self.http.post(format!("{}/account/v1/activate", self.base)).json(req)).await
    }

    pub async fn activate_device(&self, req: &DeviceActivationRequest) -> Result<DeviceActivationResponse, RtsError> {
        Self::send(self.http.post(format!("{}/device/v1/activate", self.base)).json(req)).await
    }

    /// A plain GET of another URL with the same client (the relay's admin `/metrics`).
    pub async fn get_text(&self, url: &str) -> Result<String, RtsError> {
        let resp = self.http.get(url).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        resp.text().await.map_err(transport)
    }
}

async fn api_error(resp: reqwest::Response) -> RtsError {
    let status = resp.status().as_u16();
    let reply = ErrorReply::parse(&resp.bytes().await.unwrap_or_default());
    RtsError::Api { status, code: reply.code_text, message: reply.message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("https://localhost:8443"), Some("localhost"));
        assert_eq!(url_host("https://127.0.0.1:8443/rts/v1/event/x"), Some("127.0.0.1"));
        assert_eq!(url_host("https://relay.example.net"), Some("relay.example.net"));
        assert_eq!(url_host("https://[::1]:8443"), Some("::1"));
        assert_eq!(url_host("http://x"), None);
    }
}
