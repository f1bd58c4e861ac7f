//! Passwordless sign-in for customers and staff: magic links by e-mail, a TOTP challenge, then a
//! session cookie. The same handlers serve both realms under different prefixes (`/auth` for
//! customers, `/staff/auth` for staff), each looking identities up in its own realm.
//!
//! - `POST {prefix}/magic-link` answers every request with the same bytes, before looking anything
//!   up; the lookup, the limits and the e-mail happen on a background task, so neither the body
//!   nor the timing tells whether an address has an account.
//! - `GET`/`HEAD {prefix}/magic-link?token=…` only shows a confirmation page: mail scanners that
//!   fetch links consume nothing.
//! - `POST {prefix}/magic-link/confirm` consumes the link (once, within 10 minutes) and sets the
//!   `__Host-` session cookie. Without a second factor to pass it redirects home; otherwise to the
//!   challenge at `{prefix}/totp`. There is no `next` parameter, so no open redirect.
//! - `POST {prefix}/totp` takes a TOTP code or a recovery code; [`CHALLENGE_TRIES`] wrong ones end
//!   the sign-in. On success the session is rotated into one that passed a second factor. A code
//!   that was already used is refused, audited as `totp.reuse_detected` and its holder is told by
//!   e-mail.
//! - Customers manage their factor with JSON routes: `{prefix}/totp/enroll`,
//!   `{prefix}/totp/enroll/confirm` (returns the first recovery codes) and
//!   `{prefix}/recovery-codes` (a new set, only with a current TOTP code). Staff factors are
//!   enrolled by an operator (`server staff add`); a staff member confirms it at the first challenge
//!   and can never sign in without one.
//! - `{prefix}/sign-out` and `{prefix}/sign-out/everywhere` end one or all sessions.
//!
//! JSON routes only accept `application/json` bodies: a cross-site form cannot send one without a
//! CORS preflight, and the cookie is `SameSite=Lax`.
//!
//! [`CHALLENGE_TRIES`]: leadmaps_core::auth::session::CHALLENGE_TRIES

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use ipnet::IpNet;
use leadmaps_core::audit::{AuditAction, AuditStore};
use leadmaps_core::auth::IdentityStore;
use leadmaps_core::auth::recovery::{Issued, RecoveryCodes};
use leadmaps_core::auth::session::{
    CLEAR_SESSION_COOKIE, Realm, SESSION_COOKIE, Session, Sessions, session_cookie,
};
use leadmaps_core::auth::staff::{SensitiveAction, StepUp, staff_principal};
use leadmaps_core::auth::totp::{FactorState, Subject, TotpFactors, TotpOutcome};
use leadmaps_core::clock::Clock;
use leadmaps_core::mail::{Address, Email, Mailer};
use leadmaps_core::tenancy::{Gate, StaffId};
use serde::Deserialize;
use serde_json::json;

use crate::client::{client_ip, peer_ip};

mod incidents;
mod vulnerabilities;

/// The services the sign-in routes use.
pub struct AuthServices {
    /// Customer users and staff members.
    pub identities: Arc<dyn IdentityStore>,
    /// Magic links and sessions.
    pub sessions: Arc<Sessions>,
    /// TOTP factors.
    pub totp: Arc<TotpFactors>,
    /// Recovery codes.
    pub recovery: Arc<RecoveryCodes>,
    /// Staff step-up grants.
    pub step_up: Arc<StepUp>,
    /// Where sign-in links and security notices go out.
    pub mailer: Arc<dyn Mailer>,
    /// Where security events are recorded (the instance tenant's audit log).
    pub audit: Arc<dyn AuditStore>,
    /// The gate, for the identity task's scope on the instance tenant.
    pub gate: Gate,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// What the sign-in routes share.
pub struct AuthState {
    services: AuthServices,
    base_url: String,
    trusted_proxies: Vec<IpNet>,
    /// The breach engine behind the staff incident routes, when configured.
    incidents: Option<Arc<leadmaps_core::breach::Engine>>,
    /// The vulnerability intake behind the staff vulnerability routes, when configured.
    vulnerabilities: Option<Arc<leadmaps_core::vulnerability::Intake>>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// State for the sign-in routes; links point at `base_url` (e.g. `https://app.example`).
    pub fn new(
        services: AuthServices,
        base_url: impl Into<String>,
        trusted_proxies: Vec<IpNet>,
    ) -> Self {
        Self {
            services,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            trusted_proxies,
            incidents: None,
            vulnerabilities: None,
        }
    }

