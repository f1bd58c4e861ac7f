//! `POST /api/event` (Plausible-compatible, one event) and `POST /api/v1/events` (a JSON array,
//! optionally gzip), with CORS open on these routes only.
//!
//! Statuses: 202 for a single event stored (or already stored), 200 with per-event results for a
//! batch, 400 malformed, 413 too large, 415 wrong content type or encoding, 421 every event
//! belongs to another region, 429 rate limited, 503 queue full or store down; 429 and 503 carry
//! `Retry-After`. A filtered event (bot, referrer spam, blocked address) is answered with
//! `rejected` and its reason, never with a silent success.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ipnet::IpNet;
use leadmaps_core::ingest::event::parse;
use leadmaps_core::ingest::{ClientInfo, CollectError, Collector, Outcome, RejectReason, limits};
use serde_json::{Value, json};

use crate::client::{client_ip, peer_ip};
use crate::limiter::{RateLimit, RateLimiter};

/// What the collector routes share.
#[derive(Debug)]
pub struct CollectorState {
    collector: Arc<Collector>,
    trusted_proxies: Vec<IpNet>,
    limiter: RateLimiter,
}

impl CollectorState {
    /// State for the routes: the collector, the proxies whose `X-Forwarded-For` is believed,
    /// and the per-address rate limit.
    pub fn new(
        collector: Arc<Collector>,
        trusted_proxies: Vec<IpNet>,
        rate_limit: RateLimit,
    ) -> Self {
        Self {
            collector,
            trusted_proxies,
            limiter: RateLimiter::new(rate_limit),
        }
    }

    /// The collector.
    pub fn collector(&self) -> &Arc<Collector> {
        &self.collector
    }
}

/// The collector routes, with CORS open to any origin (trackers run on customers' sites).
/// Serve them with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn collector_routes(state: Arc<CollectorState>) -> Router {
    Router::new()
        .route("/api/event", post(single).options(preflight))
        .route("/api/v1/events", post(batch).options(preflight))
        .layer(axum::middleware::map_response(cors))
        .with_state(state)
}

async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn cors(method: Method, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if method == Method::OPTIONS {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Content-Encoding"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    response
}

/// A refused request: a status, a fixed message, and for 429/503 a Retry-After.
struct Refusal {
    status: StatusCode,
    message: &'static str,
    retry_after: Option<u64>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

fn error(status: StatusCode, message: &'static str) -> Refusal {
    Refusal {
        status,
        message,
        retry_after: None,
    }
}

fn retry_after(status: StatusCode, message: &'static str, seconds: u64) -> Refusal {
    Refusal {
        status,
        message,
        retry_after: Some(seconds),
    }
}

/// Everything a handler needs from the request before the body is parsed.
struct Prepared {
    ip: IpAddr,
    /// The User-Agent header (empty if absent or not visible ASCII); a cheap clone of the
    /// request's, freed with the request.
    user_agent: Option<HeaderValue>,
    body: Bytes,
}

impl Prepared {
    fn client(&self) -> ClientInfo<'_> {
        ClientInfo {
            ip: self.ip,
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        }
    }
}

/// Whether the body is declared JSON: `application/json`, or `text/plain` (Plausible's tracker
/// sends it from some browsers to avoid a CORS preflight), in any case, parameters ignored.
fn json_media_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("text/plain")
}

async fn prepare(state: &CollectorState, request: Request) -> Result<Prepared, Refusal> {
    let (parts, body) = request.into_parts();
    if !json_media_type(&parts.headers) {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/json or text/plain",
        ));
    }
    let peer = peer_ip(&parts.extensions)
        .ok_or_else(|| error(StatusCode::INTERNAL_SERVER_ERROR, "no peer address"))?;
    let ip = client_ip(peer, &parts.headers, &state.trusted_proxies);
    if let Err(wait) = state.limiter.check(ip) {
        return Err(retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited",
            wait.as_secs_f64().ceil() as u64,
        ));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits::BODY.max as u64) {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MB"));
    }
    let body = axum::body::to_bytes(Body::new(body), limits::BODY.max)
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MB"))?;
    let body = match parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None | Some("identity") => body,
        Some("gzip") => inflate(&body)?,
        Some(_) => {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "only gzip content encoding is accepted",
            ));
        }
    };
    let user_agent = parts.headers.get(header::USER_AGENT).cloned();
    Ok(Prepared {
        ip,
        user_agent,
        body,
    })
}

/// Inflates gzip, stopping one byte past the limit: a bomb costs at most that much.
fn inflate(body: &[u8]) -> Result<Bytes, Refusal> {
    let mut out = Vec::with_capacity(body.len() * 4);
    let limit = limits::INFLATED.max as u64;
    let read = flate2::read::GzDecoder::new(body)
        .take(limit + 1)
        .read_to_end(&mut out);
    match read {
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "body is not valid gzip")),
        Ok(_) if out.len() as u64 > limit => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "inflated body over 1 MB",
        )),
        Ok(_) => Ok(out.into()),
    }
}

