//! The sending side of the links: each publish queue's connections to the nodes it sends
//! to, dialled on first use and used until the peer says goodbye or the link breaks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{LinkError, LinkOptions, MAX_FRAME, Sealer, address_key, dial_handshake};
use crate::NodeId;
use crate::redis_backend::conn::Conn;

/// Wait after a failed dial before the next one, doubled on each failure up to the max.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Peers remembered per queue before those without a live link are forgotten.
const MAX_PEERS: usize = 64;
/// Longest a round's write may take, as long as a Redis command may (the default
/// `RedisOptions::command_timeout`): a node that stops reading (hung, or its inbox full
/// for that long) must not hold this queue's messages for every other node. The link is
/// dropped and what it carried returned.
const WRITE_LIMIT: Duration = Duration::from_secs(2);

/// An open link to one node.
pub(crate) struct Link {
    /// Taken (and so closed) by the watcher when the peer says goodbye or goes away.
    write: Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>,
    sealer: Sealer,
    /// The frames of one round, reused.
    buf: Vec<u8>,
    watcher: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Why a round's bundles did not go over a link.
pub(crate) enum SendError {
    /// The link was closed before anything was written: the bundles can go another way.
    Closed,
    /// Writing failed: some of the bundles may have arrived.
    Broken(std::io::Error),
    /// A bundle is larger than a link carries; nothing was written and the link is fine.
    TooLarge,
}

impl Link {
    /// Writes `bundles` as frames, in one write.
    pub async fn send(&mut self, bundles: &[Bytes]) -> Result<(), SendError> {
        if bundles.iter().any(|b| b.len() > MAX_FRAME) {
            return Err(SendError::TooLarge);
        }
        self.buf.clear();
        for bundle in bundles {
            self.sealer.seal(bundle, &mut self.buf);
        }
        let mut write = self.write.lock().await;
        let Some(stream) = write.as_mut() else { return Err(SendError::Closed) };
        match tokio::time::timeout(WRITE_LIMIT, stream.write_all(&self.buf)).await {
            Ok(written) => written.map_err(SendError::Broken),
            Err(_) => Err(SendError::Broken(std::io::ErrorKind::TimedOut.into())),
        }
    }

    fn is_open(&self) -> bool {
        self.write.try_lock().map_or(true, |w| w.is_some())
    }
}

/// Dials `node`: its address from Redis, a connection and the handshake, bounded.
async fn dial(opts: &LinkOptions, me: &NodeId, conn: &mut Conn, node: &NodeId) -> Result<Link, LinkError> {
    let addr: Option<String> = conn.get(address_key(node)).await.map_err(|e| LinkError::Redis(e.to_string()))?;
    let addr = addr.ok_or(LinkError::NoAddress)?;
    connect(opts, me, node, &addr).await
}

/// Connects to `node` at `addr` and shakes hands, bounded.
async fn connect(opts: &LinkOptions, me: &NodeId, node: &NodeId, addr: &str) -> Result<Link, LinkError> {
    let connected = tokio::time::timeout(opts.handshake_timeout, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let sealer = dial_handshake(&mut stream, &opts.key, me, node).await?;
        Ok::<_, LinkError>((stream, sealer))
    })
    .await;
    let (stream, sealer) = connected.map_err(|_| LinkError::Timeout)??;
    let (mut read, write) = stream.into_split();
    let write = Arc::new(tokio::sync::Mutex::new(Some(write)));
    let closing = write.clone();
    // The listener writes nothing but its goodbye; that, its end of stream or an error
    // closes this side, so that the listener sees the end of what was sent.
    let watcher = tokio::spawn(async move {
        let _ = read.read_u8().await;
        if let Some(mut stream) = closing.lock().await.take() {
            let _ = stream.shutdown().await;
        }
    });
    tracing::debug!(%node, %addr, "link up");
    Ok(Link { write, sealer, buf: Vec::new(), watcher })
}

/// What a queue does for one node in a round.
pub(crate) enum Route {
    /// Send over this link.
    Link(Link),
    /// Dial first (after `backoff` of waiting, if this is a retry).
    Dial(Duration),
    /// Over pub/sub: the last dial failed recently.
    PubSub,
}

enum Peer {
    Up(Link),
    Down { retry_at: Instant, backoff: Duration },
}

/// A publish queue's links.
pub(crate) struct Links {
    opts: Arc<LinkOptions>,
    me: NodeId,
    peers: hashbrown::HashMap<NodeId, Peer>,
}

impl Links {
    pub fn new(opts: Arc<LinkOptions>, me: NodeId) -> Self {
        Self { opts, me, peers: hashbrown::HashMap::new() }
    }

