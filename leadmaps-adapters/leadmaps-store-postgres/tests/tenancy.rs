//! The second gate, checked with raw SQL through the app role: whatever the application does, the
//! database itself confines the app role to the workspace set for the transaction.

mod common;

use leadmaps_core::ErrorKind;
use leadmaps_store_postgres::{DEFAULT_APP_ROLE, LOOKUP_ROLE, OWNER_ROLE, PostgresStore, migrate};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

/// A customer-data table as the app role meets it.
struct Table {
    name: &'static str,
    /// An assignment through a column the app role may update, if it may update any.
    update: Option<&'static str>,
    /// Whether the app role may delete rows.
    delete: bool,
}

const TABLES: &[Table] = &[
    Table {
        name: "leadmaps.workspaces",
        update: Some("name = name"),
        delete: false,
    },
    Table {
        name: "leadmaps.secrets",
        update: Some("blob = blob"),
        delete: true,
    },
    Table {
        name: "leadmaps.tenant_keys",
        update: Some("blob = blob"),
        delete: true,
    },
    Table {
        name: "leadmaps.sites",
        update: None,
        delete: false,
    },
    Table {
        name: "leadmaps.salts",
        update: None,
        delete: true,
    },
    Table {
        name: "leadmaps.salt_destructions",
        update: None,
        delete: false,
    },
    Table {
        name: "leadmaps.events",
        update: None,
        delete: true,
    },
    Table {
        name: "leadmaps.event_ids",
        update: None,
        delete: true,
    },
    Table {
        name: "leadmaps.event_drops",
        update: Some("count = count"),
        delete: false,
    },
    Table {
        name: "leadmaps.memberships",
        update: Some("role = role"),
        // SCIM deprovisioning removes a member (V12).
        delete: true,
    },
    Table {
        name: "leadmaps.api_keys",
        update: Some("revoked_at = revoked_at"),
        delete: false,
    },
    Table {
        name: "leadmaps.audit_records",
        update: None,
        delete: false,
    },
    Table {
        name: "leadmaps.audit_checkpoints",
        update: None,
        delete: false,
    },
    Table {
        name: "leadmaps.impersonation_grants",
        update: Some("closed_at = now()"),
        delete: false,
    },
    Table {
        name: "leadmaps.oidc_connections",
        update: Some("issuer = issuer"),
        delete: true,
    },
    Table {
        name: "leadmaps.scim_resources",
        update: Some("document = document"),
        delete: true,
    },
    Table {
        name: "leadmaps.dpa_acceptances",
        update: None,
        delete: false,
    },
    Table {
        name: "leadmaps.subprocessor_notices",
        update: None,
        delete: false,
    },
];

