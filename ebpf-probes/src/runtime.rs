//! The sandbox runtime: programs loaded once and pinned under bpffs, per-sandbox state in
//! maps keyed by sandbox id.
//!
//! Pin layout: `<pin_root>/<version>/{maps,progs,links}/<name>`, where `<version>` is a hash
//! of the embedded object. The first [`Runtime::open`] of a version loads (verifies) the
//! programs and pins everything into a staging directory (`staging-*`) that is renamed into
//! place, so a version directory is either complete or absent. Later opens only reopen the
//! pins (no verification) and attach the observers whose links are not pinned. A directory of
//! another version is unpinned: programs and links still held by running supervisors stay
//! alive by refcount. `flock` on the pin root serialises concurrent opens and attachments.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, ObjectBuilder, ProgramHandle};

use crate::attach::{self, CgroupProgram};
use crate::events::EventStream;
use crate::layout::*;
use crate::lsm::{self, InodeId, LsmRules, LSM_PROGRAMS, LSM_TASK_ALLOC};
use crate::rings::{self, RingLease, RingRequest};
use crate::rules::{compile, host_entry, NetRule, NetRules, PortRange};
use crate::{probe, run_libbpf, Error, ProgramKind, OBJECT, OBJECT_NAME};

/// Where agentbox pins its programs and maps unless told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/agentbox";

/// Symlink in a version directory whose target is why the LSM programs are not attached.
const LSM_ERROR_LINK: &str = "lsm_error";
/// Longest recorded reason (a symlink target holds less than PATH_MAX bytes).
const LSM_ERROR_MAX: usize = 3072;

/// Prefix of a half-built pin directory (bpffs refuses names with a dot).
const STAGING_PREFIX: &str = "staging-";
const BPFFS_MOUNT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// cgroup programs and their attach types, attached once to the sandbox cgroups' parent.
const CGROUP_PROGRAMS: [(&str, libbpf_rs::libbpf_sys::bpf_attach_type); 11] = [
    (
        "net_connect4",
        libbpf_rs::libbpf_sys::BPF_CGROUP_INET4_CONNECT,
    ),
    (
        "net_connect6",
        libbpf_rs::libbpf_sys::BPF_CGROUP_INET6_CONNECT,
    ),
    (
        "net_sendmsg4",
        libbpf_rs::libbpf_sys::BPF_CGROUP_UDP4_SENDMSG,
    ),
    (
        "net_sendmsg6",
        libbpf_rs::libbpf_sys::BPF_CGROUP_UDP6_SENDMSG,
    ),
    ("net_bind4", libbpf_rs::libbpf_sys::BPF_CGROUP_INET4_BIND),
    ("net_bind6", libbpf_rs::libbpf_sys::BPF_CGROUP_INET6_BIND),
    (
        "net_sock_create",
        libbpf_rs::libbpf_sys::BPF_CGROUP_INET_SOCK_CREATE,
    ),
    // Answers of the supervisor's resolver show the address the agent queried.
    (
        "net_recvmsg4",
        libbpf_rs::libbpf_sys::BPF_CGROUP_UDP4_RECVMSG,
    ),
    (
        "net_recvmsg6",
        libbpf_rs::libbpf_sys::BPF_CGROUP_UDP6_RECVMSG,
    ),
    (
        "net_getpeername4",
        libbpf_rs::libbpf_sys::BPF_CGROUP_INET4_GETPEERNAME,
    ),
    (
        "net_getpeername6",
        libbpf_rs::libbpf_sys::BPF_CGROUP_INET6_GETPEERNAME,
    ),
];

/// Pathname UNIX socket hooks (Linux 6.7+): loaded, pinned and attached with the others
/// where the kernel has their attach types; [`Runtime::unix_hooks`] says whether it does.
const CGROUP_UNIX_PROGRAMS: [(&str, libbpf_rs::libbpf_sys::bpf_attach_type); 2] = [
    (
        "net_connect_unix",
        libbpf_rs::libbpf_sys::BPF_CGROUP_UNIX_CONNECT,
    ),
    (
        "net_sendmsg_unix",
        libbpf_rs::libbpf_sys::BPF_CGROUP_UNIX_SENDMSG,
    ),
];

/// Global observers (tp_btf), pinned as programs; their links are made by the first
/// supervisor that opens the version (`observer_link`). The programs stay pinned for later
/// runs to attach again without verification.
pub(crate) const TRACE_PROGRAMS: [&str; 4] = [
    "observe_sys_exit",
    "observe_fork",
    "observe_exec",
    "observe_exit",
];

/// The observer on the syscall path: while it is attached, every thread of the machine takes
/// the slow syscall exit. Attached while some supervisor of this version runs, unpinned (so
/// detached) by the last one to exit normally (see `Shared`'s Drop): when no sandbox runs,
/// nothing of agentbox sits on the system's syscall path. The lifecycle observers (fork,
/// exec, exit) stay attached: they run once per process event, a task-storage and a cgroup
/// lookup that find nothing outside a sandbox (the idle table of `cargo xtask bench` times
/// fork+exec with them), and attaching a tracepoint's first probe patches kernel text on
/// every CPU: re-attaching these three cost each run ~1.5 ms on a 2-vCPU VM (IPIs wait for
/// a descheduled vCPU).
const DETACHED_WHEN_IDLE: [&str; 1] = ["observe_sys_exit"];

const MAP_SANDBOXES: &str = "sandboxes";
const MAP_CGROUP_SANDBOX: &str = "cgroup_sandbox";
const MAP_TASK_SANDBOX: &str = "task_sandbox";
const MAP_NET4: &str = "net4_rules";
const MAP_NET6: &str = "net6_rules";
const MAP_VIOLATIONS: &str = "violations";
const MAP_TRACE: &str = "trace";
const MAP_LSM_SANDBOXES: &str = "lsm_sandboxes";
const MAP_LSM_INODES: &str = "lsm_inodes";
const MAP_LSM_CHILDREN: &str = "lsm_children";
const MAP_LSM_NAMES: &str = "lsm_names";
pub(crate) const RUNTIME_MAPS: [&str; 11] = [
    MAP_SANDBOXES,
    MAP_CGROUP_SANDBOX,
    MAP_TASK_SANDBOX,
    MAP_NET4,
    MAP_NET6,
    MAP_VIOLATIONS,
    MAP_TRACE,
    MAP_LSM_SANDBOXES,
    MAP_LSM_INODES,
    MAP_LSM_CHILDREN,
    MAP_LSM_NAMES,
];

/// Every LSM program, in attach order (identity inheritance first).
fn lsm_program_names() -> impl Iterator<Item = &'static str> {
    std::iter::once(LSM_TASK_ALLOC).chain(LSM_PROGRAMS)
}

/// The program loaded for the LSM program `name` on this kernel (pinned under `name`): the
/// perf_event_open hook lost its `attr` argument in Linux 6.10, and the verifier refuses a
/// program that reads an argument the hook does not have.
fn lsm_variant(name: &'static str) -> &'static str {
    match name {
        "lsm_perf_event_open" if !perf_hook_takes_attr() => "lsm_perf_event_open_type",
        other => other,
    }
}

/// Whether this kernel's perf_event_open LSM hook is `(attr, type)`: the parameters of
/// `bpf_lsm_perf_event_open` (BPF LSM's stub for the hook) in the kernel's BTF. Without that
/// BTF, the older form (BPF LSM does not load there anyway).
fn perf_hook_takes_attr() -> bool {
    use libbpf_rs::btf::types::{Func, FuncProto};
    use libbpf_rs::btf::{Btf, ReferencesType};
    static TAKES_ATTR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TAKES_ATTR.get_or_init(|| {
        let Ok(btf) = Btf::from_vmlinux() else {
            return true;
        };
        let Some(func) = btf.type_by_name::<Func<'_>>("bpf_lsm_perf_event_open") else {
            return true;
        };
        FuncProto::try_from(func.referenced_type()).map_or(true, |proto| proto.len() >= 2)
    })
}

