//! The attacks themselves: each runs INSIDE a sandbox (`agentbox selftest --attack NAME`) and
//! really tries one escape technique, with raw syscalls where the point is to bypass libc.
//!
//! An attack never decides whether the sandbox held; it reports what the kernel answered
//! (`Attempt`) and the orchestrator (mod.rs) judges it together with the audit log and what
//! it observed from outside. `succeeded` means "the attacker got what it wanted", measured as
//! directly as possible (the secret's bytes read, the syscall reached the kernel, ...).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the orchestrator tells an attack: where things are. Passed as JSON on the command line
/// (the environment is filtered by profiles, argv is not).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ctx {
    pub home: PathBuf,
    pub workspace: PathBuf,
    /// Planted secrets, each holding `marker`.
    pub ssh_key: PathBuf,
    pub aws_credentials: PathBuf,
    pub gh_hosts: PathBuf,
    pub dotenv: PathBuf,
    /// Text inside every planted secret: seeing it means the secret was read.
    pub marker: String,
    /// A process outside the sandbox (the orchestrator), pid in the host's pid namespace.
    pub outside_pid: i32,
    /// Loopback TCP listener of the orchestrator (IPv4 and, when the host has it, IPv6).
    pub tcp_port: u16,
    pub tcp6_port: Option<u16>,
    pub udp_port: u16,
    /// A port nothing listens on, for bind/listen.
    pub free_port: u16,
    /// Pathname UNIX socket of a "host service" outside every allowed tree.
    pub unix_path: PathBuf,
    /// Abstract UNIX socket name (without the leading NUL) the orchestrator listens on.
    pub abstract_name: String,
    /// agentbox's own audit log and profile for this run.
    pub log: PathBuf,
    pub profile: PathBuf,
}

/// What one attack observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The attacker got what it wanted (read the secret, reached the kernel, ...).
    pub succeeded: bool,
    /// errno of the (first) refused step, when there was one.
    pub errno: Option<i32>,
    /// One line per variant tried: what was done and what the kernel answered.
    pub detail: Vec<String>,
    /// The object the denial event should name (a path, or `addr:port`), when there is one.
    pub target: Option<String>,
    /// The technique cannot be tried here, and why (e.g. kernel without IA32 emulation).
    pub not_applicable: Option<String>,
    /// Every path the attack handed the kernel (sources log them as given: `..`, relative,
    /// `/proc/self/fd/N` aliases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<String>,
    /// Counters for attacks that repeat (event flood): name → value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<(String, u64)>,
}

impl Attempt {
    fn target(mut self, t: impl Into<String>) -> Self {
        self.target = Some(t.into());
        self
    }

