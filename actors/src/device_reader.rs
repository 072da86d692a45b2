//! The device session's read loop as a stream of frames that holds no buffer while the
//! connection is idle and allocates nothing per read.
//!
//! Most device sessions are idle most of the time. `tokio_util`'s `FramedRead` keeps its
//! read buffer (`device.read_buffer_bytes`) for the life of the connection, empty or not.
//! This reader reads into a buffer shared by the worker's sessions (its arena) instead and
//! splits off the bytes that arrived: a `FORWARD` payload is a slice of them (no copy), and
//! the session's share is released as soon as everything in it is decoded. The arena
//! rotates through a few blocks; when a block's turn comes again, every slice cut from it
//! (payloads long since written on to their VES) is normally gone and the block is reused
//! in place, so the steady state allocates nothing per read. A block still held is left
//! to its holders and a new one allocated. A frame that arrives in pieces is copied out of
//! the arena while the session waits for the rest, so an idle session never pins a block.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use futures_util::Stream;
use noc_protocol::device::{Frame, FrameCodec, FrameError};
use tokio::io::AsyncRead;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

/// Size of an arena block (at least one read's worth).
const ARENA_BYTES: usize = 64 * 1024;
/// Blocks an arena rotates through.
const ARENA_BLOCKS: usize = 4;

thread_local! {
    static ARENA: RefCell<Arena> = const { RefCell::new(Arena { blocks: VecDeque::new() }) };
}

/// A worker's read buffers. Each block is empty, with its unused room as its capacity;
/// the front one is being read into.
struct Arena {
    blocks: VecDeque<BytesMut>,
}

impl Arena {
    /// The block to read up to `read_bytes` into.
    fn room(&mut self, read_bytes: usize) -> &mut BytesMut {
        let block_bytes = ARENA_BYTES.max(read_bytes);
        if self.blocks.front().is_none_or(|b| b.capacity() < read_bytes) {
            if self.blocks.len() < ARENA_BLOCKS {
                self.blocks.push_front(BytesMut::with_capacity(block_bytes));
            } else {
                self.blocks.rotate_left(1);
                if let Some(block) = self.blocks.front_mut()
                    && !block.try_reclaim(block_bytes)
                {
                    *block = BytesMut::with_capacity(block_bytes);
                }
            }
        }
        // There is a front block: one was kept or just made.
        &mut self.blocks[0]
    }
}

/// Frames read from `io`, at most `read_bytes` of plaintext per read.
pub struct FrameReader<R> {
    io: R,
    codec: FrameCodec,
    /// Bytes read and not yet decoded: empty (and unallocated) between frames.
    buf: BytesMut,
    /// Whether `buf` is a slice of the worker's arena (rather than a buffer of its own).
    in_arena: bool,
    read_bytes: usize,
    done: bool,
}

impl<R> FrameReader<R> {
    /// `buf` holds bytes already read past the handshake.
    pub fn new(io: R, codec: FrameCodec, buf: BytesMut, read_bytes: usize) -> Self {
        Self { io, codec, buf, in_arena: false, read_bytes: read_bytes.max(1), done: false }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// One read from the socket, appended to `buf`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        ARENA.with_borrow_mut(|arena| {
            let arena = arena.room(self.read_bytes);
            let mut room = (&mut *arena).limit(self.read_bytes);
            let n = match poll_read_buf(Pin::new(&mut self.io), cx, &mut room) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let got = arena.split();
            if self.buf.is_empty() {
                self.buf = got;
                self.in_arena = true;
            } else {
                // O(1) when the two are adjacent in the block; a copy otherwise.
                self.buf.unsplit(got);
            }
            Poll::Ready(Ok(n))
        })
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Frame, FrameError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.buf.is_empty() {
                // Give the memory back (or drop this session's share of it, while payloads
                // sliced from it are still on their way).
                this.buf = BytesMut::new();
                this.in_arena = false;
            }
            match this.poll_fill(cx) {
                Poll::Pending => {
                    if this.in_arena && !this.buf.is_empty() {
                        // Part of a frame: keep it apart from the arena until the rest comes.
                        this.buf = BytesMut::from(&this.buf[..]);
                        this.in_arena = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(Ok(_)) => {
                    this.done = true;
                    if this.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed inside a frame");
                    return Poll::Ready(Some(Err(FrameError::Io(e))));
                }
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(FrameError::Io(e))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for f in frames {
            f.encode(&mut b);
        }
        b.to_vec()
    }

    #[tokio::test]
    async fn frames_split_anywhere_arrive_whole_and_an_idle_reader_holds_no_buffer() {
        let frames = vec![
            Frame::Heartbeat,
            Frame::Ack { frame_id: 7 },
            Frame::Forward {
                kind: noc_protocol::device::ForwardKind::Data,
                frame_id: 9,
                payload: bytes::Bytes::from(vec![5u8; 3000]),
            },
        ];
        let wire = encoded(&frames);
        let (mut tx, rx) = tokio::io::duplex(64);
        // Bytes read with the handshake come first; then the rest in small pieces.
        let mut reader = FrameReader::new(rx, FrameCodec::new(65536), BytesMut::from(&wire[..3]), 100);
        let writer = tokio::spawn(async move {
            for piece in wire[3..].chunks(7) {
                tx.write_all(piece).await.expect("write");
            }
            tx
        });
        for expected in &frames {
            assert_eq!(&reader.next().await.expect("a frame").expect("valid"), expected);
        }
        let mut tx = writer.await.expect("writer");
        assert_eq!(reader.buf.capacity(), 0, "nothing kept once every frame is decoded");
        // A frame cut off by the end of the stream is an I/O error; a clean end is the end.
        tx.write_all(&encoded(&[Frame::Heartbeat])[..3]).await.expect("write");
        drop(tx);
        assert!(matches!(reader.next().await, Some(Err(FrameError::Io(_)))));
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn a_frame_still_arriving_is_kept_apart_from_the_arena() {
        let wire = encoded(&[Frame::Ack { frame_id: 1 }, Frame::Ack { frame_id: 2 }]);
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(rx, FrameCodec::new(1024), BytesMut::new(), 100);
        tx.write_all(&wire[..wire.len() - 2]).await.expect("write");
        assert_eq!(reader.next().await.expect("a frame").expect("valid"), Frame::Ack { frame_id: 1 });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(reader.poll_next_unpin(&mut cx).is_pending(), "the second frame is not complete");
        assert!(!reader.in_arena, "an idle session's piece of a frame pins no arena block");
        assert_eq!(reader.buf.capacity(), reader.buf.len(), "a buffer of exactly the piece");
        tx.write_all(&wire[wire.len() - 2..]).await.expect("write");
        assert_eq!(reader.next().await.expect("a frame").expect("valid"), Frame::Ack { frame_id: 2 });
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_it_is_read() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(rx, FrameCodec::new(1024), BytesMut::new(), 512);
        tx.write_all(&[0, 0, 0x10, 0, 0x10]).await.expect("write");
        assert!(matches!(reader.next().await, Some(Err(FrameError::TooLarge { .. }))));
        assert!(reader.next().await.is_none(), "nothing after the error");
    }
}
