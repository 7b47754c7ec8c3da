//! Seccomp user notification: the supervisor answers denied syscalls and logs them.
//!
//! Hand-written on the raw ioctls: the maintained Rust crates either wrap libseccomp's C
//! library (which agentbox does not link) or do not implement user notification at all.
//!
//! Use: the child installs the filter (`layers::seccomp::SeccompProgram::install`), passes the
//! listener with `send_listener` and closes its copy before exec; the supervisor takes it with
//! `recv_listener` and drives a `Notifier`:
//!
//! ```text
//! loop { wait for POLLIN on notifier.as_raw_fd() (poll, epoll, tokio AsyncFd);
//!        if let Some(denial) = notifier.handle_one()? { audit.push(Event::Denial(denial)) } }
//! ```
//!
//! Always poll first: SECCOMP_IOCTL_NOTIF_RECV blocks until a notification arrives and does
//! not honour O_NONBLOCK on every kernel. POLLHUP (without POLLIN) means every task using the
//! filter is gone.

use std::fs;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Action, Denial, Event, Object};
use crate::layers::seccomp::mediate::{self, Mediation, Verdict};
use crate::layers::seccomp::{exec, open};
use crate::layers::seccomp::{
    Answered, DenyTable, SeccompProgram, AUDIT_ARCH_X86_64, LAYER, X32_SYSCALL_BIT,
};
use crate::layers::EventSource;
use crate::policy::{Mode, ViolationAction};

/// Answers the sandbox's denied syscalls and turns each into a `Denial`.
pub(crate) struct Notifier {
    /// Shared with the threads that finish mediated connects.
    listener: Arc<OwnedFd>,
    table: Arc<DenyTable>,
    mediation: Option<Arc<Mediation>>,
    answered: Arc<Answered>,
    mode: Mode,
    on_violation: ViolationAction,
    /// Receive/send buffers sized for the running kernel's structs (which may be larger than
    /// the ones libc knows), u64 for alignment.
    notif_buf: Vec<u64>,
    resp_buf: Vec<u64>,
    /// Threads for calls that may block (see `hold`); `None` only while dropping.
    workers: Option<tokio::runtime::Runtime>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // Not a plain drop, which waits for every worker: one may still be held in a connect
        // to an unreachable host (or before an approver) for a task that is already gone.
        if let Some(workers) = self.workers.take() {
            workers.shutdown_background();
        }
    }
}

/// Denied syscalls, answered and logged by the supervisor's loop.
impl EventSource for Notifier {
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    /// Handles every pending notification; `false` on hangup (no task uses the filter).
    fn drain(&mut self, out: &mut Vec<Event>) -> anyhow::Result<bool> {
        loop {
            match self.wait(Some(Duration::ZERO))? {
                Readiness::Ready => {
                    if let Some(denial) = self.handle_one()? {
                        out.push(Event::Denial(denial));
                    }
                }
                Readiness::Idle => return Ok(true),
                Readiness::Hangup => return Ok(false),
            }
        }
    }
}

/// What `Notifier::wait` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// A notification is pending: call `handle_one`.
    Ready,
    /// Nothing yet (timeout or a signal interrupted the wait).
    Idle,
    /// No task uses the filter any more and nothing is pending.
    Hangup,
}

