//! A workspace's IP allowlist: the CIDR ranges (IPv4 and IPv6) its dashboard and API admit.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};

/// Most ranges one allowlist holds.
pub const MAX_ALLOWLIST_RANGES: usize = 100;

/// A list of CIDR ranges, normalised: no host bits, sorted, no duplicates. Empty admits every
/// address (no restriction); otherwise an address is admitted when a range contains it. An
/// IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket reports for an IPv4
/// client) is matched as the IPv4 address it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    /// A list of `ranges`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for more than [`MAX_ALLOWLIST_RANGES`] ranges, or a range with host
    /// bits set (`192.0.2.1/24` is ambiguous: a typo for `/32`, or `192.0.2.0/24`?).
    pub fn new(ranges: impl IntoIterator<Item = IpNet>) -> Result<Self> {
        let mut list = Vec::new();
        for (i, net) in ranges.into_iter().enumerate() {
            if list.len() == MAX_ALLOWLIST_RANGES {
                return Err(Error::invalid(format!(
                    "an IP allowlist holds at most {MAX_ALLOWLIST_RANGES} ranges"
                )));
            }
            let net = canonical(net);
            if net.trunc() != net {
                return Err(Error::invalid(format!(
                    "range {} has host bits set; give the network address",
                    i + 1
                )));
            }
            list.push(net);
        }
        list.sort_unstable();
        list.dedup();
        Ok(Self(list))
    }

    /// Parses CIDR ranges (`192.0.2.0/24`, `2001:db8::/32`); a bare address means that one
    /// address (`/32` or `/128`).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the position of a range that does not parse, and the errors of
    /// [`IpAllowlist::new`]. Messages never repeat the input.
    pub fn parse<S: AsRef<str>>(ranges: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut nets = Vec::new();
        for (i, text) in ranges.into_iter().enumerate() {
            let text = text.as_ref().trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Error::invalid(format!(
                        "range {} is not an IP address or CIDR range",
                        i + 1
                    ))
                })?;
            nets.push(net);
        }
        Self::new(nets)
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether the list restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request from `ip` is admitted.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&ip))
    }

    /// The ranges as CIDR strings, for storage and JSON.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// An IPv4-mapped IPv6 range (`::ffff:0:0/96` and inside) as the IPv4 range it is.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_admit_v4_v6_and_mapped_addresses() {
        let list = IpAllowlist::parse(["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]).unwrap();
        for (ip, admitted) in [
            ("192.0.2.1", true),
            ("192.0.2.255", true),
            ("192.0.3.0", false),
            ("::ffff:192.0.2.9", true),
            ("::ffff:192.0.3.9", false),
            ("2001:db8:ffff::1", true),
            ("2001:db9::1", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("::1", false),
        ] {
            assert_eq!(list.permits(ip.parse().unwrap()), admitted, "{ip}");
        }
        assert!(IpAllowlist::default().permits("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn lists_are_normalised() {
        let list = IpAllowlist::parse([
            "2001:db8::/32",
            " 10.0.0.0/8 ",
            "10.0.0.0/8",
            "::ffff:10.1.0.0/112",
        ])
        .unwrap();
        assert_eq!(
            list.to_strings(),
            ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"]
        );
    }

    #[test]
    fn bad_ranges_are_refused_without_echoing_them() {
        for bad in [
            "192.0.2.1/24",
            "10.0.0.0/33",
            "example.com",
            "",
            "2001:db8::1/32",
        ] {
            let err = IpAllowlist::parse([bad]).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Invalid, "{bad}");
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
        let many: Vec<String> = (0..=MAX_ALLOWLIST_RANGES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert!(IpAllowlist::parse(&many).is_err());
        assert_eq!(
            IpAllowlist::parse(&many[..MAX_ALLOWLIST_RANGES])
                .unwrap()
                .ranges()
                .len(),
            MAX_ALLOWLIST_RANGES
        );
    }
}
