//! Guarantees, the layers that deliver them, and the ledger (`Coverage`) of who delivers what.
//!
//! Vocabulary shared by the layers (which report coverage), the plan (which checks it), the
//! audit schema (which records it in the Launch event) and doctor: it lives here, below all
//! of them, so none of them imports another for it.

use std::fmt;

/// A layer of agentbox, by the name its coverage entries and denials carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Landlock,
    Seccomp,
    /// Resource limits and tree teardown in the sandbox's cgroups.
    Cgroup,
    /// cgroup-BPF network programs.
    CgroupBpf,
    /// eBPF tracepoint observers (denials with paths, the process tree).
    Observe,
    BpfLsm,
    /// The sandbox's view of the filesystem, in a mount namespace of its own.
    Mounts,
    /// A network namespace of the sandbox's own.
    Netns,
    /// An IPC namespace of the sandbox's own (SysV IPC, POSIX message queues).
    Ipcns,
    /// The supervisor's resolver for host-name rules.
    Dns,
    /// Environment, rlimits and capabilities of the agent's process.
    Process,
}

impl Layer {
    /// The serialised name (`cgroup-bpf`).
    pub const fn name(self) -> &'static str {
        match self {
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Cgroup => "cgroup",
            Layer::CgroupBpf => "cgroup-bpf",
            Layer::Observe => "observe",
            Layer::BpfLsm => "bpf-lsm",
            Layer::Mounts => "mounts",
            Layer::Netns => "netns",
            Layer::Ipcns => "ipcns",
            Layer::Dns => "dns",
            Layer::Process => "process",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

use serde::{Deserialize, Serialize};

/// One promise agentbox can make about a sandbox. `plan.rs` derives the set a policy needs;
/// layers say which of them they deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Filesystem access limited to the read/write/exec allow-lists.
    FsAllowList,
    /// Deny globs enforced exactly, even inside allowed trees and for files created later.
    FsDenyExact,
    /// Exec limited to the exec allow-list.
    ExecAllowList,
    /// TCP connect limited by port.
    NetTcpConnectPorts,
    /// TCP bind limited by port.
    NetTcpBindPorts,
    /// Egress limited by address (CIDR) and port, TCP and UDP.
    NetAddresses,
    /// Raw, packet, netlink, vsock sockets denied.
    NetSocketFamilies,
    /// Signals to processes outside the sandbox denied.
    ScopeSignals,
    /// Abstract UNIX sockets outside the sandbox unreachable.
    ScopeAbstractUnix,
    /// The syscall filter (deny groups, arch pinned, x32 refused).
    SyscallFilter,
    /// Denied syscalls appear in the audit log.
    SyscallDenialsLogged,
    /// Filesystem denials appear in the audit log with their path.
    FsDenialsLogged,
    /// Process and memory limits.
    ResourceLimits,
    /// Files outside the writable trees keep their mode, owner, times and xattrs (read-only
    /// at the mount level).
    FsMetadataReadOnly,
    /// Nothing in a writable tree outside the exec list runs or maps executable (noexec).
    WritableNoExec,
    /// memfds cannot be executed (fileless exec).
    MemfdNoExec,
    /// /proc shows only the sandbox's processes.
    ProcPrivate,
    /// SysV IPC, POSIX message queues and /dev/shm are the sandbox's own.
    IpcPrivate,
    /// Pathname UNIX sockets (docker.sock, D-Bus, ssh-agent) reachable only inside the write
    /// trees and as `network.unix` allows, judged on the socket the path resolves to.
    NetUnixSockets,
    /// Host-name rules: every DNS query answered by agentbox's resolver, and only addresses
    /// it handed out for an allowed name reachable through them.
    NetDomains,
}

impl Guarantee {
    pub const ALL: [Guarantee; 20] = [
        Guarantee::FsAllowList,
        Guarantee::FsDenyExact,
        Guarantee::ExecAllowList,
        Guarantee::NetTcpConnectPorts,
        Guarantee::NetTcpBindPorts,
        Guarantee::NetAddresses,
        Guarantee::NetSocketFamilies,
        Guarantee::ScopeSignals,
        Guarantee::ScopeAbstractUnix,
        Guarantee::SyscallFilter,
        Guarantee::SyscallDenialsLogged,
        Guarantee::FsDenialsLogged,
        Guarantee::ResourceLimits,
        Guarantee::FsMetadataReadOnly,
        Guarantee::WritableNoExec,
        Guarantee::MemfdNoExec,
        Guarantee::ProcPrivate,
        Guarantee::IpcPrivate,
        Guarantee::NetUnixSockets,
        Guarantee::NetDomains,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Guarantee::FsAllowList => "filesystem limited to the read/write/exec lists",
            Guarantee::FsDenyExact => "deny globs exact inside allowed trees",
            Guarantee::ExecAllowList => "exec limited to the exec list",
            Guarantee::NetTcpConnectPorts => "TCP connect limited by port",
            Guarantee::NetTcpBindPorts => "TCP bind limited by port",
            Guarantee::NetAddresses => "egress limited by address and port (TCP and UDP)",
            Guarantee::NetSocketFamilies => "raw/packet/netlink/vsock sockets denied",
            Guarantee::ScopeSignals => "no signals to processes outside the sandbox",
            Guarantee::ScopeAbstractUnix => "no abstract UNIX sockets outside the sandbox",
            Guarantee::SyscallFilter => "syscall filter (deny groups, arch pinned, x32 refused)",
            Guarantee::SyscallDenialsLogged => "denied syscalls logged",
            Guarantee::FsDenialsLogged => "filesystem denials logged with their path",
            Guarantee::ResourceLimits => "process and memory limits",
            Guarantee::FsMetadataReadOnly => {
                "no chmod, chown, utime or xattr change outside the write list"
            }
            Guarantee::WritableNoExec => {
                "nothing written by the agent runs (noexec writable trees)"
            }
            Guarantee::MemfdNoExec => "no fileless (memfd) programs",
            Guarantee::ProcPrivate => "/proc shows only the sandbox's processes",
            Guarantee::IpcPrivate => "SysV IPC, message queues and /dev/shm private",
            Guarantee::NetUnixSockets => {
                "host UNIX sockets (docker.sock, D-Bus, ssh-agent) only as network.unix allows"
            }
            Guarantee::NetDomains => {
                "host names reachable only through agentbox's resolver, as network.allow lists"
            }
        }
    }
}

