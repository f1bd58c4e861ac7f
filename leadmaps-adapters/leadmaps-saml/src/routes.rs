//! The SAML login routes: SP metadata, SP-initiated login and the assertion consumer service,
//! ending in the same workspace-bound session an OIDC login ends in ([`leadmaps_core::sso`]).
//!
//! - `GET /saml/{workspace}/metadata`: the workspace's SP metadata (for its IdP's admin).
//! - `GET /auth/saml/{workspace}`: starts a login, 303 to the IdP with the `AuthnRequest`.
//! - `POST /saml/{workspace}/acs`: the IdP's HTTP-POST binding (`SAMLResponse`, `RelayState`);
//!   the response checked ([`SamlSp::consume`]), the person matched by e-mail to an existing
//!   member of the workspace, a session bound to the workspace started, its cookie set, 303 home.
//!
//! **Configuration is in memory.** Each workspace's IdP (its metadata, whether IdP-initiated
//! login is allowed, and the e-mail domains it may vouch for) is a [`SamlConfig`] in the
//! [`SamlConfigs`] registry, which the server fills at start from its own configuration: there
//! is no database table for SAML connections yet. The domains are *verified* in the same sense
//! as an OIDC connection's: the operator who fills the registry vouches that the workspace owns
//! them; a login is matched to a member only by an address in one of them.
//!
//! **Logins in flight are in memory too**, like OIDC's: `GET /auth/saml/{workspace}` keeps the
//! request id under a random `RelayState` (128 bits) for
//! [`REQUEST_LIFETIME`](crate::REQUEST_LIFETIME), taken once by the ACS. With several
//! instances, route `/auth/saml/` and `/saml/*/acs` of one browser to the same instance (sticky
//! sessions), as for `/auth/sso/`. The replay cache is the [`ReplayCache`] given:
//! [`MemoryReplayCache`](crate::MemoryReplayCache) serves one process.
//!
//! Every refusal is audited as `sso.login_failed` with `{"protocol": "saml", "reason": ...}` in
//! the workspace's log, and every login as `sso.login_succeeded` with `{"protocol": "saml"}`. The
//! browser sees one generic page; nothing is logged of the response, the NameID or the address.
//! The plan gates logins: below Business, 403 with the plan's reason (audited
//! `plan_lacks_sso`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use leadmaps_core::auth::session::{Session, session_cookie};
use leadmaps_core::auth::tokens::{SplitToken, TokenHasher};
use leadmaps_core::clock::Clock;
use leadmaps_core::mail::Address;
use leadmaps_core::policy::Feature;
use leadmaps_core::sso::{MAX_SSO_DOMAINS, SsoProtocol, login_failed_draft};
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::{Action, Gate, Principal, Scope, SystemTask, UserId, WorkspaceId};
use serde::Deserialize;
use url::Url;

use crate::{
    IdpMetadata, MAX_RESPONSE_BYTES, PendingRequest, ReplayCache, SamlError, SamlSp, SpEntity,
};

/// Most SAML logins in flight; beyond it, expired ones are dropped and new ones refused.
const MAX_PENDING: usize = 100_000;

/// The largest ACS form accepted: a [`MAX_RESPONSE_BYTES`] response, URL-encoded.
const MAX_ACS_FORM_BYTES: usize = 4 * MAX_RESPONSE_BYTES;

/// A workspace's SAML identity provider, as the server configured it.
#[derive(Debug, Clone)]
pub struct SamlConfig {
    idp: IdpMetadata,
    allow_idp_initiated: bool,
    domains: Vec<String>,
}

