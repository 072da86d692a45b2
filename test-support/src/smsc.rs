//! A test SMSC speaking SMPP 3.4 (SMPP v3.4 Issue 1.2 §4): it takes one transceiver bind
//! with the configured system id and password, answers `submit_sm` and `enquire_link`,
//! sends a delivery receipt (`deliver_sm`, `esm_class` 0x04) for every submit that asks for
//! one and expects its `deliver_sm_resp`. Every PDU is parsed field by field here, apart
//! from the relay's encoder, and what does not follow the specification is recorded as a
//! violation (the tests assert there are none).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One `submit_sm` as the SMSC read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub source_ton: u8,
    pub source_addr: String,
    pub dest_ton: u8,
    pub dest_npi: u8,
    pub destination: String,
    pub esm_class: u8,
    pub registered_delivery: u8,
    pub data_coding: u8,
    pub short_message: Vec<u8>,
}

impl Submitted {
    /// The text of a text message, read by its `data_coding` (the GSM 03.38 default
    /// alphabet unpacked one character per octet, or UCS-2); `None` for binary data (a
    /// WAP Push) or an octet the alphabet does not have.
    pub fn text(&self) -> Option<String> {
        // GSM 03.38 basic character set, by octet (0x1B, the escape, is not a character).
        const GSM: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                           ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
        if self.esm_class & 0x40 != 0 {
            return None; // a user data header: binary
        }
        match self.data_coding {
            0x00 => {
                self.short_message.iter().map(|&b| GSM.chars().nth(usize::from(b)).filter(|c| *c != '\u{1b}')).collect()
            }
            0x08 => {
                let units: Vec<u16> =
                    self.short_message.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
                String::from_utf16(&units).ok()
            }
            _ => None,
        }
    }
}

#[derive(Default)]
struct Seen {
    binds: Vec<(String, String)>,
    submits: Vec<Submitted>,
    enquire_links: u32,
    receipts_acknowledged: u32,
    violations: Vec<String>,
}

