//! Browse access over RTS version 2 (docs/protocol.md §4.6): the relay asks a user's VES for
//! mail, calendar and contacts with a `Fetch` command on the command channel, and the VES
//! answers with a `FetchResult` on the data channel.
//!
//! Unlike device frames these bodies are not end-to-end encrypted: the relay renders them
//! into the user's pages, so they are protected by TLS on both hops and are never logged or
//! stored (docs/architecture.md, "Trust boundaries"). Every type here is shared by the
//! relay, which asks and renders, and the agent, which answers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The RTS version that adds `Fetch` and `FetchResult`.
pub const FETCH_VERSION: u32 = 2;

/// Identifies one fetch across the cluster: 16 random bytes, 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; 16]);

impl RequestId {
    pub fn random() -> Self {
        RequestId(crate::secrets::random_bytes::<16>())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

impl FromStr for RequestId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("a RequestId is 32 lowercase hex digits");
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| "a RequestId is 32 lowercase hex digits")?;
        Ok(RequestId(out))
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the relay asks for: `{"Operation":"MailList","Params":{"Folder":"INBOX",…}}`.
/// Folders, messages and contacts are named by the ids the VES gave in earlier answers;
/// the relay passes them back unchanged and never interprets them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "Operation", content = "Params", deny_unknown_fields)]
pub enum FetchRequest {
    /// The user's mail folders → [`FolderList`].
    #[serde(rename_all = "PascalCase")]
    MailFolders {},
    /// One page of a folder's messages, newest first → [`MessagePage`].
    #[serde(rename_all = "PascalCase")]
    MailList { folder: String, offset: u32, limit: u32 },
    /// One message → [`Message`].
    #[serde(rename_all = "PascalCase")]
    MailRead { folder: String, message_id: String },
    /// One attachment of a message, whole → [`Attachment`].
    #[serde(rename_all = "PascalCase")]
    MailAttachment { folder: String, message_id: String, index: u32 },
    /// Sends a message from the user through the VES's mail server → [`Done`].
    #[serde(rename_all = "PascalCase")]
    MailSend(Outgoing),
    /// Moves a message to the folder's trash, or deletes it there → [`Done`].
    #[serde(rename_all = "PascalCase")]
    MailDelete { folder: String, message_id: String },
    /// Moves a message to another folder → [`Done`].
    #[serde(rename_all = "PascalCase")]
    MailMove { folder: String, message_id: String, to_folder: String },
    /// Calendar events overlapping `[From, To)` (unix ms), earliest first → [`EventList`].
    #[serde(rename_all = "PascalCase")]
    CalendarRange { from: i64, to: i64 },
    /// Contacts whose name or address contains `Query` (all when empty), by name, one page
    /// → [`ContactPage`].
    #[serde(rename_all = "PascalCase")]
    ContactList { query: String, offset: u32, limit: u32 },
    /// One contact → [`Contact`].
    #[serde(rename_all = "PascalCase")]
    ContactRead { contact_id: String },
    /// Adds a contact → [`Contact`] (as stored, with its new id).
    #[serde(rename_all = "PascalCase")]
    ContactAdd(NewContact),
}

/// The operations as metric labels and log fields (a bounded set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    MailFolders,
    MailList,
    MailRead,
    MailAttachment,
    MailSend,
    MailDelete,
    MailMove,
    CalendarRange,
    ContactList,
    ContactRead,
    ContactAdd,
}

impl Operation {
    pub const ALL: [Operation; 11] = [
        Operation::MailFolders,
        Operation::MailList,
        Operation::MailRead,
        Operation::MailAttachment,
        Operation::MailSend,
        Operation::MailDelete,
        Operation::MailMove,
        Operation::CalendarRange,
        Operation::ContactList,
        Operation::ContactRead,
        Operation::ContactAdd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::MailFolders => "MailFolders",
            Operation::MailList => "MailList",
            Operation::MailRead => "MailRead",
            Operation::MailAttachment => "MailAttachment",
            Operation::MailSend => "MailSend",
            Operation::MailDelete => "MailDelete",
            Operation::MailMove => "MailMove",
            Operation::CalendarRange => "CalendarRange",
            Operation::ContactList => "ContactList",
            Operation::ContactRead => "ContactRead",
            Operation::ContactAdd => "ContactAdd",
        }
    }

    /// Whether the operation changes the user's data (sent, moved, deleted, added): never
    /// retried by the relay.
    pub fn changes_data(self) -> bool {
        matches!(self, Operation::MailSend | Operation::MailDelete | Operation::MailMove | Operation::ContactAdd)
    }
}

