//! RFC 6902 JSON Patch between an audit record's before and after values.
//!
//! [`diff`] emits only `add`, `remove` and `replace`, with RFC 6901 JSON Pointers (`~` written
//! `~0`, `/` written `~1`). Objects are diffed key by key; arrays element by element (a common
//! prefix of indexes diffed recursively, then appends at the end or removals from the end, last
//! index first), so `apply(before, &diff(before, after)) == after` for every pair, which a property
//! test holds. An absent before or after is JSON `null`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// One operation of an RFC 6902 JSON Patch. Serialises to the RFC's form,
/// e.g. `{"op":"replace","path":"/a~1b","value":1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum PatchOp {
    /// Adds a member to an object (replacing one of the same name), or inserts into an array
    /// (`-` appends).
    Add {
        /// RFC 6901 pointer to the new location.
        path: String,
        /// The value to add.
        value: Value,
    },
    /// Removes the member or element at `path`, which must exist.
    Remove {
        /// RFC 6901 pointer to the location.
        path: String,
    },
    /// Replaces the value at `path`, which must exist (`""` replaces the whole document).
    Replace {
        /// RFC 6901 pointer to the location.
        path: String,
        /// The new value.
        value: Value,
    },
}

impl PatchOp {
    /// The operation's JSON Pointer.
    pub fn path(&self) -> &str {
        match self {
            PatchOp::Add { path, .. }
            | PatchOp::Remove { path }
            | PatchOp::Replace { path, .. } => path,
        }
    }
}

/// Escapes one reference token for a JSON Pointer (RFC 6901: `~` → `~0`, then `/` → `~1`).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape_token(token: &str) -> Result<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(Error::invalid("JSON Pointer has a bad ~ escape")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The patch that turns `before` into `after` (`None` is JSON `null`).
pub fn diff(before: Option<&Value>, after: Option<&Value>) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    diff_at(
        before.unwrap_or(&Value::Null),
        after.unwrap_or(&Value::Null),
        &mut String::new(),
        &mut ops,
    );
    ops
}

fn diff_at(before: &Value, after: &Value, path: &mut String, ops: &mut Vec<PatchOp>) {
    if before == after {
        return;
    }
    let len = path.len();
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                ops.push(PatchOp::Remove {
                    path: format!("{path}/{}", escape_token(key)),
                });
            }
            for (key, new_value) in new {
                path.push('/');
                path.push_str(&escape_token(key));
                match old.get(key) {
                    Some(old_value) => diff_at(old_value, new_value, path, ops),
                    None => ops.push(PatchOp::Add {
                        path: path.clone(),
                        value: new_value.clone(),
                    }),
                }
                path.truncate(len);
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            let common = old.len().min(new.len());
            for (i, (old_value, new_value)) in old.iter().zip(new).enumerate() {
                path.push('/');
                path.push_str(&i.to_string());
                diff_at(old_value, new_value, path, ops);
                path.truncate(len);
            }
            for (i, value) in new.iter().enumerate().skip(common) {
                ops.push(PatchOp::Add {
                    path: format!("{path}/{i}"),
                    value: value.clone(),
                });
            }
            for i in (common..old.len()).rev() {
                ops.push(PatchOp::Remove {
                    path: format!("{path}/{i}"),
                });
            }
        }
        _ => ops.push(PatchOp::Replace {
            path: path.clone(),
            value: after.clone(),
        }),
    }
}

/// The reference tokens of a pointer; `None` for the whole document (`""`).
fn tokens(pointer: &str) -> Result<Option<(Vec<String>, String)>> {
    if pointer.is_empty() {
        return Ok(None);
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| Error::invalid("JSON Pointer must start with /"))?;
    let mut tokens = rest
        .split('/')
        .map(unescape_token)
        .collect::<Result<Vec<_>>>()?;
    let last = tokens.pop().expect("split yields at least one token");
    Ok(Some((tokens, last)))
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize> {
    let bad = || Error::invalid("JSON Pointer has a bad array index");
    if token == "-" && allow_end {
        return Ok(len);
    }
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return Err(bad());
    }
    let index: usize = token.parse().map_err(|_| bad())?;
    let limit = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if index > limit || (!allow_end && len == 0) {
        return Err(bad());
    }
    Ok(index)
}

fn parent<'v>(doc: &'v mut Value, tokens: &[String]) -> Result<&'v mut Value> {
    let mut node = doc;
    for token in tokens {
        node = match node {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => {
                let len = items.len();
                items.get_mut(array_index(token, len, false)?)
            }
            _ => None,
        }
        .ok_or_else(|| Error::invalid("JSON Patch path does not exist"))?;
    }
    Ok(node)
}

/// Applies a patch to `doc`, all operations or none.
///
/// # Errors
/// [`Error::Invalid`] when a pointer is malformed or names a location that does not exist.
pub fn apply(mut doc: Value, patch: &[PatchOp]) -> Result<Value> {
    for op in patch {
        apply_one(&mut doc, op)?;
    }
    Ok(doc)
}

