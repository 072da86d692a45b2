//! The public HTTPS listener as a hostile or careless client meets it: the headers of every
//! answer, error messages that say what is wrong without the parser's internals, and
//! request bodies that are too large or too slow, which end their connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use noc_test_support::TestRelay;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn http_client(relay: &TestRelay) -> reqwest::Client {
    let tls = noc_test_support::client_config(&relay.cert_path(), &[b"http/1.1"]).expect("tls");
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve("localhost", relay.node.http_addr)
        .build()
        .expect("client")
}

fn url(relay: &TestRelay, path: &str) -> String {
    format!("https://localhost:{}{path}", relay.node.http_addr.port())
}

/// A raw TLS connection to the public listener, for requests no HTTP library would send.
async fn raw(relay: &TestRelay) -> TlsStream<TcpStream> {
    let tls = noc_test_support::client_config(&relay.cert_path(), &[b"http/1.1"]).expect("tls");
    let tcp = TcpStream::connect(relay.node.http_addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.expect("TLS handshake")
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent
/// and whether it closed.
async fn read_until_closed(conn: &mut TlsStream<TcpStream>, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let relay = TestRelay::start();
    relay.create_license("acme", "acme-license-pw", 1).await;
    let http = http_client(&relay);
    let ok = http
        .post(url(&relay, "/rts/v1/license"))
        .body(r#"{"Name":"acme","Password":"acme-license-pw"}"#)
        .send()
        .await
        .expect("license");
    let refused = http.post(url(&relay, "/rts/v1/license")).body("{}").send().await.expect("bad request");
    let unknown = http.get(url(&relay, "/nothing/here")).send().await.expect("404");
    for (what, resp) in [("license token", &ok), ("400", &refused), ("404", &unknown)] {
        let h = resp.headers();
        assert_eq!(h.get("cache-control").map(|v| v.as_bytes()), Some(&b"no-store"[..]), "{what}");
        assert_eq!(h.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]), "{what}");
        let hsts = h.get("strict-transport-security").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(hsts.starts_with("max-age="), "{what}: {hsts:?}");
    }
    assert_eq!((ok.status().as_u16(), refused.status().as_u16(), unknown.status().as_u16()), (200, 400, 404));
}

#[tokio::test]
async fn a_known_path_with_another_method_is_not_found() {
    let relay = TestRelay::start();
    let http = http_client(&relay);
    for (method, path) in [("GET", "/rts/v1/data"), ("PUT", "/rts/v1/event/abc"), ("POST", "/rts/v1/connect")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = http.request(method.clone(), url(&relay, path)).body("{}").send().await.expect("answer");
        assert_eq!(resp.status().as_u16(), 404, "{method} {path}");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["Error"]["Code"], "not_found", "{method} {path}");
    }
}

