//! The collector's wire format (Plausible-compatible), validation and normalisation.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::limits::{self, Limit};
use crate::tenancy::WorkspaceId;

/// An event's idempotency key: given by the client (batch API) or generated on arrival
/// ([`EventId::generate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A new id for an event received at `received_at`: a UUIDv7 (RFC 9562), the arrival's Unix
    /// milliseconds then 74 random bits. Ids generated together sort together, so a store's
    /// `(workspace, id)` index grows at its end, one page per commit, instead of taking a random
    /// page per event (which costs a page write and an fsync'd WAL frame each). The timestamp says
    /// no more than the stored `received_at`.
    pub fn generate(received_at: OffsetDateTime) -> Self {
        let millis = (received_at.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1);
        let random = ID_RANDOMNESS.with_borrow_mut(IdRandomness::take);
        Self(uuid::Builder::from_unix_timestamp_millis(millis as u64, &random).into_uuid())
    }
}

/// Random bits for generated ids, drawn from the operating system 40 ids at a time rather than
/// with a system call per event. They only need to be unique, not secret: ids are handed to
/// clients.
struct IdRandomness {
    bytes: [u8; 400],
    used: usize,
}

impl IdRandomness {
    fn take(&mut self) -> [u8; 10] {
        if self.used + 10 > self.bytes.len() {
            getrandom::fill(&mut self.bytes)
                .expect("the operating system's random number generator failed");
            self.used = 0;
        }
        let mut out = [0u8; 10];
        out.copy_from_slice(&self.bytes[self.used..self.used + 10]);
        self.used += 10;
        out
    }
}

thread_local! {
    static ID_RANDOMNESS: std::cell::RefCell<IdRandomness> = const {
        std::cell::RefCell::new(IdRandomness { bytes: [0; 400], used: 400 })
    };
}

/// A pseudonymous visitor id: a keyed hash under a daily salt. It cannot be reversed to an IP or
/// user agent, and stops linking visits when the salt is destroyed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VisitorId(pub [u8; 16]);

impl fmt::Debug for VisitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VisitorId(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// Revenue attached to an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revenue {
    /// Decimal amount as text, e.g. `"19.99"`; never a float, so nothing is rounded.
    pub amount: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
}

/// Why an event was not stored. The code is stable and shown to clients and workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// Not a JSON object.
    NotAnObject,
    /// A field leadmaps does not support.
    UnsupportedField,
    /// A field has the wrong type.
    InvalidField,
    /// No event name.
    NameMissing,
    /// Event name over [`limits::NAME`].
    NameTooLong,
    /// No page URL.
    UrlMissing,
    /// The page URL does not parse as an absolute http(s) URL.
    UrlInvalid,
    /// Page URL over [`limits::URL`].
    UrlTooLong,
    /// No domain given and none in the URL.
    DomainMissing,
    /// The domain is not a registered site.
    DomainUnknown,
    /// More than [`limits::PROPS`] custom properties.
    TooManyProps,
    /// A property key over [`limits::PROP_KEY`] or empty.
    PropKeyInvalid,
    /// A property value over [`limits::PROP_VALUE`].
    PropValueTooLong,
    /// A property value that is not a string, number or boolean.
    PropValueInvalid,
    /// Revenue without a valid decimal amount and ISO 4217 currency.
    RevenueInvalid,
    /// An `id` that is not a UUID.
    IdInvalid,
    /// The site's workspace lives in another region than this collector.
    WrongRegion,
    /// A known bot or headless browser.
    Bot,
    /// A referrer on the spam list.
    ReferrerSpam,
    /// The client address is in the workspace's blocked ranges.
    BlockedIp,
}

