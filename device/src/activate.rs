//! Device activation (docs/protocol.md §5.2, white paper §7.2.1): MSISDN and account
//! password over HTTPS for a device id, a credential and the device channel's address.

use std::path::{Path, PathBuf};

use noc_crypto::{Fingerprint, Suite};
use noc_protocol::rts::{DeviceActivationRequest, DeviceActivationResponse, ErrorReply, Secret};

use crate::error::DeviceError;
use crate::state::{CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, DeviceState, MANAGEMENT_ROOT_FILE};

/// What activation needs.
#[derive(Clone)]
pub struct Activation {
    /// `https://relay.example.net:8443`
    pub relay_url: String,
    /// The relay's trust anchor (a self-signed relay certificate); `None`: the web PKI.
    pub ca_file: Option<PathBuf>,
    pub msisdn: String,
    pub password: String,
    pub device_name: Option<String>,
    pub device_type: Option<String>,
    /// The VES key fingerprint from the welcome e-mail.
    pub ves_fingerprint: Fingerprint,
    /// The user's address (optional; `From` of composed mail).
    pub email: Option<String>,
    /// Suites to offer, preferred first.
    pub suites: Vec<Suite>,
    /// Ask for a client certificate too: a key pair is made here (ECDSA P-256) and only
    /// its certificate request is sent (seed 001).
    pub certificate: bool,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("relay_url", &self.relay_url)
            .field("msisdn", &self.msisdn)
            .field("password", &"***")
            .field("ves_fingerprint", &self.ves_fingerprint)
            .finish_non_exhaustive()
    }
}

/// An HTTP client for the relay's public listener (HTTP/1.1 only, as the relay speaks).
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, DeviceError> {
    let tls = noc_tls::client_config(ca_file, &[b"http/1.1"]).map_err(noc_endpoint::EndpointError::from)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        // Given up before the relay closes it (docs/protocol.md §8).
        .pool_idle_timeout(noc_protocol::rts::CLIENT_POOL_IDLE)
        .build()
        .map_err(|e| DeviceError::Network(e.to_string()))
}

/// Activates a device and writes the state directory. An existing activation in `dir` is
/// replaced (the relay keeps the older device valid until the user's password changes).
pub async fn activate(dir: &Path, a: &Activation) -> Result<DeviceState, DeviceError> {
    if a.suites.is_empty() {
        return Err(DeviceError::invalid("suites", "at least one suite is required"));
    }
    let base = a.relay_url.trim_end_matches('/');
    if !base.starts_with("https://") {
        return Err(DeviceError::invalid("relay URL", "must start with https://"));
    }
    let http = http_client(a.ca_file.as_deref())?;
    let key = match a.certificate {
        true => Some(rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(certificate_error)?),
        false => None,
    };
    let csr = match &key {
        Some(key) => Some(
            rcgen::CertificateParams::default()
                .serialize_request(key)
                .and_then(|r| r.pem())
                .map_err(certificate_error)?,
        ),
        None => None,
    };
    let req = DeviceActivationRequest {
        msisdn: a.msisdn.clone(),
        password: Secret(a.password.clone()),
        device_name: a.device_name.clone(),
        device_type: a.device_type.clone().or_else(|| Some("noc-device".into())),
        csr,
    };
    let resp = http
        .post(format!("{base}/device/v1/activate"))
        .json(&req)
        .send()
        .await
        .map_err(|e| DeviceError::Network(format!("{base}: {}", noc_endpoint::cli::report(&e))))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| DeviceError::Network(e.to_string()))?;
    if !(200..300).contains(&status) {
        let reply = ErrorReply::parse(&body);
        return Err(DeviceError::Api { status, code: reply.code_text, message: reply.message });
    }
    let act: DeviceActivationResponse = serde_json::from_slice(&body)
        .map_err(|e| DeviceError::Network(format!("unexpected activation answer: {e}")))?;
    noc_endpoint::fsutil::ensure_private_dir(dir)?;
    if let Some(ca) = &a.ca_file {
        let pem = std::fs::read(ca).map_err(|e| noc_endpoint::EndpointError::Io { path: ca.clone(), source: e })?;
        noc_endpoint::fsutil::write_private(&dir.join(CA_FILE), &pem)?;
    }
    let has_client_certificate = match (key, &act.client_certificate, &act.management_root) {
        (Some(key), Some(cert), Some(root)) => {
            noc_endpoint::fsutil::write_private(&dir.join(CLIENT_KEY_FILE), key.serialize_pem().as_bytes())?;
            noc_endpoint::fsutil::write_private(&dir.join(CLIENT_CERT_FILE), cert.as_bytes())?;
            noc_endpoint::fsutil::write_private(&dir.join(MANAGEMENT_ROOT_FILE), root.as_bytes())?;
            true
        }
        (Some(_), _, _) => {
            return Err(DeviceError::Network("the relay answered without the client certificate asked for".into()));
        }
        _ => false,
    };
    let state = DeviceState {
        relay_url: base.to_owned(),
        device_id: act.device_id,
        credential: act.device_credential.clone(),
        device_host: act.device_host.clone(),
        device_port: act.device_port,
        user_id: act.user_id,
        full_name: act.full_name.clone(),
        service_type: act.service_type.clone(),
        email: a.email.clone(),
        ves_fingerprint: a.ves_fingerprint.to_string(),
        suites: a.suites.iter().map(|s| s.name().to_owned()).collect(),
        has_ca_file: a.ca_file.is_some(),
        activated_at_ms: noc_protocol::clock::unix_ms_i64(),
        has_client_certificate,
    };
    state.save(dir)?;
    Ok(state)
}

fn certificate_error(e: rcgen::Error) -> DeviceError {
    DeviceError::invalid("client certificate", e.to_string())
}
