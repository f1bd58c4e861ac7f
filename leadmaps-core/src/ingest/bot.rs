//! The bot filter: known bots and headless browsers, referrer spam, and per-workspace blocked
//! address ranges. Dropped events are rejected with a reason and counted per workspace.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;

use super::event::RejectReason;

/// Lower-case substrings of user agents that are not people. Matched anywhere in the agent.
pub const BOT_AGENTS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "headless",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "lighthouse",
    "pingdom",
    "uptimerobot",
    "statuscake",
    "gtmetrix",
    "curl/",
    "wget/",
    "httpie/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "axios/",
    "node-fetch",
    "undici",
    "scrapy",
    "libwww-perl",
    "httpclient",
    "facebookexternalhit",
    "embedly",
    "preview",
    "ahrefs",
    "semrush",
    "mj12",
    "dataprovider",
    "petalbot",
    "bytespider",
    "gptbot",
    "ccbot",
    "claudebot",
    "perplexity",
    "applebot",
];

/// Referrer domains known for spam. A subdomain of a listed domain matches too.
pub const SPAM_REFERRERS: &[&str] = &[
    "semalt.com",
    "buttons-for-website.com",
    "buttons-for-your-website.com",
    "darodar.com",
    "best-seo-offer.com",
    "ilovevitaly.com",
    "priceg.com",
    "hulfingtonpost.com",
    "bestwebsitesawards.com",
    "o-o-6-o-o.com",
    "4webmasters.org",
    "free-social-buttons.com",
    "trafficmonetize.org",
    "get-free-traffic-now.com",
    "event-tracking.com",
    "success-seo.com",
];

/// The filter, with the built-in lists and any extra spam domains.
#[derive(Debug, Clone, Default)]
pub struct BotFilter {
    extra_spam: Vec<String>,
}

impl BotFilter {
    /// The built-in lists only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds referrer spam domains (lower case).
    pub fn with_spam_domains(mut self, domains: impl IntoIterator<Item = String>) -> Self {
        self.extra_spam
            .extend(domains.into_iter().map(|d| d.to_ascii_lowercase()));
        self
    }