impl Notifier {
    pub(crate) fn new(
        listener: OwnedFd,
        program: &SeccompProgram,
        mode: Mode,
        on_violation: ViolationAction,
    ) -> io::Result<Self> {
        let sizes = notif_sizes()?;
        let words = |kernel: u16, ours: usize| usize::from(kernel).max(ours).div_ceil(8);
        // Only its blocking pool is used: idle threads that wait for the next call, started
        // on demand. No driver is enabled, so building it starts no thread.
        let workers = tokio::runtime::Builder::new_current_thread()
            .thread_name("ab-mediate")
            .build()?;
        Ok(Notifier {
            listener: Arc::new(listener),
            table: Arc::clone(program.table()),
            mediation: program.mediation().cloned(),
            answered: Arc::clone(program.answered()),
            mode,
            on_violation,
            notif_buf: vec![0; words(sizes.seccomp_notif, size_of::<libc::seccomp_notif>())],
            resp_buf: vec![
                0;
                words(
                    sizes.seccomp_notif_resp,
                    size_of::<libc::seccomp_notif_resp>()
                )
            ],
            workers: Some(workers),
        })
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Poll the listener. `None` waits without limit.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Readiness> {
        let mut pfd = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: one valid pollfd on the stack.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.raw_os_error() == Some(libc::EINTR) {
                Ok(Readiness::Idle)
            } else {
                Err(err)
            };
        }
        Ok(if pfd.revents & libc::POLLIN != 0 {
            Readiness::Ready
        } else if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            Readiness::Hangup
        } else {
            Readiness::Idle
        })
    }

    /// Receive one notification, answer it and describe it. Blocks if none is pending (poll
    /// first). `Ok(None)`: interrupted, or the caller died before we read its notification.
    pub(crate) fn handle_one(&mut self) -> io::Result<Option<Denial>> {
        // The kernel refuses a RECV buffer that is not zeroed.
        self.notif_buf.fill(0);
        // SAFETY: the buffer is at least as large as the kernel's struct seccomp_notif.
        let ret = unsafe {
            libc::ioctl(
                self.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                self.notif_buf.as_mut_ptr(),
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOENT) => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: the buffer is 8-aligned, at least size_of::<seccomp_notif>() bytes, and was
        // just filled by the kernel; seccomp_notif is plain old data.
        let notif: libc::seccomp_notif = unsafe { std::ptr::read(self.notif_buf.as_ptr().cast()) };
        let data = notif.data;
        let nr = i64::from(data.nr);
        let native = data.arch == AUDIT_ARCH_X86_64 && (data.nr as u32) < X32_SYSCALL_BIT;
        if let Some(mediation) = &self.mediation {
            if native && mediation.handles(nr) && !self.table.denies(nr, &data.args) {
                let mediation = Arc::clone(mediation);
                return self.mediate(&notif, &mediation);
            }
        }
        let (name, rule) = self.table.describe(data.arch, data.nr, &data.args);

        // /proc/<pid> is only trusted while the notification is still pending: a dead task's
        // pid can be reused. Check before and after reading.
        let mut info = ProcInfo::default();
        if self.id_valid(notif.id) {
            info = ProcInfo::read(notif.pid as i32);
            if !self.id_valid(notif.id) {
                info = ProcInfo::default();
            }
        }
        let pid = info.tgid.unwrap_or(notif.pid as i32);

        let action = self.action_for(notif.id, pid);
        self.respond(notif.id, action)?;

        Ok(Some(denial(
            rule,
            action,
            pid,
            info,
            Object::Syscall {
                name,
                nr: i64::from(data.nr),
                args: data.args,
            },
        )))
    }

    /// A socket call the supervisor judges (see `mediate`).
    fn mediate(
        &mut self,
        notif: &libc::seccomp_notif,
        mediation: &Mediation,
    ) -> io::Result<Option<Denial>> {
        let tid = notif.pid as i32;
        let nr = i64::from(notif.data.nr);
        let verdict = mediation.decide(tid, nr, &notif.data.args);
        // What we read is only this task's if its notification is still pending. CONTINUE
        // needs no such check: it decides nothing, and an answer to a dead task's
        // notification is dropped (ENOENT).
        if !matches!(verdict, Verdict::Continue) && !self.id_valid(notif.id) {
            return Ok(None);
        }
        match verdict {
            Verdict::Continue => {
                self.respond_raw(
                    notif.id,
                    0,
                    0,
                    libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                )?;
                Ok(None)
            }
            Verdict::Fail(errno) => {
                self.answered.record(tid, nr);
                self.respond_raw(notif.id, 0, -errno, 0)?;
                Ok(None)
            }
            Verdict::Connect { fd, target } => {
                self.perform(notif, move |tid| {
                    mediate::connect_on_behalf(tid, fd, &target)
                })?;
                Ok(None)
            }
            // Held on a thread of its own until the approver decides; the connect, if
            // allowed, is made from our copy of the address (what was asked is what runs).
            Verdict::Ask {
                fd,
                addr,
                destination,
                object,
            } => {
                let Some(gate) = mediation.gate().cloned() else {
                    self.respond_raw(notif.id, 0, -libc::EPERM, 0)?;
                    return Ok(None);
                };
                let request = self.request(tid, "net", destination);
                self.perform(notif, move |tid| {
                    if gate.ask(request, object) {
                        mediate::connect_on_behalf(tid, fd, &mediate::Target::Addr(addr))
                    } else {
                        -i64::from(libc::EPERM)
                    }
                })?;
                Ok(None)
            }
            // Held like a connect; if allowed, the supervisor opens the inode it pinned and
            // the agent's call returns that descriptor.
            Verdict::AskOpen {
                file,
                flags,
                destination,
                object,
            } => {
                let Some(gate) = mediation.gate().cloned() else {
                    self.respond_raw(notif.id, 0, -libc::EACCES, 0)?;
                    return Ok(None);
                };
                let request = self.request(tid, "fs", destination);
                let listener = Arc::clone(&self.listener);
                let id = notif.id;
                self.hold(notif, move |_| {
                    if !gate.ask(request, object) {
                        return Some(-i64::from(libc::EACCES));
                    }
                    // On a thread of its own, which gives up its capabilities to open (a
                    // pooled worker must keep them for the next call).
                    let opened = std::thread::scope(|scope| {
                        std::thread::Builder::new()
                            .name("ab-open".into())
                            .spawn_scoped(scope, || open::open_on_behalf(tid, &file, flags))
                            .map_err(|_| libc::EAGAIN)?
                            .join()
                            .unwrap_or(Err(libc::EIO))
                    });
                    let opened = match opened {
                        Ok(fd) => fd,
                        Err(errno) => return Some(-i64::from(errno)),
                    };
                    let cloexec = flags & libc::O_CLOEXEC != 0;
                    match open::inject(listener.as_raw_fd(), id, &opened, cloexec) {
                        Ok(_) => None,
                        Err(e) => Some(-i64::from(e.raw_os_error().unwrap_or(libc::EIO))),
                    }
                })?;
                Ok(None)
            }
            // Held like a connect; if allowed, the inode becomes a BPF LSM rule before the
            // exec continues.
            Verdict::AskExec {
                file,
                inode,
                destination,
                object,
            } => {
                let (Some(gate), Some(grants)) = (
                    mediation.gate().cloned(),
                    mediation.exec_ask().and_then(|e| e.grants()).cloned(),
                ) else {
                    self.respond_raw(notif.id, 0, -libc::EACCES, 0)?;
                    return Ok(None);
                };
                let request = self.request(tid, "exec", destination.clone());
                let listener = Arc::clone(&self.listener);
                let words = self.resp_buf.len();
                let id = notif.id;
                // Now: once the exec goes on, a non-leader thread takes its group's id.
                let tgid = ProcInfo::read(tid).tgid.unwrap_or(tid);
                self.hold(notif, move |_| {
                    if !gate.ask(request, object) {
                        return Some(-i64::from(libc::EACCES));
                    }
                    if let Err(e) = grants.allow_exec(inode) {
                        tracing::warn!("exec approval not written as a BPF LSM rule: {e:#}");
                        return Some(-i64::from(libc::EACCES));
                    }
                    let flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
                    let _ = send_response(listener.as_raw_fd(), words, id, 0, 0, flags);
                    // Pinned until here: the inode number cannot be reused meanwhile.
                    drop(file);
                    if !gate.leased(&destination) {
                        exec::wait_for_exec(tgid, inode);
                        grants.revoke_exec(inode);
                    }
                    None
                })?;
                Ok(None)
            }
            // Never blocks: answered here, without a thread (file watchers add thousands).
            Verdict::Watch { fd, file, mask } => {
                let rc = mediate::watch_on_behalf(tid, fd, &file, mask);
                if rc < 0 {
                    self.answered.record(tid, nr);
                    self.respond_raw(notif.id, 0, rc as i32, 0)?;
                } else {
                    self.respond_raw(notif.id, rc, 0, 0)?;
                }
                Ok(None)
            }
            Verdict::SendTo {
                fd,
                data,
                flags,
                addr,
            } => {
                self.perform(notif, move |tid| {
                    mediate::sendto_on_behalf(tid, fd, &data, flags, &addr)
                })?;
                Ok(None)
            }
            Verdict::Deny { rule, object } => {
                let info = ProcInfo::read(tid);
                let info = if self.id_valid(notif.id) {
                    info
                } else {
                    ProcInfo::default()
                };
                let pid = info.tgid.unwrap_or(tid);
                let action = self.action_for(notif.id, pid);
                if action == Action::Audited {
                    self.respond_raw(
                        notif.id,
                        0,
                        0,
                        libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                    )?;
                } else {
                    self.answered.record(tid, nr);
                    self.respond_raw(notif.id, 0, -libc::EPERM, 0)?;
                }
                Ok(Some(denial(rule, action, pid, info, object)))
            }
        }
    }

    /// What the approver is asked about thread `tid`'s call.
    fn request(&self, tid: i32, kind: &str, destination: String) -> crate::approval::Request {
        let info = ProcInfo::read(tid);
        crate::approval::Request {
            id: 0,
            kind: kind.into(),
            destination,
            host: None,
            pid: info.tgid.unwrap_or(tid),
            exe: info.exe.clone(),
            tree: process_tree(tid, info.ppid),
        }
    }

    /// Runs `call` (given the calling thread's id) on a worker thread, which answers the
    /// notification with its result: a blocking socket waits as long as the agent's call
    /// would, and the event loop must not.
    fn perform(
        &mut self,
        notif: &libc::seccomp_notif,
        call: impl FnOnce(i32) -> i64 + Send + 'static,
    ) -> io::Result<()> {
        self.hold(notif, move |tid| Some(call(tid)))
    }

    /// `perform`, for a `call` that may answer the notification itself (`None`).
    fn hold(
        &mut self,
        notif: &libc::seccomp_notif,
        call: impl FnOnce(i32) -> Option<i64> + Send + 'static,
    ) -> io::Result<()> {
        let tid = notif.pid as i32;
        let nr = i64::from(notif.data.nr);
        let listener = Arc::clone(&self.listener);
        let answered = Arc::clone(&self.answered);
        let words = self.resp_buf.len();
        let id = notif.id;
        let job = move || {
            let Some(rc) = call(tid) else {
                return;
            };
            if rc < 0 {
                answered.record(tid, nr);
            }
            let (val, error) = if rc < 0 { (0, rc as i32) } else { (rc, 0) };
            let _ = send_response(listener.as_raw_fd(), words, id, val, error, 0);
        };
        // A pooled worker, not a thread started per call: that start was a third of an
        // unprivileged connect's cost.
        if let Some(workers) = &self.workers {
            drop(workers.spawn_blocking(job));
        } else {
            self.respond_raw(notif.id, 0, -libc::EAGAIN, 0)?;
        }
        Ok(())
    }

    /// What a denial does under this mode: audited, denied, or (on_violation = "kill") the
    /// caller killed first, through a pidfd, before it runs another instruction.
    fn action_for(&self, id: u64, pid: i32) -> Action {
        match (self.mode, self.on_violation) {
            (Mode::Audit, _) => Action::Audited,
            (Mode::Enforce, ViolationAction::Deny) => Action::Denied,
            (Mode::Enforce, ViolationAction::Kill) if self.kill(id, pid) => Action::Killed,
            (Mode::Enforce, ViolationAction::Kill) => Action::Denied,
        }
    }

    fn respond_raw(&mut self, id: u64, val: i64, error: i32, flags: u32) -> io::Result<()> {
        send_response(self.as_raw_fd(), self.resp_buf.len(), id, val, error, flags)
    }

    fn id_valid(&self, id: u64) -> bool {
        // SAFETY: the kernel reads one u64 from a live local.
        unsafe {
            libc::ioctl(
                self.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &id as *const u64,
            ) == 0
        }
    }

    /// SIGKILL the process behind a pending notification, through a pidfd so a recycled pid
    /// can never be hit. Done before answering: the task dies inside the denied syscall and
    /// never runs another instruction. True when the signal was sent.
    fn kill(&self, id: u64, pid: i32) -> bool {
        // SAFETY: pidfd_open takes no pointers.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            return false;
        }
        // SAFETY: the kernel just returned this fd; we own it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        // The notification still pending after pidfd_open means `pid` was still its process.
        if !self.id_valid(id) {
            return false;
        }
        // SAFETY: NULL siginfo is allowed; no other pointers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }

    fn respond(&mut self, id: u64, action: Action) -> io::Result<()> {
        match action {
            // The filter only decides "tell the supervisor"; in audit mode the supervisor lets
            // the call run. CONTINUE re-reads pointer arguments after our check (TOCTOU), which
            // matters only when a decision depends on them: audit mode decides nothing.
            Action::Audited => {
                self.respond_raw(id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
            }
            Action::Denied | Action::Killed => self.respond_raw(id, 0, -libc::EPERM, 0),
        }
    }
}

/// `pid exe` of `pid`'s ancestors inside the sandbox (its pid namespace), nearest first, up
/// to eight: what the approver sees, never the host's processes above the sandbox.
fn process_tree(pid: i32, mut ppid: Option<i32>) -> Vec<String> {
    let ns = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let sandbox = ns(pid);
    let mut tree = Vec::new();
    while let Some(pid) = ppid.filter(|p| *p > 1 && tree.len() < 8) {
        if sandbox.is_none() || ns(pid) != sandbox {
            break;
        }
        let info = ProcInfo::read(pid);
        tree.push(format!("{pid} {}", info.exe.as_deref().unwrap_or("?")));
        ppid = info.ppid;
    }
    tree
}

/// A seccomp-layer denial of process `pid` (with what /proc said about it).
fn denial(rule: String, action: Action, pid: i32, info: ProcInfo, object: Object) -> Denial {
    Denial {
        layer: LAYER.to_string(),
        rule,
        action,
        pid,
        ppid: info.ppid,
        exe: info.exe,
        object,
    }
}

/// Answers notification `id` on `listener`; `words`: the kernel's response size in u64s.
fn send_response(
    listener: RawFd,
    words: usize,
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    let mut buf = vec![0u64; words.max(size_of::<libc::seccomp_notif_resp>().div_ceil(8))];
    // SAFETY: the buffer is 8-aligned and at least size_of::<seccomp_notif_resp>() bytes.
    unsafe { std::ptr::write(buf.as_mut_ptr().cast(), resp) };
    loop {
        // SAFETY: the buffer is at least as large as the kernel's seccomp_notif_resp.
        let ret = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, buf.as_ptr()) };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // The task died (or we killed it) while we were deciding: nothing to answer.
            Some(libc::ENOENT) => return Ok(()),
            _ => return Err(err),
        }
    }
}

