//! Network rules of one sandbox and their compilation into LPM-trie entries.
//!
//! Semantics: the most specific matching rule wins: the longest prefix first, then, between
//! rules of the same prefix, the narrower port range (so `allow 127.0.0.2/32:8080` reopens
//! one port of a default `deny 127.0.0.2/32:*`); on a full tie, deny wins. No matching rule
//! denies. An LPM lookup only returns the
//! longest matching prefix, so each trie entry carries the port ranges of every
//! less-specific rule that covers it, ordered longest prefix first (deny first on a tie): the
//! kernel takes the first range that holds the port (see net.bpf.h).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::layout::{NetVerdicts, PortVerdict, NET_VERDICTS_MAX};

/// An inclusive range of ports (host byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Every port, 0 to 65535.
    pub const ALL: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    pub fn new(lo: u16, hi: u16) -> Self {
        PortRange { lo, hi }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// A rule's protocols: TCP (stream sockets), UDP (datagram sockets), or both.
pub const PROTO_TCP: u8 = 0x01;
pub const PROTO_UDP: u8 = 0x02;
pub const PROTO_ANY: u8 = PROTO_TCP | PROTO_UDP;

/// One network and the destination ports (and protocols) it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetRule {
    pub net: IpNet,
    pub ports: PortRange,
    /// `PROTO_TCP`, `PROTO_UDP` or `PROTO_ANY`.
    pub protos: u8,
}

impl NetRule {
    /// A rule for TCP and UDP.
    pub fn new(net: IpNet, ports: PortRange) -> Self {
        NetRule {
            net,
            ports,
            protos: PROTO_ANY,
        }
    }

    /// One address (a /32 or /128), TCP and UDP.
    pub fn host(addr: IpAddr, ports: PortRange) -> Self {
        NetRule::new(IpNet::from(addr), ports)
    }

    /// The same rule for `protos` only.
    pub fn with_protos(self, protos: u8) -> Self {
        NetRule { protos, ..self }
    }
}

/// The network policy of one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetRules {
    /// Destinations that connect()/sendmsg() may reach.
    pub allow: Vec<NetRule>,
    /// Destinations that stay denied even under a broader allow rule, and under an allow of
    /// the same address whatever its ports.
    pub deny: Vec<NetRule>,
    /// Denies agentbox adds on its own (host loopback, cloud metadata: `default_deny_rules`):
    /// like `deny`, except that an allow of the same address wins over them.
    pub default_deny: Vec<NetRule>,
    /// Local ports that bind() may take (port 0, "any ephemeral port", is always allowed).
    pub bind: Vec<PortRange>,
    /// socket(AF_NETLINK, ...).
    pub allow_netlink: bool,
    /// SOCK_RAW sockets and AF_PACKET.
    pub allow_raw: bool,
}

/// A rule after IPv4-mapped IPv6 networks were folded into IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flat {
    net: IpNet,
    ports: PortRange,
    protos: u8,
    /// At the same address: 0 a deny, 1 an allow, 2 a default deny (the order they win in).
    class: u8,
}

/// `::ffff:a.b.c.d/n` (n >= 96) is the IPv4 network `a.b.c.d/(n-96)`: the kernel programs
/// judge v4-mapped destinations by the IPv4 trie.
fn normalise(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other.trunc(),
    }
}

/// A compiled trie entry: (network, its verdict list).
pub(crate) type TrieEntry<N> = (N, NetVerdicts);

/// The IPv4 and IPv6 trie entries of one sandbox.
#[derive(Debug, Default)]
pub(crate) struct CompiledRules {
    pub v4: Vec<TrieEntry<Ipv4Net>>,
    pub v6: Vec<TrieEntry<Ipv6Net>>,
}

/// Compilation failed: an entry would need more port ranges than the kernel value holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network rule {net} is covered by {needed} port ranges; at most {NET_VERDICTS_MAX} fit")]
pub struct TooManyRanges {
    pub net: IpNet,
    pub needed: usize,
}