    /// Records one variant: `Ok` means it worked (the attacker won), `Err(errno)` refused.
    fn step(&mut self, what: &str, r: Result<i64, i32>) {
        match r {
            Ok(v) => {
                self.succeeded = true;
                self.detail.push(format!("{what}: succeeded ({v})"));
            }
            Err(e) => {
                self.errno.get_or_insert(e);
                self.detail.push(format!("{what}: {}", errno_name(e)));
            }
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        self.detail.push(text.into());
    }

    fn win(&mut self, what: impl Into<String>) {
        self.succeeded = true;
        self.detail.push(what.into());
    }
}

/// `EACCES (Permission denied)`.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EXDEV => "EXDEV",
        libc::EAGAIN => "EAGAIN",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EFAULT => "EFAULT",
        libc::EBADF => "EBADF",
        libc::ENOTTY => "ENOTTY",
        libc::ENXIO => "ENXIO",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EROFS => "EROFS",
        libc::EEXIST => "EEXIST",
        libc::ELOOP => "ELOOP",
        _ => "",
    };
    let text = std::io::Error::from_raw_os_error(e).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    if name.is_empty() {
        format!("errno {e} ({text})")
    } else {
        format!("{name} ({text})")
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A syscall with integer arguments only (no pointers the kernel could write through).
fn sys_int(nr: libc::c_long, a: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: callers pass integers only (0 where the syscall takes a pointer), so the kernel
    // never reads or writes memory of ours.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| c"/nonexistent".to_owned())
}

fn open(path: &Path, flags: libc::c_int) -> Result<OwnedFd, i32> {
    let c = cstr(path);
    // SAFETY: `c` is a valid NUL-terminated string alive for the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        Err(errno())
    } else {
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn openat(dir: RawFd, name: &Path, flags: libc::c_int) -> Result<OwnedFd, i32> {
    let c = cstr(name);
    // SAFETY: `c` is a valid NUL-terminated string alive for the call.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        Err(errno())
    } else {
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Reads what an fd gives; `Ok` (the attacker won) only if the secret's marker is in it.
fn read_secret(fd: OwnedFd, marker: &str) -> Result<i64, i32> {
    let mut f = std::fs::File::from(fd);
    let mut buf = Vec::new();
    match f.read_to_end(&mut buf) {
        Ok(n) if String::from_utf8_lossy(&buf).contains(marker) => Ok(n as i64),
        Ok(_) => Err(libc::ENODATA),
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// open + read of a secret through `path`.
fn steal(a: &mut Attempt, what: &str, path: &Path, ctx: &Ctx) {
    a.tried.push(path.display().to_string());
    let r = open(path, libc::O_RDONLY).and_then(|fd| read_secret(fd, &ctx.marker));
    a.step(&format!("{what}: open {}", path.display()), r);
}

/// Signature of every attack.
pub type AttackFn = fn(&Ctx) -> Attempt;

/// Looks an attack up by name.
pub fn find(name: &str) -> Option<AttackFn> {
    ATTACKS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Every in-sandbox attack, by name. mod.rs holds what each is expected to meet.
pub const ATTACKS: &[(&str, AttackFn)] = &[
    ("tiocsti", tiocsti),
    ("tiocsti-upper-bits", tiocsti_upper_bits),
    ("tioclinux", tioclinux),
    ("int80-i386", int80_getpid),
    ("int80-socketcall", int80_socketcall),
    ("x32-abi", x32_abi),
    ("io-uring-setup", io_uring_setup),
    ("unshare-userns", unshare_userns),
    ("clone-newuser", clone_newuser),
    ("clone-ns-upper-bits", clone_ns_upper_bits),
    ("clone3-newuser", clone3_newuser),
    ("setns", setns),
    ("ptrace", ptrace),
    ("process-vm-readv", process_vm_readv),
    ("perf-event-open", perf_event_open),
    ("bpf", bpf),
    ("userfaultfd", userfaultfd),
    ("keyctl", keyctl),
    ("add-key", add_key),
    ("init-module", init_module),
    ("kexec-load", kexec_load),
    ("mount", mount),
    ("umount2", umount2),
    ("fsopen", fsopen),
    ("open-tree", open_tree),
    ("move-mount", move_mount),
    ("pivot-root", pivot_root),
    ("personality", personality),
    ("open-by-handle-at", open_by_handle_at),
    ("pidfd-getfd", pidfd_getfd),
    ("fork-bomb", fork_bomb),
    ("double-fork-setsid", double_fork_setsid),
    ("cgroup-write", cgroup_write),
    ("signal-outside", signal_outside),
    ("proc-environ-outside", proc_environ_outside),
    ("setuid-no-new-privs", setuid_no_new_privs),
    ("capabilities-zero", capabilities_zero),
    ("read-ssh-key", read_ssh_key),
    ("read-aws-credentials", read_aws_credentials),
    ("read-gh-hosts", read_gh_hosts),
    ("read-dotenv", read_dotenv),
    ("read-etc-shadow", read_etc_shadow),
    ("read-ssl-private", read_ssl_private),
    ("alias-symlink", alias_symlink),
    ("alias-dotdot", alias_dotdot),
    ("alias-double-slash", alias_double_slash),
    ("alias-proc-root", alias_proc_root),
    ("alias-proc-cwd", alias_proc_cwd),
    ("alias-proc-fd-reopen", alias_proc_fd_reopen),
    ("alias-openat-dirfd", alias_openat_dirfd),
    ("refer-rename-out", refer_rename_out),
    ("refer-link-out", refer_link_out),
    ("create-git-hook", create_git_hook),
    ("git-dir-swap", git_dir_swap),
    ("create-envrc", create_envrc),
    ("create-dotenv", create_dotenv),
    ("write-shell-rc", write_shell_rc),
    ("write-audit-log", write_audit_log),
    ("write-profile", write_profile),
    ("long-path", long_path),
    ("inotify-denied-dir", inotify_denied_dir),
    ("metadata-chmod-secret", metadata_chmod_secret),
    ("metadata-utime-secret", metadata_utime_secret),
    ("metadata-xattr-secret", metadata_xattr_secret),
    ("proc-host-process", proc_host_process),
    ("exec-copied-binary", exec_copied_binary),
    ("exec-ld-so", exec_ld_so),
    ("exec-proc-fd", exec_proc_fd),
    ("exec-memfd", exec_memfd),
    ("tcp-loopback-port", tcp_loopback_port),
    ("udp-sendto", udp_sendto),
    ("ipv6-connect", ipv6_connect),
    ("metadata-ipv4", metadata_ipv4),
    ("metadata-ipv6", metadata_ipv6),
    ("raw-socket", raw_socket),
    ("tcp-fastopen", tcp_fastopen),
    ("ip-protocol-variants", ip_protocol_variants),
    ("packet-socket", packet_socket),
    ("netlink-socket", netlink_socket),
    ("vsock-socket", vsock_socket),
    ("unix-pathname-host", unix_pathname_host),
    ("unix-symlink-redirect", unix_symlink_redirect),
    ("unix-relative-path", unix_relative_path),
    ("unix-proc-fd-alias", unix_proc_fd_alias),
    ("unix-dgram-sendto", unix_dgram_sendto),
    ("unix-dgram-sendmsg", unix_dgram_sendmsg),
    ("unix-abstract", unix_abstract),
    ("bind-listen", bind_listen),
    ("event-flood", event_flood),
    ("hostile-names", hostile_names),
    ("bpffs", bpffs),
];

// ---------------------------------------------------------------------------------------------
// Terminal

fn tiocsti(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let c: u8 = b'#';
    for fd in 0..3 {
        // SAFETY: TIOCSTI reads one byte from a live u8.
        let r = unsafe { libc::ioctl(fd, libc::TIOCSTI, &c as *const u8) };
        a.step(
            &format!("ioctl(fd {fd}, TIOCSTI)"),
            if r < 0 { Err(errno()) } else { Ok(r as i64) },
        );
    }
    // The controlling terminal, if the agent still has one (it must not: new session).
    match open(Path::new("/dev/tty"), libc::O_RDWR) {
        Ok(tty) => {
            // SAFETY: as above, on a live fd.
            let r = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSTI, &c as *const u8) };
            a.step(
                "ioctl(/dev/tty, TIOCSTI)",
                if r < 0 { Err(errno()) } else { Ok(r as i64) },
            );
        }
        Err(e) => a.note(format!(
            "open /dev/tty: {} (no controlling terminal)",
            errno_name(e)
        )),
    }
    a.target("ioctl")
}

fn tiocsti_upper_bits(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let c: u8 = b'#';
    // The kernel reads cmd as unsigned int: a filter comparing 64 bits would miss this one.
    let cmd = libc::TIOCSTI | (1u64 << 32);
    // SAFETY: TIOCSTI reads one byte from a live u8.
    let r = unsafe { libc::syscall(libc::SYS_ioctl, 0, cmd, &c as *const u8) };
    a.step(
        "ioctl(0, TIOCSTI | 1<<32)",
        if r < 0 { Err(errno()) } else { Ok(r) },
    );
    a.target("ioctl")
}

fn tioclinux(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // TIOCL_PASTESEL (3): paste the selection into the console's input.
    let sub: [u8; 1] = [3];
    for fd in 0..3 {
        // SAFETY: TIOCLINUX reads a subcode byte from a live buffer.
        let r = unsafe { libc::ioctl(fd, libc::TIOCLINUX, sub.as_ptr()) };
        a.step(
            &format!("ioctl(fd {fd}, TIOCLINUX, PASTESEL)"),
            if r < 0 { Err(errno()) } else { Ok(r as i64) },
        );
    }
    a.target("ioctl")
}

// ---------------------------------------------------------------------------------------------
// Syscall ABI

/// Runs `f` in a forked child and returns its exit code, or the signal that killed it.
fn in_child(f: impl FnOnce() -> i32) -> Result<i32, i32> {
    // SAFETY: the attack process is single-threaded; the child only calls `f` and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(-errno());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's destructors twice.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: `status` is a live int; `pid` is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}

/// Exit codes of the int 0x80 children: what eax came back as.
const REACHED: i32 = 0;
const REFUSED_EPERM: i32 = 1;
const OTHER: i32 = 2;

fn judge_int80(a: &mut Attempt, what: &str, r: Result<i32, i32>) {
    match r {
        Ok(REACHED) => a.win(format!("{what}: reached the kernel through the i386 ABI")),
        Ok(REFUSED_EPERM) => {
            a.errno = Some(libc::EPERM);
            a.note(format!("{what}: EPERM"));
        }
        Ok(code) => {
            // ENOSYS here means the i386 table refused it, not our filter: still "reached".
            a.win(format!(
                "{what}: returned an error other than EPERM (code {code})"
            ));
        }
        Err(libc::SIGSEGV) | Err(libc::SIGILL) => {
            a.not_applicable = Some(
                "int 0x80 raised SIGSEGV: this kernel has no IA32 emulation (the i386 ABI does \
                 not exist here)"
                    .into(),
            );
        }
        Err(sig) => a.win(format!("{what}: child died by signal {sig}")),
    }
}

fn int80_getpid(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let r = in_child(|| {
        let ret: i32;
        // SAFETY: i386 getpid (20) takes no arguments and touches no memory; the compat entry
        // may clobber r8-r11, declared below.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20i32 => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            );
        }
        if ret > 0 {
            REACHED
        } else if ret == -libc::EPERM {
            REFUSED_EPERM
        } else {
            OTHER
        }
    });
    judge_int80(&mut a, "int 0x80 getpid (i386 nr 20)", r);
    a.target("i386:")
}

fn int80_socketcall(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let r = in_child(|| {
        // The i386 ABI passes 32-bit pointers: the argument block must live below 4 GiB.
        // SAFETY: a fresh anonymous mapping, used only by this child.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return OTHER;
        }
        let args = page.cast::<u32>();
        // SAFETY: the page is ours, writable and large enough for three u32.
        unsafe {
            args.write(libc::AF_INET as u32);
            args.add(1).write(libc::SOCK_RAW as u32);
            args.add(2).write(libc::IPPROTO_ICMP as u32);
        }
        let ret: i32;
        // SAFETY: i386 socketcall(SYS_SOCKET=1, args): ebx is reserved by LLVM, so it is saved
        // and restored around the call by hand; the compat entry may clobber r8-r11.
        unsafe {
            std::arch::asm!(
                "push rbx",
                "mov ebx, 1",
                "int 0x80",
                "pop rbx",
                inlateout("eax") 102i32 => ret,
                in("ecx") args as usize as u32,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            );
        }
        if ret >= 0 {
            REACHED
        } else if ret == -libc::EPERM {
            REFUSED_EPERM
        } else {
            OTHER
        }
    });
    judge_int80(&mut a, "int 0x80 socketcall(SOCKET, AF_INET, SOCK_RAW)", r);
    a.target("i386:")
}

fn x32_abi(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    const X32: libc::c_long = 0x4000_0000;
    let r = sys_int(X32 | libc::SYS_getpid, [0; 6]);
    match r {
        Err(libc::EPERM) => a.step("x32 getpid (0x40000000|39)", r),
        // ENOSYS would mean the kernel (not our filter) refused: the filter let it through.
        Err(e) => a.win(format!(
            "x32 getpid: {} — passed the filter, refused by the kernel",
            errno_name(e)
        )),
        Ok(v) => a.win(format!("x32 getpid returned {v}")),
    }
    a.target("x32:")
}

fn io_uring_setup(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes a struct io_uring_params (120 bytes) we own.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 8u32, params.as_mut_ptr()) };
    let r = if r < 0 { Err(errno()) } else { Ok(r) };
    if let Ok(fd) = r {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    a.step("io_uring_setup(8)", r);
    a.target("io_uring_setup")
}

// ---------------------------------------------------------------------------------------------
// Namespaces and privileged syscalls

fn unshare_userns(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    a.step(
        "unshare(CLONE_NEWUSER)",
        sys_int(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        ),
    );
    a.step(
        "unshare(CLONE_NEWNS)",
        sys_int(libc::SYS_unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
    );
    a.target("unshare")
}

/// Raw clone with fork semantics; the child exits at once. Ok(child pid) means it worked.
fn raw_clone(flags: u64) -> Result<i64, i32> {
    // SAFETY: clone without a new stack behaves like fork; the child only calls _exit.
    let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if r == 0 {
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) }
    }
    if r < 0 {
        return Err(errno());
    }
    let mut status = 0;
    // SAFETY: `status` is a live int; r is our child.
    unsafe { libc::waitpid(r as libc::pid_t, &mut status, libc::__WALL) };
    Ok(r)
}

fn clone_newuser(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let sigchld = libc::SIGCHLD as u64;
    a.step(
        "clone(CLONE_NEWUSER)",
        raw_clone(libc::CLONE_NEWUSER as u64 | sigchld),
    );
    a.step(
        "clone(CLONE_NEWNET)",
        raw_clone(libc::CLONE_NEWNET as u64 | sigchld),
    );
    a.target("clone")
}

fn clone_ns_upper_bits(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // kernel/fork.c uses lower_32_bits(clone_flags): junk above bit 31 is ignored by the
    // kernel, so a 64-bit compare in the filter would let this through.
    let flags = (1u64 << 40) | libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64;
    a.step("clone(CLONE_NEWUSER | 1<<40)", raw_clone(flags));
    a.target("clone")
}

fn clone3_newuser(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // struct clone_args (v0, 64 bytes): flags, pidfd, child_tid, parent_tid, exit_signal, ...
    let mut args = [0u64; 8];
    args[0] = libc::CLONE_NEWUSER as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: clone3 reads `args` (64 bytes, ours); the child (if any) only calls _exit.
    let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) };
    if r == 0 {
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) }
    }
    if r > 0 {
        let mut status = 0;
        // SAFETY: `status` is a live int; r is our child.
        unsafe { libc::waitpid(r as libc::pid_t, &mut status, libc::__WALL) };
    }
    a.step(
        "clone3({flags: CLONE_NEWUSER})",
        if r < 0 { Err(errno()) } else { Ok(r) },
    );
    a.target("clone3")
}

