//! `Policy`: what the user asked for, as plain typed data, and the vocabulary every module
//! shares: guarantees and their coverage (`coverage`), syscall and capability names
//! (`syscalls`, `capabilities`), and one display of each rule type.
//!
//! The profile module turns TOML into this; the layers turn this into kernel artifacts. Nothing
//! here does I/O, and nothing here knows about TOML: paths are absolute and variables resolved.

pub(crate) mod capabilities;
mod coverage;
pub(crate) mod globs;
pub(crate) mod syscalls;

pub use coverage::{Coverage, CoverageEntry, Guarantee, Layer, Status};

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The fully resolved policy for one sandbox.
/// `Default` is an empty policy (no name, nothing allowed by any list): a starting point for
/// tests and builders, never something the profile module hands out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Policy {
    /// Name of the profile this came from (built-in name or file path), for reports.
    pub name: String,
    pub mode: Mode,
    pub filesystem: FsPolicy,
    pub network: NetPolicy,
    pub process: ProcessPolicy,
    pub syscalls: SyscallPolicy,
    pub audit: AuditPolicy,
}

impl Policy {
    /// Whether reads no tree allows are put to an approver (enforce mode only: audit mode
    /// lets them happen).
    pub fn asks_reads(&self) -> bool {
        self.filesystem.unknown == Unknown::Ask && self.mode == Mode::Enforce
    }

    /// Whether execs outside the exec trees are put to an approver (enforce mode only).
    pub fn asks_execs(&self) -> bool {
        self.filesystem.exec_unknown == Unknown::Ask && self.mode == Mode::Enforce
    }
}

/// `enforce` denies and logs; `audit` logs what would have been denied and lets it happen
/// (where the layer can: seccomp and the eBPF layers can, Landlock cannot and still denies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FsPolicy {
    /// Trees the agent may read (and list).
    pub read: Vec<PathBuf>,
    /// Trees the agent may read and write (create, delete, rename inside).
    pub write: Vec<PathBuf>,
    /// Trees from which the agent may execute files (and map them executable).
    pub exec: Vec<PathBuf>,
    /// Deny globs: secrets that stay unreachable even inside an allowed tree.
    pub deny: Vec<DenyGlob>,
    /// Protect globs: readable where a tree grants reading, never writable (no write, truncate,
    /// create, delete or rename inside), even inside a writable tree. Files that run later
    /// outside the sandbox: `.git/hooks`, `.git/config`, `.envrc`, editor task files.
    #[serde(default)]
    pub protect: Vec<DenyGlob>,
    /// How long the launch may search the allowed trees for deny and protect matches
    /// (Landlock omission, protect binds), in milliseconds; `None`: `DEFAULT_SEARCH_MS`.
    #[serde(default)]
    pub search_ms: Option<u64>,
    /// A read of a file no tree allows and no deny glob names: refused, or put to the
    /// approver (the supervisor opens what was approved and hands the agent its descriptor).
    #[serde(default)]
    pub unknown: Unknown,
    /// An execve of a readable file outside the exec trees: refused, or put to the approver
    /// (an approval becomes a BPF LSM rule for that inode before the exec continues).
    #[serde(default)]
    pub exec_unknown: Unknown,
}

/// The default of `filesystem.search_ms`: some 5,000 entries (one walk finds the deny and the
/// protect matches), a tenth of an unprivileged start-up (issue 13: a large workspace starts
/// within 1.2x of an empty one).
pub const DEFAULT_SEARCH_MS: u64 = 1;

impl FsPolicy {
    /// Every tree the agent may open something in: the read, write and exec lists.
    pub fn all_trees(&self) -> Vec<PathBuf> {
        self.read
            .iter()
            .chain(&self.write)
            .chain(&self.exec)
            .cloned()
            .collect()
    }

    /// The deny globs' absolute patterns.
    pub fn deny_patterns(&self) -> Vec<String> {
        self.deny.iter().map(|g| g.pattern.clone()).collect()
    }

    /// The time the deny/protect search may take at launch. An unoptimised (debug) build
    /// searches some ten times slower, and gets ten times the default, so that its tests see
    /// the coverage a release build gives.
    pub fn search_budget(&self) -> std::time::Duration {
        let default = if cfg!(debug_assertions) {
            DEFAULT_SEARCH_MS * 10
        } else {
            DEFAULT_SEARCH_MS
        };
        std::time::Duration::from_millis(self.search_ms.unwrap_or(default))
    }
}

