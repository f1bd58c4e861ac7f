//! The Sentry reporter (feature `sentry`): scrubbed events go to Sentry through the `sentry`
//! crate over rustls, and a `before_send` hook scrubs everything else the SDK would attach.

use std::sync::Arc;

use leadmaps_core::scrub::{scrub, scrub_field};
use sentry::protocol::{Event, Level as SentryLevel, Value};

use crate::reporter::{ErrorReporter, ScrubbedEvent};

/// Sends events to Sentry. Holds the SDK's guard: dropping the reporter flushes and stops the
/// client.
pub struct SentryReporter {
    guard: sentry::ClientInitGuard,
}

impl std::fmt::Debug for SentryReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryReporter").finish_non_exhaustive()
    }
}

impl SentryReporter {
    /// Starts the Sentry client for `dsn` (the DSN itself is never logged), tagged with
    /// `environment`. Default PII sending stays off, and [`scrub_sentry_event`] runs on every
    /// event before it is sent, whoever captured it.
    ///
    /// # Errors
    /// [`leadmaps_core::Error::Invalid`] for a DSN that does not parse (without echoing it).
    pub fn init(dsn: &str, environment: &str) -> leadmaps_core::Result<Self> {
        let dsn: sentry::types::Dsn = dsn
            .parse()
            .map_err(|_| leadmaps_core::Error::invalid("the Sentry DSN does not parse"))?;
        let mut options = sentry::ClientOptions::default();
        options.dsn = Some(dsn);
        options.environment = Some(environment.to_owned().into());
        options.send_default_pii = false;
        options.attach_stacktrace = false;
        options.before_send = Some(Arc::new(|event| Some(scrub_sentry_event(event))));
        options.before_breadcrumb = Some(Arc::new(|mut crumb| {
            crumb.message = crumb.message.map(|m| scrub(&m).into_owned());
            crumb.data.clear();
            Some(crumb)
        }));
        Ok(Self {
            guard: sentry::init(options),
        })
    }

    /// Waits up to `timeout` for queued events to be sent; whether the queue emptied.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        self.guard.flush(Some(timeout))
    }
}

fn level(level: tracing::Level) -> SentryLevel {
    match level {
        tracing::Level::ERROR => SentryLevel::Error,
        tracing::Level::WARN => SentryLevel::Warning,
        tracing::Level::INFO => SentryLevel::Info,
        _ => SentryLevel::Debug,
    }
}

impl ErrorReporter for SentryReporter {
    fn report(&self, event: &ScrubbedEvent) {
        let mut out = Event {
            level: level(event.level),
            message: Some(event.message.clone()),
            logger: Some(event.target.clone()),
            ..Default::default()
        };
        for (name, value) in &event.fields {
            out.extra.insert(name.clone(), Value::String(value.clone()));
        }
        sentry::capture_event(out);
    }
}

fn scrub_value(name: &str, value: &mut Value) {
    match value {
        Value::String(text) => *text = scrub_field(name, text).into_owned(),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_value(name, v)),
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| scrub_value(k, v)),
        _ => {}
    }
}

/// Scrubs a Sentry event the way the layer scrubs a tracing event: message, log entry, exception
/// values, tags, extra data and breadcrumbs through [`leadmaps_core::scrub`]; the request's
/// cookies, headers, query string and body, the user, the server name and contexts (which may
/// name the host or its addresses) dropped whole.
pub fn scrub_sentry_event(mut event: Event<'static>) -> Event<'static> {
    event.message = event.message.map(|m| scrub(&m).into_owned());
    if let Some(entry) = event.logentry.as_mut() {
        entry.message = scrub(&entry.message).into_owned();
        entry.params.iter_mut().for_each(|v| scrub_value("", v));
    }
    for exception in event.exception.values.iter_mut() {
        exception.value = exception.value.take().map(|v| scrub(&v).into_owned());
        exception.ty = scrub(&exception.ty).into_owned();
    }
    for (name, value) in event.tags.iter_mut() {
        *value = scrub_field(name, value).into_owned();
    }
    for (name, value) in event.extra.iter_mut() {
        scrub_value(name, value);
    }
    for crumb in event.breadcrumbs.values.iter_mut() {
        crumb.message = crumb.message.take().map(|m| scrub(&m).into_owned());
        crumb.data.clear();
    }
    if let Some(request) = event.request.as_mut() {
        request.cookies = None;
        request.headers.clear();
        request.query_string = None;
        request.data = None;
        request.env.clear();
        request.url = None;
    }
    event.user = None;
    event.server_name = None;
    event.contexts.clear();
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_send_scrubs_what_the_sdk_attaches() {
        let mut event = Event {
            message: Some("from 203.0.113.9 as ana@example.org".into()),
            user: Some(sentry::User {
                email: Some("ana@example.org".into()),
                ..Default::default()
            }),
            request: Some(sentry::protocol::Request {
                cookies: Some("__Host-session=abc".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        event
            .extra
            .insert("key".into(), Value::String("lm_abc_def".into()));
        event.exception.values.push(sentry::protocol::Exception {
            ty: "Error".into(),
            value: Some("token lm_abc_def for [2001:db8::1]:443".into()),
            ..Default::default()
        });
        let event = scrub_sentry_event(event);
        let text = format!("{event:?}");
        for secret in [
            "203.0.113.9",
            "ana@example.org",
            "lm_abc_def",
            "2001:db8",
            "__Host",
        ] {
            assert!(!text.contains(secret), "{secret} survived");
        }
        assert_eq!(
            event.message.as_deref(),
            Some("from [redacted:ip] as [redacted:email]")
        );
    }
}
