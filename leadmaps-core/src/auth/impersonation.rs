//! Staff impersonation: a staff member's time-boxed, audited access to one customer workspace.
//!
//! A grant is opened with a reason and a time box of at most [`MAX_GRANT`]. Its
//! `operator.impersonation.started` record is written to the customer's own audit log in the
//! transaction that stores the grant, so no access under a grant can precede its record: until
//! the record commits, the grant does not exist. Every read under the grant is recorded first
//! (`staff.read`, [`Impersonation::record_read`]) and refused when its record cannot be written.
//! Records name both identities: the staff member (the actor) and the grant (which the customer's
//! log shows with its reason).

use std::sync::Arc;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use crate::audit::{AuditAction, AuditDraft, AuditRecord, Target};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tenancy::{
    Action, Actor, Denied, Gate, GrantId, ImpersonationGrant, Principal, Scope, StaffId,
    WorkspaceId,
};

/// The longest time box of a grant.
pub const MAX_GRANT: Duration = Duration::hours(1);
/// The shortest time box of a grant.
pub const MIN_GRANT: Duration = Duration::minutes(1);
/// Longest reason, in bytes.
pub const MAX_REASON: usize = 500;

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    /// The grant the gate checks (id, workspace, expiry, writes).
    pub grant: ImpersonationGrant,
    /// Who holds it.
    pub staff: StaffId,
    /// Why, as the staff member wrote it (shown to the customer).
    pub reason: String,
    /// When it was opened.
    pub opened_at: OffsetDateTime,
    /// When it was closed early, if it was.
    pub closed_at: Option<OffsetDateTime>,
}

impl StoredGrant {
    /// Whether the grant still admits anything at `now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.closed_at.is_none() && now < self.grant.expires_at
    }

    /// The `operator.impersonation.started` record: every store writes exactly this with the
    /// grant.
    pub fn started_draft(&self, scope: &Scope) -> AuditDraft {
        AuditDraft::new(
            scope,
            AuditAction::ImpersonationStarted,
            Target::grant(self.grant.id),
        )
        .with_after(serde_json::json!({
            "staff": self.staff.to_string(),
            "reason": self.reason,
            "write": self.grant.write,
            "expires_at": rfc3339(self.grant.expires_at),
        }))
    }

    /// The `operator.impersonation.ended` record of closing it at `at`.
    pub fn ended_draft(&self, scope: &Scope, at: OffsetDateTime) -> AuditDraft {
        AuditDraft::new(
            scope,
            AuditAction::ImpersonationEnded,
            Target::grant(self.grant.id),
        )
        .with_after(serde_json::json!({ "closed_at": rfc3339(at) }))
    }

    /// Checks that `scope` is the gate's admission of this grant's holder through this grant,
    /// on its workspace.
    ///
    /// # Errors
    /// [`Denied::WrongScope`] otherwise.
    pub fn check_scope(&self, scope: &Scope) -> std::result::Result<(), Denied> {
        let ours = scope.workspace() == self.grant.workspace
            && scope.grant() == Some(self.grant.id)
            && scope.actor() == Actor::Staff(self.staff);
        if ours {
            Ok(())
        } else {
            Err(Denied::WrongScope)
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    crate::audit::audit_time(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Storage of impersonation grants.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Stores `grant` and appends [`StoredGrant::started_draft`] (sealed at `at`) to its
    /// workspace's log, in one transaction: both or neither. `scope` is the gate's admission of
    /// the grant's holder through the grant ([`StoredGrant::check_scope`]).
    ///
    /// # Errors
    /// [`crate::Error::Denied`] for another scope; [`crate::Error::Conflict`] when the id exists;
    /// any error of the audit append, with nothing stored.
    async fn open_grant(
        &self,
        scope: &Scope,
        grant: &StoredGrant,
        at: OffsetDateTime,
    ) -> Result<AuditRecord>;

    /// A grant by id, for the staff realm to build a principal from (the gate then checks it).
    async fn grant(&self, id: GrantId) -> Result<Option<StoredGrant>>;

    /// Closes the grant `scope` was admitted through, at `at`, and appends
    /// [`StoredGrant::ended_draft`], in one transaction.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] for a scope without a grant or an unknown grant;
    /// [`crate::Error::Conflict`] when it was already closed.
    async fn close_grant(&self, scope: &Scope, at: OffsetDateTime) -> Result<AuditRecord>;
}

/// Opens, uses and closes grants.
pub struct Impersonation {
    store: Arc<dyn Store>,
    gate: Gate,
}

impl std::fmt::Debug for Impersonation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonation").finish_non_exhaustive()
    }
}