/// Default size of a sandbox's violations ring (never throttled): ~5000 events (392 bytes
/// each with the ring's header) between two reads; a fuller ring counts its losses. Bigger
/// rings cost start-up time (allocated, zeroed and mapped twice per sandbox).
pub const DEFAULT_VIOLATIONS_RING_BYTES: u32 = 2 << 20;
/// Default size of a sandbox's trace ring (fork/exec/exit, rate-limited): a full second of
/// the default budget (1000 events/s) fits.
pub const DEFAULT_TRACE_RING_BYTES: u32 = 512 << 10;

/// How [`Runtime::open`] found the pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    /// Nothing was pinned: the programs were loaded, verified and pinned now.
    Cold,
    /// This version was pinned already: reopened without loading anything.
    Warm,
    /// Another version (or an incomplete one) was pinned: it was unpinned and this version
    /// loaded. Its programs live on as long as running sandboxes hold them.
    Replaced { old_version: String },
}

/// Loaded and pinned programs and maps of one object version.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

struct Shared {
    version: String,
    dir: PathBuf,
    sandboxes: MapHandle,
    cgroup_sandbox: MapHandle,
    task_sandbox: MapHandle,
    net4: MapHandle,
    net6: MapHandle,
    violations: MapHandle,
    trace: MapHandle,
    lsm_sandboxes: MapHandle,
    lsm_inodes: MapHandle,
    lsm_children: MapHandle,
    lsm_names: MapHandle,
    /// Why the LSM programs are not attached; `None` when they are.
    lsm_error: Option<String>,
    /// The pinned LSM links, held like the observer links.
    _lsm_links: Vec<Link>,
    cgroup_programs: Vec<CgroupProgram>,
    /// The links of `cgroup_programs` on each parent group this process registered a
    /// sandbox under (by parent cgroup id), held while it runs (see `attach`).
    parent_links: Mutex<Vec<(u64, Vec<OwnedFd>)>>,
    /// Whether the pathname UNIX socket hooks are among `cgroup_programs`.
    unix_hooks: bool,
    /// The pinned observer links, held open so that unpinning this version (a newer agentbox
    /// replacing it, or the last supervisor leaving) does not detach the observers of
    /// sandboxes this process runs.
    observer_links: Mutex<Vec<OwnedFd>>,
    /// The syscall observer being attached on a thread of its own (no other supervisor held
    /// it): patching the tracepoint's kernel text waits for every CPU, ~2-3 ms on a 2-vCPU
    /// VM, which so overlaps the caller's plan. Joined by [`Runtime::observers_attached`],
    /// which `register_sandbox` calls before any sandbox can run.
    attaching: Mutex<Attaching>,
    /// `flock(LOCK_SH)` on the version directory for this process's whole life: the lock
    /// dies with its holder (SIGKILL included), so a `LOCK_EX` that succeeds means no other
    /// supervisor of this version runs.
    observers_lock: File,
}

/// Where the syscall observer's attachment stands (see `Shared::attaching`).
enum Attaching {
    Done,
    Pending(std::thread::JoinHandle<Result<OwnedFd, Error>>),
    /// Failed: every later registration fails too (no sandbox runs unobserved).
    Failed(String),
}

