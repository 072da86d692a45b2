//! Cross-site request forgery protection for every state-changing form.
//!
//! * Signed in: the form carries a token derived from the session token
//!   (`SHA-256("noc-csrf" ‖ token)`). Another site can make the browser send the cookie
//!   but can read neither it nor the page, so it cannot compute the field; every node
//!   derives the same value without storing anything.
//! * Before sign-in (the sign-in form itself, against login CSRF): a random value in a
//!   `__Host-` cookie and the same value in the form (double submit).
//!
//! On top, a request whose `Origin` names another site is refused whatever it carries.

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The form field every portal form carries.
pub const FIELD: &str = "csrf";

/// The token of forms shown to the holder of `session_token`.
pub fn for_session(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"noc-csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// A fresh value for the double-submit cookie of the sign-in form.
pub fn fresh() -> String {
    noc_protocol::secrets::random_hex::<32>()
}

/// Whether the submitted value equals the expected one (constant time).
pub fn matches(expected: &str, submitted: &str) -> bool {
    expected.len() == submitted.len() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

/// Whether the request's `Origin`, when the browser sent one, is this site: the scheme is
/// always https and the host must be the `Host` the request was sent to.
pub fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get("Origin") else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let Some(host) = req.headers().get("Host").and_then(|h| h.to_str().ok()) else { return false };
    origin.eq_ignore_ascii_case(&format!("https://{host}"))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn session_tokens_are_bound_to_the_session() {
        let a = for_session("aaaa");
        assert_eq!(a, for_session("aaaa"), "same on every node");
        assert_ne!(a, for_session("aaab"));
        assert!(matches(&a, &a.clone()));
        assert!(!matches(&a, &for_session("aaab")));
        assert!(!matches(&a, ""));
        assert_ne!(fresh(), fresh());
    }

    #[test]
    fn foreign_origins_are_refused() {
        let req = |origin: Option<&str>| {
            let mut r = TestRequest::default().insert_header(("Host", "relay.example.net:8443"));
            if let Some(o) = origin {
                r = r.insert_header(("Origin", o));
            }
            r.to_http_request()
        };
        assert!(same_origin(&req(None)), "no Origin (older browsers, some GET forms)");
        assert!(same_origin(&req(Some("https://relay.example.net:8443"))));
        assert!(!same_origin(&req(Some("https://evil.example"))));
        assert!(!same_origin(&req(Some("http://relay.example.net:8443"))));
        assert!(!same_origin(&req(Some("null"))));
    }
}
