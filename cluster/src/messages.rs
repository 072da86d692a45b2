//! What sessions exchange, locally through their queues and across nodes through the bus.

use bytes::Bytes;
use noc_protocol::device::ForwardKind;
use noc_protocol::rts::fetch::{FetchError, FetchRequest, RequestId};
use noc_protocol::rts::{ActiveUser, Command, FilterRule};
use noc_protocol::{CloseCode, DeviceId, UndeliverableReason, UserId, VesId};
use serde::{Deserialize, Serialize};

use crate::{NodeId, SessionKey};

/// Something for a device session to write to its device.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceItem {
    /// An opaque frame from the user's VES.
    Forward { origin: VesId, kind: ForwardKind, frame_id: u64, payload: Bytes },
    /// The VES acknowledged the device's frame `frame_id`.
    Ack { frame_id: u64 },
    /// The device's frame `frame_id` could not be delivered after all.
    Undeliverable { frame_id: u64, reason: UndeliverableReason },
}

/// Something for a VES session to write on its command channel.
#[derive(Clone, Debug, PartialEq)]
pub enum VesItem {
    /// An opaque frame from a device of one of the VES's users.
    Frame { device_id: DeviceId, user_id: UserId, frame_id: u64, kind: ForwardKind, payload: Bytes },
    /// A device acknowledged the VES's frame.
    Ack { device_id: DeviceId, frame_id: u64 },
    /// A frame the VES sent could not be written to the device after all.
    Undeliverable { device_id: DeviceId, frame_id: u64, reason: UndeliverableReason },
    /// Any other command (heartbeats, presence, activations, close).
    Command(Command),
}

/// A message between nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum BusMessage {
    /// For the device session `device_id` on the receiving node.
    ToDevice { device_id: DeviceId, item: DeviceItem },
    /// For the VES session `ves_id` on the receiving node.
    ToVes { ves_id: VesId, item: VesItem },
    /// A device was activated or revoked: update the VES session's device directory.
    DirectoryUpdate { ves_id: VesId, device_id: DeviceId, user_id: UserId, present: bool },
    /// Close the receiving node's session for `key` (takeover, revocation).
    Close { key: SessionKey, code: CloseCode },
    /// A user of `ves_id` was activated: its VES session should serve it.
    UserActivated { ves_id: VesId, user: ActiveUser, constant_sync: bool, filter_rules: Vec<FilterRule> },
    /// A user of `ves_id` was deleted.
    UserRemoved { ves_id: VesId, user_id: UserId },
    /// A user of `ves_id` changed alert filter rules or the ConstantSync flag.
    UserSettings { ves_id: VesId, user_id: UserId, constant_sync: bool, filter_rules: Vec<FilterRule> },
    /// Browse access: node `origin` asks `ves_id`'s VES for a user's data and waits for
    /// the answer.
    Fetch { ves_id: VesId, origin: NodeId, call: FetchCall },
    /// The end of a fetch, for the node that asked (published to that node).
    FetchDone { request_id: RequestId, outcome: FetchOutcome },
    /// Local only, never sent: a message this node published reached no node (its owner
    /// is gone). The router bounces what it carried to its sender.
    Returned(Box<BusMessage>),
}

/// One fetch as the VES session's node needs it (it becomes a `Fetch` command).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchCall {
    pub request_id: RequestId,
    pub user_id: UserId,
    pub timeout_ms: u64,
    pub request: FetchRequest,
}

/// How a fetch ended, as the node that asked learns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FetchOutcome {
    /// The VES's answer (the operation's answer type, as JSON).
    Answer(serde_json::Value),
    /// The VES said why it has none.
    Failed(FetchError),
    /// The relay did not get it to the VES, or no answer came in time.
    Refused(FetchRefusal),
}

/// Why a fetch got no answer from the VES. The metric label of each is [`FetchRefusal::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FetchRefusal {
    /// The user's VES has no session, or its command channel is detached.
    Offline,
    /// The VES speaks RTS version 1: no browse access.
    Unsupported,
    /// The VES's session does not serve the user (not active there).
    NotServed,
    /// The VES has its maximum of fetches in flight, or its command queue is full.
    Busy,
    /// No answer within the deadline.
    Timeout,
}

impl FetchRefusal {
    pub const ALL: [FetchRefusal; 5] = [
        FetchRefusal::Offline,
        FetchRefusal::Unsupported,
        FetchRefusal::NotServed,
        FetchRefusal::Busy,
        FetchRefusal::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FetchRefusal::Offline => "offline",
            FetchRefusal::Unsupported => "unsupported",
            FetchRefusal::NotServed => "not_served",
            FetchRefusal::Busy => "busy",
            FetchRefusal::Timeout => "timeout",
        }
    }
}
