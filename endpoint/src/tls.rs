//! TLS client configuration shared by the agent (HTTPS to the relay) and the device (TLS
//! to the device channel): rustls with the *ring* provider — the workspace keeps aws-lc out
//! of the build — trusting either the CA file the operator gave (a self-signed relay
//! certificate, an enterprise CA) or, without one, the Mozilla roots of `webpki-roots`.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::EndpointError;

/// The root store: every certificate of `ca_file`, or the public web PKI without one.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, EndpointError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| EndpointError::Tls(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| EndpointError::Tls(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| EndpointError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(EndpointError::Tls(format!("{}: no certificate in file", path.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// A client configuration (TLS 1.2 and 1.3) with the given ALPN protocols.
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<ClientConfig, EndpointError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| EndpointError::Tls(e.to_string()))?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
