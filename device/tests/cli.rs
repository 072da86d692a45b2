//! `noc-device crypto` against an independent implementation of white paper §11 built from
//! the `openssl` command line (ECDH cofactor mode, X963KDF, AES-128-CFB, HMAC-SHA1) and
//! Python's `zlib`: this is how other implementations will check the device client, so
//! frames must match byte for byte, and frames built elsewhere must open.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;

fn run_with(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    out
}

fn ok(program: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = run_with(program, args, stdin);
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn device(args: &[&str], stdin: &[u8]) -> Output {
    run_with(env!("CARGO_BIN_EXE_noc-device"), args, stdin)
}

fn device_hex(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = device(args, stdin);
    assert!(out.status.success(), "noc-device {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    hex::decode(String::from_utf8_lossy(&out.stdout).trim()).expect("hex output")
}

const PY_DEFLATE: &str = "import sys, zlib
c = zlib.compressobj(6, zlib.DEFLATED, -15)
sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read()) + c.flush())";

fn independent_seal(key: &[u8], iv: &[u8], t: &[u8]) -> Vec<u8> {
    let m = ok("python3", &["-c", PY_DEFLATE], t);
    let keyopt = format!("hexkey:{}", hex::encode(key));
    let mac = ok("openssl", &["dgst", "-sha1", "-mac", "HMAC", "-macopt", &keyopt, "-binary"], &m);
    let (k, i) = (hex::encode(key), hex::encode(iv));
    let x = ok("openssl", &["enc", "-aes-128-cfb", "-K", &k, "-iv", &i], &m);
    [iv, &mac[..10], &x].concat()
}

const KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const IV: &str = "000102030405060708090a0b0c0d0e0f";

#[test]
fn legacy_seal_matches_openssl_byte_for_byte_and_opens_openssl_frames() {
    let t = b"Subject: hello\r\n\r\nThe quick brown fox jumps over the lazy dog. ".repeat(20);
    let ours = device_hex(&["crypto", "seal", "--suite", "legacy-2005", "--key", KEY, "--iv", IV], &t);
    let theirs = independent_seal(&hex::decode(KEY).expect("key"), &hex::decode(IV).expect("iv"), &t);
    assert_eq!(hex::encode(&ours), hex::encode(&theirs));

    let opened =
        device_hex(&["crypto", "open", "--suite", "legacy-2005", "--key", KEY], hex::encode(&theirs).as_bytes());
    assert_eq!(opened, t);

    // One flipped bit: a clear error and a non-zero exit.
    let mut bad = theirs.clone();
    bad[30] ^= 0x01;
    let out = device(&["crypto", "open", "--suite", "legacy-2005", "--key", KEY], hex::encode(&bad).as_bytes());
    assert_eq!(out.status.code(), Some(3), "MAC mismatch exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(out.stdout.is_empty(), "nothing written on failure");
}

#[test]
fn legacy_derive_matches_openssl_cofactor_ecdh_and_x963kdf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = EcGroup::from_curve_name(Nid::SECT283K1).expect("sect283k1");
    let mut ctx = BigNumContext::new().expect("ctx");
    let a = EcKey::generate(&group).expect("a");
    let b = EcKey::generate(&group).expect("b");
    let a_pem = dir.path().join("a.pem");
    let b_pub = dir.path().join("b.pub.pem");
    std::fs::write(&a_pem, a.private_key_to_pem().expect("pem")).expect("write");
    std::fs::write(&b_pub, b.public_key_to_pem().expect("pem")).expect("write");
    let path = |p: &Path| p.to_str().expect("utf8").to_owned();
    let z = ok(
        "openssl",
        &["pkeyutl", "-derive", "-inkey", &path(&a_pem), "-peerkey", &path(&b_pub), "-pkeyopt", "ecdh_cofactor_mode:1"],
        b"",
    );
    let kdf = ok(
        "openssl",
        &[
            "kdf",
            "-keylen",
            "16",
            "-kdfopt",
            "digest:SHA1",
            "-kdfopt",
            &format!("hexsecret:{}", hex::encode(&z)),
            "X963KDF",
        ],
        b"",
    );
    let expected = String::from_utf8_lossy(&kdf).trim().replace(':', "").to_lowercase();

    let private = hex::encode(a.private_key().to_vec());
    let peer =
        hex::encode(b.public_key().to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx).expect("point"));
    let ours =
        device_hex(&["crypto", "derive", "--suite", "legacy-2005", "--private", &private, "--peer-public", &peer], b"");
    assert_eq!(hex::encode(ours), expected);

    // The public key command agrees with OpenSSL's point.
    let a_point = a.public_key().to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx).expect("point");
    assert_eq!(device_hex(&["crypto", "public", "--suite", "legacy-2005", "--private", &private], b""), a_point);
}

