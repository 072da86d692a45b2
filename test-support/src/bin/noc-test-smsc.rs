//! The test SMSC of `noc_test_support::smsc` as a program, for the demo and for trying
//! SMS alerts by hand: it takes the relay's transceiver bind and prints every `submit_sm`
//! it accepts as one JSON line (text messages as text, WAP Push as hex), and every
//! departure from SMPP 3.4 it noticed.
//!
//! Usage: `noc-test-smsc PORT [SYSTEM_ID [PASSWORD]]` (defaults `noc`, `secret`).

use std::net::SocketAddr;
use std::time::Duration;

use noc_test_support::TestSmsc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: noc-test-smsc PORT [SYSTEM_ID [PASSWORD]]";
    let port: u16 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse().map_err(|_| anyhow::anyhow!(usage))?;
    let system_id = args.next().unwrap_or_else(|| "noc".into());
    let password = args.next().unwrap_or_else(|| "secret".into());
    let smsc = TestSmsc::start_on(SocketAddr::from(([127, 0, 0, 1], port)), &system_id, &password).await?;
    println!("{}", serde_json::json!({ "listening": format!("127.0.0.1:{}", smsc.port), "system_id": system_id }));
    let (mut printed, mut complained) = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let submits = smsc.submits();
        for s in &submits[printed..] {
            // WAP Push travels as 8-bit data with a user data header (esm_class 0x40).
            let text = s.text();
            let line = serde_json::json!({
                "submit_sm": {
                    "source_addr": s.source_addr,
                    "destination_addr": s.destination,
                    "esm_class": s.esm_class,
                    "data_coding": s.data_coding,
                    "registered_delivery": s.registered_delivery,
                    "text": text,
                    "hex": text.is_none().then(|| hex::encode(&s.short_message)),
                }
            });
            println!("{line}");
        }
        printed = submits.len();
        let violations = smsc.violations();
        for v in &violations[complained..] {
            println!("{}", serde_json::json!({ "violation": v }));
        }
        complained = violations.len();
    }
}
