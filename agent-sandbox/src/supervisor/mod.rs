//! Supervisor: fork, place, confine and exec the agent; forward signals; read events; reap.
//!
//! Process structure (robust tree teardown without cgroups):
//!
//! ```text
//! agentbox (supervisor) ──clone(NEWPID[|NEWUSER][|NEWNS])──▶ init (pid 1, confined) ──fork──▶ agent (exec)
//! ```
//!
//! When pid 1 of a pid namespace dies, the kernel kills everything in it. Init dies with the
//! supervisor (PR_SET_PDEATHSIG, lifeline pipe), so SIGKILLing agentbox takes the whole agent
//! tree down. Init forwards signals, reaps orphans and reports the agent's wait status over
//! the control socket (proto.rs). The parent side runs a tokio current_thread runtime created
//! after the fork: signal forwarding, the seccomp notifier, and the control socket.
//!
//! Without namespaces (an unprivileged user where user namespaces are disabled), init is a
//! child subreaper in its own session instead: weaker, reported by `Sandbox::isolation`.
//!
//! As root, init is also moved into the sandbox's cgroups before it is released
//! (`layers::SandboxGroup`, docs/cgroups.md): limits, the eBPF layers' rules, and a final
//! `cgroup.kill` of anything left. The layers' event sources (the seccomp notifier, the
//! kernel rings) are drained by one loop here without knowing what is inside them.

mod child;
mod command;
mod init;
mod notify;
mod proto;
mod relay;
mod signals;
pub(crate) mod tmpdir;
mod tty;

pub use tmpdir::PrivateTmp;

pub use notify::{sd_notify, NotifyRelay};
pub use relay::{GatedWriter, OutputRelay};

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::audit::{AuditLog, Event};
use crate::layers::{EventSource, SandboxGroup};
use crate::plan::Plan;

/// What the caller asks of one launch.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Program and arguments; the program is searched in the agent's PATH.
    pub command: Vec<String>,
    /// Recorded in the Launch event; the caller already ran `Plan::check`.
    pub best_effort: bool,
    /// Pass the agent's sd_notify messages on to systemd (notify.rs).
    pub notify: Option<NotifyRelay>,
}

/// How the agent's process tree is contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Init is pid 1 of a new pid namespace: the whole tree dies with it.
    PidNamespace { user_namespace: bool },
    /// No pid namespace (why in `reason`): init is a subreaper in its own session and kills
    /// its process group at the end; descendants that leave the group can survive.
    Subreaper { reason: String },
}

/// How the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, when the agent exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// errno of a failed execve (the agent never ran).
    pub exec_error: Option<i32>,
    /// One-line summary from the audit log (`agentbox: exit 0 after 1.2s — ...`).
    pub summary: String,
}

impl Outcome {
    /// The agent's own code; 128+N for signal N; 127 not found, 126 cannot execute.
    pub fn exit_code(&self) -> u8 {
        if let Some(errno) = self.exec_error {
            return if errno == libc::ENOENT || errno == libc::ENOTDIR {
                127
            } else {
                126
            };
        }
        match (self.code, self.signal) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => (128 + sig) as u8,
            (None, None) => 125,
        }
    }
}

/// A running sandbox: the agent has been started (or its exec is in flight).
pub struct Sandbox {
    init: libc::pid_t,
    agent_pid: i32,
    ctl: OwnedFd,
    /// The layers' event sources, drained by `wait`.
    sources: Vec<Box<dyn EventSource>>,
    /// Write end of the lifeline; init sees EOF when this process dies.
    _lifeline: OwnedFd,
    audit: AuditLog,
    started: Instant,
    isolation: Isolation,
    saved_mask: libc::sigset_t,
    /// The sandbox's cgroups and eBPF registration (root only); torn down after the agent.
    group: Option<SandboxGroup>,
    /// The user's terminal settings at launch, restored after the agent.
    terminal: tty::TerminalState,
    /// The supervisor's end of the sd_notify relay, and systemd's socket.
    notify: Option<(OwnedFd, String)>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("init", &self.init)
            .field("agent_pid", &self.agent_pid)
            .field("isolation", &self.isolation)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Kills and reaps init; used on every error path after clone.
struct InitGuard(libc::pid_t);

impl InitGuard {
    fn disarm(self) -> libc::pid_t {
        let pid = self.0;
        std::mem::forget(self);
        pid
    }
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        kill_and_reap(self.0);
    }
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our unreaped child, so it cannot name another process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = wait_status(pid);
}

