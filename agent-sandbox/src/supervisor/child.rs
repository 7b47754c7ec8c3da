//! Everything between fork and exec, in one fixed order.
//!
//! Runs in the sandbox's init (a clone of the supervisor, pid 1 of a new pid namespace) and in
//! the agent (forked by init). Nothing here allocates, takes a lock or returns into the
//! caller's code: the supervisor forks single-threaded, but these paths are kept
//! async-signal-safe anyway, and every failure is reported over the control socket and ends
//! the process with `_exit` (fail closed: the agent is never started half-confined).
//!
//! Init, in order:
//!  1. fds: init is a clone without exec, so it holds copies of everything the supervisor has
//!     open. Close the supervisor's ends of the control socket and the lifeline at once (or
//!     EOF could never signal the supervisor's death), and mark every other fd >= 3 CLOEXEC
//!     except the two init needs: the Landlock ruleset fd must survive until step 11, so the
//!     rest are really closed only after step 12;
//!  2. wait for "go": the supervisor writes uid/gid maps first when it made a user namespace
//!     (EOF here means the supervisor died);
//!  3. setsid(), so neither init nor the agent has a controlling terminal (TIOCSTI), unless
//!     the profile shares the tty;
//!  4. PR_SET_PDEATHSIG(SIGKILL), then poll the lifeline: its write end lives only in the
//!     supervisor, so EOF means the supervisor died before the prctl took effect;
//!  5. PR_SET_DUMPABLE(0): the agent runs as the same user and must not reach init through
//!     /proc/1/mem or ptrace (the agent becomes dumpable again at exec);
//!  6. PR_SET_NO_NEW_PRIVS: setuid binaries and file capabilities gain nothing; also what lets
//!     an unprivileged process apply Landlock and seccomp;
//!  7. environment: nothing to do here, the envp handed to execve was built in the parent;
//!  8. rlimits (the policy's, plus NPROC/AS fallbacks for the pids/memory caps);
//!  9. protect mounts, when the plan has any (init was cloned into a mount namespace of its
//!     own): every mount made private (MS_REC|MS_PRIVATE on "/", nothing propagates to the
//!     host), then each protected path bind-mounted onto itself and remounted read-only
//!     (layers/mounts.rs; paths and flags prepared in the parent). As root this happens before
//!     step 2 instead, while init is not yet tagged as sandboxed (BPF LSM refuses mounts to
//!     sandboxed tasks); unprivileged, it needs the id maps written before go. Before step 10, which drops
//!     the CAP_SYS_ADMIN this needs, and step 11, as Landlock forbids mount changes;
//! 10. capabilities: bounding set, securebits, ambient, then capset (layers/process);
//! 11. Landlock restrict_self (init is confined too; the agent inherits the domain); then,
//!     under systemd, bind the agent's sd_notify socket inside that domain (notify.rs);
//! 12. seccomp, LAST (it may deny syscalls the steps above need), then pass the listener fd to
//!     the supervisor, and close every fd init does not need (the audit log, ...);
//! 13. block SIGCHLD and the forwarded signals into a signalfd, become a child subreaper when
//!     there is no pid namespace, fork the agent, and run the init loop (init.rs).
//!
//! Agent, in order: close the fds only init needs, reset signal dispositions and mask, tell
//! the supervisor its pid (message credentials), wait until the supervisor has logged the
//! Launch record, execve; on failure report errno and exit
//! 127 (not found) or 126 (cannot execute).

use std::os::fd::{AsRawFd, RawFd};

use super::command::ExecSpec;
use super::proto::{self, Step};
use super::{init, signals};
use crate::layers::ChildSteps;

/// Exit code of init or agent when setup fails (the supervisor reports the step).
const SETUP_FAILED: i32 = 125;

/// v1 hierarchies a sandbox can have groups in (pids, memory), with room to spare.
pub(crate) const MAX_V1_GROUPS: usize = 4;

