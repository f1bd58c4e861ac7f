//! Bearer secrets and what is stored of them.
//!
//! - Magic links and sessions are a [`SplitToken`]: a public selector to find the row and a
//!   32-byte verifier of which only an HMAC ([`TokenDigest`]) is stored, so a database dump holds
//!   nothing that logs anyone in.
//! - Recovery codes: 80 random bits each, stored as Argon2id hashes (m = 19456 KiB, t = 2, p = 1).
//! - API keys: `lm_<id>_<secret>`; stored as an HMAC blind index (for lookup) and the sealed value.
//!
//! The HMAC key is derived from a KEK ([`crate::crypto::Kek::derive`]) and its id is stored with
//! each digest, so digests stay checkable while that KEK is in the ring.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::KeyRing;
use crate::error::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const DIGEST_LABEL: &str = "leadmaps/token-digest/v1";

fn random<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut bytes = Zeroizing::new([0u8; N]);
    crate::crypto::random_bytes(bytes.as_mut());
    bytes
}

/// A selector and a secret verifier: `<selector>.<verifier>` in base64url.
pub struct SplitToken {
    selector: [u8; 16],
    verifier: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for SplitToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SplitToken({}.[REDACTED])", self.selector())
    }
}

impl SplitToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        Self {
            selector: *random::<16>(),
            verifier: random::<32>(),
        }
    }

    /// Parses `<selector>.<verifier>`.
    ///
    /// # Errors
    /// [`Error::Invalid`] without echoing the token.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = || Error::invalid("malformed token");
        let (selector, verifier) = text.trim().split_once('.').ok_or_else(invalid)?;
        let selector: [u8; 16] = B64
            .decode(selector)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(invalid)?;
        let verifier = Zeroizing::new(B64.decode(verifier).map_err(|_| invalid())?);
        let verifier: [u8; 32] = verifier.as_slice().try_into().map_err(|_| invalid())?;
        Ok(Self {
            selector,
            verifier: Zeroizing::new(verifier),
        })
    }

    /// The public selector, base64url: the row key.
    pub fn selector(&self) -> String {
        B64.encode(self.selector)
    }

    /// The whole token, to hand to the user once.
    pub fn expose(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{}.{}",
            self.selector(),
            B64.encode(*self.verifier)
        ))
    }

    /// The secret half.
    pub fn verifier(&self) -> &[u8] {
        &self.verifier[..]
    }
}

/// What is stored of a secret: an HMAC-SHA256 under a KEK-derived key, and that KEK's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest {
    /// The KEK the HMAC key was derived from.
    pub key_id: u32,
    /// The HMAC.
    pub mac: [u8; 32],
}

/// Computes and checks [`TokenDigest`]s with keys derived from every KEK in the ring.
#[derive(Clone)]
pub struct TokenHasher {
    primary: u32,
    keys: BTreeMap<u32, Hmac<Sha256>>,
}

impl fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHasher")
            .field("primary", &self.primary)
            .finish_non_exhaustive()
    }
}

impl TokenHasher {
    /// Keys for every KEK of the ring; new digests use the primary.
    pub fn new(ring: &KeyRing) -> Self {
        let keys = ring
            .ids()
            .map(|id| {
                let key = ring.get(id).expect("id from ring").derive(DIGEST_LABEL);
                (
                    id,
                    <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..]).expect("any key length"),
                )
            })
            .collect();
        Self {
            primary: ring.primary().id(),
            keys,
        }
    }

    fn mac(key: &Hmac<Sha256>, secret: &[u8]) -> [u8; 32] {
        let mut mac = key.clone();
        mac.update(secret);
        mac.finalize().into_bytes().into()
    }

    /// The digest of `secret` under the primary KEK's key.
    pub fn digest(&self, secret: &[u8]) -> TokenDigest {
        TokenDigest {
            key_id: self.primary,
            mac: Self::mac(&self.keys[&self.primary], secret),
        }
    }

    /// Whether `secret` matches `stored`, in constant time. A digest under a KEK the ring no
    /// longer holds never matches.
    pub fn verify(&self, secret: &[u8], stored: &TokenDigest) -> bool {
        self.keys
            .get(&stored.key_id)
            .is_some_and(|key| bool::from(Self::mac(key, secret).ct_eq(&stored.mac)))
    }
}

/// Recovery codes: ten single-use codes of 80 random bits, shown once as `xxxx-xxxx-xxxx-xxxx`
/// (base32), stored as Argon2id hashes.
pub mod recovery {
    use super::*;

    /// Codes per set.
    pub const COUNT: usize = 10;
    /// Argon2id memory in KiB, iterations and lanes (OWASP's minimum recommendation).
    pub const ARGON2: (u32, u32, u32) = (19_456, 2, 1);

    /// A stored recovery code: salt and Argon2id output.
    #[derive(Clone, PartialEq, Eq)]
    pub struct RecoveryHash {
        /// Random salt.
        pub salt: [u8; 16],
        /// Argon2id output.
        pub hash: [u8; 32],
    }

