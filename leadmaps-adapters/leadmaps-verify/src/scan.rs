//! The dump scan: every value of every table, read the way a dump would read it, looked at for
//! what must never be there. Two promises come out of one pass:
//!
//! - **secrets at rest**: every value of a sealed column (named `blob`, `sealed` or `sealed_*`,
//!   the stores' convention) is a well-formed v1 envelope, never plaintext; and no value
//!   anywhere holds a leadmaps API key, an `otpauth://` URI (a TOTP seed), a PEM private key or
//!   a bearer token / JWT.
//! - **no personal data**: no value holds an IP address (a network in CIDR form, `203.0.113.0/24`,
//!   is configuration and allowed) or a browser-like user agent; event tables hold no e-mail
//!   address either. The staff-written registers (`breach_*`, `vulnerability_reports`) are left
//!   out of this half: an incident's description may name the addresses involved.
//!
//! Findings are counted by table, column and kind; a value is never kept or printed.

use std::collections::BTreeMap;

use futures_util::{StreamExt as _, pin_mut};
use leadmaps_backup::Database;
use leadmaps_core::crypto::envelope;
use leadmaps_core::scrub::{self, Redaction};

use crate::report::{Check, Promise, count};

/// What a value held that it must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Found {
    /// A value of a sealed column that is not a v1 envelope.
    NotSealed,
    /// A leadmaps API key.
    ApiKey,
    /// An `otpauth://` URI: a TOTP seed in the clear.
    TotpUri,
    /// A PEM private key.
    PrivateKey,
    /// A bearer credential or a JWT.
    Token,
    /// An IP address.
    IpAddress,
    /// A browser-like user agent.
    UserAgent,
    /// An e-mail address in an event.
    Email,
}

impl Found {
    const fn promise(self) -> Promise {
        match self {
            Found::NotSealed
            | Found::ApiKey
            | Found::TotpUri
            | Found::PrivateKey
            | Found::Token => Promise::SecretsAtRest,
            Found::IpAddress | Found::UserAgent | Found::Email => Promise::NoPersonalData,
        }
    }

    const fn describe(self) -> &'static str {
        match self {
            Found::NotSealed => "not a sealed envelope (plaintext at rest)",
            Found::ApiKey => "a leadmaps API key in the clear",
            Found::TotpUri => "an otpauth:// URI (a TOTP seed in the clear)",
            Found::PrivateKey => "a PEM private key",
            Found::Token => "a bearer token or JWT",
            Found::IpAddress => "an IP address",
            Found::UserAgent => "a user agent",
            Found::Email => "an e-mail address",
        }
    }
}

/// Markers of a user agent string: product tokens every browser, crawler library and headless
/// client sends.
const AGENT_MARKERS: [&str; 8] = [
    "Mozilla/",
    "AppleWebKit/",
    "Gecko/",
    "Chrome/",
    "Safari/",
    "curl/",
    "Wget/",
    "python-requests/",
];

/// What one pass over a database found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Tables read.
    pub tables: u64,
    /// Values looked at (non-null text and blobs).
    pub values: u64,
    /// Values of sealed columns that are well-formed envelopes.
    pub sealed: u64,
    /// Findings: (`table.column`, kind) → how many values.
    pub findings: BTreeMap<(String, Found), u64>,
}

