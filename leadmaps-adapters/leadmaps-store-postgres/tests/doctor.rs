//! The doctor: clean on the migrated schema, and it finds each fault planted in a scratch one.

mod common;

use std::collections::BTreeSet;

use leadmaps_core::ingest::Verdict;
use leadmaps_core::store::EventSink;
use leadmaps_store_postgres::{
    DEFAULT_APP_ROLE, FindingKind, PostgresStore, doctor, doctor_client, migrate,
};
use time::macros::datetime;

use common::{Tenants, event};

#[tokio::test]
async fn the_migrated_schema_is_clean() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            // With partitions made on demand as well as by the migration.
            let t = Tenants::new(datetime!(2026-02-15 12:00 UTC));
            let a = t.workspace(&store).await;
            let events = [
                event(a, 1, datetime!(2019-07-04 00:00 UTC)),
                event(a, 2, datetime!(2026-02-15 00:00 UTC)),
            ];
            assert_eq!(
                store.append_events(&t.batch(&events)).await.unwrap(),
                [Verdict::Accepted; 2]
            );
            let report = doctor(&db.store_config()).await.unwrap();
            assert!(report.is_clean(), "{report}");
            assert_eq!(report.to_string(), "no findings\n");
            // The same through an open connection of the app role itself: the catalog reads need
            // no privilege.
            let app = db.connect_as(DEFAULT_APP_ROLE).await;
            let report = doctor_client(&app, DEFAULT_APP_ROLE).await.unwrap();
            assert!(report.is_clean(), "{report}");
        })
        .await;
}

