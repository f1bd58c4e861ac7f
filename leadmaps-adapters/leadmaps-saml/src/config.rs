//! Per-workspace SP configuration, the IdP's metadata, SP metadata and the AuthnRequest.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use leadmaps_core::tenancy::WorkspaceId;
use samael::crypto::{CertificateDer, decode_x509_cert};
use samael::metadata::{
    EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING, IndexedEndpoint, SpSsoDescriptor,
};
use samael::schema::{AuthnRequest, Issuer};
use samael::traits::ToXml;
use time::{Duration, OffsetDateTime};
use url::Url;

use crate::SamlError;

/// How far the IdP's clock may be from ours: every `NotBefore` is moved this much earlier and
/// every `NotOnOrAfter` this much later.
pub const CLOCK_SKEW: Duration = Duration::minutes(3);

/// How long a login started by [`SamlSp::start_login`] may take before its response is refused
/// with [`SamlError::RequestExpired`].
pub const REQUEST_LIFETIME: Duration = Duration::minutes(10);

/// The longest `RelayState` the SAML bindings allow (SAML 2.0 Bindings, 3.4.3 and 3.5.3).
pub const MAX_RELAY_STATE_BYTES: usize = 80;

/// The name format for an entity's own id in an `Issuer`.
const ENTITY_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";

/// What this SP needs to know about the workspace's identity provider: its entity id, where to
/// send the browser to sign in, and the certificates whose keys sign its assertions.
#[derive(Clone)]
pub struct IdpMetadata {
    pub(crate) entity_id: String,
    pub(crate) sso_url: Url,
    pub(crate) signing_certs: Vec<CertificateDer>,
}

impl IdpMetadata {
    /// Reads the IdP's SAML metadata (an `EntityDescriptor` with one `IDPSSODescriptor`): the
    /// entity id, the HTTP-Redirect `SingleSignOnService` location, and every certificate of a
    /// `KeyDescriptor` with `use="signing"` or no `use`. The metadata's own signature, if any, is
    /// not checked: it is configuration, uploaded or fetched by the workspace's admin.
    ///
    /// # Errors
    ///
    /// [`SamlError::Config`] when the XML does not parse, or the entity id, the redirect SSO
    /// endpoint or a signing certificate is missing or unusable.
    pub fn from_xml(xml: &str) -> Result<Self, SamlError> {
        // Refuse a DTD before the lenient deserializer sees the document.
        roxmltree::Document::parse(xml)
            .map_err(|_| SamlError::Config("IdP metadata is not well-formed XML"))?;
        let descriptor = EntityDescriptor::from_str(xml)
            .map_err(|_| SamlError::Config("IdP metadata is not a SAML EntityDescriptor"))?;
        let entity_id = descriptor
            .entity_id
            .clone()
            .ok_or(SamlError::Config("IdP metadata has no entityID"))?;
        let idps = descriptor.idp_sso_descriptors.unwrap_or_default();
        if idps.len() != 1 {
            return Err(SamlError::Config(
                "IdP metadata must hold exactly one IDPSSODescriptor",
            ));
        }
        let idp = &idps[0];
        let sso = idp
            .single_sign_on_services
            .iter()
            .find(|service| service.binding == HTTP_REDIRECT_BINDING)
            .ok_or(SamlError::Config(
                "IdP metadata has no HTTP-Redirect SingleSignOnService",
            ))?;
        let sso_url = Url::parse(&sso.location)
            .map_err(|_| SamlError::Config("IdP SingleSignOnService location is not a URL"))?;

        let mut certs = Vec::new();
        for key in &idp.key_descriptors {
            let signing = match key.key_use.as_deref() {
                None | Some("") | Some("signing") => true,
                Some(_) => false,
            };
            if !signing {
                continue;
            }
            for cert in key
                .key_info
                .x509_data
                .iter()
                .flat_map(|data| &data.certificates)
            {
                let der = decode_x509_cert(cert)
                    .map_err(|_| SamlError::Config("IdP signing certificate is not base64"))?;
                certs.push(der.der_data().to_vec());
            }
        }
        Self::new(entity_id, sso_url, certs)
    }

    /// An IdP configured by hand: entity id, HTTP-Redirect SSO URL and DER certificates.
    ///
    /// # Errors
    ///
    /// [`SamlError::Config`] for an empty entity id, an SSO URL that is neither `https` nor
    /// `http` on a loopback address, no certificate, or a certificate that does not parse.
    pub fn new(
        entity_id: impl Into<String>,
        sso_url: Url,
        signing_certs_der: Vec<Vec<u8>>,
    ) -> Result<Self, SamlError> {
        let entity_id = entity_id.into();
        if entity_id.trim().is_empty() {
            return Err(SamlError::Config("IdP entity id is empty"));
        }
        check_web_url(
            &sso_url,
            "IdP SSO URL must be https (http only on loopback)",
        )?;
        if signing_certs_der.is_empty() {
            return Err(SamlError::Config("IdP metadata has no signing certificate"));
        }
        for der in &signing_certs_der {
            openssl::x509::X509::from_der(der)
                .map_err(|_| SamlError::Config("IdP signing certificate does not parse"))?;
        }
        Ok(Self {
            entity_id,
            sso_url,
            signing_certs: signing_certs_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
        })
    }

