//! The audit log (migration V9): `audit_records` and `audit_checkpoints`, customer data under the
//! forced policies, append-only for everyone (privileges and a trigger).
//!
//! An append is one scoped transaction: a transaction-level advisory lock keyed by the workspace
//! serialises the appends of one workspace, then the head (last seq and hash) is read in its own
//! statement, so under READ COMMITTED it sees the previous holder's committed record; the record is
//! sealed by `leadmaps_core::audit::seal_after` and inserted. The primary key `(workspace_id, seq)`
//! and `UNIQUE (workspace_id, prev_hash)` are the backstop should anything get past the lock. JSON
//! is stored as its canonical text (not jsonb, which would refuse `\u0000` and renormalise numbers)
//! and parsed back into the same value.

use async_trait::async_trait;
use leadmaps_core::audit::{
    AuditAction, AuditActor, AuditDraft, AuditId, AuditRecord, AuditStore, ChainHead, Checkpoint,
    PatchOp, Target, canonical_json, seal_after,
};
use leadmaps_core::tenancy::{Action, Denied, GrantId, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{internal, pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped, to_u32};

/// First key of the advisory locks that serialise the appends of a workspace ("aud1" in ASCII).
/// The two-key lock space does not overlap the one-key space the migrator uses.
const LOCK_CLASS: i32 = 0x6175_6431;

/// The columns [`record_from_row`] reads, in the order the append writes them.
const RECORD_COLUMNS: &str = "id, workspace_id, seq, recorded_at, actor_kind, actor_subject, \
     actor_grant, action, target_kind, target_id, before_json, after_json, patch_json, \
     request_id, prev_hash, hash";

/// The columns [`checkpoint_from_row`] reads.
const CHECKPOINT_COLUMNS: &str = "workspace_id, seq, head_hash, made_at, key_id, mac";

/// A seq as stored: bigint.
fn seq_to_sql(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::invalid("audit sequence exhausted"))
}

fn seq_from_sql(seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| internal("a stored audit seq is negative"))
}

fn hash_from_sql(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| internal("a stored audit hash is not 32 bytes"))
}

fn json_to_sql(value: &Value) -> Result<String> {
    String::from_utf8(canonical_json(value)).map_err(|_| internal("canonical JSON is not UTF-8"))
}

fn json_from_sql(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|_| internal("stored audit JSON does not parse"))
}

fn patch_to_sql(patch: &[PatchOp]) -> Result<String> {
    let value =
        serde_json::to_value(patch).map_err(|_| internal("an audit patch did not serialise"))?;
    json_to_sql(&value)
}

fn record_from_row(row: &tokio_postgres::Row) -> Result<AuditRecord> {
    let text = |name: &str| -> Result<String> { row.try_get(name).map_err(pg) };
    let optional_json = |name: &str| -> Result<Option<Value>> {
        row.try_get::<_, Option<String>>(name)
            .map_err(pg)?
            .as_deref()
            .map(json_from_sql)
            .transpose()
    };
    let grant: Option<Uuid> = row.try_get("actor_grant").map_err(pg)?;
    let actor = AuditActor::from_parts(
        &text("actor_kind")?,
        &text("actor_subject")?,
        grant.map(GrantId::from_uuid),
    )
    .map_err(|_| internal("a stored audit actor is malformed"))?;
    let action = AuditAction::parse(&text("action")?)
        .ok_or_else(|| internal("a stored audit action is unknown"))?;
    let patch: Vec<PatchOp> = serde_json::from_str(&text("patch_json")?)
        .map_err(|_| internal("a stored audit patch does not parse"))?;
    Ok(AuditRecord {
        id: AuditId::from_uuid(row.try_get("id").map_err(pg)?),
        workspace: WorkspaceId::from_uuid(row.try_get("workspace_id").map_err(pg)?),
        seq: seq_from_sql(row.try_get("seq").map_err(pg)?)?,
        at: row.try_get("recorded_at").map_err(pg)?,
        actor,
        action,
        target: Target::new(text("target_kind")?, text("target_id")?),
        before: optional_json("before_json")?,
        after: optional_json("after_json")?,
        patch,
        request_id: row.try_get("request_id").map_err(pg)?,
        prev_hash: hash_from_sql(row.try_get("prev_hash").map_err(pg)?)?,
        hash: hash_from_sql(row.try_get("hash").map_err(pg)?)?,
    })
}

fn checkpoint_from_row(row: &tokio_postgres::Row) -> Result<Checkpoint> {
    Ok(Checkpoint {
        workspace: WorkspaceId::from_uuid(row.try_get("workspace_id").map_err(pg)?),
        seq: seq_from_sql(row.try_get("seq").map_err(pg)?)?,
        head_hash: hash_from_sql(row.try_get("head_hash").map_err(pg)?)?,
        at: row.try_get("made_at").map_err(pg)?,
        key_id: to_u32(row.try_get("key_id").map_err(pg)?)?,
        mac: hash_from_sql(row.try_get("mac").map_err(pg)?)?,
    })
}

