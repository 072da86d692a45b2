//! The web portal over HTTP, as a browser and as an attacker meet it: sign-in and
//! sessions kept in the store (cookie flags, a new token per sign-in, sign-out on the
//! server, inactivity timeout, "keep me signed in", revocation, any node serving any
//! session), CSRF on every form, escaping, security headers, and refusals that read the
//! same for known and unknown accounts.

use std::time::Duration;

use noc_protocol::rts::{AccountActivationResponse, DataRequest, ProvisionedUser, Secret};
use noc_test_support::scenario::relay_and_ves;
use noc_test_support::{FakeVes, TestCluster, TestRelay, WebClient};

const PASSWORD: &str = "user-password-1";

/// A provisioned and activated user (the JSON activation, as a scripted client does).
async fn user(ves: &FakeVes, email: &str, first: &str, last: &str) -> ProvisionedUser {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let user: ProvisionedUser = ves
        .data(&DataRequest::ProvisionUser {
            email: email.into(),
            password: Some(Secret(PASSWORD.into())),
            first_name: first.into(),
            last_name: last.into(),
        })
        .await
        .expect("provision");
    let msisdn = format!("+1555{:07}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let _: AccountActivationResponse = ves
        .post_json(
            "/account/v1/activate",
            &serde_json::json!({"Login": email, "Password": PASSWORD, "Msisdn": msisdn, "TimeZone": "Europe/Paris"}),
        )
        .await
        .expect("account activation");
    user
}

fn browser(relay: &TestRelay) -> WebClient {
    WebClient::new(relay.node.http_addr, &relay.cert_path())
}

fn assert_page_headers(page: &noc_test_support::Page) {
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script allowed at all: {csp}");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(page.header("strict-transport-security").is_some());
}

#[tokio::test]
async fn sign_in_sets_a_host_only_session_cookie_and_shows_the_account() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "ann@example.com", "Ann", "Lee").await;
    let mut b = browser(&relay);

    let anonymous = b.get("/").await;
    assert_eq!((anonymous.status, anonymous.header("location")), (303, Some("/login")));
    let form = b.get("/login").await;
    assert_eq!(form.status, 200);
    assert_page_headers(&form);
    assert!(form.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    let csrf_cookie = form.set_cookies().into_iter().find(|c| c.starts_with("__Host-noc_csrf=")).expect("csrf cookie");
    for flag in ["Secure", "HttpOnly", "Path=/", "SameSite=Strict"] {
        assert!(csrf_cookie.contains(flag), "{csrf_cookie}");
    }
    assert!(form.body.contains("Keep me signed in"));

    let signed_in = b.sign_in("ANN@example.com", PASSWORD, false).await;
    assert_eq!((signed_in.status, signed_in.header("location")), (303, Some("/")));
    let cookie = signed_in.set_cookies().into_iter().find(|c| c.starts_with("__Host-noc_session=")).expect("cookie");
    for flag in ["Secure", "HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Max-Age") && !cookie.contains("Domain"), "a browser-session cookie: {cookie}");
    let token = b.cookies["__Host-noc_session"].clone();
    assert!(token.len() >= 32, "at least 128 bits");

    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    assert_page_headers(&home);
    assert!(home.body.contains("Ann Lee") && home.body.contains("ann@example.com"), "{}", home.body);
    assert!(home.body.contains("this browser") && home.body.contains(">Linux</span>"), "{}", home.body);

    // A token known before sign-in (planted) is never promoted: sign-in makes a new one.
    let planted = "ab".repeat(32);
    let mut victim = browser(&relay);
    victim.cookies.insert("__Host-noc_session".into(), planted.clone());
    assert_eq!(victim.sign_in("ann@example.com", PASSWORD, false).await.status, 303);
    assert_ne!(victim.cookies["__Host-noc_session"], planted);
    assert_ne!(victim.cookies["__Host-noc_session"], token, "every sign-in its own token");

    // The store holds hashes, never the token.
    let audit = relay.admin().await.audit(20).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "user.web_sign_in"));
    assert!(audit.iter().all(|e| !e.detail.contains(&token)));
}

#[tokio::test]
async fn wrong_password_and_unknown_account_read_the_same() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "bob@example.com", "Bob", "Ng").await;
    let mut b = browser(&relay);
    let wrong = b.sign_in("bob@example.com", "not-the-password", false).await;
    let unknown = b.sign_in("nobody@example.com", "not-the-password", false).await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_page_headers(&wrong);
    assert_eq!(
        wrong.body.replace("bob@example.com", "LOGIN"),
        unknown.body.replace("nobody@example.com", "LOGIN"),
        "same page for an existing and an unknown account"
    );
    assert!(!b.cookies.contains_key("__Host-noc_session"));
}

#[tokio::test]
async fn guessing_is_throttled_without_locking_the_owner_out() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "cid@example.com", "Cid", "Ro").await;
    let mut attacker = browser(&relay);
    let mut last = 0;
    for _ in 0..8 {
        last = attacker.sign_in("cid@example.com", "guess", false).await.status;
    }
    assert_eq!(last, 429, "guessing from one address is slowed down");
    let page = attacker.sign_in("cid@example.com", "guess", false).await;
    assert!(page.header("retry-after").is_some() && page.body.contains("Too many attempts"));
    // The owner, from another address, still signs in: nothing was locked.
    let mut owner = browser(&relay).from_address("127.0.0.2".parse().expect("ip"));
    assert_eq!(owner.sign_in("cid@example.com", PASSWORD, false).await.status, 303);
    assert_eq!(owner.get("/").await.status, 200);
}

