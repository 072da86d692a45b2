//! Which worker thread a VES's traffic lives on.
//!
//! A relayed frame crosses from a device session to its VES's command channel and back.
//! When the two sit on different worker threads every crossing wakes the other thread
//! (an eventfd write and a context switch); keeping them together made a relayed frame
//! cost about a fifth less CPU (docs/benchmarks.md, "Sessions on their VES's worker").
//! So the device listener starts an authenticated device's session on its VES's *home*:
//! the worker that serves the VES's command channel. The VES's traffic then stays on one
//! thread, and the node's workers share the load VES by VES (one VES's traffic on a node
//! is served by one worker).

use std::thread::ThreadId;

use actix::ArbiterHandle;

/// A worker thread (actix arbiter) that sessions can be started on.
#[derive(Clone, Debug)]
pub struct Home {
    thread: ThreadId,
    arbiter: ArbiterHandle,
}

impl Home {
    /// The worker this is called on.
    pub fn current() -> Self {
        Self { thread: std::thread::current().id(), arbiter: actix::Arbiter::current() }
    }

    /// Whether this is the worker the caller runs on.
    pub fn is_current(&self) -> bool {
        self.thread == std::thread::current().id()
    }

    /// Runs `fut` on this worker; `false` when the worker has stopped (the future is
    /// dropped).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) -> bool {
        self.arbiter.spawn(fut)
    }
}
