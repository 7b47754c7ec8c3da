//! The ebpf-probes sandbox runtime on the host kernel: cgroup-BPF network rules, tracepoint
//! observers, kill-on-violation, sequence numbers and pinning.
//!
//! Needs root (loading BPF programs, creating cgroups); skipped with a message otherwise.
//! Every test pins under its own /sys/fs/bpf/agentbox-test-* root and removes it; children
//! only talk to loopback listeners the test opened itself.

use std::ffi::CString;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use agentbox_tests::bpf::{
    assert_gapless, errno_now, errno_of, next_sandbox_id, run_sandboxed, Child, PinRoot,
    SandboxRun, TempCgroup, TestRuntime,
};
use agentbox_tests::is_root;
use ebpf_probes::{
    default_deny_rules, probe, syscall_name, KernelEvent, LoadState, NetHook, NetRule, NetRules,
    NetVerdictReason, PortRange, ProgramKind, Runtime, Sandbox, SandboxConfig,
};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};

fn net(text: &str) -> ebpf_probes::ipnet::IpNet {
    text.parse().expect("network")
}

fn listener(addr: &str) -> (TcpListener, u16) {
    let listener = TcpListener::bind(addr).expect("bind listener");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

fn sockaddr4(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr6(ip: Ipv6Addr, port: u16) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: ip.octets(),
        },
        sin6_scope_id: 0,
    }
}

/// 0 or the errno of `op` on a fresh socket.
fn with_socket(domain: i32, kind: i32, proto: i32, op: impl FnOnce(i32) -> i32) -> i32 {
    // SAFETY: plain syscall; the fd is closed below.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return errno_now();
    }
    let ret = op(fd);
    let result = errno_of(ret.into());
    // SAFETY: fd is the socket opened above.
    unsafe { libc::close(fd) };
    result
}

fn connect_to(addr: SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(v4) => with_socket(libc::AF_INET, libc::SOCK_STREAM, 0, |fd| {
            let sa = sockaddr4(*v4.ip(), v4.port());
            // SAFETY: sa is a valid sockaddr_in of the length passed.
            unsafe { libc::connect(fd, (&raw const sa).cast(), size_of_val(&sa) as u32) }
        }),
        SocketAddr::V6(v6) => with_socket(libc::AF_INET6, libc::SOCK_STREAM, 0, |fd| {
            let sa = sockaddr6(*v6.ip(), v6.port());
            // SAFETY: sa is a valid sockaddr_in6 of the length passed.
            unsafe { libc::connect(fd, (&raw const sa).cast(), size_of_val(&sa) as u32) }
        }),
    }
}

fn udp_send_to(ip: Ipv4Addr, port: u16) -> i32 {
    with_socket(libc::AF_INET, libc::SOCK_DGRAM, 0, |fd| {
        let sa = sockaddr4(ip, port);
        let payload = b"agentbox";
        // SAFETY: payload and sa are valid for the lengths passed.
        unsafe {
            libc::sendto(
                fd,
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&raw const sa).cast(),
                size_of_val(&sa) as u32,
            ) as i32
        }
    })
}

