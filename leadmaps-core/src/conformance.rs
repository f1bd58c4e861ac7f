//! The behaviour every store must show. Memory, SQLite and Postgres run all of it; run it on your
//! own store too:
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use leadmaps_core::{memory::MemoryStore, store::Store};
//! leadmaps_core::conformance::run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
//! # }
//! ```
//!
//! Each check gets a fresh, empty store from the factory and panics with a message on the first
//! broken rule. Everything goes through `&dyn Store`.

mod audit;
mod breach;
mod legal;
mod policy;
mod sso;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::clock::{Clock, ManualClock};
use crate::crypto::{Kek, KeyRing, Purpose, SecretContext, Vault};
use crate::error::{Error, ErrorKind};
use crate::ingest::{Event, EventBatch, EventId, RejectReason, Revenue, Verdict, VisitorId};
use crate::store::{
    DropCount, MAX_SECRET_BLOB, PolicyChange, Store, StoredSalt, StoredSecret, WrappedTenantKey,
};
use crate::tenancy::{
    Action, Gate, Principal, Region, Role, Scope, SystemTask, UserId, WorkspaceId,
};

/// One check over a store handle of type `S`: it gets a fresh, empty store.
pub type Check<S> = fn(Arc<S>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `checks` in order, each on a fresh store from `fresh`, printing each name as it passes.
pub async fn run_checks<S, F, Fut>(checks: &[(&str, Check<S>)], fresh: F)
where
    S: ?Sized,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    for (name, check) in checks {
        check(fresh().await).await;
        println!("conformance: {name} ... ok");
    }
}

