#![doc = include_str!("../README.md")]

mod layer;
mod reporter;
#[cfg(feature = "sentry")]
mod sentry;

/// The Sentry SDK the reporter runs (for capturing directly; `before_send` scrubs those too).
#[cfg(feature = "sentry")]
pub use ::sentry as sentry_sdk;
pub use layer::ScrubLayer;
pub use reporter::{Captured, ErrorReporter, LineReporter, ScrubbedEvent};
#[cfg(feature = "sentry")]
pub use sentry::{SentryReporter, scrub_sentry_event};
