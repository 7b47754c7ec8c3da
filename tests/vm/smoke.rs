//! The guest is what the tier needs: BPF LSM active, bpffs and cgroup2 mounted, agentbox
//! reachable. If one of these fails, every other VM-tier result is meaningless.

use nix::sys::statfs::{statfs, FsType, BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn active_lsms() -> Vec<String> {
    let list = std::fs::read_to_string("/sys/kernel/security/lsm")
        .expect("securityfs is mounted at /sys/kernel/security");
    list.trim().split(',').map(str::to_string).collect()
}

fn filesystem_type(path: &str) -> FsType {
    statfs(path)
        .unwrap_or_else(|e| panic!("statfs {path}: {e}"))
        .filesystem_type()
}

#[test]
fn landlock_and_bpf_lsms_are_active() {
    let lsms = active_lsms();
    for lsm in ["landlock", "bpf"] {
        assert!(lsms.iter().any(|l| l == lsm), "`{lsm}` not in {lsms:?}");
    }
}

#[test]
fn bpffs_is_mounted_at_sys_fs_bpf() {
    assert_eq!(filesystem_type("/sys/fs/bpf"), BPF_FS_MAGIC);
}

#[test]
fn cgroup2_is_mounted_at_sys_fs_cgroup() {
    assert_eq!(filesystem_type("/sys/fs/cgroup"), CGROUP2_SUPER_MAGIC);
    // A cgroup2 root lists its controllers; the supervisor creates sandboxes below it.
    assert!(Path::new("/sys/fs/cgroup/cgroup.controllers").is_file());
}

#[test]
fn agentbox_binary_is_in_the_guest() {
    let bin = std::env::var("AGENTBOX_BIN").expect("/init sets AGENTBOX_BIN");
    let metadata = std::fs::metadata(&bin).unwrap_or_else(|e| panic!("{bin}: {e}"));
    assert!(
        metadata.is_file() && metadata.permissions().mode() & 0o111 != 0,
        "{bin}"
    );
}
