//! The behaviour every store must show. Memory, SQLite and Postgres run all of it; run it on your
//! own store too:
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use leadmaps_core::{memory::MemoryStore, store::Store};
//! leadmaps_core::conformance::run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
//! # }
//! ```
//!
//! Each check gets a fresh, empty store from the factory and panics with a message on the first
//! broken rule. Everything goes through `&dyn Store`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::clock::{Clock, ManualClock};
use crate::crypto::{Kek, KeyRing, Purpose, SecretContext, Vault};
use crate::error::{Error, ErrorKind};
use crate::store::{MAX_SECRET_BLOB, Store, StoredSecret, WrappedTenantKey};
use crate::tenancy::{
    Action, Gate, Principal, Region, Role, Scope, SystemTask, UserId, WorkspaceId,
};

type Check = fn(Arc<dyn Store>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name.
        pub const CHECKS: &[(&str, Check)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

checks!(
    workspace_lifecycle,
    workspace_isolation,
    secret_round_trip,
    secret_rejects_bad_input,
    secret_isolation,
    scope_actions_enforced,
    tenant_key_rules,
    tenant_key_isolation,
    rewrap_listing,
    key_check_stored_once,
    vault_seal_open,
    vault_tenant_key_rotation,
    vault_kek_rotation,
    vault_wrong_kek_fails_start,
    vault_crypto_shredding,
);

/// Runs every check, each on a fresh store from `fresh`, printing each name as it passes.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, check) in CHECKS {
        let store = fresh().await;
        check(store).await;
        println!("conformance: {name} ... ok");
    }
}

/// A fixture: a clock, a gate, and admin principals of two workspaces that exist in the store.
struct Fixture {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    gate: Gate,
    a: WorkspaceId,
    b: WorkspaceId,
    admin_a: Principal,
    admin_b: Principal,
}

fn start_time() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::days(20_500)
}

impl Fixture {
    async fn new(store: Arc<dyn Store>) -> Self {
        let clock = Arc::new(ManualClock::new(start_time()));
        let gate = Gate::new(clock.clone());
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        let admin = |ws| Principal::Member {
            user: UserId::new(),
            memberships: vec![(ws, Role::Admin)],
        };
        let fixture = Self {
            store: store.clone(),
            clock,
            gate,
            a,
            b,
            admin_a: admin(a),
            admin_b: admin(b),
        };
        for (ws, name) in [(a, "Workspace A"), (b, "Workspace B")] {
            let scope = fixture.system_create(ws);
            store
                .create_workspace(&scope, name, Region::Eu, fixture.clock.now())
                .await
                .expect("create workspace");
        }
        fixture
    }

    fn system_create(&self, ws: WorkspaceId) -> Scope {
        self.gate
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::WorkspaceCreate,
            )
            .unwrap()
    }

    fn a(&self, action: Action) -> Scope {
        self.gate
            .authorize(&self.admin_a, self.a, action)
            .expect("admin of A")
    }

    fn b(&self, action: Action) -> Scope {
        self.gate
            .authorize(&self.admin_b, self.b, action)
            .expect("admin of B")
    }

    fn keys(&self, ws: WorkspaceId) -> Scope {
        self.gate
            .authorize(
                &Principal::System(SystemTask::KeyRotation),
                ws,
                Action::KeyManage,
            )
            .unwrap()
    }

    async fn vault(&self, ring: KeyRing) -> Vault {
        Vault::start(ring, self.store.clone(), self.clock.clone())
            .await
            .expect("vault starts")
            .with_cache_ttl(Duration::ZERO)
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T, Error>) -> ErrorKind {
    result.expect_err("expected an error").kind()
}

fn secret(name: &str, blob: &[u8]) -> StoredSecret {
    StoredSecret {
        name: name.into(),
        purpose: Purpose::Other,
        blob: blob.to_vec(),
    }
}

