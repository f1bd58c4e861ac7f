//! Policy, retention, impersonation and checkpoint-job checks.

use std::sync::Arc;

use serde_json::json;
use time::Duration;

use super::{Fixture, batch_of, event, kek, kind};
use crate::audit::{AuditAction, AuditActor, AuditJob, AuditStoreExt, CheckpointSigner, Target};
use crate::auth::impersonation::{Impersonation, MAX_GRANT};
use crate::clock::Clock;
use crate::crypto::KeyRing;
use crate::error::ErrorKind;
use crate::policy::{IpAllowlist, PolicyChange, RetentionJob};
use crate::store::Store;
use crate::tenancy::{Action, Denied, Principal, StaffId, SystemTask, WorkspaceId};

/// The IP allowlist and the retention period are stored with the workspace, each change with
/// its own audit action and before/after; a refused change changes and records nothing; the
/// other workspace is untouched.
pub async fn policy_changes_are_stored_and_audited(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let update = f.a(Action::WorkspaceUpdate);
    let list = IpAllowlist::parse(["192.0.2.0/24", "2001:db8::/48"]).unwrap();
    let (ws, allow) = store
        .set_workspace_policy(
            &update,
            &PolicyChange::IpAllowlist(list.clone()),
            f.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(ws.policy.ip_allowlist, list);
    assert_eq!(allow.action, AuditAction::IpAllowlistUpdated);
    assert_eq!(allow.before, Some(json!({"ranges": []})));
    assert_eq!(
        allow.after,
        Some(json!({"ranges": ["192.0.2.0/24", "2001:db8::/48"]}))
    );
    assert_eq!(
        kind(
            store
                .set_workspace_policy(
                    &update,
                    &PolicyChange::RetentionDays(Some(0)),
                    f.clock.now()
                )
                .await
        ),
        ErrorKind::Invalid
    );
    let (ws, keep) = store
        .set_workspace_policy(
            &update,
            &PolicyChange::RetentionDays(Some(30)),
            f.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(ws.policy.retention_days, Some(30));
    assert_eq!(
        ws.policy.ip_allowlist, list,
        "one change keeps the other parts"
    );
    assert_eq!(keep.action, AuditAction::RetentionPolicyUpdated);
    assert_eq!(keep.before, Some(json!({"days": null})));
    assert_eq!(keep.after, Some(json!({"days": 30})));
    let read = store.workspace(&f.a(Action::WorkspaceRead)).await.unwrap();
    assert_eq!(read.policy, ws.policy, "read back as stored");
    let log = store
        .all_audit_records(&f.a(Action::AuditRead))
        .await
        .unwrap();
    assert_eq!(
        log[1..],
        [allow, keep],
        "after the creation, one record per change"
    );
    let other = store.workspace(&f.b(Action::WorkspaceRead)).await.unwrap();
    assert_eq!(other.policy, Default::default());
    // Clearing both.
    let (ws, _) = store
        .set_workspace_policy(
            &update,
            &PolicyChange::IpAllowlist(IpAllowlist::default()),
            f.clock.now(),
        )
        .await
        .unwrap();
    assert!(ws.policy.ip_allowlist.is_empty());
    let (ws, _) = store
        .set_workspace_policy(&update, &PolicyChange::RetentionDays(None), f.clock.now())
        .await
        .unwrap();
    assert_eq!(ws.policy.retention_days, None);
}

/// The retention job deletes, in every workspace with a period, exactly the events older than
/// the period, audits the count, and leaves newer events and workspaces without a period alone.
pub async fn retention_job_keeps_newer_events(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let now = f.clock.now();
    // Twelve events a day apart in each workspace, ending now.
    for ws in [f.a, f.b] {
        let events: Vec<_> = (0..12)
            .map(|i| event(ws, i, now - Duration::days(i as i64) - Duration::minutes(1)))
            .collect();
        store.append_events(&batch_of(&f, &events)).await.unwrap();
    }
    store
        .set_workspace_policy(
            &f.a(Action::WorkspaceUpdate),
            &PolicyChange::RetentionDays(Some(5)),
            now,
        )
        .await
        .unwrap();
    let run = RetentionJob::new(store.clone(), f.gate.clone())
        .with_batch(2)
        .run_once()
        .await
        .unwrap();
    // Events 5..=11 are older than five days (event i was received i days and a minute ago).
    assert_eq!((run.workspaces, run.deleted, run.failed), (1, 7, 0));
    let far = now + Duration::days(1);
    let left = |scope| {
        let store = store.clone();
        async move {
            let mut ids: Vec<u128> = store
                .events(&scope, now - Duration::days(400), far, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id.0.as_u128())
                .collect();
            ids.sort_unstable();
            ids
        }
    };
    assert_eq!(left(f.a(Action::EventRead)).await, [0, 1, 2, 3, 4]);
    assert_eq!(left(f.b(Action::EventRead)).await.len(), 12);
    let counted: u64 = store
        .all_audit_records(&f.a(Action::AuditRead))
        .await
        .unwrap()
        .iter()
        .filter(|r| r.action == AuditAction::RetentionEventsDeleted)
        .map(|r| {
            assert_eq!(r.actor, AuditActor::System(SystemTask::Retention));
            r.after.as_ref().unwrap()["deleted"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(counted, 7, "the records count what was removed");
    // A second run finds nothing and records nothing.
    let again = RetentionJob::new(store.clone(), f.gate.clone())
        .run_once()
        .await
        .unwrap();
    assert_eq!(again.deleted, 0);
    assert_eq!(
        store
            .all_audit_records(&f.a(Action::AuditRead))
            .await
            .unwrap()
            .len(),
        2 + 4,
        "creation, the policy change and four batches of at most two"
    );
}

/// `workspace_ids` pages through every workspace in id order.
pub async fn workspace_ids_page_in_order(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.workspace_ids(after, 1).await.unwrap();
        assert!(page.len() <= 1);
        let Some(last) = page.last().copied() else {
            break;
        };
        all.push(last);
        after = Some(last);
    }
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(all, sorted);
    assert!(all.contains(&f.a) && all.contains(&f.b));
    all.retain(|w| *w != WorkspaceId::INSTANCE);
    assert_eq!(all.len(), 2);
}

/// A grant exists only with its record in the customer's log; reads under it are recorded with
/// both identities; it is refused to anyone else, after closing and after expiry; bad requests
/// store nothing.
pub async fn impersonation_is_audited_before_access(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let service = Impersonation::new(store.clone(), f.gate.clone());
    let staff_id = StaffId::new();
    let staff = Principal::Staff {
        staff: staff_id,
        mfa: true,
        grant: None,
    };
    let log = |ws| {
        let store = store.clone();
        let scope = f.auditor(ws);
        async move { store.all_audit_records(&scope).await.unwrap() }
    };
    // Refused before anything is stored.
    for (reason, minutes) in [("", 10), ("ticket 1", 61), ("ticket 1", 0)] {
        let err = service
            .open(&staff, f.a, reason, Duration::minutes(minutes), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
    }
    let no_mfa = Principal::Staff {
        staff: staff_id,
        mfa: false,
        grant: None,
    };
    assert_eq!(
        service
            .open(&no_mfa, f.a, "ticket 1", MAX_GRANT, false)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Denied
    );
    assert_eq!(
        service
            .open(&staff, WorkspaceId::new(), "ticket 1", MAX_GRANT, false)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let created = log(f.a).await;
    assert_eq!(created.len(), 1, "only the workspace's creation");

    let (grant, started) = service
        .open(&staff, f.a, "ticket 4711: broken chart", MAX_GRANT, false)
        .await
        .unwrap();
    assert_eq!(started.action, AuditAction::ImpersonationStarted);
    assert!(started.action.customer_visible());
    assert_eq!(
        started.actor,
        AuditActor::Staff {
            staff: staff_id,
            grant: Some(grant.grant.id)
        }
    );
    assert_eq!(started.target, Target::grant(grant.grant.id));
    assert_eq!(
        started.after.as_ref().unwrap()["reason"],
        "ticket 4711: broken chart"
    );
    assert_eq!(
        store.grant(grant.grant.id).await.unwrap().as_ref(),
        Some(&grant)
    );
    assert_eq!(log(f.a).await[1..], *std::slice::from_ref(&started));
    assert_eq!(log(f.b).await.len(), 1, "B's log: its creation only");

    // Another staff member cannot use it; its holder can, in its workspace only.
    let other = Principal::Staff {
        staff: StaffId::new(),
        mfa: true,
        grant: None,
    };
    assert_eq!(
        service
            .principal(&other, grant.grant.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Denied
    );
    let acting = service.principal(&staff, grant.grant.id).await.unwrap();
    assert!(f.gate.authorize(&acting, f.b, Action::EventRead).is_err());
    assert_eq!(
        f.gate.authorize(&acting, f.a, Action::SecretRead),
        Err(Denied::ActionNotPermitted)
    );
    let read = f.gate.authorize(&acting, f.a, Action::EventRead).unwrap();
    let recorded = service
        .record_read(&read, Target::workspace(f.a), json!({"route": "events"}))
        .await
        .unwrap();
    assert_eq!(recorded.action, AuditAction::StaffRead);
    assert_eq!(recorded.actor, started.actor, "staff member and grant");

    // A grant's scope cannot store another grant.
    let mut forged = grant.clone();
    forged.grant.id = crate::tenancy::GrantId::new();
    assert_eq!(
        kind(store.open_grant(&read, &forged, f.clock.now()).await),
        ErrorKind::Denied
    );

    // Closed: recorded, and refused from then on.
    let ended = service.close(&acting).await.unwrap();
    assert_eq!(ended.action, AuditAction::ImpersonationEnded);
    assert_eq!(
        service
            .principal(&staff, grant.grant.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Denied
    );
    assert_eq!(kind(service.close(&acting).await), ErrorKind::Conflict);
    assert_eq!(log(f.a).await.len(), 4);

    // Expired: the gate refuses it.
    let (short, _) = service
        .open(&staff, f.a, "ticket 4712", Duration::minutes(5), false)
        .await
        .unwrap();
    let acting = service.principal(&staff, short.grant.id).await.unwrap();
    f.clock.advance(Duration::minutes(5));
    assert_eq!(
        f.gate.authorize(&acting, f.a, Action::EventRead),
        Err(Denied::GrantExpired)
    );
    assert!(
        !store
            .grant(short.grant.id)
            .await
            .unwrap()
            .unwrap()
            .is_live(f.clock.now())
    );
}

/// The checkpoint job signs every log's head when due (also empty ones), skips logs that are
/// not due, and its checkpoints verify, with the cadence.
pub async fn checkpoint_job_signs_due_heads(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let signer = || CheckpointSigner::new(&KeyRing::new([kek(1, 21)]).unwrap());
    let job = AuditJob::new(store.clone(), signer(), f.gate.clone());
    let first = job.checkpoint_all().await.unwrap();
    assert_eq!(first.failed, 0);
    assert!(first.written >= 3, "the instance tenant, A and B");
    assert_eq!(job.checkpoint_all().await.unwrap().written, 0, "none due");
    store
        .set_workspace_policy(
            &f.a(Action::WorkspaceUpdate),
            &PolicyChange::RequireTotp(true),
            f.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(
        job.checkpoint(f.a).await.unwrap(),
        None,
        "1 record is not 100"
    );
    f.clock.advance(Duration::minutes(5));
    let run = job.checkpoint_all().await.unwrap();
    assert_eq!(
        run.written, first.written,
        "every log, empty or not, after 5 minutes"
    );
    let a = job.verify(f.a, true).await.unwrap();
    assert!(a.is_ok(), "{a}");
    assert_eq!(a.verified.seq, 2, "creation and the policy change");
    for report in job.verify_all(true).await.unwrap() {
        assert!(report.is_ok(), "{report}");
    }
    // Two records later and a long silence: verifying with the cadence names the gap.
    f.clock.advance(Duration::minutes(11));
    let late = job.verify(f.a, true).await.unwrap();
    assert!(!late.is_ok(), "a missed cadence shows");
    assert!(job.verify(f.a, false).await.unwrap().is_ok());
}
