//! Client-certificate renewal on an established device session (docs/protocol.md §6.4.6):
//! the session takes the device's CERT_RENEW and answers CERT_ISSUED or CERT_REFUSED; what
//! issues the certificate (the device CA and the account store) sits above this crate and
//! is plugged into the router ([`crate::Router::set_certificate_issuer`]).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use noc_protocol::{DeviceId, RenewalRefusal, UserId};

/// Why no certificate was issued, in the words the device gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: RenewalRefusal,
    pub message: String,
}

impl Refused {
    pub fn new(reason: RenewalRefusal, message: impl Into<String>) -> Self {
        Refused { reason, message: message.into() }
    }
}

/// What an issuance returns: the new certificate (DER), already recorded as the device's
/// current one, or why not.
pub type Issued = Pin<Box<dyn Future<Output = Result<Bytes, Refused>> + Send>>;

/// Issues a device a new client certificate for a certificate request (DER) it sent on
/// its authenticated session.
pub trait CertificateIssuer: Send + Sync {
    fn renew(&self, device: DeviceId, user: UserId, csr: Bytes) -> Issued;
}
