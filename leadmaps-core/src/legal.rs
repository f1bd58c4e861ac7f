//! The customer's contract, as data: the sub-processor register (who processes customer data
//! for leadmaps, for what, where) in versions, each change e-mailed to every workspace's admins
//! and recorded in its audit log (`subprocessors.changed`), and each workspace's acceptance of the
//! data processing agreement (who, when, which version; `dpa.accepted`).
//!
//! [`Register::seed`] is an example register of eight vendors for an EU analytics service, there
//! so a fresh install shows a complete page. **Operators replace it** with their own vendors
//! (a JSON file of [`Register`] versions loaded into a [`RegisterBook`]): a change of vendors is a
//! new version with a later `effective_from`, never an edit of a published one.
//!
//! ```
//! use leadmaps_core::legal::{Register, RegisterBook};
//! let book = RegisterBook::default();
//! let current = book.current(time::macros::datetime!(2026-03-02 9:00 UTC)).unwrap();
//! assert_eq!(current.entries.len(), 8);
//! assert!(current.entries.iter().any(|s| s.vendor.starts_with("Backblaze")));
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, OffsetDateTime};

use crate::audit::{AuditAction, AuditActor, AuditDraft, AuditRecord, Target};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::mail::{Email, Mailer};
use crate::store::Store;
use crate::tenancy::{Action, Gate, Principal, Scope, SystemTask, WorkspaceId};

time::serde::format_description!(iso_date, Date, "[year]-[month]-[day]");

/// One sub-processor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subprocessor {
    /// The vendor's legal name.
    pub vendor: String,
    /// What it does with customer data.
    pub purpose: String,
    /// Where it processes it (e.g. "EU (Germany)").
    pub region: String,
    /// Since when it is a sub-processor (`YYYY-MM-DD` in JSON).
    #[serde(with = "iso_date")]
    pub since: Date,
}

/// One version of the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Its version, e.g. `2026-01-01`.
    pub version: String,
    /// From when it is in force.
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    /// The sub-processors, by vendor.
    pub entries: Vec<Subprocessor>,
}

/// Longest text of a register field, in bytes.
pub const MAX_FIELD: usize = 200;

fn check(text: &str, what: &str) -> Result<()> {
    crate::breach::check_text(text, MAX_FIELD, what)
}

impl Register {
    /// The example register: eight vendors an EU analytics service typically uses. An example,
    /// not a statement about any deployment: operators replace it (see the module docs).
    pub fn seed() -> Self {
        let since = time::macros::date!(2026 - 01 - 01);
        let entry = |vendor: &str, purpose: &str, region: &str| Subprocessor {
            vendor: vendor.into(),
            purpose: purpose.into(),
            region: region.into(),
            since,
        };
        Register {
            version: "2026-01-01".into(),
            effective_from: time::macros::datetime!(2026-01-01 0:00 UTC),
            entries: vec![
                entry(
                    "Hetzner Online GmbH",
                    "Hosting: application servers and databases",
                    "EU (Germany, Finland)",
                ),
                entry(
                    "Backblaze, Inc. (B2, EU Central)",
                    "Object storage: encrypted backups",
                    "EU (Netherlands)",
                ),
                entry(
                    "Postmark (ActiveCampaign, LLC)",
                    "Transactional e-mail: sign-in links and notices",
                    "EU (Germany) processing; US entity under the EU SCCs",
                ),
                entry(
                    "Functional Software, Inc. (Sentry)",
                    "Error reporting, scrubbed of personal data",
                    "EU (Germany)",
                ),
                entry(
                    "Help Scout PBC",
                    "Support desk: customer support conversations",
                    "US, under the EU SCCs",
                ),
                entry(
                    "Stripe Payments Europe, Ltd.",
                    "Payments and invoicing",
                    "EU (Ireland)",
                ),
                entry(
                    "Bunny Way d.o.o. (bunny.net)",
                    "DNS and CDN for the tracker script",
                    "EU (Slovenia), global edge",
                ),
                entry(
                    "Atlassian Pty Ltd (Statuspage)",
                    "Status page and incident subscriptions",
                    "US, under the EU SCCs",
                ),
            ],
        }
    }

