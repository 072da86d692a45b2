//! The Real-Time Service (RTS) protocol between an enterprise server (VES) and the relay.
//!
//! All JSON keys are PascalCase, following the white paper's parameter names (`KeyId`,
//! `EventUrl`, `RtsConnection`, ...). Enumerated string values (error codes, reasons) are
//! snake_case. Payloads of device frames are standard base64 (RFC 4648 §4, padded).
//!
//! Flow (white paper §4.5):
//! 1. `POST /rts/v1/license` with license name + password → [`LicenseResponse`].
//! 2. `GET /rts/v1/connect` → [`ConnectParams`].
//! 3. `POST {EventUrl}` with header `X-Rts-Key` and an [`RtsConnectionEnvelope`] body: the
//!    response is the long-lived *command channel*, one JSON [`Command`] per line.
//! 4. `POST /rts/v1/data` with headers `X-Rts-Key-Id` + `X-Rts-Key` and a
//!    [`DataRequest`] body: the short *data channel* requests.

pub mod fetch;
pub mod line;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::codes::{ApiErrorCode, CloseCode, UndeliverableReason};
use crate::device::ForwardKind;
use crate::ids::{DeviceId, UserId, VesId};

/// The base version of the RTS protocol, which every VES speaks; sent in [`ConnectParams`]
/// as `ProtocolVersion`.
pub const RTS_PROTOCOL_VERSION: u32 = 1;
/// Every RTS version the relay speaks, oldest first; sent in [`ConnectParams`] as
/// `ProtocolVersions`. A VES names the one it speaks in its [`RtsConnection`].
pub const RTS_PROTOCOL_VERSIONS: &[u32] = &[1, fetch::FETCH_VERSION];
/// Header carrying the session key on the event URL and data channel.
pub const HEADER_KEY: &str = "X-Rts-Key";
/// Header carrying the session id on the data channel.
pub const HEADER_KEY_ID: &str = "X-Rts-Key-Id";
/// Media type of the command channel.
pub const COMMAND_CHANNEL_CONTENT_TYPE: &str = "application/x-ndjson";
/// How long the relay keeps a keep-alive connection of its public HTTPS listener open
/// while no request comes (docs/protocol.md §8).
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a client keeps an idle connection to the relay for its next request: below
/// [`KEEP_ALIVE`], so that the client gives the connection up first. A request sent on a
/// connection the relay is closing at that moment fails without an answer, and whether
/// the relay acted on it cannot be known.
pub const CLIENT_POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(4);
const _: () = assert!(CLIENT_POOL_IDLE.as_millis() < KEEP_ALIVE.as_millis());

/// Standard base64 used for payloads in JSON.
pub fn encode_payload(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a JSON payload.
pub fn decode_payload(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s)
}

/// Room to reserve in a buffer for decoding `s` with [`decode_payload_into`].
pub fn decoded_len_estimate(s: &str) -> usize {
    base64::decoded_len_estimate(s.len())
}