#[tokio::test]
async fn every_planted_fault_is_found() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            migrate(&db.store_config()).await.unwrap();
            let su = db.superuser().await;
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            let bypass_role = format!("leadmaps_doctor_bypass_{}", &suffix[..12]);
            let member_role = format!("leadmaps_doctor_member_{}", &suffix[..12]);
            su.batch_execute(&format!(
                "CREATE ROLE {bypass_role} LOGIN NOSUPERUSER BYPASSRLS;
                 CREATE ROLE {member_role} LOGIN NOSUPERUSER NOBYPASSRLS;
                 GRANT leadmaps_owner TO {member_role};"
            ))
            .await
            .unwrap();
            let task = {
                let (db, bypass_role, member_role) = (db.clone(), bypass_role.clone(), member_role.clone());
                async move {
            let su = db.superuser().await;
            let planted = su
                .batch_execute(&format!(
                    "-- RLS enabled but not forced.
                     CREATE TABLE leadmaps.fault_not_forced (workspace_id uuid NOT NULL, x int);
                     CREATE INDEX ON leadmaps.fault_not_forced (workspace_id);
                     ALTER TABLE leadmaps.fault_not_forced ENABLE ROW LEVEL SECURITY;
                     -- No RLS at all.
                     CREATE TABLE leadmaps.fault_no_rls (workspace_id uuid PRIMARY KEY);
                     -- RLS in place, but workspace_id leads no index (it is second here).
                     CREATE TABLE leadmaps.fault_no_index (workspace_id uuid NOT NULL, x int);
                     CREATE INDEX ON leadmaps.fault_no_index (x, workspace_id);
                     ALTER TABLE leadmaps.fault_no_index ENABLE ROW LEVEL SECURITY;
                     ALTER TABLE leadmaps.fault_no_index FORCE ROW LEVEL SECURITY;
                     -- A policy that admits everything, and a restrictive one that says nothing.
                     CREATE POLICY fault_open ON leadmaps.secrets FOR SELECT TO {DEFAULT_APP_ROLE} USING ((true));
                     CREATE POLICY fault_silent ON leadmaps.sites AS RESTRICTIVE FOR INSERT TO {DEFAULT_APP_ROLE};
                     -- Policies calling VOLATILE functions: one of ours, and a built-in one.
                     CREATE FUNCTION leadmaps.fault_coin() RETURNS boolean LANGUAGE sql VOLATILE AS 'SELECT random() < 2';
                     CREATE POLICY fault_volatile ON leadmaps.salts AS RESTRICTIVE FOR SELECT TO {DEFAULT_APP_ROLE}
                         USING (leadmaps.fault_coin());
                     CREATE POLICY fault_random ON leadmaps.tenant_keys AS RESTRICTIVE FOR SELECT TO {DEFAULT_APP_ROLE}
                         USING (workspace_id IS NOT NULL AND random() >= 0);
                     -- TRUNCATE for the app role, on the partitioned parent.
                     GRANT TRUNCATE ON leadmaps.events TO {DEFAULT_APP_ROLE};
                     -- Views: one with its owner's rights, one right, one materialized.
                     CREATE VIEW leadmaps.fault_view AS SELECT workspace_id, name FROM leadmaps.secrets;
                     CREATE VIEW leadmaps.fine_view WITH (security_invoker = on) AS SELECT workspace_id FROM leadmaps.secrets;
                     CREATE MATERIALIZED VIEW leadmaps.fault_matview AS SELECT workspace_id FROM leadmaps.sites;
                     -- The audit log: a disabled append-only trigger, and a DELETE for the app role.
                     ALTER TABLE leadmaps.audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only;
                     GRANT DELETE ON leadmaps.audit_records TO {DEFAULT_APP_ROLE};"
                ))
                .await;
                planted.unwrap();
                let found = |report: &leadmaps_store_postgres::DoctorReport| {
                    report
                        .findings()
                        .iter()
                        .map(|f| (f.kind, f.object.clone()))
                        .collect::<BTreeSet<_>>()
                };
                let report = doctor_client(&su, DEFAULT_APP_ROLE).await.unwrap();
                println!("{report}");
                let expected: BTreeSet<(FindingKind, String)> = [
                    (FindingKind::RlsNotForced, "leadmaps.fault_not_forced"),
                    (FindingKind::RlsNotEnabled, "leadmaps.fault_no_rls"),
                    (FindingKind::RlsNotForced, "leadmaps.fault_no_rls"),
                    (FindingKind::MissingWorkspaceIndex, "leadmaps.fault_no_index"),
                    (FindingKind::AlwaysTruePolicy, "leadmaps.secrets/fault_open"),
                    (FindingKind::AlwaysTruePolicy, "leadmaps.sites/fault_silent"),
                    (
                        FindingKind::VolatilePolicyFunction,
                        "leadmaps.salts/fault_volatile calls leadmaps.fault_coin()",
                    ),
                    (
                        FindingKind::VolatilePolicyFunction,
                        "leadmaps.tenant_keys/fault_random calls random()",
                    ),
                    (FindingKind::TruncateGranted, "leadmaps.events TO leadmaps_app"),
                    (FindingKind::ViewWithoutSecurityInvoker, "leadmaps.fault_view"),
                    (FindingKind::ViewWithoutSecurityInvoker, "leadmaps.fault_matview"),
                    (FindingKind::AuditNotAppendOnly, "leadmaps.audit_checkpoints"),
                    (FindingKind::AuditNotAppendOnly, "leadmaps.audit_records TO leadmaps_app"),
                ]
                .into_iter()
                .map(|(kind, object)| (kind, object.to_owned()))
                .collect();
                assert_eq!(found(&report), expected, "exactly the planted faults:\n{report}");
                for finding in report.findings() {
                    assert!(!finding.explanation.is_empty() && !finding.explanation.contains('\n'));
                }
                let text = report.to_string();
                assert!(text.starts_with("KIND"), "{text}");
                assert!(text.contains("rls_not_forced") && text.contains("leadmaps.fault_view"));

                // The app role's own posture, with three other candidate roles.
                let bypass = doctor_client(&su, &bypass_role).await.unwrap();
                assert!(
                    bypass.has(FindingKind::PrivilegedAppRole, &bypass_role),
                    "{bypass}"
                );
                let member = doctor_client(&su, &member_role).await.unwrap();
                assert!(
                    member.has(
                        FindingKind::PrivilegedAppRole,
                        &format!("{member_role} in leadmaps_owner")
                    ),
                    "{member}"
                );
                let superuser = db
                    .superuser_config()
                    .get_user()
                    .unwrap_or("postgres")
                    .to_owned();
                let as_superuser = doctor_client(&su, &superuser).await.unwrap();
                assert!(
                    as_superuser.has(FindingKind::PrivilegedAppRole, &superuser),
                    "{as_superuser}"
                );
                let missing = doctor_client(&su, "leadmaps_doctor_no_such_role").await.unwrap();
                assert!(missing.has(FindingKind::AppRoleMissing, "leadmaps_doctor_no_such_role"));
                // The schema faults are reported whichever role is asked about.
                assert!(bypass.has(FindingKind::RlsNotForced, "leadmaps.fault_not_forced"));
                }
            };
            let outcome = tokio::spawn(task).await;
            // Roles are cluster-wide: drop them whatever happened.
            su
                .batch_execute(&format!(
                    "DROP ROLE IF EXISTS {bypass_role}; DROP ROLE IF EXISTS {member_role};"
                ))
                .await
                .unwrap();
            if let Err(error) = outcome {
                std::panic::resume_unwind(error.into_panic());
            }
        })
        .await;
}
