//! `GET /calendar?day=YYYY-MM-DD&view=day|week`: the user's calendar on a PC browser, a day
//! or a week from the enterprise server, in the user's time zone.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::rts::fetch::{EventList, FetchRequest};
use serde::Deserialize;

use crate::browse::{self, ask};
use crate::errors::PageError;
use crate::guard;
use crate::i18n::Lang;
use crate::portal::Interface;
use crate::views::mail::query;
use crate::{WebState, page};

pub struct EventRow {
    /// `10:00–11:30`, or "all day".
    pub when: String,
    pub summary: String,
    pub location: Option<String>,
}

pub struct Day {
    pub title: String,
    pub events: Vec<EventRow>,
}

#[derive(Template)]
#[template(path = "calendar.html")]
pub struct CalendarPage<'a> {
    pub t: Lang,
    pub csrf: &'a str,
    pub title: String,
    pub week: bool,
    pub days: Vec<Day>,
    pub previous: String,
    pub next: String,
    pub today: String,
    pub other_view: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CalendarQuery {
    #[serde(default)]
    day: Option<String>,
    #[serde(default)]
    view: Option<String>,
}

/// `Friday 2026-12-04`, the day's name in the reader's language.
fn day_title(d: jiff::civil::Date, t: Lang) -> String {
    let name = match d.weekday() {
        jiff::civil::Weekday::Monday => t.get("calendar-monday"),
        jiff::civil::Weekday::Tuesday => t.get("calendar-tuesday"),
        jiff::civil::Weekday::Wednesday => t.get("calendar-wednesday"),
        jiff::civil::Weekday::Thursday => t.get("calendar-thursday"),
        jiff::civil::Weekday::Friday => t.get("calendar-friday"),
        jiff::civil::Weekday::Saturday => t.get("calendar-saturday"),
        jiff::civil::Weekday::Sunday => t.get("calendar-sunday"),
    };
    format!("{name} {d}")
}

fn link(day: jiff::civil::Date, week: bool) -> String {
    format!("/calendar?day={day}&view={}", if week { "week" } else { "day" })
}

/// `GET /calendar`.
pub async fn show(req: HttpRequest, state: web::Data<WebState>) -> Result<HttpResponse, PageError> {
    let user = match guard::signed_in(&state, &req).await? {
        Ok(u) => u,
        Err(answer) => return Ok(answer),
    };
    let q: CalendarQuery = query(&req)?;
    let t = user.t;
    let tz = browse::zone(user.visitor.profile.time_zone.as_deref());
    let today = browse::local_date(noc_protocol::clock::unix_ms_i64(), &tz).ok_or(PageError::Internal)?;
    let day = match q.day.as_deref() {
        None | Some("") => today,
        Some(d) => d.parse::<jiff::civil::Date>().map_err(|_| PageError::BadForm)?,
    };
    let week = match q.view.as_deref() {
        None | Some("" | "day") => false,
        Some("week") => true,
        Some(_) => return Err(PageError::BadForm),
    };
    // A week starts on Monday.
    let first = if week {
        day.checked_sub(jiff::Span::new().days(i64::from(day.weekday().to_monday_zero_offset())))
            .map_err(|_| PageError::BadForm)?
    } else {
        day
    };
    let n = if week { 7 } else { 1 };
    let dates: Vec<jiff::civil::Date> =
        (0..=n).filter_map(|i| first.checked_add(jiff::Span::new().days(i)).ok()).collect();
    if dates.len() != n as usize + 1 {
        return Err(PageError::BadForm);
    }
    let bounds: Vec<i64> = dates.iter().map(|d| browse::day_start(*d, &tz)).collect();
    let request = FetchRequest::CalendarRange { from: bounds[0], to: bounds[n as usize] };
    let events: EventList = ask(&state, &user.visitor.profile.user_id, Interface::Pc, request).await?;
    let days = (0..n as usize)
        .map(|i| {
            let (start, end) = (bounds[i], bounds[i + 1]);
            Day {
                title: day_title(dates[i], t),
                events: events
                    .events
                    .iter()
                    .filter(|e| browse::event_on(e, dates[i], start, end))
                    .map(|e| EventRow {
                        when: if e.all_day {
                            t.get("calendar-all-day")
                        } else {
                            format!("{}–{}", browse::local_clock(e.start, &tz), browse::local_clock(e.end, &tz))
                        },
                        summary: if e.summary.is_empty() { t.get("calendar-no-title") } else { e.summary.clone() },
                        location: e.location.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    let step = jiff::Span::new().days(n);
    let csrf = user.csrf();
    Ok(page::render(
        StatusCode::OK,
        &CalendarPage {
            t,
            csrf: &csrf,
            title: if week { t.get1("calendar-week-of", "day", first) } else { day_title(dates[0], t) },
            week,
            days,
            previous: link(first.checked_sub(step).unwrap_or(first), week),
            next: link(first.checked_add(step).unwrap_or(first), week),
            today: link(today, week),
            other_view: link(day, !week),
        },
    ))
}