impl FetchRequest {
    pub fn operation(&self) -> Operation {
        match self {
            FetchRequest::MailFolders {} => Operation::MailFolders,
            FetchRequest::MailList { .. } => Operation::MailList,
            FetchRequest::MailRead { .. } => Operation::MailRead,
            FetchRequest::MailAttachment { .. } => Operation::MailAttachment,
            FetchRequest::MailSend(_) => Operation::MailSend,
            FetchRequest::MailDelete { .. } => Operation::MailDelete,
            FetchRequest::MailMove { .. } => Operation::MailMove,
            FetchRequest::CalendarRange { .. } => Operation::CalendarRange,
            FetchRequest::ContactList { .. } => Operation::ContactList,
            FetchRequest::ContactRead { .. } => Operation::ContactRead,
            FetchRequest::ContactAdd(_) => Operation::ContactAdd,
        }
    }
}

/// A message the user composed on a browse page (new, reply or forward).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Outgoing {
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    pub subject: String,
    /// Plain text.
    pub body: String,
    /// The message this one answers (`Message.MessageId` and its folder): the VES sets
    /// `In-Reply-To` and `References` from it.
    #[serde(default)]
    pub in_reply_to: Option<MessageRef>,
    /// A message whose attachments go along (a forward).
    #[serde(default)]
    pub forward_attachments_of: Option<MessageRef>,
}

/// A message named by its folder and id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MessageRef {
    pub folder: String,
    pub message_id: String,
}

/// A contact to add.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NewContact {
    pub name: String,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub organization: Option<String>,
}

// -- answers ------------------------------------------------------------------------------

/// How a fetch ended, as the VES reports it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FetchStatus {
    Ok,
    Error,
}

/// Why a VES could not answer. Receivers accept codes they do not know (as `internal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchErrorCode {
    /// No such folder, message, attachment or contact (for this user).
    NotFound,
    /// The VES does not serve this user.
    UnknownUser,
    /// The parameters are invalid (a bad address to send to, a page out of range).
    BadRequest,
    /// The mail or PIM source is unreachable now.
    Unavailable,
    /// The VES does not implement the operation.
    Unsupported,
    /// The answer would not fit in a data-channel request (`rts.max_body_bytes`): a
    /// message or attachment too large to show through the relay.
    TooLarge,
    /// Anything else.
    Internal,
}

impl FetchErrorCode {
    pub const ALL: [FetchErrorCode; 7] = [
        FetchErrorCode::NotFound,
        FetchErrorCode::UnknownUser,
        FetchErrorCode::BadRequest,
        FetchErrorCode::Unavailable,
        FetchErrorCode::Unsupported,
        FetchErrorCode::TooLarge,
        FetchErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FetchErrorCode::NotFound => "not_found",
            FetchErrorCode::UnknownUser => "unknown_user",
            FetchErrorCode::BadRequest => "bad_request",
            FetchErrorCode::Unavailable => "unavailable",
            FetchErrorCode::Unsupported => "unsupported",
            FetchErrorCode::TooLarge => "too_large",
            FetchErrorCode::Internal => "internal",
        }
    }

    /// A code this version does not know reads as `Internal`.
    pub fn parse(s: &str) -> Self {
        Self::ALL.into_iter().find(|c| c.as_str() == s).unwrap_or(FetchErrorCode::Internal)
    }
}

impl Serialize for FetchErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FetchErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FetchErrorCode::parse(&String::deserialize(d)?))
    }
}

/// A VES's refusal: a code and a message for the user's page (no internals).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FetchError {
    pub code: FetchErrorCode,
    #[serde(default)]
    pub message: String,
}

/// The relay's answer to a `FetchResult`: whether someone was still waiting for it (a
/// result after the deadline, or for an unknown request, is dropped).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct FetchResultResponse {
    pub delivered: bool,
}

/// `MailFolders`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct FolderList {
    pub folders: Vec<Folder>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Folder {
    /// What the relay passes back (`INBOX`, `Sent`, …).
    pub folder_id: String,
    /// What the user sees.
    pub name: String,
    pub total: u32,
    pub unread: u32,
}