impl Drop for Shared {
    /// The last supervisor out detaches the syscall observer: it unpins its link (this
    /// process's own fds close right after). Serialised with `Runtime::open` by the pin
    /// root's lock, so a supervisor starting now either finds the links pinned or attaches
    /// them anew, never both. A SIGKILLed last supervisor leaves them attached until the next
    /// run ends.
    fn drop(&mut self) {
        // An attachment still under way finishes first: its link is pinned by then, and so
        // unpinned below if this is the last supervisor.
        let attaching = self
            .attaching
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Attaching::Pending(handle) = std::mem::replace(attaching, Attaching::Done) {
            let _ = handle.join();
        }
        let Some(root) = self.dir.parent() else {
            return;
        };
        let Ok(root_file) = File::open(root) else {
            return;
        };
        let Ok(_lock) = DirLock::exclusive(&root_file, root) else {
            return;
        };
        let fd = self.observers_lock.as_raw_fd();
        // SAFETY: flock on our own open fd.
        let last = unsafe {
            libc::flock(fd, libc::LOCK_UN);
            libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0
        };
        if last {
            for name in DETACHED_WHEN_IDLE {
                let _ = fs::remove_file(self.dir.join("links").join(name));
            }
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("version", &self.shared.version)
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Opens the runtime pinned under `pin_root` (normally [`DEFAULT_PIN_ROOT`]), loading and
    /// pinning it first if this version is not pinned yet. Mounts bpffs at /sys/fs/bpf when
    /// the pin root lies there and nothing is mounted (needs root).
    pub fn open(pin_root: &Path) -> Result<(Runtime, LoadState), Error> {
        ensure_bpffs(pin_root)?;
        let version = object_version();
        let root = File::open(pin_root).map_err(|source| Error::Pin {
            path: pin_root.to_path_buf(),
            source,
        })?;
        let _lock = DirLock::exclusive(&root, pin_root)?;

        let dir = pin_root.join(&version);
        let mut old_version = None;
        for entry in fs::read_dir(pin_root).map_err(|source| Error::Pin {
            path: pin_root.to_path_buf(),
            source,
        })? {
            let entry = entry.map_err(|source| Error::Pin {
                path: pin_root.to_path_buf(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == version {
                continue;
            }
            remove_pins(&entry.path())?;
            if !name.starts_with(STAGING_PREFIX) {
                old_version = Some(name);
            }
        }

        if dir.exists() {
            match Shared::open_pinned(&dir, &version, None) {
                Ok(shared) if old_version.is_none() => {
                    return Ok((
                        Runtime {
                            shared: Arc::new(shared),
                        },
                        LoadState::Warm,
                    ))
                }
                Ok(shared) => {
                    let state = LoadState::Replaced {
                        old_version: old_version.unwrap_or_default(),
                    };
                    return Ok((
                        Runtime {
                            shared: Arc::new(shared),
                        },
                        state,
                    ));
                }
                Err(_) => {
                    // Incomplete or damaged (someone removed pins): start over.
                    remove_pins(&dir)?;
                    old_version = Some(format!("{version} (incomplete)"));
                }
            }
        }

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let staging = pin_root.join(format!("{STAGING_PREFIX}{}-{nanos}", std::process::id()));
        let lsm_error = match load_and_pin(&staging) {
            Ok(lsm_error) => lsm_error,
            Err(err) => {
                let _ = remove_pins(&staging);
                return Err(err);
            }
        };
        fs::rename(&staging, &dir).map_err(|source| {
            let _ = remove_pins(&staging);
            Error::Pin {
                path: dir.clone(),
                source,
            }
        })?;
        let shared = Shared::open_pinned(&dir, &version, lsm_error)?;
        let state = match old_version {
            Some(old_version) => LoadState::Replaced { old_version },
            None => LoadState::Cold,
        };
        Ok((
            Runtime {
                shared: Arc::new(shared),
            },
            state,
        ))
    }

    /// The version directory name (hash of the embedded object).
    pub fn version(&self) -> &str {
        &self.shared.version
    }

    /// The pin directory of this version.
    pub fn pin_dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Why the BPF LSM programs are not attached (the kernel refused BPF LSM, or they failed
    /// to load); `None` when they are and [`SandboxConfig::lsm`] rules are enforced.
    pub fn lsm_error(&self) -> Option<&str> {
        self.shared.lsm_error.as_deref()
    }

    /// The ids of every sandbox registered now (running, or dead and not yet reclaimed).
    pub fn sandbox_ids(&self) -> Vec<u32> {
        self.shared
            .sandboxes
            .keys()
            .filter_map(|key| Some(u32::from_ne_bytes(key.get(..4)?.try_into().ok()?)))
            .collect()
    }

    /// Removes the entries of sandboxes whose supervisor died without tearing down (a
    /// SIGKILL, a stop timeout): every record whose cgroup `alive` says is gone, with its
    /// rules and LSM entries, and the pinned parent links of parent groups that are gone.
    /// Without this, crashed runs would fill the sandbox map (SANDBOXES_MAX records). Ring
    /// slots need nothing: their locks died with their holders. Returns the ids removed.
    pub fn reclaim_dead(&self, alive: impl Fn(u64) -> bool) -> Vec<u32> {
        let shared = &self.shared;
        if let Ok(parents) = fs::read_dir(shared.dir.join(attach::CGROUPS_DIR)) {
            for entry in parents.flatten() {
                let gone = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.parse::<u64>().ok())
                    .is_some_and(|id| !alive(id));
                if gone {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let mut dead: Vec<(u32, u64)> = Vec::new();
        for key in shared.sandboxes.keys() {
            let Some(id) = key
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
            else {
                continue;
            };
            let Ok(Some(value)) = shared.sandboxes.lookup(&key, MapFlags::ANY) else {
                continue;
            };
            if let Some(record) = from_bytes::<SandboxRecord>(&value) {
                if !alive(record.cgroup_id) {
                    dead.push((id, record.cgroup_id));
                }
            }
        }
        if dead.is_empty() {
            return Vec::new();
        }
        let is_dead = |sandbox: u32| dead.iter().any(|(id, _)| *id == sandbox);
        // Every rule key holds its sandbox id at a fixed offset.
        let sweep = |map: &MapHandle, offset: usize| {
            let doomed: Vec<Vec<u8>> = map
                .keys()
                .filter(|k| {
                    k.get(offset..offset + 4)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_ne_bytes)
                        .is_some_and(is_dead)
                })
                .collect();
            for key in doomed {
                let _ = map.delete(&key);
            }
        };
        sweep(&shared.net4, std::mem::offset_of!(Net4Key, sandbox));
        sweep(&shared.net6, std::mem::offset_of!(Net6Key, sandbox));
        sweep(
            &shared.lsm_inodes,
            std::mem::offset_of!(LsmInodeKey, sandbox),
        );
        sweep(
            &shared.lsm_children,
            std::mem::offset_of!(LsmChildKey, sandbox),
        );
        sweep(&shared.lsm_names, std::mem::offset_of!(LsmNameKey, sandbox));
        for (id, cgroup) in &dead {
            let key = id.to_ne_bytes();
            let _ = shared.lsm_sandboxes.delete(&key);
            let _ = shared.cgroup_sandbox.delete(&cgroup.to_ne_bytes());
            let _ = shared.sandboxes.delete(&key);
        }
        dead.into_iter().map(|(id, _)| id).collect()
    }

    /// Whether every sandbox cgroup gets the pathname UNIX socket hooks (connect and
    /// datagram sends to a path refused to sandboxed tasks; Linux 6.7+).
    pub fn unix_hooks(&self) -> bool {
        self.shared.unix_hooks
    }

    /// Enters a sandbox into the maps. The cgroup programs sit on the parent of its cgroup
    /// (attached there by the first registration under that parent, see `attach`), so the
    /// rules are in force from the moment this returns; move the agent into the cgroup and
    /// seed it ([`Sandbox::seed_task`]) afterwards.
    pub fn register_sandbox(&self, cfg: &SandboxConfig) -> Result<Sandbox, Error> {
        self.observers_attached()?;
        if cfg.id == 0 {
            return Err(Error::Config("sandbox id 0 is reserved".into()));
        }
        if cfg.net.bind.len() > BIND_RANGES_MAX {
            return Err(Error::Config(format!(
                "{} bind port ranges; at most {BIND_RANGES_MAX} are supported",
                cfg.net.bind.len()
            )));
        }
        let compiled = compile(&cfg.net)?;
        let lsm_entries = match (&cfg.lsm, &self.shared.lsm_error) {
            (None, _) => None,
            (Some(_), Some(reason)) => {
                return Err(Error::Config(format!(
                    "BPF LSM rules were given, but the LSM programs are not attached: {reason}"
                )))
            }
            (Some(rules), None) => Some(lsm::compile(cfg.id, rules)?),
        };
        let cgroup = File::open(&cfg.cgroup_dir).map_err(|source| Error::Cgroup {
            path: cfg.cgroup_dir.clone(),
            source,
        })?;
        // On cgroup2 the cgroup id (what bpf_get_current_cgroup_id returns) is the inode
        // number of the cgroup directory.
        let cgroup_id = cgroup
            .metadata()
            .map_err(|source| Error::Cgroup {
                path: cfg.cgroup_dir.clone(),
                source,
            })?
            .ino();

        let parent = cfg.cgroup_dir.parent().ok_or_else(|| {
            Error::Config(format!("{} has no parent group", cfg.cgroup_dir.display()))
        })?;
        self.attach_parent(parent)?;

        let shared = &self.shared;
        let rings = rings::lease(
            &shared.dir,
            &RingRequest {
                violations: &shared.violations,
                trace: &shared.trace,
                violations_bytes: cfg.violations_ring_bytes,
                trace_bytes: cfg.trace_ring_bytes,
            },
            shared.violations.max_entries(),
        )?;
        let mut record = SandboxRecord {
            cgroup_id,
            ring_slot: rings.slot,
            trace_per_sec: cfg.trace_events_per_sec,
            bind_count: cfg.net.bind.len() as u32,
            ..SandboxRecord::default()
        };
        if let Some(dns) = cfg.dns {
            record.flags |= SB_DNS_REDIRECT;
            record.dns_addr = dns.ip().octets();
            record.dns_port = dns.port();
        }
        for (slot, range) in record.bind.iter_mut().zip(&cfg.net.bind) {
            *slot = RawPortRange {
                lo: range.lo,
                hi: range.hi,
            };
        }
        for (on, flag) in [
            (cfg.kill_on_violation, SB_KILL_ON_VIOLATION),
            (cfg.audit_only, SB_AUDIT_ONLY),
            (cfg.net.allow_netlink, SB_ALLOW_NETLINK),
            (cfg.net.allow_raw, SB_ALLOW_RAW),
        ] {
            if on {
                record.flags |= flag;
            }
        }

        let id = cfg.id;
        let step = |what: &str| format!("registering sandbox {id}: {what}");
        // Every entry made below is recorded in `sandbox` first, so an error part-way
        // through unwinds through Sandbox::drop.
        let mut sandbox = Sandbox {
            id,
            cgroup_id,
            shared: Arc::clone(shared),
            v4_keys: Vec::new(),
            v6_keys: Vec::new(),
            record: false,
            cgroup_entry: false,
            rings,
            lsm_inode_keys: Vec::new(),
            lsm_child_keys: Vec::new(),
            lsm_name_keys: Vec::new(),
            lsm_config: false,
            grants: Arc::new(GrantState {
                shared: Arc::clone(shared),
                id,
                rules: cfg.net.clone(),
                held: Mutex::new(Some(Vec::new())),
                execs: Mutex::new(Vec::new()),
            }),
        };
        run_libbpf(&step("sandbox record"), || {
            shared
                .sandboxes
                .update(&id.to_ne_bytes(), bytes_of(&record), MapFlags::NO_EXIST)
        })
        .map_err(|err| match err.errno() {
            Some(libc::EEXIST) => Error::SandboxExists(id),
            _ => err,
        })?;
        sandbox.record = true;

        for (net, verdicts) in &compiled.v4 {
            let key = Net4Key {
                prefixlen: 32 + u32::from(net.prefix_len()),
                sandbox: id,
                addr: net.network().octets(),
            };
            run_libbpf(&step(&format!("rule {net}")), || {
                shared
                    .net4
                    .update(bytes_of(&key), bytes_of(verdicts), MapFlags::ANY)
            })?;
            sandbox.v4_keys.push(key);
        }
        for (net, verdicts) in &compiled.v6 {
            let key = Net6Key {
                prefixlen: 32 + u32::from(net.prefix_len()),
                sandbox: id,
                addr: net.network().octets(),
            };
            run_libbpf(&step(&format!("rule {net}")), || {
                shared
                    .net6
                    .update(bytes_of(&key), bytes_of(verdicts), MapFlags::ANY)
            })?;
            sandbox.v6_keys.push(key);
        }

        if let Some(entries) = &lsm_entries {
            for (key, flags) in &entries.inodes {
                run_libbpf(&step("LSM inode rule"), || {
                    shared
                        .lsm_inodes
                        .update(bytes_of(key), bytes_of(flags), MapFlags::ANY)
                })?;
                sandbox.lsm_inode_keys.push(*key);
            }
            for (key, flags) in &entries.children {
                run_libbpf(&step("LSM name-in-directory rule"), || {
                    shared
                        .lsm_children
                        .update(bytes_of(key), bytes_of(flags), MapFlags::ANY)
                })?;
                sandbox.lsm_child_keys.push(*key);
            }
            for (key, flags) in &entries.names {
                run_libbpf(&step("LSM basename rule"), || {
                    shared
                        .lsm_names
                        .update(bytes_of(key), &[*flags], MapFlags::ANY)
                })?;
                sandbox.lsm_name_keys.push(*key);
            }
            // Last: the programs act on the sandbox once its config exists.
            run_libbpf(&step("LSM config"), || {
                shared.lsm_sandboxes.update(
                    &id.to_ne_bytes(),
                    bytes_of(&entries.config),
                    MapFlags::NO_EXIST,
                )
            })?;
            sandbox.lsm_config = true;
        }

        run_libbpf(&step("cgroup id"), || {
            shared.cgroup_sandbox.update(
                &cgroup_id.to_ne_bytes(),
                &id.to_ne_bytes(),
                MapFlags::NO_EXIST,
            )
        })
        .map_err(|err| match err.errno() {
            Some(libc::EEXIST) => Error::Config(format!(
                "cgroup {} already belongs to another sandbox",
                cfg.cgroup_dir.display()
            )),
            _ => err,
        })?;
        sandbox.cgroup_entry = true;
        Ok(sandbox)
    }

    /// Waits for the syscall observer's attachment, when `open` left it under way: until
    /// this returns, denials are not observed. `register_sandbox` calls it first.
    pub fn observers_attached(&self) -> Result<(), Error> {
        let shared = &self.shared;
        let mut attaching = shared
            .attaching
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *attaching, Attaching::Done) {
            Attaching::Done => Ok(()),
            Attaching::Failed(why) => {
                *attaching = Attaching::Failed(why.clone());
                Err(Error::Config(why))
            }
            Attaching::Pending(handle) => {
                let joined = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                match joined {
                    Ok(link) => {
                        shared
                            .observer_links
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(link);
                        Ok(())
                    }
                    Err(err) => {
                        *attaching = Attaching::Failed(format!("the syscall observer: {err}"));
                        Err(err)
                    }
                }
            }
        }
    }

    /// Makes sure the cgroup programs are attached to `parent` (see `attach`).
    fn attach_parent(&self, parent: &Path) -> Result<(), Error> {
        let id = attach::parent_id(parent)?;
        let shared = &self.shared;
        let mut held = shared
            .parent_links
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if held.iter().any(|(held_id, _)| *held_id == id) {
            return Ok(());
        }
        let root_path = shared.dir.parent().unwrap_or(&shared.dir);
        let root = File::open(root_path).map_err(|source| Error::Pin {
            path: root_path.to_path_buf(),
            source,
        })?;
        let links = attach::parent_links(&shared.dir, &shared.cgroup_programs, parent, id, || {
            DirLock::exclusive(&root, root_path)
        })?;
        held.push((id, links));
        Ok(())
    }
}

/// What [`Runtime::register_sandbox`] needs to know about one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Non-zero, unique among the sandboxes running on this host.
    pub id: u32,
    /// The sandbox's own cgroup2 directory (the agent and only the agent runs in it).
    pub cgroup_dir: PathBuf,
    pub net: NetRules,
    /// SIGKILL the process on any denial (sent by the sys_exit observer).
    pub kill_on_violation: bool,
    /// Report network denials but let the operations through.
    pub audit_only: bool,
    /// Budget of fork/exec/exit events per second; 0 turns them off.
    pub trace_events_per_sec: u32,
    /// Size of the violations ring (a power of two, at least one page).
    pub violations_ring_bytes: u32,
    /// Size of the trace ring (a power of two, at least one page).
    pub trace_ring_bytes: u32,
    /// BPF LSM rules; `None` (the default): the LSM programs leave this sandbox alone. Needs
    /// [`Runtime::lsm_error`] to be `None`, else registration fails.
    pub lsm: Option<LsmRules>,
    /// The supervisor's resolver (UDP and TCP on this loopback address and port): every
    /// connect and datagram of the sandbox to port 53 goes there instead.
    pub dns: Option<std::net::SocketAddrV4>,
}

impl SandboxConfig {
    /// A sandbox with no network access at all, default ring sizes and 1000 trace events/s.
    pub fn new(id: u32, cgroup_dir: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            id,
            cgroup_dir: cgroup_dir.into(),
            net: NetRules::default(),
            kill_on_violation: false,
            audit_only: false,
            trace_events_per_sec: 1000,
            violations_ring_bytes: DEFAULT_VIOLATIONS_RING_BYTES,
            trace_ring_bytes: DEFAULT_TRACE_RING_BYTES,
            lsm: None,
            dns: None,
        }
    }
}

/// Per-sandbox counters from the kernel. Once every event was drained:
/// `delivered == last_seq - lost_violations - lost_trace` (throttled trace events never
/// take a sequence number).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// The last sequence number handed out (sequence numbers start at 1).
    pub last_seq: u64,
    /// Violations that could not be written (ring full).
    pub lost_violations: u64,
    /// Trace events that could not be written (ring full).
    pub lost_trace: u64,
    /// Trace events dropped by the per-second budget.
    pub throttled_trace: u64,
    /// Tasks whose task storage could not be created (still found by cgroup id).
    pub lost_task_storage: u64,
}

/// A registered sandbox. Dropping it removes its entries and releases its ring slot; drop it
/// only after the cgroup is empty.
pub struct Sandbox {
    id: u32,
    cgroup_id: u64,
    shared: Arc<Shared>,
    v4_keys: Vec<Net4Key>,
    v6_keys: Vec<Net6Key>,
    record: bool,
    cgroup_entry: bool,
    rings: RingLease,
    lsm_inode_keys: Vec<LsmInodeKey>,
    lsm_child_keys: Vec<LsmChildKey>,
    lsm_name_keys: Vec<LsmNameKey>,
    lsm_config: bool,
    grants: Arc<GrantState>,
}

/// Addresses granted at run time (what the supervisor's resolver handed out), shared by the
/// [`Sandbox`] and its [`Grants`] handles. `held` is `None` once the sandbox is gone: a late
/// grant must not outlive its id, which a later sandbox may take.
struct GrantState {
    shared: Arc<Shared>,
    id: u32,
    /// The sandbox's registered rules, which every granted host entry also carries.
    rules: NetRules,
    held: Mutex<Option<Vec<IpNet>>>,
    /// Files granted exec at run time (approvals), each with the flags its inode entry held
    /// before (`None`: there was none).
    execs: Mutex<Vec<(LsmInodeKey, Option<u32>)>>,
}

/// A handle that opens single addresses to one sandbox while it runs: each grant writes the
/// host's trie entry (its own ranges, then those of every registered rule covering it, so a
/// deny of a wider network still wins where it did: see `rules`). LPM trie updates do not
/// wait for an RCU grace period.
#[derive(Clone)]
pub struct Grants(Arc<GrantState>);

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("sandbox", &self.0.id)
            .finish_non_exhaustive()
    }
}

impl Grants {
    /// Sets what `addr` may reach beyond the registered rules: `ranges` (ports, protocols)
    /// replace the previous grant of that address; empty takes it back.
    pub fn set(&self, addr: std::net::IpAddr, ranges: &[(PortRange, u8)]) -> Result<(), Error> {
        let state = &self.0;
        let mut held = state.held.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(held) = held.as_mut() else {
            return Err(Error::Config(format!("sandbox {} is gone", state.id)));
        };
        let mut rules = state.rules.clone();
        rules.allow.extend(
            ranges
                .iter()
                .map(|(ports, protos)| NetRule::host(addr, *ports).with_protos(*protos)),
        );
        let (host, verdicts) = host_entry(&rules, addr)?;
        let step = format!("granting {addr} to sandbox {}", state.id);
        match verdicts {
            Some(v) => run_libbpf(&step, || state.write_host(host, &v))?,
            None => state.delete_host(host),
        }
        if !held.contains(&host) {
            held.push(host);
        }
        Ok(())
    }
}

impl Grants {
    /// Lets `file` run (and be mapped executable) in this sandbox as if it were inside an
    /// exec tree: BPF LSM's exec checks judge the inode, so a path swapped after this call
    /// names another inode, which stays refused. Needs the sandbox's LSM rules.
    pub fn allow_exec(&self, file: InodeId) -> Result<(), Error> {
        let state = &self.0;
        if state
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Err(Error::Config(format!("sandbox {} is gone", state.id)));
        }
        let key = state.exec_key(file);
        let before = state
            .shared
            .lsm_inodes
            .lookup(bytes_of(&key), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| {
                v.get(..4)
                    .map(|b| u32::from_ne_bytes(b.try_into().expect("4")))
            });
        let flags = before.unwrap_or(0) | lsm::IN_EXEC_TREE;
        let step = format!(
            "granting exec of inode {} to sandbox {}",
            file.ino, state.id
        );
        run_libbpf(&step, || {
            state
                .shared
                .lsm_inodes
                .update(bytes_of(&key), bytes_of(&flags), MapFlags::ANY)
        })?;
        let mut execs = state.execs.lock().unwrap_or_else(PoisonError::into_inner);
        if !execs.iter().any(|(k, _)| *k == key) {
            execs.push((key, before));
        }
        Ok(())
    }

