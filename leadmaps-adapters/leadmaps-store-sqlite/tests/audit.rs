//! The audit log on a file: exact round trips, appends from two connections, the schema's refusal
//! of UPDATE and DELETE, and tampering by someone with access to the file (who drops the
//! triggers first), each named by the verifier.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use leadmaps_core::ErrorKind;
use leadmaps_core::audit::{
    self, AuditAction, AuditDraft, AuditId, AuditRecord, AuditStore, AuditStoreExt, ChainHead,
    CheckpointSigner, ProblemKind, Report, Target, canonical_json,
};
use leadmaps_core::clock::{Clock, ManualClock};
use leadmaps_core::crypto::{Kek, KeyRing};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Role, Scope, SystemTask, UserId, WorkspaceId,
};
use leadmaps_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

/// A file store with one workspace, its admin and a checkpoint signer.
struct Log {
    path: PathBuf,
    store: SqliteStore,
    clock: Arc<ManualClock>,
    gate: Gate,
    ws: WorkspaceId,
    admin: Principal,
    signer: CheckpointSigner,
    // Last: the directory outlives the store's connections.
    _dir: tempfile::TempDir,
}

impl Log {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = SqliteStore::open(&path).unwrap();
        // Nanoseconds on the clock: sealing keeps whole microseconds.
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::UNIX_EPOCH
                + Duration::days(20_500)
                + Duration::nanoseconds(987_654_321),
        ));
        let gate = Gate::new(clock.clone());
        let ws = WorkspaceId::new();
        // The workspace row goes in directly, so the log holds exactly the records each test
        // appends, numbered from 1 (through the store, `workspace.created` would be seq 1; the
        // conformance suite checks that).
        raw(&path)
            .execute(
                "INSERT INTO workspaces (workspace_id, name, region, created_at) \
                 VALUES (?1, 'Audited', 'eu', 0)",
                [ws.as_uuid().as_bytes()],
            )
            .unwrap();
        let kek = Kek::new(1, &(1..=32).collect::<Vec<u8>>()).unwrap();
        Self {
            path,
            store,
            clock,
            gate,
            ws,
            admin: Principal::member(UserId::new(), [(ws, Role::Admin)]),
            signer: CheckpointSigner::new(&KeyRing::new([kek]).unwrap()),
            _dir: dir,
        }
    }

    /// A log of `n` retention changes, one second apart.
    async fn with(n: u64) -> Self {
        let log = Self::new().await;
        for i in 0..n {
            log.append(i).await;
        }
        log
    }

    fn scope(&self, action: Action) -> Scope {
        self.gate.authorize(&self.admin, self.ws, action).unwrap()
    }

    fn draft(&self, i: u64) -> AuditDraft {
        let scope = self.scope(Action::WorkspaceUpdate);
        AuditDraft::new(
            &scope,
            AuditAction::RetentionPolicyUpdated,
            Target::workspace(self.ws),
        )
        .with_before(json!({ "days": i }))
        .with_after(json!({ "days": i + 1 }))
        .with_request_id(format!("req-{i}"))
    }

    async fn append(&self, i: u64) -> AuditRecord {
        self.clock.advance(Duration::seconds(1));
        self.store
            .append_audit(
                &self.scope(Action::WorkspaceUpdate),
                self.draft(i),
                self.clock.now(),
            )
            .await
            .unwrap()
    }

    async fn records(&self) -> Vec<AuditRecord> {
        self.store
            .all_audit_records(&self.scope(Action::AuditRead))
            .await
            .unwrap()
    }

    /// Signs and stores a checkpoint of the log as it is now.
    async fn checkpoint(&self) {
        let head = self
            .records()
            .await
            .last()
            .map_or(ChainHead::GENESIS, AuditRecord::head);
        self.clock.advance(Duration::seconds(1));
        let checkpoint = self.signer.sign(self.ws, head, self.clock.now());
        self.store
            .put_checkpoint(&self.scope(Action::AuditRead), &checkpoint)
            .await
            .unwrap();
    }

    async fn verify(&self) -> Report {
        self.store
            .verify_audit(&self.scope(Action::AuditRead), &self.signer)
            .await
            .unwrap()
    }

    /// The problem the verifier names: its kind and seq.
    async fn problem(&self) -> (ProblemKind, u64) {
        let report = self.verify().await;
        let problem = report.problem.expect("tampering is found");
        (problem.kind, problem.seq)
    }

    /// The attacker: a connection of their own on the file.
    fn raw(&self) -> rusqlite::Connection {
        raw(&self.path)
    }

    /// The attacker's connection, with the append-only triggers dropped.
    fn attacker(&self) -> rusqlite::Connection {
        let conn = self.raw();
        let triggers: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' \
                 AND tbl_name IN ('audit_records', 'audit_checkpoints')",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(triggers.len(), 5, "{triggers:?}");
        for trigger in triggers {
            conn.execute_batch(&format!("DROP TRIGGER {trigger}"))
                .unwrap();
        }
        conn
    }
}

fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

fn json_text(value: &Value) -> String {
    String::from_utf8(canonical_json(value)).unwrap()
}

/// Writes `record` as the store would, in place of the row with its seq.
fn overwrite(conn: &rusqlite::Connection, record: &AuditRecord) {
    let changed = conn
        .execute(
            "UPDATE audit_records SET id = ?3, at = ?4, actor_kind = ?5, actor_subject = ?6, \
             actor_grant = ?7, action = ?8, target_kind = ?9, target_id = ?10, before = ?11, \
             after = ?12, patch = ?13, request_id = ?14, prev_hash = ?15, hash = ?16 \
             WHERE workspace_id = ?1 AND seq = ?2",
            rusqlite::params![
                record.workspace.as_uuid().as_bytes(),
                i64::try_from(record.seq).unwrap(),
                record.id.as_uuid().as_bytes(),
                i64::try_from(record.at.unix_timestamp_nanos() / 1_000).unwrap(),
                record.actor.kind(),
                record.actor.subject(),
                record.actor.grant().map(|g| *g.as_uuid().as_bytes()),
                record.action.as_str(),
                record.target.kind,
                record.target.id,
                record.before.as_ref().map(json_text),
                record.after.as_ref().map(json_text),
                json_text(&serde_json::to_value(&record.patch).unwrap()),
                record.request_id,
                record.prev_hash,
                record.hash,
            ],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn a_sound_log_verifies_and_reads_back_exactly_after_reopening() {
    let log = Log::new().await;
    let scope = log.scope(Action::WorkspaceUpdate);
    // Values whose JSON text is easy to get subtly wrong: floats that need all 17 digits,
    // extremes, escapes, non-ASCII, keys needing sorting, JSON null beside an absent value.
    let tricky = json!({
        "sum": 0.1 + 0.2,
        "third": 1.0 / 3.0,
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "neg_zero": -0.0,
        "whole_float": 2.0,
        "u64": u64::MAX,
        "i64": i64::MIN,
        "text": "tab\t quote\" backslash\\ nul\u{0} é ✓ 𝄞",
        "z": [null, true, false, [], {}],
        "a": {"b~/c": "pointer escapes"},
        "random": random_floats(500),
    });
    let drafts = [
        AuditDraft::new(
            &scope,
            AuditAction::SiteAdded,
            Target::new("site", "a.example"),
        )
        .with_before(Value::Null)
        .with_after(tricky.clone()),
        AuditDraft::new(
            &scope,
            AuditAction::WorkspaceRenamed,
            Target::workspace(log.ws),
        )
        .with_before(tricky)
        .with_after(json!({"name": "renamed"})),
        AuditDraft::new(&scope, AuditAction::StaffRead, Target::new("events", "all")),
    ];
    let mut appended = Vec::new();
    for draft in drafts {
        appended.push(
            log.store
                .append_audit(&scope, draft, log.clock.now())
                .await
                .unwrap(),
        );
    }
    assert_eq!(appended[0].before, Some(Value::Null), "JSON null is kept");
    assert_eq!(appended[2].before, None, "and differs from no value");
    log.checkpoint().await;

    let reopened = SqliteStore::open(&log.path).unwrap();
    let read = log.scope(Action::AuditRead);
    assert_eq!(reopened.all_audit_records(&read).await.unwrap(), appended);
    let report = reopened.verify_audit(&read, &log.signer).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.checkpoints), (3, 1));

    // In the file: canonical JSON text, SQL NULL for the absent value.
    let conn = log.raw();
    let (before, after): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT before, after FROM audit_records WHERE seq = 3",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((before, after), (None, None));
    let before: String = conn
        .query_row(
            "SELECT before FROM audit_records WHERE seq = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(before, "null");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_from_two_connections_on_one_file_chain() {
    let log = Log::new().await;
    let other = SqliteStore::open(&log.path).unwrap();
    let scope = log.scope(Action::WorkspaceUpdate);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 {
                log.store.clone()
            } else {
                other.clone()
            };
            let (scope, draft, at) = (scope.clone(), log.draft(i), log.clock.now());
            tokio::spawn(async move { store.append_audit(&scope, draft, at).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().expect("append").seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    let report = log.verify().await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, 40);
}

#[tokio::test]
async fn the_schema_refuses_update_delete_and_out_of_order_inserts() {
    let log = Log::with(3).await;
    log.checkpoint().await;
    let records = log.records().await;
    let conn = log.raw();
    let refused = |sql: &str, why: &str| {
        let error = conn.execute_batch(sql).expect_err(sql).to_string();
        assert!(error.contains(why), "{sql}: {error}");
    };
    for sql in [
        "UPDATE audit_records SET after = '{\"days\":365}' WHERE seq = 2",
        "UPDATE audit_records SET seq = seq + 10",
        "DELETE FROM audit_records WHERE seq = 3",
        "DELETE FROM audit_records",
    ] {
        refused(sql, "audit records are append-only");
    }
    for sql in [
        "UPDATE audit_checkpoints SET seq = 0",
        "DELETE FROM audit_checkpoints",
    ] {
        refused(sql, "audit checkpoints are append-only");
    }
    // REPLACE deletes the conflicting row without firing delete triggers, and an upsert
    // updates it: the insert trigger refuses both, as it refuses any seq but the next one.
    // (A checkpoint's key is its whole row, so REPLACE there can only put back the same row.)
    for sql in [
        "INSERT OR REPLACE INTO audit_records SELECT * FROM audit_records WHERE seq = 2",
        "INSERT INTO audit_records SELECT * FROM audit_records WHERE seq = 2 \
         ON CONFLICT DO UPDATE SET after = 'null'",
    ] {
        refused(sql, "appended in order");
    }
    // The next seq, but not chained to the head (a copy of record 3 renumbered).
    refused(
        "INSERT INTO audit_records (workspace_id, seq, id, at, actor_kind, actor_subject, \
         actor_grant, action, target_kind, target_id, before, after, patch, request_id, \
         prev_hash, hash) SELECT workspace_id, 4, id, at, actor_kind, actor_subject, actor_grant, \
         action, target_kind, target_id, before, after, patch, request_id, prev_hash, hash \
         FROM audit_records WHERE seq = 3",
        "appended in order",
    );
    // A gap.
    refused(
        "INSERT INTO audit_records (workspace_id, seq, id, at, actor_kind, actor_subject, \
         actor_grant, action, target_kind, target_id, before, after, patch, request_id, \
         prev_hash, hash) SELECT workspace_id, 5, id, at, actor_kind, actor_subject, actor_grant, \
         action, target_kind, target_id, before, after, patch, request_id, hash, hash \
         FROM audit_records WHERE seq = 3",
        "appended in order",
    );
    drop(conn);
    assert_eq!(log.records().await, records, "nothing changed");
    let report = log.verify().await;
    assert!(report.is_ok(), "{report}");
    // And the store goes on appending.
    assert_eq!(log.append(3).await.seq, 4);
}

#[tokio::test]
async fn an_edited_field_is_named() {
    let log = Log::with(6).await;
    log.checkpoint().await;
    log.attacker()
        .execute(
            "UPDATE audit_records SET after = '{\"days\":365}' WHERE seq = 4",
            [],
        )
        .unwrap();
    assert_eq!(log.problem().await, (ProblemKind::EditedRecord, 4));
    let report = log.verify().await;
    assert_eq!(report.verified.seq, 3, "sound up to the record before");

    // Other fields: the actor, the time, the request id.
    for (sql, seq) in [
        (
            "UPDATE audit_records SET actor_kind = 'collector', actor_subject = '' WHERE seq = 2",
            2,
        ),
        ("UPDATE audit_records SET at = at + 1 WHERE seq = 1", 1),
        (
            "UPDATE audit_records SET request_id = NULL WHERE seq = 5",
            5,
        ),
    ] {
        let log = Log::with(6).await;
        log.attacker().execute(sql, []).unwrap();
        assert_eq!(
            log.problem().await,
            (ProblemKind::EditedRecord, seq),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let log = Log::with(6).await;
    log.checkpoint().await;
    log.attacker()
        .execute("DELETE FROM audit_records WHERE seq = 3", [])
        .unwrap();
    let report = log.verify().await;
    let problem = report.problem.expect("tampering is found");
    assert_eq!(
        (problem.kind, problem.seq, problem.record_seq),
        (ProblemKind::DeletedRecords, 3, Some(4))
    );
}

/// Every read is in seq order and the seq is under the hash, so two records whose seqs were
/// swapped come back in the new order, each claiming a seq its hash does not cover: the first
/// is an edited record. (A log handed to the verifier out of seq order is
/// [`ProblemKind::ReorderedRecords`]; the store never reads one.)
#[tokio::test]
async fn records_reordered_by_swapping_their_seqs_are_named() {
    let log = Log::with(6).await;
    log.checkpoint().await;
    let before = log.records().await;
    log.attacker()
        .execute_batch(
            "BEGIN; \
             UPDATE audit_records SET seq = 1000 WHERE seq = 3; \
             UPDATE audit_records SET seq = 3 WHERE seq = 4; \
             UPDATE audit_records SET seq = 4 WHERE seq = 1000; \
             COMMIT;",
        )
        .unwrap();
    let after = log.records().await;
    assert_eq!((after[2].id, after[3].id), (before[3].id, before[2].id));
    let report = log.verify().await;
    let problem = report.problem.expect("tampering is found");
    assert_eq!(
        (problem.kind, problem.seq, problem.record),
        (ProblemKind::EditedRecord, 3, Some(before[3].id))
    );
    // The same records in their stored order, as the verifier would name a reorder.
    let mut reordered = before.clone();
    reordered.swap(2, 3);
    let report = audit::verify(log.ws, &reordered, &[], &log.signer);
    assert_eq!(
        report.problem.map(|p| (p.kind, p.seq)),
        Some((ProblemKind::ReorderedRecords, 3))
    );
}

#[tokio::test]
async fn a_dropped_tail_is_named() {
    let log = Log::with(8).await;
    log.checkpoint().await;
    let attacker = log.attacker();
    attacker
        .execute("DELETE FROM audit_records WHERE seq > 5", [])
        .unwrap();
    let report = log.verify().await;
    assert_eq!(report.verified.seq, 5, "what is left is sound");
    let problem = report.problem.expect("tampering is found");
    assert_eq!((problem.kind, problem.seq), (ProblemKind::DroppedTail, 8));
    // Without the checkpoint the cut is invisible: that is what checkpoints are for.
    attacker
        .execute("DELETE FROM audit_checkpoints", [])
        .unwrap();
    assert!(log.verify().await.is_ok());
}

#[tokio::test]
async fn a_fork_is_named() {
    // A record replaced by a different one, validly sealed after the same predecessor: it
    // verifies itself, but the next record does not chain to it.
    let log = Log::with(6).await;
    log.checkpoint().await;
    let records = log.records().await;
    let forged = audit::seal_after(
        records[3].head(),
        log.ws,
        log.draft(99),
        log.clock.now(),
        AuditId::new(),
    )
    .unwrap();
    assert_eq!(forged.seq, 5);
    overwrite(&log.attacker(), &forged);
    let report = log.verify().await;
    assert_eq!(report.verified.seq, 5, "the forged record itself passes");
    let problem = report.problem.expect("tampering is found");
    assert_eq!(
        (problem.kind, problem.seq, problem.record),
        (ProblemKind::Fork, 6, Some(records[5].id))
    );

    // Replacing the last record leaves no next record to break, but the checkpoint names the
    // head that was there.
    let log = Log::with(6).await;
    log.checkpoint().await;
    let records = log.records().await;
    let forged = audit::seal_after(
        records[4].head(),
        log.ws,
        log.draft(99),
        log.clock.now(),
        AuditId::new(),
    )
    .unwrap();
    overwrite(&log.attacker(), &forged);
    assert_eq!(log.problem().await, (ProblemKind::CheckpointMismatch, 6));
}

#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let log = Log::with(2).await;
    let read = log.scope(Action::AuditRead);
    // A checkpoint time with a sub-microsecond part is none the signer makes, and the column
    // keeps microseconds: refused, not rounded.
    let mut checkpoint = log.signer.sign(log.ws, ChainHead::GENESIS, log.clock.now());
    checkpoint.at += Duration::nanoseconds(1);
    assert_eq!(
        log.store
            .put_checkpoint(&read, &checkpoint)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid
    );
    // A seq beyond SQLite's INTEGER.
    let mut checkpoint = log.signer.sign(log.ws, ChainHead::GENESIS, log.clock.now());
    checkpoint.seq = u64::MAX;
    assert_eq!(
        log.store
            .put_checkpoint(&read, &checkpoint)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid
    );
    assert!(log.store.checkpoints(&read).await.unwrap().is_empty());
    // Reading past the end, however far.
    assert!(
        log.store
            .audit_records(&read, u64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A workspace this database does not hold.
    let elsewhere = WorkspaceId::new();
    let admin = Principal::member(UserId::new(), [(elsewhere, Role::Admin)]);
    let scope = log
        .gate
        .authorize(&admin, elsewhere, Action::WorkspaceUpdate)
        .unwrap();
    let draft = AuditDraft::new(
        &scope,
        AuditAction::WorkspaceRenamed,
        Target::workspace(elsewhere),
    );
    assert_eq!(
        log.store
            .append_audit(&scope, draft, log.clock.now())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(log.records().await.len(), 2);
}

/// `n` finite floats of every magnitude, from fixed random bits (xorshift64*).
fn random_floats(n: usize) -> Vec<f64> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut floats = Vec::with_capacity(n);
    while floats.len() < n {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let float = f64::from_bits(state.wrapping_mul(0x2545_f491_4f6c_dd1d));
        if float.is_finite() {
            floats.push(float);
        }
    }
    floats
}

/// Every finite float reads back from its canonical JSON text as itself. serde_json's default
/// float parser is off by one unit in the last place for many 17-digit texts (about a third of
/// these), which would fail a stored record's hash; this crate turns on its `float_roundtrip`.
#[test]
fn floats_read_back_from_canonical_json_exactly() {
    for float in random_floats(200_000) {
        let value = json!(float);
        let back: Value = serde_json::from_str(&json_text(&value)).unwrap();
        assert_eq!(back, value, "{float:e}");
    }
}

/// Log, then act: when the audit log cannot take a record, a grant is not opened, a staff read
/// is refused before it reads, a policy change and a retention batch change nothing.
#[tokio::test]
async fn nothing_happens_when_its_audit_record_cannot_be_written() {
    use leadmaps_core::auth::impersonation::{Impersonation, MAX_GRANT};
    use leadmaps_core::store::{PolicyChange, Store};
    use leadmaps_core::tenancy::StaffId;

    let log = Log::new().await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&log.path).unwrap());
    let service = Impersonation::new(store.clone(), log.gate.clone());
    let staff = Principal::Staff {
        staff: StaffId::new(),
        mfa: true,
        grant: None,
    };
    let (grant, _) = service
        .open(&staff, log.ws, "ticket 9", MAX_GRANT, false)
        .await
        .unwrap();
    let acting = service.principal(&staff, grant.grant.id).await.unwrap();

    // Someone breaks the log (a trigger refusing every insert).
    raw(&log.path)
        .execute_batch(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_records \
             BEGIN SELECT RAISE(ABORT, 'audit down'); END;",
        )
        .unwrap();
    let before = log.records().await;

    let read = log
        .gate
        .authorize(&acting, log.ws, Action::EventRead)
        .unwrap();
    assert!(
        service
            .record_read(&read, Target::workspace(log.ws), json!({"route": "events"}))
            .await
            .is_err(),
        "a staff read whose record fails is refused"
    );
    let second = service
        .open(&staff, log.ws, "ticket 10", MAX_GRANT, false)
        .await;
    assert!(second.is_err(), "no grant without its record");
    assert!(service.close(&acting).await.is_err());
    assert!(
        store
            .grant(grant.grant.id)
            .await
            .unwrap()
            .unwrap()
            .closed_at
            .is_none()
    );

    let update = log.scope(Action::WorkspaceUpdate);
    assert!(
        store
            .set_workspace_policy(
                &update,
                &PolicyChange::RetentionDays(Some(7)),
                log.clock.now()
            )
            .await
            .is_err()
    );
    let ws = store
        .workspace(&log.scope(Action::WorkspaceRead))
        .await
        .unwrap();
    assert_eq!(ws.policy.retention_days, None, "the change did not happen");

    let retention = log
        .gate
        .authorize(
            &Principal::System(SystemTask::Retention),
            log.ws,
            Action::RetentionEnforce,
        )
        .unwrap();
    let far = log.clock.now() + Duration::days(1);
    // Nothing to delete yet is no record and no error; with events it would fail whole (see
    // the events tests).
    assert_eq!(
        store
            .delete_events_before(&retention, far, 10, far)
            .await
            .unwrap(),
        (0, None)
    );
    assert_eq!(log.records().await, before, "the log is as it was");
}
