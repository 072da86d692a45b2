//! What the API answers: the records as operators may see them. No type here has a field
//! for a password, a secret answer, an alert rule or any mail/PIM data.

use noc_storage::{AuditEvent, DeviceRecord, Feature, Features, License, OperatorRecord, OperatorToken, UserRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An enterprise license. Times are Unix milliseconds.
#[derive(Serialize, ToSchema)]
pub struct LicenseView {
    pub id: String,
    pub name: String,
    pub max_users: u32,
    pub used_users: u32,
    /// `null`: never expires.
    pub expires_at: Option<i64>,
    pub suspended: bool,
    pub secret_question_recovery: bool,
    /// Devices must authenticate with a client certificate (docs/certificates.md).
    pub require_client_certificates: bool,
    /// What the license's users may use.
    pub features: FeatureFlags,
    /// The enterprise's administrator for this license.
    pub admin_email: Option<String>,
    pub created_at: i64,
}

/// Feature flags (white paper §3.7.2): on a license, what its users may use; on a user,
/// what a CSR lets them use. A user gets a feature when both allow it. In requests the
/// whole set is given.
#[derive(Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureFlags {
    /// Browsing mail, calendar and contacts from a PC browser.
    pub browse_pc: bool,
    /// The same from a PDA browser.
    pub browse_pda: bool,
    /// The same from a WAP phone.
    pub browse_wap: bool,
    /// Devices: activation and sessions (taking it away ends them).
    pub constant_sync: bool,
    /// New-mail alerts.
    pub alerts: bool,
}

impl From<Features> for FeatureFlags {
    fn from(f: Features) -> Self {
        FeatureFlags {
            browse_pc: f.contains(Feature::BrowsePc),
            browse_pda: f.contains(Feature::BrowsePda),
            browse_wap: f.contains(Feature::BrowseWap),
            constant_sync: f.contains(Feature::ConstantSync),
            alerts: f.contains(Feature::Alerts),
        }
    }
}

impl From<FeatureFlags> for Features {
    fn from(f: FeatureFlags) -> Self {
        Features::NONE
            .with(Feature::BrowsePc, f.browse_pc)
            .with(Feature::BrowsePda, f.browse_pda)
            .with(Feature::BrowseWap, f.browse_wap)
            .with(Feature::ConstantSync, f.constant_sync)
            .with(Feature::Alerts, f.alerts)
    }
}

impl From<License> for LicenseView {
    fn from(l: License) -> Self {
        LicenseView {
            id: l.id.to_string(),
            name: l.name,
            max_users: l.max_users,
            used_users: l.used_users,
            expires_at: l.expires_at,
            suspended: l.suspended,
            secret_question_recovery: l.secret_question_recovery,
            require_client_certificates: l.require_client_certificates,
            features: l.features.into(),
            admin_email: l.admin_email,
            created_at: l.created_at,
        }
    }
}

/// A VES installation of a license.
#[derive(Serialize, ToSchema)]
pub struct VesView {
    pub id: String,
    pub registered_at: i64,
    /// Its last connection (Unix ms).
    pub last_seen_at: i64,
    /// What it runs, as it said when it last connected (`ves-agent/0.1.0`).
    pub agent: Option<String>,
    /// The node holding its session now; `null` when it is not connected.
    pub node: Option<String>,
}

/// A user's profile, as an operator sees it.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub license_id: String,
    pub email: String,
    pub msisdn: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    /// `provisioned`, `active` or `suspended`.
    pub status: String,
    /// What a CSR lets the user use.
    pub access: FeatureFlags,
    /// What the user may use now: `access` within the license's features.
    pub allowed: FeatureFlags,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            id: u.id.to_string(),
            license_id: u.license_id.to_string(),
            email: u.email,
            msisdn: u.msisdn,
            first_name: u.first_name,
            last_name: u.last_name,
            time_zone: u.time_zone,
            locale: u.locale,
            status: u.status.as_str().to_string(),
            access: u.access.into(),
            allowed: u.access.and(u.license_features).into(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// One page of users.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserView>,
    /// The `offset` of the next page; `null` on the last one.
    pub next_offset: Option<u32>,
}

/// A user's device.
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: Option<String>,
    pub device_type: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub wipe_requested_at: Option<i64>,
    pub wiped_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    /// The serial (lowercase hex) of the client certificate the device CA last issued to
    /// the device; `null` when it activated without a certificate request.
    pub certificate_serial: Option<String>,
    /// When that certificate expires (unix seconds).
    pub certificate_not_after: Option<i64>,
    /// The node holding its session now; `null` when it is not connected.
    pub node: Option<String>,
}

impl DeviceView {
    pub fn with_node(d: DeviceRecord, node: Option<String>) -> Self {
        DeviceView { node, ..DeviceView::from(d) }
    }
}

impl From<DeviceRecord> for DeviceView {
    fn from(d: DeviceRecord) -> Self {
        DeviceView {
            id: d.id.to_string(),
            name: d.name,
            device_type: d.device_type,
            created_at: d.created_at,
            revoked_at: d.revoked_at,
            wipe_requested_at: d.wipe_requested_at,
            wiped_at: d.wiped_at,
            last_seen_at: d.last_seen_at,
            certificate_serial: d.certificate_serial,
            certificate_not_after: d.certificate_not_after,
            node: None,
        }
    }
}

/// An operator account.
#[derive(Serialize, ToSchema)]
pub struct OperatorView {
    pub id: String,
    pub name: String,
    /// `noc-admin`, `csr` or `auditor`.
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
    pub created_by: String,
}

impl From<OperatorRecord> for OperatorView {
    fn from(o: OperatorRecord) -> Self {
        OperatorView {
            id: o.id,
            name: o.name,
            role: o.role.as_str().to_string(),
            disabled: o.disabled,
            created_at: o.created_at,
            created_by: o.created_by,
        }
    }
}

/// A live token (never its secret).
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    /// `api` or `console`.
    pub kind: String,
    /// `read` or `write`.
    pub scope: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
}

impl From<OperatorToken> for TokenView {
    fn from(t: OperatorToken) -> Self {
        TokenView {
            id: t.id,
            kind: t.kind.as_str().to_string(),
            scope: t.scope.as_str().to_string(),
            label: t.label,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

/// One field an audited action changed.
#[derive(Serialize, ToSchema)]
pub struct ChangeView {
    pub field: String,
    pub before: String,
    pub after: String,
}

/// One event of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    /// The operator's role when an operator acted; empty otherwise.
    pub role: String,
    pub source: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub changes: Vec<ChangeView>,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            role: e.role,
            source: e.source,
            action: e.action,
            subject: e.subject,
            detail: e.detail,
            changes: e
                .changes
                .into_iter()
                .map(|c| ChangeView { field: c.field, before: c.before, after: c.after })
                .collect(),
        }
    }
}

/// One page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    /// The `before` of the next (older) page; `null` on the last one.
    pub next_before: Option<i64>,
}
