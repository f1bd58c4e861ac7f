//! Published vectors: Project Wycheproof AES-GCM, and the C2SP chunked-encryption
//! ("Cobblestone-256") vectors run through leadmaps' own HKDF-Expand and chunking code.

use std::io::Read;

use aes_gcm::aead::array::ArraySize;
use aes_gcm::aead::consts::{U1, U2, U4, U6, U8, U10, U12, U15, U16, U20, U32, U64, U128, U257};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::{AesGcm, Nonce, Tag};
use leadmaps_core::crypto::chunked::{self, ChunkedKey, Decryptor};
use serde_json::Value;
use sha2::{Digest, Sha512};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("vector json")
}

fn hex_field(test: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        test[field]
            .as_str()
            .unwrap_or_else(|| panic!("field {field}")),
    )
    .expect("hex")
}

/// Encrypts and decrypts one Wycheproof test; returns whether the implementation agreed with it.
fn run_gcm<C: KeyInit + AeadInOut<TagSize = U16>>(test: &Value) -> bool {
    let key = hex_field(test, "key");
    let Ok(cipher) = C::new_from_slice(&key) else {
        return false;
    };
    let (iv, aad, msg, ct, tag) = (
        hex_field(test, "iv"),
        hex_field(test, "aad"),
        hex_field(test, "msg"),
        hex_field(test, "ct"),
        hex_field(test, "tag"),
    );
    let nonce =
        Nonce::<C::NonceSize>::try_from(iv.as_slice()).expect("nonce size matches the group");
    let valid = test["result"] == "valid";
    let mut buffer = ct.clone();
    let opened = match Tag::<U16>::try_from(tag.as_slice()) {
        Ok(tag) => cipher
            .decrypt_inout_detached(&nonce, &aad, buffer.as_mut_slice().into(), &tag)
            .is_ok(),
        Err(_) => false,
    };
    if valid {
        let mut sealed = msg.clone();
        let computed = cipher
            .encrypt_inout_detached(&nonce, &aad, sealed.as_mut_slice().into())
            .expect("encrypt");
        opened && buffer == msg && sealed == ct && computed.as_slice() == tag.as_slice()
    } else {
        !opened
    }
}

fn dispatch<A>(nonce_bytes: usize, test: &Value) -> Option<bool>
where
    A: aes_gcm::aead::KeySizeUser
        + KeyInit
        + aes_gcm::aes::cipher::BlockCipherEncrypt
        + aes_gcm::aes::cipher::BlockSizeUser<BlockSize = U16>,
{
    fn with<A, N: ArraySize>(test: &Value) -> bool
    where
        A: KeyInit
            + aes_gcm::aes::cipher::BlockCipherEncrypt
            + aes_gcm::aes::cipher::BlockSizeUser<BlockSize = U16>,
    {
        run_gcm::<AesGcm<A, N>>(test)
    }
    Some(match nonce_bytes {
        1 => with::<A, U1>(test),
        2 => with::<A, U2>(test),
        4 => with::<A, U4>(test),
        6 => with::<A, U6>(test),
        8 => with::<A, U8>(test),
        10 => with::<A, U10>(test),
        12 => with::<A, U12>(test),
        15 => with::<A, U15>(test),
        16 => with::<A, U16>(test),
        20 => with::<A, U20>(test),
        32 => with::<A, U32>(test),
        64 => with::<A, U64>(test),
        128 => with::<A, U128>(test),
        257 => with::<A, U257>(test),
        _ => return None,
    })
}

