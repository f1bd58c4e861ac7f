//! Audit-store checks: the chain a store builds, concurrency, scoping, checkpoints.

use std::sync::Arc;

use serde_json::json;
use time::Duration;

use super::{Fixture, futures_join_all, kek, kind};
use crate::audit::{
    AuditAction, AuditActor, AuditDraft, AuditRecord, AuditStoreExt, ChainHead, CheckpointSigner,
    GENESIS_HASH, REDACTED, Target, audit_time, verify,
};
use crate::clock::Clock;
use crate::crypto::KeyRing;
use crate::error::ErrorKind;
use crate::store::Store;
use crate::tenancy::{
    Action, ApiKeyId, GrantId, ImpersonationGrant, Principal, Scope, StaffId, SystemTask,
};

fn signer() -> CheckpointSigner {
    CheckpointSigner::new(&KeyRing::new([kek(1, 11)]).unwrap())
}

fn renamed(scope: &Scope, name: &str) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::WorkspaceRenamed,
        Target::workspace(scope.workspace()),
    )
    .with_after(json!({ "name": name }))
}

/// Appends through different principals chain from seq 1 with a zero genesis hash, carry the
/// gate's actor (with the staff member's grant), keep microsecond times and every JSON value
/// exactly, page by seq, start a separate chain per workspace, and verify.
pub async fn audit_appends_chain_and_verify(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    // Sub-microsecond parts are dropped by sealing, so every store can keep the time exactly.
    f.clock.advance(Duration::nanoseconds(123_456_789));
    let member = f.a(Action::WorkspaceUpdate);
    let key = ApiKeyId::new();
    let api_key = f
        .gate
        .authorize(
            &Principal::ApiKey {
                key,
                workspace: f.a,
                actions: vec![Action::WorkspaceUpdate],
            },
            f.a,
            Action::WorkspaceUpdate,
        )
        .unwrap();
    let (staff, grant) = (StaffId::new(), GrantId::new());
    let staff_scope = f
        .gate
        .authorize(
            &Principal::Staff {
                staff,
                mfa: true,
                grant: Some(ImpersonationGrant {
                    id: grant,
                    workspace: f.a,
                    expires_at: f.clock.now() + Duration::minutes(30),
                    write: false,
                }),
            },
            f.a,
            Action::EventRead,
        )
        .unwrap();
    let retention = f
        .gate
        .authorize(
            &Principal::System(SystemTask::Retention),
            f.a,
            Action::RetentionEnforce,
        )
        .unwrap();
    let user = match &f.admin_a {
        Principal::Member { user, .. } => *user,
        other => panic!("{other:?}"),
    };
    let entries = [
        (
            &member,
            AuditDraft::new(
                &member,
                AuditAction::WorkspacePolicyUpdated,
                Target::workspace(f.a),
            )
            .with_before(json!({"require_totp": false}))
            .with_after(json!({"require_totp": true}))
            .with_request_id("req-1"),
            AuditActor::Member(user),
        ),
        (
            &api_key,
            AuditDraft::new(
                &api_key,
                AuditAction::IpAllowlistUpdated,
                Target::workspace(f.a),
            )
            .with_before(json!({"ranges": []}))
            .with_after(json!({"ranges": ["10.0.0.0/8", "2001:db8::/32"]})),
            AuditActor::ApiKey(key),
        ),
        (
            &staff_scope,
            AuditDraft::new(
                &staff_scope,
                AuditAction::StaffRead,
                Target::new("events", "2026-01"),
            ),
            AuditActor::Staff {
                staff,
                grant: Some(grant),
            },
        ),
        (
            &retention,
            AuditDraft::new(
                &retention,
                AuditAction::RetentionEventsDeleted,
                Target::workspace(f.a),
            )
            .with_after(json!({"deleted": 12, "cutoff": "2026-01-01T00:00:00Z"})),
            AuditActor::System(SystemTask::Retention),
        ),
        (
            &member,
            AuditDraft::new(
                &member,
                AuditAction::ApiKeyCreated,
                Target::api_key(ApiKeyId::new()),
            )
            .with_after(json!({
                "name": "ci ✓ \"quoted\" \n",
                "token": "lm_must_not_be_stored",
                "actions": ["event.read"],
                "a/b~c": {"": null, "big": u64::MAX, "neg": i64::MIN, "float": 2.5, "tiny": 1e-7},
            })),
            AuditActor::Member(user),
        ),
    ];
    // The log starts with the workspace's creation, from the genesis hash.
    let read = f.a(Action::AuditRead);
    let mut appended = store.audit_records(&read, 0, 100).await.unwrap();
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].action, AuditAction::WorkspaceCreated);
    assert_eq!((appended[0].seq, appended[0].prev_hash), (1, GENESIS_HASH));
    for (i, (scope, draft, actor)) in entries.into_iter().enumerate() {
        let expected_after = draft.after().cloned();
        let record = store
            .append_audit(scope, draft, f.clock.now())
            .await
            .expect("append");
        let prev = appended.last().map_or(GENESIS_HASH, |r| r.hash);
        assert_eq!(
            (record.workspace, record.seq, record.prev_hash),
            (f.a, i as u64 + 2, prev),
            "record {i} chains"
        );
        assert_eq!(record.actor, actor, "record {i}: the scope's holder acts");
        assert_eq!(record.at, audit_time(f.clock.now()));
        assert_eq!(record.after, expected_after);
        appended.push(record);
        f.clock.advance(Duration::seconds(1));
    }
    assert_eq!(
        appended[5].after.as_ref().unwrap()["token"],
        json!(REDACTED),
        "secrets never reach the store"
    );
    assert_eq!(appended[1].request_id.as_deref(), Some("req-1"));

    let stored = store.audit_records(&read, 0, 100).await.unwrap();
    assert_eq!(stored, appended, "read back exactly as appended");
    let seqs = |records: Vec<AuditRecord>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.audit_records(&read, 2, 2).await.unwrap()),
        [3, 4]
    );
    assert_eq!(
        seqs(store.audit_records(&read, 4, 10).await.unwrap()),
        [5, 6]
    );
    assert!(store.audit_records(&read, 6, 10).await.unwrap().is_empty());
    assert!(store.audit_records(&read, 0, 0).await.unwrap().is_empty());
    assert_eq!(store.all_audit_records(&read).await.unwrap(), appended);

    let report = verify(f.a, &stored, &[], &signer());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.verified, appended[5].head());

    // Workspace B has its own chain, after its own creation.
    let b = store
        .append_audit(
            &f.b(Action::WorkspaceUpdate),
            renamed(&f.b(Action::WorkspaceUpdate), "B2"),
            f.clock.now(),
        )
        .await
        .unwrap();
    let b_created = store
        .audit_records(&f.b(Action::AuditRead), 0, 1)
        .await
        .unwrap();
    assert_eq!(
        (b.workspace, b.seq, b.prev_hash),
        (f.b, 2, b_created[0].hash)
    );
    assert_eq!(store.audit_records(&read, 0, 100).await.unwrap().len(), 6);
}

