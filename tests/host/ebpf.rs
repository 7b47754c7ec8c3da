//! The ebpf-probes sandbox runtime on the host kernel: cgroup-BPF network rules, tracepoint
//! observers, kill-on-violation, sequence numbers and pinning.
//!
//! Needs root (loading BPF programs, creating cgroups); skipped with a message otherwise.
//! Every test pins under its own /sys/fs/bpf/agentbox-test-* root and removes it; children
//! only talk to loopback listeners the test opened itself.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ebpf_probes::{
    default_deny_rules, probe, syscall_name, KernelEvent, LoadState, NetHook, NetRule, NetRules,
    NetVerdictReason, PortRange, ProgramKind, Runtime, Sandbox, SandboxConfig,
};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The first cgroup2 mount in /proc/self/mountinfo (hybrid hosts: /sys/fs/cgroup/unified).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            if fs.split(' ').next()? != "cgroup2" {
                return None;
            }
            mount.split(' ').nth(4).map(unescape_mountinfo)
        })
        .expect("a cgroup2 mount (pure v2 or hybrid)")
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(String::from_utf8(out).expect("utf-8 mount point"))
}

/// A fresh cgroup2 directory, removed on drop (also when the test panics).
struct TempCgroup {
    path: PathBuf,
}

impl TempCgroup {
    fn create() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!("agentbox-test-ebpf-{}-{nanos}", std::process::id());
        let path = cgroup2_mount().join(name);
        fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        TempCgroup { path }
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        // Children in it have been reaped by now, so the group is empty.
        if let Err(err) = fs::remove_dir(&self.path) {
            eprintln!("warning: rmdir {}: {err}", self.path.display());
        }
    }
}

/// A pin root of its own under /sys/fs/bpf, removed on drop (after the runtimes using it).
struct PinRoot {
    path: PathBuf,
}

impl PinRoot {
    fn create(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/agentbox-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        PinRoot { path }
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Err(err) = fs::remove_dir_all(&self.path) {
                eprintln!("warning: removing {}: {err}", self.path.display());
            }
        }
    }
}

/// A runtime on a fresh pin root. Field order: the runtime closes before the pins go.
struct TestRuntime {
    runtime: Runtime,
    _root: PinRoot,
}

fn test_runtime(tag: &str) -> TestRuntime {
    let root = PinRoot::create(tag);
    let (runtime, state) = Runtime::open(&root.path).expect("Runtime::open");
    assert_eq!(state, LoadState::Cold);
    TestRuntime {
        runtime,
        _root: root,
    }
}

fn next_sandbox_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn net(text: &str) -> ebpf_probes::ipnet::IpNet {
    text.parse().expect("network")
}

fn listener(addr: &str) -> (TcpListener, u16) {
    let listener = TcpListener::bind(addr).expect("bind listener");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

fn errno_now() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded, so both fds are open and owned only here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A forked child that waits until the parent placed it in the sandbox (cgroup + task tag),
/// runs its scenario and reports one i32 per step. glibc's fork() resets the malloc locks,
/// so the scenario may allocate; it must not print.
struct Child {
    pid: Pid,
    go: Option<OwnedFd>,
    report: OwnedFd,
}

impl Child {
    fn spawn(scenario: impl FnOnce() -> Vec<i32>) -> Child {
        let (go_read, go_write) = pipe();
        let (report_read, report_write) = pipe();
        // SAFETY: the child runs the scenario and leaves with _exit, never returning here.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            drop(go_write);
            drop(report_read);
            let mut byte = [0u8; 1];
            let mut go = fs::File::from(go_read);
            if go.read_exact(&mut byte).is_err() {
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(2) };
            }
            let results = scenario();
            let bytes: Vec<u8> = results.iter().flat_map(|r| r.to_ne_bytes()).collect();
            let _ = fs::File::from(report_write).write_all(&bytes);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        Child {
            pid: Pid::from_raw(pid),
            go: Some(go_write),
            report: report_read,
        }
    }

    /// Moves the child into `cgroup`, tags it for `sandbox` and lets it run.
    fn release(&mut self, cgroup: &Path, sandbox: &Sandbox) {
        fs::write(cgroup.join("cgroup.procs"), self.pid.to_string()).expect("join cgroup");
        // SAFETY: plain syscall; the returned fd is owned below.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid.as_raw(), 0) };
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: pidfd_open returned a new fd owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        sandbox.seed_task(pidfd.as_fd()).expect("seed task");
        let go = self.go.take().expect("released once");
        fs::File::from(go).write_all(b"g").expect("release child");
    }

    /// Waits for the child; returns its report and exit status.
    fn finish(self) -> (Vec<i32>, WaitStatus) {
        let mut bytes = Vec::new();
        fs::File::from(self.report)
            .read_to_end(&mut bytes)
            .expect("read report");
        let status = waitpid(self.pid, None).expect("waitpid");
        let results = bytes
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes(c.try_into().expect("4 bytes")))
            .collect();
        (results, status)
    }
}

