#![doc = include_str!("../README.md")]

mod database;
mod error;
mod format;
mod postgres;
mod sqlite;
mod target;

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt as _;
use leadmaps_core::clock::Clock;
use leadmaps_core::crypto::chunked::{Decryptor, Encryptor, SALT_LEN};
use object_store::{ObjectStoreExt as _, WriteMultipart};
use time::OffsetDateTime;
use tokio::sync::mpsc;

pub use crate::database::{Database, PostgresDatabase};
pub use crate::error::{CORRUPT, Error, Result};
pub use crate::format::{
    BACKUP_KEY_LABEL, BackupKeys, CONTEXT_LABEL, EXTENSION, FORMAT_VERSION, Header, MAGIC,
    MAX_DATA, MAX_HEADER, SourceKind,
};
pub use crate::target::{
    BACKUP_URL_ENV, BackupTarget, DEFAULT_REGION, S3_ENDPOINT_ENV, S3_REGION_ENV, S3Options,
};

use crate::format::{Item, PayloadWriter, SectionMeta};

/// Uploads run at most this many parts at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// Downloaded pieces buffered ahead of the decryptor.
const DOWNLOAD_AHEAD: usize = 8;
/// Decoded records buffered ahead of the database.
const ITEMS_AHEAD: usize = 16;

/// Told how far a long run has come, in bytes of the stored object. Implemented by the CLI's
/// progress bar; `()` ignores it.
pub trait Progress: Send + Sync {
    /// The object's size, when known in advance (restores know it; backups do not).
    fn total(&self, bytes: u64) {
        let _ = bytes;
    }
    /// `bytes` more were uploaded or downloaded.
    fn advance(&self, bytes: u64);
}

impl Progress for () {
    fn advance(&self, _bytes: u64) {}
}

/// A backup that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupInfo {
    /// Its object name at the target.
    pub name: String,
    /// Its header.
    pub header: Header,
    /// The object's size in bytes.
    pub size: u64,
}

/// One object at a target, as [`list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupEntry {
    /// Its object name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When the storage last wrote it.
    pub stored_at: OffsetDateTime,
    /// Its header as the object claims it (verified only by a restore); `None` when it has no
    /// readable v1 header.
    pub header: Option<Header>,
}

/// What a restore filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The backup's header, verified.
    pub header: Header,
    /// Every table restored, with its row count.
    pub tables: Vec<(String, u64)>,
}

/// Takes a consistent snapshot of `database`, encrypts it as a stream under the backup key of
/// `keys`' primary KEK and uploads it to `target` as a new object (a multipart upload: the
/// backup is never held in memory whole). Returns its name.
///
/// SQLite: `VACUUM INTO` a private temporary file (one read transaction: a consistent image,
/// taken while a store may be writing; free pages, so deleted data, are not carried), then
/// that file. Postgres: one `SERIALIZABLE READ ONLY DEFERRABLE` transaction on the owner
/// connection, with `row_security` off (so a role that would see only part of the rows fails
/// instead), each table of the `leadmaps` schema in foreign-key order by binary `COPY`,
/// partitioned tables through their parent.
///
/// # Errors
/// [`Error::Store`] when the database cannot be read, [`Error::Incompatible`] for a schema
/// newer than this build, [`Error::Storage`] when the upload fails (the partial upload is
/// aborted: no object is left).
pub async fn create(
    database: &Database,
    target: &BackupTarget,
    keys: &BackupKeys,
    clock: &dyn Clock,
    progress: &dyn Progress,
) -> Result<BackupInfo> {
    let snapshot = match database {
        Database::Sqlite(path) => Snapshot::Sqlite(sqlite::snapshot(path).await?),
        Database::Postgres(pg) => Snapshot::Postgres(postgres::snapshot(pg).await?),
    };
    let now = clock.now();
    let header = Header {
        id: uuid::Uuid::new_v4(),
        created_at: now
            .replace_nanosecond(0)
            .expect("zero nanoseconds are valid"),
        source: snapshot.kind(),
        schema_version: snapshot.schema_version(),
        kek_id: keys.primary(),
    };
    let name = header.object_name();
    let path = target.path(&name)?;
    if target.exists(&path).await? {
        return Err(Error::Config("a backup of that name exists already".into()));
    }
    let key = keys.get(header.kek_id).expect("the primary is in the ring");
    let preamble = header.preamble();
    let context = format::context(&name, &preamble);
    let mut salt = [0u8; SALT_LEN];
    leadmaps_core::crypto::random_bytes(&mut salt);

    let multipart = target
        .store()
        .put_multipart(&path)
        .await
        .map_err(Error::storage("starting the upload"))?;
    let mut upload = WriteMultipart::new(multipart);
    upload.write(&preamble);
    progress.advance(preamble.len() as u64);
    let buffer = SharedBuffer::default();
    let encryptor = Encryptor::new(key, &salt, &[&context], buffer.clone())
        .map_err(Error::io("starting the encryption"))?;
    let mut writer = Upload {
        payload: PayloadWriter::new(encryptor),
        buffer,
        upload,
        size: preamble.len() as u64,
        progress,
    };
    let written = match snapshot {
        Snapshot::Sqlite(snapshot) => sqlite::write(snapshot, &mut writer).await,
        Snapshot::Postgres(snapshot) => postgres::write(snapshot, &mut writer).await,
    };
    match written {
        Ok(()) => {
            let size = writer.finish().await?;
            Ok(BackupInfo { name, header, size })
        }
        Err(error) => {
            // Nothing half-written stays behind; the first error is the one to report.
            let _ = writer.upload.abort().await;
            Err(error)
        }
    }
}