/// Fifty appends at once to one workspace (and ten to another) get seqs 2 to 51 (and 2 to 11;
/// seq 1 is each workspace's creation) with a valid chain: no seq taken twice, none skipped, no
/// fork.
pub async fn audit_concurrent_appends_never_fork(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let (a, b) = (f.a(Action::WorkspaceUpdate), f.b(Action::WorkspaceUpdate));
    let now = f.clock.now();
    let appends = (0..60).map(|i| {
        let store = store.clone();
        let scope = if i % 6 == 5 { b.clone() } else { a.clone() };
        async move {
            store
                .append_audit(&scope, renamed(&scope, &format!("name {i}")), now)
                .await
        }
    });
    let records: Vec<AuditRecord> = futures_join_all(appends)
        .await
        .into_iter()
        .map(|r| r.expect("concurrent append"))
        .collect();
    for (ws, count) in [(f.a, 50u64), (f.b, 10)] {
        let mut seqs: Vec<u64> = records
            .iter()
            .filter(|r| r.workspace == ws)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (2..=count + 1).collect::<Vec<_>>(),
            "seqs without gaps or twins"
        );
        let log = store.all_audit_records(&f.auditor(ws)).await.unwrap();
        assert_eq!(log.len() as u64, count + 1);
        let report = verify(ws, &log, &[], &signer());
        assert!(report.is_ok(), "{report}");
    }
}