/// Appends the next record of `workspace` inside `tx` (a scoped, writing transaction): takes the
/// workspace's append lock, reads the head, seals and inserts. Used by `append_audit` and by every
/// mutation that writes its audit record in its own transaction.
pub(crate) async fn append_in(
    tx: &deadpool_postgres::Transaction<'_>,
    workspace: WorkspaceId,
    draft: AuditDraft,
    at: OffsetDateTime,
) -> Result<AuditRecord> {
    // Workspaces whose hashes collide share a lock: that only serialises them. The head is
    // read in the next statement, whose snapshot is taken after the lock is held, so it sees
    // the record of whoever held it before.
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2::uuid::text))")
        .await
        .map_err(pg)?;
    tx.execute(&lock, &[&LOCK_CLASS, &id(workspace)])
        .await
        .map_err(pg)?;
    let head = tx
        .prepare_cached(
            "SELECT seq, hash FROM leadmaps.audit_records WHERE workspace_id = $1
                 ORDER BY seq DESC LIMIT 1",
        )
        .await
        .map_err(pg)?;
    let head = match tx.query_opt(&head, &[&id(workspace)]).await.map_err(pg)? {
        None => ChainHead::GENESIS,
        Some(row) => ChainHead {
            seq: seq_from_sql(row.try_get(0).map_err(pg)?)?,
            hash: hash_from_sql(row.try_get(1).map_err(pg)?)?,
        },
    };
    let record = seal_after(head, workspace, draft, at, AuditId::new())?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO leadmaps.audit_records ({RECORD_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .await
        .map_err(pg)?;
    let before = record.before.as_ref().map(json_to_sql).transpose()?;
    let after = record.after.as_ref().map(json_to_sql).transpose()?;
    tx.execute(
        &insert,
        &[
            record.id.as_uuid(),
            &id(workspace),
            &seq_to_sql(record.seq)?,
            &record.at,
            &record.actor.kind(),
            &record.actor.subject(),
            &record.actor.grant().map(|g| *g.as_uuid()),
            &record.action.as_str(),
            &record.target.kind,
            &record.target.id,
            &before,
            &after,
            &patch_to_sql(&record.patch)?,
            &record.request_id,
            &&record.prev_hash[..],
            &&record.hash[..],
        ],
    )
    .await
    .map_err(|e| pg_conflict(e, "audit log moved on concurrently, retry"))?;
    Ok(record)
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(
        &self,
        scope: &Scope,
        draft: AuditDraft,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        draft.check_scope(scope)?;
        let workspace = scope.workspace();
        let mut client = self.client().await?;
        let tx = scoped(&mut client, workspace, false).await?;
        // On any error the transaction is dropped, so rolled back: nothing is stored.
        let record = append_in(&tx, workspace, draft, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok(record)
    }

    async fn audit_records(
        &self,
        scope: &Scope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        scope.require(Action::AuditRead)?;
        // No stored seq is above i64::MAX.
        let Ok(after_seq) = i64::try_from(after_seq) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .scoped_read(
                scope,
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM leadmaps.audit_records
                     WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ),
                &[&id(scope.workspace()), &after_seq, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn put_checkpoint(&self, scope: &Scope, checkpoint: &Checkpoint) -> Result<()> {
        scope.require(Action::AuditRead)?;
        if checkpoint.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        // Stored exactly as given, or not at all: timestamptz keeps microseconds, and a time
        // rounded on the way in would no longer match its MAC.
        if !checkpoint.at.nanosecond().is_multiple_of(1_000) {
            return Err(Error::invalid("checkpoint time must be whole microseconds"));
        }
        let seq = i64::try_from(checkpoint.seq)
            .map_err(|_| Error::invalid("checkpoint seq out of range"))?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO leadmaps.audit_checkpoints ({CHECKPOINT_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
            ))
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                &id(scope.workspace()),
                &seq,
                &&checkpoint.head_hash[..],
                &checkpoint.at,
                &i64::from(checkpoint.key_id),
                &&checkpoint.mac[..],
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn checkpoints(&self, scope: &Scope) -> Result<Vec<Checkpoint>> {
        self.checkpoint_rows(scope, "made_at, seq, head_hash, key_id, mac")
            .await
    }

    async fn last_checkpoint(&self, scope: &Scope) -> Result<Option<Checkpoint>> {
        let last = "made_at DESC, seq DESC, head_hash DESC, key_id DESC, mac DESC LIMIT 1";
        Ok(self.checkpoint_rows(scope, last).await?.pop())
    }
}

impl PostgresStore {
    /// The workspace's checkpoints in `order` (the primary key's columns, with a `LIMIT` if
    /// any), read under the scope.
    async fn checkpoint_rows(&self, scope: &Scope, order: &str) -> Result<Vec<Checkpoint>> {
        scope.require(Action::AuditRead)?;
        let rows = self
            .scoped_read(
                scope,
                &format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM leadmaps.audit_checkpoints
                     WHERE workspace_id = $1 ORDER BY {order}"
                ),
                &[&id(scope.workspace())],
            )
            .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }
}
