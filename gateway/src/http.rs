//! The public HTTPS API: the RTS protocol (VES ↔ relay) and account/device activation.
//! Request and response types live in `noc_protocol::rts`; `docs/protocol.md` is the spec.

use std::sync::Arc;

use actix::Actor;
use actix_web::http::Method;
use actix_web::http::header::HeaderName;
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, guard, web};
use bytes::BytesMut;
use noc_actors::{EventLookup, RtsSession, VesInbox, VesSession, VesUserState};
use noc_cluster::{DeviceItem, FetchOutcome};
use noc_protocol::rts::fetch::{FetchResultResponse, FetchStatus};
use noc_protocol::rts::{
    AccountActivationRequest, AccountActivationResponse, AcksResponse, ActiveUser, ConnectParams, DataRequest,
    DeletedUser, DeviceActivationRequest, DeviceActivationResponse, DeviceList, DeviceSummary, FrameRef, FrameResult,
    FrameStatus, FramesResponse, IncomingData, LicenseRequest, LicenseResponse, OutboundFrameRef, PasswordReset,
    ProvisionedUser, RtsConnectionEnvelope, UserList, UserSummary,
};
use noc_protocol::{ApiErrorCode, UndeliverableReason, rts};
use noc_storage::{UserRecord, UserStatus};
use serde::de::DeserializeOwned;

use crate::body::{parse_json, read_body, refused};
use crate::{ApiError, GatewayState};
use noc_actors::Direction;

/// Routes of the public listener. They are registered before the portal's, and the data
/// channel's first: actix tries routes in order, and each pattern with a variable segment
/// it tries on the way costs a regex match with an allocation, on the relay's busiest
/// request.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(only(Method::POST, "/rts/v1/data").to(data))
        .service(only(Method::POST, "/rts/v1/event/{key_id}").to(event))
        .service(only(Method::POST, "/rts/v1/license").to(license))
        .service(only(Method::GET, "/rts/v1/connect").to(connect))
        .service(only(Method::POST, "/account/v1/activate").to(activate_account))
        .service(only(Method::POST, "/device/v1/activate").to(activate_device))
        .default_service(web::to(not_found));
}

/// The resource at `path` for `method` alone; any other method falls through to
/// `not_found` (docs/protocol.md: 404, not 405). Checked by a guard that allocates
/// nothing: actix's method guard records each method it checks in the request's
/// extensions, two allocations on every data-channel request.
fn only(method: Method, path: &str) -> actix_web::Resource {
    web::resource(path).guard(guard::fn_guard(move |ctx| ctx.head().method == method))
}

/// Headers of every answer of the public listener, unless a handler set its own:
/// answers carry secrets (license tokens, device credentials, generated passwords) and
/// must never be stored by a cache; browsers must keep to HTTPS for this host and never
/// guess a content type.
pub fn public_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Cache-Control", "no-store"))
        .add(("Strict-Transport-Security", "max-age=31536000"))
        .add(("X-Content-Type-Options", "nosniff"))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ApiErrorCode::NotFound, "no such endpoint"))
}

async fn json_body<T: DeserializeOwned>(
    state: &GatewayState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let body = read_body(req, payload, state.config.max_body_bytes, state.config.body_timeout).await?;
    parse_json(&body)
}

/// The client's address, for the password throttle (unknown: the unspecified address,
/// which then shares one bucket).
fn source(req: &HttpRequest) -> std::net::IpAddr {
    req.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
}

/// The RTS session headers ([`rts::HEADER_KEY_ID`], [`rts::HEADER_KEY`]) as header names:
/// a lookup by `&str` builds, and for a name outside the standard set allocates, a header
/// name each time, on every data-channel request.
static KEY_ID: HeaderName = HeaderName::from_static("x-rts-key-id");
static KEY: HeaderName = HeaderName::from_static("x-rts-key");

fn header<'a>(req: &'a HttpRequest, name: &HeaderName) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn failed_auth(state: &GatewayState, kind: &'static str, e: noc_storage::AccountError) -> ApiError {
    if let Some(reason) = ApiError::auth_reason(&e) {
        state.router.metrics().auth_failure(kind, reason);
    }
    e.into()
}