/// Create, read, rename; duplicates conflict; names validated; unknown ids are not found.
pub async fn workspace_lifecycle(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let read = store.workspace(&f.a(Action::WorkspaceRead)).await.unwrap();
    assert_eq!(
        (read.id, read.name.as_str(), read.region),
        (f.a, "Workspace A", Region::Eu)
    );
    assert_eq!(read.created_at, f.clock.now());
    assert_eq!(
        kind(
            store
                .create_workspace(&f.system_create(f.a), "again", Region::Us, f.clock.now())
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Workspace A",
        "a failed create changed nothing"
    );
    let renamed = store
        .rename_workspace(&f.a(Action::WorkspaceUpdate), "Renamed")
        .await
        .unwrap();
    assert_eq!(renamed.name, "Renamed");
    for bad in ["", "   ", "tab\there", &"x".repeat(201)] {
        assert_eq!(
            kind(
                store
                    .rename_workspace(&f.a(Action::WorkspaceUpdate), bad)
                    .await
            ),
            ErrorKind::Invalid
        );
    }
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Renamed"
    );
    let us = WorkspaceId::new();
    let created = store
        .create_workspace(&f.system_create(us), "US", Region::Us, f.clock.now())
        .await
        .unwrap();
    assert_eq!(created.region, Region::Us);
    let ghost = WorkspaceId::new();
    let ghost_admin = Principal::Member {
        user: UserId::new(),
        memberships: vec![(ghost, Role::Admin)],
    };
    let ghost_scope = f
        .gate
        .authorize(&ghost_admin, ghost, Action::WorkspaceRead)
        .unwrap();
    assert_eq!(
        kind(store.workspace(&ghost_scope).await),
        ErrorKind::NotFound
    );
    let ghost_update = f
        .gate
        .authorize(&ghost_admin, ghost, Action::WorkspaceUpdate)
        .unwrap();
    assert_eq!(
        kind(store.rename_workspace(&ghost_update, "x").await),
        ErrorKind::NotFound
    );
}

/// A scope for A reads and changes A only.
pub async fn workspace_isolation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    store
        .rename_workspace(&f.a(Action::WorkspaceUpdate), "A2")
        .await
        .unwrap();
    assert_eq!(
        store
            .workspace(&f.b(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Workspace B"
    );
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .id,
        f.a
    );
}

/// Put, read, replace, list, delete.
pub async fn secret_round_trip(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let (w, r) = (f.a(Action::SecretWrite), f.a(Action::SecretRead));
    assert_eq!(store.secret(&r, "license").await.unwrap(), None);
    store
        .put_secret(&w, &secret("license", b"v1"))
        .await
        .unwrap();
    store
        .put_secret(&w, &secret("another", b"x"))
        .await
        .unwrap();
    assert_eq!(
        store.secret(&r, "license").await.unwrap().unwrap().blob,
        b"v1"
    );
    store
        .put_secret(
            &w,
            &StoredSecret {
                purpose: Purpose::LicenseKey,
                ..secret("license", b"v2")
            },
        )
        .await
        .unwrap();
    let read = store.secret(&r, "license").await.unwrap().unwrap();
    assert_eq!(
        (read.blob.as_slice(), read.purpose),
        (b"v2".as_slice(), Purpose::LicenseKey)
    );
    assert_eq!(
        store.secret_names(&r).await.unwrap(),
        ["another", "license"]
    );
    let big = vec![7u8; MAX_SECRET_BLOB];
    store.put_secret(&w, &secret("big", &big)).await.unwrap();
    assert_eq!(store.secret(&w, "big").await.unwrap().unwrap().blob, big);
    assert!(store.delete_secret(&w, "license").await.unwrap());
    assert!(!store.delete_secret(&w, "license").await.unwrap());
    assert_eq!(store.secret(&r, "license").await.unwrap(), None);
}

