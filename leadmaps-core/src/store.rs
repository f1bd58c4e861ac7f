//! Storage traits: one per concern, dyn-safe, async.
//!
//! Every method that touches customer data takes a [`Scope`] and MUST confine itself to
//! `scope.workspace()`: no row of another workspace may be returned, changed or counted. Methods
//! that need a particular action say so and MUST check it with [`Scope::require`]. The behaviour
//! every implementation must show is the conformance suite (`leadmaps_core::conformance`).

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::crypto::Purpose;
use crate::error::{Error, Result};
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
}

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
    /// Creates the workspace `scope.workspace()`. Requires [`Action::WorkspaceCreate`].
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

    /// Renames the workspace. Requires [`Action::WorkspaceUpdate`].
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Invalid`].
    async fn rename_workspace(&self, scope: &Scope, name: &str) -> Result<Workspace>;
}

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
    /// Inserts or replaces a secret. Requires [`Action::SecretWrite`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or a blob over [`MAX_SECRET_BLOB`].
    async fn put_secret(&self, scope: &Scope, secret: &StoredSecret) -> Result<()>;

    /// Reads a secret. Requires [`Action::SecretRead`] or [`Action::SecretWrite`].
    async fn secret(&self, scope: &Scope, name: &str) -> Result<Option<StoredSecret>>;

    /// Deletes a secret; `true` if it existed. Requires [`Action::SecretWrite`].
    async fn delete_secret(&self, scope: &Scope, name: &str) -> Result<bool>;

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

    /// Adds a tenant key. Any scope of the workspace may add one; `key.workspace` MUST equal
    /// `scope.workspace()`.
    ///
    /// # Errors
    /// [`Error::Conflict`] if that version exists (another instance won the race);
    /// [`Error::Denied`] if the key names another workspace.
    async fn insert_tenant_key(&self, scope: &Scope, key: &WrappedTenantKey) -> Result<()>;

    /// Replaces the wrapping of one tenant key, only if it is still wrapped under `from_kek`.
    /// Returns whether it replaced. Requires [`Action::KeyManage`].
    async fn rewrap_tenant_key(
        &self,
        scope: &Scope,
        version: u32,
        from_kek: u32,
        to_kek: u32,
        blob: &[u8],
    ) -> Result<bool>;

    /// Deletes every tenant key of the workspace (crypto-shredding); returns how many.
    /// Requires [`Action::KeyManage`].
    async fn delete_tenant_keys(&self, scope: &Scope) -> Result<u64>;

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

/// Every store trait, for `Arc<dyn Store>`.
pub trait Store: WorkspaceStore + SecretStore + KeyStore {
    /// What this store supports.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}
