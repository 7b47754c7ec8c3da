//! BPF LSM kernel operations: bpf(), perf_event_open() and the mount family are denied for
//! sandboxed tasks, whatever their capabilities.

use std::fs;

use agentbox_tests::bpf::{assert_gapless, errno_of};
use ebpf_probes::{LsmHook, LsmReason, LsmRules};
use nix::sys::wait::WaitStatus;

use crate::lsm_support::{assert_denials, c_path, lsm_runtime, run_with_rules};

#[test]
fn bpf_perf_and_mounts_are_denied() {
    let rt = lsm_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("mnt");
    let mounted = dir.path().join("mounted");
    fs::create_dir_all(&target).expect("mkdir");
    fs::create_dir_all(&mounted).expect("mkdir");
    let (t, m) = (c_path(&target), c_path(&mounted));
    // A mount of the test's own, which the child then tries to unmount.
    // SAFETY: NUL-terminated strings; no data.
    let ret = unsafe {
        libc::mount(
            c"none".as_ptr(),
            m.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(ret, 0, "mount tmpfs: {}", std::io::Error::last_os_error());

    let rules = LsmRules {
        kernel_ops: true,
        ..LsmRules::default()
    };
    let m_child = m.clone();
    let run = run_with_rules(rt, rules, move || {
        // BPF_PROG_GET_NEXT_ID with a zeroed attr: harmless if it were allowed.
        let mut attr = [0u8; 128];
        // SAFETY: attr is valid for the size passed.
        let bpf =
            errno_of(unsafe { libc::syscall(libc::SYS_bpf, 11, attr.as_mut_ptr(), attr.len()) });
        // SAFETY: a zeroed perf_event_attr with its size set; pid 0, cpu -1.
        let perf = unsafe {
            let mut pattr = [0u8; 128];
            pattr[4..8].copy_from_slice(&128u32.to_ne_bytes());
            errno_of(libc::syscall(
                libc::SYS_perf_event_open,
                pattr.as_ptr(),
                0,
                -1,
                -1,
                0,
            ))
        };
        // SAFETY: NUL-terminated strings; no data.
        let mount = errno_of(
            unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    t.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            }
            .into(),
        );
        // SAFETY: NUL-terminated path.
        let umount = errno_of(unsafe { libc::umount2(m_child.as_ptr(), 0) }.into());
        vec![bpf, perf, mount, umount]
    });
    // SAFETY: NUL-terminated path; the test's own mount.
    unsafe { libc::umount2(m.as_ptr(), 0) };
    assert!(matches!(run.status, WaitStatus::Exited(_, 0)), "{run:?}");
    assert_eq!(
        run.results,
        [libc::EPERM; 4],
        "bpf, perf_event_open, mount, umount"
    );
    let op = LsmReason::KernelOperation;
    assert_denials(
        &run,
        &[
            (LsmHook::Bpf, op, None),
            (LsmHook::PerfEventOpen, op, None),
            (LsmHook::SbMount, op, None),
            (LsmHook::SbUmount, op, None),
        ],
    );
    assert_gapless(&run.events, &run.counters);
}
