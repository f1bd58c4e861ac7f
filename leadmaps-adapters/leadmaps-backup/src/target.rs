//! Where backups are kept: an S3-compatible bucket (AWS S3, Backblaze B2, MinIO, ...) or a local
//! directory, both through `object_store`.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use url::Url;

use crate::error::{Error, Result};

/// The environment variable naming the target: `s3://bucket/prefix` or `file:///path`.
pub const BACKUP_URL_ENV: &str = "LEADMAPS_BACKUP_URL";
/// The S3 endpoint (`https://s3.eu-central-003.backblazeb2.com`); AWS when unset.
pub const S3_ENDPOINT_ENV: &str = "LEADMAPS_BACKUP_S3_ENDPOINT";
/// The S3 region; `AWS_REGION`, then [`DEFAULT_REGION`], when unset.
pub const S3_REGION_ENV: &str = "LEADMAPS_BACKUP_S3_REGION";
/// The region used when none is configured: backups stay in the EU unless told otherwise.
pub const DEFAULT_REGION: &str = "eu-central-1";

/// Settings of an S3-compatible target besides its URL. `Debug` shows no credential.
#[derive(Clone, Default)]
pub struct S3Options {
    /// The endpoint URL; `None` for AWS itself. Plain `http` is accepted for loopback only.
    pub endpoint: Option<String>,
    /// The region (B2: the one in the endpoint's host name, e.g. `eu-central-003`).
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl S3Options {
    /// Reads [`S3_ENDPOINT_ENV`], [`S3_REGION_ENV`] (else `AWS_REGION`), `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            endpoint: var(S3_ENDPOINT_ENV),
            region: var(S3_REGION_ENV).or_else(|| var("AWS_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
        }
    }
}

/// A place backups are written to and read from: an object store and a prefix in it.
#[derive(Clone)]
pub struct BackupTarget {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    description: String,
}

impl fmt::Debug for BackupTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupTarget")
            .field("target", &self.description)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for BackupTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl BackupTarget {
    /// A target from its URL: `s3://bucket/optional/prefix` (with `s3`'s settings) or
    /// `file:///absolute/directory` (created if missing, owner-only on Unix).
    ///
    /// An S3 target needs a rustls `CryptoProvider` installed for the process (the reference
    /// server installs ring); this crate does not choose one.
    ///
    /// # Errors
    /// [`Error::Config`] for another scheme, a missing bucket, credentials given only in part,
    /// plain `http` to anything but a loopback address, or no crypto provider; [`Error::Io`]
    /// when the directory cannot be created.
    pub fn from_url(url: &str, s3: &S3Options) -> Result<Self> {
        let parsed =
            Url::parse(url).map_err(|_| Error::Config("the backup URL does not parse".into()))?;
        match parsed.scheme() {
            "s3" => Self::s3(&parsed, s3),
            "file" => {
                let dir = parsed.to_file_path().map_err(|_| {
                    Error::Config("a file:// backup URL needs an absolute path".into())
                })?;
                Self::directory(&dir)
            }
            _ => Err(Error::Config(
                "the backup URL must be s3://bucket/prefix or file:///directory".into(),
            )),
        }
    }

    /// A local directory target (created if missing, owner-only on Unix).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be created; [`Error::Storage`] when it cannot be opened.
    pub fn directory(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating the backup directory"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::io("making the backup directory owner-only"))?;
        }
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(Error::storage("opening the backup directory"))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            description: format!("file://{}", dir.display()),
        })
    }

    fn s3(url: &Url, options: &S3Options) -> Result<Self> {
        let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
            Error::Config("an s3:// backup URL needs a bucket: s3://bucket/prefix".into())
        })?;
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(Error::Config(
                "no rustls crypto provider is installed for this process: install one (e.g. ring) before opening an S3 target".into(),
            ));
        }
        let region = options.region.as_deref().unwrap_or(DEFAULT_REGION);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region);
        if let Some(endpoint) = &options.endpoint {
            let parsed = Url::parse(endpoint)
                .map_err(|_| Error::Config("the S3 endpoint does not parse".into()))?;
            match parsed.scheme() {
                "https" => {}
                "http" if is_loopback(&parsed) => builder = builder.with_allow_http(true),
                "http" => {
                    return Err(Error::Config(
                        "the S3 endpoint must be https (plain http only to a loopback address)"
                            .into(),
                    ));
                }
                _ => return Err(Error::Config("the S3 endpoint must be an https URL".into())),
            }
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
                if let Some(token) = &options.session_token {
                    builder = builder.with_token(token);
                }
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "give both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither".into(),
                ));
            }
        }
        let store = builder
            .build()
            .map_err(Error::storage("configuring the S3 target"))?;
        let prefix = Path::from(url.path().trim_matches('/'));
        Ok(Self {
            store: Arc::new(store),
            description: format!("s3://{bucket}/{prefix}"),
            prefix,
        })
    }

    /// A target on any object store, under `prefix` (for integrators with their own store).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        let prefix = Path::from(prefix.trim_matches('/'));
        Self {
            description: format!("{store}/{prefix}"),
            store,
            prefix,
        }
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full path of the backup `name`.
    ///
    /// # Errors
    /// [`Error::Config`] for a name that is not a single plain path segment.
    pub fn path(&self, name: &str) -> Result<Path> {
        let valid = !name.is_empty()
            && name.len() <= 200
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if !valid {
            return Err(Error::Config("a backup name is one plain file name".into()));
        }
        Ok(self.prefix.clone().join(name))
    }

    pub(crate) fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub(crate) fn name_of(&self, path: &Path) -> Option<String> {
        let mut parts = path.prefix_match(&self.prefix)?;
        let name = parts.next()?.as_ref().to_owned();
        parts.next().is_none().then_some(name)
    }

    pub(crate) async fn exists(&self, path: &Path) -> Result<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::storage("checking for a backup")(e)),
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_endpoints_are_checked() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let opts = |endpoint: &str| S3Options {
            endpoint: Some(endpoint.into()),
            ..S3Options::default()
        };
        assert!(
            BackupTarget::from_url("s3://bucket/prefix", &opts("http://127.0.0.1:9000")).is_ok()
        );
        assert!(
            BackupTarget::from_url(
                "s3://bucket",
                &opts("https://s3.eu-central-003.backblazeb2.com")
            )
            .is_ok()
        );
        for (url, endpoint) in [
            ("s3://bucket/p", "http://s3.example.com"),
            ("s3://bucket/p", "http://10.0.0.5:9000"),
            ("s3://bucket/p", "ftp://127.0.0.1"),
            ("s3:///p", "https://s3.example.com"),
            ("gs://bucket/p", "https://s3.example.com"),
            ("file://relative", "https://s3.example.com"),
        ] {
            assert!(
                matches!(
                    BackupTarget::from_url(url, &opts(endpoint)),
                    Err(Error::Config(_))
                ),
                "{url} {endpoint}"
            );
        }
        let half = S3Options {
            access_key_id: Some("AKIA".into()),
            ..S3Options::default()
        };
        assert!(BackupTarget::from_url("s3://bucket/p", &half).is_err());
        let secret = S3Options {
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some("very-secret-value".into()),
            ..S3Options::default()
        };
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains("very-secret-value") && !shown.contains("AKIAEXAMPLE"),
            "{shown}"
        );
    }

    #[test]
    fn names_are_single_plain_segments() {
        let dir = tempfile::tempdir().unwrap();
        let target = BackupTarget::directory(dir.path()).unwrap();
        assert!(target.path("leadmaps-20260101T000000Z-ab.lmbk").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b", "x\u{e9}"] {
            assert!(target.path(bad).is_err(), "{bad}");
        }
    }
}
