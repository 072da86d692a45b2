//! `POST /logout`: the session's token is deleted on the server and the cookie cleared.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::i18n::Lang;
use crate::{Presence, WebState, cookies, csrf, form, page, presence};

#[derive(Deserialize)]
pub struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    end_session(&state, &req, payload).await?;
    Ok(signed_out(Lang::of(&req, None)))
}

/// Ends the session of a posted sign-out form (this site's, carrying the session's CSRF
/// value) on the server. A session already ended leaves nothing to do but forget the
/// cookie, which the caller's answer does.
pub(crate) async fn end_session(state: &WebState, req: &HttpRequest, payload: web::Payload) -> Result<(), PageError> {
    if !csrf::same_origin(req) {
        return Err(PageError::Forbidden);
    }
    let f: SignOutForm = form::read(payload).await?;
    if let Presence::SignedIn { token, .. } = presence(state, req).await? {
        if !csrf::matches(&csrf::for_session(&token), &f.csrf) {
            return Err(PageError::Forbidden);
        }
        state.portal.sign_out(&token).await?;
    }
    Ok(())
}

/// Shown for a moment on sign-out, then replaced by the sign-in page.
#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage {
    pub t: Lang,
}

/// The answer that ends a browser's session: the cookie cleared, the browser told to drop
/// what it holds of the site, and a page that moves on to the sign-in page at once.
///
/// Why not a plain redirect: `no-store` keeps the account page out of the HTTP cache, but
/// browsers may keep it in their back/forward cache, and Chrome restores such a page on
/// Back unless a cookie changed *after* the page was frozen. With a redirect, the cookie
/// is cleared before that moment. This page is committed first (freezing the account
/// page), then its refresh loads the sign-in page, whose new CSRF cookie is such a change;
/// Back then loads the account page afresh, which the server answers with the sign-in
/// page. The refresh replaces this page in the history; it works without script, and the
/// page has a link for browsers that do not refresh.
pub fn signed_out(t: Lang) -> HttpResponse {
    let mut builder = HttpResponse::Ok();
    builder
        .append_header(("Set-Cookie", cookies::clear(cookies::SESSION)))
        .append_header(("Set-Cookie", cookies::clear(cookies::CSRF)))
        .insert_header(("Clear-Site-Data", "\"cache\""));
    page::render_with(builder, &SignedOutPage { t })
}
