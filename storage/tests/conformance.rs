//! The store contract, checked through the account rules. Every backend runs these same
//! tests unchanged: add a `backend` constructor below and the cases follow.

use std::sync::Arc;

use noc_storage::{
    AccountError, AccountPolicy, Accounts, AuditFilter, MsisdnApproval, PasswordHashing, PostgresOptions,
    PostgresStore, SqliteStore, Store, ThrottlePolicy, UserStatus,
};

/// The client address of the password attempts in these tests.
const SOURCE: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

/// Cheap hashing so the suite runs quickly; production parameters are tested elsewhere.
fn policy() -> AccountPolicy {
    AccountPolicy {
        throttle: ThrottlePolicy { free_failures_per_source: 3, ..ThrottlePolicy::default() },
        hashing: PasswordHashing { memory_kib: 64, iterations: 1, parallelism: 1, ..PasswordHashing::default() },
        ..AccountPolicy::default()
    }
}

/// A backend under test and how to clean up after it.
struct Backend {
    store: Arc<dyn Store>,
    schema: Option<(String, String)>,
}

impl Backend {
    async fn cleanup(self) {
        if let Some((url, schema)) = self.schema {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.expect("drop schema");
        }
    }
}

async fn sqlite() -> Backend {
    Backend { store: Arc::new(SqliteStore::in_memory().expect("sqlite")), schema: None }
}

/// The machine's PostgreSQL (`NOC_TEST_POSTGRES_URL`, default the local `test` database),
/// with a private schema per test so that tests run in parallel without seeing each other.
async fn postgres() -> Backend {
    let url = std::env::var("NOC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let schema = format!("noc_test_{}", noc_storage::secrets::random_hex::<8>());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL must be running for the store conformance tests (scripts/test.sh starts it)");
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let store = PostgresStore::connect(&scoped, PostgresOptions::default()).await.expect("postgres store");
    Backend { store: Arc::new(store), schema: Some((url, schema)) }
}

async fn registered_ves(accounts: &Accounts, seats: u32) -> noc_storage::VesRecord {
    accounts.create_license("acme", "license-pass", seats, None, "admin:test").await.expect("license");
    let (token, _, _) = accounts.license_login("acme", "license-pass", SOURCE).await.expect("login");
    let guid = "0123456789abcdef0123456789abcdef";
    let (ves, new) = accounts.authenticate_ves(guid, Some(&token)).await.expect("register");
    assert!(new);
    ves
}

