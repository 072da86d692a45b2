//! The relay's network edges: the public HTTPS API (actix-web over rustls), the device
//! channel listener (TLS over TCP), and the plain-HTTP admin listener, and the servers
//! that run them ([`Servers`]).
//!
//! Handlers translate between the wire (see `docs/protocol.md`) and the account rules
//! and session actors; they hold no state of their own beyond [`GatewayState`].
//! Errors reaching a client are [`ApiError`]s: a stable code and a message that never
//! reveals internals (store errors are logged, not returned).

mod admin_http;
mod body;
mod device_certificates;
mod device_listener;
mod error;
mod http;
mod public_listener;
mod servers;
pub mod tls;
mod tls_record_layer;
pub mod tls_stream;
mod unread_body;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use noc_actors::{Router, RtsSessions, SessionConfig};
use noc_storage::Accounts;

pub use admin_http::admin_routes;
pub use device_certificates::DeviceCertificates;
pub use device_listener::DeviceListener;
pub use error::ApiError;
pub use http::{active_user_state, public_routes};
pub use public_listener::PublicLimits;
pub use servers::{Listeners, ServerHandles, ServerSettings, Servers};

/// Settings of the edges that are not session limits.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Base of the URLs the relay hands out (`EventUrl`, activation link), e.g.
    /// `https://relay.example.net:8443`: the load balancer's address in a cluster.
    pub public_url: String,
    /// Device-channel address told to devices at activation.
    pub device_host: String,
    pub device_port: u16,
    /// Largest accepted HTTP request body.
    pub max_body_bytes: usize,
    /// Deadline for a whole request body.
    pub body_timeout: Duration,
    /// Deadline for TLS accept, HELLO and AUTH on the device channel.
    pub handshake_timeout: Duration,
    /// Issues client certificates to devices that activate with a certificate request;
    /// `None`: this node issues none.
    pub device_ca: Option<std::sync::Arc<noc_ca::DeviceCa>>,
}

/// A new-mail alert a VES posted (data channel `Alert`, docs/protocol.md §4.4.10).
#[derive(Clone, Debug)]
pub struct IncomingAlert {
    pub user_id: noc_protocol::UserId,
    pub from: String,
    pub subject: String,
    pub excerpt: Option<String>,
}

/// Why an alert was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertRefusal {
    /// Not a user of this VES.
    NotYours,
    /// The delivery queue is full; retry shortly.
    Busy,
    /// The account store did not answer.
    Unavailable,
}

/// Where the data channel's alerts go: the node's alert dispatcher (app/src/alerts.rs).
#[async_trait::async_trait]
pub trait AlertSink: Send + Sync + 'static {
    /// Takes `alert` of `ves`'s user for delivery: `Ok(false)` when it goes nowhere (no
    /// destination, alerts off, quiet hours, over the rate).
    async fn alert(&self, ves: noc_protocol::VesId, alert: IncomingAlert) -> Result<bool, AlertRefusal>;
}

/// Everything a handler may touch.
#[derive(Clone)]
pub struct GatewayState {
    pub accounts: Accounts,
    /// The web portal for users, when enabled: mounted on the public listener.
    pub web: Option<noc_web::WebState>,
    /// The operators' consoles and admin API, on the console listener.
    pub console: noc_console::ConsoleState,
    pub router: Arc<Router>,
    pub rts: Arc<RtsSessions>,
    pub sessions: Arc<SessionConfig>,
    pub config: Arc<GatewayConfig>,
    pub draining: Arc<AtomicBool>,
    pub alerts: Arc<dyn AlertSink>,
}

impl GatewayState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
