//! Timing of `append_events` on a file database: microseconds per commit and per event for
//! realistic batches, and a breakdown of where a commit's time goes. Ignored by default:
//!
//! ```text
//! cargo test -p leadmaps-store-sqlite --release --test append_timing -- --ignored --nocapture
//! ```
//!
//! Knobs: `LEADMAPS_TIMING_PREFILL` (events written before measuring, default 200 000, so the
//! indexes are larger than SQLite's page cache as in production), `LEADMAPS_TIMING_EVENTS`
//! (events per measured batch size, default 20 000; at least 200 commits each),
//! `LEADMAPS_TIMING_SIZES` (comma-separated batch sizes, default 1,10,30,100,1000),
//! `LEADMAPS_TIMING_WORKSPACES` (how many workspaces a batch spreads over, 1 to 3, default 3).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use leadmaps_core::clock::ManualClock;
use leadmaps_core::ingest::{Event, EventBatch, EventId, Verdict, VisitorId};
use leadmaps_core::store::{EventSink, WorkspaceStore};
use leadmaps_core::tenancy::{Action, Gate, Principal, Region, Scope, SystemTask, WorkspaceId};
use leadmaps_store_sqlite::SqliteStore;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sizes() -> Vec<usize> {
    std::env::var("LEADMAPS_TIMING_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 30, 100, 1000])
}

fn start() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::days(20_500)
}

fn gate() -> Gate {
    Gate::new(Arc::new(ManualClock::new(start())))
}

fn ingest(ws: WorkspaceId) -> Scope {
    gate()
        .authorize(
            &Principal::Collector { workspace: ws },
            ws,
            Action::EventIngest,
        )
        .unwrap()
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        b
    }
}

/// Workspaces and a running event counter: ids are random (v4-like, as the collector makes
/// them), arrival times increase.
struct Gen {
    workspaces: Vec<(WorkspaceId, Scope)>,
    rng: Rng,
    n: u64,
}

impl Gen {
    fn event(&mut self, ws: WorkspaceId) -> Event {
        self.n += 1;
        let n = self.n;
        let r = self.rng.next();
        let mut props = std::collections::BTreeMap::new();
        props.insert(
            "plan".to_owned(),
            if r.is_multiple_of(2) { "free" } else { "pro" }.to_owned(),
        );
        if r.is_multiple_of(3) {
            props.insert("variant".to_owned(), format!("b{}", r % 7));
        }
        Event {
            id: EventId(Uuid::from_bytes(self.rng.bytes())),
            workspace: ws,
            domain: "example.com".into(),
            name: if r.is_multiple_of(10) {
                "signup"
            } else {
                "pageview"
            }
            .into(),
            hostname: "www.example.com".into(),
            pathname: format!("/blog/post-{}", r % 500),
            referrer: Some(
                match r % 3 {
                    0 => "https://www.google.com/",
                    1 => "https://news.ycombinator.com/",
                    _ => "https://duckduckgo.com/",
                }
                .to_owned(),
            ),
            props,
            revenue: None,
            interactive: true,
            visitor: VisitorId(self.rng.bytes()),
            received_at: start() + Duration::microseconds(n as i64 * 50),
        }
    }

    /// A batch of `size` events spread over up to 3 workspaces (1 for a single event).
    fn batch(&mut self, size: usize) -> EventBatch {
        let mut batch = EventBatch::new(Region::Eu);
        let spread = size.clamp(
            1,
            self.workspaces
                .len()
                .min(env("LEADMAPS_TIMING_WORKSPACES", 3)),
        );
        for i in 0..size {
            let (ws, scope) = self.workspaces[i % spread].clone();
            let event = self.event(ws);
            batch.push(Region::Eu, scope, event).unwrap();
        }
        batch
    }
}

