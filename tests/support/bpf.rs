//! Helpers for tests that drive the ebpf-probes runtime directly: a temporary cgroup2
//! directory, a private bpffs pin root, and a forked child that waits until the test placed
//! it in a sandbox (cgroup + task storage identity) before it runs its scenario.
//!
//! Everything is removed on drop, also when a test panics.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ebpf_probes::{Counters, KernelEvent, LoadState, Runtime, Sandbox, SandboxConfig};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

fn nanos() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos()
}

/// The first cgroup2 mount in /proc/self/mountinfo (hybrid hosts: /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            if fs.split(' ').next()? != "cgroup2" {
                return None;
            }
            mount.split(' ').nth(4).map(unescape_mountinfo)
        })
        .expect("a cgroup2 mount (pure v2 or hybrid)")
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(String::from_utf8(out).expect("utf-8 mount point"))
}

/// A fresh cgroup2 directory in a parent group of its own (the runtime attaches its cgroup
/// programs to the parent of a sandbox's group), both removed on drop.
#[derive(Debug)]
pub struct TempCgroup {
    pub path: PathBuf,
    parent: PathBuf,
}

impl TempCgroup {
    pub fn create(tag: &str) -> Self {
        let name = format!("agentbox-test-{tag}-{}-{}", std::process::id(), nanos());
        let parent = cgroup2_mount().join(name);
        let path = parent.join("sandbox");
        for dir in [&parent, &path] {
            fs::create_dir(dir).unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        }
        TempCgroup { path, parent }
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        // Children in it have been reaped by now, so the group is empty.
        for dir in [&self.path, &self.parent] {
            if let Err(err) = fs::remove_dir(dir) {
                eprintln!("warning: rmdir {}: {err}", dir.display());
            }
        }
    }
}

/// A pin root of its own under /sys/fs/bpf, removed on drop.
#[derive(Debug)]
pub struct PinRoot {
    pub path: PathBuf,
}

impl PinRoot {
    pub fn create(tag: &str) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/agentbox-test-{tag}-{}-{}",
            std::process::id(),
            nanos()
        ));
        PinRoot { path }
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Err(err) = fs::remove_dir_all(&self.path) {
                eprintln!("warning: removing {}: {err}", self.path.display());
            }
        }
    }
}

/// A runtime on a fresh pin root. Field order: the runtime closes before the pins go.
#[derive(Debug)]
pub struct TestRuntime {
    pub runtime: Runtime,
    _root: PinRoot,
}

impl TestRuntime {
    /// Loads the runtime cold under a pin root of its own.
    pub fn open(tag: &str) -> TestRuntime {
        let root = PinRoot::create(tag);
        let (runtime, state) = Runtime::open(&root.path).expect("Runtime::open");
        assert_eq!(state, LoadState::Cold);
        TestRuntime {
            runtime,
            _root: root,
        }
    }
}

/// A sandbox id no other test of this process uses (the host-tier ebpf tests and the VM
/// tier's LSM tests share one process in the VM, hence one counter).
pub fn next_sandbox_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The errno of the last failed libc call.
pub fn errno_now() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// 0 when `ret >= 0`, else the errno.
pub fn errno_of(ret: i64) -> i32 {
    if ret < 0 {
        errno_now()
    } else {
        0
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded, so both fds are open and owned only here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A forked child that waits until the parent placed it in the sandbox (cgroup + task tag),
/// runs its scenario and reports one i32 per step. glibc's fork() resets the malloc locks,
/// so the scenario may allocate; it must not print.
#[derive(Debug)]
pub struct Child {
    pub pid: Pid,
    go: Option<OwnedFd>,
    report: OwnedFd,
}

impl Child {
    pub fn spawn(scenario: impl FnOnce() -> Vec<i32>) -> Child {
        let (go_read, go_write) = pipe();
        let (report_read, report_write) = pipe();
        // SAFETY: the child runs the scenario and leaves with _exit, never returning here.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            drop(go_write);
            drop(report_read);
            let mut byte = [0u8; 1];
            let mut go = fs::File::from(go_read);
            if go.read_exact(&mut byte).is_err() {
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(2) };
            }
            let results = scenario();
            let bytes: Vec<u8> = results.iter().flat_map(|r| r.to_ne_bytes()).collect();
            let _ = fs::File::from(report_write).write_all(&bytes);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        Child {
            pid: Pid::from_raw(pid),
            go: Some(go_write),
            report: report_read,
        }
    }

    /// Moves the child into `cgroup` (when given), tags it for `sandbox` and lets it run.
    pub fn release(&mut self, cgroup: Option<&Path>, sandbox: &Sandbox) {
        if let Some(cgroup) = cgroup {
            fs::write(cgroup.join("cgroup.procs"), self.pid.to_string()).expect("join cgroup");
        }
        // SAFETY: plain syscall; the returned fd is owned below.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid.as_raw(), 0) };
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: pidfd_open returned a new fd owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        sandbox.seed_task(pidfd.as_fd()).expect("seed task");
        let go = self.go.take().expect("released once");
        fs::File::from(go).write_all(b"g").expect("release child");
    }

    /// Waits for the child; returns its report and exit status.
    pub fn finish(self) -> (Vec<i32>, WaitStatus) {
        let pid = self.pid;
        let results = self.reaped_report();
        let status = waitpid(pid, None).expect("waitpid");
        (results, status)
    }

    /// The child's report, for a caller that waited for the child itself (e.g. polling with
    /// WNOHANG while it runs).
    pub fn reaped_report(self) -> Vec<i32> {
        let mut bytes = Vec::new();
        fs::File::from(self.report)
            .read_to_end(&mut bytes)
            .expect("read report");
        bytes
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }
}

/// What one sandboxed run produced.
#[derive(Debug)]
pub struct SandboxRun {
    /// One value per scenario step (0 or an errno, by convention).
    pub results: Vec<i32>,
    pub status: WaitStatus,
    pub events: Vec<KernelEvent>,
    pub counters: Counters,
    pub sandbox: u32,
}

/// Runs `scenario` in a child placed in a fresh sandbox (its own cgroup) built by `cfg_for`;
/// returns the child's results, status, every event of the sandbox and its counters.
pub fn run_sandboxed(
    runtime: &Runtime,
    cfg_for: impl FnOnce(u32, &Path) -> SandboxConfig,
    scenario: impl FnOnce() -> Vec<i32>,
) -> SandboxRun {
    let cgroup = TempCgroup::create("sandbox");
    let id = next_sandbox_id();
    let cfg = cfg_for(id, &cgroup.path);
    let sandbox = runtime.register_sandbox(&cfg).expect("register sandbox");
    let mut stream = sandbox.events().expect("event stream");
    let mut child = Child::spawn(scenario);
    child.release(Some(&cgroup.path), &sandbox);
    let (results, status) = child.finish();
    let mut events = Vec::new();
    stream.drain(|e| events.push(e)).expect("drain");
    let counters = sandbox.counters();
    SandboxRun {
        results,
        status,
        events,
        counters,
        sandbox: id,
    }
}

/// Sequence numbers are unique and every number handed out is either delivered or counted
/// as lost.
pub fn assert_gapless(events: &[KernelEvent], counters: &Counters) {
    let seqs: BTreeSet<u64> = events.iter().map(KernelEvent::seq).collect();
    assert_eq!(seqs.len(), events.len(), "sequence numbers are unique");
    assert_eq!(
        events.len() as u64 + counters.lost_violations + counters.lost_trace,
        counters.last_seq,
        "delivered + lost == last seq: {counters:?}"
    );
}
