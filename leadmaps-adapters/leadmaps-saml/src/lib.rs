#![doc = include_str!("../README.md")]

mod config;
mod error;
pub mod replay;
mod response;
pub mod routes;

pub use config::{
    CLOCK_SKEW, IdpMetadata, LoginRequest, MAX_RELAY_STATE_BYTES, PendingRequest, REQUEST_LIFETIME,
    SamlSp, SpEntity,
};
pub use error::SamlError;
pub use replay::{MemoryReplayCache, ReplayCache, ReplayVerdict};
pub use response::{MAX_RESPONSE_BYTES, SamlAttribute, SamlIdentity};
pub use routes::{
    SamlConfig, SamlConfigs, SamlLogin, SamlLoginFailure, SamlLogins, saml_reason, saml_routes,
};
