//! The device channel's front door: TLS accept, HELLO, authentication — all under one
//! deadline — then the connection is handed to a [`DeviceSession`] actor.
//!
//! The device speaks first (BlackBerry SRP seed): the relay stays silent until it has a
//! well-formed HELLO, answers with the chosen version, and refuses anything else with a
//! CLOSE frame that names the problem. During the handshake frames are limited to
//! [`HANDSHAKE_MAX_FRAME_BYTES`], so an unauthenticated peer cannot make the relay
//! allocate a full-size frame buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use noc_actors::{DeviceSession, DeviceSessionInfo, Router, SessionConfig};
use noc_ca::{DeviceIdentity, IdentityError};
use noc_protocol::CloseCode;
use noc_protocol::device::{CERT_AUTH_VERSION, Frame, FrameCodec, FrameError, SUPPORTED_VERSIONS, WIPE_VERSION};
use noc_storage::{AccountError, Accounts};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};

use crate::ApiError;
use crate::tls_stream::{self, ServerTlsStream};

/// Largest frame accepted before authentication.
pub const HANDSHAKE_MAX_FRAME_BYTES: u32 = 1024;

/// Accepts device connections. One per node, shared by the listener's workers.
pub struct DeviceListener {
    tls: Arc<rustls::ServerConfig>,
    accounts: Accounts,
    router: Arc<Router>,
    sessions: Arc<SessionConfig>,
    handshake_timeout: Duration,
    draining: Arc<AtomicBool>,
    connections: ConnectionCap,
}

/// The device listener's share of the open-file limit: connections on the node
/// (handshaking or in session) beyond it are closed at once. The device listener shares
/// its workers with the public one, so each caps its own connections.
struct ConnectionCap {
    max: usize,
    /// Connections still in their handshake (sessions are counted by the router).
    handshaking: AtomicUsize,
}

impl ConnectionCap {
    fn new(max: usize) -> Self {
        Self { max, handshaking: AtomicUsize::new(0) }
    }

    /// Counts a new connection while it handshakes, or refuses it when `sessions` plus
    /// the connections handshaking already reach the cap.
    fn admit(&self, sessions: usize) -> Option<Handshaking<'_>> {
        let handshaking = Handshaking(&self.handshaking);
        let before = self.handshaking.fetch_add(1, Ordering::Relaxed);
        (before.saturating_add(sessions) < self.max).then_some(handshaking)
    }
}

