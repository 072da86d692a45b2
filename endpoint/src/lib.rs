//! What the VES agent (`ves-agent`) and the device client (`noc-device`) have in common:
//! the end-to-end application protocol that runs inside the relay's opaque FORWARD
//! payloads (docs/endpoints.md).
//!
//! * [`item`] — items (mail, calendar, contact, outgoing mail) and the records that carry
//!   their parts and their acknowledgements inside sealed `Data` frames;
//! * [`store`] — the durable outbox, partial items and received items (SQLite);
//! * [`link`] — the per-peer state machine over `noc-crypto`: WakeUp/WakeUpAck, sealing,
//!   in-order resend of the exact sealed bytes, acknowledgement after durable storage,
//!   re-sealing under a new session after a reconnect;
//! * [`backoff`], [`fsutil`], [`rfc822`], [`cli`] — small pieces both programs need:
//!   jittered reconnects, 0600 state files, just enough RFC 5322 to list and compose mail,
//!   and standard output and error reports for the command lines. (Their TLS client
//!   configuration is `noc-tls`'s, shared with the load tool and the test peers.)
//!
//! The relay never links this crate: to it, everything here is opaque bytes.

pub mod backoff;
pub mod cli;
pub mod enroll;
pub mod error;
pub mod fsutil;
pub mod item;
pub mod link;
pub mod rfc822;
pub mod store;

pub use backoff::Backoff;
pub use error::EndpointError;
pub use item::{Item, ItemHeader, ItemId, ItemType, Record};
pub use link::{Link, LinkConfig, LinkEvent, OutFrame, Outputs, Rejection, VES_PEER};
pub use store::{FullPolicy, QueueLimits, Received, Store};
