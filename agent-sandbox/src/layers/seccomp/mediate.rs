//! Socket calls the supervisor decides, and for pathname UNIX sockets performs, itself.
//!
//! A pathname UNIX socket is a door into a host process (docker.sock, D-Bus, ssh-agent,
//! /dev/log). No kernel check can judge one by its path before the lookup (a symlink in a
//! writable tree names any socket), so agentbox never lets the agent's own connect() reach
//! one: the filter sends every connect() here (user notification); for a pathname address
//! the supervisor
//! 1. copies the address out of the agent's memory (its copy is what gets judged),
//! 2. opens the path with `O_PATH` inside the agent's root (`/proc/<tid>/root`,
//!    `RESOLVE_IN_ROOT`), so symlinks resolve as the agent's view resolves them,
//! 3. checks the socket that open pinned against the write trees and `network.unix`,
//! 4. takes the agent's socket (`pidfd_getfd`) and connects it to `/proc/self/fd/<pinned>`:
//!    exactly the inode it checked, whatever the agent's threads change meanwhile.
//!
//! inotify_add_watch() comes here the same way: Landlock has no right for watching, so a
//! watch on a denied directory (or one outside every tree) would name the files inside as
//! they change. The path is opened O_PATH in the agent's root, judged by the file-system
//! lists, and the watch added to the agent's inotify instance on the pinned inode.
//!
//! Other addresses are answered CONTINUE. That is only sound where the kernel refuses a
//! pathname destination to every sandboxed task by itself (the cgroup `connect_unix` and
//! `sendmsg_unix` hooks of 6.7+, or BPF LSM's `socket_connect`/`socket_sendmsg`): a thread
//! that rewrites the address after our read then meets the kernel hook. Without those hooks
//! (unprivileged, or old kernels) datagram sends come here as well (`sends`) and are judged
//! on our copy, and IP destinations are checked against the network rules here; the rewrite
//! race stays open there, and the coverage says so.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::approval::Gate;
use crate::audit::Object;
use crate::layers::dns::resolver::{name_note, GrantSink, NameBook};
use crate::policy::{Coverage, Guarantee, Layer, Policy, Status, SyscallGroup};

/// Longest address the kernel copies in (`sizeof(struct sockaddr_storage)`).
const SOCKADDR_MAX: usize = 128;
/// `offsetof(struct sockaddr_un, sun_path)`.
const SUN_PATH_OFF: usize = 2;
/// `sizeof(struct msghdr)` / `sizeof(struct mmsghdr)` on 64-bit.
const MSGHDR_LEN: usize = 56;
const MMSGHDR_LEN: usize = 64;
/// The largest datagram the supervisor sends on the agent's behalf (UDP's own limit).
const DATAGRAM_MAX: usize = 65_535;
/// sendmmsg() handles at most this many messages per call (UIO_MAXIOV).
const MMSG_MAX: u64 = 1024;

/// Rule text of a datagram sent to a socket path, or of a pathname connect the kernel hooks
/// refused: one whose address has an IP address's length (the filter lets those pass
/// unasked: `ip_sized_connects_pass`), or else one racing the supervisor.
pub(crate) fn unix_bypass_rule(datagram: bool, path: &str) -> String {
    // The address is sun_family (2 bytes) and the path, with or without its NUL.
    let ip_sized = |n: usize| [14, 26].iter().any(|l| n == *l || n + 1 == *l);
    if datagram {
        "network.unix: datagram sent to a socket path; connect() to the socket first".into()
    } else if ip_sized(path.len()) {
        "network.unix: a socket path of 13-14 or 25-26 bytes has an IP address's length, \
         whose connect() goes straight to the kernel instead of the supervisor; give the \
         socket a path of another length"
            .into()
    } else {
        "network.unix: socket path reached around the supervisor".into()
    }
}

/// The audit object of a pathname UNIX socket.
pub(crate) fn unix_object(path: String, sock_type: i32) -> Object {
    Object::Unix {
        path,
        resolved: None,
        sock_type: sock_type_name(sock_type).to_string(),
    }
}

fn sock_type_name(sock_type: i32) -> &'static str {
    match sock_type & 0xf {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "",
    }
}

/// What the supervisor judges here, compiled before fork.
#[derive(Debug, Clone)]
pub(crate) struct Mediation {
    /// The sandbox's own trees: sockets inside them are always reachable.
    own: Vec<PathBuf>,
    /// `network.unix`, compiled.
    set: GlobSet,
    /// Datagram sends (sendto with an address, sendmsg, sendmmsg) come here too: no kernel
    /// hook refuses a pathname destination.
    pub(crate) sends: bool,
    /// The network rules, when no kernel layer checks IP destinations (unprivileged).
    net: Option<ebpf_probes::NetRules>,
    /// Connects and datagrams to abstract addresses are refused: nothing else keeps the
    /// agent from the host's (`Needs::refuse_abstract`).
    refuse_abstract: bool,
    /// What may be watched: inside the read, write or exec trees, and no deny glob.
    watch_trees: Vec<PathBuf>,
    deny: GlobSet,
    deny_globs: Vec<String>,
    /// Host-name rules judged here (unprivileged): port 53 goes to the sandbox's resolver,
    /// and the addresses it handed out are open.
    dns: Option<DnsGate>,
    /// The approvals, when an area asks.
    ask: Option<Arc<Gate>>,
    /// `network.unknown = "ask"`: a connect no rule allows or denies goes to the approver.
    ask_net: bool,
    /// `filesystem.unknown = "ask"`: so does a read no tree allows (`open`).
    ask_fs: Option<super::open::OpenAsk>,
    /// `filesystem.exec_unknown = "ask"`: and an exec outside the exec trees (`exec`).
    ask_exec: Option<super::exec::ExecAsk>,
}

