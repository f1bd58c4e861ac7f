//! HTTPS with rustls, TLS 1.3 only.
//!
//! Handshakes run on their own tasks (with a timeout), so one slow client never stalls the
//! accept loop; finished connections are handed to `axum::serve` through [`TlsListener`].
//! The caller chooses the crypto provider: the library never picks one for its users.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be configured. Messages name the file's role, never its contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate chain is missing or not PEM.
    #[error("TLS certificate: no PEM certificate found")]
    Certificate,
    /// The private key is missing or not PEM.
    #[error("TLS private key: no PEM private key found")]
    Key,
    /// rustls refused the pair (mismatched key, unsupported algorithm).
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

/// A server configuration from PEM certificate chain and key that speaks only TLS 1.3 and
/// offers HTTP/1.1.
///
/// # Errors
/// [`TlsError`] for unreadable PEM or a pair rustls refuses.
pub fn tls13_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Certificate)?;
    if chain.is_empty() {
        return Err(TlsError::Certificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that yields finished TLS connections; serve it with `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and handshakes with `config`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::debug!(kind = ?error.kind(), "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        // Failed handshakes (old TLS versions, scanners) are dropped quietly;
                        // the peer's address is not logged.
                        Ok(Err(error)) => {
                            tracing::debug!(kind = ?error.kind(), "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept task ended (it never does while the listener lives): park forever
            // rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
