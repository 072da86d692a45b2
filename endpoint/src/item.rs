//! Items and the records that carry them inside sealed `Data` frames (docs/endpoints.md §3).
//!
//! An *item* is one unit of user data: a mail, a calendar entry, a contact, a mail composed
//! on the device. It is encoded once (`u32 header length ‖ JSON header ‖ raw body`) and
//! then cut into *parts* so that every part fits one relay frame whatever the item's size.
//! Each part travels as one *record* — the plaintext of one sealed `Data` frame:
//!
//! ```text
//! record  = version(1) = 1 ‖ type(1) ‖ body
//! type 1  Part:     item id(16) ‖ part index(u32 BE) ‖ part count(u32 BE) ‖ chunk
//! type 2  ItemAcks: count(u16 BE, 1..=MAX_ACKS_PER_RECORD) ‖ count × item id(16)
//! ```
//!
//! The body stays raw bytes (RFC 822 for mail) rather than base64 inside JSON: mail is the
//! bulk of the traffic and base64 would add a third to every frame. The header is JSON so
//! that new fields can be added without a new record version; receivers ignore fields they
//! do not know. Decoders are strict about lengths because the bytes, although authenticated,
//! come from another program.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EndpointError;

/// Version byte of every record.
pub const RECORD_VERSION: u8 = 1;
/// Record type: one part of an item.
pub const RECORD_PART: u8 = 1;
/// Record type: end-to-end acknowledgement of complete items.
pub const RECORD_ITEM_ACKS: u8 = 2;
/// Bytes of a Part record that are not chunk.
pub const PART_OVERHEAD: usize = 1 + 1 + 16 + 4 + 4;
/// Most item ids in one ItemAcks record.
pub const MAX_ACKS_PER_RECORD: usize = 512;
/// Largest JSON header accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The identity of an item, chosen by its sender; receivers deduplicate on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(pub [u8; 16]);

impl ItemId {
    /// A fresh random id.
    pub fn random() -> Self {
        ItemId(*Uuid::new_v4().as_bytes())
    }

    /// The id from a stored blob.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EndpointError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| EndpointError::codec("item id", "must be 16 bytes"))?;
        Ok(ItemId(arr))
    }
}

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl std::str::FromStr for ItemId {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(|u| ItemId(*u.as_bytes()))
            .map_err(|e| EndpointError::Invalid { what: "item id", reason: e.to_string() })
    }
}

/// What an item is. The names are the `Type` strings of the header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ItemType {
    /// A received mail (VES → device); body: the RFC 822 message.
    Mail,
    /// A calendar entry (VES → device); body: an iCalendar object (RFC 5545).
    Calendar,
    /// A contact (VES → device); body: a vCard (RFC 6350).
    Contact,
    /// A mail composed on the device for the VES to submit (device → VES); body: RFC 822.
    OutgoingMail,
    /// Enterprise certificate enrollment (device → VES); body: a
    /// [`crate::enroll::CertificateRequest`] (JSON).
    CertificateRequest,
    /// Where an enrollment stands (VES → device); body: a
    /// [`crate::enroll::CertificateStatus`] (JSON). Named by the request: each status
    /// replaces the one before.
    CertificateStatus,
    /// A type this version does not know: stored and acknowledged, not interpreted.
    Other(String),
}

impl ItemType {
    /// The header's `Type` string.
    pub fn as_str(&self) -> &str {
        match self {
            ItemType::Mail => "mail",
            ItemType::Calendar => "calendar",
            ItemType::Contact => "contact",
            ItemType::OutgoingMail => "outgoing-mail",
            ItemType::CertificateRequest => "certificate-request",
            ItemType::CertificateStatus => "certificate-status",
            ItemType::Other(s) => s,
        }
    }

    /// Whether an item of this type with a `Name` is a new *version* of the object of that
    /// name: it replaces, on the receiver, the earlier item of the same type and name from
    /// the same peer (docs/endpoints.md §3.3). Calendar and contact files are edited in
    /// place and pushed again when they change; a mail's name is unique, and a composed
    /// mail has none.
    pub fn replaces_by_name(&self) -> bool {
        matches!(self, ItemType::Calendar | ItemType::Contact | ItemType::CertificateStatus)
    }

