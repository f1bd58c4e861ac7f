//! The file-backed store: permissions, durability across reopen and crash, migrations.

use std::path::Path;
use std::sync::Arc;

use leadmaps_core::ErrorKind;
use leadmaps_core::clock::ManualClock;
use leadmaps_core::crypto::Purpose;
use leadmaps_core::store::{
    KeyStore, SecretStore, Store, StoredSecret, WorkspaceStore, WrappedTenantKey,
};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, Scope, SystemTask, UserId, WorkspaceId,
};
use leadmaps_store_sqlite::{SCHEMA_VERSION, SqliteStore};
use time::{Duration, OffsetDateTime};

/// A fixed instant with nanoseconds, to catch any rounding on the way through the database.
fn instant() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::days(20_500) + Duration::nanoseconds(987_654_321)
}

fn gate() -> Gate {
    Gate::new(Arc::new(ManualClock::new(instant())))
}

fn admin(ws: WorkspaceId, action: Action) -> Scope {
    let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
    gate().authorize(&admin, ws, action).unwrap()
}

fn tenant_key(ws: WorkspaceId) -> WrappedTenantKey {
    WrappedTenantKey {
        workspace: ws,
        version: 1,
        kek_id: 7,
        blob: b"sealed-key".to_vec(),
        created_at: instant(),
    }
}

fn license() -> StoredSecret {
    StoredSecret {
        name: "license".into(),
        purpose: Purpose::LicenseKey,
        blob: b"sealed-license".to_vec(),
    }
}

/// Writes a workspace, a secret, a tenant key and a key check.
async fn write_sample(store: &dyn Store, ws: WorkspaceId) {
    let create = gate()
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            ws,
            Action::WorkspaceCreate,
        )
        .unwrap();
    store
        .create_workspace(&create, "Durable", Region::Us, instant())
        .await
        .unwrap();
    store
        .put_secret(&admin(ws, Action::SecretWrite), &license(), instant())
        .await
        .unwrap();
    store
        .insert_tenant_key(&admin(ws, Action::SecretWrite), &tenant_key(ws))
        .await
        .unwrap();
    assert!(store.put_key_check(7, b"canary").await.unwrap());
}

/// Reads back everything [`write_sample`] wrote, exactly.
async fn assert_sample(store: &dyn Store, ws: WorkspaceId) {
    let workspace = store
        .workspace(&admin(ws, Action::WorkspaceRead))
        .await
        .unwrap();
    assert_eq!(
        (workspace.id, workspace.name.as_str(), workspace.region),
        (ws, "Durable", Region::Us)
    );
    assert_eq!(
        workspace.created_at,
        instant(),
        "created_at round-trips to the nanosecond"
    );
    assert_eq!(
        store
            .secret(&admin(ws, Action::SecretRead), "license")
            .await
            .unwrap(),
        Some(license())
    );
    assert_eq!(
        store
            .tenant_keys(&admin(ws, Action::SecretRead))
            .await
            .unwrap(),
        [tenant_key(ws)]
    );
    assert_eq!(
        store.key_check(7).await.unwrap().as_deref(),
        Some(b"canary".as_slice())
    );
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[cfg(unix)]
#[test]
fn database_file_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadmaps.db");
    let store = SqliteStore::open(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    // SQLite gives the WAL and shared-memory files the database file's mode.
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("leadmaps.db{suffix}"));
        assert_eq!(mode(&side), 0o600, "{suffix}");
    }
    drop(store);
}

#[cfg(unix)]
#[test]
fn an_existing_file_is_opened_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    SqliteStore::open(&path).expect("an existing file is not refused");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn file_database_is_migrated_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadmaps.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = raw(&path);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadmaps.db");
    let ws = WorkspaceId::new();
    let store = SqliteStore::open(&path).unwrap();
    write_sample(&store, ws).await;
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_sample(&reopened, ws).await;
    // Reopening again is a no-op for migrations and keeps working.
    drop(reopened);
    assert_sample(&SqliteStore::open(&path).unwrap(), ws).await;
}

const CRASH_CHILD: &str = "LEADMAPS_SQLITE_CRASH_CHILD";

