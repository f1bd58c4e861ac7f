//! The breach clock: a personal-data breach is filed with the supervisory authority within 72
//! hours of awareness (GDPR Art. 33), and the admins of affected workspaces are e-mailed within
//! 4 hours for S0/S1 incidents and every personal-data breach.
//!
//! - [`Incident`]: operational [`Severity`] (S0 to S3) kept apart from the GDPR [`Assessment`]
//!   (personal data involved; risk none, risk or high); the awareness time, recorded once;
//!   affected workspaces; the status (open, contained, resolved, closed); leadmaps' role
//!   ([`DataRole`], controller or processor) per affected [`DataSet`].
//! - [`RuleSet`]: rules as versioned data ([`RuleSet::gdpr_2016_679`] built in); an incident's
//!   [`Obligation`]s are derived from them, never typed in, each with a deadline, a state
//!   (pending, done with evidence, late with a stated reason) and an escalation ladder.
//! - [`due`] and [`Engine`]: what must happen now, ordered by deadline, by the injected clock;
//!   [`Notifier`]: sends what is due through the [`crate::mail::Mailer`], each step once
//!   ([`delivery`] explains the claim protocol), and records each notice in the affected
//!   workspace's audit log (`breach.notification_sent`).
//! - [`Draft`]: the Art. 33(3) notification, every field marked known, estimated or unknown,
//!   phased (Art. 33(4)), as JSON and Markdown.
//! - [`RegisterEntry`]: the Art. 33(5) register, every incident and every change, hash-chained
//!   like the audit log ([`verify_register`]).
//!
//! Incidents are instance data, not a customer's: every [`BreachStore`] method takes a
//! [`BreachScope`], which only [`crate::tenancy::Gate::authorize_breach`] makes.
//!
//! ```compile_fail
//! use leadmaps_core::tenancy::BreachScope;
//! let forged: BreachScope = Default::default();
//! ```
//!
//! ```
//! # async fn demo() -> leadmaps_core::Result<()> {
//! use std::sync::Arc;
//! use leadmaps_core::breach::*;
//! use leadmaps_core::clock::ManualClock;
//! use leadmaps_core::memory::MemoryStore;
//! use leadmaps_core::tenancy::{Gate, Principal, StaffId, WorkspaceId};
//! use time::{Duration, macros::datetime};
//!
//! let t = datetime!(2026-03-02 9:00 UTC);
//! let clock = Arc::new(ManualClock::new(t));
//! let engine = Engine::new(Arc::new(MemoryStore::new()), Arc::new(RuleBook::default()), clock.clone());
//! let staff = Principal::Staff { staff: StaffId::new(), mfa: true, grant: None };
//! let scope = Gate::new(clock.clone()).authorize_breach(&staff)?;
//! let incident = engine.open(&scope, NewIncident {
//!     title: "Exposed account export".into(),
//!     severity: Severity::S1,
//!     assessment: Assessment { personal_data: true, risk: Risk::Risk },
//!     aware_at: t,
//!     workspaces: vec![WorkspaceId::new()],
//!     data_sets: vec![DataSet { name: "customer user accounts".into(), role: DataRole::Controller }],
//!     details: Details::default(),
//! }).await?;
//! let due = engine.due(&scope).await?;
//! assert_eq!(due[0].duty, Duty::EmailAdmins);
//! assert_eq!(due[0].due_at, t + Duration::hours(4));
//! assert!(due.iter().any(|d| d.duty == Duty::NotifyAuthority && d.due_at == t + Duration::hours(72)));
//! assert!(Draft::new(&incident, t).to_markdown().contains("Art. 33(3)(d)"));
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
//! ```

pub mod delivery;
mod draft;
mod engine;
mod incident;
mod notifier;
pub(crate) mod obligation;
mod register;
mod rules;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use delivery::{Claim, Delivery, DeliveryKey, Lease};
pub use draft::{Draft, DraftField, FiledPhase};
pub use engine::{Ack, Due, Engine, Step, due, steps};
pub(crate) use incident::check_text;
pub use incident::{
    Assessment, Certainty, DataRole, DataSet, Details, Filing, Incident, IncidentId, MAX_TEXT,
    MAX_TITLE, Marked, NewIncident, ObligationId, Reassessment, Risk, Severity, Status, actor_name,
    check_update, parse_actor,
};
pub use notifier::{DEFAULT_LEASE, Notifier, NotifierReport};
pub use obligation::{Obligation, ObligationState, Standing};
pub use register::{
    Change, REGISTER_LABEL, RegisterEntry, RegisterProblem, entry_encoding, entry_hash, seal_entry,
    verify_register,
};
pub use rules::{Condition, Duty, Facts, Per, Rule, RuleBook, RuleSet, Sending};

