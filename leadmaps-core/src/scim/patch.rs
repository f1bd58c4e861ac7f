//! SCIM PATCH (RFC 7644 section 3.5.2) as identity providers send it.
//!
//! Accepted, beyond the letter of the RFC, because Entra ID and Okta send them:
//! - operation names in any case (`"op": "Replace"`, `"Add"`, `"Remove"`);
//! - path-less operations whose value object names attributes, including dotted sub-attribute
//!   paths and schema URNs as keys (`{"op": "Add", "value": {"name.givenName": "Ada"}}`);
//! - booleans as strings (`"active": "False"`);
//! - value filters in paths (`emails[type eq "work"].value`, `members[value eq "..."]`), with an
//!   `add` or `replace` through a filter that matches nothing creating the element it describes;
//! - `remove` of `members` with a value listing the members to remove (Entra ID's form).
//!
//! The result is re-canonicalised by [`super::schema::canonical`], so a PATCH can never store an
//! attribute a POST could not.

use serde_json::{Map, Value};

use super::ScimKind;
use super::filter::{self, Filter, get_ci, strip_urn};
use super::schema::{self, Attr, find};
use crate::error::{Error, Result};

/// Most operations in one request.
pub const MAX_OPERATIONS: usize = 1000;

fn invalid_path(message: &str) -> Error {
    Error::invalid(format!("invalid path: {message}"))
}

