//! The device channel: length-prefixed binary frames over a persistent TLS connection.
//!
//! ```text
//! frame   = length:u32 type:u8 body        (big-endian; length counts type + body)
//! ```
//!
//! The length prefix is checked against the negotiated maximum *before* any buffer is
//! grown, so a peer cannot make the relay allocate more than `max_frame_bytes`.
//! Payloads of forwarded frames are end-to-end encrypted by the endpoints; the relay moves
//! them as [`Bytes`] slices of its read buffer without looking inside.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use crate::codes::{CloseCode, RenewalRefusal, UndeliverableReason};
use crate::ids::DeviceId;

/// The four bytes that open a hello: lets the relay reject other protocols at once.
pub const MAGIC: [u8; 4] = *b"NOCD";
/// Device-channel protocol versions this crate speaks, newest last. Version 2 adds the
/// remote wipe (WIPE / WIPE_DONE, docs/protocol.md §6.3.1); version 3 adds AUTH_CERT,
/// authentication by the client certificate of the TLS handshake (§6.3.2), and its
/// renewal on an established session (CERT_RENEW, CERT_ISSUED, CERT_REFUSED, §6.4.6);
/// everything else is as in 1.
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2, 3];
/// The first version in which the relay may answer an authentication with WIPE.
pub const WIPE_VERSION: u16 = 2;
/// The first version in which a device may authenticate with AUTH_CERT.
pub const CERT_AUTH_VERSION: u16 = 3;
/// Size of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Default maximum of `length` (type byte + body): 64 KiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 64 * 1024;
/// Bytes of a FORWARD frame that are not payload: type, kind, frame id.
pub const FORWARD_OVERHEAD_BYTES: u32 = 1 + 1 + 8;
/// Most versions a hello may list.
pub const MAX_HELLO_VERSIONS: usize = 16;
/// Longest credential accepted in AUTH_TOKEN.
pub const MAX_CREDENTIAL_BYTES: usize = 64;

/// Frame type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Hello = 0x01,
    HelloAck = 0x02,
    AuthToken = 0x03,
    AuthPassword = 0x04,
    AuthOk = 0x05,
    Close = 0x06,
    Wipe = 0x07,
    WipeDone = 0x08,
    AuthCert = 0x09,
    CertRenew = 0x0a,
    CertIssued = 0x0b,
    CertRefused = 0x0c,
    Forward = 0x10,
    Ack = 0x11,
    Undeliverable = 0x12,
    Heartbeat = 0x20,
}

impl FrameType {
    /// The name used in docs/protocol.md and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "HELLO",
            FrameType::HelloAck => "HELLO_ACK",
            FrameType::AuthToken => "AUTH_TOKEN",
            FrameType::AuthPassword => "AUTH_PASSWORD",
            FrameType::AuthOk => "AUTH_OK",
            FrameType::Close => "CLOSE",
            FrameType::Wipe => "WIPE",
            FrameType::WipeDone => "WIPE_DONE",
            FrameType::AuthCert => "AUTH_CERT",
            FrameType::CertRenew => "CERT_RENEW",
            FrameType::CertIssued => "CERT_ISSUED",
            FrameType::CertRefused => "CERT_REFUSED",
            FrameType::Forward => "FORWARD",
            FrameType::Ack => "ACK",
            FrameType::Undeliverable => "UNDELIVERABLE",
            FrameType::Heartbeat => "HEARTBEAT",
        }
    }

    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => FrameType::Hello,
            0x02 => FrameType::HelloAck,
            0x03 => FrameType::AuthToken,
            0x04 => FrameType::AuthPassword,
            0x05 => FrameType::AuthOk,
            0x06 => FrameType::Close,
            0x07 => FrameType::Wipe,
            0x08 => FrameType::WipeDone,
            0x09 => FrameType::AuthCert,
            0x0a => FrameType::CertRenew,
            0x0b => FrameType::CertIssued,
            0x0c => FrameType::CertRefused,
            0x10 => FrameType::Forward,
            0x11 => FrameType::Ack,
            0x12 => FrameType::Undeliverable,
            0x20 => FrameType::Heartbeat,
            _ => return None,
        })
    }
}

/// What a forwarded frame carries. The relay routes all kinds identically; the kind is
/// visible so that endpoints can dispatch before decrypting (white paper §11: WakeUp,
/// WakeUpAck and the key agreement precede encrypted data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardKind {
    WakeUp,
    WakeUpAck,
    KeyExchange,
    Data,
}