#[tokio::test]
async fn forms_without_the_csrf_token_or_from_another_site_change_nothing() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "dee@example.com", "Dee", "Ko").await;
    let mut b = browser(&relay);

    // Sign-in without the double-submit value, with a wrong one, or from another origin.
    b.get("/login").await;
    let csrf = b.cookies["__Host-noc_csrf"].clone();
    let creds = [("login", "dee@example.com"), ("password", PASSWORD)];
    assert_eq!(b.post("/login", &creds).await.status, 403);
    let wrong = [("csrf", "00"), ("login", "dee@example.com"), ("password", PASSWORD)];
    assert_eq!(b.post("/login", &wrong).await.status, 403);
    let right = [("csrf", csrf.as_str()), ("login", "dee@example.com"), ("password", PASSWORD)];
    assert_eq!(b.post_from("/login", &right, Some("https://evil.example")).await.status, 403);
    assert!(!b.cookies.contains_key("__Host-noc_session"), "none of them signed in");

    // Signed in: sign-out and revocation need the session's token.
    assert_eq!(b.sign_in("dee@example.com", PASSWORD, false).await.status, 303);
    let home = b.get("/").await;
    let token = home.hidden("csrf").expect("csrf field");
    let refused = b.post("/logout", &[]).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("did not come from this site"), "{}", refused.body);
    assert_eq!(b.post("/logout", &[("csrf", &csrf)]).await.status, 403, "the sign-in form's value is not it");
    assert_eq!(b.post_from("/logout", &[("csrf", &token)], Some("https://evil.example")).await.status, 403);
    assert_eq!(b.get("/").await.status, 200, "still signed in");
    let out = b.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(out.status, 200);
    assert!(out.body.contains("<meta http-equiv=\"refresh\" content=\"0;url=/login?signed_out=1\">"), "{}", out.body);
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "eve@example.com", "Eve", "Mo").await;
    let mut b = browser(&relay);
    b.sign_in("eve@example.com", PASSWORD, false).await;
    let stolen = b.cookies.clone();
    let token = b.get("/").await.hidden("csrf").expect("csrf");
    let out = b.post("/logout", &[("csrf", &token)]).await;
    assert!(!b.cookies.contains_key("__Host-noc_session"), "cookie cleared");
    assert_eq!(out.header("clear-site-data"), Some("\"cache\""), "and what the browser holds of the site");
    assert_page_headers(&out);
    let after = b.get("/login?signed_out=1").await;
    assert!(after.body.contains("You are signed out."));

    // The old cookie, replayed (Back, or a copy): the account is gone from it.
    let mut replay = browser(&relay);
    replay.cookies = stolen;
    let page = replay.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Your session timed out") && !page.body.contains("eve@example.com"));
    assert_page_headers(&page);
}

#[tokio::test]
async fn an_idle_session_times_out_and_keep_me_signed_in_does_not() {
    let (relay, ves, _channel) = relay_and_ves(|c| c.web.session_idle_timeout_seconds = 1).await;
    user(&ves, "fay@example.com", "Fay", "Wu").await;
    let mut short = browser(&relay);
    short.sign_in("fay@example.com", PASSWORD, false).await;
    let mut kept = browser(&relay);
    kept.user_agent = "Kept/2.0".into();
    let signed_in = kept.sign_in("fay@example.com", PASSWORD, true).await;
    let cookie = signed_in.set_cookies().into_iter().find(|c| c.starts_with("__Host-noc_session=")).expect("cookie");
    assert!(cookie.contains("Max-Age=2592000"), "kept for the persistent lifetime: {cookie}");
    assert_eq!(short.get("/").await.status, 200);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let timed_out = short.get("/").await;
    assert!(timed_out.body.contains("Your session timed out"), "{}", timed_out.body);
    assert!(!short.cookies.contains_key("__Host-noc_session"));
    assert_eq!(short.get("/").await.header("location"), Some("/login"));

    let home = kept.get("/").await;
    assert!(home.body.contains("fay@example.com") && home.body.contains("kept signed in"), "{}", home.body);

    // Listed on the settings page too and revoked from there, from another browser: the
    // kept session ends at once.
    let mut other = browser(&relay);
    other.sign_in("fay@example.com", PASSWORD, false).await;
    let listed = other.get("/settings").await;
    assert!(listed.body.contains("kept signed in"), "{}", listed.body);
    let csrf = listed.hidden("csrf").expect("csrf");
    assert_eq!(listed.body.matches("/revoke\"").count(), 2, "the kept session and this one");
    let kept_block = listed.body.split("<li>").find(|li| li.contains("Kept/2.0")).expect("kept session listed");
    let kept_id = kept_block
        .split("action=\"/sessions/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("its revoke form")
        .to_string();
    let revoked = other.post(&format!("/sessions/{kept_id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!((revoked.status, revoked.header("location")), (303, Some("/")));
    assert!(kept.get("/").await.body.contains("Your session timed out"));
    assert_eq!(other.get("/").await.status, 200, "the other session is untouched");
    // Another user's session id is not found, whatever this user tries.
    assert_eq!(other.post(&format!("/sessions/{kept_id}/revoke"), &[("csrf", &csrf)]).await.status, 404);
}

#[tokio::test]
async fn what_users_type_is_escaped_in_every_page() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "gus@example.com", "<script>alert(1)</script>", "\"><img src=x onerror=alert(2)>").await;
    let mut b = browser(&relay);
    // Echoed into the sign-in form after a refusal.
    let echoed = b.sign_in("\"><script>alert(3)</script>", "wrong-password", false).await;
    assert!(!echoed.body.contains("<script>alert(3)"), "{}", echoed.body);
    assert!(echoed.body.contains("&#34;&#62;&#60;script&#62;alert(3)&#60;/script&#62;"), "{}", echoed.body);
    // The names on the account page.
    b.user_agent = "<b>agent</b>".into();
    b.sign_in("gus@example.com", PASSWORD, false).await;
    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    for raw in ["<script>alert(1)", "<img src=x", "<b>agent"] {
        assert!(!home.body.contains(raw), "{raw} rendered raw:\n{}", home.body);
    }
    assert!(home.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{}", home.body);
}

#[tokio::test]
async fn malformed_forms_get_a_plain_answer() {
    let (relay, _ves, _channel) = relay_and_ves(|_| {}).await;
    let mut b = browser(&relay);
    b.get("/login").await;
    let csrf = b.cookies["__Host-noc_csrf"].clone();
    let big = "x".repeat(20_000);
    let too_large = b.post("/login", &[("csrf", &csrf), ("login", &big), ("password", "p")]).await;
    assert_eq!(too_large.status, 413);
    assert_page_headers(&too_large);
    let empty = b.post("/login", &[("csrf", &csrf), ("login", ""), ("password", "")]).await;
    assert_eq!(empty.status, 400);
    assert!(empty.body.contains("Enter your e-mail address or mobile number"));
    // The RTS API's unknown paths still answer JSON.
    let api = b.get("/rts/v1/nothing").await;
    assert_eq!(api.status, 404);
    assert!(api.header("content-type").is_some_and(|c| c.contains("json")));
    let css = b.get("/static/noc.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").is_some_and(|c| c.starts_with("text/css")));
}

/// Behind a load balancer a user's requests land on any node: a session made on one node
/// is served by the other, and signing out on the second ends it on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_session() {
    let cluster = TestCluster::start(2, |_, _| {}).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    a.create_license("acme", "acme-license-pw", 10).await;
    let mut ves = a.ves();
    ves.license("acme", "acme-license-pw").await.expect("license");
    let _channel = ves.open().await.expect("channel");
    user(&ves, "hal@example.com", "Hal", "Ito").await;

    let mut on_a = browser(a);
    assert_eq!(on_a.sign_in("hal@example.com", PASSWORD, false).await.status, 303);
    let mut on_b = on_a.on_node(b.node.http_addr, &b.cert_path());
    let home = on_b.get("/").await;
    assert!(home.body.contains("hal@example.com"), "node b serves node a's session: {}", home.body);
    let csrf = home.hidden("csrf").expect("csrf");
    on_b.post("/logout", &[("csrf", &csrf)]).await;
    assert!(on_a.get("/").await.body.contains("Your session timed out"), "signed out everywhere");
    cluster.stop().await;
}

