//! [`AuditStore`] on the `audit_records` and `audit_checkpoints` tables.
//!
//! An append is one IMMEDIATE transaction (the database's write lock taken up front, so appends
//! from every connection and process on the file serialise): read the head, [`seal_after`],
//! insert, commit. The schema refuses UPDATE and DELETE, and any insert but the next seq chained
//! to the head.

use async_trait::async_trait;
use leadmaps_core::audit::{
    AuditAction, AuditActor, AuditDraft, AuditId, AuditRecord, AuditStore, ChainHead, Checkpoint,
    PatchOp, Target, canonical_json, seal_after,
};
use leadmaps_core::tenancy::{Action, Denied, GrantId, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqliteStore;
use crate::codec::{corrupt, get_id, get_micros, get_text, id_bytes, unix_micros};
use crate::error::{classify, db};
use crate::sql;

impl SqliteStore {
    /// Log, then act: runs `change` in one IMMEDIATE transaction and appends the record it
    /// returns (none when it changed nothing) before committing, so the change and its record
    /// commit together or not at all.
    pub(crate) async fn logged<T, F>(
        &self,
        workspace: WorkspaceId,
        at: OffsetDateTime,
        change: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, Option<AuditDraft>)> + Send + 'static,
    {
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let (value, draft) = change(&tx)?;
                if let Some(draft) = draft {
                    append_in(&tx, workspace, draft, at)?;
                }
                tx.commit().map_err(db)?;
                Ok(value)
            })
            .await
    }
}

/// A seq or checkpoint seq as an INTEGER.
fn seq_integer(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::invalid("audit seq beyond the stored range"))
}

/// Canonical JSON as TEXT: what the hash covers, so it reads back as the same value.
fn json_text(value: &Value) -> String {
    String::from_utf8(canonical_json(value)).expect("canonical JSON is UTF-8")
}

fn get_seq(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let seq: i64 = row.get(column)?;
    u64::try_from(seq).map_err(|_| corrupt(column, Type::Integer, "audit seq"))
}

fn get_uuid(row: &Row<'_>, column: usize) -> rusqlite::Result<Uuid> {
    Ok(Uuid::from_bytes(row.get(column)?))
}

/// Reads a JSON TEXT column; SQL NULL is `None`, the text `null` is `Some(Value::Null)`.
fn get_json(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Value>> {
    get_text(row, column)?
        .map(|text| {
            serde_json::from_str(text).map_err(|_| corrupt(column, Type::Text, "audit JSON"))
        })
        .transpose()
}

/// Reads a row of [`sql::SELECT_AUDIT_RECORDS`].
fn read_record(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let actor_kind: String = row.get(4)?;
    let actor_subject: String = row.get(5)?;
    let grant: Option<[u8; 16]> = row.get(6)?;
    let grant = grant.map(|bytes| GrantId::from_uuid(Uuid::from_bytes(bytes)));
    let actor = AuditActor::from_parts(&actor_kind, &actor_subject, grant)
        .map_err(|_| corrupt(4, Type::Text, "audit actor"))?;
    let action: String = row.get(7)?;
    let action =
        AuditAction::parse(&action).ok_or_else(|| corrupt(7, Type::Text, "audit action"))?;
    let patch: String = row.get(12)?;
    let patch: Vec<PatchOp> =
        serde_json::from_str(&patch).map_err(|_| corrupt(12, Type::Text, "audit patch"))?;
    Ok(AuditRecord {
        workspace: get_id(row, 0)?,
        seq: get_seq(row, 1)?,
        id: AuditId::from_uuid(get_uuid(row, 2)?),
        at: get_micros(row, 3)?,
        actor,
        action,
        target: Target::new(row.get::<_, String>(8)?, row.get::<_, String>(9)?),
        before: get_json(row, 10)?,
        after: get_json(row, 11)?,
        patch,
        request_id: row.get(13)?,
        prev_hash: row.get(14)?,
        hash: row.get(15)?,
    })
}

/// Reads a row of [`sql::SELECT_AUDIT_CHECKPOINTS`].
fn read_checkpoint(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        workspace: get_id(row, 0)?,
        seq: get_seq(row, 1)?,
        head_hash: row.get(2)?,
        at: get_micros(row, 3)?,
        key_id: row.get(4)?,
        mac: row.get(5)?,
    })
}

