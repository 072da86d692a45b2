//! Errors of the portal's pages, each answered with a plain page that says what the person
//! can do, never with internals.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use thiserror::Error;

use crate::i18n::Lang;
use crate::page;
use crate::portal::{BrowseError, PortalError};

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
    /// A browse page got nothing from the user's enterprise server.
    #[error("browse: {0}")]
    Browse(BrowseError),
}

impl From<crate::form::FormError> for PageError {
    fn from(e: crate::form::FormError) -> Self {
        match e {
            crate::form::FormError::Bad => PageError::BadForm,
            crate::form::FormError::TooLarge => PageError::TooLarge,
        }
    }
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
    pub t: Lang,
    pub title: &'a str,
    pub message: &'a str,
    pub link: Option<(&'a str, &'a str)>,
}

impl PageError {
    /// The message ids of this error's title and text.
    pub(crate) fn words(&self) -> (&'static str, &'static str) {
        match self {
            PageError::Forbidden => ("error-forbidden-title", "error-forbidden"),
            PageError::BadForm => ("error-bad-form-title", "error-bad-form"),
            PageError::TooLarge => ("error-too-large-title", "error-too-large"),
            PageError::NotFound => ("error-not-found-title", "error-not-found"),
            PageError::Busy => ("error-busy-title", "error-busy"),
            PageError::Unavailable => ("error-unavailable-title", "error-unavailable"),
            PageError::Internal => ("error-internal-title", "error-internal"),
            PageError::Browse(e) => match e {
                BrowseError::NotAllowed => ("browse-not-allowed-title", "browse-not-allowed"),
                BrowseError::Offline => ("browse-offline-title", "browse-offline"),
                BrowseError::Unsupported => ("browse-unsupported-title", "browse-unsupported"),
                BrowseError::Timeout => ("browse-timeout-title", "browse-timeout"),
                BrowseError::Busy => ("error-busy-title", "browse-busy"),
                BrowseError::NotFound => ("error-not-found-title", "browse-not-found"),
                BrowseError::Refused(_) => ("browse-refused-title", "browse-refused"),
                BrowseError::SourceUnavailable => ("browse-source-title", "browse-source"),
                BrowseError::TooLarge => ("browse-too-large-title", "browse-too-large"),
                BrowseError::Internal => ("browse-internal-title", "browse-internal"),
            },
        }
    }

    /// The page for this error, in `t`.
    pub fn page(&self, t: Lang) -> HttpResponse {
        let (title, message) = self.words();
        let mut builder = HttpResponse::build(self.status_code());
        if matches!(
            self,
            PageError::Busy
                | PageError::Unavailable
                | PageError::Browse(BrowseError::Busy | BrowseError::Offline | BrowseError::SourceUnavailable)
        ) {
            builder.insert_header(("Retry-After", "5"));
        }
        let (title, message, home) = (t.get(title), t.get(message), t.get("home-link"));
        page::render_with(builder, &MessagePage { t, title: &title, message: &message, link: Some(("/", &home)) })
    }
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
            PageError::Browse(e) => match e {
                BrowseError::NotAllowed => StatusCode::FORBIDDEN,
                BrowseError::Offline | BrowseError::Busy | BrowseError::SourceUnavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                BrowseError::Unsupported => StatusCode::NOT_IMPLEMENTED,
                BrowseError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                BrowseError::NotFound => StatusCode::NOT_FOUND,
                BrowseError::Refused(_) => StatusCode::BAD_REQUEST,
                // The enterprise server answered, with something the relay cannot carry.
                BrowseError::TooLarge => StatusCode::BAD_GATEWAY,
                BrowseError::Internal => StatusCode::BAD_GATEWAY,
            },
        }
    }

    /// In English: [`localized`] answers in the reader's language instead, wherever the
    /// portal's routes are mounted.
    fn error_response(&self) -> HttpResponse {
        self.page(Lang::ENGLISH)
    }
}

/// Middleware of every portal route: a handler's [`PageError`] is answered in the
/// browser's language (a handler has the request; `ResponseError` has not).
pub async fn localized(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let lang = Lang::of(req.request(), None);
    let res = next.call(req).await?;
    let page = res.response().error().and_then(|e| e.as_error::<PageError>()).map(|e| e.page(lang));
    Ok(match page {
        Some(page) => res.into_response(page),
        None => res.map_into_boxed_body(),
    })
}