macro_rules! checks {
    ($(#[$doc:meta])* $table:ident: $store:ty = [$($name:ident),* $(,)?]) => {
        $(#[$doc])*
        pub const $table: &[(&str, Check<$store>)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

checks!(
    /// Every check, by name.
    CHECKS: dyn Store = [
    workspace_lifecycle,
    workspace_isolation,
    secret_round_trip,
    secret_rejects_bad_input,
    secret_isolation,
    scope_actions_enforced,
    tenant_key_rules,
    tenant_key_isolation,
    rewrap_listing,
    key_check_stored_once,
    vault_seal_open,
    vault_tenant_key_rotation,
    vault_kek_rotation,
    vault_wrong_kek_fails_start,
    vault_crypto_shredding,
    site_rules,
    salt_rules,
    event_idempotency_and_order,
    event_isolation,
    event_batch_region_and_scope,
    retention_delete,
    collector_end_to_end,
    salts_rotate_and_are_destroyed,
    workspace_policy_reaches_memberships,
    totp_seeds_live_in_the_instance_tenant,
    audit_appends_chain_and_verify,
    audit_concurrent_appends_never_fork,
    audit_reads_need_audit_read_and_stay_in_workspace,
    audit_checkpoints_round_trip_and_verify,
    policy_changes_are_stored_and_audited,
    retention_job_keeps_newer_events,
    workspace_ids_page_in_order,
    impersonation_is_audited_before_access,
    checkpoint_job_signs_due_heads,
    mutations_are_logged_with_their_change,
    breach_incidents_and_register_commit_together,
    breach_deliveries_are_claimed_once,
    breach_notice_and_its_audit_record_commit_together,
    breach_admin_addresses_are_the_workspace_admins,
    plans_gate_sso_configuration,
    sso_sessions_are_bound_to_their_workspace,
    scim_writes_provision_and_deprovision,
    scim_resources_are_unique_versioned_and_isolated,
    vulnerability_reports_keep_their_receipt_and_open_incidents,
    dpa_acceptance_is_audited_and_stays_in_its_workspace,
    subprocessor_changes_reach_every_admin_once,
    ]
);

pub use policy::{
    checkpoint_job_signs_due_heads, impersonation_is_audited_before_access,
    policy_changes_are_stored_and_audited, retention_job_keeps_newer_events,
    workspace_ids_page_in_order,
};

pub use sso::{
    plans_gate_sso_configuration, scim_resources_are_unique_versioned_and_isolated,
    scim_writes_provision_and_deprovision, sso_sessions_are_bound_to_their_workspace,
};

pub use audit::{
    audit_appends_chain_and_verify, audit_checkpoints_round_trip_and_verify,
    audit_concurrent_appends_never_fork, audit_reads_need_audit_read_and_stay_in_workspace,
    mutations_are_logged_with_their_change,
};
pub use breach::{
    breach_admin_addresses_are_the_workspace_admins, breach_deliveries_are_claimed_once,
    breach_incidents_and_register_commit_together,
    breach_notice_and_its_audit_record_commit_together,
};
pub use legal::{
    dpa_acceptance_is_audited_and_stays_in_its_workspace,
    subprocessor_changes_reach_every_admin_once,
    vulnerability_reports_keep_their_receipt_and_open_incidents,
};

/// Runs every check, each on a fresh store from `fresh`, printing each name as it passes.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    run_checks(CHECKS, fresh).await;
}

/// A fixture: a clock, a gate, and admin principals of two workspaces that exist in the store.
struct Fixture {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    gate: Gate,
    a: WorkspaceId,
    b: WorkspaceId,
    admin_a: Principal,
    admin_b: Principal,
}

fn start_time() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::days(20_500)
}

impl Fixture {
    async fn new(store: Arc<dyn Store>) -> Self {
        let clock = Arc::new(ManualClock::new(start_time()));
        let gate = Gate::new(clock.clone());
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        let admin = |ws| Principal::member(UserId::new(), [(ws, Role::Admin)]);
        let fixture = Self {
            store: store.clone(),
            clock,
            gate,
            a,
            b,
            admin_a: admin(a),
            admin_b: admin(b),
        };
        for (ws, name) in [(a, "Workspace A"), (b, "Workspace B")] {
            let scope = fixture.system_create(ws);
            store
                .create_workspace(&scope, name, Region::Eu, fixture.clock.now())
                .await
                .expect("create workspace");
        }
        fixture
    }

    fn system_create(&self, ws: WorkspaceId) -> Scope {
        self.gate
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::WorkspaceCreate,
            )
            .unwrap()
    }

    fn a(&self, action: Action) -> Scope {
        self.gate
            .authorize(&self.admin_a, self.a, action)
            .expect("admin of A")
    }

    /// The audit task's scope for reading `ws`'s log (the instance tenant's too).
    fn auditor(&self, ws: WorkspaceId) -> Scope {
        self.gate
            .authorize(&Principal::System(SystemTask::Audit), ws, Action::AuditRead)
            .expect("the audit task reads every log")
    }

    fn b(&self, action: Action) -> Scope {
        self.gate
            .authorize(&self.admin_b, self.b, action)
            .expect("admin of B")
    }

    fn keys(&self, ws: WorkspaceId) -> Scope {
        self.gate
            .authorize(
                &Principal::System(SystemTask::KeyRotation),
                ws,
                Action::KeyManage,
            )
            .unwrap()
    }

    async fn vault(&self, ring: KeyRing) -> Vault {
        Vault::start(ring, self.store.clone(), self.clock.clone())
            .await
            .expect("vault starts")
            .with_cache_ttl(Duration::ZERO)
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T, Error>) -> ErrorKind {
    result.expect_err("expected an error").kind()
}

fn secret(name: &str, blob: &[u8]) -> StoredSecret {
    StoredSecret {
        name: name.into(),
        purpose: Purpose::Other,
        blob: blob.to_vec(),
    }
}

/// A workspace starts without a TOTP requirement; setting one needs the update action, shows on
/// the workspace, and reaches every member's membership (so the gate can enforce it), in that
/// workspace only.
pub async fn workspace_policy_reaches_memberships(store: Arc<dyn Store>) {
    use crate::auth::users::User;
    use crate::store::WorkspacePolicy;
    let f = Fixture::new(store.clone()).await;
    let read = store.workspace(&f.a(Action::WorkspaceRead)).await.unwrap();
    assert_eq!(read.policy, WorkspacePolicy::default());
    assert!(!read.policy.require_totp, "off by default");
    let alice = User {
        id: UserId::new(),
        email: crate::mail::Address::parse("alice@example.com").unwrap(),
        created_at: f.clock.now(),
    };
    store.create_user(&alice).await.unwrap();
    for ws in [f.a, f.b] {
        let manage = f
            .gate
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::MemberManage,
            )
            .unwrap();
        store
            .set_membership(&manage, alice.id, Role::Viewer, start_time())
            .await
            .unwrap();
    }
    let strict = PolicyChange::RequireTotp(true);
    assert_eq!(
        kind(
            store
                .set_workspace_policy(&f.a(Action::WorkspaceRead), &strict, f.clock.now())
                .await
        ),
        ErrorKind::Denied
    );
    let (updated, record) = store
        .set_workspace_policy(&f.a(Action::WorkspaceUpdate), &strict, f.clock.now())
        .await
        .unwrap();
    assert!(updated.policy.require_totp);
    // The change and its audit record are one: the record is in the log, chained, with the
    // policy before and after.
    assert_eq!(
        record.action,
        crate::audit::AuditAction::WorkspacePolicyUpdated
    );
    assert_eq!(
        record.before,
        Some(serde_json::json!({"require_totp": false}))
    );
    assert_eq!(
        record.after,
        Some(serde_json::json!({"require_totp": true}))
    );
    let log = store
        .audit_records(&f.a(Action::AuditRead), 0, 100)
        .await
        .unwrap();
    assert_eq!(log.last(), Some(&record));
    assert!(
        store
            .audit_records(&f.b(Action::AuditRead), 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|r| r.action != crate::audit::AuditAction::WorkspacePolicyUpdated),
        "nothing in the other workspace's log"
    );
    assert_eq!(updated.name, "Workspace A", "nothing else changed");
    assert!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .policy
            .require_totp
    );
    assert!(
        !store
            .workspace(&f.b(Action::WorkspaceRead))
            .await
            .unwrap()
            .policy
            .require_totp,
        "the other workspace keeps its policy"
    );
    let memberships = store.memberships(alice.id).await.unwrap();
    let mut got: Vec<_> = memberships
        .iter()
        .map(|m| (m.workspace, m.require_totp))
        .collect();
    got.sort();
    let mut want = vec![(f.a, true), (f.b, false)];
    want.sort();
    assert_eq!(got, want);
    // Through the gate: without a second factor, workspace A is out of reach, B is not.
    let member = |second_factor| Principal::Member {
        user: alice.id,
        memberships: memberships.clone(),
        second_factor,
    };
    assert_eq!(
        f.gate
            .authorize(&member(false), f.a, Action::EventRead)
            .unwrap_err(),
        crate::tenancy::Denied::SecondFactorRequired
    );
    assert!(
        f.gate
            .authorize(&member(false), f.b, Action::EventRead)
            .is_ok()
    );
    assert!(
        f.gate
            .authorize(&member(true), f.a, Action::EventRead)
            .is_ok()
    );
    store
        .set_workspace_policy(
            &f.a(Action::WorkspaceUpdate),
            &PolicyChange::RequireTotp(false),
            f.clock.now(),
        )
        .await
        .unwrap();
    let log = store
        .audit_records(&f.a(Action::AuditRead), 0, 100)
        .await
        .unwrap();
    let n = log.len();
    assert_eq!(log[n - 2], record);
    assert_eq!(log[n - 1].prev_hash, log[n - 2].hash, "chained");
    assert!(
        store
            .memberships(alice.id)
            .await
            .unwrap()
            .iter()
            .all(|m| !m.require_totp),
        "turned off again"
    );
}

/// TOTP enrolment works on a fresh store: seeds are sealed under the instance tenant
/// ([`WorkspaceId::INSTANCE`]), which every store must hold keys for without any workspace
/// having been created; the seed opens again to confirm the factor and check later codes.
pub async fn totp_seeds_live_in_the_instance_tenant(store: Arc<dyn Store>) {
    use crate::auth::otp::{OtpAuth, Totp};
    use crate::auth::totp::{FactorState, Subject, TotpFactors, TotpOutcome};
    let clock = Arc::new(ManualClock::new(start_time()));
    let vault = Arc::new(
        Vault::start(
            KeyRing::new([kek(1, 1)]).unwrap(),
            store.clone(),
            clock.clone(),
        )
        .await
        .expect("vault on a fresh store"),
    );
    let factors = TotpFactors::new(
        store.clone(),
        vault,
        Gate::new(clock.clone()),
        clock.clone(),
        "leadmaps",
    );
    let subject = Subject::User(UserId::new());
    let uri = factors
        .enroll(subject, "alice@example.com")
        .await
        .expect("enrolment seals the seed in the instance tenant");
    let seed = OtpAuth::parse(&uri).unwrap().secret;
    let totp = Totp::default();
    let code = |now: OffsetDateTime| totp.format(totp.code_at(&seed, now.unix_timestamp() as u64));
    assert_eq!(
        factors
            .confirm(subject, &code(clock.now()), &*store)
            .await
            .unwrap(),
        TotpOutcome::Accepted
    );
    assert_eq!(factors.state(subject).await.unwrap(), FactorState::Active);
    clock.advance(Duration::seconds(30));
    assert_eq!(
        factors.check(subject, &code(clock.now())).await.unwrap(),
        TotpOutcome::Accepted
    );
}

/// Create, read, rename; duplicates conflict; names validated; unknown ids are not found.
pub async fn workspace_lifecycle(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let read = store.workspace(&f.a(Action::WorkspaceRead)).await.unwrap();
    assert_eq!(
        (read.id, read.name.as_str(), read.region),
        (f.a, "Workspace A", Region::Eu)
    );
    assert_eq!(read.created_at, f.clock.now());
    assert_eq!(
        kind(
            store
                .create_workspace(&f.system_create(f.a), "again", Region::Us, f.clock.now())
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Workspace A",
        "a failed create changed nothing"
    );
    let renamed = store
        .rename_workspace(&f.a(Action::WorkspaceUpdate), "Renamed", start_time())
        .await
        .unwrap();
    assert_eq!(renamed.name, "Renamed");
    for bad in ["", "   ", "tab\there", &"x".repeat(201)] {
        assert_eq!(
            kind(
                store
                    .rename_workspace(&f.a(Action::WorkspaceUpdate), bad, start_time())
                    .await
            ),
            ErrorKind::Invalid
        );
    }
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Renamed"
    );
    let us = WorkspaceId::new();
    let created = store
        .create_workspace(&f.system_create(us), "US", Region::Us, f.clock.now())
        .await
        .unwrap();
    assert_eq!(created.region, Region::Us);
    let ghost = WorkspaceId::new();
    let ghost_admin = Principal::member(UserId::new(), [(ghost, Role::Admin)]);
    let ghost_scope = f
        .gate
        .authorize(&ghost_admin, ghost, Action::WorkspaceRead)
        .unwrap();
    assert_eq!(
        kind(store.workspace(&ghost_scope).await),
        ErrorKind::NotFound
    );
    let ghost_update = f
        .gate
        .authorize(&ghost_admin, ghost, Action::WorkspaceUpdate)
        .unwrap();
    assert_eq!(
        kind(
            store
                .rename_workspace(&ghost_update, "x", start_time())
                .await
        ),
        ErrorKind::NotFound
    );
}

/// A scope for A reads and changes A only.
pub async fn workspace_isolation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    store
        .rename_workspace(&f.a(Action::WorkspaceUpdate), "A2", start_time())
        .await
        .unwrap();
    assert_eq!(
        store
            .workspace(&f.b(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Workspace B"
    );
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .id,
        f.a
    );
}

/// Put, read, replace, list, delete.
pub async fn secret_round_trip(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let (w, r) = (f.a(Action::SecretWrite), f.a(Action::SecretRead));
    assert_eq!(store.secret(&r, "license").await.unwrap(), None);
    store
        .put_secret(&w, &secret("license", b"v1"), start_time())
        .await
        .unwrap();
    store
        .put_secret(&w, &secret("another", b"x"), start_time())
        .await
        .unwrap();
    assert_eq!(
        store.secret(&r, "license").await.unwrap().unwrap().blob,
        b"v1"
    );
    store
        .put_secret(
            &w,
            &StoredSecret {
                purpose: Purpose::LicenseKey,
                ..secret("license", b"v2")
            },
            start_time(),
        )
        .await
        .unwrap();
    let read = store.secret(&r, "license").await.unwrap().unwrap();
    assert_eq!(
        (read.blob.as_slice(), read.purpose),
        (b"v2".as_slice(), Purpose::LicenseKey)
    );
    assert_eq!(
        store.secret_names(&r).await.unwrap(),
        ["another", "license"]
    );
    let big = vec![7u8; MAX_SECRET_BLOB];
    store
        .put_secret(&w, &secret("big", &big), start_time())
        .await
        .unwrap();
    assert_eq!(store.secret(&w, "big").await.unwrap().unwrap().blob, big);
    assert!(
        store
            .delete_secret(&w, "license", start_time())
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_secret(&w, "license", start_time())
            .await
            .unwrap()
    );
    assert_eq!(store.secret(&r, "license").await.unwrap(), None);
}

/// Oversized blobs and bad names are refused, and leave what was stored untouched.
pub async fn secret_rejects_bad_input(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let w = f.a(Action::SecretWrite);
    store
        .put_secret(&w, &secret("keep", b"original"), start_time())
        .await
        .unwrap();
    let too_big = vec![0u8; MAX_SECRET_BLOB + 1];
    assert_eq!(
        kind(
            store
                .put_secret(&w, &secret("keep", &too_big), start_time())
                .await
        ),
        ErrorKind::Invalid
    );
    for bad in ["", " ", "new\nline", &"n".repeat(201)] {
        assert_eq!(
            kind(store.put_secret(&w, &secret(bad, b"x"), start_time()).await),
            ErrorKind::Invalid
        );
    }
    assert_eq!(
        store.secret(&w, "keep").await.unwrap().unwrap().blob,
        b"original"
    );
    assert_eq!(store.secret_names(&w).await.unwrap(), ["keep"]);
}

/// Same names in two workspaces never meet.
pub async fn secret_isolation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    store
        .put_secret(
            &f.a(Action::SecretWrite),
            &secret("shared-name", b"A"),
            start_time(),
        )
        .await
        .unwrap();
    store
        .put_secret(
            &f.b(Action::SecretWrite),
            &secret("shared-name", b"B"),
            start_time(),
        )
        .await
        .unwrap();
    store
        .put_secret(
            &f.b(Action::SecretWrite),
            &secret("only-b", b"B"),
            start_time(),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .secret(&f.a(Action::SecretRead), "shared-name")
            .await
            .unwrap()
            .unwrap()
            .blob,
        b"A"
    );
    assert_eq!(
        store
            .secret(&f.a(Action::SecretRead), "only-b")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.secret_names(&f.a(Action::SecretRead)).await.unwrap(),
        ["shared-name"]
    );
    assert!(
        !store
            .delete_secret(&f.a(Action::SecretWrite), "only-b", start_time())
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_secret(&f.a(Action::SecretWrite), "shared-name", start_time())
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .secret(&f.b(Action::SecretRead), "shared-name")
            .await
            .unwrap()
            .unwrap()
            .blob,
        b"B"
    );
    assert_eq!(
        store
            .secret(&f.b(Action::SecretRead), "only-b")
            .await
            .unwrap()
            .unwrap()
            .blob,
        b"B"
    );
}