/// Lists the backups directly under the target's prefix (objects named `*.lmbk`), oldest
/// first, each with its size, storage time and claimed header (read from its first bytes).
///
/// # Errors
/// [`Error::Storage`] when the listing or a header read fails.
pub async fn list(target: &BackupTarget) -> Result<Vec<BackupEntry>> {
    let prefix = target.prefix();
    let listing = target
        .store()
        .list_with_delimiter((!prefix.as_ref().is_empty()).then_some(prefix))
        .await
        .map_err(Error::storage("listing the backups"))?;
    let mut entries = Vec::new();
    for meta in listing.objects {
        let Some(name) = target.name_of(&meta.location) else {
            continue;
        };
        if !name.ends_with(&format!(".{EXTENSION}")) {
            continue;
        }
        let head_len = meta
            .size
            .min((format::PREAMBLE_FIXED + format::MAX_HEADER) as u64);
        let head = target
            .store()
            .get_range(&meta.location, 0..head_len)
            .await
            .map_err(Error::storage("reading a backup's header"))?;
        let header = Header::read_preamble(&mut head.as_ref())
            .ok()
            .map(|(h, _)| h);
        let stored_at = OffsetDateTime::from_unix_timestamp(meta.last_modified.timestamp())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        entries.push(BackupEntry {
            name,
            size: meta.size,
            stored_at,
            header,
        });
    }
    entries.sort_by(|a, b| {
        let at = |e: &BackupEntry| e.header.as_ref().map_or(e.stored_at, |h| h.created_at);
        at(a).cmp(&at(b)).then_with(|| a.name.cmp(&b.name))
    });
    Ok(entries)
}

/// Restores the backup `name` from `target` into `database`, which must be empty (a SQLite
/// path that does not exist yet or holds no row; a Postgres database with no leadmaps row).
///
/// The object is streamed: downloaded, decrypted and verified chunk by chunk under the backup
/// key of the KEK its header names, and loaded as it comes, but nothing is committed before
/// the whole object verified. SQLite: the image is written to a private temporary file beside
/// the destination, checked (`integrity_check`, schema version) and copied in with SQLite's
/// backup API. Postgres: the database is migrated to the backup's schema version, then every
/// table is filled by binary `COPY` in one transaction that commits only after the last chunk
/// authenticated and every table's row count matched.
///
/// # Errors
/// [`Error::Corrupt`] for any tampering, truncation, renaming or a wrong key, with nothing
/// written; [`Error::MissingKey`] when the ring lacks the backup's KEK; [`Error::NotEmpty`];
/// [`Error::Incompatible`] for a backup of the other store kind or of a schema this build does
/// not know; [`Error::NotFound`]; [`Error::Storage`]; [`Error::Store`].
pub async fn restore(
    target: &BackupTarget,
    name: &str,
    keys: &BackupKeys,
    database: &Database,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let path = target.path(name)?;
    let object = match target.store().get(&path).await {
        Ok(object) => object,
        Err(object_store::Error::NotFound { .. }) => return Err(Error::NotFound(name.to_owned())),
        Err(error) => return Err(Error::storage("opening the backup")(error)),
    };
    progress.total(object.meta.size);
    let mut stream = object.into_stream();

    let (bytes_tx, bytes_rx) = mpsc::channel::<io::Result<Bytes>>(DOWNLOAD_AHEAD);
    let (items_tx, items_rx) = mpsc::channel::<Item>(ITEMS_AHEAD);
    let download = async move {
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(piece) => {
                    progress.advance(piece.len() as u64);
                    if bytes_tx.send(Ok(piece)).await.is_err() {
                        return Ok(()); // The decoder stopped; its reason is reported.
                    }
                }
                Err(error) => {
                    let _ = bytes_tx
                        .send(Err(io::Error::other("the download failed")))
                        .await;
                    return Err(Error::storage("downloading the backup")(error));
                }
            }
        }
        Ok(())
    };
    let decode = {
        let (keys, name) = (keys.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || {
            decode(ChannelReader::new(bytes_rx), &keys, &name, &items_tx)
        })
    };
    let load = async move {
        match database {
            Database::Sqlite(path) => sqlite::restore(path, items_rx).await,
            Database::Postgres(pg) => postgres::restore(pg, items_rx).await,
        }
    };
    let (downloaded, decoded, loaded) = futures_util::join!(download, decode, load);
    downloaded?;
    let decoded = decoded.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
    match loaded? {
        Some(report) => Ok(report),
        // The records stopped before the end: the decoder says why.
        None => Err(decoded.err().unwrap_or(Error::Corrupt)),
    }
}

