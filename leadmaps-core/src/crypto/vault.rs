//! The key hierarchy at work: KEK (in process) -> tenant keys (stored, sealed under a KEK) ->
//! per-record keys (derived by the C2SP construction for each blob).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};

use super::chunked::ChunkedKey;
use super::envelope::{self, Purpose, SecretContext};
use super::keyring::KeyRing;
use super::secret::SecretBytes;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::{KeyStore, SecretStore, StoredSecret, WrappedTenantKey};
use crate::tenancy::{Action, Denied, Gate, Principal, Scope, SystemTask, WorkspaceId};

/// The known plaintext of every key-check canary.
const CANARY: &[u8] = b"leadmaps key check v1";
/// How long unwrapped tenant keys stay cached unless configured otherwise.
pub const DEFAULT_CACHE_TTL: Duration = Duration::seconds(60);
const REWRAP_PAGE: u32 = 100;

/// Progress of a KEK rotation, reported after every rewrapped tenant key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapProgress {
    /// Tenant keys rewrapped so far.
    pub done: u64,
    /// Tenant keys that needed rewrapping when the run started.
    pub total: u64,
}

/// Unwrapped tenant keys of one workspace, by version.
struct TenantKeys {
    versions: BTreeMap<u32, ChunkedKey>,
    loaded_at: OffsetDateTime,
}

impl TenantKeys {
    fn current(&self) -> Option<(u32, &ChunkedKey)> {
        self.versions.iter().next_back().map(|(v, k)| (*v, k))
    }
}

/// Seals and opens workspace secrets. Built only by [`Vault::start`], which runs the key self-test,
/// so a process with a wrong KEK never gets one.
pub struct Vault {
    ring: KeyRing,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<WorkspaceId, Arc<TenantKeys>>>,
    cache_ttl: Duration,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

fn tenant_key_context(workspace: WorkspaceId, version: &str) -> SecretContext<'_> {
    SecretContext::new(workspace, "tenant_keys", "key", version, Purpose::TenantKey)
}

/// Where a named secret of [`SecretStore`] lives.
fn secret_context(workspace: WorkspaceId, name: &str, purpose: Purpose) -> SecretContext<'_> {
    SecretContext::new(workspace, "secrets", "value", name, purpose)
}

fn key_check_context(kek_id: &str) -> SecretContext<'_> {
    SecretContext::new(
        WorkspaceId::from_uuid(uuid::Uuid::nil()),
        "key_checks",
        "blob",
        kek_id,
        Purpose::KeyCheck,
    )
}

fn fresh_key() -> zeroize::Zeroizing<[u8; 32]> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    super::random(key.as_mut());
    key
}

impl Vault {
    /// Runs the startup self-test and returns a vault ready to serve.
    ///
    /// For every KEK in the ring, the stored key check must open (one is stored on first use);
    /// every KEK that wraps a stored tenant key must be in the ring.
    ///
    /// # Errors
    /// [`Error::KeyConfig`] naming the KEK id at fault; store errors as they come.
    pub async fn start(
        ring: KeyRing,
        keys: Arc<dyn KeyStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        for id in ring.ids() {
            let kek = ring.get(id).expect("id from ring");
            let row = id.to_string();
            let context = key_check_context(&row);
            let stored = match keys.key_check(id).await? {
                Some(blob) => blob,
                None => {
                    let blob = envelope::seal(kek.key(), id, &context, CANARY);
                    if keys.put_key_check(id, &blob).await? {
                        continue;
                    }
                    // Another instance stored one first: check theirs.
                    keys.key_check(id)
                        .await?
                        .ok_or(Error::Conflict("key check vanished"))?
                }
            };
            match envelope::open_expecting(kek.key(), id, &context, &stored) {
                Ok(plain) if plain.expose() == CANARY => {}
                _ => {
                    return Err(Error::KeyConfig(format!(
                        "KEK {id} does not match the key check stored in this database: wrong key"
                    )));
                }
            }
        }
        for id in keys.kek_ids_in_use().await? {
            if ring.get(id).is_none() {
                return Err(Error::KeyConfig(format!(
                    "tenant keys are wrapped under KEK {id}, which is not configured"
                )));
            }
        }
        Ok(Self {
            ring,
            keys,
            clock,
            cache: Mutex::new(HashMap::new()),
            cache_ttl: DEFAULT_CACHE_TTL,
        })
    }

