//! Users, memberships, staff members and API keys against real PostgreSQL: the identity conformance checks, each
//! on a fresh database; API keys end to end through the vault; concurrent touches; what the app
//! role meets in raw SQL; and errors that name no value.

mod common;

use std::sync::Arc;

use leadmaps_core::ErrorKind;
use leadmaps_core::auth::keys::{ApiKeyRecord, ApiKeyStore, ApiKeys};
use leadmaps_core::auth::staff::{StaffMember, StaffStore};
use leadmaps_core::auth::tokens::{TokenDigest, TokenHasher};
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::clock::Clock;
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{
    Action, ApiKeyId, Membership, Principal, Role, Scope, StaffId, SystemTask, UserId, WorkspaceId,
};
use leadmaps_store_postgres::{DEFAULT_APP_ROLE, OWNER_ROLE, PostgresStore};
use time::Duration;
use time::macros::datetime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use common::Tenants;

const NOW: time::OffsetDateTime = datetime!(2026-02-15 12:00 UTC);

fn manage(t: &Tenants, ws: WorkspaceId) -> Scope {
    t.gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            ws,
            Action::MemberManage,
        )
        .unwrap()
}

/// A membership of a workspace without a TOTP policy (here: one without a workspace row).
fn membership(workspace: WorkspaceId, role: Role) -> Membership {
    Membership {
        workspace,
        role,
        require_totp: false,
    }
}

fn key_record(ws: WorkspaceId, name: &str, actions: &[Action]) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::new(),
        workspace: ws,
        name: name.into(),
        actions: actions.to_vec(),
        digest: TokenDigest {
            key_id: u32::MAX,
            mac: std::array::from_fn(|i| i as u8),
        },
        sealed: (0..=255u8).collect(),
        created_at: NOW,
        last_used_at: None,
        revoked_at: None,
    }
}

fn chain(error: &leadmaps_core::Error) -> String {
    let mut text = format!("{error} | {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_identity_conformance_suite() {
    let server = server_or_skip!();
    common::run_on_fresh_databases(
        &server,
        leadmaps_core::conformance::IDENTITY_CHECKS,
        |store| Arc::new(store) as Arc<dyn leadmaps_core::store::Store>,
    )
    .await;
}

/// The key service over this store: a key is created (sealed through the vault), authenticates
/// in its workspace only, records its use, and is revoked for good; the token is never at rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_work_end_to_end_and_the_token_is_never_stored() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = Arc::new(PostgresStore::connect(&db.store_config()).await.unwrap());
            let t = Tenants::new(NOW);
            let clock: Arc<dyn Clock> = t.clock.clone();
            let ring = KeyRing::new([Kek::new(
                3,
                &(0..32u8)
                    .map(|i| i.wrapping_mul(7) ^ 0x5a)
                    .collect::<Vec<_>>(),
            )
            .unwrap()])
            .unwrap();
            let hasher = TokenHasher::new(&ring);
            let vault = Arc::new(
                Vault::start(ring, store.clone(), clock.clone())
                    .await
                    .unwrap(),
            );
            let keys = ApiKeys::new(store.clone(), vault, hasher, clock.clone());
            let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
            let created = keys
                .create(
                    &manage(&t, a),
                    "deploy bot",
                    &[
                        Action::EventRead,
                        Action::EventIngest,
                        Action::WorkspaceUpdate,
                    ],
                )
                .await
                .unwrap();
            assert_eq!(
                store.api_keys(&manage(&t, a)).await.unwrap(),
                std::slice::from_ref(&created.record),
                "read back exactly"
            );
            assert!(store.api_keys(&manage(&t, b)).await.unwrap().is_empty());

            t.clock.advance(Duration::minutes(5));
            let principal = keys.authenticate(&created.key.token).await.unwrap();
            assert!(t.gate.authorize(&principal, a, Action::EventRead).is_ok());
            assert!(t.gate.authorize(&principal, b, Action::EventRead).is_err());
            let stored = store
                .api_key_for_auth(created.record.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.last_used_at, Some(NOW + Duration::minutes(5)));

            // At rest: neither the token nor its secret part, in any column.
            let su = db.superuser().await;
            let dumped: String = su
                .query_one(
                    "SELECT k::text || encode(k.sealed, 'escape') FROM leadmaps.api_keys AS k",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            let token: &str = &created.key.token;
            // `lm_` + 32 hex digits + `_`; the secret is base64url and may itself hold `_`.
            let secret = &token[36..];
            assert_eq!(secret.len(), 43, "a 256-bit secret part");
            assert!(!dumped.contains(token) && !dumped.contains(secret));

            assert!(
                !keys
                    .revoke(&manage(&t, b), created.record.id)
                    .await
                    .unwrap(),
                "B cannot revoke A's key"
            );
            assert!(keys.authenticate(&created.key.token).await.is_ok());
            assert!(
                keys.revoke(&manage(&t, a), created.record.id)
                    .await
                    .unwrap()
            );
            let refused = keys.authenticate(&created.key.token).await.unwrap_err();
            assert_eq!(refused.to_string(), "invalid input: invalid API key");
            assert!(
                !keys
                    .revoke(&manage(&t, a), created.record.id)
                    .await
                    .unwrap(),
                "revoked once"
            );
            store.close();
        })
        .await;
}

