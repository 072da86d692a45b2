//! Who owns each session: `noc:own:d:<device-id>` / `noc:own:v:<ves-id>` name the owning
//! node.
//!
//! The key is written by the node that authenticated the session (`SET … GET` reports the
//! previous owner, which is then told to close its copy) and kept alive by that node,
//! which reads each of its keys back every 30 s (or `session_key_ttl / 3` if shorter): its
//! own are extended, lost ones (Redis restarted) set again, and a key another node has
//! taken over closes the local session — in case the takeover's `Close` message was lost.
//! A session is valid only while its owner's lease is ([`super::membership`]).

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::mpsc;

use crate::redis_backend::conn::{Conn, run_each, unavailable};
use crate::redis_backend::membership::Membership;
use crate::redis_backend::options::RedisOptions;
use crate::{BusMessage, ClusterError, InboxSender, NodeId, Owner, SessionKey, ShardedMap};

/// Deletes each of its keys that still names this node (ARGV[1]), leaving one another
/// node took over; returns how many it deleted. Like [`RENEW_SCRIPT`], one run handles
/// many keys.
pub(super) const RELEASE_SCRIPT: &str = "local n = 0 \
    for _, key in ipairs(KEYS) do \
    if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end \
    end \
    return n";
/// Most releases one turn of [`Registry::release_loop`] takes from its queue: after a
/// mass disconnect they leave in pipelined runs instead of one round trip each.
const RELEASES_PER_TURN: usize = 1000;
/// The ownership check of its keys (ARGV: this node, the time to live in ms), one answer
/// per key: extends a key that names this node (1), sets it again if it is gone (0: Redis
/// lost its data), or returns the node that now owns it. One script run checks many keys
/// (one on a Redis Cluster, whose commands name keys of one slot only): per session it is
/// two calls inside Redis, and for the node one key to write and one integer to read,
/// instead of a command to build, send and answer.
const RENEW_SCRIPT: &str = "local out = {} \
    for i, key in ipairs(KEYS) do \
    local owner = redis.call('GET', key) \
    if owner == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) out[i] = 1 \
    elseif not owner then redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) out[i] = 0 \
    else out[i] = owner end \
    end \
    return out";
/// Keys one script run handles ([`RENEW_SCRIPT`] or [`RELEASE_SCRIPT`]). Redis runs nothing else meanwhile (no frame
/// crosses between nodes), at about 2.3 µs a key: a run of 200 took 0.4 ms at the median
/// and 2.2 ms at the 99th percentile on two busy cores (docs/benchmarks.md). 50 keys keep
/// that stall near a tenth of a millisecond, and a command's own cost (about as much as
/// a key's) is still shared by 50.
const KEYS_PER_RUN: usize = 50;

/// Most time between two ownership checks of a session key (see [`Registry::renew_loop`]).
const OWNERSHIP_CHECK_MAX: Duration = Duration::from_secs(30);
/// A claim younger than this (or than the check period, if shorter) is not judged by the
/// ownership check: its `SET` may still be on its way to Redis behind the check's `GET`.
const FRESH_CLAIM: Duration = Duration::from_secs(5);

pub(super) fn own_key(key: &SessionKey) -> String {
    match key {
        SessionKey::Device(id) => format!("noc:own:d:{id}"),
        SessionKey::Ves(id) => format!("noc:own:v:{id}"),
    }
}

/// What the ownership check found of one of this node's session keys.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Checked {
    /// It names this node: extended.
    Ours,
    /// It was gone (Redis lost it): set again, naming this node.
    SetAgain,
    /// It names another node, which took the session over.
    Other(String),
}

/// This node's session keys and its cache of remote owners.
pub(super) struct Registry {
    node: NodeId,
    conn: Conn,
    session_key_ttl: Duration,
    owner_cache_ttl: Duration,
    /// Remote owners looked up, and when.
    cache: ShardedMap<SessionKey, (NodeId, Instant)>,
    /// Session keys this node claimed, with when: renewed, checked, and re-registered
    /// after Redis lost its data.
    owned: ShardedMap<SessionKey, Instant>,
    release_tx: mpsc::UnboundedSender<SessionKey>,
}

