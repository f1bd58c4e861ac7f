//! The second factor over HTTP: the TOTP challenge after a magic link (5 tries, reuse reported to
//! the holder), recovery codes, enrolment, the staff realm (every staff API route refuses a
//! session without a second factor: the test walks `STAFF_ROUTES`), and the workspace policy
//! "require TOTP" on the workspace routes.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use leadmaps_axum::auth::{AuthServices, AuthState, STAFF_ROUTES, auth_routes, staff_routes};
use leadmaps_axum::dashboard::{DashboardState, dashboard_routes};
use leadmaps_axum::staff::{IMPERSONATION_ROUTES, ImpersonationState, impersonation_routes};
use leadmaps_core::audit::{AuditAction, AuditRecord, AuditStore};
use leadmaps_core::auth::impersonation::Impersonation;
use leadmaps_core::auth::keys::ApiKeys;
use leadmaps_core::auth::otp::{OtpAuth, Totp};
use leadmaps_core::auth::recovery::RecoveryCodes;
use leadmaps_core::auth::session::{CHALLENGE_TRIES, Sessions};
use leadmaps_core::auth::staff::{SensitiveAction, StaffMember, StaffStore, StepUp};
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::auth::totp::{Subject, TotpFactors};
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::clock::{Clock, ManualClock};
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::mail::{Address, Outbox};
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::store::{Store, WorkspaceStore};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, StaffId, SystemTask, UserId, WorkspaceId,
};
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use tower::ServiceExt as _;

struct World {
    router: axum::Router,
    store: Arc<MemoryStore>,
    outbox: Arc<Outbox>,
    clock: Arc<ManualClock>,
    totp: Arc<TotpFactors>,
    step_up: Arc<StepUp>,
    gate: Gate,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The session cookie this reply sets, as a `Cookie` request header value.
    fn cookie(&self) -> String {
        let set = self.headers[header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }
}

async fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    ));
    let gate = Gate::new(clock.clone());
    let ring =
        KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x6b).collect::<Vec<_>>()).unwrap()])
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
    let step_up = Arc::new(StepUp::new(store.clone(), clock.clone()));
    let outbox = Arc::new(Outbox::new());
    let state = Arc::new(AuthState::new(
        AuthServices {
            identities: store.clone(),
            sessions: sessions.clone(),
            totp: totp.clone(),
            recovery: Arc::new(RecoveryCodes::new(store.clone())),
            step_up: step_up.clone(),
            mailer: outbox.clone(),
            audit: store.clone(),
            gate: gate.clone(),
            clock: clock.clone(),
        },
        "https://app.example",
        vec![],
    ));
    let keys = Arc::new(ApiKeys::new(store.clone(), vault, hasher, clock.clone()));
    let dashboard = Arc::new(
        DashboardState::new(store.clone() as Arc<dyn Store>, keys, gate.clone())
            .with_sessions(sessions, totp.clone()),
    );
    let impersonation = Arc::new(ImpersonationState::new(
        state.clone(),
        Arc::new(Impersonation::new(store.clone(), gate.clone())),
        store.clone(),
    ));
    World {
        router: auth_routes(state.clone())
            .merge(staff_routes(state))
            .merge(impersonation_routes(impersonation))
            .merge(dashboard_routes(dashboard)),
        store,
        outbox,
        clock,
        totp,
        step_up,
        gate,
    }
}

