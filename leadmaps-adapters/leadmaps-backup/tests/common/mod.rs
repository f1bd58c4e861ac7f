//! Test plumbing: data in a store, every row of a database as text, fresh Postgres databases
//! and a moto S3 server on loopback (each skipped loudly, or failed when required).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leadmaps_core::auth::users::User;
use leadmaps_core::clock::{Clock, ManualClock};
use leadmaps_core::crypto::{Kek, KeyRing, Purpose, Vault};
use leadmaps_core::ingest::{Event, EventBatch, EventId, Revenue, VisitorId};
use leadmaps_core::policy::PolicyChange;
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId,
};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio_postgres::NoTls;

pub const START: OffsetDateTime = datetime!(2026-03-14 15:09:26 UTC);

/// A ring of one KEK with id `id`, its bytes picked by `seed`.
pub fn ring(keks: &[(u32, u8)]) -> KeyRing {
    KeyRing::new(keks.iter().map(|(id, seed)| {
        let key: Vec<u8> = (0..32u8)
            .map(|i| i.wrapping_mul(29).wrapping_add(*seed))
            .collect();
        Kek::new(*id, &key).unwrap()
    }))
    .unwrap()
}

/// Writes rows into most tables through the store's own API: key checks, workspaces, sites,
/// tenant keys, secrets, audit records (a policy change), users, memberships, events in two
/// months (two event partitions on Postgres) and their ids.
pub async fn populate(store: Arc<dyn Store>, ring: KeyRing) {
    let clock = Arc::new(ManualClock::new(START));
    let gate = Gate::new(clock.clone());
    let vault = Vault::start(ring, store.clone(), clock.clone())
        .await
        .unwrap();
    for n in 0..2u8 {
        let ws = WorkspaceId::new();
        let provisioning = Principal::System(SystemTask::Provisioning);
        let create = gate
            .authorize(&provisioning, ws, Action::WorkspaceCreate)
            .unwrap();
        store
            .create_workspace(&create, &format!("Workspace {n}"), Region::Eu, clock.now())
            .await
            .unwrap();
        let update = gate
            .authorize(&provisioning, ws, Action::WorkspaceUpdate)
            .unwrap();
        store
            .add_site(&update, &format!("site{n}.example"), clock.now())
            .await
            .unwrap();
        let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
        let write = gate.authorize(&admin, ws, Action::SecretWrite).unwrap();
        vault
            .put_secret(
                store.as_ref(),
                &write,
                "license",
                Purpose::LicenseKey,
                b"license-plaintext",
            )
            .await
            .unwrap();
        let settings = gate.authorize(&admin, ws, Action::WorkspaceUpdate).unwrap();
        store
            .set_workspace_policy(
                &settings,
                &PolicyChange::RetentionDays(Some(30 + u32::from(n))),
                clock.now(),
            )
            .await
            .unwrap();
        let user = User {
            id: UserId::new(),
            email: leadmaps_core::mail::Address::parse(&format!("admin{n}@example.com")).unwrap(),
            created_at: clock.now(),
        };
        store.create_user(&user).await.unwrap();
        let manage = gate
            .authorize(&provisioning, ws, Action::MemberManage)
            .unwrap();
        store
            .set_membership(&manage, user.id, Role::Admin, clock.now())
            .await
            .unwrap();
        let ingest = gate
            .authorize(
                &Principal::Collector { workspace: ws },
                ws,
                Action::EventIngest,
            )
            .unwrap();
        let mut batch = EventBatch::new(Region::Eu);
        for i in 0..300u128 {
            // Two months: February and March.
            let at = START - time::Duration::days(if i % 2 == 0 { 30 } else { 0 })
                + time::Duration::seconds(i as i64);
            batch
                .push(
                    Region::Eu,
                    ingest.clone(),
                    event(ws, u128::from(n) << 64 | i, at),
                )
                .unwrap();
        }
        store.append_events(&batch).await.unwrap();
    }
}

