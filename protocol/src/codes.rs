//! Every error and reason code that crosses the wire, in one place.
//!
//! Numeric values are used on the binary device channel; the snake_case names are used in
//! JSON. Values are never reused: a new code gets a new number, and receivers must accept
//! numbers they do not know (they decode as `Other`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $num:literal => $text:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A code this version does not know (sent by a newer peer).
            Other(u16),
        }

        impl $name {
            /// Every known code, for documentation and exhaustive tests.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The numeric value used on binary channels.
            pub fn as_u16(self) -> u16 {
                match self {
                    $( $name::$variant => $num, )*
                    $name::Other(n) => n,
                }
            }

            /// Decodes a numeric value; unknown values are kept as `Other`.
            pub fn from_u16(n: u16) -> Self {
                match n {
                    $( $num => $name::$variant, )*
                    other => $name::Other(other),
                }
            }

            /// The snake_case name used in JSON and metric labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(_) => "other",
                }
            }

            /// Parses a snake_case name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $text => Some($name::$variant), )*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::parse(&s).unwrap_or($name::Other(0)))
            }
        }
    };
}

wire_enum! {
    /// Why a frame could not be delivered. The sender keeps the frame and retries later:
    /// the relay stores nothing.
    pub enum UndeliverableReason {
        /// The peer is known but has no live session right now.
        PeerOffline = 1 => "peer_offline",
        /// The addressed peer is not known to the sender (never activated, deleted,
        /// or not a device of this VES).
        UnknownPeer = 2 => "unknown_peer",
        /// The addressed peer exists but belongs to another enterprise server.
        NotOwned = 3 => "not_owned",
        /// The peer's bounded send queue is full (it reads too slowly).
        QueueFull = 4 => "queue_full",
        /// The peer's session ended before the frame was written to it.
        PeerDisconnected = 5 => "peer_disconnected",
        /// The frame exceeds the relay's maximum frame size.
        FrameTooLarge = 6 => "frame_too_large",
        /// The peer's node is draining; retry after the hinted delay.
        PeerDraining = 7 => "peer_draining",
    }
}

wire_enum! {
    /// Why the relay issued no certificate for a CERT_RENEW (device-channel version 3).
    pub enum RenewalRefusal {
        /// The certificate request is malformed, its key is not accepted, or its signature
        /// does not verify: retrying the same request cannot help.
        BadRequest = 1 => "bad_request",
        /// The relay cannot issue now (no device CA, the CA expired, the account store is
        /// unavailable): retry later, on a later connection.
        Unavailable = 2 => "unavailable",
        /// A renewal of this session is already in progress or done: one per connection.
        InProgress = 3 => "in_progress",
    }
}

wire_enum! {
    /// Why the relay closes a session (device `CLOSE` frame, RTS `Close` command).
    pub enum CloseCode {
        /// Normal close requested by the peer.
        Normal = 0 => "normal",
        /// None of the versions in the hello is supported.
        UnsupportedVersion = 1 => "unsupported_version",
        /// A frame could not be parsed.
        MalformedFrame = 2 => "malformed_frame",
        /// A frame's length prefix exceeds the maximum frame size.
        FrameTooLarge = 3 => "frame_too_large",
        /// Credentials were not accepted.
        AuthFailed = 4 => "auth_failed",
        /// Hello and authentication did not complete within the handshake deadline.
        HandshakeTimeout = 5 => "handshake_timeout",
        /// A newer session for the same identity replaced this one.
        Replaced = 6 => "replaced",
        /// The device credential was revoked (password reset, user deleted).
        Revoked = 7 => "revoked",
        /// Nothing was received within the idle timeout.
        IdleTimeout = 8 => "idle_timeout",
        /// The peer did not read its queued frames within the write-stall timeout.
        SlowConsumer = 9 => "slow_consumer",
        /// The node is shutting down; reconnect (to any node) after the hinted delay.
        ServerDraining = 10 => "server_draining",
        /// A frame valid in itself arrived in the wrong state.
        ProtocolViolation = 11 => "protocol_violation",
        /// The relay failed internally.
        ServerError = 12 => "server_error",
        /// Too many failed password attempts: the account is locked for a while.
        LockedOut = 13 => "locked_out",
        /// A backing service (the account store) is unavailable; retry later.
        ServiceUnavailable = 14 => "service_unavailable",
        /// The node holds its maximum number of sessions.
        TooManySessions = 15 => "too_many_sessions",
        /// The user or its license is suspended or expired.
        AccountSuspended = 16 => "account_suspended",
        /// The user asked for a remote wipe of this device: reconnect at once to receive
        /// it (device-channel version 2 answers the authentication with WIPE).
        WipePending = 17 => "wipe_pending",
        /// The user or its license may not use ConstantSync devices (an operator took the
        /// feature away); the device must not reconnect until it is given back.
        FeatureDisabled = 18 => "feature_disabled",
        /// AUTH_CERT (device-channel version 3) without an acceptable client certificate:
        /// none was presented, it names another device, or a renewal replaced it. The
        /// device may authenticate with its credential (AUTH_TOKEN) instead.
        CertificateRefused = 19 => "certificate_refused",
        /// The device's license requires a client certificate (AUTH_CERT): the credential
        /// and the password no longer open a session. A device whose certificate expired
        /// activates again.
        CertificateRequired = 20 => "certificate_required",
    }
}

