//! Ingest throughput over loopback HTTP: the durable collector (group commit on a store) against
//! a bare axum handler that answers 202 to the same requests, measured in the same run.
//!
//! `cargo bench --bench ingest` runs it on SQLite (a temp directory, synchronous=FULL). Set
//! `LEADMAPS_BENCH_POSTGRES_URL=postgres://...` to measure the Postgres store as well.
//! Knobs: `LEADMAPS_BENCH_SECONDS` (default 3 per side and round), `LEADMAPS_BENCH_ROUNDS` (3),
//! `LEADMAPS_BENCH_CONNECTIONS` (64), `LEADMAPS_BENCH_EVENTS_PER_REQUEST` (1: Plausible's tracker
//! sends one event per request), `LEADMAPS_BENCH_STORES` (`memory,sqlite`: which collector sides
//! run; for profiling one side alone).
//!
//! The two sides alternate, bare then collector, round after round, and the ratio is the median
//! of the rounds' ratios: on a shared machine whose speed drifts over seconds (bare axum alone
//! moved between 45 000 and 95 000 events/s from one run to the next here), each round's pair
//! is measured under nearly the same conditions.
//! Target (DESIGN.md): the durable collector at least 0.5 of bare axum. Both sides run in one
//! process with the reference server's allocator (mimalloc).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use leadmaps::clock::{Clock, SystemClock};
use leadmaps::crypto::{Kek, KeyRing, Vault};
use leadmaps::ingest::batcher;
use leadmaps::ingest::{Collector, CollectorConfig};
use leadmaps::store::Store;
use leadmaps::tenancy::{Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId};
use leadmaps_axum::{CollectorState, RateLimit, collector_routes, harden};

/// The reference server's allocator (see `examples/server.rs`), for both sides: with glibc's
/// malloc the two workers contend on its arena locks, because the collector frees a request's
/// events on the batcher's thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn collector_router(store: Arc<dyn Store>) -> (Router, String, Arc<batcher::BatcherStats>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let workspace = WorkspaceId::new();
    let create = gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            workspace,
            Action::WorkspaceCreate,
        )
        .unwrap();
    store
        .create_workspace(&create, "bench", Region::Eu, clock.now())
        .await
        .unwrap();
    let admin = Principal::member(UserId::new(), [(workspace, Role::Admin)]);
    let update = gate
        .authorize(&admin, workspace, Action::WorkspaceUpdate)
        .unwrap();
    let domain = format!("bench-{workspace}.example");
    store.add_site(&update, &domain, clock.now()).await.unwrap();
    let kek: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let ring = KeyRing::new([Kek::new(1, &kek).unwrap()]).unwrap();
    let vault = Arc::new(
        Vault::start(ring, store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let (collector, batcher) =
        Collector::over_store(store, vault, gate, clock, CollectorConfig::default());
    let stats = collector.queue().stats().clone();
    tokio::spawn(batcher.run());
    let collector = Arc::new(collector);
    let unlimited = RateLimit {
        per_second: 1e12,
        burst: 1e12,
    };
    (
        harden(collector_routes(Arc::new(CollectorState::new(
            collector,
            vec![],
            unlimited,
        )))),
        domain,
        stats,
    )
}

fn bare_router() -> Router {
    harden(
        Router::new()
            .route("/api/event", post(|| async { StatusCode::ACCEPTED }))
            .route("/api/v1/events", post(|| async { StatusCode::ACCEPTED })),
    )
}

/// CPU time this process has used (user + system), where `/proc/self/stat` tells it.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces), from field 3 on: utime and stime are
    // fields 14 and 15, in clock ticks of 1/100 s on Linux.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One side's measurement.
struct Rate {
    events_per_second: f64,
    /// CPU of the whole process (load generator and server) per event, in microseconds: less
    /// disturbed than throughput by other work on a shared machine.
    cpu_micros_per_event: Option<f64>,
}

/// Drives `addr` with `connections` keep-alive clients for `seconds`.
async fn drive(
    addr: SocketAddr,
    domain: &str,
    seconds: u64,
    connections: u64,
    per_request: u64,
) -> Rate {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections as usize)
        .build_http();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (path, body) = if per_request == 1 {
        (
            "/api/event",
            format!(
                r#"{{"n":"pageview","u":"https://{domain}/pricing?utm_source=bench","r":"https://duckduckgo.com/"}}"#
            ),
        )
    } else {
        let one = format!(
            r#"{{"n":"pageview","u":"https://{domain}/pricing?utm_source=bench","r":"https://duckduckgo.com/"}}"#
        );
        (
            "/api/v1/events",
            format!("[{}]", vec![one; per_request as usize].join(",")),
        )
    };
    let uri = format!("http://{addr}{path}");
    let started = Instant::now();
    let cpu_before = process_cpu();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, stop, done, failed, body, uri) = (
            client.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
            body.clone(),
            uri.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let agent =
                format!("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.{c}");
            while !stop.load(Ordering::Relaxed) {
                let request = Request::post(&uri)
                    .header("content-type", "application/json")
                    .header("user-agent", &agent)
                    .body(Body::from(body.clone()))
                    .unwrap();
                match client.request(request).await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.into_body().collect().await;
                        done.fetch_add(per_request, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let failures = failed.load(Ordering::Relaxed);
    assert_eq!(failures, 0, "requests failed during the run");
    let events = done.load(Ordering::Relaxed) as f64;
    Rate {
        events_per_second: events / elapsed,
        cpu_micros_per_event: cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / events.max(1.0)),
    }
}

fn cpu_text(rate: &Rate) -> String {
    rate.cpu_micros_per_event
        .map(|us| format!("{us:>5.0} us CPU/event"))
        .unwrap_or_default()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How the sides are driven.
#[derive(Clone, Copy)]
struct Load {
    seconds: u64,
    rounds: u64,
    connections: u64,
    per_request: u64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let load = Load {
            seconds: env("LEADMAPS_BENCH_SECONDS", 3),
            rounds: env("LEADMAPS_BENCH_ROUNDS", 3).max(1),
            connections: env("LEADMAPS_BENCH_CONNECTIONS", 64),
            per_request: env("LEADMAPS_BENCH_EVENTS_PER_REQUEST", 1),
        };
        println!(
            "ingest over loopback HTTP: {} connections, {} event(s) per request, {} rounds of {} s per side",
            load.connections, load.per_request, load.rounds, load.seconds
        );

        let bare = serve(bare_router()).await;
        drive(bare, "warmup.example", 1, load.connections, load.per_request).await;

        let stores = std::env::var("LEADMAPS_BENCH_STORES").unwrap_or_else(|_| "memory,sqlite".into());
        let stores: Vec<&str> = stores.split(',').map(str::trim).collect();

        if stores.contains(&"memory") {
            // The collector with an in-memory sink: its own cost, without any storage.
            let memory: Arc<dyn Store> = Arc::new(leadmaps::memory::MemoryStore::new());
            report("memory (no storage)", memory, bare, load).await;
        }

        let dir = tempfile::tempdir().unwrap();
        if stores.contains(&"sqlite") {
            let sqlite: Arc<dyn Store> = Arc::new(leadmaps_store_sqlite::SqliteStore::open(dir.path().join("bench.db")).unwrap());
            report("sqlite (durable ack)", sqlite, bare, load).await;
        }

        if let Ok(url) = std::env::var("LEADMAPS_BENCH_POSTGRES_URL") {
            let config = leadmaps_store_postgres::PostgresConfig::from_url(&url).unwrap();
            let postgres: Arc<dyn Store> = Arc::new(leadmaps_store_postgres::PostgresStore::connect(&config).await.unwrap());
            report("postgres (durable ack)", postgres, bare, load).await;
        }
    });
}

