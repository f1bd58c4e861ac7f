//! The breach tables hold their rules in the database too: the app role cannot move an
//! incident's awareness time, rewrite the register or delete anything; the owner and a superuser
//! are stopped by the triggers (also in replica mode); and the register still verifies.

mod common;

use std::sync::Arc;

use leadmaps_core::breach::{
    Assessment, BreachStore, DataRole, DataSet, Details, Engine, NewIncident, Risk, RuleBook,
    Severity, Status, verify_register,
};
use leadmaps_core::clock::ManualClock;
use leadmaps_core::tenancy::{Gate, Principal, StaffId};
use leadmaps_store_postgres::{DEFAULT_APP_ROLE, OWNER_ROLE, PostgresStore};
use time::macros::datetime;
use tokio_postgres::error::SqlState;

async fn refused(tx: &mut tokio_postgres::Transaction<'_>, sql: &str) -> (SqlState, String) {
    let savepoint = tx.savepoint("probe").await.unwrap();
    let error = savepoint.batch_execute(sql).await.expect_err(sql);
    savepoint.rollback().await.unwrap();
    let db = error.as_db_error().expect("a server error");
    (db.code().clone(), db.message().to_owned())
}

/// Refused to everyone: by privilege for the app role, by trigger for the owner and superuser.
const EDITS: [&str; 8] = [
    "UPDATE leadmaps.breach_incidents SET aware_at = aware_at + interval '1 hour'",
    "DELETE FROM leadmaps.breach_incidents",
    "TRUNCATE leadmaps.breach_incidents CASCADE",
    "UPDATE leadmaps.breach_register SET actor = 'x'",
    "DELETE FROM leadmaps.breach_register",
    "TRUNCATE leadmaps.breach_register",
    "DELETE FROM leadmaps.breach_deliveries",
    "TRUNCATE leadmaps.breach_deliveries",
];

#[tokio::test]
async fn nobody_moves_the_awareness_time_or_rewrites_the_register_through_sql() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = Arc::new(
                PostgresStore::connect(&db.store_config())
                    .await
                    .expect("connect"),
            );
            let t = datetime!(2026-03-02 09:00 UTC);
            let clock = Arc::new(ManualClock::new(t));
            let engine = Engine::new(store.clone(), Arc::new(RuleBook::default()), clock.clone());
            let scope = Gate::new(clock.clone())
                .authorize_breach(&Principal::Staff {
                    staff: StaffId::new(),
                    mfa: true,
                    grant: None,
                })
                .unwrap();
            let incident = engine
                .open(
                    &scope,
                    NewIncident {
                        title: "Leaked export".into(),
                        severity: Severity::S1,
                        assessment: Assessment {
                            personal_data: true,
                            risk: Risk::Risk,
                        },
                        aware_at: t,
                        workspaces: vec![],
                        data_sets: vec![DataSet {
                            name: "staff accounts".into(),
                            role: DataRole::Controller,
                        }],
                        details: Details::default(),
                    },
                )
                .await
                .unwrap();
            engine
                .advance(&scope, incident.id, Status::Contained)
                .await
                .unwrap();

            let mut app = db.connect_as(DEFAULT_APP_ROLE).await;
            let mut tx = app.transaction().await.unwrap();
            for sql in EDITS {
                let (code, _) = refused(&mut tx, sql).await;
                assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "app role: {sql}");
            }
            tx.rollback().await.unwrap();

            let mut su = db.superuser().await;
            let mut tx = su.transaction().await.unwrap();
            for setup in [
                format!("SET LOCAL ROLE {OWNER_ROLE}"),
                "RESET ROLE".to_owned(),
                "SET LOCAL session_replication_role = replica".to_owned(),
            ] {
                tx.batch_execute(&setup).await.unwrap();
                for sql in EDITS {
                    let (code, message) = refused(&mut tx, sql).await;
                    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "{setup}: {sql}");
                    assert!(
                        message.contains("append-only") || message.contains("recorded once"),
                        "{setup}: {sql}: {message}"
                    );
                }
                // A version skipped or a closed incident reopened is refused too.
                let (code, _) = refused(
                    &mut tx,
                    "UPDATE leadmaps.breach_incidents SET version = version + 2",
                )
                .await;
                assert_eq!(code, SqlState::T_R_SERIALIZATION_FAILURE, "{setup}");
            }
            tx.rollback().await.unwrap();

            let stored = store.incident(&scope, incident.id).await.unwrap().unwrap();
            assert_eq!(stored.aware_at, t);
            assert_eq!(stored.version, 2);
            let entries = store.register_entries(&scope, 0, 10).await.unwrap();
            assert_eq!(entries.len(), 2);
            assert_eq!(verify_register(&entries), Ok(()));
            store.close();
        })
        .await;
}