impl SamlConfig {
    /// The IdP described by `idp_metadata_xml` ([`IdpMetadata::from_xml`]), vouching for
    /// addresses in `domains` (1 to [`MAX_SSO_DOMAINS`], normalised to lower case);
    /// IdP-initiated login refused.
    ///
    /// # Errors
    /// [`SamlError::Config`] for unusable metadata or domains.
    pub fn new(idp_metadata_xml: &str, domains: &[String]) -> Result<Self, SamlError> {
        let idp = IdpMetadata::from_xml(idp_metadata_xml)?;
        if domains.is_empty() || domains.len() > MAX_SSO_DOMAINS {
            return Err(SamlError::Config("name 1 to 50 verified e-mail domains"));
        }
        let domains = domains
            .iter()
            .map(|d| leadmaps_core::store::normalize_domain(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SamlError::Config("a verified domain is not a host name"))?;
        Ok(Self {
            idp,
            allow_idp_initiated: false,
            domains,
        })
    }

    /// Allows (or, the default, refuses) IdP-initiated login; see
    /// [`SamlSp::allow_idp_initiated`].
    pub fn allow_idp_initiated(mut self, allow: bool) -> Self {
        self.allow_idp_initiated = allow;
        self
    }

    /// The IdP.
    pub fn idp(&self) -> &IdpMetadata {
        &self.idp
    }

    /// The verified e-mail domains (lower case).
    pub fn domains(&self) -> &[String] {
        &self.domains
    }
}

/// The SAML configuration of every workspace, in memory (see the module docs).
#[derive(Debug, Default)]
pub struct SamlConfigs {
    configs: RwLock<HashMap<WorkspaceId, SamlConfig>>,
}

impl SamlConfigs {
    /// No workspace configured.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the workspace's IdP.
    pub fn insert(&self, workspace: WorkspaceId, config: SamlConfig) {
        self.configs
            .write()
            .expect("SAML configurations")
            .insert(workspace, config);
    }

    /// Removes the workspace's IdP; returns it if there was one.
    pub fn remove(&self, workspace: WorkspaceId) -> Option<SamlConfig> {
        self.configs
            .write()
            .expect("SAML configurations")
            .remove(&workspace)
    }

