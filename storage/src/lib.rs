//! The relay's durable state: licenses, enterprise servers, users, devices and the audit
//! log (white paper §9.2), behind the [`Store`] trait.
//!
//! The relay never stores end-user data (mail, PIM) nor enterprise credentials: nothing in
//! this crate has a column for them. Secrets are kept only as hashes: passwords with
//! argon2id (slow, salted), high-entropy random tokens (device credentials, VES GUIDs,
//! license-id tokens) with SHA-256, which is enough for 128+ bit random values and keeps
//! device reconnect storms cheap.
//!
//! [`Store`] is the persistence contract (one implementation per backend: [`SqliteStore`]
//! embedded, [`PostgresStore`] for clusters); [`Accounts`] holds the rules on top of
//! it (seats, password throttling, MSISDN approval, revocation, audit) so every backend behaves alike.

pub mod accounts;
pub mod embedded;
pub mod error;
pub mod hashing;
pub mod invalid;
pub mod model;
pub mod operations;
pub mod operators;
pub mod postgres;
pub mod seen;
pub mod self_service;
pub mod totp;
pub use noc_protocol::secrets;
mod store;
pub mod throttle;
mod web_sessions;

pub use accounts::{AccountError, AccountPolicy, Accounts, DeviceAuth, MsisdnApproval, WebSessionPolicy};
pub use embedded::SqliteStore;
pub use error::StoreError;
pub use hashing::{HashError, Hasher, PasswordHashing};
pub use invalid::{Invalid, NameField};
pub use model::*;
pub use operations::{MsisdnImport, Permission, Principal, permits};
pub use postgres::{PostgresOptions, PostgresStore};
pub use seen::SeenRecorder;
pub use self_service::Recovery;
pub use store::Store;
pub use throttle::{Throttle, ThrottlePolicy, Throttled};
pub use web_sessions::NewWebSession;