    /// Serves the staff incident routes (`/staff/api/v1/incidents`) with `engine`; without it
    /// they answer 404 to staff.
    #[must_use]
    pub fn with_incidents(mut self, engine: Arc<leadmaps_core::breach::Engine>) -> Self {
        self.incidents = Some(engine);
        self
    }

    /// Serves the staff vulnerability routes (`/staff/api/v1/vulnerabilities`) with `intake`;
    /// without it they answer 404 to staff.
    #[must_use]
    pub fn with_vulnerabilities(
        mut self,
        intake: Arc<leadmaps_core::vulnerability::Intake>,
    ) -> Self {
        self.vulnerabilities = Some(intake);
        self
    }

    /// The session named by the request's cookie, if it is valid.
    pub(crate) async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let token = session_token(headers)?;
        self.services.sessions.authenticate(token).await.ok()
    }

    /// The services, for the other staff routes of this crate.
    pub(crate) fn services(&self) -> &AuthServices {
        &self.services
    }

    /// The request's staff session that passed a second factor, and its staff member: 401
    /// without a session, 403 for a customer session or one without a second factor.
    pub(crate) async fn staff_session(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Session, StaffId), Response> {
        let Some(session) = self.session(headers).await else {
            return Err(error(StatusCode::UNAUTHORIZED, "sign in first"));
        };
        match (staff_principal(&session, None), session.subject) {
            (Ok(_), Subject::Staff(staff)) => Ok((session, staff)),
            _ => Err(error(
                StatusCode::FORBIDDEN,
                "staff access needs a second factor",
            )),
        }
    }
}

/// The session token in a request's `Cookie` headers.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then_some(value)
        })
}

/// A realm's routes: the shared state and which realm they serve.
#[derive(Clone)]
struct Ctx {
    state: Arc<AuthState>,
    realm: Realm,
}

impl Ctx {
    fn prefix(&self) -> &'static str {
        match self.realm {
            Realm::Customer => "/auth",
            Realm::Staff => "/staff/auth",
        }
    }

    fn home(&self) -> &'static str {
        match self.realm {
            Realm::Customer => "/",
            Realm::Staff => "/staff/",
        }
    }

    fn services(&self) -> &AuthServices {
        &self.state.services
    }

    /// Who an address belongs to in this realm.
    async fn subject(&self, email: &Address) -> leadmaps_core::Result<Option<Subject>> {
        let identities = &self.services().identities;
        Ok(match self.realm {
            Realm::Customer => identities
                .user_by_email(email)
                .await?
                .map(|u| Subject::User(u.id)),
            Realm::Staff => identities
                .staff_by_email(email)
                .await?
                .map(|s| Subject::Staff(s.id)),
        })
    }

    /// Where a subject's security notices go.
    async fn address(&self, subject: Subject) -> Option<Address> {
        let identities = &self.services().identities;
        let found = match subject {
            Subject::User(id) => identities.user(id).await.map(|u| u.map(|u| u.email)),
            Subject::Staff(id) => identities.staff(id).await.map(|s| s.map(|s| s.email)),
        };
        found.ok().flatten()
    }

    fn owns(&self, session: &Session) -> bool {
        matches!(
            (self.realm, session.subject),
            (Realm::Customer, Subject::User(_)) | (Realm::Staff, Subject::Staff(_))
        )
    }

    /// This realm's session and a JSON body, or the response that refuses them (401, 415, 400).
    async fn session_with_body<T: serde::de::DeserializeOwned + Default>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Session, T), Response> {
        let session = self.session(headers).await?;
        let body = json_body(headers, body).map_err(|(code, message)| error(code, message))?;
        Ok((session, body))
    }

    /// This realm's session from the cookie, or 401.
    async fn session(&self, headers: &HeaderMap) -> Result<Session, Response> {
        match self.state.session(headers).await {
            Some(session) if self.owns(&session) => Ok(session),
            _ => Err(error(StatusCode::UNAUTHORIZED, "sign in first")),
        }
    }
}

