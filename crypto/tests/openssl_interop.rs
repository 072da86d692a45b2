//! legacy-2005 against an independent implementation assembled from the `openssl` command
//! line (ECDH cofactor mode, X963KDF, AES-128-CFB, HMAC-SHA1) and Python's `zlib` (raw
//! deflate, `wbits = -15`). This is how other implementations will check ours, so the
//! frames must match byte for byte, not merely open.
//!
//! Needs `openssl` (3.x: `pkeyutl -pkeyopt ecdh_cofactor_mode:1`, `kdf … X963KDF`) and
//! `python3` on the PATH, as on the development machines and in CI.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use noc_crypto::legacy::{self, LegacyKey};
use openssl::bn::BigNumContext;
use openssl::ec::{EcKey, PointConversionForm};

/// Runs a command with `stdin`, returns its stdout; panics with its stderr on failure.
fn run(program: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
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
    writer.join().expect("writer thread").expect("write stdin");
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    run("openssl", args, stdin)
}

const PY_DEFLATE: &str = "import sys, zlib
c = zlib.compressobj(int(sys.argv[1]), zlib.DEFLATED, -15)
sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read()) + c.flush())";
const PY_INFLATE: &str = "import sys, zlib
sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read(), -15))";

fn py_deflate(t: &[u8], level: u32) -> Vec<u8> {
    run("python3", &["-c", PY_DEFLATE, &level.to_string()], t)
}

fn py_inflate(m: &[u8]) -> Vec<u8> {
    run("python3", &["-c", PY_INFLATE], m)
}

fn openssl_hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let keyopt = format!("hexkey:{}", hex::encode(key));
    openssl(&["dgst", "-sha1", "-mac", "HMAC", "-macopt", &keyopt, "-binary"], data)
}

fn openssl_aes128_cfb(key: &[u8], iv: &[u8], data: &[u8], decrypt: bool) -> Vec<u8> {
    let (k, i) = (hex::encode(key), hex::encode(iv));
    let mut args = vec!["enc", "-aes-128-cfb", "-K", &k, "-iv", &i];
    if decrypt {
        args.push("-d");
    }
    openssl(&args, data)
}

/// White paper §11 frame built entirely outside this crate.
fn independent_seal(key: &[u8], iv: &[u8], t: &[u8], level: u32) -> Vec<u8> {
    let m = py_deflate(t, level);
    let mac = openssl_hmac_sha1(key, &m);
    let x = openssl_aes128_cfb(key, iv, &m, false);
    [iv, &mac[..10], &x].concat()
}

/// White paper §11 frame opened entirely outside this crate.
fn independent_open(key: &[u8], frame: &[u8]) -> Vec<u8> {
    let (iv, rest) = frame.split_at(16);
    let (mac, x) = rest.split_at(10);
    let m = openssl_aes128_cfb(key, iv, x, true);
    assert_eq!(&openssl_hmac_sha1(key, &m)[..10], mac, "MAC check by openssl dgst");
    py_inflate(&m)
}

fn openssl_x963kdf_sha1(z: &[u8], len: usize) -> Vec<u8> {
    let secret = format!("hexsecret:{}", hex::encode(z));
    let out =
        openssl(&["kdf", "-keylen", &len.to_string(), "-kdfopt", "digest:SHA1", "-kdfopt", &secret, "X963KDF"], b"");
    hex::decode(String::from_utf8(out).expect("utf-8").trim().replace(':', "")).expect("openssl kdf prints hex")
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).expect("rng");
    v
}

fn plaintexts() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"x".to_vec(),
        b"hello device".to_vec(),
        random(1000),
        b"From: alice@example.com\r\nSubject: quarterly numbers\r\n\r\nSee the attached numbers. ".repeat(120),
        (0..20_000u32).flat_map(|i| (i % 251).to_be_bytes()).collect(),
    ]
}

#[test]
fn frames_match_openssl_and_zlib_byte_for_byte() {
    for t in plaintexts() {
        let key = random(16);
        let iv: [u8; 16] = random(16).try_into().expect("16");
        let ours = LegacyKey::from_bytes(key.clone().try_into().expect("16")).seal_with_iv(&iv, &t).expect("seal");
        let theirs = independent_seal(&key, &iv, &t, legacy::COMPRESSION_LEVEL);
        assert_eq!(hex::encode(&ours), hex::encode(&theirs), "plaintext of {} bytes", t.len());
    }
}

#[test]
fn frames_sealed_here_open_with_openssl_and_zlib() {
    for t in plaintexts() {
        let key = LegacyKey::from_bytes(random(16).try_into().expect("16"));
        let frame = key.seal(&t).expect("seal");
        assert_eq!(independent_open(key.as_bytes(), &frame), t);
    }
}

#[test]
fn frames_sealed_by_openssl_and_zlib_open_here() {
    // Any deflate encoder's output must open, not only zlib level 6's.
    for (t, level) in plaintexts().into_iter().zip([0, 1, 6, 9, 9, 1]) {
        let key = random(16);
        let frame = independent_seal(&key, &random(16), &t, level);
        let opened = LegacyKey::from_bytes(key.clone().try_into().expect("16")).open(&frame, 1 << 20).expect("open");
        assert_eq!(opened, t, "level {level}");
        let mut tampered = frame.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x80;
        assert!(LegacyKey::from_bytes(key.try_into().expect("16")).open(&tampered, 1 << 20).is_err());
    }
}