impl Impersonation {
    /// The service over `store`, deciding through `gate` (and its clock).
    pub fn new(store: Arc<dyn Store>, gate: Gate) -> Self {
        Self { store, gate }
    }

    /// Opens a grant on `workspace` for the staff member of `staff` (a principal from
    /// [`super::staff::staff_principal`]: a staff session with a second factor) for `duration`.
    /// Returns the grant once its audit record is stored in the workspace's log.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty or long reason or a duration outside
    /// [`MIN_GRANT`]..=[`MAX_GRANT`]; [`Error::NotFound`] for a workspace that does not exist;
    /// the gate's refusal; store errors.
    pub async fn open(
        &self,
        staff: &Principal,
        workspace: WorkspaceId,
        reason: &str,
        duration: Duration,
        write: bool,
    ) -> Result<(StoredGrant, AuditRecord)> {
        let Principal::Staff {
            staff, mfa: true, ..
        } = staff
        else {
            return Err(Denied::StaffNeedsGrant.into());
        };
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "a reason of 1 to {MAX_REASON} bytes without control characters is required"
            )));
        }
        if !(MIN_GRANT..=MAX_GRANT).contains(&duration) {
            return Err(Error::invalid("a grant lasts 1 to 60 minutes"));
        }
        let now = self.gate.now();
        let grant = StoredGrant {
            grant: ImpersonationGrant {
                id: GrantId::new(),
                workspace,
                expires_at: now + duration,
                write,
            },
            staff: *staff,
            reason: reason.to_owned(),
            opened_at: now,
            closed_at: None,
        };
        let scope =
            self.gate
                .authorize(&self.principal_of(&grant), workspace, Action::WorkspaceRead)?;
        // The workspace must exist: a grant on nothing is an error, not an empty log.
        self.store.workspace(&scope).await?;
        let record = self.store.open_grant(&scope, &grant, now).await?;
        Ok((grant, record))
    }

    /// The principal of a staff request under grant `id`: refused unless the grant belongs to
    /// the session's staff member and is open. Expiry is left to the gate, which checks it on
    /// every decision.
    ///
    /// # Errors
    /// [`Denied::StaffNeedsGrant`] for an unknown, closed or someone else's grant, or a
    /// principal that is not a staff member with a second factor.
    pub async fn principal(&self, staff: &Principal, id: GrantId) -> Result<Principal> {
        let Principal::Staff {
            staff, mfa: true, ..
        } = staff
        else {
            return Err(Denied::StaffNeedsGrant.into());
        };
        match self.store.grant(id).await? {
            Some(grant) if grant.staff == *staff && grant.closed_at.is_none() => {
                Ok(self.principal_of(&grant))
            }
            _ => Err(Denied::StaffNeedsGrant.into()),
        }
    }

    fn principal_of(&self, grant: &StoredGrant) -> Principal {
        Principal::Staff {
            staff: grant.staff,
            mfa: true,
            grant: Some(grant.grant.clone()),
        }
    }

    /// Records a staff read of `target` under the grant of `scope` before the data is read:
    /// the caller reads only after this returns `Ok`, so a read whose record cannot be written
    /// does not happen. `detail` says what was asked (a route, a window), never data.
    ///
    /// # Errors
    /// [`Denied::WrongScope`] for a scope without a grant; any error of the audit append.
    pub async fn record_read(
        &self,
        scope: &Scope,
        target: Target,
        detail: serde_json::Value,
    ) -> Result<AuditRecord> {
        if scope.grant().is_none() || !scope.action().is_read_only() {
            return Err(Denied::WrongScope.into());
        }
        let draft = AuditDraft::new(scope, AuditAction::StaffRead, target).with_after(detail);
        self.store.append_audit(scope, draft, self.gate.now()).await
    }

    /// Closes the grant of `principal` (from [`Impersonation::principal`]) early.
    ///
    /// # Errors
    /// The gate's refusal (an expired grant needs no closing); store errors.
    pub async fn close(&self, principal: &Principal) -> Result<AuditRecord> {
        let Principal::Staff {
            grant: Some(grant), ..
        } = principal
        else {
            return Err(Denied::StaffNeedsGrant.into());
        };
        let scope = self
            .gate
            .authorize(principal, grant.workspace, Action::WorkspaceRead)?;
        self.store.close_grant(&scope, self.gate.now()).await
    }
}
