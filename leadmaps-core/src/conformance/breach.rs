//! Breach-store checks: incidents and their register commit together, the awareness time never
//! moves, versions are checked, deliveries are claimed once, a notice and its audit record commit
//! together, and a workspace's admins are its own.

use std::sync::Arc;

use serde_json::json;
use time::Duration;

use super::{Fixture, futures_join_all, kind};
use crate::audit::{AuditAction, AuditDraft, Target};
use crate::auth::users::User;
use crate::breach::{
    Assessment, Change, Claim, DataRole, DataSet, DeliveryKey, Details, Duty, Engine, Incident,
    IncidentId, Marked, NewIncident, Risk, RuleBook, Severity, Status, Step, verify_register,
};
use crate::clock::Clock;
use crate::error::ErrorKind;
use crate::mail::Address;
use crate::store::Store;
use crate::tenancy::{Action, BreachScope, Principal, Role, StaffId, SystemTask, UserId};

fn staff_scope(f: &Fixture) -> BreachScope {
    f.gate
        .authorize_breach(&Principal::Staff {
            staff: StaffId::new(),
            mfa: true,
            grant: None,
        })
        .unwrap()
}

fn notifier_scope(f: &Fixture) -> BreachScope {
    f.gate
        .authorize_breach(&Principal::System(SystemTask::Breach))
        .unwrap()
}

fn engine(f: &Fixture) -> Engine {
    Engine::new(
        f.store.clone(),
        Arc::new(RuleBook::default()),
        f.clock.clone(),
    )
}

fn new_incident(f: &Fixture) -> NewIncident {
    NewIncident {
        title: "Export endpoint | served \"accounts\" \u{e9}".into(),
        severity: Severity::S1,
        assessment: Assessment {
            personal_data: true,
            risk: Risk::Risk,
        },
        aware_at: f.clock.now() - Duration::minutes(30),
        workspaces: vec![f.a, f.b],
        data_sets: vec![DataSet {
            name: "customer user accounts".into(),
            role: DataRole::Controller,
        }],
        details: Details {
            nature: Marked::known("line one\nline two".into()),
            subjects: Marked::estimated(u64::MAX),
            ..Details::default()
        },
    }
}

/// An opened incident reads back exactly (times, JSON, obligations), is listed, and its opening
/// is the register's first entry; changes follow the stored version, each with its entry, a
/// stale or moved one is refused with nothing stored, and a closed incident is final. The
/// register reads back exactly and verifies.
pub async fn breach_incidents_and_register_commit_together(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    // Sub-microsecond parts are dropped on opening, so every store keeps times exactly.
    f.clock.advance(Duration::nanoseconds(123_456_789));
    let scope = staff_scope(&f);
    let engine = engine(&f);
    let opened = engine.open(&scope, new_incident(&f)).await.unwrap();
    assert_eq!(opened.aware_at.nanosecond() % 1_000, 0);
    assert_eq!(
        store.incident(&scope, opened.id).await.unwrap(),
        Some(opened.clone()),
        "read back exactly"
    );
    assert_eq!(
        store.incident(&scope, IncidentId::new()).await.unwrap(),
        None
    );
    assert_eq!(
        kind(store.create_incident(&scope, &opened).await),
        ErrorKind::Conflict,
        "the id exists"
    );
    let mut second_version = opened.clone();
    second_version.version = 2;
    second_version.id = IncidentId::new();
    assert_eq!(
        kind(store.create_incident(&scope, &second_version).await),
        ErrorKind::Invalid,
        "a new incident is at version 1"
    );
    assert_eq!(
        kind(
            store
                .update_incident(&scope, &second_version, Change::Reassessed)
                .await
        ),
        ErrorKind::NotFound
    );

    // The awareness time never moves, whatever the caller sends.
    let mut moved = opened.clone();
    moved.version += 1;
    moved.aware_at -= Duration::hours(1);
    assert_eq!(
        kind(
            store
                .update_incident(&scope, &moved, Change::Reassessed)
                .await
        ),
        ErrorKind::Invalid
    );
    let mut stale = opened.clone();
    stale.title = "stale".into();
    assert_eq!(
        kind(
            store
                .update_incident(&scope, &stale, Change::Reassessed)
                .await
        ),
        ErrorKind::Conflict,
        "same version"
    );
    assert_eq!(
        store.incident(&scope, opened.id).await.unwrap(),
        Some(opened.clone()),
        "refused changes stored nothing"
    );

    f.clock.advance(Duration::minutes(5));
    let contained = engine
        .advance(&notifier_scope(&f), opened.id, Status::Contained)
        .await
        .unwrap();
    assert_eq!(contained.version, 2);
    let filing = contained
        .obligations
        .iter()
        .find(|o| o.duty == Duty::NotifyAuthority)
        .unwrap()
        .id;
    let other = engine.open(&scope, new_incident(&f)).await.unwrap();
    let filed = engine
        .acknowledge(
            &scope,
            opened.id,
            filing,
            crate::breach::Ack::Done {
                evidence: "AP-1".into(),
                late_reason: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(filed.filings.len(), 1);
    let listed = store.incidents(&scope).await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.id).collect::<Vec<_>>(),
        [opened.id, other.id],
        "by opening time"
    );
    assert_eq!(listed[0], filed);

    let entries = store.register_entries(&scope, 0, 100).await.unwrap();
    assert_eq!(verify_register(&entries), Ok(()));
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.seq, e.incident, e.change))
            .collect::<Vec<_>>(),
        [
            (1, opened.id, Change::Opened),
            (2, opened.id, Change::StatusChanged),
            (3, other.id, Change::Opened),
            (4, opened.id, Change::ObligationDone),
        ]
    );
    assert_eq!(entries[0].actor, scope.actor());
    assert_eq!(entries[1].actor, notifier_scope(&f).actor());
    assert_eq!(entries[0].incident().unwrap(), opened);
    assert_eq!(entries[3].incident().unwrap(), filed);
    assert_eq!(
        store.register_entries(&scope, 2, 1).await.unwrap(),
        entries[2..3],
        "pages by seq"
    );
    assert_eq!(store.register_entries(&scope, 4, 10).await.unwrap(), []);

    // Closed is final.
    let mut other = other;
    for obligation in other.obligations.clone() {
        other = engine
            .acknowledge(
                &scope,
                other.id,
                obligation.id,
                crate::breach::Ack::Done {
                    evidence: "done".into(),
                    late_reason: None,
                },
            )
            .await
            .unwrap();
    }
    let closed = engine.close(&scope, other.id).await.unwrap();
    assert_eq!(closed.status, Status::Closed);
    let mut after = closed.clone();
    after.version += 1;
    assert_eq!(
        kind(
            store
                .update_incident(&scope, &after, Change::DetailsUpdated)
                .await
        ),
        ErrorKind::Conflict
    );
    let entries = store.register_entries(&scope, 0, 100).await.unwrap();
    assert_eq!(verify_register(&entries), Ok(()));
    assert_eq!(entries.last().unwrap().change, Change::Closed);
}

