//! Request bodies: a size limit checked before anything is buffered, a deadline for the
//! whole body, and JSON errors that name the offending field but never echo the parser's
//! own text (docs/protocol.md §3); that text goes to the log at debug level.
//!
//! A body refused for its size or its slowness is not read further: the answer closes the
//! connection ([`crate::unread_body`]), so a client cannot keep the relay reading (or
//! waiting) after the refusal.

use std::time::Duration;

use actix_web::{HttpRequest, web};
use bytes::Bytes;
use futures_util::StreamExt;
use noc_protocol::ApiErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Reads at most `limit` bytes of body within `deadline`; a larger body is refused before
/// it is buffered, a slower one is cut off. Either refusal leaves the rest unread, which
/// ends the connection after the answer ([`crate::unread_body`]).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    tokio::time::timeout(deadline, read_limited(req, &mut payload, limit))
        .await
        .map_err(|_| ApiError::bad_request("request body not received in time"))?
}

async fn read_limited(req: &HttpRequest, payload: &mut web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(ApiErrorCode::PayloadTooLarge, format!("request body exceeds {limit} bytes"));
    let declared = req.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!(error = %e, "request body could not be read");
            ApiError::bad_request("request body could not be read")
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Decodes a JSON body into `T`; a refusal names the field at fault, never the parser's
/// words ([`noc_protocol::json`]).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    noc_protocol::json::from_slice(body).map_err(refused)
}

/// The answer to a refused JSON body; the parser's account goes to the debug log.
pub fn refused(refusal: noc_protocol::json::Refusal) -> ApiError {
    tracing::debug!(detail = %refusal.detail, "invalid JSON request body");
    ApiError::bad_request(refusal.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use noc_protocol::rts::{DataRequest, LicenseRequest};

    fn message<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        let e = parse_json::<T>(body.as_bytes()).expect_err("refused");
        assert_eq!(e.code, ApiErrorCode::BadRequest);
        e.message
    }

    #[test]
    fn errors_name_the_field_not_the_parser() {
        assert_eq!(message::<LicenseRequest>(r#"{"Name":"acme"}"#), "missing field `Password`");
        assert_eq!(message::<LicenseRequest>(r#"{"Name":"a","Password":"b","X":1}"#), "unknown field `X`");
        assert_eq!(message::<LicenseRequest>(r#"{"Name":1,"Password":"b"}"#), "invalid value at `Name`");
        assert_eq!(
            message::<LicenseRequest>(r#"{"Name":"a","Password":"b"} trailing"#),
            "request body is not valid JSON"
        );
        assert_eq!(message::<LicenseRequest>("{"), "request body is not valid JSON");
        // Nesting past serde_json's recursion limit, inside a request serde buffers whole.
        let deep = format!(r#"{{"Type":"Frames","Frames":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(message::<DataRequest>(&deep), "request body is not valid JSON");
        let unknown = message::<DataRequest>(r#"{"Type":"Nope"}"#);
        assert!(!unknown.contains("StartupReport") && !unknown.contains("Nope"), "{unknown}");
        assert_eq!(message::<DataRequest>(r#"{"Type":"DeleteUser"}"#), "missing field `Email`");
        // Nothing of serde's own wording: positions, expectations, recursion.
        for body in [r#"{"Name":"a","Password":"b""#, r#"{"Name":[1,2],"Password":"b"}"#, r#"{"Type":1}"#] {
            let m = message::<DataRequest>(body);
            assert!(!m.contains("line") && !m.contains("column") && !m.contains("expected"), "{m}");
        }
        // A hostile field name is not echoed.
        let m = message::<LicenseRequest>(r#"{"Name":"a","Password":"b","<script>":1}"#);
        assert_eq!(m, "request body has a field this endpoint does not know");
    }

    #[test]
    fn a_valid_body_parses() {
        let r: LicenseRequest = parse_json(br#"{"Name":"acme","Password":"pw"}"#).expect("valid");
        assert_eq!(r.name, "acme");
    }
}
