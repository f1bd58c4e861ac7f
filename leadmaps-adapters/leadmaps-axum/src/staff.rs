//! Staff impersonation over HTTP: a staff member with a second factor and a step-up grant opens
//! a time-boxed grant on a customer workspace with a reason; reads under it are recorded in the
//! customer's audit log before they happen; the grant can be closed early.
//!
//! Every route needs a staff session that passed a second factor (401 without a session, 403 for
//! anything else), checked before any input is looked at.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use leadmaps_core::ErrorKind;
use leadmaps_core::audit::Target;
use leadmaps_core::auth::impersonation::Impersonation;
use leadmaps_core::auth::staff::{SensitiveAction, staff_principal};
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::{Action, Denied, GrantId, Principal, Scope, WorkspaceId};
use serde::Deserialize;
use serde_json::json;

use crate::auth::AuthState;
use crate::dashboard::Window;

/// Every impersonation route, for tests that walk them all: (method, path).
pub const IMPERSONATION_ROUTES: &[(&str, &str)] = &[
    ("POST", "/staff/api/v1/workspaces/{id}/impersonation"),
    ("GET", "/staff/api/v1/impersonation/{grant}/workspace"),
    ("GET", "/staff/api/v1/impersonation/{grant}/events"),
    ("DELETE", "/staff/api/v1/impersonation/{grant}"),
];

/// What the impersonation routes share.
pub struct ImpersonationState {
    auth: Arc<AuthState>,
    impersonation: Arc<Impersonation>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ImpersonationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImpersonationState").finish_non_exhaustive()
    }
}

impl ImpersonationState {
    /// State over the staff sign-in state (sessions, step-up, gate), the grant service and the
    /// store the reads go to.
    pub fn new(
        auth: Arc<AuthState>,
        impersonation: Arc<Impersonation>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            auth,
            impersonation,
            store,
        }
    }
}

