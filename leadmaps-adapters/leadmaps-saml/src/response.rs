//! Consuming a SAML `Response` (HTTP-POST binding) into a verified [`SamlIdentity`].
//!
//! How signature wrapping (XSW) is kept out is described in the crate documentation
//! (README.md, "Signature wrapping"); [`Shape`] is step 1 and `SamlSp::verify` steps 2 and 3.

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use roxmltree::{Document, Node};
use samael::crypto::{AllowedSignatureAlgorithm, CryptoProvider, ReduceMode, XmlSec};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::SamlError;
use crate::config::{CLOCK_SKEW, PendingRequest, SamlSp};
use crate::replay::{ReplayCache, ReplayVerdict};
use leadmaps_core::tenancy::WorkspaceId;

const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// The largest decoded response accepted.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// The longest assertion id accepted (it becomes a replay-cache key).
const MAX_ID_LEN: usize = 256;

/// Signature algorithms allowed (SHA-1 and MD5 are not).
const ALLOWED_ALGORITHMS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Canonicalisation methods and transforms allowed in a signature: enveloped-signature and the
/// comment-less canonicalisations. XPath and XSLT transforms (attack surface), and the
/// `WithComments` variants, are refused.
const ALLOWED_TRANSFORMS: &[&str] = &[
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
];

/// Attribute names (or friendly names) whose first value is taken as the e-mail address.
const EMAIL_ATTRIBUTES: &[&str] = &[
    "urn:oid:0.9.2342.19200300.100.1.3",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "mail",
    "email",
    "emailaddress",
    "emailAddress",
];

/// Who the workspace's IdP says signed in, after every check passed.
///
/// `Debug` prints no personal data (the NameID, e-mail and attribute values are redacted).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SamlIdentity {
    /// The workspace whose SP accepted the assertion.
    pub workspace: WorkspaceId,
    /// The IdP's entity id.
    pub issuer: String,
    /// The subject's `NameID`, as the IdP sent it (compare it with its `name_id_format` in mind).
    pub name_id: String,
    /// The `NameID`'s `Format`, if given.
    pub name_id_format: Option<String>,
    /// The e-mail address: the first value of a `mail`/`email` attribute (by name or friendly
    /// name, including `urn:oid:0.9.2342.19200300.100.1.3`), or else the `NameID` when its format
    /// is `emailAddress`. As asserted by the workspace's IdP, not verified by us.
    pub email: Option<String>,
    /// The `SessionIndex` of the `AuthnStatement`, for single logout.
    pub session_index: Option<String>,
    /// Until when the IdP allows the session (`SessionNotOnOrAfter`); the caller's session
    /// should end no later.
    pub session_not_on_or_after: Option<OffsetDateTime>,
    /// When the user authenticated at the IdP (`AuthnInstant`).
    pub authn_instant: Option<OffsetDateTime>,
    /// The assertion's `ID`, as recorded in the replay cache.
    pub assertion_id: String,
    /// Every attribute of the assertion's `AttributeStatement`s.
    pub attributes: Vec<SamlAttribute>,
}

impl fmt::Debug for SamlIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlIdentity")
            .field("workspace", &self.workspace)
            .field("issuer", &self.issuer)
            .field("name_id", &"<redacted>")
            .field("name_id_format", &self.name_id_format)
            .field("email", &self.email.as_ref().map(|_| "<redacted>"))
            .field("session_not_on_or_after", &self.session_not_on_or_after)
            .field("authn_instant", &self.authn_instant)
            .field("assertion_id", &self.assertion_id)
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

/// One `saml:Attribute` of the assertion.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SamlAttribute {
    /// `Name`.
    pub name: String,
    /// `FriendlyName`, if given.
    pub friendly_name: Option<String>,
    /// The text of each `AttributeValue`.
    pub values: Vec<String>,
}

impl fmt::Debug for SamlAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlAttribute")
            .field("name", &self.name)
            .field("friendly_name", &self.friendly_name)
            .field("values", &self.values.len())
            .finish()
    }
}

