//! The relay's device certification authority (seed 001): when a device activates with a
//! certificate request, the relay answers with a client certificate and the management
//! root that signed it. The device made the key pair and keeps the private key; the relay
//! only ever sees the request.
//!
//! What is issued: one year of validity, subject `CN=<device id>, UID=<user id>`, the same
//! two as `urn:noc:device:<id>` and `urn:noc:user:<id>` subject alternative names (so a
//! verifier reads them without parsing the subject), key usage digitalSignature, extended
//! key usage clientAuth, a random 128-bit serial. What is accepted: a PKCS#10 request whose
//! signature verifies (ring), with an ECDSA P-256 or P-384, Ed25519 or RSA (2048 to 8192
//! bits, PKCS #1 v1.5 signatures) key; anything else is refused with a [`CsrError`] that
//! says why.
//!
//! The CA's own certificate is a ten-year ECDSA P-256 root limited to signing end-entity
//! certificates (path length 0).

pub mod crl;
pub mod pkcs7;
pub mod subject;

use noc_protocol::{DeviceId, UserId};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use thiserror::Error;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Encode, Reader, Tagged};

/// How long an issued device certificate is valid (seed 001: renewed after a year).
pub const DEVICE_CERT_DAYS: i64 = 365;
/// How long a generated device CA is valid.
pub const CA_DAYS: i64 = 3650;
/// Largest certificate request taken, in bytes of PEM.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// The `UID` attribute (RFC 4519), for the user id in the subject.
const OID_UID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];

/// Why a certificate request was refused (the device is told in these words).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("the certificate request is not a PEM PKCS#10 request")]
    Malformed,
    #[error("the certificate request's signature does not verify")]
    BadSignature,
    #[error(
        "the certificate request's key type is not accepted (ECDSA P-256 or P-384, Ed25519, RSA 2048 to 8192 bits)"
    )]
    UnsupportedKey,
    #[error("the certificate request's RSA key is {bits} bits; at least 2048 are needed")]
    WeakKey { bits: usize },
    #[error("the certificate request is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
}

/// Failures of the CA itself (loading, generating, signing).
#[derive(Debug, Error)]
pub enum CaError {
    #[error("the device CA's key: {0}")]
    Key(String),
    #[error("the device CA's certificate: {0}")]
    Certificate(String),
    #[error("signing: {0}")]
    Signing(#[from] rcgen::Error),
}

/// A certificate the CA issued.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub pem: String,
    pub der: CertificateDer<'static>,
    /// The serial number, lowercase hex (how revocation names it).
    pub serial: String,
    /// When it expires (unix seconds).
    pub not_after: i64,
}

/// The CA: its key and certificate.
pub struct DeviceCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// When the CA's own certificate expires (unix seconds): nothing it issues outlives it.
    not_after: i64,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa").finish_non_exhaustive()
    }
}

fn at(unix_seconds: i64) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds).map_err(|e| CaError::Certificate(e.to_string()))
}

