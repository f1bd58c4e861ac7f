//! What a verification found: one [`Check`] per promise, gathered in a [`Report`] that prints as a
//! table or serialises as JSON.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

/// A promise of the trust page that `server verify` checks. The `id` is stable (JSON, scripts);
/// the wording is the page's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Promise {
    /// Public endpoints speak TLS 1.3 only and send HSTS.
    Transport,
    /// Row-level security is forced on every customer-data table; the doctor finds nothing.
    RowLevelSecurity,
    /// Secrets are encrypted at rest: a database dump reveals nothing usable.
    SecretsAtRest,
    /// Events are ingested without keeping personal data (no IP address, no user agent).
    NoPersonalData,
    /// Every action is audited in tamper-evident logs (hash chains, signed checkpoints).
    AuditTrail,
    /// Every staff account has a second factor.
    StaffMfa,
    /// Breach and vulnerability obligations are met within their clocks.
    BreachClock,
    /// Data is kept in the customer's region.
    Residency,
    /// Encrypted backups are recent and restore.
    Backups,
}

impl Promise {
    /// Every promise, in report order.
    pub const ALL: [Promise; 9] = [
        Promise::Transport,
        Promise::RowLevelSecurity,
        Promise::SecretsAtRest,
        Promise::NoPersonalData,
        Promise::AuditTrail,
        Promise::StaffMfa,
        Promise::BreachClock,
        Promise::Residency,
        Promise::Backups,
    ];

    /// The stable id: `transport`, `row_level_security`, ...
    pub const fn id(self) -> &'static str {
        match self {
            Promise::Transport => "transport",
            Promise::RowLevelSecurity => "row_level_security",
            Promise::SecretsAtRest => "secrets_at_rest",
            Promise::NoPersonalData => "no_personal_data",
            Promise::AuditTrail => "audit_trail",
            Promise::StaffMfa => "staff_mfa",
            Promise::BreachClock => "breach_clock",
            Promise::Residency => "residency",
            Promise::Backups => "backups",
        }
    }

    /// The promise in the trust page's words.
    pub const fn statement(self) -> &'static str {
        match self {
            Promise::Transport => "public endpoints speak TLS 1.3 only and send HSTS",
            Promise::RowLevelSecurity => {
                "row-level security is forced on every customer-data table behind one gate"
            }
            Promise::SecretsAtRest => {
                "secrets are AES-256-GCM encrypted at rest: a database dump reveals nothing usable"
            }
            Promise::NoPersonalData => {
                "events are ingested without keeping personal data (no IP address or user agent)"
            }
            Promise::AuditTrail => {
                "every action is audited in hash-chained logs with signed checkpoints"
            }
            Promise::StaffMfa => "every staff account has a second factor",
            Promise::BreachClock => {
                "breach obligations meet their clocks (72 h authority, 4 h admins), vulnerability reports theirs"
            }
            Promise::Residency => "data is kept in the customer's region",
            Promise::Backups => "database backups are encrypted, recent and restorable",
        }
    }
}

impl fmt::Display for Promise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The promise holds, as far as this check can see.
    Pass,
    /// The promise is broken, or could not be checked (a missing input is a failure, never a
    /// silent pass).
    Fail,
    /// The promise does not apply to this kind of deployment (said why in the summary); does
    /// not fail the report.
    NotApplicable,
}

impl Status {
    /// `pass`, `FAIL` or `n/a`, as the table prints it.
    pub const fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::NotApplicable => "n/a",
        }
    }
}

/// One promise checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which promise.
    pub promise: Promise,
    /// How it came out.
    pub status: Status,
    /// One line: what was checked and what was found.
    pub summary: String,
    /// Each finding (for a failure) or item looked at (open obligations, restored tables), one
    /// line each. Never a secret, address or token: places, ids and counts only.
    pub details: Vec<String>,
}

impl Check {
    /// A passing check.
    pub fn pass(promise: Promise, summary: impl Into<String>) -> Self {
        Self {
            promise,
            status: Status::Pass,
            summary: summary.into(),
            details: Vec::new(),
        }
    }

    /// A failing check.
    pub fn fail(promise: Promise, summary: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            ..Self::pass(promise, summary)
        }
    }

    /// A check that does not apply here.
    pub fn not_applicable(promise: Promise, summary: impl Into<String>) -> Self {
        Self {
            status: Status::NotApplicable,
            ..Self::pass(promise, summary)
        }
    }

    /// The same check with `details`.
    #[must_use]
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// Passes with `pass()` when `problems` is empty; otherwise fails with `fail(how many)` and
    /// lists them as its details.
    pub(crate) fn judge(
        promise: Promise,
        problems: Vec<String>,
        pass: impl FnOnce() -> String,
        fail: impl FnOnce(u64) -> String,
    ) -> Self {
        if problems.is_empty() {
            Self::pass(promise, pass())
        } else {
            Self::fail(promise, fail(problems.len() as u64)).with_details(problems)
        }
    }

    /// A check that could not run: a failure naming what went wrong.
    pub fn error(promise: Promise, what: &str, error: &dyn std::error::Error) -> Self {
        Self::fail(promise, format!("could not check: {what}: {error}"))
    }
}

/// `1 workspace`, `2 workspaces`: `n` and the noun in its number.
pub(crate) fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Every check of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// When the run started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The region the deployment serves.
    pub region: String,
    /// `sqlite` or `postgres`.
    pub store: String,
    /// The public base URL probed, if one was given.
    pub public_url: Option<String>,
    /// One check per promise, in [`Promise::ALL`] order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The check of `promise`.
    pub fn check(&self, promise: Promise) -> Option<&Check> {
        self.checks.iter().find(|c| c.promise == promise)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }
}

impl fmt::Display for Report {
    /// A pass/fail table, details indented under their promise, and the verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = Promise::ALL.iter().map(|p| p.id().len()).max().unwrap_or(0);
        writeln!(f, "{:<width$}  {:<6}  SUMMARY", "PROMISE", "RESULT")?;
        for check in &self.checks {
            writeln!(
                f,
                "{:<width$}  {:<6}  {}",
                check.promise.id(),
                check.status.label(),
                check.summary
            )?;
            for detail in &check.details {
                writeln!(f, "{:<width$}          - {detail}", "")?;
            }
        }
        let failed: Vec<&str> = self.failures().map(|c| c.promise.id()).collect();
        if failed.is_empty() {
            write!(f, "verdict: every promise checked holds")
        } else {
            write!(f, "verdict: FAILED: {}", failed.join(", "))
        }
    }
}
