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
//! So an idle session costs rustls's own state (keys, a few small queues) and nothing else.
//! The stream implements `AsyncRead + AsyncWrite` and can be split with `tokio::io::split`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic};
use rustls::{ServerConfig, unbuffered::InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest TLS record on the wire (16 KiB of plaintext plus the largest overhead rustls
/// produces), and so the least a read must offer to make progress on any record.
const MAX_RECORD_BYTES: usize = 16 * 1024 + 2048;
/// Plaintext taken by one `poll_write`: a few records, so that the ciphertext fits the
/// write scratch buffer.
const MAX_PLAINTEXT_PER_WRITE: usize = 4 * 16 * 1024;
/// Size of each per-thread scratch buffer.
const SCRATCH_BYTES: usize = MAX_PLAINTEXT_PER_WRITE + 4 * 2048;
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

/// The TLS state apart from the socket, so that the socket and the state can be borrowed
/// separately.
struct Tls {
    conn: UnbufferedServerConnection,
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
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<ServerTlsStream, AcceptError> {
    let conn = UnbufferedServerConnection::new(config)?;
    let mut stream = ServerTlsStream {
        tcp,
        tls: Tls {
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            read_closed: false,
            close_sent: false,
        },
    };
    match poll_fn(|cx| stream.poll_handshake(cx)).await {
        Ok(()) => Ok(stream),
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

impl Tls {
    /// Processes the records in `data` (all of it that forms complete records), sending
    /// decrypted bytes to `out` while it has room and keeping the rest. Returns how many
    /// bytes of `data` were consumed.
    fn process(&mut self, data: &mut [u8], mut out: Option<&mut ReadBuf<'_>>) -> Result<(usize, Stop), io::Error> {
        let mut consumed = 0;
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut data[consumed..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    // rustls queued an alert for the peer: pass it on, best effort.
                    let _ = state_after_error(&mut self.conn, &mut self.outgoing);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let stop = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        let mut payload = record.payload;
                        if self.plain.len() == self.plain_pos
                            && let Some(out) = out.as_deref_mut()
                        {
                            let n = payload.len().min(out.remaining());
                            out.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        self.plain.extend_from_slice(payload);
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
            self.keep_incoming(fresh)?;
            let mut incoming = std::mem::take(&mut self.incoming);
            let result = self.process(&mut incoming, out);
            if let Ok((consumed, _)) = &result {
                incoming.drain(..*consumed);
            }
            // Give the memory back once no record is pending.
            self.incoming = if incoming.is_empty() { Vec::new() } else { incoming };
            result.map(|(_, stop)| stop)
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

    /// Runs `f` with the connection in its write-traffic state (after processing whatever
    /// rustls has pending without new input).
    fn with_write_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>) -> Result<R, io::Error>,
    ) -> Result<R, io::Error> {
        loop {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
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

    /// The client's end-entity certificate, when it presented one the verifier accepted.
    pub fn peer_certificate(&self) -> Option<&rustls_pki_types::CertificateDer<'static>> {
        self.tls.conn.peer_certificates().and_then(|chain| chain.first())
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
            ready!(progress)?;
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
            let len = this.tls.with_write_traffic(|write| encrypt(write, plain, &mut scratch))?;
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
            let tls = &mut this.tls;
            let mut room = 64;
            let mut notify = Vec::new();
            let sent = tls.with_write_traffic(|write| {
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
            });
            // A connection that cannot send close_notify any more is closed all the same.
            if sent.is_ok() {
                tls.outgoing.extend_from_slice(&notify);
            }
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::ClientConfig;
    use rustls::version::{TLS12, TLS13};
    use rustls_pki_types::{PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use super::*;

    type Version = &'static rustls::SupportedProtocolVersion;

    fn configs(version: Version) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// A connected pair: our server stream and a tokio-rustls client.
    async fn pair(version: Version) -> (ServerTlsStream, TlsStream<TcpStream>) {
        pair_over(version, |tcp| tcp).await
    }

    /// A connected pair whose client writes through `wrap(tcp)`.
    async fn pair_over<C: AsyncRead + AsyncWrite + Unpin>(
        version: Version,
        wrap: impl FnOnce(TcpStream) -> C,
    ) -> (ServerTlsStream, TlsStream<C>) {
        let (server_cfg, client_cfg) = configs(version);
        let (listener, addr) = listener().await;
        let server = async {
            let (tcp, _) = listener.accept().await.expect("accept");
            accept(tcp, server_cfg).await.expect("server handshake")
        };
        let client = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let name = ServerName::try_from("localhost").expect("name");
            TlsConnector::from(client_cfg).connect(name, wrap(tcp)).await.expect("client handshake")
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

    async fn round_trip(version: Version) {
        let (server, client) = pair(version).await;
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
        assert!(received == sent, "echoed bytes differ from the bytes sent");
    }

    #[tokio::test]
    async fn echoes_records_of_every_size_over_tls13() {
        round_trip(&TLS13).await;
    }

    #[tokio::test]
    async fn echoes_records_of_every_size_over_tls12() {
        round_trip(&TLS12).await;
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffers() {
        let (mut server, mut client) = pair(&TLS13).await;
        assert_eq!(server.buffered_bytes(), 0, "after the handshake");
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
        assert_eq!(server.buffered_bytes(), 0, "after traffic both ways");
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
        let (mut server, mut client) = pair_over(&TLS13, Trickle).await;
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
        assert!(got == data);
        assert_eq!(server.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn key_updates_from_the_client_are_followed() {
        let (server, mut client) = pair(&TLS13).await;
        let echoed = tokio::spawn(echo(server));
        for round in 0..3 {
            client.get_mut().1.refresh_traffic_keys().expect("key update");
            let msg = pattern(300 + round);
            client.write_all(&msg).await.expect("write");
            client.flush().await.expect("flush");
            let mut back = vec![0; msg.len()];
            client.read_exact(&mut back).await.expect("read after key update");
            assert!(back == msg, "round {round}");
        }
        client.shutdown().await.expect("shutdown");
        assert_eq!(echoed.await.expect("echo"), 3 * 300 + 3);
    }

    #[tokio::test]
    async fn a_peer_that_is_not_tls_is_refused_with_an_alert() {
        let (server_cfg, _) = configs(&TLS13);
        let (listener, addr) = listener().await;
        let mut peer = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        peer.write_all(b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n").await.expect("write");
        let result = tokio::time::timeout(Duration::from_secs(10), accept(tcp, server_cfg)).await.expect("in time");
        assert!(matches!(result, Err(AcceptError::Tls(_))), "{:?}", result.err());
        let mut reply = Vec::new();
        peer.read_to_end(&mut reply).await.expect("read reply");
        assert_eq!(reply.first(), Some(&21), "a TLS alert record: {reply:?}");
    }

    #[tokio::test]
    async fn a_peer_leaving_during_the_handshake_is_reported() {
        let (server_cfg, _) = configs(&TLS13);
        let (listener, addr) = listener().await;
        let peer = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        drop(peer);
        let result = tokio::time::timeout(Duration::from_secs(10), accept(tcp, server_cfg)).await.expect("in time");
        assert!(matches!(result, Err(AcceptError::Closed)), "{:?}", result.err());
    }

    #[tokio::test]
    async fn the_server_side_stream_splits_into_reader_and_writer() {
        let (server, client) = pair(&TLS13).await;
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
        assert!(got_a == a && got_b == b);
        let _ = (up.await, down.await);
    }
}
