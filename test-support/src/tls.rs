use std::path::Path;

use rustls::ClientConfig;

/// A TLS client configuration that trusts exactly the certificates in `cert_pem` (the
/// relay's self-signed certificate): the clients' own builder, `noc_tls::client_config`.
pub fn client_config(cert_pem: &Path, alpn: &[&[u8]]) -> anyhow::Result<ClientConfig> {
    Ok(noc_tls::client_config(Some(cert_pem), alpn)?)
}
