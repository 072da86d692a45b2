//! Turning templates into answers, with the headers every portal page carries.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use askama::Template;

/// No script at all, styles and images from this origin only, forms posting only here,
/// never framed (white paper §6 pages work without JavaScript).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers of every HTML answer. Pages show personal data and depend
/// on the session: never stored by a cache, so Back after sign-out cannot show them.
pub fn secure(builder: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    builder
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        // Nothing of our URLs leaves the site; `no-referrer` would also make browsers send
        // `Origin: null` with our own forms, which the CSRF check refuses.
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Strict-Transport-Security", "max-age=31536000"))
        .insert_header(("Cache-Control", "no-store"))
}

/// Renders `template` as a page with `status`.
pub fn render<T: Template>(status: StatusCode, template: &T) -> HttpResponse {
    render_with(HttpResponse::build(status), template)
}

/// Renders `template` into a response started by the caller (cookies, extra headers).
pub fn render_with<T: Template>(mut builder: HttpResponseBuilder, template: &T) -> HttpResponse {
    match template.render() {
        Ok(html) => secure(&mut builder).content_type("text/html; charset=utf-8").body(html),
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            secure(&mut HttpResponse::InternalServerError())
                .content_type("text/plain; charset=utf-8")
                .body(crate::i18n::Lang::ENGLISH.get("error-internal"))
        }
    }
}

/// `answer` with `Retry-After` (whole seconds, at least 1), for a throttled attempt.
pub fn retry_after(mut answer: HttpResponse, after: std::time::Duration) -> HttpResponse {
    answer.headers_mut().insert(actix_web::http::header::RETRY_AFTER, after.as_secs().max(1).into());
    answer
}

/// `303 See Other` to `location` (after a form: Back does not post it again).
pub fn see_other(location: &str) -> HttpResponseBuilder {
    let mut b = HttpResponse::SeeOther();
    secure(&mut b).insert_header(("Location", location.to_string()));
    b
}

/// `2026-12-05 14:03 UTC`, for a Unix-ms time (the portal's user time zone setting comes
/// with the settings page; the consoles show UTC).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = noc_protocol::clock::civil_from_days(secs.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}
