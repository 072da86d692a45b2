//! The node's listeners as running actix servers: the edge server (the public HTTPS API
//! and the device channel, sharing one set of workers), the admin (health and metrics)
//! HTTP listener and the operators' console listener (HTTPS).
//!
//! The public and device listeners share their worker threads so that a VES's command
//! channel and its devices' sessions can live on the same thread (`noc_actors::Home`):
//! a frame then crosses from one to the other without waking another thread. Each
//! listener still caps its own connections (its share of the open-file limit), so a
//! flood on one cannot take the other's room.
//!
//! The app crate binds the sockets (so that errors and port 0 resolve before anything
//! runs) and composes; building, running and stopping the servers is the gateway's, like
//! everything else at the network edge.

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::tls_stream::ServerTlsStream;
use actix_http::{HttpService, KeepAlive};
use actix_server::{Server, ServerBuilder, ServerHandle};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_factory, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::GatewayState;
use crate::admin_http::admin_routes;
use crate::device_listener::DeviceListener;
use crate::http::{public_headers, public_routes};
use crate::public_listener::{PublicAcceptor, PublicLimits};
use crate::unread_body::hold_unread_body;

/// The bound sockets of the four listeners.
pub struct Listeners {
    pub http: TcpListener,
    pub device: TcpListener,
    pub admin: TcpListener,
    pub console: TcpListener,
}

/// How the servers run.
pub struct ServerSettings {
    /// Worker threads (actix arbiters), shared by the public and the device listener.
    pub workers: usize,
    /// How long the public listener's graceful stop waits for open requests.
    pub grace_seconds: u64,
    /// TLS of the public listener (ALPN `http/1.1`).
    pub http_tls: Arc<rustls::ServerConfig>,
    /// TLS of the device listener (no ALPN).
    pub device_tls: Arc<rustls::ServerConfig>,
    /// Connection, per-source and handshake limits of the public listener.
    pub public_limits: PublicLimits,
    /// Open connections per worker of the public listener (the node's share of its
    /// open-file limit, divided by the workers): part of the workers' own cap.
    pub public_connections_per_worker: usize,
    /// Open connections per worker of the device listener: the device listener closes new
    /// connections beyond `workers` times this, and it is part of the workers' cap.
    pub device_connections_per_worker: usize,
}

/// The three servers, built and not yet running.
pub struct Servers {
    edge: Server,
    admin: Server,
    console: Server,
    public_closing: Arc<Notify>,
}

/// Stops the running servers.
#[derive(Clone)]
pub struct ServerHandles {
    edge: ServerHandle,
    admin: ServerHandle,
    console: ServerHandle,
    /// Tells the public listener's idle keep-alive connections to close.
    public_closing: Arc<Notify>,
}

/// How long a client may take to send a request's head, and to close after the answer
/// to a refused body (what it sent meanwhile is read and discarded, so that the answer is
/// not lost to a reset).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle keep-alive connections are closed after this; clients give them up sooner
/// (`CLIENT_POOL_IDLE`).
const KEEP_ALIVE: Duration = noc_protocol::rts::KEEP_ALIVE;

/// The public HTTPS listener on the edge server: [`PublicAcceptor`] admits each
/// connection and runs its TLS handshake; HTTP/1.1 is then served by actix-http with the
/// public routes.
fn listen_public(
    edge: ServerBuilder,
    state: &GatewayState,
    listener: TcpListener,
    settings: &ServerSettings,
    closing: Arc<Notify>,
) -> std::io::Result<ServerBuilder> {
    let acceptor =
        PublicAcceptor::new(settings.http_tls.clone(), settings.public_limits.clone(), state.router.metrics().clone());
    let local = listener.local_addr()?;
    let state = state.clone();
    edge.listen("public", listener, move || {
        let (state, acceptor, closing) = (state.clone(), acceptor.clone(), closing.clone());
        fn_factory(move || {
            let app = App::new()
                .wrap(public_headers())
                .wrap(from_fn(hold_unread_body))
                .app_data(web::Data::new(state.clone()))
                .configure(public_routes)
                .configure(|cfg| {
                    if let Some(portal) = &state.web {
                        cfg.app_data(web::Data::new(portal.clone()));
                        noc_web::routes(cfg);
                    }
                })
                .into_factory()
                .map_err(|e| e.error_response());
            let closing = closing.clone();
            let http = HttpService::<ServerTlsStream, _, _>::build()
                .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .secure()
                .local_addr(local)
                .graceful_shutdown_signal(move || {
                    let closing = closing.clone();
                    async move { closing.notified().await }
                })
                .h1(map_config(app, |_| AppConfig::default()));
            let acceptor = acceptor.clone();
            async move {
                let http = Rc::new(http.new_service(()).await?);
                Ok::<_, ()>(fn_service(move |tcp: TcpStream| {
                    let (http, acceptor) = (http.clone(), acceptor.clone());
                    async move {
                        let Ok(peer) = tcp.peer_addr() else { return Ok(()) };
                        let Ok(mut admitted) = acceptor.admit(peer.ip()) else { return Ok(()) };
                        let Ok(tls) = acceptor.handshake(tcp, &mut admitted).await else { return Ok(()) };
                        if let Err(e) = http.call((tls, Some(peer))).await {
                            tracing::debug!(error = %e, "public connection ended with an error");
                        }
                        drop(admitted);
                        Ok::<_, ()>(())
                    }
                }))
            }
        })
    })
}

