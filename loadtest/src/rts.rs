//! A minimal RTS client (docs/protocol.md §4–5): license login, session parameters, the
//! event-URL POST whose streamed response is the command channel, data-channel requests
//! and the activation endpoints. Used by setup and by the simulated VES.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use noc_protocol::rts::{
    self, AccountActivationRequest, AccountActivationResponse, ConnectParams, DataRequest, DeviceActivationRequest,
    DeviceActivationResponse, LicenseRequest, LicenseResponse, RtsConnection, RtsConnectionEnvelope,
};
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use thiserror::Error;

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

    /// The API error code, if the relay sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            RtsError::Api { code, .. } => Some(code),
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

    /// POSTs the event URL; on success the response body is the command channel.
    pub async fn attach(
        &self,
        params: &ConnectParams,
        guid: &str,
        license_id: Option<&str>,
    ) -> Result<reqwest::Response, RtsError> {
        let envelope = RtsConnectionEnvelope {
            rts_connection: RtsConnection {
                guid: guid.into(),
                license_id: license_id.map(String::from),
                agent: Some(concat!("noc-loadtest/", env!("CARGO_PKG_VERSION")).into()),
            },
        };
        let resp = self
            .http
            .post(&params.event_url)
            .header(rts::HEADER_KEY, &params.key)
            .json(&envelope)
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
    let text = resp.text().await.unwrap_or_default();
    // Parsed leniently: clients must accept error codes they do not know (§1.3).
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "Error")]
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(rename = "Code")]
        code: String,
        #[serde(rename = "Message", default)]
        message: String,
    }
    match serde_json::from_str::<Body>(&text) {
        Ok(b) => RtsError::Api { status, code: b.error.code, message: b.error.message },
        Err(_) => RtsError::Api { status, code: String::new(), message: text.chars().take(200).collect() },
    }
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
