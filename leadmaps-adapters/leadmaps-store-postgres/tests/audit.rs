//! The audit log on PostgreSQL: append-only for every role, values kept exactly, concurrent
//! appends serialised per workspace, and each kind of tampering a superuser can do (with the
//! append-only triggers disabled) named by the verifier.

mod common;

use std::sync::Arc;

use leadmaps_core::ErrorKind;
use leadmaps_core::audit::{
    AuditAction, AuditDraft, AuditId, AuditRecord, AuditStore, AuditStoreExt, ChainHead,
    CheckpointSigner, Problem, ProblemKind, Target, canonical_json, record_hash, seal_after,
};
use leadmaps_core::clock::Clock;
use leadmaps_core::crypto::{Kek, KeyRing};
use leadmaps_core::tenancy::{Action, Scope, WorkspaceId};
use leadmaps_store_postgres::{DEFAULT_APP_ROLE, FindingKind, OWNER_ROLE, PostgresStore, doctor};
use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use common::{Db, Tenants};

fn signer() -> CheckpointSigner {
    CheckpointSigner::new(
        &KeyRing::new([Kek::new(1, &(1..=32).collect::<Vec<u8>>()).unwrap()]).unwrap(),
    )
}

fn tenants() -> Tenants {
    Tenants::new(datetime!(2026-03-01 09:00 UTC))
}

/// A workspace row put in directly, so its log holds exactly the records a test appends, from
/// seq 1 (through the store, `workspace.created` would be seq 1; the conformance suite checks
/// that).
async fn bare_workspace(db: &Db) -> WorkspaceId {
    let ws = WorkspaceId::new();
    db.superuser()
        .await
        .execute(
            "INSERT INTO leadmaps.workspaces (workspace_id, name, region, created_at)
             VALUES ($1, 'test workspace', 'eu', now())",
            &[ws.as_uuid()],
        )
        .await
        .unwrap();
    ws
}

async fn store(db: &Db, pool: usize) -> PostgresStore {
    PostgresStore::connect(&db.store_config().with_pool_size(pool))
        .await
        .expect("connect")
}

/// The `n`th change of a workspace's name.
fn renamed(scope: &Scope, n: usize) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::WorkspaceRenamed,
        Target::workspace(scope.workspace()),
    )
    .with_before(json!({ "name": format!("name {n}") }))
    .with_after(json!({ "name": format!("name {}", n + 1) }))
    .with_request_id(format!("req-{n}"))
}

/// Appends `count` records to `ws`'s log, a second apart.
async fn log(
    store: &PostgresStore,
    t: &Tenants,
    ws: WorkspaceId,
    count: usize,
) -> Vec<AuditRecord> {
    let scope = t.admin(ws, Action::WorkspaceUpdate);
    let mut records = Vec::new();
    for n in 0..count {
        t.clock.advance(Duration::seconds(1));
        records.push(
            store
                .append_audit(&scope, renamed(&scope, n), t.clock.now())
                .await
                .expect("append"),
        );
    }
    records
}

/// Signs and stores a checkpoint of `ws`'s log at `head`.
async fn checkpoint(store: &PostgresStore, t: &Tenants, ws: WorkspaceId, head: ChainHead) {
    t.clock.advance(Duration::seconds(1));
    let checkpoint = signer().sign(ws, head, t.clock.now());
    store
        .put_checkpoint(&t.admin(ws, Action::AuditRead), &checkpoint)
        .await
        .unwrap();
}

