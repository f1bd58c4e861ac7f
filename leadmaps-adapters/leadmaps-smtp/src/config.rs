//! Where the mailer connects, how, and whom it sends as.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use leadmaps_core::mail::Address;
use leadmaps_core::{Error, Result};
use url::{Host, Url};
use zeroize::Zeroizing;

/// How long one send may take, from connecting to the server's answer to the message, unless
/// [`SmtpConfig::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Security {
    /// No TLS at all: for a relay on the same machine and for tests. Refused for a host that is
    /// not loopback unless [`SmtpConfig::allow_remote_plaintext`] is called, and refused with
    /// credentials to such a host in any case.
    Plaintext,
    /// A plain connection upgraded with `STARTTLS` before anything else is sent. Required: a
    /// server that does not offer `STARTTLS` gets neither credentials nor the message.
    StartTls,
    /// TLS from the first byte ("implicit TLS", `smtps`, RFC 8314).
    ImplicitTls,
}

impl Security {
    /// The usual port for this mode: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            Security::Plaintext => 25,
            Security::StartTls => 587,
            Security::ImplicitTls => 465,
        }
    }
}

/// A login for `AUTH` (PLAIN or LOGIN). Both halves are secrets: some providers put an API token
/// in the user name.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: Zeroizing<String>,
    pub(crate) password: Zeroizing<String>,
}

/// What [`SmtpMailer`](crate::SmtpMailer) connects to and sends as.
///
/// Built with [`SmtpConfig::new`] or [`SmtpConfig::from_url`] and the `with_*` methods; checked
/// as a whole by [`SmtpMailer::new`](crate::SmtpMailer::new). `Debug` never shows the
/// credentials, and only the domain of the From address.
#[derive(Clone)]
pub struct SmtpConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) from: Address,
    pub(crate) from_name: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) hello_name: Option<String>,
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) allow_remote_plaintext: bool,
}

impl SmtpConfig {
    /// A configuration for `host` on the default port of `security`, sending as `from`, without
    /// credentials, with [`DEFAULT_TIMEOUT`].
    pub fn new(host: impl Into<String>, security: Security, from: Address) -> Self {
        Self {
            host: host.into(),
            port: security.default_port(),
            security,
            credentials: None,
            from,
            from_name: None,
            timeout: DEFAULT_TIMEOUT,
            hello_name: None,
            root_certificates: Vec::new(),
            allow_remote_plaintext: false,
        }
    }

    /// Reads `scheme://[user:password@]host[:port]`, sending as `from`.
    ///
    /// Schemes: `smtp` ([`Security::Plaintext`], port 25), `smtp+starttls`
    /// ([`Security::StartTls`], port 587) and `smtps` ([`Security::ImplicitTls`], port 465).
    /// User and password are percent-decoded (write `@` as `%40`); both or neither must be
    /// given. A path other than `/`, a query or a fragment is refused rather than ignored.
    ///
    /// # Errors
    /// [`Error::Invalid`] with a message that never repeats the URL or any part of it.
    ///
    /// # Example
    /// ```
    /// # use leadmaps_core::mail::Address;
    /// use leadmaps_smtp::{Security, SmtpConfig};
    /// let from = Address::parse("noreply@example.com")?;
    /// let config = SmtpConfig::from_url("smtp+starttls://mailer:s3cr%40t@mail.example.com", from)?;
    /// assert_eq!(config.security(), Security::StartTls);
    /// assert_eq!(config.port(), 587);
    /// assert!(!format!("{config:?}").contains("s3cr"));
    /// # Ok::<(), leadmaps_core::Error>(())
    /// ```
    pub fn from_url(url: &str, from: Address) -> Result<Self> {
        let invalid = |why: &str| Error::invalid(format!("SMTP URL: {why}"));
        let url = Url::parse(url.trim()).map_err(|_| invalid("does not parse"))?;
        let security = match url.scheme() {
            "smtp" => Security::Plaintext,
            "smtp+starttls" => Security::StartTls,
            "smtps" => Security::ImplicitTls,
            _ => return Err(invalid("scheme must be smtp, smtp+starttls or smtps")),
        };
        let host = match url.host() {
            Some(Host::Domain(domain)) if !domain.is_empty() => domain.to_ascii_lowercase(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("no host")),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a path, query or fragment is not understood"));
        }
        let mut config = Self::new(host, security, from);
        if let Some(port) = url.port() {
            config.port = port;
        }
        match (url.username(), url.password()) {
            ("", None) => {}
            (user, Some(password)) if !user.is_empty() => {
                let user = Zeroizing::new(
                    percent_decode(user)
                        .ok_or_else(|| invalid("user is not percent-encoded UTF-8"))?,
                );
                let password = Zeroizing::new(
                    percent_decode(password)
                        .ok_or_else(|| invalid("password is not percent-encoded UTF-8"))?,
                );
                config.credentials = Some(Credentials { user, password });
            }
            _ => return Err(invalid("credentials need both a user and a password")),
        }
        Ok(config)
    }

