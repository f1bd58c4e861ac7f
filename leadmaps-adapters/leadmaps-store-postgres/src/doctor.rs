//! The doctor: reads the catalog and reports what would weaken the second gate.
//!
//! It only reads (`pg_class`, `pg_attribute`, `pg_index`, `pg_policy`, `pg_proc`, `pg_operator`,
//! `pg_roles`, `pg_trigger`), so any role that may connect can run it; it changes nothing. What it looks at is
//! schema `leadmaps`, where every table with a `workspace_id` column is customer data.
//!
//! How it finds the functions a policy calls: it parses the stored expression trees
//! (`pg_policy.polqual` and `polwithcheck` as text) for `:funcid`, `:opfuncid`, `:aggfnoid` and
//! `:winfnoid` (functions) and `:opno` (operators, mapped to their function through
//! `pg_operator.oprcode`). `pg_depend` is not enough: PostgreSQL records no dependency on built-in
//! (pinned) objects, so a policy calling `random()` or `clock_timestamp()` leaves no trace there.
//! What it cannot see: the body of a function declared STABLE or IMMUTABLE that calls a VOLATILE
//! one, and the input and output functions behind a type cast.

use std::fmt;

use leadmaps_core::Result;
use tokio_postgres::Client;

use crate::config::PostgresConfig;
use crate::error::pg;

/// What kind of weakness a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FindingKind {
    /// A customer-data table without `ENABLE ROW LEVEL SECURITY`.
    RlsNotEnabled,
    /// A customer-data table without `FORCE ROW LEVEL SECURITY`.
    RlsNotForced,
    /// A policy whose `USING` or `WITH CHECK` is `true`, or missing for a command it covers.
    AlwaysTruePolicy,
    /// A policy that calls a VOLATILE function.
    VolatilePolicyFunction,
    /// The app role is a superuser, bypasses row-level security, or is a member of a role that
    /// is one or owns customer-data tables.
    PrivilegedAppRole,
    /// The configured app role does not exist.
    AppRoleMissing,
    /// TRUNCATE (which ignores row-level security) granted on a customer-data table to a role
    /// other than its owner.
    TruncateGranted,
    /// A view that runs with its owner's rights (no `security_invoker=true`), or a materialized
    /// view, which row-level security never covers.
    ViewWithoutSecurityInvoker,
    /// A customer-data table without an index whose first column is `workspace_id`.
    MissingWorkspaceIndex,
    /// An audit table (`audit_records`, `audit_checkpoints`) the app role may UPDATE or DELETE,
    /// or whose append-only trigger is missing or disabled.
    AuditNotAppendOnly,
}

impl FindingKind {
    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::RlsNotEnabled => "rls_not_enabled",
            FindingKind::RlsNotForced => "rls_not_forced",
            FindingKind::AlwaysTruePolicy => "always_true_policy",
            FindingKind::VolatilePolicyFunction => "volatile_policy_function",
            FindingKind::PrivilegedAppRole => "privileged_app_role",
            FindingKind::AppRoleMissing => "app_role_missing",
            FindingKind::TruncateGranted => "truncate_granted",
            FindingKind::ViewWithoutSecurityInvoker => "view_without_security_invoker",
            FindingKind::MissingWorkspaceIndex => "missing_workspace_index",
            FindingKind::AuditNotAppendOnly => "audit_not_append_only",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One weakness: its kind, the object it is about, and a one-line explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What kind of weakness.
    pub kind: FindingKind,
    /// The object: a table (`leadmaps.events`), a policy (`leadmaps.events/events_tenant`), a
    /// role, or a grant (`leadmaps.events TO some_role`).
    pub object: String,
    /// Why it matters, in one line.
    pub explanation: String,
}

/// What [`doctor`] found, ordered by kind, then object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorReport {
    findings: Vec<Finding>,
}

impl DoctorReport {
    /// Every finding.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Whether there is nothing to report.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The findings of one kind.
    pub fn of_kind(&self, kind: FindingKind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind == kind)
    }

    /// Whether there is a finding of `kind` about `object`.
    pub fn has(&self, kind: FindingKind, object: &str) -> bool {
        self.of_kind(kind).any(|f| f.object == object)
    }

    fn push(&mut self, kind: FindingKind, object: impl Into<String>, explanation: &str) {
        self.findings.push(Finding {
            kind,
            object: object.into(),
            explanation: explanation.to_owned(),
        });
    }
}