impl AsRawFd for Notifier {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_ref().as_fd()
    }
}

fn notif_sizes() -> io::Result<libc::seccomp_notif_sizes> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: the kernel writes one struct seccomp_notif_sizes into a live local.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sizes)
}

/// Who made the call, from /proc/<tid>.
#[derive(Debug, Default, PartialEq, Eq)]
struct ProcInfo {
    tgid: Option<i32>,
    ppid: Option<i32>,
    exe: Option<String>,
}

impl ProcInfo {
    fn read(tid: i32) -> Self {
        let status = fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        ProcInfo {
            tgid: field("Tgid"),
            ppid: field("PPid"),
            exe: fs::read_link(format!("/proc/{tid}/exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
        }
    }
}

/// Send `listener` over the UNIX socket `sock` (SCM_RIGHTS). Child side, between fork and
/// exec: no allocation, only sendmsg. (The supervisor uses its control protocol's `send_fd`;
/// the layer's own tests use this pair.)
#[cfg(test)]
pub(crate) fn send_listener(sock: BorrowedFd<'_>, listener: BorrowedFd<'_>) -> io::Result<()> {
    // CMSG_SPACE(sizeof(int)) is 24 on x86_64; 32 bytes of u64 keep it aligned.
    let mut cmsg_buf = [0u64; 4];
    let mut byte = [b'L'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic only.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    // SAFETY: msg_control points at a buffer of msg_controllen bytes, so the first header fits.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), listener.as_raw_fd());
    }
    loop {
        // SAFETY: msg and everything it points to live on this stack frame.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Receive the listener the child sent with `send_listener` (close-on-exec set).
#[cfg(test)]
pub(crate) fn recv_listener(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut cmsg_buf = [0u64; 4];
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 4]>();
    let n = loop {
        // SAFETY: msg and its buffers live on this stack frame.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "child closed the socket before sending the seccomp listener",
        ));
    }
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR checks msg_controllen.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null cmsg points into cmsg_buf, with at least a header's worth of bytes.
    let ok = !cmsg.is_null()
        && unsafe {
            (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                && (*cmsg).cmsg_len == libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize
        };
    if !ok || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no seccomp listener in the child's message",
        ));
    }
    // SAFETY: the header says one fd follows; the kernel installed it in our table for us.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()) };
    // SAFETY: SCM_RIGHTS gave us a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
