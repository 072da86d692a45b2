//! The persistent device-channel connection (docs/protocol.md §6) with the end-to-end link
//! running over it.
//!
//! One connection at a time: TLS, HELLO, AUTH_TOKEN (or, holding a client certificate of
//! the relay's device CA, the certificate in the TLS handshake and AUTH_CERT), then
//! FORWARD/ACK/UNDELIVERABLE/HEARTBEAT until the connection fails or the relay closes it;
//! then a jittered
//! exponential backoff (honouring CLOSE `reconnect_after_ms`) and again. Close codes after
//! which reconnecting cannot help end [`run`] with [`DeviceError::Fatal`]. Every connection
//! starts a new end-to-end session (WakeUp), as docs/endpoints.md §4 requires.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use noc_crypto::InitiatorConfig;
use noc_endpoint::item::ItemType;
use noc_endpoint::link::{Link, LinkConfig, LinkEvent, Outputs, Rejection};
use noc_endpoint::{Backoff, Store};
use noc_protocol::device::{
    CERT_AUTH_VERSION, FORWARD_OVERHEAD_BYTES, Frame, FrameCodec, FrameError, SUPPORTED_VERSIONS,
};
use noc_protocol::{CloseCode, RenewalRefusal};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::error::DeviceError;
use crate::state::{ClientCertificate, DeviceState};

/// Frames are at most 1024 bytes until AUTH_OK (docs/protocol.md §6.1).
const PRE_AUTH_MAX_FRAME: u32 = 1024;
/// Room left in a frame for the suite's overhead (26 bytes legacy) and deflate's expansion.
const SEAL_MARGIN: usize = 26 + 128;
/// On shutdown, the CLOSE frame and the TLS close get at most this long after the drain.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// How `run` behaves. Defaults follow docs/protocol.md §6.4.5 and docs/endpoints.md §8.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Connect here instead of the activation's `DeviceHost:DevicePort` (the TLS name stays
    /// `DeviceHost`).
    pub connect_to: Option<SocketAddr>,
    /// TCP + TLS + HELLO + AUTH must complete within this.
    pub connect_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// How often the link is pumped (resends, new outbox items, heartbeats).
    pub tick: Duration,
    /// The connection is dead after 2 × heartbeat interval + this with nothing received.
    pub dead_margin: Duration,
    /// On shutdown, spend at most this long sending pending item acknowledgements and
    /// waiting for the relay's ACKs of what is in flight (then CLOSE).
    pub drain_timeout: Duration,
    pub link: LinkConfig,
    /// Renew the client certificate (CERT_RENEW, docs/protocol.md §6.4.6) once less than
    /// this is left of it, or once the relay refused it.
    pub renew_before: Duration,
    /// The device's time, for the certificate's validity (the system clock but in tests).
    pub clock: Clock,
}

/// The device's idea of the current time, in unix seconds: the system clock, or one a
/// test sets (certificate renewal and expiry depend on it).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Clock(Arc::new(|| noc_protocol::clock::unix_ms_i64() / 1000))
    }

    /// A clock reading `f()`.
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Clock(Arc::new(f))
    }

    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            connect_to: None,
            connect_timeout: Duration::from_secs(15),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(300),
            tick: Duration::from_millis(250),
            dead_margin: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(2),
            link: LinkConfig::default(),
            renew_before: Duration::from_secs(30 * 86_400),
            clock: Clock::system(),
        }
    }
}

/// What the client reports while it runs.
#[derive(Clone, Debug)]
pub enum DeviceEvent {
    /// Authenticated to the relay.
    Connected { heartbeat_interval_seconds: u32, max_frame_bytes: u32 },
    /// The connection ended; a reconnect follows after `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// Something the end-to-end link reported.
    Link(LinkEvent),
    /// The relay issued a new client certificate for a new key; both are stored.
    CertificateRenewed { serial: String, not_after: i64 },
}

/// Counters of what happened, for status output and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    /// Of `connections`, those authenticated by the client certificate (AUTH_CERT).
    pub certificate_logins: AtomicU64,
    /// Client certificates renewed (CERT_ISSUED stored).
    pub certificate_renewals: AtomicU64,
    pub sessions: AtomicU64,
    pub items_received: AtomicU64,
    pub items_delivered: AtomicU64,
    pub tampered_frames: AtomicU64,
    pub replayed_frames: AtomicU64,
    pub out_of_order_frames: AtomicU64,
    pub key_agreement_failures: AtomicU64,
    pub rekey_requests: AtomicU64,
    /// HEARTBEATs sent in answer to the relay's (docs/protocol.md §6.4.2).
    pub heartbeats_answered: AtomicU64,
    /// HEARTBEATs sent because an interval passed without sending anything.
    pub heartbeats_own: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