/// A connection counted in [`ConnectionCap::handshaking`] until its handshake ends.
struct Handshaking<'a>(&'a AtomicUsize);

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a handshake ended without a session (the `reason` of `noc_connections_rejected_total`).
struct Rejected(&'static str);

impl DeviceListener {
    pub fn new(
        tls: Arc<rustls::ServerConfig>,
        accounts: Accounts,
        router: Arc<Router>,
        sessions: Arc<SessionConfig>,
        handshake_timeout: Duration,
        draining: Arc<AtomicBool>,
        max_connections: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            tls,
            accounts,
            router,
            sessions,
            handshake_timeout,
            draining,
            connections: ConnectionCap::new(max_connections),
        })
    }

    /// Serves one accepted TCP connection until it is handed to its session or refused.
    pub async fn serve(self: Arc<Self>, tcp: TcpStream) {
        let Some(_handshaking) = self.connections.admit(self.router.device_sessions()) else {
            self.router.metrics().connection_rejected("connection_limit");
            return;
        };
        let _ = tcp.set_nodelay(true);
        let source = tcp.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let deadline = Instant::now() + self.handshake_timeout;
        let tls = match tokio::time::timeout_at(deadline, tls_stream::accept(tcp, self.tls.clone())).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "device TLS handshake failed");
                // A client certificate the device CA did not issue, expired, or not for
                // clientAuth: the device learns it from the TLS alert.
                let reason = match e {
                    tls_stream::AcceptError::Tls(rustls::Error::InvalidCertificate(_)) => "client_certificate",
                    _ => "tls_error",
                };
                self.router.metrics().connection_rejected(reason);
                return;
            }
            Err(_) => {
                self.router.metrics().connection_rejected("handshake_timeout");
                return;
            }
        };
        // Verified by rustls against the device CA; read once, for AUTH_CERT.
        let certificate = tls.peer_certificate.as_deref().map(DeviceIdentity::from_der);
        match self.handshake(tls.stream, deadline, source, certificate).await {
            Ok((io, read_buf, info)) => self.start_session(io, read_buf, info),
            Err(Rejected(reason)) => self.router.metrics().connection_rejected(reason),
        }
    }

    /// Starts the session of an authenticated connection on its VES's home worker on this
    /// node (see `noc_actors::Home`), or here when that is this one.
    fn start_session(&self, io: ServerTlsStream, read_buf: BytesMut, info: DeviceSessionInfo) {
        let (router, sessions) = (self.router.clone(), self.sessions.clone());
        let home = router.ves_home(info.ves_id).filter(|home| !home.is_current());
        let Some(home) = home else {
            DeviceSession::start(io, read_buf, info, router, sessions);
            return;
        };
        let detached = match io.detach() {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(device = %info.device_id, error = %e, "could not move the device connection");
                router.metrics().connection_rejected("io_error");
                return;
            }
        };
        let metrics = router.metrics().clone();
        let moved = home.spawn(async move {
            match detached.attach() {
                Ok(io) => {
                    router.metrics().device_sessions_moved.inc();
                    DeviceSession::start(io, read_buf, info, router, sessions);
                }
                Err(e) => {
                    tracing::debug!(device = %info.device_id, error = %e, "could not move the device connection");
                    router.metrics().connection_rejected("io_error");
                }
            }
        });
        if !moved {
            // The worker stopped (the node is shutting down): the connection is closed.
            metrics.connection_rejected("draining");
        }
    }

    /// HELLO → HELLO_ACK → AUTH_* → AUTH_OK on an established TLS stream.
    async fn handshake<S>(
        &self,
        io: S,
        deadline: Instant,
        source: std::net::IpAddr,
        certificate: Option<Result<DeviceIdentity, IdentityError>>,
    ) -> Result<(S, BytesMut, DeviceSessionInfo), Rejected>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut framed = Framed::with_capacity(io, FrameCodec::new(HANDSHAKE_MAX_FRAME_BYTES), 256);

        let versions = match next_frame(&mut framed, deadline).await {
            Ok(Frame::Hello { versions }) => versions,
            Ok(other) => {
                let msg = format!("expected HELLO, got {}", other.frame_type().name());
                return Err(refuse(&mut framed, CloseCode::ProtocolViolation, &msg, "protocol_violation").await);
            }
            Err(e) => return Err(fail(&mut framed, e).await),
        };
        let Some(version) = SUPPORTED_VERSIONS.iter().rev().copied().find(|v| versions.contains(v)) else {
            let msg = format!("no common protocol version; this relay speaks {SUPPORTED_VERSIONS:?}");
            return Err(refuse(&mut framed, CloseCode::UnsupportedVersion, &msg, "unsupported_version").await);
        };
        if self.draining.load(Ordering::Relaxed) {
            return Err(refuse(&mut framed, CloseCode::ServerDraining, "node is draining", "draining").await);
        }
        if self.router.device_sessions() >= self.sessions.max_device_sessions {
            return Err(refuse(&mut framed, CloseCode::TooManySessions, "node is full", "too_many_sessions").await);
        }
        if send(&mut framed, Frame::HelloAck { version }, deadline).await.is_err() {
            return Err(Rejected("io_error"));
        }

        let (device_id, method, auth) = match next_frame(&mut framed, deadline).await {
            Ok(Frame::AuthToken { device_id, credential }) => (
                device_id,
                "token",
                tokio::time::timeout_at(deadline, self.accounts.authenticate_device_token(device_id, &credential))
                    .await,
            ),
            Ok(Frame::AuthPassword { device_id, msisdn, password }) => (
                device_id,
                "password",
                tokio::time::timeout_at(
                    deadline,
                    self.accounts.authenticate_device_password(device_id, &msisdn, &password, source),
                )
                .await,
            ),
            Ok(Frame::AuthCert { device_id }) => {
                if version < CERT_AUTH_VERSION {
                    let msg = format!("AUTH_CERT needs device-channel version {CERT_AUTH_VERSION}");
                    return Err(refuse(&mut framed, CloseCode::ProtocolViolation, &msg, "protocol_violation").await);
                }
                let identity = match certificate_for(device_id, certificate.as_ref()) {
                    Ok(identity) => identity,
                    Err(msg) => {
                        self.router.metrics().auth_failure("device", "certificate_refused");
                        return Err(refuse(&mut framed, CloseCode::CertificateRefused, msg, "auth_failed").await);
                    }
                };
                (
                    device_id,
                    "certificate",
                    tokio::time::timeout_at(
                        deadline,
                        self.accounts.authenticate_device_certificate(device_id, identity.user, &identity.serial),
                    )
                    .await,
                )
            }
            Ok(other) => {
                let msg = format!("expected AUTH_TOKEN, AUTH_PASSWORD or AUTH_CERT, got {}", other.frame_type().name());
                return Err(refuse(&mut framed, CloseCode::ProtocolViolation, &msg, "protocol_violation").await);
            }
            Err(e) => return Err(fail(&mut framed, e).await),
        };
        let auth = match auth {
            Ok(Ok(auth)) => auth,
            Ok(Err(AccountError::WipePending)) => {
                return Err(self.deliver_wipe(&mut framed, version, device_id, deadline).await);
            }
            Ok(Err(e)) => {
                if let Some(reason) = ApiError::auth_reason(&e) {
                    self.router.metrics().auth_failure("device", reason);
                }
                let (code, msg, hint) = close_for(&e);
                // Clients before version 3 do not know `certificate_required`; `auth_failed`
                // tells them as well not to try again with the same credential.
                let code = match code {
                    CloseCode::CertificateRequired if version < CERT_AUTH_VERSION => CloseCode::AuthFailed,
                    code => code,
                };
                return Err(refuse_with_hint(&mut framed, code, msg, hint, "auth_failed").await);
            }
            Err(_) => {
                let code = CloseCode::HandshakeTimeout;
                return Err(
                    refuse(&mut framed, code, "authentication not completed in time", "handshake_timeout").await
                );
            }
        };
        if self.draining.load(Ordering::Relaxed) {
            // The drain began during authentication: this session would be cut at once.
            return Err(refuse(&mut framed, CloseCode::ServerDraining, "node is draining", "draining").await);
        }
        self.router.metrics().device_login(method);
        let ok = Frame::AuthOk {
            heartbeat_interval_seconds: self.sessions.device_heartbeat_interval.as_secs() as u32,
            idle_timeout_seconds: self.sessions.device_idle_timeout.as_secs() as u32,
            max_frame_bytes: self.sessions.max_frame_bytes,
        };
        if send(&mut framed, ok, deadline).await.is_err() {
            return Err(Rejected("io_error"));
        }
        let FramedParts { io, read_buf, .. } = framed.into_parts();
        let info = DeviceSessionInfo {
            version,
            device_id: auth.device_id,
            user_id: auth.user_id,
            ves_id: auth.ves_id,
            license_id: auth.license_id,
        };
        Ok((io, read_buf, info))
    }
}

