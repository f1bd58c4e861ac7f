//! What needs no IdP: configuration rules, SP metadata, the AuthnRequest, the replay cache, and
//! the refusals that happen before any signature is looked at.

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use leadmaps_core::ErrorKind;
use leadmaps_core::tenancy::WorkspaceId;
use leadmaps_saml::{
    IdpMetadata, MemoryReplayCache, PendingRequest, REQUEST_LIFETIME, ReplayCache, ReplayVerdict,
    SamlError, SamlSp, SpEntity,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use url::Url;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn cert_der() -> Vec<u8> {
    rcgen::generate_simple_self_signed(vec!["idp.example.org".to_owned()])
        .unwrap()
        .cert
        .der()
        .to_vec()
}

fn idp_metadata_xml(cert_der: &[u8]) -> String {
    format!(
        r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.org/saml">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>bm90IGEgY2VydA==</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>{}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
        Location="https://idp.example.org/sso/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="https://idp.example.org/sso/redirect?tenant=7"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#,
        STANDARD.encode(cert_der)
    )
}

fn sp() -> SamlSp {
    let entity = SpEntity::new(
        &Url::parse("https://app.example.com/").unwrap(),
        WorkspaceId::new(),
    )
    .unwrap();
    SamlSp::new(
        entity,
        IdpMetadata::from_xml(&idp_metadata_xml(&cert_der())).unwrap(),
    )
}

#[test]
fn sp_urls_derive_from_base_url_and_workspace() {
    let workspace = WorkspaceId::new();
    let entity = SpEntity::new(
        &Url::parse("https://app.example.com/x/").unwrap(),
        workspace,
    )
    .unwrap();
    assert_eq!(
        entity.entity_id(),
        format!("https://app.example.com/x/saml/{workspace}/metadata")
    );
    assert_eq!(
        entity.acs_url(),
        format!("https://app.example.com/x/saml/{workspace}/acs")
    );
    for bad in [
        "http://app.example.com",
        "https://user:pw@app.example.com",
        "https://app.example.com/?a=1",
        "ftp://app.example.com",
    ] {
        let result = SpEntity::new(&Url::parse(bad).unwrap(), workspace);
        assert!(matches!(result, Err(SamlError::Config(_))), "{bad}");
    }
    SpEntity::new(&Url::parse("http://127.0.0.1:8080").unwrap(), workspace).expect("loopback");
    SpEntity::new(&Url::parse("http://localhost:8080").unwrap(), workspace).expect("localhost");
}

#[test]
fn sp_metadata_names_entity_and_acs_and_wants_signed_assertions() {
    let sp = sp();
    let xml = sp.metadata_xml().unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "EntityDescriptor");
    assert_eq!(root.attribute("entityID"), Some(sp.sp().entity_id()));
    let descriptor = root
        .descendants()
        .find(|n| n.tag_name().name() == "SPSSODescriptor")
        .unwrap();
    assert_eq!(descriptor.attribute("WantAssertionsSigned"), Some("true"));
    let acs = descriptor
        .descendants()
        .find(|n| n.tag_name().name() == "AssertionConsumerService")
        .unwrap();
    assert_eq!(acs.attribute("Location"), Some(sp.sp().acs_url()));
    assert_eq!(
        acs.attribute("Binding"),
        Some("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
    );
    assert!(!xml.contains("validUntil"));
}

#[test]
fn idp_metadata_takes_redirect_sso_and_signing_certs_only() {
    let der = cert_der();
    let idp = IdpMetadata::from_xml(&idp_metadata_xml(&der)).unwrap();
    assert_eq!(idp.entity_id(), "https://idp.example.org/saml");
    assert_eq!(
        idp.sso_url().as_str(),
        "https://idp.example.org/sso/redirect?tenant=7"
    );
    assert_eq!(
        idp.signing_certificates().collect::<Vec<_>>(),
        vec![der.as_slice()]
    );

    let no_cert = idp_metadata_xml(&der).replace("use=\"signing\"", "use=\"encryption\"");
    assert!(matches!(
        IdpMetadata::from_xml(&no_cert),
        Err(SamlError::Config(_))
    ));
    let bad_cert = idp_metadata_xml(b"not a certificate");
    assert!(matches!(
        IdpMetadata::from_xml(&bad_cert),
        Err(SamlError::Config(_))
    ));
    let no_redirect = idp_metadata_xml(&der).replace("HTTP-Redirect", "SOAP");
    assert!(matches!(
        IdpMetadata::from_xml(&no_redirect),
        Err(SamlError::Config(_))
    ));
    let dtd = format!(
        "<!DOCTYPE x [<!ENTITY e \"e\">]>{}",
        idp_metadata_xml(&der).replace("<?xml version=\"1.0\"?>", "")
    );
    assert!(matches!(
        IdpMetadata::from_xml(&dtd),
        Err(SamlError::Config(_))
    ));
    let plain_http = IdpMetadata::new(
        "https://idp.example.org/saml",
        Url::parse("http://idp.example.org/sso").unwrap(),
        vec![der],
    );
    assert!(matches!(plain_http, Err(SamlError::Config(_))));
}

#[test]
fn start_login_builds_a_redirect_with_a_fresh_request() {
    let sp = sp();
    let login = sp.start_login(Some("state-1"), NOW).unwrap();
    let other = sp.start_login(None, NOW).unwrap();
    assert_ne!(login.pending.request_id, other.pending.request_id);
    assert_eq!(login.pending.request_id.len(), 33);
    assert_eq!(login.pending.expires_at, NOW + REQUEST_LIFETIME);

    let url = &login.redirect_url;
    assert_eq!(url.host_str(), Some("idp.example.org"));
    assert_eq!(url.path(), "/sso/redirect");
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert!(query.contains(&("tenant".into(), "7".into())));
    assert!(query.contains(&("RelayState".into(), "state-1".into())));
    let request = &query.iter().find(|(k, _)| k == "SAMLRequest").unwrap().1;
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(STANDARD.decode(request).unwrap().as_slice())
        .read_to_string(&mut xml)
        .unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "AuthnRequest");
    assert_eq!(
        root.attribute("ID"),
        Some(login.pending.request_id.as_str())
    );
    assert_eq!(
        root.attribute("AssertionConsumerServiceURL"),
        Some(sp.sp().acs_url())
    );
    assert_eq!(
        root.attribute("IssueInstant"),
        Some("2026-06-01T12:00:00.000Z")
    );
    let issuer = root
        .children()
        .find(|n| n.tag_name().name() == "Issuer")
        .unwrap();
    assert_eq!(issuer.text(), Some(sp.sp().entity_id()));

    let long = "x".repeat(81);
    assert!(matches!(
        sp.start_login(Some(&long), NOW),
        Err(SamlError::Config(_))
    ));
}

