//! `verify` passes on a correctly set-up deployment (Postgres and SQLite), and on Postgres fails,
//! naming the promise, for each of: a table without FORCE RLS, a planted plaintext secret, an
//! edited audit record, a staff account without a second factor, an overdue breach obligation, a
//! missing HSTS header (and an IP address in an event, a workspace of another region). The
//! evidence bundle it writes checks with `sha256sum -c`.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use leadmaps_backup::{BackupKeys, BackupTarget, S3Options};
use leadmaps_core::audit::{AuditJob, CheckpointSigner};
use leadmaps_core::auth::keys::ApiKeys;
use leadmaps_core::auth::staff::StaffMember;
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::auth::totp::{Subject, TotpFactors};
use leadmaps_core::breach::{
    Assessment, DataRole, DataSet, Details, Engine, NewIncident, Risk, RuleBook, Severity,
};
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::crypto::{Kek, KeyRing, Purpose, Vault};
use leadmaps_core::ingest::batcher::{self, BatcherConfig};
use leadmaps_core::ingest::bot::BotFilter;
use leadmaps_core::ingest::event::parse;
use leadmaps_core::ingest::privacy::Salts;
use leadmaps_core::ingest::{ClientInfo, Collector, CollectorConfig, Outcome};
use leadmaps_core::legal::RegisterBook;
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, StaffId, SystemTask, UserId, WorkspaceId,
};
use leadmaps_store_postgres::{PostgresConfig, PostgresStore};
use leadmaps_store_sqlite::SqliteStore;
use leadmaps_verify::{Database, Deployment, Promise, Report, Settings, Status, verify};
use rustls::pki_types::CertificateDer;
use time::Duration;
use tokio_postgres::NoTls;
use url::Url;

const DOMAIN: &str = "verify.example";
const VISITOR_IP: &str = "203.0.113.77";
const VISITOR_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn ring() -> KeyRing {
    let mut key = [0u8; 32];
    leadmaps_core::crypto::random_bytes(&mut key);
    KeyRing::new([Kek::new(1, &key).unwrap()]).unwrap()
}

/// An HTTPS server on loopback for `localhost` (TLS 1.3 only, the server's own config), with
/// the hardening layer or without it. Returns its base URL and certificate.
async fn https(hardened: bool) -> (Url, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let config = leadmaps_axum::tls::tls13_config(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = leadmaps_axum::tls::TlsListener::new(tcp, config).unwrap();
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/.well-known/security.txt",
            get(|| async { "Contact: mailto:security@verify.example\n" }),
        );
    if hardened {
        router = leadmaps_axum::harden(router);
    }
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (
        Url::parse(&format!("https://localhost:{port}")).unwrap(),
        cert.cert.der().clone(),
    )
}

/// A deployment as an operator sets it up: a workspace with a site, a sealed secret, an API
/// key, an event ingested from a real browser's IP and user agent, a staff member with a
/// factor, an open incident whose clocks run, checkpoints, and a fresh backup.
struct Setup {
    store: Arc<dyn Store>,
    ring: KeyRing,
    clock: Arc<dyn Clock>,
    gate: Gate,
    workspace: WorkspaceId,
    deployment: Deployment,
}