// -- RTS ----------------------------------------------------------------------------------

/// `POST /rts/v1/license`: license name + password → license-id token (white paper §3.4).
async fn license(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: LicenseRequest = json_body(&state, &req, payload).await?;
    let (token, token_expires_at, license) = state
        .accounts
        .license_login(&body.name, &body.password, source(&req))
        .await
        .map_err(|e| failed_auth(&state, "license", e))?;
    Ok(HttpResponse::Ok().json(LicenseResponse {
        license_id: token,
        max_users: license.max_users,
        used_users: license.used_users,
        expires_at: license.expires_at,
        license_id_expires_at: token_expires_at,
    }))
}

/// `GET /rts/v1/connect`: fresh KeyId, Key, EventUrl and ReplyTime (white paper §4.5).
async fn connect(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::draining());
    }
    let (key_id, key) = state.rts.issue();
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(ConnectParams {
        event_url: format!("{}/rts/v1/event/{key_id}", state.config.public_url),
        key_id,
        key,
        reply_time: state.sessions.ves_reply_time.as_secs(),
        protocol_version: rts::RTS_PROTOCOL_VERSION,
        protocol_versions: rts::RTS_PROTOCOL_VERSIONS.to_vec(),
    }))
}

/// What a VES session keeps of an active user (and sends in `ActivateUsers`,
/// `FilterRules`, `ConstantSync`).
pub fn active_user_state(u: &UserRecord) -> VesUserState {
    VesUserState {
        user: ActiveUser {
            user_id: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            msisdn: u.msisdn.clone(),
            time_zone: u.time_zone.clone(),
            calendar_days_ahead: Some(u.calendar_days_ahead),
        },
        constant_sync: u.effective_constant_sync(),
        filter_rules: u.effective_filter_rules(),
    }
}

