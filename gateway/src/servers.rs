//! The node's four listeners as running actix servers: the public HTTPS API, the device
//! channel, the admin (health and metrics) HTTP listener and the operators' console
//! listener (HTTPS).
//!
//! The app crate binds the sockets (so that errors and port 0 resolve before anything
//! runs) and composes; building, running and stopping the servers is the gateway's, like
//! everything else at the network edge.

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_server::{Server, ServerHandle};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_factory, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::server::TlsStream;

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
    /// Worker threads (actix arbiters) of the public and the device listener each.
    pub workers: usize,
    /// How long the public listener's graceful stop waits for open requests.
    pub grace_seconds: u64,
    /// TLS of the public listener (ALPN `http/1.1`).
    pub http_tls: Arc<rustls::ServerConfig>,
    /// TLS of the device listener (no ALPN).
    pub device_tls: Arc<rustls::ServerConfig>,
    /// Per-source and handshake limits of the public listener.
    pub public_limits: PublicLimits,
    /// Open connections per worker of the public listener (the node's share of its
    /// open-file limit); the worker stops accepting at it.
    pub public_connections_per_worker: usize,
    /// Open connections per worker of the device listener.
    pub device_connections_per_worker: usize,
}

/// The four servers, built and not yet running.
pub struct Servers {
    public: Server,
    admin: Server,
    device: Server,
    console: Server,
    public_closing: Arc<Notify>,
}

/// Stops the running servers.
#[derive(Clone)]
pub struct ServerHandles {
    public: ServerHandle,
    admin: ServerHandle,
    device: ServerHandle,
    console: ServerHandle,
    /// Tells the public listener's idle keep-alive connections to close.
    public_closing: Arc<Notify>,
}

/// How long a client may take to send a request's head, and to close after the answer
/// to a refused body (what it sent meanwhile is read and discarded, so that the answer is
/// not lost to a reset).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The public HTTPS server: [`PublicAcceptor`] admits each connection and runs its TLS
/// handshake; HTTP/1.1 is then served by actix-http with the public routes.
fn public_server(
    state: &GatewayState,
    listener: TcpListener,
    settings: &ServerSettings,
    closing: Arc<Notify>,
) -> std::io::Result<Server> {
    let acceptor =
        PublicAcceptor::new(settings.http_tls.clone(), settings.public_limits.clone(), state.router.metrics().clone());
    let local = listener.local_addr()?;
    let state = state.clone();
    Ok(Server::build()
        .workers(settings.workers)
        .max_concurrent_connections(settings.public_connections_per_worker)
        .disable_signals()
        .shutdown_timeout(settings.grace_seconds)
        .listen("public", listener, move || {
            let (state, acceptor, closing) = (state.clone(), acceptor.clone(), closing.clone());
            fn_factory(move || {
                let app = App::new()
                    .wrap(public_headers())
                    .wrap(from_fn(hold_unread_body))
                    .app_data(web::Data::new(state.clone()))
                    .configure(|cfg| {
                        if let Some(portal) = &state.web {
                            cfg.app_data(web::Data::new(portal.clone()));
                            noc_web::routes(cfg);
                        }
                    })
                    .configure(public_routes)
                    .into_factory()
                    .map_err(|e| e.error_response());
                let closing = closing.clone();
                let http = HttpService::<TlsStream<TcpStream>, _, _>::build()
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
        })?
        .run())
}

impl Servers {
    /// Builds the servers on `listeners`; they start when [`Servers::spawn`] runs them on
    /// the current actix system.
    pub fn build(state: &GatewayState, listeners: Listeners, settings: ServerSettings) -> std::io::Result<Servers> {
        let public_closing = Arc::new(Notify::new());
        let public = public_server(state, listeners.http, &settings, public_closing.clone())?;
        let admin_state = state.clone();
        let admin =
            HttpServer::new(move || App::new().app_data(web::Data::new(admin_state.clone())).configure(admin_routes))
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listeners.admin)?
                .run();
        if let Some(ca) = &state.config.device_ca {
            state.router.set_certificate_issuer(crate::DeviceCertificates::new(ca.clone(), state.accounts.clone()));
        }
        let device_listener = DeviceListener::new(
            settings.device_tls,
            state.accounts.clone(),
            state.router.clone(),
            state.sessions.clone(),
            state.config.handshake_timeout,
            state.draining.clone(),
        );
        let device = Server::build()
            .workers(settings.workers)
            .max_concurrent_connections(settings.device_connections_per_worker)
            .disable_signals()
            .shutdown_timeout(1)
            .listen("device", listeners.device, move || {
                let listener = device_listener.clone();
                actix_service::fn_service(move |tcp: actix_rt::net::TcpStream| {
                    let listener = listener.clone();
                    async move {
                        listener.serve(tcp).await;
                        Ok::<_, ()>(())
                    }
                })
            })?
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
        Ok(Servers { public, admin, device, console, public_closing })
    }

    pub fn handles(&self) -> ServerHandles {
        ServerHandles {
            public: self.public.handle(),
            admin: self.admin.handle(),
            device: self.device.handle(),
            console: self.console.handle(),
            public_closing: self.public_closing.clone(),
        }
    }

    /// Runs the servers on the current actix system.
    pub fn spawn(self) {
        actix_rt::spawn(self.public);
        actix_rt::spawn(self.admin);
        actix_rt::spawn(self.device);
        actix_rt::spawn(self.console);
    }
}

impl ServerHandles {
    /// Stops the listeners, the device listener first (stopping one ends the sessions on
    /// its workers), the admin listener last (it answers health checks until the end).
    /// `graceful`: let open requests finish within the servers' shutdown timeouts.
    pub async fn stop(&self, graceful: bool) {
        self.public_closing.notify_waiters();
        self.device.stop(graceful).await;
        self.public.stop(graceful).await;
        self.console.stop(graceful).await;
        self.admin.stop(graceful).await;
    }
}
