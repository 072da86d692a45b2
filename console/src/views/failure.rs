//! Console error pages: a status and a sentence, never an internal detail.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;
use noc_storage::AccountError;
use noc_web::page;

#[derive(Template)]
#[template(path = "console_message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
}

/// A page that says what went wrong.
pub fn message(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    page::render(status, &MessagePage { title, text })
}

/// What an account-service refusal looks like in the console.
pub fn from_account(e: AccountError) -> HttpResponse {
    let (status, title, text) = match e {
        AccountError::Forbidden => (StatusCode::FORBIDDEN, "Not allowed", "Your role does not allow this."),
        AccountError::NotFound => (StatusCode::NOT_FOUND, "Not found", "There is no such record."),
        AccountError::Conflict(_) => (StatusCode::CONFLICT, "Already exists", "That name is taken."),
        AccountError::Invalid(ref i) => {
            return message(StatusCode::BAD_REQUEST, "Check the form", &i.to_string());
        }
        AccountError::Unavailable(_) | AccountError::Busy(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "Try again", "The account store is unavailable; try again shortly.")
        }
        other => {
            tracing::error!(error = %other, "console: account service failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "The request failed; it is in the log.")
        }
    };
    message(status, title, text)
}

/// A form that was not this sign-in's own.
pub fn forged() -> HttpResponse {
    message(StatusCode::FORBIDDEN, "Form expired", "Open the page again and resubmit the form.")
}

/// A form that could not be read.
pub fn bad_form() -> HttpResponse {
    message(StatusCode::BAD_REQUEST, "Check the form", "The form was incomplete or could not be read.")
}