impl fmt::Display for DoctorReport {
    /// A plain-text table, one finding a line; "no findings" when clean.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return writeln!(f, "no findings");
        }
        let kind_width = self
            .findings
            .iter()
            .map(|x| x.kind.as_str().len())
            .chain(["KIND".len()])
            .max()
            .unwrap_or(0);
        let object_width = self
            .findings
            .iter()
            .map(|x| x.object.chars().count())
            .chain(["OBJECT".len()])
            .max()
            .unwrap_or(0);
        writeln!(
            f,
            "{:<kind_width$}  {:<object_width$}  EXPLANATION",
            "KIND", "OBJECT"
        )?;
        writeln!(
            f,
            "{}  {}  {}",
            "-".repeat(kind_width),
            "-".repeat(object_width),
            "-".repeat("EXPLANATION".len())
        )?;
        for finding in &self.findings {
            writeln!(
                f,
                "{:<kind_width$}  {:<object_width$}  {}",
                finding.kind.as_str(),
                finding.object,
                finding.explanation
            )?;
        }
        writeln!(f, "{} finding(s)", self.findings.len())
    }
}

/// Connects over `config`'s owner connection and examines schema `leadmaps` and `config`'s app
/// role; see [`doctor_client`].
///
/// # Errors
/// [`leadmaps_core::Error::Invalid`] for a malformed app role name;
/// [`leadmaps_core::Error::Unavailable`] when the database cannot be reached.
pub async fn doctor(config: &PostgresConfig) -> Result<DoctorReport> {
    let app_role = config.validated_app_role()?;
    let (client, connection) = config
        .owner_config()
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(pg)?;
    let driver = tokio::spawn(connection);
    let report = doctor_client(&client, app_role).await;
    drop(client);
    driver.abort();
    report
}

/// Examines schema `leadmaps` and the role `app_role` on an open connection (any role may run
/// it) and reports:
///
/// - every table with a `workspace_id` column lacking `ENABLE` or `FORCE ROW LEVEL SECURITY`, or
///   an index whose first column is `workspace_id`;
/// - every policy on a table of the schema whose `USING` or `WITH CHECK` is `true` (however
///   parenthesised) or missing for a command it covers (a RESTRICTIVE policy then restricts
///   nothing), and every policy calling a VOLATILE function (see the module documentation for
///   how calls are found);
/// - an app role that does not exist, is a superuser, bypasses row-level security, or is a member
///   of a role that is either or owns tables of the schema;
/// - TRUNCATE on a customer-data table held by any role but the table's owner (or by PUBLIC);
/// - views of the schema without `security_invoker=true`, and materialized views;
/// - audit tables the app role may UPDATE or DELETE, or without their enabled append-only
///   trigger (a BEFORE trigger running `leadmaps.audit_append_only()` on UPDATE, DELETE and
///   TRUNCATE).
///
/// # Errors
/// [`leadmaps_core::Error::Unavailable`] when the connection fails; other errors of the catalog
/// queries as [`leadmaps_core::Error::Backend`].
pub async fn doctor_client(client: &Client, app_role: &str) -> Result<DoctorReport> {
    let mut report = DoctorReport::default();
    tables(client, &mut report).await?;
    policies(client, &mut report).await?;
    volatile_calls(client, &mut report).await?;
    role(client, app_role, &mut report).await?;
    truncate(client, &mut report).await?;
    views(client, &mut report).await?;
    append_only(client, app_role, &mut report).await?;
    report
        .findings
        .sort_by(|a, b| (a.kind, &a.object).cmp(&(b.kind, &b.object)));
    Ok(report)
}

/// Tables and partitions of the schema that carry `workspace_id`.
const CUSTOMER_TABLES: &str =
    "SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name, c.relowner
     FROM pg_catalog.pg_class AS c
     JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     JOIN pg_catalog.pg_attribute AS a
       ON a.attrelid = c.oid AND a.attname = 'workspace_id' AND a.attnum > 0 AND NOT a.attisdropped
     WHERE n.nspname = 'leadmaps' AND c.relkind IN ('r', 'p')";

