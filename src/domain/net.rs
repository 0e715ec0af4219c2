//! Addresses and ranges as people give them to /block-ip, and what may never be blocked.

use std::net::IpAddr;

use ipnet::IpNet;

/// An address or a range, as `/block-ip address:` accepts it: `203.0.113.7`, `2001:db8::1`,
/// `198.51.100.0/24`. No spaces, no zone ids, no host bits after the prefix.
pub fn parse_range(s: &str) -> Result<IpNet, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| why_not_an_address(addr))?;
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(format!(
                "{s:?} is an IPv4 address written as IPv6; give it as {v4}"
            ));
        }
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max && !p.starts_with('+') && (p == "0" || !p.starts_with('0')) => n,
            _ => {
                return Err(format!(
                    "{s:?}: the prefix length after / must be a number from 0 to {max}"
                ))
            }
        },
    };
    let net = IpNet::new(ip, len).map_err(|e| format!("{s:?}: {e}"))?;
    if net.network() != ip {
        return Err(format!(
            "{s:?} has bits set after the /{len} prefix: the range is {}. Give that if you mean the whole range, or the single address {ip}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Why `s` is not an address, as precisely as can be said.
fn why_not_an_address(s: &str) -> String {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        if let Some(p) = parts
            .iter()
            .find(|p| p.parse::<u32>().map_or(true, |n| n > 255))
        {
            return format!(
                "{s:?} is not a valid IPv4 address: each of its four numbers must be 0 to 255, and {p} is not"
            );
        }
        return format!(
            "{s:?} is not a valid IPv4 address: write each number without leading zeros"
        );
    }
    format!(
        "{s:?} is not an IPv4 or IPv6 address (e.g. 203.0.113.7, 2001:db8::1, or a range such as 198.51.100.0/24)"
    )
}

/// The form stored and written to nginx: the address alone for a single host, else the range.
pub fn canonical(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// What may not be blocked, and from which width a block needs a second person.
#[derive(Debug, Clone)]
pub struct Guard {
    pub allow_list: Vec<IpNet>,
    pub max_prefix_v4: u8,
    pub max_prefix_v6: u8,
}

impl Guard {
    /// Wider than the setting: more addresses than a block may take without approval.
    pub fn is_wide(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => n.prefix_len() < self.max_prefix_v4,
            IpNet::V6(n) => n.prefix_len() < self.max_prefix_v6,
        }
    }

    pub fn widest_allowed(&self, net: &IpNet) -> u8 {
        match net {
            IpNet::V4(_) => self.max_prefix_v4,
            IpNet::V6(_) => self.max_prefix_v6,
        }
    }

    /// Refuses what would lock people or the stack out, whoever asks and whoever approves:
    /// every address, loopback, unspecified, multicast, link-local and broadcast addresses,
    /// the allow-list and the stack's own networks (`stack`).
    pub fn refuse_dangerous(&self, net: &IpNet, stack: &[IpNet]) -> Result<(), String> {
        let shown = canonical(net);
        if net.prefix_len() == 0 {
            return Err(format!(
                "{shown} is every {} address: it would lock everyone out",
                if net.addr().is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        let special: [(IpNet, &str); 9] = [
            ("127.0.0.0/8", "loopback (the host itself)"),
            ("::1/128", "loopback (the host itself)"),
            ("0.0.0.0/8", "the unspecified/this-network range"),
            ("::/128", "the unspecified address"),
            ("224.0.0.0/4", "multicast"),
            ("ff00::/8", "multicast"),
            ("169.254.0.0/16", "link-local"),
            ("fe80::/10", "link-local"),
            ("255.255.255.255/32", "the broadcast address"),
        ]
        .map(|(n, w)| (n.parse().expect("a valid built-in range"), w));
        for (range, what) in &special {
            if overlaps(net, range) {
                return Err(format!(
                    "{shown} is or contains {what} ({}): blocking it would cut off the host or its own traffic",
                    canonical(range)
                ));
            }
        }
        if let Some(a) = self.allow_list.iter().find(|a| overlaps(net, a)) {
            return Err(format!(
                "{shown} overlaps {} on nginx.allow_list (addresses the team must always reach the stack from)",
                canonical(a)
            ));
        }
        if let Some(s) = stack.iter().find(|s| overlaps(net, s)) {
            return Err(format!(
                "{shown} overlaps {}, a network of the stack's own containers: nginx would refuse the stack's own traffic",
                canonical(s)
            ));
        }
        Ok(())
    }
}

/// Whether one range holds the other (CIDR ranges never overlap partly).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            allow_list: vec!["198.51.100.0/24".parse().unwrap()],
            max_prefix_v4: 16,
            max_prefix_v6: 48,
        }
    }

    #[test]
    fn addresses_and_ranges_parse_strictly() {
        assert_eq!(
            canonical(&parse_range("203.0.113.7").unwrap()),
            "203.0.113.7"
        );
        assert_eq!(
            canonical(&parse_range("203.0.113.7/32").unwrap()),
            "203.0.113.7"
        );
        assert_eq!(canonical(&parse_range("10.0.0.0/8").unwrap()), "10.0.0.0/8");
        assert_eq!(
            canonical(&parse_range("2001:DB8::1").unwrap()),
            "2001:db8::1"
        );
        assert_eq!(
            canonical(&parse_range("2001:db8::/32").unwrap()),
            "2001:db8::/32"
        );
        let e = parse_range("123.456.789.0").unwrap_err();
        assert!(e.contains("0 to 255, and 456 is not"), "{e}");
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "010.1.1.1",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/08",
            "1.2.3.4/+8",
            "2001:db8::/129",
            "fe80::1%eth0",
            "example.com",
            "1.2.3.4/8/8",
            "",
        ] {
            assert!(parse_range(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse_range("10.1.2.3/8").unwrap_err();
        assert!(e.contains("the range is 10.0.0.0/8"), "{e}");
        let e = parse_range("::ffff:1.2.3.4").unwrap_err();
        assert!(e.contains("give it as 1.2.3.4"), "{e}");
    }

    #[test]
    fn dangerous_ranges_are_refused_whoever_asks() {
        let g = guard();
        let stack = ["172.18.0.0/16".parse().unwrap()];
        for (s, why) in [
            ("0.0.0.0/0", "every IPv4"),
            ("::/0", "every IPv6"),
            ("127.0.0.1", "loopback"),
            ("127.0.0.0/8", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("255.255.255.255", "broadcast"),
            ("198.51.100.9", "allow_list"),
            ("198.0.0.0/8", "allow_list"),
            ("172.18.0.5", "stack's own"),
            ("64.0.0.0/2", "loopback"),
        ] {
            let e = g
                .refuse_dangerous(&parse_range(s).unwrap(), &stack)
                .unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        assert!(g
            .refuse_dangerous(&parse_range("203.0.113.7").unwrap(), &stack)
            .is_ok());
        assert!(g.is_wide(&parse_range("10.0.0.0/8").unwrap()));
        assert!(!g.is_wide(&parse_range("10.1.0.0/16").unwrap()));
        assert!(g.is_wide(&parse_range("2001:db8::/32").unwrap()));
        assert!(!g.is_wide(&parse_range("2001:db8::/64").unwrap()));
    }
}
