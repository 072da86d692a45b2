//! Suite negotiation: the `WakeUp` and `WakeUpAck` payloads.
//!
//! The device starts every session with a FORWARD of kind `WakeUp` whose payload is a
//! [`WakeUp`]: the suites it accepts, each with its ephemeral public key for that suite, so
//! that the VES can answer in one round trip whichever suite it picks. The VES answers with
//! a FORWARD of kind `WakeUpAck` carrying a [`WakeUpAck`]: the chosen suite, its ephemeral
//! public key, and (modern) the handshake data that authenticates it. White paper §11 sends
//! the key shares in a separate exchange after WakeUp/WakeUpAck; folding them in saves a
//! round trip and lets the modern handshake authenticate the offer itself.
//!
//! The encoding is binary, not JSON, because the exact bytes of the WakeUp are hashed into
//! the modern handshake's transcript: a byte string has one form, JSON has many. Both
//! decoders are strict (no trailing bytes, no duplicate suites) so a message has exactly one
//! encoding.
//!
//! ```text
//! WakeUp    = version(1) = 1 ‖ count(1) = 1..=8 ‖ count × (suite id(1) ‖ len(2, BE) ‖ key share)
//! WakeUpAck = version(1) = 1 ‖ suite id(1) ‖ len(2, BE) ‖ ephemeral public key ‖ len(2, BE) ‖ auth
//! ```
//!
//! Offers are in the device's order of preference; the VES picks by its own preference
//! among them. Suite ids the VES does not know are skipped, so newer devices can offer newer
//! suites to older agents.

use std::str::FromStr;

use crate::error::CryptoError;
use crate::suite::Suite;
use crate::{legacy, modern};

/// Version byte of both messages.
pub const WIRE_VERSION: u8 = 1;
/// At most this many suites in one offer.
pub const MAX_OFFERS: usize = 8;

impl Suite {
    /// Length of this suite's ephemeral public key.
    pub fn public_key_len(self) -> usize {
        match self {
            Suite::Modern => modern::PUBLIC_KEY_LEN,
            Suite::Legacy2005 => legacy::PUBLIC_KEY_LEN,
        }
    }
}

impl FromStr for Suite {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL.into_iter().find(|suite| suite.name() == s).ok_or_else(|| CryptoError::UnknownSuite(s.to_owned()))
    }
}

/// One offered suite with the device's ephemeral public key for it. The suite is kept as
/// its raw id so that offers of suites this version does not know survive decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyShare {
    /// The suite's wire id ([`Suite::id`]).
    pub suite_id: u8,
    /// The ephemeral public key in the suite's encoding.
    pub public_key: Vec<u8>,
}

impl KeyShare {
    /// The suite, if this version knows it.
    pub fn suite(&self) -> Option<Suite> {
        Suite::from_id(self.suite_id)
    }
}

/// The device's offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WakeUp {
    /// Offered suites in the device's order of preference.
    pub offers: Vec<KeyShare>,
}

/// The VES's choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WakeUpAck {
    /// The chosen suite; one the device offered.
    pub suite: Suite,
    /// The VES's ephemeral public key for that suite.
    pub ephemeral: Vec<u8>,
    /// Modern: the encrypted VES static key and the handshake's confirmation tag (64
    /// bytes). Legacy-2005: empty, since that suite authenticates nothing.
    pub auth: Vec<u8>,
}

struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, CryptoError> {
        let (&b, rest) = self.bytes.split_first().ok_or(CryptoError::malformed(self.what, "truncated"))?;
        self.bytes = rest;
        Ok(b)
    }

    fn bytes16(&mut self) -> Result<&'a [u8], CryptoError> {
        let len = usize::from(u16::from_be_bytes([self.u8()?, self.u8()?]));
        if self.bytes.len() < len {
            return Err(CryptoError::malformed(self.what, "length field beyond the end"));
        }
        let (field, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(field)
    }

    fn end(self) -> Result<(), CryptoError> {
        if self.bytes.is_empty() { Ok(()) } else { Err(CryptoError::malformed(self.what, "trailing bytes")) }
    }
}

