//! Magic-link sign-in over HTTP: identical answers for known and unknown addresses, link fetches
//! that consume nothing, one sign-in per link, expiry.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use leadmaps_axum::auth::{AuthServices, AuthState, auth_routes};
use leadmaps_core::auth::recovery::RecoveryCodes;
use leadmaps_core::auth::session::Sessions;
use leadmaps_core::auth::staff::StepUp;
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::auth::totp::TotpFactors;
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::clock::{Clock, ManualClock};
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::mail::{Address, Outbox};
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::tenancy::{Gate, UserId};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt as _;

struct World {
    router: axum::Router,
    outbox: Arc<Outbox>,
    clock: Arc<ManualClock>,
}

async fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    ));
    let ring =
        KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x4d).collect::<Vec<_>>()).unwrap()])
            .unwrap();
    let sessions = Arc::new(Sessions::new(
        store.clone(),
        TokenHasher::new(&ring),
        clock.clone(),
    ));
    let user = User {
        id: UserId::new(),
        email: Address::parse("known@example.com").unwrap(),
        created_at: clock.now(),
    };
    store.create_user(&user).await.unwrap();
    let outbox = Arc::new(Outbox::new());
    let vault = Arc::new(
        Vault::start(ring, store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let state = AuthState::new(
        AuthServices {
            identities: store.clone(),
            sessions,
            totp: Arc::new(TotpFactors::new(
                store.clone(),
                vault,
                Gate::new(clock.clone()),
                clock.clone(),
                "leadmaps",
            )),
            recovery: Arc::new(RecoveryCodes::new(store.clone())),
            step_up: Arc::new(StepUp::new(store.clone(), clock.clone())),
            mailer: outbox.clone(),
            audit: store.clone(),
            gate: Gate::new(clock.clone()),
            clock: clock.clone(),
        },
        "https://app.example",
        vec![],
    );
    World {
        router: auth_routes(Arc::new(state)),
        outbox,
        clock,
    }
}

async fn send(w: &World, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = w.router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes().to_vec(),
    )
}

fn ask(email: &str) -> Request<Body> {
    Request::post("/auth/magic-link")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!("{{\"email\":\"{email}\"}}")))
        .unwrap()
}

fn confirm(token: &str) -> Request<Body> {
    Request::post("/auth/magic-link/confirm")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap()
}

async fn wait_for_mail(outbox: &Outbox, count: usize) -> String {
    for _ in 0..200 {
        if let Some(email) = outbox.sent().get(count - 1) {
            let token = email
                .text
                .split("token=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            return token;
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    panic!("no mail arrived");
}

#[tokio::test]
async fn known_and_unknown_addresses_get_byte_identical_answers() {
    let w = world().await;
    let (s1, h1, b1) = send(&w, ask("known@example.com")).await;
    let (s2, h2, b2) = send(&w, ask("nobody@example.com")).await;
    let (s3, h3, b3) = send(&w, ask("not an address")).await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!((s1, &b1), (s3, &b3));
    assert_eq!(s1, StatusCode::ACCEPTED);
    let strip = |h: &axum::http::HeaderMap| {
        let mut h = h.clone();
        h.remove(header::DATE);
        format!("{h:?}")
    };
    assert_eq!(strip(&h1), strip(&h2));
    assert_eq!(strip(&h1), strip(&h3));
    wait_for_mail(&w.outbox, 1).await;
    tokio::time::sleep(StdDuration::from_millis(50)).await;
    assert_eq!(w.outbox.sent().len(), 1, "only the known address gets mail");
}

#[tokio::test]
async fn fetching_the_link_consumes_nothing_and_the_first_post_signs_in() {
    let w = world().await;
    send(&w, ask("known@example.com")).await;
    let token = wait_for_mail(&w.outbox, 1).await;
    for n in 0..20 {
        let method = if n % 2 == 0 {
            Method::GET
        } else {
            Method::HEAD
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("/auth/magic-link?token={token}"))
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send(&w, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
    let (status, headers, _) = send(&w, confirm(&token)).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the link still works after 20 fetches"
    );
    assert_eq!(headers[header::LOCATION], "/");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-leadmaps_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Lax")
    );
    let (again, headers, _) = send(&w, confirm(&token)).await;
    assert_eq!(again, StatusCode::BAD_REQUEST, "single use");
    assert!(!headers.contains_key(header::SET_COOKIE));
}

#[tokio::test]
async fn an_expired_link_fails() {
    let w = world().await;
    send(&w, ask("known@example.com")).await;
    let token = wait_for_mail(&w.outbox, 1).await;
    w.clock.advance(Duration::minutes(10));
    assert_eq!(send(&w, confirm(&token)).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_confirm_page_escapes_what_it_echoes() {
    let w = world().await;
    let (_, _, body) = send(
        &w,
        Request::get("/auth/magic-link?token=%22%3E%3Cscript%3E")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let page = String::from_utf8(body).unwrap();
    assert!(!page.contains("<script>") && page.contains("&quot;&gt;&lt;script&gt;"));
}
