//! The authentication stores (TOTP factors, magic links, sessions, step-up grants, recovery codes)
//! against real PostgreSQL: the conformance checks, each on a fresh database, plus races across
//! pooled connections and the app role's privileges on the identity tables.

mod common;

use std::sync::Arc;

use leadmaps_core::auth::AuthStore;
use leadmaps_core::auth::recovery::RecoveryStore;
use leadmaps_core::auth::session::{MagicLink, Realm, SessionRecord, SessionStore};
use leadmaps_core::auth::staff::{SensitiveAction, StepUpStore};
use leadmaps_core::auth::tokens::TokenDigest;
use leadmaps_core::auth::tokens::recovery::RecoveryHash;
use leadmaps_core::auth::totp::{Subject, TotpFactor, TotpStore};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{StaffId, UserId};
use leadmaps_store_postgres::{DEFAULT_APP_ROLE, PostgresStore};
use time::Duration;
use time::macros::datetime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_auth_conformance_suite() {
    let server = server_or_skip!();
    common::run_on_fresh_databases(&server, leadmaps_core::conformance::AUTH_CHECKS, |store| {
        Arc::new(store) as Arc<dyn AuthStore>
    })
    .await;
}

/// Many tasks on many connections: one claim of a step wins, one taker gets a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_across_connections_have_one_winner() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = Arc::new(
                PostgresStore::connect(&db.store_config().with_pool_size(16))
                    .await
                    .unwrap(),
            );
            let user = Subject::User(UserId::new());
            store
                .put_totp(&TotpFactor {
                    subject: user,
                    sealed_seed: vec![1; 40],
                    last_step: Some(10),
                    failures: 4,
                    locked_until: None,
                    confirmed: true,
                })
                .await
                .unwrap();
            for step in [11, 12, 13] {
                let tasks: Vec<_> = (0..48)
                    .map(|_| {
                        let store = store.clone();
                        tokio::spawn(async move { store.claim_totp_step(user, step).await })
                    })
                    .collect();
                let mut won = 0;
                for task in tasks {
                    won += usize::from(task.await.unwrap().unwrap());
                }
                assert_eq!(won, 1, "step {step}");
            }
            let factor = store.totp(user).await.unwrap().unwrap();
            assert_eq!((factor.last_step, factor.failures), (Some(13), 0));

            // Failures counted concurrently are all counted.
            let now = datetime!(2026-02-15 12:00 UTC);
            let tasks: Vec<_> = (0..30)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .record_totp_failure(user, now, 10, Duration::minutes(15))
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut counts = Vec::new();
            for task in tasks {
                counts.push(task.await.unwrap());
            }
            counts.sort_unstable();
            assert_eq!(counts, (1..=30).collect::<Vec<u32>>());
            let factor = store.totp(user).await.unwrap().unwrap();
            assert_eq!(
                (factor.failures, factor.locked_until),
                (30, Some(now + Duration::minutes(15)))
            );
            let stranger = Subject::User(UserId::new());
            assert_eq!(
                store.claim_totp_step(stranger, 1).await.unwrap_err().kind(),
                leadmaps_core::ErrorKind::NotFound
            );
            assert_eq!(
                store
                    .record_totp_failure(stranger, now, 10, Duration::minutes(15))
                    .await
                    .unwrap_err()
                    .kind(),
                leadmaps_core::ErrorKind::NotFound
            );

            let link = MagicLink {
                selector: "race-link".into(),
                digest: TokenDigest {
                    key_id: u32::MAX,
                    mac: [0xab; 32],
                },
                realm: Realm::Staff,
                email: Address::parse("Someone@Example.COM").unwrap(),
                created_at: now,
                expires_at: now + Duration::minutes(10),
            };
            store.insert_link(&link).await.unwrap();
            assert_eq!(store.link("race-link").await.unwrap(), Some(link.clone()));
            let tasks: Vec<_> = (0..32)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .take_link("race-link", now + Duration::minutes(9))
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut taken = Vec::new();
            for task in tasks {
                taken.extend(task.await.unwrap());
            }
            assert_eq!(taken, [link], "taken once, and read back exactly");
            store.close();
        })
        .await;
}

