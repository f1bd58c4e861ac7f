//! Ingest on the file-backed store: durability of acknowledged batches across a killed process,
//! all-or-nothing batches, exact round trips, batched retention, and what never reaches the disk
//! (client addresses, user agents, destroyed salts).

use leadmaps_core::policy::RETENTION_BATCH;
use std::path::Path;
use std::sync::Arc;

use leadmaps_core::ErrorKind;
use leadmaps_core::clock::{Clock, ManualClock};
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::ingest::batcher::{self, BatcherConfig};
use leadmaps_core::ingest::bot::BotFilter;
use leadmaps_core::ingest::event::parse;
use leadmaps_core::ingest::privacy::Salts;
use leadmaps_core::ingest::{
    ClientInfo, Collector, CollectorConfig, Event, EventBatch, EventId, Outcome, RejectReason,
    Revenue, Verdict, VisitorId,
};
use leadmaps_core::store::{DropCount, EventSink, SaltStore, Store, StoredSalt};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, Scope, SystemTask, UserId, WorkspaceId,
};
use leadmaps_store_sqlite::SqliteStore;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A fixed instant with nanoseconds, to catch any rounding on the way through the database.
fn instant() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::days(20_500) + Duration::nanoseconds(987_654_321)
}

fn gate() -> Gate {
    Gate::new(Arc::new(ManualClock::new(instant())))
}

fn member(ws: WorkspaceId, action: Action) -> Scope {
    let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
    gate().authorize(&admin, ws, action).unwrap()
}

