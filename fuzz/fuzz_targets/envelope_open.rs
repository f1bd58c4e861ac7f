//! Arbitrary bytes through the v1 blob parser, the one-shot opener and the streaming decryptor:
//! none may panic, and the two openers must agree.
#![no_main]

use std::io::Read;

use leadmaps_core::crypto::chunked::{ChunkedKey, Decryptor};
use leadmaps_core::crypto::envelope::{self, SecretContext};
use leadmaps_core::tenancy::WorkspaceId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ChunkedKey::new(b"fuzzing-key-fuzzing-key-32bytes!").unwrap();
    let workspace = uuid_nil();
    let context = SecretContext::api_key(workspace, "row");
    let _ = envelope::header(data);
    let _ = envelope::key_ref(data);
    let _ = envelope::open(&key, &context, data);
    let whole = key.open(&[b"ctx"], data);
    let streamed = Decryptor::new(&key, &[b"ctx"], data).ok().and_then(|mut stream| {
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).ok().map(|_| sink)
    });
    assert_eq!(whole.ok().map(|p| p.to_vec()), streamed, "one-shot and streaming disagree");
});

fn uuid_nil() -> WorkspaceId {
    "00000000-0000-0000-0000-000000000000".parse().unwrap()
}
