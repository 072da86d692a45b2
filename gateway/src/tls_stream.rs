//! A server-side TLS stream that holds no buffers while its connection is idle.
//!
//! Why not `tokio-rustls`: rustls's buffered connection keeps a receive buffer of at least
//! 4 KiB for the life of every connection (it is grown for the first handshake record and
//! never given back). With hundreds of thousands of idle device sessions per node that one
//! buffer was more than a third of the relay's memory per session (docs/benchmarks.md).
//! This stream drives rustls's *unbuffered* API instead:
//!
//! * ciphertext is read into a per-thread scratch buffer and decrypted there; only the
//!   bytes of an incomplete record are copied into the connection's own buffer, which is
//!   freed again as soon as the record is complete;
//! * application data is encrypted into a per-thread scratch buffer and written straight to
//!   the socket; only what the socket does not take at once is kept, until it is flushed;
//! * decrypted plaintext goes straight into the reader's buffer; only what does not fit is
//!   kept.
//!
//! Once a TLS 1.3 handshake is done (and the config allows secret extraction, as both
//! listeners' configs do), rustls hands the connection's keys over and the records are protected
//! by [`crate::tls_record_layer`]: an idle session then costs two AEAD keys and what rustls
//! keeps for key updates, not rustls's whole connection state. TLS 1.2 connections stay
//! with rustls for their whole life.
//!
//! The stream implements `AsyncRead + AsyncWrite` and can be split with `tokio::io::split`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic};
use rustls::{ProtocolVersion, ServerConfig, unbuffered::InsufficientSizeError};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls_record_layer::{ALERT_CLOSE_NOTIFY, RecordLayer};

/// Largest TLS record on the wire (16 KiB of plaintext plus the largest overhead rustls
/// produces), and so the least a read must offer to make progress on any record.
const MAX_RECORD_BYTES: usize = 16 * 1024 + 2048;
/// Plaintext taken by one `poll_write`: a few records, so that the ciphertext fits the
/// write scratch buffer.
const MAX_PLAINTEXT_PER_WRITE: usize = 4 * 16 * 1024;
/// Size of each per-thread scratch buffer.
const SCRATCH_BYTES: usize = MAX_PLAINTEXT_PER_WRITE + 4 * 2048;
const _: () = assert!(RecordLayer::sealed_len(MAX_PLAINTEXT_PER_WRITE) <= SCRATCH_BYTES);
/// Most ciphertext a connection may hold while a record (or, during the handshake, a
/// flight of handshake messages up to rustls's 64 KiB limit) is incomplete.
const MAX_PENDING_CIPHERTEXT_BYTES: usize = 64 * 1024 + MAX_RECORD_BYTES;

thread_local! {
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
    static WRITE_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O during the TLS handshake: {0}")]
    Io(io::Error),
    #[error("peer closed the connection during the TLS handshake")]
    Closed,
}

impl From<io::Error> for AcceptError {
    /// TLS errors travel inside `io::Error`s through the stream's code: take them out again.
    fn from(e: io::Error) -> Self {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => AcceptError::Tls(tls.clone()),
            None => AcceptError::Io(e),
        }
    }
}

/// A completed handshake: the stream, and the client's certificate if it presented one.
pub struct Accepted {
    pub stream: ServerTlsStream,
    /// The client's end-entity certificate, when it presented one the verifier accepted.
    pub peer_certificate: Option<CertificateDer<'static>>,
}

/// An established server-side TLS connection over TCP.
pub struct ServerTlsStream {
    tcp: TcpStream,
    tls: Tls,
}

/// An established connection taken off its worker's reactor, to be continued on another
/// worker ([`ServerTlsStream::detach`], [`DetachedTlsStream::attach`]).
pub struct DetachedTlsStream {
    tcp: std::net::TcpStream,
    tls: Tls,
}

impl ServerTlsStream {
    /// Deregisters the socket from this worker's reactor, keeping the TLS state.
    pub fn detach(self) -> io::Result<DetachedTlsStream> {
        Ok(DetachedTlsStream { tcp: self.tcp.into_std()?, tls: self.tls })
    }
}

impl DetachedTlsStream {
    /// Registers the socket with the reactor of the worker this is called on. (tokio's
    /// `into_std` left the socket non-blocking, as `from_std` requires.)
    pub fn attach(self) -> io::Result<ServerTlsStream> {
        Ok(ServerTlsStream { tcp: TcpStream::from_std(self.tcp)?, tls: self.tls })
    }
}

/// Who protects the records.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every session holds the record layer for its life: boxing it would cost an allocation each"
)]
enum Protection {
    /// rustls: during the handshake, and for a TLS 1.2 connection's whole life. Boxed: the
    /// connection is large, and most sessions leave it once the handshake is done.
    Rustls(Box<UnbufferedServerConnection>),
    /// The relay's TLS 1.3 record layer, with the keys rustls handed over.
    Records(RecordLayer),
}