    /// Connects to `port` instead of the default of the security mode.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Logs in with `AUTH PLAIN` or `AUTH LOGIN` (whichever the server offers) after TLS is up.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials {
            user: Zeroizing::new(user.into()),
            password: Zeroizing::new(password.into()),
        });
        self
    }

    /// The display name in the From header (`"Leadmaps" <noreply@example.com>`). One line, no
    /// control characters; any UTF-8 is encoded as needed.
    pub fn with_from_name(mut self, name: impl Into<String>) -> Self {
        self.from_name = Some(name.into());
        self
    }

    /// Bounds one whole send: connecting, TLS, login, and the transfer of the message.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The name given in `EHLO`. Defaults to the domain of the From address: the machine's own
    /// host name is never read, so it does not leak to the relay.
    pub fn with_hello_name(mut self, name: impl Into<String>) -> Self {
        self.hello_name = Some(name.into());
        self
    }

    /// Trusts one more root certificate (PEM, one or more certificates), for a relay with a
    /// private CA. Added to the roots of the `native-roots` or `webpki-roots` feature.
    pub fn with_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Allows [`Security::Plaintext`] to a host that is not loopback (a relay on a private
    /// network). Credentials are still never sent in the clear to such a host.
    pub fn allow_remote_plaintext(mut self) -> Self {
        self.allow_remote_plaintext = true;
        self
    }

    /// The server's host name or IP address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How the connection is protected.
    pub fn security(&self) -> Security {
        self.security
    }

    /// The From address (also the envelope sender).
    pub fn from(&self) -> &Address {
        &self.from
    }

    /// The bound on one send.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a login is configured.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Whether the host is `localhost` or a loopback IP address.
    pub fn host_is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("from", &self.from)
            .field("from_name", &self.from_name)
            .field("timeout", &self.timeout)
            .field("hello_name", &self.hello_name)
            .field("root_certificates", &self.root_certificates.len())
            .field("allow_remote_plaintext", &self.allow_remote_plaintext)
            .finish()
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> Address {
        Address::parse("noreply@example.com").unwrap()
    }

    #[test]
    fn urls_give_security_port_and_credentials() {
        let c = SmtpConfig::from_url("smtp://127.0.0.1:2525", from()).unwrap();
        assert_eq!(
            (c.host(), c.port(), c.security()),
            ("127.0.0.1", 2525, Security::Plaintext)
        );
        assert!(!c.has_credentials() && c.host_is_loopback());

        let c = SmtpConfig::from_url("SMTPS://Mail.Example.COM", from()).unwrap();
        assert_eq!(
            (c.host(), c.port(), c.security()),
            ("mail.example.com", 465, Security::ImplicitTls)
        );
        assert!(!c.host_is_loopback());

        let c = SmtpConfig::from_url("smtp+starttls://u%40x:p%3Aw%2F@[::1]/", from()).unwrap();
        assert_eq!(
            (c.host(), c.port(), c.security()),
            ("::1", 587, Security::StartTls)
        );
        assert!(c.host_is_loopback());
        let creds = c.credentials.as_ref().unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.as_str()),
            ("u@x", "p:w/")
        );

        let c = SmtpConfig::from_url("smtp://localhost", from()).unwrap();
        assert_eq!(c.port(), 25);
        assert!(c.host_is_loopback());
    }

    #[test]
    fn bad_urls_are_refused_without_echo() {
        for bad in [
            "",
            "mail.example.com",
            "http://user:hunter2@mail.example.com",
            "smtp://user:hunter2@",
            "smtp://user@mail.example.com",
            "smtp://:hunter2@mail.example.com",
            "smtp://user:hunter2@mail.example.com/path",
            "smtp://user:hunter2@mail.example.com?tls=1",
            "smtp://user:hunter2@mail.example.com#x",
            "smtp://user:hunter2%zz@mail.example.com",
            "smtp://user:hunter2%ff@mail.example.com",
            "smtp://user:hunter2@mail.example.com:99999",
        ] {
            let err = SmtpConfig::from_url(bad, from()).unwrap_err();
            assert_eq!(err.kind(), leadmaps_core::ErrorKind::Invalid, "{bad}");
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("example"),
                "{shown}"
            );
        }
    }

    #[test]
    fn debug_redacts_credentials_and_the_from_local_part() {
        let c = SmtpConfig::new("mail.example.com", Security::StartTls, from())
            .with_credentials("apitoken-user", "hunter2");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("apitoken"),
            "{shown}"
        );
        assert!(!shown.contains("noreply"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("mail.example.com"),
            "{shown}"
        );
    }
}
