//! Opening, configuring and using the one connection, and checkpointing its WAL off the commit
//! path.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use leadmaps_core::ingest::batcher::yield_once;
use leadmaps_core::{Error, Result};
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

use crate::error::db;
use crate::migrate::migrate;
use crate::sql;

/// How long a statement waits for another process's lock before failing as `Unavailable`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many prepared statements the connection keeps: more than the store has, so the ingest
/// statements are never evicted and re-prepared.
pub(crate) const STATEMENT_CACHE: usize = 128;

/// WAL frames (pages) not yet copied into the database file at which a commit wakes the
/// background checkpointer: 1 MiB of 4 KiB pages, so that by [`CHECKPOINT_LIMIT`] the thread has
/// copied nearly everything and the commit that checkpoints in place has little left to do.
pub(crate) const CHECKPOINT_START: u32 = 256;

/// WAL frames at which a commit checkpoints in place, as SQLite's autocheckpoint would (unless
/// the background thread is checkpointing then: the next commit does): 4 MiB of 4 KiB pages,
/// the bound on the WAL. The WAL only restarts from its beginning after a checkpoint that caught
/// up with every commit, which under steady load only the writer can guarantee, so a commit
/// reaches this once per cycle.
///
/// Small on purpose: a commit that appends to the WAL file past its end pays for the file's
/// growth in its fsync (on ext4 the inode and allocation metadata are written and waited for
/// too), while one that overwrites frames of an earlier cycle syncs only its data. With an
/// 80 MiB bound the first 80 MiB of ingest after every start were all growth; with 4 MiB it is
/// the first fraction of a second, and the ingest benchmark's commits (about 12 frames each)
/// then fsync in about half the time (median 0.42 ms against 0.78 ms there). The price, an
/// in-place checkpoint of the last few hundred frames once per ~90 commits, is far smaller.
pub(crate) const CHECKPOINT_LIMIT: u32 = 1_024;

/// The connection, shared by every clone of the store and used from blocking threads only, and,
/// for a file, the checkpointer of its WAL.
#[derive(Clone)]
pub(crate) struct Shared {
    conn: Arc<Mutex<Connection>>,
    checkpoints: Checkpoints,
}

