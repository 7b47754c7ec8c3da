//! Mounts layer: the sandbox's view of the filesystem, built in init's private mount namespace
//! (root, or any user who may create a user namespace) before Landlock and seccomp.
//!
//! Landlock says which files the agent may open; it has no right for a file's metadata, and
//! its exec right covers execve only. The view closes both at the mount level:
//! - everything is read-only, except the writable trees, which are bind-mounted onto
//!   themselves read-write: chmod, chown, utime and xattr changes outside them fail with EROFS
//!   whatever the file's owner (a root agent cannot set the setuid bit of a system binary);
//! - writable trees are `nosuid,nodev,noexec` unless the exec list covers them, so nothing the
//!   agent writes can be executed or mapped executable (the dynamic loader's mmap of a copied
//!   program fails too); exec trees inside a writable tree get their exec back;
//! - /proc is a new procfs of the sandbox's pid namespace (the host's processes are not in it),
//!   /dev/shm a new tmpfs, and memfds are never executable where the kernel has the per-pid-
//!   namespace `vm.memfd_noexec` (6.3+);
//! - each protect match that exists at launch is bind-mounted onto itself read-only: writing it
//!   fails (EROFS), renaming or deleting it fails (EBUSY), and the directory holding it stays
//!   writable, so git still writes `.git/index`, objects and refs (bubblewrap's `--ro-bind`);
//! - what protects a file must not be sidestepped by replacing a directory above it: every
//!   directory between a writable tree and a protect match (a repository, its `.git`, the
//!   `.vscode` holding tasks.json) is bound onto itself read-write, "pinned": a mount point
//!   cannot be renamed or removed (EBUSY), so no new `.git` with new hooks takes its place.
//!   Programs a repository's config names (`core.hooksPath`, includes, fsmonitor, aliases,
//!   filters: `git.rs`) are protected like the config. The cost: rename(2) across a pin
//!   fails with EXDEV (mv copies instead).
//!
//! The agent cannot undo any of it: seccomp denies the mount family, Landlock forbids mount
//! changes in its domain, and the agent holds no capabilities.
//!
//! `compile` runs in the parent: paths become CStrings there, so the child only calls mount(2)
//! and mount_setattr(2) (hand-written: neither nix nor libc wraps mount_setattr).

use std::ffi::CString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

mod git;

use crate::layers::landlock::Found;
use crate::layers::{Host, Offer};
use crate::policy::Policy;
use crate::policy::{Coverage, Guarantee, Layer, Status};

pub(crate) const LAYER: Layer = Layer::Mounts;

/// capability(7) number of CAP_SYS_ADMIN (libc does not export the capability numbers).
const CAP_SYS_ADMIN: u32 = 21;

// <linux/mount.h>
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Mount points the view mounts anew: rules for them are added on the new mounts.
pub(crate) const REMOUNTED: [&str; 2] = ["/proc", "/dev/shm"];

/// The per-pid-namespace switch that makes every memfd non-executable (Linux 6.3+).
const MEMFD_NOEXEC: &str = "/proc/sys/vm/memfd_noexec";

/// The guarantees the view gives where init can have a mount namespace.
const VIEW_GUARANTEES: [Guarantee; 3] = [
    Guarantee::FsMetadataReadOnly,
    Guarantee::WritableNoExec,
    Guarantee::ProcPrivate,
];

/// One mount of the view, ready for the child.
#[derive(Debug)]
pub(crate) struct TreeMount {
    pub path: PathBuf,
    /// `path` as a C string, built before fork.
    pub c_path: CString,
    /// Read-write (a writable tree) or read-only (an exec tree inside one, or a protect match).
    pub writable: bool,
    /// Programs may run from it (it is in, or under, an exec tree).
    pub exec: bool,
    /// A protect match: bound onto itself read-only, nothing else changed.
    pub protect: bool,
}

/// The view of one sandbox (empty: init shares the supervisor's mounts).
#[derive(Debug, Default)]
pub(crate) struct MountPlan {
    /// The whole view: read-only root, /proc, /dev/shm. False: only protect binds, if any.
    view: bool,
    /// Write "2" to `vm.memfd_noexec` in the sandbox's pid namespace.
    memfd_noexec: bool,
    /// The host has a /dev/shm to replace (a minimal root, like the VM tier's, may not).
    dev_shm: bool,
    /// Bind mounts, parents before children.
    pub binds: Vec<TreeMount>,
    /// The working directory, entered again once the view is built: a bind over it (the
    /// workspace) is not where the old working directory points.
    cwd: Option<CString>,
}

