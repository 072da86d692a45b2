//! Errors of the persistence layer.

use thiserror::Error;

/// What a [`crate::Store`] operation can fail with. Backend details stay in the message
/// for logs; callers branch on the variant.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The row to update or delete does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint was violated; names the field.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The license has no free seat.
    #[error("license has no free seat (maximum {max})")]
    SeatsFull { max: u32 },
    /// The backend cannot be reached: retry later (seconds).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answers, but every pooled connection stayed taken for the whole wait:
    /// this node asks more of it than the pool allows. Retry shortly; nothing is down.
    #[error("store busy: {0}")]
    Busy(String),
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(err, msg) => match err.code {
                rusqlite::ErrorCode::ConstraintViolation => {
                    let text = msg.as_deref().unwrap_or("");
                    if text.contains("email") {
                        StoreError::Conflict("email")
                    } else if text.contains("msisdn") {
                        StoreError::Conflict("msisdn")
                    } else if text.contains("name") {
                        StoreError::Conflict("name")
                    } else {
                        StoreError::Conflict("record")
                    }
                }
                rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::DiskFull => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Backend(e.to_string()),
            },
            _ => StoreError::Backend(e.to_string()),
        }
    }
}
