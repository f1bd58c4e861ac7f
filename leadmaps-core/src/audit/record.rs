//! What an audit record says: which action, by whom, on what, and the change it made.

use serde_json::Value;
use time::OffsetDateTime;

use super::chain::ChainHead;
use super::patch::PatchOp;
use super::redact::redact;
use crate::error::{Error, Result};
use crate::tenancy::{
    Actor, ApiKeyId, Denied, GrantId, Scope, StaffId, SystemTask, UserId, WorkspaceId, uuid_id,
};

uuid_id!(
    /// An audit record's id: fresh for every record, unique across workspaces.
    AuditId
);

macro_rules! audit_actions {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, visible: $visible:literal;)*) => {
        /// What an audit record records. Each action has a stable dotted name ([`AuditAction::as_str`])
        /// that stores, APIs and exports use; names are never reused or renamed. The docs of each
        /// action say what its target is and what its before and after hold.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum AuditAction {
            $($(#[$doc])* $variant,)*
        }

        impl AuditAction {
            /// Every action.
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant),*];

            /// The stable dotted name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)*
                }
            }

            /// Whether the workspace's own audit log shows it to the customer: configuration
            /// changes, IP allowlist and retention changes, key and member management, and every
            /// staff access (impersonation and what was done under it). Internal housekeeping
            /// (key rewrapping, salt rotation) and people's own account security events are
            /// recorded but not shown there.
            pub const fn customer_visible(self) -> bool {
                match self {
                    $(AuditAction::$variant => $visible,)*
                }
            }
        }
    };
}

