//! Event writes on PostgreSQL: raw binary COPY into a plain table against the Postgres store's
//! `append_events` (one array per column and workspace, inserted under row-level security into
//! `event_ids` for idempotency and into the monthly partitions of `events`), with the same rows,
//! measured in the same run.
//!
//! `cargo bench --bench postgres_copy`. It connects to `LEADMAPS_BENCH_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, a superuser), creates its own database and drops
//! it afterwards. Knobs: `LEADMAPS_BENCH_EVENTS` (default 200000), `LEADMAPS_BENCH_BATCH` (1000
//! events per batch), `LEADMAPS_BENCH_WORKSPACES` (1: how many workspaces each batch spans),
//! `LEADMAPS_BENCH_ROUNDS` (4: the sides take turns, a quarter of the rows each),
//! `LEADMAPS_BENCH_IDS` (`generated`: the UUIDv7 the collector gives an event sent without an id,
//! which is every event of Plausible's tracker; `client`: random UUIDv4s, as a batch client that
//! sends its own idempotency keys might).
//!
//! Every side writes batch by batch on one connection, one transaction per batch, so each pays a
//! commit per batch. The baseline is a plain table (same columns, no index, no constraint, no
//! row-level security); the same table with the events' index `(workspace_id, received_at)` and one
//! COPY of every row are printed too, for scale. Target: the store at least 0.5 of raw COPY in
//! batches. The store's gap is work per row in the server (a second table and two indexes, and
//! `INSERT`'s row-at-a-time path where COPY fills a page at a time), so the ratio moves with how
//! busy the machine's cores are: run it a few times and read the range.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::ingest::{Event, EventBatch, EventId, Revenue, Verdict, VisitorId};
use leadmaps_core::store::{EventSink, WorkspaceStore};
use leadmaps_core::tenancy::{Action, Gate, Principal, Region, SystemTask, WorkspaceId};
use leadmaps_store_postgres::{PostgresConfig, PostgresStore};
use time::{Duration, OffsetDateTime};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The columns of `leadmaps.events`, as a plain table: no index, no constraint, no RLS.
const RAW_TABLE: &str = "CREATE TABLE raw_events (
    workspace_id uuid NOT NULL,
    id uuid NOT NULL,
    received_at timestamptz NOT NULL,
    domain text NOT NULL,
    name text NOT NULL,
    hostname text NOT NULL,
    pathname text NOT NULL,
    referrer text,
    props jsonb NOT NULL,
    revenue_amount text,
    revenue_currency text,
    interactive boolean NOT NULL,
    visitor bytea NOT NULL
)";

const RAW_COPY: &str = "COPY raw_events (workspace_id, id, received_at, domain, name, hostname,
    pathname, referrer, props, revenue_amount, revenue_currency, interactive, visitor)
    FROM STDIN (FORMAT binary)";

