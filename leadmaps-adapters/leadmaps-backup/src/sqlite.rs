//! SQLite: the snapshot is a `VACUUM INTO` image of the file; a restore checks the image and
//! copies it into the destination with SQLite's backup API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leadmaps_store_sqlite::SCHEMA_VERSION;
use rusqlite::{Connection, OpenFlags};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::error::{Error, Result, sqlite};
use crate::format::{Item, MAX_DATA, SectionMeta, SourceKind};
use crate::{RestoreReport, Upload};

/// The one section of a SQLite backup.
const SECTION: &str = "database";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A consistent image of the database in a private temporary directory, removed on drop.
pub(crate) struct Snapshot {
    _dir: tempfile::TempDir,
    file: PathBuf,
    pub(crate) schema_version: u32,
}

/// Takes the image: one read transaction, so it is consistent while a store writes the file.
pub(crate) async fn snapshot(path: &Path) -> Result<Snapshot> {
    let path = path.to_owned();
    blocking(move || {
        if !path.is_file() {
            return Err(Error::Config("no SQLite database at that path".into()));
        }
        // Read-only and never created: a backup must not make a database where there was none.
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite("opening the database"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("configuring the database"))?;
        let schema_version = user_version(&conn)?;
        if schema_version > SCHEMA_VERSION {
            return Err(Error::Incompatible(format!(
                "the database's schema ({schema_version}) is newer than this build's ({SCHEMA_VERSION})"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("leadmaps-backup-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory"))?;
        let file = dir.path().join("snapshot.db");
        let target = file
            .to_str()
            .ok_or_else(|| Error::Config("the temporary directory's path is not UTF-8".into()))?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(sqlite("taking the snapshot"))?;
        Ok(Snapshot {
            _dir: dir,
            file,
            schema_version,
        })
    })
    .await
}

/// Writes the image as the backup's one section.
pub(crate) async fn write(snapshot: Snapshot, upload: &mut Upload<'_>) -> Result<()> {
    let mut file = tokio::fs::File::open(&snapshot.file)
        .await
        .map_err(Error::io("reading the snapshot"))?;
    let bytes = file
        .metadata()
        .await
        .map_err(Error::io("reading the snapshot"))?
        .len();
    upload
        .section(SECTION, &SectionMeta::SqliteDatabase { bytes })
        .await?;
    let mut buf = vec![0u8; MAX_DATA];
    let mut read = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(Error::io("reading the snapshot"))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        upload.data(&buf[..n]).await?;
    }
    if read != bytes {
        return Err(Error::Config(
            "the snapshot changed while it was read".into(),
        ));
    }
    upload.end_section().await
}

/// Receives a SQLite backup's records and, at the verified end, installs the image at `path`.
/// `None` when the records stopped before the end (the decoder says why).
pub(crate) async fn restore(
    path: &Path,
    mut items: mpsc::Receiver<Item>,
) -> Result<Option<RestoreReport>> {
    let Some(Item::Header(header)) = items.recv().await else {
        return Ok(None);
    };
    if header.source != SourceKind::Sqlite {
        return Err(Error::Incompatible(format!(
            "this is a {} backup; it restores only into {}",
            header.source, header.source
        )));
    }
    if header.schema_version > SCHEMA_VERSION {
        return Err(Error::Incompatible(format!(
            "the backup's schema ({}) is newer than this build's ({SCHEMA_VERSION})",
            header.schema_version
        )));
    }
    let destination = path.to_owned();
    blocking(move || check_empty(&destination)).await?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(Error::io("creating the destination directory"))?;
    // Beside the destination, owner-only (tempfile's default mode), removed unless installed.
    let temp = tempfile::Builder::new()
        .prefix(".leadmaps-restore-")
        .tempfile_in(&dir)
        .map_err(Error::io("creating the restore file"))?;
    let mut file = tokio::fs::File::from_std(
        temp.reopen()
            .map_err(Error::io("opening the restore file"))?,
    );
    let mut expected = None;
    let mut written = 0u64;
    loop {
        match items.recv().await {
            None => return Ok(None),
            Some(Item::Section {
                meta: SectionMeta::SqliteDatabase { bytes },
                ..
            }) if expected.is_none() => expected = Some(bytes),
            Some(Item::Data(data)) if expected.is_some() => {
                written += data.len() as u64;
                file.write_all(&data)
                    .await
                    .map_err(Error::io("writing the restore file"))?;
            }
            Some(Item::EndSection) if expected == Some(written) => {}
            Some(Item::End) if expected == Some(written) => break,
            // A record out of place in an authentic payload: not a backup this code wrote.
            Some(_) => return Err(Error::Corrupt),
        }
    }
    file.sync_all()
        .await
        .map_err(Error::io("writing the restore file"))?;
    drop(file);
    let destination = path.to_owned();
    let version = header.schema_version;
    let tables = blocking(move || install(temp, &destination, version)).await?;
    Ok(Some(RestoreReport { header, tables }))
}

/// Checks the verified image, then copies it into the destination (created owner-only when
/// missing), and counts each table's rows.
fn install(
    image: tempfile::NamedTempFile,
    destination: &Path,
    schema_version: u32,
) -> Result<Vec<(String, u64)>> {
    let source = Connection::open_with_flags(
        image.path(),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the restored image"))?;
    let check: String = source
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite("checking the restored image"))?;
    if check != "ok" || user_version(&source)? != schema_version {
        return Err(Error::Mismatch(
            "the restored image fails SQLite's integrity check or has another schema version"
                .into(),
        ));
    }
    check_empty(destination)?;
    if !destination.exists() {
        create_owner_only(destination)?;
    }
    let mut target = Connection::open_with_flags(
        destination,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the destination"))?;
    target
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite("configuring the destination"))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut target)
            .map_err(sqlite("starting the copy into the destination"))?;
        backup
            .run_to_completion(1024, Duration::ZERO, None)
            .map_err(sqlite("copying into the destination"))?;
    }
    let mut tables = Vec::new();
    for table in table_names(&target)? {
        let rows: i64 = target
            .query_row(
                &format!("SELECT count(*) FROM {}", quote(&table)),
                [],
                |r| r.get(0),
            )
            .map_err(sqlite("counting restored rows"))?;
        tables.push((table, rows as u64));
    }
    Ok(tables)
}

