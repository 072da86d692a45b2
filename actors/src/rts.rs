//! RTS session parameters: the KeyId/Key pairs handed out by `GET /rts/v1/connect`, and
//! the live sessions they became (white paper §4.4–4.5).
//!
//! Parameters are single-use and expire after ReplyTime; their number is bounded so an
//! unauthenticated client cannot grow the table without limit. Keys are kept as SHA-256
//! and compared in constant time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::Addr;
use noc_cluster::ShardedMap;
use noc_protocol::secrets;

use crate::metrics::Metrics;
use crate::ves::{VesSession, VesShared};

struct Pending {
    key_hash: Vec<u8>,
    expires_at: Instant,
}

struct Live {
    shared: Arc<VesShared>,
    addr: Addr<VesSession>,
}

/// What an event-URL POST refers to.
pub enum EventLookup {
    /// Fresh parameters: authenticate the VES and start a session.
    New { key_hash: Vec<u8> },
    /// A live session whose command channel is being (re-)established.
    Resume { shared: Arc<VesShared>, addr: Addr<VesSession> },
}

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("too many outstanding RTS connect parameters")]
    TooMany,
}

pub struct RtsSessions {
    pending: ShardedMap<String, Pending>,
    pending_count: AtomicUsize,
    live: ShardedMap<String, Live>,
    reply_time: Duration,
    max_pending: usize,
    metrics: Arc<Metrics>,
}

impl RtsSessions {
    pub fn new(reply_time: Duration, max_pending: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            pending: ShardedMap::new(),
            pending_count: AtomicUsize::new(0),
            live: ShardedMap::new(),
            reply_time,
            max_pending,
            metrics,
        })
    }

    /// Issues a new KeyId and Key.
    pub fn issue(&self) -> Result<(String, String), PendingError> {
        if self.pending_count.load(Ordering::Relaxed) >= self.max_pending {
            self.purge_expired();
            if self.pending_count.load(Ordering::Relaxed) >= self.max_pending {
                return Err(PendingError::TooMany);
            }
        }
        let key_id = secrets::random_hex::<16>();
        let key = secrets::random_hex::<16>();
        let pending =
            Pending { key_hash: secrets::token_hash(key.as_bytes()), expires_at: Instant::now() + self.reply_time };
        self.pending.insert(key_id.clone(), pending);
        self.pending_count.fetch_add(1, Ordering::Relaxed);
        self.metrics.rts_pending_params.inc();
        Ok((key_id, key))
    }

    /// Resolves an event-URL POST. Fresh parameters are consumed; `None` means unknown,
    /// expired or wrong key (deliberately indistinguishable).
    pub fn lookup_event(&self, key_id: &str, key: &str) -> Option<EventLookup> {
        let live = self.live.with(&key_id.to_string(), |l| l.map(|l| (l.shared.clone(), l.addr.clone())));
        if let Some((shared, addr)) = live {
            return shared.key_matches(key).then_some(EventLookup::Resume { shared, addr });
        }
        let now = Instant::now();
        let taken = self.pending.remove_if(&key_id.to_string(), |p| {
            p.expires_at > now && secrets::token_matches(key.as_bytes(), &p.key_hash)
        })?;
        self.pending_count.fetch_sub(1, Ordering::Relaxed);
        self.metrics.rts_pending_params.dec();
        Some(EventLookup::New { key_hash: taken.key_hash })
    }

    /// The live session a data-channel request authenticates to.
    pub fn session(&self, key_id: &str, key: &str) -> Option<Arc<VesShared>> {
        let shared = self.live.with(&key_id.to_string(), |l| l.map(|l| l.shared.clone()))?;
        shared.key_matches(key).then_some(shared)
    }

    pub fn insert_session(&self, shared: Arc<VesShared>, addr: Addr<VesSession>) {
        self.live.insert(shared.key_id.clone(), Live { shared, addr });
    }

    pub fn remove_session(&self, key_id: &str, session: u64) {
        self.live.remove_if(&key_id.to_string(), |l| l.shared.session == session);
    }

    pub fn live_sessions(&self) -> usize {
        self.live.len()
    }

    /// Drops expired parameters; also run periodically by the node.
    pub fn purge_expired(&self) {
        let now = Instant::now();
        let mut removed = 0usize;
        self.pending.retain(|_, p| {
            let keep = p.expires_at > now;
            if !keep {
                removed += 1;
            }
            keep
        });
        if removed > 0 {
            self.pending_count.fetch_sub(removed, Ordering::Relaxed);
            self.metrics.rts_pending_params.sub(removed as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_single_use_and_bounded() {
        let rts = RtsSessions::new(Duration::from_secs(30), 2, Arc::new(Metrics::new()));
        let (id, key) = rts.issue().expect("issue");
        assert_eq!(key.len(), 32, "128-bit key as hex");
        assert!(rts.lookup_event(&id, "wrong").is_none());
        assert!(matches!(rts.lookup_event(&id, &key), Some(EventLookup::New { .. })));
        assert!(rts.lookup_event(&id, &key).is_none(), "consumed");
        rts.issue().expect("one");
        rts.issue().expect("two");
        assert!(matches!(rts.issue(), Err(PendingError::TooMany)));
    }

    #[test]
    fn expired_parameters_are_refused_and_purged() {
        let rts = RtsSessions::new(Duration::ZERO, 10, Arc::new(Metrics::new()));
        let (id, key) = rts.issue().expect("issue");
        assert!(rts.lookup_event(&id, &key).is_none());
        rts.purge_expired();
        assert_eq!(rts.pending_count.load(Ordering::Relaxed), 0);
    }
}
