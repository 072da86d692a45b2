//! Enterprise certificate enrollment between a device and its VES (seed 002;
//! docs/endpoints.md §10.4): the bodies of the `certificate-request` and
//! `certificate-status` items. They travel end-to-end encrypted like mail: the relay sees
//! neither the request nor the certificate.
//!
//! ```text
//! device                                        VES agent
//!   |-- certificate-request {Id, Profile} -------->|  knows the profile? the user?
//!   |<- certificate-status  {subject, Subject} ----|  the user's distinguished name
//!   |   (new key pair; PKCS#10 for Subject)        |
//!   |-- certificate-request {Id, Profile, Csr} --->|  proof of possession, subject as sent
//!   |<- certificate-status  {queued} --------------|  waits for an administrator
//!   |<- certificate-status  {approved} ------------|  (or rejected)
//!   |<- certificate-status  {issued, Chain} -------|  the CA's certificate is for the
//!   |   (stores certificate, chain and key)        |  request's key (checked), or failed
//!   |<- certificate-status  {renew} ---------------|  later: it expires soon
//!   |-- certificate-request {new Id, Profile} ---->|  (the device enrolls again)
//!   |<- certificate-status  {revoked} -------------|  or: the CA's list revokes it
//! ```

use serde::{Deserialize, Serialize};

/// Most bytes of a request or status body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest request id and profile name.
pub const MAX_ID_BYTES: usize = 64;

/// Device → VES.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateRequest {
    /// Chosen by the device (a UUID); names the enrollment in every status.
    pub request_id: String,
    /// The CA profile the enterprise defined (the agent's `[[ca.profiles]]`).
    pub profile: String,
    /// The PKCS#10 request (PEM) for the subject the VES sent; absent in the first
    /// request, which asks for the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

/// Where an enrollment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrollState {
    /// The subject to request (in `Subject`): make the key pair and the request.
    Subject,
    /// The request waits for an administrator's approval.
    Queued,
    /// Approved; sent to the certification authority.
    Approved,
    /// The certificate (in `Chain`) is issued for the request's key.
    Issued,
    /// An administrator or the CA refused it (`Message` says why).
    Rejected,
    /// It could not be completed (unknown profile, the CA failed, a certificate for
    /// another key); `Message` says why.
    Failed,
    /// About an issued certificate: it expires soon (`Message` says when); the device
    /// enrolls again under the same profile, with a new key.
    Renew,
    /// About an issued certificate: the CA revoked it (its revocation list says so); the
    /// device deletes it.
    Revoked,
}

impl EnrollState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollState::Subject => "subject",
            EnrollState::Queued => "queued",
            EnrollState::Approved => "approved",
            EnrollState::Issued => "issued",
            EnrollState::Rejected => "rejected",
            EnrollState::Failed => "failed",
            EnrollState::Renew => "renew",
            EnrollState::Revoked => "revoked",
        }
    }

    /// No status follows this one (but `renew` and `revoked` about an issued certificate).
    pub fn is_final(self) -> bool {
        matches!(self, EnrollState::Issued | EnrollState::Rejected | EnrollState::Failed | EnrollState::Revoked)
    }
}

/// One attribute of a distinguished name, most significant first: `CN`, `O`, `OU`, `C`,
/// `L`, `ST`, `DC`, `UID` or `emailAddress`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NameAttribute {
    #[serde(rename = "Type")]
    pub kind: String,
    pub value: String,
}

/// The attribute types a subject may carry.
pub const NAME_TYPES: &[&str] = &["CN", "O", "OU", "C", "L", "ST", "DC", "UID", "emailAddress"];

/// VES → device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateStatus {
    pub request_id: String,
    pub profile: String,
    pub state: EnrollState,
    /// For people: why it was refused or failed, or what happens next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `subject`: the distinguished name to request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject: Vec<NameAttribute>,
    /// `issued`: the certificate and the CA certificates above it (PEM, leaf first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

/// Why a request or status body is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    #[error("not a JSON {0} body")]
    Json(&'static str),
    #[error("{0} is empty, longer than 64 bytes, or has characters other than letters, digits, '-', '_' and '.'")]
    BadId(&'static str),
    #[error("larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

fn check_id(value: &str, what: &'static str) -> Result<(), EnrollError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_BYTES
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(EnrollError::BadId(what)) }
}

impl CertificateRequest {
    pub fn parse(body: &[u8]) -> Result<Self, EnrollError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(EnrollError::TooLarge);
        }
        let r: CertificateRequest =
            serde_json::from_slice(body).map_err(|_| EnrollError::Json("certificate-request"))?;
        check_id(&r.request_id, "RequestId")?;
        check_id(&r.profile, "Profile")?;
        Ok(r)
    }
}

impl CertificateStatus {
    pub fn parse(body: &[u8]) -> Result<Self, EnrollError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(EnrollError::TooLarge);
        }
        let s: CertificateStatus = serde_json::from_slice(body).map_err(|_| EnrollError::Json("certificate-status"))?;
        check_id(&s.request_id, "RequestId")?;
        check_id(&s.profile, "Profile")?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_bad_ones_are_refused() {
        let status = CertificateStatus {
            request_id: "6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a".into(),
            profile: "wifi".into(),
            state: EnrollState::Subject,
            message: None,
            subject: vec![NameAttribute { kind: "CN".into(), value: "Bob Ng".into() }],
            chain: None,
        };
        let json = serde_json::to_string(&status).expect("json");
        assert_eq!(
            json,
            r#"{"RequestId":"6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a","Profile":"wifi","State":"subject","Subject":[{"Type":"CN","Value":"Bob Ng"}]}"#
        );
        assert_eq!(CertificateStatus::parse(json.as_bytes()), Ok(status));
        let request = br#"{"RequestId":"r1","Profile":"wifi","Extra":1}"#;
        assert_eq!(
            CertificateRequest::parse(request),
            Ok(CertificateRequest { request_id: "r1".into(), profile: "wifi".into(), csr: None }),
            "unknown fields are ignored"
        );
        assert_eq!(
            CertificateRequest::parse(br#"{"RequestId":"../x","Profile":"wifi"}"#),
            Err(EnrollError::BadId("RequestId"))
        );
        assert_eq!(CertificateRequest::parse(b"nope"), Err(EnrollError::Json("certificate-request")));
        assert!(EnrollState::Issued.is_final() && !EnrollState::Queued.is_final());
    }
}