/// Everything the child side needs, prepared in the parent before fork.
pub(crate) struct ChildContext<'a> {
    /// Init's end of the control socket (CLOEXEC: the agent loses it at exec).
    pub ctl: RawFd,
    /// Read end of the lifeline pipe; EOF means the supervisor is gone.
    pub lifeline: RawFd,
    /// The supervisor's ends of the control socket and the lifeline: closed first thing.
    pub parent_ends: [RawFd; 2],
    pub new_session: bool,
    /// Init is pid 1 of its own pid namespace (false: subreaper fallback).
    pub pid_namespace: bool,
    /// Every layer's child-side artifact. Its Landlock plan is consumed by restrict_self:
    /// `steps` is the child's private copy of the parent's, never dropped here (init ends
    /// with _exit or exec), so reading it out once is sound.
    pub steps: &'a ChildSteps,
    /// Make the mounts before waiting for go (root: no id maps to wait for), i.e. before the
    /// supervisor tags init as sandboxed; BPF LSM refuses mounts to sandboxed tasks.
    pub mounts_before_go: bool,
    pub exec: &'a ExecSpec,
    /// The `tasks` files of the sandbox's v1 groups (CLOEXEC), which init joins right after
    /// go (`SandboxGroup::v1_tasks`); at most `MAX_V1_GROUPS`.
    pub v1_tasks: &'a [RawFd],
    /// sd_notify passthrough (notify.rs), when systemd gave agentbox a socket.
    pub notify: Option<NotifyInit<'a>>,
}

/// Init's half of the sd_notify passthrough.
pub(crate) struct NotifyInit<'a> {
    /// Init's end of the socketpair to the supervisor (SOCK_SEQPACKET, CLOEXEC).
    pub relay: RawFd,
    /// The abstract name to bind, without the leading NUL.
    pub name: &'a [u8],
    pub agent_ready: bool,
}

/// Binds the abstract datagram socket `name` with SO_PASSCRED (senders' pids checked in
/// init.rs). No allocation.
fn bind_notify(name: &[u8]) -> Result<RawFd, i32> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(proto::errno());
    }
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(proto::errno());
    }
    // SAFETY: sockaddr_un is plain data; all zeroes is valid (and gives the leading NUL).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() + 1 > addr.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    for (slot, &b) in addr.sun_path[1..].iter_mut().zip(name) {
        *slot = b as libc::c_char;
    }
    let len = (std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len()) as u32;
    // SAFETY: `addr` is a live sockaddr_un and `len` within it.
    let r = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    if r < 0 {
        return Err(proto::errno());
    }
    Ok(fd)
}

/// Reports `step` failed with `errno` and exits. Never returns.
fn fail(ctl: RawFd, step: Step, errno: i32) -> ! {
    let _ = proto::send(ctl, proto::TAG_SETUP_FAILED, step as u8, errno);
    // SAFETY: _exit ends the process without running the parent's atexit handlers or
    // flushing its stdio buffers, which belong to the supervisor.
    unsafe { libc::_exit(SETUP_FAILED) }
}

fn check(ctl: RawFd, step: Step, r: libc::c_int) {
    if r < 0 {
        fail(ctl, step, proto::errno());
    }
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            op,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    }
}

/// Closes (or with `cloexec`, marks close-on-exec) every fd >= 3 except `keep`. Uses
/// close_range (Linux 5.9+; CLOEXEC since 5.11) over the gaps, falling back to per-fd calls up
/// to the fd limit.
fn close_fds_except(keep: &mut [RawFd], cloexec: bool) -> Result<(), i32> {
    keep.sort_unstable();
    let mut next: u32 = 3;
    for &fd in keep.iter() {
        if fd < 3 {
            continue;
        }
        let fd = fd as u32;
        if fd > next {
            close_range(next, fd - 1, cloexec)?;
        }
        next = fd + 1;
    }
    close_range(next, u32::MAX, cloexec)
}

fn close_range(first: u32, last: u32, cloexec: bool) -> Result<(), i32> {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC as libc::c_int
    } else {
        0
    };
    // SAFETY: close_range only closes (or flags) descriptors; closed ones are not used again.
    if unsafe { libc::close_range(first, last, flags) } == 0 {
        return Ok(());
    }
    let err = proto::errno();
    if err != libc::ENOSYS && err != libc::EINVAL {
        return Err(err);
    }
    // SAFETY: sysconf has no memory side effects.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max < 0 { 65536 } else { max as u32 };
    for fd in first..=last.min(max) {
        // SAFETY: closing or flagging a descriptor we will not use again (or that is not
        // open: EBADF is fine).
        unsafe {
            if cloexec {
                libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                libc::close(fd as RawFd);
            }
        }
    }
    Ok(())
}

