//! The portal's cookies. Both carry the `__Host-` prefix, so a browser accepts them only
//! from this exact origin over HTTPS, with `Path=/` and no `Domain`: a sibling subdomain
//! cannot plant or overwrite them (which is also what makes the double-submit CSRF
//! cookie trustworthy).

use std::time::Duration;

use actix_web::HttpRequest;

/// The session token.
pub const SESSION: &str = "__Host-noc_session";
/// The sign-in form's CSRF token (before there is a session).
pub const CSRF: &str = "__Host-noc_csrf";

/// The value of cookie `name` in the request, if sent once and well-formed. Values the
/// portal sets are lowercase hex, so anything else is treated as absent.
pub fn get(req: &HttpRequest, name: &str) -> Option<String> {
    let mut found = None;
    for header in req.headers().get_all(actix_web::http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else { continue };
            if k == name {
                if found.is_some() {
                    // Two cookies of one name: someone is playing games; trust neither.
                    return None;
                }
                found = Some(v.to_string());
            }
        }
    }
    found.filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A `Set-Cookie` value: `Secure; HttpOnly; Path=/`, the given `SameSite`, and
/// `Max-Age` when the cookie should outlive the browser session.
pub fn set(name: &str, value: &str, same_site: &str, max_age: Option<Duration>) -> String {
    let mut c = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    c
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn reads_one_well_formed_value_only() {
        let req =
            TestRequest::default().insert_header(("Cookie", "a=1; __Host-noc_session=abc123; b=2")).to_http_request();
        assert_eq!(get(&req, SESSION).as_deref(), Some("abc123"));
        assert_eq!(get(&req, CSRF), None);
        let twice = TestRequest::default()
            .insert_header(("Cookie", "__Host-noc_session=aa"))
            .append_header(("Cookie", "__Host-noc_session=bb"))
            .to_http_request();
        assert_eq!(get(&twice, SESSION), None, "two values: neither");
        let odd = TestRequest::default().insert_header(("Cookie", "__Host-noc_session=<script>")).to_http_request();
        assert_eq!(get(&odd, SESSION), None);
    }

    #[test]
    fn cookies_carry_the_flags() {
        assert_eq!(set(SESSION, "ab", "Lax", None), "__Host-noc_session=ab; Path=/; Secure; HttpOnly; SameSite=Lax");
        assert!(set(SESSION, "ab", "Lax", Some(Duration::from_secs(60))).ends_with("; Max-Age=60"));
        assert!(clear(SESSION).contains("Max-Age=0"));
    }
}
