//! Workspace API keys: `lm_<id>_<secret>`, shown once; stored as an HMAC of the whole key (to
//! check it) and the key sealed with envelope encryption (so a dump reveals nothing usable);
//! scoped to one workspace and a set of actions; revocable; last use recorded.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::tokens::{TokenDigest, TokenHasher, api_key};
use crate::clock::Clock;
use crate::crypto::{SecretContext, Vault};
use crate::error::{Error, Result};
use crate::tenancy::{Action, ApiKeyId, Principal, Scope, WorkspaceId};

/// Longest key name, in bytes.
pub const MAX_NAME: usize = 200;

/// An API key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id (in the token).
    pub id: ApiKeyId,
    /// Owning workspace.
    pub workspace: WorkspaceId,
    /// A label for people.
    pub name: String,
    /// What it may do.
    pub actions: Vec<Action>,
    /// HMAC of the whole token.
    pub digest: TokenDigest,
    /// The token, sealed (context: `api_keys.secret`, row = id).
    pub sealed: Vec<u8>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last successful use.
    pub last_used_at: Option<OffsetDateTime>,
    /// Set when revoked; a revoked key never authenticates again.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Storage of API keys (workspace data: scoped, except the pre-authentication lookup).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a key of `scope.workspace()` with its `api_key.created` record
    /// ([`crate::audit::drafts::api_key_created`], sealed at `key.created_at`), in one
    /// transaction. Requires [`Action::MemberManage`].
    async fn insert_api_key(&self, scope: &Scope, key: &ApiKeyRecord) -> Result<()>;
    /// The workspace's keys, oldest first. Requires [`Action::MemberManage`].
    async fn api_keys(&self, scope: &Scope) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes a key of the workspace at `at`; whether it was live, and then with its
    /// `api_key.revoked` record. Requires [`Action::MemberManage`].
    async fn revoke_api_key(&self, scope: &Scope, id: ApiKeyId, at: OffsetDateTime)
    -> Result<bool>;
    /// The key with this id, for authentication before any scope exists.
    async fn api_key_for_auth(&self, id: ApiKeyId) -> Result<Option<ApiKeyRecord>>;
    /// Records a use.
    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<()>;
}

/// Actions an API key may be given: never key management or member management.
pub fn grantable(action: Action) -> bool {
    !matches!(
        action,
        Action::KeyManage
            | Action::MemberManage
            | Action::WorkspaceCreate
            | Action::RetentionEnforce
    )
}

/// Creates, authenticates and revokes API keys.
pub struct ApiKeys {
    store: Arc<dyn ApiKeyStore>,
    vault: Arc<Vault>,
    hasher: TokenHasher,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

/// A key just made: show the token once.
#[derive(Debug)]
pub struct CreatedKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// `lm_<id>_<secret>` (zeroized on drop, redacted in `Debug`).
    pub key: api_key::NewApiKey,
}