    /// How this round reaches `node`; a link taken here comes back with [`Links::settle`].
    pub fn route(&mut self, node: &NodeId) -> Route {
        match self.peers.remove(node) {
            Some(Peer::Up(link)) => Route::Link(link),
            Some(Peer::Down { retry_at, backoff }) if Instant::now() < retry_at => {
                self.peers.insert(node.clone(), Peer::Down { retry_at, backoff });
                Route::PubSub
            }
            Some(Peer::Down { backoff, .. }) => Route::Dial(backoff),
            None => Route::Dial(Duration::ZERO),
        }
    }

    /// A dialler for a route's future (which must not borrow the queue).
    pub fn dialler(&self) -> Dialler {
        Dialler { opts: self.opts.clone(), me: self.me.clone() }
    }

    /// Records how a round went for `node`.
    pub fn settle(&mut self, node: NodeId, outcome: Settled) {
        match outcome {
            Settled::Up(link) if link.is_open() => {
                self.peers.insert(node, Peer::Up(link));
            }
            Settled::Up(_) => {} // closed meanwhile: dialled again next time
            Settled::Failed(backoff) => {
                let backoff = (backoff * 2).clamp(FIRST_RETRY, MAX_RETRY);
                self.peers.insert(node, Peer::Down { retry_at: Instant::now() + backoff, backoff });
            }
            Settled::Untouched => {}
        }
        if self.peers.len() > MAX_PEERS {
            self.peers.retain(|_, peer| matches!(peer, Peer::Up(link) if link.is_open()));
        }
    }
}

/// How a round left a node's link.
pub(crate) enum Settled {
    Up(Link),
    /// Dialling failed after this backoff (zero: the first dial).
    Failed(Duration),
    Untouched,
}

/// Dials for one round.
pub(crate) struct Dialler {
    opts: Arc<LinkOptions>,
    me: NodeId,
}

impl Dialler {
    pub async fn dial(&self, conn: &mut Conn, node: &NodeId) -> Result<Link, LinkError> {
        dial(&self.opts, &self.me, conn, node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LinkOptions {
        LinkOptions {
            listen: "127.0.0.1:0".parse().expect("address"),
            advertise: None,
            key: b"0123456789abcdef0123456789abcdef".as_slice().into(),
            handshake_timeout: Duration::from_secs(1),
        }
    }

    fn links() -> Links {
        Links::new(Arc::new(opts()), NodeId::new("me"))
    }

    /// A node that accepts a link and then reads nothing does not hold the sender for
    /// longer than the write limit: the write fails, and the link is given up.
    #[tokio::test]
    async fn a_peer_that_stops_reading_breaks_the_link_after_the_write_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let peer = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let accepted = super::super::accept_handshake(&mut stream, &opts().key, &NodeId::new("b")).await;
            assert!(accepted.is_ok(), "handshake");
            tokio::time::sleep(Duration::from_secs(30)).await; // never reads
            drop(stream);
        });
        let mut link = connect(&opts(), &NodeId::new("me"), &NodeId::new("b"), &addr).await.expect("linked");
        let started = Instant::now();
        let big = Bytes::from(vec![0u8; 16 << 20]); // far more than the sockets' buffers
        let sent = link.send(&[big]).await;
        assert!(matches!(sent, Err(SendError::Broken(ref e)) if e.kind() == std::io::ErrorKind::TimedOut));
        let waited = started.elapsed();
        assert!(waited >= WRITE_LIMIT && waited < WRITE_LIMIT * 3, "gave up after {waited:?}");
        peer.abort();
    }

    fn is_dial(route: &Route, after: Duration) -> bool {
        matches!(route, Route::Dial(b) if *b == after)
    }

    /// A node that cannot be dialled is reached over pub/sub and dialled again after 1 s,
    /// then after twice as long each time, at most 30 s.
    #[tokio::test(start_paused = true)]
    async fn a_failed_dial_is_retried_later_and_later() {
        let mut links = links();
        let b = NodeId::new("b");
        assert!(is_dial(&links.route(&b), Duration::ZERO), "first contact dials");
        links.settle(b.clone(), Settled::Failed(Duration::ZERO));
        let mut waited = Vec::new();
        for _ in 0..7 {
            let mut wait = Duration::ZERO;
            let backoff = loop {
                match links.route(&b) {
                    Route::PubSub => {
                        tokio::time::advance(Duration::from_millis(500)).await;
                        wait += Duration::from_millis(500);
                    }
                    Route::Dial(backoff) => break backoff,
                    Route::Link(_) => panic!("no link was made"),
                }
            };
            assert_eq!(backoff, wait, "the backoff is the wait");
            waited.push(wait.as_secs());
            links.settle(b.clone(), Settled::Failed(backoff));
        }
        assert_eq!(waited, [1, 2, 4, 8, 16, 30, 30]);
        // Another node is not held back by it.
        assert!(is_dial(&links.route(&NodeId::new("c")), Duration::ZERO));
    }
}
