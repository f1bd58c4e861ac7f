//! The v1 envelope against golden vectors from an independent implementation
//! (`tests/data/gen_envelope_v1.py`), against tampering, and under property tests.

use std::io::{Read, Write};

use leadmaps_core::ErrorKind;
use leadmaps_core::crypto::chunked::{self, ChunkedKey, Decryptor, Encryptor};
use leadmaps_core::crypto::envelope::{self, Purpose, SecretContext};
use leadmaps_core::tenancy::WorkspaceId;
use proptest::prelude::*;
use serde_json::Value;

const KEY: [u8; 32] = *b"leadmaps-envelope-test-key-32-b!";

fn key() -> ChunkedKey {
    ChunkedKey::new(&KEY).unwrap()
}

fn ws(n: u128) -> WorkspaceId {
    WorkspaceId::from_uuid(uuid::Uuid::from_u128(n))
}

fn ctx(workspace: WorkspaceId, row: &str) -> SecretContext<'_> {
    SecretContext::api_key(workspace, row)
}

fn decrypt_kind(key: &ChunkedKey, context: &SecretContext<'_>, blob: &[u8]) -> Option<ErrorKind> {
    envelope::open(key, context, blob).err().map(|e| e.kind())
}

#[test]
fn golden_vectors_from_an_independent_implementation() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/leadmaps_envelope_v1.json"
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = file["cases"].as_array().unwrap();
    for case in cases {
        let field = |name: &str| case[name].as_str().unwrap();
        let bytes = |name: &str| hex::decode(field(name)).unwrap();
        let key = ChunkedKey::new(&bytes("key")).unwrap();
        let workspace: WorkspaceId = field("workspace").parse().unwrap();
        let purpose = Purpose::parse(field("purpose")).unwrap();
        let context = SecretContext::new(
            workspace,
            field("table"),
            field("column"),
            field("row_id"),
            purpose,
        );
        let key_ref = case["key_ref"].as_u64().unwrap() as u32;
        let salt: [u8; 24] = bytes("salt").try_into().unwrap();
        let blob = bytes("blob");
        let sealed = envelope::seal_with_salt(&key, key_ref, &context, &bytes("plaintext"), &salt);
        assert_eq!(
            hex::encode(&sealed),
            field("blob"),
            "{}: seal matches",
            field("name")
        );
        let opened = envelope::open(&key, &context, &blob).unwrap();
        assert_eq!(
            opened.expose(),
            bytes("plaintext").as_slice(),
            "{}",
            field("name")
        );
        assert_eq!(envelope::key_ref(&blob).unwrap(), key_ref);
    }
    println!("envelope v1 golden vectors: {} matched", cases.len());
}

#[test]
fn every_header_and_body_field_is_authenticated() {
    let key = key();
    let context = ctx(ws(1), "row");
    let blob = envelope::seal(
        &key,
        3,
        &context,
        b"a 64-byte secret would be here; this one is shorter.",
    );
    assert!(envelope::open(&key, &context, &blob).is_ok());
    let regions = [
        ("version", 0..1),
        ("key_ref", 1..5),
        ("salt", 5..29),
        ("commitment", 29..61),
        ("ciphertext", 61..blob.len() - 16),
        ("tag", blob.len() - 16..blob.len()),
    ];
    for (name, range) in regions {
        for index in range {
            for bit in 0..8 {
                let mut tampered = blob.clone();
                tampered[index] ^= 1 << bit;
                assert_eq!(
                    decrypt_kind(&key, &context, &tampered),
                    Some(ErrorKind::Decrypt),
                    "flipping bit {bit} of byte {index} ({name}) must fail"
                );
            }
        }
    }
}

#[test]
fn truncation_and_extension_fail() {
    let key = key();
    let context = ctx(ws(1), "row");
    let blob = envelope::seal(&key, 1, &context, b"secret");
    for len in 0..blob.len() {
        assert_eq!(
            decrypt_kind(&key, &context, &blob[..len]),
            Some(ErrorKind::Decrypt),
            "length {len}"
        );
    }
    for extra in [&[0u8][..], &[0; 16], &blob[5..]] {
        let mut longer = blob.clone();
        longer.extend_from_slice(extra);
        assert_eq!(
            decrypt_kind(&key, &context, &longer),
            Some(ErrorKind::Decrypt)
        );
    }
}

#[test]
fn a_blob_moved_elsewhere_does_not_open() {
    let key = key();
    let (a, b) = (ws(1), ws(2));
    let home = SecretContext::new(a, "api_keys", "secret", "row-1", Purpose::ApiKey);
    let blob = envelope::seal(&key, 1, &home, b"secret");
    let elsewhere = [
        SecretContext {
            workspace: b,
            ..home
        },
        SecretContext {
            table: "oidc_connections",
            ..home
        },
        SecretContext {
            column: "other",
            ..home
        },
        SecretContext {
            row_id: "row-2",
            ..home
        },
        SecretContext {
            purpose: Purpose::TotpSeed,
            ..home
        },
        // Length prefixes keep field boundaries: moving a byte between fields is a change.
        SecretContext {
            table: "api_keyss",
            column: "ecret",
            ..home
        },
    ];
    for other in elsewhere {
        assert_eq!(
            decrypt_kind(&key, &other, &blob),
            Some(ErrorKind::Decrypt),
            "{other:?}"
        );
    }
}