impl World {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap(),
        }
    }

    /// The instance tenant's audit records of `action` (people's security events live there).
    async fn instance_log(&self, action: AuditAction) -> Vec<AuditRecord> {
        let auditor = self
            .gate
            .authorize(
                &Principal::System(SystemTask::Audit),
                WorkspaceId::INSTANCE,
                Action::AuditRead,
            )
            .unwrap();
        let log = self.store.audit_records(&auditor, 0, 100).await.unwrap();
        log.into_iter().filter(|r| r.action == action).collect()
    }

    async fn user(&self, email: &str) -> UserId {
        let user = User {
            id: UserId::new(),
            email: Address::parse(email).unwrap(),
            created_at: self.clock.now(),
        };
        self.store.create_user(&user).await.unwrap();
        user.id
    }

    async fn staff(&self, email: &str) -> StaffId {
        let staff = StaffMember {
            id: StaffId::new(),
            email: Address::parse(email).unwrap(),
            created_at: self.clock.now(),
        };
        self.store.create_staff(&staff).await.unwrap();
        staff.id
    }

    /// Enrols a factor (pending) and returns its seed.
    async fn enrol(&self, subject: Subject) -> Vec<u8> {
        let uri = self.totp.enroll(subject, "someone").await.unwrap();
        OtpAuth::parse(&uri).unwrap().secret.to_vec()
    }

    /// Enrols and confirms a factor; returns its seed. Moves the clock to the next step.
    async fn active_factor(&self, subject: Subject) -> Vec<u8> {
        let seed = self.enrol(subject).await;
        self.totp
            .confirm(subject, &self.code(&seed), &*self.store)
            .await
            .unwrap();
        self.clock.advance(Duration::seconds(30));
        seed
    }

    fn code(&self, seed: &[u8]) -> String {
        let totp = Totp::default();
        totp.format(totp.code_at(seed, self.clock.now().unix_timestamp() as u64))
    }

    /// Requests and confirms a magic link; returns the reply of the confirmation.
    async fn sign_in(&self, prefix: &str, email: &str) -> Reply {
        let before = self.outbox.sent().len();
        let reply = self
            .send(
                Request::post(format!("{prefix}/magic-link"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(format!("{{\"email\":\"{email}\"}}")))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        let token = self.wait_for_mail(before + 1).await;
        let token = token
            .split("token=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        self.send(
            Request::post(format!("{prefix}/magic-link/confirm"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={token}")))
                .unwrap(),
        )
        .await
    }

    async fn wait_for_mail(&self, count: usize) -> String {
        for _ in 0..400 {
            if let Some(email) = self.outbox.sent().get(count - 1) {
                return email.text.clone();
            }
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        panic!("no mail arrived");
    }

    async fn challenge(&self, prefix: &str, cookie: &str, code: &str) -> Reply {
        self.send(
            Request::post(format!("{prefix}/totp"))
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("code={}", code.replace(' ', "+"))))
                .unwrap(),
        )
        .await
    }

    async fn json(&self, method: &str, path: &str, cookie: Option<&str>, body: Value) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let body = if body.is_null() {
            "{}".to_owned()
        } else {
            body.to_string()
        };
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// Buys a step-up grant for `action` with a fresh code (the clock moves to the next step).
    async fn step_up_with(&self, cookie: &str, seed: &[u8], action: &str) -> Reply {
        self.clock.advance(Duration::seconds(30));
        let body = serde_json::json!({"action": action, "code": self.code(seed)});
        self.json("POST", "/staff/api/v1/step-up", Some(cookie), body)
            .await
    }

    async fn get(&self, path: &str, cookie: &str) -> Reply {
        self.send(
            Request::get(path)
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }
}

#[tokio::test]
async fn a_member_with_totp_is_challenged_and_five_wrong_codes_end_the_sign_in() {
    let w = world().await;
    let alice = w.user("alice@example.com").await;
    w.active_factor(Subject::User(alice)).await;
    let first = w.sign_in("/auth", "alice@example.com").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(first.headers[header::LOCATION], "/auth/totp");
    let cookie = first.cookie();
    // Until the challenge is passed the session reaches no workspace, whatever its policy.
    let ws = WorkspaceId::new();
    let provisioning = Principal::System(SystemTask::Provisioning);
    w.store
        .create_workspace(
            &w.gate
                .authorize(&provisioning, ws, Action::WorkspaceCreate)
                .unwrap(),
            "w",
            Region::Eu,
            w.clock.now(),
        )
        .await
        .unwrap();
    w.store
        .set_membership(
            &w.gate
                .authorize(&provisioning, ws, Action::MemberManage)
                .unwrap(),
            alice,
            Role::Viewer,
            w.clock.now(),
        )
        .await
        .unwrap();
    let half = w.get(&format!("/api/v1/workspaces/{ws}"), &cookie).await;
    assert_eq!(half.status, StatusCode::UNAUTHORIZED, "{}", half.body);
    for n in 1..CHALLENGE_TRIES {
        let wrong = w.challenge("/auth", &cookie, "000000").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        let left = CHALLENGE_TRIES - n;
        assert!(wrong.body.contains(&format!("{left} tr")), "{}", wrong.body);
    }
    let last = w.challenge("/auth", &cookie, "000000").await;
    assert_eq!(last.status, StatusCode::UNAUTHORIZED);
    assert!(
        last.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The sign-in is over: any code needs a new link now.
    let after = w.challenge("/auth", &cookie, "123456").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(after.body.contains("expired"));
}

#[tokio::test]
async fn the_right_code_rotates_the_session_and_a_reused_one_is_refused_and_reported() {
    let w = world().await;
    let alice = w.user("alice@example.com").await;
    let seed = w.active_factor(Subject::User(alice)).await;
    let first = w.sign_in("/auth", "alice@example.com").await;
    let half = first.cookie();
    let code = w.code(&seed);
    let ok = w.challenge("/auth", &half, &code).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.headers[header::LOCATION], "/");
    let full = ok.cookie();
    assert_ne!(full, half, "a new session after the privilege change");
    // The old cookie is gone; the new one passed the second factor.
    assert_eq!(
        w.json(
            "POST",
            "/auth/sign-out/everywhere",
            Some(&half),
            Value::Null
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );

    // Two sign-ins waiting for their challenge; one code passes the first and is refused, as
    // a reuse, at the second, and the holder is told.
    w.clock.advance(Duration::seconds(61)); // the interval between two links to one address
    let one = w.sign_in("/auth", "alice@example.com").await.cookie();
    w.clock.advance(Duration::seconds(61));
    let two = w.sign_in("/auth", "alice@example.com").await.cookie();
    let mails_before = w.outbox.sent().len();
    let code = w.code(&seed);
    assert_eq!(
        w.challenge("/auth", &one, &code).await.status,
        StatusCode::SEE_OTHER
    );
    let replay = w.challenge("/auth", &two, &code).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    let notice = w.wait_for_mail(mails_before + 1).await;
    assert!(notice.contains("already been used"), "{notice}");
    assert_eq!(
        w.outbox.sent().last().unwrap().to.as_str(),
        "alice@example.com",
        "the holder is told"
    );
    // ... and the instance tenant's audit log holds the event, naming Alice.
    let reuse = w.instance_log(AuditAction::TotpReuseDetected).await;
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0].target.id, alice.to_string());
    assert!(
        !notice.contains(&code),
        "the notice does not repeat the code"
    );
}

#[tokio::test]
async fn enrolment_gives_recovery_codes_once_and_each_works_once() {
    let w = world().await;
    let bob = w.user("bob@example.com").await;
    let first = w.sign_in("/auth", "bob@example.com").await;
    assert_eq!(
        first.headers[header::LOCATION],
        "/",
        "no factor, no challenge"
    );
    let cookie = first.cookie();

    // Non-JSON bodies are refused (no cross-site forms).
    let form = w
        .send(
            Request::post("/auth/totp/enroll")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("code=1"))
                .unwrap(),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        w.json("POST", "/auth/totp/enroll", None, Value::Null)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let enrolled = w
        .json("POST", "/auth/totp/enroll", Some(&cookie), Value::Null)
        .await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
    assert_eq!(enrolled.headers[header::CACHE_CONTROL], "no-store");
    let uri = enrolled.json()["otpauth_uri"].as_str().unwrap().to_owned();
    assert!(
        uri.contains("bob%40example.com") || uri.contains("bob@example.com"),
        "{uri}"
    );
    let seed = OtpAuth::parse(&uri).unwrap().secret.to_vec();

    let wrong = w
        .json(
            "POST",
            "/auth/totp/enroll/confirm",
            Some(&cookie),
            serde_json::json!({"code": "000000"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let confirmed = w
        .json(
            "POST",
            "/auth/totp/enroll/confirm",
            Some(&cookie),
            serde_json::json!({"code": w.code(&seed)}),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let codes: Vec<String> = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let full = confirmed.cookie();
    // The enrolment is in the instance tenant's audit log, naming Bob.
    let enrolled = w.instance_log(AuditAction::TotpEnrolled).await;
    assert_eq!(enrolled.len(), 1);
    assert_eq!(enrolled[0].target.id, bob.to_string());

    // Replacing the factor from a first-factor session is refused.
    let second = {
        w.clock.advance(Duration::seconds(61));
        w.sign_in("/auth", "bob@example.com").await
    };
    assert_eq!(second.headers[header::LOCATION], "/auth/totp");
    let half = second.cookie();
    assert_eq!(
        w.json(
            "POST",
            "/auth/totp/enroll",
            Some(&half),
            serde_json::json!({"code": w.code(&seed)})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.json(
            "POST",
            "/auth/recovery-codes",
            Some(&half),
            serde_json::json!({"code": w.code(&seed)})
        )
        .await
        .status,
        StatusCode::FORBIDDEN,
        "new codes need a session that passed the second factor"
    );

    // A recovery code passes the challenge once.
    let ok = w.challenge("/auth", &half, &codes[0]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    w.clock.advance(Duration::seconds(61));
    let third = w.sign_in("/auth", "bob@example.com").await;
    let again = w.challenge("/auth", &third.cookie(), &codes[0]).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "single use");

    // Regeneration: a fresh code from a full session; the old set stops working.
    assert_eq!(
        w.json("POST", "/auth/recovery-codes", Some(&full), Value::Null)
            .await
            .status,
        StatusCode::FORBIDDEN,
        "a code is required"
    );
    w.clock.advance(Duration::seconds(30));
    let fresh = w
        .json(
            "POST",
            "/auth/recovery-codes",
            Some(&full),
            serde_json::json!({"code": w.code(&seed)}),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    let new_codes = fresh.json()["recovery_codes"].as_array().unwrap().len();
    assert_eq!(new_codes, 10);
    let old = w.challenge("/auth", &third.cookie(), &codes[1]).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "the old set is gone");
}

#[tokio::test]
async fn staff_routes_refuse_every_session_without_a_staff_second_factor() {
    let w = world().await;
    // A staff member without a factor cannot sign in at all.
    w.staff("nofactor@leadmaps.example").await;
    let refused = w.sign_in("/staff/auth", "nofactor@leadmaps.example").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.headers.contains_key(header::SET_COOKIE));

    let ops = w.staff("ops@leadmaps.example").await;
    let seed = w.enrol(Subject::Staff(ops)).await; // operator-enrolled, confirmed at first use
    let first = w.sign_in("/staff/auth", "ops@leadmaps.example").await;
    assert_eq!(first.headers[header::LOCATION], "/staff/auth/totp");
    let half = first.cookie();

    // A customer with a full session is not staff either.
    let carol = w.user("carol@example.com").await;
    let carol_seed = w.active_factor(Subject::User(carol)).await;
    let customer = w.sign_in("/auth", "carol@example.com").await;
    let customer_full = w
        .challenge("/auth", &customer.cookie(), &w.code(&carol_seed))
        .await
        .cookie();
    // A customer session presented to the staff sign-in challenge is refused too.
    assert_eq!(
        w.challenge("/staff/auth", &customer_full, &w.code(&seed))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    for (method, path) in STAFF_ROUTES.iter().chain(IMPERSONATION_ROUTES) {
        let call = |cookie: Option<&str>| {
            let mut request = Request::builder()
                .method(*method)
                .uri(*path)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(cookie) = cookie {
                request = request.header(header::COOKIE, cookie);
            }
            request.body(Body::from("{}")).unwrap()
        };
        assert_eq!(
            w.send(call(None)).await.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(
            w.send(call(Some(&half))).await.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: magic link alone"
        );
        assert_eq!(
            w.send(call(Some(&customer_full))).await.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: a customer"
        );
    }

    let ok = w.challenge("/staff/auth", &half, &w.code(&seed)).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.headers[header::LOCATION], "/staff/");
    let full = ok.cookie();
    let me = w.get("/staff/api/v1/me", &full).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["staff_id"], ops.to_string());

    // Step-up: a fresh code buys one grant for one action.
    w.clock.advance(Duration::seconds(30));
    let step = w
        .json(
            "POST",
            "/staff/api/v1/step-up",
            Some(&full),
            serde_json::json!({"action": "keys.rotate", "code": w.code(&seed)}),
        )
        .await;
    assert_eq!(step.status, StatusCode::NO_CONTENT, "{}", step.body);
    let replay = w
        .json(
            "POST",
            "/staff/api/v1/step-up",
            Some(&full),
            serde_json::json!({"action": "keys.rotate", "code": w.code(&seed)}),
        )
        .await;
    assert_eq!(
        replay.status,
        StatusCode::FORBIDDEN,
        "the same code buys nothing twice"
    );
    assert!(
        w.step_up
            .spend(ops, SensitiveAction::RotateKeys)
            .await
            .is_ok()
    );
    assert!(
        w.step_up
            .spend(ops, SensitiveAction::RotateKeys)
            .await
            .is_err()
    );
    assert!(
        w.step_up
            .spend(ops, SensitiveAction::ManageStaff)
            .await
            .is_err()
    );

    // Staff sessions do not reach customer workspace routes.
    let ws = WorkspaceId::new();
    assert_eq!(
        w.get(&format!("/api/v1/workspaces/{ws}"), &full)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_workspace_that_requires_totp_is_out_of_reach_without_it() {
    let w = world().await;
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    let provisioning = Principal::System(SystemTask::Provisioning);
    for ws in [a, b] {
        w.store
            .create_workspace(
                &w.gate
                    .authorize(&provisioning, ws, Action::WorkspaceCreate)
                    .unwrap(),
                "w",
                Region::Eu,
                w.clock.now(),
            )
            .await
            .unwrap();
    }
    let dana = w.user("dana@example.com").await;
    w.store
        .set_membership(
            &w.gate
                .authorize(&provisioning, a, Action::MemberManage)
                .unwrap(),
            dana,
            Role::Admin,
            w.clock.now(),
        )
        .await
        .unwrap();
    let session = w.sign_in("/auth", "dana@example.com").await.cookie();
    let path = format!("/api/v1/workspaces/{a}");
    assert_eq!(w.get(&path, &session).await.status, StatusCode::OK);
    assert_eq!(
        w.get(&format!("/api/v1/workspaces/{b}"), &session)
            .await
            .status,
        StatusCode::NOT_FOUND,
        "not a member of B"
    );
    let set = w
        .json(
            "PUT",
            &format!("{path}/policy"),
            Some(&session),
            serde_json::json!({"require_totp": true}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);

    // From now on a session without a second factor is refused, with a reason.
    let refused = w.get(&path, &session).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("two-factor"));
    for template in ["/sites", "/events", "/drops"] {
        assert_eq!(
            w.get(&format!("{path}{template}"), &session).await.status,
            StatusCode::FORBIDDEN,
            "{template}"
        );
    }

    // Dana enrols, confirms, and is back in.
    let enrolled = w
        .json("POST", "/auth/totp/enroll", Some(&session), Value::Null)
        .await;
    let seed = OtpAuth::parse(enrolled.json()["otpauth_uri"].as_str().unwrap())
        .unwrap()
        .secret
        .to_vec();
    let confirmed = w
        .json(
            "POST",
            "/auth/totp/enroll/confirm",
            Some(&session),
            serde_json::json!({"code": w.code(&seed)}),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK);
    let full = confirmed.cookie();
    let ok = w.get(&path, &full).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["policy"]["require_totp"], true);
}

/// A staff member opens a grant (second factor, step-up, reason, at most an hour); the customer's
/// log shows it before any read, every read is recorded first with both identities, another
/// workspace and another staff member get nothing, and closing or expiry ends it.
#[tokio::test]
async fn impersonation_is_stepped_up_time_boxed_and_in_the_customers_log() {
    let w = world().await;
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    let provisioning = Principal::System(SystemTask::Provisioning);
    for ws in [a, b] {
        w.store
            .create_workspace(
                &w.gate
                    .authorize(&provisioning, ws, Action::WorkspaceCreate)
                    .unwrap(),
                "w",
                Region::Eu,
                w.clock.now(),
            )
            .await
            .unwrap();
    }
    let ops = w.staff("ops@leadmaps.example").await;
    let seed = w.active_factor(Subject::Staff(ops)).await;
    let half = w
        .sign_in("/staff/auth", "ops@leadmaps.example")
        .await
        .cookie();
    let full = w
        .challenge("/staff/auth", &half, &w.code(&seed))
        .await
        .cookie();
    let open = |ws: WorkspaceId, body: Value| {
        let full = full.clone();
        let w = &w;
        async move {
            w.json(
                "POST",
                &format!("/staff/api/v1/workspaces/{ws}/impersonation"),
                Some(&full),
                body,
            )
            .await
        }
    };
    let ticket = serde_json::json!({"reason": "ticket 4711", "minutes": 10});
    let customer_log = |ws: WorkspaceId| {
        let w = &w;
        async move {
            let scope = w
                .gate
                .authorize(&Principal::System(SystemTask::Audit), ws, Action::AuditRead)
                .unwrap();
            // After the workspace's creation, which opens every log.
            let mut log = w.store.audit_records(&scope, 0, 100).await.unwrap();
            assert_eq!(log.remove(0).action, AuditAction::WorkspaceCreated);
            log
        }
    };

    // No step-up, no grant.
    assert_eq!(open(a, ticket.clone()).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        w.step_up_with(&full, &seed, "impersonation.start")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // More than an hour is refused (and the step-up is spent only on a well-formed request).
    let long = open(
        a,
        serde_json::json!({"reason": "ticket 4711", "minutes": 61}),
    )
    .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        w.step_up_with(&full, &seed, "impersonation.start")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let opened = open(a, ticket.clone()).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let grant = opened.json()["grant_id"].as_str().unwrap().to_owned();
    let log = customer_log(a).await;
    assert_eq!(log.len(), 1, "the grant is in the log before any access");
    assert_eq!(log[0].action, AuditAction::ImpersonationStarted);
    assert_eq!(log[0].after.as_ref().unwrap()["reason"], "ticket 4711");
    assert!(customer_log(b).await.is_empty());

    // A read is recorded first, naming the staff member and the grant.
    let read = w
        .get(
            &format!("/staff/api/v1/impersonation/{grant}/workspace"),
            &full,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.json()["id"], a.to_string());
    let events = w
        .get(
            &format!("/staff/api/v1/impersonation/{grant}/events"),
            &full,
        )
        .await;
    assert_eq!(events.status, StatusCode::OK);
    let log = customer_log(a).await;
    assert_eq!(log.len(), 3);
    for record in &log[1..] {
        assert_eq!(record.action, AuditAction::StaffRead);
        assert_eq!(record.actor, log[0].actor, "staff member and grant");
        assert!(record.action.customer_visible());
    }
    // The customer sees it through their own audit API too.
    assert_eq!(log[0].actor.kind(), "staff");
    assert_eq!(log[0].actor.subject(), ops.to_string());
    assert_eq!(
        log[0].actor.grant().map(|g| g.to_string()).as_deref(),
        Some(grant.as_str())
    );

    // Another staff member cannot use the grant.
    let other = w.staff("other@leadmaps.example").await;
    let other_seed = w.active_factor(Subject::Staff(other)).await;
    let other_half = w
        .sign_in("/staff/auth", "other@leadmaps.example")
        .await
        .cookie();
    let other_full = w
        .challenge("/staff/auth", &other_half, &w.code(&other_seed))
        .await
        .cookie();
    assert_eq!(
        w.get(
            &format!("/staff/api/v1/impersonation/{grant}/workspace"),
            &other_full
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    // Expired (the staff session, idle for less than 30 minutes, is still good): refused, and
    // nothing more is recorded.
    w.clock.advance(Duration::minutes(11));
    assert_eq!(
        w.get(
            &format!("/staff/api/v1/impersonation/{grant}/workspace"),
            &full
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(customer_log(a).await.len(), 3);

    // A fresh grant, closed early: the end is recorded, and it admits nothing after.
    assert_eq!(
        w.step_up_with(&full, &seed, "impersonation.start")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let second = open(a, ticket).await.json()["grant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let close = w
        .json(
            "DELETE",
            &format!("/staff/api/v1/impersonation/{second}"),
            Some(&full),
            Value::Null,
        )
        .await;
    assert_eq!(close.status, StatusCode::NO_CONTENT, "{}", close.body);
    assert_eq!(
        customer_log(a).await.last().unwrap().action,
        AuditAction::ImpersonationEnded
    );
    assert_eq!(
        w.get(
            &format!("/staff/api/v1/impersonation/{second}/events"),
            &full
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}
