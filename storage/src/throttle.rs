//! Password guessing, throttled the same way on every password route (license login,
//! account and device activation, the device channel's AUTH_PASSWORD, and later the web
//! sign-in).
//!
//! Three counters of *failures*, none of them a hard lock:
//!
//! * per source address: a bucket of [`ThrottlePolicy::source_failure_burst`] failures,
//!   refilled at [`ThrottlePolicy::source_failures_per_minute`]; an empty bucket refuses
//!   every password attempt from that address (`too_many_requests`) until it refills;
//! * per login name and source: after [`ThrottlePolicy::free_failures_per_source`]
//!   failures in a row, each next attempt of that name from that address must wait twice
//!   as long as the one before (1 s, 2 s, 4 s … up to [`ThrottlePolicy::max_delay`]);
//! * per login name, all sources together: the same growing wait after
//!   [`ThrottlePolicy::free_failures_per_login`] failures, against guessing spread over
//!   many addresses. A stranger has to fail that often, from several addresses, before a
//!   user's own attempts wait at all, and then they wait, they are not locked out; device
//!   tokens (the device channel's AUTH_TOKEN) are never throttled.
//!
//! A login name is counted whether or not it exists, so a throttled answer (and its
//! timing: it comes at once, without a password check) says nothing about which names
//! exist. The counters live in the node's memory: behind a load balancer that keeps a
//! source on one node, a cluster of N nodes allows an attacker at most N times the
//! attempts of one, which the doubling waits turn into a few more doublings.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The throttle's settings (`[throttle]` in the node's configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottlePolicy {
    /// Failures of one login name from one source before its attempts are spaced out.
    pub free_failures_per_source: u32,
    /// Failures of one login name from all sources before its attempts are spaced out.
    pub free_failures_per_login: u32,
    /// The longest wait between two attempts of one login name.
    pub max_delay: Duration,
    /// Failures one source address may make in a burst.
    pub source_failure_burst: u32,
    /// How fast a source address earns its failures back.
    pub source_failures_per_minute: u32,
    /// Login names and addresses tracked at once; when full, new ones are refused until
    /// old entries expire (fail closed, counted).
    pub max_tracked: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free_failures_per_source: 5,
            free_failures_per_login: 50,
            max_delay: Duration::from_secs(15 * 60),
            source_failure_burst: 20,
            source_failures_per_minute: 10,
            max_tracked: 100_000,
        }
    }
}

/// Why an attempt must wait, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttled {
    /// The source address failed too often, whatever the names.
    Source { retry_after: Duration },
    /// This login name failed too often (from this source, or from everywhere).
    Login { retry_after: Duration },
}

