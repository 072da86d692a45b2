//! Calendar and contacts for browse pages, from the same files the agent pushes to devices
//! (`<calendar_root>/<email>/*.ics`, `<contacts_root>/<email>/*.vcf`, docs/endpoints.md
//! §10): the events of a time range, contacts by name, one contact, a new contact.
//!
//! Enough iCalendar (RFC 5545) and vCard (RFC 6350, and 3.0) for that: unfolded lines,
//! escaped text, `DTSTART`/`DTEND`/`DURATION` as dates, UTC times or local times with a
//! `TZID` (the IANA database, through jiff), recurring events expanded by
//! [`super::recur`] with their `EXDATE`s and the occurrences other `VEVENT`s of the same
//! `UID` move (`RECURRENCE-ID`).

use std::fs;
use std::path::{Path, PathBuf};

use noc_protocol::rts::fetch::{Contact, ContactPage, Event, EventList, FetchError, FetchErrorCode, NewContact};

use super::mail::not_found;

/// A property line: name, parameters (upper-cased names), value.
struct Property {
    name: String,
    params: Vec<(String, String)>,
    value: String,
}

impl Property {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Unfolds (RFC 5545 §3.1) and splits content lines.
fn properties(text: &str) -> Vec<Property> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = line.strip_prefix([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push_str(rest);
            }
        } else if !line.is_empty() {
            lines.push(line.to_string());
        }
    }
    lines
        .into_iter()
        .filter_map(|line| {
            let colon = value_start(&line)?;
            let (head, value) = (&line[..colon], &line[colon + 1..]);
            let mut parts = head.split(';');
            let name = parts.next()?.to_ascii_uppercase();
            // A vCard group prefix (`item1.EMAIL`) is dropped.
            let name = name.rsplit('.').next().unwrap_or(&name).to_string();
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_ascii_uppercase(), v.trim_matches('"').to_string()))
                .collect();
            Some(Property { name, params, value: value.to_string() })
        })
        .collect()
}

/// The colon that starts the value: the first one outside a quoted parameter value.
fn value_start(line: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// TEXT values: `\n`, `\,`, `\;`, `\\`.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace(';', "\\;").replace(',', "\\,").replace('\n', "\\n").replace('\r', "")
}

/// A `DTSTART`/`DTEND`/`RECURRENCE-ID`/`EXDATE` value: its civil time, the zone it is in,
/// and whether it is a date (all day; then midnight in UTC, as the pages show dates).
struct When {
    civil: jiff::civil::DateTime,
    tz: jiff::tz::TimeZone,
    all_day: bool,
}

impl When {
    fn ms(&self) -> Option<i64> {
        Some(self.tz.to_timestamp(self.civil).ok()?.as_millisecond())
    }
}

/// One date or date-time value. A floating time (neither `Z` nor `TZID`, RFC 5545
/// §3.3.5 form #1) is the same wall-clock time wherever its reader is: here, the user's
/// own zone, `floating`; so is a `TZID` jiff does not know.
fn when_value(v: &str, tzid: Option<&str>, floating: &jiff::tz::TimeZone) -> Option<When> {
    let value = super::recur::ical_value(v)?;
    let tz = match (value.date || value.utc, tzid) {
        (true, _) => jiff::tz::TimeZone::UTC,
        (false, Some(id)) => jiff::tz::TimeZone::get(id).unwrap_or_else(|_| floating.clone()),
        (false, None) => floating.clone(),
    };
    Some(When { civil: value.civil, tz, all_day: value.date })
}

fn when(p: &Property, floating: &jiff::tz::TimeZone) -> Option<When> {
    when_value(&p.value, p.param("TZID"), floating)
}

/// `DURATION` (RFC 5545 §3.3.6): `P1D`, `PT1H30M`, `P2W`; ms.
fn duration_ms(v: &str) -> Option<i64> {
    let v = v.trim();
    let (sign, v) = match v.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, v.strip_prefix('+').unwrap_or(v)),
    };
    let mut rest = v.strip_prefix('P')?;
    let mut ms: i64 = 0;
    let mut in_time = false;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('T') {
            in_time = true;
            rest = r;
            continue;
        }
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: i64 = rest[..end].parse().ok()?;
        let unit = rest[end..].chars().next()?;
        let per = match (unit, in_time) {
            ('W', false) => 7 * 86_400_000,
            ('D', false) => 86_400_000,
            ('H', true) => 3_600_000,
            ('M', true) => 60_000,
            ('S', true) => 1_000,
            _ => return None,
        };
        ms = ms.checked_add(n.checked_mul(per)?)?;
        rest = &rest[end + 1..];
    }
    Some(sign * ms)
}

