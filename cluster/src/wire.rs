//! Binary encoding of [`BusMessage`] for bus backends that carry bytes (Redis pub/sub).
//!
//! Compact and versioned: one version byte, a tag byte, then fixed-width fields
//! (big-endian) and length-prefixed variable ones. Payloads are copied once into the
//! message and sliced out zero-copy on decode. Commands and user records, which are rare,
//! travel as their JSON. A message from a newer node with an unknown version or tag
//! decodes to an error and is dropped (counted) rather than misread.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use noc_protocol::device::ForwardKind;
use noc_protocol::rts::fetch::RequestId;
use noc_protocol::{CloseCode, DeviceId, UndeliverableReason, UserId, VesId};

use crate::{BusMessage, DeviceItem, SessionKey, VesItem};

const VERSION: u8 = 1;

mod tag {
    pub const DEVICE_FORWARD: u8 = 1;
    pub const DEVICE_ACK: u8 = 2;
    pub const DEVICE_UNDELIVERABLE: u8 = 3;
    pub const VES_FRAME: u8 = 10;
    pub const VES_ACK: u8 = 11;
    pub const VES_UNDELIVERABLE: u8 = 12;
    pub const VES_COMMAND: u8 = 13;
    pub const DIRECTORY: u8 = 20;
    pub const CLOSE_DEVICE: u8 = 21;
    pub const CLOSE_VES: u8 = 22;
    pub const USER_ACTIVATED: u8 = 23;
    pub const USER_REMOVED: u8 = 24;
    pub const USER_SETTINGS: u8 = 25;
    pub const FETCH: u8 = 30;
    pub const FETCH_DONE: u8 = 31;
    pub const BUNDLE: u8 = 40;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unsupported bus message version {0}")]
    Version(u8),
    #[error("unknown bus message tag {0}")]
    Tag(u8),
    #[error("truncated bus message")]
    Truncated,
    #[error("invalid bus message: {0}")]
    Invalid(&'static str),
    #[error("this message is local and never sent")]
    LocalOnly,
}

fn uuid(b: &mut BytesMut, id: &[u8; 16]) {
    b.put_slice(id);
}

/// Encodes a message for the bus.
pub fn encode(msg: &BusMessage) -> Result<Bytes, WireError> {
    let mut b = BytesMut::with_capacity(64);
    encode_into(&mut b, msg)?;
    Ok(b.freeze())
}

/// Encodes a message at the end of `b` (on an error, `b` may hold part of it).
fn encode_into(b: &mut BytesMut, msg: &BusMessage) -> Result<(), WireError> {
    b.put_u8(VERSION);
    match msg {
        BusMessage::ToDevice { device_id, item } => match item {
            DeviceItem::Forward { origin, kind, frame_id, payload } => {
                b.reserve(payload.len() + 48);
                b.put_u8(tag::DEVICE_FORWARD);
                uuid(b, device_id.as_bytes());
                uuid(b, origin.as_bytes());
                b.put_u8(kind.as_u8());
                b.put_u64(*frame_id);
                b.put_slice(payload);
            }
            DeviceItem::Ack { frame_id } => {
                b.put_u8(tag::DEVICE_ACK);
                uuid(b, device_id.as_bytes());
                b.put_u64(*frame_id);
            }
            DeviceItem::Undeliverable { frame_id, reason } => {
                b.put_u8(tag::DEVICE_UNDELIVERABLE);
                uuid(b, device_id.as_bytes());
                b.put_u64(*frame_id);
                b.put_u16(reason.as_u16());
            }
        },
        BusMessage::ToVes { ves_id, item } => match item {
            VesItem::Frame { device_id, user_id, frame_id, kind, payload } => {
                b.reserve(payload.len() + 64);
                b.put_u8(tag::VES_FRAME);
                uuid(b, ves_id.as_bytes());
                uuid(b, device_id.as_bytes());
                uuid(b, user_id.as_bytes());
                b.put_u8(kind.as_u8());
                b.put_u64(*frame_id);
                b.put_slice(payload);
            }
            VesItem::Ack { device_id, frame_id } => {
                b.put_u8(tag::VES_ACK);
                uuid(b, ves_id.as_bytes());
                uuid(b, device_id.as_bytes());
                b.put_u64(*frame_id);
            }
            VesItem::Undeliverable { device_id, frame_id, reason } => {
                b.put_u8(tag::VES_UNDELIVERABLE);
                uuid(b, ves_id.as_bytes());
                uuid(b, device_id.as_bytes());
                b.put_u64(*frame_id);
                b.put_u16(reason.as_u16());
            }
            VesItem::Command(cmd) => {
                b.put_u8(tag::VES_COMMAND);
                uuid(b, ves_id.as_bytes());
                let json = serde_json::to_vec(cmd).map_err(|_| WireError::Invalid("command not serialisable"))?;
                b.put_slice(&json);
            }
        },
        BusMessage::DirectoryUpdate { ves_id, device_id, user_id, present } => {
            b.put_u8(tag::DIRECTORY);
            uuid(b, ves_id.as_bytes());
            uuid(b, device_id.as_bytes());
            uuid(b, user_id.as_bytes());
            b.put_u8(u8::from(*present));
        }
        BusMessage::Close { key, code } => {
            match key {
                SessionKey::Device(id) => {
                    b.put_u8(tag::CLOSE_DEVICE);
                    uuid(b, id.as_bytes());
                }
                SessionKey::Ves(id) => {
                    b.put_u8(tag::CLOSE_VES);
                    uuid(b, id.as_bytes());
                }
            }
            b.put_u16(code.as_u16());
        }
        BusMessage::UserActivated { ves_id, user, constant_sync, filter_rules } => {
            b.put_u8(tag::USER_ACTIVATED);
            uuid(b, ves_id.as_bytes());
            b.put_u8(u8::from(*constant_sync));
            let json = serde_json::to_vec(&(user, filter_rules)).map_err(|_| WireError::Invalid("user"))?;
            b.put_slice(&json);
        }
        BusMessage::UserRemoved { ves_id, user_id } => {
            b.put_u8(tag::USER_REMOVED);
            uuid(b, ves_id.as_bytes());
            uuid(b, user_id.as_bytes());
        }
        BusMessage::UserSettings { ves_id, user_id, constant_sync, filter_rules } => {
            b.put_u8(tag::USER_SETTINGS);
            uuid(b, ves_id.as_bytes());
            uuid(b, user_id.as_bytes());
            b.put_u8(u8::from(*constant_sync));
            let json = serde_json::to_vec(filter_rules).map_err(|_| WireError::Invalid("filter rules"))?;
            b.put_slice(&json);
        }
        BusMessage::Fetch { ves_id, origin, call } => {
            b.put_u8(tag::FETCH);
            uuid(b, ves_id.as_bytes());
            let origin = origin.as_str().as_bytes();
            b.put_u16(u16::try_from(origin.len()).map_err(|_| WireError::Invalid("node id"))?);
            b.put_slice(origin);
            let json = serde_json::to_vec(call).map_err(|_| WireError::Invalid("fetch"))?;
            b.put_slice(&json);
        }
        BusMessage::FetchDone { request_id, outcome } => {
            b.put_u8(tag::FETCH_DONE);
            b.put_slice(&request_id.0);
            let json = serde_json::to_vec(outcome).map_err(|_| WireError::Invalid("fetch outcome"))?;
            b.put_slice(&json);
        }
        BusMessage::Returned(_) => return Err(WireError::LocalOnly),
    }
    Ok(())
}

/// Several messages for one node in one bus payload: the version, [`tag::BUNDLE`], then
/// each message as its length (`u32`) and its encoding. One `PUBLISH` carries them all, so
/// Redis handles one command and the receiving node one pushed message, instead of one
/// per message.
pub struct Bundle {
    buf: BytesMut,
    count: usize,
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundle {
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(512);
        buf.put_u8(VERSION);
        buf.put_u8(tag::BUNDLE);
        Self { buf, count: 0 }
    }