/// Oversized blobs and bad names are refused, and leave what was stored untouched.
pub async fn secret_rejects_bad_input(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let w = f.a(Action::SecretWrite);
    store
        .put_secret(&w, &secret("keep", b"original"))
        .await
        .unwrap();
    let too_big = vec![0u8; MAX_SECRET_BLOB + 1];
    assert_eq!(
        kind(store.put_secret(&w, &secret("keep", &too_big)).await),
        ErrorKind::Invalid
    );
    for bad in ["", " ", "new\nline", &"n".repeat(201)] {
        assert_eq!(
            kind(store.put_secret(&w, &secret(bad, b"x")).await),
            ErrorKind::Invalid
        );
    }
    assert_eq!(
        store.secret(&w, "keep").await.unwrap().unwrap().blob,
        b"original"
    );
    assert_eq!(store.secret_names(&w).await.unwrap(), ["keep"]);
}

/// Same names in two workspaces never meet.
pub async fn secret_isolation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    store
        .put_secret(&f.a(Action::SecretWrite), &secret("shared-name", b"A"))
        .await
        .unwrap();
    store
        .put_secret(&f.b(Action::SecretWrite), &secret("shared-name", b"B"))
        .await
        .unwrap();
    store
        .put_secret(&f.b(Action::SecretWrite), &secret("only-b", b"B"))
        .await
        .unwrap();
    assert_eq!(
        store
            .secret(&f.a(Action::SecretRead), "shared-name")
            .await
            .unwrap()
            .unwrap()
            .blob,
        b"A"
    );
    assert_eq!(
        store
            .secret(&f.a(Action::SecretRead), "only-b")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.secret_names(&f.a(Action::SecretRead)).await.unwrap(),
        ["shared-name"]
    );
    assert!(
        !store
            .delete_secret(&f.a(Action::SecretWrite), "only-b")
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_secret(&f.a(Action::SecretWrite), "shared-name")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .secret(&f.b(Action::SecretRead), "shared-name")
            .await
            .unwrap()
            .unwrap()
            .blob,
        b"B"
    );
    assert_eq!(
        store
            .secret(&f.b(Action::SecretRead), "only-b")
            .await
            .unwrap()
            .unwrap()
            .blob,
        b"B"
    );
}

/// A scope for one action does not stand in for another.
pub async fn scope_actions_enforced(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let read = f.a(Action::SecretRead);
    assert_eq!(
        kind(store.put_secret(&read, &secret("s", b"x")).await),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(store.delete_secret(&read, "s").await),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(store.secret(&f.a(Action::EventRead), "s").await),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .rename_workspace(&f.a(Action::WorkspaceRead), "x")
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(store.delete_tenant_keys(&f.a(Action::SecretWrite)).await),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .rewrap_tenant_key(&f.a(Action::SecretWrite), 1, 1, 2, b"x")
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .create_workspace(
                    &f.a(Action::WorkspaceUpdate),
                    "x",
                    Region::Eu,
                    f.clock.now()
                )
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        store
            .workspace(&f.a(Action::WorkspaceRead))
            .await
            .unwrap()
            .name,
        "Workspace A"
    );
}

fn wrapped(ws: WorkspaceId, version: u32, kek_id: u32, blob: &[u8]) -> WrappedTenantKey {
    WrappedTenantKey {
        workspace: ws,
        version,
        kek_id,
        blob: blob.to_vec(),
        created_at: start_time(),
    }
}

