//! An enterprise CA over EST (RFC 7030): `simpleenroll` with the device's request, the CA
//! certificates from `cacerts`, HTTP Basic authentication, the EST server verified with
//! the configured trust anchor.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use super::{CaConnector, ConnectorError, Issuance};
use crate::config::Secret;
use crate::error::AgentError;

/// The EST client of one profile.
pub struct EstCa {
    client: reqwest::Client,
    /// `https://host[:port]/.well-known/est[/label]`.
    base: String,
    auth: Option<(String, Secret)>,
}

impl EstCa {
    pub fn new(
        url: &str,
        label: Option<&str>,
        ca_file: Option<&Path>,
        auth: Option<(String, Secret)>,
        timeout: Duration,
    ) -> Result<Self, AgentError> {
        let tls = noc_tls::client_config(ca_file, &[b"http/1.1"]).map_err(|e| AgentError::Config(e.to_string()))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .build()
            .map_err(|e| AgentError::Config(format!("EST client: {e}")))?;
        let base = match label {
            Some(label) => format!("{url}/.well-known/est/{label}"),
            None => format!("{url}/.well-known/est"),
        };
        Ok(EstCa { client, base, auth })
    }
}

/// The certificates of an EST `application/pkcs7-mime` answer (base64 of a certs-only
/// message, RFC 7030 §4.1.3 and §4.2.3), as DER.
fn certs_only(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let b64: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "the answer is not base64")?;
    noc_ca::pkcs7::certificates(&der).map_err(|e| e.to_string())
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out + "-----END CERTIFICATE-----\n"
}

/// The first line of a refusal's body, for the device and the log.
fn reason(status: reqwest::StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    let line: String = line.chars().take(200).collect();
    if line.is_empty() {
        format!("EST server answered {status}")
    } else {
        format!("EST server answered {status}: {line}")
    }
}

impl CaConnector for EstCa {
    fn issue(&self, csr: &str, _subject: &[(String, String)]) -> Issuance {
        let (client, base, auth) = (self.client.clone(), self.base.clone(), self.auth.clone());
        let csr = csr.to_string();
        Box::pin(async move {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
                .map_err(|e| ConnectorError::Rejected(format!("the request: {e}")))?;
            let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let mut post = client
                .post(format!("{base}/simpleenroll"))
                .header("Content-Type", "application/pkcs10")
                .header("Content-Transfer-Encoding", "base64")
                .body(body);
            if let Some((user, password)) = &auth {
                post = post.basic_auth(user, Some(password.expose()));
            }
            let unavailable = |e: reqwest::Error| ConnectorError::Unavailable(format!("EST server: {e}"));
            let answer = post.send().await.map_err(unavailable)?;
            let status = answer.status();
            let retry_after = answer.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            let bytes = super::read_capped(answer, super::MAX_ANSWER_BYTES)
                .await
                .map_err(|e| ConnectorError::Unavailable(format!("EST server: {e}")))?;
            let leaf = match status.as_u16() {
                200 => certs_only(&bytes).map_err(|e| ConnectorError::Rejected(format!("EST simpleenroll: {e}")))?,
                202 => {
                    // RFC 7030 §4.2.3: ask again after Retry-After (delta-seconds), the
                    // same request.
                    let after = retry_after.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(60).clamp(1, 3600);
                    return Err(ConnectorError::Held(Duration::from_secs(after)));
                }
                400..=499 => return Err(ConnectorError::Rejected(reason(status, &bytes))),
                _ => return Err(ConnectorError::Unavailable(reason(status, &bytes))),
            };
            // The chain above it (RFC 7030 §4.1): best effort, the certificate is enough.
            let mut chain: String = leaf.iter().map(|d| pem(d)).collect();
            match client.get(format!("{base}/cacerts")).send().await {
                Ok(r) if r.status().is_success() => {
                    if let Ok(bytes) = super::read_capped(r, super::MAX_ANSWER_BYTES).await
                        && let Ok(cas) = certs_only(&bytes)
                    {
                        for ca in cas.iter().filter(|c| !leaf.contains(c)) {
                            chain.push_str(&pem(ca));
                        }
                    }
                }
                Ok(r) => tracing::warn!(status = %r.status(), "EST cacerts failed; sending the certificate alone"),
                Err(e) => tracing::warn!(error = %e, "EST cacerts failed; sending the certificate alone"),
            }
            Ok(chain)
        })
    }
}
