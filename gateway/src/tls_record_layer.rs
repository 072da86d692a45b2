//! TLS 1.3 record protection for established device connections (RFC 8446 §5).
//!
//! Why: once a TLS 1.3 handshake is done, rustls's connection state for an idle session
//! is about 3.5 KiB (the connection object, its boxed encrypter and decrypter, the key
//! schedule and queues), two thirds of what a whole device session holds. What the session
//! needs from then on is small: one AEAD key, IV and sequence number per direction, and
//! the traffic secrets for key updates. rustls hands exactly that over for kTLS-style use
//! ([`UnbufferedServerConnection::dangerous_into_kernel_connection`]): the keys, and a
//! [`KernelConnection`] that derives the next keys on a key update. This module protects
//! the records with those keys. The handshake itself, and every TLS 1.2 connection, stay
//! with rustls ([`crate::tls_stream`] chooses).
//!
//! What it implements, and nothing more: application data both ways; alerts (close_notify
//! ends the peer's side, any other alert ends the connection); `KeyUpdate` from the peer
//! (answered with our own when asked); our own `KeyUpdate` before a key reaches its
//! suite's confidentiality limit. Every other record or handshake message after the
//! handshake is refused with the alert RFC 8446 names.

use std::borrow::Cow;

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::{ConnectionTrafficSecrets, SupportedCipherSuite};

/// Bytes of a record header: content type, legacy version, length.
pub(crate) const HEADER_BYTES: usize = 5;
/// Largest plaintext of one record (RFC 8446 §5.1).
pub(crate) const MAX_FRAGMENT_BYTES: usize = 1 << 14;
/// Largest ciphertext of one record (RFC 8446 §5.2).
const MAX_CIPHERTEXT_BYTES: usize = MAX_FRAGMENT_BYTES + 256;
/// The AEAD tag of every suite TLS 1.3 offers here.
const TAG_BYTES: usize = 16;
/// What sealing adds to a fragment: header, inner content type, tag.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = HEADER_BYTES + 1 + TAG_BYTES;
/// Our own `KeyUpdate` as a record: a 5-byte handshake message.
const KEY_UPDATE_RECORD_BYTES: usize = RECORD_OVERHEAD_BYTES + 5;
/// Sequence numbers rustls stops at rather than let them wrap; kept the same here.
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
const KEY_UPDATE_NOT_REQUESTED: u8 = 0;
const KEY_UPDATE_REQUESTED: u8 = 1;
const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;
pub(crate) const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
const ALERT_BAD_RECORD_MAC: u8 = 20;
const ALERT_RECORD_OVERFLOW: u8 = 22;
const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_INTERNAL_ERROR: u8 = 80;
const ALERT_USER_CANCELED: u8 = 90;

