//! `GET/POST /settings` and `POST /settings/password`: what a user changes themselves
//! (white paper §3.7.3, §9.2.1): name, time zone, ConstantSync and how many days of the
//! calendar go to the devices, the alert filter rules, and the password. New rules and the ConstantSync flag reach the user's enterprise
//! server at once over its live command channel.
//!
//! The rules are plain form rows (a header and a text each) with two empty rows to add
//! to: no script needed; clearing a row's text removes the rule.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use crate::errors::PageError;
use crate::guard::{self, WithCsrf, session_ended};
use crate::i18n::{LANGUAGES, Lang};
use crate::portal::{FilterRule, PortalError, Profile, SettingsChange};
use crate::views::activate::time_zones;
use crate::{WebState, page, source};

/// Empty rows offered for new rules.
const BLANK_RULES: usize = 2;
/// The headers a rule may look at, and their labels' message ids.
const FIELDS: [(&str, &str); 3] =
    [("from", "settings-rule-from"), ("to", "settings-rule-to"), ("subject", "settings-rule-subject")];

/// One row of the rules table.
pub struct RuleRow {
    pub fields: Vec<(&'static str, &'static str, bool)>,
    pub text: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub contact_email: &'a str,
    pub zones: Vec<(&'static str, bool)>,
    /// The chosen language's tag; empty: the browser's.
    pub locale: &'a str,
    pub languages: [(&'static str, &'static str); LANGUAGES.len()],
    pub constant_sync: bool,
    /// As typed (a refused value is shown again as it was).
    pub calendar_days_ahead: &'a str,
    pub alerts_enabled: bool,
    pub rules: Vec<RuleRow>,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub password_error: Option<String>,
    /// The user's license offers secret-question recovery.
    pub question_offered: bool,
    /// The key of the question the user chose.
    pub question: Option<String>,
    /// Where the user is signed in, each revocable (persistent sessions included).
    pub sessions: Vec<crate::views::home::SessionRow>,
}

async fn sessions_of(
    state: &WebState,
    user: &guard::SignedIn,
) -> Result<Vec<crate::views::home::SessionRow>, PageError> {
    crate::views::home::session_rows(state, &user.visitor.profile.user_id, &user.visitor.session_id, user.t).await
}

/// Whether the user may have a secret question, and the one chosen.
pub(crate) async fn question_state(state: &WebState, user_id: &str) -> Result<(bool, Option<String>), PageError> {
    Ok(state.portal.secret_question(user_id).await?)
}

fn rows(rules: &[FilterRule]) -> Vec<RuleRow> {
    let row = |field: &str, text: &str| RuleRow {
        fields: FIELDS.iter().map(|(v, label)| (*v, *label, *v == field)).collect(),
        text: text.to_string(),
    };
    let mut out: Vec<RuleRow> = rules.iter().map(|r| row(&r.field, &r.contains)).collect();
    out.extend((0..BLANK_RULES).map(|_| row("subject", "")));
    out
}

struct Shown<'a> {
    first_name: &'a str,
    last_name: &'a str,
    email: &'a str,
    contact_email: &'a str,
    time_zone: &'a str,
    locale: &'a str,
    constant_sync: bool,
    calendar_days_ahead: &'a str,
    alerts_enabled: bool,
    rules: &'a [FilterRule],
}

#[allow(clippy::too_many_arguments)]
fn render(
    t: Lang,
    status: StatusCode,
    csrf: &str,
    shown: Shown<'_>,
    notice: Option<String>,
    errors: (Option<String>, Option<String>),
    question: (bool, Option<String>),
    sessions: Vec<crate::views::home::SessionRow>,
) -> HttpResponse {
    let p = SettingsPage {
        t,
        csrf,
        first_name: shown.first_name,
        last_name: shown.last_name,
        email: shown.email,
        contact_email: shown.contact_email,
        zones: time_zones().map(|z| (z, z == shown.time_zone)).collect(),
        locale: shown.locale,
        languages: LANGUAGES,
        constant_sync: shown.constant_sync,
        calendar_days_ahead: shown.calendar_days_ahead,
        alerts_enabled: shown.alerts_enabled,
        rules: rows(shown.rules),
        notice,
        error: errors.0,
        password_error: errors.1,
        question_offered: question.0,
        question: question.1,
        sessions,
    };
    page::render(status, &p)
}

