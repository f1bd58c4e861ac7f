//! The relying party against a provider this test controls (discovery, JWKS and a token
//! endpoint on loopback, ID tokens signed with test RSA keys): a good token signs in; a token
//! with the wrong `iss`, the wrong `aud`, the wrong nonce, an expired one, `alg: none`, an HMAC
//! keyed by the client secret, an unverified address, an address outside the verified domains or
//! of a non-member, a replayed or stale `state` are refused and audited; an unknown `kid`
//! refetches the JWKS at most once per five minutes.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use base64::Engine as _;
use common::{CLIENT_ID, CLIENT_SECRET, World, param};
use leadmaps_core::audit::AuditAction;
use leadmaps_core::clock::{Clock, ManualClock};
use leadmaps_core::policy::Plan;
use leadmaps_core::sso::SsoStore;
use leadmaps_oidc::LoginFailure;
use openidconnect::core::{
    CoreHmacKey, CoreIdToken, CoreIdTokenClaims, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey,
};
use openidconnect::{
    Audience, EmptyAdditionalClaims, EndUserEmail, IssuerUrl, JsonWebKeyId, Nonce,
    PrivateSigningKey as _, StandardClaims, SubjectIdentifier,
};
use serde_json::{Value, json};
use time::Duration;

#[derive(Default)]
struct Provider {
    issuer: String,
    keys: Mutex<Vec<Value>>,
    next_token: Mutex<String>,
    jwks_served: AtomicU64,
}

async fn discovery(State(p): State<Arc<Provider>>) -> axum::Json<Value> {
    axum::Json(json!({
        "issuer": p.issuer,
        "authorization_endpoint": format!("{}/authorize", p.issuer),
        "token_endpoint": format!("{}/token", p.issuer),
        "jwks_uri": format!("{}/jwks", p.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(p): State<Arc<Provider>>) -> axum::Json<Value> {
    p.jwks_served.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "keys": *p.keys.lock().unwrap() }))
}

async fn token(State(p): State<Arc<Provider>>) -> axum::Json<Value> {
    axum::Json(json!({
        "access_token": "at",
        "token_type": "Bearer",
        "expires_in": 3600,
        "id_token": *p.next_token.lock().unwrap(),
    }))
}

fn key(name: &str) -> CoreRsaPrivateSigningKey {
    let pem = match name {
        "k1" => include_str!("keys/k1.pem"),
        _ => include_str!("keys/k2.pem"),
    };
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new(name.to_owned()))).unwrap()
}

fn jwk(name: &str) -> Value {
    serde_json::to_value(key(name).as_verification_key()).unwrap()
}

struct Test {
    world: World,
    clock: Arc<ManualClock>,
    provider: Arc<Provider>,
}

