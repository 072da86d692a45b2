//! Request bodies that a handler refused to read are not read by anyone else.
//!
//! When an answer has been written, actix-http reads the rest of a *chunked* request body
//! to its end if the handler dropped the body unread, so that the connection can serve
//! another request; a client can keep that going forever (an endless chunked body after
//! a 401 or a 413). If the unread body is still held when the answer goes out, actix-http
//! closes the connection instead. This middleware holds every request's body until its
//! answer has been written: a body read to the end costs nothing to hold, one left unread
//! (refused, too large, too slow, or simply not needed) ends the connection.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use bytes::Bytes;
use futures_util::StreamExt;

/// The middleware (`actix_web::middleware::from_fn(hold_unread_body)`).
pub async fn hold_unread_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let original = Rc::new(RefCell::new(req.take_payload()));
    let reader = original.clone();
    let proxy = futures_util::stream::poll_fn(move |cx| reader.borrow_mut().poll_next_unpin(cx));
    req.set_payload(Payload::Stream { payload: Box::pin(proxy) });
    let res = next.call(req).await?;
    Ok(res.map_body(move |_, body| HeldUntilSent { body: BoxBody::new(body), _request_body: original }))
}

/// An answer's body that holds its request's body until the answer has been written.
struct HeldUntilSent {
    body: BoxBody,
    _request_body: Rc<RefCell<Payload>>,
}

impl MessageBody for HeldUntilSent {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