const RAW_TYPES: [Type; 13] = [
    Type::UUID,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::BYTEA,
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect to Postgres");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A pageview like the collector stores: about 250 bytes of text.
fn event(workspace: WorkspaceId, n: u64, at: OffsetDateTime, client_ids: bool) -> Event {
    Event {
        id: if client_ids {
            EventId(uuid::Uuid::new_v4())
        } else {
            EventId::generate(at)
        },
        workspace,
        domain: "shop.example.com".into(),
        name: if n.is_multiple_of(20) {
            "signup"
        } else {
            "pageview"
        }
        .into(),
        hostname: "shop.example.com".into(),
        pathname: format!("/products/{}?utm_source=newsletter", n % 500),
        referrer: Some("https://duckduckgo.com/".into()),
        props: [("plan".to_owned(), "pro".to_owned())]
            .into_iter()
            .collect(),
        revenue: n.is_multiple_of(20).then(|| Revenue {
            amount: "19.99".into(),
            currency: "EUR".into(),
        }),
        interactive: true,
        visitor: VisitorId((n as u128).to_le_bytes()),
        received_at: at,
    }
}

/// Raw COPY of `events` into `table`, `batch` rows per COPY (each its own transaction); seconds.
async fn raw_copy(client: &Client, table: &str, events: &[Event], batch: usize) -> f64 {
    let copy = client
        .prepare(&RAW_COPY.replace("raw_events", table))
        .await
        .unwrap();
    let props: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::to_value(&e.props).unwrap())
        .collect();
    let started = Instant::now();
    for (chunk, props) in events.chunks(batch).zip(props.chunks(batch)) {
        let sink = client.copy_in(&copy).await.unwrap();
        let writer = BinaryCopyInWriter::new(sink, &RAW_TYPES);
        let mut writer = std::pin::pin!(writer);
        for (e, props) in chunk.iter().zip(props) {
            let revenue = e.revenue.as_ref();
            let row: [&(dyn ToSql + Sync); 13] = [
                e.workspace.as_uuid(),
                &e.id.0,
                &e.received_at,
                &e.domain,
                &e.name,
                &e.hostname,
                &e.pathname,
                &e.referrer,
                props,
                &revenue.map(|r| r.amount.as_str()),
                &revenue.map(|r| r.currency.as_str()),
                &e.interactive,
                &e.visitor.0.as_slice(),
            ];
            writer.as_mut().write(&row).await.unwrap();
        }
        writer.as_mut().finish().await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// The store's `append_events` over `batches`, one after the other; seconds.
async fn store_append(store: &PostgresStore, batches: &[EventBatch]) -> f64 {
    let started = Instant::now();
    for batch in batches {
        let verdicts = store.append_events(batch).await.unwrap();
        assert!(
            verdicts.iter().all(|v| *v == Verdict::Accepted),
            "every event is new"
        );
    }
    started.elapsed().as_secs_f64()
}

async fn run(admin: &Config, dbname: &str) {
    let events_total = env("LEADMAPS_BENCH_EVENTS", 200_000);
    let batch = env("LEADMAPS_BENCH_BATCH", 1000).max(1);
    let workspaces = env("LEADMAPS_BENCH_WORKSPACES", 1).max(1);
    let rounds = env("LEADMAPS_BENCH_ROUNDS", 4).max(1);
    let client_ids = match std::env::var("LEADMAPS_BENCH_IDS").as_deref() {
        Ok("client") => true,
        Ok("generated") | Err(_) => false,
        Ok(other) => panic!("LEADMAPS_BENCH_IDS is generated or client, not {other:?}"),
    };
    let id_kind = if client_ids {
        "client UUIDv4 ids"
    } else {
        "generated UUIDv7 ids"
    };
    println!(
        "postgres event writes: {events_total} events, {batch} per batch, {workspaces} workspace(s) per batch, {rounds} rounds, {id_kind}"
    );

    let mut bench = admin.clone();
    bench.dbname(dbname);
    let config = PostgresConfig::new(bench.clone()).with_pool_size(2);
    let store = Arc::new(PostgresStore::connect(&config).await.unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let mut ids = Vec::new();
    for _ in 0..workspaces {
        let ws = WorkspaceId::new();
        let create = gate
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::WorkspaceCreate,
            )
            .unwrap();
        store
            .create_workspace(&create, "bench", Region::Eu, clock.now())
            .await
            .unwrap();
        ids.push(ws);
    }
    // Received over the last hour, oldest first, spread over the workspaces.
    let now = clock.now();
    let events: Vec<Event> = (0..events_total as u64)
        .map(|n| {
            let at = now - Duration::hours(1)
                + Duration::milliseconds((n * 3_600_000 / events_total as u64) as i64);
            event(ids[n as usize % workspaces], n, at, client_ids)
        })
        .collect();
    let batches: Vec<EventBatch> = events
        .chunks(batch)
        .map(|chunk| {
            let mut batch = EventBatch::new(Region::Eu);
            for e in chunk {
                let scope = gate
                    .authorize(
                        &Principal::Collector {
                            workspace: e.workspace,
                        },
                        e.workspace,
                        Action::EventIngest,
                    )
                    .unwrap();
                batch.push(Region::Eu, scope, e.clone()).unwrap();
            }
            batch
        })
        .collect();

    let raw = connect(&bench).await;
    raw.batch_execute(RAW_TABLE).await.unwrap();
    raw.batch_execute(&format!(
        "{}; CREATE INDEX ON raw_events_ix (workspace_id, received_at)",
        RAW_TABLE.replace("raw_events", "raw_events_ix")
    ))
    .await
    .unwrap();
    // Warm up every path (statements prepared, partitions made) with other rows.
    let warm: Vec<Event> = (0..batch as u64)
        .map(|n| event(ids[0], n, now - Duration::hours(2), client_ids))
        .collect();
    raw_copy(&raw, "raw_events", &warm, batch).await;
    raw_copy(&raw, "raw_events_ix", &warm, batch).await;
    raw.batch_execute("TRUNCATE raw_events, raw_events_ix")
        .await
        .unwrap();
    let mut warm_batch = EventBatch::new(Region::Eu);
    for e in &warm {
        let scope = gate
            .authorize(
                &Principal::Collector { workspace: ids[0] },
                ids[0],
                Action::EventIngest,
            )
            .unwrap();
        warm_batch.push(Region::Eu, scope, e.clone()).unwrap();
    }
    store.append_events(&warm_batch).await.unwrap();

    // The three sides take turns, a slice of the rows each round, so a machine whose load changes
    // during the run slows all of them alike.
    let per_round = batches.len().div_ceil(rounds);
    let (mut raw_secs, mut ix_secs, mut store_secs) = (0.0, 0.0, 0.0);
    for (round, slice) in batches.chunks(per_round).enumerate() {
        let start = round * per_round * batch;
        let rows = &events[start..(start + slice.iter().map(|b| b.events().len()).sum::<usize>())];
        raw_secs += raw_copy(&raw, "raw_events", rows, batch).await;
        ix_secs += raw_copy(&raw, "raw_events_ix", rows, batch).await;
        store_secs += store_append(&store, slice).await;
    }
    let n = events.len() as f64;
    let (raw_rate, ix_rate, store_rate) = (n / raw_secs, n / ix_secs, n / store_secs);
    raw.batch_execute("TRUNCATE raw_events").await.unwrap();
    let single_rate = n / raw_copy(&raw, "raw_events", &events, events.len()).await;
    println!("  raw binary COPY, {batch} per COPY, plain table           {raw_rate:>9.0} events/s");
    println!("  raw binary COPY, {batch} per COPY, with the events' index {ix_rate:>8.0} events/s");
    println!("  raw binary COPY, all rows in one COPY, plain table   {single_rate:>9.0} events/s");
    println!(
        "  store append_events, {batch} per batch                  {store_rate:>9.0} events/s"
    );
    let ratio = store_rate / raw_rate;
    println!(
        "  store / raw COPY in batches = {ratio:.2} (target 0.50: {}); / raw with index = {:.2}; / one COPY = {:.2}",
        if ratio >= 0.5 { "met" } else { "MISSED" },
        store_rate / ix_rate,
        store_rate / single_rate
    );
    store.close();
}

fn main() {
    let url =
        std::env::var("LEADMAPS_BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let admin = Config::from_str(&url).expect("LEADMAPS_BENCH_POSTGRES_URL does not parse");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dbname = format!("leadmaps_bench_{}", uuid::Uuid::new_v4().simple());
    runtime.block_on(async {
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{dbname}\""))
            .await
            .unwrap();
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run(&admin, &dbname));
    }));
    runtime.block_on(async {
        connect(&admin)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{dbname}\" WITH (FORCE)"
            ))
            .await
            .unwrap();
    });
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
