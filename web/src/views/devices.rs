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
use crate::i18n::Lang;
use crate::portal::{PortalError, WipeState};
use crate::views::home::utc;
use crate::{WebState, page};

pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub device_type: String,
    pub activated: String,
    pub online_on: Option<String>,
    /// When it was last connected (a session started or ended).
    pub last_seen: Option<String>,
    /// When a wipe was asked and the device has not confirmed it yet.
    pub wipe_pending: Option<String>,
    /// When the device confirmed its wipe.
    pub wiped: Option<String>,
}

impl DeviceRow {
    /// Its name, or what it is.
    pub fn label(&self, t: &Lang) -> String {
        if self.name.is_empty() {
            t.get1("devices-unnamed", "type", self.device_type.as_str())
        } else {
            self.name.clone()
        }
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
pub struct DevicesPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub devices: Vec<DeviceRow>,
    pub notice: Option<&'a str>,
    pub error: Option<String>,
}

fn row(d: crate::portal::DeviceInfo, t: Lang) -> DeviceRow {
    let (wipe_pending, wiped) = match d.wipe {
        WipeState::None => (None, None),
        WipeState::Pending { since_ms } => (Some(utc(since_ms)), None),
        WipeState::Done { at_ms } => (None, Some(utc(at_ms))),
    };
    DeviceRow {
        name: d.name.unwrap_or_default(),
        device_type: d.device_type.unwrap_or_else(|| t.get("devices-default-type")),
        activated: utc(d.activated_at_ms),
        online_on: d.online_on,
        last_seen: d.last_seen_ms.map(utc),
        id: d.id,
        wipe_pending,
        wiped,
    }
}

async fn render(
    state: &WebState,
    t: Lang,
    user_id: &str,
    csrf: &str,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let devices = state.portal.devices(user_id).await?.into_iter().map(|d| row(d, t)).collect();
    Ok(page::render(status, &DevicesPage { t, csrf, devices, notice: notice.as_deref(), error }))
}

pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let t = user.t;
    let notice = match req.query_string() {
        "renamed=1" => Some(t.get("devices-renamed")),
        "revoked=1" => Some(t.get("devices-revoked")),
        "wipe=1" => Some(t.get("devices-wipe-asked")),
        _ => None,
    };
    render(&state, t, &user.visitor.profile.user_id, &user.csrf(), StatusCode::OK, notice, None).await
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
        Err(PortalError::Invalid(problem)) => {
            let message = Some(user.t.problem(problem));
            render(&state, user.t, &visitor.profile.user_id, &token_csrf, StatusCode::BAD_REQUEST, None, message).await
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
    pub t: Lang,
    pub csrf: &'a str,
    pub device: DeviceRow,
    pub error: Option<String>,
}

/// The live device `id` of the user, or 404 (another user's, unknown, or already wiped).
async fn wipeable(state: &WebState, t: Lang, user_id: &str, id: &str) -> Result<DeviceRow, PageError> {
    if !well_formed(id) {
        return Err(PageError::NotFound);
    }
    let devices = state.portal.devices(user_id).await?;
    match devices.into_iter().find(|d| d.id == id) {
        Some(d) if d.wipe == WipeState::None => Ok(row(d, t)),
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
    let device = wipeable(&state, user.t, &user.visitor.profile.user_id, &id).await?;
    Ok(page::render(StatusCode::OK, &WipePage { t: user.t, csrf: &user.csrf(), device, error: None }))
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
    let t = user.t;
    let device = wipeable(&state, t, user_id, &id).await?;
    if form.confirm.as_deref() != Some("yes") {
        let error = Some(t.get("wipe-unticked"));
        return Ok(page::render(StatusCode::BAD_REQUEST, &WipePage { t, csrf: &user.csrf(), device, error }));
    }
    state.portal.wipe_device(user_id, &id).await?;
    Ok(page::see_other("/devices?wipe=1").finish())
}
