//! Recurrence rules (RFC 5545 §3.3.10): the starts of a recurring event's occurrences,
//! for the browse calendar.
//!
//! Occurrences are computed in the event's own civil time (its `TZID`, the user's zone for
//! a floating time, UTC for a `Z` time), so a weekly 09:00 meeting stays at 09:00 across
//! daylight-saving changes, as RFC 5545 §3.3.10 asks. Supported: `FREQ` DAILY, WEEKLY,
//! MONTHLY and YEARLY; `INTERVAL`, `COUNT`, `UNTIL`; `BYDAY` (with ordinals such as `2MO`
//! or `-1FR` in MONTHLY rules, and in YEARLY rules with `BYMONTH`), `BYMONTHDAY` and
//! `BYMONTH`; `WKST` is accepted and weeks start on Monday. A rule with anything else
//! (`BYSETPOS`, `BYWEEKNO`, `BYYEARDAY`, `BYHOUR`…, or a finer `FREQ`) is not expanded:
//! [`Rule::parse`] says `None` and the event shows at its first occurrence only.

use jiff::civil::{Date, DateTime, Weekday};
use jiff::{Span, ToSpan};

/// Periods looked at, at most, for one event and range (a daily rule over 130 years).
const MAX_PERIODS: usize = 50_000;
/// Occurrences returned, at most, for one event and range.
const MAX_OCCURRENCES: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freq {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// When a rule ends: a last start (inclusive), civil in the event's time, or a count.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    freq: Freq,
    interval: i64,
    count: Option<usize>,
    until: Option<DateTime>,
    by_day: Vec<(Option<i8>, Weekday)>,
    by_month_day: Vec<i8>,
    by_month: Vec<i8>,
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    })
}

/// An iCalendar DATE or DATE-TIME value (RFC 5545 §3.3.4, §3.3.5): the civil date-time
/// (midnight for a date), whether it was a date, and whether it was UTC (`Z`).
pub(super) struct IcalValue {
    pub civil: DateTime,
    pub date: bool,
    pub utc: bool,
}

/// Reads `20261204` or `20261204T090000[Z]`; `None` for anything else.
pub(super) fn ical_value(v: &str) -> Option<IcalValue> {
    let v = v.trim();
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if v.len() == 8 && digits(v) {
        let d = Date::new(v[0..4].parse().ok()?, v[4..6].parse().ok()?, v[6..8].parse().ok()?).ok()?;
        return Some(IcalValue { civil: d.to_datetime(jiff::civil::Time::midnight()), date: true, utc: false });
    }
    let (body, utc) = match v.strip_suffix('Z') {
        Some(b) => (b, true),
        None => (v, false),
    };
    let (d, t) = body.split_once('T')?;
    if d.len() != 8 || t.len() != 6 || !digits(d) || !digits(t) {
        return None;
    }
    let civil = DateTime::new(
        d[0..4].parse().ok()?,
        d[4..6].parse().ok()?,
        d[6..8].parse().ok()?,
        t[0..2].parse().ok()?,
        t[2..4].parse().ok()?,
        t[4..6].parse().ok()?,
        0,
    )
    .ok()?;
    Some(IcalValue { civil, date: false, utc })
}

/// `UNTIL` as a civil time in the event's time: a date is the end of that day; a UTC time
/// is converted by `to_civil` (the event's zone).
fn until(v: &str, to_civil: &dyn Fn(jiff::Timestamp) -> DateTime) -> Option<DateTime> {
    let value = ical_value(v)?;
    Some(match value {
        IcalValue { civil, date: true, .. } => civil.date().to_datetime(jiff::civil::Time::MAX),
        IcalValue { civil, utc: true, .. } => to_civil(jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()?),
        IcalValue { civil, .. } => civil,
    })
}