    /// Checks the version and every field: 1 to [`MAX_FIELD`] bytes without control
    /// characters, vendors unique.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field.
    pub fn validate(&self) -> Result<()> {
        check(&self.version, "register version")?;
        let mut vendors = std::collections::BTreeSet::new();
        for entry in &self.entries {
            check(&entry.vendor, "vendor")?;
            check(&entry.purpose, "purpose")?;
            check(&entry.region, "region")?;
            if !vendors.insert(entry.vendor.as_str()) {
                return Err(Error::invalid("a vendor appears twice in the register"));
            }
        }
        Ok(())
    }

    /// What changed from `older` to this version.
    pub fn changes_from(&self, older: &Register) -> RegisterChange {
        let find =
            |list: &[Subprocessor], vendor: &str| list.iter().find(|s| s.vendor == vendor).cloned();
        RegisterChange {
            added: self
                .entries
                .iter()
                .filter(|s| find(&older.entries, &s.vendor).is_none())
                .cloned()
                .collect(),
            removed: older
                .entries
                .iter()
                .filter(|s| find(&self.entries, &s.vendor).is_none())
                .cloned()
                .collect(),
            changed: self
                .entries
                .iter()
                .filter(|s| find(&older.entries, &s.vendor).is_some_and(|o| o != **s))
                .cloned()
                .collect(),
        }
    }
}

/// The difference between two register versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegisterChange {
    /// New vendors.
    pub added: Vec<Subprocessor>,
    /// Vendors no longer used.
    pub removed: Vec<Subprocessor>,
    /// Vendors whose purpose, region or date changed (as they are now).
    pub changed: Vec<Subprocessor>,
}

/// Every version of the register, by `effective_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBook {
    versions: Vec<Register>,
}

impl Default for RegisterBook {
    fn default() -> Self {
        Self {
            versions: vec![Register::seed()],
        }
    }
}

impl RegisterBook {
    /// A book of `versions`, each validated, versions unique.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad version, a version twice, or none.
    pub fn new(mut versions: Vec<Register>) -> Result<Self> {
        if versions.is_empty() {
            return Err(Error::invalid("a register book needs a version"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for register in &versions {
            register.validate()?;
            if !seen.insert(register.version.clone()) {
                return Err(Error::invalid("a register version appears twice"));
            }
        }
        versions.sort_by_key(|r| r.effective_from);
        Ok(Self { versions })
    }

    /// A book read from JSON: an array of [`Register`] versions.
    ///
    /// # Errors
    /// [`Error::Invalid`] for JSON that does not hold a valid book (without echoing it).
    pub fn from_json(text: &str) -> Result<Self> {
        let versions: Vec<Register> = serde_json::from_str(text)
            .map_err(|_| Error::invalid("the sub-processor register is not valid JSON"))?;
        Self::new(versions)
    }

    /// The version in force at `now`.
    pub fn current(&self, now: OffsetDateTime) -> Option<&Register> {
        self.versions.iter().rev().find(|r| r.effective_from <= now)
    }

    /// The version before `register`, if any.
    pub fn previous(&self, register: &Register) -> Option<&Register> {
        let at = self
            .versions
            .iter()
            .position(|r| r.version == register.version)?;
        at.checked_sub(1).map(|i| &self.versions[i])
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[Register] {
        &self.versions
    }
}

/// A workspace's acceptance of a version of the data processing agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpaAcceptance {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The DPA version accepted.
    pub version: String,
    /// Who accepted it: the scope's holder (a member, or an API key).
    pub accepted_by: AuditActor,
    /// When.
    pub accepted_at: OffsetDateTime,
}

/// That a workspace was told about a register version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubprocessorNotice {
    /// The register version.
    pub version: String,
    /// When the admins were e-mailed.
    pub notified_at: OffsetDateTime,
    /// How many admins it went to.
    pub recipients: u32,
}

/// Checks a DPA version string: 1 to 64 bytes of letters, digits, `.`, `-` and `_`.
///
/// # Errors
/// [`Error::Invalid`].
pub fn validate_dpa_version(version: &str) -> Result<()> {
    if version.is_empty()
        || version.len() > 64
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(Error::invalid(
            "a DPA version is 1 to 64 letters, digits, '.', '-' or '_'",
        ));
    }
    Ok(())
}

/// The audit draft of a DPA acceptance: what [`LegalStore::accept_dpa`] appends.
pub fn dpa_draft(scope: &Scope, version: &str, at: OffsetDateTime) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::DpaAccepted, Target::new("dpa", version)).with_after(
        json!({
            "version": version,
            "accepted_at": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }),
    )
}

