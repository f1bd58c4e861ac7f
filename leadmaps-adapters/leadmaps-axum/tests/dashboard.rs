//! The workspace API: a key reaches its own workspace and nothing else. The test walks every
//! route in `dashboard::ROUTES`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use leadmaps_axum::dashboard::{DashboardState, ROUTES, dashboard_routes};
use leadmaps_core::auth::keys::ApiKeys;
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::store::{SiteStore, Store, WorkspaceStore};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId,
};
use serde_json::Value;
use tower::ServiceExt as _;

struct World {
    router: axum::Router,
    store: Arc<MemoryStore>,
    gate: Gate,
    a: WorkspaceId,
    b: WorkspaceId,
    key_a_read: String,
    key_a_ingest_only: String,
    key_a_legal: String,
}

async fn world() -> World {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let store = Arc::new(MemoryStore::new());
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    for (ws, domain) in [(a, "a.example"), (b, "b.example")] {
        let provisioning = Principal::System(SystemTask::Provisioning);
        store
            .create_workspace(
                &gate
                    .authorize(&provisioning, ws, Action::WorkspaceCreate)
                    .unwrap(),
                "w",
                Region::Eu,
                clock.now(),
            )
            .await
            .unwrap();
        store
            .add_site(
                &gate
                    .authorize(&provisioning, ws, Action::WorkspaceUpdate)
                    .unwrap(),
                domain,
                clock.now(),
            )
            .await
            .unwrap();
    }
    let ring =
        KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x2e).collect::<Vec<_>>()).unwrap()])
            .unwrap();
    let hasher = TokenHasher::new(&ring);
    let vault = Arc::new(
        Vault::start(ring, store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let keys = Arc::new(ApiKeys::new(store.clone(), vault, hasher, clock));
    let admin = Principal::member(UserId::new(), [(a, Role::Admin)]);
    let manage = gate.authorize(&admin, a, Action::MemberManage).unwrap();
    let read = keys
        .create(
            &manage,
            "read",
            &[
                Action::WorkspaceRead,
                Action::EventRead,
                Action::WorkspaceUpdate,
                Action::AuditRead,
                Action::LegalRead,
            ],
        )
        .await
        .unwrap();
    let legal = keys
        .create(&manage, "legal", &[Action::LegalAccept])
        .await
        .unwrap();
    let ingest = keys
        .create(&manage, "ingest", &[Action::EventIngest])
        .await
        .unwrap();
    let gate_for_world = gate.clone();
    let state = Arc::new(DashboardState::new(
        store.clone() as Arc<dyn Store>,
        keys,
        gate,
    ));
    World {
        router: dashboard_routes(state),
        store,
        gate: gate_for_world,
        a,
        b,
        key_a_read: read.key.token.to_string(),
        key_a_ingest_only: ingest.key.token.to_string(),
        key_a_legal: legal.key.token.to_string(),
    }
}

async fn get(world: &World, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    call(world, "GET", path, key).await
}

/// A request to a route of `ROUTES`: writes (PUT) carry a valid JSON body that changes nothing.
async fn call(world: &World, method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    let body = if method == "GET" {
        Body::empty()
    } else {
        request = request.header(header::CONTENT_TYPE, "application/json");
        Body::from(harmless_body(path))
    };
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let response = world
        .router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A valid body for a write route that restricts nothing.
fn harmless_body(path: &str) -> &'static str {
    if path.ends_with("/ip-allowlist") {
        r#"{"ranges": []}"#
    } else if path.ends_with("/retention") {
        r#"{"days": null}"#
    } else {
        r#"{"require_totp": false}"#
    }
}

/// Puts `ws` on the Pro plan (which exports its audit log).
async fn upgrade(w: &World, ws: WorkspaceId) {
    use leadmaps_core::sso::SsoStore;
    let provisioning = w
        .gate
        .authorize(
            &Principal::System(SystemTask::Provisioning),
            ws,
            Action::WorkspaceUpdate,
        )
        .unwrap();
    w.store
        .set_plan(
            &provisioning,
            leadmaps_core::policy::Plan::Pro,
            w.gate.now(),
        )
        .await
        .unwrap();
}

fn path(template: &str, id: WorkspaceId) -> String {
    template.replace("{id}", &id.to_string())
}

#[tokio::test]
async fn a_key_of_workspace_a_gets_nothing_of_workspace_b_on_any_route() {
    let w = world().await;
    upgrade(&w, w.a).await;
    for (method, template, _) in ROUTES {
        let (own, _) = call(&w, method, &path(template, w.a), Some(&w.key_a_read)).await;
        assert_eq!(own, StatusCode::OK, "{template} on its own workspace");
        let (other, body) = call(&w, method, &path(template, w.b), Some(&w.key_a_read)).await;
        assert_eq!(
            other,
            StatusCode::NOT_FOUND,
            "{template} on another workspace"
        );
        assert!(!body.to_string().contains("b.example"));
        let ghost = path(template, WorkspaceId::new());
        let (ghost, _) = call(&w, method, &ghost, Some(&w.key_a_read)).await;
        assert_eq!(
            ghost,
            StatusCode::NOT_FOUND,
            "a missing workspace looks the same as a foreign one"
        );
    }
}

#[tokio::test]
async fn keys_are_required_checked_and_limited_to_their_actions() {
    let w = world().await;
    for (method, template, _) in ROUTES {
        let url = path(template, w.a);
        let (none, _) = call(&w, method, &url, None).await;
        assert_eq!(none, StatusCode::UNAUTHORIZED, "{template}");
        let forged = "lm_00000000000000000000000000000000_AAAA";
        let (bad, _) = call(&w, method, &url, Some(forged)).await;
        assert_eq!(bad, StatusCode::UNAUTHORIZED);
        let (narrow, _) = call(&w, method, &url, Some(&w.key_a_ingest_only)).await;
        assert_eq!(
            narrow,
            StatusCode::FORBIDDEN,
            "an ingest key reads nothing: {template}"
        );
    }
    let (status, body) = get(
        &w,
        &path("/api/v1/workspaces/{id}/sites", w.a),
        Some(&w.key_a_read),
    )
    .await;
    assert_eq!(
        (status, body["sites"][0].as_str()),
        (StatusCode::OK, Some("a.example"))
    );
    let (status, body) = get(
        &w,
        &path("/api/v1/workspaces/{id}/drops", w.a),
        Some(&w.key_a_read),
    )
    .await;
    assert_eq!(
        (status, body["drops"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}

/// The audit records of a workspace, as its admin would read them (all, not only the visible).
async fn audit_count(w: &World, ws: WorkspaceId) -> usize {
    use leadmaps_core::audit::AuditStore;
    let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
    let scope = w.gate.authorize(&admin, ws, Action::AuditRead).unwrap();
    w.store
        .audit_records(&scope, 0, 10_000)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn every_mutating_route_writes_exactly_one_audit_record_and_the_log_shows_it() {
    let w = world().await;
    let in_b = audit_count(&w, w.b).await;
    for (method, template, _) in ROUTES.iter().filter(|(m, _, _)| *m != "GET") {
        let before = audit_count(&w, w.a).await;
        let (status, _) = call(&w, method, &path(template, w.a), Some(&w.key_a_read)).await;
        assert_eq!(status, StatusCode::OK, "{method} {template}");
        assert_eq!(
            audit_count(&w, w.a).await,
            before + 1,
            "{method} {template}"
        );
        // Refused requests write nothing.
        let (status, _) = call(&w, method, &path(template, w.b), Some(&w.key_a_read)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(&w, method, &path(template, w.a), Some(&w.key_a_ingest_only)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            audit_count(&w, w.a).await,
            before + 1,
            "{method} {template}"
        );
        assert_eq!(audit_count(&w, w.b).await, in_b);
    }

    // The customer's log shows the policy change with actor, before, after and patch.
    let response = w
        .router
        .clone()
        .oneshot(
            Request::put(path("/api/v1/workspaces/{id}/policy", w.a))
                .header(header::AUTHORIZATION, format!("Bearer {}", w.key_a_read))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"require_totp": true}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let audit = path("/api/v1/workspaces/{id}/audit", w.a);
    let (status, log) = get(&w, &audit, Some(&w.key_a_read)).await;
    assert_eq!(status, StatusCode::OK);
    let records = log["records"].as_array().unwrap();
    let last = records.last().unwrap();
    assert_eq!(last["action"], "workspace.policy.updated");
    assert_eq!(last["actor"]["kind"], "api_key");
    assert_eq!(last["before"]["require_totp"], false);
    assert_eq!(last["after"]["require_totp"], true);
    assert_eq!(last["patch"][0]["op"], "replace");
    assert_eq!(last["patch"][0]["path"], "/require_totp");

    // Paging by cursor, and the NDJSON export of the same records.
    let (_, first) = get(&w, &format!("{audit}?limit=1"), Some(&w.key_a_read)).await;
    assert_eq!(first["records"].as_array().unwrap().len(), 1);
    let cursor = first["next_after"].as_u64().unwrap();
    let (_, rest) = get(&w, &format!("{audit}?after={cursor}"), Some(&w.key_a_read)).await;
    assert_eq!(rest["records"].as_array().unwrap().len(), records.len() - 1);
    assert_eq!(rest["next_after"], Value::Null, "the end of the log");
    let (status, _) = get(&w, &format!("{audit}?action=nope"), Some(&w.key_a_read)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Export is a Pro feature: refused on Free with the reason, then allowed.
    let export_path = path("/api/v1/workspaces/{id}/audit/export", w.a);
    let (status, refused) = get(&w, &export_path, Some(&w.key_a_read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        refused["error"].as_str().unwrap().contains("Pro plan"),
        "{refused}"
    );
    upgrade(&w, w.a).await;
    let export = w
        .router
        .clone()
        .oneshot(
            Request::get(path("/api/v1/workspaces/{id}/audit/export", w.a))
                .header(header::AUTHORIZATION, format!("Bearer {}", w.key_a_read))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        export.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let body = export.into_body().collect().await.unwrap().to_bytes();
    let lines: Vec<Value> = std::str::from_utf8(&body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every record read above, and the plan change after them.
    assert_eq!(lines.len(), records.len() + 1);
    assert_eq!(lines[records.len() - 1]["seq"], last["seq"]);
    assert_eq!(lines.last().unwrap()["action"], "plan.changed");
}

/// A request from `ip` (as the peer, or behind `proxy` in `X-Forwarded-For`).
async fn from(
    w: &World,
    method: &str,
    path: &str,
    ip: &str,
    forwarded: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    use axum::extract::ConnectInfo;
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", w.key_a_read))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let mut request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let peer: std::net::SocketAddr = (ip.parse::<std::net::IpAddr>().unwrap(), 40_000).into();
    request
        .extensions_mut()
        .insert(ConnectInfo(leadmaps_axum::PeerAddr(peer)));
    let response = w.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_ip_allowlist_admits_its_ranges_and_refuses_everyone_else_changing_nothing() {
    let w = world().await;
    let allowlist = path("/api/v1/workspaces/{id}/ip-allowlist", w.a);
    let events = path("/api/v1/workspaces/{id}/events", w.a);
    let retention = path("/api/v1/workspaces/{id}/retention", w.a);
    // A list that would lock out the admin setting it is refused.
    let (status, _) = from(
        &w,
        "PUT",
        &allowlist,
        "198.51.100.9",
        None,
        Some(r#"{"ranges": ["192.0.2.0/24"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Malformed ranges: 400, with a reason that does not echo them.
    let (status, body) = from(
        &w,
        "PUT",
        &allowlist,
        "192.0.2.7",
        None,
        Some(r#"{"ranges": ["192.0.2.7/24"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.to_string().contains("192.0.2.7"), "{body}");
    let (status, body) = from(
        &w,
        "PUT",
        &allowlist,
        "192.0.2.7",
        None,
        Some(r#"{"ranges": ["192.0.2.0/24", "2001:db8::/32"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["policy"]["ip_allowlist"],
        serde_json::json!(["192.0.2.0/24", "2001:db8::/32"])
    );
    let records = audit_count(&w, w.a).await;

    for (ip, admitted) in [
        ("192.0.2.200", true),
        ("::ffff:192.0.2.1", true),
        ("2001:db8::5", true),
        ("198.51.100.9", false),
        ("2001:db9::5", false),
    ] {
        let (status, _) = from(&w, "GET", &events, ip, None, None).await;
        let want = if admitted {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, want, "{ip}");
    }
    // From outside: a write is refused and changes nothing, not even the log.
    let (status, body) = from(
        &w,
        "PUT",
        &retention,
        "198.51.100.9",
        None,
        Some(r#"{"days": 7}"#),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"],
        "this workspace does not admit requests from this address"
    );
    assert_eq!(audit_count(&w, w.a).await, records);
    let admin = Principal::member(UserId::new(), [(w.a, Role::Admin)]);
    let read = w
        .gate
        .authorize(&admin, w.a, Action::WorkspaceRead)
        .unwrap();
    assert_eq!(
        w.store
            .workspace(&read)
            .await
            .unwrap()
            .policy
            .retention_days,
        None
    );
    // No proxy is trusted here: a forged X-Forwarded-For changes nothing.
    let (status, _) = from(&w, "GET", &events, "198.51.100.9", Some("192.0.2.1"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A request without a known address is outside a non-empty list.
    let (status, _) = get(&w, &events, Some(&w.key_a_read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The other workspace has no list.
    let (status, _) = from(
        &w,
        "GET",
        &path("/api/v1/workspaces/{id}", w.b),
        "198.51.100.9",
        None,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "still not A's key's workspace"
    );
}

#[tokio::test]
async fn retention_is_set_in_bounds_and_recorded() {
    let w = world().await;
    let retention = path("/api/v1/workspaces/{id}/retention", w.a);
    let records = audit_count(&w, w.a).await;
    for bad in [
        r#"{"days": 0}"#,
        r#"{"days": 4000}"#,
        r#"{"days": "x"}"#,
        r#"{}"#,
    ] {
        let (status, _) = from(&w, "PUT", &retention, "192.0.2.1", None, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        audit_count(&w, w.a).await,
        records,
        "refusals record nothing"
    );
    let (status, body) = from(
        &w,
        "PUT",
        &retention,
        "192.0.2.1",
        None,
        Some(r#"{"days": 30}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["policy"]["retention_days"], 30);
    let (_, log) = get(
        &w,
        &path(
            "/api/v1/workspaces/{id}/audit?action=retention_policy.updated",
            w.a,
        ),
        Some(&w.key_a_read),
    )
    .await;
    let records = log["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["before"]["days"], Value::Null);
    assert_eq!(records[0]["after"]["days"], 30);
}

async fn post_json(w: &World, path: &str, key: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = w.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_subprocessor_register_is_shown_to_workspace_admins_only() {
    let w = world().await;
    let (status, _) = get(&w, "/api/v1/legal/subprocessors", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(
        &w,
        "/api/v1/legal/subprocessors",
        Some(&w.key_a_ingest_only),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a key without legal.read");
    let (status, body) = get(&w, "/api/v1/legal/subprocessors", Some(&w.key_a_read)).await;
    assert_eq!(status, StatusCode::OK);
    let list = body["subprocessors"].as_array().unwrap();
    assert_eq!(list.len(), 8, "the seed's eight vendors");
    for entry in list {
        for field in ["vendor", "purpose", "region", "since"] {
            assert!(entry[field].is_string(), "{field}");
        }
    }
    assert_eq!(body["dpa_version"], "2026-01");
}

#[tokio::test]
async fn a_dpa_acceptance_is_recorded_once_with_who_and_when_and_audited() {
    use leadmaps_core::audit::{AuditAction, AuditStoreExt};
    let w = world().await;
    let url = path("/api/v1/workspaces/{id}/dpa", w.a);
    let before = audit_count(&w, w.a).await;
    let (status, _) = post_json(&w, &url, &w.key_a_legal, r#"{"version": "2025-01"}"#).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "only the current version"
    );
    let (status, _) = post_json(&w, &url, &w.key_a_read, r#"{"version": "2026-01"}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "legal.read does not accept");
    let other = path("/api/v1/workspaces/{id}/dpa", w.b);
    let (status, _) = post_json(&w, &other, &w.key_a_legal, r#"{"version": "2026-01"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        audit_count(&w, w.a).await,
        before,
        "refusals record nothing"
    );

    let (status, accepted) = post_json(&w, &url, &w.key_a_legal, r#"{"version": "2026-01"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(accepted["version"], "2026-01");
    assert_eq!(accepted["accepted_by"]["kind"], "api_key");
    let (status, _) = post_json(&w, &url, &w.key_a_legal, r#"{"version": "2026-01"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let admin = Principal::member(UserId::new(), [(w.a, Role::Admin)]);
    let scope = w.gate.authorize(&admin, w.a, Action::AuditRead).unwrap();
    let log = w.store.all_audit_records(&scope).await.unwrap();
    assert_eq!(log.len(), before + 1);
    let record = log.last().unwrap();
    assert_eq!(record.action, AuditAction::DpaAccepted);
    assert_eq!(
        record.actor.subject(),
        accepted["accepted_by"]["id"].as_str().unwrap()
    );
    let (status, list) = get(&w, &url, Some(&w.key_a_read)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["acceptances"][0]["version"], "2026-01");
    assert_eq!(
        list["acceptances"][0]["accepted_at"],
        accepted["accepted_at"]
    );
}
