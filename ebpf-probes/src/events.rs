//! Events from the kernel programs: typed decoding and the per-sandbox ring buffer reader.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};

use crate::layout::*;
use crate::lsm::{LsmHook, LsmReason};
use crate::{run_libbpf, Error};

/// The hook of a network denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetHook {
    /// connect() (TCP, connected UDP).
    Connect,
    /// sendto()/sendmsg() with a destination (unconnected UDP).
    Sendmsg,
    /// bind() (inbound).
    Bind,
    /// socket() (family and type checks).
    SockCreate,
}

/// Why a network operation was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetVerdictReason {
    /// No allow rule covers the destination and port.
    NoAllowRule,
    /// A deny rule (possibly a default: loopback, metadata) is the most specific match.
    DenyRule,
    /// bind() to a port outside the inbound list.
    BindPort,
    /// A socket family that is not allowed (packet, netlink, vsock).
    SocketFamily,
    /// A socket type that is not allowed (raw).
    SocketType,
    /// A pathname UNIX socket reached without the supervisor (connect, or a datagram sent to
    /// a path).
    UnixPath,
    /// A value this build does not know (newer object).
    Other(u8),
}

/// One event from the kernel programs. Every event carries its sandbox's sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A cgroup-BPF program refused (or, in audit-only mode, would have refused) a network
    /// operation.
    NetDenied {
        sandbox: u32,
        seq: u64,
        pid: u32,
        tgid: u32,
        comm: String,
        hook: NetHook,
        /// Destination (connect/sendmsg) or local address (bind); `None` for socket().
        addr: Option<IpAddr>,
        /// The socket path of a pathname UNIX destination, as the caller wrote it.
        path: Option<String>,
        port: u16,
        proto: u8,
        family: u16,
        sock_type: u16,
        rule: NetVerdictReason,
        /// False in audit-only mode: the operation went through.
        enforced: bool,
        /// The task is killed when this syscall returns (kill_on_violation).
        killed: bool,
    },
    /// A watched syscall of a sandboxed task failed with EACCES or EPERM (Landlock, seccomp,
    /// or another layer refused it); labelled with the syscall's argument.
    SyscallDenied {
        sandbox: u32,
        seq: u64,
        pid: u32,
        tgid: u32,
        ppid: u32,
        comm: String,
        /// Syscall number of this architecture; see [`syscall_name`].
        syscall: i64,
        errno: i32,
        path: Option<String>,
        /// True when the path filled the kernel buffer and may be cut short.
        path_truncated: bool,
        /// The path was longer than the event holds: `path` is its head, "…", and its tail
        /// (the object's name); this is the whole path's length and hash.
        path_elided: Option<PathElided>,
        addr: Option<(IpAddr, u16)>,
        target_pid: Option<i32>,
        /// socket(): (family, type, protocol).
        socket: Option<(u16, u16, u8)>,
        killed: bool,
    },
    Exec {
        sandbox: u32,
        seq: u64,
        pid: u32,
        tgid: u32,
        ppid: u32,
        comm: String,
        filename: String,
    },
    Fork {
        sandbox: u32,
        seq: u64,
        /// Thread id of the forking task.
        parent: u32,
        /// Thread id of the new task.
        child: u32,
        /// True for a new thread (CLONE_THREAD) rather than a new process.
        thread: bool,
    },
    /// The thread-group leader exited.
    Exit {
        sandbox: u32,
        seq: u64,
        pid: u32,
        tgid: u32,
        /// Wait status as the kernel keeps it: `code << 8 | signal`.
        code: i32,
    },
    /// A BPF LSM program refused (or, in audit-only mode, would have refused) an operation.
    LsmDenied {
        sandbox: u32,
        seq: u64,
        pid: u32,
        tgid: u32,
        ppid: u32,
        comm: String,
        hook: LsmHook,
        reason: LsmReason,
        /// The object's path as the kernel walked it (relative to its filesystem's root for
        /// inode_create, inode_setattr and the xattr hooks); the module name of a module
        /// request.
        path: Option<String>,
        /// True when the path was cut short (buffer, component or walk bound).
        path_truncated: bool,
        /// See `SyscallDenied::path_elided`.
        path_elided: Option<PathElided>,
        /// The object's device (`st_dev` encoding) and inode; 0 when there is none.
        dev: u64,
        ino: u64,
        /// connect/sendmsg destination.
        addr: Option<(IpAddr, u16)>,
        /// task_kill/ptrace target (its process id).
        target_pid: Option<i32>,
        /// Hook-specific: open flags, create mode, iattr valid mask, mmap prot, signal,
        /// ptrace mode, bpf command, mount flags.
        detail: u32,
        /// False in audit-only mode: the operation went through.
        enforced: bool,
        killed: bool,
    },
    /// The BPF LSM and cgroup-BPF layers reached different verdicts on one network operation
    /// (the task's identity and its cgroup name different sandboxes).
    LsmAnomaly {
        sandbox: u32,
        seq: u64,
        pid: u32,
        tgid: u32,
        comm: String,
        hook: LsmHook,
        addr: Option<(IpAddr, u16)>,
        lsm_allowed: bool,
        cgroup_allowed: bool,
        /// The sandbox of the task's cgroup (0: none).
        cgroup_sandbox: u32,
    },
}