fn apply_one(doc: &mut Value, op: &PatchOp) -> Result<()> {
    let missing = || Error::invalid("JSON Patch path does not exist");
    let Some((path, last)) = tokens(op.path())? else {
        // The whole document.
        match op {
            PatchOp::Add { value, .. } | PatchOp::Replace { value, .. } => *doc = value.clone(),
            PatchOp::Remove { .. } => *doc = Value::Null,
        }
        return Ok(());
    };
    let target = parent(doc, &path)?;
    match (op, target) {
        (PatchOp::Add { value, .. }, Value::Object(map)) => {
            map.insert(last, value.clone());
        }
        (PatchOp::Add { value, .. }, Value::Array(items)) => {
            let index = array_index(&last, items.len(), true)?;
            items.insert(index, value.clone());
        }
        (PatchOp::Remove { .. }, Value::Object(map)) => {
            map.remove(&last).ok_or_else(missing)?;
        }
        (PatchOp::Remove { .. }, Value::Array(items)) => {
            let index = array_index(&last, items.len(), false)?;
            items.remove(index);
        }
        (PatchOp::Replace { value, .. }, Value::Object(map)) => {
            *map.get_mut(&last).ok_or_else(missing)? = value.clone();
        }
        (PatchOp::Replace { value, .. }, Value::Array(items)) => {
            let index = array_index(&last, items.len(), false)?;
            items[index] = value.clone();
        }
        _ => return Err(missing()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn pointers_escape_tilde_then_slash() {
        assert_eq!(escape_token("a/b~c"), "a~1b~0c");
        assert_eq!(escape_token("~1"), "~01");
        assert_eq!(unescape_token("~01").unwrap(), "~1");
        assert!(unescape_token("~2").is_err());
        assert!(unescape_token("a~").is_err());
    }

    #[test]
    fn a_small_diff_reads_like_the_rfc() {
        let before = json!({"name": "ws", "ips": ["10.0.0.0/8"], "a/b": 1, "gone": true});
        let after =
            json!({"name": "ws2", "ips": ["10.0.0.0/8", "::1/128"], "a/b": 2, "new~": null});
        let patch = diff(Some(&before), Some(&after));
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "remove", "path": "/gone"},
                {"op": "replace", "path": "/a~1b", "value": 2},
                {"op": "add", "path": "/ips/1", "value": "::1/128"},
                {"op": "replace", "path": "/name", "value": "ws2"},
                {"op": "add", "path": "/new~0", "value": null},
            ])
        );
        assert_eq!(apply(before, &patch).unwrap(), after);
    }

    #[test]
    fn absent_is_null_and_the_root_can_be_replaced() {
        let after = json!({"days": 30});
        let patch = diff(None, Some(&after));
        assert_eq!(
            patch,
            [PatchOp::Replace {
                path: String::new(),
                value: after.clone()
            }]
        );
        assert_eq!(apply(Value::Null, &patch).unwrap(), after);
        assert!(diff(None, None).is_empty());
        assert!(diff(Some(&after), Some(&after)).is_empty());
    }

    #[test]
    fn apply_refuses_what_does_not_exist() {
        let doc = json!({"a": [1, 2]});
        for op in [
            PatchOp::Remove { path: "/b".into() },
            PatchOp::Replace {
                path: "/a/2".into(),
                value: json!(0),
            },
            PatchOp::Add {
                path: "/a/3".into(),
                value: json!(0),
            },
            PatchOp::Add {
                path: "/a/01".into(),
                value: json!(0),
            },
            PatchOp::Remove {
                path: "/a/-".into(),
            },
            PatchOp::Add {
                path: "/x/y".into(),
                value: json!(0),
            },
            PatchOp::Add {
                path: "a".into(),
                value: json!(0),
            },
        ] {
            assert!(
                apply(doc.clone(), std::slice::from_ref(&op)).is_err(),
                "{op:?}"
            );
        }
        let appended = apply(
            doc,
            &[PatchOp::Add {
                path: "/a/-".into(),
                value: json!(3),
            }],
        )
        .unwrap();
        assert_eq!(appended, json!({"a": [1, 2, 3]}));
    }

    #[test]
    fn patches_round_trip_through_their_json_form() {
        let patch = diff(
            Some(&json!({"k": [1, {"x": "y"}]})),
            Some(&json!({"k": [2], "/": "~"})),
        );
        let text = serde_json::to_string(&patch).unwrap();
        let back: Vec<PatchOp> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, patch);
        assert!(
            serde_json::from_str::<PatchOp>(r#"{"op":"move","from":"/a","path":"/b"}"#).is_err()
        );
    }

    /// Keys from a small alphabet (so two random documents share keys often), including the
    /// empty key and the two characters JSON Pointer escapes.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("a".to_owned()),
            Just("/".to_owned()),
            Just("~".to_owned()),
            Just("a/b".to_owned()),
            Just("~1".to_owned()),
            Just("~0/~".to_owned()),
            "[a-c/~]{0,3}",
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            Just(Value::String(String::new())),
            "[a-c/~]{0,3}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn applying_the_diff_to_before_gives_after(before in json(), after in json()) {
            let patch = diff(Some(&before), Some(&after));
            prop_assert_eq!(apply(before.clone(), &patch).unwrap(), after.clone());
            prop_assert!(diff(Some(&after), Some(&after)).is_empty());
        }

        #[test]
        fn absent_values_are_null(value in json()) {
            prop_assert_eq!(apply(Value::Null, &diff(None, Some(&value))).unwrap(), value.clone());
            prop_assert_eq!(apply(value.clone(), &diff(Some(&value), None)).unwrap(), Value::Null);
        }

        #[test]
        fn a_mutated_document_diffs_back(
            before in json(),
            edits in prop::collection::vec((key(), json()), 1..4),
        ) {
            // Nearby documents exercise deep paths rather than a root replace.
            let mut after = before.clone();
            for (key, value) in edits {
                match &mut after {
                    Value::Object(map) => { map.insert(key, value); }
                    Value::Array(items) if !items.is_empty() => {
                        let i = key.len() % items.len();
                        items[i] = value;
                    }
                    other => {
                        *other = Value::Object([(key, value)].into_iter().collect());
                    }
                }
            }
            let patch = diff(Some(&before), Some(&after));
            prop_assert_eq!(apply(before, &patch).unwrap(), after);
        }
    }
}