/// One deny (or protect) glob, with the absolute-path pattern it expands to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyGlob {
    /// As written in the profile (after variable expansion), e.g. `/home/u/.ssh/**`.
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetPolicy {
    /// Destinations the agent may reach. Empty means no network.
    pub allow: Vec<NetRule>,
    /// Destinations denied: a deny wins over an allow of the same address whatever the ports;
    /// only an allow naming a narrower address wins over it (docs/profiles.md).
    pub deny: Vec<NetRule>,
    /// Ports the agent may bind (listen on). Empty means no inbound.
    pub bind: Vec<PortRange>,
    /// Pathname UNIX sockets the agent may connect to beyond those inside its write trees:
    /// absolute globs, matched against the socket the path resolves to (symlinks followed
    /// in the sandbox's view), e.g. `/run/user/*/bus`, `${HOME}/.ssh/agent.sock`.
    #[serde(default)]
    pub unix: Vec<String>,
    /// Host names the agent may reach (`pypi.org:443`, `*.githubusercontent.com:443`): the
    /// supervisor's resolver answers only these and opens the addresses it hands out.
    #[serde(default)]
    pub domains: Vec<DomainRule>,
    /// The resolver agentbox forwards allowed names to; `None`: the host's first nameserver.
    #[serde(default)]
    pub dns_upstream: Option<std::net::SocketAddr>,
    /// A connection no rule allows or denies: refused, or put to the approver.
    #[serde(default)]
    pub unknown: Unknown,
}

/// What happens to an operation the profile neither allows nor denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    #[default]
    Deny,
    /// Held until the approver decides (`approval`).
    Ask,
}

impl NetPolicy {
    /// Whether the agent may reach any network destination (by address, by name, or once
    /// approved).
    pub fn opens_network(&self) -> bool {
        !self.allow.is_empty() || !self.domains.is_empty() || self.unknown == Unknown::Ask
    }

    /// The ports host-name rules open for TCP, with port 53 (DNS over TCP, which the
    /// resolver also answers), as port-only rules: what a port-only layer (Landlock) must let
    /// through for the address checks of the others to matter.
    pub fn domain_tcp_ports(&self) -> Vec<NetRule> {
        if self.domains.is_empty() {
            return Vec::new();
        }
        let mut rules: Vec<NetRule> = self
            .domains
            .iter()
            .filter(|d| d.proto != Proto::Udp)
            .map(|d| NetRule {
                net: None,
                ports: d.ports,
            })
            .collect();
        rules.push(NetRule {
            net: None,
            ports: PortRange::single(53),
        });
        rules.dedup();
        rules
    }
}

/// Which transport a host-name rule opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP and UDP (QUIC).
    #[default]
    Any,
    Tcp,
    Udp,
}

/// `name:ports[/tcp|/udp]`: a host name (`pypi.org`) or every name below a domain
/// (`*.githubusercontent.com`, not the domain itself), lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainRule {
    pub name: String,
    pub ports: PortRange,
    #[serde(default)]
    pub proto: Proto,
}

impl DomainRule {
    /// Whether `name` (any case, with or without its trailing dot) is covered.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self.name.strip_prefix("*.") {
            Some(parent) => name
                .strip_suffix(parent)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => name == self.name,
        }
    }
}

/// As profiles write it: `pypi.org:443`, `*.example.com:8000-8100/udp`.
impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.ports)?;
        match self.proto {
            Proto::Any => Ok(()),
            Proto::Tcp => f.write_str("/tcp"),
            Proto::Udp => f.write_str("/udp"),
        }
    }
}

/// `host-or-cidr:port-or-range`, e.g. `10.0.0.0/8:443`, `[::1]:8000-8100`, `*:53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetRule {
    /// `None` means any address.
    pub net: Option<IpNet>,
    pub ports: PortRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn is_any(&self) -> bool {
        *self == Self::ANY
    }
}

/// `*`, `443` or `8000-8100`, as profiles write port ranges.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("*")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// `10.0.0.0/8:443`, `[::1/128]:*`, `*:53`: the network prefix always shown, as denials name
/// the rule. The alternate form (`{:#}`) is the profile's entry syntax, where a single host
/// drops its prefix (`127.0.0.1:8080`, `[::1]:22`), as `profile show` prints it.
impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = self.ports;
        match self.net {
            None => write!(f, "*:{ports}"),
            Some(IpNet::V4(n)) if f.alternate() && n.prefix_len() == 32 => {
                write!(f, "{}:{ports}", n.addr())
            }
            Some(IpNet::V6(n)) if f.alternate() && n.prefix_len() == 128 => {
                write!(f, "[{}]:{ports}", n.addr())
            }
            Some(IpNet::V4(n)) => write!(f, "{n}:{ports}"),
            Some(IpNet::V6(n)) => write!(f, "[{n}]:{ports}"),
        }
    }
}

impl NetRule {
    /// True when the rule is about ports only (any address), which Landlock can enforce.
    pub fn is_port_only(&self) -> bool {
        self.net.is_none()
    }

    pub fn matches(&self, addr: IpAddr, port: u16) -> bool {
        self.ports.contains(port) && self.net.is_none_or(|n| n.contains(&addr))
    }
}

