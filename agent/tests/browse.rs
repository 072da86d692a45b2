//! Browse access end to end: a signed-in user's pages on the relay, answered by the real
//! agent from a real Maildir, calendar and contacts files; mail sent from a page leaves
//! through the test SMTP server; another user's message cannot be reached by changing an
//! id in the URL; a mail with `<script>` in subject and body is shown escaped.

mod common;

use common::*;
use noc_test_support::WebClient;

/// A user added through the agent and activated (no device needed to browse).
/// A WML deck: its media type, and valid against the WML 1.1 DTD of the test data.
fn assert_wml(deck: &noc_test_support::Page) {
    assert_eq!(deck.header("content-type"), Some("text/vnd.wap.wml; charset=utf-8"), "{}", deck.body);
    let dtd = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/tests/data/wml11.dtd");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &deck.body).expect("write deck");
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--dtdvalid"])
        .arg(&dtd)
        .arg(file.path())
        .output()
        .expect("xmllint (Debian libxml2-utils)");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), deck.body);
}

async fn signed_in(world: &World, email: &str) -> WebClient {
    let relay = world.relay();
    let mut web = WebClient::new(relay.node.http_addr, &relay.cert_path());
    assert_eq!(web.sign_in(email, USER_PW, false).await.status, 303);
    web
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_and_sends_mail_and_sees_calendar_and_contacts_from_a_browser() {
    let world = World::start(|_| {}, Options::default()).await;
    world.activated_user("ann@corp.example", "+15550201").await;
    world.activated_user("bob@corp.example", "+15550202").await;
    world.drop_mail(
        "ann@corp.example",
        "1700000200.M1P1.corp",
        "<script>alert(1)</script> Plan",
        "<script>alert(2)</script> see you",
    );
    world.drop_mail("bob@corp.example", "1700000300.M1P1.corp", "for bob only", "secret plans");
    let calendar = path_in(&world, "calendar").join("ann@corp.example");
    std::fs::create_dir_all(&calendar).expect("calendar dir");
    std::fs::write(
        calendar.join("board.ics"),
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:b1\r\nSUMMARY:Board meeting\r\nDTSTART:20261204T090000Z\r\nDTEND:20261204T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .expect("ics");
    // Weekly on Fridays from the week before: its second occurrence is on the day shown.
    std::fs::write(
        calendar.join("lunch.ics"),
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:l1\r\nSUMMARY:Lunch club\r\nDTSTART:20261127T120000Z\r\nDTEND:20261127T130000Z\r\nRRULE:FREQ=WEEKLY;COUNT=4\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .expect("ics");
    let contacts = path_in(&world, "contacts").join("ann@corp.example");
    std::fs::create_dir_all(&contacts).expect("contacts dir");
    std::fs::write(
        contacts.join("carl.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Carl Berg\r\nEMAIL:carl@partner.example\r\nEND:VCARD\r\n",
    )
    .expect("vcf");

    let mut web = signed_in(&world, "ann@corp.example").await;
    let inbox = web.get("/mail/INBOX").await;
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    assert!(inbox.body.contains("&#60;script&#62;alert(1)&#60;/script&#62; Plan"), "escaped: {}", inbox.body);
    assert!(!inbox.body.contains("<script>") && !inbox.body.contains("for bob only"), "{}", inbox.body);
    let message = web.get("/mail/INBOX/1700000200.M1P1.corp").await;
    assert_eq!(message.status, 200, "{}", message.body);
    assert!(message.body.contains("&#60;script&#62;alert(2)&#60;/script&#62; see you"), "{}", message.body);
    assert_eq!(message.header("cache-control"), Some("no-store"));

    // Bob's message id in ann's URL: nothing (the agent looks in ann's Maildir only).
    let foreign = web.get("/mail/INBOX/1700000300.M1P1.corp").await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    assert!(!foreign.body.contains("secret plans"));

    // A reply: prefilled, sent through the agent's SMTP server, kept in Sent.
    let compose = web.get("/mail/compose?mode=reply&folder=INBOX&id=1700000200.M1P1.corp").await;
    assert_eq!(compose.status, 200, "{}", compose.body);
    assert!(compose.body.contains("alice@partner.example"), "{}", compose.body);
    let csrf = compose.hidden("csrf").expect("csrf");
    let sent = web
        .post(
            "/mail/compose",
            &[
                ("csrf", &csrf),
                ("mode", "reply"),
                ("folder", "INBOX"),
                ("id", "1700000200.M1P1.corp"),
                ("to", "Alice <alice@partner.example>"),
                ("cc", ""),
                ("subject", "Re: Plan"),
                ("body", "Sounds good."),
            ],
        )
        .await;
    assert_eq!((sent.status, sent.header("location")), (303, Some("/mail/INBOX?done=sent")), "{}", sent.body);
    let mail = world
        .smtp
        .wait_for(T, |m| m.rcpt_tos.iter().any(|r| r == "alice@partner.example"))
        .await
        .expect("the reply reached the SMTP server");
    assert_eq!(mail.mail_from, "ann@corp.example");
    assert!(mail.data.contains("In-Reply-To: <1700000200.M1P1.corp@partner.example>"), "{}", mail.data);
    assert!(mail.data.contains("Sounds good."), "{}", mail.data);
    let sent_folder = web.get("/mail/Sent").await;
    assert!(sent_folder.status == 200 && sent_folder.body.contains("Re: Plan"), "{}", sent_folder.body);
    let refused =
        web.post("/mail/compose", &[("csrf", &csrf), ("to", "not an address"), ("subject", "x"), ("body", "y")]).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("not an e-mail address"), "{}", refused.body);

    // The calendar day and the contacts.
    let day = web.get("/calendar?day=2026-12-04").await;
    assert!(
        day.status == 200 && day.body.contains("Board meeting") && day.body.contains("10:00–11:00"),
        "{}",
        day.body
    );
    assert!(day.body.contains("Lunch club"), "the recurring event's second occurrence: {}", day.body);
    assert!(!web.get("/calendar?day=2026-12-05").await.body.contains("Lunch club"), "weekly, not daily");
    let found = web.get("/contacts?q=carl").await;
    assert!(found.status == 200 && found.body.contains("Carl Berg"), "{}", found.body);
    let csrf = found.hidden("csrf").expect("csrf");
    let added = web
        .post(
            "/contacts",
            &[
                ("csrf", &csrf),
                ("name", "Dana <b>Wu</b>"),
                ("email", "dana@x.example"),
                ("phone", ""),
                ("organization", ""),
            ],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.body);
    let shown = web.get(added.header("location").expect("location")).await;
    assert!(
        shown.body.contains("Dana &#60;b&#62;Wu&#60;/b&#62;") && shown.body.contains("dana@x.example"),
        "{}",
        shown.body
    );

    // The PDA pages, from their own sign-in: the same mail on a small page, no image, frame,
    // script or stylesheet; the escaped subject and body as on the PC.
    let relay = world.relay();
    let mut pda = WebClient::new(relay.node.http_addr, &relay.cert_path());
    let form = pda.get("/pda").await;
    let csrf = form.hidden("csrf").expect("csrf");
    let signed = pda.post("/pda/login", &[("csrf", &csrf), ("login", "ann@corp.example"), ("password", USER_PW)]).await;
    assert_eq!((signed.status, signed.header("location")), (303, Some("/pda/mail")), "{}", signed.body);
    for path in [
        "/pda/mail",
        "/pda/mail/INBOX",
        "/pda/mail/INBOX/1700000200.M1P1.corp",
        "/pda/calendar?day=2026-12-04",
        "/pda/contacts",
    ] {
        let page = pda.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        for tag in ["<img", "<iframe", "<frame", "<script", "<link", "<style", "style="] {
            assert!(!page.body.to_ascii_lowercase().contains(tag), "{path} has {tag}: {}", page.body);
        }
    }
    let m = pda.get("/pda/mail/INBOX/1700000200.M1P1.corp").await;
    assert!(m.body.contains("&#60;script&#62;alert(2)&#60;/script&#62; see you"), "{}", m.body);
    assert!(pda.get("/pda/calendar?day=2026-12-04").await.body.contains("Board meeting"));

    // The WAP decks: WML 1.1 from their own sign-in, each valid against the WML 1.1 DTD
    // (xmllint), data escaped for WML, errors as decks too.
    let mut wap = WebClient::new(relay.node.http_addr, &relay.cert_path());
    let deck = wap.get("/wap").await;
    assert_wml(&deck);
    let csrf = deck.hidden("csrf").expect("csrf postfield");
    let signed = wap.post("/wap/login", &[("csrf", &csrf), ("login", "ann@corp.example"), ("password", USER_PW)]).await;
    assert_eq!((signed.status, signed.header("location")), (303, Some("/wap/mail")), "{}", signed.body);
    for path in [
        "/wap/mail",
        "/wap/mail/INBOX",
        "/wap/mail/INBOX/1700000200.M1P1.corp",
        "/wap/compose?folder=INBOX&id=1700000200.M1P1.corp",
        "/wap/calendar?day=2026-12-04",
        "/wap/contacts?q=carl",
        "/wap/contacts/carl",
    ] {
        let deck = wap.get(path).await;
        assert_eq!(deck.status, 200, "{path}: {}", deck.body);
        assert_wml(&deck);
    }
    let m = wap.get("/wap/mail/INBOX/1700000200.M1P1.corp").await;
    assert!(m.body.contains("&lt;script&gt;alert(2)&lt;/script&gt; see you"), "{}", m.body);
    let missing = wap.get("/wap/mail/INBOX/no-such-message").await;
    assert_eq!(missing.status, 404);
    assert_wml(&missing);

    // Deleted: into the trash.
    let message = web.get("/mail/INBOX/1700000200.M1P1.corp").await;
    let csrf = message.hidden("csrf").expect("csrf");
    let deleted = web.post("/mail/INBOX/1700000200.M1P1.corp/delete", &[("csrf", &csrf)]).await;
    assert_eq!(deleted.header("location"), Some("/mail/INBOX?done=deleted"));
    assert!(web.get("/mail/Trash").await.body.contains("Plan"));
}

/// A message larger than the relay takes in one data-channel request: the agent's answer
/// is refused `413`, the agent says `too_large` instead, and the page tells the user at
/// once, long before the browse deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_relay_is_refused_at_once() {
    let world = World::start(
        |c| {
            c.rts.max_body_bytes = 64 * 1024;
            c.web.browse_timeout_seconds = 60;
        },
        Options::default(),
    )
    .await;
    world.activated_user("ann@corp.example", "+15550201").await;
    world.drop_mail("ann@corp.example", "1700000400.M1P1.corp", "the big one", &"0123456789abcdef\r\n".repeat(6_000));
    world.drop_mail("ann@corp.example", "1700000401.M1P1.corp", "a small one", "short");
    let mut web = signed_in(&world, "ann@corp.example").await;
    let inbox = web.get("/mail/INBOX").await;
    assert!(inbox.status == 200 && inbox.body.contains("the big one"), "{}", inbox.body);

    let asked = std::time::Instant::now();
    let big = web.get("/mail/INBOX/1700000400.M1P1.corp").await;
    assert_eq!(big.status, 502, "{}", big.body);
    assert!(big.body.contains("too large to show"), "{}", big.body);
    assert!(asked.elapsed() < std::time::Duration::from_secs(20), "answered after {:?}", asked.elapsed());
    let small = web.get("/mail/INBOX/1700000401.M1P1.corp").await;
    assert!(small.status == 200 && small.body.contains("short"), "{}", small.body);
}