impl RejectReason {
    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::UnsupportedField => "unsupported_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::NameMissing => "name_missing",
            RejectReason::NameTooLong => "name_too_long",
            RejectReason::UrlMissing => "url_missing",
            RejectReason::UrlInvalid => "url_invalid",
            RejectReason::UrlTooLong => "url_too_long",
            RejectReason::DomainMissing => "domain_missing",
            RejectReason::DomainUnknown => "domain_unknown",
            RejectReason::TooManyProps => "too_many_props",
            RejectReason::PropKeyInvalid => "prop_key_invalid",
            RejectReason::PropValueTooLong => "prop_value_too_long",
            RejectReason::PropValueInvalid => "prop_value_invalid",
            RejectReason::RevenueInvalid => "revenue_invalid",
            RejectReason::IdInvalid => "id_invalid",
            RejectReason::WrongRegion => "wrong_region",
            RejectReason::Bot => "bot",
            RejectReason::ReferrerSpam => "referrer_spam",
            RejectReason::BlockedIp => "blocked_ip",
        }
    }

    /// Whether this is a filter drop (counted per workspace) rather than a malformed event.
    pub fn is_filtered(self) -> bool {
        matches!(
            self,
            RejectReason::Bot | RejectReason::ReferrerSpam | RejectReason::BlockedIp
        )
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An event as the client sent it, after parsing and per-field checks, before site lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Client idempotency key, if sent.
    pub id: Option<EventId>,
    /// Event name (`pageview` or a custom goal).
    pub name: String,
    /// The page URL with only allow-listed query parameters and no fragment (unless hash mode).
    pub url: url::Url,
    /// The site's domain, lower case.
    pub domain: String,
    /// Referrer without query or fragment, truncated at [`limits::REFERRER`].
    pub referrer: Option<String>,
    /// Custom properties.
    pub props: BTreeMap<String, String>,
    /// Revenue, if any.
    pub revenue: Option<Revenue>,
    /// Whether the event counts as an interaction (bounce rate).
    pub interactive: bool,
}

/// Query parameters kept on page URLs; everything else is dropped, since query strings carry
/// emails, tokens and session ids.
pub fn query_param_allowed(key: &str) -> bool {
    key.starts_with("utm_") || key == "ref" || key == "source"
}

/// The fields of an event, by their long names.
#[derive(Clone, Copy)]
enum Field {
    Name,
    Url,
    Domain,
    Referrer,
    Props,
    HashMode,
    Interactive,
    Revenue,
    Id,
}

const FIELDS: &[(&str, &str, Field)] = &[
    ("n", "name", Field::Name),
    ("u", "url", Field::Url),
    ("d", "domain", Field::Domain),
    ("r", "referrer", Field::Referrer),
    ("p", "props", Field::Props),
    ("m", "props", Field::Props),
    ("meta", "props", Field::Props),
    ("h", "hashMode", Field::HashMode),
    ("i", "interactive", Field::Interactive),
    ("$", "revenue", Field::Revenue),
];

fn canonical(key: &str) -> Option<Field> {
    FIELDS
        .iter()
        .find(|(short, long, _)| *short == key || *long == key)
        .map(|(_, _, field)| *field)
        .or(match key {
            "id" => Some(Field::Id),
            _ => None,
        })
}

/// An event object's values by field.
#[derive(Default)]
struct Fields<'a>([Option<&'a Value>; 9]);

impl<'a> Fields<'a> {
    fn get(&self, field: Field) -> Option<&'a Value> {
        self.0[field as usize]
    }
}

