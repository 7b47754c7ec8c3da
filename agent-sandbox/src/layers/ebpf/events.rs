//! Kernel events (cgroup-BPF and BPF LSM denials, observer reports) → audit events. The one
//! place that maps `ebpf_probes::KernelEvent` into `audit::Event`, and that accounts for every
//! event the kernel numbered: delivered + lost must equal the last sequence number.
//!
//! One denied syscall is one event: when a BPF LSM program refused it and reported it, the
//! kernel marks the task, and the sys_exit observer does not report the same syscall again
//! (`TF_NET_EVENT_PENDING`, observe.bpf.h); a Landlock refusal comes first in the LSM order,
//! so the BPF LSM program never sees (nor reports) what Landlock already denied.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ebpf_probes::{Counters, KernelEvent, LsmHook, LsmReason, NetHook, NetVerdictReason};
use globset::GlobSet;

use super::lsm::LAYER as LSM_LAYER;
use super::net::LAYER as NET_LAYER;
use crate::audit::{Action, Denial, Event, Object, ProcessEvent, ProcessKind};
use crate::layers::seccomp::{Answered, DenyTable};
use crate::layers::EventSource;

/// Rule of an EROFS on a protect match (layers/mounts.rs binds it read-only).
const PROTECT_RULE: &str = "filesystem.protect: read-only bind mount";
/// Rule of an EROFS anywhere else: the view is read-only outside the writable trees.
const VIEW_RULE: &str = "filesystem: read-only outside filesystem.write";

/// Layer name of denials no agentbox layer claims (EPERM from the kernel itself).
const KERNEL_LAYER: &str = "kernel";
const LANDLOCK_LAYER: &str = crate::policy::Layer::Landlock.name();
/// `source` of the `loss` records this module writes.
const LOSS_SOURCE: &str = "ebpf-ringbuf";

/// The sandbox's kernel event rings as an event source: drained on readiness and on a slow
/// tick (the kernel only signals a ring whose reader has caught up), closed with the loss
/// accounting once the sandbox's cgroup is empty.
pub(crate) struct KernelSource {
    stream: ebpf_probes::EventStream,
    mapper: Mapper,
    /// For the final counters.
    sandbox: Arc<ebpf_probes::Sandbox>,
}

impl KernelSource {
    pub(super) fn new(
        stream: ebpf_probes::EventStream,
        mapper: Mapper,
        sandbox: Arc<ebpf_probes::Sandbox>,
    ) -> KernelSource {
        KernelSource {
            stream,
            mapper,
            sandbox,
        }
    }
}

impl std::fmt::Debug for KernelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelSource")
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl EventSource for KernelSource {
    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.stream.as_raw_fd()
    }

    fn drain(&mut self, out: &mut Vec<Event>) -> anyhow::Result<bool> {
        use anyhow::Context;
        let mut events = Vec::new();
        self.stream
            .drain(|event| events.push(event))
            .context("reading the kernel event rings")?;
        // The two rings are read one after the other; the kernel's per-sandbox sequence
        // number restores the order (an exec before the denial of the program it started).
        events.sort_by_key(|event| event.seq());
        let mapper = &mut self.mapper;
        out.extend(events.into_iter().filter_map(|e| mapper.map(e)));
        Ok(true)
    }

    fn tick(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(200))
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        let counters = self.sandbox.counters();
        out.extend(
            self.mapper
                .closing_records(&counters, self.stream.undecodable()),
        );
    }
}

/// Who a pid is, as far as the events told us (cheaper than /proc for every denial).
#[derive(Debug, Clone, Default)]
struct Who {
    ppid: Option<i32>,
    exe: Option<String>,
}

/// Turns kernel events into audit events for one sandbox.
pub(crate) struct Mapper {
    /// The sandbox's id in the eBPF maps: events of other sandboxes are not ours.
    sandbox: u32,
    seccomp: Arc<DenyTable>,
    /// Socket calls the supervisor answered itself (already logged when denied).
    answered: Arc<Answered>,
    net: ebpf_probes::NetRules,
    who: HashMap<i32, Who>,
    /// The policy's deny globs, to name the one a BPF LSM file denial enforced.
    deny_globs: Vec<String>,
    deny_set: GlobSet,
    /// The policy's protect globs, to tell a protect bind from the read-only view.
    protect_set: GlobSet,
    /// Events received (mapped, or dropped as duplicates): the accounting's left side.
    delivered: u64,
    foreign: u64,
    /// Names the sandbox's resolver handed addresses out for.
    names: Option<Arc<crate::layers::dns::resolver::NameBook>>,
}

impl Mapper {
    pub(crate) fn new(sandbox: u32, seccomp: Arc<DenyTable>, net: ebpf_probes::NetRules) -> Self {
        Mapper {
            sandbox,
            seccomp,
            answered: Arc::default(),
            net,
            who: HashMap::new(),
            deny_globs: Vec::new(),
            deny_set: GlobSet::empty(),
            protect_set: GlobSet::empty(),
            delivered: 0,
            foreign: 0,
            names: None,
        }
    }

    /// Denials of an address the resolver handed out name the host it was resolved for.
    pub(crate) fn with_names(
        mut self,
        names: Option<Arc<crate::layers::dns::resolver::NameBook>>,
    ) -> Self {
        self.names = names;
        self
    }