/// Every action name, extreme digests, and stored times survive the round trip; keys list oldest
/// first; a duplicate id is a conflict that names nothing.
#[tokio::test]
async fn api_key_records_round_trip() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            let t = Tenants::new(NOW);
            let ws = WorkspaceId::new();
            let mut newer = key_record(ws, "every action", &Action::ALL);
            newer.created_at = NOW + Duration::seconds(1);
            newer.last_used_at = Some(NOW + Duration::microseconds(2_000_001));
            newer.revoked_at = Some(NOW + Duration::days(3));
            newer.digest.key_id = 0;
            let mut older = key_record(ws, "ü-名前", &[Action::EventRead]);
            older.sealed = Vec::new();
            store.insert_api_key(&manage(&t, ws), &newer).await.unwrap();
            store.insert_api_key(&manage(&t, ws), &older).await.unwrap();
            assert_eq!(
                store.api_keys(&manage(&t, ws)).await.unwrap(),
                [older.clone(), newer.clone()]
            );
            assert_eq!(
                store.api_key_for_auth(newer.id).await.unwrap(),
                Some(newer.clone())
            );
            let mut twin = key_record(WorkspaceId::new(), "twin", &[Action::EventRead]);
            twin.id = newer.id;
            let error = store
                .insert_api_key(&manage(&t, twin.workspace), &twin)
                .await
                .unwrap_err();
            assert_eq!(
                error.kind(),
                ErrorKind::Conflict,
                "ids are unique across workspaces"
            );
            assert!(
                !chain(&error).contains(&newer.id.to_string()),
                "{}",
                chain(&error)
            );
            // A revoked key stays revoked at its first time.
            assert!(
                !store
                    .revoke_api_key(&manage(&t, ws), newer.id, NOW + Duration::days(9))
                    .await
                    .unwrap()
            );
            assert_eq!(
                store
                    .api_key_for_auth(newer.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked_at,
                newer.revoked_at
            );
            store.close();
        })
        .await;
}