fn setns(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    match open(Path::new("/proc/1/ns/uts"), libc::O_RDONLY) {
        Ok(fd) => a.step(
            "setns(/proc/1/ns/uts)",
            sys_int(libc::SYS_setns, [fd.as_raw_fd() as u64, 0, 0, 0, 0, 0]),
        ),
        Err(e) => a.note(format!("open /proc/1/ns/uts: {}", errno_name(e))),
    }
    // Even with an invalid fd the filter must see (and log) the call.
    a.step(
        "setns(-1, 0)",
        sys_int(libc::SYS_setns, [u64::MAX, 0, 0, 0, 0, 0]),
    );
    a.target("setns")
}

fn ptrace(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() } as u64;
    a.step(
        "ptrace(PTRACE_ATTACH, parent)",
        sys_int(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as u64, parent, 0, 0, 0, 0],
        ),
    );
    if a.succeeded {
        sys_int(
            libc::SYS_ptrace,
            [libc::PTRACE_DETACH as u64, parent, 0, 0, 0, 0],
        )
        .ok();
    }
    a.target("ptrace")
}

fn process_vm_readv(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let mut buf = [0u8; 64];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: 0x40_0000 as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    // SAFETY: the local iovec points at our live buffer; the remote one is only read.
    let r = unsafe { libc::process_vm_readv(parent, &local, 1, &remote, 1, 0) };
    a.step(
        "process_vm_readv(parent)",
        if r < 0 { Err(errno()) } else { Ok(r as i64) },
    );
    a.target("process_vm_readv")
}

fn perf_event_open(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // struct perf_event_attr: type (u32), size (u32), config (u64), ...; 128 bytes is VER8.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    // config 0: PERF_COUNT_SW_CPU_CLOCK.
    // SAFETY: the kernel reads `attr` (ours, 128 bytes).
    let r = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0usize) };
    if r >= 0 {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
    }
    a.step(
        "perf_event_open(SW_CPU_CLOCK, self)",
        if r < 0 { Err(errno()) } else { Ok(r) },
    );
    a.target("perf_event_open")
}

fn bpf_map_create() -> Result<i64, i32> {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
    let mut attr = [0u32; 30];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 8;
    attr[3] = 1;
    // SAFETY: the kernel reads `attr` (120 bytes, ours).
    let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 120u32) };
    if r >= 0 {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        Ok(r)
    } else {
        Err(errno())
    }
}

fn bpf(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    a.step("bpf(BPF_MAP_CREATE, array)", bpf_map_create());
    a.target("bpf")
}

fn userfaultfd(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let r = sys_int(
        libc::SYS_userfaultfd,
        [libc::O_CLOEXEC as u64, 0, 0, 0, 0, 0],
    );
    if let Ok(fd) = r {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    a.step("userfaultfd(O_CLOEXEC)", r);
    a.target("userfaultfd")
}

fn keyctl(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), create = 1.
    a.step(
        "keyctl(GET_KEYRING_ID, session)",
        sys_int(libc::SYS_keyctl, [0, (-3i64) as u64, 1, 0, 0, 0]),
    );
    a.target("keyctl")
}

fn add_key(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let payload = b"agentbox-selftest";
    // SAFETY: add_key reads two C strings and `payload`, all alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"agentbox-selftest".as_ptr(),
            payload.as_ptr(),
            payload.len(),
            -2i32, // KEY_SPEC_PROCESS_KEYRING
        )
    };
    a.step(
        "add_key(user, process keyring)",
        if r < 0 { Err(errno()) } else { Ok(r) },
    );
    a.target("add_key")
}

fn init_module(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // An empty image: the kernel would refuse it as a module, the filter must refuse first.
    let image = [0u8; 64];
    // SAFETY: init_module reads `image` and the empty C string, both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            c"".as_ptr(),
        )
    };
    match r {
        r if r >= 0 => a.win("init_module returned success"),
        _ => match errno() {
            libc::EPERM => a.step("init_module(64 zero bytes)", Err(libc::EPERM)),
            // ENOEXEC / EFAULT / ... : the module loader itself parsed the image.
            e => a.win(format!(
                "init_module reached the module loader: {}",
                errno_name(e)
            )),
        },
    }
    // EBADF would mean the kernel looked at the fd: the filter let the call through.
    match sys_int(libc::SYS_finit_module, [u64::MAX, 0, 0, 0, 0, 0]) {
        Err(libc::EPERM) => a.step("finit_module(-1)", Err(libc::EPERM)),
        other => a.win(format!("finit_module(-1) reached the kernel: {other:?}")),
    }
    a.target("init_module")
}

fn kexec_load(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    a.step(
        "kexec_load(0, 0, NULL, 0)",
        sys_int(libc::SYS_kexec_load, [0; 6]),
    );
    a.target("kexec_load")
}

fn mount(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let target = cstr(&ctx.workspace);
    // SAFETY: mount reads C strings alive for the call; data is NULL.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    a.step(
        "mount(tmpfs on the workspace)",
        if r < 0 { Err(errno()) } else { Ok(0) },
    );
    a.target("mount")
}

fn umount2(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: umount2 reads a C string alive for the call.
    let r = unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) };
    a.step(
        "umount2(/proc, MNT_DETACH)",
        if r < 0 { Err(errno()) } else { Ok(0) },
    );
    a.target("umount2")
}

fn fsopen(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: fsopen reads a C string alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0) };
    if r >= 0 {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
    }
    a.step("fsopen(tmpfs)", if r < 0 { Err(errno()) } else { Ok(r) });
    a.target("fsopen")
}

fn open_tree(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    const OPEN_TREE_CLONE: u32 = 1;
    // SAFETY: open_tree reads a C string alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
        )
    };
    if r >= 0 {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
    }
    a.step(
        "open_tree(/, OPEN_TREE_CLONE)",
        if r < 0 { Err(errno()) } else { Ok(r) },
    );
    a.target("open_tree")
}

fn move_mount(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: move_mount reads two C strings alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            -1,
            c"".as_ptr(),
            libc::AT_FDCWD,
            c"/tmp".as_ptr(),
            0x4u32, // MOVE_MOUNT_F_EMPTY_PATH
        )
    };
    let r = if r < 0 { Err(errno()) } else { Ok(r) };
    // EBADF means the kernel looked at the fd: the filter let the call through.
    match r {
        Err(libc::EBADF) => a.win("move_mount reached the kernel (EBADF)"),
        r => a.step("move_mount(-1 -> /tmp)", r),
    }
    a.target("move_mount")
}

fn pivot_root(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: pivot_root reads two C strings alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    a.step("pivot_root(., .)", if r < 0 { Err(errno()) } else { Ok(r) });
    a.target("pivot_root")
}

fn personality(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    const READ_IMPLIES_EXEC: u64 = 0x0400000;
    const ADDR_NO_RANDOMIZE: u64 = 0x0040000;
    a.step(
        "personality(READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE)",
        sys_int(
            libc::SYS_personality,
            [READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE, 0, 0, 0, 0, 0],
        ),
    );
    // What the process runs with now, whatever the call said.
    let now = sys_int(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]).unwrap_or(0) as u64;
    if now & (READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE) != 0 {
        a.win(format!("personality is now {now:#x}"));
    }
    a.target("personality")
}

fn open_by_handle_at(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }: the
    // shocker-style root inode handle (ext4: type 1, inode 2).
    let mut handle = [0u8; 16];
    handle[0..4].copy_from_slice(&8u32.to_ne_bytes());
    handle[4..8].copy_from_slice(&1i32.to_ne_bytes());
    handle[8..12].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: the kernel reads the handle (16 bytes, ours).
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            libc::AT_FDCWD,
            handle.as_ptr(),
            libc::O_RDONLY,
        )
    };
    if r >= 0 {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
    }
    let r = if r < 0 { Err(errno()) } else { Ok(r) };
    match r {
        Err(e) if e != libc::EPERM => a.win(format!(
            "open_by_handle_at reached the kernel: {}",
            errno_name(e)
        )),
        r => a.step("open_by_handle_at(AT_FDCWD, root inode)", r),
    }
    a.target("open_by_handle_at")
}

fn pidfd_getfd(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() } as u64;
    let pidfd = sys_int(libc::SYS_pidfd_open, [parent, 0, 0, 0, 0, 0]);
    let pidfd_raw = match pidfd {
        // SAFETY: the fd the kernel just returned.
        Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            a.note(format!("pidfd_open(parent): {}", errno_name(e)));
            None
        }
    };
    let fd = pidfd_raw
        .as_ref()
        .map_or(u64::MAX, |f| f.as_raw_fd() as u64);
    let r = sys_int(libc::SYS_pidfd_getfd, [fd, 0, 0, 0, 0, 0]);
    if let Ok(got) = r {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(got as RawFd) });
    }
    a.step("pidfd_getfd(parent, fd 0)", r);
    a.target("pidfd_getfd")
}

// ---------------------------------------------------------------------------------------------
// Processes and scope

