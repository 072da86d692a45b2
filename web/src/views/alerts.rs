//! `GET|POST /settings/alerts`: where the user's new-mail alerts go (white paper §4.7): an
//! e-mail address, an HTTPS webhook (with the key its signatures are made with), whether
//! alerts carry an excerpt of the mail, and quiet hours in the user's time zone. Which mail
//! makes an alert is the rules of the settings page.
//!
//! An e-mail address other than the account's own is confirmed first: the relay mails it
//! a link (`GET|POST /alerts/confirm/{token}`, a button, so that a mail scanner following
//! links confirms nothing), and alerts go there once its owner pressed it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::i18n::Lang;
use crate::portal::{AlertSettings, PortalError};
use crate::{WebState, page};

#[derive(Template)]
#[template(path = "settings_alerts.html")]
pub struct AlertsPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    /// The address the user wants alerts at: the one waiting for confirmation, if any,
    /// else the confirmed one.
    pub email: String,
    /// An address waiting for confirmation, and the confirmed one that gets alerts until
    /// then (empty: none).
    pub pending_email: Option<String>,
    pub confirmed_email: String,
    pub webhook_url: String,
    pub webhook_secret: Option<String>,
    pub sms: bool,
    pub wap_push: bool,
    /// The relay has an SMSC: SMS and WAP Push are offered.
    pub offer_sms: bool,
    pub excerpt: bool,
    pub quiet_from: Option<u8>,
    pub quiet_to: Option<u8>,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl AlertsPage<'_> {
    /// The hours of a day, for the quiet-hours lists.
    pub fn hours(&self) -> std::ops::Range<u8> {
        0..24
    }
}

fn page_of<'a>(
    t: Lang,
    csrf: &'a str,
    s: AlertSettings,
    offer_sms: bool,
    notice: Option<String>,
    error: Option<String>,
) -> AlertsPage<'a> {
    AlertsPage {
        t,
        csrf,
        sms: s.sms,
        wap_push: s.wap_push,
        offer_sms,
        email: s.pending_email.clone().or_else(|| s.email.clone()).unwrap_or_default(),
        confirmed_email: s.email.unwrap_or_default(),
        pending_email: s.pending_email,
        webhook_url: s.webhook_url.unwrap_or_default(),
        webhook_secret: s.webhook_secret,
        excerpt: s.excerpt,
        quiet_from: s.quiet_from,
        quiet_to: s.quiet_to,
        notice,
        error,
    }
}

pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let t = user.t;
    let settings = state.portal.alert_settings(&user.visitor.profile.user_id).await?;
    let notice = match (req.query_string(), &settings.pending_email) {
        ("saved=1", _) => Some(t.get("alerts-saved")),
        ("confirm=1", Some(address)) => Some(t.get1("alerts-confirm-sent", "address", address)),
        _ => None,
    };
    let csrf = user.csrf();
    Ok(page::render(StatusCode::OK, &page_of(t, &csrf, settings, state.settings.offer_sms, notice, None)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    webhook_url: String,
    #[serde(default)]
    sms: Option<String>,
    #[serde(default)]
    wap_push: Option<String>,
    #[serde(default)]
    excerpt: Option<String>,
    #[serde(default)]
    quiet_from: String,
    #[serde(default)]
    quiet_to: String,
    #[serde(default)]
    new_secret: Option<String>,
}

impl WithCsrf for AlertsForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// An hour from the list (`""`: none).
fn hour(v: &str) -> Result<Option<u8>, PageError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u8>().ok().filter(|h| *h < 24).map(Some).ok_or(PageError::BadForm)
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, f) = match guard::signed_in_form::<AlertsForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let t = user.t;
    let settings = AlertSettings {
        email: Some(f.email.trim().to_string()).filter(|e| !e.is_empty()),
        pending_email: None,
        webhook_url: Some(f.webhook_url.trim().to_string()).filter(|u| !u.is_empty()),
        webhook_secret: None,
        sms: f.sms.is_some() && state.settings.offer_sms,
        wap_push: f.wap_push.is_some() && state.settings.offer_sms,
        excerpt: f.excerpt.is_some(),
        quiet_from: hour(&f.quiet_from)?,
        quiet_to: hour(&f.quiet_to)?,
    };
    let user_id = user.visitor.profile.user_id.clone();
    match state.portal.set_alert_settings(&user_id, settings.clone(), f.new_secret.is_some()).await {
        Ok(None) => Ok(page::see_other("/settings/alerts?saved=1").finish()),
        Ok(Some(_)) => Ok(page::see_other("/settings/alerts?confirm=1").finish()),
        Err(PortalError::Invalid(problem)) => {
            let csrf = user.csrf();
            let shown = AlertSettings { webhook_secret: None, ..settings };
            let offer_sms = state.settings.offer_sms;
            let page = page_of(t, &csrf, shown, offer_sms, None, Some(t.problem(problem)));
            Ok(page::render(StatusCode::BAD_REQUEST, &page))
        }
        Err(e) => Err(e.into()),
    }
}