/// The child writes, is acknowledged, and is killed with SIGKILL before any destructor or
/// checkpoint runs; the parent then finds every acknowledged write.
#[cfg(unix)]
#[tokio::test]
async fn acknowledged_writes_survive_a_killed_process() {
    if let Ok(spec) = std::env::var(CRASH_CHILD) {
        let (path, ws) = spec.split_once('|').unwrap();
        let store = SqliteStore::open(path).unwrap();
        write_sample(&store, ws.parse().unwrap()).await;
        // SIGKILL, as kill -9 would; if `kill` is missing, abort: neither runs a destructor.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::thread::sleep(std::time::Duration::from_secs(5));
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let ws = WorkspaceId::new();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_a_killed_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, format!("{}|{ws}", path.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    let killed = matches!(status.signal(), Some(9 | 6));
    assert!(
        killed,
        "the child must write everything, then die by SIGKILL or SIGABRT: {status}"
    );
    assert!(
        dir.path().join("crash.db-wal").exists(),
        "the writes sit in the WAL, not yet checkpointed"
    );
    assert_sample(&SqliteStore::open(&path).unwrap(), ws).await;
}

/// Crypto-shredding must reach the disk: neither the database file nor its WAL keeps the
/// deleted tenant key's bytes.
#[tokio::test]
async fn shredded_tenant_keys_leave_no_bytes_on_disk() {
    const MATERIAL: &[u8] = b"SEALED-TENANT-KEY-MATERIAL-7f3a9c";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shred.db");
    let store = SqliteStore::open(&path).unwrap();
    let ws = WorkspaceId::new();
    write_sample(&store, ws).await;
    let key = WrappedTenantKey {
        version: 2,
        blob: MATERIAL.to_vec(),
        ..tenant_key(ws)
    };
    store
        .insert_tenant_key(&admin(ws, Action::SecretWrite), &key)
        .await
        .unwrap();
    let on_disk = || {
        ["shred.db", "shred.db-wal"].iter().any(|name| {
            let bytes = std::fs::read(dir.path().join(name)).unwrap_or_default();
            bytes.windows(MATERIAL.len()).any(|w| w == MATERIAL)
        })
    };
    assert!(
        on_disk(),
        "the test must be able to see the key before shredding"
    );
    let shred = gate()
        .authorize(
            &Principal::System(SystemTask::KeyRotation),
            ws,
            Action::KeyManage,
        )
        .unwrap();
    assert_eq!(
        store.delete_tenant_keys(&shred, instant()).await.unwrap(),
        2
    );
    assert!(!on_disk(), "shredded key material is still on disk");
    assert_eq!(
        store
            .tenant_keys(&admin(ws, Action::SecretRead))
            .await
            .unwrap(),
        []
    );
}

#[test]
fn a_database_from_newer_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotSupported);
    assert!(error.to_string().contains("newer"), "{error}");
    let conn = raw(&path);
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(
        version,
        SCHEMA_VERSION + 1,
        "a refused database is left untouched"
    );
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0);
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    assert_eq!(
        SqliteStore::open(&path).unwrap_err().kind(),
        ErrorKind::Internal
    );
}

#[tokio::test]
async fn secrets_and_keys_need_an_existing_workspace() {
    let store = SqliteStore::open_in_memory().unwrap();
    let ghost = WorkspaceId::new();
    let put = store
        .put_secret(&admin(ghost, Action::SecretWrite), &license(), instant())
        .await;
    assert_eq!(put.unwrap_err().kind(), ErrorKind::NotFound);
    let insert = store
        .insert_tenant_key(&admin(ghost, Action::SecretWrite), &tenant_key(ghost))
        .await;
    assert_eq!(insert.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn timestamps_outside_the_stored_range_are_invalid() {
    let store = SqliteStore::open_in_memory().unwrap();
    let ws = WorkspaceId::new();
    let create = gate()
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            ws,
            Action::WorkspaceCreate,
        )
        .unwrap();
    let far = OffsetDateTime::UNIX_EPOCH + Duration::days(365 * 400);
    let created = store
        .create_workspace(&create, "Far", Region::Eu, far)
        .await;
    assert_eq!(created.unwrap_err().kind(), ErrorKind::Invalid);
    assert_eq!(
        store.workspace(&create).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("busy.db")).unwrap());
    let ws = WorkspaceId::new();
    write_sample(store.as_ref(), ws).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let secret = StoredSecret {
                    name: format!("s{i:02}"),
                    purpose: Purpose::Other,
                    blob: vec![i; 32],
                };
                store
                    .put_secret(&admin(ws, Action::SecretWrite), &secret, instant())
                    .await
                    .unwrap();
                store
                    .secret(&admin(ws, Action::SecretRead), &secret.name)
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().blob, vec![i as u8; 32]);
    }
    assert_eq!(
        store
            .secret_names(&admin(ws, Action::SecretRead))
            .await
            .unwrap()
            .len(),
        65
    );
}

#[test]
fn calls_work_without_a_tokio_runtime() {
    // Another executor (or none): the store runs the SQL in place instead of panicking.
    let store = SqliteStore::open_in_memory().unwrap();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(store.put_key_check(1, b"x"));
    let std::task::Poll::Ready(stored) = future.as_mut().poll(&mut cx) else {
        panic!("the call completes in place");
    };
    assert!(stored.unwrap());
}