/// Reads the preamble, opens the body with the key its header names, and sends every record.
fn decode(
    mut reader: ChannelReader,
    keys: &BackupKeys,
    name: &str,
    items: &mpsc::Sender<Item>,
) -> Result<()> {
    let (header, preamble) = Header::read_preamble(&mut reader)?;
    let key = keys.get(header.kek_id).ok_or(Error::MissingKey {
        kek_id: header.kek_id,
    })?;
    let context = format::context(name, &preamble);
    // The key commitment covers the context: a changed header or name, or another key, fails
    // here, before any record.
    let mut body = Decryptor::new(key, &[&context], reader).map_err(|_| Error::Corrupt)?;
    let mut send = |item: Item| {
        items
            .blocking_send(item)
            .map_err(|_| Error::Config("the restore stopped".into()))
    };
    send(Item::Header(header))?;
    format::read_payload(&mut body, &mut send)
}

/// The snapshot being written.
enum Snapshot {
    Sqlite(sqlite::Snapshot),
    Postgres(postgres::Snapshot),
}

impl Snapshot {
    fn kind(&self) -> SourceKind {
        match self {
            Snapshot::Sqlite(_) => SourceKind::Sqlite,
            Snapshot::Postgres(_) => SourceKind::Postgres,
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            Snapshot::Sqlite(s) => s.schema_version,
            Snapshot::Postgres(s) => s.schema_version,
        }
    }
}

/// The payload writer of a backup in progress: records go through the encryptor into a
/// buffer, which is handed to the multipart upload after every record.
pub(crate) struct Upload<'p> {
    payload: PayloadWriter<Encryptor<SharedBuffer>>,
    buffer: SharedBuffer,
    upload: WriteMultipart,
    size: u64,
    progress: &'p dyn Progress,
}

impl Upload<'_> {
    pub(crate) async fn section(&mut self, name: &str, meta: &SectionMeta) -> Result<()> {
        self.payload
            .section(name, meta)
            .map_err(Error::io("encrypting the backup"))?;
        self.flush().await
    }

    pub(crate) async fn data(&mut self, bytes: &[u8]) -> Result<()> {
        self.payload
            .data(bytes)
            .map_err(Error::io("encrypting the backup"))?;
        self.flush().await
    }

    pub(crate) async fn end_section(&mut self) -> Result<()> {
        self.payload
            .end_section()
            .map_err(Error::io("encrypting the backup"))?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<()> {
        let ciphertext = self.buffer.take();
        if ciphertext.is_empty() {
            return Ok(());
        }
        self.size += ciphertext.len() as u64;
        self.progress.advance(ciphertext.len() as u64);
        self.upload.put(Bytes::from(ciphertext));
        self.upload
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(Error::storage("uploading the backup"))
    }

    /// Writes the end record and the final chunk, and completes the upload.
    async fn finish(self) -> Result<u64> {
        let Upload {
            payload,
            buffer,
            mut upload,
            mut size,
            progress,
        } = self;
        let closed = payload
            .finish()
            .and_then(Encryptor::finish)
            .map_err(Error::io("encrypting the backup"));
        if let Err(error) = closed {
            let _ = upload.abort().await;
            return Err(error);
        }
        let tail = buffer.take();
        size += tail.len() as u64;
        progress.advance(tail.len() as u64);
        upload.put(Bytes::from(tail));
        upload
            .finish()
            .await
            .map_err(Error::storage("completing the upload"))?;
        Ok(size)
    }
}

/// A `Write` into a shared buffer, drained by the uploader after each record.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking `Read` over the downloaded pieces.
struct ChannelReader {
    pieces: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(pieces: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            pieces,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.pieces.blocking_recv() {
                None => return Ok(0),
                Some(piece) => self.current = piece?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