/// The customer sign-in routes.
pub fn auth_routes(state: Arc<AuthState>) -> Router {
    let ctx = Ctx {
        state,
        realm: Realm::Customer,
    };
    realm_routes(&ctx)
        .route("/auth/totp/enroll", post(enroll))
        .route("/auth/totp/enroll/confirm", post(confirm_enrolment))
        .route("/auth/recovery-codes", post(regenerate_codes))
        .with_state(ctx)
}

/// The staff realm: sign-in under `/staff/auth` and the staff API under `/staff/api/v1`, every
/// route of which (see [`STAFF_ROUTES`]) needs a staff session that passed a second factor.
pub fn staff_routes(state: Arc<AuthState>) -> Router {
    let ctx = Ctx {
        state,
        realm: Realm::Staff,
    };
    realm_routes(&ctx)
        .route("/staff/api/v1/me", get(staff_me))
        .route("/staff/api/v1/step-up", post(staff_step_up))
        .route(
            "/staff/api/v1/sign-out-everywhere",
            post(staff_sign_out_everywhere),
        )
        .merge(incidents::routes())
        .merge(vulnerabilities::routes())
        .with_state(ctx)
}

/// Every staff API route, for tests that walk them all: (method, path).
pub const STAFF_ROUTES: &[(&str, &str)] = &[
    ("GET", "/staff/api/v1/me"),
    ("POST", "/staff/api/v1/step-up"),
    ("POST", "/staff/api/v1/sign-out-everywhere"),
    ("GET", "/staff/api/v1/incidents"),
    ("POST", "/staff/api/v1/incidents"),
    (
        "GET",
        "/staff/api/v1/incidents/00000000-0000-0000-0000-000000000000",
    ),
    (
        "POST",
        "/staff/api/v1/incidents/00000000-0000-0000-0000-000000000000",
    ),
    (
        "POST",
        "/staff/api/v1/incidents/00000000-0000-0000-0000-000000000000/obligations/00000000-0000-0000-0000-000000000000/ack",
    ),
    (
        "POST",
        "/staff/api/v1/incidents/00000000-0000-0000-0000-000000000000/close",
    ),
    (
        "GET",
        "/staff/api/v1/incidents/00000000-0000-0000-0000-000000000000/draft?format=md",
    ),
    ("GET", "/staff/api/v1/vulnerabilities"),
    ("POST", "/staff/api/v1/vulnerabilities"),
    (
        "GET",
        "/staff/api/v1/vulnerabilities/00000000-0000-0000-0000-000000000000",
    ),
    (
        "POST",
        "/staff/api/v1/vulnerabilities/00000000-0000-0000-0000-000000000000/obligations/00000000-0000-0000-0000-000000000000/ack",
    ),
    (
        "POST",
        "/staff/api/v1/vulnerabilities/00000000-0000-0000-0000-000000000000/close",
    ),
];