/// A scope for one action does not stand in for another.
pub async fn scope_actions_enforced(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let read = f.a(Action::SecretRead);
    assert_eq!(
        kind(
            store
                .put_secret(&read, &secret("s", b"x"), start_time())
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(store.delete_secret(&read, "s", start_time()).await),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(store.secret(&f.a(Action::EventRead), "s").await),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .rename_workspace(&f.a(Action::WorkspaceRead), "x", start_time())
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .delete_tenant_keys(&f.a(Action::SecretWrite), start_time())
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .rewrap_tenant_key(&f.a(Action::SecretWrite), 1, 1, 2, b"x", start_time())
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .create_workspace(
                    &f.a(Action::WorkspaceUpdate),
                    "x",
                    Region::Eu,
                    f.clock.now()
                )
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Workspace A"
    );
}

fn wrapped(ws: WorkspaceId, version: u32, kek_id: u32, blob: &[u8]) -> WrappedTenantKey {
    WrappedTenantKey {
        workspace: ws,
        version,
        kek_id,
        blob: blob.to_vec(),
        created_at: start_time(),
    }
}

/// Versions are unique, listed ascending, rewrapped only from the expected KEK.
pub async fn tenant_key_rules(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let s = f.a(Action::SecretWrite);
    store
        .insert_tenant_key(&s, &wrapped(f.a, 2, 1, b"two"))
        .await
        .unwrap();
    store
        .insert_tenant_key(&s, &wrapped(f.a, 1, 1, b"one"))
        .await
        .unwrap();
    assert_eq!(
        kind(
            store
                .insert_tenant_key(&s, &wrapped(f.a, 1, 9, b"dup"))
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(store.insert_tenant_key(&s, &wrapped(f.b, 1, 1, b"x")).await),
        ErrorKind::Denied
    );
    let keys = store.tenant_keys(&s).await.unwrap();
    assert_eq!(
        keys,
        [wrapped(f.a, 1, 1, b"one"), wrapped(f.a, 2, 1, b"two")]
    );
    let k = f.keys(f.a);
    assert!(
        !store
            .rewrap_tenant_key(&k, 1, 7, 2, b"wrong-from", start_time())
            .await
            .unwrap()
    );
    assert!(
        !store
            .rewrap_tenant_key(&k, 3, 1, 2, b"no-such-version", start_time())
            .await
            .unwrap()
    );
    assert!(
        store
            .rewrap_tenant_key(&k, 1, 1, 2, b"one-under-2", start_time())
            .await
            .unwrap()
    );
    assert!(
        !store
            .rewrap_tenant_key(&k, 1, 1, 2, b"again", start_time())
            .await
            .unwrap()
    );
    assert_eq!(
        store.tenant_keys(&s).await.unwrap()[0],
        wrapped(f.a, 1, 2, b"one-under-2")
    );
    assert_eq!(store.kek_ids_in_use().await.unwrap(), [1, 2]);
}

/// Tenant keys of B are invisible to, and untouched by, scopes of A.
pub async fn tenant_key_isolation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    store
        .insert_tenant_key(&f.a(Action::SecretWrite), &wrapped(f.a, 1, 1, b"a"))
        .await
        .unwrap();
    store
        .insert_tenant_key(&f.b(Action::SecretWrite), &wrapped(f.b, 1, 1, b"b"))
        .await
        .unwrap();
    assert_eq!(
        store.tenant_keys(&f.a(Action::SecretRead)).await.unwrap(),
        [wrapped(f.a, 1, 1, b"a")]
    );
    assert!(
        !store
            .rewrap_tenant_key(&f.keys(f.a), 1, 1, 2, b"b?", start_time())
            .await
            .unwrap()
            || {
                store.tenant_keys(&f.b(Action::SecretRead)).await.unwrap()
                    == [wrapped(f.b, 1, 1, b"b")]
            }
    );
    assert_eq!(
        store
            .delete_tenant_keys(&f.keys(f.a), start_time())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.tenant_keys(&f.a(Action::SecretRead)).await.unwrap(),
        []
    );
    assert_eq!(
        store.tenant_keys(&f.b(Action::SecretRead)).await.unwrap(),
        [wrapped(f.b, 1, 1, b"b")]
    );
}

/// Workspaces needing a rewrap are listed in id order, paged, and counted by key.
pub async fn rewrap_listing(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let ws = WorkspaceId::new();
        store
            .create_workspace(&f.system_create(ws), "w", Region::Eu, f.clock.now())
            .await
            .unwrap();
        let s = f.keys(ws);
        store
            .insert_tenant_key(&s, &wrapped(ws, 1, 1, b"old"))
            .await
            .unwrap();
        store
            .insert_tenant_key(&s, &wrapped(ws, 2, 1, b"old"))
            .await
            .unwrap();
        ids.push(ws);
    }
    let current = f.keys(f.a);
    store
        .insert_tenant_key(&current, &wrapped(f.a, 1, 2, b"new"))
        .await
        .unwrap();
    ids.sort();
    assert_eq!(store.count_needing_rewrap(2).await.unwrap(), 10);
    assert_eq!(store.count_needing_rewrap(1).await.unwrap(), 1);
    let first = store.workspaces_needing_rewrap(2, None, 3).await.unwrap();
    assert_eq!(first, ids[..3]);
    let rest = store
        .workspaces_needing_rewrap(2, Some(first[2]), 3)
        .await
        .unwrap();
    assert_eq!(rest, ids[3..]);
    assert_eq!(
        store
            .workspaces_needing_rewrap(2, Some(ids[4]), 3)
            .await
            .unwrap(),
        []
    );
}

/// A key check is stored once and never replaced.
pub async fn key_check_stored_once(store: Arc<dyn Store>) {
    assert_eq!(store.key_check(5).await.unwrap(), None);
    assert!(store.put_key_check(5, b"first").await.unwrap());
    assert!(!store.put_key_check(5, b"second").await.unwrap());
    assert_eq!(store.key_check(5).await.unwrap().unwrap(), b"first");
    assert_eq!(store.key_check(6).await.unwrap(), None);
}

fn kek(id: u32, seed: u8) -> Kek {
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(73).wrapping_add(seed))
        .collect();
    Kek::new(id, &key).unwrap()
}