#[tokio::test]
async fn bad_bodies_are_named_without_the_parsers_words() {
    let relay = TestRelay::start();
    let http = http_client(&relay);
    for (body, want) in [
        (r#"{"Name":"acme"}"#, "missing field `Password`"),
        (r#"{"Name":7,"Password":"x"}"#, "invalid value at `Name`"),
        ("{\"Name\": ", "request body is not valid JSON"),
    ] {
        let resp = http.post(url(&relay, "/rts/v1/license")).body(body).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 400);
        let text = resp.text().await.expect("body");
        let reply = noc_protocol::rts::ErrorReply::parse(text.as_bytes());
        assert_eq!((reply.code_text.as_str(), reply.message.as_str()), ("bad_request", want), "{body}");
    }
    // 500 000 levels of nesting, and an unknown request type: refused, nothing echoed.
    let deep = format!(r#"{{"Type":"Frames","Frames":{}{}}}"#, "[".repeat(500_000), "]".repeat(500_000));
    for body in [deep, r#"{"Type":"Nope"}"#.to_string()] {
        let resp = http
            .post(url(&relay, "/rts/v1/data"))
            .header("X-Rts-Key-Id", "0".repeat(32))
            .header("X-Rts-Key", "0".repeat(32))
            .body(body)
            .send()
            .await
            .expect("request");
        // The session check comes first: an unknown session is all a stranger learns.
        assert_eq!(resp.status().as_u16(), 401);
    }
}

#[tokio::test]
async fn a_body_trickled_past_its_deadline_ends_its_connection() {
    let relay = TestRelay::start_with(|c| c.rts.body_timeout_seconds = 1);
    let mut conn = raw(&relay).await;
    conn.write_all(b"POST /rts/v1/license HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
        .await
        .expect("headers");
    conn.flush().await.expect("flush");
    let started = Instant::now();
    // One more byte every 300 ms: never a whole body, never silent for long.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if conn.write_all(b"1\r\n \r\n").await.is_err() || conn.flush().await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), trickle).await;
    let (answer, closed) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("not received in time"), "{answer}");
    assert!(closed, "the connection is closed after the refusal: {answer}");
    assert!(started.elapsed() < Duration::from_secs(1 + 5), "closed within the deadline + 5 s");
}

/// Sends an endless chunked body to `path` and returns how long the relay kept taking it
/// and what it answered.
async fn endless_chunked_body(relay: &TestRelay, path: &str) -> (Duration, String) {
    let mut conn = raw(relay).await;
    let head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    conn.write_all(head.as_bytes()).await.expect("headers");
    let chunk = format!("1000\r\n{}\r\n", "x".repeat(4096));
    let started = Instant::now();
    let writes = async {
        loop {
            if conn.write_all(chunk.as_bytes()).await.is_err() || conn.flush().await.is_err() {
                return;
            }
        }
    };
    let cut = tokio::time::timeout(Duration::from_secs(10), writes).await;
    assert!(cut.is_ok(), "the relay kept reading a body it had refused for 10 s");
    let took = started.elapsed();
    let (answer, _) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    (took, answer)
}

/// Past 1 KiB the relay answers 413 and hangs up after at most its short linger (what the
/// client sent meanwhile is discarded for a second, so the answer is not lost to a reset),
/// however much more the client has to send.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_not_read_further() {
    let relay = TestRelay::start_with(|c| c.rts.max_body_bytes = 1024);
    let (took, answer) = endless_chunked_body(&relay, "/rts/v1/license").await;
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// A request refused before its body is read (no session) does not make the relay read
/// the body afterwards either.
#[tokio::test]
async fn a_body_left_unread_by_a_refusal_is_not_drained() {
    let relay = TestRelay::start();
    let (took, answer) = endless_chunked_body(&relay, "/rts/v1/data").await;
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 401"), "{answer}");
}

/// Idle sockets (TCP open, no TLS ClientHello) from several addresses must not hold the
/// listener: each source gets a bounded number of handshakes, the node many, and a real
/// client from another address is served at once.
#[tokio::test]
async fn a_flood_of_idle_sockets_does_not_starve_a_real_client() {
    let relay = TestRelay::start();
    let mut idle = Vec::new();
    for source in 2..=9u8 {
        for _ in 0..200 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(std::net::SocketAddr::from(([127, 0, 0, source], 0))).expect("bind a loopback source");
            if let Ok(tcp) = socket.connect(relay.node.http_addr).await {
                idle.push(tcp);
            }
        }
    }
    assert!(idle.len() >= 1500, "{} idle sockets", idle.len());
    let started = Instant::now();
    let resp =
        tokio::time::timeout(Duration::from_secs(10), http_client(&relay).get(url(&relay, "/rts/v1/connect")).send())
            .await
            .expect("served while the idle sockets are open")
            .expect("connect parameters");
    assert_eq!(resp.status().as_u16(), 200);
    eprintln!("served after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "served after {:?}", started.elapsed());
    // Each source got its share of handshakes; the rest were closed at once.
    assert!(relay.metric("noc_http_connections_rejected_total", &[("reason", "source_handshakes")]) > 0.0);
    drop(idle);
}