macro_rules! conformance {
    ($($backend:ident),*) => { $(
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn license_login_and_ves_registration() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                accounts.create_license("acme", "license-pass", 2, None, "admin:test").await.expect("create");
                assert!(matches!(
                    accounts.create_license("acme", "other-pass", 2, None, "admin:test").await,
                    Err(AccountError::Conflict(_))
                ));
                assert!(matches!(
                    accounts.license_login("acme", "wrong-pass", SOURCE).await,
                    Err(AccountError::InvalidCredentials)
                ));
                assert!(matches!(
                    accounts.license_login("nobody", "license-pass", SOURCE).await,
                    Err(AccountError::InvalidCredentials)
                ));
                let before = noc_protocol::clock::unix_ms_i64();
                let (token, token_expires_at, license) =
                    accounts.license_login("acme", "license-pass", SOURCE).await.expect("login");
                assert_eq!(license.max_users, 2);
                let ttl = i64::try_from(policy().license_token_ttl.as_millis()).expect("ttl");
                assert!((before + ttl..=noc_protocol::clock::unix_ms_i64() + ttl).contains(&token_expires_at));

                let guid = "00112233445566778899aabbccddeeff";
                // Unknown GUID without a token, malformed GUID, bad token: all refused.
                assert!(matches!(accounts.authenticate_ves(guid, None).await, Err(AccountError::InvalidCredentials)));
                assert!(matches!(accounts.authenticate_ves("xyz", Some(&token)).await, Err(AccountError::InvalidCredentials)));
                assert!(matches!(
                    accounts.authenticate_ves(guid, Some("00")).await,
                    Err(AccountError::InvalidCredentials)
                ));
                let (ves, new) = accounts.authenticate_ves(guid, Some(&token)).await.expect("register");
                assert!(new);
                // Later connections authenticate with the GUID alone.
                let (again, new) = accounts.authenticate_ves(guid, None).await.expect("reconnect");
                assert!(!new);
                assert_eq!(again.id, ves.id);

                // Suspension blocks both.
                accounts.set_license_suspended("acme", true, "admin:test").await.expect("suspend");
                assert!(matches!(accounts.authenticate_ves(guid, None).await, Err(AccountError::Suspended)));
                assert!(matches!(accounts.license_login("acme", "license-pass", SOURCE).await, Err(AccountError::Suspended)));
                accounts.set_license_suspended("acme", false, "admin:test").await.expect("resume");
                accounts.authenticate_ves(guid, None).await.expect("resumed");
                backend.cleanup().await;
            }

            /// A token registers installations for its time to live only, and a new license
            /// password revokes every token; registered installations are not affected.
            #[tokio::test]
            async fn license_tokens_expire_and_a_new_password_revokes_them() {
                let backend = super::$backend().await;
                let short = AccountPolicy { license_token_ttl: std::time::Duration::from_millis(1), ..policy() };
                let accounts = Accounts::new(backend.store.clone(), short).expect("accounts");
                accounts.create_license("acme", "license-pass", 5, None, "admin:test").await.expect("create");
                let (old, _, _) = accounts.license_login("acme", "license-pass", SOURCE).await.expect("login");
                std::thread::sleep(std::time::Duration::from_millis(5));
                assert!(matches!(
                    accounts.authenticate_ves("00112233445566778899aabbccddeeff", Some(&old)).await,
                    Err(AccountError::InvalidCredentials)
                ), "an expired token registers nothing");

                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let (token, _, _) = accounts.license_login("acme", "license-pass", SOURCE).await.expect("login");
                let registered = "0123456789abcdef0123456789abcdef";
                accounts.authenticate_ves(registered, Some(&token)).await.expect("register");
                let (unused, _, _) = accounts.license_login("acme", "license-pass", SOURCE).await.expect("login");
                assert!(matches!(
                    accounts.set_license_password("acme", "short", "admin:test").await,
                    Err(AccountError::Invalid(_))
                ));
                assert!(matches!(
                    accounts.set_license_password("nobody", "new-license-pass", "admin:test").await,
                    Err(AccountError::NotFound)
                ));
                let (_, revoked) =
                    accounts.set_license_password("acme", "new-license-pass", "admin:test").await.expect("set password");
                assert!(revoked >= 2, "both live tokens revoked: {revoked}");
                assert!(matches!(
                    accounts.authenticate_ves("ffeeddccbbaa99887766554433221100", Some(&unused)).await,
                    Err(AccountError::InvalidCredentials)
                ), "a revoked token registers nothing");
                accounts.authenticate_ves(registered, None).await.expect("registered installations keep connecting");
                assert!(matches!(
                    accounts.license_login("acme", "license-pass", SOURCE).await,
                    Err(AccountError::InvalidCredentials)
                ));
                let (fresh, _, _) = accounts.license_login("acme", "new-license-pass", SOURCE).await.expect("new password");
                accounts.authenticate_ves("ffeeddccbbaa99887766554433221100", Some(&fresh)).await.expect("fresh token");
                let audit = backend.store.audit_search(&AuditFilter { limit: 100, ..AuditFilter::default() }).await.expect("audit");
                assert!(audit.iter().any(|e| e.action == "license.password_changed" && e.detail.contains("tokens_revoked=")));
                backend.cleanup().await;
            }

            /// Expired tokens of a license are deleted when it issues a new one.
            #[tokio::test]
            async fn issuing_a_token_deletes_the_expired_ones() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let license = accounts.create_license("acme", "license-pass", 5, None, "admin:test").await.expect("create");
                let store = &backend.store;
                let (old, new) = ([1u8; 32], [2u8; 32]);
                store.insert_license_token(&old, license.id, 1_000, 0).await.expect("old");
                assert!(store.license_by_token(&old, 1_000).await.expect("read").is_some(), "issued at the cut-off: valid");
                assert!(store.license_by_token(&old, 1_001).await.expect("read").is_none(), "issued before: expired");
                store.insert_license_token(&new, license.id, 9_000, 5_000).await.expect("new");
                assert!(store.license_by_token(&old, 0).await.expect("read").is_none(), "deleted");
                assert!(store.license_by_token(&new, 5_000).await.expect("read").is_some());
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn seats_are_enforced_and_freed_by_delete() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 2).await;
                let (a, pw, lic) = accounts.provision_user(ves.id, ves.license_id, "A@Example.com", None, "Ann", "Lee").await.expect("a");
                assert_eq!(a.email, "a@example.com");
                assert_eq!(pw.as_deref().map(str::len), Some(12));
                assert_eq!(lic.used_users, 1);
                accounts.provision_user(ves.id, ves.license_id, "b@example.com", Some("given-password"), "Bo", "Yu").await.expect("b");
                assert!(matches!(
                    accounts.provision_user(ves.id, ves.license_id, "a@example.com", None, "Dup", "Dup").await,
                    Err(AccountError::Conflict("email")) | Err(AccountError::SeatsFull { .. })
                ));
                assert!(matches!(
                    accounts.provision_user(ves.id, ves.license_id, "c@example.com", None, "Cy", "Oz").await,
                    Err(AccountError::SeatsFull { max: 2 })
                ));
                accounts.delete_user(ves.id, "a@example.com").await.expect("delete");
                accounts.provision_user(ves.id, ves.license_id, "c@example.com", None, "Cy", "Oz").await.expect("seat freed");
                assert!(matches!(
                    accounts.provision_user(ves.id, ves.license_id, "not-an-address", None, "x", "y").await,
                    Err(AccountError::Invalid(_))
                ));
                assert!(matches!(
                    accounts.provision_user(ves.id, ves.license_id, "d@example.com", Some("short"), "x", "y").await,
                    Err(AccountError::Invalid(_))
                ));
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn activation_devices_and_revocation() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "bob@example.com", Some("bob-password"), "Bob", "Ng").await.expect("bob");

                // Not activated yet: no MSISDN, no device.
                assert!(matches!(
                    accounts.activate_device("+15550100", "bob-password", None, None, false, SOURCE).await,
                    Err(AccountError::InvalidCredentials)
                ));
                let user = accounts
                    .activate_account("bob@example.com", "bob-password", "+15550100", "Europe/Paris", SOURCE)
                    .await
                    .expect("activate");
                assert_eq!(user.status, UserStatus::Active);
                assert_eq!(user.msisdn.as_deref(), Some("+15550100"));

                let (device, credential, owner) = accounts
                    .activate_device("+15550100", "bob-password", Some("phone"), Some("android"), false, SOURCE)
                    .await
                    .expect("device");
                assert_eq!(owner.id, user.id);
                // Its client certificate, when it asked for one, is recorded on it.
                assert_eq!((device.certificate_serial.as_deref(), device.certificate_not_after), (None, None));
                accounts.record_device_certificate(user.id, device.id, "0a1b2c", 1_900_000_000).await.expect("certificate");
                let stored = accounts.store().device_by_id(device.id).await.expect("read").expect("device");
                assert_eq!((stored.certificate_serial.as_deref(), stored.certificate_not_after), (Some("0a1b2c"), Some(1_900_000_000)));
                assert!(matches!(
                    accounts.store().set_device_certificate(noc_protocol::DeviceId::random(), "ff", 1).await,
                    Err(noc_storage::StoreError::NotFound)
                ));
                let cred = hex::decode(&credential).expect("hex");
                let auth = accounts.authenticate_device_token(device.id, &cred).await.expect("token auth");
                assert_eq!(auth.ves_id, ves.id);
                assert!(matches!(
                    accounts.authenticate_device_token(device.id, &[0u8; 32]).await,
                    Err(AccountError::InvalidCredentials)
                ));
                accounts
                    .authenticate_device_password(device.id, "+15550100", "bob-password", SOURCE)
                    .await
                    .expect("password auth");
                // The certificate route: only the current serial, only for its own user.
                let auth = accounts.authenticate_device_certificate(device.id, user.id, "0a1b2c").await.expect("certificate auth");
                assert_eq!((auth.device_id, auth.user_id), (device.id, user.id));
                assert!(matches!(
                    accounts.authenticate_device_certificate(device.id, user.id, "0a1b2d").await,
                    Err(AccountError::CertificateRefused)
                ));
                assert!(matches!(
                    accounts.authenticate_device_certificate(device.id, noc_protocol::UserId::random(), "0a1b2c").await,
                    Err(AccountError::InvalidCredentials)
                ));
                assert!(matches!(
                    accounts.authenticate_device_certificate(noc_protocol::DeviceId::random(), user.id, "0a1b2c").await,
                    Err(AccountError::InvalidCredentials)
                ));
                // A license that requires certificates closes the credential and password routes.
                accounts.set_license_require_client_certificates("acme", true, "test").await.expect("require");
                assert!(matches!(accounts.authenticate_device_token(device.id, &cred).await, Err(AccountError::CertificateRequired)));
                assert!(matches!(
                    accounts.authenticate_device_password(device.id, "+15550100", "bob-password", SOURCE).await,
                    Err(AccountError::CertificateRequired)
                ));
                accounts.authenticate_device_certificate(device.id, user.id, "0a1b2c").await.expect("the certificate route");
                assert!(matches!(
                    accounts.activate_device("+15550100", "bob-password", None, None, false, SOURCE).await,
                    Err(AccountError::CertificateRequired)
                ), "no device without a certificate request");
                accounts.set_license_require_client_certificates("acme", false, "test").await.expect("optional");
                assert_eq!(accounts.store().devices_by_ves(ves.id).await.expect("devices").len(), 1);
                let listed = accounts.store().device_records_by_ves(ves.id).await.expect("device records");
                assert_eq!(listed.len(), 1);
                assert_eq!((listed[0].id, listed[0].name.as_deref(), listed[0].device_type.as_deref()), (device.id, Some("phone"), Some("android")));

                // Password reset revokes the device at once.
                let (_, generated, revoked) =
                    accounts.reset_password(ves.id, "bob@example.com", None).await.expect("reset");
                assert_eq!(revoked, vec![device.id]);
                assert!(matches!(
                    accounts.authenticate_device_token(device.id, &cred).await,
                    Err(AccountError::Revoked)
                ));
                assert!(matches!(
                    accounts.authenticate_device_certificate(device.id, user.id, "0a1b2c").await,
                    Err(AccountError::Revoked)
                ), "a password reset revokes the certificate with the device");
                assert!(accounts.store().devices_by_ves(ves.id).await.expect("devices").is_empty());
                assert!(accounts.store().device_records_by_ves(ves.id).await.expect("records").is_empty(), "revoked devices are not listed");
                let new_pw = generated.expect("generated");
                accounts.check_login("+15550100", &new_pw, SOURCE).await.expect("msisdn login with new password");

                // Another VES cannot touch this user.
                let other = noc_protocol::VesId::random();
                assert!(matches!(accounts.delete_user(other, "bob@example.com").await, Err(AccountError::NotFound)));
                let (_, deleted) = accounts.delete_user(ves.id, "bob@example.com").await.expect("delete");
                assert!(deleted.is_empty(), "already revoked devices are not reported twice");
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn device_login_reads_device_user_and_license_at_once() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "bob@example.com", Some("bob-password"), "Bob", "Ng").await.expect("bob");
                let user = accounts
                    .activate_account("bob@example.com", "bob-password", "+15550100", "UTC", SOURCE)
                    .await
                    .expect("activate");
                let (device, credential, _) =
                    accounts.activate_device("+15550100", "bob-password", None, None, false, SOURCE).await.expect("device");
                let cred = hex::decode(&credential).expect("hex");

                let login = accounts.store().device_login(device.id).await.expect("query").expect("known device");
                assert_eq!(login.device_id, device.id);
                assert_eq!(login.user_id, user.id);
                assert_eq!(login.ves_id, ves.id);
                assert_eq!(login.license_id, ves.license_id);
                assert_eq!(login.credential_hash, device.credential_hash);
                assert_eq!(login.revoked_at, None);
                assert_eq!(login.user_status, UserStatus::Active);
                assert!(!login.license_suspended);
                assert!(accounts.store().device_login(noc_protocol::DeviceId::random()).await.expect("query").is_none());
                assert!(matches!(
                    accounts.authenticate_device_token(noc_protocol::DeviceId::random(), &cred).await,
                    Err(AccountError::InvalidCredentials)
                ));

                // A suspended license stops its devices from logging in; lifting it lets them back.
                accounts.set_license_suspended("acme", true, "admin:test").await.expect("suspend");
                assert!(accounts.store().device_login(device.id).await.expect("query").expect("device").license_suspended);
                assert!(matches!(
                    accounts.authenticate_device_token(device.id, &cred).await,
                    Err(AccountError::Suspended)
                ));
                accounts.set_license_suspended("acme", false, "admin:test").await.expect("lift");
                accounts.authenticate_device_token(device.id, &cred).await.expect("token auth after the lift");
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn features_of_the_license_and_access_of_the_user_both_decide() {
                use noc_storage::model::*;
                use noc_storage::Principal;
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "bob@example.com", Some("bob-password"), "Bob", "Ng").await.expect("bob");
                let user = accounts.activate_account("bob@example.com", "bob-password", "+15550100", "UTC", SOURCE).await.expect("activate");
                // Licenses and users from before the flags have every feature.
                assert_eq!((user.access, user.license_features), (Features::ALL, Features::ALL));
                let license = accounts.store().license_by_id(ves.license_id).await.expect("read").expect("license");
                assert_eq!((license.features, license.admin_email.as_deref()), (Features::ALL, None));
                let (device, credential, _) = accounts.activate_device("+15550100", "bob-password", None, None, false, SOURCE).await.expect("device");
                let cred = hex::decode(&credential).expect("hex");

                let e = accounts.create_operator("root", OperatorRole::NocAdmin, "operator-password-1", "admin:cli").await.expect("operator");
                let (secret, _) = accounts
                    .issue_operator_token(&e.operator, TokenKind::Api, TokenScope::Write, "test", std::time::Duration::from_secs(60), Some(SOURCE))
                    .await
                    .expect("token");
                let root: Principal = accounts.operator_principal(&secret, TokenKind::Api, None, Some(SOURCE)).await.expect("lookup").expect("live");

                // The license loses alerts and WAP, and gets an administrator.
                let fewer = Features::ALL.with(Feature::Alerts, false).with(Feature::BrowseWap, false);
                let change = LicenseChange { features: Some(fewer), admin_email: Some(Some(" IT@Example.com ".into())), ..LicenseChange::default() };
                let changed = accounts.change_license_as(&root, ves.license_id, &change).await.expect("change");
                assert_eq!((changed.features, changed.admin_email.as_deref()), (fewer, Some("it@example.com")));
                let bad = LicenseChange { admin_email: Some(Some("not an address".into())), ..LicenseChange::default() };
                assert!(matches!(accounts.change_license_as(&root, ves.license_id, &bad).await, Err(AccountError::Invalid(_))));
                let user = accounts.user_as(&root, user.id).await.expect("user");
                assert_eq!(user.license_features, fewer, "the user is read with the license's features");
                assert!(user.allows(Feature::ConstantSync) && !user.allows(Feature::Alerts) && !user.allows(Feature::BrowseWap));
                assert!(accounts.store().ves_of_licenses_without(Feature::ConstantSync).await.expect("query").is_empty());
                assert_eq!(accounts.store().ves_of_licenses_without(Feature::Alerts).await.expect("query"), [ves.id]);

                // A CSR takes ConstantSync away from the user: no device session, no new device.
                let blocked = Features::ALL.with(Feature::ConstantSync, false);
                let change = UserProfileChange { access: Some(blocked), ..UserProfileChange::default() };
                let user = accounts.change_user_as(&root, user.id, &change).await.expect("access");
                assert_eq!(user.access, blocked);
                assert!(!user.effective_constant_sync());
                let login = accounts.store().device_login(device.id).await.expect("query").expect("device");
                assert_eq!((login.user_access, login.license_features), (blocked, fewer));
                assert!(matches!(
                    accounts.authenticate_device_token(device.id, &cred).await,
                    Err(AccountError::FeatureDisabled(Feature::ConstantSync))
                ));
                assert!(matches!(
                    accounts.activate_device("+15550100", "bob-password", None, None, false, SOURCE).await,
                    Err(AccountError::FeatureDisabled(Feature::ConstantSync))
                ));
                // Given back to the user but taken from the license: still none.
                let change = UserProfileChange { access: Some(Features::ALL), ..UserProfileChange::default() };
                accounts.change_user_as(&root, user.id, &change).await.expect("access back");
                let change = LicenseChange { features: Some(Features::NONE), ..LicenseChange::default() };
                accounts.change_license_as(&root, ves.license_id, &change).await.expect("license without features");
                assert!(matches!(accounts.authenticate_device_token(device.id, &cred).await, Err(AccountError::FeatureDisabled(_))));
                assert_eq!(accounts.store().ves_of_licenses_without(Feature::ConstantSync).await.expect("query"), [ves.id]);
                let (users, devices) = accounts.license_population_as(&root, ves.license_id).await.expect("population");
                assert_eq!((users.len(), devices), (1, vec![device.id]));
                let change = LicenseChange { features: Some(Features::ALL), admin_email: Some(None), ..LicenseChange::default() };
                accounts.change_license_as(&root, ves.license_id, &change).await.expect("all back");
                accounts.authenticate_device_token(device.id, &cred).await.expect("a session again");

                // Each change is audited with the features by name.
                let audit = accounts.store().audit_search(&AuditFilter { limit: 50, ..AuditFilter::default() }).await.expect("audit");
                let change = |action: &str, field: &str| {
                    audit.iter().filter(|e| e.action == action).flat_map(|e| e.changes.clone()).filter(|c| c.field == field).collect::<Vec<_>>()
                };
                let access = change("user.change", "access");
                assert!(access.iter().any(|c| c.before == "browse_pc,browse_pda,browse_wap,constant_sync,alerts"
                    && c.after == "browse_pc,browse_pda,browse_wap,alerts"), "{access:?}");
                let features = change("license.change", "features");
                assert!(features.iter().any(|c| c.after == "none"), "{features:?}");
                assert!(change("license.change", "admin_email").iter().any(|c| c.after == "it@example.com"));
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn a_remote_wipe_waits_for_the_device_and_is_recorded_once() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "bob@example.com", Some("bob-password"), "Bob", "Ng").await.expect("bob");
                let user = accounts
                    .activate_account("bob@example.com", "bob-password", "+15550100", "UTC", SOURCE)
                    .await
                    .expect("activate");
                let (lost, credential, _) =
                    accounts.activate_device("+15550100", "bob-password", Some("lost"), None, false, SOURCE).await.expect("device");
                let (kept, kept_credential, _) =
                    accounts.activate_device("+15550100", "bob-password", Some("kept"), None, false, SOURCE).await.expect("device");
                let cred = hex::decode(&credential).expect("hex");
                let store = accounts.store();
                assert!(!accounts.device_wiped(lost.id).await.expect("no wipe asked"), "nothing to record");

                accounts.wipe_own_device(user.id, lost.id).await.expect("wipe asked");
                // Another user's device, or one already waiting: not found.
                assert!(matches!(accounts.wipe_own_device(noc_protocol::UserId::random(), kept.id).await, Err(AccountError::NotFound)));
                assert!(matches!(accounts.wipe_own_device(user.id, lost.id).await, Err(AccountError::NotFound)));
                // It opens no session (the right credential gets the wipe), even for a
                // suspended license; the VES no longer lists it; it cannot be renamed or
                // revoked (that would cancel the wipe), nor revoked by a password change.
                assert!(matches!(accounts.authenticate_device_token(lost.id, &cred).await, Err(AccountError::WipePending)));
                assert!(matches!(
                    accounts.authenticate_device_password(lost.id, "+15550100", "bob-password", SOURCE).await,
                    Err(AccountError::WipePending)
                ));
                accounts.set_license_suspended("acme", true, "admin:test").await.expect("suspend");
                assert!(matches!(accounts.authenticate_device_token(lost.id, &cred).await, Err(AccountError::WipePending)));
                accounts.set_license_suspended("acme", false, "admin:test").await.expect("lift");
                assert!(matches!(accounts.authenticate_device_token(lost.id, &[0u8; 32]).await, Err(AccountError::InvalidCredentials)));
                let by_ves: Vec<_> = store.devices_by_ves(ves.id).await.expect("devices").into_iter().map(|(d, _)| d).collect();
                assert_eq!(by_ves, vec![kept.id]);
                assert_eq!(store.device_records_by_ves(ves.id).await.expect("records").len(), 1);
                assert!(matches!(store.rename_device(user.id, lost.id, "x").await, Err(noc_storage::StoreError::NotFound)));
                assert!(matches!(store.revoke_device(user.id, lost.id, 1).await, Err(noc_storage::StoreError::NotFound)));
                let listed = store.devices_of_user(user.id).await.expect("own devices");
                assert_eq!(listed.len(), 2, "the user still sees it");
                let pending = listed.iter().find(|d| d.id == lost.id).expect("listed");
                assert!(pending.wipe_requested_at.is_some() && pending.wiped_at.is_none());
                let revoked = accounts.change_own_password(&user, "bob-password", "bob-password-2", "keep", true, SOURCE).await;
                assert_eq!(revoked.expect("password changed"), vec![kept.id], "only the live device is revoked");
                assert!(matches!(accounts.authenticate_device_token(lost.id, &cred).await, Err(AccountError::WipePending)));

                // Last seen moves forward only; unknown devices are skipped.
                let unknown = noc_protocol::DeviceId::random();
                store.record_devices_seen(&[(kept.id, 2_000), (unknown, 5)]).await.expect("seen");
                store.record_devices_seen(&[(kept.id, 1_000)]).await.expect("seen earlier");
                assert_eq!(store.device_by_id(kept.id).await.expect("read").expect("device").last_seen_at, Some(2_000));
                assert_eq!(store.device_by_id(lost.id).await.expect("read").expect("device").last_seen_at, None);

                // The device confirms: recorded once, its credential revoked, the receipt listed.
                assert!(accounts.device_wiped(lost.id).await.expect("recorded"));
                assert!(!accounts.device_wiped(lost.id).await.expect("once"));
                assert!(matches!(accounts.authenticate_device_token(lost.id, &cred).await, Err(AccountError::Revoked)));
                let listed = store.devices_of_user(user.id).await.expect("own devices");
                assert_eq!(listed.len(), 1, "the revoked device is gone, the wiped one stays: {listed:?}");
                assert!(listed[0].id == lost.id && listed[0].wiped_at.is_some() && listed[0].revoked_at.is_some());
                let kept_cred = hex::decode(&kept_credential).expect("hex");
                assert!(matches!(accounts.authenticate_device_token(kept.id, &kept_cred).await, Err(AccountError::Revoked)));
                let audit = store.audit_search(&AuditFilter { limit: 50, ..AuditFilter::default() }).await.expect("audit");
                let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
                assert!(actions.contains(&"device.wipe_requested") && actions.contains(&"device.wipe_done"), "{actions:?}");
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn secret_questions_are_per_license_hashed_and_shared_with_the_throttle() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "bob@example.com", Some("bob-password"), "Bob", "Ng").await.expect("bob");
                let user = accounts
                    .activate_account("bob@example.com", "bob-password", "+15550100", "UTC", SOURCE)
                    .await
                    .expect("activate");
                assert_eq!(accounts.own_secret_question(&user).await.expect("state"), (false, None));
                assert!(matches!(
                    accounts.set_own_secret_question(&user, "bob-password", "first_pet", "Rex", SOURCE).await,
                    Err(AccountError::Invalid(_))
                ), "not offered by default");
                let license = accounts.set_license_secret_question_recovery("acme", true, "admin:test").await.expect("on");
                assert!(license.secret_question_recovery);
                assert!(accounts.store().licenses().await.expect("licenses")[0].secret_question_recovery);
                assert!(matches!(
                    accounts.set_own_secret_question(&user, "bob-password", "favourite_colour", "Red", SOURCE).await,
                    Err(AccountError::Invalid(_))
                ), "only the offered questions");
                accounts.set_own_secret_question(&user, "bob-password", "first_pet", "Rex  Dog", SOURCE).await.expect("set");
                assert_eq!(accounts.own_secret_question(&user).await.expect("state"), (true, Some("first_pet".into())));
                let stored = accounts.store().secret_question(user.id).await.expect("query").expect("set");
                // An argon2id PHC string: base64 and `$`, never a space, so the answer (which
                // has one) cannot be in it; a three-letter probe could match the random salt.
                assert!(stored.answer_hash.starts_with("$argon2id$") && !stored.answer_hash.contains(' '), "{}", stored.answer_hash);

                assert!(matches!(
                    accounts.recover_by_question("bob@example.com", "first_pet", "Felix", SOURCE).await,
                    Err(AccountError::InvalidCredentials)
                ));
                let recovery = accounts.recover_by_question("+15550100", "first_pet", " rex dog", SOURCE).await.expect("right");
                assert_eq!(recovery.user.id, user.id);
                accounts.finish_recovery(&recovery.token, "bob-password-2").await.expect("new password");
                accounts.clear_own_secret_question(user.id).await.expect("clear");
                assert!(accounts.store().secret_question(user.id).await.expect("query").is_none());
                assert!(matches!(
                    accounts.recover_by_question("bob@example.com", "first_pet", "rex dog", SOURCE).await,
                    Err(AccountError::InvalidCredentials)
                ));
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn the_pool_is_reported_where_there_is_one() {
                let backend = super::$backend().await;
                backend.store.ping().await.expect("ping");
                match (stringify!($backend), backend.store.pool_status()) {
                    ("sqlite", status) => assert_eq!(status, None, "the embedded store has no pool"),
                    (_, Some(p)) => {
                        assert!(p.max > 0 && p.open >= 1 && p.open <= p.max && p.idle <= p.open, "{p:?}");
                        assert_eq!(p.waiting, 0);
                    }
                    (name, None) => panic!("{name}: no pool status"),
                }
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn operators_sign_in_with_a_password_and_a_one_time_second_factor() {
                use noc_storage::model::OperatorRole;
                use noc_storage::totp;
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let enrolment = accounts
                    .create_operator(" Alice.Admin ", OperatorRole::NocAdmin, "operator-password-1", "admin:cli")
                    .await
                    .expect("create");
                assert_eq!(enrolment.operator.name, "alice.admin");
                assert_eq!(enrolment.recovery_codes.len(), 10);
                assert!(enrolment.totp_uri.starts_with("otpauth://totp/NOC:alice.admin?secret="), "{}", enrolment.totp_uri);
                assert!(matches!(
                    accounts.create_operator("alice.admin", OperatorRole::Csr, "operator-password-2", "admin:cli").await,
                    Err(AccountError::Conflict(_))
                ));
                assert!(matches!(
                    accounts.create_operator("a b", OperatorRole::Csr, "operator-password-2", "admin:cli").await,
                    Err(AccountError::Invalid(noc_storage::Invalid::OperatorName))
                ));
                let listed = accounts.operators().await.expect("list");
                assert_eq!((listed.len(), listed[0].role), (1, OperatorRole::NocAdmin));

                let secret = &enrolment.operator.totp_secret;
                let now = (noc_protocol::clock::unix_ms_i64() / 1000) as u64;
                let code = format!("{:06}", totp::hotp(secret, totp::step(now)));
                // A code valid for no step of the window (±1 step, and a second of margin).
                let window: Vec<u32> = (totp::step(now) - 2..=totp::step(now) + 2).map(|s| totp::hotp(secret, s)).collect();
                let wrong = (0..1_000_000u32).find(|c| !window.contains(c)).expect("a wrong code");
                let wrong_code = format!("{wrong:06}");
                // Wrong password, unknown name, wrong second factor: all the same refusal.
                for (name, password, factor) in [
                    ("alice.admin", "not-the-password", code.as_str()),
                    ("nobody", "operator-password-1", code.as_str()),
                    ("alice.admin", "operator-password-1", wrong_code.as_str()),
                ] {
                    assert!(matches!(
                        accounts.operator_sign_in(name, password, factor, SOURCE).await,
                        Err(AccountError::InvalidCredentials)
                    ), "{name}/{password}/{factor}");
                }
                let signed_in = accounts.operator_sign_in("ALICE.admin", "operator-password-1", &code, SOURCE).await;
                assert_eq!(signed_in.expect("signed in").role, OperatorRole::NocAdmin);
                // The same code again is a replay.
                assert!(matches!(
                    accounts.operator_sign_in("alice.admin", "operator-password-1", &code, SOURCE).await,
                    Err(AccountError::InvalidCredentials)
                ));
                // A recovery code works once, in any case and with its dash.
                let recovery = enrolment.recovery_codes[3].to_uppercase();
                let other = std::net::IpAddr::from([192, 0, 2, 77]);
                accounts.operator_sign_in("alice.admin", "operator-password-1", &recovery, other).await.expect("recovery code");
                assert!(matches!(
                    accounts.operator_sign_in("alice.admin", "operator-password-1", &recovery, other).await,
                    Err(AccountError::InvalidCredentials)
                ));
                let audit = accounts.store().audit_search(&AuditFilter { limit: 50, ..AuditFilter::default() }).await.expect("audit");
                let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
                for action in ["operator.create", "operator.sign_in", "operator.sign_in_failed"] {
                    assert!(actions.contains(&action), "{action}: {actions:?}");
                }
                assert!(audit.iter().all(|e| !e.detail.contains(&code) && !e.detail.contains(&enrolment.totp_secret)));
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn operators_reach_only_what_their_role_and_licenses_allow() {
                use noc_storage::model::*;
                use noc_storage::Principal;
                use std::time::Duration;
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let store = accounts.store();
                let mut principals = Vec::new();
                for (name, role) in [("root", OperatorRole::NocAdmin), ("carol", OperatorRole::Csr),
                                     ("dave", OperatorRole::Csr), ("audra", OperatorRole::Auditor)] {
                    let e = accounts.create_operator(name, role, "operator-password-1", "admin:cli").await.expect("operator");
                    let (secret, token) = accounts
                        .issue_operator_token(&e.operator, TokenKind::Api, TokenScope::Write, "test", Duration::from_secs(60), Some(SOURCE))
                        .await
                        .expect("token");
                    assert_eq!(token.kind, TokenKind::Api);
                    let p = accounts.operator_principal(&secret, TokenKind::Api, None, Some(SOURCE)).await.expect("lookup").expect("live");
                    assert_eq!((p.name.as_str(), p.role), (name, role));
                    // The same secret is no console sign-in.
                    assert!(accounts.operator_principal(&secret, TokenKind::Console, None, None).await.expect("lookup").is_none());
                    principals.push(p);
                }
                let [root, carol, dave, audra] = <[Principal; 4]>::try_from(principals).expect("four");

                // Carol creates a license (hers from then on); root creates one and gives it to dave.
                let draft = |name: &str| LicenseDraft {
                    name: name.to_string(),
                    password: "license-pass".to_string(),
                    max_users: 5,
                    expires_at: None,
                    features: Features::ALL,
                    admin_email: None,
                };
                let hers = accounts.create_license_as(&carol, &draft("carol-co")).await.expect("hers");
                let his = accounts.create_license_as(&root, &draft("dave-co")).await.expect("his");
                accounts.grant_license_as(&root, his.id, "DAVE").await.expect("grant");
                assert!(matches!(accounts.grant_license_as(&carol, his.id, "carol").await, Err(AccountError::Forbidden)));
                let names = |ls: Vec<License>| ls.into_iter().map(|l| l.name).collect::<Vec<_>>();
                assert_eq!(names(accounts.licenses_as(&root).await.expect("all")), ["carol-co", "dave-co"]);
                assert_eq!(names(accounts.licenses_as(&carol).await.expect("hers")), ["carol-co"]);
                assert_eq!(names(accounts.licenses_as(&dave).await.expect("his")), ["dave-co"]);
                assert!(matches!(accounts.licenses_as(&audra).await, Err(AccountError::Forbidden)));
                // Another CSR's license does not exist for carol, to read or to change.
                assert!(matches!(accounts.license_as(&carol, his.id).await, Err(AccountError::NotFound)));
                let more = LicenseChange { max_users: Some(50), ..LicenseChange::default() };
                assert!(matches!(accounts.change_license_as(&carol, his.id, &more).await, Err(AccountError::NotFound)));
                assert_eq!(accounts.license_grantees_as(&root, his.id).await.expect("grantees"), ["dave"]);

                // A change is audited field by field, with role and source.
                let change = LicenseChange { max_users: Some(7), suspended: Some(true), expires_at: Some(Some(4_000_000_000_000)), ..LicenseChange::default() };
                let changed = accounts.change_license_as(&carol, hers.id, &change).await.expect("change");
                assert_eq!((changed.max_users, changed.suspended, changed.expires_at), (7, true, Some(4_000_000_000_000)));
                let unchanged = accounts.change_license_as(&carol, hers.id, &LicenseChange::default()).await.expect("no-op");
                assert_eq!(unchanged, changed);
                accounts.change_license_as(&carol, hers.id, &LicenseChange { suspended: Some(false), expires_at: Some(None), ..LicenseChange::default() })
                    .await
                    .expect("resume");
                let audit = accounts
                    .audit_as(&root, &AuditFilter { action: Some("license.".into()), limit: 10, ..AuditFilter::default() })
                    .await
                    .expect("audit");
                let first_change = audit.iter().rev().find(|e| e.action == "license.change").expect("a change");
                assert_eq!((first_change.actor.as_str(), first_change.role.as_str()), ("operator:carol", "csr"));
                assert_eq!(first_change.source, SOURCE.to_string());
                assert_eq!(first_change.changes, vec![
                    FieldChange::new("max_users", 5, 7),
                    FieldChange::new("expires_at", "never", 4_000_000_000_000i64),
                    FieldChange::new("suspended", false, true),
                ]);
                assert_eq!(audit.iter().filter(|e| e.action == "license.change").count(), 2, "a no-op is not audited");
                let created = audit.iter().find(|e| e.action == "license.create").expect("create");
                assert!(created.changes.iter().all(|c| !c.after.contains("license-pass")), "no secret: {created:?}");
                // Paging: the next page starts below the last id seen; an exact action is exact.
                let page2 = accounts
                    .audit_as(&root, &AuditFilter { before_id: Some(audit[1].id), limit: 100, ..AuditFilter::default() })
                    .await
                    .expect("page 2");
                assert!(page2.iter().all(|e| e.id < audit[1].id) && !page2.is_empty());
                let exact = AuditFilter { action: Some("license".into()), limit: 10, ..AuditFilter::default() };
                assert!(accounts.audit_as(&audra, &exact).await.expect("auditor reads").is_empty());
                assert!(matches!(accounts.audit_as(&carol, &exact).await, Err(AccountError::Forbidden)));

                // Users: each CSR finds only the users of their licenses.
                for (license, password, email) in [(&hers, "license-pass", "ann@carol.example"), (&his, "license-pass", "bob@dave.example")] {
                    let (token, _, _) = accounts.license_login(&license.name, password, SOURCE).await.expect("login");
                    let guid = noc_storage::secrets::random_hex::<16>();
                    let (ves, _) = accounts.authenticate_ves(&guid, Some(&token)).await.expect("ves");
                    accounts.provision_user(ves.id, license.id, email, Some("user-password-1"), "Ann", "Example").await.expect("user");
                }
                let everyone = UserFilter { limit: 10, ..UserFilter::default() };
                let emails = |us: Vec<UserRecord>| us.into_iter().map(|u| u.email).collect::<Vec<_>>();
                assert_eq!(emails(accounts.search_users_as(&root, &everyone).await.expect("root")), ["ann@carol.example", "bob@dave.example"]);
                assert_eq!(emails(accounts.search_users_as(&carol, &everyone).await.expect("carol")), ["ann@carol.example"]);
                let by_part = UserFilter { email: Some("DAVE.ex".into()), limit: 10, ..UserFilter::default() };
                assert!(accounts.search_users_as(&carol, &by_part).await.expect("none").is_empty());
                let bob = accounts.search_users_as(&dave, &by_part).await.expect("bob").remove(0);
                let by_name = UserFilter { name: Some("ann ex".into()), license: Some(his.id), limit: 10, ..UserFilter::default() };
                assert_eq!(emails(accounts.search_users_as(&root, &by_name).await.expect("name")), ["bob@dave.example"]);
                assert!(matches!(accounts.user_as(&carol, bob.id).await, Err(AccountError::NotFound)));
                assert!(matches!(accounts.set_user_suspended_as(&carol, bob.id, true).await, Err(AccountError::NotFound)));
                let (suspended, _) = accounts.set_user_suspended_as(&dave, bob.id, true).await.expect("suspend");
                assert_eq!(suspended.status, UserStatus::Suspended);
                let (back, _) = accounts.set_user_suspended_as(&dave, bob.id, false).await.expect("reactivate");
                assert_eq!(back.status, UserStatus::Provisioned, "never activated: back to provisioned");
                let paged = UserFilter { offset: 1, limit: 1, ..UserFilter::default() };
                assert_eq!(emails(accounts.search_users_as(&root, &paged).await.expect("page")), ["bob@dave.example"]);

                // A read-scoped token looks but never changes; operators are the admin's.
                let read_only = Principal { scope: TokenScope::Read, ..dave.clone() };
                accounts.user_as(&read_only, bob.id).await.expect("reads");
                assert!(matches!(accounts.set_user_suspended_as(&read_only, bob.id, true).await, Err(AccountError::Forbidden)));
                assert!(matches!(accounts.operators_as(&carol).await, Err(AccountError::Forbidden)));
                assert!(matches!(
                    accounts.create_operator_as(&carol, "eve", OperatorRole::NocAdmin, "operator-password-1").await,
                    Err(AccountError::Forbidden)
                ));
                accounts.create_operator_as(&root, "erin", OperatorRole::Csr, "operator-password-1").await.expect("erin");

                // Tokens: listed by their holder, revoked by id, then dead.
                let own = accounts.own_operator_tokens(&dave).await.expect("tokens");
                assert_eq!(own.len(), 1);
                assert!(matches!(accounts.revoke_own_operator_token(&carol, &own[0].id).await, Err(AccountError::NotFound)));
                accounts.revoke_own_operator_token(&dave, &own[0].id).await.expect("revoke");
                assert!(accounts.own_operator_tokens(&dave).await.expect("tokens").is_empty());
                // A console sign-in ends after idling.
                let root_record = store.operator_by_name("root").await.expect("get").expect("root");
                let (console, _) = accounts
                    .issue_operator_token(&root_record, TokenKind::Console, TokenScope::Write, "browser", Duration::from_secs(3600), None)
                    .await
                    .expect("console");
                assert!(accounts.operator_principal(&console, TokenKind::Console, Some(Duration::from_secs(60)), None).await.expect("live").is_some());
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert!(accounts.operator_principal(&console, TokenKind::Console, Some(Duration::from_millis(5)), None).await.expect("idle").is_none());
                assert!(accounts.operator_principal(&console, TokenKind::Console, Some(Duration::from_secs(60)), None).await.expect("gone").is_none(), "an idle sign-in is deleted");
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn usage_adds_up_per_day_and_license_and_counts_active_devices_once() {
                use noc_storage::model::*;
                use noc_protocol::{DeviceId, UserId};
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let store = accounts.store();
                let a = accounts.create_license("a-co", "license-pass", 5, None, "admin:test").await.expect("a");
                let b = accounts.create_license("b-co", "license-pass", 5, None, "admin:test").await.expect("b");
                let day = |d, license_id, frames| UsageDay {
                    day: d, license_id, frames_to_ves: frames, bytes_to_ves: frames * 10, frames_to_devices: 1,
                    bytes_to_devices: 2, undeliverable: 0, device_seconds: 60, active_devices: 99, active_users: 99,
                };
                let (d1, d2, u1, u2) = (DeviceId::random(), DeviceId::random(), UserId::random(), UserId::random());
                let seen = |d, license_id, device_id, user_id| ActiveDeviceDay { day: d, license_id, device_id, user_id };
                store.add_usage(&[day(100, a.id, 5), day(100, b.id, 1)], &[seen(100, a.id, d1, u1), seen(100, a.id, d2, u1)])
                    .await
                    .expect("first flush");
                // A second node's flush of the same day adds to it; a device seen again is one device.
                store.add_usage(&[day(100, a.id, 7)], &[seen(100, a.id, d1, u1), seen(101, a.id, d1, u1), seen(101, b.id, d2, u2)])
                    .await
                    .expect("second flush");
                let all = store.usage(&UsageFilter { from_day: 100, to_day: 101, ..UsageFilter::default() }).await.expect("read");
                let of = |d: i64, l| all.iter().find(|u| u.day == d && u.license_id == l).cloned().expect("a record");
                let a100 = of(100, a.id);
                assert_eq!((a100.frames_to_ves, a100.bytes_to_ves, a100.frames_to_devices, a100.device_seconds), (12, 120, 2, 120));
                assert_eq!((a100.active_devices, a100.active_users), (2, 1));
                let a101 = of(101, a.id);
                assert_eq!((a101.frames_to_ves, a101.active_devices), (0, 1), "seen, nothing relayed: still a record");
                assert_eq!(of(101, b.id).active_users, 1);
                assert_eq!(all.len(), 4);
                let only_a = UsageFilter { from_day: 100, to_day: 100, license: Some(a.id), ..UsageFilter::default() };
                assert_eq!(store.usage(&only_a).await.expect("a").len(), 1);
                let none = UsageFilter { from_day: 102, to_day: 200, ..UsageFilter::default() };
                assert!(store.usage(&none).await.expect("later").is_empty());
                // A node's first flush of a day has a row for each of its live sessions:
                // more than one statement's worth, one of them twice.
                let many: Vec<_> = (0..12_001).map(|_| seen(102, b.id, DeviceId::random(), UserId::random())).collect();
                let mut flush = many.clone();
                flush.push(many[7]);
                store.add_usage(&[], &flush).await.expect("a large flush");
                let day_102 = UsageFilter { from_day: 102, to_day: 102, ..UsageFilter::default() };
                let b102 = store.usage(&day_102).await.expect("read");
                assert_eq!(b102.len(), 1);
                assert_eq!((b102[0].active_devices, b102[0].active_users, b102[0].frames_to_ves), (12_001, 12_001, 0));
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn the_audit_purge_keeps_its_retention_runs_once_a_day_and_is_audited() {
                use noc_storage::model::*;
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let store = accounts.store();
                let now = noc_protocol::clock::unix_ms_i64();
                let day = 86_400_000;
                for (age_days, action) in [(40, "old.one"), (31, "old.two"), (29, "recent.one"), (0, "recent.two")] {
                    let mut e = AuditEvent::new("system".into(), action, "x".into(), String::new());
                    e.at = now - age_days * day;
                    store.append_audit(e).await.expect("append");
                }
                let retention = std::time::Duration::from_secs(30 * 86_400);
                assert_eq!(accounts.purge_audit(retention).await.expect("purge"), Some(2));
                let all = store.audit_search(&AuditFilter { limit: 100, ..AuditFilter::default() }).await.expect("read");
                let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
                assert_eq!(actions, ["audit.purge", "recent.two", "recent.one"]);
                assert_eq!(all[0].changes[0], FieldChange::new("purged_events", "", 2));
                assert_eq!(accounts.purge_audit(retention).await.expect("again"), None, "once a day, cluster-wide");
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn ves_of_suspended_and_expired_licenses_and_of_the_others() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let store = accounts.store();
                let ves = registered_ves(&accounts, 5).await;
                accounts.create_license("brief", "license-pass", 5, Some(1_000), "admin:test").await.expect("brief");
                assert!(store.ves_of_unusable_licenses(999).await.expect("query").is_empty(), "nothing expired yet");

                // A VES of the expiring license, registered while it was still valid.
                let brief_id = store.license_by_name("brief").await.expect("query").expect("brief").0.id;
                let brief_ves = store.insert_ves(&[9u8; 32], brief_id, 500).await.expect("ves");
                assert!(store.ves_of_unusable_licenses(999).await.expect("query").is_empty());
                assert_eq!(store.ves_of_unusable_licenses(1_000).await.expect("query"), vec![brief_ves.id]);
                let mut usable = store.ves_of_usable_licenses(999).await.expect("query");
                usable.sort_by_key(|(_, v)| v.to_string());
                let mut want = vec![(brief_id, brief_ves.id), (ves.license_id, ves.id)];
                want.sort_by_key(|(_, v)| v.to_string());
                assert_eq!(usable, want, "the complement, with the licenses");
                assert_eq!(store.ves_of_usable_licenses(1_000).await.expect("query"), vec![(ves.license_id, ves.id)]);

                accounts.set_license_suspended("acme", true, "admin:test").await.expect("suspend");
                assert!(store.ves_of_usable_licenses(1_000).await.expect("query").is_empty());
                let mut both = store.ves_of_unusable_licenses(1_000).await.expect("query");
                both.sort_by_key(|v| v.to_string());
                let mut want = vec![brief_ves.id, ves.id];
                want.sort_by_key(|v| v.to_string());
                assert_eq!(both, want);
                accounts.set_license_suspended("acme", false, "admin:test").await.expect("resume");
                assert_eq!(store.ves_of_unusable_licenses(999).await.expect("query"), vec![]);
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn repeated_failures_are_throttled_alike_for_known_and_unknown_logins() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "eve@example.com", Some("eve-password"), "Eve", "X").await.expect("eve");
                for login in ["eve@example.com", "nobody@example.com"] {
                    for _ in 0..3 {
                        assert!(matches!(accounts.check_login(login, "wrong", SOURCE).await, Err(AccountError::InvalidCredentials)));
                    }
                    // The fourth attempt in a row waits, known name or not, without a check.
                    assert!(matches!(
                        accounts.check_login(login, "eve-password", SOURCE).await,
                        Err(AccountError::Throttled(noc_storage::Throttled::Login { .. }))
                    ));
                }
                // From another address the owner still signs in: nothing was locked.
                let elsewhere: std::net::IpAddr = "192.0.2.200".parse().expect("ip");
                accounts.check_login("eve@example.com", "eve-password", elsewhere).await.expect("owner signs in");
                let audit = accounts.store().audit_search(&AuditFilter { limit: 50, ..AuditFilter::default() }).await.expect("audit");
                assert_eq!(audit.iter().filter(|e| e.action == "user.login_failed").count(), 3);
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn msisdn_approval_list() {
                let policy = AccountPolicy { msisdn_approval: MsisdnApproval::List, ..policy() };
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "al@example.com", Some("al-password"), "Al", "B").await.expect("al");
                assert!(matches!(
                    accounts.activate_account("al@example.com", "al-password", "+4917000000", "UTC", SOURCE).await,
                    Err(AccountError::MsisdnNotApproved)
                ));
                accounts.store().approve_msisdn("+4917000000", "csr:test", 0).await.expect("approve");
                accounts.activate_account("al@example.com", "al-password", "+4917000000", "UTC", SOURCE).await.expect("ok");
                backend.cleanup().await;
            }

            /// Web sessions: live while used within the inactivity window or until their
            /// absolute end, deleted once found ended, revocable one by one and all but the
            /// current one; users never touch each other's.
            #[tokio::test]
            async fn web_sessions_expire_idle_and_are_revoked() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                let ann = accounts.provision_user(ves.id, ves.license_id, "ann@example.com", Some("ann-password"), "Ann", "A").await.expect("ann").0;
                let bob = accounts.provision_user(ves.id, ves.license_id, "bob@example.com", Some("bob-password"), "Bob", "B").await.expect("bob").0;
                let store = accounts.store();
                let session = |id: &str, user: noc_protocol::UserId, at: i64, persistent: bool| noc_storage::WebSession {
                    id: id.into(),
                    user_id: user,
                    created_at: at,
                    last_seen_at: at,
                    expires_at: at + 10_000,
                    persistent,
                    client: "Firefox (Linux)".into(),
                };
                store.insert_web_session(b"tok-ann-1", &session("a1", ann.id, 1_000, false)).await.expect("insert");
                store.insert_web_session(b"tok-ann-2", &session("a2", ann.id, 1_100, true)).await.expect("insert");
                store.insert_web_session(b"tok-bob-1", &session("b1", bob.id, 1_200, false)).await.expect("insert");

                // Used within the window: live, and the window moves with it.
                let w = store.touch_web_session(b"tok-ann-1", 2_000, 1_000).await.expect("touch").expect("live");
                assert_eq!((w.user_id, w.last_seen_at, w.id.as_str()), (ann.id, 2_000, "a1"));
                assert_eq!(store.touch_web_session(b"nope", 2_000, 0).await.expect("touch"), None);
                // Idle too long: ended and gone, even if later asked with a wider window.
                assert_eq!(store.touch_web_session(b"tok-ann-1", 5_000, 2_001).await.expect("touch"), None);
                assert_eq!(store.touch_web_session(b"tok-ann-1", 5_000, 0).await.expect("touch"), None);
                // Persistent: idle does not matter, the absolute end does.
                assert!(store.touch_web_session(b"tok-ann-2", 9_000, 8_999).await.expect("touch").is_some());
                assert_eq!(store.touch_web_session(b"tok-ann-2", 11_100, 0).await.expect("touch"), None);

                store.insert_web_session(b"tok-ann-3", &session("a3", ann.id, 3_000, true)).await.expect("insert");
                store.insert_web_session(b"tok-ann-4", &session("a4", ann.id, 3_100, false)).await.expect("insert");
                let listed: Vec<String> = store.web_sessions_of_user(ann.id, 3_200).await.expect("list").into_iter().map(|w| w.id).collect();
                assert_eq!(listed, vec!["a4", "a3"], "newest first, ended ones not listed");
                // Another user's id revokes nothing; the owner's does.
                assert!(!store.delete_web_session_by_id(bob.id, "a3").await.expect("delete"));
                assert!(store.delete_web_session_by_id(ann.id, "a3").await.expect("delete"));
                assert_eq!(store.touch_web_session(b"tok-ann-3", 3_300, 0).await.expect("touch"), None);
                // Everything but the current session; Bob's stays.
                store.insert_web_session(b"tok-ann-5", &session("a5", ann.id, 3_400, false)).await.expect("insert");
                assert_eq!(store.delete_web_sessions_of_user(ann.id, Some(b"tok-ann-5")).await.expect("delete"), 1);
                assert!(store.touch_web_session(b"tok-ann-5", 3_500, 3_000).await.expect("touch").is_some());
                assert!(store.touch_web_session(b"tok-bob-1", 3_500, 1_000).await.expect("touch").is_some());
                assert!(store.delete_web_session(b"tok-ann-5").await.expect("sign out"));
                assert!(!store.delete_web_session(b"tok-ann-5").await.expect("twice"));
                // A new session sweeps the ones that have ended.
                store.insert_web_session(b"tok-bob-2", &session("b2", bob.id, 20_000, false)).await.expect("insert");
                assert_eq!(store.web_sessions_of_user(bob.id, 0).await.expect("list").len(), 1, "b1 swept");
                // Deleting the user deletes its sessions.
                store.delete_user(bob.id).await.expect("delete bob");
                assert_eq!(store.touch_web_session(b"tok-bob-2", 20_001, 0).await.expect("touch"), None);
                backend.cleanup().await;
            }

            /// The cluster-wide alert rate: `max` per user and clock hour, counted atomically
            /// by whichever node asks, a new hour starting from zero, other users apart.
            #[tokio::test]
            async fn alerts_are_admitted_up_to_the_hourly_limit_per_user() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                let (ann, _, _) = accounts.provision_user(ves.id, ves.license_id, "ann@example.com", None, "A", "N").await.expect("ann");
                let (bob, _, _) = accounts.provision_user(ves.id, ves.license_id, "bob@example.com", None, "B", "O").await.expect("bob");
                let store = accounts.store();
                let hour = 493_000;
                // Three nodes asking at once for five alerts each: exactly three get through.
                let tries = (0..15).map(|_| store.admit_alert(ann.id, hour, 3));
                let admitted = futures_util::future::join_all(tries).await;
                assert_eq!(admitted.iter().filter(|r| matches!(r, Ok(true))).count(), 3, "{admitted:?}");
                assert!(admitted.iter().all(|r| r.is_ok()));
                assert!(store.admit_alert(bob.id, hour, 3).await.expect("bob"), "per user");
                assert!(store.admit_alert(ann.id, hour + 1, 3).await.expect("next hour"), "a new hour");
                assert!(!store.admit_alert(ann.id, hour + 2, 0).await.expect("none allowed"));
                // Deleting a user with counts on record works: they go with the user (a
                // foreign key without ON DELETE CASCADE would refuse the deletion).
                accounts.store().delete_user(ann.id).await.expect("delete");
                backend.cleanup().await;
            }

            /// A new alert address gets alerts only once confirmed through the mailed
            /// token; the account's own needs no confirmation; links expire and are rationed.
            #[tokio::test]
            async fn alert_addresses_are_confirmed_before_alerts_go_there() {
                use noc_storage::AlertDelivery;
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                let (user, _, _) = accounts.provision_user(ves.id, ves.license_id, "al@example.com", None, "Al", "Ert").await.expect("user");
                let to = |email: &str| AlertDelivery { email: Some(email.into()), ..AlertDelivery::default() };

                let (stored, confirm) = accounts.set_own_alert_delivery(user.id, to("AL@example.com"), false).await.expect("own");
                assert!(confirm.is_none(), "the account's own address needs no link");
                assert_eq!(stored.alert_delivery.email.as_deref(), Some("al@example.com"));

                // A UTC midnight passing during the test starts a new day's count (below).
                let day = || noc_protocol::clock::unix_ms_i64().div_euclid(86_400_000);
                let first_day = day();
                let (stored, confirm) = accounts.set_own_alert_delivery(user.id, to("pager@example.net"), false).await.expect("new");
                let confirm = confirm.expect("a link to mail");
                assert_eq!(confirm.address, "pager@example.net");
                assert_eq!(stored.alert_delivery.email.as_deref(), Some("al@example.com"), "the old one until confirmed");
                assert_eq!(stored.alert_delivery.pending_email.as_ref().map(|p| p.address.as_str()), Some("pager@example.net"));
                let (_, again) = accounts.set_own_alert_delivery(user.id, to("pager@example.net"), false).await.expect("same");
                assert!(again.is_none(), "asked again while the link is good: no second mail");

                let (id, secret) = confirm.token.split_once('.').expect("token");
                for wrong in [format!("{id}.{}", "0".repeat(64)), format!("{}.{secret}", noc_protocol::UserId::random()), "garbage".into()] {
                    assert!(matches!(accounts.confirm_alert_email(&wrong).await, Err(AccountError::InvalidCredentials)), "{wrong}");
                }
                let confirmed = accounts.confirm_alert_email(&confirm.token).await.expect("confirm");
                assert_eq!(confirmed.alert_delivery.email.as_deref(), Some("pager@example.net"));
                assert!(confirmed.alert_delivery.pending_email.is_none());
                assert!(matches!(accounts.confirm_alert_email(&confirm.token).await, Err(AccountError::InvalidCredentials)), "once");

                // Entering the confirmed address again cancels one waiting: its link is dead.
                let (_, other) = accounts.set_own_alert_delivery(user.id, to("other@example.net"), false).await.expect("other");
                let other = other.expect("link");
                let (kept, none) = accounts.set_own_alert_delivery(user.id, to("pager@example.net"), false).await.expect("back");
                assert!(none.is_none() && kept.alert_delivery.pending_email.is_none());
                assert!(matches!(accounts.confirm_alert_email(&other.token).await, Err(AccountError::InvalidCredentials)));

                // An expired link confirms nothing.
                let (_, late) = accounts.set_own_alert_delivery(user.id, to("late@example.net"), false).await.expect("late");
                let late = late.expect("link");
                let mut d = accounts.store().user_by_id(user.id).await.expect("read").expect("user").alert_delivery;
                if let Some(p) = d.pending_email.as_mut() {
                    p.expires_at = 1;
                }
                accounts.store().set_alert_delivery(user.id, &d, 2).await.expect("age it");
                assert!(matches!(accounts.confirm_alert_email(&late.token).await, Err(AccountError::InvalidCredentials)));

                // Five links a day at most (three sent so far).
                for i in 0..2 {
                    let (_, c) = accounts.set_own_alert_delivery(user.id, to(&format!("n{i}@example.net")), false).await.expect("new");
                    assert!(c.is_some());
                }
                let sixth = accounts.set_own_alert_delivery(user.id, to("sixth@example.net"), false).await;
                if day() == first_day {
                    assert!(matches!(sixth, Err(AccountError::Invalid(noc_storage::Invalid::AlertEmailRationed { max: 5 }))));
                }
                let (cleared, _) = accounts.set_own_alert_delivery(user.id, AlertDelivery::default(), false).await.expect("clear");
                assert!(cleared.alert_delivery.email.is_none() && cleared.alert_delivery.pending_email.is_none());
                backend.cleanup().await;
            }

            /// What the settings page stores comes back as stored, and is validated first.
            #[tokio::test]
            async fn user_settings_are_stored_and_validated() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                let (user, _, _) = accounts.provision_user(ves.id, ves.license_id, "set@example.com", Some("set-password"), "Set", "Up").await.expect("user");
                let rules = vec![noc_protocol::rts::FilterRule { field: "from".into(), contains: "boss".into() }];
                let settings = noc_storage::UserSettings {
                    first_name: " Sét ".into(),
                    last_name: "Up".into(),
                    time_zone: Some("Europe/Paris".into()),
                    constant_sync: false,
                    filter_rules: rules.clone(),
                    alerts_enabled: false,
                    contact_email: Some("Set.Private@Example.ORG".into()),
                    locale: Some("de".into()),
                    calendar_days_ahead: 90,
                };
                assert_eq!(user.calendar_days_ahead, noc_storage::DEFAULT_CALENDAR_DAYS_AHEAD, "a new user's");
                let updated = accounts.update_own_settings(user.id, settings.clone()).await.expect("update");
                let stored = accounts.store().user_by_id(user.id).await.expect("read").expect("user");
                assert_eq!(updated.first_name, "Sét");
                assert_eq!((stored.first_name.as_str(), stored.time_zone.as_deref()), ("Sét", Some("Europe/Paris")));
                assert_eq!((stored.constant_sync, &stored.filter_rules), (false, &rules));
                assert_eq!(stored.contact_email.as_deref(), Some("set.private@example.org"), "normalised");
                assert_eq!(stored.locale.as_deref(), Some("de"));
                assert_eq!(stored.calendar_days_ahead, 90);
                assert!(!stored.alerts_enabled);
                for days in [0, 366] {
                    let out_of_bounds = noc_storage::UserSettings { calendar_days_ahead: days, ..settings.clone() };
                    assert!(matches!(
                        accounts.update_own_settings(user.id, out_of_bounds).await,
                        Err(AccountError::Invalid(noc_storage::Invalid::CalendarDaysAhead))
                    ));
                }
                assert!(stored.effective_filter_rules().is_empty(), "alerts off: the VES gets no rules");
                assert_eq!(stored.filter_rules, rules, "but they are kept");
                let bad_locale = noc_storage::UserSettings { locale: Some("<script>".into()), ..settings.clone() };
                assert!(matches!(
                    accounts.update_own_settings(user.id, bad_locale).await,
                    Err(AccountError::Invalid(noc_storage::Invalid::Locale))
                ));
                let cleared = noc_storage::UserSettings { contact_email: Some("  ".into()), ..settings.clone() };
                accounts.update_own_settings(user.id, cleared).await.expect("clear");
                assert_eq!(accounts.store().user_by_id(user.id).await.expect("read").expect("user").contact_email, None);
                let bad = noc_storage::UserSettings { contact_email: Some("not an address".into()), ..settings };
                assert!(matches!(accounts.update_own_settings(user.id, bad).await, Err(AccountError::Invalid(_))));
                backend.cleanup().await;
            }

            /// Password recovery: a one-time token per request, a few per hour, nothing for
            /// unknown or inactive accounts; the token works once, and a refused password
            /// does not spend it.
            #[tokio::test]
            async fn recovery_tokens_work_once_and_are_rationed() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "rec@example.com", Some("rec-password"), "Re", "Co").await.expect("user");
                assert!(accounts.start_recovery("rec@example.com", SOURCE).await.expect("start").is_none(), "not activated yet");
                accounts.activate_account("rec@example.com", "rec-password", "+15550123", "UTC", SOURCE).await.expect("activate");
                assert!(accounts.start_recovery("nobody@example.com", SOURCE).await.expect("start").is_none());
                let first = accounts.start_recovery(" REC@example.com ", SOURCE).await.expect("start").expect("by address");
                let by_number = accounts.start_recovery("+15550123", SOURCE).await.expect("start").expect("by number");
                assert_ne!(first.token, by_number.token);
                assert!(first.token.len() >= 64);
                accounts.start_recovery("rec@example.com", SOURCE).await.expect("start").expect("third");
                // One address asking again and again is throttled like a password guesser;
                // from elsewhere, the account's ration (three an hour) still holds.
                assert!(matches!(accounts.start_recovery("rec@example.com", SOURCE).await, Err(AccountError::Throttled(_))));
                let elsewhere = std::net::IpAddr::from([192, 0, 2, 99]);
                assert!(accounts.start_recovery("rec@example.com", elsewhere).await.expect("start").is_none(), "three an hour");

                assert!(matches!(accounts.finish_recovery(&first.token, "short").await, Err(AccountError::Invalid(_))));
                let user = accounts.finish_recovery(&first.token, "recovered-pw").await.expect("finish");
                assert_eq!(user.email, "rec@example.com");
                assert!(matches!(accounts.finish_recovery(&first.token, "recovered-pw-2").await, Err(AccountError::InvalidCredentials)), "once");
                assert!(matches!(accounts.finish_recovery("00", "recovered-pw-2").await, Err(AccountError::InvalidCredentials)));
                accounts.check_login("rec@example.com", "recovered-pw", SOURCE).await.expect("new password");

                // Expired: refused, and gone.
                let store = accounts.store();
                let hash = noc_storage::secrets::token_hash(b"expired-token");
                store.insert_recovery_token(&hash, user.id, 1_000, 2_000).await.expect("insert");
                assert_eq!(store.take_recovery_token(&hash, 2_000).await.expect("take"), None);
                let hash2 = noc_storage::secrets::token_hash(b"live-token");
                store.insert_recovery_token(&hash2, user.id, 1_000, 5_000).await.expect("insert");
                assert_eq!(store.take_recovery_token(&hash2, 4_999).await.expect("take"), Some(user.id));
                assert_eq!(store.take_recovery_token(&hash2, 4_999).await.expect("take"), None);
                backend.cleanup().await;
            }

            #[tokio::test]
            async fn msisdn_is_unique() {
                let backend = super::$backend().await;
                let accounts = Accounts::new(backend.store.clone(), policy()).expect("accounts");
                let ves = registered_ves(&accounts, 5).await;
                accounts.provision_user(ves.id, ves.license_id, "x@example.com", Some("x-password"), "X", "X").await.expect("x");
                accounts.provision_user(ves.id, ves.license_id, "y@example.com", Some("y-password"), "Y", "Y").await.expect("y");
                accounts.activate_account("x@example.com", "x-password", "+3312345678", "UTC", SOURCE).await.expect("x");
                assert!(matches!(
                    accounts.activate_account("y@example.com", "y-password", "+3312345678", "UTC", SOURCE).await,
                    Err(AccountError::Conflict("msisdn"))
                ));
                backend.cleanup().await;
            }
        }
    )* };
}