audit_actions! {
    /// The workspace was created. Target: the workspace; after: its name and region.
    WorkspaceCreated = "workspace.created", visible: true;
    /// The workspace was renamed. Target: the workspace; before/after: `{"name": ...}`.
    WorkspaceRenamed = "workspace.renamed", visible: true;
    /// The workspace policy (e.g. "require TOTP") changed. Target: the workspace; before/after:
    /// the policy.
    WorkspacePolicyUpdated = "workspace.policy.updated", visible: true;
    /// The dashboard and API IP allowlist changed. Target: the workspace; before/after:
    /// `{"ranges": [CIDR, ...]}`.
    IpAllowlistUpdated = "ip_allowlist.updated", visible: true;
    /// The collector's blocked client ranges changed. Target: the workspace; before/after:
    /// `{"ranges": [CIDR, ...]}`.
    BlockedIpsUpdated = "blocked_ips.updated", visible: true;
    /// The retention policy changed. Target: the workspace; before/after: `{"days": n}`.
    RetentionPolicyUpdated = "retention_policy.updated", visible: true;
    /// The retention job deleted events. Target: the workspace; after: `{"cutoff": time,
    /// "deleted": count}`.
    RetentionEventsDeleted = "retention.events_deleted", visible: true;
    /// A site was added. Target: the site (its domain); after: the site.
    SiteAdded = "site.added", visible: true;
    /// A staff member opened an impersonation grant. Target: the grant; after: reason, expiry
    /// and whether it allows writes. Recorded before any access under the grant.
    ImpersonationStarted = "operator.impersonation.started", visible: true;
    /// An impersonation grant ended (expired, closed or revoked). Target: the grant.
    ImpersonationEnded = "operator.impersonation.ended", visible: true;
    /// A staff member read workspace data under a grant. Target: what was read.
    StaffRead = "staff.read", visible: true;
    /// An API key was created. Target: the key; after: its name and actions (never the key).
    ApiKeyCreated = "api_key.created", visible: true;
    /// An API key was revoked. Target: the key.
    ApiKeyRevoked = "api_key.revoked", visible: true;
    /// A member was added, or their role changed. Target: the user; before/after: `{"role": ...}`.
    MemberRoleChanged = "member.role_changed", visible: true;
    /// A named secret (license key, integration secret) was stored or replaced. Target: the
    /// secret's name; the value never appears.
    SecretWritten = "secret.written", visible: true;
    /// A named secret was deleted. Target: the secret's name.
    SecretDeleted = "secret.deleted", visible: true;
    /// A tenant key version was created. Target: the key version.
    TenantKeyCreated = "tenant_key.created", visible: false;
    /// A tenant key was rewrapped under another KEK. Target: the key version; before/after:
    /// `{"kek_id": n}`.
    TenantKeyRewrapped = "tenant_key.rewrapped", visible: false;
    /// Every tenant key of the workspace was destroyed (crypto-shredding). Target: the workspace.
    TenantKeysDestroyed = "tenant_keys.destroyed", visible: true;
    /// Visitor-hash salts were destroyed. Target: the workspace; after: the days.
    SaltsDestroyed = "salts.destroyed", visible: false;
    /// A person enrolled a TOTP factor. Target: the user or staff member.
    TotpEnrolled = "totp.enrolled", visible: false;
    /// A TOTP code was presented twice (a possible replay). Target: the user or staff member.
    TotpReuseDetected = "totp.reuse_detected", visible: false;
    /// A person regenerated their recovery codes. Target: the user or staff member; after:
    /// `{"count": n}` (never the codes).
    RecoveryCodesRegenerated = "recovery_codes.regenerated", visible: false;
    /// The breach notifier e-mailed the workspace's admins about a security incident that
    /// affects it. Target: the incident (`incident`, its id); after: the obligation, its duty and
    /// legal basis, its deadline, when it was sent, the subject and how many admins it went to
    /// (never their addresses).
    BreachNotificationSent = "breach.notification_sent", visible: true;
    /// A staff member recorded a vulnerability report. Target: the report
    /// (`vulnerability_report`, its id); after: its finding, whether it is actively exploited,
    /// the incident it opened and its obligations (never its title, summary or reporter).
    VulnerabilityRecorded = "vulnerability.recorded", visible: false;
    /// An obligation of a vulnerability report was acknowledged (done, or late with a reason).
    /// Target: the report; before/after: the obligation's id, duty and state (`pending`,
    /// `late`, `done`; never the evidence or the reason).
    VulnerabilityAcknowledged = "vulnerability.acknowledged", visible: false;
    /// A vulnerability report was closed. Target: the report; before/after: `{"status": ...}`.
    VulnerabilityClosed = "vulnerability.closed", visible: false;
    /// The workspace's plan changed (by provisioning or billing). Target: the workspace;
    /// before/after: `{"plan": name}`.
    PlanChanged = "plan.changed", visible: true;
    /// An OIDC identity provider was configured or replaced. Target: the `sso_connection`
    /// `oidc`; before/after: issuer, client id and domains (never the client secret).
    SsoConfigured = "sso.configured", visible: true;
    /// The OIDC identity provider was removed. Target: the `sso_connection` `oidc`; before: as
    /// configured.
    SsoRemoved = "sso.removed", visible: true;
    /// Enforcing single sign-on was switched on or off. Target: the workspace; before/after:
    /// `{"enforce_sso": bool}`.
    SsoEnforcementChanged = "sso.enforcement_changed", visible: true;
    /// A member signed in through the workspace's identity provider. Target: the user; after:
    /// `{"protocol": "oidc"}`.
    SsoLoginSucceeded = "sso.login_succeeded", visible: true;
    /// A sign-in through the workspace's identity provider was refused. Target: the
    /// `sso_connection`; after: `{"protocol": ..., "reason": ...}` (never a token or an address).
    SsoLoginFailed = "sso.login_failed", visible: true;
    /// A SCIM directory token was created. Target: the key; after: its name (never the token).
    ScimTokenCreated = "scim.token_created", visible: true;
    /// The directory created a user. Target: the `scim_user`; after: `{"active": bool, "user":
    /// linked user id or null}`.
    ScimUserProvisioned = "scim.user_provisioned", visible: true;
    /// The directory changed a user. Target: the `scim_user`; before/after: `{"active": bool}`.
    ScimUserUpdated = "scim.user_updated", visible: true;
    /// The directory deactivated or deleted a user, and every credential of the linked user
    /// died in the same transaction. Target: the `scim_user`; after: `{"deleted": bool,
    /// "user": id, "membership": bool, "session_count": n, "api_key_count": n, "link_count": n,
    /// "recovery_code_count": n}` (`*_count` keys, which the audit redaction keeps).
    ScimUserDeprovisioned = "scim.user_deprovisioned", visible: true;
    /// The directory created a group. Target: the `scim_group`; after: `{"members": n}`.
    ScimGroupProvisioned = "scim.group_provisioned", visible: true;
    /// The directory changed a group. Target: the `scim_group`; after: `{"members": n}`.
    ScimGroupUpdated = "scim.group_updated", visible: true;
    /// The directory deleted a group. Target: the `scim_group`.
    ScimGroupDeleted = "scim.group_deleted", visible: true;
    /// A SCIM request with a valid token was refused (plan, conflict, malformed input).
    /// Target: the workspace; after: `{"method": ..., "resource": ..., "status": n}`.
    ScimRequestFailed = "scim.request_failed", visible: true;
    /// The workspace's admins were e-mailed about a new version of the sub-processor register.
    /// Target: the register version (`subprocessors`); before/after: the previous and the new
    /// register; after also holds the change (added, removed, changed vendors), when it was sent
    /// and to how many admins (never their addresses).
    SubprocessorsChanged = "subprocessors.changed", visible: true;
    /// The workspace accepted a version of the data processing agreement. Target: the DPA
    /// version (`dpa`); after: `{"version": ..., "accepted_at": ...}`; the actor is who accepted.
    DpaAccepted = "dpa.accepted", visible: true;
}

