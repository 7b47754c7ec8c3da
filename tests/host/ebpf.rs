//! cgroup-BPF programs from the ebpf-probes object on the host kernel.
//!
//! Needs root (loading BPF programs, creating cgroups); skipped with a message otherwise.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ebpf_probes::{probe, NetPortGuard, ProgramKind};
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

#[derive(Clone, Copy)]
enum Attempt {
    /// TCP connect() on an AF_INET socket to 127.0.0.1:port (cgroup/connect4).
    TcpConnect4(u16),
    /// TCP connect() on an AF_INET6 socket to ::ffff:127.0.0.1:port (cgroup/connect6).
    TcpConnect6Mapped(u16),
    /// UDP sendto() without connect() to 127.0.0.1:port (cgroup/sendmsg4).
    UdpSend4(u16),
}

fn sockaddr_v4(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_v6_mapped(port: u16) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets(),
        },
        sin6_scope_id: 0,
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Runs one attempt with raw syscalls only (it runs in a forked child of a threaded process,
/// where only async-signal-safe calls are allowed). Returns 0 or the errno.
fn run_attempt(attempt: Attempt) -> i32 {
    let (domain, kind) = match attempt {
        Attempt::TcpConnect4(_) => (libc::AF_INET, libc::SOCK_STREAM),
        Attempt::TcpConnect6Mapped(_) => (libc::AF_INET6, libc::SOCK_STREAM),
        Attempt::UdpSend4(_) => (libc::AF_INET, libc::SOCK_DGRAM),
    };
    // SAFETY: plain syscall; the fd is closed below.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return last_errno();
    }
    let ret = match attempt {
        Attempt::TcpConnect4(port) => {
            let addr = sockaddr_v4(port);
            // SAFETY: addr is a valid sockaddr_in and the length matches it.
            unsafe {
                libc::connect(
                    fd,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        Attempt::TcpConnect6Mapped(port) => {
            let addr = sockaddr_v6_mapped(port);
            // SAFETY: addr is a valid sockaddr_in6 and the length matches it.
            unsafe {
                libc::connect(
                    fd,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
        Attempt::UdpSend4(port) => {
            let addr = sockaddr_v4(port);
            let payload = b"agentbox";
            // SAFETY: payload and addr are valid for the lengths passed.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    payload.as_ptr().cast(),
                    payload.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                -1
            } else {
                0
            }
        }
    };
    let result = if ret < 0 { last_errno() } else { 0 };
    // SAFETY: fd is the socket opened above and not used afterwards.
    unsafe { libc::close(fd) };
    result
}

/// Writes this process's pid into `procs` (a cgroup.procs file). Returns 0 or the errno.
fn join_cgroup(procs: &CString) -> i32 {
    // SAFETY: procs is a NUL-terminated path.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return last_errno();
    }
    // Format the pid on the stack: no allocation after fork.
    // SAFETY: getpid cannot fail.
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let text = &digits[start..];
    // SAFETY: text is valid for its length; fd is open for writing.
    let written = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    let result = if written < 0 { last_errno() } else { 0 };
    // SAFETY: fd was opened above and is not used afterwards.
    unsafe { libc::close(fd) };
    result
}

/// Forks a child that joins `cgroup` and makes each attempt; returns the join result followed
/// by one result per attempt (0 or errno).
fn attempts_from_cgroup<const N: usize>(cgroup: &Path, attempts: [Attempt; N]) -> (i32, [i32; N]) {
    let procs = CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("path without NUL");
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded, so both fds are open and owned only here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: the child only makes async-signal-safe calls (open, write, socket, connect,
    // sendto, close, _exit) on memory prepared before the fork, and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let mut results = [0i32; N];
        let joined = join_cgroup(&procs);
        if joined == 0 {
            for (result, attempt) in results.iter_mut().zip(attempts) {
                *result = run_attempt(attempt);
            }
        }
        let mut report = [0u8; 64];
        report[..4].copy_from_slice(&joined.to_ne_bytes());
        for (chunk, result) in report[4..].chunks_exact_mut(4).zip(results) {
            chunk.copy_from_slice(&result.to_ne_bytes());
        }
        let len = 4 + 4 * N;
        // SAFETY: report is valid for len bytes (N is at most 15); the child exits at once.
        unsafe {
            libc::write(write_end.as_raw_fd(), report.as_ptr().cast(), len);
            libc::_exit(0);
        }
    }
    drop(write_end);
    let mut report = Vec::new();
    fs::File::from(read_end)
        .read_to_end(&mut report)
        .expect("read child report");
    let status = waitpid(Pid::from_raw(pid), None).expect("waitpid");
    assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 0));
    assert_eq!(report.len(), 4 + 4 * N, "short report from child");
    let word = |index: usize| {
        i32::from_ne_bytes(
            report[4 * index..4 * index + 4]
                .try_into()
                .expect("4 bytes"),
        )
    };
    let mut results = [0i32; N];
    for (index, result) in results.iter_mut().enumerate() {
        *result = word(index + 1);
    }
    (word(0), results)
}

fn errno_name(errno: i32) -> String {
    if errno == 0 {
        "ok".to_owned()
    } else {
        std::io::Error::from_raw_os_error(errno).to_string()
    }
}

#[test]
fn net_port_guard_denies_port_only_inside_its_cgroup() {
    if !is_root() {
        eprintln!("skipped: needs root to load BPF programs and create cgroups");
        return;
    }
    let denied_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let allowed_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let denied = denied_listener.local_addr().expect("addr").port();
    let allowed = allowed_listener.local_addr().expect("addr").port();

    let cgroup = TempCgroup::create();
    let mut guard = NetPortGuard::attach(&cgroup.path).expect("attach egress programs");
    guard.deny_port(denied).expect("deny port");

    let attempts = [
        Attempt::TcpConnect4(denied),
        Attempt::TcpConnect4(allowed),
        Attempt::TcpConnect6Mapped(denied),
        Attempt::TcpConnect6Mapped(allowed),
        Attempt::UdpSend4(denied),
        Attempt::UdpSend4(allowed),
    ];
    let (joined, results) = attempts_from_cgroup(&cgroup.path, attempts);
    assert_eq!(joined, 0, "child joins the cgroup: {}", errno_name(joined));
    let shown: Vec<String> = results.iter().map(|&errno| errno_name(errno)).collect();
    let expected = [libc::EPERM, 0, libc::EPERM, 0, libc::EPERM, 0];
    assert_eq!(
        results, expected,
        "inside the cgroup (tcp4 denied/allowed, tcp6-mapped denied/allowed, udp4 denied/allowed): {shown:?}"
    );

    // Outside the cgroup the same port stays reachable.
    TcpStream::connect(("127.0.0.1", denied)).expect("parent outside the cgroup connects");
    UdpSocket::bind("127.0.0.1:0")
        .expect("udp bind")
        .send_to(b"agentbox", ("127.0.0.1", denied))
        .expect("parent outside the cgroup sends");

    // Dropping the guard detaches the programs.
    drop(guard);
    let (joined, results) = attempts_from_cgroup(&cgroup.path, [Attempt::TcpConnect4(denied)]);
    assert_eq!(joined, 0, "child joins the cgroup: {}", errno_name(joined));
    assert_eq!(results, [0], "after drop: {}", errno_name(results[0]));
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
