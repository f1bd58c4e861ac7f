//! Workspace policies: from where the workspace may be reached ([`IpAllowlist`]), whether its
//! members need a second factor, how long its events are kept, and the one way any of it changes
//! ([`PolicyChange`], each change with its audit record).
//!
//! The retention policy is enforced by [`RetentionJob`], which deletes older events in batches,
//! each batch committed with the audit record that counts it.

mod allowlist;
mod plans;
mod retention;

pub use allowlist::{IpAllowlist, MAX_ALLOWLIST_RANGES};
pub use plans::{Feature, Plan};
pub use retention::{
    MAX_RETENTION_DAYS, MIN_RETENTION_DAYS, RETENTION_BATCH, RetentionJob, RetentionRun,
    retention_draft, validate_retention_days,
};

use crate::audit::{AuditAction, AuditDraft, Target};
use crate::error::Result;
use crate::tenancy::Scope;

/// What a workspace's admins require of everyone who reaches its data, and how long it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkspacePolicy {
    /// Members reach the workspace only from a session that passed a second factor; the gate
    /// enforces it through [`crate::tenancy::Membership::require_totp`].
    pub require_totp: bool,
    /// The client addresses the dashboard and API admit for this workspace; empty admits every
    /// address. The collector does not apply it (visitors come from anywhere).
    pub ip_allowlist: IpAllowlist,
    /// Events older than this many days are deleted by the retention job; `None` keeps them.
    pub retention_days: Option<u32>,
}

impl WorkspacePolicy {
    /// As JSON, for the API and audit records.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "require_totp": self.require_totp,
            "ip_allowlist": self.ip_allowlist.to_strings(),
            "retention_days": self.retention_days,
        })
    }
}

/// One change to a workspace's policy. Stores apply it to the stored policy inside the transaction
/// that also appends [`PolicyChange::audit_draft`], so concurrent changes of different parts never
/// undo each other and no change goes unrecorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyChange {
    /// Turn the "require TOTP" policy on or off.
    RequireTotp(bool),
    /// Replace the IP allowlist (an empty list admits every address).
    IpAllowlist(IpAllowlist),
    /// Set the retention period in days, or keep events indefinitely (`None`).
    RetentionDays(Option<u32>),
}

impl PolicyChange {
    /// Checks the change on its own (bounds); stores call it before anything else.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] naming the rule broken.
    pub fn validate(&self) -> Result<()> {
        match self {
            PolicyChange::RetentionDays(Some(days)) => validate_retention_days(*days),
            _ => Ok(()),
        }
    }

    /// The policy after this change.
    pub fn apply(&self, before: &WorkspacePolicy) -> WorkspacePolicy {
        let mut after = before.clone();
        match self {
            PolicyChange::RequireTotp(on) => after.require_totp = *on,
            PolicyChange::IpAllowlist(list) => after.ip_allowlist = list.clone(),
            PolicyChange::RetentionDays(days) => after.retention_days = *days,
        }
        after
    }

    /// The audit record of this change from `before` to `after`, by the holder of `scope`: every
    /// store writes exactly this with the change. Each part has its own action, so the customer's
    /// log can be filtered by it (`ip_allowlist.updated`, `retention_policy.updated`, ...).
    pub fn audit_draft(
        &self,
        scope: &Scope,
        before: &WorkspacePolicy,
        after: &WorkspacePolicy,
    ) -> AuditDraft {
        let (action, before, after) = match self {
            PolicyChange::RequireTotp(_) => (
                AuditAction::WorkspacePolicyUpdated,
                serde_json::json!({ "require_totp": before.require_totp }),
                serde_json::json!({ "require_totp": after.require_totp }),
            ),
            PolicyChange::IpAllowlist(_) => (
                AuditAction::IpAllowlistUpdated,
                serde_json::json!({ "ranges": before.ip_allowlist.to_strings() }),
                serde_json::json!({ "ranges": after.ip_allowlist.to_strings() }),
            ),
            PolicyChange::RetentionDays(_) => (
                AuditAction::RetentionPolicyUpdated,
                serde_json::json!({ "days": before.retention_days }),
                serde_json::json!({ "days": after.retention_days }),
            ),
        };
        AuditDraft::new(scope, action, Target::workspace(scope.workspace()))
            .with_before(before)
            .with_after(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::tenancy::{Action, Gate, Principal, Role, UserId, WorkspaceId};
    use std::sync::Arc;

    #[test]
    fn each_change_touches_its_part_and_names_its_action() {
        let workspace = WorkspaceId::new();
        let gate = Gate::new(Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH)));
        let admin = Principal::member(UserId::new(), [(workspace, Role::Admin)]);
        let scope = gate
            .authorize(&admin, workspace, Action::WorkspaceUpdate)
            .unwrap();
        let start = WorkspacePolicy::default();
        let list = IpAllowlist::parse(["192.0.2.0/24"]).unwrap();
        let cases = [
            (
                PolicyChange::RequireTotp(true),
                AuditAction::WorkspacePolicyUpdated,
            ),
            (
                PolicyChange::IpAllowlist(list.clone()),
                AuditAction::IpAllowlistUpdated,
            ),
            (
                PolicyChange::RetentionDays(Some(30)),
                AuditAction::RetentionPolicyUpdated,
            ),
        ];
        let mut policy = start.clone();
        for (change, action) in cases {
            let after = change.apply(&policy);
            let draft = change.audit_draft(&scope, &policy, &after);
            assert_eq!(draft.action(), action);
            policy = after;
        }
        assert_eq!(
            policy,
            WorkspacePolicy {
                require_totp: true,
                ip_allowlist: list,
                retention_days: Some(30),
            }
        );
        assert!(PolicyChange::RetentionDays(Some(0)).validate().is_err());
        assert!(PolicyChange::RetentionDays(None).validate().is_ok());
    }
}
