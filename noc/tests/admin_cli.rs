//! `noc admin` as an operator bootstraps the NOC: the first operator created on the
//! command line, with the TOTP enrolment printed once, then signing in with the password
//! and a code from that secret.

use std::io::Write;
use std::process::{Command, Stdio};

use noc_storage::model::OperatorRole;
use noc_storage::{AccountPolicy, Accounts, SqliteStore, totp};

const BIN: &str = env!("CARGO_BIN_EXE_noc");

fn admin(data: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("NOC_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("noc admin");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_first_operator_is_bootstrapped_on_the_command_line_and_signs_in_with_totp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (ok, out, err) = admin(
        &data,
        &["operator", "create", "--name", "Root.Admin", "--role", "noc-admin", "--password-stdin"],
        "operator-pass-1\n",
    );
    assert!(ok, "{err}");
    let secret =
        out.lines().find_map(|l| l.strip_prefix("TOTP secret (enter it in an authenticator app): ")).expect("secret");
    assert!(out.contains(&format!("otpauth://totp/NOC:root.admin?secret={secret}&issuer=NOC")), "{out}");
    let codes: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("  ")).collect();
    assert_eq!(codes.len(), 10, "{out}");

    // A bad role or a taken name is refused, and nothing is printed as if it worked.
    let (ok, _, err) = admin(&data, &["operator", "create", "--name", "x1y", "--role", "root", "--password", "p"], "");
    assert!(!ok && err.contains("invalid value 'root'"), "{err}");
    let (ok, out2, _) = admin(
        &data,
        &["operator", "create", "--name", "root.admin", "--role", "csr", "--password-stdin"],
        "other-pass-22\n",
    );
    assert!(!ok && !out2.contains("TOTP"), "{out2}");

    let (ok, list, err) = admin(&data, &["operator", "list"], "");
    assert!(ok, "{err}");
    assert!(
        list.lines().any(|l| l.starts_with("root.admin") && l.contains("noc-admin") && l.contains("active")),
        "{list}"
    );

    // The printed secret is the stored one: a code from it signs in.
    let store = SqliteStore::open(&data.join("noc.sqlite3")).expect("store");
    let accounts = Accounts::new(std::sync::Arc::new(store), AccountPolicy::default()).expect("accounts");
    let stored = accounts.operators().await.expect("operators").remove(0);
    assert_eq!(totp::base32(&stored.totp_secret), secret);
    let now = (noc_protocol::clock::unix_ms_i64() / 1000) as u64;
    let code = format!("{:06}", totp::hotp(&stored.totp_secret, totp::step(now)));
    let source = std::net::IpAddr::from([127, 0, 0, 1]);
    let operator = accounts.operator_sign_in("root.admin", "operator-pass-1", &code, source).await.expect("sign in");
    assert_eq!(operator.role, OperatorRole::NocAdmin);
    accounts.operator_sign_in("root.admin", "operator-pass-1", codes[0], source).await.expect("a recovery code");
}