enum Ended {
    Shutdown,
    Retry {
        reason: String,
        hint: Duration,
    },
    /// The relay asked for an immediate reconnect (a remote wipe waits in the handshake).
    ReconnectNow {
        reason: String,
    },
}

/// Erases the device's local data and credentials when the relay delivers a remote wipe
/// (docs/protocol.md §6.3.1). It must have finished before WIPE_DONE is sent: the relay
/// records the device as erased on that word.
pub type Wipe<'a> = &'a (dyn Fn() -> Result<(), DeviceError> + Send + Sync);

/// Runs the device until `shutdown` is cancelled (Ok), a fatal close code or a remote wipe
/// (Err; after [`DeviceError::Wiped`] `wipe` has erased the device).
///
/// A device holding a client certificate (in `state_dir`) presents it and authenticates
/// with AUTH_CERT while it is valid and the relay accepts it; once it has expired, or the
/// relay refused it (a TLS alert about the certificate, CLOSE `certificate_refused`, a
/// relay older than version 3), the credential (AUTH_TOKEN) is used. When less than
/// [`RunOptions::renew_before`] is left of it, or after a refusal, it renews it on the
/// next session with a new key (CERT_RENEW) and stores the new pair in `state_dir`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    state: &DeviceState,
    ca_file: Option<&Path>,
    state_dir: Option<&Path>,
    store: &Store,
    opts: &RunOptions,
    shutdown: CancellationToken,
    events: Option<broadcast::Sender<DeviceEvent>>,
    stats: Arc<Stats>,
    wipe: Wipe<'_>,
) -> Result<(), DeviceError> {
    let tls = noc_tls::client_config(ca_file, &[]).map_err(noc_endpoint::EndpointError::from)?;
    let connector = TlsConnector::from(Arc::new(tls));
    let certificates = match state_dir {
        Some(dir) => Some(Certificates::load(state, dir, ca_file)?),
        None => None,
    };
    let mut initiator = InitiatorConfig::new(state.fingerprint()?);
    initiator.suites = state.suites()?;
    let mut link = Link::device(initiator, opts.link.clone());
    let mut backoff = Backoff::new(opts.reconnect_initial, opts.reconnect_max);
    let ctx = Ctx {
        state,
        store,
        opts,
        events: &events,
        stats: &stats,
        wipe,
        certificates: certificates.as_ref(),
        state_dir,
    };
    loop {
        // Only the connection watches `shutdown`: racing it here would drop the connection
        // future mid-flight and skip its drain (pending item acknowledgements, CLOSE), so
        // the VES would keep items the device already stored.
        let ended = ctx.connection(&connector, &mut link, &mut backoff, &shutdown).await;
        link.on_disconnected();
        match ended? {
            Ended::Shutdown => return Ok(()),
            Ended::ReconnectNow { reason } => {
                tracing::info!(%reason, "device channel down; reconnecting at once");
                ctx.emit(DeviceEvent::Disconnected { reason, retry_in: Duration::ZERO });
            }
            Ended::Retry { reason, hint } => {
                let delay = backoff.next_delay().max(hint);
                tracing::info!(%reason, retry_in_ms = delay.as_millis() as u64, "device channel down");
                ctx.emit(DeviceEvent::Disconnected { reason, retry_in: delay });
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

struct Ctx<'a> {
    state: &'a DeviceState,
    store: &'a Store,
    opts: &'a RunOptions,
    events: &'a Option<broadcast::Sender<DeviceEvent>>,
    stats: &'a Stats,
    wipe: Wipe<'a>,
    /// The client certificate, when the device holds one.
    certificates: Option<&'a Certificates<'a>>,
    /// Where enterprise enrollments are kept (crate::enroll).
    state_dir: Option<&'a Path>,
}

/// The device's client certificate and key, the connector that presents them, and what
/// the relay said of them.
struct Certificates<'a> {
    dir: &'a Path,
    ca_file: Option<&'a Path>,
    held: Mutex<Option<Held>>,
    /// The relay refused the certificate: the credential until a renewal replaces it.
    refused: AtomicBool,
    /// The relay refused a renewal request for good (`bad_request`): no more tries.
    renewal_refused: AtomicBool,
}

struct Held {
    connector: TlsConnector,
    certificate: ClientCertificate,
}

impl<'a> Certificates<'a> {
    fn load(state: &DeviceState, dir: &'a Path, ca_file: Option<&'a Path>) -> Result<Self, DeviceError> {
        let held = match state.client_certificate(dir)? {
            // A pair that rustls will not take (a key that is not the certificate's) leaves
            // the device with its credential rather than stopping it.
            Some(certificate) => match connector(ca_file, &certificate) {
                Ok(connector) => Some(Held { connector, certificate }),
                Err(e) => {
                    tracing::warn!(error = %e, "the client certificate cannot be used; authenticating with the credential");
                    None
                }
            },
            None => None,
        };
        Ok(Certificates {
            dir,
            ca_file,
            held: Mutex::new(held),
            refused: AtomicBool::new(false),
            renewal_refused: AtomicBool::new(false),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connector presenting the certificate, while it is valid and not refused.
    fn usable(&self, now: i64) -> Option<TlsConnector> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        self.held().as_ref().filter(|h| h.certificate.valid_at(now)).map(|h| h.connector.clone())
    }

    /// Whether to ask for a new certificate on this session.
    fn wants_renewal(&self, now: i64, renew_before: Duration) -> bool {
        if self.renewal_refused.load(Ordering::Relaxed) {
            return false;
        }
        let renew_before = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
        self.held().as_ref().is_some_and(|h| {
            self.refused.load(Ordering::Relaxed) || now >= h.certificate.not_after.saturating_sub(renew_before)
        })
    }

    /// Checks and stores a certificate the relay issued for `key`; from now on it is the
    /// one presented.
    fn install(
        &self,
        device_id: noc_protocol::DeviceId,
        der: &[u8],
        key: &rcgen::KeyPair,
    ) -> Result<(String, i64), String> {
        let identity = noc_ca::DeviceIdentity::from_der(der).map_err(|e| e.to_string())?;
        if identity.device != device_id {
            return Err("the certificate names another device".into());
        }
        if identity.public_key != key.public_key_raw() {
            return Err("the certificate is not for the key of the request".into());
        }
        let certificate = ClientCertificate {
            cert: rustls_pki_types::CertificateDer::from(der.to_vec()),
            key: rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            serial: identity.serial.clone(),
            not_after: identity.not_after,
        };
        let connector = connector(self.ca_file, &certificate).map_err(|e| e.to_string())?;
        // Each file is replaced atomically; the key first, so that the old certificate
        // is never beside the new key for longer than the second rename.
        let write = |name: &str, data: &[u8]| {
            noc_endpoint::fsutil::write_private(&self.dir.join(name), data).map_err(|e| e.to_string())
        };
        write(crate::state::CLIENT_KEY_FILE, key.serialize_pem().as_bytes())?;
        write(crate::state::CLIENT_CERT_FILE, crate::state::certificate_pem(der).as_bytes())?;
        *self.held() = Some(Held { connector, certificate });
        self.refused.store(false, Ordering::Relaxed);
        Ok((identity.serial, identity.not_after))
    }
}

fn connector(ca_file: Option<&Path>, c: &ClientCertificate) -> Result<TlsConnector, DeviceError> {
    let config = noc_tls::client_config_with_certificate(ca_file, &[], vec![c.cert.clone()], c.key.clone_key())
        .map_err(noc_endpoint::EndpointError::from)?;
    Ok(TlsConnector::from(Arc::new(config)))
}

type Conn = Framed<TlsStream<TcpStream>, FrameCodec>;

fn retry(reason: impl Into<String>) -> Ended {
    Ended::Retry { reason: reason.into(), hint: Duration::ZERO }
}

impl Ctx<'_> {
    fn emit(&self, e: DeviceEvent) {
        if let Some(tx) = self.events {
            let _ = tx.send(e);
        }
    }

    /// The certificate's connector while the certificate is usable, else `plain`.
    fn connector_for(&self, plain: &TlsConnector) -> (TlsConnector, bool) {
        match self.certificates.and_then(|c| c.usable(self.opts.clock.now())) {
            Some(connector) => (connector, true),
            None => (plain.clone(), false),
        }
    }

    /// The relay will not take the certificate: say so once and use the credential.
    fn refuse_certificate(&self, why: &str) -> Ended {
        if let Some(c) = self.certificates
            && !c.refused.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(reason = %why, "client certificate not accepted; authenticating with the device credential");
        }
        Ended::ReconnectNow { reason: format!("client certificate not accepted ({why})") }
    }

    /// A new key and a CERT_RENEW for it, when the certificate is due for renewal and the
    /// session speaks version 3.
    fn renewal(&self, version: u16) -> Option<(rcgen::KeyPair, Frame)> {
        let certificates = self.certificates?;
        if version < CERT_AUTH_VERSION || !certificates.wants_renewal(self.opts.clock.now(), self.opts.renew_before) {
            return None;
        }
        let made = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).and_then(|key| {
            let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
            Ok((Bytes::copy_from_slice(csr.der()), key))
        });
        match made {
            Ok((csr, key)) => Some((key, Frame::CertRenew { csr })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a certificate request");
                None
            }
        }
    }

    /// The relay's answer to CERT_RENEW.
    fn renewed(&self, answer: Result<(&[u8], rcgen::KeyPair), (RenewalRefusal, String)>) {
        let Some(certificates) = self.certificates else { return };
        match answer {
            Ok((der, key)) => match certificates.install(self.state.device_id, der, &key) {
                Ok((serial, not_after)) => {
                    tracing::info!(%serial, not_after, "client certificate renewed");
                    self.stats.certificate_renewals.fetch_add(1, Ordering::Relaxed);
                    self.emit(DeviceEvent::CertificateRenewed { serial, not_after });
                }
                Err(e) => {
                    // Not stored: the relay has recorded it, so the old one is refused and
                    // the credential is used until a later run renews again.
                    tracing::warn!(error = %e, "the renewed certificate is not usable; not stored");
                    certificates.renewal_refused.store(true, Ordering::Relaxed);
                }
            },
            Err((reason, message)) => {
                tracing::warn!(%reason, %message, "the relay issued no certificate");
                if reason == RenewalRefusal::BadRequest {
                    certificates.renewal_refused.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    async fn connect(&self, connector: &TlsConnector) -> Result<Conn, String> {
        let host = self.state.device_host.as_str();
        let tcp = match self.opts.connect_to {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect((host, self.state.device_port)).await,
        }
        .map_err(|e| format!("connect to {host}:{}: {e}", self.state.device_port))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        Ok(Framed::new(tls, FrameCodec::new(PRE_AUTH_MAX_FRAME)))
    }

    /// HELLO, then AUTH_CERT (`with_certificate`, version 3) or AUTH_TOKEN; returns AUTH_OK's
    /// heartbeat interval and maximum frame, the version, and whether the certificate
    /// authenticated the device.
    async fn handshake(
        &self,
        conn: &mut Conn,
        with_certificate: bool,
    ) -> Result<(u32, u32, u16, bool), Result<Ended, DeviceError>> {
        send(conn, Frame::Hello { versions: SUPPORTED_VERSIONS.to_vec() }).await.map_err(|e| Ok(retry(e)))?;
        // With TLS 1.3 the relay's verdict on the certificate (an alert) comes with its
        // first answer.
        let version = match conn.next().await {
            Some(Ok(Frame::HelloAck { version })) => version,
            Some(Ok(Frame::Close { code, reconnect_after_ms, message })) => {
                return Err(on_close(code, reconnect_after_ms, message));
            }
            Some(Ok(other)) => return Err(Ok(retry(format!("expected HELLO_ACK, got {:?}", other.frame_type())))),
            Some(Err(FrameError::Io(e))) if with_certificate && certificate_alert(&e) => {
                return Err(Ok(self.refuse_certificate(&e.to_string())));
            }
            Some(Err(e)) => return Err(Ok(retry(e.to_string()))),
            None => return Err(Ok(retry("the relay closed the connection"))),
        };
        let device_id = self.state.device_id;
        let by_certificate = with_certificate && version >= CERT_AUTH_VERSION;
        let auth = if by_certificate {
            Frame::AuthCert { device_id }
        } else {
            Frame::AuthToken { device_id, credential: Bytes::from(self.state.credential_bytes().map_err(Err)?) }
        };
        send(conn, auth).await.map_err(|e| Ok(retry(e)))?;
        match next_frame(conn).await {
            Ok(Frame::AuthOk { heartbeat_interval_seconds, idle_timeout_seconds: _, max_frame_bytes }) => {
                if by_certificate {
                    self.stats.certificate_logins.fetch_add(1, Ordering::Relaxed);
                }
                Ok((heartbeat_interval_seconds, max_frame_bytes, version, by_certificate))
            }
            Ok(Frame::Wipe) => Err(Err(self.wiped(conn).await)),
            Ok(Frame::Close { code: CloseCode::CertificateRefused, message, .. }) if by_certificate => {
                Err(Ok(self.refuse_certificate(&message)))
            }
            Ok(Frame::Close { code, reconnect_after_ms, message }) => Err(on_close(code, reconnect_after_ms, message)),
            Ok(other) => Err(Ok(retry(format!("expected AUTH_OK, got {:?}", other.frame_type())))),
            Err(e) => Err(Ok(retry(e))),
        }
    }

    /// The relay delivered a remote wipe: erase, then say so, then stop for good. When
    /// erasing fails nothing is acknowledged: the wipe stays pending at the relay and comes
    /// again with the next run.
    async fn wiped(&self, conn: &mut Conn) -> DeviceError {
        tracing::warn!(device_id = %self.state.device_id, "remote wipe requested: erasing local data and credentials");
        if let Err(e) = (self.wipe)() {
            tracing::error!(error = %e, "remote wipe failed; not acknowledged");
            return e;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            send(conn, Frame::WipeDone).await?;
            // The relay records the wipe, then closes with CLOSE `revoked`.
            next_frame(conn).await
        })
        .await;
        DeviceError::Wiped
    }

    async fn connection(
        &self,
        connector: &TlsConnector,
        link: &mut Link,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Result<Ended, DeviceError> {
        let (connector, with_certificate) = self.connector_for(connector);
        let setup = async {
            let mut conn = self.connect(&connector).await.map_err(|e| Ok(retry(e)))?;
            let params = self.handshake(&mut conn, with_certificate).await?;
            Ok::<_, Result<Ended, DeviceError>>((conn, params))
        };
        // Nothing to drain before AUTH_OK: cancelling the set-up loses nothing.
        let setup = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
            r = tokio::time::timeout(self.opts.connect_timeout, setup) => r,
        };
        let (mut conn, (hb, max_frame, version, by_certificate)) = match setup {
            Err(_) => return Ok(retry("connection set-up timed out")),
            Ok(Err(ended)) => return ended,
            Ok(Ok(v)) => v,
        };
        backoff.reset();
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.emit(DeviceEvent::Connected { heartbeat_interval_seconds: hb, max_frame_bytes: max_frame });
        let auth = if by_certificate { "client certificate" } else { "credential" };
        tracing::info!(device_id = %self.state.device_id, heartbeat_interval_seconds = hb, auth, "device channel up");
        *conn.codec_mut() = FrameCodec::new(max_frame.max(PRE_AUTH_MAX_FRAME));
        link.set_max_record_bytes(
            (max_frame.saturating_sub(FORWARD_OVERHEAD_BYTES) as usize).saturating_sub(SEAL_MARGIN),
        );

        let heartbeat = Duration::from_secs(u64::from(hb.max(1)));
        let dead_after = heartbeat * 2 + self.opts.dead_margin;
        let mut last_rx = Instant::now();
        let mut last_tx = Instant::now();
        let mut out = Outputs::default();
        link.on_connected(Instant::now(), &mut out);
        if let Err(e) = self.flush(&mut conn, &mut out, &mut last_tx).await {
            return Ok(retry(e));
        }
        // A certificate due for renewal (or refused) is renewed first thing.
        let mut renewal_key = None;
        if let Some((key, request)) = self.renewal(version) {
            if let Err(e) = send(&mut conn, request).await {
                return Ok(retry(e));
            }
            renewal_key = Some(key);
        }
        let mut tick = tokio::time::interval(self.opts.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Our own HEARTBEAT, due an interval after the last frame sent. It rarely fires:
        // the relay's HEARTBEATs, answered below, come first.
        let heartbeat_due = tokio::time::sleep_until((last_tx + heartbeat).into());
        tokio::pin!(heartbeat_due);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.log_off(&mut conn, link, &mut last_tx).await;
                    return Ok(Ended::Shutdown);
                }
                frame = conn.next() => {
                    let now = Instant::now();
                    last_rx = now;
                    match frame {
                        None => return Ok(retry("the relay closed the connection")),
                        Some(Err(e)) => return Ok(retry(format!("device channel: {e}"))),
                        Some(Ok(Frame::Forward { kind, frame_id, payload })) => {
                            link.on_forward(kind, frame_id, &payload, now, self.store, &mut out);
                        }
                        Some(Ok(Frame::Ack { frame_id })) => link.on_ack(frame_id),
                        Some(Ok(Frame::Undeliverable { frame_id, reason })) => {
                            link.on_undeliverable(frame_id, reason, now, &mut out);
                        }
                        // Answered when quiet for half an interval (docs/protocol.md
                        // §6.4.2): one radio wake-up for both heartbeats, and the relay
                        // reads the answers of a batch of its heartbeats together.
                        Some(Ok(Frame::Heartbeat)) if now.saturating_duration_since(last_tx) >= heartbeat / 2 => {
                            self.stats.heartbeats_answered.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = send(&mut conn, Frame::Heartbeat).await {
                                return Ok(retry(e));
                            }
                            last_tx = now;
                        }
                        Some(Ok(Frame::Heartbeat)) => {}
                        Some(Ok(Frame::Close { code, reconnect_after_ms, message })) => {
                            return on_close(code, reconnect_after_ms, message);
                        }
                        Some(Ok(Frame::CertIssued { certificate })) if renewal_key.is_some() => {
                            if let Some(key) = renewal_key.take() {
                                self.renewed(Ok((&certificate, key)));
                            }
                        }
                        Some(Ok(Frame::CertRefused { reason, message })) if renewal_key.is_some() => {
                            renewal_key = None;
                            self.renewed(Err((reason, message)));
                        }
                        Some(Ok(other)) => {
                            return Ok(retry(format!("unexpected {} from the relay", other.frame_type().name())));
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if now.saturating_duration_since(last_rx) > dead_after {
                        return Ok(retry(format!("nothing received for {} s", dead_after.as_secs())));
                    }
                    link.pump(now, self.store, &mut out);
                }
                _ = &mut heartbeat_due => {
                    self.stats.heartbeats_own.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = send(&mut conn, Frame::Heartbeat).await {
                        return Ok(retry(e));
                    }
                    last_tx = Instant::now();
                }
            }
            if let Err(e) = self.flush(&mut conn, &mut out, &mut last_tx).await {
                return Ok(retry(e));
            }
            heartbeat_due.as_mut().reset((last_tx + heartbeat).into());
        }
    }

    /// Logging off: the drain (below) for at most `drain_timeout`, then a CLOSE `normal`
    /// (so the relay knows the device left on purpose) and the TLS close for at most
    /// [`CLOSE_GRACE`]. A relay that stops reading cannot hold the shutdown longer.
    async fn log_off(&self, conn: &mut Conn, link: &mut Link, last_tx: &mut Instant) {
        if tokio::time::timeout(self.opts.drain_timeout, self.drain(conn, link, last_tx)).await.is_err() {
            tracing::info!(in_flight = link.in_flight(), "drain timed out; closing anyway");
        }
        let close = Frame::Close { code: CloseCode::Normal, reconnect_after_ms: 0, message: "normal".into() };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            send(conn, close).await?;
            SinkExt::<Frame>::close(conn).await.map_err(io_text)
        })
        .await;
    }

    /// Sends what is pending — item acknowledgements above all, so the VES can forget what
    /// we stored instead of sending it again next session — and waits for the relay's ACKs
    /// of everything in flight (the relay ACKs a FORWARD once the VES took it). Frames
    /// arriving meanwhile are not processed: the VES resends them in the next session.
    async fn drain(&self, conn: &mut Conn, link: &mut Link, last_tx: &mut Instant) {
        let mut out = Outputs::default();
        link.pump(Instant::now(), self.store, &mut out);
        if self.flush(conn, &mut out, last_tx).await.is_err() {
            return;
        }
        while link.in_flight() > 0 {
            match conn.next().await {
                Some(Ok(Frame::Ack { frame_id })) => link.on_ack(frame_id),
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    }

    /// Writes what the link produced and reports its events.
    async fn flush(&self, conn: &mut Conn, out: &mut Outputs, last_tx: &mut Instant) -> Result<(), String> {
        let wrote = !out.frames.is_empty() || !out.acks.is_empty();
        for f in out.frames.drain(..) {
            conn.feed(Frame::Forward { kind: f.kind, frame_id: f.frame_id, payload: f.payload })
                .await
                .map_err(io_text)?;
        }
        for frame_id in out.acks.drain(..) {
            conn.feed(Frame::Ack { frame_id }).await.map_err(io_text)?;
        }
        if wrote {
            SinkExt::<Frame>::flush(conn).await.map_err(io_text)?;
            *last_tx = Instant::now();
        }
        for e in out.events.drain(..) {
            self.count(&e);
            if let (LinkEvent::ItemReceived { item, current: true, .. }, Some(dir)) = (&e, self.state_dir)
                && item.item_type() == ItemType::CertificateStatus
                && let Err(error) = crate::enroll::on_status(dir, self.store, &item.body)
            {
                tracing::warn!(%error, "certificate status not processed");
            }
            self.emit(DeviceEvent::Link(e));
        }
        Ok(())
    }

    fn count(&self, e: &LinkEvent) {
        let s = self.stats;
        let c = match e {
            LinkEvent::SessionEstablished { suite } => {
                tracing::info!(%suite, "end-to-end session established");
                &s.sessions
            }
            LinkEvent::ItemReceived { id, item, replaced, current, .. } => {
                tracing::info!(%id, item_type = %item.item_type(), replaced = replaced.len(), current, "item received");
                &s.items_received
            }
            LinkEvent::ItemDelivered { id } => {
                tracing::info!(%id, "item delivered to the VES");
                &s.items_delivered
            }
            LinkEvent::KeyAgreementFailed { error } => {
                tracing::warn!(%error, "SECURITY: key agreement with the VES failed (tampering or a stale answer)");
                &s.key_agreement_failures
            }
            LinkEvent::RekeyRequested => &s.rekey_requests,
            LinkEvent::FrameRejected { rejection, frame_id, detail } => {
                tracing::warn!(?rejection, frame_id, %detail, "frame rejected");
                match rejection {
                    Rejection::Tampered => &s.tampered_frames,
                    Rejection::Replayed => &s.replayed_frames,
                    Rejection::OutOfOrder => &s.out_of_order_frames,
                    _ => return,
                }
            }
            LinkEvent::SessionEnded { reason } => {
                tracing::info!(%reason, "end-to-end session ended");
                return;
            }
            LinkEvent::ItemsExpired { ids } => {
                tracing::warn!(count = ids.len(), "outbox items expired undelivered");
                return;
            }
            LinkEvent::StoreFailed { error } => {
                tracing::error!(%error, "local store failed");
                return;
            }
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn io_text(e: FrameError) -> String {
    e.to_string()
}

async fn send(conn: &mut Conn, frame: Frame) -> Result<(), String> {
    conn.send(frame).await.map_err(io_text)
}

async fn next_frame(conn: &mut Conn) -> Result<Frame, String> {
    match conn.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the relay closed the connection".into()),
    }
}

/// Whether a TLS failure is the relay refusing the client certificate (unknown CA,
/// expired, revoked, unusable): retrying with it cannot help, the credential can.
fn certificate_alert(e: &std::io::Error) -> bool {
    use tokio_rustls::rustls::{AlertDescription as A, Error};
    matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()),
        Some(Error::AlertReceived(
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
        ))
    )
}

/// What a CLOSE from the relay means for this client (docs/protocol.md §6.6).
fn on_close(code: CloseCode, reconnect_after_ms: u32, message: String) -> Result<Ended, DeviceError> {
    match code {
        CloseCode::Replaced
        | CloseCode::AuthFailed
        | CloseCode::CertificateRequired
        | CloseCode::Revoked
        | CloseCode::AccountSuspended
        | CloseCode::UnsupportedVersion => Err(DeviceError::Fatal { code, message }),
        CloseCode::WipePending => Ok(Ended::ReconnectNow { reason: format!("{code}: {message}") }),
        CloseCode::LockedOut => {
            Ok(Ended::Retry { reason: format!("{code}: {message}"), hint: Duration::from_secs(900) })
        }
        _ => Ok(Ended::Retry {
            reason: format!("the relay closed the connection ({code}: {message})"),
            hint: Duration::from_millis(u64::from(reconnect_after_ms)),
        }),
    }
}
