//! The Sentry reporter over a real transport: the SDK sends its envelopes over HTTP to a
//! capturing server on loopback (the DSN's host), and what arrives on the wire holds the scrubbed
//! message but no e-mail address, IP address, API key or cookie, whether the event came through
//! the scrubbing layer or was captured by the SDK directly (`before_send`).
//!
//! Runs with `cargo test -p leadmaps-telemetry --features sentry` (CI does).
#![cfg(feature = "sentry")]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use leadmaps_core::clock::ManualClock;
use leadmaps_telemetry::sentry_sdk as sentry;
use leadmaps_telemetry::{ScrubLayer, SentryReporter};
use time::macros::datetime;
use tracing_subscriber::prelude::*;

const SECRETS: [&str; 5] = [
    "ana.souza@customer.example.co.uk",
    "203.0.113.42",
    "2001:db8:85a3::8a2e:370:7334",
    "lm_5f2c9a_Zx81kQ0pLm3nV7rT2yW9",
    "__Host-session=9b1f0c3e",
];

/// A one-purpose HTTP server: every request body it receives goes down the channel, and it
/// answers 200.
fn capturing_server() -> (u16, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut chunked) = (0usize, false);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
            }
            let mut body = Vec::new();
            if chunked {
                loop {
                    let mut size = String::new();
                    reader.read_line(&mut size).unwrap();
                    let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                    let mut chunk = vec![0; size + 2];
                    reader.read_exact(&mut chunk).unwrap();
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..size]);
                }
            } else {
                body.resize(length, 0);
                reader.read_exact(&mut body).unwrap();
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
            let _ = tx.send(body);
        }
    });
    (port, rx)
}

#[test]
fn events_reach_a_sentry_server_scrubbed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (port, bodies) = capturing_server();
    let reporter = Arc::new(
        SentryReporter::init(&format!("http://public@127.0.0.1:{port}/1"), "test").unwrap(),
    );
    let clock = Arc::new(ManualClock::new(datetime!(2026-03-02 9:00 UTC)));
    let subscriber = tracing_subscriber::registry().with(ScrubLayer::new(reporter.clone(), clock));
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(
            client = SECRETS[1],
            "digest for {} failed from [{}]:443 with key {}; Cookie: {}",
            SECRETS[0],
            SECRETS[2],
            SECRETS[3],
            SECRETS[4]
        );
    });
    // Captured by the SDK itself, past the layer: before_send scrubs it.
    sentry::capture_message(
        &format!("direct capture: {} at {}", SECRETS[0], SECRETS[1]),
        sentry::Level::Error,
    );
    assert!(
        reporter.flush(Duration::from_secs(10)),
        "the events were sent"
    );

    let mut wire = Vec::new();
    while let Ok(body) = bodies.recv_timeout(Duration::from_secs(2)) {
        wire.extend_from_slice(&body);
        wire.push(b'\n');
    }
    let wire = String::from_utf8_lossy(&wire);
    assert!(
        wire.contains("digest for [redacted:email] failed"),
        "the layer's event: {wire}"
    );
    assert!(
        wire.contains("direct capture: [redacted:email] at [redacted:ip]"),
        "the SDK's event: {wire}"
    );
    for secret in SECRETS {
        assert!(
            !wire.contains(secret),
            "{secret} was sent to Sentry: {wire}"
        );
    }
    for part in ["ana.souza", "lm_5f2c9a", "8a2e:370", "9b1f0c3e"] {
        assert!(!wire.contains(part), "{part} was sent to Sentry: {wire}");
    }
    drop(reporter);
}
