//! A simulated enterprise server (VES): an RTS session whose command channel is read by
//! one task, an open-loop pacer that sends VES → device frames in batched `Frames`
//! requests, and an ack batcher that acknowledges device frames with `Acks` requests —
//! with a bounded number of data-channel requests in flight.
//!
//! The VES sends frames only to devices it has seen online (`DevicePresence`), as a real
//! one does (it queues for the others); frames of the timetable for which no device is
//! online are counted as skipped, not as undeliverable.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::BytesMut;
use futures_util::StreamExt;
use noc_protocol::rts::{AcksResponse, ConnectParams, FrameStatus, FramesResponse, RtsConnectionEnvelope};
use noc_protocol::{ApiErrorCode, DeviceId, UndeliverableReason};
use serde::Deserialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, RwLock, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::payload::{Clock, Stamp, micros_between, sends_now, wake_for};
use crate::rts_client::{AGENT_NAME, RtsClient, RtsError, SessionKeys};
use crate::stats::{Metric, REQUEST_FAILED, Stats, reason_index};

/// Tolerance added to `NextInSeconds` before the command channel counts as broken.
const HB_TOLERANCE: Duration = Duration::from_secs(5);
/// Resume/reconnect backoff of the command channel.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// One command-channel line, parsed without allocating: only the fields the load tool
/// uses; everything else (and unknown commands) is ignored, as §1.3 requires.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "Command", borrow)]
    command: Cow<'a, str>,
    #[serde(rename = "DeviceId", borrow, default)]
    device_id: Option<Cow<'a, str>>,
    #[serde(rename = "FrameId", default)]
    frame_id: Option<u64>,
    #[serde(rename = "Payload", borrow, default)]
    payload: Option<Cow<'a, str>>,
    #[serde(rename = "Reason", borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(rename = "Online", default)]
    online: Option<bool>,
    #[serde(rename = "Code", borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "NextInSeconds", default)]
    next_in_seconds: Option<u64>,
}

/// Settings of the simulated VES, from the scenario.
#[derive(Clone, Debug)]
pub struct VesSettings {
    pub frame_size: usize,
    pub max_inflight: usize,
    pub batch_max: usize,
    pub flush_interval: Duration,
    pub ack_batch_max: usize,
    pub ack_flush_interval: Duration,
}

/// A VES → device frame waiting for its batch.
struct Pending {
    frame_id: u64,
    device: u32,
    scheduled_ns: u64,
}

/// One simulated VES.
pub struct VesSim {
    pub index: u32,
    client: RtsClient,
    guid: String,
    license_token: Option<String>,
    keys: RwLock<SessionKeys>,
    params: Mutex<ConnectParams>,
    devices: Vec<DeviceId>,
    index_of: HashMap<DeviceId, u32>,
    online: Vec<AtomicBool>,
    /// VES → device frames sent and not yet resolved: frame id → (device, scheduled).
    outstanding: Mutex<HashMap<u64, (u32, u64)>>,
    acks: Mutex<Vec<(u32, u64)>>,
    acks_ready: Notify,
    inflight: Arc<Semaphore>,
    /// `Frames` requests on their way: a partial batch waits only while one is.
    frames_inflight: AtomicUsize,
    /// A `Frames` request finished: the pacer may send what waits.
    frames_done: Notify,
    settings: VesSettings,
    stats: Arc<Stats>,
    clock: Clock,
    attached: AtomicBool,
}

