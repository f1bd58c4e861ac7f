//! Postgres: the snapshot is one `SERIALIZABLE READ ONLY DEFERRABLE` transaction that copies
//! every table of the `leadmaps` schema out in binary; a restore migrates an empty database to
//! the backup's schema version and copies every table in, in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use leadmaps_store_postgres::{LATEST_VERSION, MIGRATIONS, migrate_to};
use tokio::sync::mpsc;
use tokio_postgres::{Client, CopyInSink};

use crate::database::PostgresDatabase;
use crate::error::{Error, Result, pg};
use crate::format::{Item, SectionMeta, SourceKind};
use crate::{RestoreReport, Upload};

/// COPY output is gathered into data records of about this size.
const RECORD: usize = 512 * 1024;
/// The one partitioned table, and how its partitions are named and made.
const EVENTS: &str = "events";
/// `ensure_event_partitions` takes at most this many months per call.
const MONTHS_PER_CALL: usize = 64;

/// The table being copied in: its name, its row count in the backup, and the COPY.
type OpenCopy = (String, u64, Pin<Box<CopyInSink<Bytes>>>);

/// A table to copy: its name, columns with their types, and its rows in the snapshot.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<(String, String)>,
    rows: u64,
    partitions: Vec<String>,
}

/// The open snapshot: a connection inside its read-only transaction, and what to copy.
pub(crate) struct Snapshot {
    client: Client,
    tables: Vec<Table>,
    pub(crate) schema_version: u32,
}

/// Opens the snapshot transaction and plans the copy: tables in foreign-key order.
pub(crate) async fn snapshot(database: &PostgresDatabase) -> Result<Snapshot> {
    let client = database.connect().await?;
    // DEFERRABLE waits for a snapshot no serializable transaction can invalidate, then runs
    // without taking part in conflicts. row_security off: if the role would see only part of
    // a table, reading it fails instead of silently leaving rows out.
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE; \
             SET LOCAL row_security = off;",
        )
        .await
        .map_err(pg("starting the snapshot"))?;
    let schema_version = schema_version(&client).await?;
    let Some(schema_version) = schema_version else {
        return Err(Error::Incompatible(
            "the database has no leadmaps schema: run the migrations first".into(),
        ));
    };
    if schema_version > LATEST_VERSION {
        return Err(Error::Incompatible(format!(
            "the database's schema (V{schema_version}) is newer than this build's (V{LATEST_VERSION})"
        )));
    }
    let mut tables = Vec::new();
    for name in ordered_tables(&client).await? {
        let columns = columns(&client, &name).await?;
        let rows: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM leadmaps.{}", quote(&name)),
                &[],
            )
            .await
            .map_err(pg("counting rows"))?
            .get(0);
        let partitions = partitions(&client, &name).await?;
        tables.push(Table {
            name,
            columns,
            rows: rows as u64,
            partitions,
        });
    }
    Ok(Snapshot {
        client,
        tables,
        schema_version,
    })
}

