//! The SAML login routes end to end against the real IdP (pysaml2 on loopback): metadata, start,
//! the IdP's sign-in, the ACS, the session cookie; a replayed response and a plan without SSO
//! refused and audited.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{SP_BASE, fixture, form_value, http};
use http_body_util::BodyExt as _;
use leadmaps_core::audit::{AuditAction, AuditRecord, AuditStoreExt};
use leadmaps_core::auth::session::{SESSION_COOKIE, Sessions};
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::crypto::{Kek, KeyRing};
use leadmaps_core::mail::Address;
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::policy::Plan;
use leadmaps_core::sso::SsoStore;
use leadmaps_core::store::{Store, WorkspaceStore};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId,
};
use leadmaps_saml::{MemoryReplayCache, SamlConfig, SamlConfigs, SamlLogins, saml_routes};
use serde_json::json;
use tower::ServiceExt as _;
use url::Url;

/// Gets the fixture or returns from the test (after the notice `fixture` printed).
macro_rules! idp_or_skip {
    () => {
        match fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

struct World {
    store: Arc<MemoryStore>,
    gate: Gate,
    clock: Arc<dyn Clock>,
    hasher: TokenHasher,
    configs: Arc<SamlConfigs>,
    router: axum::Router,
    /// The IdP's workspace (the fixture's SP), on Business.
    workspace: WorkspaceId,
    /// A workspace on Free, with the same IdP configured.
    free: WorkspaceId,
    /// Another workspace on Business, with the same IdP configured.
    other: WorkspaceId,
    /// `alice@example.org`, the IdP's test user, a member of both.
    user: UserId,
    idp_metadata: String,
}

impl World {
    async fn new(workspace: WorkspaceId, idp_base: &str) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let gate = Gate::new(clock.clone());
        let store = Arc::new(MemoryStore::new());
        let free = WorkspaceId::new();
        let other = WorkspaceId::new();
        let user = User {
            id: UserId::new(),
            email: Address::parse("alice@example.org").unwrap(),
            created_at: clock.now(),
        };
        store.create_user(&user).await.unwrap();
        let provisioning = Principal::System(SystemTask::Provisioning);
        for (id, plan) in [
            (workspace, Plan::Business),
            (free, Plan::Free),
            (other, Plan::Business),
        ] {
            let task = |action| gate.authorize(&provisioning, id, action).unwrap();
            store
                .create_workspace(
                    &task(Action::WorkspaceCreate),
                    "Acme",
                    Region::Eu,
                    clock.now(),
                )
                .await
                .unwrap();
            store
                .set_membership(
                    &task(Action::MemberManage),
                    user.id,
                    Role::Admin,
                    clock.now(),
                )
                .await
                .unwrap();
            store
                .set_plan(&task(Action::WorkspaceUpdate), plan, clock.now())
                .await
                .unwrap();
        }
        let ring =
            KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x5a).collect::<Vec<_>>()).unwrap()])
                .unwrap();
        let hasher = TokenHasher::new(&ring);
        let (status, idp_metadata) = http("GET", &format!("{idp_base}/metadata"), None);
        assert_eq!(status, 200);
        let configs = Arc::new(SamlConfigs::new());
        let config = SamlConfig::new(&idp_metadata, &["Example.ORG".to_owned()]).unwrap();
        assert_eq!(config.domains(), ["example.org"]);
        configs.insert(workspace, config.clone());
        configs.insert(free, config.clone());
        configs.insert(other, config);
        let logins = SamlLogins::new(
            store.clone() as Arc<dyn Store>,
            hasher.clone(),
            gate.clone(),
            clock.clone(),
            Url::parse(SP_BASE).unwrap(),
            configs.clone(),
            Arc::new(MemoryReplayCache::new()),
        )
        .unwrap();
        Self {
            router: saml_routes(Arc::new(logins)),
            store,
            gate,
            clock,
            hasher,
            configs,
            workspace,
            free,
            other,
            user: user.id,
            idp_metadata,
        }
    }

    async fn audit(&self, workspace: WorkspaceId) -> Vec<AuditRecord> {
        let scope = self
            .gate
            .authorize(
                &Principal::System(SystemTask::Audit),
                workspace,
                Action::AuditRead,
            )
            .unwrap();
        self.store.all_audit_records(&scope).await.unwrap()
    }

    /// The `after` of the `sso.login_failed` records, oldest first.
    async fn failures(&self, workspace: WorkspaceId) -> Vec<serde_json::Value> {
        self.audit(workspace)
            .await
            .into_iter()
            .filter(|r| r.action == AuditAction::SsoLoginFailed)
            .map(|r| r.after.unwrap())
            .collect()
    }

    async fn get(&self, uri: &str) -> axum::response::Response {
        self.router
            .clone()
            .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// Posts the HTTP-POST binding's form to the ACS, as the browser would.
    async fn post_acs(
        &self,
        workspace: WorkspaceId,
        saml_response: &str,
        relay_state: Option<&str>,
    ) -> axum::response::Response {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("SAMLResponse", saml_response);
        if let Some(relay_state) = relay_state {
            form.append_pair("RelayState", relay_state);
        }
        self.router
            .clone()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri(format!("/saml/{workspace}/acs"))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(form.finish()))
                    .unwrap(),
            )
            .await
            .unwrap()
    }
}

