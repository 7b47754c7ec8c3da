//! The seccomp layer and its notifier against the real kernel.
//!
//! Each kernel test forks a child that only does async-signal-safe work (the test process is
//! multi-threaded): no_new_privs, install the filter, pass the listener up, make one syscall,
//! write (ret, errno) to a pipe, `_exit`. The parent runs the real `Notifier`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::notify::{recv_listener, send_listener, Notifier, Readiness};
use super::*;
use crate::audit::{Action, Denial, Object};
use crate::policy::{Mode, NetPolicy, NetRule, PortRange, SyscallPolicy, ViolationAction};

fn policy_with(groups: &[SyscallGroup]) -> Policy {
    Policy {
        name: "seccomp-test".into(),
        mode: Mode::Enforce,
        filesystem: Default::default(),
        network: Default::default(),
        process: Default::default(),
        syscalls: SyscallPolicy {
            deny_groups: groups.to_vec(),
            deny: vec![],
            allow: vec![],
        },
        audit: Default::default(),
    }
}

fn default_policy() -> Policy {
    policy_with(&SyscallGroup::ALL)
}

fn with_network(mut p: Policy) -> Policy {
    p.network = NetPolicy {
        allow: vec![NetRule {
            net: None,
            ports: PortRange::single(443),
        }],
        ..Default::default()
    };
    p
}

/// A raw syscall result as `ret` or `-errno`.
fn sys(ret: libc::c_long) -> i64 {
    if ret == -1 {
        // SAFETY: reading this thread's errno.
        -i64::from(unsafe { *libc::__errno_location() })
    } else {
        ret
    }
}

struct Outcome {
    /// The syscall's result in the child (`-errno` on failure); `None` if it died first.
    result: Option<i64>,
    denials: Vec<Denial>,
    /// waitpid status of the child.
    status: libc::c_int,
}

/// Run `attempt` in a forked child confined by `policy`; the parent answers notifications.
fn run_confined(policy: &Policy, attempt: fn() -> i64) -> Outcome {
    let (program, _) = compile(policy, None).expect("compile");
    let (sock_parent, sock_child) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let (pipe_r, pipe_w) = nix::unistd::pipe().expect("pipe");

    // SAFETY: the child below only makes async-signal-safe syscalls and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let code = child(&program, &sock_child, &pipe_w, attempt);
        // SAFETY: _exit skips atexit handlers and the test harness state copied by fork.
        unsafe { libc::_exit(code) };
    }
    drop(sock_child);
    drop(pipe_w);

    let listener = match recv_listener(sock_parent.as_fd()) {
        Ok(fd) => fd,
        Err(e) => {
            let status = reap(pid);
            panic!("child sent no listener ({e}); exit status {:#x}", status);
        }
    };
    let mut notifier = Notifier::new(listener, &program, policy.mode, policy.process.on_violation)
        .expect("notifier");

    let mut denials = Vec::new();
    let mut result = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "child did not finish in time");
        let mut fds = [
            libc::pollfd {
                fd: notifier.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pipe_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds on the stack.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            if let Some(d) = notifier.handle_one().expect("handle_one") {
                denials.push(d);
            }
            continue;
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 16];
            let got = nix::unistd::read(&pipe_r, &mut buf).expect("read result");
            if got == 16 {
                let ret = i64::from_ne_bytes(buf[..8].try_into().unwrap());
                result = Some(ret);
            }
            break;
        }
    }
    // Nothing must be left pending once the child answered.
    assert_ne!(
        notifier.wait(Some(Duration::ZERO)).unwrap(),
        Readiness::Ready
    );
    let status = reap(pid);
    Outcome {
        result,
        denials,
        status,
    }
}

