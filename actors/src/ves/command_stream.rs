//! The command channel's send loop: the body of the long-lived event-URL response.
//!
//! A [`CommandStream`] drains its channel's queue into NDJSON chunks (encoded by
//! `noc_protocol::rts::line`), at most [`CHUNK_BYTES`] at a time, and ends with the
//! farewell line when its session cancels it. The chunks are cut from one buffer that the
//! stream keeps while the channel lives (64 KiB): the HTTP layer copies each chunk into
//! its own write buffer and drops it, after which the stream's buffer is reused in place,
//! so a busy channel allocates nothing per line or per chunk. It never bounces frames
//! itself: when it is dropped it tells its session ([`ChannelClosed`]), which takes the
//! queue back and bounces what is left, so nothing here calls the router.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix::{Message, Recipient};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use noc_cluster::VesItem;
use noc_protocol::rts::Command;
use noc_protocol::rts::line::{write_command, write_device_frame};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::metrics::Metrics;
use crate::usage::SessionUsage;
use crate::ves::inbox::{ChannelRx, FarewellSlot, RxSlot, VesInbox, lock};

/// Most bytes handed to the HTTP layer in one chunk.
pub const CHUNK_BYTES: usize = 32 * 1024;
/// Room the stream's buffer is given when it runs low: a whole chunk and a line beyond.
const BUFFER_BYTES: usize = 2 * CHUNK_BYTES;

/// Asks a VES session to attach a new command channel; answered with the stream to serve
/// as the HTTP body (`None` when the session is ending).
#[derive(Message)]
#[rtype(result = "Option<CommandStream>")]
pub struct Attach {
    pub resumed: bool,
    /// The RTS version the VES asked for in this POST (1 when it named none).
    pub protocol_version: u32,
}

/// Tells a VES session that the stream of channel `epoch` is gone (the HTTP response
/// ended or was dropped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelClosed {
    pub epoch: u64,
}

/// The body of the command-channel response: NDJSON lines drained from the session queue.
pub struct CommandStream {
    rx: RxSlot,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    farewell: FarewellSlot,
    inbox: Arc<VesInbox>,
    metrics: Arc<Metrics>,
    usage: Arc<SessionUsage>,
    session: Recipient<ChannelClosed>,
    epoch: u64,
    done: bool,
    /// What the chunks are cut from (see the module's comment).
    buf: BytesMut,
}

impl CommandStream {
    pub(crate) fn new(
        channel: ChannelRx,
        inbox: Arc<VesInbox>,
        metrics: Arc<Metrics>,
        usage: Arc<SessionUsage>,
        session: Recipient<ChannelClosed>,
    ) -> Self {
        Self {
            rx: channel.rx,
            cancelled: Box::pin(channel.cancel.cancelled_owned()),
            farewell: channel.farewell,
            inbox,
            metrics,
            usage,
            session,
            epoch: channel.epoch,
            done: false,
            buf: BytesMut::new(),
        }
    }

    fn encode(item: &VesItem, buf: &mut BytesMut) {
        match item {
            VesItem::Frame { device_id, user_id, frame_id, kind, payload } => {
                write_device_frame(buf, *device_id, *user_id, *frame_id, *kind, payload)
            }
            VesItem::Ack { device_id, frame_id } => {
                write_command(buf, &Command::Ack { device_id: *device_id, frame_id: *frame_id })
            }
            VesItem::Undeliverable { device_id, frame_id, reason } => write_command(
                buf,
                &Command::Undeliverable { device_id: *device_id, frame_id: *frame_id, reason: *reason },
            ),
            VesItem::Command(c) => write_command(buf, c),
        }
    }

    /// Moves whatever is ready from the queue into one chunk.
    fn fill(&mut self, cx: &mut TaskContext<'_>, buf: &mut BytesMut) {
        let slot = self.rx.clone();
        let mut guard = lock(&slot);
        let Some(rx) = guard.as_mut() else {
            // The session took the queue back: this channel is over.
            self.done = true;
            return;
        };
        while buf.len() < CHUNK_BYTES {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => {
                    match &item {
                        VesItem::Frame { payload, .. } => {
                            self.metrics.device_to_ves.frames.inc();
                            self.metrics.device_to_ves.bytes.inc_by(payload.len() as u64);
                            self.usage.to_ves(payload.len());
                        }
                        VesItem::Ack { .. } => self.metrics.device_to_ves.acks.inc(),
                        VesItem::Undeliverable { .. } => self.usage.undeliverable(),
                        _ => {}
                    }
                    Self::encode(&item, buf);
                }
                Poll::Ready(None) => {
                    self.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
}

impl Stream for CommandStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() < CHUNK_BYTES {
            // Reclaims the buffer in place when every chunk cut from it has been dropped;
            // allocates a new one only while one is still held.
            buf.reserve(BUFFER_BYTES);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            // The channel ends: only the farewell line is still written. Whatever is still
            // queued is bounced to its senders by the session.
            self.done = true;
            if let Some(cmd) = lock(&self.farewell).take() {
                write_command(&mut buf, &cmd);
            }
        } else {
            self.fill(cx, &mut buf);
        }
        let chunk = buf.split();
        self.buf = buf;
        if !chunk.is_empty() {
            self.inbox.made_progress();
            return Poll::Ready(Some(Ok(chunk.freeze())));
        }
        if self.done { Poll::Ready(None) } else { Poll::Pending }
    }
}

impl Drop for CommandStream {
    fn drop(&mut self) {
        self.session.do_send(ChannelClosed { epoch: self.epoch });
    }
}
