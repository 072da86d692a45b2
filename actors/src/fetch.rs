//! Browse fetches (docs/protocol.md §4.6), the relay's one request/response exchange with
//! a VES: the web layer asks [`Router::fetch`] for a user's data; the router hands the
//! fetch to the VES session, here or on its node through the bus, and waits for the
//! `FetchResult` the VES posts on its data channel ([`Router::fetch_result`]), up to a
//! deadline. The answer is the VES's business data: it passes through memory only and is
//! never logged.

use std::time::{Duration, Instant};

use noc_cluster::{BusMessage, FetchCall, FetchOutcome, FetchRefusal, NodeId, SessionKey};
use noc_protocol::rts::fetch::{FetchRequest, RequestId};
use noc_protocol::{UserId, VesId};
use tokio::sync::oneshot;

use crate::router::Router;
use crate::ves::inbox::VesInbox;

/// Takes a fetch's waiter out of the table when dropped.
struct Waiter<'a> {
    waiters: &'a crate::ves::fetches::FetchWaiters,
    request_id: RequestId,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.waiters.waiting().remove(&self.request_id);
    }
}

impl Router {
    /// Sets how many fetches a VES session on this node may have in flight.
    pub fn set_fetch_limit(&self, limit: usize) {
        self.fetches.set_limit(limit);
    }

    /// Asks `ves_id`'s VES for `request` on behalf of `user_id` and waits for the answer,
    /// at most `timeout`. The caller has checked that the VES serves the user (the user's
    /// record names it); the VES checks again.
    pub async fn fetch(
        &self,
        ves_id: VesId,
        user_id: UserId,
        request: FetchRequest,
        timeout: Duration,
    ) -> FetchOutcome {
        let operation = request.operation();
        let started = Instant::now();
        let request_id = RequestId::random();
        let (tx, rx) = oneshot::channel();
        self.fetches.waiting().insert(request_id, tx);
        // The waiter leaves the table however this future ends, even dropped half-way (the
        // page's browser went away): no answer then finds it, and nothing stays behind.
        let _waiter = Waiter { waiters: &self.fetches, request_id };
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let call = FetchCall { request_id, user_id, timeout_ms, request };
        let me = self.cluster().node_id().clone();
        let sent = match self.ves_session(ves_id) {
            Some(h) => h.inbox.start_fetch(call, me, self.fetches.limit(), self.metrics()),
            None => self
                .publish_to_owner(SessionKey::Ves(ves_id), BusMessage::Fetch { ves_id, origin: me, call })
                .map_err(|_| FetchRefusal::Offline),
        };
        let outcome = match sent {
            Err(refusal) => FetchOutcome::Refused(refusal),
            Ok(()) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => outcome,
                // The sender was dropped without an answer (the node is stopping).
                Ok(Err(_)) => FetchOutcome::Refused(FetchRefusal::Offline),
                Err(_) => FetchOutcome::Refused(FetchRefusal::Timeout),
            },
        };
        self.metrics().fetch_done(operation, &outcome, started.elapsed());
        outcome
    }

    /// A VES posted the answer to fetch `request_id` (its data channel, on its session's
    /// node). Whether someone still waited for it.
    pub fn fetch_result(&self, inbox: &VesInbox, request_id: RequestId, outcome: FetchOutcome) -> bool {
        let Some(origin) = inbox.finish_fetch(request_id) else {
            self.metrics().fetch_answer_dropped();
            return false;
        };
        if origin == *self.cluster().node_id() {
            return self.complete(request_id, outcome);
        }
        match self.cluster().publish(&origin, BusMessage::FetchDone { request_id, outcome }) {
            Ok(()) => {
                self.metrics().bus_sent.inc();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, %origin, "a fetch answer could not be sent to the node that asked");
                self.metrics().fetch_answer_dropped();
                false
            }
        }
    }

    /// Another node's fetch for a VES session here.
    pub(crate) fn fetch_arrived(&self, ves_id: VesId, origin: NodeId, call: FetchCall) {
        let request_id = call.request_id;
        let limit = self.fetches.limit();
        let refused = match self.ves_session(ves_id) {
            Some(h) => h.inbox.start_fetch(call, origin.clone(), limit, self.metrics()).err(),
            None => Some(FetchRefusal::Offline),
        };
        if let Some(refusal) = refused {
            let done = BusMessage::FetchDone { request_id, outcome: FetchOutcome::Refused(refusal) };
            if self.cluster().publish(&origin, done).is_ok() {
                self.metrics().bus_sent.inc();
            }
        }
    }

    /// The end of one of this node's fetches (an answer, or why there is none).
    pub(crate) fn fetch_done(&self, request_id: RequestId, outcome: FetchOutcome) {
        if !self.complete(request_id, outcome) {
            self.metrics().fetch_answer_dropped();
        }
    }

    /// A VES session ended with fetches in flight: their askers learn at once.
    pub(crate) fn fetches_abandoned(&self, abandoned: Vec<(RequestId, NodeId)>) {
        let me = self.cluster().node_id().clone();
        for (request_id, origin) in abandoned {
            let outcome = FetchOutcome::Refused(FetchRefusal::Offline);
            if origin == me {
                self.complete(request_id, outcome);
            } else if self.cluster().publish(&origin, BusMessage::FetchDone { request_id, outcome }).is_ok() {
                self.metrics().bus_sent.inc();
            }
        }
    }

    fn complete(&self, request_id: RequestId, outcome: FetchOutcome) -> bool {
        match self.fetches.waiting().remove(&request_id) {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }
}