fn realm_routes(ctx: &Ctx) -> Router<Ctx> {
    let p = ctx.prefix();
    Router::new()
        .route(
            &format!("{p}/magic-link"),
            post(request_link).get(confirm_page),
        )
        .route(&format!("{p}/magic-link/confirm"), post(confirm_link))
        .route(&format!("{p}/totp"), get(challenge_page).post(challenge))
        .route(&format!("{p}/sign-out"), post(sign_out))
        .route(
            &format!("{p}/sign-out/everywhere"),
            post(sign_out_everywhere),
        )
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Adds `Retry-After` in whole seconds, at least one.
fn retry_after(mut response: Response, wait: time::Duration) -> Response {
    let seconds = u64::try_from(wait.whole_seconds()).unwrap_or(0).max(1);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn redirect(to: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

fn unavailable(error: &leadmaps_core::Error, what: &'static str) -> Response {
    tracing::warn!(kind = ?error.kind(), what, "sign-in step failed");
    self::error(StatusCode::SERVICE_UNAVAILABLE, "try again later")
}

fn page(code: StatusCode, body: &str) -> Response {
    no_store(
        (
            code,
            Html(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>leadmaps</title></head>\
                 <body>{body}</body></html>"
            )),
        )
            .into_response(),
    )
}

// ---------------------------------------------------------------------------------------------
// Magic links

/// The one answer to every link request.
const REQUESTED: &str = "{\"status\":\"if the address can sign in, a link is on its way\"}";

#[derive(Deserialize)]
struct LinkRequest {
    email: String,
}

async fn request_link(State(ctx): State<Ctx>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let peer = peer_ip(&parts.extensions).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let ip = client_ip(peer, &parts.headers, &ctx.state.trusted_proxies);
    let body = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    // Answer first; everything that could differ between addresses happens afterwards.
    if let Ok(request) = serde_json::from_slice::<LinkRequest>(&body) {
        let ctx = ctx.clone();
        tokio::spawn(async move { send_link(&ctx, &request.email, ip).await });
    }
    let mut response = (StatusCode::ACCEPTED, REQUESTED).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn send_link(ctx: &Ctx, raw_email: &str, ip: IpAddr) {
    let Ok(email) = Address::parse(raw_email) else {
        return;
    };
    match ctx.subject(&email).await {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(kind = ?error.kind(), "magic link: identity lookup failed");
            return;
        }
    }
    let services = ctx.services();
    let issued = match services.sessions.request_link(ctx.realm, &email, ip).await {
        Ok(Some(issued)) => issued,
        Ok(None) => return, // a send limit applies; say nothing
        Err(error) => {
            tracing::warn!(kind = ?error.kind(), "magic link: could not issue");
            return;
        }
    };
    let link = format!(
        "{}{}/magic-link?token={}",
        ctx.state.base_url,
        ctx.prefix(),
        &*issued.token.expose()
    );
    let email = Email {
        to: issued.email,
        subject: "Your leadmaps sign-in link".into(),
        text: format!(
            "Open this link within 10 minutes to sign in to leadmaps:\n\n{link}\n\n\
             If you did not ask for it, ignore this message: nothing happens without the link.\n"
        ),
        idempotency_key: Some(issued.token.selector()),
    };
    if let Err(error) = services.mailer.send(&email).await {
        tracing::warn!(kind = ?error.kind(), "magic link: sending failed");
    }
}

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Shows the confirmation form; consumes nothing (GET and HEAD alike).
async fn confirm_page(State(ctx): State<Ctx>, Query(param): Query<TokenParam>) -> Response {
    let token = escape(param.token.as_deref().unwrap_or(""));
    page(
        StatusCode::OK,
        &format!(
            "<form method=\"post\" action=\"{}/magic-link/confirm\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Sign in</button></form>",
            ctx.prefix()
        ),
    )
}

#[derive(Deserialize)]
struct ConfirmForm {
    token: String,
}

/// Consumes the link and starts a session, which still has to pass the second factor if the
/// subject has one (staff always do).
async fn confirm_link(State(ctx): State<Ctx>, Form(form): Form<ConfirmForm>) -> Response {
    let refused = || {
        page(
            StatusCode::BAD_REQUEST,
            "<p>This sign-in link is invalid or has expired. Ask for a new one.</p>",
        )
    };
    let services = ctx.services();
    let Ok(link) = services.sessions.consume_link(ctx.realm, &form.token).await else {
        return refused();
    };
    let subject = match ctx.subject(&link.email).await {
        Ok(Some(subject)) => subject,
        Ok(None) => return refused(),
        Err(error) => return unavailable(&error, "identity lookup"),
    };
    let factor = match services.totp.state(subject).await {
        Ok(factor) => factor,
        Err(error) => return unavailable(&error, "factor lookup"),
    };
    let challenge = match (ctx.realm, factor) {
        (Realm::Staff, FactorState::None) => {
            return page(
                StatusCode::FORBIDDEN,
                "<p>Staff sign-in needs a second factor, and this account has none. \
                 Ask an operator to enrol one.</p>",
            );
        }
        (Realm::Staff, _) | (Realm::Customer, FactorState::Active) => true,
        (Realm::Customer, _) => false,
    };
    match services.sessions.start(subject, false).await {
        Ok((token, session)) => {
            let cookie = session_cookie(&token, &session, services.clock.now());
            let to = if challenge {
                match ctx.realm {
                    Realm::Customer => "/auth/totp",
                    Realm::Staff => "/staff/auth/totp",
                }
            } else {
                ctx.home()
            };
            with_cookie(redirect(to), &cookie)
        }
        Err(error) => unavailable(&error, "session start"),
    }
}

// ---------------------------------------------------------------------------------------------
// The second-factor challenge

async fn challenge_page(State(ctx): State<Ctx>) -> Response {
    page(
        StatusCode::OK,
        &format!(
            "<form method=\"post\" action=\"{}/totp\">\
             <label>Code from your authenticator, or a recovery code \
             <input name=\"code\" autocomplete=\"one-time-code\" required></label>\
             <button type=\"submit\">Continue</button></form>",
            ctx.prefix()
        ),
    )
}

#[derive(Deserialize)]
struct CodeForm {
    code: String,
}

fn is_totp_code(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Records `totp.reuse_detected` in the instance tenant's audit log (people are not tenants, so
/// their security events live there, with the identity task as actor) and tells the holder.
fn report_reuse(ctx: &Ctx, subject: Subject) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let services = ctx.services();
        let recorded = services
            .totp
            .record(
                &*services.audit,
                subject,
                AuditAction::TotpReuseDetected,
                None,
            )
            .await;
        if let Err(error) = recorded {
            tracing::error!(kind = ?error.kind(), "totp.reuse_detected could not be audited");
        }
        let Some(to) = ctx.address(subject).await else {
            return;
        };
        let email = Email {
            to,
            subject: "A leadmaps sign-in code was used twice".into(),
            text: "Someone entered a code from your authenticator app that had already been used \
                   to sign in to leadmaps. Codes work once, so it was refused.\n\n\
                   If this was not you, someone may have seen one of your codes and may also \
                   have access to your e-mail: sign out everywhere and contact your workspace \
                   administrator.\n"
                .into(),
            idempotency_key: None,
        };
        if let Err(error) = ctx.services().mailer.send(&email).await {
            tracing::warn!(kind = ?error.kind(), "reuse notice: sending failed");
        }
    });
}

