//! Mounts layer: `[filesystem] protect` enforced with read-only bind mounts in the sandbox's
//! private mount namespace (bubblewrap's `--ro-bind PATH PATH`).
//!
//! Each protect match that exists at launch inside a writable tree is bind-mounted onto itself
//! and remounted read-only by init (supervisor/child.rs), before Landlock and seccomp. Writes
//! fail with EROFS, renaming or unlinking the mount point fails with EBUSY, and the directory
//! holding it stays writable: `.git/hooks` and `.git/config` are protected while git still
//! writes `.git/index`, objects, refs and locks. Landlock's alternative (omission, see
//! `layers::landlock`) takes create/rename from every directory on the way to a match.
//!
//! The agent cannot undo the mounts: seccomp denies the mount family, Landlock forbids mount
//! changes in its domain, and the agent holds no capabilities.
//!
//! `compile` runs in the parent: paths become CStrings and the flags of the mount under each
//! path are read there (a remount in a user namespace must keep the locked nosuid, nodev,
//! noexec and atime flags of the mount it copies), so the child only calls mount(2).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Context;

use crate::policy::Policy;
use crate::policy::{Coverage, Guarantee, Layer, Status};

pub(crate) const LAYER: Layer = Layer::Mounts;

/// capability(7) number of CAP_SYS_ADMIN (libc does not export the capability numbers).
const CAP_SYS_ADMIN: u32 = 21;

/// statvfs flags that a remount must keep (ST_* and MS_* share their values).
const KEPT_FLAGS: libc::c_ulong = libc::ST_NOSUID
    | libc::ST_NODEV
    | libc::ST_NOEXEC
    | libc::ST_NOATIME
    | libc::ST_NODIRATIME
    | libc::ST_RELATIME;

/// One read-only bind mount, ready for the child.
#[derive(Debug)]
pub(crate) struct RoBind {
    pub path: PathBuf,
    /// `path` as a C string, built before fork.
    pub c_path: CString,
    /// MS_BIND | MS_REMOUNT | MS_RDONLY plus the kept flags of the underlying mount.
    pub remount_flags: libc::c_ulong,
}

/// The read-only bind mounts of one sandbox (empty: no mount namespace is needed).
#[derive(Debug, Default)]
pub(crate) struct MountPlan {
    pub binds: Vec<RoBind>,
}

impl MountPlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.binds.is_empty()
    }

    /// CHILD side, in init's new mount namespace, before capabilities are dropped: make every
    /// mount private (nothing propagates back to the host), then bind each path onto itself
    /// read-only. No allocation. Returns the errno of the first failure.
    pub(crate) fn apply(&self) -> Result<(), i32> {
        let root = c"/";
        // SAFETY: every pointer is a live NUL-terminated string or NULL, as mount(2) allows.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(errno());
        }
        for bind in &self.binds {
            let path = bind.c_path.as_ptr();
            // SAFETY: as above; `path` lives as long as `self`.
            let r = unsafe {
                libc::mount(
                    path,
                    path,
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(errno());
            }
            // SAFETY: as above.
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    path,
                    std::ptr::null(),
                    bind.remount_flags,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(errno());
            }
        }
        Ok(())
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

/// The bind mounts for `policy`'s protect globs, and the coverage they give.
pub(crate) fn compile(policy: &Policy) -> anyhow::Result<(MountPlan, Coverage)> {
    let (matches, may_match) =
        crate::layers::landlock::protect_matches(policy).context("finding protect matches")?;
    let mut binds = Vec::new();
    for path in matches {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .with_context(|| format!("{} contains a NUL byte", path.display()))?;
        let vfs = nix::sys::statvfs::statvfs(&path)
            .with_context(|| format!("statvfs {}", path.display()))?;
        let kept = vfs.flags().bits() as libc::c_ulong & KEPT_FLAGS;
        binds.push(RoBind {
            path,
            c_path,
            remount_flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | kept,
        });
    }
    let mut coverage = Coverage::default();
    if may_match {
        coverage.push(
            LAYER,
            Guarantee::FsDenyExact,
            Status::Partial(
                "protect globs are read-only bind mounts over the matches that exist at launch; \
                 a protected name created later in a writable directory (a new .envrc at the \
                 workspace root) is not covered without BPF LSM"
                    .into(),
            ),
        );
    }
    for bind in &binds {
        tracing::debug!(layer = LAYER.name(), path = %bind.path.display(), "read-only bind");
    }
    Ok((MountPlan { binds }, coverage))
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

    #[test]
    fn existing_protect_matches_in_writable_trees_become_read_only_binds() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(ws.join("repo/.git/hooks")).unwrap();
        std::fs::write(ws.join("repo/.git/config"), "[core]\n").unwrap();
        std::fs::write(ws.join("repo/.git/index"), "").unwrap();
        let p = policy(&ws, &["**/.git/hooks", "**/.git/config", "**/.envrc"]);
        let (plan, coverage) = compile(&p).unwrap();
        let paths: Vec<&std::path::Path> = plan.binds.iter().map(|b| b.path.as_path()).collect();
        assert_eq!(
            paths,
            [ws.join("repo/.git/config"), ws.join("repo/.git/hooks")]
        );
        for bind in &plan.binds {
            assert_eq!(bind.c_path.as_bytes(), bind.path.as_os_str().as_bytes());
            let required = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
            assert_eq!(bind.remount_flags & required, required);
        }
        // `.envrc` may still be created later: reported partial, naming this layer.
        let gap = coverage.gap(Guarantee::FsDenyExact).unwrap();
        assert!(
            gap.starts_with("mounts: ") && gap.contains("created later"),
            "{gap}"
        );
    }

    #[test]
    fn no_protect_globs_no_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, coverage) = compile(&policy(dir.path(), &[])).unwrap();
        assert!(plan.is_empty());
        assert!(coverage.entries.is_empty());
    }
}
