//! `/admin/v1/users`: find users of the licenses in reach, suspend and reactivate them,
//! list and revoke their devices. Profiles only: never a password, an answer or any
//! mail/PIM data.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use noc_protocol::{DeviceId, UserId};
use noc_storage::UserFilter;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::actions::DeviceAction;
use crate::api::auth::Operator;
use crate::api::body::{Json, Query};
use crate::api::error::ApiFailure;
use crate::api::model::{DeviceView, FeatureFlags, UserPage, UserView};
use crate::state::ConsoleState;

/// Users per page unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

fn user_id(id: &str) -> Result<UserId, ApiFailure> {
    id.parse().map_err(|_| ApiFailure::not_found())
}

/// Which users; every condition given must hold.
#[derive(Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Part of the e-mail address, any case.
    pub email: Option<String>,
    /// The MSISDN exactly.
    pub msisdn: Option<String>,
    /// Part of the first or last name, any case.
    pub name: Option<String>,
    /// A license id.
    pub license: Option<String>,
    /// Users to skip (the previous page's `next_offset`).
    pub offset: Option<u32>,
    /// Page size, 1 to 200; default 50.
    pub limit: Option<u32>,
}

/// Searches users in the caller's reach, by e-mail address.
#[utoipa::path(
    tag = "users",
    operation_id = "users_search",
    security(("bearer" = [])),
    params(UserQuery),
    responses((status = 200, body = UserPage), (status = 400), (status = 401), (status = 403))
)]
#[get("/users")]
pub async fn search(
    state: web::Data<ConsoleState>,
    op: Operator,
    query: Query<UserQuery>,
) -> Result<web::Json<UserPage>, ApiFailure> {
    let q = query.0;
    let license = match q.license.as_deref() {
        Some(l) => Some(l.parse().map_err(|_| ApiFailure::bad_request("license is a license id"))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, noc_storage::operations::MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let filter = UserFilter {
        email: q.email,
        msisdn: q.msisdn,
        name: q.name,
        license,
        granted_to: None,
        offset,
        // One more than asked tells whether a next page exists.
        limit: limit + 1,
    };
    let mut users = state.accounts.search_users_as(&op.0, &filter).await?;
    let next_offset = (users.len() > limit as usize).then(|| offset + limit);
    users.truncate(limit as usize);
    Ok(web::Json(UserPage { items: users.into_iter().map(UserView::from).collect(), next_offset }))
}

/// One user's profile.
#[utoipa::path(
    tag = "users",
    operation_id = "users_show",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 401), (status = 403), (status = 404))
)]
#[get("/users/{id}")]
pub async fn show(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<web::Json<UserView>, ApiFailure> {
    Ok(web::Json(state.accounts.user_as(&op.0, user_id(&id)?).await?.into()))
}

/// What to change on a profile; absent fields stay, an empty time zone or language clears
/// it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChangeRequest {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `+` and 5 to 20 digits; must not be another user's.
    pub msisdn: Option<String>,
    /// An IANA zone name or a UTC offset.
    pub time_zone: Option<String>,
    /// A language tag such as `de` (the portal's language for the user).
    pub locale: Option<String>,
    /// What the user may use (the whole set; within the license's features). Taking
    /// ConstantSync away ends the user's device sessions at once.
    pub access: Option<FeatureFlags>,
}

/// Changes a user's name, MSISDN, time zone or language.
#[utoipa::path(
    tag = "users",
    operation_id = "users_change",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = UserChangeRequest,
    responses((status = 200, body = UserView), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409))
)]
#[patch("/users/{id}")]
pub async fn change(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
    body: Json<UserChangeRequest>,
) -> Result<web::Json<UserView>, ApiFailure> {
    let r = body.0;
    let change = noc_storage::UserProfileChange {
        first_name: r.first_name,
        last_name: r.last_name,
        msisdn: r.msisdn,
        time_zone: r.time_zone,
        locale: r.locale,
        access: r.access.map(noc_storage::Features::from),
    };
    Ok(web::Json(crate::actions::change_user(&state, &op.0, user_id(&id)?, &change).await?.into()))
}