fn bind_to(ip: Ipv4Addr, port: u16) -> i32 {
    with_socket(libc::AF_INET, libc::SOCK_STREAM, 0, |fd| {
        let sa = sockaddr4(ip, port);
        // SAFETY: sa is a valid sockaddr_in of the length passed.
        unsafe { libc::bind(fd, (&raw const sa).cast(), size_of_val(&sa) as u32) }
    })
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn v6(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// A port nobody listens on right now (bound and released).
fn free_port() -> u16 {
    listener("127.0.0.1:0").1
}

fn net_denials(events: &[KernelEvent]) -> Vec<(NetHook, Option<IpAddr>, u16, NetVerdictReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::NetDenied {
                hook,
                addr,
                port,
                rule,
                ..
            } => Some((*hook, *addr, *port, *rule)),
            _ => None,
        })
        .collect()
}
#[test]
fn network_rules_deny_with_events() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = TestRuntime::open("net");
    let (_allowed, allowed) = listener("127.0.0.1:0");
    let (_denied, denied) = listener("127.0.0.1:0");
    let (_allowed6, allowed6) = listener("[::1]:0");
    let (_denied6, denied6) = listener("[::1]:0");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let udp_port = udp.local_addr().expect("addr").port();
    let bind_ok = free_port();
    let bind_denied = free_port();

    let cfg_for = |id, cgroup: &Path| {
        let mut cfg = SandboxConfig::new(id, cgroup);
        cfg.net = NetRules {
            allow: vec![
                NetRule::new(net("0.0.0.0/0"), PortRange::ALL),
                NetRule::new(net("::/0"), PortRange::ALL),
                NetRule::new(net("127.0.0.1/32"), PortRange::single(allowed)),
                NetRule::new(net("::1/128"), PortRange::single(allowed6)),
            ],
            deny: Vec::new(),
            default_deny: default_deny_rules(),
            bind: vec![PortRange::single(bind_ok)],
            allow_netlink: false,
            allow_raw: false,
        };
        cfg
    };
    let SandboxRun {
        results,
        status,
        events,
        counters,
        ..
    } = run_sandboxed(&rt.runtime, cfg_for, move || {
        vec![
            connect_to(v4(allowed)),
            connect_to(v4(denied)),
            udp_send_to(Ipv4Addr::LOCALHOST, udp_port),
            connect_to(v6(Ipv6Addr::LOCALHOST, allowed6)),
            connect_to(v6(Ipv6Addr::LOCALHOST, denied6)),
            connect_to(v6(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), allowed)),
            connect_to(v6(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), denied)),
            with_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP, |_| 0),
            with_socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6, |_| 0),
            bind_to(Ipv4Addr::LOCALHOST, bind_ok),
            bind_to(Ipv4Addr::LOCALHOST, bind_denied),
            with_socket(libc::AF_PACKET, libc::SOCK_RAW, 0, |_| 0),
        ]
    });
    assert_eq!(status, WaitStatus::Exited(status.pid().unwrap(), 0));
    let eperm = libc::EPERM;
    assert_eq!(
        results[..11],
        [0, eperm, eperm, 0, eperm, 0, eperm, eperm, eperm, 0, eperm],
        "connect4 allowed/denied, udp sendto denied, connect6 allowed/denied, \
         v4-mapped allowed/denied, raw4, raw6, bind allowed/denied"
    );

    let lo4 = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let lo6 = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let denials = net_denials(&events);
    let deny = NetVerdictReason::DenyRule;
    let mut expected = vec![
        (NetHook::Connect, lo4, denied, deny),
        (NetHook::Sendmsg, lo4, udp_port, deny),
        (NetHook::Connect, lo6, denied6, deny),
        // The mapped address is reported as sent: ::ffff:127.0.0.1.
        (
            NetHook::Connect,
            Some(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())),
            denied,
            deny,
        ),
        (NetHook::SockCreate, None, 0, NetVerdictReason::SocketType),
        (NetHook::SockCreate, None, 0, NetVerdictReason::SocketType),
        (NetHook::Bind, lo4, bind_denied, NetVerdictReason::BindPort),
    ];
    // AF_PACKET: the kernel runs cgroup/sock_create only for inet sockets.
    eprintln!("AF_PACKET socket() in the sandbox: errno {}", results[11]);
    if results[11] == eperm && denials.len() == expected.len() + 1 {
        expected.push((NetHook::SockCreate, None, 0, NetVerdictReason::SocketFamily));
    }
    assert_eq!(denials, expected, "events: {events:#?}");
    for event in &events {
        assert_eq!(event.sandbox(), events[0].sandbox());
        if let KernelEvent::NetDenied {
            enforced, killed, ..
        } = event
        {
            assert!(*enforced && !*killed, "{event:?}");
        }
    }
    // No duplicate SyscallDenied for the denials the cgroup programs reported.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, KernelEvent::SyscallDenied { syscall, .. }
                if matches!(syscall_name(*syscall), Some("connect" | "sendto" | "bind")))),
        "{events:#?}"
    );
    assert_gapless(&events, &counters);
}

