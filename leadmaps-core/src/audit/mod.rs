//! The tamper-evident audit log.
//!
//! Every action worth answering for is recorded per workspace as an [`AuditRecord`]: who
//! ([`AuditActor`], always the principal the gate admitted, with the impersonation grant when a
//! staff member acts), what ([`AuditAction`], a stable dotted name), on what ([`Target`]), the
//! state before and after (JSON, secrets redacted by [`redact()`]) and the change as an RFC 6902
//! JSON Patch ([`diff`], [`apply`]).
//!
//! Tamper evidence comes in two layers:
//! - **A hash chain per workspace** ([`record_hash`]): each record's hash covers a canonical
//!   encoding of all its fields and the previous record's hash, so an edited, removed, reordered
//!   or spliced-in record breaks the chain where it happened. Stores build records only with
//!   [`seal`], so every store hashes the same way.
//! - **Signed checkpoints** ([`Checkpoint`], [`CheckpointSigner`]): an HMAC, under a key derived
//!   from a KEK, over the chain's head at a time, written every N records or T minutes, also when
//!   nothing happened ([`CheckpointPolicy`]). Someone with write access to the database but not
//!   the KEK can rewrite the chain consistently, but not the checkpoints; and a cut-back tail shows
//!   as a checkpoint beyond the end.
//!
//! [`verify`] (and [`verify_at`], which adds the checkpoint cadence) walks a log and names the
//! first problem ([`Problem`], [`ProblemKind`]).
//!
//! Stores implement [`AuditStore`]: append-only (there is no update or delete), with the next seq
//! and previous hash taken atomically per workspace.
//!
//! ```
//! # async fn demo() -> leadmaps_core::Result<()> {
//! use std::sync::Arc;
//! use leadmaps_core::audit::{AuditAction, AuditDraft, AuditStore, AuditStoreExt, CheckpointSigner, Target};
//! use leadmaps_core::clock::{Clock, ManualClock};
//! use leadmaps_core::crypto::{Kek, KeyRing};
//! use leadmaps_core::memory::MemoryStore;
//! use leadmaps_core::tenancy::{Action, Gate, Principal, Role, UserId, WorkspaceId};
//! use serde_json::json;
//!
//! let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC)));
//! let gate = Gate::new(clock.clone());
//! let store = MemoryStore::new();
//! let workspace = WorkspaceId::new();
//! let admin = Principal::member(UserId::new(), [(workspace, Role::Admin)]);
//!
//! // Record a change, as the gate's principal, secrets redacted.
//! let scope = gate.authorize(&admin, workspace, Action::WorkspaceUpdate)?;
//! let draft = AuditDraft::new(&scope, AuditAction::RetentionPolicyUpdated, Target::workspace(workspace))
//!     .with_before(json!({"days": 30}))
//!     .with_after(json!({"days": 7}))
//!     .with_request_id("req-42");
//! let record = store.append_audit(&scope, draft, clock.now()).await?;
//! assert_eq!(record.seq, 1);
//!
//! // Sign the head, then verify the whole log.
//! let ring = KeyRing::new([Kek::new(1, &(1..=32).collect::<Vec<u8>>())?])?;
//! let signer = CheckpointSigner::new(&ring);
//! let read = gate.authorize(&admin, workspace, Action::AuditRead)?;
//! store.put_checkpoint(&read, &signer.sign(workspace, record.head(), clock.now())).await?;
//! let report = store.verify_audit(&read, &signer).await?;
//! assert!(report.is_ok(), "{report}");
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
//! ```

mod chain;
mod checkpoint;
pub mod drafts;
mod job;
mod patch;
mod record;
mod redact;
mod verify;

use async_trait::async_trait;
use time::OffsetDateTime;

pub(crate) use chain::Encoder;
pub use chain::{
    ChainHead, GENESIS_HASH, MAX_AUDIT_JSON, RECORD_LABEL, audit_time, canonical_json,
    record_encoding, record_hash, seal, seal_after,
};
pub use checkpoint::{
    CHECKPOINT_KEY_LABEL, CHECKPOINT_LABEL, Checkpoint, CheckpointPolicy, CheckpointSigner,
};
pub use job::{AuditJob, CheckpointRun};
pub use patch::{PatchOp, apply, diff, escape_token};
pub use record::{
    AuditAction, AuditActor, AuditDraft, AuditId, AuditRecord, MAX_REQUEST_ID, MAX_TARGET_ID,
    MAX_TARGET_KIND, Target, validate_request_id,
};
pub use redact::{MAX_DEPTH, REDACTED, is_sensitive_key, redact};
pub use verify::{Problem, ProblemKind, Report, verify, verify_at};

use crate::error::Result;
use crate::tenancy::Scope;

