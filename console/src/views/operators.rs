//! `/console/operators` (administrators): the operators, and a new one's enrolment — the
//! authenticator key as a QR code rendered here (SVG, no script, nothing fetched) and the
//! recovery codes, shown once.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_storage::{OperatorRecord, OperatorRole};
use noc_web::page;
use qrcode::QrCode;
use qrcode::render::svg;
use serde::Deserialize;

use crate::state::ConsoleState;
use crate::views::session::{self, CsrfForm};
use crate::views::{Nav, failure};

#[derive(Template)]
#[template(path = "console_operators.html")]
struct OperatorsPage {
    nav: Nav,
    operators: Vec<OperatorRecord>,
}

#[derive(Template)]
#[template(path = "console_enrolment.html")]
struct EnrolmentPage {
    nav: Nav,
    name: String,
    /// Rendered here from the otpauth URI: markup of our own making, not escaped.
    qr_svg: String,
    secret: String,
    recovery_codes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOperatorForm {
    csrf: String,
    name: String,
    role: String,
    password: String,
}

impl CsrfForm for NewOperatorForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The otpauth URI as an SVG QR code.
fn qr_svg(uri: &str) -> Option<String> {
    let code = QrCode::new(uri.as_bytes()).ok()?;
    Some(code.render::<svg::Color<'_>>().min_dimensions(200, 200).quiet_zone(true).build())
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    match state.accounts.operators_as(&s.principal).await {
        Ok(operators) => page::render(StatusCode::OK, &OperatorsPage { nav: Nav::of(&s), operators }),
        Err(e) => failure::from_account(e),
    }
}

pub async fn set_disabled(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
    disabled: bool,
) -> HttpResponse {
    let (s, _) = match session::require_form::<session::ButtonForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    match state.accounts.set_operator_disabled_as(&s.principal, &name, disabled).await {
        Ok(_) => page::see_other("/console/operators").finish(),
        Err(e) => failure::from_account(e),
    }
}

pub async fn create(state: web::Data<ConsoleState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let (s, f) = match session::require_form::<NewOperatorForm>(&state, &req, payload).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Some(role) = OperatorRole::parse(&f.role) else { return failure::bad_form() };
    match state.accounts.create_operator_as(&s.principal, &f.name, role, &f.password).await {
        Ok(e) => {
            let Some(qr) = qr_svg(&e.totp_uri) else {
                tracing::error!("console: the enrolment URI does not fit a QR code");
                return failure::from_account(noc_storage::AccountError::Internal("QR code".into()));
            };
            page::render(
                StatusCode::CREATED,
                &EnrolmentPage {
                    nav: Nav::of(&s),
                    name: e.operator.name.clone(),
                    qr_svg: qr,
                    secret: e.totp_secret.clone(),
                    recovery_codes: e.recovery_codes.clone(),
                },
            )
        }
        Err(e) => failure::from_account(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_plain_svg() {
        let svg = qr_svg("otpauth://totp/NOC:alice?secret=JBSWY3DPEHPK3PXP&issuer=NOC").expect("fits");
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
        assert!(!svg.contains("<script") && !svg.contains("href"), "nothing active or fetched");
    }
}