/// The welcome mail's link opens the activation page: the mailed credentials, a mobile
/// number and a time zone, and a password of one's own, before anything else.
#[tokio::test]
async fn activation_from_the_welcome_link() {
    let (relay, ves, _channel) =
        relay_and_ves(|c| c.accounts.msisdn_approval = serde_json::from_str("\"list\"").expect("approval mode")).await;
    let provisioned = ves
        .data::<ProvisionedUser>(&DataRequest::ProvisionUser {
            email: "ivy@example.com".into(),
            password: None,
            first_name: "Ivy".into(),
            last_name: "Po".into(),
        })
        .await
        .expect("provision");
    let mailed = provisioned.password.expect("generated password");
    assert_eq!(provisioned.activation_url, format!("{}/activate", relay.base_url()));
    let mut b = browser(&relay);

    // Signed in with the mailed password, the account leads to activation first.
    b.sign_in("ivy@example.com", &mailed, false).await;
    let first = b.get("/").await;
    assert_eq!(first.header("location"), Some("/activate?login=ivy%40example.com"));
    let form = b.get("/activate?login=ivy%40example.com").await;
    assert_eq!(form.status, 200);
    assert_page_headers(&form);
    assert!(form.body.contains("value=\"ivy@example.com\"") && form.body.contains("<option value=\"Europe/Paris\""));
    let csrf = b.cookies["__Host-noc_csrf"].clone();
    let submit = |password: &str, msisdn: &str, tz: &str, new: &str, confirm: &str| {
        vec![
            ("csrf".to_string(), csrf.clone()),
            ("login".to_string(), "ivy@example.com".to_string()),
            ("password".to_string(), password.to_string()),
            ("msisdn".to_string(), msisdn.to_string()),
            ("time_zone".to_string(), tz.to_string()),
            ("new_password".to_string(), new.to_string()),
            ("confirm".to_string(), confirm.to_string()),
        ]
    };
    async fn post(b: &mut WebClient, fields: Vec<(String, String)>) -> noc_test_support::Page {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/activate", &f).await
    }
    let wrong =
        post(&mut b, submit("wrong-password", "+4915100000001", "Europe/Paris", "my-own-pass-1", "my-own-pass-1"))
            .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("do not match those of the welcome mail"));
    assert!(wrong.body.contains("value=\"+4915100000001\""), "what was typed is kept, but no password");
    let differ =
        post(&mut b, submit(&mailed, "+4915100000001", "Europe/Paris", "my-own-pass-1", "my-own-pass-2")).await;
    assert_eq!((differ.status, differ.body.contains("The two new passwords differ.")), (400, true));
    let tz = post(&mut b, submit(&mailed, "+4915100000001", "Mars/Olympus", "my-own-pass-1", "my-own-pass-1")).await;
    assert_eq!((tz.status, tz.body.contains("Choose your time zone")), (400, true));
    let bad = post(&mut b, submit(&mailed, "12ab", "Europe/Paris", "my-own-pass-1", "my-own-pass-1")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("A mobile number is 5 to 20 digits, optionally after a +."), "{}", bad.body);
    let short = post(&mut b, submit(&mailed, "+4915100000001", "Europe/Paris", "short", "short")).await;
    assert_eq!(short.status, 400);
    assert!(short.body.contains("Password must be 8 to 128 characters."), "{}", short.body);
    let same = post(&mut b, submit(&mailed, "+4915100000001", "Europe/Paris", &mailed, &mailed)).await;
    assert!(same.body.contains("other than the one in the welcome mail"), "{}", same.body);
    // The carrier's approval list is honoured, with a message that says so.
    let unapproved =
        post(&mut b, submit(&mailed, "+4915100000001", "Europe/Paris", "my-own-pass-1", "my-own-pass-1")).await;
    assert_eq!(unapproved.status, 403);
    assert!(unapproved.body.contains("not approved this mobile number"));
    relay.admin().await.approve_msisdn("+4915100000001").await.expect("approve");

    let done = post(&mut b, submit(&mailed, "+4915100000001", "Europe/Paris", "my-own-pass-1", "my-own-pass-1")).await;
    assert_eq!((done.status, done.header("location")), (303, Some("/?activated=1")));
    let home = b.get("/?activated=1").await;
    assert!(home.body.contains("Your account is active.") && home.body.contains("+4915100000001"), "{}", home.body);
    assert!(home.body.contains("Europe/Paris"));
    // The mailed password is gone, and the session made with it ended; the new one works.
    let mut other = browser(&relay);
    assert_eq!(other.sign_in("ivy@example.com", &mailed, false).await.status, 401);
    assert_eq!(other.sign_in("+4915100000001", "my-own-pass-1", false).await.status, 303, "by mobile number");
    let audit = relay.admin().await.audit(50).await.expect("audit");
    assert!(
        audit.iter().any(|e| e.action == "user.activate") && audit.iter().any(|e| e.action == "user.password_changed")
    );
}