/// One `VEVENT` as read: its first occurrence, and how it recurs.
struct Entry {
    uid: Option<String>,
    start: When,
    duration_ms: i64,
    summary: String,
    location: Option<String>,
    rule: Option<super::recur::Rule>,
    /// `EXDATE`s: occurrences left out (unix ms).
    exdates: Vec<i64>,
    /// `RECURRENCE-ID`: the occurrence of the recurring `UID` this entry moves (unix ms).
    recurrence_id: Option<i64>,
}

/// The `VEVENT`s of one `.ics` file, floating times read in `floating`.
fn entries_of(text: &str, floating: &jiff::tz::TimeZone) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut current: Option<Vec<Property>> = None;
    let mut depth = 0;
    for p in properties(text) {
        match (p.name.as_str(), p.value.to_ascii_uppercase().as_str()) {
            ("BEGIN", "VEVENT") if current.is_none() => current = Some(Vec::new()),
            ("BEGIN", _) if current.is_some() => depth += 1, // VALARM inside an event
            ("END", "VEVENT") if depth == 0 => {
                if let Some(props) = current.take()
                    && let Some(e) = entry(&props, floating)
                {
                    out.push(e);
                }
            }
            ("END", _) if depth > 0 => depth -= 1,
            _ => {
                if depth == 0
                    && let Some(props) = current.as_mut()
                {
                    props.push(p);
                }
            }
        }
    }
    out
}

fn entry(props: &[Property], floating: &jiff::tz::TimeZone) -> Option<Entry> {
    let get = |name: &str| props.iter().find(|p| p.name == name);
    let start = when(get("DTSTART")?, floating)?;
    let start_ms = start.ms()?;
    let end =
        match (get("DTEND").and_then(|p| when(p, floating)?.ms()), get("DURATION").and_then(|d| duration_ms(&d.value)))
        {
            (Some(end), _) => end,
            (None, Some(d)) => start_ms.saturating_add(d),
            // RFC 5545 §3.6.1: a date lasts the day, a date-time no time at all.
            (None, None) => start_ms + if start.all_day { 86_400_000 } else { 0 },
        };
    let zone = start.tz.clone();
    let to_civil = move |t: jiff::Timestamp| zone.to_datetime(t);
    let rule = get("RRULE").and_then(|p| super::recur::Rule::parse(&p.value, &to_civil));
    let exdates = props
        .iter()
        .filter(|p| p.name == "EXDATE")
        .flat_map(|p| p.value.split(',').filter_map(|v| when_value(v, p.param("TZID"), floating)?.ms()))
        .collect();
    Some(Entry {
        uid: get("UID").map(|p| p.value.trim().to_string()).filter(|u| !u.is_empty()),
        duration_ms: (end - start_ms).max(0),
        summary: get("SUMMARY").map(|p| unescape(&p.value)).unwrap_or_default(),
        location: get("LOCATION").map(|p| unescape(&p.value)).filter(|l| !l.is_empty()),
        rule,
        exdates,
        recurrence_id: get("RECURRENCE-ID").and_then(|p| when(p, floating)?.ms()),
        start,
    })
}