impl ForwardKind {
    pub const ALL: [ForwardKind; 4] =
        [ForwardKind::WakeUp, ForwardKind::WakeUpAck, ForwardKind::KeyExchange, ForwardKind::Data];

    pub fn as_u8(self) -> u8 {
        match self {
            ForwardKind::WakeUp => 1,
            ForwardKind::WakeUpAck => 2,
            ForwardKind::KeyExchange => 3,
            ForwardKind::Data => 4,
        }
    }

    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => ForwardKind::WakeUp,
            2 => ForwardKind::WakeUpAck,
            3 => ForwardKind::KeyExchange,
            4 => ForwardKind::Data,
            _ => return None,
        })
    }

    /// The name used in RTS JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardKind::WakeUp => "WakeUp",
            ForwardKind::WakeUpAck => "WakeUpAck",
            ForwardKind::KeyExchange => "KeyExchange",
            ForwardKind::Data => "Data",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ForwardKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl serde::Serialize for ForwardKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ForwardKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ForwardKind::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown frame kind {s:?} (expected WakeUp, WakeUpAck, KeyExchange or Data)"
            ))
        })
    }
}

/// One device-channel frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Device → relay, first frame: the protocol versions the device speaks.
    Hello { versions: Vec<u16> },
    /// Relay → device: the chosen version.
    HelloAck { version: u16 },
    /// Device → relay: authenticate with the credential issued at activation.
    AuthToken { device_id: DeviceId, credential: Bytes },
    /// Device → relay: authenticate with MSISDN + account password + device id.
    AuthPassword { device_id: DeviceId, msisdn: String, password: String },
    /// Relay → device: authenticated; the session's timing and size parameters.
    AuthOk { heartbeat_interval_seconds: u32, idle_timeout_seconds: u32, max_frame_bytes: u32 },
    /// Either way: the sender closes the connection after this frame.
    Close { code: CloseCode, reconnect_after_ms: u32, message: String },
    /// Relay → device (version 2), in place of AUTH_OK: the user asked for a remote wipe;
    /// erase the local store and credentials, then answer WIPE_DONE.
    Wipe,
    /// Device → relay (version 2): the local store and credentials are erased.
    WipeDone,
    /// Device → relay (version 3): authenticate as `device_id` with the client certificate
    /// the device presented in the TLS handshake (no secret in the frame).
    AuthCert { device_id: DeviceId },
    /// Device → relay (version 3, established session): a PKCS#10 certificate request
    /// (DER) for a new client certificate, for a key the device just made.
    CertRenew { csr: Bytes },
    /// Relay → device (version 3): the new client certificate (DER); the one it replaces
    /// is no longer accepted from now on.
    CertIssued { certificate: Bytes },
    /// Relay → device (version 3): no certificate for the CERT_RENEW, and why.
    CertRefused { reason: RenewalRefusal, message: String },
    /// Either way: an opaque end-to-end frame to or from the user's VES.
    Forward { kind: ForwardKind, frame_id: u64, payload: Bytes },
    /// Either way: end-to-end acknowledgement of a forwarded frame.
    Ack { frame_id: u64 },
    /// Relay → device: the frame could not be delivered; keep it and retry later.
    Undeliverable { frame_id: u64, reason: UndeliverableReason },
    /// Either way: keeps the connection (and NAT bindings) alive.
    Heartbeat,
}