/// A missing or zero-length file, or a database that holds no row beyond those a fresh store's
/// migrations insert (the instance tenant's workspace row): an opened but unused store is empty.
fn check_empty(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading the destination")(e)),
        Ok(meta) if meta.len() == 0 => return Ok(()),
        Ok(_) => {}
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the destination"))?;
    let mut seeded: Option<(tempfile::TempDir, Connection)> = None;
    for table in table_names(&conn)? {
        let count: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {}", quote(&table)),
                [],
                |r| r.get(0),
            )
            .map_err(sqlite("reading the destination"))?;
        if count == 0 {
            continue;
        }
        if seeded.is_none() {
            seeded = Some(fresh_store()?);
        }
        let (_, fresh) = seeded.as_ref().expect("just made");
        if !table_names(fresh)?.contains(&table) {
            return Err(Error::NotEmpty);
        }
        let seeds = rows(fresh, &table)?;
        // Only the few seeded rows are ever read in full.
        if count as usize > seeds.len() || !rows(&conn, &table)?.is_subset(&seeds) {
            return Err(Error::NotEmpty);
        }
    }
    Ok(())
}

/// A store freshly created by this build, in a private temporary directory.
fn fresh_store() -> Result<(tempfile::TempDir, Connection)> {
    let dir = tempfile::tempdir().map_err(Error::io("creating a temporary directory"))?;
    let path = dir.path().join("fresh.db");
    drop(leadmaps_store_sqlite::SqliteStore::open(&path)?);
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening a fresh store"))?;
    Ok((dir, conn))
}

/// Every row of `table`, each as the debug text of its values: for comparing, never shown.
fn rows(conn: &Connection, table: &str) -> Result<std::collections::BTreeSet<String>> {
    let mut statement = conn
        .prepare(&format!("SELECT * FROM {}", quote(table)))
        .map_err(sqlite("reading the destination"))?;
    let columns = statement.column_count();
    let rows = statement
        .query_map([], |row| {
            (0..columns)
                .map(|i| {
                    row.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(|values| values.join("\u{1f}"))
        })
        .map_err(sqlite("reading the destination"))?
        .collect::<rusqlite::Result<_>>()
        .map_err(sqlite("reading the destination"))?;
    Ok(rows)
}

fn table_names(conn: &Connection) -> Result<Vec<String>> {
    let mut statement = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name",
        )
        .map_err(sqlite("listing tables"))?;
    let names = statement
        .query_map([], |r| r.get(0))
        .map_err(sqlite("listing tables"))?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(sqlite("listing tables"))?;
    Ok(names)
}

fn user_version(conn: &Connection) -> Result<u32> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite("reading the schema version"))?;
    u32::try_from(version)
        .map_err(|_| Error::Incompatible("the database is not a leadmaps database".into()))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn create_owner_only(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .map_err(Error::io("creating the destination"))
}

async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}
