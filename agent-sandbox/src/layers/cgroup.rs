//! cgroup layer: one cgroup per sandbox (pids and memory limits, tree teardown), the group
//! the eBPF layers register with.
//!
//! `compile` runs before fork: it decides where each limit lives (cgroup v2 when the host's
//! cgroup2 hierarchy has the controller, else the v1 hierarchy that has it). The supervisor
//! then creates the groups (`SandboxGroup::create`, which also registers the sandbox with the
//! eBPF layers' plan), moves init into them while it waits (`SandboxGroup::place`), and at the
//! end kills whatever is left and removes them (`SandboxGroup::teardown`). Layout and
//! fallbacks: docs/cgroups.md.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::ebpf::{EbpfPlan, Registration};
use super::{Host, Offer};
use crate::kernel;
use crate::policy::{Coverage, Guarantee, Layer, Policy, Status};

const LAYER: Layer = Layer::Cgroup;
/// Directory under each hierarchy that holds the sandbox groups.
const GROUP_DIR: &str = "agentbox";

/// Doctor's view: limits need a cgroup2 group this process can create.
pub(crate) fn offers(host: &Host) -> Vec<Offer> {
    let by = host
        .cgroup2_group()
        .map(|p| format!("cgroup ({})", p.display()))
        .map_err(|e| host.privileged_reason(format!("cgroup: {e}")));
    vec![Offer::new(Guarantee::ResourceLimits, by)]
}

/// Where one limit is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    /// `pids` or `memory`.
    pub controller: &'static str,
    /// The interface file (`pids.max`, `memory.max`, `memory.limit_in_bytes`).
    pub file: &'static str,
    pub value: u64,
    /// `None`: the sandbox's cgroup2 group; `Some(parent)`: a v1 group under this directory.
    pub v1_parent: Option<PathBuf>,
}

/// The compiled cgroup layer.
#[derive(Debug)]
pub(crate) struct CgroupPlan {
    /// `<cgroup2 mount>/agentbox`, or why this process may not create groups there.
    v2_parent: Result<PathBuf, String>,
    /// Controllers to enable in the subtree_control files on the way down (cgroup v2).
    v2_controllers: Vec<&'static str>,
    limits: Vec<Limit>,
}

impl CgroupPlan {
    /// The parent of the sandbox's cgroup2 group, or why there is none: the eBPF layers
    /// attach there.
    pub(crate) fn v2_parent(&self) -> Result<&Path, &str> {
        self.v2_parent.as_deref().map_err(String::as_str)
    }

    /// True when the `controller` limit lives in a cgroup (else an rlimit stands in).
    pub(crate) fn holds(&self, controller: &str) -> bool {
        self.limits.iter().any(|l| l.controller == controller)
    }
}

/// The path of this process's group in the v1 hierarchy that has `controller`.
fn own_v1_path(controller: &str) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