impl DeviceListener {
    /// Answers the authentication of a device that waits for its remote wipe: WIPE, then
    /// the device's WIPE_DONE once it erased its store and credentials, recorded in the
    /// store (which revokes the credential). A device that speaks only version 1 cannot
    /// erase itself: it is refused `revoked`, and the wipe stays pending for a newer
    /// client. Either way no session opens.
    async fn deliver_wipe<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: &mut Framed<S, FrameCodec>,
        version: u16,
        device_id: noc_protocol::DeviceId,
        deadline: Instant,
    ) -> Rejected {
        if version < WIPE_VERSION {
            let msg = "a remote wipe was requested for this device; this client cannot perform it";
            return refuse(framed, CloseCode::Revoked, msg, "wipe_unsupported").await;
        }
        if send(framed, Frame::Wipe, deadline).await.is_err() {
            return Rejected("io_error");
        }
        match next_frame(framed, deadline).await {
            Ok(Frame::WipeDone) => {}
            Ok(other) => {
                let msg = format!("expected WIPE_DONE, got {}", other.frame_type().name());
                return refuse(framed, CloseCode::ProtocolViolation, &msg, "protocol_violation").await;
            }
            Err(e) => return fail(framed, e).await,
        }
        match tokio::time::timeout_at(deadline, self.accounts.device_wiped(device_id)).await {
            Ok(Ok(_)) => {
                tracing::info!(device = %device_id, "device acknowledged its remote wipe");
                refuse(framed, CloseCode::Revoked, "device wiped", "wiped").await
            }
            Ok(Err(e)) => {
                // The device is erased but the record says otherwise: it stays pending (and
                // the portal says so) rather than claiming a wipe that was not recorded.
                tracing::warn!(device = %device_id, error = %e, "device wiped but the store did not record it");
                let (code, msg, hint) = close_for(&e);
                refuse_with_hint(framed, code, msg, hint, "wipe_unrecorded").await
            }
            Err(_) => {
                refuse(framed, CloseCode::HandshakeTimeout, "wipe not recorded in time", "handshake_timeout").await
            }
        }
    }
}