fn invalid_value(message: &str) -> Error {
    Error::invalid(format!("invalid value: {message}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// A parsed path: attribute, optional value filter, optional sub-attribute.
struct Path<'a> {
    attr: Option<&'static Attr>,
    /// `externalId`, which is not in the schema's attribute list.
    external_id: bool,
    filter: Option<Filter>,
    sub: Option<&'a str>,
}

fn parse_path(kind: ScimKind, text: &str) -> Result<Path<'_>> {
    let text = text.trim();
    let (head, filter, sub) = match text.find('[') {
        Some(open) => {
            let close = text.rfind(']').ok_or_else(|| invalid_path("unclosed ["))?;
            if close < open {
                return Err(invalid_path("unbalanced brackets"));
            }
            let filter = filter::parse(&text[open + 1..close])?;
            let rest = &text[close + 1..];
            let sub = match rest.strip_prefix('.') {
                Some(sub) if !sub.is_empty() => Some(sub),
                None if rest.is_empty() => None,
                _ => return Err(invalid_path("bad sub-attribute")),
            };
            (&text[..open], Some(filter), sub)
        }
        None => {
            let bare = strip_urn(text);
            match bare.split_once('.') {
                Some((attr, sub)) => (attr, None, Some(sub)),
                None => (bare, None, None),
            }
        }
    };
    let head = strip_urn(head);
    if head.eq_ignore_ascii_case("externalId") {
        if filter.is_some() || sub.is_some() {
            return Err(invalid_path("externalId has no sub-attributes"));
        }
        return Ok(Path {
            attr: None,
            external_id: true,
            filter: None,
            sub: None,
        });
    }
    let attr = find(schema::attrs(kind), head).ok_or_else(|| invalid_path("no such attribute"))?;
    if attr.mutability == "readOnly" {
        return Err(Error::invalid("mutability: the attribute is read-only"));
    }
    if let Some(sub) = sub
        && find(attr.sub, sub).is_none()
    {
        return Err(invalid_path("no such sub-attribute"));
    }
    if filter.is_some() && !attr.multi {
        return Err(invalid_path(
            "a value filter needs a multi-valued attribute",
        ));
    }
    Ok(Path {
        attr: Some(attr),
        external_id: false,
        filter,
        sub,
    })
}

/// Applies a PATCH request body to `resource` (the stored document plus `externalId`).
///
/// # Errors
/// [`Error::Invalid`] whose message starts with `invalid path:`, `invalid value:`,
/// `invalid filter:`, `mutability:` or `invalid syntax:`; `resource` is then unusable.
pub fn apply(kind: ScimKind, resource: &mut Map<String, Value>, body: &Value) -> Result<()> {
    let operations = get_ci(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("invalid syntax: Operations must be a list"))?;
    if operations.is_empty() || operations.len() > MAX_OPERATIONS {
        return Err(Error::invalid("invalid syntax: 1 to 1000 operations"));
    }
    for operation in operations {
        let op = match get_ci(operation, "op").and_then(Value::as_str) {
            Some(op) if op.eq_ignore_ascii_case("add") => Op::Add,
            Some(op) if op.eq_ignore_ascii_case("replace") => Op::Replace,
            Some(op) if op.eq_ignore_ascii_case("remove") => Op::Remove,
            _ => {
                return Err(Error::invalid(
                    "invalid syntax: op must be add, replace or remove",
                ));
            }
        };
        let value = get_ci(operation, "value");
        match get_ci(operation, "path").and_then(Value::as_str) {
            Some(path) if !path.trim().is_empty() => {
                let path = parse_path(kind, path)?;
                apply_one(resource, op, &path, value)?;
            }
            _ => {
                if op == Op::Remove {
                    return Err(Error::invalid("noTarget: remove needs a path"));
                }
                let object = value
                    .and_then(Value::as_object)
                    .ok_or_else(|| invalid_value("a path-less operation takes an object"))?;
                for (key, value) in object {
                    // Path-less values may name the schema itself (`urn:...:User`) around a
                    // nested object of attributes.
                    if key.eq_ignore_ascii_case(schema::schema_urn(kind))
                        && let Some(inner) = value.as_object()
                    {
                        for (key, value) in inner {
                            let path = parse_path(kind, key)?;
                            apply_one(resource, op, &path, Some(value))?;
                        }
                        continue;
                    }
                    let path = parse_path(kind, key)?;
                    apply_one(resource, op, &path, Some(value))?;
                }
            }
        }
    }
    Ok(())
}

fn element_matches(filter: &Filter, element: &Value) -> bool {
    filter.matches(element)
}

fn apply_one(
    resource: &mut Map<String, Value>,
    op: Op,
    path: &Path<'_>,
    value: Option<&Value>,
) -> Result<()> {
    if path.external_id {
        match op {
            Op::Remove => {
                resource.remove("externalId");
            }
            _ => {
                let value = value
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_value("externalId is a string"))?;
                resource.insert("externalId".into(), Value::String(value.to_owned()));
            }
        }
        return Ok(());
    }
    let attr = path.attr.expect("attribute path");
    let name = attr.name.to_owned();
    if op != Op::Remove && value.is_none() {
        return Err(invalid_value("add and replace need a value"));
    }
    match (&path.filter, path.sub) {
        (None, None) => {
            match op {
                Op::Remove => {
                    match value.filter(|_| attr.multi) {
                        // Entra ID: remove the listed values.
                        Some(listed) => {
                            let listed = schema::canonical_attr(attr, listed).unwrap_or_default();
                            let listed = listed.as_array().cloned().unwrap_or_default();
                            if let Some(Value::Array(items)) = resource.get_mut(&name) {
                                items.retain(|item| !listed.iter().any(|l| same_element(l, item)));
                            }
                        }
                        None => {
                            resource.remove(&name);
                        }
                    }
                }
                Op::Replace => {
                    let value = value.expect("checked");
                    match schema::canonical_attr(attr, value) {
                        Some(v) => {
                            resource.insert(name, v);
                        }
                        None if value.is_null() => {
                            resource.remove(&name);
                        }
                        None => return Err(invalid_value("wrong type for the attribute")),
                    }
                }
                Op::Add => {
                    let value = value.expect("checked");
                    let Some(new) = schema::canonical_attr(attr, value) else {
                        return Err(invalid_value("wrong type for the attribute"));
                    };
                    match (attr.multi, resource.get_mut(&name), new) {
                        (true, Some(Value::Array(items)), Value::Array(new)) => {
                            for item in new {
                                if !items.iter().any(|i| same_element(i, &item)) {
                                    items.push(item);
                                }
                            }
                        }
                        (false, Some(Value::Object(current)), Value::Object(new)) => {
                            // Adding to a complex attribute sets the given sub-attributes.
                            current.extend(new);
                        }
                        (_, _, new) => {
                            resource.insert(name, new);
                        }
                    }
                }
            }
            Ok(())
        }
        (None, Some(sub)) => {
            let sub_attr = find(attr.sub, sub).expect("checked");
            if attr.multi {
                // `emails.value` without a filter: every element.
                if let Some(Value::Array(items)) = resource.get_mut(&name) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        set_sub(item, sub_attr, op, value)?;
                    }
                }
                return Ok(());
            }
            let entry = resource
                .entry(name)
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let object = entry.as_object_mut().expect("object");
            set_sub(object, sub_attr, op, value)?;
            if object.is_empty() {
                resource.remove(attr.name);
            }
            Ok(())
        }
        (Some(filter), sub) => {
            let items = resource
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !items.is_array() {
                *items = Value::Array(Vec::new());
            }
            let items = items.as_array_mut().expect("array");
            let matched = items.iter().filter(|i| element_matches(filter, i)).count();
            match (op, sub) {
                (Op::Remove, None) => items.retain(|i| !element_matches(filter, i)),
                (Op::Remove, Some(sub)) => {
                    let sub_attr = find(attr.sub, sub).expect("checked");
                    for item in items.iter_mut().filter(|i| element_matches(filter, i)) {
                        if let Some(object) = item.as_object_mut() {
                            set_sub(object, sub_attr, Op::Remove, None)?;
                        }
                    }
                }
                (_, Some(sub)) => {
                    let sub_attr = find(attr.sub, sub).expect("checked");
                    if matched == 0 {
                        // Entra ID adds `emails[type eq "work"].value` to a user without one.
                        items.push(element_from(filter));
                    }
                    for item in items.iter_mut().filter(|i| element_matches(filter, i)) {
                        if let Some(object) = item.as_object_mut() {
                            set_sub(object, sub_attr, op, value)?;
                        }
                    }
                }
                (_, None) => {
                    let new = schema::canonical_value(attr, value.expect("checked"))
                        .ok_or_else(|| invalid_value("wrong type for the attribute"))?;
                    if matched == 0 {
                        items.push(new);
                    } else {
                        for item in items.iter_mut().filter(|i| element_matches(filter, i)) {
                            if let (Some(object), Value::Object(new)) = (item.as_object_mut(), &new)
                            {
                                object.extend(new.clone());
                            }
                        }
                    }
                }
            }
            if items.is_empty() {
                resource.remove(&name);
            }
            Ok(())
        }
    }
}

