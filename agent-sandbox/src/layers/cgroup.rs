//! cgroup layer: one cgroup per sandbox (pids and memory limits, tree teardown) and the
//! cgroup-BPF network programs attached to it (egress by address and port, bind ports).
//!
//! `compile` runs before fork: it decides where each limit lives (cgroup v2 when the host's
//! cgroup2 hierarchy has the controller, else the v1 hierarchy that has it), opens the pinned
//! eBPF runtime (loading and pinning it on first use) and compiles the network rules. The
//! supervisor then creates the groups (`SandboxGroup::create`), moves init into them while it
//! waits (`SandboxGroup::place`), and at the end kills whatever is left and removes them
//! (`SandboxGroup::teardown`). Layout and fallbacks: docs/cgroups.md.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ebpf_probes::ipnet::IpNet;
use ebpf_probes::{Counters, EventStream, LoadState, Runtime, SandboxConfig};

use crate::kernel;
use crate::policy::{Coverage, Guarantee, Layer, Status};
use crate::policy::{Mode, Policy, ViolationAction};

/// Layer name of the limits and the tree teardown.
pub const LAYER: Layer = Layer::Cgroup;
/// Layer name of the network programs (also the `layer` of their denials).
pub const NET_LAYER: Layer = Layer::CgroupBpf;
/// Directory under each hierarchy that holds the sandbox groups.
pub const GROUP_DIR: &str = "agentbox";

const UNPRIVILEGED_BPF: &str = "needs root (CAP_BPF, CAP_SYS_ADMIN) for cgroup-BPF";

/// Where one limit is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// `pids` or `memory`.
    pub controller: &'static str,
    /// The interface file (`pids.max`, `memory.max`, `memory.limit_in_bytes`).
    pub file: &'static str,
    pub value: u64,
    /// `None`: the sandbox's cgroup2 group; `Some(parent)`: a v1 group under this directory.
    pub v1_parent: Option<PathBuf>,
}

/// The compiled cgroup layer.
pub struct CgroupPlan {
    /// `<cgroup2 mount>/agentbox`, when this process may create groups there.
    v2_parent: Option<PathBuf>,
    /// Controllers to enable in the subtree_control files on the way down (cgroup v2).
    v2_controllers: Vec<&'static str>,
    limits: Vec<Limit>,
    runtime: Option<(Runtime, LoadState)>,
    net: ebpf_probes::NetRules,
    kill_on_violation: bool,
    audit_only: bool,
    /// BPF LSM rules registered with the sandbox (set by the plan where the LSM programs are
    /// attached, see `layers::lsm`).
    lsm: Option<ebpf_probes::LsmRules>,
}

impl std::fmt::Debug for CgroupPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupPlan")
            .field("v2_parent", &self.v2_parent)
            .field("limits", &self.limits)
            .field("runtime", &self.runtime.as_ref().map(|(_, s)| s))
            .field("net", &self.net)
            .field("lsm", &self.lsm.is_some())
            .finish_non_exhaustive()
    }
}

impl CgroupPlan {
    /// The eBPF runtime and how it was found, when it loaded.
    pub fn runtime(&self) -> Option<&(Runtime, LoadState)> {
        self.runtime.as_ref()
    }

    /// True when the cgroup-BPF programs will filter this sandbox's network.
    pub fn enforces_network(&self) -> bool {
        self.runtime.is_some() && self.v2_parent.is_some()
    }

    /// The limits placed in cgroups (the rest fall back to rlimits).
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// True when the process-count limit lives in a cgroup.
    pub fn holds(&self, controller: &str) -> bool {
        self.limits.iter().any(|l| l.controller == controller)
    }

    /// The rules the programs get (policy plus the default denies).
    pub fn net_rules(&self) -> &ebpf_probes::NetRules {
        &self.net
    }

    /// Why the BPF LSM programs cannot take this sandbox's rules, or `None` when they can:
    /// they ride on the same runtime and sandbox registration as cgroup-BPF.
    pub fn lsm_unavailable(&self) -> Option<String> {
        match (&self.runtime, &self.v2_parent) {
            (Some((runtime, _)), Some(_)) => runtime.lsm_error().map(str::to_string),
            (Some(_), None) => Some("needs a cgroup2 group for the sandbox".into()),
            (None, _) => Some("needs the eBPF runtime (root, bpffs, a cgroup2 group)".into()),
        }
    }

