//! A SCIM 2.0 service provider (RFC 7643 and 7644) per workspace: what an identity provider
//! (Entra ID, Okta, ...) calls to provision and deprovision the workspace's users and groups.
//!
//! - [`Directory`] is the protocol: resources as RFC 7643 JSON, list queries with filters
//!   ([`filter`]: `eq`, case-insensitive on `userName` and other case-insensitive attributes,
//!   joined with `and`), PATCH ([`patch`]: the operation names and value shapes Entra ID and Okta
//!   send), the discovery documents ([`schema`]).
//! - [`ScimStore`] keeps the resources. Each write is one transaction with its audit record and,
//!   for users, its effect on the linked leadmaps user ([`Provisioning`]): an active user with
//!   an address is admitted (the user is created if new and made a member, a viewer unless they
//!   already have a role); a user set `active=false` or deleted is deprovisioned: their
//!   membership, every session, every API key they created in the workspace, every pending
//!   magic link and every recovery code are gone when the transaction commits.
//! - The directory authenticates with a token stored like an API key ([`Directory::create_token`]):
//!   an API key of the workspace whose only action is [`Action::DirectorySync`], which no member
//!   role and no staff grant holds.
//!
//! Only workspaces whose plan includes [`crate::policy::Feature::Scim`] are served.

pub mod filter;
pub mod patch;
pub mod schema;
mod service;

use async_trait::async_trait;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{AuditAction, AuditDraft, AuditRecord, Target};
use crate::error::{Error, Result};
use crate::mail::Address;
use crate::tenancy::{Action, Scope, UserId};

pub use service::{CreatedToken, Directory, ScimError, ScimQuery, ScimReply};

/// The two resource types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScimKind {
    /// `urn:ietf:params:scim:schemas:core:2.0:User`.
    User,
    /// `urn:ietf:params:scim:schemas:core:2.0:Group`.
    Group,
}

impl ScimKind {
    /// The stable name stored in databases (`user`, `group`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ScimKind::User => "user",
            ScimKind::Group => "group",
        }
    }

    /// Parses [`ScimKind::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "user" => Some(ScimKind::User),
            "group" => Some(ScimKind::Group),
            _ => None,
        }
    }

    /// The resource type name (`User`, `Group`).
    pub const fn resource_type(self) -> &'static str {
        match self {
            ScimKind::User => "User",
            ScimKind::Group => "Group",
        }
    }

    /// The endpoint (`Users`, `Groups`).
    pub const fn endpoint(self) -> &'static str {
        match self {
            ScimKind::User => "Users",
            ScimKind::Group => "Groups",
        }
    }

    /// The audit target kind (`scim_user`, `scim_group`).
    pub const fn target_kind(self) -> &'static str {
        match self {
            ScimKind::User => "scim_user",
            ScimKind::Group => "scim_group",
        }
    }
}

/// A SCIM resource as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimResource {
    /// User or group.
    pub kind: ScimKind,
    /// The server-assigned id.
    pub id: Uuid,
    /// `userName` or the group's `displayName`; unique per workspace and kind, ignoring case.
    pub name: String,
    /// The identity provider's own id for it.
    pub external_id: Option<String>,
    /// Whether the user is active (groups: always true).
    pub active: bool,
    /// The leadmaps user an active user with an address was linked to.
    pub user: Option<UserId>,
    /// Every other attribute, as RFC 7643 JSON with canonical attribute names (no `id`,
    /// `schemas` or `meta`).
    pub document: Value,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// Starts at 1 and grows by one with each change.
    pub version: u64,
}

/// Longest resource name or external id, in bytes.
pub const MAX_NAME: usize = 1024;
/// Largest stored document, in bytes of JSON.
pub const MAX_DOCUMENT: usize = 64 * 1024;

impl ScimResource {
    /// Checks sizes.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() || self.name.len() > MAX_NAME {
            return Err(Error::invalid("the name must be 1 to 1024 bytes"));
        }
        if self
            .external_id
            .as_ref()
            .is_some_and(|e| e.is_empty() || e.len() > MAX_NAME)
        {
            return Err(Error::invalid("externalId must be 1 to 1024 bytes"));
        }
        if !self.document.is_object() || self.document.to_string().len() > MAX_DOCUMENT {
            return Err(Error::invalid(
                "the resource must be a JSON object under 64 KiB",
            ));
        }
        Ok(())
    }

    /// The name as compared for uniqueness: lower case.
    pub fn name_key(&self) -> String {
        self.name.to_lowercase()
    }
}

/// What a write does to the linked leadmaps user, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    /// Nothing.
    Keep,
    /// Link the user with this address (created if no user has it) and make them a member of
    /// the workspace (a viewer, unless they already have a role); the stored resource's `user`
    /// is set to them.
    Admit(Address),
    /// Deprovision this user: remove their membership and revoke, across the instance, their
    /// sessions, pending magic links and recovery codes, and in the workspace every API key
    /// they created. The stored resource's `user` is cleared.
    Revoke(UserId),
}

