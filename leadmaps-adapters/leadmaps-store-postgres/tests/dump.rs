//! A full `pg_dump` of a database that stored a secret through the vault and an event through the
//! collector holds neither the secret's plaintext nor the client's IP address or user agent.

mod common;

use std::process::Command;
use std::sync::Arc;

use leadmaps_core::clock::Clock;
use leadmaps_core::crypto::{Kek, KeyRing, Purpose, Vault};
use leadmaps_core::ingest::batcher::{self, BatcherConfig};
use leadmaps_core::ingest::bot::BotFilter;
use leadmaps_core::ingest::event::parse;
use leadmaps_core::ingest::privacy::Salts;
use leadmaps_core::ingest::{ClientInfo, Collector, CollectorConfig, EventId, Outcome};
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::Action;
use leadmaps_store_postgres::PostgresStore;
use time::Duration;
use time::macros::datetime;

use common::Tenants;

const IP: &str = "203.0.113.187";
const AGENT_TOKEN: &str = "LeadmapsDumpCanaryAgent/7.3";
const SECRET: &str = "leadmaps-dump-canary-plaintext-5f1c9e";
const DOMAIN: &str = "dump-canary.example";

/// The pg_dump binary: `LEADMAPS_PG_DUMP`, else `pg_dump` on the PATH.
fn pg_dump() -> String {
    std::env::var("LEADMAPS_PG_DUMP").unwrap_or_else(|_| "pg_dump".to_owned())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_holds_no_secret_plaintext_ip_or_user_agent() {
    let server = server_or_skip!();
    if Command::new(pg_dump()).arg("--version").output().is_err() {
        assert!(
            std::env::var("LEADMAPS_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "LEADMAPS_REQUIRE_POSTGRES=1 but pg_dump (or LEADMAPS_PG_DUMP) cannot be run"
        );
        eprintln!("SKIPPED: pg_dump cannot be run; set LEADMAPS_PG_DUMP to its path");
        return;
    }
    server
        .with_db(|db| async move {
            let store: Arc<dyn Store> =
                Arc::new(PostgresStore::connect(&db.store_config()).await.unwrap());
            let t = Tenants::new(datetime!(2026-03-14 15:09 UTC));
            let clock: Arc<dyn Clock> = t.clock.clone();
            let ws = t.workspace(store.as_ref()).await;
            store
                .add_site(&t.admin(ws, Action::WorkspaceUpdate), DOMAIN, clock.now())
                .await
                .unwrap();

            let kek: Vec<u8> = (0..32u8)
                .map(|i| i.wrapping_mul(29).wrapping_add(3))
                .collect();
            let ring = KeyRing::new([Kek::new(1, &kek).unwrap()]).unwrap();
            let vault = Arc::new(
                Vault::start(ring, store.clone(), clock.clone())
                    .await
                    .unwrap(),
            );
            let write = t.admin(ws, Action::SecretWrite);
            vault
                .put_secret(
                    store.as_ref(),
                    &write,
                    "license",
                    Purpose::LicenseKey,
                    SECRET.as_bytes(),
                )
                .await
                .unwrap();
            assert_eq!(
                vault
                    .secret(store.as_ref(), &write, "license")
                    .await
                    .unwrap()
                    .expose(),
                SECRET.as_bytes(),
                "the secret is stored"
            );

            let salts = Arc::new(Salts::new(vault, store.clone(), clock.clone()));
            let (queue, batcher) = batcher::channel(store.clone(), BatcherConfig::default());
            let batcher = tokio::spawn(batcher.run());
            let collector = Collector::new(
                CollectorConfig::default(),
                store.clone(),
                salts,
                t.gate.clone(),
                BotFilter::new(),
                queue,
                clock.clone(),
            );
            let agent =
                format!("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 {AGENT_TOKEN}");
            let client = ClientInfo {
                ip: IP.parse().unwrap(),
                user_agent: &agent,
            };
            let id = uuid::Uuid::new_v4();
            let body = serde_json::json!({
                "n": "pageview",
                "u": format!("https://{DOMAIN}/pricing?utm_source=canary"),
                "r": "https://duckduckgo.com/",
                "id": id,
            });
            let outcome = collector
                .collect(vec![parse(&body, true)], client)
                .await
                .unwrap();
            assert_eq!(outcome, [Outcome::Accepted(EventId(id))]);
            drop(collector);
            batcher.await.unwrap();
            let stored = store
                .events(
                    &t.admin(ws, Action::EventRead),
                    clock.now() - Duration::hours(1),
                    clock.now() + Duration::hours(1),
                    10,
                )
                .await
                .unwrap();
            assert_eq!(stored.len(), 1, "the event is stored");

            let config = db.superuser_config();
            let host = match &config.get_hosts()[0] {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let user = config.get_user().unwrap_or("postgres").to_owned();
            let dbname = db.name.clone();
            let dump = tokio::task::spawn_blocking(move || {
                Command::new(pg_dump())
                    .args([
                        "--no-password",
                        "--host",
                        &host,
                        "--port",
                        &port.to_string(),
                    ])
                    .args(["--username", &user, "--dbname", &dbname])
                    .env("PGCONNECT_TIMEOUT", "10")
                    .output()
                    .expect("pg_dump runs")
            })
            .await
            .unwrap();
            assert!(
                dump.status.success(),
                "pg_dump failed: {}",
                String::from_utf8_lossy(&dump.stderr)
            );
            let bytes = dump.stdout;
            // The dump has the data: the event and the site, the sealed secret's row.
            assert!(
                contains(&bytes, "COPY leadmaps.events_y"),
                "event partitions dumped"
            );
            assert!(
                contains(&bytes, "/pricing?utm_source=canary"),
                "the event is in the dump"
            );
            assert!(contains(&bytes, DOMAIN));
            assert!(contains(&bytes, "COPY leadmaps.secrets"));
            assert!(
                contains(&bytes, "license"),
                "the secret's row is in the dump"
            );
            for (what, needle) in [
                ("secret plaintext", SECRET),
                ("client IP", IP),
                ("user agent", agent.as_str()),
                ("user agent token", AGENT_TOKEN),
            ] {
                assert!(!contains(&bytes, needle), "the dump holds the {what}");
            }
        })
        .await;
}
