//! The admin API on the console listener, as operators and intruders meet it: bearer
//! tokens from a password and a TOTP code, the role × endpoint × own/foreign record
//! matrix, read-only tokens, revocation, the error bodies, the audit log and its CSV, and
//! a CSR's suspension closing a live device session on another node.

use noc_protocol::CloseCode;
use noc_protocol::device::Frame;
use noc_storage::model::OperatorRole;
use noc_test_support::scenario::{expect_close, online_device, user_with_device};
use noc_test_support::{AdminApi, Recv, TestCluster, TestOperator, TestRelay};
use serde_json::{Value, json};

/// A device id no device has.
const NO_DEVICE: &str = "00000000-0000-4000-8000-00000000dead";

fn api(relay: &TestRelay) -> AdminApi {
    AdminApi::new(relay.node.console_addr, &relay.cert_path())
}

/// A VES on `license` (its password is the test's) with one activated user.
async fn user_on(relay: &TestRelay, license: &str, email: &str, msisdn: &str) -> String {
    let mut ves = relay.ves();
    ves.license(license, "license-password-1").await.expect("license login");
    let _channel = ves.open().await.expect("command channel");
    let user = ves.provision(email, Some("user-password-1")).await.expect("provision");
    let _: Value = ves
        .post_json(
            "/account/v1/activate",
            &json!({"Login": email, "Password": "user-password-1", "Msisdn": msisdn, "TimeZone": "UTC"}),
        )
        .await
        .expect("account activation");
    user.user_id.to_string()
}