impl Registry {
    /// The registry, and the queue of releases for [`Registry::release_loop`].
    pub fn new(node: NodeId, conn: Conn, opts: &RedisOptions) -> (Self, mpsc::UnboundedReceiver<SessionKey>) {
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let registry = Self {
            node,
            conn,
            session_key_ttl: opts.session_key_ttl,
            owner_cache_ttl: opts.owner_cache_ttl,
            cache: ShardedMap::new(),
            owned: ShardedMap::new(),
            release_tx,
        };
        (registry, release_rx)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.session_key_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// `SET … GET`: this node owns `key` now; returns the previous owner if it was another.
    pub async fn claim(&self, key: SessionKey) -> Result<Option<NodeId>, ClusterError> {
        self.owned.insert(key, Instant::now());
        self.cache.insert(key, (self.node.clone(), Instant::now()));
        let mut conn = self.conn.clone();
        let previous: Option<String> = redis::cmd("SET")
            .arg(own_key(&key))
            .arg(self.node.as_str())
            .arg("PX")
            .arg(self.ttl_ms())
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(previous.map(NodeId::new).filter(|p| *p != self.node))
    }

    /// Queues the deletion of `key` if it still names this node (never blocks).
    pub fn release(&self, key: SessionKey) {
        self.owned.remove(&key);
        self.cache.remove_if(&key, |(n, _)| *n == self.node);
        let _ = self.release_tx.send(key);
    }

    /// The owner of `key` from memory, if it is known and alive.
    ///
    /// An owner looked up within the cache's time to live is trusted. One older than that
    /// (up to twice the time to live) is still used, and the first caller to find it so is
    /// told it is [`Owner::Stale`] and looks it up again in the background. Treating it as
    /// unknown instead held every message for the key behind that lookup: at 36 000 frames
    /// a second for one VES, a lookup on a busy Redis outlasted the 256 messages that may
    /// wait, once per time to live, and acknowledgements beyond them were lost
    /// (docs/benchmarks.md, "Remembered owners refreshed in the background"). A message
    /// that reaches a former owner meanwhile is handled there as one sent within the time
    /// to live: a frame is refused to its sender (`peer_disconnected`), anything else is
    /// dropped.
    pub fn owner(&self, key: &SessionKey, membership: &Membership) -> Owner {
        let ttl = self.owner_cache_ttl;
        let seen = self.cache.with(key, |e| e.map(|(n, at)| (n.clone(), at.elapsed())));
        match seen {
            Some((n, age)) if age < ttl && membership.is_live(&n) => Owner::Node(n),
            Some((n, age)) if age < ttl * 2 && membership.is_live(&n) => {
                // Trusted for half a period more: if the lookup fails, the next caller
                // after that tries again.
                let refresh_now = self.cache.with_mut(key, |e| match e {
                    Some((m, at)) if *m == n && at.elapsed() >= ttl => {
                        *at = Instant::now().checked_sub(ttl / 2).unwrap_or_else(Instant::now);
                        true
                    }
                    _ => false,
                });
                if refresh_now { Owner::Stale(n) } else { Owner::Node(n) }
            }
            _ => Owner::Unknown,
        }
    }

    /// Reads the owner of `key` from Redis (one round trip) and remembers it.
    pub async fn lookup(&self, key: SessionKey, membership: &Membership) -> Result<Option<NodeId>, ClusterError> {
        let mut conn = self.conn.clone();
        let owner: Option<String> = conn.get(own_key(&key)).await.map_err(unavailable)?;
        let owner = match owner.map(NodeId::new) {
            Some(n) if membership.is_live(&n) => Some(n),
            // Not in our view of live nodes: it may have joined since our last refresh.
            Some(n) => membership.check_live(&n).await?.then_some(n),
            None => None,
        };
        match owner {
            Some(n) => {
                self.cache.insert(key, (n.clone(), Instant::now()));
                Ok(Some(n))
            }
            None => {
                self.cache.remove(&key);
                Ok(None)
            }
        }
    }

    pub fn forget(&self, key: &SessionKey) {
        self.cache.remove(key);
    }

    /// Drops remote owners that [`Registry::owner`] no longer uses: those not looked up
    /// for twice the cache's time to live.
    pub fn expire_cache(&self) {
        let keep = self.owner_cache_ttl * 2;
        self.cache.retain(|_, (_, at)| at.elapsed() < keep);
    }

    /// Writes every owned session key again (after Redis lost them).
    pub async fn reregister(&self) -> Result<(), ClusterError> {
        let mut keys = Vec::new();
        self.owned.for_each(|k, _| keys.push(own_key(k)));
        for chunk in keys.chunks(1000) {
            let cmds = chunk.iter().map(|k| self.set_if_absent(k)).collect();
            run_each::<redis::Value>(&self.conn, cmds).await.map_err(unavailable)?;
        }
        if !keys.is_empty() {
            tracing::info!(sessions = keys.len(), "re-registered sessions with Redis");
        }
        Ok(())
    }

    /// `SET key node PX ttl NX`: never overwrites a newer owner that claimed the session
    /// meanwhile.
    fn set_if_absent(&self, key: &str) -> redis::Cmd {
        let mut c = redis::cmd("SET");
        c.arg(key).arg(self.node.as_str()).arg("PX").arg(self.ttl_ms()).arg("NX");
        c
    }

    /// Deletes every key this node owns (graceful shutdown), in pipelined script runs: a
    /// node leaving with 100 000 sessions sends 2 000 runs at once instead of waiting for
    /// 100 000 round trips, which would outlast the drain's grace period.
    pub async fn release_all(&self) {
        let mut keys = Vec::new();
        self.owned.for_each(|k, _| keys.push(*k));
        for k in &keys {
            self.owned.remove(k);
        }
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut deleted = 0;
        for chunk in keys.chunks(RELEASES_PER_TURN) {
            match self
                .run_script::<i64>(&script, chunk, |c| {
                    c.arg(self.node.as_str());
                })
                .await
            {
                Ok(counts) => deleted += counts.iter().sum::<i64>(),
                Err(e) => {
                    tracing::warn!(error = %e, "releasing the session keys failed; they name this node until they expire");
                    return;
                }
            }
        }
        if !keys.is_empty() {
            tracing::info!(sessions = keys.len(), deleted, "released the session keys");
        }
    }

    /// Runs the queued releases: a key is deleted only if it still names this node. What
    /// is queued when a turn starts (up to [`RELEASES_PER_TURN`]) leaves together.
    pub async fn release_loop(&self, mut rx: mpsc::UnboundedReceiver<SessionKey>) {
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, RELEASES_PER_TURN).await > 0 {
            batch.retain(|key| !self.owned.contains_key(key)); // claimed again meanwhile
            if let Err(e) = self.release_keys(&script, &batch).await {
                tracing::debug!(error = %e, keys = batch.len(), "release failed; the keys name this node until they expire or are reclaimed");
            }
            batch.clear();
        }
    }

