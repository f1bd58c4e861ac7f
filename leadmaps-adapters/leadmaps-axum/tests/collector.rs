//! The collector over HTTP: every status the API promises, the limits table, gzip, CORS,
//! trusted proxies and the security headers.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use leadmaps_axum::{CollectorState, RateLimit, collector_routes, harden};
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::ingest::batcher::{self, BatcherConfig};
use leadmaps_core::ingest::bot::BotFilter;
use leadmaps_core::ingest::privacy::Salts;
use leadmaps_core::ingest::{Collector, CollectorConfig, Event, EventBatch, EventId, Verdict};
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::store::{DropCount, EventSink, SiteStore, WorkspaceStore};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, Scope, SystemTask, UserId, WorkspaceId,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower::ServiceExt as _;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

struct Harness {
    router: Router,
    store: Arc<MemoryStore>,
    workspace: WorkspaceId,
    gate: Gate,
    collector: Arc<Collector>,
}

struct Options {
    rate: RateLimit,
    queue_capacity: usize,
    run_batcher: bool,
    sink: Option<Arc<dyn EventSink>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rate: RateLimit {
                per_second: 1000.0,
                burst: 1000.0,
            },
            queue_capacity: 64,
            run_batcher: true,
            sink: None,
        }
    }
}

async fn harness(options: Options) -> Harness {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gate = Gate::new(clock.clone());
    let store = Arc::new(MemoryStore::new());
    let workspace = WorkspaceId::new();
    let us = WorkspaceId::new();
    for (ws, region, domain) in [
        (workspace, Region::Eu, "example.com"),
        (us, Region::Us, "us.example"),
    ] {
        let create = gate
            .authorize(
                &Principal::System(SystemTask::Provisioning),
                ws,
                Action::WorkspaceCreate,
            )
            .unwrap();
        store
            .create_workspace(&create, "w", region, clock.now())
            .await
            .unwrap();
        let admin = Principal::member(UserId::new(), [(ws, Role::Admin)]);
        let update = gate.authorize(&admin, ws, Action::WorkspaceUpdate).unwrap();
        store.add_site(&update, domain, clock.now()).await.unwrap();
        if ws == workspace {
            store
                .set_blocked_ips(&update, &["198.51.100.0/24".parse().unwrap()], clock.now())
                .await
                .unwrap();
        }
    }
    let ring = KeyRing::new([Kek::new(1, &(1..=32).collect::<Vec<u8>>()).unwrap()]).unwrap();
    let vault = Arc::new(
        Vault::start(ring, store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let salts = Arc::new(Salts::new(vault, store.clone(), clock.clone()));
    let sink = options.sink.unwrap_or_else(|| store.clone());
    let config = BatcherConfig {
        queue_capacity: options.queue_capacity,
        ..BatcherConfig::default()
    };
    let (queue, batcher) = batcher::channel(sink, config);
    if options.run_batcher {
        tokio::spawn(batcher.run());
    } else {
        std::mem::forget(batcher);
    }
    let collector = Arc::new(Collector::new(
        CollectorConfig::default(),
        store.clone(),
        salts,
        gate.clone(),
        BotFilter::new(),
        queue,
        clock,
    ));
    let state = Arc::new(CollectorState::new(
        collector.clone(),
        vec!["10.0.0.0/8".parse().unwrap()],
        options.rate,
    ));
    let router =
        harden(collector_routes(state).route("/other", axum::routing::get(|| async { "x" })));
    Harness {
        router,
        store,
        workspace,
        gate,
        collector,
    }
}

fn request(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    from(path, content_type, body, "203.0.113.7:5000")
}

fn from(path: &str, content_type: &str, body: impl Into<Body>, peer: &str) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::USER_AGENT, FIREFOX)
        .body(body.into())
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    request
}

