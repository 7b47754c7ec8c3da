//! observe layer: the eBPF tracepoint observers (sys_enter/sys_exit, fork, exec, exit).
//!
//! They decide nothing: Landlock, seccomp and cgroup-BPF deny; the observers see a watched
//! syscall of a sandboxed task fail with EACCES/EPERM and report it with its path, address or
//! target, which is how Landlock denials reach the audit log. They also report the process
//! tree (rate-limited). The programs are global and pinned with the cgroup-BPF runtime, so
//! this layer is on exactly when that runtime loaded and the sandbox has a cgroup2 group; the
//! supervisor turns their events into audit events (`supervisor::kernel_events`).

use crate::layers::cgroup::{CgroupPlan, ObserveConfig};
use crate::policy::{Coverage, Guarantee, Layer, Status};

pub const LAYER: Layer = Layer::Observe;

/// Process lifecycle records per second the kernel may send before it counts them as
/// throttled (reported as a `loss` record at the end).
pub const TRACE_EVENTS_PER_SEC: u32 = 1000;

/// The compiled observe layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservePlan {
    /// Observers report this sandbox's events.
    pub enabled: bool,
    pub trace_events_per_sec: u32,
}

impl ObservePlan {
    pub fn config(&self) -> ObserveConfig {
        ObserveConfig {
            trace_events_per_sec: self.trace_events_per_sec,
        }
    }
}

/// The observers ride on the cgroup layer's runtime: on when it enforces the network.
pub fn compile(cgroup: &CgroupPlan) -> (ObservePlan, Coverage) {
    let mut coverage = Coverage::default();
    let enabled = cgroup.enforces_network();
    let status = if enabled {
        Status::Enforced
    } else {
        Status::Missing(
            "needs the eBPF observers (root, bpffs, a cgroup2 group for the sandbox)".into(),
        )
    };
    coverage.push(LAYER, Guarantee::FsDenialsLogged, status);
    (
        ObservePlan {
            enabled,
            trace_events_per_sec: TRACE_EVENTS_PER_SEC,
        },
        coverage,
    )
}
