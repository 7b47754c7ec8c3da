//! A private temporary directory per sandbox: `<host TMPDIR>/agentbox-<sandbox id>`.
//!
//! The agent gets it as `${TMPDIR}` (profiles) and as its `TMPDIR` environment variable,
//! instead of the host's shared /tmp, where other programs keep their temporary files and
//! sockets (ssh-agent, X11, tmux). It is created before the profile is loaded and removed,
//! with everything the agent left in it, when the sandbox ends.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Name prefix of the private directories under the host's TMPDIR.
pub(super) const PREFIX: &str = "agentbox-";
/// Suffix of a private directory until it is locked (see `PrivateTmp::create`).
const STAGING_SUFFIX: &str = ".new";
/// A staging directory older than this was left by a supervisor that died creating it.
const STAGING_STALE: std::time::Duration = std::time::Duration::from_secs(60);

/// The sandbox's temporary directory; removed on `remove` or drop.
///
/// The supervisor holds `flock(LOCK_EX)` on it for its whole life: the lock dies with its
/// holder, so a directory whose lock can be taken belongs to a supervisor that was killed
/// (SIGKILL skips the removal), and `reclaim_dead` removes it.
#[derive(Debug)]
pub struct PrivateTmp {
    path: PathBuf,
    removed: bool,
    _lock: fs::File,
}

/// Removes the private TMPDIRs under `host_tmp` of this user's dead supervisors (see
/// `PrivateTmp`). Returns what it removed.
pub(crate) fn reclaim_dead(host_tmp: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(host_tmp) else {
        return Vec::new();
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        // `agentbox-<16 hex digits>` only: `agentbox-<uid>` is the unprivileged log fallback.
        let name = name.to_string_lossy();
        let (name, staging) = match name.strip_suffix(STAGING_SUFFIX) {
            Some(stem) => (stem, true),
            None => (&*name, false),
        };
        let id = name.strip_prefix(PREFIX).map(str::to_string);
        let is_sandbox_id =
            id.is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        let old_enough = |m: &fs::Metadata| {
            !staging
                || m.modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STAGING_STALE)
        };
        let is_ours = is_sandbox_id
            && entry.metadata().is_ok_and(|m| {
                m.is_dir() && m.uid() == me && m.mode() & 0o777 == 0o700 && old_enough(&m)
            });
        if !is_ours {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = fs::File::open(&path) else {
            continue;
        };
        if try_lock(&dir) && remove_tree(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// `flock(LOCK_EX | LOCK_NB)`: true when taken.
fn try_lock(file: &fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl PrivateTmp {
    /// Creates `<host_tmp>/agentbox-<sandbox>`, mode 0700, owned by the caller. Fails if the
    /// name exists: a directory someone else prepared is never adopted.
    ///
    /// Made under a staging name and renamed once locked: a directory that carries the final
    /// name is always locked by a live supervisor, so another run's `reclaim_dead` can never
    /// take a directory between its creation and its lock (seen with two runs starting in
    /// the same millisecond). A staging directory left by a crash is reclaimed once old.
    pub fn create(host_tmp: &Path, sandbox: &str) -> anyhow::Result<PrivateTmp> {
        let path = host_tmp.join(format!("{PREFIX}{sandbox}"));
        let staging = host_tmp.join(format!("{PREFIX}{sandbox}{STAGING_SUFFIX}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("creating the sandbox's TMPDIR {}", staging.display()))?;
        let lock = fs::File::open(&staging)
            .with_context(|| format!("opening the sandbox's TMPDIR {}", staging.display()))?;
        if !try_lock(&lock) {
            anyhow::bail!("{} is locked by another process", staging.display());
        }
        if path.exists() {
            let _ = fs::remove_dir(&staging);
            anyhow::bail!(
                "{} exists already: a directory someone else made is never adopted",
                path.display()
            );
        }
        fs::rename(&staging, &path)
            .with_context(|| format!("renaming {} to {}", staging.display(), path.display()))?;
        let tmp = PrivateTmp {
            path,
            removed: false,
            _lock: lock,
        };
        // The umask can only take bits away; set the mode anyway so it is exactly 0700.
        fs::set_permissions(&tmp.path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", tmp.path.display()))?;
        Ok(tmp)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything in it, without following symlinks.
    pub fn remove(mut self) -> anyhow::Result<()> {
        self.removed = true;
        remove_tree(&self.path)
            .with_context(|| format!("removing the sandbox's TMPDIR {}", self.path.display()))
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = remove_tree(&self.path) {
                tracing::warn!("removing {}: {e}", self.path.display());
            }
        }
    }
}

/// `remove_dir_all` (which removes symlinks themselves and never follows them), retried once
/// after giving the owner rwx on every directory below: an unprivileged agent may leave a
/// directory it made read-only, whose entries its owner then cannot unlink.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            open_up(path);
            match fs::remove_dir_all(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    }
}

/// Adds u+rwx to `dir` and every directory below it (symlinks are not followed).
fn open_up(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(
        dir,
        fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            open_up(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn created_private_and_removed_without_following_symlinks() {
        let host = tempfile::tempdir().unwrap();
        let outside = host.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();

        let tmp = PrivateTmp::create(host.path(), "0123abcd").unwrap();
        assert_eq!(tmp.path(), host.path().join("agentbox-0123abcd"));
        let mode = fs::metadata(tmp.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // A name that exists is refused, never adopted.
        assert!(PrivateTmp::create(host.path(), "0123abcd").is_err());

        let sub = tmp.path().join("a/b");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("f"), "y").unwrap();
        symlink(&outside, tmp.path().join("link")).unwrap();
        fs::set_permissions(tmp.path().join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        let path = tmp.path().to_path_buf();
        tmp.remove().unwrap();
        assert!(!path.exists());
        assert!(outside.join("keep").exists(), "the symlink's target stays");
    }

    /// Another run's reclaim never takes a directory that is being created: it only gets
    /// its final name once locked, and a staging directory is reclaimed only when old.
    #[test]
    fn a_young_staging_dir_is_left_alone_and_an_old_one_reclaimed() {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let host = tempfile::tempdir().unwrap();
        let staging = host.path().join("agentbox-0123456789abcdef.new");
        fs::DirBuilder::new().mode(0o700).create(&staging).unwrap();
        assert!(reclaim_dead(host.path()).is_empty());
        assert!(
            staging.exists(),
            "a young staging directory belongs to a starting run"
        );

        let old = libc::timespec {
            tv_sec: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - 120) as libc::time_t,
            tv_nsec: 0,
        };
        let times = [old, old];
        let c = CString::new(staging.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and two live timespecs.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(r, 0);
        assert_eq!(reclaim_dead(host.path()), std::slice::from_ref(&staging));
        assert!(!staging.exists());
    }

    #[test]
    fn dropped_is_removed() {
        let host = tempfile::tempdir().unwrap();
        let path = {
            let tmp = PrivateTmp::create(host.path(), "feed").unwrap();
            fs::write(tmp.path().join("f"), "y").unwrap();
            tmp.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