    /// How long unwrapped tenant keys stay cached in this process. Another instance's rotation or
    /// shredding is seen at the latest after this long; zero disables the cache.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The KEK ring.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    fn check_context(scope: &Scope, context: &SecretContext<'_>) -> Result<()> {
        if context.workspace == scope.workspace() {
            Ok(())
        } else {
            Err(Error::Denied(Denied::WrongScope))
        }
    }

    /// Seals `plaintext` under the workspace's current tenant key, creating the first tenant key
    /// when the workspace has none.
    ///
    /// # Errors
    /// [`Error::Denied`] when the context names another workspace than the scope.
    pub async fn seal(
        &self,
        scope: &Scope,
        context: &SecretContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        Self::check_context(scope, context)?;
        let keys = self.current_keys(scope).await?;
        let (version, key) = keys
            .current()
            .expect("current_keys returns at least one key");
        Ok(envelope::seal(key, version, context, plaintext))
    }

    /// Opens a blob of this workspace.
    ///
    /// # Errors
    /// [`Error::Decrypt`] for every failure of the blob itself, including an unknown or shredded
    /// key version; [`Error::Denied`] when the context names another workspace than the scope.
    pub async fn open(
        &self,
        scope: &Scope,
        context: &SecretContext<'_>,
        blob: &[u8],
    ) -> Result<SecretBytes> {
        Self::check_context(scope, context)?;
        let version = envelope::key_ref(blob).map_err(|_| Error::Decrypt)?;
        let mut keys = self.cached(scope.workspace());
        if keys
            .as_ref()
            .is_none_or(|k| !k.versions.contains_key(&version))
        {
            keys = Some(self.load(scope).await?);
        }
        let keys = keys.expect("loaded");
        let key = keys.versions.get(&version).ok_or(Error::Decrypt)?;
        envelope::open(key, context, blob)
    }

    /// Seals `plaintext` and stores it as the workspace's secret `name`, in the `secrets` table's
    /// `value` column. Requires [`Action::SecretWrite`].
    ///
    /// # Errors
    /// As [`SecretStore::put_secret`] and [`Vault::seal`].
    pub async fn put_secret(
        &self,
        store: &dyn SecretStore,
        scope: &Scope,
        name: &str,
        purpose: Purpose,
        plaintext: &[u8],
    ) -> Result<()> {
        scope.require(Action::SecretWrite)?;
        crate::store::validate_secret_name(name)?;
        let blob = self
            .seal(
                scope,
                &secret_context(scope.workspace(), name, purpose),
                plaintext,
            )
            .await?;
        store
            .put_secret(
                scope,
                &StoredSecret {
                    name: name.to_owned(),
                    purpose,
                    blob,
                },
                self.clock.now(),
            )
            .await
    }

    /// Reads and opens the workspace's secret `name`. Requires [`Action::SecretRead`] or
    /// [`Action::SecretWrite`].
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such secret; [`Error::Decrypt`] when it does not open
    /// (tampered, moved from another row or workspace, or its tenant key was shredded).
    pub async fn secret(
        &self,
        store: &dyn SecretStore,
        scope: &Scope,
        name: &str,
    ) -> Result<SecretBytes> {
        let stored = store.secret(scope, name).await?.ok_or(Error::NotFound)?;
        self.open(
            scope,
            &secret_context(scope.workspace(), &stored.name, stored.purpose),
            &stored.blob,
        )
        .await
    }

    /// Whether a blob should be resealed under the workspace's current tenant key.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed blob.
    pub async fn needs_rotation(&self, scope: &Scope, blob: &[u8]) -> Result<bool> {
        let keys = self.current_keys(scope).await?;
        envelope::needs_rotation(blob, keys.current().expect("non-empty").0)
    }

    /// Opens a blob and seals it again under the current tenant key.
    ///
    /// # Errors
    /// As [`Vault::open`].
    pub async fn reseal(
        &self,
        scope: &Scope,
        context: &SecretContext<'_>,
        blob: &[u8],
    ) -> Result<Vec<u8>> {
        let plain = self.open(scope, context, blob).await?;
        self.seal(scope, context, plain.expose()).await
    }

    /// Adds a new tenant key version; new seals use it, old blobs still open. Requires
    /// [`Action::KeyManage`]. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Denied`] for another scope; [`Error::Conflict`] if another instance rotated at the
    /// same moment (retry).
    pub async fn rotate_tenant_key(&self, scope: &Scope) -> Result<u32> {
        scope.require(Action::KeyManage)?;
        let keys = self.load(scope).await?;
        let version = keys.current().map_or(1, |(v, _)| v + 1);
        self.insert_new_key(scope, version).await?;
        self.evict(scope.workspace());
        Ok(version)
    }

    /// Crypto-shreds the workspace: deletes all its tenant keys, after which none of its sealed
    /// data can be opened by anyone. Requires [`Action::KeyManage`]. Returns how many keys went.
    ///
    /// # Errors
    /// [`Error::Denied`] for another scope.
    pub async fn shred(&self, scope: &Scope) -> Result<u64> {
        scope.require(Action::KeyManage)?;
        let deleted = self
            .keys
            .delete_tenant_keys(scope, self.clock.now())
            .await?;
        self.evict(scope.workspace());
        Ok(deleted)
    }

    /// Rewraps every tenant key not under the primary KEK onto it: KEK rotation. Secrets are not
    /// touched. `progress` is called after each key. Safe to re-run and to run from two instances.
    ///
    /// # Errors
    /// [`Error::KeyConfig`] if a tenant key is wrapped under a KEK this ring lacks, or does not
    /// open under it.
    pub async fn rewrap_all(
        &self,
        gate: &Gate,
        progress: &mut (dyn FnMut(RewrapProgress) + Send),
    ) -> Result<RewrapProgress> {
        let primary = self.ring.primary();
        let total = self.keys.count_needing_rewrap(primary.id()).await?;
        let mut state = RewrapProgress { done: 0, total };
        let principal = Principal::System(SystemTask::KeyRotation);
        let mut after = None;
        loop {
            let page = self
                .keys
                .workspaces_needing_rewrap(primary.id(), after, REWRAP_PAGE)
                .await?;
            let Some(last) = page.last().copied() else {
                break;
            };
            for workspace in page {
                let scope = gate.authorize(&principal, workspace, Action::KeyManage)?;
                for wrapped in self.keys.tenant_keys(&scope).await? {
                    if wrapped.kek_id == primary.id() {
                        continue;
                    }
                    let key = self.unwrap_key(&wrapped)?;
                    let row = wrapped.version.to_string();
                    let blob = envelope::seal(
                        primary.key(),
                        primary.id(),
                        &tenant_key_context(workspace, &row),
                        &key[..],
                    );
                    if self
                        .keys
                        .rewrap_tenant_key(
                            &scope,
                            wrapped.version,
                            wrapped.kek_id,
                            primary.id(),
                            &blob,
                            self.clock.now(),
                        )
                        .await?
                    {
                        state.done += 1;
                        progress(state);
                    }
                }
                self.evict(workspace);
            }
            after = Some(last);
        }
        Ok(state)
    }

    fn unwrap_key(&self, wrapped: &WrappedTenantKey) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let kek = self.ring.get(wrapped.kek_id).ok_or_else(|| {
            Error::KeyConfig(format!(
                "tenant key wrapped under KEK {}, which is not configured",
                wrapped.kek_id
            ))
        })?;
        let row = wrapped.version.to_string();
        let context = tenant_key_context(wrapped.workspace, &row);
        let plain = envelope::open_expecting(kek.key(), wrapped.kek_id, &context, &wrapped.blob)?;
        envelope::key_bytes(&plain)
    }

    fn cached(&self, workspace: WorkspaceId) -> Option<Arc<TenantKeys>> {
        let cache = self.cache.lock().expect("vault cache lock");
        let keys = cache.get(&workspace)?;
        (self.clock.now() - keys.loaded_at < self.cache_ttl).then(|| keys.clone())
    }

    fn evict(&self, workspace: WorkspaceId) {
        self.cache
            .lock()
            .expect("vault cache lock")
            .remove(&workspace);
    }

    async fn load(&self, scope: &Scope) -> Result<Arc<TenantKeys>> {
        let mut versions = BTreeMap::new();
        for wrapped in self.keys.tenant_keys(scope).await? {
            if wrapped.workspace != scope.workspace() {
                return Err(Error::Denied(Denied::WrongScope));
            }
            let key = self.unwrap_key(&wrapped)?;
            versions.insert(
                wrapped.version,
                ChunkedKey::new(&key[..]).map_err(|_| Error::Decrypt)?,
            );
        }
        let keys = Arc::new(TenantKeys {
            versions,
            loaded_at: self.clock.now(),
        });
        if !self.cache_ttl.is_zero() && !keys.versions.is_empty() {
            self.cache
                .lock()
                .expect("vault cache lock")
                .insert(scope.workspace(), keys.clone());
        }
        Ok(keys)
    }

    async fn current_keys(&self, scope: &Scope) -> Result<Arc<TenantKeys>> {
        if let Some(keys) = self.cached(scope.workspace()) {
            return Ok(keys);
        }
        let keys = self.load(scope).await?;
        if !keys.versions.is_empty() {
            return Ok(keys);
        }
        match self.insert_new_key(scope, 1).await {
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let keys = self.load(scope).await?;
        if keys.versions.is_empty() {
            return Err(Error::Conflict(
                "tenant key was removed while being created",
            ));
        }
        Ok(keys)
    }

    async fn insert_new_key(&self, scope: &Scope, version: u32) -> Result<()> {
        let kek = self.ring.primary();
        let key = fresh_key();
        let row = version.to_string();
        let blob = envelope::seal(
            kek.key(),
            kek.id(),
            &tenant_key_context(scope.workspace(), &row),
            &key[..],
        );
        let wrapped = WrappedTenantKey {
            workspace: scope.workspace(),
            version,
            kek_id: kek.id(),
            blob,
            created_at: self.clock.now(),
        };
        self.keys.insert_tenant_key(scope, &wrapped).await
    }
}
