//! Landlock layer: filesystem allow-lists, TCP ports, signal and abstract-socket scoping.
//!
//! `compile` runs in the parent before fork: it probes the ABI, creates the ruleset and adds
//! every rule, so the child between fork and exec only calls `landlock_restrict_self`.
//! Landlock only grants; deny globs, protect globs and agentbox's own files are enforced by
//! leaving them out of the rules (see `omit`); protect matches get their read rights back.

mod omit;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use landlock::{
    make_bitflags, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

use crate::layers::{Host, Offer};
use crate::policy::{Coverage, Guarantee, Layer, Status};
use crate::policy::{Mode, Policy, PortRange};

use omit::{Omissions, Tree, WalkLimits};

const LAYER: Layer = Layer::Landlock;

/// A port range wider than this (and not "any port") is refused: one Landlock rule per port.
const MAX_PORTS_PER_RANGE: u32 = 1024;

/// `landlock_restrict_self` flag (ABI 7): log denials of programs exec'd inside the domain to
/// the kernel audit subsystem. The crate exposes it only through its own `restrict_self`, which
/// also calls prctl; the child side here must be one syscall, so the flag is passed raw.
const LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON: u32 = 1 << 1;

/// The compiled Landlock artifact: a ruleset fd holding every rule, ready for `restrict_self`.
#[derive(Debug)]
pub(crate) struct LandlockPlan {
    abi: u32,
    /// `None` when the kernel has no Landlock (the coverage says so; nothing to apply).
    ruleset: Option<OwnedFd>,
    restrict_flags: u32,
    rules: usize,
    /// Rules for paths the filesystem view mounts anew in init (/proc, /dev/shm): a rule's
    /// inode from the parent's mounts would not be the new mount's, so init adds these
    /// itself, on the new mounts, before restricting itself.
    late: Vec<LateRule>,
    #[cfg(test)]
    notes: Vec<String>,
}

/// A path-beneath rule opened in the child, on the view's own mount of `path`.
#[derive(Debug)]
struct LateRule {
    path: std::ffi::CString,
    access: u64,
}

/// `struct landlock_path_beneath_attr` of <linux/landlock.h> (packed).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// `LANDLOCK_RULE_PATH_BENEATH`.
const RULE_PATH_BENEATH: libc::c_int = 1;

impl LandlockPlan {
    /// The Landlock ABI the ruleset was built for (0: Landlock unavailable, nothing enforced).
    pub(crate) fn abi(&self) -> u32 {
        self.abi
    }

    /// Things the user should know that are not errors: listed paths that do not exist,
    /// protected paths not yet created, limits of deny-by-omission (logged at compile).
    #[cfg(test)]
    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Number of filesystem and port rules in the ruleset.
    pub(crate) fn rule_count(&self) -> usize {
        self.rules
    }

