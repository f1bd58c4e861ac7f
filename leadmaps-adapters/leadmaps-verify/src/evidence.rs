//! The evidence bundle: a dated directory an auditor can take away and check without access to
//! the deployment.
//!
//! ```text
//! leadmaps-evidence-20261129T214500Z/
//!   verify.json              the verification report (one check per promise)
//!   verify.txt               the same as a table
//!   breach-register.json     every register entry, hashes in hex, and whether the chain verifies
//!   vulnerability-reports.json
//!   subprocessors.json       every version of the sub-processor register
//!   key-rotation.json        KEKs configured and in use, tenant keys not yet on the primary, and
//!                            every tenant-key and salt record of every audit log
//!   MANIFEST.json            when, which build, the verdict, and each file's size and SHA-256
//!   SHA256SUMS               `sha256sum -c SHA256SUMS` checks every file above
//! ```
//!
//! Nothing in it is secret: the registers and logs hold ids, times, hashes and redacted states;
//! the report holds places and counts.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use leadmaps_core::audit::{AuditAction, AuditStoreExt as _};
use leadmaps_core::breach::{actor_name, verify_register};
use leadmaps_core::legal::RegisterBook;
use leadmaps_core::store::WorkspaceStoreExt as _;
use leadmaps_core::tenancy::{Action, Principal, SystemTask, WorkspaceId};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::format_description::well_known::Rfc3339;

use crate::Deployment;
use crate::checks::register;
use crate::report::Report;

/// Why a bundle could not be written.
pub type EvidenceError = Box<dyn std::error::Error + Send + Sync>;

/// A bundle that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bundle {
    /// Its directory.
    pub dir: PathBuf,
    /// Each file: name, bytes, SHA-256 in hex (`SHA256SUMS` itself last, without a hash).
    pub files: Vec<(String, u64, String)>,
}

/// The audit actions of key rotation: tenant keys created, rewrapped and destroyed, and salts
/// destroyed.
const KEY_ACTIONS: [AuditAction; 4] = [
    AuditAction::TenantKeyCreated,
    AuditAction::TenantKeyRewrapped,
    AuditAction::TenantKeysDestroyed,
    AuditAction::SaltsDestroyed,
];

/// Writes the bundle of `report` for `deployment` under `out` (created if missing) in a new
/// directory named for the report's start time; refuses to overwrite one.
///
/// # Errors
/// When a register or log cannot be read, or a file cannot be written.
pub async fn write(
    out: &Path,
    deployment: &Deployment,
    report: &Report,
    subprocessors: &RegisterBook,
) -> Result<Bundle, EvidenceError> {
    let stamp = report.started_at.to_offset(time::UtcOffset::UTC).format(
        time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
    )?;
    let dir = out.join(format!("leadmaps-evidence-{stamp}"));
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("verify.json", report.to_json().into_bytes()),
        ("verify.txt", format!("{report}\n").into_bytes()),
        (
            "breach-register.json",
            pretty(&breach_register(deployment).await?),
        ),
        (
            "vulnerability-reports.json",
            pretty(&vulnerability_reports(deployment).await?),
        ),
        (
            "subprocessors.json",
            pretty(&serde_json::to_value(subprocessors.versions())?),
        ),
        (
            "key-rotation.json",
            pretty(&key_rotation(deployment).await?),
        ),
    ];
    let listed: Vec<Value> = files
        .iter()
        .map(|(name, bytes)| json!({"name": name, "bytes": bytes.len(), "sha256": sha256(bytes)}))
        .collect();
    let manifest = json!({
        "bundle": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "generated_at": report.started_at.format(&Rfc3339)?,
        "generator": format!("leadmaps-verify {}", env!("CARGO_PKG_VERSION")),
        "region": report.region,
        "store": report.store,
        "verdict": if report.passed() { "pass" } else { "fail" },
        "files": listed,
    });
    files.push(("MANIFEST.json", pretty(&manifest)));
    let sums: String = files
        .iter()
        .map(|(name, bytes)| format!("{}  {name}\n", sha256(bytes)))
        .collect();
    files.push(("SHA256SUMS", sums.into_bytes()));

    let written: Vec<(String, u64, String)> = files
        .iter()
        .map(|(name, bytes)| {
            let hash = if *name == "SHA256SUMS" {
                String::new()
            } else {
                sha256(bytes)
            };
            ((*name).to_owned(), bytes.len() as u64, hash)
        })
        .collect();
    let owned: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes))
        .collect();
    let target = dir.clone();
    tokio::task::spawn_blocking(move || write_files(&target, owned)).await??;
    Ok(Bundle {
        dir,
        files: written,
    })
}

fn write_files(dir: &Path, files: Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::create_dir(dir)?;
    for (name, bytes) in files {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(name))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    Ok(())
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    text.push(b'\n');
    text
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn breach_register(deployment: &Deployment) -> Result<Value, EvidenceError> {
    let entries = register(&deployment.store, &deployment.gate()).await?;
    let chain = match verify_register(&entries) {
        Ok(()) => "verified".to_owned(),
        Err(problem) => format!("broken: {problem}"),
    };
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": e.at.format(&Rfc3339).unwrap_or_default(),
                "incident": e.incident.to_string(),
                "actor": actor_name(e.actor),
                "change": e.change.as_str(),
                "snapshot": e.snapshot,
                "prev_hash": hex::encode(e.prev_hash),
                "hash": hex::encode(e.hash),
            })
        })
        .collect();
    Ok(json!({"chain": chain, "entries": entries}))
}

async fn vulnerability_reports(deployment: &Deployment) -> Result<Value, EvidenceError> {
    let scope = deployment
        .gate()
        .authorize_breach(&Principal::System(SystemTask::Breach))?;
    Ok(serde_json::to_value(
        deployment.store.reports(&scope).await?,
    )?)
}

async fn key_rotation(deployment: &Deployment) -> Result<Value, EvidenceError> {
    let (store, ring, gate) = (&deployment.store, &deployment.ring, deployment.gate());
    let primary = ring.primary().id();
    let mut events = Vec::new();
    let auditor = Principal::System(SystemTask::Audit);
    let mut logs = vec![WorkspaceId::INSTANCE];
    logs.extend(store.all_workspace_ids().await?);
    for workspace in logs {
        let scope = gate.authorize(&auditor, workspace, Action::AuditRead)?;
        for record in store.all_audit_records(&scope).await? {
            if KEY_ACTIONS.contains(&record.action) {
                let mut value = record.to_json();
                value["workspace"] = json!(workspace.to_string());
                events.push((record.at, value));
            }
        }
    }
    events.sort_by_key(|(at, _)| *at);
    let events: Vec<Value> = events.into_iter().map(|(_, value)| value).collect();
    Ok(json!({
        "configured_keks": ring.ids().collect::<Vec<_>>(),
        "primary_kek": primary,
        "keks_in_use": store.kek_ids_in_use().await?,
        "tenant_keys_not_on_primary": store.count_needing_rewrap(primary).await?,
        "events": events,
    }))
}