#[tokio::test]
async fn refusals_before_any_signature() {
    let sp = sp();
    let cache = MemoryReplayCache::new();
    let pending = PendingRequest {
        request_id: "_r".into(),
        expires_at: NOW + Duration::minutes(1),
    };
    let response = |xml: &str| STANDARD.encode(xml);
    let ok_shape = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
        xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1" Version="2.0">
        <saml:Assertion ID="a1" Version="2.0"/></samlp:Response>"#;

    // IdP-initiated (no pending request) is refused by default, whatever was posted.
    let e = sp
        .consume(&response(ok_shape), None, NOW, &cache)
        .await
        .unwrap_err();
    assert!(matches!(e, SamlError::Unsolicited), "{e:?}");
    // A pending request that is too old.
    let late = NOW + Duration::minutes(2);
    let e = sp
        .consume(&response(ok_shape), Some(&pending), late, &cache)
        .await
        .unwrap_err();
    assert!(matches!(e, SamlError::RequestExpired), "{e:?}");

    type Expect = fn(&SamlError) -> bool;
    let cases: &[(&str, Expect)] = &[
        ("%%% not base64", |e| matches!(e, SamlError::Malformed(_))),
        ("<not-closed>", |e| matches!(e, SamlError::Malformed(_))),
        (ok_shape, |e| matches!(e, SamlError::Unsigned)),
        (r#"<!DOCTYPE r [<!ENTITY x "y">]><r/>"#, |e| {
            matches!(e, SamlError::Malformed(_))
        }),
        (
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="a"/>"#,
            |e| matches!(e, SamlError::Malformed("not a SAML Response")),
        ),
        (
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
                xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1">
                <saml:EncryptedAssertion/></samlp:Response>"#,
            |e| matches!(e, SamlError::EncryptedAssertion),
        ),
        (
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
                xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1">
                <saml:Assertion ID="a1"/><saml:Assertion ID="a2"/></samlp:Response>"#,
            |e| matches!(e, SamlError::Wrapped(_)),
        ),
        (
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
                xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1">
                <saml:Assertion ID="r1"/></samlp:Response>"#,
            |e| matches!(e, SamlError::Wrapped("duplicate ID")),
        ),
    ];
    for (xml, expected) in cases {
        let posted = if xml.starts_with('%') {
            (*xml).to_owned()
        } else {
            response(xml)
        };
        let e = sp
            .consume(&posted, Some(&pending), NOW, &cache)
            .await
            .unwrap_err();
        assert!(expected(&e), "{xml}: {e:?}");
        assert_eq!(
            e.kind(),
            match e {
                SamlError::EncryptedAssertion => ErrorKind::NotSupported,
                _ => ErrorKind::Invalid,
            }
        );
    }
    let too_big = "A".repeat(600 * 1024);
    let e = sp
        .consume(&too_big, Some(&pending), NOW, &cache)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SamlError::Malformed("response too large")),
        "{e:?}"
    );
    assert!(cache.is_empty());
}

