//! A small migrator: embedded `migrations/V{n}__{name}.sql` files applied in order, in one
//! transaction, under an advisory lock, on the owner connection.
//!
//! Every run first makes sure the roles exist (roles are cluster-wide, so this tolerates roles
//! made by another database's migrator, even one running at the same moment), then creates the
//! `leadmaps` schema and the history table `leadmaps.schema_migrations` (version, name, SHA-256
//! checksum of the file as embedded, applied_at). An applied migration whose checksum or name no
//! longer matches, or one this build does not know, stops the run: the database is not what this
//! build expects.
//!
//! Versions ascend but need not be contiguous: a version left out by one line of development (and
//! taken by another) is a gap. A database is migrated by version number, and a known version that
//! is missing below the highest applied one stops the run ([`MigrationError::OutOfOrder`]), so a
//! gap filled later is refused on a database that went past it rather than applied out of order.

use std::time::Duration;

use leadmaps_core::{Error, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;

use crate::config::{LOOKUP_ROLE, OWNER_ROLE, PostgresConfig};
use crate::error::{internal, pg};

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its version: from 1, ascending, possibly with gaps (see the module documentation).
    pub version: u32,
    /// The name part of the file name.
    pub name: &'static str,
    sql: &'static str,
}

impl Migration {
    /// The hex SHA-256 of the file as embedded (placeholders unreplaced).
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The SQL with role placeholders replaced by quoted identifiers.
    fn render(&self, app_role: &str) -> String {
        self.sql
            .replace("{{owner_role}}", &quote_ident(OWNER_ROLE))
            .replace("{{lookup_role}}", &quote_ident(LOOKUP_ROLE))
            .replace("{{app_role}}", &quote_ident(app_role))
    }
}

macro_rules! migrations {
    ($(($version:literal, $name:literal)),* $(,)?) => {
        /// Every migration of this build, ascending.
        pub const MIGRATIONS: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/V", $version, "__", $name, ".sql")),
        }),*];
    };
}

migrations!(
    (1, "tenancy"),
    (2, "sites_salts_events"),
    (3, "partitioned_events"),
    (4, "auth"),
    (5, "identity"),
    (6, "step_up"),
    (7, "lean_event_index"),
    (8, "auth_policy"),
    (9, "audit"),
    (10, "workspace_controls"),
    (11, "breach"),
    (12, "sso"),
    (13, "vulnerabilities"),
    (14, "retention_months"),
);

/// The schema version this build needs.
pub const LATEST_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The versions and names applied by this run, ascending; empty when the database was current.
    pub applied: Vec<(u32, &'static str)>,
    /// The schema version after the run.
    pub version: u32,
}

/// Why a migration run refused to go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// An applied migration's file changed since it was applied.
    #[error("migration V{version} was changed after it was applied (checksum differs)")]
    ChecksumMismatch {
        /// The version.
        version: u32,
    },
    /// An applied migration now has another name.
    #[error("migration V{version} was renamed after it was applied")]
    NameMismatch {
        /// The version.
        version: u32,
    },
    /// The database has a migration this build does not know: it was migrated by a newer build.
    #[error("the database has migration V{version}, which this build does not know")]
    UnknownVersion {
        /// The version.
        version: u32,
    },
    /// A migration this build knows is missing below one that was applied.
    #[error("migration V{version} is missing below an applied one")]
    OutOfOrder {
        /// The version.
        version: u32,
    },
}

/// Key of the advisory lock that serialises migrators of one database ("leadmaps" in ASCII).
const LOCK_KEY: i64 = 0x6c65_6164_6d61_7073;
/// Attempts when another database's migrator races this one on the cluster-wide roles.
const ATTEMPTS: u32 = 4;

/// Runs the pending migrations of this build on `config`'s owner connection.
///
/// Two servers starting together both succeed and the migrations run once: the run holds a
/// transaction-level advisory lock, and whoever gets it second finds nothing left to do.
///
/// # Errors
/// [`Error::Invalid`] for a bad app role name, an owner connection that is not a superuser, or an
/// app role that is a superuser, bypasses row-level security or is a member of the owner role;
/// [`Error::Backend`] with a [`MigrationError`] when the history does not match this build (nothing
/// is applied then); [`Error::Unavailable`] when the database cannot be reached.
pub async fn migrate(config: &PostgresConfig) -> Result<MigrationReport> {
    migrate_to(config, LATEST_VERSION).await
}

