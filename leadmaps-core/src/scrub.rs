//! Scrubbing personal data and secrets out of free text before it leaves the process: log lines,
//! error reports, anything sent to a third party (`leadmaps-telemetry` runs every event through
//! it).
//!
//! [`scrub`] finds, in any text, and replaces with a `[redacted:<kind>]` marker:
//!
//! | kind | what |
//! |---|---|
//! | `email` | e-mail addresses (`user@sub.example.co.uk`) |
//! | `ip` | IPv4 addresses, IPv6 addresses (compressed, with a zone, IPv4-mapped like `::ffff:1.2.3.4`, in brackets like `[2001:db8::1]:443`) |
//! | `api_key` | leadmaps API keys (`lm_<id>_<secret>`) |
//! | `token` | bearer credentials (`Bearer …`, `Basic …`), JWT-shaped strings (`eyJ….….…`) |
//! | `cookie` | the value of a `Cookie`, `Set-Cookie`, `Authorization`, `Proxy-Authorization` or `X-Api-Key` header or field, to the end of the line |
//! | `secret` | the value after `password=`, `token=`, `secret=`, `session=` and the like, long hex strings (32 digits and more) and long random-looking strings (32 characters and more of upper case, lower case and digits) |
//!
//! [`scrub_field`] also redacts a structured field entirely when its *name* says what it holds
//! (`email`, `ip`, `user_agent`, and every name [`crate::audit::is_sensitive_key`] calls
//! sensitive).
//!
//! The rules over-redact on purpose: an error report missing a harmless value is a small loss, one
//! carrying a customer's address cannot be taken back. Three-part versions (`1.2.3`), times
//! (`12:30:45`), UUIDs and Rust paths (`leadmaps_core::tenancy`) are left alone; a four-part version
//! (`1.2.3.4`) is not told apart from an IPv4 address and is redacted.
//!
//! ```
//! use leadmaps_core::scrub::scrub;
//! let line = "login failed for ana@example.org from 203.0.113.9 with key lm_abc_def";
//! assert_eq!(
//!     scrub(line),
//!     "login failed for [redacted:email] from [redacted:ip] with key [redacted:api_key]"
//! );
//! ```

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What a redacted span held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Redaction {
    /// An e-mail address.
    Email,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A leadmaps API key.
    ApiKey,
    /// A bearer credential or a JWT.
    Token,
    /// A cookie or authorization header value.
    Cookie,
    /// A password, session id or other secret-looking value.
    Secret,
}

impl Redaction {
    /// The marker that replaces it: `[redacted:email]` and so on.
    pub const fn marker(self) -> &'static str {
        match self {
            Redaction::Email => "[redacted:email]",
            Redaction::Ip => "[redacted:ip]",
            Redaction::ApiKey => "[redacted:api_key]",
            Redaction::Token => "[redacted:token]",
            Redaction::Cookie => "[redacted:cookie]",
            Redaction::Secret => "[redacted:secret]",
        }
    }
}

/// One span to replace: byte range and kind.
type Span = (usize, usize, Redaction);

/// Header and field names whose value is redacted to the end of the line.
const HEADERS: &[&str] = &[
    "set-cookie",
    "cookie",
    "proxy-authorization",
    "authorization",
    "x-api-key",
];

/// Names whose `name=value` or `name: value` value is a secret (up to a delimiter).
const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "session",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "client_secret",
    "sid",
];

/// Field names that hold an IP address, an e-mail address or a user agent outright.
const IP_FIELDS: &[&str] = &[
    "ip",
    "client_ip",
    "peer_ip",
    "remote_addr",
    "remote_ip",
    "peer",
];
const EMAIL_FIELDS: &[&str] = &["email", "e_mail", "mail", "recipient"];
const AGENT_FIELDS: &[&str] = &["user_agent", "useragent", "ua"];

