//! The login routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use leadmaps_core::auth::session::session_cookie;
use leadmaps_core::tenancy::WorkspaceId;
use serde::Deserialize;

use crate::rp::{LoginFailure, OidcRp};

/// Where the provider sends the browser back.
pub const CALLBACK_PATH: &str = "/auth/sso/callback";

/// The login routes: `GET /auth/sso/{workspace}` and `GET /auth/sso/callback`.
pub fn oidc_routes(rp: Arc<OidcRp>) -> Router {
    Router::new()
        .route(CALLBACK_PATH, get(callback))
        .route("/auth/sso/{workspace}", get(start))
        .with_state(rp)
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
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn refused(failure: LoginFailure) -> Response {
    match failure {
        LoginFailure::PlanLacksSso => page(
            StatusCode::FORBIDDEN,
            "<p>Single sign-on is available on the Business plan and above.</p>",
        ),
        LoginFailure::NotConfigured => page(
            StatusCode::NOT_FOUND,
            "<p>This workspace has no single sign-on.</p>",
        ),
        LoginFailure::ProviderUnreachable => page(
            StatusCode::BAD_GATEWAY,
            "<p>The identity provider could not be reached. Try again later.</p>",
        ),
        _ => page(
            StatusCode::FORBIDDEN,
            "<p>Single sign-on failed. Start again from your identity provider or the sign-in page.</p>",
        ),
    }
}

async fn start(State(rp): State<Arc<OidcRp>>, Path(workspace): Path<String>) -> Response {
    let Ok(workspace) = workspace.parse::<WorkspaceId>() else {
        return refused(LoginFailure::NotConfigured);
    };
    match rp.begin(workspace).await {
        Ok(url) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            match HeaderValue::from_str(url.as_str()) {
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                    response
                        .headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    response
                }
                Err(_) => refused(LoginFailure::ProviderUnreachable),
            }
        }
        Err(failure) => refused(failure),
    }
}

/// The provider's answer.
#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn callback(State(rp): State<Arc<OidcRp>>, Query(answer): Query<Callback>) -> Response {
    let Some(state) = answer.state else {
        return refused(LoginFailure::UnknownState);
    };
    match rp
        .complete(&state, answer.code.as_deref(), answer.error.as_deref())
        .await
    {
        Ok(login) => {
            let now = login.session.expires_at
                - leadmaps_core::auth::session::Realm::Customer
                    .session_lifetimes()
                    .1;
            let cookie = session_cookie(&login.token, &login.session, now);
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, HeaderValue::from_static("/"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(failure) => refused(failure),
    }
}
