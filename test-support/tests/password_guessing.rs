//! Password guessing from outside, on every password route: the throttle answers existing
//! and unknown names alike, slows an address down, and never locks out a user who proves
//! possession another way (a device token).

use std::time::Duration;

use noc_protocol::CloseCode;
use noc_protocol::device::Frame;
use noc_test_support::scenario::user_with_device;
use noc_test_support::{Recv, TestRelay};

/// Status, error code and `Retry-After` of a license login.
async fn license_login(relay: &TestRelay, name: &str, password: &str) -> (u16, String, Option<u64>) {
    let ves = relay.ves();
    let body = format!(r#"{{"Name":"{name}","Password":"{password}"}}"#);
    let resp =
        ves.http().post(format!("{}/rts/v1/license", ves.base())).body(body).send().await.expect("license request");
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    let text = resp.text().await.expect("body");
    (status, noc_protocol::rts::ErrorReply::parse(text.as_bytes()).code_text, retry)
}

#[tokio::test]
async fn existing_and_unknown_names_are_throttled_alike_and_nothing_is_locked() {
    let relay = TestRelay::start();
    relay.create_license("acme", "acme-license-pw", 5).await;
    let mut answers = Vec::new();
    for name in ["acme", "no-such-license"] {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(license_login(&relay, name, "wrong-password").await);
        }
        // The sixth attempt in a row waits, the right password too, without a check.
        seen.push(license_login(&relay, name, "acme-license-pw").await);
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1], "an existing and an unknown name are answered alike");
    assert!(answers[0][..5].iter().all(|(s, c, _)| (*s, c.as_str()) == (401, "invalid_credentials")));
    assert_eq!(answers[0][5], (429, "locked_out".to_string(), Some(1)));
    // After the hinted second the right password works: the name was slowed, not locked.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(license_login(&relay, "acme", "acme-license-pw").await.0, 200);
    assert!(relay.metric("noc_auth_failures_total", &[("kind", "license"), ("reason", "locked_out")]) >= 2.0);
}

#[tokio::test]
async fn an_address_that_fails_too_often_is_refused_for_a_while() {
    let relay = TestRelay::start_with(|c| {
        c.throttle.source_failure_burst = 8;
        c.throttle.source_failures_per_minute = 1;
    });
    for i in 0..8 {
        assert_eq!(license_login(&relay, &format!("name-{i}"), "x").await.0, 401);
    }
    let (status, code, retry) = license_login(&relay, "yet-another-name", "x").await;
    assert_eq!((status, code.as_str()), (429, "too_many_requests"));
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    assert!(relay.metric("noc_auth_failures_total", &[("kind", "license"), ("reason", "throttled")]) >= 1.0);
}

#[tokio::test]
async fn guessing_a_users_password_on_the_device_channel_does_not_lock_out_its_devices() {
    let relay = TestRelay::start();
    relay.create_license("acme", "acme-license-pw", 5).await;
    let mut ves = relay.ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    let act = user_with_device(&ves, "victim@example.com", "+15550199").await;
    // A stranger guesses the user's password with random device ids.
    for _ in 0..5 {
        let mut d = relay.device_connection().await;
        match d.login_password(noc_protocol::DeviceId::random(), "+15550199", "guess").await {
            Recv::Frame(Frame::Close { code, .. }) => assert_eq!(code, CloseCode::AuthFailed),
            other => panic!("expected CLOSE auth_failed, got {other:?}"),
        }
    }
    let mut d = relay.device_connection().await;
    match d.login_password(noc_protocol::DeviceId::random(), "+15550199", "guess").await {
        Recv::Frame(Frame::Close { code, reconnect_after_ms, .. }) => {
            assert_eq!(code, CloseCode::LockedOut);
            assert!(reconnect_after_ms >= 1000, "{reconnect_after_ms}");
        }
        other => panic!("expected CLOSE locked_out, got {other:?}"),
    }
    // The user's device, holding its token, is not affected.
    let mut device = relay.device_connection().await;
    assert!(matches!(device.login(act.device_id, &act.device_credential).await, Recv::Frame(Frame::AuthOk { .. })));
}
