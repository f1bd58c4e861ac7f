//! Tenancy: who is asking, for which workspace, to do what; and the one gate that answers.
//!
//! Every store method that touches customer data takes a [`Scope`], and the only way to get a
//! `Scope` is [`Gate::authorize`]. A `Scope` cannot be built, deserialized or defaulted anywhere
//! else, so a code path that skips the gate does not compile. The gate is how one is made:
//!
//! ```
//! use std::sync::Arc;
//! use leadmaps_core::clock::SystemClock;
//! use leadmaps_core::tenancy::{Action, Gate, Principal, Role, Scope, UserId, WorkspaceId};
//! let workspace = WorkspaceId::new();
//! let member = Principal::member(UserId::new(), [(workspace, Role::Viewer)]);
//! let scope: Scope = Gate::new(Arc::new(SystemClock)).authorize(&member, workspace, Action::EventRead).unwrap();
//! assert_eq!(scope.workspace(), workspace);
//! ```
//!
//! and every other way fails to compile:
//!
//! ```compile_fail
//! use leadmaps_core::tenancy::{Action, Scope, WorkspaceId};
//! // There is no public constructor and the fields are private.
//! let forged = Scope { workspace: WorkspaceId::new(), action: Action::SecretRead };
//! ```
//!
//! ```compile_fail
//! use leadmaps_core::tenancy::Scope;
//! let forged: Scope = Default::default();
//! ```
//!
//! ```compile_fail
//! use leadmaps_core::tenancy::Scope;
//! let forged: Scope = serde_json::from_str("{}").unwrap();
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock::Clock;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            /// A fresh random id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(::uuid::Uuid::new_v4())
            }
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }
            /// The UUID.
            pub const fn as_uuid(&self) -> &::uuid::Uuid {
                &self.0
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::uuid::Error;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                ::uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}
// Crate-visible, for ids defined in other modules (audit records).
pub(crate) use uuid_id;

uuid_id!(
    /// A workspace: the tenant. Every customer-data row carries one.
    WorkspaceId
);
impl WorkspaceId {
    /// The instance tenant: not a customer workspace, but the owner of people's own secrets
    /// (TOTP seeds), so they get a tenant key and envelope encryption like everything else.
    /// Only the [`SystemTask::Identity`] principal reaches it.
    pub const INSTANCE: WorkspaceId = WorkspaceId(Uuid::nil());
}

uuid_id!(
    /// A customer user (member of workspaces).
    UserId
);
uuid_id!(
    /// A leadmaps staff member; staff identities are a separate realm from customers.
    StaffId
);
uuid_id!(
    /// A workspace API key.
    ApiKeyId
);
uuid_id!(
    /// A staff member's impersonation grant: audit records of the staff member's actions name it.
    GrantId
);

/// Where a workspace's data lives. Data never leaves its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// European Union: the default.
    #[default]
    Eu,
    /// United States, on request.
    Us,
}

impl Region {
    /// The stable lower-case name stored in databases and configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Region::Eu => "eu",
            Region::Us => "us",
        }
    }
}

impl std::str::FromStr for Region {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "eu" | "EU" => Ok(Region::Eu),
            "us" | "US" => Ok(Region::Us),
            _ => Err(crate::Error::invalid("unknown region (expected eu or us)")),
        }
    }
}