impl KernelEvent {
    pub fn sandbox(&self) -> u32 {
        match self {
            KernelEvent::NetDenied { sandbox, .. }
            | KernelEvent::SyscallDenied { sandbox, .. }
            | KernelEvent::Exec { sandbox, .. }
            | KernelEvent::Fork { sandbox, .. }
            | KernelEvent::Exit { sandbox, .. }
            | KernelEvent::LsmDenied { sandbox, .. }
            | KernelEvent::LsmAnomaly { sandbox, .. } => *sandbox,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            KernelEvent::NetDenied { seq, .. }
            | KernelEvent::SyscallDenied { seq, .. }
            | KernelEvent::Exec { seq, .. }
            | KernelEvent::Fork { seq, .. }
            | KernelEvent::Exit { seq, .. }
            | KernelEvent::LsmDenied { seq, .. }
            | KernelEvent::LsmAnomaly { seq, .. } => *seq,
        }
    }
}

/// The name of a syscall the observers watch (this architecture's numbering).
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    const LEGACY: &[(i64, &str)] = &[
        (libc::SYS_open, "open"),
        (libc::SYS_creat, "creat"),
        (libc::SYS_link, "link"),
        (libc::SYS_rename, "rename"),
        (libc::SYS_unlink, "unlink"),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    const LEGACY: &[(i64, &str)] = &[];
    const COMMON: &[(i64, &str)] = &[
        (libc::SYS_openat, "openat"),
        (libc::SYS_openat2, "openat2"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_sendto, "sendto"),
        (libc::SYS_sendmsg, "sendmsg"),
        (libc::SYS_bind, "bind"),
        (libc::SYS_linkat, "linkat"),
        (libc::SYS_renameat, "renameat"),
        (libc::SYS_renameat2, "renameat2"),
        (libc::SYS_unlinkat, "unlinkat"),
        (libc::SYS_kill, "kill"),
        (libc::SYS_tkill, "tkill"),
        (libc::SYS_tgkill, "tgkill"),
    ];
    LEGACY
        .iter()
        .chain(COMMON)
        .find(|(number, _)| *number == nr)
        .map(|(_, name)| *name)
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn ip_of(raw: &RawEvent) -> Option<IpAddr> {
    if raw.flags & EVF_HAS_ADDR == 0 {
        return None;
    }
    match i32::from(raw.family) {
        libc::AF_INET => {
            let [a, b, c, d, ..] = raw.addr;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(raw.addr))),
        _ => None,
    }
}

/// The kernel's `dev_t` (`major << 20 | minor`) in `stat()`'s encoding; 0 stays 0.
fn user_dev(kernel: u64) -> u64 {
    if kernel == 0 {
        return 0;
    }
    libc::makedev((kernel >> 20) as u32, (kernel & 0xf_ffff) as u32)
}

/// A path too long for an event: its length and FNV-1a 64 hash, computed in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathElided {
    pub len: u32,
    pub fnv1a: u64,
}