impl VesSim {
    /// Opens a new RTS session (connect parameters + event-URL POST). Returns the VES and
    /// its command channel response, which [`VesSim::run_channel`] reads.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        index: u32,
        client: RtsClient,
        guid: String,
        license_token: Option<String>,
        settings: VesSettings,
        stats: Arc<Stats>,
        clock: Clock,
    ) -> Result<(Arc<Self>, reqwest::Response), RtsError> {
        let params = client.connect_params().await?;
        let resp =
            client.attach(&params, &RtsConnectionEnvelope::new(&guid, license_token.as_deref(), AGENT_NAME)).await?;
        let keys = SessionKeys { key_id: params.key_id.clone(), key: params.key.clone() };
        let ves = Arc::new(Self {
            index,
            client,
            guid,
            license_token,
            keys: RwLock::new(keys),
            params: Mutex::new(params),
            devices: Vec::new(),
            index_of: HashMap::new(),
            online: Vec::new(),
            outstanding: Mutex::new(HashMap::new()),
            acks: Mutex::new(Vec::new()),
            acks_ready: Notify::new(),
            inflight: Arc::new(Semaphore::new(settings.max_inflight)),
            frames_inflight: AtomicUsize::new(0),
            frames_done: Notify::new(),
            settings,
            stats,
            clock,
            attached: AtomicBool::new(true),
        });
        ves.stats.ves_online.fetch_add(1, Ordering::Relaxed);
        Ok((ves, resp))
    }

    /// The data-channel credentials of the current session.
    pub async fn keys(&self) -> SessionKeys {
        self.keys.read().await.clone()
    }

    pub fn client(&self) -> &RtsClient {
        &self.client
    }

    /// Sets the devices this VES addresses (after setup). Must be called before the
    /// command channel is read, hence `Arc::get_mut`.
    pub fn with_devices(self: &mut Arc<Self>, devices: Vec<DeviceId>) -> bool {
        let Some(this) = Arc::get_mut(self) else { return false };
        this.index_of = devices.iter().enumerate().map(|(i, d)| (*d, i as u32)).collect();
        this.online = devices.iter().map(|_| AtomicBool::new(false)).collect();
        this.devices = devices;
        true
    }

    /// Devices this VES believes online.
    pub fn online_devices(&self) -> usize {
        self.online.iter().filter(|o| o.load(Ordering::Relaxed)).count()
    }

    /// Frames of both directions this VES is still waiting for.
    pub fn outstanding(&self) -> usize {
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner()).len()
            + self.acks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Reads the command channel until `stop`, resuming (or reopening) the session when
    /// the channel breaks.
    pub async fn run_channel(self: Arc<Self>, mut resp: reqwest::Response, stop: CancellationToken) {
        loop {
            let broke = self.read_channel(resp, &stop).await;
            if self.attached.swap(false, Ordering::Relaxed) {
                self.stats.ves_online.fetch_sub(1, Ordering::Relaxed);
            }
            for o in &self.online {
                o.store(false, Ordering::Relaxed);
            }
            if stop.is_cancelled() {
                return;
            }
            self.stats.error(format!("ves_channel:{broke}"));
            if broke == "replaced" {
                // Another instance with this GUID took over: reconnecting would make the
                // two replace each other in a loop (docs/protocol.md §4.3.7).
                return;
            }
            resp = loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_BACKOFF) => {}
                }
                match self.reattach().await {
                    Ok(r) => break r,
                    Err(e) => self.stats.error(format!("ves_reconnect:{}", e.kind())),
                }
            };
            self.attached.store(true, Ordering::Relaxed);
            self.stats.ves_online.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resumes the session (same event URL and key), or opens a new one when it is gone.
    async fn reattach(&self) -> Result<reqwest::Response, RtsError> {
        let params = self.params.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self.client.attach(&params, &RtsConnectionEnvelope::new(&self.guid, None, AGENT_NAME)).await {
            Ok(r) => return Ok(r),
            Err(e) if e.code() == Some(ApiErrorCode::InvalidSession) => {}
            Err(e) => return Err(e),
        }
        let params = self.client.connect_params().await?;
        let envelope = RtsConnectionEnvelope::new(&self.guid, self.license_token.as_deref(), AGENT_NAME);
        let resp = self.client.attach(&params, &envelope).await?;
        *self.keys.write().await = SessionKeys { key_id: params.key_id.clone(), key: params.key.clone() };
        *self.params.lock().unwrap_or_else(|p| p.into_inner()) = params;
        Ok(resp)
    }

    /// Reads one command channel until it ends; returns why.
    async fn read_channel(&self, resp: reqwest::Response, stop: &CancellationToken) -> &'static str {
        let mut body = resp.bytes_stream();
        let mut buf = BytesMut::new();
        let mut deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => return "stopped",
                _ = tokio::time::sleep_until(deadline.into()) => return "heartbeat_missed",
                c = body.next() => c,
            };
            match chunk {
                None => return "ended",
                Some(Err(_)) => return "transport",
                Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
            }
            let mut start = 0;
            while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
                let line = &buf[start..start + pos];
                start += pos + 1;
                match serde_json::from_slice::<Line>(line) {
                    Ok(l) => {
                        let close = (&*l.command == "Close").then(|| l.code.as_deref() == Some("replaced"));
                        if let Some(next) = self.handle(l) {
                            deadline = Instant::now() + next;
                        }
                        match close {
                            Some(true) => return "replaced",
                            Some(false) => return "closed",
                            None => {}
                        }
                    }
                    Err(_) => self.stats.error("ves_channel:unparseable_line"),
                }
            }
            let _ = buf.split_to(start);
        }
    }

    /// Handles one command; returns the new heartbeat deadline on `HB`.
    fn handle(&self, l: Line<'_>) -> Option<Duration> {
        let device = || l.device_id.as_deref().and_then(|d| d.parse::<DeviceId>().ok());
        match &*l.command {
            "DeviceFrame" => {
                let c = &self.stats.device_to_ves;
                c.received.fetch_add(1, Ordering::Relaxed);
                let payload = l.payload.as_deref().unwrap_or("");
                match base64::engine::general_purpose::STANDARD.decode(payload).ok().as_deref().and_then(Stamp::read) {
                    Some(s) => self.stats.recorder.record_receipt(
                        Metric::OneWayDeviceToVes,
                        Metric::FromSendDeviceToVes,
                        &self.clock,
                        &s,
                    ),
                    None => {
                        c.foreign_payloads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let (Some(d), Some(fid)) = (device().and_then(|d| self.index_of.get(&d).copied()), l.frame_id) {
                    let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
                    acks.push((d, fid));
                    if acks.len() == 1 || acks.len() >= self.settings.ack_batch_max {
                        self.acks_ready.notify_one();
                    }
                } else {
                    self.stats.error("ves:frame_from_unknown_device");
                }
            }
            "Ack" => {
                let resolved = l.frame_id.and_then(|fid| self.take_outstanding(fid));
                match resolved {
                    Some((_, at)) => {
                        self.stats.ves_to_device.acked.fetch_add(1, Ordering::Relaxed);
                        self.stats.recorder.record(Metric::AckVesToDevice, self.clock.micros_since(at));
                    }
                    None => {
                        self.stats.ves_to_device.late_notices.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            "Undeliverable" => {
                let reason = l.reason.as_deref().and_then(UndeliverableReason::parse);
                match l.frame_id.and_then(|fid| self.take_outstanding(fid)) {
                    Some(_) => self.stats.ves_to_device.undeliverable(reason.map(reason_index).unwrap_or(0)),
                    None => {
                        self.stats.ves_to_device.late_notices.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            "DevicePresence" => {
                if let Some(i) = device().and_then(|d| self.index_of.get(&d).copied()) {
                    self.online[i as usize].store(l.online.unwrap_or(false), Ordering::Relaxed);
                }
            }
            "HB" => {
                let next = Duration::from_secs(l.next_in_seconds.unwrap_or(10));
                return Some(next * 2 + HB_TOLERANCE);
            }
            "Close" => {
                self.stats.error(format!("ves_close:{}", l.code.as_deref().unwrap_or("unknown")));
            }
            _ => {}
        }
        None
    }

    fn take_outstanding(&self, frame_id: u64) -> Option<(u32, u64)> {
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner()).remove(&frame_id)
    }

    /// Acknowledges device frames in batches until `stop`, then flushes what is left.
    pub async fn run_acks(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = self.acks_ready.notified() => false,
            };
            if !stopping && !self.settings.ack_flush_interval.is_zero() {
                // Let a batch gather, unless it is already full.
                let full = self.acks.lock().unwrap_or_else(|p| p.into_inner()).len() >= self.settings.ack_batch_max;
                if !full {
                    tokio::time::sleep(self.settings.ack_flush_interval).await;
                }
            }
            loop {
                let batch: Vec<(u32, u64)> = {
                    let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
                    let n = acks.len().min(self.settings.ack_batch_max);
                    acks.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let Ok(permit) = self.inflight.clone().acquire_owned().await else { return };
                let this = self.clone();
                tokio::spawn(async move { this.send_acks(batch, permit).await });
            }
            if stopping {
                return;
            }
        }
    }

    async fn send_acks(&self, batch: Vec<(u32, u64)>, _permit: OwnedSemaphorePermit) {
        let mut body = Vec::with_capacity(32 + batch.len() * 80);
        body.extend_from_slice(b"{\"Type\":\"Acks\",\"Acks\":[");
        for (i, (d, fid)) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            let _ = write!(body, "{{\"DeviceId\":\"{}\",\"FrameId\":{fid}}}", self.devices[*d as usize]);
        }
        body.extend_from_slice(b"]}");
        let keys = self.keys().await;
        self.stats.data_requests.fetch_add(1, Ordering::Relaxed);
        match self.client.data_raw(&keys, body).await {
            Ok(bytes) => match serde_json::from_slice::<AcksResponse>(&bytes) {
                Ok(r) => {
                    for u in r.undeliverable {
                        // The device will not learn that its frame arrived: it stays outstanding there.
                        let reason = u.reason.map(|r| r.as_str()).unwrap_or("other");
                        self.stats.error(format!("ack_undeliverable:{reason}"));
                    }
                }
                Err(_) => self.stats.error("ves:acks_response_unparseable"),
            },
            Err(e) => {
                self.stats.data_request_failures.fetch_add(1, Ordering::Relaxed);
                self.stats.error(format!("ves_acks:{}", e.kind()));
            }
        }
    }

    /// Sends VES → device frames on the open-loop timetable `start + k/rate` until `end`.
    pub async fn run_pacer(self: Arc<Self>, start: Instant, end: Instant, rate: f64, stop: CancellationToken) {
        if rate <= 0.0 || self.devices.is_empty() {
            return;
        }
        let period = 1.0 / rate;
        let due = |k: u64| start + Duration::from_secs_f64(period * k as f64);
        let mut k: u64 = 0;
        let mut next_target = 0usize;
        let mut pending: Vec<Pending> = Vec::new();
        let n = self.devices.len();
        loop {
            let now = Instant::now();
            while sends_now(due(k), now) && due(k) < end {
                let at = self.clock.send_stamp(due(k), now);
                k += 1;
                // Round robin over the devices seen online.
                let mut target = None;
                for step in 0..n {
                    let i = (next_target + step) % n;
                    if self.online[i].load(Ordering::Relaxed) {
                        target = Some(i);
                        next_target = i + 1;
                        break;
                    }
                }
                match target {
                    Some(d) => pending.push(Pending { frame_id: k, device: d as u32, scheduled_ns: at }),
                    None => {
                        self.stats.ves_to_device.skipped_offline.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let finished = due(k) >= end;
            // Send full batches at once; a partial one when no `Frames` request is on its
            // way (so a lone frame waits for nothing), when its oldest frame has waited the
            // flush interval, or when nothing more is coming. Batches form while requests
            // are out: the busier the relay, the bigger they get.
            while !pending.is_empty() {
                let oldest = self.clock.instant(pending[0].scheduled_ns);
                let full = pending.len() >= self.settings.batch_max;
                let idle = self.frames_inflight.load(Ordering::Relaxed) == 0;
                if !(full || idle || finished || oldest + self.settings.flush_interval <= Instant::now()) {
                    break;
                }
                let permit = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = self.inflight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                };
                let take = pending.len().min(self.settings.batch_max);
                let batch: Vec<Pending> = pending.drain(..take).collect();
                let this = self.clone();
                self.frames_inflight.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    this.send_frames(batch, permit).await;
                    this.frames_inflight.fetch_sub(1, Ordering::Relaxed);
                    this.frames_done.notify_one();
                });
            }
            if finished && pending.is_empty() {
                return;
            }
            let mut wake = wake_for(due(k));
            if let Some(p) = pending.first() {
                wake = wake.min(self.clock.instant(p.scheduled_ns) + self.settings.flush_interval);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = self.frames_done.notified(), if !pending.is_empty() => {}
            }
        }
    }

    async fn send_frames(&self, batch: Vec<Pending>, _permit: OwnedSemaphorePermit) {
        let size = self.settings.frame_size;
        let b64_len = size.div_ceil(3) * 4;
        let mut body = Vec::with_capacity(32 + batch.len() * (b64_len + 120));
        body.extend_from_slice(b"{\"Type\":\"Frames\",\"Frames\":[");
        let mut payload = BytesMut::with_capacity(size);
        let sent = self.clock.now_ns();
        {
            let mut out = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
            for (i, p) in batch.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                payload.clear();
                Stamp { scheduled_unix_ns: p.scheduled_ns, sent_unix_ns: sent, seq: p.frame_id, sender: self.index }
                    .write(&mut payload, size);
                let _ = write!(
                    body,
                    "{{\"DeviceId\":\"{}\",\"FrameId\":{},\"Kind\":\"Data\",\"Payload\":\"",
                    self.devices[p.device as usize], p.frame_id
                );
                append_base64(&mut body, &payload);
                body.extend_from_slice(b"\"}");
                // Registered before the request: the device's Ack may come back first.
                out.insert(p.frame_id, (p.device, p.scheduled_ns));
                self.stats.recorder.record(Metric::SendDelayVesToDevice, micros_between(p.scheduled_ns, sent));
            }
        }
        body.extend_from_slice(b"]}");
        self.stats.ves_to_device.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let keys = self.keys().await;
        self.stats.data_requests.fetch_add(1, Ordering::Relaxed);
        let result = self.client.data_raw(&keys, body).await;
        let c = &self.stats.ves_to_device;
        match result
            .and_then(|b| serde_json::from_slice::<FramesResponse>(&b).map_err(|e| RtsError::Decode(e.to_string())))
        {
            Ok(r) => {
                for res in r.results {
                    if res.status == FrameStatus::Undeliverable && self.take_outstanding(res.frame_id).is_some() {
                        c.undeliverable(res.reason.map(reason_index).unwrap_or(0));
                    }
                }
            }
            Err(e) => {
                self.stats.data_request_failures.fetch_add(1, Ordering::Relaxed);
                self.stats.error(format!("ves_frames:{}", e.kind()));
                for p in &batch {
                    if self.take_outstanding(p.frame_id).is_some() {
                        c.undeliverable(REQUEST_FAILED);
                    }
                }
            }
        }
    }
}

/// Base64-encodes `data` straight onto the end of `out` (no intermediate string).
fn append_base64(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    let n = base64::encoded_len(data.len(), true).unwrap_or(0);
    out.resize(start + n, 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(data, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_base64_is_standard_padded() {
        let mut out = b"x".to_vec();
        append_base64(&mut out, b"hi!?");
        assert_eq!(out, b"xaGkhPw==");
    }

    #[test]
    fn command_lines_parse_without_the_fields_we_ignore() {
        let l: Line = serde_json::from_str(
            r#"{"Command":"DeviceFrame","DeviceId":"6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a","UserId":"x","FrameId":7,"Kind":"Data","Payload":"aGk=","New":[1]}"#,
        )
        .expect("parse");
        assert_eq!(l.command, "DeviceFrame");
        assert_eq!(l.frame_id, Some(7));
        let l: Line = serde_json::from_str(
            r#"{"Command":"Close","Code":"replaced","Message":"a \"quoted\" text","ReconnectAfterMs":0}"#,
        )
        .expect("escaped strings in ignored fields");
        assert_eq!(l.code.as_deref(), Some("replaced"));
    }
}
