//! The SCIM protocol over a [`crate::store::Store`]: what the HTTP routes call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::filter::{self, get_ci};
use super::schema::{self, MAX_RESULTS};
use super::{Provisioning, ScimKind, ScimOp, ScimResource, ScimWrite};
use crate::audit::{AuditAction, AuditDraft, Target};
use crate::auth::keys::ApiKeyRecord;
use crate::auth::tokens::{TokenHasher, api_key};
use crate::clock::Clock;
use crate::crypto::{SecretContext, Vault};
use crate::error::{Error, ErrorKind, Result};
use crate::mail::Address;
use crate::policy::Feature;
use crate::store::Store;
use crate::tenancy::{Action, Denied, Gate, Principal, Scope};

/// A SCIM error response (RFC 7644 section 3.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// The HTTP status.
    pub status: u16,
    /// The `scimType`, for 400 and 409.
    pub scim_type: Option<&'static str>,
    /// A human-readable reason (never a token, an address or a value sent).
    pub detail: String,
}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    /// 404 for a resource or an endpoint.
    pub fn not_found() -> Self {
        Self::new(404, None, "resource not found")
    }

    /// The error's JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "schemas": [schema::ERROR],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type);
        }
        body
    }

    /// Maps a leadmaps error.
    pub fn from_error(error: &Error) -> Self {
        match error.kind() {
            ErrorKind::NotFound => Self::not_found(),
            ErrorKind::Conflict => Self::new(
                409,
                Some("uniqueness"),
                "a resource with this name or id exists, or it changed meanwhile",
            ),
            ErrorKind::Denied => Self::new(403, None, error.to_string()),
            ErrorKind::Invalid => {
                let message = error.to_string();
                let detail = message.trim_start_matches("invalid input: ");
                let scim_type = if detail.starts_with("invalid filter") {
                    "invalidFilter"
                } else if detail.starts_with("invalid path") {
                    "invalidPath"
                } else if detail.starts_with("mutability") {
                    "mutability"
                } else if detail.starts_with("noTarget") {
                    "noTarget"
                } else if detail.starts_with("invalid syntax") {
                    "invalidSyntax"
                } else {
                    "invalidValue"
                };
                Self::new(400, Some(scim_type), detail)
            }
            ErrorKind::Unavailable => Self::new(503, None, "try again later"),
            _ => Self::new(500, None, "internal error"),
        }
    }
}

impl From<Error> for ScimError {
    fn from(error: Error) -> Self {
        Self::from_error(&error)
    }
}

/// A successful SCIM response.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimReply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body; none for 204.
    pub body: Option<Value>,
    /// The `Location` header, for created resources.
    pub location: Option<String>,
}

impl ScimReply {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
            location: None,
        }
    }
}

/// List and projection parameters (query string or a `.search` body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScimQuery {
    /// `filter`.
    pub filter: Option<String>,
    /// `startIndex` (1-based).
    pub start_index: Option<usize>,
    /// `count`.
    pub count: Option<usize>,
    /// `attributes`, comma-separated.
    pub attributes: Option<String>,
    /// `excludedAttributes`, comma-separated.
    pub excluded_attributes: Option<String>,
}

/// A directory token just made: show it once.
#[derive(Debug)]
pub struct CreatedToken {
    /// The stored key.
    pub record: ApiKeyRecord,
    /// The token (`lm_<id>_<secret>`).
    pub key: api_key::NewApiKey,
}

