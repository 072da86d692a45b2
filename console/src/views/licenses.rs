//! `/console/licenses`: the licenses in the operator's reach; create one, change seats,
//! suspend and resume (live sessions of a suspended license end within seconds).

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::LicenseId;
use noc_storage::{Features, License, LicenseChange, LicenseDraft};
use noc_web::page;
use serde::Deserialize;

use crate::state::ConsoleState;
use crate::views::features::{self, FeatureBox, FeaturesForm};
use crate::views::session::{self, CsrfForm};
use crate::views::{Nav, failure};

pub struct Row {
    id: String,
    name: String,
    used_users: u32,
    max_users: u32,
    expires: String,
    suspended: bool,
}

impl From<License> for Row {
    fn from(l: License) -> Self {
        Row {
            id: l.id.to_string(),
            name: l.name,
            used_users: l.used_users,
            max_users: l.max_users,
            expires: l.expires_at.map_or_else(|| "never".to_string(), crate::views::audit::utc),
            suspended: l.suspended,
        }
    }
}

#[derive(Template)]
#[template(path = "console_licenses.html")]
struct LicensesPage {
    nav: Nav,
    licenses: Vec<Row>,
}

pub struct VesRow {
    id: String,
    agent: String,
    registered: String,
    last_seen: String,
    node: String,
}

#[derive(Template)]
#[template(path = "console_license.html")]
struct LicensePage {
    nav: Nav,
    id: String,
    name: String,
    used_users: u32,
    max_users: u32,
    expires: String,
    suspended: bool,
    features: Vec<FeatureBox>,
    admin_email: String,
    require_client_certificates: bool,
    grantees: Vec<String>,
    /// CSRs the license could be given to (administrators see them).
    csrs: Vec<String>,
    installations: Vec<VesRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantForm {
    csrf: String,
    operator: String,
}

impl CsrfForm for GrantForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn grant(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, f) = match session::require_form::<GrantForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(license) = id.parse::<LicenseId>() else {
        return failure::from_account(noc_storage::AccountError::NotFound);
    };
    match state.accounts.grant_license_as(&s.principal, license, &f.operator).await {
        Ok(()) => page::see_other(&format!("/console/licenses/{license}")).finish(),
        Err(e) => failure::from_account(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLicenseForm {
    csrf: String,
    name: String,
    password: String,
    max_users: u32,
}

impl CsrfForm for NewLicenseForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeForm {
    csrf: String,
    /// `seats`, `suspend` or `resume`.
    action: String,
    max_users: Option<u32>,
}

impl CsrfForm for ChangeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    match state.accounts.licenses_as(&s.principal).await {
        Ok(licenses) => page::render(
            actix_web::http::StatusCode::OK,
            &LicensesPage { nav: Nav::of(&s), licenses: licenses.into_iter().map(Row::from).collect() },
        ),
        Err(e) => failure::from_account(e),
    }
}

pub async fn detail(state: web::Data<ConsoleState>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<LicenseId>() else { return failure::from_account(noc_storage::AccountError::NotFound) };
    let license = match state.accounts.license_as(&s.principal, id).await {
        Ok(l) => l,
        Err(e) => return failure::from_account(e),
    };
    let grantees = match state.accounts.license_grantees_as(&s.principal, id).await {
        Ok(g) => g,
        Err(e) => return failure::from_account(e),
    };
    let installations = match crate::actions::installations(&state, &s.principal, id).await {
        Ok(v) => v,
        Err(e) => return failure::from_account(e),
    };
    // Only an administrator may list operators (and give licenses away).
    let csrs: Vec<String> = state
        .accounts
        .operators_as(&s.principal)
        .await
        .map(|ops| {
            ops.into_iter()
                .filter(|o| o.role == noc_storage::OperatorRole::Csr && !o.disabled && !grantees.contains(&o.name))
                .map(|o| o.name)
                .collect()
        })
        .unwrap_or_default();
    let (features, admin_email) = (features::boxes(license.features), license.admin_email.clone().unwrap_or_default());
    let require_client_certificates = license.require_client_certificates;
    let row = Row::from(license);
    page::render(
        actix_web::http::StatusCode::OK,
        &LicensePage {
            nav: Nav::of(&s),
            id: row.id,
            name: row.name,
            used_users: row.used_users,
            max_users: row.max_users,
            expires: row.expires,
            suspended: row.suspended,
            features,
            admin_email,
            require_client_certificates,
            grantees,
            csrs,
            installations: installations
                .into_iter()
                .map(|v| VesRow {
                    id: v.id,
                    agent: v.agent.unwrap_or_default(),
                    registered: page::utc(v.registered_at),
                    last_seen: page::utc(v.last_seen_at),
                    node: v.node.unwrap_or_else(|| "not connected".into()),
                })
                .collect(),
        },
    )
}

pub async fn create(state: web::Data<ConsoleState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let (s, f) = match session::require_form::<NewLicenseForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let draft = LicenseDraft {
        name: f.name,
        password: f.password,
        max_users: f.max_users,
        expires_at: None,
        features: Features::ALL,
        admin_email: None,
    };
    match state.accounts.create_license_as(&s.principal, &draft).await {
        Ok(_) => page::see_other("/console/licenses").finish(),
        Err(e) => failure::from_account(e),
    }
}

pub async fn change(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, f) = match session::require_form::<ChangeForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<LicenseId>() else { return failure::from_account(noc_storage::AccountError::NotFound) };
    let change = match (f.action.as_str(), f.max_users) {
        ("seats", Some(n)) => LicenseChange { max_users: Some(n), ..LicenseChange::default() },
        ("suspend", _) => LicenseChange { suspended: Some(true), ..LicenseChange::default() },
        ("resume", _) => LicenseChange { suspended: Some(false), ..LicenseChange::default() },
        _ => return failure::bad_form(),
    };
    match crate::actions::change_license(&state, &s.principal, id, &change).await {
        Ok(_) => page::see_other("/console/licenses").finish(),
        Err(e) => failure::from_account(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesForm {
    csrf: String,
    /// `on` when ticked; absent otherwise.
    #[serde(default)]
    require_client_certificates: Option<String>,
}

impl CsrfForm for DevicesForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Whether the license's devices must use client certificates, from its page.
pub async fn change_devices(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, f) = match session::require_form::<DevicesForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<LicenseId>() else { return failure::from_account(noc_storage::AccountError::NotFound) };
    let required = f.require_client_certificates.as_deref() == Some("on");
    let change = LicenseChange { require_client_certificates: Some(required), ..LicenseChange::default() };
    match crate::actions::change_license(&state, &s.principal, id, &change).await {
        Ok(_) => page::see_other(&format!("/console/licenses/{id}")).finish(),
        Err(e) => failure::from_account(e),
    }
}

/// The license's features and administrator address, from its page.
pub async fn change_features(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, f) = match session::require_form::<FeaturesForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Ok(id) = id.parse::<LicenseId>() else { return failure::from_account(noc_storage::AccountError::NotFound) };
    let change = LicenseChange {
        features: Some(f.features()),
        admin_email: Some(f.admin_email.clone()),
        ..LicenseChange::default()
    };
    match crate::actions::change_license(&state, &s.principal, id, &change).await {
        Ok(_) => page::see_other(&format!("/console/licenses/{id}")).finish(),
        Err(e) => failure::from_account(e),
    }
}