/// Something a principal may do to a workspace. The gate maps principals to actions; stores check
/// the action a method needs with [`Scope::require`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Create the workspace a fresh id names.
    WorkspaceCreate,
    /// Read workspace settings and metadata.
    WorkspaceRead,
    /// Change workspace settings (name, policies).
    WorkspaceUpdate,
    /// Send events to the collector.
    EventIngest,
    /// Read analytics.
    EventRead,
    /// Read a decrypted secret (API key material, OIDC client secret, ...).
    SecretRead,
    /// Store, replace or delete a secret.
    SecretWrite,
    /// Rotate, rewrap or destroy the workspace's tenant keys.
    KeyManage,
    /// Manage members and their roles.
    MemberManage,
    /// Read the workspace's audit log.
    AuditRead,
    /// Delete events older than the workspace's retention period.
    RetentionEnforce,
    /// Provision and deprovision the workspace's users and groups from its identity provider
    /// (SCIM). Only a directory token (an API key made for it) holds it.
    DirectorySync,
    /// Read the sub-processor register and the workspace's DPA acceptances.
    LegalRead,
    /// Accept the data processing agreement for the workspace.
    LegalAccept,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 14] = [
        Action::WorkspaceCreate,
        Action::WorkspaceRead,
        Action::WorkspaceUpdate,
        Action::EventIngest,
        Action::EventRead,
        Action::SecretRead,
        Action::SecretWrite,
        Action::KeyManage,
        Action::MemberManage,
        Action::AuditRead,
        Action::RetentionEnforce,
        Action::DirectorySync,
        Action::LegalRead,
        Action::LegalAccept,
    ];

    /// The stable dotted name, for storage and APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::WorkspaceCreate => "workspace.create",
            Action::WorkspaceRead => "workspace.read",
            Action::WorkspaceUpdate => "workspace.update",
            Action::EventIngest => "event.ingest",
            Action::EventRead => "event.read",
            Action::SecretRead => "secret.read",
            Action::SecretWrite => "secret.write",
            Action::KeyManage => "key.manage",
            Action::MemberManage => "member.manage",
            Action::AuditRead => "audit.read",
            Action::RetentionEnforce => "retention.enforce",
            Action::DirectorySync => "directory.sync",
            Action::LegalRead => "legal.read",
            Action::LegalAccept => "legal.accept",
        }
    }

    /// Parses [`Action::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Actions that change nothing.
    pub const fn is_read_only(self) -> bool {
        matches!(
            self,
            Action::WorkspaceRead
                | Action::EventRead
                | Action::SecretRead
                | Action::AuditRead
                | Action::LegalRead
        )
    }
}

/// A member's role in one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads analytics and settings.
    Viewer,
    /// Also changes sites and settings.
    Editor,
    /// Also manages members, secrets, keys and reads the audit log.
    Admin,
}

impl Role {
    /// The one table of what each role may do.
    pub const fn permits(self, action: Action) -> bool {
        match action {
            Action::WorkspaceRead | Action::EventRead => true,
            Action::WorkspaceUpdate => matches!(self, Role::Editor | Role::Admin),
            Action::SecretRead
            | Action::SecretWrite
            | Action::KeyManage
            | Action::MemberManage
            | Action::AuditRead
            | Action::LegalRead
            | Action::LegalAccept => matches!(self, Role::Admin),
            Action::WorkspaceCreate
            | Action::EventIngest
            | Action::RetentionEnforce
            | Action::DirectorySync => false,
        }
    }
}

/// A staff member's time-boxed, audited access to one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpersonationGrant {
    /// The grant's id, recorded with every audited action taken under it.
    pub id: GrantId,
    /// The workspace the grant opens.
    pub workspace: WorkspaceId,
    /// The grant ends here; the gate refuses it from this instant on.
    pub expires_at: OffsetDateTime,
    /// Whether the grant allows changes, not only reads.
    pub write: bool,
}

/// An internal job acting on a workspace without a human behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SystemTask {
    /// Provisioning a new workspace (create it, add its first sites and its first admin).
    Provisioning,
    /// Rewrapping tenant keys after a KEK rotation.
    KeyRotation,
    /// Destroying expired visitor-hash salts.
    SaltRotation,
    /// Deleting events past the retention period.
    Retention,
    /// Sealing and opening people's own secrets (TOTP seeds) in the instance tenant.
    Identity,
    /// Writing audit checkpoints and verifying audit chains.
    Audit,
    /// The breach notifier: reads who administers an affected workspace (to e-mail them) and
    /// records in that workspace's audit log the notification it received.
    Breach,
    /// Single sign-on before anyone is signed in: reading a workspace's identity-provider
    /// settings, opening its client secret, and recording logins and failed logins.
    SingleSignOn,
    /// The sub-processor notifier: reads who administers a workspace (to e-mail them about a
    /// change of the sub-processor register) and records the notice in its audit log.
    Legal,
    /// `server verify`: reads a workspace's settings (its region, against where its data is
    /// stored). Read-only.
    Verify,
}

impl SystemTask {
    /// Every task.
    pub const ALL: [SystemTask; 10] = [
        SystemTask::Provisioning,
        SystemTask::KeyRotation,
        SystemTask::SaltRotation,
        SystemTask::Retention,
        SystemTask::Identity,
        SystemTask::Audit,
        SystemTask::Breach,
        SystemTask::SingleSignOn,
        SystemTask::Legal,
        SystemTask::Verify,
    ];

