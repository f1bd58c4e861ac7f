//! `/.well-known/security.txt` is a valid RFC 9116 file from configuration, or nothing at all.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use leadmaps_axum::security_txt::{MAX_EXPIRY, SecurityTxt, security_txt_routes};
use leadmaps_core::clock::{Clock, ManualClock};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tower::ServiceExt as _;

async fn fetch(config: SecurityTxt, clock: Arc<ManualClock>) -> (StatusCode, String, String) {
    let response = security_txt_routes(config, clock)
        .oneshot(
            Request::get("/.well-known/security.txt")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

/// The fields of a security.txt, as RFC 9116 section 4 reads them: `Name: value` lines,
/// comments and blank lines skipped, names case-insensitive.
fn fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.split_once(": ").expect("a field line");
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_configured_file_has_every_field_and_expires_within_a_year() {
    let now = OffsetDateTime::parse("2026-03-02T09:00:00.123Z", &Rfc3339).unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let config = SecurityTxt {
        contact: vec![
            "mailto:security@leadmaps.example".into(),
            "https://leadmaps.example/security".into(),
        ],
        expires_in: Duration::days(3650),
        policy: Some("https://leadmaps.example/security/policy".into()),
        preferred_languages: vec!["en".into(), "nl".into()],
        canonical: Some("https://app.leadmaps.example/.well-known/security.txt".into()),
    };
    let (status, kind, text) = fetch(config, clock.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kind, "text/plain; charset=utf-8");
    let parsed = fields(&text);
    let all = |name: &str| {
        parsed
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        all("contact"),
        [
            "mailto:security@leadmaps.example",
            "https://leadmaps.example/security"
        ]
    );
    // Expires: required, exactly once, RFC 3339, in the future, less than a year ahead (the
    // configured ten years are capped).
    let expires = all("expires");
    assert_eq!(expires.len(), 1);
    let expires = OffsetDateTime::parse(expires[0], &Rfc3339).unwrap();
    assert!(expires > clock.now());
    assert!(expires - clock.now() < Duration::days(365));
    assert!(expires - clock.now() >= MAX_EXPIRY - Duration::seconds(1));
    assert_eq!(all("policy"), ["https://leadmaps.example/security/policy"]);
    assert_eq!(all("preferred-languages"), ["en, nl"]);
    assert_eq!(
        all("canonical"),
        ["https://app.leadmaps.example/.well-known/security.txt"]
    );
    for (name, _) in &parsed {
        assert!(
            [
                "contact",
                "expires",
                "policy",
                "preferred-languages",
                "canonical"
            ]
            .contains(&name.as_str()),
            "{name}"
        );
    }
    assert!(text.ends_with('\n'));

    // Expires follows the clock.
    clock.advance(Duration::days(400));
    let (_, _, later) = fetch(
        SecurityTxt {
            contact: vec!["mailto:security@leadmaps.example".into()],
            ..SecurityTxt::default()
        },
        clock.clone(),
    )
    .await;
    let later = fields(&later)
        .into_iter()
        .find(|(n, _)| n == "expires")
        .unwrap()
        .1;
    let later = OffsetDateTime::parse(&later, &Rfc3339).unwrap();
    assert!(later > clock.now() && later - clock.now() < Duration::days(365));
}

#[tokio::test]
async fn without_a_valid_contact_nothing_is_served() {
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_500),
    ));
    let (status, _, text) = fetch(SecurityTxt::default(), clock.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!text.contains("Expires"));
    for contact in [
        "security@leadmaps.example",
        "mailto:a@b.example\nExpires: x",
        "http://x",
    ] {
        let config = SecurityTxt {
            contact: vec![contact.into()],
            ..SecurityTxt::default()
        };
        let (status, _, _) = fetch(config, clock.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{contact:?}");
    }
}