/// Many touches at once, in any order, leave the latest time; a touch of an unknown key is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_touches_keep_the_latest_use() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = Arc::new(
                PostgresStore::connect(&db.store_config().with_pool_size(12))
                    .await
                    .unwrap(),
            );
            let t = Tenants::new(NOW);
            let ws = WorkspaceId::new();
            let key = key_record(ws, "k", &[Action::EventRead]);
            store.insert_api_key(&manage(&t, ws), &key).await.unwrap();
            let tasks: Vec<_> = (0..40i64)
                .map(|n| {
                    let store = store.clone();
                    // 0, 17, 34, ... scrambled modulo 40: the largest is not the last sent.
                    let at = NOW + Duration::seconds((n * 17) % 40);
                    tokio::spawn(async move { store.touch_api_key(key.id, at).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            assert_eq!(
                store
                    .api_key_for_auth(key.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .last_used_at,
                Some(NOW + Duration::seconds(39))
            );
            store.touch_api_key(ApiKeyId::new(), NOW).await.unwrap();
            store.close();
        })
        .await;
}

/// Memberships: per workspace, a user's list holds only theirs, an unknown user is NotFound, and
/// a duplicate address is a conflict that names neither the address nor the id.
#[tokio::test]
async fn users_and_memberships_keep_to_their_own() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            let t = Tenants::new(NOW);
            let user = |email: &str| User {
                id: UserId::new(),
                email: Address::parse(email).unwrap(),
                created_at: NOW + Duration::microseconds(7),
            };
            let (alice, bob) = (user("Alice@Example.COM"), user("bob@example.com"));
            store.create_user(&alice).await.unwrap();
            store.create_user(&bob).await.unwrap();
            assert_eq!(
                store.user_by_email(&alice.email).await.unwrap(),
                Some(alice.clone()),
                "the domain is lower-cased by Address; the rest matches exactly"
            );
            assert_eq!(
                store
                    .user_by_email(&Address::parse("alice@example.com").unwrap())
                    .await
                    .unwrap(),
                None
            );
            for twin in [
                User {
                    id: UserId::new(),
                    ..alice.clone()
                },
                User {
                    email: Address::parse("carol@example.com").unwrap(),
                    ..alice.clone()
                },
            ] {
                let error = store.create_user(&twin).await.unwrap_err();
                assert_eq!(error.kind(), ErrorKind::Conflict);
                let text = chain(&error);
                for value in ["Alice", "example.com", &alice.id.to_string(), "carol"] {
                    assert!(!text.contains(value), "{value} in {text}");
                }
            }

            let (a, b, c) = (WorkspaceId::new(), WorkspaceId::new(), WorkspaceId::new());
            store
                .set_membership(&manage(&t, a), alice.id, Role::Admin, t.clock.now())
                .await
                .unwrap();
            store
                .set_membership(&manage(&t, b), alice.id, Role::Viewer, t.clock.now())
                .await
                .unwrap();
            store
                .set_membership(&manage(&t, b), bob.id, Role::Editor, t.clock.now())
                .await
                .unwrap();
            store
                .set_membership(&manage(&t, b), alice.id, Role::Editor, t.clock.now())
                .await
                .unwrap();
            // None of these workspaces has a row: their memberships carry no policy.
            let mut want = vec![membership(a, Role::Admin), membership(b, Role::Editor)];
            want.sort_by_key(|m| m.workspace);
            assert_eq!(
                store.memberships(alice.id).await.unwrap(),
                want,
                "by workspace id"
            );
            assert_eq!(
                store.memberships(bob.id).await.unwrap(),
                [membership(b, Role::Editor)]
            );
            let error = store
                .set_membership(&manage(&t, c), UserId::new(), Role::Viewer, t.clock.now())
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::NotFound);
            let read = t.admin(c, Action::WorkspaceRead);
            assert_eq!(
                store
                    .set_membership(&read, bob.id, Role::Admin, t.clock.now())
                    .await
                    .unwrap_err()
                    .kind(),
                ErrorKind::Denied
            );
            assert_eq!(
                store.memberships(bob.id).await.unwrap(),
                [membership(b, Role::Editor)]
            );
            store.close();
        })
        .await;
}