impl Throttled {
    pub fn retry_after(self) -> Duration {
        match self {
            Throttled::Source { retry_after } | Throttled::Login { retry_after } => retry_after,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Backoff {
    failures: u32,
    last: Instant,
}

impl Backoff {
    /// When the next attempt may come, given `free` failures before any wait.
    fn next_allowed(&self, free: u32, max: Duration) -> Option<Instant> {
        let over = self.failures.checked_sub(free)?;
        let delay = Duration::from_secs(1u64.checked_shl(over).unwrap_or(u64::MAX)).min(max);
        Some(self.last + delay)
    }

    /// Whether the entry no longer matters: its wait is over and `max` has passed since.
    fn stale(&self, now: Instant, max: Duration) -> bool {
        now.saturating_duration_since(self.last) > max
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Failures still allowed (fractional while refilling).
    tokens: f64,
    updated: Instant,
}

#[derive(Default)]
struct State {
    sources: HashMap<IpAddr, Bucket>,
    pairs: HashMap<(String, IpAddr), Backoff>,
    logins: HashMap<String, Backoff>,
}

/// The throttle of one node.
pub struct Throttle {
    policy: ThrottlePolicy,
    state: Mutex<State>,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let per_second = f64::from(self.policy.source_failures_per_minute) / 60.0;
        let earned = now.saturating_duration_since(bucket.updated).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + earned).min(f64::from(self.policy.source_failure_burst));
        bucket.updated = now;
    }

    /// Whether an attempt of `login` from `source` may be checked now; if so it is counted
    /// as a failure at once (so that parallel guesses cannot all pass before the first one
    /// fails) until [`Throttle::succeeded`] takes it back. `login` is the name as the
    /// client gave it, normalised by the caller (lower-case e-mail, the license name …),
    /// prefixed by its kind.
    pub fn admit(&self, login: &str, source: IpAddr, now: Instant) -> Result<(), Throttled> {
        let p = &self.policy;
        let mut state = self.lock();
        if let Some(bucket) = state.sources.get_mut(&source) {
            self.refill(bucket, now);
            if bucket.tokens < 1.0 {
                let per_second = f64::from(p.source_failures_per_minute.max(1)) / 60.0;
                let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
                return Err(Throttled::Source { retry_after: wait.max(Duration::from_secs(1)) });
            }
        }
        let waits = [
            state
                .pairs
                .get(&(login.to_owned(), source))
                .and_then(|b| b.next_allowed(p.free_failures_per_source, p.max_delay)),
            state.logins.get(login).and_then(|b| b.next_allowed(p.free_failures_per_login, p.max_delay)),
        ];
        if let Some(until) = waits.into_iter().flatten().filter(|t| *t > now).max() {
            let retry_after = until.saturating_duration_since(now).max(Duration::from_secs(1));
            return Err(Throttled::Login { retry_after });
        }
        let tracked = state.sources.len() + state.pairs.len() + state.logins.len();
        if tracked >= p.max_tracked {
            Self::forget_stale(&mut state, now, p.max_delay);
            if state.sources.len() + state.pairs.len() + state.logins.len() >= p.max_tracked {
                return Err(Throttled::Source { retry_after: Duration::from_secs(60) });
            }
        }
        self.count(&mut state, login, source, now);
        Ok(())
    }

    fn count(&self, state: &mut State, login: &str, source: IpAddr, now: Instant) {
        let burst = f64::from(self.policy.source_failure_burst);
        let mut bucket = state.sources.get(&source).copied().unwrap_or(Bucket { tokens: burst, updated: now });
        self.refill(&mut bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        state.sources.insert(source, bucket);
        let count = |b: &mut Backoff| {
            b.failures = b.failures.saturating_add(1);
            b.last = now;
        };
        count(state.pairs.entry((login.to_owned(), source)).or_insert(Backoff { failures: 0, last: now }));
        count(state.logins.entry(login.to_owned()).or_insert(Backoff { failures: 0, last: now }));
    }

    /// A correct password: the name's waits from this source end, and so does its count
    /// over all sources (its owner is here); the source gets its attempt back.
    pub fn succeeded(&self, login: &str, source: IpAddr) {
        let burst = f64::from(self.policy.source_failure_burst);
        let mut state = self.lock();
        state.pairs.remove(&(login.to_owned(), source));
        state.logins.remove(login);
        if let Some(bucket) = state.sources.get_mut(&source) {
            bucket.tokens = (bucket.tokens + 1.0).min(burst);
        }
    }

    fn forget_stale(state: &mut State, now: Instant, max: Duration) {
        state.pairs.retain(|_, b| !b.stale(now, max));
        state.logins.retain(|_, b| !b.stale(now, max));
        // A bucket that refilled completely holds nothing worth keeping; past `max` it has.
        state.sources.retain(|_, b| now.saturating_duration_since(b.updated) <= max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures_per_source: 3,
            free_failures_per_login: 6,
            max_delay: Duration::from_secs(60),
            source_failure_burst: 10,
            source_failures_per_minute: 6,
            max_tracked: 1000,
        }
    }

    #[test]
    fn waits_double_after_the_free_failures_and_success_ends_them() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.admit("user:a", ip(1), now), Ok(()), "a failure is counted on admission");
        }
        // Fourth failure in a row from the same address: a 1 s wait, then 2 s, 4 s ...
        assert_eq!(t.admit("user:a", ip(1), now), Err(Throttled::Login { retry_after: Duration::from_secs(1) }));
        let later = now + Duration::from_secs(1);
        assert_eq!(t.admit("user:a", ip(1), later), Ok(()));
        assert_eq!(t.admit("user:a", ip(1), later), Err(Throttled::Login { retry_after: Duration::from_secs(2) }));
        // Another address, or another name, is not held back by these failures.
        assert_eq!(t.admit("user:a", ip(2), later), Ok(()));
        assert_eq!(t.admit("user:b", ip(1), later), Ok(()));
        // The right password ends the name's waits from that address (and the count over
        // all addresses); another address keeps its own.
        t.succeeded("user:a", ip(1));
        assert_eq!(t.admit("user:a", ip(1), later), Ok(()));
    }

