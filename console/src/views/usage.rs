//! `/console/usage`: usage per license and day, as a bar chart drawn here (SVG: numbers
//! and dates only, nothing a user typed), a table and a CSV download.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use noc_protocol::clock::iso_date;
use noc_storage::UsageDay;
use noc_web::page;

use crate::api::usage::UsageQuery;
use crate::state::ConsoleState;
use crate::views::{Nav, failure, session};

pub struct Row {
    day: String,
    license: String,
    frames_to_ves: u64,
    frames_to_devices: u64,
    bytes_to_ves: u64,
    bytes_to_devices: u64,
    undeliverable: u64,
    device_hours: String,
    active_devices: u64,
    active_users: u64,
}

#[derive(Template)]
#[template(path = "console_usage.html")]
struct UsagePage {
    nav: Nav,
    /// (id, name) of the licenses in reach; empty for a role that does not list them.
    licenses: Vec<(String, String)>,
    license: String,
    from: String,
    to: String,
    query: String,
    /// Markup of our own making (numbers and dates), not escaped.
    chart: String,
    rows: Vec<Row>,
}

/// A bar per day, the two directions stacked, over `from..=to`.
fn chart(days: &[UsageDay], from: i64, to: i64) -> String {
    let mut per_day: BTreeMap<i64, (u64, u64)> = (from..=to).map(|d| (d, (0, 0))).collect();
    for u in days {
        let e = per_day.entry(u.day).or_default();
        e.0 += u.frames_to_ves;
        e.1 += u.frames_to_devices;
    }
    let (width, height, left, bottom) = (720.0_f64, 200.0_f64, 48.0_f64, 20.0_f64);
    let max = per_day.values().map(|(a, b)| a + b).max().unwrap_or(0).max(1) as f64;
    // Room on the right for the last day's label, centred under its bar.
    let slot = (width - left - 24.0) / per_day.len().max(1) as f64;
    let scale = (height - bottom - 8.0) / max;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         aria-label=\"Frames relayed per day\">"
    );
    let _ = write!(svg, "<text x=\"0\" y=\"12\">{}</text>", max as u64);
    let _ = write!(svg, "<text x=\"0\" y=\"{}\">0</text>", height - bottom);
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{width}\" y2=\"{y}\" stroke=\"#d0d7de\"/>",
        y = height - bottom
    );
    let label_every = (per_day.len() / 8).max(1);
    for (i, (day, (to_ves, to_devices))) in per_day.iter().enumerate() {
        let x = left + i as f64 * slot + slot * 0.15;
        let w = (slot * 0.7).max(1.0);
        let h_ves = *to_ves as f64 * scale;
        let h_dev = *to_devices as f64 * scale;
        let base = height - bottom;
        let _ = write!(
            svg,
            "<rect class=\"to-ves\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h_ves:.1}\"><title>{} to VES: {to_ves}</title></rect>",
            base - h_ves,
            iso_date(*day)
        );
        let _ = write!(
            svg,
            "<rect class=\"to-devices\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h_dev:.1}\"><title>{} to devices: {to_devices}</title></rect>",
            base - h_ves - h_dev,
            iso_date(*day)
        );
        if i % label_every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + w / 2.0,
                height - 4.0,
                &iso_date(*day)[5..]
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn query_of(req: &HttpRequest) -> Option<UsageQuery> {
    serde_urlencoded::from_str(req.query_string()).ok()
}

pub async fn show(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Some(q) = query_of(&req) else { return failure::bad_form() };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(message) => return failure::message(StatusCode::BAD_REQUEST, "Check the form", message),
    };
    let days = match state.accounts.usage_as(&s.principal, &filter).await {
        Ok(d) => d,
        Err(e) => return failure::from_account(e),
    };
    let licenses: Vec<(String, String)> = state
        .accounts
        .licenses_as(&s.principal)
        .await
        .map(|ls| ls.into_iter().map(|l| (l.id.to_string(), l.name)).collect())
        .unwrap_or_default();
    let name_of = |id: String| licenses.iter().find(|(i, _)| *i == id).map_or(id.clone(), |(_, n)| n.clone());
    let license = filter.license.map(|l| l.to_string()).unwrap_or_default();
    let (from, to) = (iso_date(filter.from_day), iso_date(filter.to_day));
    let query = serde_urlencoded::to_string([("license", &license), ("from", &from), ("to", &to)]).unwrap_or_default();
    let rows = days
        .iter()
        .map(|u| Row {
            day: iso_date(u.day),
            license: name_of(u.license_id.to_string()),
            frames_to_ves: u.frames_to_ves,
            frames_to_devices: u.frames_to_devices,
            bytes_to_ves: u.bytes_to_ves,
            bytes_to_devices: u.bytes_to_devices,
            undeliverable: u.undeliverable,
            device_hours: format!("{:.1}", u.device_seconds as f64 / 3600.0),
            active_devices: u.active_devices,
            active_users: u.active_users,
        })
        .collect();
    let chart = chart(&days, filter.from_day, filter.to_day);
    page::render(StatusCode::OK, &UsagePage { nav: Nav::of(&s), licenses, license, from, to, query, chart, rows })
}

pub async fn csv(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    let s = match session::require(&state, &req).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let Some(q) = query_of(&req) else { return failure::bad_form() };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(message) => return failure::message(StatusCode::BAD_REQUEST, "Check the form", message),
    };
    match state.accounts.usage_as(&s.principal, &filter).await {
        Ok(days) => {
            let mut b = HttpResponse::Ok();
            page::secure(&mut b)
                .content_type("text/csv; charset=utf-8")
                .insert_header(("Content-Disposition", "attachment; filename=\"usage.csv\""))
                .body(crate::csv::usage(&days))
        }
        Err(e) => failure::from_account(e),
    }
}

#[cfg(test)]
mod tests {
    use noc_protocol::LicenseId;

    use super::*;

    #[test]
    fn the_chart_has_a_bar_pair_per_day_and_nothing_active() {
        let day = |d, ves, dev| UsageDay {
            day: d,
            license_id: LicenseId::random(),
            frames_to_ves: ves,
            bytes_to_ves: 0,
            frames_to_devices: dev,
            bytes_to_devices: 0,
            undeliverable: 0,
            device_seconds: 0,
            active_devices: 0,
            active_users: 0,
        };
        let svg = chart(&[day(20_000, 10, 30), day(20_002, 5, 0), day(20_002, 1, 1)], 20_000, 20_002);
        assert_eq!(svg.matches("<rect class=\"to-ves\"").count(), 3, "one per day, the empty day too");
        assert!(svg.contains("to VES: 6") && svg.contains(">40<"), "days summed over licenses; the scale's top: {svg}");
        assert!(!svg.contains("<script") && !svg.contains("href"));
    }
}
