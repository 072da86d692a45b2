//! Who may see a page and who may post a form, in one place: every view asks here instead
//! of repeating the checks.
//!
//! * A page for signed-in users: the session must be live and the account activated;
//!   anyone else gets the sign-in page, the "timed out" page, or the activation page.
//! * A form posted by a signed-in user: the same, and the request comes from this site
//!   (`Origin`) and carries the session's CSRF value.
//! * A form posted before sign-in (sign-in, activation): from this site, carrying the
//!   double-submit value of the `__Host-noc_csrf` cookie.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::de::DeserializeOwned;

use crate::errors::{MessagePage, PageError};
use crate::i18n::Lang;
use crate::{Presence, Visitor, WebState, cookies, csrf, form, page, presence};

/// A form that carries the CSRF field.
pub(crate) trait WithCsrf {
    fn csrf(&self) -> &str;
}

/// A form read as its fields in order (fields that repeat, such as rule rows).
impl WithCsrf for Vec<(String, String)> {
    fn csrf(&self) -> &str {
        self.iter().find(|(k, _)| k == csrf::FIELD).map(|(_, v)| v.as_str()).unwrap_or("")
    }
}

/// A signed-in, activated user's request: who, the session's token, and the language of
/// the pages (the user's choice, else the browser's).
pub(crate) struct SignedIn {
    pub visitor: Box<Visitor>,
    pub token: String,
    pub t: Lang,
}

impl SignedIn {
    /// The CSRF value of this session's forms.
    pub fn csrf(&self) -> String {
        csrf::for_session(&self.token)
    }
}

/// The page shown for a cookie whose session has ended; the cookie is cleared.
pub(crate) fn session_ended(t: Lang) -> HttpResponse {
    let mut builder = HttpResponse::build(StatusCode::OK);
    builder.append_header(("Set-Cookie", cookies::clear(cookies::SESSION)));
    let (title, message, link) = (t.get("session-ended-title"), t.get("session-ended"), t.get("signin-title"));
    page::render_with(builder, &MessagePage { t, title: &title, message: &message, link: Some(("/login", &link)) })
}

/// `/activate?login=…` for the user's address, percent-encoded.
pub(crate) fn activation_link(email: &str) -> String {
    let mut link = String::from("/activate?login=");
    for b in email.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => link.push(b as char),
            _ => link.push_str(&format!("%{b:02X}")),
        }
    }
    link
}

/// The signed-in, activated user; or the answer for everyone else.
pub(crate) async fn signed_in(
    state: &WebState,
    req: &HttpRequest,
) -> Result<Result<SignedIn, HttpResponse>, PageError> {
    signed_in_or(state, req, "/login").await
}

/// [`signed_in`], sending someone not signed in to `sign_in` (the PDA's own sign-in page).
pub(crate) async fn signed_in_or(
    state: &WebState,
    req: &HttpRequest,
    sign_in: &str,
) -> Result<Result<SignedIn, HttpResponse>, PageError> {
    Ok(match presence(state, req).await? {
        Presence::Anonymous => Err(page::see_other(sign_in).finish()),
        Presence::Ended => Err(session_ended(Lang::of(req, None))),
        // Until the account is activated (own password, mobile number), nothing else.
        Presence::SignedIn { visitor, .. } if !visitor.profile.activated => {
            Err(page::see_other(&activation_link(&visitor.profile.email)).finish())
        }
        Presence::SignedIn { visitor, token } => {
            let t = Lang::of(req, visitor.profile.locale.as_deref());
            Ok(SignedIn { visitor, token, t })
        }
    })
}

/// A form posted by a signed-in user, checked (see the module documentation); `Err`
/// answers for someone not, or no longer, signed in.
pub(crate) async fn signed_in_form<T: DeserializeOwned + WithCsrf>(
    state: &WebState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Result<(SignedIn, T), HttpResponse>, PageError> {
    signed_in_form_for(state, req, payload, false).await
}

/// The WAP decks' [`signed_in`]: someone not (or no longer) signed in goes to the WAP
/// sign-in deck, never to an HTML page a phone cannot show.
pub(crate) async fn signed_in_wap(
    state: &WebState,
    req: &HttpRequest,
) -> Result<Result<SignedIn, HttpResponse>, PageError> {
    Ok(match presence(state, req).await? {
        Presence::Anonymous => Err(page::see_other("/wap").finish()),
        Presence::Ended => {
            let mut answer = page::see_other("/wap");
            answer.append_header(("Set-Cookie", cookies::clear(cookies::SESSION)));
            Err(answer.finish())
        }
        Presence::SignedIn { visitor, .. } if !visitor.profile.activated => {
            Err(page::see_other(&activation_link(&visitor.profile.email)).finish())
        }
        Presence::SignedIn { visitor, token } => {
            let t = Lang::of(req, visitor.profile.locale.as_deref());
            Ok(SignedIn { visitor, token, t })
        }
    })
}

/// The WAP decks' [`signed_in_form`].
pub(crate) async fn signed_in_form_wap<T: DeserializeOwned + WithCsrf>(
    state: &WebState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Result<(SignedIn, T), HttpResponse>, PageError> {
    signed_in_form_for(state, req, payload, true).await
}

async fn signed_in_form_for<T: DeserializeOwned + WithCsrf>(
    state: &WebState,
    req: &HttpRequest,
    payload: web::Payload,
    wap: bool,
) -> Result<Result<(SignedIn, T), HttpResponse>, PageError> {
    if !csrf::same_origin(req) {
        return Err(PageError::Forbidden);
    }
    let form: T = form::read(payload).await?;
    let who = if wap { signed_in_wap(state, req).await? } else { signed_in(state, req).await? };
    let user = match who {
        Ok(u) => u,
        Err(answer) => return Ok(Err(answer)),
    };
    if !csrf::matches(&user.csrf(), form.csrf()) {
        return Err(PageError::Forbidden);
    }
    Ok(Ok((user, form)))
}

/// The double-submit value for a form shown before sign-in, and the response builder to
/// answer with: the cookie's value when the browser has one, else a new value set as the
/// `__Host-noc_csrf` cookie (`SameSite=Strict`).
pub(crate) fn anonymous_csrf(req: &HttpRequest, status: StatusCode) -> (String, actix_web::HttpResponseBuilder) {
    let mut builder = HttpResponse::build(status);
    let token = match cookies::get(req, cookies::CSRF) {
        Some(t) => t,
        None => {
            let t = csrf::fresh();
            builder.append_header(("Set-Cookie", cookies::set(cookies::CSRF, &t, "Strict", None)));
            t
        }
    };
    (token, builder)
}

/// A form posted before sign-in, checked against the double-submit cookie.
pub(crate) async fn anonymous_form<T: DeserializeOwned + WithCsrf>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, PageError> {
    if !csrf::same_origin(req) {
        return Err(PageError::Forbidden);
    }
    let form: T = form::read(payload).await?;
    let expected = cookies::get(req, cookies::CSRF).ok_or(PageError::Forbidden)?;
    if !csrf::matches(&expected, form.csrf()) {
        return Err(PageError::Forbidden);
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_links_encode_the_address() {
        assert_eq!(activation_link("bob+x@example.com"), "/activate?login=bob%2Bx%40example.com");
    }

    #[test]
    fn repeated_fields_find_their_csrf_value() {
        let pairs = vec![("a".to_string(), "1".to_string()), ("csrf".to_string(), "c".to_string())];
        assert_eq!(pairs.csrf(), "c");
        assert_eq!(Vec::<(String, String)>::new().csrf(), "");
    }
}