impl Scan {
    /// Looks at one value of `table.column`.
    pub fn inspect(&mut self, table: &str, column: &str, value: Value<'_>) {
        self.values += 1;
        let sealed_column = column == "blob" || column == "sealed" || column.starts_with("sealed_");
        if sealed_column {
            match value {
                Value::Blob(blob)
                    if blob.len() >= envelope::MIN_LEN && envelope::header(blob).is_ok() =>
                {
                    self.sealed += 1;
                }
                _ => self.found(table, column, Found::NotSealed),
            }
            return;
        }
        let text = match value {
            Value::Text(text) => text,
            // Ids, digests and MACs are binary; a blob that is text is read as text.
            Value::Blob(blob) => match std::str::from_utf8(blob) {
                Ok(text) if text.len() >= 8 => text,
                _ => return,
            },
        };
        let personal = !(table.starts_with("breach_") || table == "vulnerability_reports");
        let event = table.starts_with("event") || table.starts_with("drop");
        let mut kinds = Vec::new();
        for (_, end, kind) in scrub::find(text) {
            let found = match kind {
                Redaction::ApiKey => Found::ApiKey,
                Redaction::Token => Found::Token,
                Redaction::Ip if personal && !text[end..].starts_with('/') => Found::IpAddress,
                Redaction::Email if event => Found::Email,
                _ => continue,
            };
            kinds.push(found);
        }
        if text.contains("otpauth://") {
            kinds.push(Found::TotpUri);
        }
        if text.contains("PRIVATE KEY-----") {
            kinds.push(Found::PrivateKey);
        }
        if personal && AGENT_MARKERS.iter().any(|m| text.contains(m)) {
            kinds.push(Found::UserAgent);
        }
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            self.found(table, column, kind);
        }
    }

    fn found(&mut self, table: &str, column: &str, kind: Found) {
        *self
            .findings
            .entry((format!("{table}.{column}"), kind))
            .or_default() += 1;
    }

    fn details(&self, promise: Promise) -> Vec<String> {
        self.findings
            .iter()
            .filter(|((_, kind), _)| kind.promise() == promise)
            .map(|((place, kind), n)| {
                format!(
                    "{place}: {} holding {}",
                    count(*n, "value", "values"),
                    kind.describe()
                )
            })
            .collect()
    }

    /// The secrets-at-rest check.
    pub fn secrets_check(&self) -> Check {
        Check::judge(
            Promise::SecretsAtRest,
            self.details(Promise::SecretsAtRest),
            || {
                format!(
                    "{} sealed values are v1 envelopes; no API key, TOTP URI, private key or token in {} values of {} tables",
                    self.sealed, self.values, self.tables
                )
            },
            |n| {
                format!(
                    "a dump of the database holds secrets in {}",
                    count(n, "place", "places")
                )
            },
        )
    }

    /// The no-personal-data check.
    pub fn personal_data_check(&self) -> Check {
        Check::judge(
            Promise::NoPersonalData,
            self.details(Promise::NoPersonalData),
            || {
                format!(
                    "no IP address or user agent (nor an e-mail address in events) in {} values of {} tables",
                    self.values, self.tables
                )
            },
            |n| {
                format!(
                    "a dump of the database holds personal data in {}",
                    count(n, "place", "places")
                )
            },
        )
    }
}

/// A value as the scan sees it.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// Why a scan could not finish.
pub type ScanError = Box<dyn std::error::Error + Send + Sync>;

/// Reads every row of every table of `database`.
///
/// # Errors
/// When the database cannot be opened or read (for Postgres, also when the owner connection
/// cannot read past row-level security).
pub async fn scan(database: &Database) -> Result<Scan, ScanError> {
    match database {
        Database::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || scan_sqlite(&path)).await?
        }
        Database::Postgres(pg) => scan_postgres(pg.owner()).await,
        _ => Err("the scan reads SQLite and Postgres databases only".into()),
    }
}

