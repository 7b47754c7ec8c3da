//! observe layer: the eBPF tracepoint observers (sys_exit, fork, exec, exit).
//!
//! They decide nothing: Landlock, seccomp and cgroup-BPF deny; the observers see a watched
//! syscall of a sandboxed task fail with EACCES/EPERM and report it with its path, address or
//! target, which is how Landlock denials reach the audit log. They also report the process
//! tree (rate-limited). The programs are global and pinned with the cgroup-BPF runtime, so
//! this layer is on exactly when that runtime loaded and the sandbox has a cgroup2 group;
//! `events.rs` turns their events into audit events.

use ebpf_probes::ProgramKind;

use crate::layers::{Host, Offer};
use crate::policy::{Coverage, Guarantee, Layer, Status};

const LAYER: Layer = Layer::Observe;

/// Process lifecycle records per second the kernel may send before it counts them as
/// throttled (reported as a `loss` record at the end).
const TRACE_EVENTS_PER_SEC: u32 = 1000;

/// The compiled observe layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObservePlan {
    /// Observers report this sandbox's events.
    pub enabled: bool,
    pub trace_events_per_sec: u32,
}

/// Doctor's view: BTF tracepoint programs load.
pub(crate) fn offers(host: &Host) -> Vec<Offer> {
    let by = host
        .bpf(ProgramKind::TpBtf)
        .map(|_| "tracepoints".to_string())
        .map_err(|e| host.privileged_reason(format!("tracepoints: {e}")));
    vec![Offer::new(Guarantee::FsDenialsLogged, by)]
}

/// `attached`: the eBPF runtime is open and the sandbox gets a cgroup2 group.
pub(crate) fn compile(attached: bool) -> (ObservePlan, Coverage) {
    let mut coverage = Coverage::default();
    let status = if attached {
        Status::Enforced
    } else {
        Status::Missing(
            "needs the eBPF observers (root, bpffs, a cgroup2 group for the sandbox)".into(),
        )
    };
    coverage.push(LAYER, Guarantee::FsDenialsLogged, status);
    (
        ObservePlan {
            enabled: attached,
            trace_events_per_sec: TRACE_EVENTS_PER_SEC,
        },
        coverage,
    )
}