#[test]
fn most_specific_rule_wins_and_sandboxes_run_side_by_side() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = TestRuntime::open("side");
    let (_two, port) = listener("127.0.0.2:0");
    let target = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port));
    let base = |id, cgroup: &Path| {
        let mut cfg = SandboxConfig::new(id, cgroup);
        cfg.net.allow = vec![NetRule::new(net("0.0.0.0/0"), PortRange::ALL)];
        cfg.net.deny = vec![NetRule::new(net("127.0.0.0/8"), PortRange::ALL)];
        cfg
    };

    // Two sandboxes registered at once: A denies 127/8, B allows exactly PORT of 127.0.0.2
    // (the narrower address wins over the deny; the same address would not).
    let cgroup_a = TempCgroup::create("ebpf");
    let cgroup_b = TempCgroup::create("ebpf");
    let cfg_a = base(next_sandbox_id(), &cgroup_a.path);
    let mut cfg_b = base(next_sandbox_id(), &cgroup_b.path);
    cfg_b
        .net
        .allow
        .push(NetRule::new(net("127.0.0.2/32"), PortRange::single(port)));
    let a = rt.runtime.register_sandbox(&cfg_a).expect("register A");
    let b = rt.runtime.register_sandbox(&cfg_b).expect("register B");
    let mut events_a = a.events().expect("stream A");
    let mut events_b = b.events().expect("stream B");
    let other_port = free_port();
    let mut child_a = Child::spawn(move || vec![connect_to(target)]);
    let mut child_b = Child::spawn(move || {
        vec![
            connect_to(target),
            connect_to(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), other_port))),
        ]
    });
    child_a.release(Some(&cgroup_a.path), &a);
    child_b.release(Some(&cgroup_b.path), &b);
    let (results_a, _) = child_a.finish();
    let (results_b, _) = child_b.finish();
    assert_eq!(
        results_a,
        [libc::EPERM],
        "A: deny 127.0.0.0/8 beats 0.0.0.0/0"
    );
    assert_eq!(
        results_b,
        [0, libc::EPERM],
        "B: the exact allow opens PORT only"
    );

    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    events_a.drain(|e| seen_a.push(e)).expect("drain A");
    events_b.drain(|e| seen_b.push(e)).expect("drain B");
    let two = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(
        net_denials(&seen_a),
        [(NetHook::Connect, two, port, NetVerdictReason::DenyRule)]
    );
    assert_eq!(
        net_denials(&seen_b),
        [(
            NetHook::Connect,
            two,
            other_port,
            NetVerdictReason::DenyRule
        )]
    );
    assert!(seen_a.iter().all(|e| e.sandbox() == a.id()));
    assert!(seen_b.iter().all(|e| e.sandbox() == b.id()));
    assert_gapless(&seen_a, &a.counters());
    assert_gapless(&seen_b, &b.counters());

    // Dropping A detaches its programs; B keeps its rules.
    drop(a);
    let mut child = Child::spawn(move || vec![connect_to(target)]);
    child.release(
        Some(&cgroup_a.path),
        &b_dummy_guard(&rt.runtime, &cgroup_a.path),
    );
    let (after, _) = child.finish();
    assert_eq!(
        after,
        [0],
        "no rules after A is dropped (fresh all-allow sandbox)"
    );
    drop(b);
}

/// An all-allowing sandbox on `cgroup`, only used to tag a child after its rules were dropped.
fn b_dummy_guard(runtime: &Runtime, cgroup: &Path) -> Sandbox {
    let mut cfg = SandboxConfig::new(next_sandbox_id(), cgroup);
    cfg.net.allow = vec![NetRule::new(net("0.0.0.0/0"), PortRange::ALL)];
    runtime.register_sandbox(&cfg).expect("register")
}

