//! Browse access through the relay, with a fake VES that speaks RTS version 2: the portal's
//! pages ask the user's own VES (on another node, through the cluster bus) and render its
//! answers escaped; a VES that does not answer gets the timeout page within the deadline;
//! a version-1 VES is "not offered"; too many fetches in flight are refused as busy; a
//! license without PC browsing is refused before anything is asked.

use std::time::{Duration, Instant};

use noc_protocol::UserId;
use noc_protocol::rts::fetch::{FETCH_VERSION, FetchRequest, FetchResultResponse, FetchStatus, RequestId};
use noc_protocol::rts::{AccountActivationResponse, Command, DataRequest, ProvisionedUser, Secret};
use noc_test_support::{CommandChannel, FakeVes, Page, TestCluster, WebClient};
use serde_json::json;

const PASSWORD: &str = "user-password-1";

async fn user(ves: &FakeVes, email: &str, msisdn: &str) -> ProvisionedUser {
    let user: ProvisionedUser = ves
        .data(&DataRequest::ProvisionUser {
            email: email.into(),
            password: Some(Secret(PASSWORD.into())),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
        })
        .await
        .expect("provision");
    let _: AccountActivationResponse = ves
        .post_json(
            "/account/v1/activate",
            &json!({"Login": email, "Password": PASSWORD, "Msisdn": msisdn, "TimeZone": "Europe/Berlin"}),
        )
        .await
        .expect("account activation");
    user
}

/// The next `Fetch` on the channel (other commands skipped).
async fn next_fetch(channel: &mut CommandChannel) -> (RequestId, UserId, u64, FetchRequest) {
    let cmd = channel
        .wait_for(Duration::from_secs(5), |c| matches!(c, Command::Fetch { .. }))
        .await
        .expect("a Fetch command");
    match cmd {
        Command::Fetch { request_id, user_id, timeout_ms, request } => (request_id, user_id, timeout_ms, request),
        _ => unreachable!(),
    }
}

async fn answer(ves: &FakeVes, id: RequestId, body: serde_json::Value) -> bool {
    let r: FetchResultResponse = ves
        .data(&DataRequest::FetchResult { request_id: id, status: FetchStatus::Ok, body: Some(body), error: None })
        .await
        .expect("FetchResult");
    r.delivered
}

/// GETs `path` on a task of its own (the test answers the VES's side meanwhile).
fn get(mut b: WebClient, path: &str) -> tokio::task::JoinHandle<(WebClient, Page, Duration)> {
    let path = path.to_string();
    tokio::spawn(async move {
        let started = Instant::now();
        let page = b.get(&path).await;
        (b, page, started.elapsed())
    })
}

