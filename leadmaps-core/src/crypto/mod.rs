//! Envelope encryption of secrets at rest.
//!
//! - [`chunked`]: the C2SP chunked-encryption primitive (HKDF-Expand-SHA-512, AES-256-GCM,
//!   key commitment), whole-message and streaming.
//! - [`envelope`]: the v1 blob that frames it, and the typed [`SecretContext`].
//! - [`keyring`]: KEKs, where they come from, and which one is primary.
//! - [`Vault`]: tenant keys wrapped under the KEK; seal, open, rotate, rewrap, shred, self-test.

pub mod chunked;
pub mod envelope;
pub mod keyring;
mod secret;
mod vault;

pub use envelope::{Purpose, SecretContext, key_ref, needs_rotation};
pub use keyring::{EnvKeyProvider, FileKeyProvider, Kek, KeyProvider, KeyRing};
pub use secret::SecretBytes;
pub use vault::{DEFAULT_CACHE_TTL, RewrapProgress, Vault};

/// Fills `buf` from the operating system's CSPRNG (for keys, salts, tokens).
pub fn random_bytes(buf: &mut [u8]) {
    random(buf);
}

/// Fills `buf` from the operating system's CSPRNG. Without randomness there is no safe way to
/// seal, so failure aborts the operation loudly rather than degrading.
pub(crate) fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}