/// Landlock without a single rule for reading files: every open for reading is EACCES.
/// Raw syscalls on purpose: this runs in a forked child of the threaded test harness, and
/// the landlock crate is not a dependency of this test package.
fn landlock_deny_reads() -> i32 {
    const LANDLOCK_ACCESS_FS_READ_FILE: u64 = 1 << 2;
    let attr: u64 = LANDLOCK_ACCESS_FS_READ_FILE; // struct landlock_ruleset_attr { handled_access_fs }
                                                  // SAFETY: attr is a valid landlock_ruleset_attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const attr,
            size_of::<u64>(),
            0,
        )
    };
    if fd < 0 {
        return errno_now();
    }
    // SAFETY: plain prctl/syscall; fd is the ruleset created above.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return errno_now();
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) != 0 {
            return errno_now();
        }
        libc::close(fd as i32);
    }
    0
}

/// seccomp: openat fails with EPERM (no arch check: test-only, native syscalls).
fn seccomp_deny_openat() -> i32 {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_openat as u32,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: program points at `filter`, which outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const program,
            ) != 0
        {
            return errno_now();
        }
    }
    0
}

fn open_read(path: &CString) -> i32 {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return errno_now();
    }
    // SAFETY: fd was opened above.
    unsafe { libc::close(fd) };
    0
}

#[test]
fn observers_label_denials_and_follow_descendants() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = TestRuntime::open("obs");
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret file");
    fs::write(&secret, b"token").expect("write");
    let secret_c = CString::new(secret.as_os_str().as_encoded_bytes()).expect("no NUL");
    let other = dir.path().join("seccomp\nnewline");
    let other_c = CString::new(other.as_os_str().as_encoded_bytes()).expect("no NUL");
    let (_denied, denied) = listener("127.0.0.1:0");

    let SandboxRun {
        results,
        status,
        events,
        counters,
        ..
    } = run_sandboxed(
        &rt.runtime,
        |id, cgroup| SandboxConfig::new(id, cgroup),
        move || {
            let mut results = Vec::new();
            // A thread: connects from another task of the same process.
            let thread = std::thread::spawn(move || connect_to(v4(denied)));
            results.push(thread.join().unwrap_or(-1));
            // fork, then setsid + fork again (reparented grandchild).
            // SAFETY: the forked processes only make syscalls and leave with _exit.
            unsafe {
                let child = libc::fork();
                if child == 0 {
                    libc::setsid();
                    let grandchild = libc::fork();
                    if grandchild == 0 {
                        let r = connect_to(v4(denied));
                        libc::_exit(if r == libc::EPERM { 0 } else { 1 });
                    }
                    let mut status = 0;
                    libc::waitpid(grandchild, &mut status, 0);
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
                results.push(libc::WEXITSTATUS(status));
                // exec in a child: an Exec event with the filename.
                let exec = libc::fork();
                if exec == 0 {
                    let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                    libc::execv(c"/bin/true".as_ptr(), argv.as_ptr());
                    libc::_exit(127);
                }
                libc::waitpid(exec, &mut status, 0);
                results.push(libc::WEXITSTATUS(status));
            }
            // Landlock denies the open: EACCES, labelled with the path.
            results.push(landlock_deny_reads());
            results.push(open_read(&secret_c));
            // seccomp refuses openat before the syscall runs: still labelled at exit.
            results.push(seccomp_deny_openat());
            results.push(open_read(&other_c));
            results
        },
    );
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert_eq!(
        results,
        [libc::EPERM, 0, 0, 0, libc::EACCES, 0, libc::EPERM],
        "thread connect, double-fork connect, exec /bin/true, landlock, open, seccomp, open"
    );
    let sandbox = events[0].sandbox();
    assert!(events.iter().all(|e| e.sandbox() == sandbox), "{events:#?}");

    let connect_pids: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::NetDenied {
                pid, tgid, port, ..
            } if *port == denied => Some((*pid, *tgid)),
            _ => None,
        })
        .collect();
    assert_eq!(connect_pids.len(), 2, "thread + grandchild: {events:#?}");
    let (thread_pid, thread_tgid) = connect_pids[0];
    assert_ne!(
        thread_pid, thread_tgid,
        "the first denial comes from a thread"
    );
    let (grand_pid, grand_tgid) = connect_pids[1];
    assert_eq!(grand_pid, grand_tgid);
    assert_ne!(grand_tgid, thread_tgid, "the second from another process");

    let opens: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::SyscallDenied {
                syscall,
                errno,
                path,
                tgid,
                ..
            } => Some((syscall_name(*syscall), *errno, path.clone(), *tgid)),
            _ => None,
        })
        .collect();
    let path = |p: &Path| Some(p.to_string_lossy().into_owned());
    assert_eq!(
        opens,
        [
            (Some("openat"), libc::EACCES, path(&secret), thread_tgid),
            (Some("openat"), libc::EPERM, path(&other), thread_tgid),
        ],
        "landlock then seccomp: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, KernelEvent::Exec { filename, .. } if filename == "/bin/true")),
        "{events:#?}"
    );
    let forks = events
        .iter()
        .filter(|e| matches!(e, KernelEvent::Fork { .. }))
        .count();
    assert!(
        forks >= 4,
        "thread, child, grandchild, exec child: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, KernelEvent::Exit { tgid, .. } if *tgid == thread_tgid)),
        "{events:#?}"
    );
    assert_eq!(counters.lost_task_storage, 0);
    assert_gapless(&events, &counters);
}

