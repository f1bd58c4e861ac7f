//! Maps driver and pool errors to [`leadmaps_core::Error`] without carrying values along.
//!
//! A server error's message and DETAIL can quote the values of a statement (`Key (workspace_id,
//! name)=(..., license) already exists`, `invalid input syntax for type uuid: "..."`), and a
//! connection error can name a host. None of that may reach an error message, so the driver's
//! error is never kept: it is replaced by a [`PostgresError`] holding a fixed description, the
//! SQLSTATE and, for constraint violations, the names of the table and constraint.

use std::fmt;

use deadpool_postgres::PoolError;
use leadmaps_core::Error;
use leadmaps_core::tenancy::Denied;
use tokio_postgres::error::SqlState;

/// The cause behind an [`Error::Backend`] or [`Error::Unavailable`] from this store: what failed,
/// in fixed words, never a value, a host or a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresError {
    what: &'static str,
    code: Option<String>,
    constraint: Option<(String, String)>,
}

impl PostgresError {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            code: None,
            constraint: None,
        }
    }

    /// What failed.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The SQLSTATE the server answered with, if the server answered.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)?;
        if let Some(code) = &self.code {
            write!(f, " (SQLSTATE {code})")?;
        }
        if let Some((table, constraint)) = &self.constraint {
            write!(f, " on {table}, constraint {constraint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PostgresError {}

/// A backend (internal) error with a fixed description.
pub(crate) fn internal(what: &'static str) -> Error {
    Error::backend(PostgresError::new(what))
}

/// An unavailable error with a fixed description.
pub(crate) fn unavailable(what: &'static str) -> Error {
    Error::unavailable(PostgresError::new(what))
}

/// Maps a driver error; a unique violation becomes [`Error::Conflict`] with `conflict`.
pub(crate) fn pg_conflict(error: tokio_postgres::Error, conflict: &'static str) -> Error {
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        Error::Conflict(conflict)
    } else {
        pg(error)
    }
}

/// Maps a driver error to the kind a caller can act on.
pub(crate) fn pg(error: tokio_postgres::Error) -> Error {
    let Some(db) = error.as_db_error() else {
        return without_server_answer(&error);
    };
    let code = db.code();
    let sanitized = |what| PostgresError {
        what,
        code: Some(code.code().to_owned()),
        constraint: db
            .table()
            .zip(db.constraint())
            .map(|(t, c)| (t.to_owned(), c.to_owned())),
    };
    let class = &code.code()[..2];
    if *code == SqlState::UNIQUE_VIOLATION {
        Error::Conflict("already exists")
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        Error::Conflict("concurrent change, retry")
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        // The database's own gate refused (a row-level security check or a missing grant).
        Error::Denied(Denied::NotAMember)
    } else if class == "22"
        || *code == SqlState::NOT_NULL_VIOLATION
        || *code == SqlState::CHECK_VIOLATION
    {
        Error::invalid("the database rejected a value")
    } else if class == "08" || class == "53" || class == "57" {
        // Connection exceptions, insufficient resources, operator intervention (shutdown,
        // statement timeout, cancel).
        Error::unavailable(sanitized("the database is unavailable"))
    } else if *code == SqlState::UNDEFINED_TABLE
        || *code == SqlState::UNDEFINED_FUNCTION
        || *code == SqlState::INVALID_SCHEMA_NAME
        || *code == SqlState::UNDEFINED_OBJECT
    {
        Error::backend(sanitized(
            "a database object is missing: has the database been migrated?",
        ))
    } else {
        Error::backend(sanitized("database error"))
    }
}

fn without_server_answer(error: &tokio_postgres::Error) -> Error {
    // Only the driver's own words are inspected here (never a server message), and none are kept.
    let io = std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>());
    let text = error.to_string();
    if error.is_closed()
        || io
        || text.starts_with("error connecting")
        || text.starts_with("timeout")
    {
        unavailable("cannot reach the database")
    } else if text.starts_with("authentication") {
        internal("the database refused the credentials")
    } else if text.starts_with("error deserializing") || text.starts_with("error serializing") {
        internal("a value did not convert between Rust and SQL")
    } else {
        internal("database client error")
    }
}

/// Maps a pool checkout error.
pub(crate) fn pool(error: PoolError) -> Error {
    match error {
        PoolError::Backend(error) => pg(error),
        PoolError::Timeout(_) => unavailable("timed out waiting for a database connection"),
        PoolError::Closed => unavailable("the connection pool is closed"),
        _ => internal("connection pool error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_only_fixed_words_and_codes() {
        let error = PostgresError {
            what: "database error",
            code: Some("23514".into()),
            constraint: Some(("secrets".into(), "secrets_name_check".into())),
        };
        assert_eq!(
            error.to_string(),
            "database error (SQLSTATE 23514) on secrets, constraint secrets_name_check"
        );
        assert_eq!(PostgresError::new("x").to_string(), "x");
    }
}
