//! `GET /devices`, `POST /devices/{id}/rename`, `POST /devices/{id}/revoke`: the user's
//! devices (white paper §3.7.3): name, type, when activated and whether connected now;
//! rename one; revoke one (lost or sold), which ends its live session at once and makes it
//! activate again to come back.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::portal::PortalError;
use crate::views::home::utc;
use crate::{WebState, page};

pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub device_type: String,
    pub activated: String,
    pub online_on: Option<String>,
}

#[derive(Template)]
#[template(path = "devices.html")]
pub struct DevicesPage<'a> {
    pub csrf: &'a str,
    pub devices: Vec<DeviceRow>,
    pub notice: Option<&'a str>,
    pub error: Option<String>,
}

async fn render(
    state: &WebState,
    user_id: &str,
    csrf: &str,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let devices = state
        .portal
        .devices(user_id)
        .await?
        .into_iter()
        .map(|d| DeviceRow {
            name: d.name.unwrap_or_default(),
            device_type: d.device_type.unwrap_or_else(|| "device".into()),
            activated: utc(d.activated_at_ms),
            online_on: d.online_on,
            id: d.id,
        })
        .collect();
    Ok(page::render(status, &DevicesPage { csrf, devices, notice, error }))
}

pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let notice = match req.query_string() {
        "renamed=1" => Some("The device is renamed."),
        "revoked=1" => Some("The device is signed out. It must be activated again to be used."),
        _ => None,
    };
    render(&state, &user.visitor.profile.user_id, &user.csrf(), StatusCode::OK, notice, None).await
}

#[derive(Deserialize)]
pub struct DeviceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

impl WithCsrf for DeviceForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Device ids are UUIDs; anything else names no device of anyone's.
fn well_formed(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

pub async fn rename(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, f) = match guard::signed_in_form::<DeviceForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let (visitor, token_csrf) = (&user.visitor, user.csrf());
    if !well_formed(&id) {
        return Err(PageError::NotFound);
    }
    match state.portal.rename_device(&visitor.profile.user_id, &id, &f.name).await {
        Ok(()) => Ok(page::see_other("/devices?renamed=1").finish()),
        Err(PortalError::Invalid(message)) => {
            let message = crate::views::activate::sentence(&message);
            render(&state, &visitor.profile.user_id, &token_csrf, StatusCode::BAD_REQUEST, None, Some(message)).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, _form) = match guard::signed_in_form::<DeviceForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let visitor = &user.visitor;
    if !well_formed(&id) {
        return Err(PageError::NotFound);
    }
    state.portal.revoke_device(&visitor.profile.user_id, &id).await?;
    Ok(page::see_other("/devices?revoked=1").finish())
}
