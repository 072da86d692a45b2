//! Load generator for the relay: many simulated enterprise servers (VES) and devices
//! speaking the real protocols over TLS against one node or a load-balancer address.
//!
//! The tool is the relay's *client*, built from `docs/protocol.md` with the shared codec of
//! `noc-protocol`: a VES is an RTS session (command channel + data-channel POSTs), a device
//! is a TLS connection on the device channel. It exists to measure what carriers buy a
//! relay on — sessions, connection rate, relayed frames per second, end-to-end latency
//! under load, memory per session — and it is built to out-run one relay node from one
//! process: no thread or histogram per session, small buffers, several source addresses.
//!
//! * [`scenario`]: what a run does (TOML file and/or flags).
//! * [`setup`]: license, provisioning, activation, cached credentials.
//! * [`device`], [`ves`]: the simulated peers; [`payload`]: the latency stamp they exchange.
//! * [`run`]: phases, live progress, results; [`stats`]: shared counters and histograms.
//! * [`result`]: the JSON result and `merge`; [`html`]: the self-contained HTML report.
//! * [`peer`]: the same traffic shape against baseline brokers (MQTT, NATS) and a 1:1
//!   TLS proxy, for side-by-side benchmarks.
//! * [`cli`]: the command line of the `loadtest` binary.

mod assemble;
pub mod cli;
pub mod device;
mod display;
pub mod html;
mod measurement;
pub mod net;
pub mod payload;
pub mod peer;
mod phases;
pub mod procfs;
mod reporter;
pub mod result;
pub mod rts_client;
pub mod run;
pub mod scenario;
pub mod setup;
pub mod stats;
mod storm;
pub mod ves;

pub use result::{RunResult, merge};
pub use run::{RunError, RunOptions, run};
pub use scenario::Scenario;