    /// Takes back what [`Grants::allow_exec`] gave `file`.
    pub fn revoke_exec(&self, file: InodeId) {
        let state = &self.0;
        let key = state.exec_key(file);
        let mut execs = state.execs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = execs.iter().position(|(k, _)| *k == key) {
            let (key, before) = execs.remove(i);
            state.restore_inode(&key, before);
        }
    }
}

impl GrantState {
    fn exec_key(&self, file: InodeId) -> LsmInodeKey {
        LsmInodeKey {
            sandbox: self.id,
            _pad: 0,
            dev: u64::from(crate::kernel_dev(file.dev)),
            ino: file.ino,
        }
    }

    fn restore_inode(&self, key: &LsmInodeKey, before: Option<u32>) {
        let _ = match before {
            Some(flags) => {
                self.shared
                    .lsm_inodes
                    .update(bytes_of(key), bytes_of(&flags), MapFlags::ANY)
            }
            None => self.shared.lsm_inodes.delete(bytes_of(key)),
        };
    }

    /// Restores every granted host entry to what registration wrote (or removes it), and
    /// refuses grants from then on.
    fn close(&self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, before) in self
            .execs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            self.restore_inode(&key, before);
        }
        let Some(hosts) = held.take() else { return };
        let registered = compile(&self.rules).unwrap_or_default();
        for host in hosts {
            let registered_here = match host {
                IpNet::V4(net) => registered.v4.iter().any(|(n, _)| *n == net),
                IpNet::V6(net) => registered.v6.iter().any(|(n, _)| *n == net),
            };
            if !registered_here {
                self.delete_host(host);
            }
        }
    }

    /// Writes the trie entry of one host network (a /32 or /128) of this sandbox.
    fn write_host(&self, host: IpNet, verdicts: &NetVerdicts) -> Result<(), libbpf_rs::Error> {
        match host {
            IpNet::V4(net) => self.shared.net4.update(
                bytes_of(&self.key4(net)),
                bytes_of(verdicts),
                MapFlags::ANY,
            ),
            IpNet::V6(net) => self.shared.net6.update(
                bytes_of(&self.key6(net)),
                bytes_of(verdicts),
                MapFlags::ANY,
            ),
        }
    }

    fn delete_host(&self, host: IpNet) {
        let _ = match host {
            IpNet::V4(net) => self.shared.net4.delete(bytes_of(&self.key4(net))),
            IpNet::V6(net) => self.shared.net6.delete(bytes_of(&self.key6(net))),
        };
    }

    fn key4(&self, net: ipnet::Ipv4Net) -> Net4Key {
        Net4Key {
            prefixlen: 32 + u32::from(net.prefix_len()),
            sandbox: self.id,
            addr: net.network().octets(),
        }
    }

    fn key6(&self, net: ipnet::Ipv6Net) -> Net6Key {
        Net6Key {
            prefixlen: 32 + u32::from(net.prefix_len()),
            sandbox: self.id,
            addr: net.network().octets(),
        }
    }
}