impl Frame {
    /// The frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello { .. } => FrameType::Hello,
            Frame::HelloAck { .. } => FrameType::HelloAck,
            Frame::AuthToken { .. } => FrameType::AuthToken,
            Frame::AuthPassword { .. } => FrameType::AuthPassword,
            Frame::AuthOk { .. } => FrameType::AuthOk,
            Frame::Close { .. } => FrameType::Close,
            Frame::Wipe => FrameType::Wipe,
            Frame::WipeDone => FrameType::WipeDone,
            Frame::AuthCert { .. } => FrameType::AuthCert,
            Frame::CertRenew { .. } => FrameType::CertRenew,
            Frame::CertIssued { .. } => FrameType::CertIssued,
            Frame::CertRefused { .. } => FrameType::CertRefused,
            Frame::Forward { .. } => FrameType::Forward,
            Frame::Ack { .. } => FrameType::Ack,
            Frame::Undeliverable { .. } => FrameType::Undeliverable,
            Frame::Heartbeat => FrameType::Heartbeat,
        }
    }

    /// Appends the encoded frame (length prefix included) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_u32(0); // patched below
        dst.put_u8(self.frame_type() as u8);
        match self {
            Frame::Hello { versions } => {
                dst.put_slice(&MAGIC);
                dst.put_u8(versions.len().min(MAX_HELLO_VERSIONS) as u8);
                for v in versions.iter().take(MAX_HELLO_VERSIONS) {
                    dst.put_u16(*v);
                }
            }
            Frame::HelloAck { version } => dst.put_u16(*version),
            Frame::AuthToken { device_id, credential } => {
                dst.put_slice(device_id.as_bytes());
                let cred = &credential[..credential.len().min(MAX_CREDENTIAL_BYTES)];
                dst.put_u8(cred.len() as u8);
                dst.put_slice(cred);
            }
            Frame::AuthPassword { device_id, msisdn, password } => {
                dst.put_slice(device_id.as_bytes());
                put_str16(dst, msisdn);
                put_str16(dst, password);
            }
            Frame::AuthCert { device_id } => dst.put_slice(device_id.as_bytes()),
            Frame::CertRenew { csr: der } | Frame::CertIssued { certificate: der } => dst.put_slice(der),
            Frame::CertRefused { reason, message } => {
                dst.put_u16(reason.as_u16());
                put_str16(dst, message);
            }
            Frame::AuthOk { heartbeat_interval_seconds, idle_timeout_seconds, max_frame_bytes } => {
                dst.put_u32(*heartbeat_interval_seconds);
                dst.put_u32(*idle_timeout_seconds);
                dst.put_u32(*max_frame_bytes);
            }
            Frame::Close { code, reconnect_after_ms, message } => {
                dst.put_u16(code.as_u16());
                dst.put_u32(*reconnect_after_ms);
                put_str16(dst, message);
            }
            Frame::Forward { kind, frame_id, payload } => {
                dst.put_u8(kind.as_u8());
                dst.put_u64(*frame_id);
                dst.put_slice(payload);
            }
            Frame::Ack { frame_id } => dst.put_u64(*frame_id),
            Frame::Undeliverable { frame_id, reason } => {
                dst.put_u64(*frame_id);
                dst.put_u16(reason.as_u16());
            }
            Frame::Heartbeat | Frame::Wipe | Frame::WipeDone => {}
        }
        let len = (dst.len() - start - LENGTH_PREFIX_BYTES) as u32;
        dst[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode(&mut b);
        b.freeze()
    }

    fn encoded_len_hint(&self) -> usize {
        LENGTH_PREFIX_BYTES
            + 1
            + match self {
                Frame::Forward { payload, .. } => 9 + payload.len(),
                Frame::AuthPassword { msisdn, password, .. } => 20 + msisdn.len() + password.len(),
                Frame::Close { message, .. } => 8 + message.len(),
                Frame::CertRenew { csr: der } | Frame::CertIssued { certificate: der } => der.len(),
                _ => 64,
            }
    }

    /// Decodes one frame body (`type` byte + body, without the length prefix).
    pub fn decode_body(mut body: Bytes) -> Result<Frame, FrameError> {
        if body.is_empty() {
            return Err(FrameError::Malformed("empty frame"));
        }
        let ty = body.get_u8();
        let ty = FrameType::from_u8(ty).ok_or(FrameError::UnknownType(ty))?;
        let frame = match ty {
            FrameType::Hello => {
                let magic = take(&mut body, 4, "hello magic")?;
                if magic[..] != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                let n = get_u8(&mut body, "hello version count")? as usize;
                if n == 0 || n > MAX_HELLO_VERSIONS {
                    return Err(FrameError::Malformed("hello must list 1 to 16 versions"));
                }
                let mut versions = Vec::with_capacity(n);
                for _ in 0..n {
                    versions.push(get_u16(&mut body, "hello version")?);
                }
                Frame::Hello { versions }
            }
            FrameType::HelloAck => Frame::HelloAck { version: get_u16(&mut body, "version")? },
            FrameType::AuthToken => {
                let device_id = get_device_id(&mut body)?;
                let n = get_u8(&mut body, "credential length")? as usize;
                if n > MAX_CREDENTIAL_BYTES {
                    return Err(FrameError::Malformed("credential longer than 64 bytes"));
                }
                let credential = take(&mut body, n, "credential")?;
                Frame::AuthToken { device_id, credential }
            }
            FrameType::AuthPassword => {
                let device_id = get_device_id(&mut body)?;
                let msisdn = get_str16(&mut body, "msisdn")?;
                let password = get_str16(&mut body, "password")?;
                Frame::AuthPassword { device_id, msisdn, password }
            }
            FrameType::AuthOk => Frame::AuthOk {
                heartbeat_interval_seconds: get_u32(&mut body, "heartbeat interval")?,
                idle_timeout_seconds: get_u32(&mut body, "idle timeout")?,
                max_frame_bytes: get_u32(&mut body, "max frame bytes")?,
            },
            FrameType::Close => Frame::Close {
                code: CloseCode::from_u16(get_u16(&mut body, "close code")?),
                reconnect_after_ms: get_u32(&mut body, "reconnect after")?,
                message: get_str16(&mut body, "close message")?,
            },
            FrameType::Forward => {
                let kind = get_u8(&mut body, "forward kind")?;
                let kind = ForwardKind::from_u8(kind).ok_or(FrameError::Malformed("unknown forward kind"))?;
                let frame_id = get_u64(&mut body, "frame id")?;
                // The payload is the rest of the frame: a zero-copy slice.
                return Ok(Frame::Forward { kind, frame_id, payload: body });
            }
            FrameType::Ack => Frame::Ack { frame_id: get_u64(&mut body, "frame id")? },
            FrameType::Undeliverable => Frame::Undeliverable {
                frame_id: get_u64(&mut body, "frame id")?,
                reason: UndeliverableReason::from_u16(get_u16(&mut body, "reason")?),
            },
            FrameType::Heartbeat => Frame::Heartbeat,
            FrameType::Wipe => Frame::Wipe,
            FrameType::WipeDone => Frame::WipeDone,
            FrameType::AuthCert => Frame::AuthCert { device_id: get_device_id(&mut body)? },
            // The DER is the rest of the frame (checked by whoever reads it).
            FrameType::CertRenew => return Ok(Frame::CertRenew { csr: body }),
            FrameType::CertIssued => return Ok(Frame::CertIssued { certificate: body }),
            FrameType::CertRefused => Frame::CertRefused {
                reason: RenewalRefusal::from_u16(get_u16(&mut body, "refusal reason")?),
                message: get_str16(&mut body, "refusal message")?,
            },
        };
        if body.has_remaining() {
            return Err(FrameError::Malformed("trailing bytes after frame body"));
        }
        Ok(frame)
    }
}

