//! The client's address behind a load balancer: `X-Forwarded-For` (or `X-Real-IP`) is believed
//! only when the connection comes from a proxy listed in `server.trusted_proxies`; otherwise
//! anyone could claim any address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

/// An address range, `10.0.0.0/8`, `fd00::/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a bare address.
    ///
    /// ```
    /// use wxauth::client_ip::Cidr;
    /// let net = Cidr::parse("10.0.0.0/8").unwrap();
    /// assert!(net.contains("10.1.2.3".parse().unwrap()));
    /// assert!(Cidr::parse("10.0.0.0/33").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an IP address or range like 10.0.0.0/8");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Finds the client's address from the peer address and the proxy headers.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Vec<Cidr>,
}

impl ClientIp {
    /// Believes proxy headers only from these ranges.
    pub fn new(trusted: Vec<Cidr>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Whether the proxy headers of a connection from `peer` are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.is_trusted(peer.to_canonical())
    }

    /// The peer itself, unless it is a trusted proxy. Then `X-Forwarded-For` is read from the
    /// right, where the nearest proxy appended the address it saw: trusted proxies are
    /// skipped, and the first address that is not one is the client. Everything to its left
    /// was written by the client and is not believed; nor is anything to the left of an entry
    /// that is not an address. `X-Real-IP` counts only when there is no `X-Forwarded-For`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut forwarded = headers.get_all("x-forwarded-for").iter().peekable();
        if forwarded.peek().is_none() {
            return headers
                .get("x-real-ip")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_entry)
                .unwrap_or(peer);
        }
        // A value that is not text counts as one entry that is not an address.
        let entries: Vec<Option<&str>> = forwarded
            .flat_map(|value| match value.to_str() {
                Ok(text) => text.split(',').map(Some).collect::<Vec<_>>(),
                Err(_) => vec![None],
            })
            .collect();
        let mut nearest = peer;
        for entry in entries.into_iter().rev() {
            match entry.and_then(parse_entry) {
                Some(ip) if self.is_trusted(ip) => nearest = ip,
                Some(ip) => return ip,
                None => break,
            }
        }
        nearest
    }
}

/// One forwarded address: `1.2.3.4`, `2001:db8::1`, or with a port, `1.2.3.4:5678`,
/// `[2001:db8::1]:80` (some proxies add it), or in brackets alone, `[2001:db8::1]`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_by_prefix() {
        let net = Cidr::parse("192.168.0.0/16").unwrap();
        assert!(net.contains(ip("192.168.200.1")));
        assert!(!net.contains(ip("192.169.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains(ip("::ffff:127.0.0.1"))
        );
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        for bad in ["", "10.0.0.0/", "10.0.0/8", "::/129", "host"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.5")]);
        let none = ClientIp::default();
        assert_eq!(none.resolve(ip("10.0.0.9"), &h), ip("10.0.0.9"));

        let lb = lb();
        assert_eq!(lb.resolve(ip("10.0.0.9"), &h), ip("203.0.113.7"));
        // From an untrusted peer the header is ignored.
        assert_eq!(lb.resolve(ip("198.51.100.2"), &h), ip("198.51.100.2"));
    }

    fn lb() -> ClientIp {
        ClientIp::new(vec![Cidr::parse("10.0.0.0/8").unwrap()])
    }

    #[test]
    fn the_nearest_untrusted_address_wins_over_what_the_client_wrote_before_it() {
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.2")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &spoofed), ip("198.51.100.2"));
        let through_proxies = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.2, 10.0.0.7")]);
        assert_eq!(
            lb().resolve(ip("10.0.0.9"), &through_proxies),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn garbage_the_client_wrote_does_not_hide_the_address_the_proxy_appended() {
        // The client sent "1.2.3.4, x"; nginx appended the address it saw.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, x, 198.51.100.2")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("198.51.100.2"));
    }

    #[test]
    fn nothing_left_of_an_entry_that_is_not_an_address_is_believed() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4, x")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("10.0.0.9"));
        let h = headers(&[("x-forwarded-for", "1.2.3.4, garbage, 10.0.0.7")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("10.0.0.7"));
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("10.0.0.9"));
        let h = headers(&[("x-forwarded-for", "1.2.3.4,")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn entries_with_ports_are_read_as_their_address() {
        for (entry, want) in [
            ("198.51.100.2:5678", "198.51.100.2"),
            ("[2001:db8::1]:80", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            (" 198.51.100.2 ", "198.51.100.2"),
            ("::ffff:198.51.100.2", "198.51.100.2"),
        ] {
            let h = headers(&[("x-forwarded-for", entry)]);
            assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip(want), "{entry}");
        }
        // A trusted proxy written with a port is still a trusted proxy.
        let h = headers(&[("x-forwarded-for", "198.51.100.2, 10.0.0.7:4431")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("198.51.100.2"));
    }

    #[test]
    fn when_every_forwarded_address_is_trusted_the_farthest_is_the_client() {
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.0.0.7")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn several_forwarded_headers_read_as_one_list_in_order() {
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.2, 10.0.0.7"),
        ]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("198.51.100.2"));
    }

    #[test]
    fn x_real_ip_counts_only_without_x_forwarded_for() {
        let real = headers(&[("x-real-ip", "203.0.113.9")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &real), ip("203.0.113.9"));
        let with_port = headers(&[("x-real-ip", "203.0.113.9:1234")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &with_port), ip("203.0.113.9"));
        let both = headers(&[
            ("x-forwarded-for", "198.51.100.2:5678"),
            ("x-real-ip", "203.0.113.9"),
        ]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &both), ip("198.51.100.2"));
        let bad_forwarded = headers(&[("x-forwarded-for", "x"), ("x-real-ip", "203.0.113.9")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &bad_forwarded), ip("10.0.0.9"));
        let garbage = headers(&[("x-real-ip", "nobody")]);
        assert_eq!(lb().resolve(ip("10.0.0.9"), &garbage), ip("10.0.0.9"));
        // From an untrusted peer X-Real-IP is ignored too.
        assert_eq!(lb().resolve(ip("198.51.100.7"), &real), ip("198.51.100.7"));
    }

    #[test]
    fn a_forwarded_value_that_is_not_text_is_not_an_address() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        h.append("x-forwarded-for", "10.0.0.7".parse().unwrap());
        assert_eq!(lb().resolve(ip("10.0.0.9"), &h), ip("10.0.0.7"));
    }
}