/// Runs the pending migrations up to and including version `target`, as [`migrate`] does: for a
/// staged upgrade, or to test an upgrade from an older schema. A store refuses to serve a
/// database below [`LATEST_VERSION`].
///
/// # Errors
/// As [`migrate`]; [`Error::Invalid`] for a `target` that is not a version of this build.
pub async fn migrate_to(config: &PostgresConfig, target: u32) -> Result<MigrationReport> {
    if !MIGRATIONS.iter().any(|m| m.version == target) {
        return Err(Error::invalid("no such migration version in this build"));
    }
    let app_role = config.validated_app_role()?;
    let verifier = config
        .app_password()
        .map(|p| postgres_protocol::password::scram_sha_256(p.as_bytes()));
    let (mut client, connection) = config
        .owner_config()
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(pg)?;
    let driver = tokio::spawn(connection);
    let mut attempt = 1;
    let result = loop {
        match migrate_once(&mut client, app_role, verifier.as_deref(), target).await {
            Err(Failure::Retry(_)) if attempt < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(Failure::Retry(error)) => break Err(pg(error)),
            Err(Failure::Fatal(error)) => break Err(error),
            Ok(report) => break Ok(report),
        }
    };
    drop(client);
    driver.abort();
    result
}

enum Failure {
    /// A race with another database's migrator over the cluster-wide roles.
    Retry(tokio_postgres::Error),
    Fatal(Error),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        let racy = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNIQUE_VIOLATION,
            // "tuple concurrently updated" on a role row.
            SqlState::INTERNAL_ERROR,
        ];
        match error.code() {
            Some(code) if racy.contains(code) => Failure::Retry(error),
            _ => Failure::Fatal(pg(error)),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Fatal(error)
    }
}

async fn migrate_once(
    client: &mut tokio_postgres::Client,
    app_role: &str,
    verifier: Option<&str>,
    target: u32,
) -> Result<MigrationReport, Failure> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    let superuser: bool = tx
        .query_one(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if !superuser {
        return Err(
            Error::invalid("migrations need a superuser connection (they create roles)").into(),
        );
    }
    tx.batch_execute(&bootstrap_roles(app_role)).await?;
    check_app_role(&tx, app_role).await?;
    if let Some(verifier) = verifier {
        // The verifier travels as a bind parameter and is quoted by the server (%L).
        tx.execute(
            "SELECT set_config('leadmaps.migrate_app_verifier', $1, true)",
            &[&verifier],
        )
        .await?;
        tx.batch_execute(&format!(
            "DO $set_password$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', {}, \
             current_setting('leadmaps.migrate_app_verifier')); END $set_password$; \
             SELECT set_config('leadmaps.migrate_app_verifier', '', true);",
            quote_literal(app_role)
        ))
        .await?;
    }
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS leadmaps AUTHORIZATION {owner};
         SET LOCAL ROLE {owner};
         CREATE TABLE IF NOT EXISTS leadmaps.schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
         );",
        owner = quote_ident(OWNER_ROLE)
    ))
    .await?;

    let mut applied = Vec::new();
    for row in tx
        .query(
            "SELECT version, name, checksum FROM leadmaps.schema_migrations ORDER BY version",
            &[],
        )
        .await?
    {
        let (version, name, checksum): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
        let version = u32::try_from(version)
            .map_err(|_| internal("negative migration version in the history"))?;
        let known = MIGRATIONS
            .iter()
            .find(|m| m.version == version)
            .ok_or(MigrationError::UnknownVersion { version })
            .map_err(Error::backend)?;
        if known.checksum() != checksum {
            return Err(Error::backend(MigrationError::ChecksumMismatch { version }).into());
        }
        if known.name != name {
            return Err(Error::backend(MigrationError::NameMismatch { version }).into());
        }
        applied.push(version);
    }
    let highest = applied.last().copied().unwrap_or(0);
    let mut report = MigrationReport {
        applied: Vec::new(),
        version: highest,
    };
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version <= target && !applied.contains(&m.version))
    {
        if migration.version < highest {
            return Err(Error::backend(MigrationError::OutOfOrder {
                version: migration.version,
            })
            .into());
        }
        tx.batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(OWNER_ROLE)))
            .await?;
        tx.batch_execute(&migration.render(app_role)).await?;
        tx.batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(OWNER_ROLE)))
            .await?;
        let version = i32::try_from(migration.version)
            .map_err(|_| internal("migration version out of range"))?;
        tx.execute(
            "INSERT INTO leadmaps.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&version, &migration.name, &migration.checksum()],
        )
        .await?;
        report.applied.push((migration.version, migration.name));
        report.version = migration.version;
    }
    tx.batch_execute("RESET ROLE").await?;
    let granted: bool = tx
        .query_one(
            "SELECT has_table_privilege($1, 'leadmaps.workspaces', 'SELECT')",
            &[&app_role],
        )
        .await?
        .get(0);
    if !granted {
        return Err(Error::invalid(
            "the schema was migrated for another app role: configure that role, or grant this one its privileges",
        )
        .into());
    }
    tx.commit().await?;
    Ok(report)
}

