use noc_protocol::rts::ActiveUser;

use super::*;

/// Issues with the CA it holds, but for a key of its own instead of the request's: what
/// the agent must refuse (seed 002 step 13a).
struct OtherKeyCa(FileCa);

impl CaConnector for OtherKeyCa {
    fn issue(&self, _csr: &str, subject: &[(String, String)]) -> Issuance {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
        self.0.issue(&csr, subject)
    }
}

/// A CA that cannot be reached.
struct DownCa;

impl CaConnector for DownCa {
    fn issue(&self, _csr: &str, _subject: &[(String, String)]) -> Issuance {
        Box::pin(async { Err(ConnectorError::Unavailable("connection refused".into())) })
    }
}

fn file_ca() -> FileCa {
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let (ca, _) = noc_ca::DeviceCa::generate("Corp Issuing CA", now).expect("ca");
    FileCa { ca: Arc::new(ca), validity_days: 30 }
}

struct Fixture {
    _dir: tempfile::TempDir,
    enrollment: Enrollment,
    store: Arc<Store>,
    device: DeviceId,
    /// The CA of the profile "short" (30-day certificates, renewal 40 days ahead, a
    /// revocation list at `crl_path`).
    short_ca: Arc<noc_ca::DeviceCa>,
    crl_path: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(Store::open(&dir.path().join("agent.db"), db::SCHEMA).expect("store"));
    let user = UserId::random();
    let active = ActiveUser {
        user_id: user,
        email: "bob@corp.example".into(),
        first_name: "Bob".into(),
        last_name: "Ng".into(),
        msisdn: None,
        time_zone: None,
        calendar_days_ahead: None,
    };
    db::upsert_users(&store, &[active], true).expect("user");
    let device = DeviceId::random();
    db::upsert_device(&store, device, user, Some("phone")).expect("device");
    let profile = |require_approval, connector: Arc<dyn CaConnector>| Profile {
        require_approval,
        subject_suffix: vec![("O".into(), "Corp".into())],
        connector,
        renew_before: None,
        crl: None,
    };
    let mut profiles = HashMap::new();
    profiles.insert("wifi".to_string(), profile(true, Arc::new(file_ca())));
    profiles.insert("vpn".to_string(), profile(false, Arc::new(file_ca())));
    profiles.insert("rogue".to_string(), profile(false, Arc::new(OtherKeyCa(file_ca()))));
    profiles.insert("down".to_string(), profile(false, Arc::new(DownCa)));
    let short = file_ca();
    let short_ca = short.ca.clone();
    let crl_path = dir.path().join("short.crl");
    let mut short = profile(false, Arc::new(short));
    short.renew_before = Some(Duration::from_secs(40 * 86_400));
    short.crl = Some((CrlSource::Path(crl_path.clone()), Duration::ZERO));
    profiles.insert("short".to_string(), short);
    let limits = QueueLimits { max_items: 100, ttl_ms: 60_000, policy: FullPolicy::DropOldest };
    let enrollment = Enrollment::new(store.clone(), profiles, limits);
    Fixture { _dir: dir, enrollment, store, device, short_ca, crl_path }
}

impl Fixture {
    fn ask(&self, id: &str, profile: &str, csr: Option<String>) {
        let request = CertificateRequest { request_id: id.into(), profile: profile.into(), csr };
        self.enrollment.on_request(self.device, &serde_json::to_vec(&request).expect("json")).expect("answered");
    }

    /// The latest status queued for the device about `id`.
    fn status(&self, id: &str) -> CertificateStatus {
        let queued = self.store.outbox(Some(&self.device.to_string())).expect("outbox");
        let statuses: Vec<CertificateStatus> = queued
            .iter()
            .map(|o| Item::decode(&o.encoded).expect("item"))
            .filter(|i| i.header.name.as_deref() == Some(id))
            .map(|i| CertificateStatus::parse(&i.body).expect("status"))
            .collect();
        assert_eq!(statuses.len(), 1, "each status replaces the one queued before: {statuses:?}");
        statuses.into_iter().next().expect("a status")
    }

    /// Step one and two: the subject, then a request for it; returns the key.
    fn enroll(&self, id: &str, profile: &str) -> rcgen::KeyPair {
        self.ask(id, profile, None);
        let status = self.status(id);
        assert_eq!(status.state, EnrollState::Subject);
        let subject: Vec<(String, String)> = status.subject.iter().map(|a| (a.kind.clone(), a.value.clone())).collect();
        assert_eq!(
            subject,
            [("CN", "Bob Ng"), ("emailAddress", "bob@corp.example"), ("O", "Corp")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = noc_ca::subject::to_rcgen(&subject).expect("dn");
        let csr = params.serialize_request(&key).expect("csr").pem().expect("pem");
        self.ask(id, profile, Some(csr));
        key
    }
}

#[tokio::test]
async fn an_approved_request_is_issued_for_the_requests_key() {
    let f = fixture();
    let key = f.enroll("r1", "wifi");
    assert_eq!(f.status("r1").state, EnrollState::Queued);
    let pending = f.enrollment.pending().expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].request_id.as_str(), pending[0].email.as_str()), ("r1", "bob@corp.example"));
    assert_eq!(pending[0].subject, "CN=Bob Ng, emailAddress=bob@corp.example, O=Corp");
    f.enrollment.step().await.expect("step");
    assert_eq!(f.status("r1").state, EnrollState::Queued, "nothing goes to the CA before approval");

    assert_eq!(f.enrollment.approve("r1").expect("approve").state, "approved");
    assert_eq!(f.status("r1").state, EnrollState::Approved);
    f.enrollment.step().await.expect("step");
    let issued = f.status("r1");
    assert_eq!(issued.state, EnrollState::Issued);
    let chain = issued.chain.expect("chain");
    assert_eq!(leaf_public_key(&chain).as_deref(), Some(key.public_key_raw()));
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "the certificate and its CA");
    assert!(f.enrollment.pending().expect("pending").is_empty());
    assert!(f.enrollment.approve("r1").is_err(), "approved once");
    // A replayed first step cannot reset what was issued.
    f.ask("r1", "wifi", None);
    assert_eq!(f.status("r1").state, EnrollState::Issued);
    assert_eq!(f.enrollment.all().expect("all")[0].state, "issued");
}