fn of_profile<'a>(p: &'a Profile, days: &'a str) -> Shown<'a> {
    Shown {
        first_name: &p.first_name,
        last_name: &p.last_name,
        email: &p.email,
        contact_email: p.contact_email.as_deref().unwrap_or(""),
        time_zone: p.time_zone.as_deref().unwrap_or("UTC"),
        locale: p.locale.as_deref().and_then(Lang::parse).map(Lang::tag).unwrap_or(""),
        constant_sync: p.constant_sync,
        calendar_days_ahead: days,
        alerts_enabled: p.alerts_enabled,
        rules: &p.filter_rules,
    }
}

pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let t = user.t;
    let notice = match req.query_string() {
        "saved=1" => Some(t.get("settings-saved")),
        "password=1" => Some(t.get("settings-password-changed")),
        "question=1" => Some(t.get("settings-question-saved")),
        "question=0" => Some(t.get("settings-question-removed")),
        _ => None,
    };
    let question = question_state(&state, &user.visitor.profile.user_id).await?;
    let sessions = sessions_of(&state, &user).await?;
    let days = user.visitor.profile.calendar_days_ahead.to_string();
    Ok(render(
        t,
        StatusCode::OK,
        &user.csrf(),
        of_profile(&user.visitor.profile, &days),
        notice,
        (None, None),
        question,
        sessions,
    ))
}

/// The posted settings, from the form's fields in order (the rule rows repeat names).
struct Posted {
    csrf: String,
    change: SettingsChange,
    /// The calendar field as typed.
    calendar_days_ahead: String,
}

fn posted(pairs: Vec<(String, String)>) -> Posted {
    let mut p = Posted {
        csrf: String::new(),
        change: SettingsChange {
            first_name: String::new(),
            last_name: String::new(),
            time_zone: String::new(),
            constant_sync: false,
            filter_rules: Vec::new(),
            alerts_enabled: false,
            contact_email: String::new(),
            locale: String::new(),
            calendar_days_ahead: 0,
        },
        calendar_days_ahead: String::new(),
    };
    let mut field: Option<String> = None;
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => p.csrf = v,
            "first_name" => p.change.first_name = v,
            "last_name" => p.change.last_name = v,
            "time_zone" => p.change.time_zone = v,
            "contact_email" => p.change.contact_email = v,
            "locale" => p.change.locale = v,
            "constant_sync" => p.change.constant_sync = true,
            "calendar_days_ahead" => p.calendar_days_ahead = v,
            "alerts" => p.change.alerts_enabled = true,
            "rule_field" => field = Some(v),
            "rule_text" => {
                let text = v.trim().to_string();
                if let Some(f) = field.take()
                    && !text.is_empty()
                {
                    p.change.filter_rules.push(FilterRule { field: f, contains: text });
                }
            }
            _ => {}
        }
    }
    p
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, pairs) = match guard::signed_in_form::<Vec<(String, String)>>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let p = posted(pairs);
    let (visitor, token_csrf, t) = (&user.visitor, user.csrf(), user.t);
    let question = question_state(&state, &visitor.profile.user_id).await?;
    let sessions = sessions_of(&state, &user).await?;
    let refuse = |message: String| {
        let shown = Shown {
            first_name: &p.change.first_name,
            last_name: &p.change.last_name,
            email: &visitor.profile.email,
            contact_email: &p.change.contact_email,
            time_zone: &p.change.time_zone,
            locale: &p.change.locale,
            constant_sync: p.change.constant_sync,
            calendar_days_ahead: &p.calendar_days_ahead,
            alerts_enabled: p.change.alerts_enabled,
            rules: &p.change.filter_rules,
        };
        Ok(render(t, StatusCode::BAD_REQUEST, &token_csrf, shown, None, (Some(message), None), question, sessions))
    };
    if !time_zones().any(|z| z == p.change.time_zone) {
        return refuse(t.get("form-time-zone"));
    }
    // A number the store then checks against its bounds; anything else is refused here.
    // Left out (a form from before the field, a script): unchanged.
    let days = match p.calendar_days_ahead.trim() {
        "" => visitor.profile.calendar_days_ahead,
        typed => match typed.parse::<u32>() {
            Ok(days) => days,
            Err(_) => return refuse(t.problem(crate::portal::Problem::CalendarDaysAhead)),
        },
    };
    let change = SettingsChange { calendar_days_ahead: days, ..p.change.clone() };
    // One of ours, or none (the browser's): the page's own list.
    if !p.change.locale.is_empty() && !LANGUAGES.iter().any(|(tag, _)| *tag == p.change.locale) {
        return refuse(t.problem(crate::portal::Problem::Locale));
    }
    match state.portal.update_settings(&visitor.profile.user_id, change).await {
        Ok(()) => Ok(page::see_other("/settings?saved=1").finish()),
        Err(PortalError::Invalid(problem)) => refuse(t.problem(problem)),
        Err(e) => Err(e.into()),
    }
}

