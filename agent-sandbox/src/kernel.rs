//! Read-only probes of what this kernel and these privileges offer. Layers use them to report
//! `Coverage`; `doctor` prints them. Each probe asks the kernel directly instead of guessing
//! from version numbers or configuration files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Landlock ABI version, or the errno text explaining why Landlock is unavailable.
pub(crate) fn landlock_abi() -> Result<u32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr, size 0 and the VERSION flag the syscall reads no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOSYS) => "kernel built without Landlock (ENOSYS)".into(),
            Some(libc::EOPNOTSUPP) => "Landlock disabled at boot (not in lsm=)".into(),
            _ => err.to_string(),
        });
    }
    Ok(ret as u32)
}

/// What each Landlock ABI version adds, for reports.
pub(crate) fn landlock_abi_features(abi: u32) -> Vec<&'static str> {
    let all = [
        (1, "filesystem rights"),
        (2, "refer (rename/link)"),
        (3, "truncate"),
        (4, "TCP bind/connect ports"),
        (5, "ioctl on devices"),
        (6, "signal + abstract-socket scoping"),
        (7, "audit log flags"),
    ];
    all.iter()
        .filter(|(v, _)| *v <= abi)
        .map(|(_, f)| *f)
        .collect()
}

/// Seccomp return actions this kernel implements (SECCOMP_GET_ACTION_AVAIL).
pub(crate) fn seccomp_action_available(action: u32) -> bool {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
    // SAFETY: the kernel reads one u32 from a pointer to a live local.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    ret == 0
}

pub(crate) const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(crate) const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub(crate) const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
pub(crate) const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// Whether the seccomp filter mode exists at all (prctl(PR_GET_SECCOMP) answers).
pub(crate) fn seccomp_filter_available() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointers.
    let ret = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    ret >= 0 && seccomp_action_available(SECCOMP_RET_ERRNO)
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The effective capability mask of this process, from /proc/self/status.
pub(crate) fn effective_caps() -> u64 {
    status_hex_field("CapEff").unwrap_or(0)
}

fn status_hex_field(name: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_BPF: u32 = 39;

pub(crate) fn has_cap(cap: u32) -> bool {
    effective_caps() & (1u64 << cap) != 0
}

/// Where cgroup2 is mounted: `/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one. Read from /proc/self/mountinfo, never assumed.
pub fn cgroup2_mount() -> Option<PathBuf> {
    mount_of_type("cgroup2")
}

/// First mount point of the given filesystem type.
pub(crate) fn mount_of_type(fstype: &str) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // fields: id parent maj:min root mountpoint opts ... - fstype source superopts
        let (pre, post) = line.split_once(" - ")?;
        let ty = post.split_whitespace().next()?;
        let mountpoint = pre.split_whitespace().nth(4)?;
        (ty == fstype).then(|| PathBuf::from(unescape_mountinfo(mountpoint)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Controllers enabled in a cgroup2 directory (its `cgroup.controllers`).
pub(crate) fn cgroup2_controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Try to create (and remove) a child group under `dir`: the only honest answer to "can I".
pub(crate) fn can_create_cgroup(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!("agentbox-probe-{}", std::process::id()));
    fs::create_dir(&probe).map_err(|e| format!("mkdir {}: {e}", probe.display()))?;
    fs::remove_dir(&probe).map_err(|e| format!("rmdir {}: {e}", probe.display()))
}

/// Mount point of a cgroup v1 hierarchy that has `controller`.
pub(crate) fn cgroup1_mount(controller: &str) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let superopts = post.nth(1)?;
        let mountpoint = pre.split_whitespace().nth(4)?;
        superopts
            .split(',')
            .any(|o| o == controller)
            .then(|| PathBuf::from(unescape_mountinfo(mountpoint)))
    })
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is a mounted bpffs.
pub(crate) fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// The active LSMs, if securityfs is mounted.
pub(crate) fn active_lsms() -> Result<Vec<String>, String> {
    fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().split(',').map(str::to_string).collect())
        .map_err(|e| format!("/sys/kernel/security/lsm: {e} (is securityfs mounted?)"))
}

/// Whether this process may create a user namespace (tried in a short-lived child).
pub(crate) fn can_unshare_user_ns() -> Result<(), String> {
    use nix::sched::CloneFlags;
    // A child is made in a user namespace of its own, as the sandbox's init will be, and
    // exits at once. CLONE_VM|CLONE_VFORK: it shares our memory and we wait for its exit, so
    // no page table of this (large) process is copied; a fork cost half a millisecond here.
    let mut stack = [0u8; 16 * 1024];
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK;
    // SAFETY: the child runs only the closure, which touches nothing and returns 0 (libc's
    // clone then calls _exit); CLONE_VFORK keeps us suspended, off the shared stack buffer,
    // until it has exited.
    let child =
        unsafe { nix::sched::clone(Box::new(|| 0), &mut stack, flags, Some(libc::SIGCHLD)) }
            .map_err(|e| io::Error::from(e).to_string())?;
    match nix::sys::wait::waitpid(child, None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(other) => Err(format!("the probe child ended with {other:?}")),
        Err(e) => Err(io::Error::from(e).to_string()),
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/x\134"), r"/x\");
    }

    #[test]
    fn abi_features_grow_with_version() {
        assert_eq!(landlock_abi_features(0).len(), 0);
        assert!(landlock_abi_features(4).contains(&"TCP bind/connect ports"));
        assert!(!landlock_abi_features(5)
            .iter()
            .any(|f| f.contains("scoping")));
    }

    #[test]
    fn seccomp_errno_action_is_known_everywhere_seccomp_exists() {
        // ERRNO has existed as long as filter mode; an unknown action must be refused.
        if seccomp_filter_available() {
            assert!(seccomp_action_available(SECCOMP_RET_ERRNO));
            assert!(!seccomp_action_available(0x1234_0000));
        }
    }
}
