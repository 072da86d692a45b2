//! The consoles of NOC administrators, CSRs and auditors: one view module per page beside
//! its template in `templates/`, server-rendered and usable without JavaScript, the
//! portal's security headers and stylesheet. Every action goes through the same service
//! layer as the admin API, with the signed-in operator's [`noc_storage::Principal`].

mod audit;
mod failure;
mod features;
mod licenses;
mod msisdns;
mod nodes;
mod operators;
mod session;
mod signin;
mod usage;
mod users;

use actix_web::{HttpRequest, HttpResponse, web};
use noc_storage::{Permission, Principal, permits};
use noc_web::assets;

/// What the navigation bar shows: the pages the operator's role opens.
pub struct Nav {
    pub name: String,
    pub role: &'static str,
    pub csrf: String,
    pub licenses: bool,
    pub users: bool,
    pub operators: bool,
    pub audit: bool,
    pub usage: bool,
    pub msisdns: bool,
    pub nodes: bool,
}

impl Nav {
    fn of(session: &session::Session) -> Nav {
        let p = &session.principal;
        let may = |permission| permits(p.role, p.scope, permission);
        Nav {
            name: p.name.clone(),
            role: p.role.as_str(),
            csrf: session.csrf.clone(),
            licenses: may(Permission::ReadLicenses),
            users: may(Permission::ReadUsers),
            operators: may(Permission::ReadOperators),
            audit: may(Permission::ReadAudit),
            usage: may(Permission::ReadUsage),
            msisdns: permits(p.role, noc_storage::TokenScope::Write, Permission::ManageMsisdns),
            nodes: may(Permission::ReadNodes),
        }
    }
}

/// The first page an operator sees: the first their role opens.
fn home_of(p: &Principal) -> &'static str {
    if permits(p.role, p.scope, Permission::ReadLicenses) { "/console/licenses" } else { "/console/audit" }
}

async fn home(state: web::Data<crate::state::ConsoleState>, req: HttpRequest) -> HttpResponse {
    match session::current(&state, &req).await {
        Ok(Some(s)) => noc_web::page::see_other(home_of(&s.principal)).finish(),
        Ok(None) => session::to_sign_in(),
        Err(e) => failure::from_account(e),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::actions::DeviceAction::{Disconnect, Revoke, Wipe};
    cfg.route("/console", web::get().to(|| async { noc_web::page::see_other("/console/").finish() }))
        .route("/console/", web::get().to(home))
        .service(web::resource("/console/login").get(signin::show).post(signin::submit))
        .route("/console/logout", web::post().to(signin::sign_out))
        .route("/console/licenses", web::get().to(licenses::show))
        .route("/console/licenses", web::post().to(licenses::create))
        .route("/console/licenses/{id}", web::get().to(licenses::detail))
        .route("/console/licenses/{id}", web::post().to(licenses::change))
        .route("/console/users", web::get().to(users::search))
        .route("/console/users/{id}", web::get().to(users::show))
        .route("/console/users/{id}/suspend", web::post().to(|s, r, i, p| users::set_suspended(s, r, i, p, true)))
        .route("/console/users/{id}/profile", web::post().to(users::change_profile))
        .route("/console/users/{id}/secret-question/reset", web::post().to(users::reset_secret_question))
        .route("/console/users/{id}/delete", web::post().to(users::delete))
        .route("/console/users/{id}/password-reset", web::post().to(users::mail_recovery))
        .route("/console/users/{id}/reactivate", web::post().to(|s, r, i, p| users::set_suspended(s, r, i, p, false)))
        .route(
            "/console/users/{id}/devices/{device}/revoke",
            web::post().to(|s, r, i, p| users::device_action(s, r, i, p, Revoke)),
        )
        .route(
            "/console/users/{id}/devices/{device}/wipe",
            web::post().to(|s, r, i, p| users::device_action(s, r, i, p, Wipe)),
        )
        .route(
            "/console/users/{id}/devices/{device}/disconnect",
            web::post().to(|s, r, i, p| users::device_action(s, r, i, p, Disconnect)),
        )
        .route("/console/operators", web::get().to(operators::show))
        .route("/console/operators", web::post().to(operators::create))
        .route(
            "/console/operators/{name}/disable",
            web::post().to(|s, r, n, p| operators::set_disabled(s, r, n, p, true)),
        )
        .route(
            "/console/operators/{name}/enable",
            web::post().to(|s, r, n, p| operators::set_disabled(s, r, n, p, false)),
        )
        .route("/console/licenses/{id}/grant", web::post().to(licenses::grant))
        .route("/console/licenses/{id}/features", web::post().to(licenses::change_features))
        .route("/console/licenses/{id}/devices", web::post().to(licenses::change_devices))
        .route("/console/users/{id}/access", web::post().to(users::change_access))
        .route("/console/audit", web::get().to(audit::show))
        .route("/console/audit.csv", web::get().to(audit::csv))
        .route("/console/msisdns", web::get().to(msisdns::show))
        .route("/console/msisdns", web::post().to(msisdns::approve))
        .route("/console/msisdns/revoke", web::post().to(msisdns::revoke))
        .route("/console/nodes", web::get().to(nodes::show))
        .route("/console/usage", web::get().to(usage::show))
        .route("/console/usage.csv", web::get().to(usage::csv))
        .route("/console/static/noc.css", web::get().to(assets::stylesheet));
}
