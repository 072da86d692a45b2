//! Known-answer tests against published vectors, run through the same functions the suites
//! call (`noc_crypto::primitives`, `legacy::x963_kdf_sha1`, `StaticKeyPair`).

use noc_crypto::StaticKeyPair;
use noc_crypto::legacy::{self, x963_kdf_sha1};
use noc_crypto::primitives::{
    aes128_cfb128_decrypt, aes128_cfb128_encrypt, chacha20poly1305_open, chacha20poly1305_seal, hkdf_sha256,
    hkdf_sha256_extract, hmac_sha1, hmac_sha1_verify_truncated, x25519,
};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).expect("test vector hex")
}

fn h16(s: &str) -> [u8; 16] {
    h(s).try_into().expect("16 bytes")
}

fn h32(s: &str) -> [u8; 32] {
    h(s).try_into().expect("32 bytes")
}

// NIST SP 800-38A, F.3.13 CFB128-AES128.Encrypt and F.3.14 CFB128-AES128.Decrypt.
const SP800_38A_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const SP800_38A_IV: &str = "000102030405060708090a0b0c0d0e0f";
const SP800_38A_PLAINTEXT: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                                   30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
const SP800_38A_CIPHERTEXT: &str = "3b3fd92eb72dad20333449f8e83cfb4a c8a64537a0b3a93fcde3cdad9f1ce58b
                                    26751f67a3cbb140b1808cf187a4f4df c04b05357c5d1c0eeac4c66f9ff7f2e6";

#[test]
fn aes128_cfb128_encrypt_sp800_38a_f3_13() {
    let mut buf = h(SP800_38A_PLAINTEXT);
    aes128_cfb128_encrypt(&h16(SP800_38A_KEY), &h16(SP800_38A_IV), &mut buf);
    assert_eq!(hex::encode(&buf), hex::encode(h(SP800_38A_CIPHERTEXT)));
}

#[test]
fn aes128_cfb128_decrypt_sp800_38a_f3_14() {
    let mut buf = h(SP800_38A_CIPHERTEXT);
    aes128_cfb128_decrypt(&h16(SP800_38A_KEY), &h16(SP800_38A_IV), &mut buf);
    assert_eq!(hex::encode(&buf), hex::encode(h(SP800_38A_PLAINTEXT)));
}

#[test]
fn aes128_cfb128_partial_final_block_is_a_prefix_of_the_full_one() {
    // Frames are rarely a multiple of 16 bytes: CFB128 on a truncated input must give the
    // truncated ciphertext (F.3.13's first 37 bytes).
    let mut buf = h(SP800_38A_PLAINTEXT)[..37].to_vec();
    aes128_cfb128_encrypt(&h16(SP800_38A_KEY), &h16(SP800_38A_IV), &mut buf);
    assert_eq!(buf, h(SP800_38A_CIPHERTEXT)[..37]);
}

