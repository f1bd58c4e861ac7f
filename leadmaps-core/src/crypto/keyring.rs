//! Key-encryption keys (KEKs): versioned, held only in process, loaded from the environment, a
//! file or an integrator's [`KeyProvider`] (KMS, HSM).
//!
//! The text format, for `LEADMAPS_KEK` and key files, is either one base64 key (it gets id 1) or
//! a comma-separated list of `id:base64` pairs. The highest id is the primary: new tenant keys are
//! wrapped under it, and [`super::Vault::rewrap_all`] moves older ones onto it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::chunked::ChunkedKey;
use crate::error::{Error, Result};

/// The environment variable [`EnvKeyProvider`] reads by default.
pub const KEK_ENV: &str = "LEADMAPS_KEK";

/// One key-encryption key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct Kek {
    id: u32,
    key: ChunkedKey,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek {{ id: {}, key: [REDACTED] }}", self.id)
    }
}

impl Kek {
    /// A KEK from 32 raw bytes.
    ///
    /// # Errors
    /// [`Error::KeyConfig`] when the key is not 32 bytes, is all one byte value (an unfilled or
    /// placeholder key), or the id is 0.
    pub fn new(id: u32, key: &[u8]) -> Result<Self> {
        if id == 0 {
            return Err(Error::KeyConfig("KEK ids start at 1".into()));
        }
        if key.len() != 32 {
            return Err(Error::KeyConfig(format!(
                "KEK {id} is {} bytes; expected 32",
                key.len()
            )));
        }
        if key.iter().all(|b| *b == key[0]) {
            return Err(Error::KeyConfig(format!(
                "KEK {id} is one repeated byte; generate a random key"
            )));
        }
        let key = ChunkedKey::new(key).map_err(|_| Error::KeyConfig("bad KEK".into()))?;
        Ok(Self { id, key })
    }

    /// The KEK's id (the key_ref of every tenant key it wraps).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A 32-byte key derived from this KEK for one purpose (HKDF-Expand with `label`), e.g. the
    /// HMAC key of token digests and blind indexes. It changes with the KEK.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        self.key.subkey(label.as_bytes())
    }

    pub(crate) fn key(&self) -> &ChunkedKey {
        &self.key
    }
}

/// The KEKs this process holds, one of them primary.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keks: BTreeMap<u32, Kek>,
    primary: u32,
}

impl KeyRing {
    /// A ring of the given KEKs; the highest id is primary.
    ///
    /// # Errors
    /// [`Error::KeyConfig`] when empty or when an id repeats.
    pub fn new(keks: impl IntoIterator<Item = Kek>) -> Result<Self> {
        let mut map = BTreeMap::new();
        for kek in keks {
            let id = kek.id;
            if map.insert(id, kek).is_some() {
                return Err(Error::KeyConfig(format!("KEK id {id} given twice")));
            }
        }
        let primary = *map
            .keys()
            .next_back()
            .ok_or_else(|| Error::KeyConfig("no KEK configured".into()))?;
        Ok(Self { keks: map, primary })
    }

    /// Parses the text format (see the module docs).
    ///
    /// # Errors
    /// [`Error::KeyConfig`] naming the entry at fault, never its value.
    pub fn parse(text: &str) -> Result<Self> {
        let text = Zeroizing::new(text.trim().to_owned());
        let engine = base64::engine::general_purpose::STANDARD;
        let mut keks = Vec::new();
        for (position, entry) in text.split(',').map(str::trim).enumerate() {
            let (id, encoded) = match entry.split_once(':') {
                Some((id, encoded)) => {
                    let id = id.trim().parse::<u32>().map_err(|_| {
                        Error::KeyConfig(format!("KEK entry {} has no numeric id", position + 1))
                    })?;
                    (id, encoded.trim())
                }
                None if position == 0 && !text.contains(',') => (1, entry),
                None => {
                    return Err(Error::KeyConfig(format!(
                        "KEK entry {} needs the form id:base64",
                        position + 1
                    )));
                }
            };
            let raw = Zeroizing::new(
                engine
                    .decode(encoded)
                    .map_err(|_| Error::KeyConfig(format!("KEK {id} is not valid base64")))?,
            );
            keks.push(Kek::new(id, &raw)?);
        }
        Self::new(keks)
    }

    /// The primary KEK.
    pub fn primary(&self) -> &Kek {
        &self.keks[&self.primary]
    }

    /// A KEK by id.
    pub fn get(&self, id: u32) -> Option<&Kek> {
        self.keks.get(&id)
    }