/// What a write does to the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimOp {
    /// Insert a new resource.
    Create,
    /// Replace the stored resource of the same id, only if its version is still `expected`.
    Replace {
        /// The version read before the change.
        expected: u64,
    },
    /// Delete the resource of the same id, only if its version is still `expected`.
    Delete {
        /// The version read before the change.
        expected: u64,
    },
}

/// One write, with its effect on the linked user.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimWrite {
    /// What to do.
    pub op: ScimOp,
    /// The resource after the change (for a delete: as it was).
    pub resource: ScimResource,
    /// The effect on the linked leadmaps user.
    pub provisioning: Provisioning,
}

/// What a deprovisioning revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revoked {
    /// Whether a membership was removed.
    pub membership: bool,
    /// Sessions deleted.
    pub sessions: u64,
    /// API keys revoked.
    pub api_keys: u64,
    /// Pending magic links deleted.
    pub links: u64,
    /// Recovery codes deleted.
    pub recovery_codes: u64,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimOutcome {
    /// The resource as stored (for a delete: as it was).
    pub resource: ScimResource,
    /// The audit record written with it.
    pub record: AuditRecord,
    /// What was revoked, for a [`Provisioning::Revoke`].
    pub revoked: Option<Revoked>,
}

/// Storage of a workspace's SCIM resources. Every method requires [`Action::DirectorySync`]
/// and stays in the scope's workspace.
#[async_trait]
pub trait ScimStore: Send + Sync {
    /// The workspace's resources of `kind`, by creation time then id.
    async fn scim_resources(&self, scope: &Scope, kind: ScimKind) -> Result<Vec<ScimResource>>;

    /// One resource.
    async fn scim_resource(
        &self,
        scope: &Scope,
        kind: ScimKind,
        id: Uuid,
    ) -> Result<Option<ScimResource>>;

    /// Applies `write` in one transaction: the resource change, the [`Provisioning`], and the
    /// audit record [`write_draft`] builds from them (written last, with what was revoked).
    /// Either all of it commits or none.
    ///
    /// # Errors
    /// [`Error::Conflict`] for a create whose id or (case-insensitive) name exists, a replace
    /// whose name another resource has, or a version that moved; [`Error::NotFound`] for a
    /// replace or delete of a missing resource; [`Error::Invalid`] for a resource
    /// [`ScimResource::validate`] refuses.
    async fn scim_write(
        &self,
        scope: &Scope,
        write: &ScimWrite,
        at: OffsetDateTime,
    ) -> Result<ScimOutcome>;
}

/// The audit record of a write: which action, on which resource, with what was revoked. Every
/// store writes exactly this.
pub fn write_draft(scope: &Scope, write: &ScimWrite, revoked: Option<&Revoked>) -> AuditDraft {
    let resource = &write.resource;
    let target = Target::new(resource.kind.target_kind(), resource.id.to_string());
    let action = match (resource.kind, write.op, revoked.is_some()) {
        (ScimKind::User, _, true) => AuditAction::ScimUserDeprovisioned,
        (ScimKind::User, ScimOp::Create, false) => AuditAction::ScimUserProvisioned,
        (ScimKind::User, _, false) => AuditAction::ScimUserUpdated,
        (ScimKind::Group, ScimOp::Create, _) => AuditAction::ScimGroupProvisioned,
        (ScimKind::Group, ScimOp::Replace { .. }, _) => AuditAction::ScimGroupUpdated,
        (ScimKind::Group, ScimOp::Delete { .. }, _) => AuditAction::ScimGroupDeleted,
    };
    let deleted = matches!(write.op, ScimOp::Delete { .. });
    let after = match (resource.kind, revoked) {
        (ScimKind::User, Some(revoked)) => json!({
            "deleted": deleted,
            "user": match &write.provisioning {
                Provisioning::Revoke(user) => Some(user.to_string()),
                _ => None,
            },
            "membership": revoked.membership,
            "session_count": revoked.sessions,
            "api_key_count": revoked.api_keys,
            "link_count": revoked.links,
            "recovery_code_count": revoked.recovery_codes,
        }),
        (ScimKind::User, None) => json!({
            "deleted": deleted,
            "active": resource.active,
            "user": resource.user.map(|u| u.to_string()),
        }),
        (ScimKind::Group, _) => json!({
            "deleted": deleted,
            "members": resource.document.get("members").and_then(Value::as_array).map_or(0, Vec::len),
        }),
    };
    AuditDraft::new(scope, action, target).with_after(after)
}

/// Checks a scope of the directory.
///
/// # Errors
/// [`Error::Denied`] otherwise.
pub fn require_directory(scope: &Scope) -> Result<()> {
    scope.require(Action::DirectorySync).map_err(Error::from)
}

/// Who an API key belongs to, for deprovisioning: the member who created it, unless it is a
/// directory token (those belong to the workspace and survive their creator's departure).
/// Stores record it when they insert the key.
pub fn key_owner(scope: &Scope, key: &crate::auth::keys::ApiKeyRecord) -> Option<UserId> {
    match scope.actor() {
        crate::tenancy::Actor::Member(user) if !key.actions.contains(&Action::DirectorySync) => {
            Some(user)
        }
        _ => None,
    }
}
