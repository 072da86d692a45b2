//! The device session's send loop, on the relay's side of the device channel: drains the
//! session's queue in batches, one write of up to [`WRITE_BATCH_BYTES`] per wake-up.
//!
//! It is a hand-written future rather than an `async fn` because every idle session keeps
//! one: an `async fn` with a timeout around each write and a `select!` on the shutdown
//! signal compiled to a 624-byte state, most of it the await points' timers, kept for the
//! session's whole life. This one holds its fields (184 bytes) and arms a stall
//! timer only when a write finds the socket full, which a device that reads never
//! causes. Closing (the CLOSE frame, bouncing what was not written, the TLS close) runs
//! once, boxed, when the loop ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix::{Actor, Context as ActorContext, Handler, Message, WeakAddr};
use bytes::BytesMut;
use noc_cluster::DeviceItem;
use noc_protocol::device::Frame;
use noc_protocol::{CloseCode, DeviceId, UndeliverableReason, VesId};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use crate::metrics::DropReason;
use crate::queue::QueueReceiver;
use crate::router::{DeviceOut, Router, WriterGuard};
use crate::usage::SessionUsage;

/// Most bytes the writer gathers before one write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// How long the final CLOSE frame and TLS close_notify may take.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// To the session, from its send loop: a write failed or stalled.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WriterFailed {
    pub code: CloseCode,
}

/// Whose send loop it is: the session to tell of a failed write (weakly: a strong
/// address allocates per clone, and a session gone needs no telling), the router to bounce
/// unwritten frames through, and the session's usage counters.
pub(crate) struct Owner<A: Actor> {
    pub session: WeakAddr<A>,
    pub router: Arc<Router>,
    pub device_id: DeviceId,
    pub usage: Arc<SessionUsage>,
}

/// Why the loop ended.
enum End {
    /// The session stopped; the CLOSE frame to write, if any (never in the middle of a
    /// batch: its bytes would land inside a frame).
    Stopped(Option<Box<Frame>>),
    /// The queue closed: every sender is gone.
    Drained,
    /// A write failed (`Normal`: the connection is gone) or stalled (`SlowConsumer`).
    Failed(CloseCode),
}

/// The send loop of one device session. Spawn [`SendLoop::run`].
pub(crate) struct SendLoop<W, A: Actor> {
    w: W,
    rx: QueueReceiver<DeviceOut>,
    shutdown: oneshot::Receiver<Option<Box<Frame>>>,
    stall: Duration,
    owner: Owner<A>,
    /// The batch being written, and how much of it the socket took.
    buf: BytesMut,
    written: usize,
    /// Forwarded frames of the batch: bounced if it is never written.
    batch: Vec<(VesId, u64)>,
    /// Armed when the batch's first write found the socket full; the batch must be written
    /// before it fires.
    stall_timer: Option<Pin<Box<Sleep>>>,
    _guard: WriterGuard,
}

