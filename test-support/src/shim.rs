//! A malicious relay in miniature: a TLS-terminating man in the middle on the device
//! channel. It presents the relay's own certificate (the tests have its key), so a device
//! connects to it as to the relay, and it forwards every frame to the real relay — after a
//! test's rule has had its way with it: pass, drop, replace (tamper), duplicate (replay);
//! a test can also inject a frame of its own in either direction (a late replay).
//!
//! It also records every FORWARD payload that crosses, in both directions: those are
//! exactly the bytes the relay carries between the device and the VES (the device's
//! FORWARDs become `DeviceFrame` payloads; the VES's `Frames` payloads become FORWARDs to
//! the device), so a test can assert what the relay could see.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use noc_protocol::device::{ForwardKind, Frame, FrameCodec};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::{FramedRead, FramedWrite};

/// Which way a frame travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShimDir {
    ToDevice,
    ToRelay,
}

/// What to do with a frame.
pub enum ShimAction {
    Pass,
    Drop,
    /// Send this frame instead.
    Replace(Frame),
    /// Send the frame twice (a replay).
    Duplicate,
}

/// A FORWARD that crossed the shim.
#[derive(Clone, Debug)]
pub struct Captured {
    pub dir: ShimDir,
    pub kind: ForwardKind,
    pub frame_id: u64,
    pub payload: Bytes,
}

type Rule = Box<dyn FnMut(ShimDir, &Frame) -> ShimAction + Send>;

#[derive(Default)]
struct State {
    rule: Mutex<Option<Rule>>,
    captured: Mutex<Vec<Captured>>,
    /// Frames to push to the device on its current connection.
    inject: Mutex<Option<mpsc::UnboundedSender<Frame>>>,
    /// Frames to push to the relay on the device's current connection, as if the device
    /// had sent them.
    inject_relay: Mutex<Option<mpsc::UnboundedSender<Frame>>>,
}

/// See the module documentation.
pub struct DeviceShim {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl DeviceShim {
    /// Listens on loopback; forwards to `relay` (the relay's device listener), presenting
    /// the certificate and key of `cert_pem`/`key_pem`, and verifying the relay with the
    /// same certificate under `server_name`.
    pub async fn start(relay: SocketAddr, cert_pem: &Path, key_pem: &Path, server_name: &str) -> anyhow::Result<Self> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(key_pem)?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let connector = TlsConnector::from(Arc::new(crate::client_config(cert_pem, &[])?));
        let name = ServerName::try_from(server_name.to_owned())?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, connector, name, st) = (acceptor.clone(), connector.clone(), name.clone(), st.clone());
                tokio::spawn(async move {
                    let _ = relay_conn(tcp, relay, acceptor, connector, name, st).await;
                });
            }
        });
        Ok(DeviceShim { addr, state })
    }

    /// Applies `rule` to every frame from now on.
    pub fn set_rule(&self, rule: impl FnMut(ShimDir, &Frame) -> ShimAction + Send + 'static) {
        *self.state.rule.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(rule));
    }

    /// Back to passing everything.
    pub fn clear_rule(&self) {
        *self.state.rule.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Every FORWARD seen so far.
    pub fn captured(&self) -> Vec<Captured> {
        self.state.captured.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends a frame to the device on its current connection (a replay of an old frame).
    pub fn inject_to_device(&self, frame: Frame) -> bool {
        self.state.inject.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|tx| tx.send(frame).is_ok())
    }

    /// Sends a frame to the relay on the device's current connection, so that the relay
    /// takes it for the device's and passes it to the VES (a replay towards the VES).
    pub fn inject_to_relay(&self, frame: Frame) -> bool {
        self.state
            .inject_relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.send(frame).is_ok())
    }
}

async fn relay_conn(
    tcp: TcpStream,
    relay: SocketAddr,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    name: ServerName<'static>,
    st: Arc<State>,
) -> anyhow::Result<()> {
    let device = acceptor.accept(tcp).await?;
    let upstream = connector.connect(name, TcpStream::connect(relay).await?).await?;
    let (dr, dw) = tokio::io::split(device);
    let (ur, uw) = tokio::io::split(upstream);
    let max = 16 * 1024 * 1024;
    let mut from_device = FramedRead::new(dr, FrameCodec::new(max));
    let mut to_device = FramedWrite::new(dw, FrameCodec::new(max));
    let mut from_relay = FramedRead::new(ur, FrameCodec::new(max));
    let mut to_relay = FramedWrite::new(uw, FrameCodec::new(max));
    let (inject_tx, mut inject_rx) = mpsc::unbounded_channel();
    *st.inject.lock().unwrap_or_else(|p| p.into_inner()) = Some(inject_tx);
    let (inject_relay_tx, mut inject_relay_rx) = mpsc::unbounded_channel();
    *st.inject_relay.lock().unwrap_or_else(|p| p.into_inner()) = Some(inject_relay_tx);
    loop {
        tokio::select! {
            f = from_device.next() => {
                let Some(Ok(f)) = f else { return Ok(()) };
                for out in apply(&st, ShimDir::ToRelay, f) {
                    to_relay.send(out).await?;
                }
            }
            f = from_relay.next() => {
                let Some(Ok(f)) = f else { return Ok(()) };
                for out in apply(&st, ShimDir::ToDevice, f) {
                    to_device.send(out).await?;
                }
            }
            Some(f) = inject_rx.recv() => to_device.send(f).await?,
            Some(f) = inject_relay_rx.recv() => to_relay.send(f).await?,
        }
    }
}

fn apply(st: &State, dir: ShimDir, frame: Frame) -> Vec<Frame> {
    let action = match st.rule.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        Some(rule) => rule(dir, &frame),
        None => ShimAction::Pass,
    };
    let out = match action {
        ShimAction::Pass => vec![frame],
        ShimAction::Drop => vec![],
        ShimAction::Replace(f) => vec![f],
        ShimAction::Duplicate => vec![frame.clone(), frame],
    };
    for f in &out {
        if let Frame::Forward { kind, frame_id, payload } = f {
            st.captured.lock().unwrap_or_else(|p| p.into_inner()).push(Captured {
                dir,
                kind: *kind,
                frame_id: *frame_id,
                payload: payload.clone(),
            });
        }
    }
    out
}