#[tokio::test]
async fn every_role_reaches_exactly_what_it_may() {
    let relay = TestRelay::start();
    let admin = relay.admin().await;
    let root = TestOperator::create(&admin, "root", OperatorRole::NocAdmin).await;
    let carol = TestOperator::create(&admin, "carol", OperatorRole::Csr).await;
    let dave = TestOperator::create(&admin, "dave", OperatorRole::Csr).await;
    let audra = TestOperator::create(&admin, "audra", OperatorRole::Auditor).await;
    let api = api(&relay);
    let root_t = api.token(&root, "write", None).await;
    let carol_t = api.token(&carol, "write", None).await;
    let dave_t = api.token(&dave, "write", None).await;
    let audra_t = api.token(&audra, "read", None).await;

    // Carol's license, and dave's (created by root, given to dave).
    let new = |name: &str| json!({"name": name, "password": "license-password-1", "max_users": 5});
    let (s, hers) = api.call("POST", "/licenses", Some(&carol_t), Some(new("carol-co"))).await;
    assert_eq!(s, 201, "{hers}");
    let (s, his) = api.call("POST", "/licenses", Some(&root_t), Some(new("dave-co"))).await;
    assert_eq!(s, 201, "{his}");
    let (hers, his) = (hers["id"].as_str().expect("id").to_string(), his["id"].as_str().expect("id").to_string());
    let (s, _) =
        api.call("POST", &format!("/licenses/{his}/operators"), Some(&root_t), Some(json!({"operator": "dave"}))).await;
    assert_eq!(s, 204);
    let own_user = user_on(&relay, "carol-co", "ann@carol.example", "+15550001001").await;
    let foreign_user = user_on(&relay, "dave-co", "bob@dave.example", "+15550001002").await;

    // (method, path, body, expected status for root, carol (own = hers), audra).
    let patch = json!({"max_users": 9});
    let cases: Vec<(&str, String, Option<Value>, [u16; 3])> = vec![
        ("GET", "/licenses".into(), None, [200, 200, 403]),
        ("POST", "/licenses".into(), Some(new("x-co")), [201, 403, 403]),
        ("GET", format!("/licenses/{hers}"), None, [200, 200, 403]),
        ("GET", format!("/licenses/{his}"), None, [200, 404, 403]),
        ("PATCH", format!("/licenses/{hers}"), Some(patch.clone()), [200, 200, 403]),
        ("PATCH", format!("/licenses/{his}"), Some(patch.clone()), [200, 404, 403]),
        ("GET", format!("/licenses/{his}/operators"), None, [200, 404, 403]),
        ("GET", format!("/licenses/{his}/ves"), None, [200, 404, 403]),
        ("POST", format!("/licenses/{hers}/operators"), Some(json!({"operator": "root"})), [204, 403, 403]),
        ("GET", "/users".into(), None, [200, 200, 403]),
        ("GET", format!("/users/{own_user}"), None, [200, 200, 403]),
        ("GET", format!("/users/{foreign_user}"), None, [200, 404, 403]),
        ("GET", format!("/users/{foreign_user}/devices"), None, [200, 404, 403]),
        ("POST", format!("/users/{foreign_user}/suspend"), None, [200, 404, 403]),
        ("PATCH", format!("/users/{foreign_user}"), Some(json!({"first_name": "Robert"})), [200, 404, 403]),
        ("POST", format!("/users/{foreign_user}/secret-question/reset"), None, [204, 404, 403]),
        // A device that is not the user's: not found for everyone who may act at all.
        ("POST", format!("/users/{own_user}/devices/{NO_DEVICE}/wipe"), None, [404, 404, 403]),
        ("POST", format!("/users/{foreign_user}/devices/{NO_DEVICE}/disconnect"), None, [404, 404, 403]),
        ("POST", format!("/users/{foreign_user}/reactivate"), None, [200, 404, 403]),
        ("POST", format!("/users/{own_user}/suspend"), None, [200, 200, 403]),
        ("POST", format!("/users/{own_user}/reactivate"), None, [200, 200, 403]),
        ("GET", "/operators".into(), None, [200, 403, 403]),
        (
            "POST",
            "/operators".into(),
            Some(json!({"name": "erin", "role": "csr", "password": "erin-operator-password"})),
            [201, 403, 403],
        ),
        ("GET", "/nodes".into(), None, [200, 403, 403]),
        ("GET", "/msisdns".into(), None, [200, 403, 403]),
        ("POST", "/msisdns".into(), Some(json!({"msisdn": "+15551230000"})), [200, 403, 403]),
        ("DELETE", "/msisdns/+15551230000".into(), None, [204, 403, 403]),
        ("GET", "/usage".into(), None, [200, 200, 200]),
        ("GET", format!("/usage?license={hers}"), None, [200, 200, 200]),
        ("GET", format!("/usage?license={his}"), None, [200, 404, 200]),
        ("GET", "/usage.csv".into(), None, [200, 200, 200]),
        ("GET", "/audit".into(), None, [200, 403, 200]),
        ("GET", "/audit.csv".into(), None, [200, 403, 200]),
    ];
    for (method, path, body, expected) in &cases {
        // The CSR acts first, so that what the CSR may do is done (and audited) by the CSR.
        for (who, token, want) in
            [("audra", &audra_t, expected[2]), ("carol", &carol_t, expected[1]), ("root", &root_t, expected[0])]
        {
            // The auditor's token is read-only: a write it would be allowed is 403 too.
            let mut body = body.clone();
            if path == "/licenses" && *method == "POST" {
                body = Some(new(&format!("{who}-{}", noc_protocol::secrets::random_hex::<3>())));
            }
            let (status, answer) = api.call(method, path, Some(token), body).await;
            let want = if path == "/licenses" && *method == "POST" && who == "carol" { 201 } else { want };
            assert_eq!(status, want, "{who} {method} {path}: {answer}");
            if status >= 400 {
                let code = answer["Error"]["Code"].as_str().unwrap_or_default();
                let expected_code = match status {
                    403 => "forbidden",
                    404 => "not_found",
                    _ => "",
                };
                assert_eq!(code, expected_code, "{who} {method} {path}: {answer}");
            }
        }
    }

    // What each CSR finds: their own users only.
    let (_, page) = api.call("GET", "/users?limit=10", Some(&carol_t), None).await;
    let emails: Vec<&str> =
        page["items"].as_array().expect("items").iter().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails, ["ann@carol.example"]);
    let (_, page) = api.call("GET", "/users?email=BOB", Some(&dave_t), None).await;
    assert_eq!(page["items"][0]["email"], "bob@dave.example");
    assert!(page["items"][0].get("password_hash").is_none() && !page.to_string().contains("argon2"));
    let (_, page) = api.call("GET", "/users?limit=1", Some(&root_t), None).await;
    assert_eq!((page["items"].as_array().map(Vec::len), page["next_offset"].as_u64()), (Some(1), Some(1)));
    let (_, licenses) = api.call("GET", "/licenses", Some(&dave_t), None).await;
    let names: Vec<&str> = licenses.as_array().expect("list").iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, ["dave-co"]);

    // Profiles: validated as on the portal, an MSISDN is one user's, each change audited;
    // a deleted user is gone with their seat.
    let own = format!("/users/{own_user}");
    let (s, answer) =
        api.call("PATCH", &own, Some(&carol_t), Some(json!({"msisdn": "+15557770000", "locale": "de"}))).await;
    assert_eq!(
        (s, answer["msisdn"].as_str(), answer["locale"].as_str()),
        (200, Some("+15557770000"), Some("de")),
        "{answer}"
    );
    let (s, answer) = api
        .call("PATCH", &format!("/users/{foreign_user}"), Some(&root_t), Some(json!({"msisdn": "+15557770000"})))
        .await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (409, Some("conflict")), "{answer}");
    let (s, answer) = api.call("PATCH", &own, Some(&carol_t), Some(json!({"time_zone": "not a zone!"}))).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (400, Some("bad_request")), "{answer}");
    let (_, audit) = api.call("GET", "/audit?action=user.change", Some(&audra_t), None).await;
    let change = audit["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["actor"] == "operator:carol"))
        .expect("carol's change");
    assert_eq!(
        change["changes"][0],
        json!({"field": "msisdn", "before": "+15550001001", "after": "+15557770000"}),
        "{change}"
    );
    let (_, refused) = api.call("GET", "/audit?action=user.change_refused", Some(&audra_t), None).await;
    assert_eq!(refused["items"][0]["actor"], "operator:root", "a refused number is audited: {refused}");
    assert_eq!(api.call("DELETE", &format!("/users/{foreign_user}"), Some(&carol_t), None).await.0, 404);
    assert_eq!(api.call("DELETE", &own, Some(&audra_t), None).await.0, 403);
    assert_eq!(api.call("DELETE", &own, Some(&carol_t), None).await.0, 204);
    assert_eq!(api.call("GET", &own, Some(&carol_t), None).await.0, 404);

    // A read-only token of the administrator looks but does not change.
    let root_read = api.token(&root, "read", Some(0)).await;
    assert_eq!(api.call("GET", &format!("/licenses/{his}"), Some(&root_read), None).await.0, 200);
    let (s, answer) = api.call("PATCH", &format!("/licenses/{his}"), Some(&root_read), Some(patch)).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (403, Some("forbidden")));

    // No token, a malformed one, an unknown one: 401 with the protocol's body.
    for token in [None, Some("not-a-token"), Some(&*"ab".repeat(32))] {
        let (s, answer) = api.call("GET", "/licenses", token, None).await;
        assert_eq!((s, answer["Error"]["Code"].as_str()), (401, Some("invalid_credentials")), "{token:?}");
    }
    // A wrong TOTP code gets no token, like a wrong password.
    let wrong = json!({"name": "dave", "password": dave.password, "code": "000000x", "scope": "write"});
    assert_eq!(api.call("POST", "/tokens", None, Some(wrong)).await.0, 401);
    // Bodies are refused with the field, never the parser's words.
    let (s, answer) =
        api.call("PATCH", &format!("/licenses/{his}"), Some(&root_t), Some(json!({"max_users": "x"}))).await;
    assert_eq!((s, answer["Error"]["Message"].as_str()), (400, Some("invalid value at `max_users`")));
    let (s, answer) = api.call("GET", "/users?colour=blue", Some(&root_t), None).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (400, Some("bad_request")));
    let (s, answer) = api.call("GET", "/nothing-here", Some(&root_t), None).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (404, Some("not_found")));

    // Tokens are listed by their holder and revoked by id, after which they are dead.
    let (_, tokens) = api.call("GET", "/tokens", Some(&dave_t), None).await;
    let id = tokens[0]["id"].as_str().expect("id").to_string();
    assert!(!tokens.to_string().contains(&dave_t), "a token's secret is never listed");
    assert_eq!(api.call("DELETE", &format!("/tokens/{id}"), Some(&carol_t), None).await.0, 404, "not carol's");
    assert_eq!(api.call("DELETE", &format!("/tokens/{id}"), Some(&dave_t), None).await.0, 204);
    assert_eq!(api.call("GET", "/licenses", Some(&dave_t), None).await.0, 401);

    // The audit log: who, in which role, from where, what changed; never a secret.
    let (_, audit) = api.call("GET", "/audit?action=license.change&limit=100", Some(&audra_t), None).await;
    let change = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["subject"] == format!("license:{hers}"))
        .expect("the change of carol's license");
    assert_eq!(change["actor"], "operator:carol", "root's same change after it changed nothing: {audit}");
    assert_eq!((change["role"].as_str(), change["source"].as_str()), (Some("csr"), Some("127.0.0.1")));
    assert_eq!(change["changes"][0], json!({"field": "max_users", "before": "5", "after": "9"}));
    let (s, csv) = api.call_text("GET", "/audit.csv?action=user.", Some(&audra_t), None).await;
    assert_eq!(s, 200);
    assert!(csv.starts_with("id,at,actor,role,source,action,subject,detail,changes\r\n"), "{csv}");
    let carols =
        csv.lines().find(|l| l.contains("operator:carol,csr,127.0.0.1,user.suspend")).expect("carol's suspension");
    assert!(carols.ends_with(",status: active → suspended"), "{carols}");
    let (_, all) = api.call_text("GET", "/audit.csv?limit=100000", Some(&root_t), None).await;
    for secret in [root.password.as_str(), &carol.password, "license-password-1", &root_t, &carol_t] {
        assert!(!all.contains(secret), "the audit log holds no secret");
    }
    // A leaver: disabled by an administrator, their tokens die at once; nobody disables
    // their own account.
    assert_eq!(api.call("POST", "/operators/carol/disable", Some(&carol_t), None).await.0, 403);
    let (s, answer) = api.call("POST", "/operators/root/disable", Some(&root_t), None).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (400, Some("bad_request")), "{answer}");
    let (s, answer) = api.call("POST", "/operators/CAROL/disable", Some(&root_t), None).await;
    assert_eq!((s, answer["disabled"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(api.call("GET", "/licenses", Some(&carol_t), None).await.0, 401);
    let again = json!({"name": "carol", "password": carol.password, "code": carol.enrolment.recovery_codes[0], "scope": "read"});
    assert_eq!(api.call("POST", "/tokens", None, Some(again)).await.0, 403, "a disabled operator cannot sign in");
    assert_eq!(api.call("POST", "/operators/carol/enable", Some(&root_t), None).await.0, 200);

    // There is no way to change the log.
    for method in ["DELETE", "PUT", "PATCH", "POST"] {
        assert_eq!(api.call(method, "/audit", Some(&root_t), None).await.0, 404, "{method} /audit");
    }
}

/// The committed OpenAPI document is the one the code generates, and the server serves it.
#[tokio::test]
async fn the_openapi_document_is_served_and_committed() {
    let relay = TestRelay::start();
    let (s, served) = api(&relay).call_text("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let generated = noc_console::openapi_json();
    assert_eq!(served, generated);
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/admin-api.openapi.json");
    if std::env::var_os("NOC_UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, &generated).expect("write docs/admin-api.openapi.json");
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/admin-api.openapi.json is stale: run `NOC_UPDATE_OPENAPI=1 cargo nextest run -p noc-test-support \
         the_openapi_document_is_served_and_committed` and commit it"
    );
    let doc: Value = serde_json::from_str(&generated).expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    for path in ["/admin/v1/tokens", "/admin/v1/licenses/{id}", "/admin/v1/users", "/admin/v1/audit.csv"] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    // Every documented operation is a route of the server: without a token it answers
    // 401 (the sign-in itself 400 for its missing body), never the 404 of an unknown path.
    let api = api(&relay);
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .trim_start_matches("/admin/v1")
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("{device}", "00000000-0000-4000-8000-000000000000")
            .replace("{msisdn}", "+15550000000");
        for method in item.as_object().expect("operations").keys() {
            let (status, answer) = api.call(&method.to_uppercase(), &concrete, None, None).await;
            let expected = if (path.as_str(), method.as_str()) == ("/admin/v1/tokens", "post") { 400 } else { 401 };
            assert_eq!(status, expected, "{method} {path}: {answer}");
            operations += 1;
        }
    }
    assert_eq!(operations, 35, "every route is documented once");
}

/// A CSR suspends a user from one node; the user's device, connected to another node,
/// is disconnected at once, and cannot come back until the user is reactivated.
#[tokio::test]
async fn a_suspension_closes_the_live_session_on_another_node() {
    let cluster = TestCluster::start(2, |_, _| {}).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let admin = a.admin().await;
    let root = TestOperator::create(&admin, "root", OperatorRole::NocAdmin).await;
    let carol = TestOperator::create(&admin, "carol", OperatorRole::Csr).await;
    let on_a = api(a);
    let carol_t = on_a.token(&carol, "write", None).await;
    let root_t = on_a.token(&root, "write", None).await;
    let new = json!({"name": "carol-co", "password": "license-password-1", "max_users": 5});
    let (status, license) = on_a.call("POST", "/licenses", Some(&carol_t), Some(new)).await;
    assert_eq!(status, 201);
    let license = license["id"].as_str().expect("id").to_string();

    let mut ves = b.ves();
    ves.license("carol-co", "license-password-1").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    let act = user_with_device(&ves, "ann@carol.example", "+15550001111").await;
    let mut device = online_device(b, &act).await;

    // Node a sees both nodes and the sessions each holds (reported through Redis).
    let b_id = b.config.node_id.clone().expect("node id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, nodes) = on_a.call("GET", "/nodes", Some(&root_t), None).await;
        assert_eq!(status, 200, "{nodes}");
        let of = |id: &str| nodes.as_array().and_then(|a| a.iter().find(|n| n["node"] == id)).cloned();
        let on_b = of(&b_id).and_then(|n| n["device_sessions"].as_u64());
        let a_listed = of(a.config.node_id.as_deref().expect("node id")).is_some();
        if on_b == Some(1) && a_listed {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node b's device session never showed: {nodes}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Node a's console sees the installation on node b, and what it runs.
    let (status, ves_list) = on_a.call("GET", &format!("/licenses/{license}/ves"), Some(&carol_t), None).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut ves_list = ves_list;
    while ves_list[0]["agent"].is_null() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        ves_list = on_a.call("GET", &format!("/licenses/{license}/ves"), Some(&carol_t), None).await.1;
    }
    assert_eq!(ves_list[0]["node"].as_str(), b.config.node_id.as_deref(), "{ves_list}");
    assert_eq!(ves_list[0]["agent"], "fake-ves/1", "{ves_list}");

    let user = act.user_id.to_string();
    let (s, answer) = on_a.call("POST", &format!("/users/{user}/suspend"), Some(&carol_t), None).await;
    assert_eq!((s, answer["status"].as_str()), (200, Some("suspended")), "{answer}");
    expect_close(&mut device, CloseCode::AccountSuspended).await;
    let mut again = b.device_connection().await;
    match again.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code, .. }) => assert_eq!(code, CloseCode::AccountSuspended),
        other => panic!("a suspended user's device must be refused: {other:?}"),
    }

    let (s, answer) = on_a.call("POST", &format!("/users/{user}/reactivate"), Some(&root_t), None).await;
    assert_eq!((s, answer["status"].as_str()), (200, Some("active")), "{answer}");
    let mut device = online_device(b, &act).await;

    // Where it is connected, from node a; disconnected from there, it may come back.
    let devices_path = format!("/users/{user}/devices");
    let (_, devices) = on_a.call("GET", &devices_path, Some(&carol_t), None).await;
    assert_eq!(devices[0]["node"].as_str(), b.config.node_id.as_deref(), "{devices}");
    let device_path = format!("{devices_path}/{}", act.device_id);
    assert_eq!(on_a.call("POST", &format!("{device_path}/disconnect"), Some(&carol_t), None).await.0, 204);
    expect_close(&mut device, CloseCode::Normal).await;
    let mut device = online_device(b, &act).await;
    // Erased remotely: the session closes so that the device reconnects to its wipe.
    assert_eq!(on_a.call("POST", &format!("{device_path}/wipe"), Some(&carol_t), None).await.0, 204);
    expect_close(&mut device, CloseCode::WipePending).await;
    let (_, devices) = on_a.call("GET", &devices_path, Some(&carol_t), None).await;
    assert!(devices[0]["wipe_requested_at"].is_i64(), "{devices}");
    cluster.stop().await;
}