/// Settings reach the user's enterprise server over its live command channel at once:
/// new rules and the ConstantSync flag as `FilterRules` and `ConstantSync`, a new name
/// as `ActivateUsers` first.
#[tokio::test]
async fn settings_reach_the_ves_at_once() {
    use noc_protocol::rts::{Command, FilterRule};
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    let jo = user(&ves, "jo@example.com", "Jo", "Ma").await;
    let mut b = browser(&relay);
    b.sign_in("jo@example.com", PASSWORD, false).await;
    let page = b.get("/settings").await;
    assert_eq!(page.status, 200);
    assert_page_headers(&page);
    assert!(page.body.contains("value=\"Jo\"") && page.body.contains("<option value=\"Europe/Paris\" selected>"));
    assert!(page.body.contains("name=\"constant_sync\" value=\"1\" checked"), "on by default");
    let csrf = page.hidden("csrf").expect("csrf");
    let step = std::time::Duration::from_secs(5);
    let mut fields = vec![
        ("csrf", csrf.clone()),
        ("first_name", "Jo".to_string()),
        ("last_name", "Ma".to_string()),
        ("time_zone", "Europe/Paris".to_string()),
        ("alerts", "1".to_string()),
        ("rule_field", "from".to_string()),
        ("rule_text", "boss@corp.example".to_string()),
        ("rule_field", "subject".to_string()),
        ("rule_text", "".to_string()),
        ("rule_field", "subject".to_string()),
        ("rule_text", "URGENT".to_string()),
    ];
    let as_refs = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let owned = as_refs(&fields);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let saved = b.post("/settings", &refs).await;
    assert_eq!((saved.status, saved.header("location")), (303, Some("/settings?saved=1")));
    let rules = vec![
        FilterRule { field: "from".into(), contains: "boss@corp.example".into() },
        FilterRule { field: "subject".into(), contains: "URGENT".into() },
    ];
    // (The activation's own FilterRules and ConstantSync came before, with no rules.)
    let got = channel
        .wait_for(step, |c| matches!(c, Command::FilterRules { users } if users.iter().any(|u| !u.rules.is_empty())))
        .await
        .expect("FilterRules");
    match got {
        Command::FilterRules { users } => {
            assert_eq!(users.len(), 1);
            assert_eq!((users[0].user_id, &users[0].rules), (jo.user_id, &rules));
        }
        other => panic!("{other:?}"),
    }
    let got = channel.wait_for(step, |c| matches!(c, Command::ConstantSync { .. })).await.expect("ConstantSync");
    assert!(matches!(got, Command::ConstantSync { users } if users.len() == 1 && !users[0].enabled), "unticked: off");
    let shown = b.get("/settings?saved=1").await;
    assert!(shown.body.contains("Your settings are saved.") && shown.body.contains("value=\"boss@corp.example\""));
    assert!(!shown.body.contains("name=\"constant_sync\" value=\"1\" checked"));
    assert!(shown.body.contains("name=\"alerts\" value=\"1\" checked"));

    // Alerts off: the VES is sent no rules, the rules stay on the page; on again: back.
    let off: Vec<(&'static str, String)> = fields.iter().filter(|(k, _)| *k != "alerts").cloned().collect();
    let owned = as_refs(&off);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(b.post("/settings", &refs).await.status, 303);
    let got = channel.wait_for(step, |c| matches!(c, Command::FilterRules { .. })).await.expect("FilterRules");
    assert!(matches!(&got, Command::FilterRules { users } if users.len() == 1 && users[0].rules.is_empty()), "{got:?}");
    let shown = b.get("/settings").await;
    assert!(!shown.body.contains("name=\"alerts\" value=\"1\" checked") && shown.body.contains("value=\"URGENT\""));
    let owned = as_refs(&fields);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(b.post("/settings", &refs).await.status, 303);
    let got = channel.wait_for(step, |c| matches!(c, Command::FilterRules { .. })).await.expect("FilterRules");
    assert!(matches!(&got, Command::FilterRules { users } if users[0].rules == rules), "{got:?}");

    // A contact address: stored normalised, shown; a wrong one refused.
    let mut with_contact = fields.clone();
    with_contact.push(("contact_email", "Jo.Private@Example.ORG".into()));
    let owned = as_refs(&with_contact);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(b.post("/settings", &refs).await.status, 303);
    assert!(b.get("/settings").await.body.contains("value=\"jo.private@example.org\""));
    with_contact.last_mut().expect("field").1 = "no address".into();
    let owned = as_refs(&with_contact);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = b.post("/settings", &refs).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("The contact address must be an e-mail address."), "{}", refused.body);

    // A new name goes out as ActivateUsers (not complete), then the rules.
    fields[1].1 = "Joanna".into();
    fields.push(("constant_sync", "1".into()));
    let owned = as_refs(&fields);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(b.post("/settings", &refs).await.status, 303);
    let got = channel
        .wait_for(
            step,
            |c| matches!(c, Command::ActivateUsers { users, .. } if users.iter().any(|u| u.first_name == "Joanna")),
        )
        .await
        .expect("ActivateUsers");
    assert!(matches!(got, Command::ActivateUsers { users, complete: false } if users.len() == 1));
    let got = channel.wait_for(step, |c| matches!(c, Command::ConstantSync { .. })).await.expect("ConstantSync");
    assert!(matches!(got, Command::ConstantSync { users } if users[0].enabled));

    // Refused: a rule too long, a header that is none of the three; nothing changes.
    let mut bad = fields.clone();
    bad.push(("rule_field", "subject".into()));
    bad.push(("rule_text", "x".repeat(101)));
    let owned = as_refs(&bad);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = b.post("/settings", &refs).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("1 to 100 printable characters"), "{}", refused.body);
    let mut bad = fields.clone();
    bad.push(("rule_field", "body".into()));
    bad.push(("rule_text", "x".into()));
    let owned = as_refs(&bad);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(b.post("/settings", &refs).await.status, 400);
    assert!(
        channel
            .wait_for(std::time::Duration::from_millis(300), |c| matches!(c, Command::FilterRules { .. }))
            .await
            .is_none()
    );
    // Without the token: refused.
    let owned = as_refs(&fields[1..]);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(b.post("/settings", &refs).await.status, 403);
}

/// The password changes only with the current one; other sessions end, this one stays,
/// and devices are signed out only when asked.
#[tokio::test]
async fn changing_the_password() {
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    user(&ves, "kim@example.com", "Kim", "Oh").await;
    let mut b = browser(&relay);
    b.sign_in("kim@example.com", PASSWORD, false).await;
    let home = b.get("/").await.body;
    let msisdn = home.split("<dt>Mobile number</dt><dd>").nth(1).and_then(|s| s.split("</dd>").next()).expect("msisdn");
    let device: noc_protocol::rts::DeviceActivationResponse = ves
        .post_json(
            "/device/v1/activate",
            &serde_json::json!({"Msisdn": msisdn, "Password": PASSWORD, "DeviceName": "phone", "DeviceType": "test"}),
        )
        .await
        .expect("device activation");
    let mut elsewhere = browser(&relay);
    elsewhere.sign_in("kim@example.com", PASSWORD, false).await;
    let csrf = b.get("/settings").await.hidden("csrf").expect("csrf");
    let form = |current: &str, new: &str, confirm: &str, devices: bool| {
        let mut f = vec![
            ("csrf".to_string(), csrf.clone()),
            ("current".to_string(), current.to_string()),
            ("new_password".to_string(), new.to_string()),
            ("confirm".to_string(), confirm.to_string()),
        ];
        if devices {
            f.push(("sign_out_devices".to_string(), "1".to_string()));
        }
        f
    };
    async fn post(b: &mut WebClient, f: Vec<(String, String)>) -> noc_test_support::Page {
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/settings/password", &refs).await
    }
    let wrong = post(&mut b, form("not-it", "kims-new-pass", "kims-new-pass", false)).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Your current password is not correct."));
    let differ = post(&mut b, form(PASSWORD, "kims-new-pass", "kims-other-pass", false)).await;
    assert_eq!((differ.status, differ.body.contains("The two new passwords differ.")), (400, true));
    let done = post(&mut b, form(PASSWORD, "kims-new-pass", "kims-new-pass", false)).await;
    assert_eq!((done.status, done.header("location")), (303, Some("/settings?password=1")));
    assert_eq!(b.get("/").await.status, 200, "this session stays");
    assert!(elsewhere.get("/").await.body.contains("Your session timed out"), "the other one ended");
    assert!(
        channel
            .wait_for(std::time::Duration::from_millis(300), |c| matches!(
                c,
                noc_protocol::rts::Command::DeviceRevoked { .. }
            ))
            .await
            .is_none(),
        "devices stay unless asked"
    );
    let mut fresh = browser(&relay);
    assert_eq!(fresh.sign_in("kim@example.com", PASSWORD, false).await.status, 401);
    assert_eq!(fresh.sign_in("kim@example.com", "kims-new-pass", false).await.status, 303);

    // A lost phone: the password changes and the devices are signed out with it.
    let csrf = b.get("/settings").await.hidden("csrf").expect("csrf");
    let f = vec![
        ("csrf".to_string(), csrf),
        ("current".to_string(), "kims-new-pass".to_string()),
        ("new_password".to_string(), "kims-third-pass".to_string()),
        ("confirm".to_string(), "kims-third-pass".to_string()),
        ("sign_out_devices".to_string(), "1".to_string()),
    ];
    assert_eq!(post(&mut b, f).await.status, 303);
    let revoked = channel
        .wait_for(std::time::Duration::from_secs(5), |c| matches!(c, noc_protocol::rts::Command::DeviceRevoked { .. }))
        .await
        .expect("DeviceRevoked");
    assert!(
        matches!(revoked, noc_protocol::rts::Command::DeviceRevoked { device_id, .. } if device_id == device.device_id)
    );
}

