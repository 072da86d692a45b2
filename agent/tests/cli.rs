//! The `ves-agent` command line as a user meets it: errors said once, and a standard
//! output closed by its reader (`ves-agent status | head -1`) ending the program quietly.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ves-agent.toml");
    std::fs::write(
        &path,
        "[relay]\nurl = \"https://127.0.0.1:9\"\n[license]\nname = \"acme\"\npassword = \"pw\"\n\
         [mail]\nmaildir_root = \"maildir\"\n[state]\ndir = \"state\"\n",
    )
    .expect("write config");
    path
}

fn agent(config: &Path, args: &[&str], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ves-agent"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run ves-agent")
}

#[test]
fn a_closed_standard_output_ends_quietly_with_the_sigpipe_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    // As after `| head -c1` once `head` has exited: nobody reads the pipe any more.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = agent(&config, &["fingerprint"], writer.into());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "nothing on stderr, no panic: {err}");

    // The same command into a reader that stays: the fingerprint, status 0.
    let out = agent(&config, &["fingerprint"], Stdio::piped());
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim().len(), 16 * 4 + 15, "16 groups of 4 hex digits");
}

#[test]
fn an_error_is_printed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    // No agent runs: the control socket does not exist.
    let out = agent(&config, &["status"], Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("control.sock").count(), 1, "{err}");
    assert_eq!(err.matches("control socket").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = agent(&dir.path().join("missing.toml"), &["status"], Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("missing.toml").count(), 1, "{err}");
}