    /// The workspace's IdP.
    pub fn get(&self, workspace: WorkspaceId) -> Option<SamlConfig> {
        self.configs
            .read()
            .expect("SAML configurations")
            .get(&workspace)
            .cloned()
    }
}

/// Why a SAML login was refused: a fixed reason, recorded in `sso.login_failed` and shown to
/// nobody else (the browser sees one message for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamlLoginFailure {
    /// The workspace does not exist or has no SAML IdP.
    NotConfigured,
    /// The workspace's plan does not include SSO.
    PlanLacksSso,
    /// The ACS request had no `SAMLResponse`.
    NoResponse,
    /// The `RelayState` names a login started for another workspace.
    WrongWorkspace,
    /// The response was refused by [`SamlSp::consume`]; the reason is [`saml_reason`].
    Response(&'static str),
    /// The IdP asserted no e-mail address in a verified domain.
    UnverifiedEmail,
    /// No member of the workspace has the address.
    NotAMember,
    /// Reading the member or storing the session failed.
    Store,
    /// Too many logins in flight, or the request could not be built.
    Unavailable,
}

impl SamlLoginFailure {
    /// The stable reason recorded in `sso.login_failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SamlLoginFailure::NotConfigured => "not_configured",
            SamlLoginFailure::PlanLacksSso => "plan_lacks_sso",
            SamlLoginFailure::NoResponse => "no_response",
            SamlLoginFailure::WrongWorkspace => "wrong_workspace",
            SamlLoginFailure::Response(reason) => reason,
            SamlLoginFailure::UnverifiedEmail => "unverified_email",
            SamlLoginFailure::NotAMember => "not_a_member",
            SamlLoginFailure::Store => "store",
            SamlLoginFailure::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for SamlLoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for SamlLoginFailure {}

/// The audit reason of a refused response: which check failed, never what the response held.
pub fn saml_reason(error: &SamlError) -> &'static str {
    match error {
        SamlError::Config(_) => "config",
        SamlError::Malformed(_) => "malformed",
        SamlError::Unsigned => "unsigned",
        SamlError::BadSignature => "bad_signature",
        SamlError::Wrapped(_) => "wrapped",
        SamlError::EncryptedAssertion => "encrypted_assertion",
        SamlError::IdpStatus => "idp_status",
        SamlError::Issuer => "wrong_issuer",
        SamlError::Destination => "wrong_destination",
        SamlError::Recipient => "wrong_recipient",
        SamlError::Audience => "wrong_audience",
        SamlError::NotYetValid => "not_yet_valid",
        SamlError::Expired => "expired",
        SamlError::InResponseTo => "in_response_to",
        SamlError::RequestExpired => "request_expired",
        SamlError::Unsolicited => "unsolicited",
        SamlError::NoBearer => "no_bearer",
        SamlError::Replayed => "replayed",
        SamlError::ReplayCache(_) => "replay_cache",
    }
}

/// A completed SAML login.
pub struct SamlLogin {
    /// The workspace whose IdP vouched.
    pub workspace: WorkspaceId,
    /// The member.
    pub user: UserId,
    /// The session token for the cookie (shown once).
    pub token: SplitToken,
    /// The session, bound to the workspace.
    pub session: Session,
    /// When the session started.
    pub started_at: time::OffsetDateTime,
}

impl std::fmt::Debug for SamlLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlLogin")
            .field("workspace", &self.workspace)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

struct Pending {
    workspace: WorkspaceId,
    request: PendingRequest,
}

/// The SAML service provider of every workspace, with the state of its logins.
pub struct SamlLogins {
    store: Arc<dyn Store>,
    hasher: TokenHasher,
    gate: Gate,
    clock: Arc<dyn Clock>,
    base_url: Url,
    configs: Arc<SamlConfigs>,
    replay: Arc<dyn ReplayCache>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for SamlLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlLogins")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl SamlLogins {
    /// The service provider of every workspace under the public `base_url` (see
    /// [`SpEntity::new`]), trusting the IdPs of `configs` and recording assertion ids in
    /// `replay`.
    ///
    /// # Errors
    /// [`SamlError::Config`] for a base URL [`SpEntity::new`] refuses.
    pub fn new(
        store: Arc<dyn Store>,
        hasher: TokenHasher,
        gate: Gate,
        clock: Arc<dyn Clock>,
        base_url: Url,
        configs: Arc<SamlConfigs>,
        replay: Arc<dyn ReplayCache>,
    ) -> Result<Self, SamlError> {
        SpEntity::new(&base_url, WorkspaceId::new())?;
        Ok(Self {
            store,
            hasher,
            gate,
            clock,
            base_url,
            configs,
            replay,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The workspace's SP identity (entity id, ACS URL).
    ///
    /// # Errors
    /// As [`SpEntity::new`] (not for a base URL [`new`](Self::new) accepted).
    pub fn sp_entity(&self, workspace: WorkspaceId) -> Result<SpEntity, SamlError> {
        SpEntity::new(&self.base_url, workspace)
    }

    fn task_scope(&self, workspace: WorkspaceId) -> Option<Scope> {
        self.gate
            .authorize(
                &Principal::System(SystemTask::SingleSignOn),
                workspace,
                Action::WorkspaceRead,
            )
            .ok()
    }

    /// Records a refused login in the workspace's log (best effort) and returns the failure.
    async fn refuse(&self, workspace: WorkspaceId, failure: SamlLoginFailure) -> SamlLoginFailure {
        tracing::info!(reason = failure.as_str(), "SAML single sign-on refused");
        if let Some(scope) = self.task_scope(workspace) {
            let draft = login_failed_draft(&scope, SsoProtocol::Saml.as_str(), failure.as_str());
            if let Err(error) = self
                .store
                .append_audit(&scope, draft, self.clock.now())
                .await
            {
                tracing::warn!(kind = ?error.kind(), "sso.login_failed not recorded");
            }
        }
        failure
    }

    /// Whether the workspace exists (its SP metadata is served before an IdP is configured).
    async fn exists(&self, workspace: WorkspaceId) -> bool {
        match self.task_scope(workspace) {
            Some(scope) => self.store.sso_settings(&scope).await.is_ok(),
            None => false,
        }
    }

    /// The workspace's SP, when its plan includes SSO and it has an IdP.
    async fn sp(&self, workspace: WorkspaceId) -> Result<SamlSp, SamlLoginFailure> {
        let scope = self
            .task_scope(workspace)
            .ok_or(SamlLoginFailure::NotConfigured)?;
        let Ok(settings) = self.store.sso_settings(&scope).await else {
            return Err(SamlLoginFailure::NotConfigured);
        };
        if !settings.plan.unlocks(Feature::Sso) {
            return Err(SamlLoginFailure::PlanLacksSso);
        }
        let config = self
            .configs
            .get(workspace)
            .ok_or(SamlLoginFailure::NotConfigured)?;
        let entity = self
            .sp_entity(workspace)
            .map_err(|_| SamlLoginFailure::NotConfigured)?;
        Ok(SamlSp::new(entity, config.idp).allow_idp_initiated(config.allow_idp_initiated))
    }

    /// Starts a login into `workspace`: returns the IdP's SSO URL with the `AuthnRequest`. The
    /// request id stays here under the `RelayState`, for
    /// [`REQUEST_LIFETIME`](crate::REQUEST_LIFETIME).
    ///
    /// # Errors
    /// A [`SamlLoginFailure`] (the plan, no IdP, too many logins in flight).
    pub async fn begin(&self, workspace: WorkspaceId) -> Result<Url, SamlLoginFailure> {
        let sp = match self.sp(workspace).await {
            Ok(sp) => sp,
            // As OIDC: a refused plan is recorded; an unknown workspace has no log to write to.
            Err(SamlLoginFailure::PlanLacksSso) => {
                return Err(self.refuse(workspace, SamlLoginFailure::PlanLacksSso).await);
            }
            Err(failure) => return Err(failure),
        };
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .expect("the operating system's random number generator failed");
        let relay_state: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let now = self.clock.now();
        let login = sp
            .start_login(Some(&relay_state), now)
            .map_err(|_| SamlLoginFailure::Unavailable)?;
        let mut pending = self.pending.lock().expect("pending SAML logins");
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| p.request.expires_at > now);
            if pending.len() >= MAX_PENDING {
                return Err(SamlLoginFailure::Unavailable);
            }
        }
        pending.insert(
            relay_state,
            Pending {
                workspace,
                request: login.pending,
            },
        );
        Ok(login.redirect_url)
    }

    /// Takes a started login by its `RelayState`: once. Expiry is left to
    /// [`SamlSp::consume`], which refuses it with its own reason.
    fn take(&self, relay_state: Option<&str>) -> Option<Pending> {
        let relay_state = relay_state?;
        self.pending
            .lock()
            .expect("pending SAML logins")
            .remove(relay_state)
    }

    /// Completes a login at the workspace's ACS: the response checked against the login its
    /// `RelayState` names (none: IdP-initiated, refused unless allowed), the person matched by
    /// e-mail within the verified domains to an existing member, a session bound to the
    /// workspace started and `sso.login_succeeded` recorded.
    ///
    /// # Errors
    /// A [`SamlLoginFailure`], recorded as `sso.login_failed` in the workspace's log.
    pub async fn complete(
        &self,
        workspace: WorkspaceId,
        saml_response: Option<&str>,
        relay_state: Option<&str>,
    ) -> Result<SamlLogin, SamlLoginFailure> {
        // Taken first, whatever happens next: a login is answered once.
        let pending = self.take(relay_state);
        match self.finish(workspace, saml_response, pending).await {
            Ok(login) => Ok(login),
            Err(failure) => Err(self.refuse(workspace, failure).await),
        }
    }

    async fn finish(
        &self,
        workspace: WorkspaceId,
        saml_response: Option<&str>,
        pending: Option<Pending>,
    ) -> Result<SamlLogin, SamlLoginFailure> {
        let sp = self.sp(workspace).await?;
        let saml_response = saml_response.ok_or(SamlLoginFailure::NoResponse)?;
        if pending.as_ref().is_some_and(|p| p.workspace != workspace) {
            return Err(SamlLoginFailure::WrongWorkspace);
        }
        let identity = sp
            .consume(
                saml_response,
                pending.as_ref().map(|p| &p.request),
                self.clock.now(),
                &*self.replay,
            )
            .await
            .map_err(|error| SamlLoginFailure::Response(saml_reason(&error)))?;
        let config = self
            .configs
            .get(workspace)
            .ok_or(SamlLoginFailure::NotConfigured)?;
        let address = identity
            .email
            .as_deref()
            .and_then(|e| Address::parse(e).ok())
            .filter(|a| config.domains.iter().any(|d| d == a.domain()))
            .ok_or(SamlLoginFailure::UnverifiedEmail)?;
        let now = self.clock.now();
        let signed_in = leadmaps_core::sso::sign_in_member(
            &*self.store,
            &self.hasher,
            &self.gate,
            workspace,
            &address,
            SsoProtocol::Saml,
            now,
        )
        .await
        .map_err(|_| SamlLoginFailure::Store)?
        .ok_or(SamlLoginFailure::NotAMember)?;
        tracing::info!("SAML single sign-on succeeded");
        Ok(SamlLogin {
            workspace,
            user: signed_in.user,
            token: signed_in.token,
            session: signed_in.session,
            started_at: now,
        })
    }
}

/// The routes: `GET /saml/{workspace}/metadata`, `GET /auth/saml/{workspace}` and
/// `POST /saml/{workspace}/acs`.
pub fn saml_routes(logins: Arc<SamlLogins>) -> Router {
    Router::new()
        .route("/saml/{workspace}/metadata", get(metadata))
        .route("/auth/saml/{workspace}", get(start))
        .route(
            "/saml/{workspace}/acs",
            post(acs).layer(DefaultBodyLimit::max(MAX_ACS_FORM_BYTES)),
        )
        .with_state(logins)
}

fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn page(code: StatusCode, body: &str) -> Response {
    let mut response = (
        code,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>leadmaps</title></head>\
             <body>{body}</body></html>"
        )),
    )
        .into_response();
    no_store(&mut response);
    response
}