/// Why a connection's records could not be protected or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("TLS record failed authentication (bad_record_mac)")]
    BadRecordMac,
    #[error("TLS record larger than the protocol allows (record_overflow)")]
    RecordOverflow,
    #[error("unexpected TLS message after the handshake: {0} (unexpected_message)")]
    UnexpectedMessage(&'static str),
    #[error("malformed TLS message: {0} (decode_error)")]
    Decode(&'static str),
    #[error("the peer sent TLS alert {0}")]
    PeerAlert(u8),
    #[error("TLS sequence numbers exhausted")]
    Exhausted,
    #[error("TLS keys: {0}")]
    Keys(#[from] rustls::Error),
    #[error("TLS keys: cipher suite not supported by the relay's record layer")]
    UnsupportedSuite,
    #[error("TLS record: output buffer too small")]
    OutputTooSmall,
    #[error("TLS connection already failed")]
    Failed,
}

impl RecordError {
    /// The alert the peer is told, where one is due.
    fn alert(&self) -> Option<u8> {
        match self {
            RecordError::BadRecordMac => Some(ALERT_BAD_RECORD_MAC),
            RecordError::RecordOverflow => Some(ALERT_RECORD_OVERFLOW),
            RecordError::UnexpectedMessage(_) => Some(ALERT_UNEXPECTED_MESSAGE),
            RecordError::Decode(_) => Some(ALERT_DECODE_ERROR),
            RecordError::Exhausted
            | RecordError::Keys(_)
            | RecordError::UnsupportedSuite
            | RecordError::OutputTooSmall => Some(ALERT_INTERNAL_ERROR),
            RecordError::PeerAlert(_) | RecordError::Failed => None,
        }
    }
}

/// One direction's key, IV and next sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Self, RecordError> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv.as_ref().try_into().map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Direction { key: LessSafeKey::new(key), iv, seq })
    }

    /// The per-record nonce: the IV with the sequence number XORed into its end, and the
    /// sequence number advanced (RFC 8446 §5.3).
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        if self.seq >= SEQ_SOFT_LIMIT {
            return Err(RecordError::Exhausted);
        }
        let mut nonce = self.iv;
        for (byte, seq) in nonce[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// What [`RecordLayer::open`] found in the bytes it was given.
pub(crate) struct Opened {
    /// Bytes of whole records consumed (everything up to an incomplete record, or all of
    /// it after close_notify).
    pub consumed: usize,
    /// The peer sent close_notify: it sends nothing more.
    pub peer_closed: bool,
}

/// An established TLS 1.3 connection's record protection.
pub(crate) struct RecordLayer {
    tx: Direction,
    rx: Direction,
    /// rustls's remainder of the connection: it derives the next keys on a key update.
    secrets: KernelConnection<ServerConnectionData>,
    /// Records one key may seal before it is replaced.
    tx_records_per_key: u64,
    /// The start of a handshake message split over records (at most 4 bytes: only a
    /// `KeyUpdate` is accepted, and its header says so). Empty, and unallocated, otherwise.
    handshake: Vec<u8>,
    /// A record failed (or the peer sent a fatal alert): nothing more is opened or sealed.
    failed: bool,
    /// Our `KeyUpdate` answering the peer's request went out and no application data has
    /// been sealed since: further requests are answered by it too (RFC 8446 §4.6.3 asks
    /// for one before our next application data). Without this, a peer sending requests
    /// and not reading would grow the queue of answers without bound.
    update_answered: bool,
    /// Our key updates so far (tests check how many were sent).
    #[cfg(test)]
    tx_key_updates: u32,
}

impl RecordLayer {
    /// Takes an established TLS 1.3 connection over from rustls. rustls must have nothing
    /// left to send (true once it reports `WriteTraffic`), and the config must allow
    /// secret extraction.
    pub(crate) fn take_over(conn: UnbufferedServerConnection) -> Result<Self, RecordError> {
        let (extracted, secrets) = conn.dangerous_into_kernel_connection()?;
        let tx_records_per_key = match secrets.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit.min(SEQ_SOFT_LIMIT),
            // TLS 1.2 stays with rustls.
            _ => return Err(RecordError::UnsupportedSuite),
        };
        Ok(RecordLayer {
            tx: Direction::new(extracted.tx)?,
            rx: Direction::new(extracted.rx)?,
            secrets,
            tx_records_per_key,
            handshake: Vec::new(),
            failed: false,
            update_answered: false,
            #[cfg(test)]
            tx_key_updates: 0,
        })
    }

    /// Test hook: replace the sending key after this many records.
    #[cfg(test)]
    pub(crate) fn set_tx_records_per_key(&mut self, records: u64) {
        self.tx_records_per_key = records;
    }

    /// Test hook: how many times our sending key was replaced.
    #[cfg(test)]
    pub(crate) fn tx_key_updates(&self) -> u32 {
        self.tx_key_updates
    }

    /// Decrypts the whole records at the start of `data` in place, handing each piece of
    /// application data to `deliver`. Records the protocol itself calls for (our
    /// `KeyUpdate` when the peer asks for one) are appended to `reply`. On an error, the
    /// alert due to the peer is appended to `reply` too.
    pub(crate) fn open(
        &mut self,
        data: &mut [u8],
        reply: &mut Vec<u8>,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<Opened, RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        let result = self.open_records(data, reply, &mut deliver);
        if let Err(e) = &result {
            if let Some(alert) = e.alert() {
                // Best effort: the connection ends either way.
                let _ = self.seal_alert(alert, reply);
            }
            self.failed = true;
        }
        result
    }

    fn open_records(
        &mut self,
        data: &mut [u8],
        reply: &mut Vec<u8>,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<Opened, RecordError> {
        let mut consumed = 0;
        loop {
            let rest = &mut data[consumed..];
            let Some(header) = rest.first_chunk::<HEADER_BYTES>().copied() else {
                return Ok(Opened { consumed, peer_closed: false });
            };
            let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if length > MAX_CIPHERTEXT_BYTES {
                return Err(RecordError::RecordOverflow);
            }
            // The legacy version is ignored (RFC 8446 §5.1); the outer type is always
            // application_data once the handshake is done (a change_cipher_spec is only
            // tolerated before the peer's Finished).
            if header[0] != CONTENT_APPLICATION_DATA {
                return Err(RecordError::UnexpectedMessage("unprotected record"));
            }
            let Some(body) = rest.get_mut(HEADER_BYTES..HEADER_BYTES + length) else {
                return Ok(Opened { consumed, peer_closed: false });
            };
            consumed += HEADER_BYTES + length;
            let nonce = self.rx.next_nonce()?;
            let plain =
                self.rx.key.open_in_place(nonce, Aad::from(header), body).map_err(|_| RecordError::BadRecordMac)?;
            // The inner content type is the last byte that is not padding.
            let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                return Err(RecordError::UnexpectedMessage("record without a content type"));
            };
            let (content, content_type) = (&plain[..end], plain[end]);
            if content.len() > MAX_FRAGMENT_BYTES {
                return Err(RecordError::RecordOverflow);
            }
            if content_type != CONTENT_HANDSHAKE && !self.handshake.is_empty() {
                return Err(RecordError::UnexpectedMessage("record inside a handshake message"));
            }
            match content_type {
                CONTENT_APPLICATION_DATA => deliver(content),
                CONTENT_ALERT => match *content {
                    [_, ALERT_CLOSE_NOTIFY] => return Ok(Opened { consumed: data.len(), peer_closed: true }),
                    [ALERT_WARNING, ALERT_USER_CANCELED] => {}
                    [_, description] => return Err(RecordError::PeerAlert(description)),
                    _ => return Err(RecordError::Decode("alert")),
                },
                CONTENT_HANDSHAKE if content.is_empty() => {
                    return Err(RecordError::UnexpectedMessage("empty handshake record"));
                }
                CONTENT_HANDSHAKE => self.handshake_messages(content, reply)?,
                _ => return Err(RecordError::UnexpectedMessage("record content type")),
            }
        }
    }

    /// Handles the handshake messages in one record's content: only `KeyUpdate` is
    /// allowed after the handshake (the relay asks for no post-handshake authentication).
    fn handshake_messages(&mut self, content: &[u8], reply: &mut Vec<u8>) -> Result<(), RecordError> {
        let pending = std::mem::take(&mut self.handshake);
        let joined: Cow<'_, [u8]> = if pending.is_empty() {
            Cow::Borrowed(content)
        } else {
            let mut joined = pending;
            joined.extend_from_slice(content);
            Cow::Owned(joined)
        };
        let mut messages = &joined[..];
        while let Some(&message_type) = messages.first() {
            if message_type != HANDSHAKE_KEY_UPDATE {
                return Err(RecordError::UnexpectedMessage("handshake message after the handshake"));
            }
            let Some(header) = messages.first_chunk::<4>() else { break };
            if header[1..] != [0, 0, 1] {
                return Err(RecordError::Decode("key update length"));
            }
            let Some(&request) = messages.get(4) else { break };
            messages = &messages[5..];
            // A key change must end its record (RFC 8446 §5.1).
            if !messages.is_empty() {
                return Err(RecordError::UnexpectedMessage("data after a key update in its record"));
            }
            if request != KEY_UPDATE_NOT_REQUESTED && request != KEY_UPDATE_REQUESTED {
                return Err(RecordError::Decode("key update request"));
            }
            self.rx = Direction::new(self.secrets.update_rx_secret()?)?;
            if request == KEY_UPDATE_REQUESTED && !self.update_answered {
                self.update_answered = true;
                let start = reply.len();
                reply.resize(start + KEY_UPDATE_RECORD_BYTES, 0);
                let n = self.update_tx_key(&mut reply[start..])?;
                reply.truncate(start + n);
            }
        }
        self.handshake = messages.to_vec();
        Ok(())
    }

    /// Room `seal` needs for `plain_len` bytes of application data.
    pub(crate) const fn sealed_len(plain_len: usize) -> usize {
        let records = if plain_len == 0 { 1 } else { plain_len.div_ceil(MAX_FRAGMENT_BYTES) };
        plain_len + records * (RECORD_OVERHEAD_BYTES + KEY_UPDATE_RECORD_BYTES)
    }

    /// Seals `plain` as application-data records into `out`, which has at least
    /// [`RecordLayer::sealed_len`] bytes; returns how many it wrote. Replaces the key first
    /// (announcing it with a `KeyUpdate`) where the current one is at its limit.
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        self.update_answered = false;
        let mut written = 0;
        for fragment in plain.chunks(MAX_FRAGMENT_BYTES) {
            if self.tx.seq.saturating_add(1) >= self.tx_records_per_key {
                written += self.update_tx_key(out.get_mut(written..).ok_or(RecordError::OutputTooSmall)?)?;
            }
            let room = out.get_mut(written..).ok_or(RecordError::OutputTooSmall)?;
            written += self.seal_record(CONTENT_APPLICATION_DATA, fragment, room)?;
        }
        Ok(written)
    }

    /// Appends an alert record to `out`: close_notify as a warning, anything else fatal.
    pub(crate) fn seal_alert(&mut self, description: u8, out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        let level = if description == ALERT_CLOSE_NOTIFY { ALERT_WARNING } else { ALERT_FATAL };
        let start = out.len();
        out.resize(start + RECORD_OVERHEAD_BYTES + 2, 0);
        match self.seal_record(CONTENT_ALERT, &[level, description], &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Sends `KeyUpdate(update_not_requested)` under the current key into `out` and
    /// switches to the next key (RFC 8446 §4.6.3).
    fn update_tx_key(&mut self, out: &mut [u8]) -> Result<usize, RecordError> {
        let n = self.seal_record(CONTENT_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, KEY_UPDATE_NOT_REQUESTED], out)?;
        self.tx = Direction::new(self.secrets.update_tx_secret()?)?;
        #[cfg(test)]
        {
            self.tx_key_updates += 1;
        }
        Ok(n)
    }

    /// Seals one record of `content_type` holding `fragment` at the start of `out`.
    fn seal_record(&mut self, content_type: u8, fragment: &[u8], out: &mut [u8]) -> Result<usize, RecordError> {
        let inner = fragment.len() + 1;
        let total = HEADER_BYTES + inner + TAG_BYTES;
        let length = u16::try_from(inner + TAG_BYTES).map_err(|_| RecordError::RecordOverflow)?;
        let [hi, lo] = length.to_be_bytes();
        let header = [CONTENT_APPLICATION_DATA, 0x03, 0x03, hi, lo];
        let record = out.get_mut(..total).ok_or(RecordError::OutputTooSmall)?;
        record[..HEADER_BYTES].copy_from_slice(&header);
        record[HEADER_BYTES..HEADER_BYTES + fragment.len()].copy_from_slice(fragment);
        record[HEADER_BYTES + fragment.len()] = content_type;
        let nonce = self.tx.next_nonce()?;
        let (body, tag) = record[HEADER_BYTES..].split_at_mut(inner);
        let sealed = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), body)
            .map_err(|_| RecordError::Exhausted)?;
        tag.copy_from_slice(sealed.as_ref());
        Ok(total)
    }
}
/// A client that protects records by hand, for tests that send what a well-behaved TLS
/// stack never would (padding, split key updates, bad records).
#[cfg(test)]
pub(crate) mod test_peer {
    use ring::aead::Aad;
    use rustls::ExtractedSecrets;