    /// Adds `msg`; on an error the bundle is as it was.
    pub fn push(&mut self, msg: &BusMessage) -> Result<(), WireError> {
        let at = self.buf.len();
        self.buf.put_u32(0);
        let len = encode_into(&mut self.buf, msg)
            .and_then(|()| u32::try_from(self.buf.len() - at - 4).map_err(|_| WireError::Invalid("message too large")));
        match len {
            Ok(len) => {
                self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                self.count += 1;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(at);
                Err(e)
            }
        }
    }

    /// Messages in the bundle.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes of the payload so far.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

fn need(b: &Bytes, n: usize) -> Result<(), WireError> {
    if b.remaining() < n { Err(WireError::Truncated) } else { Ok(()) }
}

fn get_uuid(b: &mut Bytes) -> Result<[u8; 16], WireError> {
    need(b, 16)?;
    let mut id = [0u8; 16];
    b.copy_to_slice(&mut id);
    Ok(id)
}

fn get_u8(b: &mut Bytes) -> Result<u8, WireError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Result<u16, WireError> {
    need(b, 2)?;
    Ok(b.get_u16())
}

fn get_u64(b: &mut Bytes) -> Result<u64, WireError> {
    need(b, 8)?;
    Ok(b.get_u64())
}

fn get_kind(b: &mut Bytes) -> Result<ForwardKind, WireError> {
    ForwardKind::from_u8(get_u8(b)?).ok_or(WireError::Invalid("frame kind"))
}

/// The messages of a payload received from the bus, in order: one message, or each of a
/// [`Bundle`]. A bundle's damaged entry ends it with an error: what follows cannot be
/// found.
pub fn decode_each(b: Bytes) -> Messages {
    if b.len() >= 2 && b[0] == VERSION && b[1] == tag::BUNDLE {
        Messages::Bundle(b.slice(2..))
    } else {
        Messages::One(Some(b))
    }
}

/// The messages of one bus payload (see [`decode_each`]).
pub enum Messages {
    One(Option<Bytes>),
    Bundle(Bytes),
    Done,
}

impl Iterator for Messages {
    type Item = Result<BusMessage, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Messages::One(b) => b.take().map(decode),
            Messages::Done => None,
            Messages::Bundle(rest) if rest.is_empty() => None,
            Messages::Bundle(rest) => {
                let len = (rest.len() >= 4).then(|| rest.get_u32()).and_then(|len| usize::try_from(len).ok());
                match len {
                    Some(len) if len <= rest.len() => Some(decode(rest.split_to(len))),
                    _ => {
                        *self = Messages::Done;
                        Some(Err(WireError::Truncated))
                    }
                }
            }
        }
    }
}

