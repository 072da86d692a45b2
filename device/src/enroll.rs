//! Enterprise certificate enrollment, the device side (seed 002; docs/endpoints.md §10.4):
//! the device asks its VES for a certificate under a CA profile, makes the key pair when
//! the VES sends the subject, sends the PKCS#10 request, and stores the certificate, its
//! chain and the key when the VES sends them — after checking that the certificate is for
//! that key. Everything goes through the end-to-end link like mail; the relay sees none of
//! it.
//!
//! ```text
//! <state dir>/enterprise/           0700
//!   <request id>.json               0600  where the enrollment stands (EnrollmentRecord)
//!   <request id>-key.pem            0600  the key made for it, until issued
//!   <profile>-key.pem               0600  the key of the profile's current certificate
//!   <profile>-chain.pem             0600  the certificate, then its CA certificates
//! ```

use std::path::{Path, PathBuf};

use noc_endpoint::enroll::{CertificateRequest, CertificateStatus, EnrollState};
use noc_endpoint::fsutil::{ensure_private_dir, write_private};
use noc_endpoint::item::{Item, ItemId, ItemType};
use noc_endpoint::link::VES_PEER;
use noc_endpoint::store::{FullPolicy, QueueLimits, Store};
use serde::{Deserialize, Serialize};

use crate::error::DeviceError;

/// The directory under the state directory.
pub const DIR: &str = "enterprise";

/// Where one enrollment stands, as the device keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnrollmentRecord {
    pub request_id: String,
    pub profile: String,
    /// `requested` (asked for the subject), `submitted` (the request went out), or the
    /// last state the VES sent: `queued`, `approved`, `issued`, `rejected`, `failed`.
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
    /// When issued: the certificate's expiry (unix seconds) and serial (lowercase hex).
    #[serde(default)]
    pub not_after: Option<i64>,
    #[serde(default)]
    pub serial: Option<String>,
    /// The enrollment started when the VES said this certificate expires soon.
    #[serde(default)]
    pub renewed_by: Option<String>,
    pub updated_ms: i64,
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

fn record_path(state_dir: &Path, request_id: &str) -> PathBuf {
    dir(state_dir).join(format!("{request_id}.json"))
}

fn save(state_dir: &Path, record: &EnrollmentRecord) -> Result<(), DeviceError> {
    ensure_private_dir(&dir(state_dir))?;
    let json = serde_json::to_vec_pretty(record).map_err(|e| DeviceError::invalid("enrollment", e.to_string()))?;
    write_private(&record_path(state_dir, &record.request_id), &json)?;
    Ok(())
}

fn load(state_dir: &Path, request_id: &str) -> Option<EnrollmentRecord> {
    let text = std::fs::read(record_path(state_dir, request_id)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn now_ms() -> i64 {
    noc_protocol::clock::unix_ms_i64()
}

/// Queues a `certificate-request` for the VES.
fn send(store: &Store, request: &CertificateRequest) -> Result<(), DeviceError> {
    let body = serde_json::to_vec(request).map_err(|e| DeviceError::invalid("enrollment", e.to_string()))?;
    let item = Item::new(ItemType::CertificateRequest, Some(request.request_id.clone()), body);
    let limits = QueueLimits { max_items: 1000, ttl_ms: 7 * 86_400_000, policy: FullPolicy::Refuse };
    let ty = ItemType::CertificateRequest.as_str();
    store.enqueue(VES_PEER, ItemId::random(), ty, &item.encode()?, limits, now_ms())?;
    Ok(())
}

/// Starts an enrollment under `profile`: asks the VES for the subject. Returns the record.
pub fn start(state_dir: &Path, store: &Store, profile: &str) -> Result<EnrollmentRecord, DeviceError> {
    let request_id = ItemId::random().to_string();
    let request = CertificateRequest { request_id: request_id.clone(), profile: profile.to_string(), csr: None };
    // The same checks the VES makes, before anything is queued.
    CertificateRequest::parse(&serde_json::to_vec(&request).unwrap_or_default())
        .map_err(|e| DeviceError::invalid("profile", e.to_string()))?;
    let record = EnrollmentRecord {
        request_id,
        profile: profile.to_string(),
        state: "requested".into(),
        message: None,
        not_after: None,
        serial: None,
        renewed_by: None,
        updated_ms: now_ms(),
    };
    save(state_dir, &record)?;
    send(store, &request)?;
    Ok(record)
}

/// Every enrollment this device made, newest first.
pub fn list(state_dir: &Path) -> Result<Vec<EnrollmentRecord>, DeviceError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir(state_dir)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(noc_endpoint::EndpointError::Io { path: dir(state_dir), source: e }.into()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "json")
            && let Some(r) = std::fs::read(&path).ok().and_then(|t| serde_json::from_slice(&t).ok())
        {
            out.push(r);
        }
    }
    out.sort_by_key(|r: &EnrollmentRecord| std::cmp::Reverse(r.updated_ms));
    Ok(out)
}

