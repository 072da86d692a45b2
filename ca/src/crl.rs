//! Certificate revocation lists (RFC 5280 §5): the serials a CA revoked, read only from a
//! list whose signature verifies with the CA's key; and lists for the CAs this crate runs.

use std::collections::HashSet;

use x509_cert::der::{Decode, Encode};

/// Why a list cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("not a DER or PEM certificate revocation list")]
    Malformed,
    #[error("the list is not issued by this CA")]
    OtherIssuer,
    #[error("the list's signature does not verify with the CA's key")]
    BadSignature,
    #[error("the list's signature algorithm is not supported")]
    UnsupportedAlgorithm,
}

/// The DER of a list given as DER or PEM (`X509 CRL`).
fn der_of(bytes: &[u8]) -> Result<Vec<u8>, CrlError> {
    use rustls_pki_types::pem::PemObject;
    if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return rustls_pki_types::CertificateRevocationListDer::from_pem_slice(bytes)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| CrlError::Malformed);
    }
    Ok(bytes.to_vec())
}

/// The serials (lowercase hex, as [`crate::IssuedCertificate::serial`]) a list revokes,
/// once it is known to come from `issuer` (a CA certificate, DER): its issuer name is the
/// CA's subject and its signature verifies with the CA's key.
pub fn revoked_serials(list: &[u8], issuer: &[u8]) -> Result<HashSet<String>, CrlError> {
    let der = der_of(list)?;
    let crl = x509_cert::crl::CertificateList::from_der(&der).map_err(|_| CrlError::Malformed)?;
    let ca = x509_cert::Certificate::from_der(issuer).map_err(|_| CrlError::Malformed)?;
    if crl.tbs_cert_list.issuer != ca.tbs_certificate.subject {
        return Err(CrlError::OtherIssuer);
    }
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match crl.signature_algorithm.oid.to_string().as_str()
    {
        "1.2.840.10045.4.3.2" => {
            match ca.tbs_certificate.subject_public_key_info.algorithm.parameters.as_ref().map(|p| p.value()) {
                // The curve decides which ring algorithm reads the key.
                Some(p) if p == [0x2b, 0x81, 0x04, 0x00, 0x22] => &ring::signature::ECDSA_P384_SHA256_ASN1,
                _ => &ring::signature::ECDSA_P256_SHA256_ASN1,
            }
        }
        "1.2.840.10045.4.3.3" => {
            match ca.tbs_certificate.subject_public_key_info.algorithm.parameters.as_ref().map(|p| p.value()) {
                Some(p) if p == [0x2b, 0x81, 0x04, 0x00, 0x22] => &ring::signature::ECDSA_P384_SHA384_ASN1,
                _ => &ring::signature::ECDSA_P256_SHA384_ASN1,
            }
        }
        "1.3.101.112" => &ring::signature::ED25519,
        "1.2.840.113549.1.1.11" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        _ => return Err(CrlError::UnsupportedAlgorithm),
    };
    let tbs = crl.tbs_cert_list.to_der().map_err(|_| CrlError::Malformed)?;
    let signature = crl.signature.as_bytes().ok_or(CrlError::Malformed)?;
    let key = ca.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    ring::signature::UnparsedPublicKey::new(algorithm, key)
        .verify(&tbs, signature)
        .map_err(|_| CrlError::BadSignature)?;
    Ok(crl
        .tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .map(|r| hex::encode(r.serial_number.as_bytes()))
        .collect())
}

/// The serial (lowercase hex) of a certificate (DER).
pub fn serial_of(cert: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(cert).ok()?;
    Some(hex::encode(cert.tbs_certificate.serial_number.as_bytes()))
}

impl crate::DeviceCa {
    /// A list revoking `serials` (lowercase hex), valid from `now` for `days`, signed by
    /// this CA (DER).
    pub fn revocation_list(&self, serials: &[String], now: i64, days: i64) -> Result<Vec<u8>, crate::CaError> {
        let at = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| crate::CaError::Certificate(e.to_string()))
        };
        let mut revoked = Vec::new();
        for serial in serials {
            let bytes = hex::decode(serial).map_err(|e| crate::CaError::Certificate(e.to_string()))?;
            revoked.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&bytes),
                revocation_time: at(now)?,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: at(now)?,
            next_update: at(now + days * 86_400)?,
            crl_number: rcgen::SerialNumber::from(u64::try_from(now).unwrap_or(0)),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_serials_come_only_from_a_list_the_ca_signed() {
        let now = 1_800_000_000;
        let (ca, _) = crate::DeviceCa::generate("CRL CA", now).expect("ca");
        let (other, _) = crate::DeviceCa::generate("CRL CA", now).expect("ca");
        let list = ca.revocation_list(&["0a1b".into(), "7f00ff".into()], now, 7).expect("crl");
        let serials = revoked_serials(&list, ca.root_der()).expect("verified");
        assert_eq!(serials, HashSet::from(["0a1b".to_string(), "7f00ff".to_string()]));
        // The same name, another key: the signature does not verify.
        assert_eq!(revoked_serials(&list, other.root_der()), Err(CrlError::BadSignature));
        let (third, _) = crate::DeviceCa::generate("Another name", now).expect("ca");
        assert_eq!(revoked_serials(&list, third.root_der()), Err(CrlError::OtherIssuer));
        assert_eq!(revoked_serials(b"junk", ca.root_der()), Err(CrlError::Malformed));
        // PEM as openssl writes it.
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("crl.der"), &list).expect("write");
        let out = std::process::Command::new("openssl")
            .args(["crl", "-inform", "DER", "-in"])
            .arg(dir.path().join("crl.der"))
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let serials = revoked_serials(&out.stdout, ca.root_der()).expect("PEM");
        assert_eq!(serials.len(), 2);
        let empty = ca.revocation_list(&[], now, 7).expect("crl");
        assert!(revoked_serials(&empty, ca.root_der()).expect("verified").is_empty());
    }
}