/// Storage of DPA acceptances and sub-processor notices: customer data of one workspace each.
#[async_trait]
pub trait LegalStore: Send + Sync {
    /// Records that the workspace accepted DPA `version` at `at`, by the scope's holder: appends
    /// [`dpa_draft`] to the workspace's audit log and stores the acceptance in the same
    /// transaction (log, then act; both or neither). Requires [`Action::LegalAccept`].
    ///
    /// # Errors
    /// [`Error::Conflict`] when the workspace accepted that version already;
    /// [`Error::Invalid`] for a malformed version; the audit append's errors.
    async fn accept_dpa(
        &self,
        scope: &Scope,
        version: &str,
        at: OffsetDateTime,
    ) -> Result<(DpaAcceptance, AuditRecord)>;

    /// The workspace's DPA acceptances, oldest first. Requires [`Action::LegalRead`].
    async fn dpa_acceptances(&self, scope: &Scope) -> Result<Vec<DpaAcceptance>>;

    /// Records that the workspace's admins were told about a register version and appends
    /// `audit` (`subprocessors.changed`) in the same transaction. Requires [`Action::LegalRead`]
    /// (a notice changes no setting of the workspace).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the workspace has a notice for that version; the audit append's
    /// errors, with nothing stored.
    async fn record_subprocessor_notice(
        &self,
        scope: &Scope,
        notice: &SubprocessorNotice,
        audit: AuditDraft,
    ) -> Result<AuditRecord>;

    /// The workspace's sub-processor notices, oldest first. Requires [`Action::LegalRead`].
    async fn subprocessor_notices(&self, scope: &Scope) -> Result<Vec<SubprocessorNotice>>;
}

/// What a notifier run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoticeReport {
    /// Workspaces told about the change in this run.
    pub notified: u32,
    /// Workspaces told before (or created after the change took effect).
    pub skipped: u32,
    /// Workspaces whose notice failed (retried on the next run).
    pub failed: u32,
}

/// Tells every workspace's admins about a change of the sub-processor register: for the version
/// in force now, when it has a predecessor, each workspace that existed when it took effect and
/// has no notice for it gets an e-mail to each admin (with an idempotency key, so a retried run
/// does not send twice through a mailer that honours it), then the notice and its
/// `subprocessors.changed` record in the workspace's log, in one transaction.
#[derive(Clone)]
pub struct SubprocessorNotifier {
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    gate: Gate,
    book: Arc<RegisterBook>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SubprocessorNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubprocessorNotifier")
            .finish_non_exhaustive()
    }
}

