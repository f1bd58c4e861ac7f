#![doc = include_str!("../README.md")]

mod layer;
mod reporter;
#[cfg(feature = "sentry")]
mod sentry;

pub use layer::ScrubLayer;
pub use reporter::{Captured, ErrorReporter, LineReporter, ScrubbedEvent};
#[cfg(feature = "sentry")]
pub use sentry::{SentryReporter, scrub_sentry_event};
