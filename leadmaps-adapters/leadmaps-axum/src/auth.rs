//! Passwordless sign-in for customers: magic links by e-mail, then a session cookie.
//!
//! - `POST /auth/magic-link` answers every request with the same bytes, before looking anything
//!   up; the lookup, the limits and the e-mail happen on a background task, so neither the body
//!   nor the timing tells whether an address has an account.
//! - `GET`/`HEAD /auth/magic-link?token=…` only shows a confirmation page: mail scanners that
//!   fetch links consume nothing.
//! - `POST /auth/magic-link/confirm` consumes the link (once, within 10 minutes) and sets the
//!   `__Host-` session cookie, then redirects to `/`. There is no `next` parameter, so no open
//!   redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::post;
use ipnet::IpNet;
use leadmaps_core::auth::session::{Realm, Sessions, session_cookie};
use leadmaps_core::auth::totp::Subject;
use leadmaps_core::auth::users::UserStore;
use leadmaps_core::clock::Clock;
use leadmaps_core::mail::{Address, Email, Mailer};
use serde::Deserialize;

use crate::client::{PeerAddr, client_ip};

/// What the sign-in routes share.
pub struct AuthState {
    users: Arc<dyn UserStore>,
    sessions: Arc<Sessions>,
    mailer: Arc<dyn Mailer>,
    clock: Arc<dyn Clock>,
    base_url: String,
    trusted_proxies: Vec<IpNet>,
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
        users: Arc<dyn UserStore>,
        sessions: Arc<Sessions>,
        mailer: Arc<dyn Mailer>,
        clock: Arc<dyn Clock>,
        base_url: impl Into<String>,
        trusted_proxies: Vec<IpNet>,
    ) -> Self {
        Self {
            users,
            sessions,
            mailer,
            clock,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            trusted_proxies,
        }
    }
}

/// The sign-in routes.
pub fn auth_routes(state: Arc<AuthState>) -> Router {
    Router::new()
        .route("/auth/magic-link", post(request_link).get(confirm_page))
        .route("/auth/magic-link/confirm", post(confirm))
        .with_state(state)
}

/// The one answer to every link request.
const REQUESTED: &str = "{\"status\":\"if the address can sign in, a link is on its way\"}";

#[derive(Deserialize)]
struct LinkRequest {
    email: String,
}

async fn request_link(
    State(state): State<Arc<AuthState>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<PeerAddr>>()
                .map(|ConnectInfo(PeerAddr(addr))| addr.ip())
        })
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let ip = client_ip(peer, &parts.headers, &state.trusted_proxies);
    let body = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    // Answer first; everything that could differ between addresses happens afterwards.
    if let Ok(request) = serde_json::from_slice::<LinkRequest>(&body) {
        let state = state.clone();
        tokio::spawn(async move { send_link(&state, &request.email, ip).await });
    }
    let mut response = (StatusCode::ACCEPTED, REQUESTED).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn send_link(state: &AuthState, raw_email: &str, ip: IpAddr) {
    let Ok(email) = Address::parse(raw_email) else {
        return;
    };
    let user = match state.users.user_by_email(&email).await {
        Ok(Some(user)) => user,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(kind = ?error.kind(), "magic link: user lookup failed");
            return;
        }
    };
    let issued = match state
        .sessions
        .request_link(Realm::Customer, &user.email, ip)
        .await
    {
        Ok(Some(issued)) => issued,
        Ok(None) => return, // a send limit applies; say nothing
        Err(error) => {
            tracing::warn!(kind = ?error.kind(), "magic link: could not issue");
            return;
        }
    };
    let link = format!(
        "{}/auth/magic-link?token={}",
        state.base_url,
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
    if let Err(error) = state.mailer.send(&email).await {
        tracing::warn!(kind = ?error.kind(), "magic link: sending failed");
    }
}

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Shows the confirmation form; consumes nothing (GET and HEAD alike).
async fn confirm_page(Query(param): Query<TokenParam>) -> Response {
    let token = escape(param.token.as_deref().unwrap_or(""));
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in to leadmaps</title></head>\
         <body><form method=\"post\" action=\"/auth/magic-link/confirm\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <button type=\"submit\">Sign in</button></form></body></html>"
    );
    let mut response = Html(page).into_response();
    // The page holds the token: keep it out of caches and referrers.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[derive(Deserialize)]
struct ConfirmForm {
    token: String,
}

/// Consumes the link and starts a session.
async fn confirm(State(state): State<Arc<AuthState>>, Form(form): Form<ConfirmForm>) -> Response {
    let refused = || {
        (StatusCode::BAD_REQUEST, Html("<!doctype html><p>This sign-in link is invalid or has expired. Ask for a new one.</p>")).into_response()
    };
    let Ok(link) = state
        .sessions
        .consume_link(Realm::Customer, &form.token)
        .await
    else {
        return refused();
    };
    let user = match state.users.user_by_email(&link.email).await {
        Ok(Some(user)) => user,
        _ => return refused(),
    };
    match state.sessions.start(Subject::User(user.id), false).await {
        Ok((token, session)) => {
            let cookie = session_cookie(&token, &session, state.clock.now());
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => {
            tracing::warn!(kind = ?error.kind(), "could not start a session");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}