fn child(program: &SeccompProgram, sock: &OwnedFd, pipe_w: &OwnedFd, attempt: fn() -> i64) -> i32 {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return 101;
    }
    let Ok(listener) = program.install() else {
        return 102;
    };
    if send_listener(sock.as_fd(), listener.as_fd()).is_err() {
        return 103;
    }
    drop(listener);
    let ret = attempt();
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&ret.to_ne_bytes());
    // SAFETY: writing 16 bytes from a stack buffer.
    let n = unsafe { libc::write(pipe_w.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n == 16 {
        0
    } else {
        104
    }
}

fn reap(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", io::Error::last_os_error());
    status
}

fn exited_cleanly(o: &Outcome) -> bool {
    libc::WIFEXITED(o.status) && libc::WEXITSTATUS(o.status) == 0
}

/// The single denial, checked for the common fields.
fn one_denial(o: &Outcome, name: &str, rule: &str, action: Action) -> Denial {
    assert_eq!(
        o.denials.len(),
        1,
        "expected one denial, got {:?}",
        o.denials
    );
    let d = o.denials[0].clone();
    assert_eq!(d.layer, "seccomp");
    assert_eq!(d.rule, rule);
    assert_eq!(d.action, action);
    assert!(d.pid > 0);
    assert_eq!(
        d.ppid,
        Some(std::process::id() as i32),
        "ppid is the test process"
    );
    assert!(d.exe.is_some(), "exe read from /proc");
    match &d.object {
        Object::Syscall { name: n, .. } => assert_eq!(n, name),
        other => panic!("expected a syscall object, got {other:?}"),
    }
    d
}

const EPERM: i64 = -(libc::EPERM as i64);

// ---------- compile: no kernel involved ----------

#[test]
fn seccomp_every_group_resolves_and_compiles() {
    let (program, cov) = compile(&default_policy(), None).expect("all groups compile");
    let table = program.table();
    for name in [
        "mount",
        "ptrace",
        "bpf",
        "keyctl",
        "io_uring_setup",
        "open_tree_attr",
        "setns",
    ] {
        let nr = syscall_number(name).unwrap();
        assert!(!table.rules_for(nr).is_empty(), "{name} denied by default");
    }
    assert!(table.rules_for(libc::SYS_getpid).is_empty());
    assert!(cov
        .entries
        .iter()
        .any(|e| e.guarantee == Guarantee::SyscallFilter));
    // Marker gone, USER_NOTIF present, arch pinned first.
    let insns: Vec<_> = program.instructions().collect();
    assert!(insns.iter().all(|&(code, _, _, k)| !(code == RET_K
        && k & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_TRACE)));
    assert!(insns
        .iter()
        .any(|&(code, _, _, k)| code == RET_K && k == libc::SECCOMP_RET_USER_NOTIF));
    assert_eq!(insns[0], (LD_W_ABS, 0, 0, DATA_ARCH));
    assert_eq!(insns[1].3, AUDIT_ARCH_X86_64);
}

#[test]
fn seccomp_group_names_match_the_profile_spelling() {
    for g in SyscallGroup::ALL {
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            format!("\"{}\"", g.name())
        );
    }
}

#[test]
fn seccomp_unknown_names_are_errors_naming_them() {
    let mut p = default_policy();
    p.syscalls.deny = vec!["mount".into(), "definitely_not_a_syscall".into()];
    let err = compile(&p, None).unwrap_err().to_string();
    assert!(
        err.contains("definitely_not_a_syscall") && err.contains("syscalls.deny"),
        "{err}"
    );

    let mut p = default_policy();
    p.syscalls.allow = vec!["nope_allow".into()];
    let err = compile(&p, None).unwrap_err().to_string();
    assert!(
        err.contains("nope_allow") && err.contains("syscalls.allow"),
        "{err}"
    );
}

#[test]
fn seccomp_allow_carves_out_of_groups_and_deny_adds() {
    let mut p = default_policy();
    p.syscalls.allow = vec!["mount".into()];
    p.syscalls.deny = vec!["getppid".into()];
    let (program, _) = compile(&p, None).unwrap();
    let t = program.table();
    assert!(t.rules_for(libc::SYS_mount).is_empty());
    assert!(!t.rules_for(libc::SYS_umount2).is_empty());
    let r = t.rules_for(libc::SYS_getppid);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].rule, "syscalls.deny: getppid");
}

#[test]
fn seccomp_conditions_match_like_the_kernel() {
    let t = compile(&default_policy(), None).unwrap().0;
    let t = t.table();
    let tiocsti = libc::TIOCSTI;
    assert!(t.denies(libc::SYS_ioctl, &[0, tiocsti | 1 << 32, 0, 0, 0, 0]));
    assert!(!t.denies(libc::SYS_ioctl, &[0, libc::TIOCGWINSZ, 0, 0, 0, 0]));
    assert!(!t.denies(libc::SYS_personality, &[0xffff_ffff, 0, 0, 0, 0, 0]));
    assert!(!t.denies(libc::SYS_personality, &[0, 0, 0, 0, 0, 0]));
    assert!(t.denies(
        libc::SYS_personality,
        &[libc::ADDR_NO_RANDOMIZE as u64, 0, 0, 0, 0, 0]
    ));
    let newuser = libc::CLONE_NEWUSER as u64;
    assert!(t.denies(
        libc::SYS_unshare,
        &[newuser | libc::CLONE_FS as u64, 0, 0, 0, 0, 0]
    ));
    assert!(!t.denies(libc::SYS_clone, &[libc::SIGCHLD as u64, 0, 0, 0, 0, 0]));
    let (name, rule) = t.describe(AUDIT_ARCH_X86_64, (X32_SYSCALL_BIT | 39) as i32, &[0; 6]);
    assert_eq!((name.as_str(), rule.as_str()), ("x32:getpid", ARCH_RULE));
    let (name, rule) = t.describe(AUDIT_ARCH_I386, 20, &[0; 6]);
    assert_eq!((name.as_str(), rule.as_str()), ("i386:20", ARCH_RULE));
}

