//! The backup object, format v1 (see the crate README for the full description).
//!
//! ```text
//! object   = preamble || body
//! preamble = "LMBACKUP" || version(1) = 0x01 || header_len(4, u32 BE) || header (JSON)
//! body     = C2SP chunked encryption (salt || commitment || chunks) of the payload under
//!            K = HKDF-Expand(KEK[header.kek_id], "leadmaps/backup-key/v1", 32),
//!            context = "leadmaps/backup/v1" || 0x00 || u32 BE len || object name
//!                      || u32 BE len || preamble
//! payload  = record* || end
//! record   = 'S' || name_len(2, u16 BE) || name || meta_len(4, u32 BE) || meta (JSON)  section
//!          | 'D' || len(4, u32 BE, 1..=1 MiB) || bytes                                data
//!          | 'Z' || bytes(8, u64 BE)                                    end of section
//! end      = 'E' || summary_len(4, u32 BE) || summary (JSON), then the end of the payload
//! ```
//!
//! The header is readable without keys (so `list` can show it and restore can pick the KEK) and
//! authenticated by the key commitment: the context covers it, so a changed header fails before
//! the first chunk. The object name is in the context too, so a backup renamed or swapped for
//! another fails the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

use leadmaps_core::crypto::KeyRing;
use leadmaps_core::crypto::chunked::ChunkedKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The first eight bytes of every backup object.
pub const MAGIC: &[u8; 8] = b"LMBACKUP";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The HKDF label of the backup key derived from each KEK: used for nothing else.
pub const BACKUP_KEY_LABEL: &str = "leadmaps/backup-key/v1";
/// The domain label at the front of the encryption context.
pub const CONTEXT_LABEL: &[u8] = b"leadmaps/backup/v1";
/// The file extension of backup objects.
pub const EXTENSION: &str = "lmbk";
/// The longest header accepted.
pub const MAX_HEADER: usize = 16 * 1024;
/// The longest data record; writers cut their data into records of at most this size.
pub const MAX_DATA: usize = 1024 * 1024;
const MAX_META: usize = 1024 * 1024;
const MAX_NAME: usize = 256;
/// Bytes before the header.
pub(crate) const PREAMBLE_FIXED: usize = MAGIC.len() + 1 + 4;

/// Which store a backup was taken from, and can only be restored into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SourceKind {
    /// A SQLite database file.
    Sqlite,
    /// A Postgres database.
    Postgres,
}

impl SourceKind {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Sqlite => "sqlite",
            SourceKind::Postgres => "postgres",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unencrypted header of a backup. Authenticated (by the key commitment) only once a
/// restore opens the body; before that, in a listing, it is what the object claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// A random id, also in the object name.
    pub id: Uuid,
    /// When the snapshot was taken (UTC, whole seconds).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The store kind it came from.
    pub source: SourceKind,
    /// The source's schema version (SQLite `user_version`, Postgres migration version).
    pub schema_version: u32,
    /// The KEK the backup key was derived from.
    pub kek_id: u32,
}

impl Header {
    /// The object name for this header: `leadmaps-<UTC time>-<id>.lmbk`, so names sort by time
    /// and carry nothing secret.
    pub fn object_name(&self) -> String {
        let t = self.created_at;
        format!(
            "leadmaps-{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}.{EXTENSION}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            self.id.simple()
        )
    }