/// The supervisor's share of the DNS layer where no kernel layer has it: the resolver's
/// address, and the addresses it granted (written by the resolver thread).
#[derive(Debug, Clone)]
pub(crate) struct DnsGate {
    /// Where port 53 goes: the connects and sendto() datagrams judged here are redirected
    /// to it by the supervisor (an on-behalf connect does not meet the kernel's redirect).
    pub resolver: std::net::SocketAddrV4,
    /// A kernel program redirects port 53 too (root asking): what the agent sends itself
    /// (sendmsg, sendmmsg) is left to it instead of refused.
    pub kernel_redirects: bool,
    pub grants: Arc<SupervisorGrants>,
    pub book: Arc<NameBook>,
}

/// Granted addresses, for the supervisor's own address checks.
#[derive(Debug, Default)]
pub(crate) struct SupervisorGrants(Mutex<HashMap<IpAddr, Vec<(ebpf_probes::PortRange, u8)>>>);

impl SupervisorGrants {
    fn allows(&self, addr: IpAddr, port: u16, proto: u8) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|(r, protos)| r.contains(port) && protos & proto == proto)
            })
    }
}

impl GrantSink for Arc<SupervisorGrants> {
    fn set(&self, addr: IpAddr, ranges: &[(ebpf_probes::PortRange, u8)]) -> anyhow::Result<()> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ranges.is_empty() {
            map.remove(&addr);
        } else {
            map.insert(addr, ranges.to_vec());
        }
        Ok(())
    }
}

/// The supervisor's answer to one mediated call.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Let the kernel run the call as the agent made it.
    Continue,
    /// Refuse with EPERM and log.
    Deny { rule: String, object: Object },
    /// Refuse with this errno, as the kernel would have (bad pointer, no such socket).
    Fail(i32),
    /// Connect the agent's socket `fd` to this destination on its behalf.
    Connect { fd: i32, target: Target },
    /// Put the connect to the approver; connect from `addr` (our copy) if it allows.
    Ask {
        fd: i32,
        addr: Vec<u8>,
        destination: String,
        object: Object,
    },
    /// Put the read of the pinned `file` to the approver; open it for the agent (with its
    /// `flags`) and install the descriptor if it allows.
    AskOpen {
        file: OwnedFd,
        flags: i32,
        destination: String,
        object: Object,
    },
    /// Put the exec of the pinned `file` (`inode`) to the approver; if it allows, make the
    /// inode a BPF LSM exec rule, then let the call continue.
    AskExec {
        file: OwnedFd,
        inode: ebpf_probes::InodeId,
        destination: String,
        object: Object,
    },
    /// Add a watch for the pinned file to the agent's inotify instance `fd`.
    Watch { fd: i32, file: OwnedFd, mask: u32 },
    /// Send this datagram from the agent's socket `fd` on its behalf.
    SendTo {
        fd: i32,
        data: Vec<u8>,
        flags: i32,
        addr: Vec<u8>,
    },
}

/// Where a mediated connect goes: exactly what the supervisor checked.
#[derive(Debug)]
pub(crate) enum Target {
    /// The socket file pinned with O_PATH.
    Socket(OwnedFd),
    /// The supervisor's copy of an IP address.
    Addr(Vec<u8>),
}

/// What the kernel leaves to the supervisor here, decided by the plan.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Needs {
    /// The kernel hook that refuses pathname destinations to sandboxed tasks, if any; without
    /// one, datagram sends come to the supervisor too.
    pub unix_hooks: Option<&'static str>,
    /// No kernel layer checks IP destinations: the supervisor is the only one.
    pub check_ip: bool,
    /// Neither Landlock scoping (ABI 6) nor a network namespace keeps the agent from the
    /// host's abstract UNIX sockets (Linux before 6.12 without user namespaces, or with the
    /// network open): the supervisor refuses every abstract destination, the sandbox's own
    /// included, since it cannot tell them apart.
    pub refuse_abstract: bool,
}

impl Mediation {
    pub(crate) fn compile(
        policy: &Policy,
        needs: Needs,
        dns: Option<DnsGate>,
    ) -> anyhow::Result<Self> {
        // Abstract datagrams can only be refused where sends come here.
        let sends = needs.unix_hooks.is_none() || needs.refuse_abstract;
        let check_ip = needs.check_ip;
        let mut builder = GlobSetBuilder::new();
        for glob in &policy.network.unix {
            builder.add(GlobBuilder::new(glob).literal_separator(true).build()?);
        }
        let fs = &policy.filesystem;
        let deny_globs = fs.deny_patterns();
        let deny = crate::policy::globs::glob_set(&deny_globs)?;
        Ok(Mediation {
            own: fs.write.clone(),
            set: builder.build()?,
            sends,
            net: check_ip.then(|| crate::layers::ebpf::net::net_rules(policy)),
            refuse_abstract: needs.refuse_abstract,
            watch_trees: fs.all_trees(),
            deny,
            deny_globs,
            dns,
            ask: None,
            ask_net: false,
            ask_fs: None,
            ask_exec: None,
        })
    }

    /// What no rule decides is put to `gate`: connects when `net` (needs the supervisor's
    /// own address checks: `Needs::check_ip`), reads when `fs` is given, execs when `exec`
    /// is.
    pub(crate) fn with_ask(
        mut self,
        gate: Option<Arc<Gate>>,
        net: bool,
        fs: Option<super::open::OpenAsk>,
        exec: Option<super::exec::ExecAsk>,
    ) -> Self {
        self.ask_net = net && gate.is_some();
        self.ask_fs = fs.filter(|_| gate.is_some());
        self.ask_exec = exec.filter(|_| gate.is_some());
        self.ask = gate;
        self
    }