    /// Parses a `Type` string; unknown strings are kept as [`ItemType::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "mail" => ItemType::Mail,
            "calendar" => ItemType::Calendar,
            "contact" => ItemType::Contact,
            "outgoing-mail" => ItemType::OutgoingMail,
            "certificate-request" => ItemType::CertificateRequest,
            "certificate-status" => ItemType::CertificateStatus,
            other => ItemType::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for ItemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON header of an item. Unknown fields are ignored so that senders can add fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ItemHeader {
    /// [`ItemType::as_str`].
    #[serde(rename = "Type")]
    pub item_type: String,
    /// When the sender created the item (unix ms): a mail's arrival in the Maildir, a
    /// composed mail's creation on the device.
    pub created_at_ms: i64,
    /// The sender's name for the source object (Maildir unique name, `.ics`/`.vcf` file
    /// name), so that a receiver can recognise updates of the same object
    /// ([`ItemType::replaces_by_name`]): of two versions, the one with the later
    /// `created_at_ms` is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Outgoing mail: blind-copy recipients, which must not appear in the message itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
}

/// A complete item: header plus body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub header: ItemHeader,
    pub body: Vec<u8>,
}

impl Item {
    /// A new item of `item_type` created now.
    pub fn new(item_type: ItemType, name: Option<String>, body: Vec<u8>) -> Self {
        Item {
            header: ItemHeader {
                item_type: item_type.as_str().to_owned(),
                created_at_ms: noc_protocol::clock::unix_ms_i64(),
                name,
                bcc: Vec::new(),
            },
            body,
        }
    }

    /// The parsed type.
    pub fn item_type(&self) -> ItemType {
        ItemType::parse(&self.header.item_type)
    }

    /// `u32 header length ‖ header JSON ‖ body`.
    pub fn encode(&self) -> Result<Vec<u8>, EndpointError> {
        let header =
            serde_json::to_vec(&self.header).map_err(|e| EndpointError::codec("item header", e.to_string()))?;
        let len = u32::try_from(header.len()).map_err(|_| EndpointError::codec("item header", "too long"))?;
        let mut out = Vec::with_capacity(4 + header.len() + self.body.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// The inverse of [`Item::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EndpointError> {
        let header = Self::decode_header(bytes)?;
        let len = header_len(bytes)?;
        Ok(Item { header, body: bytes[4 + len..].to_vec() })
    }

    /// Only the header of an encoded item (listing an outbox without copying bodies).
    pub fn decode_header(bytes: &[u8]) -> Result<ItemHeader, EndpointError> {
        let len = header_len(bytes)?;
        serde_json::from_slice(&bytes[4..4 + len]).map_err(|e| EndpointError::codec("item header", e.to_string()))
    }
}

fn header_len(bytes: &[u8]) -> Result<usize, EndpointError> {
    let prefix: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EndpointError::codec("item", "shorter than its length prefix"))?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(EndpointError::codec("item", format!("header of {len} bytes exceeds {MAX_HEADER_BYTES}")));
    }
    if bytes.len() < 4 + len {
        return Err(EndpointError::codec("item", "shorter than its header length"));
    }
    Ok(len)
}

