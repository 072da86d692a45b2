//! The receiving side of the links: accepts them, checks each frame's tag and delivers the
//! bundles into the node's inbox, as the pub/sub subscription does with what Redis pushes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{GOODBYE, LinkError, LinkOptions, MAX_FRAME, Opener, TAG, accept_handshake};
use crate::{ClusterError, InboxSender, NodeId};

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
    pub async fn bind(opts: &LinkOptions, me: NodeId, inbox: InboxSender) -> Result<(Self, String), ClusterError> {
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
            Serving { key: opts.key.clone(), me, inbox, open: open.clone(), handshake: opts.handshake_timeout };
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
    /// its end (or after [`DRAIN_LIMIT`]): what was in flight on them is in the inbox.
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

/// Serves one link until its sender closes it or it breaks.
async fn serve(mut stream: TcpStream, peer: std::net::SocketAddr, s: Serving, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(s.handshake, accept_handshake(&mut stream, &s.key, &s.me)).await;
    let (node, mut opener) = match handshake {
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
    let (read, mut write) = stream.into_split();
    // The goodbye is written beside the read loop, which must never be interrupted inside
    // a frame.
    let goodbye = tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = write.write_all(&[GOODBYE]).await;
        // Held until the link ends: dropping it would close this side early.
        std::future::pending::<()>().await;
    });
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    loop {
        match read_frame(&mut reader, &mut opener).await {
            Ok(Some(payload)) => {
                if !s.inbox.deliver(payload.freeze()).await {
                    break; // the node is gone
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, %node, error = %e, "link dropped");
                break;
            }
        }
    }
    goodbye.abort();
    tracing::debug!(%peer, %node, "link closed");
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

/// The next frame's payload, checked; `None` at the end of the stream between frames.
async fn read_frame(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    opener: &mut Opener,
) -> Result<Option<BytesMut>, LinkError> {
    let len = match reader.read_u32().await {
        Ok(len) => len as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len > MAX_FRAME {
        return Err(LinkError::TooLarge(len));
    }
    let mut frame = BytesMut::zeroed(len + TAG);
    reader.read_exact(&mut frame).await?;
    let tag = frame.split_off(len);
    opener.open(&frame, &tag)?;
    Ok(Some(frame))
}
