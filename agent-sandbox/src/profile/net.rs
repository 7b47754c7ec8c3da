//! Network entries: `host-or-cidr:port-or-range`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::policy::{DomainRule, NetRule, PortRange, Proto};

/// Whether a network entry names a host (`pypi.org:443`, `*.example.com:443/udp`) rather than
/// addresses: its host part has a letter and is neither `localhost`, `*` nor an IPv6 literal.
pub fn is_domain_entry(s: &str) -> bool {
    let s = s.trim();
    if s.starts_with('[') {
        return false;
    }
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    host != "*"
        && !host.eq_ignore_ascii_case("localhost")
        && !host.contains(':')
        && host.chars().any(|c| c.is_ascii_alphabetic())
}

/// Parse a host-name entry: `name:ports` with an optional `/tcp` or `/udp` (both without).
/// `*.example.com` covers every name below example.com, not example.com itself.
pub fn parse_domain_entry(s: &str) -> Result<DomainRule, String> {
    let s = s.trim();
    let (body, proto) = match s.rsplit_once('/') {
        Some((body, "tcp")) => (body, Proto::Tcp),
        Some((body, "udp")) => (body, Proto::Udp),
        Some((_, other)) => {
            return Err(format!(
                "`/{other}` is not a protocol; write `/tcp` or `/udp`, or nothing for both"
            ))
        }
        None => (s, Proto::Any),
    };
    let (host, ports) = body.rsplit_once(':').ok_or_else(|| {
        format!("missing `:port` in `{s}`; write `name:port`, e.g. `pypi.org:443`")
    })?;
    let ports = parse_port_range(ports)?;
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let labels = name.strip_prefix("*.").unwrap_or(&name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
    };
    if name.len() > 253 || !labels.split('.').all(label_ok) {
        return Err(format!(
            "`{host}` is not a host name; write `pypi.org:443`, or `*.example.com:443` for              every name below example.com (a `*` stands only as the whole first label)"
        ));
    }
    if !labels.contains('.') && name.starts_with("*.") {
        return Err(format!(
            "`{host}` would allow every name below a top-level domain; name the domain"
        ));
    }
    Ok(DomainRule { name, ports, proto })
}

/// Parse one network entry into the rules it stands for.
///
/// Accepted: `*:443`, `10.0.0.0/8:*`, `127.0.0.1:8080`, `[::1]:8000-8100`, `[fd00::/8]:53`,
/// `localhost:3000` (→ `127.0.0.0/8` and `::1`). IPv6 addresses go in brackets. IPv4-mapped
/// IPv6 (`::ffff:10.0.0.1`) becomes plain IPv4, since that is what the kernel hooks see.
/// Host names are parsed by [`parse_domain_entry`]; a protocol suffix is for those only.
pub fn parse_net_entry(s: &str) -> Result<Vec<NetRule>, String> {
    let s = s.trim();
    if s.ends_with("/udp") || s.ends_with("/tcp") {
        return Err(format!(
            "`{s}`: an address entry covers TCP and UDP; `/tcp` and `/udp` narrow host-name              entries (`api.example.com:443/udp`)"
        ));
    }
    let (host, ports) = split_host_port(s)?;
    let ports = parse_port_range(ports)?;
    let nets: Vec<Option<IpNet>> = if host == "*" {
        vec![None]
    } else if host.eq_ignore_ascii_case("localhost") {
        vec![
            Some(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("valid prefix"),
            )),
            Some(IpNet::V6(
                Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).expect("valid prefix"),
            )),
        ]
    } else {
        vec![Some(parse_net(host)?)]
    };
    Ok(nets.into_iter().map(|net| NetRule { net, ports }).collect())
}

fn split_host_port(s: &str) -> Result<(&str, &str), String> {
    let hint = "write `host-or-cidr:port-or-range`, e.g. `*:443`, `10.0.0.0/8:*`, `[::1]:8080`";
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing `]` in `{s}`; {hint}"))?;
        let ports = tail
            .strip_prefix(':')
            .ok_or_else(|| format!("missing `:port` after `[{host}]`; {hint}"))?;
        return Ok((host, ports));
    }
    let (host, ports) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("missing `:port` in `{s}`; {hint}"))?;
    if host.contains(':') {
        return Err(format!("IPv6 addresses need brackets: `[{host}]:{ports}`"));
    }
    if host.is_empty() {
        return Err(format!("missing host in `{s}`; use `*` for any address"));
    }
    Ok((host, ports))
}