    /// The preamble: magic, version, header length and header.
    pub(crate) fn preamble(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a header always serialises");
        let mut out = Vec::with_capacity(PREAMBLE_FIXED + json.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// Reads a preamble from `reader`, returning the header and the preamble's bytes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for anything but a well-formed v1 preamble.
    pub(crate) fn read_preamble(reader: &mut impl Read) -> Result<(Header, Vec<u8>)> {
        let mut fixed = [0u8; PREAMBLE_FIXED];
        reader.read_exact(&mut fixed).map_err(|_| Error::Corrupt)?;
        let len = Self::check_fixed(&fixed)?;
        let mut preamble = Vec::with_capacity(PREAMBLE_FIXED + len);
        preamble.extend_from_slice(&fixed);
        preamble.resize(PREAMBLE_FIXED + len, 0);
        reader
            .read_exact(&mut preamble[PREAMBLE_FIXED..])
            .map_err(|_| Error::Corrupt)?;
        let header =
            serde_json::from_slice(&preamble[PREAMBLE_FIXED..]).map_err(|_| Error::Corrupt)?;
        Ok((header, preamble))
    }

    /// Checks the fixed part of a preamble and returns the header length.
    pub(crate) fn check_fixed(fixed: &[u8]) -> Result<usize> {
        if fixed.len() < PREAMBLE_FIXED || &fixed[..8] != MAGIC || fixed[8] != FORMAT_VERSION {
            return Err(Error::Corrupt);
        }
        let len = u32::from_be_bytes(fixed[9..13].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_HEADER {
            return Err(Error::Corrupt);
        }
        Ok(len)
    }
}

/// The encryption context of the body: the object name and the preamble, length-prefixed.
pub(crate) fn context(name: &str, preamble: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTEXT_LABEL.len() + 9 + name.len() + preamble.len());
    out.extend_from_slice(CONTEXT_LABEL);
    out.push(0);
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(preamble.len() as u32).to_be_bytes());
    out.extend_from_slice(preamble);
    out
}

/// The backup keys: one per KEK of the ring, derived with [`BACKUP_KEY_LABEL`], so a backup key
/// is never a key of anything else (tenant keys, token digests, checkpoints). New backups use
/// the primary KEK's; a restore uses the one its header names.
#[derive(Clone)]
pub struct BackupKeys {
    primary: u32,
    keys: BTreeMap<u32, ChunkedKey>,
}

impl fmt::Debug for BackupKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupKeys")
            .field("primary", &self.primary)
            .field("kek_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BackupKeys {
    /// The backup key of every KEK in `ring`.
    pub fn new(ring: &KeyRing) -> Self {
        let keys = ring
            .ids()
            .map(|id| {
                let raw = ring.get(id).expect("id from ring").derive(BACKUP_KEY_LABEL);
                (id, ChunkedKey::new(&raw[..]).expect("a 32-byte key"))
            })
            .collect();
        Self {
            primary: ring.primary().id(),
            keys,
        }
    }

    /// The KEK id new backups are made under.
    pub fn primary(&self) -> u32 {
        self.primary
    }

    pub(crate) fn get(&self, kek_id: u32) -> Option<&ChunkedKey> {
        self.keys.get(&kek_id)
    }
}

/// What a section holds; its `kind` names the store-specific content of its data records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub(crate) enum SectionMeta {
    /// A consistent image of a SQLite database file (`VACUUM INTO`).
    #[serde(rename = "sqlite.database")]
    SqliteDatabase {
        /// The image's length in bytes.
        bytes: u64,
    },
    /// One Postgres table's rows in `COPY ... (FORMAT binary)`; partitioned tables through
    /// their parent, with the months of the partitions that existed.
    #[serde(rename = "postgres.table")]
    PostgresTable {
        /// The table in the `leadmaps` schema.
        table: String,
        /// Its columns in order, with their types as `format_type` writes them.
        columns: Vec<(String, String)>,
        /// Rows in the snapshot.
        rows: u64,
        /// For `events`: the first days of the months that had a partition.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        partitions: Vec<String>,
    },
}

/// The closing record: what the writer wrote, checked by the reader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Summary {
    /// Each section's name and data bytes, in order.
    pub(crate) sections: Vec<(String, u64)>,
}

/// Writes the payload's records to a `Write` (the encryptor).
pub(crate) struct PayloadWriter<W: Write> {
    inner: W,
    open: Option<(String, u64)>,
    summary: Summary,
}

