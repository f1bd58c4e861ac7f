//! Where the database is and which roles to use.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use leadmaps_core::tenancy::Region;
use leadmaps_core::{Error, Result};

/// The role that owns the schema and every table in it. NOLOGIN: nobody connects as it; the
/// migrator switches to it with `SET ROLE`.
pub const OWNER_ROLE: &str = "leadmaps_owner";
/// The role that owns the few cross-workspace lookup functions (key rotation, salt expiry, the
/// collector's site routing). NOLOGIN and BYPASSRLS, with SELECT on id, routing and date columns
/// only, never a blob; reachable only through those functions.
pub const LOOKUP_ROLE: &str = "leadmaps_lookup";
/// The login role the store's pool uses unless configured otherwise.
pub const DEFAULT_APP_ROLE: &str = "leadmaps_app";
/// Connections in the pool unless configured otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach the database: an owner connection for migrations, and the app role the store's
/// pool logs in as, on the same host and database.
///
/// `Debug` shows neither password nor host.
#[derive(Clone)]
pub struct PostgresConfig {
    owner: tokio_postgres::Config,
    app_role: String,
    app_password: Option<String>,
    pool_size: usize,
    wait_timeout: Duration,
    migrate_on_connect: bool,
    region: Region,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("app_role", &self.app_role)
            .field(
                "app_password",
                &self.app_password.as_ref().map(|_| "<redacted>"),
            )
            .field("pool_size", &self.pool_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("migrate_on_connect", &self.migrate_on_connect)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// A configuration whose owner connection is `owner`: a superuser (migrations create roles,
    /// one of them BYPASSRLS). The app connection uses the same hosts, ports, database and
    /// options, with the app role's name and password instead.
    pub fn new(owner: tokio_postgres::Config) -> Self {
        Self {
            owner,
            app_role: DEFAULT_APP_ROLE.to_owned(),
            app_password: None,
            pool_size: DEFAULT_POOL_SIZE,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            migrate_on_connect: true,
            region: Region::default(),
        }
    }

    /// Parses the owner connection from a URL (`postgres://user:password@host:port/db`) or a
    /// `key=value` string; see [`PostgresConfig::new`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when it does not parse. The message never repeats the input, which may
    /// hold a password.
    pub fn from_url(url: &str) -> Result<Self> {
        tokio_postgres::Config::from_str(url)
            .map(Self::new)
            .map_err(|_| Error::invalid("the Postgres connection string does not parse"))
    }

    /// The login role for the store's pool (default [`DEFAULT_APP_ROLE`]): lower-case letters,
    /// digits and `_`, at most 63 bytes. The migrator creates it when missing and grants it what
    /// the store needs; it refuses a role that is a superuser, bypasses row-level security or is a
    /// member of [`OWNER_ROLE`].
    pub fn with_app_role(mut self, role: impl Into<String>) -> Self {
        self.app_role = role.into();
        self
    }

    /// The app role's password. The migrator sets it (as a SCRAM-SHA-256 verifier computed here,
    /// so the password itself never reaches the server's statement text) and the pool logs in
    /// with it. Without one the role has no password, which suits trust or certificate
    /// authentication only.
    pub fn with_app_password(mut self, password: impl Into<String>) -> Self {
        self.app_password = Some(password.into());
        self
    }

    /// Connections in the store's pool (default [`DEFAULT_POOL_SIZE`], at least 1).
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long a call waits for a free pooled connection before failing with
    /// [`Error::Unavailable`] (default 30 s).
    pub fn with_wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Whether [`PostgresStore::connect`](crate::PostgresStore::connect) runs the migrations
    /// first (default `true`). Turn it off when migrations run as a separate deployment step.
    pub fn with_migrate_on_connect(mut self, migrate: bool) -> Self {
        self.migrate_on_connect = migrate;
        self
    }

    /// The region this database holds (default [`Region::Eu`]). Each region has its own
    /// database; the store refuses event batches of another region.
    pub fn with_region(mut self, region: Region) -> Self {
        self.region = region;
        self
    }

    /// The region this database holds.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The app role's name.
    pub fn app_role(&self) -> &str {
        &self.app_role
    }

    /// The pool size.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Whether connecting migrates first.
    pub fn migrate_on_connect(&self) -> bool {
        self.migrate_on_connect
    }

    pub(crate) fn wait_timeout(&self) -> Duration {
        self.wait_timeout
    }

    pub(crate) fn app_password(&self) -> Option<&str> {
        self.app_password.as_deref()
    }

    /// The owner connection, with defaults for what it leaves unset.
    pub(crate) fn owner_config(&self) -> tokio_postgres::Config {
        let mut config = self.owner.clone();
        with_defaults(&mut config, "leadmaps-migrate");
        config
    }

    /// The app connection: the owner's endpoint and options, the app role's credentials. Built
    /// field by field so the owner's password is never offered for the app role.
    pub(crate) fn app_config(&self) -> tokio_postgres::Config {
        let owner = &self.owner;
        let mut config = tokio_postgres::Config::new();
        config.user(self.app_role.as_str());
        if let Some(password) = &self.app_password {
            config.password(password.as_str());
        }
        for host in owner.get_hosts() {
            match host {
                tokio_postgres::config::Host::Tcp(name) => config.host(name.as_str()),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => config.host_path(path),
            };
        }
        for addr in owner.get_hostaddrs() {
            config.hostaddr(*addr);
        }
        for port in owner.get_ports() {
            config.port(*port);
        }
        if let Some(dbname) = owner.get_dbname() {
            config.dbname(dbname);
        }
        if let Some(options) = owner.get_options() {
            config.options(options);
        }
        if let Some(name) = owner.get_application_name() {
            config.application_name(name);
        }
        if let Some(timeout) = owner.get_connect_timeout() {
            config.connect_timeout(*timeout);
        }
        if let Some(timeout) = owner.get_tcp_user_timeout() {
            config.tcp_user_timeout(*timeout);
        }
        config
            .ssl_mode(owner.get_ssl_mode())
            .ssl_negotiation(owner.get_ssl_negotiation())
            .keepalives(owner.get_keepalives())
            .keepalives_idle(owner.get_keepalives_idle())
            .target_session_attrs(owner.get_target_session_attrs())
            .channel_binding(owner.get_channel_binding())
            .load_balance_hosts(owner.get_load_balance_hosts());
        if let Some(interval) = owner.get_keepalives_interval() {
            config.keepalives_interval(interval);
        }
        if let Some(retries) = owner.get_keepalives_retries() {
            config.keepalives_retries(retries);
        }
        with_defaults(&mut config, "leadmaps");
        config
    }

    /// Checks the app role's name.
    pub(crate) fn validated_app_role(&self) -> Result<&str> {
        let role = self.app_role.as_str();
        let well_formed = !role.is_empty()
            && role.len() <= 63
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !role.as_bytes()[0].is_ascii_digit()
            && !role.starts_with("pg_");
        if !well_formed {
            return Err(Error::invalid(
                "the app role name must be 1 to 63 lower-case letters, digits or '_', not starting with a digit or pg_",
            ));
        }
        if role == OWNER_ROLE || role == LOOKUP_ROLE {
            return Err(Error::invalid(
                "the app role must not be the owner or lookup role",
            ));
        }
        Ok(role)
    }
}

fn with_defaults(config: &mut tokio_postgres::Config, application_name: &str) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_connection_takes_the_endpoint_but_not_the_owner_credentials() {
        let config = PostgresConfig::from_url(
            "postgres://boss:hunter2@db.internal:6543/analytics?options=-c%20x%3D1",
        )
        .unwrap()
        .with_app_role("app_role_1");
        let app = config.app_config();
        assert_eq!(app.get_user(), Some("app_role_1"));
        assert_eq!(app.get_password(), None);
        assert_eq!(app.get_ports(), [6543]);
        assert_eq!(app.get_dbname(), Some("analytics"));
        assert_eq!(app.get_options(), Some("-c x=1"));
        let with_password = config.with_app_password("s3cret").app_config();
        assert_eq!(with_password.get_password(), Some(b"s3cret".as_slice()));
    }

    #[test]
    fn debug_and_parse_errors_reveal_no_secret() {
        let config = PostgresConfig::from_url("postgres://boss:hunter2@db.internal/analytics")
            .unwrap()
            .with_app_password("s3cret");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2")
                && !debug.contains("s3cret")
                && !debug.contains("db.internal"),
            "{debug}"
        );
        let error =
            PostgresConfig::from_url("postgres://boss:hunter2@db.internal:notaport/x").unwrap_err();
        assert!(!format!("{error} {error:?}").contains("hunter2"));
    }

    #[test]
    fn app_role_names_are_plain_identifiers() {
        let base = PostgresConfig::from_url("postgres://localhost/db").unwrap();
        assert_eq!(base.validated_app_role().unwrap(), DEFAULT_APP_ROLE);
        for bad in [
            "",
            "Upper",
            "has space",
            "quo\"te",
            "pg_app",
            "1app",
            OWNER_ROLE,
            LOOKUP_ROLE,
            &"a".repeat(64),
        ] {
            assert!(
                base.clone()
                    .with_app_role(bad)
                    .validated_app_role()
                    .is_err(),
                "{bad}"
            );
        }
        assert!(base.with_app_role("app_2").validated_app_role().is_ok());
    }
}