/// The devices page: listed with whether each is connected, renamed, and revoked, which
/// ends the device's live session at once and tells the VES.
#[tokio::test]
async fn devices_are_listed_renamed_and_revoked() {
    use noc_protocol::CloseCode;
    use noc_test_support::scenario::{expect_close, online_device};
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    user(&ves, "lou@example.com", "Lou", "Ri").await;
    user(&ves, "max@example.com", "Max", "Ek").await;
    let mut b = browser(&relay);
    b.sign_in("lou@example.com", PASSWORD, false).await;
    let msisdn_of = |body: &str| {
        body.split("<dt>Mobile number</dt><dd>")
            .nth(1)
            .and_then(|s| s.split("</dd>").next())
            .expect("msisdn")
            .to_string()
    };
    let lou_msisdn = msisdn_of(&b.get("/").await.body);
    let activate = |msisdn: String| {
        let ves = &ves;
        async move {
            ves.post_json::<noc_protocol::rts::DeviceActivationResponse>(
                "/device/v1/activate",
                &serde_json::json!({"Msisdn": msisdn, "Password": PASSWORD, "DeviceName": "phone", "DeviceType": "test"}),
            )
            .await
            .expect("device activation")
        }
    };
    let act = activate(lou_msisdn).await;
    let mut online = online_device(&relay, &act).await;
    let mut other = browser(&relay);
    other.sign_in("max@example.com", PASSWORD, false).await;
    let max_device = activate(msisdn_of(&other.get("/").await.body)).await;

    assert!(other.get("/devices").await.body.contains("never connected"), "Max's device has not connected");
    // Max's device comes and goes: when it was last seen is written in a batch (about a
    // second); while connected the page says so instead.
    let max_online = online_device(&relay, &max_device).await;
    let connected = other.get("/devices").await.body;
    assert!(connected.contains("connected (") && !connected.contains("never connected"), "{connected}");
    drop(max_online);
    let mut seen = String::new();
    for _ in 0..50 {
        seen = other.get("/devices").await.body;
        if seen.contains("not connected") && seen.contains("last seen 20") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("last seen 20"), "{seen}");
    let page = b.get("/devices").await;
    assert_eq!(page.status, 200);
    assert_page_headers(&page);
    let id = act.device_id.to_string();
    assert!(page.body.contains(&format!("/devices/{id}/revoke")), "{}", page.body);
    assert!(page.body.contains("connected ("), "shown connected: {}", page.body);
    assert!(!page.body.contains(&max_device.device_id.to_string()), "only the user's own devices");
    let csrf = page.hidden("csrf").expect("csrf");

    let renamed = b.post(&format!("/devices/{id}/rename"), &[("csrf", &csrf), ("name", "Lou's <phone>")]).await;
    assert_eq!((renamed.status, renamed.header("location")), (303, Some("/devices?renamed=1")));
    let page = b.get("/devices?renamed=1").await;
    assert!(page.body.contains("Lou&#39;s &#60;phone&#62;"), "renamed, escaped: {}", page.body);
    let empty = b.post(&format!("/devices/{id}/rename"), &[("csrf", &csrf), ("name", " ")]).await;
    assert_eq!(empty.status, 400);
    assert!(empty.body.contains("A device name is 1 to 64 printable characters."));
    // Another user's device, or no device at all: not found, nothing changed.
    let foreign = format!("/devices/{}/revoke", max_device.device_id);
    assert_eq!(b.post(&foreign, &[("csrf", &csrf)]).await.status, 404);
    assert_eq!(b.post("/devices/not-a-device/revoke", &[("csrf", &csrf)]).await.status, 404);
    assert_eq!(b.post(&format!("/devices/{id}/revoke"), &[]).await.status, 403, "no CSRF token");

    let revoked = b.post(&format!("/devices/{id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!((revoked.status, revoked.header("location")), (303, Some("/devices?revoked=1")));
    expect_close(&mut online, CloseCode::Revoked).await;
    channel
        .wait_for(
            std::time::Duration::from_secs(5),
            |c| matches!(c, noc_protocol::rts::Command::DeviceRevoked { device_id, .. } if *device_id == act.device_id),
        )
        .await
        .expect("the VES is told");
    let page = b.get("/devices?revoked=1").await;
    assert!(!page.body.contains(&id) && page.body.contains("No device is activated"), "{}", page.body);
    // Max's device is untouched.
    assert!(other.get("/devices").await.body.contains(&max_device.device_id.to_string()));
}

/// A lost phone erased from the portal: a confirmation first, then the live session ends
/// with `wipe_pending`, the device's next authentication is answered WIPE, and its
/// WIPE_DONE is recorded and shown. A client that only speaks version 1 cannot erase
/// itself: it is refused, and the wipe waits for a client that can.
#[tokio::test]
async fn a_lost_device_is_wiped_when_it_next_connects() {
    use noc_protocol::CloseCode;
    use noc_protocol::device::Frame;
    use noc_test_support::Recv;
    use noc_test_support::scenario::{expect_close, online_device};
    let (relay, ves, mut channel) = relay_and_ves(|_| {}).await;
    user(&ves, "ida@example.com", "Ida", "Ro").await;
    let mut b = browser(&relay);
    b.sign_in("ida@example.com", PASSWORD, false).await;
    let home = b.get("/").await.body;
    let msisdn = home.split("<dt>Mobile number</dt><dd>").nth(1).and_then(|s| s.split("</dd>").next()).expect("msisdn");
    let act: noc_protocol::rts::DeviceActivationResponse = ves
        .post_json(
            "/device/v1/activate",
            &serde_json::json!({"Msisdn": msisdn, "Password": PASSWORD, "DeviceName": "lost phone"}),
        )
        .await
        .expect("device activation");
    let mut online = online_device(&relay, &act).await;
    let id = act.device_id.to_string();

    let list = b.get("/devices").await;
    assert!(list.body.contains(&format!("href=\"/devices/{id}/wipe\"")), "{}", list.body);
    let confirm = b.get(&format!("/devices/{id}/wipe")).await;
    assert_eq!(confirm.status, 200);
    assert_page_headers(&confirm);
    assert!(confirm.body.contains("Erase lost phone?"), "{}", confirm.body);
    let csrf = confirm.hidden("csrf").expect("csrf");
    let wipe = format!("/devices/{id}/wipe");

    // Not confirmed, no token, or not the user's device: refused, and the device still works.
    let unticked = b.post(&wipe, &[("csrf", &csrf)]).await;
    assert_eq!(unticked.status, 400);
    assert!(unticked.body.contains("Tick the box"), "{}", unticked.body);
    assert_eq!(b.post(&wipe, &[("confirm", "yes")]).await.status, 403);
    let other = format!("/devices/{}/wipe", noc_protocol::DeviceId::random());
    assert_eq!(b.post(&other, &[("csrf", &csrf), ("confirm", "yes")]).await.status, 404);
    assert!(matches!(online.recv_data(Duration::from_millis(300)).await, Recv::Timeout), "untouched");

    let done = b.post(&wipe, &[("csrf", &csrf), ("confirm", "yes")]).await;
    assert_eq!((done.status, done.header("location")), (303, Some("/devices?wipe=1")));
    expect_close(&mut online, CloseCode::WipePending).await;
    channel
        .wait_for(
            Duration::from_secs(5),
            |c| matches!(c, noc_protocol::rts::Command::DeviceRevoked { device_id, .. } if *device_id == act.device_id),
        )
        .await
        .expect("the VES stops addressing the device");
    let page = b.get("/devices?wipe=1").await;
    assert!(page.body.contains("erase pending") && !page.body.contains(&wipe), "{}", page.body);
    assert_eq!(b.get(&wipe).await.status, 404, "no second wipe");
    assert_eq!(b.post(&format!("/devices/{id}/revoke"), &[("csrf", &csrf)]).await.status, 404, "nor a revoke");

    // A version-1 client cannot be erased: refused, the wipe still pending.
    let mut old = relay.device_connection().await;
    match old.login_with(&[1], act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code: CloseCode::Revoked, message, .. }) => {
            assert!(message.contains("remote wipe"), "{message}")
        }
        other => panic!("expected CLOSE revoked, got {other:?}"),
    }
    assert!(b.get("/devices").await.body.contains("erase pending"));

    // The device reconnects: WIPE instead of AUTH_OK; it erases and says so.
    let mut device = relay.device_connection().await;
    match device.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Wipe) => {}
        other => panic!("expected WIPE, got {other:?}"),
    }
    device.send(Frame::WipeDone).await.expect("WIPE_DONE");
    assert_eq!(expect_close(&mut device, CloseCode::Revoked).await, "device wiped");
    let page = b.get("/devices").await;
    assert!(page.body.contains("confirmed it erased its data and credentials"), "{}", page.body);
    let audit = relay.admin().await.audit(20).await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"device.wipe_requested") && actions.contains(&"device.wipe_done"), "{actions:?}");

    // Its credential is dead now.
    let mut again = relay.device_connection().await;
    match again.login(act.device_id, &act.device_credential).await {
        Recv::Frame(Frame::Close { code: CloseCode::Revoked, message, .. }) => assert!(!message.contains("wipe")),
        other => panic!("expected CLOSE revoked, got {other:?}"),
    }
}

