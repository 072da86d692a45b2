//! The receiving side of the links: accepts them, checks each frame's tag and hands the
//! messages to the node's router on the worker that holds their sessions (or, before the
//! router took them, into the node's inbox, as the pub/sub subscription does with what
//! Redis pushes).
//!
//! A link is one stream read and written by one task, with no split halves: its reading
//! can then move, between two reads, to another thread. It starts on the thread that
//! accepted it and moves once, when its first frame shows whose sessions it carries
//! ([`LinkSink::run_near`]).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::{GOODBYE, LinkError, LinkOptions, MAX_FRAME, Opener, TAG, accept_handshake};
use crate::{BusMessage, ClusterError, InboxSender, LinkSink, NodeId, wire};

/// Most links a node holds open: a node has one per (sending thread, sending node), so
/// this is far above any real cluster and only bounds what a stray client can open.
const MAX_LINKS: usize = 4096;
/// How long a stopping node waits for the other nodes to close their links after its
/// goodbye (they close at once; a node that does not is cut off).
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// A node's link listener: its accept loop and the links it serves run on the runtime
/// that bound it.
pub(crate) struct LinkListener {
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    /// Links past their handshake, open now.
    open: Arc<AtomicUsize>,
}

impl LinkListener {
    /// Binds `opts.listen` and starts accepting links for `me`; returns it with the
    /// address other nodes are to dial.
    pub async fn bind(
        opts: &LinkOptions,
        me: NodeId,
        inbox: InboxSender,
        sink: Arc<OnceLock<Arc<dyn LinkSink>>>,
    ) -> Result<(Self, String), ClusterError> {
        let bind_failed =
            |e: std::io::Error| ClusterError::Unavailable(format!("binding the link listener on {}: {e}", opts.listen));
        let listener = TcpListener::bind(opts.listen).await.map_err(bind_failed)?;
        let advertise = match &opts.advertise {
            Some(advertise) => advertise.clone(),
            None => listener.local_addr().map_err(bind_failed)?.to_string(),
        };
        tracing::info!(listen = %opts.listen, %advertise, "accepting links from other nodes");
        let (stop, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let serving =
            Serving { key: opts.key.clone(), me, inbox, sink, open: open.clone(), handshake: opts.handshake_timeout };
        tokio::spawn(async move {
            accept_loop(listener, serving, stop_rx).await;
            stopped_tx.send_replace(true);
        });
        Ok((Self { stop, stopped, open }, advertise))
    }

    /// Links open now (past their handshake).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops accepting, says goodbye on every link and returns once each one was read to
    /// its end (or after [`DRAIN_LIMIT`]): what was in flight on them was handed over.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }
}

/// What every served link shares.
#[derive(Clone)]
struct Serving {
    key: Arc<[u8]>,
    me: NodeId,
    inbox: InboxSender,
    sink: Arc<OnceLock<Arc<dyn LinkSink>>>,
    open: Arc<AtomicUsize>,
    handshake: Duration,
}

async fn accept_loop(listener: TcpListener, serving: Serving, stop: watch::Receiver<bool>) {
    let mut links = JoinSet::new();
    let mut stopping = stop.clone();
    while !*stopping.borrow_and_update() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if links.len() < MAX_LINKS => {
                    links.spawn(serve(stream, peer, serving.clone(), stop.clone()));
                }
                Ok((_, peer)) => tracing::warn!(%peer, "link refused: too many open"),
                Err(e) => {
                    // Out of descriptors, most likely: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a link failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = links.join_next(), if !links.is_empty() => {}
            // Changed (to stopping) or gone: the loop's condition decides.
            changed = stopping.changed() => if changed.is_err() { break },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async { while links.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(links = links.len(), "links not closed by their senders in time: cut off");
    }
}

/// Serves one link until its sender closes it or it breaks, wherever its reading runs.
async fn serve(mut stream: TcpStream, peer: std::net::SocketAddr, s: Serving, stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(s.handshake, accept_handshake(&mut stream, &s.key, &s.me)).await;
    let (node, opener) = match handshake {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "link refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "link refused: handshake timed out");
            return;
        }
    };
    tracing::debug!(%peer, %node, "link up");
    let _open = Counted::new(&s.open);
    let mut link = Link { stream, buf: BytesMut::new(), opener, said_goodbye: false, peer, node };
    // Dropped when this task is (a stopping node cutting its links off): the reading ends
    // wherever it runs.
    let (_cut, cut) = oneshot::channel::<()>();
    let moved = match read(&mut link, &s, stop.clone(), cut, false).await {
        Ok(Some(moved)) => moved,
        Ok(None) => return link.closed(),
        Err(e) => return link.broken(&e),
    };
    // The first frame's first message says whose sessions this link carries: read it on
    // their worker from now on. The frame itself was handed over here, in order.
    let Some(sink) = s.sink.get().cloned() else { return }; // only a sink asks to move
    let (done_tx, done) = oneshot::channel::<()>();
    let Link { stream, buf, opener, said_goodbye, peer, node } = link;
    let task: crate::LinkTask = match stream.into_std() {
        Ok(std) => Box::pin(async move {
            let _done = done_tx;
            let stream = match TcpStream::from_std(std) {
                Ok(stream) => stream,
                Err(e) => return tracing::warn!(%peer, %node, error = %e, "link dropped: moving it failed"),
            };
            let mut link = Link { stream, buf, opener, said_goodbye, peer, node };
            match read(&mut link, &s, stop, moved.cut, true).await {
                Ok(_) => link.closed(),
                Err(e) => link.broken(&e),
            }
        }),
        Err(e) => return tracing::warn!(%peer, %node, error = %e, "link dropped: moving it failed"),
    };
    if let Err(here) = sink.run_near(&moved.first, task) {
        here.await;
        return;
    }
    // Held here until the link ends, so that the listener's drain waits for it.
    let _ = done.await;
}

/// A link past its handshake, read and written by one task.
struct Link {
    stream: TcpStream,
    /// Bytes read and not yet taken as frames.
    buf: BytesMut,
    opener: Opener,
    /// Whether this side wrote its goodbye (a stopping node writes it once).
    said_goodbye: bool,
    peer: std::net::SocketAddr,
    node: NodeId,
}

impl Link {
    fn closed(&self) {
        tracing::debug!(peer = %self.peer, node = %self.node, "link closed");
    }