/// Tasks on several pooled connections: one grant is taken once; as many grants, as many takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_up_grants_are_taken_once_across_connections() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = Arc::new(
                PostgresStore::connect(&db.store_config().with_pool_size(8))
                    .await
                    .unwrap(),
            );
            let (staff, other) = (StaffId::new(), StaffId::new());
            let now = datetime!(2026-02-15 12:00 UTC);
            let action = SensitiveAction::RotateKeys;
            let race = |grants: usize, takers: usize| {
                let store = store.clone();
                async move {
                    for _ in 0..grants {
                        store
                            .grant_step_up(staff, action, now + Duration::minutes(10))
                            .await
                            .unwrap();
                    }
                    // Every taker waits at the barrier, so the takes start together.
                    let barrier = Arc::new(tokio::sync::Barrier::new(takers));
                    let tasks: Vec<_> = (0..takers)
                        .map(|_| {
                            let (store, barrier) = (store.clone(), barrier.clone());
                            tokio::spawn(async move {
                                barrier.wait().await;
                                store.take_step_up(staff, action, now).await.unwrap()
                            })
                        })
                        .collect();
                    let mut taken = 0;
                    for task in tasks {
                        taken += usize::from(task.await.unwrap());
                    }
                    taken
                }
            };
            for round in 0..5 {
                assert_eq!(race(1, 20).await, 1, "round {round}: one grant, one use");
            }
            assert_eq!(race(3, 20).await, 3, "three grants, three uses");
            // As many takers as grants (and connections): a taker that loses its pick to another
            // tries again and takes another grant, so none is refused while one is live.
            for round in 0..5 {
                assert_eq!(
                    race(8, 8).await,
                    8,
                    "round {round}: eight grants, eight uses"
                );
            }
            assert_eq!(race(0, 20).await, 0, "none left");

            // Other people, other actions and expired grants are not taken; the live one is.
            store
                .grant_step_up(staff, action, now + Duration::minutes(10))
                .await
                .unwrap();
            store
                .grant_step_up(staff, SensitiveAction::CloseIncident, now)
                .await
                .unwrap();
            assert!(!store.take_step_up(other, action, now).await.unwrap());
            assert!(
                !store
                    .take_step_up(staff, SensitiveAction::ManageStaff, now)
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .take_step_up(staff, SensitiveAction::CloseIncident, now)
                    .await
                    .unwrap(),
                "expires_at is not live"
            );
            assert!(
                !store
                    .take_step_up(staff, action, now + Duration::minutes(10))
                    .await
                    .unwrap(),
                "expired"
            );
            let su = db.superuser().await;
            let stored: Vec<(Uuid, String)> = su
                .query(
                    "SELECT staff_id, action FROM leadmaps.step_up_grants ORDER BY action",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            assert_eq!(
                stored,
                [
                    (*staff.as_uuid(), "incident.close".to_owned()),
                    (*staff.as_uuid(), "keys.rotate".to_owned())
                ],
                "stored by SensitiveAction::as_str; nothing taken yet"
            );
            assert!(store.take_step_up(staff, action, now).await.unwrap());
            assert!(!store.take_step_up(staff, action, now).await.unwrap());
            store.close();
        })
        .await;
}

/// Many tasks on many connections: a recovery code is used once, replacements of one set do not
/// collide and leave one whole set, and every wrong challenge code is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_codes_and_challenge_tries_hold_across_connections() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = Arc::new(
                PostgresStore::connect(&db.store_config().with_pool_size(16))
                    .await
                    .unwrap(),
            );
            let user = Subject::User(UserId::new());
            let set = |seed: u8| -> Vec<RecoveryHash> {
                (0..10u8)
                    .map(|i| RecoveryHash {
                        salt: [seed ^ i; 16],
                        hash: [seed.wrapping_add(i); 32],
                    })
                    .collect()
            };
            // Replacements racing each other: all succeed, and one whole set is left.
            let tasks: Vec<_> = (0..12u8)
                .map(|seed| {
                    let (store, codes) = (store.clone(), set(seed));
                    tokio::spawn(async move { store.put_recovery_codes(user, &codes).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let stored = store.recovery_codes(user).await.unwrap();
            let slots: Vec<u32> = stored.iter().map(|(slot, _)| *slot).collect();
            assert_eq!(slots, (0..10).collect::<Vec<u32>>());
            let winner = (0..12u8)
                .map(set)
                .find(|codes| codes[0] == stored[0].1)
                .expect("one of the sets");
            for (slot, hash) in &stored {
                assert_eq!(hash, &winner[*slot as usize], "one set, not a mix");
            }
            // Every slot raced by many users: each is used once.
            for slot in [0, 4, 9] {
                let tasks: Vec<_> = (0..32)
                    .map(|_| {
                        let store = store.clone();
                        tokio::spawn(async move { store.use_recovery_code(user, slot).await })
                    })
                    .collect();
                let mut used = 0;
                for task in tasks {
                    used += usize::from(task.await.unwrap().unwrap());
                }
                assert_eq!(used, 1, "slot {slot}");
            }
            assert_eq!(store.recovery_codes(user).await.unwrap().len(), 7);
            assert!(!store.use_recovery_code(user, u32::MAX).await.unwrap());
            // Replaced by an empty set: nothing left.
            store.put_recovery_codes(user, &[]).await.unwrap();
            assert_eq!(store.recovery_codes(user).await.unwrap(), []);

            let now = datetime!(2026-02-15 12:00 UTC);
            store
                .insert_session(&SessionRecord {
                    selector: "challenge".into(),
                    digest: TokenDigest {
                        key_id: 1,
                        mac: [7; 32],
                    },
                    subject: user,
                    second_factor: false,
                    created_at: now,
                    last_seen_at: now,
                })
                .await
                .unwrap();
            let tasks: Vec<_> = (0..40)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.record_challenge_failure("challenge").await })
                })
                .collect();
            let mut counts = Vec::new();
            for task in tasks {
                counts.push(task.await.unwrap().unwrap());
            }
            counts.sort_unstable();
            assert_eq!(counts, (1..=40).collect::<Vec<u32>>());
            // The count is kept with the session and read by nothing else: a touch keeps it.
            store
                .touch_session("challenge", now + Duration::minutes(1))
                .await
                .unwrap();
            assert_eq!(
                store.record_challenge_failure("challenge").await.unwrap(),
                41
            );
            store.close();
        })
        .await;
}

