//! `GET/POST /activate`: account activation from the welcome mail's link (white paper
//! §3.6). The user proves the mailed credentials, binds a mobile number (carrier approval
//! list honoured) and a time zone, and must choose their own password before going on;
//! then they are signed in. `POST /account/v1/activate` stays for scripted clients.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::i18n::Lang;
use crate::portal::PortalError;
use crate::{Presence, WebState, client, cookies, guard, page, presence, source};

/// IANA time zones (zone1970.tab's, and UTC), one per line.
const TIME_ZONES: &str = include_str!("../../static/timezones.txt");

pub fn time_zones() -> impl Iterator<Item = &'static str> {
    TIME_ZONES.lines().map(str::trim).filter(|l| !l.is_empty())
}

#[derive(Template)]
#[template(path = "activate.html")]
pub struct ActivatePage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub login: &'a str,
    pub msisdn: &'a str,
    /// Every zone, with whether it is the one selected.
    pub zones: Vec<(&'static str, bool)>,
    pub error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ActivateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    msisdn: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

impl guard::WithCsrf for ActivateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub struct ActivateQuery {
    #[serde(default)]
    login: Option<String>,
}

fn form_page(req: &HttpRequest, status: StatusCode, f: &ActivateForm, error: Option<String>) -> HttpResponse {
    let (token, builder) = guard::anonymous_csrf(req, status);
    let time_zone = if f.time_zone.is_empty() { "UTC" } else { f.time_zone.as_str() };
    let p = ActivatePage {
        t: Lang::of(req, None),
        csrf: &token,
        login: &f.login,
        msisdn: &f.msisdn,
        zones: time_zones().map(|z| (z, z == time_zone)).collect(),
        error,
    };
    page::render_with(builder, &p)
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<WebState>,
    query: web::Query<ActivateQuery>,
) -> Result<HttpResponse, PageError> {
    if let Presence::SignedIn { visitor, .. } = presence(&state, &req).await?
        && visitor.profile.activated
    {
        return Ok(page::see_other("/").finish());
    }
    let login: String = query.login.as_deref().unwrap_or("").chars().take(254).collect();
    Ok(form_page(&req, StatusCode::OK, &ActivateForm { login, ..ActivateForm::default() }, None))
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let mut f: ActivateForm = guard::anonymous_form(&req, payload).await?;
    f.login = f.login.trim().to_string();
    let t = Lang::of(&req, None);
    let refuse = |f: &ActivateForm, status: StatusCode, message: String| {
        let mut blank = ActivateForm {
            login: f.login.clone(),
            msisdn: f.msisdn.clone(),
            time_zone: f.time_zone.clone(),
            ..ActivateForm::default()
        };
        blank.csrf.clear();
        Ok(form_page(&req, status, &blank, Some(message)))
    };
    if f.login.is_empty() || f.password.is_empty() || f.msisdn.trim().is_empty() || f.new_password.is_empty() {
        return refuse(&f, StatusCode::BAD_REQUEST, t.get("form-fill-all"));
    }
    if f.login.len() > 254 || f.password.len() > 1024 || f.new_password.len() > 1024 || f.msisdn.len() > 32 {
        return refuse(&f, StatusCode::BAD_REQUEST, t.get("form-too-long"));
    }
    if !time_zones().any(|z| z == f.time_zone) {
        return refuse(&f, StatusCode::BAD_REQUEST, t.get("form-time-zone"));
    }
    if f.new_password != f.confirm {
        return refuse(&f, StatusCode::BAD_REQUEST, t.get("form-passwords-differ"));
    }
    let agent = client(&req);
    let result = state
        .portal
        .activate(&f.login, &f.password, &f.msisdn, &f.time_zone, &f.new_password, &agent, source(&req))
        .await;
    match result {
        Ok(signed_in) => {
            let mut answer = page::see_other("/?activated=1");
            answer.append_header(("Set-Cookie", cookies::set(cookies::SESSION, &signed_in.token, "Lax", None)));
            answer.append_header(("Set-Cookie", cookies::clear(cookies::CSRF)));
            Ok(answer.finish())
        }
        Err(PortalError::InvalidCredentials) => refuse(&f, StatusCode::UNAUTHORIZED, t.get("activate-wrong")),
        Err(PortalError::Throttled { retry_after }) => {
            let answer = refuse(&f, StatusCode::TOO_MANY_REQUESTS, t.too_many_attempts(retry_after))?;
            Ok(page::retry_after(answer, retry_after))
        }
        Err(PortalError::MsisdnNotApproved) => refuse(&f, StatusCode::FORBIDDEN, t.get("activate-msisdn-not-approved")),
        Err(PortalError::MsisdnTaken) => refuse(&f, StatusCode::CONFLICT, t.get("activate-msisdn-taken")),
        Err(PortalError::Invalid(problem)) => refuse(&f, StatusCode::BAD_REQUEST, t.problem(problem)),
        Err(PortalError::Suspended) => refuse(&f, StatusCode::FORBIDDEN, t.get("activate-suspended")),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_zone_list_is_iana_names() {
        let zones: Vec<&str> = time_zones().collect();
        assert!(zones.len() > 300, "{}", zones.len());
        assert!(zones.contains(&"Europe/Paris") && zones.contains(&"America/New_York") && zones.contains(&"UTC"));
        assert!(zones.iter().all(|z| z.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))));
    }
}
