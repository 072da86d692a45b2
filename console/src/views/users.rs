//! `/console/users`: find users of the licenses in reach by e-mail, mobile number or name;
//! a user's profile and devices; suspend, reactivate, revoke. Never a password, an
//! answer or any of the user's data.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::{DeviceId, UserId};
use noc_storage::{AccountError, DeviceRecord, UserFilter, UserRecord, UserStatus};
use noc_web::page;
use serde::Deserialize;

use crate::actions::DeviceAction;
use crate::state::ConsoleState;
use crate::views::features::{self, FeatureBox, FeaturesForm};
use crate::views::session::{self, CsrfForm};
use crate::views::{Nav, failure};

const PAGE: u32 = 50;

pub struct UserRow {
    id: String,
    email: String,
    name: String,
    first_name: String,
    last_name: String,
    locale: String,
    msisdn: String,
    status: &'static str,
    time_zone: String,
    suspended: bool,
}

impl From<UserRecord> for UserRow {
    fn from(u: UserRecord) -> Self {
        UserRow {
            id: u.id.to_string(),
            name: u.full_name(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            locale: u.locale.clone().unwrap_or_default(),
            msisdn: u.msisdn.unwrap_or_default(),
            status: u.status.as_str(),
            time_zone: u.time_zone.unwrap_or_default(),
            suspended: u.status == UserStatus::Suspended,
            email: u.email,
        }
    }
}

pub struct DeviceRow {
    id: String,
    name: String,
    device_type: String,
    state: &'static str,
    live: bool,
    node: String,
    connected: bool,
    /// The client certificate's serial (shortened) and expiry, or "—".
    certificate: String,
}

impl DeviceRow {
    fn new(d: DeviceRecord, node: Option<String>) -> Self {
        DeviceRow { connected: node.is_some(), node: node.unwrap_or_else(|| "—".into()), ..DeviceRow::from(d) }
    }
}

impl From<DeviceRecord> for DeviceRow {
    fn from(d: DeviceRecord) -> Self {
        let state = match (d.revoked_at, d.wipe_requested_at, d.wiped_at) {
            (_, _, Some(_)) => "wiped",
            (_, Some(_), None) => "wipe pending",
            (Some(_), None, None) => "revoked",
            (None, None, None) => "active",
        };
        let certificate = match (&d.certificate_serial, d.certificate_not_after) {
            (Some(serial), Some(until)) => {
                let short: String = serial.chars().take(12).collect();
                format!("{short}… until {}", page::utc(until.saturating_mul(1000)))
            }
            _ => "—".into(),
        };
        DeviceRow {
            certificate,
            id: d.id.to_string(),
            name: d.name.unwrap_or_default(),
            device_type: d.device_type.unwrap_or_default(),
            state,
            live: state == "active",
            node: String::new(),
            connected: false,
        }
    }
}

#[derive(Template)]
#[template(path = "console_users.html")]
struct UsersPage {
    nav: Nav,
    q: String,
    /// The search as a query string (the next page keeps it).
    query: String,
    users: Vec<UserRow>,
    next_offset: Option<u32>,
}

#[derive(Template)]
#[template(path = "console_user.html")]
struct UserPage {
    nav: Nav,
    user: UserRow,
    access: Vec<FeatureBox>,
    /// Features the license takes away whatever the user's access says.
    license_lacks: String,
    devices: Vec<DeviceRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: u32,
    /// Only this license's users (from a license's page).
    #[serde(default)]
    license: String,
}

/// One search box: an address has `@`, a mobile number is digits after an optional `+`,
/// anything else is part of a name.
fn filter_for(q: &str, offset: u32) -> UserFilter {
    let q = q.trim();
    let mut f = UserFilter { offset, limit: PAGE + 1, ..UserFilter::default() };
    if q.is_empty() {
    } else if q.contains('@') {
        f.email = Some(q.to_string());
    } else if q.trim_start_matches('+').chars().all(|c| c.is_ascii_digit()) {
        f.msisdn = Some(q.to_string());
    } else {
        f.name = Some(q.to_string());
    }
    f
}

fn not_found() -> HttpResponse {
    failure::from_account(AccountError::NotFound)
}

pub async fn search(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Ok(query) = serde_urlencoded::from_str::<SearchQuery>(req.query_string()) else { return failure::bad_form() };
    let mut filter = filter_for(&query.q, query.offset);
    if !query.license.is_empty() {
        let Ok(license) = query.license.parse() else { return not_found() };
        filter.license = Some(license);
    }
    match state.accounts.search_users_as(&s.principal, &filter).await {
        Ok(mut users) => {
            let next_offset = (users.len() > PAGE as usize).then_some(query.offset + PAGE);
            users.truncate(PAGE as usize);
            let mut keep = vec![("q", query.q.as_str())];
            if !query.license.is_empty() {
                keep.push(("license", query.license.as_str()));
            }
            let query_string = serde_urlencoded::to_string(&keep).unwrap_or_default();
            page::render(
                StatusCode::OK,
                &UsersPage {
                    nav: Nav::of(&s),
                    query: query_string,
                    q: query.q,
                    users: users.into_iter().map(UserRow::from).collect(),
                    next_offset,
                },
            )
        }
        Err(e) => failure::from_account(e),
    }
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<UserId>() else { return not_found() };
    let user = match state.accounts.user_as(&s.principal, id).await {
        Ok(u) => u,
        Err(e) => return failure::from_account(e),
    };
    match crate::actions::devices(&state, &s.principal, id).await {
        Ok(devices) => page::render(
            StatusCode::OK,
            &UserPage {
                nav: Nav::of(&s),
                access: features::boxes(user.access),
                license_lacks: {
                    let lacks: Vec<_> = noc_storage::Feature::ALL
                        .into_iter()
                        .filter(|f| !user.license_features.contains(*f))
                        .map(|f| features::label(f))
                        .collect();
                    lacks.join(", ")
                },
                user: user.into(),
                devices: devices.into_iter().map(|(d, node)| DeviceRow::new(d, node)).collect(),
            },
        ),
        Err(e) => failure::from_account(e),
    }
}

pub async fn set_suspended(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    suspended: bool,
) -> HttpResponse {
    let (s, _) = match session::require_form::<session::ButtonForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<UserId>() else { return not_found() };
    match crate::actions::set_suspended(&state, &s.principal, id, suspended).await {
        Ok(_) => page::see_other(&format!("/console/users/{id}")).finish(),
        Err(e) => failure::from_account(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileForm {
    csrf: String,
    first_name: String,
    last_name: String,
    #[serde(default)]
    msisdn: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    locale: String,
}

impl CsrfForm for ProfileForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteForm {
    csrf: String,
    /// The confirmation box; a form without it deletes nothing.
    #[serde(default)]
    confirm: String,
}

impl CsrfForm for DeleteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn change_profile(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, f) = match session::require_form::<ProfileForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<UserId>() else { return not_found() };
    let change = noc_storage::UserProfileChange {
        first_name: Some(f.first_name),
        last_name: Some(f.last_name),
        // An empty field keeps the number (a user's number is never removed here).
        msisdn: Some(f.msisdn).filter(|m| !m.trim().is_empty()),
        time_zone: Some(f.time_zone),
        locale: Some(f.locale),
        access: None,
    };
    match crate::actions::change_user(&state, &s.principal, id, &change).await {
        Ok(_) => page::see_other(&format!("/console/users/{id}")).finish(),
        Err(e) => failure::from_account(e),
    }
}

pub async fn mail_recovery(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, _) = match session::require_form::<session::ButtonForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<UserId>() else { return not_found() };
    match crate::actions::mail_recovery(&state, &s.principal, id).await {
        Ok(()) => failure::message(
            StatusCode::ACCEPTED,
            "Link mailed",
            "The user gets a one-time link to choose a new password at their own address.",
        ),
        Err(e) => failure::from_account(e),
    }
}

pub async fn reset_secret_question(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, _) = match session::require_form::<session::ButtonForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<UserId>() else { return not_found() };
    match state.accounts.reset_secret_question_as(&s.principal, id).await {
        Ok(()) => page::see_other(&format!("/console/users/{id}")).finish(),
        Err(e) => failure::from_account(e),
    }
}

pub async fn delete(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, f) = match session::require_form::<DeleteForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    if f.confirm != "yes" {
        return failure::message(StatusCode::BAD_REQUEST, "Not deleted", "Tick the box to confirm the deletion.");
    }
    let Ok(id) = id.parse::<UserId>() else { return not_found() };
    match crate::actions::delete_user(&state, &s.principal, id).await {
        Ok(()) => page::see_other("/console/users").finish(),
        Err(e) => failure::from_account(e),
    }
}

