//! The RTS JSON the relay and the agent parse from each other (requests, commands, error
//! bodies): any input is a value or a clean error, and what parses serialises back to JSON
//! that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use noc_protocol::rts;

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&value).expect("a parsed value serialises");
        let again: T = serde_json::from_slice(&text).expect("what was serialised parses");
        assert_eq!(format!("{value:?}"), format!("{again:?}"));
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<rts::Command>(data);
    round_trip::<rts::DataRequest>(data);
    round_trip::<rts::RtsConnectionEnvelope>(data);
    round_trip::<rts::LicenseRequest>(data);
    round_trip::<rts::AccountActivationRequest>(data);
    round_trip::<rts::DeviceActivationRequest>(data);
    let _ = rts::ErrorReply::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rts::decode_payload(text);
    }
});
