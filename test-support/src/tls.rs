use std::path::Path;

use rustls::ClientConfig;

/// A TLS acceptor for a test HTTPS server, with a certificate of its own (naming
/// `localhost` and `127.0.0.1`) made in `dir`; the certificate's path is its clients'
/// trust anchor.
pub fn test_server(dir: &Path) -> anyhow::Result<(tokio_rustls::TlsAcceptor, std::path::PathBuf)> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_path, key_path, _) = noc_app::cert::ensure(dir, &["localhost".into(), "127.0.0.1".into()])?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key_path)?;
    let mut server =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)), cert_path))
}

/// A TLS client configuration that trusts exactly the certificates in `cert_pem` (the
/// relay's self-signed certificate): the clients' own builder, `noc_tls::client_config`.
pub fn client_config(cert_pem: &Path, alpn: &[&[u8]]) -> anyhow::Result<ClientConfig> {
    Ok(noc_tls::client_config(Some(cert_pem), alpn)?)
}
