//! The admin REST API, `/admin/v1/…`: JSON, bearer tokens, the protocol's error bodies.
//! Every handler is declared once, with its OpenAPI description beside it; [`configure`]
//! mounts them and, through the same calls, lists them in the document.

mod audit;
pub mod auth;
mod body;
pub mod error;
mod licenses;
pub mod model;
pub mod msisdns;
mod nodes;
pub mod openapi;
mod operators;
mod tokens;
pub mod usage;
mod users;

use actix_web::{HttpResponse, web};
use utoipa_actix_web::service_config::ServiceConfig;

/// Mounts the API's routes (inside the `/admin/v1` scope).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(tokens::issue)
        .service(tokens::list)
        .service(tokens::revoke)
        .service(licenses::list)
        .service(licenses::create)
        .service(licenses::show)
        .service(licenses::change)
        .service(licenses::grantees)
        .service(licenses::grant)
        .service(licenses::ves)
        .service(users::search)
        .service(users::show)
        .service(users::change)
        .service(users::remove)
        .service(users::reset_secret_question)
        .service(users::mail_recovery)
        .service(users::suspend)
        .service(users::reactivate)
        .service(users::devices)
        .service(users::revoke_device)
        .service(users::wipe_device)
        .service(users::disconnect_device)
        .service(operators::list)
        .service(operators::create)
        .service(operators::disable)
        .service(operators::enable)
        .service(audit::list)
        .service(audit::csv)
        .service(msisdns::list)
        .service(msisdns::approve)
        .service(msisdns::import)
        .service(msisdns::revoke)
        .service(nodes::list)
        .service(usage::list)
        .service(usage::csv)
        .default_service(web::to(not_found));
}

async fn not_found() -> HttpResponse {
    use actix_web::ResponseError;
    error::ApiFailure::new(noc_protocol::ApiErrorCode::NotFound, "no such endpoint").error_response()
}