/// Init's entry point, right after clone. Never returns.
pub(crate) fn run_init(ctx: ChildContext<'_>) -> ! {
    let ctl = ctx.ctl;

    // 1. fds.
    for fd in ctx.parent_ends {
        // SAFETY: our copies of the supervisor's ends; never used in this process.
        unsafe { libc::close(fd) };
    }
    let relay = ctx.notify.as_ref().map_or(-1, |n| n.relay);
    let mut keep = [-1; 3 + MAX_V1_GROUPS];
    keep[..3].copy_from_slice(&[ctx.ctl, ctx.lifeline, relay]);
    for (slot, &fd) in keep[3..].iter_mut().zip(ctx.v1_tasks) {
        *slot = fd;
    }
    if let Err(e) = close_fds_except(&mut keep, true) {
        fail(ctl, Step::CloseFds, e);
    }
    // (9, early: see `mounts_before_go`.)
    let steps = ctx.steps;
    if ctx.mounts_before_go && !steps.mounts.is_empty() {
        if let Err(e) = steps.mounts.apply() {
            fail(ctl, Step::ProtectMounts, e);
        }
        if let Err(e) = proto::send(ctl, proto::TAG_MOUNTED, 0, 0) {
            fail(ctl, Step::ProtectMounts, e);
        }
    }
    // 2. go.
    if proto::recv_tag(ctl) != Some(proto::TAG_GO) {
        // SAFETY: see `fail`; the supervisor is gone, nobody to report to.
        unsafe { libc::_exit(SETUP_FAILED) }
    }
    // 2b. the v1 groups: "0" is this (single) thread, which spares the global lock a
    // move by pid takes (layers/cgroup.rs, `v1_tasks`).
    for &fd in ctx.v1_tasks {
        // SAFETY: writes two bytes from a static string to our own open fd.
        let r = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if r != 1 {
            fail(
                ctl,
                Step::JoinCgroups,
                if r < 0 { proto::errno() } else { libc::EIO },
            );
        }
        // SAFETY: our fd, not used again.
        unsafe { libc::close(fd) };
    }
    // 3. session.
    if ctx.new_session {
        // SAFETY: setsid has no memory side effects.
        check(ctl, Step::NewSession, unsafe { libc::setsid() });
    }
    // 4. parent death, then close the race with the lifeline. Without a pid namespace the
    // kernel kills nothing when init dies, so init must live to kill its group: the
    // lifeline's EOF alone tells it (init.rs `teardown`).
    if ctx.pid_namespace {
        check(
            ctl,
            Step::ParentDeathSignal,
            prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as _),
        );
    }
    let mut pfd = libc::pollfd {
        fd: ctx.lifeline,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    if r != 0 {
        // Readable (EOF: the supervisor died) or poll failed: either way, stop here.
        // SAFETY: see `fail`.
        unsafe { libc::_exit(SETUP_FAILED) }
    }
    // 5. not dumpable.
    check(ctl, Step::NotDumpable, prctl(libc::PR_SET_DUMPABLE, 0));
    // 6. no_new_privs.
    check(ctl, Step::NoNewPrivs, prctl(libc::PR_SET_NO_NEW_PRIVS, 1));
    // 8. rlimits.
    if let Err(e) = steps.process.apply_rlimits() {
        fail(ctl, Step::Rlimits, e);
    }
    // 9. protect mounts (unless made before go).
    if !ctx.mounts_before_go && !steps.mounts.is_empty() {
        if let Err(e) = steps.mounts.apply() {
            fail(ctl, Step::ProtectMounts, e);
        }
    }
    // 10. capabilities.
    if let Err(e) = steps.process.apply_capabilities() {
        fail(ctl, Step::Capabilities, e);
    }
    // 11. Landlock.
    // SAFETY: see `ChildContext::steps`: this process's copy of the plan, read out once and
    // never dropped or used again here.
    let landlock = unsafe { std::ptr::read(&steps.landlock) };
    if let Err(e) = landlock.restrict_self() {
        fail(ctl, Step::Landlock, e.raw_os_error().unwrap_or(libc::EPERM));
    }
    // The agent's sd_notify socket, created inside the Landlock domain (which scopes
    // abstract sockets by their creator) and before seccomp.
    let notify = match &ctx.notify {
        Some(n) => match bind_notify(n.name) {
            Ok(fd) => Some(init::Notify {
                socket: fd,
                relay: n.relay,
                agent_ready: n.agent_ready,
            }),
            Err(e) => fail(ctl, Step::NotifySocket, e),
        },
        None => None,
    };
    let notify_socket = notify.as_ref().map_or(-1, |n| n.socket);
    // 12. seccomp, last; hand the listener to the supervisor and drop our copy.
    let listener = match steps.seccomp.install() {
        Ok(fd) => fd,
        Err(e) => fail(ctl, Step::Seccomp, e.raw_os_error().unwrap_or(libc::EPERM)),
    };
    // The supervisor takes the listener with pidfd_getfd rather than over SCM_RIGHTS: where
    // the filter sends every sendmsg() to the supervisor (unprivileged), a sendmsg made now
    // would wait for an answer only the listener it carries can give. pidfd_getfd needs init
    // dumpable for that moment; no agent code exists yet.
    check(ctl, Step::SendListener, prctl(libc::PR_SET_DUMPABLE, 1));
    if let Err(e) = proto::send(ctl, proto::TAG_LISTENER, 0, listener.as_raw_fd()) {
        fail(ctl, Step::SendListener, e);
    }
    if proto::recv_tag(ctl) != Some(proto::TAG_GO) {
        fail(ctl, Step::SendListener, libc::ECONNRESET);
    }
    check(ctl, Step::NotDumpable, prctl(libc::PR_SET_DUMPABLE, 0));
    drop(listener);
    if let Err(e) = close_fds_except(&mut [ctx.ctl, ctx.lifeline, relay, notify_socket], false) {
        fail(ctl, Step::CloseFds, e);
    }
    // 13. signals, subreaper, agent.
    let set = signals::forwarded_set(true);
    if let Err(e) = signals::block(&set) {
        fail(ctl, Step::BlockSignals, e);
    }
    // SAFETY: `set` is a valid sigset_t; -1 asks for a new signalfd.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    check(ctl, Step::BlockSignals, sfd);
    if !ctx.pid_namespace {
        check(
            ctl,
            Step::BlockSignals,
            prctl(libc::PR_SET_CHILD_SUBREAPER, 1),
        );
    }
    // SAFETY: init is single-threaded; the child only runs the async-signal-safe code below.
    let agent = unsafe { libc::fork() };
    if agent < 0 {
        fail(ctl, Step::ForkAgent, proto::errno());
    }
    if agent == 0 {
        run_agent(ctl, &[ctx.lifeline, sfd, relay, notify_socket], ctx.exec);
    }
    init::supervise(init::InitState {
        ctl,
        lifeline: ctx.lifeline,
        signalfd: sfd,
        agent,
        pid_namespace: ctx.pid_namespace,
        new_session: ctx.new_session,
        notify,
    })
}

