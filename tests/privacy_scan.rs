//! After ingest through the whole stack (HTTP, collector, SQLite), neither the IP addresses nor
//! the user agents that were sent appear in the database files or in any log line, at any level.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt as _;
use leadmaps::clock::{Clock, SystemClock};
use leadmaps::crypto::{Kek, KeyRing, Vault};
use leadmaps::ingest::{Collector, CollectorConfig};
use leadmaps::store::Store;
use leadmaps::tenancy::{Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId};
use leadmaps_axum::{CollectorState, RateLimit, collector_routes, harden};
use leadmaps_store_sqlite::SqliteStore;
use serde_json::json;
use tower::ServiceExt as _;

const IPS: [&str; 3] = [
    "203.0.113.201",
    "2001:db8:1234:5678::beef",
    "198.51.100.202",
];
const AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) PrivacyScanAgent/7.3.1 Firefox/128.0";
const BOT_AGENT: &str = "PrivacyScanBot/2.0 (+https://bot.example)";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_ip_or_user_agent_in_database_files_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("leadmaps.db")).unwrap());
    let workspace = WorkspaceId::new();
    let create = gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            workspace,
            Action::WorkspaceCreate,
        )
        .unwrap();
    store
        .create_workspace(&create, "scan", Region::Eu, clock.now())
        .await
        .unwrap();
    let admin = Principal::member(UserId::new(), [(workspace, Role::Admin)]);
    store
        .add_site(
            &gate
                .authorize(&admin, workspace, Action::WorkspaceUpdate)
                .unwrap(),
            "scan.example",
            clock.now(),
        )
        .await
        .unwrap();
    let kek: Vec<u8> = (0..32u8).map(|i| i ^ 0x5c).collect();
    let vault = Arc::new(
        Vault::start(
            KeyRing::new([Kek::new(1, &kek).unwrap()]).unwrap(),
            store.clone(),
            clock.clone(),
        )
        .await
        .unwrap(),
    );
    let (collector, batcher) = Collector::over_store(
        store.clone(),
        vault,
        gate,
        clock,
        CollectorConfig::default(),
    );
    let batcher = tokio::spawn(batcher.run());
    let collector = Arc::new(collector);
    let state = Arc::new(CollectorState::new(
        collector,
        vec!["10.0.0.0/8".parse().unwrap()],
        RateLimit::default(),
    ));
    let router = harden(collector_routes(state));

    let mut accepted = 0;
    for (i, ip) in IPS.iter().enumerate() {
        for agent in [AGENT, BOT_AGENT] {
            let body = json!([{"n": "pageview", "u": format!("https://scan.example/p{i}"), "r": "https://duckduckgo.com/"}]);
            let mut request = Request::post("/api/v1/events")
                .header("content-type", "application/json")
                .header("user-agent", agent)
                .header("x-forwarded-for", *ip)
                .body(Body::from(body.to_string()))
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo("10.0.0.1:4000".parse::<SocketAddr>().unwrap()));
            let response = router.clone().oneshot(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if answer["results"][0]["result"] == "accepted" {
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, IPS.len(), "people accepted, bots rejected");
    drop(router);
    batcher.await.unwrap();

    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    assert!(files.iter().any(|(name, _)| name.ends_with("leadmaps.db")));
    let logs = logs.0.lock().unwrap().clone();
    let mut needles: Vec<&str> = IPS.to_vec();
    needles.extend(["PrivacyScanAgent", "PrivacyScanBot"]);
    for needle in needles {
        for (name, bytes) in &files {
            assert!(!contains(bytes, needle), "{needle} found in {name}");
        }
        assert!(!contains(&logs, needle), "{needle} found in the logs");
    }
}