fn system(task: SystemTask, ws: WorkspaceId, action: Action) -> Scope {
    gate()
        .authorize(&Principal::System(task), ws, action)
        .unwrap()
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

async fn create_workspace(store: &dyn Store, ws: WorkspaceId, region: Region) {
    let create = system(SystemTask::Provisioning, ws, Action::WorkspaceCreate);
    store
        .create_workspace(&create, "Ingest", region, instant())
        .await
        .unwrap();
}

/// An event whose fields vary with `n`: with and without referrer, revenue and props.
fn event(ws: WorkspaceId, n: u128, at: OffsetDateTime) -> Event {
    Event {
        id: EventId(Uuid::from_u128(n)),
        workspace: ws,
        domain: "example.com".into(),
        name: if n.is_multiple_of(3) {
            "signup"
        } else {
            "pageview"
        }
        .into(),
        hostname: "shop.example.com".into(),
        pathname: format!("/p/{n}?utm_source=nl#/route"),
        referrer: n
            .is_multiple_of(2)
            .then(|| "https://duckduckgo.com/".to_owned()),
        props: (0..(n % 4))
            .map(|i| (format!("k{i}"), format!("v{n}")))
            .collect(),
        revenue: n.is_multiple_of(5).then(|| Revenue {
            amount: format!("{n}.99"),
            currency: "EUR".into(),
        }),
        interactive: n % 2 == 1,
        visitor: VisitorId([n as u8; 16]),
        received_at: at,
    }
}

/// Values a careless encoding would bend: quotes, backslashes, newlines and non-ASCII text in
/// props and paths, empty strings, a negative revenue with 18 decimals, an instant before 1970
/// with nanoseconds, the largest id and an all-ones visitor.
fn awkward_event(ws: WorkspaceId) -> Event {
    Event {
        id: EventId(Uuid::from_u128(u128::MAX)),
        workspace: ws,
        domain: "xn--bcher-kva.example".into(),
        name: "Kauf \"abgeschlossen\" ✓".into(),
        hostname: "xn--bcher-kva.example".into(),
        pathname: "/ä/ö?utm_campaign=%22x%22&ref=a\\b#/route".into(),
        referrer: Some(String::new()),
        props: [
            ("quote\"key".to_owned(), "line\nbreak\ttab".to_owned()),
            ("backslash\\".to_owned(), String::new()),
            ("emoji".to_owned(), "📈 Größe".to_owned()),
            ("json".to_owned(), "{\"a\":[1,2]}".to_owned()),
        ]
        .into_iter()
        .collect(),
        revenue: Some(Revenue {
            amount: "-123456789012345678.123456789012345678".into(),
            currency: "JPY".into(),
        }),
        interactive: false,
        visitor: VisitorId([0xff; 16]),
        received_at: OffsetDateTime::UNIX_EPOCH - Duration::days(3) + Duration::nanoseconds(1),
    }
}

fn batch_of(events: &[Event]) -> EventBatch {
    let mut batch = EventBatch::new(Region::Eu);
    for e in events {
        batch
            .push(Region::Eu, ingest(e.workspace), e.clone())
            .unwrap();
    }
    batch
}

/// The events [`write_batch`] stores, ordered as reads return them.
fn sample_events(ws: WorkspaceId) -> Vec<Event> {
    let mut events: Vec<Event> = (1..=40)
        .map(|n| event(ws, n, instant() + Duration::seconds((n % 7) as i64)))
        .collect();
    events.push(awkward_event(ws));
    events.sort_by_key(|e| (e.received_at, e.id));
    events
}

fn sample_drops() -> Vec<DropCount> {
    let day = instant().date();
    vec![
        DropCount {
            day,
            reason: RejectReason::Bot,
            count: 7,
        },
        DropCount {
            day,
            reason: RejectReason::ReferrerSpam,
            count: 1,
        },
        DropCount {
            day,
            reason: RejectReason::BlockedIp,
            count: 2,
        },
    ]
}

/// Creates the workspace and commits the sample events and drop counts in one batch.
async fn write_batch(store: &dyn Store, ws: WorkspaceId) {
    create_workspace(store, ws, Region::Eu).await;
    let events = sample_events(ws);
    let mut batch = batch_of(&events);
    for drop in sample_drops() {
        batch
            .push_drop(Region::Eu, ingest(ws), drop.day, drop.reason, drop.count)
            .unwrap();
    }
    let verdicts = store.append_events(&batch).await.unwrap();
    assert_eq!(verdicts, vec![Verdict::Accepted; events.len()]);
}

async fn all_events(store: &dyn Store, ws: WorkspaceId) -> Vec<Event> {
    let from = OffsetDateTime::UNIX_EPOCH - Duration::days(365 * 100);
    let to = OffsetDateTime::UNIX_EPOCH + Duration::days(365 * 100);
    store
        .events(&member(ws, Action::EventRead), from, to, u32::MAX)
        .await
        .unwrap()
}

/// Reads back everything [`write_batch`] wrote, exactly.
async fn assert_batch(store: &dyn Store, ws: WorkspaceId) {
    assert_eq!(all_events(store, ws).await, sample_events(ws));
    assert_eq!(
        store
            .drop_counts(&member(ws, Action::EventRead))
            .await
            .unwrap(),
        sample_drops(),
        "drop counts come back by day, then reason in core's order"
    );
}

fn file_contains(dir: &Path, files: &[&str], needle: &[u8]) -> bool {
    files.iter().any(|name| {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[tokio::test]
async fn every_event_field_round_trips_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let ws = WorkspaceId::new();
    let store = SqliteStore::open(&path).unwrap();
    write_batch(&store, ws).await;
    assert_batch(&store, ws).await;
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_batch(&reopened, ws).await;
    let read = member(ws, Action::EventRead);
    assert!(
        reopened
            .has_event(&read, EventId(Uuid::from_u128(u128::MAX)))
            .await
            .unwrap()
    );
    // The same batch again: every event a duplicate, every drop count doubled.
    let mut again = batch_of(&sample_events(ws));
    for drop in sample_drops() {
        again
            .push_drop(Region::Eu, ingest(ws), drop.day, drop.reason, drop.count)
            .unwrap();
    }
    let verdicts = reopened.append_events(&again).await.unwrap();
    assert!(verdicts.iter().all(|v| *v == Verdict::Duplicate));
    let doubled: Vec<u64> = reopened
        .drop_counts(&read)
        .await
        .unwrap()
        .iter()
        .map(|d| d.count)
        .collect();
    assert_eq!(doubled, [14, 2, 4]);
}

const CRASH_CHILD: &str = "LEADMAPS_SQLITE_INGEST_CRASH_CHILD";

/// The child commits a batch, sees it acknowledged, and is killed with SIGKILL before any
/// destructor or checkpoint runs; the parent then finds every event and drop count of it.
#[cfg(unix)]
// Multi-threaded, as the server runs: the batch commits on the async worker itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_batch_survives_a_killed_writer() {
    if let Ok(spec) = std::env::var(CRASH_CHILD) {
        let (path, ws) = spec.split_once('|').unwrap();
        let store = SqliteStore::open(path).unwrap();
        write_batch(&store, ws.parse().unwrap()).await;
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
            "an_acknowledged_batch_survives_a_killed_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, format!("{}|{ws}", path.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert!(
        matches!(status.signal(), Some(9 | 6)),
        "the child must commit the batch, then die by SIGKILL or SIGABRT: {status}"
    );
    assert!(
        dir.path().join("crash.db-wal").exists(),
        "the batch sits in the WAL, not yet checkpointed"
    );
    assert_batch(&SqliteStore::open(&path).unwrap(), ws).await;
}

/// A commit that finds SQLite's write lock taken by another connection (another process, as
/// `server workspace create` beside a running server) neither fails nor writes twice: the
/// attempt on the async worker gives up at once and the commit waits off the worker, with the
/// busy timeout, until the other transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_waits_for_another_writer_and_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let ws = WorkspaceId::new();
    create_workspace(store.as_ref(), ws, Region::Eu).await;

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let events = sample_events(ws);
    let batch = batch_of(&events);
    let writer = store.clone();
    let commit = tokio::spawn(async move { writer.append_events(&batch).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !commit.is_finished(),
        "the commit waits for the other writer"
    );
    other.execute_batch("COMMIT").unwrap();

    let verdicts = commit.await.unwrap().unwrap();
    assert_eq!(verdicts, vec![Verdict::Accepted; events.len()]);
    assert_eq!(all_events(store.as_ref(), ws).await, events);
    // The same batch again: every event is already there, once.
    assert_eq!(
        store.append_events(&batch_of(&events)).await.unwrap(),
        vec![Verdict::Duplicate; events.len()]
    );
}

/// One bad entry anywhere fails the whole batch, and nothing of it is written: not the events
/// before it, not its drop counts.
#[tokio::test]
async fn a_failing_batch_writes_nothing() {
    let store = SqliteStore::open_in_memory().unwrap();
    let ws = WorkspaceId::new();
    create_workspace(&store, ws, Region::Eu).await;
    let read = member(ws, Action::EventRead);
    let good = [event(ws, 1, instant()), event(ws, 2, instant())];
    let with_drop = |mut batch: EventBatch| {
        batch
            .push_drop(
                Region::Eu,
                ingest(ws),
                instant().date(),
                RejectReason::Bot,
                5,
            )
            .unwrap();
        batch
    };

    // A workspace that does not exist, after two good events: the foreign key fails it.
    let ghost = WorkspaceId::new();
    let mut events = good.to_vec();
    events.push(event(ghost, 3, instant()));
    let failed = store.append_events(&with_drop(batch_of(&events))).await;
    assert_eq!(failed.unwrap_err().kind(), ErrorKind::NotFound);

    // An instant SQLite cannot hold: refused before any write.
    let mut events = good.to_vec();
    events.push(event(ws, 3, instant() + Duration::days(365 * 300)));
    let failed = store.append_events(&with_drop(batch_of(&events))).await;
    assert_eq!(failed.unwrap_err().kind(), ErrorKind::Invalid);

    // A drop count over i64::MAX.
    let mut batch = batch_of(&good);
    batch
        .push_drop(
            Region::Eu,
            ingest(ws),
            instant().date(),
            RejectReason::Bot,
            u64::MAX,
        )
        .unwrap();
    assert_eq!(
        store.append_events(&batch).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );

    assert!(all_events(&store, ws).await.is_empty());
    assert!(!store.has_event(&read, good[0].id).await.unwrap());
    assert_eq!(store.drop_counts(&read).await.unwrap(), []);
    // Had anything been half-written, these would now be duplicates.
    assert_eq!(
        store
            .append_events(&with_drop(batch_of(&good)))
            .await
            .unwrap(),
        [Verdict::Accepted, Verdict::Accepted]
    );
    assert_eq!(store.drop_counts(&read).await.unwrap()[0].count, 5);
}

#[tokio::test]
async fn a_store_refuses_batches_of_another_region() {
    let eu = SqliteStore::open_in_memory().unwrap();
    assert_eq!(eu.region(), Region::Eu, "EU by default");
    let store = eu.with_region(Region::Us);
    assert_eq!(store.region(), Region::Us);
    assert!(format!("{store:?}").contains("Us"));
    let ws = WorkspaceId::new();
    create_workspace(&store, ws, Region::Us).await;
    let e = event(ws, 1, instant());

    let mut foreign = EventBatch::new(Region::Eu);
    foreign.push(Region::Eu, ingest(ws), e.clone()).unwrap();
    foreign
        .push_drop(
            Region::Eu,
            ingest(ws),
            instant().date(),
            RejectReason::Bot,
            1,
        )
        .unwrap();
    assert_eq!(
        store.append_events(&foreign).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
    let read = member(ws, Action::EventRead);
    assert!(!store.has_event(&read, e.id).await.unwrap());
    assert_eq!(store.drop_counts(&read).await.unwrap(), []);

    let mut own = EventBatch::new(Region::Us);
    own.push(Region::Us, ingest(ws), e.clone()).unwrap();
    assert_eq!(
        store.append_events(&own).await.unwrap(),
        [Verdict::Accepted]
    );
    assert!(store.has_event(&read, e.id).await.unwrap());
}

/// More events than one delete statement takes, with ingest running alongside: the total is
/// exact, newer events and other workspaces are untouched, and concurrent batches land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_a_large_backlog_in_batches() {
    const OLD: u128 = 25_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("retention.db")).unwrap());
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    create_workspace(store.as_ref(), a, Region::Eu).await;
    create_workspace(store.as_ref(), b, Region::Eu).await;
    let cutoff = instant() + Duration::days(30);
    let old: Vec<Event> = (0..OLD)
        .map(|n| event(a, n, instant() + Duration::seconds((n % 86_400) as i64)))
        .collect();
    store.append_events(&batch_of(&old)).await.unwrap();
    let at_cutoff = event(a, OLD, cutoff);
    store
        .append_events(&batch_of(&[at_cutoff.clone(), event(b, 1, instant())]))
        .await
        .unwrap();

    let retention = system(SystemTask::Retention, a, Action::RetentionEnforce);
    let deleting = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut total = 0;
            loop {
                let (deleted, _) = store
                    .delete_events_before(&retention, cutoff, RETENTION_BATCH, cutoff)
                    .await?;
                total += deleted;
                if deleted < u64::from(RETENTION_BATCH) {
                    return Ok::<u64, leadmaps_core::Error>(total);
                }
            }
        })
    };
    let mut fresh = Vec::new();
    for n in 0..20 {
        let e = event(a, OLD + 1 + n, cutoff + Duration::minutes(n as i64));
        let verdicts = store
            .append_events(&batch_of(std::slice::from_ref(&e)))
            .await
            .unwrap();
        assert_eq!(verdicts, [Verdict::Accepted]);
        fresh.push(e);
    }
    assert_eq!(deleting.await.unwrap().unwrap(), OLD as u64);

    let mut left = vec![at_cutoff];
    left.extend(fresh);
    assert_eq!(
        all_events(store.as_ref(), a).await,
        left,
        "the event at the cutoff is kept"
    );
    assert_eq!(all_events(store.as_ref(), b).await.len(), 1);
    let again = system(SystemTask::Retention, a, Action::RetentionEnforce);
    assert_eq!(
        store
            .delete_events_before(&again, cutoff, RETENTION_BATCH, cutoff)
            .await
            .unwrap(),
        (0, None)
    );
    // A deleted id is free again, as in the reference store.
    assert_eq!(
        store
            .append_events(&batch_of(&[event(a, 0, cutoff)]))
            .await
            .unwrap(),
        [Verdict::Accepted]
    );
}