fn refused(failure: SamlLoginFailure) -> Response {
    match failure {
        SamlLoginFailure::PlanLacksSso => page(
            StatusCode::FORBIDDEN,
            "<p>Single sign-on is available on the Business plan and above.</p>",
        ),
        SamlLoginFailure::NotConfigured => page(
            StatusCode::NOT_FOUND,
            "<p>This workspace has no single sign-on.</p>",
        ),
        SamlLoginFailure::Unavailable => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "<p>Single sign-on is unavailable. Try again later.</p>",
        ),
        _ => page(
            StatusCode::FORBIDDEN,
            "<p>Single sign-on failed. Start again from your identity provider or the sign-in page.</p>",
        ),
    }
}

fn see_other(location: HeaderValue) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    no_store(&mut response);
    response
}

async fn metadata(
    State(logins): State<Arc<SamlLogins>>,
    Path(workspace): Path<String>,
) -> Response {
    let Ok(workspace) = workspace.parse::<WorkspaceId>() else {
        return refused(SamlLoginFailure::NotConfigured);
    };
    if !logins.exists(workspace).await {
        return refused(SamlLoginFailure::NotConfigured);
    }
    match logins.sp_entity(workspace).and_then(|sp| sp.metadata_xml()) {
        Ok(xml) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            )],
            xml,
        )
            .into_response(),
        Err(_) => refused(SamlLoginFailure::NotConfigured),
    }
}

