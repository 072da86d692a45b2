//! What an endpoint opens from its peer, through the relay: both suites' frame formats
//! (legacy-2005 AES-CFB + HMAC-SHA1 + deflate, modern AEAD) and the key-agreement
//! messages. Any input is refused cleanly without panicking or allocating beyond the
//! plaintext limit; forged frames never open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use noc_crypto::{LegacyKey, WakeUp, WakeUpAck, modern};

const KEY: [u8; 16] = *b"fuzz-legacy-key!";
const MODERN_KEY: [u8; 32] = *b"fuzz-modern-key-fuzz-modern-key!";

fuzz_target!(|data: &[u8]| {
    // A frame sealed under this key by the fuzzer would need a MAC forgery.
    assert!(LegacyKey::from_bytes(KEY).open(data, 64 * 1024).is_err(), "a forged legacy frame opened");
    assert!(modern::open_frame(&MODERN_KEY, data).is_err(), "a forged modern frame opened");
    if let Ok(w) = WakeUp::decode(data) {
        assert_eq!(WakeUp::decode(&w.encode().expect("encodes")).expect("re-decodes"), w);
    }
    if let Ok(a) = WakeUpAck::decode(data) {
        assert_eq!(WakeUpAck::decode(&a.encode().expect("encodes")).expect("re-decodes"), a);
    }
});