impl ApiKeys {
    /// The service.
    pub fn new(
        store: Arc<dyn ApiKeyStore>,
        vault: Arc<Vault>,
        hasher: TokenHasher,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            vault,
            hasher,
            clock,
        }
    }

    /// Makes a key for the scope's workspace. Requires [`Action::MemberManage`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name, no actions or a non-grantable action.
    pub async fn create(
        &self,
        scope: &Scope,
        name: &str,
        actions: &[Action],
    ) -> Result<CreatedKey> {
        scope.require(Action::MemberManage)?;
        if name.trim().is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(Error::invalid("key name must be 1 to 200 printable bytes"));
        }
        if actions.is_empty() || !actions.iter().copied().all(grantable) {
            return Err(Error::invalid(
                "API keys take one or more of the read, ingest and update actions",
            ));
        }
        let key = api_key::generate();
        let row = key.id.to_string();
        let sealed = self
            .vault
            .seal(
                scope,
                &SecretContext::api_key(scope.workspace(), &row),
                key.token.as_bytes(),
            )
            .await?;
        let record = ApiKeyRecord {
            id: key.id,
            workspace: scope.workspace(),
            name: name.to_owned(),
            actions: actions.to_vec(),
            digest: self.hasher.digest(key.token.as_bytes()),
            sealed,
            created_at: self.clock.now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert_api_key(scope, &record).await?;
        Ok(CreatedKey { record, key })
    }

    /// The principal a presented key stands for.
    ///
    /// # Errors
    /// [`Error::Invalid`] (one message) for a malformed, unknown, forged or revoked key.
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let refused = || Error::invalid("invalid API key");
        let id = api_key::parse(token).map_err(|_| refused())?;
        let record = self.store.api_key_for_auth(id).await?.ok_or_else(refused)?;
        if record.revoked_at.is_some() || !self.hasher.verify(token.as_bytes(), &record.digest) {
            return Err(refused());
        }
        self.store.touch_api_key(id, self.clock.now()).await?;
        Ok(Principal::ApiKey {
            key: record.id,
            workspace: record.workspace,
            actions: record.actions,
        })
    }

    /// Revokes a key of the scope's workspace. Requires [`Action::MemberManage`].
    ///
    /// # Errors
    /// Store errors; a key of another workspace is simply not found (`false`).
    pub async fn revoke(&self, scope: &Scope, id: ApiKeyId) -> Result<bool> {
        scope.require(Action::MemberManage)?;
        self.store.revoke_api_key(scope, id, self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::crypto::{Kek, KeyRing};
    use crate::memory::MemoryStore;
    use crate::tenancy::{Denied, Gate, Role, UserId};

    async fn setup() -> (Arc<MemoryStore>, ApiKeys, Gate, WorkspaceId, WorkspaceId) {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        ));
        let ring =
            KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x71).collect::<Vec<_>>()).unwrap()])
                .unwrap();
        let hasher = TokenHasher::new(&ring);
        let vault = Arc::new(
            Vault::start(ring, store.clone(), clock.clone())
                .await
                .unwrap(),
        );
        let keys = ApiKeys::new(store.clone(), vault, hasher, clock.clone());
        (
            store,
            keys,
            Gate::new(clock),
            WorkspaceId::new(),
            WorkspaceId::new(),
        )
    }

    fn admin(gate: &Gate, ws: WorkspaceId, action: Action) -> Scope {
        let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
        gate.authorize(&admin, ws, action).unwrap()
    }

    #[tokio::test]
    async fn a_key_works_in_its_workspace_only_for_its_actions() {
        let (store, keys, gate, a, b) = setup().await;
        let created = keys
            .create(
                &admin(&gate, a, Action::MemberManage),
                "ci",
                &[Action::EventRead],
            )
            .await
            .unwrap();
        let principal = keys.authenticate(&created.key.token).await.unwrap();
        assert!(gate.authorize(&principal, a, Action::EventRead).is_ok());
        assert_eq!(
            gate.authorize(&principal, a, Action::WorkspaceUpdate),
            Err(Denied::ActionNotPermitted)
        );
        assert_eq!(
            gate.authorize(&principal, b, Action::EventRead),
            Err(Denied::NotAMember),
            "never another workspace"
        );
        let stored = store
            .api_key_for_auth(created.record.id)
            .await
            .unwrap()
            .unwrap();
        assert!(stored.last_used_at.is_some());
        let token = created.key.token.as_bytes();
        assert!(
            !stored.sealed.windows(token.len()).any(|w| w == token),
            "only sealed at rest"
        );
    }

    #[tokio::test]
    async fn forged_revoked_and_foreign_keys_fail() {
        let (_, keys, gate, a, b) = setup().await;
        let created = keys
            .create(
                &admin(&gate, a, Action::MemberManage),
                "ci",
                &[Action::EventRead],
            )
            .await
            .unwrap();
        let mut forged = created.key.token.to_string();
        forged.pop();
        forged.push(if created.key.token.ends_with('A') {
            'B'
        } else {
            'A'
        });
        assert!(keys.authenticate(&forged).await.is_err());
        assert!(keys.authenticate("lm_nope").await.is_err());
        assert!(
            !keys
                .revoke(&admin(&gate, b, Action::MemberManage), created.record.id)
                .await
                .unwrap(),
            "B cannot revoke A's key"
        );
        assert!(keys.authenticate(&created.key.token).await.is_ok());
        assert!(
            keys.revoke(&admin(&gate, a, Action::MemberManage), created.record.id)
                .await
                .unwrap()
        );
        let err = keys.authenticate(&created.key.token).await.unwrap_err();
        assert_eq!(err.to_string(), "invalid input: invalid API key");
    }

    #[tokio::test]
    async fn creation_rules() {
        let (_, keys, gate, a, _) = setup().await;
        let manage = admin(&gate, a, Action::MemberManage);
        assert!(
            keys.create(&manage, "", &[Action::EventRead])
                .await
                .is_err()
        );
        assert!(keys.create(&manage, "k", &[]).await.is_err());
        assert!(
            keys.create(&manage, "k", &[Action::KeyManage])
                .await
                .is_err(),
            "no key management by key"
        );
        let read_only = admin(&gate, a, Action::EventRead);
        assert_eq!(
            keys.create(&read_only, "k", &[Action::EventRead])
                .await
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Denied
        );
    }

    #[test]
    fn action_names_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
    }
}
