//! Direct links between nodes: the path of cross-node frames that skips Redis.
//!
//! Over pub/sub a frame for another node costs Redis a command, a fan-out write and two
//! more loopback system calls on the way, and that hop was the largest share of the
//! cross-node cost (docs/benchmarks.md). With links configured, each publishing thread of
//! a node (a worker) keeps one TCP connection to every node it sends to and writes its
//! bundles ([`wire::Bundle`](crate::wire::Bundle)) there; Redis keeps membership, session
//! ownership, the address book (`noc:link:<node>`) and the fallback path: a node that
//! cannot be dialled, or is leaving, is reached over pub/sub as before, whose receiver
//! count is what turns a message to a vanished node into `Returned`.
//!
//! The wire, one connection per (sending thread, receiving node), dialler to listener:
//!
//! 1. hello: `NOCLINK1`, the dialler's node id and the id it means to reach (each one
//!    length byte and the bytes), a 32-byte nonce;
//! 2. the listener answers a status byte (0: it is that node; 1: it is not, and closes),
//!    its own 32-byte nonce and a proof, HMAC-SHA256 under the cluster's link key over
//!    both ids and nonces;
//! 3. the dialler checks that proof and sends its own; the listener checks it;
//! 4. then frames, dialler to listener only: a big-endian `u32` length, a bundle, and an
//!    HMAC-SHA256 tag over the frame's sequence number and the bundle, under a key derived
//!    from the handshake (so a frame cannot be altered, replayed or moved to another link).
//!
//! The listener speaks once more: a stopping node writes one goodbye byte on each link;
//! the dialler stops using the link and closes its side, and the listener reads what was
//! in flight until that end of stream before the node unsubscribes from Redis. Messages
//! sent after that go over pub/sub and come back to their senders, as they always did.
//!
//! Frames are not encrypted: what crosses a link is what crosses Redis pub/sub, whose
//! frames are end-to-end encrypted between VES and device; keep the port on the cluster's
//! own network (the chart's NetworkPolicy admits only relay pods to it).

pub(super) mod dialer;
pub(super) mod listener;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::NodeId;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The first bytes of a link.
const MAGIC: &[u8; 8] = b"NOCLINK1";
const NONCE: usize = 32;
/// Bytes of a frame's tag.
pub(super) const TAG: usize = 32;
/// The largest frame on a link. A bundle is at most `BUNDLE_BYTES` plus one message, and a
/// message at most one relayed frame (up to 16 MiB, `device.max_frame_bytes`) and its
/// envelope; a larger one goes over pub/sub.
pub(super) const MAX_FRAME: usize = 32 << 20;
/// What a stopping listener writes on each link.
pub(super) const GOODBYE: u8 = 0x47;
/// Status byte of the listener's answer.
const STATUS_OK: u8 = 0;
const STATUS_WRONG_NODE: u8 = 1;
/// Fewest bytes of a link key (the key is the cluster's only credential on the links).
pub const MIN_KEY_BYTES: usize = 32;

/// Settings of the links; none means every cross-node message goes over pub/sub.
#[derive(Clone)]
pub struct LinkOptions {
    /// Where this node accepts links.
    pub listen: SocketAddr,
    /// The `host:port` other nodes dial to reach this node (its pod IP in Kubernetes);
    /// none: the address the listener is bound to (which must then not be a wildcard).
    pub advertise: Option<String>,
    /// The secret every node of the cluster shares; at least [`MIN_KEY_BYTES`].
    pub key: Arc<[u8]>,
    /// Bound of a dial and of a handshake.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for LinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkOptions")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("key", &"<masked>")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// The Redis key holding `node`'s link address, with the node's lease as its lifetime.
pub(super) fn address_key(node: &NodeId) -> String {
    format!("noc:link:{node}")
}

/// Why a link could not be set up or broke.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a link hello")]
    NotALink,
    #[error("the address belongs to another node now")]
    WrongNode,
    #[error("the peer's proof does not match the link key")]
    BadProof,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("frame tag does not match")]
    BadTag,
    #[error("node id longer than 255 bytes")]
    LongNodeId,
    #[error("dial or handshake timed out")]
    Timeout,
    #[error("the node published no link address")]
    NoAddress,
    #[error("reading the link address: {0}")]
    Redis(String),
}