/// The identity AUTH_CERT may claim: the client certificate's, for the device it names,
/// not expired (a resumed TLS session does not check validity again). Otherwise why not,
/// in the words of the CLOSE.
fn certificate_for(
    device_id: noc_protocol::DeviceId,
    certificate: Option<&Result<DeviceIdentity, IdentityError>>,
) -> Result<&DeviceIdentity, &'static str> {
    match certificate {
        None => Err("AUTH_CERT needs a client certificate in the TLS handshake"),
        Some(Err(IdentityError::Malformed)) => Err("the client certificate cannot be read"),
        Some(Err(IdentityError::NoDevice)) => Err("the client certificate names no device"),
        Some(Ok(identity)) if identity.device != device_id => Err("the client certificate names another device"),
        Some(Ok(identity)) if identity.not_after <= noc_protocol::clock::unix_ms_i64() / 1000 => {
            Err("the client certificate has expired")
        }
        Some(Ok(identity)) => Ok(identity),
    }
}

enum NextError {
    Timeout,
    Closed,
    Frame(FrameError),
}

async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, FrameCodec>,
    deadline: Instant,
) -> Result<Frame, NextError> {
    match tokio::time::timeout_at(deadline, framed.next()).await {
        Err(_) => Err(NextError::Timeout),
        Ok(None) | Ok(Some(Err(FrameError::Io(_)))) => Err(NextError::Closed),
        Ok(Some(Err(e))) => Err(NextError::Frame(e)),
        Ok(Some(Ok(f))) => Ok(f),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, FrameCodec>,
    frame: Frame,
    deadline: Instant,
) -> Result<(), ()> {
    match tokio::time::timeout_at(deadline, framed.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn fail<S: AsyncRead + AsyncWrite + Unpin>(framed: &mut Framed<S, FrameCodec>, e: NextError) -> Rejected {
    match e {
        NextError::Timeout => {
            refuse(framed, CloseCode::HandshakeTimeout, "handshake not completed in time", "handshake_timeout").await
        }
        NextError::Closed => Rejected("peer_closed"),
        NextError::Frame(e) => {
            let reason = match e {
                FrameError::TooLarge { .. } => "frame_too_large",
                _ => "malformed_frame",
            };
            refuse(framed, e.close_code(), &e.to_string(), reason).await
        }
    }
}

/// Sends a CLOSE frame (best effort, briefly) and reports the rejection.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, FrameCodec>,
    code: CloseCode,
    message: &str,
    reason: &'static str,
) -> Rejected {
    refuse_with_hint(framed, code, message, reconnect_hint_ms(code), reason).await
}

async fn refuse_with_hint<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, FrameCodec>,
    code: CloseCode,
    message: &str,
    reconnect_after_ms: u32,
    reason: &'static str,
) -> Rejected {
    let frame = Frame::Close { code, reconnect_after_ms, message: message.to_string() };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        framed.send(frame).await?;
        tokio::io::AsyncWriteExt::shutdown(framed.get_mut()).await.map_err(FrameError::Io)
    })
    .await;
    Rejected(reason)
}