/// Returns `text` with every e-mail address, IP address, API key, token, cookie value and
/// secret-looking string replaced by its [`Redaction::marker`]. Borrows when nothing matched.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let spans = find(text);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, kind) in spans {
        if start < at {
            // Overlaps a span already replaced: extend over whatever it adds.
            if end > at {
                at = end;
            }
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(kind.marker());
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Every span [`scrub`] would replace, as `(start, end, kind)` byte ranges of `text`: earliest
/// first, of two starting together the longer; spans may overlap. For scanners that must say
/// what they found without repeating it (`server verify`'s dump scan).
pub fn find(text: &str) -> Vec<(usize, usize, Redaction)> {
    let mut spans = Vec::new();
    header_spans(text, &mut spans);
    assignment_spans(text, &mut spans);
    bearer_spans(text, &mut spans);
    email_spans(text, &mut spans);
    ipv6_spans(text, &mut spans);
    ipv4_spans(text, &mut spans);
    api_key_spans(text, &mut spans);
    jwt_spans(text, &mut spans);
    secret_spans(text, &mut spans);
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    spans
}

/// Scrubs a structured field: its whole value when its name says it holds personal data or a
/// secret (see the module docs), else [`scrub`] of the value.
pub fn scrub_field<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    let lower = name.to_ascii_lowercase();
    if HEADERS
        .iter()
        .any(|h| lower == *h || lower == h.replace('-', "_"))
    {
        return Cow::Borrowed(Redaction::Cookie.marker());
    }
    if IP_FIELDS.contains(&lower.as_str()) || lower.ends_with("_ip") {
        return Cow::Borrowed(Redaction::Ip.marker());
    }
    if EMAIL_FIELDS.contains(&lower.as_str()) || lower.ends_with("_email") {
        return Cow::Borrowed(Redaction::Email.marker());
    }
    if AGENT_FIELDS.contains(&lower.as_str()) {
        return Cow::Borrowed(Redaction::Secret.marker());
    }
    if crate::audit::is_sensitive_key(name) {
        return Cow::Borrowed(Redaction::Secret.marker());
    }
    scrub(value)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Byte positions where `needle` (lower-case ASCII) starts in `text`, ignoring case, at a word
/// boundary on the left.
fn find_ci(text: &str, needle: &str) -> Vec<usize> {
    let (hay, pin) = (text.as_bytes(), needle.as_bytes());
    let mut out = Vec::new();
    if pin.len() > hay.len() {
        return out;
    }
    for i in 0..=hay.len() - pin.len() {
        // After a word byte only when that byte ends an escape (`\nCookie:` in `Debug` output).
        let boundary = i == 0
            || !(is_word_byte(hay[i - 1]) || hay[i - 1] == b'-')
            || (i >= 2 && hay[i - 2] == b'\\');
        if boundary && hay[i..i + pin.len()].eq_ignore_ascii_case(pin) {
            out.push(i);
        }
    }
    out
}

/// `Cookie: …`, `Set-Cookie=…`, `authorization: "…"`: the value to the end of the line.
fn header_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    for name in HEADERS {
        for variant in [name.to_string(), name.replace('-', "_")] {
            for start in find_ci(text, &variant) {
                let mut i = start + variant.len();
                if i < bytes.len() && (is_word_byte(bytes[i]) || bytes[i] == b'-') {
                    continue; // a longer word
                }
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
                    continue;
                }
                i += 1;
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                // To the end of the line, or of an escaped line (`\n` in `Debug` output).
                let end = (i..bytes.len())
                    .find(|&j| {
                        matches!(bytes[j], b'\n' | b'\r')
                            || (bytes[j] == b'\\' && matches!(bytes.get(j + 1), Some(b'n' | b'r')))
                    })
                    .unwrap_or(bytes.len());
                if end > i {
                    spans.push((i, end, Redaction::Cookie));
                }
            }
        }
    }
}

/// Bytes that end an unquoted `name=value` value.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'&' | b';' | b',' | b'"' | b'\'' | b')' | b'}' | b']')
}