impl AuditAction {
    /// Parses [`AuditAction::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did it: always the principal the gate admitted, taken from the [`Scope`] the record is
/// built from, never from anything a caller says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditActor {
    /// A customer user.
    Member(UserId),
    /// A staff member, with the impersonation grant they acted under.
    Staff {
        /// The staff member.
        staff: StaffId,
        /// The grant; every staff scope on a workspace has one.
        grant: Option<GrantId>,
    },
    /// A workspace API key.
    ApiKey(ApiKeyId),
    /// The public collector.
    Collector,
    /// An internal job.
    System(SystemTask),
}

impl AuditActor {
    /// The actor holding `scope`.
    pub fn of(scope: &Scope) -> Self {
        match scope.actor() {
            Actor::Member(user) => AuditActor::Member(user),
            Actor::Staff(staff) => AuditActor::Staff {
                staff,
                grant: scope.grant(),
            },
            Actor::ApiKey(key) => AuditActor::ApiKey(key),
            Actor::Collector => AuditActor::Collector,
            Actor::System(task) => AuditActor::System(task),
        }
    }

    /// The stable kind: `member`, `staff`, `api_key`, `collector` or `system`.
    pub const fn kind(&self) -> &'static str {
        match self {
            AuditActor::Member(_) => "member",
            AuditActor::Staff { .. } => "staff",
            AuditActor::ApiKey(_) => "api_key",
            AuditActor::Collector => "collector",
            AuditActor::System(_) => "system",
        }
    }

    /// Who, within the kind: a hyphenated UUID, a [`SystemTask::as_str`] name, or empty for the
    /// collector.
    pub fn subject(&self) -> String {
        match self {
            AuditActor::Member(user) => user.to_string(),
            AuditActor::Staff { staff, .. } => staff.to_string(),
            AuditActor::ApiKey(key) => key.to_string(),
            AuditActor::Collector => String::new(),
            AuditActor::System(task) => task.as_str().to_owned(),
        }
    }

    /// The impersonation grant of a staff actor.
    pub const fn grant(&self) -> Option<GrantId> {
        match self {
            AuditActor::Staff { grant, .. } => *grant,
            _ => None,
        }
    }

    /// Rebuilds an actor from [`AuditActor::kind`], [`AuditActor::subject`] and
    /// [`AuditActor::grant`], as a store reads it back.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown kind or task, a malformed id, or a grant on a non-staff
    /// actor.
    pub fn from_parts(kind: &str, subject: &str, grant: Option<GrantId>) -> Result<Self> {
        let bad = || Error::invalid("malformed audit actor");
        let actor = match kind {
            "member" => AuditActor::Member(subject.parse().map_err(|_| bad())?),
            "staff" => AuditActor::Staff {
                staff: subject.parse().map_err(|_| bad())?,
                grant,
            },
            "api_key" => AuditActor::ApiKey(subject.parse().map_err(|_| bad())?),
            "collector" if subject.is_empty() => AuditActor::Collector,
            "system" => AuditActor::System(SystemTask::parse(subject).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        if grant.is_some() && !matches!(actor, AuditActor::Staff { .. }) {
            return Err(bad());
        }
        Ok(actor)
    }
}

/// Longest target kind, in bytes.
pub const MAX_TARGET_KIND: usize = 64;
/// Longest target id, in bytes.
pub const MAX_TARGET_ID: usize = 256;
/// Longest request id, in bytes.
pub const MAX_REQUEST_ID: usize = 128;

/// What the action was done to: a kind (`workspace`, `api_key`, `user`, `site`, ...) and an id
/// within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Lower-case ASCII letters, digits, `_` and `.`; 1 to [`MAX_TARGET_KIND`] bytes.
    pub kind: String,
    /// 1 to [`MAX_TARGET_ID`] bytes, no control characters.
    pub id: String,
}