impl Sandbox {
    /// The handle that grants this sandbox single addresses at run time.
    pub fn grants(&self) -> Grants {
        Grants(Arc::clone(&self.grants))
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The id of the sandbox cgroup (its inode number on cgroup2).
    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    /// The slot whose rings this sandbox leased (see `rings`).
    pub fn ring_slot(&self) -> u32 {
        self.rings.slot
    }

    /// Tags a task (by pidfd) as belonging to this sandbox. Call it while the child waits
    /// before exec; its descendants inherit the tag at fork.
    pub fn seed_task(&self, pidfd: BorrowedFd<'_>) -> Result<(), Error> {
        let value = TaskCtx {
            sandbox: self.id,
            nr: -1,
            ..TaskCtx::default()
        };
        let key = pidfd.as_raw_fd();
        let step = format!("seeding a task into sandbox {}", self.id);
        let inserted = run_libbpf(&step, || {
            self.shared
                .task_sandbox
                .update(bytes_of(&key), bytes_of(&value), MapFlags::NO_EXIST)
        });
        match inserted {
            Err(err) if err.errno() == Some(libc::EEXIST) => {
                // Already tagged (inherited): fine only if it is this sandbox.
                let current = run_libbpf(&step, || {
                    self.shared
                        .task_sandbox
                        .lookup(bytes_of(&key), MapFlags::ANY)
                })?
                .and_then(|bytes| from_bytes::<TaskCtx>(&bytes));
                match current {
                    Some(ctx) if ctx.sandbox == self.id => Ok(()),
                    _ => Err(err),
                }
            }
            other => other,
        }
    }

    /// The kernel's counters for this sandbox.
    pub fn counters(&self) -> Counters {
        let record = self
            .shared
            .sandboxes
            .lookup(&self.id.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|bytes| from_bytes::<SandboxRecord>(&bytes))
            .unwrap_or_default();
        Counters {
            last_seq: record.seq,
            lost_violations: record.lost_violations,
            lost_trace: record.lost_trace,
            throttled_trace: record.throttled_trace,
            lost_task_storage: record.lost_task_storage,
        }
    }

    /// A reader of this sandbox's ring buffers (one reader at a time).
    pub fn events(&self) -> Result<EventStream, Error> {
        EventStream::new(&self.rings.violations, &self.rings.trace, self.id)
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("cgroup_id", &self.cgroup_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Granted entries first (those of registered addresses go with `v4_keys` below).
        self.grants.close();
        let shared = &self.shared;
        let id = self.id.to_ne_bytes();
        if self.lsm_config {
            let _ = shared.lsm_sandboxes.delete(&id);
        }
        for key in &self.lsm_inode_keys {
            let _ = shared.lsm_inodes.delete(bytes_of(key));
        }
        for key in &self.lsm_child_keys {
            let _ = shared.lsm_children.delete(bytes_of(key));
        }
        for key in &self.lsm_name_keys {
            let _ = shared.lsm_names.delete(bytes_of(key));
        }
        if self.cgroup_entry {
            let _ = shared.cgroup_sandbox.delete(&self.cgroup_id.to_ne_bytes());
        }
        for key in &self.v4_keys {
            let _ = shared.net4.delete(bytes_of(key));
        }
        for key in &self.v6_keys {
            let _ = shared.net6.delete(bytes_of(key));
        }
        // The rings stay published in their slot for the next lease (see `rings`).
        if self.record {
            let _ = shared.sandboxes.delete(&id);
        }
    }
}

impl Shared {
    /// `lsm_error`: why the loader did not attach the LSM programs, when it just ran.
    fn open_pinned(dir: &Path, version: &str, lsm_error: Option<String>) -> Result<Shared, Error> {
        let map = |name: &str| {
            let path = dir.join("maps").join(name);
            run_libbpf(&format!("opening pinned map {}", path.display()), || {
                MapHandle::from_pinned_path(&path)
            })
        };
        let mut cgroup_programs = Vec::with_capacity(CGROUP_PROGRAMS.len());
        for (name, attach_type) in CGROUP_PROGRAMS {
            let path = dir.join("progs").join(name);
            let program = run_libbpf(
                &format!("opening pinned program {}", path.display()),
                || ProgramHandle::from_pinned_path(&path),
            )?;
            cgroup_programs.push((program, attach_type));
        }
        // Optional: pinned only where the kernel has the attach types.
        let mut unix_hooks = true;
        for (name, attach_type) in CGROUP_UNIX_PROGRAMS {
            let path = dir.join("progs").join(name);
            if !path.exists() {
                unix_hooks = false;
                continue;
            }
            let program = run_libbpf(
                &format!("opening pinned program {}", path.display()),
                || ProgramHandle::from_pinned_path(&path),
            )?;
            cgroup_programs.push((program, attach_type));
        }
        // Held before the links are looked at: the caller holds the pin root's lock, so no
        // last supervisor can unpin them between here and our opening them.
        let observers_lock = File::open(dir).map_err(|source| Error::Pin {
            path: dir.to_path_buf(),
            source,
        })?;
        // SAFETY: flock on the fd just opened.
        if unsafe { libc::flock(observers_lock.as_raw_fd(), libc::LOCK_SH) } != 0 {
            return Err(Error::Pin {
                path: dir.to_path_buf(),
                source: std::io::Error::last_os_error(),
            });
        }
        let mut observer_links = Vec::with_capacity(TRACE_PROGRAMS.len());
        let mut attaching = Attaching::Done;
        for name in TRACE_PROGRAMS {
            let pinned = dir.join("links").join(name).exists();
            if !pinned && DETACHED_WHEN_IDLE.contains(&name) {
                attaching = Attaching::Pending(attach_later(dir, name)?);
                continue;
            }
            observer_links.push(observer_link(dir, name)?);
        }
        let lsm_paths: Vec<PathBuf> = lsm_program_names()
            .map(|name| dir.join("links").join(name))
            .collect();
        let pinned = lsm_paths.iter().filter(|path| path.exists()).count();
        let mut lsm_links = Vec::new();
        let lsm_error = if pinned == lsm_paths.len() {
            for path in &lsm_paths {
                lsm_links.push(run_libbpf(
                    &format!("opening pinned link {}", path.display()),
                    || Link::open(path),
                )?);
            }
            None
        } else if pinned > 0 {
            return Err(Error::Pin {
                path: dir.join("links"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "some LSM links are pinned, others are missing",
                ),
            });
        } else {
            // The reason the loader recorded; probing again loads BTF and a program, which
            // costs a warm start ~10 ms. Only pins made without the record are probed.
            let recorded = || {
                fs::read_link(dir.join(LSM_ERROR_LINK))
                    .ok()
                    .map(|reason| reason.to_string_lossy().into_owned())
            };
            Some(lsm_error.or_else(recorded).unwrap_or_else(|| {
                let reason = match probe(ProgramKind::Lsm) {
                    Err(err) => err.to_string(),
                    Ok(()) => format!(
                        "BPF LSM loads here, but {} was pinned without the LSM programs \
                         (they failed to load then); remove it to retry",
                        dir.display()
                    ),
                };
                // Pinned by an older agentbox: record it now (the caller holds the pin
                // lock), so later opens skip the probe. Best effort: the next open probes.
                let _ = record_lsm_error(dir, &reason);
                reason
            }))
        };
        Ok(Shared {
            version: version.to_owned(),
            dir: dir.to_path_buf(),
            sandboxes: map(MAP_SANDBOXES)?,
            cgroup_sandbox: map(MAP_CGROUP_SANDBOX)?,
            task_sandbox: map(MAP_TASK_SANDBOX)?,
            net4: map(MAP_NET4)?,
            net6: map(MAP_NET6)?,
            violations: map(MAP_VIOLATIONS)?,
            trace: map(MAP_TRACE)?,
            lsm_sandboxes: map(MAP_LSM_SANDBOXES)?,
            lsm_inodes: map(MAP_LSM_INODES)?,
            lsm_children: map(MAP_LSM_CHILDREN)?,
            lsm_names: map(MAP_LSM_NAMES)?,
            lsm_error,
            _lsm_links: lsm_links,
            cgroup_programs,
            parent_links: Mutex::default(),
            unix_hooks,
            observer_links: Mutex::new(observer_links),
            attaching: Mutex::new(attaching),
            observers_lock,
        })
    }
}

/// Loads the sandbox programs (with the LSM programs where BPF LSM loads).
fn load_runtime_object(with_lsm: bool, with_unix: bool) -> Result<libbpf_rs::Object, Error> {
    run_libbpf("loading the sandbox programs", || {
        let mut builder = ObjectBuilder::default();
        builder.name(OBJECT_NAME)?;
        let mut open = builder.open_memory(OBJECT)?;
        for mut program in open.progs_mut() {
            let name = program.name().to_string_lossy().into_owned();
            let wanted = CGROUP_PROGRAMS.iter().any(|(p, _)| *p == name)
                || TRACE_PROGRAMS.contains(&name.as_str())
                || (with_unix && CGROUP_UNIX_PROGRAMS.iter().any(|(p, _)| *p == name))
                || (with_lsm && lsm_program_names().any(|p| lsm_variant(p) == name));
            program.set_autoload(wanted);
        }
        for mut map in open.maps_mut() {
            let name = map.name().to_string_lossy().into_owned();
            if crate::UNCREATED_MAPS.contains(&name.as_str()) {
                map.set_autocreate(false)?;
            }
        }
        open.load()
    })
}

/// Loads the runtime programs, attaches the observers (and the LSM programs where BPF LSM
/// loads) and pins everything under `staging`. Returns why the LSM programs are not
/// attached, if they are not: the rest of the runtime works without them.
fn load_and_pin(staging: &Path) -> Result<Option<String>, Error> {
    for sub in ["", "maps", "progs", "links"] {
        let path = staging.join(sub);
        fs::create_dir_all(&path).map_err(|source| Error::Pin { path, source })?;
    }
    // Kernels before 6.7 have no UNIX attach types: the object loads without those two.
    let load = |with_lsm: bool| {
        // A refusal here shows as `Runtime::unix_hooks() == false`, which doctor reports.
        load_runtime_object(with_lsm, true).or_else(|_| load_runtime_object(with_lsm, false))
    };
    let (mut object, lsm_error) = match probe(ProgramKind::Lsm) {
        Err(err) => (load(false)?, Some(err.to_string())),
        Ok(()) => match load(true) {
            Ok(object) => (object, None),
            // A verifier refusal of an LSM program must not take the network layer down.
            Err(err) => (
                load(false)?,
                Some(format!("the LSM programs failed to load: {err}")),
            ),
        },
    };
    for mut map in object.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if RUNTIME_MAPS.contains(&name.as_str()) {
            let path = staging.join("maps").join(&name);
            run_libbpf(&format!("pinning map {name}"), || map.pin(&path))?;
        }
    }
    for program in object.progs_mut() {
        let name = program.name().to_string_lossy().into_owned();
        let optional = CGROUP_UNIX_PROGRAMS.iter().any(|(p, _)| *p == name);
        if CGROUP_PROGRAMS.iter().any(|(p, _)| *p == name) || (optional && program.autoload()) {
            let path = staging.join("progs").join(&name);
            let mut program = program;
            run_libbpf(&format!("pinning program {name}"), || program.pin(&path))?;
        }
    }
    // The observer programs are pinned; their links are made by `observer_link` when a
    // supervisor opens this version.
    for name in TRACE_PROGRAMS {
        let mut program = object
            .progs_mut()
            .find(|program| program.name() == name)
            .ok_or_else(|| Error::Bpf {
                step: format!("pinning {name}"),
                errno: None,
                message: "program is not in the object".into(),
            })?;
        let path = staging.join("progs").join(name);
        run_libbpf(&format!("pinning program {name}"), || program.pin(&path))?;
    }
    if let Some(reason) = &lsm_error {
        record_lsm_error(staging, reason)?;
    }
    if lsm_error.is_none() {
        for name in lsm_program_names() {
            let loaded = lsm_variant(name);
            let program = object
                .progs_mut()
                .find(|program| program.name() == loaded)
                .ok_or_else(|| Error::Bpf {
                    step: format!("attaching {name}"),
                    errno: None,
                    message: "program is not in the object".into(),
                })?;
            let mut link = run_libbpf(&format!("attaching {name}"), || program.attach_lsm())?;
            let path = staging.join("links").join(name);
            run_libbpf(&format!("pinning link {name}"), || link.pin(&path))?;
        }
    }
    Ok(lsm_error)
}

/// Keeps why the LSM programs are not attached next to the pins, for warm opens. bpffs holds
/// no regular files, but it does hold symlinks, and a link's target is free text.
fn record_lsm_error(version_dir: &Path, reason: &str) -> Result<(), Error> {
    let mut text: String = reason.replace('\0', " ");
    if text.len() > LSM_ERROR_MAX {
        let mut cut = LSM_ERROR_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" [...]");
    }
    let path = version_dir.join(LSM_ERROR_LINK);
    std::os::unix::fs::symlink(&text, &path).map_err(|source| Error::Pin { path, source })
}

