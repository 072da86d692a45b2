//! A node on PostgreSQL, and what happens when PostgreSQL goes away.

use std::time::Duration;

use bytes::Bytes;
use noc_protocol::device::{ForwardKind, Frame};
use noc_protocol::rts::{Command, FrameStatus};
use noc_test_support::scenario::{USER_PASSWORD, user_with_device};
use noc_test_support::{Forwarder, Recv, TestRelay, TestSchema};
use serde_json::json;

const T: Duration = Duration::from_secs(5);

// Multi-threaded: the proxy must keep running while `TestRelay::start_with` blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_survive_a_postgres_outage_and_logins_recover() {
    let schema = TestSchema::create().await;
    let proxy = Forwarder::start("127.0.0.1:5432".parse().expect("addr")).await.expect("proxy");
    let url = schema.url(Some(proxy.addr));
    let relay = TestRelay::start_with(|c| {
        c.postgres_url = Some(noc_app::config::SecretString::new(url.clone()));
        c.postgres.wait_timeout_seconds = 1;
        c.postgres.connect_timeout_seconds = 1;
    });
    // The embedded store was not created: the node runs on PostgreSQL.
    assert!(!relay.config.store_path().exists());

    relay.create_license("pg", "pg-license-pw", 5).await;
    let mut ves = relay.ves();
    ves.license("pg", "pg-license-pw").await.expect("license");
    let mut channel = ves.open().await.expect("channel");
    let act = user_with_device(&ves, "pg@example.com", "+15550200").await;
    let mut device = relay.device_connection().await;
    assert!(matches!(device.login(act.device_id, &act.device_credential).await, Recv::Frame(Frame::AuthOk { .. })));
    channel.wait_for(T, |c| matches!(c, Command::DevicePresence { online: true, .. })).await.expect("online");

    // PostgreSQL goes away.
    proxy.cut();

    // Live sessions keep relaying both ways: the frame path never touches the store.
    let resp = ves.send_frame(act.device_id, 1, b"during outage").await;
    assert_eq!(resp.results[0].status, FrameStatus::Accepted);
    assert!(matches!(device.recv_data(T).await, Recv::Frame(Frame::Forward { frame_id: 1, .. })));
    device
        .send(Frame::Forward { kind: ForwardKind::Data, frame_id: 2, payload: Bytes::from_static(b"up") })
        .await
        .expect("send");
    channel.wait_for(T, |c| matches!(c, Command::DeviceFrame { frame_id: 2, .. })).await.expect("relayed up");

    // New logins fail fast with 503. Readiness reports the store but stays true: every
    // node shares it, and a load balancer that took them all out would turn these quick
    // answers into refused connections.
    let started = std::time::Instant::now();
    let err = ves.license("pg", "pg-license-pw").await.expect_err("store down");
    assert_eq!((err.status, err.code.as_str()), (503, "unavailable"));
    assert!(started.elapsed() < Duration::from_secs(4), "failed fast: {:?}", started.elapsed());
    let err = ves
        .post_json::<serde_json::Value>(
            "/device/v1/activate",
            &json!({"Msisdn": "+15550200", "Password": USER_PASSWORD}),
        )
        .await
        .expect_err("store down");
    assert_eq!(err.status, 503);
    let mut other = relay.device_connection().await;
    match other.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code, reconnect_after_ms, .. }) => {
            assert_eq!(code, noc_protocol::CloseCode::ServiceUnavailable);
            assert!(reconnect_after_ms >= 5_000, "told to come back later");
        }
        other => panic!("expected CLOSE service_unavailable, got {other:?}"),
    }
    let (status, body) = relay.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Store\":false"), "{body}");

    // PostgreSQL comes back: everything recovers by itself.
    proxy.restore();
    let mut recovered = false;
    for _ in 0..20 {
        if ves.license("pg", "pg-license-pw").await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "logins work again after PostgreSQL returns");
    assert_eq!(relay.admin_get("/readyz").await.0, 200);
    drop(relay);
    schema.drop_schema().await;
}

/// A pool whose connections are all taken is *busy*, not down: logins are refused with a
/// short reconnect hint (and HTTP `Retry-After: 1`), told apart from an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_busy_not_down() {
    let schema = TestSchema::create().await;
    let url = schema.url(None);
    let relay = TestRelay::start_with(|c| {
        c.postgres_url = Some(noc_app::config::SecretString::new(url.clone()));
        c.postgres.max_connections = 1;
        c.postgres.wait_timeout_seconds = 1;
    });
    relay.create_license("pg", "pg-license-pw", 5).await;
    let mut ves = relay.ves();
    ves.license("pg", "pg-license-pw").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    let act = user_with_device(&ves, "busy@example.com", "+15550201").await;

    // Another client locks the license row; a license login then waits on that lock (its
    // token insert checks the foreign key) while holding the pool's only connection.
    let (locker, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    locker.batch_execute("BEGIN; SELECT id FROM licenses WHERE name = 'pg' FOR UPDATE").await.expect("lock");
    let mut blocked = relay.ves();
    let held = tokio::spawn(async move { blocked.license("pg", "pg-license-pw").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut device = relay.device_connection().await;
    match device.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code, reconnect_after_ms, message }) => {
            assert_eq!(code, noc_protocol::CloseCode::ServiceUnavailable);
            assert!((1_000..5_000).contains(&reconnect_after_ms), "a short hint when busy: {reconnect_after_ms}");
            assert!(message.contains("busy"), "{message}");
        }
        other => panic!("expected CLOSE service_unavailable, got {other:?}"),
    }
    let (status, body) =
        ves.post_raw("/rts/v1/license", &[], br#"{"Name":"pg","Password":"pg-license-pw"}"#.to_vec()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("busy"), "{body}");
    assert_eq!(relay.metric("noc_auth_failures_total", &[("kind", "device"), ("reason", "busy")]), 1.0);
    let (status, body) = relay.admin_get("/readyz").await;
    assert_eq!(status, 200, "a busy pool is no reason to leave the load balancer: {body}");

    // The lock goes away: the waiting login completes, and logins work again.
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    held.await.expect("task").expect("the held login completes once the lock is gone");
    let mut device = relay.device_connection().await;
    assert!(matches!(device.login(act.device_id, &act.device_credential).await, Recv::Frame(Frame::AuthOk { .. })));
    drop(relay);
    schema.drop_schema().await;
}