/// Compiles the layer and says what it delivers here.
/// `<cgroup2 mount>/agentbox`, made if missing, or why this process may not create groups
/// there. The same for every policy.
pub(crate) fn v2_parent() -> Result<PathBuf, String> {
    if !kernel::is_root() {
        return Err("needs root to create cgroups".into());
    }
    let Some(mount) = kernel::cgroup2_mount() else {
        return Err("no cgroup2 mount".into());
    };
    let parent = mount.join(GROUP_DIR);
    match fs::create_dir(&parent) {
        Ok(()) => Ok(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(parent),
        Err(e) => Err(format!("cannot create {}: {e}", parent.display())),
    }
}

pub(crate) fn compile(policy: &Policy) -> (CgroupPlan, Coverage) {
    let mut coverage = Coverage::default();

    let root = kernel::is_root();
    let v2_parent = v2_parent();

    // Limits: cgroup v2 when its hierarchy offers the controller, else v1.
    let mut limits = Vec::new();
    let mut v2_controllers = Vec::new();
    let mut limit_gaps = Vec::new();
    let wanted = [
        ("pids", policy.process.max_processes),
        ("memory", policy.process.memory_max),
    ];
    for (controller, value) in wanted {
        let Some(value) = value else { continue };
        let v2_has = v2_parent.as_ref().is_ok_and(|p| {
            p.parent().is_some_and(|m| {
                kernel::cgroup2_controllers(m)
                    .iter()
                    .any(|c| c == controller)
            })
        });
        let v2_file = if controller == "pids" {
            "pids.max"
        } else {
            "memory.max"
        };
        if v2_has {
            v2_controllers.push(controller);
            limits.push(Limit {
                controller,
                file: v2_file,
                value,
                v1_parent: None,
            });
            continue;
        }
        let v1 = if root {
            kernel::cgroup1_mount(controller).map(|mount| {
                mount
                    .join(own_v1_path(controller).unwrap_or_default())
                    .join(GROUP_DIR)
            })
        } else {
            None
        };
        match v1 {
            Some(parent) => limits.push(Limit {
                controller,
                file: if controller == "pids" {
                    "pids.max"
                } else {
                    "memory.limit_in_bytes"
                },
                value,
                v1_parent: Some(parent),
            }),
            None => limit_gaps.push(match &v2_parent {
                Err(why) => format!("{controller}: {why}"),
                Ok(_) => format!("{controller}: no cgroup v2 or v1 {controller} controller"),
            }),
        }
    }
    let limits_status = if limit_gaps.is_empty() && (v2_parent.is_ok() || !limits.is_empty()) {
        Status::Enforced
    } else if limit_gaps.is_empty() {
        Status::Missing(format!(
            "{} (limits fall back to RLIMIT_NPROC/RLIMIT_AS)",
            v2_parent.as_ref().err().cloned().unwrap_or_default()
        ))
    } else {
        Status::Missing(format!(
            "{} (falling back to RLIMIT_NPROC/RLIMIT_AS)",
            limit_gaps.join("; ")
        ))
    };
    coverage.push(LAYER, Guarantee::ResourceLimits, limits_status);

    let plan = CgroupPlan {
        v2_parent,
        v2_controllers,
        limits,
    };
    (plan, coverage)
}

/// A sandbox's cgroups, and its registration with the eBPF runtime. Created before the
/// agent's init is released; torn down (everything in it killed, groups removed) at the end.
/// Dropping it without `teardown` does the same, best effort.
pub(crate) struct SandboxGroup {
    /// The cgroup2 group (limits there, cgroup-BPF attached to it).
    v2_dir: Option<PathBuf>,
    /// Groups in v1 hierarchies (pids or memory on hybrid hosts).
    v1_dirs: Vec<PathBuf>,
    /// The eBPF layers' entries for this sandbox: dropped in `teardown` after the group empties.
    bpf: Option<Registration>,
    done: bool,
}

impl std::fmt::Debug for SandboxGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxGroup")
            .field("v2_dir", &self.v2_dir)
            .field("v1_dirs", &self.v1_dirs)
            .field("bpf", &self.bpf)
            .finish()
    }
}

fn write_file(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Enables `controllers` for the children of `dir` (cgroup v2), skipping those already on.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> anyhow::Result<()> {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in controllers {
        if !enabled.split_whitespace().any(|e| e == *c) {
            write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
    }
    Ok(())
}

fn make_dir(path: &Path) -> anyhow::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating cgroup {}", path.display())),
    }
}