/// What the app role may do to the identity tables: what the methods need, nothing more.
#[tokio::test]
async fn the_app_role_holds_only_the_privileges_the_auth_methods_need() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            PostgresStore::connect(&db.store_config())
                .await
                .unwrap()
                .close();
            let su = db.superuser().await;
            let rows = su
                .query(
                    "SELECT c.relname::text, c.relrowsecurity, pg_get_userbyid(c.relowner)::text,
                            ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                                                              'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p
                                  WHERE has_table_privilege($1, c.oid, p) ORDER BY p),
                            EXISTS (SELECT FROM aclexplode(c.relacl) x WHERE x.grantee = 0)
                     FROM pg_class c
                     WHERE c.relnamespace = 'leadmaps'::regnamespace
                       AND c.relname IN ('totp_factors', 'magic_links', 'sessions', 'step_up_grants',
                                         'recovery_codes')
                     ORDER BY 1",
                    &[&DEFAULT_APP_ROLE],
                )
                .await
                .unwrap();
            let found: Vec<(String, bool, String, Vec<String>, bool)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect();
            let owner = leadmaps_store_postgres::OWNER_ROLE.to_owned();
            let privileges = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect();
            assert_eq!(
                found,
                [
                    (
                        "magic_links".to_owned(),
                        false,
                        owner.clone(),
                        privileges(&["DELETE", "INSERT", "SELECT"]),
                        false
                    ),
                    (
                        "recovery_codes".to_owned(),
                        false,
                        owner.clone(),
                        privileges(&["DELETE", "INSERT", "SELECT"]),
                        false
                    ),
                    (
                        "sessions".to_owned(),
                        false,
                        owner.clone(),
                        privileges(&["DELETE", "INSERT", "SELECT"]),
                        false
                    ),
                    (
                        "step_up_grants".to_owned(),
                        false,
                        owner.clone(),
                        privileges(&["DELETE", "INSERT", "SELECT"]),
                        false
                    ),
                    (
                        "totp_factors".to_owned(),
                        false,
                        owner,
                        privileges(&["INSERT", "SELECT"]),
                        false
                    ),
                ]
            );
            let columns: Vec<String> = su
                .query(
                    "SELECT table_name || '.' || column_name FROM information_schema.column_privileges
                     WHERE grantee = $1 AND privilege_type = 'UPDATE'
                       AND table_name IN ('totp_factors', 'magic_links', 'sessions', 'step_up_grants',
                                          'recovery_codes')
                     ORDER BY 1",
                    &[&DEFAULT_APP_ROLE],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(
                columns,
                [
                    "sessions.challenge_failures",
                    "sessions.last_seen_at",
                    "totp_factors.confirmed",
                    "totp_factors.failures",
                    "totp_factors.last_step",
                    "totp_factors.locked_until",
                    "totp_factors.sealed_seed"
                ]
            );
            // And as the app role itself.
            let app = db.connect_as(DEFAULT_APP_ROLE).await;
            for sql in [
                "TRUNCATE leadmaps.sessions",
                "TRUNCATE leadmaps.magic_links",
                "TRUNCATE leadmaps.totp_factors",
                "TRUNCATE leadmaps.step_up_grants",
                "TRUNCATE leadmaps.recovery_codes",
                "UPDATE leadmaps.recovery_codes SET slot = slot",
                "UPDATE leadmaps.recovery_codes SET hash = hash",
                "UPDATE leadmaps.sessions SET second_factor = true",
                "DELETE FROM leadmaps.totp_factors",
                "UPDATE leadmaps.sessions SET subject_id = subject_id",
                "UPDATE leadmaps.magic_links SET expires_at = expires_at",
                "UPDATE leadmaps.totp_factors SET subject_id = subject_id",
                "UPDATE leadmaps.step_up_grants SET expires_at = expires_at",
                "UPDATE leadmaps.step_up_grants SET action = action",
                "SELECT id FROM leadmaps.step_up_grants FOR UPDATE",
            ] {
                let error = app.batch_execute(sql).await.expect_err(sql);
                assert_eq!(
                    error.code(),
                    Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                    "{sql}"
                );
            }
        })
        .await;
}
