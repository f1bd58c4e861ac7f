//! The checkpoint writer and the whole-instance verifier.

use std::sync::Arc;

use super::{
    AUDIT_PAGE, AuditStoreExt as _, ChainHead, Checkpoint, CheckpointPolicy, CheckpointSigner,
    Report, record_hash, verify, verify_at,
};
use crate::error::{Error, Result};
use crate::store::{Store, WorkspaceStoreExt as _};
use crate::tenancy::{Action, Gate, Principal, Scope, SystemTask, WorkspaceId};

/// What one [`AuditJob::checkpoint_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointRun {
    /// Checkpoints written.
    pub written: u64,
    /// Workspaces whose checkpoint failed; among them any whose new records did not chain onto
    /// the last checkpoint (the writer never signs a head it could not link to a signed one).
    pub failed: u64,
}

/// Writes signed checkpoints by [`CheckpointPolicy`] and verifies every workspace's log, as
/// [`SystemTask::Audit`] (which may read audit logs and nothing else).
pub struct AuditJob {
    store: Arc<dyn Store>,
    signer: CheckpointSigner,
    gate: Gate,
    policy: CheckpointPolicy,
}

impl std::fmt::Debug for AuditJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditJob").finish_non_exhaustive()
    }
}

impl AuditJob {
    /// The job over `store`, signing with `signer`, at the default cadence.
    pub fn new(store: Arc<dyn Store>, signer: CheckpointSigner, gate: Gate) -> Self {
        Self {
            store,
            signer,
            gate,
            policy: CheckpointPolicy::default(),
        }
    }

    /// Another cadence.
    #[must_use]
    pub fn with_policy(mut self, policy: CheckpointPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn scope(&self, workspace: WorkspaceId) -> Result<Scope> {
        Ok(self.gate.authorize(
            &Principal::System(SystemTask::Audit),
            workspace,
            Action::AuditRead,
        )?)
    }

    /// Every workspace id, the instance tenant first.
    async fn workspaces(&self) -> Result<Vec<WorkspaceId>> {
        let mut all = vec![WorkspaceId::INSTANCE];
        all.extend(self.store.all_workspace_ids().await?);
        Ok(all)
    }

    /// Writes a checkpoint of `workspace` if one is due; returns it.
    ///
    /// Only the records after the last checkpoint are read, and each must chain onto it (seq,
    /// previous hash, own hash), so a head is signed only when it extends a signed one; the
    /// first checkpoint covers the whole log from genesis.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the new records do not chain onto the last checkpoint (run the
    /// verifier); store errors.
    pub async fn checkpoint(&self, workspace: WorkspaceId) -> Result<Option<Checkpoint>> {
        let scope = self.scope(workspace)?;
        let now = self.gate.now();
        let last = self.store.last_checkpoint(&scope).await?;
        let mut head = last.as_ref().map_or(ChainHead::GENESIS, |c| ChainHead {
            seq: c.seq,
            hash: c.head_hash,
        });
        let start = head.seq;
        loop {
            let page = self
                .store
                .audit_records(&scope, head.seq, AUDIT_PAGE)
                .await?;
            let full = page.len() == AUDIT_PAGE as usize;
            for record in &page {
                let links = record.seq == head.seq + 1
                    && record.prev_hash == head.hash
                    && record_hash(record) == record.hash;
                if !links {
                    return Err(Error::Conflict(
                        "audit records do not chain onto the last checkpoint",
                    ));
                }
                head = record.head();
            }
            if !full {
                break;
            }
        }
        if !self.policy.due(last.as_ref(), head.seq - start, now) {
            return Ok(None);
        }
        let checkpoint = self.signer.sign(workspace, head, now);
        self.store.put_checkpoint(&scope, &checkpoint).await?;
        Ok(Some(checkpoint))
    }

    /// [`AuditJob::checkpoint`] for every workspace and the instance tenant. A workspace that
    /// fails does not stop the others.
    ///
    /// # Errors
    /// Only a failure to list the workspaces.
    pub async fn checkpoint_all(&self) -> Result<CheckpointRun> {
        let mut run = CheckpointRun::default();
        for workspace in self.workspaces().await? {
            match self.checkpoint(workspace).await {
                Ok(Some(_)) => run.written += 1,
                Ok(None) => {}
                Err(_) => run.failed += 1,
            }
        }
        Ok(run)
    }

    /// Verifies one workspace's whole log and checkpoints; with `cadence`, also that
    /// checkpoints came at the policy's pace up to now ([`verify_at`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn verify(&self, workspace: WorkspaceId, cadence: bool) -> Result<Report> {
        let scope = self.scope(workspace)?;
        let records = self.store.all_audit_records(&scope).await?;
        let checkpoints = self.store.checkpoints(&scope).await?;
        Ok(if cadence {
            verify_at(
                workspace,
                &records,
                &checkpoints,
                &self.signer,
                &self.policy,
                self.gate.now(),
            )
        } else {
            verify(workspace, &records, &checkpoints, &self.signer)
        })
    }

    /// [`AuditJob::verify`] for the instance tenant and every workspace, in that order.
    ///
    /// # Errors
    /// Store errors.
    pub async fn verify_all(&self, cadence: bool) -> Result<Vec<Report>> {
        let mut reports = Vec::new();
        for workspace in self.workspaces().await? {
            reports.push(self.verify(workspace, cadence).await?);
        }
        Ok(reports)
    }
}