/// Destroying salts must reach the disk: neither the database file nor its WAL keeps the
/// destroyed salt's bytes.
#[tokio::test]
async fn destroyed_salts_leave_no_bytes_on_disk() {
    const SEALED: &[u8] = b"SEALED-SALT-OF-A-DESTROYED-DAY-51c4e0";
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("salts.db")).unwrap();
    let ws = WorkspaceId::new();
    create_workspace(&store, ws, Region::Eu).await;
    let today = instant().date();
    let yesterday = today.previous_day().unwrap();
    let scope = ingest(ws);
    store
        .insert_salt(
            &scope,
            &StoredSalt {
                day: yesterday,
                blob: SEALED.to_vec(),
            },
        )
        .await
        .unwrap();
    store
        .insert_salt(
            &scope,
            &StoredSalt {
                day: today,
                blob: b"today".to_vec(),
            },
        )
        .await
        .unwrap();
    let files = ["salts.db", "salts.db-wal"];
    assert!(
        file_contains(dir.path(), &files, SEALED),
        "the test must be able to see the salt before destroying it"
    );
    let destroy = system(SystemTask::SaltRotation, ws, Action::KeyManage);
    assert_eq!(
        store
            .destroy_salts_before(&destroy, today, instant())
            .await
            .unwrap(),
        [yesterday]
    );
    assert!(
        !file_contains(dir.path(), &files, SEALED),
        "a destroyed salt is still on disk"
    );
    assert_eq!(
        store
            .salts(&scope, &[yesterday, today])
            .await
            .unwrap()
            .len(),
        1
    );
    let records = store
        .salt_destructions(&member(ws, Action::AuditRead))
        .await
        .unwrap();
    assert_eq!(
        (records[0].day, records[0].destroyed_at),
        (yesterday, instant())
    );
}

