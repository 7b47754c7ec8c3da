//! Execs outside the exec trees, put to the approver (`filesystem.exec_unknown = "ask"`,
//! `--ask exec`). Needs BPF LSM: the plan refuses the setting without it.
//!
//! The filter sends every execve/execveat here. The supervisor copies the path, pins the
//! file it names in the agent's view, and lets the kernel run the call when the file is
//! inside an exec tree, a deny glob names it, it is not a regular file, or no tree lets the
//! agent read it (the kernel refuses those and logs it). Otherwise it asks; on approval it
//! writes a BPF LSM rule for the pinned inode (exec allowed, as inside an exec tree) and
//! only then lets the exec continue. BPF LSM judges the file the kernel actually opens, so a
//! thread that swaps the path after the request runs nothing new: the other file's inode has
//! no rule. A `once` approval's rule is taken back when the process runs the file (or after
//! a second).
//!
//! Landlock cannot take a rule while the agent runs, so with this setting it lets every
//! readable file run, and BPF LSM alone holds the exec allow-list (the launch record says so).

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use globset::GlobSet;

use crate::audit::Object;
use crate::layers::seccomp::mediate::{self, Verdict};
use crate::layers::seccomp::ArgCond;
use crate::policy::Policy;

/// What the supervisor judges an exec by, and where approvals become kernel rules.
#[derive(Debug, Clone)]
pub(crate) struct ExecAsk {
    exec_trees: Vec<PathBuf>,
    /// The read, write and exec trees: what Landlock lets the agent open at all.
    readable: Vec<PathBuf>,
    deny: GlobSet,
    /// This sandbox's BPF LSM rules, once it is registered.
    grants: OnceLock<ebpf_probes::Grants>,
}

impl ExecAsk {
    pub(crate) fn compile(policy: &Policy) -> anyhow::Result<Self> {
        let fs = &policy.filesystem;
        Ok(ExecAsk {
            exec_trees: fs.exec.clone(),
            readable: fs.all_trees(),
            deny: crate::policy::globs::glob_set(&fs.deny_patterns())?,
            grants: OnceLock::new(),
        })
    }

    pub(crate) fn calls() -> Vec<(i64, Vec<ArgCond>)> {
        vec![
            (libc::SYS_execve, Vec::new()),
            (libc::SYS_execveat, Vec::new()),
        ]
    }

    pub(crate) fn handles(nr: i64) -> bool {
        nr == libc::SYS_execve || nr == libc::SYS_execveat
    }

    /// Where approvals go: the sandbox's BPF LSM rules (set once it is registered).
    pub(crate) fn set_grants(&self, grants: ebpf_probes::Grants) {
        let _ = self.grants.set(grants);
    }

    pub(crate) fn grants(&self) -> Option<&ebpf_probes::Grants> {
        self.grants.get()
    }

    /// Judge one exec of thread `tid` (`mem`: its memory).
    pub(crate) fn decide(&self, tid: i32, mem: &fs::File, nr: i64, args: &[u64; 6]) -> Verdict {
        let (dirfd, path, flags) = if nr == libc::SYS_execve {
            (libc::AT_FDCWD, args[0], 0)
        } else {
            (args[0] as i32, args[1], args[4] as i32)
        };
        let Ok(written) = mediate::read_c_path(mem, path) else {
            // An empty path (AT_EMPTY_PATH: the descriptor itself) is judged by BPF LSM alone.
            return Verdict::Continue;
        };
        let Some(written) = mediate::absolute_at(tid, dirfd, &written) else {
            return Verdict::Continue;
        };
        let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
        let Ok((file, resolved)) = mediate::open_path_in_root(tid, &written, follow) else {
            return Verdict::Continue;
        };
        let Some(inode) = self.askable(&file, &resolved) else {
            return Verdict::Continue;
        };
        Verdict::AskExec {
            file,
            inode,
            destination: destination(&resolved),
            object: Object::Exec {
                path: resolved.to_string_lossy().into_owned(),
            },
        }
    }

    /// The inode of a readable regular file outside the exec trees that no deny glob names.
    fn askable(&self, file: &OwnedFd, resolved: &Path) -> Option<ebpf_probes::InodeId> {
        if self.exec_trees.iter().any(|t| resolved.starts_with(t))
            || !self.readable.iter().any(|t| resolved.starts_with(t))
            || self.deny.is_match(resolved)
        {
            return None;
        }
        let meta = fs::metadata(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        meta.is_file().then(|| ebpf_probes::InodeId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// The lease key of an exec: `exec /path`.
pub(crate) fn destination(path: &Path) -> String {
    format!("exec {}", path.display())
}

/// Waits (up to a second) until process `tgid` has `inode` mapped executable, or is gone:
/// then a `once` approval's rule has done its work. (Its /proc/PID/exe changes earlier, before
/// the kernel maps the program, which BPF LSM checks too. A script never shows up: its
/// interpreter runs; the second runs out.)
pub(crate) fn wait_for_exec(tgid: i32, inode: ebpf_probes::InodeId) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut pause = Duration::from_micros(100);
    let dev = format!(
        "{:02x}:{:02x}",
        libc::major(inode.dev),
        libc::minor(inode.dev)
    );
    let ino = inode.ino.to_string();
    while Instant::now() < deadline {
        let Ok(maps) = fs::read_to_string(format!("/proc/{tgid}/maps")) else {
            return;
        };
        let mapped = maps.lines().any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() >= 5 && f[1].as_bytes().get(2) == Some(&b'x') && f[3] == dev && f[4] == ino
        });
        if mapped {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
