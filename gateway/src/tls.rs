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
}

/// Builds a TLS 1.2/1.3 server config for `alpn` protocols.
pub fn server_config(cert_path: &Path, key_path: &Path, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs { path: cert_path.display().to_string(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts(cert_path.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|source| TlsError::Key { path: key_path.display().to_string(), source })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