/// Forks at most this many children; the test profile caps the sandbox at 32 tasks.
const FORK_BOMB_LIMIT: u64 = 256;
/// More successful forks than this and the cap did not hold.
pub const FORK_BOMB_CAP_HELD_BELOW: u64 = 64;

fn fork_bomb(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let mut children = Vec::new();
    let mut refused = None;
    while (children.len() as u64) < FORK_BOMB_LIMIT {
        // SAFETY: single-threaded; the child only pauses until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause has no memory side effects.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            refused = Some(errno());
            break;
        }
        children.push(pid);
    }
    let forked = children.len() as u64;
    for &pid in &children {
        // SAFETY: our own children, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &children {
        let mut status = 0;
        // SAFETY: `status` is a live int; pid is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    a.counts.push(("forked".into(), forked));
    match refused {
        Some(e) => {
            a.errno = Some(e);
            a.note(format!(
                "fork refused after {forked} children: {}",
                errno_name(e)
            ));
        }
        None => a.note(format!(
            "{forked} forks, none refused (stopped at the test's own limit)"
        )),
    }
    if forked >= FORK_BOMB_CAP_HELD_BELOW {
        a.succeeded = true;
    }
    a
}

/// Reads `NoNewPrivs`, `Seccomp` and the capability sets of the calling process.
fn status_fields() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn double_fork_setsid(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        a.not_applicable = Some(format!("pipe: {}", errno_name(errno())));
        return a;
    }
    // SAFETY: both fds were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let rd_raw = rd.as_raw_fd();
    let ssh = ctx.ssh_key.clone();
    let marker = ctx.marker.clone();
    // First child: new session, fork the grandchild, exit (the grandchild is reparented).
    let r = in_child(move || {
        // SAFETY: the child's copy of the read end, never used here.
        unsafe { libc::close(rd_raw) };
        // SAFETY: setsid has no memory side effects.
        unsafe { libc::setsid() };
        // SAFETY: single-threaded child; the grandchild runs the code below and _exits.
        let pid = unsafe { libc::fork() };
        if pid != 0 {
            return 0;
        }
        // Wait until the middle process is gone and we are an orphan.
        for _ in 0..200 {
            // SAFETY: getppid cannot fail.
            if unsafe { libc::getppid() } == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut out = String::new();
        let unshare = sys_int(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        );
        out.push_str(&format!(
            "unshare={}\n",
            unshare.map_or_else(|e| e.to_string(), |_| "ok".into())
        ));
        let read = open(&ssh, libc::O_RDONLY).and_then(|fd| read_secret(fd, &marker));
        out.push_str(&format!(
            "read={}\n",
            read.map_or_else(|e| e.to_string(), |_| "ok".into())
        ));
        for (k, v) in status_fields() {
            if k == "NoNewPrivs" || k == "Seccomp" {
                out.push_str(&format!("{k}={v}\n"));
            }
        }
        // SAFETY: getppid and getsid cannot fail for the calling process.
        let (ppid, sid, pid) = unsafe { (libc::getppid(), libc::getsid(0), libc::getpid()) };
        out.push_str(&format!("ppid={ppid}\nsid={sid}\npid={pid}\n"));
        let mut w = std::fs::File::from(wr);
        let _ = w.write_all(out.as_bytes());
        // SAFETY: ends the grandchild.
        unsafe { libc::_exit(0) }
    });
    if let Err(sig) = r {
        a.note(format!("middle child died by signal {sig}"));
    }
    let mut report = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut report);
    let field = |k: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    if report.is_empty() {
        a.win("the reparented grandchild reported nothing");
        return a;
    }
    a.note(format!(
        "grandchild pid {} ppid {} sid {}",
        field("pid"),
        field("ppid"),
        field("sid")
    ));
    let as_result = |v: String| match v.as_str() {
        "ok" => Ok(0),
        e => Err(e.parse().unwrap_or(0)),
    };
    a.step(
        "grandchild unshare(CLONE_NEWUSER)",
        as_result(field("unshare")),
    );
    a.step("grandchild read ~/.ssh/id_rsa", as_result(field("read")));
    if field("NoNewPrivs") != "1" || field("Seccomp") != "2" {
        a.win(format!(
            "grandchild NoNewPrivs={} Seccomp={}",
            field("NoNewPrivs"),
            field("Seccomp")
        ));
    } else {
        a.note("grandchild NoNewPrivs=1 Seccomp=2 (still filtered)");
    }
    a.target("unshare")
}

fn cgroup_write(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let mut candidates: Vec<PathBuf> = Vec::new();
    for line in std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
    {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        let dirs: Vec<PathBuf> = if controllers.is_empty() {
            ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
                .iter()
                .map(|m| Path::new(m).join(path))
                .collect()
        } else {
            controllers
                .split(',')
                .map(|c| Path::new("/sys/fs/cgroup").join(c).join(path))
                .collect()
        };
        for d in dirs {
            for f in [
                "cgroup.procs",
                "cgroup.kill",
                "pids.max",
                "memory.max",
                "memory.limit_in_bytes",
            ] {
                if d.join(f).exists() {
                    candidates.push(d.join(f));
                }
            }
        }
    }
    // Moving ourselves to the root group would leave any per-sandbox cgroup.
    for root in [
        "/sys/fs/cgroup/cgroup.procs",
        "/sys/fs/cgroup/unified/cgroup.procs",
    ] {
        candidates.push(PathBuf::from(root));
    }
    candidates.dedup();
    let first = candidates.first().cloned();
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    for path in candidates {
        // Writing "max" to a limit raises it; our own pid to cgroup.procs is a no-op for the
        // group we are in and an escape for any other.
        let value = if path.ends_with("cgroup.procs") {
            format!("{pid}\n")
        } else if path.ends_with("cgroup.kill") {
            // Never actually kill: a failure of the sandbox is reported by the open.
            String::new()
        } else {
            "max\n".to_string()
        };
        let r = open(&path, libc::O_WRONLY).and_then(|fd| {
            if value.is_empty() {
                return Ok(0);
            }
            let mut f = std::fs::File::from(fd);
            f.write_all(value.as_bytes())
                .map(|_| value.len() as i64)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
        });
        a.step(&format!("write {}", path.display()), r);
    }
    if let Some(first) = first {
        a.target = Some(first.display().to_string());
    }
    a
}

fn signal_outside(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SIGURG is ignored by default: harmless if the sandbox fails, and still proves the point.
    // SAFETY: kill has no memory side effects.
    let r = unsafe { libc::kill(ctx.outside_pid, libc::SIGURG) };
    a.step(
        &format!("kill(outside pid {}, SIGURG)", ctx.outside_pid),
        if r < 0 { Err(errno()) } else { Ok(0) },
    );
    let pidfd = sys_int(
        libc::SYS_pidfd_open,
        [ctx.outside_pid as u64, 0, 0, 0, 0, 0],
    );
    match pidfd {
        Ok(fd) => {
            // SAFETY: the fd the kernel just returned.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
            let r = sys_int(
                libc::SYS_pidfd_send_signal,
                [fd.as_raw_fd() as u64, libc::SIGURG as u64, 0, 0, 0, 0],
            );
            a.step("pidfd_send_signal(outside, SIGURG)", r);
        }
        Err(e) => a.note(format!("pidfd_open(outside): {}", errno_name(e))),
    }
    a
}

fn proc_environ_outside(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    for file in ["environ", "mem", "fd/0"] {
        let path = PathBuf::from(format!("/proc/{}/{file}", ctx.outside_pid));
        let r = open(&path, libc::O_RDONLY).and_then(|fd| {
            let mut buf = [0u8; 64];
            // SAFETY: reads into our live buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(errno())
            } else {
                Ok(n as i64)
            }
        });
        a.step(&format!("read {}", path.display()), r);
    }
    a.target(format!("/proc/{}/environ", ctx.outside_pid))
}

fn setuid_no_new_privs(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let fields = status_fields();
    let nnp = fields
        .iter()
        .find(|(k, _)| k == "NoNewPrivs")
        .map_or("", |(_, v)| v.as_str());
    if nnp == "1" {
        a.note("NoNewPrivs: 1 (execve of a setuid or file-capability binary gains nothing)");
    } else {
        a.win(format!("NoNewPrivs: {nnp:?}"));
    }
    for bin in [
        "/usr/bin/su",
        "/usr/bin/newuidmap",
        "/usr/bin/sudo",
        "/usr/bin/passwd",
    ] {
        let Ok(meta) = std::fs::metadata(bin) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o4000 == 0 {
            continue;
        }
        // Run it: under no_new_privs it runs with our uid. `newuidmap` with no arguments and
        // `su -c true` with stdin closed fail either way; the exit code does not matter, the
        // effective uid it ran with does, and NoNewPrivs makes that ours.
        a.note(format!(
            "{bin} is setuid-root; exec keeps our credentials under no_new_privs"
        ));
    }
    a
}

