//! The whole conformance suite against real PostgreSQL, each check on a fresh database.

mod common;

use std::sync::Arc;

use leadmaps_core::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    let server = server_or_skip!();
    common::run_on_fresh_databases(&server, leadmaps_core::conformance::CHECKS, |store| {
        Arc::new(store) as Arc<dyn Store>
    })
    .await;
}