/// Inserts a sealed record in the open transaction.
fn insert_record(conn: &rusqlite::Connection, record: &AuditRecord) -> Result<()> {
    let patch = serde_json::to_value(&record.patch).expect("a patch serialises");
    let mut insert = conn.prepare_cached(sql::INSERT_AUDIT_RECORD).map_err(db)?;
    insert
        .execute(params![
            id_bytes(record.workspace),
            seq_integer(record.seq)?,
            record.id.as_uuid().as_bytes(),
            unix_micros(record.at)?,
            record.actor.kind(),
            record.actor.subject(),
            record.actor.grant().map(|g| *g.as_uuid().as_bytes()),
            record.action.as_str(),
            record.target.kind,
            record.target.id,
            record.before.as_ref().map(json_text),
            record.after.as_ref().map(json_text),
            json_text(&patch),
            record.request_id,
            record.prev_hash,
            record.hash,
        ])
        .map_err(|e| classify(e, "audit seq taken"))?;
    Ok(())
}

/// Appends the next record of `workspace` inside `tx`, which must be an IMMEDIATE (writing)
/// transaction so the head read here is still the head at commit. Used by `append_audit` and by
/// every mutation that writes its audit record in its own transaction.
pub(crate) fn append_in(
    tx: &rusqlite::Transaction<'_>,
    workspace: WorkspaceId,
    draft: AuditDraft,
    at: OffsetDateTime,
) -> Result<AuditRecord> {
    let head = {
        let mut select = tx.prepare_cached(sql::SELECT_AUDIT_HEAD).map_err(db)?;
        select
            .query_row([id_bytes(workspace)], |row| {
                Ok(ChainHead {
                    seq: get_seq(row, 0)?,
                    hash: row.get(1)?,
                })
            })
            .optional()
            .map_err(db)?
            .unwrap_or(ChainHead::GENESIS)
    };
    let record = seal_after(head, workspace, draft, at, AuditId::new())?;
    insert_record(tx, &record)?;
    Ok(record)
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(
        &self,
        scope: &Scope,
        draft: AuditDraft,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        draft.check_scope(scope)?;
        let workspace = scope.workspace();
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                // On any error `tx` is dropped, rolling back: nothing is stored.
                let record = append_in(&tx, workspace, draft, at)?;
                tx.commit().map_err(db)?;
                Ok(record)
            })
            .await
    }

    async fn audit_records(
        &self,
        scope: &Scope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        scope.require(Action::AuditRead)?;
        let id = id_bytes(scope.workspace());
        // No stored seq is above i64::MAX.
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_AUDIT_RECORDS).map_err(db)?;
                let records = select
                    .query_map(params![id, after, limit], read_record)
                    .map_err(db)?;
                records.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn put_checkpoint(&self, scope: &Scope, checkpoint: &Checkpoint) -> Result<()> {
        scope.require(Action::AuditRead)?;
        if checkpoint.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let cp = *checkpoint;
        let (id, at, seq) = (
            id_bytes(cp.workspace),
            unix_micros(cp.at)?,
            seq_integer(cp.seq)?,
        );
        self.conn
            .run(move |conn| {
                let mut insert = conn
                    .prepare_cached(sql::INSERT_AUDIT_CHECKPOINT)
                    .map_err(db)?;
                insert
                    .execute(params![id, at, seq, cp.head_hash, cp.key_id, cp.mac])
                    .map_err(db)?;
                Ok(())
            })
            .await
    }

    async fn checkpoints(&self, scope: &Scope) -> Result<Vec<Checkpoint>> {
        scope.require(Action::AuditRead)?;
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn
                    .prepare_cached(sql::SELECT_AUDIT_CHECKPOINTS)
                    .map_err(db)?;
                let checkpoints = select.query_map([id], read_checkpoint).map_err(db)?;
                checkpoints
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)
            })
            .await
    }

    async fn last_checkpoint(&self, scope: &Scope) -> Result<Option<Checkpoint>> {
        scope.require(Action::AuditRead)?;
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn
                    .prepare_cached(sql::SELECT_LAST_AUDIT_CHECKPOINT)
                    .map_err(db)?;
                select
                    .query_row([id], read_checkpoint)
                    .optional()
                    .map_err(db)
            })
            .await
    }
}