#[test]
fn kill_on_violation_kills_from_the_kernel() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = TestRuntime::open("kill");
    let (_denied, denied) = listener("127.0.0.1:0");
    let killing = |id, cgroup: &Path| {
        let mut cfg = SandboxConfig::new(id, cgroup);
        cfg.kill_on_violation = true;
        cfg
    };

    // Network denial (cgroup program marks the task, sys_exit kills).
    let SandboxRun {
        results,
        status,
        events,
        ..
    } = run_sandboxed(&rt.runtime, killing, move || {
        vec![connect_to(v4(denied)), 42]
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "{status:?}"
    );
    assert!(results.is_empty(), "the child never reported: {results:?}");
    assert!(
        events.iter().any(
            |e| matches!(e, KernelEvent::NetDenied { killed: true, port, .. } if *port == denied)
        ),
        "{events:#?}"
    );

    // Landlock denial (sys_exit sees -EACCES).
    let SandboxRun {
        results,
        status,
        events,
        ..
    } = run_sandboxed(&rt.runtime, killing, || {
        vec![
            landlock_deny_reads(),
            open_read(&CString::new("/etc/passwd").unwrap()),
        ]
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "{status:?} {results:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, KernelEvent::SyscallDenied { killed: true, errno, .. } if *errno == libc::EACCES)),
        "{events:#?}"
    );
}

#[test]
fn flood_of_denials_has_no_silent_gap() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    const ATTEMPTS: usize = 200_000;
    let rt = TestRuntime::open("flood");
    let (_denied, denied) = listener("127.0.0.1:0");
    let cgroup = TempCgroup::create("ebpf");
    let cfg = SandboxConfig::new(next_sandbox_id(), &cgroup.path);
    let sandbox = rt.runtime.register_sandbox(&cfg).expect("register");
    let mut stream = sandbox.events().expect("stream");
    let mut child = Child::spawn(move || {
        let sa = sockaddr4(Ipv4Addr::LOCALHOST, denied);
        // SAFETY: plain syscalls on a socket owned by this child.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let mut not_denied = 0;
        for _ in 0..ATTEMPTS {
            // SAFETY: sa is a valid sockaddr_in of the length passed.
            let ret = unsafe { libc::connect(fd, (&raw const sa).cast(), size_of_val(&sa) as u32) };
            if ret == 0 || errno_now() != libc::EPERM {
                not_denied += 1;
            }
        }
        vec![not_denied]
    });
    let started = Instant::now();
    child.release(Some(&cgroup.path), &sandbox);
    let mut delivered = 0u64;
    let mut last_seq_seen = 0u64;
    let mut ordered = true;
    let mut count = |e: KernelEvent| {
        delivered += 1;
        ordered &= e.seq() > last_seq_seen;
        last_seq_seen = e.seq();
    };
    // Drain while the child floods (the reader keeps up or the kernel counts the loss).
    let done = loop {
        stream
            .poll(Duration::from_millis(50), &mut count)
            .expect("poll");
        if let Ok(status) = waitpid(child.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status != WaitStatus::StillAlive {
                break status;
            }
        }
    };
    stream.drain(&mut count).expect("final drain");
    let elapsed = started.elapsed();
    let report = child.reaped_report();
    assert!(matches!(done, WaitStatus::Exited(_, 0)), "{done:?}");
    assert_eq!(report, [0], "every connect was denied");
    let counters = sandbox.counters();
    eprintln!(
        "flood: {ATTEMPTS} denied connects in {elapsed:?}; delivered {delivered} events \
         ({:.0}/s), counters {counters:?}",
        delivered as f64 / elapsed.as_secs_f64()
    );
    assert!(ordered, "events arrive in sequence order");
    assert!(counters.last_seq >= ATTEMPTS as u64);
    assert_eq!(
        delivered + counters.lost_violations + counters.lost_trace,
        counters.last_seq,
        "delivered + lost == last seq"
    );
}

