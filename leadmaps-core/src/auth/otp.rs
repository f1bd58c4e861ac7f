//! One-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238), written on `hmac` with SHA-1,
//! SHA-256 and SHA-512, and `otpauth://` enrolment URIs.
//!
//! leadmaps enrols SHA-1, 6 digits, 30-second steps (what every authenticator app supports) and
//! accepts the previous, current and next step. Single use is the caller's half: [`verify`]
//! returns the matched step, which must be claimed atomically in the store (only if greater than
//! the last accepted step), so a code is accepted once even under parallel requests.

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The HMAC hash of an OTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA-1, the authenticator-app default.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name in `otpauth://` URIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

fn mac(algorithm: Algorithm, key: &[u8], message: &[u8]) -> Zeroizing<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(message);
        Zeroizing::new(mac.finalize().into_bytes().to_vec())
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, message),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, message),
    }
}

/// HOTP value of `counter` (RFC 4226 section 5.3), `digits` long (6 to 9).
pub fn hotp(algorithm: Algorithm, secret: &[u8], counter: u64, digits: u32) -> u32 {
    debug_assert!((6..=9).contains(&digits));
    let hash = mac(algorithm, secret, &counter.to_be_bytes());
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary =
        u32::from_be_bytes(hash[offset..offset + 4].try_into().expect("four bytes")) & 0x7fff_ffff;
    binary % 10u32.pow(digits)
}

/// TOTP parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totp {
    /// Hash.
    pub algorithm: Algorithm,
    /// Code length.
    pub digits: u32,
    /// Step length in seconds.
    pub period: u64,
}

impl Default for Totp {
    /// SHA-1, 6 digits, 30 seconds.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

impl Totp {
    /// The step of a Unix time.
    pub const fn step(&self, unix_seconds: u64) -> u64 {
        unix_seconds / self.period
    }

    /// The code at a Unix time (RFC 6238 section 4.2, T0 = 0).
    pub fn code_at(&self, secret: &[u8], unix_seconds: u64) -> u32 {
        hotp(self.algorithm, secret, self.step(unix_seconds), self.digits)
    }

    /// The code as the user types it, zero-padded.
    pub fn format(&self, code: u32) -> String {
        format!("{code:0width$}", width = self.digits as usize)
    }
}

/// Checks a typed code against the steps `now - 1`, `now`, `now + 1` that are after
/// `last_accepted` (a step already used can never match again), comparing in constant time.
/// Returns the matched step, which the caller must then claim atomically.
pub fn verify(
    totp: &Totp,
    secret: &[u8],
    typed: &str,
    unix_seconds: u64,
    last_accepted: Option<u64>,
) -> Option<u64> {
    let typed = typed.trim();
    if typed.len() != totp.digits as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = totp.step(unix_seconds);
    let mut matched = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        if last_accepted.is_some_and(|last| step <= last) {
            continue;
        }
        let expected = totp.format(hotp(totp.algorithm, secret, step, totp.digits));
        // No early exit: every candidate is computed and compared.
        if bool::from(expected.as_bytes().ct_eq(typed.as_bytes())) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// An `otpauth://totp/` enrolment URI (the Key Uri Format authenticator apps read).
#[derive(Clone, PartialEq, Eq)]
pub struct OtpAuth {
    /// Who issues it, e.g. `leadmaps`.
    pub issuer: String,
    /// The account label, e.g. the user's e-mail.
    pub account: String,
    /// The seed.
    pub secret: Zeroizing<Vec<u8>>,
    /// Parameters.
    pub totp: Totp,
}

impl std::fmt::Debug for OtpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpAuth")
            .field("issuer", &self.issuer)
            .field("totp", &self.totp)
            .finish_non_exhaustive()
    }
}

