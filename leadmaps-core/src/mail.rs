//! Outgoing e-mail: magic links, breach notifications, sub-processor changes.
//!
//! Core only describes a message and the [`Mailer`] that sends it; `leadmaps-smtp` sends over
//! SMTP, and [`Outbox`] keeps messages in memory for tests.

use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Error, Result};

/// An e-mail address, checked for shape (one `@`, a dotted domain, no spaces or control
/// characters, at most 254 bytes). `Debug` shows only the domain, so addresses stay out of logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address(String);

impl Address {
    /// Checks and normalises (trims, lower-cases the domain) an address.
    ///
    /// # Errors
    /// [`Error::Invalid`] without echoing the input.
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        let invalid = || Error::invalid("not an e-mail address");
        if raw.len() > 254 || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid());
        }
        let (local, domain) = raw.rsplit_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if local.is_empty()
            || local.len() > 64
            || local.contains('@')
            || local.contains(['<', '>', ',', ';', '"'])
            || !domain_ok
        {
            return Err(invalid());
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address(…@{})", self.domain())
    }
}

/// A plain-text message.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    /// Recipient.
    pub to: Address,
    /// Subject line (one line).
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// A stable key: a mailer that supports it sends a message with the same key once.
    pub idempotency_key: Option<String>,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies carry magic links: never print them.
        f.debug_struct("Email")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Sends one message.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Hands `email` to the transport. Returning `Ok` means the transport accepted it.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the transport is down (retry later); [`Error::Invalid`] when
    /// it refuses the message.
    async fn send(&self, email: &Email) -> Result<()>;
}

/// A mailer that keeps messages in memory, for tests and development.
#[derive(Default)]
pub struct Outbox {
    sent: Mutex<Vec<Email>>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything sent so far, in order.
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().expect("outbox").clone()
    }
}

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, email: &Email) -> Result<()> {
        let mut sent = self.sent.lock().expect("outbox");
        if let Some(key) = &email.idempotency_key
            && sent.iter().any(|e| e.idempotency_key.as_ref() == Some(key))
        {
            return Ok(());
        }
        sent.push(email.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_kept_out_of_debug() {
        let address = Address::parse(" Alice.Smith+tag@Example.COM ").unwrap();
        assert_eq!(address.as_str(), "Alice.Smith+tag@example.com");
        assert_eq!(format!("{address:?}"), "Address(…@example.com)");
        let long = format!("{}@b.c", "x".repeat(65));
        for bad in [
            "",
            "no-at",
            "a@b",
            "a b@c.d",
            "a@b..c",
            "<a>@b.c",
            "a@b.c\nBcc: x@y.z",
            &long,
        ] {
            let err = Address::parse(bad).unwrap_err().to_string();
            assert_eq!(
                err, "invalid input: not an e-mail address",
                "no echo of the input"
            );
        }
    }
}