/// One row for `ws` in `table`; `n` varies the keys so several rows of one workspace can coexist.
fn row_sql(table: &str, ws: Uuid, n: u8) -> String {
    let values = match table {
        "leadmaps.workspaces" => format!("('{ws}', 'w', 'eu', now())"),
        "leadmaps.secrets" => format!("('{ws}', 'name-{n}', 'other', '\\x01')"),
        "leadmaps.tenant_keys" => format!("('{ws}', {n}, 1, '\\x01', now())"),
        "leadmaps.sites" => format!("('{ws}', 's{n}-{ws}.example', now())"),
        "leadmaps.salts" => format!("('{ws}', date '2026-01-01' + {n}, '\\x01')"),
        "leadmaps.salt_destructions" => format!("('{ws}', date '2026-01-01' + {n}, now())"),
        "leadmaps.events" => {
            return format!(
                "INSERT INTO leadmaps.events (workspace_id, id, received_at, domain, name, hostname, pathname,
                     interactive, visitor)
                 VALUES ('{ws}', gen_random_uuid(), now(), 'd', 'n', 'h', '/', false, decode(repeat('00', 16), 'hex'))"
            );
        }
        "leadmaps.event_ids" => format!("('{ws}', gen_random_uuid())"),
        "leadmaps.event_drops" => format!("('{ws}', date '2026-01-01' + {n}, 'bot', 1)"),
        // A membership needs its user (a foreign key): both in one statement.
        "leadmaps.memberships" => {
            return format!(
                "WITH u AS (INSERT INTO leadmaps.users (id, email, created_at)
                            VALUES (gen_random_uuid(), 'm{n}-{ws}@example.com', now()) RETURNING id)
                 INSERT INTO leadmaps.memberships (workspace_id, user_id, role)
                 SELECT '{ws}', u.id, 'viewer' FROM u"
            );
        }
        "leadmaps.api_keys" => {
            return format!(
                "INSERT INTO leadmaps.api_keys (id, workspace_id, name, actions, digest_key_id, digest_mac,
                     sealed, created_at)
                 VALUES (gen_random_uuid(), '{ws}', 'k{n}', ARRAY['event.read'], 1,
                     decode(repeat('00', 32), 'hex'), '\\x01', now())"
            );
        }
        "leadmaps.audit_records" => format!(
            "('{ws}', {n}, gen_random_uuid(), now(), 'collector', '', NULL, 'site.added', 'site',
              'x', NULL, NULL, '[]', NULL, decode(lpad('{n}', 64, '0'), 'hex'),
              decode(repeat('00', 32), 'hex'))"
        ),
        "leadmaps.impersonation_grants" => format!(
            "('{ws}', gen_random_uuid(), gen_random_uuid(), 'ticket {n}', false, now(),
              now() + interval '1 hour', NULL)"
        ),
        "leadmaps.audit_checkpoints" => format!(
            "('{ws}', now(), {n}, decode(repeat('00', 32), 'hex'), 1, decode(repeat('00', 32), 'hex'))"
        ),
        "leadmaps.oidc_connections" => format!(
            "('{ws}', 'https://idp.example', 'client-{n}', '\\x01', ARRAY['example.com'], now())"
        ),
        "leadmaps.scim_resources" => format!(
            "('{ws}', gen_random_uuid(), 'user', 'u{n}', 'u{n}', NULL, true, NULL, '{{}}', now(), now(), 1)"
        ),
        "leadmaps.dpa_acceptances" => {
            format!("('{ws}', 'v{n}', 'member', gen_random_uuid()::text, now())")
        }
        "leadmaps.subprocessor_notices" => format!("('{ws}', 'v{n}', now(), 1)"),
        other => panic!("no row for {other}"),
    };
    format!("INSERT INTO {table} VALUES {values}")
}

/// Inserts one row per table for `ws`, as the superuser (who bypasses RLS).
async fn seed(superuser: &Client, ws: Uuid) {
    for table in TABLES {
        superuser
            .batch_execute(&row_sql(table.name, ws, 1))
            .await
            .unwrap();
    }
}

