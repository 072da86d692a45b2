//! The error every HTTP handler returns.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use noc_protocol::ApiErrorCode;
use noc_protocol::rts::{ErrorBody, ErrorDetail};
use noc_storage::{AccountError, Throttled};

/// An HTTP error: a stable code, a client-safe message and an optional `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ApiErrorCode,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_seconds: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ApiErrorCode::BadRequest, message)
    }

    pub fn invalid_session() -> Self {
        Self::new(
            ApiErrorCode::InvalidSession,
            "unknown or expired KeyId, or wrong Key: GET /rts/v1/connect for new parameters",
        )
    }

    pub fn draining() -> Self {
        Self { retry_after_seconds: Some(1), ..Self::new(ApiErrorCode::Draining, "node is draining; connect again") }
    }

    /// The `reason` label for `noc_auth_failures_total`, or `None` when the request failed
    /// for another reason than its credentials (malformed input, a taken MSISDN, ...), which
    /// must not look like a password-guessing attempt on the dashboards.
    pub fn auth_reason(e: &AccountError) -> Option<&'static str> {
        Some(match e {
            AccountError::InvalidCredentials => "invalid_credentials",
            AccountError::Throttled(Throttled::Login { .. }) => "locked_out",
            AccountError::Throttled(Throttled::Source { .. }) => "throttled",
            AccountError::Suspended => "suspended",
            AccountError::Revoked => "revoked",
            AccountError::CertificateRefused => "certificate_refused",
            AccountError::Unavailable(_) => "unavailable",
            AccountError::Busy(_) => "busy",
            AccountError::NotActivated => "not_activated",
            AccountError::MsisdnNotApproved => "msisdn_not_approved",
            AccountError::FeatureDisabled(_) => "feature_disabled",
            AccountError::CertificateRequired => "certificate_required",
            AccountError::Invalid(_)
            | AccountError::WipePending
            | AccountError::Conflict(_)
            | AccountError::NotFound
            | AccountError::Forbidden
            | AccountError::SeatsFull { .. }
            | AccountError::Internal(_) => return None,
        })
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::InvalidCredentials
            | AccountError::Revoked
            | AccountError::CertificateRefused
            | AccountError::WipePending => ApiError::new(ApiErrorCode::InvalidCredentials, "invalid credentials"),
            AccountError::Throttled(t) => {
                let (code, message) = match t {
                    Throttled::Source { .. } => {
                        (ApiErrorCode::TooManyRequests, "too many failed password attempts from this address")
                    }
                    Throttled::Login { .. } => (ApiErrorCode::LockedOut, "too many failed attempts for this login"),
                };
                ApiError { retry_after_seconds: Some(t.retry_after().as_secs().max(1)), ..ApiError::new(code, message) }
            }
            AccountError::Suspended => {
                ApiError::new(ApiErrorCode::Suspended, "license or account suspended or expired")
            }
            AccountError::SeatsFull { max } => {
                ApiError::new(ApiErrorCode::SeatsFull, format!("license has no free seat (maximum {max} users)"))
            }
            AccountError::Conflict(what) => ApiError::new(ApiErrorCode::Conflict, format!("{what} already exists")),
            AccountError::NotFound => ApiError::new(ApiErrorCode::NotFound, "no such user for this enterprise server"),
            AccountError::MsisdnNotApproved => {
                ApiError::new(ApiErrorCode::MsisdnNotApproved, "this MSISDN is not approved by the carrier")
            }
            AccountError::Forbidden => ApiError::new(ApiErrorCode::Forbidden, "not allowed for this role or token"),
            AccountError::NotActivated => {
                ApiError::new(ApiErrorCode::NotActivated, "account not activated: bind an MSISDN first")
            }
            AccountError::FeatureDisabled(f) => {
                ApiError::new(ApiErrorCode::FeatureDisabled, format!("{} is not enabled for this account", f.as_str()))
            }
            AccountError::CertificateRequired => {
                ApiError::bad_request("Csr: this license requires devices to activate with a certificate request")
            }
            AccountError::Invalid(m) => ApiError::bad_request(m.to_string()),
            AccountError::Unavailable(detail) => {
                tracing::warn!(%detail, "account store unavailable");
                ApiError {
                    retry_after_seconds: Some(5),
                    ..ApiError::new(ApiErrorCode::Unavailable, "account store unavailable; retry later")
                }
            }
            AccountError::Busy(detail) => {
                tracing::debug!(%detail, "account store busy");
                ApiError {
                    retry_after_seconds: Some(1),
                    ..ApiError::new(ApiErrorCode::Unavailable, "relay busy; retry shortly")
                }
            }
            AccountError::Internal(detail) => {
                tracing::error!(%detail, "internal error in account operation");
                ApiError::new(ApiErrorCode::Internal, "internal error")
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if let Some(s) = self.retry_after_seconds {
            resp.insert_header(("Retry-After", s.to_string()));
        }
        resp.json(ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } })
    }
}