conformance!(sqlite, postgres);

#[tokio::test]
async fn sqlite_file_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("noc.sqlite3");
    {
        let accounts = Accounts::new(Arc::new(SqliteStore::open(&path).expect("open")), policy()).expect("accounts");
        accounts.create_license("persist", "persist-pass", 3, None, "admin:test").await.expect("create");
    }
    let store = SqliteStore::open(&path).expect("reopen");
    let licenses = store.licenses().await.expect("list");
    assert_eq!(licenses.len(), 1);
    assert_eq!(licenses[0].name, "persist");
}

/// A database that cannot be reached is `Unavailable` (→ 503), and fails fast.
#[tokio::test]
async fn unreachable_postgres_is_unavailable_and_fails_fast() {
    let started = std::time::Instant::now();
    let err = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/test",
        PostgresOptions { connect_timeout: std::time::Duration::from_secs(1), ..PostgresOptions::default() },
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(matches!(err, noc_storage::StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:5432", PostgresOptions::default())
        .await
        .expect_err("a URL without a database name is refused");
    assert!(err.to_string().contains("database"), "{err}");
}

/// Parallel guesses cannot get past the throttle: attempts are counted before the password
/// check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_do_not_bypass_the_throttle() {
    let base = policy();
    let policy = AccountPolicy { hashing: PasswordHashing { workers: 8, ..base.hashing }, ..base };
    let accounts = Accounts::new(sqlite().await.store, policy).expect("accounts");
    let ves = registered_ves(&accounts, 5).await;
    accounts
        .provision_user(ves.id, ves.license_id, "p@example.com", Some("right-password"), "P", "Q")
        .await
        .expect("p");
    let guesses: Vec<_> = (0..20)
        .map(|i| {
            let a = accounts.clone();
            tokio::spawn(async move {
                let pw = if i == 19 { "right-password".to_string() } else { format!("wrong-{i}") };
                a.check_login("p@example.com", &pw, SOURCE).await
            })
        })
        .collect();
    let mut checked = 0;
    for g in guesses {
        match g.await.expect("task") {
            Err(AccountError::InvalidCredentials) => checked += 1,
            Err(AccountError::Throttled(_)) => {}
            Ok(_) => checked += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    // Three free failures: at most three passwords were actually checked.
    assert!(checked <= 3, "{checked} guesses were checked");
}

/// With `sslmode=require` the store talks TLS and verifies the server: the machine's
/// PostgreSQL (its certificate as the CA, reached by the name in that certificate) works,
/// and the same server under a name its certificate does not carry is refused.
#[tokio::test]
async fn postgres_over_verified_tls() {
    let base = std::env::var("NOC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let (plain, conn) =
        tokio_postgres::connect(&base, tokio_postgres::NoTls).await.expect("PostgreSQL must be running");
    tokio::spawn(conn);
    let ssl: String = plain.query_one("SHOW ssl", &[]).await.expect("show ssl").get(0);
    assert_eq!(ssl, "on", "PostgreSQL must have ssl = on for this test (scripts/test.sh turns it on)");
    let cert: String = plain.query_one("SHOW ssl_cert_file", &[]).await.expect("cert file").get(0);
    let schema = format!("noc_test_{}", noc_storage::secrets::random_hex::<8>());
    plain.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let app = format!("noc-tls-{}", noc_storage::secrets::random_hex::<4>());
    let url = format!(
        "{}?sslmode=require&application_name={app}&options=-csearch_path%3D{schema}",
        base.replacen("127.0.0.1", "localhost", 1)
    );
    let options = PostgresOptions { tls_ca_path: Some(cert.into()), ..PostgresOptions::default() };

    let store = PostgresStore::connect(&url, options.clone()).await.expect("TLS connection verified against the CA");
    let accounts = Accounts::new(Arc::new(store), policy()).expect("accounts");
    accounts.create_license("tls", "license-pass", 1, None, "admin:test").await.expect("a write over TLS");
    let encrypted: bool = plain
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_ssl")
        .get::<_, Option<bool>>(0)
        .expect("the store's connections are listed");
    assert!(encrypted, "every connection of the store uses TLS");

    // The certificate names `localhost`, not `127.0.0.1`: verification refuses the server.
    let wrong_name = url.replacen("localhost", "127.0.0.1", 1);
    let err = PostgresStore::connect(&wrong_name, options).await.expect_err("host name not in the certificate");
    assert!(matches!(err, noc_storage::StoreError::Unavailable(_) | noc_storage::StoreError::Backend(_)), "{err:?}");
    plain.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.expect("drop schema");
}
