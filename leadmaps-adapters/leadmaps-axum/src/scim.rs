//! The SCIM 2.0 server (RFC 7644) under `/scim/v2`, for a workspace's identity provider.
//!
//! Every route takes the workspace's directory token as `Authorization: Bearer lm_...` (401
//! otherwise) and answers 403 with the reason when the workspace's plan does not include SCIM.
//! Resources: `/Users` and `/Groups` (GET with `filter`, `startIndex`, `count`, `attributes`,
//! `excludedAttributes`; POST; `/.search`; GET, PUT, PATCH and DELETE on `/{id}`), and the
//! discovery documents `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` (GET only: other
//! methods get 405). A path the server does not know gets a SCIM 404. Bodies and answers are
//! `application/scim+json`; refused writes with a valid token are audited as
//! `scim.request_failed`, and every change by the store with its own record.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leadmaps_core::auth::keys::ApiKeys;
use leadmaps_core::scim::{Directory, ScimError, ScimKind, ScimQuery, ScimReply};
use leadmaps_core::tenancy::Scope;
use serde::Deserialize;
use serde_json::Value;

/// What the SCIM routes share.
pub struct ScimState {
    directory: Arc<Directory>,
    keys: Arc<ApiKeys>,
}

impl std::fmt::Debug for ScimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimState").finish_non_exhaustive()
    }
}

impl ScimState {
    /// State over the directory service and the API-key service (directory tokens are API
    /// keys).
    pub fn new(directory: Arc<Directory>, keys: Arc<ApiKeys>) -> Self {
        Self { directory, keys }
    }
}

/// The SCIM media type.
pub const SCIM_JSON: &str = "application/scim+json";