/// Runs `scenario` in a child placed in a fresh sandbox; returns the child's results, its
/// exit status, every event of the sandbox and the sandbox's final counters.
fn run_sandboxed(
    runtime: &Runtime,
    cfg_for: impl FnOnce(u32, &Path) -> SandboxConfig,
    scenario: impl FnOnce() -> Vec<i32>,
) -> (
    Vec<i32>,
    WaitStatus,
    Vec<KernelEvent>,
    ebpf_probes::Counters,
) {
    let cgroup = TempCgroup::create();
    let cfg = cfg_for(next_sandbox_id(), &cgroup.path);
    let sandbox = runtime.register_sandbox(&cfg).expect("register sandbox");
    let mut stream = sandbox.events().expect("event stream");
    let mut child = Child::spawn(scenario);
    child.release(&cgroup.path, &sandbox);
    let (results, status) = child.finish();
    let mut events = Vec::new();
    stream.drain(|e| events.push(e)).expect("drain");
    let counters = sandbox.counters();
    (results, status, events, counters)
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
    let result = if ret < 0 { errno_now() } else { 0 };
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

fn assert_gapless(events: &[KernelEvent], counters: &ebpf_probes::Counters) {
    let seqs: BTreeSet<u64> = events.iter().map(KernelEvent::seq).collect();
    assert_eq!(seqs.len(), events.len(), "sequence numbers are unique");
    assert_eq!(
        events.len() as u64 + counters.lost_violations + counters.lost_trace,
        counters.last_seq,
        "delivered + lost == last seq: {counters:?}"
    );
}

#[test]
fn network_rules_deny_with_events() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let rt = test_runtime("net");
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
            deny: default_deny_rules(),
            bind: vec![PortRange::single(bind_ok)],
            allow_netlink: false,
            allow_raw: false,
        };
        cfg
    };
    let (results, status, events, counters) = run_sandboxed(&rt.runtime, cfg_for, move || {
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
    let rt = test_runtime("side");
    let (_two, port) = listener("127.0.0.2:0");
    let target = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port));
    let base = |id, cgroup: &Path| {
        let mut cfg = SandboxConfig::new(id, cgroup);
        cfg.net.allow = vec![NetRule::new(net("0.0.0.0/0"), PortRange::ALL)];
        cfg.net.deny = vec![NetRule::new(net("127.0.0.2/32"), PortRange::ALL)];
        cfg
    };

    // Two sandboxes registered at once: A denies 127.0.0.2, B allows exactly PORT on it.
    let cgroup_a = TempCgroup::create();
    let cgroup_b = TempCgroup::create();
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
    child_a.release(&cgroup_a.path, &a);
    child_b.release(&cgroup_b.path, &b);
    let (results_a, _) = child_a.finish();
    let (results_b, _) = child_b.finish();
    assert_eq!(
        results_a,
        [libc::EPERM],
        "A: deny 127.0.0.2/32 beats 0.0.0.0/0"
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
    child.release(&cgroup_a.path, &b_dummy_guard(&rt.runtime, &cgroup_a.path));
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
    let rt = test_runtime("obs");
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret file");
    fs::write(&secret, b"token").expect("write");
    let secret_c = CString::new(secret.as_os_str().as_encoded_bytes()).expect("no NUL");
    let other = dir.path().join("seccomp\nnewline");
    let other_c = CString::new(other.as_os_str().as_encoded_bytes()).expect("no NUL");
    let (_denied, denied) = listener("127.0.0.1:0");

    let (results, status, events, counters) = run_sandboxed(
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
            // seccomp refuses openat before sys_enter runs: still labelled.
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
    let rt = test_runtime("kill");
    let (_denied, denied) = listener("127.0.0.1:0");
    let killing = |id, cgroup: &Path| {
        let mut cfg = SandboxConfig::new(id, cgroup);
        cfg.kill_on_violation = true;
        cfg
    };

    // Network denial (cgroup program marks the task, sys_exit kills).
    let (results, status, events, _) = run_sandboxed(&rt.runtime, killing, move || {
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
    let (results, status, events, _) = run_sandboxed(&rt.runtime, killing, || {
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
    let rt = test_runtime("flood");
    let (_denied, denied) = listener("127.0.0.1:0");
    let cgroup = TempCgroup::create();
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
    child.release(&cgroup.path, &sandbox);
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
    let mut report = Vec::new();
    fs::File::from(child.report)
        .read_to_end(&mut report)
        .expect("report");
    assert!(matches!(done, WaitStatus::Exited(_, 0)), "{done:?}");
    assert_eq!(report, 0i32.to_ne_bytes(), "every connect was denied");
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
    let (results, _, events, counters) = run_sandboxed(
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
    let (results, _, _, _) = run_sandboxed(
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
    let rt = test_runtime("cfg");
    let cgroup = TempCgroup::create();
    let id = next_sandbox_id();
    let first = rt
        .runtime
        .register_sandbox(&SandboxConfig::new(id, &cgroup.path))
        .expect("register");
    let other = TempCgroup::create();
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