/// Feature flags act on live sessions across nodes: a CSR who takes ConstantSync away from
/// a user (node a) closes the user's device session (node b) with `feature_disabled`, the
/// device is refused until it is given back, and the user's enterprise server is told; a
/// license without ConstantSync loses its device sessions and refuses new devices.
#[tokio::test]
async fn feature_flags_reach_devices_and_the_enterprise_server_on_another_node() {
    use noc_protocol::rts::Command;
    use std::time::Duration;
    let cluster = TestCluster::start(2, |_, _| {}).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let admin = a.admin().await;
    let carol = TestOperator::create(&admin, "carol", OperatorRole::Csr).await;
    let on_a = api(a);
    let carol_t = on_a.token(&carol, "write", None).await;
    let all = json!({"browse_pc": true, "browse_pda": true, "browse_wap": true, "constant_sync": true, "alerts": true});
    let new = json!({"name": "carol-co", "password": "license-password-1", "max_users": 5,
                     "admin_email": "IT@carol.example", "features": all});
    let (status, license) = on_a.call("POST", "/licenses", Some(&carol_t), Some(new)).await;
    assert_eq!(status, 201, "{license}");
    assert_eq!((license["admin_email"].as_str(), &license["features"]), (Some("it@carol.example"), &all));
    let license = license["id"].as_str().expect("id").to_string();

    let mut ves = b.ves();
    ves.license("carol-co", "license-password-1").await.expect("license");
    let mut channel = ves.open().await.expect("channel");
    let act = user_with_device(&ves, "ann@carol.example", "+15550001111").await;
    let mut device = online_device(b, &act).await;
    let user = act.user_id.to_string();
    let sync_of = |c: &Command, on: bool| match c {
        Command::ConstantSync { users } => users.iter().any(|u| u.user_id == act.user_id && u.enabled == on),
        _ => false,
    };

    let mut blocked = all.clone();
    blocked["constant_sync"] = json!(false);
    let (s, answer) =
        on_a.call("PATCH", &format!("/users/{user}"), Some(&carol_t), Some(json!({"access": blocked}))).await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!((&answer["access"], answer["allowed"]["constant_sync"].as_bool()), (&blocked, Some(false)));
    expect_close(&mut device, CloseCode::FeatureDisabled).await;
    assert!(channel.wait_for(Duration::from_secs(5), |c| sync_of(c, false)).await.is_some(), "the VES is told");
    let mut again = b.device_connection().await;
    match again.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code, .. }) => assert_eq!(code, CloseCode::FeatureDisabled),
        other => panic!("a device without ConstantSync must be refused: {other:?}"),
    }
    let activation = json!({"Msisdn": "+15550001111", "Password": "user-password-1"});
    let refused = ves.post_json::<Value>("/device/v1/activate", &activation).await.expect_err("no new device");
    assert_eq!((refused.status, refused.code.as_str()), (403, "feature_disabled"), "{refused:?}");

    // Given back, the device comes back; then the license loses ConstantSync.
    let (s, _) = on_a.call("PATCH", &format!("/users/{user}"), Some(&carol_t), Some(json!({"access": all}))).await;
    assert_eq!(s, 200);
    assert!(channel.wait_for(Duration::from_secs(5), |c| sync_of(c, true)).await.is_some());
    let mut device = online_device(b, &act).await;
    let (s, answer) =
        on_a.call("PATCH", &format!("/licenses/{license}"), Some(&carol_t), Some(json!({"features": blocked}))).await;
    assert_eq!((s, &answer["features"]), (200, &blocked), "{answer}");
    expect_close(&mut device, CloseCode::FeatureDisabled).await;
    assert!(channel.wait_for(Duration::from_secs(5), |c| sync_of(c, false)).await.is_some());
    let (_, shown) = on_a.call("GET", &format!("/users/{user}"), Some(&carol_t), None).await;
    assert_eq!((&shown["access"], shown["allowed"]["constant_sync"].as_bool()), (&all, Some(false)), "{shown}");

    // Flags are a whole set: a partial one is refused and changes nothing.
    let (s, answer) = on_a
        .call("PATCH", &format!("/licenses/{license}"), Some(&carol_t), Some(json!({"features": {"alerts": true}})))
        .await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (400, Some("bad_request")), "{answer}");
    cluster.stop().await;
}