fn capabilities_zero(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let fields = status_fields();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    // Without a user namespace an unprivileged sandbox cannot drop its bounding set (that
    // needs CAP_SETPCAP), and needs not: with no_new_privs, no permitted capability and a
    // uid other than 0, no exec can raise one (setuid bits and file capabilities are ignored).
    let inert_bounding_set = field("NoNewPrivs").as_deref() == Some("1")
        && field("CapPrm").is_some_and(|v| u64::from_str_radix(&v, 16) == Ok(0))
        && field("Uid").is_some_and(|v| v.split_whitespace().all(|id| id != "0"));
    for (k, v) in &fields {
        if ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"].contains(&k.as_str()) {
            match u64::from_str_radix(v, 16) {
                Ok(0) => a.note(format!("{k}: 0")),
                _ if k == "CapBnd" && inert_bounding_set => a.note(format!(
                    "{k}: {v} (inert: not uid 0, no_new_privs, no permitted capabilities)"
                )),
                _ => a.win(format!("{k}: {v}")),
            }
        }
    }
    // CAP_CHOWN: give a workspace file away.
    let probe = ctx.workspace.join(".agentbox-selftest-chown");
    if std::fs::write(&probe, b"x").is_ok() {
        let c = cstr(&probe);
        // SAFETY: chown reads a C string alive for the call.
        let r = unsafe { libc::chown(c.as_ptr(), 1, 1) };
        a.step(
            "chown(own file, 1, 1) (needs CAP_CHOWN)",
            if r < 0 { Err(errno()) } else { Ok(0) },
        );
        let _ = std::fs::remove_file(&probe);
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Files

fn read_ssh_key(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    steal(&mut a, "direct", &ctx.ssh_key, ctx);
    a.target(ctx.ssh_key.display().to_string())
}

fn read_aws_credentials(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    steal(&mut a, "direct", &ctx.aws_credentials, ctx);
    a.target(ctx.aws_credentials.display().to_string())
}

fn read_gh_hosts(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    steal(&mut a, "direct", &ctx.gh_hosts, ctx);
    a.target(ctx.gh_hosts.display().to_string())
}

fn read_dotenv(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    steal(&mut a, "direct", &ctx.dotenv, ctx);
    a.target(ctx.dotenv.display().to_string())
}

fn read_etc_shadow(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    if !Path::new("/etc/shadow").exists() {
        a.not_applicable = Some("this system has no /etc/shadow".into());
        return a;
    }
    let r = open(Path::new("/etc/shadow"), libc::O_RDONLY).map(|_| 0);
    a.step("open /etc/shadow", r);
    a.target("/etc/shadow")
}

/// TLS private keys under /etc: a root agent owns them by uid, no capability needed.
fn read_ssl_private(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let dir = Path::new("/etc/ssl/private");
    if !dir.is_dir() {
        a.not_applicable = Some("this system has no /etc/ssl/private".into());
        return a;
    }
    let r = open(dir, libc::O_RDONLY | libc::O_DIRECTORY).map(|_| 0);
    a.step("open /etc/ssl/private", r);
    a.target("/etc/ssl/private")
}

fn alias_symlink(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let link = ctx.workspace.join("innocent-link");
    let _ = std::fs::remove_file(&link);
    match std::os::unix::fs::symlink(&ctx.ssh_key, &link) {
        Ok(()) => steal(&mut a, "symlink in the workspace", &link, ctx),
        Err(e) => a.note(format!("symlink: {e}")),
    }
    let dir_link = ctx.workspace.join("innocent-dir");
    let _ = std::fs::remove_file(&dir_link);
    if let Some(ssh_dir) = ctx.ssh_key.parent() {
        if std::os::unix::fs::symlink(ssh_dir, &dir_link).is_ok() {
            steal(&mut a, "directory symlink", &dir_link.join("id_rsa"), ctx);
        }
    }
    a.target(ctx.ssh_key.display().to_string())
}

fn alias_dotdot(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // workspace/../home/.ssh/id_rsa, spelled through the workspace.
    let rel = pathdiff(&ctx.ssh_key, &ctx.workspace);
    steal(
        &mut a,
        "`..` from the workspace",
        &ctx.workspace.join(&rel),
        ctx,
    );
    steal(&mut a, "relative `..`", &rel, ctx);
    a.target(ctx.ssh_key.display().to_string())
}

/// `target` relative to `base` through `..` components (both absolute).
fn pathdiff(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

fn alias_double_slash(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let doubled = ctx.ssh_key.display().to_string().replace('/', "//");
    steal(&mut a, "`//` separators", Path::new(&doubled), ctx);
    let dotted = ctx.ssh_key.display().to_string().replace('/', "/./");
    steal(&mut a, "`/./` separators", Path::new(&dotted), ctx);
    a.target(ctx.ssh_key.display().to_string())
}

fn alias_proc_root(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let via = format!("/proc/self/root{}", ctx.ssh_key.display());
    steal(&mut a, "/proc/self/root", Path::new(&via), ctx);
    let via1 = format!("/proc/1/root{}", ctx.ssh_key.display());
    steal(&mut a, "/proc/1/root (init)", Path::new(&via1), ctx);
    a.target(ctx.ssh_key.display().to_string())
}

fn alias_proc_cwd(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let Some(dir) = ctx.ssh_key.parent() else {
        return a;
    };
    // chdir is not an access Landlock checks: walking into the directory works, opening must not.
    match std::env::set_current_dir(dir) {
        Ok(()) => {
            steal(
                &mut a,
                "relative to a cwd inside ~/.ssh",
                Path::new("id_rsa"),
                ctx,
            );
            steal(
                &mut a,
                "/proc/self/cwd",
                Path::new("/proc/self/cwd/id_rsa"),
                ctx,
            );
        }
        Err(e) => a.note(format!("chdir {}: {e}", dir.display())),
    }
    a.target(ctx.ssh_key.display().to_string())
}

fn alias_proc_fd_reopen(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // O_PATH opens are not reads: Landlock lets them through. Re-opening one must not be.
    match open(&ctx.ssh_key, libc::O_PATH) {
        Ok(fd) => {
            let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
            steal(
                &mut a,
                "re-open of an O_PATH fd via /proc/self/fd",
                Path::new(&via),
                ctx,
            );
            // SAFETY: getpid cannot fail.
            let pid = unsafe { libc::getpid() };
            let via = format!("/proc/{pid}/fd/{}", fd.as_raw_fd());
            steal(&mut a, "re-open via /proc/<pid>/fd", Path::new(&via), ctx);
        }
        Err(e) => a.note(format!("O_PATH open: {}", errno_name(e))),
    }
    a.target(ctx.ssh_key.display().to_string())
}

fn alias_openat_dirfd(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    a.tried.push("id_rsa".into());
    a.tried
        .push(pathdiff(&ctx.ssh_key, &ctx.workspace).display().to_string());
    if let Some(dir) = ctx.ssh_key.parent() {
        a.tried.push(dir.display().to_string());
    }
    let Some(dir) = ctx.ssh_key.parent() else {
        return a;
    };
    for (what, flags) in [
        ("O_PATH dirfd", libc::O_PATH | libc::O_DIRECTORY),
        ("O_RDONLY dirfd", libc::O_RDONLY | libc::O_DIRECTORY),
    ] {
        match open(dir, flags) {
            Ok(d) => {
                let r = openat(d.as_raw_fd(), Path::new("id_rsa"), libc::O_RDONLY)
                    .and_then(|fd| read_secret(fd, &ctx.marker));
                a.step(&format!("openat({what} of ~/.ssh, id_rsa)"), r);
            }
            Err(e) => a.note(format!("open {what}: {}", errno_name(e))),
        }
    }
    // A dirfd on an allowed tree and a path that climbs out of it.
    if let Ok(ws) = open(&ctx.workspace, libc::O_PATH | libc::O_DIRECTORY) {
        let rel = pathdiff(&ctx.ssh_key, &ctx.workspace);
        let r = openat(ws.as_raw_fd(), &rel, libc::O_RDONLY)
            .and_then(|fd| read_secret(fd, &ctx.marker));
        a.step("openat(workspace dirfd, ../home/.ssh/id_rsa)", r);
    }
    a.target(ctx.ssh_key.display().to_string())
}

fn rename_or_link(a: &mut Attempt, link: bool, from: &Path, to: &Path) {
    a.tried.push(from.display().to_string());
    a.tried.push(to.display().to_string());
    let (f, t) = (cstr(from), cstr(to));
    // SAFETY: both C strings are alive for the call.
    let r = unsafe {
        if link {
            libc::link(f.as_ptr(), t.as_ptr())
        } else {
            libc::rename(f.as_ptr(), t.as_ptr())
        }
    };
    let verb = if link { "link" } else { "rename" };
    a.step(
        &format!("{verb} {} -> {}", from.display(), to.display()),
        if r < 0 { Err(errno()) } else { Ok(0) },
    );
}

fn refer_rename_out(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    rename_or_link(
        &mut a,
        false,
        &ctx.ssh_key,
        &ctx.workspace.join("stolen-key"),
    );
    // Inside the writable workspace: move the denied .env to a name no glob matches.
    let renamed = ctx.dotenv.with_file_name("not-a-secret.txt");
    rename_or_link(&mut a, false, &ctx.dotenv, &renamed);
    a.target(ctx.ssh_key.display().to_string())
}

fn refer_link_out(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    rename_or_link(
        &mut a,
        true,
        &ctx.ssh_key,
        &ctx.workspace.join("linked-key"),
    );
    let linked = ctx.dotenv.with_file_name("linked-env.txt");
    rename_or_link(&mut a, true, &ctx.dotenv, &linked);
    a.target(ctx.ssh_key.display().to_string())
}

/// Creates `path` (parents too) with `content`; Ok when the file now holds it.
fn create(a: &mut Attempt, path: &Path, content: &[u8]) {
    a.tried.push(path.display().to_string());
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let r = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC).and_then(|fd| {
        let mut f = std::fs::File::from(fd);
        f.write_all(content)
            .map(|_| content.len() as i64)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    });
    a.step(&format!("create {}", path.display()), r);
}

fn create_git_hook(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let hook = ctx.workspace.join(".git/hooks/pre-commit");
    create(&mut a, &hook, b"#!/bin/sh\necho agentbox-selftest-hook\n");
    a.target(hook.display().to_string())
}

/// Protect covers `.git/hooks`; replace the directory holding it instead: rename `.git`
/// away and build a new one with a hook, which the user's next commit would run.
fn git_dir_swap(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let git = ctx.workspace.join(".git");
    let aside = ctx.workspace.join(".git-swapped");
    a.tried.push(git.display().to_string());
    match std::fs::rename(&git, &aside) {
        Ok(()) => {
            a.win(format!(
                "rename {} {}: renamed",
                git.display(),
                aside.display()
            ));
            let hook = git.join("hooks/pre-commit");
            create(&mut a, &hook, b"#!/bin/sh\necho agentbox-selftest-hook\n");
        }
        Err(e) => a.step(
            &format!("rename {} {}", git.display(), aside.display()),
            Err(e.raw_os_error().unwrap_or(0)),
        ),
    }
    a.target(git.display().to_string())
}

fn create_envrc(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let envrc = ctx.workspace.join(".envrc");
    create(&mut a, &envrc, b"echo agentbox-selftest-envrc\n");
    a.target(envrc.display().to_string())
}

fn create_dotenv(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let env = ctx.workspace.join("fresh/.env");
    create(&mut a, &env, b"PLANTED=1\n");
    a.target(env.display().to_string())
}

fn write_shell_rc(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let rc = ctx.home.join(".bashrc");
    create(&mut a, &rc, b"echo agentbox-selftest-bashrc\n");
    a.target(rc.display().to_string())
}

/// A path call (`chmod`, `utimensat`, `setxattr`) on `path`, as one step.
fn path_call(a: &mut Attempt, what: &str, path: &Path, call: impl Fn(&CString) -> libc::c_int) {
    let c = cstr(path);
    let r = call(&c);
    a.tried.push(path.display().to_string());
    a.step(what, if r < 0 { Err(errno()) } else { Ok(0) });
}

/// The user's own key made world-readable: its owner may chmod it, Landlock has no right for
/// metadata, so only a read-only mount refuses it.
fn metadata_chmod_secret(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: chmod reads a C string alive for the call.
    path_call(&mut a, "chmod 0644 the ssh key", &ctx.ssh_key, |c| unsafe {
        libc::chmod(c.as_ptr(), 0o644)
    });
    a.target(ctx.ssh_key.display().to_string())
}

/// A secret's times reset (hiding that it was replaced), through utimensat on its path.
fn metadata_utime_secret(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let times = [libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }; 2];
    // SAFETY: utimensat reads a C string and two timespecs alive for the call.
    path_call(
        &mut a,
        "utimensat the aws credentials",
        &ctx.aws_credentials,
        |c| unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
    );
    a.target(ctx.aws_credentials.display().to_string())
}