/// What the verifier finds in `ws`'s log as the store reads it back.
async fn problem(store: &PostgresStore, t: &Tenants, ws: WorkspaceId) -> Option<Problem> {
    let report = store
        .verify_audit(&t.admin(ws, Action::AuditRead), &signer())
        .await
        .expect("the log reads");
    report.problem
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRIGGERS_OFF: &str =
    "ALTER TABLE leadmaps.audit_records DISABLE TRIGGER audit_records_append_only;
     ALTER TABLE leadmaps.audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only;";
const TRIGGERS_ON: &str =
    "ALTER TABLE leadmaps.audit_records ENABLE ALWAYS TRIGGER audit_records_append_only;
     ALTER TABLE leadmaps.audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_append_only;";

/// Runs `sql` as a superuser with the append-only triggers disabled, in one transaction.
async fn tamper(db: &Db, sql: &str) {
    let mut su = db.superuser().await;
    let tx = su.transaction().await.unwrap();
    tx.batch_execute(TRIGGERS_OFF).await.unwrap();
    tx.batch_execute(sql).await.expect(sql);
    tx.batch_execute(TRIGGERS_ON).await.unwrap();
    tx.commit().await.unwrap();
}

/// Writes `record` as a raw row, as a superuser who computed it (and its hash) by hand would.
async fn insert_raw(su: &Client, record: &AuditRecord) {
    let json = |value: &Option<Value>| {
        value
            .as_ref()
            .map(|v| String::from_utf8(canonical_json(v)).unwrap())
    };
    su.execute(
        "INSERT INTO leadmaps.audit_records (id, workspace_id, seq, recorded_at, actor_kind,
             actor_subject, actor_grant, action, target_kind, target_id, before_json, after_json,
             patch_json, request_id, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            record.id.as_uuid(),
            record.workspace.as_uuid(),
            &i64::try_from(record.seq).unwrap(),
            &record.at,
            &record.actor.kind(),
            &record.actor.subject(),
            &record.actor.grant().map(|g| *g.as_uuid()),
            &record.action.as_str(),
            &record.target.kind,
            &record.target.id,
            &json(&record.before),
            &json(&record.after),
            &String::from_utf8(canonical_json(
                &serde_json::to_value(&record.patch).unwrap(),
            ))
            .unwrap(),
            &record.request_id,
            &&record.prev_hash[..],
            &&record.hash[..],
        ],
    )
    .await
    .unwrap();
}

/// Runs `sql` in a savepoint and returns the SQLSTATE and message it failed with.
async fn refused(tx: &mut tokio_postgres::Transaction<'_>, sql: &str) -> (SqlState, String) {
    let savepoint = tx.savepoint("probe").await.unwrap();
    let error = savepoint.batch_execute(sql).await.expect_err(sql);
    savepoint.rollback().await.unwrap();
    let db = error.as_db_error().expect("a server error");
    (db.code().clone(), db.message().to_owned())
}

const EDITS: [&str; 3] = [
    "UPDATE leadmaps.audit_records SET target_id = 'x'",
    "DELETE FROM leadmaps.audit_records",
    "TRUNCATE leadmaps.audit_records",
];
const CHECKPOINT_EDITS: [&str; 3] = [
    "UPDATE leadmaps.audit_checkpoints SET seq = seq + 1",
    "DELETE FROM leadmaps.audit_checkpoints",
    "TRUNCATE leadmaps.audit_checkpoints",
];

/// UPDATE, DELETE and TRUNCATE of records and checkpoints are refused to the app role (no
/// privilege), to the owner role and to a superuser (the trigger, also in replica mode); the log
/// is intact afterwards.
#[tokio::test]
async fn nobody_changes_or_removes_audit_rows_through_sql() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = store(&db, 2).await;
            let t = tenants();
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 3).await;
            checkpoint(&store, &t, ws, records[2].head()).await;

            let mut app = db.connect_as(DEFAULT_APP_ROLE).await;
            let mut tx = app.transaction().await.unwrap();
            tx.execute(
                "SELECT set_config('leadmaps.workspace_id', $1, true)",
                &[&ws.to_string()],
            )
            .await
            .unwrap();
            let visible: i64 = tx
                .query_one("SELECT count(*) FROM leadmaps.audit_records", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(visible, 3, "the app role reads its workspace's records");
            for sql in EDITS.iter().chain(&CHECKPOINT_EDITS) {
                let (code, _) = refused(&mut tx, sql).await;
                assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "app role: {sql}");
            }
            tx.rollback().await.unwrap();

            let mut su = db.superuser().await;
            let mut tx = su.transaction().await.unwrap();
            tx.batch_execute(&format!("SET LOCAL ROLE {OWNER_ROLE}"))
                .await
                .unwrap();
            for sql in EDITS.iter().chain(&CHECKPOINT_EDITS) {
                let (code, message) = refused(&mut tx, sql).await;
                assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "owner: {sql}");
                assert!(message.contains("append-only"), "owner: {sql}: {message}");
            }
            tx.batch_execute("RESET ROLE").await.unwrap();
            for sql in EDITS.iter().chain(&CHECKPOINT_EDITS) {
                let (code, message) = refused(&mut tx, sql).await;
                assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "superuser: {sql}");
                assert!(
                    message.contains("append-only"),
                    "superuser: {sql}: {message}"
                );
            }
            // Replication mode silences ordinary triggers, not these (ENABLE ALWAYS).
            tx.batch_execute("SET LOCAL session_replication_role = replica")
                .await
                .unwrap();
            for sql in EDITS.iter().chain(&CHECKPOINT_EDITS) {
                let (code, _) = refused(&mut tx, sql).await;
                assert_eq!(
                    code,
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    "replica mode: {sql}"
                );
            }
            tx.rollback().await.unwrap();

            let read = t.admin(ws, Action::AuditRead);
            assert_eq!(store.all_audit_records(&read).await.unwrap(), records);
            assert_eq!(store.checkpoints(&read).await.unwrap().len(), 1);
            assert_eq!(problem(&store, &t, ws).await, None);
            store.close();
        })
        .await;
}