    /// The supervisor's record of the socket calls it answered itself.
    pub(crate) fn with_answered(mut self, answered: Arc<Answered>) -> Self {
        self.answered = answered;
        self
    }

    /// Tells protect binds from the read-only view: an EROFS on a protect match (or inside
    /// one) is the protect rule's, any other the view's.
    pub(crate) fn with_protect_globs(mut self, globs: &[String]) -> Self {
        let valid: Vec<String> = globs
            .iter()
            .filter(|g| crate::policy::globs::glob(g).is_ok())
            .cloned()
            .collect();
        self.protect_set =
            crate::policy::globs::glob_set(&valid).unwrap_or_else(|_| GlobSet::empty());
        self
    }

    fn read_only_rule(&self, object: &Object) -> &'static str {
        let Object::Path { path, .. } = object else {
            return PROTECT_RULE;
        };
        let protected = std::path::Path::new(path)
            .ancestors()
            .any(|p| self.protect_set.is_match(p));
        if protected {
            PROTECT_RULE
        } else {
            VIEW_RULE
        }
    }

    /// Names BPF LSM file denials by the policy's deny globs (`filesystem.deny: **/.env`).
    pub(crate) fn with_deny_globs(mut self, globs: &[String]) -> Self {
        // Same reading (and compiled set) as the Landlock omission walk.
        let kept: Vec<String> = globs
            .iter()
            .filter(|g| crate::policy::globs::glob(g).is_ok())
            .cloned()
            .collect();
        self.deny_set = crate::policy::globs::glob_set(&kept).unwrap_or_else(|_| GlobSet::empty());
        self.deny_globs = kept;
        self
    }

    #[cfg(test)]
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The audit event for one kernel event; `None` when it says nothing new (a syscall the
    /// seccomp notifier already logged) or is not this sandbox's.
    pub(crate) fn map(&mut self, event: KernelEvent) -> Option<Event> {
        if event.sandbox() != self.sandbox {
            self.foreign += 1;
            return None;
        }
        self.delivered += 1;
        match event {
            KernelEvent::NetDenied {
                tgid,
                comm,
                hook,
                addr,
                path,
                port,
                proto,
                family,
                sock_type,
                rule,
                enforced,
                killed,
                ..
            } => {
                let pid = tgid as i32;
                let who = self.who(pid, &comm);
                let object = match (hook, addr) {
                    _ if rule == NetVerdictReason::UnixPath => {
                        crate::layers::seccomp::mediate::unix_object(
                            path.clone().unwrap_or_default(),
                            i32::from(sock_type),
                        )
                    }
                    (NetHook::SockCreate, _) | (_, None) => Object::Socket {
                        family: i32::from(family),
                        sock_type: i32::from(sock_type),
                    },
                    (_, Some(addr)) => Object::Net {
                        proto: proto_name(proto, sock_type, hook).into(),
                        addr: addr.to_string(),
                        port,
                    },
                };
                let action = if killed {
                    Action::Killed
                } else if !enforced {
                    Action::Audited
                } else {
                    Action::Denied
                };
                let rule = match rule {
                    NetVerdictReason::UnixPath => {
                        crate::layers::seccomp::mediate::unix_bypass_rule(
                            hook == NetHook::Sendmsg,
                            path.as_deref().unwrap_or_default(),
                        )
                    }
                    _ => self.net_rule_text(rule, addr, port, family, sock_type),
                };
                Some(Event::Denial(Denial {
                    layer: NET_LAYER.name().into(),
                    rule,
                    action,
                    pid,
                    ppid: who.ppid,
                    exe: who.exe,
                    object,
                }))
            }
            KernelEvent::SyscallDenied {
                pid,
                tgid,
                ppid,
                comm,
                syscall,
                errno,
                path,
                path_truncated,
                path_elided,
                addr,
                target_pid,
                socket,
                killed,
                ..
            } => {
                let name = crate::policy::syscalls::name(syscall).unwrap_or("?");
                // A socket call the supervisor answered (and logged, if it denied it).
                if self.answered.take(pid as i32, syscall) {
                    return None;
                }
                if errno == libc::EPERM {
                    let args = reconstructed_args(name, target_pid, socket);
                    if self.seccomp.denies(syscall, &args) {
                        // The seccomp notifier answered (and logged) this one.
                        return None;
                    }
                }
                let pid = tgid as i32;
                let mut who = self.who(pid, &comm);
                if ppid != 0 {
                    who.ppid = Some(ppid as i32);
                }
                let (layer, mut rule, mut object) = syscall_denial(
                    name,
                    syscall,
                    errno,
                    path.map(|p| shown_path(p, path_truncated, path_elided)),
                    addr,
                    target_pid,
                    socket,
                );
                mark_elided(&mut object, path_elided);
                // EBUSY is a mount point (a protect bind) refusing to move; EROFS may be either.
                if rule == PROTECT_RULE && errno == libc::EROFS {
                    rule = self.read_only_rule(&object).to_string();
                }
                Some(Event::Denial(Denial {
                    layer: layer.into(),
                    rule,
                    action: if killed {
                        Action::Killed
                    } else {
                        Action::Denied
                    },
                    pid,
                    ppid: who.ppid,
                    exe: who.exe,
                    object,
                }))
            }
            KernelEvent::Exec {
                tgid,
                ppid,
                comm,
                filename,
                ..
            } => {
                let pid = tgid as i32;
                self.who.insert(
                    pid,
                    Who {
                        ppid: Some(ppid as i32),
                        exe: Some(filename.clone()),
                    },
                );
                Some(Event::Process(ProcessEvent {
                    kind: ProcessKind::Exec,
                    pid,
                    ppid: Some(ppid as i32),
                    exe: Some(filename),
                    comm: Some(comm),
                    thread: false,
                    code: None,
                    signal: None,
                }))
            }
            KernelEvent::Fork {
                parent,
                child,
                thread,
                ..
            } => {
                if !thread {
                    let exe = self.who.get(&(parent as i32)).and_then(|w| w.exe.clone());
                    self.who.insert(
                        child as i32,
                        Who {
                            ppid: Some(parent as i32),
                            exe,
                        },
                    );
                }
                Some(Event::Process(ProcessEvent {
                    kind: ProcessKind::Fork,
                    pid: child as i32,
                    ppid: Some(parent as i32),
                    exe: None,
                    comm: None,
                    thread,
                    code: None,
                    signal: None,
                }))
            }
            KernelEvent::Exit { tgid, code, .. } => {
                let pid = tgid as i32;
                let who = self.who.remove(&pid);
                let (code, signal) = if code & 0x7f == 0 {
                    (Some((code >> 8) & 0xff), None)
                } else {
                    (None, Some(code & 0x7f))
                };
                Some(Event::Process(ProcessEvent {
                    kind: ProcessKind::Exit,
                    pid,
                    ppid: who.as_ref().and_then(|w| w.ppid),
                    exe: who.and_then(|w| w.exe),
                    comm: None,
                    thread: false,
                    code,
                    signal,
                }))
            }
            KernelEvent::LsmDenied {
                tgid,
                ppid,
                comm,
                hook,
                reason,
                path,
                path_truncated,
                path_elided,
                addr,
                target_pid,
                detail,
                enforced,
                killed,
                ..
            } => {
                let pid = tgid as i32;
                let mut who = self.who(pid, &comm);
                if ppid != 0 {
                    who.ppid = Some(ppid as i32);
                }
                let path = path.map(|p| shown_path(p, path_truncated, path_elided));
                let rule = self.lsm_rule_text(hook, reason, path.as_deref(), addr);
                let mut object = if reason == LsmReason::UnixPath {
                    crate::layers::seccomp::mediate::unix_object(path.unwrap_or_default(), 0)
                } else {
                    lsm_object(hook, path, addr, target_pid, detail)
                };
                mark_elided(&mut object, path_elided);
                let action = if killed {
                    Action::Killed
                } else if !enforced {
                    Action::Audited
                } else {
                    Action::Denied
                };
                Some(Event::Denial(Denial {
                    layer: LSM_LAYER.name().into(),
                    rule,
                    action,
                    pid,
                    ppid: who.ppid,
                    exe: who.exe,
                    object,
                }))
            }
            KernelEvent::LsmAnomaly {
                tgid,
                comm,
                hook,
                addr,
                lsm_allowed,
                cgroup_allowed,
                cgroup_sandbox,
                ..
            } => {
                let verdict = |allowed: bool| if allowed { "allowed" } else { "denied" };
                let target = addr.map_or_else(|| "?".to_string(), |(a, p)| net_target(a, p));
                Some(Event::Anomaly {
                    detail: format!(
                        "{LSM_LAYER} and {NET_LAYER} disagree on {hook} to {target} by pid {tgid} \
                         ({comm}): {LSM_LAYER} {} by the task's sandbox, {NET_LAYER} {} by its \
                         cgroup's (sandbox {cgroup_sandbox})",
                        verdict(lsm_allowed),
                        verdict(cgroup_allowed),
                    ),
                })
            }
            // Kinds a newer ebpf-probes adds: counted as delivered, not logged yet.
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The process behind a denial: from earlier exec/fork events, else /proc (once per pid),
    /// else the kernel's task name.
    fn who(&mut self, pid: i32, comm: &str) -> Who {
        let entry = self.who.entry(pid).or_insert_with(|| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let ppid = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok());
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
            Who { ppid, exe }
        });
        let mut who = entry.clone();
        if who.exe.is_none() && !comm.is_empty() {
            who.exe = Some(comm.to_string());
        }
        who
    }

    /// The rule of a BPF LSM denial, in the profile's terms.
    fn lsm_rule_text(
        &self,
        hook: LsmHook,
        reason: LsmReason,
        path: Option<&str>,
        addr: Option<(IpAddr, u16)>,
    ) -> String {
        match reason {
            LsmReason::DenyInode | LsmReason::DenyTree | LsmReason::DenyName => {
                match path.and_then(|p| self.deny_glob_for(p, reason)) {
                    Some(glob) => format!("filesystem.deny: {glob}"),
                    // A second name (hard link) of a denied inode, or a path the kernel
                    // gave relative to its filesystem's root.
                    None => "filesystem.deny: denied object".into(),
                }
            }
            LsmReason::NameTooLong => {
                "filesystem.deny: name too long to compare with the deny globs".into()
            }
            LsmReason::TooDeep => "filesystem.deny: path too deep to check".into(),
            LsmReason::OutsideWriteTrees => {
                "filesystem: metadata change outside the write list".into()
            }
            LsmReason::OutsideExecTrees => "exec: not in exec list".into(),
            LsmReason::NetNoAllowRule | LsmReason::NetDenyRule => {
                let verdict = if reason == LsmReason::NetDenyRule {
                    NetVerdictReason::DenyRule
                } else {
                    NetVerdictReason::NoAllowRule
                };
                let (ip, port) = addr.map_or((None, 0), |(a, p)| (Some(a), p));
                self.net_rule_text(verdict, ip, port, 0, 0)
            }
            LsmReason::OtherSandbox => match hook {
                LsmHook::TaskKill => "scope: signal outside the sandbox".into(),
                _ => "scope: ptrace outside the sandbox".into(),
            },
            LsmReason::KernelOperation => match hook {
                LsmHook::Bpf => "kernel: bpf()".into(),
                LsmHook::PerfEventOpen => "kernel: perf_event_open()".into(),
                LsmHook::KernelModuleRequest => "kernel: module request".into(),
                _ => "kernel: mount".into(),
            },
            // Protect names are only ever `**/NAME` globs: the glob is the object's basename.
            LsmReason::ProtectName => match path.and_then(|p| p.rsplit('/').next()) {
                Some(name) if !name.is_empty() => format!("filesystem.protect: **/{name}"),
                _ => "filesystem.protect: protected name".into(),
            },
            LsmReason::UnixPath => crate::layers::seccomp::mediate::unix_bypass_rule(
                hook == LsmHook::SocketSendmsg,
                path.unwrap_or_default(),
            ),
            LsmReason::Other(code) => format!("{LSM_LAYER}: denied (reason {code})"),
        }
    }

    /// The deny glob that matches `path` (for a basename rule: a `**/` glob matching its last
    /// component).
    fn deny_glob_for(&self, path: &str, reason: LsmReason) -> Option<&str> {
        let path = path.trim_end_matches('…');
        if let Some(index) = self.deny_set.matches(path).first() {
            return Some(&self.deny_globs[*index]);
        }
        if reason == LsmReason::DenyName {
            let name = path.rsplit('/').next().unwrap_or(path);
            let rooted = format!("/{name}");
            return self
                .deny_set
                .matches(&rooted)
                .into_iter()
                .map(|i| self.deny_globs[i].as_str())
                .find(|g| g.starts_with("**/"));
        }
        None
    }

    fn net_rule_text(
        &self,
        reason: NetVerdictReason,
        addr: Option<IpAddr>,
        port: u16,
        family: u16,
        sock_type: u16,
    ) -> String {
        let target = match addr {
            Some(a) => net_target(a, port),
            None => format!("port {port}"),
        };
        match reason {
            NetVerdictReason::NoAllowRule => format!(
                "network: not in allow-list {target}{}",
                addr.map(|a| crate::layers::dns::resolver::name_note(self.names.as_deref(), a))
                    .unwrap_or_default()
            ),
            NetVerdictReason::DenyRule => match addr.and_then(|a| self.deny_rule(a, port)) {
                Some(rule) => format!("network.deny: {rule} {target}"),
                None => format!("network: denied {target}"),
            },
            NetVerdictReason::BindPort => format!("network.bind: port not allowed {target}"),
            NetVerdictReason::SocketFamily => {
                format!("network: socket family {family} denied")
            }
            NetVerdictReason::SocketType => {
                format!("network: socket type {sock_type} denied (raw)")
            }
            NetVerdictReason::UnixPath => "network.unix: socket path".into(),
            NetVerdictReason::Other(code) => format!("network: denied (reason {code}) {target}"),
        }
    }

    /// The most specific deny rule covering the destination (the one the kernel applied).
    fn deny_rule(&self, addr: IpAddr, port: u16) -> Option<String> {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.net
            .deny
            .iter()
            .chain(&self.net.default_deny)
            .filter(|r| r.net.contains(&addr) && r.ports.contains(port))
            .max_by_key(|r| (r.net.prefix_len(), u16::MAX - (r.ports.hi - r.ports.lo)))
            .map(|r| {
                crate::policy::NetRule {
                    net: Some(r.net),
                    ports: crate::policy::PortRange {
                        first: r.ports.lo,
                        last: r.ports.hi,
                    },
                }
                .to_string()
            })
    }

    /// The `loss` records for these final counters, and an `anomaly` if the books do not
    /// balance (delivered + lost != numbered). Call after the last drain.
    pub(crate) fn closing_records(&self, counters: &Counters, undecodable: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for (kind, count) in [
            ("violations", counters.lost_violations),
            ("trace", counters.lost_trace),
            ("trace-throttled", counters.throttled_trace),
            ("task-storage", counters.lost_task_storage),
        ] {
            if count > 0 {
                out.push(Event::Loss {
                    source: LOSS_SOURCE.into(),
                    kind: kind.into(),
                    count,
                });
            }
        }
        let received = self.delivered + undecodable;
        let accounted = received + counters.lost_violations + counters.lost_trace;
        if accounted != counters.last_seq {
            out.push(Event::Anomaly {
                detail: format!(
                    "kernel event accounting: {received} delivered + {} lost violations + {} lost \
                     trace = {accounted}, but the kernel numbered {} events",
                    counters.lost_violations, counters.lost_trace, counters.last_seq
                ),
            });
        }
        if undecodable > 0 {
            out.push(Event::Anomaly {
                detail: format!("{undecodable} kernel events did not decode"),
            });
        }
        out
    }
}

