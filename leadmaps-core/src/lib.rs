#![doc = include_str!("../README.md")]

pub mod audit;
pub mod auth;
pub mod breach;
pub mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod crypto;
mod error;
pub mod ingest;
pub mod legal;
pub mod mail;
pub mod memory;
pub mod policy;
pub mod scim;
pub mod scrub;
pub mod sso;
pub mod store;
pub mod tenancy;
pub mod vulnerability;

pub use error::{Error, ErrorKind, Result};
