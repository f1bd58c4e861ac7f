//! The leadmaps reference server.
//!
//! ```sh
//! cargo run --release --example server                 # serve on SQLite in ./leadmaps-data/
//! cargo run --release --example server -- workspace create --name Acme --domain acme.example
//! cargo run --release --example server -- keys check   # run the key self-test and exit
//! cargo run --release --example server -- keys rewrap  # KEK rotation: rewrap tenant keys
//! cargo run --release --example server -- keys generate
//! cargo run --release --example server -- incident --as ops@example.com --code 123456 list
//! cargo run --release --example server -- backup create   # to LEADMAPS_BACKUP_URL
//! cargo run --release --example server -- backup list
//! cargo run --release --example server -- backup restore --name leadmaps-...lmbk
//! cargo run --release --example server -- verify --public-url https://analytics.example
//! cargo run --release --example server -- evidence --out ./evidence
//! ```
//!
//! Configuration, from flags or the environment:
//! - `LEADMAPS_DATABASE_URL`: a SQLite path (default `./leadmaps-data/leadmaps.db`) or
//!   `postgres://...` (the URL of the owner role that migrates; the store itself connects as the
//!   non-owner app role).
//! - `LEADMAPS_LISTEN` (default `127.0.0.1:8080`), `LEADMAPS_REGION` (`eu` default, `us`),
//!   `LEADMAPS_TRUSTED_PROXIES` (comma-separated CIDRs whose `X-Forwarded-For` is believed).
//! - `LEADMAPS_TLS_CERT` and `LEADMAPS_TLS_KEY`: PEM files; when both are given the server speaks
//!   HTTPS, TLS 1.3 only (rustls with the ring provider).
//! - `LEADMAPS_KEK` or `LEADMAPS_KEK_FILE`: the key-encryption keys (see the README). Without
//!   either, a development KEK is created in the data directory, with a loud warning;
//!   `LEADMAPS_ENV=production` refuses to start that way.
//! - `LEADMAPS_INCIDENT_CONTACTS` (comma-separated addresses): where breach-obligation reminders
//!   and overdue notices go; `LEADMAPS_BREACH_INTERVAL` (seconds, default 60): how often the
//!   breach notifier runs; `LEADMAPS_BREACH_RULES`: a JSON file of extra rule sets (an array of
//!   `leadmaps::breach::RuleSet`), beside the built-in GDPR one.
//! - `LEADMAPS_BACKUP_URL` (`s3://bucket/prefix` or `file:///directory`), with
//!   `LEADMAPS_BACKUP_S3_ENDPOINT`, `LEADMAPS_BACKUP_S3_REGION`, `AWS_ACCESS_KEY_ID` and
//!   `AWS_SECRET_ACCESS_KEY` for S3-compatible storage (Backblaze B2 included): where
//!   `backup create|list|restore` keep encrypted backups (see leadmaps-backup's README).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use leadmaps::audit::{AuditJob, CheckpointSigner};
use leadmaps::auth::impersonation::Impersonation;
use leadmaps::auth::keys::ApiKeys;
use leadmaps::auth::recovery::RecoveryCodes;
use leadmaps::auth::session::Sessions;
use leadmaps::auth::staff::{StaffMember, StepUp};
use leadmaps::auth::tokens::TokenHasher;
use leadmaps::auth::totp::{Subject, TotpFactors};
use leadmaps::auth::users::User;
use leadmaps::breach::{
    Ack, Assessment, DataSet, Details, Engine, IncidentId, NewIncident, Notifier, ObligationId,
    Reassessment, RuleBook, RuleSet,
};
use leadmaps::clock::{Clock, SystemClock};
use leadmaps::crypto::{EnvKeyProvider, FileKeyProvider, KeyRing, Vault};
use leadmaps::ingest::privacy::Salts;
use leadmaps::ingest::{Collector, CollectorConfig};
use leadmaps::legal::{RegisterBook, SubprocessorNotifier};
use leadmaps::mail::{Email, Mailer};
use leadmaps::policy::RetentionJob;
use leadmaps::store::Store;
use leadmaps::tenancy::{Action, Gate, Principal, Region, SystemTask, WorkspaceId};
use leadmaps::tenancy::{Role, StaffId, UserId};
use leadmaps::vulnerability::Intake;
use leadmaps_axum::auth::{AuthServices, AuthState, auth_routes, staff_routes};
use leadmaps_axum::dashboard::{DashboardState, dashboard_routes};
use leadmaps_axum::security_txt::{SecurityTxt, security_txt_routes};
use leadmaps_axum::staff::{ImpersonationState, impersonation_routes};
use leadmaps_axum::{CollectorState, RateLimit, collector_routes, harden};
use leadmaps_backup::{BackupKeys, BackupTarget, Database, S3Options};
use leadmaps_store_postgres::{PostgresConfig, PostgresStore};
use leadmaps_store_sqlite::SqliteStore;
use leadmaps_telemetry::{LineReporter, ScrubLayer};

const DEFAULT_DATABASE: &str = "leadmaps-data/leadmaps.db";

