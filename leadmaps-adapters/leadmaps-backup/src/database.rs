//! The database a backup is taken from or restored into.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use leadmaps_store_postgres::PostgresConfig;

use crate::error::{Error, Result};
use crate::format::SourceKind;

/// A SQLite file or a Postgres database, as the reference server names them.
#[derive(Clone)]
#[non_exhaustive]
pub enum Database {
    /// A SQLite database file. A backup reads it while a store may be writing it; a restore
    /// writes a new file, or fills an empty one.
    Sqlite(PathBuf),
    /// A Postgres database, reached as its owner (the superuser connection the migrations use).
    Postgres(Box<PostgresDatabase>),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(pg) => f.debug_tuple("Postgres").field(pg).finish(),
        }
    }
}

impl Database {
    /// Which store it is.
    pub fn kind(&self) -> SourceKind {
        match self {
            Database::Sqlite(_) => SourceKind::Sqlite,
            Database::Postgres(_) => SourceKind::Postgres,
        }
    }

    /// `postgres://...` or `postgresql://...` (the owner URL), else a SQLite path, with or
    /// without `sqlite://`.
    ///
    /// # Errors
    /// [`Error::Config`] when a Postgres URL does not parse (the message never repeats it).
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(Box::new(PostgresDatabase::from_url(
                url,
            )?)));
        }
        Ok(Database::Sqlite(PathBuf::from(
            url.strip_prefix("sqlite://").unwrap_or(url),
        )))
    }
}

/// A Postgres database reached through its owner connection: a superuser, since only a role
/// that bypasses row-level security sees (and may restore) every workspace's rows.
///
/// `Debug` shows neither password nor host.
#[derive(Clone)]
pub struct PostgresDatabase {
    owner: tokio_postgres::Config,
    app_role: Option<String>,
}

impl fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDatabase")
            .field("dbname", &self.owner.get_dbname())
            .field("app_role", &self.app_role)
            .finish_non_exhaustive()
    }
}

impl PostgresDatabase {
    /// The database behind the owner connection `owner`.
    pub fn new(owner: tokio_postgres::Config) -> Self {
        Self {
            owner,
            app_role: None,
        }
    }

    /// Parses the owner connection URL.
    ///
    /// # Errors
    /// [`Error::Config`] when it does not parse; the message never repeats the URL.
    pub fn from_url(url: &str) -> Result<Self> {
        tokio_postgres::Config::from_str(url)
            .map(Self::new)
            .map_err(|_| Error::Config("the Postgres connection string does not parse".into()))
    }

    /// The app role a restore migrates the database for (default
    /// [`leadmaps_store_postgres::DEFAULT_APP_ROLE`]); see [`PostgresConfig::with_app_role`].
    #[must_use]
    pub fn with_app_role(mut self, role: impl Into<String>) -> Self {
        self.app_role = Some(role.into());
        self
    }

    /// The owner connection's configuration.
    pub fn owner(&self) -> &tokio_postgres::Config {
        &self.owner
    }

    /// The same server, owner and app role, another database (a scratch database to restore
    /// into, say).
    #[must_use]
    pub fn on_database(&self, dbname: &str) -> Self {
        let mut other = self.clone();
        other.owner.dbname(dbname);
        other
    }

    /// The store configuration: the owner connection and the app role (what a restore migrates
    /// with, and what the tenancy doctor checks).
    pub fn store_config(&self) -> PostgresConfig {
        let config = PostgresConfig::new(self.owner.clone());
        match &self.app_role {
            Some(role) => config.with_app_role(role.clone()),
            None => config,
        }
    }

    /// Connects as the owner, checks it bypasses row-level security, and returns the client;
    /// the connection is driven by a task that ends with the client.
    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client> {
        let mut config = self.owner.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("leadmaps-backup");
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(crate::error::pg("connecting to Postgres"))?;
        tokio::spawn(async move {
            // The connection's end, or its failure, surfaces as an error of the next query.
            let _ = connection.await;
        });
        let bypass: bool = client
            .query_one(
                "SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(crate::error::pg("checking the connection's role"))?
            .get(0);
        if !bypass {
            return Err(Error::Config(
                "backups and restores need the owner (superuser) connection: any other role sees only part of the rows".into(),
            ));
        }
        Ok(client)
    }
}