/// Versions are unique, listed ascending, rewrapped only from the expected KEK.
pub async fn tenant_key_rules(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let s = f.a(Action::SecretWrite);
    store
        .insert_tenant_key(&s, &wrapped(f.a, 2, 1, b"two"))
        .await
        .unwrap();
    store
        .insert_tenant_key(&s, &wrapped(f.a, 1, 1, b"one"))
        .await
        .unwrap();
    assert_eq!(
        kind(
            store
                .insert_tenant_key(&s, &wrapped(f.a, 1, 9, b"dup"))
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(store.insert_tenant_key(&s, &wrapped(f.b, 1, 1, b"x")).await),
        ErrorKind::Denied
    );
    let keys = store.tenant_keys(&s).await.unwrap();
    assert_eq!(
        keys,
        [wrapped(f.a, 1, 1, b"one"), wrapped(f.a, 2, 1, b"two")]
    );
    let k = f.keys(f.a);
    assert!(
        !store
            .rewrap_tenant_key(&k, 1, 7, 2, b"wrong-from")
            .await
            .unwrap()
    );
    assert!(
        !store
            .rewrap_tenant_key(&k, 3, 1, 2, b"no-such-version")
            .await
            .unwrap()
    );
    assert!(
        store
            .rewrap_tenant_key(&k, 1, 1, 2, b"one-under-2")
            .await
            .unwrap()
    );
    assert!(
        !store
            .rewrap_tenant_key(&k, 1, 1, 2, b"again")
            .await
            .unwrap()
    );
    assert_eq!(
        store.tenant_keys(&s).await.unwrap()[0],
        wrapped(f.a, 1, 2, b"one-under-2")
    );
    assert_eq!(store.kek_ids_in_use().await.unwrap(), [1, 2]);
}

/// Tenant keys of B are invisible to, and untouched by, scopes of A.
pub async fn tenant_key_isolation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    store
        .insert_tenant_key(&f.a(Action::SecretWrite), &wrapped(f.a, 1, 1, b"a"))
        .await
        .unwrap();
    store
        .insert_tenant_key(&f.b(Action::SecretWrite), &wrapped(f.b, 1, 1, b"b"))
        .await
        .unwrap();
    assert_eq!(
        store.tenant_keys(&f.a(Action::SecretRead)).await.unwrap(),
        [wrapped(f.a, 1, 1, b"a")]
    );
    assert!(
        !store
            .rewrap_tenant_key(&f.keys(f.a), 1, 1, 2, b"b?")
            .await
            .unwrap()
            || {
                store.tenant_keys(&f.b(Action::SecretRead)).await.unwrap()
                    == [wrapped(f.b, 1, 1, b"b")]
            }
    );
    assert_eq!(store.delete_tenant_keys(&f.keys(f.a)).await.unwrap(), 1);
    assert_eq!(
        store.tenant_keys(&f.a(Action::SecretRead)).await.unwrap(),
        []
    );
    assert_eq!(
        store.tenant_keys(&f.b(Action::SecretRead)).await.unwrap(),
        [wrapped(f.b, 1, 1, b"b")]
    );
}

/// Workspaces needing a rewrap are listed in id order, paged, and counted by key.
pub async fn rewrap_listing(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let ws = WorkspaceId::new();
        store
            .create_workspace(&f.system_create(ws), "w", Region::Eu, f.clock.now())
            .await
            .unwrap();
        let s = f.keys(ws);
        store
            .insert_tenant_key(&s, &wrapped(ws, 1, 1, b"old"))
            .await
            .unwrap();
        store
            .insert_tenant_key(&s, &wrapped(ws, 2, 1, b"old"))
            .await
            .unwrap();
        ids.push(ws);
    }
    let current = f.keys(f.a);
    store
        .insert_tenant_key(&current, &wrapped(f.a, 1, 2, b"new"))
        .await
        .unwrap();
    ids.sort();
    assert_eq!(store.count_needing_rewrap(2).await.unwrap(), 10);
    assert_eq!(store.count_needing_rewrap(1).await.unwrap(), 1);
    let first = store.workspaces_needing_rewrap(2, None, 3).await.unwrap();
    assert_eq!(first, ids[..3]);
    let rest = store
        .workspaces_needing_rewrap(2, Some(first[2]), 3)
        .await
        .unwrap();
    assert_eq!(rest, ids[3..]);
    assert_eq!(
        store
            .workspaces_needing_rewrap(2, Some(ids[4]), 3)
            .await
            .unwrap(),
        []
    );
}