    /// Whether reads no tree allows come here (`filesystem.unknown = "ask"`).
    pub(crate) fn asks_reads(&self) -> bool {
        self.ask_fs.is_some()
    }

    /// What approves execs, if they are asked (`filesystem.exec_unknown = "ask"`).
    pub(crate) fn exec_ask(&self) -> Option<&super::exec::ExecAsk> {
        self.ask_exec.as_ref()
    }

    /// The approvals of this sandbox, if it asks.
    pub(crate) fn gate(&self) -> Option<&Arc<Gate>> {
        self.ask.as_ref()
    }

    /// The lease key of an unknown destination the approver may be asked about: `None` when
    /// nothing asks, or when a deny rule (the profile's or agentbox's own: loopback,
    /// metadata) covers it, since a denied destination is never put to a person.
    fn askable(&self, addr: &[u8], proto: u8) -> Option<String> {
        if !self.ask_net {
            return None;
        }
        let rules = self.net.as_ref()?;
        let (ip, port) = ip_of(addr)?;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let denied = rules.deny.iter().chain(&rules.default_deny).any(|r| {
            let net = match r.net {
                ebpf_probes::ipnet::IpNet::V6(v6) => v6
                    .addr()
                    .to_ipv4_mapped()
                    .filter(|_| v6.prefix_len() >= 96)
                    .and_then(|a| ebpf_probes::ipnet::Ipv4Net::new(a, v6.prefix_len() - 96).ok())
                    .map_or(r.net, ebpf_probes::ipnet::IpNet::V4),
                other => other,
            };
            net.contains(&ip) && r.ports.contains(port) && r.protos & proto == proto
        });
        if denied {
            return None;
        }
        let proto = if proto == ebpf_probes::PROTO_UDP {
            "udp"
        } else {
            "tcp"
        };
        Some(format!("{proto} {}", net_target(ip, port)))
    }

    /// Whether the filter may let a connect() with an IP-sized address (16 or 28 bytes: the
    /// lengths of `sockaddr_in` and `sockaddr_in6`) run without asking: a kernel hook judges
    /// both its IP destination and any pathname destination of that length (which it refuses,
    /// as it refuses every pathname connect the supervisor did not make). It spares a TCP
    /// connect its round trip to the supervisor, and costs a pathname socket of exactly 14 or
    /// 26 bytes its connect (`unix_bypass_rule` says so).
    pub(crate) fn ip_sized_connects_pass(&self) -> bool {
        !self.sends && self.net.is_none() && !self.refuse_abstract
    }

    /// Whether this syscall comes to the supervisor (the filter sends it).
    pub(crate) fn handles(&self, nr: i64) -> bool {
        nr == libc::SYS_connect
            || nr == libc::SYS_inotify_add_watch
            || (self.ask_fs.is_some() && super::open::OpenAsk::handles(nr))
            || (self.ask_exec.is_some() && super::exec::ExecAsk::handles(nr))
            || (self.sends
                && matches!(
                    nr,
                    libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg
                ))
    }

    /// Judge one call of thread `tid`. Reads the agent's memory: the caller checks the
    /// notification is still pending afterwards.
    pub(crate) fn decide(&self, tid: i32, nr: i64, args: &[u64; 6]) -> Verdict {
        let mem = match fs::File::open(format!("/proc/{tid}/mem")) {
            Ok(mem) => mem,
            // The task is gone: its notification is answered into the void.
            Err(_) => return Verdict::Fail(libc::ESRCH),
        };
        match nr {
            libc::SYS_connect => match read_sockaddr(&mem, args[1], args[2]) {
                Ok(addr) => self.connect(tid, args[0] as i32, &addr),
                Err(errno) => Verdict::Fail(errno),
            },
            libc::SYS_inotify_add_watch => match read_c_path(&mem, args[1]) {
                Ok(path) => self.watch(tid, args[0] as i32, &path, args[2] as u32),
                Err(errno) => Verdict::Fail(errno),
            },
            libc::SYS_sendto if args[4] != 0 => match read_sockaddr(&mem, args[4], args[5]) {
                // A datagram the supervisor checked is sent from its copy: no thread can
                // change the address in between. A query to port 53 goes to the resolver.
                Ok(addr) => match self.dns_target(&addr) {
                    Some(resolver) => self.send_copy(&mem, args, resolver),
                    None => match self.send(&addr) {
                        Verdict::Continue if self.net.is_some() && is_ip(&addr) => {
                            self.send_copy(&mem, args, addr)
                        }
                        other => other,
                    },
                },
                Err(errno) => Verdict::Fail(errno),
            },
            libc::SYS_sendmsg => match msghdr_name(&mem, args[1]) {
                Ok(Some(addr)) => self.send(&addr),
                Ok(None) => Verdict::Continue,
                Err(errno) => Verdict::Fail(errno),
            },
            libc::SYS_sendmmsg => {
                let count = (args[2] & 0xffff_ffff).min(MMSG_MAX);
                for i in 0..count {
                    match msghdr_name(&mem, args[1].wrapping_add(i * MMSGHDR_LEN as u64)) {
                        Ok(Some(addr)) => match self.send(&addr) {
                            Verdict::Continue => {}
                            other => return other,
                        },
                        Ok(None) => {}
                        Err(errno) => return Verdict::Fail(errno),
                    }
                }
                Verdict::Continue
            }
            libc::SYS_execve | libc::SYS_execveat => match &self.ask_exec {
                Some(execs) => execs.decide(tid, &mem, nr, args),
                None => Verdict::Continue,
            },
            libc::SYS_open | libc::SYS_openat | libc::SYS_openat2 => match &self.ask_fs {
                Some(reads) => reads.decide(tid, &mem, nr, args),
                None => Verdict::Continue,
            },
            _ => Verdict::Continue,
        }
    }