    fn broken(&self, e: &LinkError) {
        tracing::warn!(peer = %self.peer, node = %self.node, error = %e, "link dropped");
    }

    /// The next complete frame's payload, checked; `None` until one is complete.
    fn next_frame(&mut self) -> Result<Option<Bytes>, LinkError> {
        let Some(header) = self.buf.get(..4) else { return Ok(None) };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME {
            return Err(LinkError::TooLarge(len));
        }
        let whole = 4 + len + TAG;
        if self.buf.len() < whole {
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let mut frame = self.buf.split_to(len + TAG);
        let tag = frame.split_off(len);
        self.opener.open(&frame, &tag)?;
        Ok(Some(frame.freeze()))
    }
}

/// Where a link's reading moves, asked for by [`read`] after its first frame.
struct Moved {
    /// The first message the link carried: its session's worker reads the link.
    first: BusMessage,
    cut: oneshot::Receiver<()>,
}

/// Resolves once the node stops (the watch's guard is not held across awaits).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Most bytes a link reads at once.
const READ_BYTES: usize = 64 * 1024;

/// Reads `link`'s frames and hands their messages over until the link ends (`None`), or,
/// unless `placed`, until the router took its first frame's messages (`Some`: the caller
/// moves the reading to their sessions' worker). Writes the goodbye once `stop` is set,
/// and keeps reading to the end; returns at once when `cut`.
async fn read(
    link: &mut Link,
    s: &Serving,
    mut stop: watch::Receiver<bool>,
    mut cut: oneshot::Receiver<()>,
    placed: bool,
) -> Result<Option<Moved>, LinkError> {
    loop {
        while let Some(payload) = link.next_frame()? {
            match s.sink.get() {
                Some(sink) => {
                    let mut first = None;
                    for msg in wire::decode_each(payload) {
                        match msg {
                            Ok(m) => {
                                // Messages for a session say where; others (a close, a
                                // directory update) leave the choice to a later frame.
                                let for_a_session = matches!(m, BusMessage::ToVes { .. } | BusMessage::ToDevice { .. });
                                if first.is_none() && !placed && for_a_session {
                                    first = Some(m.clone());
                                }
                                sink.deliver(m);
                            }
                            Err(e) => tracing::warn!(error = %e, "undecodable bus message dropped"),
                        }
                    }
                    if let Some(first) = first {
                        return Ok(Some(Moved { first, cut }));
                    }
                }
                None => {
                    if !s.inbox.deliver(payload).await {
                        return Ok(None); // the node is gone
                    }
                }
            }
        }
        if link.buf.capacity() - link.buf.len() < READ_BYTES / 4 {
            link.buf.reserve(READ_BYTES);
        }
        tokio::select! {
            read = link.stream.read_buf(&mut link.buf) => {
                if read? == 0 {
                    return if link.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                    };
                }
            }
            () = stopping(&mut stop), if !link.said_goodbye => {
                link.stream.write_all(&[GOODBYE]).await?;
                link.said_goodbye = true;
            }
            _ = &mut cut => return Ok(None),
        }
    }
}

/// One open link in the listener's count, for as long as it lives (also when a stopping
/// node cuts its link off).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