async fn start(State(logins): State<Arc<SamlLogins>>, Path(workspace): Path<String>) -> Response {
    let Ok(workspace) = workspace.parse::<WorkspaceId>() else {
        return refused(SamlLoginFailure::NotConfigured);
    };
    match logins.begin(workspace).await {
        Ok(url) => match HeaderValue::from_str(url.as_str()) {
            Ok(location) => see_other(location),
            Err(_) => refused(SamlLoginFailure::Unavailable),
        },
        Err(failure) => refused(failure),
    }
}

/// The HTTP-POST binding's form. Both fields optional: a missing response is refused (and
/// audited) like any bad one, not with the extractor's 422.
#[derive(Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: Option<String>,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

async fn acs(
    State(logins): State<Arc<SamlLogins>>,
    Path(workspace): Path<String>,
    form: Result<Form<AcsForm>, FormRejection>,
) -> Response {
    let Ok(workspace) = workspace.parse::<WorkspaceId>() else {
        return refused(SamlLoginFailure::NotConfigured);
    };
    let (saml_response, relay_state) = match form {
        Ok(Form(form)) => (form.saml_response, form.relay_state),
        Err(_) => (None, None),
    };
    match logins
        .complete(workspace, saml_response.as_deref(), relay_state.as_deref())
        .await
    {
        Ok(login) => {
            let cookie = session_cookie(&login.token, &login.session, login.started_at);
            let mut response = see_other(HeaderValue::from_static("/"));
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(failure) => refused(failure),
    }
}
