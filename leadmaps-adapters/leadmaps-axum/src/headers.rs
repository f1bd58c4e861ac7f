//! Security headers on every response.

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

const HEADERS: [(HeaderName, &str); 6] = [
    (
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=63072000; includeSubDomains",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::CACHE_CONTROL, "no-store"),
];

async fn add(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// Adds HSTS, `nosniff`, `Referrer-Policy: no-referrer`, frame denial, a closed CSP and
/// `Cache-Control: no-store` to every response of `router`.
pub fn harden<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(axum::middleware::map_response(add))
}

/// Whether the request body is declared `application/json` (parameters allowed). State-changing
/// routes that a session cookie can reach take only JSON: a cross-site form cannot send it
/// without a CORS preflight.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON request body as `T`: 415 unless declared `application/json` ([`is_json`]), 400 with
/// `malformed` when it does not parse.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    malformed: &'static str,
) -> Result<T, (StatusCode, &'static str)> {
    if !is_json(headers) {
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json"));
    }
    serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, malformed))
}