impl SamlSp {
    /// Verifies a `SAMLResponse` form value (base64, as posted to the ACS URL) at `now` and
    /// records its assertion in `replay`.
    ///
    /// `pending` is the request this login started with ([`SamlSp::start_login`]); `None` means
    /// an IdP-initiated login, refused unless [`SamlSp::allow_idp_initiated`] was set.
    ///
    /// Accepted only if all of these hold (see *Signature wrapping* in the
    /// [crate documentation](crate) for the signature checks): the assertion is signed (itself, or by the response around it) by a key of the
    /// IdP's metadata; the status is `Success`; the response's and the assertion's `Issuer` are
    /// the IdP; the `Destination` (if the response is signed: required) and a bearer
    /// confirmation's `Recipient` are this ACS URL; an `AudienceRestriction` is present and every
    /// one names this SP; `NotBefore` / `NotOnOrAfter` of the conditions, the bearer
    /// confirmation (whose `NotOnOrAfter` is required) and `SessionNotOnOrAfter` hold at `now`
    /// give or take [`CLOCK_SKEW`]; `InResponseTo` is the pending request's id (or absent when
    /// IdP-initiated login is allowed and there is no pending request); and the assertion id was
    /// not used before. The id stays in `replay` until the assertion expires.
    ///
    /// # Errors
    ///
    /// The [`SamlError`] of the first check that failed.
    pub async fn consume(
        &self,
        saml_response: &str,
        pending: Option<&PendingRequest>,
        now: OffsetDateTime,
        replay: &dyn ReplayCache,
    ) -> Result<SamlIdentity, SamlError> {
        let verified = self.verify(saml_response, pending, now)?;
        match replay
            .record(
                &self.idp.entity_id,
                &verified.identity.assertion_id,
                verified.replay_until,
                now,
            )
            .await?
        {
            ReplayVerdict::Fresh => Ok(verified.identity),
            ReplayVerdict::Replayed => Err(SamlError::Replayed),
        }
    }

    /// Every check of [`consume`](Self::consume) but the replay cache.
    fn verify(
        &self,
        saml_response: &str,
        pending: Option<&PendingRequest>,
        now: OffsetDateTime,
    ) -> Result<Verified, SamlError> {
        match pending {
            Some(pending) if now >= pending.expires_at => return Err(SamlError::RequestExpired),
            Some(_) => {}
            None if !self.allow_idp_initiated => return Err(SamlError::Unsolicited),
            None => {}
        }
        let expected_request = pending.map(|p| p.request_id.as_str());

        let xml = decode(saml_response)?;
        let raw = Document::parse(&xml).map_err(|_| SamlError::Malformed("not well-formed XML"))?;
        let shape = Shape::of(&raw)?;

        // xmlsec, through samael: every signature must verify with the IdP's keys, and what
        // comes back is the canonical content the (outermost) verified reference digested.
        let verified_xml = XmlSec::reduce_xml_to_signed_with_allowed_algorithms(
            &xml,
            &self.idp.signing_certs,
            ReduceMode::PreDigest,
            Some(ALLOWED_ALGORITHMS),
        )
        .map_err(|_| SamlError::BadSignature)?;
        let signed = Document::parse(&verified_xml)
            .map_err(|_| SamlError::Wrapped("verified content does not parse"))?;
        let signed_root = signed.root_element();

        // Which element did the signature cover? It must be the one the shape check found, and
        // the assertion read must be the document's only assertion.
        let (envelope, assertion) = if is(signed_root, NS_PROTOCOL, "Response") {
            if !shape.response_signed || signed_root.attribute("ID") != Some(shape.response_id) {
                return Err(SamlError::Wrapped(
                    "verified response is not the document's",
                ));
            }
            let assertion = only_child(signed_root, NS_ASSERTION, "Assertion")
                .ok_or(SamlError::Wrapped("verified response lacks its assertion"))?;
            (Envelope::read(signed_root, true)?, assertion)
        } else if is(signed_root, NS_ASSERTION, "Assertion") {
            if !shape.assertion_signed || shape.response_signed {
                return Err(SamlError::Wrapped(
                    "verified assertion is not the signed one",
                ));
            }
            // The unsigned envelope is read from the raw document, only to refuse.
            (Envelope::read(raw.root_element(), false)?, signed_root)
        } else {
            return Err(SamlError::Wrapped(
                "verified element is not a response or assertion",
            ));
        };
        if assertion.attribute("ID") != Some(shape.assertion_id) {
            return Err(SamlError::Wrapped(
                "verified assertion is not the document's",
            ));
        }
        let assertion_nodes = signed
            .descendants()
            .filter(|n| is(*n, NS_ASSERTION, "Assertion"))
            .count();
        if assertion_nodes != 1 {
            return Err(SamlError::Wrapped("more than one assertion is signed"));
        }

        self.check_envelope(&envelope, expected_request)?;
        self.check_assertion(assertion, expected_request, now)
    }