#[test]
fn warm_open_reuses_pins_and_replaces_other_versions() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let root = PinRoot::create("warm");
    let started = Instant::now();
    let (cold, state) = Runtime::open(&root.path).expect("cold open");
    let cold_time = started.elapsed();
    assert_eq!(state, LoadState::Cold);
    let started = Instant::now();
    let (warm, state) = Runtime::open(&root.path).expect("warm open");
    let warm_time = started.elapsed();
    assert_eq!(state, LoadState::Warm);
    assert_eq!(warm.pin_dir(), cold.pin_dir());
    eprintln!("Runtime::open: cold {cold_time:?}, warm {warm_time:?}");
    drop(cold);

    // The warm runtime enforces on its own.
    let (_denied, denied) = listener("127.0.0.1:0");
    let SandboxRun {
        results,
        events,
        counters,
        ..
    } = run_sandboxed(
        &warm,
        |id, cgroup| SandboxConfig::new(id, cgroup),
        move || vec![connect_to(v4(denied))],
    );
    assert_eq!(results, [libc::EPERM]);
    assert_eq!(net_denials(&events).len(), 1);
    assert_gapless(&events, &counters);

    // A pin directory of another version is unpinned and reported.
    fs::create_dir(root.path.join("0123456789abcdef")).expect("fake old version");
    let (replaced, state) = Runtime::open(&root.path).expect("open over an old version");
    assert_eq!(
        state,
        LoadState::Replaced {
            old_version: "0123456789abcdef".into()
        }
    );
    assert!(!root.path.join("0123456789abcdef").exists());
    // The running runtime is unaffected by another open.
    let SandboxRun { results, .. } = run_sandboxed(
        &replaced,
        |id, cgroup| SandboxConfig::new(id, cgroup),
        move || vec![connect_to(v4(denied))],
    );
    assert_eq!(results, [libc::EPERM]);
    drop(warm);
    drop(replaced);
}

#[test]
fn registration_rejects_bad_configs() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = TestRuntime::open("cfg");
    let cgroup = TempCgroup::create("ebpf");
    let id = next_sandbox_id();
    let first = rt
        .runtime
        .register_sandbox(&SandboxConfig::new(id, &cgroup.path))
        .expect("register");
    let other = TempCgroup::create("ebpf");
    let err = rt
        .runtime
        .register_sandbox(&SandboxConfig::new(id, &other.path))
        .expect_err("same id twice");
    assert!(matches!(err, ebpf_probes::Error::SandboxExists(_)), "{err}");
    let err = rt
        .runtime
        .register_sandbox(&SandboxConfig::new(next_sandbox_id(), &cgroup.path))
        .expect_err("same cgroup twice");
    assert!(err.to_string().contains("already belongs"), "{err}");
    let err = rt
        .runtime
        .register_sandbox(&SandboxConfig::new(0, &other.path))
        .expect_err("id 0");
    assert!(matches!(err, ebpf_probes::Error::Config(_)), "{err}");
    drop(first);
    // After the failed attempts, the id and cgroup are free again once dropped.
    rt.runtime
        .register_sandbox(&SandboxConfig::new(id, &cgroup.path))
        .expect("register again after drop");
}