use crate::audit::{AuditDraft, AuditRecord};
use crate::error::Result;
use crate::mail::Address;
use crate::tenancy::{BreachScope, Scope};

/// Storage of incidents, the register and delivery records. Every change of an incident is one
/// transaction with its register entry; the register is append-only.
#[async_trait]
pub trait BreachStore: Send + Sync {
    /// Stores a newly opened incident (version 1) and appends its register entry
    /// ([`seal_entry`] of [`Change::Opened`] by the scope's holder, after the register's head),
    /// atomically.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] when the id exists; [`crate::Error::Invalid`] for an
    /// incident that is not at version 1. Nothing is stored on error.
    async fn create_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
    ) -> Result<RegisterEntry>;

    /// Replaces an incident with `incident` after [`check_update`] against the stored one
    /// passes, and appends its register entry of kind `change`, atomically.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`]; the errors of [`check_update`] (a moved awareness time is
    /// [`crate::Error::Invalid`], a stale version or a closed incident
    /// [`crate::Error::Conflict`]). Nothing is stored on error.
    async fn update_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
        change: Change,
    ) -> Result<RegisterEntry>;

    /// An incident, as last stored.
    async fn incident(&self, scope: &BreachScope, id: IncidentId) -> Result<Option<Incident>>;

    /// Every incident, by opening time, then id.
    async fn incidents(&self, scope: &BreachScope) -> Result<Vec<Incident>>;

    /// Up to `limit` register entries with a seq above `after_seq`, ascending, exactly as
    /// appended.
    async fn register_entries(
        &self,
        scope: &BreachScope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RegisterEntry>>;

    /// Claims a delivery at `now` for `lease`: a new one is claimed (attempt 1); a sent one
    /// answers [`Claim::Sent`]; one claimed by a lease still running at `now` answers
    /// [`Claim::Busy`]; one whose lease ran out is taken over with a fresh token (attempt + 1).
    /// Atomic: of concurrent claims, one gets it.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] for an unknown incident; [`crate::Error::Invalid`] for a bad
    /// step name.
    async fn claim_delivery(
        &self,
        scope: &BreachScope,
        key: &DeliveryKey,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<Claim>;

    /// Marks a claimed delivery sent at `at`, only if `lease` still holds it (its token), and
    /// appends `audit` (the record of the notice in the affected workspace's log, by
    /// [`crate::audit::AuditStore::append_audit`]'s rules) in the same transaction.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] when the claim was taken over or the delivery is sent
    /// already; [`crate::Error::NotFound`] when it was never claimed; the audit append's errors.
    /// Nothing is stored on error.
    async fn complete_delivery(
        &self,
        scope: &BreachScope,
        lease: &Lease,
        at: OffsetDateTime,
        audit: Option<(&Scope, AuditDraft)>,
    ) -> Result<Option<AuditRecord>>;

    /// The deliveries of an incident, by obligation, then step.
    async fn deliveries(&self, scope: &BreachScope, incident: IncidentId) -> Result<Vec<Delivery>>;

    /// The addresses of the scope's workspace's admins, sorted, where breach notices go.
    /// Requires [`crate::tenancy::Action::WorkspaceRead`]: who administers a workspace is
    /// visible to its members.
    async fn admin_addresses(&self, scope: &Scope) -> Result<Vec<Address>>;
}

/// Register entries read per call by [`BreachStoreExt::all_register_entries`].
pub const REGISTER_PAGE: u32 = 1_000;

/// Conveniences over any [`BreachStore`].
#[async_trait]
pub trait BreachStoreExt: BreachStore {
    /// The whole register, in order, read in pages of [`REGISTER_PAGE`].
    async fn all_register_entries(&self, scope: &BreachScope) -> Result<Vec<RegisterEntry>> {
        let mut all: Vec<RegisterEntry> = Vec::new();
        loop {
            let after = all.last().map_or(0, |e| e.seq);
            let page = self.register_entries(scope, after, REGISTER_PAGE).await?;
            // A store that does not move forward ends the read; verify_register then says why.
            let done =
                page.len() < REGISTER_PAGE as usize || page.last().is_none_or(|e| e.seq <= after);
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }
}

impl<T: BreachStore + ?Sized> BreachStoreExt for T {}