    /// A datagram of sendto() (`args`) sent by the supervisor to `addr`, from its own copy of
    /// the data.
    fn send_copy(&self, mem: &fs::File, args: &[u64; 6], addr: Vec<u8>) -> Verdict {
        let len = (args[2] as usize).min(DATAGRAM_MAX);
        match read_exact_at(mem, args[1], len) {
            Ok(data) => Verdict::SendTo {
                fd: args[0] as i32,
                data,
                flags: args[3] as i32,
                addr,
            },
            Err(errno) => Verdict::Fail(errno),
        }
    }

    fn connect(&self, tid: i32, fd: i32, addr: &[u8]) -> Verdict {
        match family(addr) {
            Some(libc::AF_UNIX) => {}
            Some(libc::AF_INET | libc::AF_INET6) => {
                if let Some(to) = self.dns_target(addr) {
                    return Verdict::Connect {
                        fd,
                        target: Target::Addr(to),
                    };
                }
                // Only the resolver's grants and the approver's leases are per protocol (the
                // profile's address rules cover TCP and UDP alike): the socket's type, which
                // costs a pidfd_getfd, is looked up only where one of them can decide.
                let proto = if self.net.is_some() && (self.dns.is_some() || self.ask_net) {
                    match socket_type(tid, fd) {
                        Ok(libc::SOCK_DGRAM) => ebpf_probes::PROTO_UDP,
                        Ok(_) => ebpf_probes::PROTO_TCP,
                        Err(errno) => return Verdict::Fail(errno),
                    }
                } else {
                    ebpf_probes::PROTO_TCP
                };
                return match self.ip(addr, proto) {
                    // Checked here: connect from our copy of the address.
                    Verdict::Continue if self.net.is_some() => Verdict::Connect {
                        fd,
                        target: Target::Addr(addr.to_vec()),
                    },
                    Verdict::Deny { rule, object } => match self.askable(addr, proto) {
                        Some(destination)
                            if self.ask.as_ref().is_some_and(|g| g.leased(&destination)) =>
                        {
                            Verdict::Connect {
                                fd,
                                target: Target::Addr(addr.to_vec()),
                            }
                        }
                        Some(destination) => Verdict::Ask {
                            fd,
                            addr: addr.to_vec(),
                            destination,
                            object,
                        },
                        None => Verdict::Deny { rule, object },
                    },
                    other => other,
                };
            }
            _ => return Verdict::Continue,
        }
        let Some(path) = sun_path(addr) else {
            if let Some(verdict) = self.abstract_verdict(addr, libc::SOCK_STREAM) {
                return verdict;
            }
            // Unnamed or abstract: Landlock's scoping (or the network namespace) judges.
            return Verdict::Continue;
        };
        let written = absolute(tid, path);
        let shown = written.to_string_lossy().into_owned();
        let (socket, resolved) = match open_in_root(tid, &written) {
            Ok(found) => found,
            // RESOLVE_NO_MAGICLINKS: /proc/<pid>/fd/N names an inode, not a path we could
            // judge (an O_PATH descriptor of a host socket; `self` is not ours to resolve
            // either). No socket lives under /proc: refused and said.
            Err(_) if written.starts_with("/proc") => {
                return Verdict::Deny {
                    rule: "network.unix: socket named through a /proc magic link; connect \
                           by its path"
                        .into(),
                    object: unix_object(shown, 0),
                }
            }
            Err(errno) => return Verdict::Fail(errno),
        };
        let object = Object::Unix {
            path: shown,
            resolved: Some(resolved.to_string_lossy().into_owned()),
            sock_type: String::new(),
        };
        if self.allows(&resolved) {
            Verdict::Connect {
                fd,
                target: Target::Socket(socket),
            }
        } else {
            Verdict::Deny {
                rule: format!(
                    "network.unix: not in the write trees or network.unix ({})",
                    resolved.display()
                ),
                object,
            }
        }
    }

    fn watch(&self, tid: i32, fd: i32, path: &[u8], mask: u32) -> Verdict {
        let written = absolute(tid, path);
        let follow = mask & libc::IN_DONT_FOLLOW == 0;
        let (file, resolved) = match open_path_in_root(tid, &written, follow) {
            Ok(found) => found,
            Err(errno) => return Verdict::Fail(errno),
        };
        let object = |path: &Path| Object::Path {
            path: path.to_string_lossy().into_owned(),
            access: "watch".into(),
            elided: None,
        };
        // A deny glob naming the object, or everything below it (`~/.ssh/**` for `~/.ssh`).
        let inside = resolved.join("x");
        if let Some(i) = self
            .deny
            .matches(&resolved)
            .into_iter()
            .chain(self.deny.matches(&inside))
            .next()
        {
            return Verdict::Deny {
                rule: format!("filesystem.deny: {}", self.deny_globs[i]),
                object: object(&resolved),
            };
        }
        if !self.watch_trees.iter().any(|t| resolved.starts_with(t)) {
            return Verdict::Deny {
                rule: "filesystem: not in allow-list (inotify watch)".into(),
                object: object(&resolved),
            };
        }
        Verdict::Watch {
            fd,
            file,
            mask: mask & !libc::IN_DONT_FOLLOW,
        }
    }

    fn send(&self, addr: &[u8]) -> Verdict {
        match family(addr) {
            Some(libc::AF_UNIX) => match sun_path(addr) {
                Some(path) => Verdict::Deny {
                    rule: unix_bypass_rule(true, ""),
                    object: unix_object(
                        String::from_utf8_lossy(path).into_owned(),
                        libc::SOCK_DGRAM,
                    ),
                },
                None => self
                    .abstract_verdict(addr, libc::SOCK_DGRAM)
                    .unwrap_or(Verdict::Continue),
            },
            Some(libc::AF_INET | libc::AF_INET6) => self.ip(addr, ebpf_probes::PROTO_UDP),
            _ => Verdict::Continue,
        }
    }