/// When a refused device should try again: spread with jitter so that refused devices do
/// not come back in lockstep; 0 where retrying cannot help without a change on its side.
fn reconnect_hint_ms(code: CloseCode) -> u32 {
    let (min, max) = match code {
        CloseCode::ServerDraining => (500, 5_000),
        CloseCode::ServiceUnavailable => (5_000, 15_000),
        CloseCode::TooManySessions => (10_000, 30_000),
        CloseCode::HandshakeTimeout | CloseCode::ServerError => (1_000, 5_000),
        _ => return 0,
    };
    jitter_ms(min, max)
}

fn jitter_ms(min: u32, max: u32) -> u32 {
    let r = u32::from_be_bytes(noc_protocol::secrets::random_bytes::<4>());
    min + r % (max - min)
}

/// The CLOSE for a failed authentication: code, message and reconnect hint. A busy store
/// (every pooled connection taken, typically in a login storm) gets a short hint so the
/// device comes back as soon as the queue has moved; a store that is down a long one.
fn close_for(e: &AccountError) -> (CloseCode, &'static str, u32) {
    let (code, message) = match e {
        AccountError::InvalidCredentials => (CloseCode::AuthFailed, "invalid credentials"),
        AccountError::Throttled(t) => {
            let hint = u32::try_from(t.retry_after().as_millis()).unwrap_or(u32::MAX);
            return (CloseCode::LockedOut, "too many failed password attempts; retry after the hint", hint);
        }
        AccountError::Revoked => (CloseCode::Revoked, "device credential revoked; activate again"),
        AccountError::CertificateRequired => (
            CloseCode::CertificateRequired,
            "this license requires a client certificate; activate the device again with a certificate request",
        ),
        AccountError::CertificateRefused => (
            CloseCode::CertificateRefused,
            "client certificate replaced or no longer valid; authenticate with the credential or renew",
        ),
        AccountError::Suspended => (CloseCode::AccountSuspended, "account or license suspended"),
        AccountError::Unavailable(_) => (CloseCode::ServiceUnavailable, "account store unavailable; retry later"),
        AccountError::Busy(_) => {
            return (CloseCode::ServiceUnavailable, "relay busy; retry shortly", jitter_ms(1_000, 4_000));
        }
        AccountError::NotActivated => (CloseCode::AuthFailed, "account not activated"),
        AccountError::FeatureDisabled(_) => {
            (CloseCode::FeatureDisabled, "ConstantSync is not enabled for this account")
        }
        _ => (CloseCode::ServerError, "internal error"),
    };
    (code, message, reconnect_hint_ms(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_beyond_the_cap_are_refused_and_ended_ones_make_room() {
        let cap = ConnectionCap::new(3);
        let first = cap.admit(1).expect("1 session + 0 handshaking < 3");
        let second = cap.admit(1).expect("1 session + 1 handshaking < 3");
        assert!(cap.admit(1).is_none(), "1 session + 2 handshaking reach the cap");
        assert_eq!(cap.handshaking.load(Ordering::Relaxed), 2, "a refused connection is not counted");
        drop(first);
        let _third = cap.admit(1).expect("a handshake that ended makes room");
        assert!(cap.admit(2).is_none(), "sessions count too");
        drop(second);
        assert!(ConnectionCap::new(0).admit(0).is_none());
    }
}
