//! Several nodes sharing PostgreSQL and Redis: cross-node delivery, takeover, a node
//! losing Redis, and racing claims. The machine's real Redis and PostgreSQL are used; a
//! `Forwarder` takes Redis away from one node without disturbing the others.

use std::time::Duration;

use bytes::Bytes;
use noc_protocol::device::{ForwardKind, Frame};
use noc_protocol::rts::{Command, FrameStatus};
use noc_protocol::{CloseCode, UndeliverableReason};
use noc_test_support::scenario::{
    STEP, await_online, devices_online, expect_close, online_device, relays_both_ways, user_with_device,
};
use noc_test_support::{CommandChannel, FakeDevice, FakeVes, Forwarder, Recv, TestCluster, test_redis_url, with_links};

/// Sends frames `ids` to `device_id` until one is accepted and arrives at `device`.
async fn eventually_delivered(
    ves: &FakeVes,
    device: &mut FakeDevice,
    device_id: noc_protocol::DeviceId,
    ids: std::ops::Range<u64>,
    wait: Duration,
) -> bool {
    for i in ids {
        let resp = ves.send_frame(device_id, i, b"eventually").await;
        if resp.results[0].status == FrameStatus::Accepted
            && matches!(device.recv_data(wait).await, Recv::Frame(Frame::Forward { .. }))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Polls `/readyz` until it answers `status` (at most 10 s).
async fn readiness_becomes(node: &noc_test_support::TestRelay, status: u16) -> bool {
    for _ in 0..100 {
        if node.admin_get("/readyz").await.0 == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The test Redis as a socket address, for a proxy in front of it.
fn redis_addr() -> std::net::SocketAddr {
    test_redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("NOC_TEST_REDIS_URL as redis://host:port/")
}

/// Two licensed nodes; the second reaches Redis through a proxy the test can cut.
async fn two_nodes_second_behind_a_redis_proxy() -> (TestCluster, Forwarder) {
    let proxy = Forwarder::start(redis_addr()).await.expect("proxy");
    let proxied = format!("redis://{}/", proxy.addr);
    let cluster = TestCluster::start(2, |i, c| {
        if i == 1 {
            c.redis_url = Some(noc_app::config::SecretString::new(proxied.clone()));
        }
    })
    .await;
    cluster.nodes[0].create_license("acme", "acme-license-pw", 10).await;
    (cluster, proxy)
}

/// Two nodes, a license, and a VES whose command channel is open on the first node.
async fn two_nodes_with_ves_on_the_first() -> (TestCluster, FakeVes, CommandChannel) {
    two_nodes_with_ves_on_the_first_and(|_| {}).await
}

/// The same, each node's configuration adjusted by `tweak`.
async fn two_nodes_with_ves_on_the_first_and(
    tweak: impl Fn(&mut noc_app::Config),
) -> (TestCluster, FakeVes, CommandChannel) {
    let cluster = TestCluster::start(2, |_, c| tweak(c)).await;
    cluster.nodes[0].create_license("acme", "acme-license-pw", 10).await;
    let mut ves = cluster.nodes[0].ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let channel = ves.open().await.expect("VES on node A");
    (cluster, ves, channel)
}

/// The nodes must keep running while `TestRelay::start_with` blocks, and the proxies too.
macro_rules! cluster_test {
    ($name:ident, $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() $body
    };
}

/// A burst each way between a VES on node A and its device on node B, in order, with the
/// acknowledgements back; each node publishes and receives.
async fn frames_cross_both_ways(cluster: &TestCluster, ves: &FakeVes, channel: &mut CommandChannel) {
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let act = user_with_device(ves, "x@example.com", "+15550300").await;
    let mut device = online_device(b, &act).await; // the device lands on node B
    await_online(channel, act.device_id).await;

    // VES (A) → device (B), a burst that must arrive in order.
    for i in 0..50u64 {
        let resp = ves.send_frame(act.device_id, i, format!("down {i}").as_bytes()).await;
        assert_eq!(resp.results[0].status, FrameStatus::Accepted, "frame {i}");
    }
    for i in 0..50u64 {
        match device.recv_data(STEP).await {
            Recv::Frame(Frame::Forward { frame_id, payload, .. }) => {
                assert_eq!(frame_id, i);
                assert_eq!(&payload[..], format!("down {i}").as_bytes());
            }
            other => panic!("frame {i}: {other:?}"),
        }
        device.send(Frame::Ack { frame_id: i }).await.expect("ack");
    }
    // Device (B) → VES (A), in order, with acks back.
    for i in 100..150u64 {
        let payload = Bytes::from(format!("up {i}"));
        device.send(Frame::Forward { kind: ForwardKind::Data, frame_id: i, payload }).await.expect("send");
    }
    let (mut next, mut acks) = (100u64, Vec::new());
    while next < 150 || acks.len() < 50 {
        match channel.next(STEP).await.expect("command") {
            Command::DeviceFrame { frame_id, .. } => {
                assert_eq!(frame_id, next, "order kept across nodes");
                next += 1;
            }
            Command::Ack { frame_id, .. } => acks.push(frame_id),
            _ => continue,
        }
    }
    assert_eq!(acks, (0..50).collect::<Vec<_>>(), "device acks crossed back to the VES's node, in order");
    assert!(a.metric("noc_bus_messages_sent_total", &[]) >= 50.0);
    assert!(b.metric("noc_bus_messages_received_total", &[]) >= 50.0);
    // Each node timed what it published (at least one batch each way).
    assert!(a.metric("noc_bus_publish_duration_seconds", &[]) >= 1.0);
    assert!(b.metric("noc_bus_publish_duration_seconds", &[]) >= 1.0);
}

cluster_test!(frames_cross_nodes_both_ways_in_order, {
    let (cluster, ves, mut channel) = two_nodes_with_ves_on_the_first().await;
    frames_cross_both_ways(&cluster, &ves, &mut channel).await;
    assert_eq!(cluster.nodes[1].metric("noc_bus_links_open", &[]), 0.0, "no links configured");
    cluster.stop().await;
});

// With links, the same traffic crosses on them: each node holds links from the other.
cluster_test!(frames_cross_nodes_both_ways_in_order_over_direct_links, {
    let (cluster, ves, mut channel) = two_nodes_with_ves_on_the_first_and(with_links).await;
    frames_cross_both_ways(&cluster, &ves, &mut channel).await;
    for node in &cluster.nodes {
        // The gauge is read when Prometheus scrapes.
        let (_, text) = node.admin_get("/metrics").await;
        let open: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("noc_bus_links_open "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the gauge is exported");
        assert!(open >= 1.0, "a link from the other node: {open}");
    }
    cluster.stop().await;
});

// Node B has no command channel of the VES, yet its devices there share one worker: with
// devices accepted in turn by B's two workers, some move, and every one relays both ways
// across the nodes.
cluster_test!(devices_of_a_ves_on_another_node_share_one_worker, {
    let (cluster, ves, mut channel) = two_nodes_with_ves_on_the_first().await;
    let b = &cluster.nodes[1];
    let mut devices = devices_online(&ves, &mut channel, b, ("remote", "+1555031"), 4).await;
    let moved = b.metric("noc_device_sessions_moved_total", &[]);
    assert!(moved >= 1.0, "four devices accepted in turn by two workers, one worker for the VES: some move ({moved})");
    for (i, (act, device)) in devices.iter_mut().enumerate() {
        relays_both_ways(&ves, &mut channel, act.device_id, device, 200 + i as u64).await;
    }
    assert_eq!(b.metric("noc_sessions", &[("kind", "device")]), 4.0);
    cluster.stop().await;
});

cluster_test!(a_device_moving_to_another_node_closes_its_old_session, {
    let (cluster, ves, mut channel) = two_nodes_with_ves_on_the_first().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let act = user_with_device(&ves, "mover@example.com", "+15550301").await;
    let mut first = online_device(a, &act).await;
    await_online(&mut channel, act.device_id).await;
    let mut second = online_device(b, &act).await;
    expect_close(&mut first, CloseCode::Replaced).await;
    assert_eq!(b.metric("noc_sessions_replaced_total", &[("kind", "device")]), 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.metric("noc_sessions", &[("kind", "device")]), 0.0);
    assert_eq!(b.metric("noc_sessions", &[("kind", "device")]), 1.0);
    // Frames follow the device to its new node.
    let delivered = eventually_delivered(&ves, &mut second, act.device_id, 0..20, Duration::from_secs(1)).await;
    assert!(delivered, "frames reach the device on its new node");
    cluster.stop().await;
});

cluster_test!(a_ves_moving_to_another_node_closes_its_old_session, {
    let (cluster, ves, mut old_channel) = two_nodes_with_ves_on_the_first().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let act = user_with_device(&ves, "stay@example.com", "+15550305").await;
    let mut device = online_device(a, &act).await;
    await_online(&mut old_channel, act.device_id).await;

    // The same VES (same GUID) opens a session on node B: the one on A is closed.
    let mut moved = b.ves();
    moved.guid = ves.guid.clone();
    let mut channel = moved.open().await.expect("VES on node B");
    old_channel
        .wait_for(STEP, |c| matches!(c, Command::Close { code: CloseCode::Replaced, .. }))
        .await
        .expect("the old session is told it was replaced");
    assert_eq!(b.metric("noc_sessions_replaced_total", &[("kind", "ves")]), 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.metric("noc_sessions", &[("kind", "ves")]), 0.0);
    assert_eq!(b.metric("noc_sessions", &[("kind", "ves")]), 1.0);

    // Frames from the device (still on A) reach the VES on B, and B's frames the device.
    let mut delivered = false;
    for i in 0..20u64 {
        device
            .send(Frame::Forward { kind: ForwardKind::Data, frame_id: i, payload: Bytes::from_static(b"up") })
            .await
            .expect("send");
        if channel.wait_for(Duration::from_millis(500), |c| matches!(c, Command::DeviceFrame { .. })).await.is_some() {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "device frames follow the VES to its new node");
    let down = eventually_delivered(&moved, &mut device, act.device_id, 100..120, Duration::from_secs(1)).await;
    assert!(down, "the VES on its new node reaches the device");
    cluster.stop().await;
});

cluster_test!(two_nodes_racing_for_one_device_end_with_exactly_one_owner, {
    let (cluster, ves, _channel) = two_nodes_with_ves_on_the_first().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let act = user_with_device(&ves, "race@example.com", "+15550302").await;
    for _round in 0..5 {
        let (da, db) = tokio::join!(online_device(a, &act), online_device(b, &act));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (on_a, on_b) =
            (a.metric("noc_sessions", &[("kind", "device")]), b.metric("noc_sessions", &[("kind", "device")]));
        assert_eq!(on_a + on_b, 1.0, "exactly one session survives the race");
        // ... and Redis names the node that holds it.
        let survivor = if on_a == 1.0 { &a.node.node_id } else { &b.node.node_id };
        let owner = std::process::Command::new("redis-cli")
            .args(["-u", &test_redis_url(), "GET", &format!("noc:own:d:{}", act.device_id)])
            .output()
            .expect("redis-cli must be installed (package redis-tools)");
        assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), survivor.as_str(), "the owner key");
        drop((da, db));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.stop().await;
});

cluster_test!(a_node_that_loses_redis_stays_local_and_recovers, {
    let (cluster, proxy) = two_nodes_second_behind_a_redis_proxy().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);

    // A VES and a device on B (local routes), and a device on A (cross-node from B).
    let mut ves = b.ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let mut channel = ves.open().await.expect("channel on B");
    let local = user_with_device(&ves, "local@example.com", "+15550303").await;
    let remote = user_with_device(&ves, "remote@example.com", "+15550304").await;
    let mut local_dev = online_device(b, &local).await;
    let mut remote_dev = online_device(a, &remote).await;
    await_online(&mut channel, local.device_id).await;
    await_online(&mut channel, remote.device_id).await;

    proxy.cut();
    // Readiness turns false.
    assert!(readiness_becomes(b, 503).await, "a node without Redis is not ready");
    // Local routes keep working.
    let resp = ves.send_frame(local.device_id, 1, b"still local").await;
    assert_eq!(resp.results[0].status, FrameStatus::Accepted);
    assert!(matches!(local_dev.recv_data(STEP).await, Recv::Frame(Frame::Forward { frame_id: 1, .. })));
    // A cross-node frame is answered, never silently lost.
    let resp = ves.send_frame(remote.device_id, 2, b"cannot cross").await;
    let answered = match resp.results[0].status {
        FrameStatus::Undeliverable => true,
        FrameStatus::Accepted => {
            channel.wait_for(STEP, |c| matches!(c, Command::Undeliverable { frame_id: 2, .. })).await.is_some()
        }
    };
    assert!(answered, "the VES learns the frame was not delivered");

    // Redis comes back: B resubscribes and cross-node delivery works again.
    proxy.restore();
    assert!(readiness_becomes(b, 200).await, "readiness recovers without a restart");
    let crossed =
        eventually_delivered(&ves, &mut remote_dev, remote.device_id, 10..40, Duration::from_millis(500)).await;
    assert!(crossed, "cross-node delivery recovers");
    cluster.stop().await;
});

cluster_test!(frames_for_a_vanished_node_come_back_undeliverable, {
    let (cluster, proxy) = two_nodes_second_behind_a_redis_proxy().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ves = a.ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let mut channel = ves.open().await.expect("channel on A");
    let act = user_with_device(&ves, "gone@example.com", "+15550305").await;
    let _device = online_device(b, &act).await;
    await_online(&mut channel, act.device_id).await;
    // Node B disappears from the bus (as if killed): its subscription and lease lapse.
    proxy.cut();
    let mut outcomes = Vec::new();
    for i in 0..40u64 {
        let resp = ves.send_frame(act.device_id, i, b"to a dead node").await;
        let r = &resp.results[0];
        if r.status == FrameStatus::Undeliverable {
            outcomes.push(r.reason);
        } else {
            let bounced = channel
                .wait_for(STEP, |c| matches!(c, Command::Undeliverable { frame_id, .. } if *frame_id == i))
                .await;
            assert!(bounced.is_some(), "frame {i} accepted but neither delivered nor bounced");
            outcomes.push(Some(UndeliverableReason::PeerOffline));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outcomes.len(), 40);
    // After the lease (3 s) expired, nothing is routed to B any more: the frame is answered
    // undeliverable and no message leaves for B.
    let published = a.metric("noc_bus_messages_sent_total", &[]);
    let resp = ves.send_frame(act.device_id, 99, b"after the lease").await;
    if resp.results[0].status == FrameStatus::Accepted {
        let bounced = channel.wait_for(STEP, |c| matches!(c, Command::Undeliverable { frame_id: 99, .. })).await;
        assert!(bounced.is_some(), "answered undeliverable");
    } else {
        assert_eq!(resp.results[0].reason, Some(UndeliverableReason::PeerOffline));
    }
    assert_eq!(a.metric("noc_bus_messages_sent_total", &[]), published, "nothing routed to the dead node");
    cluster.stop().await;
});