/// Storage of audit logs and their checkpoints. Append-only: there is no method to change or
/// remove a record or a checkpoint, and a store's own schema SHOULD refuse it too (Postgres:
/// a trigger and no UPDATE or DELETE grant).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends the record `draft` describes to `scope.workspace()`'s log and returns it as
    /// stored. Any scope may append, but only a draft built from a scope of the same workspace
    /// and holder: the store MUST first call [`AuditDraft::check_scope`].
    ///
    /// Then the store MUST, atomically per workspace, read the head of the log (its last record's seq
    /// and hash, or none), build the record with [`seal`] or [`seal_after`] (a fresh
    /// [`AuditId`], time `at`), and store it: concurrent appends get consecutive seqs, never the
    /// same seq twice, and never two records with one `prev_hash`. Later reads MUST return the
    /// record exactly as returned here (every field is under the hash).
    ///
    /// # Errors
    /// [`crate::Error::Denied`] when the draft was built from a scope of another workspace or
    /// holder;
    /// [`crate::Error::Invalid`] when [`seal`] refuses the draft. Nothing is stored on error.
    async fn append_audit(
        &self,
        scope: &Scope,
        draft: AuditDraft,
        at: OffsetDateTime,
    ) -> Result<AuditRecord>;

    /// Up to `limit` records of the workspace with a seq above `after_seq`, ascending by seq.
    /// Requires [`crate::tenancy::Action::AuditRead`].
    async fn audit_records(
        &self,
        scope: &Scope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>>;

    /// Stores a checkpoint of the workspace, exactly as given; storing an identical one again
    /// keeps one. The store does not check the MAC (it holds no key); verifiers do. Requires
    /// [`crate::tenancy::Action::AuditRead`]: the writer has read the head it signs.
    ///
    /// # Errors
    /// [`crate::Error::Denied`] for a checkpoint of another workspace than the scope's.
    async fn put_checkpoint(&self, scope: &Scope, checkpoint: &Checkpoint) -> Result<()>;

    /// Every checkpoint of the workspace, ascending by time, then seq. Requires
    /// [`crate::tenancy::Action::AuditRead`].
    async fn checkpoints(&self, scope: &Scope) -> Result<Vec<Checkpoint>>;

    /// The workspace's last checkpoint in [`AuditStore::checkpoints`]' order (what the
    /// checkpoint writer extends every minute), read without reading the others: stores answer
    /// it from the end of their `(workspace, time, seq)` index. Requires
    /// [`crate::tenancy::Action::AuditRead`].
    async fn last_checkpoint(&self, scope: &Scope) -> Result<Option<Checkpoint>>;
}

/// Page size of [`AuditStoreExt::all_audit_records`].
pub const AUDIT_PAGE: u32 = 1_000;

/// Conveniences over any [`AuditStore`].
#[async_trait]
pub trait AuditStoreExt: AuditStore {
    /// The workspace's whole log, read in pages of [`AUDIT_PAGE`]. Requires
    /// [`crate::tenancy::Action::AuditRead`].
    async fn all_audit_records(&self, scope: &Scope) -> Result<Vec<AuditRecord>> {
        let mut all: Vec<AuditRecord> = Vec::new();
        loop {
            let after = all.last().map_or(0, |r| r.seq);
            let page = self.audit_records(scope, after, AUDIT_PAGE).await?;
            // A store that does not move forward (seqs not above `after`) ends the read; the
            // verifier then reports what is wrong with the log.
            let done =
                page.len() < AUDIT_PAGE as usize || page.last().is_none_or(|r| r.seq <= after);
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Reads the workspace's log and checkpoints and [`verify`]s them. Requires
    /// [`crate::tenancy::Action::AuditRead`].
    async fn verify_audit(&self, scope: &Scope, signer: &CheckpointSigner) -> Result<Report> {
        let records = self.all_audit_records(scope).await?;
        let checkpoints = self.checkpoints(scope).await?;
        Ok(verify(scope.workspace(), &records, &checkpoints, signer))
    }
}

impl<T: AuditStore + ?Sized> AuditStoreExt for T {}

/// An audit log that refuses every append.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Refusing;

#[cfg(test)]
#[async_trait]
impl AuditStore for Refusing {
    async fn append_audit(
        &self,
        _: &crate::tenancy::Scope,
        _: crate::audit::AuditDraft,
        _: OffsetDateTime,
    ) -> Result<crate::audit::AuditRecord> {
        Err(crate::Error::unavailable(std::io::Error::other(
            "audit log down",
        )))
    }
    async fn audit_records(
        &self,
        _: &crate::tenancy::Scope,
        _: u64,
        _: u32,
    ) -> Result<Vec<crate::audit::AuditRecord>> {
        Ok(Vec::new())
    }
    async fn put_checkpoint(
        &self,
        _: &crate::tenancy::Scope,
        _: &crate::audit::Checkpoint,
    ) -> Result<()> {
        Ok(())
    }
    async fn checkpoints(
        &self,
        _: &crate::tenancy::Scope,
    ) -> Result<Vec<crate::audit::Checkpoint>> {
        Ok(Vec::new())
    }
    async fn last_checkpoint(
        &self,
        _: &crate::tenancy::Scope,
    ) -> Result<Option<crate::audit::Checkpoint>> {
        Ok(None)
    }
}