/// Every page text comes from the message catalogue: the browser's language where we
/// speak it, the user's own choice once made (on every page and every node, as it lives
/// in the store), English otherwise; error pages and form problems too.
#[tokio::test]
async fn pages_speak_the_browsers_language_or_the_users_choice() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "eva@example.com", "Eva", "Roth").await;
    let mut german = browser(&relay).speaking("de-AT, de;q=0.9, en;q=0.5");
    let signin = german.get("/login").await;
    assert!(
        signin.body.contains("<html lang=\"de\">") && signin.body.contains("Passwort vergessen?"),
        "{}",
        signin.body
    );
    let csrf = signin.hidden("csrf").expect("csrf");
    let wrong = german.post("/login", &[("csrf", &csrf), ("login", "eva@example.com"), ("password", "falsch")]).await;
    assert!(wrong.body.contains("Die Anmeldedaten sind nicht korrekt."), "{}", wrong.body);
    let refused = german.post("/login", &[("login", "eva@example.com"), ("password", "x")]).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("Anfrage abgelehnt"), "error pages too: {}", refused.body);
    let mut other = browser(&relay).speaking("fr-FR, it");
    assert!(other.get("/login").await.body.contains("<html lang=\"en\">"), "none of ours: English");

    // The user's choice wins over the browser's, and travels with the session.
    let mut b = browser(&relay);
    b.sign_in("eva@example.com", PASSWORD, false).await;
    let settings = b.get("/settings").await;
    assert!(settings.body.contains("<option value=\"de\" lang=\"de\">Deutsch</option>"), "{}", settings.body);
    let csrf = settings.hidden("csrf").expect("csrf");
    let form = |locale: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("first_name", "Eva".to_string()),
            ("last_name", "Roth".to_string()),
            ("time_zone", "Europe/Vienna".to_string()),
            ("locale", locale.to_string()),
        ]
    };
    async fn save(b: &mut noc_test_support::WebClient, f: Vec<(&'static str, String)>) -> noc_test_support::Page {
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        b.post("/settings", &refs).await
    }
    let unknown = save(&mut b, form("xx")).await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.body.contains("Choose a language from the list."), "{}", unknown.body);
    assert_eq!(save(&mut b, form("de")).await.status, 303);
    let page = b.get("/settings?saved=1").await;
    assert!(page.body.contains("<html lang=\"de\">") && page.body.contains("Ihre Einstellungen sind gespeichert."));
    assert!(page.body.contains("<option value=\"de\" lang=\"de\" selected>"), "{}", page.body);
    let home = b.get("/").await.body;
    assert!(home.contains("Wo Sie angemeldet sind") && home.contains(">Abmelden</button>"), "{home}");
    let bad_rule = save(&mut b, {
        let mut f = form("de");
        f.push(("rule_field", "body".into()));
        f.push(("rule_text", "x".into()));
        f
    })
    .await;
    assert!(bad_rule.body.contains("Eine Benachrichtigungsregel prüft Von, An oder Betreff."), "{}", bad_rule.body);
    let mut english_browser = b.on_node(relay.node.http_addr, &relay.cert_path()).speaking("en");
    assert!(english_browser.get("/devices").await.body.contains("Ihre Geräte"), "the choice beats the browser");
    // Back to the browser's language.
    assert_eq!(save(&mut b, form("")).await.status, 303);
    assert!(b.get("/").await.body.contains("Where you are signed in"));
}