#[test]
fn hostile_frame_cannot_inflate_beyond_the_limit() {
    // A correctly MACed frame (the peer holds the key, or the relay does in an unauthenticated
    // legacy session) whose 10 MB of zeros deflate to ~10 KB.
    let key = random(16);
    let bomb = vec![0u8; 10_000_000];
    let frame = independent_seal(&key, &random(16), &bomb, 9);
    assert!(frame.len() < 20_000, "{} bytes", frame.len());
    let key = LegacyKey::from_bytes(key.try_into().expect("16"));
    assert!(matches!(key.open(&frame, 1 << 20), Err(noc_crypto::CryptoError::PlaintextTooLarge { max: 1_048_576 })));
    assert_eq!(key.open(&frame, 10_000_000).expect("within an explicit limit").len(), 10_000_000);
}

#[test]
fn x963_kdf_matches_openssl() {
    for len in [16usize, 20, 21, 57] {
        let z = random(36);
        let mut ours = vec![0u8; len];
        legacy::x963_kdf_sha1(&z, &[], &mut ours).expect("kdf");
        assert_eq!(ours, openssl_x963kdf_sha1(&z, len), "keylen {len}");
    }
}

struct CliKey {
    pem: std::path::PathBuf,
    public_pem: std::path::PathBuf,
    scalar: Vec<u8>,
    public: Vec<u8>,
}

/// A sect283k1 key generated by the `openssl` CLI, read back with OpenSSL's PEM parser.
fn cli_key(dir: &Path, name: &str) -> CliKey {
    let pem = dir.join(format!("{name}.pem"));
    let public_pem = dir.join(format!("{name}.pub.pem"));
    let (p, pp) = (pem.to_str().expect("path"), public_pem.to_str().expect("path"));
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:sect283k1", "-out", p], b"");
    openssl(&["pkey", "-in", p, "-pubout", "-out", pp], b"");
    let key = EcKey::private_key_from_pem(&std::fs::read(&pem).expect("read pem")).expect("parse pem");
    let mut ctx = BigNumContext::new().expect("ctx");
    let public =
        key.public_key().to_bytes(key.group(), PointConversionForm::UNCOMPRESSED, &mut ctx).expect("public bytes");
    CliKey { pem, public_pem, scalar: key.private_key().to_vec(), public }
}

fn pkeyutl_derive(ours: &CliKey, peer: &CliKey, cofactor_mode: u8) -> Vec<u8> {
    let mode = format!("ecdh_cofactor_mode:{cofactor_mode}");
    openssl(
        &[
            "pkeyutl",
            "-derive",
            "-inkey",
            ours.pem.to_str().expect("path"),
            "-peerkey",
            peer.public_pem.to_str().expect("path"),
            "-pkeyopt",
            &mode,
        ],
        b"",
    )
}

#[test]
fn ecdh_cofactor_mode_matches_openssl_pkeyutl() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..3 {
        let a = cli_key(dir.path(), &format!("a{round}"));
        let b = cli_key(dir.path(), &format!("b{round}"));
        assert_eq!(legacy::public_key_of(&a.scalar).expect("public"), a.public);
        assert_eq!(a.public.len(), legacy::PUBLIC_KEY_LEN);

        let z_openssl = pkeyutl_derive(&a, &b, 1);
        assert_eq!(z_openssl.len(), legacy::FIELD_LEN);
        let z_ab = legacy::shared_secret(&a.scalar, &b.public).expect("derive");
        let z_ba = legacy::shared_secret(&b.scalar, &a.public).expect("derive");
        assert_eq!(hex::encode(*z_ab), hex::encode(&z_openssl), "round {round}");
        assert_eq!(*z_ab, *z_ba);
        // The cofactor matters: plain ECDH gives another x-coordinate.
        assert_ne!(pkeyutl_derive(&a, &b, 0), z_openssl);

        // K = X963KDF-SHA1(Z)[..16], as OpenSSL computes it from the same Z.
        let k = legacy::derive_key(&a.scalar, &b.public).expect("derive key");
        assert_eq!(k.as_bytes().to_vec(), openssl_x963kdf_sha1(&z_openssl, 16));
    }
}

#[test]
fn whole_legacy_chain_matches_openssl() {
    // What `noc-device crypto derive` + `crypto seal --iv` will be checked against: keys and
    // Z from the openssl CLI, K from `openssl kdf`, the frame from openssl + zlib.
    let dir = tempfile::tempdir().expect("tempdir");
    let device = cli_key(dir.path(), "device");
    let ves = cli_key(dir.path(), "ves");
    let k_cli = openssl_x963kdf_sha1(&pkeyutl_derive(&ves, &device, 1), 16);
    let k = legacy::derive_key(&device.scalar, &ves.public).expect("derive");
    assert_eq!(k.as_bytes().to_vec(), k_cli);

    let iv: [u8; 16] = random(16).try_into().expect("16");
    let t = b"Subject: hi\r\n\r\nMail for the device, through the relay.".repeat(10);
    let ours = k.seal_with_iv(&iv, &t).expect("seal");
    assert_eq!(ours, independent_seal(&k_cli, &iv, &t, legacy::COMPRESSION_LEVEL));
    assert_eq!(independent_open(&k_cli, &ours), t);
}
