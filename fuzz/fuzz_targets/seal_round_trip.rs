//! Seal arbitrary plaintext for an arbitrary context, flip one byte chosen by the input: the
//! untouched blob must open to the plaintext, the touched one must not open.
#![no_main]

use leadmaps_core::crypto::chunked::ChunkedKey;
use leadmaps_core::crypto::envelope::{self, Purpose, SecretContext};
use leadmaps_core::tenancy::WorkspaceId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, u8, u32, String, Vec<u8>)| {
    let (position, mask, key_ref, row, plaintext) = input;
    let key = ChunkedKey::new(b"fuzzing-key-fuzzing-key-32bytes!").unwrap();
    let workspace: WorkspaceId = "6f1c2a3b-4d5e-4f60-8172-93a4b5c6d7e8".parse().unwrap();
    let context = SecretContext::new(workspace, "secrets", "value", &row, Purpose::Other);
    let blob = envelope::seal(&key, key_ref, &context, &plaintext);
    assert_eq!(envelope::open(&key, &context, &blob).unwrap().expose(), plaintext.as_slice());
    if mask != 0 {
        let mut tampered = blob;
        let index = usize::from(position) % tampered.len();
        tampered[index] ^= mask;
        assert!(envelope::open(&key, &context, &tampered).is_err());
    }
});
