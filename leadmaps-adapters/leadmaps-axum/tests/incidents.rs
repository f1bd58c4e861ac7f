//! The staff incident API: a staff member with a second factor opens an incident, sees its
//! obligations and deadlines, gets the Art. 33(3) draft, acknowledges obligations (a late one
//! only with its reason), and closes it with a step-up.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use leadmaps_axum::auth::{AuthServices, AuthState, staff_routes};
use leadmaps_core::auth::otp::{OtpAuth, Totp};
use leadmaps_core::auth::recovery::RecoveryCodes;
use leadmaps_core::auth::session::Sessions;
use leadmaps_core::auth::staff::{StaffMember, StaffStore, StepUp};
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::auth::totp::{Subject, TotpFactors};
use leadmaps_core::breach::{Engine, RuleBook, verify_register};
use leadmaps_core::clock::{Clock, ManualClock};
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::mail::{Address, Outbox};
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::tenancy::{Gate, Principal, StaffId, WorkspaceId};
use leadmaps_core::vulnerability::Intake;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tower::ServiceExt as _;

struct World {
    router: axum::Router,
    outbox: Arc<Outbox>,
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    gate: Gate,
    seed: Vec<u8>,
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, cookie, String::from_utf8(body.to_vec()).unwrap())
}

impl World {
    fn code(&self) -> String {
        let totp = Totp::default();
        totp.format(totp.code_at(&self.seed, self.clock.now().unix_timestamp() as u64))
    }

    /// Signs the staff member in with the magic link and a TOTP code; returns the cookie.
    async fn sign_in(&self) -> String {
        let request = Request::post("/staff/auth/magic-link")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"email":"ops@leadmaps.example"}"#))
            .unwrap();
        assert_eq!(send(&self.router, request).await.0, StatusCode::ACCEPTED);
        let mut text = None;
        for _ in 0..400 {
            if let Some(mail) = self.outbox.sent().first() {
                text = Some(mail.text.clone());
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        let text = text.expect("a sign-in mail");
        let token = text
            .split("token=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let confirm = Request::post("/staff/auth/magic-link/confirm")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap();
        let (_, half, _) = send(&self.router, confirm).await;
        let challenge = Request::post("/staff/auth/totp")
            .header(header::COOKIE, &half)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("code={}", self.code())))
            .unwrap();
        let (status, full, body) = send(&self.router, challenge).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        full
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        body: Value,
    ) -> (StatusCode, Value, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, _, text) = send(&self.router, request).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }
}

async fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    ));
    let gate = Gate::new(clock.clone());
    let ring =
        KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x5a).collect::<Vec<_>>()).unwrap()])
            .unwrap();
    let hasher = TokenHasher::new(&ring);
    let vault = Arc::new(
        Vault::start(ring, store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let sessions = Arc::new(Sessions::new(store.clone(), hasher, clock.clone()));
    let totp = Arc::new(TotpFactors::new(
        store.clone(),
        vault,
        gate.clone(),
        clock.clone(),
        "leadmaps",
    ));
    let outbox = Arc::new(Outbox::new());
    let staff = StaffMember {
        id: StaffId::new(),
        email: Address::parse("ops@leadmaps.example").unwrap(),
        created_at: clock.now(),
    };
    store.create_staff(&staff).await.unwrap();
    let uri = totp.enroll(Subject::Staff(staff.id), "ops").await.unwrap();
    let seed = OtpAuth::parse(&uri).unwrap().secret.to_vec();
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(RuleBook::default()),
        clock.clone(),
    ));
    let state = AuthState::new(
        AuthServices {
            identities: store.clone(),
            sessions,
            totp,
            recovery: Arc::new(RecoveryCodes::new(store.clone())),
            step_up: Arc::new(StepUp::new(store.clone(), clock.clone())),
            mailer: outbox.clone(),
            audit: store.clone(),
            gate: gate.clone(),
            clock: clock.clone(),
        },
        "https://app.example",
        vec![],
    )
    .with_incidents(engine.clone())
    .with_vulnerabilities(Arc::new(Intake::new(
        store.clone(),
        store.clone(),
        (*engine).clone(),
    )));
    World {
        router: staff_routes(Arc::new(state)),
        outbox,
        clock,
        store,
        gate,
        seed,
    }
}