/// Values come back exactly: floats that need full precision, U+0000 and other control
/// characters, integers at the ends of their ranges, keys needing JSON Pointer escapes; an
/// absent before is SQL NULL, a present JSON null the text `null`.
#[tokio::test]
async fn every_value_round_trips_exactly() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = store(&db, 2).await;
            let t = tenants();
            let ws = bare_workspace(&db).await;
            let scope = t.admin(ws, Action::WorkspaceUpdate);
            // Sub-microsecond parts are dropped by sealing.
            t.clock.advance(Duration::nanoseconds(987_654_321));
            let awkward = json!({
                "floats": [1.947_700_395_895_162e-169, 5e-324, f64::MAX, -1.5e300, 0.1, 2.5],
                "ints": [u64::MAX, i64::MIN, 0],
                "text": "nul \u{0} bell \u{7} quote \" backslash \\ ✓ 🦀",
                "": {"a/b~c": [], "nested": [[[{"deep": null}]]]},
            });
            let drafts = [
                AuditDraft::new(
                    &scope,
                    AuditAction::SiteAdded,
                    Target::new("site", "example.com"),
                )
                .with_after(awkward.clone()),
                AuditDraft::new(&scope, AuditAction::WorkspaceRenamed, Target::workspace(ws))
                    .with_before(Value::Null)
                    .with_after(json!({"name": "x"})),
                AuditDraft::new(
                    &scope,
                    AuditAction::StaffRead,
                    Target::new("events", "ü ✓ 2026-03"),
                ),
            ];
            let mut appended = Vec::new();
            for draft in drafts {
                appended.push(
                    store
                        .append_audit(&scope, draft, t.clock.now())
                        .await
                        .unwrap(),
                );
            }
            assert_eq!(appended[0].at.nanosecond() % 1_000, 0);
            assert_eq!(appended[0].after.as_ref(), Some(&awkward));
            let read = t.admin(ws, Action::AuditRead);
            assert_eq!(store.all_audit_records(&read).await.unwrap(), appended);
            assert_eq!(problem(&store, &t, ws).await, None);

            let su = db.superuser().await;
            let rows = su
                .query(
                    "SELECT before_json, after_json FROM leadmaps.audit_records
                     WHERE workspace_id = $1 ORDER BY seq",
                    &[ws.as_uuid()],
                )
                .await
                .unwrap();
            let columns: Vec<(Option<String>, Option<String>)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            assert_eq!(columns[0].0, None, "absent: SQL NULL");
            assert_eq!(columns[1].0.as_deref(), Some("null"), "present JSON null");
            assert_eq!((&columns[2].0, &columns[2].1), (&None, &None));
            assert_eq!(
                columns[0].1.as_deref().map(str::as_bytes),
                Some(&canonical_json(&awkward)[..]),
                "stored as canonical JSON text"
            );
            store.close();
        })
        .await;
}

/// Appends through two stores (two pools, as two servers would) and many connections each,
/// interleaved over two workspaces, get consecutive seqs and one valid chain per workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_many_connections_get_consecutive_seqs() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let stores = [Arc::new(store(&db, 6).await), Arc::new(store(&db, 6).await)];
            let t = Arc::new(tenants());
            let (a, b) = (bare_workspace(&db).await, bare_workspace(&db).await);
            let (scope_a, scope_b) = (
                t.admin(a, Action::WorkspaceUpdate),
                t.admin(b, Action::WorkspaceUpdate),
            );
            let tasks: Vec<_> = (0..120)
                .map(|n| {
                    let store = stores[n % 2].clone();
                    let scope = if n % 4 == 3 {
                        scope_b.clone()
                    } else {
                        scope_a.clone()
                    };
                    let now = t.clock.now();
                    tokio::spawn(async move {
                        store.append_audit(&scope, renamed(&scope, n), now).await
                    })
                })
                .collect();
            let mut appended = Vec::new();
            for task in tasks {
                appended.push(
                    task.await
                        .unwrap()
                        .expect("every concurrent append succeeds"),
                );
            }
            for (ws, count) in [(a, 90u64), (b, 30)] {
                let mut mine: Vec<AuditRecord> = appended
                    .iter()
                    .filter(|r| r.workspace == ws)
                    .cloned()
                    .collect();
                mine.sort_by_key(|r| r.seq);
                assert_eq!(
                    mine.iter().map(|r| r.seq).collect::<Vec<_>>(),
                    (1..=count).collect::<Vec<_>>(),
                    "consecutive seqs, none twice"
                );
                let read = t.admin(ws, Action::AuditRead);
                assert_eq!(
                    stores[1].all_audit_records(&read).await.unwrap(),
                    mine,
                    "stored as returned"
                );
                assert_eq!(
                    problem(&stores[0], &t, ws).await,
                    None,
                    "one chain, no fork"
                );
            }
            for store in &stores {
                store.close();
            }
        })
        .await;
}

