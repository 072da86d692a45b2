//! rustls server configuration from PEM files. Only the `ring` provider is compiled in.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate chain {path}: {source}")]
    Certs { path: String, source: rustls_pki_types::pem::Error },
    #[error("certificate file {0} holds no certificate")]
    NoCerts(String),
    #[error("reading private key {path}: {source}")]
    Key { path: String, source: rustls_pki_types::pem::Error },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("device CA as a client-certificate trust anchor: {0}")]
    ClientVerifier(String),
}

/// Builds a TLS 1.2/1.3 server config for `alpn` protocols. TLS 1.3 connections continue
/// on the relay's own record layer once the handshake is done (`tls_stream`), which needs
/// rustls to hand the traffic keys over.
pub fn server_config(cert_path: &Path, key_path: &Path, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = build(cert_path, key_path, alpn, None)?;
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The device channel's server config. With the device CA's root, a client certificate is
/// asked for but not required: a device that presents one must present one the device CA
/// issued, in its validity period, for clientAuth (rustls/webpki check that, and refuse
/// the handshake otherwise); a device without one authenticates with its credential
/// (docs/protocol.md §6.3.2).
pub fn device_server_config(
    cert_path: &Path,
    key_path: &Path,
    device_ca_root: Option<&CertificateDer<'static>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = build(cert_path, key_path, &[], device_ca_root)?;
    // As for `server_config`.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

fn build(
    cert_path: &Path,
    key_path: &Path,
    alpn: &[&[u8]],
    client_root: Option<&CertificateDer<'static>>,
) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs { path: cert_path.display().to_string(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts(cert_path.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|source| TlsError::Key { path: key_path.display().to_string(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_root {
        None => builder.with_no_client_auth(),
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root.clone())?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientVerifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
