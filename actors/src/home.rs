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
//!
//! A VES whose command channel is on another node (or not attached yet) has no home here,
//! and its devices used to stay on whichever worker accepted them. Their frames to the VES
//! then left the node from every worker's publish queue, each in a Redis round of its own,
//! and the bus messages back to them woke every worker. [`Workers`] gives such a VES a
//! worker of its own on this node, chosen from its id, so that the same rule holds on
//! every node: one worker per VES. A VES's frames to a node then pass through one worker
//! on each side, whichever node holds its channel; spreading its devices over more
//! workers of a node would not raise that ceiling, only the cost per frame
//! (docs/benchmarks.md, "A remote VES's devices on one worker").

use std::sync::RwLock;
use std::thread::ThreadId;

use actix::ArbiterHandle;
use noc_protocol::VesId;

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

    /// Whether the worker still runs (it takes work; a no-op is queued to find out).
    fn is_running(&self) -> bool {
        self.arbiter.spawn_fn(|| {})
    }
}

/// The node's workers that device sessions start on, in the order they started (a
/// replacement in the place of the worker it replaced), and the one each VES without a
/// home on this node gets.
#[derive(Debug, Default)]
pub struct Workers {
    homes: RwLock<Vec<Home>>,
}

impl Workers {
    /// Adds the calling thread's worker (each worker adds itself as it starts its device
    /// service, and again if it restarts the service). A worker that the server starts in
    /// place of a failed one takes the failed one's place in the list: only the VESs the
    /// failed one served move, to the new one, and every other VES keeps its worker, so
    /// its devices that connect later join those already connected. (Dropping the failed
    /// one and appending the new one would shift every VES after it in the list.)
    pub fn add_current(&self) {
        let home = Home::current();
        let mut homes = self.homes.write().unwrap_or_else(|p| p.into_inner());
        if homes.iter().any(|h| h.thread == home.thread) {
            return;
        }
        match homes.iter().position(|h| !h.is_running()) {
            Some(stopped) => homes[stopped] = home,
            None => homes.push(home),
        }
    }

    /// The worker of `ves` on this node: the same one for every device of the VES while
    /// the node's workers stay the same. `None` before any worker started.
    pub fn for_ves(&self, ves: VesId) -> Option<Home> {
        let homes = self.homes.read().unwrap_or_else(|p| p.into_inner());
        // Version 4 ids are random: their last eight bytes spread VESs evenly.
        let (_, tail) = ves.as_bytes().split_at(8);
        let n = u64::from_le_bytes(tail.try_into().ok()?);
        let i = usize::try_from(n % u64::try_from(homes.len()).ok()?.max(1)).ok()?;
        homes.get(i).cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.homes.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `n` workers (arbiters), each adding itself to `workers`.
    fn start_workers(workers: &std::sync::Arc<Workers>, n: usize) -> Vec<actix::Arbiter> {
        let arbiters: Vec<actix::Arbiter> = (0..n).map(|_| actix::Arbiter::new()).collect();
        for arbiter in &arbiters {
            let (w, (tx, rx)) = (workers.clone(), std::sync::mpsc::channel());
            assert!(arbiter.spawn_fn(move || {
                w.add_current();
                let _ = tx.send(());
            }));
            rx.recv().expect("the worker added itself");
        }
        arbiters
    }

    /// The thread a home runs its work on.
    fn thread_of(home: &Home) -> ThreadId {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(home.spawn(async move {
            let _ = tx.send(std::thread::current().id());
        }));
        rx.recv().expect("the home ran the task")
    }

    #[actix_rt::test]
    async fn every_device_of_a_ves_gets_the_same_worker_and_vess_spread_over_all() {
        let workers = std::sync::Arc::new(Workers::default());
        assert!(workers.for_ves(VesId::random()).is_none(), "no worker yet");
        let arbiters = start_workers(&workers, 3);
        assert_eq!(workers.len(), 3);
        // A worker that starts its service again is not counted twice.
        let (w, (tx, rx)) = (workers.clone(), std::sync::mpsc::channel());
        assert!(arbiters[1].spawn_fn(move || {
            w.add_current();
            let _ = tx.send(());
        }));
        rx.recv().expect("added again");
        assert_eq!(workers.len(), 3);
        let ves = VesId::random();
        let first = thread_of(&workers.for_ves(ves).expect("a worker"));
        for _ in 0..5 {
            assert_eq!(thread_of(&workers.for_ves(ves).expect("a worker")), first);
        }
        let used: std::collections::HashSet<ThreadId> =
            (0..60).map(|_| thread_of(&workers.for_ves(VesId::random()).expect("a worker"))).collect();
        assert_eq!(used.len(), 3, "sixty VESs use all three workers");
        for a in arbiters {
            a.stop();
        }
    }

    /// The thread of an arbiter.
    fn thread_of_arbiter(arbiter: &actix::Arbiter) -> ThreadId {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(arbiter.spawn_fn(move || {
            let _ = tx.send(std::thread::current().id());
        }));
        rx.recv().expect("the arbiter ran the function")
    }

    #[actix_rt::test]
    async fn a_worker_started_in_place_of_a_stopped_one_takes_its_place_and_no_other_ves_moves() {
        let workers = std::sync::Arc::new(Workers::default());
        let mut arbiters = start_workers(&workers, 3);
        let vess: Vec<VesId> = (0..60).map(|_| VesId::random()).collect();
        let before: Vec<ThreadId> = vess.iter().map(|v| thread_of(&workers.for_ves(*v).expect("a worker"))).collect();
        let stopped = arbiters.remove(1);
        let stopped_thread = thread_of_arbiter(&stopped);
        assert!(before.contains(&stopped_thread), "some VESs were on the worker that stops");
        stopped.stop();
        stopped.join().expect("the worker stopped");
        let replacement = start_workers(&workers, 1);
        let new_thread = thread_of_arbiter(&replacement[0]);
        arbiters.extend(replacement);
        assert_eq!(workers.len(), 3, "the stopped worker was replaced, not added to");
        for (ves, was) in vess.iter().zip(&before) {
            let home = workers.for_ves(*ves).expect("a worker");
            assert!(home.is_running(), "no VES is given the stopped worker");
            let expected = if *was == stopped_thread { new_thread } else { *was };
            assert_eq!(thread_of(&home), expected, "only the stopped worker's VESs moved");
        }
        for a in arbiters {
            a.stop();
        }
    }
}
