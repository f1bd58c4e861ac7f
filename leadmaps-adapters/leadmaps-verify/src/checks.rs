//! The checks that read the deployment through its store and database: forced row-level
//! security, audit chains, staff second factors, breach and vulnerability clocks, residency.

use std::sync::Arc;

use leadmaps_core::audit::{AuditJob, CheckpointSigner};
use leadmaps_core::auth::totp::Subject;
use leadmaps_core::breach::{self, BreachStoreExt as _, RegisterEntry, Standing, verify_register};
use leadmaps_core::crypto::KeyRing;
use leadmaps_core::store::{Store, WorkspaceStoreExt as _};
use leadmaps_core::tenancy::{Action, Gate, Principal, Region, SystemTask};
use leadmaps_core::vulnerability;
use time::{Duration, OffsetDateTime};

use crate::report::{Check, Promise, count};
use leadmaps_backup::Database;

/// Forced row-level security and the rest of the doctor's lints (Postgres); not applicable to
/// SQLite, which has no database-level tenancy.
pub(crate) async fn row_level_security(database: &Database) -> Check {
    let promise = Promise::RowLevelSecurity;
    let Database::Postgres(pg) = database else {
        return Check::not_applicable(
            promise,
            "SQLite has no row-level security: the application gate is the only tenancy gate (the promise needs the Postgres store)",
        );
    };
    let config = pg.store_config();
    match leadmaps_store_postgres::doctor(&config).await {
        Ok(report) if report.is_clean() => Check::pass(
            promise,
            format!(
                "the doctor found nothing: every customer-data table ENABLE + FORCE row-level security, policies bound to the app role {}",
                config.app_role()
            ),
        ),
        Ok(report) => Check::fail(
            promise,
            format!(
                "the tenancy doctor has {}",
                count(report.findings().len() as u64, "finding", "findings")
            ),
        )
        .with_details(
            report
                .findings()
                .iter()
                .map(|f| format!("{} {}: {}", f.kind, f.object, f.explanation))
                .collect(),
        ),
        Err(error) => Check::error(promise, "running the tenancy doctor", &error),
    }
}

/// Every audit log's hash chain and signed checkpoints (instance tenant and every workspace),
/// and the breach register's chain.
pub(crate) async fn audit_trail(
    store: &Arc<dyn Store>,
    ring: &KeyRing,
    gate: &Gate,
    cadence: bool,
) -> Check {
    let promise = Promise::AuditTrail;
    let job = AuditJob::new(store.clone(), CheckpointSigner::new(ring), gate.clone());
    let reports = match job.verify_all(cadence).await {
        Ok(reports) => reports,
        Err(error) => return Check::error(promise, "reading the audit logs", &error),
    };
    let mut details: Vec<String> = reports
        .iter()
        .filter(|r| !r.is_ok())
        .map(ToString::to_string)
        .collect();
    let register = match register(store, gate).await {
        Ok(entries) => entries,
        Err(error) => return Check::error(promise, "reading the breach register", &error),
    };
    if let Err(problem) = verify_register(&register) {
        details.push(format!("breach register: {problem}"));
    }
    if !details.is_empty() {
        let logs = count(details.len() as u64, "log fails", "logs fail");
        return Check::fail(promise, format!("{logs} verification")).with_details(details);
    }
    let records: u64 = reports.iter().map(|r| r.records).sum();
    let checkpoints: u64 = reports.iter().map(|r| r.checkpoints).sum();
    let cadence = if cadence {
        ", checkpoints at the writer's cadence"
    } else {
        ""
    };
    Check::pass(
        promise,
        format!(
            "{} ({}, {}{cadence}) and the breach register ({}) verify",
            count(reports.len() as u64, "audit log", "audit logs"),
            count(records, "record", "records"),
            count(checkpoints, "signed checkpoint", "signed checkpoints"),
            count(register.len() as u64, "entry", "entries")
        ),
    )
}

/// The whole breach register, in order.
pub(crate) async fn register(
    store: &Arc<dyn Store>,
    gate: &Gate,
) -> leadmaps_core::Result<Vec<RegisterEntry>> {
    let scope = gate.authorize_breach(&Principal::System(SystemTask::Breach))?;
    store.all_register_entries(&scope).await
}

/// Every staff member has a TOTP factor (a factor enrolled by `staff add` and not yet confirmed
/// counts: staff sign-in requires its code, and the first code confirms it).
pub(crate) async fn staff_mfa(store: &Arc<dyn Store>) -> Check {
    let promise = Promise::StaffMfa;
    let staff = match store.list_staff().await {
        Ok(staff) => staff,
        Err(error) => return Check::error(promise, "listing staff", &error),
    };
    let (mut missing, mut pending) = (Vec::new(), Vec::new());
    for member in &staff {
        match store.totp(Subject::Staff(member.id)).await {
            Ok(Some(factor)) if factor.confirmed => {}
            Ok(Some(_)) => pending.push(format!(
                "staff {}: factor enrolled, confirmed by the first sign-in",
                member.id
            )),
            Ok(None) => missing.push(format!("staff {}: no second factor", member.id)),
            Err(error) => return Check::error(promise, "reading a staff factor", &error),
        }
    }
    if missing.is_empty() {
        Check::pass(
            promise,
            format!(
                "{}, each with a TOTP factor ({} awaiting a first sign-in)",
                count(staff.len() as u64, "staff account", "staff accounts"),
                pending.len()
            ),
        )
        .with_details(pending)
    } else {
        Check::fail(
            promise,
            format!(
                "{} of {} without a second factor",
                missing.len(),
                count(staff.len() as u64, "staff account", "staff accounts")
            ),
        )
        .with_details(missing)
    }
}