/// Reading records and checkpoints needs the audit-read action and sees only the scope's
/// workspace; a draft or checkpoint of one workspace cannot land in another's log; a refused
/// append stores nothing and leaves no gap.
pub async fn audit_reads_need_audit_read_and_stay_in_workspace(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let (a, b) = (f.a(Action::WorkspaceUpdate), f.b(Action::WorkspaceUpdate));
    for scope in [&a, &a, &b] {
        store
            .append_audit(scope, renamed(scope, "x"), f.clock.now())
            .await
            .unwrap();
    }
    for action in [
        Action::WorkspaceRead,
        Action::WorkspaceUpdate,
        Action::EventRead,
    ] {
        let scope = f.a(action);
        assert_eq!(
            kind(store.audit_records(&scope, 0, 10).await),
            ErrorKind::Denied
        );
        assert_eq!(kind(store.checkpoints(&scope).await), ErrorKind::Denied);
        assert_eq!(kind(store.last_checkpoint(&scope).await), ErrorKind::Denied);
        let checkpoint = signer().sign(f.a, ChainHead::GENESIS, f.clock.now());
        assert_eq!(
            kind(store.put_checkpoint(&scope, &checkpoint).await),
            ErrorKind::Denied
        );
    }
    let (read_a, read_b) = (f.a(Action::AuditRead), f.b(Action::AuditRead));
    // Each log: the workspace's creation, then the appends above.
    let in_a = store.audit_records(&read_a, 0, 10).await.unwrap();
    assert_eq!(in_a.len(), 3);
    assert!(in_a.iter().all(|r| r.workspace == f.a));
    let in_b = store.audit_records(&read_b, 0, 10).await.unwrap();
    assert_eq!(in_b.len(), 2);
    assert!(in_b.iter().all(|r| r.workspace == f.b));

    // A's draft under B's scope.
    assert_eq!(
        kind(
            store
                .append_audit(&b, renamed(&a, "smuggled"), f.clock.now())
                .await
        ),
        ErrorKind::Denied
    );
    // A's member's draft under A's API key: the record's actor is always the caller's.
    let api_key = f
        .gate
        .authorize(
            &Principal::ApiKey {
                key: ApiKeyId::new(),
                workspace: f.a,
                actions: vec![Action::WorkspaceUpdate],
            },
            f.a,
            Action::WorkspaceUpdate,
        )
        .unwrap();
    assert_eq!(
        kind(
            store
                .append_audit(&api_key, renamed(&a, "borrowed"), f.clock.now())
                .await
        ),
        ErrorKind::Denied
    );
    // A checkpoint of A under B's scope.
    let of_a = signer().sign(f.a, in_a[1].head(), f.clock.now());
    assert_eq!(
        kind(store.put_checkpoint(&read_b, &of_a).await),
        ErrorKind::Denied
    );
    assert!(store.checkpoints(&read_b).await.unwrap().is_empty());
    assert!(store.checkpoints(&read_a).await.unwrap().is_empty());
    // A draft the seal refuses.
    assert_eq!(
        kind(
            store
                .append_audit(
                    &a,
                    renamed(&a, "y").with_request_id("no spaces"),
                    f.clock.now()
                )
                .await
        ),
        ErrorKind::Invalid
    );
    assert_eq!(store.audit_records(&read_a, 0, 10).await.unwrap().len(), 3);
    assert_eq!(store.audit_records(&read_b, 0, 10).await.unwrap().len(), 2);
    let next = store
        .append_audit(&a, renamed(&a, "z"), f.clock.now())
        .await
        .unwrap();
    assert_eq!((next.seq, next.prev_hash), (4, in_a[2].hash), "no gap");
}

/// Checkpoints, also of an empty log, are stored exactly, once, in time order, per workspace,
/// and verify with the records.
pub async fn audit_checkpoints_round_trip_and_verify(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let signer = signer();
    let (audit_a, audit_b) = (f.auditor(f.a), f.auditor(f.b));
    assert!(store.checkpoints(&audit_a).await.unwrap().is_empty());
    assert_eq!(store.last_checkpoint(&audit_a).await.unwrap(), None);
    f.clock.advance(Duration::nanoseconds(1_500));
    let empty = signer.sign(f.a, ChainHead::GENESIS, f.clock.now());
    store.put_checkpoint(&audit_a, &empty).await.unwrap();
    assert_eq!(store.last_checkpoint(&audit_a).await.unwrap(), Some(empty));

    let update = f.a(Action::WorkspaceUpdate);
    let mut head = ChainHead::GENESIS;
    for i in 0..3 {
        f.clock.advance(Duration::minutes(1));
        head = store
            .append_audit(&update, renamed(&update, &format!("n{i}")), f.clock.now())
            .await
            .unwrap()
            .head();
    }
    f.clock.advance(Duration::minutes(1));
    let at_head = signer.sign(f.a, head, f.clock.now());
    store.put_checkpoint(&audit_a, &at_head).await.unwrap();
    store.put_checkpoint(&audit_a, &at_head).await.unwrap();
    let stored = store.checkpoints(&audit_a).await.unwrap();
    assert_eq!(stored, [empty, at_head], "exactly, once, oldest first");
    assert!(stored.iter().all(|c| signer.verify(c)));
    assert!(store.checkpoints(&audit_b).await.unwrap().is_empty());
    assert_eq!(
        store.last_checkpoint(&audit_a).await.unwrap(),
        Some(at_head)
    );
    assert_eq!(store.last_checkpoint(&audit_b).await.unwrap(), None);

    let report = store.verify_audit(&audit_a, &signer).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (report.records, report.checkpoints),
        (4, 2),
        "creation and three renames"
    );
    assert_eq!(report.verified, head);
    let report = store.verify_audit(&audit_b, &signer).await.unwrap();
    assert!(report.is_ok(), "{report}");
}