    use super::{Direction, HEADER_BYTES, TAG_BYTES};

    pub(crate) struct RawPeer {
        tx: Direction,
        rx: Direction,
    }

    impl RawPeer {
        pub(crate) fn new(secrets: ExtractedSecrets) -> Self {
            RawPeer {
                tx: Direction::new(secrets.tx).expect("client tx keys"),
                rx: Direction::new(secrets.rx).expect("client rx keys"),
            }
        }

        /// A record whose inner content is `content`, `content_type` and `padding` zeros.
        pub(crate) fn record(&mut self, content_type: u8, content: &[u8], padding: usize) -> Vec<u8> {
            let mut inner = content.to_vec();
            inner.push(content_type);
            inner.resize(inner.len() + padding, 0);
            self.seal_inner(inner)
        }

        /// A record whose inner plaintext is exactly `inner` (no content type added).
        pub(crate) fn seal_inner(&mut self, mut inner: Vec<u8>) -> Vec<u8> {
            let length = u16::try_from(inner.len() + TAG_BYTES).expect("record length");
            let [hi, lo] = length.to_be_bytes();
            let header = [23, 3, 3, hi, lo];
            let nonce = self.tx.next_nonce().expect("nonce");
            let tag = self.tx.key.seal_in_place_separate_tag(nonce, Aad::from(header), &mut inner).expect("seal");
            let mut record = header.to_vec();
            record.extend_from_slice(&inner);
            record.extend_from_slice(tag.as_ref());
            record
        }

        /// Opens the record at the start of `data`: its inner content type, its content and
        /// the bytes it took; `None` while it is incomplete, `Some(Err)` when it does not
        /// authenticate under the current key.
        #[allow(clippy::type_complexity)]
        pub(crate) fn open(&mut self, data: &mut [u8]) -> Option<Result<(u8, Vec<u8>, usize), ()>> {
            let header: [u8; HEADER_BYTES] = *data.first_chunk()?;
            let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let body = data.get_mut(HEADER_BYTES..HEADER_BYTES + length)?;
            let nonce = self.rx.next_nonce().expect("nonce");
            let Ok(plain) = self.rx.key.open_in_place(nonce, Aad::from(header), body) else {
                return Some(Err(()));
            };
            let end = plain.iter().rposition(|&b| b != 0).expect("content type");
            Some(Ok((plain[end], plain[..end].to_vec(), HEADER_BYTES + length)))
        }
    }
}