fn encode_component(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl OtpAuth {
    /// The URI. It contains the seed: show it once (as a QR code), never log or store it.
    pub fn to_uri(&self) -> Zeroizing<String> {
        let secret = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &self.secret);
        Zeroizing::new(format!(
            "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm={}&digits={}&period={}",
            encode_component(&self.issuer),
            encode_component(&self.account),
            encode_component(&self.issuer),
            self.totp.algorithm.as_str(),
            self.totp.digits,
            self.totp.period,
        ))
    }

    /// Parses a URI written by [`OtpAuth::to_uri`] or an authenticator app.
    ///
    /// # Errors
    /// [`Error::Invalid`], never echoing the URI (it holds the seed).
    pub fn parse(uri: &str) -> Result<Self> {
        let invalid = || Error::invalid("not a valid otpauth://totp URI");
        let url = url::Url::parse(uri).map_err(|_| invalid())?;
        if url.scheme() != "otpauth" || url.host_str() != Some("totp") {
            return Err(invalid());
        }
        let label = url.path().trim_start_matches('/');
        let label: String = url::form_urlencoded::parse(format!("l={label}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let (label_issuer, account) = match label.split_once(':') {
            Some((issuer, account)) => (Some(issuer.to_owned()), account.trim().to_owned()),
            None => (None, label),
        };
        let mut totp = Totp::default();
        let (mut secret, mut issuer) = (None, label_issuer);
        for (key, value) in url.query_pairs() {
            match &*key {
                "secret" => {
                    let cleaned = value.trim_end_matches('=').to_ascii_uppercase();
                    secret = Some(
                        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &cleaned)
                            .ok_or_else(invalid)?,
                    );
                }
                "issuer" => issuer = Some(value.into_owned()),
                "algorithm" => {
                    totp.algorithm = match &*value.to_ascii_uppercase() {
                        "SHA1" => Algorithm::Sha1,
                        "SHA256" => Algorithm::Sha256,
                        "SHA512" => Algorithm::Sha512,
                        _ => return Err(invalid()),
                    }
                }
                "digits" => {
                    totp.digits = value
                        .parse()
                        .ok()
                        .filter(|d| (6..=9).contains(d))
                        .ok_or_else(invalid)?
                }
                "period" => {
                    totp.period = value
                        .parse()
                        .ok()
                        .filter(|p| (1..=300).contains(p))
                        .ok_or_else(invalid)?
                }
                _ => {}
            }
        }
        let secret = secret.filter(|s| !s.is_empty()).ok_or_else(invalid)?;
        Ok(Self {
            issuer: issuer.unwrap_or_default(),
            account,
            secret: Zeroizing::new(secret),
            totp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc4226_appendix_d_hotp_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(
                hotp(Algorithm::Sha1, SEED20, counter as u64, 6),
                code,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b_totp_vectors() {
        let table: [(u64, [u32; 3]); 6] = [
            (59, [94287082, 46119246, 90693936]),
            (1111111109, [7081804, 68084774, 25091201]),
            (1111111111, [14050471, 67062674, 99943326]),
            (1234567890, [89005924, 91819424, 93441116]),
            (2000000000, [69279037, 90698825, 38618901]),
            (20000000000, [65353130, 77737706, 47863826]),
        ];
        let mut checked = 0;
        for (time, codes) in table {
            for ((algorithm, seed), code) in [
                (Algorithm::Sha1, SEED20),
                (Algorithm::Sha256, SEED32),
                (Algorithm::Sha512, SEED64),
            ]
            .into_iter()
            .zip(codes)
            {
                let totp = Totp {
                    algorithm,
                    digits: 8,
                    period: 30,
                };
                assert_eq!(totp.code_at(seed, time), code, "{algorithm:?} at {time}");
                checked += 1;
            }
        }
        assert_eq!(checked, 18);
    }

    #[test]
    fn verify_accepts_one_step_either_side_once() {
        let totp = Totp::default();
        let now = 1_700_000_000;
        let code = |t| totp.format(totp.code_at(SEED20, t));
        let step = totp.step(now);
        assert_eq!(verify(&totp, SEED20, &code(now), now, None), Some(step));
        assert_eq!(
            verify(&totp, SEED20, &code(now - 30), now, None),
            Some(step - 1)
        );
        assert_eq!(
            verify(&totp, SEED20, &code(now + 30), now, None),
            Some(step + 1)
        );
        assert_eq!(verify(&totp, SEED20, &code(now - 60), now, None), None);
        assert_eq!(
            verify(&totp, SEED20, &code(now), now, Some(step)),
            None,
            "a used step never matches again"
        );
        assert_eq!(
            verify(&totp, SEED20, &code(now + 30), now, Some(step)),
            Some(step + 1)
        );
        assert_eq!(verify(&totp, SEED20, "12345", now, None), None);
        assert_eq!(verify(&totp, SEED20, "abcdef", now, None), None);
    }

    #[test]
    fn otpauth_round_trip() {
        let enrol = OtpAuth {
            issuer: "leadmaps".into(),
            account: "alice+mfa@example.com".into(),
            secret: Zeroizing::new(SEED20.to_vec()),
            totp: Totp::default(),
        };
        let uri = enrol.to_uri();
        assert!(uri.starts_with("otpauth://totp/leadmaps:alice%2Bmfa%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=leadmaps"), "{}", *uri);
        let back = OtpAuth::parse(&uri).unwrap();
        assert_eq!(back, enrol);
        let other = OtpAuth::parse("otpauth://totp/ACME%20Co:john@example.com?secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&issuer=ACME%20Co&algorithm=SHA256&digits=8&period=60").unwrap();
        assert_eq!(
            (other.issuer.as_str(), other.account.as_str()),
            ("ACME Co", "john@example.com")
        );
        assert_eq!(
            other.totp,
            Totp {
                algorithm: Algorithm::Sha256,
                digits: 8,
                period: 60
            }
        );
        for bad in [
            "otpauth://hotp/x?secret=GEZD",
            "otpauth://totp/x",
            "otpauth://totp/x?secret=!!",
            "https://totp/x?secret=GEZD",
        ] {
            let err = OtpAuth::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("GEZD"), "the seed is never echoed");
        }
        assert!(!format!("{back:?}").contains("GEZD"));
    }
}
