//! Just enough RFC 5322 for the endpoints: reading a few header fields of a message (the
//! device's inbox listing, the agent's recipient list for SMTP submission) and composing a
//! plain-text message on the device.
//!
//! Not a MIME library: bodies are carried as opaque bytes end to end; only headers are
//! looked at, and a header that cannot be parsed is simply shown raw.

use base64::Engine;

/// The header fields of a message, unfolded, in order, up to the first empty line.
/// Accepts CRLF and bare LF line ends (Maildir files often use LF).
pub fn headers(message: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in message.split(|b| *b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(text.trim());
            }
            continue;
        }
        if let Some((name, value)) = text.split_once(':') {
            out.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    out
}

/// The first field named `name` (case-insensitive), with RFC 2047 encoded words decoded.
pub fn header(message: &[u8], name: &str) -> Option<String> {
    headers(message).into_iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| decode_words(&v))
}

/// The body: everything after the first empty line.
pub fn body(message: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < message.len() {
        let end = message[i..].iter().position(|b| *b == b'\n').map(|p| i + p + 1).unwrap_or(message.len());
        let line = &message[i..end];
        if line == b"\n" || line == b"\r\n" {
            return &message[end..];
        }
        i = end;
    }
    &[]
}

/// Decodes RFC 2047 encoded words in UTF-8 or US-ASCII (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`);
/// other charsets are left as they are.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, tail) = rest.split_at(start);
        let decoded = tail[2..].split_once('?').and_then(|(charset, t)| {
            let (enc, t) = t.split_once('?')?;
            let (text, after) = t.split_once("?=")?;
            let cs = charset.to_ascii_lowercase();
            if cs != "utf-8" && cs != "us-ascii" {
                return None;
            }
            let bytes = match enc {
                "b" | "B" => base64::engine::general_purpose::STANDARD.decode(text).ok()?,
                "q" | "Q" => decode_q(text)?,
                _ => return None,
            };
            Some((String::from_utf8_lossy(&bytes).into_owned(), after))
        });
        match decoded {
            Some((word, after)) => {
                // Whitespace between two encoded words is not part of the text.
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&word);
                rest = after;
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &tail[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_q(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

/// A header value safe to put on the wire: as is when it is printable ASCII, else one RFC
/// 2047 `=?utf-8?b?…?=` word. Control characters (CR, LF) never pass through, so a value
/// cannot inject header lines.
pub fn encode_value(value: &str) -> String {
    let clean: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.is_ascii() {
        clean
    } else {
        format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(clean.as_bytes()))
    }
}

/// The addresses of an address-list field (`To`, `Cc`, `From`): `a@b`, `Name <a@b>`,
/// `"Last, First" <a@b>`, comma-separated; groups and comments are not supported.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut in_angle = false;
    for c in value.chars() {
        match c {
            '"' if !in_angle => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                push_address(&mut out, &current);
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    push_address(&mut out, &current);
    out
}

fn push_address(out: &mut Vec<String>, mailbox: &str) {
    let mailbox = mailbox.trim();
    let addr = match (mailbox.rfind('<'), mailbox.rfind('>')) {
        (Some(a), Some(b)) if a < b => &mailbox[a + 1..b],
        _ => mailbox,
    };
    let addr = addr.trim();
    if is_address(addr) {
        out.push(addr.to_owned());
    }
}

/// Whether `s` looks like an SMTP address (`local@domain`, no spaces or angle brackets).
pub fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'))
}

/// An RFC 5322 date (`Thu, 01 Jan 1970 00:00:00 +0000`) for a unix time in milliseconds, UTC.
pub fn date(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = noc_protocol::clock::civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// What a device user writes: composed into a plain-text RFC 5322 message by [`compose`].
#[derive(Clone, Debug, Default)]
pub struct Draft {
    /// The sender's mailbox, if the device knows it; the VES sets `From` anyway.
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text: String,
}

/// A plain-text message (UTF-8, 8bit, CRLF line ends). `Bcc` is not written: blind
/// recipients travel in the item header. Without `from` the message has no `From` field;
/// the VES, acting as the submission agent, adds the user's address (RFC 6409 §8).
pub fn compose(draft: &Draft, unix_ms: i64, message_id: &str) -> Vec<u8> {
    let mut m = String::new();
    if let Some(from) = &draft.from {
        m.push_str(&format!("From: {}\r\n", encode_value(from)));
    }
    if !draft.to.is_empty() {
        m.push_str(&format!("To: {}\r\n", encode_value(&draft.to.join(", "))));
    }
    if !draft.cc.is_empty() {
        m.push_str(&format!("Cc: {}\r\n", encode_value(&draft.cc.join(", "))));
    }
    m.push_str(&format!("Subject: {}\r\n", encode_value(&draft.subject)));
    m.push_str(&format!("Date: {}\r\n", date(unix_ms)));
    m.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    m.push_str(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    for line in draft.text.lines() {
        // A lone "." line is fine in a message; SMTP dot-stuffing is the transport's job.
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_folded_and_encoded_headers() {
        let msg = b"From: Alice <alice@example.com>\nSubject: =?utf-8?q?caf=C3=A9?= and\n =?UTF-8?B?dMOpbMOp?=\nTo: bob@example.com\n\nbody\n";
        assert_eq!(header(msg, "subject").as_deref(), Some("caf\u{e9} and t\u{e9}l\u{e9}"));
        assert_eq!(header(msg, "FROM").as_deref(), Some("Alice <alice@example.com>"));
        assert_eq!(body(msg), b"body\n");
        assert!(header(msg, "Cc").is_none());
    }

    #[test]
    fn parses_address_lists() {
        assert_eq!(
            addresses(r#""Ng, Bob" <bob@example.com>, carol@example.org , Dave <dave@x.y>, junk"#),
            vec!["bob@example.com", "carol@example.org", "dave@x.y"]
        );
        assert!(addresses("").is_empty());
    }

    #[test]
    fn dates_and_composition() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(date(1_700_000_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        let draft = Draft {
            from: None,
            to: vec!["a@example.com".into()],
            cc: vec![],
            subject: "R\u{e9}union\r\nBcc: evil@x".into(),
            text: "line 1\nline 2".into(),
        };
        let msg = compose(&draft, 0, "1@device");
        let text = String::from_utf8(msg.clone()).expect("utf8");
        assert!(!text.contains("\r\nBcc:"), "no header injection: {text}");
        assert_eq!(header(&msg, "Subject").as_deref(), Some("R\u{e9}union  Bcc: evil@x"));
        assert_eq!(header(&msg, "To").as_deref(), Some("a@example.com"));
        assert_eq!(body(&msg), b"line 1\r\nline 2\r\n");
    }
}