/// Parses one event object. `allow_id` is true on the batch API, where `id` is the idempotency
/// key.
///
/// # Errors
/// The first rule the event breaks.
pub fn parse(value: &Value, allow_id: bool) -> Result<Incoming, RejectReason> {
    let object = value.as_object().ok_or(RejectReason::NotAnObject)?;
    let mut fields = Fields::default();
    for (key, value) in object {
        let field = canonical(key).ok_or(RejectReason::UnsupportedField)?;
        if matches!(field, Field::Id) && !allow_id {
            return Err(RejectReason::UnsupportedField);
        }
        if fields.0[field as usize].replace(value).is_some() {
            // Both the short and the long name of one field.
            return Err(RejectReason::InvalidField);
        }
    }
    let id = match fields.get(Field::Id) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(EventId(
            Uuid::parse_str(s).map_err(|_| RejectReason::IdInvalid)?,
        )),
        Some(_) => return Err(RejectReason::IdInvalid),
    };
    let name = match fields.get(Field::Name) {
        None | Some(Value::Null) => return Err(RejectReason::NameMissing),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(RejectReason::InvalidField),
    };
    if name.is_empty() {
        return Err(RejectReason::NameMissing);
    }
    check(&name, limits::NAME, RejectReason::NameTooLong)?;
    let hash_mode = flag(fields.get(Field::HashMode))?;
    let interactive = match fields.get(Field::Interactive) {
        None | Some(Value::Null) => true,
        Some(value) => flag(Some(value))?,
    };
    let raw_url = match fields.get(Field::Url) {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        None | Some(Value::Null) => return Err(RejectReason::UrlMissing),
        Some(Value::String(_)) => return Err(RejectReason::UrlMissing),
        Some(_) => return Err(RejectReason::InvalidField),
    };
    check(raw_url, limits::URL, RejectReason::UrlTooLong)?;
    let url = clean_url(raw_url, hash_mode)?;
    let domain = match fields.get(Field::Domain) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_ascii_lowercase(),
        None | Some(Value::Null) | Some(Value::String(_)) => url
            .host_str()
            .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
            .ok_or(RejectReason::DomainMissing)?,
        Some(_) => return Err(RejectReason::InvalidField),
    };
    let referrer = match fields.get(Field::Referrer) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => clean_referrer(s),
        Some(_) => return Err(RejectReason::InvalidField),
    };
    let props = match fields.get(Field::Props) {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => props(map)?,
        // Some trackers send props as a JSON-encoded string.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(map)) => props(&map)?,
            _ => return Err(RejectReason::InvalidField),
        },
        Some(_) => return Err(RejectReason::InvalidField),
    };
    let revenue = match fields.get(Field::Revenue) {
        None | Some(Value::Null) => None,
        Some(value) => Some(revenue(value)?),
    };
    Ok(Incoming {
        id,
        name,
        url,
        domain,
        referrer,
        props,
        revenue,
        interactive,
    })
}

fn check(value: &str, limit: Limit, reason: RejectReason) -> Result<(), RejectReason> {
    if value.len() > limit.max {
        Err(reason)
    } else {
        Ok(())
    }
}

fn flag(value: Option<&Value>) -> Result<bool, RejectReason> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) => Ok(n.as_u64().is_some_and(|n| n != 0)),
        Some(_) => Err(RejectReason::InvalidField),
    }
}

/// Keeps scheme, host, port, path, allow-listed query parameters and, in hash mode, the
/// fragment (the page route of single-page apps). Drops user info, other parameters and
/// fragments.
fn clean_url(raw: &str, hash_mode: bool) -> Result<url::Url, RejectReason> {
    let mut url = url::Url::parse(raw).map_err(|_| RejectReason::UrlInvalid)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(RejectReason::UrlInvalid);
    }
    // Every setter re-serialises the URL: on each event's path, call only those that change it.
    if !url.username().is_empty() {
        let _ = url.set_username("");
    }
    if url.password().is_some() {
        let _ = url.set_password(None);
    }
    if let Some(query) = url.query() {
        // The allow-listed pairs, serialised as `query_pairs_mut` would write them.
        let mut kept = url::form_urlencoded::Serializer::new(String::new());
        let mut any = false;
        for (key, value) in url.query_pairs() {
            if query_param_allowed(&key) {
                kept.append_pair(&key, &value);
                any = true;
            }
        }
        let kept = kept.finish();
        if !any {
            url.set_query(None);
        } else if kept != query {
            url.set_query(Some(&kept));
        }
    }
    if hash_mode {
        // The route is the fragment's path; its own query string is dropped too.
        let route = url
            .fragment()
            .map(|f| f.split(['?', '&']).next().unwrap_or("").to_owned());
        url.set_fragment(route.as_deref().filter(|r| !r.is_empty()));
    } else if url.fragment().is_some() {
        url.set_fragment(None);
    }
    Ok(url)
}