impl Target {
    /// A target of any kind (checked when the record is sealed).
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }

    /// The workspace itself.
    pub fn workspace(id: WorkspaceId) -> Self {
        Self::new("workspace", id.to_string())
    }

    /// A customer user.
    pub fn user(id: UserId) -> Self {
        Self::new("user", id.to_string())
    }

    /// A staff member.
    pub fn staff(id: StaffId) -> Self {
        Self::new("staff", id.to_string())
    }

    /// An API key.
    pub fn api_key(id: ApiKeyId) -> Self {
        Self::new("api_key", id.to_string())
    }

    /// An impersonation grant.
    pub fn grant(id: GrantId) -> Self {
        Self::new("impersonation_grant", id.to_string())
    }

    /// Checks the documented shape.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the rule broken.
    pub fn validate(&self) -> Result<()> {
        let kind_ok =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.';
        if self.kind.is_empty()
            || self.kind.len() > MAX_TARGET_KIND
            || !self.kind.bytes().all(kind_ok)
        {
            return Err(Error::invalid(
                "audit target kind must be 1 to 64 of a-z, 0-9, _ and .",
            ));
        }
        if self.id.is_empty()
            || self.id.len() > MAX_TARGET_ID
            || self.id.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "audit target id must be 1 to 256 bytes without control characters",
            ));
        }
        Ok(())
    }
}

/// Checks a request id: 1 to [`MAX_REQUEST_ID`] bytes of visible ASCII.
///
/// # Errors
/// [`Error::Invalid`].
pub fn validate_request_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "request id must be 1 to 128 bytes of visible ASCII",
        ));
    }
    Ok(())
}

/// What a caller supplies to record an action: built from the gate's [`Scope`] (which fixes the
/// workspace and the actor) and the action, target and change. Before and after pass through
/// [`super::redact()`] on the way in, so a secret never reaches a store. A store turns a draft
/// into an [`AuditRecord`] with [`super::seal`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    workspace: WorkspaceId,
    actor: AuditActor,
    action: AuditAction,
    target: Target,
    before: Option<Value>,
    after: Option<Value>,
    request_id: Option<String>,
}

impl AuditDraft {
    /// A draft of `action` on `target` by the holder of `scope`, in `scope`'s workspace.
    pub fn new(scope: &Scope, action: AuditAction, target: Target) -> Self {
        Self {
            workspace: scope.workspace(),
            actor: AuditActor::of(scope),
            action,
            target,
            before: None,
            after: None,
            request_id: None,
        }
    }

    /// The state before the action, redacted.
    pub fn with_before(mut self, before: Value) -> Self {
        self.before = Some(redact(before));
        self
    }

    /// The state after the action, redacted.
    pub fn with_after(mut self, after: Value) -> Self {
        self.after = Some(redact(after));
        self
    }

