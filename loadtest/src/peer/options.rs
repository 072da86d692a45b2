//! What a baseline run is given: the protocol, the target, the sink, and its errors.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;

use crate::net::NetError;
use crate::peer::wire::{self, Event, WireError};
use crate::result::ReportError;
use crate::scenario::{Scenario, ScenarioError};

/// MQTT keep-alive of the simulated clients; longer than any benchmark step, so no
/// PINGREQ traffic is needed.
pub(super) const MQTT_KEEP_ALIVE_SECONDS: u16 = 600;
/// Pause before a failed device connection is tried again.
pub(super) const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// Which baseline the run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerProtocol {
    /// MQTT 3.1.1 over TLS, QoS 1 (Mosquitto).
    Mqtt,
    /// The NATS client protocol over TLS (nats-server).
    Nats,
    /// A TLS-terminating 1:1 stream proxy (nginx `stream`), with the hub as its upstream.
    Forward,
}

impl PeerProtocol {
    pub(super) fn scheme(self) -> &'static str {
        match self {
            PeerProtocol::Mqtt => "mqtts",
            PeerProtocol::Nats => "nats+tls",
            PeerProtocol::Forward => "tls-forward",
        }
    }

    pub(super) fn next_event(self, buf: &mut BytesMut) -> Result<Option<Event>, WireError> {
        match self {
            PeerProtocol::Mqtt => wire::mqtt_next(buf),
            PeerProtocol::Nats => wire::nats_next(buf),
            PeerProtocol::Forward => wire::forward_next(buf),
        }
    }
}

/// The hub's end of the forwarding ceiling: where it listens for the proxy's upstream
/// connections, with which certificate (TLS on that hop too).
#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything a baseline run needs.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    pub protocol: PeerProtocol,
    /// The traffic shape; `ves_count` must be 1 (one hub).
    pub scenario: Scenario,
    /// The broker's (or proxy's) TLS address.
    pub addr: SocketAddr,
    /// Name checked against the broker's certificate.
    pub server_name: String,
    /// Trust anchor of the broker's certificate.
    pub cacert: PathBuf,
    /// Required for [`PeerProtocol::Forward`].
    pub sink: Option<SinkOptions>,
    pub source_ips: Vec<IpAddr>,
    /// Local broker processes to sample (summed), e.g. nginx's master and workers.
    pub peer_pids: Vec<u32>,
    pub progress: bool,
}

#[derive(Debug, Error)]
pub enum PeerError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{0}")]
    Usage(String),
    #[error("hub connection to {addr}: {message}")]
    Hub { addr: SocketAddr, message: String },
    #[error("sink certificate or key {path}: {message}")]
    SinkTls { path: PathBuf, message: String },
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}
