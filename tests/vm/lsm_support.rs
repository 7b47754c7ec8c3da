//! Shared pieces of the BPF LSM tests (tests/vm/lsm_*.rs): a runtime whose LSM programs must
//! be attached, sandbox configs with LSM rules, and event filters.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use agentbox_tests::bpf::{run_sandboxed, SandboxRun, TestRuntime};
use ebpf_probes::{InodeId, KernelEvent, LsmHook, LsmReason, LsmRules, SandboxConfig};

/// One runtime for every LSM test of this process (loading verifies ~30 programs, which takes
/// seconds under TCG); fails the test when the LSM programs are not attached. Its pins stay
/// until the guest powers off.
pub(crate) fn lsm_runtime() -> &'static TestRuntime {
    static RUNTIME: OnceLock<TestRuntime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| TestRuntime::open("lsm"));
    if let Some(err) = rt.runtime.lsm_error() {
        panic!("the LSM programs must attach in the VM guest: {err}");
    }
    rt
}

/// Runs `scenario` in a fresh sandbox with `rules` (and the default config otherwise).
pub(crate) fn run_with_rules(
    rt: &TestRuntime,
    rules: LsmRules,
    scenario: impl FnOnce() -> Vec<i32>,
) -> SandboxRun {
    run_sandboxed(
        &rt.runtime,
        |id, cgroup| {
            let mut cfg = SandboxConfig::new(id, cgroup);
            cfg.lsm = Some(rules);
            cfg
        },
        scenario,
    )
}

pub(crate) fn inode(path: &Path) -> InodeId {
    InodeId::of(path).unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
}

pub(crate) fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in path")
}

/// One LSM denial, reduced to what the tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub hook: LsmHook,
    pub reason: LsmReason,
    pub path: Option<String>,
    pub seq: u64,
    pub sandbox: u32,
    pub pid: u32,
    pub target_pid: Option<i32>,
    pub detail: u32,
    pub dev: u64,
    pub ino: u64,
    pub addr: Option<(std::net::IpAddr, u16)>,
}

pub(crate) fn lsm_denials(events: &[KernelEvent]) -> Vec<Denial> {
    events
        .iter()
        .filter_map(|event| match event {
            KernelEvent::LsmDenied {
                sandbox,
                seq,
                pid,
                hook,
                reason,
                path,
                dev,
                ino,
                addr,
                target_pid,
                detail,
                enforced,
                ..
            } => {
                assert!(*enforced, "enforce mode: {event:?}");
                Some(Denial {
                    hook: *hook,
                    reason: *reason,
                    path: path.clone(),
                    seq: *seq,
                    sandbox: *sandbox,
                    pid: *pid,
                    target_pid: *target_pid,
                    detail: *detail,
                    dev: *dev,
                    ino: *ino,
                    addr: *addr,
                })
            }
            _ => None,
        })
        .collect()
}

/// Asserts the denials are exactly `expected` (hook, reason, path suffix) in order, every one
/// for `run`'s sandbox with increasing sequence numbers, and that no observer event repeats
/// them as a SyscallDenied.
pub(crate) fn assert_denials(run: &SandboxRun, expected: &[(LsmHook, LsmReason, Option<&str>)]) {
    let denials = lsm_denials(&run.events);
    let got: Vec<(LsmHook, LsmReason)> = denials.iter().map(|d| (d.hook, d.reason)).collect();
    let want: Vec<(LsmHook, LsmReason)> = expected.iter().map(|(h, r, _)| (*h, *r)).collect();
    assert_eq!(got, want, "events: {:#?}", run.events);
    for (denial, (_, _, suffix)) in denials.iter().zip(expected) {
        assert_eq!(denial.sandbox, run.sandbox, "{denial:?}");
        if let Some(suffix) = suffix {
            let path = denial.path.as_deref().unwrap_or_default();
            assert!(path.ends_with(suffix), "path {path:?} ends with {suffix:?}");
        }
    }
    assert!(
        denials.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers increase: {denials:#?}"
    );
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, KernelEvent::SyscallDenied { .. })),
        "no duplicate SyscallDenied: {:#?}",
        run.events
    );
}

/// Like [`run_with_rules`], but runs `after_register` in the test process once the sandbox
/// is registered and before the child is released (objects that appear "later").
pub(crate) fn run_with_rules_after(
    rt: &TestRuntime,
    rules: LsmRules,
    after_register: impl FnOnce(),
    scenario: impl FnOnce() -> Vec<i32>,
) -> SandboxRun {
    use agentbox_tests::bpf::{next_sandbox_id, Child, TempCgroup};

    let cgroup = TempCgroup::create("lsm");
    let id = next_sandbox_id();
    let mut cfg = SandboxConfig::new(id, &cgroup.path);
    cfg.lsm = Some(rules);
    let sandbox = rt.runtime.register_sandbox(&cfg).expect("register sandbox");
    let mut stream = sandbox.events().expect("event stream");
    after_register();
    let mut child = Child::spawn(scenario);
    child.release(Some(&cgroup.path), &sandbox);
    let (results, status) = child.finish();
    let mut events = Vec::new();
    stream.drain(|e| events.push(e)).expect("drain");
    SandboxRun {
        results,
        status,
        events,
        counters: sandbox.counters(),
        sandbox: id,
    }
}
