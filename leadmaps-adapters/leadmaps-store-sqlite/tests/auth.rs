//! The authentication and identity conformance suites, on a fresh database per check: in
//! memory, then on a file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use leadmaps_core::auth::AuthStore;
use leadmaps_core::conformance::{AUTH_CHECKS, IDENTITY_CHECKS, run_auth, run_identity};
use leadmaps_core::store::Store;
use leadmaps_store_sqlite::SqliteStore;

fn in_memory() -> SqliteStore {
    SqliteStore::open_in_memory().expect("open in memory")
}

#[tokio::test]
async fn in_memory_store_passes_the_auth_suite() {
    run_auth(|| async { Arc::new(in_memory()) as Arc<dyn AuthStore> }).await;
}

#[tokio::test]
async fn in_memory_store_passes_the_identity_suite() {
    run_identity(|| async { Arc::new(in_memory()) as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_passes_the_auth_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let counter = AtomicUsize::new(0);
    run_auth(|| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("auth-{n}.db"));
        async move { Arc::new(SqliteStore::open(&path).expect("open file")) as Arc<dyn AuthStore> }
    })
    .await;
    assert_eq!(
        counter.into_inner(),
        AUTH_CHECKS.len(),
        "one file per check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_passes_the_identity_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let counter = AtomicUsize::new(0);
    run_identity(|| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("identity-{n}.db"));
        async move { Arc::new(SqliteStore::open(&path).expect("open file")) as Arc<dyn Store> }
    })
    .await;
    assert_eq!(
        counter.into_inner(),
        IDENTITY_CHECKS.len(),
        "one file per check"
    );
}

/// Across clones of one file store (the pool's threads), parallel takes and claims still win
/// once: each is one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_on_a_file_win_once() {
    use leadmaps_core::auth::staff::{SensitiveAction, StepUpStore};
    use leadmaps_core::auth::totp::{Subject, TotpFactor, TotpStore};
    use leadmaps_core::tenancy::{StaffId, UserId};
    use time::{Duration, OffsetDateTime};

    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("race.db")).expect("open file");
    let subject = Subject::User(UserId::new());
    store
        .put_totp(&TotpFactor {
            subject,
            sealed_seed: vec![1; 40],
            last_step: Some(10),
            failures: 2,
            locked_until: None,
            confirmed: true,
        })
        .await
        .unwrap();
    let staff = StaffId::new();
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    for _ in 0..3 {
        store
            .grant_step_up(
                staff,
                SensitiveAction::RotateKeys,
                now + Duration::minutes(10),
            )
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let claimed = store.claim_totp_step(subject, 11).await.unwrap();
                let took = store
                    .take_step_up(staff, SensitiveAction::RotateKeys, now)
                    .await
                    .unwrap();
                (claimed, took)
            })
        })
        .collect();
    let (mut claims, mut takes) = (0, 0);
    for task in tasks {
        let (claimed, took) = task.await.unwrap();
        claims += usize::from(claimed);
        takes += usize::from(took);
    }
    assert_eq!(claims, 1, "one claim of step 11");
    assert_eq!(takes, 3, "three grants, three uses");
    let factor = store.totp(subject).await.unwrap().unwrap();
    assert_eq!((factor.last_step, factor.failures), (Some(11), 0));
    assert_eq!(
        store
            .claim_totp_step(Subject::User(UserId::new()), 1)
            .await
            .unwrap_err()
            .kind(),
        leadmaps_core::ErrorKind::NotFound,
        "no factor"
    );
}
