//! End to end against an independent OpenID provider: `oidc-provider-mock` (PyPI, built on
//! Authlib) on loopback, through the login routes. The browser's part (the provider's sign-in
//! form) is played by an HTTP client.
//!
//! The provider runs in `LEADMAPS_OIDC_PYTHON` (default: `/root/.cache/leadmaps-py/bin/python3`,
//! then `python3`); without it the test is skipped loudly, or fails with `LEADMAPS_REQUIRE_OIDC=1`.
//! Install: `pip install -r requirements-ci.txt`.

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{World, param};
use leadmaps_core::audit::AuditAction;
use leadmaps_core::auth::session::{SESSION_COOKIE, Sessions};
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::policy::Plan;
use leadmaps_core::sso::SsoStore;
use leadmaps_oidc::oidc_routes;
use tower::ServiceExt as _;

fn python() -> Option<String> {
    let candidates = match std::env::var("LEADMAPS_OIDC_PYTHON") {
        Ok(python) => vec![python],
        Err(_) => vec![
            "/root/.cache/leadmaps-py/bin/python3".to_owned(),
            "python3".to_owned(),
        ],
    };
    candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import oidc_provider_mock"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

struct Provider {
    child: tokio::process::Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn provider() -> Option<Provider> {
    let Some(python) = python() else {
        if std::env::var("LEADMAPS_REQUIRE_OIDC").is_ok_and(|v| v == "1") {
            panic!(
                "LEADMAPS_REQUIRE_OIDC=1 but no Python can import oidc_provider_mock \
                 (pip install -r requirements-ci.txt, or set LEADMAPS_OIDC_PYTHON)"
            );
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED: no Python with oidc-provider-mock; OIDC was NOT tested against a real \
             provider. Set LEADMAPS_REQUIRE_OIDC=1 to fail instead."
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(python)
        .args([
            "-m",
            "oidc_provider_mock",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["--require-nonce", "true"])
        .args([
            "--user-claims",
            r#"{"sub": "ada", "email": "ada@example.com", "email_verified": true}"#,
            "--user-claims",
            r#"{"sub": "mallory", "email": "ada@example.com", "email_verified": false}"#,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start oidc-provider-mock");
    let provider = Provider {
        child,
        issuer: format!("http://127.0.0.1:{port}"),
    };
    let http = openidconnect::reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("{}/.well-known/openid-configuration", provider.issuer);
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Some(provider);
        }
        assert!(
            Instant::now() < deadline,
            "oidc-provider-mock did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(router: &axum::Router, uri: &str) -> axum::response::Response {
    router
        .clone()
        .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// Starts a login at leadmaps, signs `sub` in at the provider, and returns leadmaps' answer to
/// the callback.
async fn sign_in(router: &axum::Router, world: &World, sub: &str) -> axum::response::Response {
    let start = get(router, &format!("/auth/sso/{}", world.workspace)).await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let authorize = url::Url::parse(start.headers()[header::LOCATION].to_str().unwrap()).unwrap();
    assert_eq!(param(&authorize, "code_challenge_method"), "S256");
    assert!(!param(&authorize, "nonce").is_empty() && !param(&authorize, "state").is_empty());
    // The browser at the provider: its sign-in form, posted.
    let browser = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = browser
        .post(authorize.as_str())
        .form(&[("sub", sub)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 302, "the provider redirects back");
    let back = url::Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(back.path(), leadmaps_oidc::CALLBACK_PATH);
    get(
        router,
        &format!("{}?{}", back.path(), back.query().unwrap()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_signs_in_through_oidc_provider_mock() {
    let Some(provider) = provider().await else {
        return;
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let world = World::new(clock.clone(), &provider.issuer, Plan::Business).await;
    let router = oidc_routes(world.rp.clone());

    let done = sign_in(&router, &world, "ada").await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()[header::LOCATION], "/");
    let cookie = done.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with(&format!("{SESSION_COOKIE}=")));
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"));
    let token = cookie
        .trim_start_matches(&format!("{SESSION_COOKIE}="))
        .split(';')
        .next()
        .unwrap();
    // The cookie is a live session of the member, bound to the workspace.
    let sessions = Sessions::new(world.store.clone(), world.hasher.clone(), clock);
    let session = sessions.authenticate(token).await.unwrap();
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
        Some(world.workspace)
    );
    assert!(
        world
            .audit()
            .await
            .iter()
            .any(|r| r.action == AuditAction::SsoLoginSucceeded)
    );

    // The provider vouches for the address but not that it is verified: refused, audited.
    let refused = sign_in(&router, &world, "mallory").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(world.failures().await, ["unverified_email"]);

    // A callback nobody started.
    let forged = get(&router, "/auth/sso/callback?state=forged&code=x").await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}