pub(crate) fn compile(rules: &NetRules) -> Result<CompiledRules, TooManyRanges> {
    let flat: Vec<Flat> = rules
        .deny
        .iter()
        .map(|rule| (rule, 0))
        .chain(rules.allow.iter().map(|rule| (rule, 1)))
        .chain(rules.default_deny.iter().map(|rule| (rule, 2)))
        .map(|(rule, class)| Flat {
            net: normalise(rule.net),
            ports: rule.ports,
            protos: rule.protos,
            class,
        })
        .collect();

    // One trie entry per distinct network (BTreeMap: deterministic order).
    let mut networks: BTreeMap<IpNet, ()> = BTreeMap::new();
    for rule in &flat {
        networks.insert(rule.net, ());
    }
    let mut compiled = CompiledRules::default();
    for net in networks.into_keys() {
        let mut covering: Vec<&Flat> = flat.iter().filter(|rule| rule.net.contains(&net)).collect();
        // The one precedence (docs/profiles.md): the rule naming the narrower address wins;
        // for the same address a deny wins over an allow whatever the ports (`*:*` denied
        // stays denied under `*:443` allowed), and an allow over a default deny (an allow of
        // `[::1]:3000` opens that port of the loopback agentbox denies); then the narrower
        // port range.
        covering.sort_by_key(|rule| {
            (
                std::cmp::Reverse(rule.net.prefix_len()),
                rule.class,
                rule.ports.hi - rule.ports.lo,
                rule.protos.count_ones(),
            )
        });
        covering.dedup_by(|a, b| a == b);
        if covering.len() > NET_VERDICTS_MAX {
            return Err(TooManyRanges {
                net,
                needed: covering.len(),
            });
        }
        let mut verdicts = NetVerdicts::default();
        for (slot, rule) in verdicts.v.iter_mut().zip(&covering) {
            *slot = PortVerdict {
                lo: rule.ports.lo,
                hi: rule.ports.hi,
                allow: u8::from(rule.class == 1),
                prefixlen: rule.net.prefix_len(),
                protos: rule.protos,
                _pad: 0,
            };
        }
        verdicts.count = covering.len() as u32;
        match net {
            IpNet::V4(v4) => compiled.v4.push((v4, verdicts)),
            IpNet::V6(v6) => compiled.v6.push((v6, verdicts)),
        }
    }
    Ok(compiled)
}

/// The trie entry of one host address under `rules` (its verdict list, covering rules
/// included), or `None` when no rule names exactly that address. The address in IPv4 form
/// where it is v4-mapped.
pub(crate) fn host_entry(
    rules: &NetRules,
    addr: IpAddr,
) -> Result<(IpNet, Option<NetVerdicts>), TooManyRanges> {
    let host = normalise(IpNet::from(addr));
    let compiled = compile(rules)?;
    let found = match host {
        IpNet::V4(v4) => compiled.v4.iter().find(|(n, _)| *n == v4).map(|(_, v)| *v),
        IpNet::V6(v6) => compiled.v6.iter().find(|(n, _)| *n == v6).map(|(_, v)| *v),
    };
    Ok((host, found))
}

/// What the kernel decides for a destination of protocol `proto` (`PROTO_TCP` or
/// `PROTO_UDP`), computed the way net.bpf.h does it (LPM lookup of the longest prefix, first
/// range holding the port and the protocol). Used by the unprivileged supervisor and tests.
pub fn verdict(
    rules: &NetRules,
    addr: IpAddr,
    port: u16,
    proto: u8,
) -> Result<bool, TooManyRanges> {
    let compiled = compile(rules)?;
    let addr = match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let longest = match addr {
        IpAddr::V4(v4) => longest_match(&compiled.v4, |net: &Ipv4Net| net.contains(&v4)),
        IpAddr::V6(v6) => longest_match(&compiled.v6, |net: &Ipv6Net| net.contains(&v6)),
    };
    Ok(longest.is_some_and(|verdicts| {
        verdicts.v[..verdicts.count as usize]
            .iter()
            .find(|range| range.lo <= port && port <= range.hi && range.protos & proto == proto)
            .is_some_and(|range| range.allow != 0)
    }))
}

fn longest_match<N: Copy + PrefixLen>(
    entries: &[TrieEntry<N>],
    contains: impl Fn(&N) -> bool,
) -> Option<&NetVerdicts> {
    entries
        .iter()
        .filter(|(net, _)| contains(net))
        .max_by_key(|(net, _)| net.prefix())
        .map(|(_, verdicts)| verdicts)
}

trait PrefixLen {
    fn prefix(&self) -> u8;
}

impl PrefixLen for Ipv4Net {
    fn prefix(&self) -> u8 {
        self.prefix_len()
    }
}

impl PrefixLen for Ipv6Net {
    fn prefix(&self) -> u8 {
        self.prefix_len()
    }
}