/// `observer_link` on a thread, under the pin root's lock (taken there: the caller's open
/// still holds it, so the attachment starts once that open returns, and never races another
/// supervisor's attachment or last-out unpinning).
fn attach_later(
    dir: &Path,
    name: &'static str,
) -> Result<std::thread::JoinHandle<Result<OwnedFd, Error>>, Error> {
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("ab-observe".into())
        .spawn(move || {
            let root_path = dir.parent().unwrap_or(&dir).to_path_buf();
            let root = File::open(&root_path).map_err(|source| Error::Pin {
                path: root_path.clone(),
                source,
            })?;
            let _lock = DirLock::exclusive(&root, &root_path)?;
            observer_link(&dir, name)
        })
        .map_err(|source| Error::Pin {
            path: PathBuf::from(name),
            source,
        })
}

/// The observer `name`'s link: the pinned one, or (after the last supervisor detached them)
/// a new attachment of the pinned program, pinned for the supervisors that follow.
fn observer_link(dir: &Path, name: &str) -> Result<OwnedFd, Error> {
    let link_path = dir.join("links").join(name);
    if link_path.exists() {
        return attach::obj_get(&link_path);
    }
    let prog_path = dir.join("progs").join(name);
    let program = run_libbpf(
        &format!("opening pinned program {}", prog_path.display()),
        || ProgramHandle::from_pinned_path(&prog_path),
    )?;
    // SAFETY: the program fd is valid for the call; a null name attaches a tp_btf program
    // to the tracepoint its BTF names.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_raw_tracepoint_open(
            std::ptr::null(),
            program.as_fd().as_raw_fd(),
        )
    };
    if fd < 0 {
        return Err(Error::Bpf {
            step: format!("attaching the observer {name}"),
            errno: Some(-fd),
            message: std::io::Error::from_raw_os_error(-fd).to_string(),
        });
    }
    // SAFETY: a new fd nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    attach::obj_pin(link.as_fd(), &link_path)?;
    Ok(link)
}

