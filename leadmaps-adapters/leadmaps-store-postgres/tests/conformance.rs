//! The whole conformance suite against real PostgreSQL, each check on a fresh database.

mod common;

use std::sync::{Arc, Mutex};

use leadmaps_core::store::Store;
use leadmaps_store_postgres::PostgresStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    let server = server_or_skip!();
    // Databases made so far; each is dropped when the next check starts (its store is gone by
    // then) and the last one after the suite, also when a check panics.
    let made: Arc<Mutex<Vec<common::Db>>> = Arc::default();
    let suite = {
        let (server, made) = (server.clone(), made.clone());
        tokio::spawn(async move {
            leadmaps_core::conformance::run_all(|| {
                let (server, made) = (server.clone(), made.clone());
                async move {
                    let finished: Vec<_> = made.lock().unwrap().drain(..).collect();
                    for db in finished {
                        db.drop_db().await;
                    }
                    let db = server.fresh_db().await;
                    made.lock().unwrap().push(db.clone());
                    let store = PostgresStore::connect(&db.store_config().with_pool_size(4))
                        .await
                        .expect("connect");
                    Arc::new(store) as Arc<dyn Store>
                }
            })
            .await;
        })
    };
    let outcome = suite.await;
    let left: Vec<_> = made.lock().unwrap().drain(..).collect();
    for db in left {
        db.drop_db().await;
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