/// A copy of process `pid`'s fd `fd` (close-on-exec).
fn take_fd(pid: libc::pid_t, fd: RawFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; we own it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes no pointers.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_getfd installed a new fd for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

fn wait_status(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn decode_status(status: i32) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

fn errno_text(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    // "No such file or directory (os error 2)" → "No such file or directory"
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

/// Fork is only sound with one thread: refuse otherwise.
///
/// A thread joined just before (the plan's Landlock threads, the syscall observer's
/// attachment, joined when the sandbox registers) can still be counted for a moment:
/// pthread_join returns once the kernel clears the thread's tid, before the task is
/// released. So a count above one is looked at again for up to 50 ms before it is refused.
fn ensure_single_threaded() -> anyhow::Result<()> {
    let count = || -> anyhow::Result<u32> {
        let status =
            std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .context("no Threads: line in /proc/self/status")
    };
    let deadline = Instant::now() + Duration::from_millis(50);
    loop {
        let threads = count()?;
        if threads == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("internal error: the supervisor has {threads} threads at fork time (must be 1)");
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// clone(2) with fork semantics (no new stack: the child continues on a copy of ours),
/// started in the cgroup2 group `cgroup` where the kernel can (clone3's CLONE_INTO_CGROUP,
/// 5.7+); the bool says whether it was. Hand-written: std and nix offer fork, or clone with
/// a callback on a separate stack, but not "fork into new namespaces", nor clone3.
fn clone_fork(
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<(libc::pid_t, bool)> {
    if let Some(cgroup) = cgroup {
        /// `struct clone_args` (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        let args = CloneArgs {
            flags: flags as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with no stack behaves like fork (same conditions as below); `args`
        // is a valid clone_args of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                size_of::<CloneArgs>(),
            )
        };
        if r >= 0 {
            return Ok((r as libc::pid_t, true));
        }
        let err = io::Error::last_os_error();
        // Older kernels (no clone3, no CLONE_INTO_CGROUP): clone, then move.
        if !matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
        ) {
            return Err(err);
        }
    }
    // SAFETY: raw clone with a NULL stack behaves like fork; the caller is single-threaded
    // (checked) and the child only runs async-signal-safe code before _exit or exec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r as libc::pid_t, false))
}

fn write_id_maps(pid: libc::pid_t) -> anyhow::Result<()> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let write = |file: &str, content: String| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, content).with_context(|| format!("writing {path}"))
    };
    write("setgroups", "deny".to_string())?;
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

impl Sandbox {
    /// Starts the agent under `plan`. On return the Launch event is the log's first record
    /// and the agent has reached its execve. The caller must not have spawned threads.
    pub fn launch(plan: Plan, mut audit: AuditLog, opts: LaunchOptions) -> anyhow::Result<Sandbox> {
        let policy = &plan.policy;
        let steps = &plan.child;
        let notify_name = notify::socket_name(audit.sandbox());
        let mut env = steps.process.env.clone();
        if opts.notify.is_some() {
            env.push(("NOTIFY_SOCKET".into(), format!("@{notify_name}").into()));
        }
        let exec = command::ExecSpec::new(&opts.command, env)?;
        let notify_pair = match &opts.notify {
            Some(_) => Some(
                socket::socketpair(
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    None,
                    SockFlag::SOCK_CLOEXEC,
                )
                .context("sd_notify socketpair")?,
            ),
            None => None,
        };
        let guarantees = plan.guarantee_states();

        let (sup_end, init_end) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("control socketpair")?;
        socket::setsockopt(&sup_end, sockopt::PassCred, &true).context("SO_PASSCRED")?;
        let (lifeline_read, lifeline_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("lifeline pipe")?;

        // Created before init exists: the network rules are in force before anything enters
        // the group, and init is moved in (below) before it confines itself and forks.
        let group = SandboxGroup::create(&plan.cgroup, plan.ebpf.as_ref(), audit.sandbox())
            .context("creating the sandbox cgroup")?;
        tracing::debug!(?group, "sandbox cgroup created");

        let v1_tasks = match &group {
            Some(group) => group.v1_tasks()?,
            None => Vec::new(),
        };
        if v1_tasks.len() > child::MAX_V1_GROUPS {
            bail!(
                "the sandbox has {} v1 cgroups, more than init can join",
                v1_tasks.len()
            );
        }
        let v1_fds: Vec<RawFd> = v1_tasks.iter().map(AsRawFd::as_raw_fd).collect();
        ensure_single_threaded()?;
        let terminal = tty::TerminalState::save();
        // Blocked until the tokio handlers exist (see signals.rs); init inherits the block.
        let saved_mask = signals::block(&signals::forwarded_set(false))
            .map_err(io::Error::from_raw_os_error)
            .context("blocking signals")?;
        let restore = |e: anyhow::Error| {
            let _ = signals::set_mask(&saved_mask);
            e
        };

        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        // The network namespace carries a guarantee (plan.rs): never started without it.
        let net_flags = if plan.namespaces.net {
            libc::CLONE_NEWNET
        } else {
            0
        };
        // A mount namespace only when there is something to mount: the protect globs' read-only
        // bind mounts (Landlock left them out, so they are never started without it).
        let mount_flags = if plan.namespaces.mount {
            libc::CLONE_NEWNS
        } else {
            0
        };
        let ipc_flags = if plan.namespaces.ipc {
            libc::CLONE_NEWIPC
        } else {
            0
        };
        let ns_flags = libc::CLONE_NEWPID
            | net_flags
            | mount_flags
            | ipc_flags
            | if root { 0 } else { libc::CLONE_NEWUSER };
        // Init starts in its cgroup2 group, unless it must mount first as root under BPF LSM
        // (which would judge it by that group and refuse the mounts: `mounts_before_go`).
        let lsm_mounts =
            root && plan.namespaces.mount && plan.ebpf.as_ref().is_some_and(|e| e.has_lsm());
        let cgroup = group
            .as_ref()
            .filter(|_| !lsm_mounts)
            .and_then(SandboxGroup::v2_fd);
        let cgroup = cgroup.as_ref().map(AsFd::as_fd);
        let (pid, in_v2, isolation) = match clone_fork(ns_flags, cgroup) {
            Ok((pid, in_v2)) => (
                pid,
                in_v2,
                Isolation::PidNamespace {
                    user_namespace: !root,
                },
            ),
            Err(e) if mount_flags != 0 => {
                return Err(restore(anyhow!(
                    "cannot create the sandbox's mount namespace (its filesystem view and \
                     protect binds live in it): {e}"
                )))
            }
            Err(e) => {
                let reason = format!("cannot create a pid namespace: {e}");
                match clone_fork(net_flags, cgroup) {
                    Ok((pid, in_v2)) => (pid, in_v2, Isolation::Subreaper { reason }),
                    Err(e) if net_flags != 0 => {
                        return Err(restore(anyhow!(
                            "cannot create the sandbox's network namespace (it scopes abstract \
                             UNIX sockets where Landlock cannot): {e}"
                        )))
                    }
                    Err(e) => return Err(restore(anyhow!("fork: {e}"))),
                }
            }
        };
        if pid == 0 {
            let ctx = child::ChildContext {
                ctl: init_end.as_raw_fd(),
                lifeline: lifeline_read.as_raw_fd(),
                parent_ends: [sup_end.as_raw_fd(), lifeline_write.as_raw_fd()],
                new_session: !policy.process.share_tty,
                pid_namespace: matches!(isolation, Isolation::PidNamespace { .. }),
                // As root there is no user namespace to wait for: mount before the supervisor
                // tags init as sandboxed, because BPF LSM refuses mounts to sandboxed tasks.
                mounts_before_go: root,
                steps,
                exec: &exec,
                v1_tasks: &v1_fds,
                notify: match (&opts.notify, &notify_pair) {
                    (Some(n), Some((_, init_end))) => Some(child::NotifyInit {
                        relay: init_end.as_raw_fd(),
                        name: notify_name.as_bytes(),
                        agent_ready: n.agent_ready,
                    }),
                    _ => None,
                },
            };
            child::run_init(ctx);
        }
        let guard = InitGuard(pid);
        drop(init_end);
        drop(v1_tasks);
        let notify_end = notify_pair.map(|(ours, _init)| ours);
        drop(lifeline_read);
        let started = Instant::now();

        let setup = (|| -> anyhow::Result<(OwnedFd, i32)> {
            if isolation
                == (Isolation::PidNamespace {
                    user_namespace: true,
                })
            {
                write_id_maps(pid).context("setting up the user namespace")?;
            }
            if root && plan.namespaces.mount {
                // Init mounts before it is tagged (child.rs, `mounts_before_go`): wait for it,
                // since tagging first would have BPF LSM refuse the mounts.
                match proto::recv(sup_end.as_raw_fd()).context("control socket")? {
                    Some(m) if m.tag == proto::TAG_MOUNTED => {}
                    Some(m) if m.tag == proto::TAG_SETUP_FAILED => bail!(
                        "sandbox setup failed while building the filesystem view (layers/mounts.rs): {}",
                        errno_text(m.value)
                    ),
                    Some(m) => bail!("unexpected control message {:#x} before go", m.tag),
                    None => bail!("sandbox init ended while making the protect mounts"),
                }
            }
            if let Some(group) = &group {
                group
                    .place(pid, in_v2)
                    .context("moving the sandbox init into its cgroup")?;
            }
            proto::send(sup_end.as_raw_fd(), proto::TAG_GO, 0, 0)
                .map_err(io::Error::from_raw_os_error)
                .context("starting init")?;
            let mut listener = None;
            loop {
                let msg = proto::recv(sup_end.as_raw_fd()).context("control socket")?;
                let Some(msg) = msg else {
                    let status = wait_status(pid).unwrap_or(0);
                    bail!("sandbox init ended during setup (wait status {status:#x})");
                };
                match msg.tag {
                    proto::TAG_LISTENER => {
                        listener = Some(take_fd(pid, msg.value).context(
                            "taking the seccomp listener from the sandbox init (pidfd_getfd)",
                        )?);
                        proto::send(sup_end.as_raw_fd(), proto::TAG_GO, 0, 0)
                            .map_err(io::Error::from_raw_os_error)
                            .context("acknowledging the seccomp listener")?;
                    }
                    proto::TAG_STARTED => {
                        let listener = listener
                            .context("agent started before the seccomp listener arrived")?;
                        let agent = msg
                            .pid
                            .context("no sender credentials on the control socket")?;
                        return Ok((listener, agent));
                    }
                    proto::TAG_SETUP_FAILED => {
                        let step = proto::Step::from_u8(msg.step)
                            .map_or("an unknown step", |s| s.describe());
                        bail!(
                            "sandbox setup failed while {step}: {}",
                            errno_text(msg.value)
                        );
                    }
                    other => bail!("unexpected control message {other:#x} during setup"),
                }
            }
        })();
        let (listener, agent_pid) = setup.map_err(restore)?;
        tracing::debug!(elapsed = ?started.elapsed(), "init placed and confined");

        let sources = plan
            .event_sources(listener, group.as_ref())
            .map_err(restore)?;

        let launch = Event::Launch {
            profile: policy.name.clone(),
            policy_hash: crate::audit::policy_hash(policy),
            mode: policy.mode,
            best_effort: opts.best_effort,
            command: opts.command.clone(),
            pid: agent_pid,
            guarantees,
        };
        audit
            .append(launch)
            .context("writing the Launch event (the agent is stopped: no unaudited runs)")
            .map_err(restore)?;
        // Only now may the agent exec (child.rs waits for this second go).
        proto::send(sup_end.as_raw_fd(), proto::TAG_GO, 0, 0)
            .map_err(io::Error::from_raw_os_error)
            .context("releasing the agent")
            .map_err(restore)?;

        let init = guard.disarm();
        Ok(Sandbox {
            init,
            agent_pid,
            ctl: sup_end,
            sources,
            _lifeline: lifeline_write,
            audit,
            started,
            isolation,
            saved_mask,
            group,
            terminal,
            notify: notify_end.zip(opts.notify.map(|n| n.socket)),
        })
    }

    /// The agent's pid in agentbox's pid namespace.
    pub fn agent_pid(&self) -> i32 {
        self.agent_pid
    }

    /// Init's pid in agentbox's pid namespace.
    pub fn init_pid(&self) -> i32 {
        self.init
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Forwards signals and logs denials until the agent ends; writes the Exit event.
    pub fn wait(self) -> anyhow::Result<Outcome> {
        let Sandbox {
            init,
            ctl,
            mut sources,
            _lifeline,
            mut audit,
            started,
            saved_mask,
            group,
            terminal,
            notify,
            ..
        } = self;
        let guard = InitGuard(init);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let result = runtime.block_on(async {
            signals::spawn_forwarders(init).context("signal handlers")?;
            if let Some((relay, socket)) = &notify {
                let relay = relay.try_clone().context("sd_notify relay")?;
                tokio::spawn(notify::forward(relay, socket.clone()));
            }
            signals::set_mask(&saved_mask).context("unblocking signals")?;
            event_loop(&ctl, &mut sources, &mut audit).await
        });
        drop(runtime);
        // What the agent said right before it ended may not have been forwarded yet.
        if let Some((relay, socket)) = &notify {
            notify::drain(relay, socket);
        }
        let (status, exec_error) = result?;
        tracing::debug!(elapsed = ?started.elapsed(), "agent ended");

        // Init exits right after reporting; without a report, its own status says why.
        let init_status = wait_status(guard.disarm()).ok();
        // Whatever left init's reach (subreaper mode: a new session) dies with the group.
        // Only then are the kernel's books closed: no task of the sandbox can add events.
        if let Some(group) = &group {
            let left = group.kill_all(std::time::Duration::from_secs(5));
            match left {
                Ok(pids) if !pids.is_empty() => {
                    tracing::debug!(?pids, "killed processes left in the sandbox cgroup")
                }
                Ok(_) => {}
                Err(e) => audit
                    .append(Event::Anomaly {
                        detail: format!("sandbox cgroup did not empty: {e:#}"),
                    })
                    .map(drop)
                    .context("audit log")?,
            }
        }
        // No process of the sandbox is left to change the terminal again.
        if terminal.restore() {
            audit
                .append(Event::Anomaly {
                    detail: "the agent changed the terminal's settings (termios or window \
                             size); agentbox restored them"
                        .into(),
                })
                .context("audit log")?;
        }
        // No task of the sandbox is left to add events: close the books of every source.
        let mut closing = Vec::new();
        for source in &mut sources {
            source.drain(&mut closing)?;
            source.finish(&mut closing);
        }
        audit
            .append_batch(closing)
            .context("audit log write failed")?;
        // Before the group: the kernel source shares the eBPF registration, which must go
        // only after the cgroup is empty.
        drop(sources);
        if let Some(group) = group {
            if let Err(e) = group.teardown() {
                audit
                    .append(Event::Anomaly {
                        detail: format!("{e:#}"),
                    })
                    .context("audit log")?;
            }
        }
        let (code, signal) = match (status, init_status) {
            (Some(st), _) => decode_status(st),
            (None, Some(st)) => {
                let (c, s) = decode_status(st);
                audit
                    .append(Event::Anomaly {
                        detail: format!(
                            "sandbox init ended without reporting the agent's status (init: code {c:?}, signal {s:?})"
                        ),
                    })
                    .context("audit log")?;
                (None, s.or(Some(libc::SIGKILL)))
            }
            (None, None) => (None, Some(libc::SIGKILL)),
        };
        audit
            .append(Event::Exit {
                code,
                signal,
                denials: audit.denials(),
                duration_ms: started.elapsed().as_millis() as u64,
            })
            .context("writing the Exit event")?;
        Ok(Outcome {
            code,
            signal,
            exec_error,
            summary: audit.summary(),
        })
    }
}

/// Raw fd wrapper so tokio can watch a socket we keep owning elsewhere.
struct Watched(RawFd);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Runs until init reports the agent's status (or the control socket closes). Returns the raw
/// wait status and the errno of a failed exec.
async fn event_loop(
    ctl: &OwnedFd,
    sources: &mut [Box<dyn EventSource>],
    audit: &mut AuditLog,
) -> anyhow::Result<(Option<i32>, Option<i32>)> {
    nix::fcntl::fcntl(
        ctl,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .context("control socket")?;
    // SAFETY: `ctl` outlives `ctl_fd` (both live for this function; `ctl` is borrowed) and
    // nobody closes or replaces the fd meanwhile.
    let ctl_fd =
        unsafe { AsyncFd::register_with_interest(Watched(ctl.as_raw_fd()), Interest::READABLE)? };
    // One watcher per open source; `None` once a source closed (it is not polled again).
    let mut watched: Vec<Option<AsyncFd<Watched>>> = Vec::with_capacity(sources.len());
    for source in sources.iter() {
        // SAFETY: each source owns its fd and outlives this function (borrowed); the watcher
        // is dropped, at the latest, when this function returns.
        watched.push(Some(unsafe {
            AsyncFd::register_with_interest(Watched(source.fd()), Interest::READABLE)?
        }));
    }
    let mut exec_error = None;
    // Sources whose wakeups can be missed are also drained on a slow tick.
    let tick_every = sources.iter().filter_map(|s| s.tick()).min();
    let mut tick =
        tokio::time::interval(tick_every.unwrap_or(std::time::Duration::from_secs(3600)));

    loop {
        tokio::select! {
            ready = next_ready(&watched) => {
                let index = ready?;
                drain_source(sources, &mut watched, index, audit)?;
            }
            _ = tick.tick(), if tick_every.is_some() => {
                for index in 0..sources.len() {
                    if sources[index].tick().is_some() {
                        drain_source(sources, &mut watched, index, audit)?;
                    }
                }
            }
            guard = ctl_fd.readable() => {
                let mut guard = guard?;
                loop {
                    match proto::recv(ctl.as_raw_fd()) {
                        Ok(Some(msg)) => match msg.tag {
                            proto::TAG_EXEC_FAILED => exec_error = Some(msg.value),
                            proto::TAG_EXITED => {
                                drain_all(sources, &mut watched, audit)?;
                                return Ok((Some(msg.value), exec_error));
                            }
                            _ => {}
                        },
                        Ok(None) => {
                            drain_all(sources, &mut watched, audit)?;
                            return Ok((None, exec_error));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => return Err(e).context("control socket"),
                    }
                }
            }
        }
    }
}

/// The index of the first watched source that is readable. Its readiness is cleared before
/// the caller drains it: an event arriving after the drain's last check then raises a new
/// readiness instead of being missed.
async fn next_ready(watched: &[Option<AsyncFd<Watched>>]) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        for (index, fd) in watched.iter().enumerate() {
            let Some(fd) = fd else { continue };
            if let std::task::Poll::Ready(guard) = fd.poll_read_ready(cx) {
                guard?.clear_ready();
                return std::task::Poll::Ready(Ok(index));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Writes every event `sources[index]` has now into the audit log, in one write(2) (under a
/// flood this is what keeps up); stops watching a source that closed.
fn drain_source(
    sources: &mut [Box<dyn EventSource>],
    watched: &mut [Option<AsyncFd<Watched>>],
    index: usize,
    audit: &mut AuditLog,
) -> anyhow::Result<()> {
    if watched[index].is_none() {
        return Ok(());
    }
    let mut events = Vec::new();
    let open = sources[index].drain(&mut events);
    audit
        .append_batch(events)
        .context("audit log write failed; stopping the sandbox")?;
    if !open? {
        watched[index] = None;
    }
    Ok(())
}

fn drain_all(
    sources: &mut [Box<dyn EventSource>],
    watched: &mut [Option<AsyncFd<Watched>>],
    audit: &mut AuditLog,
) -> anyhow::Result<()> {
    for index in 0..sources.len() {
        drain_source(sources, watched, index, audit)?;
    }
    Ok(())
}
