#![doc = include_str!("../README.md")]

mod audit;
mod auth;
mod breach;
mod codec;
mod connection;
mod error;
mod events;
mod grants;
mod identity;
mod keys;
mod legal;
mod migrate;
mod salts;
mod secrets;
mod sites;
mod sql;
mod sso;
mod vulnerability;
mod workspaces;

use std::path::Path;

use leadmaps_core::Result;
use leadmaps_core::store::{Capabilities, Store};
use leadmaps_core::tenancy::Region;

pub use crate::migrate::SCHEMA_VERSION;

/// The SQLite store: every leadmaps store trait on one embedded database.
///
/// Cheap to clone; clones share the connection. Every call runs its SQL on tokio's blocking
/// pool, one at a time, behind a mutex, except `append_events` on a multi-threaded runtime,
/// which commits on the calling worker when the connection and SQLite's write lock are free
/// (in `block_in_place` when not). A file store checkpoints its WAL on a background thread with its own
/// connection, stopped when the last clone is dropped. SQLite has no row-level security, so the
/// tenancy rule is held here: each scoped statement filters on `scope.workspace()`, and each
/// table of customer data leads its primary key (or, for sites, an index) with `workspace_id`.
///
/// The store holds one region's events ([`Region::Eu`] unless set with
/// [`SqliteStore::with_region`]) and refuses batches of another.
#[derive(Clone)]
pub struct SqliteStore {
    conn: connection::Shared,
    region: Region,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it if missing, and migrates its schema to
    /// [`SCHEMA_VERSION`].
    ///
    /// The file is created with mode 0600 on Unix (it holds sealed secrets); an existing file is
    /// opened with the mode it has. The connection runs in WAL mode with `synchronous=FULL`, so a
    /// call that returned `Ok` survives a crash of the process or the machine; with foreign keys
    /// on, `secure_delete` on and a busy timeout of five seconds. A second connection on its own
    /// thread checkpoints the WAL, so commits do not.
    ///
    /// This blocks on file I/O: call it at start-up, or inside `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::NotSupported`](leadmaps_core::Error::NotSupported) if the database was written by
    /// a newer schema than this code knows; a backend error if the file cannot be created or
    /// opened, is not a SQLite database, or a migration fails (that migration then left nothing
    /// behind), or the checkpoint thread cannot start.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self {
            conn: connection::Shared::open(path.as_ref())?,
            region: Region::default(),
        })
    }

    /// A fresh private database in memory, gone with the last clone of the store. For tests and
    /// trying leadmaps out.
    ///
    /// # Errors
    /// A backend error if SQLite cannot allocate it.
    pub fn open_in_memory() -> Result<Self> {
        Ok(Self {
            conn: connection::Shared::open_in_memory()?,
            region: Region::default(),
        })
    }

    /// The same store holding `region`'s events: [`EventSink::append_events`] then refuses
    /// batches of any other region with [`Error::Invalid`](leadmaps_core::Error::Invalid),
    /// writing nothing. The default is [`Region::Eu`].
    ///
    /// The region is a property of this handle, not of the file: open a region's database with
    /// that region.
    ///
    /// [`EventSink::append_events`]: leadmaps_core::store::EventSink::append_events
    #[must_use]
    pub fn with_region(self, region: Region) -> Self {
        Self { region, ..self }
    }
}

impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        // No native row-level security, no bulk path: the defaults.
        Capabilities::default()
    }
}
