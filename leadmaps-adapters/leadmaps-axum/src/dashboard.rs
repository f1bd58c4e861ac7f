//! The workspace API (read side, for now) for API keys and signed-in members.
//!
//! Every route goes request -> credential -> `Principal` -> the gate -> `Scope` -> the store. The
//! credential is `Authorization: Bearer lm_...` or, when the state has sessions, the customer
//! session cookie (the member's memberships and the workspaces' TOTP policies are read fresh for
//! each request). 401 without a valid credential; 404 for a workspace the caller does not belong to
//! (existence is not revealed); 403 for an action the role or key lacks, or a workspace that
//! requires TOTP from a session that has not passed it.

use std::net::IpAddr;
use std::sync::Arc;

use crate::client::{client_ip, peer_ip};
use crate::headers::json_body;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use ipnet::IpNet;
use leadmaps_core::audit::{AUDIT_PAGE, AuditAction, AuditRecord};
use leadmaps_core::auth::keys::ApiKeys;
use leadmaps_core::auth::session::Sessions;
use leadmaps_core::auth::totp::{FactorState, Subject, TotpFactors};
use leadmaps_core::legal::{DpaAcceptance, RegisterBook};
use leadmaps_core::policy::{Feature, IpAllowlist};
use leadmaps_core::store::{PolicyChange, Store};
use leadmaps_core::tenancy::{Action, Denied, Gate, Principal, Scope, WorkspaceId};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

/// What the workspace routes share.
pub struct DashboardState {
    pub(crate) store: Arc<dyn Store>,
    keys: Arc<ApiKeys>,
    pub(crate) gate: Gate,
    sessions: Option<(Arc<Sessions>, Arc<TotpFactors>)>,
    trusted_proxies: Vec<IpNet>,
    subprocessors: Arc<RegisterBook>,
    dpa_version: String,
}

/// The DPA version workspaces accept unless the state is given another
/// ([`DashboardState::with_legal`]).
pub const DEFAULT_DPA_VERSION: &str = "2026-01";

impl std::fmt::Debug for DashboardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardState").finish_non_exhaustive()
    }
}

impl DashboardState {
    /// State over a store, the API-key service and the gate.
    pub fn new(store: Arc<dyn Store>, keys: Arc<ApiKeys>, gate: Gate) -> Self {
        Self {
            store,
            keys,
            gate,
            sessions: None,
            trusted_proxies: Vec::new(),
            subprocessors: Arc::new(RegisterBook::default()),
            dpa_version: DEFAULT_DPA_VERSION.to_owned(),
        }
    }

    /// The sub-processor register shown at `/api/v1/legal/subprocessors` (by default
    /// [`RegisterBook::default`], the example seed) and the DPA version workspaces accept.
    #[must_use]
    pub fn with_legal(mut self, book: Arc<RegisterBook>, dpa_version: impl Into<String>) -> Self {
        self.subprocessors = book;
        self.dpa_version = dpa_version.into();
        self
    }

