//! The three baseline wire protocols, as far as the benchmark needs them: MQTT 3.1.1
//! (CONNECT, SUBSCRIBE, PUBLISH at QoS 1 and its PUBACK), the NATS client protocol
//! (CONNECT, SUB, PUB, MSG, PING/PONG) and a 4-byte length-prefixed frame for the 1:1
//! forwarding ceiling.
//!
//! Parsers take bytes from the front of a read buffer and return `Ok(None)` until a whole
//! packet is there; a peer that sends something malformed gets a [`WireError`], never a
//! panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Largest packet the parsers accept (the benchmark's frames are a few hundred bytes).
pub const MAX_PACKET_BYTES: usize = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    #[error("{0} packet of {1} bytes exceeds the limit")]
    TooLarge(&'static str, usize),
    #[error("server refused: {0}")]
    Refused(String),
}

/// What a parser found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// An application payload; `ack` is the MQTT packet id to acknowledge (QoS 1).
    Data { payload: Bytes, ack: Option<u16> },
    /// The server pings (NATS `PING`): answer with [`nats_pong`].
    Ping,
    /// A step of the handshake completed: CONNACK, SUBACK, PONG, or the forwarder's READY.
    Ready,
    /// Anything the benchmark does not act on (PUBACK, `+OK`, `INFO`, ...).
    Other,
}

// -- MQTT 3.1.1 -------------------------------------------------------------------------

fn put_remaining_length(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// CONNECT with a clean session and the given keep-alive.
pub fn mqtt_connect(client_id: &str, keep_alive_seconds: u16) -> Bytes {
    let mut body = BytesMut::new();
    put_str(&mut body, "MQTT");
    body.put_u8(4); // protocol level 3.1.1
    body.put_u8(0x02); // clean session
    body.put_u16(keep_alive_seconds);
    put_str(&mut body, client_id);
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(0x10);
    put_remaining_length(&mut out, body.len());
    out.put_slice(&body);
    out.freeze()
}

/// SUBSCRIBE to one filter at QoS 1.
pub fn mqtt_subscribe(packet_id: u16, filter: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0x82);
    put_remaining_length(&mut out, 2 + 2 + filter.len() + 1);
    out.put_u16(packet_id);
    put_str(&mut out, filter);
    out.put_u8(1);
    out.freeze()
}

/// Appends a QoS 1 PUBLISH.
pub fn mqtt_publish(buf: &mut BytesMut, topic: &str, packet_id: u16, payload: &[u8]) {
    buf.put_u8(0x32);
    put_remaining_length(buf, 2 + topic.len() + 2 + payload.len());
    put_str(buf, topic);
    buf.put_u16(packet_id);
    buf.put_slice(payload);
}

/// Appends a PUBACK.
pub fn mqtt_puback(buf: &mut BytesMut, packet_id: u16) {
    buf.put_slice(&[0x40, 0x02]);
    buf.put_u16(packet_id);
}

/// Takes one MQTT packet off the front of `buf`.
pub fn mqtt_next(buf: &mut BytesMut) -> Result<Option<Event>, WireError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    // Remaining length: up to four 7-bit groups.
    let mut len = 0usize;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else { return Ok(None) };
        len |= ((b & 0x7f) as usize) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(WireError::Malformed("MQTT remaining length"));
        }
    }
    if len > MAX_PACKET_BYTES {
        return Err(WireError::TooLarge("MQTT", len));
    }
    if buf.len() < header + len {
        return Ok(None);
    }
    buf.advance(header);
    let mut body = buf.split_to(len).freeze();
    match first >> 4 {
        2 => {
            // CONNACK: flags, return code.
            if body.len() != 2 {
                return Err(WireError::Malformed("CONNACK"));
            }
            match body[1] {
                0 => Ok(Some(Event::Ready)),
                rc => Err(WireError::Refused(format!("CONNACK return code {rc}"))),
            }
        }
        3 => {
            let qos = (first >> 1) & 0x03;
            if body.len() < 2 {
                return Err(WireError::Malformed("PUBLISH"));
            }
            let topic_len = body.get_u16() as usize;
            let id_len = if qos > 0 { 2 } else { 0 };
            if body.len() < topic_len + id_len {
                return Err(WireError::Malformed("PUBLISH"));
            }
            body.advance(topic_len);
            let ack = (qos > 0).then(|| body.get_u16());
            Ok(Some(Event::Data { payload: body, ack }))
        }
        9 => {
            // SUBACK: packet id, then one granted QoS per filter (0x80 = failure).
            if body.len() < 3 {
                return Err(WireError::Malformed("SUBACK"));
            }
            if body[2..].contains(&0x80) {
                return Err(WireError::Refused("SUBACK: subscription refused".into()));
            }
            Ok(Some(Event::Ready))
        }
        _ => Ok(Some(Event::Other)),
    }
}

