//! Retention: a workspace keeps its events for a number of days, and a job deletes older ones.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::audit::{AuditAction, AuditDraft, Target, audit_time};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tenancy::{Action, Gate, Principal, Scope, SystemTask, WorkspaceId};

/// The shortest retention period, in days.
pub const MIN_RETENTION_DAYS: u32 = 1;
/// The longest retention period, in days (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Events deleted per transaction by [`RetentionJob`]: bounded so one transaction never holds
/// locks (or SQLite's write lock) for long, while the collector keeps writing.
pub const RETENTION_BATCH: u32 = 5_000;

/// Checks a retention period.
///
/// # Errors
/// [`Error::Invalid`] outside [`MIN_RETENTION_DAYS`]..=[`MAX_RETENTION_DAYS`].
pub fn validate_retention_days(days: u32) -> Result<()> {
    if (MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "retention must be {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days"
        )))
    }
}

/// The audit record of one retention batch: `deleted` events received before `cutoff` removed
/// from the scope's workspace. Stores write exactly this in the transaction that deletes them.
pub fn retention_draft(scope: &Scope, cutoff: OffsetDateTime, deleted: u64) -> AuditDraft {
    let cutoff = audit_time(cutoff)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    AuditDraft::new(
        scope,
        AuditAction::RetentionEventsDeleted,
        Target::workspace(scope.workspace()),
    )
    .with_after(serde_json::json!({ "cutoff": cutoff, "deleted": deleted }))
}

/// What one [`RetentionJob::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionRun {
    /// Workspaces with a retention period that were enforced.
    pub workspaces: u64,
    /// Events deleted across them.
    pub deleted: u64,
    /// Workspaces whose enforcement failed (they are tried again on the next run).
    pub failed: u64,
}

/// Enforces every workspace's retention period: deletes events received more than its days
/// before now, [`RETENTION_BATCH`] at a time, each batch in one transaction with its
/// `retention.events_deleted` audit record (the store's
/// [`crate::store::EventSink::delete_events_before`]). Events inside the period are never
/// touched. Runs as [`SystemTask::Retention`], which may do nothing but that.
pub struct RetentionJob {
    store: Arc<dyn Store>,
    gate: Gate,
    batch: u32,
}

impl std::fmt::Debug for RetentionJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionJob").finish_non_exhaustive()
    }
}

impl RetentionJob {
    /// The job over `store`, reading time from the gate's clock.
    pub fn new(store: Arc<dyn Store>, gate: Gate) -> Self {
        Self {
            store,
            gate,
            batch: RETENTION_BATCH,
        }
    }

    /// Deletes at most `batch` events per transaction (at least 1).
    #[must_use]
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// One pass over every workspace. A workspace that fails does not stop the others.
    ///
    /// # Errors
    /// Only a failure to list the workspaces.
    pub async fn run_once(&self) -> Result<RetentionRun> {
        let now = self.gate.now();
        let mut run = RetentionRun::default();
        let mut after = None;
        loop {
            let page = self.store.workspace_ids(after, 500).await?;
            let Some(last) = page.last().copied() else {
                return Ok(run);
            };
            for workspace in page {
                match self.enforce(workspace, now).await {
                    Ok(Some(deleted)) => {
                        run.workspaces += 1;
                        run.deleted += deleted;
                    }
                    Ok(None) => {}
                    Err(_) => run.failed += 1,
                }
            }
            after = Some(last);
        }
    }

    /// Enforces one workspace's period; `None` when it keeps events indefinitely.
    async fn enforce(&self, workspace: WorkspaceId, now: OffsetDateTime) -> Result<Option<u64>> {
        if workspace == WorkspaceId::INSTANCE {
            return Ok(None);
        }
        let principal = Principal::System(SystemTask::Retention);
        let scope = self
            .gate
            .authorize(&principal, workspace, Action::RetentionEnforce)?;
        let Some(days) = self.store.workspace(&scope).await?.policy.retention_days else {
            return Ok(None);
        };
        let cutoff = now - Duration::days(i64::from(days));
        let mut deleted = 0;
        loop {
            let (batch, _) = self
                .store
                .delete_events_before(&scope, cutoff, self.batch, now)
                .await?;
            deleted += batch;
            // A store may take a whole month at once (more or fewer than a batch): go on until
            // nothing older is left.
            if batch == 0 {
                return Ok(Some(deleted));
            }
        }
    }
}