impl MountPlan {
    pub(crate) fn is_empty(&self) -> bool {
        !self.view && self.binds.is_empty()
    }

    /// CHILD side, in init's new mount namespace (and pid namespace), before capabilities are
    /// dropped. No allocation. Returns the errno of the first failure.
    pub(crate) fn apply(&self) -> Result<(), i32> {
        // Nothing propagates back to the host.
        mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE)?;
        if self.view {
            // Before the root turns read-only: a new procfs must be no less writable than the
            // one it replaces, and the sysctl below is a file in it.
            mount(
                Some(c"proc"),
                c"/proc",
                Some(c"proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            )?;
            if self.memfd_noexec {
                write_sysctl(c"/proc/sys/vm/memfd_noexec", b"2")?;
            }
            if self.dev_shm {
                mount(
                    Some(c"tmpfs"),
                    c"/dev/shm",
                    Some(c"tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                )?;
            }
        }
        for bind in self.binds.iter().filter(|b| !b.protect) {
            mount(
                Some(&bind.c_path),
                &bind.c_path,
                None,
                libc::MS_BIND | libc::MS_REC,
            )?;
        }
        if self.view {
            setattr(c"/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)?;
            // The sandbox's own /proc and /dev/shm stay writable (a process adjusts its own
            // /proc entries; multiprocessing creates semaphores in /dev/shm).
            setattr(c"/proc", 0, 0, MOUNT_ATTR_RDONLY)?;
            if self.dev_shm {
                setattr(c"/dev/shm", 0, 0, MOUNT_ATTR_RDONLY)?;
            }
        }
        for bind in self.binds.iter().filter(|b| !b.protect) {
            let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
            let mut clear = 0;
            if bind.writable {
                clear |= MOUNT_ATTR_RDONLY;
            }
            if bind.exec {
                clear |= MOUNT_ATTR_NOEXEC;
            } else {
                set |= MOUNT_ATTR_NOEXEC;
            }
            setattr(&bind.c_path, AT_RECURSIVE, set, clear)?;
        }
        for bind in self.binds.iter().filter(|b| b.protect) {
            mount(Some(&bind.c_path), &bind.c_path, None, libc::MS_BIND)?;
            setattr(&bind.c_path, 0, MOUNT_ATTR_RDONLY, 0)?;
        }
        if let Some(cwd) = &self.cwd {
            // Best effort: a working directory the view hides stays where it was, read-only.
            // SAFETY: `cwd` is NUL-terminated.
            unsafe { libc::chdir(cwd.as_ptr()) };
        }
        Ok(())
    }
}

fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
) -> Result<(), i32> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), std::ffi::CStr::as_ptr);
    // SAFETY: every pointer is a live NUL-terminated string or NULL, as mount(2) allows.
    let r = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `struct mount_attr` of <linux/mount.h> (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn setattr(path: &std::ffi::CStr, flags: libc::c_uint, set: u64, clear: u64) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` a live struct of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn write_sysctl(path: &std::ffi::CStr, value: &[u8]) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `value` is a live buffer of the length passed; `fd` is ours.
    let written = unsafe { libc::write(fd, value.as_ptr().cast(), value.len()) };
    let err = errno();
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if written == value.len() as isize {
        Ok(())
    } else {
        Err(err)
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EPERM)
}

/// Whether this process can give the sandbox a mount namespace: root (CAP_SYS_ADMIN), or any
/// user who may create a user namespace (the mount namespace is then owned by it).
pub(crate) fn available() -> Result<(), String> {
    if crate::kernel::has_cap(CAP_SYS_ADMIN) {
        return Ok(());
    }
    crate::kernel::can_unshare_user_ns()
        .map_err(|e| format!("no mount namespace: cannot create a user namespace: {e}"))
}

/// Doctor's view: the view needs a mount namespace; fileless exec also needs Linux 6.3.
pub(crate) fn offers(_host: &Host) -> Vec<Offer> {
    let by = available().map(|()| "mounts (the sandbox's own mount namespace)".to_string());
    let mut offers: Vec<Offer> = VIEW_GUARANTEES
        .iter()
        .map(|&g| Offer::new(g, by.clone().map_err(|e| format!("mounts: {e}"))))
        .collect();
    offers.push(Offer::new(
        Guarantee::IpcPrivate,
        by.clone()
            .map(|_| "ipcns and the view's /dev/shm".to_string())
            .map_err(|e| format!("ipcns: {e}")),
    ));
    offers.push(Offer::new(
        Guarantee::MemfdNoExec,
        by.and_then(|_| memfd_noexec_available())
            .map(|()| "mounts (vm.memfd_noexec in the sandbox's pid namespace)".to_string())
            .map_err(|e| format!("mounts: {e}")),
    ));
    offers
}

fn memfd_noexec_available() -> Result<(), String> {
    if !Path::new(MEMFD_NOEXEC).exists() {
        return Err("the kernel has no per-pid-namespace vm.memfd_noexec (Linux 6.3+)".into());
    }
    // The sysctl file belongs to the host's root: a user namespace's root may not open it.
    if !crate::kernel::is_root() {
        return Err("vm.memfd_noexec can only be set by root (unprivileged)".into());
    }
    Ok(())
}

/// The real path of each listed tree that exists and may be a mount point (a directory or a
/// regular file; device nodes need no writable mount).
fn mountable(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_dir() || m.is_file()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn under(path: &Path, trees: &[PathBuf]) -> bool {
    trees.iter().any(|t| path.starts_with(t))
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", path.display()))
}

/// The view for `policy`, and the coverage it gives. Call it where init can have a mount
/// namespace of its own (see `available`); elsewhere `unavailable` states what is lost.
/// `protected`: paths the agent must never write whatever its trees say (the audit log or
/// its directory, the profile file): read-only binds like protect matches. `found`: what the
/// deny search found for `find_globs` (`None`: this layer searches itself).
pub(crate) fn compile(
    policy: &Policy,
    protected: &[PathBuf],
    found: Option<Found>,
) -> anyhow::Result<(MountPlan, Coverage)> {
    let mut coverage = Coverage::default();
    let mut binds = Vec::new();
    let writable = mountable(&policy.filesystem.write);
    let exec = mountable(&policy.filesystem.exec);
    for path in &writable {
        binds.push(TreeMount {
            c_path: c_path(path)?,
            path: path.clone(),
            writable: true,
            exec: under(path, &exec),
            protect: false,
        });
    }
    // An exec tree inside a writable tree gets its exec back (and stays writable).
    for path in exec
        .iter()
        .filter(|e| under(e, &writable) && !writable.contains(e))
    {
        binds.push(TreeMount {
            c_path: c_path(path)?,
            path: path.clone(),
            writable: true,
            exec: true,
            protect: false,
        });
    }
    for g in VIEW_GUARANTEES {
        coverage.push(LAYER, g, Status::Enforced);
    }
    let memfd_noexec = memfd_noexec_available();
    coverage.push(
        LAYER,
        Guarantee::MemfdNoExec,
        match &memfd_noexec {
            Ok(()) => Status::Enforced,
            Err(why) => Status::Missing(why.clone()),
        },
    );
    let memfd_noexec = memfd_noexec.is_ok();

    let ProtectPlan {
        protected,
        pins,
        may_match,
        unexamined,
    } = protect_plan(policy, &writable, protected, found)?;
    for path in pins {
        binds.push(TreeMount {
            c_path: c_path(&path)?,
            exec: under(&path, &exec),
            path,
            writable: true,
            protect: false,
        });
    }
    // Parents first: a child's bind lands on top of its parent's.
    binds.sort_by(|a, b| a.path.cmp(&b.path));
    binds.dedup_by(|a, b| a.path == b.path);
    for path in protected {
        binds.push(TreeMount {
            c_path: c_path(&path)?,
            path,
            writable: false,
            exec: false,
            protect: true,
        });
    }
    if may_match {
        let mut why = "protect globs are read-only bind mounts over the matches that exist at \
                       launch; a protected name created later in a writable directory (a new \
                       .envrc at the workspace root) is not covered without BPF LSM"
            .to_string();
        for part in &unexamined {
            tracing::info!(layer = LAYER.name(), "{part}");
            why.push_str("; ");
            why.push_str(part);
        }
        coverage.push(LAYER, Guarantee::FsDenyExact, Status::Partial(why));
    }
    for bind in &binds {
        tracing::debug!(
            layer = LAYER.name(),
            path = %bind.path.display(),
            writable = bind.writable,
            exec = bind.exec,
            protect = bind.protect,
            "view mount"
        );
    }
    Ok((
        MountPlan {
            view: true,
            memfd_noexec,
            dev_shm: Path::new("/dev/shm").is_dir(),
            binds,
            cwd: std::env::current_dir()
                .ok()
                .and_then(|d| CString::new(d.into_os_string().into_vec()).ok()),
        },
        coverage,
    ))
}

/// Whether a protect glob names something inside a git directory (`**/.git/hooks`).
fn protects_git(policy: &Policy) -> bool {
    policy
        .filesystem
        .protect
        .iter()
        .any(|g| g.pattern.contains("/.git/"))
}

/// The globs whose matches in the writable trees this layer binds read-only: the protect
/// globs, and with git protected every repository's `HEAD` (see `protect_plan`).
pub(crate) fn find_globs(policy: &Policy) -> Vec<String> {
    const GIT_HEAD: &str = "**/.git/HEAD";
    let mut globs: Vec<String> = policy
        .filesystem
        .protect
        .iter()
        .map(|g| g.pattern.clone())
        .collect();
    if protects_git(policy) {
        globs.push(GIT_HEAD.into());
    }
    globs
}

/// What `protect_plan` found.
struct ProtectPlan {
    /// Read-only binds.
    protected: Vec<PathBuf>,
    /// Directories bound onto themselves so they cannot be renamed or removed.
    pins: Vec<PathBuf>,
    /// Whether a protect glob may match later, below a writable tree.
    may_match: bool,
    /// What the bounded search did not examine.
    unexamined: Vec<String>,
}

/// What the protect globs need: read-only binds, pinned directories, and whether one may
/// match later.
///
/// With git protected, every repository's git directory is found too (an internal
/// `**/.git/HEAD` search: a match inside `.git` leaves its siblings to the other globs): the
/// directory is pinned and its config read for the programs it names, and a `.git` file
/// (the pointer of a linked worktree or a submodule, at a writable tree's top or a path
/// `.gitmodules` names) is protected.
fn protect_plan(
    policy: &Policy,
    writable: &[PathBuf],
    always: &[PathBuf],
    found: Option<Found>,
) -> anyhow::Result<ProtectPlan> {
    let protects_git = protects_git(policy);
    let found = match found {
        Some(found) => found,
        None => crate::layers::landlock::protect_matches(policy, &find_globs(policy))
            .context("finding protect matches")?,
    };
    let Found {
        matches,
        may_match,
        unexamined,
    } = found;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut protected = Vec::new();
    let mut pins = Vec::new();
    let mut pointers: Vec<PathBuf> = writable.iter().map(|w| w.join(".git")).collect();
    for path in matches {
        let git_dir = path
            .parent()
            .filter(|d| protects_git && path.ends_with(".git/HEAD") && d.is_dir());
        match git_dir {
            Some(dir) => {
                let worktree = dir.parent().unwrap_or(Path::new("/"));
                protected.extend(
                    git::targets(&dir.join("config"), worktree, home.as_deref())
                        .into_iter()
                        .filter(|t| under(t, writable) && !writable.contains(t)),
                );
                pointers.extend(
                    git::submodule_paths(worktree)
                        .into_iter()
                        .map(|p| p.join(".git")),
                );
                pins.push(dir.to_path_buf());
            }
            None => protected.push(path),
        }
    }
    if protects_git {
        protected.extend(
            pointers
                .into_iter()
                .filter(|p| p.is_file() && under(p, writable)),
        );
    }
    protected.extend(
        always
            .iter()
            .filter_map(|p| crate::profile::canonical_path(p).ok())
            .filter(|p| under(p, writable) && !writable.contains(p)),
    );
    protected.sort();
    protected.dedup();
    // Every directory strictly between a writable tree and what is protected or pinned.
    for path in protected.clone().iter().chain(pins.clone().iter()) {
        for ancestor in path.ancestors().skip(1) {
            if writable.iter().any(|w| w == ancestor) || !under(ancestor, writable) {
                break;
            }
            pins.push(ancestor.to_path_buf());
        }
    }
    pins.retain(|p| !protected.contains(p) && !writable.contains(p));
    pins.sort();
    pins.dedup();
    Ok(ProtectPlan {
        protected,
        pins,
        may_match,
        unexamined,
    })
}

/// The view's coverage where init cannot have a mount namespace: what the fallback loses.
pub(crate) fn unavailable(why: &str) -> Coverage {
    let mut coverage = Coverage::default();
    for g in VIEW_GUARANTEES.into_iter().chain([Guarantee::MemfdNoExec]) {
        coverage.push(LAYER, g, Status::Missing(why.to_string()));
    }
    coverage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DenyGlob;

    fn policy(write: &std::path::Path, protect: &[&str]) -> Policy {
        let mut p = Policy {
            name: "t".into(),
            ..Default::default()
        };
        p.filesystem.write.push(write.to_path_buf());
        p.filesystem.protect = protect
            .iter()
            .map(|g| DenyGlob {
                pattern: g.to_string(),
            })
            .collect();
        p
    }

    /// The paths the plan binds read-only.
    fn protected_binds(plan: &MountPlan) -> Vec<PathBuf> {
        plan.binds
            .iter()
            .filter(|b| b.protect)
            .map(|b| b.path.clone())
            .collect()
    }

    #[test]
    fn existing_protect_matches_in_writable_trees_become_read_only_binds() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(ws.join("repo/.git/hooks")).unwrap();
        std::fs::write(ws.join("repo/.git/config"), "[core]\n").unwrap();
        std::fs::write(ws.join("repo/.git/index"), "").unwrap();
        let p = policy(&ws, &["**/.git/hooks", "**/.git/config", "**/.envrc"]);
        let (plan, coverage) = compile(&p, &[], None).unwrap();
        assert_eq!(
            protected_binds(&plan),
            [ws.join("repo/.git/config"), ws.join("repo/.git/hooks")]
        );
        for bind in &plan.binds {
            assert_eq!(bind.c_path.as_bytes(), bind.path.as_os_str().as_bytes());
        }
        // `.envrc` may still be created later: reported partial, naming this layer.
        let gap = coverage.gap(Guarantee::FsDenyExact).unwrap();
        assert!(
            gap.starts_with("mounts: ") && gap.contains("created later"),
            "{gap}"
        );
    }

    /// The deny search's walk answers the view's find request with what the view's own
    /// search finds: the same binds and pins either way.
    #[test]
    fn protect_matches_found_by_the_deny_walk_are_the_view_s_own() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        for d in ["a/.git/hooks/sub", "a/src", "b/c/.git/hooks", "d"] {
            std::fs::create_dir_all(ws.join(d)).unwrap();
        }
        for f in [
            "a/.git/config",
            "a/.git/HEAD",
            "b/c/.git/HEAD",
            "d/.envrc",
            ".env",
        ] {
            std::fs::write(ws.join(f), "x").unwrap();
        }
        let mut p = policy(&ws, &["**/.git/hooks", "**/.git/config", "**/.envrc"]);
        p.filesystem.deny.push(DenyGlob {
            pattern: "**/.env".into(),
        });
        p.filesystem.search_ms = Some(60_000);
        let share = crate::layers::landlock::Share {
            protect_by_mounts: true,
            ..Default::default()
        };
        let (reply, found) = std::sync::mpsc::channel();
        let request = crate::layers::landlock::FindRequest {
            globs: find_globs(&p),
            reply,
        };
        crate::layers::landlock::compile(&p, &share, &[], Some(request)).unwrap();
        let found = found.recv().expect("the deny walk answers");
        assert!(found.may_match && found.unexamined.is_empty(), "{found:?}");
        let binds = |plan: &MountPlan| -> Vec<(PathBuf, bool)> {
            plan.binds
                .iter()
                .map(|b| (b.path.clone(), b.protect))
                .collect()
        };
        let (walked, _) = compile(&p, &[], Some(found)).unwrap();
        let (own, _) = compile(&p, &[], None).unwrap();
        assert_eq!(binds(&walked), binds(&own));
        assert_eq!(
            protected_binds(&walked),
            [
                ws.join("a/.git/config"),
                ws.join("a/.git/hooks"),
                ws.join("b/c/.git/hooks"),
                ws.join("d/.envrc"),
            ]
        );
    }

    #[test]
    fn writable_trees_are_read_write_binds_noexec_unless_an_exec_tree_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(ws.join("w/bin")).unwrap();
        std::fs::create_dir_all(ws.join("x")).unwrap();
        let mut p = policy(&ws.join("w"), &[]);
        p.filesystem.write.push(ws.join("x"));
        // Missing trees and device nodes get no mount.
        p.filesystem.write.push(ws.join("missing"));
        p.filesystem.write.push("/dev/null".into());
        p.filesystem.exec = vec![ws.join("w/bin"), ws.join("x")];
        let (plan, coverage) = compile(&p, &[], None).unwrap();
        assert!(!plan.is_empty());
        let view: Vec<(PathBuf, bool, bool)> = plan
            .binds
            .iter()
            .map(|b| (b.path.clone(), b.writable, b.exec))
            .collect();
        assert_eq!(
            view,
            [
                (ws.join("w"), true, false),
                (ws.join("w/bin"), true, true),
                (ws.join("x"), true, true),
            ]
        );
        for g in [
            Guarantee::FsMetadataReadOnly,
            Guarantee::WritableNoExec,
            Guarantee::ProcPrivate,
        ] {
            assert!(coverage.enforces(g), "{g:?}: {coverage:?}");
        }
        let lost = unavailable("no user namespaces");
        assert!(lost
            .gap(Guarantee::FsMetadataReadOnly)
            .unwrap()
            .contains("no user namespaces"));
    }
}