async fn tables(client: &Client, report: &mut DoctorReport) -> Result<()> {
    let rows = client
        .query(
            &format!(
                "SELECT t.name, c.relrowsecurity, c.relforcerowsecurity,
                        EXISTS (SELECT FROM pg_catalog.pg_index AS i
                                JOIN pg_catalog.pg_attribute AS a
                                  ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                                WHERE i.indrelid = t.oid AND i.indisvalid AND i.indpred IS NULL
                                  AND a.attname = 'workspace_id')
                 FROM ({CUSTOMER_TABLES}) AS t JOIN pg_catalog.pg_class AS c ON c.oid = t.oid"
            ),
            &[],
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let name: String = row.try_get(0).map_err(pg)?;
        let (enabled, forced, indexed): (bool, bool, bool) = (
            row.try_get(1).map_err(pg)?,
            row.try_get(2).map_err(pg)?,
            row.try_get(3).map_err(pg)?,
        );
        if !enabled {
            report.push(
                FindingKind::RlsNotEnabled,
                &name,
                "has workspace_id but row-level security is not enabled: every role with a grant sees every workspace",
            );
        }
        if !forced {
            report.push(
                FindingKind::RlsNotForced,
                &name,
                "has workspace_id but row-level security is not forced: the table's owner bypasses the policies",
            );
        }
        if !indexed {
            report.push(
                FindingKind::MissingWorkspaceIndex,
                &name,
                "has workspace_id but no valid index leads with it: every policy check scans the table",
            );
        }
    }
    Ok(())
}

/// Whether a policy expression, as `pg_get_expr` prints it, is the constant `true`.
fn is_true(expression: &str) -> bool {
    let bare: String = expression
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '(' && *c != ')')
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(bare.as_str(), "true" | "true::boolean" | "'t'::boolean")
}

async fn policies(client: &Client, report: &mut DoctorReport) -> Result<()> {
    let rows = client
        .query(
            "SELECT format('%I.%I/%I', n.nspname, c.relname, p.polname), p.polpermissive,
                    p.polcmd::text, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                    pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
             FROM pg_catalog.pg_policy AS p
             JOIN pg_catalog.pg_class AS c ON c.oid = p.polrelid
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
             WHERE n.nspname = 'leadmaps'",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let name: String = row.try_get(0).map_err(pg)?;
        let permissive: bool = row.try_get(1).map_err(pg)?;
        let command: String = row.try_get(2).map_err(pg)?;
        let using: Option<String> = row.try_get(3).map_err(pg)?;
        let check: Option<String> = row.try_get(4).map_err(pg)?;
        // Which expressions the command uses: USING filters reads, updates and deletes; WITH
        // CHECK (or USING in its absence) checks inserted and updated rows.
        let reads = matches!(command.as_str(), "*" | "r" | "w" | "d");
        let writes = matches!(command.as_str(), "*" | "a" | "w");
        let effective_check = check.as_deref().or(using.as_deref());
        if using.as_deref().is_some_and(is_true) || check.as_deref().is_some_and(is_true) {
            report.push(
                FindingKind::AlwaysTruePolicy,
                &name,
                "a USING or WITH CHECK expression is the constant true: it admits every workspace's rows",
            );
        } else if (reads && using.is_none()) || (writes && effective_check.is_none()) {
            report.push(
                FindingKind::AlwaysTruePolicy,
                &name,
                if permissive {
                    "has no expression for a command it covers: it states no tenant condition (today it admits nothing)"
                } else {
                    "a RESTRICTIVE policy with no expression for a command it covers restricts nothing"
                },
            );
        }
    }
    Ok(())
}

