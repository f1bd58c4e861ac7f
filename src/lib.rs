//! leadmaps: the security and privacy core of privacy-first web analytics.
//!
//! This facade re-exports [`leadmaps_core`] and, behind features, the adapters. Most users depend
//! on this crate; integrators writing their own store depend on `leadmaps-core` alone.

pub use leadmaps_core as core;
pub use leadmaps_core::{
    Error, ErrorKind, Result, audit, auth, breach, clock, crypto, ingest, legal, mail, memory,
    policy, scim, scrub, sso, store, tenancy, vulnerability,
};

/// The embedded SQLite store.
#[cfg(feature = "sqlite")]
pub use leadmaps_store_sqlite as sqlite;

/// The HTTP adapter on axum.
#[cfg(feature = "axum")]
pub use leadmaps_axum as axum;

/// The SMTP mailer.
#[cfg(feature = "smtp")]
pub use leadmaps_smtp as smtp;

/// The SAML 2.0 service provider (samael with xmlsec1; the only OpenSSL in leadmaps).
#[cfg(feature = "saml")]
pub use leadmaps_saml as saml;

/// The OIDC relying party.
#[cfg(feature = "oidc")]
pub use leadmaps_oidc as oidc;

/// Encrypted backups of the SQLite and Postgres stores.
#[cfg(feature = "backup")]
pub use leadmaps_backup as backup;

/// Error reporting without personal data: the scrubbing tracing layer.
#[cfg(feature = "telemetry")]
pub use leadmaps_telemetry as telemetry;

/// The verifier of every trust-page promise, and the evidence bundle.
#[cfg(feature = "verify")]
pub use leadmaps_verify as verify;

/// The Postgres store.
#[cfg(feature = "postgres")]
pub use leadmaps_store_postgres as postgres;