/// The impersonation routes ([`IMPERSONATION_ROUTES`]).
pub fn impersonation_routes(state: Arc<ImpersonationState>) -> Router {
    Router::new()
        .route(
            "/staff/api/v1/workspaces/{id}/impersonation",
            post(open_grant),
        )
        .route(
            "/staff/api/v1/impersonation/{grant}/workspace",
            get(read_workspace),
        )
        .route(
            "/staff/api/v1/impersonation/{grant}/events",
            get(read_events),
        )
        .route("/staff/api/v1/impersonation/{grant}", delete(close_grant))
        .with_state(state)
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

fn failed(e: &leadmaps_core::Error) -> Response {
    match e.kind() {
        ErrorKind::NotFound => error(StatusCode::NOT_FOUND, "not found"),
        ErrorKind::Invalid => error(StatusCode::BAD_REQUEST, &e.to_string()),
        ErrorKind::Conflict => error(StatusCode::CONFLICT, "grant already closed"),
        ErrorKind::Denied => error(StatusCode::FORBIDDEN, "not permitted"),
        _ => {
            tracing::warn!(kind = ?e.kind(), "impersonation route failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}

/// The staff principal of the request (a staff session with a second factor).
async fn staff(state: &ImpersonationState, headers: &HeaderMap) -> Result<Principal, Response> {
    let (session, _) = state.auth.staff_session(headers).await?;
    staff_principal(&session, None)
        .map_err(|_| error(StatusCode::FORBIDDEN, "staff access needs a second factor"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    reason: String,
    minutes: i64,
    #[serde(default)]
    write: bool,
}

/// Opens a grant: needs a step-up grant for `impersonation.start` (a fresh TOTP code, see
/// `/staff/api/v1/step-up`), a reason and 1 to 60 minutes. 201 with the grant once its
/// `operator.impersonation.started` record is in the customer's log.
async fn open_grant(
    State(state): State<Arc<ImpersonationState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let principal = match staff(&state, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let Principal::Staff {
        staff: staff_id, ..
    } = principal
    else {
        return error(StatusCode::FORBIDDEN, "staff only");
    };
    let expected = "expected {\"reason\": text, \"minutes\": 1-60, \"write\": false}";
    let body: OpenBody = match crate::headers::json_body(&headers, &body, expected) {
        Ok(body) => body,
        Err((code, message)) => return error(code, message),
    };
    let Ok(workspace) = id.parse::<WorkspaceId>() else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    // The step-up grant is spent only on a well-formed request.
    if let Err(e) = state
        .auth
        .services()
        .step_up
        .spend(staff_id, SensitiveAction::StartImpersonation)
        .await
    {
        return match e.kind() {
            ErrorKind::Denied => error(
                StatusCode::FORBIDDEN,
                "step up first: a fresh code for impersonation.start",
            ),
            _ => failed(&e),
        };
    }
    match state
        .impersonation
        .open(
            &principal,
            workspace,
            &body.reason,
            time::Duration::minutes(body.minutes),
            body.write,
        )
        .await
    {
        Ok((grant, record)) => (
            StatusCode::CREATED,
            axum::Json(json!({
                "grant_id": grant.grant.id.to_string(),
                "workspace": grant.grant.workspace.to_string(),
                "expires_at": grant.grant.expires_at.unix_timestamp(),
                "write": grant.grant.write,
                "audit_seq": record.seq,
            })),
        )
            .into_response(),
        Err(e) => failed(&e),
    }
}

/// The scope of a read under grant `grant` for `action`, once its `staff.read` record (naming
/// `target` and `detail`) is in the customer's log: a read whose record cannot be written is
/// refused (503) and reads nothing.
async fn read_scope(
    state: &ImpersonationState,
    headers: &HeaderMap,
    grant: &str,
    action: Action,
    detail: serde_json::Value,
) -> Result<Scope, Response> {
    let principal = staff(state, headers).await?;
    let not_found = || error(StatusCode::NOT_FOUND, "no open grant of yours by that id");
    let grant = grant.parse::<GrantId>().map_err(|_| not_found())?;
    let acting = state
        .impersonation
        .principal(&principal, grant)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Denied => not_found(),
            _ => failed(&e),
        })?;
    let Principal::Staff {
        grant: Some(held), ..
    } = &acting
    else {
        return Err(not_found());
    };
    let scope = state
        .auth
        .services()
        .gate
        .authorize(&acting, held.workspace, action)
        .map_err(|denied| match denied {
            Denied::GrantExpired => error(StatusCode::FORBIDDEN, "the grant has expired"),
            _ => error(StatusCode::FORBIDDEN, "not permitted under this grant"),
        })?;
    state
        .impersonation
        .record_read(&scope, Target::workspace(held.workspace), detail)
        .await
        .map_err(|e| {
            tracing::warn!(kind = ?e.kind(), "staff read refused: its audit record failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit log cannot record this read; nothing was read",
            )
        })?;
    Ok(scope)
}

async fn read_workspace(
    State(state): State<Arc<ImpersonationState>>,
    Path(grant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let detail = json!({ "route": "workspace" });
    let scope = match read_scope(&state, &headers, &grant, Action::WorkspaceRead, detail).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match state.store.workspace(&scope).await {
        Ok(ws) => axum::Json(crate::dashboard::workspace_json(&ws)).into_response(),
        Err(e) => failed(&e),
    }
}

async fn read_events(
    State(state): State<Arc<ImpersonationState>>,
    Path(grant): Path<String>,
    Query(window): Query<Window>,
    headers: HeaderMap,
) -> Response {
    let (from, to, limit) = window.bounds();
    let detail = json!({
        "route": "events",
        "from": from.unix_timestamp(),
        "to": to.unix_timestamp(),
        "limit": limit,
    });
    let scope = match read_scope(&state, &headers, &grant, Action::EventRead, detail).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match state.store.events(&scope, from, to, limit).await {
        Ok(events) => {
            let rows: Vec<_> = events
                .iter()
                .map(|e| {
                    json!({
                        "id": e.id.0, "name": e.name, "pathname": e.pathname,
                        "received_at": e.received_at.unix_timestamp(),
                    })
                })
                .collect();
            axum::Json(json!({ "events": rows })).into_response()
        }
        Err(e) => failed(&e),
    }
}

/// Closes the grant early; its `operator.impersonation.ended` record goes to the customer's log.
async fn close_grant(
    State(state): State<Arc<ImpersonationState>>,
    Path(grant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let principal = match staff(&state, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let Ok(grant) = grant.parse::<GrantId>() else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let acting = match state.impersonation.principal(&principal, grant).await {
        Ok(acting) => acting,
        Err(e) if e.kind() == ErrorKind::Denied => {
            return error(StatusCode::NOT_FOUND, "not found");
        }
        Err(e) => return failed(&e),
    };
    match state.impersonation.close(&acting).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.kind() == ErrorKind::Denied => {
            error(StatusCode::FORBIDDEN, "the grant has expired")
        }
        Err(e) => failed(&e),
    }
}