fn elided_of(raw: &RawEvent) -> Option<PathElided> {
    (raw.flags & EVF_PATH_ELIDED != 0).then_some(PathElided {
        len: raw.path_full,
        fnv1a: raw.path_hash,
    })
}

fn path_of(raw: &RawEvent) -> Option<String> {
    (raw.flags & EVF_HAS_PATH != 0).then(|| c_string(&raw.path))
}

/// Decodes one ring buffer record; `None` for a record this build does not understand.
pub(crate) fn decode(bytes: &[u8]) -> Option<KernelEvent> {
    let raw = RawEvent::from_bytes(bytes)?;
    let comm = c_string(&raw.comm);
    let event = match raw.kind {
        EV_NET_DENIED => KernelEvent::NetDenied {
            sandbox: raw.sandbox,
            seq: raw.seq,
            pid: raw.pid,
            tgid: raw.tgid,
            comm,
            hook: match raw.hook {
                1 => NetHook::Connect,
                2 => NetHook::Sendmsg,
                3 => NetHook::Bind,
                _ => NetHook::SockCreate,
            },
            addr: ip_of(&raw),
            path: path_of(&raw),
            port: raw.port,
            proto: raw.proto,
            family: raw.family,
            sock_type: raw.sock_type,
            rule: match raw.reason {
                1 => NetVerdictReason::NoAllowRule,
                2 => NetVerdictReason::DenyRule,
                3 => NetVerdictReason::BindPort,
                4 => NetVerdictReason::SocketFamily,
                5 => NetVerdictReason::SocketType,
                6 => NetVerdictReason::UnixPath,
                other => NetVerdictReason::Other(other),
            },
            enforced: raw.flags & EVF_ENFORCED != 0,
            killed: raw.flags & EVF_KILLED != 0,
        },
        EV_SYSCALL_DENIED => {
            let is_socket = syscall_name(raw.syscall) == Some("socket");
            KernelEvent::SyscallDenied {
                sandbox: raw.sandbox,
                seq: raw.seq,
                pid: raw.pid,
                tgid: raw.tgid,
                ppid: raw.ppid,
                comm,
                syscall: raw.syscall,
                errno: raw.err,
                path: path_of(&raw),
                path_truncated: raw.flags & EVF_PATH_TRUNC != 0,
                path_elided: elided_of(&raw),
                addr: ip_of(&raw).map(|ip| (ip, raw.port)),
                target_pid: (raw.flags & EVF_HAS_TARGET != 0).then_some(raw.target_pid),
                socket: is_socket.then_some((raw.family, raw.sock_type, raw.proto)),
                killed: raw.flags & EVF_KILLED != 0,
            }
        }
        EV_EXEC => KernelEvent::Exec {
            sandbox: raw.sandbox,
            seq: raw.seq,
            pid: raw.pid,
            tgid: raw.tgid,
            ppid: raw.ppid,
            comm,
            filename: path_of(&raw).unwrap_or_default(),
        },
        EV_FORK => KernelEvent::Fork {
            sandbox: raw.sandbox,
            seq: raw.seq,
            parent: raw.pid,
            child: raw.child,
            thread: raw.target_pid as u32 == raw.tgid,
        },
        EV_EXIT => KernelEvent::Exit {
            sandbox: raw.sandbox,
            seq: raw.seq,
            pid: raw.pid,
            tgid: raw.tgid,
            code: raw.err,
        },
        EV_LSM_DENIED => KernelEvent::LsmDenied {
            sandbox: raw.sandbox,
            seq: raw.seq,
            pid: raw.pid,
            tgid: raw.tgid,
            ppid: raw.ppid,
            comm,
            hook: LsmHook::from_raw(raw.hook),
            reason: LsmReason::from_raw(raw.reason),
            path: path_of(&raw),
            path_truncated: raw.flags & EVF_PATH_TRUNC != 0,
            path_elided: elided_of(&raw),
            dev: user_dev(raw.dev),
            ino: raw.ino,
            addr: ip_of(&raw).map(|ip| (ip, raw.port)),
            target_pid: (raw.flags & EVF_HAS_TARGET != 0).then_some(raw.target_pid),
            detail: raw.detail,
            enforced: raw.flags & EVF_ENFORCED != 0,
            killed: raw.flags & EVF_KILLED != 0,
        },
        EV_LSM_ANOMALY => KernelEvent::LsmAnomaly {
            sandbox: raw.sandbox,
            seq: raw.seq,
            pid: raw.pid,
            tgid: raw.tgid,
            comm,
            hook: LsmHook::from_raw(raw.hook),
            addr: ip_of(&raw).map(|ip| (ip, raw.port)),
            lsm_allowed: raw.reason & ANOMALY_LSM_ALLOWED != 0,
            cgroup_allowed: raw.reason & ANOMALY_CGROUP_ALLOWED != 0,
            cgroup_sandbox: raw.detail,
        },
        _ => return None,
    };
    Some(event)
}