/// A key check is stored once and never replaced.
pub async fn key_check_stored_once(store: Arc<dyn Store>) {
    assert_eq!(store.key_check(5).await.unwrap(), None);
    assert!(store.put_key_check(5, b"first").await.unwrap());
    assert!(!store.put_key_check(5, b"second").await.unwrap());
    assert_eq!(store.key_check(5).await.unwrap().unwrap(), b"first");
    assert_eq!(store.key_check(6).await.unwrap(), None);
}

fn kek(id: u32, seed: u8) -> Kek {
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(73).wrapping_add(seed))
        .collect();
    Kek::new(id, &key).unwrap()
}

/// Secrets sealed through the vault open where they were sealed and nowhere else.
pub async fn vault_seal_open(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let w = f.a(Action::SecretWrite);
    let ctx = SecretContext::license_key(f.a, "lic-1");
    let blob = vault.seal(&w, &ctx, b"LICENSE-123").await.unwrap();
    store
        .put_secret(
            &w,
            &StoredSecret {
                name: "lic-1".into(),
                purpose: Purpose::LicenseKey,
                blob,
            },
        )
        .await
        .unwrap();
    let stored = store
        .secret(&f.a(Action::SecretRead), "lic-1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.blob.windows(11).any(|w| w == b"LICENSE-123"),
        "plaintext must not reach the store"
    );
    let plain = vault
        .open(&f.a(Action::SecretRead), &ctx, &stored.blob)
        .await
        .unwrap();
    assert_eq!(plain.expose(), b"LICENSE-123");
    let other_row = SecretContext::license_key(f.a, "lic-2");
    assert_eq!(
        kind(vault.open(&w, &other_row, &stored.blob).await),
        ErrorKind::Decrypt
    );
    let in_b = SecretContext::license_key(f.b, "lic-1");
    assert_eq!(
        kind(
            vault
                .open(&f.b(Action::SecretRead), &in_b, &stored.blob)
                .await
        ),
        ErrorKind::Decrypt
    );
    assert_eq!(
        kind(
            vault
                .open(&f.b(Action::SecretRead), &ctx, &stored.blob)
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(store.tenant_keys(&w).await.unwrap().len(), 1);
    assert_eq!(
        store
            .tenant_keys(&f.b(Action::SecretRead))
            .await
            .unwrap()
            .len(),
        0,
        "a refused open creates nothing in B"
    );
}

/// A new tenant key version seals new secrets; old ones still open and report needing rotation.
pub async fn vault_tenant_key_rotation(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let w = f.a(Action::SecretWrite);
    let ctx = SecretContext::api_key(f.a, "key-1");
    let old = vault.seal(&w, &ctx, b"old secret").await.unwrap();
    assert!(!vault.needs_rotation(&w, &old).await.unwrap());
    assert_eq!(kind(vault.rotate_tenant_key(&w).await), ErrorKind::Denied);
    assert_eq!(
        vault
            .rotate_tenant_key(&f.a(Action::KeyManage))
            .await
            .unwrap(),
        2
    );
    assert!(vault.needs_rotation(&w, &old).await.unwrap());
    let new = vault.reseal(&w, &ctx, &old).await.unwrap();
    assert_eq!(crate::crypto::key_ref(&new).unwrap(), 2);
    assert_eq!(
        vault.open(&w, &ctx, &old).await.unwrap().expose(),
        b"old secret"
    );
    assert_eq!(
        vault.open(&w, &ctx, &new).await.unwrap().expose(),
        b"old secret"
    );
}

/// KEK rotation: seal under KEK 1, rotate to KEK 2, rewrap, drop KEK 1; everything still opens.
pub async fn vault_kek_rotation(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let store = store.as_ref();
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let mut sealed = Vec::new();
    for (ws, scope) in [
        (f.a, f.a(Action::SecretWrite)),
        (f.b, f.b(Action::SecretWrite)),
    ] {
        vault.rotate_tenant_key(&f.keys(ws)).await.unwrap();
        vault.rotate_tenant_key(&f.keys(ws)).await.unwrap();
        let ctx = SecretContext::api_key(ws, "k");
        sealed.push((
            ws,
            scope.clone(),
            vault
                .seal(&scope, &ctx, ws.to_string().as_bytes())
                .await
                .unwrap(),
        ));
    }
    drop(vault);
    let both = f.vault(KeyRing::new([kek(1, 1), kek(2, 2)]).unwrap()).await;
    let mut seen = Vec::new();
    let report = both
        .rewrap_all(&f.gate, &mut |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!((report.done, report.total), (4, 4));
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.last().unwrap().done, 4);
    assert_eq!(store.kek_ids_in_use().await.unwrap(), [2]);
    assert_eq!(
        both.rewrap_all(&f.gate, &mut |_| {}).await.unwrap().total,
        0,
        "re-running finds nothing"
    );
    drop(both);
    let only_two = f.vault(KeyRing::new([kek(2, 2)]).unwrap()).await;
    for (ws, scope, blob) in sealed {
        let ctx = SecretContext::api_key(ws, "k");
        assert_eq!(
            only_two.open(&scope, &ctx, &blob).await.unwrap().expose(),
            ws.to_string().as_bytes()
        );
    }
}

/// A KEK that does not match the stored key check, or a missing KEK, stops the vault at start.
pub async fn vault_wrong_kek_fails_start(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    vault
        .seal(
            &f.a(Action::SecretWrite),
            &SecretContext::api_key(f.a, "k"),
            b"s",
        )
        .await
        .unwrap();
    drop(vault);
    let keys: Arc<dyn crate::store::KeyStore> = f.store.clone();
    let wrong = Vault::start(
        KeyRing::new([kek(1, 99)]).unwrap(),
        keys.clone(),
        f.clock.clone(),
    )
    .await;
    assert_eq!(kind(wrong), ErrorKind::KeyConfig);
    let missing = Vault::start(
        KeyRing::new([kek(2, 2)]).unwrap(),
        keys.clone(),
        f.clock.clone(),
    )
    .await;
    assert_eq!(kind(missing), ErrorKind::KeyConfig);
    assert!(
        Vault::start(KeyRing::new([kek(1, 1)]).unwrap(), keys, f.clock.clone())
            .await
            .is_ok()
    );
}

/// Deleting a workspace's tenant keys makes its secrets unreadable, and only its secrets.
pub async fn vault_crypto_shredding(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let vault = f.vault(KeyRing::new([kek(1, 1)]).unwrap()).await;
    let (ca, cb) = (
        SecretContext::api_key(f.a, "k"),
        SecretContext::api_key(f.b, "k"),
    );
    let blob_a = vault
        .seal(&f.a(Action::SecretWrite), &ca, b"a")
        .await
        .unwrap();
    let blob_b = vault
        .seal(&f.b(Action::SecretWrite), &cb, b"b")
        .await
        .unwrap();
    assert_eq!(
        kind(vault.shred(&f.a(Action::SecretWrite)).await),
        ErrorKind::Denied
    );
    assert_eq!(vault.shred(&f.a(Action::KeyManage)).await.unwrap(), 1);
    assert_eq!(
        kind(vault.open(&f.a(Action::SecretRead), &ca, &blob_a).await),
        ErrorKind::Decrypt
    );
    assert_eq!(
        vault
            .open(&f.b(Action::SecretRead), &cb, &blob_b)
            .await
            .unwrap()
            .expose(),
        b"b"
    );
    // A new key for A after shredding must not open the old blob either.
    vault
        .seal(&f.a(Action::SecretWrite), &ca, b"new")
        .await
        .unwrap();
    assert_eq!(
        kind(vault.open(&f.a(Action::SecretRead), &ca, &blob_a).await),
        ErrorKind::Decrypt
    );
}
