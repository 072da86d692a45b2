//! The web portal for users (white paper §6): server-rendered pages on the public
//! listener beside the RTS API.
//!
//! One view module per page under [`views`], each beside its template in `templates/`
//! (askama: compiled with the code, HTML-escaped by default); cookies, CSRF, form
//! reading and error pages are small modules of their own. Pages need no JavaScript and
//! load nothing from elsewhere: the one stylesheet is served from here. Sessions live in
//! the store behind [`Portal`], so any node serves any session.

pub mod assets;
mod browse;
pub mod cookies;
pub mod csrf;
mod errors;
pub mod form;
mod guard;
pub mod i18n;
pub mod page;
pub mod portal;
mod user_agent;
mod views;
pub mod wml;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, web};

pub use errors::PageError;
pub use page::CONTENT_SECURITY_POLICY;

/// A user's time zone setting (an IANA name or a UTC offset) as a zone; UTC for none or
/// one not known here.
pub fn time_zone(name: Option<&str>) -> jiff::tz::TimeZone {
    browse::zone(name)
}
pub use portal::{Portal, PortalError, Profile, SessionInfo, SignedIn, Visitor};

/// How the portal behaves.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// Offer "keep me signed in" (the store's persistent sessions are enabled).
    pub offer_persistent: bool,
    /// Offer password recovery by mail (the relay has an SMTP server).
    pub offer_recovery: bool,
    /// Offer SMS and WAP Push alerts (the relay has an SMSC).
    pub offer_sms: bool,
}

/// What the portal's handlers share; cheap to clone.
#[derive(Clone)]
pub struct WebState {
    pub portal: Arc<dyn Portal>,
    pub settings: Arc<WebSettings>,
}