/// `POST {EventUrl}`: becomes the command channel, a streamed NDJSON response.
async fn event(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    key_id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::draining());
    }
    let key = header(&req, &KEY).unwrap_or("").to_string();
    let envelope: RtsConnectionEnvelope = json_body(&state, &req, payload).await?;
    let conn = envelope.rts_connection;
    let protocol_version = conn.protocol_version.unwrap_or(rts::RTS_PROTOCOL_VERSION);
    if !rts::RTS_PROTOCOL_VERSIONS.contains(&protocol_version) {
        return Err(ApiError::bad_request(format!("ProtocolVersion must be one of {:?}", rts::RTS_PROTOCOL_VERSIONS)));
    }
    let Some(lookup) = state.rts.lookup_event(&key_id, &key) else {
        state.router.metrics().auth_failure("ves", "invalid_session");
        return Err(ApiError::invalid_session());
    };
    let (ves, _) = state
        .accounts
        .authenticate_ves(&conn.guid, conn.license_id.as_deref())
        .await
        .map_err(|e| failed_auth(&state, "ves", e))?;
    if state.is_draining() {
        return Err(ApiError::draining());
    }
    let (attach, resumed) = match lookup {
        EventLookup::Resume { session, attach } => {
            if session.ves_id() != ves.id {
                state.router.metrics().auth_failure("ves", "invalid_credentials");
                return Err(ApiError::new(ApiErrorCode::InvalidCredentials, "invalid credentials"));
            }
            (attach, true)
        }
        EventLookup::New { key_hash } => {
            let store = state.accounts.store();
            let users = store.users_by_ves(ves.id).await.map_err(noc_storage::AccountError::from)?;
            let devices = store.devices_by_ves(ves.id).await.map_err(noc_storage::AccountError::from)?;
            let users = users.iter().filter(|u| u.status == UserStatus::Active).map(active_user_state).collect();
            let inbox = Arc::new(VesInbox::new(ves.id, state.router.next_session_id(), users, devices));
            let session = Arc::new(RtsSession::new(inbox, ves.license_id, key_id.into_inner(), key_hash));
            let actor = VesSession::new(session, state.router.clone(), state.rts.clone(), state.sessions.clone());
            (actor.start().recipient(), false)
        }
    };
    let stream = attach
        .send(noc_actors::Attach { resumed, protocol_version })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::new(ApiErrorCode::InvalidSession, "session ended; GET /rts/v1/connect again"))?;
    // This worker serves the channel: the VES's device sessions start here from now on.
    if let Some(handle) = state.router.ves_session(ves.id) {
        handle.inbox.set_home(noc_actors::Home::current());
    }
    tracing::info!(
        ves = %ves.id,
        resumed,
        protocol_version,
        agent = conn.agent.as_deref().unwrap_or("-"),
        "command channel attached"
    );
    if let Some(agent) = conn.agent.clone() {
        // For the operators' view of the installation; the channel does not wait for it.
        let (accounts, id) = (state.accounts.clone(), ves.id);
        actix_rt::spawn(async move { accounts.record_ves_agent(id, &agent).await });
    }
    Ok(HttpResponse::Ok()
        .content_type(rts::COMMAND_CHANNEL_CONTENT_TYPE)
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

/// `POST /rts/v1/data`: one data-channel request of the session named by the headers.
async fn data(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key_id = header(&req, &KEY_ID).unwrap_or("");
    let key = header(&req, &KEY).unwrap_or("");
    let Some(session) = state.rts.session(key_id, key) else {
        state.router.metrics().auth_failure("ves", "invalid_session");
        return Err(ApiError::invalid_session());
    };
    let body = read_body(&req, payload, state.config.max_body_bytes, state.config.body_timeout).await?;
    let request = match IncomingData::from_json(&body).map_err(refused)? {
        IncomingData::Frames(frames) => return forward_frames(&state, &session.inbox, &frames),
        IncomingData::Acks(acks) => return forward_acks(&state, &session.inbox, &acks),
        IncomingData::Other(request) => request,
    };
    let inbox = &session.inbox;
    let ves_id = inbox.ves_id;
    let accounts = &state.accounts;
    let router = &state.router;
    Ok(match request {
        DataRequest::StartupReport { users } => HttpResponse::Ok().json(inbox.record_startup(&users)),
        DataRequest::Alert { user_id, from, subject, excerpt } => {
            let alert = crate::IncomingAlert { user_id, from, subject, excerpt };
            match state.alerts.alert(ves_id, alert).await {
                Ok(accepted) => HttpResponse::Ok().json(noc_protocol::rts::AlertResponse { accepted }),
                Err(crate::AlertRefusal::NotYours) => {
                    return Err(ApiError::new(ApiErrorCode::NotFound, "no such user for this enterprise server"));
                }
                Err(crate::AlertRefusal::Busy) => {
                    return Err(ApiError {
                        retry_after_seconds: Some(1),
                        ..ApiError::new(ApiErrorCode::Unavailable, "alert queue full; retry shortly")
                    });
                }
                Err(crate::AlertRefusal::Unavailable) => {
                    return Err(noc_storage::AccountError::Unavailable("alerts".into()).into());
                }
            }
        }
        DataRequest::FetchResult { request_id, status, body, error } => {
            let outcome = match (status, body, error) {
                (FetchStatus::Ok, Some(body), None) => FetchOutcome::Answer(body),
                (FetchStatus::Error, None, Some(error)) => FetchOutcome::Failed(error),
                (FetchStatus::Ok, ..) => return Err(ApiError::bad_request("Status ok needs a Body and no Error")),
                (FetchStatus::Error, ..) => {
                    return Err(ApiError::bad_request("Status error needs an Error and no Body"));
                }
            };
            let delivered = router.fetch_result(inbox, request_id, outcome);
            HttpResponse::Ok().json(FetchResultResponse { delivered })
        }
        DataRequest::ProvisionUser { email, password, first_name, last_name } => {
            let (user, generated, license) = accounts
                .provision_user(
                    ves_id,
                    session.license_id,
                    &email,
                    password.as_ref().map(|p| p.0.as_str()),
                    &first_name,
                    &last_name,
                )
                .await?;
            HttpResponse::Ok().json(ProvisionedUser {
                user_id: user.id,
                email: user.email,
                password: generated,
                // The page a person opens from the welcome mail; without the portal, the
                // scripted endpoint.
                activation_url: match state.web {
                    Some(_) => format!("{}/activate", state.config.public_url),
                    None => format!("{}/account/v1/activate", state.config.public_url),
                },
                used_users: license.used_users,
                max_users: license.max_users,
            })
        }
        DataRequest::DeleteUser { email } => {
            let (user, devices) = accounts.delete_user(ves_id, &email).await?;
            router.devices_revoked(ves_id, user.id, &devices);
            router.user_removed(ves_id, user.id);
            HttpResponse::Ok().json(DeletedUser { user_id: user.id, revoked_devices: devices.len() as u32 })
        }
        DataRequest::ResetPassword { email, password } => {
            let (user, generated, devices) =
                accounts.reset_password(ves_id, &email, password.as_ref().map(|p| p.0.as_str())).await?;
            router.devices_revoked(ves_id, user.id, &devices);
            HttpResponse::Ok().json(PasswordReset {
                user_id: user.id,
                password: generated,
                revoked_devices: devices.len() as u32,
            })
        }
        DataRequest::ListUsers {} => {
            let store = accounts.store();
            let users = store.users_by_ves(ves_id).await.map_err(noc_storage::AccountError::from)?;
            let devices = store.devices_by_ves(ves_id).await.map_err(noc_storage::AccountError::from)?;
            let mut per_user: std::collections::HashMap<noc_protocol::UserId, u32> = std::collections::HashMap::new();
            for (_, owner) in &devices {
                *per_user.entry(*owner).or_default() += 1;
            }
            let users = users
                .into_iter()
                .map(|u| UserSummary {
                    devices: per_user.get(&u.id).copied().unwrap_or(0),
                    ready: inbox.is_ready(u.id),
                    user_id: u.id,
                    email: u.email,
                    first_name: u.first_name,
                    last_name: u.last_name,
                    msisdn: u.msisdn,
                    status: u.status.as_str().to_string(),
                })
                .collect();
            HttpResponse::Ok().json(UserList { users })
        }
        DataRequest::ListDevices {} => {
            let records =
                accounts.store().device_records_by_ves(ves_id).await.map_err(noc_storage::AccountError::from)?;
            let devices = records
                .into_iter()
                .map(|d| DeviceSummary {
                    device_id: d.id,
                    user_id: d.user_id,
                    name: d.name,
                    device_type: d.device_type,
                    activated_at: d.created_at,
                })
                .collect();
            HttpResponse::Ok().json(DeviceList { devices })
        }
        // `IncomingData` decodes these into its own variants; the same handling if not.
        DataRequest::Frames { frames } => {
            return forward_frames(&state, inbox, &frames.iter().map(OutboundFrameRef::from).collect::<Vec<_>>());
        }
        DataRequest::Acks { acks } => return forward_acks(&state, inbox, &acks),
    })
}

/// Queues a `Frames` request's frames for their devices; answers each frame's outcome.
fn forward_frames(
    state: &GatewayState,
    inbox: &VesInbox,
    frames: &[OutboundFrameRef<'_>],
) -> Result<HttpResponse, ApiError> {
    let max_payload = state.sessions.max_frame_bytes.saturating_sub(noc_protocol::device::FORWARD_OVERHEAD_BYTES);
    // Decode everything first: a malformed request is refused as a whole. The payloads
    // share one buffer (no allocation per frame).
    let mut buf = BytesMut::with_capacity(frames.iter().map(|f| rts::decoded_len_estimate(&f.payload)).sum());
    let mut payloads = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        let payload = rts::decode_payload_into(&f.payload, &mut buf)
            .map_err(|_| ApiError::bad_request(format!("`Frames[{i}].Payload` is not base64")))?;
        payloads.push(payload);
    }
    let mut results = Vec::with_capacity(frames.len());
    for (f, payload) in frames.iter().zip(payloads) {
        let outcome = if payload.len() > max_payload as usize {
            Err(UndeliverableReason::FrameTooLarge)
        } else {
            let item = DeviceItem::Forward { origin: inbox.ves_id, kind: f.kind, frame_id: f.frame_id, payload };
            state.router.ves_to_device(inbox, f.device_id, item)
        };
        results.push(frame_result(state, f.device_id, f.frame_id, outcome));
    }
    json_answer(&FramesResponse { results })
}

/// Forwards an `Acks` request's acknowledgements to their devices.
fn forward_acks(state: &GatewayState, inbox: &VesInbox, acks: &[FrameRef]) -> Result<HttpResponse, ApiError> {
    let mut resp = AcksResponse { forwarded: 0, undeliverable: Vec::new() };
    for a in acks {
        match state.router.ves_to_device(inbox, a.device_id, DeviceItem::Ack { frame_id: a.frame_id }) {
            Ok(()) => resp.forwarded += 1,
            Err(reason) => resp.undeliverable.push(FrameResult {
                device_id: a.device_id,
                frame_id: a.frame_id,
                status: FrameStatus::Undeliverable,
                reason: Some(reason),
            }),
        }
    }
    json_answer(&resp)
}

thread_local! {
    /// Where a worker writes its data-channel answers before copying each out.
    static ANSWER_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most of an answer's size that a worker's scratch buffer keeps between answers.
const ANSWER_SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// A JSON answer in one allocation: written into the worker's scratch buffer, then copied
/// into a body of exactly its size under a static content type. actix's `json()` also
/// allocates for the header's value and for its body's box, grows its buffer as it
/// writes, and hands over a buffer larger than its content, which costs one allocation
/// more to share. These are the answers to the `Frames` and `Acks` requests that every
/// relayed frame takes part in.
fn json_answer<T: serde::Serialize>(value: &T) -> Result<HttpResponse, ApiError> {
    let body = ANSWER_SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        let body = serde_json::to_writer(&mut *buf, value).map(|()| bytes::Bytes::copy_from_slice(buf));
        if buf.capacity() > ANSWER_SCRATCH_KEPT_BYTES {
            *buf = Vec::new(); // a rare large answer does not stay with the worker
        }
        body
    });
    let body = body.map_err(|e| {
        tracing::error!(error = %e, "a data-channel answer could not be encoded");
        ApiError::new(ApiErrorCode::Internal, "the answer could not be encoded")
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderValue::from_static("application/json"),
        ))
        .body(body))
}

