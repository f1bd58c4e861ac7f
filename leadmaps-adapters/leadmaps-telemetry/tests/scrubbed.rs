//! The promise: an error carrying an e-mail address, IP addresses, an API key and a cookie
//! reaches the error reporter with none of them, and with the rest of its message.

use std::sync::Arc;

use leadmaps_core::clock::ManualClock;
use leadmaps_telemetry::{Captured, ScrubLayer};
use time::macros::datetime;
use tracing::Level;
use tracing_subscriber::prelude::*;

/// An error as a careless dependency might write it.
#[derive(Debug)]
struct UpstreamError {
    detail: String,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream refused: {}", self.detail)
    }
}

impl std::error::Error for UpstreamError {}

#[derive(Debug)]
struct Wrapped(UpstreamError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sending the digest failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

const SECRETS: [&str; 6] = [
    "ana.souza@customer.example.co.uk",
    "203.0.113.42",
    "2001:db8:85a3::8a2e:370:7334",
    "lm_5f2c9a_Zx81kQ0pLm3nV7rT2yW9",
    "__Host-session=9b1f0c3e",
    "theme=dark",
];

fn detail() -> String {
    format!(
        "to {} from {} via [{}]:8443 with key {}\nCookie: {}; {}",
        SECRETS[0], SECRETS[1], SECRETS[2], SECRETS[3], SECRETS[4], SECRETS[5]
    )
}

#[test]
fn an_error_reaches_the_reporter_without_email_ip_api_key_or_cookie() {
    let captured = Captured::default();
    let clock = Arc::new(ManualClock::new(datetime!(2026-03-02 9:00 UTC)));
    let subscriber = tracing_subscriber::registry()
        .with(ScrubLayer::new(Arc::new(captured.clone()), clock).with_level(Level::WARN));
    tracing::subscriber::with_default(subscriber, || {
        let error = Wrapped(UpstreamError { detail: detail() });
        // As a field (`record_error`, with its source chain), as Display, as Debug, in the message.
        tracing::error!(
            error = &error as &dyn std::error::Error,
            shown = %error.0,
            debugged = ?error.0,
            "digest for {} failed: {}",
            SECRETS[0],
            error.0
        );
        tracing::info!("below the layer's level: {}", SECRETS[0]);
    });

    let events = captured.events();
    assert_eq!(events.len(), 1, "only the error is reported");
    let event = &events[0];
    let everything = format!("{event:?}");
    for secret in SECRETS {
        assert!(
            !everything.contains(secret),
            "{secret} reached the reporter: {everything}"
        );
    }
    for part in ["ana.souza", "customer.example", "lm_5f2c9a", "8a2e:370"] {
        assert!(!everything.contains(part), "{part} reached the reporter");
    }
    // The rest of the message is still there.
    assert!(event.message.starts_with("digest for [redacted:email] failed: upstream refused: to [redacted:email] from [redacted:ip] via [[redacted:ip]]:8443 with key [redacted:api_key]"), "{}", event.message);
    assert!(event.message.contains("Cookie: [redacted:cookie]"));
    let error = event.field("error").expect("the error field");
    assert!(error.starts_with("sending the digest failed: upstream refused: to [redacted:email]"));
    assert!(event.field("shown").unwrap().contains("[redacted:api_key]"));
    assert!(event.field("debugged").unwrap().contains("[redacted:ip]"));
    assert_eq!(event.level, Level::ERROR);
    assert_eq!(event.at, datetime!(2026-03-02 9:00 UTC));
}

#[test]
fn fields_named_for_personal_data_are_redacted_whole() {
    let captured = Captured::default();
    let clock = Arc::new(ManualClock::new(datetime!(2026-03-02 9:00 UTC)));
    let subscriber =
        tracing_subscriber::registry().with(ScrubLayer::new(Arc::new(captured.clone()), clock));
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(
            user_agent = "Mozilla/5.0 (X11; Linux x86_64)",
            client_ip = "not-an-ip-but-still-hidden",
            email = "whoever",
            authorization = "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            kind = "Unavailable",
            "store not ready"
        );
    });
    let event = &captured.events()[0];
    assert_eq!(event.field("user_agent"), Some("[redacted:secret]"));
    assert_eq!(event.field("client_ip"), Some("[redacted:ip]"));
    assert_eq!(event.field("email"), Some("[redacted:email]"));
    assert_eq!(event.field("authorization"), Some("[redacted:cookie]"));
    assert_eq!(event.field("kind"), Some("Unavailable"));
    assert_eq!(event.message, "store not ready");
    assert!(!format!("{event:?}").contains("Mozilla"));
}