    #[test]
    fn waits_are_capped() {
        let t = Throttle::new(ThrottlePolicy { free_failures_per_source: 0, ..policy() });
        let now = Instant::now();
        for _ in 0..40 {
            let _ = t.admit("user:a", ip(1), now);
            // Keep the name's backoff out of the way: only the source's bucket empties.
            t.lock().pairs.clear();
            t.lock().logins.clear();
        }
        assert_eq!(t.admit("user:a", ip(1), now), Err(Throttled::Source { retry_after: Duration::from_secs(10) }));
        let t = Throttle::new(ThrottlePolicy { free_failures_per_source: 0, source_failure_burst: 1000, ..policy() });
        for i in 0..40u64 {
            let at = now + Duration::from_secs(60 * i);
            assert_eq!(t.admit("user:a", ip(1), at), Ok(()), "attempt {i}: the wait never exceeds the cap");
        }
        let last = now + Duration::from_secs(60 * 39);
        assert_eq!(t.admit("user:a", ip(1), last), Err(Throttled::Login { retry_after: Duration::from_secs(60) }));
    }

    #[test]
    fn guessing_from_many_addresses_slows_the_name_down() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for i in 0..6 {
            assert_eq!(t.admit("user:a", ip(i), now), Ok(()));
        }
        // The owner, from an address that never failed, waits too: but only a second
        // (doubling from there), and not at all once the right password got through.
        assert_eq!(t.admit("user:a", ip(99), now), Err(Throttled::Login { retry_after: Duration::from_secs(1) }));
        assert_eq!(t.admit("user:b", ip(99), now), Ok(()));
    }

    #[test]
    fn a_source_that_fails_too_often_is_refused_then_earns_attempts_back() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        // Ten failures on ten different names: the address's burst is spent.
        for i in 0..10 {
            assert_eq!(t.admit(&format!("user:{i}"), ip(7), now), Ok(()));
        }
        assert_eq!(t.admit("user:new", ip(7), now), Err(Throttled::Source { retry_after: Duration::from_secs(10) }));
        assert_eq!(t.admit("user:new", ip(8), now), Ok(()), "other addresses are not affected");
        // Six per minute: one attempt back after ten seconds.
        assert_eq!(t.admit("user:new", ip(7), now + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn unknown_and_known_names_are_counted_alike_and_memory_is_bounded() {
        let t = Throttle::new(ThrottlePolicy { max_tracked: 8, ..policy() });
        let now = Instant::now();
        for i in 0..4 {
            assert_eq!(t.admit(&format!("user:{i}"), ip(1), now), Ok(()));
        }
        // 1 source + 4 pairs + 4 names tracked: the table (8) is full.
        assert_eq!(t.admit("user:4", ip(2), now), Err(Throttled::Source { retry_after: Duration::from_secs(60) }));
        // Entries older than the longest wait are forgotten.
        assert_eq!(t.admit("user:4", ip(2), now + Duration::from_secs(61)), Ok(()));
    }
}