/// What happens to a process that commits a violation, beyond the denial itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ViolationAction {
    /// Deny the operation (EPERM/EACCES) and let the process continue.
    #[default]
    Deny,
    /// Deny and kill the violating process (from the kernel side where a layer can).
    Kill,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessPolicy {
    /// Environment variable name globs to keep. Empty means keep all not denied.
    pub env_allow: Vec<String>,
    /// Environment variable name globs to scrub (wins over allow).
    pub env_deny: Vec<String>,
    /// Variables set explicitly for the agent.
    pub env_set: BTreeMap<String, String>,
    /// Resource limits (soft = hard) applied with setrlimit, keyed by name: `nofile`, `core`, ...
    pub rlimits: BTreeMap<Rlimit, u64>,
    /// Cap on tasks in the sandbox (pids controller; RLIMIT_NPROC without a cgroup).
    pub max_processes: Option<u64>,
    /// Cap on memory in bytes (memory controller; RLIMIT_AS without a cgroup).
    pub memory_max: Option<u64>,
    /// Capabilities granted by name (e.g. `CAP_NET_BIND_SERVICE`). Empty: the agent holds none.
    pub capabilities: Vec<String>,
    /// Keep the user's controlling terminal (with TIOCSTI/TIOCLINUX filtered) instead of a new
    /// session without one.
    pub share_tty: bool,
    /// Run the agent as this user (a root supervisor only): `sudo agentbox run` runs it as
    /// the user who ran sudo, keeping the layers only root can build. `None`: as agentbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserIdentity>,
    pub on_violation: ViolationAction,
}

/// Who the agent runs as when it is not agentbox's own user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, from the group database).
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rlimit {
    Nofile,
    Core,
    Cpu,
    Fsize,
    Stack,
    Nproc,
    As,
}

/// Named groups of syscalls denied together. Each is documented in docs/profiles.md and defined
/// (as syscall lists) by the seccomp layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallGroup {
    /// ptrace, process_vm_readv/writev, pidfd_getfd, kcmp.
    Debug,
    /// mount, umount2, fsopen, fsconfig, fsmount, fspick, open_tree, move_mount, pivot_root,
    /// mount_setattr, chroot.
    Mount,
    /// unshare/clone with namespace flags, clone3 (flags live in memory), setns.
    Namespaces,
    /// bpf, perf_event_open, fanotify_init (filesystem-wide watches).
    KernelObservability,
    /// init_module, finit_module, delete_module, kexec_load, kexec_file_load.
    KernelModules,
    /// keyctl, add_key, request_key.
    Keyring,
    /// userfaultfd.
    Userfaultfd,
    /// io_uring_setup, io_uring_enter, io_uring_register.
    IoUring,
    /// personality (other than the query and PER_LINUX), open_by_handle_at, name_to_handle_at.
    Legacy,
    /// reboot, swapon/off, settimeofday, clock_settime, adjtimex, acct, quotactl, syslog,...
    System,
    /// ioctl TIOCSTI and TIOCLINUX (keystroke injection into a shared terminal).
    TtyInjection,
}

impl SyscallGroup {
    pub const ALL: [SyscallGroup; 11] = [
        SyscallGroup::Debug,
        SyscallGroup::Mount,
        SyscallGroup::Namespaces,
        SyscallGroup::KernelObservability,
        SyscallGroup::KernelModules,
        SyscallGroup::Keyring,
        SyscallGroup::Userfaultfd,
        SyscallGroup::IoUring,
        SyscallGroup::Legacy,
        SyscallGroup::System,
        SyscallGroup::TtyInjection,
    ];

    /// The profile spelling (`kernel-observability`), as serialised and as rule texts say it.
    pub fn name(self) -> &'static str {
        match self {
            SyscallGroup::Debug => "debug",
            SyscallGroup::Mount => "mount",
            SyscallGroup::Namespaces => "namespaces",
            SyscallGroup::KernelObservability => "kernel-observability",
            SyscallGroup::KernelModules => "kernel-modules",
            SyscallGroup::Keyring => "keyring",
            SyscallGroup::Userfaultfd => "userfaultfd",
            SyscallGroup::IoUring => "io-uring",
            SyscallGroup::Legacy => "legacy",
            SyscallGroup::System => "system",
            SyscallGroup::TtyInjection => "tty-injection",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SyscallPolicy {
    pub deny_groups: Vec<SyscallGroup>,
    /// Extra syscalls denied by name.
    pub deny: Vec<String>,
    /// Syscalls allowed by name even if a group denies them.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, hash-chained.
    #[default]
    Jsonl,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuditPolicy {
    /// Where the audit log goes. `None`: the supervisor picks a per-run file under the state dir.
    pub log: Option<PathBuf>,
    pub format: LogFormat,
}