/// An extended attribute planted on a secret (security.* needs caps; user.* only ownership).
fn metadata_xattr_secret(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let value = b"agentbox-selftest";
    // SAFETY: setxattr reads two C strings and a buffer alive for the call.
    path_call(
        &mut a,
        "setxattr user.agent on gh hosts",
        &ctx.gh_hosts,
        |c| unsafe {
            libc::setxattr(
                c.as_ptr(),
                c"user.agent".as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        },
    );
    a.target(ctx.gh_hosts.display().to_string())
}

/// A host process's command line (secrets in argv are common) read through /proc.
fn proc_host_process(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let path = PathBuf::from(format!("/proc/{}/cmdline", ctx.outside_pid));
    let r = std::fs::read(&path)
        .map(|b| b.len() as i64)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
    a.tried.push(path.display().to_string());
    a.step("read a host process's cmdline", r);
    a
}

fn write_audit_log(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let r = open(&ctx.log, libc::O_WRONLY | libc::O_APPEND).and_then(|fd| {
        let mut f = std::fs::File::from(fd);
        f.write_all(b"{\"forged\":true}\n")
            .map(|_| 0)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    });
    a.step("append to the audit log", r);
    let r = open(&ctx.log, libc::O_WRONLY | libc::O_TRUNC).map(|_| 0);
    a.step("truncate the audit log", r);
    rename_or_link(&mut a, false, &ctx.log, &ctx.log.with_extension("moved"));
    let c = cstr(&ctx.log);
    // SAFETY: unlink reads a C string alive for the call.
    let r = unsafe { libc::unlink(c.as_ptr()) };
    a.step(
        "unlink the audit log",
        if r < 0 { Err(errno()) } else { Ok(0) },
    );
    a.target(ctx.log.display().to_string())
}

fn write_profile(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let r = open(&ctx.profile, libc::O_WRONLY | libc::O_APPEND).and_then(|fd| {
        let mut f = std::fs::File::from(fd);
        f.write_all(b"\n# forged\n")
            .map(|_| 0)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    });
    a.step("append to the profile", r);
    a.target(ctx.profile.display().to_string())
}

/// inotify on a denied directory names the files inside as they change (Landlock has no
/// right for watching): watch ~/.ssh, and the home outside every tree.
fn inotify_denied_dir(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: inotify_init1 takes flags only.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        a.step("inotify_init1", Err(errno()));
        return a;
    }
    // SAFETY: the fd the kernel just returned.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ssh = ctx.ssh_key.parent().unwrap_or(&ctx.home).to_path_buf();
    for dir in [&ssh, &ctx.home] {
        a.tried.push(dir.display().to_string());
        let c = cstr(dir);
        // SAFETY: a valid fd and a NUL-terminated path alive for the call.
        let wd =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_ALL_EVENTS) };
        a.step(
            &format!("inotify_add_watch {}", dir.display()),
            if wd < 0 {
                Err(errno())
            } else {
                Ok(i64::from(wd))
            },
        );
    }
    a.target(ssh.display().to_string())
}

fn long_path(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    a.tried.push("key".into());
    // Longer than PATH_MAX in total, and a component longer than NAME_MAX: the kernel refuses
    // both (ENAMETOOLONG); what matters is that nothing is ever allowed by truncation.
    let huge = format!("{}/{}", ctx.home.display(), "a/".repeat(2100));
    let r = open(Path::new(&huge), libc::O_RDONLY).map(|_| 0);
    a.step("open a 4200-byte path", r);
    let long_name = ctx.home.join(".ssh").join("x".repeat(300));
    let r = open(&long_name, libc::O_RDONLY | libc::O_CREAT).map(|_| 0);
    a.step("create a 300-byte name in ~/.ssh", r);
    // Just under PATH_MAX, valid, and naming the secret: must be denied like the short path.
    let prefix = "/.".repeat((4000 - ctx.ssh_key.as_os_str().len()) / 2);
    let padded = format!("{}{}", prefix, ctx.ssh_key.display());
    steal(
        &mut a,
        "secret through a ~4000-byte path",
        Path::new(&padded),
        ctx,
    );
    // A directory chain deeper than PATH_MAX in the workspace, and a symlink at its bottom
    // back to the secret, opened relative to a deep dirfd.
    if let Ok(mut dir) = open(&ctx.workspace, libc::O_PATH | libc::O_DIRECTORY) {
        let component = "d".repeat(200);
        let c = CString::new(component.clone()).unwrap_or_default();
        for _ in 0..25 {
            // SAFETY: mkdirat reads a C string alive for the call.
            unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
            match openat(
                dir.as_raw_fd(),
                Path::new(&component),
                libc::O_PATH | libc::O_DIRECTORY,
            ) {
                Ok(next) => dir = next,
                Err(_) => break,
            }
        }
        let target = cstr(&ctx.ssh_key);
        // SAFETY: symlinkat reads C strings alive for the call.
        unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), c"key".as_ptr()) };
        let r = openat(dir.as_raw_fd(), Path::new("key"), libc::O_RDONLY)
            .and_then(|fd| read_secret(fd, &ctx.marker));
        a.step("symlink to the secret at depth > PATH_MAX", r);
    }
    a.target(ctx.ssh_key.display().to_string())
}

// ---------------------------------------------------------------------------------------------
// Exec

/// A copy of /bin/true in the sandbox's TMPDIR: writable, never in the exec list (the
/// workspace is, so builds can run what they build).
fn copied_true(_: &Ctx, name: &str) -> Option<PathBuf> {
    let copy = std::env::temp_dir().join(name);
    let bytes = std::fs::read("/bin/true").ok()?;
    std::fs::write(&copy, bytes).ok()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).ok()?;
    Some(copy)
}

/// Runs a program and reports whether it ran (exit 0).
fn spawn(a: &mut Attempt, what: &str, program: &Path, args: &[&str]) {
    a.tried.push(program.display().to_string());
    a.tried.extend(args.iter().map(|s| s.to_string()));
    match std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(st) if st.success() => a.win(format!("{what}: ran (exit 0)")),
        Ok(st) => a.note(format!("{what}: exited {st}")),
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            a.step(what, Err(errno));
        }
    }
}