/// Open breach and vulnerability obligations with their clocks; any past its deadline and not
/// done fails (overdue, late with a reason, or done late with the reason still owed).
pub(crate) async fn breach_clock(
    store: &Arc<dyn Store>,
    gate: &Gate,
    now: OffsetDateTime,
) -> Check {
    let promise = Promise::BreachClock;
    let scope = match gate.authorize_breach(&Principal::System(SystemTask::Breach)) {
        Ok(scope) => scope,
        Err(denied) => return Check::error(promise, "the breach scope", &denied),
    };
    let incidents = match store.incidents(&scope).await {
        Ok(incidents) => incidents,
        Err(error) => return Check::error(promise, "reading incidents", &error),
    };
    let reports = match store.reports(&scope).await {
        Ok(reports) => reports,
        Err(error) => return Check::error(promise, "reading vulnerability reports", &error),
    };
    let mut open = Vec::new();
    for due in breach::due(&incidents, now) {
        open.push((
            format!(
                "incident {} obligation {} ({})",
                due.incident,
                due.obligation,
                due.duty.as_str()
            ),
            due.due_at,
            due.standing,
        ));
    }
    for due in vulnerability::due(&reports, now) {
        open.push((
            format!(
                "vulnerability report {} obligation {} ({})",
                due.report,
                due.obligation,
                due.duty.as_str()
            ),
            due.due_at,
            due.standing,
        ));
    }
    let mut late = 0u64;
    let details: Vec<String> = open
        .iter()
        .map(|(what, due_at, standing)| {
            if *standing == Standing::Pending {
                format!("{what}: due in {}", span(*due_at - now))
            } else {
                late += 1;
                format!(
                    "{what}: {} by {}",
                    standing.as_str().replace('_', " "),
                    span(now - *due_at)
                )
            }
        })
        .collect();
    if late == 0 {
        Check::pass(
            promise,
            format!(
                "{}, {}; {}, none past its deadline",
                count(incidents.len() as u64, "incident", "incidents"),
                count(
                    reports.len() as u64,
                    "vulnerability report",
                    "vulnerability reports"
                ),
                count(open.len() as u64, "open obligation", "open obligations")
            ),
        )
        .with_details(details)
    } else {
        Check::fail(
            promise,
            format!(
                "{} past the deadline and not done",
                count(late, "obligation is", "obligations are")
            ),
        )
        .with_details(details)
    }
}

/// `3d 4h`, `2h 5m`, `12m`: a duration for people.
fn span(duration: Duration) -> String {
    let minutes = duration.whole_minutes().max(0);
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Every workspace stored here belongs to the region this deployment serves.
pub(crate) async fn residency(store: &Arc<dyn Store>, gate: &Gate, region: Region) -> Check {
    let promise = Promise::Residency;
    let principal = Principal::System(SystemTask::Verify);
    let ids = match store.all_workspace_ids().await {
        Ok(ids) => ids,
        Err(error) => return Check::error(promise, "listing workspaces", &error),
    };
    let (mut stored, mut foreign) = (0u64, Vec::new());
    for id in ids {
        let workspace = match gate.authorize(&principal, id, Action::WorkspaceRead) {
            Ok(scope) => store.workspace(&scope).await,
            Err(denied) => Err(denied.into()),
        };
        match workspace {
            Ok(workspace) if workspace.region == region => stored += 1,
            Ok(workspace) => foreign.push(format!(
                "workspace {id} belongs to {} but is stored in this {} deployment",
                workspace.region.as_str(),
                region.as_str()
            )),
            Err(error) => return Check::error(promise, "reading a workspace", &error),
        }
    }
    Check::judge(
        promise,
        foreign,
        || {
            format!(
                "{}, all of region {}, the region this deployment serves",
                count(stored, "workspace", "workspaces"),
                region.as_str()
            )
        },
        |n| {
            format!(
                "{} of another region stored here",
                count(n, "workspace", "workspaces")
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::span;
    use time::Duration;

    #[test]
    fn spans_read_for_people() {
        assert_eq!(span(Duration::minutes(12)), "12m");
        assert_eq!(span(Duration::minutes(125)), "2h 5m");
        assert_eq!(span(Duration::hours(76)), "3d 4h");
        assert_eq!(span(Duration::seconds(-5)), "0m");
    }
}
