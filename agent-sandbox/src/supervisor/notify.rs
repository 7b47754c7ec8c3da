//! sd_notify(3) passthrough: the agent's readiness, status and watchdog pings reach systemd.
//!
//! The agent never gets systemd's socket. Its `$NOTIFY_SOCKET` is `@agentbox-notify-<id>`,
//! an abstract datagram socket that the sandbox's init binds after it confined itself, so
//! the socket lives in the agent's Landlock domain and network namespace (abstract sockets
//! outside them stay unreachable to the agent, and this one to everyone outside). Init keeps
//! the lines systemd should hear from a service (`STATUS=`, `WATCHDOG=1`, `READY=1` when the
//! agent is the one to say it, ...), drops the rest (`MAINPID=`, `FDSTORE=`: the agent must
//! not move systemd's idea of the main process or hand it descriptors) and passes them over
//! a socketpair to the supervisor, which sends them to systemd as the unit's main process
//! (`NotifyAccess=main` keeps working).

use std::io;
use std::os::unix::net::UnixDatagram;

/// What to pass on, set by `agentbox run --sd-notify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRelay {
    /// systemd's `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
    pub socket: String,
    /// The agent says `READY=1` itself (else agentbox does once the agent runs, and the
    /// agent's own is dropped).
    pub agent_ready: bool,
}

/// The abstract name (without the leading NUL) of a sandbox's notify socket.
pub(crate) fn socket_name(sandbox: &str) -> String {
    format!("agentbox-notify-{sandbox}")
}

/// One sd_notify(3) datagram to `socket` (a path, or `@name` for an abstract socket).
pub fn sd_notify(socket: &str, message: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let sock = UnixDatagram::unbound()?;
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    sock.send_to_addr(message, &addr).map(drop)
}

/// Lines a service may send, by prefix. `READY=1` is checked on its own (`agent_ready`).
const PASSED: [&[u8]; 10] = [
    b"STATUS=",
    b"RELOADING=1",
    b"STOPPING=1",
    b"WATCHDOG=1",
    b"WATCHDOG=trigger",
    b"WATCHDOG_USEC=",
    b"EXTEND_TIMEOUT_USEC=",
    b"ERRNO=",
    b"BUSERROR=",
    b"MONOTONIC_USEC=",
];

/// Copies the lines of `message` systemd may hear into `out`; returns the bytes written.
/// Runs in init: no allocation.
pub(crate) fn filter(message: &[u8], agent_ready: bool, out: &mut [u8]) -> usize {
    let mut len = 0;
    for line in message.split(|&b| b == b'\n') {
        let passed = (agent_ready && line == b"READY=1")
            || PASSED.iter().any(|prefix| line.starts_with(prefix));
        if !passed || len + line.len() + 1 > out.len() {
            continue;
        }
        out[len..len + line.len()].copy_from_slice(line);
        out[len + line.len()] = b'\n';
        len += line.len() + 1;
    }
    len
}

/// Passes on what is still queued on the relay (after the agent ended), without blocking.
pub(crate) fn drain(relay: &std::os::fd::OwnedFd, socket: &str) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(relay),
        &mut buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    ) {
        if n == 0 {
            return;
        }
        if let Err(e) = sd_notify(socket, &buf[..n]) {
            tracing::warn!("sd_notify to {socket}: {e}");
        }
    }
}

/// The supervisor's half: passes every packet init relays on to systemd, until the runtime
/// ends. A failed send is logged and the relay goes on (systemd may be restarting).
pub(crate) async fn forward(relay: std::os::fd::OwnedFd, socket: String) {
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    if nix::fcntl::fcntl(
        &relay,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .is_err()
    {
        return;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&relay);
    // SAFETY: `relay` is owned by this function and outlives `watched` (declared after it,
    // dropped before it); nothing else closes the fd.
    let Ok(watched) =
        (unsafe { AsyncFd::register_with_interest(super::Watched(fd), Interest::READABLE) })
    else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        let Ok(mut guard) = watched.readable().await else {
            return;
        };
        match nix::sys::socket::recv(fd, &mut buf, nix::sys::socket::MsgFlags::empty()) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = sd_notify(&socket, &buf[..n]) {
                    tracing::warn!("sd_notify to {socket}: {e}");
                }
            }
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filter;

    fn run(message: &[u8], agent_ready: bool) -> String {
        let mut out = [0u8; 256];
        let n = filter(message, agent_ready, &mut out);
        String::from_utf8_lossy(&out[..n]).into_owned()
    }

    #[test]
    fn main_pid_and_fd_store_never_pass() {
        assert_eq!(
            run(
                b"READY=1\nMAINPID=1\nSTATUS=up\nFDSTORE=1\nWATCHDOG=1",
                true
            ),
            "READY=1\nSTATUS=up\nWATCHDOG=1\n"
        );
    }

    #[test]
    fn ready_passes_only_when_the_agent_reports_it() {
        assert_eq!(run(b"READY=1\nSTATUS=up\n", false), "STATUS=up\n");
        assert_eq!(run(b"READY=10", true), "");
    }
}