fn parse_net(host: &str) -> Result<IpNet, String> {
    let net = if host.contains('/') {
        let net: IpNet = host.parse().map_err(|_| {
            format!("`{host}` is not a valid CIDR (like `10.0.0.0/8` or `fd00::/8`)")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "`{host}` has host bits set; did you mean `{}`?",
                net.trunc()
            ));
        }
        net
    } else {
        let addr: IpAddr = host.parse().map_err(|_| {
            if host.chars().any(|c| c.is_ascii_alphabetic()) && !host.contains(':') {
                format!("`{host}` is not an IP address, a CIDR, `localhost` or a host name")
            } else {
                format!("`{host}` is not a valid IP address")
            }
        })?;
        IpNet::from(addr)
    };
    Ok(unmap_v4(net))
}

/// `::ffff:a.b.c.d/N` (N >= 96) → `a.b.c.d/(N-96)`.
fn unmap_v4(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                let v4net = Ipv4Net::new(v4, v6.prefix_len() - 96).expect("prefix <= 32");
                return IpNet::V4(v4net);
            }
        }
    }
    net
}

/// `*`, `443`, `8000-8100`.
pub fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(PortRange::ANY);
    }
    let port = |p: &str| -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port (0-65535) or `*`"))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (first, last) = (port(a)?, port(b)?);
            if first > last {
                return Err(format!(
                    "port range `{s}` is backwards; write `{last}-{first}`"
                ));
            }
            Ok(PortRange { first, last })
        }
        None => port(s).map(PortRange::single),
    }
}

/// The host's configured nameservers (`/etc/resolv.conf`), each as an allow rule for port 53
/// (TCP and UDP: the network layers' rules cover both): what a profile that opens the
/// network adds so name resolution works.
pub fn resolver_rules() -> Vec<NetRule> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    nameserver_rules(&text)
}

/// [`resolver_rules`] of a resolv.conf text.
pub fn nameserver_rules(resolv_conf: &str) -> Vec<NetRule> {
    let mut rules: Vec<NetRule> = resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        // A scoped IPv6 address (`fe80::1%eth0`) is the address before the zone.
        .filter_map(|addr| addr.split('%').next()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| NetRule {
            net: Some(IpNet::from(ip)),
            ports: PortRange::single(53),
        })
        .collect();
    rules.dedup();
    rules
}

#[cfg(test)]
mod resolver_tests {
    use super::*;

    #[test]
    fn host_name_entries_parse_with_wildcards_ports_and_protocols() {
        assert!(is_domain_entry("pypi.org:443"));
        assert!(is_domain_entry("*.githubusercontent.com:443"));
        assert!(!is_domain_entry("*:443"));
        assert!(!is_domain_entry("localhost:3000"));
        assert!(!is_domain_entry("[fd00::/8]:53"));
        assert!(!is_domain_entry("10.0.0.0/8:*"));
        let r = parse_domain_entry("API.Example.com.:443/udp").unwrap();
        assert_eq!(r.to_string(), "api.example.com:443/udp");
        assert_eq!(
            parse_domain_entry("pypi.org:443").unwrap().proto,
            Proto::Any
        );
        let wild = parse_domain_entry("*.githubusercontent.com:443").unwrap();
        assert!(wild.matches("objects.githubusercontent.com."));
        assert!(wild.matches("a.b.GITHUBUSERCONTENT.com"));
        assert!(!wild.matches("githubusercontent.com"));
        assert!(!wild.matches("evilgithubusercontent.com"));
        let exact = parse_domain_entry("pypi.org:443").unwrap();
        assert!(exact.matches("PyPI.org."));
        assert!(!exact.matches("files.pypi.org"));
        for bad in [
            "pypi.org",
            "py*.org:443",
            "*.com:443",
            "a..b:443",
            "x.org:443/sctp",
        ] {
            assert!(parse_domain_entry(bad).is_err(), "{bad}");
        }
        assert!(parse_net_entry("10.0.0.1:53/udp").is_err());
    }

    #[test]
    fn nameservers_become_port_53_rules() {
        let rules = nameserver_rules(
            "# generated\nsearch example.invalid\nnameserver 127.0.0.53\n\
             nameserver 2001:db8::1\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n",
        );
        let shown: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.53/32:53",
                "[2001:db8::1/128]:53",
                "[fe80::1/128]:53"
            ]
        );
    }
}
