//! What each deny group and the network policy mean as syscall rules.
//!
//! One function per source of rules, so docs/profiles.md and the filter cannot disagree about
//! what `deny-groups = ["mount"]` blocks. Rules name syscalls; `mod.rs` maps names to numbers.

use crate::policy::{NetPolicy, SyscallGroup};

use super::{ArgCond, Width};

/// One deny rule before name resolution: `syscall` is denied when every condition holds
/// (no conditions: always).
#[derive(Debug, Clone)]
pub(super) struct RuleSpec {
    pub syscall: &'static str,
    pub when: Vec<ArgCond>,
    pub rule: String,
}

// Namespace flags from <linux/sched.h>. CLONE_NEWTIME shares its bit with CSIGNAL (the exit
// signal) in clone()'s flags, so it is only meaningful to unshare() and clone3().
const CLONE_NEWTIME: u64 = 0x80;
const NAMESPACE_FLAGS: [(&str, u64); 7] = [
    ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
];

/// The syscall rules of one deny group.
pub(super) fn group_rules(group: SyscallGroup) -> Vec<RuleSpec> {
    let rule = format!("syscalls.deny-groups: {}", group.name());
    let always = |names: &[&'static str]| -> Vec<RuleSpec> {
        names
            .iter()
            .map(|&syscall| RuleSpec {
                syscall,
                when: Vec::new(),
                rule: rule.clone(),
            })
            .collect()
    };
    match group {
        SyscallGroup::Debug => always(&[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "pidfd_getfd",
            "kcmp",
        ]),
        SyscallGroup::Mount => always(&[
            "mount",
            "umount2",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "open_tree_attr",
            "move_mount",
            "mount_setattr",
            "pivot_root",
            "chroot",
        ]),
        SyscallGroup::Namespaces => {
            let mut rules = always(&["setns"]);
            // clone() and unshare() read their flags from a register, so one masked compare
            // per flag catches any combination. The kernel uses the low 32 bits of clone's
            // flags (lower_32_bits in kernel/fork.c), hence Dword. clone3 is handled in the
            // prologue (ENOSYS), see `prologue`.
            for (_, flag) in NAMESPACE_FLAGS {
                let has_flag = ArgCond::masked(0, Width::Dword, flag, flag);
                rules.push(RuleSpec {
                    syscall: "clone",
                    when: vec![has_flag],
                    rule: rule.clone(),
                });
                rules.push(RuleSpec {
                    syscall: "unshare",
                    when: vec![has_flag],
                    rule: rule.clone(),
                });
            }
            rules.push(RuleSpec {
                syscall: "unshare",
                when: vec![ArgCond::masked(
                    0,
                    Width::Dword,
                    CLONE_NEWTIME,
                    CLONE_NEWTIME,
                )],
                rule: rule.clone(),
            });
            rules
        }
        SyscallGroup::KernelObservability => always(&["bpf", "perf_event_open", "fanotify_init"]),
        SyscallGroup::KernelModules => always(&[
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
        ]),
        SyscallGroup::Keyring => always(&["keyctl", "add_key", "request_key"]),
        SyscallGroup::Userfaultfd => always(&["userfaultfd"]),
        SyscallGroup::IoUring => always(&["io_uring_setup", "io_uring_enter", "io_uring_register"]),
        SyscallGroup::Legacy => {
            let mut rules = always(&["open_by_handle_at", "name_to_handle_at"]);
            // personality(unsigned int): only the query (0xffffffff) and PER_LINUX (0) stay
            // allowed; ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and friends weaken the process.
            rules.push(RuleSpec {
                syscall: "personality",
                when: vec![
                    ArgCond::ne(0, Width::Dword, 0xffff_ffff),
                    ArgCond::ne(0, Width::Dword, 0),
                ],
                rule: rule.clone(),
            });
            rules
        }
        SyscallGroup::System => always(&[
            "reboot",
            "swapon",
            "swapoff",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "acct",
            "quotactl",
            "quotactl_fd",
            "syslog",
            "iopl",
            "ioperm",
            "lookup_dcookie",
            "vhangup",
            "nfsservctl",
            "sethostname",
            "setdomainname",
            "uselib",
            "_sysctl",
        ]),
        SyscallGroup::TtyInjection => {
            // The kernel reads ioctl's cmd as unsigned int: compare 32 bits so a value with
            // upper bits set (TIOCSTI | 1 << 32) still matches.
            [libc::TIOCSTI, libc::TIOCLINUX]
                .into_iter()
                .map(|cmd| RuleSpec {
                    syscall: "ioctl",
                    when: vec![ArgCond::eq(1, Width::Dword, cmd)],
                    rule: rule.clone(),
                })
                .collect()
        }
    }
}

// Address families (<linux/socket.h>); libc lacks some of them.
const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_NETLINK: u64 = 16;
/// Families denied by name (so the rule text names them); every other family outside
/// unix/inet/inet6/netlink is denied by the catch-all rule after these.
const DENIED_FAMILIES: [(&str, u64); 9] = [
    ("AF_PACKET", 17),
    ("AF_KEY", 15),
    ("AF_VSOCK", 40),
    ("AF_BLUETOOTH", 31),
    ("AF_ALG", 38),
    ("AF_XDP", 44),
    ("AF_CAN", 29),
    ("AF_TIPC", 30),
    ("AF_RDS", 21),
];
// Socket types (low 4 bits of `type`; SOCK_NONBLOCK and SOCK_CLOEXEC are or-ed above them).
const SOCK_TYPE_MASK: u64 = 0xf;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;
const SOCK_RAW: u64 = 3;
const SOCK_RDM: u64 = 4;
const SOCK_SEQPACKET: u64 = 5;
const SOCK_DCCP: u64 = 6;
/// Obsolete: the kernel turns socket(AF_INET, SOCK_PACKET) into an AF_PACKET socket.
const SOCK_PACKET: u64 = 10;
const IPPROTO_TCP: u64 = 6;
const IPPROTO_UDP: u64 = 17;
/// `MSG_FASTOPEN` of <linux/socket.h>.
const MSG_FASTOPEN: u64 = 0x2000_0000;
const NETLINK_ROUTE: u64 = 0;