#[test]
fn seccomp_coverage_on_this_kernel() {
    let (_, cov) = compile(&default_policy(), None).unwrap();
    let expected = kernel::seccomp_action_available(libc::SECCOMP_RET_USER_NOTIF);
    for g in [
        Guarantee::SyscallFilter,
        Guarantee::SyscallDenialsLogged,
        Guarantee::NetSocketFamilies,
    ] {
        assert_eq!(cov.enforces(g), expected, "{g:?}");
    }
}

// ---------- real kernel ----------

#[test]
fn seccomp_mount_denied_and_logged() {
    let o = run_confined(&default_policy(), || {
        // An unknown fs type: unfiltered, the kernel says ENODEV, so EPERM can only come from us.
        let ret = unsafe {
            // SAFETY: valid NUL-terminated strings; null data.
            libc::syscall(
                libc::SYS_mount,
                c"none".as_ptr(),
                c"/".as_ptr(),
                c"agentbox-no-such-fs".as_ptr(),
                0,
                std::ptr::null::<u8>(),
            )
        };
        sys(ret)
    });
    assert!(exited_cleanly(&o));
    assert_eq!(o.result, Some(EPERM));
    let d = one_denial(&o, "mount", "syscalls.deny-groups: mount", Action::Denied);
    let Object::Syscall { nr, .. } = d.object else {
        unreachable!()
    };
    assert_eq!(nr, libc::SYS_mount);
}

#[test]
fn seccomp_unshare_newuser_denied_and_logged() {
    let o = run_confined(&default_policy(), || {
        // SAFETY: integer argument only.
        sys(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) })
    });
    assert_eq!(o.result, Some(EPERM));
    one_denial(
        &o,
        "unshare",
        "syscalls.deny-groups: namespaces",
        Action::Denied,
    );
}

#[test]
fn seccomp_clone_newnet_denied_and_logged() {
    let o = run_confined(&default_policy(), || {
        // SAFETY: fork-like clone with a null stack; a child that gets here exits at once.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWNET | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        };
        if ret == 0 {
            // SAFETY: leaving the unexpected clone child.
            unsafe { libc::_exit(0) };
        }
        sys(ret)
    });
    assert_eq!(o.result, Some(EPERM));
    one_denial(
        &o,
        "clone",
        "syscalls.deny-groups: namespaces",
        Action::Denied,
    );
}

#[test]
fn seccomp_clone3_is_enosys_without_event() {
    let o = run_confined(&default_policy(), || {
        // NULL args, size 0: unfiltered the kernel answers EINVAL, never forks.
        // SAFETY: the kernel validates the size before reading.
        sys(unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) })
    });
    assert_eq!(o.result, Some(-(libc::ENOSYS as i64)));
    assert!(o.denials.is_empty(), "{:?}", o.denials);
}

#[test]
fn seccomp_tiocsti_with_upper_bits_denied_and_logged() {
    let o = run_confined(&default_policy(), || {
        let c = b'x';
        // fd -1: unfiltered the kernel says EBADF; only the filter answers EPERM.
        let cmd = libc::TIOCSTI | 1 << 32;
        // SAFETY: pointer to a live byte; the fd is invalid anyway.
        sys(unsafe { libc::syscall(libc::SYS_ioctl, -1, cmd, &c as *const u8) })
    });
    assert_eq!(o.result, Some(EPERM));
    let d = one_denial(
        &o,
        "ioctl",
        "syscalls.deny-groups: tty-injection",
        Action::Denied,
    );
    let Object::Syscall { args, .. } = d.object else {
        unreachable!()
    };
    assert_eq!(
        args[1],
        libc::TIOCSTI | 1 << 32,
        "the event shows the raw argument"
    );
}

