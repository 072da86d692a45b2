//! The bus between nodes: any payload read from Redis decodes to a message or a clean
//! error, and a decoded message encodes back to bytes that decode to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use noc_cluster::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode(bytes::Bytes::copy_from_slice(data)) {
        let bytes = wire::encode(&msg).expect("a decoded message encodes");
        assert_eq!(wire::decode(bytes).expect("re-decodes"), msg);
    }
});