/// Rules on socket(domain, type, protocol) and socketpair from the network policy.
///
/// All three arguments are `int`: 32-bit compares, so upper bits cannot hide a value. x86_64
/// has no socketcall multiplexer, and i386 (where it lives) is refused by the arch pin.
pub(super) fn socket_rules(net: &NetPolicy) -> Vec<RuleSpec> {
    let domain_is = |af| ArgCond::eq(0, Width::Dword, af);
    let type_is = |ty| ArgCond::masked(1, Width::Dword, SOCK_TYPE_MASK, ty);
    let mut rules = Vec::new();
    let mut socket = |when: Vec<ArgCond>, rule: String| {
        rules.push(RuleSpec {
            syscall: "socket",
            when,
            rule,
        });
    };

    for (name, af) in DENIED_FAMILIES {
        socket(
            vec![domain_is(af)],
            format!("network: socket family {name} denied"),
        );
    }
    socket(
        vec![
            ArgCond::ne(0, Width::Dword, AF_UNIX),
            ArgCond::ne(0, Width::Dword, AF_INET),
            ArgCond::ne(0, Width::Dword, AF_INET6),
            ArgCond::ne(0, Width::Dword, AF_NETLINK),
        ],
        "network: socket family other than unix/inet/inet6/netlink denied".into(),
    );
    for (fam, af) in [("AF_INET", AF_INET), ("AF_INET6", AF_INET6)] {
        socket(
            vec![domain_is(af), type_is(SOCK_RAW)],
            format!("network: raw sockets ({fam}, SOCK_RAW) denied"),
        );
        socket(
            vec![domain_is(af), type_is(SOCK_PACKET)],
            format!("network: socket family AF_PACKET denied ({fam}, SOCK_PACKET)"),
        );
    }

    // IP sockets are TCP and UDP only, whatever the profile allows: Landlock governs TCP
    // alone, and the other protocols on stream and datagram sockets (MPTCP, SCTP,
    // UDP-Lite, DCCP, ICMP echo) would each need a policy of their own.
    for (fam, af) in [("AF_INET", AF_INET), ("AF_INET6", AF_INET6)] {
        for (ty_name, ty) in [
            ("SOCK_SEQPACKET", SOCK_SEQPACKET),
            ("SOCK_RDM", SOCK_RDM),
            ("SOCK_DCCP", SOCK_DCCP),
        ] {
            socket(
                vec![domain_is(af), type_is(ty)],
                format!("network: {fam} {ty_name} denied"),
            );
        }
        socket(
            vec![
                domain_is(af),
                type_is(SOCK_STREAM),
                ArgCond::ne(2, Width::Dword, 0),
                ArgCond::ne(2, Width::Dword, IPPROTO_TCP),
            ],
            format!("network: {fam} stream protocol other than TCP denied"),
        );
        socket(
            vec![
                domain_is(af),
                type_is(SOCK_DGRAM),
                ArgCond::ne(2, Width::Dword, 0),
                ArgCond::ne(2, Width::Dword, IPPROTO_UDP),
            ],
            format!("network: {fam} datagram protocol other than UDP denied"),
        );
    }
    if !net.opens_network() {
        // No network: Landlock only governs TCP, so UDP is refused here (egress without
        // root), and netlink.
        socket(
            vec![domain_is(AF_NETLINK)],
            "network: socket family AF_NETLINK denied (network.allow is empty)".into(),
        );
        for (fam, af) in [("AF_INET", AF_INET), ("AF_INET6", AF_INET6)] {
            socket(
                vec![domain_is(af), type_is(SOCK_DGRAM)],
                format!("network: {fam} SOCK_DGRAM denied (network.allow is empty)"),
            );
        }
    } else {
        // glibc's getaddrinfo (AI_ADDRCONFIG) and getifaddrs need NETLINK_ROUTE, which is
        // read-only without CAP_NET_ADMIN; every other netlink protocol stays closed.
        socket(
            vec![
                domain_is(AF_NETLINK),
                ArgCond::ne(2, Width::Dword, NETLINK_ROUTE),
            ],
            "network: socket family AF_NETLINK denied (except NETLINK_ROUTE)".into(),
        );
    }

    // TCP Fast Open sends the SYN from sendto/sendmsg without connect(2): Landlock's connect
    // hook never runs. The flag is a scalar argument, so the filter sees it.
    for (syscall, flags_arg) in [("sendto", 3), ("sendmsg", 2), ("sendmmsg", 3)] {
        rules.push(RuleSpec {
            syscall,
            when: vec![ArgCond::masked(
                flags_arg,
                Width::Dword,
                MSG_FASTOPEN,
                MSG_FASTOPEN,
            )],
            rule: format!("network: {syscall} with MSG_FASTOPEN denied (connects without connect)"),
        });
    }

    // socketpair only creates local pairs; nothing but AF_UNIX is needed.
    rules.push(RuleSpec {
        syscall: "socketpair",
        when: vec![ArgCond::ne(0, Width::Dword, AF_UNIX)],
        rule: "network: socketpair family other than AF_UNIX denied".into(),
    });
    rules
}