    /// Why this request should not be counted, if it should not.
    pub fn check(
        &self,
        user_agent: &str,
        referrer: Option<&str>,
        ip: IpAddr,
        blocked: &[IpNet],
    ) -> Option<RejectReason> {
        if is_bot(user_agent) {
            return Some(RejectReason::Bot);
        }
        if let Some(host) = referrer.and_then(referrer_host) {
            // The domain itself or a subdomain of it.
            let spam = |domain: &str| {
                host.strip_suffix(domain)
                    .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
            };
            if SPAM_REFERRERS.iter().any(|d| spam(d)) || self.extra_spam.iter().any(|d| spam(d)) {
                return Some(RejectReason::ReferrerSpam);
            }
        }
        let ip = canonical_ip(ip);
        if blocked.iter().any(|net| net.contains(&ip)) {
            return Some(RejectReason::BlockedIp);
        }
        None
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so v4 ranges match it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a user agent is a bot, crawler, script or headless browser. An empty agent is.
pub fn is_bot(user_agent: &str) -> bool {
    let agent = user_agent.trim();
    if agent.is_empty() {
        return true;
    }
    // Lower-cased on the stack (this runs for every event), on the heap if long.
    let mut stack = [0u8; 256];
    let owned;
    let lower: &[u8] = match stack.get_mut(..agent.len()) {
        Some(buf) => {
            buf.copy_from_slice(agent.as_bytes());
            buf.make_ascii_lowercase();
            buf
        }
        None => {
            owned = agent.to_ascii_lowercase();
            owned.as_bytes()
        }
    };
    // One pass over the agent, trying at each byte only the patterns that start with it.
    (0..lower.len()).any(|at| {
        let mut candidates = BOT_AGENT_STARTS[usize::from(lower[at])];
        while candidates != 0 {
            let pattern = BOT_AGENTS[candidates.trailing_zeros() as usize].as_bytes();
            if lower[at..].starts_with(pattern) {
                return true;
            }
            candidates &= candidates - 1;
        }
        false
    })
}

/// For each byte, the [`BOT_AGENTS`] that start with it, as a bit set of their indexes.
const BOT_AGENT_STARTS: [u64; 256] = {
    assert!(BOT_AGENTS.len() <= 64, "one bit per pattern");
    let mut starts = [0u64; 256];
    let mut i = 0;
    while i < BOT_AGENTS.len() {
        let first = BOT_AGENTS[i].as_bytes()[0];
        starts[first as usize] |= 1 << i;
        i += 1;
    }
    starts
};

/// The referrer's host, lower case, without a leading `www.`, as the URL parser gives it.
fn referrer_host(referrer: &str) -> Option<Cow<'_, str>> {
    if let Some(host) = plain_http_host(referrer) {
        return Some(Cow::Borrowed(host.trim_start_matches("www.")));
    }
    url::Url::parse(referrer)
        .ok()?
        .host_str()
        .map(|h| Cow::Owned(h.trim_start_matches("www.").to_ascii_lowercase()))
}

/// The host of an `http(s)://` URL whose host the URL parser would keep exactly as written,
/// without parsing the URL: what the collector passes (referrers it cleaned by serialising a
/// parsed URL) almost always is. `None` leaves the case to the parser: another scheme or case,
/// user info, a port, percent-encoding, IDNA (`xn--`), an address-like last label, white space
/// or control characters anywhere (the parser removes tabs and newlines), an empty host.
fn plain_http_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    if host.is_empty()
        || !host.bytes().all(plain)
        || host.contains("xn--")
        || url.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return None;
    }
    // A last label (before any trailing dot) that starts with a digit may be read as an IPv4
    // number ("0x7f", "127"): the parser decides.
    let last = host
        .strip_suffix('.')
        .unwrap_or(host)
        .rsplit('.')
        .next()
        .unwrap_or("");
    match last.bytes().next() {
        Some(b) if !b.is_ascii_digit() => Some(host),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

    #[test]
    fn people_pass_and_bots_do_not() {
        let filter = BotFilter::new();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            filter.check(FIREFOX, Some("https://duckduckgo.com/"), ip, &[]),
            None
        );
        for agent in [
            "",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
            "curl/8.5.0",
            "python-requests/2.31",
        ] {
            assert_eq!(
                filter.check(agent, None, ip, &[]),
                Some(RejectReason::Bot),
                "{agent}"
            );
        }
    }

    #[test]
    fn referrer_spam_matches_domains_and_subdomains_only() {
        let filter = BotFilter::new().with_spam_domains(["spam.example".to_owned()]);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for spam in [
            "https://semalt.com/x",
            "http://www.semalt.com/",
            "https://a.b.spam.example/",
        ] {
            assert_eq!(
                filter.check(FIREFOX, Some(spam), ip, &[]),
                Some(RejectReason::ReferrerSpam),
                "{spam}"
            );
        }
        assert_eq!(
            filter.check(FIREFOX, Some("https://notsemalt.com/"), ip, &[]),
            None
        );
    }

    #[test]
    fn the_fast_referrer_host_agrees_with_the_url_parser() {
        let parsed = |r: &str| {
            url::Url::parse(r).ok().and_then(|u| {
                u.host_str()
                    .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
            })
        };
        for referrer in [
            "https://duckduckgo.com/",
            "https://www.semalt.com/a/b?x#y",
            "http://a.b-c.example",
            "https://example.com.",
            "https://EXAMPLE.com/",
            "https://user@example.com/",
            "https://example.com:8080/",
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://foo.123/",
            "https://foo.123./",
            "https://123.foo/",
            "https://xn--bcher-kva.example/",
            "https://b%C3%BCcher.example/",
            "https://exa\tmple.com/",
            "https://example.com\\path",
            "https:///example.com/",
            "https://",
            "https://a..b/",
            "https://-a-.example/",
            " https://example.com/",
            "android-app://com.example/",
            "HTTPS://example.com/",
            "https://example.com /",
        ] {
            assert_eq!(
                referrer_host(referrer).map(Cow::into_owned),
                parsed(referrer),
                "{referrer:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn the_fast_referrer_host_agrees_with_the_url_parser_on_any_input(
            referrer in "(https?|HTTP|ftp)://([a-z0-9.-]{0,12}|[a-zA-Z0-9.@:%_/?#\\\\ \t-]{0,24})(x|0x1|12|xn--a)?[./]?",
        ) {
            let parsed = url::Url::parse(&referrer)
                .ok()
                .and_then(|u| u.host_str().map(|h| h.trim_start_matches("www.").to_ascii_lowercase()));
            proptest::prop_assert_eq!(referrer_host(&referrer).map(Cow::into_owned), parsed);
        }
    }

    #[test]
    fn the_bot_search_finds_each_pattern_anywhere() {
        for pattern in BOT_AGENTS {
            assert!(
                pattern.bytes().all(|b| !b.is_ascii_uppercase()),
                "{pattern}"
            );
            for agent in [
                pattern.to_string(),
                pattern.to_ascii_uppercase(),
                format!("Mozilla/5.0 ({pattern}"),
                format!("x{pattern}y"),
            ] {
                assert!(is_bot(&agent), "{agent}");
            }
            // Every proper prefix alone is not a match of this pattern (it may be of another).
            let prefix = &pattern[..pattern.len() - 1];
            let naive = BOT_AGENTS.iter().any(|p| prefix.contains(p));
            assert_eq!(is_bot(&format!("Mozilla {prefix}")), naive, "{prefix}");
        }
    }

    #[test]
    fn long_user_agents_are_checked_too() {
        let long = format!("{} {}", "x".repeat(300), "Googlebot/2.1");
        assert!(is_bot(&long));
        assert!(!is_bot(&"x".repeat(300)));
        assert!(is_bot(&format!("{}HeadlessChrome", "é".repeat(100))));
    }

    #[test]
    fn blocked_ranges_match_v4_v6_and_mapped_addresses() {
        let blocked: Vec<IpNet> = vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        let filter = BotFilter::new();
        for (ip, hit) in [
            ("198.51.100.77", true),
            ("::ffff:198.51.100.1", true),
            ("2001:db8::1", true),
            ("198.51.101.1", false),
        ] {
            let got = filter.check(FIREFOX, None, ip.parse().unwrap(), &blocked);
            assert_eq!(got == Some(RejectReason::BlockedIp), hit, "{ip}");
        }
    }
}