/// Expects the verifier to name `kind` at position `seq`, with the record found there.
#[track_caller]
fn assert_problem(problem: Option<Problem>, kind: ProblemKind, seq: u64, record: Option<AuditId>) {
    let problem =
        problem.unwrap_or_else(|| panic!("expected {kind:?} at seq {seq}, found nothing"));
    assert_eq!((problem.kind, problem.seq), (kind, seq), "{problem}");
    if record.is_some() {
        assert_eq!(problem.record, record, "{problem}");
    }
}

/// A superuser who disables the triggers can rewrite the rows; the verifier names what was done:
/// an edited field, a deleted record, two records swapped (with and without rehashing), a tail
/// dropped after a checkpoint (and regrown), a record replaced by a validly hashed other one.
#[tokio::test]
async fn tampering_past_the_triggers_is_named_by_the_verifier() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = store(&db, 2).await;
            let t = tenants();
            let su = db.superuser().await;

            // Edits of single fields, each in its own workspace's log.
            for (column, value) in [
                ("target_id", "'edited'"),
                ("after_json", "'{\"name\":\"someone else\"}'"),
                ("recorded_at", "recorded_at + interval '1 microsecond'"),
                ("actor_kind", "'collector', actor_subject = ''"),
                ("request_id", "NULL"),
                ("prev_hash", "decode(repeat('11', 32), 'hex')"),
            ] {
                let ws = bare_workspace(&db).await;
                let records = log(&store, &t, ws, 5).await;
                tamper(
                    &db,
                    &format!("UPDATE leadmaps.audit_records SET {column} = {value} WHERE workspace_id = '{ws}' AND seq = 3"),
                )
                .await;
                assert_problem(problem(&store, &t, ws).await, ProblemKind::EditedRecord, 3, Some(records[2].id));
            }

            // The same value in other JSON text is no edit: values are what the hash covers.
            let ws = bare_workspace(&db).await;
            log(&store, &t, ws, 3).await;
            tamper(
                &db,
                &format!("UPDATE leadmaps.audit_records SET after_json = '{{ \"name\" : \"name 2\" }}' WHERE workspace_id = '{ws}' AND seq = 2"),
            )
            .await;
            assert_eq!(problem(&store, &t, ws).await, None);

            // A deleted record.
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 5).await;
            tamper(&db, &format!("DELETE FROM leadmaps.audit_records WHERE workspace_id = '{ws}' AND seq = 3")).await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::DeletedRecords, 3, Some(records[3].id));

            // Two records swapped. The store reads in seq order and the seq is under the hash, so
            // a plain swap shows as an edit where it starts ...
            let swap = |ws: WorkspaceId| {
                format!(
                    "UPDATE leadmaps.audit_records SET seq = 1000 WHERE workspace_id = '{ws}' AND seq = 2;
                     UPDATE leadmaps.audit_records SET seq = 2 WHERE workspace_id = '{ws}' AND seq = 3;
                     UPDATE leadmaps.audit_records SET seq = 3 WHERE workspace_id = '{ws}' AND seq = 1000;"
                )
            };
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 5).await;
            tamper(&db, &swap(ws)).await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::EditedRecord, 2, Some(records[2].id));
            // ... and a swap with both records rehashed (the chain hash is keyless) breaks the
            // chain: the record now at seq 2 does not follow seq 1.
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 5).await;
            let mut rehashed = String::new();
            for (record, seq) in [(&records[1], 3u64), (&records[2], 2)] {
                let mut moved = record.clone();
                moved.seq = seq;
                rehashed.push_str(&format!(
                    "UPDATE leadmaps.audit_records SET hash = decode('{}', 'hex') WHERE id = '{}';",
                    hex(&record_hash(&moved)),
                    record.id
                ));
            }
            tamper(&db, &format!("{}{rehashed}", swap(ws))).await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::Fork, 2, Some(records[2].id));

            // The tail dropped after a checkpoint: the checkpoint names a seq beyond the end ...
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 5).await;
            checkpoint(&store, &t, ws, records[4].head()).await;
            assert_eq!(problem(&store, &t, ws).await, None);
            tamper(&db, &format!("DELETE FROM leadmaps.audit_records WHERE workspace_id = '{ws}' AND seq >= 4")).await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::DroppedTail, 5, None);
            // ... and once the log has grown back past it, another head than it signed.
            log(&store, &t, ws, 2).await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::CheckpointMismatch, 5, None);

            // A fork: record 3 replaced by a different record, validly sealed after record 2.
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 5).await;
            let scope = t.admin(ws, Action::WorkspaceUpdate);
            let forged = seal_after(
                records[1].head(),
                ws,
                AuditDraft::new(&scope, AuditAction::IpAllowlistUpdated, Target::workspace(ws))
                    .with_after(json!({"ranges": ["0.0.0.0/0"]})),
                records[2].at,
                AuditId::new(),
            )
            .unwrap();
            assert_eq!(forged.seq, 3);
            tamper(&db, &format!("DELETE FROM leadmaps.audit_records WHERE workspace_id = '{ws}' AND seq = 3")).await;
            // INSERT needs no trigger out of the way: appending is allowed.
            insert_raw(&su, &forged).await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::Fork, 4, Some(records[3].id));

            // Replacing the head leaves nothing after it to disagree: only a checkpoint tells.
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 3).await;
            checkpoint(&store, &t, ws, records[2].head()).await;
            let scope = t.admin(ws, Action::WorkspaceUpdate);
            let forged = seal_after(records[1].head(), ws, renamed(&scope, 99), records[2].at, AuditId::new()).unwrap();
            tamper(&db, &format!("DELETE FROM leadmaps.audit_records WHERE workspace_id = '{ws}' AND seq = 3")).await;
            // INSERT needs no trigger out of the way: appending is allowed.
            insert_raw(&su, &forged).await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::CheckpointMismatch, 3, None);

            // A checkpoint moved forward without the key.
            let ws = bare_workspace(&db).await;
            let records = log(&store, &t, ws, 3).await;
            checkpoint(&store, &t, ws, records[1].head()).await;
            tamper(
                &db,
                &format!(
                    "UPDATE leadmaps.audit_checkpoints SET seq = 3, head_hash = decode('{}', 'hex') WHERE workspace_id = '{ws}'",
                    hex(&records[2].hash)
                ),
            )
            .await;
            assert_problem(problem(&store, &t, ws).await, ProblemKind::BadCheckpointMac, 3, None);

            // While a trigger stays disabled, the doctor says so.
            su.batch_execute("ALTER TABLE leadmaps.audit_records DISABLE TRIGGER audit_records_append_only")
                .await
                .unwrap();
            let report = doctor(&db.store_config()).await.unwrap();
            assert!(report.has(FindingKind::AuditNotAppendOnly, "leadmaps.audit_records"), "{report}");
            su.batch_execute(TRIGGERS_ON).await.unwrap();
            let report = doctor(&db.store_config()).await.unwrap();
            assert!(report.is_clean(), "{report}");
            store.close();
        })
        .await;
}

