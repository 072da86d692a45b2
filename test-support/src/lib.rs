//! Fake peers and a relay launcher for the integration tests.
//!
//! [`TestRelay`] starts a real node (real TLS listeners on loopback, embedded store in a
//! temporary directory); [`FakeVes`] speaks the RTS protocol over HTTPS exactly as
//! `docs/protocol.md` describes it; [`FakeDevice`] speaks the device channel over TLS.
//! The fakes deliberately use plain HTTP/TLS clients rather than relay internals, so the
//! tests exercise the wire protocol an independent implementation would see.

mod admin_api;
mod cluster;
mod connect_proxy;
mod device;
mod est;
mod forward;
pub mod lb;
mod pg;
mod ports;
pub mod redis;
mod relay;
pub mod scenario;
mod shim;
mod smsc;
mod smtp;
mod tls;
mod ves;
mod web_client;
mod webhook;

pub use admin_api::{AdminApi, TestOperator};
pub use cluster::{TestCluster, test_redis_url, with_links};
pub use connect_proxy::ConnectProxy;
pub use device::{FakeDevice, Recv};
pub use est::{EstMode, TestEst};
pub use forward::Forwarder;
pub use pg::{TestSchema, test_postgres_url};
pub use ports::{reserve_port, reserve_port_with};
pub use relay::TestRelay;
pub use shim::{Captured, DeviceShim, ShimAction, ShimDir};
pub use smsc::{Submitted, TestSmsc};
pub use smtp::{SmtpMessage, SmtpSink};
pub use tls::client_config;
pub use ves::{ApiFailure, CommandChannel, FakeVes};
pub use web_client::{Page, WebClient};
pub use webhook::{WebhookRequest, WebhookSink};

/// A unique lowercase-hex VES GUID.
pub fn random_guid() -> String {
    noc_protocol::secrets::random_hex::<16>()
}
