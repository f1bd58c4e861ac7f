//! SCIM list filters (RFC 7644 section 3.4.2.2), the part identity providers use: `attrPath eq
//! value` comparisons joined by `and`, e.g. `userName eq "ada@example.com"` (Okta, Entra ID),
//! `externalId eq "..." and active eq true`, `displayName eq "Ops"`, `members[value eq "..."]` is
//! not a list filter and is handled by [`super::patch`].
//!
//! Keywords and attribute names are case-insensitive; string values compare case-insensitively
//! unless the attribute is case-exact (`id`, `externalId`, and the `value` of references), so
//! `userName eq "ADA@example.com"` finds `ada@example.com`. Anything else (`or`, `not`, `co`,
//! `sw`, `pr`, `gt`, parentheses) is refused with a clear reason rather than answered wrongly.

use serde_json::Value;

use crate::error::{Error, Result};

/// One `attrPath eq value` comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The attribute, lower case, without a schema URN: `username`, `name.givenname`.
    pub path: Vec<String>,
    /// The value compared with.
    pub value: Value,
}

/// A parsed filter: every comparison must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The comparisons, joined by `and`.
    pub all: Vec<Comparison>,
}

/// Longest filter accepted, in bytes.
pub const MAX_FILTER: usize = 4096;

fn invalid(message: &str) -> Error {
    Error::invalid(format!("invalid filter: {message}"))
}

/// Splits into tokens: words and JSON string literals.
fn tokens(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '(' || c == ')' {
            return Err(invalid("grouping with parentheses is not supported"));
        }
        if c == '"' {
            chars.next();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                }
            }
            let end = end.ok_or_else(|| invalid("unterminated string"))?;
            out.push(text[start..=end].to_owned());
            continue;
        }
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                end = i;
                break;
            }
            chars.next();
        }
        out.push(text[start..end].to_owned());
    }
    Ok(out)
}

/// Strips a schema URN from an attribute path (`urn:...:User:userName` -> `userName`).
pub fn strip_urn(path: &str) -> &str {
    if path.to_ascii_lowercase().starts_with("urn:") {
        // The attribute follows the last ':'; sub-attributes follow it with '.'.
        path.rsplit_once(':').map_or(path, |(_, attr)| attr)
    } else {
        path
    }
}

fn attr_path(text: &str) -> Result<Vec<String>> {
    let path = strip_urn(text);
    let parts: Vec<String> = path.split('.').map(str::to_ascii_lowercase).collect();
    let ok = |p: &String| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$')
    };
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(ok) {
        return Err(invalid("bad attribute path"));
    }
    Ok(parts)
}

/// Parses a filter.
///
/// # Errors
/// [`Error::Invalid`] naming what is unsupported or malformed.
pub fn parse(text: &str) -> Result<Filter> {
    if text.len() > MAX_FILTER {
        return Err(invalid("too long"));
    }
    let tokens = tokens(text)?;
    let mut all = Vec::new();
    let mut rest = tokens.as_slice();
    loop {
        let [path, op, value, tail @ ..] = rest else {
            return Err(invalid("expected `attribute eq value`"));
        };
        if !op.eq_ignore_ascii_case("eq") {
            return Err(invalid("only the `eq` operator is supported"));
        }
        if path.contains('[') {
            return Err(invalid("value filters in list queries are not supported"));
        }
        let value: Value = if value.starts_with('"') {
            serde_json::from_str(value).map_err(|_| invalid("bad string"))?
        } else {
            match value.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                number => serde_json::from_str::<serde_json::Number>(number)
                    .map(Value::Number)
                    .map_err(|_| invalid("bad value"))?,
            }
        };
        all.push(Comparison {
            path: attr_path(path)?,
            value,
        });
        match tail {
            [] => return Ok(Filter { all }),
            [and, more @ ..] if and.eq_ignore_ascii_case("and") => rest = more,
            [other, ..] if other.eq_ignore_ascii_case("or") => {
                return Err(invalid("only `and` joins comparisons"));
            }
            _ => return Err(invalid("expected `and`")),
        }
    }
}

/// Whether an attribute compares case-exactly (RFC 7643: `id`, `externalId`, and reference
/// values).
pub fn case_exact(path: &[String]) -> bool {
    matches!(
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["id"] | ["externalid"] | ["members", "value"] | ["groups", "value"] | ["meta", _]
    )
}

/// The member of an object whose key equals `name` ignoring case.
pub fn get_ci<'v>(object: &'v Value, name: &str) -> Option<&'v Value> {
    object
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// Every value at `path` in a resource (multi-valued attributes give one per element).
fn values_at<'v>(resource: &'v Value, path: &[String]) -> Vec<&'v Value> {
    let mut current = vec![resource];
    for part in path {
        let mut next = Vec::new();
        for value in current {
            let value = match value {
                Value::Array(items) => items.iter().filter_map(|i| get_ci(i, part)).collect(),
                other => get_ci(other, part).into_iter().collect::<Vec<_>>(),
            };
            next.extend(value);
        }
        current = next;
    }
    current
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        })
        .collect()
}

/// Whether two values are equal under the attribute's case rule.
pub fn equal(path: &[String], actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::String(a), Value::String(e)) if !case_exact(path) => {
            a.to_lowercase() == e.to_lowercase()
        }
        (Value::Number(a), Value::Number(e)) => a.as_f64() == e.as_f64(),
        (a, e) => a == e,
    }
}

impl Filter {
    /// Whether a rendered resource matches.
    pub fn matches(&self, resource: &Value) -> bool {
        self.all.iter().all(|c| {
            values_at(resource, &c.path)
                .into_iter()
                .any(|v| equal(&c.path, v, &c.value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eq_and_and_with_the_case_rules() {
        let user = json!({
            "id": "AbC", "userName": "Ada@Example.com", "externalId": "X1", "active": true,
            "emails": [{"value": "ada@example.com", "primary": true}],
            "name": {"givenName": "Ada"}
        });
        for yes in [
            r#"userName eq "ada@example.com""#,
            r#"USERNAME EQ "ADA@EXAMPLE.COM""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "ada@example.com""#,
            r#"externalId eq "X1" and active eq true"#,
            r#"emails.value eq "ADA@example.com""#,
            r#"name.givenName eq "ada" and userName eq "ada@example.com""#,
            r#"id eq "AbC""#,
        ] {
            assert!(parse(yes).unwrap().matches(&user), "{yes}");
        }
        for no in [
            r#"userName eq "bob@example.com""#,
            r#"externalId eq "x1""#,
            r#"id eq "abc""#,
            r#"externalId eq "X1" and active eq false"#,
        ] {
            assert!(!parse(no).unwrap().matches(&user), "{no}");
        }
    }

    #[test]
    fn unsupported_filters_are_refused_with_a_reason() {
        for bad in [
            "",
            "userName",
            r#"userName co "a""#,
            r#"userName eq "a" or userName eq "b""#,
            r#"(userName eq "a")"#,
            r#"userName eq "a" and"#,
            r#"userName eq "unterminated"#,
            r#"emails[type eq "work"] eq "x""#,
        ] {
            let error = parse(bad).unwrap_err();
            assert!(
                error.to_string().contains("invalid filter"),
                "{bad}: {error}"
            );
        }
    }
}
