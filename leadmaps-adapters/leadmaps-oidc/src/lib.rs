//! leadmaps as an OpenID Connect relying party: single sign-on per workspace, on Business plans
//! and above.
//!
//! Each workspace configures its own identity provider (issuer, client id, client secret sealed
//! under its tenant key, verified e-mail domains: [`leadmaps_core::sso::configure_oidc`]). A
//! login is the authorization code flow with PKCE (S256), `state` and `nonce`, all three kept
//! server-side for ten minutes and usable once. The ID token is checked strictly: `iss` equal to
//! the configured issuer, `aud` containing the client id (and `azp` equal to it when there are
//! several audiences), not expired, signed with an asymmetric algorithm (RS*, PS*, ES*, EdDSA:
//! never `none`, never an HMAC keyed by the client secret) by a key of the provider's JWKS, and
//! the nonce of this login. An unknown `kid` refetches the JWKS, at most once per five minutes
//! per issuer. The person is matched by a verified e-mail address (`email_verified: true`) in
//! one of the workspace's verified domains, to an existing member of the workspace; the session
//! is bound to that workspace ([`leadmaps_core::sso`]). Every login and every refusal is audited
//! in the workspace's log; nothing is logged of tokens or addresses.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(rp: Arc<leadmaps_oidc::OidcRp>) -> axum::Router {
//! leadmaps_oidc::oidc_routes(rp)
//! # }
//! ```
//!
//! Routes: `GET /auth/sso/{workspace}` starts a login (303 to the provider); the provider sends
//! the browser back to `GET /auth/sso/callback`, which sets the session cookie and redirects
//! home.

mod routes;
mod rp;

pub use routes::{CALLBACK_PATH, oidc_routes};
pub use rp::{
    JWKS_REFETCH_INTERVAL, LOGIN_TTL, LoginFailure, OidcRp, SsoLogin, allowed_algorithms,
};
