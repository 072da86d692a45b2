//! New-mail alerts end to end: the user sets destinations on the portal's alerts page and a
//! rule on the settings page; the real agent matches a new mail in the Maildir and posts an
//! `Alert`; the relay mails it (through its own SMTP server) and posts it to an HTTPS
//! webhook, signed, retrying after the webhook's first failure. A mail matching no rule
//! alerts nobody.

mod common;

use common::*;
use hmac::{KeyInit, Mac};
use noc_test_support::{SmtpSink, WebClient, WebhookSink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_mail_alerts_by_mail_and_webhook_and_another_mail_does_not() {
    let relay_smtp = SmtpSink::start().expect("SMTP sink for the relay (python3 -m pip install aiosmtpd)");
    let webhook = WebhookSink::start(1).await.expect("webhook receiver");
    let (smtp_port, ca) = (relay_smtp.port, webhook.cert_path.clone());
    let world = World::start(
        move |c| {
            c.mail.smtp_host = Some("127.0.0.1".into());
            c.mail.smtp_port = smtp_port;
            c.mail.smtp_security = noc_app::config::SmtpSecurity::None;
            c.alerts.webhook_ca_file = Some(ca);
            // The test webhook listens on loopback, which the relay refuses by default.
            c.alerts.webhook_allow_private = true;
            c.alerts.retry_initial_seconds = 0;
        },
        Options::default(),
    )
    .await;
    world.activated_user("lin@corp.example", "+15550301").await;

    let relay = world.relay();
    let mut web = WebClient::new(relay.node.http_addr, &relay.cert_path());
    assert_eq!(web.sign_in("lin@corp.example", USER_PW, false).await.status, 303);
    let page = web.get("/settings/alerts").await;
    let csrf = page.hidden("csrf").expect("csrf");
    let refused = web.post("/settings/alerts", &[("csrf", &csrf), ("webhook_url", "http://plain.example/")]).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let hook = webhook.url("/hook");
    let saved = web
        .post(
            "/settings/alerts",
            &[("csrf", &csrf), ("email", "Alerts@Lin.example"), ("webhook_url", &hook), ("excerpt", "1")],
        )
        .await;
    // A new address is confirmed first: a link is mailed to it.
    assert_eq!(saved.header("location"), Some("/settings/alerts?confirm=1"), "{}", saved.body);
    let page = web.get("/settings/alerts?confirm=1").await;
    assert!(page.body.contains("We sent a confirmation link to alerts@lin.example"), "{}", page.body);
    assert!(page.body.contains("Waiting for confirmation: alerts@lin.example"), "{}", page.body);
    let confirmation = relay_smtp
        .wait_for(T, |m| m.rcpt_tos.iter().any(|r| r == "alerts@lin.example"))
        .await
        .expect("the confirmation mail");
    let at = confirmation.data.find("/alerts/confirm/").expect("the link");
    let path: String = confirmation.data[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    // Opened anywhere, without signing in: the link shows a button; opening it (as a mail
    // scanner would) confirms nothing, pressing it does.
    let mut elsewhere = WebClient::new(relay.node.http_addr, &relay.cert_path());
    let button = elsewhere.get(&path).await;
    assert_eq!(button.status, 200, "{}", button.body);
    assert!(web.get("/settings/alerts").await.body.contains("Waiting for confirmation"));
    let csrf_anon = button.hidden("csrf").expect("csrf");
    let done = elsewhere.post(&path, &[("csrf", &csrf_anon)]).await;
    assert!(done.status == 200 && done.body.contains("New-mail alerts now go to alerts@lin.example"), "{}", done.body);
    let again = elsewhere.post(&path, &[("csrf", &csrf_anon)]).await;
    assert_eq!(again.status, 400, "a link works once: {}", again.body);
    let page = web.get("/settings/alerts").await;
    assert!(!page.body.contains("Waiting for confirmation"), "{}", page.body);
    let start = page.body.find("<code>").expect("the webhook key is shown") + "<code>".len();
    let secret = page.body[start..start + 64].to_string();
    let settings = [
        ("csrf", csrf.clone()),
        ("first_name", "Lin".to_string()),
        ("last_name", "Ng".to_string()),
        ("time_zone", "UTC".to_string()),
        ("constant_sync", "1".to_string()),
        ("alerts", "1".to_string()),
        ("rule_field", "subject".to_string()),
        ("rule_text", "urgent".to_string()),
    ];
    let refs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(web.post("/settings", &refs).await.status, 303);
    world
        .wait_status("the agent to learn the rule", |s| {
            s.users.iter().any(|u| u.email == "lin@corp.example" && !u.filter_rules.is_empty())
        })
        .await;

    world.drop_mail("lin@corp.example", "1700000400.M1P1.corp", "lunch?", "no rule matches this one");
    world.drop_mail("lin@corp.example", "1700000401.M1P1.corp", "URGENT: call me", "Please call me back today.");

    // The webhook: refused once (500), then delivered again; both signed alike.
    let got = webhook.wait_for(2, T).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for r in &got {
        assert_eq!(r.path, "/hook");
        let ts = r.header("x-noc-timestamp").expect("timestamp");
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&r.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(r.header("x-noc-signature"), Some(expected.as_str()), "signature checks with the shown key");
    }
    let body: serde_json::Value = serde_json::from_slice(&got[1].body).expect("JSON");
    assert_eq!(body["Subject"], "URGENT: call me");
    assert_eq!(body["Email"], "lin@corp.example");
    assert!(body["From"].as_str().is_some_and(|f| f.contains("alice@partner.example")), "{body}");
    assert_eq!(body["Excerpt"], "Please call me back today.");

    // The mail, to the address the user gave (lower-cased).
    let mail = relay_smtp
        .wait_for(T, |m| m.rcpt_tos.iter().any(|r| r == "alerts@lin.example") && m.data.contains("URGENT"))
        .await
        .expect("the alert mail");
    assert!(mail.data.contains("URGENT: call me") && mail.data.contains("Please call me back"), "{}", mail.data);

    // One alert in all: the other mail matched no rule. (Its file was renamed into new/
    // first, and the agent handles file events in order, so it was looked at before.)
    world.wait_status("both mails seen", |s| s.stats.alerts_sent >= 1).await;
    let stats = world.stats_now().await;
    assert_eq!((stats.alerts_matched, stats.alerts_sent), (1, 1));
    assert_eq!(
        relay_smtp
            .messages()
            .iter()
            .filter(|m| m.rcpt_tos.iter().any(|r| r == "alerts@lin.example") && m.data.contains("URGENT"))
            .count(),
        1
    );
    assert_eq!(webhook.requests().len(), 2);
    let metric =
        |channel: &str, outcome: &str| relay.metric("noc_alerts_total", &[("channel", channel), ("outcome", outcome)]);
    assert_eq!(
        (metric("webhook", "retried"), metric("webhook", "delivered"), metric("email", "delivered")),
        (1.0, 1.0, 1.0)
    );
    let failures = relay.metric("noc_alert_failures_total", &[("channel", "webhook"), ("reason", "http_status")]);
    assert_eq!(failures, 1.0, "the webhook's 500, by reason");
}

/// SMS and WAP Push over SMPP 3.4 to a test SMSC that checks every PDU: one text SMS and one
/// binary Service Indication (port 2948, WSP Push, WBXML SI) to the user's mobile number,
/// and the delivery receipts counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_mail_alerts_by_sms_and_wap_push_over_smpp() {
    let smsc = noc_test_support::TestSmsc::start("noc-relay", "smpp-pw").await.expect("test SMSC");
    let port = smsc.port;
    let world = World::start(
        move |c| {
            c.alerts.smpp_host = Some("127.0.0.1".into());
            c.alerts.smpp_port = port;
            c.alerts.smpp_system_id = "noc-relay".into();
            c.alerts.smpp_password = Some(noc_app::config::SecretString::new("smpp-pw"));
            c.alerts.smpp_source_addr = "CorpMail".into();
            c.alerts.smpp_enquire_link_seconds = 5;
        },
        Options::default(),
    )
    .await;
    world.activated_user("mo@corp.example", "+4915100000042").await;
    let relay = world.relay();
    let mut web = WebClient::new(relay.node.http_addr, &relay.cert_path());
    assert_eq!(web.sign_in("mo@corp.example", USER_PW, false).await.status, 303);
    let page = web.get("/settings/alerts").await;
    assert!(page.body.contains("name=\"sms\"") && page.body.contains("name=\"wap_push\""), "offered with an SMSC");
    let csrf = page.hidden("csrf").expect("csrf");
    let saved = web.post("/settings/alerts", &[("csrf", &csrf), ("sms", "1"), ("wap_push", "1")]).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let settings = [
        ("csrf", csrf.clone()),
        ("first_name", "Mo".to_string()),
        ("last_name", "Ali".to_string()),
        ("time_zone", "UTC".to_string()),
        ("alerts", "1".to_string()),
        ("rule_field", "from".to_string()),
        ("rule_text", "alice@".to_string()),
    ];
    let refs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(web.post("/settings", &refs).await.status, 303);
    world
        .wait_status("the agent to learn the rule", |s| {
            s.users.iter().any(|u| u.email == "mo@corp.example" && !u.filter_rules.is_empty())
        })
        .await;
    world.drop_mail("mo@corp.example", "1700000500.M1P1.corp", "Café at 10?", "see you");

    let got = smsc.wait_for(2, T).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(smsc.binds(), [("noc-relay".to_string(), "smpp-pw".to_string())]);
    let text = got.iter().find(|m| m.esm_class == 0).expect("the text SMS");
    assert_eq!(
        (text.destination.as_str(), text.source_addr.as_str(), text.source_ton),
        ("4915100000042", "CorpMail", 5)
    );
    assert_eq!((text.dest_ton, text.dest_npi, text.registered_delivery, text.data_coding), (1, 1, 1, 0));
    // GSM 03.38: "é" is 0x05; the rest of "Café at 10?" is ASCII where it shares codes.
    let shown: Vec<u8> = b"Caf\x05 at 10?".to_vec();
    assert!(text.short_message.windows(shown.len()).any(|w| w == shown), "{:?}", text.short_message);
    // The same, read back through the test SMSC's own GSM 03.38 table.
    let read = text.text().expect("a GSM text");
    assert!(read.contains("Café at 10?"), "{read}");
    let push = got.iter().find(|m| m.esm_class == 0x40).expect("the WAP Push");
    assert_eq!(push.text(), None, "binary");
    assert_eq!((push.data_coding, &push.short_message[..7]), (0x04, &[0x06, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0][..]));
    assert_eq!(&push.short_message[7..11], &[0x01, 0x06, 0x01, 0xAE], "WSP Push of application/vnd.wap.sic");
    let si = &push.short_message[11..];
    assert_eq!(&si[..6], &[0x02, 0x05, 0x6A, 0x00, 0x45, 0xC6], "WBXML 1.2, SI 1.0, UTF-8, <si><indication>");
    let href = format!("{}/wap/mail/INBOX", relay.base_url().trim_start_matches("https://"));
    assert!(si.windows(href.len()).any(|w| w == href.as_bytes()), "links to the WAP inbox: {si:?}");
    assert!(push.short_message.len() <= 140);

    // Both receipts came back and were acknowledged and counted; nothing broke the rules.
    let deadline = std::time::Instant::now() + T;
    while smsc.receipts_acknowledged() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(smsc.receipts_acknowledged(), 2);
    assert_eq!(relay.metric("noc_sms_receipts_total", &[("stat", "DELIVRD")]), 2.0);
    let metric = |channel: &str| relay.metric("noc_alerts_total", &[("channel", channel), ("outcome", "delivered")]);
    assert_eq!((metric("sms"), metric("wap_push")), (1.0, 1.0));
    assert!(smsc.violations().is_empty(), "{:?}", smsc.violations());
}
