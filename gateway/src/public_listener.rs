//! The public HTTPS listener's front door: who may open a connection and a TLS handshake,
//! before any HTTP is parsed.
//!
//! A client that opens TCP connections and never speaks costs the relay a handshake slot
//! until the handshake deadline. So the listener admits connections per source address
//! (at most [`PublicLimits::max_connections_per_source`] open and
//! [`PublicLimits::max_handshakes_per_source`] handshaking), allows many handshakes at
//! once node-wide (idle sockets are cheap; real clients must not queue behind them), and
//! shortens the handshake deadline as handshakes pile up: a real client needs a few round
//! trips, a flood needs its sockets held. What is refused is closed at once and counted in
//! `noc_http_connections_rejected_total{reason}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::tls_stream::{self, ServerTlsStream};
use noc_actors::Metrics;
use tokio::net::TcpStream;

/// Limits of the public listener (`[http]` in the node's configuration).
#[derive(Clone, Debug)]
pub struct PublicLimits {
    /// Deadline of a TLS handshake while handshakes are few.
    pub handshake_timeout: Duration,
    /// Handshakes in progress on the node at once; more are refused.
    pub max_concurrent_handshakes: usize,
    /// Handshakes in progress from one source address.
    pub max_handshakes_per_source: u32,
    /// Open connections from one source address (handshaking or serving).
    pub max_connections_per_source: u32,
    /// Open connections on the node (its share of the open-file limit): the public
    /// listener shares its workers with the device listener, so each caps its own.
    pub max_connections: usize,
}

impl Default for PublicLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(3),
            max_concurrent_handshakes: 4096,
            max_handshakes_per_source: 64,
            max_connections_per_source: 256,
            max_connections: usize::MAX,
        }
    }
}

/// The shortest handshake deadline under pressure: a handful of round trips on a slow
/// mobile network.
const MIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Default)]
struct PerSource {
    connections: u32,
    handshakes: u32,
}

/// Admits connections and runs their TLS handshakes. One per node, shared by the
/// listener's workers.
pub struct PublicAcceptor {
    tls: Arc<rustls::ServerConfig>,
    limits: PublicLimits,
    handshakes: AtomicUsize,
    open: AtomicUsize,
    sources: Mutex<HashMap<IpAddr, PerSource>>,
    metrics: Arc<Metrics>,
}

/// An admitted connection: its source's counts go down when it is dropped.
pub struct Admitted {
    acceptor: Arc<PublicAcceptor>,
    source: IpAddr,
    handshaking: bool,
}

impl Admitted {
    fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.acceptor.handshakes.fetch_sub(1, Ordering::Relaxed);
            self.acceptor.metrics.http_handshakes.dec();
            if let Some(s) = self.acceptor.lock().get_mut(&self.source) {
                s.handshakes = s.handshakes.saturating_sub(1);
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.handshake_done();
        self.acceptor.open.fetch_sub(1, Ordering::Relaxed);
        let mut sources = self.acceptor.lock();
        if let Some(s) = sources.get_mut(&self.source) {
            s.connections = s.connections.saturating_sub(1);
            if s.connections == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

impl PublicAcceptor {
    pub fn new(tls: Arc<rustls::ServerConfig>, limits: PublicLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            tls,
            limits,
            handshakes: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            sources: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, PerSource>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reject(&self, reason: &'static str) -> &'static str {
        self.metrics.http_connection_rejected(reason);
        reason
    }

    /// Admits a new connection from `source` and reserves its handshake, or refuses it.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, &'static str> {
        if self.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(self.reject("connection_limit"));
        }
        let mut sources = self.lock();
        let s = sources.entry(source).or_default();
        if s.connections >= self.limits.max_connections_per_source {
            drop(sources);
            return Err(self.reject("source_connections"));
        }
        if s.handshakes >= self.limits.max_handshakes_per_source {
            drop(sources);
            return Err(self.reject("source_handshakes"));
        }
        if self.handshakes.fetch_add(1, Ordering::Relaxed) >= self.limits.max_concurrent_handshakes {
            self.handshakes.fetch_sub(1, Ordering::Relaxed);
            if s.connections == 0 {
                sources.remove(&source);
            }
            drop(sources);
            return Err(self.reject("handshake_limit"));
        }
        s.connections += 1;
        s.handshakes += 1;
        drop(sources);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.http_handshakes.inc();
        Ok(Admitted { acceptor: self.clone(), source, handshaking: true })
    }

    /// The handshake deadline now: the full one while handshakes are at most half of the
    /// limit, then shorter in proportion, down to [`MIN_HANDSHAKE_TIMEOUT`] at the limit.
    pub fn handshake_timeout(&self) -> Duration {
        deadline(
            self.limits.handshake_timeout,
            self.handshakes.load(Ordering::Relaxed),
            self.limits.max_concurrent_handshakes,
        )
    }

    /// The TLS handshake of an admitted connection, under [`Self::handshake_timeout`].
    pub async fn handshake(&self, tcp: TcpStream, admitted: &mut Admitted) -> Result<ServerTlsStream, &'static str> {
        let _ = tcp.set_nodelay(true);
        let result = tokio::time::timeout(self.handshake_timeout(), tls_stream::accept(tcp, self.tls.clone())).await;
        admitted.handshake_done();
        match result {
            Ok(Ok(accepted)) => Ok(accepted.stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "public TLS handshake failed");
                Err(self.reject("tls_error"))
            }
            Err(_) => Err(self.reject("handshake_timeout")),
        }
    }
}

fn deadline(full: Duration, in_flight: usize, max: usize) -> Duration {
    let floor = full.min(MIN_HANDSHAKE_TIMEOUT);
    let half = max / 2;
    if max == 0 || in_flight <= half {
        return full;
    }
    let pressure = ((in_flight - half) as f64 / (max - half).max(1) as f64).min(1.0);
    let shortened = full.mul_f64(1.0 - pressure);
    shortened.max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acceptor(limits: PublicLimits) -> Arc<PublicAcceptor> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("config");
        PublicAcceptor::new(Arc::new(config), limits, Arc::new(Metrics::new()))
    }