fn frame_result(
    state: &GatewayState,
    device_id: noc_protocol::DeviceId,
    frame_id: u64,
    outcome: Result<(), UndeliverableReason>,
) -> FrameResult {
    match outcome {
        Ok(()) => FrameResult { device_id, frame_id, status: FrameStatus::Accepted, reason: None },
        Err(reason) => {
            state.router.metrics().undeliverable(Direction::VesToDevice, reason);
            FrameResult { device_id, frame_id, status: FrameStatus::Undeliverable, reason: Some(reason) }
        }
    }
}

// -- activation ---------------------------------------------------------------------------

/// `POST /account/v1/activate`: binds MSISDN and time zone (white paper §3.6).
async fn activate_account(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: AccountActivationRequest = json_body(&state, &req, payload).await?;
    let user = state
        .accounts
        .activate_account(&body.login, &body.password.0, &body.msisdn, &body.time_zone, source(&req))
        .await
        .map_err(|e| failed_auth(&state, "account", e))?;
    state.router.user_activated(user.ves_id, active_user_state(&user));
    Ok(HttpResponse::Ok().json(AccountActivationResponse {
        user_id: user.id,
        email: user.email,
        msisdn: user.msisdn.unwrap_or_default(),
        time_zone: user.time_zone.unwrap_or_default(),
    }))
}