fn exec_copied_binary(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let Some(copy) = copied_true(ctx, "copied-true") else {
        a.not_applicable = Some("cannot copy /bin/true into TMPDIR".into());
        return a;
    };
    spawn(&mut a, "exec a copy of /bin/true in TMPDIR", &copy, &[]);
    a.target(copy.display().to_string())
}

fn exec_ld_so(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let Some(copy) = copied_true(ctx, "copied-true-ldso") else {
        a.not_applicable = Some("cannot copy /bin/true into TMPDIR".into());
        return a;
    };
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-x86-64.so.2"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(loader) = loader else {
        a.not_applicable = Some("no x86-64 dynamic loader found".into());
        return a;
    };
    let copy_s = copy.display().to_string();
    spawn(&mut a, "ld.so <copy in TMPDIR>", loader, &[&copy_s]);
    a.target(copy_s)
}

fn exec_proc_fd(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let Some(copy) = copied_true(ctx, "copied-true-fd") else {
        a.not_applicable = Some("cannot copy /bin/true into TMPDIR".into());
        return a;
    };
    match open(&copy, libc::O_RDONLY) {
        Ok(fd) => {
            // Keep the fd across exec for the /proc path variant (not CLOEXEC).
            // SAFETY: clears FD_CLOEXEC on our own fd.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
            let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            spawn(&mut a, "exec /proc/self/fd/N of the copy", &via, &[]);
            let r = in_child(|| {
                let argv = [c"x".as_ptr(), std::ptr::null()];
                let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                // SAFETY: execveat with AT_EMPTY_PATH on our fd; argv and envp are
                // NULL-terminated arrays of live C strings.
                unsafe {
                    libc::syscall(
                        libc::SYS_execveat,
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    )
                };
                100 + errno()
            });
            match r {
                Ok(0) => a.win("execveat(fd, \"\", AT_EMPTY_PATH): ran"),
                Ok(code) if code > 100 => a.step("execveat(AT_EMPTY_PATH)", Err(code - 100)),
                other => a.note(format!("execveat child: {other:?}")),
            }
        }
        Err(e) => a.note(format!("open the copy: {}", errno_name(e))),
    }
    a.target(copy.display().to_string())
}

fn exec_memfd(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let Ok(bytes) = std::fs::read("/bin/true") else {
        a.not_applicable = Some("cannot read /bin/true".into());
        return a;
    };
    // SAFETY: memfd_create reads a C string alive for the call.
    let fd = unsafe { libc::memfd_create(c"agentbox-selftest".as_ptr(), 0) };
    if fd < 0 {
        a.step("memfd_create", Err(errno()));
        return a;
    }
    // SAFETY: the fd the kernel just returned.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    if f.write_all(&bytes).is_err() {
        a.note("write to the memfd failed");
        return a;
    }
    let via = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    spawn(&mut a, "fileless exec of a memfd", &via, &[]);
    // The kernel names a memfd `/memfd:NAME` (d_path), which is what an LSM event carries.
    a.tried.push("memfd:agentbox-selftest".into());
    a.target("/memfd:agentbox-selftest")
}

// ---------------------------------------------------------------------------------------------
// Network

fn connect_tcp(a: &mut Attempt, addr: std::net::SocketAddr) {
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
        Ok(mut s) => {
            let _ = s.write_all(b"agentbox-selftest");
            a.win(format!("connect {addr}: connected"));
        }
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::ETIMEDOUT);
            if errno == libc::EACCES || errno == libc::EPERM {
                a.step(&format!("connect {addr}"), Err(errno));
            } else {
                // Refused or unreachable by the network means a packet may have left: only a
                // local denial counts as held.
                a.win(format!(
                    "connect {addr}: {} (not denied locally)",
                    errno_name(errno)
                ));
            }
        }
    }
}

fn tcp_loopback_port(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ctx.tcp_port));
    connect_tcp(&mut a, addr);
    a.target(format!("127.0.0.1:{}", ctx.tcp_port))
}

fn udp_sendto(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        a.step("socket(AF_INET, SOCK_DGRAM)", Err(errno()));
        return a.target("socket");
    }
    // SAFETY: the fd the kernel just returned.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sock = std::net::UdpSocket::from(fd);
    let r = sock.send_to(b"agentbox-selftest", ("127.0.0.1", ctx.udp_port));
    match r {
        Ok(n) => a.win(format!("sendto 127.0.0.1:{}: {n} bytes sent", ctx.udp_port)),
        Err(e) => a.step(
            &format!("sendto 127.0.0.1:{}", ctx.udp_port),
            Err(e.raw_os_error().unwrap_or(0)),
        ),
    }
    a.target(format!("127.0.0.1:{}", ctx.udp_port))
}

fn ipv6_connect(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let port = ctx.tcp6_port.unwrap_or(ctx.tcp_port);
    let addr = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    connect_tcp(&mut a, addr);
    // IPv4-mapped IPv6 to the IPv4 listener.
    let mapped =
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped(), ctx.tcp_port));
    connect_tcp(&mut a, mapped);
    a.target(format!("::1:{port}"))
}

fn metadata_ipv4(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    connect_tcp(
        &mut a,
        std::net::SocketAddr::from(([169, 254, 169, 254], 80)),
    );
    a.target("169.254.169.254:80")
}

fn metadata_ipv6(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let addr: std::net::Ipv6Addr = "fd00:ec2::254"
        .parse()
        .unwrap_or(std::net::Ipv6Addr::LOCALHOST);
    connect_tcp(&mut a, std::net::SocketAddr::from((addr, 80)));
    a.target("fd00:ec2::254:80")
}

fn socket_attempt(a: &mut Attempt, what: &str, domain: i32, ty: i32, proto: i32) {
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd >= 0 {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        a.win(format!("{what}: created"));
    } else {
        let e = errno();
        if e == libc::EPERM {
            a.step(what, Err(e));
        } else {
            // EAFNOSUPPORT & co: the kernel looked at it, the filter did not stop it.
            a.win(format!("{what}: {} (past the filter)", errno_name(e)));
        }
    }
}

/// A TCP connection made by sendto(MSG_FASTOPEN): the SYN leaves without connect(2), so a
/// connect hook alone never sees it.
fn tcp_fastopen(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        a.step("socket(AF_INET, SOCK_STREAM)", Err(errno()));
        return a.target("sendto");
    }
    // SAFETY: the fd the kernel just returned.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: ctx.tcp_port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let data = b"agentbox-selftest";
    // SAFETY: `data` and `addr` are live for the call, with the lengths passed.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_FASTOPEN,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    a.step(
        &format!("sendto(MSG_FASTOPEN) 127.0.0.1:{}", ctx.tcp_port),
        if r < 0 { Err(errno()) } else { Ok(r as i64) },
    );
    a.target("sendto")
}

/// IP protocols other than TCP and UDP on stream and datagram sockets, which a TCP-only
/// filter (Landlock's) does not govern: MPTCP, SCTP (stream), UDP-Lite, ICMP echo.
fn ip_protocol_variants(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    for (what, ty, proto) in [
        (
            "socket(AF_INET, SOCK_STREAM, MPTCP)",
            libc::SOCK_STREAM,
            262,
        ),
        ("socket(AF_INET, SOCK_STREAM, SCTP)", libc::SOCK_STREAM, 132),
        (
            "socket(AF_INET, SOCK_DGRAM, UDPLITE)",
            libc::SOCK_DGRAM,
            136,
        ),
        ("socket(AF_INET, SOCK_DGRAM, ICMP)", libc::SOCK_DGRAM, 1),
    ] {
        socket_attempt(&mut a, what, libc::AF_INET, ty, proto);
    }
    a.target("socket")
}

fn raw_socket(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    socket_attempt(
        &mut a,
        "socket(AF_INET, SOCK_RAW, ICMP)",
        libc::AF_INET,
        libc::SOCK_RAW,
        1,
    );
    socket_attempt(
        &mut a,
        "socket(AF_INET6, SOCK_RAW, ICMPV6)",
        libc::AF_INET6,
        libc::SOCK_RAW,
        58,
    );
    a.target("socket")
}

fn packet_socket(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    socket_attempt(
        &mut a,
        "socket(AF_PACKET, SOCK_RAW)",
        libc::AF_PACKET,
        libc::SOCK_RAW,
        0x0300,
    );
    socket_attempt(
        &mut a,
        "socket(AF_INET, SOCK_PACKET)",
        libc::AF_INET,
        10,
        0x0300,
    );
    a.target("socket")
}

fn netlink_socket(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // NETLINK_SOCK_DIAG (4) and NETLINK_AUDIT (9): never needed by agents.
    socket_attempt(
        &mut a,
        "socket(AF_NETLINK, NETLINK_SOCK_DIAG)",
        libc::AF_NETLINK,
        libc::SOCK_RAW,
        4,
    );
    socket_attempt(
        &mut a,
        "socket(AF_NETLINK, NETLINK_AUDIT)",
        libc::AF_NETLINK,
        libc::SOCK_RAW,
        9,
    );
    a.target("socket")
}