#[derive(Parser, Debug)]
#[command(name = "server", about = "The leadmaps reference server")]
struct Cli {
    /// SQLite file path, or a postgres:// URL.
    #[arg(long, env = "LEADMAPS_DATABASE_URL", default_value = DEFAULT_DATABASE, global = true)]
    database: String,
    /// Address to listen on.
    #[arg(
        long,
        env = "LEADMAPS_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen: SocketAddr,
    /// The region this instance serves.
    #[arg(long, env = "LEADMAPS_REGION", default_value = "eu", global = true)]
    region: Region,
    /// PEM certificate chain; with --tls-key, serve HTTPS (TLS 1.3 only).
    #[arg(long, env = "LEADMAPS_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LEADMAPS_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Public base URL, for links in e-mails (defaults to http://<listen>).
    #[arg(long, env = "LEADMAPS_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// SMTP server for sign-in mail (smtp://, smtp+starttls://, smtps://). Without it, mail is
    /// written to files in the data directory's outbox (development only).
    #[arg(long, env = "LEADMAPS_SMTP_URL", global = true)]
    smtp_url: Option<String>,
    /// Sender address of sign-in mail.
    #[arg(
        long,
        env = "LEADMAPS_MAIL_FROM",
        default_value = "leadmaps@localhost.localdomain",
        global = true
    )]
    mail_from: String,
    /// Proxies (CIDRs, comma-separated) whose X-Forwarded-For header is believed.
    #[arg(
        long,
        env = "LEADMAPS_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    trusted_proxies: Vec<IpNet>,
    /// Where breach-obligation reminders and overdue notices go (comma-separated addresses).
    #[arg(
        long,
        env = "LEADMAPS_INCIDENT_CONTACTS",
        value_delimiter = ',',
        global = true
    )]
    incident_contacts: Vec<String>,
    /// Seconds between runs of the breach notifier.
    #[arg(
        long,
        env = "LEADMAPS_BREACH_INTERVAL",
        default_value_t = 60,
        global = true
    )]
    breach_interval: u64,
    /// A JSON file of extra breach rule sets (an array), beside the built-in GDPR one.
    #[arg(long, env = "LEADMAPS_BREACH_RULES", global = true)]
    breach_rules: Option<PathBuf>,
    /// security.txt `Contact` URIs (comma-separated `mailto:`, `https://` or `tel:`); without
    /// one, `/.well-known/security.txt` answers 404.
    #[arg(
        long,
        env = "LEADMAPS_SECURITY_CONTACT",
        value_delimiter = ',',
        global = true
    )]
    security_contact: Vec<String>,
    /// security.txt `Policy`: the disclosure policy's https:// address.
    #[arg(long, env = "LEADMAPS_SECURITY_POLICY", global = true)]
    security_policy: Option<String>,
    /// security.txt `Preferred-Languages` (comma-separated language tags).
    #[arg(
        long,
        env = "LEADMAPS_SECURITY_LANGUAGES",
        value_delimiter = ',',
        default_value = "en",
        global = true
    )]
    security_languages: Vec<String>,
    /// Days until security.txt's `Expires` (capped below a year).
    #[arg(
        long,
        env = "LEADMAPS_SECURITY_EXPIRES_DAYS",
        default_value_t = 180,
        global = true
    )]
    security_expires_days: i64,
    /// A JSON file of sub-processor register versions (an array); the example seed otherwise.
    #[arg(long, env = "LEADMAPS_SUBPROCESSORS", global = true)]
    subprocessors: Option<PathBuf>,
    /// The DPA version workspaces accept.
    #[arg(
        long,
        env = "LEADMAPS_DPA_VERSION",
        default_value = "2026-01",
        global = true
    )]
    dpa_version: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Workspace administration.
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Staff administration.
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// Key-encryption key operations.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check a Postgres database's tenancy (forced RLS, policies, roles, grants, indexes) and
    /// exit non-zero on any finding.
    Doctor,
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Encrypted backups of the database: create, list, restore (into an empty database).
    Backup {
        /// Where backups are kept: s3://bucket/prefix or file:///directory.
        #[arg(long = "to", env = "LEADMAPS_BACKUP_URL", global = true)]
        target: Option<String>,
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Check every trust-page promise against this deployment (its database, its public base
    /// URL, its backups) and print a pass/fail table; exit 1 if any promise fails.
    Verify {
        #[command(flatten)]
        options: VerifyOptions,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run `verify` and write its report, the breach register, the sub-processor register and
    /// the key-rotation history as a dated, hash-listed bundle (`sha256sum -c SHA256SUMS`);
    /// exit 1 if any promise fails (the bundle is written either way).
    Evidence {
        #[command(flatten)]
        options: VerifyOptions,
        /// The directory to put the bundle in (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Security incidents and their GDPR breach clocks (staff only: name yourself with --as and
    /// prove it with a current TOTP code).
    Incident {
        /// Your staff sign-in address.
        #[arg(long = "as", env = "LEADMAPS_STAFF", global = true)]
        staff: Option<String>,
        /// A current code of your TOTP factor.
        #[arg(long, global = true)]
        code: Option<String>,
        #[command(subcommand)]
        command: IncidentCommand,
    },
}

#[derive(Subcommand, Debug)]
enum IncidentCommand {
    /// Open an incident; its obligations and deadlines follow from the rules.
    Open {
        /// A short, customer-facing title.
        #[arg(long)]
        title: String,
        /// Operational severity: S0 (worst) to S3.
        #[arg(long)]
        severity: String,
        /// Personal data is involved.
        #[arg(long)]
        personal_data: bool,
        /// The risk to people: none, risk or high.
        #[arg(long, default_value = "none")]
        risk: String,
        /// When leadmaps became aware (RFC 3339); now when left out. Recorded once.
        #[arg(long)]
        aware_at: Option<String>,
        /// An affected workspace (repeat for more).
        #[arg(long)]
        workspace: Vec<WorkspaceId>,
        /// An affected data set and leadmaps' role for it, as `controller:NAME` or
        /// `processor:NAME` (repeat for more).
        #[arg(long)]
        data_set: Vec<String>,
        /// A JSON file of the Art. 33(3) details (`leadmaps::breach::Details`).
        #[arg(long)]
        details: Option<PathBuf>,
    },
    /// List incidents and what is due, by deadline.
    List,
    /// Show an incident, or its Art. 33(3) notification draft.
    Show {
        /// The incident.
        #[arg(long)]
        id: IncidentId,
        /// Print the incident as JSON.
        #[arg(long)]
        json: bool,
        /// Print the notification draft instead: `md` or `json`.
        #[arg(long)]
        draft: Option<String>,
    },
    /// Change the assessment, details or status (obligations are recomputed; the awareness time
    /// never moves).
    Update {
        /// The incident.
        #[arg(long)]
        id: IncidentId,
        /// A new severity.
        #[arg(long)]
        severity: Option<String>,
        /// Whether personal data is involved.
        #[arg(long)]
        personal_data: Option<bool>,
        /// A new risk: none, risk or high.
        #[arg(long)]
        risk: Option<String>,
        /// The affected workspaces, replacing the list (repeat).
        #[arg(long)]
        workspace: Vec<WorkspaceId>,
        /// The affected data sets, replacing the list (repeat; `controller:NAME`).
        #[arg(long)]
        data_set: Vec<String>,
        /// A JSON file of the Art. 33(3) details, replacing them.
        #[arg(long)]
        details: Option<PathBuf>,
        /// Move the status forward: contained or resolved.
        #[arg(long)]
        status: Option<String>,
    },
    /// Acknowledge an obligation: done with evidence (for the authority filing, its reference;
    /// again for a follow-up phase), or the reason it is late.
    Ack {
        /// The incident.
        #[arg(long)]
        id: IncidentId,
        /// The obligation.
        #[arg(long)]
        obligation: ObligationId,
        /// What shows it was done.
        #[arg(long)]
        evidence: Option<String>,
        /// Why it is late (with --evidence: why it was done late; alone: why it is not done yet).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Close an incident once every obligation is settled.
    Close {
        /// The incident.
        #[arg(long)]
        id: IncidentId,
    },
}

/// What `verify` and `evidence` reach beyond the database.
#[derive(clap::Args, Debug)]
struct VerifyOptions {
    /// Where backups are kept (s3://bucket/prefix or file:///directory).
    #[arg(long = "backup-url", env = "LEADMAPS_BACKUP_URL")]
    backup_url: Option<String>,
    /// A PEM file of CA certificates to trust beside the Mozilla roots (a private CA).
    #[arg(long, env = "LEADMAPS_VERIFY_CA")]
    ca: Option<PathBuf>,
    /// The oldest the newest backup may be, in hours.
    #[arg(long, default_value_t = 26)]
    max_backup_age_hours: i64,
    /// Skip the test restore of the newest backup into a scratch database.
    #[arg(long)]
    no_test_restore: bool,
    /// Also require audit checkpoints at the writer's cadence up to now (for a server that has
    /// been running the checkpoint writer).
    #[arg(long)]
    cadence: bool,
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Snapshot the database, encrypt it under the primary KEK's backup key, and upload it.
    Create,
    /// List the backups at the target: name, size, creation time, source, schema, KEK.
    List,
    /// Restore a backup into the (empty) database given by --database, after verifying it.
    Restore {
        /// The backup's name, as `backup list` shows it.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum StaffCommand {
    /// Add a staff member (or re-enrol one) and print the `otpauth://` URI of their TOTP factor,
    /// to hand over out of band. Staff cannot sign in without it; their first code confirms it.
    Add {
        /// Sign-in address.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify hash chains and signed checkpoints (one workspace, or the instance tenant and
    /// every workspace); print each report, the first bad record of each, and exit 1 if any log
    /// has one.
    Verify {
        /// Only this workspace.
        #[arg(long)]
        workspace: Option<WorkspaceId>,
        /// Also require checkpoints at the writer's cadence (every 100 records or 5 minutes) up
        /// to now: for a server that has been running the checkpoint writer.
        #[arg(long)]
        cadence: bool,
    },
    /// Write a signed checkpoint of every log where one is due (what `serve` does every minute).
    Checkpoint,
}

#[derive(Subcommand, Debug)]
enum WorkspaceCommand {
    /// Create a workspace with one site and print its id.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// The site's domain, e.g. example.com.
        #[arg(long)]
        domain: String,
        /// Where its data lives (defaults to this instance's region).
        #[arg(long)]
        region: Option<Region>,
    },
    /// Make a person (created if new) an admin of a workspace; they sign in by magic link.
    AddAdmin {
        /// The workspace id.
        #[arg(long)]
        workspace: WorkspaceId,
        /// Their e-mail address.
        #[arg(long)]
        email: String,
    },
    /// Create an API key for a workspace and print it once.
    Key {
        /// The workspace id.
        #[arg(long)]
        workspace: WorkspaceId,
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// Actions, comma-separated (e.g. workspace.read,event.read).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "workspace.read,event.read"
        )]
        actions: Vec<String>,
    },
    /// Set a workspace's plan (billing's job): free, pro, business or enterprise. SSO and SCIM
    /// need business or above. Audited as `plan.changed`.
    Plan {
        /// The workspace id.
        #[arg(long)]
        workspace: WorkspaceId,
        /// The plan.
        #[arg(long)]
        plan: leadmaps::policy::Plan,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Check every configured KEK against the database's key checks, then exit.
    Check,
    /// Rewrap every tenant key onto the primary (highest-id) KEK, showing progress.
    Rewrap,
    /// Print a new random KEK (base64 of 32 bytes) for LEADMAPS_KEK.
    Generate,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// mimalloc rather than the system allocator: request handling allocates on one worker thread
/// and frees on another (a request's events are freed by the batcher), which glibc's malloc
/// serialises on its arena locks. In the ingest benchmark (`cargo bench --bench ingest`, 2
/// cores) it took the durable SQLite collector from 0.36-0.37 to 0.44 of bare axum, and the
/// collector without storage from 0.57-0.59 to 0.64-0.65, with bare axum unchanged.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Every log line leaves the process scrubbed of e-mail addresses, IPs, tokens, API keys and
    // cookies: the scrubbing layer writes the lines itself (there is no unscrubbed fmt layer).
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with(ScrubLayer::new(
                Arc::new(LineReporter::default()),
                Arc::new(SystemClock),
            ))
            .init();
    }
    let cli = Cli::parse();
    // The process-wide TLS provider (for HTTPS and SMTP): ring. Libraries never choose it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(Command::Keys {
        command: KeysCommand::Generate,
    }) = &cli.command
    {
        println!("{}", generate_kek());
        return Ok(());
    }
    if let Some(Command::Doctor) = &cli.command {
        return doctor(&cli.database).await;
    }
    if let Some(Command::Backup { target, command }) = &cli.command {
        return backup(&cli.database, cli.region, target.as_deref(), command).await;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let store = open_store(&cli.database, cli.region).await?;
    let ring = load_ring(&cli.database).await?;
    // The self-test: a wrong KEK stops the process here, before anything is served.
    let vault = Arc::new(Vault::start(ring, store.clone(), clock.clone()).await?);
    let primary = vault.ring().primary().id();
    tracing::info!(primary_kek = primary, "key self-test passed");
    let target = VerifyTarget {
        database: cli.database.clone(),
        region: cli.region,
        public_url: cli.public_url.clone(),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let tls = match (&cli.tls_cert, &cli.tls_key) {
                (Some(cert), Some(key)) => Some(leadmaps_axum::tls::tls13_config(
                    &std::fs::read(cert)?,
                    &std::fs::read(key)?,
                    Arc::new(rustls::crypto::ring::default_provider()),
                )?),
                _ => None,
            };
            let listen = Listen {
                addr: cli.listen,
                tls,
            };
            let mail = MailSettings {
                public_url: cli
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", cli.listen)),
                smtp_url: cli.smtp_url.clone(),
                from: cli.mail_from.clone(),
                outbox: dev_outbox(&cli.database),
            };
            let breach = BreachSettings {
                rules: rule_book(cli.breach_rules.as_deref())?,
                contacts: cli
                    .incident_contacts
                    .iter()
                    .map(|a| leadmaps::mail::Address::parse(a))
                    .collect::<Result<_, _>>()?,
                every: Duration::from_secs(cli.breach_interval.max(1)),
            };
            let canonical = mail.public_url.starts_with("https://").then(|| {
                format!(
                    "{}/.well-known/security.txt",
                    mail.public_url.trim_end_matches('/')
                )
            });
            let legal = LegalSettings {
                security_txt: SecurityTxt {
                    contact: cli.security_contact.clone(),
                    expires_in: time::Duration::days(cli.security_expires_days),
                    policy: cli.security_policy.clone(),
                    preferred_languages: cli.security_languages.clone(),
                    canonical,
                },
                subprocessors: Arc::new(match &cli.subprocessors {
                    Some(path) => RegisterBook::from_json(&std::fs::read_to_string(path)?)?,
                    None => RegisterBook::default(),
                }),
                dpa_version: cli.dpa_version.clone(),
            };
            if legal.security_txt.validate().is_err() {
                tracing::warn!(
                    "security.txt is not served: set LEADMAPS_SECURITY_CONTACT to mailto:, https:// or tel: URIs"
                );
            }
            serve(
                listen,
                mail,
                breach,
                legal,
                cli.region,
                cli.trusted_proxies,
                store,
                vault,
                gate,
                clock,
            )
            .await
        }
        Command::Workspace {
            command:
                WorkspaceCommand::Create {
                    name,
                    domain,
                    region,
                },
        } => {
            // Refuse a bad or taken domain before anything is created.
            let domain = leadmaps::store::normalize_domain(&domain)?;
            if store.site_route(&domain).await?.is_some() {
                return Err(format!("the domain {domain} belongs to a site already").into());
            }
            let workspace = WorkspaceId::new();
            let provisioning = Principal::System(SystemTask::Provisioning);
            let create = gate.authorize(&provisioning, workspace, Action::WorkspaceCreate)?;
            let region = region.unwrap_or(cli.region);
            store
                .create_workspace(&create, &name, region, clock.now())
                .await?;
            let update = gate.authorize(&provisioning, workspace, Action::WorkspaceUpdate)?;
            let site = store.add_site(&update, &domain, clock.now()).await?;
            println!(
                "workspace {workspace}\nregion    {}\nsite      {}",
                region.as_str(),
                site.domain
            );
            Ok(())
        }
        Command::Staff {
            command: StaffCommand::Add { email },
        } => {
            let email = leadmaps::mail::Address::parse(&email)?;
            let staff = match store.staff_by_email(&email).await? {
                Some(staff) => staff,
                None => {
                    let staff = StaffMember {
                        id: StaffId::new(),
                        email: email.clone(),
                        created_at: clock.now(),
                    };
                    store.create_staff(&staff).await?;
                    staff
                }
            };
            let totp = TotpFactors::new(
                store.clone(),
                vault.clone(),
                gate.clone(),
                clock.clone(),
                "leadmaps staff",
            );
            // Re-enrolling replaces the factor and ends the member's sessions.
            let uri = totp
                .enroll(Subject::Staff(staff.id), email.as_str())
                .await?;
            store.delete_sessions(Subject::Staff(staff.id)).await?;
            println!(
                "staff {}\n{}\n(shown once: hand it over out of band; the first code confirms it)",
                staff.id,
                uri.as_str()
            );
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { workspace, cadence },
        } => {
            let job = AuditJob::new(store, CheckpointSigner::new(vault.ring()), gate);
            let reports = match workspace {
                Some(workspace) => vec![job.verify(workspace, cadence).await?],
                None => job.verify_all(cadence).await?,
            };
            for report in &reports {
                println!("{report}");
            }
            if reports.iter().any(|r| !r.is_ok()) {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Checkpoint,
        } => {
            let job = AuditJob::new(store, CheckpointSigner::new(vault.ring()), gate);
            let run = job.checkpoint_all().await?;
            println!(
                "checkpoints written: {}, failed: {}",
                run.written, run.failed
            );
            if run.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Workspace {
            command: WorkspaceCommand::AddAdmin { workspace, email },
        } => {
            let email = leadmaps::mail::Address::parse(&email)?;
            let user = match store.user_by_email(&email).await? {
                Some(user) => user,
                None => {
                    let user = User {
                        id: UserId::new(),
                        email: email.clone(),
                        created_at: clock.now(),
                    };
                    store.create_user(&user).await?;
                    user
                }
            };
            let provisioning = Principal::System(SystemTask::Provisioning);
            store
                .workspace(&gate.authorize(&provisioning, workspace, Action::WorkspaceUpdate)?)
                .await?;
            let manage = gate.authorize(&provisioning, workspace, Action::MemberManage)?;
            store
                .set_membership(&manage, user.id, Role::Admin, gate.now())
                .await?;
            println!("user {} is an admin of workspace {workspace}", user.id);
            Ok(())
        }
        Command::Workspace {
            command:
                WorkspaceCommand::Key {
                    workspace,
                    name,
                    actions,
                },
        } => {
            let actions = actions
                .iter()
                .map(|a| Action::parse(a.trim()).ok_or_else(|| format!("unknown action {a:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            let provisioning = Principal::System(SystemTask::Provisioning);
            store
                .workspace(&gate.authorize(&provisioning, workspace, Action::WorkspaceUpdate)?)
                .await?;
            let keys = ApiKeys::new(
                store.clone(),
                vault.clone(),
                TokenHasher::new(vault.ring()),
                clock.clone(),
            );
            let created = keys
                .create(
                    &gate.authorize(&provisioning, workspace, Action::MemberManage)?,
                    &name,
                    &actions,
                )
                .await?;
            println!(
                "key {}\n{}\n(shown once: store it now)",
                created.record.id, &*created.key.token
            );
            Ok(())
        }
        Command::Incident {
            staff,
            code,
            command,
        } => {
            let rules = Arc::new(rule_book(cli.breach_rules.as_deref())?);
            let engine = Engine::new(store.clone(), rules, clock.clone());
            let totp = TotpFactors::new(
                store.clone(),
                vault.clone(),
                gate.clone(),
                clock.clone(),
                "leadmaps staff",
            );
            let (Some(staff), Some(code)) = (staff, code) else {
                return Err(
                    "incident commands need --as <your staff address> and --code <TOTP>".into(),
                );
            };
            let staff = store
                .staff_by_email(&leadmaps::mail::Address::parse(&staff)?)
                .await?
                .ok_or("no staff member has that address (add one with `server staff add`)")?;
            // The code is checked as the staff sign-in challenge checks it (a factor enrolled by
            // `staff add` is confirmed by its first code), and is this command's step-up.
            match totp
                .confirm(Subject::Staff(staff.id), &code, &*store)
                .await?
            {
                leadmaps::auth::totp::TotpOutcome::Accepted => {}
                _ => return Err("the TOTP code was refused".into()),
            }
            let principal = Principal::Staff {
                staff: staff.id,
                mfa: true,
                grant: None,
            };
            let scope = gate.authorize_breach(&principal)?;
            incident_command(&engine, &scope, command).await
        }
        Command::Workspace {
            command: WorkspaceCommand::Plan { workspace, plan },
        } => {
            let provisioning = Principal::System(SystemTask::Provisioning);
            let scope = gate.authorize(&provisioning, workspace, Action::WorkspaceUpdate)?;
            store.set_plan(&scope, plan, clock.now()).await?;
            let features: Vec<&str> = plan.features().iter().map(|f| f.as_str()).collect();
            println!(
                "workspace {workspace} is on {} ({})",
                plan.title(),
                features.join(", ")
            );
            Ok(())
        }
        Command::Verify { options, json } => {
            let deployment = deployment(&target, &options, store, vault.ring().clone(), clock)?;
            let report = leadmaps_verify::verify(&deployment, &verify_settings(&options)).await;
            if json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Evidence { options, out } => {
            let subprocessors = match &cli.subprocessors {
                Some(path) => RegisterBook::from_json(&std::fs::read_to_string(path)?)?,
                None => RegisterBook::default(),
            };
            let deployment = deployment(&target, &options, store, vault.ring().clone(), clock)?;
            let report = leadmaps_verify::verify(&deployment, &verify_settings(&options)).await;
            let bundle =
                leadmaps_verify::evidence::write(&out, &deployment, &report, &subprocessors)
                    .await?;
            println!("{report}\n");
            println!("evidence bundle {}", bundle.dir.display());
            for (name, bytes, sha256) in &bundle.files {
                println!("  {name:<28} {bytes:>9} bytes  {sha256}");
            }
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Check,
        } => {
            println!("ok: every configured KEK matches this database; primary is KEK {primary}");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rewrap,
        } => {
            let report = vault
                .rewrap_all(&gate, &mut |p| {
                    eprint!("\rrewrapped {}/{} tenant keys", p.done, p.total)
                })
                .await?;
            eprintln!();
            println!(
                "done: {} of {} tenant keys rewrapped onto KEK {primary}",
                report.done, report.total
            );
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Generate,
        }
        | Command::Doctor
        | Command::Backup { .. } => unreachable!("handled above"),
    }
}

/// The deployment `verify` and `evidence` check: this process's database, store and keys, the
/// public base URL, the trusted CAs and the backup target.
fn deployment(
    target: &VerifyTarget,
    options: &VerifyOptions,
    store: Arc<dyn Store>,
    ring: KeyRing,
    clock: Arc<dyn Clock>,
) -> Result<leadmaps_verify::Deployment, BoxError> {
    let database = Database::from_url(&target.database)?;
    let mut deployment =
        leadmaps_verify::Deployment::new(database, store, ring, target.region, clock);
    if let Some(url) = &target.public_url {
        deployment = deployment.with_public_url(url::Url::parse(url)?);
    }
    if let Some(ca) = &options.ca {
        let certs = leadmaps_verify::transport::certificates_from_pem(&std::fs::read(ca)?)?;
        deployment = deployment.with_trusted_certificates(certs);
    }
    if let Some(target) = &options.backup_url {
        deployment =
            deployment.with_backups(BackupTarget::from_url(target, &S3Options::from_env())?);
    }
    Ok(deployment)
}

fn verify_settings(options: &VerifyOptions) -> leadmaps_verify::Settings {
    leadmaps_verify::Settings::default()
        .with_audit_cadence(options.cadence)
        .with_max_backup_age(time::Duration::hours(options.max_backup_age_hours))
        .with_test_restore(!options.no_test_restore)
}

/// The parts of the command line that name the deployment `verify` checks.
struct VerifyTarget {
    database: String,
    region: Region,
    public_url: Option<String>,
}

async fn doctor(database: &str) -> Result<(), BoxError> {
    if !(database.starts_with("postgres://") || database.starts_with("postgresql://")) {
        return Err(
            "doctor checks Postgres row-level security: give a postgres:// LEADMAPS_DATABASE_URL \
                    (SQLite has no database-level tenancy; the application gate is its only one)"
                .into(),
        );
    }
    let report = leadmaps_store_postgres::doctor(&PostgresConfig::from_url(database)?).await?;
    println!("{report}");
    if report.is_clean() {
        Ok(())
    } else {
        std::process::exit(1);
    }
}

/// `backup create|list|restore`. A restore never opens the store first: that would write key
/// checks into the database that must stay empty.
async fn backup(
    database: &str,
    region: Region,
    target: Option<&str>,
    command: &BackupCommand,
) -> Result<(), BoxError> {
    match backup_command(database, region, target, command).await {
        Ok(()) => Ok(()),
        Err(BackupFailure::Other(error)) => Err(error),
        Err(BackupFailure::Backup(error)) => {
            // Shown by its message (and its cause's, which includes the rest), not its debug
            // form: "backup is corrupt or was not made with these keys" is what to read.
            match std::error::Error::source(&error) {
                Some(cause) => eprintln!("error: {error}: {cause}"),
                None => eprintln!("error: {error}"),
            }
            std::process::exit(1);
        }
    }
}

enum BackupFailure {
    Backup(leadmaps_backup::Error),
    Other(BoxError),
}

impl From<leadmaps_backup::Error> for BackupFailure {
    fn from(error: leadmaps_backup::Error) -> Self {
        BackupFailure::Backup(error)
    }
}

impl From<BoxError> for BackupFailure {
    fn from(error: BoxError) -> Self {
        BackupFailure::Other(error)
    }
}

impl From<leadmaps::Error> for BackupFailure {
    fn from(error: leadmaps::Error) -> Self {
        BackupFailure::Other(error.into())
    }
}

impl From<&str> for BackupFailure {
    fn from(error: &str) -> Self {
        BackupFailure::Other(error.into())
    }
}

async fn backup_command(
    database: &str,
    region: Region,
    target: Option<&str>,
    command: &BackupCommand,
) -> Result<(), BackupFailure> {
    let target = target.ok_or("give the backup target with --to or LEADMAPS_BACKUP_URL")?;
    let target = BackupTarget::from_url(target, &S3Options::from_env())?;
    match command {
        BackupCommand::List => {
            let entries = leadmaps_backup::list(&target).await?;
            println!(
                "{:<64} {:>12}  {:<20}  {:<8}  {:>6}  {:>3}",
                "NAME", "BYTES", "CREATED (UTC)", "SOURCE", "SCHEMA", "KEK"
            );
            for entry in &entries {
                match &entry.header {
                    Some(h) => println!(
                        "{:<64} {:>12}  {:<20}  {:<8}  {:>6}  {:>3}",
                        entry.name,
                        entry.size,
                        rfc3339(h.created_at),
                        h.source.as_str(),
                        h.schema_version,
                        h.kek_id
                    ),
                    None => println!(
                        "{:<64} {:>12}  {:<20}  (no readable backup header)",
                        entry.name,
                        entry.size,
                        rfc3339(entry.stored_at)
                    ),
                }
            }
            eprintln!("{} backups at {target}", entries.len());
            Ok(())
        }
        BackupCommand::Create => {
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let ring = load_ring(database).await?;
            // The key self-test first: a backup under a KEK that does not match the database
            // would restore a database whose secrets nobody can open.
            let store = open_store(database, region).await?;
            Vault::start(ring.clone(), store, clock.clone()).await?;
            let keys = BackupKeys::new(&ring);
            let bar = ByteProgress::new("uploaded");
            let made = leadmaps_backup::create(
                &Database::from_url(database)?,
                &target,
                &keys,
                clock.as_ref(),
                &bar,
            )
            .await;
            bar.0.finish_and_clear();
            let made = made?;
            println!(
                "backup {}
bytes  {}
kek    {}
target {target}",
                made.name, made.size, made.header.kek_id
            );
            Ok(())
        }
        BackupCommand::Restore { name } => {
            let ring = load_ring(database).await?;
            let keys = BackupKeys::new(&ring);
            let bar = ByteProgress::new("verified");
            let report = leadmaps_backup::restore(
                &target,
                name,
                &keys,
                &Database::from_url(database)?,
                &bar,
            )
            .await;
            bar.0.finish_and_clear();
            let report = report?;
            let rows: u64 = report.tables.iter().map(|(_, rows)| rows).sum();
            println!(
                "restored {name}: {} tables, {rows} rows, made {} from {} (schema {})",
                report.tables.len(),
                rfc3339(report.header.created_at),
                report.header.source.as_str(),
                report.header.schema_version
            );
            Ok(())
        }
    }
}

/// A progress bar in bytes on stderr, hidden when stderr is not a terminal.
struct ByteProgress(indicatif::ProgressBar);

impl ByteProgress {
    fn new(verb: &str) -> Self {
        use std::io::IsTerminal as _;
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::no_length()
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{spinner}} {{bytes}} {verb} ({{binary_bytes_per_sec}}, {{elapsed}})"
            ))
            .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }
}

impl leadmaps_backup::Progress for ByteProgress {
    fn total(&self, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_style(
            indicatif::ProgressStyle::with_template(
                "[{bar:40}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, eta {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

async fn open_store(database: &str, region: Region) -> Result<Arc<dyn Store>, BoxError> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let config = PostgresConfig::from_url(database)?.with_region(region);
        let store = PostgresStore::connect(&config).await?;
        tracing::info!(region = region.as_str(), "store: postgres");
        return Ok(Arc::new(store));
    }
    let path = Path::new(database.strip_prefix("sqlite://").unwrap_or(database));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    let store = SqliteStore::open(path)?.with_region(region);
    tracing::info!(path = %path.display(), region = region.as_str(), "store: sqlite");
    Ok(Arc::new(store))
}

async fn load_ring(database: &str) -> Result<KeyRing, BoxError> {
    if std::env::var_os("LEADMAPS_KEK").is_some() {
        return Ok(KeyRing::load(&EnvKeyProvider::new()).await?);
    }
    if let Some(path) = std::env::var_os("LEADMAPS_KEK_FILE") {
        return Ok(KeyRing::load(&FileKeyProvider::new(PathBuf::from(path))).await?);
    }
    if std::env::var("LEADMAPS_ENV").is_ok_and(|env| env == "production") {
        return Err("LEADMAPS_ENV=production needs LEADMAPS_KEK or LEADMAPS_KEK_FILE".into());
    }
    let path = dev_kek_path(database);
    if !path.exists() {
        write_private(&path, &generate_kek())?;
    }
    tracing::warn!(
        path = %path.display(),
        "LEADMAPS_KEK is not set: using a DEVELOPMENT key-encryption key stored beside the data. \
         Anyone with this directory can read every secret. Never use this in production."
    );
    Ok(KeyRing::load(&FileKeyProvider::new(path)).await?)
}

fn dev_kek_path(database: &str) -> PathBuf {
    if database.contains("://") && !database.starts_with("sqlite://") {
        return PathBuf::from("leadmaps-data/dev.kek");
    }
    let db = Path::new(database.strip_prefix("sqlite://").unwrap_or(database));
    db.with_extension("dev.kek")
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

fn generate_kek() -> String {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("operating system randomness");
    base64::engine::general_purpose::STANDARD.encode(key)
}

struct Ops {
    store: Arc<dyn Store>,
    collector: Arc<Collector>,
    primary: u32,
}

struct Listen {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
}

struct MailSettings {
    public_url: String,
    smtp_url: Option<String>,
    from: String,
    outbox: PathBuf,
}

fn dev_outbox(database: &str) -> PathBuf {
    if database.contains("://") && !database.starts_with("sqlite://") {
        return PathBuf::from("leadmaps-data/outbox");
    }
    let db = Path::new(database.strip_prefix("sqlite://").unwrap_or(database));
    db.parent()
        .map_or_else(|| PathBuf::from("outbox"), |dir| dir.join("outbox"))
}

/// Development mailer: each message becomes a 0600 file in a directory, never a log line
/// (sign-in mails hold magic links).
struct FileMailer {
    dir: PathBuf,
}

#[async_trait::async_trait]
impl Mailer for FileMailer {
    async fn send(&self, email: &Email) -> leadmaps::Result<()> {
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)
            .map_err(leadmaps::Error::unavailable)?;
        let name = format!("{}.eml", uuid::Uuid::new_v4());
        let body = format!(
            "To: {}\nSubject: {}\n\n{}",
            email.to.as_str(),
            email.subject,
            email.text
        );
        write_private(&self.dir.join(name), &body).map_err(leadmaps::Error::unavailable)
    }
}

fn mailer(settings: &MailSettings) -> Result<Arc<dyn Mailer>, BoxError> {
    let from = leadmaps::mail::Address::parse(&settings.from)?;
    match &settings.smtp_url {
        Some(url) => Ok(Arc::new(leadmaps_smtp::SmtpMailer::new(
            leadmaps_smtp::SmtpConfig::from_url(url, from)?,
        )?)),
        None => {
            tracing::warn!(dir = %settings.outbox.display(), "LEADMAPS_SMTP_URL is not set: sign-in mail is written to files (development only)");
            Ok(Arc::new(FileMailer {
                dir: settings.outbox.clone(),
            }))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    listen: Listen,
    mail: MailSettings,
    breach: BreachSettings,
    legal: LegalSettings,
    region: Region,
    trusted_proxies: Vec<IpNet>,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    gate: Gate,
    clock: Arc<dyn Clock>,
) -> Result<(), BoxError> {
    let primary = vault.ring().primary().id();
    let mailer = mailer(&mail)?;
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(breach.rules),
        clock.clone(),
    ));
    let notifier = Notifier::new((*engine).clone(), mailer.clone(), gate.clone())
        .with_contacts(breach.contacts);
    let salts = Arc::new(Salts::new(vault.clone(), store.clone(), clock.clone()));
    let config = CollectorConfig {
        region,
        ..CollectorConfig::default()
    };
    let hasher = TokenHasher::new(vault.ring());
    let sessions = Arc::new(Sessions::new(store.clone(), hasher.clone(), clock.clone()));
    // Enterprise identity: SCIM under /scim/v2, OIDC logins under /auth/sso (Business plans).
    let public_url = mail.public_url.trim_end_matches('/').to_owned();
    let directory = Arc::new(leadmaps_core::scim::Directory::new(
        store.clone(),
        vault.clone(),
        hasher.clone(),
        gate.clone(),
        clock.clone(),
        format!("{public_url}/scim/v2"),
    ));
    let oidc = Arc::new(leadmaps_oidc::OidcRp::new(
        store.clone(),
        vault.clone(),
        hasher.clone(),
        gate.clone(),
        clock.clone(),
        &public_url,
    )?);
    let keys = Arc::new(ApiKeys::new(
        store.clone(),
        vault.clone(),
        hasher,
        clock.clone(),
    ));
    let totp = Arc::new(TotpFactors::new(
        store.clone(),
        vault.clone(),
        gate.clone(),
        clock.clone(),
        "leadmaps",
    ));
    let auth = Arc::new(
        AuthState::new(
            AuthServices {
                identities: store.clone(),
                sessions: sessions.clone(),
                totp: totp.clone(),
                recovery: Arc::new(RecoveryCodes::new(store.clone())),
                step_up: Arc::new(StepUp::new(store.clone(), clock.clone())),
                mailer: mailer.clone(),
                audit: store.clone(),
                gate: gate.clone(),
                clock: clock.clone(),
            },
            mail.public_url.clone(),
            trusted_proxies.clone(),
        )
        .with_incidents(engine.clone())
        .with_vulnerabilities(Arc::new(Intake::new(
            store.clone(),
            store.clone(),
            (*engine).clone(),
        ))),
    );
    let dashboard = Arc::new(
        DashboardState::new(store.clone(), keys.clone(), gate.clone())
            .with_sessions(sessions, totp)
            .with_trusted_proxies(trusted_proxies.clone())
            .with_legal(legal.subprocessors.clone(), legal.dpa_version.clone()),
    );
    let subprocessor_notifier = SubprocessorNotifier::new(
        store.clone(),
        mailer.clone(),
        gate.clone(),
        legal.subprocessors.clone(),
        clock.clone(),
    );
    let impersonation = Arc::new(ImpersonationState::new(
        auth.clone(),
        Arc::new(Impersonation::new(store.clone(), gate.clone())),
        store.clone(),
    ));
    let audit_job = AuditJob::new(
        store.clone(),
        CheckpointSigner::new(vault.ring()),
        gate.clone(),
    );
    let retention_job = RetentionJob::new(store.clone(), gate.clone());
    let sso_admin = Arc::new(leadmaps_axum::sso::SsoAdminState::new(
        dashboard.clone(),
        vault.clone(),
        directory.clone(),
    ));
    let scim = Arc::new(leadmaps_axum::scim::ScimState::new(directory, keys));
    let security_txt = security_txt_routes(legal.security_txt, clock.clone());
    let (collector, batcher) =
        Collector::over_store(store.clone(), vault, gate.clone(), clock, config);
    let collector = Arc::new(collector);
    let batcher = tokio::spawn(batcher.run());
    let breach_job = tokio::spawn(notify_breaches(notifier, breach.every));
    let subprocessor_job = tokio::spawn(notify_subprocessor_changes(
        subprocessor_notifier,
        breach.every,
    ));
    let salt_job = tokio::spawn(destroy_expired_salts(salts, gate));
    let checkpoint_job = tokio::spawn(write_checkpoints(audit_job));
    let retention_job = tokio::spawn(enforce_retention(retention_job));
    let ops = Arc::new(Ops {
        store,
        collector: collector.clone(),
        primary,
    });
    let state = Arc::new(CollectorState::new(
        collector,
        trusted_proxies,
        RateLimit::default(),
    ));
    let router = harden(
        collector_routes(state)
            .merge(auth_routes(auth.clone()))
            .merge(staff_routes(auth))
            .merge(impersonation_routes(impersonation))
            .merge(dashboard_routes(dashboard))
            .merge(leadmaps_axum::sso::sso_admin_routes(sso_admin))
            .merge(leadmaps_axum::scim::scim_routes(scim))
            .merge(leadmaps_oidc::oidc_routes(oidc))
            .merge(security_txt)
            .merge(
                Router::new()
                    .route("/healthz", get(|| async { "ok" }))
                    .route("/readyz", get(ready))
                    .route("/metrics", get(metrics))
                    .with_state(ops.clone()),
            ),
    );
    let tcp = tokio::net::TcpListener::bind(listen.addr).await?;
    let app = router.into_make_service_with_connect_info::<leadmaps_axum::PeerAddr>();
    match listen.tls {
        Some(config) => {
            tracing::info!(listen = %listen.addr, region = region.as_str(), "listening (HTTPS, TLS 1.3)");
            let listener = leadmaps_axum::tls::TlsListener::new(tcp, config)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown())
                .await?;
        }
        None => {
            tracing::info!(listen = %listen.addr, region = region.as_str(), "listening (HTTP)");
            axum::serve(tcp, app)
                .with_graceful_shutdown(shutdown())
                .await?;
        }
    }
    // Every request has been answered; dropping the last queue handle lets the batcher commit
    // what is left and stop.
    salt_job.abort();
    checkpoint_job.abort();
    retention_job.abort();
    breach_job.abort();
    subprocessor_job.abort();
    drop(ops);
    batcher.await?;
    tracing::info!("queue drained; stopped");
    Ok(())
}

/// Signs every audit log's head when due (100 records or 5 minutes), checking every minute.
async fn write_checkpoints(job: AuditJob) {
    loop {
        match job.checkpoint_all().await {
            Ok(run) if run.failed > 0 => tracing::warn!(
                failed = run.failed,
                "audit checkpoints failed for some logs; run `audit verify`"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(kind = ?e.kind(), "audit checkpoints failed; will retry"),
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Deletes events past each workspace's retention period, hourly.
async fn enforce_retention(job: RetentionJob) {
    loop {
        match job.run_once().await {
            Ok(run) => {
                if run.deleted > 0 {
                    tracing::info!(
                        deleted = run.deleted,
                        workspaces = run.workspaces,
                        "retention enforced"
                    );
                }
                if run.failed > 0 {
                    tracing::warn!(
                        failed = run.failed,
                        "retention failed for some workspaces; will retry"
                    );
                }
            }
            Err(e) => tracing::warn!(kind = ?e.kind(), "retention failed; will retry"),
        }
        tokio::time::sleep(Duration::from_secs(60 * 60)).await;
    }
}

async fn destroy_expired_salts(salts: Arc<Salts>, gate: Gate) {
    loop {
        match salts.destroy_expired(&gate).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(destroyed = n, "expired visitor salts destroyed"),
            Err(e) => tracing::warn!(kind = ?e.kind(), "salt destruction failed; will retry"),
        }
        tokio::time::sleep(Duration::from_secs(15 * 60)).await;
    }
}

/// Ready when the store answers.
async fn ready(State(ops): State<Arc<Ops>>) -> (StatusCode, &'static str) {
    match ops.store.key_check(ops.primary).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(error) => {
            tracing::warn!(kind = ?error.kind(), "store not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    let body = ops
        .collector
        .stats()
        .render_prometheus(ops.collector.queue());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining the ingest queue");
}

struct LegalSettings {
    security_txt: SecurityTxt,
    subprocessors: Arc<RegisterBook>,
    dpa_version: String,
}

struct BreachSettings {
    rules: RuleBook,
    contacts: Vec<leadmaps::mail::Address>,
    every: Duration,
}

/// The built-in GDPR rules, plus the rule sets of `path` (a JSON array) when given.
fn rule_book(path: Option<&Path>) -> Result<RuleBook, BoxError> {
    let extra: Vec<RuleSet> = match path {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => Vec::new(),
    };
    Ok(RuleBook::with(extra)?)
}

/// Runs the breach notifier every `every`: each due notice, reminder and overdue notice goes out
/// once, whatever restarts happen (the store keeps who claimed and sent what).
async fn notify_breaches(notifier: Notifier, every: Duration) {
    loop {
        match notifier.run_once().await {
            Ok(report) => {
                if report.emails > 0 {
                    tracing::info!(
                        notices = report.notices,
                        escalations = report.escalations,
                        emails = report.emails,
                        "breach notifications sent"
                    );
                }
                if report.failed > 0 || report.unaddressed > 0 {
                    tracing::warn!(
                        failed = report.failed,
                        unaddressed = report.unaddressed,
                        "breach notifications not sent: retried on a later run (unaddressed: no \
                         workspace admin, or no LEADMAPS_INCIDENT_CONTACTS)"
                    );
                }
            }
            Err(e) => tracing::warn!(kind = ?e.kind(), "breach notifier run failed; will retry"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Tells every workspace's admins about a new version of the sub-processor register, once per
/// workspace (the store keeps the notices), on the breach notifier's interval.
async fn notify_subprocessor_changes(notifier: SubprocessorNotifier, every: Duration) {
    loop {
        match notifier.run().await {
            Ok(report) => {
                if report.notified > 0 {
                    tracing::info!(
                        workspaces = report.notified,
                        "sub-processor change notices sent"
                    );
                }
                if report.failed > 0 {
                    tracing::warn!(
                        workspaces = report.failed,
                        "sub-processor change notices failed; will retry"
                    );
                }
            }
            Err(e) => tracing::warn!(kind = ?e.kind(), "sub-processor notifier failed; will retry"),
        }
        tokio::time::sleep(every).await;
    }
}

/// `controller:NAME` or `processor:NAME`.
fn data_sets(specs: &[String]) -> Result<Vec<DataSet>, BoxError> {
    specs
        .iter()
        .map(|spec| {
            let (role, name) = spec
                .split_once(':')
                .ok_or("a data set is controller:NAME or processor:NAME")?;
            Ok(DataSet {
                name: name.trim().to_owned(),
                role: role.trim().parse()?,
            })
        })
        .collect()
}

fn read_details(path: Option<&Path>) -> Result<Option<Details>, BoxError> {
    path.map(|path| Ok(serde_json::from_slice(&std::fs::read(path)?)?))
        .transpose()
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn print_incident(incident: &leadmaps::breach::Incident, now: time::OffsetDateTime) {
    println!("incident   {}", incident.id);
    println!("title      {}", incident.title);
    println!(
        "severity   {}   personal data: {}   risk: {}   status: {}",
        incident.severity.as_str(),
        if incident.assessment.personal_data {
            "yes"
        } else {
            "no"
        },
        incident.assessment.risk.as_str(),
        incident.status.as_str()
    );
    println!("aware at   {}", rfc3339(incident.aware_at));
    println!("rule set   {}", incident.rule_set);
    for ws in &incident.workspaces {
        println!("workspace  {ws}");
    }
    println!("obligations (by deadline):");
    for o in &incident.obligations {
        println!(
            "  {}  {:<20} due {}  {:<11}  {}{}",
            o.id,
            o.duty.as_str(),
            rfc3339(o.due_at),
            o.standing(now).as_str(),
            o.basis,
            o.workspace
                .map(|ws| format!(" (workspace {ws})"))
                .unwrap_or_default()
        );
    }
    for filing in &incident.filings {
        println!(
            "filed phase {} at {}: {}",
            filing.phase,
            rfc3339(filing.at),
            filing.reference
        );
    }
}

async fn incident_command(
    engine: &Engine,
    scope: &leadmaps::tenancy::BreachScope,
    command: IncidentCommand,
) -> Result<(), BoxError> {
    let now = engine.now();
    match command {
        IncidentCommand::Open {
            title,
            severity,
            personal_data,
            risk,
            aware_at,
            workspace,
            data_set,
            details,
        } => {
            let aware_at = match aware_at {
                Some(at) => time::OffsetDateTime::parse(
                    &at,
                    &time::format_description::well_known::Rfc3339,
                )?,
                None => now,
            };
            let incident = engine
                .open(
                    scope,
                    NewIncident {
                        title,
                        severity: severity.parse()?,
                        assessment: Assessment {
                            personal_data,
                            risk: risk.parse()?,
                        },
                        aware_at,
                        workspaces: workspace,
                        data_sets: data_sets(&data_set)?,
                        details: read_details(details.as_deref())?.unwrap_or_default(),
                    },
                )
                .await?;
            print_incident(&incident, now);
        }
        IncidentCommand::List => {
            for incident in engine.incidents(scope).await? {
                println!(
                    "{}  {}  {:<9}  aware {}  {}",
                    incident.id,
                    incident.severity.as_str(),
                    incident.status.as_str(),
                    rfc3339(incident.aware_at),
                    incident.title
                );
            }
            println!("due, by deadline:");
            for due in engine.due(scope).await? {
                println!(
                    "  {}  {}  {:<20} due {}  {}",
                    due.incident,
                    due.obligation,
                    due.duty.as_str(),
                    rfc3339(due.due_at),
                    due.standing.as_str()
                );
            }
        }
        IncidentCommand::Show { id, json, draft } => match draft.as_deref() {
            Some("md") => print!("{}", engine.draft(scope, id).await?.to_markdown()),
            Some("json") => println!(
                "{}",
                serde_json::to_string_pretty(&engine.draft(scope, id).await?.to_json())?
            ),
            Some(_) => return Err("--draft is md or json".into()),
            None if json => println!(
                "{}",
                serde_json::to_string_pretty(&engine.incident(scope, id).await?)?
            ),
            None => print_incident(&engine.incident(scope, id).await?, now),
        },
        IncidentCommand::Update {
            id,
            severity,
            personal_data,
            risk,
            workspace,
            data_set,
            details,
            status,
        } => {
            let mut incident = engine.incident(scope, id).await?;
            let assessment = match (personal_data, &risk) {
                (None, None) => None,
                (personal, risk) => Some(Assessment {
                    personal_data: personal.unwrap_or(incident.assessment.personal_data),
                    risk: match risk {
                        Some(risk) => risk.parse()?,
                        None => incident.assessment.risk,
                    },
                }),
            };
            let change = Reassessment {
                severity: severity.map(|s| s.parse()).transpose()?,
                assessment,
                workspaces: (!workspace.is_empty()).then_some(workspace),
                data_sets: (!data_set.is_empty())
                    .then(|| data_sets(&data_set))
                    .transpose()?,
            };
            if change != Reassessment::default() {
                incident = engine.reassess(scope, id, change).await?;
            }
            if let Some(details) = read_details(details.as_deref())? {
                incident = engine.set_details(scope, id, details).await?;
            }
            if let Some(status) = status {
                incident = engine.advance(scope, id, status.parse()?).await?;
            }
            print_incident(&incident, now);
        }
        IncidentCommand::Ack {
            id,
            obligation,
            evidence,
            reason,
        } => {
            let ack = match (evidence, reason) {
                (Some(evidence), late_reason) => Ack::Done {
                    evidence,
                    late_reason,
                },
                (None, Some(reason)) => Ack::Reason(reason),
                (None, None) => return Err("give --evidence, --reason, or both".into()),
            };
            let incident = engine.acknowledge(scope, id, obligation, ack).await?;
            print_incident(&incident, now);
        }
        IncidentCommand::Close { id } => {
            let incident = engine.close(scope, id).await?;
            print_incident(&incident, now);
        }
    }
    Ok(())
}