/// The files of a profile's current certificate: `(chain, key)`.
pub fn certificate_files(state_dir: &Path, profile: &str) -> (PathBuf, PathBuf) {
    (dir(state_dir).join(format!("{profile}-chain.pem")), dir(state_dir).join(format!("{profile}-key.pem")))
}

/// A `certificate-status` from the VES. Statuses of enrollments this device did not start,
/// or that are already over, are ignored.
pub fn on_status(state_dir: &Path, store: &Store, body: &[u8]) -> Result<(), DeviceError> {
    let status =
        CertificateStatus::parse(body).map_err(|e| DeviceError::invalid("certificate-status", e.to_string()))?;
    let Some(mut record) = load(state_dir, &status.request_id) else {
        tracing::warn!(request_id = %status.request_id, "a certificate status for no enrollment of this device");
        return Ok(());
    };
    if record.profile != status.profile {
        return Ok(());
    }
    let about_issued = matches!(status.state, EnrollState::Renew | EnrollState::Revoked);
    let over = matches!(record.state.as_str(), "issued" | "rejected" | "failed" | "revoked");
    if over && !(about_issued && record.state == "issued") {
        return Ok(());
    }
    record.message = status.message.clone();
    record.updated_ms = now_ms();
    match status.state {
        EnrollState::Renew => {
            // Seed 002: the expiry is watched; a new key and certificate replace this one.
            if record.renewed_by.is_none() {
                let next = start(state_dir, store, &record.profile)?;
                tracing::info!(profile = %record.profile, request_id = %next.request_id, "enterprise certificate renewal started");
                record.renewed_by = Some(next.request_id);
            }
        }
        EnrollState::Revoked => {
            record.state = "revoked".into();
            // The profile's files go if they are this certificate (a renewal may have
            // replaced them already).
            let (chain, key) = certificate_files(state_dir, &record.profile);
            if record.serial.is_some() && current_serial(&chain) == record.serial {
                let _ = std::fs::remove_file(&chain);
                let _ = std::fs::remove_file(&key);
            }
            tracing::warn!(profile = %record.profile, request_id = %record.request_id, "enterprise certificate revoked");
        }
        EnrollState::Subject if record.state == "requested" => {
            // Seed 002 steps 1–6: the key pair is made here, for the subject the VES sent.
            let subject: Vec<(String, String)> =
                status.subject.iter().map(|a| (a.kind.clone(), a.value.clone())).collect();
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = noc_ca::subject::to_rcgen(&subject)
                .map_err(|e| DeviceError::invalid("certificate subject", e.to_string()))?;
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
            let csr = params.serialize_request(&key).and_then(|r| r.pem()).map_err(invalid)?;
            ensure_private_dir(&dir(state_dir))?;
            write_private(
                &dir(state_dir).join(format!("{}-key.pem", record.request_id)),
                key.serialize_pem().as_bytes(),
            )?;
            let request = CertificateRequest {
                request_id: record.request_id.clone(),
                profile: record.profile.clone(),
                csr: Some(csr),
            };
            send(store, &request)?;
            record.state = "submitted".into();
        }
        EnrollState::Subject => return Ok(()), // a resend of the subject: already answered
        EnrollState::Issued => {
            let key_path = dir(state_dir).join(format!("{}-key.pem", record.request_id));
            let chain = status.chain.clone().unwrap_or_default();
            match check_issued(&key_path, &chain) {
                Ok((not_after, serial)) => {
                    let (chain_path, profile_key) = certificate_files(state_dir, &record.profile);
                    write_private(&chain_path, chain.as_bytes())?;
                    std::fs::rename(&key_path, &profile_key)
                        .map_err(|e| noc_endpoint::EndpointError::Io { path: profile_key.clone(), source: e })?;
                    record.state = "issued".into();
                    record.not_after = Some(not_after);
                    record.serial = Some(serial);
                    tracing::info!(profile = %record.profile, request_id = %record.request_id, "enterprise certificate stored");
                }
                Err(why) => {
                    tracing::error!(request_id = %record.request_id, %why, "issued certificate refused");
                    record.state = "failed".into();
                    record.message = Some(why);
                }
            }
        }
        other => {
            record.state = other.as_str().into();
            if other.is_final() {
                let _ = std::fs::remove_file(dir(state_dir).join(format!("{}-key.pem", record.request_id)));
            }
        }
    }
    save(state_dir, &record)
}

/// The serial of the first certificate of the chain file at `path`.
fn current_serial(path: &Path) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    let leaf = rustls_pki_types::CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    noc_ca::crl::serial_of(&leaf)
}

/// The issued chain's first certificate must be for the key made for the request; its
/// expiry and serial.
fn check_issued(key_path: &Path, chain: &str) -> Result<(i64, String), String> {
    use rustls_pki_types::pem::PemObject;
    let key_pem = std::fs::read_to_string(key_path).map_err(|e| format!("the request's key: {e}"))?;
    let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| format!("the request's key: {e}"))?;
    let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or("no certificate in the chain")?;
    if noc_ca::certificate_public_key(&leaf).as_deref() != Some(key.public_key_raw()) {
        return Err("the certificate is not for the key of the request".into());
    }
    let not_after = noc_ca::certificate_not_after(&leaf).ok_or("the certificate cannot be read")?;
    let serial = noc_ca::crl::serial_of(&leaf).ok_or("the certificate cannot be read")?;
    Ok((not_after, serial))
}

