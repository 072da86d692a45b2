//! The end-to-end item and record codecs both endpoints apply to what they decrypt: any
//! plaintext is an item/record or a clean error, and what decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use noc_endpoint::{Item, Record};

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = Item::decode(data) {
        let bytes = item.encode().expect("a decoded item encodes");
        assert_eq!(Item::decode(&bytes).expect("re-decodes"), item);
    }
    let _ = Item::decode_header(data);
    if let Ok(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()).expect("re-decodes"), record);
    }
});
