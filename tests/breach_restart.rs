//! The breach clock across restarts, on a SQLite file: an incident opened before a stop gets its
//! admin e-mail once after the start, however often the notifier runs and however many run at
//! once; a notifier that died between claiming and sending does not lose the e-mail; and the
//! sending is in the workspace's audit log.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use leadmaps::audit::{AuditAction, AuditStoreExt as _};
use leadmaps::auth::users::{User, UserStore as _};
use leadmaps::breach::{
    Assessment, BreachStore as _, Claim, DEFAULT_LEASE, DataRole, DataSet, DeliveryKey, Details,
    Duty, Engine, IncidentId, NewIncident, Notifier, Risk, RuleBook, Severity, Standing, Step,
    verify_register,
};
use leadmaps::clock::{Clock, ManualClock};
use leadmaps::mail::{Address, Email, Mailer};
use leadmaps::store::WorkspaceStore as _;
use leadmaps::tenancy::{
    Action, Gate, Principal, Region, Role, StaffId, SystemTask, UserId, WorkspaceId,
};
use leadmaps_store_sqlite::SqliteStore;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T: OffsetDateTime = datetime!(2026-03-02 09:00 UTC);

/// Keeps every message handed to it, duplicates too (unlike `Outbox`, which drops a repeated
/// idempotency key and would hide a second send).
#[derive(Default)]
struct Recorder(Mutex<Vec<Email>>);

impl Recorder {
    fn sent(&self) -> Vec<Email> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl Mailer for Recorder {
    async fn send(&self, email: &Email) -> leadmaps::Result<()> {
        self.0.lock().unwrap().push(email.clone());
        Ok(())
    }
}

/// One run of the server's breach side: the store on the file, the clock, the engine and the
/// notifier, as `serve` builds them.
struct Server {
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    gate: Gate,
    engine: Engine,
    notifier: Notifier,
    mailer: Arc<Recorder>,
}

fn start(path: &Path, now: OffsetDateTime) -> Server {
    let store = Arc::new(SqliteStore::open(path).expect("open the file"));
    let clock = Arc::new(ManualClock::new(now));
    let gate = Gate::new(clock.clone());
    let engine = Engine::new(store.clone(), Arc::new(RuleBook::default()), clock.clone());
    let mailer = Arc::new(Recorder::default());
    let notifier = Notifier::new(engine.clone(), mailer.clone(), gate.clone());
    Server {
        store,
        clock,
        gate,
        engine,
        notifier,
        mailer,
    }
}

/// A workspace with one admin, and an S1 personal-data incident affecting it, opened at T.
async fn provision_and_open(server: &Server) -> (WorkspaceId, IncidentId) {
    let ws = WorkspaceId::new();
    let provisioning = Principal::System(SystemTask::Provisioning);
    let gate = &server.gate;
    let store = server.store.as_ref();
    store
        .create_workspace(
            &gate
                .authorize(&provisioning, ws, Action::WorkspaceCreate)
                .unwrap(),
            "Acme",
            Region::Eu,
            T,
        )
        .await
        .unwrap();
    let admin = User {
        id: UserId::new(),
        email: Address::parse("admin@acme.example").unwrap(),
        created_at: T,
    };
    store.create_user(&admin).await.unwrap();
    store
        .set_membership(
            &gate
                .authorize(&provisioning, ws, Action::MemberManage)
                .unwrap(),
            admin.id,
            Role::Admin,
            T,
        )
        .await
        .unwrap();
    let staff = gate
        .authorize_breach(&Principal::Staff {
            staff: StaffId::new(),
            mfa: true,
            grant: None,
        })
        .unwrap();
    let incident = server
        .engine
        .open(
            &staff,
            NewIncident {
                title: "Account export readable without sign-in".into(),
                severity: Severity::S1,
                assessment: Assessment {
                    personal_data: true,
                    risk: Risk::Risk,
                },
                aware_at: T,
                workspaces: vec![ws],
                data_sets: vec![DataSet {
                    name: "customer user accounts".into(),
                    role: DataRole::Controller,
                }],
                details: Details::default(),
            },
        )
        .await
        .unwrap();
    (ws, incident.id)
}

fn breach_scope(server: &Server) -> leadmaps::tenancy::BreachScope {
    server
        .gate
        .authorize_breach(&Principal::System(SystemTask::Breach))
        .unwrap()
}

async fn notices_in_log(server: &Server, ws: WorkspaceId) -> usize {
    let read = server
        .gate
        .authorize(&Principal::System(SystemTask::Audit), ws, Action::AuditRead)
        .unwrap();
    server
        .store
        .all_audit_records(&read)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.action == AuditAction::BreachNotificationSent)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_email_goes_out_once_after_a_restart_past_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadmaps.db");

