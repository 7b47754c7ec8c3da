//! Reads the profile neither allows nor denies, put to the approver
//! (`filesystem.unknown = "ask"`, `--ask fs`).
//!
//! The filter sends every read-only open (open, openat; openat2 whole, its flags being
//! behind a pointer) to the supervisor, which
//! 1. copies the path out of the agent's memory and pins what it names with `O_PATH` in the
//!    agent's root (`RESOLVE_IN_ROOT`, from its working directory or `dirfd`);
//! 2. lets the kernel run the call (CONTINUE) when a tree allows the pinned file, a deny glob
//!    names it (the kernel's layers refuse and log it), or it is neither a regular file nor a
//!    directory (devices, FIFOs and sockets are never asked: Landlock refuses them);
//! 3. otherwise asks, and on approval opens the pinned inode itself, with no capabilities,
//!    and installs that descriptor in the agent (`SECCOMP_IOCTL_NOTIF_ADDFD`), which answers
//!    the call with its number.
//!
//! What was approved is what the agent gets: the judged path is the supervisor's copy, the
//! opened file is the inode pinned before asking, so a thread rewriting the path or swapping
//! a symlink after the request changes nothing.
//!
//! Writes are never asked: outside the write trees the sandbox's view is mounted read-only,
//! so no approval could make one succeed.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::audit::Object;
use crate::layers::seccomp::mediate::{self, Verdict};
use crate::layers::seccomp::{ArgCond, Width};
use crate::policy::Policy;

/// Open flags that make an open more than a read: those opens are never sent here.
const WRITE_INTENT: u64 = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC | libc::O_PATH) as u64;

/// Flags of the agent's open the supervisor's own open keeps (the rest describe how the
/// path is walked, which the pin already did).
const KEPT: i32 = libc::O_DIRECTORY
    | libc::O_NONBLOCK
    | libc::O_NOCTTY
    | libc::O_NOATIME
    | libc::O_LARGEFILE
    | libc::O_CLOEXEC;

/// What the supervisor judges a read by.
#[derive(Debug, Clone)]
pub(crate) struct OpenAsk {
    /// The read, write and exec trees: a file inside one is the kernel's to allow.
    trees: Vec<PathBuf>,
    /// `filesystem.deny`: never asked, left to the kernel's refusal.
    deny: GlobSet,
}

impl OpenAsk {
    pub(crate) fn compile(policy: &Policy) -> anyhow::Result<Self> {
        let fs = &policy.filesystem;
        Ok(OpenAsk {
            trees: fs.all_trees(),
            deny: crate::policy::globs::glob_set(&fs.deny_patterns())?,
        })
    }

    /// The opens the filter sends here: read-only ones (flags are arg 1 of open, arg 2 of
    /// openat; 32 bits), and every openat2.
    pub(crate) fn calls() -> Vec<(i64, Vec<ArgCond>)> {
        vec![
            (
                libc::SYS_open,
                vec![ArgCond::masked(1, Width::Dword, WRITE_INTENT, 0)],
            ),
            (
                libc::SYS_openat,
                vec![ArgCond::masked(2, Width::Dword, WRITE_INTENT, 0)],
            ),
            (libc::SYS_openat2, Vec::new()),
        ]
    }

    pub(crate) fn handles(nr: i64) -> bool {
        matches!(nr, libc::SYS_open | libc::SYS_openat | libc::SYS_openat2)
    }