fn failure(error_kind: CollectError) -> Refusal {
    match error_kind {
        CollectError::WrongRegion => error(
            StatusCode::MISDIRECTED_REQUEST,
            "workspace is served in another region",
        ),
        CollectError::QueueFull => {
            retry_after(StatusCode::SERVICE_UNAVAILABLE, "ingest queue full", 1)
        }
        _ => retry_after(StatusCode::SERVICE_UNAVAILABLE, "store unavailable", 5),
    }
}

/// Appends an outcome as a JSON object: `{"id":"…","result":"accepted"}`,
/// `{"id":"…","result":"duplicate"}` or `{"reason":"…","result":"rejected"}`. Written directly
/// (ids and reason codes need no escaping): this is on every request's path.
fn write_outcome(out: &mut String, outcome: &Outcome) {
    let (key, value, result) = match outcome {
        Outcome::Accepted(id) => ("id", Some(id.0), "accepted"),
        Outcome::Duplicate(id) => ("id", Some(id.0), "duplicate"),
        Outcome::Rejected(reason) => ("reason", None, reason.code()),
    };
    out.push_str("{\"");
    out.push_str(key);
    out.push_str("\":\"");
    match value {
        Some(id) => {
            out.push_str(id.hyphenated().encode_lower(&mut [0; 36]));
            out.push_str("\",\"result\":\"");
            out.push_str(result);
        }
        None => {
            out.push_str(result);
            out.push_str("\",\"result\":\"rejected");
        }
    }
    out.push_str("\"}");
}

/// A JSON response.
fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn single(State(state): State<Arc<CollectorState>>, request: Request) -> Response {
    let prepared = match prepare(&state, request).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(value) = serde_json::from_slice::<Value>(&prepared.body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    };
    match state
        .collector
        .collect(vec![parse(&value, false)], prepared.client())
        .await
    {
        Ok(outcomes) => {
            let outcome = outcomes[0];
            let status = match outcome {
                Outcome::Accepted(_) | Outcome::Duplicate(_) => StatusCode::ACCEPTED,
                // Filtered traffic is told so, with a 2xx so bots do not retry.
                Outcome::Rejected(reason) if reason.is_filtered() => StatusCode::ACCEPTED,
                Outcome::Rejected(RejectReason::WrongRegion) => StatusCode::MISDIRECTED_REQUEST,
                Outcome::Rejected(_) => StatusCode::BAD_REQUEST,
            };
            let mut body = String::with_capacity(64);
            write_outcome(&mut body, &outcome);
            json_response(status, body)
        }
        Err(e) => failure(e).into_response(),
    }
}

async fn batch(State(state): State<Arc<CollectorState>>, request: Request) -> Response {
    let prepared = match prepare(&state, request).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&prepared.body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be a JSON array of events",
        )
        .into_response();
    };
    if items.len() > limits::BATCH.max {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "more than 100 events in one batch",
        )
        .into_response();
    }
    if items.is_empty() {
        return error(StatusCode::BAD_REQUEST, "empty batch").into_response();
    }
    let parsed = items.iter().map(|item| parse(item, true)).collect();
    match state.collector.collect(parsed, prepared.client()).await {
        Ok(outcomes) => {
            let mut body = String::with_capacity(16 + 64 * outcomes.len());
            body.push_str("{\"results\":[");
            for (i, outcome) in outcomes.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                write_outcome(&mut body, outcome);
            }
            body.push_str("]}");
            json_response(StatusCode::OK, body)
        }
        Err(e) => failure(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use leadmaps_core::ingest::EventId;

    use super::*;

    #[test]
    fn outcomes_are_written_as_serde_json_writes_them() {
        let id = EventId::generate(time::OffsetDateTime::UNIX_EPOCH);
        let cases = [
            (
                Outcome::Accepted(id),
                json!({ "result": "accepted", "id": id.0 }),
            ),
            (
                Outcome::Duplicate(id),
                json!({ "result": "duplicate", "id": id.0 }),
            ),
            (
                Outcome::Rejected(RejectReason::Bot),
                json!({ "result": "rejected", "reason": "bot" }),
            ),
            (
                Outcome::Rejected(RejectReason::PropValueTooLong),
                json!({ "result": "rejected", "reason": "prop_value_too_long" }),
            ),
        ];
        for (outcome, expected) in cases {
            let mut written = String::new();
            write_outcome(&mut written, &outcome);
            assert_eq!(written, expected.to_string());
        }
    }
}
