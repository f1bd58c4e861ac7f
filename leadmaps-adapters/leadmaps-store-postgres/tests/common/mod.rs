//! Shared test plumbing: find the server (or skip loudly), and give each test its own database.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use leadmaps_store_postgres::PostgresConfig;
use tokio_postgres::{Client, Config, NoTls};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A reachable server and a superuser connection configuration for it.
#[derive(Clone)]
pub struct Server {
    admin: Config,
}

/// The test server, or `None` after printing why the test is skipped. With
/// `LEADMAPS_REQUIRE_POSTGRES=1` an unreachable server fails the test instead.
pub async fn server() -> Option<Server> {
    let url =
        std::env::var("LEADMAPS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let required = std::env::var("LEADMAPS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let mut admin = Config::from_str(&url).expect("LEADMAPS_TEST_POSTGRES_URL does not parse");
    admin.connect_timeout(Duration::from_secs(5));
    match admin.connect(NoTls).await {
        Ok((client, connection)) => {
            let driver = tokio::spawn(connection);
            drop(client);
            let _ = driver.await;
            Some(Server { admin })
        }
        Err(error) if required => {
            panic!(
                "LEADMAPS_REQUIRE_POSTGRES=1 but no Postgres answers at LEADMAPS_TEST_POSTGRES_URL or the default: {error}"
            )
        }
        Err(_) => {
            // Written to the stderr handle itself: the test harness captures eprintln! output of
            // passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: no Postgres answers at LEADMAPS_TEST_POSTGRES_URL (default {DEFAULT_URL}); \
                 the Postgres store was NOT tested. Set LEADMAPS_REQUIRE_POSTGRES=1 to fail instead."
            );
            None
        }
    }
}

/// Skips the test (returns) when there is no server.
#[macro_export]
macro_rules! server_or_skip {
    () => {
        match common::server().await {
            Some(server) => server,
            None => return,
        }
    };
}

