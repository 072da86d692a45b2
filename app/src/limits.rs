//! The process's open-file limit, and how the listeners share it.
//!
//! Every connection is a file descriptor. A node raises its soft limit to the hard one at
//! start, then caps the public and device listeners so that together they leave
//! [`RESERVED_FILES`] descriptors free: the admin listener (health checks, metrics), the
//! store's and Redis's connections and the logs keep working when the public listeners
//! are full.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept out of the listeners' budget.
pub const RESERVED_FILES: u64 = 1024;

/// Raises the soft open-file limit to the hard limit; returns the soft limit in force
/// (unchanged if raising failed, which is logged).
pub fn raise_open_files_limit() -> u64 {
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    let hard = current.maximum;
    if hard.is_some_and(|h| h <= soft) || (hard.is_none() && current.current.is_none()) {
        return soft;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: hard, maximum: hard }) {
        Ok(()) => hard.unwrap_or(u64::MAX),
        Err(e) => {
            tracing::warn!(error = %e, soft, "cannot raise the open-file limit");
            soft
        }
    }
}

/// Open connections each listener may hold, per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionBudget {
    pub public_per_worker: usize,
    pub device_per_worker: usize,
}

/// Shares `limit - RESERVED_FILES` descriptors between the public listener (at most
/// `public_max` connections) and the device listener (at most `device_max`), in
/// proportion to those maxima when both do not fit, then per worker.
pub fn budget(limit: u64, workers: usize, public_max: usize, device_max: usize) -> ConnectionBudget {
    let available = limit.saturating_sub(RESERVED_FILES).max(2) as f64;
    let wanted = (public_max as f64 + device_max as f64).max(1.0);
    let scale = (available / wanted).min(1.0);
    let per_worker = |max: usize| ((max as f64 * scale) / workers.max(1) as f64).floor().max(1.0) as usize;
    ConnectionBudget { public_per_worker: per_worker(public_max), device_per_worker: per_worker(device_max) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_leave_descriptors_for_the_rest() {
        // Plenty: the configured maxima, per worker.
        assert_eq!(
            budget(1 << 20, 2, 20_000, 500_000),
            ConnectionBudget { public_per_worker: 10_000, device_per_worker: 250_000 }
        );
        // 20 000 descriptors: 18 976 shared in proportion, 1 024 kept back.
        let b = budget(20_000, 2, 20_000, 500_000);
        assert_eq!(b.public_per_worker, 364);
        assert_eq!(b.device_per_worker, 9_123);
        assert!(((b.public_per_worker + b.device_per_worker) * 2) as u64 <= 20_000 - RESERVED_FILES);
        // Tiny limits still leave every listener at least one connection per worker.
        assert_eq!(budget(100, 4, 10, 10), ConnectionBudget { public_per_worker: 1, device_per_worker: 1 });
    }

    #[test]
    fn the_limit_is_raised_to_the_hard_limit() {
        let after = raise_open_files_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current.unwrap_or(u64::MAX), after);
        if let Some(hard) = now.maximum {
            assert_eq!(after, hard);
        }
    }
}
