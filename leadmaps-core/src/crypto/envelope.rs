//! The v1 envelope: how a sealed secret is laid out at rest.
//!
//! ```text
//! version(1) = 0x01 | key_ref(4, u32 BE) | salt(24) | commitment(32) | ciphertext | tag(16)
//! ```
//!
//! Everything after the five header bytes is C2SP chunked encryption (see [`super::chunked`]);
//! secrets fit in its single short chunk. The C2SP context binds the version, the key_ref and a
//! [`SecretContext`] (workspace, table, column, row id, purpose), each length-prefixed. The
//! context is never stored: the caller rebuilds it from where the blob was found, so a blob copied
//! to another workspace, column or row no longer opens.

use zeroize::Zeroizing;

use super::chunked::{self, ChunkedKey, SALT_LEN};
use super::secret::SecretBytes;
use crate::error::{Error, Result};
use crate::tenancy::WorkspaceId;

/// The envelope version this code writes.
pub const VERSION: u8 = 0x01;
/// Version byte and key_ref.
pub const PREFIX_LEN: usize = 5;
/// The shortest well-formed v1 blob (an empty secret).
pub const MIN_LEN: usize = PREFIX_LEN + chunked::sealed_len(0);
/// Domain separation for envelope contexts.
const CONTEXT_LABEL: &[u8] = b"leadmaps/envelope/v1";

/// What a secret is for. Part of the context, so a blob sealed for one purpose never opens as
/// another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// Workspace API key material.
    ApiKey,
    /// A license key.
    LicenseKey,
    /// An OIDC client secret.
    OidcClientSecret,
    /// A TOTP seed.
    TotpSeed,
    /// A daily visitor-hash salt.
    VisitorSalt,
    /// A tenant key, sealed under a KEK.
    TenantKey,
    /// The per-KEK key-check canary.
    KeyCheck,
    /// A backup stream.
    Backup,
    /// An integrator's own secret, named in the table/column of its context.
    Other,
}

impl Purpose {
    /// The stable name bound into the context.
    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::ApiKey => "api_key",
            Purpose::LicenseKey => "license_key",
            Purpose::OidcClientSecret => "oidc_client_secret",
            Purpose::TotpSeed => "totp_seed",
            Purpose::VisitorSalt => "visitor_salt",
            Purpose::TenantKey => "tenant_key",
            Purpose::KeyCheck => "key_check",
            Purpose::Backup => "backup",
            Purpose::Other => "other",
        }
    }

    /// Parses [`Purpose::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "api_key" => Purpose::ApiKey,
            "license_key" => Purpose::LicenseKey,
            "oidc_client_secret" => Purpose::OidcClientSecret,
            "totp_seed" => Purpose::TotpSeed,
            "visitor_salt" => Purpose::VisitorSalt,
            "tenant_key" => Purpose::TenantKey,
            "key_check" => Purpose::KeyCheck,
            "backup" => Purpose::Backup,
            "other" => Purpose::Other,
            _ => return None,
        })
    }
}

/// Where a secret lives. Rebuilt by the caller from the row it read; never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretContext<'a> {
    /// The owning workspace (the nil UUID for instance-wide secrets such as key checks).
    pub workspace: WorkspaceId,
    /// The table the blob is stored in.
    pub table: &'a str,
    /// The column the blob is stored in.
    pub column: &'a str,
    /// The row's identity (primary key as text).
    pub row_id: &'a str,
    /// What the secret is for.
    pub purpose: Purpose,
}

impl<'a> SecretContext<'a> {
    /// A context from its parts.
    pub const fn new(
        workspace: WorkspaceId,
        table: &'a str,
        column: &'a str,
        row_id: &'a str,
        purpose: Purpose,
    ) -> Self {
        Self {
            workspace,
            table,
            column,
            row_id,
            purpose,
        }
    }

    /// An API key's secret in `api_keys.secret`.
    pub const fn api_key(workspace: WorkspaceId, key_id: &'a str) -> Self {
        Self::new(workspace, "api_keys", "secret", key_id, Purpose::ApiKey)
    }

    /// A TOTP seed in `totp_factors.seed`.
    pub const fn totp_seed(workspace: WorkspaceId, factor_id: &'a str) -> Self {
        Self::new(
            workspace,
            "totp_factors",
            "seed",
            factor_id,
            Purpose::TotpSeed,
        )
    }

    /// An OIDC client secret in `oidc_connections.client_secret`.
    pub const fn oidc_client_secret(workspace: WorkspaceId, connection_id: &'a str) -> Self {
        Self::new(
            workspace,
            "oidc_connections",
            "client_secret",
            connection_id,
            Purpose::OidcClientSecret,
        )
    }

