//! Durable acknowledgement under SIGKILL: a client sends events while the server process is
//! killed and restarted; every event that got `accepted` is in the store, and none is stored twice
//! after the client retries the rest.
//!
//! The server is this test binary re-run as a child (`LEADMAPS_CRASH_CHILD`), serving the real
//! collector on a SQLite file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use leadmaps::clock::{Clock, SystemClock};
use leadmaps::crypto::{Kek, KeyRing, Vault};
use leadmaps::ingest::{Collector, CollectorConfig, EventId};
use leadmaps::store::{EventSink, Store};
use leadmaps::tenancy::{Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId};
use leadmaps_axum::{CollectorState, RateLimit, collector_routes};
use leadmaps_store_sqlite::SqliteStore;
use serde_json::{Value, json};

const CHILD_ENV: &str = "LEADMAPS_CRASH_CHILD";
const WORKSPACE: u128 = 0x1ead_0000_0000_4000_8000_0000_0000_0001;
const DOMAIN: &str = "crash.example";

fn workspace() -> WorkspaceId {
    WorkspaceId::from_uuid(uuid::Uuid::from_u128(WORKSPACE))
}

fn ring() -> KeyRing {
    let kek: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(41).wrapping_add(3))
        .collect();
    KeyRing::new([Kek::new(1, &kek).unwrap()]).unwrap()
}

fn admin() -> Principal {
    Principal::member(UserId::new(), [(workspace(), Role::Admin)])
}

/// The child: serve the collector on `dir/leadmaps.db`, write the port to `dir/port`.
async fn child(dir: PathBuf) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("leadmaps.db")).unwrap());
    let create = gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            workspace(),
            Action::WorkspaceCreate,
        )
        .unwrap();
    if store
        .create_workspace(&create, "crash", Region::Eu, clock.now())
        .await
        .is_ok()
    {
        let update = gate
            .authorize(&admin(), workspace(), Action::WorkspaceUpdate)
            .unwrap();
        store.add_site(&update, DOMAIN, clock.now()).await.unwrap();
    }
    let vault = Arc::new(
        Vault::start(ring(), store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let (collector, batcher) =
        Collector::over_store(store, vault, gate, clock, CollectorConfig::default());
    tokio::spawn(batcher.run());
    let collector = Arc::new(collector);
    let state = Arc::new(CollectorState::new(
        collector,
        vec![],
        RateLimit {
            per_second: 1e9,
            burst: 1e9,
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(dir.join("port.tmp"), port.to_string()).unwrap();
    std::fs::rename(dir.join("port.tmp"), dir.join("port")).unwrap();
    axum::serve(
        listener,
        collector_routes(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .unwrap();
}

// The caller kills and waits for the child; a failed start panics the test, which ends it too.
#[allow(clippy::zombie_processes)]
fn spawn_child(dir: &Path) -> (Child, SocketAddr) {
    let _ = std::fs::remove_file(dir.join("port"));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_loses_no_acknowledged_event",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir)
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(port) = std::fs::read_to_string(dir.join("port")) {
            return (child, format!("127.0.0.1:{}", port.trim()).parse().unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "child server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Results = BTreeMap<uuid::Uuid, &'static str>;

/// Sends `ids` in batches of five from `senders` concurrent clients until done or the server
/// dies; returns what each acknowledged event got.
async fn send_all(
    addr: SocketAddr,
    ids: &[uuid::Uuid],
    senders: usize,
    results: Arc<std::sync::Mutex<Results>>,
) -> Results {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let chunks: Vec<Vec<uuid::Uuid>> = ids.chunks(5).map(<[_]>::to_vec).collect();
    let queue = Arc::new(std::sync::Mutex::new(chunks));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, queue, results) = (client.clone(), queue.clone(), results.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(chunk) = queue.lock().unwrap().pop() else {
                    return;
                };
                let events: Vec<Value> = chunk
                    .iter()
                    .map(
                        |id| json!({"n": "pageview", "u": format!("https://{DOMAIN}/p"), "id": id}),
                    )
                    .collect();
                let request = Request::post(format!("http://{addr}/api/v1/events"))
                    .header("content-type", "application/json")
                    .header(
                        "user-agent",
                        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                    )
                    .body(Body::from(Value::Array(events).to_string()))
                    .unwrap();
                let Ok(response) = client.request(request).await else {
                    return;
                };
                if !response.status().is_success() {
                    return;
                }
                let Ok(body) = response.into_body().collect().await else {
                    return;
                };
                let body: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
                let mut results = results.lock().unwrap();
                for (id, result) in chunk.iter().zip(body["results"].as_array().unwrap()) {
                    let verdict = match result["result"].as_str().unwrap() {
                        "accepted" => "accepted",
                        "duplicate" => "duplicate",
                        other => panic!("unexpected result {other}"),
                    };
                    results.insert(*id, verdict);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    results.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(PathBuf::from(dir)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<uuid::Uuid> = (0..4000).map(|_| uuid::Uuid::new_v4()).collect();

    let (mut first, addr) = spawn_child(dir.path());
    let progress = Arc::new(std::sync::Mutex::new(Results::new()));
    let sender = tokio::spawn({
        let (ids, progress) = (ids.clone(), progress.clone());
        async move { send_all(addr, &ids, 16, progress).await }
    });
    // Kill once about a quarter has been acknowledged, with requests in flight.
    let started = Instant::now();
    while progress.lock().unwrap().len() < ids.len() / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the server made no progress"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // SIGKILL: no shutdown, no flush, nothing graceful.
    first.kill().unwrap();
    first.wait().unwrap();
    let before = sender.await.unwrap();
    let acknowledged: BTreeSet<_> = before
        .iter()
        .filter(|(_, v)| **v == "accepted")
        .map(|(id, _)| *id)
        .collect();
    assert!(
        !acknowledged.is_empty(),
        "some events were acknowledged before the kill"
    );
    assert!(
        acknowledged.len() < ids.len(),
        "the kill happened mid-stream"
    );

    // Restart on the same file; the client retries everything (acknowledged ones too).
    let (mut second, addr) = spawn_child(dir.path());
    let after = send_all(addr, &ids, 8, Arc::default()).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(
        after.len(),
        ids.len(),
        "every event got an answer after the restart"
    );
    for id in &acknowledged {
        assert_eq!(
            after[id], "duplicate",
            "an acknowledged event survived the kill and was not stored again"
        );
    }

    let store = SqliteStore::open(dir.path().join("leadmaps.db")).unwrap();
    let clock = SystemClock;
    let gate = Gate::new(Arc::new(SystemClock));
    let read = gate
        .authorize(&admin(), workspace(), Action::EventRead)
        .unwrap();
    let stored = store
        .events(
            &read,
            clock.now() - time::Duration::hours(1),
            clock.now() + time::Duration::hours(1),
            100_000,
        )
        .await
        .unwrap();
    let unique: BTreeSet<EventId> = stored.iter().map(|e| e.id).collect();
    assert_eq!(stored.len(), unique.len(), "no event stored twice");
    assert_eq!(unique.len(), ids.len(), "every event stored exactly once");
    for id in &acknowledged {
        assert!(store.has_event(&read, EventId(*id)).await.unwrap());
    }
    println!(
        "crash test: {} acknowledged before SIGKILL, {} events stored once each",
        acknowledged.len(),
        unique.len()
    );
}