impl Shared {
    /// Opens (creating owner-only if missing) and migrates the database file at `path`, and
    /// starts its checkpointer.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, CHECKPOINT_START, CHECKPOINT_LIMIT)
    }

    fn open_with(path: &Path, start: u32, limit: u32) -> Result<Self> {
        create_owner_only(path)?;
        let mut conn = configure(open_file(path)?)?;
        migrate(&mut conn)?;
        // Start with an empty WAL: the migrations' frames are copied into the database now, so
        // the checkpointer's thresholds count only the store's own commits.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(db)?;
        let checkpoints = Checkpoints::start(path, &mut conn, start, limit)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            checkpoints,
        })
    }

    /// A private in-memory database, gone when the last clone is dropped. It has no WAL, so no
    /// checkpointer.
    pub(crate) fn open_in_memory() -> Result<Self> {
        let mut conn = configure(Connection::open_in_memory().map_err(db)?)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            checkpoints: Checkpoints::default(),
        })
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

    /// Like [`Shared::run`], but on a multi-threaded tokio runtime `work` runs on the calling
    /// thread, through [`tokio::task::block_in_place`]: tokio first hands this thread's worker
    /// role and queued tasks to another thread, so no async worker stalls, and the caller goes
    /// on right after `work` instead of waiting to be woken and scheduled again. For the ingest
    /// batcher, which awaits one commit after another, that saves two thread hand-offs per
    /// commit, each 50-200 us on a busy machine. On a current-thread runtime or without one it
    /// is [`Shared::run`].
    ///
    /// Afterwards the task yields once: this thread gave its worker role away, so every task the
    /// caller wakes from here (the batcher answers a whole group right after its commit) would
    /// be a remote schedule, often with a thread wake-up of its own. Rescheduled, the caller goes
    /// on on a worker, where a wake-up is a push to the local queue. In the ingest benchmark this
    /// took the context switches per event from about 1.0 to 0.4 and the futex calls from about
    /// 0.9 to 0.2; events per second moved within the run-to-run noise (ahead on a loaded
    /// machine, level on a quiet one, where the worker hand-off per commit costs as much).
    ///
    /// Only for a caller whose task has nothing else to do meanwhile: futures polled by the
    /// same task (in a `join!` or `select!`) wait for `work` too.
    pub(crate) async fn run_in_place<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                let result = tokio::task::block_in_place(|| work(&mut self.lock()));
                yield_once().await;
                result
            }
            _ => self.run(work).await,
        }
    }

    /// For the ingest batcher's commits: `work` runs right here, on the calling async worker,
    /// when it can start at once: the connection is free and no other connection holds SQLite's
    /// write lock (the attempt runs with no busy timeout, and a busy refusal has written
    /// nothing). Otherwise it is [`Shared::run_in_place`], waiting as every other job does.
    /// Without a multi-threaded tokio runtime it is always [`Shared::run_in_place`].
    ///
    /// The worker is blocked for the commit, its fsync included (a fraction of a millisecond
    /// to a few on a healthy disk); its queued tasks wait or are stolen by the other workers
    /// meanwhile. On the two cores of the ingest benchmark this beat handing the worker role to
    /// another thread for every commit ([`tokio::task::block_in_place`]), which leaves three
    /// busy threads on two cores while the commit, everyone's acknowledgement, waits its turn
    /// for a core: at 64 connections the commit went from about 0.78 ms to 0.45 ms and the
    /// durable collector from about 24 600 to 29 000 events/s (three alternating runs each); at
    /// 256 connections the two stayed within the noise. After the commit the task yields once,
    /// as [`Shared::run_in_place`] does, so the requests that arrived meanwhile join the next
    /// group instead of each waiting for a commit of its own.
    pub(crate) async fn commit_in_place<T, F>(&self, work: F) -> Result<T>
    where
        F: Fn(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let multi_thread = matches!(
            tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
            Ok(tokio::runtime::RuntimeFlavor::MultiThread)
        );
        if multi_thread && let Some(result) = self.try_now(&work) {
            yield_once().await;
            return result;
        }
        self.run_in_place(work).await
    }

    /// `work` on the connection if it is free and SQLite's write lock can be had without
    /// waiting; `None` if not, with nothing written.
    fn try_now<T>(&self, work: &impl Fn(&mut Connection) -> Result<T>) -> Option<Result<T>> {
        // Taken or poisoned: the slow path waits, or repairs the poisoned connection.
        let mut conn = self.conn.try_lock().ok()?;
        conn.busy_timeout(Duration::ZERO).ok()?;
        let result = work(&mut conn);
        // Fails only on a misused handle; reported rather than leaving the timeout at zero
        // unnoticed (a commit it follows stays committed: a retry finds duplicates).
        if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
            return Some(result.and(Err(db(e))));
        }
        match result {
            // SQLITE_BUSY or SQLITE_LOCKED: another connection writes; the transaction did not
            // start or was rolled back, so trying again off the worker writes nothing twice.
            Err(e) if e.kind() == leadmaps_core::ErrorKind::Unavailable => None,
            done => Some(done),
        }
    }

    /// Locks the connection. A job that panicked mid-transaction poisoned the lock; its
    /// `Transaction` rolled back while unwinding, and anything still open is rolled back here,
    /// so the next job starts clean.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(conn) => conn,
            Err(poisoned) => {
                let conn = poisoned.into_inner();
                if !conn.is_autocommit() {
                    // Nothing else to do on failure: the next statement reports the real error.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                self.conn.clear_poison();
                conn
            }
        }
    }

    /// The checkpoints of this database, for a job that truncates the WAL.
    pub(crate) fn checkpoints(&self) -> Checkpoints {
        self.checkpoints.clone()
    }
}

fn open_file(path: &Path) -> Result<Connection> {
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI with options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).map_err(db)
}

fn configure(conn: Connection) -> Result<Connection> {
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
    Ok(conn)
}