fn active_lsms() -> String {
    let path = Path::new("/sys/kernel/security/lsm");
    if !path.exists() {
        // securityfs is not always mounted; mounting it changes nothing else.
        let _ = nix::mount::mount(
            Some("securityfs"),
            "/sys/kernel/security",
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn probe_reports_what_this_kernel_accepts() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs");
        return;
    }
    for kind in [
        ProgramKind::Tracepoint,
        ProgramKind::TpBtf,
        ProgramKind::CgroupSockAddr,
    ] {
        if let Err(err) = probe(kind) {
            panic!(
                "{kind} must load on the host kernel: {err} (errno {:?})",
                err.errno
            );
        }
    }
    // Measured on the host: BPF LSM is in the LSM list but trampoline-based programs (lsm,
    // fentry) are refused with EPERM. If a host ever accepts it, bpf must be an active LSM.
    match probe(ProgramKind::Lsm) {
        Err(err) => {
            eprintln!("lsm probe on this host: {err}");
            assert_eq!(err.kind, ProgramKind::Lsm);
            assert_eq!(err.errno, Some(libc::EPERM), "{err}");
        }
        Ok(()) => {
            let lsms = active_lsms();
            assert!(
                lsms.split(',').any(|lsm| lsm.trim() == "bpf"),
                "lsm program loaded but bpf is not an active LSM: {lsms:?}"
            );
        }
    }
}

/// No cost when idle: the syscall observer's link stays pinned while any runtime of the
/// version is open and is unpinned (detached) by the last one to close; the next open
/// attaches it again from the pinned program, without a reload. The lifecycle observers
/// (fork, exec, exit: off the syscall path) stay attached.
#[test]
fn observers_detach_with_the_last_runtime_and_come_back_with_the_next() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs");
        return;
    }
    let root = PinRoot::create("idle");
    let (first, state) = Runtime::open(&root.path).expect("cold open");
    assert_eq!(state, LoadState::Cold);
    // The syscall observer attaches on a thread of the runtime's; registering a sandbox (or
    // this) waits for it.
    first
        .observers_attached()
        .expect("the syscall observer attaches");
    let link = first.pin_dir().join("links/observe_sys_exit");
    let lifecycle: Vec<_> = ["observe_fork", "observe_exec", "observe_exit"]
        .iter()
        .map(|name| first.pin_dir().join("links").join(name))
        .collect();
    assert!(link.exists(), "observers attached while a runtime is open");
    let (second, state) = Runtime::open(&root.path).expect("warm open");
    assert_eq!(state, LoadState::Warm);
    drop(first);
    assert!(
        link.exists(),
        "another runtime is still open: the observers stay"
    );
    drop(second);
    assert!(
        !link.exists(),
        "the last runtime closed: the syscall observer is detached"
    );
    for path in &lifecycle {
        assert!(
            path.exists(),
            "{}: the lifecycle observers stay attached",
            path.display()
        );
    }
    let (again, state) = Runtime::open(&root.path).expect("open after idle");
    assert_eq!(state, LoadState::Warm, "programs stay pinned: no reload");
    again
        .observers_attached()
        .expect("the syscall observer attaches again");
    assert!(link.exists(), "the next open attaches them again");

    // And they work: the sandboxed child's exit is observed.
    let SandboxRun { events, .. } = run_sandboxed(
        &again,
        |id, cgroup| SandboxConfig::new(id, cgroup),
        Vec::new,
    );
    assert!(
        events.iter().any(|e| matches!(e, KernelEvent::Exit { .. })),
        "no exit event from the re-attached observers: {events:?}"
    );
}

