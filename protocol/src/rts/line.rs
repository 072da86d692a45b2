//! The command channel's encoder: one [`Command`] per line of NDJSON (docs/protocol.md §4.3).
//!
//! The relay writes every command channel with these two functions, straight into the
//! chunk it hands to the HTTP layer. `DeviceFrame`, the line written once per relayed frame,
//! is written by hand so that its payload is base64-encoded in place, without an
//! intermediate `String`; a test holds it to the serde form of [`Command::DeviceFrame`],
//! which is what every reader parses.

use std::io::Write as _;

use base64::Engine as _;
use bytes::{BufMut, BytesMut};

use super::Command;
use crate::device::ForwardKind;
use crate::ids::{DeviceId, UserId};

/// Appends `cmd` as one JSON line.
pub fn write_command(buf: &mut BytesMut, cmd: &Command) {
    let mut w = buf.writer();
    // Serializing these types into memory cannot fail: every field is a plain value.
    if serde_json::to_writer(&mut w, cmd).is_ok() {
        let _ = w.write_all(b"\n");
    }
}

/// Appends the line `{"Command":"DeviceFrame",…}` for an opaque device frame, encoding the
/// payload as base64 straight into `buf`.
pub fn write_device_frame(
    buf: &mut BytesMut,
    device_id: DeviceId,
    user_id: UserId,
    frame_id: u64,
    kind: ForwardKind,
    payload: &[u8],
) {
    let mut w = buf.writer();
    let _ = write!(
        w,
        "{{\"Command\":\"DeviceFrame\",\"DeviceId\":\"{device_id}\",\"UserId\":\"{user_id}\",\"FrameId\":{frame_id},\"Kind\":\"{}\",\"Payload\":\"",
        kind.as_str()
    );
    let buf = w.into_inner();
    let start = buf.len();
    let n = base64::encoded_len(payload.len(), true).unwrap_or(0);
    buf.resize(start + n, 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(payload, &mut buf[start..]).unwrap_or(0);
    buf.truncate(start + written);
    buf.put_slice(b"\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rts::encode_payload;

    #[test]
    fn hand_written_frame_line_is_the_documented_json() {
        let mut buf = BytesMut::new();
        let (d, u) = (DeviceId::random(), UserId::random());
        write_device_frame(&mut buf, d, u, 42, ForwardKind::KeyExchange, b"\x00\x01opaque");
        assert_eq!(buf.last(), Some(&b'\n'));
        let cmd: Command = serde_json::from_slice(&buf[..buf.len() - 1]).expect("valid JSON");
        assert_eq!(
            cmd,
            Command::DeviceFrame {
                device_id: d,
                user_id: u,
                frame_id: 42,
                kind: ForwardKind::KeyExchange,
                payload: encode_payload(b"\x00\x01opaque"),
            }
        );
    }

    #[test]
    fn lines_follow_each_other_in_one_buffer() {
        let mut buf = BytesMut::new();
        write_command(&mut buf, &Command::Heartbeat { seq: 1, next_in_seconds: 10, now: 5 });
        write_device_frame(&mut buf, DeviceId::random(), UserId::random(), 7, ForwardKind::Data, b"");
        write_command(&mut buf, &Command::Ack { device_id: DeviceId::random(), frame_id: 7 });
        let lines: Vec<&[u8]> = buf[..].split(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 4, "three lines, each ended by a newline");
        assert!(lines[3].is_empty());
        for line in &lines[..3] {
            serde_json::from_slice::<Command>(line).expect("each line is one command");
        }
        assert_eq!(lines[0], br#"{"Command":"HB","Seq":1,"NextInSeconds":10,"Now":5}"#);
    }
}
