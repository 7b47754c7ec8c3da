//! Network entries: `host-or-cidr:port-or-range`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::policy::{NetRule, PortRange};

/// Parse one network entry into the rules it stands for.
///
/// Accepted: `*:443`, `10.0.0.0/8:*`, `127.0.0.1:8080`, `[::1]:8000-8100`, `[fd00::/8]:53`,
/// `localhost:3000` (→ `127.0.0.0/8` and `::1`). IPv6 addresses go in brackets. IPv4-mapped
/// IPv6 (`::ffff:10.0.0.1`) becomes plain IPv4, since that is what the kernel hooks see.
/// Host names other than `localhost` are refused: they need the DNS layer.
pub fn parse_net_entry(s: &str) -> Result<Vec<NetRule>, String> {
    let s = s.trim();
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
                format!(
                    "host names are not supported yet (`{host}`): domain rules need the DNS \
                     layer; use an IP address or CIDR, or `localhost`"
                )
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

fn nameserver_rules(resolv_conf: &str) -> Vec<NetRule> {
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
