//! Wall-clock time as it travels on the wire: unix milliseconds.
//!
//! Timestamps cross every protocol of the system (the RTS heartbeat's `Now`, expiries in
//! KeyIds and licenses, the endpoints' item dates, cluster leases), always as milliseconds
//! since the unix epoch. One helper keeps them alike: a clock set before 1970 reads as 0
//! instead of panicking, and a reading that does not fit is clamped.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 for a clock set before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// [`unix_ms`] as the signed type that JSON fields and SQL columns use.
pub fn unix_ms_i64() -> i64 {
    i64::try_from(unix_ms()).unwrap_or(i64::MAX)
}

/// The civil date of a day counted from 1970-01-01 (negative before it): (year, month
/// 1..=12, day 1..=31), proleptic Gregorian (H. Hinnant's days-to-civil).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day (counted from 1970-01-01) of a civil date, the inverse of
/// [`civil_from_days`] (H. Hinnant's days-from-civil).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01.
pub fn iso_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day of a `YYYY-MM-DD` date; `None` for anything else (including 2026-02-30).
pub fn parse_iso_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 || ![y, m, d].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (y, m, d) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_round_trip_and_refuse_impossible_ones() {
        for days in [-1, 0, 11_016, 20_427, 20_792] {
            assert_eq!(parse_iso_date(&iso_date(days)), Some(days), "{days}");
        }
        assert_eq!(iso_date(20_427), "2025-12-05");
        for bad in ["2026-02-30", "2026-13-01", "26-01-01", "2026-1-01", "2026-01-01x", "", "abcd-ef-gh"] {
            assert_eq!(parse_iso_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(20_427), (2025, 12, 5));
    }

    #[test]
    fn readings_agree_and_are_recent() {
        let (a, b) = (unix_ms(), unix_ms_i64());
        // 2020-01-01 in unix ms: a clock this test runs under is later than that.
        assert!(a > 1_577_836_800_000, "{a}");
        assert!((b as u64).abs_diff(a) < 60_000);
    }
}