    /// Where a destination of port 53 goes when host-name rules are judged here: the
    /// resolver, as an address of the agent's family (IPv6 sockets by the v4-mapped form).
    fn dns_target(&self, addr: &[u8]) -> Option<Vec<u8>> {
        let resolver = self.dns.as_ref()?.resolver;
        let (_, port) = ip_of(addr)?;
        if port != 53 {
            return None;
        }
        let ip = resolver.ip().octets();
        let port = resolver.port().to_be_bytes();
        let mut out = addr.to_vec();
        match family(addr)? {
            libc::AF_INET => out[4..8].copy_from_slice(&ip),
            _ => {
                out[8..24].copy_from_slice(&std::net::Ipv4Addr::from(ip).to_ipv6_mapped().octets())
            }
        }
        out[2..4].copy_from_slice(&port);
        Some(out)
    }

    /// An abstract destination, where the supervisor is its only check (`refuse_abstract`).
    fn abstract_verdict(&self, addr: &[u8], sock_type: i32) -> Option<Verdict> {
        let name = abstract_name(addr)?;
        self.refuse_abstract.then(|| Verdict::Deny {
            rule: "network.unix: abstract UNIX socket; without Landlock scoping (Linux 6.12) \
                   or a network namespace (user namespaces) agentbox cannot tell the \
                   sandbox's own from the host's, and refuses them all"
                .into(),
            object: unix_object(format!("@{}", String::from_utf8_lossy(name)), sock_type),
        })
    }

    /// IP destinations, when the supervisor is their only check: the profile's rules, then
    /// what the resolver granted.
    fn ip(&self, addr: &[u8], proto: u8) -> Verdict {
        let Some(rules) = &self.net else {
            return Verdict::Continue;
        };
        let Some((ip, port)) = ip_of(addr) else {
            return Verdict::Fail(libc::EINVAL);
        };
        // Root asking: a datagram the agent sends itself meets the kernel's redirect.
        if port == 53 && self.dns.as_ref().is_some_and(|g| g.kernel_redirects) {
            return Verdict::Continue;
        }
        let granted = || {
            self.dns
                .as_ref()
                .is_some_and(|g| g.grants.allows(ip, port, proto))
        };
        match ebpf_probes::verdict(rules, ip, port, proto) {
            Ok(true) => Verdict::Continue,
            _ if granted() => Verdict::Continue,
            _ => Verdict::Deny {
                rule: format!(
                    "network: not in allow-list {}{}",
                    net_target(ip, port),
                    name_note(self.dns.as_ref().map(|g| &*g.book), ip)
                ),
                object: Object::Net {
                    proto: if proto == ebpf_probes::PROTO_UDP {
                        "udp"
                    } else {
                        "tcp"
                    }
                    .into(),
                    addr: ip.to_string(),
                    port,
                },
            },
        }
    }

    fn allows(&self, socket: &Path) -> bool {
        self.own.iter().any(|tree| socket.starts_with(tree)) || self.set.is_match(socket)
    }
}

/// What the supervisor's socket checks deliver here. `unix_hooks`: the kernel hook that
/// refuses pathname destinations to sandboxed tasks, if any. `check_ip`: the supervisor is
/// the only check of IP destinations.
pub(crate) fn coverage(policy: &Policy, needs: Needs) -> Coverage {
    let Needs {
        unix_hooks,
        check_ip,
        refuse_abstract,
    } = needs;
    let mut cov = Coverage::default();
    if refuse_abstract {
        cov.push(
            Layer::Seccomp,
            Guarantee::ScopeAbstractUnix,
            Status::Partial(
                "the supervisor refuses every connect and datagram to an abstract UNIX \
                 address, the sandbox's own included (no Landlock scoping before ABI 6, and no \
                 network namespace: user namespaces refused, or the network open); a thread \
                 racing the check can rewrite the address of a call it lets the kernel run"
                    .into(),
            ),
        );
    }
    let race = "a thread that rewrites a socket call's address after the supervisor read it \
                is not stopped (no cgroup unix hooks or BPF LSM here: unprivileged, or a \
                kernel before 6.7 without BPF LSM)";
    let unix = if policy.syscalls.deny_groups.contains(&SyscallGroup::IoUring) {
        match unix_hooks {
            Some(_) => Status::Enforced,
            None => Status::Partial(race.into()),
        }
    } else {
        Status::Partial("io_uring is allowed: its connect bypasses the supervisor".into())
    };
    cov.push(Layer::Seccomp, Guarantee::NetUnixSockets, unix);
    if check_ip {
        cov.push(
            Layer::Seccomp,
            Guarantee::NetAddresses,
            Status::Partial(
                "checked by the supervisor (no cgroup-BPF here), which connects and sends \
                 from its own copy of the address; two calls run as the agent made them after \
                 the check (a datagram sent by sendmsg/sendmmsg, and a connect to an abstract \
                 UNIX address), so a thread racing the check can rewrite the address or swap \
                 the socket"
                    .into(),
            ),
        );
    }
    cov
}

fn net_target(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    }
}

fn is_ip(addr: &[u8]) -> bool {
    matches!(family(addr), Some(libc::AF_INET | libc::AF_INET6))
}

fn family(addr: &[u8]) -> Option<i32> {
    Some(i32::from(u16::from_ne_bytes([
        *addr.first()?,
        *addr.get(1)?,
    ])))
}

/// The path of a pathname `sockaddr_un` (up to its NUL); `None` when unnamed or abstract.
fn sun_path(addr: &[u8]) -> Option<&[u8]> {
    let path = addr.get(SUN_PATH_OFF..)?;
    if path.first().is_none_or(|&b| b == 0) {
        return None;
    }
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    Some(&path[..end])
}