/// `POST /device/v1/activate`: a device id and credential (white paper §7.2.1).
async fn activate_device(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: DeviceActivationRequest = json_body(&state, &req, payload).await?;
    // A certificate request is checked before anything is created, so a bad one costs
    // the device nothing but a second try.
    let ca = match (&body.csr, &state.config.device_ca) {
        (None, _) => None,
        (Some(_), None) => return Err(ApiError::bad_request("Csr: this relay issues no device certificates")),
        (Some(csr), Some(ca)) => {
            noc_ca::check(csr).map_err(|e| ApiError::bad_request(format!("Csr: {e}")))?;
            Some((csr.as_str(), ca))
        }
    };
    let (device, credential, user) = state
        .accounts
        .activate_device(
            &body.msisdn,
            &body.password.0,
            body.device_name.as_deref(),
            body.device_type.as_deref(),
            ca.is_some(),
            source(&req),
        )
        .await
        .map_err(|e| failed_auth(&state, "device", e))?;
    let certificate = match ca {
        None => None,
        Some((csr, ca)) => {
            let now = noc_protocol::clock::unix_ms_i64() / 1000;
            let issued = match ca.issue(csr, user.id, device.id, now) {
                Ok(Ok(issued)) => state
                    .accounts
                    .record_device_certificate(user.id, device.id, &issued.serial, issued.not_after)
                    .await
                    .map(|()| issued)
                    .map_err(|e| failed_auth(&state, "device", e)),
                // Checked above; a second look cannot differ.
                Ok(Err(e)) => Err(ApiError::bad_request(format!("Csr: {e}"))),
                Err(e) => {
                    tracing::error!(error = %e, "the device CA could not sign");
                    Err(ApiError::new(noc_protocol::ApiErrorCode::Internal, "internal error"))
                }
            };
            match issued {
                Ok(issued) => {
                    tracing::info!(device = %device.id, serial = %issued.serial, "device certificate issued");
                    Some((issued.pem, ca.root_pem().to_string()))
                }
                Err(e) => {
                    // The device was created for a certificate it does not get: it is
                    // revoked, so that it counts nowhere, and the device tries again.
                    let now_ms = noc_protocol::clock::unix_ms_i64();
                    if let Err(r) = state.accounts.store().revoke_device(user.id, device.id, now_ms).await {
                        tracing::warn!(error = %r, device = %device.id, "a device left without its certificate stays");
                    }
                    return Err(e);
                }
            }
        }
    };
    state.router.device_activated(user.ves_id, device.id, user.id, device.name.clone(), device.device_type.clone());
    let (client_certificate, management_root) = certificate.unzip();
    Ok(HttpResponse::Ok().json(DeviceActivationResponse {
        device_id: device.id,
        device_credential: credential,
        device_host: state.config.device_host.clone(),
        device_port: state.config.device_port,
        full_name: user.full_name(),
        service_type: if user.effective_constant_sync() { "constant_sync" } else { "browse" }.to_string(),
        user_id: user.id,
        client_certificate,
        management_root,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_header_names_are_the_protocols() {
        assert!(KEY_ID.as_str().eq_ignore_ascii_case(rts::HEADER_KEY_ID));
        assert!(KEY.as_str().eq_ignore_ascii_case(rts::HEADER_KEY));
    }

    #[actix_rt::test]
    async fn answers_are_json_of_exactly_their_size_and_a_large_one_does_not_stay() {
        let small = AcksResponse { forwarded: 3, undeliverable: Vec::new() };
        let resp = json_answer(&small).expect("answer");
        assert_eq!(resp.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        let body = actix_web::body::to_bytes(resp.into_body()).await.expect("body");
        assert_eq!(body, serde_json::to_vec(&small).expect("json"));

        let large = FramesResponse {
            results: (0..2000)
                .map(|frame_id| FrameResult {
                    device_id: noc_protocol::DeviceId::random(),
                    frame_id,
                    status: FrameStatus::Accepted,
                    reason: None,
                })
                .collect(),
        };
        let resp = json_answer(&large).expect("answer");
        let body = actix_web::body::to_bytes(resp.into_body()).await.expect("body");
        assert!(body.len() > ANSWER_SCRATCH_KEPT_BYTES);
        assert_eq!(body, serde_json::to_vec(&large).expect("json"));
        assert_eq!(ANSWER_SCRATCH.with_borrow(|buf| buf.capacity()), 0, "the large buffer is not kept");
        json_answer(&small).expect("answer");
        assert!(ANSWER_SCRATCH.with_borrow(|buf| buf.capacity()) > 0, "a small one is");
    }
}