/// Deletes a user and their devices (their sessions end; their enterprise server forgets
/// them). The seat is free again.
#[utoipa::path(
    tag = "users",
    operation_id = "users_delete",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404))
)]
#[delete("/users/{id}")]
pub async fn remove(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiFailure> {
    crate::actions::delete_user(&state, &op.0, user_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Mails the user a one-time link to choose a new password (the user called the help desk);
/// the operator never sees the link. Only for an activated user; rationed like the user's
/// own requests; 503 when the node has no SMTP server.
#[utoipa::path(
    tag = "users",
    operation_id = "users_mail_recovery",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 202), (status = 400), (status = 401), (status = 403), (status = 404), (status = 503))
)]
#[post("/users/{id}/password-reset")]
pub async fn mail_recovery(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiFailure> {
    crate::actions::mail_recovery(&state, &op.0, user_id(&id)?).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Clears a user's secret question (for a user who forgot the answer; they choose a new
/// one on the portal).
#[utoipa::path(
    tag = "users",
    operation_id = "users_reset_secret_question",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404))
)]
#[post("/users/{id}/secret-question/reset")]
pub async fn reset_secret_question(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiFailure> {
    state.accounts.reset_secret_question_as(&op.0, user_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Suspends a user: no sign-in, and their device sessions close at once on every node.
#[utoipa::path(
    tag = "users",
    operation_id = "users_suspend",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 401), (status = 403), (status = 404))
)]
#[post("/users/{id}/suspend")]
pub async fn suspend(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<web::Json<UserView>, ApiFailure> {
    Ok(web::Json(crate::actions::set_suspended(&state, &op.0, user_id(&id)?, true).await?.into()))
}

/// Reactivates a suspended user.
#[utoipa::path(
    tag = "users",
    operation_id = "users_reactivate",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 401), (status = 403), (status = 404))
)]
#[post("/users/{id}/reactivate")]
pub async fn reactivate(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<web::Json<UserView>, ApiFailure> {
    Ok(web::Json(crate::actions::set_suspended(&state, &op.0, user_id(&id)?, false).await?.into()))
}

/// A user's devices, with the node each is connected to now.
#[utoipa::path(
    tag = "users",
    operation_id = "users_devices",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = [DeviceView]), (status = 401), (status = 403), (status = 404))
)]
#[get("/users/{id}/devices")]
pub async fn devices(
    state: web::Data<ConsoleState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<web::Json<Vec<DeviceView>>, ApiFailure> {
    let devices = crate::actions::devices(&state, &op.0, user_id(&id)?).await?;
    Ok(web::Json(devices.into_iter().map(|(d, node)| DeviceView::with_node(d, node)).collect()))
}

/// Parses the path of a device action and does it; any id that names nothing is 404.
async fn act_on_device(
    state: &ConsoleState,
    op: &Operator,
    (user, device): (String, String),
    action: DeviceAction,
) -> Result<HttpResponse, ApiFailure> {
    let device: DeviceId = device.parse().map_err(|_| ApiFailure::not_found())?;
    crate::actions::device_action(state, &op.0, user_id(&user)?, device, action).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Asks a user's device to erase its data and credentials (a lost or stolen phone): its
/// session closes at once wherever it is, and its next connection gets the wipe.
#[utoipa::path(
    tag = "users",
    operation_id = "users_wipe_device",
    security(("bearer" = [])),
    params(("id" = String, Path), ("device" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404))
)]
#[post("/users/{id}/devices/{device}/wipe")]
pub async fn wipe_device(
    state: web::Data<ConsoleState>,
    op: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiFailure> {
    act_on_device(&state, &op, path.into_inner(), DeviceAction::Wipe).await
}

/// Disconnects a user's device wherever it is connected; it reconnects on its own (to
/// clear a stuck session, or to move it off a node).
#[utoipa::path(
    tag = "users",
    operation_id = "users_disconnect_device",
    security(("bearer" = [])),
    params(("id" = String, Path), ("device" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404))
)]
#[post("/users/{id}/devices/{device}/disconnect")]
pub async fn disconnect_device(
    state: web::Data<ConsoleState>,
    op: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiFailure> {
    act_on_device(&state, &op, path.into_inner(), DeviceAction::Disconnect).await
}

/// Revokes a user's device: its session closes at once, wherever it is.
#[utoipa::path(
    tag = "users",
    operation_id = "users_revoke_device",
    security(("bearer" = [])),
    params(("id" = String, Path), ("device" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404))
)]
#[post("/users/{id}/devices/{device}/revoke")]
pub async fn revoke_device(
    state: web::Data<ConsoleState>,
    op: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiFailure> {
    act_on_device(&state, &op, path.into_inner(), DeviceAction::Revoke).await
}
