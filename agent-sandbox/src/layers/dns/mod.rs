//! DNS layer: host-name rules (`pypi.org:443`, `*.githubusercontent.com:443`).
//!
//! The supervisor is the sandbox's only resolver. Every DNS query of the sandbox reaches it,
//! whatever address the agent sent it to: as root the cgroup programs send every connect and
//! datagram to port 53 to the resolver's loopback address (and show the answer as coming
//! from the address the agent asked, net.bpf.h `dns_redirect`); unprivileged the supervisor,
//! which performs every connect and datagram send of the sandbox itself, sends them there.
//! The resolver answers only names an entry covers (NXDOMAIN and a denial for the rest),
//! forwards those to the upstream, and before it answers opens the addresses of the answer
//! to this sandbox for the record's TTL (`resolver`). An address the agent did not get from
//! it stays closed, so a name is reachable only through its answer.

pub(crate) mod resolver;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};

use anyhow::Context;

use crate::layers::{Host, Offer};
use crate::policy::{Coverage, DomainRule, Guarantee, Layer, Policy, Status};

/// Everything the resolver needs, prepared before fork: its sockets exist before the agent
/// does, so the address in the kernel's redirect is bound from the first query on.
#[derive(Debug)]
pub(crate) struct DnsPlan {
    pub rules: Vec<DomainRule>,
    /// `None`: the host names no resolver; allowed names are answered SERVFAIL.
    pub upstream: Option<SocketAddr>,
    /// UDP and TCP on the same loopback port.
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub addr: SocketAddrV4,
    /// Addresses the resolver never opens (the policy's denies and agentbox's default ones:
    /// host loopback, cloud metadata), whatever a name resolves to.
    pub never: Vec<ipnet::IpNet>,
}

impl DnsPlan {
    /// The same plan on duplicated sockets (the resolver thread owns its copy).
    pub(crate) fn try_clone(&self) -> std::io::Result<DnsPlan> {
        Ok(DnsPlan {
            rules: self.rules.clone(),
            upstream: self.upstream,
            udp: self.udp.try_clone()?,
            tcp: self.tcp.try_clone()?,
            addr: self.addr,
            never: self.never.clone(),
        })
    }
}

/// Doctor's view: root redirects in the kernel; unprivileged the supervisor does.
pub(crate) fn offers(host: &Host) -> Vec<Offer> {
    let by = if host.root {
        host.bpf(ebpf_probes::ProgramKind::CgroupSockAddr)
            .map(|()| "cgroup-bpf port-53 redirect to the supervisor's resolver".to_string())
            .map_err(|e| format!("cgroup-bpf: {e}"))
    } else if host.user_notif {
        Ok("the supervisor (connect and send mediated; partial, see the launch record)".into())
    } else {
        Err("needs cgroup-bpf (root) or seccomp user notification".into())
    };
    vec![Offer::new(Guarantee::NetDomains, by)]
}

/// The resolver's plan when the policy names hosts. `kernel`: the cgroup programs redirect
/// and hold the granted addresses (root); else the supervisor does both.
pub(crate) fn compile(
    policy: &Policy,
    kernel: Result<(), String>,
) -> anyhow::Result<(Option<DnsPlan>, Coverage)> {
    let net = &policy.network;
    let mut coverage = Coverage::default();
    if net.domains.is_empty() {
        return Ok((None, coverage));
    }
    // A host without a resolver (an offline VM) still runs the profile: its lookups fail
    // as they would without agentbox.
    let upstream = net.dns_upstream.or_else(host_nameserver);
    if upstream.is_none() {
        tracing::warn!(
            "host-name rules but no upstream resolver (/etc/resolv.conf names none): lookups \
             of allowed names fail; set `[network] dns_upstream = \"IP:PORT\"` or pass \
             --dns-upstream"
        );
    }
    let (udp, tcp) = bind_pair().context("binding the sandbox's resolver on 127.0.0.1")?;
    let addr = match udp.local_addr()? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => anyhow::bail!("resolver bound to IPv6"),
    };
    let status = match kernel {
        Ok(()) => Status::Enforced,
        Err(why) => Status::Partial(format!(
            "the supervisor redirects DNS and checks addresses (no cgroup-BPF here: {why}); \
             a datagram sent by sendmsg/sendmmsg to port 53 is refused, not redirected"
        )),
    };
    coverage.push(Layer::Dns, Guarantee::NetDomains, status);
    let mut never: Vec<ipnet::IpNet> = net.deny.iter().filter_map(|r| r.net).collect();
    never.extend(ebpf_probes::default_deny_rules().iter().map(|r| r.net));
    Ok((
        Some(DnsPlan {
            rules: net.domains.clone(),
            upstream,
            udp,
            tcp,
            addr,
            never,
        }),
        coverage,
    ))
}

/// The first nameserver of /etc/resolv.conf, port 53.
fn host_nameserver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    crate::profile::resolver_rules_in(&text)
        .into_iter()
        .find_map(|r| r.net)
        .map(|n| SocketAddr::new(n.addr(), 53))
}

/// A UDP socket and a TCP listener on one free port of 127.0.0.1 (CLOEXEC, as std makes
/// them: the agent never holds them).
fn bind_pair() -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}
