//! The relay's side of RTS session establishment: the KeyId/Key pairs handed out by
//! `GET /rts/v1/connect`, and the live sessions they became (white paper §4.4–4.5).
//!
//! Parameters are stateless: the KeyId carries its expiry and the Key is a MAC of the
//! KeyId under a secret of this node, so issuing them stores nothing and an
//! unauthenticated client cannot fill a table or crowd out real enterprise servers. A Key
//! is checked in constant time; once a session exists its Key is kept only as SHA-256.

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use hmac::{KeyInit, Mac};
use noc_cluster::ShardedMap;
use noc_protocol::clock::unix_ms;
use noc_protocol::{LicenseId, VesId, secrets};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;
use crate::ves::command_stream::Attach;
use crate::ves::inbox::VesInbox;

/// What a KeyId names once its session exists: the session's inbox and what authenticates
/// the data channel to it. Shared by the session actor and the data-channel handlers on
/// any worker thread.
pub struct RtsSession {
    pub inbox: Arc<VesInbox>,
    pub license_id: LicenseId,
    pub key_id: String,
    key_hash: Vec<u8>,
}

impl RtsSession {
    pub fn new(inbox: Arc<VesInbox>, license_id: LicenseId, key_id: String, key_hash: Vec<u8>) -> Self {
        Self { inbox, license_id, key_id, key_hash }
    }

    pub fn ves_id(&self) -> VesId {
        self.inbox.ves_id
    }

    /// Constant-time check of the session key presented on the data channel.
    pub fn key_matches(&self, key: &str) -> bool {
        secrets::token_matches(key.as_bytes(), &self.key_hash)
    }
}

struct Live {
    session: Arc<RtsSession>,
    attach: Recipient<Attach>,
}

/// What an event-URL POST refers to.
pub enum EventLookup {
    /// Fresh parameters: authenticate the VES and start a session.
    New { key_hash: Vec<u8> },
    /// A live session whose command channel is being (re-)established.
    Resume { session: Arc<RtsSession>, attach: Recipient<Attach> },
}

pub struct RtsSessions {
    secret: [u8; 32],
    live: ShardedMap<String, Live>,
    reply_time: Duration,
    metrics: Arc<Metrics>,
}

impl RtsSessions {
    pub fn new(reply_time: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { secret: secrets::random_bytes::<32>(), live: ShardedMap::new(), reply_time, metrics })
    }

    /// The Key belonging to a KeyId: the first 128 bits of HMAC-SHA256(secret, KeyId).
    fn key_for(&self, key_id: &str) -> String {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(key_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Issues a new KeyId (64 random bits, then the expiry in unix ms, as hex) and its Key.
    pub fn issue(&self) -> (String, String) {
        let expiry = unix_ms() + self.reply_time.as_millis() as u64;
        let key_id = format!("{}{expiry:016x}", secrets::random_hex::<8>());
        let key = self.key_for(&key_id);
        (key_id, key)
    }

    /// Resolves an event-URL POST. `None` means unknown, expired or wrong key
    /// (deliberately indistinguishable).
    pub fn lookup_event(&self, key_id: &str, key: &str) -> Option<EventLookup> {
        let live = self.live.with(key_id, |l| l.map(|l| (l.session.clone(), l.attach.clone())));
        if let Some((session, attach)) = live {
            return session.key_matches(key).then_some(EventLookup::Resume { session, attach });
        }
        if key_id.len() != 32 || !key_id.is_ascii() {
            return None;
        }
        let expiry = u64::from_str_radix(&key_id[16..], 16).ok()?;
        if expiry <= unix_ms() {
            return None;
        }
        let expected = self.key_for(key_id);
        if !bool::from(expected.as_bytes().ct_eq(key.as_bytes())) {
            return None;
        }
        Some(EventLookup::New { key_hash: secrets::token_hash(key.as_bytes()) })
    }

    /// The live session a data-channel request authenticates to.
    pub fn session(&self, key_id: &str, key: &str) -> Option<Arc<RtsSession>> {
        let session = self.live.with(key_id, |l| l.map(|l| l.session.clone()))?;
        session.key_matches(key).then_some(session)
    }

    pub fn insert_session(&self, session: Arc<RtsSession>, attach: Recipient<Attach>) {
        self.live.insert(session.key_id.clone(), Live { session, attach });
        self.metrics.rts_sessions.set(self.live.len() as i64);
    }

    pub fn remove_session(&self, key_id: &str, session: u64) {
        self.live.remove_if(key_id, |l| l.session.inbox.session == session);
        self.metrics.rts_sessions.set(self.live.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_authenticate_without_state() {
        let rts = RtsSessions::new(Duration::from_secs(30), Arc::new(Metrics::new()));
        let (id, key) = rts.issue();
        assert_eq!((id.len(), key.len()), (32, 32), "hex KeyId and 128-bit hex Key");
        assert!(rts.lookup_event(&id, "wrong").is_none());
        assert!(rts.lookup_event(&id, &"0".repeat(32)).is_none());
        assert!(matches!(rts.lookup_event(&id, &key), Some(EventLookup::New { .. })));
        let (other, _) = rts.issue();
        assert!(rts.lookup_event(&other, &key).is_none(), "a Key belongs to its KeyId");
        // A KeyId whose expiry was altered no longer matches its Key.
        let forged = format!("{}{:016x}", &id[..16], u64::MAX);
        assert!(rts.lookup_event(&forged, &key).is_none());
        // Another node (another secret) does not accept these parameters.
        let elsewhere = RtsSessions::new(Duration::from_secs(30), Arc::new(Metrics::new()));
        assert!(elsewhere.lookup_event(&id, &key).is_none());
        assert!(rts.lookup_event("short", &key).is_none());
        assert!(rts.lookup_event(&"é".repeat(16), &key).is_none());
    }

    #[test]
    fn expired_parameters_are_refused() {
        let rts = RtsSessions::new(Duration::ZERO, Arc::new(Metrics::new()));
        let (id, key) = rts.issue();
        std::thread::sleep(Duration::from_millis(2));
        assert!(rts.lookup_event(&id, &key).is_none());
    }
}
