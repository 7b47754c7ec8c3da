//! The eBPF layers, in one home: the shared runtime handle (here), the cgroup-BPF network
//! programs (`net`), the BPF LSM programs (`lsm`), the tracepoint observers (`observe`), and
//! the mapper that turns their kernel events into audit events (`events`).
//!
//! All three ride on one pinned object (`ebpf_probes::Runtime`) and one registration per
//! sandbox, keyed by the sandbox's cgroup2 group: `EbpfPlan` is what the plan compiled for
//! them, `Registration` the sandbox's entries in the kernel maps while it runs. Where a BPF
//! LSM denial gets its rule text: `events.rs`, from the rules `lsm.rs` compiled.

pub(crate) mod events;
pub(crate) mod lsm;
pub(crate) mod net;
pub(crate) mod observe;

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use ebpf_probes::{LoadState, Runtime, SandboxConfig};

use crate::policy::{Layer, Mode, Policy, ViolationAction};

/// The pinned eBPF object, opened (loaded and pinned on first use) once per launch, or why
/// it is not there.
pub(crate) type RuntimeHandle = Result<(Runtime, LoadState), String>;

const UNPRIVILEGED_BPF: &str = "needs root (CAP_BPF, CAP_SYS_ADMIN) for cgroup-BPF";

/// Opens the runtime when this process may attach programs to a cgroup2 group of its own:
/// `group` is the cgroup layer's parent directory, or why there is none.
pub(crate) fn open_runtime(group: Result<&Path, &str>) -> RuntimeHandle {
    match group {
        Err(_) if !crate::kernel::is_root() => Err(UNPRIVILEGED_BPF.to_string()),
        Err(why) => Err(format!("no cgroup2 group for the programs: {why}")),
        Ok(_) => match Runtime::open(Path::new(ebpf_probes::DEFAULT_PIN_ROOT)) {
            Ok((runtime, state)) => {
                tracing::info!(
                    layer = Layer::CgroupBpf.name(),
                    version = runtime.version(),
                    ?state,
                    "eBPF runtime opened"
                );
                Ok((runtime, state))
            }
            Err(e) => Err(format!("cgroup-BPF programs did not load: {e}")),
        },
    }
}

/// The runtime `prefetch_runtime` is opening, until the plan takes it.
static PREFETCHED: Mutex<Option<std::thread::JoinHandle<RuntimeHandle>>> = Mutex::new(None);

/// Root only: starts opening the runtime (reopening its pins, attaching the observers) on a
/// thread of its own, so that it overlaps whatever the caller does before `Plan::build`
/// (loading the profile, creating the audit log). Its result does not depend on the policy.
pub(crate) fn prefetch_runtime() {
    if !crate::kernel::is_root() {
        return;
    }
    let opening = std::thread::Builder::new()
        .name("ebpf-open".into())
        .spawn(|| {
            let group = crate::layers::cgroup::v2_parent();
            open_runtime(group.as_deref().map_err(String::as_str))
        });
    match opening {
        Ok(handle) => {
            *PREFETCHED.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        }
        Err(e) => tracing::debug!("eBPF runtime not prefetched: {e}"),
    }
}

/// The prefetched runtime, if `prefetch_runtime` started one (taken once).
pub(crate) fn take_prefetched() -> Option<RuntimeHandle> {
    let handle = PREFETCHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()?;
    Some(
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
    )
}

/// What the eBPF layers compiled for one sandbox: registered with its cgroup2 group by the
/// sandbox group before init is released.
pub(crate) struct EbpfPlan {
    runtime: Runtime,
    net: ebpf_probes::NetRules,
    /// BPF LSM rules, where the LSM programs are attached.
    lsm: Option<ebpf_probes::LsmRules>,
    trace_events_per_sec: u32,
    kill_on_violation: bool,
    audit_only: bool,
    /// The policy's deny globs, so BPF LSM file denials name the glob that denied.
    deny_globs: Vec<String>,
    /// The policy's protect globs, so read-only refusals name the right rule.
    protect_globs: Vec<String>,
    /// The observers report this sandbox's events.
    observe: bool,
    /// The resolver of host-name rules: port 53 goes there.
    dns: Option<std::net::SocketAddrV4>,
}

impl std::fmt::Debug for EbpfPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfPlan")
            .field("net", &self.net)
            .field("lsm", &self.lsm.is_some())
            .field("observe", &self.observe)
            .finish_non_exhaustive()
    }
}

impl EbpfPlan {
    pub(crate) fn new(
        runtime: Runtime,
        policy: &Policy,
        lsm: Option<ebpf_probes::LsmRules>,
        observe: &observe::ObservePlan,
        dns: Option<std::net::SocketAddrV4>,
    ) -> EbpfPlan {
        EbpfPlan {
            runtime,
            net: net::net_rules(policy),
            lsm,
            trace_events_per_sec: observe.trace_events_per_sec,
            kill_on_violation: policy.process.on_violation == ViolationAction::Kill,
            audit_only: policy.mode == Mode::Audit,
            deny_globs: policy
                .filesystem
                .deny
                .iter()
                .map(|g| g.pattern.clone())
                .collect(),
            protect_globs: policy
                .filesystem
                .protect
                .iter()
                .map(|g| g.pattern.clone())
                .collect(),
            observe: observe.enabled,
            dns,
        }
    }

