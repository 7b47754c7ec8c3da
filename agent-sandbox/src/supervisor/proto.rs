//! The control socket between the supervisor and the sandbox's init and agent processes.
//!
//! One `SOCK_SEQPACKET` socketpair, `SOCK_CLOEXEC`, so the agent loses its end at exec. Every
//! message is 8 bytes: tag, step, two pad bytes, a native-endian i32. The supervisor's end has
//! `SO_PASSCRED`, so the kernel stamps each message with the sender's pid translated into the
//! supervisor's pid namespace: that is how the supervisor learns the agent's real pid although
//! the agent lives in a child pid namespace.
//!
//! The child-side senders call libc directly with stack buffers: `nix::sys::socket::sendmsg`
//! allocates its control buffer, and nothing between fork and exec may allocate.

use std::io::{self, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

pub(crate) const MSG_LEN: usize = 8;

/// Supervisor → init: identity maps are written, go on.
pub(crate) const TAG_GO: u8 = b'G';
/// Init → supervisor: the protect mounts made before go are in place (root only).
pub(crate) const TAG_MOUNTED: u8 = b'M';
/// Init → supervisor: the seccomp listener is init's fd `value`; the supervisor takes it
/// (pidfd_getfd) and answers `TAG_GO`.
pub(crate) const TAG_LISTENER: u8 = b'L';
/// Agent → supervisor, right before exec: the message's credentials carry the agent's pid.
pub(crate) const TAG_STARTED: u8 = b'P';
/// Agent → supervisor: execve failed with errno `value`.
pub(crate) const TAG_EXEC_FAILED: u8 = b'E';
/// Init or agent → supervisor: setup step `step` failed with errno `value`.
pub(crate) const TAG_SETUP_FAILED: u8 = b'F';
/// Init → supervisor: the agent ended; `value` is its raw wait status.
pub(crate) const TAG_EXITED: u8 = b'X';

/// The child-side setup steps, in the order they run (see child.rs), for error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    CloseFds = 1,
    WaitForGo,
    NewSession,
    ParentDeathSignal,
    Lifeline,
    NotDumpable,
    NoNewPrivs,
    Rlimits,
    ProtectMounts,
    Capabilities,
    Landlock,
    NotifySocket,
    Seccomp,
    SendListener,
    BlockSignals,
    ForkAgent,
    ResetSignals,
    Exec,
    JoinCgroups,
}

impl Step {
    const ALL: [Step; 19] = [
        Step::CloseFds,
        Step::WaitForGo,
        Step::NewSession,
        Step::ParentDeathSignal,
        Step::Lifeline,
        Step::NotDumpable,
        Step::NoNewPrivs,
        Step::Rlimits,
        Step::ProtectMounts,
        Step::Capabilities,
        Step::Landlock,
        Step::NotifySocket,
        Step::Seccomp,
        Step::SendListener,
        Step::BlockSignals,
        Step::ForkAgent,
        Step::ResetSignals,
        Step::Exec,
        Step::JoinCgroups,
    ];

    pub(crate) fn from_u8(v: u8) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u8 == v)
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Step::CloseFds => "closing inherited file descriptors",
            Step::WaitForGo => "waiting for the supervisor",
            Step::NewSession => "starting a new session (setsid)",
            Step::ParentDeathSignal => "setting the parent-death signal",
            Step::Lifeline => "checking the supervisor is alive",
            Step::NotDumpable => "making init non-dumpable",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Rlimits => "setting resource limits",
            Step::ProtectMounts => "building the filesystem view (layers/mounts.rs)",
            Step::Capabilities => "dropping capabilities",
            Step::Landlock => "applying the Landlock ruleset",
            Step::NotifySocket => "binding the agent's sd_notify socket",
            Step::Seccomp => "installing the seccomp filter",
            Step::SendListener => "passing the seccomp listener to the supervisor",
            Step::BlockSignals => "setting up signal forwarding",
            Step::ForkAgent => "forking the agent",
            Step::ResetSignals => "resetting the agent's signal state",
            Step::Exec => "executing the command",
            Step::JoinCgroups => "joining the sandbox's v1 cgroups (pids, memory)",
        }
    }
}

fn encode(tag: u8, step: u8, value: i32) -> [u8; MSG_LEN] {
    let v = value.to_ne_bytes();
    [tag, step, 0, 0, v[0], v[1], v[2], v[3]]
}

/// Child side: sends one message. Async-signal-safe, no allocation.
pub(crate) fn send(fd: RawFd, tag: u8, step: u8, value: i32) -> Result<(), i32> {
    let buf = encode(tag, step, value);
    // SAFETY: `buf` is a live stack array of MSG_LEN bytes; send does not retain the pointer.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), MSG_LEN, libc::MSG_NOSIGNAL) };
    if n == MSG_LEN as isize {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Child side: blocks for one message; returns its tag, or `None` on EOF or error.
pub(crate) fn recv_tag(fd: RawFd) -> Option<u8> {
    let mut buf = [0u8; MSG_LEN];
    loop {
        // SAFETY: `buf` is a live, writable stack array of MSG_LEN bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), MSG_LEN, 0) };
        if n == MSG_LEN as isize {
            return Some(buf[0]);
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return None;
    }
}

pub(crate) fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// One message as the supervisor receives it.
#[derive(Debug)]
pub(crate) struct Message {
    pub tag: u8,
    pub step: u8,
    pub value: i32,
    /// Sender's pid in the supervisor's pid namespace (from SCM_CREDENTIALS).
    pub pid: Option<i32>,
}

/// Supervisor side: receives one message. `Ok(None)` on EOF (every sender has exited);
/// `ErrorKind::WouldBlock` when the socket is non-blocking and nothing is queued.
pub(crate) fn recv(fd: RawFd) -> io::Result<Option<Message>> {
    let mut buf = [0u8; MSG_LEN];
    let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; 4]);
    let (len, pid, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
        let mut pid = None;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid()),
                ControlMessageOwned::ScmRights(received) => fds.extend(received),
                _ => {}
            }
        }
        (msg.bytes, pid, fds)
    };
    // No message carries descriptors; any that arrive are closed here.
    // SAFETY: the kernel just installed these descriptors in our table; we own them now.
    let _stray: Vec<OwnedFd> = fds
        .into_iter()
        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    if len == 0 {
        return Ok(None);
    }
    if len != MSG_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short control message",
        ));
    }
    let value = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok(Some(Message {
        tag: buf[0],
        step: buf[1],
        value,
        pid,
    }))
}