/// Secrets sealed through the vault open where they were sealed and nowhere else.
pub async fn vault_seal_open(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let (w, r) = (f.a(Action::SecretWrite), f.a(Action::SecretRead));
    vault
        .put_secret(store, &w, "lic-1", Purpose::LicenseKey, b"LICENSE-123")
        .await
        .unwrap();
    vault
        .put_secret(store, &w, "lic-2", Purpose::LicenseKey, b"LICENSE-456")
        .await
        .unwrap();
    let stored = store.secret(&r, "lic-1").await.unwrap().unwrap();
    assert!(
        !stored.blob.windows(11).any(|w| w == b"LICENSE-123"),
        "plaintext must not reach the store"
    );
    assert_eq!(
        vault.secret(store, &r, "lic-1").await.unwrap().expose(),
        b"LICENSE-123"
    );
    assert_eq!(
        kind(vault.secret(store, &r, "missing").await),
        ErrorKind::NotFound
    );
    // A blob copied to another row, or into another workspace, does not open there.
    store
        .put_secret(
            &w,
            &StoredSecret {
                name: "lic-2".into(),
                ..stored.clone()
            },
            start_time(),
        )
        .await
        .unwrap();
    assert_eq!(
        kind(vault.secret(store, &r, "lic-2").await),
        ErrorKind::Decrypt
    );
    store
        .put_secret(&f.b(Action::SecretWrite), &stored, start_time())
        .await
        .unwrap();
    assert_eq!(
        kind(vault.secret(store, &f.b(Action::SecretRead), "lic-1").await),
        ErrorKind::Decrypt
    );
    // A context naming another workspace than the scope is refused before any key is touched.
    let ctx = SecretContext::license_key(f.a, "lic-1");
    assert_eq!(
        kind(
            vault
                .open(&f.b(Action::SecretRead), &ctx, &stored.blob)
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(vault.put_secret(store, &r, "x", Purpose::Other, b"x").await),
        ErrorKind::Denied
    );
    assert_eq!(store.tenant_keys(&w).await.unwrap().len(), 1);
}

/// A new tenant key version seals new secrets; old ones still open and report needing rotation.
pub async fn vault_tenant_key_rotation(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let w = f.a(Action::SecretWrite);
    let ctx = SecretContext::api_key(f.a, "key-1");
    let old = vault.seal(&w, &ctx, b"old secret").await.unwrap();
    assert!(!vault.needs_rotation(&w, &old).await.unwrap());
    assert_eq!(kind(vault.rotate_tenant_key(&w).await), ErrorKind::Denied);
    assert_eq!(
        vault
            .rotate_tenant_key(&f.a(Action::KeyManage))
            .await
            .unwrap(),
        2
    );
    assert!(vault.needs_rotation(&w, &old).await.unwrap());
    let new = vault.reseal(&w, &ctx, &old).await.unwrap();
    assert_eq!(crate::crypto::key_ref(&new).unwrap(), 2);
    assert_eq!(
        vault.open(&w, &ctx, &old).await.unwrap().expose(),
        b"old secret"
    );
    assert_eq!(
        vault.open(&w, &ctx, &new).await.unwrap().expose(),
        b"old secret"
    );
}

/// KEK rotation: seal under KEK 1, rotate to KEK 2, rewrap, drop KEK 1; everything still opens.
pub async fn vault_kek_rotation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let mut sealed = Vec::new();
    for (ws, scope) in [
        (f.a, f.a(Action::SecretWrite)),
        (f.b, f.b(Action::SecretWrite)),
    ] {
        vault.rotate_tenant_key(&f.keys(ws)).await.unwrap();
        vault.rotate_tenant_key(&f.keys(ws)).await.unwrap();
        let ctx = SecretContext::api_key(ws, "k");
        sealed.push((
            ws,
            scope.clone(),
            vault
                .seal(&scope, &ctx, ws.to_string().as_bytes())
                .await
                .unwrap(),
        ));
    }
    drop(vault);
    let both = f.vault(KeyRing::new([kek(1, 1), kek(2, 2)]).unwrap()).await;
    let mut seen = Vec::new();
    let report = both
        .rewrap_all(&f.gate, &mut |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!((report.done, report.total), (4, 4));
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.last().unwrap().done, 4);
    assert_eq!(store.kek_ids_in_use().await.unwrap(), [2]);
    assert_eq!(
        both.rewrap_all(&f.gate, &mut |_| {}).await.unwrap().total,
        0,
        "re-running finds nothing"
    );
    drop(both);
    let only_two = f.vault(KeyRing::new([kek(2, 2)]).unwrap()).await;
    for (ws, scope, blob) in sealed {
        let ctx = SecretContext::api_key(ws, "k");
        assert_eq!(
            only_two.open(&scope, &ctx, &blob).await.unwrap().expose(),
            ws.to_string().as_bytes()
        );
    }
}

/// A KEK that does not match the stored key check, or a missing KEK, stops the vault at start.
pub async fn vault_wrong_kek_fails_start(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    vault
        .seal(
            &f.a(Action::SecretWrite),
            &SecretContext::api_key(f.a, "k"),
            b"s",
        )
        .await
        .unwrap();
    drop(vault);
    let keys: Arc<dyn crate::store::KeyStore> = f.store.clone();
    let wrong = Vault::start(
        KeyRing::new([kek(1, 99)]).unwrap(),
        keys.clone(),
        f.clock.clone(),
    )
    .await;
    assert_eq!(kind(wrong), ErrorKind::KeyConfig);
    let missing = Vault::start(
        KeyRing::new([kek(2, 2)]).unwrap(),
        keys.clone(),
        f.clock.clone(),
    )
    .await;
    assert_eq!(kind(missing), ErrorKind::KeyConfig);
    assert!(
        Vault::start(KeyRing::new([kek(1, 1)]).unwrap(), keys, f.clock.clone())
            .await
            .is_ok()
    );
}

/// Deleting a workspace's tenant keys makes its secrets unreadable, and only its secrets.
pub async fn vault_crypto_shredding(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let (ca, cb) = (
        SecretContext::api_key(f.a, "k"),
        SecretContext::api_key(f.b, "k"),
    );
    let blob_a = vault
        .seal(&f.a(Action::SecretWrite), &ca, b"a")
        .await
        .unwrap();
    let blob_b = vault
        .seal(&f.b(Action::SecretWrite), &cb, b"b")
        .await
        .unwrap();
    assert_eq!(
        kind(vault.shred(&f.a(Action::SecretWrite)).await),
        ErrorKind::Denied
    );
    assert_eq!(vault.shred(&f.a(Action::KeyManage)).await.unwrap(), 1);
    assert_eq!(
        kind(vault.open(&f.a(Action::SecretRead), &ca, &blob_a).await),
        ErrorKind::Decrypt
    );
    assert_eq!(
        vault
            .open(&f.b(Action::SecretRead), &cb, &blob_b)
            .await
            .unwrap()
            .expose(),
        b"b"
    );
    // A new key for A after shredding must not open the old blob either.
    vault
        .seal(&f.a(Action::SecretWrite), &ca, b"new")
        .await
        .unwrap();
    assert_eq!(
        kind(vault.open(&f.a(Action::SecretRead), &ca, &blob_a).await),
        ErrorKind::Decrypt
    );
}

// ---------------------------------------------------------------------------------------------
// Ingest

fn day(n: i64) -> time::Date {
    (start_time() + Duration::days(n)).date()
}

async fn add_site(f: &Fixture, ws: WorkspaceId, domain: &str) {
    let admin = if ws == f.a { &f.admin_a } else { &f.admin_b };
    let scope = f
        .gate
        .authorize(admin, ws, Action::WorkspaceUpdate)
        .unwrap();
    f.store
        .add_site(&scope, domain, f.clock.now())
        .await
        .expect("add site");
}

fn ingest_scope(f: &Fixture, ws: WorkspaceId) -> Scope {
    f.gate
        .authorize(
            &Principal::Collector { workspace: ws },
            ws,
            Action::EventIngest,
        )
        .unwrap()
}

fn event(ws: WorkspaceId, id: u128, at: OffsetDateTime) -> Event {
    Event {
        id: EventId(uuid::Uuid::from_u128(id)),
        workspace: ws,
        domain: "example.com".into(),
        name: "pageview".into(),
        hostname: "example.com".into(),
        pathname: format!("/p/{id}?utm_source=x"),
        referrer: Some("https://duckduckgo.com/".into()),
        props: [("plan".to_owned(), "pro".to_owned())]
            .into_iter()
            .collect(),
        revenue: Some(Revenue {
            amount: "19.99".into(),
            currency: "EUR".into(),
        }),
        interactive: id.is_multiple_of(2),
        visitor: VisitorId([id as u8; 16]),
        received_at: at,
    }
}

fn batch_of(f: &Fixture, events: &[Event]) -> EventBatch {
    let mut batch = EventBatch::new(Region::Eu);
    for e in events {
        batch
            .push(Region::Eu, ingest_scope(f, e.workspace), e.clone())
            .unwrap();
    }
    batch
}