// -- NATS -------------------------------------------------------------------------------

/// The client's CONNECT, one SUB and a PING whose PONG confirms both.
pub fn nats_handshake(name: &str, subject: &str) -> Bytes {
    let connect = serde_json::json!({
        "verbose": false, "pedantic": false, "tls_required": true, "name": name,
        "lang": "rust", "version": env!("CARGO_PKG_VERSION"), "protocol": 1, "headers": false,
    });
    Bytes::from(format!("CONNECT {connect}\r\nSUB {subject} 1\r\nPING\r\n"))
}

/// Appends a PUB.
pub fn nats_publish(buf: &mut BytesMut, subject: &str, payload: &[u8]) {
    buf.put_slice(b"PUB ");
    buf.put_slice(subject.as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(payload.len().to_string().as_bytes());
    buf.put_slice(b"\r\n");
    buf.put_slice(payload);
    buf.put_slice(b"\r\n");
}

/// The answer to a server's PING.
pub fn nats_pong() -> Bytes {
    Bytes::from_static(b"PONG\r\n")
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Takes one NATS protocol message off the front of `buf`.
pub fn nats_next(buf: &mut BytesMut) -> Result<Option<Event>, WireError> {
    let Some(eol) = find_crlf(buf) else {
        if buf.len() > MAX_PACKET_BYTES {
            return Err(WireError::TooLarge("NATS control line", buf.len()));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..eol]).map_err(|_| WireError::Malformed("NATS control line"))?;
    let mut words = line.split_ascii_whitespace();
    let op = words.next().unwrap_or("").to_ascii_uppercase();
    match op.as_str() {
        "MSG" => {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let args: Vec<&str> = words.collect();
            if !(3..=4).contains(&args.len()) {
                return Err(WireError::Malformed("NATS MSG"));
            }
            let n: usize = args[args.len() - 1].parse().map_err(|_| WireError::Malformed("NATS MSG"))?;
            if n > MAX_PACKET_BYTES {
                return Err(WireError::TooLarge("NATS MSG", n));
            }
            if buf.len() < eol + 2 + n + 2 {
                return Ok(None);
            }
            if &buf[eol + 2 + n..eol + 2 + n + 2] != b"\r\n" {
                return Err(WireError::Malformed("NATS MSG payload"));
            }
            buf.advance(eol + 2);
            let payload = buf.split_to(n).freeze();
            buf.advance(2);
            Ok(Some(Event::Data { payload, ack: None }))
        }
        "-ERR" => Err(WireError::Refused(line.to_string())),
        _ => {
            let event = match op.as_str() {
                "PING" => Event::Ping,
                "PONG" => Event::Ready,
                _ => Event::Other, // INFO, +OK
            };
            buf.advance(eol + 2);
            Ok(Some(event))
        }
    }
}

// -- 1:1 forwarding ---------------------------------------------------------------------

/// The forwarder's handshake payloads: a device's HELLO carries its index; the hub's
/// READY answers it.
pub const FORWARD_HELLO: &[u8; 4] = b"HELO";
pub const FORWARD_READY: &[u8; 4] = b"REDY";

/// Appends one length-prefixed frame.
pub fn forward_frame(buf: &mut BytesMut, payload: &[u8]) {
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
}

/// A device's HELLO frame.
pub fn forward_hello(index: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(12);
    b.put_u32(8);
    b.put_slice(FORWARD_HELLO);
    b.put_u32(index);
    b.freeze()
}

/// Takes one length-prefixed frame off the front of `buf` (READY becomes [`Event::Ready`]).
pub fn forward_next(buf: &mut BytesMut) -> Result<Option<Event>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if n > MAX_PACKET_BYTES {
        return Err(WireError::TooLarge("forwarded", n));
    }
    if buf.len() < 4 + n {
        return Ok(None);
    }
    buf.advance(4);
    let payload = buf.split_to(n).freeze();
    if payload.as_ref() == FORWARD_READY {
        return Ok(Some(Event::Ready));
    }
    Ok(Some(Event::Data { payload, ack: None }))
}

/// The device index of a HELLO payload.
pub fn forward_hello_index(payload: &[u8]) -> Option<u32> {
    if payload.len() != 8 || &payload[..4] != FORWARD_HELLO {
        return None;
    }
    Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(
        bytes: &[u8],
        next: fn(&mut BytesMut) -> Result<Option<Event>, WireError>,
    ) -> Result<Vec<Event>, WireError> {
        // One byte at a time: every prefix must wait for more, never misparse.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in bytes {
            buf.put_u8(*b);
            while let Some(e) = next(&mut buf)? {
                out.push(e);
            }
        }
        assert!(buf.is_empty(), "everything consumed");
        Ok(out)
    }

    #[test]
    fn mqtt_packets_parse_byte_by_byte() {
        let payload = vec![7u8; 300]; // two-byte remaining length
        let mut b = BytesMut::new();
        b.put_slice(&[0x20, 0x02, 0x00, 0x00]); // CONNACK accepted
        b.put_slice(&[0x90, 0x03, 0x00, 0x01, 0x01]); // SUBACK granted QoS 1
        mqtt_publish(&mut b, "d/42", 513, &payload);
        b.put_slice(&[0x30, 0x06, 0x00, 0x01, b't', 1, 2, 3]); // QoS 0 publish
        mqtt_puback(&mut b, 9);
        let events = feed(&b, mqtt_next).expect("valid");
        assert_eq!(events[0], Event::Ready);
        assert_eq!(events[1], Event::Ready);
        assert_eq!(events[2], Event::Data { payload: Bytes::from(payload), ack: Some(513) });
        assert_eq!(events[3], Event::Data { payload: Bytes::from_static(&[1, 2, 3]), ack: None });
        assert_eq!(events[4], Event::Other);
    }

    #[test]
    fn mqtt_connect_and_subscribe_match_the_spec_bytes() {
        // MQTT 3.1.1 §3.1: "MQTT", level 4, clean session, keep-alive, client id.
        assert_eq!(
            mqtt_connect("c1", 60).as_ref(),
            &[0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1']
        );
        assert_eq!(mqtt_subscribe(1, "u/+").as_ref(), &[0x82, 8, 0, 1, 0, 3, b'u', b'/', b'+', 1]);
    }

    #[test]
    fn mqtt_refusals_and_garbage_are_errors() {
        let mut b = BytesMut::from(&[0x20, 0x02, 0x00, 0x05][..]);
        assert!(matches!(mqtt_next(&mut b), Err(WireError::Refused(_))));
        let mut b = BytesMut::from(&[0x90, 0x03, 0x00, 0x01, 0x80][..]);
        assert!(matches!(mqtt_next(&mut b), Err(WireError::Refused(_))));
        let mut b = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(mqtt_next(&mut b).is_err(), "five-byte remaining length");
        let mut b = BytesMut::from(&[0x32, 0x03, 0x00, 0x09, 0x00][..]);
        assert_eq!(mqtt_next(&mut b), Err(WireError::Malformed("PUBLISH")), "topic longer than the packet");
    }

    #[test]
    fn nats_messages_parse_byte_by_byte() {
        let mut b = BytesMut::new();
        b.put_slice(b"INFO {\"tls_required\":true}\r\n+OK\r\nPING\r\nPONG\r\n");
        b.put_slice(b"MSG u.7 1 5\r\nhe\r\no\r\n"); // a payload may contain CRLF
        b.put_slice(b"MSG u.7 1 reply.x 0\r\n\r\n");
        let events = feed(&b, nats_next).expect("valid");
        assert_eq!(events[..4], [Event::Other, Event::Other, Event::Ping, Event::Ready]);
        assert_eq!(events[4], Event::Data { payload: Bytes::from_static(b"he\r\no"), ack: None });
        assert_eq!(events[5], Event::Data { payload: Bytes::new(), ack: None });
        let mut pubs = BytesMut::new();
        nats_publish(&mut pubs, "d.3", b"xyz");
        assert_eq!(pubs.as_ref(), b"PUB d.3 3\r\nxyz\r\n");
        assert!(nats_handshake("lt", "u.*").ends_with(b"\r\nSUB u.* 1\r\nPING\r\n"));
    }

    #[test]
    fn nats_errors_are_reported() {
        let mut b = BytesMut::from(&b"-ERR 'Authorization Violation'\r\n"[..]);
        assert!(matches!(nats_next(&mut b), Err(WireError::Refused(m)) if m.contains("Authorization")));
        let mut b = BytesMut::from(&b"MSG a 1 x\r\n"[..]);
        assert_eq!(nats_next(&mut b), Err(WireError::Malformed("NATS MSG")));
        let mut b = BytesMut::from(&b"MSG a 1 3\r\nabcXY"[..]);
        assert_eq!(nats_next(&mut b), Err(WireError::Malformed("NATS MSG payload")));
    }

    #[test]
    fn forward_frames_round_trip() {
        let mut b = BytesMut::new();
        b.put_slice(&forward_hello(77));
        forward_frame(&mut b, FORWARD_READY);
        forward_frame(&mut b, b"payload");
        let events = feed(&b, forward_next).expect("valid");
        let Event::Data { payload, .. } = &events[0] else { panic!("hello is data to the hub") };
        assert_eq!(forward_hello_index(payload), Some(77));
        assert_eq!(events[1], Event::Ready);
        assert_eq!(events[2], Event::Data { payload: Bytes::from_static(b"payload"), ack: None });
        let mut big = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(forward_next(&mut big), Err(WireError::TooLarge(..))));
        assert_eq!(forward_hello_index(b"HELO"), None);
    }
}
