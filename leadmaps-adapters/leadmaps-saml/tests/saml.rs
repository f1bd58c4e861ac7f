//! The SP against a real IdP (pysaml2 on loopback): a login end to end, and each attack made
//! from the IdP's genuine responses, refused with its own error.

mod common;

use common::{Fixture, decode, element, encode, fixture, form_value, http, prefix};
use leadmaps_core::clock::{Clock, SystemClock};
use leadmaps_saml::{
    CLOCK_SKEW, MemoryReplayCache, PendingRequest, ReplayCache, SamlError, SamlIdentity,
};
use serde_json::json;
use time::{Duration, OffsetDateTime};

const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Gets the fixture or returns from the test (after the notice `fixture` printed).
macro_rules! idp_or_skip {
    () => {
        match fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

fn now() -> OffsetDateTime {
    SystemClock.now()
}

/// A pending request, as if `start_login` had issued it (the forge endpoint answers any id).
fn pending(id: &str) -> PendingRequest {
    PendingRequest {
        request_id: id.to_owned(),
        expires_at: now() + Duration::minutes(10),
    }
}

async fn consume(
    f: &Fixture,
    response: &str,
    pending: Option<&PendingRequest>,
) -> Result<SamlIdentity, SamlError> {
    f.sp.consume(response, pending, now(), &MemoryReplayCache::new())
        .await
}

/// A genuine response for `pending`, only the assertion signed.
fn genuine(f: &Fixture, request_id: &str) -> String {
    f.forge(json!({ "in_response_to": request_id }))
}

#[tokio::test]
async fn login_end_to_end_against_pysaml2() {
    let f = idp_or_skip!();
    let login = f.sp.start_login(Some("back-to=/dashboard"), now()).unwrap();
    assert!(
        login
            .redirect_url
            .as_str()
            .starts_with(&format!("{}/sso/redirect?SAMLRequest=", f.idp_base))
    );

    // The browser follows the redirect; the IdP signs the user in and answers with the
    // auto-submitting form of the HTTP-POST binding (response and assertion both signed).
    let (status, page) = http("GET", login.redirect_url.as_str(), None);
    assert_eq!(status, 200, "IdP: {page}");
    assert_eq!(form_value(&page, "<form", "action"), f.sp.sp().acs_url());
    assert_eq!(
        form_value(&page, "name=\"RelayState\"", "value"),
        "back-to=/dashboard"
    );
    let saml_response = form_value(&page, "name=\"SAMLResponse\"", "value");
    let xml = decode(&saml_response);
    let signature_values = format!("<{}:SignatureValue>", prefix(&xml, NS_DSIG));
    assert_eq!(
        xml.matches(&signature_values).count(),
        2,
        "response and assertion signed"
    );

    let replay = MemoryReplayCache::new();
    let identity =
        f.sp.consume(&saml_response, Some(&login.pending), now(), &replay)
            .await
            .expect("the IdP's response is accepted");
    assert_eq!(identity.name_id, "alice@example.org");
    assert_eq!(identity.email.as_deref(), Some("alice@example.org"));
    assert_eq!(identity.issuer, f.sp.idp().entity_id());
    assert_eq!(identity.workspace, f.sp.sp().workspace());
    assert!(identity.session_index.is_some());
    assert!(identity.authn_instant.is_some());
    assert!(
        identity
            .attributes
            .iter()
            .any(|a| a.friendly_name.as_deref() == Some("givenName") && a.values == ["Alice"])
    );
    // Debug shows no personal data.
    let debug = format!("{identity:?}");
    assert!(!debug.contains("alice"), "{debug}");
    assert_eq!(replay.len(), 1);

    // The same response again: refused.
    let again =
        f.sp.consume(&saml_response, Some(&login.pending), now(), &replay)
            .await;
    assert!(matches!(again, Err(SamlError::Replayed)), "{again:?}");
}

#[tokio::test]
async fn genuine_forged_responses_are_accepted_signed_either_way() {
    let f = idp_or_skip!();
    let request = pending("_req-genuine");
    consume(f, &genuine(f, "_req-genuine"), Some(&request))
        .await
        .expect("assertion signed");
    let response_signed = f.forge(json!({
        "in_response_to": "_req-genuine", "sign_response": true, "sign_assertion": false,
    }));
    consume(f, &response_signed, Some(&request))
        .await
        .expect("response signed");
}

#[tokio::test]
async fn unsigned_is_refused() {
    let f = idp_or_skip!();
    let unsigned = f.forge(json!({
        "in_response_to": "_req-u", "sign_response": false, "sign_assertion": false,
    }));
    assert!(!decode(&unsigned).contains("Signature"));
    let result = consume(f, &unsigned, Some(&pending("_req-u"))).await;
    assert!(matches!(result, Err(SamlError::Unsigned)), "{result:?}");
}

#[tokio::test]
async fn signed_by_another_key_is_refused() {
    let f = idp_or_skip!();
    // Same issuer, same everything, but signed by a key the SP does not trust, with its
    // certificate embedded in the signature's KeyInfo (which must be ignored).
    for (sign_response, sign_assertion) in [(false, true), (true, false), (true, true)] {
        let rogue = f.forge(json!({
            "in_response_to": "_req-k", "key": "other",
            "sign_response": sign_response, "sign_assertion": sign_assertion,
        }));
        assert!(decode(&rogue).contains("X509Certificate"));
        let result = consume(f, &rogue, Some(&pending("_req-k"))).await;
        assert!(matches!(result, Err(SamlError::BadSignature)), "{result:?}");
    }
}

#[tokio::test]
async fn tampered_signed_assertion_is_refused() {
    let f = idp_or_skip!();
    let xml = decode(&genuine(f, "_req-t"));
    let tampered = xml.replacen("alice@example.org", "mallory@example.org", 1);
    assert_ne!(tampered, xml);
    let result = consume(f, &encode(&tampered), Some(&pending("_req-t"))).await;
    assert!(matches!(result, Err(SamlError::BadSignature)), "{result:?}");
}

/// XSW: an unsigned evil assertion (for the victim) placed before the genuine signed one (for
/// the attacker), the classic wrapping where the reader takes the first assertion.
#[tokio::test]
async fn xsw_injected_unsigned_assertion_is_refused() {
    let f = idp_or_skip!();
    let xml = decode(&f.forge(json!({
        "in_response_to": "_req-x1", "name_id": "mallory@example.org", "email": "mallory@example.org",
    })));
    let saml = prefix(&xml, NS_ASSERTION);
    let dsig = prefix(&xml, NS_DSIG);
    let signed = element(&xml, &format!("{saml}:Assertion"));
    let mut evil = xml[signed.clone()].replace("mallory@example.org", "alice@example.org");
    let signature = element(&evil, &format!("{dsig}:Signature"));
    evil.replace_range(signature, "");
    let evil = with_new_id(&evil, "id-evil");
    let mut wrapped = xml.clone();
    wrapped.insert_str(signed.start, &evil);

    let result = consume(f, &encode(&wrapped), Some(&pending("_req-x1"))).await;
    assert!(
        matches!(result, Err(SamlError::Wrapped("more than one assertion"))),
        "{result:?}"
    );
}

/// XSW: the genuine signed assertion moved out of the way (into the response's `Extensions`,
/// where a schema-blind signature check still finds it by ID) and an evil one in its place.
#[tokio::test]
async fn xsw_signed_assertion_moved_into_extensions_is_refused() {
    let f = idp_or_skip!();
    let xml = decode(&f.forge(json!({
        "in_response_to": "_req-x2", "name_id": "mallory@example.org", "email": "mallory@example.org",
    })));
    let saml = prefix(&xml, NS_ASSERTION);
    let samlp = prefix(&xml, NS_PROTOCOL);
    let dsig = prefix(&xml, NS_DSIG);
    let signed_range = element(&xml, &format!("{saml}:Assertion"));
    let signed = xml[signed_range.clone()].to_owned();
    let mut evil = signed.replace("mallory@example.org", "alice@example.org");
    let signature = element(&evil, &format!("{dsig}:Signature"));
    evil.replace_range(signature, "");
    let evil = with_new_id(&evil, "id-evil");

    let mut wrapped = xml.clone();
    wrapped.replace_range(signed_range, &evil);
    // Extensions go right after the response's Issuer.
    let issuer_end = wrapped.find(&format!("</{saml}:Issuer>")).unwrap() + saml.len() + 10;
    wrapped.insert_str(
        issuer_end,
        &format!("<{samlp}:Extensions>{signed}</{samlp}:Extensions>"),
    );

    let result = consume(f, &encode(&wrapped), Some(&pending("_req-x2"))).await;
    assert!(
        matches!(result, Err(SamlError::Wrapped("more than one assertion"))),
        "{result:?}"
    );
}

/// XSW: the assertion's signature moved up to the response, still referencing the assertion.
/// It still verifies (the enveloped transform removed it before digesting anyway), and there is
/// one assertion only; what gives it away is that the signature no longer references the
/// element it sits in, which would leave the response it sits in unprotected.
#[tokio::test]
async fn xsw_signature_moved_to_the_response_is_refused() {
    let f = idp_or_skip!();
    let xml = decode(&genuine(f, "_req-x3"));
    let saml = prefix(&xml, NS_ASSERTION);
    let dsig = prefix(&xml, NS_DSIG);
    let signature_range = element(&xml, &format!("{dsig}:Signature"));
    let signature = xml[signature_range.clone()].to_owned();
    let mut moved = xml.clone();
    moved.replace_range(signature_range, "");
    let issuer_end = moved.find(&format!("</{saml}:Issuer>")).unwrap() + saml.len() + 10;
    moved.insert_str(issuer_end, &signature);

    let result = consume(f, &encode(&moved), Some(&pending("_req-x3"))).await;
    assert!(
        matches!(
            result,
            Err(SamlError::Wrapped(
                "signature does not reference the element it is in"
            ))
        ),
        "{result:?}"
    );
}

/// XSW: a signed response wrapped inside an evil response (the signed original parked inside
/// the evil assertion's `Advice`).
#[tokio::test]
async fn xsw_signed_response_wrapped_in_an_evil_one_is_refused() {
    let f = idp_or_skip!();
    let xml = decode(&f.forge(json!({
        "in_response_to": "_req-x4", "sign_response": true, "sign_assertion": false,
        "name_id": "mallory@example.org", "email": "mallory@example.org",
    })));
    let saml = prefix(&xml, NS_ASSERTION);
    let samlp = prefix(&xml, NS_PROTOCOL);
    let dsig = prefix(&xml, NS_DSIG);
    let original = element(&xml, &format!("{samlp}:Response"));
    let inner = xml[original.clone()].to_owned();

    let mut evil = with_new_id(&inner, "id-evil-response");
    let signature = element(&evil, &format!("{dsig}:Signature"));
    evil.replace_range(signature, "");
    let evil = evil.replace("mallory@example.org", "alice@example.org");
    let assertion = element(&evil, &format!("{saml}:Assertion"));
    let mut evil_assertion = with_new_id(&evil[assertion.clone()], "id-evil-assertion");
    let subject = evil_assertion.find(&format!("<{saml}:Subject>")).unwrap();
    evil_assertion.insert_str(subject, &format!("<{saml}:Advice>{inner}</{saml}:Advice>"));
    let mut wrapped_response = evil.clone();
    wrapped_response.replace_range(assertion, &evil_assertion);
    let mut wrapped = xml.clone();
    wrapped.replace_range(original, &wrapped_response);

    let result = consume(f, &encode(&wrapped), Some(&pending("_req-x4"))).await;
    assert!(
        matches!(result, Err(SamlError::Wrapped("more than one assertion"))),
        "{result:?}"
    );
}

/// Comment injection (the 2018 NameID truncation): canonicalisation drops comments, so the
/// signature still verifies; the NameID read from the verified bytes is the whole one.
#[tokio::test]
async fn comment_in_name_id_does_not_truncate_it() {
    let f = idp_or_skip!();
    let xml = decode(&f.forge(json!({
        "in_response_to": "_req-c", "name_id": "alice@example.org.evil.test",
    })));
    let injected = xml.replacen(
        "alice@example.org.evil.test</",
        "alice@example.org<!---->.evil.test</",
        1,
    );
    assert_ne!(injected, xml);
    let identity = consume(f, &encode(&injected), Some(&pending("_req-c")))
        .await
        .expect("still validly signed");
    assert_eq!(identity.name_id, "alice@example.org.evil.test");
}

#[tokio::test]
async fn expired_is_refused_and_skew_is_allowed() {
    let f = idp_or_skip!();
    let issued_around = now();
    let response = genuine(f, "_req-e");
    let request = PendingRequest {
        request_id: "_req-e".into(),
        expires_at: issued_around + Duration::hours(1),
    };
    // The IdP's assertions live 5 minutes. Two minutes past that: inside the 3-minute skew.
    let within_skew = issued_around + Duration::minutes(7);
    f.sp.consume(
        &response,
        Some(&request),
        within_skew,
        &MemoryReplayCache::new(),
    )
    .await
    .expect("accepted within the clock skew");
    // Past NotOnOrAfter plus the skew: refused.
    let beyond = issued_around + Duration::minutes(5) + CLOCK_SKEW + Duration::seconds(10);
    let result =
        f.sp.consume(&response, Some(&request), beyond, &MemoryReplayCache::new())
            .await;
    assert!(matches!(result, Err(SamlError::Expired)), "{result:?}");
    // And an IdP clock running ahead: fine within the skew, refused beyond it.
    f.sp.consume(
        &response,
        Some(&request),
        issued_around - Duration::minutes(2),
        &MemoryReplayCache::new(),
    )
    .await
    .expect("IdP two minutes ahead");
    let result =
        f.sp.consume(
            &response,
            Some(&request),
            issued_around - Duration::minutes(4),
            &MemoryReplayCache::new(),
        )
        .await;
    assert!(matches!(result, Err(SamlError::NotYetValid)), "{result:?}");
}

#[tokio::test]
async fn replayed_is_refused_until_it_expires() {
    let f = idp_or_skip!();
    let response = genuine(f, "_req-r");
    let request = pending("_req-r");
    let replay = MemoryReplayCache::new();
    let t = now();
    f.sp.consume(&response, Some(&request), t, &replay)
        .await
        .expect("first use");
    let second = f.sp.consume(&response, Some(&request), t, &replay).await;
    assert!(matches!(second, Err(SamlError::Replayed)), "{second:?}");
    // The entry lives as long as the assertion could be accepted, then goes.
    replay.evict_expired(t + Duration::minutes(4));
    assert_eq!(replay.len(), 1);
    replay.evict_expired(t + Duration::minutes(5) + CLOCK_SKEW + Duration::seconds(2));
    assert_eq!(replay.len(), 0);
    // The cache is keyed by the assertion id, whatever the envelope.
    let verdict = replay
        .record(
            f.sp.idp().entity_id(),
            "some-other-id",
            t + Duration::minutes(1),
            t,
        )
        .await
        .unwrap();
    assert_eq!(verdict, leadmaps_saml::ReplayVerdict::Fresh);
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let f = idp_or_skip!();
    let response = f.forge(json!({
        "in_response_to": "_req-a",
        "audience": "http://127.0.0.1:9/leadmaps/saml/00000000-0000-0000-0000-000000000001/metadata",
    }));
    let result = consume(f, &response, Some(&pending("_req-a"))).await;
    assert!(matches!(result, Err(SamlError::Audience)), "{result:?}");
}

#[tokio::test]
async fn wrong_destination_is_refused() {
    let f = idp_or_skip!();
    let other_acs = "http://127.0.0.1:9/leadmaps/saml/00000000-0000-0000-0000-000000000001/acs";
    // A signed response addressed to another workspace's ACS.
    let response = f.forge(json!({
        "in_response_to": "_req-d", "destination": other_acs,
        "sign_response": true, "sign_assertion": true,
    }));
    let result = consume(f, &response, Some(&pending("_req-d"))).await;
    assert!(matches!(result, Err(SamlError::Destination)), "{result:?}");
}

#[tokio::test]
async fn wrong_recipient_is_refused() {
    let f = idp_or_skip!();
    let other_acs = "http://127.0.0.1:9/leadmaps/saml/00000000-0000-0000-0000-000000000001/acs";
    // The signed assertion names another ACS as Recipient; the attacker fixes the unsigned
    // response's Destination to ours. The assertion's Recipient still gives it away.
    let xml = decode(&f.forge(json!({
        "in_response_to": "_req-rc", "destination": other_acs,
    })));
    let fixed = xml.replacen(
        &format!("Destination=\"{other_acs}\""),
        &format!("Destination=\"{}\"", f.sp.sp().acs_url()),
        1,
    );
    assert_ne!(fixed, xml);
    let result = consume(f, &encode(&fixed), Some(&pending("_req-rc"))).await;
    assert!(matches!(result, Err(SamlError::Recipient)), "{result:?}");
}

#[tokio::test]
async fn in_response_to_must_match_the_pending_request() {
    let f = idp_or_skip!();
    let response = genuine(f, "_req-someone-else");
    let result = consume(f, &response, Some(&pending("_req-mine"))).await;
    assert!(matches!(result, Err(SamlError::InResponseTo)), "{result:?}");

    let expired = PendingRequest {
        request_id: "_req-someone-else".into(),
        expires_at: now() - Duration::seconds(1),
    };
    let result = consume(f, &response, Some(&expired)).await;
    assert!(
        matches!(result, Err(SamlError::RequestExpired)),
        "{result:?}"
    );
}

#[tokio::test]
async fn idp_initiated_is_refused_by_default_and_accepted_when_allowed() {
    let f = idp_or_skip!();
    let unsolicited = f.forge(json!({ "in_response_to": null }));
    assert!(!f.sp.idp_initiated_allowed());
    let result = consume(f, &unsolicited, None).await;
    assert!(matches!(result, Err(SamlError::Unsolicited)), "{result:?}");

    let permissive = f.sp.clone().allow_idp_initiated(true);
    let identity = permissive
        .consume(&unsolicited, None, now(), &MemoryReplayCache::new())
        .await
        .expect("IdP-initiated login when allowed");
    assert_eq!(identity.name_id, "alice@example.org");

    // Even then, a response claiming to answer a request must answer ours.
    let solicited = genuine(f, "_req-not-ours");
    let result = permissive
        .consume(&solicited, None, now(), &MemoryReplayCache::new())
        .await;
    assert!(matches!(result, Err(SamlError::InResponseTo)), "{result:?}");
}

/// `xml` with the first `ID="..."` attribute replaced by `ID="{id}"`.
fn with_new_id(xml: &str, id: &str) -> String {
    let start = xml.find(" ID=\"").expect("ID attribute") + 5;
    let end = start + xml[start..].find('"').unwrap();
    format!("{}{id}{}", &xml[..start], &xml[end..])
}