fn invalid(e: rcgen::Error) -> DeviceError {
    DeviceError::invalid("certificate request", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use noc_endpoint::enroll::NameAttribute;

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
        ca: noc_ca::DeviceCa,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("device.db"), "").expect("store");
        let (ca, _) = noc_ca::DeviceCa::generate("Corp CA", now_ms() / 1000).expect("ca");
        Fixture { dir, store, ca }
    }

    impl Fixture {
        fn status(&self, id: &str, state: EnrollState, chain: Option<String>) {
            let status = CertificateStatus {
                request_id: id.into(),
                profile: "wifi".into(),
                state,
                message: Some(format!("now {}", state.as_str())),
                subject: match state {
                    EnrollState::Subject => vec![NameAttribute { kind: "CN".into(), value: "Bob Ng".into() }],
                    _ => vec![],
                },
                chain,
            };
            on_status(self.dir.path(), &self.store, &serde_json::to_vec(&status).expect("json")).expect("status");
        }

        /// The requests queued for the VES, oldest first.
        fn requests(&self) -> Vec<CertificateRequest> {
            self.store
                .outbox(Some(VES_PEER))
                .expect("outbox")
                .iter()
                .map(|o| CertificateRequest::parse(&Item::decode(&o.encoded).expect("item").body).expect("request"))
                .collect()
        }

        fn record(&self, id: &str) -> EnrollmentRecord {
            list(self.dir.path()).expect("list").into_iter().find(|r| r.request_id == id).expect("record")
        }
    }

    #[test]
    fn an_enrollment_makes_its_key_checks_what_is_issued_and_follows_renewal_and_revocation() {
        let f = fixture();
        let id = start(f.dir.path(), &f.store, "wifi").expect("start").request_id;
        assert_eq!(f.requests()[0], CertificateRequest { request_id: id.clone(), profile: "wifi".into(), csr: None });
        f.status(&id, EnrollState::Subject, None);
        let csr = f.requests()[1].csr.clone().expect("the request with its CSR");
        let info = noc_ca::read_request(&csr).expect("a valid request");
        assert_eq!(info.subject, Some(vec![("CN".to_string(), "Bob Ng".to_string())]));
        assert_eq!(f.record(&id).state, "submitted");
        f.status(&id, EnrollState::Subject, None);
        assert_eq!(f.requests().len(), 2, "a resent subject makes no second key");
        f.status(&id, EnrollState::Queued, None);
        assert_eq!(f.record(&id).state, "queued");

        // Issued for the key of the request: stored, with the chain.
        let issued = f.ca.issue_for_subject(&csr, &[("CN".into(), "Bob Ng".into())], 30, now_ms() / 1000);
        let issued = issued.expect("ca").expect("issued");
        f.status(&id, EnrollState::Issued, Some(format!("{}{}", issued.pem, f.ca.root_pem())));
        let record = f.record(&id);
        assert_eq!((record.state.as_str(), record.serial.as_deref()), ("issued", Some(issued.serial.as_str())));
        let (chain, key) = certificate_files(f.dir.path(), "wifi");
        assert!(chain.exists() && key.exists());
        assert_eq!(current_serial(&chain).as_deref(), Some(issued.serial.as_str()));

        // Expiring soon: a new enrollment starts, once.
        f.status(&id, EnrollState::Renew, None);
        f.status(&id, EnrollState::Renew, None);
        let next = f.record(&id).renewed_by.expect("renewal started");
        let requests = f.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!((requests[2].request_id.as_str(), requests[2].csr.is_none()), (next.as_str(), true));
        // Revoked: the files of this certificate go.
        f.status(&id, EnrollState::Revoked, None);
        assert_eq!(f.record(&id).state, "revoked");
        assert!(!chain.exists() && !key.exists());
    }

    #[test]
    fn a_certificate_for_another_key_is_not_stored() {
        let f = fixture();
        let id = start(f.dir.path(), &f.store, "wifi").expect("start").request_id;
        f.status(&id, EnrollState::Subject, None);
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = rcgen::CertificateParams::default().serialize_request(&other).expect("csr").pem().expect("pem");
        let issued = f.ca.issue_for_subject(&csr, &[("CN".into(), "Bob Ng".into())], 30, now_ms() / 1000);
        f.status(&id, EnrollState::Issued, Some(issued.expect("ca").expect("issued").pem));
        let record = f.record(&id);
        assert_eq!(record.state, "failed");
        assert!(record.message.as_deref().is_some_and(|m| m.contains("not for the key")), "{record:?}");
        assert!(!certificate_files(f.dir.path(), "wifi").0.exists());
        // A status for an enrollment this device never started changes nothing.
        f.status("someone-else", EnrollState::Issued, None);
        assert!(list(f.dir.path()).expect("list").iter().all(|r| r.request_id != "someone-else"));
    }
}