fn random_serial() -> SerialNumber {
    // Positive (first bit clear) and never zero, as RFC 5280 asks.
    let mut bytes = noc_protocol::secrets::random_bytes::<16>();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

impl DeviceCa {
    /// A new CA named `name`, valid from `now` (unix seconds) for [`CA_DAYS`]; also its
    /// key as PEM, for the caller to keep.
    pub fn generate(name: &str, now: i64) -> Result<(DeviceCa, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = at(now - 3600)?;
        params.not_after = at(now + CA_DAYS * 86_400)?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = false;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = DeviceCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            not_after: now + CA_DAYS * 86_400,
        };
        Ok((ca, key_pem))
    }

    /// The CA from its certificate and key (PEM), as [`DeviceCa::generate`] wrote them or
    /// as the operator supplies them (the key must be the certificate's). Issued
    /// certificates name the CA exactly as its certificate does; a subject this cannot
    /// reproduce byte for byte (a multi-valued RDN, a non-string value) is refused.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<DeviceCa, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Key(e.to_string()))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|d: CertificateDer<'_>| d.into_owned())
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        let cert = x509_cert::Certificate::from_der(&der).map_err(|e| CaError::Certificate(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        if tbs.subject_public_key_info.subject_public_key.raw_bytes() != key.public_key_raw() {
            return Err(CaError::Key("it is not the key of the certificate".into()));
        }
        let is_ca = tbs.extensions.iter().flatten().any(|e| {
            e.extn_id == x509_cert::ext::pkix::BasicConstraints::OID
                && x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|b| b.ca)
        });
        if !is_ca {
            return Err(CaError::Certificate("it is not a CA certificate".into()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&tbs.subject)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let not_after = i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        let ca = DeviceCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert_pem.trim().to_string() + "\n",
            cert_der: der,
            not_after,
        };
        // The issuer field of what it signs must be the certificate's subject, exactly.
        let probe = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let probe = CertificateParams::default().signed_by(&probe, &ca.issuer)?;
        let probe = x509_cert::Certificate::from_der(probe.der()).map_err(|e| CaError::Certificate(e.to_string()))?;
        let same = |n: &x509_cert::name::Name| n.to_der().ok();
        if same(&probe.tbs_certificate.issuer) != same(&tbs.subject) {
            return Err(CaError::Certificate("its subject name cannot be reproduced in what it signs".into()));
        }
        Ok(ca)
    }

    /// The management root devices are given (PEM).
    pub fn root_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the CA's certificate expires (unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Checks a device's certificate request (PEM) and issues its client certificate,
    /// valid from `now` (unix seconds) for [`DEVICE_CERT_DAYS`].
    pub fn issue(
        &self,
        csr: &str,
        user: UserId,
        device: DeviceId,
        now: i64,
    ) -> Result<Result<IssuedCertificate, CsrError>, CaError> {
        match request_der(csr) {
            Ok(der) => self.issue_der(&der, user, device, now),
            Err(e) => Ok(Err(e)),
        }
    }

    /// As [`DeviceCa::issue`], for a request in DER (a renewal on the device channel).
    pub fn issue_der(
        &self,
        csr: &[u8],
        user: UserId,
        device: DeviceId,
        now: i64,
    ) -> Result<Result<IssuedCertificate, CsrError>, CaError> {
        if now >= self.not_after {
            return Err(CaError::Certificate("the device CA has expired".into()));
        }
        let key = match check_request_der(csr) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        // Nothing the device asked for is kept but its key: the relay says who it is.
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device.to_string());
        dn.push(DnType::CustomDnType(OID_UID.to_vec()), user.to_string());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(format!("urn:noc:device:{device}").try_into()?),
            SanType::URI(format!("urn:noc:user:{user}").try_into()?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, &key, DEVICE_CERT_DAYS, now).map(Ok)
    }

    /// Signs a clientAuth certificate for `key` with `params` (subject, names, key usage),
    /// valid from `now` for `days` but never past the CA, with a random serial.
    fn sign(
        &self,
        mut params: CertificateParams,
        key: &DeviceKey,
        days: i64,
        now: i64,
    ) -> Result<IssuedCertificate, CaError> {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = at(now - 300)?;
        let not_after = (now + days * 86_400).min(self.not_after);
        params.not_after = at(not_after)?;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        // The CA's key identifier may have been made another way than rcgen's: none.
        params.use_authority_key_identifier_extension = false;
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            der: cert.der().clone(),
            serial: hex::encode(serial.to_bytes()),
            not_after,
        })
    }
}

/// Who a device certificate this CA issued says the device is: what the relay reads
/// from the client certificate of a device-channel TLS handshake (docs/protocol.md
/// §6.3.2). The chain, validity and extended key usage are checked by the TLS layer
/// before this is asked; this only reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub device: DeviceId,
    pub user: UserId,
    /// Lowercase hex, as [`IssuedCertificate::serial`].
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// The subjectPublicKey bits (for a device checking that a certificate is for its key).
    pub public_key: Vec<u8>,
}

/// Why a certificate does not name a device.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the certificate is not DER X.509")]
    Malformed,
    #[error("the certificate names no device and user (urn:noc:device:, urn:noc:user:)")]
    NoDevice,
}

