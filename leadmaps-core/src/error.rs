//! The error every store and service in leadmaps returns.

use std::error::Error as StdError;

use crate::tenancy::Denied;

/// What went wrong, coarse enough for the HTTP layer to map to a status without string matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist (or is not visible to this scope).
    NotFound,
    /// It exists already, or changed under us.
    Conflict,
    /// The gate refused.
    Denied,
    /// The input was malformed or out of bounds.
    Invalid,
    /// A ciphertext did not open.
    Decrypt,
    /// Key configuration is missing, malformed or does not match the stored key checks.
    KeyConfig,
    /// The backend cannot do this; see its capabilities.
    NotSupported,
    /// The backend is down or overloaded; retrying later may work.
    Unavailable,
    /// Anything else in the backend.
    Internal,
}

/// The error type of leadmaps. Messages never carry secrets, tokens or personal data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`ErrorKind::NotFound`].
    #[error("not found")]
    NotFound,
    /// See [`ErrorKind::Conflict`].
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// See [`ErrorKind::Denied`].
    #[error("denied: {0}")]
    Denied(#[from] Denied),
    /// See [`ErrorKind::Invalid`].
    #[error("invalid input: {0}")]
    Invalid(String),
    /// One opaque error for every decryption failure: wrong key, wrong context, tampering,
    /// truncation, unknown key version. The cause is never revealed to callers.
    #[error("decryption failed")]
    Decrypt,
    /// See [`ErrorKind::KeyConfig`].
    #[error("key configuration: {0}")]
    KeyConfig(String),
    /// See [`ErrorKind::NotSupported`].
    #[error("not supported by this store: {0}")]
    NotSupported(&'static str),
    /// See [`ErrorKind::Unavailable`].
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// See [`ErrorKind::Internal`].
    #[error("store error")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

impl Error {
    /// The kind, for mapping to a status code or a retry decision.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Denied(_) => ErrorKind::Denied,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Decrypt => ErrorKind::Decrypt,
            Error::KeyConfig(_) => ErrorKind::KeyConfig,
            Error::NotSupported(_) => ErrorKind::NotSupported,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Backend(_) => ErrorKind::Internal,
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Conflict)
    }

    /// An [`Error::Invalid`] with a fixed message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    /// Wraps a backend error.
    pub fn backend(error: impl StdError + Send + Sync + 'static) -> Self {
        Error::Backend(Box::new(error))
    }

    /// Wraps a connectivity or overload error.
    pub fn unavailable(error: impl StdError + Send + Sync + 'static) -> Self {
        Error::Unavailable(Box::new(error))
    }
}

/// Shorthand for results in leadmaps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