/// The TLS state apart from the socket, so that the socket and the state can be borrowed
/// separately.
struct Tls {
    protection: Protection,
    /// Ciphertext of an incomplete record; empty (and unallocated) most of the time.
    incoming: Vec<u8>,
    /// Ciphertext not yet taken by the socket; empty (and unallocated) most of the time.
    outgoing: Vec<u8>,
    /// Decrypted bytes the reader had no room for; `plain_pos` is how many it took.
    plain: Vec<u8>,
    plain_pos: usize,
    /// The peer sent close_notify or closed its side of the TCP connection.
    read_closed: bool,
    /// We sent close_notify.
    close_sent: bool,
}

/// Completes the server side of a TLS handshake on `tcp`. The caller bounds the time.
/// A TLS 1.3 connection continues on the relay's record layer when `config` allows secret
/// extraction (`enable_secret_extraction`), on rustls otherwise.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<Accepted, AcceptError> {
    let take_over_records = config.enable_secret_extraction;
    let conn = UnbufferedServerConnection::new(config)?;
    let mut stream = ServerTlsStream {
        tcp,
        tls: Tls {
            protection: Protection::Rustls(Box::new(conn)),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            read_closed: false,
            close_sent: false,
        },
    };
    match poll_fn(|cx| stream.poll_handshake(cx)).await {
        Ok(()) => {
            let Protection::Rustls(conn) = &stream.tls.protection else {
                return Err(AcceptError::Io(io::Error::other("TLS records taken over before the handshake")));
            };
            let peer_certificate = conn.peer_certificates().and_then(|chain| chain.first()).cloned();
            let tls13 = conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
            if take_over_records && tls13 {
                stream.tls = stream.tls.take_over_records()?;
            }
            Ok(Accepted { stream, peer_certificate })
        }
        Err(e) => {
            // Tell the peer why (rustls queued an alert), if the socket takes it at once.
            let _ = poll_fn(|cx| Poll::Ready(stream.poll_flush_outgoing(cx))).await;
            Err(e)
        }
    }
}

/// Where processing the ciphertext at hand stopped.
enum Stop {
    /// More ciphertext is needed (the handshake waits for the peer, or all records are
    /// processed); application data may be written once the handshake is done.
    NeedInput { handshake_done: bool },
    /// The connection is closed both ways.
    Closed,
}

/// Hands `payload` to the reader while it has room (and nothing is kept from before),
/// keeping the rest in `plain`.
fn deliver(plain: &mut Vec<u8>, plain_pos: usize, out: &mut Option<&mut ReadBuf<'_>>, mut payload: &[u8]) {
    if plain.len() == plain_pos
        && let Some(out) = out.as_deref_mut()
    {
        let n = payload.len().min(out.remaining());
        out.put_slice(&payload[..n]);
        payload = &payload[n..];
    }
    plain.extend_from_slice(payload);
}

impl Tls {
    /// Moves an established TLS 1.3 connection from rustls to the relay's record layer.
    fn take_over_records(self) -> Result<Tls, AcceptError> {
        match self.protection {
            Protection::Rustls(conn) => {
                let records = RecordLayer::take_over(*conn)
                    .map_err(|e| AcceptError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                Ok(Tls { protection: Protection::Records(records), ..self })
            }
            records @ Protection::Records(_) => Ok(Tls { protection: records, ..self }),
        }
    }

    /// Processes the records in `data` (all of it that forms complete records), sending
    /// decrypted bytes to `out` while it has room and keeping the rest. Returns how many
    /// bytes of `data` were consumed.
    fn process(&mut self, data: &mut [u8], mut out: Option<&mut ReadBuf<'_>>) -> Result<(usize, Stop), io::Error> {
        let conn = match &mut self.protection {
            Protection::Rustls(conn) => conn,
            Protection::Records(records) => {
                let (plain, plain_pos) = (&mut self.plain, self.plain_pos);
                let opened = records
                    .open(data, &mut self.outgoing, |payload| deliver(plain, plain_pos, &mut out, payload))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.read_closed |= opened.peer_closed;
                return Ok((opened.consumed, Stop::NeedInput { handshake_done: true }));
            }
        };
        let mut consumed = 0;
        loop {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut data[consumed..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    // rustls queued an alert for the peer: pass it on, best effort.
                    let _ = state_after_error(conn, &mut self.outgoing);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let stop = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        deliver(&mut self.plain, self.plain_pos, &mut out, record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.outgoing, |buf| encode.encode(buf))?;
                    None
                }
                // Queued in `outgoing`, which is flushed before anything written later.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    self.read_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Stop::Closed),
                ConnectionState::BlockedHandshake => Some(Stop::NeedInput { handshake_done: false }),
                ConnectionState::WriteTraffic(_) => Some(Stop::NeedInput { handshake_done: true }),
                ConnectionState::ReadEarlyData(_) => {
                    // The relay never enables 0-RTT (`max_early_data_size` is 0).
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS early data"));
                }
                _ => return Err(io::Error::other("unknown TLS connection state")),
            };
            consumed += discard;
            if let Some(stop) = stop {
                return Ok((consumed, stop));
            }
        }
    }