/// Error codes of the HTTPS APIs, sent as `{"Error":{"Code":..,"Message":..}}`.
///
/// The JSON text of each code is [`ApiErrorCode::as_str`]; clients parse it with
/// [`ApiErrorCode::parse`] (or read a whole error body with
/// [`crate::rts::ErrorReply::parse`]), so no client spells a code by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiErrorCode {
    /// The request body is not valid JSON for this endpoint, or a field is invalid.
    BadRequest,
    /// The request body exceeds the configured limit.
    PayloadTooLarge,
    /// Name/password, login/password or GUID/LicenseId not accepted. Says nothing more.
    InvalidCredentials,
    /// Too many failed attempts; retry after the lockout period.
    LockedOut,
    /// The license or account is suspended or expired.
    Suspended,
    /// KeyId unknown, expired (ReplyTime elapsed) or Key wrong.
    InvalidSession,
    /// The license has no free seat.
    SeatsFull,
    /// The user, device or resource does not exist for this caller.
    NotFound,
    /// The resource already exists (e-mail address or MSISDN taken).
    Conflict,
    /// The MSISDN is not on the carrier's approval list.
    MsisdnNotApproved,
    /// The account has not been activated yet (no MSISDN bound).
    NotActivated,
    /// The operator's role or the token's scope does not allow the action (admin API).
    Forbidden,
    /// The user or its license may not use this feature (ConstantSync devices, a browse
    /// interface): an operator took it away.
    FeatureDisabled,
    /// Too many pending RTS parameter sets or sessions: retry later.
    TooManyRequests,
    /// A backing service is unavailable; retry later.
    Unavailable,
    /// The node is draining; connect again (any node) after `Retry-After`.
    Draining,
    /// Unexpected internal failure (details are only in the relay's log).
    Internal,
    /// A code this version does not know (sent by a newer relay).
    Other,
}

