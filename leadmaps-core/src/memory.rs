//! An in-memory store: the reference implementation of every store trait, for tests and for
//! trying leadmaps out. Data lives as long as the value.

mod breach;
mod legal;
mod sso;
mod vulnerability;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::IpNet;
use time::{Date, OffsetDateTime};

use crate::audit::{AuditDraft, AuditId, AuditRecord, AuditStore, Checkpoint, drafts, seal};
use crate::auth::impersonation::{GrantStore, StoredGrant};
use crate::auth::keys::{ApiKeyRecord, ApiKeyStore};
use crate::auth::recovery::RecoveryStore;
use crate::auth::session::{MagicLink, SessionRecord, SessionStore};
use crate::auth::staff::{SensitiveAction, StaffMember, StaffStore, StepUpStore};
use crate::auth::tokens::recovery::RecoveryHash;
use crate::auth::totp::{Subject, TotpFactor, TotpStore};
use crate::auth::users::{User, UserStore};
use crate::error::{Error, Result};
use crate::ingest::{Event, EventBatch, EventId, RejectReason, Verdict};
use crate::mail::Address;
use crate::store::{
    DropCount, EventSink, KeyStore, MAX_SECRET_BLOB, PolicyChange, SaltDestruction, SaltStore,
    SecretStore, Site, SiteRoute, SiteStore, Store, StoredSalt, StoredSecret, Workspace,
    WorkspacePolicy, WorkspaceStore, WrappedTenantKey, normalize_domain, require_secret_read,
    validate_secret_name, validate_workspace_name,
};
use crate::tenancy::{
    Action, ApiKeyId, Denied, GrantId, Membership, Region, Role, Scope, StaffId, UserId,
    WorkspaceId,
};

#[derive(Default)]
struct State {
    workspaces: HashMap<WorkspaceId, Workspace>,
    secrets: HashMap<WorkspaceId, BTreeMap<String, StoredSecret>>,
    tenant_keys: BTreeMap<WorkspaceId, BTreeMap<u32, WrappedTenantKey>>,
    key_checks: HashMap<u32, Vec<u8>>,
    sites: BTreeMap<String, Site>,
    blocked_ips: HashMap<WorkspaceId, Vec<IpNet>>,
    salts: BTreeMap<WorkspaceId, BTreeMap<Date, Vec<u8>>>,
    salt_destructions: HashMap<WorkspaceId, Vec<SaltDestruction>>,
    events: HashMap<WorkspaceId, BTreeMap<(OffsetDateTime, EventId), Event>>,
    grants: HashMap<GrantId, StoredGrant>,
    event_ids: HashMap<WorkspaceId, BTreeSet<EventId>>,
    drops: HashMap<WorkspaceId, BTreeMap<(Date, RejectReason), u64>>,
    totp: HashMap<Subject, TotpFactor>,
    links: HashMap<String, MagicLink>,
    api_keys: BTreeMap<ApiKeyId, ApiKeyRecord>,
    users: HashMap<UserId, User>,
    step_ups: Vec<(StaffId, SensitiveAction, OffsetDateTime)>,
    memberships: BTreeMap<(UserId, WorkspaceId), Role>,
    sessions: HashMap<String, SessionRecord>,
    challenge_failures: HashMap<String, u32>,
    recovery: HashMap<Subject, Vec<Option<RecoveryHash>>>,
    staff: HashMap<StaffId, StaffMember>,
    audit: HashMap<WorkspaceId, Vec<AuditRecord>>,
    checkpoints: HashMap<WorkspaceId, Vec<Checkpoint>>,
    breach: breach::BreachState,
    sso: sso::SsoState,
    reports:
        std::collections::BTreeMap<crate::vulnerability::ReportId, crate::vulnerability::Report>,
    dpa: HashMap<WorkspaceId, Vec<crate::legal::DpaAcceptance>>,
    notices: HashMap<WorkspaceId, Vec<crate::legal::SubprocessorNotice>>,
}