/// Creates the three roles unless they exist. A concurrent creation by another database's
/// migrator surfaces as duplicate_object or unique_violation and is taken as success.
fn bootstrap_roles(app_role: &str) -> String {
    let create = |role: &str, attributes: &str| {
        format!(
            "IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {literal}) THEN
                 BEGIN
                     CREATE ROLE {ident} {attributes};
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END;
             END IF;",
            literal = quote_literal(role),
            ident = quote_ident(role),
        )
    };
    format!(
        "DO $bootstrap$ BEGIN\n{}\n{}\n{}\nEND $bootstrap$;",
        create(
            OWNER_ROLE,
            "NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION"
        ),
        create(
            LOOKUP_ROLE,
            "NOLOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT"
        ),
        create(
            app_role,
            "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION"
        ),
    )
}

/// Refuses an app role that would walk past the second gate. It is not altered: demoting a role
/// someone else relies on is not the migrator's call.
async fn check_app_role(
    tx: &tokio_postgres::Transaction<'_>,
    app_role: &str,
) -> Result<(), Failure> {
    let row = tx
        .query_one(
            "SELECT r.rolsuper, r.rolbypassrls, pg_has_role(r.oid, $2::text, 'MEMBER'), pg_has_role(r.oid, $3::text, 'MEMBER')
             FROM pg_catalog.pg_roles AS r WHERE r.rolname = $1",
            &[&app_role, &OWNER_ROLE, &LOOKUP_ROLE],
        )
        .await?;
    let (superuser, bypass, owner, lookup): (bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if superuser || bypass || owner || lookup {
        return Err(Error::invalid(
            "the app role must not be a superuser, bypass row-level security, or be a member of the owner or lookup role",
        )
        .into());
    }
    Ok(())
}

/// Quotes an identifier. Role names are validated to plain identifiers before they get here;
/// quoting anyway keeps a mistake from becoming an injection.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_match_the_files_on_disk() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort_by_key(|name| name[1..name.find("__").unwrap()].parse::<u32>().unwrap());
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("V{}__{}.sql", m.version, m.name))
            .collect();
        assert_eq!(
            files, embedded,
            "every file under migrations/ is embedded, in order"
        );
        assert!(MIGRATIONS[0].version >= 1, "versions start at 1");
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "versions ascend (gaps allowed): V{} then V{}",
                pair[0].version,
                pair[1].version
            );
        }
        assert_eq!(LATEST_VERSION, MIGRATIONS[MIGRATIONS.len() - 1].version);
        assert!(
            i32::try_from(LATEST_VERSION).is_ok(),
            "the history stores versions as integer"
        );
    }

    #[test]
    fn rendering_replaces_every_placeholder() {
        for migration in MIGRATIONS {
            let sql = migration.render("some_app");
            assert!(
                !sql.contains("{{"),
                "V{} has an unknown placeholder",
                migration.version
            );
            assert!(sql.contains("\"some_app\""));
        }
    }

    #[test]
    fn checksums_are_sha256_hex_of_the_embedded_text() {
        let migration = Migration {
            version: 9,
            name: "x",
            sql: "abc",
        };
        assert_eq!(
            migration.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn no_policy_is_always_true() {
        for migration in MIGRATIONS {
            let sql = migration.sql.to_ascii_lowercase();
            assert!(
                !sql.contains("using (true)") && !sql.contains("check (true)"),
                "V{}",
                migration.version
            );
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