async fn setup(store: &SqliteStore) -> Gen {
    let mut workspaces = Vec::new();
    for i in 0..3 {
        let ws = WorkspaceId::new();
        let create = gate()
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::WorkspaceCreate,
            )
            .unwrap();
        store
            .create_workspace(&create, &format!("W{i}"), Region::Eu, start())
            .await
            .unwrap();
        workspaces.push((ws, ingest(ws)));
    }
    Gen {
        workspaces,
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        n: 0,
    }
}

struct Stats {
    commits: usize,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn stats(mut micros: Vec<f64>) -> Stats {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    Stats {
        commits: micros.len(),
        mean: micros.iter().sum::<f64>() / micros.len() as f64,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: *micros.last().unwrap(),
    }
}

/// CPU time of this process so far (every thread, user and system), in microseconds: the sum of
/// `/proc/self/task/*/schedstat` (Linux; 0 elsewhere), precise to the nanosecond.
fn cpu_micros() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut nanos = 0.0;
    for task in tasks.flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            nanos += stat
                .split(' ')
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    nanos / 1e3
}

fn print_header() {
    println!(
        "{:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "events",
        "commits",
        "mean us",
        "p50 us",
        "p90 us",
        "p99 us",
        "max us",
        "us/event",
        "events/s",
        "cpu us/ev"
    );
}

fn print_row(size: usize, s: &Stats, cpu: f64) {
    println!(
        "{:>6} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.1} {:>9.0} {:>9.1}",
        size,
        s.commits,
        s.mean,
        s.p50,
        s.p90,
        s.p99,
        s.max,
        s.mean / size as f64,
        size as f64 * 1e6 / s.mean,
        cpu / (s.commits * size) as f64
    );
}

/// Commits batches of each size through the store and prints the timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing harness: run with --release -- --ignored --nocapture"]
async fn append_events_timing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("timing.db")).unwrap();
    let mut generator = setup(&store).await;
    let prefill = env("LEADMAPS_TIMING_PREFILL", 200_000);
    let started = Instant::now();
    for _ in 0..prefill.div_ceil(1000) {
        let batch = generator.batch(1000);
        store.append_events(&batch).await.unwrap();
    }
    println!(
        "prefilled {prefill} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let per_size = env("LEADMAPS_TIMING_EVENTS", 20_000);
    print_header();
    for size in sizes() {
        let commits = (per_size / size).max(200);
        let batches: Vec<EventBatch> = (0..commits).map(|_| generator.batch(size)).collect();
        // On a worker thread, as the collector's batcher task runs.
        let store = store.clone();
        let (micros, cpu) = tokio::spawn(async move {
            let mut micros = Vec::with_capacity(commits);
            let cpu = cpu_micros();
            for batch in &batches {
                let t = Instant::now();
                let verdicts = store.append_events(batch).await.unwrap();
                micros.push(t.elapsed().as_secs_f64() * 1e6);
                assert_eq!(verdicts.len(), size);
                debug_assert!(verdicts.iter().all(|v| *v == Verdict::Accepted));
            }
            (micros, cpu_micros() - cpu)
        })
        .await
        .unwrap();
        print_row(size, &stats(micros), cpu);
    }
    let wal = std::fs::metadata(dir.path().join("timing.db-wal")).map_or(0, |m| m.len());
    let db = std::fs::metadata(dir.path().join("timing.db")).map_or(0, |m| m.len());
    println!(
        "database {:.1} MiB, WAL {:.1} MiB",
        db as f64 / 1048576.0,
        wal as f64 / 1048576.0
    );
}