/// Decodes a `Payload` at the end of `buf` and splits it off as its own [`Bytes`]: the
/// payloads of one request share one allocation (reserve the sum of
/// [`decoded_len_estimate`] first) instead of two each.
pub fn decode_payload_into(s: &str, buf: &mut bytes::BytesMut) -> Result<bytes::Bytes, base64::DecodeSliceError> {
    let start = buf.len();
    buf.resize(start + decoded_len_estimate(s), 0);
    match base64::engine::general_purpose::STANDARD.decode_slice(s, &mut buf[start..]) {
        Ok(n) => {
            buf.truncate(start + n);
            Ok(buf.split().freeze())
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// Body of every HTTP error: `{"Error":{"Code":"seats_full","Message":"..."}}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorDetail {
    pub code: ApiErrorCode,
    pub message: String,
}

/// An HTTP error answer as a client reads it: one parser for every client (agent, device
/// activation, load tool, test peers).
///
/// Parsed leniently (docs/protocol.md §1.3): a code this version does not know keeps its
/// text in [`ErrorReply::code_text`] and reads as [`ApiErrorCode::Other`]; a body that is
/// not an error body at all (a proxy's HTML page) becomes the message, cut to
/// [`ErrorReply::MAX_FOREIGN_MESSAGE_CHARS`] characters, with an empty code text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ApiErrorCode,
    /// The `Code` as sent; empty when the body was not an error body.
    pub code_text: String,
    pub message: String,
}

impl ErrorReply {
    /// How much of a body that is not an error body is kept as the message.
    pub const MAX_FOREIGN_MESSAGE_CHARS: usize = 200;

    pub fn parse(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            #[serde(rename = "Error")]
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            #[serde(rename = "Code", default)]
            code: String,
            #[serde(rename = "Message", default)]
            message: String,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => ErrorReply {
                code: ApiErrorCode::parse(&b.error.code),
                code_text: b.error.code,
                message: b.error.message,
            },
            Err(_) => ErrorReply {
                code: ApiErrorCode::Other,
                code_text: String::new(),
                message: String::from_utf8_lossy(body).chars().take(Self::MAX_FOREIGN_MESSAGE_CHARS).collect(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// License and session establishment
// ---------------------------------------------------------------------------------------

/// `POST /rts/v1/license` request (white paper §3.4).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LicenseRequest {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for LicenseRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseRequest").field("name", &self.name).field("password", &"***").finish()
    }
}

/// `POST /rts/v1/license` response: the license-id token that authorises VES registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LicenseResponse {
    /// Secret token; present it as `LicenseId` in the first `RtsConnection`.
    pub license_id: String,
    /// Seats of the license and how many are used.
    pub max_users: u32,
    pub used_users: u32,
    /// Expiry, unix milliseconds, if the license expires.
    pub expires_at: Option<i64>,
    /// When this token stops registering new installations, unix milliseconds.
    pub license_id_expires_at: i64,
}

/// `GET /rts/v1/connect` response (white paper §4.5 step 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectParams {
    /// Session identifier for the event URL and data channel.
    pub key_id: String,
    /// 128-bit random key, 32 lowercase hex digits.
    pub key: String,
    /// Absolute URL to POST the `RtsConnection` envelope to.
    pub event_url: String,
    /// Seconds the relay keeps these parameters (and later a detached session) alive.
    pub reply_time: u64,
    /// [`RTS_PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// [`RTS_PROTOCOL_VERSIONS`]; absent from relays that speak only version 1.
    #[serde(default)]
    pub protocol_versions: Vec<u32>,
}

/// Body of the event-URL POST.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RtsConnectionEnvelope {
    pub rts_connection: RtsConnection,
}

impl RtsConnectionEnvelope {
    /// The body a VES POSTs to its event URL. `agent` names the client and its version
    /// (`ves-agent/1.2.0`), kept in the relay's audit log.
    pub fn new(guid: &str, license_id: Option<&str>, agent: &str) -> Self {
        RtsConnectionEnvelope {
            rts_connection: RtsConnection {
                guid: guid.to_owned(),
                license_id: license_id.map(str::to_owned),
                agent: Some(agent.to_owned()),
                protocol_version: None,
            },
        }
    }

    /// The same, speaking RTS `version` (2 answers `Fetch` commands).
    pub fn with_version(mut self, version: u32) -> Self {
        self.rts_connection.protocol_version = Some(version);
        self
    }
}

/// Identifies the connecting VES (white paper §4.5 step 3).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RtsConnection {
    /// The VES's own random 128-bit GUID, 32 hex digits. A shared secret.
    pub guid: String,
    /// License-id token; required the first time a GUID connects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    /// Free-form agent name and version, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The RTS version the VES speaks, one of the relay's `ProtocolVersions` (version 2
    /// and later); absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u32>,
}