    /// Proxies whose `X-Forwarded-For` names the client, for workspace IP allowlists (see
    /// [`crate::client_ip`]). Without them, the peer address is the client.
    pub fn with_trusted_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Also admits signed-in members by their session cookie. A member with an active TOTP
    /// factor whose session has not passed it yet (the challenge is still open) is not admitted
    /// anywhere: their own second factor is not optional.
    pub fn with_sessions(mut self, sessions: Arc<Sessions>, totp: Arc<TotpFactors>) -> Self {
        self.sessions = Some((sessions, totp));
        self
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
    (
        "PUT",
        "/api/v1/workspaces/{id}/policy",
        Action::WorkspaceUpdate,
    ),
    (
        "PUT",
        "/api/v1/workspaces/{id}/ip-allowlist",
        Action::WorkspaceUpdate,
    ),
    (
        "PUT",
        "/api/v1/workspaces/{id}/retention",
        Action::WorkspaceUpdate,
    ),
    ("GET", "/api/v1/workspaces/{id}/audit", Action::AuditRead),
    (
        "GET",
        "/api/v1/workspaces/{id}/audit/export",
        Action::AuditRead,
    ),
    ("GET", "/api/v1/workspaces/{id}/dpa", Action::LegalRead),
];

/// The workspace routes.
pub fn dashboard_routes(state: Arc<DashboardState>) -> Router {
    Router::new()
        .route("/api/v1/workspaces/{id}", get(workspace))
        .route("/api/v1/workspaces/{id}/sites", get(sites))
        .route("/api/v1/workspaces/{id}/events", get(events))
        .route("/api/v1/workspaces/{id}/drops", get(drops))
        .route("/api/v1/workspaces/{id}/policy", put(set_policy))
        .route(
            "/api/v1/workspaces/{id}/ip-allowlist",
            put(set_ip_allowlist),
        )
        .route("/api/v1/workspaces/{id}/retention", put(set_retention))
        .route("/api/v1/workspaces/{id}/audit", get(audit))
        .route("/api/v1/workspaces/{id}/audit/export", get(audit_export))
        .route(
            "/api/v1/workspaces/{id}/dpa",
            get(dpa_acceptances).post(accept_dpa),
        )
        .route("/api/v1/legal/subprocessors", get(subprocessors))
        .with_state(state)
}

pub(crate) fn status(code: StatusCode, message: &'static str) -> Response {
    let mut response = (code, axum::Json(json!({ "error": message }))).into_response();
    if code == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

pub(crate) fn store_error(error: &leadmaps_core::Error) -> Response {
    use leadmaps_core::ErrorKind;
    if let leadmaps_core::Error::Denied(denied @ Denied::FeatureNotInPlan(_)) = error {
        // The plan's reason is the answer: which feature, and the least plan that has it.
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({ "error": denied.to_string() })),
        )
            .into_response();
    }
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

/// Who is asking: an API key, or a member's session.
async fn principal(state: &DashboardState, headers: &HeaderMap) -> Result<Principal, Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = bearer {
        return state
            .keys
            .authenticate(token.trim())
            .await
            .map_err(|e| match e.kind() {
                leadmaps_core::ErrorKind::Invalid => {
                    status(StatusCode::UNAUTHORIZED, "invalid API key")
                }
                _ => store_error(&e),
            });
    }
    let (Some((sessions, totp)), Some(token)) =
        (&state.sessions, crate::auth::session_token(headers))
    else {
        return Err(status(
            StatusCode::UNAUTHORIZED,
            "an API key or a session is required",
        ));
    };
    let session = sessions
        .authenticate(token)
        .await
        .map_err(|_| status(StatusCode::UNAUTHORIZED, "sign in again"))?;
    let Subject::User(user) = session.subject else {
        // Staff reach customer workspaces only through impersonation grants.
        return Err(status(StatusCode::NOT_FOUND, "not found"));
    };
    if !session.second_factor {
        match totp.state(session.subject).await {
            Ok(FactorState::Active) => {
                return Err(status(
                    StatusCode::UNAUTHORIZED,
                    "finish signing in with your second factor",
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(store_error(&e)),
        }
    }
    // Workspaces that enforce SSO are out of reach of a magic-link session, and an SSO session
    // reaches only its own workspace (leadmaps_core::sso).
    let memberships = leadmaps_core::sso::session_memberships(
        &*state.store,
        &state.gate,
        user,
        &session.selector,
    )
    .await
    .map_err(|e| store_error(&e))?;
    Ok(Principal::Member {
        user,
        memberships,
        second_factor: session.second_factor,
    })
}

/// Where a request comes from and what it carries: the peer address and the headers. An
/// extractor that never rejects.
pub(crate) struct Caller {
    peer: Option<IpAddr>,
    pub(crate) headers: HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            peer: peer_ip(&parts.extensions),
            headers: parts.headers.clone(),
        })
    }
}

impl Caller {
    /// The client address behind trusted proxies; `None` without connect info.
    fn client(&self, state: &DashboardState) -> Option<IpAddr> {
        self.peer
            .map(|peer| client_ip(peer, &self.headers, &state.trusted_proxies))
    }
}

/// Authenticates the request, asks the gate for `action` on the workspace in the path, and
/// enforces the workspace's IP allowlist ([`admit`]).
pub(crate) async fn scope(
    state: &DashboardState,
    caller: &Caller,
    id: &str,
    action: Action,
) -> Result<Scope, Response> {
    let principal = principal(state, &caller.headers).await?;
    let Ok(workspace) = id.parse::<WorkspaceId>() else {
        return Err(status(StatusCode::NOT_FOUND, "not found"));
    };
    admit(state, caller, &principal, workspace, action).await
}

