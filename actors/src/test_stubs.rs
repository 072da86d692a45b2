//! Stand-ins shared by the unit tests.

use actix::{Actor, Context, Handler};

use crate::close::CloseSession;

/// Stands in for a session actor where only its address matters: the router's close
/// recipient, the heartbeat wheel's weak address. Takes a close and does nothing.
pub(crate) struct SessionStub;

impl Actor for SessionStub {
    type Context = Context<Self>;
}

impl Handler<CloseSession> for SessionStub {
    type Result = ();
    fn handle(&mut self, _: CloseSession, _: &mut Context<Self>) {}
}
