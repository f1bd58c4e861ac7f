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
