#![doc = include_str!("../README.md")]

mod audit;
mod auth;
mod breach;
mod config;
mod doctor;
mod error;
mod events;
mod grants;
mod identity;
mod legal;
mod migrate;
mod recovery;
mod salts;
mod sites;
mod sso;
mod store;
mod vulnerability;

pub use config::{DEFAULT_APP_ROLE, DEFAULT_POOL_SIZE, LOOKUP_ROLE, OWNER_ROLE, PostgresConfig};
pub use doctor::{DoctorReport, Finding, FindingKind, doctor, doctor_client};
pub use error::PostgresError;
pub use migrate::{
    LATEST_VERSION, MIGRATIONS, Migration, MigrationError, MigrationReport, migrate, migrate_to,
};
pub use store::PostgresStore;