async fn set_up(database: Database, store: Arc<dyn Store>, backups: &Path) -> Setup {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let ring = ring();
    let vault = Arc::new(
        Vault::start(ring.clone(), store.clone(), clock.clone())
            .await
            .unwrap(),
    );

    let workspace = WorkspaceId::new();
    let provisioning = Principal::System(SystemTask::Provisioning);
    let create = gate
        .authorize(&provisioning, workspace, Action::WorkspaceCreate)
        .unwrap();
    store
        .create_workspace(&create, "Verified", Region::Eu, clock.now())
        .await
        .unwrap();
    let update = gate
        .authorize(&provisioning, workspace, Action::WorkspaceUpdate)
        .unwrap();
    store.add_site(&update, DOMAIN, clock.now()).await.unwrap();
    let admin = Principal::member(UserId::new(), [(workspace, Role::Admin)]);
    let write = gate
        .authorize(&admin, workspace, Action::SecretWrite)
        .unwrap();
    vault
        .put_secret(
            store.as_ref(),
            &write,
            "license",
            Purpose::LicenseKey,
            b"LIC-0000-VERIFY-PLAINTEXT",
        )
        .await
        .unwrap();
    let keys = ApiKeys::new(
        store.clone(),
        vault.clone(),
        TokenHasher::new(vault.ring()),
        clock.clone(),
    );
    keys.create(
        &gate
            .authorize(&provisioning, workspace, Action::MemberManage)
            .unwrap(),
        "ci",
        &[Action::EventRead],
    )
    .await
    .unwrap();

    let salts = Arc::new(Salts::new(vault.clone(), store.clone(), clock.clone()));
    let (queue, batcher) = batcher::channel(store.clone(), BatcherConfig::default());
    let collector = Collector::new(
        CollectorConfig::default(),
        store.clone(),
        salts,
        gate.clone(),
        BotFilter::new(),
        queue,
        clock.clone(),
    );
    let client = ClientInfo {
        ip: VISITOR_IP.parse().unwrap(),
        user_agent: VISITOR_AGENT,
    };
    let body = serde_json::json!({"n": "pageview", "u": format!("https://{DOMAIN}/pricing?utm_source=nl&email=ana@example.org")});
    let send = async {
        let outcome = collector
            .collect(vec![parse(&body, true)], client)
            .await
            .unwrap();
        assert!(matches!(outcome[..], [Outcome::Accepted(_)]), "{outcome:?}");
        drop(collector);
    };
    tokio::join!(batcher.run(), send);

    let staff = StaffMember {
        id: StaffId::new(),
        email: leadmaps_core::mail::Address::parse("ops@verify.example").unwrap(),
        created_at: clock.now(),
    };
    store.create_staff(&staff).await.unwrap();
    TotpFactors::new(
        store.clone(),
        vault.clone(),
        gate.clone(),
        clock.clone(),
        "leadmaps staff",
    )
    .enroll(Subject::Staff(staff.id), "ops@verify.example")
    .await
    .unwrap();

    open_incident(&store, &clock, workspace, Duration::hours(1)).await;
    AuditJob::new(store.clone(), CheckpointSigner::new(&ring), gate.clone())
        .checkpoint_all()
        .await
        .unwrap();
    let target = BackupTarget::from_url(
        &format!("file://{}", backups.display()),
        &S3Options::default(),
    )
    .unwrap();
    leadmaps_backup::create(
        &database,
        &target,
        &BackupKeys::new(&ring),
        clock.as_ref(),
        &(),
    )
    .await
    .unwrap();

    let (url, cert) = https(true).await;
    let deployment = Deployment::new(
        database,
        store.clone(),
        ring.clone(),
        Region::Eu,
        clock.clone(),
    )
    .with_public_url(url)
    .with_trusted_certificates(vec![cert])
    .with_backups(target);
    Setup {
        store,
        ring,
        clock,
        gate,
        workspace,
        deployment,
    }
}

/// An S1 personal-data incident affecting `workspace`, of which leadmaps became aware `ago`.
async fn open_incident(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    workspace: WorkspaceId,
    ago: Duration,
) {
    let engine = Engine::new(store.clone(), Arc::new(RuleBook::default()), clock.clone());
    let staff = Gate::new(clock.clone())
        .authorize_breach(&Principal::Staff {
            staff: StaffId::new(),
            mfa: true,
            grant: None,
        })
        .unwrap();
    engine
        .open(
            &staff,
            NewIncident {
                title: "Export readable without sign-in".into(),
                severity: Severity::S1,
                assessment: Assessment {
                    personal_data: true,
                    risk: Risk::Risk,
                },
                aware_at: clock.now() - ago,
                workspaces: vec![workspace],
                data_sets: vec![DataSet {
                    name: "customer user accounts".into(),
                    role: DataRole::Controller,
                }],
                details: Details::default(),
            },
        )
        .await
        .unwrap();
}

fn failed(report: &Report) -> BTreeSet<Promise> {
    report.failures().map(|c| c.promise).collect()
}

fn details(report: &Report, promise: Promise) -> String {
    let check = report.check(promise).unwrap();
    format!("{}\n{}", check.summary, check.details.join("\n"))
}

/// The text and JSON of a report never repeat what the scan found.
fn assert_nothing_repeated(report: &Report) {
    let shown = format!("{report}\n{}", report.to_json());
    for value in [VISITOR_IP, "Firefox/128", "LIC-0000", "PLANTED", "lm_"] {
        assert!(
            !shown.contains(value),
            "{value} appears in the report:\n{shown}"
        );
    }
}