/// The portal's routes. Mount them before a catch-all default service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Each wrapped so that an error page comes in the reader's language.
    let page = |path: &str| web::resource(path.to_string()).wrap(from_fn(errors::localized));
    let deck = |path: &str| web::resource(path.to_string()).wrap(from_fn(views::wap::decks));
    cfg.service(page("/").route(web::get().to(views::home::show)))
        .service(
            page("/activate")
                .route(web::get().to(views::activate::show))
                .route(web::post().to(views::activate::submit)),
        )
        .service(page("/login").route(web::get().to(views::signin::show)).route(web::post().to(views::signin::submit)))
        .service(page("/logout").route(web::post().to(views::signout::submit)))
        .service(
            page("/recover").route(web::get().to(views::recover::show)).route(web::post().to(views::recover::submit)),
        )
        // Before `/recover/{token}`: a token is hex digits, never `question`.
        .service(
            page("/recover/question")
                .route(web::get().to(views::recover::show_question))
                .route(web::post().to(views::recover::submit_question)),
        )
        .service(
            page("/recover/{token}")
                .route(web::get().to(views::recover::show_reset))
                .route(web::post().to(views::recover::submit_reset)),
        )
        .service(page("/devices").route(web::get().to(views::devices::show)))
        .service(page("/devices/{id}/rename").route(web::post().to(views::devices::rename)))
        .service(page("/devices/{id}/revoke").route(web::post().to(views::devices::revoke)))
        .service(
            page("/devices/{id}/wipe")
                .route(web::get().to(views::devices::confirm_wipe))
                .route(web::post().to(views::devices::wipe)),
        )
        .service(
            page("/settings")
                .route(web::get().to(views::settings::show))
                .route(web::post().to(views::settings::submit)),
        )
        .service(page("/settings/password").route(web::post().to(views::settings::change_password)))
        .service(
            page("/settings/alerts")
                .route(web::get().to(views::alerts::show))
                .route(web::post().to(views::alerts::submit)),
        )
        .service(
            page("/settings/question")
                .route(web::get().to(views::question::show))
                .route(web::post().to(views::question::submit)),
        )
        .service(
            page("/alerts/confirm/{token}")
                .route(web::get().to(views::alert_confirm::show))
                .route(web::post().to(views::alert_confirm::submit)),
        )
        .service(page("/settings/question/remove").route(web::post().to(views::question::remove)))
        .service(page("/sessions/{id}/revoke").route(web::post().to(views::home::revoke_session)))
        // Browse access from a PC (white paper §6.1). `/mail/compose` before the folders.
        .service(page("/mail").route(web::get().to(views::mail::inbox)))
        .service(
            page("/mail/compose")
                .route(web::get().to(views::compose::show))
                .route(web::post().to(views::compose::send)),
        )
        .service(page("/mail/{folder}").route(web::get().to(views::mail::folder)))
        .service(page("/mail/{folder}/{id}").route(web::get().to(views::mail::message)))
        .service(page("/mail/{folder}/{id}/attachments/{index}").route(web::get().to(views::mail::attachment)))
        .service(page("/mail/{folder}/{id}/delete").route(web::post().to(views::mail::delete)))
        .service(page("/mail/{folder}/{id}/move").route(web::post().to(views::mail::move_to)))
        .service(page("/calendar").route(web::get().to(views::calendar::show)))
        .service(
            page("/contacts").route(web::get().to(views::contacts::show)).route(web::post().to(views::contacts::add)),
        )
        .service(page("/contacts/{id}").route(web::get().to(views::contacts::contact)))
        // Browse access from a PDA: its own sign-in, small pages without images or scripts.
        .service(page("/pda").route(web::get().to(views::signin::show_pda)))
        .service(page("/pda/login").route(web::post().to(views::signin::submit_pda)))
        .service(page("/pda/mail").route(web::get().to(views::pda::folders)))
        .service(page("/pda/mail/{folder}").route(web::get().to(views::pda::folder)))
        .service(page("/pda/mail/{folder}/{id}").route(web::get().to(views::pda::message)))
        .service(page("/pda/mail/{folder}/{id}/delete").route(web::post().to(views::pda::delete)))
        .service(page("/pda/compose").route(web::get().to(views::pda::compose)).route(web::post().to(views::pda::send)))
        .service(page("/pda/calendar").route(web::get().to(views::pda::calendar)))
        .service(page("/pda/contacts").route(web::get().to(views::pda::contacts)))
        .service(page("/pda/contacts/{id}").route(web::get().to(views::pda::contact)))
        // Browse access from a WAP phone: WML 1.1 decks, errors as decks too.
        .service(deck("/wap").route(web::get().to(views::wap::show_sign_in)))
        .service(deck("/wap/login").route(web::post().to(views::wap::sign_in)))
        .service(deck("/wap/logout").route(web::post().to(views::wap::sign_out)))
        .service(deck("/wap/mail").route(web::get().to(views::wap::folders)))
        .service(deck("/wap/mail/{folder}").route(web::get().to(views::wap::folder)))
        .service(deck("/wap/mail/{folder}/{id}").route(web::get().to(views::wap::message)))
        .service(deck("/wap/mail/{folder}/{id}/delete").route(web::post().to(views::wap::delete)))
        .service(deck("/wap/compose").route(web::get().to(views::wap::compose)).route(web::post().to(views::wap::send)))
        .service(deck("/wap/calendar").route(web::get().to(views::wap::calendar)))
        .service(deck("/wap/contacts").route(web::get().to(views::wap::contacts)))
        .service(deck("/wap/contacts/{id}").route(web::get().to(views::wap::contact)))
        .route(assets::STYLESHEET, web::get().to(assets::stylesheet));
}

/// What signed in, as a person would name it ("Firefox (Windows)").
fn client(req: &HttpRequest) -> String {
    user_agent::describe(req.headers().get("User-Agent").and_then(|v| v.to_str().ok()).unwrap_or(""))
}

/// The client's address, for the password throttle.
fn source(req: &HttpRequest) -> IpAddr {
    req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Whether the request came with a session cookie, and whose live session it is.
pub(crate) enum Presence {
    /// No session cookie.
    Anonymous,
    /// A cookie whose session has ended (timed out, signed out elsewhere, revoked).
    Ended,
    SignedIn {
        visitor: Box<Visitor>,
        token: String,
    },
}

pub(crate) async fn presence(state: &WebState, req: &HttpRequest) -> Result<Presence, PageError> {
    let Some(token) = cookies::get(req, cookies::SESSION) else { return Ok(Presence::Anonymous) };
    Ok(match state.portal.session(&token).await? {
        Some(visitor) => Presence::SignedIn { visitor: Box::new(visitor), token },
        None => Presence::Ended,
    })
}