/// Decodes a message received from the bus (a bundle is not one: see [`decode_each`]).
pub fn decode(mut b: Bytes) -> Result<BusMessage, WireError> {
    let version = get_u8(&mut b)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let t = get_u8(&mut b)?;
    Ok(match t {
        tag::DEVICE_FORWARD => {
            let device_id = DeviceId::from_bytes(get_uuid(&mut b)?);
            let origin = VesId::from_bytes(get_uuid(&mut b)?);
            let kind = get_kind(&mut b)?;
            let frame_id = get_u64(&mut b)?;
            BusMessage::ToDevice { device_id, item: DeviceItem::Forward { origin, kind, frame_id, payload: b } }
        }
        tag::DEVICE_ACK => BusMessage::ToDevice {
            device_id: DeviceId::from_bytes(get_uuid(&mut b)?),
            item: DeviceItem::Ack { frame_id: get_u64(&mut b)? },
        },
        tag::DEVICE_UNDELIVERABLE => BusMessage::ToDevice {
            device_id: DeviceId::from_bytes(get_uuid(&mut b)?),
            item: DeviceItem::Undeliverable {
                frame_id: get_u64(&mut b)?,
                reason: UndeliverableReason::from_u16(get_u16(&mut b)?),
            },
        },
        tag::VES_FRAME => {
            let ves_id = VesId::from_bytes(get_uuid(&mut b)?);
            let device_id = DeviceId::from_bytes(get_uuid(&mut b)?);
            let user_id = UserId::from_bytes(get_uuid(&mut b)?);
            let kind = get_kind(&mut b)?;
            let frame_id = get_u64(&mut b)?;
            BusMessage::ToVes { ves_id, item: VesItem::Frame { device_id, user_id, frame_id, kind, payload: b } }
        }
        tag::VES_ACK => BusMessage::ToVes {
            ves_id: VesId::from_bytes(get_uuid(&mut b)?),
            item: VesItem::Ack { device_id: DeviceId::from_bytes(get_uuid(&mut b)?), frame_id: get_u64(&mut b)? },
        },
        tag::VES_UNDELIVERABLE => BusMessage::ToVes {
            ves_id: VesId::from_bytes(get_uuid(&mut b)?),
            item: VesItem::Undeliverable {
                device_id: DeviceId::from_bytes(get_uuid(&mut b)?),
                frame_id: get_u64(&mut b)?,
                reason: UndeliverableReason::from_u16(get_u16(&mut b)?),
            },
        },
        tag::VES_COMMAND => {
            let ves_id = VesId::from_bytes(get_uuid(&mut b)?);
            let cmd = serde_json::from_slice(&b).map_err(|_| WireError::Invalid("command JSON"))?;
            BusMessage::ToVes { ves_id, item: VesItem::Command(cmd) }
        }
        tag::DIRECTORY => BusMessage::DirectoryUpdate {
            ves_id: VesId::from_bytes(get_uuid(&mut b)?),
            device_id: DeviceId::from_bytes(get_uuid(&mut b)?),
            user_id: UserId::from_bytes(get_uuid(&mut b)?),
            present: get_u8(&mut b)? != 0,
        },
        tag::CLOSE_DEVICE => BusMessage::Close {
            key: SessionKey::Device(DeviceId::from_bytes(get_uuid(&mut b)?)),
            code: CloseCode::from_u16(get_u16(&mut b)?),
        },
        tag::CLOSE_VES => BusMessage::Close {
            key: SessionKey::Ves(VesId::from_bytes(get_uuid(&mut b)?)),
            code: CloseCode::from_u16(get_u16(&mut b)?),
        },
        tag::USER_ACTIVATED => {
            let ves_id = VesId::from_bytes(get_uuid(&mut b)?);
            let constant_sync = get_u8(&mut b)? != 0;
            let (user, filter_rules) = serde_json::from_slice(&b).map_err(|_| WireError::Invalid("user JSON"))?;
            BusMessage::UserActivated { ves_id, user, constant_sync, filter_rules }
        }
        tag::USER_REMOVED => BusMessage::UserRemoved {
            ves_id: VesId::from_bytes(get_uuid(&mut b)?),
            user_id: UserId::from_bytes(get_uuid(&mut b)?),
        },
        tag::USER_SETTINGS => {
            let ves_id = VesId::from_bytes(get_uuid(&mut b)?);
            let user_id = UserId::from_bytes(get_uuid(&mut b)?);
            let constant_sync = get_u8(&mut b)? != 0;
            let filter_rules = serde_json::from_slice(&b).map_err(|_| WireError::Invalid("filter rules JSON"))?;
            BusMessage::UserSettings { ves_id, user_id, constant_sync, filter_rules }
        }
        tag::FETCH => {
            let ves_id = VesId::from_bytes(get_uuid(&mut b)?);
            need(&b, 2)?;
            let len = usize::from(b.get_u16());
            need(&b, len)?;
            let origin = std::str::from_utf8(&b[..len]).map_err(|_| WireError::Invalid("node id"))?;
            let origin = crate::NodeId::new(origin);
            b.advance(len);
            let call = serde_json::from_slice(&b).map_err(|_| WireError::Invalid("fetch JSON"))?;
            BusMessage::Fetch { ves_id, origin, call }
        }
        tag::FETCH_DONE => {
            let request_id = RequestId(get_uuid(&mut b)?);
            let outcome = serde_json::from_slice(&b).map_err(|_| WireError::Invalid("fetch outcome JSON"))?;
            BusMessage::FetchDone { request_id, outcome }
        }
        other => return Err(WireError::Tag(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use noc_protocol::rts::{ActiveUser, FilterRule};

    fn samples() -> Vec<BusMessage> {
        let (d, v, u) = (DeviceId::random(), VesId::random(), UserId::random());
        vec![
            BusMessage::ToDevice {
                device_id: d,
                item: DeviceItem::Forward {
                    origin: v,
                    kind: ForwardKind::Data,
                    frame_id: u64::MAX,
                    payload: Bytes::from_static(b"\x00opaque"),
                },
            },
            BusMessage::ToDevice { device_id: d, item: DeviceItem::Ack { frame_id: 3 } },
            BusMessage::ToDevice {
                device_id: d,
                item: DeviceItem::Undeliverable { frame_id: 4, reason: UndeliverableReason::QueueFull },
            },
            BusMessage::ToVes {
                ves_id: v,
                item: VesItem::Frame {
                    device_id: d,
                    user_id: u,
                    frame_id: 5,
                    kind: ForwardKind::WakeUp,
                    payload: Bytes::new(),
                },
            },
            BusMessage::ToVes { ves_id: v, item: VesItem::Ack { device_id: d, frame_id: 6 } },
            BusMessage::ToVes {
                ves_id: v,
                item: VesItem::Undeliverable { device_id: d, frame_id: 7, reason: UndeliverableReason::Other(999) },
            },
            BusMessage::ToVes {
                ves_id: v,
                item: VesItem::Command(noc_protocol::rts::Command::DevicePresence {
                    device_id: d,
                    user_id: u,
                    online: true,
                }),
            },
            BusMessage::DirectoryUpdate { ves_id: v, device_id: d, user_id: u, present: true },
            BusMessage::Close { key: SessionKey::Device(d), code: CloseCode::Replaced },
            BusMessage::Close { key: SessionKey::Ves(v), code: CloseCode::Revoked },
            BusMessage::UserActivated {
                ves_id: v,
                user: ActiveUser {
                    user_id: u,
                    email: "a@b".into(),
                    first_name: "A".into(),
                    last_name: "B".into(),
                    msisdn: Some("+1555".into()),
                    time_zone: None,
                    calendar_days_ahead: Some(30),
                },
                constant_sync: true,
                filter_rules: vec![FilterRule { field: "from".into(), contains: "boss".into() }],
            },
            BusMessage::UserRemoved { ves_id: v, user_id: u },
            BusMessage::UserSettings {
                ves_id: v,
                user_id: u,
                constant_sync: false,
                filter_rules: vec![FilterRule { field: "subject".into(), contains: "urgent".into() }],
            },
            BusMessage::Fetch {
                ves_id: v,
                origin: crate::NodeId::new("node-ä"),
                call: crate::FetchCall {
                    request_id: RequestId([7; 16]),
                    user_id: u,
                    timeout_ms: 10_000,
                    request: noc_protocol::rts::fetch::FetchRequest::MailList {
                        folder: "INBOX".into(),
                        offset: 20,
                        limit: 20,
                    },
                },
            },
            BusMessage::FetchDone {
                request_id: RequestId([8; 16]),
                outcome: crate::FetchOutcome::Answer(serde_json::json!({"Folders": []})),
            },
            BusMessage::FetchDone {
                request_id: RequestId([9; 16]),
                outcome: crate::FetchOutcome::Refused(crate::FetchRefusal::Busy),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let bytes = encode(&m).expect("encode");
            assert_eq!(decode(bytes).expect("decode"), m);
        }
    }

    #[test]
    fn a_bundle_carries_its_messages_in_order_and_a_single_message_decodes_alone() {
        let samples = samples();
        let mut bundle = Bundle::new();
        for m in &samples {
            bundle.push(m).expect("push");
        }
        assert_eq!(bundle.push(&BusMessage::Returned(Box::new(samples[0].clone()))), Err(WireError::LocalOnly));
        assert_eq!(bundle.count(), samples.len(), "a refused message leaves the bundle as it was");
        let bytes = bundle.finish();
        let got: Vec<BusMessage> = decode_each(bytes).collect::<Result<_, _>>().expect("decode");
        assert_eq!(got, samples);
        for m in samples {
            let got: Vec<_> = decode_each(encode(&m).expect("encode")).collect();
            assert_eq!(got, vec![Ok(m)]);
        }
        assert_eq!(decode_each(Bundle::new().finish()).count(), 0, "an empty bundle holds nothing");
    }

    #[test]
    fn a_damaged_bundle_yields_what_precedes_the_damage_then_an_error() {
        let mut bundle = Bundle::new();
        let samples = samples();
        let (first, second) = (samples[1].clone(), samples[2].clone());
        bundle.push(&first).expect("push");
        bundle.push(&second).expect("push");
        let whole = bundle.finish();
        // Cut anywhere inside the second entry: the first message, then one error, then
        // nothing more.
        let first_len = 2 + 4 + encode(&first).expect("encode").len();
        for cut in first_len + 1..whole.len() {
            let got: Vec<_> = decode_each(whole.slice(..cut)).collect();
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0], Ok(first.clone()));
            assert!(got[1].is_err(), "cut at {cut}");
        }
        // A length beyond the payload, and a bundle inside a bundle, are errors.
        let mut lying = whole.to_vec();
        lying[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        let got: Vec<_> = decode_each(Bytes::from(lying)).collect();
        assert_eq!(got, vec![Err(WireError::Truncated)]);
        let mut nested = BytesMut::new();
        nested.put_slice(&[VERSION, tag::BUNDLE]);
        nested.put_u32(u32::try_from(whole.len()).expect("small"));
        nested.put_slice(&whole);
        let got: Vec<_> = decode_each(nested.freeze()).collect();
        assert_eq!(got, vec![Err(WireError::Tag(tag::BUNDLE))]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(decode(Bytes::new()), Err(WireError::Truncated));
        assert_eq!(decode(Bytes::from_static(&[2, 1])), Err(WireError::Version(2)));
        assert_eq!(decode(Bytes::from_static(&[1, 99])), Err(WireError::Tag(99)));
        for m in samples() {
            let bytes = encode(&m).expect("encode");
            // Every strict prefix of a fixed-layout message is rejected, never misread.
            for cut in 0..bytes.len().min(40) {
                let _ = decode(bytes.slice(..cut));
            }
        }
        assert!(encode(&BusMessage::Returned(Box::new(samples().remove(0)))).is_err());
    }
}