/// The element a simple `a eq v and b eq w` filter describes.
fn element_from(filter: &Filter) -> Value {
    let mut object = Map::new();
    for comparison in &filter.all {
        if let [name] = comparison.path.as_slice() {
            object.insert(name.clone(), comparison.value.clone());
        }
    }
    Value::Object(object)
}

/// Two elements of a multi-valued attribute are the same when their `value`s are (or, without
/// values, when they are equal).
fn same_element(a: &Value, b: &Value) -> bool {
    match (get_ci(a, "value"), get_ci(b, "value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn set_sub(
    object: &mut Map<String, Value>,
    sub: &Attr,
    op: Op,
    value: Option<&Value>,
) -> Result<()> {
    // Keys may have come from a filter in lower case: canonicalise them first.
    let keys: Vec<String> = object.keys().cloned().collect();
    for key in keys {
        if key.eq_ignore_ascii_case(sub.name) && key != sub.name {
            let v = object.remove(&key).expect("present");
            object.insert(sub.name.to_owned(), v);
        }
    }
    match op {
        Op::Remove => {
            object.remove(sub.name);
        }
        Op::Add | Op::Replace => {
            let value = value.ok_or_else(|| invalid_value("add and replace need a value"))?;
            let value = schema::canonical_value(sub, value)
                .ok_or_else(|| invalid_value("wrong type for the sub-attribute"))?;
            object.insert(sub.name.to_owned(), value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(kind: ScimKind, start: Value, ops: Value) -> Result<Value> {
        let mut resource = start.as_object().unwrap().clone();
        apply(kind, &mut resource, &json!({ "Operations": ops }))?;
        let mut out = schema::canonical(kind, &Value::Object(resource.clone()));
        if let Some(e) = resource.get("externalId") {
            out.insert("externalId".into(), e.clone());
        }
        Ok(Value::Object(out))
    }

    #[test]
    fn entra_id_and_okta_shapes() {
        let user = json!({"userName": "ada@example.com", "active": true});
        // Entra ID: capitalised op, path-less value, boolean as a string.
        let out = patch(
            ScimKind::User,
            user.clone(),
            json!([{"op": "Replace", "value": {"active": "False"}}]),
        )
        .unwrap();
        assert_eq!(out["active"], json!(false));
        // Okta: lower-case op with a path.
        let out = patch(
            ScimKind::User,
            user.clone(),
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .unwrap();
        assert_eq!(out["active"], json!(false));
        // Entra ID: filtered sub-attribute on a user without that element, dotted keys.
        let out = patch(
            ScimKind::User,
            user.clone(),
            json!([
                {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "ada@example.com"},
                {"op": "Add", "value": {"name.givenName": "Ada", "externalId": "e-1"}},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:displayName", "value": "Ada L"},
            ]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"type": "work", "value": "ada@example.com"}])
        );
        assert_eq!(out["name"], json!({"givenName": "Ada"}));
        assert_eq!(out["externalId"], json!("e-1"));
        assert_eq!(out["displayName"], json!("Ada L"));
    }

    #[test]
    fn group_members_add_and_remove_in_both_forms() {
        let group = json!({"displayName": "Ops", "members": [{"value": "a"}, {"value": "b"}]});
        let out = patch(
            ScimKind::Group,
            group.clone(),
            json!([
                {"op": "Add", "path": "members", "value": [{"value": "c"}, {"value": "a"}]},
                {"op": "Remove", "path": "members[value eq \"b\"]"},
            ]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "a"}, {"value": "c"}]));
        let out = patch(
            ScimKind::Group,
            group,
            json!([{"op": "Remove", "path": "members", "value": [{"value": "a"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "b"}]));
    }

    #[test]
    fn bad_operations_are_refused() {
        let user = json!({"userName": "u"});
        for (ops, prefix) in [
            (
                json!([{"op": "move", "path": "userName"}]),
                "invalid syntax",
            ),
            (
                json!([{"op": "add", "path": "nope", "value": 1}]),
                "invalid path",
            ),
            (
                json!([{"op": "add", "path": "groups", "value": []}]),
                "mutability",
            ),
            (json!([{"op": "remove"}]), "noTarget"),
            (
                json!([{"op": "replace", "path": "active", "value": "maybe"}]),
                "invalid value",
            ),
        ] {
            let error = patch(ScimKind::User, user.clone(), ops).unwrap_err();
            assert!(error.to_string().contains(prefix), "{error}");
        }
    }
}