impl std::fmt::Debug for RtsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtsConnection")
            .field("guid", &"***")
            .field("license_id", &self.license_id.as_ref().map(|_| "***"))
            .field("agent", &self.agent)
            .field("protocol_version", &self.protocol_version)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Command channel (relay → VES), one JSON object per line
// ---------------------------------------------------------------------------------------

/// A user the VES should serve (white paper §4.5 step 4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ActiveUser {
    pub user_id: UserId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub msisdn: Option<String>,
    pub time_zone: Option<String>,
    /// How many days ahead of today calendar entries go to the user's devices (white
    /// paper §3.7.3). Absent from relays before it was added: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_days_ahead: Option<u32>,
}

/// One alert filter rule (white paper §4.5 step 6): which new mail generates an alert.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FilterRule {
    /// Header the rule looks at: `from`, `to`, `subject`.
    pub field: String,
    /// Case-insensitive substring to match.
    pub contains: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UserFilterRules {
    pub user_id: UserId,
    pub rules: Vec<FilterRule>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ConstantSyncFlag {
    pub user_id: UserId,
    pub enabled: bool,
}

/// A command on the command channel. Serialized with a `Command` tag, e.g.
/// `{"Command":"HB","Seq":3,"NextInSeconds":10,"Now":1700000000000}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "Command")]
pub enum Command {
    /// First line of every command channel: the session it belongs to.
    #[serde(rename_all = "PascalCase")]
    Session {
        key_id: String,
        ves_id: VesId,
        heartbeat_interval_seconds: u64,
        reply_time: u64,
        /// True when this command channel resumed a detached session.
        resumed: bool,
        /// The RTS version of the session (what the VES asked for). Absent from relays
        /// that speak only version 1.
        #[serde(default = "version_one")]
        protocol_version: u32,
    },
    /// Users this VES should provide access for. `Complete: true` replaces the VES's list;
    /// `false` adds to it (a user activated since).
    #[serde(rename_all = "PascalCase")]
    ActivateUsers { users: Vec<ActiveUser>, complete: bool },
    /// Users the VES must stop serving (deleted).
    #[serde(rename_all = "PascalCase")]
    DeactivateUsers { user_ids: Vec<UserId> },
    /// Heartbeat: the next one is due `NextInSeconds` after `Now` (unix ms).
    #[serde(rename = "HB", rename_all = "PascalCase")]
    Heartbeat { seq: u64, next_in_seconds: u64, now: i64 },
    /// Alert filter rules of the active users.
    #[serde(rename_all = "PascalCase")]
    FilterRules { users: Vec<UserFilterRules> },
    /// Which active users have the ConstantSync feature.
    #[serde(rename_all = "PascalCase")]
    ConstantSync { users: Vec<ConstantSyncFlag> },
    /// An opaque frame from a device of one of this VES's users.
    #[serde(rename_all = "PascalCase")]
    DeviceFrame { device_id: DeviceId, user_id: UserId, frame_id: u64, kind: ForwardKind, payload: String },
    /// The device acknowledged frame `FrameId` sent by this VES.
    #[serde(rename_all = "PascalCase")]
    Ack { device_id: DeviceId, frame_id: u64 },
    /// A frame this VES sent and the relay accepted could not be written to the device
    /// (its session ended first). Keep it and resend later.
    #[serde(rename_all = "PascalCase")]
    Undeliverable { device_id: DeviceId, frame_id: u64, reason: UndeliverableReason },
    /// A device of one of this VES's users connected or disconnected.
    #[serde(rename_all = "PascalCase")]
    DevicePresence { device_id: DeviceId, user_id: UserId, online: bool },
    /// A device was activated for one of this VES's users.
    #[serde(rename_all = "PascalCase")]
    DeviceActivated { device_id: DeviceId, user_id: UserId, name: Option<String>, device_type: Option<String> },
    /// A device's credential was revoked (password reset, user deleted).
    #[serde(rename_all = "PascalCase")]
    DeviceRevoked { device_id: DeviceId, user_id: UserId },
    /// Version 2: the relay asks for a user's mail, calendar or contacts (browse access);
    /// answer with a `FetchResult` data request within `TimeoutMs`.
    #[serde(rename_all = "PascalCase")]
    Fetch {
        request_id: fetch::RequestId,
        user_id: UserId,
        /// Answers later than this (from the relay's sending) are dropped.
        timeout_ms: u64,
        #[serde(flatten)]
        request: fetch::FetchRequest,
    },
    /// The relay closes this command channel. `replaced`: another connection for the same
    /// GUID took over. `server_draining`: reconnect after `ReconnectAfterMs`.
    #[serde(rename_all = "PascalCase")]
    Close { code: CloseCode, message: String, reconnect_after_ms: u64 },
}

fn version_one() -> u32 {
    1
}

// ---------------------------------------------------------------------------------------
// Data channel (VES → relay): POST /rts/v1/data
// ---------------------------------------------------------------------------------------

/// A data-channel request. Serialized with a `Type` tag, e.g.
/// `{"Type":"ProvisionUser","Email":"bob@example.com","FirstName":"Bob","LastName":"Ng"}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "Type", deny_unknown_fields)]
pub enum DataRequest {
    /// Which users this VES can serve (white paper §4.5 step 8).
    #[serde(rename_all = "PascalCase")]
    StartupReport { users: Vec<StartupUser> },
    /// Provision a user (white paper §3.5). Without `Password` the relay generates one.
    #[serde(rename_all = "PascalCase")]
    ProvisionUser {
        email: String,
        #[serde(default)]
        password: Option<Secret>,
        first_name: String,
        last_name: String,
    },
    /// Delete a user provisioned by this VES; revokes its devices.
    #[serde(rename_all = "PascalCase")]
    DeleteUser { email: String },
    /// Reset a user's password; revokes its devices. Without `Password` one is generated.
    #[serde(rename_all = "PascalCase")]
    ResetPassword {
        email: String,
        #[serde(default)]
        password: Option<Secret>,
    },
    /// List the users provisioned by this VES.
    ListUsers {},
    /// List the live devices of this VES's users (what `DeviceActivated` announced, for a
    /// VES that missed it).
    ListDevices {},
    /// Opaque frames for devices of this VES's users.
    #[serde(rename_all = "PascalCase")]
    Frames { frames: Vec<OutboundFrame> },
    /// End-to-end acknowledgements of frames received from devices.
    #[serde(rename_all = "PascalCase")]
    Acks { acks: Vec<FrameRef> },
    /// A new mail of a user matched one of the user's filter rules (white paper §4.7): the
    /// relay delivers an alert to the destinations the user chose.
    #[serde(rename_all = "PascalCase")]
    Alert {
        user_id: UserId,
        /// The mail's sender, as its `From` shows it.
        from: String,
        subject: String,
        /// A short excerpt of the text (at most 200 characters); the relay drops it unless the
        /// user asked for excerpts.
        #[serde(default)]
        excerpt: Option<String>,
    },
    /// Version 2: the answer to a `Fetch` command. `Body` (status `ok`) is the operation's
    /// answer type ([`fetch`]); `Error` (status `error`) says why there is none.
    #[serde(rename_all = "PascalCase")]
    FetchResult {
        request_id: fetch::RequestId,
        status: fetch::FetchStatus,
        #[serde(default)]
        body: Option<serde_json::Value>,
        #[serde(default)]
        error: Option<fetch::FetchError>,
    },
}

/// A data-channel request as the relay decodes it. `Frames` and `Acks`, the requests of
/// every relayed frame, come as their own variants with each payload borrowed from the
/// body; anything else is a [`DataRequest`].
#[derive(Debug)]
pub enum IncomingData<'a> {
    Frames(Vec<OutboundFrameRef<'a>>),
    Acks(Vec<FrameRef>),
    Other(DataRequest),
}

impl<'a> IncomingData<'a> {
    /// Decodes a data-channel body, with the refusal of [`crate::json::from_slice`].
    ///
    /// `Frames` and `Acks` are decoded straight into their variant once a first pass
    /// (which allocates nothing) has found their `Type`: the derived decoder of a tagged
    /// enum first copies the whole document into a generic tree (every key and value),
    /// since the tag may come last, and would copy each payload once more. Any other type,
    /// and any body the direct decoding refuses, goes through the derived decoder, so the
    /// documents accepted and the refusals are the same either way.
    pub fn from_json(body: &'a [u8]) -> Result<Self, crate::json::Refusal> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "Type", borrow)]
            tag: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase", deny_unknown_fields)]
        struct Frames<'a> {
            #[serde(rename = "Type")]
            _tag: serde::de::IgnoredAny,
            #[serde(borrow)]
            frames: Vec<OutboundFrameRef<'a>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase", deny_unknown_fields)]
        struct Acks {
            #[serde(rename = "Type")]
            _tag: serde::de::IgnoredAny,
            acks: Vec<FrameRef>,
        }
        let direct = match serde_json::from_slice::<Tag<'_>>(body).ok().and_then(|t| t.tag).as_deref() {
            Some("Frames") => serde_json::from_slice::<Frames<'a>>(body).ok().map(|r| Self::Frames(r.frames)),
            Some("Acks") => serde_json::from_slice::<Acks>(body).ok().map(|r| Self::Acks(r.acks)),
            _ => None,
        };
        match direct {
            Some(request) => Ok(request),
            None => crate::json::from_slice(body).map(Self::Other),
        }
    }

    /// The request with everything it borrows copied.
    pub fn into_request(self) -> DataRequest {
        match self {
            Self::Frames(frames) => {
                DataRequest::Frames { frames: frames.into_iter().map(OutboundFrame::from).collect() }
            }
            Self::Acks(acks) => DataRequest::Acks { acks },
            Self::Other(request) => request,
        }
    }
}

