//! The device's state directory: what activation returned (device id, credential, where
//! the device channel is), the pinned VES fingerprint, the relay's trust anchor, and the
//! SQLite store with the inbox and outbox.
//!
//! ```text
//! <dir>/            0700
//!   device.json     0600  DeviceState (the credential is a secret)
//!   ca.pem          0600  the relay CA given at activation, if any
//!   device.db       items received (readable offline) and the outbox
//! ```

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use noc_crypto::{Fingerprint, Suite};
use noc_endpoint::fsutil::{ensure_private_dir, write_private};
use noc_protocol::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

use crate::error::DeviceError;

pub const STATE_FILE: &str = "device.json";
pub const CA_FILE: &str = "ca.pem";
/// The device's client certificate key (made here, never sent), its certificate and the
/// management root that signed it, when it activated with a certificate request.
pub const CLIENT_KEY_FILE: &str = "client-key.pem";
pub const CLIENT_CERT_FILE: &str = "client-cert.pem";
pub const MANAGEMENT_ROOT_FILE: &str = "management-root.pem";
pub const DB_FILE: &str = "device.db";

/// Everything the device keeps about its activation.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    /// Base URL of the relay's public HTTPS listener (activation).
    pub relay_url: String,
    pub device_id: DeviceId,
    /// 64 hex digits; sent hex-decoded in AUTH_TOKEN. Secret.
    pub credential: String,
    /// Where the device channel listens (from activation).
    pub device_host: String,
    pub device_port: u16,
    pub user_id: UserId,
    pub full_name: String,
    pub service_type: String,
    /// The user's address, if given at activation (used as `From` of composed mail).
    #[serde(default)]
    pub email: Option<String>,
    /// The VES key fingerprint from the welcome e-mail, pinned for every session.
    pub ves_fingerprint: String,
    /// Suites offered in WakeUp, preferred first (default `["modern"]`).
    pub suites: Vec<String>,
    /// Whether a relay CA was given at activation (`ca.pem` beside this file); without it
    /// the public web PKI is trusted.
    pub has_ca_file: bool,
    pub activated_at_ms: i64,
    /// Whether the relay issued a client certificate ([`CLIENT_CERT_FILE`] beside this
    /// file).
    #[serde(default)]
    pub has_client_certificate: bool,
}

/// A certificate (DER) as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The device's client certificate (from the relay's device CA) and its private key.
pub struct ClientCertificate {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// Lowercase hex.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl ClientCertificate {
    /// Whether it is still valid at `now` (unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        now < self.not_after
    }
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("relay_url", &self.relay_url)
            .field("device_id", &self.device_id)
            .field("credential", &"***")
            .field("device_host", &self.device_host)
            .field("device_port", &self.device_port)
            .field("ves_fingerprint", &self.ves_fingerprint)
            .field("suites", &self.suites)
            .finish_non_exhaustive()
    }
}

impl DeviceState {
    /// The pinned fingerprint, parsed.
    pub fn fingerprint(&self) -> Result<Fingerprint, DeviceError> {
        Ok(Fingerprint::parse(&self.ves_fingerprint)?)
    }

    /// The suites to offer, parsed.
    pub fn suites(&self) -> Result<Vec<Suite>, DeviceError> {
        self.suites.iter().map(|s| s.parse::<Suite>().map_err(DeviceError::from)).collect()
    }

    /// The raw credential bytes for AUTH_TOKEN.
    pub fn credential_bytes(&self) -> Result<Vec<u8>, DeviceError> {
        hex::decode(&self.credential).map_err(|e| DeviceError::invalid("device credential", e.to_string()))
    }

    /// Reads `<dir>/device.json`.
    pub fn load(dir: &Path) -> Result<Self, DeviceError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DeviceError::NotActivated(dir.to_path_buf()));
            }
            Err(e) => return Err(noc_endpoint::EndpointError::Io { path, source: e }.into()),
        };
        let state: DeviceState = serde_json::from_str(&text)
            .map_err(|e| DeviceError::BadState { path: path.clone(), reason: e.to_string() })?;
        state.fingerprint()?;
        state.suites()?;
        state.credential_bytes()?;
        Ok(state)
    }

    /// Writes `<dir>/device.json` with mode 0600 (the directory 0700).
    pub fn save(&self, dir: &Path) -> Result<(), DeviceError> {
        ensure_private_dir(dir)?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| DeviceError::BadState { path: dir.join(STATE_FILE), reason: e.to_string() })?;
        write_private(&dir.join(STATE_FILE), &json)?;
        Ok(())
    }

    /// The client certificate the relay issued at activation, with its key, if it did.
    pub fn client_certificate(&self, dir: &Path) -> Result<Option<ClientCertificate>, DeviceError> {
        if !self.has_client_certificate {
            return Ok(None);
        }
        let bad = |file: &str, reason: String| DeviceError::BadState { path: dir.join(file), reason };
        let cert = CertificateDer::from_pem_file(dir.join(CLIENT_CERT_FILE))
            .map_err(|e| bad(CLIENT_CERT_FILE, e.to_string()))?;
        let key =
            PrivateKeyDer::from_pem_file(dir.join(CLIENT_KEY_FILE)).map_err(|e| bad(CLIENT_KEY_FILE, e.to_string()))?;
        let identity = noc_ca::DeviceIdentity::from_der(&cert).map_err(|e| bad(CLIENT_CERT_FILE, e.to_string()))?;
        if identity.device != self.device_id {
            return Err(bad(CLIENT_CERT_FILE, "the certificate names another device".into()));
        }
        Ok(Some(ClientCertificate { cert, key, serial: identity.serial, not_after: identity.not_after }))
    }

    /// The CA file to trust for this relay, if one was given.
    pub fn ca_path(&self, dir: &Path) -> Option<PathBuf> {
        self.has_ca_file.then(|| dir.join(CA_FILE))
    }
}