impl Test {
    async fn new(plan: Plan) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let provider = Arc::new(Provider {
            issuer: issuer.clone(),
            keys: Mutex::new(vec![jwk("k1")]),
            ..Provider::default()
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(provider.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let start = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let world = World::new(clock.clone(), &issuer, plan).await;
        Self {
            world,
            clock,
            provider,
        }
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(self.clock.now().unix_timestamp(), 0).unwrap()
    }

    fn claims(&self, nonce: &str) -> CoreIdTokenClaims {
        self.claims_with(nonce, "ada@example.com", true)
    }

    fn claims_with(&self, nonce: &str, email: &str, verified: bool) -> CoreIdTokenClaims {
        CoreIdTokenClaims::new(
            IssuerUrl::new(self.provider.issuer.clone()).unwrap(),
            vec![Audience::new(CLIENT_ID.to_owned())],
            self.now() + chrono::Duration::minutes(5),
            self.now(),
            StandardClaims::new(SubjectIdentifier::new("ada-at-idp".to_owned()))
                .set_email(Some(EndUserEmail::new(email.to_owned())))
                .set_email_verified(Some(verified)),
            EmptyAdditionalClaims {},
        )
        .set_nonce(Some(Nonce::new(nonce.to_owned())))
    }

    /// One login: `make` builds the ID token from this login's nonce, between the redirect to
    /// the provider and the callback; `between` runs there too (the clock may move).
    async fn login(
        &self,
        make: impl FnOnce(&Self, &str) -> String,
    ) -> Result<leadmaps_oidc::SsoLogin, LoginFailure> {
        let url = self.world.rp.begin(self.world.workspace).await?;
        assert_eq!(param(&url, "code_challenge_method"), "S256", "PKCE");
        assert_eq!(param(&url, "client_id"), CLIENT_ID);
        let nonce = param(&url, "nonce");
        let state = param(&url, "state");
        *self.provider.next_token.lock().unwrap() = make(self, &nonce);
        self.world.rp.complete(&state, Some("code-1"), None).await
    }
}

fn rs256(claims: CoreIdTokenClaims, key_name: &str) -> String {
    let token = CoreIdToken::new(
        claims,
        &key(key_name),
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        None,
        None,
    )
    .unwrap();
    serde_json::to_value(&token)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_good_token_signs_the_member_in_and_every_bad_one_is_refused_and_audited() {
    let t = Test::new(Plan::Business).await;
    let login = t
        .login(|t, nonce| rs256(t.claims(nonce), "k1"))
        .await
        .unwrap();
    assert_eq!(
        (login.user, login.workspace),
        (t.world.user, t.world.workspace)
    );
    assert_eq!(
        t.world
            .store
            .sso_session_workspace(&login.session.selector)
            .await
            .unwrap(),
        Some(t.world.workspace),
        "the session is bound to the workspace"
    );
    assert!(
        t.world
            .audit()
            .await
            .iter()
            .any(|r| r.action == AuditAction::SsoLoginSucceeded)
    );

    type Make = fn(&Test, &str) -> String;
    let cases: Vec<(&str, Make, LoginFailure)> = vec![
        (
            "wrong iss",
            |t, n| {
                let claims = t
                    .claims(n)
                    .set_issuer(IssuerUrl::new("https://evil.example".into()).unwrap());
                rs256(claims, "k1")
            },
            LoginFailure::WrongIssuer,
        ),
        (
            "wrong aud",
            |t, n| {
                rs256(
                    t.claims(n)
                        .set_audiences(vec![Audience::new("someone-else".into())]),
                    "k1",
                )
            },
            LoginFailure::WrongAudience,
        ),
        (
            "wrong nonce",
            |t, _| rs256(t.claims("not-this-login"), "k1"),
            LoginFailure::WrongNonce,
        ),
        (
            "expired",
            |t, n| {
                let claims = t
                    .claims(n)
                    .set_expiration(t.now() - chrono::Duration::seconds(1))
                    .set_issue_time(t.now() - chrono::Duration::minutes(10));
                rs256(claims, "k1")
            },
            LoginFailure::Expired,
        ),
        (
            "alg none",
            |t, n| {
                let claims = serde_json::to_value(t.claims(n)).unwrap();
                let header = json!({"alg": "none", "typ": "JWT"});
                format!(
                    "{}.{}.",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string()),
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
                )
            },
            LoginFailure::WrongAlgorithm,
        ),
        (
            "HS256 keyed by the client secret",
            |t, n| {
                let token = CoreIdToken::new(
                    t.claims(n),
                    &CoreHmacKey::new(CLIENT_SECRET.as_bytes()),
                    CoreJwsSigningAlgorithm::HmacSha256,
                    None,
                    None,
                )
                .unwrap();
                serde_json::to_value(&token)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            },
            LoginFailure::WrongAlgorithm,
        ),
        (
            "signed by a key that is not the provider's, under its kid",
            |t, n| {
                // k2's signature, labelled k1: the kid is known, the signature is not.
                let token = rs256(t.claims(n), "k2");
                let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
                let header = json!({"alg": "RS256", "kid": "k1"});
                parts[0] =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string());
                parts.join(".")
            },
            LoginFailure::BadSignature,
        ),
        (
            "unverified address",
            |t, n| rs256(t.claims_with(n, "ada@example.com", false), "k1"),
            LoginFailure::UnverifiedEmail,
        ),
        (
            "address outside the verified domains",
            |t, n| rs256(t.claims_with(n, "ada@example.org", true), "k1"),
            LoginFailure::UnverifiedEmail,
        ),
        (
            "a user who is not a member",
            |t, n| rs256(t.claims_with(n, "eve@example.com", true), "k1"),
            LoginFailure::NotAMember,
        ),
    ];
    let mut expected_reasons = Vec::new();
    for (name, make, failure) in cases {
        let result = t.login(make).await;
        assert_eq!(result.err(), Some(failure), "{name}");
        expected_reasons.push(failure.as_str().to_owned());
    }
    assert_eq!(
        t.world.failures().await,
        expected_reasons,
        "every refusal is audited"
    );
    let log = format!("{:?}", t.world.audit().await);
    assert!(!log.contains("ada@example.com") && !log.contains("eve@example.com"));
}

#[tokio::test]
async fn state_is_single_use_and_expires() {
    let t = Test::new(Plan::Business).await;
    let url = t.world.rp.begin(t.world.workspace).await.unwrap();
    let (state, nonce) = (param(&url, "state"), param(&url, "nonce"));
    *t.provider.next_token.lock().unwrap() = rs256(t.claims(&nonce), "k1");
    assert!(t.world.rp.complete(&state, Some("c"), None).await.is_ok());
    assert_eq!(
        t.world.rp.complete(&state, Some("c"), None).await.err(),
        Some(LoginFailure::UnknownState),
        "replayed"
    );
    let url = t.world.rp.begin(t.world.workspace).await.unwrap();
    t.clock.advance(Duration::minutes(11));
    assert_eq!(
        t.world
            .rp
            .complete(&param(&url, "state"), Some("c"), None)
            .await
            .err(),
        Some(LoginFailure::UnknownState),
        "stale"
    );
    let url = t.world.rp.begin(t.world.workspace).await.unwrap();
    assert_eq!(
        t.world
            .rp
            .complete(&param(&url, "state"), None, Some("access_denied"))
            .await
            .err(),
        Some(LoginFailure::ProviderError)
    );
    assert_eq!(t.world.failures().await, ["provider_error"]);
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_five_minutes() {
    let t = Test::new(Plan::Business).await;
    assert!(t.login(|t, n| rs256(t.claims(n), "k1")).await.is_ok());
    assert_eq!(
        t.provider.jwks_served.load(Ordering::SeqCst),
        1,
        "discovery"
    );
    // The provider rotates to k2. Right after the last fetch, an unknown kid does not refetch.
    *t.provider.keys.lock().unwrap() = vec![jwk("k2")];
    t.clock.advance(Duration::minutes(4));
    assert_eq!(
        t.login(|t, n| rs256(t.claims(n), "k2")).await.err(),
        Some(LoginFailure::BadSignature)
    );
    assert_eq!(
        t.provider.jwks_served.load(Ordering::SeqCst),
        1,
        "rate-limited"
    );
    // Five minutes after it, the unknown kid refetches once, and the login succeeds.
    t.clock.advance(Duration::minutes(1));
    assert!(t.login(|t, n| rs256(t.claims(n), "k2")).await.is_ok());
    assert_eq!(t.provider.jwks_served.load(Ordering::SeqCst), 2);
    // A flood of unknown kids right after is not a flood of fetches.
    for _ in 0..5 {
        assert_eq!(
            t.login(|t, n| rs256(t.claims(n), "k1")).await.err(),
            Some(LoginFailure::BadSignature)
        );
    }
    assert_eq!(t.provider.jwks_served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn below_business_no_login_starts() {
    let t = Test::new(Plan::Pro).await;
    assert_eq!(
        t.world.rp.begin(t.world.workspace).await.err(),
        Some(LoginFailure::PlanLacksSso)
    );
    assert_eq!(t.world.failures().await, ["plan_lacks_sso"]);
}