#[tokio::test]
async fn a_rejected_request_tells_the_device_why() {
    let f = fixture();
    f.enroll("r2", "wifi");
    f.enrollment.reject("r2", "not for contractors").expect("reject");
    let status = f.status("r2");
    assert_eq!((status.state, status.message.as_deref()), (EnrollState::Rejected, Some("not for contractors")));
    f.enrollment.step().await.expect("step");
    assert_eq!(f.status("r2").state, EnrollState::Rejected, "nothing is issued after a rejection");
    assert!(f.enrollment.reject("r2", "").is_err());
}

#[tokio::test]
async fn a_certificate_for_another_key_is_refused() {
    let f = fixture();
    f.enroll("r3", "rogue");
    assert_eq!(f.status("r3").state, EnrollState::Approved, "no approval in this profile");
    f.enrollment.step().await.expect("step");
    let status = f.status("r3");
    assert_eq!(status.state, EnrollState::Failed);
    assert!(status.message.as_deref().is_some_and(|m| m.contains("another key")), "{status:?}");
    assert!(status.chain.is_none(), "the certificate is not passed on");
}

#[tokio::test]
async fn bad_requests_fail_with_their_reason_and_an_unreachable_ca_is_retried() {
    let f = fixture();
    f.ask("r4", "printers", None);
    let status = f.status("r4");
    assert_eq!(status.state, EnrollState::Failed);
    assert!(status.message.as_deref().is_some_and(|m| m.contains("no certificate profile")), "{status:?}");

    // A request whose subject is not the one sent.
    f.ask("r5", "vpn", None);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::new(vec!["mallory".into()]).expect("params");
    f.ask("r5", "vpn", Some(csr.serialize_request(&key).expect("csr").pem().expect("pem")));
    let status = f.status("r5");
    assert_eq!(status.state, EnrollState::Failed);
    assert!(status.message.as_deref().is_some_and(|m| m.contains("distinguished name")), "{status:?}");
    // A request that is not one, and one without the first step.
    f.ask("r6", "vpn", None);
    f.ask("r6", "vpn", Some("garbage".into()));
    assert_eq!(f.status("r6").state, EnrollState::Failed);
    f.ask("r7", "vpn", Some("garbage".into()));
    assert!(f.status("r7").message.as_deref().is_some_and(|m| m.contains("start the enrollment again")));
    // The second step must name the profile of the first.
    f.ask("r10", "wifi", None);
    f.ask("r10", "vpn", Some("garbage".into()));
    let status = f.status("r10");
    assert!(status.message.as_deref().is_some_and(|m| m.contains("profile")), "{status:?}");

    // The CA is down: the request stays approved and goes again at the next step.
    f.enroll("r8", "down");
    f.enrollment.step().await.expect("step");
    assert_eq!(f.status("r8").state, EnrollState::Approved);
    assert_eq!(f.enrollment.with_state("approved").expect("rows").len(), 1);
}

#[tokio::test]
async fn issued_certificates_are_watched_for_expiry_and_revocation() {
    let f = fixture();
    f.enroll("r9", "short");
    // No list yet: nothing is revoked, and the read failure changes nothing.
    f.enrollment.step().await.expect("step");
    // Issued for 30 days, renewal 40 days ahead: the device is told at once, once.
    let renew = f.status("r9");
    assert_eq!(renew.state, EnrollState::Renew, "{renew:?}");
    assert!(renew.message.as_deref().is_some_and(|m| m.contains("expires on")), "{renew:?}");
    let issued = f.enrollment.all().expect("all");
    assert_eq!(issued[0].state, "issued");
    f.enrollment.watch_expiry().expect("watch");
    assert_eq!(f.status("r9").state, EnrollState::Renew);

    // A list of another CA revokes nothing; the CA's own list revokes it.
    let now = noc_protocol::clock::unix_ms_i64() / 1000;
    let serial: String = f
        .store
        .with_conn(|c| c.query_row("SELECT serial FROM ca_requests WHERE request_id = 'r9'", [], |r| r.get(0)))
        .expect("serial");
    let (other, _) = noc_ca::DeviceCa::generate("Corp Issuing CA", now).expect("ca");
    std::fs::write(&f.crl_path, other.revocation_list(std::slice::from_ref(&serial), now, 7).expect("crl"))
        .expect("write");
    f.enrollment.watch_revocation().await.expect("watch");
    assert_eq!(f.enrollment.all().expect("all")[0].state, "issued", "a list that does not verify changes nothing");
    std::fs::write(&f.crl_path, f.short_ca.revocation_list(&[serial], now, 7).expect("crl")).expect("write");
    f.enrollment.watch_revocation().await.expect("watch");
    let revoked = f.status("r9");
    assert_eq!(revoked.state, EnrollState::Revoked);
    let all = f.enrollment.all().expect("all");
    assert_eq!((all[0].request_id.as_str(), all[0].state.as_str()), ("r9", "revoked"));
}
