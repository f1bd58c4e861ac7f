//! Opening, configuring and using the one connection.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leadmaps_core::{Error, Result};
use rusqlite::{Connection, OpenFlags};

use crate::error::db;
use crate::migrate::migrate;

/// How long a statement waits for another process's lock before failing as `Unavailable`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many prepared statements the connection keeps: more than the store has, so the ingest
/// statements are never evicted and re-prepared.
pub(crate) const STATEMENT_CACHE: usize = 64;

/// The connection, shared by every clone of the store and used from blocking threads only.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Mutex<Connection>>);

impl Shared {
    /// Opens (creating owner-only if missing) and migrates the database file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        create_owner_only(path)?;
        // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI with options.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::configure(Connection::open_with_flags(path, flags).map_err(db)?)
    }

    /// A private in-memory database, gone when the last clone is dropped.
    pub(crate) fn open_in_memory() -> Result<Self> {
        Self::configure(Connection::open_in_memory().map_err(db)?)
    }

    fn configure(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Memory databases answer "memory" and stay so; files switch to WAL, persistently.
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db)?;
        for (pragma, value) in [
            // An acknowledged commit is on disk: WAL synced at every commit, not only at checkpoints.
            ("synchronous", "FULL"),
            // macOS: fsync alone does not flush the drive cache; F_FULLFSYNC does (no-op elsewhere).
            ("fullfsync", "ON"),
            ("checkpoint_fullfsync", "ON"),
            ("foreign_keys", "ON"),
            // Deleted rows (shredded tenant keys, replaced secrets) are overwritten, not left in free pages.
            ("secure_delete", "ON"),
            // The schema is ours alone: no functions with side effects from views or triggers.
            ("trusted_schema", "OFF"),
        ] {
            conn.pragma_update(None, pragma, value).map_err(db)?;
        }
        migrate(&mut conn)?;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    /// Runs `work` with the connection on tokio's blocking pool, so SQLite's file I/O and lock
    /// waits never stall the async workers. Without a tokio runtime (another executor) it runs
    /// in place, blocking that executor's thread.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = self.clone();
        let job = move || work(&mut shared.lock());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => match runtime.spawn_blocking(job).await {
                Ok(result) => result,
                // A panic in the job is a bug: let it surface in the caller as a panic.
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(join) => Err(Error::unavailable(join)),
            },
            Err(_) => job(),
        }
    }

    /// Locks the connection. A job that panicked mid-transaction poisoned the lock; its
    /// `Transaction` rolled back while unwinding, and anything still open is rolled back here,
    /// so the next job starts clean.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.0.lock() {
            Ok(conn) => conn,
            Err(poisoned) => {
                let conn = poisoned.into_inner();
                if !conn.is_autocommit() {
                    // Nothing else to do on failure: the next statement reports the real error.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                self.0.clear_poison();
                conn
            }
        }
    }
}

/// Creates the file with mode 0600 (it holds sealed secrets) if it does not exist. SQLite gives
/// the `-wal` and `-shm` files it creates later the database file's mode. An existing file is
/// opened as it is.
#[cfg(unix)]
fn create_owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::backend(e)),
    }
}

/// Elsewhere SQLite creates the file with the platform's defaults.
#[cfg(not(unix))]
fn create_owner_only(_path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_connection_runs_durable_and_strict() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::open(&dir.path().join("pragmas.db")).unwrap();
        let conn = shared.lock();
        let value = |pragma: &str| -> String {
            conn.pragma_query_value(None, pragma, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(value("journal_mode"), "wal");
        assert_eq!(value("synchronous"), "2", "FULL");
        assert_eq!(value("foreign_keys"), "1");
        assert_eq!(value("secure_delete"), "1");
        assert_eq!(value("trusted_schema"), "0");
        assert_eq!(value("busy_timeout"), BUSY_TIMEOUT.as_millis().to_string());
    }

    #[test]
    fn a_poisoned_lock_is_recovered_with_no_open_transaction() {
        let shared = Shared::open_in_memory().unwrap();
        let clone = shared.clone();
        let panicked = std::thread::spawn(move || {
            let conn = clone.lock();
            conn.execute_batch("BEGIN; INSERT INTO key_checks (kek_id, blob) VALUES (1, x'00');")
                .unwrap();
            panic!("a job panics mid-transaction");
        })
        .join();
        assert!(panicked.is_err());
        let conn = shared.lock();
        assert!(
            conn.is_autocommit(),
            "the half-done transaction was rolled back"
        );
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM key_checks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }
}
