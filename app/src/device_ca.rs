//! Where the node's device CA comes from (`[device_ca]`): the operator's files, or on a
//! single node with the embedded store one generated in `<data_dir>/device-ca/` on first
//! start and reused after (its key readable by the node's user only).

use std::path::Path;
use std::sync::Arc;

use noc_ca::DeviceCa;

use crate::config::Config;
use crate::error::NodeError;

fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|e| NodeError::DeviceCa(format!("{}: {e}", path.display())))
}

/// The device CA, or `None` where the node issues no device certificates (PostgreSQL
/// without `[device_ca]` files: a generated CA would differ from node to node).
pub(crate) fn load(config: &Config) -> Result<Option<Arc<DeviceCa>>, NodeError> {
    let bad = |e: noc_ca::CaError| NodeError::DeviceCa(e.to_string());
    if let (Some(cert), Some(key)) = (&config.device_ca.cert_path, &config.device_ca.key_path) {
        let ca = DeviceCa::from_pem(&read(cert)?, &read(key)?).map_err(bad)?;
        if ca.not_after() <= noc_protocol::clock::unix_ms_i64() / 1000 {
            // It still loads (devices activate with credentials), but issues nothing.
            tracing::warn!(path = %cert.display(), "the device CA has expired: no device certificates until it is replaced");
        }
        return Ok(Some(Arc::new(ca)));
    }
    if config.postgres_url.is_some() {
        tracing::info!("no [device_ca] files: devices activate with credentials only (no client certificates)");
        return Ok(None);
    }
    let dir = config.data_dir.join("device-ca");
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if cert.exists() && key.exists() {
        return Ok(Some(Arc::new(DeviceCa::from_pem(&read(&cert)?, &read(&key)?).map_err(bad)?)));
    }
    crate::data_dir::ensure_private_dir(&dir).map_err(|source| NodeError::DataDir { path: dir.clone(), source })?;
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let (ca, key_pem) = DeviceCa::generate("NOC device CA", now).map_err(bad)?;
    crate::cert::write_private(&key, key_pem.as_bytes())?;
    std::fs::write(&cert, ca.root_pem()).map_err(|source| NodeError::DataDir { path: cert.clone(), source })?;
    tracing::info!(path = %cert.display(), "generated the device CA");
    Ok(Some(Arc::new(ca)))
}

/// Makes a new device CA named `name` for the operator: `tls.crt` and `tls.key` (mode
/// 0600) in `dir`, the layout of a Kubernetes TLS Secret. Refuses to overwrite.
pub fn create_files(dir: &Path, name: &str) -> Result<(std::path::PathBuf, std::path::PathBuf), NodeError> {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    for path in [&cert, &key] {
        if path.exists() {
            return Err(NodeError::DeviceCa(format!("{} exists; choose an empty directory", path.display())));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir { path: dir.to_path_buf(), source })?;
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let (ca, key_pem) = DeviceCa::generate(name, now).map_err(|e| NodeError::DeviceCa(e.to_string()))?;
    crate::cert::write_private(&key, key_pem.as_bytes())?;
    std::fs::write(&cert, ca.root_pem()).map_err(|source| NodeError::DataDir { path: cert.clone(), source })?;
    Ok((cert, key))
}

/// What an operator checks before handing a CA to the nodes: that the files load as the
/// nodes will load them, when the certificate expires, and its SHA-256 fingerprint.
pub fn describe(cert: &Path, key: &Path) -> Result<String, NodeError> {
    let ca = DeviceCa::from_pem(&read(cert)?, &read(key)?).map_err(|e| NodeError::DeviceCa(e.to_string()))?;
    let fingerprint = crate::cert::fingerprint(cert)?;
    let (y, m, d) = noc_protocol::clock::civil_from_days(ca.not_after().div_euclid(86_400));
    Ok(format!(
        "device CA {}
  expires     {y:04}-{m:02}-{d:02} (unix {})
  SHA-256     {fingerprint}
",
        cert.display(),
        ca.not_after()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ca_is_kept_and_a_cluster_without_files_has_none() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let first = load(&config).expect("load").expect("generated");
        let again = load(&config).expect("load").expect("reused");
        assert_eq!(first.root_der(), again.root_der(), "the same CA after a restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("device-ca/ca-key.pem")).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The operator's files, given explicitly, are what a cluster uses.
        let files = Config {
            postgres_url: Some(crate::config::SecretString::new("postgres://x")),
            device_ca: crate::config::DeviceCaConfig {
                cert_path: Some(dir.path().join("device-ca/ca.pem")),
                key_path: Some(dir.path().join("device-ca/ca-key.pem")),
            },
            ..Config::default()
        };
        assert_eq!(load(&files).expect("files").expect("ca").root_der(), first.root_der());
        let cluster = Config { device_ca: crate::config::DeviceCaConfig::default(), ..files };
        assert!(load(&cluster).expect("cluster").is_none());
        let missing = Config {
            device_ca: crate::config::DeviceCaConfig {
                cert_path: Some(dir.path().join("nope.pem")),
                key_path: Some(dir.path().join("nope.key")),
            },
            ..Config::default()
        };
        assert!(load(&missing).is_err());
    }

    #[test]
    fn an_operator_makes_a_ca_that_nodes_load_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("secret");
        let (cert, key) = create_files(&out, "Example device CA").expect("create");
        let text = describe(&cert, &key).expect("describe");
        assert!(text.contains("expires") && text.contains("SHA-256"), "{text}");
        let config = Config {
            device_ca: crate::config::DeviceCaConfig { cert_path: Some(cert.clone()), key_path: Some(key.clone()) },
            ..Config::default()
        };
        assert!(load(&config).expect("load").is_some());
        assert!(create_files(&out, "again").is_err(), "an existing CA is never replaced");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
        }
    }
}