    /// Judge one open of thread `tid` (`mem`: its memory). `leased`: whether a lease covers
    /// a destination already.
    pub(crate) fn decide(&self, tid: i32, mem: &fs::File, nr: i64, args: &[u64; 6]) -> Verdict {
        let (dirfd, path, flags) = match nr {
            libc::SYS_open => (libc::AT_FDCWD, args[0], args[1]),
            libc::SYS_openat => (args[0] as i32, args[1], args[2]),
            _ => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; }: a call asking for
                // its own resolution rules (or a larger struct) is the kernel's to judge.
                let Ok(how) = mediate::read_exact_at(mem, args[2], 24) else {
                    return Verdict::Continue;
                };
                let word = |i: usize| u64::from_ne_bytes(how[i..i + 8].try_into().expect("8"));
                if args[3] != 24 || word(16) != 0 {
                    return Verdict::Continue;
                }
                (args[0] as i32, args[1], word(0))
            }
        };
        if flags & WRITE_INTENT != 0 {
            return Verdict::Continue;
        }
        let Ok(written) = mediate::read_c_path(mem, path) else {
            return Verdict::Continue;
        };
        let Some(written) = mediate::absolute_at(tid, dirfd, &written) else {
            return Verdict::Continue;
        };
        let follow = flags & libc::O_NOFOLLOW as u64 == 0;
        // What cannot be pinned (missing, a /proc magic link) the kernel answers as it would.
        let Ok((file, resolved)) = mediate::open_path_in_root(tid, &written, follow) else {
            return Verdict::Continue;
        };
        if !self.askable(&file, &resolved) {
            return Verdict::Continue;
        }
        let shown = resolved.to_string_lossy().into_owned();
        Verdict::AskOpen {
            file,
            flags: flags as i32,
            destination: destination(&resolved),
            object: Object::Path {
                path: shown,
                access: "read".into(),
                elided: None,
            },
        }
    }

    /// A regular file or directory no tree allows and no deny glob names.
    fn askable(&self, file: &OwnedFd, resolved: &Path) -> bool {
        if self.trees.iter().any(|t| resolved.starts_with(t)) || self.deny.is_match(resolved) {
            return false;
        }
        // SAFETY: fstat writes one struct stat into a live local.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and a live stat buffer.
        if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
            return false;
        }
        matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR)
    }
}

/// The lease key of a read: `read /path`.
pub(crate) fn destination(path: &Path) -> String {
    format!("read {}", path.display())
}

/// Opens the pinned `file` for reading with the agent's `flags` (those in `KEPT`), as a
/// thread without capabilities: a root supervisor must not read what the agent's own
/// permissions would refuse. Call it on a thread of its own, which it leaves without them.
pub(crate) fn open_on_behalf(tid: i32, file: &OwnedFd, flags: i32) -> Result<OwnedFd, i32> {
    crate::layers::process::act_for_files_as(tid)?;
    let target = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a number");
    // SAFETY: a NUL-terminated path alive for the call; no other pointers.
    let fd = unsafe { libc::open(target.as_ptr(), libc::O_RDONLY | (flags & KEPT)) };
    if fd < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: open just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Installs `fd` in the process behind notification `id` and answers the notification with
/// its number there (`SECCOMP_ADDFD_FLAG_SEND`, Linux 5.14), atomically: the agent's open
/// returns the descriptor the supervisor opened.
pub(crate) fn inject(listener: RawFd, id: u64, fd: &OwnedFd, cloexec: bool) -> io::Result<i64> {
    let addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: fd.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the kernel reads one seccomp_notif_addfd from a live local.
    let rc = unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &addfd as *const libc::seccomp_notif_addfd,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i64::from(rc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_sends_only_read_only_opens() {
        let calls = OpenAsk::calls();
        let openat = &calls
            .iter()
            .find(|(nr, _)| *nr == libc::SYS_openat)
            .unwrap()
            .1;
        let sent = |flags: i32| {
            let args = [0, 0, flags as u64, 0, 0, 0];
            openat.iter().all(|c| c.matches(&args))
        };
        assert!(sent(libc::O_RDONLY));
        assert!(sent(libc::O_RDONLY | libc::O_CLOEXEC | libc::O_DIRECTORY));
        assert!(!sent(libc::O_WRONLY));
        assert!(!sent(libc::O_RDWR));
        assert!(!sent(libc::O_RDONLY | libc::O_CREAT));
        assert!(!sent(libc::O_PATH));
        // The upper half of the register is not part of the flags.
        let args = [0, 0, 1 << 40, 0, 0, 0];
        assert!(openat.iter().all(|c| c.matches(&args)));
    }
}