/// For scale: a bare `fdatasync` after appending to a file and after overwriting it in place (a
/// WAL past its first cycle), and the thread hand-offs of `spawn_blocking` against
/// `block_in_place` from a worker.
#[test]
#[ignore = "timing harness: run with --release -- --ignored --nocapture"]
fn fsync_and_hop_timing() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("f")).unwrap();
    for (label, bytes) in [("4 KiB", 4096), ("200 KiB", 200 << 10), ("1 MiB", 1 << 20)] {
        let data = vec![7u8; bytes];
        for overwrite in [false, true] {
            let mut micros = Vec::new();
            for i in 0..200 {
                if overwrite {
                    file.seek(SeekFrom::Start((i * bytes) as u64)).unwrap();
                }
                file.write_all(&data).unwrap();
                let t = Instant::now();
                file.sync_data().unwrap();
                micros.push(t.elapsed().as_secs_f64() * 1e6);
            }
            file.seek(SeekFrom::End(0)).unwrap();
            let s = stats(micros);
            println!(
                "fdatasync after {} {label}: mean {:.0} us, p50 {:.0} us, p99 {:.0} us",
                if overwrite {
                    "overwriting"
                } else {
                    "appending"
                },
                s.mean,
                s.p50,
                s.p99
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mutex = Arc::new(Mutex::new(0u64));
    let (hop, in_place) = runtime.block_on(async {
        tokio::spawn(async move {
            let mut hop = Vec::new();
            let mut in_place = Vec::new();
            for _ in 0..5000 {
                let m = mutex.clone();
                let t = Instant::now();
                tokio::task::spawn_blocking(move || *m.lock().unwrap() += 1)
                    .await
                    .unwrap();
                hop.push(t.elapsed().as_secs_f64() * 1e6);
                let t = Instant::now();
                tokio::task::block_in_place(|| *mutex.lock().unwrap() += 1);
                in_place.push(t.elapsed().as_secs_f64() * 1e6);
                // Back onto a worker, as the batcher is after waiting for its queue.
                tokio::task::yield_now().await;
            }
            (stats(hop), stats(in_place))
        })
        .await
        .unwrap()
    });
    for (label, s) in [
        ("spawn_blocking + mutex", hop),
        ("block_in_place + mutex", in_place),
    ] {
        println!(
            "{label}: mean {:.1} us, p50 {:.1} us, p99 {:.1} us",
            s.mean, s.p50, s.p99
        );
    }
}

/// One event flattened as the store binds it, props still a map.
struct RawRow {
    workspace: [u8; 16],
    id: [u8; 16],
    received_at: i64,
    name: String,
    domain: String,
    hostname: String,
    pathname: String,
    referrer: Option<String>,
    props: std::collections::BTreeMap<String, String>,
    props_json: String,
    visitor: [u8; 16],
}

fn raw_rows(batch: &EventBatch) -> Vec<RawRow> {
    batch
        .events()
        .iter()
        .map(|(_, e)| RawRow {
            workspace: *e.workspace.as_uuid().as_bytes(),
            id: *e.id.0.as_bytes(),
            received_at: (e.received_at.unix_timestamp_nanos()) as i64,
            name: e.name.clone(),
            domain: e.domain.clone(),
            hostname: e.hostname.clone(),
            pathname: e.pathname.clone(),
            referrer: e.referrer.clone(),
            props: e.props.clone(),
            props_json: serde_json::to_string(&e.props).unwrap(),
            visitor: e.visitor.0,
        })
        .collect()
}

/// One factor of the breakdown, changed from the store's configuration.
#[derive(Clone, Copy, Default)]
struct Variant {
    name: &'static str,
    synchronous: Option<&'static str>,
    foreign_keys_off: bool,
    no_time_index: bool,
    secure_delete_off: bool,
    checkpoints: Checkpointing,
    cache_kib: Option<i64>,
    page_size: Option<u32>,
    json_preencoded: bool,
    prepare_each_time: bool,
    temp_store_memory: bool,
}

/// Who checkpoints the WAL.
#[derive(Clone, Copy)]
enum Checkpointing {
    /// As the store: a second connection and thread, woken when this many frames are not yet
    /// checkpointed; the writer checkpoints itself once the WAL holds the second number.
    Background(u32, u32),
    /// SQLite's autocheckpoint in the commit that takes the WAL to this many frames (1000 is
    /// SQLite's default and was the store's; 0 never checkpoints).
    Inline(u32),
}

impl Default for Checkpointing {
    fn default() -> Self {
        Self::Background(4000, 20_000)
    }
}

const INSERT_EVENT: &str = "INSERT INTO events (workspace_id, id, received_at, name, domain, hostname, \
     pathname, referrer, props, revenue_amount, revenue_currency, interactive, visitor) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
     ON CONFLICT (workspace_id, id) DO NOTHING";

fn configure(conn: &rusqlite::Connection, variant: &Variant) {
    conn.set_prepared_statement_cache_capacity(64);
    let _: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .unwrap();
    for (pragma, value) in [
        ("synchronous", variant.synchronous.unwrap_or("FULL")),
        ("fullfsync", "ON"),
        ("checkpoint_fullfsync", "ON"),
        (
            "foreign_keys",
            if variant.foreign_keys_off {
                "OFF"
            } else {
                "ON"
            },
        ),
        (
            "secure_delete",
            if variant.secure_delete_off {
                "OFF"
            } else {
                "ON"
            },
        ),
        ("trusted_schema", "OFF"),
    ] {
        conn.pragma_update(None, pragma, value).unwrap();
    }
    if let Some(kib) = variant.cache_kib {
        conn.pragma_update(None, "cache_size", -kib).unwrap();
    }
    if variant.temp_store_memory {
        conn.pragma_update(None, "temp_store", "MEMORY").unwrap();
    }
}

/// A checkpointer thread on its own connection, as the store's (see `connection.rs`).
struct Background {
    wake: Arc<(Mutex<(bool, bool)>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn signal(wake: &(Mutex<(bool, bool)>, Condvar), stop: bool) {
    let mut s = wake.0.lock().unwrap();
    s.0 = true;
    s.1 |= stop;
    wake.1.notify_one();
}

/// A variant's database: a raw connection configured as the store's except for the factor.
struct RawDb {
    conn: rusqlite::Connection,
    variant: Variant,
    background: Option<Background>,
    _dir: tempfile::TempDir,
}

impl RawDb {
    /// Lays the database out with the store (migrations, workspaces), then opens it raw.
    fn open(variant: Variant, workspaces: &[WorkspaceId]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.db");
        if let Some(page_size) = variant.page_size {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "page_size", page_size).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        }
        {
            let store = SqliteStore::open(&path).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                for (i, ws) in workspaces.iter().enumerate() {
                    let create = gate()
                        .authorize(
                            &Principal::System(SystemTask::Provisioning),
                            *ws,
                            Action::WorkspaceCreate,
                        )
                        .unwrap();
                    store
                        .create_workspace(&create, &format!("W{i}"), Region::Eu, start())
                        .await
                        .unwrap();
                }
            });
        }
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        configure(&conn, &variant);
        if let Checkpointing::Inline(pages) = variant.checkpoints {
            conn.pragma_update(None, "wal_autocheckpoint", pages)
                .unwrap();
        }
        if variant.no_time_index {
            conn.execute_batch("DROP INDEX events_by_time").unwrap();
        }
        let background = match variant.checkpoints {
            Checkpointing::Background(start, limit) => Some((start, limit)),
            Checkpointing::Inline(_) => None,
        };
        let background = background.map(|(start, limit)| {
            conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
            let wake = Arc::new((Mutex::new((false, false)), Condvar::new()));
            let turn = Arc::new(Mutex::new(()));
            {
                let (wake, turn) = (wake.clone(), turn.clone());
                conn.wal_hook(Some(move |wal: &mut Wal, frames: i32| {
                    let frames = frames as u32;
                    if frames >= limit {
                        if let Ok(_turn) = turn.try_lock() {
                            let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                        }
                    } else if frames >= start
                        && let Ok((log, done)) = wal.checkpoint_v2(CheckpointMode::NOOP)
                        && (log - done) as u32 >= start
                    {
                        signal(&wake, false);
                    }
                    Ok(())
                }))
                .unwrap();
            }
            let checkpointer = rusqlite::Connection::open(&path).unwrap();
            configure(&checkpointer, &variant);
            let thread = {
                let wake = wake.clone();
                std::thread::spawn(move || {
                    loop {
                        let stop = {
                            let mut s = wake.0.lock().unwrap();
                            while !s.0 {
                                s = wake.1.wait(s).unwrap();
                            }
                            s.0 = false;
                            s.1
                        };
                        if stop {
                            return;
                        }
                        let _turn = turn.lock().unwrap();
                        let _ =
                            checkpointer.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE);
                    }
                })
            };
            Background {
                wake,
                thread: Some(thread),
            }
        });
        Self {
            conn,
            variant,
            background,
            _dir: dir,
        }
    }

    /// Writes one batch as `Flat::write` does; returns how many events were stored.
    fn write(&mut self, rows: &[RawRow]) -> usize {
        let variant = self.variant;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let mut stored = 0;
        {
            let mut insert = if variant.prepare_each_time {
                Prepared::Plain(tx.prepare(INSERT_EVENT).unwrap())
            } else {
                Prepared::Cached(tx.prepare_cached(INSERT_EVENT).unwrap())
            };
            let mut json = Vec::new();
            for row in rows {
                let props = if variant.json_preencoded {
                    row.props_json.as_bytes()
                } else {
                    json.clear();
                    serde_json::to_writer(&mut json, &row.props).unwrap();
                    json.as_slice()
                };
                let props =
                    rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(props));
                stored += insert
                    .execute(rusqlite::params![
                        row.workspace,
                        row.id,
                        row.received_at,
                        row.name,
                        row.domain,
                        row.hostname,
                        row.pathname,
                        row.referrer,
                        props,
                        None::<&str>,
                        None::<&str>,
                        true,
                        row.visitor,
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        stored
    }
}

impl Drop for RawDb {
    fn drop(&mut self) {
        if let Some(background) = &mut self.background {
            signal(&background.wake, true);
            let _ = background.thread.take().map(std::thread::JoinHandle::join);
        }
    }
}

enum Prepared<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Plain(rusqlite::Statement<'c>),
}

impl Prepared<'_> {
    fn execute<P: rusqlite::Params>(&mut self, params: P) -> rusqlite::Result<usize> {
        match self {
            Self::Cached(s) => s.execute(params),
            Self::Plain(s) => s.execute(params),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Every variant on its own raw connection and database, configured as the store's but for one
/// factor, with the same prefill and batches (written as `Flat::write` does, without the store's
/// thread hand-off; "autockpt 1000" is the store's configuration before its checkpoints moved to
/// a background thread). The variants take turns
/// (rounds of `LEADMAPS_TIMING_ROUNDS`, default 5, each ~1/rounds of the batches), so load from
/// elsewhere on the machine spreads over all of them; each cell is the median over rounds of the
/// mean microseconds per commit, then the CPU microseconds per event of the whole process.
/// `LEADMAPS_TIMING_VARIANTS` picks variants by name (comma-separated).
#[test]
#[ignore = "timing harness: run with --release -- --ignored --nocapture"]
fn append_breakdown() {
    // The store's configuration (background checkpoints 4000/20000), then one factor changed.
    let base = Variant {
        name: "store",
        ..Variant::default()
    };
    let all = [
        base,
        Variant {
            name: "sync NORMAL",
            synchronous: Some("NORMAL"),
            ..base
        },
        Variant {
            name: "sync OFF",
            synchronous: Some("OFF"),
            ..base
        },
        Variant {
            name: "autockpt 1000",
            checkpoints: Checkpointing::Inline(1000),
            ..base
        },
        Variant {
            name: "autockpt 10000",
            checkpoints: Checkpointing::Inline(10_000),
            ..base
        },
        Variant {
            name: "autockpt off",
            checkpoints: Checkpointing::Inline(0),
            ..base
        },
        Variant {
            name: "bg 1000/4000",
            checkpoints: Checkpointing::Background(1000, 4000),
            ..base
        },
        Variant {
            name: "bg 2000/10000",
            checkpoints: Checkpointing::Background(2000, 10_000),
            ..base
        },
        Variant {
            name: "foreign_keys off",
            foreign_keys_off: true,
            ..base
        },
        Variant {
            name: "no time index",
            no_time_index: true,
            ..base
        },
        Variant {
            name: "secure_delete off",
            secure_delete_off: true,
            ..base
        },
        Variant {
            name: "cache 64 MiB",
            cache_kib: Some(65536),
            ..base
        },
        Variant {
            name: "page 1 KiB",
            page_size: Some(1024),
            ..base
        },
        Variant {
            name: "page 2 KiB",
            page_size: Some(2048),
            ..base
        },
        Variant {
            name: "page 16 KiB",
            page_size: Some(16384),
            ..base
        },
        Variant {
            name: "json pre-encoded",
            json_preencoded: true,
            ..base
        },
        Variant {
            name: "prepare each",
            prepare_each_time: true,
            ..base
        },
        Variant {
            name: "temp_store mem",
            temp_store_memory: true,
            ..base
        },
    ];
    let only = std::env::var("LEADMAPS_TIMING_VARIANTS").ok();
    let variants: Vec<Variant> = all
        .into_iter()
        .filter(|v| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n.trim() == v.name))
        })
        .collect();
    let prefill = env("LEADMAPS_TIMING_PREFILL", 200_000);
    let per_size = env("LEADMAPS_TIMING_EVENTS", 20_000);
    let rounds = env("LEADMAPS_TIMING_ROUNDS", 5);
    let workspaces: Vec<WorkspaceId> = (0..3).map(|_| WorkspaceId::new()).collect();
    let mut generator = Gen {
        workspaces: workspaces.iter().map(|ws| (*ws, ingest(*ws))).collect(),
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        n: 0,
    };
    let prefill_rows: Vec<Vec<RawRow>> = (0..prefill.div_ceil(1000))
        .map(|_| raw_rows(&generator.batch(1000)))
        .collect();
    let mut dbs: Vec<RawDb> = variants
        .iter()
        .map(|v| {
            let mut db = RawDb::open(*v, &workspaces);
            for rows in &prefill_rows {
                db.write(rows);
            }
            db
        })
        .collect();
    drop(prefill_rows);
    let sizes = sizes();
    // results[variant][size] = (per-round mean us per commit, per-round cpu us per event)
    let mut results = vec![vec![(Vec::new(), Vec::new()); sizes.len()]; variants.len()];
    for (s, &size) in sizes.iter().enumerate() {
        let commits_per_round = ((per_size / size).max(200) / rounds).max(1);
        for _ in 0..rounds {
            let batches: Vec<Vec<RawRow>> = (0..commits_per_round)
                .map(|_| raw_rows(&generator.batch(size)))
                .collect();
            for (v, db) in dbs.iter_mut().enumerate() {
                let cpu = cpu_micros();
                let t = Instant::now();
                for rows in &batches {
                    assert_eq!(db.write(rows), size);
                }
                let wall = t.elapsed().as_secs_f64() * 1e6 / commits_per_round as f64;
                let cpu = (cpu_micros() - cpu) / (commits_per_round * size) as f64;
                results[v][s].0.push(wall);
                results[v][s].1.push(cpu);
            }
        }
    }
    print!("{:<20}", "variant \\ events");
    for size in &sizes {
        print!(" {:>17}", format!("{size}: us/cpu"));
    }
    println!("   (us per commit / cpu us per event, medians over {rounds} rounds)");
    for (v, variant) in variants.iter().enumerate() {
        print!("{:<20}", variant.name);
        for cell in &results[v] {
            print!(
                " {:>17}",
                format!(
                    "{:.0}/{:.1}",
                    median(cell.0.clone()),
                    median(cell.1.clone())
                )
            );
        }
        println!();
    }
}