/// Why bytes from a peer are not a valid frame. Every variant is fatal for the connection:
/// after a framing error the stream position cannot be trusted.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("hello does not start with the NOCD magic (not a device-channel client?)")]
    BadMagic,
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The close code to send before hanging up.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::TooLarge { .. } => CloseCode::FrameTooLarge,
            FrameError::BadMagic | FrameError::UnknownType(_) | FrameError::Malformed(_) => CloseCode::MalformedFrame,
            FrameError::Io(_) => CloseCode::Normal,
        }
    }
}

/// `tokio_util` codec for the device channel, used by both sides.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame_bytes: u32,
}

impl FrameCodec {
    pub fn new(max_frame_bytes: u32) -> Self {
        Self { max_frame_bytes }
    }

    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if len == 0 {
            return Err(FrameError::Malformed("zero-length frame"));
        }
        if len > self.max_frame_bytes {
            // Rejected before reserving anything for it.
            return Err(FrameError::TooLarge { len, max: self.max_frame_bytes });
        }
        let total = LENGTH_PREFIX_BYTES + len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        let body = src.split_to(len as usize).freeze();
        Frame::decode_body(body).map(Some)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode(dst);
        Ok(())
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode(dst);
        Ok(())
    }
}

fn put_str16(dst: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    dst.put_u16(bytes.len() as u16);
    dst.put_slice(bytes);
}

fn need(body: &Bytes, n: usize, what: &'static str) -> Result<(), FrameError> {
    if body.remaining() < n {
        return Err(FrameError::Malformed(what));
    }
    Ok(())
}

fn get_u8(body: &mut Bytes, what: &'static str) -> Result<u8, FrameError> {
    need(body, 1, what)?;
    Ok(body.get_u8())
}