#[tokio::test]
async fn staff_open_file_and_close_an_incident_over_http() {
    let w = world().await;
    let cookie = w.sign_in().await;
    let ws = WorkspaceId::new();
    let aware = w.clock.now() - Duration::hours(73);
    let (status, opened, text) = w
        .call(
            "POST",
            "/staff/api/v1/incidents",
            &cookie,
            json!({
                "title": "Account export readable without sign-in",
                "severity": "S1",
                "personal_data": true,
                "risk": "risk",
                "aware_at": aware.format(&Rfc3339).unwrap(),
                "workspaces": [ws.to_string()],
                "data_sets": [{"name": "customer user accounts", "role": "controller"}],
                "details": {
                    "nature": {"certainty": "known", "value": "An export endpoint lacked its check."},
                    "subjects": {"certainty": "estimated", "value": 1200}
                }
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let id = opened["id"].as_str().unwrap().to_owned();
    let obligations = opened["obligations"].as_array().unwrap();
    let due = |duty: &str| {
        obligations
            .iter()
            .find(|o| o["duty"] == duty)
            .unwrap_or_else(|| panic!("{duty}"))
    };
    let at = |hours| (aware + Duration::hours(hours)).format(&Rfc3339).unwrap();
    assert_eq!(due("email_admins")["due_at"], at(4));
    assert_eq!(due("notify_authority")["due_at"], at(72));
    assert_eq!(due("notify_authority")["standing"], "overdue");
    let authority = due("notify_authority")["id"].as_str().unwrap().to_owned();
    let email = due("email_admins")["id"].as_str().unwrap().to_owned();

    let (status, list, _) = w
        .call("GET", "/staff/api/v1/incidents", &cookie, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(list["due"][0]["duty"], "email_admins", "by deadline");

    // The draft, both ways, every field marked.
    let md = w
        .call(
            "GET",
            &format!("/staff/api/v1/incidents/{id}/draft?format=md"),
            &cookie,
            json!({}),
        )
        .await
        .2;
    for needle in [
        "Art. 33(3)(a)",
        "Art. 33(3)(b)",
        "Art. 33(3)(c)",
        "Art. 33(3)(d)",
        "| estimated | 1200 |",
        "Reasons for the delay",
    ] {
        assert!(md.contains(needle), "{needle}: {md}");
    }
    let (_, draft, _) = w
        .call(
            "GET",
            &format!("/staff/api/v1/incidents/{id}/draft"),
            &cookie,
            json!({}),
        )
        .await;
    assert_eq!(draft["phase"], 1);
    assert_eq!(
        draft["fields"].as_array().unwrap().len(),
        9,
        "with the delay reason"
    );

    // A late filing needs its reason.
    let ack =
        |obligation: &str| format!("/staff/api/v1/incidents/{id}/obligations/{obligation}/ack");
    let (status, refused, _) = w
        .call(
            "POST",
            &ack(&authority),
            &cookie,
            json!({"evidence": "AP-2026-7"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("reason for the delay")
    );
    let (status, filed, text) = w
        .call(
            "POST",
            &ack(&authority),
            &cookie,
            json!({"evidence": "AP-2026-7", "late_reason": "the scope took forensics to establish"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(filed["filings"][0]["reference"], "AP-2026-7");

    // Closing needs every obligation settled, then a step-up.
    let close = format!("/staff/api/v1/incidents/{id}/close");
    assert_eq!(
        w.call("POST", &close, &cookie, json!({})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, _, text) = w
        .call(
            "POST",
            &ack(&email),
            &cookie,
            json!({"evidence": "phoned the admins", "late_reason": "found late"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _, text) = w.call("POST", &close, &cookie, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("step-up"));
    w.clock.advance(Duration::seconds(30));
    let (status, _, text) = w
        .call(
            "POST",
            "/staff/api/v1/step-up",
            &cookie,
            json!({"action": "incident.close", "code": w.code()}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let (status, closed, _) = w.call("POST", &close, &cookie, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(closed["status"], "closed");

    // The register shows every change, chained.
    let (_, shown, _) = w
        .call(
            "GET",
            &format!("/staff/api/v1/incidents/{id}"),
            &cookie,
            json!({}),
        )
        .await;
    let changes: Vec<&str> = shown["register"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(
        changes,
        [
            "incident.opened",
            "obligation.done",
            "obligation.done",
            "incident.closed"
        ]
    );
    let scope = w
        .gate
        .authorize_breach(&Principal::Staff {
            staff: StaffId::new(),
            mfa: true,
            grant: None,
        })
        .unwrap();
    use leadmaps_core::breach::BreachStore as _;
    let entries = w.store.register_entries(&scope, 0, 100).await.unwrap();
    assert_eq!(verify_register(&entries), Ok(()));
    assert!(matches!(
        entries[0].actor,
        leadmaps_core::tenancy::BreachActor::Staff(_)
    ));
}

#[tokio::test]
async fn staff_record_a_vulnerability_and_an_exploited_one_opens_an_s0_incident() {
    let w = world().await;
    let cookie = w.sign_in().await;
    let received = w.clock.now() - Duration::hours(50);
    let (status, report, text) = w
        .call(
            "POST",
            "/staff/api/v1/vulnerabilities",
            &cookie,
            json!({
                "title": "Session fixation on the staff realm",
                "summary": "A pre-set cookie survives sign-in.",
                "reporter": "reporter via the security.txt contact",
                "severity": "high",
                "active_exploit": true,
                "received_at": received.format(&Rfc3339).unwrap(),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let id = report["id"].as_str().unwrap().to_owned();
    let obligations = report["obligations"].as_array().unwrap();
    assert_eq!(obligations[0]["duty"], "answer_reporter");
    assert_eq!(
        obligations[0]["due_at"],
        (received + Duration::hours(48)).format(&Rfc3339).unwrap()
    );
    assert_eq!(obligations[0]["standing"], "overdue");
    assert_eq!(obligations[1]["duty"], "disclose");
    assert_eq!(
        obligations[1]["due_at"],
        (received + Duration::days(90)).format(&Rfc3339).unwrap()
    );
    // The S0 incident is in the breach register, linked from the report.
    let incident = report["incident"].as_str().expect("linked incident");
    let (status, shown, _) = w
        .call(
            "GET",
            &format!("/staff/api/v1/incidents/{incident}"),
            &cookie,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["incident"]["severity"], "S0");
    assert_eq!(
        shown["incident"]["aware_at"],
        received.format(&Rfc3339).unwrap()
    );

    // Answering late needs the reason.
    let answer = obligations[0]["id"].as_str().unwrap();
    let ack = format!("/staff/api/v1/vulnerabilities/{id}/obligations/{answer}/ack");
    let (status, _, _) = w
        .call("POST", &ack, &cookie, json!({"evidence": "mail sent"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, acked, _) = w
        .call(
            "POST",
            &ack,
            &cookie,
            json!({"evidence": "mail sent", "late_reason": "weekend"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(acked["obligations"][0]["standing"], "done");
    let (status, list, _) = w
        .call("GET", "/staff/api/v1/vulnerabilities", &cookie, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["reports"].as_array().unwrap().len(), 1);
    assert_eq!(list["due"][0]["duty"], "disclose");
    let (status, _, _) = w
        .call(
            "POST",
            &format!("/staff/api/v1/vulnerabilities/{id}/close"),
            &cookie,
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "disclosure is owed"
    );
    // No report text reached the mail or any response but the staff API's own.
    assert!(
        w.outbox
            .sent()
            .iter()
            .all(|m| !m.text.contains("pre-set cookie"))
    );
}