    /// The IdP's entity id: the only `Issuer` accepted.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// Where [`SamlSp::start_login`] sends the browser (HTTP-Redirect binding).
    pub fn sso_url(&self) -> &Url {
        &self.sso_url
    }

    /// The DER certificates whose keys may sign assertions.
    pub fn signing_certificates(&self) -> impl Iterator<Item = &[u8]> {
        self.signing_certs.iter().map(CertificateDer::der_data)
    }
}

impl fmt::Debug for IdpMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpMetadata")
            .field("entity_id", &self.entity_id)
            .field("sso_url", &self.sso_url.as_str())
            .field("signing_certs", &self.signing_certs.len())
            .finish()
    }
}

/// A workspace's service-provider identity: its entity id and ACS URL, derived from the
/// service's public base URL and the workspace id. It exists before any IdP is configured, so
/// the workspace's admin can hand [`metadata_xml`](Self::metadata_xml) to their IdP first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpEntity {
    pub(crate) workspace: WorkspaceId,
    pub(crate) entity_id: String,
    pub(crate) acs_url: String,
}

impl SpEntity {
    /// The SP of `workspace` under the service's public `base_url` (for example
    /// `https://app.example.com`, or with a path prefix). Its entity id is
    /// `{base_url}/saml/{workspace}/metadata` (where its metadata is served) and its ACS URL
    /// `{base_url}/saml/{workspace}/acs`.
    ///
    /// # Errors
    ///
    /// [`SamlError::Config`] when `base_url` is not `https` (plain `http` is allowed for a
    /// loopback host, for tests), or has credentials, a query or a fragment.
    pub fn new(base_url: &Url, workspace: WorkspaceId) -> Result<Self, SamlError> {
        check_web_url(base_url, "base URL must be https (http only on loopback)")?;
        if !base_url.username().is_empty()
            || base_url.password().is_some()
            || base_url.query().is_some()
            || base_url.fragment().is_some()
        {
            return Err(SamlError::Config(
                "base URL must not carry credentials, a query or a fragment",
            ));
        }
        let base = base_url.as_str().trim_end_matches('/');
        Ok(Self {
            workspace,
            entity_id: format!("{base}/saml/{workspace}/metadata"),
            acs_url: format!("{base}/saml/{workspace}/acs"),
        })
    }

    /// The workspace this SP belongs to.
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// The SP entity id (also the URL of its metadata); assertions must name it as audience.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The assertion consumer service URL (HTTP-POST binding): responses must name it as
    /// `Destination` and `Recipient`.
    pub fn acs_url(&self) -> &str {
        &self.acs_url
    }

    /// This SP's metadata, to give to the IdP: entity id, the HTTP-POST ACS URL,
    /// `WantAssertionsSigned="true"`, `AuthnRequestsSigned="false"`. It carries no
    /// `validUntil` (nothing in it expires) and no key: this SP neither signs requests nor
    /// accepts encrypted assertions.
    ///
    /// # Errors
    ///
    /// [`SamlError::Config`] if serialising fails (it does not for URLs this type accepts).
    pub fn metadata_xml(&self) -> Result<String, SamlError> {
        let descriptor = EntityDescriptor {
            entity_id: Some(self.entity_id.clone()),
            sp_sso_descriptors: Some(vec![SpSsoDescriptor {
                protocol_support_enumeration: Some(
                    "urn:oasis:names:tc:SAML:2.0:protocol".to_owned(),
                ),
                authn_requests_signed: Some(false),
                want_assertions_signed: Some(true),
                assertion_consumer_services: vec![IndexedEndpoint {
                    binding: HTTP_POST_BINDING.to_owned(),
                    location: self.acs_url.clone(),
                    index: 0,
                    is_default: Some(true),
                    ..IndexedEndpoint::default()
                }],
                ..SpSsoDescriptor::default()
            }]),
            ..EntityDescriptor::default()
        };
        descriptor
            .to_string()
            .map_err(|_| SamlError::Config("SP metadata did not serialise"))
    }
}

/// A workspace's SAML service provider: its [`SpEntity`] (entity id and ACS URL), the
/// workspace's IdP, and whether IdP-initiated login is allowed (off by default).
#[derive(Clone)]
pub struct SamlSp {
    pub(crate) sp: SpEntity,
    pub(crate) idp: IdpMetadata,
    pub(crate) allow_idp_initiated: bool,
}

