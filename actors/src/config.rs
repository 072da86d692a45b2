//! Timing and size limits of sessions. The app crate fills this from the node's config
//! file; every field has a documented default there.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The relay sends a heartbeat to each device this often.
    pub device_heartbeat_interval: Duration,
    /// A device that sends nothing for this long is dropped (counted as a missed heartbeat).
    pub device_idle_timeout: Duration,
    /// Frames queued for one device before new ones are refused with `queue_full`.
    pub device_send_queue_frames: usize,
    /// A device whose socket accepts no bytes for this long is disconnected (slow consumer).
    pub device_write_stall_timeout: Duration,
    /// Largest device-channel frame (type byte + body).
    pub max_frame_bytes: u32,
    /// Most plaintext taken from a device connection per read, into a per-worker buffer:
    /// a connection keeps only the bytes of a frame still arriving, nothing while idle.
    pub device_read_buffer_bytes: usize,
    /// Most authenticated device sessions on this node.
    pub max_device_sessions: usize,
    /// HB period on the RTS command channel (white paper §4.6, default 10 s).
    pub ves_heartbeat_interval: Duration,
    /// How long connect parameters, and a session whose command channel dropped, stay valid.
    pub ves_reply_time: Duration,
    /// Items queued for one VES command channel before new ones are refused.
    pub ves_send_queue_items: usize,
    /// A command channel that drains nothing for this long is detached (slow consumer); the
    /// VES may resume within ReplyTime.
    pub ves_write_stall_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            device_heartbeat_interval: Duration::from_secs(60),
            device_idle_timeout: Duration::from_secs(180),
            device_send_queue_frames: 256,
            device_write_stall_timeout: Duration::from_secs(30),
            max_frame_bytes: noc_protocol::device::DEFAULT_MAX_FRAME_BYTES,
            device_read_buffer_bytes: 16 * 1024,
            max_device_sessions: 500_000,
            ves_heartbeat_interval: Duration::from_secs(10),
            ves_reply_time: Duration::from_secs(30),
            ves_send_queue_items: 8192,
            ves_write_stall_timeout: Duration::from_secs(30),
        }
    }
}