/// Asks the gate for `action` on `workspace` for an authenticated `principal`, then enforces
/// the workspace's IP allowlist (403 from outside it, before anything is read or changed; a
/// request without a known client address is outside any non-empty list).
async fn admit(
    state: &DashboardState,
    caller: &Caller,
    principal: &Principal,
    workspace: WorkspaceId,
    action: Action,
) -> Result<Scope, Response> {
    let scope =
        state
            .gate
            .authorize(principal, workspace, action)
            .map_err(|denied| match denied {
                // Do not confirm that someone else's workspace exists.
                Denied::NotAMember | Denied::StaffNeedsGrant => {
                    status(StatusCode::NOT_FOUND, "not found")
                }
                Denied::SecondFactorRequired => status(
                    StatusCode::FORBIDDEN,
                    "this workspace requires two-factor authentication",
                ),
                _ => status(StatusCode::FORBIDDEN, "not permitted"),
            })?;
    let allowlist = state
        .store
        .workspace(&scope)
        .await
        .map_err(|e| store_error(&e))?
        .policy
        .ip_allowlist;
    if !allowlist.is_empty() && !caller.client(state).is_some_and(|ip| allowlist.permits(ip)) {
        return Err(status(
            StatusCode::FORBIDDEN,
            "this workspace does not admit requests from this address",
        ));
    }
    Ok(scope)
}

async fn workspace(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::WorkspaceRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match state.store.workspace(&scope).await {
        Ok(ws) => axum::Json(workspace_json(&ws)).into_response(),
        Err(e) => store_error(&e),
    }
}

/// A workspace as the API shows it (its members, and staff under a grant).
pub(crate) fn workspace_json(ws: &leadmaps_core::store::Workspace) -> serde_json::Value {
    json!({
        "id": ws.id, "name": ws.name, "region": ws.region.as_str(),
        "policy": ws.policy.to_json(),
    })
}

async fn sites(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::WorkspaceRead).await {
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
pub(crate) struct Window {
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<u32>,
}

impl Window {
    /// `[from, to)` (all of time when absent) and the page size (100 by default, at most 1000).
    pub(crate) fn bounds(&self) -> (OffsetDateTime, OffsetDateTime, u32) {
        let at = |t: Option<i64>, default: OffsetDateTime| {
            t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .unwrap_or(default)
        };
        (
            at(self.from, OffsetDateTime::UNIX_EPOCH),
            at(
                self.to,
                OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 200),
            ),
            self.limit.unwrap_or(100).min(1000),
        )
    }
}

async fn events(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    Query(window): Query<Window>,
    caller: Caller,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::EventRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let (from, to, limit) = window.bounds();
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
    caller: Caller,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::EventRead).await {
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

/// Body of the policy route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    require_totp: bool,
}

/// Body of the IP allowlist route: CIDR ranges (`[]` admits every address).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistBody {
    ranges: Vec<String>,
}

/// Body of the retention route: days, or `null` to keep events indefinitely. `days` must be
/// present: a body without it is a mistake, not a request to keep events forever.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    days: serde_json::Value,
}

impl RetentionBody {
    fn days(&self) -> Option<Option<u32>> {
        match &self.days {
            serde_json::Value::Null => Some(None),
            days => days.as_u64().and_then(|d| u32::try_from(d).ok()).map(Some),
        }
    }
}

/// Applies one policy change; the change and its audit record commit together, or neither does.
async fn change_policy(state: &DashboardState, scope: &Scope, change: PolicyChange) -> Response {
    if let Err(e) = change.validate() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": e.to_string() })),
        )
            .into_response();
    }
    match state
        .store
        .set_workspace_policy(scope, &change, state.gate.now())
        .await
    {
        Ok((ws, _)) => axum::Json(json!({"policy": ws.policy.to_json()})).into_response(),
        Err(e) => store_error(&e),
    }
}

