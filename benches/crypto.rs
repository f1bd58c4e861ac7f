//! Envelope encryption cost, beside raw AES-256-GCM of the same size (the physical reference).
//!
//! `cargo bench --bench crypto` runs the divan benches, then prints seal/open throughput per
//! core, p99 latency and the ratio to raw AES-256-GCM, all measured in the same run.
//! Target (DESIGN.md): at least 300k seals/s per core for 64-byte secrets, p99 under 10 us.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use leadmaps::clock::SystemClock;
use leadmaps::crypto::chunked::ChunkedKey;
use leadmaps::crypto::envelope::{self, SecretContext};
use leadmaps::tenancy::{Action, Gate, Principal, Role, UserId, WorkspaceId};

const SIZES: [usize; 2] = [64, 256];
const KEY: [u8; 32] = *b"benchmark-key-benchmark-key-32b!";

fn context(workspace: &WorkspaceId) -> SecretContext<'_> {
    SecretContext::api_key(*workspace, "0f8fad5b-d9cb-469f-a165-70867728950e")
}

#[divan::bench(args = SIZES)]
fn seal(bencher: divan::Bencher, size: usize) {
    let key = ChunkedKey::new(&KEY).unwrap();
    let workspace = WorkspaceId::new();
    let plain = vec![0x42u8; size];
    bencher.bench_local(|| envelope::seal(&key, 1, &context(&workspace), black_box(&plain)));
}

#[divan::bench(args = SIZES)]
fn open(bencher: divan::Bencher, size: usize) {
    let key = ChunkedKey::new(&KEY).unwrap();
    let workspace = WorkspaceId::new();
    let blob = envelope::seal(&key, 1, &context(&workspace), &vec![0x42u8; size]);
    bencher.bench_local(|| envelope::open(&key, &context(&workspace), black_box(&blob)).unwrap());
}

#[divan::bench(args = SIZES)]
fn raw_aes_256_gcm_encrypt(bencher: divan::Bencher, size: usize) {
    let cipher = Aes256Gcm::new_from_slice(&KEY).unwrap();
    let nonce = Nonce::from([7u8; 12]);
    let mut buffer = vec![0x42u8; size];
    bencher.bench_local(|| {
        cipher
            .encrypt_inout_detached(&nonce, &[], black_box(buffer.as_mut_slice()).into())
            .unwrap()
    });
}

#[divan::bench]
fn gate_authorize(bencher: divan::Bencher) {
    let gate = Gate::new(Arc::new(SystemClock));
    let workspace = WorkspaceId::new();
    let mut memberships: Vec<_> = (0..9).map(|_| (WorkspaceId::new(), Role::Viewer)).collect();
    memberships.push((workspace, Role::Admin));
    let member = Principal::member(UserId::new(), memberships);
    bencher.bench_local(|| {
        gate.authorize(black_box(&member), black_box(workspace), Action::SecretRead)
            .unwrap()
    });
}

/// Runs `op` for about `budget`, returning ops/s and the p99 of single-op latencies.
fn measure(budget: Duration, mut op: impl FnMut()) -> (f64, Duration) {
    for _ in 0..1_000 {
        op();
    }
    let mut samples = Vec::with_capacity(400_000);
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..100 {
            let t = Instant::now();
            op();
            samples.push(t.elapsed());
        }
    }
    let total: Duration = samples.iter().sum();
    samples.sort_unstable();
    let p99 = samples[samples.len() * 99 / 100];
    (samples.len() as f64 / total.as_secs_f64(), p99)
}

fn ratio_report() {
    let key = ChunkedKey::new(&KEY).unwrap();
    let cipher = Aes256Gcm::new_from_slice(&KEY).unwrap();
    let workspace = WorkspaceId::new();
    let budget = Duration::from_millis(700);
    println!(
        "\nenvelope v1 vs raw AES-256-GCM, one core, same run (ratios travel better than figures):"
    );
    for size in SIZES {
        let plain = vec![0x42u8; size];
        let blob = envelope::seal(&key, 1, &context(&workspace), &plain);
        let (seal_ops, seal_p99) = measure(budget, || {
            drop(black_box(envelope::seal(
                &key,
                1,
                &context(&workspace),
                black_box(&plain),
            )))
        });
        let (open_ops, open_p99) = measure(budget, || {
            drop(black_box(envelope::open(
                &key,
                &context(&workspace),
                black_box(&blob),
            )))
        });
        let nonce = Nonce::from([7u8; 12]);
        let mut buffer = plain.clone();
        let (raw_ops, _) = measure(budget, || {
            black_box(
                cipher
                    .encrypt_inout_detached(&nonce, &[], black_box(buffer.as_mut_slice()).into())
                    .unwrap(),
            );
        });
        println!(
            "  {size:>3} B: seal {:>8.0}/s (p99 {:>5.2} us), open {:>8.0}/s (p99 {:>5.2} us), raw {:>9.0}/s; \
             seal/raw = {:.3}, target 300k seal/s {}",
            seal_ops,
            seal_p99.as_secs_f64() * 1e6,
            open_ops,
            open_p99.as_secs_f64() * 1e6,
            raw_ops,
            seal_ops / raw_ops,
            if seal_ops >= 300_000.0 {
                "met"
            } else {
                "MISSED"
            },
        );
    }
}

fn main() {
    divan::main();
    ratio_report();
}