pub struct TestSmsc {
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

fn c_string(body: &[u8], at: &mut usize, max: usize, what: &str, seen: &Mutex<Seen>) -> String {
    let rest = body.get(*at..).unwrap_or(&[]);
    match rest.iter().position(|b| *b == 0) {
        Some(end) if end < max => {
            *at += end + 1;
            String::from_utf8_lossy(&rest[..end]).into_owned()
        }
        _ => {
            lock(seen).violations.push(format!("{what}: not a C-octet string of at most {max} octets"));
            *at = body.len();
            String::new()
        }
    }
}

fn octet(body: &[u8], at: &mut usize, what: &str, seen: &Mutex<Seen>) -> u8 {
    match body.get(*at) {
        Some(v) => {
            *at += 1;
            *v
        }
        None => {
            lock(seen).violations.push(format!("{what}: missing"));
            0
        }
    }
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pdu(command_id: u32, status: u32, sequence: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [16 + body.len() as u32, command_id, status, sequence] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

impl TestSmsc {
    /// Listens on a free loopback port for binds with `system_id` and `password`.
    pub async fn start(system_id: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), system_id, password).await
    }

    /// Listens on `addr` (the demo's SMSC, `noc-test-smsc`, on a port it chose).
    pub async fn start_on(addr: std::net::SocketAddr, system_id: &str, password: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (sid, pw, kept) = (system_id.to_string(), password.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            let next_id = Arc::new(AtomicU32::new(1));
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (sid, pw, seen, next_id) = (sid.clone(), pw.clone(), kept.clone(), next_id.clone());
                tokio::spawn(async move {
                    let mut bound = false;
                    let mut out_seq: u32 = 0x1000;
                    loop {
                        let mut head = [0u8; 16];
                        if tcp.read_exact(&mut head).await.is_err() {
                            return;
                        }
                        let w = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
                        let (len, id, status, seq) = (w(0), w(4), w(8), w(12));
                        if !(16..=65536).contains(&len) {
                            lock(&seen).violations.push(format!("command_length {len}"));
                            return;
                        }
                        let mut body = vec![0u8; len as usize - 16];
                        if tcp.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if id & 0x8000_0000 == 0 && status != 0 {
                            lock(&seen).violations.push(format!("request {id:#010x} with command_status {status}"));
                        }
                        let mut at = 0;
                        let reply = match id {
                            0x0000_0009 => {
                                let system_id = c_string(&body, &mut at, 16, "system_id", &seen);
                                let password = c_string(&body, &mut at, 9, "password", &seen);
                                let _system_type = c_string(&body, &mut at, 13, "system_type", &seen);
                                let version = octet(&body, &mut at, "interface_version", &seen);
                                let _ton = octet(&body, &mut at, "addr_ton", &seen);
                                let _npi = octet(&body, &mut at, "addr_npi", &seen);
                                let _range = c_string(&body, &mut at, 41, "address_range", &seen);
                                if version != 0x34 {
                                    lock(&seen).violations.push(format!("interface_version {version:#04x}"));
                                }
                                let ok = system_id == sid && password == pw;
                                lock(&seen).binds.push((system_id, password));
                                bound = ok;
                                // ESME_RBINDFAIL (0x0D) for a wrong system id or password.
                                pdu(0x8000_0009, if ok { 0 } else { 0x0D }, seq, b"TESTSMSC\0")
                            }
                            0x0000_0004 if bound => {
                                let _service_type = c_string(&body, &mut at, 6, "service_type", &seen);
                                let source_ton = octet(&body, &mut at, "source_addr_ton", &seen);
                                let _source_npi = octet(&body, &mut at, "source_addr_npi", &seen);
                                let source_addr = c_string(&body, &mut at, 21, "source_addr", &seen);
                                let dest_ton = octet(&body, &mut at, "dest_addr_ton", &seen);
                                let dest_npi = octet(&body, &mut at, "dest_addr_npi", &seen);
                                let destination = c_string(&body, &mut at, 21, "destination_addr", &seen);
                                let esm_class = octet(&body, &mut at, "esm_class", &seen);
                                let _pid = octet(&body, &mut at, "protocol_id", &seen);
                                let _priority = octet(&body, &mut at, "priority_flag", &seen);
                                let _schedule = c_string(&body, &mut at, 17, "schedule_delivery_time", &seen);
                                let _validity = c_string(&body, &mut at, 17, "validity_period", &seen);
                                let registered_delivery = octet(&body, &mut at, "registered_delivery", &seen);
                                let _replace = octet(&body, &mut at, "replace_if_present_flag", &seen);
                                let data_coding = octet(&body, &mut at, "data_coding", &seen);
                                let _default = octet(&body, &mut at, "sm_default_msg_id", &seen);
                                let sm_length = usize::from(octet(&body, &mut at, "sm_length", &seen));
                                let short_message =
                                    body.get(at..at + sm_length).map(<[u8]>::to_vec).unwrap_or_default();
                                if short_message.len() != sm_length || at + sm_length != body.len() {
                                    lock(&seen).violations.push("sm_length does not match the body".into());
                                }
                                if short_message.len() > 140 && data_coding != 0x00 {
                                    lock(&seen).violations.push("more than 140 octets".into());
                                }
                                if !destination.chars().all(|c| c.is_ascii_digit()) || dest_ton != 1 {
                                    lock(&seen).violations.push(format!("destination {destination:?} TON {dest_ton}"));
                                }
                                lock(&seen).submits.push(Submitted {
                                    source_ton,
                                    source_addr: source_addr.clone(),
                                    dest_ton,
                                    dest_npi,
                                    destination: destination.clone(),
                                    esm_class,
                                    registered_delivery,
                                    data_coding,
                                    short_message,
                                });
                                let message_id = next_id.fetch_add(1, Ordering::Relaxed).to_string();
                                let mut resp = pdu(0x8000_0004, 0, seq, format!("{message_id}\0").as_bytes());
                                if registered_delivery & 0x03 != 0 {
                                    out_seq += 1;
                                    let text = format!(
                                        "id:{message_id} sub:001 dlvrd:001 submit date:2612041000 done date:2612041000 stat:DELIVRD err:000 text:"
                                    );
                                    let mut b = Vec::new();
                                    b.push(0); // service_type
                                    b.extend_from_slice(&[1, 1]);
                                    b.extend_from_slice(destination.as_bytes());
                                    b.push(0);
                                    b.extend_from_slice(&[source_ton, 0]);
                                    b.extend_from_slice(source_addr.as_bytes());
                                    b.push(0);
                                    b.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 0, 0, 0]);
                                    b.push(text.len() as u8);
                                    b.extend_from_slice(text.as_bytes());
                                    resp.extend(pdu(0x0000_0005, 0, out_seq, &b));
                                }
                                resp
                            }
                            // ESME_RINVBNDSTS: not bound.
                            0x0000_0004 => pdu(0x8000_0004, 0x04, seq, b"\0"),
                            0x0000_0015 => {
                                lock(&seen).enquire_links += 1;
                                pdu(0x8000_0015, 0, seq, &[])
                            }
                            0x8000_0005 => {
                                lock(&seen).receipts_acknowledged += 1;
                                continue;
                            }
                            0x0000_0006 => {
                                let _ = tcp.write_all(&pdu(0x8000_0006, 0, seq, &[])).await;
                                return;
                            }
                            other => {
                                lock(&seen).violations.push(format!("unexpected command {other:#010x}"));
                                pdu(0x8000_0000, 0x03, seq, &[])
                            }
                        };
                        if tcp.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(TestSmsc { port, seen, task })
    }

    pub fn submits(&self) -> Vec<Submitted> {
        lock(&self.seen).submits.clone()
    }

    pub fn binds(&self) -> Vec<(String, String)> {
        lock(&self.seen).binds.clone()
    }

    pub fn receipts_acknowledged(&self) -> u32 {
        lock(&self.seen).receipts_acknowledged
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.seen).violations.clone()
    }

    /// Waits until `n` messages were submitted.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Submitted> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.submits();
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestSmsc {
    fn drop(&mut self) {
        self.task.abort();
    }
}
