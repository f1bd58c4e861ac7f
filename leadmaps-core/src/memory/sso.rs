//! [`SsoStore`] and [`ScimStore`] on the in-memory store: every change, its provisioning effect
//! and its audit record happen under the one state lock, so all of it happens or none.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{MemoryStore, State};
use crate::audit::AuditRecord;
use crate::auth::session::{Realm, SessionRecord};
use crate::auth::totp::Subject;
use crate::auth::users::User;
use crate::error::{Error, Result};
use crate::policy::{Feature, Plan};
use crate::scim::{
    Provisioning, Revoked, ScimKind, ScimOp, ScimOutcome, ScimResource, ScimStore, ScimWrite,
    require_directory, write_draft,
};
use crate::sso::{
    OidcConnection, SsoProtocol, SsoSettings, SsoStore, check_session_scope, connection_draft,
    enforcement_draft, login_draft, plan_draft, removal_draft, require_feature,
    require_provisioning, require_sso_read,
};
use crate::tenancy::{Action, ApiKeyId, Role, Scope, UserId, WorkspaceId};

/// The SSO and SCIM part of the state.
#[derive(Default)]
pub(super) struct SsoState {
    settings: HashMap<WorkspaceId, SsoSettings>,
    oidc: HashMap<WorkspaceId, OidcConnection>,
    pub(super) sessions: HashMap<String, WorkspaceId>,
    scim: HashMap<WorkspaceId, BTreeMap<Uuid, ScimResource>>,
    /// Who created each API key (see [`crate::scim::key_owner`]).
    pub(super) key_owners: HashMap<ApiKeyId, UserId>,
}

impl State {
    fn settings(&self, workspace: WorkspaceId) -> Result<SsoSettings> {
        if !self.workspaces.contains_key(&workspace) {
            return Err(Error::NotFound);
        }
        Ok(self
            .sso
            .settings
            .get(&workspace)
            .copied()
            .unwrap_or_default())
    }

    /// Deprovisions `user` from `workspace`; see [`Provisioning::Revoke`].
    fn revoke(&mut self, workspace: WorkspaceId, user: UserId, at: OffsetDateTime) -> Revoked {
        let mut revoked = Revoked {
            membership: self.memberships.remove(&(user, workspace)).is_some(),
            ..Revoked::default()
        };
        let subject = Subject::User(user);
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.subject == subject)
            .map(|s| s.selector.clone())
            .collect();
        for selector in &gone {
            self.sessions.remove(selector);
            self.challenge_failures.remove(selector);
            self.sso.sessions.remove(selector);
        }
        revoked.sessions = gone.len() as u64;
        if let Some(email) = self.users.get(&user).map(|u| u.email.clone()) {
            let before = self.links.len();
            self.links
                .retain(|_, l| !(l.email == email && l.realm == Realm::Customer));
            revoked.links = (before - self.links.len()) as u64;
        }
        revoked.recovery_codes = self
            .recovery
            .remove(&subject)
            .map_or(0, |codes| codes.iter().flatten().count() as u64);
        for (id, key) in &mut self.api_keys {
            if key.workspace == workspace
                && key.revoked_at.is_none()
                && self.sso.key_owners.get(id) == Some(&user)
            {
                key.revoked_at = Some(at);
                revoked.api_keys += 1;
            }
        }
        revoked
    }
}

#[async_trait]
impl SsoStore for MemoryStore {
    async fn sso_settings(&self, scope: &Scope) -> Result<SsoSettings> {
        self.state().settings(scope.workspace())
    }

    async fn set_plan(&self, scope: &Scope, plan: Plan, at: OffsetDateTime) -> Result<AuditRecord> {
        require_provisioning(scope)?;
        let mut state = self.state();
        let before = state.settings(scope.workspace())?;
        let record = state.append_audit(scope, plan_draft(scope, before.plan, plan), at)?;
        state
            .sso
            .settings
            .insert(scope.workspace(), SsoSettings { plan, ..before });
        Ok(record)
    }

    async fn set_sso_enforced(
        &self,
        scope: &Scope,
        enforce: bool,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        scope.require(Action::MemberManage)?;
        let mut state = self.state();
        let before = state.settings(scope.workspace())?;
        if enforce {
            require_feature(&before, Feature::Sso)?;
        }
        let draft = enforcement_draft(scope, before.enforce_sso, enforce);
        let record = state.append_audit(scope, draft, at)?;
        state.sso.settings.insert(
            scope.workspace(),
            SsoSettings {
                enforce_sso: enforce,
                ..before
            },
        );
        Ok(record)
    }

    async fn oidc_connection(&self, scope: &Scope) -> Result<Option<OidcConnection>> {
        require_sso_read(scope)?;
        Ok(self.state().sso.oidc.get(&scope.workspace()).cloned())
    }

    async fn put_oidc_connection(
        &self,
        scope: &Scope,
        connection: &OidcConnection,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        scope.require(Action::SecretWrite)?;
        connection.validate()?;
        let mut state = self.state();
        require_feature(&state.settings(scope.workspace())?, Feature::Sso)?;
        let before = state.sso.oidc.get(&scope.workspace()).cloned();
        let record = state.append_audit(
            scope,
            connection_draft(scope, before.as_ref(), connection),
            at,
        )?;
        state.sso.oidc.insert(scope.workspace(), connection.clone());
        Ok(record)
    }

