//! The [`Mailer`] over SMTP.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_core::mail::{Email, Mailer};
use leadmaps_core::{Error, Result};
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, MIME_VERSION_1_0};
use lettre::transport::smtp::authentication::Credentials as LettreCredentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};

use crate::config::{Security, SmtpConfig};
use crate::failure::{self, SmtpFailure};

/// Sends each [`Email`] over its own SMTP connection (no pool: mail here is rare and a pooled
/// connection would go stale), as a plain-text UTF-8 message with From, To, Subject, Date,
/// Message-ID, MIME-Version and `Content-Type: text/plain; charset=utf-8`.
///
/// SMTP cannot refuse a duplicate, so an [`Email::idempotency_key`] becomes the Message-ID
/// ([`message_id_for_key`]): a resend carries the same id and downstream systems can spot it.
/// Whoever must send exactly once deduplicates before calling.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    from_domain: String,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    host: String,
    port: u16,
    security: Security,
}

impl SmtpMailer {
    /// Checks `config` and prepares the transport. Connects to nothing yet.
    ///
    /// TLS ([`Security::StartTls`], [`Security::ImplicitTls`]) goes through rustls with the
    /// process-default crypto provider, which the application installs
    /// (`rustls::crypto::CryptoProvider::install_default`) unless it enabled this crate's `ring`
    /// feature. Trust comes from the `native-roots` or `webpki-roots` feature plus
    /// [`SmtpConfig::with_root_certificate_pem`]. The minimum is TLS 1.2, and certificates and
    /// host names are always verified.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the host, From display name or EHLO name is malformed, when
    /// plaintext would go to a host that is not loopback (see
    /// [`SmtpConfig::allow_remote_plaintext`]) or credentials would, when TLS is asked for but
    /// no crypto provider is installed, or when a root certificate is not PEM. Messages never
    /// contain the credentials.
    pub fn new(config: SmtpConfig) -> Result<Self> {
        let host = config.host.trim().to_owned();
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
        {
            return Err(Error::invalid("SMTP host: not a host name or IP address"));
        }
        if config.security == Security::Plaintext && !config.host_is_loopback() {
            if config.credentials.is_some() {
                return Err(Error::invalid(
                    "SMTP: credentials are never sent in plaintext to a host that is not loopback",
                ));
            }
            if !config.allow_remote_plaintext {
                return Err(Error::invalid(
                    "SMTP: plaintext only to a loopback host; use smtp+starttls or smtps",
                ));
            }
        }
        if config.timeout.is_zero() {
            return Err(Error::invalid("SMTP timeout: must be more than zero"));
        }
        if let Some(name) = &config.from_name
            && name.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "SMTP From name: one line without control characters",
            ));
        }
        let from_address: lettre::Address = config
            .from
            .as_str()
            .parse()
            .map_err(|_| Error::invalid("SMTP From address: not usable in a message"))?;
        let from_domain = config.from.domain().to_owned();
        let hello_name = config
            .hello_name
            .clone()
            .unwrap_or_else(|| from_domain.clone());
        if hello_name.is_empty()
            || !hello_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        {
            return Err(Error::invalid("SMTP EHLO name: not a domain name"));
        }

        let tls = match config.security {
            Security::Plaintext => Tls::None,
            Security::StartTls => Tls::Required(tls_parameters(&config, &host)?),
            Security::ImplicitTls => Tls::Wrapper(tls_parameters(&config, &host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout))
            .hello_name(ClientId::Domain(hello_name));
        if let Some(credentials) = &config.credentials {
            builder = builder.credentials(LettreCredentials::new(
                credentials.user.as_str().to_owned(),
                credentials.password.as_str().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from: Mailbox::new(config.from_name.clone(), from_address),
            from_domain,
            timeout: config.timeout,
            clock: Arc::new(SystemClock),
            host,
            port: config.port,
            security: config.security,
        })
    }

    /// Dates messages with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The Message-ID `email` gets: [`message_id_for_key`] with its idempotency key, else a
    /// random one, both at the From domain.
    fn message_id(&self, email: &Email) -> String {
        match &email.idempotency_key {
            Some(key) => message_id_for_key(key, &self.from_domain),
            None => format!("<{}@{}>", uuid::Uuid::new_v4().simple(), self.from_domain),
        }
    }

    /// The message as it goes on the wire, after the checks on its parts.
    fn message(&self, email: &Email) -> Result<Message> {
        // lettre encodes what it is given; a line break here would still be a second header
        // line for some readers, so refuse it rather than trust any escaping.
        if email.subject.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::invalid(
                "subject: one line without control characters",
            ));
        }
        let to: lettre::Address = email
            .to
            .as_str()
            .parse()
            .map_err(|_| Error::invalid("recipient: not usable in an SMTP message"))?;
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject.as_str())
            .date(SystemTime::from(self.clock.now()))
            .message_id(Some(self.message_id(email)))
            .header(MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN)
            .body(email.text.clone())
            .map_err(|_| Error::invalid("message could not be built"))
    }
}

/// The Message-ID for an idempotency key: `<` + the first 32 hex digits of SHA-256(`key`) + `@` +
/// `domain` + `>`. The same key always gives the same id, so a resend is recognisable. The key is
/// only hashed, not keyed: do not put secrets in it.
///
/// ```
/// let id = leadmaps_smtp::message_id_for_key("magic-link:42", "example.com");
/// assert!(id.starts_with('<') && id.ends_with("@example.com>"));
/// assert_eq!(id.len(), 1 + 32 + 1 + "example.com".len() + 1);
/// ```
pub fn message_id_for_key(key: &str, domain: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("<{}@{domain}>", hex::encode(&digest[..16]))
}