/// The default deny rules every sandbox should carry unless its profile names them exactly:
/// host loopback and the cloud metadata endpoints, all ports.
pub fn default_deny_rules() -> Vec<NetRule> {
    let v4 = |a: [u8; 4], len| IpNet::from(Ipv4Net::new(Ipv4Addr::from(a), len).expect("valid"));
    let v6 = |a: Ipv6Addr, len| IpNet::from(Ipv6Net::new(a, len).expect("valid"));
    let nets: [IpNet; 10] = [
        // The host itself: loopback, and the wildcard addresses, which connect to it too.
        v4([127, 0, 0, 0], 8),
        v6(Ipv6Addr::LOCALHOST, 128),
        v4([0, 0, 0, 0], 32),
        v6(Ipv6Addr::UNSPECIFIED, 128),
        // Link-local, where the clouds serve instance metadata and credentials (AWS, GCP,
        // Azure IMDS, Oracle, DigitalOcean, OpenStack at 169.254.169.254; Tencent at
        // 169.254.0.23; AWS ECS task credentials at 169.254.170.2).
        v4([169, 254, 0, 0], 16),
        // AWS and GCP over IPv6.
        v6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), 128),
        v6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254), 128),
        // Alibaba Cloud; Azure's WireServer (certificates, extension settings); Oracle
        // Cloud Classic.
        v4([100, 100, 100, 200], 32),
        v4([168, 63, 129, 16], 32),
        v4([192, 0, 0, 192], 32),
    ];
    nets.into_iter()
        .map(|net| NetRule::new(net, PortRange::ALL))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("valid network")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    fn rules(allow: &[(&str, PortRange)], deny: &[(&str, PortRange)]) -> NetRules {
        NetRules {
            allow: allow
                .iter()
                .map(|(n, p)| NetRule::new(net(n), *p))
                .collect(),
            deny: deny.iter().map(|(n, p)| NetRule::new(net(n), *p)).collect(),
            ..NetRules::default()
        }
    }

    #[test]
    fn nothing_allowed_denies_everything() {
        let none = NetRules::default();
        assert!(!verdict(&none, ip("1.2.3.4"), 443, PROTO_TCP).unwrap());
        assert!(!verdict(&none, ip("::1"), 443, PROTO_TCP).unwrap());
    }

    #[test]
    fn deny_wins_under_a_broad_allow() {
        let r = rules(
            &[("0.0.0.0/0", PortRange::ALL)],
            &[("127.0.0.0/8", PortRange::ALL)],
        );
        assert!(verdict(&r, ip("8.8.8.8"), 53, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("127.0.0.2"), 8080, PROTO_TCP).unwrap());
        // The /8 entry carries the /0 allow after its own deny.
        let compiled = compile(&r).unwrap();
        let (_, loopback) = compiled
            .v4
            .iter()
            .find(|(n, _)| n.prefix_len() == 8)
            .unwrap();
        assert_eq!(loopback.count, 2);
        assert_eq!((loopback.v[0].allow, loopback.v[0].prefixlen), (0, 8));
        assert_eq!((loopback.v[1].allow, loopback.v[1].prefixlen), (1, 0));
    }

    #[test]
    fn exact_allow_reopens_one_port_of_a_denied_net() {
        let r = rules(
            &[
                ("0.0.0.0/0", PortRange::ALL),
                ("127.0.0.2/32", PortRange::single(8080)),
            ],
            &[("127.0.0.0/8", PortRange::ALL)],
        );
        assert!(verdict(&r, ip("127.0.0.2"), 8080, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("127.0.0.2"), 8081, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("127.0.0.3"), 8080, PROTO_TCP).unwrap());
    }

    #[test]
    fn tie_goes_to_deny() {
        let r = rules(
            &[("10.0.0.0/8", PortRange::ALL)],
            &[("10.0.0.0/8", PortRange::single(22))],
        );
        assert!(!verdict(&r, ip("10.1.1.1"), 22, PROTO_TCP).unwrap());
        assert!(verdict(&r, ip("10.1.1.1"), 23, PROTO_TCP).unwrap());
    }

    #[test]
    fn same_address_deny_wins_whatever_the_ports_a_default_deny_loses() {
        let r = rules(
            &[("127.0.0.2/32", PortRange::single(8080))],
            &[("127.0.0.2/32", PortRange::ALL)],
        );
        assert!(!verdict(&r, ip("127.0.0.2"), 8080, PROTO_TCP).unwrap());
        let mut r = rules(
            &[("0.0.0.0/0", PortRange::single(443))],
            &[("0.0.0.0/0", PortRange::ALL)],
        );
        assert!(
            !verdict(&r, ip("1.1.1.1"), 443, PROTO_TCP).unwrap(),
            "offline + --allow-net *:443"
        );
        r.deny.clear();
        r.allow
            .push(NetRule::new(net("::1/128"), PortRange::single(3000)));
        r.default_deny = default_deny_rules();
        assert!(verdict(&r, ip("::1"), 3000, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("::1"), 3001, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("127.0.0.1"), 443, PROTO_TCP).unwrap());
        let r = rules(
            &[("127.0.0.2/32", PortRange::single(8080))],
            &[("127.0.0.2/32", PortRange::single(8080))],
        );
        assert!(!verdict(&r, ip("127.0.0.2"), 8080, PROTO_TCP).unwrap());
    }

    #[test]
    fn less_specific_ports_are_inherited() {
        // A more specific deny on other ports must not hide the covering allow.
        let r = rules(
            &[("10.0.0.0/8", PortRange::single(443))],
            &[("10.1.0.0/16", PortRange::single(22))],
        );
        assert!(verdict(&r, ip("10.1.2.3"), 443, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("10.1.2.3"), 22, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("10.1.2.3"), 80, PROTO_TCP).unwrap());
        assert!(verdict(&r, ip("10.2.0.1"), 443, PROTO_TCP).unwrap());
    }

    #[test]
    fn unrelated_entries_do_not_leak_ports() {
        let r = rules(
            &[
                ("10.0.0.0/8", PortRange::single(443)),
                ("192.168.0.0/16", PortRange::ALL),
            ],
            &[],
        );
        let compiled = compile(&r).unwrap();
        let (_, ten) = compiled
            .v4
            .iter()
            .find(|(n, _)| n.prefix_len() == 8)
            .unwrap();
        assert_eq!(ten.count, 1);
        assert!(!verdict(&r, ip("10.0.0.1"), 80, PROTO_TCP).unwrap());
    }

    #[test]
    fn ipv4_mapped_rules_and_addresses_fold_into_ipv4() {
        let r = rules(&[("::ffff:127.0.0.1/128", PortRange::single(80))], &[]);
        let compiled = compile(&r).unwrap();
        assert_eq!(compiled.v4.len(), 1);
        assert!(compiled.v6.is_empty());
        assert!(verdict(&r, ip("127.0.0.1"), 80, PROTO_TCP).unwrap());
        assert!(verdict(&r, ip("::ffff:127.0.0.1"), 80, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("::1"), 80, PROTO_TCP).unwrap());
    }

    #[test]
    fn ipv6_rules() {
        let mut r = rules(&[("::/0", PortRange::ALL)], &[]);
        r.default_deny = default_deny_rules();
        assert!(!verdict(&r, ip("::1"), 80, PROTO_TCP).unwrap());
        assert!(!verdict(&r, ip("fd00:ec2::254"), 80, PROTO_TCP).unwrap());
        assert!(verdict(&r, ip("2001:db8::1"), 80, PROTO_TCP).unwrap());
        // No IPv4 allow rule: IPv4 stays denied.
        assert!(!verdict(&r, ip("8.8.8.8"), 53, PROTO_TCP).unwrap());
    }

    #[test]
    fn host_bits_are_ignored() {
        let r = rules(&[("10.1.2.3/8", PortRange::ALL)], &[]);
        let compiled = compile(&r).unwrap();
        assert_eq!(
            compiled.v4[0].0,
            net("10.0.0.0/8").to_string().parse().unwrap()
        );
    }

    #[test]
    fn too_many_covering_ranges_is_an_error() {
        let allow: Vec<(String, PortRange)> = (0..=NET_VERDICTS_MAX as u16)
            .map(|port| ("10.0.0.0/8".to_owned(), PortRange::single(port)))
            .collect();
        let allow: Vec<(&str, PortRange)> = allow.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        let err = compile(&rules(&allow, &[])).unwrap_err();
        assert_eq!(err.needed, NET_VERDICTS_MAX + 1);
    }
}

#[cfg(test)]
mod proto_tests {
    use super::*;

    #[test]
    fn a_rule_for_one_protocol_leaves_the_other_to_the_rules_below_it() {
        let host: IpAddr = "192.0.2.7".parse().unwrap();
        let r = NetRules {
            allow: vec![NetRule::host(host, PortRange::single(443)).with_protos(PROTO_UDP)],
            ..NetRules::default()
        };
        assert!(verdict(&r, host, 443, PROTO_UDP).unwrap());
        assert!(!verdict(&r, host, 443, PROTO_TCP).unwrap());
        // A UDP-only deny under a TCP and UDP allow of the same address: TCP passes.
        let r = NetRules {
            allow: vec![NetRule::host(host, PortRange::ALL)],
            deny: vec![NetRule::host(host, PortRange::single(53)).with_protos(PROTO_UDP)],
            ..NetRules::default()
        };
        assert!(!verdict(&r, host, 53, PROTO_UDP).unwrap());
        assert!(verdict(&r, host, 53, PROTO_TCP).unwrap());
    }
}