pub async fn connect(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// One throwaway database.
#[derive(Clone)]
pub struct Db {
    pub name: String,
    server: Server,
}

impl Server {
    pub async fn admin(&self) -> Client {
        connect(&self.admin).await
    }

    /// Creates an empty database with a random name.
    pub async fn fresh_db(&self) -> Db {
        let name = format!("leadmaps_test_{}", uuid::Uuid::new_v4().simple());
        self.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        Db {
            name,
            server: self.clone(),
        }
    }

    /// Runs `body` with a fresh database and drops the database afterwards, also when `body`
    /// panics (the panic is passed on).
    pub async fn with_db<F, Fut>(&self, body: F)
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let db = self.fresh_db().await;
        let outcome = tokio::spawn(body(db.clone())).await;
        db.drop_db().await;
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

impl Db {
    /// Superuser connection configuration for this database.
    pub fn superuser_config(&self) -> Config {
        let mut config = self.server.admin.clone();
        config.dbname(&self.name);
        config
    }

    /// The store configuration: the superuser is the owner connection.
    pub fn store_config(&self) -> PostgresConfig {
        PostgresConfig::new(self.superuser_config())
    }

    pub async fn superuser(&self) -> Client {
        connect(&self.superuser_config()).await
    }

    /// A raw connection as `role`, without a password (the test server trusts local connections).
    pub async fn connect_as(&self, role: &str) -> Client {
        let mut config = Config::new();
        let base = self.superuser_config();
        for host in base.get_hosts() {
            match host {
                tokio_postgres::config::Host::Tcp(name) => config.host(name.as_str()),
                tokio_postgres::config::Host::Unix(path) => config.host_path(path),
            };
        }
        for port in base.get_ports() {
            config.port(*port);
        }
        config.dbname(&self.name).user(role);
        connect(&config).await
    }

    pub async fn drop_db(&self) {
        self.server
            .admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop database");
    }
}

/// A gate on a manual clock, and the scopes the tests need.
pub struct Tenants {
    pub gate: leadmaps_core::tenancy::Gate,
    pub clock: std::sync::Arc<leadmaps_core::clock::ManualClock>,
}

impl Tenants {
    pub fn new(now: time::OffsetDateTime) -> Self {
        let clock = std::sync::Arc::new(leadmaps_core::clock::ManualClock::new(now));
        Self {
            gate: leadmaps_core::tenancy::Gate::new(clock.clone()),
            clock,
        }
    }

    /// Creates a workspace in the EU region.
    pub async fn workspace(
        &self,
        store: &dyn leadmaps_core::store::Store,
    ) -> leadmaps_core::tenancy::WorkspaceId {
        use leadmaps_core::clock::Clock;
        use leadmaps_core::tenancy::{Action, Principal, Region, SystemTask, WorkspaceId};
        let ws = WorkspaceId::new();
        let scope = self
            .gate
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::WorkspaceCreate,
            )
            .unwrap();
        store
            .create_workspace(&scope, "test workspace", Region::Eu, self.clock.now())
            .await
            .expect("create workspace");
        ws
    }

    /// A workspace admin's scope for `action`.
    pub fn admin(
        &self,
        ws: leadmaps_core::tenancy::WorkspaceId,
        action: leadmaps_core::tenancy::Action,
    ) -> leadmaps_core::tenancy::Scope {
        use leadmaps_core::tenancy::{Principal, Role, UserId};
        let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
        self.gate.authorize(&admin, ws, action).unwrap()
    }

    pub fn ingest(&self, ws: leadmaps_core::tenancy::WorkspaceId) -> leadmaps_core::tenancy::Scope {
        use leadmaps_core::tenancy::{Action, Principal};
        self.gate
            .authorize(
                &Principal::Collector { workspace: ws },
                ws,
                Action::EventIngest,
            )
            .unwrap()
    }

    pub fn retention(
        &self,
        ws: leadmaps_core::tenancy::WorkspaceId,
    ) -> leadmaps_core::tenancy::Scope {
        use leadmaps_core::tenancy::{Action, Principal, SystemTask};
        self.gate
            .authorize(
                &Principal::System(SystemTask::Retention),
                ws,
                Action::RetentionEnforce,
            )
            .unwrap()
    }

    /// A batch of `events`, each under its workspace's ingest scope.
    pub fn batch(
        &self,
        events: &[leadmaps_core::ingest::Event],
    ) -> leadmaps_core::ingest::EventBatch {
        use leadmaps_core::tenancy::Region;
        let mut batch = leadmaps_core::ingest::EventBatch::new(Region::Eu);
        for event in events {
            batch
                .push(Region::Eu, self.ingest(event.workspace), event.clone())
                .unwrap();
        }
        batch
    }
}

/// An event with every field set; `n` picks the id (and varies a few fields).
pub fn event(
    ws: leadmaps_core::tenancy::WorkspaceId,
    n: u128,
    at: time::OffsetDateTime,
) -> leadmaps_core::ingest::Event {
    use leadmaps_core::ingest::{Event, EventId, Revenue, VisitorId};
    Event {
        id: EventId(uuid::Uuid::from_u128(n)),
        workspace: ws,
        domain: "example.com".into(),
        name: "pageview".into(),
        hostname: "example.com".into(),
        pathname: format!("/p/{n}?utm_source=x"),
        referrer: Some("https://duckduckgo.com/".into()),
        props: [("plan".to_owned(), format!("p{n}"))].into_iter().collect(),
        revenue: n.is_multiple_of(3).then(|| Revenue {
            amount: "19.99".into(),
            currency: "EUR".into(),
        }),
        interactive: n.is_multiple_of(2),
        visitor: VisitorId([n as u8; 16]),
        received_at: at,
    }
}

/// Runs conformance `checks`, each on a fresh database whose store `wrap` turns into the handle
/// the checks take. Each database is dropped when the next check starts, and the last one after
/// the suite, also when a check panics.
pub async fn run_on_fresh_databases<S>(
    server: &Server,
    checks: &'static [(&'static str, leadmaps_core::conformance::Check<S>)],
    wrap: fn(leadmaps_store_postgres::PostgresStore) -> std::sync::Arc<S>,
) where
    S: ?Sized + Send + Sync + 'static,
{
    use std::sync::{Arc, Mutex};
    let made: Arc<Mutex<Vec<Db>>> = Arc::default();
    let suite = {
        let (server, made) = (server.clone(), made.clone());
        tokio::spawn(async move {
            leadmaps_core::conformance::run_checks(checks, || {
                let (server, made) = (server.clone(), made.clone());
                async move {
                    let finished: Vec<_> = made.lock().unwrap().drain(..).collect();
                    for db in finished {
                        db.drop_db().await;
                    }
                    let db = server.fresh_db().await;
                    made.lock().unwrap().push(db.clone());
                    let store = leadmaps_store_postgres::PostgresStore::connect(
                        &db.store_config().with_pool_size(4),
                    )
                    .await
                    .expect("connect");
                    wrap(store)
                }
            })
            .await;
        })
    };
    let outcome = suite.await;
    let left: Vec<_> = made.lock().unwrap().drain(..).collect();
    for db in left {
        db.drop_db().await;
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
