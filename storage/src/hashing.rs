//! Password hashing (argon2id) with bounded memory and a bounded wait.
//!
//! Each argon2id check needs `memory_kib` of working memory (19 MiB by default). Allocated
//! per call on the blocking pool, that memory ended up in whichever thread's malloc arena
//! ran the call and stayed there: a few hundred failed logins grew a node by gigabytes.
//! Here a fixed set of worker threads each allocate their working memory once and reuse
//! it for every hash, so the memory of hashing is `workers × memory_kib` whatever the
//! load. Jobs wait in a bounded queue; one that cannot be queued, or that waited past its
//! deadline, is answered [`HashError::Busy`] at once (the caller answers "busy, retry
//! shortly", as for an exhausted store pool) instead of piling up.
//!
//! A login that names nobody does not hash at all: [`Hasher::pretend`] waits as long as
//! recent real checks took, so unknown and known names cost an attacker the same time
//! and the relay nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::secrets;

/// Why a hash or check did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// Every worker is busy and the queue is full, or the job waited past its deadline.
    #[error("password hashing is busy")]
    Busy,
    /// A stored hash that cannot be read, or argon2 refused its inputs.
    #[error("password hashing: {0}")]
    Failed(String),
}

/// argon2id cost parameters. The defaults are OWASP's minimum for argon2id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordHashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Worker threads, each holding `memory_kib` of working memory for good.
    pub workers: usize,
    /// Jobs waiting for a worker; more are refused at once.
    pub queue: usize,
    /// A job still waiting after this is refused.
    pub max_wait: Duration,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            queue: 64,
            max_wait: Duration::from_secs(2),
        }
    }
}

enum Task {
    /// Times one check of a random password, so that [`Hasher::pretend`] is right from
    /// the start.
    Calibrate,
    Hash {
        password: Zeroizing<String>,
        reply: oneshot::Sender<Result<String, HashError>>,
    },
    Verify {
        password: Zeroizing<String>,
        phc: String,
        reply: oneshot::Sender<Result<bool, HashError>>,
    },
}

struct Job {
    task: Task,
    queued_at: Instant,
}

/// The hashing workers. Cheap to clone; the workers stop when the last clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    tx: SyncSender<Job>,
    /// The queue's receiving end, shared by the workers (kept here too, so that a queue
    /// never refuses jobs as closed while a hasher exists).
    _queue: Arc<Mutex<Receiver<Job>>>,
    argon: Argon2<'static>,
    max_wait: Duration,
    /// Recent duration of a check, in microseconds (exponential average).
    typical_us: Arc<AtomicU64>,
}

impl Hasher {
    /// Starts `config.workers` threads, each allocating its working memory now.
    pub fn start(config: PasswordHashing) -> Result<Self, HashError> {
        Self::start_workers(config, config.workers.max(1))
    }

    fn start_workers(config: PasswordHashing, workers: usize) -> Result<Self, HashError> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(|e| HashError::Failed(format!("argon2 parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let (tx, rx) = sync_channel::<Job>(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let typical_us = Arc::new(AtomicU64::new(0));
        for i in 0..workers {
            let (rx, argon, typical_us) = (rx.clone(), argon.clone(), typical_us.clone());
            let blocks = params.block_count();
            let max_wait = config.max_wait;
            std::thread::Builder::new()
                .name(format!("noc-hash-{i}"))
                .spawn(move || work(&rx, &argon, blocks, max_wait, &typical_us))
                .map_err(|e| HashError::Failed(format!("starting a hashing worker: {e}")))?;
        }
        let hasher = Self { tx, _queue: rx, argon, max_wait: config.max_wait, typical_us };
        if workers > 0 {
            hasher.submit(Task::Calibrate)?;
        }
        Ok(hasher)
    }

    fn submit(&self, task: Task) -> Result<(), HashError> {
        match self.tx.try_send(Job { task, queued_at: Instant::now() }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(HashError::Failed("hashing workers stopped".into())),
        }
    }

    /// A PHC string (`$argon2id$v=19$m=…`) of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Task::Hash { password: Zeroizing::new(password.to_owned()), reply })?;
        answer.await.map_err(|_| HashError::Busy)?
    }

    /// Whether `password` matches the stored PHC string.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Task::Verify { password: Zeroizing::new(password.to_owned()), phc: phc.to_owned(), reply })?;
        answer.await.map_err(|_| HashError::Busy)?
    }

