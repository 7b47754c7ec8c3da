//! Kernel events (cgroup-BPF denials, observer reports) → audit events. The one place that
//! maps `ebpf_probes::KernelEvent` into `audit::Event`, and that accounts for every event the
//! kernel numbered: delivered + lost must equal the last sequence number.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ebpf_probes::{Counters, KernelEvent, NetHook, NetVerdictReason};

use crate::audit::{Action, Denial, Event, Object, ProcessEvent, ProcessKind};
use crate::layers::cgroup::NET_LAYER;
use crate::layers::seccomp::DenyTable;

/// Layer name of denials no agentbox layer claims (EPERM from the kernel itself).
const KERNEL_LAYER: &str = "kernel";
const LANDLOCK_LAYER: &str = "landlock";
/// `source` of the `loss` records this module writes.
pub const LOSS_SOURCE: &str = "ebpf-ringbuf";

/// Who a pid is, as far as the events told us (cheaper than /proc for every denial).
#[derive(Debug, Clone, Default)]
struct Who {
    ppid: Option<i32>,
    exe: Option<String>,
}

/// Turns kernel events into audit events for one sandbox.
pub struct Mapper {
    /// The sandbox's id in the eBPF maps: events of other sandboxes are not ours.
    sandbox: u32,
    seccomp: Arc<DenyTable>,
    net: ebpf_probes::NetRules,
    who: HashMap<i32, Who>,
    /// Events received (mapped, or dropped as duplicates): the accounting's left side.
    delivered: u64,
    foreign: u64,
}

impl Mapper {
    pub fn new(sandbox: u32, seccomp: Arc<DenyTable>, net: ebpf_probes::NetRules) -> Self {
        Mapper {
            sandbox,
            seccomp,
            net,
            who: HashMap::new(),
            delivered: 0,
            foreign: 0,
        }
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The audit event for one kernel event; `None` when it says nothing new (a syscall the
    /// seccomp notifier already logged) or is not this sandbox's.
    pub fn map(&mut self, event: KernelEvent) -> Option<Event> {
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
                Some(Event::Denial(Denial {
                    layer: NET_LAYER.into(),
                    rule: self.net_rule_text(rule, addr, port, family, sock_type),
                    action,
                    pid,
                    ppid: who.ppid,
                    exe: who.exe,
                    object,
                }))
            }
            KernelEvent::SyscallDenied {
                tgid,
                ppid,
                comm,
                syscall,
                errno,
                path,
                path_truncated,
                addr,
                target_pid,
                socket,
                killed,
                ..
            } => {
                let name = ebpf_probes::syscall_name(syscall).unwrap_or("?");
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
                let (layer, rule, object) = syscall_denial(
                    name,
                    syscall,
                    errno,
                    path.map(|p| if path_truncated { p + "…" } else { p }),
                    addr,
                    target_pid,
                    socket,
                );
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

    fn net_rule_text(
        &self,
        reason: NetVerdictReason,
        addr: Option<IpAddr>,
        port: u16,
        family: u16,
        sock_type: u16,
    ) -> String {
        let target = match addr {
            Some(IpAddr::V6(a)) => format!("[{a}]:{port}"),
            Some(a) => format!("{a}:{port}"),
            None => format!("port {port}"),
        };
        match reason {
            NetVerdictReason::NoAllowRule => format!("network: not in allow-list {target}"),
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
            .filter(|r| r.net.contains(&addr) && r.ports.contains(port))
            .max_by_key(|r| (r.net.prefix_len(), u16::MAX - (r.ports.hi - r.ports.lo)))
            .map(|r| {
                let ports = if r.ports == ebpf_probes::PortRange::ALL {
                    "*".to_string()
                } else if r.ports.lo == r.ports.hi {
                    r.ports.lo.to_string()
                } else {
                    format!("{}-{}", r.ports.lo, r.ports.hi)
                };
                match r.net {
                    ebpf_probes::ipnet::IpNet::V6(n) => format!("[{n}]:{ports}"),
                    n => format!("{n}:{ports}"),
                }
            })
    }

    /// The `loss` records for these final counters, and an `anomaly` if the books do not
    /// balance (delivered + lost != numbered). Call after the last drain.
    pub fn closing_records(&self, counters: &Counters, undecodable: u64) -> Vec<Event> {
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

fn proto_name(proto: u8, sock_type: u16, hook: NetHook) -> &'static str {
    match (i32::from(proto), i32::from(sock_type), hook) {
        (libc::IPPROTO_TCP, _, _) => "tcp",
        (libc::IPPROTO_UDP, _, _) => "udp",
        (_, libc::SOCK_STREAM, _) => "tcp",
        (_, libc::SOCK_DGRAM, _) | (_, _, NetHook::Sendmsg) => "udp",
        _ => "ip",
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
        _ => "",
    };
    let syscall_object = || Object::Syscall {
        name: name.to_string(),
        nr,
        args: [0; 6],
    };
    match (errno, access, name) {
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
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> Mapper {
        let net = ebpf_probes::NetRules {
            deny: ebpf_probes::default_deny_rules(),
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
                access: "open".into()
            }
        );
        assert_eq!(m.delivered(), 1);
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
