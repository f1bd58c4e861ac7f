//! The attributes the directory serves (RFC 7643 section 4, the parts provisioning uses), the
//! discovery documents built from them (`/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`),
//! and [`canonical`], which turns a request body into a stored document with canonical attribute
//! names.

use serde_json::{Map, Value, json};

use super::ScimKind;

/// The User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// List responses.
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PATCH requests.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Errors.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Search requests.
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// Most resources in one list response.
pub const MAX_RESULTS: usize = 200;

/// An attribute's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A string.
    String,
    /// A boolean (Entra ID also sends `"True"` and `"False"`).
    Boolean,
    /// A reference (a URI).
    Reference,
    /// A complex attribute with sub-attributes.
    Complex,
}

/// One attribute definition.
#[derive(Debug)]
pub struct Attr {
    /// Canonical name.
    pub name: &'static str,
    /// Type.
    pub kind: Type,
    /// Multi-valued.
    pub multi: bool,
    /// Required.
    pub required: bool,
    /// Case-exact comparisons.
    pub case_exact: bool,
    /// `readWrite`, `readOnly` or `immutable`.
    pub mutability: &'static str,
    /// `none` or `server`.
    pub uniqueness: &'static str,
    /// Sub-attributes of a complex attribute.
    pub sub: &'static [Attr],
    /// Canonical values, if any.
    pub canonical: &'static [&'static str],
    /// Reference types of a reference.
    pub references: &'static [&'static str],
    /// What it is.
    pub description: &'static str,
}

const fn attr(name: &'static str, kind: Type, description: &'static str) -> Attr {
    Attr {
        name,
        kind,
        multi: false,
        required: false,
        case_exact: false,
        mutability: "readWrite",
        uniqueness: "none",
        sub: &[],
        canonical: &[],
        references: &[],
        description,
    }
}

const USER_NAME_SUB: &[Attr] = &[
    attr(
        "formatted",
        Type::String,
        "The full name, formatted for display.",
    ),
    attr("familyName", Type::String, "The family name."),
    attr("givenName", Type::String, "The given name."),
];

const EMAIL_SUB: &[Attr] = &[
    attr("value", Type::String, "The e-mail address."),
    Attr {
        canonical: &["work", "home", "other"],
        ..attr("type", Type::String, "What the address is for.")
    },
    attr(
        "primary",
        Type::Boolean,
        "The primary address; at most one.",
    ),
];

const USER_GROUP_SUB: &[Attr] = &[
    Attr {
        case_exact: true,
        mutability: "readOnly",
        ..attr("value", Type::String, "The group's id.")
    },
    Attr {
        mutability: "readOnly",
        references: &["Group"],
        ..attr("$ref", Type::Reference, "The group's URI.")
    },
    Attr {
        mutability: "readOnly",
        ..attr("display", Type::String, "The group's display name.")
    },
];

/// The User attributes served.
pub const USER_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        uniqueness: "server",
        ..attr(
            "userName",
            Type::String,
            "Unique identifier for the user, typically the sign-in address.",
        )
    },
    Attr {
        sub: USER_NAME_SUB,
        ..attr("name", Type::Complex, "The components of the user's name.")
    },
    attr("displayName", Type::String, "The name shown for the user."),
    Attr {
        multi: true,
        sub: EMAIL_SUB,
        ..attr("emails", Type::Complex, "E-mail addresses of the user.")
    },
    attr(
        "active",
        Type::Boolean,
        "Whether the user may sign in; false deprovisions the user.",
    ),
    Attr {
        multi: true,
        mutability: "readOnly",
        sub: USER_GROUP_SUB,
        ..attr("groups", Type::Complex, "The groups the user belongs to.")
    },
];

const MEMBER_SUB: &[Attr] = &[
    Attr {
        case_exact: true,
        mutability: "immutable",
        ..attr("value", Type::String, "The member's id.")
    },
    Attr {
        mutability: "immutable",
        references: &["User", "Group"],
        ..attr("$ref", Type::Reference, "The member's URI.")
    },
    Attr {
        mutability: "immutable",
        canonical: &["User", "Group"],
        ..attr("type", Type::String, "The member's resource type.")
    },
];

/// The Group attributes served.
pub const GROUP_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        ..attr("displayName", Type::String, "The group's name.")
    },
    Attr {
        multi: true,
        sub: MEMBER_SUB,
        ..attr("members", Type::Complex, "The group's members.")
    },
];

/// The attributes of a kind.
pub const fn attrs(kind: ScimKind) -> &'static [Attr] {
    match kind {
        ScimKind::User => USER_ATTRS,
        ScimKind::Group => GROUP_ATTRS,
    }
}

/// The schema URN of a kind.
pub const fn schema_urn(kind: ScimKind) -> &'static str {
    match kind {
        ScimKind::User => USER_SCHEMA,
        ScimKind::Group => GROUP_SCHEMA,
    }
}

