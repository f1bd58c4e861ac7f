//! HTTPS speaks TLS 1.3 and nothing older.
#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use leadmaps_axum::tls::{TlsListener, tls13_config};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn server() -> (SocketAddr, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let config = tls13_config(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
        provider(),
    )
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, config).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let router = Router::new().route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, cert.cert.der().clone())
}

fn client(
    cert: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls13_clients_are_served() {
    let (addr, cert) = server().await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = client(&cert, &[&rustls::version::TLS13])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn tls12_clients_are_refused() {
    let (addr, cert) = server().await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let result = client(&cert, &[&rustls::version::TLS12])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(
        result.is_err(),
        "a TLS 1.2-only client must not complete a handshake"
    );
}

#[test]
fn bad_pem_is_refused_without_echoing_it() {
    let error = tls13_config(
        b"-----BEGIN NONSENSE-----",
        b"secret-key-material",
        provider(),
    )
    .unwrap_err();
    assert!(!error.to_string().contains("secret-key-material"));
}