/// With `accounts.msisdn_approval = "list"`, numbers imported from a CSV activate accounts
/// and a revoked one no longer does; a malformed line approves nothing.
#[tokio::test]
async fn an_msisdn_import_decides_who_may_activate() {
    let relay = TestRelay::start_with(|c| c.accounts.msisdn_approval = serde_json::from_str("\"list\"").expect("mode"));
    let admin = relay.admin().await;
    let root = TestOperator::create(&admin, "root", OperatorRole::NocAdmin).await;
    let api = api(&relay);
    let token = api.token(&root, "write", None).await;
    relay.create_license("acme", "license-password-1", 10).await;
    let mut ves = relay.ves();
    ves.license("acme", "license-password-1").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    for email in ["ann@acme.example", "bob@acme.example"] {
        ves.provision(email, Some("user-password-1")).await.expect("provision");
    }
    let activate = |email: &'static str, msisdn: &'static str| {
        let ves = &ves;
        async move {
            ves.post_json::<Value>(
                "/account/v1/activate",
                &json!({"Login": email, "Password": "user-password-1", "Msisdn": msisdn, "TimeZone": "UTC"}),
            )
            .await
        }
    };

    let bad = "msisdn\n+15550001\nnot-a-number\n";
    let (status, text) = import(&api, &token, bad).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"invalid_lines\":[3]") && text.contains("\"approved\":0"), "the file's line: {text}");
    assert!(activate("ann@acme.example", "+15550001").await.is_err(), "nothing was approved");

    let (status, text) =
        import(&api, &token, "msisdn,owner\r\n+15550001,Ann\r\n+15550002,Bob\r\n+15550001,again\r\n").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"approved\":2"), "{text}");
    let (_, page) = api.call("GET", "/msisdns?search=555000", Some(&token), None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2), "{page}");
    activate("ann@acme.example", "+15550001").await.expect("an approved number activates");
    assert_eq!(api.call("DELETE", "/msisdns/+15550002", Some(&token), None).await.0, 204);
    assert!(activate("bob@acme.example", "+15550002").await.is_err(), "a revoked number does not");
    // An operator is no way around either: only an activated user's number is replaced,
    // and only with an approved one.
    let (_, page) = api.call("GET", "/users?email=acme.example", Some(&token), None).await;
    let id_of = |email: &str| {
        page["items"]
            .as_array()
            .and_then(|a| a.iter().find(|u| u["email"] == email))
            .map(|u| u["id"].as_str().unwrap_or("").to_string())
            .expect("user")
    };
    let (ann, bob) = (id_of("ann@acme.example"), id_of("bob@acme.example"));
    let (s, answer) =
        api.call("PATCH", &format!("/users/{bob}"), Some(&token), Some(json!({"msisdn": "+15550001"}))).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (403, Some("not_activated")), "{answer}");
    let (s, answer) =
        api.call("PATCH", &format!("/users/{ann}"), Some(&token), Some(json!({"msisdn": "+15550003"}))).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (403, Some("msisdn_not_approved")), "{answer}");
    let (_, audit) = api.call("GET", "/audit?action=msisdn.", Some(&token), None).await;
    let actions: Vec<&str> =
        audit["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["msisdn.revoke", "msisdn.import"], "{audit}");
}