fn scim_json(status: u16, body: &Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(error: &ScimError) -> Response {
    let mut response = scim_json(error.status, &error.to_json());
    if error.status == 401 {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn reply(reply: ScimReply) -> Response {
    let mut response = match &reply.body {
        Some(body) => scim_json(reply.status, body),
        None => StatusCode::from_u16(reply.status)
            .unwrap_or(StatusCode::NO_CONTENT)
            .into_response(),
    };
    if let Some(location) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn answer(result: Result<ScimReply, ScimError>) -> Response {
    match result {
        Ok(ok) => reply(ok),
        Err(e) => error(&e),
    }
}

/// The directory's scope for the request's bearer token.
async fn authorize(state: &ScimState, headers: &HeaderMap) -> Result<Scope, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let unauthorized = || {
        error(&ScimError {
            status: 401,
            scim_type: None,
            detail: "a SCIM directory token is required".into(),
        })
    };
    let Some(token) = token else {
        return Err(unauthorized());
    };
    let principal = match state.keys.authenticate(token).await {
        Ok(principal) => principal,
        Err(e) if e.kind() == leadmaps_core::ErrorKind::Invalid => return Err(unauthorized()),
        Err(e) => return Err(error(&ScimError::from_error(&e))),
    };
    state
        .directory
        .authorize(&principal)
        .await
        .map_err(|e| error(&e))
}

fn body_json(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body).map_err(|_| ScimError {
        status: 400,
        scim_type: Some("invalidSyntax"),
        detail: "the body is not JSON".into(),
    })
}

/// Records a refused write with a valid token, then answers.
async fn write_answer(
    state: &ScimState,
    scope: &Scope,
    method: &str,
    kind: ScimKind,
    result: Result<ScimReply, ScimError>,
) -> Response {
    if let Err(e) = &result
        && matches!(e.status, 400 | 403 | 409)
    {
        state
            .directory
            .failed(scope, method, kind.endpoint(), e.status)
            .await;
    }
    answer(result)
}

/// Query parameters of list and get routes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    filter: Option<String>,
    start_index: Option<usize>,
    count: Option<usize>,
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

impl From<ListParams> for ScimQuery {
    fn from(p: ListParams) -> Self {
        ScimQuery {
            filter: p.filter,
            start_index: p.start_index,
            count: p.count,
            attributes: p.attributes,
            excluded_attributes: p.excluded_attributes,
        }
    }
}

type Shared = State<Arc<ScimState>>;

async fn list_or_create(
    state: &ScimState,
    kind: ScimKind,
    method: Method,
    headers: &HeaderMap,
    params: ListParams,
    body: &Bytes,
) -> Response {
    let scope = match authorize(state, headers).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    if method == Method::POST {
        let body = match body_json(body) {
            Ok(body) => body,
            Err(e) => return error(&e),
        };
        let result = state.directory.create(&scope, kind, &body).await;
        write_answer(state, &scope, "POST", kind, result).await
    } else {
        answer(state.directory.list(&scope, kind, &params.into()).await)
    }
}

async fn one(
    state: &ScimState,
    kind: ScimKind,
    id: &str,
    method: Method,
    headers: &HeaderMap,
    params: ListParams,
    body: &Bytes,
) -> Response {
    let scope = match authorize(state, headers).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let directory = &state.directory;
    let parsed = || body_json(body);
    let (name, result) = match method {
        Method::GET => return answer(directory.get(&scope, kind, id, &params.into()).await),
        Method::PUT => match parsed() {
            Ok(body) => ("PUT", directory.replace(&scope, kind, id, &body).await),
            Err(e) => return error(&e),
        },
        Method::PATCH => match parsed() {
            Ok(body) => ("PATCH", directory.patch(&scope, kind, id, &body).await),
            Err(e) => return error(&e),
        },
        Method::DELETE => ("DELETE", directory.delete(&scope, kind, id).await),
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    write_answer(state, &scope, name, kind, result).await
}

async fn search(state: &ScimState, kind: ScimKind, headers: &HeaderMap, body: &Bytes) -> Response {
    let scope = match authorize(state, headers).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let body = match body_json(body) {
        Ok(body) => body,
        Err(e) => return error(&e),
    };
    let query = Directory::search_query(&body);
    answer(state.directory.list(&scope, kind, &query).await)
}

async fn discovery(
    state: &ScimState,
    headers: &HeaderMap,
    document: impl FnOnce(&Directory) -> Result<Value, ScimError>,
) -> Response {
    if let Err(response) = authorize(state, headers).await {
        return response;
    }
    match document(&state.directory) {
        Ok(body) => scim_json(200, &body),
        Err(e) => error(&e),
    }
}

async fn not_found() -> Response {
    error(&ScimError::not_found())
}

macro_rules! kind_routes {
    ($kind:expr, $list:ident, $search:ident, $one:ident) => {
        async fn $list(
            State(state): Shared,
            method: Method,
            headers: HeaderMap,
            Query(params): Query<ListParams>,
            body: Bytes,
        ) -> Response {
            list_or_create(&state, $kind, method, &headers, params, &body).await
        }

        async fn $search(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
            search(&state, $kind, &headers, &body).await
        }

        async fn $one(
            State(state): Shared,
            Path(id): Path<String>,
            method: Method,
            headers: HeaderMap,
            Query(params): Query<ListParams>,
            body: Bytes,
        ) -> Response {
            one(&state, $kind, &id, method, &headers, params, &body).await
        }
    };
}

kind_routes!(ScimKind::User, users, users_search, user);
kind_routes!(ScimKind::Group, groups, groups_search, group);

async fn service_provider_config(State(state): Shared, headers: HeaderMap) -> Response {
    discovery(&state, &headers, |d| Ok(d.service_provider_config())).await
}

async fn schemas(State(state): Shared, headers: HeaderMap) -> Response {
    discovery(&state, &headers, |d| d.schemas(None)).await
}

async fn schema(State(state): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    discovery(&state, &headers, |d| d.schemas(Some(&id))).await
}

async fn resource_types(State(state): Shared, headers: HeaderMap) -> Response {
    discovery(&state, &headers, |d| d.resource_types(None)).await
}

async fn resource_type(
    State(state): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    discovery(&state, &headers, |d| d.resource_types(Some(&id))).await
}

/// Searching several resource types at once is not supported: 501, as RFC 7644 section 3.12
/// says for an unsupported operation.
async fn root_search() -> Response {
    error(&ScimError {
        status: 501,
        scim_type: None,
        detail: "search /Users/.search or /Groups/.search instead".into(),
    })
}

/// The SCIM routes, under `/scim/v2`.
pub fn scim_routes(state: Arc<ScimState>) -> Router {
    let inner = Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/.search", post(root_search))
        .route("/Users", get(users).post(users))
        .route("/Users/.search", post(users_search))
        .route("/Users/{id}", get(user).put(user).patch(user).delete(user))
        .route("/Groups", get(groups).post(groups))
        .route("/Groups/.search", post(groups_search))
        .route(
            "/Groups/{id}",
            get(group).put(group).patch(group).delete(group),
        )
        .fallback(not_found)
        .with_state(state);
    Router::new().nest("/scim/v2", inner)
}
