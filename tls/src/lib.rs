//! The TLS client configuration of every client of the relay: the VES agent (HTTPS), the
//! device client (the device channel), the load tool and the test peers.
//!
//! One builder keeps them alike: rustls with the *ring* provider (the workspace keeps
//! aws-lc out of the build), TLS 1.2 and 1.3, no client certificate (a device that holds
//! one from the relay's device CA presents it: [`client_config_with_certificate`]), session tickets kept
//! in rustls's default in-memory cache (a reconnecting client resumes, as a real device
//! would), trusting either the certificates of a CA file (the relay's self-signed
//! certificate, an enterprise CA) or, without one, the Mozilla roots of `webpki-roots`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    /// The CA file cannot be read, holds something else than PEM certificates, or none.
    #[error("{path}: {message}")]
    CaFile { path: PathBuf, message: String },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The root store: every certificate of `ca_file`, or the public web PKI without one.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let err = |message: String| TlsError::CaFile { path: path.to_path_buf(), message };
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
        roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(roots)
}

/// A client configuration trusting [`root_store`]`(ca_file)`, offering the ALPN protocols
/// `alpn` (`http/1.1` for HTTPS; none on the device channel).
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// As [`client_config`], presenting `chain` (the client's certificate first) with `key`
/// when the server asks for a client certificate.
pub fn client_config_with_certificate(
    ca_file: Option<&Path>,
    alpn: &[&[u8]],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_file)?)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_is_the_only_trust_anchor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.cert.pem()).expect("write");
        assert_eq!(root_store(Some(&path)).expect("roots").len(), 1);
        let config = client_config(Some(&path), &[b"http/1.1"]).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Without a file: the public roots.
        assert!(root_store(None).expect("web PKI").len() > 100);
    }

    #[test]
    fn unusable_ca_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let e = client_config(Some(&missing), &[]).expect_err("missing file");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = root_store(Some(&empty)).expect_err("no certificate");
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