    /// The stable name, for storage (audit records name the task that acted).
    pub const fn as_str(self) -> &'static str {
        match self {
            SystemTask::Provisioning => "provisioning",
            SystemTask::KeyRotation => "key_rotation",
            SystemTask::SaltRotation => "salt_rotation",
            SystemTask::Retention => "retention",
            SystemTask::Identity => "identity",
            SystemTask::Audit => "audit",
            SystemTask::Breach => "breach",
            SystemTask::SingleSignOn => "sso",
            SystemTask::Legal => "legal",
            SystemTask::Verify => "verify",
        }
    }

    /// Parses [`SystemTask::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    const fn permits(self, action: Action) -> bool {
        match self {
            // Only valid on `WorkspaceId::INSTANCE`; the gate checks the workspace.
            SystemTask::Identity => matches!(action, Action::SecretRead | Action::SecretWrite),
            SystemTask::Provisioning => matches!(
                action,
                Action::WorkspaceCreate | Action::WorkspaceUpdate | Action::MemberManage
            ),
            SystemTask::KeyRotation | SystemTask::SaltRotation => {
                matches!(action, Action::KeyManage)
            }
            SystemTask::Retention => matches!(action, Action::RetentionEnforce),
            SystemTask::Audit => matches!(action, Action::AuditRead),
            SystemTask::Breach => matches!(action, Action::WorkspaceRead),
            SystemTask::SingleSignOn => {
                matches!(action, Action::WorkspaceRead | Action::SecretRead)
            }
            SystemTask::Legal => matches!(action, Action::WorkspaceRead | Action::LegalRead),
            SystemTask::Verify => matches!(action, Action::WorkspaceRead),
        }
    }
}

/// A user's standing in one workspace, with the workspace policy the gate enforces on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The user's role there.
    pub role: Role,
    /// The workspace's "require TOTP" policy: its data is out of reach of a session that has
    /// not passed a second factor.
    pub require_totp: bool,
}

/// Who is asking. Built by the authentication layer after it verified a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// A customer with a session; `memberships` lists the workspaces and roles they hold.
    Member {
        /// The user.
        user: UserId,
        /// Workspaces, roles and their policies.
        memberships: Vec<Membership>,
        /// Whether the session passed a second factor (TOTP or a recovery code).
        second_factor: bool,
    },
    /// A staff member. Staff reach customer data only through an impersonation grant, and only
    /// with a session that passed a second factor.
    Staff {
        /// The staff member.
        staff: StaffId,
        /// Whether this session passed a second factor.
        mfa: bool,
        /// The grant in force, if any.
        grant: Option<ImpersonationGrant>,
    },
    /// A workspace API key with its allowed actions.
    ApiKey {
        /// The key.
        key: ApiKeyId,
        /// The one workspace it belongs to.
        workspace: WorkspaceId,
        /// What it may do.
        actions: Vec<Action>,
    },
    /// The public collector, acting for the workspace that owns the site an event names.
    Collector {
        /// The site's workspace.
        workspace: WorkspaceId,
    },
    /// An internal job.
    System(SystemTask),
}

impl Principal {
    /// A member with `(workspace, role)` memberships in workspaces without a TOTP policy, whose
    /// session has not passed a second factor: what tools and tests usually need.
    pub fn member(
        user: UserId,
        memberships: impl IntoIterator<Item = (WorkspaceId, Role)>,
    ) -> Self {
        Principal::Member {
            user,
            memberships: memberships
                .into_iter()
                .map(|(workspace, role)| Membership {
                    workspace,
                    role,
                    require_totp: false,
                })
                .collect(),
            second_factor: false,
        }
    }
}

/// Why the gate said no. Deliberately coarse: it names the rule, never the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The principal has no standing in this workspace.
    #[error("no access to this workspace")]
    NotAMember,
    /// The principal's role or key does not allow this action.
    #[error("action not permitted")]
    ActionNotPermitted,
    /// Staff without a second factor, or without a grant for this workspace.
    #[error("staff access needs a second factor and an impersonation grant")]
    StaffNeedsGrant,
    /// The impersonation grant has expired.
    #[error("impersonation grant expired")]
    GrantExpired,
    /// A scope for another action was passed where this one was needed.
    #[error("scope does not cover this action")]
    WrongScope,
    /// The workspace requires TOTP and this session has not passed a second factor.
    #[error("this workspace requires two-factor authentication")]
    SecondFactorRequired,
    /// The workspace's plan does not include the feature (the message names the least plan
    /// that does).
    #[error("{0}")]
    FeatureNotInPlan(crate::policy::Feature),
    /// The workspace enforces single sign-on and this session did not come from its identity
    /// provider.
    #[error("this workspace requires single sign-on")]
    SsoRequired,
}

