//! What every browse page shares (white paper §6.1, docs/web.md "Browse access"): asking
//! the user's enterprise server through the relay, ids in URLs, times in the user's own
//! zone, and HTML mail made safe to show.
//!
//! The data is the enterprise's: fetched live for each page, kept nowhere, never logged.
//! Every page carries `Cache-Control: no-store` (as every portal page does).

use actix_web::HttpResponse;
use serde::de::DeserializeOwned;

use crate::errors::PageError;
use crate::i18n::Lang;
use crate::portal::{BrowseError, Interface};
use crate::{WebState, page};
use noc_protocol::rts::fetch::{Done, FetchRequest, Outgoing};

/// Asks the user's enterprise server and reads the answer as `T`.
pub(crate) async fn ask<T: DeserializeOwned>(
    state: &WebState,
    user_id: &str,
    interface: Interface,
    request: FetchRequest,
) -> Result<T, PageError> {
    let body = state.portal.fetch(user_id, interface, request).await.map_err(PageError::Browse)?;
    serde_json::from_value(body).map_err(|_| {
        // An enterprise server that answers something else: its words stay out of the log.
        tracing::warn!("browse: an enterprise server's answer did not have the expected form");
        PageError::Browse(BrowseError::Internal)
    })
}

/// Sends a message written on a browse page. `Ok(None)`: sent; `Ok(Some(why))`: not sent,
/// `why` in the reader's words (no recipient, or the enterprise server refused it), for
/// the form shown again with what was written.
pub(crate) async fn send(
    state: &WebState,
    user_id: &str,
    interface: Interface,
    outgoing: Outgoing,
    t: Lang,
) -> Result<Option<String>, PageError> {
    if outgoing.to.is_empty() {
        return Ok(Some(t.get("mail-no-recipient")));
    }
    match ask::<Done>(state, user_id, interface, FetchRequest::MailSend(outgoing)).await {
        Ok(_) => Ok(None),
        Err(PageError::Browse(BrowseError::Refused(why))) => {
            Ok(Some(t.get1("mail-send-refused", "reason", why.as_str())))
        }
        Err(e) => Err(e),
    }
}

/// Deletes a message (into the trash; for good when it is there) and sends the browser
/// back to its folder under `mail_root` (`/mail`, `/pda/mail`, `/wap/mail`), saying so.
pub(crate) async fn delete(
    state: &WebState,
    user_id: &str,
    interface: Interface,
    (folder, message_id): (String, String),
    mail_root: &str,
) -> Result<HttpResponse, PageError> {
    let request = FetchRequest::MailDelete { folder: folder.clone(), message_id };
    let _: Done = ask(state, user_id, interface, request).await?;
    Ok(page::see_other(&format!("{mail_root}/{}?done=deleted", segment(&folder))).finish())
}

/// Addresses separated by commas or semicolons.
pub(crate) fn addresses(list: &str) -> Vec<String> {
    list.split([',', ';']).map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect()
}

/// `id` as one URL path segment: everything but unreserved characters percent-encoded.
pub(crate) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The user's time zone: an IANA name (`Europe/Berlin`) or a UTC offset (`UTC+02:00`,
/// `-05:00`), as the settings page accepts them; UTC for none or one not known here.
pub(crate) fn zone(name: Option<&str>) -> jiff::tz::TimeZone {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else { return jiff::tz::TimeZone::UTC };
    let offset = name.strip_prefix("UTC").or_else(|| name.strip_prefix("GMT")).unwrap_or(name);
    if offset.is_empty() {
        return jiff::tz::TimeZone::UTC;
    }
    if let Some(sign) = offset.chars().next().filter(|c| *c == '+' || *c == '-') {
        let rest = &offset[1..];
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        if let (Ok(h), Ok(m)) = (h.parse::<i32>(), m.parse::<i32>()) {
            let seconds = (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 };
            if let Ok(o) = jiff::tz::Offset::from_seconds(seconds) {
                return jiff::tz::TimeZone::fixed(o);
            }
        }
        return jiff::tz::TimeZone::UTC;
    }
    jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC)
}

