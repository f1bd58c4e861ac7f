//! What a scrubbed event is, and where it goes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::Level;

/// An event after scrubbing: every string in it went through [`leadmaps_core::scrub`]. Only the
/// layer builds one (the fields are public for reporters to read).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubbedEvent {
    /// When the layer saw it (from the injected clock).
    pub at: OffsetDateTime,
    /// Its level.
    pub level: Level,
    /// Its target (the module path, unless the event named one).
    pub target: String,
    /// The message, scrubbed.
    pub message: String,
    /// The other fields, in order, each value scrubbed (and redacted whole when its name says
    /// it holds personal data or a secret).
    pub fields: Vec<(String, String)>,
}

impl ScrubbedEvent {
    /// The value of the field `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// One log line: `time LEVEL target: message name=value ...`.
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{} {:>5} {}: {}",
            self.at.format(&Rfc3339).unwrap_or_default(),
            self.level,
            self.target,
            self.message
        );
        for (name, value) in &self.fields {
            line.push(' ');
            line.push_str(name);
            line.push('=');
            line.push_str(value);
        }
        line
    }
}

/// Where scrubbed events go. Called on the thread that emitted the event: an implementation that
/// does I/O should hand the event off rather than block for long.
pub trait ErrorReporter: Send + Sync + 'static {
    /// Takes one event. It MUST NOT fail loudly (panic) or emit tracing events of its own at a
    /// level the layer reports (that would recurse).
    fn report(&self, event: &ScrubbedEvent);
}

/// Keeps every event in memory, for tests: clones share the list.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    events: Arc<Mutex<Vec<ScrubbedEvent>>>,
}

impl Captured {
    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<ScrubbedEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl ErrorReporter for Captured {
    fn report(&self, event: &ScrubbedEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

/// Writes each event as one line ([`ScrubbedEvent::to_line`]) to a writer: stderr by default.
pub struct LineReporter {
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for LineReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReporter").finish_non_exhaustive()
    }
}

impl Default for LineReporter {
    fn default() -> Self {
        Self::new(Box::new(std::io::stderr()))
    }
}

impl LineReporter {
    /// Lines to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

impl ErrorReporter for LineReporter {
    fn report(&self, event: &ScrubbedEvent) {
        if let Ok(mut out) = self.out.lock() {
            // A log line that cannot be written is dropped: logging must not take the server down.
            let _ = writeln!(out, "{}", event.to_line());
        }
    }
}