#[test]
fn seccomp_allowed_syscalls_unaffected() {
    let o = run_confined(&default_policy(), || {
        // SAFETY: no arguments / integer arguments.
        let pid = unsafe { libc::syscall(libc::SYS_getpid) };
        // SAFETY: the personality query reads no memory.
        let persona = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
        if persona < 0 {
            return -1000;
        }
        sys(pid)
    });
    assert!(exited_cleanly(&o));
    assert!(o.result.unwrap() > 0, "getpid works: {:?}", o.result);
    assert!(o.denials.is_empty(), "{:?}", o.denials);
}

#[test]
fn seccomp_audit_mode_lets_the_call_run_and_logs_it() {
    let mut p = default_policy();
    p.mode = Mode::Audit;
    let o = run_confined(&p, || {
        // SAFETY: integer arguments only.
        let set = unsafe { libc::syscall(libc::SYS_personality, libc::ADDR_NO_RANDOMIZE) };
        if set < 0 {
            return sys(set);
        }
        // The change took effect: the query reports it.
        // SAFETY: as above.
        sys(unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) })
    });
    assert_eq!(o.result, Some(libc::ADDR_NO_RANDOMIZE as i64));
    let d = one_denial(
        &o,
        "personality",
        "syscalls.deny-groups: legacy",
        Action::Audited,
    );
    let Object::Syscall { args, .. } = d.object else {
        unreachable!()
    };
    assert_eq!(args[0], libc::ADDR_NO_RANDOMIZE as u64);
}

#[test]
fn seccomp_enforce_mode_denies_personality() {
    let o = run_confined(&default_policy(), || {
        // SAFETY: integer argument only.
        sys(unsafe { libc::syscall(libc::SYS_personality, libc::ADDR_NO_RANDOMIZE) })
    });
    assert_eq!(o.result, Some(EPERM));
    one_denial(
        &o,
        "personality",
        "syscalls.deny-groups: legacy",
        Action::Denied,
    );
}

#[test]
fn seccomp_kill_on_violation_kills_the_process() {
    let mut p = default_policy();
    p.process.on_violation = ViolationAction::Kill;
    let o = run_confined(&p, || {
        // SAFETY: integer arguments; keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0).
        sys(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) })
    });
    assert_eq!(o.result, None, "the child never returned from keyctl");
    assert!(
        libc::WIFSIGNALED(o.status) && libc::WTERMSIG(o.status) == libc::SIGKILL,
        "{:#x}",
        o.status
    );
    assert_eq!(o.denials.len(), 1, "{:?}", o.denials);
    let d = &o.denials[0];
    assert_eq!(d.action, Action::Killed);
    assert_eq!(d.rule, "syscalls.deny-groups: keyring");
}

#[test]
fn seccomp_x32_syscall_refused_and_logged() {
    let o = run_confined(&default_policy(), || {
        // SAFETY: getpid through the x32 number; no arguments.
        sys(unsafe { libc::syscall(X32_SYSCALL_BIT as libc::c_long | libc::SYS_getpid) })
    });
    assert_eq!(o.result, Some(EPERM));
    let d = one_denial(&o, "x32:getpid", ARCH_RULE, Action::Denied);
    let Object::Syscall { nr, .. } = d.object else {
        unreachable!()
    };
    assert_eq!(nr, i64::from(X32_SYSCALL_BIT) | libc::SYS_getpid);
}

/// getpid through the i386 entry (`int 0x80`, i386 number 20).
fn i386_getpid() -> i64 {
    let mut ret: i64 = 20;
    // SAFETY: int 0x80 with eax=20 (getpid) reads no memory; the compat entry may clobber
    // r8-r11, declared here.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("rax") ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack)
        );
    }
    // The compat entry returns a 32-bit value.
    i64::from(ret as i32)
}

#[test]
fn seccomp_i386_int80_refused_and_logged() {
    let o = run_confined(&default_policy(), i386_getpid);
    if libc::WIFSIGNALED(o.status) && libc::WTERMSIG(o.status) == libc::SIGSEGV {
        // Kernel without IA32 emulation: int 0x80 faults, the attack cannot run at all.
        assert!(o.denials.is_empty());
        return;
    }
    assert_eq!(o.result, Some(EPERM));
    let d = one_denial(&o, "i386:20", ARCH_RULE, Action::Denied);
    let Object::Syscall { nr, .. } = d.object else {
        unreachable!()
    };
    assert_eq!(nr, 20);
}

#[test]
fn seccomp_packet_socket_denied_and_logged() {
    let o = run_confined(&with_network(default_policy()), || {
        // SAFETY: integer arguments only.
        sys(unsafe { libc::syscall(libc::SYS_socket, libc::AF_PACKET, libc::SOCK_RAW, 0) })
    });
    assert_eq!(o.result, Some(EPERM));
    one_denial(
        &o,
        "socket",
        "network: socket family AF_PACKET denied",
        Action::Denied,
    );
}

