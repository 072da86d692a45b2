//! The agent's identity, kept in `<state.dir>/state.json` (0600, directory 0700): its GUID
//! (a shared secret with the relay), the license-id token from registration, and the VES
//! long-term X25519 key whose fingerprint users pin. Losing the file means registering a
//! new VES and redistributing the fingerprint, so it is written atomically.

use std::path::{Path, PathBuf};

use noc_crypto::StaticKeyPair;
use noc_endpoint::fsutil::{ensure_private_dir, write_private};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::AgentError;

pub const STATE_FILE: &str = "state.json";
pub const DB_FILE: &str = "agent.db";
pub const CONTROL_SOCKET: &str = "control.sock";

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// 32 lowercase hex digits, generated once.
    pub guid: String,
    /// From `POST /rts/v1/license`; `None` until `register`.
    pub license_token: Option<String>,
    /// The X25519 secret of the VES static key, 64 hex digits.
    pub static_key: String,
    pub created_at_ms: i64,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("guid", &"***")
            .field("license_token", &self.license_token.as_ref().map(|_| "***"))
            .field("static_key", &"***")
            .finish()
    }
}

impl AgentState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Loads the state, or creates a new identity (GUID and key) when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, AgentError> {
        match Self::load(dir)? {
            Some(s) => Ok(s),
            None => {
                let key = StaticKeyPair::generate()?;
                let state = AgentState {
                    guid: noc_protocol::secrets::random_hex::<16>(),
                    license_token: None,
                    static_key: hex::encode(key.secret_bytes().as_slice()),
                    created_at_ms: noc_protocol::clock::unix_ms_i64(),
                };
                state.save(dir)?;
                Ok(state)
            }
        }
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, AgentError> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let s: AgentState =
                    serde_json::from_str(&text).map_err(|e| AgentError::State(format!("{}: {e}", path.display())))?;
                s.key()?;
                Ok(Some(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::State(format!("{}: {e}", path.display()))),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        ensure_private_dir(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| AgentError::State(e.to_string()))?;
        write_private(&Self::path(dir), &json)?;
        Ok(())
    }

    /// The VES static key pair.
    pub fn key(&self) -> Result<StaticKeyPair, AgentError> {
        let mut bytes = hex::decode(&self.static_key).map_err(|e| AgentError::State(format!("static_key: {e}")))?;
        let arr: Result<[u8; 32], _> = bytes.as_slice().try_into();
        bytes.zeroize();
        let mut arr = arr.map_err(|_| AgentError::State("static_key: expected 32 bytes".into()))?;
        let key = StaticKeyPair::from_secret_bytes(arr);
        arr.zeroize();
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_0600_and_masked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("state");
        let a = AgentState::load_or_create(&sub).expect("create");
        let b = AgentState::load_or_create(&sub).expect("load");
        assert_eq!(a.guid, b.guid);
        assert_eq!(a.key().expect("key").fingerprint(), b.key().expect("key").fingerprint());
        assert_eq!(noc_endpoint::fsutil::mode(&AgentState::path(&sub)).expect("mode"), 0o600);
        assert!(!format!("{a:?}").contains(&a.guid));
    }
}
