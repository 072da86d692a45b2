//! Request bodies and query strings of the API: bounded, and refused with the field at
//! fault (never the parser's words).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::api::error::ApiFailure;
use noc_protocol::ApiErrorCode;

/// The largest body an admin request has (a CSV import is the largest).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Reads a whole body, at most [`MAX_BODY_BYTES`].
async fn read(mut payload: Payload) -> Result<web::BytesMut, ApiFailure> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiFailure::bad_request("request body could not be read"))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiFailure::new(
                ApiErrorCode::PayloadTooLarge,
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A UTF-8 text body (a CSV import).
pub struct Text(pub String);

impl FromRequest for Text {
    type Error = ApiFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(_: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let payload = payload.take();
        Box::pin(async move {
            let body = read(payload).await?;
            String::from_utf8(body.to_vec())
                .map(Text)
                .map_err(|_| ApiFailure::bad_request("the body is not UTF-8 text"))
        })
    }
}

/// A JSON body.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(_: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let payload = payload.take();
        Box::pin(async move {
            let body = read(payload).await?;
            noc_protocol::json::from_slice(&body).map(Json).map_err(|refusal| {
                tracing::debug!(detail = %refusal.detail, "admin API: invalid JSON body");
                ApiFailure::bad_request(refusal.message)
            })
        })
    }
}

/// A query string.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiFailure;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(serde_urlencoded::from_str(req.query_string()).map(Query).map_err(|e| {
            tracing::debug!(error = %e, "admin API: invalid query");
            ApiFailure::bad_request("a query parameter is unknown or has an invalid value")
        }))
    }
}