    /// The id of the request that caused the action (checked when the record is sealed).
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Checks that `scope` is the one the draft was built from, as far as a record can tell:
    /// the same workspace and the same holder. Stores call it first in
    /// [`super::AuditStore::append_audit`], so a record's actor is always the caller.
    ///
    /// # Errors
    /// [`Denied::WrongScope`] otherwise.
    pub fn check_scope(&self, scope: &Scope) -> Result<(), Denied> {
        if self.workspace == scope.workspace() && self.actor == AuditActor::of(scope) {
            Ok(())
        } else {
            Err(Denied::WrongScope)
        }
    }

    /// The workspace (the scope's).
    pub const fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// The actor (the scope's holder).
    pub const fn actor(&self) -> AuditActor {
        self.actor
    }

    /// The action.
    pub const fn action(&self) -> AuditAction {
        self.action
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The redacted state before.
    pub fn before(&self) -> Option<&Value> {
        self.before.as_ref()
    }

    /// The redacted state after.
    pub fn after(&self) -> Option<&Value> {
        self.after.as_ref()
    }

    /// The request id.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    pub(super) fn into_parts(
        self,
    ) -> (
        AuditActor,
        AuditAction,
        Target,
        Option<Value>,
        Option<Value>,
        Option<String>,
    ) {
        (
            self.actor,
            self.action,
            self.target,
            self.before,
            self.after,
            self.request_id,
        )
    }
}

/// An audit record as stored. Every field but `hash` is covered by `hash` (see
/// [`super::record_hash`]), and `prev_hash` is the hash of the workspace's previous record, so
/// the records of a workspace form a hash chain. Stores build records only with [`super::seal`]
/// and return them exactly as sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Unique id.
    pub id: AuditId,
    /// The workspace whose log holds it.
    pub workspace: WorkspaceId,
    /// Position in the workspace's log, from 1, without gaps.
    pub seq: u64,
    /// When it was recorded (from the injected clock), UTC, whole microseconds.
    pub at: OffsetDateTime,
    /// Who acted.
    pub actor: AuditActor,
    /// What was done.
    pub action: AuditAction,
    /// To what.
    pub target: Target,
    /// The redacted state before, if any.
    pub before: Option<Value>,
    /// The redacted state after, if any.
    pub after: Option<Value>,
    /// RFC 6902 patch from `before` to `after` (absent values are `null`).
    pub patch: Vec<PatchOp>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Hash of the previous record of the workspace; all zeros for the first.
    pub prev_hash: [u8; 32],
    /// SHA-256 over the record's canonical encoding (see [`super::record_hash`]).
    pub hash: [u8; 32],
}

