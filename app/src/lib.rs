//! Assembles a relay node from its layers: configuration, the account store, the cluster
//! backend, the session actors and the network edges.
//!
//! The `noc` binary is a thin command-line shell over this crate; tests and the load tool
//! start nodes through [`Node::start`] the same way the binary does.

pub mod alerts;
pub mod cert;
pub mod config;
mod console;
mod data_dir;
pub mod device_ca;
mod drain;
mod error;
mod limits;
mod mail;
mod node;
mod portal;
pub mod smpp;
pub mod store_admin;
mod usage;
pub mod wap_push;
mod wiring;

pub use config::{Config, ConfigError};
pub use error::NodeError;
pub use node::Node;
