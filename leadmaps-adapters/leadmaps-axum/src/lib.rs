//! leadmaps on axum: the collector routes, client addresses behind trusted proxies, rate limits,
//! security headers, health and metrics. Handlers only extract inputs and map results; the logic
//! lives in `leadmaps_core`.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(collector: Arc<leadmaps_core::ingest::Collector>) -> axum::Router {
//! use leadmaps_axum::{CollectorState, RateLimit, collector_routes, harden};
//! let state = Arc::new(CollectorState::new(collector, vec![], RateLimit::default()));
//! harden(collector_routes(state))
//! # }
//! ```

pub mod auth;
mod client;
mod collector;
pub mod dashboard;
mod headers;
mod limiter;
pub mod scim;
pub mod security_txt;
pub mod sso;
pub mod staff;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{PeerAddr, client_ip};
pub use collector::{CollectorState, collector_routes};
pub use headers::harden;
pub use limiter::{RateLimit, RateLimiter};