impl Rule {
    /// An `RRULE` value, or `None` when it holds a part this reader does not expand.
    /// `to_civil` turns a UTC instant into the event's civil time (for `UNTIL`).
    pub fn parse(value: &str, to_civil: &dyn Fn(jiff::Timestamp) -> DateTime) -> Option<Rule> {
        let mut rule = Rule {
            freq: Freq::Daily,
            interval: 1,
            count: None,
            until: None,
            by_day: Vec::new(),
            by_month_day: Vec::new(),
            by_month: Vec::new(),
        };
        let mut freq = None;
        for part in value.trim().split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=')?;
            let v = v.to_ascii_uppercase();
            match k.to_ascii_uppercase().as_str() {
                "FREQ" => {
                    freq = Some(match v.as_str() {
                        "DAILY" => Freq::Daily,
                        "WEEKLY" => Freq::Weekly,
                        "MONTHLY" => Freq::Monthly,
                        "YEARLY" => Freq::Yearly,
                        _ => return None,
                    })
                }
                "INTERVAL" => rule.interval = v.parse::<i64>().ok().filter(|n| (1..=10_000).contains(n))?,
                "COUNT" => rule.count = Some(v.parse::<usize>().ok().filter(|n| *n >= 1)?),
                "UNTIL" => rule.until = Some(until(&v, to_civil)?),
                "BYDAY" => {
                    for d in v.split(',') {
                        // ASCII only: the split below is by bytes.
                        if !d.is_ascii() {
                            return None;
                        }
                        let (n, day) = d.split_at(d.len().checked_sub(2)?);
                        let n = if n.is_empty() {
                            None
                        } else {
                            Some(n.parse::<i8>().ok().filter(|n| *n != 0 && (-53..=53).contains(n))?)
                        };
                        rule.by_day.push((n, weekday(day)?));
                    }
                }
                "BYMONTHDAY" => {
                    for d in v.split(',') {
                        rule.by_month_day.push(d.parse::<i8>().ok().filter(|d| *d != 0 && (-31..=31).contains(d))?);
                    }
                }
                "BYMONTH" => {
                    for m in v.split(',') {
                        rule.by_month.push(m.parse::<i8>().ok().filter(|m| (1..=12).contains(m))?);
                    }
                }
                "WKST" => {
                    weekday(&v)?;
                }
                _ => return None,
            }
        }
        rule.freq = freq?;
        // Lists longer than their values can be are not a rule anyone writes; they would
        // only make the expansion slow.
        if rule.by_day.len() > 60 || rule.by_month_day.len() > 62 || rule.by_month.len() > 12 {
            return None;
        }
        // A YEARLY rule's BYDAY or BYMONTHDAY without BYMONTH spans the whole year (every
        // Monday of it): not expanded here.
        if rule.freq == Freq::Yearly
            && rule.by_month.is_empty()
            && !(rule.by_day.is_empty() && rule.by_month_day.is_empty())
        {
            return None;
        }
        if rule.freq == Freq::Weekly && !rule.by_month_day.is_empty() {
            return None; // RFC 5545: BYMONTHDAY MUST NOT be used with WEEKLY
        }
        if rule.count.is_some() && rule.until.is_some() {
            return None; // RFC 5545: MUST NOT occur together
        }
        // Ordinals make sense in MONTHLY rules, and in YEARLY ones within their months.
        let ordinals = rule.by_day.iter().any(|(n, _)| n.is_some());
        let ordinal_ok = rule.freq == Freq::Monthly || (rule.freq == Freq::Yearly && !rule.by_month.is_empty());
        if ordinals && !ordinal_ok {
            return None;
        }
        Some(rule)
    }

    /// The starts of the occurrences in `[from, limit)`, earliest first. The first
    /// occurrence is `start` itself, whatever the rule says (as RFC 5545 counts it), and
    /// `COUNT` counts from it, also what comes before `from`.
    pub fn starts(&self, start: DateTime, from: DateTime, limit: DateTime) -> Vec<DateTime> {
        let mut out = Vec::new();
        if start >= from && start < limit {
            out.push(start);
        }
        let mut counted = 1;
        for period in 0..MAX_PERIODS {
            let Some(mut candidates) = self.period(start, period as i64) else { break };
            candidates.sort();
            candidates.dedup();
            for c in candidates.into_iter().filter(|c| *c > start) {
                if self.until.is_some_and(|u| c > u) || c >= limit || self.count.is_some_and(|n| counted >= n) {
                    return out;
                }
                counted += 1;
                if c >= from {
                    out.push(c);
                    if out.len() >= MAX_OCCURRENCES {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// The candidate starts of period `k` (the `k`-th day, week, month or year of the
    /// rule, `INTERVAL` apart), before the `BY…` filters that do not expand.
    fn period(&self, start: DateTime, k: i64) -> Option<Vec<DateTime>> {
        let time = start.time();
        let step = k.checked_mul(self.interval)?;
        let at = |d: Date| d.to_datetime(time);
        let candidates = match self.freq {
            Freq::Daily => {
                let d = start.date().checked_add(step.days()).ok()?;
                vec![at(d)]
            }
            Freq::Weekly => {
                let monday = start
                    .date()
                    .checked_sub(Span::new().days(i64::from(start.date().weekday().to_monday_zero_offset())))
                    .ok()?
                    .checked_add(step.weeks())
                    .ok()?;
                let days: Vec<Weekday> = if self.by_day.is_empty() {
                    vec![start.date().weekday()]
                } else {
                    self.by_day.iter().map(|(_, d)| *d).collect()
                };
                days.into_iter()
                    .filter_map(|d| monday.checked_add(i64::from(d.to_monday_zero_offset()).days()).ok())
                    .map(at)
                    .collect()
            }
            Freq::Monthly => {
                let first = start.date().first_of_month().checked_add(step.months()).ok()?;
                self.days_of_month(first, start.date()).into_iter().map(at).collect()
            }
            Freq::Yearly => {
                let year = start.date().year().checked_add(i16::try_from(step).ok()?)?;
                let months: Vec<i8> =
                    if self.by_month.is_empty() { vec![start.date().month()] } else { self.by_month.clone() };
                let mut out = Vec::new();
                for m in months {
                    let Ok(first) = Date::new(year, m, 1) else { continue };
                    out.extend(self.days_of_month(first, start.date()).into_iter().map(at));
                }
                out
            }
        };
        // Filters: BYMONTH limits days and weeks; BYDAY and BYMONTHDAY limit days.
        Some(
            candidates
                .into_iter()
                .filter(|c| {
                    self.by_month.is_empty() || self.freq == Freq::Yearly || self.by_month.contains(&c.date().month())
                })
                .filter(|c| {
                    self.freq != Freq::Daily
                        || ((self.by_day.is_empty() || self.by_day.iter().any(|(_, d)| *d == c.date().weekday()))
                            && (self.by_month_day.is_empty() || month_day_matches(&self.by_month_day, c.date())))
                })
                .collect(),
        )
    }

    /// The days of the month starting at `first` that the rule names: its `BYMONTHDAY`s,
    /// else its `BYDAY`s (all of them, or the n-th), else the first start's day of month
    /// (a month without that day has none, RFC 5545 §3.3.10).
    fn days_of_month(&self, first: Date, start: Date) -> Vec<Date> {
        let len = first.days_in_month();
        let day = |n: i8| -> Option<Date> {
            let n = if n < 0 { len + 1 + n } else { n };
            if (1..=len).contains(&n) { first.with().day(n).build().ok() } else { None }
        };
        if !self.by_month_day.is_empty() {
            let mut days: Vec<Date> = self.by_month_day.iter().filter_map(|n| day(*n)).collect();
            if !self.by_day.is_empty() {
                days.retain(|d| self.by_day.iter().any(|(_, w)| *w == d.weekday()));
            }
            return days;
        }
        if !self.by_day.is_empty() {
            let mut days = Vec::new();
            for (n, w) in &self.by_day {
                let all: Vec<Date> = (1..=len).filter_map(day).filter(|d| d.weekday() == *w).collect();
                match n {
                    None => days.extend(all),
                    Some(n) if *n > 0 => days.extend(all.get(usize::try_from(*n - 1).unwrap_or(usize::MAX)).copied()),
                    Some(n) => {
                        let back = usize::try_from(-i16::from(*n)).unwrap_or(usize::MAX);
                        days.extend(all.len().checked_sub(back).and_then(|i| all.get(i)).copied());
                    }
                }
            }
            return days;
        }
        day(start.day()).into_iter().collect()
    }
}

fn month_day_matches(days: &[i8], d: Date) -> bool {
    let len = d.days_in_month();
    days.iter().any(|n| if *n > 0 { *n == d.day() } else { len + 1 + *n == d.day() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> DateTime {
        s.parse().expect("civil datetime")
    }

    fn utc(t: jiff::Timestamp) -> DateTime {
        jiff::tz::TimeZone::UTC.to_datetime(t)
    }

    fn starts(rule: &str, start: &str, limit: &str) -> Vec<String> {
        let r = Rule::parse(rule, &utc).unwrap_or_else(|| panic!("{rule} parses"));
        r.starts(dt(start), dt(start), dt(limit)).iter().map(|d| d.strftime("%Y-%m-%d %H:%M").to_string()).collect()
    }

    #[test]
    fn daily_weekly_monthly_and_yearly_rules_expand() {
        assert_eq!(
            starts("FREQ=DAILY;COUNT=3", "2026-12-04T09:00", "2027-01-01T00:00"),
            ["2026-12-04 09:00", "2026-12-05 09:00", "2026-12-06 09:00"]
        );
        // Every other week on Tuesday and Thursday, until a date (inclusive).
        assert_eq!(
            starts("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;UNTIL=20261224", "2026-12-01T10:00", "2027-01-31T00:00"),
            ["2026-12-01 10:00", "2026-12-03 10:00", "2026-12-15 10:00", "2026-12-17 10:00"]
        );
        // The last Friday of each month; the second Monday.
        assert_eq!(
            starts("FREQ=MONTHLY;BYDAY=-1FR;COUNT=3", "2026-11-27T16:00", "2028-01-01T00:00"),
            ["2026-11-27 16:00", "2026-12-25 16:00", "2027-01-29 16:00"]
        );
        assert_eq!(
            starts("FREQ=MONTHLY;BYDAY=2MO", "2026-12-14T08:00", "2027-03-01T00:00"),
            ["2026-12-14 08:00", "2027-01-11 08:00", "2027-02-08 08:00"]
        );
        // The 31st: months without one are skipped (RFC 5545).
        assert_eq!(
            starts("FREQ=MONTHLY", "2027-01-31T12:00", "2027-06-01T00:00"),
            ["2027-01-31 12:00", "2027-03-31 12:00", "2027-05-31 12:00"]
        );
        assert_eq!(
            starts("FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", "2027-03-28T02:30", "2030-01-01T00:00"),
            ["2027-03-28 02:30", "2028-03-26 02:30", "2029-03-25 02:30"]
        );
        assert_eq!(
            starts("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR", "2026-12-04T09:00", "2026-12-09T00:00"),
            ["2026-12-04 09:00", "2026-12-07 09:00", "2026-12-08 09:00"]
        );
    }

    #[test]
    fn what_is_not_expanded_is_refused_and_ranges_are_bounded() {
        let many_days = format!("FREQ=MONTHLY;BYMONTHDAY={}", vec!["1"; 63].join(","));
        for rule in [
            "FREQ=HOURLY",
            "FREQ=MONTHLY;BYSETPOS=-1",
            "FREQ=WEEKLY;BYDAY=1MO",
            "FREQ=DAILY;COUNT=2;UNTIL=20270101",
            "COUNT=2",
            "FREQ=DAILY;INTERVAL=0",
            "FREQ=WEEKLY;BYDAY=éA",
            "FREQ=WEEKLY;BYDAY=Ü",
            "FREQ=YEARLY;BYDAY=MO",
            "FREQ=YEARLY;BYMONTHDAY=1",
            &many_days,
        ] {
            assert_eq!(Rule::parse(rule, &utc), None, "{rule}");
        }
        let endless = Rule::parse("FREQ=DAILY", &utc).expect("parses");
        let start = dt("2026-01-01T00:00");
        assert_eq!(endless.starts(start, start, dt("9999-01-01T00:00")).len(), MAX_OCCURRENCES);
        assert!(endless.starts(start, start, dt("2025-01-01T00:00")).is_empty(), "the range is before the start");
        // Years after the start: only the range's, counted from the start.
        let week = endless.starts(dt("1990-01-01T07:00"), dt("2026-12-04T00:00"), dt("2026-12-11T00:00"));
        assert_eq!(week.len(), 7);
        assert_eq!(week[0], dt("2026-12-04T07:00"));
        let counted = Rule::parse("FREQ=DAILY;COUNT=10", &utc).expect("parses");
        assert_eq!(counted.starts(start, dt("2026-01-08T00:00"), dt("2027-01-01T00:00")).len(), 3, "8th to 10th");
    }
}
