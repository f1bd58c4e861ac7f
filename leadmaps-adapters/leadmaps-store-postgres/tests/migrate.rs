//! The migrator: once per database, however many servers start together; a changed history stops it.

mod common;

use std::collections::BTreeMap;

use leadmaps_core::ErrorKind;
use leadmaps_core::auth::session::SessionStore;
use leadmaps_core::auth::totp::{Subject, TotpStore};
use leadmaps_core::auth::users::UserStore;
use leadmaps_core::tenancy::{Membership, Role, StaffId, UserId, WorkspaceId};
use leadmaps_store_postgres::{
    LATEST_VERSION, MIGRATIONS, MigrationError, PostgresStore, migrate, migrate_to,
};

fn migration_error(error: &leadmaps_core::Error) -> MigrationError {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<MigrationError>())
        .unwrap_or_else(|| panic!("expected a MigrationError behind {error:?}"))
        .clone()
}

async fn history(db: &common::Db) -> BTreeMap<i32, i64> {
    db.superuser()
        .await
        .query(
            "SELECT version, count(*) FROM leadmaps.schema_migrations GROUP BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

fn every_version_once() -> BTreeMap<i32, i64> {
    MIGRATIONS.iter().map(|m| (m.version as i32, 1)).collect()
}

#[tokio::test]
async fn a_second_run_applies_nothing() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let first = migrate(&db.store_config()).await.unwrap();
            let all: Vec<_> = MIGRATIONS.iter().map(|m| (m.version, m.name)).collect();
            assert_eq!(first.applied, all);
            assert_eq!(first.version, LATEST_VERSION);
            let second = migrate(&db.store_config()).await.unwrap();
            assert!(second.applied.is_empty(), "{second:?}");
            assert_eq!(second.version, LATEST_VERSION);
            assert_eq!(history(&db).await, every_version_once());
            let checksums: Vec<String> = db
                .superuser()
                .await
                .query(
                    "SELECT checksum FROM leadmaps.schema_migrations ORDER BY version",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            let expected: Vec<String> = MIGRATIONS.iter().map(|m| m.checksum()).collect();
            assert_eq!(checksums, expected);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let config = db.store_config();
            let (one, two) = tokio::join!(migrate(&config), migrate(&config));
            let (one, two) = (one.unwrap(), two.unwrap());
            assert_eq!(
                one.applied.len() + two.applied.len(),
                MIGRATIONS.len(),
                "{one:?} {two:?}"
            );
            assert_eq!(history(&db).await, every_version_once());
            // Connecting (which migrates by default) from several servers at once works too.
            let (a, b, c) = tokio::join!(
                PostgresStore::connect(&config),
                PostgresStore::connect(&config),
                PostgresStore::connect(&config)
            );
            a.unwrap();
            b.unwrap();
            c.unwrap();
            assert_eq!(history(&db).await, every_version_once());
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_creating_the_same_new_roles_at_once_both_succeed() {
    let server = server_or_skip!();
    let role = format!("leadmaps_app_race_{}", uuid::Uuid::new_v4().simple());
    let (first, second) = (server.fresh_db().await, server.fresh_db().await);
    let (config_one, config_two) = (
        first.store_config().with_app_role(role.clone()),
        second.store_config().with_app_role(role.clone()),
    );
    let one = tokio::spawn(async move { migrate(&config_one).await });
    let two = tokio::spawn(async move { migrate(&config_two).await });
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    first.drop_db().await;
    second.drop_db().await;
    server
        .admin()
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
    one.unwrap();
    two.unwrap();
}

/// An upgrade from V6 applies every newer version, across any gap in the numbering, and keeps
/// what was there: a factor stored before V8 stays a second factor (there was no pending state),
/// a workspace starts without a TOTP policy and a session without challenge tries, and the
/// memberships lookup answers the policy. A factor stored without saying is pending.
#[tokio::test]
async fn an_upgrade_from_v6_keeps_what_was_there() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let config = db.store_config();
            assert_eq!(migrate_to(&config, 6).await.unwrap().version, 6);
            let (workspace, user) = (WorkspaceId::new(), UserId::new());
            let su = db.superuser().await;
            su.execute(
                "INSERT INTO leadmaps.workspaces (workspace_id, name, region, created_at)
                 VALUES ($1, 'old', 'eu', now())",
                &[workspace.as_uuid()],
            )
            .await
            .unwrap();
            su.execute(
                "INSERT INTO leadmaps.users (id, email, created_at) VALUES ($1, 'old@example.com', now())",
                &[user.as_uuid()],
            )
            .await
            .unwrap();
            su.execute(
                "INSERT INTO leadmaps.memberships (workspace_id, user_id, role) VALUES ($1, $2, 'admin')",
                &[workspace.as_uuid(), user.as_uuid()],
            )
            .await
            .unwrap();
            su.execute(
                "INSERT INTO leadmaps.totp_factors (subject_kind, subject_id, sealed_seed, last_step)
                 VALUES ('user', $1, '\\x01', 7)",
                &[user.as_uuid()],
            )
            .await
            .unwrap();
            su.execute(
                "INSERT INTO leadmaps.sessions (selector, digest_key_id, digest_mac, subject_kind,
                     subject_id, second_factor, created_at, last_seen_at)
                 VALUES ('old-session', 1, decode(repeat('00', 32), 'hex'), 'user', $1, true, now(), now())",
                &[user.as_uuid()],
            )
            .await
            .unwrap();

            let report = migrate(&config).await.unwrap();
            let newer: Vec<_> = MIGRATIONS
                .iter()
                .filter(|m| m.version > 6)
                .map(|m| (m.version, m.name))
                .collect();
            assert_eq!(report.applied, newer);
            assert_eq!(report.version, LATEST_VERSION);
            assert_eq!(history(&db).await, every_version_once());

            let store = PostgresStore::connect(&config).await.unwrap();
            assert_eq!(
                store.memberships(user).await.unwrap(),
                [Membership {
                    workspace,
                    role: Role::Admin,
                    require_totp: false
                }]
            );
            let factor = store.totp(Subject::User(user)).await.unwrap().unwrap();
            assert!(factor.confirmed, "a factor in use before V8 stays one");
            assert_eq!(factor.last_step, Some(7));
            assert_eq!(
                store.record_challenge_failure("old-session").await.unwrap(),
                1
            );
            let staff = StaffId::new();
            su.execute(
                "INSERT INTO leadmaps.totp_factors (subject_kind, subject_id, sealed_seed)
                 VALUES ('staff', $1, '\\x01')",
                &[staff.as_uuid()],
            )
            .await
            .unwrap();
            let pending = store.totp(Subject::Staff(staff)).await.unwrap().unwrap();
            assert!(!pending.confirmed, "new factors default to pending");
            store.close();
        })
        .await;
}

