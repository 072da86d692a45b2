//! Session actors and the router that connects them.
//!
//! One actix actor owns each authenticated session: [`DeviceSession`] per device
//! connection, [`VesSession`] per enterprise-server RTS session. An actor owns its
//! session's lifecycle (registration, heartbeats, idle and stall timeouts, takeover,
//! close); the bytes flow through bounded queues that the [`Router`] fills straight from the
//! sending session's thread, so relaying a frame never waits on another actor's mailbox
//! nor touches the account store.
//!
//! A session that panics only loses itself: the actor's task unwinds, and its registry
//! entry is removed by the guard it drops.

pub mod certificates;
mod close;
mod config;
mod device;
mod device_heartbeats;
mod device_reader;
mod device_writer;
mod fetch;
mod home;
pub mod metrics;
pub mod queue;
mod router;
mod rts_sessions;
#[cfg(test)]
mod test_stubs;
pub mod usage;
mod ves;

pub use certificates::{CertificateIssuer, Issued, Refused};
pub use close::CloseSession;
pub use config::SessionConfig;
pub use device::{DeviceSession, DeviceSessionInfo};
pub use device_reader::FrameReader;
pub use home::{Home, Workers};
pub use metrics::{Direction, DropReason, Metrics, SessionKind};
pub use router::{DeviceHandle, DeviceOut, DeviceSeen, Router, VesHandle, WriterGuard};
pub use rts_sessions::{EventLookup, RtsSession, RtsSessions};
pub use ves::command_stream::{Attach, CommandStream};
pub use ves::fetches::DEFAULT_FETCHES_IN_FLIGHT;
pub use ves::inbox::{VesInbox, VesUserState};
pub use ves::session::VesSession;