/// The lock-out weapon of old (white paper §6.3.4: five wrong passwords lock the account)
/// replayed: a stranger tries the user's password on the device channel with random
/// device ids. The user's device token and the web sign-in from the user's own address
/// still work: waits slow the guesser, nothing locks the owner out.
#[tokio::test]
async fn the_lock_out_weapon_stops_neither_the_device_nor_the_web_sign_in() {
    use noc_protocol::CloseCode;
    use noc_protocol::device::Frame;
    use noc_test_support::Recv;
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    let act = noc_test_support::scenario::user_with_device(&ves, "ned@example.com", "+15550177").await;
    let mut refusals = Vec::new();
    for _ in 0..8 {
        let mut d = relay.device_connection().await;
        match d.login_password(noc_protocol::DeviceId::random(), "+15550177", "guess").await {
            Recv::Frame(Frame::Close { code, .. }) => refusals.push(code),
            other => panic!("expected a CLOSE, got {other:?}"),
        }
    }
    assert!(refusals.contains(&CloseCode::LockedOut), "the guesser is slowed down: {refusals:?}");
    // The device holding its token logs in.
    let mut device = relay.device_connection().await;
    assert!(matches!(device.login(act.device_id, &act.device_credential).await, Recv::Frame(Frame::AuthOk { .. })));
    // The owner signs in on the web, from their own address, by address and by number.
    let mut owner = browser(&relay).from_address("127.0.0.2".parse().expect("ip"));
    assert_eq!(owner.sign_in("ned@example.com", PASSWORD, false).await.status, 303);
    assert!(owner.get("/").await.body.contains("ned@example.com"));
    let mut owner_phone = browser(&relay).from_address("127.0.0.3".parse().expect("ip"));
    assert_eq!(owner_phone.sign_in("+15550177", PASSWORD, false).await.status, 303);
}

/// Password recovery through the relay's own mail: the same answer whether or not the
/// account exists, a link to the contact address that works once, the new password in
/// force and the other sessions ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_recovery_by_mail() {
    let smtp = noc_test_support::SmtpSink::start().expect("SMTP sink (python3 -m pip install aiosmtpd)");
    let port = smtp.port;
    let (relay, ves, _channel) = relay_and_ves(move |c| {
        c.mail.smtp_host = Some("127.0.0.1".into());
        c.mail.smtp_port = port;
        c.mail.smtp_security = serde_json::from_str("\"none\"").expect("security");
        c.mail.from = "NOC <noc@relay.example>".into();
    })
    .await;
    user(&ves, "ola@example.com", "Ola", "Berg").await;
    let mut elsewhere = browser(&relay);
    elsewhere.sign_in("ola@example.com", PASSWORD, false).await;
    // The contact address receives the link.
    let csrf = elsewhere.get("/settings").await.hidden("csrf").expect("csrf");
    let contact = [
        ("csrf", csrf.as_str()),
        ("first_name", "Ola"),
        ("last_name", "Berg"),
        ("time_zone", "Europe/Paris"),
        ("constant_sync", "1"),
        ("contact_email", "ola.home@example.org"),
    ];
    assert_eq!(elsewhere.post("/settings", &contact).await.status, 303);

    let mut b = browser(&relay);
    assert!(b.get("/login").await.body.contains("href=\"/recover\""));
    let form = b.get("/recover").await;
    assert_eq!(form.status, 200);
    assert_page_headers(&form);
    let token = b.cookies["__Host-noc_csrf"].clone();
    let known = b.post("/recover", &[("csrf", &token), ("login", "ola@example.com")]).await;
    let unknown = b.post("/recover", &[("csrf", &token), ("login", "nobody@example.com")]).await;
    assert_eq!((known.status, unknown.status), (200, 200));
    assert_eq!(known.body, unknown.body, "the same answer whether or not the account exists");
    assert_eq!(b.post("/recover", &[("login", "ola@example.com")]).await.status, 403, "no CSRF value");

    let mail = smtp
        .wait_for(std::time::Duration::from_secs(10), |m| m.rcpt_tos.contains(&"ola.home@example.org".to_string()))
        .await
        .expect("the recovery mail, to the contact address");
    assert_eq!(mail.mail_from, "noc@relay.example");
    let link = mail.data.split_whitespace().find(|w| w.contains("/recover/")).expect("a link").to_string();
    let path =
        link.split_once("://").and_then(|(_, rest)| rest.split_once('/')).map(|(_, p)| format!("/{p}")).expect("path");
    assert!(smtp.messages().iter().all(|m| !m.rcpt_tos.contains(&"nobody@example.com".to_string())));

    let page = b.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Choose a new password"));
    let csrf = b.cookies["__Host-noc_csrf"].clone();
    let differ = b.post(&path, &[("csrf", &csrf), ("new_password", "olas-new-pass"), ("confirm", "olas-other")]).await;
    assert_eq!((differ.status, differ.body.contains("The two new passwords differ.")), (400, true));
    let short = b.post(&path, &[("csrf", &csrf), ("new_password", "short"), ("confirm", "short")]).await;
    assert!(short.body.contains("Password must be 8 to 128 characters."), "{}", short.body);
    let done = b.post(&path, &[("csrf", &csrf), ("new_password", "olas-new-pass"), ("confirm", "olas-new-pass")]).await;
    assert_eq!(
        (done.status, done.header("location")),
        (303, Some("/login?recovered=1")),
        "a refused password did not spend the link"
    );
    let again =
        b.post(&path, &[("csrf", &csrf), ("new_password", "olas-third-pass"), ("confirm", "olas-third-pass")]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("expired or was used"), "the link works once");

    assert!(b.get("/login?recovered=1").await.body.contains("Your password is changed."));
    assert_eq!(b.sign_in("ola@example.com", PASSWORD, false).await.status, 401, "the old password is gone");
    assert_eq!(b.sign_in("ola@example.com", "olas-new-pass", false).await.status, 303);
    assert!(elsewhere.get("/").await.body.contains("Your session timed out"), "other sessions ended");
    let audit = relay.admin().await.audit(50).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "user.password_recovered"));
    assert!(audit.iter().all(|e| !e.detail.contains(path.trim_start_matches("/recover/"))), "no token in the audit");

    // One address cannot make the service mail at will: its requests are throttled like
    // password attempts, alike for known and unknown accounts; other addresses are not.
    let mut flood = browser(&relay).from_address("127.0.0.3".parse().expect("ip"));
    flood.get("/recover").await;
    let csrf = flood.cookies["__Host-noc_csrf"].clone();
    let mut statuses = Vec::new();
    for login in ["ola@example.com", "nobody@example.com"] {
        for _ in 0..7 {
            statuses.push(flood.post("/recover", &[("csrf", &csrf), ("login", login)]).await.status);
        }
        let last = flood.post("/recover", &[("csrf", &csrf), ("login", login)]).await;
        assert_eq!(last.status, 429, "{login}: {statuses:?}");
        assert!(last.header("retry-after").is_some() && last.body.contains("Too many attempts"));
    }
    let mut other = browser(&relay).from_address("127.0.0.4".parse().expect("ip"));
    other.get("/recover").await;
    let csrf = other.cookies["__Host-noc_csrf"].clone();
    assert_eq!(other.post("/recover", &[("csrf", &csrf), ("login", "ola@example.com")]).await.status, 200);
}

