//! The relying party: starting a login and completing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use leadmaps_core::auth::session::Session;
use leadmaps_core::auth::tokens::{SplitToken, TokenHasher};
use leadmaps_core::clock::Clock;
use leadmaps_core::crypto::Vault;
use leadmaps_core::mail::Address;
use leadmaps_core::policy::Feature;
use leadmaps_core::sso::{OidcConnection, login_failed_draft, open_client_secret};
use leadmaps_core::store::Store;
use leadmaps_core::tenancy::{Action, Gate, Principal, Scope, SystemTask, UserId, WorkspaceId};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope as OAuthScope,
    SignatureVerificationError, TokenResponse as _,
};
use time::{Duration, OffsetDateTime};

/// How long a started login may take to come back.
pub const LOGIN_TTL: Duration = Duration::minutes(10);
/// Least time between two JWKS fetches of one issuer caused by an unknown `kid`.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::minutes(5);
/// How long discovered provider metadata is used before it is fetched again.
const METADATA_TTL: Duration = Duration::hours(1);
/// Most logins in flight; beyond it, expired ones are dropped and new ones refused.
const MAX_PENDING: usize = 100_000;

/// The only signature algorithms accepted: asymmetric ones. `none` and the HMACs (which a
/// provider would key with the client secret, a secret leadmaps also holds) are refused.
pub fn allowed_algorithms() -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm::*;
    vec![
        RsaSsaPkcs1V15Sha256,
        RsaSsaPkcs1V15Sha384,
        RsaSsaPkcs1V15Sha512,
        RsaSsaPssSha256,
        RsaSsaPssSha384,
        RsaSsaPssSha512,
        EcdsaP256Sha256,
        EcdsaP384Sha384,
        EdDsa,
    ]
}

/// Why a login was refused: a fixed reason, recorded in the audit log and shown to nobody
/// else (the browser sees one message for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// The workspace has no OIDC connection.
    NotConfigured,
    /// The workspace's plan does not include SSO.
    PlanLacksSso,
    /// The `state` is unknown, used or expired.
    UnknownState,
    /// The provider answered the authorization request with an error.
    ProviderError,
    /// Discovery, the token request or the JWKS failed.
    ProviderUnreachable,
    /// The token response had no ID token.
    NoIdToken,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not hold the client id (or `azp` names another client).
    WrongAudience,
    /// The nonce is not this login's.
    WrongNonce,
    /// The token has expired.
    Expired,
    /// The algorithm is not an accepted one (`none`, an HMAC, ...).
    WrongAlgorithm,
    /// No key of the provider verifies the signature.
    BadSignature,
    /// Any other claim check failed.
    InvalidToken,
    /// No verified address in a verified domain.
    UnverifiedEmail,
    /// No member of the workspace has the address.
    NotAMember,
    /// Storing the session failed.
    Store,
}

impl LoginFailure {
    /// The stable reason recorded in `sso.login_failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LoginFailure::NotConfigured => "not_configured",
            LoginFailure::PlanLacksSso => "plan_lacks_sso",
            LoginFailure::UnknownState => "unknown_state",
            LoginFailure::ProviderError => "provider_error",
            LoginFailure::ProviderUnreachable => "provider_unreachable",
            LoginFailure::NoIdToken => "no_id_token",
            LoginFailure::WrongIssuer => "wrong_issuer",
            LoginFailure::WrongAudience => "wrong_audience",
            LoginFailure::WrongNonce => "wrong_nonce",
            LoginFailure::Expired => "expired",
            LoginFailure::WrongAlgorithm => "wrong_algorithm",
            LoginFailure::BadSignature => "bad_signature",
            LoginFailure::InvalidToken => "invalid_token",
            LoginFailure::UnverifiedEmail => "unverified_email",
            LoginFailure::NotAMember => "not_a_member",
            LoginFailure::Store => "store",
        }
    }
}

impl std::fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for LoginFailure {}