#[test]
fn seccomp_udp_denied_without_network() {
    let o = run_confined(&default_policy(), || {
        let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
        // SAFETY: integer arguments only.
        sys(unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, ty, 0) })
    });
    assert_eq!(o.result, Some(EPERM));
    one_denial(
        &o,
        "socket",
        "network: AF_INET SOCK_DGRAM denied (network.allow is empty)",
        Action::Denied,
    );
}

#[test]
fn seccomp_udp_and_netlink_route_allowed_with_network() {
    let o = run_confined(&with_network(default_policy()), || {
        let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
        // SAFETY: integer arguments only.
        let udp = sys(unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET6, ty, 0) });
        if udp < 0 {
            return udp;
        }
        // SAFETY: integer arguments only.
        sys(unsafe { libc::syscall(libc::SYS_socket, libc::AF_NETLINK, libc::SOCK_RAW, 0) })
    });
    assert!(o.result.unwrap() >= 0, "{:?}", o.result);
    assert!(o.denials.is_empty(), "{:?}", o.denials);
}

#[test]
fn seccomp_tcp_stream_allowed_without_network() {
    // Landlock, not seccomp, decides TCP: creating the socket must work.
    let o = run_confined(&default_policy(), || {
        // SAFETY: integer arguments only.
        sys(unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) })
    });
    assert!(o.result.unwrap() >= 0, "{:?}", o.result);
    assert!(o.denials.is_empty());
}

/// Run by `seccomp_threads_and_spawn_work_under_the_filter` inside the sandbox (re-executing
/// this test binary); ignored in a normal run.
#[test]
#[ignore = "helper: runs inside the sandbox of another test"]
fn seccomp_helper_threads_and_spawn() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.contains("Seccomp:\t2"),
        "not running under a seccomp filter"
    );
    // glibc tries clone3 first (ENOSYS here) and falls back to clone for threads and spawn.
    let t = std::thread::spawn(|| 7).join().expect("thread");
    assert_eq!(t, 7);
    let status = std::process::Command::new("/bin/true")
        .status()
        .expect("spawn /bin/true");
    assert!(status.success());
}

#[test]
fn seccomp_threads_and_spawn_work_under_the_filter() {
    use std::ffi::CString;
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let args: Vec<CString> = [
        exe.to_str().unwrap(),
        "--ignored",
        "--exact",
        "layers::seccomp::tests::seccomp_helper_threads_and_spawn",
        "--test-threads=1",
        "--quiet",
    ]
    .iter()
    .map(|s| CString::new(*s).unwrap())
    .collect();
    let o = run_confined_exec(&default_policy(), &args);
    assert!(
        libc::WIFEXITED(o.status) && libc::WEXITSTATUS(o.status) == 0,
        "helper failed under the filter: status {:#x}",
        o.status
    );
    assert!(o.denials.is_empty(), "{:?}", o.denials);
}

/// Like `run_confined`, but the child execs `argv` after installing the filter.
fn run_confined_exec(policy: &Policy, argv: &[std::ffi::CString]) -> Outcome {
    let (program, _) = compile(policy, None).expect("compile");
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (sock_parent, sock_child) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");

    // SAFETY: the child below only makes async-signal-safe syscalls, then execs or _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            // SAFETY: _exit in the forked child.
            unsafe { libc::_exit(101) };
        }
        let Ok(listener) = program.install() else {
            // SAFETY: as above.
            unsafe { libc::_exit(102) }
        };
        if send_listener(sock_child.as_fd(), listener.as_fd()).is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(103) };
        }
        drop(listener);
        // SAFETY: argv is a NULL-terminated array of C strings built before fork.
        unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
        // SAFETY: as above.
        unsafe { libc::_exit(104) };
    }
    drop(sock_child);
    let listener = recv_listener(sock_parent.as_fd()).expect("listener");
    let mut notifier = Notifier::new(listener, &program, policy.mode, policy.process.on_violation)
        .expect("notifier");
    let mut denials = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "child did not finish in time");
        if notifier.wait(Some(Duration::from_millis(50))).unwrap() == Readiness::Ready {
            if let Some(d) = notifier.handle_one().expect("handle_one") {
                denials.push(d);
            }
            continue;
        }
        let mut status = 0;
        // SAFETY: polling our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Outcome {
                result: None,
                denials,
                status,
            };
        }
    }
}
