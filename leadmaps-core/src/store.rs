//! Storage traits: one per concern, dyn-safe, async.
//!
//! Log, then act: every method that changes a workspace's data or configuration appends the audit
//! record describing the change (built by [`crate::audit::drafts`] or the change's own type, so
//! every store writes the same record) in the transaction that makes it: both commit or neither.
//! The exceptions are the data itself (events, the daily salts a collector creates, tenant keys
//! made on first use), which is not configuration, and the retention job, which records each
//! batch.
//!
//! Every method that touches customer data takes a [`Scope`] and MUST confine itself to
//! `scope.workspace()`: no row of another workspace may be returned, changed or counted. Methods
//! that need a particular action say so and MUST check it with [`Scope::require`]. The behaviour
//! every implementation must show is the conformance suite (`leadmaps_core::conformance`).

use async_trait::async_trait;
use ipnet::IpNet;
use time::{Date, OffsetDateTime};

use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::ingest::{Event, EventBatch, EventId, RejectReason, Verdict};
use crate::tenancy::{Action, Region, Scope, WorkspaceId};

/// A workspace as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Its id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Where its data lives; fixed at creation.
    pub region: Region,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Its policies.
    pub policy: WorkspacePolicy,
}

pub use crate::policy::{PolicyChange, WorkspacePolicy};

/// Longest workspace name, in bytes.
pub const MAX_WORKSPACE_NAME: usize = 200;
/// Longest secret name, in bytes.
pub const MAX_SECRET_NAME: usize = 200;
/// Largest sealed secret a store must accept, in bytes.
pub const MAX_SECRET_BLOB: usize = 64 * 1024;

/// Checks a workspace name: 1 to [`MAX_WORKSPACE_NAME`] bytes, no control characters.
///
/// # Errors
/// [`Error::Invalid`] with the rule broken.
pub fn validate_workspace_name(name: &str) -> Result<()> {
    validate_name(name, MAX_WORKSPACE_NAME, "workspace name")
}

/// Checks a secret name: 1 to [`MAX_SECRET_NAME`] bytes, no control characters.
///
/// # Errors
/// [`Error::Invalid`] with the rule broken.
pub fn validate_secret_name(name: &str) -> Result<()> {
    validate_name(name, MAX_SECRET_NAME, "secret name")
}