/// Pids listed in a group's cgroup.procs (empty when the file is gone).
fn procs(dir: &Path) -> Vec<libc::pid_t> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs everything in `dir`: `cgroup.kill` where the kernel has it (5.14+, v2), else
/// every pid in cgroup.procs (repeated by the caller until the group is empty, since a
/// process may fork while it is being killed).
fn kill_group(dir: &Path) {
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() && fs::write(&kill_file, "1").is_ok() {
        return;
    }
    for pid in procs(dir) {
        // SAFETY: kill has no memory effects; the pid was in the sandbox's group a moment ago
        // (a recycled pid would have to be reused into this group to be hit, which only
        // the sandbox itself can cause).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

pub(crate) use ebpf_probes::cgroup_exists;

/// Groups younger than this are never collected: a concurrent launch may not have moved its
/// init in yet.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Removes empty sandbox groups left behind by supervisors that were killed (SIGKILL skips
/// the teardown). rmdir refuses a group with a task in it, so a running sandbox's group
/// (init is always in it) is never touched; young groups are skipped, see `STALE_AFTER`.
fn collect_stale(parent: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return removed;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old && fs::remove_dir(entry.path()).is_ok() {
            tracing::debug!(
                layer = LAYER.name(),
                "removed stale group {}",
                entry.path().display()
            );
            removed.push(entry.path());
        }
    }
    removed
}

/// `agentbox gc` as root: stale empty sandbox groups, then the eBPF map entries of every
/// sandbox whose cgroup is gone (`ebpf::EbpfPlan::reclaim`'s rule).
pub(crate) fn reclaim_dead() -> (Vec<PathBuf>, Vec<u32>) {
    let Some(mount) = kernel::cgroup2_mount().filter(|_| kernel::is_root()) else {
        return (Vec::new(), Vec::new());
    };
    let groups = collect_stale(&mount.join(GROUP_DIR));
    let pinned = Path::new(ebpf_probes::DEFAULT_PIN_ROOT).exists();
    let sandboxes = match (pinned, fs::File::open(&mount)) {
        (true, Ok(handle)) => {
            match ebpf_probes::Runtime::open(Path::new(ebpf_probes::DEFAULT_PIN_ROOT)) {
                Ok((runtime, _)) => runtime.reclaim_dead(|id| cgroup_exists(&handle, id)),
                Err(_) => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    (groups, sandboxes)
}

impl SandboxGroup {
    /// Creates the groups, writes the limits and registers the sandbox with the eBPF runtime
    /// (network rules in force for anything that enters the group from now on). `name` is the
    /// run's sandbox id. `None` when the plan has no group to make (unprivileged).
    pub(crate) fn create(
        plan: &CgroupPlan,
        ebpf: Option<&EbpfPlan>,
        name: &str,
    ) -> anyhow::Result<Option<SandboxGroup>> {
        if plan.v2_parent.is_err() && plan.limits.is_empty() {
            return Ok(None);
        }
        let mut group = SandboxGroup {
            v2_dir: None,
            v1_dirs: Vec::new(),
            bpf: None,
            done: false,
        };
        let parents = plan
            .v2_parent
            .iter()
            .chain(plan.limits.iter().filter_map(|l| l.v1_parent.as_ref()));
        for parent in parents {
            let _ = collect_stale(parent);
        }
        if let Ok(parent) = &plan.v2_parent {
            if !plan.v2_controllers.is_empty() {
                let mount = parent.parent().context("cgroup2 parent has no mount")?;
                enable_controllers(mount, &plan.v2_controllers)?;
                enable_controllers(parent, &plan.v2_controllers)?;
            }
            let dir = parent.join(name);
            make_dir(&dir)?;
            group.v2_dir = Some(dir.clone());
            for limit in plan.limits.iter().filter(|l| l.v1_parent.is_none()) {
                write_file(&dir.join(limit.file), &limit.value.to_string())?;
            }
        }
        for limit in &plan.limits {
            let Some(parent) = &limit.v1_parent else {
                continue;
            };
            fs::create_dir_all(parent)
                .with_context(|| format!("creating cgroup {}", parent.display()))?;
            let dir = parent.join(name);
            if !group.v1_dirs.contains(&dir) {
                make_dir(&dir)?;
                group.v1_dirs.push(dir.clone());
            }
            write_file(&dir.join(limit.file), &limit.value.to_string())?;
        }
        if let (Some(ebpf), Some(dir)) = (ebpf, &group.v2_dir) {
            if let Some(mount) = plan.v2_parent.as_ref().ok().and_then(|p| p.parent()) {
                let reclaimed = ebpf.reclaim(mount);
                if !reclaimed.is_empty() {
                    tracing::info!(?reclaimed, "removed map entries of dead supervisors");
                }
            }
            group.bpf = Some(ebpf.register(dir, name)?);
        }
        Ok(Some(group))
    }

    /// The cgroup2 group, opened for `clone3(CLONE_INTO_CGROUP)`: init starts in it instead
    /// of being moved there. A move (a write to cgroup.procs) takes the kernel's
    /// cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period when no
    /// other move happened just before (~15 ms, the largest part of a root start-up); a task
    /// cloned into a group takes it only for reading.
    pub(crate) fn v2_fd(&self) -> Option<fs::File> {
        let dir = self.v2_dir.as_ref()?;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_PATH | libc::O_CLOEXEC)
            .open(dir)
            .ok()
    }

    /// The `tasks` files of the v1 groups (pids, memory on hybrid hosts), opened for init to
    /// join them itself: a single-threaded task writing "0" (itself) to `tasks` skips the
    /// cgroup_threadgroup_rwsem that a write of a pid to cgroup.procs takes for writing, and
    /// with it the RCU grace period that write waits for (measured here: 30 us against
    /// 14 ms). Init is single-threaded until it execs.
    pub(crate) fn v1_tasks(&self) -> anyhow::Result<Vec<fs::File>> {
        self.v1_dirs
            .iter()
            .map(|dir| {
                let path = dir.join("tasks");
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))
            })
            .collect()
    }

    /// Moves `pid` (init, still waiting before it confines itself) into the cgroup2 group
    /// unless it was cloned into it (`in_v2`), and tags it for the observers. Init joins the
    /// v1 groups itself (`v1_tasks`) before it does anything else after go. Fails closed: an
    /// error means the agent must not start.
    pub(crate) fn place(&self, pid: libc::pid_t, in_v2: bool) -> anyhow::Result<()> {
        self.v2_dir
            .iter()
            .filter(|_| !in_v2)
            .try_for_each(|dir| write_file(&dir.join("cgroup.procs"), &pid.to_string()))?;
        if let Some(registration) = &self.bpf {
            registration.seed(pid)?;
        }
        Ok(())
    }

    /// The eBPF layers' registration, when the sandbox has one.
    pub(crate) fn registration(&self) -> Option<&Registration> {
        self.bpf.as_ref()
    }

    /// Kills everything still in the groups and waits (up to `timeout`) until they are empty.
    /// Returns the pids that were still there at the start.
    pub(crate) fn kill_all(&self, timeout: Duration) -> anyhow::Result<Vec<libc::pid_t>> {
        let dirs: Vec<&PathBuf> = self.v2_dir.iter().chain(&self.v1_dirs).collect();
        let mut left: Vec<libc::pid_t> = dirs.iter().flat_map(|d| procs(d)).collect();
        left.sort_unstable();
        left.dedup();
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::default();
        loop {
            let busy: Vec<&&PathBuf> = dirs.iter().filter(|d| !procs(d).is_empty()).collect();
            if busy.is_empty() {
                return Ok(left);
            }
            if Instant::now() > deadline {
                bail!(
                    "processes still in {} after {timeout:?}",
                    busy.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for dir in busy {
                kill_group(dir);
            }
            backoff.wait();
        }
    }

    /// Ends the sandbox: kills what is left, unregisters it from the eBPF runtime (after the
    /// group is empty, so no task runs unfiltered) and removes the groups.
    pub(crate) fn teardown(mut self) -> anyhow::Result<()> {
        self.done = true;
        let killed = self.kill_all(Duration::from_secs(5));
        drop(self.bpf.take());
        let mut errors = Vec::new();
        if let Err(e) = killed {
            errors.push(format!("{e:#}"));
        }
        for dir in self.v2_dir.iter().chain(&self.v1_dirs) {
            if let Err(e) = remove_group(dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        }
        if !errors.is_empty() {
            bail!("cgroup teardown: {}", errors.join("; "));
        }
        Ok(())
    }
}

/// Sleeps between polls of a group that is emptying: 50 us first, doubling up to 5 ms. The
/// last task usually leaves within a fraction of a millisecond (a fixed 2-5 ms sleep was
/// most of a short run's teardown), and v1 groups have no event to wait on.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn wait(&mut self) {
        let micros = (50u64 << self.0.min(7)).min(5_000);
        self.0 += 1;
        std::thread::sleep(Duration::from_micros(micros));
    }
}

/// rmdir, retried briefly: the last task may still be leaving the group.
fn remove_group(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut backoff = Backoff::default();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                backoff.wait();
            }
            Err(e) => return Err(e),
        }
    }
}

impl Drop for SandboxGroup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(e) = self.kill_all(Duration::from_secs(2)) {
            tracing::warn!(layer = LAYER.name(), "{e:#}");
        }
        drop(self.bpf.take());
        for dir in self.v2_dir.iter().chain(&self.v1_dirs) {
            if let Err(e) = remove_group(dir) {
                tracing::warn!(layer = LAYER.name(), "removing {}: {e}", dir.display());
            }
        }
    }
}
