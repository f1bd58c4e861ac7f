//! Secrets never reach an audit record: before and after values are redacted by key name.
//!
//! # The rule
//! An object key is split into lower-case words at `_`, `-`, `.`, spaces, digits-to-letters and
//! camel-case boundaries (`clientSecret` → `client`, `secret`; `APIKey` → `api`, `key`;
//! `x-api-key` → `x`, `api`, `key`). The key is **sensitive** when any word, or the word without
//! a trailing `s`, is one of
//!
//! `secret`, `token`, `password`, `passwd`, `passphrase`, `seed`, `key`, `code`, `cookie`,
//! `authorization`, `credential`, `salt`, `mac`, `digest`, `hash`, `signature`,
//!
//! unless its **last** word is metadata about the secret rather than the secret itself: `id`,
//! `name`, `kind`, `type`, `count`, `version`, `at` (`key_id`, `secret_name`, `code_count`,
//! `token_expires_at` stay readable; `api_key`, `totp_seed`, `password_hash`, `recovery_codes`,
//! `Set-Cookie` do not).
//!
//! The value of a sensitive key becomes the string `"[REDACTED]"`, whatever it was (a string, a
//! number, a whole object or array), except `null`, which stays `null`: "no secret" is not a
//! secret, and keeping it shows when one was set or removed. Redaction looks at keys only, at
//! every depth and inside arrays; a secret stored under an innocent key (`"note": "lm_…"`) is the
//! caller's bug, which is why drafts should be built from typed values, not free text.
//!
//! The rule over-redacts on purpose (`country_code` is hidden too): a customer-visible log that
//! hides a harmless value is a small loss; one that shows a secret cannot be taken back, since
//! audit records are append-only.
//!
//! Values nested deeper than [`MAX_DEPTH`] are replaced by `"[REDACTED]"` (they cannot be checked
//! without unbounded recursion), and negative zero becomes zero so every store round-trips the
//! value exactly (the record hash covers it).

use serde_json::{Map, Number, Value};

/// What a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// The deepest nesting kept in an audit value; deeper parts are redacted.
pub const MAX_DEPTH: usize = 32;

const SENSITIVE: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "passphrase",
    "seed",
    "key",
    "code",
    "cookie",
    "authorization",
    "credential",
    "salt",
    "mac",
    "digest",
    "hash",
    "signature",
];

const METADATA: &[&str] = &["id", "name", "kind", "type", "count", "version", "at"];

/// The lower-case words of a key (see the module docs).
fn words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let chars: Vec<char> = key.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        let boundary = match prev {
            Some(p) if p.is_alphanumeric() => {
                // camelCase, or the end of an acronym (`APIKey`: a boundary before `K`), or a
                // digit followed by a letter (`v2key`).
                (c.is_uppercase() && (p.is_lowercase() || p.is_numeric()))
                    || (c.is_uppercase()
                        && p.is_uppercase()
                        && next.is_some_and(char::is_lowercase))
                    || (c.is_alphabetic() && p.is_numeric())
            }
            _ => false,
        };
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn is_sensitive_word(word: &str) -> bool {
    SENSITIVE.contains(&word)
        || word
            .strip_suffix('s')
            .is_some_and(|w| SENSITIVE.contains(&w))
}

/// Whether values under this object key are redacted (see the module docs for the rule).
pub fn is_sensitive_key(key: &str) -> bool {
    let words = words(key);
    match words.last() {
        Some(last) if METADATA.contains(&last.as_str()) => false,
        _ => words.iter().any(|w| is_sensitive_word(w)),
    }
}

/// Redacts a value for an audit record (see the module docs).
pub fn redact(value: Value) -> Value {
    redact_at(value, 0)
}

fn redact_at(value: Value, depth: usize) -> Value {
    match value {
        Value::Object(map) if depth < MAX_DEPTH => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = if value.is_null() {
                        value
                    } else if is_sensitive_key(&key) {
                        Value::String(REDACTED.into())
                    } else {
                        redact_at(value, depth + 1)
                    };
                    (key, value)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) if depth < MAX_DEPTH => {
            Value::Array(items.into_iter().map(|v| redact_at(v, depth + 1)).collect())
        }
        Value::Object(_) | Value::Array(_) => Value::String(REDACTED.into()),
        Value::Number(n) if n.as_f64() == Some(0.0) && !n.is_u64() && !n.is_i64() => {
            Value::Number(Number::from_f64(0.0).expect("zero is finite"))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_split_into_words() {
        assert_eq!(words("clientSecret"), ["client", "secret"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(words("x-api-key"), ["x", "api", "key"]);
        assert_eq!(words("totp_seed"), ["totp", "seed"]);
        assert_eq!(words("Set-Cookie"), ["set", "cookie"]);
        assert_eq!(words("v2key"), ["v2", "key"]);
        assert_eq!(words("__"), Vec::<String>::new());
    }

    #[test]
    fn the_documented_rule() {
        for sensitive in [
            "secret",
            "client_secret",
            "clientSecret",
            "token",
            "access_token",
            "password",
            "password_hash",
            "seed",
            "totp_seed",
            "key",
            "api_key",
            "APIKey",
            "private_key",
            "code",
            "codes",
            "recovery_codes",
            "cookie",
            "Set-Cookie",
            "authorization",
            "Authorization",
            "credentials",
            "salt",
            "token_digest",
            "keys",
        ] {
            assert!(is_sensitive_key(sensitive), "{sensitive}");
        }
        for readable in [
            "name",
            "key_id",
            "kekId",
            "secret_name",
            "code_count",
            "token_expires_at",
            "require_totp",
            "ranges",
            "days",
            "role",
            "actions",
            "monkey",
            "encoded",
            "",
        ] {
            assert!(!is_sensitive_key(readable), "{readable}");
        }
    }

    #[test]
    fn values_of_sensitive_keys_are_redacted_at_every_depth() {
        let value = json!({
            "name": "ci",
            "token": "lm_abc_def",
            "nested": {"api_key": {"raw": "x"}, "list": [{"password": 1}, {"ok": true}]},
            "cleared_secret": null,
            "zero": -0.0,
        });
        assert_eq!(
            redact(value),
            json!({
                "name": "ci",
                "token": REDACTED,
                "nested": {"api_key": REDACTED, "list": [{"password": REDACTED}, {"ok": true}]},
                "cleared_secret": null,
                "zero": 0.0,
            })
        );
    }

    #[test]
    fn deep_values_are_cut_off() {
        let mut deep = json!("bottom");
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let redacted = redact(deep);
        let mut level = &redacted;
        let mut depth = 0;
        while let Value::Array(items) = level {
            level = &items[0];
            depth += 1;
        }
        assert_eq!((depth, level), (MAX_DEPTH, &json!(REDACTED)));
    }
}