async fn count(client: &impl GenericClient, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn affected(client: &impl GenericClient, sql: &str) -> u64 {
    client.execute(sql, &[]).await.unwrap()
}

/// Runs `sql` in a savepoint and returns the SQLSTATE it failed with.
async fn refused(tx: &mut tokio_postgres::Transaction<'_>, sql: &str) -> SqlState {
    let savepoint = tx.savepoint("probe").await.unwrap();
    let error = savepoint.batch_execute(sql).await.expect_err(sql);
    savepoint.rollback().await.unwrap();
    error
        .code()
        .cloned()
        .unwrap_or_else(|| panic!("no SQLSTATE for {sql}"))
}

#[tokio::test]
async fn app_role_sees_and_touches_only_the_workspace_set_for_the_transaction() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            migrate(&db.store_config()).await.unwrap();
            let superuser = db.superuser().await;
            let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
            seed(&superuser, a).await;
            seed(&superuser, b).await;
            let mut app = db.connect_as(DEFAULT_APP_ROLE).await;

            // Without leadmaps.workspace_id: nothing, in every table.
            for table in TABLES {
                let table = table.name;
                assert_eq!(
                    count(&app, &format!("SELECT count(*) FROM {table}")).await,
                    0,
                    "{table} unscoped"
                );
            }

            let mut tx = app.transaction().await.unwrap();
            tx.execute(
                "SELECT set_config('leadmaps.workspace_id', $1, true)",
                &[&a.to_string()],
            )
            .await
            .unwrap();
            for Table {
                name: table,
                update,
                delete,
            } in TABLES
            {
                assert_eq!(
                    count(&tx, &format!("SELECT count(*) FROM {table}")).await,
                    1,
                    "{table}: A's row only"
                );
                let of_b = format!("SELECT count(*) FROM {table} WHERE workspace_id = '{b}'");
                assert_eq!(count(&tx, &of_b).await, 0, "{table}: B invisible");
                if let Some(assignment) = update {
                    let updated = affected(
                        &tx,
                        &format!("UPDATE {table} SET {assignment} WHERE workspace_id = '{b}'"),
                    )
                    .await;
                    assert_eq!(updated, 0, "{table}: UPDATE of B affects nothing");
                    let everything =
                        affected(&tx, &format!("UPDATE {table} SET {assignment}")).await;
                    assert_eq!(
                        everything, 1,
                        "{table}: an unfiltered UPDATE reaches A only"
                    );
                }
                if *delete {
                    let deleted = affected(
                        &tx,
                        &format!("DELETE FROM {table} WHERE workspace_id = '{b}'"),
                    )
                    .await;
                    assert_eq!(deleted, 0, "{table}: DELETE of B affects nothing");
                } else {
                    let sql = format!("DELETE FROM {table} WHERE workspace_id = '{b}'");
                    assert_eq!(
                        refused(&mut tx, &sql).await,
                        SqlState::INSUFFICIENT_PRIVILEGE,
                        "{table}: no DELETE at all"
                    );
                }
                assert_eq!(
                    refused(&mut tx, &row_sql(table, b, 2)).await,
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    "{table}: INSERT of a B row refused"
                );
                // Moving A's row to B is refused too (by the policy's WITH CHECK or the column grants).
                assert_eq!(
                    refused(&mut tx, &format!("UPDATE {table} SET workspace_id = '{b}'")).await,
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    "{table}: moving a row to B refused"
                );
                assert_eq!(
                    refused(&mut tx, &format!("TRUNCATE {table}")).await,
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    "{table}: TRUNCATE refused"
                );
            }
            // The app role may insert rows of the workspace that is set (the policy is not simply closed).
            tx.batch_execute(&row_sql("leadmaps.secrets", a, 3))
                .await
                .unwrap();
            assert_eq!(
                refused(&mut tx, &format!("SET ROLE {OWNER_ROLE}")).await,
                SqlState::INSUFFICIENT_PRIVILEGE,
                "the app role cannot become the owner"
            );
            // An emptied setting is the same as none.
            tx.execute("SELECT set_config('leadmaps.workspace_id', '', true)", &[])
                .await
                .unwrap();
            for Table { name: table, .. } in TABLES {
                assert_eq!(
                    count(&tx, &format!("SELECT count(*) FROM {table}")).await,
                    0,
                    "{table} emptied setting"
                );
            }
            tx.commit().await.unwrap();

            // The setting was transaction-local: the next transaction on the connection sees nothing.
            for Table { name: table, .. } in TABLES {
                assert_eq!(
                    count(&app, &format!("SELECT count(*) FROM {table}")).await,
                    0,
                    "{table} after commit"
                );
            }
            // B is intact.
            for Table { name: table, .. } in TABLES {
                let sql = format!("SELECT count(*) FROM {table} WHERE workspace_id = '{b}'");
                assert_eq!(count(&superuser, &sql).await, 1, "{table}: B untouched");
            }
            // FORCE binds the owner role too: with no policy of its own it sees no customer row.
            let mut as_owner = superuser;
            let owner_tx = as_owner.transaction().await.unwrap();
            owner_tx
                .batch_execute(&format!("SET LOCAL ROLE {OWNER_ROLE}"))
                .await
                .unwrap();
            for Table { name: table, .. } in TABLES {
                assert_eq!(
                    count(&owner_tx, &format!("SELECT count(*) FROM {table}")).await,
                    0,
                    "{table} as owner"
                );
            }
            owner_tx.rollback().await.unwrap();
        })
        .await;
}

