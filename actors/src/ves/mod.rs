//! The VES side of the relay, split along its roles so that nothing on the frame path
//! imports back up:
//!
//! * [`inbox`] — what the router needs of a VES: the command channel's queue, the device
//!   directory, the active users. Imports no session code.
//! * [`fetches`] — the browse fetches a session has in flight, and who waits for each.
//! * [`command_stream`] — the command channel's send loop (the HTTP response body).
//! * [`session`] — the actor that owns the session's lifecycle and its channels.

pub(crate) mod command_stream;
pub(crate) mod fetches;
pub(crate) mod inbox;
pub(crate) mod session;