fn event(ws: WorkspaceId, n: u128, at: OffsetDateTime) -> Event {
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

/// Every table of a SQLite file, each row as text, sorted; plus the schema version.
pub fn dump_sqlite(path: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut out = BTreeMap::new();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    out.insert("#user_version".to_owned(), vec![version.to_string()]);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows: Vec<String> = statement
            .query_map([], |row| {
                Ok((0..columns)
                    .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// Rows in all tables of a dump.
pub fn row_count(dump: &BTreeMap<String, Vec<String>>) -> usize {
    dump.iter()
        .filter(|(t, _)| !t.starts_with('#'))
        .map(|(_, rows)| rows.len())
        .sum()
}

/// A Postgres server, or `None` after printing why the test is skipped.
pub async fn postgres() -> Option<tokio_postgres::Config> {
    let url = std::env::var("LEADMAPS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let required = std::env::var("LEADMAPS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let mut config =
        tokio_postgres::Config::from_str(&url).expect("LEADMAPS_TEST_POSTGRES_URL parses");
    config.connect_timeout(Duration::from_secs(5));
    match config.connect(NoTls).await {
        Ok(_) => Some(config),
        Err(error) if required => {
            panic!("LEADMAPS_REQUIRE_POSTGRES=1 but no Postgres answers: {error}")
        }
        Err(_) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: no Postgres answers at LEADMAPS_TEST_POSTGRES_URL; the Postgres backups were NOT tested. \
                 Set LEADMAPS_REQUIRE_POSTGRES=1 to fail instead."
            );
            None
        }
    }
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A throwaway database, dropped by [`FreshDb::drop_db`].
#[derive(Clone)]
pub struct FreshDb {
    admin: tokio_postgres::Config,
    pub name: String,
}

impl FreshDb {
    pub async fn new(admin: &tokio_postgres::Config) -> Self {
        let name = format!("leadmaps_test_{}", uuid::Uuid::new_v4().simple());
        connect(admin)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        Self {
            admin: admin.clone(),
            name,
        }
    }

    /// The owner (superuser) connection to this database.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        config
    }

    pub async fn drop_db(self) {
        connect(&self.admin)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }

    /// Every table of the `leadmaps` schema but the migration history, each row as its text
    /// form, sorted; plus the applied migration versions and the event partitions.
    pub async fn dump(&self) -> BTreeMap<String, Vec<String>> {
        let client = connect(&self.config()).await;
        let mut out = BTreeMap::new();
        let has_schema: bool = client
            .query_one(
                "SELECT to_regclass('leadmaps.schema_migrations') IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if !has_schema {
            return out;
        }
        let versions: Vec<String> = client
            .query(
                "SELECT version::text FROM leadmaps.schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        out.insert("#migrations".to_owned(), versions);
        let partitions: Vec<String> = client
            .query(
                "SELECT c.relname::text FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'leadmaps.events'::regclass ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        out.insert("#partitions".to_owned(), partitions);
        let tables: Vec<String> = client
            .query(
                "SELECT c.relname::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'leadmaps' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
                 AND c.relname <> 'schema_migrations'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for table in tables {
            let rows: Vec<String> = client
                .query(
                    &format!("SELECT t::text FROM leadmaps.\"{table}\" AS t ORDER BY 1"),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            out.insert(table, rows);
        }
        out
    }
}

/// A moto S3 server on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto from `LEADMAPS_MOTO_PYTHON` with `bucket` created, or `None` after printing why
/// the test is skipped. With `LEADMAPS_REQUIRE_MOTO=1` a missing or broken moto fails instead.
pub fn moto(bucket: &str) -> Option<Moto> {
    let required = std::env::var("LEADMAPS_REQUIRE_MOTO").is_ok_and(|v| v == "1");
    let Some(python) = std::env::var_os("LEADMAPS_MOTO_PYTHON") else {
        assert!(
            !required,
            "LEADMAPS_REQUIRE_MOTO=1 but LEADMAPS_MOTO_PYTHON is not set"
        );
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED: LEADMAPS_MOTO_PYTHON is not set; backups to S3 were NOT tested. \
             Point it at a python with moto[server] (see tests/moto/requirements.txt); \
             set LEADMAPS_REQUIRE_MOTO=1 to fail instead."
        );
        return None;
    };
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("LEADMAPS_MOTO_PYTHON cannot be run: {e}"));
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = create_bucket(port, bucket) {
            assert_eq!(status, 200, "moto refused to create the bucket");
            return Some(moto);
        }
        assert!(
            Instant::now() < deadline,
            "moto did not answer on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `PUT /bucket` in the EU region; moto does not check signatures.
fn create_bucket(port: u16, bucket: &str) -> std::io::Result<u16> {
    let body = "<CreateBucketConfiguration><LocationConstraint>eu-central-1</LocationConstraint></CreateBucketConfiguration>";
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))
}