    /// Registers the sandbox with the runtime: its network rules are in force for anything
    /// that enters `dir` from now on. `name` is the run's sandbox id.
    /// Removes what dead supervisors left in the maps (see `Runtime::reclaim_dead`): a
    /// record is dead when no cgroup with its id exists any more, anywhere.
    pub(crate) fn reclaim(&self, cgroup2: &Path) -> Vec<u32> {
        let Ok(mount) = std::fs::File::open(cgroup2) else {
            return Vec::new();
        };
        self.runtime
            .reclaim_dead(|id| super::cgroup::cgroup_exists(&mount, id))
    }

    /// Whether BPF LSM rules judge this sandbox: its programs find a task's sandbox by
    /// cgroup too, so a task in the group is confined by them before it is tagged.
    pub(crate) fn has_lsm(&self) -> bool {
        self.lsm.is_some()
    }

    pub(crate) fn register(&self, dir: &Path, name: &str) -> anyhow::Result<Registration> {
        let mut attempt = 0;
        let sandbox = loop {
            let mut cfg = SandboxConfig::new(bpf_id(name, attempt), dir);
            cfg.net = self.net.clone();
            cfg.kill_on_violation = self.kill_on_violation;
            cfg.audit_only = self.audit_only;
            cfg.trace_events_per_sec = self.trace_events_per_sec;
            cfg.lsm = self.lsm.clone();
            cfg.dns = self.dns;
            match self.runtime.register_sandbox(&cfg) {
                Err(ebpf_probes::Error::SandboxExists(_)) if attempt < 16 => attempt += 1,
                other => break other.context("registering the sandbox with cgroup-BPF")?,
            }
        };
        tracing::debug!(
            layer = Layer::CgroupBpf.name(),
            id = sandbox.id(),
            cgroup_id = sandbox.cgroup_id(),
            ring_slot = sandbox.ring_slot(),
            version = self.runtime.version(),
            "sandbox registered"
        );
        Ok(Registration {
            sandbox: Arc::new(sandbox),
            net: self.net.clone(),
            deny_globs: self.deny_globs.clone(),
            protect_globs: self.protect_globs.clone(),
            observe: self.observe,
        })
    }
}

/// A sandbox id for the eBPF maps: non-zero, derived from the run's id; bumped on a clash.
fn bpf_id(name: &str, attempt: u32) -> u32 {
    let base = u32::from_str_radix(name.get(..8).unwrap_or(name), 16).unwrap_or_else(|_| {
        name.bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
    });
    match base.wrapping_add(attempt) {
        0 => 1,
        id => id,
    }
}

/// A sandbox's entries in the kernel maps. Dropping the last handle removes the entries
/// and releases its ring slot: the sandbox group drops it only after its cgroup is empty.
#[derive(Debug)]
pub(crate) struct Registration {
    sandbox: Arc<ebpf_probes::Sandbox>,
    net: ebpf_probes::NetRules,
    deny_globs: Vec<String>,
    protect_globs: Vec<String>,
    observe: bool,
}

impl Registration {
    /// Tags `pid` (init, waiting before it confines itself) for the observers and BPF LSM;
    /// its descendants inherit the tag.
    pub(crate) fn seed(&self, pid: libc::pid_t) -> anyhow::Result<()> {
        let pidfd = pidfd_open(pid).context("pidfd_open of the sandbox init")?;
        self.sandbox
            .seed_task(pidfd.as_fd())
            .context("tagging the sandbox init for the eBPF observers")
    }

    /// Where the resolver's grants go: this sandbox's trie entries.
    pub(crate) fn grants(&self) -> ebpf_probes::Grants {
        self.sandbox.grants()
    }

    /// The source of this sandbox's kernel events, when the observers report them.
    pub(crate) fn event_source(
        &self,
        seccomp: Arc<super::seccomp::DenyTable>,
        answered: Arc<super::seccomp::Answered>,
        names: Option<Arc<super::dns::resolver::NameBook>>,
    ) -> anyhow::Result<Option<events::KernelSource>> {
        if !self.observe {
            return Ok(None);
        }
        let stream = self
            .sandbox
            .events()
            .context("opening the kernel event rings")?;
        let mapper = events::Mapper::new(self.sandbox.id(), seccomp, self.net.clone())
            .with_deny_globs(&self.deny_globs)
            .with_protect_globs(&self.protect_globs)
            .with_answered(answered)
            .with_names(names);
        Ok(Some(events::KernelSource::new(
            stream,
            mapper,
            Arc::clone(&self.sandbox),
        )))
    }
}

fn pidfd_open(pid: libc::pid_t) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::bpf_id;

    #[test]
    fn bpf_ids_are_never_zero_and_differ_per_attempt() {
        assert_eq!(bpf_id("00000000aaaa", 0), 1);
        assert_eq!(bpf_id("0000002a", 0), 42);
        assert_eq!(bpf_id("0000002a", 1), 43);
        assert_ne!(bpf_id("not-hex!", 0), 0);
    }
}