/// The occurrences of a file's entries that overlap `[from, to)` (an instant event at
/// `from` counts), with ids `<file>#<entry>` for the first occurrence and
/// `<file>#<entry>.<start ms>` for the others.
fn occurrences(entries: &[Entry], file_id: &str, from: i64, to: i64) -> Vec<Event> {
    // Occurrences moved by another entry (`RECURRENCE-ID`) are that entry's.
    let moved: Vec<(&str, i64)> = entries.iter().filter_map(|e| Some((e.uid.as_deref()?, e.recurrence_id?))).collect();
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(first) = e.start.ms() else { continue };
        let event = |start: i64, id: String| Event {
            event_id: id,
            summary: e.summary.clone(),
            location: e.location.clone(),
            start,
            end: start.saturating_add(e.duration_ms),
            all_day: e.start.all_day,
        };
        let overlaps = |start: i64| start < to && (start.saturating_add(e.duration_ms) > from || start >= from);
        let starts = match (&e.rule, e.recurrence_id) {
            (Some(rule), None) => {
                let civil = |ms: i64| jiff::Timestamp::from_millisecond(ms).ok().map(|t| e.start.tz.to_datetime(t));
                let (Some(lo), Some(hi)) = (civil(from.saturating_sub(e.duration_ms)), civil(to)) else { continue };
                rule.starts(e.start.civil, lo, hi)
                    .into_iter()
                    .filter_map(|c| e.start.tz.to_timestamp(c).ok().map(|t| t.as_millisecond()))
                    .collect()
            }
            _ => vec![first],
        };
        for start in starts {
            let is_moved =
                e.recurrence_id.is_none() && e.uid.as_deref().is_some_and(|uid| moved.contains(&(uid, start)));
            if !overlaps(start) || e.exdates.contains(&start) || is_moved {
                continue;
            }
            let id = if start == first { format!("{file_id}#{i}") } else { format!("{file_id}#{i}.{start}") };
            out.push(event(start, id));
        }
    }
    out
}

/// The first occurrence of each event of one `.ics` file.
#[cfg(test)]
fn events_of(text: &str, file_id: &str, floating: &jiff::tz::TimeZone) -> Vec<Event> {
    entries_of(text, floating)
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let start = e.start.ms()?;
            Some(Event {
                event_id: format!("{file_id}#{i}"),
                summary: e.summary.clone(),
                location: e.location.clone(),
                start,
                end: start + e.duration_ms,
                all_day: e.start.all_day,
            })
        })
        .collect()
}

/// The files with `extension` in `dir`, by stem (a missing directory has none).
fn files(dir: &Path, extension: &str) -> Result<Vec<(String, PathBuf)>, FetchError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            tracing::warn!(error = %e, "browse: a PIM directory could not be read");
            return Err(FetchError {
                code: FetchErrorCode::Unavailable,
                message: "the calendar or contacts could not be read".into(),
            });
        }
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let stem = path.file_stem()?.to_string_lossy().into_owned();
            let ext_ok = path.extension().is_some_and(|x| x.eq_ignore_ascii_case(extension));
            (ext_ok && !stem.starts_with('.') && path.is_file()).then_some((stem, path))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The user's zone for floating times: `time_zone` (an IANA name) or UTC.
pub fn user_zone(time_zone: Option<&str>) -> jiff::tz::TimeZone {
    time_zone.and_then(|z| jiff::tz::TimeZone::get(z).ok()).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// The earliest start among the events of an `.ics` file (unix ms; a recurring event's
/// first occurrence); `None` when it holds no event with a start this reader understands.
pub fn first_start(text: &str, floating: &jiff::tz::TimeZone) -> Option<i64> {
    entries_of(text, floating).iter().filter_map(|e| e.start.ms()).min()
}

/// Events overlapping `[from, to)`, earliest first; floating times in `floating`.
pub fn calendar_range(
    dir: Option<&Path>,
    from: i64,
    to: i64,
    floating: &jiff::tz::TimeZone,
) -> Result<EventList, FetchError> {
    let Some(dir) = dir else { return Ok(EventList { events: Vec::new() }) };
    let mut events = Vec::new();
    for (stem, path) in files(dir, "ics")? {
        let Ok(text) = fs::read_to_string(&path) else { continue };
        events.extend(occurrences(&entries_of(&text, floating), &stem, from, to));
    }
    events.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.summary.cmp(&b.summary)));
    Ok(EventList { events })
}