async fn send(h: &Harness, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = h.router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn pageview() -> String {
    json!({"n": "pageview", "u": "https://example.com/", "d": "example.com"}).to_string()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_single_event_is_accepted_with_hardened_headers_and_cors() {
    let h = harness(Options::default()).await;
    let (status, headers, body) = send(&h, request("/api/event", "text/plain", pageview())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["result"], "accepted");
    assert_eq!(
        headers[header::STRICT_TRANSPORT_SECURITY],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let read = h
        .gate
        .authorize(
            &Principal::member(UserId::new(), [(h.workspace, Role::Admin)]),
            h.workspace,
            Action::EventRead,
        )
        .unwrap();
    assert!(
        h.store.has_event(&read, EventId(id)).await.unwrap(),
        "a 202 means stored"
    );
}

#[tokio::test]
async fn cors_is_open_on_the_collector_only() {
    let h = harness(Options::default()).await;
    let mut preflight = Request::options("/api/event").body(Body::empty()).unwrap();
    preflight
        .extensions_mut()
        .insert(ConnectInfo("203.0.113.7:1".parse::<SocketAddr>().unwrap()));
    let response = h.router.clone().oneshot(preflight).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
        "POST, OPTIONS"
    );
    let other = h
        .router
        .clone()
        .oneshot(Request::get("/other").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(
        other
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    assert_eq!(
        other.headers()[header::X_FRAME_OPTIONS],
        "DENY",
        "hardening covers every route"
    );
}

#[tokio::test]
async fn bad_requests_get_their_status() {
    let h = harness(Options::default()).await;
    let (status, _, _) = send(&h, request("/api/event", "application/xml", pageview())).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = send(&h, request("/api/event", "application/json", "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = send(
        &h,
        request(
            "/api/event",
            "application/json",
            json!({"n": "x", "u": "https://unknown.example/"}).to_string(),
        ),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("domain_unknown"))
    );
    let (status, _, body) = send(
        &h,
        request(
            "/api/event",
            "application/json",
            json!({"n": "x".repeat(121), "u": "https://example.com/"}).to_string(),
        ),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("name_too_long"))
    );
    let (status, _, _) = send(
        &h,
        request(
            "/api/event",
            "application/json",
            json!({"n": "x", "u": "https://us.example/"}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let mut br = request("/api/v1/events", "application/json", "[]");
    br.headers_mut()
        .insert(header::CONTENT_ENCODING, "br".parse().unwrap());
    assert_eq!(send(&h, br).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn bodies_over_one_megabyte_are_refused() {
    let h = harness(Options::default()).await;
    let big = format!(
        "{{\"n\":\"x\",\"u\":\"https://example.com/\",\"p\":{{\"k\":\"{}\"}}}}",
        "a".repeat(1024 * 1024)
    );
    let (status, _, _) = send(&h, request("/api/event", "application/json", big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length (streamed), the limit holds while reading.
    let stream = Body::new(chunked::chunks(big.into_bytes()));
    let (status, _, _) = send(&h, request("/api/event", "application/json", stream)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

mod chunked {
    //! A body in 64 KiB frames without a length, so the limit must hold while reading.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Chunks(Vec<Vec<u8>>);

    impl http_body::Body for Chunks {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop().map(|c| Ok(http_body::Frame::data(c.into()))))
        }
    }

    pub(crate) fn chunks(data: Vec<u8>) -> Chunks {
        let mut parts: Vec<Vec<u8>> = data.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
        parts.reverse();
        Chunks(parts)
    }
}

#[tokio::test]
async fn batches_report_per_event_and_retries_are_stored_once() {
    let h = harness(Options::default()).await;
    let id = uuid::Uuid::new_v4();
    let events = json!([
        {"n": "pageview", "u": "https://example.com/a", "id": id},
        {"n": "pageview"},
        {"n": "pageview", "u": "https://example.com/b", "id": id},
    ]);
    let (status, _, body) = send(
        &h,
        request("/api/v1/events", "application/json", events.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["result"], "accepted");
    assert_eq!(
        (results[1]["result"].as_str(), results[1]["reason"].as_str()),
        (Some("rejected"), Some("url_missing"))
    );
    assert_eq!(results[2]["result"], "duplicate");
    let (_, _, again) = send(
        &h,
        request("/api/v1/events", "application/json", events.to_string()),
    )
    .await;
    assert_eq!(
        again["results"][0]["result"], "duplicate",
        "a client retry is stored once"
    );
    let (status, _, _) = send(
        &h,
        request("/api/v1/events", "application/json", "{\"n\":1}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let too_many = Value::Array(
        (0..101)
            .map(|_| json!({"n": "x", "u": "https://example.com/"}))
            .collect(),
    );
    let (status, _, _) = send(
        &h,
        request("/api/v1/events", "application/json", too_many.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn gzip_batches_inflate_and_bombs_do_not() {
    let h = harness(Options::default()).await;
    let events = json!([{"n": "pageview", "u": "https://example.com/"}]).to_string();
    let mut gz = request(
        "/api/v1/events",
        "application/json",
        gzip(events.as_bytes()),
    );
    gz.headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let (status, _, body) = send(&h, gz).await;
    assert_eq!(
        (status, body["results"][0]["result"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    // 200 MB of zeros compress to about 200 KB: under the body limit, far over the inflate limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024);
    let started = std::time::Instant::now();
    let mut request = request("/api/v1/events", "application/json", bomb);
    request
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    assert_eq!(send(&h, request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused without inflating it all"
    );
    let mut broken = request_gz(b"not gzip at all");
    broken
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    assert_eq!(send(&h, broken).await.0, StatusCode::BAD_REQUEST);
}

fn request_gz(body: &'static [u8]) -> Request<Body> {
    request("/api/v1/events", "application/json", body)
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let h = harness(Options {
        rate: RateLimit {
            per_second: 0.5,
            burst: 2.0,
        },
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            send(&h, request("/api/event", "text/plain", pageview()))
                .await
                .0,
            StatusCode::ACCEPTED
        );
    }
    let (status, headers, _) = send(&h, request("/api/event", "text/plain", pageview())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "2");
    let other = from("/api/event", "text/plain", pageview(), "203.0.113.8:1");
    assert_eq!(
        send(&h, other).await.0,
        StatusCode::ACCEPTED,
        "limits are per client"
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let h = harness(Options {
        queue_capacity: 1,
        run_batcher: false,
        ..Options::default()
    })
    .await;
    let router = h.router.clone();
    // The first request waits for a commit that never comes, holding the only queue slot.
    tokio::spawn(async move {
        router
            .oneshot(request("/api/event", "text/plain", pageview()))
            .await
    });
    // Wait until that request holds the slot (no fixed sleep: CI machines are slow).
    let depth = || {
        h.collector
            .queue()
            .stats()
            .queue_depth
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for _ in 0..1000 {
        if depth() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(depth(), 1, "the first request is queued");
    let (status, headers, _) = send(&h, request("/api/event", "text/plain", pageview())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
}

struct DownSink;

#[async_trait]
impl EventSink for DownSink {
    fn region(&self) -> Region {
        Region::Eu
    }
    async fn append_events(&self, _: &EventBatch) -> leadmaps_core::Result<Vec<Verdict>> {
        Err(leadmaps_core::Error::unavailable(std::io::Error::other(
            "connection refused",
        )))
    }
    async fn events(
        &self,
        _: &Scope,
        _: OffsetDateTime,
        _: OffsetDateTime,
        _: u32,
    ) -> leadmaps_core::Result<Vec<Event>> {
        Ok(Vec::new())
    }
    async fn has_event(&self, _: &Scope, _: EventId) -> leadmaps_core::Result<bool> {
        Ok(false)
    }
    async fn drop_counts(&self, _: &Scope) -> leadmaps_core::Result<Vec<DropCount>> {
        Ok(Vec::new())
    }
    async fn delete_events_before(
        &self,
        _: &Scope,
        _: OffsetDateTime,
        _: u32,
        _: OffsetDateTime,
    ) -> leadmaps_core::Result<(u64, Option<leadmaps_core::audit::AuditRecord>)> {
        Ok((0, None))
    }
}

#[tokio::test]
async fn a_store_that_is_down_answers_503() {
    let h = harness(Options {
        sink: Some(Arc::new(DownSink)),
        ..Options::default()
    })
    .await;
    let (status, headers, body) = send(&h, request("/api/event", "text/plain", pageview())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(
        !body.to_string().contains("connection refused"),
        "backend detail stays inside"
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let h = harness(Options::default()).await;
    let blocked = "198.51.100.20";
    let mut spoofed = request("/api/event", "text/plain", pageview());
    spoofed
        .headers_mut()
        .insert("x-forwarded-for", blocked.parse().unwrap());
    let (_, _, body) = send(&h, spoofed).await;
    assert_eq!(
        body["result"], "accepted",
        "an untrusted peer's header is ignored"
    );
    let mut proxied = from("/api/event", "text/plain", pageview(), "10.1.2.3:443");
    proxied
        .headers_mut()
        .insert("x-forwarded-for", blocked.parse().unwrap());
    let (status, _, body) = send(&h, proxied).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::ACCEPTED, Some("blocked_ip"))
    );
    let mut bot = request("/api/event", "text/plain", pageview());
    bot.headers_mut()
        .insert(header::USER_AGENT, "curl/8.5.0".parse().unwrap());
    let (status, _, body) = send(&h, bot).await;
    assert_eq!(
        (status, body["result"].as_str(), body["reason"].as_str()),
        (StatusCode::ACCEPTED, Some("rejected"), Some("bot"))
    );
}
