//! Layers: each turns a `Policy` into its kernel artifact and says what it can enforce here.
//!
//! The contract every layer keeps (docs/architecture.md):
//! - **probe**: `offers(&Host)` says, without building a sandbox, which guarantees the layer
//!   can give on this kernel with these privileges, or why not. Doctor prints these; nothing
//!   else keeps a table of who provides what.
//! - **compile**: a pure-ish function from the `Policy` (and the share of it the plan assigned
//!   to the layer, decided once before anything compiles) to an artifact plus `Coverage`. A
//!   layer never reads TOML and never writes audit records itself.
//! - **apply**: the child-side artifacts travel to the sandbox's init in `ChildSteps`, which
//!   `supervisor/child.rs` applies in its fixed order (the order is the security argument).
//! - **report**: a layer that produces events at run time hands the supervisor an
//!   `EventSource`; the supervisor's loop drains sources without knowing what is inside.
//!
//! Adding a layer: a module here, an entry in `LAYERS`, its share in `plan.rs`.

pub(crate) mod cgroup;
pub(crate) mod channel;
pub(crate) mod dns;
pub(crate) mod ebpf;
pub(crate) mod landlock;
pub(crate) mod mounts;
pub(crate) mod process;
pub(crate) mod seccomp;

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use ebpf_probes::ProgramKind;

use crate::audit::Event;
use crate::kernel;
use crate::policy::{Guarantee, Layer};

pub(crate) use cgroup::SandboxGroup;

/// What the host offers, probed once (doctor). Every field comes from asking the kernel.
#[derive(Debug)]
pub(crate) struct Host {
    pub root: bool,
    pub landlock: Result<u32, String>,
    pub seccomp: bool,
    pub user_notif: bool,
    /// BPF program types, each tried by loading a tiny program.
    pub bpf: Vec<(ProgramKind, Result<(), String>)>,
    /// The cgroup2 mount, when this process can create a group under it.
    pub cgroup2: Result<PathBuf, String>,
}

impl Host {
    /// Whether a BPF program type loads here.
    pub(crate) fn bpf(&self, kind: ProgramKind) -> Result<(), String> {
        self.bpf
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| Err("not probed".into()))
    }

    /// `reason`, marked when the lack of root is the likely cause.
    pub(crate) fn privileged_reason(&self, reason: String) -> String {
        if self.root {
            reason
        } else {
            format!("{reason} (unprivileged)")
        }
    }

    /// The cgroup2 group the eBPF layers attach to, or why there is none.
    pub(crate) fn cgroup2_group(&self) -> Result<&PathBuf, String> {
        self.cgroup2.as_ref().map_err(Clone::clone)
    }
}

/// One guarantee a layer can give here (`Ok(detail)`) or cannot (`Err(reason)`).
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    pub guarantee: Guarantee,
    pub by: Result<String, String>,
}

impl Offer {
    pub(crate) fn new(guarantee: Guarantee, by: Result<String, String>) -> Offer {
        Offer { guarantee, by }
    }
}

/// A layer as doctor sees it: its name and its probe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerInfo {
    pub layer: Layer,
    pub offers: fn(&Host) -> Vec<Offer>,
}

impl LayerInfo {
    /// What this layer offers here, each offer naming the layer when it has no detail.
    pub(crate) fn offers(&self, host: &Host) -> Vec<Offer> {
        (self.offers)(host)
            .into_iter()
            .map(|mut offer| {
                if let Err(why) = &offer.by {
                    if why.is_empty() {
                        offer.by = Err(format!("{}: unavailable", self.layer));
                    }
                }
                offer
            })
            .collect()
    }
}

/// Every layer, in the order their offers are considered (the first that can give a
/// guarantee is named as its provider).
pub(crate) const LAYERS: &[LayerInfo] = &[
    LayerInfo {
        layer: Layer::BpfLsm,
        offers: ebpf::lsm::offers,
    },
    LayerInfo {
        layer: Layer::Landlock,
        offers: landlock::offers,
    },
    LayerInfo {
        layer: Layer::Seccomp,
        offers: seccomp::offers,
    },
    LayerInfo {
        layer: Layer::CgroupBpf,
        offers: ebpf::net::offers,
    },
    LayerInfo {
        layer: Layer::Observe,
        offers: ebpf::observe::offers,
    },
    LayerInfo {
        layer: Layer::Cgroup,
        offers: cgroup::offers,
    },
    LayerInfo {
        layer: Layer::Mounts,
        offers: mounts::offers,
    },
    LayerInfo {
        layer: Layer::Dns,
        offers: dns::offers,
    },
];

/// The artifacts applied inside the sandbox's init, prepared before fork. `child.rs` applies
/// them in its fixed order: rlimits, mounts, capabilities, Landlock, seccomp.
pub(crate) struct ChildSteps {
    pub process: process::ProcessPlan,
    pub mounts: mounts::MountPlan,
    pub landlock: landlock::LandlockPlan,
    pub seccomp: seccomp::SeccompProgram,
}

impl std::fmt::Debug for ChildSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSteps")
            .field("process", &self.process)
            .field("mounts", &self.mounts)
            .finish_non_exhaustive()
    }
}

/// What the supervisor's event loop drains: a source of audit events with a descriptor that
/// turns readable when events wait.
pub(crate) trait EventSource {
    /// Readable when events are waiting.
    fn fd(&self) -> RawFd;

    /// Moves every event available now into `out`. `Ok(false)`: the source is closed for
    /// good (no task can produce more); it is not polled again.
    fn drain(&mut self, out: &mut Vec<Event>) -> anyhow::Result<bool>;

    /// How often to drain even without a wakeup (a ring buffer only signals a reader that
    /// has caught up), if at all.
    fn tick(&self) -> Option<Duration> {
        None
    }

    /// Final records once no task of the sandbox is left (loss accounting).
    fn finish(&mut self, _out: &mut Vec<Event>) {}
}

/// Probes the host once, for doctor. Safe unprivileged; loads and unloads tiny BPF programs
/// when it may.
pub(crate) fn probe_host() -> Host {
    let seccomp = kernel::seccomp_filter_available();
    let cgroup2 = kernel::cgroup2_mount()
        .ok_or_else(|| "no cgroup2 mount".to_string())
        .and_then(|p| kernel::can_create_cgroup(&p).map(|_| p));
    Host {
        root: kernel::is_root(),
        landlock: kernel::landlock_abi(),
        seccomp,
        user_notif: seccomp && kernel::seccomp_action_available(kernel::SECCOMP_RET_USER_NOTIF),
        bpf: ProgramKind::ALL
            .iter()
            .map(|&k| {
                (
                    k,
                    ebpf_probes::probe(k).map_err(|e| first_line(&e.to_string())),
                )
            })
            .collect(),
        cgroup2,
    }
}

/// libbpf appends its whole log to errors; a table row wants the first sentence.
pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