    /// Registers `rules` with the sandbox's BPF LSM programs (see `lsm_unavailable`).
    pub fn set_lsm_rules(&mut self, rules: ebpf_probes::LsmRules) {
        self.lsm = Some(rules);
    }

    /// True when the sandbox will be registered with BPF LSM rules.
    pub fn has_lsm_rules(&self) -> bool {
        self.lsm.is_some() && self.enforces_network()
    }
}

/// The policy's network section as kernel rules: `None` addresses become 0.0.0.0/0 and ::/0,
/// and the default denies (host loopback, cloud metadata) are added; an allow entry naming
/// one of them exactly still wins (most specific rule wins, see ebpf_probes::rules).
pub fn net_rules(policy: &Policy) -> ebpf_probes::NetRules {
    let expand = |rule: &crate::policy::NetRule| -> Vec<ebpf_probes::NetRule> {
        let ports = ebpf_probes::PortRange::new(rule.ports.first, rule.ports.last);
        match rule.net {
            Some(net) => vec![ebpf_probes::NetRule::new(net, ports)],
            None => vec![
                ebpf_probes::NetRule::new(
                    IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("valid /0"),
                    ports,
                ),
                ebpf_probes::NetRule::new(
                    IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("valid /0"),
                    ports,
                ),
            ],
        }
    };
    let net = &policy.network;
    let mut deny: Vec<ebpf_probes::NetRule> = net.deny.iter().flat_map(expand).collect();
    deny.extend(ebpf_probes::default_deny_rules());
    ebpf_probes::NetRules {
        allow: net.allow.iter().flat_map(expand).collect(),
        deny,
        bind: net
            .bind
            .iter()
            .map(|r| ebpf_probes::PortRange::new(r.first, r.last))
            .collect(),
        // The seccomp layer refuses netlink sockets exactly when nothing is allowed; glibc's
        // resolver needs them otherwise.
        allow_netlink: !net.allow.is_empty(),
        allow_raw: false,
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

/// Compiles the layer and says what it delivers here. Opens (and on first use loads and pins)
/// the eBPF runtime when this process is root.
pub fn compile(policy: &Policy) -> anyhow::Result<(CgroupPlan, Coverage)> {
    let mut coverage = Coverage::default();
    let net = net_rules(policy);
    // Catches rule sets the kernel value cannot hold before anything is started.
    ebpf_probes::verdict(&net, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        .context("compiling the network rules for cgroup-BPF")?;

    let root = kernel::is_root();
    let v2_parent: Result<PathBuf, String> = if !root {
        Err("needs root to create cgroups".into())
    } else {
        match kernel::cgroup2_mount() {
            None => Err("no cgroup2 mount".into()),
            Some(mount) => {
                let parent = mount.join(GROUP_DIR);
                match fs::create_dir(&parent) {
                    Ok(()) => Ok(parent),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(parent),
                    Err(e) => Err(format!("cannot create {}: {e}", parent.display())),
                }
            }
        }
    };

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

    // cgroup-BPF needs the sandbox's own cgroup2 group and the loaded programs.
    let runtime = match &v2_parent {
        Err(_) if !root => Err(UNPRIVILEGED_BPF.to_string()),
        Err(why) => Err(format!("no cgroup2 group for the programs: {why}")),
        Ok(_) => match Runtime::open(Path::new(ebpf_probes::DEFAULT_PIN_ROOT)) {
            Ok((runtime, state)) => {
                tracing::info!(
                    layer = NET_LAYER.name(),
                    version = runtime.version(),
                    ?state,
                    "eBPF runtime opened"
                );
                Ok((runtime, state))
            }
            Err(e) => Err(format!("cgroup-BPF programs did not load: {e}")),
        },
    };
    let net_status = match &runtime {
        Ok(_) => Status::Enforced,
        Err(why) => Status::Missing(why.clone()),
    };
    for g in [
        Guarantee::NetAddresses,
        Guarantee::NetTcpConnectPorts,
        Guarantee::NetTcpBindPorts,
    ] {
        coverage.push(NET_LAYER, g, net_status.clone());
    }

    let plan = CgroupPlan {
        v2_parent: v2_parent.ok(),
        v2_controllers,
        limits,
        runtime: runtime.ok(),
        net,
        kill_on_violation: policy.process.on_violation == ViolationAction::Kill,
        audit_only: policy.mode == Mode::Audit,
        lsm: None,
    };
    Ok((plan, coverage))
}

/// A sandbox's cgroups, and its registration with the eBPF runtime. Created before the
/// agent's init is released; torn down (everything in it killed, groups removed) at the end.
/// Dropping it without `teardown` does the same, best effort.
pub struct SandboxGroup {
    /// The cgroup2 group (limits there, cgroup-BPF attached to it).
    v2_dir: Option<PathBuf>,
    /// Groups in v1 hierarchies (pids or memory on hybrid hosts).
    v1_dirs: Vec<PathBuf>,
    // Declared before nothing else that matters: dropped in `teardown` after the group empties.
    bpf: Option<ebpf_probes::Sandbox>,
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

/// What the kernel observers are asked to report (from the observe layer).
#[derive(Debug, Clone, Copy)]
pub struct ObserveConfig {
    /// Budget of fork/exec/exit records per second; 0: none.
    pub trace_events_per_sec: u32,
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

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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

/// Groups younger than this are never collected: a concurrent launch may not have moved its
/// init in yet.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Removes empty sandbox groups left behind by supervisors that were killed (SIGKILL skips
/// the teardown). rmdir refuses a group with a task in it, so a running sandbox's group
/// (init is always in it) is never touched; young groups are skipped, see `STALE_AFTER`.
fn collect_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
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
        }
    }
}

impl SandboxGroup {
    /// Creates the groups, writes the limits and registers the sandbox with the eBPF runtime
    /// (network rules in force for anything that enters the group from now on). `name` is the
    /// run's sandbox id. `None` when the plan has no group to make (unprivileged).
    pub fn create(
        plan: &CgroupPlan,
        observe: ObserveConfig,
        name: &str,
    ) -> anyhow::Result<Option<SandboxGroup>> {
        if plan.v2_parent.is_none() && plan.limits.is_empty() {
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
            collect_stale(parent);
        }
        if let Some(parent) = &plan.v2_parent {
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
        if let (Some((runtime, _)), Some(dir)) = (&plan.runtime, &group.v2_dir) {
            let mut attempt = 0;
            let sandbox = loop {
                let mut cfg = SandboxConfig::new(bpf_id(name, attempt), dir);
                cfg.net = plan.net.clone();
                cfg.kill_on_violation = plan.kill_on_violation;
                cfg.audit_only = plan.audit_only;
                cfg.trace_events_per_sec = observe.trace_events_per_sec;
                cfg.lsm = plan.lsm.clone();
                // The rings are published in `place`, overlapped with moving init (both
                // wait for RCU grace periods) and after the fork (publishing uses a thread).
                match runtime.register_sandbox_unpublished(&cfg) {
                    Err(ebpf_probes::Error::SandboxExists(_)) if attempt < 16 => attempt += 1,
                    other => break other.context("registering the sandbox with cgroup-BPF")?,
                }
            };
            tracing::debug!(
                layer = NET_LAYER.name(),
                id = sandbox.id(),
                cgroup_id = sandbox.cgroup_id(),
                "sandbox registered"
            );
            group.bpf = Some(sandbox);
        }
        Ok(Some(group))
    }

    /// Moves `pid` (init, still waiting before it confines itself) into every group, publishes
    /// the event rings and tags it for the observers. Fails closed: an error means the agent
    /// must not start.
    pub fn place(&self, pid: libc::pid_t) -> anyhow::Result<()> {
        // The first move into a group and the publication of the event rings each wait for
        // an RCU grace period in the kernel: side by side they share it.
        let (moved, published) = std::thread::scope(|scope| {
            let published = self
                .bpf
                .as_ref()
                .map(|sandbox| scope.spawn(|| sandbox.publish_rings()));
            let moved = self
                .v2_dir
                .iter()
                .chain(&self.v1_dirs)
                .try_for_each(|dir| write_file(&dir.join("cgroup.procs"), &pid.to_string()));
            (moved, published.map(|thread| thread.join()))
        });
        moved?;
        match published {
            None => {}
            Some(Ok(result)) => result.context("publishing the kernel event rings")?,
            Some(Err(_)) => bail!("publishing the kernel event rings panicked"),
        }
        if let Some(sandbox) = &self.bpf {
            let pidfd = pidfd_open(pid).context("pidfd_open of the sandbox init")?;
            sandbox
                .seed_task(pidfd.as_fd())
                .context("tagging the sandbox init for the eBPF observers")?;
        }
        Ok(())
    }

    /// The sandbox's id in the eBPF maps, when registered.
    pub fn bpf_id(&self) -> Option<u32> {
        self.bpf.as_ref().map(|s| s.id())
    }

    /// A reader of the kernel events, when the sandbox is registered with the eBPF runtime.
    pub fn events(&self) -> anyhow::Result<Option<EventStream>> {
        self.bpf
            .as_ref()
            .map(|s| s.events().context("opening the kernel event rings"))
            .transpose()
    }

    /// The kernel's counters for this sandbox.
    pub fn counters(&self) -> Option<Counters> {
        self.bpf.as_ref().map(|s| s.counters())
    }

    /// The cgroup2 directory of this sandbox.
    pub fn dir(&self) -> Option<&Path> {
        self.v2_dir.as_deref()
    }

    /// Kills everything still in the groups and waits (up to `timeout`) until they are empty.
    /// Returns the pids that were still there at the start.
    pub fn kill_all(&self, timeout: Duration) -> anyhow::Result<Vec<libc::pid_t>> {
        let dirs: Vec<&PathBuf> = self.v2_dir.iter().chain(&self.v1_dirs).collect();
        let mut left: Vec<libc::pid_t> = dirs.iter().flat_map(|d| procs(d)).collect();
        left.sort_unstable();
        left.dedup();
        let deadline = Instant::now() + timeout;
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
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Ends the sandbox: kills what is left, unregisters it from the eBPF runtime (after the
    /// group is empty, so no task runs unfiltered) and removes the groups.
    pub fn teardown(mut self) -> anyhow::Result<()> {
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

/// rmdir, retried briefly: the last task may still be leaving the group.
fn remove_group(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{NetRule, PortRange};

    fn policy() -> Policy {
        Policy {
            name: "t".into(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_allow_beats_default_loopback_deny_and_wildcards_do_not() {
        let mut p = policy();
        p.network.allow.push(NetRule {
            net: Some("127.0.0.1/32".parse().unwrap()),
            ports: PortRange::single(8080),
        });
        p.network.allow.push(NetRule {
            net: None,
            ports: PortRange::single(443),
        });
        let rules = net_rules(&p);
        let v = |a: &str, port| ebpf_probes::verdict(&rules, ip(a), port).unwrap();
        assert!(v("127.0.0.1", 8080));
        assert!(!v("127.0.0.1", 8081));
        assert!(!v("127.0.0.2", 8080));
        // `*:443` reaches the world on both families but neither loopback nor metadata.
        assert!(v("93.184.216.34", 443));
        assert!(v("2001:db8::1", 443));
        assert!(!v("127.0.0.1", 443));
        assert!(!v("::1", 443));
        assert!(!v("169.254.169.254", 443));
        assert!(!v("93.184.216.34", 80));
    }

    #[test]
    fn policy_deny_wins_over_a_broader_allow() {
        let mut p = policy();
        p.network.allow.push(NetRule {
            net: Some("10.0.0.0/8".parse().unwrap()),
            ports: PortRange::ANY,
        });
        p.network.deny.push(NetRule {
            net: Some("10.1.0.0/16".parse().unwrap()),
            ports: PortRange::ANY,
        });
        let rules = net_rules(&p);
        assert!(ebpf_probes::verdict(&rules, ip("10.2.3.4"), 22).unwrap());
        assert!(!ebpf_probes::verdict(&rules, ip("10.1.3.4"), 22).unwrap());
        assert!(rules.allow_netlink);
        assert!(!net_rules(&policy()).allow_netlink);
    }

    #[test]
    fn bpf_ids_are_never_zero_and_differ_per_attempt() {
        assert_eq!(bpf_id("00000000aaaa", 0), 1);
        assert_eq!(bpf_id("0000002a", 0), 42);
        assert_eq!(bpf_id("0000002a", 1), 43);
        assert_ne!(bpf_id("not-hex!", 0), 0);
    }
}