async fn challenge(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let Ok(session) = ctx.session(&headers).await else {
        return page(
            StatusCode::UNAUTHORIZED,
            "<p>Your sign-in has expired. Ask for a new link.</p>",
        );
    };
    if session.second_factor {
        return redirect(ctx.home());
    }
    let services = ctx.services();
    let code = form.code.trim();
    let outcome = if is_totp_code(code) {
        // Staff confirm an operator-enrolled factor with their first code; customers only
        // face a challenge for a confirmed factor.
        let checked = match ctx.realm {
            Realm::Staff => {
                services
                    .totp
                    .confirm(session.subject, code, &*services.audit)
                    .await
            }
            Realm::Customer => services.totp.check(session.subject, code).await,
        };
        match checked {
            Ok(outcome) => outcome,
            Err(error) if error.kind() == leadmaps_core::ErrorKind::NotFound => {
                TotpOutcome::Rejected { remaining: 0 }
            }
            Err(error) => return unavailable(&error, "totp check"),
        }
    } else {
        match services.recovery.redeem(session.subject, code).await {
            Ok(true) => TotpOutcome::Accepted,
            Ok(false) => TotpOutcome::Rejected { remaining: 0 },
            Err(error) => return unavailable(&error, "recovery code"),
        }
    };
    match outcome {
        TotpOutcome::Accepted => match services.sessions.rotate(&session, true).await {
            Ok((token, session)) => {
                let cookie = session_cookie(&token, &session, services.clock.now());
                with_cookie(redirect(ctx.home()), &cookie)
            }
            Err(error) => unavailable(&error, "session rotation"),
        },
        TotpOutcome::Locked { until } => {
            let response = page(
                StatusCode::TOO_MANY_REQUESTS,
                "<p>Too many wrong codes. Try again in a while.</p>",
            );
            retry_after(response, until - services.clock.now())
        }
        TotpOutcome::Rejected { .. } | TotpOutcome::Reused => {
            let reused = outcome == TotpOutcome::Reused;
            if reused {
                report_reuse(&ctx, session.subject);
            }
            match services.sessions.challenge_failed(&session).await {
                Ok(0) => with_cookie(
                    page(
                        StatusCode::UNAUTHORIZED,
                        "<p>Too many wrong codes for this sign-in. Ask for a new link.</p>",
                    ),
                    CLEAR_SESSION_COOKIE,
                ),
                Ok(left) => page(
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        "<p>{} {left} {} left.</p>",
                        if reused {
                            "That code was already used."
                        } else {
                            "That code is not right."
                        },
                        if left == 1 { "try" } else { "tries" }
                    ),
                ),
                Err(error) => unavailable(&error, "challenge count"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Enrolment and recovery codes (customers; JSON)

#[derive(Deserialize, Default)]
struct CodeBody {
    code: Option<String>,
}

/// [`crate::headers::json_body`], where an empty JSON body means every field's default.
fn json_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, &'static str)> {
    if body.is_empty() && crate::headers::is_json(headers) {
        return Ok(T::default());
    }
    crate::headers::json_body(headers, body, "malformed JSON")
}

/// What a refused code means to a JSON client.
fn refused(ctx: &Ctx, subject: Subject, outcome: TotpOutcome) -> Response {
    match outcome {
        TotpOutcome::Locked { until } => {
            let response = error(StatusCode::TOO_MANY_REQUESTS, "too many wrong codes");
            retry_after(response, until - ctx.services().clock.now())
        }
        TotpOutcome::Reused => {
            report_reuse(ctx, subject);
            error(StatusCode::FORBIDDEN, "that code was already used")
        }
        _ => error(StatusCode::FORBIDDEN, "wrong code"),
    }
}

fn codes_response<C: std::ops::Deref<Target = String>>(codes: &[C]) -> Response {
    let codes: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    no_store(axum::Json(json!({ "recovery_codes": codes })).into_response())
}

/// Starts (or, with a current code of the active factor, restarts) enrolment; returns the
/// `otpauth://` URI once.
async fn enroll(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (session, body): (Session, CodeBody) = match ctx.session_with_body(&headers, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let services = ctx.services();
    match services.totp.state(session.subject).await {
        Ok(FactorState::Active) => {
            // Replacing a working factor needs that factor, now.
            let Some(code) = body.code.filter(|_| session.second_factor) else {
                return error(
                    StatusCode::FORBIDDEN,
                    "replacing a factor needs a signed-in second factor and a current code",
                );
            };
            match services.totp.check(session.subject, &code).await {
                Ok(TotpOutcome::Accepted) => {}
                Ok(outcome) => return refused(&ctx, session.subject, outcome),
                Err(error) => return unavailable(&error, "totp check"),
            }
        }
        Ok(_) => {}
        Err(error) => return unavailable(&error, "factor lookup"),
    }
    let Some(account) = ctx.address(session.subject).await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "try again later");
    };
    match services
        .totp
        .enroll(session.subject, account.as_str())
        .await
    {
        Ok(uri) => no_store(axum::Json(json!({ "otpauth_uri": uri.as_str() })).into_response()),
        Err(error) => unavailable(&error, "enrolment"),
    }
}

/// Confirms enrolment with the first code: the factor becomes active, the session is rotated
/// into one that passed it, and the first recovery codes are returned once.
async fn confirm_enrolment(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (session, body): (Session, CodeBody) = match ctx.session_with_body(&headers, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(code) = body.code else {
        return error(StatusCode::BAD_REQUEST, "code is required");
    };
    let services = ctx.services();
    if !matches!(
        services.totp.state(session.subject).await,
        Ok(FactorState::Pending)
    ) {
        return error(
            StatusCode::CONFLICT,
            "no enrolment is waiting for confirmation",
        );
    }
    match services
        .recovery
        .confirm_enrolment(&services.totp, session.subject, &code, &*services.audit)
        .await
    {
        Ok(Issued::Codes(codes)) => match services.sessions.rotate(&session, true).await {
            Ok((token, rotated)) => {
                let cookie = session_cookie(&token, &rotated, services.clock.now());
                with_cookie(codes_response(&codes), &cookie)
            }
            Err(error) => unavailable(&error, "session rotation"),
        },
        Ok(Issued::Refused(outcome)) => refused(&ctx, session.subject, outcome),
        Err(error) => unavailable(&error, "enrolment confirmation"),
    }
}

/// A new set of recovery codes, replacing the old one: needs a session that passed a second
/// factor and a current code.
async fn regenerate_codes(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (session, body): (Session, CodeBody) = match ctx.session_with_body(&headers, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(code) = body.code.filter(|_| session.second_factor) else {
        return error(
            StatusCode::FORBIDDEN,
            "new recovery codes need a signed-in second factor and a current code",
        );
    };
    let services = ctx.services();
    match services
        .recovery
        .regenerate(&services.totp, session.subject, &code, &*services.audit)
        .await
    {
        Ok(Issued::Codes(codes)) => codes_response(&codes),
        Ok(Issued::Refused(outcome)) => refused(&ctx, session.subject, outcome),
        Err(e) if e.kind() == leadmaps_core::ErrorKind::NotFound => {
            error(StatusCode::CONFLICT, "no active second factor")
        }
        Err(error) => unavailable(&error, "recovery codes"),
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-out

async fn sign_out(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Ok(session) = ctx.session(&headers).await
        && let Err(error) = ctx.services().sessions.revoke(&session.selector).await
    {
        return unavailable(&error, "sign-out");
    }
    with_cookie(StatusCode::NO_CONTENT.into_response(), CLEAR_SESSION_COOKIE)
}

/// Ends every session of the session's subject and clears the cookie.
async fn end_every_session(ctx: &Ctx, session: &Session) -> Response {
    match ctx.services().sessions.revoke_all(session.subject).await {
        Ok(_) => with_cookie(StatusCode::NO_CONTENT.into_response(), CLEAR_SESSION_COOKIE),
        Err(error) => unavailable(&error, "sign-out"),
    }
}

async fn sign_out_everywhere(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let session = match ctx.session(&headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    end_every_session(&ctx, &session).await
}

// ---------------------------------------------------------------------------------------------
// The staff API

/// A staff session that passed a second factor, or 401 (none) / 403 (anything less).
async fn staff_session(ctx: &Ctx, headers: &HeaderMap) -> Result<Session, Response> {
    ctx.state
        .staff_session(headers)
        .await
        .map(|(session, _)| session)
}

async fn staff_me(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let session = match staff_session(&ctx, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let Subject::Staff(staff) = session.subject else {
        return error(StatusCode::FORBIDDEN, "staff only");
    };
    axum::Json(json!({
        "staff_id": staff.to_string(),
        "second_factor": session.second_factor,
        "expires_at": session.expires_at.unix_timestamp(),
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
struct StepUpBody {
    action: String,
    code: String,
}

const SENSITIVE: [SensitiveAction; 4] = [
    SensitiveAction::StartImpersonation,
    SensitiveAction::RotateKeys,
    SensitiveAction::CloseIncident,
    SensitiveAction::ManageStaff,
];

/// A fresh TOTP code buys one grant for one sensitive action, valid 10 minutes.
async fn staff_step_up(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let session = match staff_session(&ctx, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let Subject::Staff(staff) = session.subject else {
        return error(StatusCode::FORBIDDEN, "staff only");
    };
    let body: StepUpBody = match json_body(&headers, &body) {
        Ok(body) => body,
        Err((code, message)) => return error(code, message),
    };
    let Some(action) = SENSITIVE.into_iter().find(|a| a.as_str() == body.action) else {
        return error(StatusCode::BAD_REQUEST, "unknown action");
    };
    let services = ctx.services();
    match services.totp.check(session.subject, &body.code).await {
        Ok(TotpOutcome::Accepted) => match services.step_up.grant(staff, action).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => unavailable(&error, "step-up"),
        },
        Ok(outcome) => refused(&ctx, session.subject, outcome),
        Err(error) => unavailable(&error, "totp check"),
    }
}

async fn staff_sign_out_everywhere(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let session = match staff_session(&ctx, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    end_every_session(&ctx, &session).await
}