fn kek(id: u32) -> Kek {
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(29).wrapping_add(3))
        .collect();
    Kek::new(id, &key).unwrap()
}

/// The whole collector on a file: events sent from a distinctive address and user agent are
/// stored (and visible on disk), filtered ones are counted, and neither the address nor the user
/// agent is anywhere in the database file or its WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_events_leave_no_ip_or_user_agent_on_disk() {
    const IP: &str = "203.0.113.77";
    const UA: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 LeadmapsDiskProbe/9.9";
    const UA_TOKEN: &str = "LeadmapsDiskProbe";
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("collector.db")).unwrap());
    let clock = Arc::new(ManualClock::new(instant()));
    let gate = Gate::new(clock.clone());
    let ws = WorkspaceId::new();
    create_workspace(store.as_ref(), ws, Region::Eu).await;
    let update = member(ws, Action::WorkspaceUpdate);
    store
        .add_site(&update, "example.com", clock.now())
        .await
        .unwrap();
    store
        .set_blocked_ips(&update, &["198.51.100.0/24".parse().unwrap()], clock.now())
        .await
        .unwrap();
    let vault = Vault::start(
        KeyRing::new([kek(1)]).unwrap(),
        store.clone(),
        clock.clone(),
    )
    .await
    .unwrap();
    let salts = Arc::new(Salts::new(Arc::new(vault), store.clone(), clock.clone()));
    let (queue, batcher) = batcher::channel(store.clone(), BatcherConfig::default());
    let collector = Collector::new(
        CollectorConfig::default(),
        store.clone(),
        salts,
        gate,
        BotFilter::new(),
        queue,
        clock.clone(),
    );
    let client = ClientInfo {
        ip: IP.parse().unwrap(),
        user_agent: UA,
    };
    let run = async {
        let pages = (0..3)
            .map(|i| {
                parse(
                    &serde_json::json!({
                        "n": "pageview",
                        "u": format!("https://example.com/page-{i}?utm_source=probe&ip={IP}"),
                        "r": "https://ddg.gg/?q=secret",
                        "p": {"plan": "pro"},
                    }),
                    true,
                )
            })
            .collect();
        let outcomes = collector.collect(pages, client).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Accepted(_))));
        let bot = ClientInfo {
            ip: client.ip,
            user_agent: "curl/8.5.0",
        };
        let page = || {
            parse(
                &serde_json::json!({"n": "pageview", "u": "https://example.com/"}),
                true,
            )
        };
        assert_eq!(
            collector.collect(vec![page()], bot).await.unwrap(),
            [Outcome::Rejected(RejectReason::Bot)]
        );
        let blocked = ClientInfo {
            ip: "198.51.100.9".parse().unwrap(),
            user_agent: UA,
        };
        assert_eq!(
            collector.collect(vec![page()], blocked).await.unwrap(),
            [Outcome::Rejected(RejectReason::BlockedIp)]
        );
        drop(collector);
    };
    tokio::join!(batcher.run(), run);

    let events = all_events(store.as_ref(), ws).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.visitor == events[0].visitor));
    assert_eq!(
        store
            .drop_counts(&member(ws, Action::EventRead))
            .await
            .unwrap()
            .len(),
        2
    );
    let files = ["collector.db", "collector.db-wal", "collector.db-shm"];
    assert!(
        file_contains(dir.path(), &files, b"/page-1?utm_source=probe"),
        "the scan must see what was stored"
    );
    for needle in [IP, UA, UA_TOKEN] {
        assert!(
            !file_contains(dir.path(), &files, needle.as_bytes()),
            "{needle:?} reached the disk"
        );
    }
}