#[test]
fn hmac_sha1_rfc2202() {
    let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
        (vec![0x0b; 20], b"Hi There".to_vec(), "b617318655057264e28bc0b6fb378c8ef146be00"),
        (b"Jefe".to_vec(), b"what do ya want for nothing?".to_vec(), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        (vec![0xaa; 20], vec![0xdd; 50], "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
        ((1..=25).collect(), vec![0xcd; 50], "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
        (vec![0x0c; 20], b"Test With Truncation".to_vec(), "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
        (
            vec![0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112",
        ),
        (
            vec![0xaa; 80],
            b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data".to_vec(),
            "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
        ),
    ];
    for (i, (key, data, expected)) in cases.iter().enumerate() {
        assert_eq!(hex::encode(hmac_sha1(key, data).expect("hmac")), *expected, "RFC 2202 test case {}", i + 1);
        // The legacy frame's 80-bit MAC is the leftmost 10 bytes, checked in constant time.
        let tag = &h(expected)[..10];
        assert!(hmac_sha1_verify_truncated(key, data, tag).expect("verify"));
        let mut wrong = tag.to_vec();
        wrong[9] ^= 1;
        assert!(!hmac_sha1_verify_truncated(key, data, &wrong).expect("verify"));
    }
    // RFC 2202 test case 5 also gives the 96-bit truncation.
    assert!(
        hmac_sha1_verify_truncated(&[0x0c; 20], b"Test With Truncation", &h("4c1a03424b55e07fe7f27be1")).expect("v")
    );
    assert!(!hmac_sha1_verify_truncated(&[0x0c; 20], b"Test With Truncation", &[]).expect("empty tag"));
}

#[test]
fn x25519_rfc7748_section_5_2() {
    assert_eq!(
        x25519(
            h32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
            h32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
        ),
        h32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    );
    // The u-coordinate's top bit is set here and must be ignored.
    assert_eq!(
        x25519(
            h32("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
            h32("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")
        ),
        h32("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
    );
}

#[test]
fn x25519_rfc7748_section_5_2_iterated() {
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for i in 1..=1000 {
        let r = x25519(k, u);
        u = k;
        k = r;
        if i == 1 {
            assert_eq!(k, h32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"));
        }
    }
    assert_eq!(k, h32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"));
}

#[test]
fn x25519_rfc7748_section_6_1() {
    let alice_private = h32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let alice_public = h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_private = h32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let bob_public = h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");

    // Public keys through the type the VES uses for its long-term key.
    assert_eq!(StaticKeyPair::from_secret_bytes(alice_private).public_key(), alice_public);
    assert_eq!(StaticKeyPair::from_secret_bytes(bob_private).public_key(), bob_public);
    let mut base = [0u8; 32];
    base[0] = 9;
    assert_eq!(x25519(alice_private, base), alice_public);
    assert_eq!(x25519(alice_private, bob_public), shared);
    assert_eq!(x25519(bob_private, alice_public), shared);

    // The fingerprint format shown in docs/crypto.md §3.2, for Alice's key
    // (`echo -n 8520…4e6a | xxd -r -p | sha256sum`).
    let fingerprint = StaticKeyPair::from_secret_bytes(alice_private).fingerprint();
    assert_eq!(
        fingerprint.to_string(),
        "300c 9c96 03b9 2a4b 39ed 3958 bf92 4011 4804 db4f d373 012c 0ca4 7432 d634 25ae"
    );
}

#[test]
fn hkdf_sha256_rfc5869_test_case_1() {
    let ikm = [0x0b; 22];
    let salt = h("000102030405060708090a0b0c");
    let info = h("f0f1f2f3f4f5f6f7f8f9");
    assert_eq!(
        hkdf_sha256_extract(Some(&salt), &ikm),
        h32("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    );
    let mut okm = [0u8; 42];
    hkdf_sha256(Some(&salt), &ikm, &info, &mut okm).expect("hkdf");
    assert_eq!(
        hex::encode(okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
}

#[test]
fn x963_kdf_sha1_nist_cavp() {
    // NIST CAVP component test vectors for the ANSI X9.63-2001 KDF (SP 800-135), [SHA-1]:
    // shared secret length 192, key data length 128, no SharedInfo — the legacy suite's case.
    let mut key = [0u8; 16];
    x963_kdf_sha1(&h("1c7d7b5f0597b03d06a018466ed1a93e30ed4b04dc64ccdd"), &[], &mut key).expect("kdf");
    assert_eq!(hex::encode(key), "bf71dffd8f4d99223936beb46fee8ccc");
    assert_eq!(
        legacy::kdf(&h("1c7d7b5f0597b03d06a018466ed1a93e30ed4b04dc64ccdd")).expect("kdf").as_bytes(),
        &h16("bf71dffd8f4d99223936beb46fee8ccc")
    );

    // With SharedInfo and 1024 bits of key data: exercises the counter over 7 blocks.
    let mut long = [0u8; 128];
    x963_kdf_sha1(
        &h("fd17198b89ab39c4ab5d7cca363b82f9fd7e23c3984dc8a2"),
        &h("856a53f3e36a26bbc5792879f307cce2"),
        &mut long,
    )
    .expect("kdf");
    assert_eq!(
        hex::encode(long),
        "6e5fad865cb4a51c95209b16df0cc490bc2c9064405c5bccd4ee4832a531fbe7\
         f10cb79e2eab6ab1149fbd5a23cfdabc41242269c9df22f628c4424333855b64\
         e95e2d4fb8469c669f17176c07d103376b10b384ec5763d8b8c610409f19aca8\
         eb31f9d85cc61a8d6d4a03d03e5a506b78d6847e93d295ee548c65afedd2efec"
    );
}

#[test]
fn chacha20poly1305_rfc8439_section_2_8_2() {
    let key: [u8; 32] = (0x80..=0x9f).collect::<Vec<u8>>().try_into().expect("32 bytes");
    let nonce: [u8; 12] = h("070000004041424344454647").try_into().expect("12 bytes");
    let aad = h("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let expected = h("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
                      3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
                      92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
                      3ff4def08e4b7a9de576d26586cec64b6116
                      1ae10b594f09e26a7e902ecbd0600691");
    let sealed = chacha20poly1305_seal(&key, &nonce, &aad, plaintext).expect("seal");
    assert_eq!(hex::encode(&sealed), hex::encode(&expected));
    assert_eq!(chacha20poly1305_open(&key, &nonce, &aad, &sealed).expect("open"), plaintext);
    let mut tampered = sealed;
    tampered[0] ^= 1;
    assert!(chacha20poly1305_open(&key, &nonce, &aad, &tampered).is_err());
}
