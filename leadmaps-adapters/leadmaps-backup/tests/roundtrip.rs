//! Backups round trip: create, list, restore into a fresh database, every row identical; and
//! every kind of tampering, or a wrong key, fails with the one clear error and writes nothing.

mod common;

use std::sync::Arc;

use leadmaps_backup::{
    BackupKeys, BackupTarget, CORRUPT, Database, Error, PostgresDatabase, Progress, S3Options,
    SourceKind, create, list, restore,
};
use leadmaps_core::clock::ManualClock;
use leadmaps_core::crypto::chunked::{CHUNK_LEN, HEADER_LEN, TAG_LEN};
use leadmaps_store_postgres::{PostgresConfig, PostgresStore};
use leadmaps_store_sqlite::SqliteStore;
use object_store::ObjectStoreExt as _;
use object_store::PutPayload;

use common::{FreshDb, START, dump_sqlite, ring, row_count};

/// Counts what progress reports.
#[derive(Default)]
struct Counted {
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

impl Progress for Counted {
    fn total(&self, bytes: u64) {
        self.total
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Counted {
    fn done(&self) -> u64 {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn read(target: &BackupTarget, name: &str) -> Vec<u8> {
    let path = target.path(name).unwrap();
    target
        .store()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn write(target: &BackupTarget, name: &str, bytes: Vec<u8>) {
    let path = target.path(name).unwrap();
    target
        .store()
        .put(&path, PutPayload::from(bytes))
        .await
        .unwrap();
}

/// The offset of the first chunk of the encrypted body.
fn body_start(object: &[u8]) -> usize {
    13 + u32::from_be_bytes(object[9..13].try_into().unwrap()) as usize + HEADER_LEN
}

/// Every way of spoiling a stored backup `name`, each stored under its own name at the target
/// (the renamed one is the original's bytes under another name), with a description.
async fn spoiled(target: &BackupTarget, name: &str) -> Vec<(String, &'static str)> {
    let original = read(target, name).await;
    let body = body_start(&original);
    assert!(
        original.len() > body + 2 * (CHUNK_LEN + TAG_LEN),
        "a backup of several chunks"
    );
    let mut cases: Vec<(Vec<u8>, &'static str)> = Vec::new();
    let mut flip = |at: usize, what| {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        cases.push((bytes, what));
    };
    flip(0, "a flipped magic byte");
    flip(20, "a flipped header byte");
    flip(body - HEADER_LEN + 3, "a flipped salt byte");
    flip(body - 5, "a flipped commitment byte");
    flip(body + CHUNK_LEN + 100, "a flipped byte in the second chunk");
    flip(original.len() / 2, "a flipped byte in the middle");
    flip(original.len() - 1, "a flipped last byte");
    cases.push((original[..original.len() - 1].to_vec(), "one byte cut off"));
    cases.push((
        original[..body + 2 * (CHUNK_LEN + TAG_LEN)].to_vec(),
        "cut at a chunk boundary",
    ));
    cases.push((original[..body].to_vec(), "only the header left"));
    let mut longer = original.clone();
    longer.extend_from_slice(&[0; 17]);
    cases.push((longer, "17 bytes appended"));
    let mut out = Vec::new();
    for (n, (bytes, what)) in cases.into_iter().enumerate() {
        let spoiled = format!("spoiled-{n}.lmbk");
        write(target, &spoiled, bytes).await;
        out.push((spoiled, what));
    }
    // The original bytes under another backup's name.
    let renamed = "leadmaps-20260314T150927Z-00000000000000000000000000000001.lmbk";
    write(target, renamed, original).await;
    out.push((renamed.to_owned(), "renamed"));
    out
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    match result {
        Err(Error::Corrupt) => {
            assert_eq!(Error::Corrupt.to_string(), CORRUPT);
        }
        other => panic!("{what}: expected the corrupt-backup error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_round_trip_through_a_directory_and_every_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let store = Arc::new(SqliteStore::open(&source).unwrap());
    common::populate(store.clone(), ring(&[(1, 1)])).await;
    let before = dump_sqlite(&source);
    assert!(row_count(&before) > 100, "{before:?}");

    let keys = BackupKeys::new(&ring(&[(1, 1)]));
    let target = BackupTarget::from_url(
        &format!("file://{}", dir.path().join("backups").display()),
        &S3Options::default(),
    )
    .unwrap();
    let clock = ManualClock::new(START);
    let progress = Counted::default();
    // The store stays open (and could be writing): the snapshot is taken beside it.
    let made = create(
        &Database::Sqlite(source.clone()),
        &target,
        &keys,
        &clock,
        &progress,
    )
    .await
    .unwrap();
    drop(store);
    assert_eq!(made.header.source, SourceKind::Sqlite);
    assert_eq!(made.header.kek_id, 1);
    assert_eq!(made.header.created_at, START.replace_nanosecond(0).unwrap());
    assert_eq!(progress.done(), made.size);
    assert!(
        made.name.starts_with("leadmaps-20260314T150926Z-"),
        "{}",
        made.name
    );

    let listed = list(&target).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, made.name);
    assert_eq!(listed[0].size, made.size);
    assert_eq!(listed[0].header.as_ref(), Some(&made.header));

    // The object holds no plaintext of the database: not a table name, not a domain.
    let object = read(&target, &made.name).await;
    for needle in [
        "site0.example",
        "CREATE TABLE",
        "SQLite format 3",
        "admin0@example.com",
    ] {
        assert!(
            !object.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} is readable in the backup"
        );
    }

    let restored = dir.path().join("restored").join("leadmaps.db");
    let progress = Counted::default();
    let report = restore(
        &target,
        &made.name,
        &keys,
        &Database::Sqlite(restored.clone()),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(report.header, made.header);
    assert_eq!(progress.total(), made.size);
    assert_eq!(progress.done(), made.size);
    assert_eq!(dump_sqlite(&restored), before, "every row identical");
    assert!(
        report
            .tables
            .iter()
            .any(|(t, rows)| t == "events" && *rows == 600),
        "{report:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&restored).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the restored file is owner-only: {mode:o}");
    }
    // The restored file is a working store, and the audit log still verifies there.
    drop(SqliteStore::open(&restored).unwrap());

    // A database with rows is never overwritten.
    assert!(matches!(
        restore(
            &target,
            &made.name,
            &keys,
            &Database::Sqlite(restored.clone()),
            &()
        )
        .await,
        Err(Error::NotEmpty)
    ));
    assert!(matches!(
        restore(
            &target,
            &made.name,
            &keys,
            &Database::Sqlite(source.clone()),
            &()
        )
        .await,
        Err(Error::NotEmpty)
    ));
    assert_eq!(dump_sqlite(&restored), before);
    // An empty store's file is a fine destination.
    let empty = dir.path().join("empty.db");
    drop(SqliteStore::open(&empty).unwrap());
    restore(
        &target,
        &made.name,
        &keys,
        &Database::Sqlite(empty.clone()),
        &(),
    )
    .await
    .unwrap();
    assert_eq!(dump_sqlite(&empty), before);

    // After a KEK rotation the ring still holds KEK 1, and the old backup restores.
    let rotated = BackupKeys::new(&ring(&[(1, 1), (2, 2)]));
    assert_eq!(rotated.primary(), 2);
    let again = dir.path().join("rotated.db");
    restore(
        &target,
        &made.name,
        &rotated,
        &Database::Sqlite(again.clone()),
        &(),
    )
    .await
    .unwrap();
    assert_eq!(dump_sqlite(&again), before);

    // Another key under the same id: corrupt, and nothing written.
    let fresh = dir.path().join("fresh.db");
    let wrong = BackupKeys::new(&ring(&[(1, 9)]));
    assert_corrupt(
        restore(
            &target,
            &made.name,
            &wrong,
            &Database::Sqlite(fresh.clone()),
            &(),
        )
        .await,
        "a wrong KEK",
    );
    // A ring without the backup's KEK says which one is missing.
    let without = BackupKeys::new(&ring(&[(2, 2)]));
    let missing = restore(
        &target,
        &made.name,
        &without,
        &Database::Sqlite(fresh.clone()),
        &(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(missing, Error::MissingKey { kek_id: 1 }),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("KEK 1"));

    for (name, what) in spoiled(&target, &made.name).await {
        let result = restore(&target, &name, &keys, &Database::Sqlite(fresh.clone()), &()).await;
        assert_corrupt(result, what);
        assert!(!fresh.exists(), "{what}: nothing is written");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".leadmaps-restore-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files removed: {leftovers:?}"
    );
    assert!(matches!(
        restore(
            &target,
            "leadmaps-none.lmbk",
            &keys,
            &Database::Sqlite(fresh.clone()),
            &()
        )
        .await,
        Err(Error::NotFound(_))
    ));
    // The listing shows the spoiled objects too, the truncated ones without a header.
    assert!(list(&target).await.unwrap().len() > 10);
}

/// A populated Postgres database backed up to `target`, restored into a fresh database after
/// every spoiled copy failed on that same database: it stays empty throughout, and ends up
/// holding every row of the source.
async fn postgres_round_trip(admin: &tokio_postgres::Config, target: &BackupTarget) {
    let source = FreshDb::new(admin).await;
    let destination = FreshDb::new(admin).await;
    let outcome = tokio::spawn(round_trip_on(
        source.clone(),
        destination.clone(),
        target.clone(),
    ))
    .await;
    source.drop_db().await;
    destination.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn round_trip_on(source: FreshDb, destination: FreshDb, target: BackupTarget) {
    let target = &target;
    {
        let store = PostgresStore::connect(&PostgresConfig::new(source.config()).with_pool_size(4))
            .await
            .unwrap();
        common::populate(Arc::new(store), ring(&[(1, 1)])).await;
        let before = source.dump().await;
        assert!(row_count(&before) > 100, "{before:?}");
        assert!(before["#partitions"].len() >= 2, "{before:?}");

        let keys = BackupKeys::new(&ring(&[(1, 1)]));
        let clock = ManualClock::new(START);
        let made = create(
            &Database::Postgres(Box::new(PostgresDatabase::new(source.config()))),
            target,
            &keys,
            &clock,
            &(),
        )
        .await
        .unwrap();
        assert_eq!(made.header.source, SourceKind::Postgres);
        assert_eq!(
            made.header.schema_version,
            leadmaps_store_postgres::LATEST_VERSION
        );
        let listed = list(target).await.unwrap();
        let entry = listed.iter().find(|e| e.name == made.name).expect("listed");
        assert_eq!(
            (entry.size, entry.header.as_ref()),
            (made.size, Some(&made.header))
        );

        let into = Database::Postgres(Box::new(PostgresDatabase::new(destination.config())));
        for (name, what) in spoiled(target, &made.name).await {
            assert_corrupt(restore(target, &name, &keys, &into, &()).await, what);
            assert_eq!(
                row_count(&destination.dump().await),
                0,
                "{what}: nothing is written"
            );
        }
        assert_corrupt(
            restore(
                target,
                &made.name,
                &BackupKeys::new(&ring(&[(1, 9)])),
                &into,
                &(),
            )
            .await,
            "a wrong KEK",
        );
        assert!(matches!(
            restore(
                target,
                &made.name,
                &BackupKeys::new(&ring(&[(3, 3)])),
                &into,
                &()
            )
            .await,
            Err(Error::MissingKey { kek_id: 1 })
        ));
        assert_eq!(row_count(&destination.dump().await), 0);

        let progress = Counted::default();
        let report = restore(target, &made.name, &keys, &into, &progress)
            .await
            .unwrap();
        assert_eq!(progress.done(), made.size);
        let after = destination.dump().await;
        assert_eq!(after, before, "every row identical");
        assert!(
            report
                .tables
                .iter()
                .any(|(t, rows)| t == "events" && *rows == 600),
            "{report:?}"
        );
        // The restored database serves: the store connects (its posture checks pass) and the
        // doctor finds nothing wrong with its tenancy.
        let restored = PostgresConfig::new(destination.config()).with_pool_size(2);
        PostgresStore::connect(&restored).await.unwrap().close();
        let doctor = leadmaps_store_postgres::doctor(&restored).await.unwrap();
        assert!(doctor.is_clean(), "{doctor}");

        // Now it has rows: never again.
        assert!(matches!(
            restore(target, &made.name, &keys, &into, &()).await,
            Err(Error::NotEmpty)
        ));
        assert_eq!(destination.dump().await, before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_round_trip_through_a_directory() {
    let Some(admin) = common::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = BackupTarget::directory(dir.path()).unwrap();
    postgres_round_trip(&admin, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_round_trip_through_s3_compatible_storage() {
    let Some(admin) = common::postgres().await else {
        return;
    };
    let Some(moto) = common::moto("leadmaps-backups") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = S3Options {
        endpoint: Some(moto.endpoint.clone()),
        region: Some("eu-central-1".into()),
        access_key_id: Some("test-access-key".into()),
        secret_access_key: Some("test-secret-key".into()),
        session_token: None,
    };
    let target = BackupTarget::from_url("s3://leadmaps-backups/eu/nightly", &options).unwrap();
    postgres_round_trip(&admin, &target).await;
    // The objects are under the prefix.
    let everything = BackupTarget::from_url("s3://leadmaps-backups", &options).unwrap();
    assert!(
        list(&everything).await.unwrap().is_empty(),
        "nothing at the bucket's root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_only_into_its_own_store_kind() {
    let Some(admin) = common::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    drop(SqliteStore::open(&source).unwrap());
    let target = BackupTarget::directory(&dir.path().join("b")).unwrap();
    let keys = BackupKeys::new(&ring(&[(1, 1)]));
    let made = create(
        &Database::Sqlite(source),
        &target,
        &keys,
        &ManualClock::new(START),
        &(),
    )
    .await
    .unwrap();
    let destination = FreshDb::new(&admin).await;
    let result = restore(
        &target,
        &made.name,
        &keys,
        &Database::Postgres(Box::new(PostgresDatabase::new(destination.config()))),
        &(),
    )
    .await;
    let dump = destination.dump().await;
    destination.drop_db().await;
    assert!(matches!(result, Err(Error::Incompatible(_))), "{result:?}");
    assert!(dump.is_empty(), "not even migrated: {dump:?}");
}