fn scan_sqlite(path: &std::path::Path) -> Result<Scan, ScanError> {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut scan = Scan::default();
    // One read transaction: the tables are seen as of one moment.
    conn.execute_batch("BEGIN")?;
    for table in &tables {
        scan.tables += 1;
        let mut select =
            conn.prepare(&format!("SELECT * FROM \"{}\"", table.replace('"', "\"\"")))?;
        let columns: Vec<String> = select.column_names().map(str::to_owned).collect();
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            for (i, column) in columns.iter().enumerate() {
                match row.get_ref(i)? {
                    ValueRef::Text(bytes) => {
                        let text = String::from_utf8_lossy(bytes);
                        scan.inspect(table, column, Value::Text(&text));
                    }
                    ValueRef::Blob(bytes) => scan.inspect(table, column, Value::Blob(bytes)),
                    ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => {}
                }
            }
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(scan)
}

async fn scan_postgres(config: &tokio_postgres::Config) -> Result<Scan, ScanError> {
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = async {
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        // Off, so a role that would see only some rows fails instead of passing on a part.
        tx.batch_execute("SET LOCAL row_security = off").await?;
        let tables = tx
            .query(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'leadmaps' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
                 ORDER BY c.relname",
                &[],
            )
            .await?;
        let mut scan = Scan::default();
        for row in tables {
            let table: String = row.get(0);
            scan.tables += 1;
            let columns: Vec<(String, bool)> = tx
                .query(
                    "SELECT attname::text, atttypid = 'bytea'::regtype FROM pg_attribute \
                     WHERE attrelid = format('leadmaps.%I', $1::text)::regclass \
                     AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    &[&table],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let select = columns
                .iter()
                .map(|(name, bytea)| {
                    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
                    if *bytea {
                        quoted
                    } else {
                        format!("{quoted}::text")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let statement = tx
                .prepare(&format!(
                    "SELECT {select} FROM leadmaps.\"{}\"",
                    table.replace('"', "\"\"")
                ))
                .await?;
            let rows = tx.query_raw(&statement, std::iter::empty::<&str>()).await?;
            pin_mut!(rows);
            while let Some(row) = rows.next().await {
                let row = row?;
                for (i, (column, bytea)) in columns.iter().enumerate() {
                    if *bytea {
                        if let Some(bytes) = row.get::<_, Option<&[u8]>>(i) {
                            scan.inspect(&table, column, Value::Blob(bytes));
                        }
                    } else if let Some(text) = row.get::<_, Option<&str>>(i) {
                        scan.inspect(&table, column, Value::Text(text));
                    }
                }
            }
        }
        tx.commit().await?;
        Ok::<_, ScanError>(scan)
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_columns_hold_only_envelopes() {
        let mut scan = Scan::default();
        scan.inspect(
            "secrets",
            "blob",
            Value::Blob(b"hunter2-plaintext-password"),
        );
        scan.inspect("secrets", "blob", Value::Text("hunter2"));
        scan.inspect("api_keys", "sealed", Value::Blob(&[0x01; 4]));
        assert_eq!(
            scan.findings,
            BTreeMap::from([
                (("api_keys.sealed".into(), Found::NotSealed), 1),
                (("secrets.blob".into(), Found::NotSealed), 2),
            ])
        );
        assert_eq!(scan.secrets_check().status, crate::Status::Fail);
        assert!(scan.personal_data_check().status == crate::Status::Pass);
    }

    #[test]
    fn secrets_and_personal_data_are_found_anywhere_but_never_repeated() {
        let mut scan = Scan::default();
        scan.inspect(
            "workspaces",
            "name",
            Value::Text("lm_0123456789ab_SeCrEtSeCrEtSeCrEt"),
        );
        scan.inspect(
            "audit_records",
            "after",
            Value::Text("{\"seed\":\"otpauth://totp/x?secret=AB\"}"),
        );
        scan.inspect(
            "events",
            "url",
            Value::Text("https://a.example/?ip=203.0.113.9"),
        );
        scan.inspect(
            "events",
            "props",
            Value::Text("{\"ua\":\"Mozilla/5.0 (X11)\"}"),
        );
        scan.inspect(
            "events",
            "props",
            Value::Text("{\"who\":\"ana@example.org\"}"),
        );
        // Configuration networks, staff-written incident text and account addresses pass.
        scan.inspect(
            "workspaces",
            "ip_allowlist",
            Value::Text("[\"203.0.113.0/24\"]"),
        );
        scan.inspect(
            "breach_incidents",
            "details",
            Value::Text("seen from 198.51.100.4"),
        );
        scan.inspect("users", "email", Value::Text("ana@example.org"));
        let places: Vec<(&str, Found)> = scan
            .findings
            .keys()
            .map(|(p, k)| (p.as_str(), *k))
            .collect();
        assert_eq!(
            places,
            [
                ("audit_records.after", Found::TotpUri),
                ("events.props", Found::UserAgent),
                ("events.props", Found::Email),
                ("events.url", Found::IpAddress),
                ("workspaces.name", Found::ApiKey),
            ]
        );
        let text = format!("{:?}{:?}", scan.secrets_check(), scan.personal_data_check());
        for value in ["SeCrEt", "203.0.113.9", "ana@", "Mozilla", "secret=AB"] {
            assert!(!text.contains(value), "{value} was repeated: {text}");
        }
    }
}