#[test]
fn wycheproof_aes_gcm() {
    let file = load("wycheproof_aes_gcm_test.json");
    let (mut ran, mut skipped, mut valid, mut invalid, mut profile) = (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for group in file["testGroups"].as_array().unwrap() {
        let key_bits = group["keySize"].as_u64().unwrap();
        let iv_bits = group["ivSize"].as_u64().unwrap() as usize;
        assert_eq!(group["tagSize"], 128, "every group uses 128-bit tags");
        for test in group["tests"].as_array().unwrap() {
            let outcome = if !iv_bits.is_multiple_of(8) {
                None
            } else {
                match key_bits {
                    128 => dispatch::<Aes128>(iv_bits / 8, test),
                    192 => dispatch::<Aes192>(iv_bits / 8, test),
                    256 => dispatch::<Aes256>(iv_bits / 8, test),
                    _ => None,
                }
            };
            let Some(agreed) = outcome else {
                // An IV length the implementation has no type for (here: the empty IV, which
                // GCM forbids). It cannot be used, which is the vector's point.
                assert_eq!(
                    test["result"], "invalid",
                    "only invalid parameters may be unsupported"
                );
                skipped += 1;
                continue;
            };
            ran += 1;
            if test["result"] == "valid" {
                valid += 1
            } else {
                invalid += 1
            }
            if key_bits == 256 && iv_bits == 96 {
                profile += 1;
            }
            if !agreed {
                failures.push(test["tcId"].as_u64().unwrap());
            }
        }
    }
    println!(
        "wycheproof aes-gcm: {ran} ran ({valid} valid round-trip, {invalid} invalid rejected), \
         {profile} in the AES-256/96-bit-IV profile, {skipped} skipped for an unusable IV length"
    );
    assert!(failures.is_empty(), "failed tcIds: {failures:?}");
    assert_eq!(ran + skipped, 316);
    assert_eq!(profile, 66, "39 valid + 27 invalid in the leadmaps profile");
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .expect("zlib");
    out
}

#[test]
fn cobblestone_256_all_35() {
    let file = load("wycheproof_cobblestone256_test.json");
    let (mut valid, mut invalid, mut kdf_checked, mut streamed_prefixes) = (0, 0, 0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        for test in group["tests"].as_array().unwrap() {
            let id = test["tcId"].as_u64().unwrap();
            let key = hex_field(test, "key");
            let ctx = hex_field(test, "ctx");
            let ct = inflate(&hex_field(test, "ct"));
            let Ok(chunked_key) = ChunkedKey::new(&key) else {
                assert_eq!(test["result"], "invalid", "tc {id}: key refused");
                invalid += 1;
                continue;
            };
            // The KDF on its own, where the vector gives its outputs.
            if let (Some(aead_key), Some(nonce)) =
                (test["aeadKey"].as_str(), test["baseNonce"].as_str())
            {
                let salt: [u8; chunked::SALT_LEN] = ct[..chunked::SALT_LEN].try_into().unwrap();
                let okm = chunked_key.derive_raw(&salt, &ctx);
                assert_eq!(hex::encode(&okm[..32]), aead_key, "tc {id}: aead key");
                assert_eq!(hex::encode(&okm[32..44]), nonce, "tc {id}: base nonce");
                kdf_checked += 1;
            }
            let whole = chunked_key.open(&[&ctx], &ct);
            // The streaming decryptor must agree, and after an error keep failing.
            let mut streamed = Vec::new();
            let stream_result = Decryptor::new(&chunked_key, &[&ctx], ct.as_slice())
                .map_err(|_| ())
                .and_then(|mut d| {
                    let mut buf = [0u8; 4096];
                    loop {
                        match d.read(&mut buf) {
                            Ok(0) => return Ok(()),
                            Ok(n) => streamed.extend_from_slice(&buf[..n]),
                            Err(_) => {
                                assert!(d.read(&mut buf).is_err(), "tc {id}: keeps failing");
                                return Err(());
                            }
                        }
                    }
                });
            if test["result"] == "valid" {
                let plain = whole.unwrap_or_else(|_| panic!("tc {id}: valid vector must open"));
                assert_eq!(
                    plain.len() as u64,
                    test["msgLength"].as_u64().unwrap(),
                    "tc {id}"
                );
                assert_eq!(
                    hex::encode(Sha512::digest(&plain[..])),
                    test["msgSha512"].as_str().unwrap(),
                    "tc {id}"
                );
                assert!(stream_result.is_ok(), "tc {id}: stream opens");
                assert_eq!(&streamed, &*plain, "tc {id}: stream agrees");
                // Sealing the same plaintext under the same salt gives the same bytes.
                let salt: [u8; chunked::SALT_LEN] = ct[..chunked::SALT_LEN].try_into().unwrap();
                let mut resealed = Vec::new();
                chunked_key.seal_into(&salt, &[&ctx], &plain, &mut resealed);
                assert_eq!(resealed, ct, "tc {id}: encryption reproduces the vector");
                valid += 1;
            } else {
                assert!(whole.is_err(), "tc {id}: invalid vector must not open");
                assert!(
                    stream_result.is_err(),
                    "tc {id}: invalid vector must not stream to the end"
                );
                if let Some(len) = test["msgLength"].as_u64() {
                    // PartialPlaintext: a stream may release only the authenticated prefix.
                    assert!(
                        streamed.len() as u64 <= len,
                        "tc {id}: released more than the valid prefix"
                    );
                    if streamed.len() as u64 == len {
                        assert_eq!(
                            hex::encode(Sha512::digest(&streamed)),
                            test["msgSha512"].as_str().unwrap()
                        );
                        streamed_prefixes += 1;
                    }
                }
                invalid += 1;
            }
        }
    }
    println!(
        "cobblestone-256: {valid} valid opened, {invalid} invalid rejected, {kdf_checked} KDF outputs checked, {streamed_prefixes} partial prefixes matched"
    );
    assert_eq!((valid, invalid), (10, 25));
}