type Queue = Arc<Mutex<VecDeque<KernelEvent>>>;

/// Reader of one sandbox's two ring buffers (violations and trace).
///
/// [`AsFd`] gives an epoll fd that becomes readable when either ring has data: register it
/// with `tokio::io::unix::AsyncFd` (or poll it) and call [`EventStream::drain`] when ready.
pub struct EventStream {
    ring: RingBuffer<'static>,
    queue: Queue,
    /// Records that did not decode (a newer object than this build); should stay 0.
    undecodable: Arc<Mutex<u64>>,
}

impl EventStream {
    /// A reader of `sandbox`'s rings. A ring slot's rings are reused from run to run, so
    /// events another sandbox left there (written after its last drain) are dropped.
    pub(crate) fn new(
        violations: &MapHandle,
        trace: &MapHandle,
        sandbox: u32,
    ) -> Result<Self, Error> {
        let queue: Queue = Arc::default();
        let undecodable: Arc<Mutex<u64>> = Arc::default();
        let mut builder = RingBufferBuilder::new();
        for map in [violations, trace] {
            let queue = Arc::clone(&queue);
            let undecodable = Arc::clone(&undecodable);
            run_libbpf("adding a ring buffer", || {
                builder.add(map, move |bytes: &[u8]| {
                    match decode(bytes) {
                        Some(event) if event.sandbox() != sandbox => {}
                        Some(event) => queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push_back(event),
                        None => *undecodable.lock().unwrap_or_else(PoisonError::into_inner) += 1,
                    }
                    0
                })?;
                Ok(())
            })?;
        }
        let ring = run_libbpf("creating the ring buffer reader", || builder.build())?;
        Ok(EventStream {
            ring,
            queue,
            undecodable,
        })
    }

    /// Hands every event available now to `f`, without blocking. Returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(KernelEvent)) -> Result<usize, Error> {
        run_libbpf("reading the ring buffers", || self.ring.consume())?;
        let events =
            std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let count = events.len();
        events.into_iter().for_each(&mut f);
        Ok(count)
    }

    /// Waits up to `timeout` for data, then drains like [`EventStream::drain`].
    pub fn poll(
        &mut self,
        timeout: std::time::Duration,
        f: impl FnMut(KernelEvent),
    ) -> Result<usize, Error> {
        run_libbpf("waiting on the ring buffers", || self.ring.poll(timeout))?;
        self.drain(f)
    }

    /// Records that did not decode as any known event (always 0 unless object and crate
    /// disagree, which the layout test rules out).
    pub fn undecodable(&self) -> u64 {
        *self
            .undecodable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl AsFd for EventStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the epoll fd is owned by `self.ring` and lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.ring.epoll_fd()) }
    }
}

impl AsRawFd for EventStream {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.epoll_fd()
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("epoll_fd", &self.ring.epoll_fd())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_bytes(raw: &RawEvent) -> Vec<u8> {
        // SAFETY: RawEvent is repr(C) with explicit padding: all bytes are initialised.
        unsafe {
            std::slice::from_raw_parts((raw as *const RawEvent).cast::<u8>(), size_of::<RawEvent>())
        }
        .to_vec()
    }