fn vsock_socket(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    socket_attempt(
        &mut a,
        "socket(AF_VSOCK, SOCK_STREAM)",
        libc::AF_VSOCK,
        libc::SOCK_STREAM,
        0,
    );
    a.target("socket")
}

fn unix_pathname_host(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    match std::os::unix::net::UnixStream::connect(&ctx.unix_path) {
        Ok(mut s) => {
            let _ = s.write_all(b"agentbox-selftest");
            a.win(format!("connect {}: connected", ctx.unix_path.display()));
        }
        Err(e) => a.step(
            &format!("connect {}", ctx.unix_path.display()),
            Err(e.raw_os_error().unwrap_or(0)),
        ),
    }
    a.target(ctx.unix_path.display().to_string())
}

/// Connects a stream socket to `path` (as given), recording the variant.
fn unix_connect(a: &mut Attempt, what: &str, path: &Path) {
    a.tried.push(path.display().to_string());
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(mut s) => {
            let _ = s.write_all(b"agentbox-selftest");
            a.win(format!("{what}: connected"));
        }
        Err(e) => a.step(what, Err(e.raw_os_error().unwrap_or(0))),
    }
}

/// A symlink in the writable workspace naming the host socket: a check of the path string
/// would see a workspace path.
fn unix_symlink_redirect(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let link = ctx.workspace.join("redirect.sock");
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink(&ctx.unix_path, &link) {
        a.not_applicable = Some(format!("symlink in the workspace: {e}"));
        return a;
    }
    unix_connect(
        &mut a,
        &format!("connect {} (-> host socket)", link.display()),
        &link,
    );
    let _ = std::fs::remove_file(&link);
    a.target(ctx.unix_path.display().to_string())
}

/// chdir next to the host socket and connect by its bare name.
fn unix_relative_path(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let (Some(dir), Some(name)) = (ctx.unix_path.parent(), ctx.unix_path.file_name()) else {
        a.not_applicable = Some("no socket directory".into());
        return a;
    };
    if let Err(e) = std::env::set_current_dir(dir) {
        a.step(
            &format!("chdir {}", dir.display()),
            Err(e.raw_os_error().unwrap_or(0)),
        );
        return a.target(ctx.unix_path.display().to_string());
    }
    unix_connect(
        &mut a,
        &format!("connect {} (relative)", Path::new(name).display()),
        Path::new(name),
    );
    let _ = std::env::set_current_dir(&ctx.workspace);
    a.target(ctx.unix_path.display().to_string())
}

/// An O_PATH descriptor of the host socket (Landlock does not check O_PATH), then connect
/// through its /proc magic link.
fn unix_proc_fd_alias(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&ctx.unix_path)
    {
        Ok(f) => f,
        Err(e) => {
            a.step(
                &format!("open(O_PATH) {}", ctx.unix_path.display()),
                Err(e.raw_os_error().unwrap_or(0)),
            );
            return a.target(ctx.unix_path.display().to_string());
        }
    };
    let alias = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    unix_connect(&mut a, &format!("connect {}", alias.display()), &alias);
    a.target(alias.display().to_string())
}

/// A datagram to a host socket path without connect(): sendto with the address.
fn unix_dgram_sendto(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let path = ctx.unix_path.with_extension("dgram");
    match std::os::unix::net::UnixDatagram::unbound() {
        Ok(sock) => match sock.send_to(b"agentbox-selftest", &path) {
            Ok(n) => a.win(format!("sendto {}: sent {n} bytes", path.display())),
            Err(e) => a.step(
                &format!("sendto {}", path.display()),
                Err(e.raw_os_error().unwrap_or(0)),
            ),
        },
        Err(e) => a.step(
            "socket(AF_UNIX, SOCK_DGRAM)",
            Err(e.raw_os_error().unwrap_or(0)),
        ),
    }
    a.target(path.display().to_string())
}

/// The same datagram through sendmsg(), whose address the filter cannot see in registers.
fn unix_dgram_sendmsg(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let path = ctx.unix_path.with_extension("dgram");
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        a.step("socket(AF_UNIX, SOCK_DGRAM)", Err(errno()));
        return a.target(path.display().to_string());
    }
    // SAFETY: the fd the kernel just returned.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid empty address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        a.not_applicable = Some("socket path too long for sockaddr_un".into());
        return a;
    }
    for (slot, b) in addr.sun_path.iter_mut().zip(bytes) {
        *slot = *b as libc::c_char;
    }
    let mut data = *b"agentbox-selftest";
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: msg and everything it points to live on this frame.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
    a.step(
        &format!("sendmsg {}", path.display()),
        if r < 0 { Err(errno()) } else { Ok(r as i64) },
    );
    a.target(path.display().to_string())
}

fn unix_abstract(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    use std::os::linux::net::SocketAddrExt;
    let addr =
        match std::os::unix::net::SocketAddr::from_abstract_name(ctx.abstract_name.as_bytes()) {
            Ok(addr) => addr,
            Err(e) => {
                a.not_applicable = Some(format!("abstract address: {e}"));
                return a;
            }
        };
    match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(mut s) => {
            let _ = s.write_all(b"agentbox-selftest");
            a.win(format!("connect @{}: connected", ctx.abstract_name));
        }
        Err(e) => a.step(
            &format!("connect @{}", ctx.abstract_name),
            Err(e.raw_os_error().unwrap_or(0)),
        ),
    }
    a.target(format!("@{}", ctx.abstract_name))
}

fn bind_listen(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    for addr in [
        std::net::SocketAddr::from(([127, 0, 0, 1], ctx.free_port)),
        std::net::SocketAddr::from(([0, 0, 0, 0], ctx.free_port)),
    ] {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => a.win(format!("bind+listen {addr}: listening")),
            Err(e) => a.step(&format!("bind {addr}"), Err(e.raw_os_error().unwrap_or(0))),
        }
    }
    a.target(format!("0.0.0.0:{}", ctx.free_port))
}

// ---------------------------------------------------------------------------------------------
// The pipeline itself

/// Denied opens of the secret (Landlock) in the flood.
pub const FLOOD_OPENS: u64 = 50_000;
/// Denied syscalls (seccomp, each one a logged event) in the flood.
pub const FLOOD_SYSCALLS: u64 = 5_000;

fn event_flood(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let c = cstr(&ctx.ssh_key);
    let mut opened = 0u64;
    for _ in 0..FLOOD_OPENS {
        // SAFETY: `c` is a valid C string alive for the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            opened += 1;
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
        }
    }
    let mut allowed = 0u64;
    for _ in 0..FLOOD_SYSCALLS {
        if sys_int(libc::SYS_keyctl, [0, (-3i64) as u64, 0, 0, 0, 0]).is_ok() {
            allowed += 1;
        }
    }
    a.counts.push(("opens".into(), FLOOD_OPENS));
    a.counts.push(("opens_allowed".into(), opened));
    a.counts.push(("syscalls".into(), FLOOD_SYSCALLS));
    a.counts.push(("syscalls_allowed".into(), allowed));
    a.note(format!(
        "{FLOOD_OPENS} opens of the secret ({opened} allowed), {FLOOD_SYSCALLS} keyctl calls \
         ({allowed} allowed)"
    ));
    if opened > 0 || allowed > 0 {
        a.succeeded = true;
    } else {
        a.errno = Some(libc::EACCES);
    }
    a.target(ctx.ssh_key.display().to_string())
}

/// A name with a newline, quotes, a backslash and an ANSI escape sequence.
pub const HOSTILE_NAME: &str = "evil\n\"name\\'\u{1b}[2J\u{1b}]0;pwned\u{7}";

fn hostile_names(ctx: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    // A denied create in HOME (not writable) and a denied exec in TMPDIR, both named
    // with the hostile string, then a seccomp denial from a process whose comm is hostile.
    let in_home = ctx.home.join(HOSTILE_NAME);
    create(&mut a, &in_home, b"x");
    if let Some(copy) = copied_true(ctx, HOSTILE_NAME) {
        spawn(&mut a, "exec a hostile-named copy", &copy, &[]);
    }
    let comm = CString::new("ev\n\"\u{1b}[2J").unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a C string (at most 16 bytes used) alive for the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0) };
    a.step(
        "unshare(CLONE_NEWUSER) with a hostile comm",
        sys_int(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        ),
    );
    a.target("unshare")
}

fn bpffs(_: &Ctx) -> Attempt {
    let mut a = Attempt::default();
    let r = open(Path::new("/sys/fs/bpf"), libc::O_RDONLY | libc::O_DIRECTORY).map(|_| 0);
    a.step("open /sys/fs/bpf", r);
    // BPF_OBJ_GET on a pinned path (whatever agentbox pins there).
    let path = c"/sys/fs/bpf/agentbox";
    let mut attr = [0u64; 3];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: the kernel reads `attr` (ours) and the C string it points to.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 7, attr.as_ptr(), 24u32) };
    if r >= 0 {
        // SAFETY: the fd the kernel just returned.
        drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
    }
    let r = if r < 0 { Err(errno()) } else { Ok(r) };
    match r {
        Err(libc::ENOENT) => a.win("bpf(BPF_OBJ_GET) reached the kernel (ENOENT)"),
        r => a.step("bpf(BPF_OBJ_GET, /sys/fs/bpf/agentbox)", r),
    }
    a.target("bpf")
}
