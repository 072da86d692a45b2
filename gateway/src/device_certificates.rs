//! Renewal of device client certificates on the device channel (CERT_RENEW,
//! docs/protocol.md §6.4.6): the device CA signs the device's new request, and the store
//! records the new serial, which from then on is the only one AUTH_CERT accepts.

use std::sync::Arc;

use bytes::Bytes;
use noc_actors::{CertificateIssuer, Issued, Refused};
use noc_ca::{CsrError, DeviceCa};
use noc_protocol::{DeviceId, RenewalRefusal, UserId};
use noc_storage::Accounts;

/// The relay's [`CertificateIssuer`]: its device CA and account store.
pub struct DeviceCertificates {
    ca: Arc<DeviceCa>,
    accounts: Accounts,
}

impl DeviceCertificates {
    pub fn new(ca: Arc<DeviceCa>, accounts: Accounts) -> Arc<Self> {
        Arc::new(Self { ca, accounts })
    }
}

impl CertificateIssuer for DeviceCertificates {
    fn renew(&self, device: DeviceId, user: UserId, csr: Bytes) -> Issued {
        let (ca, accounts) = (self.ca.clone(), self.accounts.clone());
        Box::pin(async move {
            let now = noc_protocol::clock::unix_ms_i64() / 1000;
            let issued = match ca.issue_der(&csr, user, device, now) {
                Ok(Ok(issued)) => issued,
                Ok(Err(CsrError::Malformed)) => {
                    return Err(Refused::new(RenewalRefusal::BadRequest, "the request is not a DER PKCS#10 request"));
                }
                Ok(Err(e)) => return Err(Refused::new(RenewalRefusal::BadRequest, e.to_string())),
                Err(e) => {
                    tracing::error!(error = %e, device = %device, "the device CA could not sign a renewal");
                    return Err(Refused::new(RenewalRefusal::Unavailable, "the relay cannot issue certificates now"));
                }
            };
            if let Err(e) = accounts.record_device_certificate(user, device, &issued.serial, issued.not_after).await {
                tracing::warn!(error = %e, device = %device, "a renewed certificate was not recorded; not sent");
                return Err(Refused::new(RenewalRefusal::Unavailable, "the account store is unavailable; retry later"));
            }
            tracing::info!(device = %device, serial = %issued.serial, "device certificate renewed");
            Ok(Bytes::copy_from_slice(issued.der.as_ref()))
        })
    }
}