async fn body(response: axum::response::Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The session token of a `Set-Cookie`.
fn session_token(response: &axum::response::Response) -> String {
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("{SESSION_COOKIE}=")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"));
    cookie
        .trim_start_matches(&format!("{SESSION_COOKIE}="))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_member_signs_in_through_pysaml2_and_a_replay_is_refused() {
    let f = idp_or_skip!();
    let world = World::new(f.sp.sp().workspace(), &f.idp_base).await;
    let ws = world.workspace;

    // The SP metadata, for the IdP's admin.
    let metadata = world.get(&format!("/saml/{ws}/metadata")).await;
    assert_eq!(metadata.status(), StatusCode::OK);
    assert_eq!(
        metadata.headers()[header::CONTENT_TYPE],
        "application/samlmetadata+xml"
    );
    let xml = body(metadata).await;
    assert!(xml.contains(f.sp.sp().entity_id()) && xml.contains(f.sp.sp().acs_url()));
    let unknown = world
        .get(&format!("/saml/{}/metadata", WorkspaceId::new()))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Start: 303 to the IdP with the AuthnRequest and an opaque RelayState.
    let start = world.get(&format!("/auth/saml/{ws}")).await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    assert_eq!(start.headers()[header::CACHE_CONTROL], "no-store");
    let to_idp = Url::parse(start.headers()[header::LOCATION].to_str().unwrap()).unwrap();
    assert!(
        to_idp
            .as_str()
            .starts_with(&format!("{}/sso/redirect?SAMLRequest=", f.idp_base))
    );

    // The browser at the IdP: signed in, it gets the auto-submitting form for our ACS.
    let (status, page) = http("GET", to_idp.as_str(), None);
    assert_eq!(status, 200, "IdP: {page}");
    assert_eq!(form_value(&page, "<form", "action"), f.sp.sp().acs_url());
    let saml_response = form_value(&page, "name=\"SAMLResponse\"", "value");
    let relay_state = form_value(&page, "name=\"RelayState\"", "value");
    assert_eq!(relay_state.len(), 32);

    // The browser posts it to the ACS: a session cookie, home.
    let done = world.post_acs(ws, &saml_response, Some(&relay_state)).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()[header::LOCATION], "/");
    let token = session_token(&done);

    // The cookie is a live session of the member, bound to the workspace.
    let sessions = Sessions::new(
        world.store.clone(),
        world.hasher.clone(),
        world.clock.clone(),
    );
    let session = sessions.authenticate(&token).await.unwrap();
    assert_eq!(
        session.subject,
        leadmaps_core::auth::totp::Subject::User(world.user)
    );
    assert_eq!(
        world
            .store
            .sso_session_workspace(&session.selector)
            .await
            .unwrap(),
        Some(ws)
    );
    let succeeded: Vec<_> = world
        .audit(ws)
        .await
        .into_iter()
        .filter(|r| r.action == AuditAction::SsoLoginSucceeded)
        .collect();
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].after, Some(json!({ "protocol": "saml" })));
    assert!(world.failures(ws).await.is_empty());

    // The same response again: its login was answered (the RelayState is used up), so it
    // answers no pending request and IdP-initiated login is off. Refused, no cookie, audited.
    let replayed = world.post_acs(ws, &saml_response, Some(&relay_state)).await;
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN);
    assert!(replayed.headers().get(header::SET_COOKIE).is_none());
    let page = body(replayed).await;
    assert!(page.contains("Single sign-on failed"), "{page}");
    assert!(!page.contains("alice"), "{page}");
    assert_eq!(
        world.failures(ws).await,
        [json!({ "protocol": "saml", "reason": "unsolicited" })]
    );

    // With IdP-initiated login allowed, an unsolicited response signs in once; its replay is
    // caught by the replay cache.
    let config = SamlConfig::new(&world.idp_metadata, &["example.org".to_owned()])
        .unwrap()
        .allow_idp_initiated(true);
    world.configs.insert(ws, config);
    let unsolicited = f.forge(json!({}));
    let first = world.post_acs(ws, &unsolicited, None).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    session_token(&first);
    let again = world.post_acs(ws, &unsolicited, None).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert!(again.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        world.failures(ws).await.last(),
        Some(&json!({ "protocol": "saml", "reason": "replayed" }))
    );

    // A response for this workspace posted to another's ACS (same IdP, IdP-initiated allowed
    // there too): not addressed to that SP, refused there.
    let config = SamlConfig::new(&world.idp_metadata, &["example.org".to_owned()])
        .unwrap()
        .allow_idp_initiated(true);
    world.configs.insert(world.other, config);
    let elsewhere = world.post_acs(world.other, &f.forge(json!({})), None).await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert!(elsewhere.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        world.failures(world.other).await,
        [json!({ "protocol": "saml", "reason": "wrong_destination" })]
    );
}

#[tokio::test]
async fn below_business_saml_is_refused_with_the_plan_reason() {
    let f = idp_or_skip!();
    let world = World::new(f.sp.sp().workspace(), &f.idp_base).await;
    let free = world.free;

    let start = world.get(&format!("/auth/saml/{free}")).await;
    assert_eq!(start.status(), StatusCode::FORBIDDEN);
    assert!(start.headers().get(header::LOCATION).is_none());
    assert!(body(start).await.contains("Business plan"));
    assert_eq!(
        world.failures(free).await,
        [json!({ "protocol": "saml", "reason": "plan_lacks_sso" })]
    );

    // The ACS refuses too, whatever it is sent.
    let posted = world.post_acs(free, &f.forge(json!({})), None).await;
    assert_eq!(posted.status(), StatusCode::FORBIDDEN);
    assert!(posted.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(world.failures(free).await.len(), 2);
    assert!(
        world
            .audit(free)
            .await
            .iter()
            .all(|r| r.action != AuditAction::SsoLoginSucceeded)
    );

    // No IdP configured: 404 at the start.
    world.configs.remove(world.workspace);
    let start = world.get(&format!("/auth/saml/{}", world.workspace)).await;
    assert_eq!(start.status(), StatusCode::NOT_FOUND);
}
