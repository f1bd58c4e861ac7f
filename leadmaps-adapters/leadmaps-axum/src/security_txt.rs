//! `/.well-known/security.txt` (RFC 9116): where to report a vulnerability, from configuration.
//!
//! The file carries `Contact` (one line per address, required), `Expires` (required: computed
//! from the injected clock on every request, at most [`MAX_EXPIRY`] ahead, RFC 3339), and, when
//! configured, `Policy`, `Preferred-Languages` and `Canonical`. Without a contact the route
//! answers 404 and logs once per request that it is not configured: an invalid file is worse than
//! none, since RFC 9116 tells readers to distrust one.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use leadmaps_core::clock::Clock;
use time::Duration;
use time::format_description::well_known::Rfc3339;

/// The longest `Expires` horizon RFC 9116 recommends: less than a year.
pub const MAX_EXPIRY: Duration = Duration::days(364);

/// What security.txt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityTxt {
    /// `Contact` URIs (`mailto:`, `https:` or `tel:`), in order of preference.
    pub contact: Vec<String>,
    /// How far ahead `Expires` lies; capped at [`MAX_EXPIRY`].
    pub expires_in: Duration,
    /// The disclosure policy's address (`Policy`).
    pub policy: Option<String>,
    /// Language tags (`Preferred-Languages`), e.g. `en, nl`.
    pub preferred_languages: Vec<String>,
    /// The file's own canonical address (`Canonical`), e.g.
    /// `https://app.example/.well-known/security.txt`.
    pub canonical: Option<String>,
}

impl Default for SecurityTxt {
    fn default() -> Self {
        Self {
            contact: Vec::new(),
            expires_in: Duration::days(180),
            policy: None,
            preferred_languages: vec!["en".into()],
            canonical: None,
        }
    }
}

fn one_line_uri(value: &str, schemes: &[&str]) -> bool {
    !value.chars().any(|c| c.is_control() || c.is_whitespace())
        && schemes.iter().any(|s| value.starts_with(s))
}

impl SecurityTxt {
    /// Checks the configuration: at least one contact, every contact and address a one-line
    /// URI of an allowed scheme (`https:` for `Policy` and `Canonical`), language tags of
    /// letters, digits and `-`.
    ///
    /// # Errors
    /// [`leadmaps_core::Error::Invalid`] naming the field (never echoing it).
    pub fn validate(&self) -> leadmaps_core::Result<()> {
        let invalid = leadmaps_core::Error::invalid;
        if self.contact.is_empty() {
            return Err(invalid("security.txt needs a Contact"));
        }
        if !self
            .contact
            .iter()
            .all(|c| one_line_uri(c, &["mailto:", "https://", "tel:"]))
        {
            return Err(invalid(
                "a security.txt Contact is a mailto:, https:// or tel: URI",
            ));
        }
        for uri in self.policy.iter().chain(&self.canonical) {
            if !one_line_uri(uri, &["https://"]) {
                return Err(invalid(
                    "security.txt Policy and Canonical are https:// URIs",
                ));
            }
        }
        if !self.preferred_languages.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 35
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }) {
            return Err(invalid("security.txt languages are language tags"));
        }
        if self.expires_in <= Duration::ZERO {
            return Err(invalid("security.txt must expire in the future"));
        }
        Ok(())
    }

    /// The file at `now`.
    ///
    /// # Errors
    /// As [`SecurityTxt::validate`].
    pub fn render(&self, now: time::OffsetDateTime) -> leadmaps_core::Result<String> {
        self.validate()?;
        let expires = (now + self.expires_in.min(MAX_EXPIRY))
            .replace_nanosecond(0)
            .unwrap_or(now);
        let mut out = String::new();
        for contact in &self.contact {
            out.push_str(&format!("Contact: {contact}\n"));
        }
        out.push_str(&format!(
            "Expires: {}\n",
            expires.format(&Rfc3339).unwrap_or_default()
        ));
        if let Some(policy) = &self.policy {
            out.push_str(&format!("Policy: {policy}\n"));
        }
        if !self.preferred_languages.is_empty() {
            out.push_str(&format!(
                "Preferred-Languages: {}\n",
                self.preferred_languages.join(", ")
            ));
        }
        if let Some(canonical) = &self.canonical {
            out.push_str(&format!("Canonical: {canonical}\n"));
        }
        Ok(out)
    }
}

struct Ctx {
    config: SecurityTxt,
    clock: Arc<dyn Clock>,
}

/// The `/.well-known/security.txt` route.
pub fn security_txt_routes(config: SecurityTxt, clock: Arc<dyn Clock>) -> Router {
    Router::new()
        .route("/.well-known/security.txt", get(security_txt))
        .with_state(Arc::new(Ctx { config, clock }))
}

async fn security_txt(State(ctx): State<Arc<Ctx>>) -> Response {
    match ctx.config.render(ctx.clock.now()) {
        Ok(body) => {
            let mut response = body.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            response
        }
        Err(_) => {
            tracing::warn!(
                "security.txt is not served: configure LEADMAPS_SECURITY_CONTACT (and optionally \
                 LEADMAPS_SECURITY_POLICY)"
            );
            StatusCode::NOT_FOUND.into_response()
        }
    }
}