fn get_u16(body: &mut Bytes, what: &'static str) -> Result<u16, FrameError> {
    need(body, 2, what)?;
    Ok(body.get_u16())
}

fn get_u32(body: &mut Bytes, what: &'static str) -> Result<u32, FrameError> {
    need(body, 4, what)?;
    Ok(body.get_u32())
}

fn get_u64(body: &mut Bytes, what: &'static str) -> Result<u64, FrameError> {
    need(body, 8, what)?;
    Ok(body.get_u64())
}

fn take(body: &mut Bytes, n: usize, what: &'static str) -> Result<Bytes, FrameError> {
    need(body, n, what)?;
    Ok(body.split_to(n))
}

fn get_device_id(body: &mut Bytes) -> Result<DeviceId, FrameError> {
    let raw = take(body, 16, "device id")?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&raw);
    Ok(DeviceId::from_bytes(id))
}

fn get_str16(body: &mut Bytes, what: &'static str) -> Result<String, FrameError> {
    let n = get_u16(body, what)? as usize;
    let raw = take(body, n, what)?;
    String::from_utf8(raw.to_vec()).map_err(|_| FrameError::Malformed("string is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello { versions: vec![1, 2] },
            Frame::HelloAck { version: 1 },
            Frame::AuthToken { device_id: DeviceId::random(), credential: Bytes::from_static(&[7; 32]) },
            Frame::AuthPassword {
                device_id: DeviceId::random(),
                msisdn: "+15550100".into(),
                password: "pässword".into(),
            },
            Frame::AuthOk { heartbeat_interval_seconds: 60, idle_timeout_seconds: 180, max_frame_bytes: 65536 },
            Frame::Close { code: CloseCode::Replaced, reconnect_after_ms: 1500, message: "replaced".into() },
            Frame::Forward { kind: ForwardKind::Data, frame_id: u64::MAX, payload: Bytes::from_static(b"opaque") },
            Frame::Forward { kind: ForwardKind::WakeUp, frame_id: 0, payload: Bytes::new() },
            Frame::Ack { frame_id: 42 },
            Frame::Undeliverable { frame_id: 9, reason: UndeliverableReason::PeerOffline },
            Frame::Heartbeat,
            Frame::Wipe,
            Frame::WipeDone,
            Frame::AuthCert { device_id: DeviceId::random() },
            Frame::CertRenew { csr: Bytes::from_static(&[0x30, 0x82, 1, 2]) },
            Frame::CertIssued { certificate: Bytes::from_static(&[0x30, 0x82, 3, 4]) },
            Frame::CertRefused { reason: RenewalRefusal::BadRequest, message: "weak key".into() },
        ]
    }

    #[test]
    fn every_frame_round_trips_through_the_codec() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let frames = all_frames();
        for f in &frames {
            codec.encode(f, &mut buf).expect("encode");
        }
        for f in frames {
            let got = codec.decode(&mut buf).expect("decode").expect("complete frame");
            assert_eq!(f, got);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let bytes = Frame::Ack { frame_id: 5 }.to_bytes();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let out = codec.decode(&mut buf).expect("decode");
            if i + 1 < bytes.len() {
                assert!(out.is_none());
            } else {
                assert_eq!(out, Some(Frame::Ack { frame_id: 5 }));
            }
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(1025);
        buf.put_u8(FrameType::Forward as u8);
        let cap_before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { len: 1025, max: 1024 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), cap_before, "no buffer growth for a rejected frame");
    }

    #[test]
    fn http_request_is_rejected_as_oversized() {
        // "GET " as a length prefix is ~1.2 GB.
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let err = FrameCodec::default().decode(&mut buf).expect_err("must fail");
        assert_eq!(err.close_code(), CloseCode::FrameTooLarge);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let cases: Vec<&[u8]> = vec![
            &[0xFF],                                  // unknown type
            &[0x01, b'X', b'X', b'X', b'X', 1],       // bad magic
            &[0x01, b'N', b'O', b'C', b'D', 0],       // zero versions
            &[0x01, b'N', b'O', b'C', b'D', 2, 0, 1], // truncated versions
            &[0x03, 1, 2, 3],                         // truncated device id
            &[0x10, 9, 0, 0, 0, 0, 0, 0, 0, 1],       // unknown forward kind
            &[0x10, 4, 0, 0],                         // truncated frame id
            &[0x11, 0, 0, 0, 0, 0, 0, 0, 1, 99],      // trailing bytes
            &[0x06, 0, 1, 0, 0, 0, 0, 0, 5, b'a'],    // string shorter than its length
            &[0x07, 0],                               // WIPE has no body
            &[0x09, 1, 2, 3],                         // AUTH_CERT: truncated device id
        ];
        for body in cases {
            let err = Frame::decode_body(Bytes::copy_from_slice(body));
            assert!(err.is_err(), "{body:?} should not decode");
        }
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(FrameCodec::default().decode(&mut buf).is_err(), "zero length");
    }

    #[test]
    fn wire_layout_is_stable() {
        // Byte-exact examples that docs/protocol.md also shows.
        let hello = Frame::Hello { versions: vec![1] }.to_bytes();
        assert_eq!(&hello[..], &[0, 0, 0, 8, 0x01, b'N', b'O', b'C', b'D', 1, 0, 1]);
        let fwd =
            Frame::Forward { kind: ForwardKind::Data, frame_id: 7, payload: Bytes::from_static(b"hi") }.to_bytes();
        assert_eq!(&fwd[..], &[0, 0, 0, 12, 0x10, 4, 0, 0, 0, 0, 0, 0, 0, 7, b'h', b'i']);
        let ack = Frame::Ack { frame_id: 7 }.to_bytes();
        assert_eq!(&ack[..], &[0, 0, 0, 9, 0x11, 0, 0, 0, 0, 0, 0, 0, 7]);
        let hb = Frame::Heartbeat.to_bytes();
        assert_eq!(&hb[..], &[0, 0, 0, 1, 0x20]);
    }

    fn unhex(s: &str) -> Vec<u8> {
        let digits: String = s.split_whitespace().collect();
        hex::decode(digits).expect("hex")
    }

    #[test]
    fn documented_handshake_examples_are_exact() {
        // The further examples of docs/protocol.md §6.5, byte for byte.
        let device_id: DeviceId = "6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a".parse().expect("uuid");
        let cases = [
            (Frame::HelloAck { version: 1 }, "00 00 00 03 02 00 01"),
            (
                Frame::AuthToken { device_id, credential: Bytes::from((0u8..32).collect::<Vec<_>>()) },
                "00 00 00 32 03 6f1c2a4e8d1b4c479b7e1f0e2d3c4b5a 20 \
                 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            ),
            (
                Frame::AuthPassword { device_id, msisdn: "+15550100".into(), password: "secret-pw".into() },
                "00 00 00 27 04 6f1c2a4e8d1b4c479b7e1f0e2d3c4b5a 0009 2b3135353530313030 0009 7365637265742d7077",
            ),
            (
                Frame::AuthOk { heartbeat_interval_seconds: 60, idle_timeout_seconds: 180, max_frame_bytes: 65536 },
                "00 00 00 0d 05 0000003c 000000b4 00010000",
            ),
            (
                Frame::Close {
                    code: CloseCode::ServerDraining,
                    reconnect_after_ms: 2500,
                    message: "server_draining".into(),
                },
                "00 00 00 18 06 000a 000009c4 000f 7365727665725f647261696e696e67",
            ),
            (
                Frame::Undeliverable { frame_id: 9, reason: UndeliverableReason::PeerOffline },
                "00 00 00 0b 12 0000000000000009 0001",
            ),
            (Frame::Wipe, "00 00 00 01 07"),
            (Frame::WipeDone, "00 00 00 01 08"),
            (Frame::AuthCert { device_id }, "00 00 00 11 09 6f1c2a4e8d1b4c479b7e1f0e2d3c4b5a"),
            (
                Frame::CertRenew { csr: Bytes::from_static(&[0x30, 0x03, 0x02, 0x01, 0x00]) },
                "00 00 00 06 0a 3003020100",
            ),
            (
                Frame::CertRefused { reason: RenewalRefusal::Unavailable, message: "later".into() },
                "00 00 00 0a 0c 0002 0005 6c61746572",
            ),
        ];
        for (frame, hex) in cases {
            let bytes = unhex(hex);
            assert_eq!(frame.to_bytes().to_vec(), bytes, "{frame:?}");
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(FrameCodec::default().decode(&mut buf).expect("decode"), Some(frame));
        }
    }
}