/// The name of an abstract `sockaddr_un` (after its leading NUL); `None` otherwise.
fn abstract_name(addr: &[u8]) -> Option<&[u8]> {
    if family(addr)? != libc::AF_UNIX {
        return None;
    }
    match addr.get(SUN_PATH_OFF..)? {
        [0, name @ ..] => Some(name),
        _ => None,
    }
}

fn ip_of(addr: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    match family(addr)? {
        libc::AF_INET => {
            let octets: [u8; 4] = addr.get(4..8)?.try_into().ok()?;
            Some((std::net::IpAddr::from(octets), port))
        }
        libc::AF_INET6 => {
            let octets: [u8; 16] = addr.get(8..24)?.try_into().ok()?;
            Some((std::net::IpAddr::from(octets), port))
        }
        _ => None,
    }
}

/// `SO_TYPE` of the agent's descriptor `fd` (thread `tid`).
fn socket_type(tid: i32, fd: i32) -> Result<i32, i32> {
    let sock = take_fd(tid, fd)?;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and sized for SO_TYPE's int.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(libc::ENOTSOCK);
    }
    Ok(value)
}

pub(super) fn read_exact_at(mem: &fs::File, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    match mem.read_exact_at(&mut buf, addr) {
        Ok(()) => Ok(buf),
        Err(_) => Err(libc::EFAULT),
    }
}

