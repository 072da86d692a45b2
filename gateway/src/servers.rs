//! The node's three listeners as running actix servers: the public HTTPS API, the device
//! channel and the admin (health and metrics) HTTP listener.
//!
//! The app crate binds the sockets (so that errors and port 0 resolve before anything
//! runs) and composes; building, running and stopping the servers is the gateway's, like
//! everything else at the network edge.

use std::net::TcpListener;
use std::sync::Arc;

use actix_server::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};

use crate::GatewayState;
use crate::admin_http::admin_routes;
use crate::device_listener::DeviceListener;
use crate::http::{public_headers, public_routes};

/// The bound sockets of the three listeners.
pub struct Listeners {
    pub http: TcpListener,
    pub device: TcpListener,
    pub admin: TcpListener,
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
}

/// The three servers, built and not yet running.
pub struct Servers {
    public: Server,
    admin: Server,
    device: Server,
}

/// Stops the running servers.
#[derive(Clone)]
pub struct ServerHandles {
    public: ServerHandle,
    admin: ServerHandle,
    device: ServerHandle,
}

impl Servers {
    /// Builds the servers on `listeners`; they start when [`Servers::spawn`] runs them on
    /// the current actix system.
    pub fn build(state: &GatewayState, listeners: Listeners, settings: ServerSettings) -> std::io::Result<Servers> {
        let public_state = state.clone();
        let public = HttpServer::new(move || {
            App::new().wrap(public_headers()).app_data(web::Data::new(public_state.clone())).configure(public_routes)
        })
        .workers(settings.workers)
        // The command channel streams small lines: without TCP_NODELAY each one written
        // behind an unacknowledged one waits for a delayed ACK (40 ms).
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(settings.grace_seconds)
        .listen_rustls_0_23(listeners.http, (*settings.http_tls).clone())?
        .run();
        let admin_state = state.clone();
        let admin =
            HttpServer::new(move || App::new().app_data(web::Data::new(admin_state.clone())).configure(admin_routes))
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listeners.admin)?
                .run();
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
        Ok(Servers { public, admin, device })
    }

    pub fn handles(&self) -> ServerHandles {
        ServerHandles { public: self.public.handle(), admin: self.admin.handle(), device: self.device.handle() }
    }

    /// Runs the servers on the current actix system.
    pub fn spawn(self) {
        actix_rt::spawn(self.public);
        actix_rt::spawn(self.admin);
        actix_rt::spawn(self.device);
    }
}

impl ServerHandles {
    /// Stops the listeners, the device listener first (stopping one ends the sessions on
    /// its workers), the admin listener last (it answers health checks until the end).
    /// `graceful`: let open requests finish within the servers' shutdown timeouts.
    pub async fn stop(&self, graceful: bool) {
        self.device.stop(graceful).await;
        self.public.stop(graceful).await;
        self.admin.stop(graceful).await;
    }
}