/// The agent's side, between init's fork and exec. Never returns.
fn run_agent(ctl: RawFd, close: &[RawFd], exec: &ExecSpec) -> ! {
    for &fd in close.iter().filter(|&&fd| fd >= 0) {
        // SAFETY: fds only init uses; the agent never touches them again.
        unsafe { libc::close(fd) };
    }
    if let Err(e) = signals::reset_for_exec() {
        fail(ctl, Step::ResetSignals, e);
    }
    if let Err(e) = proto::send(ctl, proto::TAG_STARTED, 0, 0) {
        fail(ctl, Step::Exec, e);
    }
    // The supervisor answers once the Launch record is in the log: no agent code runs before
    // the log says what confines it (a SIGKILLed supervisor never leaves an empty log behind
    // a process that already ran).
    if proto::recv_tag(ctl) != Some(proto::TAG_GO) {
        // SAFETY: see `fail`; the supervisor is gone, nobody to report to.
        unsafe { libc::_exit(SETUP_FAILED) }
    }
    let errno = exec.exec();
    let _ = proto::send(ctl, proto::TAG_EXEC_FAILED, Step::Exec as u8, errno);
    let code = if errno == libc::ENOENT || errno == libc::ENOTDIR {
        127
    } else {
        126
    };
    // SAFETY: see `fail`.
    unsafe { libc::_exit(code) }
}
