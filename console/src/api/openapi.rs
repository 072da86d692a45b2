//! The admin API's OpenAPI 3.1 document, generated from the handlers: the document and
//! the routes the server mounts come from the same [`super::configure`], so they cannot
//! drift; `docs/admin-api.openapi.json` is a committed copy (a test compares them).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

use super::auth::BearerScheme;
use super::error::{ErrorDetailDoc, ErrorDoc, ErrorResponses};

/// The admin API's document: the handlers' paths are added where they are mounted
/// ([`api::configure`]); this adds what is global.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "NOC admin API",
        description = "Operators' API of the push relay NOC: licenses, users, devices, operators and the audit \
                       log. Every request carries a bearer token (POST /admin/v1/tokens issues one); what it may \
                       do is the operator's role narrowed by the token's scope. A record outside the operator's \
                       reach answers 404 exactly like one that does not exist. Errors are \
                       {\"Error\":{\"Code\":..,\"Message\":..}} with the codes of docs/protocol.md §2.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorDoc, ErrorDetailDoc)),
    tags(
        (name = "tokens", description = "Signing in: bearer tokens"),
        (name = "licenses", description = "Enterprise licenses"),
        (name = "users", description = "Users and their devices (never their data)"),
        (name = "operators", description = "Operator accounts"),
        (name = "audit", description = "The audit log"),
        (name = "nodes", description = "The cluster's live nodes and their sessions"),
        (name = "msisdns", description = "The carrier's MSISDN approval list"),
        (name = "usage", description = "Usage per license and day (billing, capacity)"),
    )
)]
struct ApiDoc;

/// The admin API's OpenAPI document, as the server mounts it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .service(utoipa_actix_web::scope("/admin/v1").configure(super::configure))
        .split_for_parts();
    // After the paths are in: every response described, every error with its body.
    ErrorResponses.modify(&mut doc);
    doc
}

/// [`openapi`] as the pretty-printed JSON committed under docs/.
pub fn openapi_json() -> String {
    let mut text = openapi().to_pretty_json().unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// `GET /admin/v1/openapi.json`: the document of this API (no token needed).
pub async fn serve() -> HttpResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    HttpResponse::Ok().content_type("application/json").body(DOC.get_or_init(openapi_json).clone())
}