fn validate_name(name: &str, max: usize, what: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if name.len() > max {
        return Err(Error::invalid(format!("{what} is longer than {max} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// Workspaces.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates the workspace `scope.workspace()`, with its `workspace.created` record (the first
    /// of its log) sealed at `created_at`. Requires [`Action::WorkspaceCreate`].
    ///
    /// # Errors
    /// [`Error::Conflict`] if it exists; [`Error::Invalid`] for a bad name.
    async fn create_workspace(
        &self,
        scope: &Scope,
        name: &str,
        region: Region,
        created_at: OffsetDateTime,
    ) -> Result<Workspace>;

    /// Reads the workspace of any scope.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist.
    async fn workspace(&self, scope: &Scope) -> Result<Workspace>;

    /// Renames the workspace, with its `workspace.renamed` record sealed at `at`. Requires
    /// [`Action::WorkspaceUpdate`].
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Invalid`].
    async fn rename_workspace(
        &self,
        scope: &Scope,
        name: &str,
        at: OffsetDateTime,
    ) -> Result<Workspace>;

    /// Applies `change` to the stored policy ([`PolicyChange::apply`]) and appends its audit
    /// record ([`PolicyChange::audit_draft`] of the stored and the new policy, sealed at `at`),
    /// in one transaction: both commit or neither. Requires [`Action::WorkspaceUpdate`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when [`PolicyChange::validate`] refuses the change; [`Error::NotFound`];
    /// any error of the audit append, with nothing changed.
    async fn set_workspace_policy(
        &self,
        scope: &Scope,
        change: &PolicyChange,
        at: OffsetDateTime,
    ) -> Result<(Workspace, crate::audit::AuditRecord)>;

    /// Up to `limit` workspace ids above `after`, ascending, for system jobs that visit every
    /// workspace (retention, audit checkpoints). Ids only: nothing of a workspace is read
    /// without a scope.
    async fn workspace_ids(
        &self,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>>;
}

/// Conveniences over any [`WorkspaceStore`].
#[async_trait]
pub trait WorkspaceStoreExt: WorkspaceStore {
    /// Every workspace id the store holds, ascending, read in pages of 500; the instance tenant
    /// is left out (it is no customer's workspace).
    async fn all_workspace_ids(&self) -> Result<Vec<WorkspaceId>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.workspace_ids(after, 500).await?;
            let Some(last) = page.last().copied() else {
                return Ok(all);
            };
            all.extend(page.into_iter().filter(|w| *w != WorkspaceId::INSTANCE));
            after = Some(last);
        }
    }
}

impl<T: WorkspaceStore + ?Sized> WorkspaceStoreExt for T {}

/// A sealed secret as stored: the blob is a v1 envelope whose context is rebuilt from the
/// workspace, the table `secrets`, the column `value` and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// Unique within the workspace.
    pub name: String,
    /// What it is for.
    pub purpose: Purpose,
    /// The sealed value.
    pub blob: Vec<u8>,
}

/// Named secrets of a workspace (license keys and integrators' own secrets). Plaintext never
/// reaches a store: only sealed blobs.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Inserts or replaces a secret, with its `secret.written` record sealed at `at`. Requires
    /// [`Action::SecretWrite`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or a blob over [`MAX_SECRET_BLOB`].
    async fn put_secret(
        &self,
        scope: &Scope,
        secret: &StoredSecret,
        at: OffsetDateTime,
    ) -> Result<()>;

    /// Reads a secret. Requires [`Action::SecretRead`] or [`Action::SecretWrite`].
    async fn secret(&self, scope: &Scope, name: &str) -> Result<Option<StoredSecret>>;

    /// Deletes a secret; `true` if it existed, and then with its `secret.deleted` record sealed
    /// at `at`. Requires [`Action::SecretWrite`].
    async fn delete_secret(&self, scope: &Scope, name: &str, at: OffsetDateTime) -> Result<bool>;

    /// Names of the workspace's secrets, sorted. Requires [`Action::SecretRead`] or
    /// [`Action::SecretWrite`].
    async fn secret_names(&self, scope: &Scope) -> Result<Vec<String>>;
}

/// Checks that a scope may read secrets.
///
/// # Errors
/// [`Error::Denied`] otherwise.
pub fn require_secret_read(scope: &Scope) -> Result<()> {
    scope
        .require(Action::SecretRead)
        .or_else(|_| scope.require(Action::SecretWrite))
        .map_err(Error::from)
}

/// A tenant key as stored: sealed under the KEK `kek_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedTenantKey {
    /// The owning workspace.
    pub workspace: WorkspaceId,
    /// Version, from 1; the highest is current.
    pub version: u32,
    /// The KEK that wraps it (also the blob's key_ref).
    pub kek_id: u32,
    /// The sealed key.
    pub blob: Vec<u8>,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// Tenant keys and the per-KEK key checks.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The workspace's tenant keys, ascending by version. Any scope of the workspace may read
    /// them: sealing and opening are steps of whatever action the scope admits.
    async fn tenant_keys(&self, scope: &Scope) -> Result<Vec<WrappedTenantKey>>;

    /// Adds a tenant key, with its `tenant_key.created` record (sealed at `key.created_at`) in
    /// the same transaction. Any scope of the workspace may add one; `key.workspace` MUST equal
    /// `scope.workspace()`.
    ///
    /// # Errors
    /// [`Error::Conflict`] if that version exists (another instance won the race);
    /// [`Error::Denied`] if the key names another workspace.
    async fn insert_tenant_key(&self, scope: &Scope, key: &WrappedTenantKey) -> Result<()>;

    /// Replaces the wrapping of one tenant key, only if it is still wrapped under `from_kek`.
    /// Returns whether it replaced; a replacement commits with its `tenant_key.rewrapped`
    /// record sealed at `at`. Requires [`Action::KeyManage`].
    async fn rewrap_tenant_key(
        &self,
        scope: &Scope,
        version: u32,
        from_kek: u32,
        to_kek: u32,
        blob: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool>;

    /// Deletes every tenant key of the workspace (crypto-shredding), with the
    /// `tenant_keys.destroyed` record sealed at `at`; returns how many. Requires
    /// [`Action::KeyManage`].
    async fn delete_tenant_keys(&self, scope: &Scope, at: OffsetDateTime) -> Result<u64>;

    /// Up to `limit` workspaces, ascending by id and after `after`, holding a tenant key wrapped
    /// under another KEK than `primary`. Ids only: key rotation then opens a scope per workspace.
    async fn workspaces_needing_rewrap(
        &self,
        primary: u32,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>>;

    /// How many tenant keys are wrapped under another KEK than `primary`.
    async fn count_needing_rewrap(&self, primary: u32) -> Result<u64>;

    /// Distinct KEK ids that wrap at least one tenant key, ascending.
    async fn kek_ids_in_use(&self) -> Result<Vec<u32>>;

    /// The key-check canary stored for a KEK id.
    async fn key_check(&self, kek_id: u32) -> Result<Option<Vec<u8>>>;

    /// Stores a key check unless one exists for that id; returns whether it stored.
    async fn put_key_check(&self, kek_id: u32, blob: &[u8]) -> Result<bool>;
}

/// What a store can do beyond the required behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The database itself enforces tenancy (Postgres row-level security).
    pub native_row_level_security: bool,
    /// Batches are written with a bulk path (Postgres binary COPY).
    pub bulk_copy: bool,
}

/// A site: a domain whose events belong to one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Owning workspace.
    pub workspace: WorkspaceId,
    /// The domain, lower case, without `www.`; unique across the instance.
    pub domain: String,
    /// When it was added.
    pub created_at: OffsetDateTime,
}

/// What the collector needs to route an event for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRoute {
    /// The site's workspace.
    pub workspace: WorkspaceId,
    /// The workspace's region.
    pub region: Region,
    /// Client address ranges the workspace blocks.
    pub blocked_ips: Vec<IpNet>,
}

/// Longest site domain, in bytes.
pub const MAX_DOMAIN: usize = 253;

/// Normalises and checks a site domain: lower case, no `www.`, no scheme, port or path.
///
/// # Errors
/// [`Error::Invalid`] naming the rule broken.
pub fn normalize_domain(domain: &str) -> Result<String> {
    let domain = domain.trim().to_ascii_lowercase();
    let domain = domain.strip_prefix("www.").unwrap_or(&domain).to_owned();
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return Err(Error::invalid("domain must be 1 to 253 bytes"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !domain.split('.').all(label_ok) {
        return Err(Error::invalid(
            "domain must be a host name such as example.com",
        ));
    }
    Ok(domain)
}

/// Sites and the workspace's collector policy.
#[async_trait]
pub trait SiteStore: Send + Sync {
    /// Adds a site (domain normalised with [`normalize_domain`]), with its `site.added` record
    /// sealed at `created_at`. Requires [`Action::WorkspaceUpdate`].
    ///
    /// # Errors
    /// [`Error::Conflict`] when any workspace has the domain; [`Error::Invalid`] for a bad one.
    async fn add_site(
        &self,
        scope: &Scope,
        domain: &str,
        created_at: OffsetDateTime,
    ) -> Result<Site>;

    /// The workspace's sites, by domain.
    async fn sites(&self, scope: &Scope) -> Result<Vec<Site>>;

    /// Replaces the workspace's blocked client address ranges, with the `blocked_ips.updated`
    /// record sealed at `at`. Requires [`Action::WorkspaceUpdate`].
    async fn set_blocked_ips(
        &self,
        scope: &Scope,
        ranges: &[IpNet],
        at: OffsetDateTime,
    ) -> Result<()>;

    /// Routing for a domain, for the collector before any scope exists. Returns only the
    /// workspace id, its region and its blocked ranges.
    async fn site_route(&self, domain: &str) -> Result<Option<SiteRoute>>;
}

/// A daily visitor-hash salt as stored: sealed under the workspace's tenant key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSalt {
    /// The UTC day the salt serves.
    pub day: Date,
    /// The sealed salt.
    pub blob: Vec<u8>,
}

/// The record left when a salt is destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaltDestruction {
    /// The day the salt served.
    pub day: Date,
    /// When it was destroyed.
    pub destroyed_at: OffsetDateTime,
}

/// Daily salts.
#[async_trait]
pub trait SaltStore: Send + Sync {
    /// The workspace's salts for `days` (missing days are left out). Any scope of the workspace.
    async fn salts(&self, scope: &Scope, days: &[Date]) -> Result<Vec<StoredSalt>>;

    /// Stores the salt of a day. Any scope of the workspace.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the day has one (another instance made it first).
    async fn insert_salt(&self, scope: &Scope, salt: &StoredSalt) -> Result<()>;

    /// Up to `limit` workspaces, ascending by id and after `after`, holding salts of days before
    /// `before`.
    async fn workspaces_with_salts_before(
        &self,
        before: Date,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>>;

    /// Deletes the workspace's salts of days before `before` and records each destruction and one
    /// `salts.destroyed` audit record (when any was destroyed), in one transaction. Returns the
    /// destroyed days. Requires [`Action::KeyManage`].
    async fn destroy_salts_before(
        &self,
        scope: &Scope,
        before: Date,
        destroyed_at: OffsetDateTime,
    ) -> Result<Vec<Date>>;

    /// The workspace's salt destructions, oldest first. Requires [`Action::AuditRead`].
    async fn salt_destructions(&self, scope: &Scope) -> Result<Vec<SaltDestruction>>;
}

/// Counts of filtered events for one day and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCount {
    /// UTC day.
    pub day: Date,
    /// Why they were dropped.
    pub reason: RejectReason,
    /// How many.
    pub count: u64,
}

/// Events: the collector's sink and the workspace's reads.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// The region this store holds. A batch of another region is refused.
    fn region(&self) -> Region;

    /// Commits a batch durably: on `Ok`, every `Accepted` event survives a crash. Returns one
    /// verdict per event, in order: `Duplicate` when the workspace already has that event id
    /// (from this batch or any earlier one). Drop counts in the batch are added in the same
    /// transaction.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a batch of another region; nothing is written on any error.
    async fn append_events(&self, batch: &EventBatch) -> Result<Vec<Verdict>>;

    /// The workspace's events received in `[from, to)`, oldest first (ties by id), at most
    /// `limit`. Requires [`Action::EventRead`].
    async fn events(
        &self,
        scope: &Scope,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Event>>;

    /// Whether the workspace has an event with this id. Requires [`Action::EventRead`].
    async fn has_event(&self, scope: &Scope, id: EventId) -> Result<bool>;

    /// The workspace's filtered-event counts, by day and reason. Requires [`Action::EventRead`].
    async fn drop_counts(&self, scope: &Scope) -> Result<Vec<DropCount>>;

    /// Deletes up to `limit` of the workspace's events received before `cutoff` (oldest first),
    /// with their id claims — or, where the store can, a whole stored unit of them at once (the
    /// Postgres store drops a month's partition that holds only this workspace's events and ends
    /// before `cutoff`) — and in the same transaction appends the audit record
    /// [`crate::policy::retention_draft`] counting them, sealed at `at`: the deletion and its
    /// record commit together or not at all. Returns how many were deleted and the record, or
    /// `(0, None)` when nothing was older (no record for nothing). Events received at or after
    /// `cutoff` are never touched. Requires [`Action::RetentionEnforce`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a `limit` of 0; any error of the audit append, with nothing
    /// deleted.
    async fn delete_events_before(
        &self,
        scope: &Scope,
        cutoff: OffsetDateTime,
        limit: u32,
        at: OffsetDateTime,
    ) -> Result<(u64, Option<crate::audit::AuditRecord>)>;
}

/// Every store trait, for `Arc<dyn Store>`.
pub trait Store:
    WorkspaceStore
    + SecretStore
    + KeyStore
    + SiteStore
    + SaltStore
    + EventSink
    + crate::auth::AuthStore
    + crate::auth::IdentityStore
    + crate::audit::AuditStore
    + crate::auth::impersonation::GrantStore
    + crate::breach::BreachStore
    + crate::sso::SsoStore
    + crate::scim::ScimStore
    + crate::vulnerability::VulnerabilityStore
    + crate::legal::LegalStore
{
    /// What this store supports.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}