fn key(incident: &Incident, step: Step) -> DeliveryKey {
    DeliveryKey::new(incident.id, incident.obligations[0].id, step)
}

/// A delivery is claimed by one caller at a time: a live lease makes others wait, a lapsed one
/// is taken over with a new token, only the current holder completes it, and once sent it stays
/// sent. Of 20 concurrent claims exactly one wins.
pub async fn breach_deliveries_are_claimed_once(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let scope = notifier_scope(&f);
    let incident = engine(&f).open(&scope, new_incident(&f)).await.unwrap();
    let lease = Duration::minutes(5);
    let now = f.clock.now();
    let send = key(&incident, Step::Send);
    let Claim::Claimed(first) = store
        .claim_delivery(&scope, &send, now, lease)
        .await
        .unwrap()
    else {
        panic!("a new delivery is claimed")
    };
    assert_eq!((first.attempt, first.until), (1, now + lease));
    assert_eq!(
        store
            .claim_delivery(&scope, &send, now + Duration::minutes(4), lease)
            .await
            .unwrap(),
        Claim::Busy { until: now + lease }
    );
    let later = now + lease;
    let Claim::Claimed(second) = store
        .claim_delivery(&scope, &send, later, lease)
        .await
        .unwrap()
    else {
        panic!("a lapsed claim is taken over")
    };
    assert_eq!(second.attempt, 2);
    assert_ne!(second.token, first.token);
    assert_eq!(
        kind(store.complete_delivery(&scope, &first, later, None).await),
        ErrorKind::Conflict,
        "the old holder lost it"
    );
    let done = store
        .complete_delivery(&scope, &second, later, None)
        .await
        .unwrap();
    assert_eq!(done, None, "no audit record asked for");
    assert_eq!(
        store
            .claim_delivery(&scope, &send, later + Duration::days(1), lease)
            .await
            .unwrap(),
        Claim::Sent { at: later }
    );
    assert_eq!(
        kind(store.complete_delivery(&scope, &second, later, None).await),
        ErrorKind::Conflict,
        "sent once"
    );
    let deliveries = store.deliveries(&scope, incident.id).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (
            deliveries[0].attempts,
            deliveries[0].claimed_at,
            deliveries[0].sent_at
        ),
        (2, now, Some(later))
    );

    // Each step is its own delivery; of concurrent claims one wins.
    let reminder = key(&incident, Step::Reminder { minutes_before: 60 });
    let claims = (0..20).map(|_| store.claim_delivery(&scope, &reminder, now, lease));
    let won = futures_join_all(claims)
        .await
        .into_iter()
        .filter(|c| matches!(c, Ok(Claim::Claimed(_))))
        .count();
    assert_eq!(won, 1);
    assert_eq!(
        store.deliveries(&scope, incident.id).await.unwrap().len(),
        2
    );

    let mut unknown = send.clone();
    unknown.incident = IncidentId::new();
    assert_eq!(
        kind(store.claim_delivery(&scope, &unknown, now, lease).await),
        ErrorKind::NotFound
    );
    let mut bad = send.clone();
    bad.step = "Send it; now".into();
    assert_eq!(
        kind(store.claim_delivery(&scope, &bad, now, lease).await),
        ErrorKind::Invalid
    );
    assert_eq!(
        store.deliveries(&scope, IncidentId::new()).await.unwrap(),
        []
    );
}

