//! A TCP forwarder that exists before its target: a test binds it first, gives its address
//! to the relay as the public URL (so the relay's `EventUrl` points through it), then sets
//! the target. It can cut every connection (a dropped command channel), refuse new ones,
//! or freeze the open ones — bytes stop moving but nothing closes, the way a dead network
//! path looks to both ends (only heartbeats reveal it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Inner {
    target: Mutex<Option<SocketAddr>>,
    up: AtomicBool,
    /// Connections numbered below this are frozen.
    frozen_below: AtomicU64,
    next_conn: AtomicU64,
    accepted: AtomicUsize,
    cut: watch::Sender<u64>,
}

/// See the module documentation.
pub struct Forwarder {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Forwarder {
    /// Listens on an ephemeral loopback port; connections are refused until a target is set.
    pub async fn bind() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            target: Mutex::new(None),
            up: AtomicBool::new(true),
            frozen_below: AtomicU64::new(0),
            next_conn: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            cut,
        });
        let i = inner.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = *i.target.lock().unwrap_or_else(|p| p.into_inner());
                let (Some(target), true) = (target, i.up.load(Ordering::SeqCst)) else {
                    drop(client);
                    continue;
                };
                i.accepted.fetch_add(1, Ordering::SeqCst);
                let n = i.next_conn.fetch_add(1, Ordering::SeqCst);
                let i = i.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    pipe(client, server, n, i).await;
                });
            }
        });
        Ok(Forwarder { addr, inner })
    }

    /// Listens on an ephemeral loopback port and forwards to `target` (a backend such as
    /// PostgreSQL or Redis that a test wants to take away from one node and give back).
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let f = Self::bind().await?;
        f.set_target(target);
        Ok(f)
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.inner.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.inner.up.store(false, Ordering::SeqCst);
        self.inner.cut.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.inner.up.store(true, Ordering::SeqCst);
    }

    /// Open connections stop moving bytes (and stay open); new connections work.
    pub fn freeze(&self) {
        let n = self.inner.next_conn.load(Ordering::SeqCst);
        self.inner.frozen_below.store(n, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.inner.accepted.load(Ordering::SeqCst)
    }
}

async fn pipe(mut a: TcpStream, mut b: TcpStream, n: u64, inner: Arc<Inner>) {
    let mut cut = inner.cut.subscribe();
    let mut ba = [0u8; 16 * 1024];
    let mut bb = [0u8; 16 * 1024];
    let frozen = || n < inner.frozen_below.load(Ordering::SeqCst);
    loop {
        let (data, to_b) = tokio::select! {
            _ = cut.changed() => return,
            r = a.read(&mut ba) => match r {
                Ok(0) | Err(_) => return,
                Ok(k) => (&ba[..k], true),
            },
            r = b.read(&mut bb) => match r {
                Ok(0) | Err(_) => return,
                Ok(k) => (&bb[..k], false),
            },
        };
        if frozen() {
            // Swallow everything from now on and hold both sockets open until cut.
            let _ = cut.changed().await;
            return;
        }
        let w = if to_b { b.write_all(data).await } else { a.write_all(data).await };
        if w.is_err() {
            return;
        }
    }
}