/// Domains are normalised and unique across workspaces; routes carry region and blocked ranges.
pub async fn site_rules(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let site = store
        .add_site(
            &f.a(Action::WorkspaceUpdate),
            "WWW.Example.COM",
            f.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!((site.domain.as_str(), site.workspace), ("example.com", f.a));
    assert_eq!(
        kind(
            store
                .add_site(&f.b(Action::WorkspaceUpdate), "example.com", f.clock.now())
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(
            store
                .add_site(&f.a(Action::WorkspaceRead), "other.com", f.clock.now())
                .await
        ),
        ErrorKind::Denied
    );
    for bad in [
        "",
        "http://x.com",
        "x.com/path",
        "a b.com",
        &format!("{}.com", "a".repeat(64)),
    ] {
        assert_eq!(
            kind(
                store
                    .add_site(&f.a(Action::WorkspaceUpdate), bad, f.clock.now())
                    .await
            ),
            ErrorKind::Invalid,
            "{bad:?}"
        );
    }
    store
        .add_site(&f.b(Action::WorkspaceUpdate), "b.example", f.clock.now())
        .await
        .unwrap();
    assert_eq!(
        store.sites(&f.a(Action::WorkspaceRead)).await.unwrap(),
        [site]
    );
    let blocked: Vec<ipnet::IpNet> = vec![
        "198.51.100.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    store
        .set_blocked_ips(&f.a(Action::WorkspaceUpdate), &blocked, start_time())
        .await
        .unwrap();
    let route = store.site_route("example.com").await.unwrap().unwrap();
    assert_eq!(
        (route.workspace, route.region, route.blocked_ips),
        (f.a, Region::Eu, blocked)
    );
    assert_eq!(
        store
            .site_route("b.example")
            .await
            .unwrap()
            .unwrap()
            .blocked_ips,
        []
    );
    assert_eq!(store.site_route("unknown.example").await.unwrap(), None);
}

/// Salts are per workspace and day, inserted once, destroyed with a record.
pub async fn salt_rules(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let (sa, sb) = (ingest_scope(&f, f.a), ingest_scope(&f, f.b));
    for n in 0..4 {
        store
            .insert_salt(
                &sa,
                &StoredSalt {
                    day: day(n),
                    blob: vec![n as u8; 8],
                },
            )
            .await
            .unwrap();
    }
    store
        .insert_salt(
            &sb,
            &StoredSalt {
                day: day(0),
                blob: b"b".to_vec(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        kind(
            store
                .insert_salt(
                    &sa,
                    &StoredSalt {
                        day: day(1),
                        blob: b"again".to_vec()
                    }
                )
                .await
        ),
        ErrorKind::Conflict
    );
    let got = store.salts(&sa, &[day(1), day(9), day(3)]).await.unwrap();
    let days: Vec<_> = got.iter().map(|s| (s.day, s.blob.clone())).collect();
    assert!(
        days.contains(&(day(1), vec![1; 8]))
            && days.contains(&(day(3), vec![3; 8]))
            && days.len() == 2
    );
    assert_eq!(store.salts(&sb, &[day(1)]).await.unwrap(), []);
    let mut with_old = store
        .workspaces_with_salts_before(day(2), None, 10)
        .await
        .unwrap();
    with_old.sort();
    let mut both = vec![f.a, f.b];
    both.sort();
    assert_eq!(with_old, both);
    assert_eq!(
        store
            .workspaces_with_salts_before(day(0), None, 10)
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        kind(store.destroy_salts_before(&sa, day(2), f.clock.now()).await),
        ErrorKind::Denied
    );
    let destroyed = store
        .destroy_salts_before(&f.keys(f.a), day(2), f.clock.now())
        .await
        .unwrap();
    assert_eq!(destroyed, [day(0), day(1)]);
    assert_eq!(store.salts(&sa, &[day(0), day(1)]).await.unwrap(), []);
    assert_eq!(
        store.salts(&sb, &[day(0)]).await.unwrap().len(),
        1,
        "B's salt untouched"
    );
    let records = store
        .salt_destructions(&f.a(Action::AuditRead))
        .await
        .unwrap();
    assert_eq!(
        records.iter().map(|r| r.day).collect::<Vec<_>>(),
        [day(0), day(1)]
    );
    assert!(records.iter().all(|r| r.destroyed_at == f.clock.now()));
    assert_eq!(
        store
            .salt_destructions(&f.b(Action::AuditRead))
            .await
            .unwrap(),
        []
    );
}

/// An event id is stored once per workspace, within a batch and across batches; reads are
/// ordered by time then id.
pub async fn event_idempotency_and_order(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let t = f.clock.now();
    let first = [
        event(f.a, 3, t + Duration::seconds(2)),
        event(f.a, 1, t),
        event(f.a, 3, t),
        event(f.a, 2, t),
    ];
    let verdicts = store.append_events(&batch_of(&f, &first)).await.unwrap();
    assert_eq!(
        verdicts,
        [
            Verdict::Accepted,
            Verdict::Accepted,
            Verdict::Duplicate,
            Verdict::Accepted
        ]
    );
    let retry = [event(f.a, 1, t), event(f.a, 4, t + Duration::seconds(1))];
    assert_eq!(
        store.append_events(&batch_of(&f, &retry)).await.unwrap(),
        [Verdict::Duplicate, Verdict::Accepted]
    );
    let read = f.a(Action::EventRead);
    let events = store
        .events(&read, t, t + Duration::hours(1), 100)
        .await
        .unwrap();
    let ids: Vec<u128> = events.iter().map(|e| e.id.0.as_u128()).collect();
    assert_eq!(ids, [1, 2, 4, 3]);
    assert_eq!(events[0], event(f.a, 1, t), "every field round-trips");
    assert_eq!(
        store
            .events(&read, t, t + Duration::hours(1), 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .events(
                &read,
                t + Duration::seconds(1),
                t + Duration::seconds(2),
                100
            )
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .has_event(&read, EventId(uuid::Uuid::from_u128(4)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .has_event(&read, EventId(uuid::Uuid::from_u128(5)))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .append_events(&EventBatch::new(Region::Eu))
            .await
            .unwrap(),
        []
    );
}

/// The same event id in two workspaces is two events; no read or count crosses workspaces.
pub async fn event_isolation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let t = f.clock.now();
    let mixed = [event(f.a, 1, t), event(f.b, 1, t), event(f.b, 2, t)];
    assert_eq!(
        store.append_events(&batch_of(&f, &mixed)).await.unwrap(),
        [Verdict::Accepted; 3]
    );
    let mut drops = EventBatch::new(Region::Eu);
    drops
        .push_drop(
            Region::Eu,
            ingest_scope(&f, f.b),
            t.date(),
            RejectReason::Bot,
            3,
        )
        .unwrap();
    store.append_events(&drops).await.unwrap();
    let in_a = store
        .events(&f.a(Action::EventRead), t, t + Duration::hours(1), 100)
        .await
        .unwrap();
    assert_eq!(in_a, [event(f.a, 1, t)]);
    assert!(
        !store
            .has_event(&f.a(Action::EventRead), EventId(uuid::Uuid::from_u128(2)))
            .await
            .unwrap()
    );
    assert_eq!(
        store.drop_counts(&f.a(Action::EventRead)).await.unwrap(),
        []
    );
    assert_eq!(
        store.drop_counts(&f.b(Action::EventRead)).await.unwrap(),
        [DropCount {
            day: t.date(),
            reason: RejectReason::Bot,
            count: 3
        }]
    );
    let gone = store
        .delete_events_before(
            &f.gate
                .authorize(
                    &Principal::System(SystemTask::Retention),
                    f.a,
                    Action::RetentionEnforce,
                )
                .unwrap(),
            t + Duration::hours(1),
            1000,
            t,
        )
        .await
        .map(|(deleted, _)| deleted)
        .unwrap();
    assert_eq!(gone, 1);
    assert_eq!(
        store
            .events(&f.b(Action::EventRead), t, t + Duration::hours(1), 100)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A batch for another region, or under a scope that is not the event's ingest scope, writes
/// nothing.
pub async fn event_batch_region_and_scope(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let t = f.clock.now();
    let mut batch = EventBatch::new(Region::Eu);
    assert_eq!(
        kind(batch.push(Region::Us, ingest_scope(&f, f.a), event(f.a, 1, t))),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(batch.push(Region::Eu, ingest_scope(&f, f.b), event(f.a, 1, t))),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(batch.push(Region::Eu, f.a(Action::EventRead), event(f.a, 1, t))),
        ErrorKind::Denied
    );
    let other = if store.region() == Region::Eu {
        Region::Us
    } else {
        Region::Eu
    };
    let mut foreign = EventBatch::new(other);
    foreign
        .push(other, ingest_scope(&f, f.a), event(f.a, 1, t))
        .unwrap();
    assert_eq!(
        kind(store.append_events(&foreign).await),
        ErrorKind::Invalid
    );
    assert!(
        !store
            .has_event(&f.a(Action::EventRead), EventId(uuid::Uuid::from_u128(1)))
            .await
            .unwrap()
    );
    assert_eq!(
        kind(store.events(&ingest_scope(&f, f.a), t, t, 1).await),
        ErrorKind::Denied
    );
}

/// Retention deletes only older events of one workspace, oldest first and at most a batch at a
/// time, needs the retention action, and commits each batch with the audit record counting it.
pub async fn retention_delete(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let t = f.clock.now();
    let events: Vec<Event> = (0..10)
        .map(|i| event(f.a, i, t + Duration::days(i as i64)))
        .collect();
    store.append_events(&batch_of(&f, &events)).await.unwrap();
    store
        .append_events(&batch_of(&f, &[event(f.b, 0, t)]))
        .await
        .unwrap();
    let cutoff = t + Duration::days(5);
    assert_eq!(
        kind(
            store
                .delete_events_before(&f.a(Action::EventRead), cutoff, 10, t)
                .await
        ),
        ErrorKind::Denied
    );
    let retention = |ws| {
        f.gate
            .authorize(
                &Principal::System(SystemTask::Retention),
                ws,
                Action::RetentionEnforce,
            )
            .unwrap()
    };
    assert_eq!(
        kind(
            store
                .delete_events_before(&retention(f.a), cutoff, 0, t)
                .await
        ),
        ErrorKind::Invalid
    );
    let mut counted = Vec::new();
    loop {
        let (deleted, record) = store
            .delete_events_before(&retention(f.a), cutoff, 3, t)
            .await
            .unwrap();
        assert!(deleted <= 3, "a batch is bounded");
        let Some(record) = record else {
            assert_eq!(deleted, 0, "no record only for nothing");
            break;
        };
        assert_eq!(
            record.action,
            crate::audit::AuditAction::RetentionEventsDeleted
        );
        assert_eq!(record.after.as_ref().unwrap()["deleted"], deleted);
        counted.push(deleted);
    }
    assert_eq!(counted, [3, 2]);
    let left = store
        .events(&f.a(Action::EventRead), t, t + Duration::days(30), 100)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|e| e.id.0.as_u128()).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9]
    );
    assert_eq!(
        store
            .events(&f.b(Action::EventRead), t, t + Duration::days(1), 100)
            .await
            .unwrap()
            .len(),
        1
    );
    // The records are in A's log, chained after each other; B's log has none.
    let deletions = |scope| async move {
        store
            .audit_records(&scope, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.action == crate::audit::AuditAction::RetentionEventsDeleted)
            .collect::<Vec<_>>()
    };
    let log = deletions(f.a(Action::AuditRead)).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].prev_hash, log[0].hash);
    assert!(deletions(f.b(Action::AuditRead)).await.is_empty());
}

/// The collector over this store: accepted once, duplicate on retry, filtered with a reason and a
/// count, unknown domains and other regions refused; no IP or user agent reaches the store.
pub async fn collector_end_to_end(store: Arc<dyn Store>) {
    use crate::ingest::batcher::{self, BatcherConfig};
    use crate::ingest::bot::BotFilter;
    use crate::ingest::privacy::Salts;
    use crate::ingest::{
        ClientInfo, CollectError, Collector, CollectorConfig, Outcome, event::parse,
    };

    let f = Fixture::new(store.clone()).await;
    add_site(&f, f.a, "example.com").await;
    let us = WorkspaceId::new();
    let us_scope = f.system_create(us);
    f.store
        .create_workspace(&us_scope, "US", Region::Us, f.clock.now())
        .await
        .unwrap();
    let us_admin = Principal::member(UserId::new(), [(us, Role::Admin)]);
    f.store
        .add_site(
            &f.gate
                .authorize(&us_admin, us, Action::WorkspaceUpdate)
                .unwrap(),
            "us.example",
            f.clock.now(),
        )
        .await
        .unwrap();
    f.store
        .set_blocked_ips(
            &f.a(Action::WorkspaceUpdate),
            &["198.51.100.0/24".parse().unwrap()],
            start_time(),
        )
        .await
        .unwrap();
    let vault = Arc::new(f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await);
    let salts = Arc::new(Salts::new(vault, f.store.clone(), f.clock.clone()));
    let (queue, batcher) = batcher::channel(f.store.clone(), BatcherConfig::default());
    let collector = Collector::new(
        CollectorConfig::default(),
        f.store.clone(),
        salts,
        f.gate.clone(),
        BotFilter::new(),
        queue,
        f.clock.clone(),
    );
    const IP: &str = "203.0.113.77";
    const UA: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 LeadmapsTestAgent/1.0";
    let client = ClientInfo {
        ip: IP.parse().unwrap(),
        user_agent: UA,
    };
    let id = uuid::Uuid::from_u128(42);
    let body = serde_json::json!({"n": "pageview", "u": "https://example.com/a?email=x@y.z&utm_source=nl", "r": "https://ddg.gg/?q=1", "id": id});
    let run = async {
        let one = collector
            .collect(vec![parse(&body, true)], client)
            .await
            .unwrap();
        assert_eq!(one, [Outcome::Accepted(EventId(id))]);
        let again = collector
            .collect(vec![parse(&body, true)], client)
            .await
            .unwrap();
        assert_eq!(
            again,
            [Outcome::Duplicate(EventId(id))],
            "a retried event is stored once"
        );
        let mixed = collector
            .collect(
                vec![
                    parse(
                        &serde_json::json!({"n": "x", "u": "https://unknown.example/"}),
                        true,
                    ),
                    parse(&serde_json::json!({"n": "x"}), true),
                    parse(
                        &serde_json::json!({"n": "x", "u": "https://us.example/"}),
                        true,
                    ),
                    parse(
                        &serde_json::json!({"n": "signup", "u": "https://example.com/"}),
                        true,
                    ),
                ],
                client,
            )
            .await
            .unwrap();
        assert_eq!(mixed[0], Outcome::Rejected(RejectReason::DomainUnknown));
        assert_eq!(mixed[1], Outcome::Rejected(RejectReason::UrlMissing));
        assert_eq!(mixed[2], Outcome::Rejected(RejectReason::WrongRegion));
        assert!(matches!(mixed[3], Outcome::Accepted(_)));
        let only_us = collector
            .collect(
                vec![parse(
                    &serde_json::json!({"n": "x", "u": "https://us.example/"}),
                    true,
                )],
                client,
            )
            .await;
        assert_eq!(only_us, Err(CollectError::WrongRegion));
        let bot = ClientInfo {
            ip: client.ip,
            user_agent: "curl/8.5.0",
        };
        let page = || {
            parse(
                &serde_json::json!({"n": "pageview", "u": "https://example.com/"}),
                true,
            )
        };
        assert_eq!(
            collector.collect(vec![page()], bot).await.unwrap(),
            [Outcome::Rejected(RejectReason::Bot)]
        );
        let blocked = ClientInfo {
            ip: "198.51.100.9".parse().unwrap(),
            user_agent: UA,
        };
        assert_eq!(
            collector.collect(vec![page()], blocked).await.unwrap(),
            [Outcome::Rejected(RejectReason::BlockedIp)]
        );
        drop(collector);
    };
    tokio::join!(batcher.run(), run);
    let read = f.a(Action::EventRead);
    let events = f
        .store
        .events(
            &read,
            f.clock.now() - Duration::hours(1),
            f.clock.now() + Duration::hours(1),
            100,
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events
            .iter()
            .find(|e| e.id == EventId(id))
            .unwrap()
            .pathname,
        "/a?utm_source=nl"
    );
    assert_eq!(
        events[0].visitor, events[1].visitor,
        "same client, same day, same visitor"
    );
    let dump = format!("{events:?}");
    assert!(
        !dump.contains(IP) && !dump.contains("LeadmapsTestAgent"),
        "no IP or user agent in stored events"
    );
    let mut drops = f.store.drop_counts(&read).await.unwrap();
    drops.sort_by_key(|d| d.reason);
    assert_eq!(
        drops
            .iter()
            .map(|d| (d.reason, d.count))
            .collect::<Vec<_>>(),
        [(RejectReason::Bot, 1), (RejectReason::BlockedIp, 1)]
    );
}

/// Today's salt is made once and shared; yesterday's is kept; salts are destroyed after 48 hours
/// with a record; visitor ids change with the day.
pub async fn salts_rotate_and_are_destroyed(store: Arc<dyn Store>) {
    use crate::ingest::privacy::{Salts, visitor_id};
    let f = Fixture::new(store.clone()).await;
    let vault = Arc::new(f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await);
    let one = Salts::new(vault.clone(), f.store.clone(), f.clock.clone());
    let two = Salts::new(vault, f.store.clone(), f.clock.clone());
    let scope = ingest_scope(&f, f.a);
    let first = one.current(&scope).await.unwrap();
    assert!(first.yesterday.is_none());
    assert_eq!(
        *two.current(&scope).await.unwrap().today,
        *first.today,
        "instances share the salt"
    );
    let stored = f
        .store
        .salts(&scope, &[f.clock.now().date()])
        .await
        .unwrap();
    assert!(
        !stored[0].blob.windows(32).any(|w| w == &first.today[..]),
        "salts are sealed at rest"
    );
    let ip = "203.0.113.1".parse().unwrap();
    let monday = visitor_id(&first.today, f.a, ip, "UA");
    f.clock.advance(Duration::days(1));
    let next = one.current(&scope).await.unwrap();
    assert_eq!(*next.yesterday.unwrap(), *first.today);
    assert_ne!(
        visitor_id(&next.today, f.a, ip, "UA"),
        monday,
        "visitor ids do not link across days"
    );
    assert_eq!(
        one.destroy_expired(&f.gate).await.unwrap(),
        0,
        "yesterday's salt is kept"
    );
    f.clock.advance(Duration::days(1));
    assert_eq!(
        one.destroy_expired(&f.gate).await.unwrap(),
        1,
        "48 hours after its day began"
    );
    let records = f
        .store
        .salt_destructions(&f.a(Action::AuditRead))
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].day, start_time().date());
    assert!(
        f.store
            .salts(&scope, &[start_time().date()])
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication stores

checks!(
    /// Every authentication-store check, by name.
    AUTH_CHECKS: dyn crate::auth::AuthStore = [
        totp_claims_are_atomic,
        totp_failures_lock,
        links_are_taken_once,
        sessions_round_trip_and_revoke,
        step_ups_are_taken_once,
        totp_confirmation_is_stored,
        challenge_failures_count_per_session,
        recovery_codes_are_used_once,
    ]
);

/// Runs every authentication-store check, each on a fresh store.
pub async fn run_auth<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn crate::auth::AuthStore>>,
{
    run_checks(AUTH_CHECKS, fresh).await;
}

fn factor(subject: crate::auth::totp::Subject) -> crate::auth::totp::TotpFactor {
    crate::auth::totp::TotpFactor {
        subject,
        sealed_seed: vec![7; 77],
        last_step: None,
        failures: 0,
        locked_until: None,
        confirmed: true,
    }
}

/// Of 50 parallel claims of one step exactly one wins; lower or equal steps never win later.
pub async fn totp_claims_are_atomic(store: Arc<dyn crate::auth::AuthStore>) {
    use crate::auth::totp::Subject;
    let (user, other) = (Subject::User(UserId::new()), Subject::User(UserId::new()));
    store.put_totp(&factor(user)).await.unwrap();
    store.put_totp(&factor(other)).await.unwrap();
    let claims = (0..50).map(|_| store.claim_totp_step(user, 1000));
    let won = futures_join_all(claims)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1, "exactly one claim of a step wins");
    assert!(!store.claim_totp_step(user, 999).await.unwrap());
    assert!(!store.claim_totp_step(user, 1000).await.unwrap());
    assert!(store.claim_totp_step(user, 1001).await.unwrap());
    let read = store.totp(user).await.unwrap().unwrap();
    assert_eq!((read.last_step, read.sealed_seed.len()), (Some(1001), 77));
    assert_eq!(
        store.totp(other).await.unwrap().unwrap().last_step,
        None,
        "other subjects untouched"
    );
    assert_eq!(
        store.totp(Subject::User(UserId::new())).await.unwrap(),
        None
    );
}

/// Failures count up and lock at the threshold; a won claim resets them.
pub async fn totp_failures_lock(store: Arc<dyn crate::auth::AuthStore>) {
    use crate::auth::totp::Subject;
    let user = Subject::Staff(crate::tenancy::StaffId::new());
    store.put_totp(&factor(user)).await.unwrap();
    let now = start_time();
    for n in 1..=3 {
        assert_eq!(
            store
                .record_totp_failure(user, now, 3, Duration::minutes(15))
                .await
                .unwrap(),
            n
        );
    }
    let locked = store.totp(user).await.unwrap().unwrap();
    assert_eq!(
        (locked.failures, locked.locked_until),
        (3, Some(now + Duration::minutes(15)))
    );
    assert!(store.claim_totp_step(user, 5).await.unwrap());
    let reset = store.totp(user).await.unwrap().unwrap();
    assert_eq!((reset.failures, reset.locked_until), (0, None));
}

fn link(selector: &str, email: &str, at: OffsetDateTime) -> crate::auth::session::MagicLink {
    crate::auth::session::MagicLink {
        selector: selector.into(),
        digest: crate::auth::tokens::TokenDigest {
            key_id: 3,
            mac: [9; 32],
        },
        realm: crate::auth::session::Realm::Customer,
        email: crate::mail::Address::parse(email).unwrap(),
        created_at: at,
        expires_at: at + Duration::minutes(10),
    }
}

/// A link is read without being consumed, taken at most once, never after expiry; sends are
/// counted per address.
pub async fn links_are_taken_once(store: Arc<dyn crate::auth::AuthStore>) {
    let t = start_time();
    store
        .insert_link(&link("sel-a", "a@example.com", t))
        .await
        .unwrap();
    store
        .insert_link(&link("sel-b", "a@example.com", t + Duration::seconds(90)))
        .await
        .unwrap();
    store
        .insert_link(&link("sel-c", "c@example.com", t))
        .await
        .unwrap();
    assert_eq!(
        kind(store.insert_link(&link("sel-a", "x@example.com", t)).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        store.link("sel-a").await.unwrap().unwrap(),
        link("sel-a", "a@example.com", t)
    );
    let takes = (0..20).map(|_| store.take_link("sel-a", t + Duration::minutes(1)));
    let taken = futures_join_all(takes)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(taken, 1, "a link is taken once");
    assert_eq!(store.link("sel-a").await.unwrap(), None);
    assert_eq!(
        store
            .take_link("sel-c", t + Duration::minutes(10))
            .await
            .unwrap(),
        None,
        "expired"
    );
    let email = crate::mail::Address::parse("a@example.com").unwrap();
    assert_eq!(
        store
            .links_sent(&email, t - Duration::hours(1))
            .await
            .unwrap(),
        (1, Some(t + Duration::seconds(90)))
    );
    assert_eq!(
        store
            .links_sent(&email, t + Duration::hours(1))
            .await
            .unwrap(),
        (0, None)
    );
}

/// Sessions round-trip, touch only moves forward, and revocation is per session or per subject.
pub async fn sessions_round_trip_and_revoke(store: Arc<dyn crate::auth::AuthStore>) {
    use crate::auth::session::SessionRecord;
    use crate::auth::totp::Subject;
    let t = start_time();
    let (alice, bob) = (Subject::User(UserId::new()), Subject::User(UserId::new()));
    let session = |selector: &str, subject| SessionRecord {
        selector: selector.into(),
        digest: crate::auth::tokens::TokenDigest {
            key_id: 1,
            mac: [4; 32],
        },
        subject,
        second_factor: true,
        created_at: t,
        last_seen_at: t,
    };
    for (selector, subject) in [("s1", alice), ("s2", alice), ("s3", bob)] {
        store
            .insert_session(&session(selector, subject))
            .await
            .unwrap();
    }
    assert_eq!(
        kind(store.insert_session(&session("s1", bob)).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        store.session("s1").await.unwrap().unwrap(),
        session("s1", alice)
    );
    store
        .touch_session("s1", t + Duration::minutes(5))
        .await
        .unwrap();
    store
        .touch_session("s1", t + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        store.session("s1").await.unwrap().unwrap().last_seen_at,
        t + Duration::minutes(5)
    );
    assert!(store.delete_session("s1").await.unwrap());
    assert!(!store.delete_session("s1").await.unwrap());
    assert_eq!(store.delete_sessions(alice).await.unwrap(), 1);
    assert_eq!(store.session("s2").await.unwrap(), None);
    assert!(store.session("s3").await.unwrap().is_some());
}

/// A factor's confirmation is stored with it and survives claims and failures.
pub async fn totp_confirmation_is_stored(store: Arc<dyn crate::auth::AuthStore>) {
    use crate::auth::totp::{Subject, TotpFactor};
    let user = Subject::User(UserId::new());
    let pending = TotpFactor {
        confirmed: false,
        ..factor(user)
    };
    store.put_totp(&pending).await.unwrap();
    assert_eq!(store.totp(user).await.unwrap(), Some(pending.clone()));
    assert!(store.claim_totp_step(user, 5).await.unwrap());
    let confirmed = TotpFactor {
        confirmed: true,
        last_step: Some(5),
        ..pending
    };
    store.put_totp(&confirmed).await.unwrap();
    store
        .record_totp_failure(user, start_time(), 10, Duration::minutes(15))
        .await
        .unwrap();
    let read = store.totp(user).await.unwrap().unwrap();
    assert!(read.confirmed, "confirmation kept");
    assert_eq!((read.last_step, read.failures), (Some(5), 1));
}

/// Wrong second-factor tries are counted per session, atomically; unknown sessions are not
/// found; a deleted session's count does not carry over to a new one.
pub async fn challenge_failures_count_per_session(store: Arc<dyn crate::auth::AuthStore>) {
    use crate::auth::session::SessionRecord;
    use crate::auth::totp::Subject;
    let t = start_time();
    let session = |selector: &str| SessionRecord {
        selector: selector.into(),
        digest: crate::auth::tokens::TokenDigest {
            key_id: 1,
            mac: [9; 32],
        },
        subject: Subject::User(UserId::new()),
        second_factor: false,
        created_at: t,
        last_seen_at: t,
    };
    store.insert_session(&session("c1")).await.unwrap();
    store.insert_session(&session("c2")).await.unwrap();
    let tries = (0..20).map(|_| store.record_challenge_failure("c1"));
    let mut counts: Vec<u32> = futures_join_all(tries)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<_>>(), "atomic increments");
    assert_eq!(store.record_challenge_failure("c2").await.unwrap(), 1);
    assert_eq!(
        kind(store.record_challenge_failure("nobody").await),
        ErrorKind::NotFound
    );
    assert!(store.delete_session("c1").await.unwrap());
    store.insert_session(&session("c1")).await.unwrap();
    assert_eq!(store.record_challenge_failure("c1").await.unwrap(), 1);
}

/// Recovery codes: a set replaces the previous one; each slot is used once, also under parallel
/// attempts; subjects are kept apart.
pub async fn recovery_codes_are_used_once(store: Arc<dyn crate::auth::AuthStore>) {
    use crate::auth::tokens::recovery::RecoveryHash;
    use crate::auth::totp::Subject;
    let (alice, bob) = (
        Subject::User(UserId::new()),
        Subject::Staff(crate::tenancy::StaffId::new()),
    );
    let set = |seed: u8| -> Vec<RecoveryHash> {
        (0..10u8)
            .map(|i| RecoveryHash {
                salt: [seed ^ i; 16],
                hash: [i.wrapping_add(seed); 32],
            })
            .collect()
    };
    assert_eq!(store.recovery_codes(alice).await.unwrap(), []);
    store.put_recovery_codes(alice, &set(1)).await.unwrap();
    store.put_recovery_codes(bob, &set(2)).await.unwrap();
    let stored = store.recovery_codes(alice).await.unwrap();
    assert_eq!(stored.len(), 10);
    for (slot, hash) in &stored {
        assert_eq!(hash, &set(1)[*slot as usize], "slot {slot} holds its hash");
    }
    let attempts = (0..20).map(|_| store.use_recovery_code(alice, 3));
    let won = futures_join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1, "a code is used once");
    assert!(!store.use_recovery_code(alice, 99).await.unwrap());
    let left: Vec<u32> = store
        .recovery_codes(alice)
        .await
        .unwrap()
        .into_iter()
        .map(|(slot, _)| slot)
        .collect();
    assert_eq!(left, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        store.recovery_codes(bob).await.unwrap().len(),
        10,
        "bob untouched"
    );
    store.put_recovery_codes(alice, &set(3)).await.unwrap();
    let replaced = store.recovery_codes(alice).await.unwrap();
    assert_eq!(replaced.len(), 10, "a new set replaces the old, all unused");
    assert_eq!(replaced[3].1, set(3)[3]);
}

/// A step-up grant is taken once, only for its staff member and action, only before it expires.
pub async fn step_ups_are_taken_once(store: Arc<dyn crate::auth::AuthStore>) {
    use crate::auth::staff::SensitiveAction::{CloseIncident, RotateKeys};
    let (staff, other) = (
        crate::tenancy::StaffId::new(),
        crate::tenancy::StaffId::new(),
    );
    let t = start_time();
    store
        .grant_step_up(staff, RotateKeys, t + Duration::minutes(10))
        .await
        .unwrap();
    assert!(!store.take_step_up(staff, CloseIncident, t).await.unwrap());
    assert!(!store.take_step_up(other, RotateKeys, t).await.unwrap());
    assert!(
        !store
            .take_step_up(staff, RotateKeys, t + Duration::minutes(10))
            .await
            .unwrap(),
        "expired"
    );
    let takes = (0..20).map(|_| store.take_step_up(staff, RotateKeys, t));
    let taken = futures_join_all(takes)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(taken, 1, "one grant, one use");
}

/// Polls futures concurrently on the current task (no runtime needed).
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (future, slot) in pending.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *slot = Some(value),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("all ready")).collect()
}

// ---------------------------------------------------------------------------------------------
// Identity stores (users, memberships, API keys)

checks!(
    /// Every identity-store check, by name.
    IDENTITY_CHECKS: dyn Store = [
        users_and_memberships,
        api_keys_stay_in_their_workspace,
        staff_are_their_own_identities,
    ]
);

/// Runs every identity-store check, each on a fresh store. The checks create the workspaces
/// they use: memberships and API keys are recorded in their workspace's audit log.
pub async fn run_identity<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    run_checks(IDENTITY_CHECKS, fresh).await;
}