#[test]
fn modern_frames_round_trip_and_tampering_fails() {
    let key = "00".repeat(31) + "01";
    let frame = device_hex(&["crypto", "seal", "--suite", "modern", "--key", &key, "--counter", "5"], b"hi there");
    assert_eq!(frame.len(), 9 + 8 + 16);
    assert_eq!(&frame[1..9], &5u64.to_be_bytes());
    assert_eq!(
        device_hex(&["crypto", "open", "--suite", "modern", "--key", &key], hex::encode(&frame).as_bytes()),
        b"hi there"
    );
    let mut bad = frame.clone();
    bad[12] ^= 0x40;
    let out = device(&["crypto", "open", "--suite", "modern", "--key", &key], hex::encode(&bad).as_bytes());
    assert_eq!(out.status.code(), Some(3));
    // modern has no IV; derive is legacy-only: clear refusals.
    let out = device(&["crypto", "seal", "--suite", "modern", "--key", &key, "--iv", IV], b"x");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--iv"));
    let out = device(&["crypto", "derive", "--suite", "modern", "--private", "01", "--peer-public", "02"], b"");
    assert!(!out.status.success());
    let help = device(&["crypto", "seal", "--help"], b"");
    assert!(String::from_utf8_lossy(&help.stdout).contains("direction key"), "help names the key material");
}

/// Runs `noc-device` with a standard output whose reader is already gone, as after
/// `| head -c1` once `head` has exited.
fn device_into_closed_pipe(args: &[&str], stdin: &[u8]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_noc-device"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn noc-device");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_standard_output_ends_quietly_with_the_sigpipe_status() {
    let key = "11".repeat(32);
    for (args, stdin) in [
        (vec!["crypto", "seal", "--suite", "modern", "--key", &key], &b"plaintext"[..]),
        (vec!["crypto", "public", "--suite", "modern", "--private", &key], &b""[..]),
    ] {
        let out = device_into_closed_pipe(&args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: nothing on stderr, no panic: {err}");
    }
}

#[test]
fn an_error_is_printed_once() {
    let key = "00".repeat(31) + "01";
    let mut frame = device_hex(&["crypto", "seal", "--suite", "modern", "--key", &key], b"hi");
    frame[10] ^= 1;
    let out = device(&["crypto", "open", "--suite", "modern", "--key", &key], hex::encode(&frame).as_bytes());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(err.matches("authentication failed").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-device");
    let out = device(&["--state-dir", missing.to_str().expect("utf8"), "status"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.matches("no-device").count(), 1, "{err}");
}

#[test]
fn open_refuses_a_plaintext_above_max_plaintext_bytes() {
    // 2 MiB of zeros deflate to a few kilobytes: over the default bound of 1 MiB.
    let big = vec![0u8; 2 * 1024 * 1024];
    let frame = device_hex(&["crypto", "seal", "--suite", "legacy-2005", "--key", KEY, "--iv", IV], &big);
    let frame_hex = hex::encode(&frame);
    let out = device(&["crypto", "open", "--suite", "legacy-2005", "--key", KEY], frame_hex.as_bytes());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exceeds the maximum of 1048576 bytes"), "{err}");
    assert!(out.stdout.is_empty());

    let opened = device_hex(
        &["crypto", "open", "--suite", "legacy-2005", "--key", KEY, "--max-plaintext-bytes", "2097152"],
        frame_hex.as_bytes(),
    );
    assert_eq!(opened, big);
    let out = device(
        &["crypto", "open", "--suite", "legacy-2005", "--key", KEY, "--max-plaintext-bytes", "2097151"],
        frame_hex.as_bytes(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("2097151"), "the bound given is the one applied");

    let help = device(&["crypto", "open", "--help"], b"");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--max-plaintext-bytes"));
}