fn net_target(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        a => format!("{a}:{port}"),
    }
}

/// What a BPF LSM denial was aimed at.
fn lsm_object(
    hook: LsmHook,
    path: Option<String>,
    addr: Option<(IpAddr, u16)>,
    target_pid: Option<i32>,
    detail: u32,
) -> Object {
    let syscall = |name: &str, nr: i64, arg0: u64| Object::Syscall {
        name: name.to_string(),
        nr,
        args: [arg0, 0, 0, 0, 0, 0],
    };
    match hook {
        LsmHook::BprmCheckSecurity => Object::Exec {
            path: path.unwrap_or_default(),
        },
        LsmHook::SocketConnect | LsmHook::SocketSendmsg => match addr {
            // The event carries no protocol: connect is taken as TCP (what the network rules
            // are mostly about), an unconnected send as UDP (only datagram sends are judged).
            Some((addr, port)) => Object::Net {
                proto: if hook == LsmHook::SocketSendmsg {
                    "udp"
                } else {
                    "tcp"
                }
                .into(),
                addr: addr.to_string(),
                port,
            },
            None => syscall(hook.name(), -1, 0),
        },
        LsmHook::TaskKill => Object::Signal {
            target_pid: target_pid.unwrap_or(0),
            signal: detail as i32,
        },
        LsmHook::PtraceAccessCheck | LsmHook::PtraceTraceme => syscall(
            "ptrace",
            libc::SYS_ptrace,
            target_pid.unwrap_or(0) as u32 as u64,
        ),
        LsmHook::Bpf => syscall("bpf", libc::SYS_bpf, u64::from(detail)),
        LsmHook::PerfEventOpen => syscall("perf_event_open", libc::SYS_perf_event_open, 0),
        LsmHook::SbMount => syscall("mount", libc::SYS_mount, 0),
        LsmHook::MoveMount => syscall("move_mount", libc::SYS_move_mount, 0),
        LsmHook::SbUmount => syscall("umount2", libc::SYS_umount2, 0),
        LsmHook::SbPivotroot => syscall("pivot_root", libc::SYS_pivot_root, 0),
        _ => Object::Path {
            path: path.unwrap_or_default(),
            access: hook.name().to_string(),
            elided: None,
        },
    }
}

