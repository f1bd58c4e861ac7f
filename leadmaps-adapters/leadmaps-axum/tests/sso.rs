//! Enforcing SSO per workspace: once a workspace enforces it, a magic-link session no longer
//! reaches it (its other workspaces stay reachable), and a session its identity provider opened
//! reaches that workspace and nothing else.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use leadmaps_axum::dashboard::{DashboardState, dashboard_routes};
use leadmaps_core::auth::keys::ApiKeys;
use leadmaps_core::auth::session::{SESSION_COOKIE, Sessions};
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::auth::totp::{Subject, TotpFactors};
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::mail::Address;
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::policy::Plan;
use leadmaps_core::sso::SsoStore;
use leadmaps_core::store::{Store, WorkspaceStore};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId,
};
use tower::ServiceExt as _;

async fn status(router: &axum::Router, workspace: WorkspaceId, token: &str) -> StatusCode {
    let request = Request::builder()
        .uri(format!("/api/v1/workspaces/{workspace}"))
        .header(header::COOKIE, format!("{SESSION_COOKIE}={token}"))
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn enforced_sso_keeps_magic_link_sessions_out_and_sso_sessions_in_their_workspace() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let store = Arc::new(MemoryStore::new());
    let provisioning = Principal::System(SystemTask::Provisioning);
    let (sso, other) = (WorkspaceId::new(), WorkspaceId::new());
    let user = User {
        id: UserId::new(),
        email: Address::parse("ada@example.com").unwrap(),
        created_at: clock.now(),
    };
    store.create_user(&user).await.unwrap();
    for ws in [sso, other] {
        let scope = |action| gate.authorize(&provisioning, ws, action).unwrap();
        store
            .create_workspace(
                &scope(Action::WorkspaceCreate),
                "w",
                Region::Eu,
                clock.now(),
            )
            .await
            .unwrap();
        store
            .set_membership(
                &scope(Action::MemberManage),
                user.id,
                Role::Admin,
                clock.now(),
            )
            .await
            .unwrap();
    }
    let ring =
        KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x17).collect::<Vec<_>>()).unwrap()])
            .unwrap();
    let hasher = TokenHasher::new(&ring);
    let vault = Arc::new(
        Vault::start(ring, store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let sessions = Arc::new(Sessions::new(store.clone(), hasher.clone(), clock.clone()));
    let totp = Arc::new(TotpFactors::new(
        store.clone(),
        vault.clone(),
        gate.clone(),
        clock.clone(),
        "leadmaps",
    ));
    let keys = Arc::new(ApiKeys::new(
        store.clone(),
        vault,
        hasher.clone(),
        clock.clone(),
    ));
    let router = dashboard_routes(Arc::new(
        DashboardState::new(store.clone() as Arc<dyn Store>, keys, gate.clone())
            .with_sessions(sessions.clone(), totp),
    ));

    // A magic-link session reaches both workspaces.
    let (link_session, _) = sessions.start(Subject::User(user.id), false).await.unwrap();
    let link_session = link_session.expose().to_string();
    assert_eq!(status(&router, sso, &link_session).await, StatusCode::OK);
    assert_eq!(status(&router, other, &link_session).await, StatusCode::OK);

    // The workspace goes Business and enforces SSO (an admin of it).
    store
        .set_plan(
            &gate
                .authorize(&provisioning, sso, Action::WorkspaceUpdate)
                .unwrap(),
            Plan::Business,
            clock.now(),
        )
        .await
        .unwrap();
    let admin = Principal::member(user.id, [(sso, Role::Admin)]);
    store
        .set_sso_enforced(
            &gate.authorize(&admin, sso, Action::MemberManage).unwrap(),
            true,
            clock.now(),
        )
        .await
        .unwrap();
    // The magic-link session no longer reaches it, but still reaches the other one.
    assert_eq!(
        status(&router, sso, &link_session).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(&router, other, &link_session).await, StatusCode::OK);
    // A new magic-link session neither.
    let (fresh, _) = sessions.start(Subject::User(user.id), false).await.unwrap();
    assert_eq!(
        status(&router, sso, &fresh.expose()).await,
        StatusCode::NOT_FOUND
    );

    // A session the workspace's identity provider opened reaches it, and only it.
    let member = Principal::member(user.id, [(sso, Role::Admin)]);
    let (sso_token, _) = leadmaps_core::sso::start_sso_session(
        &*store,
        &hasher,
        &gate.authorize(&member, sso, Action::WorkspaceRead).unwrap(),
        leadmaps_core::sso::SsoProtocol::Oidc,
        clock.now(),
    )
    .await
    .unwrap();
    let sso_token = sso_token.expose().to_string();
    assert_eq!(status(&router, sso, &sso_token).await, StatusCode::OK);
    assert_eq!(
        status(&router, other, &sso_token).await,
        StatusCode::NOT_FOUND,
        "an identity provider vouches for its own workspace only"
    );

    // Passing a second factor rotates the session; the rotated one is still bound.
    let session = sessions.authenticate(&sso_token).await.unwrap();
    let (rotated, after) = sessions.rotate(&session, true).await.unwrap();
    assert!(after.second_factor);
    let rotated = rotated.expose().to_string();
    assert_eq!(
        status(&router, sso, &sso_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&router, sso, &rotated).await, StatusCode::OK);
    assert_eq!(
        status(&router, other, &rotated).await,
        StatusCode::NOT_FOUND,
        "rotation does not unbind"
    );

    // Switching enforcement off lets magic links back in.
    store
        .set_sso_enforced(
            &gate.authorize(&admin, sso, Action::MemberManage).unwrap(),
            false,
            clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(status(&router, sso, &link_session).await, StatusCode::OK);
}
