//! BPF LSM exec rules: only files inside the exec trees run, whichever way they are reached:
//! a copy of an allowed binary, `ld.so /copy`, /proc/self/fd/N, a memfd.

use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use agentbox_tests::bpf::{assert_gapless, errno_now};
use ebpf_probes::{KernelEvent, LsmHook, LsmReason, LsmRules};
use nix::sys::wait::WaitStatus;

use crate::lsm_support::{c_path, inode, lsm_denials, lsm_runtime, run_with_rules};

const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
const BUSYBOX: &str = "/bin/busybox";

/// Exit code of a grandchild whose exec failed: 100 + errno.
const EXEC_FAILED: i32 = 100;

/// Forks, execs `argv` in the grandchild and returns its exit code (or 200 + signal).
fn spawn_exec(path: &CStr, argv: &[&CStr]) -> i32 {
    let mut args: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    args.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: the grandchild only execs or leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: path, args and env are NUL-terminated arrays of C strings.
        unsafe { libc::execve(path.as_ptr(), args.as_ptr(), env.as_ptr()) };
        // SAFETY: leaving the forked grandchild.
        unsafe { libc::_exit(EXEC_FAILED + errno_now()) };
    }
    if pid < 0 {
        return -errno_now();
    }
    let mut status = 0;
    // SAFETY: waiting for the grandchild just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        200 + libc::WTERMSIG(status)
    }
}

fn fd_path(fd: i32) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

#[test]
fn exec_outside_the_exec_trees_is_denied_however_reached() {
    let rt = lsm_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("copy");
    fs::copy(BUSYBOX, &copy).expect("copy busybox");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod copy");
    let image = fs::read(BUSYBOX).expect("read busybox");

    let trees = ["/bin", "/lib", "/lib64", "/usr"]
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .map(inode)
        .collect();
    let rules = LsmRules {
        exec_trees: Some(trees),
        ..LsmRules::default()
    };
    let copy_c = c_path(&copy);
    let busybox = CString::new(BUSYBOX).expect("path");
    let ld_so = CString::new(LD_SO).expect("path");
    let run = run_with_rules(rt, rules, move || {
        let t = c"true";
        let allowed = spawn_exec(&busybox, &[c"busybox", t]);
        let copied = spawn_exec(&copy_c, &[c"copy", t]);
        let via_ld_so = spawn_exec(&ld_so, &[c"ld.so", &copy_c, t]);
        // SAFETY: NUL-terminated path; the fd stays open for the exec below.
        let fd = unsafe { libc::open(copy_c.as_ptr(), libc::O_RDONLY) };
        let via_fd = spawn_exec(&fd_path(fd), &[c"copy", t]);
        // SAFETY: plain syscall; the memfd stays open (no CLOEXEC) for the exec below.
        let memfd = unsafe { libc::memfd_create(c"payload".as_ptr(), 0) };
        // SAFETY: image is valid for its length.
        let written = unsafe { libc::write(memfd, image.as_ptr().cast(), image.len()) };
        let via_memfd = if written == image.len() as isize {
            spawn_exec(&fd_path(memfd), &[c"payload", t])
        } else {
            -1
        };
        vec![allowed, copied, via_ld_so, via_fd, via_memfd]
    });
    assert!(matches!(run.status, WaitStatus::Exited(_, 0)), "{run:?}");
    let denied = EXEC_FAILED + libc::EPERM;
    assert_eq!(run.results[0], 0, "allowed busybox runs: {run:?}");
    assert_eq!(run.results[1], denied, "copy in /tmp");
    assert_ne!(run.results[2], 0, "ld.so must not run the copy");
    assert_eq!(run.results[3], denied, "exec via /proc/self/fd/N");
    assert_eq!(run.results[4], denied, "exec of a memfd");

    let denials = lsm_denials(&run.events);
    let copy_str = copy.to_str().expect("utf-8");
    let summary: Vec<(LsmHook, LsmReason)> = denials.iter().map(|d| (d.hook, d.reason)).collect();
    let outside = LsmReason::OutsideExecTrees;
    assert_eq!(
        summary,
        [
            (LsmHook::BprmCheckSecurity, outside),
            (LsmHook::MmapFile, outside),
            (LsmHook::BprmCheckSecurity, outside),
            (LsmHook::BprmCheckSecurity, outside),
        ],
        "{:#?}",
        run.events
    );
    for denial in &denials[..3] {
        assert_eq!(denial.path.as_deref(), Some(copy_str), "{denial:?}");
    }
    assert_ne!(denials[1].detail & libc::PROT_EXEC as u32, 0, "mmap prot");
    // The memfd has no path in any exec tree: its kernel name is "memfd:payload".
    let memfd_path = denials[3].path.as_deref().unwrap_or_default();
    assert!(memfd_path.contains("memfd:payload"), "{memfd_path:?}");
    // The grandchildren are in the sandbox (identity inherited at fork).
    assert!(denials.iter().all(|d| d.sandbox == run.sandbox));
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, KernelEvent::SyscallDenied { .. })),
        "{:#?}",
        run.events
    );
    assert_gapless(&run.events, &run.counters);
}