/// What both ends of one link's handshake saw: the HMAC input of the proofs and keys.
struct Transcript(Vec<u8>);

impl Transcript {
    fn new(dialler: &[u8], listener: &[u8], dialler_nonce: &[u8; NONCE], listener_nonce: &[u8; NONCE]) -> Self {
        let mut t = Vec::with_capacity(2 + dialler.len() + listener.len() + 2 * NONCE);
        for id in [dialler, listener] {
            t.push(id.len() as u8); // both checked to fit when read or sent
            t.extend_from_slice(id);
        }
        t.extend_from_slice(dialler_nonce);
        t.extend_from_slice(listener_nonce);
        Self(t)
    }

    /// HMAC under the link key of a label and the transcript.
    fn mac(&self, key: &[u8], label: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(&self.0);
        mac
    }

    fn proof(&self, key: &[u8], label: &[u8]) -> [u8; 32] {
        self.mac(key, label).finalize().into_bytes().into()
    }

    fn frame_key(&self, key: &[u8]) -> HmacSha256 {
        let derived = self.proof(key, b"noc-link frames");
        <HmacSha256 as KeyInit>::new_from_slice(&derived).expect("HMAC takes any key length")
    }
}

/// Tags frames: the keyed MAC state is built once and cloned per frame.
pub(super) struct Sealer {
    mac: HmacSha256,
    seq: u64,
}

impl Sealer {
    /// Appends `payload` as one frame to `out`.
    pub fn seal(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let mut mac = self.mac.clone();
        mac.update(&self.seq.to_be_bytes());
        mac.update(payload);
        self.seq += 1;
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(&mac.finalize().into_bytes());
    }
}

/// Checks frames' tags, in order.
pub(super) struct Opener {
    mac: HmacSha256,
    seq: u64,
}

impl Opener {
    pub fn open(&mut self, payload: &[u8], tag: &[u8]) -> Result<(), LinkError> {
        let mut mac = self.mac.clone();
        mac.update(&self.seq.to_be_bytes());
        mac.update(payload);
        mac.verify_slice(tag).map_err(|_| LinkError::BadTag)?;
        self.seq += 1;
        Ok(())
    }
}

fn id_len(id: &NodeId) -> Result<u8, LinkError> {
    u8::try_from(id.as_str().len()).map_err(|_| LinkError::LongNodeId)
}

async fn read_id<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, LinkError> {
    let len = s.read_u8().await?;
    let mut id = vec![0; usize::from(len)];
    s.read_exact(&mut id).await?;
    Ok(id)
}

/// The dialler's side of the handshake with `target`: a sealer for the frames.
pub(super) async fn dial_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &[u8],
    me: &NodeId,
    target: &NodeId,
) -> Result<Sealer, LinkError> {
    let nonce: [u8; NONCE] = noc_protocol::secrets::random_bytes();
    let mut hello = Vec::with_capacity(MAGIC.len() + 2 + me.as_str().len() + target.as_str().len() + NONCE);
    hello.extend_from_slice(MAGIC);
    for id in [me, target] {
        hello.push(id_len(id)?);
        hello.extend_from_slice(id.as_str().as_bytes());
    }
    hello.extend_from_slice(&nonce);
    s.write_all(&hello).await?;
    s.flush().await?;
    if s.read_u8().await? != STATUS_OK {
        return Err(LinkError::WrongNode);
    }
    let mut theirs = [0u8; NONCE];
    s.read_exact(&mut theirs).await?;
    let mut proof = [0u8; 32];
    s.read_exact(&mut proof).await?;
    let t = Transcript::new(me.as_str().as_bytes(), target.as_str().as_bytes(), &nonce, &theirs);
    t.mac(key, b"noc-link listener").verify_slice(&proof).map_err(|_| LinkError::BadProof)?;
    s.write_all(&t.proof(key, b"noc-link dialler")).await?;
    s.flush().await?;
    Ok(Sealer { mac: t.frame_key(key), seq: 0 })
}

