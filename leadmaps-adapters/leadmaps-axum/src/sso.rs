//! Workspace routes for enterprise identity, on the dashboard's credentials (a member's session
//! or an API key) and gate:
//!
//! - `GET /api/v1/workspaces/{id}/sso` (workspace.read): the plan, the features it includes,
//!   whether SSO is enforced, and the OIDC connection (issuer, client id, domains; never the
//!   secret);
//! - `PUT /api/v1/workspaces/{id}/sso/oidc` (secret.write): configure the OIDC identity provider
//!   (the client secret is sealed before it is stored); `DELETE` removes it;
//! - `PUT /api/v1/workspaces/{id}/sso/enforce` (member.manage): `{"enforce": bool}`;
//! - `POST /api/v1/workspaces/{id}/scim/tokens` (member.manage): a SCIM directory token, shown
//!   once.
//!
//! Below the Business plan, configuring SSO or SCIM answers 403 with the reason
//! (`"Single sign-on is available on the Business plan and above"`). Every change is audited by
//! the store in the same transaction.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use leadmaps_core::crypto::Vault;
use leadmaps_core::scim::Directory;
use leadmaps_core::tenancy::Action;
use serde::Deserialize;
use serde_json::json;

use crate::dashboard::{Caller, DashboardState, scope, status, store_error};
use crate::headers::json_body;

/// What the enterprise identity routes share.
pub struct SsoAdminState {
    dashboard: Arc<DashboardState>,
    vault: Arc<Vault>,
    directory: Arc<Directory>,
}

impl std::fmt::Debug for SsoAdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoAdminState").finish_non_exhaustive()
    }
}

impl SsoAdminState {
    /// State over the dashboard's (credentials, store, gate), the vault that seals client
    /// secrets and the directory service that makes SCIM tokens.
    pub fn new(
        dashboard: Arc<DashboardState>,
        vault: Arc<Vault>,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            dashboard,
            vault,
            directory,
        }
    }
}

/// Every route, for tests that walk them all: (method, path template, action).
pub const SSO_ROUTES: &[(&str, &str, Action)] = &[
    ("GET", "/api/v1/workspaces/{id}/sso", Action::WorkspaceRead),
    (
        "PUT",
        "/api/v1/workspaces/{id}/sso/oidc",
        Action::SecretWrite,
    ),
    (
        "DELETE",
        "/api/v1/workspaces/{id}/sso/oidc",
        Action::SecretWrite,
    ),
    (
        "PUT",
        "/api/v1/workspaces/{id}/sso/enforce",
        Action::MemberManage,
    ),
    (
        "POST",
        "/api/v1/workspaces/{id}/scim/tokens",
        Action::MemberManage,
    ),
];

/// The enterprise identity routes.
pub fn sso_admin_routes(state: Arc<SsoAdminState>) -> Router {
    Router::new()
        .route("/api/v1/workspaces/{id}/sso", get(settings))
        .route(
            "/api/v1/workspaces/{id}/sso/oidc",
            put(configure).delete(remove),
        )
        .route("/api/v1/workspaces/{id}/sso/enforce", put(enforce))
        .route("/api/v1/workspaces/{id}/scim/tokens", post(scim_token))
        .with_state(state)
}

/// A store error; invalid input with its reason (the plan's reason comes from [`store_error`]).
fn refused(error: &leadmaps_core::Error) -> Response {
    match error {
        leadmaps_core::Error::Invalid(message) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": message })),
        )
            .into_response(),
        other => store_error(other),
    }
}

async fn settings(
    State(state): State<Arc<SsoAdminState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Response {
    let d = &state.dashboard;
    let scope = match scope(d, &caller, &id, Action::WorkspaceRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let settings = match d.store.sso_settings(&scope).await {
        Ok(settings) => settings,
        Err(e) => return store_error(&e),
    };
    let oidc = match d.store.oidc_connection(&scope).await {
        Ok(oidc) => oidc,
        Err(e) => return store_error(&e),
    };
    axum::Json(json!({
        "plan": settings.plan.as_str(),
        "features": settings.plan.features().iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "enforce_sso": settings.enforce_sso,
        "oidc": oidc.map(|c| c.to_json()),
    }))
    .into_response()
}

/// Body of the OIDC route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcBody {
    issuer: String,
    client_id: String,
    client_secret: String,
    domains: Vec<String>,
}

async fn configure(
    State(state): State<Arc<SsoAdminState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let d = &state.dashboard;
    let scope = match scope(d, &caller, &id, Action::SecretWrite).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let body: OidcBody = match json_body(&caller.headers, &body, "invalid request") {
        Ok(body) => body,
        Err((code, message)) => return status(code, message),
    };
    let secret = zeroize::Zeroizing::new(body.client_secret.into_bytes());
    match leadmaps_core::sso::configure_oidc(
        &*d.store,
        &state.vault,
        &scope,
        &body.issuer,
        &body.client_id,
        &secret,
        &body.domains,
        d.gate.now(),
    )
    .await
    {
        Ok(_) => axum::Json(json!({"status": "configured"})).into_response(),
        Err(e) => refused(&e),
    }
}

async fn remove(
    State(state): State<Arc<SsoAdminState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Response {
    let d = &state.dashboard;
    let scope = match scope(d, &caller, &id, Action::SecretWrite).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match d.store.delete_oidc_connection(&scope, d.gate.now()).await {
        Ok(Some(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(None) => status(StatusCode::NOT_FOUND, "not found"),
        Err(e) => refused(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnforceBody {
    enforce: bool,
}

async fn enforce(
    State(state): State<Arc<SsoAdminState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let d = &state.dashboard;
    let scope = match scope(d, &caller, &id, Action::MemberManage).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let body: EnforceBody = match json_body(&caller.headers, &body, "invalid request") {
        Ok(body) => body,
        Err((code, message)) => return status(code, message),
    };
    match d
        .store
        .set_sso_enforced(&scope, body.enforce, d.gate.now())
        .await
    {
        Ok(_) => axum::Json(json!({"enforce_sso": body.enforce})).into_response(),
        Err(e) => refused(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
}

async fn scim_token(
    State(state): State<Arc<SsoAdminState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let d = &state.dashboard;
    let scope = match scope(d, &caller, &id, Action::MemberManage).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let body: TokenBody = match json_body(&caller.headers, &body, "invalid request") {
        Ok(body) => body,
        Err((code, message)) => return status(code, message),
    };
    match state.directory.create_token(&scope, &body.name).await {
        Ok(created) => {
            let mut response = (
                StatusCode::CREATED,
                axum::Json(json!({
                    "id": created.record.id.to_string(),
                    "token": &*created.key.token,
                    "scim_base_url": state.directory.base_url(),
                })),
            )
                .into_response();
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(e) => refused(&e),
    }
}