#[tokio::test]
async fn a_changed_history_is_refused_and_nothing_runs() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            migrate(&db.store_config()).await.unwrap();
            let superuser = db.superuser().await;

            superuser.batch_execute("UPDATE leadmaps.schema_migrations SET checksum = md5('tampered') WHERE version = 1").await.unwrap();
            let error = migrate(&db.store_config()).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Internal);
            assert_eq!(migration_error(&error), MigrationError::ChecksumMismatch { version: 1 });
            let error = PostgresStore::connect(&db.store_config()).await.unwrap_err();
            assert_eq!(migration_error(&error), MigrationError::ChecksumMismatch { version: 1 }, "connect migrates first");
            let checksum = MIGRATIONS[0].checksum();
            superuser
                .execute("UPDATE leadmaps.schema_migrations SET checksum = $1 WHERE version = 1", &[&checksum])
                .await
                .unwrap();

            superuser.batch_execute("UPDATE leadmaps.schema_migrations SET name = 'renamed' WHERE version = 1").await.unwrap();
            let error = migrate(&db.store_config()).await.unwrap_err();
            assert_eq!(migration_error(&error), MigrationError::NameMismatch { version: 1 });
            superuser
                .execute("UPDATE leadmaps.schema_migrations SET name = $1 WHERE version = 1", &[&MIGRATIONS[0].name])
                .await
                .unwrap();

            superuser
                .batch_execute("INSERT INTO leadmaps.schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
                .await
                .unwrap();
            let error = migrate(&db.store_config()).await.unwrap_err();
            assert_eq!(migration_error(&error), MigrationError::UnknownVersion { version: 9999 });
            superuser.batch_execute("DELETE FROM leadmaps.schema_migrations WHERE version = 9999").await.unwrap();

            assert!(migrate(&db.store_config()).await.unwrap().applied.is_empty(), "repaired history migrates again");
        })
        .await;
}

#[tokio::test]
async fn the_app_password_is_set_as_a_scram_verifier() {
    let server = server_or_skip!();
    let role = format!("leadmaps_app_pw_{}", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery staple";
    server
        .with_db({
            let role = role.clone();
            move |db| async move {
                let config = db
                    .store_config()
                    .with_app_role(role.clone())
                    .with_app_password(password);
                PostgresStore::connect(&config).await.unwrap();
                let stored: String = db
                    .superuser()
                    .await
                    .query_one(
                        "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                        &[&role],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert!(
                    stored.starts_with("SCRAM-SHA-256$4096:"),
                    "a verifier, not the password"
                );
                assert!(!stored.contains(password));
            }
        })
        .await;
    server
        .admin()
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
}