/// The answer to an `Alert`: taken for delivery (`false`: the user has no destination, or
/// is in quiet hours or over the rate).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AlertResponse {
    pub accepted: bool,
}

/// A password in a request: never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StartupUser {
    pub user_id: UserId,
    /// `ready` or `unavailable`.
    pub status: StartupStatus,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartupStatus {
    Ready,
    Unavailable,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct StartupReportResponse {
    pub ready: u32,
    pub unavailable: u32,
    /// User ids in the report that are not active users of this VES.
    pub unknown: Vec<UserId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionedUser {
    pub user_id: UserId,
    pub email: String,
    /// Only present when the relay generated the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Page (or JSON endpoint) where the user binds an MSISDN (white paper §3.6).
    pub activation_url: String,
    pub used_users: u32,
    pub max_users: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeletedUser {
    pub user_id: UserId,
    pub revoked_devices: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PasswordReset {
    pub user_id: UserId,
    /// Only present when the relay generated the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub revoked_devices: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UserSummary {
    pub user_id: UserId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub msisdn: Option<String>,
    /// `provisioned` (not activated yet), `active`, `suspended`.
    pub status: String,
    /// Live (not revoked) devices.
    pub devices: u32,
    /// Whether this session's last StartupReport listed the user as `ready`.
    pub ready: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserList {
    pub users: Vec<UserSummary>,
}

/// A live (not revoked) device of one of the VES's users.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceSummary {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub name: Option<String>,
    pub device_type: Option<String>,
    /// When the device was activated, unix ms.
    pub activated_at: i64,
}

/// The answer to `ListDevices`: oldest activation first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceList {
    pub devices: Vec<DeviceSummary>,
}

/// One frame for a device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OutboundFrame {
    pub device_id: DeviceId,
    /// Chosen by the VES; echoed in the device's `Ack` and in `Undeliverable`.
    pub frame_id: u64,
    pub kind: ForwardKind,
    /// Base64 of the opaque (end-to-end encrypted) bytes.
    pub payload: String,
}

/// An [`OutboundFrame`] as the relay decodes it: its payload borrowed from the request's
/// body (copied only where the JSON string has escapes).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OutboundFrameRef<'a> {
    pub device_id: DeviceId,
    pub frame_id: u64,
    pub kind: ForwardKind,
    #[serde(borrow)]
    pub payload: std::borrow::Cow<'a, str>,
}

impl<'a> From<&'a OutboundFrame> for OutboundFrameRef<'a> {
    fn from(f: &'a OutboundFrame) -> Self {
        Self { device_id: f.device_id, frame_id: f.frame_id, kind: f.kind, payload: f.payload.as_str().into() }
    }
}