/// Alternates bare axum and the collector over `store` for `load.rounds` rounds and prints
/// each round and the medians.
async fn report(label: &str, store: Arc<dyn Store>, bare: SocketAddr, load: Load) {
    let (router, domain, stats) = collector_router(store).await;
    let addr = serve(router).await;
    drive(addr, &domain, 1, load.connections, load.per_request).await;
    let load_stats = |stats: &batcher::BatcherStats| {
        (
            stats.commits.load(Ordering::Relaxed),
            stats.committed_items.load(Ordering::Relaxed),
            stats.commit_micros.load(Ordering::Relaxed),
        )
    };
    let before = load_stats(&stats);
    let (mut bare_rates, mut rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    println!("  {label}");
    for round in 1..=load.rounds {
        let b = drive(
            bare,
            "bare.example",
            load.seconds,
            load.connections,
            load.per_request,
        )
        .await;
        let c = drive(
            addr,
            &domain,
            load.seconds,
            load.connections,
            load.per_request,
        )
        .await;
        let ratio = c.events_per_second / b.events_per_second;
        println!(
            "    round {round}: bare axum {:>7.0} events/s {}   collector {:>7.0} events/s {}   ratio {ratio:.2}",
            b.events_per_second,
            cpu_text(&b),
            c.events_per_second,
            cpu_text(&c),
        );
        bare_rates.push(b.events_per_second);
        rates.push(c.events_per_second);
        ratios.push(ratio);
    }
    let after = load_stats(&stats);
    let commits = (after.0 - before.0).max(1);
    let ratio = median(&mut ratios);
    let (low, high) = (ratios[0], ratios[ratios.len() - 1]);
    println!(
        "  {label:<22} median {:>7.0} events/s against bare {:>7.0}: ratio to bare = {ratio:.2} (rounds {low:.2}-{high:.2}; target 0.50: {})   {:.1} events per commit, {:.0} us per commit",
        median(&mut rates),
        median(&mut bare_rates),
        if ratio >= 0.5 { "met" } else { "MISSED" },
        (after.1 - before.1) as f64 / commits as f64,
        (after.2 - before.2) as f64 / commits as f64,
    );
}