#[tokio::test]
async fn pages_ask_the_users_own_server_across_nodes_and_say_when_it_does_not_answer() {
    let cluster = TestCluster::start(2, |_, c| {
        c.web.browse_timeout_seconds = 1;
        c.rts.max_fetches_in_flight = 2;
    })
    .await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    a.create_license("acme", "acme-license-pw", 10).await;
    let mut ves = b.ves();
    ves.protocol_version = Some(FETCH_VERSION);
    ves.license("acme", "acme-license-pw").await.expect("license");
    let mut channel = ves.open().await.expect("channel");
    let ann = user(&ves, "ann@acme.example", "+15550001001").await;
    let session = channel.wait_for(Duration::from_secs(5), |c| matches!(c, Command::Session { .. })).await;
    assert!(matches!(session, Some(Command::Session { protocol_version: 2, .. })), "{session:?}");

    let mut browser = WebClient::new(a.node.http_addr, &a.cert_path());
    assert_eq!(browser.sign_in("ann@acme.example", PASSWORD, false).await.status, 303);

    // The inbox: the folders and a page of messages, asked of ann's VES on node b.
    let pending = get(browser, "/mail/INBOX");
    for _ in 0..2 {
        let (id, user_id, timeout_ms, request) = next_fetch(&mut channel).await;
        assert_eq!((user_id, timeout_ms), (ann.user_id, 1000), "for the signed-in user, with the deadline");
        let body = match request {
            FetchRequest::MailFolders {} => json!({"Folders": [
                {"FolderId": "INBOX", "Name": "INBOX", "Total": 1, "Unread": 1},
                {"FolderId": "Sent", "Name": "Sent", "Total": 0, "Unread": 0}]}),
            FetchRequest::MailList { folder, offset: 0, limit } => {
                assert_eq!((folder.as_str(), limit), ("INBOX", 25));
                json!({"Total": 1, "Messages": [{"MessageId": "m/1", "From": "Bob <bob@x.example>",
                    "Subject": "<script>alert(1)</script> Plan", "Date": 1_796_374_800_000_i64, "Size": 2048,
                    "Unread": true, "HasAttachments": false}]})
            }
            other => panic!("unexpected {other:?}"),
        };
        assert!(answer(&ves, id, body).await, "node a still waits");
    }
    let (browser, page, _) = pending.await.expect("page");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.body.contains("&#60;script&#62;alert(1)&#60;/script&#62; Plan"), "escaped: {}", page.body);
    assert!(!page.body.contains("<script>"));
    assert!(page.body.contains("href=\"/mail/INBOX/m%2F1\""), "ids are one path segment: {}", page.body);
    assert!(page.body.contains("2026-12-04 10:00"), "in the user's zone (Berlin): {}", page.body);

    // A message with HTML only: shown sanitised.
    let pending = get(browser, "/mail/INBOX/m%2F1");
    for _ in 0..2 {
        let (id, _, _, request) = next_fetch(&mut channel).await;
        let body = match request {
            FetchRequest::MailFolders {} => {
                json!({"Folders": [{"FolderId": "INBOX", "Name": "INBOX", "Total": 1, "Unread": 0}]})
            }
            FetchRequest::MailRead { folder, message_id } => {
                assert_eq!((folder.as_str(), message_id.as_str()), ("INBOX", "m/1"));
                json!({"MessageId": "m/1", "From": "Bob <bob@x.example>", "To": ["ann@acme.example"], "Subject": "Plan",
                    "Date": 1_796_374_800_000_i64, "Html": "<p onclick=\"x()\">See <b>this</b><script>alert(2)</script></p>",
                    "Attachments": [{"Index": 0, "Name": "plan.pdf", "ContentType": "application/pdf", "Size": 10}]})
            }
            other => panic!("unexpected {other:?}"),
        };
        answer(&ves, id, body).await;
    }
    let (browser, page, _) = pending.await.expect("page");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("See <b>this</b>"), "{}", page.body);
    assert!(!page.body.contains("alert(2)") && !page.body.contains("onclick"), "{}", page.body);
    assert!(page.body.contains("/mail/INBOX/m%2F1/attachments/0"), "{}", page.body);

    // Nobody answers: the timeout page, within the deadline (and a late answer is dropped).
    let pending = get(browser, "/calendar?day=2026-12-04");
    let (late, _, _, request) = next_fetch(&mut channel).await;
    assert!(
        matches!(request, FetchRequest::CalendarRange { from: 1_796_338_800_000, to: 1_796_425_200_000 }),
        "{request:?}"
    );
    let (browser, page, took) = pending.await.expect("page");
    assert_eq!(page.status, 504, "{}", page.body);
    assert!(page.body.contains("did not answer"), "{}", page.body);
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(!answer(&ves, late, json!({"Events": []})).await, "nobody waits any more");

    // Two fetches in flight at most: a third is refused at once as busy.
    let (first, second) = (get(browser, "/calendar?day=2026-12-04"), {
        let mut other = WebClient::new(a.node.http_addr, &a.cert_path());
        assert_eq!(other.sign_in("ann@acme.example", PASSWORD, false).await.status, 303);
        get(other, "/calendar?day=2026-12-05")
    });
    let (id1, ..) = next_fetch(&mut channel).await;
    let (id2, ..) = next_fetch(&mut channel).await;
    let mut third = WebClient::new(a.node.http_addr, &a.cert_path());
    assert_eq!(third.sign_in("ann@acme.example", PASSWORD, false).await.status, 303);
    let busy = third.get("/contacts").await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(busy.body.contains("busy"), "{}", busy.body);
    for id in [id1, id2] {
        answer(
            &ves,
            id,
            json!({"Events": [{"EventId": "e1", "Summary": "Board", "Start": 1_796_374_800_000_i64,
            "End": 1_796_380_200_000_i64, "AllDay": false}]}),
        )
        .await;
    }
    let (_, page, _) = first.await.expect("page");
    assert!(page.status == 200 && page.body.contains("Board") && page.body.contains("10:00–11:30"), "{}", page.body);
    second.await.expect("page");
    cluster.stop().await;
}

#[tokio::test]
async fn an_old_server_offers_no_browsing_and_a_license_without_it_asks_nothing() {
    let cluster = TestCluster::start(1, |_, _| {}).await;
    let relay = &cluster.nodes[0];
    relay.create_license("acme", "acme-license-pw", 10).await;
    let mut ves = relay.ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let mut channel = ves.open().await.expect("channel (version 1)");
    user(&ves, "bo@acme.example", "+15550001002").await;
    let mut browser = WebClient::new(relay.node.http_addr, &relay.cert_path());
    assert_eq!(browser.sign_in("bo@acme.example", PASSWORD, false).await.status, 303);
    let page = browser.get("/contacts").await;
    assert_eq!(page.status, 501, "{}", page.body);
    assert!(page.body.contains("does not offer"), "{}", page.body);
    assert!(channel.wait_for(Duration::from_millis(300), |c| matches!(c, Command::Fetch { .. })).await.is_none());

    // A version the relay does not speak is refused at the event URL.
    let mut newer = relay.ves();
    newer.protocol_version = Some(99);
    newer.license_token = ves.license_token.clone();
    let refused = newer.open().await.err().expect("refused");
    assert_eq!((refused.status, refused.code.as_str()), (400, "bad_request"), "{refused:?}");

    // The license loses PC browsing: refused before the VES is asked.
    let admin = relay.admin().await;
    let license = admin.set_license_features("acme", &[], &[noc_storage::Feature::BrowsePc]).await.expect("features");
    assert!(!license.features.contains(noc_storage::Feature::BrowsePc));
    let page = browser.get("/mail/INBOX").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("not enabled"), "{}", page.body);
    // The PDA pages have a flag of their own: still allowed, so the (old) server is asked.
    assert_eq!(browser.get("/pda/contacts").await.status, 501);
    admin.set_license_features("acme", &[], &[noc_storage::Feature::BrowsePda]).await.expect("features");
    assert_eq!(browser.get("/pda/contacts").await.status, 403);
    // And the WAP decks theirs: refused as a deck.
    assert_eq!(browser.get("/wap/contacts").await.status, 501);
    admin.set_license_features("acme", &[], &[noc_storage::Feature::BrowseWap]).await.expect("features");
    let refused = browser.get("/wap/contacts").await;
    assert_eq!((refused.status, refused.header("content-type")), (403, Some("text/vnd.wap.wml; charset=utf-8")));
    assert!(refused.body.contains("<card") && refused.body.contains("not enabled"), "{}", refused.body);
    cluster.stop().await;
}
