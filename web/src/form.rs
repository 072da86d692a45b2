//! Reading a posted form: bounded in size and time, parsed into a typed struct. A form
//! that cannot be read gets a plain "could not be read" page; the parser's own words go
//! to the log, never into the answer.

use std::time::Duration;

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// Forms of the portal are small; anything larger is not one of ours.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// The whole body must arrive within this.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// Reads an `application/x-www-form-urlencoded` body into `T`.
/// Why a form could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// Unreadable, incomplete, late, or not the fields the page has.
    Bad,
    /// Larger than [`MAX_FORM_BYTES`].
    TooLarge,
}

pub async fn read<T: DeserializeOwned>(mut payload: web::Payload) -> Result<T, FormError> {
    let body = tokio::time::timeout(BODY_DEADLINE, async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| FormError::Bad)?;
            if body.len() + chunk.len() > MAX_FORM_BYTES {
                return Err(FormError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
    .await
    .map_err(|_| FormError::Bad)??;
    serde_urlencoded::from_bytes(&body).map_err(|e| {
        tracing::debug!(error = %e, "unreadable form");
        FormError::Bad
    })
}