impl SamlSp {
    /// The service provider `sp`, trusting `idp`; IdP-initiated login refused.
    pub fn new(sp: SpEntity, idp: IdpMetadata) -> Self {
        Self {
            sp,
            idp,
            allow_idp_initiated: false,
        }
    }

    /// Allows (or, the default, refuses) IdP-initiated login: a response that answers no
    /// request of ours. Unsolicited responses cannot be bound to the browser that receives
    /// them (login CSRF), so leave this off unless the workspace needs its IdP's app tiles.
    pub fn allow_idp_initiated(mut self, allow: bool) -> Self {
        self.allow_idp_initiated = allow;
        self
    }

    /// Whether IdP-initiated login is allowed.
    pub fn idp_initiated_allowed(&self) -> bool {
        self.allow_idp_initiated
    }

    /// The SP's identity: workspace, entity id, ACS URL and metadata.
    pub fn sp(&self) -> &SpEntity {
        &self.sp
    }

    /// The workspace's IdP.
    pub fn idp(&self) -> &IdpMetadata {
        &self.idp
    }

    /// Shorthand for `self.sp().metadata_xml()`.
    ///
    /// # Errors
    ///
    /// As [`SpEntity::metadata_xml`].
    pub fn metadata_xml(&self) -> Result<String, SamlError> {
        self.sp.metadata_xml()
    }

    /// Starts an SP-initiated login at `now`: a fresh `AuthnRequest` (128-bit random id) for the
    /// HTTP-Redirect binding. Send the browser to [`LoginRequest::redirect_url`] and keep
    /// [`LoginRequest::pending`] where only this browser's next request can find it (a signed
    /// cookie or the session), then pass it to [`consume`](Self::consume).
    ///
    /// `relay_state` goes to the IdP and comes back with the response, untouched; it must not be
    /// trusted (it is not signed) and is limited to [`MAX_RELAY_STATE_BYTES`].
    ///
    /// # Errors
    ///
    /// [`SamlError::Config`] for a relay state longer than the bindings allow, or if the request
    /// does not serialise.
    pub fn start_login(
        &self,
        relay_state: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<LoginRequest, SamlError> {
        let relay_state = relay_state.unwrap_or("");
        if relay_state.len() > MAX_RELAY_STATE_BYTES {
            return Err(SamlError::Config("relay state is longer than 80 bytes"));
        }
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .expect("the operating system's random number generator failed");
        let request_id = format!("_{}", hex(&random));
        let issue_instant = chrono::DateTime::from_timestamp(now.unix_timestamp(), 0)
            .ok_or(SamlError::Config("clock out of range"))?;
        let request = AuthnRequest {
            id: request_id.clone(),
            version: "2.0".to_owned(),
            issue_instant,
            destination: Some(self.idp.sso_url.to_string()),
            issuer: Some(Issuer {
                format: Some(ENTITY_FORMAT.to_owned()),
                value: Some(self.sp.entity_id.clone()),
                ..Issuer::default()
            }),
            assertion_consumer_service_url: Some(self.sp.acs_url.clone()),
            protocol_binding: Some(HTTP_POST_BINDING.to_owned()),
            ..AuthnRequest::default()
        };
        let redirect_url = request
            .redirect(relay_state)
            .ok()
            .flatten()
            .ok_or(SamlError::Config("AuthnRequest did not serialise"))?;
        Ok(LoginRequest {
            redirect_url,
            pending: PendingRequest {
                request_id,
                expires_at: now + REQUEST_LIFETIME,
            },
        })
    }
}

impl fmt::Debug for SamlSp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlSp")
            .field("sp", &self.sp)
            .field("idp", &self.idp)
            .field("allow_idp_initiated", &self.allow_idp_initiated)
            .finish()
    }
}

/// A started login: where to send the browser, and what to keep until the response comes.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// The IdP's SSO URL with `SAMLRequest` (deflated, base64) and `RelayState`.
    pub redirect_url: Url,
    /// What [`SamlSp::consume`] checks the response against.
    pub pending: PendingRequest,
}

/// The request a response must answer: its id (for `InResponseTo`) and when it stops being
/// answerable. Store both fields, bound to the browser that started the login, and rebuild it
/// with a struct literal when the response arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// The `ID` of the `AuthnRequest`; not a secret, but unguessable (128 random bits).
    pub request_id: String,
    /// After this instant the response is refused with [`SamlError::RequestExpired`].
    pub expires_at: OffsetDateTime,
}

/// `https`, or `http` to a loopback host (tests, local development).
fn check_web_url(url: &Url, why: &'static str) -> Result<(), SamlError> {
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err(SamlError::Config(why)),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}