fn proto_name(proto: u8, sock_type: u16, hook: NetHook) -> &'static str {
    match (i32::from(proto), i32::from(sock_type), hook) {
        (libc::IPPROTO_TCP, _, _) => "tcp",
        (libc::IPPROTO_UDP, _, _) => "udp",
        (_, libc::SOCK_STREAM, _) => "tcp",
        (_, libc::SOCK_DGRAM, _) | (_, _, NetHook::Sendmsg) => "udp",
        _ => "ip",
    }
}

/// A path as the log shows it: marked `…` at the end when the kernel cut it short; an
/// elided path already holds its `…` between head and tail.
fn shown_path(path: String, truncated: bool, elided: Option<ebpf_probes::PathElided>) -> String {
    if truncated && elided.is_none() {
        path + "…"
    } else {
        path
    }
}

/// Says how long an elided path was, and its hash, on the object that names it.
fn mark_elided(object: &mut Object, elided: Option<ebpf_probes::PathElided>) {
    if let (Object::Path { elided: note, .. }, Some(e)) = (object, elided) {
        *note = Some(format!("{} bytes, fnv1a-64 {:#018x}", e.len, e.fnv1a));
    }
}

/// The syscall arguments the seccomp table looks at, rebuilt from what the observer reported
/// (the event carries labels, not raw arguments).
fn reconstructed_args(
    name: &str,
    target_pid: Option<i32>,
    socket: Option<(u16, u16, u8)>,
) -> [u64; 6] {
    let mut args = [0u64; 6];
    if let Some((family, sock_type, proto)) = socket {
        args[0] = u64::from(family);
        args[1] = u64::from(sock_type);
        args[2] = u64::from(proto);
    } else if matches!(name, "kill" | "tkill" | "tgkill") {
        args[0] = target_pid.unwrap_or(0) as u32 as u64;
    }
    args
}

