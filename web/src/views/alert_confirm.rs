//! `GET|POST /alerts/confirm/{token}`: the link mailed to a new alert address. The page is
//! a button, not an action: mail scanners open links, and only a person should confirm.
//! Nobody needs to be signed in (the link may be opened on a phone), so the form carries
//! the pre-sign-in double-submit token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::{MessagePage, PageError};
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::PortalError;
use crate::{WebState, page};

#[derive(Template)]
#[template(path = "alert_confirm.html")]
pub struct ConfirmPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub token: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for ConfirmForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `<user id>.<64 hex digits>`; anything else names no link of ours.
fn well_formed(token: &str) -> bool {
    token.split_once('.').is_some_and(|(id, secret)| {
        id.len() == 36
            && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            && secret.len() == 64
            && secret.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn invalid(t: Lang) -> HttpResponse {
    let (title, message) = (t.get("alert-confirm-invalid-title"), t.get("alert-confirm-invalid"));
    let home = t.get("home-link");
    page::render(
        StatusCode::BAD_REQUEST,
        &MessagePage { t, title: &title, message: &message, link: Some(("/", &home)) },
    )
}

pub async fn show(req: HttpRequest, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let t = Lang::of(&req, None);
    if !well_formed(&token) {
        return Ok(invalid(t));
    }
    let (csrf, builder) = guard::anonymous_csrf(&req, StatusCode::OK);
    Ok(page::render_with(builder, &ConfirmPage { t, csrf: &csrf, token: &token }))
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    token: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let _: ConfirmForm = guard::anonymous_form(&req, payload).await?;
    let t = Lang::of(&req, None);
    if !well_formed(&token) {
        return Ok(invalid(t));
    }
    match state.portal.confirm_alert_email(&token).await {
        Ok(address) => {
            let (title, message) =
                (t.get("alert-confirm-done-title"), t.get1("alert-confirm-done", "address", &address));
            let home = t.get("home-link");
            Ok(page::render(
                StatusCode::OK,
                &MessagePage { t, title: &title, message: &message, link: Some(("/", &home)) },
            ))
        }
        Err(PortalError::InvalidCredentials) => Ok(invalid(t)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_token_shape_is_looked_up() {
        let good = format!("{}.{}", "0f8c2f64-3b7e-4a53-9d8e-3c2b1a0f9e8d", "ab".repeat(32));
        assert!(well_formed(&good));
        for bad in ["", "x.y", &good[1..], &format!("{good}0"), &good.replace('.', ":"), "../../etc"] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
