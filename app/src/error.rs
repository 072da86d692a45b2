//! The errors of starting a node.

use std::net::SocketAddr;
use std::path::PathBuf;

use noc_storage::{AccountError, StoreError};

use crate::cert::CertError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("opening the embedded store: {0}")]
    Store(#[from] StoreError),
    #[error("connecting to PostgreSQL: {0}")]
    Postgres(StoreError),
    #[error("connecting to Redis: {0}")]
    Redis(noc_cluster::ClusterError),
    #[error("account rules: {0}")]
    Accounts(#[from] AccountError),
    #[error("TLS certificate: {0}")]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] noc_gateway::tls::TlsError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("starting the node: {0}")]
    Startup(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("device CA: {0}")]
    DeviceCa(String),
}
