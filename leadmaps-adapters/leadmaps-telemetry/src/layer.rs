//! The tracing layer: scrub, then report.

use std::fmt::Write as _;
use std::sync::Arc;

use leadmaps_core::clock::Clock;
use leadmaps_core::scrub::{scrub, scrub_field};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::reporter::{ErrorReporter, ScrubbedEvent};

/// A [`Layer`] that hands every event at or above its level to an [`ErrorReporter`], after
/// running its message and every field value through [`leadmaps_core::scrub`]: what leaves
/// holds no e-mail address, IP address, API key, token, cookie or long secret. Field values are
/// formatted first (`Display` for `%x` and errors, with their sources; `Debug` otherwise), so a
/// value hidden in a `Debug` impl is scrubbed as text like any other.
pub struct ScrubLayer {
    reporter: Arc<dyn ErrorReporter>,
    clock: Arc<dyn Clock>,
    level: Level,
}

impl std::fmt::Debug for ScrubLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubLayer")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl ScrubLayer {
    /// Every event (TRACE and up; filter with the subscriber's filter) to `reporter`, stamped
    /// by `clock`.
    pub fn new(reporter: Arc<dyn ErrorReporter>, clock: Arc<dyn Clock>) -> Self {
        Self {
            reporter,
            clock,
            level: Level::TRACE,
        }
    }

    /// Only events at `level` or more severe (e.g. [`Level::WARN`] for an error tracker).
    #[must_use]
    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Scrubs an event into what reporters see.
    fn scrubbed(&self, event: &Event<'_>) -> ScrubbedEvent {
        let mut visitor = Collect::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        ScrubbedEvent {
            at: self.clock.now(),
            level: *metadata.level(),
            target: scrub(metadata.target()).into_owned(),
            message: scrub(&visitor.message).into_owned(),
            fields: visitor
                .fields
                .into_iter()
                .map(|(name, value)| {
                    let value = scrub_field(&name, &value).into_owned();
                    (name, value)
                })
                .collect(),
        }
    }
}

impl<S: Subscriber> Layer<S> for ScrubLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Level order in tracing: TRACE > DEBUG > ... > ERROR ("more verbose is greater").
        if *event.metadata().level() > self.level {
            return;
        }
        let scrubbed = self.scrubbed(event);
        self.reporter.report(&scrubbed);
    }
}

/// Collects an event's message and fields as raw text; nothing leaves it unscrubbed.
#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(String, String)>,
}

impl Collect {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.put(field, text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}
