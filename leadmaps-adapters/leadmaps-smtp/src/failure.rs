//! lettre's errors, mapped to leadmaps' kinds.
//!
//! lettre's own messages carry the server's reply text, which often repeats the recipient
//! address ("550 <alice@example.com>: unknown user"). So nothing of lettre's is passed on: only
//! the reply code, the I/O error kind or the TLS error, which hold no personal data, no password
//! and no part of the message.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use leadmaps_core::Error;
use lettre::transport::smtp::Error as LettreError;

/// Why a send failed, in words safe for logs; the source of [`Error::Unavailable`].
#[derive(Debug)]
pub(crate) enum SmtpFailure {
    /// The whole send took longer than the configured timeout.
    TimedOut(Duration),
    /// A temporary (4xx) reply.
    Transient(String),
    /// Connecting, reading or writing failed.
    Io(io::ErrorKind),
    /// The TLS handshake failed (untrusted certificate, wrong name, no common version).
    Tls(String),
    /// The server's reply did not parse, or the connection ended early.
    Protocol,
}

impl fmt::Display for SmtpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpFailure::TimedOut(limit) => write!(f, "SMTP: no answer within {limit:?}"),
            SmtpFailure::Transient(code) => write!(f, "SMTP: temporary refusal ({code})"),
            SmtpFailure::Io(kind) => write!(f, "SMTP: connection failed ({kind})"),
            SmtpFailure::Tls(why) => write!(f, "SMTP: TLS failed ({why})"),
            SmtpFailure::Protocol => f.write_str("SMTP: unexpected reply or closed connection"),
        }
    }
}

impl StdError for SmtpFailure {}

/// Connection trouble, timeouts and 4xx replies are [`Error::Unavailable`] (retry later); 5xx
/// replies and a server lacking what the configuration requires (STARTTLS, an AUTH mechanism,
/// SMTPUTF8) are [`Error::Invalid`] (retrying the same thing will not help).
pub(crate) fn map(error: &LettreError) -> Error {
    if let Some(code) = error.status() {
        return if error.is_permanent() {
            Error::invalid(format!("SMTP server refused ({code})"))
        } else {
            Error::unavailable(SmtpFailure::Transient(code.to_string()))
        };
    }
    if error.is_client() {
        // lettre's client errors are fixed sentences about missing server features.
        let why = error
            .source()
            .map_or_else(|| "client error".to_owned(), ToString::to_string);
        return Error::invalid(format!("SMTP: {why}"));
    }
    if let Some(tls) = find_tls(error) {
        return Error::unavailable(SmtpFailure::Tls(tls));
    }
    if let Some(kind) = find_io(error) {
        return Error::unavailable(SmtpFailure::Io(kind));
    }
    Error::unavailable(SmtpFailure::Protocol)
}

/// The first rustls error in the chain, bare or inside an `io::Error`.
fn find_tls(error: &LettreError) -> Option<String> {
    let mut next = error.source();
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(inner.to_string());
        }
        next = e.source();
    }
    None
}

/// The kind of the first I/O error in the chain.
fn find_io(error: &LettreError) -> Option<io::ErrorKind> {
    let mut next = error.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        next = e.source();
    }
    None
}
