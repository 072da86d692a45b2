//! Identifiers that cross the wire.
//!
//! They are distinct types so that a device id can never be passed where a user id is
//! expected; all are random UUIDs (version 4), written in their hyphenated form in JSON
//! and as 16 raw bytes on the device channel.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random identifier.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The 16 raw bytes used on binary channels.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Builds an identifier from its 16 raw bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A device, assigned at activation.
    DeviceId
);
uuid_id!(
    /// A provisioned user account.
    UserId
);
uuid_id!(
    /// A registered enterprise server installation. Public, unlike its GUID.
    VesId
);
uuid_id!(
    /// An enterprise license.
    LicenseId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = DeviceId::random();
        let parsed: DeviceId = id.to_string().parse().expect("parse");
        assert_eq!(id, parsed);
        assert_eq!(DeviceId::from_bytes(*id.as_bytes()), id);
        assert!("not-a-uuid".parse::<DeviceId>().is_err());
    }

    #[test]
    fn json_is_plain_string() {
        let id = UserId::random();
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{id}\""));
    }

    /// docs/protocol.md §9 note 24: every standard spelling is read, one is written.
    #[test]
    fn json_accepts_the_standard_uuid_spellings() {
        let id: DeviceId = "6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a".parse().expect("hyphenated");
        for spelling in [
            "6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a",
            "6F1C2A4E-8D1B-4C47-9B7E-1F0E2D3C4B5A",
            "6f1c2a4e8d1b4c479b7e1f0e2d3c4b5a",
            "{6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a}",
            "urn:uuid:6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a",
        ] {
            let parsed: DeviceId = serde_json::from_str(&format!("\"{spelling}\"")).expect(spelling);
            assert_eq!(parsed, id, "{spelling}");
        }
        assert_eq!(serde_json::to_string(&id).expect("json"), "\"6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a\"");
        assert!(serde_json::from_str::<DeviceId>("\"6f1c2a4e-8d1b\"").is_err());
    }
}
