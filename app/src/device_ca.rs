//! Where the node's device CA comes from (`[device_ca]`): the operator's files, or on a
//! single node with the embedded store one generated in `<data_dir>/device-ca/` on first
//! start and reused after (its key readable by the node's user only).

use std::path::Path;
use std::sync::Arc;

use noc_ca::DeviceCa;

use crate::config::Config;
use crate::error::NodeError;

fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|e| NodeError::Startup(format!("device CA {}: {e}", path.display())))
}

/// The device CA, or `None` where the node issues no device certificates (PostgreSQL
/// without `[device_ca]` files: a generated CA would differ from node to node).
pub(crate) fn load(config: &Config) -> Result<Option<Arc<DeviceCa>>, NodeError> {
    let bad = |e: noc_ca::CaError| NodeError::Startup(format!("device CA: {e}"));
    if let (Some(cert), Some(key)) = (&config.device_ca.cert_path, &config.device_ca.key_path) {
        return Ok(Some(Arc::new(DeviceCa::from_pem(&read(cert)?, &read(key)?).map_err(bad)?)));
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
}
