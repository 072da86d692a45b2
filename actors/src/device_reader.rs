//! The device session's read loop as a stream of frames that holds no buffer while the
//! connection is idle.
//!
//! Most device sessions are idle most of the time. `tokio_util`'s `FramedRead` keeps its
//! read buffer (`device.read_buffer_bytes`) for the life of the connection, empty or not.
//! This reader reads into a per-worker scratch buffer instead and keeps only the bytes
//! that arrived: a `FORWARD` payload is a slice of them (no further copy), and the
//! session's own buffer is released as soon as everything in it is decoded. A frame that
//! arrives in pieces is kept until it is complete.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::Stream;
use noc_protocol::device::{Frame, FrameCodec, FrameError};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::Decoder;

thread_local! {
    /// Grown to the largest read size asked for on this worker (one per process config).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Frames read from `io`, at most `read_bytes` of plaintext per read.
pub(crate) struct FrameReader<R> {
    io: R,
    codec: FrameCodec,
    /// Bytes read and not yet decoded: empty (and unallocated) between frames.
    buf: BytesMut,
    read_bytes: usize,
    done: bool,
}

impl<R> FrameReader<R> {
    /// `buf` holds bytes already read past the handshake.
    pub(crate) fn new(io: R, codec: FrameCodec, buf: BytesMut, read_bytes: usize) -> Self {
        Self { io, codec, buf, read_bytes: read_bytes.max(1), done: false }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// One read from the socket, appended to `buf`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < self.read_bytes {
                scratch.resize(self.read_bytes, 0);
            }
            let mut read = ReadBuf::new(&mut scratch[..self.read_bytes]);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    self.buf.extend_from_slice(read.filled());
                    Poll::Ready(Ok(read.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
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
            }
            match this.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
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
    async fn an_oversized_frame_is_refused_before_it_is_read() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(rx, FrameCodec::new(1024), BytesMut::new(), 512);
        tx.write_all(&[0, 0, 0x10, 0, 0x10]).await.expect("write");
        assert!(matches!(reader.next().await, Some(Err(FrameError::TooLarge { .. }))));
        assert!(reader.next().await.is_none(), "nothing after the error");
    }
}