/// A referrer keeps its origin and path; query and fragment are dropped and it is cut at the
/// limit. Unparseable referrers (apps, `android-app://`) are kept as their first path segment.
fn clean_referrer(raw: &str) -> Option<String> {
    let mut cleaned = match url::Url::parse(raw) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            String::from(url)
        }
        Err(_) => raw.split(['?', '#']).next().unwrap_or("").to_owned(),
    };
    let cut = limits::truncate(&cleaned, limits::REFERRER.max).len();
    cleaned.truncate(cut);
    (!cleaned.is_empty()).then_some(cleaned)
}

fn props(map: &Map<String, Value>) -> Result<BTreeMap<String, String>, RejectReason> {
    if map.len() > limits::PROPS.max {
        return Err(RejectReason::TooManyProps);
    }
    let mut out = BTreeMap::new();
    for (key, value) in map {
        if key.is_empty() || key.len() > limits::PROP_KEY.max {
            return Err(RejectReason::PropKeyInvalid);
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            // Plausible drops null-valued props; so do we.
            Value::Null => continue,
            _ => return Err(RejectReason::PropValueInvalid),
        };
        check(&value, limits::PROP_VALUE, RejectReason::PropValueTooLong)?;
        out.insert(key.clone(), value);
    }
    Ok(out)
}

fn revenue(value: &Value) -> Result<Revenue, RejectReason> {
    let object = value.as_object().ok_or(RejectReason::RevenueInvalid)?;
    let amount = match object.get("amount") {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(RejectReason::RevenueInvalid),
    };
    let currency = match object.get("currency") {
        Some(Value::String(s)) => s.trim().to_ascii_uppercase(),
        _ => return Err(RejectReason::RevenueInvalid),
    };
    if object.len() != 2
        || !valid_decimal(&amount)
        || currency.len() != 3
        || !currency.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(RejectReason::RevenueInvalid);
    }
    Ok(Revenue { amount, currency })
}

/// An optionally negative decimal with at most 18 integer and 18 fractional digits.
fn valid_decimal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !int.is_empty()
        && int.len() <= 18
        && frac.len() <= 18
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac.is_empty())
}

/// An event ready for the sink: validated, normalised, pseudonymous, in its workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Idempotency key.
    pub id: EventId,
    /// Owning workspace.
    pub workspace: WorkspaceId,
    /// Site domain.
    pub domain: String,
    /// Event name.
    pub name: String,
    /// Host of the page.
    pub hostname: String,
    /// Path of the page, with allow-listed query and, in hash mode, the fragment route.
    pub pathname: String,
    /// Cleaned referrer.
    pub referrer: Option<String>,
    /// Custom properties.
    pub props: BTreeMap<String, String>,
    /// Revenue.
    pub revenue: Option<Revenue>,
    /// Counts as an interaction.
    pub interactive: bool,
    /// Pseudonymous visitor.
    pub visitor: VisitorId,
    /// When the collector received it.
    pub received_at: OffsetDateTime,
}

