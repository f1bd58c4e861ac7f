//! The transport promise, probed from outside: the public base URL is `https://`, a TLS 1.3
//! handshake succeeds against a trusted certificate, a TLS 1.2-only client is refused, and every
//! public endpoint probed answers with `Strict-Transport-Security` of at least a year
//! (RFC 6797 §6.1; a year is the HSTS preload list's minimum).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, STRICT_TRANSPORT_SECURITY};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use url::Url;

use crate::report::{Check, Promise, count};

/// The public endpoints probed for HSTS: the health check, security.txt (RFC 9116) and the
/// collector (a `GET` there is refused, and the refusal must carry the header too).
pub const PROBED_PATHS: [&str; 3] = ["/healthz", "/.well-known/security.txt", "/api/event"];
/// The shortest HSTS `max-age` accepted: one year, in seconds.
pub const MIN_HSTS_MAX_AGE: u64 = 31_536_000;
/// How long one connection, handshake or request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a probe could not get an answer.
type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// The certificates a probe trusts: the Mozilla roots plus `extra` (a private CA).
pub fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        // A certificate rustls cannot use as an anchor is left out; the handshake then
        // fails and names the certificate problem.
        let _ = roots.add(cert.clone());
    }
    roots
}

/// The certificates of a PEM file (a private CA to trust beside the Mozilla roots).
///
/// # Errors
/// When the text holds no certificate or a malformed one.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ProbeError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the CA file is not PEM certificates")?;
    if certs.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    Ok(certs)
}

/// Probes `base` (the deployment's public base URL) and reports the transport promise.
pub async fn check(base: Option<&Url>, roots: RootCertStore) -> Check {
    let promise = Promise::Transport;
    let Some(base) = base else {
        return Check::fail(
            promise,
            "not checked: no public base URL given (--public-url or LEADMAPS_PUBLIC_URL)",
        );
    };
    if base.scheme() != "https" {
        return Check::fail(
            promise,
            format!(
                "the public base URL is {}://, not https://: no TLS at all",
                base.scheme()
            ),
        );
    }
    let Some(host) = base
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_owned())
    else {
        return Check::fail(promise, "the public base URL has no host");
    };
    let port = base.port_or_known_default().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut findings = Vec::new();
    if handshake(&host, port, tls12_only(&provider)).await.is_ok() {
        findings.push("a TLS 1.2-only client was accepted".to_owned());
    }
    let modern = tls13_only(&provider, roots);
    let mut max_ages = Vec::new();
    for path in PROBED_PATHS {
        match hsts_of(&host, port, path, modern.clone()).await {
            Ok((version, header)) => {
                if version != Some(ProtocolVersion::TLSv1_3) {
                    findings.push(format!("{path}: negotiated {version:?}, not TLS 1.3"));
                }
                match header.as_deref().map(max_age) {
                    None => findings.push(format!("{path}: no Strict-Transport-Security header")),
                    Some(None) => findings.push(format!(
                        "{path}: Strict-Transport-Security without a valid max-age"
                    )),
                    Some(Some(age)) if age < MIN_HSTS_MAX_AGE => findings.push(format!(
                        "{path}: Strict-Transport-Security max-age={age} is under a year"
                    )),
                    Some(Some(age)) => max_ages.push(age),
                }
            }
            Err(error) => findings.push(format!("{path}: no TLS 1.3 answer: {error}")),
        }
    }
    Check::judge(
        promise,
        findings,
        || {
            let age = max_ages.iter().min().copied().unwrap_or_default();
            format!(
                "TLS 1.3 with a trusted certificate, TLS 1.2 refused, HSTS max-age>={age} on {} endpoints",
                PROBED_PATHS.len()
            )
        },
        |n| {
            format!(
                "{} on the public endpoints",
                count(n, "problem", "problems")
            )
        },
    )
}

/// The `max-age` of an HSTS header value (RFC 6797 §6.1.1: directive names are case-insensitive,
/// the value may be quoted); `None` when it has none or it does not parse.
pub fn max_age(header: &str) -> Option<u64> {
    header.split(';').find_map(|directive| {
        let (name, value) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        value.trim().trim_matches('"').parse().ok()
    })
}

fn tls13_only(provider: &Arc<CryptoProvider>, roots: RootCertStore) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client that offers only TLS 1.2 and takes any certificate: it asks one question (does the
/// server agree to TLS 1.2?) and sends nothing over the connection.
fn tls12_only(provider: &Arc<CryptoProvider>) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("ring supports TLS 1.2")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth(),
    )
}

async fn handshake(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, ProbeError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| "the host is not a valid name")?;
    let connect = async {
        let tcp = TcpStream::connect((host, port)).await?;
        TlsConnector::from(config).connect(name, tcp).await
    };
    Ok(tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| "timed out")??)
}

/// `GET path` over a fresh TLS connection: the negotiated version and the HSTS header.
async fn hsts_of(
    host: &str,
    port: u16,
    path: &str,
    config: Arc<ClientConfig>,
) -> Result<(Option<ProtocolVersion>, Option<String>), ProbeError> {
    let tls = handshake(host, port, config).await?;
    let version = tls.get_ref().1.protocol_version();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
    let driver = tokio::spawn(connection);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = hyper::Request::get(path)
        .header(HOST, authority)
        .header(CONNECTION, "close")
        .body(Empty::new())?;
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| "timed out")??;
    driver.abort();
    let header = response
        .headers()
        .get(STRICT_TRANSPORT_SECURITY)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok((version, header))
}

/// Accepts any certificate (signatures are still checked): only for the TLS 1.2 refusal probe.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_reads_rfc_6797_directives() {
        assert_eq!(
            max_age("max-age=63072000; includeSubDomains"),
            Some(63_072_000)
        );
        assert_eq!(
            max_age("includeSubDomains; Max-Age=\"31536000\""),
            Some(31_536_000)
        );
        assert_eq!(max_age(" max-age = 5 "), Some(5));
        assert_eq!(max_age("includeSubDomains"), None);
        assert_eq!(max_age("max-age=forever"), None);
        assert_eq!(max_age("max-age=-1"), None);
    }
}