    async fn delete_oidc_connection(
        &self,
        scope: &Scope,
        at: OffsetDateTime,
    ) -> Result<Option<AuditRecord>> {
        scope.require(Action::SecretWrite)?;
        let mut state = self.state();
        let Some(before) = state.sso.oidc.get(&scope.workspace()).cloned() else {
            return Ok(None);
        };
        let record = state.append_audit(scope, removal_draft(scope, &before), at)?;
        state.sso.oidc.remove(&scope.workspace());
        Ok(Some(record))
    }

    async fn insert_sso_session(
        &self,
        scope: &Scope,
        session: &SessionRecord,
        protocol: SsoProtocol,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        check_session_scope(scope, session)?;
        let Subject::User(user) = session.subject else {
            unreachable!("checked by check_session_scope");
        };
        let mut state = self.state();
        if state.sessions.contains_key(&session.selector) {
            return Err(Error::Conflict("session selector exists"));
        }
        let record = state.append_audit(scope, login_draft(scope, user, protocol.as_str()), at)?;
        state
            .sessions
            .insert(session.selector.clone(), session.clone());
        state
            .sso
            .sessions
            .insert(session.selector.clone(), scope.workspace());
        Ok(record)
    }

    async fn sso_session_workspace(&self, selector: &str) -> Result<Option<WorkspaceId>> {
        let state = self.state();
        Ok(state
            .sessions
            .contains_key(selector)
            .then(|| state.sso.sessions.get(selector).copied())
            .flatten())
    }
}

#[async_trait]
impl ScimStore for MemoryStore {
    async fn scim_resources(&self, scope: &Scope, kind: ScimKind) -> Result<Vec<ScimResource>> {
        require_directory(scope)?;
        let state = self.state();
        let mut out: Vec<ScimResource> = state
            .sso
            .scim
            .get(&scope.workspace())
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(|r| r.kind == kind)
            .cloned()
            .collect();
        out.sort_by_key(|r| (r.created_at, r.id));
        Ok(out)
    }

    async fn scim_resource(
        &self,
        scope: &Scope,
        kind: ScimKind,
        id: Uuid,
    ) -> Result<Option<ScimResource>> {
        require_directory(scope)?;
        Ok(self
            .state()
            .sso
            .scim
            .get(&scope.workspace())
            .and_then(|r| r.get(&id))
            .filter(|r| r.kind == kind)
            .cloned())
    }

    async fn scim_write(
        &self,
        scope: &Scope,
        write: &ScimWrite,
        at: OffsetDateTime,
    ) -> Result<ScimOutcome> {
        require_directory(scope)?;
        let mut resource = write.resource.clone();
        resource.validate()?;
        let mut guard = self.state();
        let state = &mut *guard;
        let workspace = scope.workspace();
        // Check everything first: nothing changes before the last check passed.
        let resources = state.sso.scim.entry(workspace).or_default();
        let stored = resources
            .get(&resource.id)
            .filter(|r| r.kind == resource.kind);
        match write.op {
            ScimOp::Create => {
                if resources.contains_key(&resource.id) {
                    return Err(Error::Conflict("SCIM resource id exists"));
                }
            }
            ScimOp::Replace { expected } | ScimOp::Delete { expected } => match stored {
                None => return Err(Error::NotFound),
                Some(stored) if stored.version != expected => {
                    return Err(Error::Conflict("SCIM resource changed"));
                }
                Some(_) => {}
            },
        }
        if !matches!(write.op, ScimOp::Delete { .. })
            && resources.values().any(|r| {
                r.kind == resource.kind
                    && r.id != resource.id
                    && r.name_key() == resource.name_key()
            })
        {
            return Err(Error::Conflict("SCIM resource name exists"));
        }
        let mut revoked = None;
        match &write.provisioning {
            Provisioning::Keep => {}
            Provisioning::Admit(email) => {
                let user = match state.users.values().find(|u| &u.email == email) {
                    Some(user) => user.id,
                    None => {
                        let user = User {
                            id: UserId::new(),
                            email: email.clone(),
                            created_at: at,
                        };
                        state.users.insert(user.id, user.clone());
                        user.id
                    }
                };
                state
                    .memberships
                    .entry((user, workspace))
                    .or_insert(Role::Viewer);
                resource.user = Some(user);
            }
            Provisioning::Revoke(user) => {
                revoked = Some(state.revoke(workspace, *user, at));
                resource.user = None;
            }
        }
        let applied = ScimWrite {
            resource: resource.clone(),
            ..write.clone()
        };
        let draft = write_draft(scope, &applied, revoked.as_ref());
        let record = state.append_audit(scope, draft, at)?;
        let resources = state.sso.scim.entry(workspace).or_default();
        match write.op {
            ScimOp::Delete { .. } => {
                resources.remove(&resource.id);
            }
            _ => {
                resources.insert(resource.id, resource.clone());
            }
        }
        Ok(ScimOutcome {
            resource,
            record,
            revoked,
        })
    }
}
