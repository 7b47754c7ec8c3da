//! cgroup-BPF network layer: connect4/6, sendmsg4/6, bind4/6 and sock_create programs on the
//! sandbox's cgroup2 group decide egress by address and port (TCP and UDP) and bind ports,
//! on the kernel's own copy of the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use ebpf_probes::ipnet::IpNet;
use ebpf_probes::ProgramKind;

use super::RuntimeHandle;
use crate::layers::{Host, Offer};
use crate::policy::{Coverage, Guarantee, Layer, Policy};
use crate::policy::{NetRule, Status};

pub(crate) const LAYER: Layer = Layer::CgroupBpf;

/// The guarantees this layer gives where its programs are attached.
const GUARANTEES: [Guarantee; 3] = [
    Guarantee::NetAddresses,
    Guarantee::NetTcpConnectPorts,
    Guarantee::NetTcpBindPorts,
];

/// Doctor's view: the programs load and a cgroup2 group can hold them.
pub(crate) fn offers(host: &Host) -> Vec<Offer> {
    let by = host
        .cgroup2_group()
        .and_then(|cg| {
            host.bpf(ProgramKind::CgroupSockAddr)
                .map(|_| format!("cgroup-bpf ({})", cg.display()))
        })
        .map_err(|e| host.privileged_reason(format!("cgroup-bpf: {e}")));
    GUARANTEES
        .iter()
        .chain(&[Guarantee::NetSocketFamilies])
        .map(|&g| Offer::new(g, by.clone()))
        .collect()
}

/// Checks the rules fit the kernel's tables and says what the layer delivers here.
pub(crate) fn compile(policy: &Policy, runtime: &RuntimeHandle) -> anyhow::Result<Coverage> {
    // Catches rule sets the kernel value cannot hold before anything is started.
    ebpf_probes::verdict(
        &net_rules(policy),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        0,
        ebpf_probes::PROTO_TCP,
    )
    .context("compiling the network rules for cgroup-BPF")?;
    let status = match runtime {
        Ok(_) => Status::Enforced,
        Err(why) => Status::Missing(why.clone()),
    };
    let mut coverage = Coverage::default();
    for g in GUARANTEES {
        coverage.push(LAYER, g, status.clone());
    }
    Ok(coverage)
}

/// The policy's network section as kernel rules: `None` addresses become 0.0.0.0/0 and ::/0,
/// and the default denies (host loopback, cloud metadata) are added; an allow entry naming
/// one of them exactly still wins (most specific rule wins, see ebpf_probes::rules).
pub(crate) fn net_rules(policy: &Policy) -> ebpf_probes::NetRules {
    let expand = |rule: &NetRule| -> Vec<ebpf_probes::NetRule> {
        let ports = ebpf_probes::PortRange::new(rule.ports.first, rule.ports.last);
        match rule.net {
            Some(net) => vec![ebpf_probes::NetRule::new(net, ports)],
            None => vec![
                ebpf_probes::NetRule::new(
                    IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("valid /0"),
                    ports,
                ),
                ebpf_probes::NetRule::new(
                    IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("valid /0"),
                    ports,
                ),
            ],
        }
    };
    let net = &policy.network;
    ebpf_probes::NetRules {
        allow: net.allow.iter().flat_map(expand).collect(),
        deny: net.deny.iter().flat_map(expand).collect(),
        default_deny: ebpf_probes::default_deny_rules(),
        bind: net
            .bind
            .iter()
            .map(|r| ebpf_probes::PortRange::new(r.first, r.last))
            .collect(),
        // The seccomp layer refuses netlink sockets exactly when nothing is allowed; glibc's
        // resolver needs them otherwise.
        allow_netlink: net.opens_network(),
        allow_raw: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PortRange;

    fn policy() -> Policy {
        Policy {
            name: "t".into(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_allow_beats_default_loopback_deny_and_wildcards_do_not() {
        let mut p = policy();
        p.network.allow.push(NetRule {
            net: Some("127.0.0.1/32".parse().unwrap()),
            ports: PortRange::single(8080),
        });
        p.network.allow.push(NetRule {
            net: None,
            ports: PortRange::single(443),
        });
        let rules = net_rules(&p);
        let v = |a: &str, port| {
            ebpf_probes::verdict(&rules, ip(a), port, ebpf_probes::PROTO_TCP).unwrap()
        };
        assert!(v("127.0.0.1", 8080));
        assert!(!v("127.0.0.1", 8081));
        assert!(!v("127.0.0.2", 8080));
        // `*:443` reaches the world on both families but neither loopback nor metadata.
        assert!(v("93.184.216.34", 443));
        assert!(v("2001:db8::1", 443));
        assert!(!v("127.0.0.1", 443));
        assert!(!v("::1", 443));
        assert!(!v("169.254.169.254", 443));
        assert!(!v("93.184.216.34", 80));
    }

    #[test]
    fn policy_deny_wins_over_a_broader_allow() {
        let mut p = policy();
        p.network.allow.push(NetRule {
            net: Some("10.0.0.0/8".parse().unwrap()),
            ports: PortRange::ANY,
        });
        p.network.deny.push(NetRule {
            net: Some("10.1.0.0/16".parse().unwrap()),
            ports: PortRange::ANY,
        });
        let rules = net_rules(&p);
        assert!(ebpf_probes::verdict(&rules, ip("10.2.3.4"), 22, ebpf_probes::PROTO_TCP).unwrap());
        assert!(!ebpf_probes::verdict(&rules, ip("10.1.3.4"), 22, ebpf_probes::PROTO_TCP).unwrap());
        assert!(rules.allow_netlink);
        assert!(!net_rules(&policy()).allow_netlink);
    }
}