    /// CHILD side, between fork and exec, after `no_new_privs` (or with CAP_SYS_ADMIN): enforce
    /// the ruleset on the calling thread and its future children. One syscall, no allocation.
    /// The ruleset fd is close-on-exec, so it does not leak into the agent.
    pub(crate) fn apply(&self) -> io::Result<()> {
        let Some(fd) = &self.ruleset else {
            return Ok(());
        };
        for rule in &self.late {
            add_late_rule(fd.as_raw_fd(), rule)?;
        }
        // SAFETY: landlock_restrict_self takes an fd and flags by value; the fd is owned by self.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                fd.as_raw_fd(),
                self.restrict_flags as libc::c_uint,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Like `apply`, then closes the ruleset fd. Consumes the plan without freeing its heap
    /// parts: in a forked child of a multithreaded parent, `free` is best avoided.
    pub(crate) fn restrict_self(self) -> io::Result<()> {
        let plan = ManuallyDrop::new(self);
        let result = plan.apply();
        if let Some(fd) = &plan.ruleset {
            // SAFETY: the fd is owned by the plan, which is never dropped (ManuallyDrop), so it
            // is closed exactly once, here.
            unsafe { libc::close(fd.as_raw_fd()) };
        }
        result
    }
}

/// What the plan took from Landlock and gave to another layer, decided before anything
/// compiles (plan.rs). Landlock compiles the rest and states each part it left.
#[derive(Debug, Clone, Default)]
pub(crate) struct Share {
    /// Deny globs BPF LSM enforces exactly: left out here (no omission walk for them).
    pub deny_exact_elsewhere: Vec<String>,
    /// Protect globs are the mounts layer's read-only bind mounts.
    pub protect_by_mounts: bool,
    /// cgroup-BPF filters TCP by address and port: Landlock handles no TCP at all. Its hook
    /// runs before the cgroup programs, so TCP port rules kept here would refuse
    /// `127.0.0.1:OTHER` under `--allow-net 127.0.0.1:PORT` itself (as EACCES, without the
    /// address rule that decided) and open PORT on every address for what they let through.
    pub tcp_by_cgroup_bpf: bool,
    /// BPF LSM's `path_truncate` program restricts truncate(2) where Landlock (ABI < 3) does
    /// not.
    pub truncate_by_bpf_lsm: bool,
    /// Mount points the filesystem view mounts anew in init (/proc, /dev/shm): rules at or
    /// below them are added by init on the new mounts.
    pub remounted: Vec<PathBuf>,
    /// The view's read-only mounts refuse truncate(2) outside the writable trees (EROFS,
    /// before any LSM runs), so the read-only rules may carry Landlock's TRUNCATE right.
    /// That is for speed: every open asks Landlock for TRUNCATE beside the access it needs
    /// (to remember it for a later ftruncate), and a path walk only stops at a rule that
    /// grants everything asked. Without TRUNCATE each open of a read-only file walks up to
    /// the real root; with it, the walk ends at the nearest rule.
    pub truncate_by_read_only_view: bool,
}

impl Share {
    /// The part of the policy Landlock enforces.
    fn view(&self, policy: &Policy) -> Policy {
        let mut view = policy.clone();
        view.filesystem
            .deny
            .retain(|glob| !self.deny_exact_elsewhere.contains(&glob.pattern));
        if self.protect_by_mounts {
            view.filesystem.protect.clear();
        }
        view
    }
}

/// Doctor's view: which guarantees this kernel's Landlock ABI gives.
pub(crate) fn offers(host: &Host) -> Vec<Offer> {
    let at_least = |min: u32| match &host.landlock {
        Ok(abi) if *abi >= min => Ok(format!("landlock (ABI {abi})")),
        Ok(abi) => Err(format!("landlock ABI {abi} < {min}")),
        Err(e) => Err(format!("landlock: {e}")),
    };
    let execve_only = Err(match &host.landlock {
        Ok(abi) => format!(
            "landlock (ABI {abi}) denies execve outside the exec trees, but ld.so-loaded and \
             memfd programs are not covered (partial)"
        ),
        Err(e) => format!("landlock: {e}"),
    });
    vec![
        Offer::new(Guarantee::FsAllowList, at_least(1)),
        Offer::new(Guarantee::ExecAllowList, execve_only),
        Offer::new(Guarantee::NetTcpConnectPorts, at_least(4)),
        Offer::new(Guarantee::NetTcpBindPorts, at_least(4)),
        Offer::new(Guarantee::ScopeSignals, at_least(6)),
        Offer::new(Guarantee::ScopeAbstractUnix, at_least(6)),
    ]
}

/// Globs another layer wants found in the writable trees (the read-only binds of
/// `layers::mounts`). The deny search's walk answers it as it goes: one walk lists each
/// directory once for both, within one time budget. Unanswered (the sender dropped: no
/// Landlock here), the asker searches itself (`protect_matches`).
pub(crate) struct FindRequest {
    pub globs: Vec<String>,
    pub reply: std::sync::mpsc::Sender<Found>,
}

/// What a search for protect globs found in the writable trees.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// The matches that exist now, none below another.
    pub matches: Vec<PathBuf>,
    /// Whether a glob may match below a writable tree at all: a name created there later is
    /// not covered by a mount made at launch.
    pub may_match: bool,
    /// What the bounded search left unexamined.
    pub unexamined: Vec<String>,
}

impl Found {
    fn new(mut matches: Vec<PathBuf>, may_match: bool, unexamined: Vec<String>) -> Found {
        matches.sort();
        matches.dedup();
        // Sorted, a path follows its ancestors: keep those not below the last one kept (a
        // read-only bind covers what is below it).
        let mut kept: Vec<PathBuf> = Vec::with_capacity(matches.len());
        for path in matches {
            if !kept.last().is_some_and(|last| path.starts_with(last)) {
                kept.push(path);
            }
        }
        Found {
            matches: kept,
            may_match,
            unexamined,
        }
    }
}

/// Compiles the Landlock part of `policy` (what `share` leaves it). `protected` paths (the
/// audit log, the profile file) stay unwritable even inside a writable tree; they keep read
/// access where a tree grants it. `find`, if given, is answered as soon as the search is done.
pub(crate) fn compile(
    policy: &Policy,
    share: &Share,
    protected: &[PathBuf],
    find: Option<FindRequest>,
) -> anyhow::Result<(LandlockPlan, Coverage)> {
    match crate::kernel::landlock_abi() {
        Ok(abi) if abi > 0 => {
            let limits = WalkLimits::within(policy.filesystem.search_budget());
            compile_finding(policy, share, protected, abi, limits, find)
        }
        Ok(_) => Ok(unavailable("Landlock reports ABI 0".to_string())),
        Err(reason) => Ok(unavailable(format!("Landlock unavailable: {reason}"))),
    }
}

/// Every guarantee this layer could give, reported missing.
fn unavailable(reason: String) -> (LandlockPlan, Coverage) {
    let mut coverage = Coverage::default();
    for g in [
        Guarantee::FsAllowList,
        Guarantee::FsDenyExact,
        Guarantee::ExecAllowList,
        Guarantee::NetTcpConnectPorts,
        Guarantee::NetTcpBindPorts,
        Guarantee::ScopeSignals,
        Guarantee::ScopeAbstractUnix,
    ] {
        coverage.push(LAYER, g, Status::Missing(reason.clone()));
    }
    let plan = LandlockPlan {
        abi: 0,
        ruleset: None,
        restrict_flags: 0,
        rules: 0,
        late: Vec::new(),
        #[cfg(test)]
        notes: vec![reason],
    };
    (plan, coverage)
}

/// Adds `rule` to the ruleset, on the mount at its path now. No allocation (child side).
fn add_late_rule(ruleset: i32, rule: &LateRule) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the fd is closed below.
    let fd = unsafe {
        libc::open(
            rule.path.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let added = add_path_beneath(ruleset, fd, rule.access);
    // SAFETY: closing the O_PATH fd opened above.
    unsafe { libc::close(fd) };
    added
}

/// `landlock_add_rule(2)` for one path_beneath rule on the open `parent`. Raw: the crate's
/// `add_rule` also fstat()s every path (to mask a file's access, which `path_rule` did), and
/// the child side must not allocate. No allocation.
fn add_path_beneath(ruleset: i32, parent: i32, access: u64) -> io::Result<()> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: parent,
    };
    // SAFETY: `attr` is a live packed struct as the syscall expects; the caller holds both
    // fds open.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds a path-beneath rule per `(path, access)` to `ruleset`: how many it added, and the
/// paths that vanished or became symlinks (nothing to grant).
fn add_rules<'a>(
    ruleset: i32,
    rules: &[(&'a Path, BitFlags<AccessFs>)],
    abi: ABI,
) -> anyhow::Result<(usize, Vec<&'a Path>)> {
    let mut added = 0;
    let mut vanished = Vec::new();
    for &(path, access) in rules {
        let Some((parent, access)) = path_rule(path, access, abi)? else {
            vanished.push(path);
            continue;
        };
        add_path_beneath(ruleset, parent.as_raw_fd(), access.bits())
            .with_context(|| format!("landlock: adding rule for {}", path.display()))?;
        added += 1;
    }
    Ok((added, vanished))
}

/// `kernel_abi` may be lower than the running kernel's (tests use that to check older-ABI
/// coverage); it must not be higher.
#[cfg(test)]
fn compile_for_abi(
    policy: &Policy,
    share: &Share,
    protected: &[PathBuf],
    kernel_abi: u32,
    limits: WalkLimits,
) -> anyhow::Result<(LandlockPlan, Coverage)> {
    compile_finding(policy, share, protected, kernel_abi, limits, None)
}

/// `compile_for_abi`, answering `find`.
fn compile_finding(
    policy: &Policy,
    share: &Share,
    protected: &[PathBuf],
    kernel_abi: u32,
    limits: WalkLimits,
    find: Option<FindRequest>,
) -> anyhow::Result<(LandlockPlan, Coverage)> {
    let view = share.view(policy);
    let policy = &view;
    // Newer kernels than the crate knows are driven at the crate's newest ABI.
    let abi = ABI::from(i32::try_from(kernel_abi).unwrap_or(i32::MAX));
    let abi_num = abi as u32;
    let mut notes = Vec::new();
    let mut coverage = Coverage::default();
    if kernel_abi > abi_num {
        notes.push(format!(
            "kernel Landlock ABI {kernel_abi}; agentbox uses ABI {abi_num}"
        ));
    }
    if policy.mode == Mode::Audit {
        notes.push("audit mode: Landlock cannot log without denying; it still denies".into());
    }

    let searched = std::time::Instant::now();
    let fs = compile_fs(policy, protected, abi, limits, find, &mut notes)?;
    tracing::debug!(elapsed = ?searched.elapsed(), "deny search and filesystem rules");
    fs_coverage(policy, share, &fs, abi_num, &mut coverage);
    let net = if share.tcp_by_cgroup_bpf {
        for g in [
            Guarantee::NetTcpConnectPorts,
            Guarantee::NetTcpBindPorts,
            Guarantee::NetAddresses,
        ] {
            coverage.push(
                LAYER,
                g,
                Status::Missing(format!(
                    "left to {} (filters by address and port)",
                    Layer::CgroupBpf
                )),
            );
        }
        NetRules {
            handled: BitFlags::EMPTY,
            connect: BTreeSet::new(),
            bind: BTreeSet::new(),
        }
    } else {
        compile_net(policy, abi_num, &mut coverage)?
    };
    scope_coverage(abi_num, &mut coverage);
    coverage.push(
        LAYER,
        Guarantee::FsDenialsLogged,
        Status::Missing(if abi_num >= 7 {
            "Landlock logs denials to the kernel audit subsystem only, not to the agentbox log"
                .into()
        } else {
            format!("Landlock denial logging needs ABI 7; kernel has ABI {kernel_abi}")
        }),
    );

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .context("landlock: handling filesystem access")?;
    if !net.handled.is_empty() {
        ruleset = ruleset
            .handle_access(net.handled)
            .context("landlock: handling TCP access")?;
    }
    if abi_num >= 6 {
        ruleset = ruleset
            .scope(Scope::from_all(abi))
            .context("landlock: scoping")?;
    }
    let mut created = ruleset.create().context("landlock: creating the ruleset")?;

    let mut rules = 0;
    for (ports, access) in [
        (&net.connect, AccessNet::ConnectTcp),
        (&net.bind, AccessNet::BindTcp),
    ] {
        if !net.handled.contains(access) {
            continue;
        }
        for &port in ports {
            created = created
                .add_rule(NetPort::new(port, access))
                .with_context(|| format!("landlock: adding TCP port rule {port}"))?;
            rules += 1;
        }
    }
    let ruleset: Option<OwnedFd> = created.into();
    let Some(ruleset) = ruleset else {
        // HardRequirement makes the crate fail instead; this is the fail-closed backstop.
        bail!("landlock: the ruleset was not created although the kernel reports ABI {abi_num}");
    };
    let mut late = Vec::new();
    let mut direct = Vec::with_capacity(fs.rules.len());
    for (path, access) in &fs.rules {
        if share.remounted.iter().any(|m| path.starts_with(m)) {
            let access = if path.is_dir() {
                *access
            } else {
                *access & AccessFs::from_file(abi)
            };
            late.push(LateRule {
                path: std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                    .with_context(|| format!("{} contains a NUL byte", path.display()))?,
                access: access.bits(),
            });
            rules += 1;
            continue;
        }
        let access = if share.truncate_by_read_only_view
            && abi_num >= 3
            && !access.intersects(omit::writable_rights())
        {
            *access | AccessFs::Truncate
        } else {
            *access
        };
        direct.push((path.as_path(), access));
    }
    // Each rule costs an open, a stat and the add (~4 µs here; /etc alone is ~140 rules), and
    // the plan's other thread is waiting for this one by now: half go to a second thread.
    let fd = ruleset.as_raw_fd();
    let (added, vanished) = if direct.len() < 32 {
        add_rules(fd, &direct, abi)?
    } else {
        let (first, second) = direct.split_at(direct.len() / 2);
        let (a, b) = std::thread::scope(|scope| {
            let b = scope.spawn(|| add_rules(fd, second, abi));
            let a = add_rules(fd, first, abi);
            let b = b
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (a, b)
        });
        let ((n, mut gone), (m, more)) = (a?, b?);
        gone.extend(more);
        (n + m, gone)
    };
    rules += added;
    for path in vanished {
        notes.push(format!(
            "{} left out: it vanished or became a symlink while compiling",
            path.display()
        ));
    }
    let restrict_flags = if abi_num >= 7 {
        LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
    } else {
        0
    };
    for note in &notes {
        tracing::info!(layer = LAYER.name(), "{note}");
    }
    let plan = LandlockPlan {
        abi: abi_num,
        ruleset: Some(ruleset),
        restrict_flags,
        rules,
        late,
        #[cfg(test)]
        notes,
    };
    Ok((plan, coverage))
}

struct FsRules {
    rules: BTreeMap<PathBuf, BitFlags<AccessFs>>,
    /// A deny glob may match inside a writable tree: files created later are not covered.
    deny_in_writable: bool,
    /// A protect glob may match inside a writable tree: paths created later are not covered.
    protect_in_writable: bool,
    /// Unanchored globs (`**/.env`) left unsearched in read-only trees, and parts of writable
    /// trees the bounded search did not examine: stated gaps of the deny guarantee.
    unanchored_gaps: Vec<String>,
}

/// The allowed trees, one per real path (a path listed twice gets the union of its rights).
fn allowed_trees(policy: &Policy, abi: ABI, notes: &mut Vec<String>) -> BTreeMap<PathBuf, Tree> {
    let read = make_bitflags!(AccessFs::{ReadFile | ReadDir});
    let exec = read | AccessFs::Execute;
    let write = AccessFs::from_all(abi) & !AccessFs::Execute;
    debug_assert!(write.intersects(omit::writable_rights()));
    let mut trees: BTreeMap<PathBuf, Tree> = BTreeMap::new();
    // Asking about execs leaves them to BPF LSM, which takes an approval as a rule while the
    // agent runs; Landlock cannot, so it lets every readable file run.
    let read = if policy.asks_execs() { exec } else { read };
    let lists = [
        (&policy.filesystem.read, read, "read"),
        (&policy.filesystem.write, write, "write"),
        (&policy.filesystem.exec, exec, "exec"),
    ];
    for (paths, access, kind) in lists {
        for written in paths {
            let real = match crate::profile::canonical_path(written) {
                Ok(real) => real,
                Err(e) => {
                    let msg = format!("{kind} path {} skipped: {e}", written.display());
                    if kind == "exec" {
                        tracing::debug!(layer = LAYER.name(), "{msg}");
                    } else {
                        notes.push(msg);
                    }
                    continue;
                }
            };
            trees
                .entry(real.clone())
                .and_modify(|t| t.access |= access)
                .or_insert(Tree {
                    written: written.clone(),
                    real,
                    access,
                });
        }
    }

    trees
}

/// The matches of `globs` that exist now inside the writable trees, found by the walk a
/// `FindRequest` rides on, for read-only bind mounts (`layers::mounts`), where no deny
/// search answered one.
pub(crate) fn protect_matches(policy: &Policy, globs: &[String]) -> anyhow::Result<Found> {
    if globs.is_empty() {
        return Ok(Found::default());
    }
    let mut notes = Vec::new();
    let trees = allowed_trees(policy, ABI::V10, &mut notes);
    let writable: Vec<&Tree> = trees
        .values()
        .filter(|t| t.access.intersects(omit::writable_rights()))
        .collect();
    let roots = writable.iter().map(|t| t.real.clone()).collect();
    let omissions = Omissions::finding(&[], &[], globs, roots, Vec::new())?;
    let mut matches = Vec::new();
    let mut may_match = false;
    let mut unexamined = Vec::new();
    let limits = WalkLimits::within(policy.filesystem.search_budget());
    let searched = std::time::Instant::now();
    for tree in writable {
        may_match |= omissions.find_may_match_below(&tree.real, &tree.written);
        let split = omissions.split(tree, &limits)?;
        matches.extend(split.found);
        unexamined.extend(split.found_unexamined);
    }
    tracing::debug!(elapsed = ?searched.elapsed(), "protect search");
    Ok(Found::new(matches, may_match, unexamined))
}

fn compile_fs(
    policy: &Policy,
    protected: &[PathBuf],
    abi: ABI,
    limits: WalkLimits,
    find: Option<FindRequest>,
    notes: &mut Vec<String>,
) -> anyhow::Result<FsRules> {
    let trees = allowed_trees(policy, abi, notes);
    let mut protected_real = Vec::new();
    for path in protected {
        match crate::profile::canonical_path(path) {
            Ok(real) => protected_real.push(real),
            Err(e) => notes.push(format!(
                "protected path {} not protected: {e} (create it before compiling the plan)",
                path.display()
            )),
        }
    }

    let deny: Vec<String> = policy
        .filesystem
        .deny
        .iter()
        .map(|g| g.pattern.clone())
        .collect();
    let protect: Vec<String> = policy
        .filesystem
        .protect
        .iter()
        .map(|g| g.pattern.clone())
        .collect();
    let writable_roots: Vec<PathBuf> = trees
        .values()
        .filter(|t| t.access.intersects(omit::writable_rights()))
        .map(|t| t.real.clone())
        .collect();
    let find_globs = find.as_ref().map_or(&[][..], |f| &f.globs[..]);
    let omissions =
        Omissions::finding(&deny, &protect, find_globs, writable_roots, protected_real)?;
    let writable = |t: &&Tree| t.access.intersects(omit::writable_rights());
    let deny_in_writable = !deny.is_empty()
        && trees
            .values()
            .filter(writable)
            .any(|t| omissions.glob_may_match_below(&t.real, &t.written));
    let protect_in_writable = !protect.is_empty()
        && trees
            .values()
            .filter(writable)
            .any(|t| omissions.protect_may_match_below(&t.real, &t.written));

    let mut rules: BTreeMap<PathBuf, BitFlags<AccessFs>> = BTreeMap::new();
    let mut unanchored_skipped: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut omitted = Vec::new();
    let mut unexamined = Vec::new();
    let mut found = Vec::new();
    let mut found_unexamined = Vec::new();
    let mut closed = Vec::new();
    for tree in trees.values() {
        let split = if omissions.is_empty() {
            omit::TreeRules {
                rules: vec![(tree.real.clone(), tree.access)],
                ..Default::default()
            }
        } else {
            omissions.split(tree, &limits)?
        };
        for glob in omissions.unanchored_skipped(tree) {
            unanchored_skipped
                .entry(glob)
                .or_default()
                .push(tree.written.display().to_string());
        }
        omitted.extend(split.omitted);
        unexamined.extend(split.unexamined);
        found.extend(split.found);
        found_unexamined.extend(split.found_unexamined);
        closed.extend(split.closed);
        for (path, access) in split.rules {
            *rules.entry(path).or_insert(BitFlags::EMPTY) |= access;
        }
    }
    if let Some(find) = find {
        let may_match = trees
            .values()
            .filter(writable)
            .any(|t| omissions.find_may_match_below(&t.real, &t.written));
        // The asker may have given up (its own error): nothing to do then.
        let _ = find
            .reply
            .send(Found::new(found, may_match, found_unexamined));
    }
    omitted.sort();
    omitted.dedup();
    const SHOWN: usize = 8;
    if !closed.is_empty() {
        closed.sort();
        closed.dedup();
        notes.push(format!(
            "deny matches in read-only trees this user can neither read, write nor search, \
             owned by another user, left to the kernel's permission check (not omitted): {}",
            shown(&closed, SHOWN)
        ));
    }
    if !omitted.is_empty() {
        notes.push(format!(
            "left out of the allowed trees (deny globs; read-only: protect globs, protected \
             paths): {}; every directory on the way to them loses create, delete and rename \
             (and listing, where a denied directory lies below)",
            shown(&omitted, SHOWN)
        ));
    }
    let unanchored_gaps: Vec<String> = unanchored_skipped
        .iter()
        .map(|(glob, trees)| {
            format!(
                "{glob} not searched in read-only trees {}",
                trees.join(", ")
            )
        })
        .collect();
    notes.extend(unanchored_gaps.iter().cloned());
    notes.extend(unexamined.iter().cloned());
    let mut unanchored_gaps = unanchored_gaps;
    unanchored_gaps.extend(unexamined);
    Ok(FsRules {
        rules,
        deny_in_writable,
        protect_in_writable,
        unanchored_gaps,
    })
}

/// The first `count` of `paths`, and how many more.
fn shown(paths: &[PathBuf], count: usize) -> String {
    let mut shown: Vec<String> = paths
        .iter()
        .take(count)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > count {
        shown.push(format!("and {} more", paths.len() - count));
    }
    shown.join(", ")
}

/// Opens `path` without following a final symlink and returns it with its access masked to
/// what a non-directory can take. `None` when it vanished or is a symlink (nothing to grant).
fn path_rule(
    path: &Path,
    access: BitFlags<AccessFs>,
    abi: ABI,
) -> anyhow::Result<Option<(OwnedFd, BitFlags<AccessFs>)>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("landlock: opening {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("landlock: stat {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(None);
    }
    let access = if meta.is_dir() {
        access
    } else {
        access & AccessFs::from_file(abi)
    };
    if access.is_empty() {
        return Ok(None);
    }
    Ok(Some((OwnedFd::from(file), access)))
}

fn fs_coverage(policy: &Policy, share: &Share, fs: &FsRules, abi: u32, coverage: &mut Coverage) {
    let mut gaps = Vec::new();
    if abi < 3 && !share.truncate_by_bpf_lsm {
        gaps.push(format!(
            "truncate(2) not restricted (needs Landlock ABI 3; kernel has ABI {abi})"
        ));
    }
    if abi < 5 {
        gaps.push(format!(
            "ioctl on device files not restricted (needs Landlock ABI 5; kernel has ABI {abi})"
        ));
    }
    let allow = if gaps.is_empty() {
        Status::Enforced
    } else {
        Status::Partial(gaps.join("; "))
    };
    coverage.push(LAYER, Guarantee::FsAllowList, allow);
    let mut deny_gaps = Vec::new();
    if !policy.filesystem.deny.is_empty() && fs.deny_in_writable {
        deny_gaps.push(
            "existing files denied by omission at launch; files created later that match are \
             not covered without BPF LSM"
                .to_string(),
        );
    }
    if fs.protect_in_writable {
        deny_gaps.push(
            "protect globs hold for files and directories that exist at launch (nothing can be \
             created, deleted or renamed inside a protected directory); a protected name \
             created later in a writable directory (a new .envrc at the workspace root) is not \
             covered without BPF LSM"
                .to_string(),
        );
    }
    deny_gaps.extend(fs.unanchored_gaps.iter().cloned());
    let deny = if !share.deny_exact_elsewhere.is_empty() {
        // `policy` is the view: the globs still here are the ones Landlock omits.
        let rest: Vec<&str> = policy
            .filesystem
            .deny
            .iter()
            .map(|g| g.pattern.as_str())
            .collect();
        Status::Missing(if rest.is_empty() {
            format!("left to {}", Layer::BpfLsm)
        } else {
            format!(
                "left to {}, except {} (by omission at launch)",
                Layer::BpfLsm,
                rest.join(", ")
            )
        })
    } else if !deny_gaps.is_empty() {
        Status::Partial(deny_gaps.join("; "))
    } else if share.protect_by_mounts {
        Status::Partial(format!(
            "deny globs exact; protect globs left to {}",
            Layer::Mounts
        ))
    } else {
        Status::Enforced
    };
    coverage.push(LAYER, Guarantee::FsDenyExact, deny);
    // Landlock's EXECUTE right is checked at execve of a file only: the dynamic loader (in an
    // exec tree) maps any readable file executable, and memfds live on an internal mount.
    let exec = if policy.asks_execs() {
        Status::Missing(format!(
            "left to {} (exec_unknown = \"ask\": Landlock lets every readable file run)",
            Layer::BpfLsm
        ))
    } else {
        Status::Partial(
            "execve outside the exec trees is denied; ld.so-loaded and memfd programs are not \
             covered without BPF LSM"
                .into(),
        )
    };
    coverage.push(LAYER, Guarantee::ExecAllowList, exec);
}

fn scope_coverage(abi: u32, coverage: &mut Coverage) {
    let status = if abi >= 6 {
        Status::Enforced
    } else {
        Status::Missing(format!(
            "Landlock scoping needs ABI 6; kernel has ABI {abi}"
        ))
    };
    coverage.push(LAYER, Guarantee::ScopeSignals, status.clone());
    coverage.push(LAYER, Guarantee::ScopeAbstractUnix, status);
}

struct NetRules {
    handled: BitFlags<AccessNet>,
    connect: BTreeSet<u16>,
    bind: BTreeSet<u16>,
}

fn port_count(r: &PortRange) -> u32 {
    u32::from(r.last).saturating_sub(u32::from(r.first)) + 1
}

/// TCP by port only: Landlock cannot see addresses or UDP.
fn compile_net(policy: &Policy, abi: u32, coverage: &mut Coverage) -> anyhow::Result<NetRules> {
    let net = &policy.network;
    if abi < 4 {
        let why = format!("Landlock TCP port rules need ABI 4; kernel has ABI {abi}");
        coverage.push(
            LAYER,
            Guarantee::NetTcpConnectPorts,
            Status::Missing(why.clone()),
        );
        coverage.push(LAYER, Guarantee::NetTcpBindPorts, Status::Missing(why));
        coverage.push(
            LAYER,
            Guarantee::NetAddresses,
            Status::Missing("needs cgroup-BPF (root)".into()),
        );
        return Ok(NetRules {
            handled: BitFlags::EMPTY,
            connect: BTreeSet::new(),
            bind: BTreeSet::new(),
        });
    }

    // connect: every allowed port, whatever the address (addresses are cgroup-BPF's job).
    let mut connect_unrestricted = false;
    let mut connect_gaps = Vec::new();
    let mut connect = BTreeSet::new();
    // Host-name rules' ports too: their addresses are judged by cgroup-BPF or the supervisor.
    let domain_ports = net.domain_tcp_ports();
    for rule in net.allow.iter().chain(&domain_ports) {
        if rule.ports.is_any() {
            connect_unrestricted = true;
            continue;
        }
        if port_count(&rule.ports) > MAX_PORTS_PER_RANGE {
            if rule.is_port_only() {
                bail!(
                    "network allow rule {} spans {} ports; Landlock needs one rule per port \
                     (at most {MAX_PORTS_PER_RANGE}): narrow the range, allow all ports, or \
                     enforce it with the cgroup-BPF (eBPF) layer",
                    rule,
                    port_count(&rule.ports)
                );
            }
            connect_unrestricted = true;
            connect_gaps.push(format!(
                "allow rule {} spans too many ports: Landlock leaves TCP connect unrestricted",
                rule
            ));
            continue;
        }
        connect.extend(rule.ports.first..=rule.ports.last);
    }
    // Port-only deny rules win over allow ranges, unless an allow rule names them exactly.
    for deny in net.deny.iter().filter(|r| r.is_port_only()) {
        if connect_unrestricted {
            connect_gaps.push(format!(
                "deny rule {} not enforced: all TCP ports are allowed",
                deny
            ));
        } else if !net.allow.contains(deny) {
            for port in deny.ports.first..=deny.ports.last {
                connect.remove(&port);
            }
        }
    }
    let connect_status = if connect_gaps.is_empty() {
        Status::Enforced
    } else {
        Status::Partial(connect_gaps.join("; "))
    };
    coverage.push(LAYER, Guarantee::NetTcpConnectPorts, connect_status);

    let mut bind_unrestricted = false;
    let mut bind = BTreeSet::new();
    for range in &net.bind {
        if range.is_any() {
            bind_unrestricted = true;
            continue;
        }
        if port_count(range) > MAX_PORTS_PER_RANGE {
            bail!(
                "bind range {}-{} spans {} ports; Landlock needs one rule per port (at most \
                 {MAX_PORTS_PER_RANGE}): narrow the range or allow all ports",
                range.first,
                range.last,
                port_count(range)
            );
        }
        bind.extend(range.first..=range.last);
    }
    coverage.push(LAYER, Guarantee::NetTcpBindPorts, Status::Enforced);

    let addressed: Vec<String> = net
        .allow
        .iter()
        .chain(&net.deny)
        .filter(|r| !r.is_port_only())
        .map(ToString::to_string)
        .collect();
    let addresses_why = if !net.opens_network() {
        "Landlock denies all TCP here; UDP and raw sockets are left to seccomp/cgroup-BPF".into()
    } else if addressed.is_empty() {
        "Landlock filters TCP by port only; UDP needs cgroup-BPF (root)".into()
    } else {
        format!(
            "Landlock filters TCP by port only; address rules [{}] and UDP need cgroup-BPF (root)",
            addressed.join(", ")
        )
    };
    coverage.push(
        LAYER,
        Guarantee::NetAddresses,
        Status::Missing(addresses_why),
    );

    let mut handled = BitFlags::EMPTY;
    if !connect_unrestricted {
        handled |= AccessNet::ConnectTcp;
    }
    if !bind_unrestricted {
        handled |= AccessNet::BindTcp;
    }
    Ok(NetRules {
        handled,
        connect,
        bind,
    })
}