/// Whether a layer delivers a guarantee here, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Status {
    Enforced,
    /// Delivered in part; the reason says which part is missing.
    Partial(String),
    Missing(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageEntry {
    pub guarantee: Guarantee,
    pub layer: Layer,
    #[serde(flatten)]
    pub status: Status,
}

/// What one or more layers deliver. Merged across layers by `plan.rs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub entries: Vec<CoverageEntry>,
}

impl Coverage {
    pub fn push(&mut self, layer: Layer, guarantee: Guarantee, status: Status) {
        self.entries.push(CoverageEntry {
            guarantee,
            layer,
            status,
        });
    }

    pub fn extend(&mut self, other: Coverage) {
        self.entries.extend(other.entries);
    }

    /// True when some layer fully enforces `g`.
    pub fn enforces(&self, g: Guarantee) -> bool {
        self.entries
            .iter()
            .any(|e| e.guarantee == g && e.status == Status::Enforced)
    }

    /// Why `g` is not fully enforced (reasons from every layer that tried), or `None` if it is.
    /// True when some layer enforces `g` at least in part.
    pub fn partly_enforces(&self, g: Guarantee) -> bool {
        self.entries
            .iter()
            .any(|e| e.guarantee == g && matches!(e.status, Status::Enforced | Status::Partial(_)))
    }

    pub fn gap(&self, g: Guarantee) -> Option<String> {
        if self.enforces(g) {
            return None;
        }
        let reasons: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.guarantee == g)
            .map(|e| match &e.status {
                Status::Enforced => unreachable!("checked above"),
                Status::Partial(r) | Status::Missing(r) => format!("{}: {}", e.layer, r),
            })
            .collect();
        Some(if reasons.is_empty() {
            "no layer provides it".to_string()
        } else {
            reasons.join("; ")
        })
    }
}