pub async fn device_action(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    action: DeviceAction,
) -> HttpResponse {
    let (s, _) = match session::require_form::<session::ButtonForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let (user, device) = path.into_inner();
    let (Ok(user), Ok(device)) = (user.parse::<UserId>(), device.parse::<DeviceId>()) else { return not_found() };
    match crate::actions::device_action(&state, &s.principal, user, device, action).await {
        Ok(()) => page::see_other(&format!("/console/users/{user}")).finish(),
        Err(e) => failure::from_account(e),
    }
}

/// What the user may use, from their page's access form.
pub async fn change_access(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, f) = match session::require_form::<FeaturesForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    if f.admin_email.is_some() {
        return failure::bad_form();
    }
    let Ok(id) = id.parse::<UserId>() else { return not_found() };
    let change = noc_storage::UserProfileChange { access: Some(f.features()), ..Default::default() };
    match crate::actions::change_user(&state, &s.principal, id, &change).await {
        Ok(_) => page::see_other(&format!("/console/users/{id}")).finish(),
        Err(e) => failure::from_account(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_box_searches_the_right_field() {
        assert_eq!(filter_for("ann@x.example", 0).email.as_deref(), Some("ann@x.example"));
        assert_eq!(filter_for(" +15550001 ", 0).msisdn.as_deref(), Some("+15550001"));
        assert_eq!(filter_for("Ann Lee", 0).name.as_deref(), Some("Ann Lee"));
        let all = filter_for("", 50);
        assert_eq!((all.email, all.msisdn, all.name, all.offset, all.limit), (None, None, None, 50, PAGE + 1));
    }
}