impl Event {
    /// Builds the stored form of an incoming event.
    pub fn from_incoming(
        incoming: Incoming,
        workspace: WorkspaceId,
        visitor: VisitorId,
        received_at: OffsetDateTime,
    ) -> Self {
        let hostname = incoming
            .url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut pathname = incoming.url.path().to_owned();
        if let Some(query) = incoming.url.query() {
            pathname.push('?');
            pathname.push_str(query);
        }
        if let Some(fragment) = incoming.url.fragment() {
            pathname.push('#');
            pathname.push_str(fragment);
        }
        Self {
            id: incoming
                .id
                .unwrap_or_else(|| EventId::generate(received_at)),
            workspace,
            domain: incoming.domain,
            name: incoming.name,
            hostname,
            pathname,
            referrer: incoming.referrer,
            props: incoming.props,
            revenue: incoming.revenue,
            interactive: incoming.interactive,
            visitor,
            received_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(value: Value) -> Incoming {
        parse(&value, true).expect("valid event")
    }

    fn err(value: Value) -> RejectReason {
        parse(&value, true).expect_err("invalid event")
    }

    #[test]
    fn accepts_short_and_long_field_names() {
        let short = ok(
            json!({"n": "pageview", "u": "https://example.com/a", "d": "example.com", "r": "https://ddg.gg/?q=x", "p": {"k": 1}}),
        );
        let long = ok(
            json!({"name": "pageview", "url": "https://example.com/a", "domain": "example.com", "referrer": "https://ddg.gg/?q=x", "props": {"k": 1}}),
        );
        assert_eq!(short, long);
        assert_eq!(short.referrer.as_deref(), Some("https://ddg.gg/"));
        assert_eq!(short.props["k"], "1");
    }

    #[test]
    fn takes_domain_from_url_props_from_json_string_and_integer_names() {
        let event = ok(json!({"n": 404, "u": "https://www.Example.com/x", "m": "{\"a\":\"b\"}"}));
        assert_eq!(
            (event.name.as_str(), event.domain.as_str()),
            ("404", "example.com")
        );
        assert_eq!(event.props["a"], "b");
    }

    #[test]
    fn query_strings_keep_only_the_allow_list_and_fragments_go() {
        let event = ok(
            json!({"n": "pageview", "u": "https://u:p@example.com/p?email=a@b.c&utm_source=x&token=t&ref=hn#frag"}),
        );
        assert_eq!(
            event.url.as_str(),
            "https://example.com/p?utm_source=x&ref=hn"
        );
        let hash =
            ok(json!({"n": "pageview", "u": "https://example.com/#/route?secret=1", "h": 1}));
        assert_eq!(hash.url.fragment(), Some("/route"));
    }

    #[test]
    fn each_limit_rejects_one_over_and_accepts_at_it() {
        let at = |n: usize| "a".repeat(n);
        assert_eq!(
            ok(json!({"n": at(120), "u": "https://e.com/"})).name.len(),
            120
        );
        assert_eq!(
            err(json!({"n": at(121), "u": "https://e.com/"})),
            RejectReason::NameTooLong
        );
        let url = |n: usize| format!("https://e.com/{}", at(n - 14));
        assert!(parse(&json!({"n": "x", "u": url(2000)}), false).is_ok());
        assert_eq!(
            err(json!({"n": "x", "u": url(2001)})),
            RejectReason::UrlTooLong
        );
        let props =
            |n: usize| Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect());
        assert!(
            parse(
                &json!({"n": "x", "u": "https://e.com/", "p": props(30)}),
                false
            )
            .is_ok()
        );
        assert_eq!(
            err(json!({"n": "x", "u": "https://e.com/", "p": props(31)})),
            RejectReason::TooManyProps
        );
        assert!(
            parse(
                &json!({"n": "x", "u": "https://e.com/", "p": {at(300): "v"}}),
                false
            )
            .is_ok()
        );
        assert_eq!(
            err(json!({"n": "x", "u": "https://e.com/", "p": {at(301): "v"}})),
            RejectReason::PropKeyInvalid
        );
        assert!(
            parse(
                &json!({"n": "x", "u": "https://e.com/", "p": {"k": at(2000)}}),
                false
            )
            .is_ok()
        );
        assert_eq!(
            err(json!({"n": "x", "u": "https://e.com/", "p": {"k": at(2001)}})),
            RejectReason::PropValueTooLong
        );
        let long_ref = ok(
            json!({"n": "x", "u": "https://e.com/", "r": format!("https://r.com/{}", at(3000))}),
        );
        assert_eq!(
            long_ref.referrer.unwrap().len(),
            2000,
            "referrers are truncated, not rejected"
        );
    }

    #[test]
    fn malformed_events_get_a_reason() {
        assert_eq!(err(json!([1])), RejectReason::NotAnObject);
        assert_eq!(
            err(json!({"n": "x", "u": "https://e.com/", "ip": "1.2.3.4"})),
            RejectReason::UnsupportedField
        );
        assert_eq!(
            err(json!({"n": "x", "name": "y", "u": "https://e.com/"})),
            RejectReason::InvalidField
        );
        assert_eq!(
            err(json!({"u": "https://e.com/"})),
            RejectReason::NameMissing
        );
        assert_eq!(err(json!({"n": "x"})), RejectReason::UrlMissing);
        assert_eq!(
            err(json!({"n": "x", "u": "javascript:alert(1)"})),
            RejectReason::UrlInvalid
        );
        assert_eq!(
            err(json!({"n": "x", "u": "/relative"})),
            RejectReason::UrlInvalid
        );
        assert_eq!(
            err(json!({"n": "x", "u": "https://e.com/", "p": {"k": {"nested": 1}}})),
            RejectReason::PropValueInvalid
        );
        assert_eq!(
            err(json!({"n": "x", "u": "https://e.com/", "id": "nope"})),
            RejectReason::IdInvalid
        );
        assert_eq!(
            parse(
                &json!({"n": "x", "u": "https://e.com/", "id": Uuid::nil()}),
                false
            ),
            Err(RejectReason::UnsupportedField)
        );
        for bad in [
            json!({"amount": "1e5", "currency": "EUR"}),
            json!({"amount": "10", "currency": "EURO"}),
            json!({"amount": "1.", "currency": "EUR"}),
            json!("10 EUR"),
        ] {
            assert_eq!(
                err(json!({"n": "x", "u": "https://e.com/", "$": bad})),
                RejectReason::RevenueInvalid
            );
        }
        let paid = ok(
            json!({"n": "x", "u": "https://e.com/", "revenue": {"amount": 19.99, "currency": "eur"}}),
        );
        assert_eq!(
            paid.revenue,
            Some(Revenue {
                amount: "19.99".into(),
                currency: "EUR".into()
            })
        );
    }

    /// `clean_url` as it was written first: every setter called, the query always rebuilt.
    fn clean_url_reference(raw: &str, hash_mode: bool) -> Result<url::Url, RejectReason> {
        let mut url = url::Url::parse(raw).map_err(|_| RejectReason::UrlInvalid)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(RejectReason::UrlInvalid);
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| query_param_allowed(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        if hash_mode {
            let route = url
                .fragment()
                .map(|f| f.split(['?', '&']).next().unwrap_or("").to_owned());
            url.set_fragment(route.as_deref().filter(|r| !r.is_empty()));
        } else {
            url.set_fragment(None);
        }
        Ok(url)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn clean_url_agrees_with_its_first_version(
            user in "(|u|u:p|:p)@?",
            path in "(/[a-z%2F~. ]{0,6}){0,3}",
            query in "(\\?((utm_[a-z]{0,3}|ref|source|x|[a-z ]{1,3}|%75tm_a)(=[a-zA-Z0-9+% &;/?:@~*'\"-]{0,6})?&?){0,4})?",
            fragment in "(#[a-z/?&=]{0,8})?",
            hash_mode in proptest::bool::ANY,
        ) {
            let raw = format!("https://{user}example.com{path}{query}{fragment}");
            proptest::prop_assert_eq!(
                clean_url(&raw, hash_mode).map(String::from),
                clean_url_reference(&raw, hash_mode).map(String::from),
                "{}", raw
            );
        }
    }

    #[test]
    fn generated_ids_are_unique_and_ordered_by_arrival() {
        let at = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_500);
        let a = EventId::generate(at);
        let b = EventId::generate(at);
        let later = EventId::generate(at + time::Duration::milliseconds(1));
        assert_ne!(a, b, "random bits differ within a millisecond");
        assert_eq!(a.0.get_version(), Some(uuid::Version::SortRand));
        assert!(a < later && b < later, "a later millisecond sorts after");
        let (secs, nanos) = a.0.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs as i64 * 1000 + i64::from(nanos) / 1_000_000,
            at.unix_timestamp() * 1000
        );
        // Instants outside UUIDv7's range still give an id.
        EventId::generate(OffsetDateTime::UNIX_EPOCH - time::Duration::days(1));
    }
}