impl ApiErrorCode {
    /// Every known code, for documentation and exhaustive tests.
    pub const ALL: &'static [ApiErrorCode] = &[
        ApiErrorCode::BadRequest,
        ApiErrorCode::PayloadTooLarge,
        ApiErrorCode::InvalidCredentials,
        ApiErrorCode::LockedOut,
        ApiErrorCode::Suspended,
        ApiErrorCode::InvalidSession,
        ApiErrorCode::SeatsFull,
        ApiErrorCode::NotFound,
        ApiErrorCode::Conflict,
        ApiErrorCode::MsisdnNotApproved,
        ApiErrorCode::NotActivated,
        ApiErrorCode::Forbidden,
        ApiErrorCode::FeatureDisabled,
        ApiErrorCode::TooManyRequests,
        ApiErrorCode::Unavailable,
        ApiErrorCode::Draining,
        ApiErrorCode::Internal,
    ];

    /// The snake_case text sent in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorCode::BadRequest => "bad_request",
            ApiErrorCode::PayloadTooLarge => "payload_too_large",
            ApiErrorCode::InvalidCredentials => "invalid_credentials",
            ApiErrorCode::LockedOut => "locked_out",
            ApiErrorCode::Suspended => "suspended",
            ApiErrorCode::InvalidSession => "invalid_session",
            ApiErrorCode::SeatsFull => "seats_full",
            ApiErrorCode::NotFound => "not_found",
            ApiErrorCode::Conflict => "conflict",
            ApiErrorCode::MsisdnNotApproved => "msisdn_not_approved",
            ApiErrorCode::NotActivated => "not_activated",
            ApiErrorCode::Forbidden => "forbidden",
            ApiErrorCode::FeatureDisabled => "feature_disabled",
            ApiErrorCode::TooManyRequests => "too_many_requests",
            ApiErrorCode::Unavailable => "unavailable",
            ApiErrorCode::Draining => "draining",
            ApiErrorCode::Internal => "internal",
            ApiErrorCode::Other => "other",
        }
    }

    /// Parses a code's text; a code this version does not know is [`ApiErrorCode::Other`]
    /// (docs/protocol.md §1.3: clients accept codes they do not know).
    pub fn parse(s: &str) -> Self {
        Self::ALL.iter().copied().find(|c| c.as_str() == s).unwrap_or(ApiErrorCode::Other)
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ApiErrorCode::BadRequest => 400,
            ApiErrorCode::PayloadTooLarge => 413,
            ApiErrorCode::InvalidCredentials | ApiErrorCode::InvalidSession => 401,
            ApiErrorCode::LockedOut | ApiErrorCode::TooManyRequests => 429,
            ApiErrorCode::Suspended
            | ApiErrorCode::MsisdnNotApproved
            | ApiErrorCode::NotActivated
            | ApiErrorCode::Forbidden
            | ApiErrorCode::FeatureDisabled => 403,
            ApiErrorCode::SeatsFull | ApiErrorCode::Conflict => 409,
            ApiErrorCode::NotFound => 404,
            ApiErrorCode::Unavailable | ApiErrorCode::Draining => 503,
            ApiErrorCode::Internal | ApiErrorCode::Other => 500,
        }
    }
}

impl fmt::Display for ApiErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ApiErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ApiErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ApiErrorCode::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_text_round_trip() {
        for r in UndeliverableReason::ALL {
            assert_eq!(UndeliverableReason::from_u16(r.as_u16()), *r);
            assert_eq!(UndeliverableReason::parse(r.as_str()), Some(*r));
        }
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_u16(c.as_u16()), *c);
            assert_eq!(CloseCode::parse(c.as_str()), Some(*c));
        }
        assert_eq!(CloseCode::from_u16(999), CloseCode::Other(999));
    }

    #[test]
    fn json_uses_snake_case() {
        let json = serde_json::to_string(&UndeliverableReason::QueueFull).expect("json");
        assert_eq!(json, "\"queue_full\"");
        let json = serde_json::to_string(&ApiErrorCode::SeatsFull).expect("json");
        assert_eq!(json, "\"seats_full\"");
        let unknown: ApiErrorCode = serde_json::from_str("\"brand_new_code\"").expect("unknown codes decode");
        assert_eq!(unknown, ApiErrorCode::Other);
    }

    #[test]
    fn api_error_codes_round_trip_as_text() {
        for c in ApiErrorCode::ALL {
            assert_eq!(ApiErrorCode::parse(c.as_str()), *c);
            let json = serde_json::to_string(c).expect("json");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ApiErrorCode>(&json).expect("parse"), *c);
        }
        assert_eq!(ApiErrorCode::parse("other"), ApiErrorCode::Other);
        assert_eq!(ApiErrorCode::parse(""), ApiErrorCode::Other);
        assert_eq!(ApiErrorCode::MsisdnNotApproved.to_string(), "msisdn_not_approved");
    }
}
