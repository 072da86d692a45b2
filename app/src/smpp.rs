//! An SMPP 3.4 client (ESME) for alert SMS and WAP Push (white paper §4.7): one transceiver
//! bind to the carrier's SMSC, kept up with `enquire_link`, submits throttled to
//! `alerts.smpp_max_per_second`, delivery receipts (`deliver_sm` with `esm_class` 0x04)
//! counted by their `stat:`. A lost link is bound again with doubling waits; submits that
//! find it down fail at once (the alert dispatcher retries them).
//!
//! PDUs (SMPP 3.4 §3.2): a 16-byte header (length, command id, status, sequence, all
//! big-endian), then the body's fields, C-octet strings NUL-terminated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use noc_actors::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
pub const SUBMIT_SM: u32 = 0x0000_0004;
pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
pub const DELIVER_SM: u32 = 0x0000_0005;
pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
pub const ENQUIRE_LINK: u32 = 0x0000_0015;
pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
pub const UNBIND: u32 = 0x0000_0006;
pub const UNBIND_RESP: u32 = 0x8000_0006;
pub const GENERIC_NACK: u32 = 0x8000_0000;

/// SMPP interface version 3.4.
const INTERFACE_VERSION: u8 = 0x34;
/// Largest PDU accepted from the SMSC.
const MAX_PDU: u32 = 64 * 1024;
/// A response must come within this.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to bind (`[alerts]` `smpp_*`).
#[derive(Clone, Debug)]
pub struct SmppSettings {
    pub host: String,
    pub port: u16,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// The sender shown on phones (alphanumeric, TON 5).
    pub source_addr: String,
    pub max_per_second: u32,
    pub enquire_link: Duration,
}

/// One short message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShortMessage {
    /// E.164 with or without `+` (sent without, TON international).
    pub destination: String,
    /// `esm_class`: 0x40 when the message starts with a user data header.
    pub esm_class: u8,
    /// `data_coding`: 0x00 GSM default alphabet, 0x08 UCS-2, 0x04 8-bit binary.
    pub data_coding: u8,
    pub payload: Vec<u8>,
}

impl ShortMessage {
    /// A text: the GSM default alphabet when every character has a place in it (unpacked,
    /// one octet each, at most 160), else UCS-2 (at most 70 characters); cut to fit one SMS.
    pub fn text(destination: &str, text: &str) -> Self {
        let (data_coding, payload) = match gsm7(text) {
            Some(mut octets) => {
                octets.truncate(160);
                (0x00, octets)
            }
            None => {
                let units: Vec<u16> = text.encode_utf16().take(70).collect();
                // Never split a surrogate pair.
                let units = if units.last().is_some_and(|u| (0xD800..0xDC00).contains(u)) {
                    &units[..units.len() - 1]
                } else {
                    &units[..]
                };
                (0x08, units.iter().flat_map(|u| u.to_be_bytes()).collect())
            }
        };
        ShortMessage {
            destination: destination.trim_start_matches('+').to_string(),
            esm_class: 0,
            data_coding,
            payload,
        }
    }
}

/// `text` in the GSM 03.38 default alphabet (basic table, no escapes), one octet per
/// character; `None` when a character is not in it.
pub fn gsm7(text: &str) -> Option<Vec<u8>> {
    const TABLE: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    text.chars()
        .map(
            |c| {
                if c == '\u{1b}' { None } else { TABLE.chars().position(|t| t == c).and_then(|p| u8::try_from(p).ok()) }
            },
        )
        .collect()
}

/// Why a submit failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SmppError {
    #[error("the SMSC link is down")]
    Down,
    #[error("the SMSC refused the message (command_status {0:#010x})")]
    Refused(u32),
    #[error("the SMSC did not answer in time")]
    Timeout,
}

struct Submit {
    message: ShortMessage,
    done: oneshot::Sender<Result<String, SmppError>>,
}

/// The client: submits go to the link task.
#[derive(Clone)]
pub struct SmppClient {
    tx: mpsc::Sender<Submit>,
}

impl SmppClient {
    /// Starts the link task (it binds, and binds again whenever the link is lost).
    pub fn start(settings: SmppSettings, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        actix_rt::spawn(run(settings, metrics, rx));
        SmppClient { tx }
    }