impl DeviceIdentity {
    /// Reads the `urn:noc:device:` and `urn:noc:user:` names, serial and expiry of a
    /// certificate (DER).
    pub fn from_der(der: &[u8]) -> Result<DeviceIdentity, IdentityError> {
        let cert = x509_cert::Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
        let tbs = &cert.tbs_certificate;
        let (mut device, mut user) = (None, None);
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id != x509_cert::ext::pkix::SubjectAltName::OID {
                continue;
            }
            let names = x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes())
                .map_err(|_| IdentityError::Malformed)?;
            for name in names.0 {
                if let x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(uri) = name {
                    let uri = uri.as_str();
                    if let Some(id) = uri.strip_prefix("urn:noc:device:") {
                        device = id.parse::<DeviceId>().ok();
                    } else if let Some(id) = uri.strip_prefix("urn:noc:user:") {
                        user = id.parse::<UserId>().ok();
                    }
                }
            }
        }
        let (Some(device), Some(user)) = (device, user) else { return Err(IdentityError::NoDevice) };
        Ok(DeviceIdentity {
            device,
            user,
            serial: hex::encode(tbs.serial_number.as_bytes()),
            not_after: i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs()).unwrap_or(i64::MAX),
            public_key: tbs.subject_public_key_info.subject_public_key.raw_bytes().to_vec(),
        })
    }
}

/// What a certificate request asks for, once its key and signature passed: the
/// subject (as `(type, value)` pairs, [`subject`]) and the public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// `None`: a subject with attributes this crate does not read.
    pub subject: Option<Vec<(String, String)>>,
    /// The subjectPublicKey bits.
    pub public_key: Vec<u8>,
}

/// The subjectPublicKey bits of a certificate (DER), to compare with a request's.
pub fn certificate_public_key(der: &[u8]) -> Option<Vec<u8>> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes().to_vec())
}

/// When a certificate (DER) expires (unix seconds).
pub fn certificate_not_after(der: &[u8]) -> Option<i64> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    i64::try_from(cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs()).ok()
}

/// Checks a request (PEM) as [`DeviceCa::issue`] would, and says what it asks for.
pub fn read_request(csr: &str) -> Result<RequestInfo, CsrError> {
    let der = request_der(csr)?;
    let key = check_request_der(&der)?;
    let request = x509_cert::request::CertReq::from_der(&der).map_err(|_| CsrError::Malformed)?;
    Ok(RequestInfo { subject: subject::from_name(&request.info.subject), public_key: key.bits })
}

impl DeviceCa {
    /// Issues a certificate for the key of a request (PEM) under `subject` (the request's
    /// own subject is not used), extended key usage clientAuth, valid from `now` for
    /// `days` (never past the CA): the built-in CA of an enterprise certificate profile.
    pub fn issue_for_subject(
        &self,
        csr: &str,
        subject: &[(String, String)],
        days: u32,
        now: i64,
    ) -> Result<Result<IssuedCertificate, CsrError>, CaError> {
        if now >= self.not_after {
            return Err(CaError::Certificate("the CA has expired".into()));
        }
        let key = match request_der(csr).and_then(|der| check_request_der(&der)) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = subject::to_rcgen(subject).map_err(|e| CaError::Certificate(e.to_string()))?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        self.sign(params, &key, i64::from(days), now).map(Ok)
    }
}

/// The device's public key, as the request carried it.
struct DeviceKey {
    /// The subjectPublicKey bits.
    bits: Vec<u8>,
    /// What rcgen writes as the key's algorithm identifier.
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for DeviceKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// Checks a certificate request as [`DeviceCa::issue`] would, issuing nothing (the
/// activation endpoint refuses a bad request before it creates a device).
pub fn check(csr: &str) -> Result<(), CsrError> {
    check_request_der(&request_der(csr)?).map(|_| ())
}

/// The DER of a PEM request, within the size limit.
fn request_der(csr: &str) -> Result<Vec<u8>, CsrError> {
    if csr.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge);
    }
    let der: rustls_pki_types::CertificateSigningRequestDer<'_> =
        rustls_pki_types::pem::PemObject::from_pem_slice(csr.trim().as_bytes()).map_err(|_| CsrError::Malformed)?;
    Ok(der.as_ref().to_vec())
}

