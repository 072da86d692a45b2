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
    b.put_u8(VERSION);
    match msg {
        BusMessage::ToDevice { device_id, item } => match item {
            DeviceItem::Forward { origin, kind, frame_id, payload } => {
                b.reserve(payload.len() + 48);
                b.put_u8(tag::DEVICE_FORWARD);
                uuid(&mut b, device_id.as_bytes());
                uuid(&mut b, origin.as_bytes());
                b.put_u8(kind.as_u8());
                b.put_u64(*frame_id);
                b.put_slice(payload);
            }
            DeviceItem::Ack { frame_id } => {
                b.put_u8(tag::DEVICE_ACK);
                uuid(&mut b, device_id.as_bytes());
                b.put_u64(*frame_id);
            }
            DeviceItem::Undeliverable { frame_id, reason } => {
                b.put_u8(tag::DEVICE_UNDELIVERABLE);
                uuid(&mut b, device_id.as_bytes());
                b.put_u64(*frame_id);
                b.put_u16(reason.as_u16());
            }
        },
        BusMessage::ToVes { ves_id, item } => match item {
            VesItem::Frame { device_id, user_id, frame_id, kind, payload } => {
                b.reserve(payload.len() + 64);
                b.put_u8(tag::VES_FRAME);
                uuid(&mut b, ves_id.as_bytes());
                uuid(&mut b, device_id.as_bytes());
                uuid(&mut b, user_id.as_bytes());
                b.put_u8(kind.as_u8());
                b.put_u64(*frame_id);
                b.put_slice(payload);
            }
            VesItem::Ack { device_id, frame_id } => {
                b.put_u8(tag::VES_ACK);
                uuid(&mut b, ves_id.as_bytes());
                uuid(&mut b, device_id.as_bytes());
                b.put_u64(*frame_id);
            }
            VesItem::Undeliverable { device_id, frame_id, reason } => {
                b.put_u8(tag::VES_UNDELIVERABLE);
                uuid(&mut b, ves_id.as_bytes());
                uuid(&mut b, device_id.as_bytes());
                b.put_u64(*frame_id);
                b.put_u16(reason.as_u16());
            }
            VesItem::Command(cmd) => {
                b.put_u8(tag::VES_COMMAND);
                uuid(&mut b, ves_id.as_bytes());
                let json = serde_json::to_vec(cmd).map_err(|_| WireError::Invalid("command not serialisable"))?;
                b.put_slice(&json);
            }
        },
        BusMessage::DirectoryUpdate { ves_id, device_id, user_id, present } => {
            b.put_u8(tag::DIRECTORY);
            uuid(&mut b, ves_id.as_bytes());
            uuid(&mut b, device_id.as_bytes());
            uuid(&mut b, user_id.as_bytes());
            b.put_u8(u8::from(*present));
        }
        BusMessage::Close { key, code } => {
            match key {
                SessionKey::Device(id) => {
                    b.put_u8(tag::CLOSE_DEVICE);
                    uuid(&mut b, id.as_bytes());
                }
                SessionKey::Ves(id) => {
                    b.put_u8(tag::CLOSE_VES);
                    uuid(&mut b, id.as_bytes());
                }
            }
            b.put_u16(code.as_u16());
        }
        BusMessage::UserActivated { ves_id, user, constant_sync, filter_rules } => {
            b.put_u8(tag::USER_ACTIVATED);
            uuid(&mut b, ves_id.as_bytes());
            b.put_u8(u8::from(*constant_sync));
            let json = serde_json::to_vec(&(user, filter_rules)).map_err(|_| WireError::Invalid("user"))?;
            b.put_slice(&json);
        }
        BusMessage::UserRemoved { ves_id, user_id } => {
            b.put_u8(tag::USER_REMOVED);
            uuid(&mut b, ves_id.as_bytes());
            uuid(&mut b, user_id.as_bytes());
        }
        BusMessage::UserSettings { ves_id, user_id, constant_sync, filter_rules } => {
            b.put_u8(tag::USER_SETTINGS);
            uuid(&mut b, ves_id.as_bytes());
            uuid(&mut b, user_id.as_bytes());
            b.put_u8(u8::from(*constant_sync));
            let json = serde_json::to_vec(filter_rules).map_err(|_| WireError::Invalid("filter rules"))?;
            b.put_slice(&json);
        }
        BusMessage::Fetch { ves_id, origin, call } => {
            b.put_u8(tag::FETCH);
            uuid(&mut b, ves_id.as_bytes());
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
    Ok(b.freeze())
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

/// Decodes a message received from the bus.
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