impl AuditRecord {
    /// This record as a chain head: its seq and hash.
    pub const fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// The record as JSON, as the customer audit API and export and the evidence bundle show
    /// it: times in RFC 3339, hashes in lower-case hex.
    pub fn to_json(&self) -> Value {
        let hex = |bytes: &[u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        serde_json::json!({
            "seq": self.seq,
            "id": self.id.to_string(),
            "at": self.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "actor": {
                "kind": self.actor.kind(),
                "id": self.actor.subject(),
                "impersonation_grant": self.actor.grant().map(|g| g.to_string()),
            },
            "action": self.action.as_str(),
            "target": {"kind": self.target.kind, "id": self.target.id},
            "before": self.before,
            "after": self.after,
            "patch": self.patch,
            "request_id": self.request_id,
            "hash": hex(&self.hash),
            "prev_hash": hex(&self.prev_hash),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::tenancy::{Action, Gate, ImpersonationGrant, Principal, Role};
    use serde_json::json;

    #[test]
    fn action_names_are_unique_dotted_and_parse_back() {
        let mut seen = std::collections::BTreeSet::new();
        for action in AuditAction::ALL {
            let name = action.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(name.contains('.'), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{name}"
            );
            assert_eq!(AuditAction::parse(name), Some(*action));
        }
        assert_eq!(AuditAction::parse("nope"), None);
        for required in [
            "workspace.policy.updated",
            "ip_allowlist.updated",
            "retention_policy.updated",
            "retention.events_deleted",
            "operator.impersonation.started",
            "operator.impersonation.ended",
            "staff.read",
            "api_key.created",
            "api_key.revoked",
            "member.role_changed",
            "totp.enrolled",
            "totp.reuse_detected",
            "recovery_codes.regenerated",
        ] {
            assert!(AuditAction::parse(required).is_some(), "{required}");
        }
        for shown in [
            AuditAction::IpAllowlistUpdated,
            AuditAction::RetentionPolicyUpdated,
            AuditAction::WorkspacePolicyUpdated,
            AuditAction::ImpersonationStarted,
            AuditAction::ImpersonationEnded,
            AuditAction::StaffRead,
        ] {
            assert!(shown.customer_visible(), "{shown}");
        }
        assert!(!AuditAction::TenantKeyRewrapped.customer_visible());
    }

    #[test]
    fn the_actor_is_the_scope_holder_with_the_grant() {
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
        ));
        let gate = Gate::new(clock.clone());
        let ws = WorkspaceId::new();
        let user = UserId::new();
        let member = Principal::member(user, [(ws, Role::Admin)]);
        let scope = gate
            .authorize(&member, ws, Action::WorkspaceUpdate)
            .unwrap();
        let draft = AuditDraft::new(&scope, AuditAction::WorkspaceRenamed, Target::workspace(ws));
        assert_eq!(
            (draft.workspace(), draft.actor()),
            (ws, AuditActor::Member(user))
        );
        let (staff, grant) = (StaffId::new(), GrantId::new());
        let principal = Principal::Staff {
            staff,
            mfa: true,
            grant: Some(ImpersonationGrant {
                id: grant,
                workspace: ws,
                expires_at: clock.now() + time::Duration::minutes(30),
                write: false,
            }),
        };
        let scope = gate.authorize(&principal, ws, Action::EventRead).unwrap();
        let actor = AuditActor::of(&scope);
        assert_eq!(
            actor,
            AuditActor::Staff {
                staff,
                grant: Some(grant)
            }
        );
        for actor in [
            actor,
            AuditActor::Member(user),
            AuditActor::ApiKey(ApiKeyId::new()),
            AuditActor::Collector,
            AuditActor::System(SystemTask::Retention),
            AuditActor::Staff { staff, grant: None },
        ] {
            assert_eq!(
                AuditActor::from_parts(actor.kind(), &actor.subject(), actor.grant()).unwrap(),
                actor
            );
        }
        assert!(AuditActor::from_parts("member", &user.to_string(), Some(grant)).is_err());
        assert!(AuditActor::from_parts("system", "nope", None).is_err());
        assert!(AuditActor::from_parts("robot", "", None).is_err());
    }

    #[test]
    fn drafts_redact_on_the_way_in() {
        let gate = Gate::new(Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH)));
        let ws = WorkspaceId::new();
        let scope = gate
            .authorize(
                &Principal::member(UserId::new(), [(ws, Role::Admin)]),
                ws,
                Action::MemberManage,
            )
            .unwrap();
        let draft = AuditDraft::new(&scope, AuditAction::ApiKeyCreated, Target::workspace(ws))
            .with_before(json!(null))
            .with_after(json!({"name": "ci", "token": "lm_x_y", "key_id": 3}));
        assert_eq!(
            draft.after(),
            Some(&json!({"name": "ci", "token": "[REDACTED]", "key_id": 3}))
        );
        assert!(!format!("{draft:?}").contains("lm_x_y"));
    }

    #[test]
    fn targets_and_request_ids_are_checked() {
        assert!(Target::workspace(WorkspaceId::new()).validate().is_ok());
        assert!(Target::new("site", "example.com").validate().is_ok());
        for bad in [
            Target::new("", "x"),
            Target::new("Site", "x"),
            Target::new("site", ""),
            Target::new("site", "a\nb"),
            Target::new("k".repeat(65), "x"),
            Target::new("site", "x".repeat(257)),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(validate_request_id("req-123_abc").is_ok());
        for bad in ["", "has space", "tab\t", &"r".repeat(129)] {
            assert!(validate_request_id(bad).is_err(), "{bad}");
        }
    }
}