impl<W: Write> PayloadWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            open: None,
            summary: Summary::default(),
        }
    }

    pub(crate) fn section(&mut self, name: &str, meta: &SectionMeta) -> io::Result<()> {
        assert!(self.open.is_none(), "sections do not nest");
        assert!(
            !name.is_empty() && name.len() <= MAX_NAME,
            "section name length"
        );
        let meta = serde_json::to_vec(meta).map_err(io::Error::other)?;
        self.inner.write_all(b"S")?;
        self.inner.write_all(&(name.len() as u16).to_be_bytes())?;
        self.inner.write_all(name.as_bytes())?;
        self.inner.write_all(&(meta.len() as u32).to_be_bytes())?;
        self.inner.write_all(&meta)?;
        self.open = Some((name.to_owned(), 0));
        Ok(())
    }

    pub(crate) fn data(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let open = self.open.as_mut().expect("data inside a section");
        while !bytes.is_empty() {
            let take = bytes.len().min(MAX_DATA);
            self.inner.write_all(b"D")?;
            self.inner.write_all(&(take as u32).to_be_bytes())?;
            self.inner.write_all(&bytes[..take])?;
            open.1 += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    pub(crate) fn end_section(&mut self) -> io::Result<()> {
        let (name, bytes) = self.open.take().expect("an open section");
        self.inner.write_all(b"Z")?;
        self.inner.write_all(&bytes.to_be_bytes())?;
        self.summary.sections.push((name, bytes));
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        assert!(self.open.is_none(), "every section is closed");
        let summary = serde_json::to_vec(&self.summary).map_err(io::Error::other)?;
        self.inner.write_all(b"E")?;
        self.inner
            .write_all(&(summary.len() as u32).to_be_bytes())?;
        self.inner.write_all(&summary)?;
        Ok(self.inner)
    }
}

/// One decoded step of the payload.
#[derive(Debug)]
pub(crate) enum Item {
    /// The header, once the body's key commitment matched: it is authentic from here on.
    Header(Header),
    /// A section starts.
    Section { name: String, meta: SectionMeta },
    /// Data of the open section.
    Data(bytes::Bytes),
    /// The open section ends.
    EndSection,
    /// The whole payload decrypted and verified: only now may a restore commit.
    End,
}

/// Reads the payload's records from the decrypted stream and checks their order, lengths and
/// the summary, then that the stream ends right there (which authenticates the final chunk).
/// Every failure is [`Error::Corrupt`].
pub(crate) fn read_payload(
    reader: &mut impl Read,
    emit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut written = Summary::default();
    let mut open: Option<(String, u64)> = None;
    loop {
        let mut tag = [0u8; 1];
        read_exact(reader, &mut tag)?;
        match (tag[0], open.as_mut()) {
            (b'S', None) => {
                let len = u16::from_be_bytes(read_array(reader)?) as usize;
                if len == 0 || len > MAX_NAME {
                    return Err(Error::Corrupt);
                }
                let name = String::from_utf8(read_vec(reader, len)?).map_err(|_| Error::Corrupt)?;
                let meta_len = u32::from_be_bytes(read_array(reader)?) as usize;
                if meta_len > MAX_META {
                    return Err(Error::Corrupt);
                }
                let meta = serde_json::from_slice(&read_vec(reader, meta_len)?)
                    .map_err(|_| Error::Corrupt)?;
                open = Some((name.clone(), 0));
                emit(Item::Section { name, meta })?;
            }
            (b'D', Some(section)) => {
                let len = u32::from_be_bytes(read_array(reader)?) as usize;
                if len == 0 || len > MAX_DATA {
                    return Err(Error::Corrupt);
                }
                section.1 += len as u64;
                emit(Item::Data(read_vec(reader, len)?.into()))?;
            }
            (b'Z', Some(_)) => {
                let bytes = u64::from_be_bytes(read_array(reader)?);
                let section = open.take().expect("matched Some");
                if bytes != section.1 {
                    return Err(Error::Corrupt);
                }
                written.sections.push(section);
                emit(Item::EndSection)?;
            }
            (b'E', None) => {
                let len = u32::from_be_bytes(read_array(reader)?) as usize;
                if len > MAX_META {
                    return Err(Error::Corrupt);
                }
                let summary: Summary =
                    serde_json::from_slice(&read_vec(reader, len)?).map_err(|_| Error::Corrupt)?;
                if summary != written {
                    return Err(Error::Corrupt);
                }
                // Nothing may follow, and reaching the end authenticates the final chunk.
                let mut extra = [0u8; 1];
                match reader.read(&mut extra) {
                    Ok(0) => {}
                    _ => return Err(Error::Corrupt),
                }
                return emit(Item::End);
            }
            _ => return Err(Error::Corrupt),
        }
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    reader.read_exact(buf).map_err(|_| Error::Corrupt)
}

fn read_array<const N: usize>(reader: &mut impl Read) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    read_exact(reader, &mut out)?;
    Ok(out)
}

fn read_vec(reader: &mut impl Read, len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    read_exact(reader, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use leadmaps_core::crypto::Kek;
    use time::macros::datetime;

    use super::*;

    fn header() -> Header {
        Header {
            id: Uuid::from_u128(0x1234),
            created_at: datetime!(2026-03-14 15:09:26 UTC),
            source: SourceKind::Postgres,
            schema_version: 11,
            kek_id: 2,
        }
    }

    #[test]
    fn names_sort_by_time_and_carry_only_the_id() {
        assert_eq!(
            header().object_name(),
            "leadmaps-20260314T150926Z-00000000000000000000000000001234.lmbk"
        );
    }

    #[test]
    fn the_preamble_round_trips_and_anything_else_is_corrupt() {
        let preamble = header().preamble();
        let (read, bytes) = Header::read_preamble(&mut preamble.as_slice()).unwrap();
        assert_eq!((read, bytes), (header(), preamble.clone()));
        for bad in [
            &b"NOTABACK"[..],
            &preamble[..10],
            &preamble[..preamble.len() - 1],
        ] {
            assert!(matches!(
                Header::read_preamble(&mut &bad[..]),
                Err(Error::Corrupt)
            ));
        }
        let mut newer = preamble.clone();
        newer[8] = 2;
        assert!(Header::read_preamble(&mut newer.as_slice()).is_err());
    }

    #[test]
    fn backup_keys_differ_from_every_other_derivation() {
        let ring = KeyRing::new([
            Kek::new(1, &(1..=32).collect::<Vec<u8>>()).unwrap(),
            Kek::new(2, &(2..=33).collect::<Vec<u8>>()).unwrap(),
        ])
        .unwrap();
        let keys = BackupKeys::new(&ring);
        assert_eq!(keys.primary(), 2);
        assert!(keys.get(1).is_some() && keys.get(3).is_none());
        let kek = ring.get(1).unwrap();
        assert_ne!(
            kek.derive(BACKUP_KEY_LABEL)[..],
            kek.derive("leadmaps/audit-checkpoint-key/v1")[..]
        );
        assert_ne!(
            kek.derive(BACKUP_KEY_LABEL)[..],
            kek.derive("leadmaps/token-digest/v1")[..]
        );
        assert!(!format!("{keys:?}").contains("prk"));
    }

    fn payload() -> Vec<u8> {
        let mut writer = PayloadWriter::new(Vec::new());
        writer
            .section("db", &SectionMeta::SqliteDatabase { bytes: 3 })
            .unwrap();
        writer.data(b"abc").unwrap();
        writer.end_section().unwrap();
        writer.finish().unwrap()
    }

    fn decode(bytes: &[u8]) -> Result<Vec<String>> {
        let mut items = Vec::new();
        read_payload(&mut &bytes[..], &mut |item| {
            items.push(format!("{item:?}"));
            Ok(())
        })?;
        Ok(items)
    }

    #[test]
    fn payloads_round_trip_and_must_end_exactly() {
        let bytes = payload();
        let items = decode(&bytes).unwrap();
        assert_eq!(items.len(), 4, "{items:?}");
        assert!(items[3].starts_with("End"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(Error::Corrupt)));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A section's byte count that disagrees with its data.
        let z = bytes.iter().position(|b| *b == b'Z').unwrap();
        let mut wrong = bytes.clone();
        wrong[z + 8] ^= 1;
        assert!(matches!(decode(&wrong), Err(Error::Corrupt)));
    }
}