/// Two new workspaces in `store`, made by the provisioning task.
async fn two_workspaces(store: &dyn Store, gate: &Gate) -> (WorkspaceId, WorkspaceId) {
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    for ws in [a, b] {
        let create = gate
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::WorkspaceCreate,
            )
            .unwrap();
        store
            .create_workspace(&create, "w", Region::Eu, start_time())
            .await
            .unwrap();
    }
    (a, b)
}

fn manage(gate: &Gate, ws: WorkspaceId) -> Scope {
    gate.authorize(
        &Principal::System(SystemTask::Provisioning),
        ws,
        Action::MemberManage,
    )
    .unwrap()
}

/// Addresses are unique; memberships are per workspace and need the member-management action.
pub async fn users_and_memberships(store: Arc<dyn Store>) {
    use crate::auth::users::User;
    let gate = Gate::new(Arc::new(ManualClock::new(start_time())));
    let alice = User {
        id: UserId::new(),
        email: crate::mail::Address::parse("alice@example.com").unwrap(),
        created_at: start_time(),
    };
    store.create_user(&alice).await.unwrap();
    let twin = User {
        id: UserId::new(),
        ..alice.clone()
    };
    assert_eq!(kind(store.create_user(&twin).await), ErrorKind::Conflict);
    assert_eq!(
        store.user_by_email(&alice.email).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user(UserId::new()).await.unwrap(), None);
    assert_eq!(
        store
            .user_by_email(&crate::mail::Address::parse("bob@example.com").unwrap())
            .await
            .unwrap(),
        None
    );
    let (a, b) = two_workspaces(store.as_ref(), &gate).await;
    store
        .set_membership(&manage(&gate, a), alice.id, Role::Viewer, start_time())
        .await
        .unwrap();
    store
        .set_membership(&manage(&gate, b), alice.id, Role::Admin, start_time())
        .await
        .unwrap();
    store
        .set_membership(&manage(&gate, a), alice.id, Role::Editor, start_time())
        .await
        .unwrap();
    let mut got: Vec<_> = store
        .memberships(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.workspace, m.role, m.require_totp))
        .collect();
    got.sort();
    let mut want = vec![(a, Role::Editor, false), (b, Role::Admin, false)];
    want.sort();
    assert_eq!(got, want);
    let update = gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            a,
            Action::WorkspaceUpdate,
        )
        .unwrap();
    assert_eq!(
        kind(
            store
                .set_membership(&update, alice.id, Role::Admin, start_time())
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .set_membership(&manage(&gate, a), UserId::new(), Role::Admin, start_time())
                .await
        ),
        ErrorKind::NotFound
    );
    assert_eq!(store.memberships(UserId::new()).await.unwrap(), []);
}