fn put_bytes16(out: &mut Vec<u8>, field: &[u8], what: &'static str) -> Result<(), CryptoError> {
    let len = u16::try_from(field.len()).map_err(|_| CryptoError::malformed(what, "field longer than 65535 bytes"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

impl WakeUp {
    /// The bytes to send (and that the modern handshake hashes).
    pub fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        if self.offers.is_empty() || self.offers.len() > MAX_OFFERS {
            return Err(CryptoError::malformed("WakeUp", "must offer 1 to 8 suites"));
        }
        let mut out = vec![WIRE_VERSION, self.offers.len() as u8];
        for share in &self.offers {
            out.push(share.suite_id);
            put_bytes16(&mut out, &share.public_key, "WakeUp")?;
        }
        Ok(out)
    }

    /// Parses a WakeUp. Rejects other versions, empty or oversized offers, a suite offered
    /// twice and trailing bytes; accepts unknown suite ids.
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader { what: "WakeUp", bytes };
        if r.u8()? != WIRE_VERSION {
            return Err(CryptoError::malformed("WakeUp", "unsupported version"));
        }
        let count = usize::from(r.u8()?);
        if count == 0 || count > MAX_OFFERS {
            return Err(CryptoError::malformed("WakeUp", "must offer 1 to 8 suites"));
        }
        let mut offers: Vec<KeyShare> = Vec::with_capacity(count);
        for _ in 0..count {
            let suite_id = r.u8()?;
            let public_key = r.bytes16()?.to_vec();
            if offers.iter().any(|o| o.suite_id == suite_id) {
                return Err(CryptoError::malformed("WakeUp", "a suite is offered twice"));
            }
            offers.push(KeyShare { suite_id, public_key });
        }
        r.end()?;
        Ok(WakeUp { offers })
    }

    /// The key share offered for `suite`, if any.
    pub fn share(&self, suite: Suite) -> Option<&KeyShare> {
        self.offers.iter().find(|o| o.suite_id == suite.id())
    }
}

impl WakeUpAck {
    /// The bytes to send.
    pub fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![WIRE_VERSION, self.suite.id()];
        put_bytes16(&mut out, &self.ephemeral, "WakeUpAck")?;
        put_bytes16(&mut out, &self.auth, "WakeUpAck")?;
        Ok(out)
    }

    /// Parses a WakeUpAck. Rejects other versions, unknown suites and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader { what: "WakeUpAck", bytes };
        if r.u8()? != WIRE_VERSION {
            return Err(CryptoError::malformed("WakeUpAck", "unsupported version"));
        }
        let suite = Suite::from_id(r.u8()?).ok_or(CryptoError::malformed("WakeUpAck", "unknown suite"))?;
        let ephemeral = r.bytes16()?.to_vec();
        let auth = r.bytes16()?.to_vec();
        r.end()?;
        Ok(WakeUpAck { suite, ephemeral, auth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_ids_and_names_are_stable() {
        assert_eq!(Suite::Modern.id(), 1);
        assert_eq!(Suite::Legacy2005.id(), 2);
        assert_eq!("modern".parse::<Suite>().expect("modern"), Suite::Modern);
        assert_eq!("legacy-2005".parse::<Suite>().expect("legacy"), Suite::Legacy2005);
        assert!(matches!("legacy".parse::<Suite>(), Err(CryptoError::UnknownSuite(_))));
        assert_eq!(Suite::default(), Suite::Modern);
        for suite in Suite::ALL {
            assert_eq!(Suite::from_id(suite.id()), Some(suite));
            assert_eq!(suite.to_string().parse::<Suite>().expect("round trip"), suite);
        }
        assert_eq!(Suite::from_id(0), None);
    }

    #[test]
    fn wakeup_encoding_is_exact() {
        let w = WakeUp {
            offers: vec![
                KeyShare { suite_id: 1, public_key: vec![0xaa; 2] },
                KeyShare { suite_id: 9, public_key: vec![] },
            ],
        };
        let bytes = w.encode().expect("encode");
        assert_eq!(bytes, [1, 2, 1, 0, 2, 0xaa, 0xaa, 9, 0, 0]);
        assert_eq!(WakeUp::decode(&bytes).expect("decode"), w);
        assert_eq!(WakeUp::decode(&bytes).expect("decode").offers[1].suite(), None);
    }

    #[test]
    fn wakeup_decoder_is_strict() {
        for bad in [
            &[][..],
            &[2, 1, 1, 0, 0][..],          // version
            &[1, 0][..],                   // no offers
            &[1, 9][..],                   // too many offers
            &[1, 1, 1, 0, 3, 0xaa][..],    // length beyond the end
            &[1, 1, 1, 0, 0, 0][..],       // trailing byte
            &[1, 2, 1, 0, 0, 1, 0, 0][..], // suite twice
        ] {
            assert!(matches!(WakeUp::decode(bad), Err(CryptoError::Malformed { .. })), "accepted {bad:?}");
        }
    }

    #[test]
    fn wakeup_ack_encoding_is_exact() {
        let a = WakeUpAck { suite: Suite::Legacy2005, ephemeral: vec![4, 5], auth: vec![] };
        let bytes = a.encode().expect("encode");
        assert_eq!(bytes, [1, 2, 0, 2, 4, 5, 0, 0]);
        assert_eq!(WakeUpAck::decode(&bytes).expect("decode"), a);
        assert!(WakeUpAck::decode(&[1, 7, 0, 0, 0, 0]).is_err(), "unknown suite");
        assert!(WakeUpAck::decode(&[1, 1, 0, 0, 0, 0, 0]).is_err(), "trailing byte");
        assert!(WakeUpAck::decode(&[1, 1, 0, 0, 0]).is_err(), "truncated");
    }
}