    /// Deletes `keys` where they name this node. A key this node claimed again while the
    /// deletion was on its way (same node, same value: the script cannot tell) is set again
    /// if it is gone. The claim notes the key as owned before it sends its `SET`, so a
    /// claim this look misses sends its `SET` after the deletion was answered.
    pub(super) async fn release_keys(&self, script: &redis::Script, keys: &[SessionKey]) -> redis::RedisResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.run_script::<i64>(script, keys, |c| {
            c.arg(self.node.as_str());
        })
        .await?;
        let again: Vec<redis::Cmd> =
            keys.iter().filter(|k| self.owned.contains_key(k)).map(|k| self.set_if_absent(&own_key(k))).collect();
        if !again.is_empty() {
            run_each::<redis::Value>(&self.conn, again).await?;
        }
        Ok(())
    }

    /// Keeps this node's session keys alive and checks that they still name this node.
    ///
    /// A takeover tells the old owner to close its session over pub/sub, which is at most
    /// once: if that `Close` is lost (the old owner's subscription was down at that
    /// moment), the old session would live on beside the new one. So every key is read
    /// back at least every [`OWNERSHIP_CHECK_MAX`], by one script run per key in Redis
    /// ([`RENEW_SCRIPT`]): ours → extended; gone (Redis restarted) → set again; another
    /// node's → that node took the session over: a `Close` (`replaced`) goes to this
    /// node's own `inbox`, exactly as the lost message would have.
    pub async fn renew_loop(&self, inbox: InboxSender) {
        let period = (self.session_key_ttl / 3).min(OWNERSHIP_CHECK_MAX);
        let fresh = period.min(FRESH_CLAIM);
        loop {
            tokio::time::sleep(period).await;
            let mut keys = Vec::new();
            self.owned.for_each(|k, claimed_at| keys.push((*k, *claimed_at)));
            if !self.check_round(&keys, fresh, &inbox).await {
                return;
            }
        }
    }

    /// One ownership check of `keys` (a snapshot of this node's keys and when each was
    /// claimed), 1000 at a time; claims younger than `fresh` are not judged. Returns
    /// whether this node's inbox still takes messages.
    pub(super) async fn check_round(
        &self,
        keys: &[(SessionKey, Instant)],
        fresh: Duration,
        inbox: &InboxSender,
    ) -> bool {
        let script = redis::Script::new(RENEW_SCRIPT);
        for chunk in keys.chunks(1000) {
            let answers = match self.check_keys(&script, chunk).await {
                Ok(answers) => answers,
                Err(e) => {
                    tracing::debug!(error = %e, "session key check failed");
                    break;
                }
            };
            for ((key, claimed_at), answer) in chunk.iter().zip(answers) {
                match answer {
                    Checked::Ours => {}
                    Checked::SetAgain => {
                        // The session may have ended since the snapshot, its key deleted
                        // just before the script set it again: delete it once more
                        // (only if it still names this node), or it would send the
                        // session's traffic here until it expires.
                        if !self.owned.contains_key(key) {
                            let _ = self.release_tx.send(*key);
                        }
                    }
                    Checked::Other(other) => {
                        let still_ours = self.owned.with(key, |v| v.is_some_and(|at| at == claimed_at));
                        if claimed_at.elapsed() < fresh || !still_ours {
                            continue;
                        }
                        self.owned.remove(key);
                        tracing::info!(?key, owner = %other, "session taken over by another node; closing it here");
                        let close = BusMessage::Close { key: *key, code: noc_protocol::CloseCode::Replaced };
                        if inbox.send(close).await.is_err() {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Runs [`RENEW_SCRIPT`] on the keys; returns what it found of each key.
    async fn check_keys(
        &self,
        script: &redis::Script,
        keys: &[(SessionKey, Instant)],
    ) -> redis::RedisResult<Vec<Checked>> {
        let ttl = self.ttl_ms();
        let names: Vec<SessionKey> = keys.iter().map(|(k, _)| *k).collect();
        let runs = self
            .run_script::<Vec<redis::Value>>(script, &names, |c| {
                c.arg(self.node.as_str()).arg(ttl);
            })
            .await?;
        let answers: Vec<Checked> = runs
            .into_iter()
            .flatten()
            .map(|v| match v {
                redis::Value::Int(1) => Ok(Checked::Ours),
                redis::Value::Int(_) => Ok(Checked::SetAgain),
                other => redis::from_redis_value::<String>(other).map(Checked::Other).map_err(redis::RedisError::from),
            })
            .collect::<redis::RedisResult<_>>()?;
        if answers.len() != keys.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "ownership check answered a different number of keys",
            )));
        }
        Ok(answers)
    }

    /// Runs `script` over the session keys of `keys`, [`KEYS_PER_RUN`] per run (one on a
    /// Redis Cluster), all runs pipelined, with the arguments `args` writes after the keys;
    /// one answer per run. Loads the script first if Redis does not have it (e.g. after a
    /// restart).
    async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[SessionKey],
        args: impl Fn(&mut redis::Cmd),
    ) -> redis::RedisResult<Vec<T>> {
        let per_run = self.conn.keys_per_command(KEYS_PER_RUN);
        let cmds = || {
            keys.chunks(per_run)
                .map(|run| {
                    let mut c = redis::cmd("EVALSHA");
                    c.arg(script.get_hash()).arg(run.len());
                    for k in run {
                        c.arg(own_key(k));
                    }
                    args(&mut c);
                    c
                })
                .collect()
        };
        match run_each::<T>(&self.conn, cmds()).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.load_async(&mut self.conn.clone()).await?;
                run_each::<T>(&self.conn, cmds()).await
            }
            other => other,
        }
    }
}