/// The plaintext of one sealed `Data` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Part `index` of `count` of the encoded item `id`.
    Part { id: ItemId, index: u32, count: u32, chunk: Vec<u8> },
    /// These items were received completely and stored: the sender may forget them.
    ItemAcks(Vec<ItemId>),
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Part { id, index, count, chunk } => {
                let mut out = Vec::with_capacity(PART_OVERHEAD + chunk.len());
                out.push(RECORD_VERSION);
                out.push(RECORD_PART);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(chunk);
                out
            }
            Record::ItemAcks(ids) => {
                let ids = &ids[..ids.len().min(MAX_ACKS_PER_RECORD)];
                let mut out = Vec::with_capacity(4 + 16 * ids.len());
                out.push(RECORD_VERSION);
                out.push(RECORD_ITEM_ACKS);
                out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EndpointError> {
        let (&version, rest) = bytes.split_first().ok_or_else(|| EndpointError::codec("record", "empty"))?;
        if version != RECORD_VERSION {
            return Err(EndpointError::codec("record", format!("unknown version {version}")));
        }
        let (&ty, body) = rest.split_first().ok_or_else(|| EndpointError::codec("record", "no type byte"))?;
        match ty {
            RECORD_PART => {
                if body.len() < 24 {
                    return Err(EndpointError::codec("part record", "shorter than its header"));
                }
                let id = ItemId::from_slice(&body[..16])?;
                let index = u32::from_be_bytes([body[16], body[17], body[18], body[19]]);
                let count = u32::from_be_bytes([body[20], body[21], body[22], body[23]]);
                if count == 0 || index >= count {
                    return Err(EndpointError::codec("part record", format!("part {index} of {count}")));
                }
                Ok(Record::Part { id, index, count, chunk: body[24..].to_vec() })
            }
            RECORD_ITEM_ACKS => {
                if body.len() < 2 {
                    return Err(EndpointError::codec("item-acks record", "no count"));
                }
                let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                if n == 0 || n > MAX_ACKS_PER_RECORD || body.len() != 2 + 16 * n {
                    return Err(EndpointError::codec("item-acks record", "count does not match its length"));
                }
                let ids = body[2..].chunks_exact(16).map(ItemId::from_slice).collect::<Result<Vec<_>, _>>()?;
                Ok(Record::ItemAcks(ids))
            }
            other => Err(EndpointError::codec("record", format!("unknown type {other}"))),
        }
    }
}

/// How many parts an encoded item of `len` bytes needs with chunks of `chunk_bytes`.
pub fn part_count(len: usize, chunk_bytes: usize) -> u32 {
    let chunk = chunk_bytes.max(1);
    len.div_ceil(chunk).max(1) as u32
}

/// Part `index` of an encoded item.
pub fn part_chunk(encoded: &[u8], index: u32, chunk_bytes: usize) -> &[u8] {
    let chunk = chunk_bytes.max(1);
    let start = (index as usize).saturating_mul(chunk).min(encoded.len());
    let end = start.saturating_add(chunk).min(encoded.len());
    &encoded[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_round_trip_keeps_raw_body() {
        let mut item = Item::new(ItemType::OutgoingMail, Some("x".into()), b"Subject: hi\r\n\r\nbody\x00\xff".to_vec());
        item.header.bcc = vec!["carol@example.com".into()];
        let enc = item.encode().expect("encode");
        assert_eq!(Item::decode(&enc).expect("decode"), item);
        assert_eq!(item.item_type(), ItemType::OutgoingMail);
    }

    #[test]
    fn header_ignores_unknown_fields_and_keeps_unknown_types() {
        let json = br#"{"Type":"task","CreatedAtMs":5,"Priority":3}"#;
        let mut enc = (json.len() as u32).to_be_bytes().to_vec();
        enc.extend_from_slice(json);
        let item = Item::decode(&enc).expect("decode");
        assert_eq!(item.item_type(), ItemType::Other("task".into()));
        assert!(item.body.is_empty());
    }

    #[test]
    fn truncated_items_are_errors_not_panics() {
        for bad in [&b""[..], b"\x00\x00", b"\x00\x00\x00\x09{}", b"\xff\xff\xff\xff"] {
            assert!(Item::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let id = ItemId::random();
        let part = Record::Part { id, index: 1, count: 3, chunk: b"abc".to_vec() };
        assert_eq!(Record::decode(&part.encode()).expect("part"), part);
        let acks = Record::ItemAcks(vec![id, ItemId::random()]);
        assert_eq!(Record::decode(&acks.encode()).expect("acks"), acks);
        for bad in [
            vec![],
            vec![2, 1],
            vec![1, 9],
            vec![1, 1, 0],
            Record::Part { id, index: 0, count: 1, chunk: vec![] }.encode()[..20].to_vec(),
            {
                let mut v = Record::Part { id, index: 0, count: 1, chunk: vec![] }.encode();
                v[21] = 5; // index 5 of count 1
                v
            },
            vec![1, 2, 0, 2, 0],
        ] {
            assert!(Record::decode(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parts_cover_the_item_exactly() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let n = part_count(data.len(), 300);
        assert_eq!(n, 4);
        let joined: Vec<u8> = (0..n).flat_map(|i| part_chunk(&data, i, 300).to_vec()).collect();
        assert_eq!(joined, data);
        assert_eq!(part_count(0, 300), 1);
        assert!(part_chunk(&[], 0, 300).is_empty());
    }
}
