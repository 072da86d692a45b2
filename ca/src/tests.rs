use std::path::Path;
use std::process::Command;

use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};

use super::*;

/// A certificate's extension of type `T`.
fn extension<T: AssociatedOid + for<'a> Decode<'a>>(cert: &x509_cert::Certificate) -> Option<T> {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == T::OID)
        .and_then(|e| T::from_der(e.extn_value.as_bytes()).ok())
}

/// Whether `cert` carries a signature that verifies under `root`'s key (ECDSA P-256).
fn signed_by(cert: &x509_cert::Certificate, root: &x509_cert::Certificate) -> bool {
    let tbs = cert.tbs_certificate.to_der().expect("tbs");
    let key = root.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    let sig = cert.signature.raw_bytes();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, key).verify(&tbs, sig).is_ok()
}

const NOW: i64 = 1_796_342_400; // 2026-12-04 00:00 UTC

fn ca() -> DeviceCa {
    DeviceCa::generate("NOC device CA", NOW).expect("generate").0
}

/// A request made the way a device makes one (its own key, any subject).
fn device_request() -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    CertificateParams::new(vec!["whatever.example".into()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

/// A request made by the `openssl` command line, for the key types ring cannot make.
fn openssl_request(dir: &Path, name: &str, newkey: &[&str]) -> String {
    let out = dir.join(format!("{name}.csr"));
    let status = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=device", "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&out)
        .args(newkey)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    std::fs::read_to_string(out).expect("csr")
}

#[test]
fn an_issued_certificate_names_user_and_device_and_verifies_against_the_root() {
    let ca = ca();
    let (user, device) = (UserId::random(), DeviceId::random());
    let issued = ca.issue(&device_request(), user, device, NOW).expect("ca").expect("issued");
    let cert = x509_cert::Certificate::from_der(&issued.der).expect("parse");
    let subject = cert.tbs_certificate.subject.to_string();
    assert!(subject.contains(&format!("CN={device}")), "{subject}");
    assert!(subject.contains(&user.to_string()), "{subject}");
    assert!(!subject.contains("whatever"), "nothing of the request's subject is kept");
    let sans: Vec<String> = extension::<SubjectAltName>(&cert)
        .expect("san")
        .0
        .iter()
        .map(|n| match n {
            GeneralName::UniformResourceIdentifier(u) => u.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans, [format!("urn:noc:device:{device}"), format!("urn:noc:user:{user}")]);
    let eku = extension::<ExtendedKeyUsage>(&cert).expect("eku");
    assert_eq!(eku.0.iter().map(|o| o.to_string()).collect::<Vec<_>>(), ["1.3.6.1.5.5.7.3.2"], "clientAuth only");
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs();
    assert_eq!(not_after, u64::try_from(NOW + 365 * 86_400).expect("positive"));
    assert_eq!(issued.not_after, NOW + 365 * 86_400);
    assert_eq!(hex::encode(cert.tbs_certificate.serial_number.as_bytes()), issued.serial);
    // What the relay reads back from the TLS handshake.
    let identity = DeviceIdentity::from_der(&issued.der).expect("identity");
    let public_key = cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes().to_vec();
    assert_eq!(
        identity,
        DeviceIdentity { device, user, serial: issued.serial.clone(), not_after: NOW + 365 * 86_400, public_key }
    );
    assert_eq!(DeviceIdentity::from_der(ca.root_der()), Err(IdentityError::NoDevice), "the root names no device");
    assert_eq!(DeviceIdentity::from_der(b"junk"), Err(IdentityError::Malformed));
    // Signed by the root, as a verifier sees it.
    let root = x509_cert::Certificate::from_der(ca.root_der()).expect("root");
    assert!(signed_by(&cert, &root));
    assert_eq!(cert.tbs_certificate.issuer, root.tbs_certificate.subject);

    // And as openssl sees it: a client certificate under the management root.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("root.pem"), ca.root_pem()).expect("root");
    std::fs::write(dir.path().join("device.pem"), &issued.pem).expect("cert");
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-attime", &(NOW + 86_400).to_string(), "-CAfile"])
        .arg(dir.path().join("root.pem"))
        .arg(dir.path().join("device.pem"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Every serial is new.
    let again = ca.issue(&device_request(), user, device, NOW).expect("ca").expect("issued");
    assert_ne!(again.serial, issued.serial);
}

#[test]
fn bad_requests_are_refused_with_their_reason() {
    let ca = ca();
    let issue = |csr: &str| ca.issue(csr, UserId::random(), DeviceId::random(), NOW).expect("ca");
    assert_eq!(issue("not a request").err(), Some(CsrError::Malformed));
    assert_eq!(issue(&"A".repeat(MAX_CSR_BYTES + 1)).err(), Some(CsrError::TooLarge));
    let not_a_request = ca.root_pem().to_string();
    assert_eq!(issue(&not_a_request).err(), Some(CsrError::Malformed), "a certificate is not a request");

    // The signature no longer matches once a byte of what it signs changed.
    let good = device_request();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(good.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .expect("der");
    let mut tampered = der.clone();
    let at = tampered.windows(16).position(|w| w == b"whatever.example").expect("the SAN in the request");
    tampered[at] = b'W';
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_lines(&tampered)
    );
    assert_eq!(issue(&pem).err(), Some(CsrError::BadSignature));
    // The same checks for a request in DER (a renewal on the device channel).
    let issue_der = |der: &[u8]| ca.issue_der(der, UserId::random(), DeviceId::random(), NOW).expect("ca");
    assert!(issue_der(&der).is_ok());
    assert_eq!(issue_der(&tampered).err(), Some(CsrError::BadSignature));
    assert_eq!(issue_der(b"\x30\x03\x02\x01\x00").err(), Some(CsrError::Malformed));
    assert_eq!(issue_der(&vec![0x30; MAX_CSR_BYTES + 1]).err(), Some(CsrError::TooLarge));

    let dir = tempfile::tempdir().expect("tmp");
    let weak = openssl_request(dir.path(), "weak", &["-newkey", "rsa:1024"]);
    assert_eq!(issue(&weak).err(), Some(CsrError::WeakKey { bits: 1024 }));
    let odd_curve = openssl_request(dir.path(), "k1", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"]);
    assert_eq!(issue(&odd_curve).err(), Some(CsrError::UnsupportedKey));
    let rsa = openssl_request(dir.path(), "rsa", &["-newkey", "rsa:2048"]);
    assert!(issue(&rsa).is_ok(), "RSA 2048 is accepted");
    let ed = openssl_request(dir.path(), "ed", &["-newkey", "ed25519"]);
    assert!(issue(&ed).is_ok(), "Ed25519 is accepted");
}

fn base64_lines(der: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes().chunks(64).map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_ca_reloads_from_its_files_and_refuses_a_key_that_is_not_its_own() {
    let (ca, key) = DeviceCa::generate("NOC device CA", NOW).expect("generate");
    let again = DeviceCa::from_pem(ca.root_pem(), &key).expect("reload");
    assert_eq!(again.root_der(), ca.root_der());
    // What the reloaded CA issues verifies against the same root.
    let issued = again.issue(&device_request(), UserId::random(), DeviceId::random(), NOW).expect("ca").expect("ok");
    let cert = x509_cert::Certificate::from_der(&issued.der).expect("parse");
    let root = x509_cert::Certificate::from_der(ca.root_der()).expect("root");
    assert!(signed_by(&cert, &root), "same root");
    assert_eq!(cert.tbs_certificate.issuer, root.tbs_certificate.subject);

    // Nothing outlives the CA: a certificate issued near its end ends with it.
    let late =
        again.issue(&device_request(), UserId::random(), DeviceId::random(), ca.not_after() - 86_400).expect("ca");
    assert_eq!(late.expect("ok").not_after, ca.not_after());

    let (_, other_key) = DeviceCa::generate("other", NOW).expect("other");
    assert!(matches!(DeviceCa::from_pem(ca.root_pem(), &other_key), Err(CaError::Key(_))));
    assert!(matches!(DeviceCa::from_pem("garbage", &key), Err(CaError::Certificate(_))));
    // A device certificate is not a CA.
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = CertificateParams::new(vec!["x".into()]).expect("p").self_signed(&leaf_key).expect("self");
    assert!(matches!(DeviceCa::from_pem(&leaf.pem(), &leaf_key.serialize_pem()), Err(CaError::Certificate(_))));
}

/// A CA the operator made with openssl (a subject of several attributes, its own key
/// identifier): what it issues chains to it in openssl's eyes.
#[test]
fn an_operators_openssl_ca_issues_certificates_that_chain_to_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let (key, cert) = (dir.path().join("ca.key"), dir.path().join("ca.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650"])
        .args(["-subj", "/C=DE/O=Example Carrier/CN=Device CA", "-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // openssl writes PKCS#8 keys, which rcgen reads.
    let ca = DeviceCa::from_pem(
        &std::fs::read_to_string(&cert).expect("cert"),
        &std::fs::read_to_string(&key).expect("key"),
    )
    .expect("the operator's CA");
    // Now, not NOW: the CA openssl just made is valid from this moment.
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let issued = ca.issue(&device_request(), UserId::random(), DeviceId::random(), now).expect("ca").expect("ok");
    std::fs::write(dir.path().join("device.pem"), &issued.pem).expect("write");
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&cert)
        .arg(dir.path().join("device.pem"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
