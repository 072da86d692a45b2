//! The self-signed certificate generated on first start, so a node serves TLS with zero
//! configuration. Production deployments configure `tls.cert_path`/`tls.key_path`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}: no certificate in file")]
    Empty(PathBuf),
}

/// Paths of the certificate and key to use, generating them in `<data_dir>/tls/` if
/// neither is configured and they do not exist yet.
pub fn ensure(data_dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf, bool), CertError> {
    let dir = data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    crate::data_dir::ensure_private_dir(&dir).map_err(|source| CertError::Io { path: dir.clone(), source })?;
    let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem()).map_err(|source| CertError::Io { path: cert.clone(), source })?;
    Ok((cert, key, true))
}

pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), CertError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|source| CertError::Io { path: path.to_path_buf(), source })?;
    f.write_all(data).map_err(|source| CertError::Io { path: path.to_path_buf(), source })
}

/// SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated hex
/// (the form `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(cert_path: &Path) -> Result<String, CertError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| CertError::Io { path: cert_path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?
        .next()
        .ok_or_else(|| CertError::Empty(cert_path.to_path_buf()))?
        .map_err(|e| CertError::Io { path: cert_path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    let digest = Sha256::digest(der.as_ref());
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// When the first certificate of a PEM file expires (Unix seconds).
pub fn not_after_unix(cert_path: &Path) -> Result<i64, CertError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use x509_cert::der::Decode;
    let io = |e: String| CertError::Io { path: cert_path.to_path_buf(), source: std::io::Error::other(e) };
    let der = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| io(e.to_string()))?
        .next()
        .ok_or_else(|| CertError::Empty(cert_path.to_path_buf()))?
        .map_err(|e| io(e.to_string()))?;
    let cert =
        x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| io(format!("not an X.509 certificate: {e}")))?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    Ok(i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["localhost".to_string()];
        let (cert, key, generated) = ensure(dir.path(), &names).expect("generate");
        assert!(generated);
        let fp = fingerprint(&cert).expect("fingerprint");
        assert_eq!(fp.len(), 32 * 3 - 1);
        let expires = not_after_unix(&cert).expect("expiry");
        let now = noc_protocol::clock::unix_ms_i64() / 1000;
        assert!(expires > now + 86_400 * 365, "rcgen's self-signed certificates last years: {expires}");
        let (_, _, again) = ensure(dir.path(), &names).expect("reuse");
        assert!(!again);
        assert_eq!(fingerprint(&cert).expect("fingerprint"), fp);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
