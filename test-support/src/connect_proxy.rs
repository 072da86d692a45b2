//! An HTTP CONNECT proxy with Basic authentication, like the ones enterprise firewalls put
//! between a VES and the Internet. Counts the tunnels it opened and the requests it
//! refused, so a test can assert that traffic really went through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy on loopback.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    tunnels: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

impl ConnectProxy {
    /// Listens on an ephemeral port; accepts `user`/`password` only.
    pub async fn start(user: &str, password: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let tunnels = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let (t, r) = (tunnels.clone(), rejected.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (expected, t, r) = (expected.clone(), t.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &expected, &t, &r).await;
                });
            }
        });
        Ok(ConnectProxy { addr, tunnels, rejected })
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tunnels opened after a successful authentication.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }

    /// Requests refused with 407.
    pub fn rejected(&self) -> usize {
        self.rejected.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut client: TcpStream,
    expected: &str,
    tunnels: &AtomicUsize,
    rejected: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > 16 * 1024 {
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default().to_owned());
    if method != "CONNECT" {
        client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
        return Ok(());
    }
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_owned());
    if auth.as_deref() != Some(expected) {
        rejected.fetch_add(1, Ordering::SeqCst);
        client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
        return Ok(());
    }
    let mut server = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(_) => {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
            return Ok(());
        }
    };
    tunnels.fetch_add(1, Ordering::SeqCst);
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    if head.len() > end {
        server.write_all(&head[end..]).await?;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    Ok(())
}
