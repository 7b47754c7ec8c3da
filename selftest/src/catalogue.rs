//! What each attack must meet: the layer that should stop it, the event that should prove it,
//! and the guarantee it tests (so a machine that lacks the guarantee reports "not enforced
//! here" with the reason, instead of passing by accident or failing for a known reason).

use agent_sandbox::policy::Guarantee;

/// How the orchestrator judges the audit log of one attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A seccomp denial naming `syscall` (prefix: `i386:` matches any i386 call) with `rule`
    /// in its rule text. Required whenever `syscall-denials-logged` holds.
    Seccomp {
        syscall: &'static str,
        rule: &'static str,
    },
    /// A kernel layer (Landlock, cgroup-BPF, BPF LSM) denies; a denial naming the attempt's
    /// target is required when `logged_by` is enforced, optional otherwise.
    Kernel { logged_by: Option<Guarantee> },
    /// Prevented by construction (pid namespace, no_new_privs, kernel limits): no event exists.
    NoEvent,
    /// Refused without a log record on purpose; the reason says why.
    NotLoggedByDesign(&'static str),
    /// The event flood: exact counts (see mod.rs).
    Flood,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Setup {
    /// Test profile override: `[process] max_processes`.
    pub max_processes: Option<u64>,
    /// Put the audit log and the profile inside the (writable) workspace.
    pub log_in_workspace: bool,
    /// Workspace-relative file the attack creates; it only counts when a deny glob of the
    /// profile matches it (otherwise "not applicable: the profile does not protect it").
    /// A `protect` glob protects it too (readable, never writable): the applicability check
    /// in mod.rs should read `filesystem.protect` as well as `filesystem.deny`.
    pub protected_target: Option<&'static str>,
    /// Plant `app/.env` in the workspace. Off by default: Landlock's deny-by-omission takes
    /// the right to create files away from every directory on the way to a denied file, so a
    /// planted `.env` would make the workspace root read-only for the other attacks.
    pub plant_dotenv: bool,
}

/// One technique of docs/attacks.md and what it must meet.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Name of the in-sandbox attack (`attacks::ATTACKS`), also the test name.
    pub name: &'static str,
    pub family: &'static str,
    pub technique: &'static str,
    /// The layer meant to stop it, for the table when no event names one.
    pub layer: &'static str,
    pub expect: Expect,
    /// The guarantee under test: when the attack succeeds and this guarantee is reported
    /// missing at launch, the result is "not enforced here" (with the launch record's reason).
    pub guarantee: Option<Guarantee>,
    /// A limitation no layer of this build covers: when the attack succeeds, "known gap".
    pub known_gap: Option<&'static str>,
    pub setup: Setup,
}

const fn spec(
    name: &'static str,
    family: &'static str,
    technique: &'static str,
    layer: &'static str,
    expect: Expect,
    guarantee: Option<Guarantee>,
) -> Spec {
    Spec {
        name,
        family,
        technique,
        layer,
        expect,
        guarantee,
        known_gap: None,
        setup: Setup {
            max_processes: None,
            log_in_workspace: false,
            protected_target: None,
            plant_dotenv: false,
        },
    }
}

const fn sc(
    name: &'static str,
    family: &'static str,
    technique: &'static str,
    syscall: &'static str,
    rule: &'static str,
) -> Spec {
    spec(
        name,
        family,
        technique,
        "seccomp",
        Expect::Seccomp { syscall, rule },
        Some(Guarantee::SyscallFilter),
    )
}

const FS_LOGGED: Expect = Expect::Kernel {
    logged_by: Some(Guarantee::FsDenialsLogged),
};
/// Landlock TCP, scope and ptrace denials have no agentbox event source yet on any kernel.
const KERNEL_UNLOGGED: Expect = Expect::Kernel { logged_by: None };

const fn fs(name: &'static str, technique: &'static str, g: Guarantee) -> Spec {
    spec(name, "files", technique, "landlock", FS_LOGGED, Some(g))
}

/// Host UNIX sockets: the supervisor (seccomp user notification) or the kernel's unix hooks
/// refuse and log them.
const fn unix(name: &'static str, technique: &'static str) -> Spec {
    spec(
        name,
        "network",
        technique,
        "seccomp (supervisor) / cgroup-bpf / bpf-lsm",
        Expect::Kernel {
            logged_by: Some(Guarantee::NetUnixSockets),
        },
        Some(Guarantee::NetUnixSockets),
    )
}

