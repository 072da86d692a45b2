//! The operators' console over HTTP, as a browser and as an attacker meet it: sign-in
//! with password and authenticator code, the cookie and its flags, CSRF on every form,
//! security headers, pages by role, an administrator enrolling a CSR (QR code and
//! recovery codes shown once) who then signs in, and signing out on the server.

use noc_storage::model::OperatorRole;
use noc_storage::totp;
use noc_test_support::{Page, TestOperator, TestRelay, WebClient};

fn console(relay: &TestRelay) -> WebClient {
    WebClient::new(relay.node.console_addr, &relay.cert_path())
}

async fn sign_in(b: &mut WebClient, name: &str, password: &str, code: &str) -> Page {
    let form = b.get("/console/login").await;
    let csrf = form.hidden("csrf").expect("csrf field");
    b.post("/console/login", &[("csrf", &csrf), ("name", name), ("password", password), ("code", code)]).await
}

fn assert_secure(page: &Page) {
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
}

#[tokio::test]
async fn operators_sign_in_with_a_second_factor_and_see_what_their_role_opens() {
    let relay = TestRelay::start();
    let admin = relay.admin().await;
    let root = TestOperator::create(&admin, "root", OperatorRole::NocAdmin).await;
    let audra = TestOperator::create(&admin, "audra", OperatorRole::Auditor).await;
    let mut b = console(&relay);

    let anonymous = b.get("/console/").await;
    assert_eq!((anonymous.status, anonymous.header("location")), (303, Some("/console/login")));
    let form = b.get("/console/login").await;
    assert_eq!(form.status, 200);
    assert_secure(&form);
    let csrf_cookie =
        form.set_cookies().into_iter().find(|c| c.starts_with("__Host-noc_console_csrf=")).expect("cookie");
    assert!(csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("Secure"), "{csrf_cookie}");

    // The right password with a wrong code is refused like a wrong password.
    let wrong = sign_in(&mut b, "root", &root.password, "000000x").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong name, password or code."));
    let bad_password = sign_in(&mut b, "root", "not-the-password", &root.code()).await;
    assert_eq!(bad_password.status, 401);
    // Without the form's own CSRF value: refused before any password is checked.
    let _ = b.get("/console/login").await;
    let forged = b
        .post(
            "/console/login",
            &[("csrf", "00"), ("name", "root"), ("password", &root.password), ("code", &root.code())],
        )
        .await;
    assert_eq!(forged.status, 403);

    let signed_in = sign_in(&mut b, "root", &root.password, &root.code()).await;
    assert_eq!((signed_in.status, signed_in.header("location")), (303, Some("/console/licenses")));
    let cookie = signed_in
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-noc_console="))
        .expect("session cookie")
        .to_string();
    for flag in ["Secure", "HttpOnly", "Path=/", "SameSite=Strict"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let licenses = b.get("/console/licenses").await;
    assert_eq!(licenses.status, 200);
    assert_secure(&licenses);
    assert!(
        licenses.body.contains("No license yet.") && licenses.body.contains("root · noc-admin"),
        "{}",
        licenses.body
    );

    // Forms need the sign-in's CSRF value.
    let csrf = licenses.hidden("csrf").expect("csrf");
    let create = [("name", "acme <b>&</b>"), ("password", "license-password-1"), ("max_users", "25")];
    let forged = b.post("/console/licenses", &[&[("csrf", "ab".repeat(32).as_str())][..], &create[..]].concat()).await;
    assert_eq!(forged.status, 403);
    let from_elsewhere = b
        .post_from(
            "/console/licenses",
            &[&[("csrf", csrf.as_str())][..], &create[..]].concat(),
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(from_elsewhere.status, 403);
    let created = b.post("/console/licenses", &[&[("csrf", csrf.as_str())][..], &create[..]].concat()).await;
    assert_eq!((created.status, created.header("location")), (303, Some("/console/licenses")));
    let listed = b.get("/console/licenses").await;
    assert!(
        listed.body.contains("acme &#60;b&#62;&#38;&#60;/b&#62;") && listed.body.contains("0 / 25"),
        "escaped: {}",
        listed.body
    );

    let start = listed.body.find("href=\"/console/licenses/").expect("a license link") + "href=\"".len();
    let link = &listed.body[start..start + listed.body[start..].find('"').expect("end")];
    let detail = b.get(link).await;
    assert_eq!(detail.status, 200);
    assert!(
        detail.body.contains("No enterprise server has registered") && detail.body.contains("NOC administrators"),
        "{}",
        detail.body
    );

    // The audit page shows the creation; its CSV has it too.
    let audit = b.get("/console/audit?action=license.").await;
    assert!(audit.body.contains("license.create") && audit.body.contains("operator:root"), "{}", audit.body);
    let csv = b.get("/console/audit.csv?action=license.").await;
    assert!(
        csv.header("content-type").is_some_and(|c| c.starts_with("text/csv")) && csv.body.contains("license.create")
    );

    // The MSISDN list: a pasted CSV is approved whole, or not at all.
    let list = b.get("/console/msisdns").await;
    assert_eq!(list.status, 200);
    let csrf = list.hidden("csrf").expect("csrf");
    let refused = b.post("/console/msisdns", &[("csrf", &csrf), ("numbers", "+15550001\n12ab")]).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("line(s) 2"), "{}", refused.body);
    let approved = b.post("/console/msisdns", &[("csrf", &csrf), ("numbers", "msisdn\n+15550001\n+15550002\n")]).await;
    assert_eq!(approved.header("location"), Some("/console/msisdns?done=approved:2"));
    let listed = b.get("/console/msisdns?done=approved:2").await;
    assert!(listed.body.contains("2 number(s) approved.") && listed.body.contains("+15550002"), "{}", listed.body);
    let revoked = b.post("/console/msisdns/revoke", &[("csrf", &csrf), ("msisdn", "+15550002")]).await;
    assert_eq!(revoked.status, 303);
    assert!(!b.get("/console/msisdns").await.body.contains("+15550002"));

    // An administrator enrols a CSR: the QR code, the key and the recovery codes, once.
    let operators = b.get("/console/operators").await;
    let csrf = operators.hidden("csrf").expect("csrf");
    let enrolled = b
        .post(
            "/console/operators",
            &[("csrf", &csrf), ("name", "carol"), ("role", "csr"), ("password", "carol-operator-password")],
        )
        .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.body);
    assert!(enrolled.body.contains("<svg") && !enrolled.body.contains("<script"), "QR code inline");
    let key_start = enrolled.body.find("id=\"totp-secret\">").expect("key") + "id=\"totp-secret\">".len();
    let key = &enrolled.body[key_start..key_start + enrolled.body[key_start..].find('<').expect("end")];
    let secret = base32_decode(key);
    let now = u64::try_from(noc_protocol::clock::unix_ms_i64() / 1000).expect("time");
    let code = format!("{:06}", totp::hotp(&secret, totp::step(now)));
    let mut carol = console(&relay);
    let in_as_carol = sign_in(&mut carol, "carol", "carol-operator-password", &code).await;
    assert_eq!(in_as_carol.status, 303, "{}", in_as_carol.body);
    let page = carol.get("/console/licenses").await;
    assert!(page.body.contains("No license yet."), "carol sees none of root's licenses: {}", page.body);
    assert_eq!(carol.get("/console/operators").await.status, 403);
    assert_eq!(carol.get("/console/msisdns").await.status, 403);

    // The administrator gives the license into carol's care; she sees it from then on.
    let detail = b.get(link).await;
    let csrf = detail.hidden("csrf").expect("csrf");
    assert!(detail.body.contains("<option value=\"carol\">"), "{}", detail.body);
    let granted = b.post(&format!("{link}/grant"), &[("csrf", &csrf), ("operator", "carol")]).await;
    assert_eq!(granted.status, 303);
    assert!(b.get(link).await.body.contains("<dd>carol</dd>"));
    assert!(carol.get("/console/licenses").await.body.contains("0 / 25"), "carol's now");

    // The license's features: unticked boxes are taken away, the administrator's address
    // is kept, and the change is in the audit log by feature name.
    let detail = b.get(link).await;
    assert!(detail.body.contains("name=\"browse_wap\" value=\"on\" checked"), "{}", detail.body);
    let csrf = detail.hidden("csrf").expect("csrf");
    let features =
        [("csrf", csrf.as_str()), ("browse_pc", "on"), ("constant_sync", "on"), ("admin_email", "IT@acme.example")];
    let saved = b.post(&format!("{link}/features"), &features).await;
    assert_eq!((saved.status, saved.header("location")), (303, Some(link)), "{}", saved.body);
    let detail = b.get(link).await;
    assert!(
        detail.body.contains("name=\"browse_pc\" value=\"on\" checked")
            && detail.body.contains("name=\"browse_wap\" value=\"on\">")
            && detail.body.contains("<dd>it@acme.example</dd>"),
        "{}",
        detail.body
    );
    let bad = [("csrf", csrf.as_str()), ("alerts", "on"), ("admin_email", "no address")];
    assert_eq!(b.post(&format!("{link}/features"), &bad).await.status, 400);
    let audit = b.get("/console/audit?action=license.change").await;
    assert!(audit.body.contains("browse_pc,constant_sync"), "{}", audit.body);

    // Device authentication: ticked, the license's devices must use client certificates.
    let detail = b.get(link).await;
    assert!(detail.body.contains("name=\"require_client_certificates\" value=\"on\">"), "{}", detail.body);
    let csrf = detail.hidden("csrf").expect("csrf");
    let saved =
        b.post(&format!("{link}/devices"), &[("csrf", csrf.as_str()), ("require_client_certificates", "on")]).await;
    assert_eq!((saved.status, saved.header("location")), (303, Some(link)), "{}", saved.body);
    assert!(b.get(link).await.body.contains("name=\"require_client_certificates\" value=\"on\" checked"));
    let cleared = b.post(&format!("{link}/devices"), &[("csrf", csrf.as_str())]).await;
    assert_eq!(cleared.status, 303);
    assert!(b.get(link).await.body.contains("name=\"require_client_certificates\" value=\"on\">"));
    assert_eq!(b.post(&format!("{link}/devices"), &[("csrf", "forged")]).await.status, 403);
    let audit = b.get("/console/audit?action=license.change").await;
    assert!(audit.body.contains("require_client_certificates"), "{}", audit.body);

    // The auditor lands on the audit log and reaches nothing else.
    let mut a = console(&relay);
    let in_as_audra = sign_in(&mut a, "audra", &audra.password, &audra.code()).await;
    assert_eq!(in_as_audra.header("location"), Some("/console/audit"));
    assert_eq!(a.get("/console/audit").await.status, 200);
    assert_eq!(a.get("/console/licenses").await.status, 403);
    assert_eq!(a.get("/console/users").await.status, 403);

    // Signing out ends the sign-in on the server, not only in this browser.
    let page = b.get("/console/licenses").await;
    let csrf = page.hidden("csrf").expect("csrf");
    let token = cookie.split(';').next().and_then(|c| c.split_once('=')).map(|(_, v)| v.to_string()).expect("token");
    let out = b.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.header("location")), (303, Some("/console/login")));
    let mut replay = console(&relay);
    replay.cookies.insert("__Host-noc_console".into(), token);
    let old = replay.get("/console/licenses").await;
    assert_eq!((old.status, old.header("location")), (303, Some("/console/login")), "the old cookie is dead");
}

/// RFC 4648 base32 without padding, as authenticator apps read the key.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim().bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase()).expect("base32") as u32;
        value = (value << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    out
}
