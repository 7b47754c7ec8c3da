//! The user's terminal as it was before the agent ran, put back afterwards.
//!
//! An agent holding the terminal on stdin/stdout/stderr can change its settings through the
//! inherited descriptors, session of its own or not (no controlling-terminal check applies):
//! echo off, raw mode, a different window size, left for the user's shell afterwards. The
//! supervisor saves each terminal's termios and window size at launch and restores what
//! changed once no process of the sandbox is left, as shells and `script(1)` do.

use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::termios::{self, SetArg, Termios};

/// One terminal the agent was given, and its settings at launch.
struct Saved {
    fd: RawFd,
    rdev: u64,
    termios: Termios,
    winsize: libc::winsize,
}

/// The terminals on fds 0-2 at launch (each device once).
#[derive(Default)]
pub(crate) struct TerminalState {
    saved: Vec<Saved>,
}

impl std::fmt::Debug for TerminalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalState")
            .field("terminals", &self.saved.len())
            .finish()
    }
}

fn winsize(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: winsize is plain old data; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into a live local.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some(ws)
}

fn same_size(a: &libc::winsize, b: &libc::winsize) -> bool {
    (a.ws_row, a.ws_col, a.ws_xpixel, a.ws_ypixel) == (b.ws_row, b.ws_col, b.ws_xpixel, b.ws_ypixel)
}

impl TerminalState {
    pub(crate) fn save() -> TerminalState {
        let mut saved: Vec<Saved> = Vec::new();
        for fd in 0..3 {
            // SAFETY: fds 0-2 stay open for the supervisor's whole life; borrowed for a call.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let Ok(st) = nix::sys::stat::fstat(borrowed) else {
                continue;
            };
            if saved.iter().any(|s| s.rdev == st.st_rdev) {
                continue;
            }
            let (Ok(termios), Some(winsize)) = (termios::tcgetattr(borrowed), winsize(fd)) else {
                continue;
            };
            saved.push(Saved {
                fd,
                rdev: st.st_rdev,
                termios,
                winsize,
            });
        }
        TerminalState { saved }
    }

    /// Puts back whatever changed; true when something had. SIGTTOU is ignored meanwhile:
    /// a supervisor in a background job must not stop on tcsetattr.
    pub(crate) fn restore(&self) -> bool {
        if self.saved.is_empty() {
            return false;
        }
        // SAFETY: sigaction with a valid new action and a live buffer for the old one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above; SIG_IGN needs no handler.
        let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
        ignore.sa_sigaction = libc::SIG_IGN;
        // SAFETY: both structs are live; SIGTTOU is a valid signal.
        unsafe { libc::sigaction(libc::SIGTTOU, &ignore, &mut old) };
        let mut changed = false;
        for s in &self.saved {
            // SAFETY: fds 0-2 stay open for the supervisor's whole life; borrowed for a call.
            let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
            if termios::tcgetattr(fd).is_ok_and(|now| now != s.termios) {
                changed = true;
                let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &s.termios);
            }
            if winsize(s.fd).is_some_and(|now| !same_size(&now, &s.winsize)) {
                changed = true;
                // SAFETY: TIOCSWINSZ reads one winsize from a live field.
                unsafe { libc::ioctl(s.fd, libc::TIOCSWINSZ, &s.winsize) };
            }
        }
        // SAFETY: puts back the action saved above.
        unsafe { libc::sigaction(libc::SIGTTOU, &old, std::ptr::null_mut()) };
        changed
    }
}
