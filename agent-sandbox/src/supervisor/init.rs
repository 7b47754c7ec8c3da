//! The sandbox's init: pid 1 of the agent's pid namespace, already confined (Landlock and
//! seccomp), running agentbox code only.
//!
//! Jobs: forward signals to the agent (pid 1 gets no default actions, so nothing reaches the
//! agent unless init passes it on), reap every orphan that the namespace reparents to it, and
//! when the agent ends, send its raw wait status to the supervisor and exit; the kernel then
//! kills whatever is left in the namespace. If the supervisor dies, the parent-death signal
//! (SIGKILL) or the lifeline EOF ends init, with the same effect.
//!
//! Without a pid namespace (fallback), init is a child subreaper in its own session: it kills
//! its process group at the end, which misses descendants that left the group (setsid,
//! setpgid). That weaker guarantee is reported at launch.

use std::os::fd::RawFd;

use super::proto;

pub(crate) struct InitState {
    pub ctl: RawFd,
    pub lifeline: RawFd,
    pub signalfd: RawFd,
    pub agent: libc::pid_t,
    pub pid_namespace: bool,
    pub new_session: bool,
}

impl InitState {
    /// Ends the sandbox: in a pid namespace exiting is enough; in the fallback, kill our
    /// process group (only ours: with a new session it holds nothing outside the sandbox).
    fn teardown(&self, code: i32) -> ! {
        if !self.pid_namespace {
            // SAFETY: signals only the agent and (with our own session) our own group.
            unsafe {
                libc::kill(self.agent, libc::SIGKILL);
                if self.new_session {
                    libc::kill(0, libc::SIGKILL);
                }
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
    ];
    loop {
        // SAFETY: `fds` is a live array of two pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
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
