use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use noc_protocol::DeviceId;
use noc_protocol::device::ForwardKind;
use noc_protocol::rts::{
    self, AcksResponse, Command, ConnectParams, DataRequest, ErrorReply, FrameRef, FramesResponse, LicenseResponse,
    OutboundFrame, ProvisionedUser, RtsConnectionEnvelope, Secret,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// An HTTP error as the relay returned it.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// A fake enterprise server speaking RTS over HTTPS.
pub struct FakeVes {
    http: reqwest::Client,
    base: String,
    pub guid: String,
    pub license_token: Option<String>,
    /// KeyId and Key of the current session.
    pub session: Option<(String, String)>,
    /// The RTS version asked for in `RtsConnection` (`None`: none named, version 1).
    pub protocol_version: Option<u32>,
}

/// The command channel: commands parsed from the streamed NDJSON response.
pub struct CommandChannel {
    rx: mpsc::UnboundedReceiver<Result<Command, String>>,
    task: tokio::task::JoinHandle<()>,
    pub params: ConnectParams,
}

impl CommandChannel {
    /// The next command, `None` on timeout or end of stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<Command> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(Ok(c))) => Some(c),
            Ok(Some(Err(e))) => panic!("command channel sent an unparseable line: {e}"),
            _ => None,
        }
    }

    /// Skips commands until one matches `pred`.
    pub async fn wait_for(&mut self, timeout: Duration, mut pred: impl FnMut(&Command) -> bool) -> Option<Command> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let c = self.next(left).await?;
            if pred(&c) {
                return Some(c);
            }
        }
    }

    /// Whether the stream ended (the relay closed it) within `timeout`, skipping commands.
    pub async fn ended(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Whether the relay ended the stream (its reader finished).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Drops the HTTP connection, as a crashed VES or a broken network would.
    pub fn drop_connection(self) {
        self.task.abort();
    }
}

impl Drop for CommandChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends a request and decodes a JSON success body, or the relay's error body.
async fn send_json<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, ApiFailure> {
    let resp =
        req.send().await.map_err(|e| ApiFailure { status: 0, code: "transport".into(), message: e.to_string() })?;
    if !resp.status().is_success() {
        return Err(failure(resp).await);
    }
    resp.json().await.map_err(|e| ApiFailure { status: 0, code: "decode".into(), message: e.to_string() })
}

async fn failure(resp: reqwest::Response) -> ApiFailure {
    let status = resp.status().as_u16();
    let reply = ErrorReply::parse(&resp.bytes().await.unwrap_or_default());
    ApiFailure { status, code: reply.code_text, message: reply.message }
}

