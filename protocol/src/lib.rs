//! Wire types shared by the relay, the VES agent and the device client.
//!
//! Two protocols meet at the relay (see `docs/protocol.md` for the normative text):
//!
//! * [`rts`]: the Real-Time Service protocol between an enterprise server (VES) and the
//!   relay. JSON over HTTPS: a streamed NDJSON *command channel* downstream and short
//!   *data channel* POSTs upstream (white paper §4).
//! * [`device`]: the device channel. Length-prefixed binary frames over a persistent TLS
//!   connection (white paper §7.2), where the device speaks first (BlackBerry SRP seed).
//!
//! Both sides treat end-to-end payloads as opaque bytes: nothing here parses them. Keeping
//! these types in one crate lets the relay, the test peers and the endpoints share a single
//! codec, so a wire change is one change.

pub mod clock;
pub mod codes;
pub mod device;
pub mod ids;
pub mod json;
pub mod rts;
pub mod secrets;

pub use codes::{ApiErrorCode, CloseCode, RenewalRefusal, UndeliverableReason};
pub use ids::{DeviceId, LicenseId, UserId, VesId};