/// `password=…`, `token: …`, `"secret":"…"`: the value up to a delimiter.
fn assignment_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    for name in SECRET_NAMES {
        for start in find_ci(text, name) {
            let mut i = start + name.len();
            if i < bytes.len() && is_word_byte(bytes[i]) {
                continue;
            }
            if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
            }
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
                continue;
            }
            i += 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let quoted = i < bytes.len() && matches!(bytes[i], b'"' | b'\'');
            if quoted {
                let quote = bytes[i];
                i += 1;
                let end = bytes[i..]
                    .iter()
                    .position(|b| *b == quote)
                    .map_or(bytes.len(), |p| i + p);
                if end > i {
                    spans.push((i, end, Redaction::Secret));
                }
            } else {
                let end = bytes[i..]
                    .iter()
                    .position(|b| ends_value(*b))
                    .map_or(bytes.len(), |p| i + p);
                if end > i {
                    spans.push((i, end, Redaction::Secret));
                }
            }
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// `Bearer <token>`, `Basic <credentials>`.
fn bearer_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    for scheme in ["bearer ", "basic "] {
        for start in find_ci(text, scheme) {
            let mut i = start + scheme.len();
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let end = bytes[i..]
                .iter()
                .position(|b| !is_token_byte(*b))
                .map_or(bytes.len(), |p| i + p);
            // At least 8 characters: "basic auth" in prose is not a credential.
            if end >= i + 8 {
                spans.push((i, end, Redaction::Token));
            }
        }
    }
}

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// `local@domain.tld`, the domain with at least one dot and an alphabetic top-level label.
fn email_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices('@') {
        let mut start = at;
        while start > 0 && is_local_byte(bytes[start - 1]) {
            start -= 1;
        }
        while start < at && matches!(bytes[start], b'.' | b'\'') {
            start += 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && is_domain_byte(bytes[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start == at || end <= at + 1 {
            continue;
        }
        let domain = &text[at + 1..end];
        let Some((_, tld)) = domain.rsplit_once('.') else {
            continue;
        };
        if tld.len() >= 2
            && tld.bytes().all(|b| b.is_ascii_alphabetic())
            && domain.split('.').all(|l| !l.is_empty())
        {
            spans.push((start, end, Redaction::Email));
        }
    }
}

/// IPv6: a run of hex digits, colons and dots (and a `%zone`) with two colons or more, not glued to
/// a word on either side, that parses.
fn ipv6_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    let in_run = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut i = 0;
    while i < bytes.len() {
        if !in_run(bytes[i]) || (i > 0 && (is_word_byte(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        while end < bytes.len() && in_run(bytes[end]) {
            end += 1;
        }
        i = end.max(start + 1);
        // A zone id: `%eth0`.
        let mut zone_end = end;
        if zone_end < bytes.len() && bytes[zone_end] == b'%' {
            zone_end += 1;
            while zone_end < bytes.len() && is_word_byte(bytes[zone_end]) {
                zone_end += 1;
            }
        }
        // Trailing punctuation of prose ("… from ::1.") is not part of the address.
        let mut core_end = end;
        while core_end > start && matches!(bytes[core_end - 1], b'.') {
            core_end -= 1;
        }
        let candidate = &text[start..core_end];
        if candidate.matches(':').count() < 2 {
            continue;
        }
        if zone_end < bytes.len() && is_word_byte(bytes[zone_end]) {
            continue; // glued to a word: `ab::cdg`
        }
        if candidate.parse::<Ipv6Addr>().is_ok() {
            let stop = if zone_end > end { zone_end } else { core_end };
            spans.push((start, stop, Redaction::Ip));
        }
    }
}

/// IPv4: four dotted decimal octets, not glued to a word or another dot-number on either side.
fn ipv4_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    let in_run = |b: u8| b.is_ascii_digit() || b == b'.';
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && (is_word_byte(bytes[i - 1]))) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        while end < bytes.len() && in_run(bytes[end]) {
            end += 1;
        }
        i = end;
        let mut core_end = end;
        while core_end > start && bytes[core_end - 1] == b'.' {
            core_end -= 1;
        }
        if end < bytes.len() && is_word_byte(bytes[end]) && core_end == end {
            continue;
        }
        let candidate = &text[start..core_end];
        if candidate.split('.').count() == 4 && candidate.parse::<Ipv4Addr>().is_ok() {
            spans.push((start, core_end, Redaction::Ip));
        }
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// `lm_…`: a leadmaps API key, whole or in part.
fn api_key_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    for start in find_ci(text, "lm_") {
        let end = bytes[start + 3..]
            .iter()
            .position(|b| !is_key_byte(*b))
            .map_or(bytes.len(), |p| start + 3 + p);
        if end > start + 3 {
            spans.push((start, end, Redaction::ApiKey));
        }
    }
}

/// `eyJ….….…`: a JWT (or any JWS/JWE in compact form).
fn jwt_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    for (start, _) in text.match_indices("eyJ") {
        if start > 0 && is_key_byte(bytes[start - 1]) {
            continue;
        }
        let end = bytes[start..]
            .iter()
            .position(|b| !(is_key_byte(*b) || *b == b'.'))
            .map_or(bytes.len(), |p| start + p);
        let token = text[start..end].trim_end_matches('.');
        if token.split('.').filter(|s| !s.is_empty()).count() >= 2 {
            spans.push((start, start + token.len(), Redaction::Token));
        }
    }
}

/// Long hex strings and long strings mixing upper case, lower case and digits: key material,
/// session ids, hashes. UUIDs (hex in 8-4-4-4-12 groups) are identifiers and stay.
fn secret_spans(text: &str, spans: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    let in_run = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-');
    let mut i = 0;
    while i < bytes.len() {
        if !in_run(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && in_run(bytes[i]) {
            i += 1;
        }
        // Judge each piece between separators that prose and paths use.
        let run = &text[start..i];
        let mut offset = start;
        for piece in run.split(['/', '-', '_']) {
            let piece_start = offset;
            offset += piece.len() + 1;
            let core = piece.trim_end_matches('=');
            if core.len() < 32 {
                continue;
            }
            let hex = core.bytes().all(|b| b.is_ascii_hexdigit());
            let mixed = core.bytes().any(|b| b.is_ascii_uppercase())
                && core.bytes().any(|b| b.is_ascii_lowercase())
                && core.bytes().any(|b| b.is_ascii_digit());
            if hex || mixed {
                spans.push((piece_start, piece_start + piece.len(), Redaction::Secret));
            }
        }
        // A long base64 value split by `/` or `+` only: judge it whole as well.
        let whole = run.trim_end_matches('=');
        if whole.len() >= 40
            && !whole.contains(['-', '_'])
            && whole.bytes().any(|b| b.is_ascii_uppercase())
            && whole.bytes().any(|b| b.is_ascii_lowercase())
            && whole.bytes().any(|b| b.is_ascii_digit())
            && !whole.starts_with('/')
        {
            spans.push((start, i, Redaction::Secret));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_of_cases() {
        let cases: &[(&str, &str)] = &[
            ("a@b.io", "[redacted:email]"),
            ("mail user@sub.example.co.uk.", "mail [redacted:email]."),
            ("<first.last+tag@example.org>", "<[redacted:email]>"),
            ("no address @ here", "no address @ here"),
            ("ip 10.0.0.1", "ip [redacted:ip]"),
            ("10.0.0.1 at start", "[redacted:ip] at start"),
            ("end 192.168.1.255.", "end [redacted:ip]."),
            ("mapped ::ffff:1.2.3.4 here", "mapped [redacted:ip] here"),
            ("[2001:db8::1]:443", "[[redacted:ip]]:443"),
            ("fe80::1%eth0 up", "[redacted:ip] up"),
            ("loopback ::1", "loopback [redacted:ip]"),
            (
                "full 2001:0db8:0000:0000:0000:ff00:0042:8329",
                "full [redacted:ip]",
            ),
            ("version 1.2.3", "version 1.2.3"),
            ("at 12:30:45", "at 12:30:45"),
            (
                "path leadmaps_core::tenancy::Gate",
                "path leadmaps_core::tenancy::Gate",
            ),
            ("Vec::dead", "Vec::dead"),
            ("bad octet 300.1.1.1", "bad octet 300.1.1.1"),
            ("key lm_0123abcd_s3cr3t-XYZ", "key [redacted:api_key]"),
            (
                "Authorization: Bearer abcdefgh12345678",
                "Authorization: [redacted:cookie]",
            ),
            (
                "sent bearer abcdefgh12345678 ok",
                "sent bearer [redacted:token] ok",
            ),
            (
                "Cookie: __Host-session=abc; theme=dark\nnext line",
                "Cookie: [redacted:cookie]\nnext line",
            ),
            ("set-cookie=\"a=b\"", "set-cookie=[redacted:cookie]"),
            (
                "Error { detail: \"x\\nCookie: sid=1; b=2\\nmore\" }",
                "Error { detail: \"x\\nCookie: [redacted:cookie]\\nmore\" }",
            ),
            ("password=hunter2&x=1", "password=[redacted:secret]&x=1"),
            (
                "{\"token\":\"abc.def\"}",
                "{\"token\":\"[redacted:secret]\"}",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln end",
                "jwt [redacted:token] end",
            ),
            (
                "digest 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "digest [redacted:secret]",
            ),
            (
                "seed JBSWY3DPEHPK3PXPjbswy3dpehpk3pxp1234",
                "seed [redacted:secret]",
            ),
            (
                "workspace 1b4e28ba-2fa1-11d2-883f-0016d3cca427 ok",
                "workspace 1b4e28ba-2fa1-11d2-883f-0016d3cca427 ok",
            ),
            (
                "/root/.cache/t11/debug/build/leadmaps-core-0123456789abcdef/out",
                "/root/.cache/t11/debug/build/leadmaps-core-0123456789abcdef/out",
            ),
            ("nothing to see", "nothing to see"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub(input), *expected, "input: {input:?}");
        }
    }

    #[test]
    fn fields_are_judged_by_name() {
        assert_eq!(scrub_field("email", "x"), "[redacted:email]");
        assert_eq!(scrub_field("client_ip", "x"), "[redacted:ip]");
        assert_eq!(scrub_field("user_agent", "Mozilla"), "[redacted:secret]");
        assert_eq!(scrub_field("set_cookie", "a=b"), "[redacted:cookie]");
        assert_eq!(scrub_field("api_key", "x"), "[redacted:secret]");
        assert_eq!(scrub_field("kind", "Unavailable"), "Unavailable");
        assert_eq!(scrub_field("note", "to a@b.io"), "to [redacted:email]");
    }

    proptest! {
        #[test]
        fn addresses_never_survive_any_surroundings(
            before in "[ a-zA-Z,;:()<>\"'=]{0,12}",
            after in "[ a-zA-Z,;:()<>\"'=.]{0,12}",
            local in "[a-z][a-z0-9.+_-]{0,10}[a-z0-9]",
            host in "[a-z][a-z0-9-]{0,8}[a-z0-9]",
            a in 0u8..=255, b in 0u8..=255, c in 0u8..=255, d in 0u8..=255,
            segs in proptest::collection::vec(0u16..=0xffff, 8),
            secret in "[A-Za-z0-9]{24}",
        ) {
            let email = format!("{local}@{host}.example.com");
            let v4 = format!("{a}.{b}.{c}.{d}");
            let v6 = std::net::Ipv6Addr::new(
                segs[0], segs[1], segs[2], segs[3], segs[4], segs[5], segs[6], segs[7],
            ).to_string();
            let key = format!("lm_{host}_{secret}");
            for needle in [&email, &v4, &v6, &key] {
                let text = format!("{before} {needle} {after}");
                let out = scrub(&text);
                prop_assert!(!out.contains(needle.as_str()), "{text:?} -> {out:?}");
            }
        }
    }
}