/// `MailList`: one page, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MessagePage {
    pub messages: Vec<MessageSummary>,
    /// Messages in the folder.
    pub total: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MessageSummary {
    pub message_id: String,
    pub from: String,
    pub subject: String,
    /// Unix ms (the `Date` header, else when the VES received it).
    pub date: i64,
    pub size: u64,
    pub unread: bool,
    pub has_attachments: bool,
}

/// `MailRead`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    pub message_id: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    pub subject: String,
    pub date: i64,
    /// The text/plain part, when there is one (what the relay shows first).
    #[serde(default)]
    pub text: Option<String>,
    /// The text/html part, as sent: the relay sanitises it before showing it.
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AttachmentInfo {
    pub index: u32,
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

/// `MailAttachment`: the bytes as base64.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub data: String,
}

/// `MailSend`, `MailDelete`, `MailMove`: done.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Done {}

/// `CalendarRange`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct EventList {
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    pub event_id: String,
    pub summary: String,
    #[serde(default)]
    pub location: Option<String>,
    /// Unix ms. An all-day event starts at 00:00 UTC of its first day and ends at 00:00 UTC
    /// after its last.
    pub start: i64,
    pub end: i64,
    pub all_day: bool,
}

/// `ContactList`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    /// Contacts matching the query.
    pub total: u32,
}

/// `ContactRead`, `ContactAdd`, and each entry of [`ContactPage`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Contact {
    pub contact_id: String,
    pub name: String,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub organization: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_operation_and_its_params() {
        let r = FetchRequest::MailList { folder: "INBOX".into(), offset: 0, limit: 20 };
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(json, r#"{"Operation":"MailList","Params":{"Folder":"INBOX","Offset":0,"Limit":20}}"#);
        assert_eq!(serde_json::from_str::<FetchRequest>(&json).expect("parse"), r);
        let folders = serde_json::to_string(&FetchRequest::MailFolders {}).expect("json");
        assert_eq!(folders, r#"{"Operation":"MailFolders","Params":{}}"#);
        let send = FetchRequest::MailSend(Outgoing {
            to: vec!["a@example.com".into()],
            cc: vec![],
            subject: "Hi".into(),
            body: "Hello".into(),
            in_reply_to: Some(MessageRef { folder: "INBOX".into(), message_id: "m1".into() }),
            forward_attachments_of: None,
        });
        let json = serde_json::to_string(&send).expect("json");
        assert!(json.starts_with(r#"{"Operation":"MailSend","Params":{"To":["a@example.com"]"#), "{json}");
        assert_eq!(serde_json::from_str::<FetchRequest>(&json).expect("parse"), send);
        assert_eq!(send.operation(), Operation::MailSend);
        assert!(Operation::MailSend.changes_data() && !Operation::MailRead.changes_data());
    }

    #[test]
    fn unknown_operations_and_fields_are_refused() {
        assert!(serde_json::from_str::<FetchRequest>(r#"{"Operation":"Teleport","Params":{}}"#).is_err());
        let extra = r#"{"Operation":"MailList","Params":{"Folder":"INBOX","Offset":0,"Limit":20,"Sort":"x"}}"#;
        assert!(serde_json::from_str::<FetchRequest>(extra).is_err());
    }

    #[test]
    fn request_ids_are_lowercase_hex() {
        let id = RequestId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<RequestId>(), Ok(id));
        let fixed = RequestId([0xab; 16]);
        assert_eq!(fixed.to_string(), "ab".repeat(16));
        assert!("AB".repeat(16).parse::<RequestId>().is_err(), "uppercase is another spelling: refused");
        assert!("xyz".parse::<RequestId>().is_err());
        assert_eq!(serde_json::to_string(&id).expect("json"), format!("\"{text}\""));
    }

    #[test]
    fn unknown_error_codes_read_as_internal() {
        let e: FetchError = serde_json::from_str(r#"{"Code":"quota_exceeded","Message":"full"}"#).expect("parse");
        assert_eq!(e.code, FetchErrorCode::Internal);
        for c in FetchErrorCode::ALL {
            assert_eq!(FetchErrorCode::parse(c.as_str()), c);
        }
        for op in Operation::ALL {
            assert!(!op.as_str().is_empty());
        }
    }
}
