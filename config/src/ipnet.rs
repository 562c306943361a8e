//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address), for the
//! proxies whose `X-Forwarded-For` the router trusts.

use std::fmt;
use std::net::IpAddr;

/// A network: an address with its host bits zero, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        (u128::MAX << (width - prefix)) & (u128::MAX >> (128 - width))
    }
}

impl IpNet {
    /// Parses `addr` or `addr/prefix`. Host bits must be zero (`10.0.0.1/8` is refused, as
    /// it is most likely a typo for one address or for `10.0.0.0/8`). The prefix is plain
    /// decimal (`/08` is refused, as address parsers disagree on what leading zeros mean).
    /// An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) is kept as the IPv4 range it names,
    /// because peers are compared in their IPv4 form.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let (value, width) = bits(addr);
        let prefix = match prefix {
            None => width,
            Some(p) => {
                let plain =
                    p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
                match p.parse::<u8>() {
                    Ok(n) if n <= width && plain => n,
                    _ => return Err(format!("{s:?}: the prefix length must be 0 to {width}")),
                }
            }
        };
        if value & !mask(prefix, width) != 0 {
            return Err(format!("{s:?} has host bits set after /{prefix}"));
        }
        match addr.to_canonical() {
            // Host bits are zero, so the `ffff` of a mapped address is inside the prefix: 96 or
            // more (`::ffff:0.0.0.0/95` is refused above).
            IpAddr::V4(v4) if addr.is_ipv6() => Ok(IpNet {
                addr: IpAddr::V4(v4),
                prefix: prefix.saturating_sub(96),
            }),
            _ => Ok(IpNet { addr, prefix }),
        }
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let (net, width) = bits(self.addr);
        let (value, ip_width) = bits(ip);
        width == ip_width && value & mask(self.prefix, width) == net
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("192.168.1.5", Some("192.168.1.5/32")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("::1", Some("::1/128")),
            ("10.0.0.1/8", None),
            ("10.0.0.0/33", None),
            ("10.0.0.0/+8", None),
            ("10.0.0.0/", None),
            ("10.0.0.0/08", None),
            ("10.0.0.0/008", None),
            ("10.0.0.0/ 8", None),
            ("10.0.0.0/-0", None),
            ("::ffff:10.0.0.0/104", Some("10.0.0.0/8")),
            ("::ffff:192.168.1.5", Some("192.168.1.5/32")),
            ("::ffff:0.0.0.0/96", Some("0.0.0.0/0")),
            ("::ffff:0.0.0.0/95", None),
            ("example.com", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = IpNet::parse(input).ok().map(|n| n.to_string());
            assert_eq!(got.as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn contains_table() {
        let net = |s: &str| IpNet::parse(s).expect("net");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("::2")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::5")));
        // A mapped range matches the peer whichever way the peer's address is written.
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("::ffff:10.1.2.3")));
        assert!(!net("::ffff:10.0.0.0/104").contains(ip("11.1.2.3")));
    }
}