const fn with(mut s: Spec, setup: Setup) -> Spec {
    s.setup = setup;
    s
}

const NO_SETUP: Setup = Setup {
    max_processes: None,
    log_in_workspace: false,
    protected_target: None,
    plant_dotenv: false,
};

const LOG_IN_WS: Setup = Setup {
    log_in_workspace: true,
    ..NO_SETUP
};

const DOTENV: Setup = Setup {
    plant_dotenv: true,
    ..NO_SETUP
};

const fn protected(target: &'static str) -> Setup {
    Setup {
        protected_target: Some(target),
        ..NO_SETUP
    }
}

/// Every technique, in docs/attacks.md order.
pub const CATALOGUE: &[Spec] = &[
    // Terminal and session.
    sc(
        "tiocsti",
        "terminal",
        "ioctl(TIOCSTI) keystroke injection (CVE-2017-5226)",
        "ioctl",
        "tty-injection",
    ),
    sc(
        "tiocsti-upper-bits",
        "terminal",
        "TIOCSTI with bit 32 set in cmd (masked compare)",
        "ioctl",
        "tty-injection",
    ),
    sc(
        "tioclinux",
        "terminal",
        "ioctl(TIOCLINUX) paste selection",
        "ioctl",
        "tty-injection",
    ),
    // Syscall layer.
    sc(
        "int80-i386",
        "syscall",
        "i386 ABI via int 0x80 (getpid)",
        "i386:",
        "arch",
    ),
    sc(
        "int80-socketcall",
        "syscall",
        "i386 socketcall multiplexer via int 0x80",
        "i386:",
        "arch",
    ),
    sc(
        "x32-abi",
        "syscall",
        "x32 ABI (nr | 0x40000000)",
        "x32:",
        "arch",
    ),
    sc(
        "io-uring-setup",
        "syscall",
        "io_uring_setup",
        "io_uring_setup",
        "io-uring",
    ),
    sc(
        "unshare-userns",
        "syscall",
        "unshare(CLONE_NEWUSER / CLONE_NEWNS)",
        "unshare",
        "namespaces",
    ),
    sc(
        "clone-newuser",
        "syscall",
        "clone(CLONE_NEWUSER / CLONE_NEWNET)",
        "clone",
        "namespaces",
    ),
    sc(
        "clone-ns-upper-bits",
        "syscall",
        "clone(CLONE_NEWUSER | 1<<40) (upper 32 bits)",
        "clone",
        "namespaces",
    ),
    spec(
        "clone3-newuser",
        "syscall",
        "clone3 with CLONE_NEWUSER (flags in memory)",
        "seccomp",
        Expect::NotLoggedByDesign(
            "clone3 is answered ENOSYS without a record by design: its flags live in memory \
             seccomp cannot read; libc falls back to clone(), which is filtered and logged",
        ),
        Some(Guarantee::SyscallFilter),
    ),
    sc(
        "setns",
        "syscall",
        "setns into another namespace",
        "setns",
        "namespaces",
    ),
    sc(
        "ptrace",
        "syscall",
        "ptrace(PTRACE_ATTACH) the parent",
        "ptrace",
        "debug",
    ),
    sc(
        "process-vm-readv",
        "syscall",
        "process_vm_readv of the parent",
        "process_vm_readv",
        "debug",
    ),
    sc(
        "perf-event-open",
        "syscall",
        "perf_event_open",
        "perf_event_open",
        "kernel-observability",
    ),
    sc(
        "bpf",
        "syscall",
        "bpf(BPF_MAP_CREATE)",
        "bpf",
        "kernel-observability",
    ),
    sc(
        "userfaultfd",
        "syscall",
        "userfaultfd",
        "userfaultfd",
        "userfaultfd",
    ),
    sc(
        "keyctl",
        "syscall",
        "keyctl (session keyring)",
        "keyctl",
        "keyring",
    ),
    sc("add-key", "syscall", "add_key", "add_key", "keyring"),
    sc(
        "init-module",
        "syscall",
        "init_module / finit_module",
        "init_module",
        "kernel-modules",
    ),
    sc(
        "kexec-load",
        "syscall",
        "kexec_load",
        "kexec_load",
        "kernel-modules",
    ),
    sc("mount", "syscall", "mount(tmpfs)", "mount", "mount"),
    sc("umount2", "syscall", "umount2(/proc)", "umount2", "mount"),
    sc(
        "fsopen",
        "syscall",
        "fsopen (new mount API)",
        "fsopen",
        "mount",
    ),
    sc(
        "open-tree",
        "syscall",
        "open_tree(OPEN_TREE_CLONE)",
        "open_tree",
        "mount",
    ),
    sc("move-mount", "syscall", "move_mount", "move_mount", "mount"),
    sc("pivot-root", "syscall", "pivot_root", "pivot_root", "mount"),
    sc(
        "personality",
        "syscall",
        "personality(READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE)",
        "personality",
        "legacy",
    ),
    sc(
        "open-by-handle-at",
        "syscall",
        "open_by_handle_at (shocker)",
        "open_by_handle_at",
        "legacy",
    ),
    sc(
        "pidfd-getfd",
        "syscall",
        "pidfd_getfd from the parent",
        "pidfd_getfd",
        "debug",
    ),
    // Processes and scope.
    with(
        spec(
            "fork-bomb",
            "process",
            "fork bomb (profile max_processes = 32)",
            "cgroup pids / RLIMIT_NPROC",
            Expect::NoEvent,
            Some(Guarantee::ResourceLimits),
        ),
        Setup {
            max_processes: Some(32),
            ..NO_SETUP
        },
    ),
    sc(
        "double-fork-setsid",
        "process",
        "double fork + setsid, reparented grandchild",
        "unshare",
        "namespaces",
    ),
    fs(
        "cgroup-write",
        "write cgroup.procs / cgroup.kill / pids.max / memory.max",
        Guarantee::FsAllowList,
    ),
    spec(
        "signal-outside",
        "process",
        "signal a process outside the sandbox (kill, pidfd_send_signal)",
        "pid namespace / landlock scope",
        KERNEL_UNLOGGED,
        Some(Guarantee::ScopeSignals),
    ),
    spec(
        "proc-environ-outside",
        "process",
        "read /proc/<outside>/environ, mem, fd/0",
        "landlock (ptrace scope)",
        KERNEL_UNLOGGED,
        Some(Guarantee::FsAllowList),
    ),
    spec(
        "setuid-no-new-privs",
        "process",
        "setuid binaries gain nothing (NoNewPrivs)",
        "supervisor (no_new_privs)",
        Expect::NoEvent,
        None,
    ),
    spec(
        "capabilities-zero",
        "process",
        "no capabilities, even as root (CapEff/Prm/Bnd/Amb/Inh, chown)",
        "supervisor (capabilities)",
        Expect::NoEvent,
        None,
    ),
    // Files.
    fs("read-ssh-key", "read ~/.ssh/id_rsa", Guarantee::FsAllowList),
    fs(
        "read-aws-credentials",
        "read ~/.aws/credentials",
        Guarantee::FsAllowList,
    ),
    fs(
        "read-gh-hosts",
        "read ~/.config/gh/hosts.yml",
        Guarantee::FsAllowList,
    ),
    with(
        fs("read-dotenv", "read workspace .env", Guarantee::FsAllowList),
        DOTENV,
    ),
    fs(
        "read-etc-shadow",
        "read /etc/shadow",
        Guarantee::FsAllowList,
    ),
    fs(
        "read-ssl-private",
        "list /etc/ssl/private (TLS keys)",
        Guarantee::FsAllowList,
    ),
    fs(
        "alias-symlink",
        "symlink (file and directory) to the secret",
        Guarantee::FsAllowList,
    ),
    fs(
        "alias-dotdot",
        "`..` path to the secret",
        Guarantee::FsAllowList,
    ),
    fs(
        "alias-double-slash",
        "`//` and `/./` path to the secret",
        Guarantee::FsAllowList,
    ),
    fs(
        "alias-proc-root",
        "/proc/self/root/... and /proc/1/root/...",
        Guarantee::FsAllowList,
    ),
    fs(
        "alias-proc-cwd",
        "chdir into ~/.ssh, /proc/self/cwd",
        Guarantee::FsAllowList,
    ),
    fs(
        "alias-proc-fd-reopen",
        "O_PATH fd re-opened via /proc/self/fd/N",
        Guarantee::FsAllowList,
    ),
    fs(
        "alias-openat-dirfd",
        "openat relative to a directory fd",
        Guarantee::FsAllowList,
    ),
    with(
        fs(
            "refer-rename-out",
            "rename a secret out (Landlock REFER)",
            Guarantee::FsAllowList,
        ),
        DOTENV,
    ),
    with(
        fs(
            "refer-link-out",
            "hard-link a secret out (Landlock REFER)",
            Guarantee::FsAllowList,
        ),
        DOTENV,
    ),
    with(
        fs(
            "create-git-hook",
            "create .git/hooks/pre-commit",
            Guarantee::FsDenyExact,
        ),
        protected(".git/hooks/pre-commit"),
    ),
    spec(
        "git-dir-swap",
        "files",
        "rename .git away and build a new one with a hook (protect by replacement)",
        "mounts (pinned directory)",
        FS_LOGGED,
        None,
    ),
    with(
        fs("create-envrc", "create .envrc", Guarantee::FsDenyExact),
        protected(".envrc"),
    ),
    with(
        fs(
            "create-dotenv",
            "create a new .env after start",
            Guarantee::FsDenyExact,
        ),
        protected("fresh/.env"),
    ),
    fs("write-shell-rc", "write ~/.bashrc", Guarantee::FsAllowList),
    spec(
        "metadata-chmod-secret",
        "files",
        "chmod the user's own ssh key world-readable",
        "mounts",
        FS_LOGGED,
        Some(Guarantee::FsMetadataReadOnly),
    ),
    spec(
        "metadata-utime-secret",
        "files",
        "utimensat a secret outside the write list",
        "mounts",
        FS_LOGGED,
        Some(Guarantee::FsMetadataReadOnly),
    ),
    spec(
        "metadata-xattr-secret",
        "files",
        "setxattr user.* on a secret outside the write list",
        "mounts",
        FS_LOGGED,
        Some(Guarantee::FsMetadataReadOnly),
    ),
    spec(
        "proc-host-process",
        "process",
        "read a host process's /proc/PID/cmdline",
        "mounts (private /proc)",
        Expect::NoEvent,
        Some(Guarantee::ProcPrivate),
    ),
    with(
        fs(
            "write-audit-log",
            "append/truncate/rename/unlink agentbox's own audit log",
            Guarantee::FsAllowList,
        ),
        LOG_IN_WS,
    ),
    with(
        fs(
            "write-profile",
            "modify agentbox's profile file",
            Guarantee::FsAllowList,
        ),
        LOG_IN_WS,
    ),
    fs(
        "long-path",
        "paths longer than PATH_MAX / NAME_MAX, deep symlink",
        Guarantee::FsAllowList,
    ),
    spec(
        "inotify-denied-dir",
        "files",
        "inotify watch on a denied directory (~/.ssh) and on the home outside the trees",
        "seccomp (supervisor)",
        Expect::Kernel {
            logged_by: Some(Guarantee::SyscallDenialsLogged),
        },
        Some(Guarantee::FsAllowList),
    ),
    // Exec.
    spec(
        "exec-copied-binary",
        "exec",
        "exec a copied binary outside the exec trees",
        "landlock",
        FS_LOGGED,
        Some(Guarantee::ExecAllowList),
    ),
    spec(
        "exec-ld-so",
        "exec",
        "ld.so /path/to/copy (loader maps it)",
        "mounts (noexec) / bpf-lsm (mmap_file)",
        FS_LOGGED,
        Some(Guarantee::WritableNoExec),
    ),
    spec(
        "exec-proc-fd",
        "exec",
        "exec through /proc/self/fd/N and execveat(AT_EMPTY_PATH)",
        "landlock",
        FS_LOGGED,
        Some(Guarantee::ExecAllowList),
    ),
    spec(
        "exec-memfd",
        "exec",
        "fileless exec of a memfd",
        "mounts (vm.memfd_noexec) / bpf-lsm (bprm_check)",
        FS_LOGGED,
        Some(Guarantee::MemfdNoExec),
    ),
    // Network.
    spec(
        "tcp-loopback-port",
        "network",
        "TCP connect to a host loopback port",
        "landlock (TCP connect)",
        KERNEL_UNLOGGED,
        Some(Guarantee::NetTcpConnectPorts),
    ),
    sc(
        "udp-sendto",
        "network",
        "UDP sendto without connect",
        "socket",
        "SOCK_DGRAM",
    ),
    spec(
        "ipv6-connect",
        "network",
        "TCP connect to [::1] and IPv4-mapped IPv6",
        "landlock (TCP connect)",
        KERNEL_UNLOGGED,
        Some(Guarantee::NetTcpConnectPorts),
    ),
    spec(
        "metadata-ipv4",
        "network",
        "cloud metadata 169.254.169.254:80 (denied locally)",
        "landlock (TCP connect)",
        KERNEL_UNLOGGED,
        Some(Guarantee::NetTcpConnectPorts),
    ),
    spec(
        "metadata-ipv6",
        "network",
        "cloud metadata [fd00:ec2::254]:80 (denied locally)",
        "landlock (TCP connect)",
        KERNEL_UNLOGGED,
        Some(Guarantee::NetTcpConnectPorts),
    ),
    sc(
        "raw-socket",
        "network",
        "raw sockets (AF_INET/AF_INET6 SOCK_RAW)",
        "socket",
        "raw sockets",
    ),
    sc(
        "tcp-fastopen",
        "network",
        "TCP Fast Open: sendto(MSG_FASTOPEN) connects without connect(2)",
        "sendto",
        "MSG_FASTOPEN",
    ),
    sc(
        "ip-protocol-variants",
        "network",
        "MPTCP, SCTP, UDP-Lite, ICMP echo sockets",
        "socket",
        "protocol other than",
    ),
    sc(
        "packet-socket",
        "network",
        "packet sockets (AF_PACKET, SOCK_PACKET)",
        "socket",
        "AF_PACKET",
    ),
    sc(
        "netlink-socket",
        "network",
        "netlink sockets (SOCK_DIAG, AUDIT)",
        "socket",
        "AF_NETLINK",
    ),
    sc(
        "vsock-socket",
        "network",
        "vsock sockets",
        "socket",
        "AF_VSOCK",
    ),
    unix(
        "unix-pathname-host",
        "pathname UNIX socket of a host service outside the allowed trees",
    ),
    unix(
        "unix-symlink-redirect",
        "host UNIX socket through a symlink planted in the workspace",
    ),
    unix(
        "unix-relative-path",
        "host UNIX socket by a relative path after chdir next to it",
    ),
    unix(
        "unix-proc-fd-alias",
        "host UNIX socket through /proc/self/fd of an O_PATH descriptor",
    ),
    unix(
        "unix-dgram-sendto",
        "datagram to a host UNIX socket path without connect (sendto)",
    ),
    unix(
        "unix-dgram-sendmsg",
        "datagram to a host UNIX socket path without connect (sendmsg)",
    ),
    spec(
        "unix-abstract",
        "network",
        "abstract UNIX socket of a host process",
        "landlock (scope)",
        KERNEL_UNLOGGED,
        Some(Guarantee::ScopeAbstractUnix),
    ),
    spec(
        "bind-listen",
        "network",
        "bind/listen on a port not allowed",
        "landlock (TCP bind)",
        KERNEL_UNLOGGED,
        Some(Guarantee::NetTcpBindPorts),
    ),
    // The pipeline itself.
    spec(
        "event-flood",
        "pipeline",
        "event flood: 50k denied opens + 5k denied syscalls, no silent gap",
        "seccomp + landlock",
        Expect::Flood,
        Some(Guarantee::SyscallDenialsLogged),
    ),
    sc(
        "hostile-names",
        "pipeline",
        "hostile file names and comm (newline, quote, ESC) keep the log valid",
        "unshare",
        "namespaces",
    ),
    sc(
        "bpffs",
        "pipeline",
        "bpffs and bpf(BPF_OBJ_GET) unreachable",
        "bpf",
        "kernel-observability",
    ),
];

/// The spec of one attack.
pub fn spec_of(name: &str) -> Option<&'static Spec> {
    CATALOGUE.iter().find(|s| s.name == name)
}
