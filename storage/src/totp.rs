//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): the second factor every
//! operator signs in with. HMAC-SHA1, 30-second steps, 6 digits — what authenticator apps
//! expect from an `otpauth://totp/` URI.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Steps before and after the current one a code is accepted for (clock drift, typing).
pub const WINDOW: u64 = 1;
/// Bytes of a secret (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;

/// HOTP (RFC 4226 §5.3) of `secret` at `counter`.
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(secret) else { return 0 };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary =
        u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    binary % 10u32.pow(DIGITS)
}

/// The step of a Unix time.
pub fn step(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// The step `code` is valid for, within [`WINDOW`] of `unix_seconds`, if any. The caller
/// records the step and refuses it (and older ones) afterwards, so a code works once.
pub fn verify(secret: &[u8], code: &str, unix_seconds: u64) -> Option<u64> {
    let code = code.trim().replace(' ', "");
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let now = step(unix_seconds);
    (now.saturating_sub(WINDOW)..=now + WINDOW).find(|s| {
        // Constant time per candidate: the comparison does not leak how many digits match.
        subtle::ConstantTimeEq::ct_eq(&hotp(secret, *s).to_be_bytes()[..], &wanted.to_be_bytes()[..]).into()
    })
}

/// RFC 4648 base32 without padding: how authenticator apps take the secret.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u64, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The `otpauth://` URI an authenticator app enrolls from (as a QR code or typed).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 (the 8-digit values; ours are their last 6 digits).
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(secret, step(time)), eight % 1_000_000, "t={time}");
        }
    }

    /// RFC 4226 Appendix D.
    #[test]
    fn rfc_4226_hotp_vectors() {
        let secret = b"12345678901234567890";
        let expected = [755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489];
        for (counter, want) in expected.into_iter().enumerate() {
            assert_eq!(hotp(secret, counter as u64), want);
        }
    }

    #[test]
    fn codes_are_accepted_within_the_window_only() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_111u64;
        let code = format!("{:06}", hotp(secret, step(now)));
        assert_eq!(verify(secret, &code, now), Some(step(now)));
        assert_eq!(verify(secret, &code, now + 30), Some(step(now)), "one step late");
        assert_eq!(verify(secret, &code, now + 90), None, "three steps late");
        assert_eq!(verify(secret, "12345", now), None);
        assert_eq!(verify(secret, "abcdef", now), None);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(verify(secret, &spaced, now), Some(step(now)), "as apps show it");
    }

    #[test]
    fn base32_and_the_enrolment_uri() {
        // RFC 4648 §10.
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        let uri = otpauth_uri("NOC", "alice@noc", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/NOC:alice%40noc?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=NOC&algorithm=SHA1&digits=6&period=30"
        );
    }
}