/// A completed login.
pub struct SsoLogin {
    /// The workspace whose provider vouched.
    pub workspace: WorkspaceId,
    /// The member.
    pub user: UserId,
    /// The session token for the cookie (shown once).
    pub token: SplitToken,
    /// The session, bound to the workspace.
    pub session: Session,
}

impl std::fmt::Debug for SsoLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoLogin")
            .field("workspace", &self.workspace)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

struct Pending {
    workspace: WorkspaceId,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    expires_at: OffsetDateTime,
}

struct Provider {
    metadata: CoreProviderMetadata,
    metadata_at: OffsetDateTime,
    jwks: CoreJsonWebKeySet,
    jwks_at: OffsetDateTime,
}

/// The relying party of every workspace.
pub struct OidcRp {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    hasher: TokenHasher,
    gate: Gate,
    clock: Arc<dyn Clock>,
    http: openidconnect::reqwest::Client,
    redirect: RedirectUrl,
    pending: Mutex<HashMap<String, Pending>>,
    providers: tokio::sync::Mutex<HashMap<String, Provider>>,
    jwks_fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for OidcRp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcRp")
            .field("redirect", &self.redirect.as_str())
            .finish_non_exhaustive()
    }
}

fn chrono_of(at: OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond())
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

impl OidcRp {
    /// The relying party; the provider sends browsers back to `{base_url}/auth/sso/callback`.
    ///
    /// # Errors
    /// [`leadmaps_core::Error::Invalid`] for a base URL that is not a URL, or an HTTP client that
    /// cannot be built.
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        hasher: TokenHasher,
        gate: Gate,
        clock: Arc<dyn Clock>,
        base_url: &str,
    ) -> leadmaps_core::Result<Self> {
        let redirect = RedirectUrl::new(format!(
            "{}{}",
            base_url.trim_end_matches('/'),
            crate::CALLBACK_PATH
        ))
        .map_err(|_| leadmaps_core::Error::invalid("the base URL is not a URL"))?;
        // No redirects: a provider endpoint that redirects is an error, not a hop (SSRF).
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|_| leadmaps_core::Error::invalid("the HTTP client cannot be built"))?;
        Ok(Self {
            store,
            vault,
            hasher,
            gate,
            clock,
            http,
            redirect,
            pending: Mutex::new(HashMap::new()),
            providers: tokio::sync::Mutex::new(HashMap::new()),
            jwks_fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many times a JWKS was fetched (discovery included), for tests and metrics.
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn task_scope(&self, workspace: WorkspaceId, action: Action) -> leadmaps_core::Result<Scope> {
        Ok(self.gate.authorize(
            &Principal::System(SystemTask::SingleSignOn),
            workspace,
            action,
        )?)
    }

    /// Records a refused login in the workspace's log (best effort) and returns the failure.
    async fn refuse(&self, workspace: WorkspaceId, failure: LoginFailure) -> LoginFailure {
        tracing::info!(reason = failure.as_str(), "single sign-on refused");
        if let Ok(scope) = self.task_scope(workspace, Action::WorkspaceRead) {
            let draft = login_failed_draft(&scope, "oidc", failure.as_str());
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

    async fn connection(
        &self,
        workspace: WorkspaceId,
    ) -> Result<(Scope, OidcConnection), LoginFailure> {
        let scope = self
            .task_scope(workspace, Action::SecretRead)
            .map_err(|_| LoginFailure::NotConfigured)?;
        let settings = match self.store.sso_settings(&scope).await {
            Ok(settings) => settings,
            Err(_) => return Err(LoginFailure::NotConfigured),
        };
        if !settings.plan.unlocks(Feature::Sso) {
            return Err(self.refuse(workspace, LoginFailure::PlanLacksSso).await);
        }
        match self.store.oidc_connection(&scope).await {
            Ok(Some(connection)) => Ok((scope, connection)),
            _ => Err(LoginFailure::NotConfigured),
        }
    }

    /// The provider's metadata (discovered, cached for an hour) and current JWKS.
    async fn provider(
        &self,
        issuer: &str,
    ) -> Result<(CoreProviderMetadata, CoreJsonWebKeySet), LoginFailure> {
        let now = self.clock.now();
        let mut providers = self.providers.lock().await;
        if let Some(p) = providers.get(issuer)
            && now - p.metadata_at < METADATA_TTL
        {
            return Ok((p.metadata.clone(), p.jwks.clone()));
        }
        let issuer_url =
            IssuerUrl::new(issuer.to_owned()).map_err(|_| LoginFailure::ProviderUnreachable)?;
        // Discovery checks that the document's issuer is exactly the configured one.
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &self.http)
            .await
            .map_err(|_| LoginFailure::ProviderUnreachable)?;
        self.jwks_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let jwks = metadata.jwks().clone();
        providers.insert(
            issuer.to_owned(),
            Provider {
                metadata: metadata.clone(),
                metadata_at: now,
                jwks: jwks.clone(),
                jwks_at: now,
            },
        );
        Ok((metadata, jwks))
    }

    /// Fetches the issuer's JWKS again, unless it was fetched less than
    /// [`JWKS_REFETCH_INTERVAL`] ago. Returns the new set, or `None` when rate-limited.
    async fn refetch_jwks(&self, issuer: &str) -> Result<Option<CoreJsonWebKeySet>, LoginFailure> {
        let now = self.clock.now();
        let mut providers = self.providers.lock().await;
        let Some(provider) = providers.get_mut(issuer) else {
            return Ok(None);
        };
        if now - provider.jwks_at < JWKS_REFETCH_INTERVAL {
            return Ok(None);
        }
        // Counted before the answer: a failed fetch still spends the interval.
        provider.jwks_at = now;
        let jwks = CoreJsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|_| LoginFailure::ProviderUnreachable)?;
        self.jwks_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        provider.jwks = jwks.clone();
        Ok(Some(jwks))
    }

    /// Starts a login into `workspace`: returns the provider's authorization URL. PKCE
    /// verifier, state and nonce stay here, for [`LOGIN_TTL`].
    ///
    /// # Errors
    /// A [`LoginFailure`] (the plan, no connection, an unreachable provider).
    pub async fn begin(&self, workspace: WorkspaceId) -> Result<url::Url, LoginFailure> {
        let (_, connection) = self.connection(workspace).await?;
        let (metadata, _) = match self.provider(&connection.issuer).await {
            Ok(found) => found,
            Err(failure) => return Err(self.refuse(workspace, failure).await),
        };
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(connection.client_id.clone()),
            None,
        )
        .set_redirect_uri(self.redirect.clone());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(OAuthScope::new("email".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        let now = self.clock.now();
        let mut pending = self.pending.lock().expect("pending logins");
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| p.expires_at > now);
            if pending.len() >= MAX_PENDING {
                return Err(LoginFailure::ProviderUnreachable);
            }
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                workspace,
                verifier,
                nonce,
                expires_at: now + LOGIN_TTL,
            },
        );
        Ok(url)
    }

    /// Takes a started login by its `state`: once, before it expires.
    fn take(&self, state: &str) -> Option<Pending> {
        let now = self.clock.now();
        let mut pending = self.pending.lock().expect("pending logins");
        pending.remove(state).filter(|p| p.expires_at > now)
    }

    /// Completes a login: the provider's `code` for the login `state` started, the ID token
    /// checked (see the crate docs), the member found, a session bound to the workspace started
    /// and `sso.login_succeeded` recorded. An `error` from the provider ends the login.
    ///
    /// # Errors
    /// A [`LoginFailure`], recorded as `sso.login_failed` in the workspace's log.
    pub async fn complete(
        &self,
        state: &str,
        code: Option<&str>,
        provider_error: Option<&str>,
    ) -> Result<SsoLogin, LoginFailure> {
        let pending = self.take(state).ok_or(LoginFailure::UnknownState)?;
        let workspace = pending.workspace;
        match self.finish(pending, code, provider_error).await {
            Ok(login) => Ok(login),
            Err(failure) => Err(self.refuse(workspace, failure).await),
        }
    }

    async fn finish(
        &self,
        pending: Pending,
        code: Option<&str>,
        provider_error: Option<&str>,
    ) -> Result<SsoLogin, LoginFailure> {
        let workspace = pending.workspace;
        if provider_error.is_some() {
            return Err(LoginFailure::ProviderError);
        }
        let code = code.ok_or(LoginFailure::ProviderError)?;
        let (scope, connection) = self.connection(workspace).await?;
        let secret = open_client_secret(&self.vault, &scope, &connection)
            .await
            .map_err(|_| LoginFailure::NotConfigured)?;
        let secret = ClientSecret::new(
            String::from_utf8(secret.expose().to_vec()).map_err(|_| LoginFailure::NotConfigured)?,
        );
        let (metadata, jwks) = self.provider(&connection.issuer).await?;
        let client_id = ClientId::new(connection.client_id.clone());
        let client =
            CoreClient::from_provider_metadata(metadata, client_id.clone(), Some(secret.clone()))
                .set_redirect_uri(self.redirect.clone());
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| LoginFailure::ProviderUnreachable)?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|_| LoginFailure::ProviderUnreachable)?;
        let id_token = response.id_token().ok_or(LoginFailure::NoIdToken)?;
        let issuer =
            IssuerUrl::new(connection.issuer.clone()).map_err(|_| LoginFailure::NotConfigured)?;
        let now = chrono_of(self.clock.now());
        let verify = |jwks: CoreJsonWebKeySet| {
            let verifier = CoreIdTokenVerifier::new_confidential_client(
                client_id.clone(),
                secret.clone(),
                issuer.clone(),
                jwks,
            )
            .set_allowed_algs(allowed_algorithms())
            .set_time_fn(move || now);
            id_token.claims(&verifier, &pending.nonce).map(|claims| {
                (
                    claims.email().map(|e| e.as_str().to_owned()),
                    claims.email_verified(),
                )
            })
        };
        let (email, verified) = match verify(jwks) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // A `kid` the cached set does not have: the provider may have rotated its keys.
                match self.refetch_jwks(&connection.issuer).await? {
                    Some(jwks) => verify(jwks).map_err(classify)?,
                    None => return Err(LoginFailure::BadSignature),
                }
            }
            other => other.map_err(classify)?,
        };
        let address = email
            .filter(|_| verified == Some(true))
            .and_then(|e| Address::parse(&e).ok())
            .filter(|a| connection.domains.iter().any(|d| d == a.domain()))
            .ok_or(LoginFailure::UnverifiedEmail)?;
        let signed_in = leadmaps_core::sso::sign_in_member(
            &*self.store,
            &self.hasher,
            &self.gate,
            workspace,
            &address,
            leadmaps_core::sso::SsoProtocol::Oidc,
            self.clock.now(),
        )
        .await
        .map_err(|_| LoginFailure::Store)?
        .ok_or(LoginFailure::NotAMember)?;
        tracing::info!("single sign-on succeeded");
        Ok(SsoLogin {
            workspace,
            user: signed_in.user,
            token: signed_in.token,
            session: signed_in.session,
        })
    }
}

fn classify(error: ClaimsVerificationError) -> LoginFailure {
    match error {
        ClaimsVerificationError::InvalidIssuer(_) => LoginFailure::WrongIssuer,
        ClaimsVerificationError::InvalidAudience(_) => LoginFailure::WrongAudience,
        ClaimsVerificationError::InvalidNonce(_) => LoginFailure::WrongNonce,
        ClaimsVerificationError::Expired(_) => LoginFailure::Expired,
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::DisallowedAlg(_)
            | SignatureVerificationError::NoSignature
            | SignatureVerificationError::UnsupportedAlg(_),
        ) => LoginFailure::WrongAlgorithm,
        ClaimsVerificationError::SignatureVerification(_) => LoginFailure::BadSignature,
        _ => LoginFailure::InvalidToken,
    }
}
