#![doc = include_str!("../README.md")]

mod backups;
mod checks;
pub mod evidence;
mod report;
pub mod scan;
pub mod transport;

use std::sync::Arc;

use leadmaps_backup::BackupTarget;
use leadmaps_core::clock::Clock;
use leadmaps_core::crypto::KeyRing;
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::{Gate, Region};
use rustls::pki_types::CertificateDer;
use time::Duration;
use url::Url;

pub use crate::report::{Check, Promise, Report, Status};
/// The database a deployment stores into (SQLite file, or Postgres through its owner): the
/// backup crate's, so `verify`, `backup` and `restore` name it the same way.
pub use leadmaps_backup::Database;

/// A live deployment, as the verifier reaches it: its database (as the owner), its store, its
/// keys, the region it serves, its public base URL and its backup target.
#[derive(Clone)]
pub struct Deployment {
    database: Database,
    store: Arc<dyn Store>,
    ring: KeyRing,
    region: Region,
    public_url: Option<Url>,
    trusted: Vec<CertificateDer<'static>>,
    backups: Option<BackupTarget>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("database", &self.database)
            .field("region", &self.region)
            .field("public_url", &self.public_url.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// The deployment whose data lives in `database` and is reached through `store` (opened on
    /// that database, its key self-test passed with `ring`), serving `region`. Without a public
    /// URL and a backup target, their promises fail as unchecked.
    pub fn new(
        database: Database,
        store: Arc<dyn Store>,
        ring: KeyRing,
        region: Region,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            database,
            store,
            ring,
            region,
            public_url: None,
            trusted: Vec::new(),
            backups: None,
            clock,
        }
    }

    /// The public base URL whose endpoints are probed (`https://analytics.example`).
    #[must_use]
    pub fn with_public_url(mut self, url: Url) -> Self {
        self.public_url = Some(url);
        self
    }

    /// Certificates to trust beside the Mozilla roots (a private CA).
    #[must_use]
    pub fn with_trusted_certificates(mut self, certs: Vec<CertificateDer<'static>>) -> Self {
        self.trusted = certs;
        self
    }

    /// Where the deployment's backups are kept.
    #[must_use]
    pub fn with_backups(mut self, target: BackupTarget) -> Self {
        self.backups = Some(target);
        self
    }

    fn gate(&self) -> Gate {
        Gate::new(self.clock.clone())
    }
}

/// How strict a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Require checkpoints at the writer's cadence up to now (for a server that runs the
    /// checkpoint writer). Default off.
    pub audit_cadence: bool,
    /// The oldest the newest backup may be. Default 26 hours (a daily backup, with slack).
    pub max_backup_age: Duration,
    /// Restore the newest backup into a scratch database. Default on.
    pub test_restore: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            audit_cadence: false,
            max_backup_age: Duration::hours(26),
            test_restore: true,
        }
    }
}

impl Settings {
    /// Whether to require audit checkpoints at the writer's cadence.
    #[must_use]
    pub fn with_audit_cadence(mut self, on: bool) -> Self {
        self.audit_cadence = on;
        self
    }

    /// The oldest the newest backup may be.
    #[must_use]
    pub fn with_max_backup_age(mut self, age: Duration) -> Self {
        self.max_backup_age = age;
        self
    }

    /// Whether to restore the newest backup into a scratch database.
    #[must_use]
    pub fn with_test_restore(mut self, on: bool) -> Self {
        self.test_restore = on;
        self
    }
}

/// Runs one check per [`Promise`] against `deployment` and returns them all; it never stops at
/// the first failure, and a check that cannot run fails and says why.
pub async fn verify(deployment: &Deployment, settings: &Settings) -> Report {
    let started_at = deployment.clock.now();
    let gate = deployment.gate();
    let (store, database) = (&deployment.store, &deployment.database);
    let transport = transport::check(
        deployment.public_url.as_ref(),
        transport::roots(&deployment.trusted),
    )
    .await;
    let rls = checks::row_level_security(database).await;
    let (secrets, personal) = match scan::scan(database).await {
        Ok(scan) => (scan.secrets_check(), scan.personal_data_check()),
        Err(error) => (
            Check::error(Promise::SecretsAtRest, "reading the database", &*error),
            Check::error(Promise::NoPersonalData, "reading the database", &*error),
        ),
    };
    let audit = checks::audit_trail(store, &deployment.ring, &gate, settings.audit_cadence).await;
    let staff = checks::staff_mfa(store).await;
    let breach = checks::breach_clock(store, &gate, deployment.clock.now()).await;
    let residency = checks::residency(store, &gate, deployment.region).await;
    let backups = backups::check(
        database,
        deployment.backups.as_ref(),
        &deployment.ring,
        deployment.clock.now(),
        settings.max_backup_age,
        settings.test_restore,
    )
    .await;
    Report {
        started_at,
        region: deployment.region.as_str().to_owned(),
        store: database.kind().as_str().to_owned(),
        // Without any credentials the URL may carry.
        public_url: deployment.public_url.as_ref().map(|url| {
            let mut shown = url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            shown.to_string()
        }),
        checks: vec![
            transport, rls, secrets, personal, audit, staff, breach, residency, backups,
        ],
    }
}