async fn volatile_calls(client: &Client, report: &mut DoctorReport) -> Result<()> {
    let rows = client
        .query(
            r"WITH refs AS (
                  SELECT p.oid AS policy, m[1] AS what, m[2]::oid AS ref
                  FROM pg_catalog.pg_policy AS p
                  JOIN pg_catalog.pg_class AS c ON c.oid = p.polrelid
                  JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                  CROSS JOIN LATERAL regexp_matches(
                      coalesce(p.polqual::text, '') || ' ' || coalesce(p.polwithcheck::text, ''),
                      ':(funcid|opfuncid|aggfnoid|winfnoid|opno) ([0-9]+)', 'g') AS m
                  WHERE n.nspname = 'leadmaps'
              ), called AS (
                  SELECT r.policy,
                         CASE WHEN r.what = 'opno'
                              THEN (SELECT o.oprcode::oid FROM pg_catalog.pg_operator AS o WHERE o.oid = r.ref)
                              ELSE r.ref END AS function
                  FROM refs AS r
              )
              SELECT DISTINCT format('%I.%I/%I', n.nspname, c.relname, p.polname),
                     f.oid::regprocedure::text
              FROM called
              JOIN pg_catalog.pg_proc AS f ON f.oid = called.function
              JOIN pg_catalog.pg_policy AS p ON p.oid = called.policy
              JOIN pg_catalog.pg_class AS c ON c.oid = p.polrelid
              JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
              WHERE f.provolatile = 'v'
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let policy: String = row.try_get(0).map_err(pg)?;
        let function: String = row.try_get(1).map_err(pg)?;
        report.push(
            FindingKind::VolatilePolicyFunction,
            format!("{policy} calls {function}"),
            "a VOLATILE function in a policy runs per row, may change between calls, and may write",
        );
    }
    Ok(())
}

async fn role(client: &Client, app_role: &str, report: &mut DoctorReport) -> Result<()> {
    let row = client
        .query_opt(
            "SELECT r.rolsuper, r.rolbypassrls,
                    ARRAY(SELECT m.rolname::text FROM pg_catalog.pg_roles AS m
                          WHERE m.oid <> r.oid AND pg_catalog.pg_has_role(r.oid, m.oid, 'MEMBER')
                            AND (m.rolsuper OR m.rolbypassrls
                                 OR EXISTS (SELECT FROM pg_catalog.pg_class AS c
                                            WHERE c.relowner = m.oid
                                              AND c.relnamespace = 'leadmaps'::regnamespace))
                          ORDER BY 1)
             FROM pg_catalog.pg_roles AS r WHERE r.rolname = $1",
            &[&app_role],
        )
        .await
        .map_err(pg)?;
    let Some(row) = row else {
        report.push(
            FindingKind::AppRoleMissing,
            app_role,
            "the configured app role does not exist: the store cannot log in as it",
        );
        return Ok(());
    };
    let (superuser, bypass): (bool, bool) =
        (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
    if superuser {
        report.push(
            FindingKind::PrivilegedAppRole,
            app_role,
            "the app role is a superuser: row-level security never applies to it",
        );
        return Ok(());
    }
    if bypass {
        report.push(
            FindingKind::PrivilegedAppRole,
            app_role,
            "the app role has BYPASSRLS: row-level security never applies to it",
        );
    }
    let via: Vec<String> = row.try_get(2).map_err(pg)?;
    for role in via {
        report.push(
            FindingKind::PrivilegedAppRole,
            format!("{app_role} in {role}"),
            "the app role is a member of a role that is a superuser, bypasses RLS or owns the tables",
        );
    }
    Ok(())
}

async fn truncate(client: &Client, report: &mut DoctorReport) -> Result<()> {
    let rows = client
        .query(
            &format!(
                "SELECT t.name || ' TO ' || CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                                 ELSE quote_ident(pg_catalog.pg_get_userbyid(x.grantee)::text) END
                 FROM ({CUSTOMER_TABLES}) AS t
                 JOIN pg_catalog.pg_class AS c ON c.oid = t.oid
                 CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS x
                 WHERE x.privilege_type = 'TRUNCATE' AND x.grantee <> t.relowner
                 ORDER BY 1"
            ),
            &[],
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let grant: String = row.try_get(0).map_err(pg)?;
        report.push(
            FindingKind::TruncateGranted,
            grant,
            "TRUNCATE ignores row-level security: this role can empty every workspace's rows",
        );
    }
    Ok(())
}

/// The audit log's tables (migration V9) and the breach register (V11): append-only for
/// everyone.
const APPEND_ONLY_TABLES: &[&str] = &["audit_records", "audit_checkpoints", "breach_register"];

async fn append_only(client: &Client, app_role: &str, report: &mut DoctorReport) -> Result<()> {
    // tgtype bits: 2 BEFORE, 8 DELETE, 16 UPDATE, 32 TRUNCATE. Enabled means 'O' (origin) or 'A'
    // (always); 'R' fires only under session_replication_role = replica, 'D' never.
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname),
                    coalesce((SELECT bit_or(t.tgtype::integer) & 56
                              FROM pg_catalog.pg_trigger AS t
                              WHERE t.tgrelid = c.oid AND NOT t.tgisinternal
                                AND t.tgenabled IN ('O', 'A') AND t.tgtype::integer & 2 = 2
                                AND t.tgfoid = to_regproc('leadmaps.audit_append_only')), 0) = 56,
                    CASE WHEN r.oid IS NULL THEN false
                         ELSE pg_catalog.has_any_column_privilege(r.oid, c.oid, 'UPDATE')
                              OR pg_catalog.has_table_privilege(r.oid, c.oid, 'DELETE') END,
                    quote_ident($2::text)
             FROM pg_catalog.pg_class AS c
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
             LEFT JOIN pg_catalog.pg_roles AS r ON r.rolname = $2::text
             WHERE n.nspname = 'leadmaps' AND c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])
             ORDER BY 1",
            &[&APPEND_ONLY_TABLES, &app_role],
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let name: String = row.try_get(0).map_err(pg)?;
        let guarded: bool = row.try_get(1).map_err(pg)?;
        let writable: bool = row.try_get(2).map_err(pg)?;
        if !guarded {
            report.push(
                FindingKind::AuditNotAppendOnly,
                &name,
                "the append-only trigger is missing or disabled: the owner or a superuser can rewrite the audit log with plain SQL",
            );
        }
        if writable {
            let role: String = row.try_get(3).map_err(pg)?;
            report.push(
                FindingKind::AuditNotAppendOnly,
                format!("{name} TO {role}"),
                "the app role may UPDATE or DELETE audit rows: the log must be append-only",
            );
        }
    }
    Ok(())
}

