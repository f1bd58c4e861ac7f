//! The audit record of each mutating store method, built in one place so every store writes the
//! same record with the same change (log, then act: the store appends it in the transaction that
//! makes the change).

use ipnet::IpNet;
use serde_json::json;
use time::Date;

use super::{AuditAction, AuditDraft, Target};
use crate::auth::keys::ApiKeyRecord;
use crate::tenancy::{ApiKeyId, Region, Role, Scope, UserId};

fn workspace(scope: &Scope, action: AuditAction) -> AuditDraft {
    AuditDraft::new(scope, action, Target::workspace(scope.workspace()))
}

/// `workspace.created`: its name and region.
pub fn workspace_created(scope: &Scope, name: &str, region: Region) -> AuditDraft {
    workspace(scope, AuditAction::WorkspaceCreated)
        .with_after(json!({ "name": name, "region": region.as_str() }))
}

/// `workspace.renamed`.
pub fn workspace_renamed(scope: &Scope, before: &str, after: &str) -> AuditDraft {
    workspace(scope, AuditAction::WorkspaceRenamed)
        .with_before(json!({ "name": before }))
        .with_after(json!({ "name": after }))
}

/// `site.added`: the normalised domain.
pub fn site_added(scope: &Scope, domain: &str) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::SiteAdded, Target::new("site", domain))
        .with_after(json!({ "domain": domain }))
}

/// `blocked_ips.updated`: the collector's blocked ranges before and after.
pub fn blocked_ips_updated(scope: &Scope, before: &[IpNet], after: &[IpNet]) -> AuditDraft {
    let ranges = |r: &[IpNet]| r.iter().map(ToString::to_string).collect::<Vec<_>>();
    workspace(scope, AuditAction::BlockedIpsUpdated)
        .with_before(json!({ "ranges": ranges(before) }))
        .with_after(json!({ "ranges": ranges(after) }))
}

/// `secret.written`: the name only (the target), never the value.
pub fn secret_written(scope: &Scope, name: &str) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::SecretWritten,
        Target::new("secret", name),
    )
}

/// `secret.deleted`.
pub fn secret_deleted(scope: &Scope, name: &str) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::SecretDeleted,
        Target::new("secret", name),
    )
}

/// `tenant_key.rewrapped`: the KEK ids before and after.
pub fn tenant_key_rewrapped(scope: &Scope, version: u32, from: u32, to: u32) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::TenantKeyRewrapped,
        Target::new("tenant_key", version.to_string()),
    )
    .with_before(json!({ "kek_id": from }))
    .with_after(json!({ "kek_id": to }))
}

/// `tenant_key.created`: the version and the KEK it is wrapped under.
pub fn tenant_key_created(scope: &Scope, version: u32, kek_id: u32) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::TenantKeyCreated,
        Target::new("tenant_key", version.to_string()),
    )
    .with_after(json!({ "kek_id": kek_id }))
}

/// `tenant_keys.destroyed`: how many (crypto-shredding).
pub fn tenant_keys_destroyed(scope: &Scope, count: u64) -> AuditDraft {
    workspace(scope, AuditAction::TenantKeysDestroyed).with_after(json!({ "destroyed": count }))
}

/// `salts.destroyed`: the days whose visitor-hash salts were destroyed.
pub fn salts_destroyed(scope: &Scope, days: &[Date]) -> AuditDraft {
    let days: Vec<String> = days.iter().map(ToString::to_string).collect();
    workspace(scope, AuditAction::SaltsDestroyed).with_after(json!({ "days": days }))
}

/// `api_key.created`: its name and actions, never the key.
pub fn api_key_created(scope: &Scope, key: &ApiKeyRecord) -> AuditDraft {
    let actions: Vec<&str> = key.actions.iter().map(|a| a.as_str()).collect();
    AuditDraft::new(scope, AuditAction::ApiKeyCreated, Target::api_key(key.id))
        .with_after(json!({ "name": key.name, "actions": actions }))
}

/// `api_key.revoked`.
pub fn api_key_revoked(scope: &Scope, id: ApiKeyId) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::ApiKeyRevoked, Target::api_key(id))
}

/// `member.role_changed`: the role before (none for a new member) and after.
pub fn member_role_changed(
    scope: &Scope,
    user: UserId,
    before: Option<Role>,
    after: Role,
) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::MemberRoleChanged, Target::user(user))
        .with_before(json!({ "role": before }))
        .with_after(json!({ "role": after }))
}