/// Log, then act: every mutating store method appends exactly one record describing its change
/// (action, target, before and after, the scope's actor) in the workspace's log, and a call
/// that changes nothing appends nothing.
pub async fn mutations_are_logged_with_their_change(store: Arc<dyn Store>) {
    use crate::auth::keys::ApiKeyRecord;
    use crate::auth::tokens::TokenDigest;
    use crate::auth::users::User;
    use crate::crypto::Purpose;
    use crate::store::{StoredSalt, StoredSecret, WrappedTenantKey};
    use crate::tenancy::Role;

    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let at = f.clock.now();
    let read = f.auditor(f.a);
    let log = || async { store.all_audit_records(&read).await.unwrap() };
    // Runs one mutation and returns the records it appended.
    macro_rules! appended {
        ($mutation:expr) => {{
            let before = log().await.len();
            $mutation;
            log().await.split_off(before)
        }};
    }
    let one = |records: Vec<AuditRecord>, action: AuditAction| {
        assert_eq!(records.len(), 1, "{action}: one record, got {records:?}");
        assert_eq!(records[0].action, action);
        records.into_iter().next().unwrap()
    };

    let created = log().await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].action, AuditAction::WorkspaceCreated);
    assert_eq!(
        created[0].actor,
        AuditActor::System(SystemTask::Provisioning)
    );
    assert_eq!(
        created[0].after,
        Some(json!({"name": "Workspace A", "region": "eu"}))
    );

    let update = f.a(Action::WorkspaceUpdate);
    let r = one(
        appended!(
            store
                .rename_workspace(&update, "Renamed", at)
                .await
                .unwrap()
        ),
        AuditAction::WorkspaceRenamed,
    );
    assert_eq!(
        (r.before, r.after),
        (
            Some(json!({"name": "Workspace A"})),
            Some(json!({"name": "Renamed"}))
        )
    );
    let r = one(
        appended!(store.add_site(&update, "Shop.Example", at).await.unwrap()),
        AuditAction::SiteAdded,
    );
    assert_eq!(r.target, Target::new("site", "shop.example"));
    let ranges = ["192.0.2.0/24".parse().unwrap()];
    let r = one(
        appended!(store.set_blocked_ips(&update, &ranges, at).await.unwrap()),
        AuditAction::BlockedIpsUpdated,
    );
    assert_eq!(r.after, Some(json!({"ranges": ["192.0.2.0/24"]})));

    let write = f.a(Action::SecretWrite);
    let secret = StoredSecret {
        name: "license".into(),
        purpose: Purpose::LicenseKey,
        blob: vec![7; 40],
    };
    let r = one(
        appended!(store.put_secret(&write, &secret, at).await.unwrap()),
        AuditAction::SecretWritten,
    );
    assert_eq!(r.target, Target::new("secret", "license"));
    assert_eq!((r.before, r.after), (None, None), "never the value");
    let r = one(
        appended!(assert!(
            store.delete_secret(&write, "license", at).await.unwrap()
        )),
        AuditAction::SecretDeleted,
    );
    assert_eq!(r.target, Target::new("secret", "license"));
    assert!(
        appended!(assert!(
            !store.delete_secret(&write, "license", at).await.unwrap()
        ))
        .is_empty(),
        "deleting nothing records nothing"
    );

    let provisioning = f
        .gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            f.a,
            Action::MemberManage,
        )
        .unwrap();
    let user = User {
        id: crate::tenancy::UserId::new(),
        email: crate::mail::Address::parse("new.member@example.com").unwrap(),
        created_at: at,
    };
    store.create_user(&user).await.unwrap();
    let r = one(
        appended!(
            store
                .set_membership(&provisioning, user.id, Role::Viewer, at)
                .await
                .unwrap()
        ),
        AuditAction::MemberRoleChanged,
    );
    assert_eq!(
        (r.target, r.before, r.after),
        (
            Target::user(user.id),
            Some(json!({"role": null})),
            Some(json!({"role": "viewer"}))
        )
    );
    let r = one(
        appended!(
            store
                .set_membership(&provisioning, user.id, Role::Admin, at)
                .await
                .unwrap()
        ),
        AuditAction::MemberRoleChanged,
    );
    assert_eq!(r.before, Some(json!({"role": "viewer"})));

    let manage = f.a(Action::MemberManage);
    let key = ApiKeyRecord {
        id: ApiKeyId::new(),
        workspace: f.a,
        name: "ci".into(),
        actions: vec![Action::EventRead],
        digest: TokenDigest {
            key_id: 1,
            mac: [3; 32],
        },
        sealed: vec![1; 90],
        created_at: at,
        last_used_at: None,
        revoked_at: None,
    };
    let r = one(
        appended!(store.insert_api_key(&manage, &key).await.unwrap()),
        AuditAction::ApiKeyCreated,
    );
    assert_eq!(
        (r.target, r.after),
        (
            Target::api_key(key.id),
            Some(json!({"name": "ci", "actions": ["event.read"]}))
        )
    );
    one(
        appended!(assert!(
            store.revoke_api_key(&manage, key.id, at).await.unwrap()
        )),
        AuditAction::ApiKeyRevoked,
    );
    assert!(
        appended!(assert!(
            !store.revoke_api_key(&manage, key.id, at).await.unwrap()
        ))
        .is_empty(),
        "revoking a revoked key records nothing"
    );

    let keys = f
        .gate
        .authorize(
            &Principal::System(SystemTask::KeyRotation),
            f.a,
            Action::KeyManage,
        )
        .unwrap();
    let wrapped = WrappedTenantKey {
        workspace: f.a,
        version: 1,
        kek_id: 1,
        blob: vec![9; 60],
        created_at: at,
    };
    let r = one(
        appended!(store.insert_tenant_key(&keys, &wrapped).await.unwrap()),
        AuditAction::TenantKeyCreated,
    );
    assert_eq!(r.target.id, "1");
    assert_eq!(r.after, Some(serde_json::json!({ "kek_id": 1 })));
    assert!(
        appended!(assert!(
            !store
                .rewrap_tenant_key(&keys, 1, 5, 2, &[8; 60], at)
                .await
                .unwrap()
        ))
        .is_empty(),
        "a lost compare-and-swap records nothing"
    );
    let r = one(
        appended!(assert!(
            store
                .rewrap_tenant_key(&keys, 1, 1, 2, &[8; 60], at)
                .await
                .unwrap()
        )),
        AuditAction::TenantKeyRewrapped,
    );
    assert_eq!(
        (r.before, r.after),
        (Some(json!({"kek_id": 1})), Some(json!({"kek_id": 2})))
    );
    let r = one(
        appended!(assert_eq!(
            store.delete_tenant_keys(&keys, at).await.unwrap(),
            1
        )),
        AuditAction::TenantKeysDestroyed,
    );
    assert_eq!(r.after, Some(json!({"destroyed": 1})));

    let day = at.date();
    store
        .insert_salt(
            &keys,
            &StoredSalt {
                day: day.previous_day().unwrap().previous_day().unwrap(),
                blob: vec![1; 8],
            },
        )
        .await
        .unwrap();
    let r = one(
        appended!(store.destroy_salts_before(&keys, day, at).await.unwrap()),
        AuditAction::SaltsDestroyed,
    );
    assert_eq!(r.actor, AuditActor::System(SystemTask::KeyRotation));
    assert!(
        appended!(store.destroy_salts_before(&keys, day, at).await.unwrap()).is_empty(),
        "nothing destroyed, nothing recorded"
    );

    let report = verify(f.a, &log().await, &[], &signer());
    assert!(report.is_ok(), "{report}");
    // Workspace B saw none of it.
    assert_eq!(
        store
            .all_audit_records(&f.auditor(f.b))
            .await
            .unwrap()
            .len(),
        1
    );
}
