//! BPF LSM scope: nothing inside a sandbox signals or traces anything outside it (the
//! supervisor included); identity is inherited at fork, so in-sandbox children stay
//! reachable and their own denials carry the sandbox id.

use std::fs;

use agentbox_tests::bpf::{assert_gapless, errno_of};
use ebpf_probes::{LsmHook, LsmReason, LsmRules};
use nix::sys::wait::WaitStatus;

use crate::lsm_support::{assert_denials, c_path, inode, lsm_denials, lsm_runtime, run_with_rules};

#[test]
fn signals_and_ptrace_stop_at_the_sandbox_boundary() {
    let rt = lsm_runtime();
    let rules = LsmRules {
        scope: true,
        ..LsmRules::default()
    };
    let supervisor = std::process::id() as i32;
    let run = run_with_rules(rt, rules, move || {
        // SAFETY: plain syscalls; signal 0 only checks permission.
        let parent = errno_of(unsafe { libc::kill(supervisor, 0) }.into());
        // SAFETY: as above, to this process itself.
        let own = errno_of(unsafe { libc::kill(libc::getpid(), 0) }.into());
        // SAFETY: the grandchild only pauses until it is killed.
        let grandchild = unsafe { libc::fork() };
        if grandchild == 0 {
            loop {
                // SAFETY: waits for a signal.
                unsafe { libc::pause() };
            }
        }
        // SAFETY: SIGKILL to our own (in-sandbox) child.
        let inside = errno_of(unsafe { libc::kill(grandchild, libc::SIGKILL) }.into());
        // SAFETY: reaping the child killed above.
        unsafe { libc::waitpid(grandchild, std::ptr::null_mut(), 0) };
        // SAFETY: PTRACE_ATTACH takes no pointers.
        let trace =
            errno_of(unsafe { libc::ptrace(libc::PTRACE_ATTACH, supervisor, 0usize, 0usize) });
        vec![parent, own, inside, trace]
    });
    assert!(matches!(run.status, WaitStatus::Exited(_, 0)), "{run:?}");
    assert_eq!(
        run.results,
        [libc::EPERM, 0, 0, libc::EPERM],
        "kill(supervisor), kill(self), kill(own child), ptrace(supervisor)"
    );
    assert_denials(
        &run,
        &[
            (LsmHook::TaskKill, LsmReason::OtherSandbox, None),
            (LsmHook::PtraceAccessCheck, LsmReason::OtherSandbox, None),
        ],
    );
    let denials = lsm_denials(&run.events);
    assert_eq!(denials[0].target_pid, Some(supervisor));
    assert_eq!(denials[0].detail, 0, "signal number");
    assert_eq!(denials[1].target_pid, Some(supervisor));
    assert_gapless(&run.events, &run.counters);
}

#[test]
fn forked_children_inherit_the_identity_without_the_cgroup() {
    let rt = lsm_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    fs::write(&secret, "x").expect("write");
    let rules = LsmRules {
        deny_inodes: vec![inode(&secret)],
        ..LsmRules::default()
    };
    let c = c_path(&secret);
    // Released without joining the cgroup: only task storage (seeded, then copied by
    // lsm/task_alloc) ties the grandchild to the sandbox.
    let cgroup = agentbox_tests::bpf::TempCgroup::create("lsm-fork");
    let id = agentbox_tests::bpf::next_sandbox_id();
    let mut cfg = ebpf_probes::SandboxConfig::new(id, &cgroup.path);
    cfg.lsm = Some(rules);
    let sandbox = rt.runtime.register_sandbox(&cfg).expect("register");
    let mut stream = sandbox.events().expect("events");
    let mut child = agentbox_tests::bpf::Child::spawn(move || {
        // SAFETY: the grandchild opens and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            // SAFETY: leaving the grandchild with the open's errno.
            unsafe { libc::_exit(errno_of(fd.into())) };
        }
        let mut status = 0;
        // SAFETY: waiting for the grandchild.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        vec![libc::WEXITSTATUS(status), pid]
    });
    child.release(None, &sandbox);
    let (results, _) = child.finish();
    let mut events = Vec::new();
    stream.drain(|e| events.push(e)).expect("drain");
    assert_eq!(results[0], libc::EPERM, "the grandchild is denied");
    let denials = lsm_denials(&events);
    assert_eq!(denials.len(), 1, "{events:#?}");
    assert_eq!(denials[0].sandbox, id);
    assert_eq!(
        denials[0].pid as i32, results[1],
        "the grandchild's own denial"
    );
    assert_eq!(denials[0].hook, LsmHook::FileOpen);
    assert_gapless(&events, &sandbox.counters());
}