/// Copies every table out as one section each.
pub(crate) async fn write(snapshot: Snapshot, upload: &mut Upload<'_>) -> Result<()> {
    let Snapshot { client, tables, .. } = snapshot;
    for table in tables {
        let meta = SectionMeta::PostgresTable {
            table: table.name.clone(),
            columns: table.columns.clone(),
            rows: table.rows,
            partitions: table.partitions.clone(),
        };
        upload.section(&table.name, &meta).await?;
        let copy = format!(
            "COPY (SELECT {} FROM leadmaps.{}) TO STDOUT (FORMAT binary)",
            column_list(&table.columns),
            quote(&table.name)
        );
        let stream = client
            .copy_out(&copy)
            .await
            .map_err(pg("copying a table out"))?;
        let mut stream = std::pin::pin!(stream);
        let mut pending = BytesMut::with_capacity(RECORD);
        while let Some(piece) = stream.next().await {
            pending.extend_from_slice(&piece.map_err(pg("copying a table out"))?);
            if pending.len() >= RECORD {
                upload.data(&pending).await?;
                pending.clear();
            }
        }
        if !pending.is_empty() {
            upload.data(&pending).await?;
        }
        upload.end_section().await?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(pg("ending the snapshot"))?;
    Ok(())
}

/// Receives a Postgres backup's records and loads them into `database` in one transaction,
/// committed only at the verified end. `None` when the records stopped before the end.
pub(crate) async fn restore(
    database: &PostgresDatabase,
    mut items: mpsc::Receiver<Item>,
) -> Result<Option<RestoreReport>> {
    let Some(Item::Header(header)) = items.recv().await else {
        return Ok(None);
    };
    if header.source != SourceKind::Postgres {
        return Err(Error::Incompatible(format!(
            "this is a {} backup; it restores only into {}",
            header.source, header.source
        )));
    }
    let version = header.schema_version;
    if !MIGRATIONS.iter().any(|m| m.version == version) {
        return Err(Error::Incompatible(format!(
            "the backup's schema (V{version}) is not one this build knows (up to V{LATEST_VERSION})"
        )));
    }
    // The header is authentic here (the body's key commitment matched), so the database is
    // migrated to the backup's version; a later start of the store migrates it onwards.
    let report = migrate_to(&database.store_config(), version).await?;
    if report.version != version {
        return Err(Error::Incompatible(format!(
            "the destination is migrated to V{}, the backup is V{version}: restore into a new, empty database",
            report.version
        )));
    }
    let mut client = database.connect().await?;
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting the restore"))?;
    let mut expected: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for name in ordered_tables(&tx).await? {
        let columns = columns(&tx, &name).await?;
        expected.insert(name, columns);
    }
    if !expected.is_empty() {
        // Nobody writes while we check for emptiness and fill the tables.
        let names: Vec<String> = expected
            .keys()
            .map(|t| format!("leadmaps.{}", quote(t)))
            .collect();
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN EXCLUSIVE MODE",
            names.join(", ")
        ))
        .await
        .map_err(pg("locking the destination"))?;
    }
    for name in expected.keys() {
        let any: bool = tx
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM leadmaps.{})", quote(name)),
                &[],
            )
            .await
            .map_err(pg("reading the destination"))?
            .get(0);
        if any {
            return Err(Error::NotEmpty);
        }
    }

    let mut restored: Vec<(String, u64)> = Vec::new();
    let mut open: Option<OpenCopy> = None;
    loop {
        let Some(item) = items.recv().await else {
            // Dropping the transaction rolls everything back.
            return Ok(None);
        };
        match (item, open.as_mut()) {
            (
                Item::Section {
                    name,
                    meta:
                        SectionMeta::PostgresTable {
                            table,
                            columns,
                            rows,
                            partitions,
                        },
                },
                None,
            ) if name == table => {
                let Some(wanted) = expected.remove(&table) else {
                    return Err(Error::Mismatch(format!(
                        "table {table} is not in the destination's schema, or came twice"
                    )));
                };
                if wanted != columns {
                    return Err(Error::Mismatch(format!(
                        "table {table} has other columns in the destination"
                    )));
                }
                if !partitions.is_empty() {
                    if table != EVENTS {
                        return Err(Error::Corrupt);
                    }
                    ensure_partitions(&tx, &partitions).await?;
                }
                let copy = format!(
                    "COPY leadmaps.{} ({}) FROM STDIN (FORMAT binary)",
                    quote(&table),
                    column_list(&columns)
                );
                let sink = tx
                    .copy_in::<_, Bytes>(&copy)
                    .await
                    .map_err(pg("copying a table in"))?;
                open = Some((table, rows, Box::pin(sink)));
            }
            (Item::Data(data), Some((_, _, sink))) => {
                sink.send(data).await.map_err(pg("copying a table in"))?;
            }
            (Item::EndSection, Some(_)) => {
                let (table, rows, mut sink) = open.take().expect("matched Some");
                let copied = sink
                    .as_mut()
                    .finish()
                    .await
                    .map_err(pg("copying a table in"))?;
                if copied != rows {
                    return Err(Error::Mismatch(format!(
                        "table {table}: {copied} rows restored, {rows} in the backup"
                    )));
                }
                restored.push((table, copied));
            }
            (Item::End, None) => {
                if let Some(table) = expected.keys().next() {
                    return Err(Error::Mismatch(format!(
                        "table {table} of the destination's schema is not in the backup"
                    )));
                }
                tx.commit().await.map_err(pg("committing the restore"))?;
                return Ok(Some(RestoreReport {
                    header,
                    tables: restored,
                }));
            }
            // A record out of place in an authentic payload: not a backup this code wrote.
            _ => return Err(Error::Corrupt),
        }
    }
}

/// Makes the monthly partitions the snapshot had, through the schema's own function (so each
/// gets its forced row-level security and policies).
async fn ensure_partitions(
    client: &tokio_postgres::Transaction<'_>,
    months: &[String],
) -> Result<()> {
    let mut dates = Vec::with_capacity(months.len());
    for month in months {
        let date = time::Date::parse(
            month,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|_| Error::Corrupt)?;
        dates.push(date);
    }
    for batch in dates.chunks(MONTHS_PER_CALL) {
        client
            .execute(
                "SELECT leadmaps.ensure_event_partitions($1::date[])",
                &[&batch],
            )
            .await
            .map_err(pg("creating event partitions"))?;
    }
    Ok(())
}

