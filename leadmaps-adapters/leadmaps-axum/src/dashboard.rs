//! The workspace API (read side, for now) behind API-key authentication.
//!
//! Every route goes request -> `Authorization: Bearer lm_...` -> `Principal` -> the gate ->
//! `Scope` -> the store. 401 without a valid key; 404 for a workspace the key does not belong to
//! (existence is not revealed); 403 for an action the key lacks.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use leadmaps_core::auth::keys::ApiKeys;
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::{Action, Denied, Gate, Scope, WorkspaceId};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

/// What the workspace routes share.
pub struct DashboardState {
    store: Arc<dyn Store>,
    keys: Arc<ApiKeys>,
    gate: Gate,
}

impl std::fmt::Debug for DashboardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardState").finish_non_exhaustive()
    }
}

impl DashboardState {
    /// State over a store, the API-key service and the gate.
    pub fn new(store: Arc<dyn Store>, keys: Arc<ApiKeys>, gate: Gate) -> Self {
        Self { store, keys, gate }
    }
}

/// Every workspace route, for tests that walk them all: (method, path template, action).
pub const ROUTES: &[(&str, &str, Action)] = &[
    ("GET", "/api/v1/workspaces/{id}", Action::WorkspaceRead),
    (
        "GET",
        "/api/v1/workspaces/{id}/sites",
        Action::WorkspaceRead,
    ),
    ("GET", "/api/v1/workspaces/{id}/events", Action::EventRead),
    ("GET", "/api/v1/workspaces/{id}/drops", Action::EventRead),
];

/// The workspace routes.
pub fn dashboard_routes(state: Arc<DashboardState>) -> Router {
    Router::new()
        .route("/api/v1/workspaces/{id}", get(workspace))
        .route("/api/v1/workspaces/{id}/sites", get(sites))
        .route("/api/v1/workspaces/{id}/events", get(events))
        .route("/api/v1/workspaces/{id}/drops", get(drops))
        .with_state(state)
}

fn status(code: StatusCode, message: &'static str) -> Response {
    let mut response = (code, axum::Json(json!({ "error": message }))).into_response();
    if code == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn store_error(error: &leadmaps_core::Error) -> Response {
    use leadmaps_core::ErrorKind;
    match error.kind() {
        ErrorKind::NotFound => status(StatusCode::NOT_FOUND, "not found"),
        ErrorKind::Denied => status(StatusCode::FORBIDDEN, "not permitted"),
        ErrorKind::Invalid => status(StatusCode::BAD_REQUEST, "invalid request"),
        ErrorKind::Unavailable => status(StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
        _ => {
            tracing::warn!(kind = ?error.kind(), "workspace route failed");
            status(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// Authenticates the request and asks the gate for `action` on the workspace in the path.
async fn scope(
    state: &DashboardState,
    headers: &HeaderMap,
    id: &str,
    action: Action,
) -> Result<Scope, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| status(StatusCode::UNAUTHORIZED, "an API key is required"))?;
    let principal = state
        .keys
        .authenticate(token.trim())
        .await
        .map_err(|e| match e.kind() {
            leadmaps_core::ErrorKind::Invalid => {
                status(StatusCode::UNAUTHORIZED, "invalid API key")
            }
            _ => store_error(&e),
        })?;
    let Ok(workspace) = id.parse::<WorkspaceId>() else {
        return Err(status(StatusCode::NOT_FOUND, "not found"));
    };
    state
        .gate
        .authorize(&principal, workspace, action)
        .map_err(|denied| match denied {
            // Do not confirm that someone else's workspace exists.
            Denied::NotAMember | Denied::StaffNeedsGrant => {
                status(StatusCode::NOT_FOUND, "not found")
            }
            _ => status(StatusCode::FORBIDDEN, "this key does not allow that"),
        })
}

async fn workspace(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let scope = match scope(&state, &headers, &id, Action::WorkspaceRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match state.store.workspace(&scope).await {
        Ok(ws) => axum::Json(json!({"id": ws.id, "name": ws.name, "region": ws.region.as_str()}))
            .into_response(),
        Err(e) => store_error(&e),
    }
}

async fn sites(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let scope = match scope(&state, &headers, &id, Action::WorkspaceRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match state.store.sites(&scope).await {
        Ok(sites) => {
            axum::Json(json!({"sites": sites.iter().map(|s| &s.domain).collect::<Vec<_>>()}))
                .into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// Query of the events route: a window in Unix seconds and a page size.
#[derive(Debug, Deserialize)]
struct Window {
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<u32>,
}

async fn events(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    Query(window): Query<Window>,
    headers: HeaderMap,
) -> Response {
    let scope = match scope(&state, &headers, &id, Action::EventRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let at = |t: Option<i64>, default: OffsetDateTime| {
        t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .unwrap_or(default)
    };
    let from = at(window.from, OffsetDateTime::UNIX_EPOCH);
    let to = at(
        window.to,
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 200),
    );
    let limit = window.limit.unwrap_or(100).min(1000);
    match state.store.events(&scope, from, to, limit).await {
        Ok(events) => {
            let rows: Vec<_> = events
                .iter()
                .map(|e| {
                    json!({
                        "id": e.id.0, "name": e.name, "hostname": e.hostname, "pathname": e.pathname,
                        "referrer": e.referrer, "props": e.props, "received_at": e.received_at.unix_timestamp(),
                    })
                })
                .collect();
            axum::Json(json!({ "events": rows })).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn drops(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let scope = match scope(&state, &headers, &id, Action::EventRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match state.store.drop_counts(&scope).await {
        Ok(counts) => {
            let rows: Vec<_> =
                counts.iter().map(|d| json!({"day": d.day.to_string(), "reason": d.reason.code(), "count": d.count})).collect();
            axum::Json(json!({ "drops": rows })).into_response()
        }
        Err(e) => store_error(&e),
    }
}