/// A policy route: the gate's `workspace.update` scope, a JSON body of type `B`, and `change`
/// turning it into one policy change (or a refusal).
async fn policy_route<B: serde::de::DeserializeOwned>(
    state: &DashboardState,
    id: &str,
    caller: Caller,
    body: &[u8],
    expected: &'static str,
    change: impl FnOnce(B, &Caller) -> Result<PolicyChange, (StatusCode, String)>,
) -> Response {
    let scope = match scope(state, &caller, id, Action::WorkspaceUpdate).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match json_body::<B>(&caller.headers, body, expected) {
        Ok(body) => match change(body, &caller) {
            Ok(change) => change_policy(state, &scope, change).await,
            Err((code, message)) => (code, axum::Json(json!({ "error": message }))).into_response(),
        },
        Err((code, message)) => status(code, message),
    }
}

/// Turns the "require TOTP" policy on or off (admins, or keys with `workspace.update`).
async fn set_policy(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Response {
    let expected = "expected {\"require_totp\": true|false}";
    policy_route(&state, &id, caller, &body, expected, |b: PolicyBody, _| {
        Ok(PolicyChange::RequireTotp(b.require_totp))
    })
    .await
}

/// Replaces the IP allowlist. A list that would not admit this very request is refused (409):
/// an admin cannot lock themselves out by a typo.
async fn set_ip_allowlist(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Response {
    let expected = "expected {\"ranges\": [CIDR, ...]}";
    policy_route(
        &state,
        &id,
        caller,
        &body,
        expected,
        |b: AllowlistBody, caller| {
            let list = IpAllowlist::parse(&b.ranges)
                .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
            if !list.is_empty() && !caller.client(&state).is_some_and(|ip| list.permits(ip)) {
                return Err((
                    StatusCode::CONFLICT,
                    "the new allowlist would not admit this request's address".to_owned(),
                ));
            }
            Ok(PolicyChange::IpAllowlist(list))
        },
    )
    .await
}

/// Sets the retention period in days (1 to 3650), or `null` to keep events indefinitely.
async fn set_retention(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Response {
    let expected = "expected {\"days\": n|null}";
    policy_route(
        &state,
        &id,
        caller,
        &body,
        expected,
        |b: RetentionBody, _| {
            b.days()
                .map(PolicyChange::RetentionDays)
                .ok_or_else(|| (StatusCode::BAD_REQUEST, expected.to_owned()))
        },
    )
    .await
}

/// Query of the audit routes: a cursor (the last seq seen), a page size, an action filter.
#[derive(Debug, Deserialize)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<u32>,
    action: Option<String>,
}

/// One page of the customer-visible records after the cursor, filtered by action.
async fn audit_page(
    state: &DashboardState,
    scope: &Scope,
    query: &AuditQuery,
    limit: u32,
) -> Result<(Vec<AuditRecord>, u64, bool), Response> {
    let action = match query.action.as_deref() {
        Some(name) => Some(
            AuditAction::parse(name)
                .filter(|a| a.customer_visible())
                .ok_or_else(|| status(StatusCode::BAD_REQUEST, "unknown action"))?,
        ),
        None => None,
    };
    let mut cursor = query.after.unwrap_or(0);
    let mut page = Vec::new();
    // Hidden or filtered records are skipped; read on until the page is full or the log ends.
    loop {
        let batch = state
            .store
            .audit_records(scope, cursor, AUDIT_PAGE)
            .await
            .map_err(|e| store_error(&e))?;
        let done = (batch.len() as u64) < u64::from(AUDIT_PAGE);
        for record in batch {
            cursor = record.seq;
            if record.action.customer_visible() && action.is_none_or(|a| a == record.action) {
                page.push(record);
                if page.len() as u64 == u64::from(limit) {
                    return Ok((page, cursor, false));
                }
            }
        }
        if done {
            return Ok((page, cursor, true));
        }
    }
}

/// The workspace's audit log as its admins see it: configuration changes, IP allowlist and
/// retention updates, operator impersonation, ... (`AuditAction::customer_visible`), oldest
/// first, `next_after` as the cursor for the next page.
async fn audit(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    Query(query): Query<AuditQuery>,
    caller: Caller,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::AuditRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    match audit_page(&state, &scope, &query, limit).await {
        Ok((records, cursor, end)) => axum::Json(json!({
            "records": records.iter().map(AuditRecord::to_json).collect::<Vec<_>>(),
            "next_after": (!end).then_some(cursor),
        }))
        .into_response(),
        Err(response) => response,
    }
}

/// The same records as newline-delimited JSON, the whole log after the cursor.
async fn audit_export(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    Query(query): Query<AuditQuery>,
    caller: Caller,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::AuditRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    // Export is a plan feature (Pro and above); reading the log page by page is not.
    let allowed = state
        .store
        .sso_settings(&scope)
        .await
        .and_then(|settings| Ok(settings.plan.require(Feature::AuditExport)?));
    if let Err(e) = allowed {
        return store_error(&e);
    }
    let mut out = String::new();
    let mut query = query;
    loop {
        let (records, cursor, end) = match audit_page(&state, &scope, &query, 1000).await {
            Ok(page) => page,
            Err(response) => return response,
        };
        for record in &records {
            out.push_str(&record.to_json().to_string());
            out.push('\n');
        }
        if end {
            break;
        }
        query.after = Some(cursor);
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Legal: the sub-processor register and the DPA

/// The sub-processor register in force, for workspace admins: an API key with `legal.read`, or
/// a member session admitted to `legal.read` (admins) in at least one of its workspaces, through
/// that workspace's IP allowlist. 401 without a credential; 403 for everyone else.
async fn subprocessors(State(state): State<Arc<DashboardState>>, caller: Caller) -> Response {
    let principal = match principal(&state, &caller.headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let candidates: Vec<WorkspaceId> = match &principal {
        Principal::ApiKey { workspace, .. } => vec![*workspace],
        Principal::Member { memberships, .. } => memberships.iter().map(|m| m.workspace).collect(),
        _ => Vec::new(),
    };
    let mut admitted = false;
    for workspace in candidates {
        if admit(&state, &caller, &principal, workspace, Action::LegalRead)
            .await
            .is_ok()
        {
            admitted = true;
            break;
        }
    }
    if !admitted {
        return status(StatusCode::FORBIDDEN, "workspace admins only");
    }
    let Some(current) = state.subprocessors.current(state.gate.now()) else {
        return status(
            StatusCode::NOT_FOUND,
            "no sub-processor register is in force",
        );
    };
    let previous = state.subprocessors.previous(current);
    axum::Json(json!({
        "version": current.version,
        "effective_from": current.effective_from.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "subprocessors": current.entries,
        "previous_version": previous.map(|p| p.version.clone()),
        "changes": previous.map(|p| current.changes_from(p)),
        "dpa_version": state.dpa_version,
    }))
    .into_response()
}

fn acceptance_json(acceptance: &DpaAcceptance) -> serde_json::Value {
    json!({
        "version": acceptance.version,
        "accepted_at": acceptance.accepted_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "accepted_by": {
            "kind": acceptance.accepted_by.kind(),
            "id": acceptance.accepted_by.subject(),
        },
    })
}

/// The workspace's DPA acceptances (`legal.read`: admins, or keys with it).
async fn dpa_acceptances(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::LegalRead).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    match state.store.dpa_acceptances(&scope).await {
        Ok(list) => axum::Json(json!({
            "current_version": state.dpa_version,
            "acceptances": list.iter().map(acceptance_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

#[derive(Deserialize)]
struct DpaBody {
    version: String,
}

/// Accepts the current DPA version for the workspace (`legal.accept`: admins, or keys with it;
/// never staff): recorded with who and when, in the transaction of its `dpa.accepted` record.
/// 422 for another version than the current one, 409 when accepted already.
async fn accept_dpa(
    State(state): State<Arc<DashboardState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Response {
    let scope = match scope(&state, &caller, &id, Action::LegalAccept).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let body: DpaBody = match json_body(&caller.headers, &body, "expected {\"version\": \"...\"}") {
        Ok(body) => body,
        Err((code, message)) => return status(code, message),
    };
    if body.version != state.dpa_version {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "only the current DPA version can be accepted",
        );
    }
    match state
        .store
        .accept_dpa(&scope, &body.version, state.gate.now())
        .await
    {
        Ok((acceptance, _)) => (
            StatusCode::CREATED,
            axum::Json(acceptance_json(&acceptance)),
        )
            .into_response(),
        Err(leadmaps_core::Error::Conflict(_)) => {
            status(StatusCode::CONFLICT, "this DPA version is accepted already")
        }
        Err(e) => store_error(&e),
    }
}