/// Refusals store nothing: a seq beyond bigint, a checkpoint whose time the column would round,
/// and a checkpoint seq beyond bigint.
#[tokio::test]
async fn what_cannot_be_stored_exactly_is_refused() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = store(&db, 2).await;
            let t = tenants();
            let ws = bare_workspace(&db).await;
            let read = t.admin(ws, Action::AuditRead);

            let mut last = log(&store, &t, ws, 1).await.remove(0);
            last.seq = i64::MAX as u64;
            last.id = AuditId::new();
            last.prev_hash = [9; 32];
            last.hash = record_hash(&last);
            let su = db.superuser().await;
            insert_raw(&su, &last).await;
            let scope = t.admin(ws, Action::WorkspaceUpdate);
            let error = store
                .append_audit(&scope, renamed(&scope, 1), t.clock.now())
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
            assert_eq!(
                store.all_audit_records(&read).await.unwrap().len(),
                2,
                "nothing stored"
            );

            let mut checkpoint = signer().sign(ws, ChainHead::GENESIS, t.clock.now());
            checkpoint.at += Duration::nanoseconds(1);
            let error = store.put_checkpoint(&read, &checkpoint).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
            let mut checkpoint = signer().sign(ws, ChainHead::GENESIS, t.clock.now());
            checkpoint.seq = u64::MAX;
            let error = store.put_checkpoint(&read, &checkpoint).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
            assert!(store.checkpoints(&read).await.unwrap().is_empty());
            // Reads past the end of bigint find nothing rather than failing.
            assert!(
                store
                    .audit_records(&read, u64::MAX, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            store.close();
        })
        .await;
}
