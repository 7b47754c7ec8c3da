//! BPF LSM network rules: connect() and UDP sendmsg() judged on the kernel's copy of the
//! destination, by the same rule tables as the cgroup-BPF layer; a disagreement between the
//! two layers is logged as an anomaly.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;

use agentbox_tests::bpf::{assert_gapless, errno_of, next_sandbox_id, Child, TempCgroup};
use ebpf_probes::{
    ipnet::IpNet, KernelEvent, LsmHook, LsmReason, LsmRules, NetRule, NetRules, PortRange,
    SandboxConfig,
};
use nix::sys::wait::WaitStatus;

use crate::lsm_support::{assert_denials, lsm_denials, lsm_runtime, run_with_rules};

fn sockaddr(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn connect(port: u16) -> i32 {
    // SAFETY: plain syscalls on a socket owned here; sa is valid for its length.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let sa = sockaddr(port);
        let ret = libc::connect(fd, (&raw const sa).cast(), size_of_val(&sa) as u32);
        let result = errno_of(ret.into());
        libc::close(fd);
        result
    }
}

fn send_to(port: u16) -> i32 {
    // SAFETY: plain syscalls on a socket owned here; buffers valid for their lengths.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        let sa = sockaddr(port);
        let ret = libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            0,
            (&raw const sa).cast(),
            size_of_val(&sa) as u32,
        );
        let result = errno_of(ret as i64);
        libc::close(fd);
        result
    }
}

fn rules_allowing(port: u16) -> NetRules {
    let lo: IpNet = "127.0.0.1/32".parse().expect("net");
    NetRules {
        allow: vec![NetRule::new(lo, PortRange::single(port))],
        ..NetRules::default()
    }
}

fn lsm_net() -> LsmRules {
    LsmRules {
        net: true,
        ..LsmRules::default()
    }
}

#[test]
fn connect_and_sendmsg_are_judged_by_the_lsm() {
    let rt = lsm_runtime();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let allowed_port = allowed.local_addr().expect("addr").port();
    let denied = TcpListener::bind("127.0.0.1:0").expect("listen");
    let denied_port = denied.local_addr().expect("addr").port();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let udp_port = udp.local_addr().expect("addr").port();

    let run = agentbox_tests::bpf::run_sandboxed(
        &rt.runtime,
        |id, cgroup: &Path| {
            let mut cfg = SandboxConfig::new(id, cgroup);
            cfg.net = rules_allowing(allowed_port);
            cfg.lsm = Some(lsm_net());
            cfg
        },
        move || {
            vec![
                connect(allowed_port),
                connect(denied_port),
                send_to(udp_port),
            ]
        },
    );
    assert!(matches!(run.status, WaitStatus::Exited(_, 0)), "{run:?}");
    assert_eq!(run.results, [0, libc::EPERM, libc::EPERM]);
    // The LSM hook runs before the cgroup program: the LSM reports, the cgroup layer never
    // sees the denied operations.
    assert_denials(
        &run,
        &[
            (LsmHook::SocketConnect, LsmReason::NetNoAllowRule, None),
            (LsmHook::SocketSendmsg, LsmReason::NetNoAllowRule, None),
        ],
    );
    let denials = lsm_denials(&run.events);
    let lo = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(denials[0].addr, Some((lo, denied_port)));
    assert_eq!(denials[1].addr, Some((lo, udp_port)));
    assert!(
        !run.events.iter().any(|e| matches!(
            e,
            KernelEvent::NetDenied { .. } | KernelEvent::LsmAnomaly { .. }
        )),
        "{:#?}",
        run.events
    );
    assert_gapless(&run.events, &run.counters);

    // Without `net` in the LSM rules the network is the cgroup layer's alone (here: no
    // allow rule at all), and the event is the cgroup program's.
    let run = run_with_rules(rt, LsmRules::default(), move || vec![connect(allowed_port)]);
    assert_eq!(run.results, [libc::EPERM]);
    assert!(lsm_denials(&run.events).is_empty(), "{:#?}", run.events);
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, KernelEvent::NetDenied { port, .. } if *port == allowed_port)),
        "{:#?}",
        run.events
    );
}

#[test]
fn lsm_and_cgroup_disagreement_is_an_anomaly() {
    let rt = lsm_runtime();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let allowed_port = allowed.local_addr().expect("addr").port();
    let denied = TcpListener::bind("127.0.0.1:0").expect("listen");
    let denied_port = denied.local_addr().expect("addr").port();

    // The task carries sandbox A's identity but stays outside A's cgroup: the cgroup layer
    // never runs for it (it would allow), the LSM denies by identity.
    let cgroup = TempCgroup::create("lsm-anomaly");
    let id = next_sandbox_id();
    let mut cfg = SandboxConfig::new(id, &cgroup.path);
    cfg.net = rules_allowing(allowed_port);
    cfg.lsm = Some(lsm_net());
    let sandbox = rt.runtime.register_sandbox(&cfg).expect("register");
    let mut stream = sandbox.events().expect("events");
    let mut child = Child::spawn(move || vec![connect(allowed_port), connect(denied_port)]);
    child.release(None, &sandbox);
    let (results, _) = child.finish();
    let mut events = Vec::new();
    stream.drain(|e| events.push(e)).expect("drain");

    assert_eq!(results, [0, libc::EPERM]);
    let anomalies: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::LsmAnomaly {
                hook,
                addr,
                lsm_allowed,
                cgroup_allowed,
                cgroup_sandbox,
                ..
            } => Some((*hook, *addr, *lsm_allowed, *cgroup_allowed, *cgroup_sandbox)),
            _ => None,
        })
        .collect();
    let lo = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(
        anomalies,
        [(
            LsmHook::SocketConnect,
            Some((lo, denied_port)),
            false,
            true,
            0
        )],
        "{events:#?}"
    );
    assert_eq!(lsm_denials(&events).len(), 1, "{events:#?}");
    assert_gapless(&events, &sandbox.counters());
}