fn zoned(ms: i64, tz: &jiff::tz::TimeZone) -> Option<jiff::ZonedDateTime> {
    jiff::Timestamp::from_millisecond(ms).ok().map(|t| t.to_zoned_datetime(tz.clone()))
}

/// `2026-12-04 10:00` in `tz`.
pub(crate) fn local_time(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    zoned(ms, tz).map(|z| z.strftime("%Y-%m-%d %H:%M").to_string()).unwrap_or_default()
}

/// `10:00` in `tz`.
pub(crate) fn local_clock(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    zoned(ms, tz).map(|z| z.strftime("%H:%M").to_string()).unwrap_or_default()
}

/// The calendar date of `ms` in `tz`.
pub(crate) fn local_date(ms: i64, tz: &jiff::tz::TimeZone) -> Option<jiff::civil::Date> {
    zoned(ms, tz).map(|z| z.date())
}

/// The instant a local day starts in `tz` (unix ms).
pub(crate) fn day_start(date: jiff::civil::Date, tz: &jiff::tz::TimeZone) -> i64 {
    date.to_zoned_datetime(tz.clone()).map(|z| z.timestamp().as_millisecond()).unwrap_or(0)
}

/// Whether event `e` falls on local `day` (`[start, end)` its instants in the user's zone).
/// An all-day event is a span of calendar dates, the same in every zone (its instants are
/// 00:00 UTC of its first day and after its last): it is on `day` when `day` is one of them.
pub(crate) fn event_on(e: &noc_protocol::rts::fetch::Event, day: jiff::civil::Date, start: i64, end: i64) -> bool {
    if e.all_day {
        let utc = jiff::tz::TimeZone::UTC;
        let (Some(first), Some(after)) = (local_date(e.start, &utc), local_date(e.end, &utc)) else { return false };
        return first <= day && (day < after || first == after);
    }
    e.start < end && (e.end > start || (e.end == e.start && e.start >= start))
}

/// HTML mail made safe to show inside a page: no script, no event handler, no style, no
/// form, no frame, no image (nothing is loaded from elsewhere: the page's CSP forbids it
/// anyway), links only to http, https and mailto, opened without a referrer.
pub(crate) fn safe_html(html: &str) -> String {
    let mut b = ammonia::Builder::default();
    b.rm_tags(["img"]);
    b.url_schemes(["http", "https", "mailto"].into_iter().collect());
    // No relative link: `//elsewhere` or a path of this site inside a mail is not a link.
    b.url_relative(ammonia::UrlRelative::Deny);
    b.link_rel(Some("noopener noreferrer nofollow"));
    b.clean(html).to_string()
}

/// HTML mail for a PDA: text-level tags only (paragraphs, line breaks, emphasis, lists,
/// links); no image, table, frame, style or script.
pub(crate) fn basic_html(html: &str) -> String {
    let mut b = ammonia::Builder::empty();
    b.clean_content_tags(["script", "style", "title"].into_iter().collect());
    b.add_tags(["p", "br", "b", "strong", "i", "em", "u", "ul", "ol", "li", "a", "blockquote", "pre"]);
    b.add_tag_attributes("a", ["href"]);
    b.url_schemes(["http", "https", "mailto"].into_iter().collect());
    b.url_relative(ammonia::UrlRelative::Deny);
    b.link_rel(Some("noopener noreferrer nofollow"));
    b.clean(html).to_string()
}

/// HTML mail as plain text (for WML): paragraphs and line breaks kept as line ends, every
/// tag dropped, entities decoded.
pub(crate) fn html_text(html: &str) -> String {
    let spaced = html
        .replace("<br", "\n<br")
        .replace("<BR", "\n<BR")
        .replace("</p>", "</p>\n")
        .replace("</P>", "</P>\n")
        .replace("</div>", "</div>\n")
        .replace("</li>", "</li>\n");
    let mut b = ammonia::Builder::empty();
    b.clean_content_tags(["script", "style", "title"].into_iter().collect());
    let text = b.clean(&spaced).to_string();
    let text = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.lines().map(str::trim).collect::<Vec<_>>().join("\n").trim().to_string()
}

