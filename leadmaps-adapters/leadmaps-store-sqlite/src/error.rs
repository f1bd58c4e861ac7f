//! From rusqlite errors to [`leadmaps_core::Error`] kinds, with every value stripped.
//!
//! rusqlite errors can carry values: a column's integer (`IntegralValueOutOfRange`), the SQL text
//! (`SqlInputError`), a conversion error that quotes its input. None of that may reach a log line,
//! so each is rebuilt here as a [`SqliteError`] that keeps only what identifies the failure:
//! SQLite's result codes, its own message (which names schema objects, never bound values), and
//! the column index.

use std::fmt;

use leadmaps_core::Error;
use rusqlite::ErrorCode;
use rusqlite::ffi;

/// A SQLite failure, safe to log: no SQL parameter, no row value.
#[derive(Debug)]
pub(crate) struct SqliteError {
    /// SQLite's extended result code, when the failure came from SQLite itself.
    code: Option<i32>,
    /// What failed, without values.
    message: String,
}

impl fmt::Display for SqliteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "sqlite error {code}: {}", self.message),
            None => write!(f, "sqlite: {}", self.message),
        }
    }
}

impl std::error::Error for SqliteError {}

/// A row holds a value this code never writes: the file was changed by something else.
#[derive(Debug)]
pub(crate) struct Corrupt(pub(crate) &'static str);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored {} is not one this code writes", self.0)
    }
}

impl std::error::Error for Corrupt {}

/// Maps a rusqlite error; a unique or primary-key violation becomes `Conflict(conflict)`.
pub(crate) fn classify(error: rusqlite::Error, conflict: &'static str) -> Error {
    if let rusqlite::Error::SqliteFailure(failure, _) = &error {
        match (failure.code, failure.extended_code) {
            (ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked, _) => {
                return Error::unavailable(sanitize(error));
            }
            (
                ErrorCode::ConstraintViolation,
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
            ) => {
                return Error::Conflict(conflict);
            }
            // Only workspace_id references another table: the workspace does not exist.
            (ErrorCode::ConstraintViolation, ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                return Error::NotFound;
            }
            _ => {}
        }
    }
    Error::backend(sanitize(error))
}

/// Maps a rusqlite error where no conflict is expected.
pub(crate) fn db(error: rusqlite::Error) -> Error {
    classify(error, "row exists")
}

/// The value-free form of a rusqlite error.
fn sanitize(error: rusqlite::Error) -> SqliteError {
    use rusqlite::Error as E;
    let (code, message) = match error {
        // SQLite's own messages name tables, columns and constraints, never bound values.
        E::SqliteFailure(failure, message) => (
            Some(failure.extended_code),
            message.unwrap_or_else(|| failure.to_string()),
        ),
        // The SQL text is dropped: only SQLite's message and the offset stay.
        E::SqlInputError {
            error, msg, offset, ..
        } => (
            Some(error.extended_code),
            format!("{msg} (at byte {offset} of the statement)"),
        ),
        E::FromSqlConversionFailure(column, kind, cause) => {
            let why = match cause.downcast_ref::<Corrupt>() {
                Some(corrupt) => corrupt.to_string(),
                None => "conversion failed".to_owned(),
            };
            (None, format!("column {column} ({kind}): {why}"))
        }
        E::IntegralValueOutOfRange(column, _) => {
            (None, format!("column {column}: integer out of range"))
        }
        E::Utf8Error(column, _) => (None, format!("column {column}: text is not UTF-8")),
        E::InvalidColumnType(column, _, kind) => {
            (None, format!("column {column}: unexpected type {kind}"))
        }
        E::QueryReturnedNoRows => (None, "query returned no rows".to_owned()),
        E::QueryReturnedMoreThanOneRow => (None, "query returned more than one row".to_owned()),
        E::InvalidParameterCount(given, expected) => (
            None,
            format!("{given} parameters bound, {expected} expected"),
        ),
        E::ToSqlConversionFailure(_) => (None, "a parameter could not be converted".to_owned()),
        E::InvalidPath(_) => (None, "the database path is not valid for SQLite".to_owned()),
        _ => (None, "library error".to_owned()),
    };
    SqliteError { code, message }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use leadmaps_core::ErrorKind;
    use rusqlite::types::Type;

    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some("boom".into()))
    }

    #[test]
    fn sqlite_codes_map_to_kinds() {
        assert_eq!(
            classify(failure(ffi::SQLITE_CONSTRAINT_UNIQUE), "x").kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(failure(ffi::SQLITE_CONSTRAINT_PRIMARYKEY), "x").kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(failure(ffi::SQLITE_CONSTRAINT_FOREIGNKEY), "x").kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(failure(ffi::SQLITE_CONSTRAINT_CHECK), "x").kind(),
            ErrorKind::Internal
        );
        assert_eq!(db(failure(ffi::SQLITE_BUSY)).kind(), ErrorKind::Unavailable);
        assert_eq!(
            db(failure(ffi::SQLITE_BUSY_SNAPSHOT)).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            db(failure(ffi::SQLITE_LOCKED)).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(db(failure(ffi::SQLITE_IOERR)).kind(), ErrorKind::Internal);
        assert!(matches!(
            classify(failure(ffi::SQLITE_CONSTRAINT_UNIQUE), "named"),
            Error::Conflict("named")
        ));
    }

    fn chain(error: &Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(" / ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    #[test]
    fn messages_carry_no_values() {
        let secret = "s3cr3t-value";
        let errors = [
            rusqlite::Error::IntegralValueOutOfRange(2, 987_654_321),
            rusqlite::Error::FromSqlConversionFailure(1, Type::Blob, secret.into()),
            rusqlite::Error::ToSqlConversionFailure(secret.into()),
            rusqlite::Error::InvalidColumnName(secret.into()),
            rusqlite::Error::SqlInputError {
                error: ffi::Error::new(ffi::SQLITE_ERROR),
                msg: "near \"x\": syntax error".into(),
                sql: format!("SELECT '{secret}' x"),
                offset: 3,
            },
        ];
        for error in errors {
            let text = chain(&db(error));
            assert!(
                !text.contains(secret) && !text.contains("987654321"),
                "{text}"
            );
        }
    }

    #[test]
    fn corrupt_rows_say_what_is_wrong() {
        let error =
            rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(Corrupt("region")));
        assert!(chain(&db(error)).contains("stored region is not one this code writes"));
    }
}
