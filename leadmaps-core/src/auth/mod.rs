//! Proving who is asking, without passwords: one-time codes, and (in their modules) magic links,
//! sessions, recovery codes, API keys and the staff realm.

pub mod otp;
pub mod session;
pub mod tokens;
pub mod totp;
