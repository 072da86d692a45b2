//! Errors of the portal's pages, each answered with a plain page that says what the person
//! can do, never with internals.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use thiserror::Error;

use crate::page;
use crate::portal::PortalError;

#[derive(Debug, Error)]
pub enum PageError {
    /// A state-changing request without a valid CSRF token, or from another site.
    #[error("forbidden")]
    Forbidden,
    #[error("the form could not be read")]
    BadForm,
    #[error("the form is too large")]
    TooLarge,
    #[error("not found")]
    NotFound,
    #[error("busy")]
    Busy,
    #[error("unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl From<PortalError> for PageError {
    fn from(e: PortalError) -> Self {
        match e {
            PortalError::NotFound => PageError::NotFound,
            PortalError::Busy | PortalError::Throttled { .. } => PageError::Busy,
            PortalError::Unavailable => PageError::Unavailable,
            PortalError::InvalidCredentials | PortalError::Suspended => PageError::Forbidden,
            PortalError::Invalid(_) | PortalError::MsisdnNotApproved | PortalError::MsisdnTaken => PageError::BadForm,
            PortalError::Internal => PageError::Internal,
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub link: Option<(&'a str, &'a str)>,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::Forbidden => StatusCode::FORBIDDEN,
            PageError::BadForm => StatusCode::BAD_REQUEST,
            PageError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Busy | PageError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (title, message) = match self {
            PageError::Forbidden => (
                "Request refused",
                "This form has expired or did not come from this site. Go back, reload the page and try again.",
            ),
            PageError::BadForm => ("Form not understood", "The form could not be read. Reload the page and try again."),
            PageError::TooLarge => ("Form too large", "The form is larger than this site accepts."),
            PageError::NotFound => ("Not found", "There is nothing at this address."),
            PageError::Busy => ("Busy", "The service is busy. Please try again in a few seconds."),
            PageError::Unavailable => {
                ("Temporarily unavailable", "The service is temporarily unavailable. Please try again shortly.")
            }
            PageError::Internal => ("Something went wrong", "Something went wrong on our side. Please try again."),
        };
        let mut builder = HttpResponse::build(self.status_code());
        if matches!(self, PageError::Busy | PageError::Unavailable) {
            builder.insert_header(("Retry-After", "5"));
        }
        page::render_with(builder, &MessagePage { title, message, link: Some(("/", "Home")) })
    }
}
