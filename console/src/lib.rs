//! The operator side of the NOC (white paper §3.7.1–3.7.2, §8.5–8.7): the admin REST API
//! under `/admin/v1` and the HTML consoles under `/console`, served on the node's console
//! listener (its own port, loopback by default: operator interfaces are reachable only
//! from the carrier's network).
//!
//! Both sides call the same service layer, `noc_storage::operations` on
//! [`noc_storage::Accounts`], with the [`noc_storage::Principal`] the request
//! authenticated as; who may do what is decided there, once. What reaches live sessions
//! (a suspended user's devices disconnect at once, wherever they are) goes through the
//! [`Live`] trait, which the node implements over its router.
//!
//! The API's OpenAPI 3.1 document is generated from the handlers (utoipa): the routes the
//! server mounts and the document are built by the same calls, so they cannot drift.

mod actions;
pub mod api;
mod csv;
mod state;
mod views;

use actix_web::web;

pub use api::openapi::{openapi, openapi_json};
pub use state::{ConsoleSettings, ConsoleState, Live, NodeSessions};

/// Mounts the admin API and the consoles (the caller adds the [`ConsoleState`] as app
/// data).
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Before the scope, which would otherwise take the path as one of its own.
    cfg.route("/admin/v1/openapi.json", web::get().to(api::openapi::serve))
        .service(utoipa_actix_web::scope("/admin/v1").configure(api::configure));
    views::routes(cfg);
}