    /// All KEK ids, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keks.keys().copied()
    }

    /// Loads the ring from a provider.
    ///
    /// # Errors
    /// Whatever the provider reports, or [`Error::KeyConfig`] for an unusable ring.
    pub async fn load(provider: &dyn KeyProvider) -> Result<Self> {
        Self::new(provider.keks().await?)
    }
}

/// Where KEKs come from. Implement it for a KMS or HSM; the library ships the environment and
/// file providers.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// Every KEK the process should hold. The highest id becomes primary.
    ///
    /// # Errors
    /// [`Error::KeyConfig`] or [`Error::Unavailable`]; the message must not contain key material.
    async fn keks(&self) -> Result<Vec<Kek>>;
}

/// Reads KEKs from an environment variable ([`KEK_ENV`] by default).
#[derive(Debug, Clone)]
pub struct EnvKeyProvider {
    var: String,
}

impl EnvKeyProvider {
    /// Reads `LEADMAPS_KEK`.
    pub fn new() -> Self {
        Self::with_var(KEK_ENV)
    }

    /// Reads another variable.
    pub fn with_var(var: impl Into<String>) -> Self {
        Self { var: var.into() }
    }
}

impl Default for EnvKeyProvider {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl KeyProvider for EnvKeyProvider {
    async fn keks(&self) -> Result<Vec<Kek>> {
        let value = Zeroizing::new(
            std::env::var(&self.var)
                .map_err(|_| Error::KeyConfig(format!("{} is not set", self.var)))?,
        );
        Ok(KeyRing::parse(&value)?.keks.into_values().collect())
    }
}

/// Reads KEKs from a file in the text format. On Unix the file must not be readable by group or
/// others.
#[derive(Debug, Clone)]
pub struct FileKeyProvider {
    path: PathBuf,
}

impl FileKeyProvider {
    /// A provider reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn check_permissions(path: &Path) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map_err(|e| Error::KeyConfig(format!("KEK file unreadable: {}", e.kind())))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::KeyConfig(format!(
                    "KEK file is accessible to group or others (mode {:o}); chmod 600 it",
                    mode & 0o777
                )));
            }
        }
        let _ = path;
        Ok(())
    }
}

#[async_trait]
impl KeyProvider for FileKeyProvider {
    async fn keks(&self) -> Result<Vec<Kek>> {
        Self::check_permissions(&self.path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(&self.path)
                .map_err(|e| Error::KeyConfig(format!("KEK file unreadable: {}", e.kind())))?,
        );
        Ok(KeyRing::parse(&text)?.keks.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn key(seed: u8) -> Vec<u8> {
        (0..32u8)
            .map(|i| i.wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn single_key_gets_id_one() {
        let ring = KeyRing::parse(&b64(&key(1))).unwrap();
        assert_eq!(ring.primary().id(), 1);
    }

    #[test]
    fn highest_id_is_primary() {
        let ring = KeyRing::parse(&format!("1:{}, 7:{}", b64(&key(1)), b64(&key(2)))).unwrap();
        assert_eq!(ring.primary().id(), 7);
        assert_eq!(ring.ids().collect::<Vec<_>>(), [1, 7]);
    }

    #[test]
    fn refuses_bad_keys_without_echoing_them() {
        let short = b64(&[7u8; 16]);
        let err = KeyRing::parse(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(!err.contains(&short));
        let constant = b64(&[0u8; 32]);
        assert!(
            KeyRing::parse(&constant)
                .unwrap_err()
                .to_string()
                .contains("repeated")
        );
        assert!(KeyRing::parse(&b64(&[0xAB; 32])).is_err());
        assert!(KeyRing::parse("not base64!!").is_err());
        assert!(KeyRing::parse(&format!("1:{k},1:{k}", k = b64(&key(1)))).is_err());
        assert!(KeyRing::parse(&format!("0:{}", b64(&key(1)))).is_err());
        assert!(KeyRing::parse(&format!("{},{}", b64(&key(1)), b64(&key(2)))).is_err());
        assert!(KeyRing::parse("").is_err());
        let leaked = format!("{:?}", KeyRing::parse(&b64(&key(3))).unwrap());
        assert!(leaked.contains("REDACTED") && !leaked.contains(&b64(&key(3))));
    }

    #[tokio::test]
    async fn file_provider_refuses_world_readable_files() {
        let dir = std::env::temp_dir().join(format!("leadmaps-kek-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek");
        std::fs::write(&path, b64(&key(5))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(KeyRing::load(&FileKeyProvider::new(&path)).await.is_err());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let ring = KeyRing::load(&FileKeyProvider::new(&path)).await.unwrap();
        assert_eq!(ring.primary().id(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