    fn check_envelope(
        &self,
        envelope: &Envelope<'_>,
        expected_request: Option<&str>,
    ) -> Result<(), SamlError> {
        if envelope.status.as_deref() != Some(STATUS_SUCCESS) {
            return Err(SamlError::IdpStatus);
        }
        if envelope
            .issuer
            .as_ref()
            .is_some_and(|issuer| *issuer != self.idp.entity_id)
        {
            return Err(SamlError::Issuer);
        }
        match envelope.destination {
            Some(destination) if destination != self.sp.acs_url => {
                return Err(SamlError::Destination);
            }
            // SAML Bindings 3.5.5.2: a signed response must say where it is going.
            None if envelope.signed => return Err(SamlError::Destination),
            _ => {}
        }
        if envelope.in_response_to.is_some() && envelope.in_response_to != expected_request {
            return Err(SamlError::InResponseTo);
        }
        Ok(())
    }

    fn check_assertion(
        &self,
        assertion: Node<'_, '_>,
        expected_request: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Verified, SamlError> {
        if assertion.attribute("Version") != Some("2.0") {
            return Err(SamlError::Malformed("assertion version is not 2.0"));
        }
        let assertion_id = assertion
            .attribute("ID")
            .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
            .ok_or(SamlError::Malformed("assertion ID missing or too long"))?;
        let issuer = only_child(assertion, NS_ASSERTION, "Issuer")
            .ok_or(SamlError::Malformed("assertion has no Issuer"))
            .and_then(text)?;
        if issuer != self.idp.entity_id {
            return Err(SamlError::Issuer);
        }
        let issued = instant(
            assertion.attribute("IssueInstant"),
            "assertion IssueInstant missing or invalid",
        )?;
        if issued > now + CLOCK_SKEW {
            return Err(SamlError::NotYetValid);
        }

        // Conditions: time window and audience.
        let conditions =
            only_child(assertion, NS_ASSERTION, "Conditions").ok_or(SamlError::Audience)?;
        let conditions_end = optional_instant(conditions.attribute("NotOnOrAfter"))?;
        check_window(
            optional_instant(conditions.attribute("NotBefore"))?,
            conditions_end,
            now,
        )?;
        let mut restrictions = 0;
        for condition in conditions.children().filter(Node::is_element) {
            if is(condition, NS_ASSERTION, "AudienceRestriction") {
                restrictions += 1;
                let ours = condition
                    .children()
                    .filter(|n| is(*n, NS_ASSERTION, "Audience"))
                    .any(|audience| text(audience).is_ok_and(|a| a == self.sp.entity_id));
                if !ours {
                    return Err(SamlError::Audience);
                }
            } else if !(is(condition, NS_ASSERTION, "OneTimeUse")
                || is(condition, NS_ASSERTION, "ProxyRestriction"))
            {
                // SAML Core 2.5.1.1: an unknown condition makes the assertion indeterminate.
                return Err(SamlError::Malformed("assertion has an unknown condition"));
            }
        }
        if restrictions == 0 {
            return Err(SamlError::Audience);
        }

        // Subject: the NameID and a bearer confirmation for this ACS and this request.
        let subject = only_child(assertion, NS_ASSERTION, "Subject")
            .ok_or(SamlError::Malformed("assertion has no Subject"))?;
        let name_id_node = only_child(subject, NS_ASSERTION, "NameID")
            .ok_or(SamlError::Malformed("subject has no NameID"))?;
        let name_id = text(name_id_node)?;
        if name_id.is_empty() {
            return Err(SamlError::Malformed("subject NameID is empty"));
        }
        let name_id_format = name_id_node.attribute("Format").map(str::to_owned);
        let bearer_until = self.check_bearer(subject, expected_request, now)?;

        // AuthnStatement: session bounds.
        let authn = assertion
            .children()
            .find(|n| is(*n, NS_ASSERTION, "AuthnStatement"))
            .ok_or(SamlError::Malformed("assertion has no AuthnStatement"))?;
        let session_not_on_or_after = optional_instant(authn.attribute("SessionNotOnOrAfter"))?;
        if session_not_on_or_after.is_some_and(|end| now - CLOCK_SKEW >= end) {
            return Err(SamlError::Expired);
        }
        let authn_instant = optional_instant(authn.attribute("AuthnInstant"))?;
        let session_index = authn.attribute("SessionIndex").map(str::to_owned);

        let attributes = attributes(assertion)?;
        let email = attributes
            .iter()
            .find(|a| {
                EMAIL_ATTRIBUTES.contains(&a.name.as_str())
                    || a.friendly_name
                        .as_deref()
                        .is_some_and(|f| EMAIL_ATTRIBUTES.contains(&f))
            })
            .and_then(|a| a.values.first().cloned())
            .or_else(|| (name_id_format.as_deref() == Some(NAMEID_EMAIL)).then(|| name_id.clone()));

        // Remembered until it would be refused as expired anyway.
        let until = match conditions_end {
            Some(end) => end.min(bearer_until),
            None => bearer_until,
        };
        Ok(Verified {
            identity: SamlIdentity {
                workspace: self.sp.workspace,
                issuer,
                name_id,
                name_id_format,
                email,
                session_index,
                session_not_on_or_after,
                authn_instant,
                assertion_id: assertion_id.to_owned(),
                attributes,
            },
            replay_until: until + CLOCK_SKEW,
        })
    }

    /// Finds a bearer `SubjectConfirmation` that passes; returns its `NotOnOrAfter`. When none
    /// passes, the error is that of the first bearer confirmation.
    fn check_bearer(
        &self,
        subject: Node<'_, '_>,
        expected_request: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, SamlError> {
        let mut first_error = None;
        let bearers = subject.children().filter(|n| {
            is(*n, NS_ASSERTION, "SubjectConfirmation") && n.attribute("Method") == Some(BEARER)
        });
        for bearer in bearers {
            match self.check_one_bearer(bearer, expected_request, now) {
                Ok(until) => return Ok(until),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(SamlError::NoBearer))
    }

    fn check_one_bearer(
        &self,
        bearer: Node<'_, '_>,
        expected_request: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, SamlError> {
        let data = only_child(bearer, NS_ASSERTION, "SubjectConfirmationData")
            .ok_or(SamlError::NoBearer)?;
        if data.attribute("Recipient") != Some(self.sp.acs_url.as_str()) {
            return Err(SamlError::Recipient);
        }
        let until = instant(
            data.attribute("NotOnOrAfter"),
            "bearer confirmation NotOnOrAfter missing or invalid",
        )?;
        check_window(
            optional_instant(data.attribute("NotBefore"))?,
            Some(until),
            now,
        )?;
        if data.attribute("InResponseTo") != expected_request {
            return Err(SamlError::InResponseTo);
        }
        Ok(until)
    }
}

/// The outcome of every check but the replay cache.
struct Verified {
    identity: SamlIdentity,
    replay_until: OffsetDateTime,
}

/// Where the signatures of the raw document sit: the result of the shape check.
struct Shape<'a> {
    response_id: &'a str,
    assertion_id: &'a str,
    response_signed: bool,
    assertion_signed: bool,
}

impl<'a> Shape<'a> {
    fn of(doc: &'a Document<'a>) -> Result<Self, SamlError> {
        let root = doc.root_element();
        if !is(root, NS_PROTOCOL, "Response") {
            return Err(SamlError::Malformed("not a SAML Response"));
        }
        let mut ids = HashSet::new();
        let mut assertions = Vec::new();
        let mut signatures = Vec::new();
        for node in doc.descendants().filter(Node::is_element) {
            if let Some(id) = node.attribute("ID")
                && !ids.insert(id)
            {
                return Err(SamlError::Wrapped("duplicate ID"));
            }
            if is(node, NS_ASSERTION, "EncryptedAssertion") {
                return Err(SamlError::EncryptedAssertion);
            }
            if is(node, NS_ASSERTION, "Assertion") {
                assertions.push(node);
            }
            if is(node, NS_DSIG, "Signature") {
                signatures.push(node);
            }
        }
        let assertion = match assertions.as_slice() {
            [] => return Err(SamlError::Malformed("response has no assertion")),
            [one] => *one,
            _ => return Err(SamlError::Wrapped("more than one assertion")),
        };
        if assertion.parent_element() != Some(root) {
            return Err(SamlError::Wrapped(
                "assertion is not a child of the response",
            ));
        }
        if signatures.is_empty() {
            return Err(SamlError::Unsigned);
        }
        let response_id = root
            .attribute("ID")
            .ok_or(SamlError::Malformed("response has no ID"))?;
        let assertion_id = assertion
            .attribute("ID")
            .ok_or(SamlError::Malformed("assertion has no ID"))?;

        let mut response_signed = false;
        let mut assertion_signed = false;
        for signature in signatures {
            let parent = signature.parent_element();
            let (signed, id) = if parent == Some(root) {
                (&mut response_signed, response_id)
            } else if parent == Some(assertion) {
                (&mut assertion_signed, assertion_id)
            } else {
                return Err(SamlError::Wrapped("signature in an unexpected place"));
            };
            if *signed {
                return Err(SamlError::Wrapped("two signatures on one element"));
            }
            check_signature_shape(signature, id)?;
            *signed = true;
        }
        Ok(Self {
            response_id,
            assertion_id,
            response_signed,
            assertion_signed,
        })
    }
}

/// One `SignedInfo` with one `Reference` to `#{parent_id}`, and only allowed transforms.
fn check_signature_shape(signature: Node<'_, '_>, parent_id: &str) -> Result<(), SamlError> {
    let signed_info = only_child(signature, NS_DSIG, "SignedInfo").ok_or(SamlError::Wrapped(
        "signature without exactly one SignedInfo",
    ))?;
    let reference = only_child(signed_info, NS_DSIG, "Reference").ok_or(SamlError::Wrapped(
        "signature without exactly one Reference",
    ))?;
    let uri = reference.attribute("URI").unwrap_or("");
    if uri.strip_prefix('#') != Some(parent_id) {
        return Err(SamlError::Wrapped(
            "signature does not reference the element it is in",
        ));
    }
    let c14n = only_child(signed_info, NS_DSIG, "CanonicalizationMethod")
        .and_then(|m| m.attribute("Algorithm"));
    if !c14n.is_some_and(|a| ALLOWED_TRANSFORMS.contains(&a)) {
        return Err(SamlError::BadSignature);
    }
    let transforms = reference
        .children()
        .filter(|n| is(*n, NS_DSIG, "Transforms"))
        .flat_map(|t| t.children().filter(Node::is_element));
    for transform in transforms {
        let allowed = is(transform, NS_DSIG, "Transform")
            && transform
                .attribute("Algorithm")
                .is_some_and(|a| ALLOWED_TRANSFORMS.contains(&a))
            && !transform.children().any(|n| n.is_element());
        if !allowed {
            return Err(SamlError::BadSignature);
        }
    }
    Ok(())
}

/// The `Response` element's own fields.
struct Envelope<'a> {
    signed: bool,
    status: Option<String>,
    issuer: Option<String>,
    destination: Option<&'a str>,
    in_response_to: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    fn read(response: Node<'a, '_>, signed: bool) -> Result<Self, SamlError> {
        let status = only_child(response, NS_PROTOCOL, "Status")
            .and_then(|s| only_child(s, NS_PROTOCOL, "StatusCode"))
            .and_then(|code| code.attribute("Value"))
            .map(str::to_owned);
        let issuer = match only_child(response, NS_ASSERTION, "Issuer") {
            Some(issuer) => Some(text(issuer)?),
            None => None,
        };
        Ok(Self {
            signed,
            status,
            issuer,
            destination: response.attribute("Destination"),
            in_response_to: response.attribute("InResponseTo"),
        })
    }
}

/// The base64 form value, decoded to UTF-8 text (line breaks and spaces in it are ignored).
fn decode(saml_response: &str) -> Result<String, SamlError> {
    // A cheap bound before decoding (base64 is 4/3 of the bytes, plus any line breaks).
    if saml_response.len() > MAX_RESPONSE_BYTES * 2 {
        return Err(SamlError::Malformed("response too large"));
    }
    let compact: Vec<u8> = saml_response
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(compact)
        .map_err(|_| SamlError::Malformed("not base64"))?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(SamlError::Malformed("response too large"));
    }
    String::from_utf8(bytes).map_err(|_| SamlError::Malformed("not UTF-8"))
}

fn is(node: Node<'_, '_>, namespace: &str, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && node.tag_name().namespace() == Some(namespace)
}

/// The one child element `namespace:name`; `None` when there is none or more than one.
fn only_child<'a, 'input>(
    parent: Node<'a, 'input>,
    namespace: &str,
    name: &str,
) -> Option<Node<'a, 'input>> {
    let mut matching = parent.children().filter(|n| is(*n, namespace, name));
    let first = matching.next()?;
    matching.next().is_none().then_some(first)
}

/// An element's text, which must not contain elements.
fn text(node: Node<'_, '_>) -> Result<String, SamlError> {
    let mut out = String::new();
    for child in node.children() {
        if child.is_element() {
            return Err(SamlError::Malformed("unexpected element in a text value"));
        }
        if let Some(t) = child.text() {
            out.push_str(t);
        }
    }
    Ok(out.trim().to_owned())
}

fn instant(value: Option<&str>, missing: &'static str) -> Result<OffsetDateTime, SamlError> {
    value
        .and_then(|v| OffsetDateTime::parse(v.trim(), &Rfc3339).ok())
        .ok_or(SamlError::Malformed(missing))
}

fn optional_instant(value: Option<&str>) -> Result<Option<OffsetDateTime>, SamlError> {
    value
        .map(|v| {
            OffsetDateTime::parse(v.trim(), &Rfc3339)
                .map_err(|_| SamlError::Malformed("invalid timestamp"))
        })
        .transpose()
}

/// `NotBefore <= now + skew` and `now - skew < NotOnOrAfter`.
fn check_window(
    not_before: Option<OffsetDateTime>,
    not_on_or_after: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), SamlError> {
    if not_before.is_some_and(|start| now + CLOCK_SKEW < start) {
        return Err(SamlError::NotYetValid);
    }
    if not_on_or_after.is_some_and(|end| now - CLOCK_SKEW >= end) {
        return Err(SamlError::Expired);
    }
    Ok(())
}

fn attributes(assertion: Node<'_, '_>) -> Result<Vec<SamlAttribute>, SamlError> {
    let mut out = Vec::new();
    let statements = assertion
        .children()
        .filter(|n| is(*n, NS_ASSERTION, "AttributeStatement"));
    for attribute in
        statements.flat_map(|s| s.children().filter(|n| is(*n, NS_ASSERTION, "Attribute")))
    {
        let Some(name) = attribute.attribute("Name") else {
            return Err(SamlError::Malformed("attribute without Name"));
        };
        let mut values = Vec::new();
        for value in attribute
            .children()
            .filter(|n| is(*n, NS_ASSERTION, "AttributeValue"))
        {
            // Structured values (elements inside) are skipped rather than flattened.
            if let Ok(v) = text(value) {
                values.push(v);
            }
        }
        out.push(SamlAttribute {
            name: name.to_owned(),
            friendly_name: attribute.attribute("FriendlyName").map(str::to_owned),
            values,
        });
    }
    Ok(out)
}