async fn import(api: &AdminApi, token: &str, csv: &str) -> (u16, String) {
    api.call_raw("POST", "/msisdns/import", token, "text/csv", csv).await
}

/// A user who called the help desk: the CSR mails them a one-time link (never sees it);
/// only activated users get one, and without an SMTP server the API says so.
#[tokio::test]
async fn an_operator_mails_a_password_reset_link_the_user_can_use() {
    let smtp = noc_test_support::SmtpSink::start().expect("SMTP sink (python3 -m pip install aiosmtpd)");
    let port = smtp.port;
    let relay = TestRelay::start_with(move |c| {
        c.mail.smtp_host = Some("127.0.0.1".into());
        c.mail.smtp_port = port;
        c.mail.smtp_security = serde_json::from_str("\"none\"").expect("security");
        c.mail.from = "NOC <noc@relay.example>".into();
    });
    let admin = relay.admin().await;
    let root = TestOperator::create(&admin, "root", OperatorRole::NocAdmin).await;
    let api = api(&relay);
    let token = api.token(&root, "write", None).await;
    relay.create_license("acme", "license-password-1", 10).await;
    let mut ves = relay.ves();
    ves.license("acme", "license-password-1").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    let act = noc_test_support::scenario::user_with_device(&ves, "ola@acme.example", "+15550009999").await;
    let waiting = ves.provision("pia@acme.example", Some("user-password-1")).await.expect("provision");

    let (s, answer) = api.call("POST", &format!("/users/{}/password-reset", waiting.user_id), Some(&token), None).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (400, Some("bad_request")), "not activated: {answer}");
    let (s, answer) = api.call("POST", &format!("/users/{}/password-reset", act.user_id), Some(&token), None).await;
    assert_eq!(s, 202, "{answer}");
    assert!(answer.as_str().is_some_and(str::is_empty), "the answer carries no link: {answer}");
    let mail = smtp
        .wait_for(std::time::Duration::from_secs(10), |m| m.rcpt_tos.iter().any(|t| t == "ola@acme.example"))
        .await
        .expect("the recovery mail");
    let start = mail.data.find("/recover/").expect("a link");
    let token_in_mail: String =
        mail.data[start + "/recover/".len()..].chars().take_while(char::is_ascii_hexdigit).collect();
    let mut browser = noc_test_support::WebClient::new(relay.node.http_addr, &relay.cert_path());
    let page = browser.get(&format!("/recover/{token_in_mail}")).await;
    assert_eq!(page.status, 200, "the mailed link opens the new-password page");
    let (_, audit) = api.call("GET", "/audit?action=user.recovery_mailed", Some(&token), None).await;
    assert_eq!(audit["items"][0]["actor"], "operator:root", "{audit}");
    assert!(!audit.to_string().contains(&token_in_mail), "the link is in no log");

    // Without an SMTP server there is nothing to send it with.
    let bare = TestRelay::start();
    let root2 = TestOperator::create(&bare.admin().await, "root", OperatorRole::NocAdmin).await;
    let api2 = AdminApi::new(bare.node.console_addr, &bare.cert_path());
    let token2 = api2.token(&root2, "write", None).await;
    let (s, answer) = api2.call("POST", &format!("/users/{}/password-reset", act.user_id), Some(&token2), None).await;
    assert_eq!((s, answer["Error"]["Code"].as_str()), (503, Some("unavailable")), "{answer}");
}
