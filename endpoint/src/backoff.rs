//! Jittered exponential backoff for reconnecting and resending.
//!
//! Thousands of devices lose their connection at the same moment when a relay node goes
//! away; if they all retried on the same schedule they would arrive together again. Each
//! delay is drawn uniformly from the upper half of the current step ("equal jitter"), so
//! retries spread out while the expected delay still doubles.

use std::time::Duration;

/// A uniformly random value in `[0, bound)` (0 when `bound` is 0). Falls back to the
/// clock's nanoseconds if the OS generator fails: jitter needs spread, not secrecy.
pub fn random_below(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0),
    };
    r % bound
}

/// Exponential backoff with jitter between `initial` and `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff { initial, max: max.max(initial), step: initial }
    }

    /// The next delay: uniform in `[step/2, step]`, then the step doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step_ms = self.step.as_millis().min(u64::MAX as u128) as u64;
        let half = step_ms / 2;
        let delay = Duration::from_millis(half + random_below(step_ms - half + 1));
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// After a success: the next failure starts again at `initial`.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }

    /// The upper bound of the next delay.
    pub fn current_step(&self) -> Duration {
        self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut expected_step = 100u64;
        for _ in 0..8 {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= expected_step / 2 && d <= expected_step,
                "{d} not in [{}, {expected_step}]",
                expected_step / 2
            );
            expected_step = (expected_step * 2).min(1000);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            seen.insert(Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).next_delay());
        }
        assert!(seen.len() > 10, "delays are not spread: {seen:?}");
    }
}