/// A byte size as people read it: `512 B`, `12 KB`, `3.4 MB`.
pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{} KB", bytes.div_ceil(1024)),
        _ => format!("{:.1} MB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_mail_keeps_its_text_and_loses_what_could_act() {
        let dirty = r#"<p onclick="x()">Hi <b>Bob</b><script>alert(1)</script><img src="https://track.example/p.gif">
            <a href="javascript:alert(1)">bad</a> <a href="https://ok.example/">ok</a><style>p{}</style>
            <iframe src="https://x.example"></iframe><form action="https://x.example"><input></form>
            <a href="//evil.example/x">rel</a><a href="/logout">own</a></p>"#;
        let clean = safe_html(dirty);
        assert!(clean.contains("Hi <b>Bob</b>"), "{clean}");
        for gone in [
            "<script",
            "alert(1)</",
            "onclick",
            "<img",
            "javascript:",
            "<style",
            "<iframe",
            "<form",
            "<input",
            "//evil.example",
            "href=\"/logout",
        ] {
            assert!(!clean.contains(gone), "{gone} in {clean}");
        }
        assert!(clean.contains(r#"href="https://ok.example/""#) && clean.contains("noopener"), "{clean}");
    }

    #[test]
    fn pda_mail_keeps_only_text_level_tags() {
        let clean = basic_html(
            r#"<table><tr><td><p>Hi <b>Bob</b></p><img src="x.gif"><iframe></iframe><script>x()</script></td></tr></table>"#,
        );
        assert_eq!(clean, "<p>Hi <b>Bob</b></p>");
    }

    #[test]
    fn html_mail_becomes_plain_text_for_wap() {
        let text = html_text("<p>Hi <b>Bob</b> &amp; co</p><p>2 &lt; 3<br>bye</p><script>x()</script>");
        assert_eq!(text, "Hi Bob & co\n2 < 3\nbye");
    }

    #[test]
    fn times_are_shown_in_the_users_zone() {
        let ms = 1_796_374_800_000; // 2026-12-04 09:00 UTC
        assert_eq!(local_time(ms, &zone(None)), "2026-12-04 09:00");
        assert_eq!(local_time(ms, &zone(Some("Europe/Berlin"))), "2026-12-04 10:00");
        assert_eq!(local_time(ms, &zone(Some("UTC+02:00"))), "2026-12-04 11:00");
        assert_eq!(local_time(ms, &zone(Some("-05:30"))), "2026-12-04 03:30");
        assert_eq!(local_time(ms, &zone(Some("Mars/Olympus"))), "2026-12-04 09:00", "unknown: UTC");
        let berlin = zone(Some("Europe/Berlin"));
        let day = local_date(ms, &berlin).expect("date");
        assert_eq!(day_start(day, &berlin), 1_796_338_800_000, "midnight in Berlin is 23:00 UTC");
    }

    #[test]
    fn all_day_events_keep_their_dates_in_every_zone() {
        let christmas = noc_protocol::rts::fetch::Event {
            event_id: "x".into(),
            summary: "Holiday".into(),
            location: None,
            start: 1_798_156_800_000, // 2026-12-25 00:00 UTC
            end: 1_798_243_200_000,
            all_day: true,
        };
        for name in ["Europe/Berlin", "America/New_York", "Asia/Tokyo"] {
            let tz = zone(Some(name));
            for (d, on) in [("2026-12-24", false), ("2026-12-25", true), ("2026-12-26", false)] {
                let day: jiff::civil::Date = d.parse().expect("date");
                let next = day.tomorrow().expect("next");
                assert_eq!(event_on(&christmas, day, day_start(day, &tz), day_start(next, &tz)), on, "{name} {d}");
            }
        }
    }

    #[test]
    fn ids_become_single_path_segments() {
        assert_eq!(segment("1733.M1P2.host,S=4"), "1733.M1P2.host%2CS%3D4");
        assert_eq!(segment("a/../b"), "a%2F..%2Fb");
        assert_eq!(size(10), "10 B");
        assert_eq!(size(2048), "2 KB");
        assert_eq!(size(3 * 1_048_576), "3.0 MB");
    }
}