    /// Takes about as long as a check does lately, without doing one: the answer to a
    /// login naming nobody.
    pub async fn pretend(&self) {
        let typical = Duration::from_micros(self.typical_us.load(Ordering::Relaxed));
        tokio::time::sleep(typical.min(self.max_wait)).await;
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> &Params {
        self.argon.params()
    }
}

/// One worker: takes jobs until every [`Hasher`] is gone.
fn work(rx: &Mutex<Receiver<Job>>, argon: &Argon2<'static>, blocks: usize, max_wait: Duration, typical: &AtomicU64) {
    let mut memory = vec![Block::default(); blocks];
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let stale = job.queued_at.elapsed() >= max_wait;
        let started = Instant::now();
        match job.task {
            Task::Calibrate => {
                let password = secrets::random_hex::<16>();
                if let Ok(phc) = hash_with(argon, &mut memory, &password) {
                    let started = Instant::now();
                    let _ = verify_with(&mut memory, &password, &phc);
                    record(typical, started.elapsed());
                }
            }
            Task::Hash { password, reply } => {
                let result = if stale { Err(HashError::Busy) } else { hash_with(argon, &mut memory, &password) };
                let _ = reply.send(result);
            }
            Task::Verify { password, phc, reply } => {
                if stale {
                    let _ = reply.send(Err(HashError::Busy));
                    continue;
                }
                let result = verify_with(&mut memory, &password, &phc);
                record(typical, started.elapsed());
                let _ = reply.send(result);
            }
        }
    }
}

/// Folds one check's duration into the exponential average (weight 1/8).
fn record(typical: &AtomicU64, took: Duration) {
    let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let old = typical.load(Ordering::Relaxed);
    let new = if old == 0 { took } else { old - old / 8 + took / 8 };
    typical.store(new, Ordering::Relaxed);
}

fn hash_with(argon: &Argon2<'static>, memory: &mut [Block], password: &str) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
    let salt_bytes = secrets::random_bytes::<{ Salt::RECOMMENDED_LENGTH }>();
    let params = argon.params();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(password.as_bytes(), &salt_bytes, &mut out, &mut memory[..params.block_count()])
        .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt_bytes).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string, in `memory` when its parameters fit (a hash
/// made with more memory than the workers hold, under older settings, gets its own).
fn verify_with(memory: &mut [Block], password: &str, phc: &str) -> Result<bool, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(format!("stored hash: {e}"));
    let hash = PasswordHash::new(phc).map_err(|e| failed(&e))?;
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).map_err(|e| failed(&e))?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).map_err(|e| failed(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&hash).map_err(|e| failed(&e))?;
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return Err(HashError::Failed("stored hash: no salt or output".into()));
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let computed = if blocks <= memory.len() {
        argon.hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, &mut memory[..blocks])
    } else {
        argon.hash_password_into(password.as_bytes(), salt.as_ref(), &mut out)
    };
    computed.map_err(|e| failed(&e))?;
    Ok(bool::from(out.ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn cheap(workers: usize, queue: usize) -> PasswordHashing {
        PasswordHashing {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            workers,
            queue,
            max_wait: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_both_ways() {
        let hasher = Hasher::start(cheap(2, 8)).expect("start");
        let ours = hasher.hash("correct horse").await.expect("hash");
        assert!(ours.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{ours}");
        // The argon2 crate's own verifier accepts ours, and we accept its hashes.
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).expect("params"));
        let parsed = PasswordHash::new(&ours).expect("parse");
        assert!(reference.verify_password(b"correct horse", &parsed).is_ok());
        let theirs = reference.hash_password(b"battery staple").expect("hash").to_string();
        assert_eq!(hasher.verify("battery staple", &theirs).await, Ok(true));
        assert_eq!(hasher.verify("battery stapler", &theirs).await, Ok(false));
        assert_eq!(hasher.verify("correct horse", &ours).await, Ok(true));
        // A hash made with more memory than the workers hold (older settings) still checks.
        let bigger = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(256, 1, 1, None).expect("params"));
        let old = bigger.hash_password(b"old").expect("hash").to_string();
        assert_eq!(hasher.verify("old", &old).await, Ok(true));
        assert!(matches!(hasher.verify("x", "not a hash").await, Err(HashError::Failed(_))));
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        // No worker takes jobs: the one queue slot fills, and the next job is refused
        // without waiting.
        let hasher = Hasher::start_workers(cheap(1, 1), 0).expect("start");
        let waiting = hasher.clone();
        let _queued =
            tokio::spawn(async move { waiting.verify("pw", "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA").await });
        tokio::task::yield_now().await;
        let started = Instant::now();
        assert_eq!(hasher.verify("pw", "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA").await, Err(HashError::Busy));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_job_that_waited_past_its_deadline_is_refused() {
        let hasher = Hasher::start(PasswordHashing { max_wait: Duration::ZERO, ..cheap(1, 4) }).expect("start");
        let phc = hasher.hash("pw").await;
        assert_eq!(phc, Err(HashError::Busy), "even an idle worker sees a zero deadline passed");
    }

    #[tokio::test(start_paused = true)]
    async fn pretending_takes_as_long_as_checks_lately() {
        let hasher = Hasher::start_workers(cheap(1, 4), 0).expect("start");
        hasher.typical_us.store(250_000, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        hasher.pretend().await;
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        let t = AtomicU64::new(0);
        record(&t, Duration::from_millis(80));
        record(&t, Duration::from_millis(160));
        assert_eq!(t.load(Ordering::Relaxed), 90_000, "80 ms, then 7/8 of it and 1/8 of 160 ms");
    }
}