impl State {
    /// Appends the next record of the scope's workspace. Called with the state locked, so "read
    /// the head, seal, push" never interleaves with another append, and a mutation that writes
    /// its record under the same lock commits both or neither.
    fn append_audit(
        &mut self,
        scope: &Scope,
        draft: AuditDraft,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        draft.check_scope(scope)?;
        let log = self.audit.entry(scope.workspace()).or_default();
        let record = seal(log.last(), scope.workspace(), draft, at, AuditId::new())?;
        log.push(record.clone());
        Ok(record)
    }
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    region: Region,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store holding the EU region.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding `region`.
    pub fn with_region(region: Region) -> Self {
        Self {
            region,
            ..Self::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated: every method either
        // finishes its change or returns before making one.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl WorkspaceStore for MemoryStore {
    async fn create_workspace(
        &self,
        scope: &Scope,
        name: &str,
        region: Region,
        created_at: OffsetDateTime,
    ) -> Result<Workspace> {
        scope.require(Action::WorkspaceCreate)?;
        validate_workspace_name(name)?;
        let mut state = self.state();
        if state.workspaces.contains_key(&scope.workspace()) {
            return Err(Error::Conflict("workspace exists"));
        }
        let workspace = Workspace {
            id: scope.workspace(),
            name: name.to_owned(),
            region,
            created_at,
            policy: WorkspacePolicy::default(),
        };
        state.append_audit(
            scope,
            drafts::workspace_created(scope, name, region),
            created_at,
        )?;
        state.workspaces.insert(workspace.id, workspace.clone());
        Ok(workspace)
    }

    async fn workspace(&self, scope: &Scope) -> Result<Workspace> {
        self.state()
            .workspaces
            .get(&scope.workspace())
            .cloned()
            .ok_or(Error::NotFound)
    }

    async fn rename_workspace(
        &self,
        scope: &Scope,
        name: &str,
        at: OffsetDateTime,
    ) -> Result<Workspace> {
        scope.require(Action::WorkspaceUpdate)?;
        validate_workspace_name(name)?;
        let mut state = self.state();
        let before = state
            .workspaces
            .get(&scope.workspace())
            .ok_or(Error::NotFound)?
            .name
            .clone();
        state.append_audit(scope, drafts::workspace_renamed(scope, &before, name), at)?;
        let workspace = state
            .workspaces
            .get_mut(&scope.workspace())
            .ok_or(Error::NotFound)?;
        workspace.name = name.to_owned();
        Ok(workspace.clone())
    }

    async fn set_workspace_policy(
        &self,
        scope: &Scope,
        change: &PolicyChange,
        at: OffsetDateTime,
    ) -> Result<(Workspace, AuditRecord)> {
        scope.require(Action::WorkspaceUpdate)?;
        change.validate()?;
        // One lock over the change and its record: both happen or neither.
        let mut state = self.state();
        let before = state
            .workspaces
            .get(&scope.workspace())
            .ok_or(Error::NotFound)?
            .policy
            .clone();
        let after = change.apply(&before);
        let draft = change.audit_draft(scope, &before, &after);
        let record = state.append_audit(scope, draft, at)?;
        let workspace = state
            .workspaces
            .get_mut(&scope.workspace())
            .ok_or(Error::NotFound)?;
        workspace.policy = after;
        Ok((workspace.clone(), record))
    }

    async fn workspace_ids(
        &self,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let state = self.state();
        let mut ids: Vec<WorkspaceId> = state
            .workspaces
            .keys()
            .copied()
            .filter(|id| after.is_none_or(|after| *id > after))
            .collect();
        ids.sort_unstable();
        ids.truncate(limit as usize);
        Ok(ids)
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn put_secret(
        &self,
        scope: &Scope,
        secret: &StoredSecret,
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::SecretWrite)?;
        validate_secret_name(&secret.name)?;
        if secret.blob.len() > MAX_SECRET_BLOB {
            return Err(Error::invalid("sealed secret too large"));
        }
        let mut state = self.state();
        state.append_audit(scope, drafts::secret_written(scope, &secret.name), at)?;
        state
            .secrets
            .entry(scope.workspace())
            .or_default()
            .insert(secret.name.clone(), secret.clone());
        Ok(())
    }

    async fn secret(&self, scope: &Scope, name: &str) -> Result<Option<StoredSecret>> {
        require_secret_read(scope)?;
        Ok(self
            .state()
            .secrets
            .get(&scope.workspace())
            .and_then(|s| s.get(name))
            .cloned())
    }

    async fn delete_secret(&self, scope: &Scope, name: &str, at: OffsetDateTime) -> Result<bool> {
        scope.require(Action::SecretWrite)?;
        let mut state = self.state();
        let exists = state
            .secrets
            .get(&scope.workspace())
            .is_some_and(|s| s.contains_key(name));
        if exists {
            state.append_audit(scope, drafts::secret_deleted(scope, name), at)?;
            if let Some(secrets) = state.secrets.get_mut(&scope.workspace()) {
                secrets.remove(name);
            }
        }
        Ok(exists)
    }

    async fn secret_names(&self, scope: &Scope) -> Result<Vec<String>> {
        require_secret_read(scope)?;
        Ok(self
            .state()
            .secrets
            .get(&scope.workspace())
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn tenant_keys(&self, scope: &Scope) -> Result<Vec<WrappedTenantKey>> {
        Ok(self
            .state()
            .tenant_keys
            .get(&scope.workspace())
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn insert_tenant_key(&self, scope: &Scope, key: &WrappedTenantKey) -> Result<()> {
        if key.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let mut state = self.state();
        let exists = state
            .tenant_keys
            .get(&key.workspace)
            .is_some_and(|versions| versions.contains_key(&key.version));
        if exists {
            return Err(Error::Conflict("tenant key version exists"));
        }
        let draft = drafts::tenant_key_created(scope, key.version, key.kek_id);
        state.append_audit(scope, draft, key.created_at)?;
        state
            .tenant_keys
            .entry(key.workspace)
            .or_default()
            .insert(key.version, key.clone());
        Ok(())
    }

    async fn rewrap_tenant_key(
        &self,
        scope: &Scope,
        version: u32,
        from_kek: u32,
        to_kek: u32,
        blob: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool> {
        scope.require(Action::KeyManage)?;
        let mut state = self.state();
        let current = state
            .tenant_keys
            .get(&scope.workspace())
            .and_then(|k| k.get(&version))
            .map(|k| k.kek_id);
        if current != Some(from_kek) {
            return Ok(false);
        }
        let draft = drafts::tenant_key_rewrapped(scope, version, from_kek, to_kek);
        state.append_audit(scope, draft, at)?;
        let Some(key) = state
            .tenant_keys
            .get_mut(&scope.workspace())
            .and_then(|k| k.get_mut(&version))
        else {
            return Ok(false);
        };
        key.kek_id = to_kek;
        key.blob = blob.to_vec();
        Ok(true)
    }

    async fn delete_tenant_keys(&self, scope: &Scope, at: OffsetDateTime) -> Result<u64> {
        scope.require(Action::KeyManage)?;
        let mut state = self.state();
        let count = state
            .tenant_keys
            .get(&scope.workspace())
            .map_or(0, |k| k.len() as u64);
        state.append_audit(scope, drafts::tenant_keys_destroyed(scope, count), at)?;
        state.tenant_keys.remove(&scope.workspace());
        Ok(count)
    }

    async fn workspaces_needing_rewrap(
        &self,
        primary: u32,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let state = self.state();
        Ok(state
            .tenant_keys
            .iter()
            .filter(|(id, _)| after.is_none_or(|after| **id > after))
            .filter(|(_, keys)| keys.values().any(|k| k.kek_id != primary))
            .map(|(id, _)| *id)
            .take(limit as usize)
            .collect())
    }

    async fn count_needing_rewrap(&self, primary: u32) -> Result<u64> {
        let state = self.state();
        Ok(state
            .tenant_keys
            .values()
            .flat_map(|k| k.values())
            .filter(|k| k.kek_id != primary)
            .count() as u64)
    }

    async fn kek_ids_in_use(&self) -> Result<Vec<u32>> {
        let state = self.state();
        let ids: BTreeSet<u32> = state
            .tenant_keys
            .values()
            .flat_map(|k| k.values())
            .map(|k| k.kek_id)
            .collect();
        Ok(ids.into_iter().collect())
    }

    async fn key_check(&self, kek_id: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.state().key_checks.get(&kek_id).cloned())
    }

    async fn put_key_check(&self, kek_id: u32, blob: &[u8]) -> Result<bool> {
        let mut state = self.state();
        if state.key_checks.contains_key(&kek_id) {
            return Ok(false);
        }
        state.key_checks.insert(kek_id, blob.to_vec());
        Ok(true)
    }
}

#[async_trait]
impl SiteStore for MemoryStore {
    async fn add_site(
        &self,
        scope: &Scope,
        domain: &str,
        created_at: OffsetDateTime,
    ) -> Result<Site> {
        scope.require(Action::WorkspaceUpdate)?;
        let domain = normalize_domain(domain)?;
        let mut state = self.state();
        if !state.workspaces.contains_key(&scope.workspace()) {
            return Err(Error::NotFound);
        }
        if state.sites.contains_key(&domain) {
            return Err(Error::Conflict("domain belongs to a site already"));
        }
        let site = Site {
            workspace: scope.workspace(),
            domain: domain.clone(),
            created_at,
        };
        state.append_audit(scope, drafts::site_added(scope, &domain), created_at)?;
        state.sites.insert(domain, site.clone());
        Ok(site)
    }

    async fn sites(&self, scope: &Scope) -> Result<Vec<Site>> {
        let state = self.state();
        Ok(state
            .sites
            .values()
            .filter(|s| s.workspace == scope.workspace())
            .cloned()
            .collect())
    }

    async fn set_blocked_ips(
        &self,
        scope: &Scope,
        ranges: &[IpNet],
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::WorkspaceUpdate)?;
        let mut state = self.state();
        if !state.workspaces.contains_key(&scope.workspace()) {
            return Err(Error::NotFound);
        }
        let before = state
            .blocked_ips
            .get(&scope.workspace())
            .cloned()
            .unwrap_or_default();
        let draft = drafts::blocked_ips_updated(scope, &before, ranges);
        state.append_audit(scope, draft, at)?;
        state.blocked_ips.insert(scope.workspace(), ranges.to_vec());
        Ok(())
    }

    async fn site_route(&self, domain: &str) -> Result<Option<SiteRoute>> {
        let state = self.state();
        Ok(state.sites.get(domain).and_then(|site| {
            let workspace = state.workspaces.get(&site.workspace)?;
            Some(SiteRoute {
                workspace: site.workspace,
                region: workspace.region,
                blocked_ips: state
                    .blocked_ips
                    .get(&site.workspace)
                    .cloned()
                    .unwrap_or_default(),
            })
        }))
    }
}

#[async_trait]
impl SaltStore for MemoryStore {
    async fn salts(&self, scope: &Scope, days: &[Date]) -> Result<Vec<StoredSalt>> {
        let state = self.state();
        let Some(salts) = state.salts.get(&scope.workspace()) else {
            return Ok(Vec::new());
        };
        Ok(days
            .iter()
            .filter_map(|day| {
                salts.get(day).map(|blob| StoredSalt {
                    day: *day,
                    blob: blob.clone(),
                })
            })
            .collect())
    }

    async fn insert_salt(&self, scope: &Scope, salt: &StoredSalt) -> Result<()> {
        let mut state = self.state();
        let salts = state.salts.entry(scope.workspace()).or_default();
        if salts.contains_key(&salt.day) {
            return Err(Error::Conflict("salt for this day exists"));
        }
        salts.insert(salt.day, salt.blob.clone());
        Ok(())
    }

    async fn workspaces_with_salts_before(
        &self,
        before: Date,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let state = self.state();
        Ok(state
            .salts
            .iter()
            .filter(|(id, salts)| {
                after.is_none_or(|a| **id > a) && salts.keys().any(|d| *d < before)
            })
            .map(|(id, _)| *id)
            .take(limit as usize)
            .collect())
    }

    async fn destroy_salts_before(
        &self,
        scope: &Scope,
        before: Date,
        destroyed_at: OffsetDateTime,
    ) -> Result<Vec<Date>> {
        scope.require(Action::KeyManage)?;
        let mut state = self.state();
        let expired: Vec<Date> = state
            .salts
            .get(&scope.workspace())
            .map(|salts| salts.range(..before).map(|(day, _)| *day).collect())
            .unwrap_or_default();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        state.append_audit(
            scope,
            drafts::salts_destroyed(scope, &expired),
            destroyed_at,
        )?;
        let Some(salts) = state.salts.get_mut(&scope.workspace()) else {
            return Ok(Vec::new());
        };
        let keep = salts.split_off(&before);
        let destroyed: Vec<Date> = std::mem::replace(salts, keep).into_keys().collect();
        let records = state
            .salt_destructions
            .entry(scope.workspace())
            .or_default();
        records.extend(destroyed.iter().map(|day| SaltDestruction {
            day: *day,
            destroyed_at,
        }));
        Ok(destroyed)
    }

    async fn salt_destructions(&self, scope: &Scope) -> Result<Vec<SaltDestruction>> {
        scope.require(Action::AuditRead)?;
        Ok(self
            .state()
            .salt_destructions
            .get(&scope.workspace())
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl EventSink for MemoryStore {
    fn region(&self) -> Region {
        self.region
    }

    async fn append_events(&self, batch: &EventBatch) -> Result<Vec<Verdict>> {
        if batch.region() != self.region {
            return Err(Error::invalid("batch for another region"));
        }
        for (scope, event) in batch.events() {
            scope.require(Action::EventIngest)?;
            if scope.workspace() != event.workspace {
                return Err(Denied::WrongScope.into());
            }
        }
        let mut state = self.state();
        let mut verdicts = Vec::with_capacity(batch.events().len());
        for (_, event) in batch.events() {
            if state
                .event_ids
                .entry(event.workspace)
                .or_default()
                .insert(event.id)
            {
                state
                    .events
                    .entry(event.workspace)
                    .or_default()
                    .insert((event.received_at, event.id), event.clone());
                verdicts.push(Verdict::Accepted);
            } else {
                verdicts.push(Verdict::Duplicate);
            }
        }
        for (scope, day, reason, count) in batch.drops() {
            *state
                .drops
                .entry(scope.workspace())
                .or_default()
                .entry((*day, *reason))
                .or_default() += count;
        }
        Ok(verdicts)
    }

    async fn events(
        &self,
        scope: &Scope,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Event>> {
        scope.require(Action::EventRead)?;
        let state = self.state();
        let Some(events) = state.events.get(&scope.workspace()) else {
            return Ok(Vec::new());
        };
        Ok(events
            .range((from, EventId(uuid::Uuid::nil()))..)
            .take_while(|((at, _), _)| *at < to)
            .take(limit as usize)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn has_event(&self, scope: &Scope, id: EventId) -> Result<bool> {
        scope.require(Action::EventRead)?;
        Ok(self
            .state()
            .event_ids
            .get(&scope.workspace())
            .is_some_and(|ids| ids.contains(&id)))
    }

    async fn drop_counts(&self, scope: &Scope) -> Result<Vec<DropCount>> {
        scope.require(Action::EventRead)?;
        let state = self.state();
        Ok(state
            .drops
            .get(&scope.workspace())
            .map(|d| {
                d.iter()
                    .map(|((day, reason), count)| DropCount {
                        day: *day,
                        reason: *reason,
                        count: *count,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn delete_events_before(
        &self,
        scope: &Scope,
        cutoff: OffsetDateTime,
        limit: u32,
        at: OffsetDateTime,
    ) -> Result<(u64, Option<AuditRecord>)> {
        scope.require(Action::RetentionEnforce)?;
        if limit == 0 {
            return Err(Error::invalid("retention batch of 0 events"));
        }
        let mut state = self.state();
        let expired: Vec<(OffsetDateTime, EventId)> = state
            .events
            .get(&scope.workspace())
            .map(|events| {
                events
                    .range(..(cutoff, EventId(uuid::Uuid::nil())))
                    .take(limit as usize)
                    .map(|(key, _)| *key)
                    .collect()
            })
            .unwrap_or_default();
        if expired.is_empty() {
            return Ok((0, None));
        }
        // The record first: if it cannot be written, nothing is deleted.
        let draft = crate::policy::retention_draft(scope, cutoff, expired.len() as u64);
        let record = state.append_audit(scope, draft, at)?;
        let State {
            events, event_ids, ..
        } = &mut *state;
        if let Some(events) = events.get_mut(&scope.workspace()) {
            for key in &expired {
                events.remove(key);
            }
        }
        if let Some(ids) = event_ids.get_mut(&scope.workspace()) {
            for (_, id) in &expired {
                ids.remove(id);
            }
        }
        Ok((expired.len() as u64, Some(record)))
    }
}

#[async_trait]
impl TotpStore for MemoryStore {
    async fn put_totp(&self, factor: &TotpFactor) -> Result<()> {
        self.state().totp.insert(factor.subject, factor.clone());
        Ok(())
    }

    async fn totp(&self, subject: Subject) -> Result<Option<TotpFactor>> {
        Ok(self.state().totp.get(&subject).cloned())
    }

    async fn claim_totp_step(&self, subject: Subject, step: u64) -> Result<bool> {
        let mut state = self.state();
        let factor = state.totp.get_mut(&subject).ok_or(Error::NotFound)?;
        if factor.last_step.is_some_and(|last| last >= step) {
            return Ok(false);
        }
        factor.last_step = Some(step);
        factor.failures = 0;
        factor.locked_until = None;
        Ok(true)
    }

    async fn record_totp_failure(
        &self,
        subject: Subject,
        now: OffsetDateTime,
        lock_after: u32,
        lock_for: time::Duration,
    ) -> Result<u32> {
        let mut state = self.state();
        let factor = state.totp.get_mut(&subject).ok_or(Error::NotFound)?;
        factor.failures = factor.failures.saturating_add(1);
        if factor.failures >= lock_after {
            factor.locked_until = Some(now + lock_for);
        }
        Ok(factor.failures)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert_link(&self, link: &MagicLink) -> Result<()> {
        let mut state = self.state();
        if state.links.contains_key(&link.selector) {
            return Err(Error::Conflict("link selector exists"));
        }
        state.links.insert(link.selector.clone(), link.clone());
        Ok(())
    }

    async fn link(&self, selector: &str) -> Result<Option<MagicLink>> {
        Ok(self.state().links.get(selector).cloned())
    }

    async fn take_link(&self, selector: &str, now: OffsetDateTime) -> Result<Option<MagicLink>> {
        let mut state = self.state();
        match state.links.get(selector) {
            Some(link) if now < link.expires_at => Ok(state.links.remove(selector)),
            _ => Ok(None),
        }
    }

    async fn links_sent(
        &self,
        email: &Address,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)> {
        let state = self.state();
        let sent = state
            .links
            .values()
            .filter(|l| &l.email == email && l.created_at >= since);
        Ok(sent.fold(
            (0, None),
            |(n, latest): (u32, Option<OffsetDateTime>), l| {
                (
                    n + 1,
                    Some(latest.map_or(l.created_at, |t| t.max(l.created_at))),
                )
            },
        ))
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        let mut state = self.state();
        if state.sessions.contains_key(&session.selector) {
            return Err(Error::Conflict("session selector exists"));
        }
        state
            .sessions
            .insert(session.selector.clone(), session.clone());
        Ok(())
    }

    async fn session(&self, selector: &str) -> Result<Option<SessionRecord>> {
        Ok(self.state().sessions.get(selector).cloned())
    }

    async fn touch_session(&self, selector: &str, now: OffsetDateTime) -> Result<()> {
        if let Some(session) = self.state().sessions.get_mut(selector) {
            session.last_seen_at = session.last_seen_at.max(now);
        }
        Ok(())
    }

    async fn delete_session(&self, selector: &str) -> Result<bool> {
        let mut state = self.state();
        state.challenge_failures.remove(selector);
        Ok(state.sessions.remove(selector).is_some())
    }

    async fn delete_sessions(&self, subject: Subject) -> Result<u64> {
        let mut state = self.state();
        let gone: Vec<String> = state
            .sessions
            .values()
            .filter(|s| s.subject == subject)
            .map(|s| s.selector.clone())
            .collect();
        for selector in &gone {
            state.sessions.remove(selector);
            state.challenge_failures.remove(selector);
        }
        Ok(gone.len() as u64)
    }

    async fn replace_session(&self, old: &str, new: &SessionRecord) -> Result<()> {
        // One lock: the old session, its SSO binding and the new one change together.
        let mut state = self.state();
        if state.sessions.contains_key(&new.selector) {
            return Err(Error::Conflict("session selector exists"));
        }
        if state.sessions.remove(old).is_none() {
            return Err(Error::NotFound);
        }
        state.challenge_failures.remove(old);
        let bound = state.sso.sessions.remove(old);
        state.sessions.insert(new.selector.clone(), new.clone());
        if let Some(workspace) = bound {
            state.sso.sessions.insert(new.selector.clone(), workspace);
        }
        Ok(())
    }

    async fn record_challenge_failure(&self, selector: &str) -> Result<u32> {
        let mut state = self.state();
        if !state.sessions.contains_key(selector) {
            return Err(Error::NotFound);
        }
        let failures = state
            .challenge_failures
            .entry(selector.to_owned())
            .or_default();
        *failures = failures.saturating_add(1);
        Ok(*failures)
    }
}

#[async_trait]
impl RecoveryStore for MemoryStore {
    async fn put_recovery_codes(&self, subject: Subject, codes: &[RecoveryHash]) -> Result<()> {
        self.state()
            .recovery
            .insert(subject, codes.iter().cloned().map(Some).collect());
        Ok(())
    }

    async fn recovery_codes(&self, subject: Subject) -> Result<Vec<(u32, RecoveryHash)>> {
        let state = self.state();
        Ok(state
            .recovery
            .get(&subject)
            .into_iter()
            .flatten()
            .zip(0u32..)
            .filter_map(|(code, slot)| code.clone().map(|code| (slot, code)))
            .collect())
    }

    async fn use_recovery_code(&self, subject: Subject, slot: u32) -> Result<bool> {
        let mut state = self.state();
        let code = state
            .recovery
            .get_mut(&subject)
            .and_then(|codes| codes.get_mut(slot as usize));
        Ok(code.is_some_and(|code| code.take().is_some()))
    }
}

#[async_trait]
impl StaffStore for MemoryStore {
    async fn create_staff(&self, staff: &StaffMember) -> Result<()> {
        let mut state = self.state();
        if state.staff.contains_key(&staff.id)
            || state.staff.values().any(|s| s.email == staff.email)
        {
            return Err(Error::Conflict("staff member exists"));
        }
        state.staff.insert(staff.id, staff.clone());
        Ok(())
    }

    async fn staff(&self, id: StaffId) -> Result<Option<StaffMember>> {
        Ok(self.state().staff.get(&id).cloned())
    }

    async fn list_staff(&self) -> Result<Vec<StaffMember>> {
        let mut staff: Vec<StaffMember> = self.state().staff.values().cloned().collect();
        staff.sort_by_key(|s| (s.created_at, s.id));
        Ok(staff)
    }

    async fn staff_by_email(&self, email: &Address) -> Result<Option<StaffMember>> {
        Ok(self
            .state()
            .staff
            .values()
            .find(|s| &s.email == email)
            .cloned())
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn insert_api_key(&self, scope: &Scope, key: &ApiKeyRecord) -> Result<()> {
        scope.require(Action::MemberManage)?;
        if key.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let mut state = self.state();
        if state.api_keys.contains_key(&key.id) {
            return Err(Error::Conflict("API key id exists"));
        }
        state.append_audit(scope, drafts::api_key_created(scope, key), key.created_at)?;
        if let Some(owner) = crate::scim::key_owner(scope, key) {
            state.sso.key_owners.insert(key.id, owner);
        }
        state.api_keys.insert(key.id, key.clone());
        Ok(())
    }

    async fn api_keys(&self, scope: &Scope) -> Result<Vec<ApiKeyRecord>> {
        scope.require(Action::MemberManage)?;
        let mut keys: Vec<_> = self
            .state()
            .api_keys
            .values()
            .filter(|k| k.workspace == scope.workspace())
            .cloned()
            .collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        Ok(keys)
    }

    async fn revoke_api_key(
        &self,
        scope: &Scope,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<bool> {
        scope.require(Action::MemberManage)?;
        let mut state = self.state();
        let live = state
            .api_keys
            .get(&id)
            .is_some_and(|key| key.workspace == scope.workspace() && key.revoked_at.is_none());
        if !live {
            return Ok(false);
        }
        state.append_audit(scope, drafts::api_key_revoked(scope, id), at)?;
        if let Some(key) = state.api_keys.get_mut(&id) {
            key.revoked_at = Some(at);
        }
        Ok(true)
    }

    async fn api_key_for_auth(&self, id: ApiKeyId) -> Result<Option<ApiKeyRecord>> {
        Ok(self.state().api_keys.get(&id).cloned())
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        if let Some(key) = self.state().api_keys.get_mut(&id) {
            key.last_used_at = Some(key.last_used_at.map_or(at, |t| t.max(at)));
        }
        Ok(())
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        let mut state = self.state();
        if state.users.values().any(|u| u.email == user.email) || state.users.contains_key(&user.id)
        {
            return Err(Error::Conflict("user exists"));
        }
        state.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.state().users.get(&id).cloned())
    }

    async fn user_by_email(&self, email: &Address) -> Result<Option<User>> {
        Ok(self
            .state()
            .users
            .values()
            .find(|u| &u.email == email)
            .cloned())
    }

    async fn set_membership(
        &self,
        scope: &Scope,
        user: UserId,
        role: Role,
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::MemberManage)?;
        let mut state = self.state();
        if !state.users.contains_key(&user) {
            return Err(Error::NotFound);
        }
        let before = state.memberships.get(&(user, scope.workspace())).copied();
        let draft = drafts::member_role_changed(scope, user, before, role);
        state.append_audit(scope, draft, at)?;
        state.memberships.insert((user, scope.workspace()), role);
        Ok(())
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>> {
        let state = self.state();
        Ok(state
            .memberships
            .range((user, WorkspaceId::from_uuid(uuid::Uuid::nil()))..)
            .take_while(|((u, _), _)| *u == user)
            .map(|((_, workspace), role)| Membership {
                workspace: *workspace,
                role: *role,
                require_totp: state
                    .workspaces
                    .get(workspace)
                    .is_some_and(|w| w.policy.require_totp),
            })
            .collect())
    }
}

#[async_trait]
impl StepUpStore for MemoryStore {
    async fn grant_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        self.state().step_ups.push((staff, action, expires_at));
        Ok(())
    }

    async fn take_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut state = self.state();
        let found = state
            .step_ups
            .iter()
            .position(|(s, a, until)| *s == staff && *a == action && now < *until);
        Ok(found.map(|i| state.step_ups.swap_remove(i)).is_some())
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(
        &self,
        scope: &Scope,
        draft: AuditDraft,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        self.state().append_audit(scope, draft, at)
    }

    async fn audit_records(
        &self,
        scope: &Scope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        scope.require(Action::AuditRead)?;
        let state = self.state();
        let Some(log) = state.audit.get(&scope.workspace()) else {
            return Ok(Vec::new());
        };
        // Records sit at index seq - 1.
        let start = usize::try_from(after_seq).map_or(log.len(), |s| s.min(log.len()));
        Ok(log[start..].iter().take(limit as usize).cloned().collect())
    }

    async fn put_checkpoint(&self, scope: &Scope, checkpoint: &Checkpoint) -> Result<()> {
        scope.require(Action::AuditRead)?;
        if checkpoint.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let mut state = self.state();
        let checkpoints = state.checkpoints.entry(scope.workspace()).or_default();
        if !checkpoints.contains(checkpoint) {
            checkpoints.push(*checkpoint);
            checkpoints.sort_by_key(|c| (c.at, c.seq));
        }
        Ok(())
    }

    async fn checkpoints(&self, scope: &Scope) -> Result<Vec<Checkpoint>> {
        scope.require(Action::AuditRead)?;
        Ok(self
            .state()
            .checkpoints
            .get(&scope.workspace())
            .cloned()
            .unwrap_or_default())
    }

    async fn last_checkpoint(&self, scope: &Scope) -> Result<Option<Checkpoint>> {
        scope.require(Action::AuditRead)?;
        Ok(self
            .state()
            .checkpoints
            .get(&scope.workspace())
            .and_then(|all| all.last().cloned()))
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn open_grant(
        &self,
        scope: &Scope,
        grant: &StoredGrant,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        grant.check_scope(scope)?;
        let mut state = self.state();
        if state.grants.contains_key(&grant.grant.id) {
            return Err(Error::Conflict("grant exists"));
        }
        let record = state.append_audit(scope, grant.started_draft(scope), at)?;
        state.grants.insert(grant.grant.id, grant.clone());
        Ok(record)
    }

    async fn grant(&self, id: GrantId) -> Result<Option<StoredGrant>> {
        Ok(self.state().grants.get(&id).cloned())
    }

    async fn close_grant(&self, scope: &Scope, at: OffsetDateTime) -> Result<AuditRecord> {
        let id = scope.grant().ok_or(Error::NotFound)?;
        let mut state = self.state();
        let grant = state.grants.get(&id).cloned().ok_or(Error::NotFound)?;
        grant.check_scope(scope)?;
        if grant.closed_at.is_some() {
            return Err(Error::Conflict("grant already closed"));
        }
        let record = state.append_audit(scope, grant.ended_draft(scope, at), at)?;
        if let Some(stored) = state.grants.get_mut(&id) {
            stored.closed_at = Some(at);
        }
        Ok(record)
    }
}

impl Store for MemoryStore {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryStore;
    use crate::store::Store;

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> })
            .await;
        crate::conformance::run_auth(|| async {
            Arc::new(MemoryStore::new()) as Arc<dyn crate::auth::AuthStore>
        })
        .await;
        crate::conformance::run_identity(|| async {
            Arc::new(MemoryStore::new()) as Arc<dyn Store>
        })
        .await;
    }
}
