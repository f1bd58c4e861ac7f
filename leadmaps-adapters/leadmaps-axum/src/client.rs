//! The client address: the peer, or for a trusted proxy peer the nearest untrusted address in
//! `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::http::HeaderMap;
use axum::serve::IncomingStream;
use ipnet::IpNet;

/// The peer's socket address, for `into_make_service_with_connect_info::<PeerAddr>()` on a
/// plain TCP or a TLS listener alike. (`ConnectInfo<SocketAddr>` is accepted too.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

#[cfg(feature = "tls")]
impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The peer address axum's connect info recorded for a request (`ConnectInfo<SocketAddr>` or
/// `ConnectInfo<PeerAddr>`); `None` when the server was not started with connect info.
pub(crate) fn peer_ip(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    use axum::extract::ConnectInfo;
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .or_else(|| {
            extensions
                .get::<ConnectInfo<PeerAddr>>()
                .map(|ConnectInfo(PeerAddr(addr))| addr.ip())
        })
}

/// The client address of a request from `peer`.
///
/// `X-Forwarded-For` is read only when `peer` is in `trusted`; then its addresses are walked
/// from the right (the nearest hop), skipping trusted proxies, and the first untrusted one is the
/// client. A header that does not parse is ignored (the peer is used), never trusted in part.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn untrusted_peers_cannot_spoof_their_address() {
        let peer: IpAddr = "203.0.113.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(peer, &headers(&["1.1.1.1"]), &trusted), peer);
        assert_eq!(client_ip(peer, &headers(&["1.1.1.1"]), &[]), peer);
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = client_ip(
            peer,
            &headers(&["6.6.6.6, 198.51.100.7, 10.0.0.9"]),
            &trusted,
        );
        assert_eq!(
            got,
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "the spoofable left part is ignored"
        );
        let split = client_ip(peer, &headers(&["6.6.6.6", "198.51.100.8"]), &trusted);
        assert_eq!(split, "198.51.100.8".parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip(peer, &headers(&["garbage, 1.2.3.4"]), &trusted),
            peer
        );
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }
}