    /// Submits one message; its SMSC message id.
    pub async fn submit(&self, message: ShortMessage) -> Result<String, SmppError> {
        let (done, result) = oneshot::channel();
        self.tx.try_send(Submit { message, done }).map_err(|_| SmppError::Down)?;
        match tokio::time::timeout(RESPONSE_TIMEOUT * 2, result).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SmppError::Down),
            Err(_) => Err(SmppError::Timeout),
        }
    }
}

// -- PDUs ---------------------------------------------------------------------------------

/// A PDU as read: header fields and the body.
#[derive(Debug, PartialEq, Eq)]
pub struct Pdu {
    pub command_id: u32,
    pub status: u32,
    pub sequence: u32,
    pub body: Vec<u8>,
}

/// Encodes a PDU.
pub fn encode(command_id: u32, status: u32, sequence: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(16 + body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(16 + body.len());
    for v in [len, command_id, status, sequence] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

fn c_string(out: &mut Vec<u8>, s: &str, max: usize) {
    out.extend(s.bytes().filter(|b| *b != 0).take(max - 1));
    out.push(0);
}

/// The body of `bind_transceiver`.
pub fn bind_body(s: &SmppSettings) -> Vec<u8> {
    let mut b = Vec::new();
    c_string(&mut b, &s.system_id, 16);
    c_string(&mut b, &s.password, 9);
    c_string(&mut b, &s.system_type, 13);
    b.extend_from_slice(&[INTERFACE_VERSION, 0, 0]);
    c_string(&mut b, "", 41);
    b
}

/// The body of `submit_sm` (delivery receipt asked for).
pub fn submit_body(source: &str, m: &ShortMessage) -> Vec<u8> {
    let mut b = Vec::new();
    c_string(&mut b, "", 6); // service_type: the SMSC's default
    b.extend_from_slice(&[5, 0]); // source TON alphanumeric, NPI unknown
    c_string(&mut b, source, 21);
    b.extend_from_slice(&[1, 1]); // destination TON international, NPI ISDN (E.164)
    c_string(&mut b, &m.destination, 21);
    b.push(m.esm_class);
    b.push(0); // protocol_id
    b.push(0); // priority_flag
    c_string(&mut b, "", 17); // schedule_delivery_time: now
    c_string(&mut b, "", 17); // validity_period: the SMSC's default
    b.push(1); // registered_delivery: a receipt on success or failure
    b.push(0); // replace_if_present_flag
    b.push(m.data_coding);
    b.push(0); // sm_default_msg_id
    let payload = &m.payload[..m.payload.len().min(254)];
    b.push(u8::try_from(payload.len()).unwrap_or(254));
    b.extend_from_slice(payload);
    b
}

/// The `stat:` of a delivery receipt's text (`id:… stat:DELIVRD err:000 …`).
pub fn receipt_stat(short_message: &str) -> Option<&str> {
    let rest = short_message.split("stat:").nth(1)?;
    Some(rest.split_whitespace().next().unwrap_or(""))
}

/// The `esm_class` of a `deliver_sm` body.
fn deliver_sm_esm_class(body: &[u8]) -> Option<u8> {
    let mut at = 0;
    for skip in [0usize, 2, 2] {
        at += skip;
        let end = body.get(at..)?.iter().position(|b| *b == 0)?;
        at += end + 1;
    }
    body.get(at).copied()
}

/// The short message of a `deliver_sm` body (skipping its leading fields).
fn deliver_sm_text(body: &[u8]) -> Option<String> {
    let mut at = 0;
    let skip_c = |at: &mut usize| -> Option<()> {
        let end = body.get(*at..)?.iter().position(|b| *b == 0)?;
        *at += end + 1;
        Some(())
    };
    skip_c(&mut at)?; // service_type
    at += 2; // source ton, npi
    skip_c(&mut at)?; // source_addr
    at += 2;
    skip_c(&mut at)?; // destination_addr
    at += 3; // esm_class, protocol_id, priority_flag
    skip_c(&mut at)?; // schedule_delivery_time
    skip_c(&mut at)?; // validity_period
    at += 4; // registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    let len = usize::from(*body.get(at)?);
    let text = body.get(at + 1..at + 1 + len)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

async fn read_pdu(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Pdu> {
    let mut head = [0u8; 16];
    r.read_exact(&mut head).await?;
    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let len = word(0);
    if !(16..=MAX_PDU).contains(&len) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "PDU length out of range"));
    }
    let mut body = vec![0u8; len as usize - 16];
    r.read_exact(&mut body).await?;
    Ok(Pdu { command_id: word(4), status: word(8), sequence: word(12), body })
}

// -- the link -----------------------------------------------------------------------------

async fn run(s: SmppSettings, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Submit>) {
    let mut wait = Duration::from_secs(1);
    loop {
        match session(&s, &metrics, &mut rx, &mut wait).await {
            Ok(()) => return, // every sender is gone: the node stops
            Err(e) => {
                metrics.smpp_link_down();
                tracing::warn!(host = %s.host, error = %e, retry_in_s = wait.as_secs(), "SMPP link down");
            }
        }
        // Submits arriving while the link is down fail at once.
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(submit)) = tokio::time::timeout_at(until, rx.recv()).await {
            let _ = submit.done.send(Err(SmppError::Down));
        }
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// The next sequence number: 1 to 0x7FFFFFFF (SMPP 3.4 §3.2), wrapping.
fn next_sequence(s: u32) -> u32 {
    if s >= 0x7FFF_FFFF { 1 } else { s + 1 }
}

/// One bound session, until it fails (or the node stops: `Ok`). A successful bind resets
/// the reconnect wait.
async fn session(
    s: &SmppSettings,
    metrics: &Metrics,
    rx: &mut mpsc::Receiver<Submit>,
    wait: &mut Duration,
) -> std::io::Result<()> {
    let stream = tokio::time::timeout(RESPONSE_TIMEOUT, TcpStream::connect((s.host.as_str(), s.port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let mut sequence: u32 = 1;
    w.write_all(&encode(BIND_TRANSCEIVER, 0, sequence, &bind_body(s))).await?;
    let resp = tokio::time::timeout(RESPONSE_TIMEOUT, read_pdu(&mut r))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no bind response"))??;
    if resp.command_id != BIND_TRANSCEIVER_RESP || resp.status != 0 {
        return Err(std::io::Error::other(format!("bind refused (status {:#010x})", resp.status)));
    }
    tracing::info!(host = %s.host, "SMPP transceiver bound");
    *wait = Duration::from_secs(1);
    let (pdus_tx, mut pdus) = mpsc::channel::<std::io::Result<Pdu>>(64);
    let reader = actix_rt::spawn(async move {
        loop {
            let pdu = read_pdu(&mut r).await;
            let failed = pdu.is_err();
            if pdus_tx.send(pdu).await.is_err() || failed {
                return;
            }
        }
    });
    // Submits waiting for their response, and when they were sent: one the SMSC never
    // answers is failed after RESPONSE_TIMEOUT (swept at each enquire_link tick).
    let mut pending: HashMap<u32, (tokio::time::Instant, oneshot::Sender<Result<String, SmppError>>)> = HashMap::new();
    let mut enquire = tokio::time::interval(s.enquire_link);
    enquire.tick().await;
    let mut awaiting_link: Option<tokio::time::Instant> = None;
    let gap = Duration::from_secs(1) / s.max_per_second.max(1);
    let mut next_submit = tokio::time::Instant::now();
    let result = loop {
        tokio::select! {
            submit = rx.recv(), if tokio::time::Instant::now() >= next_submit => {
                let Some(submit) = submit else { break Ok(()) };
                // Its sender gave up (timed out): sending it now would only send it twice.
                if submit.done.is_closed() {
                    continue;
                }
                sequence = next_sequence(sequence);
                let pdu = encode(SUBMIT_SM, 0, sequence, &submit_body(&s.source_addr, &submit.message));
                if let Err(e) = w.write_all(&pdu).await {
                    let _ = submit.done.send(Err(SmppError::Down));
                    break Err(e);
                }
                pending.insert(sequence, (tokio::time::Instant::now(), submit.done));
                next_submit = tokio::time::Instant::now() + gap;
            }
            _ = tokio::time::sleep_until(next_submit), if tokio::time::Instant::now() < next_submit => {}
            _ = enquire.tick() => {
                let stale: Vec<u32> =
                    pending.iter().filter(|(_, (at, _))| at.elapsed() > RESPONSE_TIMEOUT).map(|(s, _)| *s).collect();
                for s in stale {
                    if let Some((_, done)) = pending.remove(&s) {
                        let _ = done.send(Err(SmppError::Timeout));
                    }
                }
                if awaiting_link.is_some_and(|since| since.elapsed() > RESPONSE_TIMEOUT) {
                    break Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no enquire_link_resp"));
                }
                sequence = next_sequence(sequence);
                if let Err(e) = w.write_all(&encode(ENQUIRE_LINK, 0, sequence, &[])).await {
                    break Err(e);
                }
                awaiting_link.get_or_insert_with(tokio::time::Instant::now);
            }
            pdu = pdus.recv() => {
                let pdu = match pdu {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => break Err(e),
                    None => break Err(std::io::Error::other("reader ended")),
                };
                match pdu.command_id {
                    SUBMIT_SM_RESP => {
                        if let Some((_, done)) = pending.remove(&pdu.sequence) {
                            let id = String::from_utf8_lossy(pdu.body.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
                            let _ = done.send(if pdu.status == 0 { Ok(id) } else { Err(SmppError::Refused(pdu.status)) });
                        }
                    }
                    DELIVER_SM => {
                        // A delivery receipt (esm_class bits 2–5 = 0001); a phone's own message
                        // to the source address is acknowledged and otherwise ignored.
                        if deliver_sm_esm_class(&pdu.body).is_some_and(|c| c & 0x3C == 0x04) {
                            let stat = deliver_sm_text(&pdu.body).and_then(|t| receipt_stat(&t).map(str::to_string));
                            metrics.sms_receipt(stat.as_deref().unwrap_or("UNKNOWN"));
                        }
                        if let Err(e) = w.write_all(&encode(DELIVER_SM_RESP, 0, pdu.sequence, &[0])).await {
                            break Err(e);
                        }
                    }
                    ENQUIRE_LINK => {
                        if let Err(e) = w.write_all(&encode(ENQUIRE_LINK_RESP, 0, pdu.sequence, &[])).await {
                            break Err(e);
                        }
                    }
                    ENQUIRE_LINK_RESP => awaiting_link = None,
                    UNBIND => {
                        let _ = w.write_all(&encode(UNBIND_RESP, 0, pdu.sequence, &[])).await;
                        break Err(std::io::Error::other("the SMSC unbound"));
                    }
                    GENERIC_NACK => {
                        if let Some((_, done)) = pending.remove(&pdu.sequence) {
                            let _ = done.send(Err(SmppError::Refused(pdu.status)));
                        }
                    }
                    other => {
                        // A request this client does not handle: SMPP's answer is generic_nack
                        // with ESME_RINVCMDID (0x03).
                        if other & 0x8000_0000 == 0 {
                            let _ = w.write_all(&encode(GENERIC_NACK, 0x03, pdu.sequence, &[])).await;
                        }
                    }
                }
            }
        }
    };
    reader.abort();
    for (_, (_, done)) in pending.drain() {
        let _ = done.send(Err(SmppError::Down));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_use_the_gsm_alphabet_or_ucs2() {
        let m = ShortMessage::text("+15550301", "New mail: Plan @ 10");
        assert_eq!((m.destination.as_str(), m.data_coding), ("15550301", 0));
        assert_eq!(m.payload[m.payload.len() - 4], 0x00, "@ is 0x00 in GSM 03.38");
        assert_eq!(ShortMessage::text("1", &"x".repeat(200)).payload.len(), 160);
        let u = ShortMessage::text("1", "Привет");
        assert_eq!((u.data_coding, u.payload.len()), (0x08, 12));
        let emoji = ShortMessage::text("1", &format!("{}😀", "a".repeat(69)));
        assert_eq!(emoji.payload.len(), 138, "the pair is not split: 69 units kept");
    }

    #[test]
    fn pdus_have_the_header_and_fields_of_smpp_3_4() {
        let s = SmppSettings {
            host: "h".into(),
            port: 2775,
            system_id: "noc".into(),
            password: "pw".into(),
            system_type: "".into(),
            source_addr: "NOC".into(),
            max_per_second: 10,
            enquire_link: Duration::from_secs(30),
        };
        let pdu = encode(BIND_TRANSCEIVER, 0, 7, &bind_body(&s));
        assert_eq!(&pdu[..16], &[0, 0, 0, 28, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(&pdu[16..], b"noc\0pw\0\0\x34\0\0\0");
        let body = submit_body("NOC", &ShortMessage::text("+4915100000001", "Hi"));
        assert_eq!(body, b"\0\x05\0NOC\0\x01\x01\x34\x39\x31\x35\x31\x30\x30\x30\x30\x30\x30\x30\x31\0\0\0\0\0\0\x01\0\0\0\x02\x48\x69");
        assert_eq!(
            receipt_stat(
                "id:7 sub:001 dlvrd:001 submit date:2612041000 done date:2612041000 stat:DELIVRD err:000 text:x"
            ),
            Some("DELIVRD")
        );
    }
}