async fn schema_version(client: &impl tokio_postgres::GenericClient) -> Result<Option<u32>> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('leadmaps.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(pg("reading the schema version"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM leadmaps.schema_migrations", &[])
        .await
        .map_err(pg("reading the schema version"))?
        .get(0);
    Ok(version.and_then(|v| u32::try_from(v).ok()))
}

/// The tables of the `leadmaps` schema (partitioned parents, not their partitions; not the
/// migration history, which belongs to the destination's migrator), parents before the tables
/// whose foreign keys point at them, ties by name.
async fn ordered_tables(client: &impl tokio_postgres::GenericClient) -> Result<Vec<String>> {
    let names: BTreeSet<String> = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class AS c
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
             WHERE n.nspname = 'leadmaps' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND c.relname <> 'schema_migrations'",
            &[],
        )
        .await
        .map_err(pg("listing tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let edges: Vec<(String, String)> = client
        .query(
            "SELECT child.relname::text, parent.relname::text FROM pg_catalog.pg_constraint AS k
             JOIN pg_catalog.pg_class AS child ON child.oid = k.conrelid
             JOIN pg_catalog.pg_class AS parent ON parent.oid = k.confrelid
             JOIN pg_catalog.pg_namespace AS n ON n.oid = child.relnamespace
             WHERE k.contype = 'f' AND n.nspname = 'leadmaps'",
            &[],
        )
        .await
        .map_err(pg("listing foreign keys"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    topological(&names, &edges)
}

/// Kahn's algorithm; self-references (checked at the end of the table's COPY) and edges to
/// tables outside the set are ignored.
fn topological(names: &BTreeSet<String>, edges: &[(String, String)]) -> Result<Vec<String>> {
    let mut needs: BTreeMap<&str, BTreeSet<&str>> = names
        .iter()
        .map(|n| (n.as_str(), BTreeSet::new()))
        .collect();
    for (child, parent) in edges {
        if child != parent
            && names.contains(parent)
            && let Some(set) = needs.get_mut(child.as_str())
        {
            set.insert(parent.as_str());
        }
    }
    let mut order = Vec::with_capacity(names.len());
    while !needs.is_empty() {
        let ready: Vec<&str> = needs
            .iter()
            .filter(|(_, parents)| parents.is_empty())
            .map(|(name, _)| *name)
            .collect();
        if ready.is_empty() {
            return Err(Error::Incompatible(
                "the schema's foreign keys form a cycle; this build cannot order the tables".into(),
            ));
        }
        for name in ready {
            needs.remove(name);
            for parents in needs.values_mut() {
                parents.remove(name);
            }
            order.push(name.to_owned());
        }
    }
    Ok(order)
}

async fn columns(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
             FROM pg_catalog.pg_attribute AS a
             JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
             WHERE n.nspname = 'leadmaps' AND c.relname = $1 AND a.attnum > 0
               AND NOT a.attisdropped AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(pg("listing columns"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The months of `events`' partitions (`events_yYYYYmMM`), as `YYYY-MM-01`; empty for other
/// tables. Another partitioned table is refused: this build would not know how to make its
/// partitions.
async fn partitions(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<Vec<String>> {
    let names: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_inherits AS i
             JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
             JOIN pg_catalog.pg_class AS p ON p.oid = i.inhparent
             JOIN pg_catalog.pg_namespace AS n ON n.oid = p.relnamespace
             WHERE n.nspname = 'leadmaps' AND p.relname = $1
             ORDER BY 1",
            &[&table],
        )
        .await
        .map_err(pg("listing partitions"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if names.is_empty() {
        return Ok(names);
    }
    if table != EVENTS {
        return Err(Error::Incompatible(format!(
            "table {table} is partitioned, and this build only knows how to partition {EVENTS}"
        )));
    }
    names
        .iter()
        .map(|name| {
            let month = name
                .strip_prefix("events_y")
                .and_then(|rest| rest.split_once('m'))
                .filter(|(y, m)| {
                    y.len() == 4
                        && m.len() == 2
                        && y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
                })
                .map(|(y, m)| format!("{y}-{m}-01"));
            month.ok_or_else(|| {
                Error::Incompatible(format!("unexpected partition name {name} of {EVENTS}"))
            })
        })
        .collect()
}

fn column_list(columns: &[(String, String)]) -> String {
    columns
        .iter()
        .map(|(name, _)| quote(name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quotes an identifier read from the catalog.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_come_after_the_tables_they_reference() {
        let names: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        let edges = [("a", "c"), ("c", "d"), ("b", "b"), ("a", "outside")]
            .map(|(x, y)| (x.to_owned(), y.to_owned()));
        assert_eq!(topological(&names, &edges).unwrap(), ["b", "d", "c", "a"]);
        let cycle = [("a", "b"), ("b", "a")].map(|(x, y)| (x.to_owned(), y.to_owned()));
        assert!(topological(&names, &cycle).is_err());
    }
}