    // Open the incident, let the notifier look once (nothing is due), then stop.
    let first = start(&path, T);
    let (ws, incident) = provision_and_open(&first).await;
    first.notifier.run_once().await.unwrap();
    first.clock.advance(Duration::hours(2));
    first.notifier.run_once().await.unwrap();
    assert_eq!(first.mailer.sent(), [], "nothing before its time");
    drop(first);

    // Start again past the 4-hour point: the e-mail goes out once, however often it runs.
    let second = start(&path, T + Duration::hours(4) + Duration::minutes(1));
    for _ in 0..3 {
        second.notifier.run_once().await.unwrap();
        second.clock.advance(Duration::minutes(1));
    }
    let sent = second.mailer.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to.as_str(), "admin@acme.example");
    assert!(sent[0].subject.contains(&incident.to_string()));
    assert_eq!(
        notices_in_log(&second, ws).await,
        1,
        "the sending is audited"
    );
    // It went out late (the server was down): done, and the reason is owed by staff.
    let scope = breach_scope(&second);
    let stored = second.engine.incident(&scope, incident).await.unwrap();
    let email = stored
        .obligations
        .iter()
        .find(|o| o.duty == Duty::EmailAdmins)
        .unwrap();
    assert_eq!(email.standing(second.clock.now()), Standing::ReasonOwed);
    let register = second.store.register_entries(&scope, 0, 100).await.unwrap();
    assert_eq!(verify_register(&register), Ok(()));
    drop(second);

    // A third start sends nothing more.
    let third = start(&path, T + Duration::hours(5));
    third.notifier.run_once().await.unwrap();
    assert_eq!(third.mailer.sent(), []);
    assert_eq!(notices_in_log(&third, ws).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_that_died_after_claiming_does_not_lose_the_email() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadmaps.db");
    let first = start(&path, T);
    let (ws, incident) = provision_and_open(&first).await;
    // A run at 3h45 claims the send, then the process dies before the mailer is called.
    let at = T + Duration::minutes(225);
    let scope = breach_scope(&first);
    let stored = first.engine.incident(&scope, incident).await.unwrap();
    let email = stored
        .obligations
        .iter()
        .find(|o| o.duty == Duty::EmailAdmins)
        .unwrap()
        .id;
    let claim = first
        .store
        .claim_delivery(
            &scope,
            &DeliveryKey::new(incident, email, Step::Send),
            at,
            DEFAULT_LEASE,
        )
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Claimed(_)));
    drop(first);

    // Restarted while the dead run's lease still holds: it waits rather than send twice.
    let second = start(&path, at + Duration::minutes(1));
    let report = second.notifier.run_once().await.unwrap();
    assert_eq!((report.busy, second.mailer.sent().len()), (1, 0));
    // Once the lease ran out, the claim is taken over and the e-mail sent, once.
    second.clock.set(at + DEFAULT_LEASE);
    second.notifier.run_once().await.unwrap();
    second.notifier.run_once().await.unwrap();
    assert_eq!(second.mailer.sent().len(), 1);
    assert_eq!(notices_in_log(&second, ws).await, 1);
    let deliveries = second
        .store
        .deliveries(&breach_scope(&second), incident)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_notifiers_on_one_file_send_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadmaps.db");
    let first = start(&path, T);
    let (ws, _) = provision_and_open(&first).await;
    let later = T + Duration::hours(4);
    first.clock.set(later);
    let second = start(&path, later);
    let (a, b) = tokio::join!(first.notifier.run_once(), second.notifier.run_once());
    a.unwrap();
    b.unwrap();
    let total = first.mailer.sent().len() + second.mailer.sent().len();
    assert_eq!(total, 1);
    assert_eq!(notices_in_log(&first, ws).await, 1);
}