/// The device listener on the edge server: [`DeviceListener`] runs each connection's TLS
/// handshake and authentication, then starts its session on its VES's worker.
fn listen_device(
    edge: ServerBuilder,
    state: &GatewayState,
    listener: TcpListener,
    settings: &ServerSettings,
) -> std::io::Result<ServerBuilder> {
    if let Some(ca) = &state.config.device_ca {
        state.router.set_certificate_issuer(crate::DeviceCertificates::new(ca.clone(), state.accounts.clone()));
    }
    let device_listener = DeviceListener::new(
        settings.device_tls.clone(),
        state.accounts.clone(),
        state.router.clone(),
        state.sessions.clone(),
        state.config.handshake_timeout,
        state.draining.clone(),
        settings.device_connections_per_worker.saturating_mul(settings.workers),
    );
    let router = state.router.clone();
    edge.listen("device", listener, move || {
        // Runs on each worker as it starts: the node's workers that sessions start on.
        router.workers().add_current();
        let listener = device_listener.clone();
        fn_service(move |tcp: actix_rt::net::TcpStream| {
            let listener = listener.clone();
            async move {
                listener.serve(tcp).await;
                Ok::<_, ()>(())
            }
        })
    })
}

impl Servers {
    /// Builds the servers on `listeners`; they start when [`Servers::spawn`] runs them on
    /// the current actix system.
    pub fn build(state: &GatewayState, listeners: Listeners, settings: ServerSettings) -> std::io::Result<Servers> {
        let public_closing = Arc::new(Notify::new());
        // Each listener caps its own connections node-wide; the workers' cap, their sum
        // per worker, is only the backstop for the descriptors.
        let per_worker = settings.public_connections_per_worker.saturating_add(settings.device_connections_per_worker);
        let edge = Server::build()
            .workers(settings.workers)
            .max_concurrent_connections(per_worker)
            .disable_signals()
            .shutdown_timeout(settings.grace_seconds);
        let edge = listen_public(edge, state, listeners.http, &settings, public_closing.clone())?;
        let edge = listen_device(edge, state, listeners.device, &settings)?.run();
        let admin_state = state.clone();
        let admin =
            HttpServer::new(move || App::new().app_data(web::Data::new(admin_state.clone())).configure(admin_routes))
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listeners.admin)?
                .run();
        let console_state = state.console.clone();
        let console = HttpServer::new(move || {
            App::new().app_data(web::Data::new(console_state.clone())).configure(noc_console::routes)
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(settings.grace_seconds.min(5))
        .listen_rustls_0_23(listeners.console, (*settings.http_tls).clone())?
        .run();
        Ok(Servers { edge, admin, console, public_closing })
    }

    pub fn handles(&self) -> ServerHandles {
        ServerHandles {
            edge: self.edge.handle(),
            admin: self.admin.handle(),
            console: self.console.handle(),
            public_closing: self.public_closing.clone(),
        }
    }

    /// Runs the servers on the current actix system.
    pub fn spawn(self) {
        actix_rt::spawn(self.edge);
        actix_rt::spawn(self.admin);
        actix_rt::spawn(self.console);
    }
}

impl ServerHandles {
    /// Stops the listeners, the edge server first (stopping it ends the sessions on its
    /// workers), the admin listener last (it answers health checks until the end).
    /// `graceful`: let open requests finish within the servers' shutdown timeouts.
    pub async fn stop(&self, graceful: bool) {
        self.public_closing.notify_waiters();
        self.edge.stop(graceful).await;
        self.console.stop(graceful).await;
        self.admin.stop(graceful).await;
    }
}
