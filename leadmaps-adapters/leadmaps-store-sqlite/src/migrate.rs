//! Schema migrations: SQL files embedded in the binary, applied in order, one transaction each,
//! with the schema version kept in `PRAGMA user_version`.
//!
//! Migrations are append-only: a released file never changes, a change is a new file. A database
//! whose version is newer than the last migration this code knows was written by newer code and
//! is refused rather than guessed at.

use leadmaps_core::{Error, Result};
use rusqlite::{Connection, TransactionBehavior};

use crate::error::db;

/// The migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_ingest.sql"),
    include_str!("../migrations/0003_auth.sql"),
    include_str!("../migrations/0004_auth_policy.sql"),
    include_str!("../migrations/0005_audit.sql"),
    include_str!("../migrations/0006_workspace_controls.sql"),
    include_str!("../migrations/0007_breach.sql"),
    include_str!("../migrations/0008_sso.sql"),
    include_str!("../migrations/0009_vulnerabilities.sql"),
];

/// The schema version this code writes and reads: the number of migrations.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const TOO_NEW: &str =
    "the database schema is newer than this leadmaps-store-sqlite; run a release that knows it";
const UNKNOWN: &str = "the database has a negative user_version: not a leadmaps database";

fn user_version(conn: &Connection) -> Result<u32> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db)?;
    let version = u32::try_from(version).map_err(|_| Error::NotSupported(UNKNOWN))?;
    if version > SCHEMA_VERSION {
        return Err(Error::NotSupported(TOO_NEW));
    }
    Ok(version)
}

/// Brings the schema to [`SCHEMA_VERSION`].
///
/// Each step runs in an IMMEDIATE transaction (the write lock taken up front) and re-reads the
/// version inside it, so two processes opening the same file at once apply each step once.
///
/// # Errors
/// [`Error::NotSupported`] for a database newer than this code; a backend error if a step fails,
/// in which case that step left nothing behind.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let start = user_version(conn)?;
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(start as usize) {
        let target = step as u32 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        if user_version(&tx)? >= target {
            continue; // Another connection applied it first; dropping `tx` rolls back nothing.
        }
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", target).map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use leadmaps_core::ErrorKind;

    use super::*;

    fn fresh() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    #[test]
    fn migrating_sets_the_version_and_is_idempotent() {
        let mut conn = fresh();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn newer_and_foreign_versions_are_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert_eq!(
            migrate(&mut conn).unwrap_err().kind(),
            ErrorKind::NotSupported
        );
        conn.pragma_update(None, "user_version", -1).unwrap();
        assert_eq!(
            migrate(&mut conn).unwrap_err().kind(),
            ErrorKind::NotSupported
        );
    }

    #[test]
    fn a_failed_step_leaves_nothing_behind() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A table the first migration wants to create already exists: the step fails midway.
        conn.execute_batch("CREATE TABLE key_checks (x INTEGER)")
            .unwrap();
        assert!(migrate(&mut conn).is_err());
        assert_eq!(user_version(&conn).unwrap(), 0);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'workspaces'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            tables, 0,
            "the tables created before the failure were rolled back"
        );
    }

    /// SQLite has no row-level security: every customer-data table leads its primary key, or
    /// failing that an index, with `workspace_id`, so every scoped lookup is a range of a key.
    /// Instance-wide tables are listed here by name.
    #[test]
    fn every_customer_table_is_keyed_by_workspace_first() {
        const INSTANCE_WIDE: &[&str] = &[
            "key_checks",
            // The identity realm: people and their credentials, not one workspace's data.
            "totp_factors",
            "magic_links",
            "sessions",
            "step_up_grants",
            "users",
            "recovery_codes",
            "staff",
            // Breach incidents, their register and deliveries: instance data, gated by
            // `BreachScope`.
            "breach_incidents",
            "breach_register",
            "breach_deliveries",
            // Vulnerability reports: instance data, gated by `BreachScope` like incidents.
            "vulnerability_reports",
        ];
        const KEYED_BY_INDEX: &[&str] = &["sites", "api_keys"];
        let conn = fresh();
        let mut tables = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .unwrap();
        let tables: Vec<String> = tables
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(tables.len() >= 10, "{tables:?}");
        for table in tables
            .iter()
            .filter(|t| !INSTANCE_WIDE.contains(&t.as_str()))
        {
            let first_key: String = conn
                .query_row(
                    "SELECT name FROM pragma_table_info(?1) WHERE pk = 1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            if first_key == "workspace_id" {
                continue;
            }
            assert!(
                KEYED_BY_INDEX.contains(&table.as_str()),
                "table {table} is keyed by {first_key}, not workspace_id"
            );
            let led_by_workspace: i64 = conn
                .query_row(
                    "SELECT count(*) FROM pragma_index_list(?1) AS list, \
                     pragma_index_info(list.name) AS info \
                     WHERE info.seqno = 0 AND info.name = 'workspace_id'",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(
                led_by_workspace > 0,
                "table {table} has no index led by workspace_id"
            );
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO workspaces (workspace_id, name, region, created_at) \
             VALUES (zeroblob(16), 'Old', 'eu', 0)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let name: String = conn
            .query_row("SELECT name FROM workspaces", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, "Old");
        let events: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events, 0);
    }

    /// Version 4 adds policy, confirmation and try-count columns to rows that exist: workspaces
    /// keep no TOTP requirement, sessions start with no tries, and a TOTP factor that already
    /// accepted a code stays a second factor while one that never did is pending.
    #[test]
    fn a_version_3_database_keeps_its_factors_in_use() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO workspaces (workspace_id, name, region, created_at) \
             VALUES (zeroblob(16), 'Old', 'eu', 0); \
             INSERT INTO totp_factors (subject_kind, subject_id, sealed_seed, last_step, failures) \
             VALUES ('user', zeroblob(16), x'01', 7, 0), ('staff', zeroblob(16), x'02', NULL, 0); \
             INSERT INTO sessions (selector, digest_kek, digest_mac, subject_kind, subject_id, \
             second_factor, created_at, last_seen_at) \
             VALUES ('s', 1, zeroblob(32), 'user', zeroblob(16), 0, 0, 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let require_totp: i64 = conn
            .query_row("SELECT require_totp FROM workspaces", [], |r| r.get(0))
            .unwrap();
        assert_eq!(require_totp, 0);
        let confirmed: Vec<(String, i64)> = conn
            .prepare("SELECT subject_kind, confirmed FROM totp_factors ORDER BY subject_kind")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(confirmed, [("staff".to_owned(), 0), ("user".to_owned(), 1)]);
        let tries: i64 = conn
            .query_row("SELECT challenge_failures FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tries, 0);
    }
}
