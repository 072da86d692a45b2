//! `GET /devices`, `POST /devices/{id}/rename`, `POST /devices/{id}/revoke`,
//! `GET|POST /devices/{id}/wipe`: the user's devices (white paper §3.7.3): name, type, when
//! activated and whether connected now; rename one; revoke one (sold, replaced), which ends
//! its live session at once and makes it activate again to come back; or wipe one (lost,
//! stolen): after a confirmation page, it erases its data and credentials when it next
//! connects, at once if it is connected now.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::errors::PageError;
use crate::guard::{self, WithCsrf};
use crate::portal::{PortalError, WipeState};
use crate::views::home::utc;
use crate::{WebState, page};

pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub device_type: String,
    pub activated: String,
    pub online_on: Option<String>,
    /// When a wipe was asked and the device has not confirmed it yet.
    pub wipe_pending: Option<String>,
    /// When the device confirmed its wipe.
    pub wiped: Option<String>,
}

impl DeviceRow {
    pub fn label(&self) -> String {
        if self.name.is_empty() { format!("Unnamed {}", self.device_type) } else { self.name.clone() }
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
pub struct DevicesPage<'a> {
    pub csrf: &'a str,
    pub devices: Vec<DeviceRow>,
    pub notice: Option<&'a str>,
    pub error: Option<String>,
}

fn row(d: crate::portal::DeviceInfo) -> DeviceRow {
    let (wipe_pending, wiped) = match d.wipe {
        WipeState::None => (None, None),
        WipeState::Pending { since_ms } => (Some(utc(since_ms)), None),
        WipeState::Done { at_ms } => (None, Some(utc(at_ms))),
    };
    DeviceRow {
        name: d.name.unwrap_or_default(),
        device_type: d.device_type.unwrap_or_else(|| "device".into()),
        activated: utc(d.activated_at_ms),
        online_on: d.online_on,
        id: d.id,
        wipe_pending,
        wiped,
    }
}

async fn render(
    state: &WebState,
    user_id: &str,
    csrf: &str,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let devices = state.portal.devices(user_id).await?.into_iter().map(row).collect();
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
        "wipe=1" => Some(
            "The device no longer works. It erases its data and credentials as soon as it connects, \
             at once if it is connected now.",
        ),
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

#[derive(Template)]
#[template(path = "wipe.html")]
pub struct WipePage<'a> {
    pub csrf: &'a str,
    pub device: DeviceRow,
    pub error: Option<&'a str>,
}

/// The live device `id` of the user, or 404 (another user's, unknown, or already wiped).
async fn wipeable(state: &WebState, user_id: &str, id: &str) -> Result<DeviceRow, PageError> {
    if !well_formed(id) {
        return Err(PageError::NotFound);
    }
    let devices = state.portal.devices(user_id).await?;
    match devices.into_iter().find(|d| d.id == id) {
        Some(d) if d.wipe == WipeState::None => Ok(row(d)),
        _ => Err(PageError::NotFound),
    }
}

/// `GET /devices/{id}/wipe`: what a wipe does, and the confirmation it needs.
pub async fn confirm_wipe(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let device = wipeable(&state, &user.visitor.profile.user_id, &id).await?;
    Ok(page::render(StatusCode::OK, &WipePage { csrf: &user.csrf(), device, error: None }))
}

#[derive(Deserialize)]
pub struct WipeForm {
    #[serde(default)]
    csrf: String,
    /// The checkbox "I understand": present only when ticked.
    #[serde(default)]
    confirm: Option<String>,
}

impl WithCsrf for WipeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /devices/{id}/wipe`: only with the confirmation ticked.
pub async fn wipe(
    req: HttpRequest,
    state: web::Data<WebState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, form) = match guard::signed_in_form::<WipeForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let user_id = &user.visitor.profile.user_id;
    let device = wipeable(&state, user_id, &id).await?;
    if form.confirm.as_deref() != Some("yes") {
        let error = Some("Tick the box to confirm that this device is to be erased.");
        return Ok(page::render(StatusCode::BAD_REQUEST, &WipePage { csrf: &user.csrf(), device, error }));
    }
    state.portal.wipe_device(user_id, &id).await?;
    Ok(page::see_other("/devices?wipe=1").finish())
}
