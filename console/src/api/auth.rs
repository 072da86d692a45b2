//! Bearer tokens: every API request but the one that issues a token carries
//! `Authorization: Bearer <token>`; the token names its operator, and its scope narrows
//! what that operator's role allows.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use noc_storage::{Principal, TokenKind};
use utoipa::Modify;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::api::error::ApiFailure;
use crate::state::ConsoleState;

/// The operator a request authenticated as.
pub struct Operator(pub Principal);

impl FromRequest for Operator {
    type Error = ApiFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ConsoleState>>().cloned();
        let token = bearer(req);
        let source = req.peer_addr().map(|a| a.ip());
        Box::pin(async move {
            let (Some(state), Some(token)) = (state, token) else { return Err(ApiFailure::unauthorized()) };
            match state.accounts.operator_principal(&token, TokenKind::Api, None, source).await? {
                Some(p) => Ok(Operator(p)),
                None => Err(ApiFailure::unauthorized()),
            }
        })
    }
}

/// The token of `Authorization: Bearer <token>`: 64 hex digits, nothing else.
fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    let well_formed = token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit());
    (scheme.eq_ignore_ascii_case("bearer") && well_formed).then(|| token.to_ascii_lowercase())
}

/// Declares the bearer scheme in the OpenAPI document.
pub struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn only_a_well_formed_bearer_token_is_read() {
        let with = |v: &str| bearer(&TestRequest::default().insert_header(("Authorization", v)).to_http_request());
        let token = "ab".repeat(32);
        assert_eq!(with(&format!("Bearer {token}")), Some(token.clone()));
        assert_eq!(with(&format!("bearer  {}", token.to_uppercase())), Some(token.clone()));
        assert_eq!(with(&format!("Basic {token}")), None);
        assert_eq!(with("Bearer abc"), None);
        assert_eq!(with(&format!("Bearer {}", "zz".repeat(32))), None);
        assert_eq!(bearer(&TestRequest::default().to_http_request()), None);
    }
}
