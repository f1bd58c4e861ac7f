//! An in-memory store: the reference implementation of every store trait, for tests and for
//! trying leadmaps out. Data lives as long as the value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::store::{
    KeyStore, MAX_SECRET_BLOB, SecretStore, Store, StoredSecret, Workspace, WorkspaceStore,
    WrappedTenantKey, require_secret_read, validate_secret_name, validate_workspace_name,
};
use crate::tenancy::{Action, Denied, Region, Scope, WorkspaceId};

#[derive(Default)]
struct State {
    workspaces: HashMap<WorkspaceId, Workspace>,
    secrets: HashMap<WorkspaceId, BTreeMap<String, StoredSecret>>,
    tenant_keys: BTreeMap<WorkspaceId, BTreeMap<u32, WrappedTenantKey>>,
    key_checks: HashMap<u32, Vec<u8>>,
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        };
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

    async fn rename_workspace(&self, scope: &Scope, name: &str) -> Result<Workspace> {
        scope.require(Action::WorkspaceUpdate)?;
        validate_workspace_name(name)?;
        let mut state = self.state();
        let workspace = state
            .workspaces
            .get_mut(&scope.workspace())
            .ok_or(Error::NotFound)?;
        workspace.name = name.to_owned();
        Ok(workspace.clone())
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn put_secret(&self, scope: &Scope, secret: &StoredSecret) -> Result<()> {
        scope.require(Action::SecretWrite)?;
        validate_secret_name(&secret.name)?;
        if secret.blob.len() > MAX_SECRET_BLOB {
            return Err(Error::invalid("sealed secret too large"));
        }
        self.state()
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

    async fn delete_secret(&self, scope: &Scope, name: &str) -> Result<bool> {
        scope.require(Action::SecretWrite)?;
        Ok(self
            .state()
            .secrets
            .get_mut(&scope.workspace())
            .is_some_and(|s| s.remove(name).is_some()))
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
        let versions = state.tenant_keys.entry(key.workspace).or_default();
        if versions.contains_key(&key.version) {
            return Err(Error::Conflict("tenant key version exists"));
        }
        versions.insert(key.version, key.clone());
        Ok(())
    }

    async fn rewrap_tenant_key(
        &self,
        scope: &Scope,
        version: u32,
        from_kek: u32,
        to_kek: u32,
        blob: &[u8],
    ) -> Result<bool> {
        scope.require(Action::KeyManage)?;
        let mut state = self.state();
        let Some(key) = state
            .tenant_keys
            .get_mut(&scope.workspace())
            .and_then(|k| k.get_mut(&version))
        else {
            return Ok(false);
        };
        if key.kek_id != from_kek {
            return Ok(false);
        }
        key.kek_id = to_kek;
        key.blob = blob.to_vec();
        Ok(true)
    }

    async fn delete_tenant_keys(&self, scope: &Scope) -> Result<u64> {
        scope.require(Action::KeyManage)?;
        Ok(self
            .state()
            .tenant_keys
            .remove(&scope.workspace())
            .map_or(0, |k| k.len() as u64))
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
    }
}