    fn zeroed() -> RawEvent {
        RawEvent::from_bytes(&[0u8; size_of::<RawEvent>()]).expect("size")
    }

    #[test]
    fn decodes_a_net_denial() {
        let mut raw = zeroed();
        raw.kind = EV_NET_DENIED;
        raw.sandbox = 7;
        raw.seq = 3;
        raw.family = libc::AF_INET as u16;
        raw.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        raw.port = 8080;
        raw.hook = 1;
        raw.reason = 2;
        raw.flags = EVF_HAS_ADDR | EVF_ENFORCED;
        raw.comm[..6].copy_from_slice(b"python");
        let event = decode(&raw_bytes(&raw)).expect("decodes");
        match event {
            KernelEvent::NetDenied {
                sandbox: 7,
                seq: 3,
                addr: Some(addr),
                port: 8080,
                hook: NetHook::Connect,
                rule: NetVerdictReason::DenyRule,
                enforced: true,
                killed: false,
                ref comm,
                ..
            } => {
                assert_eq!(addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
                assert_eq!(comm, "python");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_a_syscall_denial_with_a_path() {
        let mut raw = zeroed();
        raw.kind = EV_SYSCALL_DENIED;
        raw.syscall = libc::SYS_openat;
        raw.err = libc::EACCES;
        raw.flags = EVF_HAS_PATH | EVF_ENFORCED;
        raw.path[..11].copy_from_slice(b"/etc/shadow");
        match decode(&raw_bytes(&raw)).expect("decodes") {
            KernelEvent::SyscallDenied {
                syscall,
                errno,
                path,
                ..
            } => {
                assert_eq!(syscall_name(syscall), Some("openat"));
                assert_eq!(errno, libc::EACCES);
                assert_eq!(path.as_deref(), Some("/etc/shadow"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_an_lsm_denial() {
        let mut raw = zeroed();
        raw.kind = EV_LSM_DENIED;
        raw.sandbox = 4;
        raw.seq = 9;
        raw.hook = 1;
        raw.reason = 2;
        raw.flags = EVF_HAS_PATH | EVF_ENFORCED;
        raw.path[..10].copy_from_slice(b"/h/.ssh/id");
        raw.dev = (8 << 20) | 1;
        raw.ino = 42;
        match decode(&raw_bytes(&raw)).expect("decodes") {
            KernelEvent::LsmDenied {
                sandbox: 4,
                seq: 9,
                hook: LsmHook::FileOpen,
                reason: LsmReason::DenyTree,
                path: Some(path),
                dev,
                ino: 42,
                enforced: true,
                killed: false,
                ..
            } => {
                assert_eq!(path, "/h/.ssh/id");
                assert_eq!(dev, libc::makedev(8, 1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn short_and_unknown_records_do_not_decode() {
        assert_eq!(decode(&[0u8; 8]), None);
        let mut raw = zeroed();
        raw.kind = 99;
        assert_eq!(decode(&raw_bytes(&raw)), None);
    }

    /// Decoding cost per record (release: `cargo test --release -p ebpf-probes --lib
    /// decode_throughput -- --ignored --nocapture`).
    #[test]
    #[ignore = "benchmark"]
    fn decode_throughput() {
        let mut raw = zeroed();
        raw.kind = EV_NET_DENIED;
        raw.family = libc::AF_INET as u16;
        raw.addr[..4].copy_from_slice(&[127, 0, 0, 2]);
        raw.flags = EVF_HAS_ADDR | EVF_ENFORCED;
        raw.comm[..7].copy_from_slice(b"python3");
        let bytes = raw_bytes(&raw);
        let n = 2_000_000u32;
        let start = std::time::Instant::now();
        let mut seqs = 0u64;
        for _ in 0..n {
            seqs += std::hint::black_box(decode(std::hint::black_box(&bytes)))
                .map_or(0, |e| e.seq() + 1);
        }
        let elapsed = start.elapsed();
        assert_eq!(seqs, u64::from(n));
        println!(
            "decode: {:.0} ns per record, {:.0} records/s",
            elapsed.as_nanos() as f64 / f64::from(n),
            f64::from(n) / elapsed.as_secs_f64()
        );
    }
}