/// The address a call passes, as the kernel would copy it (`move_addr_to_kernel`).
fn read_sockaddr(mem: &fs::File, ptr: u64, len: u64) -> Result<Vec<u8>, i32> {
    let len = len & 0xffff_ffff;
    if len > SOCKADDR_MAX as u64 {
        return Err(libc::EINVAL);
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    read_exact_at(mem, ptr, len as usize)
}

/// The destination of one `struct msghdr`, if it names one.
fn msghdr_name(mem: &fs::File, ptr: u64) -> Result<Option<Vec<u8>>, i32> {
    let hdr = read_exact_at(mem, ptr, MSGHDR_LEN)?;
    let name = u64::from_ne_bytes(hdr[0..8].try_into().expect("8 bytes"));
    let namelen = u32::from_ne_bytes(hdr[8..12].try_into().expect("4 bytes"));
    if name == 0 || namelen == 0 {
        return Ok(None);
    }
    read_sockaddr(mem, name, u64::from(namelen)).map(Some)
}

/// The path as the agent meant it: relative paths start at its working directory.
fn absolute(tid: i32, path: &[u8]) -> PathBuf {
    let path = Path::new(OsStr::from_bytes(path));
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let cwd = fs::read_link(format!("/proc/{tid}/cwd")).unwrap_or_else(|_| "/".into());
    cwd.join(path)
}

/// The path as the agent meant it relative to its descriptor `dirfd` (`AT_FDCWD`: its
/// working directory); `None` when `dirfd` names nothing with a path.
pub(super) fn absolute_at(tid: i32, dirfd: i32, path: &[u8]) -> Option<PathBuf> {
    if dirfd == libc::AT_FDCWD || path.first() == Some(&b'/') {
        return Some(absolute(tid, path));
    }
    let dir = fs::read_link(format!("/proc/{tid}/fd/{dirfd}")).ok()?;
    dir.is_absolute()
        .then(|| dir.join(Path::new(OsStr::from_bytes(path))))
}

/// A NUL-terminated path from the agent's memory (PATH_MAX at most), as the kernel copies it.
pub(super) fn read_c_path(mem: &fs::File, ptr: u64) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    let mut at = ptr;
    while out.len() < libc::PATH_MAX as usize {
        // Up to the next page boundary: the rest of a page may be unmapped.
        let chunk = (4096 - (at % 4096)) as usize;
        let mut buf = vec![0u8; chunk];
        let n = mem.read_at(&mut buf, at).map_err(|_| libc::EFAULT)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return if out.is_empty() {
                Err(libc::ENOENT)
            } else {
                Ok(out)
            };
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Opens `path` with O_PATH as the agent's view resolves it, and checks it is a socket.
/// Returns the pinned file and the path it resolved to.
fn open_in_root(tid: i32, path: &Path) -> Result<(OwnedFd, PathBuf), i32> {
    let (file, resolved) = open_path_in_root(tid, path, true)?;
    // SAFETY: fstat writes one struct stat into a live local.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a live stat buffer.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(libc::EIO);
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        // What connect() answers for a path that is not a socket.
        return Err(libc::ECONNREFUSED);
    }
    Ok((file, resolved))
}

/// Opens `path` with O_PATH inside the agent's root (`RESOLVE_IN_ROOT`, no magic links;
/// the last component not followed unless `follow`). Returns the pinned file and the path
/// it resolved to.
pub(super) fn open_path_in_root(
    tid: i32,
    path: &Path,
    follow: bool,
) -> Result<(OwnedFd, PathBuf), i32> {
    let root = fs::File::open(format!("/proc/{tid}/root")).map_err(|e| errno_of(&e))?;
    let relative = path.strip_prefix("/").unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let c_path =
        std::ffi::CString::new(relative.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: open_how is plain old data; all-zero is a valid start.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC | nofollow) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid dirfd, NUL-terminated path and open_how live across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let file = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let resolved =
        fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| errno_of(&e))?;
    Ok((file, resolved))
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

/// Connects the agent's socket (`fd` of thread `tid`) to `target`. Returns connect()'s
/// result as the agent should see it (0 or a negative errno). Blocks as the agent's connect
/// would (a blocking TCP socket, a full backlog): run it off the event loop.
pub(crate) fn connect_on_behalf(tid: i32, fd: i32, target: &Target) -> i64 {
    let agent_socket = match take_fd(tid, fd) {
        Ok(sock) => sock,
        Err(errno) => return -i64::from(errno),
    };
    let addr = match target {
        // The pinned inode, reached through our own /proc: the path cannot be swapped.
        Target::Socket(socket) => {
            let mut addr = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
            addr.extend_from_slice(format!("/proc/self/fd/{}", socket.as_raw_fd()).as_bytes());
            addr.push(0);
            addr
        }
        Target::Addr(addr) => addr.clone(),
    };
    retry_eintr(|| {
        // SAFETY: a valid socket fd and `addr.len()` initialised bytes of address.
        unsafe {
            libc::connect(
                agent_socket.as_raw_fd(),
                addr.as_ptr().cast(),
                addr.len() as libc::socklen_t,
            ) as isize
        }
    })
}

/// Adds a watch on the pinned `file` to the agent's inotify instance (`fd` of thread
/// `tid`); returns the watch descriptor or a negative errno, as inotify_add_watch() would.
pub(crate) fn watch_on_behalf(tid: i32, fd: i32, file: &OwnedFd, mask: u32) -> i64 {
    let instance = match take_fd(tid, fd) {
        Ok(f) => f,
        Err(errno) => return -i64::from(errno),
    };
    let target = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a number");
    retry_eintr(|| {
        // SAFETY: a valid fd and a NUL-terminated path alive for the call.
        unsafe { libc::inotify_add_watch(instance.as_raw_fd(), target.as_ptr(), mask) as isize }
    })
}

/// Sends `data` from the agent's socket (`fd` of thread `tid`) to `addr`; returns the
/// byte count or a negative errno, as sendto() would.
pub(crate) fn sendto_on_behalf(tid: i32, fd: i32, data: &[u8], flags: i32, addr: &[u8]) -> i64 {
    let agent_socket = match take_fd(tid, fd) {
        Ok(sock) => sock,
        Err(errno) => return -i64::from(errno),
    };
    retry_eintr(|| {
        // SAFETY: valid fd; `data` and `addr` are live buffers of the lengths given.
        unsafe {
            libc::sendto(
                agent_socket.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                flags | libc::MSG_NOSIGNAL,
                addr.as_ptr().cast(),
                addr.len() as libc::socklen_t,
            )
        }
    })
}

fn retry_eintr(mut call: impl FnMut() -> isize) -> i64 {
    loop {
        let rc = call();
        if rc >= 0 {
            return rc as i64;
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -i64::from(errno);
        }
    }
}

/// The agent's open file behind `fd`: the same open file description, so connecting it
/// connects the agent's socket.
fn take_fd(tid: i32, fd: i32) -> Result<OwnedFd, i32> {
    let pidfd = thread_pidfd(tid)?;
    // SAFETY: pidfd_getfd takes no pointers.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        // EBADF: not an open fd of the agent, as connect() would say.
        return Err(if errno == libc::EBADF {
            libc::EBADF
        } else {
            errno
        });
    }
    // SAFETY: pidfd_getfd installed a new fd for us (close-on-exec); nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// A pidfd through which pidfd_getfd reaches thread `tid`'s descriptors. Linux 6.9's
/// PIDFD_THREAD names the thread itself, so no /proc read is needed on the per-connect path;
/// before it only a thread-group leader has a pidfd, found through /proc/TID/status.
fn thread_pidfd(tid: i32) -> Result<OwnedFd, i32> {
    let open = |pid: i32, flags: libc::c_uint| {
        // SAFETY: pidfd_open takes no pointers.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
        if rc < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ESRCH));
        }
        // SAFETY: the kernel just returned this fd; we own it.
        Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
    };
    // EINVAL: a kernel without PIDFD_THREAD; then a leader (the single-threaded case) opens
    // plainly and any other thread goes through its group's leader.
    match open(tid, libc::PIDFD_THREAD) {
        Err(libc::EINVAL) => {}
        Err(_) => return Err(libc::ESRCH),
        Ok(pidfd) => return Ok(pidfd),
    }
    if let Ok(pidfd) = open(tid, 0) {
        return Ok(pidfd);
    }
    let status = fs::read_to_string(format!("/proc/{tid}/status")).map_err(|_| libc::ESRCH)?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(libc::ESRCH)?;
    open(tgid, 0).map_err(|_| libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(path: &[u8]) -> Vec<u8> {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(path);
        a
    }

    fn inet(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&ip);
        a.extend_from_slice(&[0; 8]);
        a
    }

    /// A mediation with host-name rules (resolver on 127.0.0.1:5300) judging IP
    /// destinations itself, and its gate.
    fn gated(kernel_redirects: bool) -> (DnsGate, Mediation) {
        let gate = DnsGate {
            resolver: "127.0.0.1:5300".parse().unwrap(),
            kernel_redirects,
            grants: Arc::default(),
            book: Arc::new(NameBook::default()),
        };
        let needs = Needs {
            check_ip: true,
            ..Needs::default()
        };
        let m = Mediation::compile(&Policy::default(), needs, Some(gate.clone())).unwrap();
        (gate, m)
    }

    /// Root asking with host-name rules: the supervisor judges every connect, and must
    /// neither ask about lookups nor about what the resolver granted.
    #[test]
    fn root_asking_checks_grants_and_leaves_port_53_to_the_kernel() {
        let (gate, m) = gated(true);
        // Lookups it judges go to the resolver; the ones the agent sends itself, to the
        // kernel's redirect (never refused).
        assert_eq!(
            m.dns_target(&inet([10, 0, 0, 2], 53)),
            Some(inet([127, 0, 0, 1], 5300))
        );
        assert!(matches!(
            m.ip(&inet([10, 0, 0, 2], 53), ebpf_probes::PROTO_UDP),
            Verdict::Continue
        ));
        // What the resolver granted is not put to the approver; the rest is.
        let host = [192, 0, 2, 7];
        assert!(matches!(
            m.ip(&inet(host, 443), ebpf_probes::PROTO_TCP),
            Verdict::Deny { .. }
        ));
        gate.grants
            .set(
                IpAddr::from(host),
                &[(ebpf_probes::PortRange::single(443), ebpf_probes::PROTO_ANY)],
            )
            .unwrap();
        assert!(matches!(
            m.ip(&inet(host, 443), ebpf_probes::PROTO_TCP),
            Verdict::Continue
        ));
    }

    /// Unprivileged host-name rules: port 53 anywhere goes to the resolver, in the agent's
    /// family; granted addresses open for their ports and protocol only.
    #[test]
    fn dns_goes_to_the_resolver_and_grants_open_only_their_ports_and_protocol() {
        let (gate, m) = gated(false);
        assert_eq!(
            m.dns_target(&inet([8, 8, 8, 8], 53)),
            Some(inet([127, 0, 0, 1], 5300))
        );
        assert_eq!(m.dns_target(&inet([8, 8, 8, 8], 853)), None);
        let mut v6 = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        v6.extend_from_slice(&53u16.to_be_bytes());
        v6.extend_from_slice(&[0; 4]);
        v6.extend_from_slice(
            &"2001:4860::8888"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(&[0; 4]);
        let to = m.dns_target(&v6).unwrap();
        assert_eq!(
            &to[8..24],
            &"::ffff:127.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );

        let host = [192, 0, 2, 7];
        assert!(matches!(
            m.ip(&inet(host, 443), ebpf_probes::PROTO_TCP),
            Verdict::Deny { .. }
        ));
        gate.grants
            .set(
                IpAddr::from(host),
                &[(ebpf_probes::PortRange::single(443), ebpf_probes::PROTO_UDP)],
            )
            .unwrap();
        assert!(matches!(
            m.ip(&inet(host, 443), ebpf_probes::PROTO_UDP),
            Verdict::Continue
        ));
        assert!(matches!(
            m.ip(&inet(host, 443), ebpf_probes::PROTO_TCP),
            Verdict::Deny { .. }
        ));
        assert!(matches!(
            m.ip(&inet(host, 80), ebpf_probes::PROTO_UDP),
            Verdict::Deny { .. }
        ));
        gate.grants.set(IpAddr::from(host), &[]).unwrap();
        assert!(matches!(
            m.ip(&inet(host, 443), ebpf_probes::PROTO_UDP),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn pathname_abstract_and_unnamed_addresses_are_told_apart() {
        assert_eq!(sun_path(&un(b"/run/x.sock\0")), Some(&b"/run/x.sock"[..]));
        assert_eq!(sun_path(&un(b"rel.sock")), Some(&b"rel.sock"[..]));
        assert_eq!(sun_path(&un(b"\0abstract")), None);
        assert_eq!(sun_path(&un(b"")), None);
    }

    #[test]
    fn sockets_in_the_write_trees_and_the_globs_are_allowed_others_not() {
        let mut policy = Policy::default();
        policy.filesystem.write.push("/work/ws".into());
        policy.network.unix.push("/run/user/*/bus".into());
        let m = Mediation::compile(&policy, Needs::default(), None).unwrap();
        assert!(m.allows(Path::new("/work/ws/sub/app.sock")));
        assert!(m.allows(Path::new("/run/user/1000/bus")));
        assert!(!m.allows(Path::new("/run/docker.sock")));
        assert!(!m.allows(Path::new("/work/wsx/app.sock")));
        assert!(!m.allows(Path::new("/run/user/1000/x/bus")));
    }

    #[test]
    fn datagram_sends_to_a_path_are_refused_and_ip_is_left_to_the_kernel_when_it_checks() {
        let m = Mediation::compile(&Policy::default(), Needs::default(), None).unwrap();
        assert!(matches!(m.send(&un(b"/dev/log\0")), Verdict::Deny { .. }));
        assert!(matches!(m.send(&un(b"\0abstract")), Verdict::Continue));
        let mut v4 = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        v4.extend_from_slice(&53u16.to_be_bytes());
        v4.extend_from_slice(&[1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(m.send(&v4), Verdict::Continue));
        let needs = Needs {
            check_ip: true,
            ..Needs::default()
        };
        let checked = Mediation::compile(&Policy::default(), needs, None).unwrap();
        assert!(matches!(checked.send(&v4), Verdict::Deny { .. }));
    }

    #[test]
    fn abstract_destinations_are_refused_only_where_nothing_else_scopes_them() {
        let hooks = Needs {
            unix_hooks: Some("cgroup connect_unix/sendmsg_unix"),
            ..Needs::default()
        };
        let m = Mediation::compile(&Policy::default(), hooks, None).unwrap();
        assert!(m.ip_sized_connects_pass());
        assert!(m.abstract_verdict(&un(b"\0x"), libc::SOCK_STREAM).is_none());
        let refusing = Needs {
            refuse_abstract: true,
            ..hooks
        };
        let m = Mediation::compile(&Policy::default(), refusing, None).unwrap();
        // Datagrams come here too, and no connect passes unasked.
        assert!(m.sends && !m.ip_sized_connects_pass());
        match m.send(&un(b"\0/tmp/.X11-unix/X0")) {
            Verdict::Deny { rule, object } => {
                assert!(rule.contains("abstract"), "{rule}");
                assert!(format!("{object:?}").contains("@/tmp/.X11-unix/X0"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(m.send(&un(b"/dev/log\0")), Verdict::Deny { .. }));
        // An unnamed address (autobind) is not a destination.
        assert!(m.abstract_verdict(&un(b""), libc::SOCK_DGRAM).is_none());
    }
}