/// The request's key, once its size, encoding, key and signature pass.
fn check_request_der(der: &[u8]) -> Result<DeviceKey, CsrError> {
    if der.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge);
    }
    let request = x509_cert::request::CertReq::from_der(der).map_err(|_| CsrError::Malformed)?;
    let spki = &request.info.public_key;
    let bits = spki.subject_public_key.as_bytes().ok_or(CsrError::Malformed)?.to_vec();
    let (alg, rcgen_alg): (Option<&'static dyn ring::signature::VerificationAlgorithm>, _) =
        match spki.algorithm.oid.to_string().as_str() {
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<x509_cert::der::oid::ObjectIdentifier>().ok());
                match (curve.map(|c| c.to_string()).as_deref(), request.algorithm.oid.to_string().as_str()) {
                    (Some(OID_P256), "1.2.840.10045.4.3.2") => {
                        (Some(&ring::signature::ECDSA_P256_SHA256_ASN1 as _), &rcgen::PKCS_ECDSA_P256_SHA256)
                    }
                    (Some(OID_P256), "1.2.840.10045.4.3.3") => {
                        (Some(&ring::signature::ECDSA_P256_SHA384_ASN1 as _), &rcgen::PKCS_ECDSA_P256_SHA256)
                    }
                    (Some(OID_P384), "1.2.840.10045.4.3.3") => {
                        (Some(&ring::signature::ECDSA_P384_SHA384_ASN1 as _), &rcgen::PKCS_ECDSA_P384_SHA384)
                    }
                    (Some(OID_P384), "1.2.840.10045.4.3.2") => {
                        (Some(&ring::signature::ECDSA_P384_SHA256_ASN1 as _), &rcgen::PKCS_ECDSA_P384_SHA384)
                    }
                    (Some(OID_P256 | OID_P384), _) => (None, &rcgen::PKCS_ECDSA_P256_SHA256),
                    _ => return Err(CsrError::UnsupportedKey),
                }
            }
            OID_ED25519 => (
                (request.algorithm.oid.to_string() == OID_ED25519).then_some(&ring::signature::ED25519 as _),
                &rcgen::PKCS_ED25519,
            ),
            OID_RSA => {
                let size = rsa_modulus_bits(&bits).ok_or(CsrError::Malformed)?;
                if size < 2048 {
                    return Err(CsrError::WeakKey { bits: size });
                }
                if size > 8192 {
                    return Err(CsrError::UnsupportedKey);
                }
                let verify: Option<&'static dyn ring::signature::VerificationAlgorithm> =
                    match request.algorithm.oid.to_string().as_str() {
                        "1.2.840.113549.1.1.11" => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA256),
                        "1.2.840.113549.1.1.12" => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA384),
                        "1.2.840.113549.1.1.13" => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA512),
                        _ => None,
                    };
                (verify, &rcgen::PKCS_RSA_SHA256)
            }
            _ => return Err(CsrError::UnsupportedKey),
        };
    // A signature algorithm this reader does not verify is as good as none.
    let alg = alg.ok_or(CsrError::BadSignature)?;
    let signed = request.info.to_der().map_err(|_| CsrError::Malformed)?;
    let signature = request.signature.as_bytes().ok_or(CsrError::Malformed)?;
    ring::signature::UnparsedPublicKey::new(alg, &bits)
        .verify(&signed, signature)
        .map_err(|_| CsrError::BadSignature)?;
    Ok(DeviceKey { bits, alg: rcgen_alg })
}

/// The modulus size of an RSAPublicKey (RFC 8017 A.1.1), in bits.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let mut reader = x509_cert::der::SliceReader::new(der).ok()?;
    let modulus = reader
        .sequence(|r| {
            let m = x509_cert::der::asn1::UintRef::decode(r)?;
            let _e = x509_cert::der::asn1::UintRef::decode(r)?;
            Ok(m.as_bytes().to_vec())
        })
        .ok()?;
    let first = *modulus.first()?;
    Some(modulus.len() * 8 - first.leading_zeros() as usize)
}

/// A certificate's name as rcgen writes it: one attribute per RDN, each value with its
/// string type kept.
fn distinguished_name(name: &x509_cert::name::Name) -> Result<DistinguishedName, CaError> {
    use x509_cert::der::Tag;
    let unsupported = || CaError::Certificate("its subject name has a form this CA cannot reproduce".into());
    let mut dn = DistinguishedName::new();
    for rdn in &name.0 {
        let [atv] = rdn.0.as_slice() else { return Err(unsupported()) };
        let arcs: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
        let text = || String::from_utf8(atv.value.value().to_vec()).map_err(|_| unsupported());
        let value = match atv.value.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(|_| unsupported())?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|_| unsupported())?),
            _ => return Err(unsupported()),
        };
        dn.push(DnType::from_oid(&arcs), value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests;
