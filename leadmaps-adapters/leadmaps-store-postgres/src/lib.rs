#![doc = include_str!("../README.md")]

mod config;
mod error;
mod events;
mod migrate;
mod salts;
mod sites;
mod store;

pub use config::{DEFAULT_APP_ROLE, DEFAULT_POOL_SIZE, LOOKUP_ROLE, OWNER_ROLE, PostgresConfig};
pub use error::PostgresError;
pub use migrate::{
    LATEST_VERSION, MIGRATIONS, Migration, MigrationError, MigrationReport, migrate,
};
pub use store::PostgresStore;