    impl fmt::Debug for RecoveryHash {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("RecoveryHash([REDACTED])")
        }
    }

    fn argon2() -> argon2::Argon2<'static> {
        let (m, t, p) = ARGON2;
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(m, t, p, Some(32)).expect("valid Argon2 parameters"),
        )
    }

    fn normalize(code: &str) -> Zeroizing<String> {
        Zeroizing::new(
            code.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        )
    }

    fn hash_with(code: &str, salt: [u8; 16]) -> RecoveryHash {
        let mut hash = [0u8; 32];
        argon2()
            .hash_password_into(normalize(code).as_bytes(), &salt, &mut hash)
            .expect("Argon2id with fixed parameters");
        RecoveryHash { salt, hash }
    }

    /// A new set: the codes to show once, and what to store.
    pub fn generate() -> (Vec<Zeroizing<String>>, Vec<RecoveryHash>) {
        (0..COUNT)
            .map(|_| {
                let raw = random::<10>();
                let text = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &raw[..]);
                let shown = Zeroizing::new(format!(
                    "{}-{}-{}-{}",
                    &text[0..4],
                    &text[4..8],
                    &text[8..12],
                    &text[12..16]
                ));
                let hash = hash_with(&shown, *random::<16>());
                (shown, hash)
            })
            .unzip()
    }

    /// Whether a typed code (any case, dashes and spaces ignored) matches a stored hash.
    pub fn matches(code: &str, stored: &RecoveryHash) -> bool {
        let candidate = hash_with(code, stored.salt);
        bool::from(candidate.hash.ct_eq(&stored.hash))
    }
}

/// API keys: `lm_<id>_<secret>`, the id a UUID in 32 hex digits, the secret 256 random bits.
pub mod api_key {
    use super::*;
    use crate::tenancy::ApiKeyId;

    /// A freshly made key: show [`NewApiKey::token`] once.
    pub struct NewApiKey {
        /// The key's public id.
        pub id: ApiKeyId,
        /// The whole key, `lm_<id>_<secret>`.
        pub token: Zeroizing<String>,
    }

    impl fmt::Debug for NewApiKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "NewApiKey {{ id: {}, token: [REDACTED] }}", self.id)
        }
    }

    /// Makes a key.
    pub fn generate() -> NewApiKey {
        let id = ApiKeyId::new();
        let secret = B64.encode(*random::<32>());
        NewApiKey {
            token: Zeroizing::new(format!("lm_{}_{secret}", id.as_uuid().simple())),
            id,
        }
    }

    /// The id of a presented key, after checking the shape; the row is found by it and the key
    /// then checked against the stored HMAC of the whole token.
    ///
    /// # Errors
    /// [`Error::Invalid`] without echoing the key.
    pub fn parse(token: &str) -> Result<ApiKeyId> {
        let invalid = || Error::invalid("malformed API key");
        let rest = token.strip_prefix("lm_").ok_or_else(invalid)?;
        let (id, secret) = rest.split_once('_').ok_or_else(invalid)?;
        if id.len() != 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(invalid());
        }
        if B64.decode(secret).map(|s| s.len()) != Ok(32) {
            return Err(invalid());
        }
        id.parse().map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Kek;

    fn ring(ids: &[(u32, u8)]) -> KeyRing {
        KeyRing::new(ids.iter().map(|(id, seed)| {
            Kek::new(*id, &(0..32u8).map(|i| i ^ seed).collect::<Vec<_>>()).unwrap()
        }))
        .unwrap()
    }

    #[test]
    fn split_tokens_round_trip_and_digests_verify() {
        let token = SplitToken::generate();
        let text = token.expose();
        let parsed = SplitToken::parse(&text).unwrap();
        assert_eq!(parsed.selector(), token.selector());
        assert!(!format!("{token:?}").contains(&*B64.encode(token.verifier())));
        let hasher = TokenHasher::new(&ring(&[(1, 1)]));
        let digest = hasher.digest(token.verifier());
        assert!(hasher.verify(parsed.verifier(), &digest));
        let other = SplitToken::generate();
        assert!(!hasher.verify(other.verifier(), &digest));
        for bad in [
            "",
            "abc",
            "a.b",
            &format!("{}.", token.selector()),
            &text[..text.len() - 2],
        ] {
            assert!(SplitToken::parse(bad).is_err());
        }
    }

    #[test]
    fn digests_follow_the_kek_they_were_made_under() {
        let old = TokenHasher::new(&ring(&[(1, 1)]));
        let digest = old.digest(b"secret");
        let both = TokenHasher::new(&ring(&[(1, 1), (2, 2)]));
        assert!(
            both.verify(b"secret", &digest),
            "old digests still verify during rotation"
        );
        assert_eq!(both.digest(b"secret").key_id, 2);
        let only_new = TokenHasher::new(&ring(&[(2, 2)]));
        assert!(!only_new.verify(b"secret", &digest));
        let wrong_key = TokenHasher::new(&ring(&[(1, 9)]));
        assert!(
            !wrong_key.verify(b"secret", &digest),
            "a digest is useless without the KEK"
        );
    }

    #[test]
    fn recovery_codes_are_ten_80_bit_single_hashes() {
        let (codes, hashes) = recovery::generate();
        assert_eq!((codes.len(), hashes.len()), (10, 10));
        let first = &codes[0];
        assert_eq!(first.len(), 19);
        assert!(recovery::matches(first, &hashes[0]));
        assert!(
            recovery::matches(&first.to_lowercase().replace('-', " "), &hashes[0]),
            "typing is forgiving"
        );
        assert!(!recovery::matches(first, &hashes[1]));
        let unique: std::collections::BTreeSet<_> = codes.iter().map(|c| c.to_string()).collect();
        assert_eq!(unique.len(), 10);
    }

    #[test]
    fn api_keys_have_the_documented_shape() {
        let key = api_key::generate();
        assert!(
            key.token
                .starts_with(&format!("lm_{}_", key.id.as_uuid().simple()))
        );
        assert_eq!(api_key::parse(&key.token).unwrap(), key.id);
        assert!(!format!("{key:?}").contains(&key.token[20..]));
        for bad in [
            "",
            "lm_",
            "lm_zz_abc",
            "sk_0123456789abcdef0123456789abcdef_x",
            &key.token[..key.token.len() - 1],
        ] {
            assert!(api_key::parse(bad).is_err(), "{bad}");
        }
    }
}