/// The Postgres test server, or skip (fail with `LEADMAPS_REQUIRE_POSTGRES=1`).
async fn postgres() -> Option<tokio_postgres::Config> {
    let url = std::env::var("LEADMAPS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = tokio_postgres::Config::from_str(&url).unwrap();
    match admin.connect(NoTls).await {
        Ok((client, connection)) => {
            let driver = tokio::spawn(connection);
            drop(client);
            let _ = driver.await;
            Some(admin)
        }
        Err(error) if std::env::var("LEADMAPS_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("LEADMAPS_REQUIRE_POSTGRES=1 but no Postgres answers: {error}")
        }
        Err(_) => {
            eprintln!("SKIPPED: no Postgres; the verifier's Postgres checks were NOT tested");
            None
        }
    }
}

async fn execute(config: &tokio_postgres::Config, sql: &str) {
    let (client, connection) = config.connect(NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = driver.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deployment_passes_then_fails_naming_each_broken_promise() {
    let Some(admin) = postgres().await else {
        return;
    };
    let name = format!("leadmaps_verify_test_{}", uuid::Uuid::new_v4().simple());
    execute(&admin, &format!("CREATE DATABASE \"{name}\"")).await;
    let mut owner = admin.clone();
    owner.dbname(&name);
    let outcome = tokio::spawn(postgres_scenario(owner)).await;
    execute(
        &admin,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn postgres_scenario(owner: tokio_postgres::Config) {
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&PostgresConfig::new(owner.clone()))
            .await
            .unwrap(),
    );
    let backups = tempfile::tempdir().unwrap();
    let setup = set_up(
        Database::Postgres(Box::new(leadmaps_backup::PostgresDatabase::new(
            owner.clone(),
        ))),
        store,
        backups.path(),
    )
    .await;
    let settings = Settings::default();

    // A correct deployment: every promise holds.
    let report = verify(&setup.deployment, &settings).await;
    assert!(report.passed(), "{report}");
    for check in &report.checks {
        assert_eq!(check.status, Status::Pass, "{report}");
    }
    assert!(
        details(&report, Promise::Backups).contains("restored into a scratch database"),
        "{report}"
    );
    assert!(
        details(&report, Promise::BreachClock).contains("due in"),
        "{report}"
    );
    assert_nothing_repeated(&report);

    // The evidence bundle checks on its own.
    let evidence = tempfile::tempdir().unwrap();
    let bundle = leadmaps_verify::evidence::write(
        evidence.path(),
        &setup.deployment,
        &report,
        &RegisterBook::default(),
    )
    .await
    .unwrap();
    check_bundle(&bundle.dir);
    assert!(
        leadmaps_verify::evidence::write(
            evidence.path(),
            &setup.deployment,
            &report,
            &RegisterBook::default()
        )
        .await
        .is_err(),
        "a bundle is never overwritten"
    );

    // Each promise broken in turn; each failure is named, and only the broken ones fail.
    let mut broken = BTreeSet::new();
    let expect =
        |report: &Report, promise: Promise, needle: &str, broken: &mut BTreeSet<Promise>| {
            broken.insert(promise);
            assert_eq!(failed(report), *broken, "{report}");
            assert!(
                details(report, promise).contains(needle),
                "{needle:?} not named:\n{report}"
            );
            assert_nothing_repeated(report);
        };

    execute(
        &owner,
        "ALTER TABLE leadmaps.sites NO FORCE ROW LEVEL SECURITY",
    )
    .await;
    let report = verify(&setup.deployment, &settings).await;
    expect(
        &report,
        Promise::RowLevelSecurity,
        "leadmaps.sites",
        &mut broken,
    );

    execute(
        &owner,
        "UPDATE leadmaps.secrets SET blob = convert_to('PLANTED-plaintext-license-key', 'UTF8')",
    )
    .await;
    let report = verify(&setup.deployment, &settings).await;
    expect(&report, Promise::SecretsAtRest, "secrets.blob", &mut broken);

    execute(
        &owner,
        &format!(
            "ALTER TABLE leadmaps.audit_records DISABLE TRIGGER ALL; \
             UPDATE leadmaps.audit_records SET target_id = 'someone-else' \
             WHERE seq = 2 AND workspace_id = '{}'; \
             ALTER TABLE leadmaps.audit_records ENABLE TRIGGER ALL",
            setup.workspace
        ),
    )
    .await;
    let report = verify(&setup.deployment, &settings).await;
    expect(
        &report,
        Promise::AuditTrail,
        &setup.workspace.to_string(),
        &mut broken,
    );

    let bare = StaffMember {
        id: StaffId::new(),
        email: leadmaps_core::mail::Address::parse("intern@verify.example").unwrap(),
        created_at: setup.clock.now(),
    };
    setup.store.create_staff(&bare).await.unwrap();
    let report = verify(&setup.deployment, &settings).await;
    expect(
        &report,
        Promise::StaffMfa,
        &bare.id.to_string(),
        &mut broken,
    );

    open_incident(
        &setup.store,
        &setup.clock,
        setup.workspace,
        Duration::hours(100),
    )
    .await;
    let report = verify(&setup.deployment, &settings).await;
    expect(&report, Promise::BreachClock, "overdue by", &mut broken);

    let (plain, cert) = https(false).await;
    let without_hsts = setup
        .deployment
        .clone()
        .with_public_url(plain)
        .with_trusted_certificates(vec![cert]);
    let report = verify(&without_hsts, &settings).await;
    expect(
        &report,
        Promise::Transport,
        "no Strict-Transport-Security header",
        &mut broken,
    );

    execute(
        &owner,
        &format!("UPDATE leadmaps.events SET pathname = pathname || '/via/{VISITOR_IP}'"),
    )
    .await;
    let report = verify(&without_hsts, &settings).await;
    expect(
        &report,
        Promise::NoPersonalData,
        "events.pathname",
        &mut broken,
    );

    let us = WorkspaceId::new();
    let provisioning = Principal::System(SystemTask::Provisioning);
    setup
        .store
        .create_workspace(
            &setup
                .gate
                .authorize(&provisioning, us, Action::WorkspaceCreate)
                .unwrap(),
            "Elsewhere",
            Region::Us,
            setup.clock.now(),
        )
        .await
        .unwrap();
    let report = verify(&without_hsts, &settings).await;
    expect(&report, Promise::Residency, &us.to_string(), &mut broken);

    let stale = verify(&without_hsts, &settings.with_max_backup_age(Duration::ZERO)).await;
    expect(
        &stale,
        Promise::Backups,
        "old (the limit is 0h)",
        &mut broken,
    );
    let _ = &setup.ring;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deployment_passes_with_row_level_security_not_applicable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadmaps.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let setup = set_up(Database::Sqlite(path.clone()), store, &backups).await;
    let report = verify(&setup.deployment, &Settings::default()).await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.check(Promise::RowLevelSecurity).unwrap().status,
        Status::NotApplicable
    );
    assert_eq!(
        report
            .checks
            .iter()
            .filter(|c| c.status == Status::Pass)
            .count(),
        Promise::ALL.len() - 1,
        "{report}"
    );
    assert_nothing_repeated(&report);

    // Without a public URL or a backup target nothing passes unchecked.
    let blind = Deployment::new(
        Database::Sqlite(path),
        setup.store.clone(),
        setup.ring.clone(),
        Region::Eu,
        setup.clock.clone(),
    );
    let report = verify(&blind, &Settings::default()).await;
    assert_eq!(
        failed(&report),
        BTreeSet::from([Promise::Transport, Promise::Backups]),
        "{report}"
    );
    assert!(
        details(&report, Promise::Transport).contains("not checked"),
        "{report}"
    );
}

/// Every file of the bundle is listed with its SHA-256, and `sha256sum -c` agrees.
fn check_bundle(dir: &Path) {
    use sha2::Digest as _;
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("leadmaps-evidence-") && name.ends_with('Z'),
        "{name}"
    );
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let mut listed = BTreeSet::new();
    for line in sums.lines() {
        let (hash, file) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), hash, "{file}");
        listed.insert(file.to_owned());
    }
    let present: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "SHA256SUMS")
        .collect();
    assert_eq!(listed, present);
    for file in [
        "verify.json",
        "verify.txt",
        "breach-register.json",
        "vulnerability-reports.json",
        "subprocessors.json",
        "key-rotation.json",
        "MANIFEST.json",
    ] {
        assert!(listed.contains(file), "{file} missing");
    }
    let register: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("breach-register.json")).unwrap()).unwrap();
    assert_eq!(register["chain"], "verified");
    assert!(!register["entries"].as_array().unwrap().is_empty());
    let keys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("key-rotation.json")).unwrap()).unwrap();
    assert_eq!(keys["primary_kek"], 1);
    assert!(
        keys["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "tenant_key.created"),
        "{keys:#}"
    );
    let subprocessors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("subprocessors.json")).unwrap()).unwrap();
    assert!(!subprocessors.as_array().unwrap().is_empty());
    if let Ok(output) = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .output()
    {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
