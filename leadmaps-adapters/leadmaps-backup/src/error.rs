//! The errors of backups: what went wrong in fixed words, never a key, a row value, a password or
//! a credential.

use std::fmt;

use leadmaps_core::ErrorKind;

/// The message of [`Error::Corrupt`], the one answer to every failed verification.
pub const CORRUPT: &str = "backup is corrupt or was not made with these keys";

/// Why a backup, a listing or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not verify: a changed, truncated, extended or renamed object, a wrong
    /// KEK, or not a leadmaps backup at all. Deliberately one answer for all of them, and
    /// nothing was written to the destination.
    #[error("backup is corrupt or was not made with these keys")]
    Corrupt,
    /// The backup was made under a KEK this ring does not hold (its id is in the object's
    /// unencrypted header). Keep retired KEKs in the ring for as long as their backups are kept.
    #[error(
        "the backup was made under KEK {kek_id}, which is not in the key ring: add that KEK to restore it"
    )]
    MissingKey {
        /// The KEK id the header names.
        kek_id: u32,
    },
    /// The destination database holds rows: a restore only ever fills an empty database.
    #[error("the destination database is not empty: restore only into a new, empty database")]
    NotEmpty,
    /// The backup cannot be restored into this destination (another store kind, a schema this
    /// build does not know, a destination migrated past the backup's schema).
    #[error("backup cannot be restored here: {0}")]
    Incompatible(String),
    /// No backup of that name at the target.
    #[error("no backup named {0} at this target")]
    NotFound(String),
    /// The backup verified, but the destination did not take it as recorded (a row count or a
    /// table differs); the restore was rolled back.
    #[error("restore rolled back: {0}")]
    Mismatch(String),
    /// The target URL or the storage settings are unusable.
    #[error("backup target: {0}")]
    Config(String),
    /// The object store failed (network, credentials, bucket).
    #[error("backup storage failed: {what}")]
    Storage {
        /// What was being done.
        what: &'static str,
        /// The object store's error (it names paths and endpoints, never credentials).
        #[source]
        source: object_store::Error,
    },
    /// Local file I/O failed (a snapshot or restore file).
    #[error("backup file I/O failed: {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database failed; the store's error carries no value.
    #[error("database: {0}")]
    Store(#[from] leadmaps_core::Error),
}

impl Error {
    /// The closest [`ErrorKind`], for callers that map errors to statuses or exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Corrupt => ErrorKind::Decrypt,
            Error::MissingKey { .. } => ErrorKind::KeyConfig,
            Error::NotEmpty => ErrorKind::Conflict,
            Error::Incompatible(_) => ErrorKind::NotSupported,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Config(_) => ErrorKind::Invalid,
            Error::Mismatch(_) => ErrorKind::Internal,
            Error::Storage { source, .. } => match source {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                _ => ErrorKind::Unavailable,
            },
            Error::Io { .. } => ErrorKind::Internal,
            Error::Store(error) => error.kind(),
        }
    }

    pub(crate) fn storage(what: &'static str) -> impl FnOnce(object_store::Error) -> Self {
        move |source| Error::Storage { what, source }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Error::Io { what, source }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A database failure in fixed words: the SQLSTATE or SQLite code, never the server's message,
/// which can quote row values.
#[derive(Debug)]
pub(crate) struct DbError {
    what: &'static str,
    code: Option<String>,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// A Postgres error as [`Error::Store`]: connection failures are `Unavailable`, the rest
/// `Internal`, with the SQLSTATE only.
pub(crate) fn pg(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |error| {
        let code = error.code().map(|c| format!("SQLSTATE {}", c.code()));
        let cause = DbError { what, code };
        if error.code().is_none() {
            Error::Store(leadmaps_core::Error::unavailable(cause))
        } else {
            Error::Store(leadmaps_core::Error::backend(cause))
        }
    }
}

/// A SQLite error as [`Error::Store`], with SQLite's extended result code only.
pub(crate) fn sqlite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |error| {
        let code = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => {
                Some(format!("sqlite code {}", failure.extended_code))
            }
            _ => None,
        };
        Error::Store(leadmaps_core::Error::backend(DbError { what, code }))
    }
}
