//! Signal forwarding: supervisor → init → agent.
//!
//! The supervisor blocks the forwarded signals before fork, so none is lost (or kills it)
//! before its tokio handlers exist; init inherits the block and reads them from a signalfd
//! (pid 1 of a pid namespace ignores default-action signals, so it must forward explicitly);
//! the agent resets everything to the default before exec.

use std::io;

/// Signals a user or a job-control shell sends to a foreground command.
pub(super) const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// A sigset holding `FORWARDED`, plus SIGCHLD when `with_chld`. No allocation.
pub(crate) fn forwarded_set(with_chld: bool) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        if with_chld {
            libc::sigaddset(&mut set, libc::SIGCHLD);
        }
    }
    set
}

/// Blocks `set` in the calling thread and returns the previous mask.
pub(crate) fn block(set: &libc::sigset_t) -> Result<libc::sigset_t, i32> {
    // SAFETY: zeroed sigset_t is a valid out-parameter for pthread_sigmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live sigset_t values.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, &mut old) };
    if r != 0 {
        return Err(r);
    }
    Ok(old)
}

/// Restores a mask saved by `block`.
pub(crate) fn set_mask(mask: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `mask` is a live sigset_t; the old mask is not requested.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Child side (agent, before exec): every signal back to its default action and nothing
/// blocked, as a freshly started program expects (Rust's runtime ignores SIGPIPE, init blocks
/// the forwarded ones; both would otherwise survive exec).
pub(crate) fn reset_for_exec() -> Result<(), i32> {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to SIG_DFL; invalid numbers just return EINVAL.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: `empty` is a live sigset_t.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    if r != 0 {
        return Err(r);
    }
    Ok(())
}

/// Parent side: forwards every `FORWARDED` signal the supervisor receives to `target` (init)
/// until the runtime shuts down. Must run inside a tokio runtime.
pub(crate) fn spawn_forwarders(target: libc::pid_t) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for sig in FORWARDED {
        let mut stream = signal(SignalKind::from_raw(sig))?;
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                // SAFETY: kill with a pid we created and have not reaped yet (init is reaped
                // only after the runtime stops), so the pid cannot have been reused.
                unsafe { libc::kill(target, sig) };
            }
        });
    }
    Ok(())
}
