//! Sockets and TLS for many sessions from one process: the trust anchor, source
//! addresses, and the open-file limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::ClientConfig;
use thiserror::Error;
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Error)]
pub enum NetError {
    #[error("trust anchor: {0}")]
    TrustAnchor(#[from] noc_tls::TlsError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("a device's client certificate or key: {0}")]
    ClientCertificate(String),
    #[error("invalid --source-ips {0:?}: expected addresses or ranges like 127.0.0.1-127.0.0.8, comma-separated")]
    SourceIps(String),
}

/// A TLS client configuration that trusts exactly the certificates in `ca_pem` (the relay
/// generates a self-signed one by default).
pub fn client_config(ca_pem: &Path, alpn: &[&[u8]]) -> Result<ClientConfig, NetError> {
    Ok(noc_tls::client_config(Some(ca_pem), alpn)?)
}

/// Builds the TLS configurations of devices that present a client certificate: one per
/// device (rustls picks the certificate per configuration), sharing the trust anchor.
/// Resumption is off so that every reconnect is a full handshake with the certificate,
/// which is what a reconnect storm measures (token devices share a 256-session cache, so
/// theirs are nearly all full handshakes too).
pub struct CertificateConfigs {
    roots: std::sync::Arc<rustls::RootCertStore>,
}

impl CertificateConfigs {
    pub fn new(ca_pem: &Path) -> Result<Self, NetError> {
        Ok(Self { roots: std::sync::Arc::new(noc_tls::root_store(Some(ca_pem))?) })
    }

    /// The configuration of a device holding `cert_pem` with `key_pem`.
    pub fn device(&self, cert_pem: &str, key_pem: &str) -> Result<ClientConfig, NetError> {
        use rustls_pki_types::pem::PemObject;
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| NetError::ClientCertificate(e.to_string()))?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| NetError::ClientCertificate(e.to_string()))?;
        let mut config =
            ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(self.roots.clone())
                .with_client_auth_cert(vec![cert], key)?;
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }
}

/// Parses `127.0.0.1,127.0.0.5-127.0.0.8` into a list of addresses.
pub fn parse_source_ips(spec: &str) -> Result<Vec<IpAddr>, NetError> {
    let err = || NetError::SourceIps(spec.to_string());
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a.trim().parse().map_err(|_| err())?;
                let b: Ipv4Addr = b.trim().parse().map_err(|_| err())?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || b - a > 65_535 {
                    return Err(err());
                }
                out.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
            None => out.push(part.parse().map_err(|_| err())?),
        }
    }
    if out.is_empty() {
        return Err(err());
    }
    Ok(out)
}

/// Spreads outgoing connections over several source addresses, so that one process can
/// open more connections to one relay port than one address has ephemeral ports.
pub struct SourceIps {
    ips: Vec<IpAddr>,
    next: AtomicUsize,
}

impl SourceIps {
    pub fn new(ips: Vec<IpAddr>) -> Self {
        Self { ips, next: AtomicUsize::new(0) }
    }

    /// The source address for the next connection, if any were given.
    pub fn next(&self) -> Option<IpAddr> {
        if self.ips.is_empty() {
            return None;
        }
        Some(self.ips[self.next.fetch_add(1, Ordering::Relaxed) % self.ips.len()])
    }

    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// Opens a TCP connection to `to` from the next source address, without Nagle's
    /// delay (frames are small and latency-sensitive).
    pub async fn connect(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = self.next() {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(to).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Raises the open-file limit (one descriptor per session): to the kernel's maximum when
/// the process may raise its hard limit (root), else the soft limit to the hard one.
/// Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let Some(hard) = current.maximum else {
        setrlimit(Resource::Nofile, Rlimit { current: None, maximum: None })?;
        return Ok(u64::MAX);
    };
    let kernel_max =
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(hard);
    if kernel_max > hard
        && setrlimit(Resource::Nofile, Rlimit { current: Some(kernel_max), maximum: Some(kernel_max) }).is_ok()
    {
        return Ok(kernel_max);
    }
    if current.current != Some(hard) {
        setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) })?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_ranges_expand() {
        let ips = parse_source_ips("127.0.0.1, 127.0.0.5-127.0.0.7").expect("valid");
        let want: Vec<IpAddr> =
            ["127.0.0.1", "127.0.0.5", "127.0.0.6", "127.0.0.7"].iter().map(|s| s.parse().expect("ip")).collect();
        assert_eq!(ips, want);
        assert!(parse_source_ips("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_source_ips("nope").is_err());
        assert!(parse_source_ips("").is_err());
        let s = SourceIps::new(ips);
        let picks: Vec<_> = (0..5).filter_map(|_| s.next()).collect();
        assert_eq!(picks[0], picks[4], "round robin");
    }

    #[test]
    fn nofile_limit_is_raised() {
        let n = raise_nofile_limit().expect("setrlimit");
        assert!(n >= 1024);
    }
}
