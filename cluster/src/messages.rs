//! What sessions exchange, locally through their queues and across nodes through the bus.

use bytes::Bytes;
use noc_protocol::device::ForwardKind;
use noc_protocol::rts::{ActiveUser, Command, FilterRule};
use noc_protocol::{CloseCode, DeviceId, UndeliverableReason, UserId, VesId};

use crate::SessionKey;

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
    /// Local only, never sent: a message this node published reached no node (its owner
    /// is gone). The router bounces what it carried to its sender.
    Returned(Box<BusMessage>),
}