/// The SCIM service of every workspace.
pub struct Directory {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    hasher: TokenHasher,
    gate: Gate,
    clock: Arc<dyn Clock>,
    base_url: String,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn time_text(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn split_list(list: Option<&String>) -> Vec<String> {
    list.map(|l| {
        l.split(',')
            .map(|a| filter::strip_urn(a.trim()).to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// Applies `attributes` / `excludedAttributes`: `id` and `schemas` always stay.
fn project(mut resource: Value, query: &ScimQuery) -> Value {
    let include = split_list(query.attributes.as_ref());
    let exclude = split_list(query.excluded_attributes.as_ref());
    if let Some(object) = resource.as_object_mut() {
        object.retain(|key, _| {
            let key = key.to_ascii_lowercase();
            if key == "id" || key == "schemas" {
                return true;
            }
            let named = |list: &[String]| {
                list.iter()
                    .any(|a| a == &key || a.split('.').next() == Some(key.as_str()))
            };
            (include.is_empty() || named(&include)) && !named(&exclude)
        });
    }
    resource
}

impl Directory {
    /// The service; `base_url` is the SCIM base (e.g. `https://app.example/scim/v2`).
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        hasher: TokenHasher,
        gate: Gate,
        clock: Arc<dyn Clock>,
        base_url: impl Into<String>,
    ) -> Self {
        Self {
            store,
            vault,
            hasher,
            gate,
            clock,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The SCIM base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Makes a directory token for the scope's workspace: an API key whose only action is
    /// [`Action::DirectorySync`], recorded as `scim.token_created`. Requires
    /// [`Action::MemberManage`] and a plan with [`Feature::Scim`].
    ///
    /// # Errors
    /// [`Denied::FeatureNotInPlan`] below Business; [`Error::Invalid`] for a bad name.
    pub async fn create_token(&self, scope: &Scope, name: &str) -> Result<CreatedToken> {
        scope.require(Action::MemberManage)?;
        let settings = self.store.sso_settings(scope).await?;
        crate::sso::require_feature(&settings, Feature::Scim)?;
        if name.trim().is_empty()
            || name.len() > crate::auth::keys::MAX_NAME
            || name.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "token name must be 1 to 200 printable bytes",
            ));
        }
        let key = api_key::generate();
        let row = key.id.to_string();
        let sealed = self
            .vault
            .seal(
                scope,
                &SecretContext::api_key(scope.workspace(), &row),
                key.token.as_bytes(),
            )
            .await?;
        let now = self.clock.now();
        let record = ApiKeyRecord {
            id: key.id,
            workspace: scope.workspace(),
            name: name.to_owned(),
            actions: vec![Action::DirectorySync],
            digest: self.hasher.digest(key.token.as_bytes()),
            sealed,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert_api_key(scope, &record).await?;
        let draft = AuditDraft::new(
            scope,
            AuditAction::ScimTokenCreated,
            Target::api_key(key.id),
        )
        .with_after(json!({ "name": name }));
        self.store.append_audit(scope, draft, now).await?;
        Ok(CreatedToken { record, key })
    }

    /// The directory's scope for a principal from a bearer token, if its workspace's plan
    /// includes SCIM. A refusal by plan is recorded as `scim.request_failed`.
    ///
    /// # Errors
    /// 401 for a principal that is not a directory token; 403 naming the plan.
    pub async fn authorize(&self, principal: &Principal) -> Result<Scope, ScimError> {
        let unauthorized = || ScimError::new(401, None, "a SCIM directory token is required");
        let Principal::ApiKey { workspace, .. } = principal else {
            return Err(unauthorized());
        };
        let scope = self
            .gate
            .authorize(principal, *workspace, Action::DirectorySync)
            .map_err(|_| unauthorized())?;
        let settings = self.store.sso_settings(&scope).await?;
        if let Err(denied) = settings.plan.require(Feature::Scim) {
            self.failed(&scope, "AUTH", "-", 403).await;
            return Err(ScimError::new(403, None, denied.to_string()));
        }
        Ok(scope)
    }

    /// Records a refused request with a valid token (`scim.request_failed`); best effort.
    pub async fn failed(&self, scope: &Scope, method: &str, resource: &str, status: u16) {
        let draft = AuditDraft::new(
            scope,
            AuditAction::ScimRequestFailed,
            Target::workspace(scope.workspace()),
        )
        .with_after(json!({ "method": method, "resource": resource, "status": status }));
        // Best effort: core has no logger, and the refusal itself still reaches the directory
        // in the response.
        let _ = self
            .store
            .append_audit(scope, draft, self.clock.now())
            .await;
    }

    fn location(&self, kind: ScimKind, id: Uuid) -> String {
        format!("{}/{}/{id}", self.base_url, kind.endpoint())
    }

    /// The RFC 7643 JSON of a resource. `groups` maps user ids to the groups they are in;
    /// `existing` holds every live resource id (dangling group members are left out).
    fn render(
        &self,
        resource: &ScimResource,
        groups: &BTreeMap<String, Vec<(Uuid, String)>>,
        existing: &BTreeSet<String>,
    ) -> Value {
        let mut out = Map::new();
        out.insert("schemas".into(), json!([schema::schema_urn(resource.kind)]));
        out.insert("id".into(), json!(resource.id.to_string()));
        if let Some(external) = &resource.external_id {
            out.insert("externalId".into(), json!(external));
        }
        if let Some(document) = resource.document.as_object() {
            for (key, value) in document {
                out.insert(key.clone(), value.clone());
            }
        }
        match resource.kind {
            ScimKind::User => {
                if let Some(list) = groups.get(&resource.id.to_string()) {
                    let list: Vec<Value> = list
                        .iter()
                        .map(|(id, name)| {
                            json!({
                                "value": id.to_string(),
                                "$ref": self.location(ScimKind::Group, *id),
                                "display": name,
                            })
                        })
                        .collect();
                    out.insert("groups".into(), Value::Array(list));
                }
            }
            ScimKind::Group => {
                if let Some(Value::Array(members)) = out.get_mut("members") {
                    members.retain(|m| {
                        get_ci(m, "value")
                            .and_then(Value::as_str)
                            .is_none_or(|v| existing.contains(v))
                    });
                    if members.is_empty() {
                        out.remove("members");
                    }
                }
            }
        }
        out.insert(
            "meta".into(),
            json!({
                "resourceType": resource.kind.resource_type(),
                "created": time_text(resource.created_at),
                "lastModified": time_text(resource.updated_at),
                "location": self.location(resource.kind, resource.id),
                "version": format!("W/\"{}\"", resource.version),
            }),
        );
        Value::Object(out)
    }

    /// What rendering needs besides the resource: groups by member, and live ids.
    async fn context(
        &self,
        scope: &Scope,
    ) -> Result<(BTreeMap<String, Vec<(Uuid, String)>>, BTreeSet<String>)> {
        let users = self.store.scim_resources(scope, ScimKind::User).await?;
        let groups = self.store.scim_resources(scope, ScimKind::Group).await?;
        let mut by_member: BTreeMap<String, Vec<(Uuid, String)>> = BTreeMap::new();
        for group in &groups {
            if let Some(Value::Array(members)) = group.document.get("members") {
                for member in members {
                    if let Some(value) = get_ci(member, "value").and_then(Value::as_str) {
                        by_member
                            .entry(value.to_owned())
                            .or_default()
                            .push((group.id, group.name.clone()));
                    }
                }
            }
        }
        let existing = users
            .iter()
            .chain(&groups)
            .map(|r| r.id.to_string())
            .collect();
        Ok((by_member, existing))
    }

    async fn rendered(&self, scope: &Scope, resource: &ScimResource) -> Result<Value> {
        let (groups, existing) = self.context(scope).await?;
        Ok(self.render(resource, &groups, &existing))
    }

    fn parse_id(id: &str) -> Result<Uuid, ScimError> {
        Uuid::parse_str(id).map_err(|_| ScimError::not_found())
    }

    /// `GET /{Users|Groups}/{id}`.
    ///
    /// # Errors
    /// 404 for an unknown id.
    pub async fn get(
        &self,
        scope: &Scope,
        kind: ScimKind,
        id: &str,
        query: &ScimQuery,
    ) -> Result<ScimReply, ScimError> {
        let id = Self::parse_id(id)?;
        let resource = self
            .store
            .scim_resource(scope, kind, id)
            .await?
            .ok_or_else(ScimError::not_found)?;
        Ok(ScimReply::ok(project(
            self.rendered(scope, &resource).await?,
            query,
        )))
    }

    /// `GET /{Users|Groups}` and `POST /{Users|Groups}/.search`: filtered, paged, projected.
    ///
    /// # Errors
    /// 400 `invalidFilter` for a filter [`filter::parse`] refuses.
    pub async fn list(
        &self,
        scope: &Scope,
        kind: ScimKind,
        query: &ScimQuery,
    ) -> Result<ScimReply, ScimError> {
        let filter = query
            .filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(filter::parse)
            .transpose()?;
        let resources = self.store.scim_resources(scope, kind).await?;
        let (groups, existing) = self.context(scope).await?;
        let matching: Vec<Value> = resources
            .iter()
            .filter_map(|r| {
                let rendered = self.render(r, &groups, &existing);
                let keep = filter.as_ref().is_none_or(|f| {
                    // A user shown without `active` is active, and filters see it so.
                    let mut seen = rendered.clone();
                    if r.kind == ScimKind::User && seen.get("active").is_none() {
                        seen["active"] = json!(r.active);
                    }
                    f.matches(&seen)
                });
                keep.then_some(rendered)
            })
            .collect();
        let total = matching.len();
        let start = query.start_index.unwrap_or(1).max(1);
        let count = query.count.unwrap_or(MAX_RESULTS).min(MAX_RESULTS);
        let page: Vec<Value> = matching
            .into_iter()
            .skip(start - 1)
            .take(count)
            .map(|r| project(r, query))
            .collect();
        Ok(ScimReply::ok(schema::list(page, total, start)))
    }

    /// The verified domains a user's address must be in to be linked: the OIDC connection's.
    async fn verified_domains(&self, scope: &Scope) -> Result<Vec<String>> {
        Ok(self
            .store
            .oidc_connection(scope)
            .await?
            .map(|c| c.domains)
            .unwrap_or_default())
    }

    /// The address a user resource is linked by: its primary e-mail, else its first, else its
    /// `userName`; only if it is in one of the workspace's verified domains.
    fn address(resource: &ScimResource, domains: &[String]) -> Option<Address> {
        let emails = resource.document.get("emails").and_then(Value::as_array);
        let primary = emails.and_then(|e| {
            e.iter()
                .find(|m| m.get("primary") == Some(&Value::Bool(true)))
                .or_else(|| e.first())
        });
        let raw = primary
            .and_then(|m| m.get("value"))
            .and_then(Value::as_str)
            .unwrap_or(&resource.name);
        Address::parse(raw)
            .ok()
            .filter(|a| domains.iter().any(|d| d == a.domain()))
    }

    /// Builds a resource from a request body.
    fn build(
        kind: ScimKind,
        body: &Value,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<ScimResource, ScimError> {
        let mut document = schema::canonical(kind, body);
        let name_attr = match kind {
            ScimKind::User => "userName",
            ScimKind::Group => "displayName",
        };
        let name = document
            .get(name_attr)
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                ScimError::new(
                    400,
                    Some("invalidValue"),
                    format!("{name_attr} is required"),
                )
            })?
            .to_owned();
        // `active` stays in the document as sent (a user without it is active, and is shown
        // without it); groups have none.
        let active = match kind {
            ScimKind::User => document
                .get("active")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            ScimKind::Group => {
                document.remove("active");
                true
            }
        };
        let external_id = match get_ci(body, "externalId") {
            Some(Value::String(e)) => Some(e.clone()),
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(ScimError::new(
                    400,
                    Some("invalidValue"),
                    "externalId is a string",
                ));
            }
        };
        let resource = ScimResource {
            kind,
            id,
            name,
            external_id,
            active,
            user: None,
            document: Value::Object(document),
            created_at: at,
            updated_at: at,
            version: 1,
        };
        resource.validate()?;
        Ok(resource)
    }

    /// What a change from `old` to `new` does to the linked user.
    fn provisioning(
        old: Option<&ScimResource>,
        new: &ScimResource,
        domains: &[String],
    ) -> Provisioning {
        if new.kind != ScimKind::User {
            return Provisioning::Keep;
        }
        let linked = old.and_then(|o| o.user);
        match (new.active, linked) {
            (false, Some(user)) => Provisioning::Revoke(user),
            (true, None) => {
                Self::address(new, domains).map_or(Provisioning::Keep, Provisioning::Admit)
            }
            _ => Provisioning::Keep,
        }
    }

    async fn write(
        &self,
        scope: &Scope,
        write: ScimWrite,
        status: u16,
    ) -> Result<ScimReply, ScimError> {
        let created = matches!(write.op, ScimOp::Create);
        let deleted = matches!(write.op, ScimOp::Delete { .. });
        let outcome = self
            .store
            .scim_write(scope, &write, self.clock.now())
            .await?;
        if deleted {
            return Ok(ScimReply {
                status: 204,
                body: None,
                location: None,
            });
        }
        let body = self.rendered(scope, &outcome.resource).await?;
        Ok(ScimReply {
            status,
            body: Some(body),
            location: created.then(|| self.location(outcome.resource.kind, outcome.resource.id)),
        })
    }

    /// `POST /{Users|Groups}`.
    ///
    /// # Errors
    /// 400 for a missing name; 409 `uniqueness` for a taken one.
    pub async fn create(
        &self,
        scope: &Scope,
        kind: ScimKind,
        body: &Value,
    ) -> Result<ScimReply, ScimError> {
        let resource = Self::build(kind, body, Uuid::new_v4(), self.clock.now())?;
        let domains = self.verified_domains(scope).await?;
        let provisioning = Self::provisioning(None, &resource, &domains);
        self.write(
            scope,
            ScimWrite {
                op: ScimOp::Create,
                resource,
                provisioning,
            },
            201,
        )
        .await
    }

    async fn existing(
        &self,
        scope: &Scope,
        kind: ScimKind,
        id: &str,
    ) -> Result<ScimResource, ScimError> {
        let id = Self::parse_id(id)?;
        self.store
            .scim_resource(scope, kind, id)
            .await?
            .ok_or_else(ScimError::not_found)
    }

    async fn replace_with(
        &self,
        scope: &Scope,
        old: ScimResource,
        body: &Value,
    ) -> Result<ScimReply, ScimError> {
        let now = self.clock.now();
        let mut new = Self::build(old.kind, body, old.id, now)?;
        new.created_at = old.created_at;
        new.user = old.user;
        new.version = old.version + 1;
        let domains = self.verified_domains(scope).await?;
        let provisioning = Self::provisioning(Some(&old), &new, &domains);
        self.write(
            scope,
            ScimWrite {
                op: ScimOp::Replace {
                    expected: old.version,
                },
                resource: new,
                provisioning,
            },
            200,
        )
        .await
    }

    /// `PUT /{Users|Groups}/{id}`: replaces every writable attribute.
    ///
    /// # Errors
    /// 404, 400, 409.
    pub async fn replace(
        &self,
        scope: &Scope,
        kind: ScimKind,
        id: &str,
        body: &Value,
    ) -> Result<ScimReply, ScimError> {
        let old = self.existing(scope, kind, id).await?;
        self.replace_with(scope, old, body).await
    }

    /// `PATCH /{Users|Groups}/{id}` (see [`super::patch`]).
    ///
    /// # Errors
    /// 404; 400 with the `scimType` of the broken rule; 409.
    pub async fn patch(
        &self,
        scope: &Scope,
        kind: ScimKind,
        id: &str,
        body: &Value,
    ) -> Result<ScimReply, ScimError> {
        let old = self.existing(scope, kind, id).await?;
        let mut current = old.document.as_object().cloned().unwrap_or_default();
        if let Some(external) = &old.external_id {
            current.insert("externalId".into(), json!(external));
        }
        super::patch::apply(kind, &mut current, body)?;
        self.replace_with(scope, old, &Value::Object(current)).await
    }

    /// `DELETE /{Users|Groups}/{id}`: a user's deletion deprovisions the linked user.
    ///
    /// # Errors
    /// 404.
    pub async fn delete(
        &self,
        scope: &Scope,
        kind: ScimKind,
        id: &str,
    ) -> Result<ScimReply, ScimError> {
        let old = self.existing(scope, kind, id).await?;
        let provisioning = match old.user {
            Some(user) => Provisioning::Revoke(user),
            None => Provisioning::Keep,
        };
        self.write(
            scope,
            ScimWrite {
                op: ScimOp::Delete {
                    expected: old.version,
                },
                resource: old,
                provisioning,
            },
            204,
        )
        .await
    }

    /// `GET /ServiceProviderConfig`.
    pub fn service_provider_config(&self) -> Value {
        schema::service_provider_config(&self.base_url)
    }

    /// `GET /Schemas` or `/Schemas/{id}`.
    ///
    /// # Errors
    /// 404 for an unknown id.
    pub fn schemas(&self, id: Option<&str>) -> Result<Value, ScimError> {
        let all =
            [ScimKind::User, ScimKind::Group].map(|k| schema::schema_document(k, &self.base_url));
        match id {
            None => Ok(schema::list(all.to_vec(), 2, 1)),
            Some(id) => all
                .into_iter()
                .find(|s| s["id"] == id)
                .ok_or_else(ScimError::not_found),
        }
    }

    /// `GET /ResourceTypes` or `/ResourceTypes/{id}`.
    ///
    /// # Errors
    /// 404 for an unknown id.
    pub fn resource_types(&self, id: Option<&str>) -> Result<Value, ScimError> {
        let all = [ScimKind::User, ScimKind::Group]
            .map(|k| schema::resource_type_document(k, &self.base_url));
        match id {
            None => Ok(schema::list(all.to_vec(), 2, 1)),
            Some(id) => all
                .into_iter()
                .find(|s| s["id"] == id)
                .ok_or_else(ScimError::not_found),
        }
    }

    /// Reads `filter`, `startIndex`, `count`, `attributes` and `excludedAttributes` from a
    /// `.search` body.
    pub fn search_query(body: &Value) -> ScimQuery {
        let text = |name: &str| match get_ci(body, name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        };
        let number = |name: &str| {
            get_ci(body, name)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
        };
        ScimQuery {
            filter: text("filter"),
            start_index: number("startIndex"),
            count: number("count"),
            attributes: text("attributes"),
            excluded_attributes: text("excludedAttributes"),
        }
    }
}

/// A [`Denied`] for a plan, as a SCIM error.
impl From<Denied> for ScimError {
    fn from(denied: Denied) -> Self {
        Self::new(403, None, denied.to_string())
    }
}
