//! The API's errors: the protocol's error body (`{"Error":{"Code":..,"Message":..}}`,
//! docs/protocol.md §2) with its codes and statuses, and messages that never carry
//! internals (a store failure is logged here and answered `internal`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use noc_protocol::codes::ApiErrorCode;
use noc_protocol::rts::{ErrorBody, ErrorDetail};
use noc_storage::AccountError;

/// An API failure as it is answered.
#[derive(Debug)]
pub struct ApiFailure {
    pub code: ApiErrorCode,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
}

impl ApiFailure {
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        ApiFailure { code, message: message.into(), retry_after_seconds: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ApiErrorCode::BadRequest, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(ApiErrorCode::InvalidCredentials, "a valid bearer token is required")
    }

    pub fn not_found() -> Self {
        Self::new(ApiErrorCode::NotFound, "no such record")
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiFailure {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header(("Cache-Control", "no-store"));
        if let Some(s) = self.retry_after_seconds {
            resp.insert_header(("Retry-After", s.to_string()));
        }
        if self.code == ApiErrorCode::InvalidCredentials {
            resp.insert_header(("WWW-Authenticate", "Bearer realm=\"noc-admin\""));
        }
        resp.json(ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } })
    }
}

impl From<AccountError> for ApiFailure {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::InvalidCredentials
            | AccountError::Revoked
            | AccountError::CertificateRefused
            | AccountError::WipePending => Self::new(ApiErrorCode::InvalidCredentials, "invalid credentials"),
            AccountError::Throttled(t) => ApiFailure {
                retry_after_seconds: Some(t.retry_after().as_secs().max(1)),
                ..Self::new(ApiErrorCode::LockedOut, "too many failed attempts; retry later")
            },
            AccountError::Suspended => Self::new(ApiErrorCode::Suspended, "this operator account is disabled"),
            AccountError::Forbidden => Self::new(ApiErrorCode::Forbidden, "not allowed for this role or token"),
            AccountError::NotFound => Self::not_found(),
            AccountError::Conflict(what) => Self::new(ApiErrorCode::Conflict, format!("{what} already exists")),
            AccountError::SeatsFull { max } => {
                Self::new(ApiErrorCode::SeatsFull, format!("license has no free seat (maximum {max} users)"))
            }
            AccountError::Invalid(i) => Self::bad_request(i.to_string()),
            AccountError::MsisdnNotApproved => {
                Self::new(ApiErrorCode::MsisdnNotApproved, "this MSISDN is not approved by the carrier")
            }
            AccountError::NotActivated => Self::new(ApiErrorCode::NotActivated, "account not activated"),
            AccountError::FeatureDisabled(f) => {
                Self::new(ApiErrorCode::FeatureDisabled, format!("{} is not enabled for this account", f.as_str()))
            }
            AccountError::CertificateRequired => {
                Self::bad_request("this license requires devices to use client certificates")
            }
            AccountError::Unavailable(detail) | AccountError::Busy(detail) => {
                tracing::warn!(%detail, "admin API: account store unavailable");
                ApiFailure {
                    retry_after_seconds: Some(5),
                    ..Self::new(ApiErrorCode::Unavailable, "account store unavailable; retry later")
                }
            }
            AccountError::Internal(detail) => {
                tracing::error!(%detail, "admin API: internal error");
                Self::new(ApiErrorCode::Internal, "internal error")
            }
        }
    }
}

/// The error body as the OpenAPI document describes it (the protocol's `ErrorBody`).
#[derive(utoipa::ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorDoc {
    #[schema(rename = "Error")]
    error: ErrorDetailDoc,
}

/// One error: a code of docs/protocol.md §2 and a message for people.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetailDoc {
    /// `bad_request`, `invalid_credentials`, `forbidden`, `not_found`, `conflict`, …
    #[schema(rename = "Code")]
    code: String,
    #[schema(rename = "Message")]
    message: String,
}

/// Gives every response of the document its description (the status's reason phrase
/// where the handler gave none) and every error response the error body.
pub struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr};
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else { continue };
                    let code: u16 = status.parse().unwrap_or(0);
                    if response.description.is_empty() {
                        let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason());
                        response.description = reason.unwrap_or("Answer").to_string();
                    }
                    if code >= 400 && response.content.is_empty() {
                        let body = Content::new(Some(Ref::from_schema_name("Error")));
                        response.content.insert("application/json".to_string(), RefOr::T(body));
                    }
                }
            }
        }
    }
}