/// Ring slots pass from run to run with their rings: what a sandbox left unread (written
/// after its last drain, or by a supervisor that died) never reaches the next reader.
#[test]
fn a_reused_ring_slot_hands_over_no_events_of_the_sandbox_before() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = TestRuntime::open("slot");
    let cgroup = TempCgroup::create("slot");
    let (_denied, denied) = listener("127.0.0.1:0");
    let first = rt
        .runtime
        .register_sandbox(&SandboxConfig::new(next_sandbox_id(), &cgroup.path))
        .expect("register the first sandbox");
    let slot = first.ring_slot();
    let mut child = Child::spawn(move || vec![connect_to(v4(denied))]);
    child.release(Some(&cgroup.path), &first);
    let (results, _) = child.finish();
    assert_eq!(
        results,
        [libc::EPERM],
        "the first sandbox's connect ran and was denied"
    );
    assert!(
        first.counters().last_seq >= 1,
        "its denial was written to the ring"
    );
    drop(first); // unread

    // A child another test forks meanwhile inherits the slot's lock fd (flock locks belong
    // to the open file, which fork shares) and holds it until it exits: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = loop {
        let next = rt
            .runtime
            .register_sandbox(&SandboxConfig::new(next_sandbox_id(), &cgroup.path))
            .expect("register the next sandbox");
        if next.ring_slot() == slot || Instant::now() > deadline {
            break next;
        }
        drop(next);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(next.ring_slot(), slot, "the slot was reused");
    let mut seen = Vec::new();
    next.events()
        .expect("stream")
        .drain(|e| seen.push(e))
        .expect("drain");
    assert!(seen.is_empty(), "events of the sandbox before: {seen:?}");
}

/// A supervisor killed without teardown leaves its record, rules and parent links: reclaim
/// removes exactly the sandboxes whose cgroup is gone, once.
#[test]
fn reclaim_removes_dead_sandboxes_and_the_links_of_removed_parents() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = TestRuntime::open("reclaim");
    let live_group = TempCgroup::create("reclaim");
    let live = rt
        .runtime
        .register_sandbox(&SandboxConfig::new(next_sandbox_id(), &live_group.path))
        .expect("register the live sandbox");
    let dead_id = next_sandbox_id();
    let (dead_cgroup, dead_parent) = {
        let group = TempCgroup::create("reclaim");
        let mut cfg = SandboxConfig::new(dead_id, &group.path);
        cfg.net.allow = vec![NetRule::new(net("10.0.0.0/8"), PortRange::ALL)];
        // A crash: no Drop, so the entries stay.
        std::mem::forget(rt.runtime.register_sandbox(&cfg).expect("register"));
        let ids = (
            fs::metadata(&group.path).expect("group").ino(),
            fs::metadata(group.path.parent().expect("parent"))
                .expect("parent")
                .ino(),
        );
        drop(group); // the groups go, as a dead run's are collected
        ids
    };
    assert!(rt.runtime.sandbox_ids().contains(&dead_id));
    let parent_links = rt
        .runtime
        .pin_dir()
        .join("cgroups")
        .join(dead_parent.to_string());
    assert!(parent_links.exists(), "{}", parent_links.display());

    let mount = fs::File::open(agentbox_tests::bpf::cgroup2_mount()).expect("cgroup2 mount");
    let exists = |id: u64| ebpf_probes::cgroup_exists(&mount, id);
    assert!(!exists(dead_cgroup) && exists(live.cgroup_id()));
    assert_eq!(rt.runtime.reclaim_dead(exists), [dead_id]);
    assert!(!rt.runtime.sandbox_ids().contains(&dead_id));
    assert!(
        rt.runtime.sandbox_ids().contains(&live.id()),
        "the live one stays"
    );
    assert!(
        !parent_links.exists(),
        "links of a removed parent are unpinned"
    );
    assert!(rt.runtime.reclaim_dead(exists).is_empty(), "once");
}