/// The secret-question route (white paper §9.2.2): off unless the license turns it on; the
/// user sets a question with the current password; recovery needs the login, the right
/// question and the answer (case and spacing aside), reads the same for every mismatch,
/// and shares the sign-in throttle of the login.
#[tokio::test]
async fn secret_question_recovery_only_where_the_license_allows_it() {
    let (relay, ves, _channel) = relay_and_ves(|_| {}).await;
    user(&ves, "una@example.com", "Una", "Lee").await;
    let mut b = browser(&relay);
    b.sign_in("una@example.com", PASSWORD, false).await;
    assert!(!b.get("/settings").await.body.contains("Secret question"), "not offered by default");
    assert_eq!(b.get("/settings/question").await.status, 404);

    let admin = relay.admin().await;
    admin.set_secret_question_recovery("acme", true).await.expect("feature on");
    let settings = b.get("/settings").await;
    assert!(settings.body.contains("You have no secret question."), "{}", settings.body);
    let form = b.get("/settings/question").await;
    assert_eq!(form.status, 200);
    assert_page_headers(&form);
    let csrf = form.hidden("csrf").expect("csrf");
    let set = |answer: &'static str, current: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("question", "first_pet".to_string()),
            ("answer", answer.into()),
            ("current", current.into()),
        ]
    };
    async fn post(b: &mut noc_test_support::WebClient, f: Vec<(&'static str, String)>) -> noc_test_support::Page {
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        b.post("/settings/question", &refs).await
    }
    assert_eq!(post(&mut b, set("Rex the Dog", "wrong-password")).await.status, 401);
    let short = post(&mut b, set("Rx", PASSWORD)).await;
    assert_eq!(short.status, 400);
    assert!(short.body.contains("The answer must be 3 to 100 characters long."), "{}", short.body);
    assert_eq!(
        b.post("/settings/question", &[("question", "first_pet"), ("answer", "x"), ("current", PASSWORD)]).await.status,
        403
    );
    let saved = post(&mut b, set("Rex the Dog", PASSWORD)).await;
    assert_eq!((saved.status, saved.header("location")), (303, Some("/settings?question=1")));
    assert!(b.get("/settings?question=1").await.body.contains("Your question: What was the name of your first pet?"));
    let csrf = b.get("/").await.hidden("csrf").expect("csrf");
    b.post("/logout", &[("csrf", &csrf)]).await;

    // Recovery: every mismatch reads alike.
    let mut r = browser(&relay);
    let page = r.get("/recover").await;
    assert!(
        page.body.contains("href=\"/recover/question\"") && !page.body.contains("name=\"login\""),
        "no mail: {}",
        page.body
    );
    let q = r.get("/recover/question").await;
    assert_eq!(q.status, 200);
    let csrf = q.hidden("csrf").expect("csrf");
    let attempt = |login: &'static str, question: &'static str, answer: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("login", login.to_string()),
            ("question", question.to_string()),
            ("answer", answer.to_string()),
        ]
    };
    async fn recover(b: &mut noc_test_support::WebClient, f: Vec<(&'static str, String)>) -> noc_test_support::Page {
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        b.post("/recover/question", &refs).await
    }
    let error_of =
        |body: &str| body.split("role=\"alert\">").nth(1).and_then(|s| s.split("</p>").next()).map(str::to_string);
    let wrong = recover(&mut r, attempt("una@example.com", "first_pet", "Felix")).await;
    let other_question = recover(&mut r, attempt("una@example.com", "birth_city", "rex the dog")).await;
    let unknown = recover(&mut r, attempt("nobody@example.com", "first_pet", "rex the dog")).await;
    assert_eq!((wrong.status, other_question.status, unknown.status), (401, 401, 401));
    assert!(error_of(&wrong.body).is_some());
    assert_eq!(error_of(&wrong.body), error_of(&other_question.body));
    assert_eq!(error_of(&wrong.body), error_of(&unknown.body));

    // The right one, typed loosely: a one-time link to the new-password form.
    let right = recover(&mut r, attempt("una@example.com", "first_pet", "  REX  the dog ")).await;
    assert_eq!(right.status, 303);
    let path = right.header("location").expect("location").to_string();
    assert!(path.starts_with("/recover/") && path.len() > "/recover/".len() + 32, "{path}");
    let csrf = r.get(&path).await.hidden("csrf").expect("reset form");
    let done = r.post(&path, &[("csrf", &csrf), ("new_password", "unas-new-pass"), ("confirm", "unas-new-pass")]).await;
    assert_eq!(done.header("location"), Some("/login?recovered=1"));
    assert_eq!(r.sign_in("una@example.com", "unas-new-pass", false).await.status, 303);

    // Turned off for the license: the right answer no longer works.
    admin.set_secret_question_recovery("acme", false).await.expect("feature off");
    let mut s = browser(&relay);
    let csrf = s.get("/recover/question").await.hidden("csrf").expect("csrf");
    let attempt = |answer: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("login", "una@example.com".to_string()),
            ("question", "first_pet".to_string()),
            ("answer", answer.to_string()),
        ]
    };
    assert_eq!(recover(&mut s, attempt("rex the dog")).await.status, 401);

    // Wrong answers count against the login's sign-in throttle from that address.
    let mut last = 0;
    for _ in 0..6 {
        last = recover(&mut s, attempt("not it")).await.status;
    }
    assert_eq!(last, 429);
    assert_eq!(s.sign_in("una@example.com", "unas-new-pass", false).await.status, 429, "one budget with the sign-in");
    let audit = admin.audit(50).await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for action in ["license.secret_question_recovery", "user.secret_question_set", "user.recovery_by_question"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    assert!(audit.iter().all(|e| !e.detail.to_lowercase().contains("rex")), "no answer in the audit");
}

/// Without an SMTP server there is no recovery by mail, and the sign-in page offers none.
#[tokio::test]
async fn no_recovery_mail_without_an_smtp_server() {
    let (relay, _ves, _channel) = relay_and_ves(|_| {}).await;
    let mut b = browser(&relay);
    let page = b.get("/recover").await;
    assert!(page.status == 200 && !page.body.contains("action=\"/recover\""), "no mail form: {}", page.body);
    let csrf = b.cookies["__Host-noc_csrf"].clone();
    assert_eq!(b.post("/recover", &[("csrf", &csrf), ("login", "x@example.com")]).await.status, 404);
}