#[tokio::test]
async fn memory_replay_cache_remembers_until_expiry_and_fails_closed_when_full() {
    let cache = MemoryReplayCache::with_capacity(2);
    let until = NOW + Duration::minutes(5);
    assert_eq!(
        cache.record("idp", "a", until, NOW).await.unwrap(),
        ReplayVerdict::Fresh
    );
    assert_eq!(
        cache.record("idp", "a", until, NOW).await.unwrap(),
        ReplayVerdict::Replayed
    );
    // Keyed by issuer and id.
    assert_eq!(
        cache.record("other", "a", until, NOW).await.unwrap(),
        ReplayVerdict::Fresh
    );
    // Full of live entries: refuse rather than forget.
    let full = cache.record("idp", "b", until, NOW).await.unwrap_err();
    assert!(matches!(full, SamlError::ReplayCache(_)));
    assert_eq!(full.kind(), ErrorKind::Unavailable);
    // Still remembered one second before expiry; evicted at it, and then room again.
    let almost = until - Duration::seconds(1);
    assert_eq!(
        cache.record("idp", "a", until, almost).await.unwrap(),
        ReplayVerdict::Replayed
    );
    assert_eq!(
        cache
            .record("idp", "b", until + Duration::minutes(5), until)
            .await
            .unwrap(),
        ReplayVerdict::Fresh
    );
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn memory_replay_cache_is_atomic_under_concurrency() {
    let cache = std::sync::Arc::new(MemoryReplayCache::new());
    let until = NOW + Duration::minutes(5);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let cache = cache.clone();
        handles.push(std::thread::spawn(move || {
            futures_lite_block_on(cache.record("idp", "same", until, NOW))
        }));
    }
    let fresh = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .filter(|v| *v == ReplayVerdict::Fresh)
        .count();
    assert_eq!(fresh, 1);
}

/// Runs a future that never waits (the memory cache's) to completion.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn errors_say_nothing_personal() {
    for e in [
        SamlError::Audience,
        SamlError::Recipient,
        SamlError::Wrapped("more than one assertion"),
        SamlError::BadSignature,
    ] {
        let text = e.to_string();
        assert!(!text.contains('@') && !text.contains("http"), "{text}");
    }
    let core: leadmaps_core::Error = SamlError::Replayed.into();
    assert_eq!(core.kind(), ErrorKind::Invalid);
}

#[test]
fn sp_and_consume_future_are_send_for_async_handlers() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let sp = sp();
    assert_send_sync(&sp);
    let cache = MemoryReplayCache::new();
    let future = sp.consume("", None, NOW, &cache);
    assert_send(&future);
}
