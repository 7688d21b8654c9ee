//! The client's address behind a load balancer: `X-Forwarded-For` (or `X-Real-IP`) is believed
//! only when the connection comes from a proxy listed in `server.trusted_proxies`; otherwise
//! anyone could claim any address.

use std::net::IpAddr;

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

    /// The peer itself, unless it is a trusted proxy: then the nearest address in
    /// `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address it saw),
    /// or `X-Real-IP`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map_while(|part| part.trim().parse::<IpAddr>().ok())
            .collect();
        if let Some(first) = forwarded.first() {
            return forwarded
                .iter()
                .rev()
                .find(|ip| !self.is_trusted(**ip))
                .unwrap_or(first)
                .to_canonical();
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map_or(peer, |ip| ip.to_canonical())
    }
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

        let lb = ClientIp::new(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        assert_eq!(lb.resolve(ip("10.0.0.9"), &h), ip("203.0.113.7"));
        // A client cannot pass itself off as another by adding its own header.
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.2")]);
        assert_eq!(lb.resolve(ip("10.0.0.9"), &spoofed), ip("198.51.100.2"));
        // From an untrusted peer the header is ignored.
        assert_eq!(lb.resolve(ip("198.51.100.2"), &h), ip("198.51.100.2"));
        let real = headers(&[("x-real-ip", "203.0.113.9")]);
        assert_eq!(lb.resolve(ip("10.0.0.9"), &real), ip("203.0.113.9"));
        let garbage = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(lb.resolve(ip("10.0.0.9"), &garbage), ip("10.0.0.9"));
    }
}