/// What a scope's holder is, kept for audit records and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Actor {
    /// A customer user.
    Member(UserId),
    /// A staff member through an impersonation grant.
    Staff(StaffId),
    /// An API key.
    ApiKey(ApiKeyId),
    /// The collector.
    Collector,
    /// An internal job.
    System(SystemTask),
}

/// Proof that the gate admitted one action on one workspace.
///
/// No public constructor, no `Default`, no `Deserialize`: the gate is the only way to get one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    workspace: WorkspaceId,
    action: Action,
    actor: Actor,
    grant: Option<GrantId>,
}

impl Scope {
    /// The workspace this scope admits.
    pub const fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// The action this scope admits.
    pub const fn action(&self) -> Action {
        self.action
    }

    /// Who holds the scope.
    pub const fn actor(&self) -> Actor {
        self.actor
    }

    /// The impersonation grant a staff member holds the scope through; `None` for every other
    /// actor.
    pub const fn grant(&self) -> Option<GrantId> {
        self.grant
    }

    /// Checks that this scope admits `action`.
    ///
    /// # Errors
    /// [`Denied::WrongScope`] when it admits another action.
    pub fn require(&self, action: Action) -> Result<(), Denied> {
        if self.action == action {
            Ok(())
        } else {
            Err(Denied::WrongScope)
        }
    }
}

/// Who holds a [`BreachScope`]: the register records it with every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreachActor {
    /// A staff member whose session passed a second factor.
    Staff(StaffId),
    /// An internal job ([`SystemTask::Breach`]).
    System(SystemTask),
}

/// Proof that the gate admitted a principal to the breach register: incidents are instance data
/// (not one customer's), handled by staff with a second factor and by the breach notifier.
///
/// No public constructor, no `Default`, no `Deserialize`: [`Gate::authorize_breach`] is the only
/// way to get one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreachScope {
    actor: BreachActor,
}

impl BreachScope {
    /// Who holds the scope.
    pub const fn actor(&self) -> BreachActor {
        self.actor
    }

    /// The scope under which core records this holder's changes to instance data (vulnerability
    /// reports) in the instance tenant's audit log: the holder as the actor, on
    /// [`WorkspaceId::INSTANCE`], for [`Action::WorkspaceRead`], which no store call on the
    /// instance tenant needs. Crate-private: the gate keeps the instance tenant from every
    /// principal but the identity and audit tasks, and this scope only carries the actor.
    pub(crate) fn instance_log(&self) -> Scope {
        Scope {
            workspace: WorkspaceId::INSTANCE,
            action: Action::WorkspaceRead,
            actor: match self.actor {
                BreachActor::Staff(staff) => Actor::Staff(staff),
                BreachActor::System(task) => Actor::System(task),
            },
            grant: None,
        }
    }
}