fn contact_of(text: &str, id: &str) -> Contact {
    let props = properties(text);
    let all = |name: &str| -> Vec<String> {
        props.iter().filter(|p| p.name == name).map(|p| unescape(&p.value)).filter(|v| !v.is_empty()).collect()
    };
    let name = all("FN").into_iter().next().unwrap_or_else(|| {
        // N: family;given;additional;prefix;suffix
        props
            .iter()
            .find(|p| p.name == "N")
            .map(|p| {
                let parts: Vec<String> = p.value.split(';').map(unescape).collect();
                format!("{} {}", parts.get(1).cloned().unwrap_or_default(), parts.first().cloned().unwrap_or_default())
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    });
    Contact {
        contact_id: id.to_string(),
        name,
        emails: all("EMAIL"),
        phones: all("TEL").into_iter().map(|t| t.trim_start_matches("tel:").to_string()).collect(),
        organization: props.iter().find(|p| p.name == "ORG").map(|p| unescape(p.value.split(';').next().unwrap_or(""))),
    }
}

fn all_contacts(dir: &Path) -> Result<Vec<Contact>, FetchError> {
    let mut out = Vec::new();
    for (stem, path) in files(dir, "vcf")? {
        if let Ok(text) = fs::read_to_string(&path) {
            out.push(contact_of(&text, &stem));
        }
    }
    out.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then_with(|| a.contact_id.cmp(&b.contact_id)));
    Ok(out)
}

/// Contacts whose name, address or organisation contains `query` (any case), one page.
pub fn contact_list(dir: Option<&Path>, query: &str, offset: u32, limit: u32) -> Result<ContactPage, FetchError> {
    let Some(dir) = dir else { return Ok(ContactPage { contacts: Vec::new(), total: 0 }) };
    let q = query.trim().to_lowercase();
    let matching: Vec<Contact> = all_contacts(dir)?
        .into_iter()
        .filter(|c| {
            q.is_empty()
                || c.name.to_lowercase().contains(&q)
                || c.emails.iter().any(|e| e.to_lowercase().contains(&q))
                || c.organization.as_deref().is_some_and(|o| o.to_lowercase().contains(&q))
        })
        .collect();
    let total = u32::try_from(matching.len()).unwrap_or(u32::MAX);
    let limit = limit.clamp(1, super::mail::MAX_PAGE) as usize;
    Ok(ContactPage { contacts: matching.into_iter().skip(offset as usize).take(limit).collect(), total })
}

/// One contact, found in the listing by its id (the file's stem).
pub fn contact_read(dir: Option<&Path>, id: &str) -> Result<Contact, FetchError> {
    let dir = dir.ok_or_else(|| not_found("contact"))?;
    let (stem, path) =
        files(dir, "vcf")?.into_iter().find(|(stem, _)| stem == id).ok_or_else(|| not_found("contact"))?;
    let text = fs::read_to_string(&path).map_err(|_| not_found("contact"))?;
    Ok(contact_of(&text, &stem))
}

/// Writes a new contact as a vCard 3.0 file (to a temporary name, then renamed, so the
/// push to devices reads it whole).
pub fn contact_add(dir: Option<&Path>, c: &NewContact) -> Result<Contact, FetchError> {
    let bad = |m: &str| FetchError { code: FetchErrorCode::BadRequest, message: m.to_string() };
    let dir =
        dir.ok_or_else(|| FetchError { code: FetchErrorCode::Unsupported, message: "no contacts here".into() })?;
    let name = c.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(bad("a contact has a name of 1 to 200 characters"));
    }
    if c.emails.len() + c.phones.len() > 20 {
        return Err(bad("at most 20 addresses and numbers"));
    }
    fs::create_dir_all(dir).map_err(|_| bad("the contacts could not be written"))?;
    let id = format!("browse-{}", noc_protocol::secrets::random_hex::<8>());
    let mut v = format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{id}\r\nFN:{}\r\nN:;{};;;\r\n", escape(name), escape(name));
    for e in c.emails.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        v.push_str(&format!("EMAIL;TYPE=INTERNET:{}\r\n", escape(e)));
    }
    for t in c.phones.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        v.push_str(&format!("TEL:{}\r\n", escape(t)));
    }
    if let Some(org) = c.organization.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
        v.push_str(&format!("ORG:{}\r\n", escape(org)));
    }
    v.push_str("END:VCARD\r\n");
    let tmp = dir.join(format!(".{id}.tmp"));
    fs::write(&tmp, &v).and_then(|()| fs::rename(&tmp, dir.join(format!("{id}.vcf")))).map_err(|e| {
        tracing::warn!(error = %e, "browse: a contact could not be written");
        FetchError { code: FetchErrorCode::Unavailable, message: "the contacts could not be written".into() }
    })?;
    Ok(contact_of(&v, &id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a\r\nSUMMARY:Board\\, quarterly\r\nLOCATION:Room 1\r\nDTSTART;TZID=Europe/Paris:20261204T100000\r\nDTEND;TZID=Europe/Paris:20261204T113000\r\nBEGIN:VALARM\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nSUMMARY:Holiday\r\nDTSTART;VALUE=DATE:20261225\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nSUMMARY:Call\r\nDTSTART:20261204T150000Z\r\nDURATION:PT45M\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn events_with_zones_dates_and_durations() {
        let events = events_of(ICS, "work", &jiff::tz::TimeZone::UTC);
        assert_eq!(events.len(), 3);
        // 10:00 in Paris in December is 09:00 UTC.
        assert_eq!(events[0].summary, "Board, quarterly");
        assert_eq!(events[0].start, 1_796_374_800_000);
        assert_eq!(events[0].end - events[0].start, 90 * 60_000);
        assert_eq!(events[0].location.as_deref(), Some("Room 1"));
        assert!(events[1].all_day);
        assert_eq!(events[1].end - events[1].start, 86_400_000);
        assert_eq!((events[2].start, events[2].end - events[2].start), (1_796_396_400_000, 45 * 60_000));
        assert_eq!(events[2].event_id, "work#2");
    }

    #[test]
    fn floating_times_are_the_users_wall_clock_and_the_first_start_is_found() {
        let ics = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Standup\r\nDTSTART:20261204T090000\r\nDTEND:20261204T091500\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nSUMMARY:Odd zone\r\nDTSTART;TZID=Nowhere/Else:20261203T090000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let tokyo = user_zone(Some("Asia/Tokyo"));
        let events = events_of(ics, "f", &tokyo);
        // 09:00 in Tokyo is 00:00 UTC; in UTC it would be 09:00 UTC.
        assert_eq!(events[0].start, 1_796_342_400_000);
        assert_eq!(events[0].end - events[0].start, 15 * 60_000);
        assert_eq!(events_of(ics, "f", &user_zone(None))[0].start, 1_796_342_400_000 + 9 * 3_600_000);
        // An unknown TZID is read as the user's zone too; it is the earliest here.
        assert_eq!(first_start(ics, &tokyo), Some(1_796_342_400_000 - 86_400_000));
        assert_eq!(first_start("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", &tokyo), None);
        assert_eq!(user_zone(Some("Not/AZone")), jiff::tz::TimeZone::UTC);
    }

    #[test]
    fn recurring_events_expand_in_their_zone_without_exdates_and_with_moved_occurrences() {
        // Weekly on Monday 09:00 in Paris from 16 March 2026, across the change to summer
        // time (29 March); 23 March left out; 6 April moved to 14:00 by an override.
        let ics = "BEGIN:VCALENDAR\r\n\
            BEGIN:VEVENT\r\nUID:standup\r\nSUMMARY:Standup\r\nDTSTART;TZID=Europe/Paris:20260316T090000\r\n\
            DURATION:PT15M\r\nRRULE:FREQ=WEEKLY;BYDAY=MO\r\nEXDATE;TZID=Europe/Paris:20260323T090000\r\nEND:VEVENT\r\n\
            BEGIN:VEVENT\r\nUID:standup\r\nSUMMARY:Standup (afternoon)\r\nRECURRENCE-ID;TZID=Europe/Paris:20260406T090000\r\n\
            DTSTART;TZID=Europe/Paris:20260406T140000\r\nDURATION:PT15M\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join("team.ics"), ics).expect("ics");
        let paris = user_zone(Some("Europe/Paris"));
        let ms = |s: &str| s.parse::<jiff::Timestamp>().expect("timestamp").as_millisecond();
        let got = calendar_range(Some(dir.path()), ms("2026-03-16T00:00:00Z"), ms("2026-04-14T00:00:00Z"), &paris)
            .expect("range");
        let seen: Vec<(String, String)> = got
            .events
            .iter()
            .map(|e| {
                let t = jiff::Timestamp::from_millisecond(e.start).expect("start");
                (e.summary.clone(), t.to_string())
            })
            .collect();
        let want = [
            ("Standup", "2026-03-16T08:00:00Z"),             // 09:00 winter time
            ("Standup", "2026-03-30T07:00:00Z"),             // 09:00 summer time
            ("Standup (afternoon)", "2026-04-06T12:00:00Z"), // moved
            ("Standup", "2026-04-13T07:00:00Z"),
        ];
        assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert!(got.events.iter().all(|e| e.end - e.start == 15 * 60_000));
        let mut ids: Vec<&str> = got.events.iter().map(|e| e.event_id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4, "every occurrence has its own id: {ids:?}");
        // A range years later still finds it; an unsupported rule shows the first only.
        let later = calendar_range(Some(dir.path()), ms("2031-01-06T00:00:00Z"), ms("2031-01-07T00:00:00Z"), &paris)
            .expect("later");
        assert_eq!(later.events.len(), 1);
        fs::write(dir.path().join("team.ics"), ics.replace("BYDAY=MO", "BYSETPOS=1")).expect("ics");
        let odd = calendar_range(Some(dir.path()), ms("2026-03-16T00:00:00Z"), ms("2026-04-14T00:00:00Z"), &paris)
            .expect("odd");
        assert_eq!(odd.events.len(), 2, "the first occurrence and the moved one");
    }

    #[test]
    fn a_range_keeps_what_overlaps_it() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join("work.ics"), ICS).expect("ics");
        fs::write(dir.path().join("notes.txt"), "not a calendar").expect("other");
        let day = 1_796_342_400_000; // 2026-12-04 00:00 UTC
        let utc = jiff::tz::TimeZone::UTC;
        let got = calendar_range(Some(dir.path()), day, day + 86_400_000, &utc).expect("range");
        let names: Vec<_> = got.events.iter().map(|e| e.summary.as_str()).collect();
        assert_eq!(names, ["Board, quarterly", "Call"]);
        assert!(calendar_range(None, 0, i64::MAX, &utc).expect("none").events.is_empty());
        assert_eq!(duration_ms("P1W"), Some(7 * 86_400_000));
        assert_eq!(duration_ms("PT1H30M"), Some(90 * 60_000));
        assert_eq!(duration_ms("P1H"), None);
    }

    #[test]
    fn contacts_are_listed_searched_read_and_added() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::write(
            dir.path().join("ann.vcf"),
            "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Ann Lee\r\nitem1.EMAIL;TYPE=work:ann@corp.example\r\nTEL;VALUE=uri:tel:+15550100\r\nORG:Corp\\, Inc.;Sales\r\nEND:VCARD\r\n",
        )
        .expect("ann");
        fs::write(dir.path().join("bob.vcf"), "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Ng;Bob;;;\r\nEND:VCARD\r\n")
            .expect("bob");
        let all = contact_list(Some(dir.path()), "", 0, 50).expect("all");
        assert_eq!(all.total, 2);
        assert_eq!(all.contacts[0].name, "Ann Lee");
        assert_eq!(all.contacts[0].emails, ["ann@corp.example"]);
        assert_eq!(all.contacts[0].phones, ["+15550100"]);
        assert_eq!(all.contacts[0].organization.as_deref(), Some("Corp, Inc."));
        assert_eq!(all.contacts[1].name, "Bob Ng");
        assert_eq!(contact_list(Some(dir.path()), "CORP", 0, 50).expect("q").total, 1);
        assert_eq!(contact_read(Some(dir.path()), "bob").expect("bob").name, "Bob Ng");
        assert_eq!(contact_read(Some(dir.path()), "../ann").map(|_| ()), Err(not_found("contact")));
        let added = contact_add(
            Some(dir.path()),
            &NewContact {
                name: "Eve; \"E\"".into(),
                emails: vec!["eve@x.example".into()],
                phones: vec![],
                organization: None,
            },
        )
        .expect("add");
        let again = contact_read(Some(dir.path()), &added.contact_id).expect("read back");
        assert_eq!((again.name.as_str(), again.emails.clone()), ("Eve; \"E\"", vec!["eve@x.example".to_string()]));
        let empty = NewContact { name: " ".into(), emails: vec![], phones: vec![], organization: None };
        assert_eq!(
            contact_add(Some(dir.path()), &empty).map(|_| ()).map_err(|e| e.code),
            Err(FetchErrorCode::BadRequest)
        );
    }
}
