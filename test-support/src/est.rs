//! A test EST server (RFC 7030) in front of a CA: no EST server could be installed from
//! the package registries, so this one follows the RFC's message formats exactly.
//!
//! * `GET /.well-known/est[/label]/cacerts` → `200`, `application/pkcs7-mime`,
//!   `Content-Transfer-Encoding: base64`: a certs-only message with the CA certificate
//!   (§4.1.3).
//! * `POST /.well-known/est[/label]/simpleenroll` with `application/pkcs10`, the request's
//!   DER in base64 (§4.2.1), HTTP Basic authentication (§3.2.3): `401` with
//!   `WWW-Authenticate` without it; `400` for a request that is not one; otherwise, as
//!   [`EstMode`] says, `200` with `application/pkcs7-mime; smime-type=certs-only` holding
//!   the certificate (§4.2.3), or `202` with `Retry-After` (§4.2.3, the CA holds it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use crate::webhook::{WebhookRequest, read_request};

/// What the server does with an enrollment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstMode {
    /// Issues for the request's key and subject.
    Issue,
    /// Answers `202 Accepted` with `Retry-After: 1`: the CA holds the request.
    Pending,
    /// Issues a certificate for another key than the request's (a misbehaving CA).
    OtherKey,
}

pub struct TestEst {
    pub port: u16,
    /// The server's TLS certificate (PEM): the EST client's trust anchor.
    pub cert_path: PathBuf,
    /// The issuing CA's certificate (PEM), to verify what it issues.
    pub ca_path: PathBuf,
    mode: Arc<Mutex<EstMode>>,
    requests: Arc<Mutex<Vec<WebhookRequest>>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl TestEst {
    /// Serves on a random port; enrollments need Basic `username`/`password`.
    pub async fn start(username: &str, password: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (acceptor, cert_path) = crate::tls::test_server(dir.path())?;
        let now = noc_protocol::clock::unix_ms_i64() / 1000;
        let (ca, _) = noc_ca::DeviceCa::generate("Test EST CA", now)?;
        let ca_path = dir.path().join("est-ca.pem");
        std::fs::write(&ca_path, ca.root_pem())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(Mutex::new(EstMode::Issue));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let basic =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")));
        let (ca, kept, current) = (Arc::new(ca), requests.clone(), mode.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, ca, kept, current, basic) =
                    (acceptor.clone(), ca.clone(), kept.clone(), current.clone(), basic.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Some(request) = read_request(&mut tls).await else { return };
                    let mode = *current.lock().unwrap_or_else(|p| p.into_inner());
                    let answer = answer(&request, &ca, &basic, mode);
                    kept.lock().unwrap_or_else(|p| p.into_inner()).push(request);
                    let _ = tls.write_all(&answer).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(TestEst { port, cert_path, ca_path, mode, requests, _dir: dir, task })
    }

    /// `https://localhost:<port>`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn set_mode(&self, mode: EstMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    pub fn requests(&self) -> Vec<WebhookRequest> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for TestEst {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Base64 in lines of 64, as EST servers send it.
fn base64_lines(der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = Vec::new();
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn certs_only(certificates: &[&[u8]]) -> Vec<u8> {
    match noc_ca::pkcs7::certs_only(certificates) {
        Ok(der) => response(
            "200 OK",
            &[
                ("Content-Type", "application/pkcs7-mime; smime-type=certs-only"),
                ("Content-Transfer-Encoding", "base64"),
            ],
            &base64_lines(&der),
        ),
        Err(e) => response("500 Internal Server Error", &[("Content-Type", "text/plain")], e.to_string().as_bytes()),
    }
}

fn answer(request: &WebhookRequest, ca: &noc_ca::DeviceCa, basic: &str, mode: EstMode) -> Vec<u8> {
    let text = |status: &str, body: &str| response(status, &[("Content-Type", "text/plain")], body.as_bytes());
    let Some(operation) = request.path.strip_prefix("/.well-known/est/").map(|p| p.rsplit('/').next().unwrap_or(p))
    else {
        return text("404 Not Found", "not an EST path");
    };
    match (request.method.as_str(), operation) {
        ("GET", "cacerts") => certs_only(&[ca.root_der().as_ref()]),
        ("POST", "simpleenroll") => {
            if request.header("authorization") != Some(basic) {
                return response(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", "Basic realm=\"est\""), ("Content-Type", "text/plain")],
                    b"authentication required",
                );
            }
            if request.header("content-type").map(|t| t.split(';').next().unwrap_or("").trim())
                != Some("application/pkcs10")
            {
                return text("415 Unsupported Media Type", "application/pkcs10 expected");
            }
            let b64: Vec<u8> = request.body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return text("400 Bad Request", "the body is not base64");
            };
            let pem = format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{}-----END CERTIFICATE REQUEST-----\n",
                String::from_utf8_lossy(&base64_lines(&der)).replace("\r\n", "\n")
            );
            let info = match noc_ca::read_request(&pem) {
                Ok(info) => info,
                Err(e) => return text("400 Bad Request", &e.to_string()),
            };
            let subject = info.subject.unwrap_or_default();
            let now = noc_protocol::clock::unix_ms_i64() / 1000;
            let csr = match mode {
                EstMode::Pending => return response("202 Accepted", &[("Retry-After", "1")], b""),
                EstMode::Issue => pem,
                EstMode::OtherKey => {
                    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256);
                    match other.and_then(|k| rcgen::CertificateParams::default().serialize_request(&k)?.pem()) {
                        Ok(csr) => csr,
                        Err(e) => return text("500 Internal Server Error", &e.to_string()),
                    }
                }
            };
            match ca.issue_for_subject(&csr, &subject, 365, now) {
                Ok(Ok(issued)) => certs_only(&[issued.der.as_ref()]),
                Ok(Err(e)) => text("400 Bad Request", &e.to_string()),
                Err(e) => text("500 Internal Server Error", &e.to_string()),
            }
        }
        _ => text("404 Not Found", "no such EST operation"),
    }
}
