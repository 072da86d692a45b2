//! The forwarding ceiling's hub: the TLS listener the proxy's upstream connections reach,
//! one pipe per device.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::unbounded_channel;
use tokio_rustls::TlsAcceptor;

use crate::net::NetError;
use crate::peer::conn::{Ctx, handle_events};
use crate::peer::options::{PeerError, SinkOptions};
use crate::peer::wire::{self, Event};
use crate::stats::Metric;

pub(super) fn sink_acceptor(sink: &SinkOptions) -> Result<TlsAcceptor, PeerError> {
    let err = |path: &PathBuf, message: String| PeerError::SinkTls { path: path.clone(), message };
    let certs = CertificateDer::pem_file_iter(&sink.cert)
        .map_err(|e| err(&sink.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&sink.cert, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&sink.key).map_err(|e| err(&sink.key, e.to_string()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(NetError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(&sink.cert, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The forwarding ceiling's hub: accepts the proxy's upstream connections.
pub(super) async fn run_sink(ctx: Arc<Ctx>, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(sink_connection(ctx.clone(), tcp, acceptor.clone()));
            }
            Err(_) => {
                ctx.stats.error("sink:accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One device's pipe at the sink: HELLO names the device, READY answers it, then frames
/// both ways.
async fn sink_connection(ctx: Arc<Ctx>, tcp: TcpStream, acceptor: TlsAcceptor) {
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        ctx.stats.error("sink:tls");
        return;
    };
    let mut rbuf = BytesMut::with_capacity(512);
    let index = loop {
        match wire::forward_next(&mut rbuf) {
            Ok(Some(Event::Data { payload, .. })) => match wire::forward_hello_index(&payload) {
                Some(i) if (i as usize) < ctx.pipes.len() => break i as usize,
                _ => {
                    ctx.stats.error("sink:bad_hello");
                    return;
                }
            },
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(_) => {
                ctx.stats.error("sink:protocol");
                return;
            }
        }
        match tls.read_buf(&mut rbuf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    };
    // The pipe is registered before READY: the device counts as online (and the pacer
    // may pick it) as soon as it reads READY.
    let (tx, mut rx) = unbounded_channel::<Bytes>();
    *ctx.pipes[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let mut ready = BytesMut::new();
    wire::forward_frame(&mut ready, wire::FORWARD_READY);
    if tls.write_all(&ready).await.is_err() || tls.flush().await.is_err() {
        ctx.stats.error("sink:write");
        *ctx.pipes[index].lock().unwrap_or_else(|p| p.into_inner()) = None;
        return;
    }
    let mut ignored = BytesMut::new();
    let mut batch = Vec::with_capacity(64);
    loop {
        if handle_events(&ctx, Metric::OneWayDeviceToVes, &mut rbuf, &mut ignored).is_err() {
            ctx.stats.error("sink:protocol");
            break;
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            r = tls.read_buf(&mut rbuf) => if !matches!(r, Ok(n) if n > 0) { break },
            got = rx.recv_many(&mut batch, 64) => {
                if got == 0 { break }
                let mut failed = false;
                for b in batch.drain(..) {
                    failed |= tls.write_all(&b).await.is_err();
                }
                if failed || tls.flush().await.is_err() {
                    ctx.stats.error("sink:write");
                    break;
                }
            }
        }
    }
    *ctx.pipes[index].lock().unwrap_or_else(|p| p.into_inner()) = None;
}