/// Staff members are found by address; ids and addresses are unique among staff; a customer
/// user with the same address is a different identity.
pub async fn staff_are_their_own_identities(store: Arc<dyn Store>) {
    use crate::auth::staff::StaffMember;
    use crate::auth::users::User;
    let email = crate::mail::Address::parse("ops@example.com").unwrap();
    let staff = StaffMember {
        id: crate::tenancy::StaffId::new(),
        email: email.clone(),
        created_at: start_time(),
    };
    assert_eq!(store.staff_by_email(&email).await.unwrap(), None);
    store.create_staff(&staff).await.unwrap();
    assert_eq!(
        store.staff_by_email(&email).await.unwrap(),
        Some(staff.clone())
    );
    assert_eq!(store.staff(staff.id).await.unwrap(), Some(staff.clone()));
    assert_eq!(
        store.staff(crate::tenancy::StaffId::new()).await.unwrap(),
        None
    );
    let twin = StaffMember {
        id: crate::tenancy::StaffId::new(),
        ..staff.clone()
    };
    assert_eq!(kind(store.create_staff(&twin).await), ErrorKind::Conflict);
    let same_id = StaffMember {
        email: crate::mail::Address::parse("other@example.com").unwrap(),
        ..staff.clone()
    };
    assert_eq!(
        kind(store.create_staff(&same_id).await),
        ErrorKind::Conflict
    );
    // The same address as a customer is a separate identity in a separate realm.
    assert_eq!(store.user_by_email(&email).await.unwrap(), None);
    store
        .create_user(&User {
            id: UserId::new(),
            email: email.clone(),
            created_at: start_time(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.staff_by_email(&email).await.unwrap(),
        Some(staff.clone())
    );
    let later = StaffMember {
        id: crate::tenancy::StaffId::new(),
        email: crate::mail::Address::parse("night-shift@example.com").unwrap(),
        created_at: start_time() + time::Duration::seconds(1),
    };
    store.create_staff(&later).await.unwrap();
    assert_eq!(store.list_staff().await.unwrap(), [staff, later]);
}

/// Keys are listed and revoked only within their workspace; lookups for authentication find
/// them by id; use times only move forward.
pub async fn api_keys_stay_in_their_workspace(store: Arc<dyn Store>) {
    use crate::auth::keys::ApiKeyRecord;
    let gate = Gate::new(Arc::new(ManualClock::new(start_time())));
    let (a, b) = two_workspaces(store.as_ref(), &gate).await;
    let record = |ws, name: &str| ApiKeyRecord {
        id: crate::tenancy::ApiKeyId::new(),
        workspace: ws,
        name: name.into(),
        actions: vec![Action::EventRead, Action::WorkspaceRead],
        digest: crate::auth::tokens::TokenDigest {
            key_id: 2,
            mac: [5; 32],
        },
        sealed: vec![1; 90],
        created_at: start_time(),
        last_used_at: None,
        revoked_at: None,
    };
    let (ka, kb) = (record(a, "a-key"), record(b, "b-key"));
    store.insert_api_key(&manage(&gate, a), &ka).await.unwrap();
    store.insert_api_key(&manage(&gate, b), &kb).await.unwrap();
    assert_eq!(
        kind(store.insert_api_key(&manage(&gate, a), &kb).await),
        ErrorKind::Denied,
        "a key of B under A's scope"
    );
    let read = gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            a,
            Action::WorkspaceUpdate,
        )
        .unwrap();
    assert_eq!(kind(store.api_keys(&read).await), ErrorKind::Denied);
    assert_eq!(
        store.api_keys(&manage(&gate, a)).await.unwrap(),
        std::slice::from_ref(&ka)
    );
    assert_eq!(
        store.api_key_for_auth(kb.id).await.unwrap(),
        Some(kb.clone())
    );
    assert!(
        !store
            .revoke_api_key(&manage(&gate, a), kb.id, start_time())
            .await
            .unwrap(),
        "A cannot revoke B's key"
    );
    assert_eq!(
        store
            .api_key_for_auth(kb.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    let t = start_time() + Duration::minutes(3);
    assert!(
        store
            .revoke_api_key(&manage(&gate, a), ka.id, t)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(&manage(&gate, a), ka.id, t)
            .await
            .unwrap(),
        "revoked once"
    );
    assert_eq!(
        store
            .api_key_for_auth(ka.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(t)
    );
    store.touch_api_key(kb.id, t).await.unwrap();
    store
        .touch_api_key(kb.id, t - Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        store
            .api_key_for_auth(kb.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(t)
    );
    assert_eq!(
        store
            .api_key_for_auth(crate::tenancy::ApiKeyId::new())
            .await
            .unwrap(),
        None
    );
}