    /// A license key in `license_keys.key`.
    pub const fn license_key(workspace: WorkspaceId, license_id: &'a str) -> Self {
        Self::new(
            workspace,
            "license_keys",
            "key",
            license_id,
            Purpose::LicenseKey,
        )
    }

    /// The encoded C2SP context for a blob with this header. Fields are length-prefixed so no
    /// two different contexts encode alike.
    pub(crate) fn encode(&self, version: u8, key_ref: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            CONTEXT_LABEL.len()
                + 5
                + 16
                + self.table.len()
                + self.column.len()
                + self.row_id.len()
                + 40,
        );
        out.extend_from_slice(CONTEXT_LABEL);
        out.push(version);
        out.extend_from_slice(&key_ref.to_be_bytes());
        for field in [
            self.workspace.as_uuid().as_bytes().as_slice(),
            self.table.as_bytes(),
            self.column.as_bytes(),
            self.row_id.as_bytes(),
            self.purpose.as_str().as_bytes(),
        ] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

/// The header of a v1 blob, read without any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u8,
    /// Which key sealed it: the tenant key version for secrets, the KEK id for tenant keys.
    pub key_ref: u32,
}

/// Reads the header of a blob without decrypting it.
///
/// # Errors
/// [`Error::Invalid`] when the blob is too short or of an unknown version.
pub fn key_ref(blob: &[u8]) -> Result<u32> {
    header(blob).map(|h| h.key_ref)
}

/// Whether a blob was sealed under another key than `current` (and should be resealed).
///
/// # Errors
/// As [`key_ref`].
pub fn needs_rotation(blob: &[u8], current: u32) -> Result<bool> {
    Ok(key_ref(blob)? != current)
}

/// Parses the header. Only the framing is checked here; authenticity is checked by opening.
///
/// # Errors
/// [`Error::Invalid`] when the blob is too short or of an unknown version.
pub fn header(blob: &[u8]) -> Result<Header> {
    if blob.len() < MIN_LEN {
        return Err(Error::invalid("sealed blob too short"));
    }
    if blob[0] != VERSION {
        return Err(Error::invalid("unknown sealed blob version"));
    }
    let key_ref = u32::from_be_bytes(blob[1..5].try_into().expect("four bytes"));
    Ok(Header {
        version: blob[0],
        key_ref,
    })
}

/// Seals `plaintext` under `key` (identified as `key_ref`) for `context`.
pub fn seal(
    key: &ChunkedKey,
    key_ref: u32,
    context: &SecretContext<'_>,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut salt = [0u8; SALT_LEN];
    super::random(&mut salt);
    seal_with_salt(key, key_ref, context, plaintext, &salt)
}

/// [`seal`] with a caller-chosen salt; only for golden vectors. A salt must never repeat.
#[doc(hidden)]
pub fn seal_with_salt(
    key: &ChunkedKey,
    key_ref: u32,
    context: &SecretContext<'_>,
    plaintext: &[u8],
    salt: &[u8; SALT_LEN],
) -> Vec<u8> {
    let encoded = context.encode(VERSION, key_ref);
    let mut out = Vec::with_capacity(PREFIX_LEN + chunked::sealed_len(plaintext.len()));
    out.push(VERSION);
    out.extend_from_slice(&key_ref.to_be_bytes());
    key.seal_into(salt, &[&encoded], plaintext, &mut out);
    out
}

/// Opens a blob sealed by [`seal`] under `key` for `context`.
///
/// # Errors
/// [`Error::Decrypt`] for any failure: malformed, wrong key, wrong context, tampered.
pub fn open(key: &ChunkedKey, context: &SecretContext<'_>, blob: &[u8]) -> Result<SecretBytes> {
    let header = header(blob).map_err(|_| Error::Decrypt)?;
    let encoded = context.encode(header.version, header.key_ref);
    key.open(&[&encoded], &blob[PREFIX_LEN..])
        .map(SecretBytes::from_zeroizing)
        .map_err(|_| Error::Decrypt)
}

/// Opens with the key_ref the caller expects; a blob claiming another key_ref fails opaquely.
pub(crate) fn open_expecting(
    key: &ChunkedKey,
    expected_key_ref: u32,
    context: &SecretContext<'_>,
    blob: &[u8],
) -> Result<SecretBytes> {
    match header(blob) {
        Ok(h) if h.key_ref == expected_key_ref => open(key, context, blob),
        _ => Err(Error::Decrypt),
    }
}

/// Plaintext of a decrypted 32-byte key, zeroized on drop.
pub(crate) fn key_bytes(secret: &SecretBytes) -> Result<Zeroizing<[u8; 32]>> {
    let bytes: [u8; 32] = secret.expose().try_into().map_err(|_| Error::Decrypt)?;
    Ok(Zeroizing::new(bytes))
}