/// rustls parameters for `host`: the roots of the enabled feature plus the configured ones.
fn tls_parameters(config: &SmtpConfig, host: &str) -> Result<TlsParameters> {
    #[cfg(not(feature = "ring"))]
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // lettre would panic here; say what to do instead.
        return Err(Error::invalid(
            "SMTP TLS: no rustls crypto provider; install one with \
             rustls::crypto::CryptoProvider::install_default or enable the `ring` feature \
             of leadmaps-smtp",
        ));
    }
    let mut builder = TlsParameters::builder(host.to_owned());
    for pem in &config.root_certificates {
        let certificate = Certificate::from_pem(pem)
            .map_err(|_| Error::invalid("SMTP TLS: a root certificate is not PEM"))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|_| Error::invalid("SMTP TLS: rustls refused the parameters"))
}

#[async_trait]
impl Mailer for SmtpMailer {
    /// Sends `email` over a new connection, within the configured timeout.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a subject with a line break or control character, a recipient
    /// lettre cannot encode, a 5xx reply (including a failed login) or a server without a
    /// feature the configuration requires (STARTTLS, a usable AUTH mechanism): retrying will not
    /// help. [`Error::Unavailable`] for a refused or broken connection, a TLS failure, a 4xx
    /// reply or the timeout. A timeout after the server took the message but before its reply
    /// arrived cannot be told apart: a retry may deliver twice, with the same Message-ID when
    /// the email has an idempotency key. No error contains the credentials, the body, the
    /// recipient or the server's reply text.
    async fn send(&self, email: &Email) -> Result<()> {
        let message = self.message(email)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(error)) => Err(failure::map(&error)),
            Err(_elapsed) => Err(Error::unavailable(SmtpFailure::TimedOut(self.timeout))),
        }
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from_domain", &self.from_domain)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadmaps_core::mail::Address;

    fn config() -> SmtpConfig {
        SmtpConfig::new(
            "127.0.0.1",
            Security::Plaintext,
            Address::parse("noreply@example.com").unwrap(),
        )
        .with_port(2525)
    }

    fn email(subject: &str) -> Email {
        Email {
            to: Address::parse("alice@example.org").unwrap(),
            subject: subject.to_owned(),
            text: "hello".to_owned(),
            idempotency_key: None,
        }
    }

    #[test]
    fn message_ids_are_stable_per_key_and_random_otherwise() {
        let mailer = SmtpMailer::new(config()).unwrap();
        let mut keyed = email("s");
        keyed.idempotency_key = Some("k1".to_owned());
        assert_eq!(mailer.message_id(&keyed), mailer.message_id(&keyed));
        assert_eq!(
            mailer.message_id(&keyed),
            message_id_for_key("k1", "example.com")
        );
        let plain = email("s");
        assert_ne!(mailer.message_id(&plain), mailer.message_id(&plain));
        assert!(mailer.message_id(&plain).ends_with("@example.com>"));
    }

    #[test]
    fn control_characters_in_the_subject_are_refused() {
        let mailer = SmtpMailer::new(config()).unwrap();
        for bad in ["a\r\nBcc: x@y.z", "a\nb", "a\rb", "a\0b", "a\u{85}b"] {
            let err = mailer.message(&email(bad)).unwrap_err();
            assert_eq!(err.kind(), leadmaps_core::ErrorKind::Invalid);
            assert!(!err.to_string().contains("Bcc"));
        }
        assert!(mailer.message(&email("tab\tis fine, ünïcödé too")).is_ok());
    }

    #[test]
    fn plaintext_goes_only_to_loopback() {
        let from = Address::parse("noreply@example.com").unwrap();
        let remote = SmtpConfig::new("mail.example.com", Security::Plaintext, from);
        assert!(SmtpMailer::new(remote.clone()).is_err());
        assert!(SmtpMailer::new(remote.clone().allow_remote_plaintext()).is_ok());
        let err = SmtpMailer::new(
            remote
                .allow_remote_plaintext()
                .with_credentials("user", "hunter2"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), leadmaps_core::ErrorKind::Invalid);
        assert!(!format!("{err:?}").contains("hunter2"));
        assert!(SmtpMailer::new(config().with_credentials("user", "hunter2")).is_ok());
    }

    #[test]
    fn malformed_names_are_refused() {
        assert!(SmtpMailer::new(config().with_from_name("Leadmaps\r\nBcc: x@y.z")).is_err());
        assert!(SmtpMailer::new(config().with_hello_name("bad name")).is_err());
        assert!(SmtpMailer::new(config().with_timeout(Duration::ZERO)).is_err());
        let from = Address::parse("noreply@example.com").unwrap();
        assert!(SmtpMailer::new(SmtpConfig::new("bad host", Security::Plaintext, from)).is_err());
    }

    /// This test binary installs no provider, so TLS must fail with advice, not panic.
    #[cfg(not(feature = "ring"))]
    #[test]
    fn tls_without_a_crypto_provider_is_an_error_not_a_panic() {
        let from = Address::parse("noreply@example.com").unwrap();
        let config = SmtpConfig::new("mail.example.com", Security::StartTls, from);
        let err = SmtpMailer::new(config).unwrap_err();
        assert_eq!(err.kind(), leadmaps_core::ErrorKind::Invalid);
        assert!(err.to_string().contains("crypto provider"), "{err}");
    }
}
