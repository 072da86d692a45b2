//! The device channel's frame codec, as the relay and the device read it from a socket:
//! any byte stream is frames or a clean error, and every frame decoded encodes back to
//! itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use noc_protocol::device::{Frame, FrameCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let mut encoded = BytesMut::new();
        frame.encode(&mut encoded);
        let again = FrameCodec::new(64 * 1024 + 64).decode(&mut encoded);
        assert!(matches!(again, Ok(Some(ref f)) if *f == frame), "{frame:?} does not survive encode/decode: {again:?}");
    }
    let _ = Frame::decode_body(bytes::Bytes::copy_from_slice(data));
});