    /// Processes freshly read ciphertext `fresh` together with any incomplete record kept
    /// from before.
    fn process_read(&mut self, fresh: &mut [u8], out: Option<&mut ReadBuf<'_>>) -> Result<Stop, io::Error> {
        if self.incoming.is_empty() {
            let (consumed, stop) = self.process(fresh, out)?;
            self.keep_incoming(&fresh[consumed..])?;
            Ok(stop)
        } else {
            // Join the pending record with the fresh bytes. The limit applies to what is
            // still incomplete afterwards: a full read after a pending record may be
            // larger than it, and is then mostly whole records.
            let mut incoming = std::mem::take(&mut self.incoming);
            incoming.extend_from_slice(fresh);
            let (consumed, stop) = self.process(&mut incoming, out)?;
            incoming.drain(..consumed);
            if incoming.len() > MAX_PENDING_CIPHERTEXT_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS record or handshake flight too large"));
            }
            // Give the memory back once no record is pending.
            self.incoming = if incoming.is_empty() { Vec::new() } else { incoming };
            Ok(stop)
        }
    }

    fn keep_incoming(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.incoming.len() + bytes.len() > MAX_PENDING_CIPHERTEXT_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS record or handshake flight too large"));
        }
        self.incoming.extend_from_slice(bytes);
        Ok(())
    }

    /// Copies kept plaintext into `out`; true when something was copied.
    fn take_plain(&mut self, out: &mut ReadBuf<'_>) -> bool {
        let pending = &self.plain[self.plain_pos..];
        if pending.is_empty() || out.remaining() == 0 {
            return false;
        }
        let n = pending.len().min(out.remaining());
        out.put_slice(&pending[..n]);
        self.plain_pos += n;
        if self.plain_pos == self.plain.len() {
            self.plain = Vec::new();
            self.plain_pos = 0;
        }
        true
    }

    /// Encrypts `plain` into `out` (at least `SCRATCH_BYTES` long), returning the length.
    fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, io::Error> {
        match &mut self.protection {
            Protection::Records(records) => {
                records.seal(plain, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Protection::Rustls(_) => self.with_write_traffic(|write| encrypt(write, plain, out)),
        }
    }

    /// Queues close_notify in `outgoing`.
    fn queue_close_notify(&mut self) -> Result<(), io::Error> {
        if let Protection::Records(records) = &mut self.protection {
            return records
                .seal_alert(ALERT_CLOSE_NOTIFY, &mut self.outgoing)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
        let mut room = 64;
        let mut notify = Vec::new();
        self.with_write_traffic(|write| {
            loop {
                notify.resize(room, 0);
                match write.queue_close_notify(&mut notify) {
                    Ok(n) => {
                        notify.truncate(n);
                        return Ok(());
                    }
                    Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size }))
                        if required_size > room =>
                    {
                        room = required_size;
                    }
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
            }
        })?;
        self.outgoing.extend_from_slice(&notify);
        Ok(())
    }

    /// Runs `f` with rustls's connection in its write-traffic state (after processing
    /// whatever rustls has pending without new input).
    fn with_write_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>) -> Result<R, io::Error>,
    ) -> Result<R, io::Error> {
        let Protection::Rustls(conn) = &mut self.protection else {
            return Err(io::Error::other("TLS connection not on rustls"));
        };
        loop {
            let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
            match state.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                ConnectionState::WriteTraffic(mut write) => return f(&mut write),
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.outgoing, |buf| encode.encode(buf))?;
                }
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed => self.read_closed = true,
                ConnectionState::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                ConnectionState::BlockedHandshake => return Err(io::ErrorKind::NotConnected.into()),
                _ => return Err(io::Error::other("unexpected TLS connection state for writing")),
            }
        }
    }
}

/// After a fatal error rustls has the alert for the peer queued: move it to `outgoing`.
fn state_after_error(conn: &mut UnbufferedServerConnection, outgoing: &mut Vec<u8>) -> io::Result<()> {
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = conn.process_tls_records(&mut []).state {
        encode_into(outgoing, |buf| encode.encode(buf))?;
    }
    Ok(())
}

/// Appends what `encode` produces to `out`, growing it as rustls asks.
fn encode_into(out: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) -> io::Result<()> {
    let start = out.len();
    let mut room = 256;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) if required_size > room => {
                room = required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}