/// (layer, rule, object) of a syscall the observers saw fail.
///
/// EACCES on a watched syscall is Landlock's answer (filesystem rules, TCP ports); EPERM on
/// kill is Landlock's signal scoping, on a connect without an IP address its abstract-socket
/// scoping. DAC refusals look the same to the observer (EACCES on a file the user cannot
/// read), which docs/events.md notes.
fn syscall_denial(
    name: &str,
    nr: i64,
    errno: i32,
    path: Option<String>,
    addr: Option<(IpAddr, u16)>,
    target_pid: Option<i32>,
    socket: Option<(u16, u16, u8)>,
) -> (&'static str, String, Object) {
    let access = match name {
        "open" | "openat" | "openat2" => "open",
        "creat" => "create",
        "execve" | "execveat" => "exec",
        "link" | "linkat" => "link",
        "rename" | "renameat" | "renameat2" => "rename",
        "unlink" | "unlinkat" => "unlink",
        "chmod" | "fchmodat" | "fchmodat2" => "chmod",
        "chown" | "lchown" | "fchownat" => "chown",
        "utime" | "utimes" | "futimesat" | "utimensat" => "utime",
        "setxattr" | "lsetxattr" | "setxattrat" => "setxattr",
        "removexattr" | "lremovexattr" | "removexattrat" => "removexattr",
        "truncate" => "truncate",
        "mmap" => "map-exec",
        _ => "",
    };
    let syscall_object = || Object::Syscall {
        name: name.to_string(),
        nr,
        args: [0; 6],
    };
    match (errno, access, name) {
        // The view (layers/mounts.rs) answers EROFS outside the writable trees and on protect
        // binds, EBUSY on renaming or removing a protect bind; the mapper tells which rule
        // (`read_only_rule`). A filesystem mounted read-only on the host looks the same.
        (libc::EROFS | libc::EBUSY, a, _) if !a.is_empty() && path.is_some() => {
            let object = Object::Path {
                path: path.unwrap_or_default(),
                access: access.to_string(),
                elided: None,
            };
            return (
                crate::layers::mounts::LAYER.name(),
                PROTECT_RULE.into(),
                object,
            );
        }
        // The view's writable trees are noexec: mapping a file there executable (the
        // dynamic loader running a copied program) answers EPERM.
        (libc::EPERM, "map-exec", _) if path.is_some() => {
            let object = Object::Path {
                path: path.unwrap_or_default(),
                access: access.to_string(),
                elided: None,
            };
            return (
                crate::layers::mounts::LAYER.name(),
                "filesystem: noexec outside filesystem.exec".into(),
                object,
            );
        }
        (libc::EACCES, "", _) | (libc::EPERM, "", _) => {}
        (libc::EACCES, _, _) => {
            let rule = if access == "exec" {
                "filesystem: exec not in allow-list"
            } else {
                "filesystem: not in allow-list"
            };
            let object = match path {
                Some(path) => Object::Path {
                    path,
                    access: access.to_string(),
                    elided: None,
                },
                None => syscall_object(),
            };
            return (LANDLOCK_LAYER, rule.into(), object);
        }
        _ => {}
    }
    let net_object = |(addr, port): (IpAddr, u16)| Object::Net {
        proto: "tcp".into(),
        addr: addr.to_string(),
        port,
    };
    match (errno, name) {
        (libc::EACCES, "connect" | "bind") => {
            let rule = if name == "bind" {
                "network: tcp bind port not allowed"
            } else {
                "network: tcp port not allowed"
            };
            let object = addr.map_or_else(syscall_object, net_object);
            (LANDLOCK_LAYER, rule.into(), object)
        }
        (libc::EPERM, "kill" | "tkill" | "tgkill") => (
            LANDLOCK_LAYER,
            "scope: signal to a process outside the sandbox".into(),
            Object::Signal {
                target_pid: target_pid.unwrap_or(0),
                signal: 0,
            },
        ),
        (libc::EPERM, "connect" | "sendto" | "sendmsg") if addr.is_none() => (
            LANDLOCK_LAYER,
            "scope: abstract unix socket outside the sandbox".into(),
            syscall_object(),
        ),
        (_, "socket") => {
            let (family, sock_type, _) = socket.unwrap_or_default();
            (
                KERNEL_LAYER,
                format!("{}: socket refused", errno_name(errno)),
                Object::Socket {
                    family: i32::from(family),
                    sock_type: i32::from(sock_type),
                },
            )
        }
        _ => {
            let object = match (path, addr) {
                (Some(path), _) => Object::Path {
                    path,
                    access: name.to_string(),
                    elided: None,
                },
                (None, Some(a)) => net_object(a),
                (None, None) => syscall_object(),
            };
            let rule = if errno == libc::EPERM {
                "operation not permitted".to_string()
            } else {
                format!("{}: permission denied", name)
            };
            (KERNEL_LAYER, rule, object)
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EROFS => "EROFS",
        libc::EBUSY => "EBUSY",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The supervisor's userspace path for a connect flood: kernel event → `Mapper::map` →
    /// `append_batch`, in ring-drain-sized batches (decoding is measured in ebpf-probes).
    #[test]
    #[ignore = "benchmark: cargo test --release -p agent-sandbox --lib flood_pipeline -- --ignored --nocapture"]
    fn flood_pipeline_throughput() {
        use crate::audit::bench::thread_cpu;
        use crate::audit::{AuditLog, TerminalSink};
        use ebpf_probes::{KernelEvent, NetHook, NetVerdictReason};
        use std::time::Instant;

        let n = 200_000u64;
        let net = ebpf_probes::NetRules {
            default_deny: ebpf_probes::default_deny_rules(),
            ..Default::default()
        };
        let mut mapper = Mapper::new(7, Default::default(), net);
        let pid = std::process::id();
        let kernel: Vec<KernelEvent> = (0..n)
            .map(|seq| KernelEvent::NetDenied {
                sandbox: 7,
                seq,
                pid,
                tgid: pid,
                comm: "python3".into(),
                hook: NetHook::Connect,
                addr: Some(std::net::Ipv4Addr::new(127, 0, (seq >> 8) as u8, seq as u8).into()),
                path: None,
                port: 80,
                proto: 6,
                family: libc::AF_INET as u16,
                sock_type: libc::SOCK_STREAM as u16,
                rule: NetVerdictReason::DenyRule,
                enforced: true,
                killed: false,
            })
            .collect();
        for (label, terminal) in [("map + append_batch", false), ("  + terminal", true)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pipeline.jsonl");
            let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
            if terminal {
                let null = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/null")
                    .unwrap();
                log.add_sink(Box::new(TerminalSink::new(Box::new(null), false)));
            }
            let (wall, cpu) = (Instant::now(), thread_cpu());
            for chunk in kernel.chunks(1024) {
                let events = chunk.to_vec();
                log.append_batch(events.into_iter().filter_map(|e| mapper.map(e)))
                    .unwrap();
            }
            let (wall, cpu) = (wall.elapsed(), thread_cpu().saturating_sub(cpu));
            assert_eq!(log.denials(), n);
            println!(
                "{label:>20}: {:>10.0} /s cpu ({:>10.0} /s wall)",
                n as f64 / cpu.as_secs_f64(),
                n as f64 / wall.as_secs_f64()
            );
        }
    }

    fn mapper() -> Mapper {
        let net = ebpf_probes::NetRules {
            default_deny: ebpf_probes::default_deny_rules(),
            ..Default::default()
        };
        Mapper::new(7, Arc::new(DenyTable::default()), net)
    }

    #[test]
    fn net_denial_names_the_default_deny_rule() {
        let mut m = mapper();
        let event = m
            .map(KernelEvent::NetDenied {
                sandbox: 7,
                seq: 1,
                pid: 100,
                tgid: 100,
                comm: "python3".into(),
                hook: NetHook::Connect,
                addr: Some("127.0.0.2".parse().unwrap()),
                path: None,
                port: 80,
                proto: 6,
                family: libc::AF_INET as u16,
                sock_type: libc::SOCK_STREAM as u16,
                rule: NetVerdictReason::DenyRule,
                enforced: true,
                killed: false,
            })
            .expect("mapped");
        let Event::Denial(d) = event else {
            panic!("{event:?}")
        };
        assert_eq!(d.layer, "cgroup-bpf");
        assert_eq!(d.rule, "network.deny: 127.0.0.0/8:* 127.0.0.2:80");
        assert_eq!(d.action, Action::Denied);
        assert_eq!(
            d.object,
            Object::Net {
                proto: "tcp".into(),
                addr: "127.0.0.2".into(),
                port: 80
            }
        );
        assert_eq!(m.delivered(), 1);
    }

    #[test]
    fn eacces_open_is_a_landlock_path_denial_and_other_sandboxes_are_ignored() {
        let mut m = mapper();
        let denied = |sandbox| KernelEvent::SyscallDenied {
            sandbox,
            seq: 2,
            pid: 100,
            tgid: 100,
            ppid: 99,
            comm: "cat".into(),
            syscall: libc::SYS_openat,
            errno: libc::EACCES,
            path: Some("/etc/shadow".into()),
            path_truncated: false,
            path_elided: None,
            addr: None,
            target_pid: None,
            socket: None,
            killed: false,
        };
        assert_eq!(m.map(denied(8)), None);
        let Some(Event::Denial(d)) = m.map(denied(7)) else {
            panic!("not a denial")
        };
        assert_eq!(d.layer, "landlock");
        assert_eq!(d.rule, "filesystem: not in allow-list");
        assert_eq!(d.ppid, Some(99));
        assert_eq!(
            d.object,
            Object::Path {
                path: "/etc/shadow".into(),
                access: "open".into(),
                elided: None,
            }
        );
        assert_eq!(m.delivered(), 1);
    }

    fn lsm_denied(hook: LsmHook, reason: LsmReason, path: Option<&str>) -> KernelEvent {
        KernelEvent::LsmDenied {
            sandbox: 7,
            seq: 3,
            pid: 100,
            tgid: 100,
            ppid: 99,
            comm: "sh".into(),
            hook,
            reason,
            path: path.map(str::to_string),
            path_truncated: false,
            path_elided: None,
            dev: 0,
            ino: 0,
            addr: None,
            target_pid: None,
            detail: 0,
            enforced: true,
            killed: false,
        }
    }

    fn denial(event: Option<Event>) -> Denial {
        match event {
            Some(Event::Denial(d)) => d,
            other => panic!("not a denial: {other:?}"),
        }
    }

    #[test]
    fn lsm_file_denials_name_the_deny_glob() {
        let mut m = mapper().with_deny_globs(&[
            "/h/.ssh/**".to_string(),
            "**/.env".to_string(),
            "**/.env.*".to_string(),
        ]);
        let d = denial(m.map(lsm_denied(
            LsmHook::PathMknod,
            LsmReason::DenyName,
            Some("/w/sub/.env"),
        )));
        assert_eq!(d.layer, "bpf-lsm");
        assert_eq!(d.rule, "filesystem.deny: **/.env");
        assert_eq!(d.action, Action::Denied);
        assert_eq!(d.ppid, Some(99));
        assert_eq!(
            d.object,
            Object::Path {
                path: "/w/sub/.env".into(),
                access: "path_mknod".into(),
                elided: None,
            }
        );
        // A path given relative to its filesystem's root still names the basename glob.
        let d = denial(m.map(lsm_denied(
            LsmHook::InodeSetattr,
            LsmReason::DenyName,
            Some("x/.env.local"),
        )));
        assert_eq!(d.rule, "filesystem.deny: **/.env.*");
        let d = denial(m.map(lsm_denied(
            LsmHook::FileOpen,
            LsmReason::DenyTree,
            Some("/h/.ssh/id_rsa"),
        )));
        assert_eq!(d.rule, "filesystem.deny: /h/.ssh/**");
        let d = denial(m.map(lsm_denied(
            LsmHook::FileOpen,
            LsmReason::DenyInode,
            Some("/elsewhere/link"),
        )));
        assert_eq!(d.rule, "filesystem.deny: denied object");
        assert_eq!(m.delivered(), 4);
    }

    #[test]
    fn lsm_exec_signal_and_kernel_denials() {
        let mut m = mapper();
        let d = denial(m.map(lsm_denied(
            LsmHook::BprmCheckSecurity,
            LsmReason::OutsideExecTrees,
            Some("/w/busybox"),
        )));
        assert_eq!(d.rule, "exec: not in exec list");
        assert_eq!(
            d.object,
            Object::Exec {
                path: "/w/busybox".into()
            }
        );
        let mut kill = lsm_denied(LsmHook::TaskKill, LsmReason::OtherSandbox, None);
        if let KernelEvent::LsmDenied {
            target_pid, detail, ..
        } = &mut kill
        {
            *target_pid = Some(1);
            *detail = 0;
        }
        let d = denial(m.map(kill));
        assert_eq!(d.rule, "scope: signal outside the sandbox");
        assert_eq!(
            d.object,
            Object::Signal {
                target_pid: 1,
                signal: 0
            }
        );
        let mut bpf = lsm_denied(LsmHook::Bpf, LsmReason::KernelOperation, None);
        if let KernelEvent::LsmDenied {
            enforced, detail, ..
        } = &mut bpf
        {
            *enforced = false;
            *detail = 5;
        }
        let d = denial(m.map(bpf));
        assert_eq!(d.rule, "kernel: bpf()");
        assert_eq!(d.action, Action::Audited);
        assert!(
            matches!(d.object, Object::Syscall { ref name, args, .. } if name == "bpf" && args[0] == 5)
        );
        let d = denial(m.map(lsm_denied(
            LsmHook::InodeSetattr,
            LsmReason::OutsideWriteTrees,
            Some("/etc/hosts"),
        )));
        assert_eq!(d.rule, "filesystem: metadata change outside the write list");
    }

    #[test]
    fn lsm_network_denials_and_anomalies() {
        let mut m = mapper();
        let mut connect = lsm_denied(LsmHook::SocketConnect, LsmReason::NetDenyRule, None);
        if let KernelEvent::LsmDenied { addr, .. } = &mut connect {
            *addr = Some(("169.254.169.254".parse().unwrap(), 80));
        }
        let d = denial(m.map(connect));
        assert_eq!(d.rule, "network.deny: 169.254.0.0/16:* 169.254.169.254:80");
        assert_eq!(
            d.object,
            Object::Net {
                proto: "tcp".into(),
                addr: "169.254.169.254".into(),
                port: 80
            }
        );
        let anomaly = m.map(KernelEvent::LsmAnomaly {
            sandbox: 7,
            seq: 9,
            pid: 100,
            tgid: 100,
            comm: "curl".into(),
            hook: LsmHook::SocketConnect,
            addr: Some(("10.0.0.1".parse().unwrap(), 443)),
            lsm_allowed: false,
            cgroup_allowed: true,
            cgroup_sandbox: 0,
        });
        match anomaly {
            Some(Event::Anomaly { detail }) => {
                assert!(
                    detail.contains("socket_connect to 10.0.0.1:443"),
                    "{detail}"
                );
                assert!(detail.contains("bpf-lsm denied"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn closing_records_report_loss_and_unbalanced_books() {
        let m = mapper();
        let counters = Counters {
            last_seq: 5,
            lost_violations: 2,
            lost_trace: 0,
            throttled_trace: 1,
            lost_task_storage: 0,
        };
        let records = m.closing_records(&counters, 0);
        assert!(records.contains(&Event::Loss {
            source: LOSS_SOURCE.into(),
            kind: "violations".into(),
            count: 2
        }));
        assert!(records
            .iter()
            .any(|e| matches!(e, Event::Anomaly { detail } if detail.contains("numbered 5"))));
        let balanced = Counters {
            last_seq: 0,
            ..Counters::default()
        };
        assert!(m.closing_records(&balanced, 0).is_empty());
    }
}