/// Checkpoints of a file's WAL, kept out of commits.
///
/// SQLite's autocheckpoint runs inside the commit that takes the WAL past 1000 frames: that
/// commit, an ingest acknowledgement, also copies every frame into the database file and syncs
/// both files, and the next ones wait for it. Here the writer's autocheckpoint is off. Its WAL
/// hook wakes a thread with its own connection once `start` frames wait, and that thread
/// checkpoints (PASSIVE: it never blocks the writer, which goes on committing). Only a commit
/// that takes the WAL to `limit` frames checkpoints in place (what the thread has not copied
/// yet), which also lets the next write restart the WAL from its beginning. Durability is
/// SQLite's either way: a commit is synced to the WAL before it returns, and a checkpoint syncs
/// the WAL before and the database after copying.
///
/// The checkpoints of this process (the thread's, the writer's and the truncation after
/// shredding) take turns on one lock: SQLite refuses a second concurrent checkpoint with
/// `SQLITE_BUSY` at once, without waiting.
#[derive(Clone, Default)]
pub(crate) struct Checkpoints(Option<Arc<Checkpointer>>);

/// The background thread; dropping the last handle stops it.
struct Checkpointer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

/// Shared by the writer's WAL hook and the checkpointer thread.
#[derive(Default)]
struct Signal {
    /// Held for every checkpoint this process runs.
    turn: Mutex<()>,
    wake: Mutex<Wake>,
    woken: Condvar,
}

#[derive(Default)]
struct Wake {
    pending: bool,
    stop: bool,
}

impl Signal {
    fn set(&self, update: impl FnOnce(&mut Wake)) {
        update(&mut self.wake.lock().unwrap_or_else(PoisonError::into_inner));
        self.woken.notify_one();
    }

    /// Waits to be woken; `false` once the store is gone.
    fn wait(&self) -> bool {
        let mut wake = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
        while !wake.pending && !wake.stop {
            wake = self
                .woken
                .wait(wake)
                .unwrap_or_else(PoisonError::into_inner);
        }
        wake.pending = false;
        !wake.stop
    }

    /// This process's turn to checkpoint. A panic while holding it left nothing to repair:
    /// SQLite released its own locks.
    fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The turn if no other checkpoint of this process is running.
    fn try_turn(&self) -> Option<MutexGuard<'_, ()>> {
        match self.turn.try_lock() {
            Ok(turn) => Some(turn),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl Checkpoints {
    /// Replaces the writer's autocheckpoint with [`after_commit`] and starts the thread, with
    /// its own connection to `path`.
    fn start(path: &Path, writer: &mut Connection, start: u32, limit: u32) -> Result<Self> {
        let checkpointer = configure(open_file(path)?)?;
        let signal = Arc::new(Signal::default());
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db)?;
        let hook = signal.clone();
        writer
            .wal_hook(Some(move |wal: &mut Wal, frames: i32| {
                after_commit(&hook, wal, frames, start, limit);
                // Always OK: an error would fail the statement whose commit has happened.
                Ok(())
            }))
            .map_err(db)?;
        let background = signal.clone();
        let thread = std::thread::Builder::new()
            .name("leadmaps-sqlite-checkpoint".into())
            .spawn(move || {
                while background.wait() {
                    let _turn = background.turn();
                    // Best effort: on a failure (another process checkpointing, an I/O error)
                    // the frames wait for the next run or the writer's.
                    let _ = checkpointer.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE);
                }
            })
            .map_err(Error::backend)?;
        Ok(Self(Some(Arc::new(Checkpointer {
            signal,
            thread: Some(thread),
        }))))
    }

    /// After shredding: copies every WAL frame into the database file and truncates the WAL,
    /// so the earlier images of the overwritten pages leave the disk. Waits for a background
    /// checkpoint in progress rather than failing on it. Best effort: the deletion has committed
    /// either way, and a reader in another process can only postpone this to a later checkpoint.
    pub(crate) fn truncate(&self, conn: &Connection) {
        let _turn = self.0.as_ref().map(|c| c.signal.turn());
        let _ = conn.query_row(sql::CHECKPOINT_TRUNCATE, [], |_| Ok(()));
    }
}