/// Completing a delivery appends its audit record to the affected workspace's log in the same
/// transaction: both or neither. A record from a scope of another workspace is refused and the
/// delivery stays unsent.
pub async fn breach_notice_and_its_audit_record_commit_together(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let scope = notifier_scope(&f);
    let incident = engine(&f).open(&scope, new_incident(&f)).await.unwrap();
    let now = f.clock.now();
    let notifier = Principal::System(SystemTask::Breach);
    let read_a = f
        .gate
        .authorize(&notifier, f.a, Action::WorkspaceRead)
        .unwrap();
    let read_b = f
        .gate
        .authorize(&notifier, f.b, Action::WorkspaceRead)
        .unwrap();
    let notice = |scope| {
        AuditDraft::new(
            scope,
            AuditAction::BreachNotificationSent,
            Target::new("incident", incident.id.to_string()),
        )
        .with_after(json!({"recipients": 2, "duty": "email_admins"}))
    };
    let send = key(&incident, Step::Send);
    let Claim::Claimed(lease) = store
        .claim_delivery(&scope, &send, now, Duration::minutes(5))
        .await
        .unwrap()
    else {
        panic!("claimed")
    };
    // A draft of workspace B offered with workspace A's scope: refused, nothing stored.
    assert_eq!(
        kind(
            store
                .complete_delivery(&scope, &lease, now, Some((&read_a, notice(&read_b))))
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        store.deliveries(&scope, incident.id).await.unwrap()[0].sent_at,
        None,
        "not sent"
    );
    let (audit_a, audit_b) = (f.auditor(f.a), f.auditor(f.b));
    let notices = |scope| {
        let store = store.clone();
        async move {
            store
                .audit_records(&scope, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.action == AuditAction::BreachNotificationSent)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(notices(audit_b.clone()).await, []);
    let record = store
        .complete_delivery(&scope, &lease, now, Some((&read_a, notice(&read_a))))
        .await
        .unwrap()
        .expect("the record");
    assert_eq!(record.action, AuditAction::BreachNotificationSent);
    assert_eq!(record.workspace, f.a);
    assert_eq!(
        record.actor,
        crate::audit::AuditActor::System(SystemTask::Breach)
    );
    assert_eq!(notices(audit_a).await, [record], "in workspace A's log");
    assert_eq!(notices(audit_b).await, []);
    assert!(
        store.deliveries(&scope, incident.id).await.unwrap()[0]
            .sent_at
            .is_some()
    );
}

/// A workspace's admin addresses are its admins' (not viewers', not another workspace's),
/// sorted; reading them needs the workspace-read action.
pub async fn breach_admin_addresses_are_the_workspace_admins(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let provisioning = Principal::System(SystemTask::Provisioning);
    for (email, ws, role) in [
        ("zed@a.example", f.a, Role::Admin),
        ("amy@a.example", f.a, Role::Admin),
        ("vic@a.example", f.a, Role::Viewer),
        ("bob@b.example", f.b, Role::Admin),
    ] {
        let user = User {
            id: UserId::new(),
            email: Address::parse(email).unwrap(),
            created_at: f.clock.now(),
        };
        store.create_user(&user).await.unwrap();
        let manage = f
            .gate
            .authorize(&provisioning, ws, Action::MemberManage)
            .unwrap();
        store
            .set_membership(&manage, user.id, role, f.clock.now())
            .await
            .unwrap();
    }
    let read = |ws| {
        f.gate
            .authorize(
                &Principal::System(SystemTask::Breach),
                ws,
                Action::WorkspaceRead,
            )
            .unwrap()
    };
    let names = |list: Vec<Address>| {
        list.iter()
            .map(|a| a.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.admin_addresses(&read(f.a)).await.unwrap()),
        ["amy@a.example", "zed@a.example"]
    );
    assert_eq!(
        names(store.admin_addresses(&read(f.b)).await.unwrap()),
        ["bob@b.example"]
    );
    assert_eq!(
        kind(store.admin_addresses(&f.a(Action::EventRead)).await),
        ErrorKind::Denied
    );
    assert_eq!(
        names(
            store
                .admin_addresses(&f.a(Action::WorkspaceRead))
                .await
                .unwrap()
        ),
        ["amy@a.example", "zed@a.example"],
        "members may see who administers their workspace"
    );
}
