//! The sandbox's init: pid 1 of the agent's pid namespace, already confined (Landlock and
//! seccomp), running agentbox code only.
//!
//! Jobs: forward signals to the agent (pid 1 gets no default actions, so nothing reaches the
//! agent unless init passes it on), reap every orphan that the namespace reparents to it, and
//! when the agent ends, send its raw wait status to the supervisor and exit; the kernel then
//! kills whatever is left in the namespace. If the supervisor dies, the parent-death signal
//! (SIGKILL) or the lifeline EOF ends init, with the same effect.
//!
//! Without a pid namespace (fallback), init is a child subreaper in its own session: at the
//! end it kills the agent, then every descendant it inherits (those that left the group with
//! setsid or setpgid too), then its process group, and it lives to do so when the supervisor dies (no
//! parent-death SIGKILL there: the lifeline tells it). Orphans come to init as its children,
//! so the sweep reaches every descendant; a tree that forks faster than one SIGKILL per child
//! per 5 ms round, for the whole second of sweeping, is the residual risk.

use std::os::fd::RawFd;

use super::proto;

pub(crate) struct InitState {
    pub ctl: RawFd,
    pub lifeline: RawFd,
    pub signalfd: RawFd,
    pub agent: libc::pid_t,
    pub pid_namespace: bool,
    pub new_session: bool,
    pub notify: Option<Notify>,
}

/// The agent's sd_notify socket and the way on to the supervisor (notify.rs).
pub(crate) struct Notify {
    pub socket: RawFd,
    pub relay: RawFd,
    pub agent_ready: bool,
}

/// Largest sd_notify datagram passed on (systemd's own limit is larger; status lines and
/// watchdog pings are short).
const NOTIFY_MAX: usize = 4096;

impl Notify {
    /// Receives one datagram and passes its allowed lines on, if a process of the sandbox
    /// sent it: in a pid namespace the kernel shows senders from outside it as pid 0;
    /// without one (fallback), only the agent's user is believed.
    /// Passes on every datagram queued now (the agent may end right after sending).
    fn forward(&self, pid_namespace: bool) {
        while self.forward_one(pid_namespace) {}
    }

    /// One datagram; false when none was queued.
    fn forward_one(&self, pid_namespace: bool) -> bool {
        let mut buf = [0u8; NOTIFY_MAX];
        // Room for one SCM_CREDENTIALS message (u64-aligned).
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all zeroes is valid before the fields are set.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: every pointer in `msg` refers to live stack buffers of the sizes given.
        let n = unsafe { libc::recvmsg(self.socket, &mut msg, libc::MSG_DONTWAIT) };
        if n <= 0 {
            return false;
        }
        let mut sender: Option<libc::ucred> = None;
        // SAFETY: CMSG_* walk the control buffer the kernel just filled, within its length.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                {
                    sender = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::ucred>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let ours = match sender {
            Some(c) if pid_namespace => c.pid != 0,
            Some(c) => c.uid == uid,
            None => false,
        };
        if !ours {
            return true;
        }
        let mut out = [0u8; NOTIFY_MAX];
        let len = super::notify::filter(&buf[..n as usize], self.agent_ready, &mut out);
        if len > 0 {
            // SAFETY: `out` holds `len` bytes; a failed send only loses this message.
            unsafe { libc::send(self.relay, out.as_ptr().cast(), len, libc::MSG_NOSIGNAL) };
        }
        true
    }
}

impl InitState {
    /// Ends the sandbox: in a pid namespace exiting is enough; in the fallback, kill our
    /// process group (only ours: with a new session it holds nothing outside the sandbox).
    fn teardown(&self, code: i32) -> ! {
        if !self.pid_namespace {
            // SAFETY: signals only the agent; the sweep only our children.
            unsafe { libc::kill(self.agent, libc::SIGKILL) };
            kill_descendants();
            if self.new_session {
                // Last: the group holds init itself.
                // SAFETY: with our own session the group holds nothing outside the sandbox.
                unsafe { libc::kill(0, libc::SIGKILL) };
            }
        }
        // SAFETY: _exit skips the supervisor's atexit handlers and stdio buffers we inherited.
        unsafe { libc::_exit(code) }
    }

    /// Reaps every exited child; when the agent is among them, reports it and ends.
    fn reap(&self) {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a live int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.agent {
                let _ = proto::send(self.ctl, proto::TAG_EXITED, 0, status);
                self.teardown(0);
            }
        }
    }
}

/// Without a pid namespace: kills what left our process group (setsid, setpgid). As a child
/// subreaper, init inherits every orphaned descendant: each child still alive is killed (it
/// is our child and not reaped, so its pid names no other process), its own children come
/// to us when it dies, and so on, for at most a second. No allocation.
fn kill_descendants() {
    const PATH: &[u8] = b"/proc/thread-self/children\0";
    for _ in 0..200 {
        let mut buf = [0u8; 4096];
        // SAFETY: PATH is NUL-terminated; the descriptor is closed below.
        let fd = unsafe { libc::open(PATH.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return;
        }
        // SAFETY: `buf` is a live, writable buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        let mut children = 0;
        let mut pid: libc::pid_t = 0;
        for &b in buf.iter().take(n.max(0) as usize).chain(b" ") {
            if b.is_ascii_digit() {
                pid = pid * 10 + libc::pid_t::from(b - b'0');
            } else if pid > 0 {
                // SAFETY: `pid` is our child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                children += 1;
                pid = 0;
            }
        }
        if children == 0 {
            return;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 5_000_000,
        };
        // SAFETY: `pause` is a live timespec; a null remainder is allowed.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        let mut status = 0;
        // SAFETY: `status` is a live int; reaping lets the dead's children come to us.
        while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
    }
}

/// Init's loop. Never returns. No allocation.
pub(crate) fn supervise(st: InitState) -> ! {
    let mut fds = [
        libc::pollfd {
            fd: st.signalfd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: st.lifeline,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            // poll ignores negative fds.
            fd: st.notify.as_ref().map_or(-1, |n| n.socket),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a live array of three pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
        if r < 0 {
            if proto::errno() == libc::EINTR {
                continue;
            }
            st.teardown(1);
        }
        if fds[1].revents != 0 {
            // The supervisor is gone (its end of the lifeline closed).
            st.teardown(1);
        }
        if fds[2].revents & libc::POLLIN != 0 {
            if let Some(notify) = &st.notify {
                notify.forward(st.pid_namespace);
            }
        }
        if fds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        // SAFETY: signalfd_siginfo is plain data; read fills it.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is a live, writable buffer of `size` bytes.
        let n = unsafe {
            libc::read(
                st.signalfd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            continue;
        }
        let sig = info.ssi_signo as libc::c_int;
        if sig == libc::SIGCHLD {
            st.reap();
        } else {
            // SAFETY: the agent is our child and not reaped yet (reaping it ends this loop),
            // so its pid cannot name another process.
            unsafe { libc::kill(st.agent, sig) };
        }
    }
}