#[test]
fn wrong_key_fails_and_errors_say_nothing() {
    let blob = envelope::seal(&key(), 1, &ctx(ws(1), "r"), b"secret");
    let other = ChunkedKey::new(&[9u8; 32]).unwrap();
    let err = envelope::open(&other, &ctx(ws(1), "r"), &blob).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decrypt);
    assert_eq!(err.to_string(), "decryption failed");
    let opened = envelope::open(&key(), &ctx(ws(1), "r"), &blob).unwrap();
    assert_eq!(format!("{opened:?}"), "[REDACTED]");
}

#[test]
fn header_is_readable_without_a_key() {
    let blob = envelope::seal(&key(), 0xDEAD_BEEF, &ctx(ws(1), "r"), b"s");
    assert_eq!(envelope::key_ref(&blob).unwrap(), 0xDEAD_BEEF);
    assert!(envelope::needs_rotation(&blob, 1).unwrap());
    assert!(!envelope::needs_rotation(&blob, 0xDEAD_BEEF).unwrap());
    let mut v2 = blob.clone();
    v2[0] = 2;
    assert_eq!(
        envelope::key_ref(&v2).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    assert_eq!(
        envelope::key_ref(&blob[..10]).unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

#[test]
fn streaming_matches_one_shot_around_chunk_boundaries() {
    let key = key();
    let salt = [5u8; 24];
    for len in [
        0,
        1,
        chunked::CHUNK_LEN - 1,
        chunked::CHUNK_LEN,
        chunked::CHUNK_LEN + 1,
        3 * chunked::CHUNK_LEN,
    ] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut one_shot = Vec::new();
        key.seal_into(&salt, &[b"ctx"], &plain, &mut one_shot);
        let mut writer = Encryptor::new(&key, &salt, &[b"ctx"], Vec::new()).unwrap();
        for piece in plain.chunks(1000) {
            writer.write_all(piece).unwrap();
        }
        let streamed = writer.finish().unwrap();
        assert!(
            streamed == one_shot,
            "length {len}: streamed and one-shot differ"
        );
        assert_eq!(streamed.len(), chunked::sealed_len(len));
        let mut back = Vec::new();
        Decryptor::new(&key, &[b"ctx"], streamed.as_slice())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == plain, "length {len}: round trip differs");
    }
}

#[test]
fn an_unfinished_stream_never_opens() {
    let key = key();
    let mut writer = Encryptor::new(&key, &[1; 24], &[b"ctx"], Vec::new()).unwrap();
    writer
        .write_all(&[0u8; 2 * chunked::CHUNK_LEN + 10])
        .unwrap();
    // Simulate a crash: take what reached the sink so far without `finish`.
    let partial = {
        let mut sink = Vec::new();
        let mut w = Encryptor::new(&key, &[1; 24], &[b"ctx"], &mut sink).unwrap();
        w.write_all(&[0u8; 2 * chunked::CHUNK_LEN + 10]).unwrap();
        drop(w);
        sink
    };
    assert!(key.open(&[b"ctx"], &partial).is_err());
    let mut out = Vec::new();
    assert!(
        Decryptor::new(&key, &[b"ctx"], partial.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .is_err()
    );
    drop(writer);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn seal_open_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..600),
        workspace in any::<u128>(),
        table in "[a-z_]{1,20}",
        column in "[a-z_]{1,20}",
        row in ".{0,40}",
        key_ref in any::<u32>(),
    ) {
        let key = key();
        let context = SecretContext::new(ws(workspace), &table, &column, &row, Purpose::Other);
        let blob = envelope::seal(&key, key_ref, &context, &plaintext);
        prop_assert_eq!(blob.len(), envelope::MIN_LEN + plaintext.len());
        let opened = envelope::open(&key, &context, &blob).unwrap();
        prop_assert_eq!(opened.expose(), plaintext.as_slice());
    }

    #[test]
    fn any_single_bit_flip_fails(
        plaintext in proptest::collection::vec(any::<u8>(), 0..200),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let key = key();
        let context = ctx(ws(7), "row");
        let mut blob = envelope::seal(&key, 1, &context, &plaintext);
        let index = position.index(blob.len());
        blob[index] ^= 1 << bit;
        prop_assert_eq!(decrypt_kind(&key, &context, &blob), Some(ErrorKind::Decrypt));
    }

    #[test]
    fn streaming_round_trips_with_any_write_pattern(
        len in 0usize..50_000,
        pieces in proptest::collection::vec(1usize..20_000, 1..8),
    ) {
        let key = key();
        let plain: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
        let mut writer = Encryptor::new(&key, &[9; 24], &[b"p"], Vec::new()).unwrap();
        let mut rest = plain.as_slice();
        for size in pieces.iter().cycle() {
            if rest.is_empty() { break }
            let (head, tail) = rest.split_at((*size).min(rest.len()));
            writer.write_all(head).unwrap();
            rest = tail;
        }
        let sealed = writer.finish().unwrap();
        let opened = key.open(&[b"p"], &sealed).unwrap();
        prop_assert_eq!(opened.as_slice(), plain.as_slice());
    }
}
