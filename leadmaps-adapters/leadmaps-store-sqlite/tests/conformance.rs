//! The whole conformance suite, on a fresh database per check: in memory, then on a file.

use std::sync::Arc;

use leadmaps_core::store::Store;
use leadmaps_store_sqlite::SqliteStore;

#[tokio::test]
async fn in_memory_store_passes_the_conformance_suite() {
    leadmaps_core::conformance::run_all(|| async {
        Arc::new(SqliteStore::open_in_memory().expect("open in memory")) as Arc<dyn Store>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    leadmaps_core::conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("check-{n}.db"));
        async move { Arc::new(SqliteStore::open(&path).expect("open file")) as Arc<dyn Store> }
    })
    .await;
    assert_eq!(
        counter.into_inner(),
        leadmaps_core::conformance::CHECKS.len(),
        "one file per check"
    );
}
