#![doc = include_str!("../README.md")]

#[cfg(not(any(feature = "native-roots", feature = "webpki-roots")))]
compile_error!(
    "leadmaps-smtp needs trusted roots: enable its feature `native-roots` (the default) or \
     `webpki-roots`"
);

mod config;
mod failure;
mod mailer;

pub use config::{DEFAULT_TIMEOUT, Security, SmtpConfig};
pub use mailer::{SmtpMailer, message_id_for_key};
