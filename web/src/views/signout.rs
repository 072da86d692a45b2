//! `POST /logout`: the session's token is deleted on the server and the cookie cleared.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::errors::PageError;
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
    if !csrf::same_origin(&req) {
        return Err(PageError::Forbidden);
    }
    let f: SignOutForm = form::read(payload).await?;
    match presence(&state, &req).await? {
        Presence::SignedIn { token, .. } => {
            if !csrf::matches(&csrf::for_session(&token), &f.csrf) {
                return Err(PageError::Forbidden);
            }
            state.portal.sign_out(&token).await?;
        }
        // Already ended: nothing to do but forget the cookie.
        Presence::Ended | Presence::Anonymous => {}
    }
    Ok(page::see_other("/login?signed_out=1").append_header(("Set-Cookie", cookies::clear(cookies::SESSION))).finish())
}