/// Whether a reloption value reads as true to PostgreSQL's `parse_bool`.
fn option_is_true(value: &str) -> bool {
    let value = value.trim().to_ascii_lowercase();
    !value.is_empty()
        && ("true".starts_with(&value)
            || "yes".starts_with(&value)
            || value == "on"
            || value == "1")
}

async fn views(client: &Client, report: &mut DoctorReport) -> Result<()> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text,
                    coalesce(c.reloptions, '{}'::text[])
             FROM pg_catalog.pg_class AS c
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
             WHERE n.nspname = 'leadmaps' AND c.relkind IN ('v', 'm')",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in rows {
        let name: String = row.try_get(0).map_err(pg)?;
        let kind: String = row.try_get(1).map_err(pg)?;
        let options: Vec<String> = row.try_get(2).map_err(pg)?;
        if kind == "m" {
            report.push(
                FindingKind::ViewWithoutSecurityInvoker,
                &name,
                "a materialized view stores rows with no row-level security, whoever reads it",
            );
            continue;
        }
        let invoker = options.iter().any(|option| {
            option.split_once('=').is_some_and(|(key, value)| {
                key.trim() == "security_invoker" && option_is_true(value)
            })
        });
        if !invoker {
            report.push(
                FindingKind::ViewWithoutSecurityInvoker,
                &name,
                "the view runs with its owner's rights, so the policies bind the owner, not the reader",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_true_is_recognised_however_written() {
        for expression in ["true", "(true)", " ( (TRUE) ) ", "true::boolean"] {
            assert!(is_true(expression), "{expression}");
        }
        for expression in [
            "false",
            "(workspace_id = (NULLIF(current_setting('leadmaps.workspace_id'::text, true), ''::text))::uuid)",
            "true AND false",
        ] {
            assert!(!is_true(expression), "{expression}");
        }
    }

    #[test]
    fn reloption_booleans_follow_postgres() {
        for value in ["true", "t", "TRUE", "on", "1", "yes", "y"] {
            assert!(option_is_true(value), "{value}");
        }
        for value in ["false", "f", "off", "0", "no", "", "o"] {
            assert!(!option_is_true(value), "{value}");
        }
    }

    #[test]
    fn the_report_prints_a_table() {
        let mut report = DoctorReport::default();
        assert!(report.is_clean());
        assert_eq!(report.to_string(), "no findings\n");
        report.push(
            FindingKind::RlsNotForced,
            "leadmaps.t",
            "row-level security is not forced",
        );
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("KIND") && lines[0].contains("OBJECT"));
        assert!(lines[2].starts_with("rls_not_forced  leadmaps.t"));
        assert!(!report.is_clean());
        assert!(report.has(FindingKind::RlsNotForced, "leadmaps.t"));
    }
}