/// The definition named `name` (any case) among `attrs`.
pub fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// A boolean as sent: JSON `true`/`false`, or Entra ID's `"True"`/`"False"`.
pub fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// One value of an attribute (one element, for a multi-valued one) with canonical names;
/// `None` when it has the wrong shape or nothing left.
pub fn canonical_value(attr: &Attr, value: &Value) -> Option<Value> {
    match attr.kind {
        Type::Boolean => boolean(value).map(Value::Bool),
        Type::String | Type::Reference => match value {
            Value::String(s) => Some(Value::String(s.clone())),
            Value::Number(n) => Some(Value::String(n.to_string())),
            _ => None,
        },
        Type::Complex => {
            let object = value.as_object()?;
            let mut out = Map::new();
            for (key, value) in object {
                if let Some(sub) = find(attr.sub, key)
                    && let Some(value) = canonical_value(sub, value)
                {
                    out.insert(sub.name.to_owned(), value);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
    }
}

/// A whole attribute's value with canonical names: multi-valued attributes become arrays (a
/// single value is wrapped). `None` when nothing is left.
pub fn canonical_attr(attr: &Attr, value: &Value) -> Option<Value> {
    if value.is_null() {
        return None;
    }
    if attr.multi {
        let items: Vec<Value> = match value {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| canonical_value(attr, v))
                .collect(),
            other => canonical_value(attr, other).into_iter().collect(),
        };
        (!items.is_empty()).then_some(Value::Array(items))
    } else {
        canonical_value(attr, value)
    }
}

/// The stored document of a request body: every served, writable attribute with canonical
/// names (keys may carry the schema URN, `urn:...:User:userName`); `id`, `meta`, `schemas`,
/// `externalId` and read-only attributes are left out, and unknown attributes ignored.
pub fn canonical(kind: ScimKind, body: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(object) = body.as_object() else {
        return out;
    };
    for (key, value) in object {
        let name = super::filter::strip_urn(key);
        let Some(attr) = find(attrs(kind), name) else {
            continue;
        };
        if attr.mutability == "readOnly" {
            continue;
        }
        if let Some(value) = canonical_attr(attr, value) {
            out.insert(attr.name.to_owned(), value);
        }
    }
    out
}

fn attr_json(attr: &Attr) -> Value {
    let mut out = json!({
        "name": attr.name,
        "type": match attr.kind {
            Type::String => "string",
            Type::Boolean => "boolean",
            Type::Reference => "reference",
            Type::Complex => "complex",
        },
        "multiValued": attr.multi,
        "description": attr.description,
        "required": attr.required,
        "caseExact": attr.case_exact,
        "mutability": attr.mutability,
        "returned": "default",
        "uniqueness": attr.uniqueness,
    });
    if !attr.sub.is_empty() {
        out["subAttributes"] = attr.sub.iter().map(attr_json).collect();
    }
    if !attr.canonical.is_empty() {
        out["canonicalValues"] = json!(attr.canonical);
    }
    if !attr.references.is_empty() {
        out["referenceTypes"] = json!(attr.references);
    }
    out
}

/// The `/Schemas/{id}` document of a kind; `base` is the SCIM base URL.
pub fn schema_document(kind: ScimKind, base: &str) -> Value {
    let urn = schema_urn(kind);
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": urn,
        "name": kind.resource_type(),
        "description": match kind {
            ScimKind::User => "User Account",
            ScimKind::Group => "Group",
        },
        "attributes": attrs(kind).iter().map(attr_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{urn}")},
    })
}

/// The `/ResourceTypes/{id}` document of a kind.
pub fn resource_type_document(kind: ScimKind, base: &str) -> Value {
    let name = kind.resource_type();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": name,
        "name": name,
        "endpoint": format!("/{}", kind.endpoint()),
        "description": match kind {
            ScimKind::User => "User Account",
            ScimKind::Group => "Group",
        },
        "schema": schema_urn(kind),
        "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{name}")},
    })
}

/// The `/ServiceProviderConfig` document.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/leadmaps/leadmaps",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "The workspace's SCIM directory token, as Authorization: Bearer.",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

/// A list response.
pub fn list(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "itemsPerPage": resources.len(),
        "startIndex": start_index,
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_canonical_documents() {
        let body = json!({
            "schemas": [USER_SCHEMA],
            "id": "forged",
            "USERNAME": "ada@example.com",
            "urn:ietf:params:scim:schemas:core:2.0:User:displayName": "Ada",
            "name": {"GivenName": "Ada", "unknown": 1},
            "emails": {"value": "ada@example.com", "Primary": "True"},
            "active": "False",
            "groups": [{"value": "g"}],
            "favouriteColour": "green",
        });
        let doc = canonical(ScimKind::User, &body);
        assert_eq!(
            Value::Object(doc),
            json!({
                "userName": "ada@example.com",
                "displayName": "Ada",
                "name": {"givenName": "Ada"},
                "emails": [{"value": "ada@example.com", "primary": true}],
                "active": false,
            })
        );
    }

    #[test]
    fn discovery_documents_name_every_attribute() {
        let schema = schema_document(ScimKind::User, "https://x/scim/v2");
        let names: Vec<&str> = schema["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "userName",
                "name",
                "displayName",
                "emails",
                "active",
                "groups"
            ]
        );
        assert_eq!(
            service_provider_config("https://x")["filter"]["supported"],
            json!(true)
        );
        assert_eq!(
            resource_type_document(ScimKind::Group, "b")["endpoint"],
            json!("/Groups")
        );
    }
}