#[tokio::test]
async fn roles_tables_policies_and_functions_are_laid_out_for_two_gates() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            migrate(&db.store_config()).await.unwrap();
            let su = db.superuser().await;
            let role = su
                .query_one(
                    "SELECT rolsuper, rolbypassrls, rolcanlogin, pg_has_role(oid, $2::text, 'MEMBER'),
                            pg_has_role(oid, $3::text, 'MEMBER')
                     FROM pg_roles WHERE rolname = $1",
                    &[&DEFAULT_APP_ROLE, &OWNER_ROLE, &LOOKUP_ROLE],
                )
                .await
                .unwrap();
            let flags: (bool, bool, bool, bool, bool) = (role.get(0), role.get(1), role.get(2), role.get(3), role.get(4));
            assert_eq!(flags, (false, false, true, false, false), "app role: not super, not bypassrls, login, not owner");
            let owner_super: bool = su
                .query_one("SELECT rolsuper OR rolbypassrls OR rolcanlogin FROM pg_roles WHERE rolname = $1", &[&OWNER_ROLE])
                .await
                .unwrap()
                .get(0);
            assert!(!owner_super, "the owner role cannot log in and does not bypass RLS");

            let owners: Vec<String> = su
                .query(
                    "SELECT DISTINCT pg_get_userbyid(relowner)::text FROM pg_class
                     WHERE relnamespace = 'leadmaps'::regnamespace",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            assert_eq!(owners, [OWNER_ROLE], "every relation in the schema belongs to the owner role");

            let tables = su
                .query(
                    "SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity,
                            EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)
                     FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspace_id'
                     WHERE c.relnamespace = 'leadmaps'::regnamespace AND c.relkind IN ('r', 'p')
                       AND NOT c.relispartition
                     ORDER BY 1",
                    &[],
                )
                .await
                .unwrap();
            let names: Vec<String> = tables.iter().map(|row| row.get(0)).collect();
            let mut expected: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
            expected.sort();
            assert_eq!(names, expected, "the customer-data tables, all of them covered above");
            for row in &tables {
                let (name, enabled, forced, indexed): (String, bool, bool, bool) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                assert!(enabled && forced, "{name}: RLS enabled and forced");
                assert!(indexed, "{name}: an index leads with workspace_id");
                let policies = su
                    .query(
                        "SELECT permissive, roles::text[], qual, with_check FROM pg_policies
                         WHERE schemaname || '.' || tablename = $1",
                        &[&name],
                    )
                    .await
                    .unwrap();
                let kinds: Vec<String> = policies.iter().map(|p| p.get(0)).collect();
                assert!(kinds.contains(&"RESTRICTIVE".to_owned()) && kinds.contains(&"PERMISSIVE".to_owned()), "{name}");
                for policy in &policies {
                    let roles: Vec<String> = policy.get(1);
                    assert_eq!(roles, [DEFAULT_APP_ROLE], "{name}: policies for the app role only");
                    for expression in [policy.get::<_, Option<String>>(2), policy.get(3)] {
                        let expression = expression.expect("USING and WITH CHECK both set");
                        assert!(expression.contains("current_setting('leadmaps.workspace_id'"), "{name}: {expression}");
                        assert!(expression.contains("workspace_id ="), "{name}: {expression}");
                    }
                }
            }
            let always_true: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_policies WHERE qual IN ('true', '(true)') OR with_check IN ('true', '(true)')",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(always_true, 0, "no always-true policy anywhere");

            let truncate_or_public: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_class c
                     WHERE c.relnamespace = 'leadmaps'::regnamespace AND c.relkind = 'r'
                       AND (c.relacl IS NULL
                            OR has_table_privilege($1, c.oid, 'TRUNCATE')
                            OR EXISTS (SELECT FROM aclexplode(c.relacl) x WHERE x.grantee = 0))",
                    &[&DEFAULT_APP_ROLE],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(truncate_or_public, 0, "no TRUNCATE for the app role, nothing for PUBLIC");

            let functions = su
                .query(
                    "SELECT p.proname::text, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner)::text,
                            has_function_privilege($1, p.oid, 'EXECUTE'),
                            p.proacl IS NOT NULL AND NOT EXISTS (SELECT FROM aclexplode(p.proacl) x WHERE x.grantee = 0)
                     FROM pg_proc p WHERE p.pronamespace = 'leadmaps'::regnamespace
                       AND p.prorettype <> 'pg_catalog.trigger'::regtype
                     ORDER BY 1",
                    &[&DEFAULT_APP_ROLE],
                )
                .await
                .unwrap();
            let names: Vec<String> = functions.iter().map(|row| row.get(0)).collect();
            assert_eq!(
                names,
                [
                    "api_key_for_auth",
                    "count_needing_rewrap",
                    "drop_event_month",
                    "ensure_event_partitions",
                    "event_month_only_of",
                    "impersonation_grant",
                    "kek_ids_in_use",
                    "memberships_of_user",
                    "site_route",
                    "touch_api_key",
                    "workspace_ids",
                    "workspaces_needing_rewrap",
                    "workspaces_with_salts_before"
                ]
            );
            for row in &functions {
                let name: String = row.get(0);
                let config: Vec<String> = row.get(2);
                assert!(row.get::<_, bool>(1), "{name}: SECURITY DEFINER");
                assert_eq!(config, ["search_path=pg_catalog, pg_temp"], "{name}: fixed search_path");
                // The cross-workspace reads belong to the lookup role.
                // Partitions are made and dropped by their owner, the owner of leadmaps.events.
                let owner = if ["ensure_event_partitions", "event_month_only_of", "drop_event_month"]
                    .contains(&name.as_str())
                {
                    OWNER_ROLE
                } else {
                    LOOKUP_ROLE
                };
                assert_eq!(row.get::<_, String>(3), owner, "{name}: owned by {owner}");
                assert!(row.get::<_, bool>(4), "{name}: the app role may execute it");
                assert!(row.get::<_, bool>(5), "{name}: PUBLIC may not");
            }
            // Trigger functions only refuse (the audit log's append-only guard, the breach
            // incident and delivery guards): the owner's, with the rights of whoever fires them,
            // and nobody may call them.
            let triggers = su
                .query(
                    "SELECT p.proname::text, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner)::text,
                            has_function_privilege($1, p.oid, 'EXECUTE'),
                            p.proacl IS NOT NULL AND NOT EXISTS (SELECT FROM aclexplode(p.proacl) x WHERE x.grantee = 0)
                     FROM pg_proc p WHERE p.pronamespace = 'leadmaps'::regnamespace
                       AND p.prorettype = 'pg_catalog.trigger'::regtype
                     ORDER BY 1",
                    &[&DEFAULT_APP_ROLE],
                )
                .await
                .unwrap();
            let names: Vec<String> = triggers.iter().map(|row| row.get(0)).collect();
            assert_eq!(
                names,
                [
                    "audit_append_only",
                    "breach_delivery_guard",
                    "breach_incident_guard",
                    "impersonation_grant_closes_once",
                    "vulnerability_report_guard"
                ]
            );
            for row in &triggers {
                let name: String = row.get(0);
                let config: Vec<String> = row.get(2);
                assert!(!row.get::<_, bool>(1), "{name}: not SECURITY DEFINER");
                assert_eq!(config, ["search_path=pg_catalog, pg_temp"], "{name}: fixed search_path");
                assert_eq!(row.get::<_, String>(3), OWNER_ROLE, "{name}: owned by the owner");
                assert!(!row.get::<_, bool>(4), "{name}: the app role may not execute it");
                assert!(row.get::<_, bool>(5), "{name}: PUBLIC may not");
            }
            let lookup_columns = |privilege: &'static str| {
                let su = &su;
                async move {
                    su.query(
                        "SELECT table_name || '.' || column_name FROM information_schema.column_privileges
                         WHERE grantee = $1 AND table_schema = 'leadmaps' AND privilege_type = $2
                         ORDER BY 1",
                        &[&LOOKUP_ROLE, &privilege],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect::<Vec<String>>()
                }
            };
            let (selects, others): (Vec<String>, Vec<String>) = lookup_columns("SELECT")
                .await
                .into_iter()
                .partition(|c| !c.starts_with("api_keys.") && !c.starts_with("impersonation_grants."));
            assert_eq!(
                selects,
                [
                    "memberships.role",
                    "memberships.user_id",
                    "memberships.workspace_id",
                    "salts.day",
                    "salts.workspace_id",
                    "sites.domain",
                    "sites.workspace_id",
                    "tenant_keys.kek_id",
                    "tenant_keys.workspace_id",
                    "workspaces.blocked_ips",
                    "workspaces.region",
                    "workspaces.require_totp",
                    "workspaces.workspace_id"
                ],
                "the lookup role reads ids, days, regions, ranges, roles and the TOTP policy: never a blob or a name"
            );
            // The two exceptions: authenticating a key returns its whole record (the trait's
            // answer), so api_key_for_auth reads every column of that one row; and the staff
            // realm reads one impersonation grant by its random id to build its principal.
            assert_eq!(
                others,
                [
                    "api_keys.actions",
                    "api_keys.created_at",
                    "api_keys.digest_key_id",
                    "api_keys.digest_mac",
                    "api_keys.id",
                    "api_keys.last_used_at",
                    "api_keys.name",
                    "api_keys.revoked_at",
                    "api_keys.sealed",
                    "api_keys.workspace_id",
                    "impersonation_grants.can_write",
                    "impersonation_grants.closed_at",
                    "impersonation_grants.expires_at",
                    "impersonation_grants.grant_id",
                    "impersonation_grants.opened_at",
                    "impersonation_grants.reason",
                    "impersonation_grants.staff_id",
                    "impersonation_grants.workspace_id"
                ]
            );
            assert_eq!(
                lookup_columns("UPDATE").await,
                ["api_keys.last_used_at"],
                "and writes only a key's last use (touch_api_key)"
            );
            for privilege in ["INSERT", "REFERENCES"] {
                assert_eq!(lookup_columns(privilege).await, Vec::<String>::new(), "{privilege}");
            }
            let lookup_tables: i64 = su
                .query_one(
                    "SELECT count(*) FROM information_schema.table_privileges WHERE grantee = $1",
                    &[&LOOKUP_ROLE],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(lookup_tables, 0, "and no whole table");
        })
        .await;
}

#[tokio::test]
async fn a_privileged_app_role_is_refused_by_migrate_and_connect() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let superuser_name = db
                .superuser_config()
                .get_user()
                .unwrap_or("postgres")
                .to_owned();
            let privileged = db.store_config().with_app_role(superuser_name.clone());
            assert_eq!(
                migrate(&privileged).await.unwrap_err().kind(),
                ErrorKind::Invalid
            );
            migrate(&db.store_config()).await.unwrap();
            let connect = PostgresStore::connect(&privileged.with_migrate_on_connect(false)).await;
            assert_eq!(
                connect.unwrap_err().kind(),
                ErrorKind::Invalid,
                "connect refuses a superuser app role"
            );
        })
        .await;
}

#[tokio::test]
async fn connect_refuses_an_unmigrated_database() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            // The app role exists cluster-wide once any database was migrated; make sure it does.
            let other = db.store_config();
            migrate(&other).await.unwrap();
            db.superuser()
                .await
                .batch_execute("DROP SCHEMA leadmaps CASCADE")
                .await
                .unwrap();
            let error = PostgresStore::connect(&db.store_config().with_migrate_on_connect(false))
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
        })
        .await;
}