impl WithCsrf for PasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(serde::Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    sign_out_devices: Option<String>,
}

pub async fn change_password(
    req: HttpRequest,
    state: web::Data<WebState>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (user, f) = match guard::signed_in_form::<PasswordForm>(&state, &req, payload).await? {
        Ok(posted) => posted,
        Err(answer) => return Ok(answer),
    };
    let (visitor, token, token_csrf, t) = (&user.visitor, &user.token, user.csrf(), user.t);
    let question = question_state(&state, &visitor.profile.user_id).await?;
    let sessions = sessions_of(&state, &user).await?;
    let days = visitor.profile.calendar_days_ahead.to_string();
    let refuse = |status: StatusCode, message: String| {
        let shown = of_profile(&visitor.profile, &days);
        Ok(render(t, status, &token_csrf, shown, None, (None, Some(message)), question, sessions))
    };
    if f.current.is_empty() || f.new_password.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, t.get("settings-password-missing"));
    }
    if f.current.len() > 1024 || f.new_password.len() > 1024 {
        return refuse(StatusCode::BAD_REQUEST, t.get("form-too-long"));
    }
    if f.new_password != f.confirm {
        return refuse(StatusCode::BAD_REQUEST, t.get("form-passwords-differ"));
    }
    let result = state
        .portal
        .change_password(
            &visitor.profile.user_id,
            &f.current,
            &f.new_password,
            token,
            f.sign_out_devices.is_some(),
            source(&req),
        )
        .await;
    match result {
        Ok(()) => Ok(page::see_other("/settings?password=1").finish()),
        Err(PortalError::InvalidCredentials) => refuse(StatusCode::UNAUTHORIZED, t.get("settings-password-wrong")),
        Err(PortalError::Throttled { retry_after }) => {
            Ok(page::retry_after(refuse(StatusCode::TOO_MANY_REQUESTS, t.too_many_attempts(retry_after))?, retry_after))
        }
        Err(PortalError::Invalid(problem)) => refuse(StatusCode::BAD_REQUEST, t.problem(problem)),
        // The session ended while the form was open.
        Err(PortalError::NotFound) => Ok(session_ended(t)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn rule_rows_pair_up_in_order_and_empty_ones_are_dropped() {
        let p = posted(pairs(&[
            ("csrf", "c"),
            ("first_name", "Ann"),
            ("constant_sync", "1"),
            ("rule_field", "from"),
            ("rule_text", " boss@corp.example "),
            ("rule_field", "subject"),
            ("rule_text", ""),
            ("rule_field", "subject"),
            ("rule_text", "URGENT"),
        ]));
        assert_eq!(p.csrf, "c");
        assert!(p.change.constant_sync);
        assert_eq!(
            p.change.filter_rules,
            vec![
                FilterRule { field: "from".into(), contains: "boss@corp.example".into() },
                FilterRule { field: "subject".into(), contains: "URGENT".into() },
            ]
        );
        assert!(!posted(pairs(&[("first_name", "x")])).change.constant_sync, "an unticked box is not sent");
    }
}
