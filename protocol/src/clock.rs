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

#[cfg(test)]
mod tests {
    use super::*;

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