/// The listener's side: the dialling node and an opener for its frames.
pub(super) async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &[u8],
    me: &NodeId,
) -> Result<(NodeId, Opener), LinkError> {
    let mut magic = [0u8; 8];
    s.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        return Err(LinkError::NotALink);
    }
    let dialler = read_id(s).await?;
    let target = read_id(s).await?;
    let mut theirs = [0u8; NONCE];
    s.read_exact(&mut theirs).await?;
    if target != me.as_str().as_bytes() {
        s.write_all(&[STATUS_WRONG_NODE]).await?;
        return Err(LinkError::WrongNode);
    }
    let dialler = String::from_utf8(dialler).map_err(|_| LinkError::NotALink)?;
    let nonce: [u8; NONCE] = noc_protocol::secrets::random_bytes();
    let t = Transcript::new(dialler.as_bytes(), &target, &theirs, &nonce);
    let mut answer = Vec::with_capacity(1 + NONCE + 32);
    answer.push(STATUS_OK);
    answer.extend_from_slice(&nonce);
    answer.extend_from_slice(&t.proof(key, b"noc-link listener"));
    s.write_all(&answer).await?;
    s.flush().await?;
    let mut proof = [0u8; 32];
    s.read_exact(&mut proof).await?;
    t.mac(key, b"noc-link dialler").verify_slice(&proof).map_err(|_| LinkError::BadProof)?;
    Ok((NodeId::new(dialler), Opener { mac: t.frame_key(key), seq: 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    async fn handshake(
        dial_key: &'static [u8],
        target: &'static str,
    ) -> (Result<Sealer, LinkError>, Result<(NodeId, Opener), LinkError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let dial = tokio::spawn(async move {
            dial_handshake(&mut a, dial_key, &NodeId::new("node-a"), &NodeId::new(target)).await
        });
        let accepted = accept_handshake(&mut b, KEY, &NodeId::new("node-b")).await;
        drop(b);
        (dial.await.expect("dialler"), accepted)
    }

    #[tokio::test]
    async fn frames_sealed_by_the_dialler_open_in_order_and_nothing_else_does() {
        let (sealer, accepted) = handshake(KEY, "node-b").await;
        let (mut sealer, (peer, mut opener)) = (sealer.expect("dialled"), accepted.expect("accepted"));
        assert_eq!(peer, NodeId::new("node-a"));
        let mut wire = Vec::new();
        sealer.seal(b"first", &mut wire);
        sealer.seal(b"second", &mut wire);
        let frame = |at: usize, len: usize| (&wire[at + 4..at + 4 + len], &wire[at + 4 + len..at + 4 + len + TAG]);
        let (first, second) = (frame(0, 5), frame(4 + 5 + TAG, 6));
        assert_eq!(u32::from_be_bytes(wire[..4].try_into().expect("4 bytes")), 5);
        assert!(matches!(opener.open(second.0, second.1), Err(LinkError::BadTag)), "out of order");
        opener.open(first.0, first.1).expect("first");
        assert!(matches!(opener.open(first.0, first.1), Err(LinkError::BadTag)), "replayed");
        assert!(matches!(opener.open(b"secont", second.1), Err(LinkError::BadTag)), "altered");
        opener.open(second.0, second.1).expect("second");
    }

    #[tokio::test]
    async fn a_wrong_key_fails_on_both_sides_and_a_wrong_node_is_refused() {
        let (sealer, accepted) = handshake(b"another key, also thirty-two bytes", "node-b").await;
        assert!(matches!(sealer, Err(LinkError::BadProof)));
        assert!(accepted.is_err(), "the listener never sees a valid proof");
        let (sealer, accepted) = handshake(KEY, "node-c").await;
        assert!(matches!(sealer, Err(LinkError::WrongNode)));
        assert!(matches!(accepted, Err(LinkError::WrongNode)));
    }

    #[tokio::test]
    async fn anything_but_a_hello_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        assert!(matches!(accept_handshake(&mut b, KEY, &NodeId::new("node-b")).await, Err(LinkError::NotALink)));
    }
}