    #[test]
    fn the_deadline_shortens_under_pressure() {
        let full = Duration::from_secs(3);
        assert_eq!(deadline(full, 0, 100), full);
        assert_eq!(deadline(full, 50, 100), full);
        assert_eq!(deadline(full, 75, 100), Duration::from_millis(1500));
        assert_eq!(deadline(full, 100, 100), MIN_HANDSHAKE_TIMEOUT);
        assert_eq!(deadline(full, 1000, 100), MIN_HANDSHAKE_TIMEOUT);
        assert_eq!(deadline(Duration::from_millis(200), 100, 100), Duration::from_millis(200));
    }

    #[test]
    fn sources_are_limited_and_counts_come_back() {
        let a = acceptor(PublicLimits {
            max_concurrent_handshakes: 2,
            max_handshakes_per_source: 2,
            max_connections_per_source: 3,
            ..PublicLimits::default()
        });
        let (one, two): (IpAddr, IpAddr) = ("192.0.2.1".parse().expect("ip"), "192.0.2.2".parse().expect("ip"));
        let mut first = a.admit(one).expect("first");
        let _second = a.admit(one).expect("second");
        assert_eq!(a.admit(one).err(), Some("source_handshakes"));
        first.handshake_done();
        let _third = a.admit(one).expect("a handshake slot came back");
        assert_eq!(a.admit(one).err(), Some("source_connections"), "three open connections");
        assert_eq!(a.admit(two).err(), Some("handshake_limit"), "two handshakes in progress node-wide");
        drop(first);
        assert_eq!(a.metrics.value("noc_http_connections_rejected_total", &[("reason", "source_handshakes")]), 1.0);
        drop(_second);
        drop(_third);
        assert!(a.lock().is_empty(), "a source without connections is forgotten");
        assert_eq!(a.handshakes.load(Ordering::Relaxed), 0);
        assert_eq!(a.metrics.value("noc_http_tls_handshakes", &[]), 0.0);
    }

    #[test]
    fn open_connections_are_capped_node_wide() {
        let a = acceptor(PublicLimits { max_connections: 2, ..PublicLimits::default() });
        let sources: Vec<IpAddr> = (1..=3).map(|i| format!("192.0.2.{i}").parse().expect("ip")).collect();
        let mut first = a.admit(sources[0]).expect("first");
        first.handshake_done();
        let _second = a.admit(sources[1]).expect("second");
        assert_eq!(a.admit(sources[2]).err(), Some("connection_limit"), "a handshake done still counts as open");
        drop(first);
        let _third = a.admit(sources[2]).expect("a closed connection makes room");
        assert_eq!(a.metrics.value("noc_http_connections_rejected_total", &[("reason", "connection_limit")]), 1.0);
    }
}