impl From<OutboundFrameRef<'_>> for OutboundFrame {
    fn from(f: OutboundFrameRef<'_>) -> Self {
        Self { device_id: f.device_id, frame_id: f.frame_id, kind: f.kind, payload: f.payload.into_owned() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FrameRef {
    pub device_id: DeviceId,
    pub frame_id: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FrameStatus {
    /// Queued on the device's session. The device's `Ack` follows if it receives the frame;
    /// an `Undeliverable` command follows if the session ends with the frame still queued.
    /// A frame written into a connection that then dies gets neither: resend after a timeout.
    Accepted,
    /// Not delivered; `Reason` says why. Keep the frame and retry later.
    Undeliverable,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct FrameResult {
    pub device_id: DeviceId,
    pub frame_id: u64,
    pub status: FrameStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<UndeliverableReason>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct FramesResponse {
    pub results: Vec<FrameResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AcksResponse {
    pub forwarded: u32,
    /// Acks that could not be forwarded (device offline or unknown); they are not retried.
    pub undeliverable: Vec<FrameResult>,
}

// ---------------------------------------------------------------------------------------
// Account and device activation (HTTPS, JSON)
// ---------------------------------------------------------------------------------------

/// `POST /account/v1/activate` (white paper §3.6).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccountActivationRequest {
    /// The user's SMTP address (or MSISDN once activated).
    pub login: String,
    pub password: Secret,
    pub msisdn: String,
    pub time_zone: String,
}

impl std::fmt::Debug for AccountActivationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountActivationRequest")
            .field("login", &self.login)
            .field("msisdn", &self.msisdn)
            .field("time_zone", &self.time_zone)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountActivationResponse {
    pub user_id: UserId,
    pub email: String,
    pub msisdn: String,
    pub time_zone: String,
}

/// `POST /device/v1/activate` (white paper §7.2.1).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeviceActivationRequest {
    pub msisdn: String,
    pub password: Secret,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default)]
    pub device_type: Option<String>,
    /// A PKCS#10 certificate request (PEM) for a client certificate: the device made the
    /// key pair and keeps the private key (docs/protocol.md §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

impl std::fmt::Debug for DeviceActivationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceActivationRequest")
            .field("msisdn", &self.msisdn)
            .field("device_name", &self.device_name)
            .field("device_type", &self.device_type)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceActivationResponse {
    pub device_id: DeviceId,
    /// 32 random bytes as 64 hex digits; the relay keeps only a hash.
    pub device_credential: String,
    /// Where the device channel listens.
    pub device_host: String,
    pub device_port: u16,
    pub full_name: String,
    /// `constant_sync` or `browse`.
    pub service_type: String,
    pub user_id: UserId,
    /// The client certificate issued for the request's `Csr` (PEM), valid a year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// The management root that signed it (PEM): what the device trusts it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_root: Option<String>,
}

impl std::fmt::Debug for DeviceActivationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceActivationResponse")
            .field("device_id", &self.device_id)
            .field("device_host", &self.device_host)
            .field("device_port", &self.device_port)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn payloads_decode_into_one_shared_buffer() {
        let (a, b) = (encode_payload(b"first payload"), encode_payload(&[0u8, 1, 2, 255]));
        let mut buf = bytes::BytesMut::with_capacity(decoded_len_estimate(&a) + decoded_len_estimate(&b));
        let first = decode_payload_into(&a, &mut buf).expect("a");
        assert!(decode_payload_into("not base64!", &mut buf).is_err());
        let second = decode_payload_into(&b, &mut buf).expect("b");
        assert_eq!((&first[..], &second[..]), (&b"first payload"[..], &[0u8, 1, 2, 255][..]));
        assert!(buf.is_empty(), "each payload was split off; a failed one left nothing");
        assert_eq!(decode_payload_into("", &mut buf).expect("empty").len(), 0);
    }

    #[test]
    fn heartbeat_uses_the_seed_name() {
        let hb = Command::Heartbeat { seq: 1, next_in_seconds: 10, now: 5 };
        let json = serde_json::to_string(&hb).expect("json");
        assert_eq!(json, r#"{"Command":"HB","Seq":1,"NextInSeconds":10,"Now":5}"#);
        let back: Command = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, hb);
    }

    #[test]
    fn data_requests_parse_from_documented_json() {
        let r: DataRequest = serde_json::from_str(
            r#"{"Type":"ProvisionUser","Email":"bob@example.com","FirstName":"Bob","LastName":"Ng"}"#,
        )
        .expect("parse");
        assert!(matches!(r, DataRequest::ProvisionUser { password: None, .. }));
        let r: DataRequest = serde_json::from_str(
            r#"{"Type":"Frames","Frames":[{"DeviceId":"6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a","FrameId":1,"Kind":"Data","Payload":"aGk="}]}"#,
        )
        .expect("parse");
        assert!(matches!(r, DataRequest::Frames { .. }));
        let r: DataRequest = serde_json::from_str(r#"{"Type":"ListUsers"}"#).expect("parse");
        assert!(matches!(r, DataRequest::ListUsers {}));
        let r: DataRequest = serde_json::from_str(r#"{"Type":"ListDevices"}"#).expect("parse");
        assert!(matches!(r, DataRequest::ListDevices {}));
        assert!(serde_json::from_str::<DataRequest>(r#"{"Type":"Nope"}"#).is_err());
        assert!(serde_json::from_str::<DataRequest>(r#"{"Type":"DeleteUser","Email":"a","Extra":1}"#).is_err());
    }

    #[test]
    fn the_direct_decoding_of_frames_and_acks_accepts_and_refuses_what_the_derived_one_does() {
        let frame = r#"{"DeviceId":"6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a","FrameId":1,"Kind":"Data","Payload":"aGk="}"#;
        let ack = r#"{"DeviceId":"6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a","FrameId":2}"#;
        let bodies = [
            format!(r#"{{"Type":"Frames","Frames":[{frame},{frame}]}}"#),
            format!(r#"{{"Frames":[{frame}],"Type":"Frames"}}"#),
            format!(r#"{{"Type":"Acks","Acks":[{ack}]}}"#),
            r#"{"Acks":[],"Type":"Acks"}"#.into(),
            r#"{"Type":"Frames"}"#.into(),
            format!(r#"{{"Type":"Frames","Frames":[{frame}],"Extra":1}}"#),
            format!(r#"{{"Type":"Frames","Frames":[{frame}],"Frames":[]}}"#),
            format!(r#"{{"Type":"Frames","Type":"Frames","Frames":[{frame}]}}"#),
            format!(r#"{{"Type":"Acks","Frames":[{frame}]}}"#),
            format!(r#"{{"Type":"Frames","Frames":[{ack}]}}"#),
            r#"{"Type":"Frames","Frames":[{"DeviceId":"x","FrameId":1,"Kind":"Data","Payload":"aGk="}]}"#.into(),
            format!(r#"{{"Type":"Frames","Frames":[{frame}]}} trailing"#),
            r#"{"Type":"ListUsers"}"#.into(),
            r#"{"Type":7}"#.into(),
            "[]".into(),
        ];
        for body in bodies {
            let direct = IncomingData::from_json(body.as_bytes()).map(|r| format!("{:?}", r.into_request()));
            let derived = crate::json::from_slice::<DataRequest>(body.as_bytes()).map(|r| format!("{r:?}"));
            assert_eq!(direct, derived, "{body}");
        }
        let body = format!(r#"{{"Frames":[{frame}],"Type":"Frames"}}"#);
        assert!(matches!(
            IncomingData::from_json(body.as_bytes()),
            Ok(IncomingData::Frames(frames)) if frames.len() == 1 && matches!(frames[0].payload, Cow::Borrowed("aGk="))
        ));
        // A payload with an escape is copied, and means the same.
        let body = body.replace("aGk=", r"aGk\u003d");
        assert!(matches!(
            IncomingData::from_json(body.as_bytes()),
            Ok(IncomingData::Frames(frames)) if matches!(&frames[0].payload, Cow::Owned(p) if p == "aGk=")
        ));
    }

    #[test]
    fn secrets_are_masked_in_debug() {
        let r = RtsConnection {
            guid: "00".repeat(16),
            license_id: Some("tok".into()),
            agent: None,
            protocol_version: None,
        };
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("0000") && !dbg.contains("tok"));
        let p = DataRequest::ResetPassword { email: "a@b".into(), password: Some(Secret("hunter2".into())) };
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn error_replies_parse_leniently() {
        let r = ErrorReply::parse(br#"{"Error":{"Code":"seats_full","Message":"no seat"}}"#);
        assert_eq!(
            (r.code, r.code_text.as_str(), r.message.as_str()),
            (ApiErrorCode::SeatsFull, "seats_full", "no seat")
        );
        // A code from a newer relay keeps its text.
        let r = ErrorReply::parse(br#"{"Error":{"Code":"brand_new","Message":"m","Extra":1}}"#);
        assert_eq!((r.code, r.code_text.as_str()), (ApiErrorCode::Other, "brand_new"));
        // Not an error body: the text is the message, cut short.
        let html = format!("<html>{}</html>", "x".repeat(500));
        let r = ErrorReply::parse(html.as_bytes());
        assert_eq!((r.code, r.code_text.as_str()), (ApiErrorCode::Other, ""));
        assert_eq!(r.message.chars().count(), ErrorReply::MAX_FOREIGN_MESSAGE_CHARS);
        assert!(r.message.starts_with("<html>"));
        assert_eq!(ErrorReply::parse(b"\xff\xfe").code, ApiErrorCode::Other);
        // What the relay sends is what the parser reads.
        let sent = ErrorBody { error: ErrorDetail { code: ApiErrorCode::LockedOut, message: "later".into() } };
        let r = ErrorReply::parse(&serde_json::to_vec(&sent).expect("json"));
        assert_eq!((r.code, r.message.as_str()), (ApiErrorCode::LockedOut, "later"));
    }

    #[test]
    fn envelope_is_the_documented_json() {
        let e = RtsConnectionEnvelope::new("ab", Some("tok"), "ves-agent/1");
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(json, r#"{"RtsConnection":{"Guid":"ab","LicenseId":"tok","Agent":"ves-agent/1"}}"#);
        let e = RtsConnectionEnvelope::new("ab", None, "x");
        assert_eq!(serde_json::to_string(&e).expect("json"), r#"{"RtsConnection":{"Guid":"ab","Agent":"x"}}"#);
    }

    #[test]
    fn payload_base64_round_trip() {
        let s = encode_payload(b"\x00\xffopaque");
        assert_eq!(decode_payload(&s).expect("decode"), b"\x00\xffopaque");
        assert!(decode_payload("***").is_err());
    }
}
