//! The backup promise: the newest backup of this deployment's kind at the backup target is
//! younger than the limit, and restores, verified end to end, into a scratch database (a
//! temporary SQLite file, or a Postgres database created and dropped for the purpose).

use leadmaps_backup::{BackupKeys, BackupTarget, Database};
use leadmaps_core::crypto::KeyRing;
use time::{Duration, OffsetDateTime};

use crate::report::{Check, Promise, count};

/// Checks the newest backup's age and, with `test_restore`, restores it into a scratch
/// database.
pub(crate) async fn check(
    database: &Database,
    target: Option<&BackupTarget>,
    ring: &KeyRing,
    now: OffsetDateTime,
    max_age: Duration,
    test_restore: bool,
) -> Check {
    let promise = Promise::Backups;
    let Some(target) = target else {
        return Check::fail(
            promise,
            "not checked: no backup target given (--backup-url or LEADMAPS_BACKUP_URL)",
        );
    };
    let kind = database.kind();
    let entries = match leadmaps_backup::list(target).await {
        Ok(entries) => entries,
        Err(error) => return Check::error(promise, "listing the backups", &error),
    };
    let newest = entries
        .iter()
        .filter_map(|e| Some((e, e.header.as_ref()?)))
        .filter(|(_, h)| h.source == kind)
        .max_by_key(|(_, h)| h.created_at);
    let Some((entry, header)) = newest else {
        return Check::fail(promise, format!("no {} backup at {target}", kind.as_str()));
    };
    let age = now - header.created_at;
    let mut findings = Vec::new();
    if age > max_age {
        findings.push(format!(
            "the newest backup, {}, is {}h old (the limit is {}h)",
            entry.name,
            age.whole_hours(),
            max_age.whole_hours()
        ));
    }
    let mut details = Vec::new();
    if test_restore {
        match restore_to_scratch(database, target, &entry.name, ring).await {
            Ok((tables, rows)) => details.push(format!(
                "{} restored into a scratch database: {tables} tables, {rows} rows, every chunk authenticated",
                entry.name
            )),
            Err(error) => findings.push(format!("{} does not restore: {error}", entry.name)),
        }
    }
    if findings.is_empty() {
        let restored = if test_restore {
            "; a test restore succeeded"
        } else {
            " (no test restore)"
        };
        Check::pass(
            promise,
            format!(
                "{} at {target}; the newest is {}h old (limit {}h){restored}",
                count(entries.len() as u64, "backup", "backups"),
                age.whole_hours(),
                max_age.whole_hours()
            ),
        )
        .with_details(details)
    } else {
        let problems = count(findings.len() as u64, "backup problem", "backup problems");
        Check::fail(promise, problems).with_details(findings)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Restores `name` into a scratch database and drops it: (tables, rows).
async fn restore_to_scratch(
    database: &Database,
    target: &BackupTarget,
    name: &str,
    ring: &KeyRing,
) -> Result<(usize, u64), BoxError> {
    let keys = BackupKeys::new(ring);
    let counts = |report: leadmaps_backup::RestoreReport| {
        let rows = report.tables.iter().map(|(_, rows)| rows).sum();
        (report.tables.len(), rows)
    };
    match database {
        Database::Sqlite(_) => {
            let dir = tempfile::tempdir()?;
            let scratch = Database::Sqlite(dir.path().join("restore.db"));
            let report = leadmaps_backup::restore(target, name, &keys, &scratch, &()).await?;
            Ok(counts(report))
        }
        Database::Postgres(pg) => {
            let scratch_name = format!("leadmaps_verify_{}", uuid::Uuid::new_v4().simple());
            let (client, connection) = pg.owner().connect(tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            client
                .batch_execute(&format!("CREATE DATABASE \"{scratch_name}\""))
                .await?;
            let into = Database::Postgres(Box::new(pg.on_database(&scratch_name)));
            let restored = leadmaps_backup::restore(target, name, &keys, &into, &()).await;
            // Dropped whatever the restore did; a failure to drop is reported too.
            let dropped = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{scratch_name}\" WITH (FORCE)"
                ))
                .await;
            drop(client);
            let _ = driver.await;
            let report = restored?;
            dropped?;
            Ok(counts(report))
        }
        _ => Err("test restores go into SQLite or Postgres only".into()),
    }
}