impl<W, A> SendLoop<W, A>
where
    W: AsyncWrite + Unpin,
    A: Actor<Context = ActorContext<A>> + Handler<WriterFailed>,
{
    pub(crate) fn new(
        w: W,
        rx: QueueReceiver<DeviceOut>,
        shutdown: oneshot::Receiver<Option<Box<Frame>>>,
        stall: Duration,
        owner: Owner<A>,
    ) -> Self {
        let _guard = owner.router.writer_guard();
        SendLoop {
            w,
            rx,
            shutdown,
            stall,
            owner,
            buf: BytesMut::new(),
            written: 0,
            batch: Vec::new(),
            stall_timer: None,
            _guard,
        }
    }

    /// The session's send task: the loop, then the close.
    pub(crate) fn run(self) -> SendTask<W, A> {
        SendTask(Stage::Running(self))
    }

    fn poll_loop(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            // The shutdown signal wins over queued items, as it did over the next batch.
            if let Poll::Ready(last) = Pin::new(&mut self.shutdown).poll(cx) {
                let idle = self.buf.is_empty();
                return Poll::Ready(End::Stopped(last.ok().flatten().filter(|_| idle)));
            }
            if self.buf.is_empty() {
                let Some(first) = ready!(self.rx.poll_recv(cx)) else {
                    return Poll::Ready(End::Drained);
                };
                self.encode(first);
                while self.buf.len() < WRITE_BATCH_BYTES {
                    match self.rx.try_recv() {
                        Some(item) => self.encode(item),
                        None => break,
                    }
                }
            }
            if let Err(code) = ready!(self.poll_write_batch(cx)) {
                return Poll::Ready(End::Failed(code));
            }
            self.buf.clear();
            self.batch.clear();
            self.written = 0;
            self.stall_timer = None;
            if self.buf.capacity() > WRITE_BATCH_BYTES {
                // Give back memory after a burst: idle sessions should stay small.
                self.buf = BytesMut::new();
                self.batch = Vec::new();
            }
        }
    }

    /// Writes and flushes the batch; a socket that stays full past the stall timeout is
    /// a slow consumer.
    fn poll_write_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseCode>> {
        let progress = loop {
            if self.written < self.buf.len() {
                match Pin::new(&mut self.w).poll_write(cx, &self.buf[self.written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(CloseCode::Normal)),
                    Poll::Ready(Ok(n)) => self.written += n,
                    Poll::Pending => break Poll::Pending,
                }
            } else {
                break Pin::new(&mut self.w).poll_flush(cx);
            }
        };
        match progress {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(_)) => Poll::Ready(Err(CloseCode::Normal)),
            Poll::Pending => {
                let stall = self.stall;
                let timer = self.stall_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(CloseCode::SlowConsumer))
            }
        }
    }

    /// Encodes one queued item into the batch.
    fn encode(&mut self, out: DeviceOut) {
        let Owner { router, usage, .. } = &self.owner;
        let buf = &mut self.buf;
        match out {
            DeviceOut::Heartbeat => Frame::Heartbeat.encode(buf),
            DeviceOut::Frame(frame) => frame.encode(buf),
            DeviceOut::Item(DeviceItem::Forward { origin, kind, frame_id, payload }) => {
                let c = &router.metrics().ves_to_device;
                c.frames.inc();
                c.bytes.inc_by(payload.len() as u64);
                usage.to_device(payload.len());
                self.batch.push((origin, frame_id));
                Frame::Forward { kind, frame_id, payload }.encode(buf)
            }
            DeviceOut::Item(DeviceItem::Ack { frame_id }) => {
                router.metrics().ves_to_device.acks.inc();
                Frame::Ack { frame_id }.encode(buf)
            }
            DeviceOut::Item(DeviceItem::Undeliverable { frame_id, reason }) => {
                usage.undeliverable();
                Frame::Undeliverable { frame_id, reason }.encode(buf)
            }
        }
    }

    /// After the loop: the CLOSE frame if the session asked for one, the session told of a
    /// failed write, every forwarded frame not written bounced to its VES, then the TLS
    /// close.
    async fn close(mut self, end: End) {
        let Owner { session, router, device_id, .. } = &self.owner;
        match end {
            End::Stopped(Some(frame)) => {
                self.buf.clear();
                frame.encode(&mut self.buf);
                let (w, buf) = (&mut self.w, &self.buf);
                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                    w.write_all(buf).await?;
                    w.flush().await
                })
                .await;
            }
            End::Stopped(None) | End::Drained => {}
            End::Failed(code) => {
                if let Some(session) = session.upgrade() {
                    session.do_send(WriterFailed { code });
                }
            }
        }
        // Frames of an unfinished write, then everything still queued, go back to their VES.
        self.rx.close();
        let rx = &mut self.rx;
        let queued = std::iter::from_fn(|| rx.try_recv()).filter_map(|out| match out {
            DeviceOut::Item(DeviceItem::Forward { origin, frame_id, .. }) => Some((origin, frame_id)),
            _ => None,
        });
        for (origin, frame_id) in self.batch.drain(..).chain(queued) {
            router.metrics().dropped(DropReason::SessionClosed);
            router.bounce_to_ves_sender(origin, *device_id, frame_id, UndeliverableReason::PeerDisconnected);
        }
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.w.shutdown()).await;
    }
}

/// The spawned form of a [`SendLoop`]: the loop, then its close. A hand-written future
/// again, because an `async` block awaiting the loop and then the close kept both the
/// loop and what it ended with (368 bytes).
pub(crate) struct SendTask<W, A: Actor>(Stage<W, A>);

enum Stage<W, A: Actor> {
    Running(SendLoop<W, A>),
    /// Boxed: closing needs timers the loop does not keep while it runs.
    Closing(Pin<Box<dyn Future<Output = ()>>>),
    Done,
}

impl<W, A> Future for SendTask<W, A>
where
    W: AsyncWrite + Unpin + 'static,
    A: Actor<Context = ActorContext<A>> + Handler<WriterFailed>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.0 {
                Stage::Running(send_loop) => {
                    let end = ready!(send_loop.poll_loop(cx));
                    if let Stage::Running(send_loop) = std::mem::replace(&mut self.0, Stage::Done) {
                        self.0 = Stage::Closing(Box::pin(send_loop.close(end)));
                    }
                }
                Stage::Closing(close) => {
                    ready!(close.as_mut().poll(cx));
                    self.0 = Stage::Done;
                }
                Stage::Done => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_task_keeps_no_timer_while_it_waits() {
        // What an idle session pays for its send loop; the async fn it replaced took 624
        // bytes, 368 of them timers' and futures' room for the await points.
        struct Session;
        impl Actor for Session {
            type Context = ActorContext<Self>;
        }
        let size = std::mem::size_of::<SendTask<tokio::io::WriteHalf<tokio::net::TcpStream>, Session>>();
        assert!(size <= 184, "send task state grew to {size} bytes");
    }
}