impl FakeVes {
    pub fn new(base: &str, cert: &Path) -> Self {
        let tls = crate::client_config(cert, &[b"http/1.1"]).expect("TLS client config");
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve("localhost", "127.0.0.1:0".parse().expect("addr"))
            .pool_max_idle_per_host(32)
            .build()
            .expect("HTTP client");
        // The relay's certificate names `localhost`; talk to it by that name.
        let base = base.replace("127.0.0.1", "localhost");
        Self { http, base, guid: crate::random_guid(), license_token: None, session: None, protocol_version: None }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs a JSON value to a path of the public listener.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ApiFailure> {
        send_json(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    /// POSTs raw bytes; returns status and body text.
    pub async fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// License name + password → license-id token (kept for the first connect).
    pub async fn license(&mut self, name: &str, password: &str) -> Result<LicenseResponse, ApiFailure> {
        let body = serde_json::json!({ "Name": name, "Password": password });
        let resp: LicenseResponse = self.post_json("/rts/v1/license", &body).await?;
        self.license_token = Some(resp.license_id.clone());
        Ok(resp)
    }

    pub async fn connect_params(&self) -> Result<ConnectParams, ApiFailure> {
        send_json(self.http.get(format!("{}/rts/v1/connect", self.base))).await
    }

    /// GET connect + POST EventUrl: a new session with this VES's GUID and license token.
    pub async fn open(&mut self) -> Result<CommandChannel, ApiFailure> {
        let params = self.connect_params().await?;
        self.attach(params, self.guid.clone(), self.license_token.clone()).await
    }

    /// POSTs the event URL of `params` (a new session, or a resume with the same params).
    pub async fn attach(
        &mut self,
        params: ConnectParams,
        guid: String,
        license_id: Option<String>,
    ) -> Result<CommandChannel, ApiFailure> {
        let mut envelope = RtsConnectionEnvelope::new(&guid, license_id.as_deref(), "fake-ves/1");
        if let Some(v) = self.protocol_version {
            envelope = envelope.with_version(v);
        }
        // The event URL names the relay by IP; use the certificate's name.
        let url = params.event_url.replace("127.0.0.1", "localhost");
        let resp = self
            .http
            .post(url)
            .header(rts::HEADER_KEY, &params.key)
            .json(&envelope)
            .send()
            .await
            .map_err(|e| ApiFailure { status: 0, code: "transport".into(), message: e.to_string() })?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        self.session = Some((params.key_id.clone(), params.key.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let parsed = serde_json::from_slice::<Command>(&line[..line.len() - 1])
                        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&line)));
                    if tx.send(parsed).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(CommandChannel { rx, task, params })
    }

    /// A data-channel request on the current session.
    pub async fn data<T: DeserializeOwned>(&self, req: &DataRequest) -> Result<T, ApiFailure> {
        let (key_id, key) = self.session.clone().expect("no RTS session open");
        let url = format!("{}/rts/v1/data", self.base);
        send_json(self.http.post(url).header(rts::HEADER_KEY_ID, key_id).header(rts::HEADER_KEY, key).json(req)).await
    }

    pub async fn provision(&self, email: &str, password: Option<&str>) -> Result<ProvisionedUser, ApiFailure> {
        self.data(&DataRequest::ProvisionUser {
            email: email.into(),
            password: password.map(|p| Secret(p.into())),
            first_name: "Test".into(),
            last_name: "User".into(),
        })
        .await
    }

    pub async fn send_frame(&self, device_id: DeviceId, frame_id: u64, payload: &[u8]) -> FramesResponse {
        self.send_frames(vec![OutboundFrame {
            device_id,
            frame_id,
            kind: ForwardKind::Data,
            payload: rts::encode_payload(payload),
        }])
        .await
    }

    /// Like [`FakeVes::send_frame`], reporting failures instead of panicking.
    pub async fn try_send_frame(
        &self,
        device_id: DeviceId,
        frame_id: u64,
        payload: &[u8],
    ) -> Result<FramesResponse, ApiFailure> {
        let frame =
            OutboundFrame { device_id, frame_id, kind: ForwardKind::Data, payload: rts::encode_payload(payload) };
        self.data(&DataRequest::Frames { frames: vec![frame] }).await
    }

    pub async fn send_frames(&self, frames: Vec<OutboundFrame>) -> FramesResponse {
        self.data(&DataRequest::Frames { frames }).await.expect("Frames request")
    }

    pub async fn ack(&self, device_id: DeviceId, frame_id: u64) -> AcksResponse {
        self.data(&DataRequest::Acks { acks: vec![FrameRef { device_id, frame_id }] }).await.expect("Acks request")
    }

    /// Like [`FakeVes::ack`], reporting failures instead of panicking.
    pub async fn try_ack(&self, device_id: DeviceId, frame_id: u64) -> Result<AcksResponse, ApiFailure> {
        self.data(&DataRequest::Acks { acks: vec![FrameRef { device_id, frame_id }] }).await
    }

    /// The HTTP client, for requests the helpers do not cover.
    pub fn http(&self) -> Arc<reqwest::Client> {
        Arc::new(self.http.clone())
    }
}