/// What the app role meets in raw SQL: users by privilege only; memberships and keys only for the
/// workspace set, and across workspaces only through the lookup functions, which answer for one
/// user or one key; no deletes, no moving a key's use backwards by hand.
#[tokio::test]
async fn the_app_role_reaches_identity_rows_only_as_the_methods_do() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            let t = Tenants::new(NOW);
            let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
            let alice = User {
                id: UserId::new(),
                email: Address::parse("alice@example.com").unwrap(),
                created_at: NOW,
            };
            let bob = User {
                id: UserId::new(),
                email: Address::parse("bob@example.com").unwrap(),
                created_at: NOW,
            };
            store.create_user(&alice).await.unwrap();
            store.create_user(&bob).await.unwrap();
            store.set_membership(&manage(&t, a), alice.id, Role::Admin, t.clock.now()).await.unwrap();
            store.set_membership(&manage(&t, b), bob.id, Role::Viewer, t.clock.now()).await.unwrap();
            let (ka, kb) = (
                key_record(a, "a", &[Action::EventRead]),
                key_record(b, "b", &[Action::EventRead]),
            );
            store.insert_api_key(&manage(&t, a), &ka).await.unwrap();
            store.insert_api_key(&manage(&t, b), &kb).await.unwrap();
            store
                .create_staff(&StaffMember {
                    id: StaffId::new(),
                    email: Address::parse("ops@example.com").unwrap(),
                    created_at: NOW,
                })
                .await
                .unwrap();
            store.close();

            let su = db.superuser().await;
            // A's workspace row requires TOTP; B has no workspace row at all.
            su.execute(
                "INSERT INTO leadmaps.workspaces (workspace_id, name, region, created_at, require_totp)
                 VALUES ($1, 'A', 'eu', now(), true)",
                &[a.as_uuid()],
            )
            .await
            .unwrap();
            let rows = su
                .query(
                    "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                            pg_get_userbyid(c.relowner)::text,
                            ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                                                              'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p
                                  WHERE has_table_privilege($1, c.oid, p) ORDER BY p),
                            EXISTS (SELECT FROM aclexplode(c.relacl) x WHERE x.grantee = 0)
                     FROM pg_class c
                     WHERE c.relnamespace = 'leadmaps'::regnamespace
                       AND c.relname IN ('users', 'memberships', 'api_keys', 'staff_members')
                     ORDER BY 1",
                    &[&DEFAULT_APP_ROLE],
                )
                .await
                .unwrap();
            let found: Vec<(String, bool, bool, String, Vec<String>, bool)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                .collect();
            let row = |name: &str, rls: bool| {
                (
                    name.to_owned(),
                    rls,
                    rls,
                    OWNER_ROLE.to_owned(),
                    vec!["INSERT".to_owned(), "SELECT".to_owned()],
                    false,
                )
            };
            // Memberships may also be deleted (in the workspace, under RLS): SCIM deprovisioning.
            let mut memberships = row("memberships", true);
            memberships.4.insert(0, "DELETE".to_owned());
            assert_eq!(
                found,
                [
                    row("api_keys", true),
                    memberships,
                    row("staff_members", false),
                    row("users", false)
                ]
            );
            let columns: Vec<String> = su
                .query(
                    "SELECT table_name || '.' || column_name FROM information_schema.column_privileges
                     WHERE grantee = $1 AND privilege_type = 'UPDATE'
                       AND table_name IN ('users', 'memberships', 'api_keys', 'staff_members')
                     ORDER BY 1",
                    &[&DEFAULT_APP_ROLE],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(columns, ["api_keys.revoked_at", "memberships.role"]);

            let mut app = db.connect_as(DEFAULT_APP_ROLE).await;
            let count = |sql: &'static str| {
                let app = &app;
                async move { app.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
            };
            assert_eq!(count("SELECT count(*) FROM leadmaps.users").await, 2);
            assert_eq!(count("SELECT count(*) FROM leadmaps.staff_members").await, 1);
            assert_eq!(count("SELECT count(*) FROM leadmaps.workspaces").await, 0, "unscoped");
            assert_eq!(count("SELECT count(*) FROM leadmaps.memberships").await, 0, "unscoped");
            assert_eq!(count("SELECT count(*) FROM leadmaps.api_keys").await, 0, "unscoped");
            let via_lookup = |user: UserId| {
                let app = &app;
                async move {
                    app.query(
                        "SELECT member_workspace, member_role, member_require_totp
                         FROM leadmaps.memberships_of_user($1)",
                        &[user.as_uuid()],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect::<Vec<(Uuid, String, bool)>>()
                }
            };
            assert_eq!(
                via_lookup(alice.id).await,
                [(*a.as_uuid(), "admin".to_owned(), true)],
                "one user's only, with the workspace's policy"
            );
            assert_eq!(
                via_lookup(bob.id).await,
                [(*b.as_uuid(), "viewer".to_owned(), false)],
                "no workspace row: no policy"
            );
            let keys: Vec<Uuid> = app
                .query("SELECT key_id FROM leadmaps.api_key_for_auth($1)", &[kb.id.as_uuid()])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(keys, [*kb.id.as_uuid()], "one key only");
            for sql in [
                "SELECT * FROM leadmaps.api_key_for_auth(NULL)",
                "SELECT * FROM leadmaps.memberships_of_user(NULL)",
            ] {
                assert!(app.query(sql, &[]).await.unwrap().is_empty(), "{sql}");
            }

            let tx = app.transaction().await.unwrap();
            tx.execute(
                "SELECT set_config('leadmaps.workspace_id', $1, true)",
                &[&a.to_string()],
            )
            .await
            .unwrap();
            let seen: Vec<Uuid> = tx
                .query("SELECT id FROM leadmaps.api_keys", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(seen, [*ka.id.as_uuid()], "A's key only");
            let members: Vec<Uuid> = tx
                .query("SELECT user_id FROM leadmaps.memberships", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(members, [*alice.id.as_uuid()], "A's member only");
            tx.rollback().await.unwrap();

            for sql in [
                "TRUNCATE leadmaps.users",
                "TRUNCATE leadmaps.memberships",
                "TRUNCATE leadmaps.api_keys",
                "TRUNCATE leadmaps.staff_members",
                "DELETE FROM leadmaps.staff_members",
                "UPDATE leadmaps.staff_members SET email = email",
                "DELETE FROM leadmaps.users",
                "DELETE FROM leadmaps.api_keys",
                "UPDATE leadmaps.users SET email = email",
                "UPDATE leadmaps.memberships SET user_id = user_id",
                "UPDATE leadmaps.api_keys SET last_used_at = NULL",
                "UPDATE leadmaps.api_keys SET actions = actions",
                "UPDATE leadmaps.api_keys SET sealed = sealed",
            ] {
                let error = app.batch_execute(sql).await.expect_err(sql);
                assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}");
            }
            // Deprovisioning may delete memberships, but only in the scoped workspace: without
            // one, row-level security admits no row.
            assert_eq!(
                app.execute("DELETE FROM leadmaps.memberships", &[])
                    .await
                    .unwrap(),
                0
            );
            // A touch through the function moves nothing backwards, even with the app role's
            // own hands on it.
            app.execute(
                "SELECT leadmaps.touch_api_key($1, $2)",
                &[ka.id.as_uuid(), &(NOW + Duration::hours(1))],
            )
            .await
            .unwrap();
            app.execute(
                "SELECT leadmaps.touch_api_key($1, $2)",
                &[ka.id.as_uuid(), &NOW],
            )
            .await
            .unwrap();
            let used: Option<time::OffsetDateTime> = su
                .query_one(
                    "SELECT last_used_at FROM leadmaps.api_keys WHERE id = $1",
                    &[ka.id.as_uuid()],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(used, Some(NOW + Duration::hours(1)));
        })
        .await;
}
