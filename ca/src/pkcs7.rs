//! "Certs-only" PKCS#7 (CMS SignedData with no content and no signers, RFC 5652 and
//! RFC 8551 §3.2.2): how EST (RFC 7030 §4.1.3, §4.2.3) carries certificates.

use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
use x509_cert::der::asn1::SetOfVec;
use x509_cert::der::{Any, Decode, Encode};

const ID_DATA: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// Why bytes are not a certs-only message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a certs-only PKCS#7 message: {0}")]
pub struct Pkcs7Error(pub &'static str);

/// The certificates (DER) of a certs-only message, in the order it lists them.
pub fn certificates(der: &[u8]) -> Result<Vec<Vec<u8>>, Pkcs7Error> {
    let info = ContentInfo::from_der(der).map_err(|_| Pkcs7Error("not a ContentInfo"))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(Pkcs7Error("not SignedData"));
    }
    let signed: SignedData = info.content.decode_as().map_err(|_| Pkcs7Error("malformed SignedData"))?;
    let mut out = Vec::new();
    for choice in signed.certificates.map(|c| c.0.into_vec()).unwrap_or_default() {
        if let CertificateChoices::Certificate(cert) = choice {
            out.push(cert.to_der().map_err(|_| Pkcs7Error("malformed certificate"))?);
        }
    }
    if out.is_empty() {
        return Err(Pkcs7Error("no certificate"));
    }
    Ok(out)
}

/// A certs-only message holding `certificates` (DER).
pub fn certs_only(certificates: &[&[u8]]) -> Result<Vec<u8>, Pkcs7Error> {
    let mut set = SetOfVec::new();
    for der in certificates {
        let cert = x509_cert::Certificate::from_der(der).map_err(|_| Pkcs7Error("malformed certificate"))?;
        set.insert(CertificateChoices::Certificate(cert)).map_err(|_| Pkcs7Error("duplicate certificate"))?;
    }
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
        certificates: Some(CertificateSet(set)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    let content = Any::encode_from(&signed).map_err(|_| Pkcs7Error("encoding"))?;
    ContentInfo { content_type: ID_SIGNED_DATA, content }.to_der().map_err(|_| Pkcs7Error("encoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_round_trip_and_other_messages_are_refused() {
        let (ca, _) = crate::DeviceCa::generate("A", 1_800_000_000).expect("ca");
        let (other, _) = crate::DeviceCa::generate("B", 1_800_000_000).expect("ca");
        let message = certs_only(&[ca.root_der().as_ref(), other.root_der().as_ref()]).expect("encode");
        let back = certificates(&message).expect("decode");
        assert_eq!(back.len(), 2);
        assert!(back.contains(&ca.root_der().to_vec()) && back.contains(&other.root_der().to_vec()));
        // openssl reads it as PKCS#7 too.
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("p7.der"), &message).expect("write");
        let out = std::process::Command::new("openssl")
            .args(["pkcs7", "-inform", "DER", "-print_certs", "-noout", "-in"])
            .arg(dir.path().join("p7.der"))
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("subject=CN"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(certificates(b"\x30\x03\x02\x01\x00").is_err());
        assert!(certificates(ca.root_der().as_ref()).is_err(), "a certificate is not a message");
    }
}