/// The one authorisation gate.
#[derive(Clone)]
pub struct Gate {
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate reading time (for grant expiry) from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }

    /// The time the gate decides by (its clock's now): what records of its decisions carry.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Decides whether `principal` may do `action` on `workspace`.
    ///
    /// # Errors
    /// A [`Denied`] naming the rule that refused.
    pub fn authorize(
        &self,
        principal: &Principal,
        workspace: WorkspaceId,
        action: Action,
    ) -> Result<Scope, Denied> {
        // The instance tenant holds people's own secrets and security events: only the identity
        // task reaches it, and the audit task reads its log.
        if workspace == WorkspaceId::INSTANCE
            && *principal != Principal::System(SystemTask::Identity)
            && *principal != Principal::System(SystemTask::Audit)
        {
            return Err(Denied::NotAMember);
        }
        let mut through_grant = None;
        let actor = match principal {
            Principal::Member {
                user,
                memberships,
                second_factor,
            } => {
                if action != Action::WorkspaceCreate {
                    let membership = memberships
                        .iter()
                        .find(|m| m.workspace == workspace)
                        .ok_or(Denied::NotAMember)?;
                    if membership.require_totp && !second_factor {
                        return Err(Denied::SecondFactorRequired);
                    }
                    if !membership.role.permits(action) {
                        return Err(Denied::ActionNotPermitted);
                    }
                }
                Actor::Member(*user)
            }
            Principal::Staff { staff, mfa, grant } => {
                let grant = grant
                    .as_ref()
                    .filter(|grant| *mfa && grant.workspace == workspace)
                    .ok_or(Denied::StaffNeedsGrant)?;
                if self.clock.now() >= grant.expires_at {
                    return Err(Denied::GrantExpired);
                }
                let allowed = match action {
                    Action::WorkspaceCreate | Action::EventIngest | Action::SecretRead => false,
                    Action::RetentionEnforce | Action::DirectorySync => false,
                    Action::KeyManage | Action::MemberManage | Action::SecretWrite => false,
                    // Only the customer accepts their contract.
                    Action::LegalAccept => false,
                    other => other.is_read_only() || grant.write,
                };
                if !allowed {
                    return Err(Denied::ActionNotPermitted);
                }
                through_grant = Some(grant.id);
                Actor::Staff(*staff)
            }
            Principal::ApiKey {
                key,
                workspace: own,
                actions,
            } => {
                if *own != workspace {
                    return Err(Denied::NotAMember);
                }
                if action == Action::WorkspaceCreate || !actions.contains(&action) {
                    return Err(Denied::ActionNotPermitted);
                }
                Actor::ApiKey(*key)
            }
            Principal::Collector { workspace: own } => {
                if *own != workspace {
                    return Err(Denied::NotAMember);
                }
                if action != Action::EventIngest {
                    return Err(Denied::ActionNotPermitted);
                }
                Actor::Collector
            }
            Principal::System(task) => {
                let instance_only = *task == SystemTask::Identity;
                let anywhere = *task == SystemTask::Audit;
                let placed = anywhere || instance_only == (workspace == WorkspaceId::INSTANCE);
                if !placed || !task.permits(action) {
                    return Err(Denied::ActionNotPermitted);
                }
                Actor::System(*task)
            }
        };
        Ok(Scope {
            workspace,
            action,
            actor,
            grant: through_grant,
        })
    }

    /// Decides whether `principal` may read and change the breach register: a staff member whose
    /// session passed a second factor (no impersonation grant needed: incidents are not a
    /// customer's data), or the [`SystemTask::Breach`] notifier.
    ///
    /// # Errors
    /// [`Denied::StaffNeedsGrant`] for staff without a second factor;
    /// [`Denied::ActionNotPermitted`] for everyone else.
    pub fn authorize_breach(&self, principal: &Principal) -> Result<BreachScope, Denied> {
        let actor = match principal {
            Principal::Staff {
                staff, mfa: true, ..
            } => BreachActor::Staff(*staff),
            Principal::Staff { .. } => return Err(Denied::StaffNeedsGrant),
            Principal::System(SystemTask::Breach) => BreachActor::System(SystemTask::Breach),
            _ => return Err(Denied::ActionNotPermitted),
        };
        Ok(BreachScope { actor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use time::Duration;

    fn gate() -> (Gate, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::UNIX_EPOCH + Duration::days(20_000),
        ));
        (Gate::new(clock.clone()), clock)
    }

    #[test]
    fn member_is_confined_to_own_workspaces_and_role() {
        let (gate, _) = gate();
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        let viewer = Principal::member(UserId::new(), [(a, Role::Viewer)]);
        let scope = gate.authorize(&viewer, a, Action::EventRead).unwrap();
        assert_eq!(scope.workspace(), a);
        assert_eq!(
            gate.authorize(&viewer, b, Action::EventRead),
            Err(Denied::NotAMember)
        );
        assert_eq!(
            gate.authorize(&viewer, a, Action::SecretRead),
            Err(Denied::ActionNotPermitted)
        );
        assert_eq!(
            gate.authorize(&viewer, a, Action::EventIngest),
            Err(Denied::ActionNotPermitted)
        );
    }

    #[test]
    fn staff_need_mfa_a_live_grant_and_stay_read_only_without_write() {
        let (gate, clock) = gate();
        let ws = WorkspaceId::new();
        let grant = ImpersonationGrant {
            id: GrantId::new(),
            workspace: ws,
            expires_at: clock.now() + Duration::minutes(30),
            write: false,
        };
        let staff = |mfa, grant| Principal::Staff {
            staff: StaffId::new(),
            mfa,
            grant,
        };
        assert_eq!(
            gate.authorize(&staff(true, None), ws, Action::EventRead),
            Err(Denied::StaffNeedsGrant)
        );
        assert_eq!(
            gate.authorize(&staff(false, Some(grant.clone())), ws, Action::EventRead),
            Err(Denied::StaffNeedsGrant)
        );
        let other = WorkspaceId::new();
        assert_eq!(
            gate.authorize(&staff(true, Some(grant.clone())), other, Action::EventRead),
            Err(Denied::StaffNeedsGrant)
        );
        let grant_id = grant.id;
        let with_grant = staff(true, Some(grant));
        let scope = gate.authorize(&with_grant, ws, Action::EventRead).unwrap();
        assert_eq!(scope.grant(), Some(grant_id), "the scope names the grant");
        assert_eq!(
            gate.authorize(&with_grant, ws, Action::WorkspaceUpdate),
            Err(Denied::ActionNotPermitted)
        );
        assert_eq!(
            gate.authorize(&with_grant, ws, Action::SecretRead),
            Err(Denied::ActionNotPermitted)
        );
        clock.advance(Duration::minutes(30));
        assert_eq!(
            gate.authorize(&with_grant, ws, Action::EventRead),
            Err(Denied::GrantExpired)
        );
    }

    #[test]
    fn api_keys_and_collector_are_pinned_to_their_workspace_and_actions() {
        let (gate, _) = gate();
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        let key = Principal::ApiKey {
            key: ApiKeyId::new(),
            workspace: a,
            actions: vec![Action::EventRead],
        };
        assert!(gate.authorize(&key, a, Action::EventRead).is_ok());
        assert_eq!(
            gate.authorize(&key, a, Action::SecretRead),
            Err(Denied::ActionNotPermitted)
        );
        assert_eq!(
            gate.authorize(&key, b, Action::EventRead),
            Err(Denied::NotAMember)
        );
        let collector = Principal::Collector { workspace: a };
        assert!(gate.authorize(&collector, a, Action::EventIngest).is_ok());
        assert_eq!(
            gate.authorize(&collector, a, Action::EventRead),
            Err(Denied::ActionNotPermitted)
        );
        assert_eq!(
            gate.authorize(&collector, b, Action::EventIngest),
            Err(Denied::NotAMember)
        );
    }

    #[test]
    fn system_tasks_do_only_their_job() {
        let (gate, _) = gate();
        let ws = WorkspaceId::new();
        let rotation = Principal::System(SystemTask::KeyRotation);
        assert!(gate.authorize(&rotation, ws, Action::KeyManage).is_ok());
        assert_eq!(
            gate.authorize(&rotation, ws, Action::SecretRead),
            Err(Denied::ActionNotPermitted)
        );
    }

    #[test]
    fn the_instance_tenant_is_reachable_only_by_the_identity_task() {
        let (gate, _) = gate();
        let identity = Principal::System(SystemTask::Identity);
        assert!(
            gate.authorize(&identity, WorkspaceId::INSTANCE, Action::SecretWrite)
                .is_ok()
        );
        assert_eq!(
            gate.authorize(&identity, WorkspaceId::new(), Action::SecretRead),
            Err(Denied::ActionNotPermitted)
        );
        let provisioning = Principal::System(SystemTask::Provisioning);
        assert_eq!(
            gate.authorize(
                &provisioning,
                WorkspaceId::INSTANCE,
                Action::WorkspaceCreate
            ),
            Err(Denied::NotAMember)
        );
        // The audit task reads the instance tenant's log, and nothing else there.
        let auditor = Principal::System(SystemTask::Audit);
        assert!(
            gate.authorize(&auditor, WorkspaceId::INSTANCE, Action::AuditRead)
                .is_ok()
        );
        assert_eq!(
            gate.authorize(&auditor, WorkspaceId::INSTANCE, Action::SecretRead),
            Err(Denied::ActionNotPermitted)
        );
        let admin = Principal::member(UserId::new(), [(WorkspaceId::INSTANCE, Role::Admin)]);
        // Even a (forged) membership cannot reach the instance tenant.
        assert_eq!(
            gate.authorize(&admin, WorkspaceId::INSTANCE, Action::SecretRead),
            Err(Denied::NotAMember)
        );
        let key = Principal::ApiKey {
            key: ApiKeyId::new(),
            workspace: WorkspaceId::INSTANCE,
            actions: vec![Action::SecretRead],
        };
        assert_eq!(
            gate.authorize(&key, WorkspaceId::INSTANCE, Action::SecretRead),
            Err(Denied::NotAMember)
        );
    }

    #[test]
    fn the_breach_register_admits_staff_with_a_second_factor_and_the_notifier() {
        let (gate, _) = gate();
        let staff = StaffId::new();
        let with_mfa = Principal::Staff {
            staff,
            mfa: true,
            grant: None,
        };
        assert_eq!(
            gate.authorize_breach(&with_mfa).unwrap().actor(),
            BreachActor::Staff(staff)
        );
        let without = Principal::Staff {
            staff,
            mfa: false,
            grant: None,
        };
        assert_eq!(
            gate.authorize_breach(&without),
            Err(Denied::StaffNeedsGrant)
        );
        let notifier = Principal::System(SystemTask::Breach);
        assert_eq!(
            gate.authorize_breach(&notifier).unwrap().actor(),
            BreachActor::System(SystemTask::Breach)
        );
        for refused in [
            Principal::System(SystemTask::Audit),
            Principal::member(UserId::new(), [(WorkspaceId::new(), Role::Admin)]),
            Principal::Collector {
                workspace: WorkspaceId::new(),
            },
        ] {
            assert_eq!(
                gate.authorize_breach(&refused),
                Err(Denied::ActionNotPermitted),
                "{refused:?}"
            );
        }
        // On a workspace the notifier only reads (who its admins are); never the instance tenant.
        let ws = WorkspaceId::new();
        assert!(gate.authorize(&notifier, ws, Action::WorkspaceRead).is_ok());
        assert_eq!(
            gate.authorize(&notifier, ws, Action::MemberManage),
            Err(Denied::ActionNotPermitted)
        );
        assert_eq!(
            gate.authorize(&notifier, WorkspaceId::INSTANCE, Action::WorkspaceRead),
            Err(Denied::NotAMember)
        );
    }

    #[test]
    fn only_directory_tokens_sync_and_the_sso_task_only_reads() {
        let (gate, clock) = gate();
        let ws = WorkspaceId::new();
        let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
        assert_eq!(
            gate.authorize(&admin, ws, Action::DirectorySync),
            Err(Denied::ActionNotPermitted),
            "no role provisions users"
        );
        let staff = Principal::Staff {
            staff: StaffId::new(),
            mfa: true,
            grant: Some(ImpersonationGrant {
                id: GrantId::new(),
                workspace: ws,
                expires_at: clock.now() + Duration::minutes(30),
                write: true,
            }),
        };
        assert_eq!(
            gate.authorize(&staff, ws, Action::DirectorySync),
            Err(Denied::ActionNotPermitted),
            "not even a write grant"
        );
        let token = Principal::ApiKey {
            key: ApiKeyId::new(),
            workspace: ws,
            actions: vec![Action::DirectorySync],
        };
        assert!(gate.authorize(&token, ws, Action::DirectorySync).is_ok());
        assert_eq!(
            gate.authorize(&token, WorkspaceId::new(), Action::DirectorySync),
            Err(Denied::NotAMember)
        );
        let sso = Principal::System(SystemTask::SingleSignOn);
        assert!(gate.authorize(&sso, ws, Action::SecretRead).is_ok());
        assert!(gate.authorize(&sso, ws, Action::WorkspaceRead).is_ok());
        for action in [
            Action::SecretWrite,
            Action::MemberManage,
            Action::DirectorySync,
        ] {
            assert_eq!(
                gate.authorize(&sso, ws, action),
                Err(Denied::ActionNotPermitted)
            );
        }
        assert_eq!(
            gate.authorize(&sso, WorkspaceId::INSTANCE, Action::SecretRead),
            Err(Denied::NotAMember),
            "never the instance tenant"
        );
        for task in SystemTask::ALL {
            assert_eq!(SystemTask::parse(task.as_str()), Some(task));
        }
    }

    #[test]
    fn scope_require_checks_the_action() {
        let (gate, _) = gate();
        let ws = WorkspaceId::new();
        let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
        let scope = gate.authorize(&admin, ws, Action::SecretRead).unwrap();
        assert_eq!(scope.grant(), None, "only staff scopes carry a grant");
        assert!(scope.require(Action::SecretRead).is_ok());
        assert_eq!(scope.require(Action::SecretWrite), Err(Denied::WrongScope));
    }
}