/// The writer's WAL hook, after every commit: `frames` is the WAL's length then.
fn after_commit(signal: &Signal, wal: &mut Wal, frames: i32, start: u32, limit: u32) {
    let frames = u32::try_from(frames).unwrap_or(0);
    if frames >= limit {
        // Not while the thread checkpoints: this commit would wait for all of its copying.
        // The next commit finds less left to copy.
        if let Some(_turn) = signal.try_turn() {
            // Best effort, as SQLite's autocheckpoint: what is left waits for the next commit.
            let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
        }
    } else if frames >= start {
        // NOOP only reads the WAL index: how many of the frames are checkpointed.
        if let Ok((log, done)) = wal.checkpoint_v2(CheckpointMode::NOOP)
            && u32::try_from(log.saturating_sub(done)).unwrap_or(0) >= start
        {
            signal.set(|wake| wake.pending = true);
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread once the last clone of the store is gone: it ends a checkpoint in
    /// progress, then closes its connection.
    fn drop(&mut self) {
        self.signal.set(|wake| wake.stop = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
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
        assert_eq!(value("wal_autocheckpoint"), "0", "no checkpoint in commits");
    }

    /// `(frames in the WAL, frames checkpointed)`, without checkpointing.
    fn wal(conn: &Connection) -> (i32, i32) {
        conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::NOOP)
            .unwrap()
    }

    /// Commits `pages` new pages: rows of one 4000-byte blob each, in one transaction.
    fn commit_pages(shared: &Shared, first: u32, pages: u32) {
        let mut conn = shared.lock();
        let tx = conn.transaction().unwrap();
        for kek in first..first + pages {
            tx.execute(
                "INSERT INTO key_checks (kek_id, blob) VALUES (?1, zeroblob(4000))",
                [kek],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn the_wal_is_checkpointed_in_the_background_and_stays_bounded() {
        let (start, limit) = (50, 400);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let shared = Shared::open_with(&path, start, limit).unwrap();
        // The migrations left some 35 frames: start from an empty WAL, or the 20 pages below
        // would take it past `start` and race the thread against the assertion.
        shared.checkpoints().truncate(&shared.lock());
        assert_eq!(wal(&shared.lock()), (0, 0));
        // Below `start`, nothing is checkpointed.
        commit_pages(&shared, 0, 20);
        let (log, done) = wal(&shared.lock());
        assert!(log >= 20 && done == 0, "{log} {done}");
        // Past it, the thread (the only checkpointer left: autocheckpoint is off and the WAL
        // is below `limit`) copies every frame.
        commit_pages(&shared, 20, start);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (log, done) = wal(&shared.lock());
            if log > 0 && done == log {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{log} {done}");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The thread is done (its turn is free: nothing wakes it again below).
        drop(shared.checkpoints.0.as_ref().unwrap().signal.turn());
        // A commit that takes the WAL to `limit` checkpoints in place, before it returns...
        commit_pages(&shared, 1000, limit);
        let (log, done) = wal(&shared.lock());
        assert!(log as u32 >= limit && done == log, "{log} {done}");
        // ...so the next one restarts the WAL from its beginning, and the file stops growing.
        let size = std::fs::metadata(dir.path().join("wal.db-wal"))
            .unwrap()
            .len();
        for round in 0..3 {
            commit_pages(&shared, 2000 + round * limit, limit);
            let (log, _) = wal(&shared.lock());
            assert!((log as u32) < limit + 10, "the WAL restarted: {log}");
        }
        let grown = std::fs::metadata(dir.path().join("wal.db-wal"))
            .unwrap()
            .len();
        assert!(grown <= size + 20 * 4120, "{size} -> {grown}");
        drop(shared);
        assert!(
            !dir.path().join("wal.db-wal").exists(),
            "the last connection closed checkpoints and removes the WAL"
        );
    }

    #[test]
    fn truncating_waits_for_a_background_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::open_with(&dir.path().join("truncate.db"), 10, 100_000).unwrap();
        let checkpoints = shared.checkpoints();
        for round in 0..20 {
            // Each commit wakes the thread; the truncation must still happen every time.
            commit_pages(&shared, round * 50, 50);
            let conn = shared.lock();
            checkpoints.truncate(&conn);
            assert_eq!(wal(&conn), (0, 0), "round {round}");
        }
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