impl SubprocessorNotifier {
    /// A notifier over `store`, sending through `mailer`.
    pub fn new(
        store: Arc<dyn Store>,
        mailer: Arc<dyn Mailer>,
        gate: Gate,
        book: Arc<RegisterBook>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            mailer,
            gate,
            book,
            clock,
        }
    }

    /// One run over every workspace.
    ///
    /// # Errors
    /// Store errors while listing workspaces; a failure for one workspace is counted, not
    /// returned.
    pub async fn run(&self) -> Result<NoticeReport> {
        let mut report = NoticeReport::default();
        let now = self.clock.now();
        let Some(current) = self.book.current(now) else {
            return Ok(report);
        };
        let Some(previous) = self.book.previous(current) else {
            return Ok(report);
        };
        let change = current.changes_from(previous);
        let mut after = None;
        loop {
            let ids = self.store.workspace_ids(after, 100).await?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            after = Some(last);
            // The instance tenant holds people's own secrets, not a customer's workspace.
            for workspace in ids.into_iter().filter(|w| *w != WorkspaceId::INSTANCE) {
                match self.notify(workspace, current, previous, &change).await {
                    Ok(true) => report.notified += 1,
                    Ok(false) => report.skipped += 1,
                    Err(_) => report.failed += 1,
                }
            }
        }
        Ok(report)
    }

    async fn notify(
        &self,
        workspace: WorkspaceId,
        current: &Register,
        previous: &Register,
        change: &RegisterChange,
    ) -> Result<bool> {
        let principal = Principal::System(SystemTask::Legal);
        let read = self
            .gate
            .authorize(&principal, workspace, Action::WorkspaceRead)?;
        let legal = self
            .gate
            .authorize(&principal, workspace, Action::LegalRead)?;
        if self.store.workspace(&read).await?.created_at >= current.effective_from
            || self
                .store
                .subprocessor_notices(&legal)
                .await?
                .iter()
                .any(|n| n.version == current.version)
        {
            return Ok(false);
        }
        let admins = self.store.admin_addresses(&read).await?;
        let (subject, text) = compose(current, change);
        for (i, to) in admins.iter().enumerate() {
            self.mailer
                .send(&Email {
                    to: to.clone(),
                    subject: subject.clone(),
                    text: text.clone(),
                    idempotency_key: Some(format!(
                        "subprocessors/{}/{workspace}/{i}",
                        current.version
                    )),
                })
                .await?;
        }
        let notified_at = self.clock.now();
        let notice = SubprocessorNotice {
            version: current.version.clone(),
            notified_at,
            recipients: u32::try_from(admins.len()).unwrap_or(u32::MAX),
        };
        let draft = AuditDraft::new(
            &legal,
            AuditAction::SubprocessorsChanged,
            Target::new("subprocessors", current.version.clone()),
        )
        .with_before(json!({"version": previous.version, "entries": previous.entries}))
        .with_after(json!({
            "version": current.version,
            "entries": current.entries,
            "change": change,
            "notified_at": notified_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "recipients": notice.recipients,
        }));
        match self
            .store
            .record_subprocessor_notice(&legal, &notice, draft)
            .await
        {
            Ok(_) | Err(Error::Conflict(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }
}

fn line(s: &Subprocessor) -> String {
    format!(
        "- {}: {} ({}), since {}",
        s.vendor, s.purpose, s.region, s.since
    )
}

/// The notice e-mail: subject and plain text.
fn compose(current: &Register, change: &RegisterChange) -> (String, String) {
    let subject = format!("Change of sub-processors (version {})", current.version);
    let mut text = format!(
        "The list of sub-processors that process your workspace's data changes with version {}, \
         in force from {}.\n",
        current.version,
        current.effective_from.date()
    );
    for (title, list) in [
        ("Added", &change.added),
        ("Removed", &change.removed),
        ("Changed", &change.changed),
    ] {
        if !list.is_empty() {
            text.push_str(&format!("\n{title}:\n"));
            for s in list {
                text.push_str(&line(s));
                text.push('\n');
            }
        }
    }
    text.push_str(
        "\nThe full list is at /api/v1/legal/subprocessors. Reply to object to a change.\n",
    );
    (subject, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_seed_is_valid_and_a_book_picks_the_version_in_force() {
        Register::seed().validate().unwrap();
        let mut next = Register::seed();
        next.version = "2026-06-01".into();
        next.effective_from = datetime!(2026-06-01 0:00 UTC);
        next.entries.retain(|s| !s.vendor.starts_with("Help Scout"));
        next.entries[0].region = "EU (Germany)".into();
        next.entries.push(Subprocessor {
            vendor: "Zammad GmbH".into(),
            purpose: "Support desk".into(),
            region: "EU (Germany)".into(),
            since: time::macros::date!(2026 - 06 - 01),
        });
        let json = serde_json::to_string(&vec![next.clone(), Register::seed()]).unwrap();
        let book = RegisterBook::from_json(&json).unwrap();
        assert_eq!(
            book.current(datetime!(2026-03-01 0:00 UTC))
                .unwrap()
                .version,
            "2026-01-01"
        );
        let current = book.current(datetime!(2026-07-01 0:00 UTC)).unwrap();
        assert_eq!(current.version, "2026-06-01");
        let change = current.changes_from(book.previous(current).unwrap());
        assert_eq!(change.added.len(), 1);
        assert_eq!(change.removed.len(), 1);
        assert_eq!(change.changed.len(), 1);
        assert!(book.previous(&Register::seed()).is_none());
        let mut twice = Register::seed();
        twice.entries.push(twice.entries[0].clone());
        assert!(twice.validate().is_err());
        assert!(RegisterBook::from_json("[]").is_err());
    }

    #[test]
    fn dpa_versions_are_checked() {
        validate_dpa_version("2026-01").unwrap();
        assert!(validate_dpa_version("").is_err());
        assert!(validate_dpa_version("v1 final").is_err());
    }
}
