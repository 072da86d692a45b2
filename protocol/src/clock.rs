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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_agree_and_are_recent() {
        let (a, b) = (unix_ms(), unix_ms_i64());
        // 2020-01-01 in unix ms: a clock this test runs under is later than that.
        assert!(a > 1_577_836_800_000, "{a}");
        assert!((b as u64).abs_diff(a) < 60_000);
    }
}