/// Encrypts `plain` into `out` (which must be large enough), returning the length.
fn encrypt(write: &mut WriteTraffic<'_, ServerConnectionData>, plain: &[u8], out: &mut [u8]) -> io::Result<usize> {
    write.encrypt(plain, out).map_err(|e| match e {
        EncryptError::EncryptExhausted => io::Error::new(io::ErrorKind::BrokenPipe, "TLS keys exhausted"),
        other => io::Error::other(other.to_string()),
    })
}

impl ServerTlsStream {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), AcceptError>> {
        // Process what rustls has without input first: nothing, for a fresh connection.
        let mut done = matches!(self.tls.process(&mut [], None)?.1, Stop::NeedInput { handshake_done: true });
        loop {
            ready!(self.poll_flush_outgoing(cx))?;
            if done {
                return Poll::Ready(Ok(()));
            }
            if self.tls.read_closed {
                return Poll::Ready(Err(AcceptError::Closed));
            }
            let stop = READ_SCRATCH.with(|scratch| -> Poll<Result<Stop, AcceptError>> {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..MAX_RECORD_BYTES]);
                ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(AcceptError::Closed));
                }
                Poll::Ready(Ok(self.tls.process_read(&mut scratch[..n], None)?))
            });
            match ready!(stop)? {
                Stop::NeedInput { handshake_done } => done = handshake_done,
                Stop::Closed => return Poll::Ready(Err(AcceptError::Closed)),
            }
        }
    }

    /// Bytes of buffer memory the connection holds outside rustls (0 while idle).
    pub fn buffered_bytes(&self) -> usize {
        self.tls.incoming.capacity() + self.tls.outgoing.capacity() + self.tls.plain.capacity()
    }

    /// Writes kept ciphertext until none is left or the socket is full.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.tls.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.tls.outgoing))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tls.outgoing.drain(..n);
        }
        // Give the memory back: an idle session keeps no write buffer.
        self.tls.outgoing = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.tls.take_plain(out) {
                return Poll::Ready(Ok(()));
            }
            if this.tls.read_closed || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = out.filled().len();
            let progress = READ_SCRATCH.with(|scratch| -> Poll<io::Result<()>> {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut buf))?;
                let n = buf.filled().len();
                if n == 0 {
                    // The peer closed without close_notify: report the end of the stream;
                    // the frame codec notices a frame cut short.
                    this.tls.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
                if let Stop::Closed = this.tls.process_read(&mut scratch[..n], Some(out))? {
                    this.tls.read_closed = true;
                }
                Poll::Ready(Ok(()))
            });
            if let Err(e) = ready!(progress) {
                // Tell the peer why (an alert is queued), if the socket takes it at once.
                let _ = this.poll_flush_outgoing(cx);
                return Poll::Ready(Err(e));
            }
            // Handshake-layer replies (a key update) go out without waiting for a write.
            if !this.tls.outgoing.is_empty()
                && let Poll::Ready(Err(e)) = this.poll_flush_outgoing(cx)
            {
                return Poll::Ready(Err(e));
            }
            if out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_flush_outgoing(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let plain = &buf[..buf.len().min(MAX_PLAINTEXT_PER_WRITE)];
        WRITE_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let len = this.tls.seal(plain, &mut scratch)?;
            let mut sent = 0;
            // Anything rustls queued while getting here goes first.
            if this.tls.outgoing.is_empty() {
                while sent < len {
                    match Pin::new(&mut this.tcp).poll_write(cx, &scratch[sent..len]) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Poll::Ready(Ok(n)) => sent += n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => break,
                    }
                }
            }
            // The plaintext is encrypted (its sequence number used): keep what the socket
            // did not take, to be flushed before anything else.
            this.tls.outgoing.extend_from_slice(&scratch[sent..len]);
            Poll::Ready(Ok(plain.len()))
        })
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.tls.close_sent {
            this.tls.close_sent = true;
            // A connection that cannot send close_notify any more is closed all the same.
            let _ = this.tls.queue_close_notify();
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
impl ServerTlsStream {
    /// The relay's record layer, once it has taken the connection over from rustls.
    fn record_layer(&mut self) -> Option<&mut RecordLayer> {
        match &mut self.tls.protection {
            Protection::Records(records) => Some(records),
            Protection::Rustls(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    use rustls::version::{TLS12, TLS13};
    use rustls::{ClientConfig, SupportedCipherSuite};
    use rustls_pki_types::{PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use super::*;
    use crate::tls_record_layer::test_peer::RawPeer;

    type Version = &'static rustls::SupportedProtocolVersion;

    /// Who protects the server's records after a TLS 1.3 handshake.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Layer {
        /// The relay's record layer (the device channel's configuration).
        Relay,
        /// rustls throughout (a config without secret extraction).
        Rustls,
    }

    /// A connection's set-up: protocol version, the one suite the client offers (all of
    /// them when `None`), the server's record layer.
    #[derive(Clone, Copy, Debug)]
    struct Setup {
        version: Version,
        suite: Option<SupportedCipherSuite>,
        layer: Layer,
    }

    const TLS13_RELAY: Setup = Setup { version: &TLS13, suite: None, layer: Layer::Relay };
    const TLS13_RUSTLS: Setup = Setup { version: &TLS13, suite: None, layer: Layer::Rustls };
    const TLS12_ONLY: Setup = Setup { version: &TLS12, suite: None, layer: Layer::Relay };

    fn configs(setup: Setup) -> (ServerConfig, ClientConfig) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[setup.version])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        server.enable_secret_extraction = setup.layer == Layer::Relay;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let mut client_provider = rustls::crypto::ring::default_provider();
        if let Some(suite) = setup.suite {
            client_provider.cipher_suites = vec![suite];
        }
        let client = ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[setup.version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, client)
    }

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// A connected pair: our server stream and a tokio-rustls client.
    async fn pair(setup: Setup) -> (ServerTlsStream, TlsStream<TcpStream>) {
        let (server, client) = configs(setup);
        pair_with(server, client, |tcp| tcp).await
    }

    /// A connected pair whose client writes through `wrap(tcp)`.
    async fn pair_with<C: AsyncRead + AsyncWrite + Unpin>(
        server_cfg: ServerConfig,
        client_cfg: ClientConfig,
        wrap: impl FnOnce(TcpStream) -> C,
    ) -> (ServerTlsStream, TlsStream<C>) {
        let (listener, addr) = listener().await;
        let server = async {
            let (tcp, _) = listener.accept().await.expect("accept");
            accept(tcp, Arc::new(server_cfg)).await.expect("server handshake").stream
        };
        let client = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let name = ServerName::try_from("localhost").expect("name");
            TlsConnector::from(Arc::new(client_cfg)).connect(name, wrap(tcp)).await.expect("client handshake")
        };
        tokio::join!(server, client)
    }

    /// Echoes until the peer closes, then closes with close_notify.
    async fn echo(mut server: ServerTlsStream) -> usize {
        let mut buf = vec![0; 1000];
        let mut total = 0;
        loop {
            let n = server.read(&mut buf).await.expect("server read");
            if n == 0 {
                break;
            }
            total += n;
            server.write_all(&buf[..n]).await.expect("server write");
            server.flush().await.expect("server flush");
        }
        server.shutdown().await.expect("server shutdown");
        total
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    async fn round_trip(setup: Setup) {
        let (mut server, client) = pair(setup).await;
        let on_relay_records = setup.version == &TLS13 && setup.layer == Layer::Relay;
        assert_eq!(server.record_layer().is_some(), on_relay_records, "{setup:?}");
        let echoed = tokio::spawn(echo(server));
        let (mut rd, mut wr) = tokio::io::split(client);
        let sizes = [1, 5, 100, 16_384, 16_385, 100_000, 3];
        let sent: Vec<u8> = sizes.iter().flat_map(|&n| pattern(n)).collect();
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            let mut at = 0;
            for n in sizes {
                wr.write_all(&to_send[at..at + n]).await.expect("client write");
                at += n;
            }
            wr.shutdown().await.expect("client shutdown");
        });
        let mut received = Vec::new();
        // Ends cleanly only if the server's close_notify arrives.
        rd.read_to_end(&mut received).await.expect("client read to the end");
        writer.await.expect("writer");
        assert_eq!(echoed.await.expect("echo task"), sent.len());
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "echoed bytes differ from the bytes sent ({setup:?})");
    }

    #[tokio::test]
    async fn echoes_records_of_every_size_over_tls13_with_each_suite() {
        for suite in [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256] {
            round_trip(Setup { suite: Some(suite), ..TLS13_RELAY }).await;
        }
    }

    #[tokio::test]
    async fn echoes_records_of_every_size_over_tls13_on_rustls() {
        round_trip(TLS13_RUSTLS).await;
    }

    #[tokio::test]
    async fn echoes_records_of_every_size_over_tls12_which_stays_on_rustls() {
        round_trip(TLS12_ONLY).await;
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffers() {
        for setup in [TLS13_RELAY, TLS13_RUSTLS] {
            let (mut server, mut client) = pair(setup).await;
            assert_eq!(server.buffered_bytes(), 0, "after the handshake ({setup:?})");
            client.write_all(&pattern(40_000)).await.expect("write");
            client.flush().await.expect("flush");
            let mut got = vec![0; 40_000];
            server.read_exact(&mut got).await.expect("read");
            assert!(got == pattern(40_000));
            server.write_all(&pattern(70_000)).await.expect("write");
            server.flush().await.expect("flush");
            let mut back = vec![0; 70_000];
            client.read_exact(&mut back).await.expect("read back");
            assert!(back == pattern(70_000));
            assert_eq!(server.buffered_bytes(), 0, "after traffic both ways ({setup:?})");
        }
    }

    /// Reads that fill the whole read buffer while a record is pending: the client sends
    /// megabytes at once, the server reads them in small pieces, so the socket holds much
    /// more than one read takes, in records not aligned with the reads.
    #[tokio::test]
    async fn full_reads_after_a_pending_record_are_taken_whole() {
        for setup in [TLS13_RELAY, TLS13_RUSTLS, TLS12_ONLY] {
            let (mut server, mut client) = pair(setup).await;
            let data = pattern(4 * 1024 * 1024 + 7);
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                for chunk in sent.chunks(1024 * 1024) {
                    client.write_all(chunk).await.expect("write");
                }
                client.flush().await.expect("flush");
                client
            });
            let mut got = Vec::with_capacity(data.len());
            let mut buf = vec![0; 1000];
            while got.len() < data.len() {
                let n = server.read(&mut buf).await.expect("read");
                assert_ne!(n, 0, "{setup:?}");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == data, "{setup:?}");
            let _client = writer.await.expect("writer");
        }
    }

    /// A TCP stream that writes at most 7 bytes at a time, so that the server sees TLS
    /// records (handshake and data) cut into many pieces.
    struct Trickle(TcpStream);

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            Pin::new(&mut self.0).poll_write(cx, &buf[..n])
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn records_cut_into_pieces_are_joined() {
        for setup in [TLS13_RELAY, TLS13_RUSTLS] {
            let (server_cfg, client_cfg) = configs(setup);
            let (mut server, mut client) = pair_with(server_cfg, client_cfg, Trickle).await;
            let data = pattern(5_000);
            let writer = async {
                client.write_all(&data).await.expect("write");
                client.flush().await.expect("flush");
                client
            };
            let reader = async {
                let mut got = vec![0; data.len()];
                server.read_exact(&mut got).await.expect("read");
                got
            };
            let (_client, got) = tokio::join!(writer, reader);
            assert!(got == data, "{setup:?}");
            assert_eq!(server.buffered_bytes(), 0);
        }
    }

    /// rustls's client asks for the server's key update along with its own, so this
    /// checks both directions' new keys.
    #[tokio::test]
    async fn key_updates_from_the_client_are_followed() {
        for setup in [TLS13_RELAY, TLS13_RUSTLS] {
            let (server, mut client) = pair(setup).await;
            let echoed = tokio::spawn(echo(server));
            for round in 0..3 {
                client.get_mut().1.refresh_traffic_keys().expect("key update");
                let msg = pattern(300 + round);
                client.write_all(&msg).await.expect("write");
                client.flush().await.expect("flush");
                let mut back = vec![0; msg.len()];
                client.read_exact(&mut back).await.expect("read after key update");
                assert!(back == msg, "round {round} ({setup:?})");
            }
            client.shutdown().await.expect("shutdown");
            assert_eq!(echoed.await.expect("echo"), 3 * 300 + 3);
        }
    }

    /// Many key-update requests before the server sends anything are answered by one
    /// key update: a peer cannot queue answers without bound.
    #[tokio::test]
    async fn requests_for_key_updates_are_answered_once_per_data_sent() {
        let (mut server, mut client) = pair(TLS13_RELAY).await;
        for _ in 0..20 {
            client.get_mut().1.refresh_traffic_keys().expect("key update");
            client.write_all(b"x").await.expect("write");
        }
        client.flush().await.expect("flush");
        let mut got = [0; 20];
        server.read_exact(&mut got).await.expect("read under the client's 20 keys");
        assert_eq!(server.record_layer().expect("relay records").tx_key_updates(), 1);
        server.write_all(b"y").await.expect("write");
        server.flush().await.expect("flush");
        let mut back = [0; 1];
        client.read_exact(&mut back).await.expect("the client follows the one answer");
        assert_eq!(&back, b"y");
        // After data went out, the next request is answered again.
        client.get_mut().1.refresh_traffic_keys().expect("key update");
        client.write_all(b"z").await.expect("write");
        client.flush().await.expect("flush");
        server.read_exact(&mut back).await.expect("read");
        assert_eq!(server.record_layer().expect("relay records").tx_key_updates(), 2);
        server.write_all(b"w").await.expect("write");
        server.flush().await.expect("flush");
        client.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"w");
    }

    #[tokio::test]
    async fn the_server_replaces_its_key_before_the_limit() {
        let (mut server, mut client) = pair(TLS13_RELAY).await;
        server.record_layer().expect("relay records").set_tx_records_per_key(3);
        // 20 small writes and one of several records: a key update every other record.
        let mut sent = Vec::new();
        for i in 0..20 {
            let msg = pattern(10 + i);
            server.write_all(&msg).await.expect("write");
            sent.extend_from_slice(&msg);
        }
        server.write_all(&pattern(50_000)).await.expect("write");
        sent.extend_from_slice(&pattern(50_000));
        server.flush().await.expect("flush");
        let mut got = vec![0; sent.len()];
        client.read_exact(&mut got).await.expect("client follows the server's key updates");
        assert!(got == sent);
        // The other direction is untouched.
        client.write_all(b"still here").await.expect("write");
        client.flush().await.expect("flush");
        let mut back = [0; 10];
        server.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"still here");
    }

    /// A connection whose client side protects records by hand (`RawPeer`), with the
    /// client's socket. The server sends no session tickets, so nothing is in flight when
    /// the client's keys are taken.
    async fn raw_pair() -> (ServerTlsStream, RawPeer, TcpStream) {
        let (mut server_cfg, mut client_cfg) = configs(TLS13_RELAY);
        server_cfg.send_tls13_tickets = 0;
        client_cfg.enable_secret_extraction = true;
        let (mut server, client) = pair_with(server_cfg, client_cfg, |tcp| tcp).await;
        assert!(server.record_layer().is_some());
        let (tcp, conn) = client.into_inner();
        let secrets = conn.dangerous_extract_secrets().expect("client secrets");
        (server, RawPeer::new(secrets), tcp)
    }

    /// Reads from `tcp` until one whole record has arrived, and opens it.
    async fn next_record(peer: &mut RawPeer, tcp: &mut TcpStream, pending: &mut Vec<u8>) -> Result<(u8, Vec<u8>), ()> {
        loop {
            if let Some(opened) = peer.open(pending) {
                let (content_type, content, used) = opened?;
                pending.drain(..used);
                return Ok((content_type, content));
            }
            let mut buf = [0; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
                .await
                .expect("a record in time")
                .expect("read");
            assert_ne!(n, 0, "the server closed before sending a whole record");
            pending.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn padding_empty_records_and_a_user_canceled_warning_are_read_through() {
        let (mut server, mut peer, mut tcp) = raw_pair().await;
        let mut bytes = peer.record(23, b"hello", 100);
        bytes.extend(peer.record(23, b"", 0));
        bytes.extend(peer.record(21, &[1, 90], 3));
        bytes.extend(peer.record(23, b" world", 0));
        // close_notify, and bytes after it that are never looked at.
        bytes.extend(peer.record(21, &[1, 0], 0));
        bytes.extend_from_slice(b"not a record");
        tcp.write_all(&bytes).await.expect("write");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read to close_notify");
        assert_eq!(got, b"hello world");
    }

    #[tokio::test]
    async fn a_key_update_split_over_records_is_followed_and_answered() {
        let (mut server, mut peer, mut tcp) = raw_pair().await;
        // KeyUpdate(update_requested), its header in one record and the rest in the next.
        let mut bytes = peer.record(22, &[24, 0], 0);
        bytes.extend(peer.record(22, &[0, 1, 1], 0));
        tcp.write_all(&bytes).await.expect("write");
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let result = server.read(&mut buf).await;
            (server, result)
        });
        // The server answers with its own KeyUpdate under its old key...
        let mut pending = Vec::new();
        let answer = next_record(&mut peer, &mut tcp, &mut pending).await;
        assert_eq!(answer, Ok((22, vec![24, 0, 0, 1, 0])));
        // ...and now reads the client's records under the client's next key only: one
        // under the old key fails (the raw peer cannot derive the next key).
        tcp.write_all(&peer.record(23, b"old key", 0)).await.expect("write");
        let (mut server, result) = reader.await.expect("reader");
        let err = result.expect_err("a record under the replaced key");
        assert!(err.to_string().contains("bad_record_mac"), "{err}");
        // What it sends now (the alert) is under its next key too, and nothing else is
        // sealed after the failure.
        let err = server.write_all(b"after the failure").await.expect_err("a failed connection");
        assert!(err.to_string().contains("already failed"), "{err}");
        let mut sealed_with_new_key = pending;
        let alert_or_data = loop {
            if let Some(opened) = peer.open(&mut sealed_with_new_key) {
                break opened;
            }
            let mut buf = [0; 4096];
            let n = tcp.read(&mut buf).await.expect("read");
            assert_ne!(n, 0);
            sealed_with_new_key.extend_from_slice(&buf[..n]);
        };
        assert_eq!(alert_or_data, Err(()), "the server's records after its key update use the next key");
    }

    /// Records a TLS 1.3 server must refuse after the handshake, with the alert it must send.
    #[tokio::test]
    async fn bad_records_are_refused_with_the_alert_rfc_8446_names() {
        type MakeBytes = fn(&mut RawPeer) -> Vec<u8>;
        let cases: [(&str, MakeBytes, u8, &str); 10] = [
            (
                "tampered",
                |p| {
                    let mut r = p.record(23, b"frame", 0);
                    r[7] ^= 1;
                    r
                },
                20,
                "bad_record_mac",
            ),
            ("unprotected change_cipher_spec", |_| vec![20, 3, 3, 0, 1, 1], 10, "unexpected_message"),
            ("unprotected alert", |_| vec![21, 3, 3, 0, 2, 1, 0], 10, "unexpected_message"),
            ("oversized", |_| vec![23, 3, 3, 0x41, 0x01], 22, "record_overflow"),
            ("no content type", |p| p.seal_inner(vec![0; 8]), 10, "unexpected_message"),
            ("content over 16 KiB", |p| p.record(23, &[7; 16_385], 0), 22, "record_overflow"),
            ("a ticket from the client", |p| p.record(22, &[4, 0, 0, 1, 0], 0), 10, "unexpected_message"),
            (
                "data after a key update in its record",
                |p| p.record(22, &[24, 0, 0, 1, 0, 24], 0),
                10,
                "unexpected_message",
            ),
            (
                "data inside a split key update",
                |p| {
                    let mut r = p.record(22, &[24, 0], 0);
                    r.extend(p.record(23, b"frame", 0));
                    r
                },
                10,
                "unexpected_message",
            ),
            ("a key update with a bad request", |p| p.record(22, &[24, 0, 0, 1, 2], 0), 50, "decode_error"),
        ];
        for (case, make, alert, named) in cases {
            let (mut server, mut peer, mut tcp) = raw_pair().await;
            tcp.write_all(&make(&mut peer)).await.expect("write");
            let mut buf = [0; 64];
            let result = tokio::time::timeout(Duration::from_secs(10), server.read(&mut buf)).await.expect("in time");
            let err = result.expect_err(case);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{case}");
            assert!(err.to_string().contains(named), "{case}: {err}");
            let mut pending = Vec::new();
            let told = next_record(&mut peer, &mut tcp, &mut pending).await;
            assert_eq!(told, Ok((21, vec![2, alert])), "{case}: the alert the client is told");
        }
    }

    #[tokio::test]
    async fn a_fatal_alert_from_the_peer_ends_the_connection() {
        let (mut server, mut peer, mut tcp) = raw_pair().await;
        tcp.write_all(&peer.record(21, &[2, 40], 0)).await.expect("write");
        let mut buf = [0; 16];
        let err = server.read(&mut buf).await.expect_err("a fatal alert");
        assert!(err.to_string().contains("alert 40"), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_is_not_tls_is_refused_with_an_alert() {
        let (server_cfg, _) = configs(TLS13_RELAY);
        let (listener, addr) = listener().await;
        let mut peer = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        peer.write_all(b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n").await.expect("write");
        let result =
            tokio::time::timeout(Duration::from_secs(10), accept(tcp, Arc::new(server_cfg))).await.expect("in time");
        assert!(matches!(result, Err(AcceptError::Tls(_))), "{:?}", result.err());
        let mut reply = Vec::new();
        peer.read_to_end(&mut reply).await.expect("read reply");
        assert_eq!(reply.first(), Some(&21), "a TLS alert record: {reply:?}");
    }

    #[tokio::test]
    async fn a_peer_leaving_during_the_handshake_is_reported() {
        let (server_cfg, _) = configs(TLS13_RELAY);
        let (listener, addr) = listener().await;
        let peer = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        drop(peer);
        let result =
            tokio::time::timeout(Duration::from_secs(10), accept(tcp, Arc::new(server_cfg))).await.expect("in time");
        assert!(matches!(result, Err(AcceptError::Closed)), "{:?}", result.err());
    }

    #[tokio::test]
    async fn the_server_side_stream_splits_into_reader_and_writer() {
        for setup in [TLS13_RELAY, TLS13_RUSTLS] {
            let (server, client) = pair(setup).await;
            let (mut srd, mut swr) = tokio::io::split(server);
            let (mut crd, mut cwr) = tokio::io::split(client);
            let a = pattern(50_000);
            let b: Vec<u8> = pattern(60_000).into_iter().rev().collect();
            let (a2, b2) = (a.clone(), b.clone());
            let up = tokio::spawn(async move {
                cwr.write_all(&a2).await.expect("client write");
                cwr.flush().await.expect("client flush");
                cwr
            });
            let down = tokio::spawn(async move {
                swr.write_all(&b2).await.expect("server write");
                swr.flush().await.expect("server flush");
                swr
            });
            let mut got_a = vec![0; a.len()];
            srd.read_exact(&mut got_a).await.expect("server read");
            let mut got_b = vec![0; b.len()];
            crd.read_exact(&mut got_b).await.expect("client read");
            assert!(got_a == a && got_b == b, "{setup:?}");
            let _ = (up.await, down.await);
        }
    }
}