/// Hash of the embedded object: a new build with different programs gets a new pin dir.
/// Computed by build.rs (hashing the 400 KB object cost every run ~0.3 ms).
pub(crate) fn object_version() -> String {
    include_str!(concat!(env!("OUT_DIR"), "/object_version")).to_owned()
}

fn statfs_magic(path: &Path) -> std::io::Result<i64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stat is writable.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_type as i64)
}

/// Makes sure `pin_root` exists on a bpffs, mounting bpffs at /sys/fs/bpf if needed.
fn ensure_bpffs(pin_root: &Path) -> Result<(), Error> {
    let mount_point = Path::new(BPFFS_MOUNT);
    if pin_root.starts_with(mount_point)
        && statfs_magic(mount_point).map_or(true, |magic| magic != BPF_FS_MAGIC)
    {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Bpffs(format!(
                "bpffs is not mounted at {BPFFS_MOUNT} and mounting it needs root \
                 (run: mount -t bpf bpf {BPFFS_MOUNT})"
            )));
        }
        let source = c"bpf";
        let target = c"/sys/fs/bpf";
        // SAFETY: all strings are NUL-terminated; no mount data.
        let ret = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if ret != 0 {
            return Err(Error::Bpffs(format!(
                "mounting bpffs at {BPFFS_MOUNT}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    fs::create_dir_all(pin_root).map_err(|source| Error::Pin {
        path: pin_root.to_path_buf(),
        source,
    })?;
    match statfs_magic(pin_root) {
        Ok(BPF_FS_MAGIC) => Ok(()),
        Ok(_) => Err(Error::Bpffs(format!(
            "{} is not on a bpf filesystem",
            pin_root.display()
        ))),
        Err(source) => Err(Error::Pin {
            path: pin_root.to_path_buf(),
            source,
        }),
    }
}

/// Removes a pin directory tree. Unpinning never detaches what running processes hold.
fn remove_pins(path: &Path) -> Result<(), Error> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Error::Pin {
            path: path.to_path_buf(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// `flock(LOCK_EX)` on the pin root, released on drop (the fd's close).
struct DirLock<'a> {
    _dir: &'a File,
}

impl<'a> DirLock<'a> {
    fn exclusive(dir: &'a File, path: &Path) -> Result<Self, Error> {
        loop {
            // SAFETY: dir is an open fd for the whole call.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(DirLock { _dir: dir });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(Error::Pin {
                    path: path.to_path_buf(),
                    source: err,
                });
            }
        }
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        // SAFETY: the fd is still open (borrowed for our lifetime).
        unsafe { libc::flock(self._dir.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A pin root of its own under /sys/fs/bpf and a cgroup2 directory, removed on drop.
    struct Scratch {
        pins: PathBuf,
        cgroup: Option<PathBuf>,
    }

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let unique = format!(
                "agentbox-unit-{tag}-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            );
            let cgroup = fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .find(|line| line.contains(" - cgroup2 "))
                .and_then(|line| line.split(' ').nth(4).map(PathBuf::from))
                .map(|mount| mount.join(&unique));
            if let Some(dir) = &cgroup {
                fs::create_dir(dir).expect("cgroup2 directory");
            }
            Scratch {
                pins: Path::new(BPFFS_MOUNT).join(unique),
                cgroup,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.pins);
            if let Some(dir) = &self.cgroup {
                let _ = fs::remove_dir(dir);
            }
        }
    }

    #[test]
    fn warm_open_takes_the_lsm_reason_from_the_pins_without_probing() {
        if !is_root() {
            eprintln!("skipped: needs root to load BPF programs");
            return;
        }
        let scratch = Scratch::new("lsm-reason");
        let (cold, state) = Runtime::open(&scratch.pins).expect("cold open");
        assert_eq!(state, LoadState::Cold);
        let link = cold.pin_dir().join(LSM_ERROR_LINK);
        let Some(reason) = cold.lsm_error().map(str::to_owned) else {
            // BPF LSM works here: nothing is recorded and the links are what the warm path
            // reads.
            assert!(!link.exists());
            return;
        };
        assert_eq!(
            fs::read_link(&link).expect("recorded").to_str(),
            Some(&*reason)
        );
        let (warm, state) = Runtime::open(&scratch.pins).expect("warm open");
        assert_eq!(state, LoadState::Warm);
        assert_eq!(warm.lsm_error(), Some(&*reason));

        // A warm open reports what was recorded: it did not probe again.
        fs::remove_file(&link).expect("remove the record");
        std::os::unix::fs::symlink("recorded at load time", &link).expect("replace it");
        let (warm, _) = Runtime::open(&scratch.pins).expect("warm open");
        assert_eq!(warm.lsm_error(), Some("recorded at load time"));

        // Pins without a record (an older agentbox): probed once, then recorded.
        fs::remove_file(&link).expect("remove the record");
        let (warm, _) = Runtime::open(&scratch.pins).expect("warm open without a record");
        let probed = warm.lsm_error().expect("still no BPF LSM").to_owned();
        assert!(probed.contains("lsm"), "{probed}");
        assert_eq!(
            fs::read_link(&link).expect("re-recorded").to_str(),
            Some(&*probed)
        );
    }

    #[test]
    fn ring_slots_are_leased_reused_and_programs_sit_on_the_parent() {
        if !is_root() {
            eprintln!("skipped: needs root to load BPF programs and create cgroups");
            return;
        }
        let scratch = Scratch::new("slots");
        let Some(parent) = scratch.cgroup.clone() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let groups: Vec<PathBuf> = ["a", "b"].iter().map(|n| parent.join(n)).collect();
        for group in &groups {
            fs::create_dir(group).expect("sandbox cgroup");
        }
        let _cleanup = RemoveDirs(groups.clone());
        let (runtime, _) = Runtime::open(&scratch.pins).expect("open");
        let shared = Arc::clone(&runtime.shared);
        let published = |outer: &MapHandle, slot: u32| {
            outer
                .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
                .expect("lookup in an outer map")
                .map(|bytes| u32::from_ne_bytes(bytes[..4].try_into().expect("an id")))
        };

        let a = runtime
            .register_sandbox(&SandboxConfig::new(0x5eed_0001, &groups[0]))
            .expect("register A");
        let b = runtime
            .register_sandbox(&SandboxConfig::new(0x5eed_0002, &groups[1]))
            .expect("register B");
        assert_eq!((a.ring_slot(), b.ring_slot()), (0, 1), "one slot each");
        let first = published(&shared.violations, 0).expect("slot 0 published");
        assert!(published(&shared.trace, 1).is_some());

        // A's slot goes back on drop and the next sandbox reuses its rings as they are.
        drop(a);
        let c = runtime
            .register_sandbox(&SandboxConfig::new(0x5eed_0003, &groups[0]))
            .expect("register C");
        assert_eq!(c.ring_slot(), 0);
        assert_eq!(published(&shared.violations, 0), Some(first), "ring reused");
        c.events().expect("C reads its slot");

        // A different size replaces the slot's ring.
        drop(c);
        let mut cfg = SandboxConfig::new(0x5eed_0004, &groups[0]);
        cfg.violations_ring_bytes = DEFAULT_VIOLATIONS_RING_BYTES * 2;
        let d = runtime.register_sandbox(&cfg).expect("register D");
        assert_eq!(d.ring_slot(), 0);
        assert_ne!(published(&shared.violations, 0), Some(first));
        drop(d);
        drop(b);

        // The programs hang on the parent, once, pinned per parent cgroup id.
        let parent_id = fs::metadata(&parent).expect("parent").ino();
        let links = runtime
            .pin_dir()
            .join(attach::CGROUPS_DIR)
            .join(parent_id.to_string());
        assert!(links.join("net_connect4").exists(), "{}", links.display());
        let err = runtime
            .register_sandbox(&SandboxConfig::new(0x5eed_0005, &parent))
            .expect_err("a group in the hierarchy root");
        assert!(
            err.to_string().contains("root of a cgroup2 hierarchy"),
            "{err}"
        );
    }

    /// Removes sandbox cgroups (before the scratch parent goes).
    struct RemoveDirs(Vec<PathBuf>);

    impl Drop for RemoveDirs {
        fn drop(&mut self) {
            for dir in &self.0 {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}
