//! The bot filter: known bots and headless browsers, referrer spam, and per-workspace blocked
//! address ranges. Dropped events are rejected with a reason and counted per workspace.

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
            let spam = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
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
    let lower = agent.to_ascii_lowercase();
    BOT_AGENTS.iter().any(|pattern| lower.contains(pattern))
}

fn referrer_host(referrer: &str) -> Option<String> {
    url::Url::parse(referrer)
        .ok()?
        .host_str()
        .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
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
