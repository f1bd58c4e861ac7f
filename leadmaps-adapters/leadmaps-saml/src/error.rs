//! Why a SAML configuration or response was refused.
//!
//! Messages are fixed sentences: they never carry a NameID, an e-mail address, an attribute
//! value, a certificate or a piece of the response, so they are safe to log. Which check failed is
//! in the variant, for tests and for metrics; what the browser is told is the caller's choice
//! (usually one generic "sign-in failed").

use std::error::Error as StdError;

use leadmaps_core::ErrorKind;

/// Why a SAML configuration was rejected or a SAML response was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SamlError {
    /// The SP or IdP configuration is unusable (bad URL, metadata without an SSO endpoint or a
    /// signing certificate, a certificate that does not parse).
    #[error("SAML configuration: {0}")]
    Config(&'static str),
    /// The response is not well-formed: not base64, not UTF-8, not XML, too large, a DTD, not a
    /// SAML `Response`, or a required element missing.
    #[error("malformed SAML response: {0}")]
    Malformed(&'static str),
    /// Nothing in the response is signed. Assertions must be signed, either themselves or by a
    /// signature on the `Response` that encloses them.
    #[error("SAML response is not signed")]
    Unsigned,
    /// A signature did not verify against the IdP's signing certificates (including one made by
    /// another key), or uses an algorithm or transform that is not allowed.
    #[error("SAML signature is invalid")]
    BadSignature,
    /// The document's shape is one that XML signature wrapping uses: more than one assertion, an
    /// assertion or a signature where none belongs, a signature that references another element
    /// than the one it sits in, or a verified element that is not the one that would be consumed.
    #[error("SAML response structure refused (signature wrapping): {0}")]
    Wrapped(&'static str),
    /// The assertion is encrypted; this service provider publishes no encryption key.
    #[error("encrypted SAML assertions are not supported")]
    EncryptedAssertion,
    /// The IdP answered with a status other than `Success` (for example, the user cancelled).
    #[error("the IdP did not authenticate the user")]
    IdpStatus,
    /// The `Issuer` of the response or the assertion is not the configured IdP.
    #[error("SAML issuer is not the configured IdP")]
    Issuer,
    /// The response's `Destination` is not this workspace's ACS URL.
    #[error("SAML response destination is not this ACS URL")]
    Destination,
    /// No bearer `SubjectConfirmationData` names this workspace's ACS URL as `Recipient`.
    #[error("SAML assertion recipient is not this ACS URL")]
    Recipient,
    /// The assertion's audience restrictions do not include this workspace's SP entity id.
    #[error("SAML assertion is not for this service provider (audience)")]
    Audience,
    /// The assertion is not valid yet, even allowing for [`CLOCK_SKEW`](crate::CLOCK_SKEW).
    #[error("SAML assertion is not yet valid")]
    NotYetValid,
    /// The assertion, its bearer confirmation or the session it grants has expired, even allowing
    /// for [`CLOCK_SKEW`](crate::CLOCK_SKEW).
    #[error("SAML assertion has expired")]
    Expired,
    /// `InResponseTo` does not match the request this login started with.
    #[error("SAML response does not answer the pending request")]
    InResponseTo,
    /// The pending request this response answers is too old.
    #[error("SAML login request has expired")]
    RequestExpired,
    /// A response arrived without a pending request (IdP-initiated login) and this service
    /// provider does not allow IdP-initiated login.
    #[error("IdP-initiated SAML login is not allowed")]
    Unsolicited,
    /// The assertion has no usable bearer `SubjectConfirmation`.
    #[error("SAML assertion has no bearer subject confirmation")]
    NoBearer,
    /// This assertion was accepted before: a replay.
    #[error("SAML assertion was already used")]
    Replayed,
    /// The replay cache could not record the assertion, so it was refused.
    #[error("SAML replay cache unavailable")]
    ReplayCache(#[source] Box<dyn StdError + Send + Sync>),
}

impl SamlError {
    /// The coarse kind, for mapping to an HTTP status without matching on variants.
    ///
    /// A refused or malformed response is [`ErrorKind::Invalid`] (the login fails; retrying the
    /// same response cannot succeed), an encrypted assertion is [`ErrorKind::NotSupported`],
    /// configuration is [`ErrorKind::KeyConfig`] and an unavailable replay cache is
    /// [`ErrorKind::Unavailable`]. The same mapping as the `From` conversion into
    /// [`leadmaps_core::Error`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            SamlError::Config(_) => ErrorKind::KeyConfig,
            SamlError::EncryptedAssertion => ErrorKind::NotSupported,
            SamlError::ReplayCache(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Invalid,
        }
    }

    /// Wraps a replay-cache backend failure.
    pub fn replay_cache(error: impl StdError + Send + Sync + 'static) -> Self {
        SamlError::ReplayCache(Box::new(error))
    }
}

impl From<SamlError> for leadmaps_core::Error {
    fn from(error: SamlError) -> Self {
        match error {
            SamlError::ReplayCache(source) => leadmaps_core::Error::Unavailable(source),
            SamlError::Config(why) => leadmaps_core::Error::KeyConfig(format!("SAML: {why}")),
            SamlError::EncryptedAssertion => {
                leadmaps_core::Error::NotSupported("encrypted SAML assertions")
            }
            other => leadmaps_core::Error::invalid(other.to_string()),
        }
    }
}
