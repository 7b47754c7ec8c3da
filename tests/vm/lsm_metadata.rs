//! BPF LSM metadata rules: chmod, chown, utime, setxattr, removexattr and truncate only
//! inside the write trees, never on protected files (Landlock cannot express these).

use std::ffi::CString;
use std::fs;

use agentbox_tests::bpf::{assert_gapless, errno_of};
use ebpf_probes::{LsmHook, LsmReason, LsmRules};
use nix::sys::wait::WaitStatus;

use crate::lsm_support::{assert_denials, c_path, inode, lsm_runtime, run_with_rules};

fn chmod(path: &CString) -> i32 {
    // SAFETY: NUL-terminated path.
    errno_of(unsafe { libc::chmod(path.as_ptr(), 0o600) }.into())
}

fn chown(path: &CString) -> i32 {
    // SAFETY: NUL-terminated path.
    errno_of(unsafe { libc::chown(path.as_ptr(), 0, 0) }.into())
}

fn utime(path: &CString) -> i32 {
    // SAFETY: NUL-terminated path; a null times pointer means "now".
    errno_of(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), std::ptr::null(), 0) }.into())
}

fn setxattr(path: &CString) -> i32 {
    let value = b"1";
    // SAFETY: NUL-terminated path and name; value is valid for its length.
    errno_of(
        unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"trusted.agentbox".as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
        .into(),
    )
}

fn removexattr(path: &CString) -> i32 {
    // SAFETY: NUL-terminated path and name.
    errno_of(unsafe { libc::removexattr(path.as_ptr(), c"trusted.agentbox".as_ptr()) }.into())
}

fn truncate(path: &CString) -> i32 {
    // SAFETY: NUL-terminated path.
    errno_of(unsafe { libc::truncate(path.as_ptr(), 0) }.into())
}

#[test]
fn metadata_changes_outside_write_trees_and_on_protected_files_are_denied() {
    let rt = lsm_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let rw = dir.path().join("rw");
    let ro = dir.path().join("ro");
    fs::create_dir_all(&rw).expect("mkdir rw");
    fs::create_dir_all(&ro).expect("mkdir ro");
    let readonly = ro.join("file");
    let writable = rw.join("file");
    let protected = rw.join("secret");
    for file in [&readonly, &writable, &protected] {
        fs::write(file, "data").expect("write");
    }
    // The xattr exists on the read-only file, so only the LSM can make removexattr fail.
    assert_eq!(
        setxattr(&c_path(&readonly)),
        0,
        "trusted xattrs work on tmpfs"
    );

    let rules = LsmRules {
        deny_inodes: vec![inode(&protected)],
        write_trees: Some(vec![inode(&rw)]),
        ..LsmRules::default()
    };
    let (r, w, p) = (c_path(&readonly), c_path(&writable), c_path(&protected));
    let run = run_with_rules(rt, rules, move || {
        vec![
            chmod(&r),
            chown(&r),
            utime(&r),
            setxattr(&r),
            removexattr(&r),
            truncate(&r),
            chmod(&p),
            chmod(&w),
            chown(&w),
            utime(&w),
            setxattr(&w),
            truncate(&w),
        ]
    });
    assert!(matches!(run.status, WaitStatus::Exited(_, 0)), "{run:?}");
    let eperm = libc::EPERM;
    assert_eq!(
        run.results,
        [eperm, eperm, eperm, eperm, eperm, eperm, eperm, 0, 0, 0, 0, 0],
        "read-only: chmod chown utime setxattr removexattr truncate; protected chmod; \
         writable: chmod chown utime setxattr truncate"
    );
    assert_eq!(fs::read(&readonly).expect("read"), b"data", "not truncated");
    let outside = LsmReason::OutsideWriteTrees;
    assert_denials(
        &run,
        &[
            (LsmHook::InodeSetattr, outside, Some("/ro/file")),
            (LsmHook::InodeSetattr, outside, Some("/ro/file")),
            (LsmHook::InodeSetattr, outside, Some("/ro/file")),
            (LsmHook::InodeSetxattr, outside, Some("/ro/file")),
            (LsmHook::InodeRemovexattr, outside, Some("/ro/file")),
            (LsmHook::PathTruncate, outside, Some("/ro/file")),
            (
                LsmHook::InodeSetattr,
                LsmReason::DenyInode,
                Some("/rw/secret"),
            ),
        ],
    );
    assert_gapless(&run.events, &run.counters);
}
