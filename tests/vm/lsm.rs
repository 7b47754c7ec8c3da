//! BPF LSM programs from the ebpf-probes object, on a kernel booted with `lsm=...,bpf`.

use std::fs;
use std::path::Path;

use ebpf_probes::{probe, FileOpenGuard, ProgramKind};

fn open_errno(path: &Path) -> Option<i32> {
    fs::File::open(path)
        .err()
        .map(|err| err.raw_os_error().unwrap_or(-1))
}

#[test]
fn every_program_kind_loads_in_the_guest() {
    for kind in ProgramKind::ALL {
        if let Err(err) = probe(kind) {
            panic!(
                "{kind} must load in the VM guest: {err} (errno {:?})",
                err.errno
            );
        }
    }
}

#[test]
fn file_open_guard_denies_one_inode_until_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    let sibling = dir.path().join("sibling");
    let hard_link = dir.path().join("secret-link");
    fs::write(&secret, b"token").expect("write secret");
    fs::write(&sibling, b"public").expect("write sibling");
    fs::hard_link(&secret, &hard_link).expect("hard link");
    assert_eq!(open_errno(&secret), None, "secret opens before the guard");

    let mut guard = FileOpenGuard::attach().expect("attach lsm/file_open");
    guard.deny_file(&secret).expect("deny secret");

    assert_eq!(open_errno(&secret), Some(libc::EPERM), "open(secret)");
    // The inode is denied, not the name: a second name for it is denied too.
    assert_eq!(open_errno(&hard_link), Some(libc::EPERM), "open(hard link)");
    assert_eq!(open_errno(&sibling), None, "open(sibling)");
    assert_eq!(
        fs::read(&sibling).expect("read sibling"),
        b"public",
        "sibling reads"
    );

    drop(guard);
    assert_eq!(
        fs::read(&secret).expect("secret opens after the guard is dropped"),
        b"token"
    );
}

#[test]
fn file_open_guard_takes_stat_device_numbers() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    fs::write(&secret, b"token").expect("write secret");
    let meta = fs::metadata(&secret).expect("stat");

    let mut guard = FileOpenGuard::attach().expect("attach lsm/file_open");
    // A different device with the same inode number must not match.
    guard
        .deny_inode(libc::makedev(7, 7), meta.ino())
        .expect("deny other device");
    assert_eq!(open_errno(&secret), None, "same inode on another device");
    guard.deny_inode(meta.dev(), meta.ino()).expect("deny");
    assert_eq!(open_errno(&secret), Some(libc::EPERM));
}
